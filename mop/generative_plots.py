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
