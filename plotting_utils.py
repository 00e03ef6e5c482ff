"""Plots of the routing caches: pure functions, data in, `matplotlib.figure.Figure` out.

Reads what `routing_cache.load_cache` returns (steps and episodes DataFrames, metadata), rows of
evaluation_results.csv (knockouts) and of a run's metrics.jsonl (training curves). It never runs a
model or an env: the level image comes in as an RGB array from the caller. Figures are plain
`Figure` objects, never registered with pyplot, so nothing pops up and nothing needs closing;
`save_figures` writes PNGs. Grid heatmaps put row 0 at the top, as minigrid renders the level;
hatched grey cells were never visited. Layers and experts are numbered from 0, as in the cache's
`layer_<k>_expert_<j>` columns and in knockout specs.

    data = routing_cache.load_cache("evaluation_cache/BabyAI-GoToLocal-v0/trial_0")
    fig = plot_overall_routing(data.steps, data.expert_sizes, env_image=image, grid_info=grid_info_for(data.steps, data.episodes))
    save_figures(standard_figures(data, metrics_rows=rows), "plots/BabyAI-GoToLocal-v0/trial_0")

The numbers behind the figures (groupings, per-cell aggregates, KL, entropy, usage) live in
routing_analysis.py; this module only draws them (the action figures and the grid drawing are in
mop/behaviour_plots.py, each expert's map in mop/expert_maps.py, both re-exported here). Every figure takes layout="screen" (at most 10.5 in
wide: a notebook shows it at 100%) or "paper" (3.3 in, one paper column; mop/plot_style.py), says
on itself what its error bars or bands are and over what, and what it could not draw. The level
picture is the cache's example layout (routing_analysis.example_layout, drawn by
mop/level_image.py) and is captioned as one layout of N. The headless command is render_plots.py:

    python render_plots.py --cache evaluation_cache/BabyAI-GoToLocal-v0/trial_0 --out plots/
    python render_plots.py --cache evaluation_cache/BabyAI-GoToLocal-v0/trial_0 --layout paper
"""

from __future__ import annotations

import math
import os
import sys
import textwrap
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.legend import Legend
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from mop.behaviour_plots import grid_axes, unvisited_legend, value_heatmap
from mop.behaviour_plots import plot_action_frequency as plot_action_frequency
from mop.behaviour_plots import plot_cell_action_distribution as plot_cell_action_distribution
from mop.behaviour_plots import plot_entropy_heatmap as plot_entropy_heatmap
from mop.behaviour_plots import plot_kl_heatmap as plot_kl_heatmap
from mop.expert_maps import plot_routing_by_expert as plot_routing_by_expert
from mop.plot_style import (
    EXPERT_CMAPS,
    EXPERT_COLORS,
    PANEL,
    PAPER_WIDTH,
    SCREEN_WIDTH,
    expert_dash,
    expert_label,
    expert_size,
    heat_size,
    new_figure,
    note,
    panel_grid,
    short_size,
    size_name,
    sized_figure,
    styled,
)

# Defined in plot_style; re-exported for users' scripts (plotting_utils.UNVISITED_COLOR ...).
from mop.plot_style import UNVISITED_COLOR as UNVISITED_COLOR
from mop.plot_style import UNVISITED_HATCH_COLOR as UNVISITED_HATCH_COLOR
from mop.results_plots import plot_knockout_comparison, plot_training_curves
from mop.routing_analysis import (
    EVENT_NAMES,
    ExampleLayout,
    action_kl_by_cell,
    example_layout,
    expert_usage,
    grid_info_for,
    group_labels,
    has_routing,
    require_routing,
    routing_entropy,
    routing_layers,
    to_grid,
)

# Defined in routing_analysis; re-exported because users' scripts call them as plotting_utils.<name>.
from mop.routing_analysis import aggregate_routing_by_position as aggregate_routing_by_position
from mop.routing_analysis import compute_grid_bounds as compute_grid_bounds
from mop.routing_analysis import get_available_analyses as get_available_analyses
from mop.routing_analysis import group_routing_data as group_routing_data
from mop.routing_analysis import room_labels_for_groups as room_labels_for_groups
from mop.routing_cache import CacheData

# ----------------------------------------------------------------------------- expert names and legends


def _labels(expert_sizes: Sequence[Sequence[int]] | None, layer: int, n: int) -> list[str]:
    return [expert_label(layer, j, expert_size(expert_sizes, layer, j)) for j in range(n)]


def _expert_legend(
    fig: Figure,
    layers: Mapping[int, list[str]],
    expert_sizes: Sequence[Sequence[int]] | None,
    kind: str = "line",
) -> Legend:
    """One legend under all panels naming every expert by size. Colour follows the expert index;
    when every layer has the same sizes one entry per expert says it all, else a column per layer."""
    sizes = {k: [expert_size(expert_sizes, k, j) for j in range(len(c))] for k, c in layers.items()}

    def handle(j: int, label: str) -> Any:
        color = EXPERT_COLORS[j % len(EXPERT_COLORS)]
        return (
            Line2D([], [], color=color, linewidth=1.6, linestyle=expert_dash(j), label=label)
            if kind == "line"
            else Patch(color=color, label=label)
        )

    first = next(iter(sizes.values()))
    if len({tuple(v) for v in sizes.values()}) == 1 and None not in first:
        handles = [handle(j, size_name(s, j)) for j, s in enumerate(first)]
        return fig.legend(
            handles=handles,
            loc="outside lower center",
            ncol=len(handles),
            frameon=False,
            title="expert (every layer)",
        )
    most = max(len(v) for v in sizes.values())
    handles = [
        handle(j, expert_label(k, j, v[j])) if j < len(v) else Patch(visible=False, label=" ")
        for k, v in sizes.items()
        for j in range(most)
    ]
    return fig.legend(
        handles=handles, loc="outside lower center", ncol=len(sizes), frameon=False, title="expert"
    )


