"""Figures of routing by the bot's subgoal and around the level's events: tables in, Figure out.

Draws what mop/subgoal_analysis.py computes (no numbers of its own), with mop/plot_style's look:
- `plot_routing_by_subgoal(table)`: one panel per layer; subgoals along x, one bar per expert
  (the expert's colour), whiskers = the table's intervals; the steps per subgoal under each name.
- `plot_event_locked(tables)`: one panel per (event, layer); x = steps from the event, one line
  per expert, bands = the intervals.
render_plots.py writes both (per cache and, with --subgoals, across runs); routing_viz.py shows them.

    fig = plot_routing_by_subgoal(routing_by_subgoal(runs, sizes), sizes)
    fig = plot_event_locked({"event_pickup": event_locked(runs, "event_pickup", 5)}, sizes)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from mop.plot_style import (
    EXPERT_COLORS,
    PANEL,
    expert_dash,
    expert_size,
    note,
    panel_grid,
    size_name,
    styled,
)

EVENT_TITLES = {
    "event_pickup": "pickup",
    "event_drop": "drop",
    "event_open": "door opened",
    "event_unlock": "door unlocked",
    "event_close": "door closed",
    "event_target_in_view": "target in view",
}


def _layers(table: pd.DataFrame) -> list[int]:
    return sorted(int(v) for v in table["layer"].dropna().unique())


@styled
def plot_routing_by_subgoal(
    table: pd.DataFrame,
    expert_sizes: Sequence[Sequence[int]] | None = None,
    adjustment: str = "none",
    title: str | None = None,
    layout: str = "screen",
) -> Figure:
    """Mean routing weight per subgoal and expert, one panel per layer (subgoal_analysis
    .routing_by_subgoal's rows of `adjustment`: "none", "within_step" (the difference from the mean
    at the same step of the episode), or "within_cell" for the difference from
    the cell's mean)."""
    rows = table[(table["adjustment"] == adjustment) & table["layer"].notna()]
    layers = _layers(rows)
    subgoals = list(dict.fromkeys(rows["subgoal"]))
    first = rows.drop_duplicates("subgoal").set_index("subgoal")
    steps, n_units = first["steps"], first["n_units"]
    by_runs = bool(len(rows)) and rows["unit"].iloc[0] == "runs"
    width = max(PANEL, 0.75 * len(subgoals) + 1.0)
    fig, axes = panel_grid(len(layers), layout, panel=(width, 0.7 * PANEL), paper_cols=1, extra=(0.0, 0.7))
    paper = layout == "paper"
    x = np.arange(len(subgoals))
    for ax, layer in zip(axes, layers):
        part = rows[rows["layer"] == layer]
        experts = sorted(int(e) for e in part["expert"].unique())
        bar = 0.8 / max(len(experts), 1)
        for i, expert in enumerate(experts):
            r = part[part["expert"] == expert].set_index("subgoal").reindex(subgoals)
            mean = r["mean"].to_numpy(float)
            err = np.vstack([mean - r["ci_low"].to_numpy(float), r["ci_high"].to_numpy(float) - mean])
            err = np.where(np.isfinite(err), err, 0.0)
            ax.bar(
                x + (i - (len(experts) - 1) / 2) * bar,
                mean,
                bar,
                yerr=err,
                color=EXPERT_COLORS[expert % len(EXPERT_COLORS)],
                error_kw={"elinewidth": 0.8, "capsize": 1.5, "ecolor": "#333333"},
                label=size_name(expert_size(expert_sizes, layer, expert), expert),
            )
        if paper:  # a column is too narrow for two-line labels side by side
            labels = [
                f"{s} ({int(steps.get(s, 0)):,}" + (f"; {int(n_units.get(s, 0))}" if by_runs else "") + ")"
                for s in subgoals
            ]
            ax.set_xticks(x, labels, fontsize="small", rotation=30, ha="right", rotation_mode="anchor")
        else:
            labels = [
                f"{s}\n{int(steps.get(s, 0)):,} steps"
                + (f"\n{int(n_units.get(s, 0))} runs" if by_runs else "")
                for s in subgoals
            ]
            ax.set_xticks(x, labels, fontsize="small")
        if adjustment in ("within_cell", "within_step"):
            ax.axhline(0, color="#555555", lw=0.7)
            ax.set_ylabel("weight − " + ("cell" if adjustment == "within_cell" else "same-step") + " mean")
        else:
            ax.set_ylim(0, 1)
            ax.set_ylabel("mean routing weight")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize="x-small", frameon=False, ncols=min(len(experts), 3), loc="lower left",
                  bbox_to_anchor=(0, 1.0), borderaxespad=0.1)  # fmt: skip
        ax.set_title(f"layer {layer}", pad=16)  # above the legend's row, never beside it
    if title:
        fig.suptitle(title)
    if by_runs:
        units = "95% t interval over the runs that have the subgoal, clipped to the range"
        counts = "(steps; runs)" if paper else "steps with the subgoal (all runs) and runs under each name"
    else:
        units = "95% t interval over the episodes of one run that have the subgoal (not across runs)"
        counts = "(steps)" if paper else "steps with the subgoal under each name"
    note(fig, f"Bars: mean weight per step with the bot's subgoal; whiskers: {units}; {counts}.")
    return fig


