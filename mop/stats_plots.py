"""The figures of stats.py: correlations and metrics across seeds and lpc_alpha. Data in (runs of
the seed-metrics table and the aggregates of mop.inference), `matplotlib.figure.Figure` out, drawn
with plot_style; no statistic is computed here: the numbers (Fisher z, t intervals on each
metric's scale, Wilson, OLS bands, Holm) all come from mop.inference, the pooled cells from
stats.pooled_cells. Reads and writes nothing (stats.py saves the figures).

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
from mop.plot_style import PANEL, note, panel_grid, sized_figure, styled
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


def _number(v) -> float:
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else math.nan


@styled
def plot_r_vs_alpha(
    runs: pd.DataFrame, spatial: pd.DataFrame, phases: Sequence[str], layout: str = "screen"
) -> Figure:
    """Per phase, the seed-aggregated spatial r (tanh of mean z, 95% t band on z) against α
    (categorical), each run's r as a dot; stars: Holm-adjusted p of the t-test on z over every
    point of the figure ('n=1' marks α with a single run: no inference). runs: one row per run
    with an α (inference.runs_with_alpha); spatial: inference.spatial_for_figure(across_seeds),
    whose p_fig is that Holm; phases: the level's (inference.phases_of)."""
    alphas = sorted(runs["lpc_alpha"].unique())
    if not alphas:
        raise ValueError("no run with an lpc_alpha from the results CSV")
    fig, axes = panel_grid(len(phases), layout, panel=(PANEL, PANEL), extra=(0.3, 1.2), sharey=True)
    x = np.arange(len(alphas))
    for ax, p in zip(axes, phases):
        for k, c in enumerate(SPATIAL):
            rows = (
                spatial[(spatial["phase"] == p) & (spatial["correlation"] == c)]
                .set_index("lpc_alpha")
                .reindex(alphas)
            )
            mean = rows["mean_r"].to_numpy(float)
            low = np.array([_number(v) for v in rows["ci_low"]])
            high = np.array([_number(v) for v in rows["ci_high"]])
            off = (k - 1) * 0.12
            ax.plot(x + off, mean, "o-", color=f"C{k}", ms=3, label=LABELS[c])
            ax.fill_between(x + off, low, high, color=f"C{k}", alpha=0.15, lw=0)
            # whiskers too: a band between α values is invisible where there is one α
            ax.errorbar(
                x + off, mean, yerr=_interval_bars(mean, low, high), fmt="none", color=f"C{k}", lw=0.8
            )
            for i, a in enumerate(alphas):
                r = runs.loc[runs["lpc_alpha"] == a, f"r_{p}_{c}"].to_numpy(float)
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
        ax.set_xticks(x, [_alpha_label(a) for a in alphas])
        ax.set_xlim(-0.5, len(alphas) - 0.5)
        ax.set_xlabel("lpc_alpha")
        ax.set_title(p)
    axes[0].set_ylabel("Pearson r over cells (seed mean, 95% CI)")
    axes[0].set_ylim(-1.05, 1.05)
    wide = fig.get_figwidth() > 5
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=3 if wide else 1)
    fig.suptitle("Spatial LPC correlations vs α (stars: t-test on z, Holm over the figure)")
    note(
        fig,
        _runs_note(
            runs,
            "Marker: tanh of the mean Fisher z over runs; whisker and band: 95% t interval of that mean "
            "across runs; dots: each run's r.",
        ),
    )
    return fig


def _runs_note(runs: pd.DataFrame, what: str) -> str:
    """what, then the runs per α behind each interval, and the α that have one run (no interval)."""
    n = runs.groupby("lpc_alpha").size()
    span = f"{n.min()}" if n.min() == n.max() else f"{n.min()}–{n.max()}"
    single = [_alpha_label(a) for a, k in n.items() if k < 2]
    text = f"{what} Runs per α: {span}."
    if single:
        text += f" α = {', '.join(single)}: one run, no interval ('n=1')."
    return text