# ----------------------------------------------------------------------------- routing heatmaps


def _shade(expert: int, strength: np.ndarray) -> np.ndarray:
    """RGBA of `expert`'s ramp at strength 0..1 (kept off the palest end so weak cells still show
    their hue against the grey of unvisited ones)."""
    return EXPERT_CMAPS[expert % len(EXPERT_CMAPS)](0.12 + 0.88 * np.clip(strength, 0.0, 1.0))


def _draw_expert_key(ax: Axes, num_experts: int, sizes: list[int | None]) -> Axes:
    """Draw the heatmap's legend into ax: one row per expert, named by its size, showing its ramp
    from weight 1/E (a tie) to 1 (all weight on it) - hue names the dominant expert, depth how
    dominant it is."""
    low = 1.0 / num_experts if num_experts > 1 else 0.0
    ramp = np.linspace(0.0, 1.0, 64)
    image = np.stack([_shade(j, ramp) for j in range(num_experts)], axis=0)  # (E, 64, 4)
    ax.imshow(image, extent=(low, 1, 0, 1), aspect="auto", origin="upper", zorder=3)
    ax.set_xlim(low, 1)
    ax.set_ylim(0, 1)
    ax.yaxis.set_ticks_position("left")
    ax.set_yticks(1 - (np.arange(num_experts) + 0.5) / num_experts)
    ax.set_yticklabels([size_name(s, j) for j, s in enumerate(sizes)])
    ax.set_xlabel("weight of the dominant expert")
    ax.set_label("expert_key")
    return ax


def _add_expert_key(
    fig: Figure,
    axes: Axes | list[Axes],
    num_experts: int,
    sizes: list[int | None],
    fraction: float | None = None,
    aspect: float | None = None,
    compact: bool = False,
) -> Axes:
    """The heatmap's legend (_draw_expert_key) as a colour bar below `axes`. fraction and aspect as
    fig.colorbar's (defaults: a key under one panel); a key spanning several panels passes its own,
    so that its rows stay about 0.18 in tall (room for their labels). compact: a key under a narrow
    (paper) panel, its text smaller and its label short enough for the panel's width."""
    low = 1.0 / num_experts if num_experts > 1 else 0.0
    bar = fig.colorbar(
        ScalarMappable(Normalize(low, 1.0), EXPERT_CMAPS[0]),
        ax=axes,
        location="bottom",
        # under one panel: rows ~0.1 in thick whatever the level's aspect (0.05 and 24 squeezed a
        # flat two-room level's three rows into one line of overlapping names)
        fraction=0.14 * num_experts if fraction is None else fraction,
        aspect=10 / num_experts if aspect is None else aspect,
        pad=0.02,
    )
    _draw_expert_key(bar.ax, num_experts, sizes)
    if compact:
        bar.set_label("dominant weight", fontsize="x-small")
        bar.ax.tick_params(labelsize="xx-small")
    else:
        bar.set_label("weight of the dominant expert")
    return bar.ax


def _usage_line(agg: pd.DataFrame, cols: list[str], layer: int, sizes: Sequence[Sequence[int]] | None) -> str:
    """'mean id 0.50 · 16 0.23 · 32 0.27': each expert's mean weight over the steps of agg's cells, so
    a panel one expert floods with its hue still says what the others get."""
    visits = agg["visits"].to_numpy(float) if "visits" in agg.columns else np.ones(len(agg))
    means = agg[cols].to_numpy(float).T @ visits / max(visits.sum(), 1.0)
    names = [short_size(expert_size(sizes, layer, j), j) for j in range(len(cols))]
    return "mean " + " · ".join(f"{n} {m:.2f}" for n, m in zip(names, means))


@styled
def render_routing_heatmap(
    ax: Axes,
    agg: pd.DataFrame,
    grid_info: Mapping[str, int],
    layer: int,
    expert_sizes: Sequence[Sequence[int]] | None,
    key: bool = True,
    usage: bool = True,
    compact: bool = False,
) -> AxesImage:
    """One layer on a grid: the dominant expert's hue, deeper the more weight it holds (its max
    weight rescaled from 1/E to 1); hatched grey where never visited. agg comes from
    aggregate_routing_by_position. key: draw the legend below the axes (a ramp per expert, named by
    its size); compact: a short title for narrow panels (paper); usage: a second title line with every expert's mean weight (a layer one expert
    dominates everywhere is one flat hue: the line says what the runner-up gets, and
    plot_routing_by_expert shows where). Returns the image (RGBA, alpha 0 where unvisited)."""
    cols = require_routing(agg, "render_routing_heatmap").get(layer)
    if cols is None:
        raise ValueError(f"no layer {layer} in this table (layers {list(routing_layers(agg.columns))})")
    num_experts = len(cols)
    weights = agg[cols].to_numpy(dtype=float)  # (cells, E)
    dominant = weights.argmax(1)
    low = 1.0 / num_experts
    strength = (weights.max(1) - low) / (1 - low) if num_experts > 1 else np.ones(len(weights))
    rgba = np.zeros((len(weights), 4))
    for j in range(num_experts):
        rows = dominant == j
        rgba[rows] = _shade(j, strength[rows])
    grid = np.nan_to_num(to_grid(agg, rgba, grid_info))  # unvisited: alpha 0, shows the hatch
    extent = grid_axes(ax, grid_info)
    image = ax.imshow(grid, origin="upper", extent=extent, interpolation="nearest", zorder=1)
    line = _usage_line(agg, cols, layer, expert_sizes)
    if compact:
        line = line.removeprefix("mean ").replace(" 0.", " .")
        ax.set_title(f"layer {layer}, dominant" + ("\n" + line if usage else ""), fontsize="small")
    else:
        ax.set_title(f"layer {layer}: dominant expert" + ("\n" + line if usage else ""))
    ax.set_label(f"routing_layer_{layer}")
    if key:
        sizes = [expert_size(expert_sizes, layer, j) for j in range(num_experts)]
        _add_expert_key(ax.figure, ax, num_experts, sizes, compact=compact)
    return image