@styled
def plot_event_locked(
    tables: Mapping[str, pd.DataFrame],
    expert_sizes: Sequence[Sequence[int]] | None = None,
    title: str | None = None,
    layout: str = "screen",
) -> Figure:
    """Routing weight around each event (subgoal_analysis.event_locked tables by event): one panel
    per (event, layer), x = steps from the event, a line per expert, bands = intervals."""
    events = [(event, t) for event, t in tables.items() if len(t)]
    layers = sorted({layer for _, t in events for layer in _layers(t)})
    n_cols = max(len(layers), 1)
    fig, axes = panel_grid(
        max(len(events) * len(layers), 1),
        layout,
        panel=(PANEL, 0.62 * PANEL),
        screen_cols=n_cols,
        paper_cols=n_cols,
        extra=(0.0, 0.7),
        sharex=True,
        sharey=True,
    )
    if not events:
        axes[0].text(0.5, 0.5, "no event in these episodes", ha="center", va="center")
        axes[0].set_axis_off()
        return fig
    for i, (event, t) in enumerate(events):
        for j, layer in enumerate(layers):
            ax = axes[i * n_cols + j]
            part = t[t["layer"] == layer]
            for expert in sorted(int(e) for e in part["expert"].unique()):
                r = part[part["expert"] == expert].sort_values("offset")
                color = EXPERT_COLORS[expert % len(EXPERT_COLORS)]
                ax.plot(
                    r["offset"], r["mean"], color=color, ls=expert_dash(expert), lw=1.4,
                    label=size_name(expert_size(expert_sizes, layer, expert), expert),
                )  # fmt: skip
                ax.fill_between(r["offset"], r["ci_low"], r["ci_high"], color=color, alpha=0.2, lw=0)
            ax.axvline(0, color="#555555", lw=0.7, ls=":")
            ax.set_ylim(0, 1)
            ax.grid(alpha=0.3)
            if i == 0:
                ax.set_title(f"layer {layer}")
                ax.legend(
                    fontsize="xx-small" if layout == "paper" else "x-small",
                    frameon=False,
                    loc="upper left",
                    ncols=2 if layout == "paper" else 3,
                )
            if i == len(events) - 1:
                ax.set_xlabel("steps from the event")
            if j == 0:  # the row's event, with its count, as the row's label
                ax.set_ylabel(f"{EVENT_TITLES.get(event, event)}\n({int(t['events'].iloc[0])}) weight")
    panels = [(event, layer, t) for event, t in events for layer in layers]
    if title:
        fig.suptitle(title)
    first = panels[0][2]
    note(
        fig,
        "Rows: events ((n): occurrences). Lines: mean routing weight at each step from the event (0: "
        f"the first step at which the change is visible); bands: {first['interval'].iloc[0]}, per offset (fewer events at "
        "offsets beyond an episode's ends).",
    )
    return fig


VIEW_COLORS = {"target in view": "#4477aa", "target out of view": "#ee6677"}


