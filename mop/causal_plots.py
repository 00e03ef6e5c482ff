"""The figure of causal.py: does an expert's routing predict what intervening on it does?

Data in (causal.py's causal_effects.csv and causal_predict.csv tables, mop/causal.py), a
matplotlib Figure out, drawn with mop/plot_style.py: one panel per observational statistic (columns)
and intervention (rows), the statistic on x, the run's paired effect (intervened - intact) on y,
one point per expert per run (colour: the expert's index in its layer, as every routing figure;
marker: its layer), with the mean within-run Spearman rho, its interval and the Holm-corrected
permutation p of
causal_predict.csv in the panel.

    from mop.causal_plots import plot_causal_predict
    fig = plot_causal_predict(pd.read_csv("causal/x/causal_effects.csv"),
                              pd.read_csv("causal/x/causal_predict.csv"), "success_rate")
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from mop.causal import STATISTICS
from mop.plot_style import EXPERT_COLORS, PANEL, note, panel_grid, styled

STATISTIC_LABELS = {
    "mean_weight": "mean weight",
    "weight_entropy": "weight entropy\nover steps (normalised)",
    "dominance_share": "share of steps\nit dominates its layer",
    "lpc_share": "share of\nthe run's LPC",
    "subgoal_selectivity": "selectivity by subgoal\n(max − mean weight)",
}
EFFECT_LABELS = {
    "success_rate": "Δ success rate",
    "path_ratio": "Δ path ratio",
    "mean_lpc": "Δ LPC (effective)",
    "router_lpc": "Δ LPC (router's own)",
}
INTERVENTION_LABELS = {"zero": "zero", "route_around": "route around", "swap": "swap"}
LAYER_MARKERS = ("o", "s", "^", "D", "v", "P")


def _fmt(v: float, digits: int = 2) -> str:
    return "–" if not math.isfinite(v) else f"{v:.{digits}f}".replace("-", "−")


def _panel_title(row: pd.Series | None) -> str:
    """'ρ = 0.31 [−0.10, 0.62]' over 'p_Holm = 0.42' (the interval only where causal_predict has one)."""
    if row is None or not math.isfinite(row["rho"]):
        return "no test"
    ci = f" [{_fmt(row['ci_low'])}, {_fmt(row['ci_high'])}]" if math.isfinite(row["ci_low"]) else ""
    p = row["p_holm"]
    return (
        f"$\\bar{{\\rho}}$ = {_fmt(row['rho'])}{ci}\np$_{{Holm}}$ = {'<0.001' if p < 0.001 else _fmt(p, 2)}"
    )


MISSING = {"subgoal_selectivity": "no subgoal column\nin the routing record"}


@styled
def plot_causal_predict(
    effects: pd.DataFrame, predicted: pd.DataFrame, metric: str = "success_rate", layout: str = "screen"
) -> Figure:
    """Observational statistic vs causal effect on `metric`, one panel per (intervention,
    statistic), one point per expert per run. Raises ValueError when the tables hold no row of
    the metric."""
    rows = effects[effects["metric"] == metric]
    if rows.empty:
        raise ValueError(f"plot_causal_predict: no effects on {metric!r}")
    kinds = list(dict.fromkeys(rows["intervention"]))
    measured = [s for s in STATISTICS if np.isfinite(rows[s].to_numpy(dtype=float)).any()]
    # a paper column has no room for empty panels: a statistic never measured is named in the note
    stats = list(STATISTICS) if layout == "screen" or not measured else measured
    n = len(kinds) * len(stats)
    if layout == "screen":
        fig, axes = panel_grid(
            n, layout, panel=(2.05, 1.9), screen_cols=len(stats), extra=(0.0, 1.0), sharey="row"
        )
    else:
        fig, axes = panel_grid(n, layout, panel=(PANEL / 2, 0.5 * PANEL), paper_cols=2, extra=(0.0, 1.2))
    n_runs = rows["run"].nunique()
    for i, kind in enumerate(kinds):
        part = rows[rows["intervention"] == kind]
        for s, stat in enumerate(stats):
            ax = axes[i * len(stats) + s]
            x, y = part[stat].to_numpy(dtype=float), part["effect"].to_numpy(dtype=float)
            ax.axhline(0.0, color="0.6", lw=0.6, zorder=0)
            for (layer, expert), g in part.groupby(["layer", "expert"], sort=True):
                ax.scatter(
                    g[stat].to_numpy(dtype=float),
                    g["effect"].to_numpy(dtype=float),
                    s=16 if layout == "screen" else 8,
                    color=EXPERT_COLORS[int(expert) % len(EXPERT_COLORS)],
                    marker=LAYER_MARKERS[int(layer) % len(LAYER_MARKERS)],
                    edgecolors="white",
                    linewidths=0.4,
                    alpha=0.85,
                )
            match = predicted[
                (predicted["statistic"] == stat)
                & (predicted["intervention"] == kind)
                & (predicted["metric"] == metric)
                & (predicted["experts"] == "all" if "experts" in predicted else True)
            ]
            ax.set_title(_panel_title(match.iloc[0] if len(match) else None), fontsize="small")
            if not np.isfinite(x).any():
                ax.set_xticks([])
                ax.text(0.5, 0.5, MISSING.get(stat, "not measured"), transform=ax.transAxes, ha="center",
                        va="center", fontsize="small", color="0.4")  # fmt: skip
            if i == len(kinds) - 1 or layout == "paper":
                ax.set_xlabel(STATISTIC_LABELS[stat])
            if s == 0 or layout == "paper":
                ax.set_ylabel(f"{INTERVENTION_LABELS.get(kind, kind)}\n{EFFECT_LABELS.get(metric, metric)}")
            ax.grid(alpha=0.25, lw=0.5)
            if not np.isfinite(y).any():
                ax.set_yticks([])
    experts = sorted({(int(r.expert), int(r.expert_size)) for r in rows.itertuples(index=False)})
    sizes_by_index: dict[int, set[int]] = {}
    for j, size in experts:
        sizes_by_index.setdefault(j, set()).add(size)
    handles = [
        Line2D([], [], ls="", marker="o", color=EXPERT_COLORS[j % len(EXPERT_COLORS)],
               label=f"expert {j} ({'/'.join('identity' if v == 0 else f'{v} units' for v in sorted(sz))})")
        for j, sz in sorted(sizes_by_index.items())
    ] + [
        Line2D([], [], ls="", marker=LAYER_MARKERS[k % len(LAYER_MARKERS)], color="0.35", label=f"layer {k}")
        for k in sorted({int(v) for v in rows["layer"]})
    ]  # fmt: skip
    fig.legend(
        handles=handles,
        loc="outside lower center",
        ncols=min(len(handles), 6 if layout == "screen" else 3),
        frameon=False,
    )
    family = predicted["family_size"].dropna()
    layouts = int(rows["layouts"].max()) if rows["layouts"].notna().any() else 0
    note(
        fig,
        f"One point per expert per run ({n_runs} run{'s' if n_runs != 1 else ''}); effect = intervened − intact "
        f"on the same {layouts} evaluation layouts. ρ̄: the mean over runs of each run's Spearman ρ [95% "
        "t interval over runs of Fisher's z, where there are 2 or more]; "
        f"p: permutation of the statistic within runs, Holm over {int(family.iloc[0]) if len(family) else 0} "
        "tests (statistics × interventions × metrics).",
    )
    left_out = [STATISTIC_LABELS[s].split("\n")[0] for s in STATISTICS if s not in stats]
    if left_out:
        note(fig, f"Not drawn, never measured in these runs: {', '.join(left_out)}.")
    fig.suptitle(f"Does routing predict an expert's causal effect? ({EFFECT_LABELS.get(metric, metric)})")
    return fig