@styled
def render_lpc_heatmap(
    ax: Axes,
    agg: pd.DataFrame,
    grid_info: Mapping[str, int],
    vmin: float | None = None,
    vmax: float | None = None,
    colorbar: bool = True,
) -> AxesImage:
    """Mean LPC per cell (viridis; hatched grey where never visited)."""
    grid = to_grid(agg, agg["lpc"].to_numpy(dtype=float), grid_info)
    image = value_heatmap(ax, grid, grid_info, "viridis", "LPC (Σ w·size²)", vmin, vmax, colorbar, "bottom")
    ax.set_title("mean LPC per cell")
    ax.set_label("lpc")
    return image


def _env_panel(
    ax: Axes,
    env_image: np.ndarray | None,
    mission: str | None,
    title: str = "level",
    example: ExampleLayout | None = None,
    width: int = 34,
) -> None:
    """The level picture. With `example` its title says which layout it is (one of N, its seed and
    the rule that chose it), so it is not read as a picture of the N layouts the heatmaps average."""
    if env_image is not None:
        ax.imshow(np.asarray(env_image))
    ax.set_axis_off()
    ax.set_label("env_image")
    lines = [title]
    if example is not None:
        lines = textwrap.wrap(example.caption(), width)
        mission = mission or example.mission
    if mission:
        lines += textwrap.wrap(f'"{mission}"', width)
    ax.set_title("\n".join(lines))


@styled
def plot_overall_routing(
    steps: pd.DataFrame,
    expert_sizes: Sequence[Sequence[int]] | None,
    env_image: np.ndarray | None = None,
    env_mission: str | None = None,
    filter_fn: Callable[[pd.DataFrame], Any] | None = None,
    title_suffix: str = "",
    grid_info: Mapping[str, int] | None = None,
    example: ExampleLayout | None = None,
    layout: str = "screen",
) -> Figure:
    """Level image (when given; example: which layout it is, routing_analysis.example_layout), one
    dominant-expert heatmap per layer (with each expert's mean weight), and the LPC heatmap. Screen:
    one row (at most 10.5 in), with one expert key under the layers when every layer has the same
    experts (else a key under each); paper: 3.3 in wide, two columns, the shared key in a cell of
    the grid."""
    layers = require_routing(steps, "plot_overall_routing")
    agg = aggregate_routing_by_position(steps, filter_fn)
    if agg.empty:
        raise ValueError("plot_overall_routing: no steps left after filter_fn")
    grid_info = grid_info or compute_grid_bounds(steps)
    sizes = {k: [expert_size(expert_sizes, k, j) for j in range(len(c))] for k, c in layers.items()}
    shared = len({tuple(v) for v in sizes.values()}) == 1  # one key serves every layer
    paper = layout == "paper"
    panels = len(layers) + 1 + (env_image is not None)
    slot = paper and shared  # the paper grid's spare cell holds the key
    w, h = heat_size(grid_info)
    fig, axes = panel_grid(
        panels + slot,
        layout,
        # paper: a key under every panel (layers with different experts) needs the room the screen
        # gives (0.4 in left ~1 in rows whose keys were drawn over the next row's titles)
        panel=(w, h + (0.4 if paper and shared else 1.5)),
        screen_cols=panels,
        extra=(0.0, 0.8 if shared else 0.3),
    )
    if slot:
        first = next(iter(sizes.values()))
        key = axes.pop()
        _draw_expert_key(key, len(first), first)
        key.set_box_aspect(0.12 * len(first))
        key.set_xlabel("dominant expert's weight")
    if env_image is not None:
        _env_panel(axes.pop(0), env_image, env_mission, example=example, width=26 if paper else 24)
    for ax, layer in zip(axes, layers):
        render_routing_heatmap(ax, agg, grid_info, layer, expert_sizes, key=not shared, compact=paper)
    if shared and not slot:
        first = next(iter(sizes.values()))
        _add_expert_key(fig, axes[: len(layers)], len(first), first, fraction=0.25, aspect=21 / len(first))
    render_lpc_heatmap(axes[-1], agg, grid_info)
    n_ep = steps["episode"].nunique() if "episode" in steps.columns else "?"
    fig.suptitle(f"Routing by position{title_suffix} ({int(agg['visits'].sum())} steps, {n_ep} episodes)")
    unvisited_legend(fig)
    return fig


@styled
def plot_lpc_heatmap(
    steps: pd.DataFrame, grid_info: Mapping[str, int] | None = None, layout: str = "screen"
) -> Figure:
    """Mean LPC per cell, on its own (same panel as in plot_overall_routing)."""
    require_routing(steps, "plot_lpc_heatmap")
    grid_info = grid_info or compute_grid_bounds(steps)
    w, h = heat_size(grid_info)
    fig, (ax,) = panel_grid(1, layout, panel=(w + 0.8, h + 1.6), extra=(0.0, 0.0))
    render_lpc_heatmap(ax, aggregate_routing_by_position(steps), grid_info)
    fig.suptitle(f"LPC by position ({len(steps)} steps)")
    unvisited_legend(fig)
    return fig


