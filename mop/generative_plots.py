"""Figures of the generative-model analyses (generative_analysis.py): data in, Figure out.

Decoded views are drawn with minigrid's own renderer: the 7x7x3 codes become a minigrid Grid
(Grid.decode) rendered from the agent's point of view (bottom centre, facing up), so a decoded
view looks exactly like a real one; codes minigrid cannot draw fall back to a flat colour map.

    fig = plot_rollout_strips(real_views, decoded_views, titles)
    frames_to_gif([render_view(v) for v in views], "sample.gif")
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from mop.plot_style import EXPERT_COLORS, PANEL, new_figure, styled

VIEW_TILE = 12
_FALLBACK = np.array([[0, 0, 0], [40, 40, 40], [100, 100, 100], [200, 200, 200]], np.uint8)


def render_view(codes: np.ndarray, tile_size: int = VIEW_TILE) -> np.ndarray:
    """RGB (7 * tile, 7 * tile, 3) of an egocentric view's codes (7, 7, 3)."""
    from minigrid.core.grid import Grid

    codes = np.asarray(codes, dtype=np.uint8)
    try:
        grid, vis = Grid.decode(codes)
        img = grid.render(tile_size, agent_pos=(3, 6), agent_dir=3, highlight_mask=None)
        # unseen cells dark, as in the agent's own partial view
        mask = np.kron(~vis.T, np.ones((tile_size, tile_size), bool))
        img[mask] = (img[mask] * 0.25).astype(np.uint8)
        return img
    except Exception:  # a code combination minigrid cannot draw
        flat = _FALLBACK[np.clip(codes[..., 0], 0, 3)].transpose(1, 0, 2)
        return np.kron(flat, np.ones((tile_size, tile_size, 1), np.uint8))


def frames_to_gif(frames: Sequence[np.ndarray], path: str | os.PathLike, ms_per_frame: int = 250) -> None:
    from PIL import Image

    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=ms_per_frame, loop=0)


@styled
def plot_rollout_strips(
    rows: Sequence[Sequence[np.ndarray]], row_labels: Sequence[str], title: str = ""
) -> Figure:
    """One row of rendered views per rollout (view codes (7, 7, 3) each, e.g. a real rollout then
    its decoded one), steps left to right."""
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    fig = new_figure(0.55 * n_cols + 0.8, 0.6 * n_rows + 0.4)
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for i, row in enumerate(rows):
        for j in range(n_cols):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(row):
                ax.imshow(render_view(row[j]))
            else:
                ax.axis("off")
            if j == 0:
                ax.set_ylabel(row_labels[i], rotation=0, ha="right", va="center", fontsize=7)
            if i == 0:
                ax.set_title(f"t+{j}", fontsize=7)
    if title:
        fig.suptitle(title)
    return fig


@styled
def plot_pca(
    pcs: np.ndarray,
    carrying: np.ndarray,
    dominant: np.ndarray | None,
    dominant_label: str,
    trajectories: Sequence[np.ndarray],
    explained: np.ndarray,
) -> Figure:
    """Memory in PC1-PC2: coloured by carrying, by dominant expert (or cluster), with trajectories."""
    fig = new_figure(3 * PANEL, PANEL)
    axes = fig.subplots(1, 3)
    labels = [f"PC1 ({explained[0]:.0%})", f"PC2 ({explained[1]:.0%})"]
    ax = axes[0]
    for value, colour, name in ((0, "#9e9e9e", "not carrying"), (1, "#d62728", "carrying")):
        sel = carrying == value
        ax.scatter(pcs[sel, 0], pcs[sel, 1], s=2, c=colour, alpha=0.4, label=name, rasterized=True)
    ax.legend(markerscale=4)
    ax.set_title("phase: carrying")
    ax = axes[1]
    if dominant is not None:
        for j in np.unique(dominant):
            sel = dominant == j
            colour = EXPERT_COLORS[int(j) % len(EXPERT_COLORS)]
            ax.scatter(pcs[sel, 0], pcs[sel, 1], s=2, c=colour, alpha=0.4, label=f"{int(j)}", rasterized=True)
        ax.legend(title=dominant_label, markerscale=4)
    ax.set_title(dominant_label)
    ax = axes[2]
    for k, traj in enumerate(trajectories):
        ax.plot(traj[:, 0], traj[:, 1], "-o", ms=2, lw=0.8, color=EXPERT_COLORS[k % len(EXPERT_COLORS)])
        ax.plot(traj[0, 0], traj[0, 1], "k^", ms=4)
    ax.set_title("episodes (start ▲)")
    for ax in axes:
        ax.set_xlabel(labels[0])
        ax.set_ylabel(labels[1])
    return fig