def _interval_bars(estimate: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """errorbar's yerr of an interval around its estimate (0 where there is no interval)."""
    return np.nan_to_num(np.vstack([estimate - low, high - estimate]))


@styled
def plot_metrics_vs_alpha(runs: pd.DataFrame, scalars: pd.DataFrame, layout: str = "screen") -> Figure:
    """Success, LPC, policy complexity, path ratio against α: the across-run estimate with its 95%
    CI on the metric's scale (inference.metrics_by_alpha: success on logit, path ratio on log), runs
    (inference.runs_with_alpha) as dots (success: with the run's own Wilson interval from its
    episodes)."""
    alphas = sorted(runs["lpc_alpha"].unique())
    fig, axes = panel_grid(len(SCALARS), layout, panel=(PANEL, PANEL * 0.8), screen_cols=2, extra=(0.0, 0.9))
    x = np.arange(len(alphas))
    for ax, m in zip(axes, SCALARS):
        rows = scalars[scalars["metric"] == m].set_index("lpc_alpha").reindex(alphas)
        estimate = rows["estimate"].to_numpy(float)
        low = np.array([_number(v) for v in rows["ci_low"]])
        high = np.array([_number(v) for v in rows["ci_high"]])
        ax.errorbar(x, estimate, yerr=_interval_bars(estimate, low, high), fmt="o-", capsize=3, ms=4)
        for i, a in enumerate(alphas):
            group = runs[runs["lpc_alpha"] == a]
            v = group[m].to_numpy(float)
            at = np.full(len(v), x[i]) + np.linspace(-0.08, 0.08, len(v))
            if m == "success_rate" and "success_ci_low" in group:
                wilson_low = group["success_ci_low"].to_numpy(float)
                wilson_high = group["success_ci_high"].to_numpy(float)
                ax.errorbar(
                    at, v, yerr=_interval_bars(v, wilson_low, wilson_high), fmt="none", color="0.7", lw=0.6
                )
            ax.plot(at, v, ".", color="0.5", ms=3)
        ax.set_xticks(x, [_alpha_label(a) for a in alphas])
        ax.set_xlim(-0.5, len(alphas) - 0.5)
        ax.set_xlabel("lpc_alpha")
        ax.set_ylabel(LABELS[m])
    n = runs.groupby("lpc_alpha").size()
    span = f"{n.min()}" if n.min() == n.max() else f"{n.min()}–{n.max()}"
    interval = f"95% t CI over {span} runs per α" if n.max() >= 2 else "one run per α: no CI"
    fig.suptitle(
        f"Metrics vs α ({interval}; success on the logit scale,\n"
        "path ratio on the log scale; grey: runs, success with its Wilson interval)"
    )
    if n.max() < 2:
        note(fig, "One run per α: no interval across runs (the line joins the single runs).")
    return fig


@styled
def plot_metrics_vs_update(by_update: pd.DataFrame, layout: str = "screen") -> Figure:
    """The four metrics against the checkpoint's update, one line per α (the across-run estimate
    and its 95% CI band on the metric's scale: inference.metrics_by_update); with one run at an
    update there is no band, and the figure says so."""
    fig, axes = panel_grid(len(SCALARS), layout, panel=(PANEL, PANEL * 0.8), screen_cols=2, extra=(0.9, 0.9))
    for k, (alpha, group) in enumerate(by_update.groupby("lpc_alpha")):
        for ax, m in zip(axes, SCALARS):
            rows = group[group["metric"] == m].sort_values("update", kind="stable")
            u = rows["update"].to_numpy(dtype=float)
            estimate = rows["estimate"].to_numpy(dtype=float)
            ax.plot(u, estimate, "o-", ms=3, color=f"C{k}", label=_alpha_label(alpha))
            low = np.array([_number(v) for v in rows["ci_low"]])
            high = np.array([_number(v) for v in rows["ci_high"]])
            ax.fill_between(u, low, high, color=f"C{k}", alpha=0.15, lw=0)
            ax.set_xlabel("update")
            ax.set_ylabel(LABELS[m])
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside right center", title="lpc_alpha")
    fig.suptitle("Metrics vs training update")
    n = pd.to_numeric(by_update["n"], errors="coerce") if "n" in by_update.columns else pd.Series([0])
    span = f"{int(n.min())}" if n.min() == n.max() else f"{int(n.min())}–{int(n.max())}"
    if n.max() < 2:
        note(fig, f"One run per α at every update: no interval (a band needs two runs or more; n = {span}).")
    else:
        note(
            fig,
            f"Band: 95% t interval across the runs of each α at that update (n = {span} runs; success on "
            "the logit scale, path ratio on the log scale); no band where an update has one run.",
        )
    return fig


@styled
def plot_phase_alpha_grid(cells: dict, quantity: str, layout: str = "screen") -> Figure:
    """Rows = phases, columns = α: per-cell mean LPC, H(A|S) or KL of the steps of every run of that
    α pooled (stats.pooled_cells); one colour scale per figure, unvisited cells grey."""
    alphas = sorted({a for a, _ in cells})
    phases = list(dict.fromkeys(p for _, p in cells))
    fig = sized_figure(1.9 * len(alphas) + 0.8, 1.7 * len(phases) + 0.7, layout)
    axes = np.atleast_2d(fig.subplots(len(phases), len(alphas), squeeze=False))
    values = [c[quantity].to_numpy(float) for c, _ in cells.values() if len(c)]
    finite = np.concatenate(values) if values else np.array([0.0])
    vmin, vmax = (float(np.nanmin(finite)), float(np.nanmax(finite))) if finite.size else (0.0, 1.0)
    image = None
    for i, p in enumerate(phases):
        for j, a in enumerate(alphas):
            ax = axes[i, j]
            table, info = cells[(a, p)]
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_facecolor("#d4d4d4")
            if i == 0:
                ax.set_title(f"α = {_alpha_label(a)}")
            if j == 0:
                ax.set_ylabel(p, fontsize=7)
            if not len(table):
                ax.text(0.5, 0.5, "no cells", ha="center", va="center", transform=ax.transAxes, fontsize=7)
                continue
            grid = to_grid(table, table[quantity].to_numpy(float), info)
            image = ax.imshow(grid, cmap="plasma", vmin=vmin, vmax=vmax)
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.6, label=QUANTITIES[quantity])
    fig.suptitle(f"{QUANTITIES[quantity]} per cell, seeds pooled")
    note(fig, "The steps of every run of an α pooled, per phase; one value per cell, no interval.")
    return fig