# ----------------------------------------------------------------------------- groupings

_GROUP_TITLES = {
    "overall": "all steps",
    "by_starting_room": "starting room",
    "by_door_location": "door position on the start room's wall",
    "by_carrying_phase": "carrying or not",
    "by_door_unlocked_phase": "door opened yet",
    "by_key_phase": "key phase",
    "by_quadrant": "agent position relative to target",
}


@styled
def plot_grouped_routing(
    steps: pd.DataFrame,
    episodes: pd.DataFrame,
    group_by: str,
    expert_sizes: Sequence[Sequence[int]] | None,
    env_images: Mapping[str, np.ndarray] | np.ndarray | None = None,
    grid_info: Mapping[str, int] | None = None,
    layout: str = "screen",
) -> Figure:
    """One row per group: level image (env_images[label], or one image for every row), one
    dominant-expert heatmap per layer (titled with the group's mean weight of each expert on
    screen), LPC on one colour scale shared by all rows. Screen: at most 10.5 in wide; paper:
    3.3 in wide, short titles, tick labels on the outer panels only."""
    layers = require_routing(steps, "plot_grouped_routing")
    if group_by == "overall":
        return plot_overall_routing(steps, expert_sizes, grid_info=grid_info, layout=layout)
    labels, groups = group_labels(steps, episodes, group_by)
    grid_info = grid_info or grid_info_for(steps, episodes)
    # One groupby over (group, x, y) instead of copying every group's rows out of 10^5 steps.
    by_group = steps.assign(group=labels)
    cols = [c for cs in layers.values() for c in cs] + ["lpc"]
    grouped = by_group.groupby(["group", "x", "y"], sort=True)
    stacked = grouped[cols].mean().assign(visits=grouped.size())
    aggs = {g: stacked.xs(g, level="group") for g in groups}
    episodes_in = by_group.groupby("group")["episode"].nunique()
    lpc_min = min(a["lpc"].min() for a in aggs.values())
    lpc_max = max(a["lpc"].max() for a in aggs.values())
    show_env = env_images is not None
    paper = layout == "paper"
    ncols = len(layers) + 1 + show_env
    w, h = heat_size(grid_info, 2.4)
    width = (w + 0.6) * ncols + 0.4
    scale = min(1.0, (PAPER_WIDTH if paper else SCREEN_WIDTH) / width)
    fig = new_figure(PAPER_WIDTH if paper else width * scale, (h + 0.75) * len(groups) * scale + 1.6)
    axes = fig.subplots(len(groups), ncols, squeeze=False)
    for r, (group, agg) in enumerate(aggs.items()):
        row = list(axes[r])
        if show_env:
            image = env_images.get(group) if isinstance(env_images, Mapping) else env_images
            _env_panel(row.pop(0), image, None, title=group)
        for ax, (layer, lcols) in zip(row, layers.items()):
            render_routing_heatmap(ax, agg, grid_info, layer, expert_sizes, key=False, usage=not paper)
            if paper:
                ax.set_title(f"layer {layer}")
            elif r > 0:
                ax.set_title(_usage_line(agg, lcols, layer, expert_sizes))
        render_lpc_heatmap(row[-1], agg, grid_info, lpc_min, lpc_max, colorbar=False)
        if paper or r > 0:
            row[-1].set_title("LPC" if paper and r == 0 else "")
        n_steps, n_ep = int(agg["visits"].sum()), int(episodes_in[group])
        for ax in row[1:]:
            ax.set_ylabel("")
            if paper:
                ax.tick_params(labelleft=False)
        for ax in row if r < len(groups) - 1 else []:
            ax.set_xlabel("")
            if paper:
                ax.tick_params(labelbottom=False)
        for ax in row if r > 0 and paper else []:
            ax.set_title("")
        if paper:  # narrow rows: short lines, fewer ticks
            row[0].set_ylabel("\n".join([*textwrap.wrap(group, 12), f"{n_steps} steps", f"{n_ep} ep."]))
            for ax in row:
                ax.xaxis.set_major_locator(MaxNLocator(3, integer=True))
                ax.yaxis.set_major_locator(MaxNLocator(3, integer=True))
        else:
            row[0].set_ylabel(f"{group}\n({n_steps} steps, {n_ep} episodes)\ny (cell)")
    offset = int(show_env)
    sizes = {k: [expert_size(expert_sizes, k, j) for j in range(len(c))] for k, c in layers.items()}
    if len({tuple(v) for v in sizes.values()}) == 1:  # one key serves every layer
        first = next(iter(sizes.values()))
        _add_expert_key(
            fig,
            list(axes[:, offset : offset + len(layers)].ravel()),
            len(first),
            first,
            fraction=min(0.3, 0.24 * len(first) / fig.get_figheight()),
            aspect=10 / len(first),
        )
    else:
        for i, lsizes in enumerate(sizes.values()):
            _add_expert_key(fig, list(axes[:, offset + i]), len(lsizes), lsizes)
    image = axes[0, -1].get_images()[0]
    fig.colorbar(
        image,
        ax=list(axes[:, -1]),
        label="LPC" if paper else "LPC (Σ w·size²)",
        location="bottom",
        fraction=0.05,
        pad=0.02,
    )
    fig.suptitle(f"Routing by {_GROUP_TITLES[group_by]} ({len(steps)} steps)")
    unvisited_legend(fig)
    return fig


# ----------------------------------------------------------------------------- time