@styled
def plot_direction_effects(
    alphas: np.ndarray, routing: dict[str, np.ndarray], actions: np.ndarray, title: str
) -> Figure:
    """Router weights (per expert) and action probabilities against the memory shift alpha."""
    fig = new_figure(2 * PANEL, PANEL)
    ax_r, ax_a = fig.subplots(1, 2)
    for k, (name, values) in enumerate(routing.items()):
        ax_r.plot(alphas, values, "-o", ms=3, label=name, color=EXPERT_COLORS[k % len(EXPERT_COLORS)])
    if routing:
        ax_r.legend(fontsize=6)
    ax_r.set_xlabel("shift along the direction (std units)")
    ax_r.set_ylabel("mean router weight")
    for a in range(actions.shape[1]):
        ax_a.plot(alphas, actions[:, a], "-o", ms=3, label=f"action {a}")
    ax_a.legend(fontsize=6)
    ax_a.set_xlabel("shift along the direction (std units)")
    ax_a.set_ylabel("mean action probability")
    fig.suptitle(title)
    return fig


@styled
def plot_accuracy(by_view_cell: np.ndarray, by_step: dict[str, Sequence[float]], title: str = "") -> Figure:
    """Per-cell accuracy of decoded views on the agent's 7x7 view (agent at the bottom centre,
    looking up) and by simulated step, one line per way of rolling out."""
    fig = new_figure(2 * PANEL, PANEL)
    ax_v, ax_s = fig.subplots(1, 2)
    grid = np.asarray(by_view_cell).T  # [x][y] -> rows y (far at the top), columns x
    image = ax_v.imshow(grid, vmin=min(0.5, float(grid.min())), vmax=1.0, cmap="viridis")
    for y in range(grid.shape[0]):
        for x in range(grid.shape[1]):
            colour = "k" if grid[y, x] > 0.85 else "w"
            ax_v.text(x, y - 0.1, f"{grid[y, x]:.2f}", ha="center", va="center", fontsize=6, color=colour)
    ax_v.plot(3, 6.3, "r^", ms=4)
    ax_v.set_xticks([])
    ax_v.set_yticks([])
    ax_v.set_title("by view cell (agent ▲)")
    fig.colorbar(image, ax=ax_v, shrink=0.8)
    for k, (name, values) in enumerate(by_step.items()):
        ax_s.plot(
            np.arange(1, len(values) + 1),
            values,
            "-o",
            ms=3,
            label=name,
            color=EXPERT_COLORS[k % len(EXPERT_COLORS)],
        )
    ax_s.legend(fontsize=6)
    ax_s.set_xlabel("simulated step")
    ax_s.set_ylabel("per-cell accuracy")
    if title:
        fig.suptitle(title)
    return fig


# ----------------------------------------------------------------------------- calibrated analyses


def _bar_with_interval(
    ax, x: float, value: float, interval: Sequence[float], color, hatch: str = "", label=None
):
    low, high = interval
    err = [[value - low], [high - value]] if np.isfinite(low) and np.isfinite(high) else None
    ax.bar(
        x,
        value,
        width=0.38,
        color=color,
        hatch=hatch,
        edgecolor="0.2",
        lw=0.4,
        yerr=err,
        capsize=2,
        label=label,
    )


