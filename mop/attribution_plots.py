"""Figures of attribution through time (attribution.py): one example, and the aggregate profile.

- `plot_example`: top, the signed attribution of each step t-k..t (its sum over the step's
  observation); below, per-cell maps (summed over the object, colour and state channels) of the
  steps with the most |attribution|, drawn over the agent's own 7x7 view at that step (the agent
  at the bottom centre, facing up; red raises the target, blue lowers it; one colour scale for all).
- `plot_aggregate`: the mean share of |attribution| on each step offset, one line per subgoal of
  the bot at t, with 95% intervals over episodes (t, widened to the bootstrap-t: attribution.share_interval).

    fig = plot_example(result, cells, views, title="...", mission="go to the red ball", baseline="zero")
    fig = plot_aggregate(summary, title="...", baseline="zero")
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from mop.plot_style import PAPER_WIDTH, SCREEN_WIDTH, new_figure, note, styled

VIEW = 7
TILE = 16  # pixels per view cell of the rendered agent view
DIVERGING = "RdBu_r"


def render_view(image: np.ndarray, tile: int = TILE) -> np.ndarray:
    """The agent's 7x7 view (minigrid's encoded image, indexed [x, y]) as minigrid draws it:
    RGB (7*tile, 7*tile, 3), rows = y, the agent at the bottom centre facing up."""
    from minigrid.core.grid import Grid

    grid, _ = Grid.decode(np.asarray(image, dtype=np.uint8))
    return grid.render(tile, agent_pos=(VIEW // 2, VIEW - 1), agent_dir=3, highlight_mask=None)


def _overlay(values: np.ndarray, vmax: float) -> np.ndarray:
    """RGBA (7, 7, 4), rows = y, of a [x, y] cell map: diverging colour, opacity growing with |v|,
    so the view shows through where nothing is attributed."""
    cmap = colormaps[DIVERGING]
    v = values.T / vmax if vmax > 0 else np.zeros_like(values.T)
    rgba = cmap(0.5 + 0.5 * np.clip(v, -1, 1))
    rgba[..., 3] = 0.9 * np.clip(np.abs(v), 0, 1) ** 0.6
    return rgba


@styled
def plot_example(
    result: Any,
    cells: np.ndarray,
    views: np.ndarray,
    title: str,
    mission: str,
    baseline: str,
    randomized_rho: tuple[float, float] | None = None,
    maps: int = 4,
    layout: str = "screen",
) -> Figure:
    """result: mop.attribution.Attribution; cells (k+1, 7, 7, 3) its per-cell split; views
    (k+1, 7, 7, 3) the encoded images of steps t-k..t."""
    k = result.window
    offsets = np.arange(-k, 1)
    profile = result.profile
    mass = np.abs(result.attributions).sum(-1)
    shown = sorted(np.argsort(-mass, kind="stable")[: min(maps, k + 1)].tolist())
    cols = min(2, len(shown)) if layout == "paper" else len(shown)
    rows = -(-len(shown) // cols)
    width = PAPER_WIDTH if layout == "paper" else min(SCREEN_WIDTH, 1.9 * len(shown) + 0.9)
    map_height = 0.9 * width / cols
    fig = new_figure(width, 0.32 * width + 0.4 + rows * map_height + 0.8)
    grid = fig.add_gridspec(1 + rows, cols, height_ratios=[0.32 * width + 0.4] + [map_height] * rows)
    top = fig.add_subplot(grid[0, :])
    colors = ["#b2182b" if v >= 0 else "#2166ac" for v in profile]
    edges = ["black" if w in shown else "none" for w in range(k + 1)]
    top.bar(offsets, profile, color=colors, width=0.75, edgecolor=edges, linewidth=0.9)
    top.axhline(0, color="0.3", lw=0.6)
    top.set_xticks(offsets)
    top.set_xticklabels([f"t{o}" if o else "t" for o in offsets] if k <= 12 else [str(o) for o in offsets])
    top.set_xlabel("observation of step")
    top.set_ylabel("attribution (sum)")
    top.set_xlim(-k - 0.6, 0.6)
    top.spines[["top", "right"]].set_visible(False)
    top.set_title(
        f"Δy = {result.delta:+.3f}, Σ attribution = {result.total:+.3f}", loc="left", fontsize="small"
    )
    per_cell = cells.sum(-1)  # (k+1, 7, 7)
    vmax = float(np.abs(per_cell[shown]).max()) or 1.0
    for i, w in enumerate(shown):
        ax = fig.add_subplot(grid[1 + i // cols, i % cols])
        faded = 0.45 * render_view(views[w]) / 255.0 + 0.55  # the view under the map, lightened
        ax.imshow(faded, extent=(0, VIEW, VIEW, 0), interpolation="nearest")
        ax.imshow(_overlay(per_cell[w], vmax), extent=(0, VIEW, VIEW, 0), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        offset = offsets[w]
        ax.set_title(f"step t{offset}" if offset else "step t", fontsize="small")
        ax.set_xlabel(f"{100 * mass[w] / max(mass.sum(), 1e-12):.0f}% of |attr.|", fontsize="x-small")
    bar = fig.colorbar(
        ScalarMappable(Normalize(-vmax, vmax), DIVERGING), ax=fig.axes[1:], shrink=0.85, pad=0.02, aspect=15
    )
    bar.set_label("cell attribution", fontsize="small")
    fig.suptitle(f"{title}\nmission: {mission!r}")
    text = (
        f"Integrated gradients, {result.ig_steps} trapezoid intervals, baseline {baseline}; "
        f"completeness error {100 * result.completeness_error:.2f}%."
    )
    if randomized_rho is not None:
        every, moved = randomized_rho
        text += (
            f" Rank correlation of |map| with the randomised-weights map: {every:.2f} "
            f"({moved:.2f} over the cells whose input differs from the baseline)."
        )
    note(
        fig,
        text
        + " Outlined bars: the steps mapped below; maps: red raises the target, blue lowers it (summed over object, colour, state).",
    )
    return fig


@styled
def plot_aggregate(summary: pd.DataFrame, title: str, baseline: str, layout: str = "screen") -> Figure:
    """summary: attribution.summarise's table (subgoal, step_offset, mean_abs_share, ci_low,
    ci_high, episodes); 'all' is drawn black, each subgoal with at least 2 episodes in colour."""
    width = PAPER_WIDTH if layout == "paper" else 6.0
    fig = new_figure(width, 0.62 * width + 0.5)
    ax = fig.add_subplot()
    subgoals = sorted(g for g in summary["subgoal"].unique() if g != "all")
    groups = ["all"] + (subgoals if len(subgoals) > 1 else [])  # one subgoal: the same line as 'all'
    palette = colormaps["tab10"]
    dropped = []
    for i, group in enumerate(groups):
        part = summary[summary["subgoal"] == group].sort_values("step_offset")
        if group != "all" and part["episodes"].min() < 2:
            dropped.append(group)
            continue
        color = "black" if group == "all" else palette(i - 1)
        n = int(part["episodes"].max())
        ax.plot(
            part["step_offset"],
            part["mean_abs_share"],
            marker="o",
            ms=3.5,
            color=color,
            lw=1.8 if group == "all" else 1.0,
            label=f"{group} ({n} ep.)",
            zorder=3 if group == "all" else 2,
        )
        ax.fill_between(part["step_offset"], part["ci_low"], part["ci_high"], color=color, alpha=0.15, lw=0)
    offsets = summary["step_offset"].nunique()
    ax.axhline(1 / offsets, color="0.5", ls=":", lw=0.8, label="uniform")
    ax.set_xlabel("step offset from t")
    ax.set_ylabel("share of |attribution|")
    ax.set_ylim(0, None)
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(title="bot subgoal at t", frameon=False, fontsize="small")
    fig.suptitle(title)
    text = (
        f"Integrated gradients, baseline {baseline}; per example the share of its |attribution| on each "
        "step, averaged within each episode; bands: 95% intervals over episodes (t, widened to the bootstrap-t)."
    )
    if len(subgoals) == 1:
        text += f" The bot's subgoal was {subgoals[0]} at every step attributed."
    if dropped:
        text += f" Not drawn (fewer than 2 episodes): {', '.join(dropped)}."
    note(fig, text)
    return fig