@styled
def plot_pooled_scatter(
    runs: pd.DataFrame, fits: dict[str, dict[str, Any]], layout: str = "screen"
) -> Figure:
    """Per phase, one point per run: mean LPC against mean H(A|S) of the phase, OLS line with the
    95% confidence band of the mean; r, p, N annotated (runs of every α pooled: the points are
    runs, independent, but α varies along with both axes). runs: one row per run
    (inference.final_rows); fits: per phase in order, inference.phase_fits(runs, phases)."""
    phases = list(fits)
    fig, axes = panel_grid(len(phases), layout, panel=(PANEL, PANEL), extra=(0.8, 1.0))
    for ax, p in zip(axes, phases):
        x = runs[f"mean_entropy_{p}"].to_numpy(float)
        y = runs[f"mean_lpc_{p}"].to_numpy(float)
        a = runs["lpc_alpha"].to_numpy(float)
        ok = np.isfinite(x) & np.isfinite(y)
        sc = ax.scatter(x[ok], y[ok], c=np.log10(a[ok] + 1e-9), cmap="viridis", s=12)
        ax.set_title(p)
        ax.set_xlabel("mean H(A|S) in phase (bits)")
        fit = fits[p]
        n = fit["n"]
        if "line" in fit:
            ax.plot(fit["grid"], fit["line"], color="C3")
            ax.fill_between(fit["grid"], fit["low"], fit["high"], color="C3", alpha=0.2, lw=0)
            ax.text(
                0.03,
                0.95,
                f"r={fit['r']:+.2f} p={fit['p']:.2g} N={n}",
                transform=ax.transAxes,
                va="top",
                fontsize=7,
            )
        else:
            ax.text(0.03, 0.95, f"N={n}: no fit", transform=ax.transAxes, va="top", fontsize=7)
    axes[0].set_ylabel("mean LPC in phase")
    if len(runs):
        fig.colorbar(sc, ax=axes, label="log10 α (α = 0 at -9)", shrink=0.8)
    fig.suptitle("Runs pooled over seeds and α:\nphase LPC vs phase entropy (OLS, 95% band)")
    note(
        fig,
        f"Line: OLS fit over the {len(runs)} runs (points); band: 95% confidence band of the fitted mean; no fit below 3 runs.",
    )
    return fig


@styled
def plot_correlation_summary(summary: pd.DataFrame, n_runs: int, layout: str = "screen") -> Figure:
    """Per phase × spatial correlation, the Fisher-aggregated r over every run (all α), 95% CI
    whiskers, stars from the t-test on z, Holm over the bars. summary:
    inference.correlation_summary (p_holm: that Holm); n_runs: the runs pooled, for the title."""
    phases = list(dict.fromkeys(summary["phase"]))
    fig = sized_figure(max(PANEL + 0.6, 1.1 * len(phases) + 1), PANEL + 0.3, layout)
    ax = fig.subplots()
    width = 0.25
    for agg in summary.to_dict("records"):
        p, c, adj = agg["phase"], agg["correlation"], agg["p_holm"]
        i, k = phases.index(p), SPATIAL.index(c)
        xpos = i + (k - 1) * width
        mean = agg["mean_r"]
        low, high = _number(agg["ci_low"]), _number(agg["ci_high"])
        ax.bar(xpos, mean, width, color=f"C{k}", label=LABELS[c] if i == 0 else None)
        if np.isfinite(low):
            ax.errorbar(xpos, mean, yerr=[[mean - low], [high - mean]], color="k", capsize=2, lw=0.8)
        mark = "n=1" if agg["p"] == NO_INFERENCE else stars(adj)
        top = high if np.isfinite(high) else mean
        if np.isfinite(top):
            ax.text(xpos, top + 0.03 if top >= 0 else top - 0.1, mark, ha="center", fontsize=6)
    ax.axhline(0, color="0.6", lw=0.6)
    ax.set_xticks(range(len(phases)), phases, rotation=15)
    ax.set_ylabel("mean r (Fisher z), 95% CI")
    ax.set_ylim(-1.05, 1.15)
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=1, frameon=False)
    ax.set_title(f"Spatial correlations,\n{n_runs} runs pooled over α (stars: Holm)")
    note(
        fig,
        f"Whisker: 95% t interval of the mean Fisher z across the {n_runs} runs; 'n=1': one run, no interval.",
    )
    return fig