@styled
def plot_maximise(runs: Sequence[dict], control: str, word: str, kl: dict) -> Figure:
    """Per target (and the control, last), one panel per mode: the held-out change of the target
    from the reference, on the soft views (the simulated agent) and the hard views (the real
    agent re-reading the argmax views), each with its 95% interval over held-out contexts; "did not
    move" targets (TOST at the stated margin passed) are greyed and marked ✗, "not resolved" (and
    older summaries' "not measured") ones ?. The model's KL is in the title: a posterior that says
    nothing (KL near 0) leaves z little to move."""
    modes = list(dict.fromkeys(r["mode"] for r in runs))
    targets = list(dict.fromkeys(r["target"] for r in runs))
    fig = new_figure(max(2 * PANEL, 0.55 * len(targets) * len(modes) + 1.5), PANEL * 1.2)
    axes = np.atleast_1d(fig.subplots(1, len(modes), sharey=True))
    for ax, mode in zip(axes, modes):
        for i, t in enumerate(targets):
            r = next(r for r in runs if r["target"] == t and r["mode"] == mode)
            moved = r["verdict"] == "moved"
            color = "C2" if r["role"] == "control" else ("C0" if moved else "0.7")
            _bar_with_interval(
                ax, i - 0.2, r["soft_change"], r["soft_change_ci"], color, "", "soft" if i == 0 else None
            )
            _bar_with_interval(
                ax, i + 0.2, r["hard_change"], r["hard_change_ci"], color, "////", "hard" if i == 0 else None
            )
            if not moved:
                mark = "✗" if r["verdict"] == "did not move" else "?"
                ax.annotate(
                    mark,
                    (i, 0),
                    textcoords="offset points",
                    xytext=(0, 3),
                    ha="center",
                    fontsize=7,
                    color="C3",
                )
        ax.axhline(0, color="0.5", lw=0.8)
        ax.set_xticks(
            range(len(targets)),
            [t.replace("layer_", "L").replace(":expert_", "·e") for t in targets],
            rotation=60,
            fontsize=6,
        )
        ax.set_title(f"{mode}: z {'free, ½|z|² leash' if mode == 'leash' else 'on |z| = √d'}")
        ax.legend(fontsize=6, loc="upper left")
    axes[0].set_ylabel(f"held-out change of the target ({word}d)")
    fig.suptitle(
        f"{word} each target on training contexts, measured on held-out ones (95% t intervals;\n"
        f"green: control {control}; moved: Holm over the targets; ✗ did not move (TOST); ? not resolved). KL {kl['kl_nats']:.3g} nats, "
        f"{kl['active_dims']}/{kl['latent_size']} active dims"
    )
    return fig


@styled
def plot_z_sensitivity(sensitivity: dict, latent_size: int, kl: dict) -> Figure:
    """Mean |change| of each router weight (and of the action probabilities) from z = 0 against the
    distance moved along random unit directions of z (log-log): how much z can move the routing at
    all; √d marks where the prior's typical points lie."""
    fig = new_figure(2 * PANEL, PANEL * 1.1)
    ax = fig.subplots()
    t = np.asarray(sensitivity["distances"])
    for name, values in sensitivity["routing"].items():
        layer = int(name.split(":")[0].removeprefix("layer_"))
        ax.plot(
            t,
            np.maximum(values, 1e-12),
            ("-", "--", ":", "-.")[layer % 4] + "o",
            ms=3,
            color=EXPERT_COLORS[int(name.rsplit("_", 1)[1]) % len(EXPERT_COLORS)],
            label=name,
        )
    ax.plot(t, np.maximum(sensitivity["actions"], 1e-12), "k-s", ms=3, lw=1.5, label="action probabilities")
    ax.axvline(np.sqrt(latent_size), color="0.6", lw=0.8, ls="--")
    ax.annotate("√d", (np.sqrt(latent_size), ax.get_ylim()[0]), fontsize=7, color="0.4")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("distance from z = 0 along a random unit direction")
    ax.set_ylabel("mean |change| from z = 0")
    ax.legend(fontsize=5, ncol=2, loc="upper left")
    fig.suptitle(
        f"z-sensitivity ({sensitivity['directions']} random directions; posterior KL {kl['kl_nats']:.3g} nats)"
    )
    return fig


def _view_map(ax, cell_map: np.ndarray, title: str) -> None:
    """A (7, 7) map over (x, y) drawn as the agent sees it: the agent at the bottom centre, looking up."""
    grid = np.asarray(cell_map).T
    ax.imshow(grid, cmap="magma")
    ax.plot(3, 6.3, "c^", ms=4)
    peak = np.unravel_index(int(np.nanargmax(grid)), grid.shape)
    ax.plot(peak[1], peak[0], "s", mfc="none", mec="c", ms=9)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=6)


@styled
def plot_saliency(results: Sequence[dict], maps: dict, blocks: Sequence[str]) -> Figure:
    """Per target (the control last): the saliency map on generated views and on recorded views of
    the same held-out contexts (mean |∂target/∂codes| per view cell; agent ▲, peak □), and the
    memory saliency per memory block (mean |∂target/∂unit|)."""
    fig = new_figure(3 * PANEL, 0.9 * PANEL * len(results) + 0.4)
    axes = fig.subplots(len(results), 3, squeeze=False)
    for row, r in zip(axes, results):
        for ax, name in zip(row[:2], ("generated", "recorded")):
            _view_map(ax, maps[(r["target"], name)], f"{r['target']} · {name} views")
        blocks_mean = r["generated"]["memory_blocks"]
        row[2].barh(
            range(len(blocks)),
            [blocks_mean[b] for b in blocks],
            color="C2" if r["role"] == "control" else "C0",
        )
        row[2].set_yticks(range(len(blocks)), blocks, fontsize=5)
        row[2].invert_yaxis()
        row[2].set_title(
            f"memory saliency (r generated~recorded {r['generated_vs_recorded_r']:.2f})", fontsize=6
        )
    fig.suptitle("Saliency of the agent's targets on held-out contexts (control last)")
    return fig


