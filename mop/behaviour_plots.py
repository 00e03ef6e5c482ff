"""What the policy does, per grid cell: figures of a routing cache's actions (any policy, the GRU
baseline included) and the grid drawing every heatmap of the project shares. Data in (the cache's
steps table), `matplotlib.figure.Figure` out, drawn with plot_style; the numbers (KL per cell, the
grid bounds) are routing_analysis'. plotting_utils.py re-exports every figure here under its own
name (plotting_utils.plot_kl_heatmap ...), which is how the notebooks and users call them.

    fig = plot_kl_heatmap(data.steps, "neighbours", min_visits=5, grid_info=grid_info_for(data.steps, data.episodes))
    fig = plot_action_frequency(data.steps, by_carrying=True, layout="paper")
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import MultipleLocator

from mop.plot_style import (
    EXPERT_COLORS,
    PANEL,
    UNVISITED_COLOR,
    UNVISITED_HATCH_COLOR,
    heat_size,
    sized_figure,
    styled,
)
from mop.routing_analysis import ACTION_NAMES, action_kl_by_cell, compute_grid_bounds, to_grid

# ----------------------------------------------------------------------------- grids


def grid_axes(ax: Axes, grid_info: Mapping[str, int]) -> tuple[float, float, float, float]:
    """Cell-centred extent with row 0 at the top, integer ticks, and a hatched grey backdrop that
    shows through wherever a cell was never visited."""
    x0, x1 = grid_info["x_min"] - 0.5, grid_info["x_max"] + 0.5
    y0, y1 = grid_info["y_min"] - 0.5, grid_info["y_max"] + 0.5
    ax.add_patch(
        Rectangle(
            (x0, y0),
            x1 - x0,
            y1 - y0,
            facecolor=UNVISITED_COLOR,
            edgecolor=UNVISITED_HATCH_COLOR,
            hatch="///",
            linewidth=0,
            zorder=0,
        )
    )
    step = 1 if grid_info["grid_width"] <= 10 and grid_info["grid_height"] <= 10 else 2
    if max(grid_info["grid_width"], grid_info["grid_height"]) > 20:
        step = 5
    # Locators, not set_ticks: tick artists are then made only when drawn (creation stays cheap).
    ax.xaxis.set_major_locator(MultipleLocator(step))
    ax.yaxis.set_major_locator(MultipleLocator(step))
    ax.set_xlabel("x (cell)")
    ax.set_ylabel("y (cell)")
    return (x0, x1, y1, y0)


def unvisited_handle(text: str = "unvisited") -> Patch:
    return Patch(facecolor=UNVISITED_COLOR, edgecolor=UNVISITED_HATCH_COLOR, hatch="///", label=text)


def unvisited_legend(fig: Figure, text: str = "never visited") -> None:
    fig.legend(handles=[unvisited_handle(text)], loc="outside lower right", frameon=False)


def value_heatmap(
    ax: Axes,
    grid: np.ndarray,
    grid_info: Mapping[str, int],
    cmap: str,
    label: str,
    vmin: float | None = None,
    vmax: float | None = None,
    colorbar: bool = True,
    location: str = "right",
) -> AxesImage:
    extent = grid_axes(ax, grid_info)
    masked = np.ma.masked_invalid(grid)
    cm = matplotlib.colormaps[cmap].with_extremes(bad=(0, 0, 0, 0))  # masked cells show the hatch
    image = ax.imshow(
        masked,
        cmap=cm,
        vmin=vmin,
        vmax=vmax,
        origin="upper",
        extent=extent,
        interpolation="nearest",
        zorder=1,
    )
    if colorbar:
        bottom = location == "bottom"
        ax.figure.colorbar(
            image,
            ax=ax,
            label=label,
            location=location,
            shrink=0.9,
            fraction=0.06 if bottom else 0.15,
            pad=0.02,
        )
    return image


# ----------------------------------------------------------------------------- behaviour


@styled
def plot_action_frequency(steps: pd.DataFrame, by_carrying: bool = False, layout: str = "screen") -> Figure:
    """Fraction of steps on each action (bars per carrying state when by_carrying)."""
    fig = sized_figure(PANEL * 1.3, PANEL * 0.9, layout)
    ax = fig.subplots()
    num_actions = len(ACTION_NAMES)
    splits = {"all steps": steps}
    if by_carrying:
        carrying = steps["carrying"] == 1
        splits = {"not carrying": steps[~carrying], "carrying": steps[carrying]}
        splits = {k: v for k, v in splits.items() if len(v)}
    width = 0.8 / len(splits)
    for i, (name, part) in enumerate(splits.items()):
        freq = part["action"].value_counts(normalize=True).reindex(range(num_actions), fill_value=0.0)
        xs = np.arange(num_actions) + (i - (len(splits) - 1) / 2) * width
        ax.bar(xs, freq.to_numpy(), width, label=f"{name} (n={len(part)})", color=EXPERT_COLORS[i])
    ax.set_xticks(range(num_actions), ACTION_NAMES, rotation=30)
    ax.set_xlabel("action")
    ax.set_ylabel("fraction of steps")
    ax.set_ylim(0, 1)
    ax.legend(frameon=False)
    ax.set_title(f"Action frequency ({len(steps)} steps)")
    return fig


@styled
def plot_entropy_heatmap(
    steps: pd.DataFrame, grid_info: Mapping[str, int] | None = None, layout: str = "screen"
) -> Figure:
    """Mean entropy of the policy's action distribution per cell, in nats."""
    agg = steps.groupby(["x", "y"])["entropy"].mean().to_frame()
    grid_info = grid_info or compute_grid_bounds(steps)
    w, h = heat_size(grid_info)
    fig = sized_figure(w + 1.2, h + 1.1, layout)
    ax = fig.subplots()
    grid = to_grid(agg, agg["entropy"].to_numpy(), grid_info)
    # two lines: on one, the label was taller than the colour bar and ran off the figure
    top = f"policy entropy (nats)\nmax ln {len(ACTION_NAMES)} = {math.log(len(ACTION_NAMES)):.2f}"
    value_heatmap(ax, grid, grid_info, "magma", top, 0.0, None)
    ax.set_title(f"Policy entropy per cell ({len(steps)} steps)")
    ax.set_label("entropy")
    unvisited_legend(fig)
    return fig