def _event_lines(ax: Axes, events: Mapping[str, float]) -> None:
    styles = {"t_pick": ":", "t_unlocked": "--", "t_drop": "-."}
    for event, t in events.items():
        if np.isfinite(t):
            ax.axvline(t, color="k", linestyle=styles[event], linewidth=1, label=EVENT_NAMES[event])


@styled
def plot_episode_routing(
    steps: pd.DataFrame,
    episode: int,
    expert_sizes: Sequence[Sequence[int]] | None,
    mission: str | None = None,
    example: ExampleLayout | None = None,
    layout: str = "screen",
) -> Figure:
    """Every expert's weight at every step of one episode (a panel per layer, then LPC), with the
    first pickup / door opening / drop marked where they happened (at the first step after).
    example: when it is this episode, the title says so (the example layout and its rule)."""
    layers = require_routing(steps, "plot_episode_routing")
    ep = steps[steps["episode"] == episode].sort_values("t")
    if ep.empty:
        raise ValueError(f"episode {episode} is not in this table")
    events = {e: float(ep[e].max()) for e in EVENT_NAMES if e in ep.columns}
    fig, axes = panel_grid(
        len(layers) + 1,
        layout,
        panel=(
            PANEL * 2,
            2.1 if layout == "paper" else 1.45,
        ),  # a column halves the width: keep rows readable
        screen_cols=1,
        paper_cols=1,
        extra=(0.0, 1.0),
        sharex=True,
    )
    t = ep["t"].to_numpy()
    marker = "." if len(t) <= 40 else None  # short episodes: show the individual steps
    for ax, (layer, cols) in zip(axes, layers.items()):
        for j, col in enumerate(cols):
            ax.plot(
                t,
                ep[col].to_numpy(),
                color=EXPERT_COLORS[j % len(EXPERT_COLORS)],
                linestyle=expert_dash(j),
                marker=marker,
                linewidth=1.2,
            )
        _event_lines(ax, events)
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel("router weight")
        ax.set_title(f"layer {layer}")
    axes[-1].plot(t, ep["lpc"].to_numpy(), color="k", linewidth=1.2, marker=marker)
    _event_lines(axes[-1], events)
    axes[-1].set_ylabel("LPC (Σ w·size²)")
    axes[-1].set_xlabel("step in episode")
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[-1].set_title("LPC")
    if any(np.isfinite(v) for v in events.values()):
        handles = axes[-1].get_legend_handles_labels()[0]
        fig.legend(
            handles=handles, loc="outside right upper", frameon=False, title="event\n(first step after)"
        )
    _expert_legend(fig, layers, expert_sizes)
    about = f': "{mission}"' if mission else ""
    head = f"Routing over episode {episode}{about} ({len(ep)} steps)"
    if example is not None and example.episode == episode:
        seed = "" if example.seed is None else f", seed {example.seed}"
        head += f"\nthe example layout of {example.n_layouts}{seed} ({example.rule})"
    fig.suptitle(head)
    return fig


@styled
def plot_event_aligned_routing(
    steps: pd.DataFrame,
    event: str = "t_pick",
    window: int = 10,
    expert_sizes: Sequence[Sequence[int]] | None = None,
    layout: str = "screen",
) -> Figure:
    """Mean ± SEM (over episodes) of every expert's weight from `window` steps before to `window`
    after an event, aligned at the event (0 = first step after the action that caused it)."""
    layers = require_routing(steps, "plot_event_aligned_routing")
    if event not in EVENT_NAMES:
        raise ValueError(f"event must be one of {list(EVENT_NAMES)}, not {event!r}")
    # The t_* columns are NaN until the event; the episode's max is its event step.
    when = steps.groupby("episode")[event].transform("max")
    rel = steps["t"] - when
    # assign before filtering: assigning a Series to an empty frame would adopt the Series' index.
    near = steps.assign(rel=rel)[(rel.abs() <= window) & when.notna()]
    if near.empty:
        raise ValueError(f"no episode in this table has a {EVENT_NAMES[event]} ({event})")
    n_episodes = near["episode"].nunique()
    fig, axes = panel_grid(
        len(layers), layout, panel=(PANEL * 1.15, PANEL * 0.95), paper_cols=1, extra=(0.0, 1.0)
    )
    for ax, (layer, cols) in zip(axes, layers.items()):
        stats = near.groupby("rel")[cols].agg(["mean", "sem"])
        xs = stats.index.to_numpy()
        for j, (col, label) in enumerate(zip(cols, _labels(expert_sizes, layer, len(cols)))):
            mean, sem = stats[(col, "mean")].to_numpy(), np.nan_to_num(stats[(col, "sem")].to_numpy())
            color = EXPERT_COLORS[j % len(EXPERT_COLORS)]
            ax.plot(xs, mean, color=color, linestyle=expert_dash(j), label=label)
            ax.fill_between(xs, mean - sem, mean + sem, color=color, alpha=0.25, linewidth=0)
        ax.axvline(0, color="k", linestyle="--", linewidth=1)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel(f"steps relative to {EVENT_NAMES[event]}")
        ax.set_ylabel("router weight (mean ± SEM)")
        ax.set_title(f"layer {layer}")
    _expert_legend(fig, layers, expert_sizes)
    fig.suptitle(f"Routing around the {EVENT_NAMES[event]} ({n_episodes} episodes; 0 = first step after it)")
    note(
        fig,
        f"Line: mean over the {n_episodes} episodes with a {EVENT_NAMES[event]}; band: ± 1 SEM over those "
        "episodes (at each offset, the episodes long enough to reach it; no band where only one does).",
    )
    return fig


# ----------------------------------------------------------------------------- distributions


