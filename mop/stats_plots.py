"""The figures of stats.py: correlations and metrics across seeds and lpc_alpha. Data in (the
seed-metrics table and stats.py's aggregates), `matplotlib.figure.Figure` out, drawn with
plot_style; the numbers (Fisher z, t intervals on each metric's scale, Wilson, Holm) all come from
stats.py.

    table = pd.read_csv("stats/BabyAI-UnlockPickup-v0/seed_metrics.csv")
    fig = plot_r_vs_alpha(table, stats.across_seeds(table)); fig = plot_metrics_vs_alpha(table, stats.metrics_by_alpha(table))
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy import stats as sps

import stats
from mop.plot_style import PANEL, new_figure, styled
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
def plot_r_vs_alpha(table: pd.DataFrame, seeds: pd.DataFrame, update: int | None = None) -> Figure:
    """Per phase, the seed-aggregated spatial r (tanh of mean z, 95% t band on z) against α
    (categorical), each run's r as a dot; stars: Holm-adjusted p of the t-test on z over every
    point of the figure ('n=1' marks α with a single run: no inference)."""
    phases = stats.phases_of(table)
    runs = stats.final_rows(table, update)
    runs = runs[runs["lpc_alpha"].notna()]
    alphas = sorted(runs["lpc_alpha"].unique())
    if not alphas:
        raise ValueError("no run with an lpc_alpha from the results CSV")
    shown = seeds[seeds["correlation"].isin(stats.SPATIAL)].copy()
    shown["p_fig"] = stats.holm(shown["p"])
    fig = new_figure(PANEL * len(phases) + 0.3, PANEL)
    axes = np.atleast_1d(fig.subplots(1, len(phases), sharey=True, squeeze=False)[0])
    x = np.arange(len(alphas))
    for ax, p in zip(axes, phases):
        for k, c in enumerate(stats.SPATIAL):
            rows = (
                shown[(shown["phase"] == p) & (shown["correlation"] == c)]
                .set_index("lpc_alpha")
                .reindex(alphas)
            )
            mean = rows["mean_r"].to_numpy(float)
            low = np.array([_number(v) for v in rows["ci_low"]])
            high = np.array([_number(v) for v in rows["ci_high"]])
            off = (k - 1) * 0.12
            ax.plot(x + off, mean, "o-", color=f"C{k}", ms=3, label=LABELS[c])
            ax.fill_between(x + off, low, high, color=f"C{k}", alpha=0.15, lw=0)
            for i, a in enumerate(alphas):
                r = runs.loc[runs["lpc_alpha"] == a, f"r_{p}_{c}"].to_numpy(float)
                ax.plot(np.full(len(r), x[i] + off), r, ".", color=f"C{k}", alpha=0.4, ms=3)
                mark = (
                    "n=1" if rows["p"].iloc[i] == stats.NO_INFERENCE else stats.stars(rows["p_fig"].iloc[i])
                )
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
        ax.set_xlabel("lpc_alpha")
        ax.set_title(p)
    axes[0].set_ylabel("Pearson r over cells (seed mean, 95% CI)")
    axes[0].set_ylim(-1.05, 1.05)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=3)
    fig.suptitle("Spatial LPC correlations vs α (stars: t-test on z, Holm over the figure)")
    return fig


def _interval_bars(estimate: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """errorbar's yerr of an interval around its estimate (0 where there is no interval)."""
    return np.nan_to_num(np.vstack([estimate - low, high - estimate]))