@styled
def plot_unfit_labels(breakdown: pd.DataFrame, title: str | None = None, layout: str = "screen") -> Figure:
    """Where a demo-trained student's unfit labels are (mop/demo_fit.breakdown_rows of one set):
    left, accuracy on the bot's way to a target in view and out of view at the same remaining
    distance (its "view, steps to go" rows), exploring as a dashed line; right, each view's share
    of the labelled steps and of the errors. Whiskers: the table's 95% intervals."""
    paper = layout == "paper"
    fig, (left, right) = panel_grid(
        2, layout, panel=(1.25 * PANEL, 0.8 * PANEL), screen_cols=2, paper_cols=1, extra=(0.0, 0.8)
    )
    dist = breakdown[breakdown["by"] == "view, steps to go"].set_index("group")
    bins = [b for b in ("1-3", "4-7", "8+") if any(f"· {b} to go" in g for g in dist.index)]
    width = 0.38
    for k, view in enumerate(VIEW_COLORS):
        rows = [
            dist.loc[f"{view} · {b} to go"] if f"{view} · {b} to go" in dist.index else None for b in bins
        ]
        x = np.arange(len(bins)) + (k - 0.5) * width
        acc = np.array([np.nan if r is None else 100 * r["accuracy"] for r in rows])
        low = np.array([np.nan if r is None else 100 * r["accuracy_ci_low"] for r in rows])
        high = np.array([np.nan if r is None else 100 * r["accuracy_ci_high"] for r in rows])
        left.bar(x, acc, width, color=VIEW_COLORS[view], label=view)
        whiskers = np.clip([acc - low, high - acc], 0.0, None)  # an end a rounding error inside the point
        left.errorbar(x, acc, yerr=whiskers, fmt="none", ecolor="#333333", lw=0.8, capsize=2)
        for xi, r in zip(x, rows):
            if r is not None:
                left.annotate(f"{int(r['steps']):,}", (xi, 0), xytext=(0, 2), textcoords="offset points",
                              xycoords=("data", "axes fraction"), ha="center", fontsize="xx-small", rotation=90)  # fmt: skip
    view = breakdown[breakdown["by"] == "view"].set_index("group")
    if "exploring" in view.index:
        left.axhline(
            100 * view.loc["exploring", "accuracy"], color="#555555", ls="--", lw=0.9, label="exploring"
        )
    floor = np.nanmin([100 * dist["accuracy_ci_low"].min(), 100 * view["accuracy_ci_low"].min()])
    left.set_ylim(max(0.0, 5 * np.floor((floor - 2) / 5)), 100)
    # whole-number ticks: with 2.5-point steps ("87.5", "100.0") the labels widen after constrained
    # layout has sized the margin from the first ticks, and the y label ran off the figure's edge
    left.yaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))
    left.set_xticks(np.arange(len(bins)), [f"{b}" for b in bins])
    left.set_xlabel("steps to go on the bot's route")
    left.set_ylabel("accuracy (%)")  # the title says whose labels; a longer one overran the panel
    left.set_title("heading for a door, key or object")
    left.legend(frameon=False, fontsize="x-small", loc="upper center", bbox_to_anchor=(0.5, -0.22), ncols=3)
    left.grid(axis="y", alpha=0.3)
    order = [
        g for g in ("target in view", "target out of view", "exploring", "at the object") if g in view.index
    ]
    x = np.arange(len(order))
    right.bar(
        x - width / 2, [100 * view.loc[g, "step_share"] for g in order], width, color="#bbbbbb", label="steps"
    )
    right.bar(
        x + width / 2,
        [100 * view.loc[g, "error_share"] for g in order],
        width,
        color="#222222",
        label="errors",
    )
    right.set_xticks(x, [g.replace("target ", "") for g in order])
    right.set_xlabel("the bot's target")
    right.set_ylabel("share of the set (%)")
    right.set_title("where the errors are")
    right.legend(frameon=False, fontsize="x-small")
    right.grid(axis="y", alpha=0.3)
    if title:
        fig.suptitle(title)
    errors = int(breakdown.loc[breakdown["by"] == "action", "errors"].sum())
    steps = int(breakdown.loc[breakdown["by"] == "action", "steps"].sum())
    note(
        fig,
        f"{breakdown['set'].iloc[0]}: {steps:,} labelled steps, {errors:,} errors. {'Top' if paper else 'Left'}: "
        "per-step accuracy "
        "(argmax = the bot's label), whiskers 95% Wilson at the effective sample size (clustered by "
        "episode); numbers in the bars: steps. Target: the bot's GoNextTo target, in view = visible "
        "in the agent's observation.",
    )
    return fig