@styled
def plot_weight_histograms(
    steps: pd.DataFrame, expert_sizes: Sequence[Sequence[int]] | None, layout: str = "screen"
) -> Figure:
    """Distribution over steps of each expert's router weight, a panel per layer."""
    layers = require_routing(steps, "plot_weight_histograms")
    short = 0.65 if layout == "paper" else 1.0  # stacked in a column: flatter panels
    fig, axes = panel_grid(
        len(layers), layout, panel=(PANEL * 1.1, PANEL * 0.95 * short), paper_cols=1, extra=(0.0, 0.9)
    )
    bins = np.linspace(0, 1, 26)
    for ax, (layer, cols) in zip(axes, layers.items()):
        for j, (col, label) in enumerate(zip(cols, _labels(expert_sizes, layer, len(cols)))):
            counts, _ = np.histogram(steps[col].to_numpy(), bins=bins)
            ax.stairs(
                counts / max(len(steps), 1),
                bins,
                color=EXPERT_COLORS[j % len(EXPERT_COLORS)],
                linestyle=expert_dash(j),
                label=label,
                linewidth=1.5,
            )
        ax.set_yscale("log")
        ax.set_ylim(0.5 / max(len(steps), 1), 1.5)  # from half a step to all steps, whatever the data
        ax.set_xlabel("router weight")
        ax.set_ylabel("fraction of steps (log)")
        ax.set_title(f"layer {layer}")
    _expert_legend(fig, layers, expert_sizes)
    fig.suptitle(f"Router weight distributions ({len(steps)} steps)")
    return fig


@styled
def plot_routing_entropy(
    steps: pd.DataFrame, expert_sizes: Sequence[Sequence[int]] | None = None, layout: str = "screen"
) -> Figure:
    """Per layer, the distribution over steps of the router's weight entropy (nats); dashed: a
    uniform split (log E), solid: the mean."""
    layers = require_routing(steps, "plot_routing_entropy")
    short = 0.65 if layout == "paper" else 1.0  # stacked in a column: flatter panels
    fig, axes = panel_grid(
        len(layers), layout, panel=(PANEL * 1.05, PANEL * 0.85 * short), paper_cols=1, extra=(0.0, 0.7)
    )
    for ax, (layer, cols) in zip(axes, layers.items()):
        h = routing_entropy(steps, layer)
        top = math.log(len(cols))
        bins = np.linspace(0, max(top, 1e-6), 26)
        counts, _ = np.histogram(h, bins=bins)
        ax.stairs(counts / max(len(h), 1), bins, fill=True, color="#4c72b0", alpha=0.8)
        ax.axvline(top, color="k", linestyle="--", linewidth=1, label="uniform split (ln E)")
        ax.axvline(h.mean(), color="#c44e52", linewidth=1.5, label="mean")
        ax.set_xlabel("router entropy (nats)")
        ax.set_ylabel("fraction of steps")
        sizes = ", ".join(short_size(expert_size(expert_sizes, layer, j), j) for j in range(len(cols)))
        ax.set_title(f"layer {layer} (experts {sizes})\nmean {h.mean():.2f} of max {top:.2f} nats")
    fig.legend(handles=axes[0].get_lines(), loc="outside lower center", ncol=2, frameon=False)
    fig.suptitle(f"Router entropy ({len(steps)} steps)")
    return fig