@styled
def plot_metrics_vs_alpha(table: pd.DataFrame, scalars: pd.DataFrame, update: int | None = None) -> Figure:
    """Success, LPC, policy complexity, path ratio against α: the across-run estimate with its 95%
    CI on the metric's scale (stats.scalar_ci: success on logit, path ratio on log), runs as dots
    (success: with the run's own Wilson interval from its episodes)."""
    runs = stats.final_rows(table, update)
    runs = runs[runs["lpc_alpha"].notna()]
    alphas = sorted(runs["lpc_alpha"].unique())
    fig = new_figure(PANEL * 2, PANEL * 1.7)
    x = np.arange(len(alphas))
    for ax, m in zip(fig.subplots(2, 2).ravel(), stats.SCALARS):
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
        ax.set_xlabel("lpc_alpha")
        ax.set_ylabel(LABELS[m])
    n = runs.groupby("lpc_alpha").size()
    span = f"{n.min()}" if n.min() == n.max() else f"{n.min()}–{n.max()}"
    fig.suptitle(
        f"Metrics vs α (95% t CI over {span} runs per α; success on the logit scale,\n"
        "path ratio on the log scale; grey: runs, success with its Wilson interval)"
    )
    return fig


@styled
def plot_metrics_vs_update(table: pd.DataFrame) -> Figure:
    """The four metrics against the checkpoint's update, one line per α (the across-run estimate
    and its 95% CI band on the metric's scale, stats.scalar_ci)."""
    df = table[table["lpc_alpha"].notna() & table["update"].notna()]
    fig = new_figure(PANEL * 2, PANEL * 1.7)
    axes = fig.subplots(2, 2).ravel()
    for k, (alpha, group) in enumerate(df.groupby("lpc_alpha")):
        for ax, m in zip(axes, stats.SCALARS):
            rows = [(u, stats.scalar_ci(g, m)) for u, g in group.groupby("update")]
            u = np.array([r[0] for r in rows], dtype=float)
            estimate = np.array([r[1]["estimate"] for r in rows])
            ax.plot(u, estimate, "o-", ms=3, color=f"C{k}", label=_alpha_label(alpha))
            low = np.array([_number(r[1]["ci_low"]) for r in rows])
            high = np.array([_number(r[1]["ci_high"]) for r in rows])
            ax.fill_between(u, low, high, color=f"C{k}", alpha=0.15, lw=0)
            ax.set_xlabel("update")
            ax.set_ylabel(LABELS[m])
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside right center", title="lpc_alpha")
    fig.suptitle("Metrics vs training update (95% CI over runs; success: logit, path ratio: log scale)")
    return fig


@styled
def plot_phase_alpha_grid(cells: dict, quantity: str) -> Figure:
    """Rows = phases, columns = α: per-cell mean LPC, H(A|S) or KL of the steps of every run of that
    α pooled (stats.pooled_cells); one colour scale per figure, unvisited cells grey."""
    alphas = sorted({a for a, _ in cells})
    phases = list(dict.fromkeys(p for _, p in cells))
    fig = new_figure(1.9 * len(alphas) + 0.8, 1.7 * len(phases) + 0.4)
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
    return fig