@styled
def plot_edits(results: dict, labels: Sequence[str], where: str) -> Figure:
    """Collapse and swap of a memory direction vs a random direction (the control): the change of
    each router weight from the unedited rollout (mean over steps, 95% t interval over held-out
    contexts), the share of steps whose action changed, and the re-read agreement."""
    fig = new_figure(3 * PANEL, PANEL * 1.2)
    axes = fig.subplots(1, 3)
    x = np.arange(len(labels))
    for ax, mode in zip(axes[:2], ("collapse", "swap")):
        for dx, (dname, color) in zip((-0.2, 0.2), (("direction", "C0"), ("random", "0.6"))):
            values = [results[dname][mode]["routing"][lab] for lab in labels]
            mean = np.array([v[0] for v in values])
            err = np.nan_to_num(np.abs(np.array([[v[0] - v[1], v[2] - v[0]] for v in values]).T))
            ax.bar(x + dx, mean, width=0.38, color=color, yerr=err, capsize=2, label=dname)
        ax.axhline(0, color="0.5", lw=0.8)
        ax.set_xticks(
            x,
            [lab.replace("layer_", "L").replace(":expert_", "·e") for lab in labels],
            rotation=60,
            fontsize=6,
        )
        ax.set_ylabel("router weight change")
        ax.set_title(f"{mode}", fontsize=8)
        ax.legend(fontsize=6)
    ax = axes[2]
    rows = [(d, m) for d in ("direction", "random") for m in ("collapse", "swap")]
    for i, (d, m) in enumerate(rows):
        for j, (key, color) in enumerate((("action_changed", "C3"), ("reread_agreement", "C2"))):
            v = results[d][m][key]
            ax.errorbar(
                i + 0.15 * (j - 0.5),
                v[0],
                yerr=[[v[0] - v[1]], [v[2] - v[0]]] if np.isfinite(v[1]) else None,
                fmt="o",
                color=color,
                capsize=2,
                label=key.replace("_", " ") if i == 0 else None,
            )
    ax.set_xticks(range(len(rows)), [f"{d}\n{m}" for d, m in rows], fontsize=6)
    ax.set_ylim(-0.03, 1.03)
    ax.legend(fontsize=6)
    ax.set_title("actions changed; re-read agrees", fontsize=8)
    fig.suptitle(f"Memory edits of {where} in held-out simulated rollouts (random direction: the control)")
    return fig


@styled
def plot_behaviours(clusters: Sequence[dict], stability: float) -> Figure:
    """Per cluster of recorded windows: the held-out window nearest its centre (rendered views),
    its share, actions and routing (mean router weight per layer and expert over held-out windows)."""
    shown = [c for c in clusters if "_views" in c]
    length = max((len(c["_views"]) for c in shown), default=1)
    fig = new_figure(0.55 * length + 3.2, 0.75 * max(1, len(shown)) + 0.6)
    grid = fig.add_gridspec(max(1, len(shown)), length + 5)
    for i, c in enumerate(shown):
        for j, view in enumerate(c["_views"]):
            ax = fig.add_subplot(grid[i, j])
            ax.imshow(render_view(view))
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(
                    f"cluster {c['cluster']}\n{c['held_out_share']:.0%}",
                    rotation=0,
                    ha="right",
                    va="center",
                    fontsize=6,
                )
        ax = fig.add_subplot(grid[i, length:])
        acts = c["actions"]
        routing = {k: v[0] for k, v in c["routing"].items()}
        text = " ".join(f"{a}:{p:.2f}" for a, p in acts.items() if p >= 0.05)
        ax.bar(
            range(len(routing)),
            list(routing.values()),
            color=[EXPERT_COLORS[int(k.rsplit("_", 1)[1]) % 6] for k in routing],
        )
        ax.set_xticks(
            range(len(routing)),
            [k.replace("layer_", "L").replace(":expert_", "·e") for k in routing],
            fontsize=4,
            rotation=90,
        )
        ax.set_ylim(0, 1)
        ax.set_title(f"t≈{c['mean_t']:.0f}, carrying {c['carrying']:.2f}; {text}", fontsize=5)
    fig.suptitle(
        f"Behaviours: k-means of recorded windows, read on held-out episodes (stability ARI {stability:.2f})"
    )
    return fig