@styled
def plot_kl_heatmap(
    steps: pd.DataFrame,
    reference: str = "global",
    min_visits: int = 5,
    grid_info: Mapping[str, int] | None = None,
    layout: str = "screen",
) -> Figure:
    """Per cell, KL of its action distribution from the global one or from its 4 neighbours'
    pooled distribution (see action_kl_by_cell for the smoothing)."""
    kl = action_kl_by_cell(steps, reference, min_visits)
    grid_info = grid_info or compute_grid_bounds(steps)
    w, h = heat_size(grid_info)
    fig = sized_figure(w + 1.2, h + 1.3, layout)
    ax = fig.subplots()
    grid = to_grid(kl, kl["kl"].to_numpy(), grid_info)
    value_heatmap(ax, grid, grid_info, "plasma", "KL (nats)", 0.0, None)
    against = "all steps' actions" if reference == "global" else "4-neighbour cells' actions"
    ax.set_title(f"KL(cell's actions ‖ {against})\nJeffreys prior (+½ per action)")
    ax.set_label(f"kl_{reference}")
    where = " (cell or its neighbours)" if reference != "global" else ""
    unvisited_legend(fig, f"unvisited or < {min_visits} visits{where}")
    return fig


@styled
def plot_cell_action_distribution(steps: pd.DataFrame, x: int, y: int, layout: str = "screen") -> Figure:
    """Action distribution at one cell against the global one, with the cell's KL."""
    here = steps[(steps["x"] == x) & (steps["y"] == y)]
    if here.empty:
        raise ValueError(f"cell ({x}, {y}) was never visited")
    kl = action_kl_by_cell(steps, "global", min_visits=1).loc[(x, y), "kl"]
    fig = sized_figure(PANEL * 1.3, PANEL * 0.9, layout)
    ax = fig.subplots()
    num_actions = len(ACTION_NAMES)
    for i, (name, part) in enumerate({f"cell ({x}, {y}), n={len(here)}": here, "all cells": steps}.items()):
        freq = part["action"].value_counts(normalize=True).reindex(range(num_actions), fill_value=0.0)
        ax.bar(
            np.arange(num_actions) + (i - 0.5) * 0.4, freq.to_numpy(), 0.4, label=name, color=EXPERT_COLORS[i]
        )
    ax.set_xticks(range(num_actions), ACTION_NAMES, rotation=30)
    ax.set_xlabel("action")
    ax.set_ylabel("fraction of steps")
    ax.set_ylim(0, 1)
    ax.legend(frameon=False)
    ax.set_title(f"Actions at ({x}, {y}): KL vs global = {kl:.3f} nats")
    return fig
