"""Each expert's own routing map: where in the level an expert gets more or less weight than its
own mean. Data in (a routing cache's steps table), `matplotlib.figure.Figure` out, drawn with
plot_style and the grid drawing of behaviour_plots; the per-cell means are routing_analysis'.
plotting_utils.py re-exports it (plotting_utils.plot_routing_by_expert), and standard_figures
writes it as routing_by_expert.png beside the dominant-expert view (routing_overall.png).

    fig = plot_routing_by_expert(data.steps, data.expert_sizes, grid_info_for(data.steps, data.episodes))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from mop.behaviour_plots import unvisited_legend, value_heatmap
from mop.plot_style import expert_size, heat_size, panel_grid, size_name, styled
from mop.routing_analysis import aggregate_routing_by_position, compute_grid_bounds, require_routing, to_grid


@styled
def plot_routing_by_expert(
    steps: pd.DataFrame,
    expert_sizes: Sequence[Sequence[int]] | None,
    grid_info: Mapping[str, int] | None = None,
    layout: str = "screen",
) -> Figure:
    """Every expert's own map: a panel per (layer, expert), the cell's mean weight minus that
    expert's mean weight over all steps (diverging: red where it is used more than on average,
    blue less, white as on average; its mean in the panel title), one symmetric colour scale for
    the whole figure.

    Why this view: a layer whose router gives one expert most of the weight everywhere is one flat
    colour in any absolute scale (on the quickstart's GoToLocal run, layer 0 gives the identity
    0.996 in every cell, cell-to-cell sd 0.0004, layer 2 0.96, sd 0.006), and the dominant-expert
    view (plot_overall_routing) also hides the runner-up (layer 1 there: identity 0.50, 32 units
    0.27, 16 units 0.23, identity first in every cell). The level of each expert is one number, so
    it goes in the title; the colour shows only where an expert is used more or less than its own
    average, and one scale for every panel keeps layers comparable (a white layer varies little
    across cells at this scale - it is not missing data; hatched grey is never visited)."""
    layers = require_routing(steps, "plot_routing_by_expert")
    agg = aggregate_routing_by_position(steps)
    grid_info = grid_info or compute_grid_bounds(steps)
    most = max(len(c) for c in layers.values())
    devs = {col: agg[col].to_numpy(float) - steps[col].mean() for cols in layers.values() for col in cols}
    top = max(float(np.nanmax(np.abs(v))) for v in devs.values()) if devs else 0.0
    top = max(top, 1e-3)  # a flat cache still gets a readable scale
    w, h = heat_size(grid_info, 2.0)
    fig, axes = panel_grid(
        len(layers) * most,
        layout,
        panel=(w, h + 0.45),
        screen_cols=most,
        paper_cols=most,
        extra=(0.6, 0.9),
        sharex=True,
        sharey=True,
    )
    image = None
    for i, (layer, cols) in enumerate(layers.items()):
        for j in range(most):
            ax = axes[i * most + j]
            if j >= len(cols):
                ax.set_axis_off()
                continue
            col = cols[j]
            grid = to_grid(agg, devs[col], grid_info)
            image = value_heatmap(ax, grid, grid_info, "RdBu_r", "", -top, top, colorbar=False)
            ax.set_title(
                f"L{layer} · {size_name(expert_size(expert_sizes, layer, j), j)}\nmean {steps[col].mean():.2f}"
            )
            ax.set_label(f"expert_layer_{layer}_{j}")
            if layout == "paper":  # ~1 in panels: every other cell number
                ax.xaxis.set_major_locator(MaxNLocator(4, integer=True))
                ax.yaxis.set_major_locator(MaxNLocator(4, integer=True))
            if i < len(layers) - 1:
                ax.set_xlabel("")
            if j > 0:
                ax.set_ylabel("")
    if image is not None:
        fig.colorbar(
            image,
            ax=axes,
            location="bottom",
            shrink=0.8,
            fraction=0.04,
            pad=0.02,
            label="cell's mean weight − the expert's mean over all steps",
        )
    n_ep = steps["episode"].nunique() if "episode" in steps.columns else "?"
    fig.suptitle(
        f"Where each expert is used more or less than on average ({len(steps)} steps, {n_ep} episodes)"
    )
    unvisited_legend(fig)
    return fig