@styled
def plot_pooled_scatter(table: pd.DataFrame, update: int | None = None) -> Figure:
    """Per phase, one point per run: mean LPC against mean H(A|S) of the phase, OLS line
    (scipy.stats.linregress) with the 95% confidence band of the mean; r, p, N annotated (runs of
    every α pooled: the points are runs, independent, but α varies along with both axes)."""
    phases = stats.phases_of(table)
    runs = stats.final_rows(table, update)
    fig = new_figure(PANEL * len(phases), PANEL)
    axes = np.atleast_1d(fig.subplots(1, len(phases), squeeze=False)[0])
    for ax, p in zip(axes, phases):
        x = runs[f"mean_entropy_{p}"].to_numpy(float)
        y = runs[f"mean_lpc_{p}"].to_numpy(float)
        a = runs["lpc_alpha"].to_numpy(float)
        ok = np.isfinite(x) & np.isfinite(y)
        sc = ax.scatter(x[ok], y[ok], c=np.log10(a[ok] + 1e-9), cmap="viridis", s=12)
        ax.set_title(p)
        ax.set_xlabel("mean H(A|S) in phase (bits)")
        n = int(ok.sum())
        if n >= 3 and np.ptp(x[ok]) > 0:
            fit = sps.linregress(x[ok], y[ok])
            grid = np.linspace(x[ok].min(), x[ok].max(), 50)
            resid = y[ok] - (fit.intercept + fit.slope * x[ok])
            s = np.sqrt((resid**2).sum() / (n - 2))
            se = s * np.sqrt(1 / n + (grid - x[ok].mean()) ** 2 / ((x[ok] - x[ok].mean()) ** 2).sum())
            t = sps.t.ppf(0.975, n - 2)
            line = fit.intercept + fit.slope * grid
            ax.plot(grid, line, color="C3")
            ax.fill_between(grid, line - t * se, line + t * se, color="C3", alpha=0.2, lw=0)
            ax.text(
                0.03,
                0.95,
                f"r={fit.rvalue:+.2f} p={fit.pvalue:.2g} N={n}",
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
    return fig


@styled
def plot_correlation_summary(table: pd.DataFrame, update: int | None = None) -> Figure:
    """Per phase × spatial correlation, the Fisher-aggregated r over every run (all α), 95% CI
    whiskers, stars from the t-test on z, Holm over the bars."""
    phases = stats.phases_of(table)
    runs = stats.final_rows(table, update)
    rows = [(p, c, stats.aggregate_r(runs[f"r_{p}_{c}"])) for p in phases for c in stats.SPATIAL]
    adjusted = stats.holm([r[2]["p"] for r in rows])
    fig = new_figure(max(PANEL + 0.6, 1.1 * len(phases) + 1), PANEL)
    ax = fig.subplots()
    width = 0.25
    for (p, c, agg), adj in zip(rows, adjusted):
        i, k = phases.index(p), stats.SPATIAL.index(c)
        xpos = i + (k - 1) * width
        mean = agg["mean_r"]
        low, high = _number(agg["ci_low"]), _number(agg["ci_high"])
        ax.bar(xpos, mean, width, color=f"C{k}", label=LABELS[c] if i == 0 else None)
        if np.isfinite(low):
            ax.errorbar(xpos, mean, yerr=[[mean - low], [high - mean]], color="k", capsize=2, lw=0.8)
        mark = "n=1" if agg["p"] == stats.NO_INFERENCE else stats.stars(adj)
        top = high if np.isfinite(high) else mean
        if np.isfinite(top):
            ax.text(xpos, top + 0.03 if top >= 0 else top - 0.1, mark, ha="center", fontsize=6)
    ax.axhline(0, color="0.6", lw=0.6)
    ax.set_xticks(range(len(phases)), phases, rotation=15)
    ax.set_ylabel("mean r (Fisher z), 95% CI")
    ax.set_ylim(-1.05, 1.15)
    ax.legend(fontsize=7)
    ax.set_title(f"Spatial correlations,\n{len(runs)} runs pooled over α (stars: Holm)")
    return fig


def all_figures(
    table: pd.DataFrame,
    seeds: pd.DataFrame,
    scalars: pd.DataFrame,
    cache_dir: str,
    update: int | None,
    notes: list[str],
) -> dict[str, Figure]:
    """Every figure stats.py writes, by file stem; a figure that cannot be drawn is a note."""
    figures: dict[str, Figure] = {}
    makers = {
        "r_vs_alpha": lambda: plot_r_vs_alpha(table, seeds, update),
        "metrics_vs_alpha": lambda: plot_metrics_vs_alpha(table, scalars, update),
        "metrics_vs_update": lambda: plot_metrics_vs_update(table),
        "pooled_scatter": lambda: plot_pooled_scatter(table, update),
        "correlation_summary": lambda: plot_correlation_summary(table, update),
    }
    for name, make in makers.items():
        try:
            figures[name] = make()
        except (ValueError, KeyError) as e:
            notes.append(f"figure {name} not drawn: {e}")
    try:
        cells = stats.pooled_cells(cache_dir, table, update)
        for q in stats_quantities():
            figures[f"phase_alpha_{q}"] = plot_phase_alpha_grid(cells, q)
    except (ValueError, KeyError, OSError) as e:
        notes.append(f"phase × α heatmaps not drawn: {e}")
    return figures


def stats_quantities() -> tuple[str, ...]:
    return tuple(QUANTITIES)
