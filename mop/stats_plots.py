"""The figures of stats.py: correlations and metrics across seeds, per condition (a run's recipe:
lpc_alpha, expert sizes, policy...; the x axis names each by the keys in which the conditions
differ). Data in (runs of the seed-metrics table and the aggregates of mop.inference and
mop.contrasts), `matplotlib.figure.Figure` out, drawn with plot_style; no statistic is computed
here: the numbers (Fisher z, t intervals on each metric's scale, Wilson, OLS bands, paired
differences, Holm) all come from mop.inference / mop.contrasts, the pooled cells from
stats.pooled_cells. A figure that pools runs or cells of several conditions shows no p-value and
says it is descriptive. Reads and writes nothing (stats.py saves the figures).

    from mop import inference
    table = pd.read_csv("stats/BabyAI-UnlockPickup-v0/seed_metrics.csv")
    runs, seeds = inference.runs_with_alpha(table), inference.across_seeds(table)
    fig = plot_r_vs_alpha(runs, inference.spatial_for_figure(seeds), inference.phases_of(table))
    fig = plot_metrics_vs_alpha(runs, inference.metrics_by_alpha(table))
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from mop.inference import NO_INFERENCE, SCALARS, SPATIAL, stars
from mop.plot_style import PANEL, PAPER_WIDTH, new_figure, note, sized_figure, styled
from mop.routing_analysis import to_grid

LABELS = {
    "lpc_entropy": "LPC ~ H(A|S)",
    "lpc_kl_local": "LPC ~ KL local",
    "lpc_kl_global": "LPC ~ KL global",
    "success_rate": "success rate",
    "mean_lpc": "mean LPC per step",
    "policy_complexity": "policy complexity I(S;A) (bits)",
    "path_ratio": "path ratio (agent / bot)",
}
QUANTITIES = {"lpc": "mean LPC", "entropy": "H(A|S) (bits)", "kl": "KL to pooled P_a (bits)"}


def _alpha_label(a: float) -> str:
    return "0" if a == 0 else f"{a:.0e}".replace("e-0", "e-")


def _tick(label: str) -> str:
    """A condition label as a tick: one key=value per line."""
    return str(label).replace(" ", "\n")


def _tick_width(labels: Sequence[str]) -> float:
    """Inches one tick of these labels needs at 6 pt (its longest line), with a gap."""
    longest = max((len(line) for label in labels for line in _tick(label).split("\n")), default=4)
    return 0.055 * longest + 0.25


def _conditions(runs: pd.DataFrame) -> list[tuple[str, str]]:
    """(condition, label) of the runs in the order of their first trial (inference's order)."""
    first = runs.groupby("condition")["trial"].min().astype("Float64").fillna(-1.0)
    order = sorted(first.index, key=lambda c: (float(first[c]), str(c)))
    names = dict(zip(runs["condition"], runs["condition_label"]))
    return [(c, str(names[c])) for c in order]


def _sized(width: float, height: float, layout: str) -> Figure:
    """A stats figure of (width, height) inches on screen (at most SCREEN_WIDTH, aspect kept); in the
    paper layout one column wide and taller rather than shrunk (its condition ticks, legend and note
    need the height a scaled-down figure would lose)."""
    if layout == "paper" and width > PAPER_WIDTH:
        return new_figure(PAPER_WIDTH, height * 1.3 + 0.9)
    return sized_figure(width, height, layout)


def _legend_below(fig: Figure, ax: Any, layout: str, ncols: int, fontsize: float | None = None) -> None:
    """The axes' legend under the figure: `ncols` columns on screen, one in a paper column."""
    fig.legend(
        *ax.get_legend_handles_labels(),
        loc="outside lower center",
        ncols=1 if layout == "paper" else ncols,
        **({"fontsize": fontsize} if fontsize else {}),
    )


def _finish(fig: Figure, layout: str) -> Figure:
    """In the paper layout, condition names along an axis stand upright (side by side they overlap
    in one column)."""
    if layout == "paper":
        for ax in fig.axes:
            labels = [t.get_text() for t in ax.get_xticklabels()]
            if any(any(ch.isalpha() for ch in text) for text in labels):
                ax.tick_params(axis="x", labelrotation=90, labelsize=5)
    return fig


def _number(v) -> float:
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else math.nan


@styled
def plot_r_vs_alpha(
    runs: pd.DataFrame, spatial: pd.DataFrame, phases: Sequence[str], layout: str = "screen"
) -> Figure:
    """Per phase, the seed-aggregated spatial r (tanh of mean z, 95% t band on z) per condition,
    each run's r as a dot; stars: Holm-adjusted p of the t-test on z over every point of the figure
    (each point one condition's runs; 'n=1' marks a condition with a single run: no inference).
    runs: one row per run with a condition (inference.runs_with_alpha); spatial:
    inference.spatial_for_figure(across_seeds), whose p_fig is that Holm; phases: the level's.
    GRU runs are left out (no router, no LPC to correlate)."""
    if "policy_type" in runs:
        runs = runs[runs["policy_type"].fillna("mop") != "gru"]
    conds = _conditions(runs)
    if not conds:
        raise ValueError("no run with a known condition")
    width = max(PANEL, _tick_width([t for _, t in conds]) * len(conds) + 0.8)
    fig = _sized(width * len(phases) + 0.3, PANEL + 0.6, layout)
    axes = np.atleast_1d(fig.subplots(1, len(phases), sharey=True, squeeze=False)[0])
    x = np.arange(len(conds))
    ids = [c for c, _ in conds]
    for ax, p in zip(axes, phases):
        for k, c in enumerate(SPATIAL):
            rows = (
                spatial[(spatial["phase"] == p) & (spatial["correlation"] == c)]
                .set_index("condition")
                .reindex(ids)
            )
            mean = rows["mean_r"].to_numpy(float)
            low = np.array([_number(v) for v in rows["ci_low"]])
            high = np.array([_number(v) for v in rows["ci_high"]])
            off = (k - 1) * 0.12
            ax.plot(x + off, mean, "o", color=f"C{k}", ms=3, label=LABELS[c])
            ax.errorbar(
                x + off, mean, yerr=_interval_bars(mean, low, high), fmt="none", color=f"C{k}", lw=0.8
            )
            for i, cid in enumerate(ids):
                r = runs.loc[runs["condition"] == cid, f"r_{p}_{c}"].to_numpy(float)
                ax.plot(np.full(len(r), x[i] + off), r, ".", color=f"C{k}", alpha=0.4, ms=3)
                mark = "n=1" if rows["p"].iloc[i] == NO_INFERENCE else stars(rows["p_fig"].iloc[i])
                if mark and mark != "ns" and np.isfinite(mean[i]):
                    ax.annotate(
                        mark,
                        (x[i] + off, mean[i]),
                        xytext=(0, 4),
                        textcoords="offset points",
                        ha="center",
                        fontsize=6,
                        color=f"C{k}",
                    )
        ax.axhline(0, color="0.6", lw=0.6)
        ax.set_xticks(x, [_tick(label) for _, label in conds], fontsize=6)
        ax.set_title(p)
    axes[0].set_ylabel("Pearson r over cells (seed mean, 95% CI)")
    axes[0].set_ylim(-1.05, 1.05)
    _legend_below(fig, axes[0], layout, 3)
    fig.suptitle(
        "Spatial LPC correlations per condition (stars: t-test on z over runs, Holm over the figure)"
    )
    note(
        fig,
        _runs_note(
            runs,
            "Marker: tanh of the mean Fisher z over runs; whisker: 95% t interval of that mean across "
            "runs; dots: each run's r.",
        ),
    )
    return _finish(fig, layout)


def _runs_note(runs: pd.DataFrame, what: str) -> str:
    """what, then the runs per condition behind each interval, and the conditions that have one run
    (no interval)."""
    key = "condition" if "condition" in runs.columns else "lpc_alpha"
    n = runs.groupby(key).size()
    span = f"{n.min()}" if n.min() == n.max() else f"{n.min()}–{n.max()}"
    names = dict(zip(runs[key], runs["condition_label"])) if "condition_label" in runs.columns else {}
    single = [
        str(names.get(a, _alpha_label(a) if isinstance(a, float) else a)) for a, k in n.items() if k < 2
    ]
    text = f"{what} Runs per condition: {span}."
    if single:
        text += f" {', '.join(single)}: one run, no interval ('n=1')."
    return text


def _interval_bars(estimate: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """errorbar's yerr of an interval around its estimate (0 where there is no interval)."""
    return np.nan_to_num(np.vstack([estimate - low, high - estimate]))


@styled
def plot_metrics_vs_alpha(runs: pd.DataFrame, scalars: pd.DataFrame, layout: str = "screen") -> Figure:
    """Success, LPC, policy complexity, path ratio per condition: the across-run estimate with its
    95% CI on the metric's scale (inference.metrics_by_alpha: success on logit, path ratio on log),
    runs (inference.runs_with_alpha) as dots (success: with the run's own Wilson interval from its
    episodes). A metric a condition does not measure (a GRU's LPC) is left empty."""
    conds = _conditions(runs)
    fig = _sized(
        max(PANEL * 1.6, _tick_width([t for _, t in conds]) * len(conds) + 1.2),
        1.45 * len(SCALARS) + 1.3,
        layout,
    )
    x = np.arange(len(conds))
    ids = [c for c, _ in conds]
    axes = fig.subplots(len(SCALARS), 1, sharex=True)
    for ax, m in zip(axes, SCALARS):
        rows = scalars[scalars["metric"] == m].set_index("condition").reindex(ids)
        estimate = rows["estimate"].to_numpy(float)
        low = np.array([_number(v) for v in rows["ci_low"]])
        high = np.array([_number(v) for v in rows["ci_high"]])
        ax.errorbar(x, estimate, yerr=_interval_bars(estimate, low, high), fmt="o", capsize=3, ms=4)
        for i, cid in enumerate(ids):
            group = runs[runs["condition"] == cid]
            v = group[m].to_numpy(float)
            at = np.full(len(v), x[i]) + np.linspace(-0.08, 0.08, len(v))
            if m == "success_rate" and "success_ci_low" in group:
                wilson_low = group["success_ci_low"].to_numpy(float)
                wilson_high = group["success_ci_high"].to_numpy(float)
                ax.errorbar(
                    at, v, yerr=_interval_bars(v, wilson_low, wilson_high), fmt="none", color="0.7", lw=0.6
                )
            ax.plot(at, v, ".", color="0.5", ms=3)
        ax.set_ylabel(LABELS[m].replace(" (", "\n("), fontsize=7)
    axes[-1].set_xticks(x, [_tick(label) for _, label in conds], fontsize=6)
    n = runs.groupby("condition").size()
    span = f"{n.min()}" if n.min() == n.max() else f"{n.min()}–{n.max()}"
    interval = f"95% t CI over {span} runs each" if n.max() >= 2 else "one run per condition: no CI"
    fig.suptitle(
        f"Metrics per condition ({interval}, runs assumed normal on the scale; success on the\n"
        "logit scale, path ratio on the log scale; grey: runs, success with its Wilson interval)"
    )
    if n.max() < 2:
        note(fig, "One run per α: no interval across runs (the line joins the single runs).")
    return _finish(fig, layout)


@styled
def plot_metrics_vs_update(by_update: pd.DataFrame, layout: str = "screen") -> Figure:
    """The four metrics against the checkpoint's update, one line per condition (the across-run
    estimate and its 95% CI band on the metric's scale: inference.metrics_by_update)."""
    fig = _sized(PANEL * 2, PANEL * 1.7, layout)
    axes = fig.subplots(2, 2).ravel()
    order = list(dict.fromkeys(by_update["condition"]))
    for k, cid in enumerate(order):
        group = by_update[by_update["condition"] == cid]
        for ax, m in zip(axes, SCALARS):
            rows = group[group["metric"] == m].sort_values("update", kind="stable")
            if rows.empty:
                continue
            u = rows["update"].to_numpy(dtype=float)
            estimate = rows["estimate"].to_numpy(dtype=float)
            ax.plot(u, estimate, "o-", ms=3, color=f"C{k}", label=str(group["condition_label"].iloc[0]))
            low = np.array([_number(v) for v in rows["ci_low"]])
            high = np.array([_number(v) for v in rows["ci_high"]])
            ax.fill_between(u, low, high, color=f"C{k}", alpha=0.15, lw=0)
            ax.set_xlabel("update")
            ax.set_ylabel(LABELS[m])
    _legend_below(fig, axes[0], layout, 2, fontsize=6)
    fig.suptitle("Metrics vs training update (success: logit scale, path ratio: log scale)")
    n = pd.to_numeric(by_update["n"], errors="coerce") if "n" in by_update.columns else pd.Series([0])
    span = f"{int(n.min())}" if n.min() == n.max() else f"{int(n.min())}–{int(n.max())}"
    if n.max() < 2:
        note(fig, f"One run per condition at every update: no interval (a band needs two runs; n = {span}).")
    else:
        note(
            fig,
            f"Band: 95% t interval across the runs of each condition at that update (n = {span} runs); "
            "no band where an update has one run.",
        )
    return _finish(fig, layout)


@styled
def plot_phase_alpha_grid(cells: dict, quantity: str, layout: str = "screen") -> Figure:
    """Rows = phases, columns = conditions: per-cell mean LPC, H(A|S) or KL of the steps of every
    run of that condition pooled (stats.pooled_cells, keyed by (condition label, phase)); one
    colour scale per figure, unvisited cells grey. Descriptive: no test."""
    columns = list(dict.fromkeys(a for a, _ in cells))
    phases = list(dict.fromkeys(p for _, p in cells))
    fig = _sized(1.9 * len(columns) + 0.8, 1.7 * len(phases) + 0.7, layout)
    axes = np.atleast_2d(fig.subplots(len(phases), len(columns), squeeze=False))
    values = [c[quantity].to_numpy(float) for c, _ in cells.values() if len(c)]
    finite = np.concatenate(values) if values else np.array([0.0])
    vmin, vmax = (float(np.nanmin(finite)), float(np.nanmax(finite))) if finite.size else (0.0, 1.0)
    image = None
    for i, p in enumerate(phases):
        for j, a in enumerate(columns):
            ax = axes[i, j]
            table, info = cells[(a, p)]
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_facecolor("#d4d4d4")
            if i == 0:
                ax.set_title(_alpha_label(a) if isinstance(a, float) else _tick(a), fontsize=6)
            if j == 0:
                ax.set_ylabel(p, fontsize=7)
            if not len(table):
                ax.text(0.5, 0.5, "no cells", ha="center", va="center", transform=ax.transAxes, fontsize=7)
                continue
            grid = to_grid(table, table[quantity].to_numpy(float), info)
            image = ax.imshow(grid, cmap="plasma", vmin=vmin, vmax=vmax)
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.6, label=QUANTITIES[quantity])
    fig.suptitle(f"{QUANTITIES[quantity]} per cell, each condition's runs pooled (descriptive)")
    note(fig, "The steps of every run of a condition pooled, per phase; one value per cell, no interval.")
    return _finish(fig, layout)


@styled
def plot_pooled_scatter(
    runs: pd.DataFrame, fits: dict[str, dict[str, Any]], layout: str = "screen"
) -> Figure:
    """Per phase, one point per run: mean LPC against mean H(A|S) of the phase, coloured by
    condition, with the OLS line and its 95% band over all runs. Descriptive: runs of several
    conditions are pooled and the conditions move both axes, so no p-value is shown (r and N only).
    runs: one row per run with a router (inference.runs_with_alpha, GRU runs left out: no LPC);
    fits: per phase, inference.phase_fits of those runs."""
    phases = list(fits)
    conds = _conditions(runs) if len(runs) else []
    fig = _sized(max(PANEL * len(phases), 5.0), PANEL + 0.9, layout)
    axes = np.atleast_1d(fig.subplots(1, len(phases), squeeze=False)[0])
    for ax, p in zip(axes, phases):
        for k, (cid, label) in enumerate(conds):
            group = runs[runs["condition"] == cid]
            ax.scatter(group[f"mean_entropy_{p}"], group[f"mean_lpc_{p}"], s=12, color=f"C{k}", label=label)
        ax.set_title(p)
        ax.set_xlabel("mean H(A|S) in phase (bits)")
        fit = fits[p]
        n = fit["n"]
        if "line" in fit:
            ax.plot(fit["grid"], fit["line"], color="0.3", lw=0.8)
            ax.fill_between(fit["grid"], fit["low"], fit["high"], color="0.3", alpha=0.15, lw=0)
            text = f"r={fit['r']:+.2f}, N={n} runs pooled\n(descriptive: no test)"
        else:
            text = f"N={n}: no fit"
        ax.text(0.03, 0.95, text, transform=ax.transAxes, va="top", fontsize=7)
    axes[0].set_ylabel("mean LPC in phase")
    if conds:
        _legend_below(fig, axes[0], layout, 2, fontsize=6)
    fig.suptitle(
        "Runs of every condition pooled: phase LPC vs phase entropy\n(OLS over runs, 95% band; descriptive, no test)"
    )
    note(
        fig,
        f"Line: OLS fit over the {len(runs)} runs (points); band: 95% confidence band of the fitted mean; "
        "no fit below 3 runs.",
    )
    return _finish(fig, layout)


@styled
def plot_correlation_summary(
    summary: pd.DataFrame, n_runs: int | None = None, layout: str = "screen"
) -> Figure:
    """Decision-relevance with its confound control beside it: per phase (panels) and condition
    (groups), the Fisher-aggregated r(LPC, H(A|S)) and r(LPC, KL global) over the condition's runs
    (solid) beside the partial r given log visits (hatched), 95% CI whiskers, stars from Holm over
    every test of the figure (inference.correlation_summary's p_holm, partial_p_holm; 'n=1': no
    inference). n_runs: unused (the table says each condition's n)."""
    phases = list(dict.fromkeys(summary["phase"]))
    ids = list(dict.fromkeys(summary["condition"]))
    names = dict(zip(summary["condition"], summary["condition_label"]))
    shown = ("lpc_entropy", "lpc_kl_global")
    width = max(PANEL, max(_tick_width([names[c] for c in ids]), 0.9) * len(ids) + 0.8)
    fig = _sized(width * len(phases), PANEL + 0.8, layout)
    axes = np.atleast_1d(fig.subplots(1, len(phases), sharey=True, squeeze=False)[0])
    width = 0.2
    for ax, p in zip(axes, phases):
        for i, cid in enumerate(ids):
            for k, c in enumerate(shown):
                rows = summary[
                    (summary["phase"] == p) & (summary["condition"] == cid) & (summary["correlation"] == c)
                ]
                if rows.empty:
                    continue
                agg = rows.iloc[0]
                for j, (prefix, hatch) in enumerate((("", None), ("partial_", "////"))):
                    xpos = i + (2 * k + j - 1.5) * width
                    mean = _number(agg[f"{prefix}mean_r"])
                    low, high = _number(agg[f"{prefix}ci_low"]), _number(agg[f"{prefix}ci_high"])
                    label = (LABELS[c] + (" | log visits" if prefix else "")) if (i == 0) else None
                    ax.bar(xpos, mean, width, color=f"C{k}", hatch=hatch, edgecolor="white", label=label)
                    if np.isfinite(low):
                        ax.errorbar(
                            xpos, mean, yerr=[[mean - low], [high - mean]], color="k", capsize=2, lw=0.8
                        )
                    p_raw = agg[f"{prefix}p"]
                    mark = "n=1" if p_raw == NO_INFERENCE else stars(agg[f"{prefix}p_holm"])
                    top = high if np.isfinite(high) else mean
                    if np.isfinite(top) and mark:
                        ax.text(xpos, top + 0.03 if top >= 0 else top - 0.1, mark, ha="center", fontsize=5)
            drawn = summary[(summary["phase"] == p) & (summary["condition"] == cid)]
            if not np.isfinite(
                pd.to_numeric(drawn.get("mean_r", pd.Series(dtype=float)), errors="coerce")
            ).any():
                # no r at all: LPC is one number in every cell (experts of equal size), or no cells
                ax.text(
                    i,
                    0.05,
                    "no r:\nLPC constant\nor no cells",
                    ha="center",
                    va="bottom",
                    fontsize=5,
                    color="0.4",
                )
        ax.axhline(0, color="0.6", lw=0.6)
        ax.set_xticks(range(len(ids)), [_tick(names[c]) for c in ids], fontsize=6)
        ax.set_title(p)
    axes[0].set_ylabel("mean r over runs (Fisher z), 95% CI")
    axes[0].set_ylim(-1.05, 1.15)
    _legend_below(fig, axes[0], layout, 2, fontsize=7)
    fig.suptitle(
        "LPC vs decision-relevance per condition: raw r (solid) and partial r given log visits (hatched)"
    )
    note(
        fig,
        "Whisker: 95% t interval of the mean Fisher z across the condition's runs; 'n=1': one run, no "
        "interval. Partial r: the cells' LPC and the quantity, each with log visits regressed out.",
    )
    return _finish(fig, layout)


def _forest(
    ax: Any, rows: pd.DataFrame, column: str, null: float, marks: Sequence[str], names: Sequence[str]
) -> None:
    """One forest panel: each row's estimate (`column`) with its ci_low/ci_high whisker, top row
    first, the no-effect line at `null`, each row's mark (its p) above its point, its name as tick."""
    y = np.arange(len(rows))[::-1]
    est = rows[column].to_numpy(float)
    low = np.array([_number(v) for v in rows["ci_low"]])
    high = np.array([_number(v) for v in rows["ci_high"]])
    ax.errorbar(est, y, xerr=_interval_bars(est, low, high), fmt="o", capsize=2, ms=3)
    ax.axvline(null, color="0.6", lw=0.6)
    # a mark near a panel's edge is anchored inward, so it never runs off the axes into the next panel
    span = np.array([v for v in (*est, *low, *high, null) if np.isfinite(v)])
    lo, hi = (span.min(), span.max()) if len(span) else (0.0, 1.0)
    for yi, e, mark in zip(y, est, marks):
        at = (e - lo) / (hi - lo) if hi > lo and np.isfinite(e) else 0.5
        ha = "right" if at > 0.75 else "left" if at < 0.25 else "center"
        dx = {"right": 4, "left": -4, "center": 0}[ha]
        ax.annotate(mark, (e, yi), xytext=(dx, 5), textcoords="offset points", ha=ha, fontsize=5)
    ax.set_yticks(y, list(names), fontsize=5)


def _p_mark(row: Any, tested: str) -> str:
    """A forest row's mark: `tested` (its Holm p) where a test ran, else why not: the reason the
    table holds in place of p (in memory) or, read back from the tidy CSV, its `note`."""
    if isinstance(row.p, str):
        return row.p
    if isinstance(row.p, (int, float)) and np.isfinite(row.p):
        return tested
    note = getattr(row, "note", "")
    return note if isinstance(note, str) and note else "no test"


CONTRAST_UNITS = {"success_rate": "difference in success rate", "mean_lpc": "difference in LPC per step",
                  "policy_complexity": "difference in I(S;A) (bits)", "path_ratio": "ratio of path ratios"}  # fmt: skip


@styled
def plot_contrasts(compared: pd.DataFrame, layout: str = "screen") -> Figure:
    """One panel per metric: each contrast's per-seed paired estimate (B - A, or B / A for the path
    ratio) with its 95% t interval over seeds, the no-effect line, and the Holm-adjusted p of the
    t-test on the differences (mop.contrasts.contrasts) with n, the seeds paired. Rows name B vs A."""
    compared = compared[np.isfinite(compared["estimate"].to_numpy(dtype=float))]  # a GRU has no LPC
    metrics = [m for m in SCALARS if m in set(compared["metric"])]
    per_panel = len(compared) / max(len(metrics), 1)  # contrasts in each metric's panel
    if layout == "paper":  # one panel per row: a column holds one panel of long contrast names
        fig, cols = new_figure(PAPER_WIDTH, (0.3 * per_panel + 0.9) * len(metrics) + 0.6), 1
    else:
        fig, cols = _sized(PANEL * 2.2, 0.9 * per_panel + 1.6 * ((len(metrics) + 1) // 2), layout), 2
    axes = np.atleast_1d(fig.subplots(-(-len(metrics) // cols), cols, squeeze=False).ravel())
    for ax, m in zip(axes, metrics):
        rows = compared[compared["metric"] == m].reset_index(drop=True)
        _forest(
            ax,
            rows,
            "estimate",
            1.0 if m == "path_ratio" else 0.0,
            [_p_mark(r, f"p={r.p_holm:.2g}") + f", n={r.n}" for r in rows.itertuples(index=False)],
            [f"{r.label_b}\nvs {r.label_a}" for r in rows.itertuples(index=False)],
        )
        ax.set_xlabel(CONTRAST_UNITS[m] + (" (B/A)" if m == "path_ratio" else " (B − A)"), fontsize=7)
    for ax in axes[len(metrics) :]:
        ax.set_visible(False)
    fig.suptitle(
        "Contrasts paired by seed: mean difference, 95% t CI over n seeds (clipped to the metric's range; "
        "p: t-test, Holm over the contrasts asked)"
    )
    return _finish(fig, layout)


@styled
def plot_knockouts(knocked: pd.DataFrame, layout: str = "screen") -> Figure:
    """Per condition and knockout: the paired difference knockout - none across runs (one
    checkpoint per run), 95% t CI, Holm p; one panel per metric (mop.contrasts.knockout_pairs)."""
    metrics = list(dict.fromkeys(knocked["metric"]))
    per_panel = len(knocked) / max(len(metrics), 1)
    if layout == "paper":  # panels stacked: a column holds one panel of long condition names
        fig = new_figure(PAPER_WIDTH, (0.35 * per_panel + 1.0) * len(metrics) + 0.6)
        axes = np.atleast_1d(fig.subplots(len(metrics), 1, squeeze=False)[:, 0])
    else:
        fig = _sized(PANEL * len(metrics), 0.5 * per_panel + 1.6, layout)
        axes = np.atleast_1d(fig.subplots(1, len(metrics), squeeze=False)[0])
    for ax, m in zip(axes, metrics):
        rows = knocked[knocked["metric"] == m].reset_index(drop=True)
        _forest(
            ax,
            rows,
            "difference",
            0.0,
            [_p_mark(r, f"p={r.p_holm:.2g} (n={r.n})") for r in rows.itertuples(index=False)],
            [f"{r.condition_label}\n{r.knockout}" for r in rows.itertuples(index=False)],
        )
        ax.set_xlabel(f"knockout − none: {LABELS.get(m, m)}", fontsize=7)
    fig.suptitle("Knockouts, runs as units (one checkpoint per run): paired difference, 95% t CI, Holm p")
    return _finish(fig, layout)


PAIR_STYLES = (("#222222", "o"), ("#777777", "s"), ("#aaaaaa", "^"), ("#444444", "D"), ("#999999", "v"))


@styled
def plot_time_course(
    levels: pd.DataFrame, label: str = "", layout: str = "screen", pairs: pd.DataFrame | None = None
) -> Figure:
    """A multi-task condition's routing by level over training (mop.difficulty.routing_time_course):
    per level the mean LPC per step across runs at each evaluated update, its 95% t band over runs
    (clipped at 0), and the success beside it; one colour per level (plot_style.task_colours). With
    `pairs` (time_course_pairs.csv) a third panel: each pair's paired difference B - A over updates
    with its 95% t interval over runs, what the test is about (runs differ far more than levels)."""
    from mop.plot_style import task_colours

    panels = 3 if pairs is not None and len(pairs) else 2
    fig = _sized(PANEL * (1.1 * panels), PANEL * 0.9, layout)
    axes = fig.subplots(1, panels)
    ax_lpc, ax_success = axes[0], axes[1]
    colours = task_colours(list(levels["level"]))

    def short(level: str) -> str:
        return level.removeprefix("BabyAI-").removesuffix("-v0")

    for level, rows in levels.groupby("level", sort=True):
        rows = rows.sort_values("update")
        x = rows["update"].to_numpy(float)
        ax_lpc.plot(x, rows["lpc"].to_numpy(float), marker="o", color=colours[level], label=short(level))
        ax_lpc.fill_between(
            x,
            rows["lpc_ci_low"].to_numpy(float),
            rows["lpc_ci_high"].to_numpy(float),
            color=colours[level],
            alpha=0.2,
        )
        ax_success.plot(
            x, rows["success"].to_numpy(float), marker="o", color=colours[level], label=short(level)
        )
    ax_lpc.set(xlabel="update", ylabel="LPC per step (mean over runs)")
    ax_success.set(xlabel="update", ylabel="success (mean over runs)", ylim=(-0.02, 1.02))
    ax_lpc.legend(fontsize=7, frameon=False)
    if panels == 3:
        ax = axes[2]
        for k, ((a, b), rows) in enumerate(pairs.groupby(["level_a", "level_b"], sort=True)):
            rows = rows.sort_values("update")
            x = rows["update"].to_numpy(float) + (k - 1) * 8.0  # side by side at each update
            d = rows["difference"].to_numpy(float)
            err = [d - rows["ci_low"].to_numpy(float), rows["ci_high"].to_numpy(float) - d]
            shade, marker = PAIR_STYLES[k % len(PAIR_STYLES)]  # not the levels' colours: a pair is two levels
            ax.errorbar(
                x, d, yerr=err, marker=marker, color=shade, capsize=2, label=f"{short(b)} − {short(a)}"
            )
        ax.axhline(0, color="#555555", lw=0.7)
        ax.set(xlabel="update", ylabel="paired LPC difference (B − A)")
        ax.legend(fontsize=6, frameon=False)
        best = float(pd.to_numeric(pairs["p_holm"], errors="coerce").min())
        ax.set_title(f"smallest Holm p over the course: {best:.2g}", fontsize=7)
    runs = int(levels["runs"].max()) if len(levels) else 0
    fig.suptitle(f"Routing by level over training{': ' + label if label else ''} ({runs} runs)")
    note(
        fig,
        f"LPC: mean over the {runs} runs of each run's mean LPC per step on that level's evaluation "
        "episodes; band: 95% t interval over runs, clipped at 0. Only updates every run was evaluated at."
        + (
            " Right: the paired difference between levels (runs as units), 95% t interval over runs; Holm over "
            "updates x pairs (time_course_pairs.csv)."
            if panels == 3
            else ""
        ),
    )
    return _finish(fig, layout)