@styled
def plot_expert_usage(
    source: Any, expert_sizes: Sequence[Sequence[int]] | None = None, layout: str = "screen"
) -> Figure:
    """Stacked bar per layer of the experts' mean weights (see expert_usage for the sources)."""
    usage = expert_usage(source)
    fig = sized_figure(PANEL * 1.3, PANEL * 0.9, layout)
    ax = fig.subplots()
    layers = list(usage)
    bottoms = np.zeros(len(layers))
    most = max(len(u) for u in usage.values())
    for j in range(most):
        heights = np.array([usage[k][j] if j < len(usage[k]) else 0.0 for k in layers])
        sizes = {expert_size(expert_sizes, k, j) for k in layers if j < len(usage[k])}
        name = (
            expert_label(0, j, sizes.pop()).split(" · ", 1)[1]
            if len(sizes) == 1 and None not in sizes
            else f"expert {j}"
        )
        ax.bar(
            range(len(layers)),
            heights,
            0.6,
            bottom=bottoms,
            color=EXPERT_COLORS[j % 6],
            label=name,
            edgecolor="white",
        )
        for i, (b, hgt) in enumerate(zip(bottoms, heights)):
            if hgt >= 0.06:
                size = expert_size(expert_sizes, layers[i], j)
                text = f"{hgt:.2f}" if size is None else f"{short_size(size, j)}: {hgt:.2f}"
                ax.text(i, b + hgt / 2, text, ha="center", va="center", fontsize=7, color="white")
        bottoms += heights
    ax.set_xticks(range(len(layers)), [f"layer {k}" for k in layers])
    ax.set_ylabel("mean router weight")
    ax.set_ylim(0, 1.0)
    steps_note = f"\nmean over {len(source)} steps" if isinstance(source, pd.DataFrame) else ""
    ax.set_title(f"Expert usage per layer{steps_note}")
    ax.legend(title="expert", loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return fig


# ----------------------------------------------------------------------------- specialisation


def _grouped_bars(
    ax: Axes, means: np.ndarray, errors: np.ndarray, names: list[str], labels: list[str], mark_max: bool
) -> None:
    """means/errors (groups, E): a cluster of E bars per group; a star over each group's
    largest bar when mark_max."""
    groups, experts = means.shape
    width = 0.8 / experts
    for j in range(experts):
        xs = np.arange(groups) + (j - (experts - 1) / 2) * width
        ax.bar(
            xs, means[:, j], width, yerr=errors[:, j], capsize=2, color=EXPERT_COLORS[j % 6], label=labels[j]
        )
    if mark_max:
        for g in range(groups):
            j = int(np.nanargmax(means[g]))
            x = g + (j - (experts - 1) / 2) * width
            ax.text(
                x, means[g, j] + np.nan_to_num(errors[g, j]) + 0.02, "★", ha="center", va="bottom", fontsize=9
            )
    ax.set_xticks(range(groups), names, rotation=20 if groups > 2 else 0)
    ax.set_ylim(0, 1.12)


@styled
def plot_phase_specialisation(
    steps: pd.DataFrame,
    episodes: pd.DataFrame,
    expert_sizes: Sequence[Sequence[int]] | None,
    group_by: str = "by_key_phase",
    layout: str = "screen",
) -> Figure:
    """Mean weight of every expert in every group (mean over episodes of each episode's mean in
    that group, ± SEM over episodes); ★ marks each group's dominant expert."""
    layers = require_routing(steps, "plot_phase_specialisation")
    available = get_available_analyses(steps, episodes)
    if group_by not in available:
        raise ValueError(f"grouping {group_by!r} is not available for this cache (available: {available})")
    labels, order = group_labels(steps, episodes, group_by)
    cols = [c for cs in layers.values() for c in cs]
    per_episode = steps[cols].groupby([labels.rename("group"), steps["episode"]]).mean()
    stats = per_episode.groupby(level="group").agg(["mean", "sem"]).reindex(order)
    counts = labels.value_counts()
    episodes_in = per_episode.reset_index().groupby("group")["episode"].nunique()
    names = [f"{g}\n({episodes_in.get(g, 0)} ep.)" for g in order]
    fig, axes = panel_grid(
        len(layers),
        layout,
        panel=(max(3.0, 0.75 * len(order)), PANEL * 1.05),
        paper_cols=1,
        extra=(0.4, 1.0),
        sharey=True,
    )
    for ax, (layer, lcols) in zip(axes, layers.items()):
        means = np.stack([stats[(c, "mean")].to_numpy() for c in lcols], 1)
        errors = np.nan_to_num(np.stack([stats[(c, "sem")].to_numpy() for c in lcols], 1))
        _grouped_bars(ax, means, errors, names, _labels(expert_sizes, layer, len(lcols)), mark_max=True)
        ax.set_title(f"layer {layer}")
        ax.set_ylabel("mean router weight")
    _expert_legend(fig, layers, expert_sizes, kind="patch")
    fig.suptitle(f"Expert weight by {_GROUP_TITLES[group_by]} (★ dominant)")
    steps_in = ", ".join(f"{g} {counts.get(g, 0)}" for g in order)
    note(
        fig,
        "Bar: mean over episodes of each episode's mean weight in the group; error bar: ± 1 SEM over "
        f"those episodes (ep. = episodes with steps in the group; none where only one). Steps: {steps_in}.",
    )
    return fig


@styled
def plot_success_vs_failure(
    steps: pd.DataFrame,
    episodes: pd.DataFrame,
    expert_sizes: Sequence[Sequence[int]] | None,
    layout: str = "screen",
) -> Figure:
    """Per layer, each expert's episode-mean weight in successful vs failed episodes (± SEM over
    episodes), then mean LPC per episode; a missing outcome is said on the figure."""
    layers = require_routing(episodes, "plot_success_vs_failure")
    require_routing(steps, "plot_success_vs_failure")
    outcomes = {"success": episodes[episodes["success"]], "failure": episodes[~episodes["success"]]}
    outcomes = {k: v for k, v in outcomes.items() if len(v)}
    n = len(layers) + 1
    fig, axes = panel_grid(
        n, layout, panel=(min(PANEL * 0.95, SCREEN_WIDTH / n), PANEL * 0.95), extra=(0.0, 1.0)
    )
    colors = {"success": "#2ca02c", "failure": "#d62728"}
    width = 0.8 / len(outcomes)
    for ax, (layer, cols) in zip(axes, layers.items()):
        for i, (name, part) in enumerate(outcomes.items()):
            xs = np.arange(len(cols)) + (i - (len(outcomes) - 1) / 2) * width
            mean, sem = part[cols].mean().to_numpy(), np.nan_to_num(part[cols].sem().to_numpy())
            ax.bar(xs, mean, width, yerr=sem, capsize=2, color=colors[name], label=f"{name} (n={len(part)})")
        sizes = [short_size(expert_size(expert_sizes, layer, j), j) for j in range(len(cols))]
        paper = layout == "paper"  # a narrow panel: sizes alone, the unit in the axis label
        ax.set_xticks(range(len(cols)), [s if s == "id" or paper else f"{s} units" for s in sizes])
        ax.set_xlabel("expert (hidden units)" if paper else "expert (hidden size)")
        ax.set_ylabel("episode-mean router weight")
        ax.set_ylim(0, 1.05)
        ax.set_title(f"layer {layer}")
    ax = axes[-1]
    for i, (name, part) in enumerate(outcomes.items()):
        ax.bar(
            i,
            part["mean_lpc"].mean(),
            0.6,
            yerr=np.nan_to_num(part["mean_lpc"].sem()),
            capsize=3,
            color=colors[name],
        )
    ax.set_xticks(range(len(outcomes)), list(outcomes))
    ax.set_ylabel("episode-mean LPC (Σ w·size²)")
    ax.set_title("LPC")
    fig.legend(
        *axes[0].get_legend_handles_labels(),
        loc="outside lower center",
        ncols=2,
        frameon=False,
        title="episodes",
    )
    missing = [k for k in ("success", "failure") if k not in outcomes]
    fig.suptitle(f"Routing in successful vs failed episodes ({len(episodes)} episodes)")
    text = "Bar: mean over episodes of the episode's mean weight (LPC: mean LPC per step); error bar: ± 1 SEM over the episodes of that outcome (n)."
    if "length" in episodes.columns and len(outcomes) == 2:
        lengths = {k: float(v["length"].mean()) for k, v in outcomes.items()}
        text += (
            f" Failed episodes are {'longer' if lengths['failure'] > lengths['success'] else 'not longer'}"
            f" (mean {lengths['failure']:.0f} vs {lengths['success']:.0f} steps) and visit other places:"
            " a gap here is confounded with episode length and position, not a cause of failure."
        )
    if missing:
        text += (
            f" No {' or '.join(missing)} episodes in this cache: only {next(iter(outcomes))} bars are drawn."
        )
    note(fig, text)
    return fig


# ----------------------------------------------------------------------------- the standard set


def standard_figures(
    data: CacheData,
    env_image: np.ndarray | None = None,
    metrics_rows: Sequence[Mapping[str, Any]] | None = None,
    results_df: pd.DataFrame | None = None,
    env_mission: str | None = None,
    layout: str = "screen",
) -> dict[str, Figure]:
    """Every figure this cache supports, keyed by file stem. Routing figures only when the cache
    has router weights; event, phase and knockout figures only when those events / rows exist.
    env_image: a rendering of the cache's example layout (routing_analysis.example_layout;
    level_image.example_image draws it), shown beside the overall heatmaps and captioned as that
    layout, with env_mission (default: the example's mission); the episode-routing figure draws the
    same episode. metrics_rows: the run's metrics.jsonl rows; results_df: evaluation_results.csv
    (its rows for this checkpoint, if several knockouts). layout: "screen" or "paper" (plot_style)."""
    steps, episodes = data.steps, data.episodes
    sizes = data.expert_sizes
    grid_info = grid_info_for(steps, episodes)
    analyses = get_available_analyses(steps, episodes)
    figs: dict[str, Figure] = {}
    example = example_layout(episodes) if len(episodes) else None
    mission = env_mission if env_mission is not None or example is None else example.mission
    kw = {"layout": layout}
    if has_routing(steps):
        figs["routing_overall"] = plot_overall_routing(
            steps, sizes, env_image, mission, grid_info=grid_info, example=example, **kw
        )
        figs["routing_by_expert"] = plot_routing_by_expert(steps, sizes, grid_info, **kw)
        for analysis in analyses[1:]:
            figs[f"routing_{analysis}"] = plot_grouped_routing(
                steps, episodes, analysis, sizes, grid_info=grid_info, **kw
            )
        figs["lpc_overall"] = plot_lpc_heatmap(steps, grid_info, **kw)
    figs["action_frequency"] = plot_action_frequency(steps, by_carrying="by_carrying_phase" in analyses, **kw)
    figs["entropy_heatmap"] = plot_entropy_heatmap(steps, grid_info, **kw)
    for reference in ("global", "neighbours"):
        if action_kl_by_cell(steps, reference)["kl"].notna().any():
            figs[f"kl_{reference}"] = plot_kl_heatmap(steps, reference, grid_info=grid_info, **kw)
    if has_routing(steps):
        figs["weights_histograms"] = plot_weight_histograms(steps, sizes, **kw)
        figs["routing_entropy"] = plot_routing_entropy(steps, sizes, **kw)
        figs["expert_usage"] = plot_expert_usage(steps, sizes, **kw)
        for event in ("t_pick", "t_unlocked"):
            if event in steps.columns and steps[event].notna().any():
                figs[f"event_aligned_{event}"] = plot_event_aligned_routing(steps, event, 10, sizes, **kw)
        phase = next(
            (
                a
                for a in (
                    "by_key_phase",
                    "by_door_unlocked_phase",
                    "by_carrying_phase",
                    "by_quadrant",
                    "by_starting_room",
                )
                if a in analyses
            ),
            None,
        )
        if phase is not None:
            figs["phase_specialisation"] = plot_phase_specialisation(steps, episodes, sizes, phase, **kw)
        if episodes["success"].notna().all():  # the earlier system's caches record no outcome
            figs["success_vs_failure"] = plot_success_vs_failure(steps, episodes, sizes, **kw)
        if example is not None:
            figs[f"episode_{example.episode}_routing"] = plot_episode_routing(
                steps, example.episode, sizes, example.mission, example=example, **kw
            )
    if metrics_rows:
        figs["training_curves"] = plot_training_curves(metrics_rows, sizes, **kw)
    if results_df is not None and not results_df.empty:
        mine = results_df[results_df["checkpoint_path"].astype(str) == str(data.meta.get("checkpoint_path"))]
        if "knockout" in mine.columns and mine["knockout"].fillna("none").nunique() > 1:
            figs["knockout_comparison"] = plot_knockout_comparison(
                mine, str(data.meta["checkpoint_path"]), **kw
            )
    return figs


def save_figures(figures: Mapping[str, Figure], out_dir: str | os.PathLike, dpi: int = 150) -> list[Path]:
    """Write every figure as <out_dir>/<name>.png; returns the paths. Figures that pyplot holds
    (made outside this module) are closed so they do not pile up in its registry."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pyplot = sys.modules.get("matplotlib.pyplot")  # only figures pyplot made can be registered there
    paths = []
    for name, fig in figures.items():
        path = out / f"{name}.png"
        fig.savefig(path, dpi=dpi, facecolor="white")
        if pyplot is not None:
            pyplot.close(fig)
        paths.append(path)
    return paths
