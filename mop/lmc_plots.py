"""The figures of lmc.py: linear mode connectivity of MoP children. Data in (the interpolation
table, one row per fork × pair × α × metric; the instability table, one row per fork pair; the
fork summary and the correlations), `matplotlib.figure.Figure` out, drawn with plot_style; every
number (both barrier forms and their bootstrap intervals, the paired midpoint test, Jensen–Shannon
divergence, agreement, Wilson intervals, Spearman ρ and p) comes from mop/connectivity.py,
mop/lmc_stats.py and eval_mop.

    interp, table = connectivity.load_results("lmc_results/BabyAI-GoToLocal-v0/seed_42/fresh")
    forks, corr = connectivity.load_summaries("lmc_results/BabyAI-GoToLocal-v0/seed_42/fresh")
    figures = lmc_figures(interp, table, forks=forks, corr=corr)
    # all_interpolations, interp_fork_<k>[_pair_<q>], instability_over_time, routing_agreement
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from mop.connectivity import layers_of, units_of, wide, with_pairs
from mop.plot_style import EXPERT_COLORS, PANEL, new_figure, styled

METRICS = {
    "success_rate": "success rate",
    "heldout_ce": "held-out loss (CE vs bot, nats)",
    "heldout_accuracy": "held-out accuracy",
    "path_ratio": "path ratio (agent / bot)",
    "mean_lpc": "mean LPC per step",
}
LAYER_STYLES = ("-", "--", ":", "-.")
PAIR_STYLES = ("-", "--", ":", "-.")
BARRIER_FORMS = {"line": ("barrier_line (Entezari 2022)", "o"), "mean": ("barrier_mean (Frankle 2020)", "s")}


def _fork_colors(forks: list[int]) -> dict[int, tuple]:
    cmap = matplotlib.colormaps["viridis"]
    n = max(len(forks) - 1, 1)
    return {k: cmap(0.9 * i / n) for i, k in enumerate(forks)}


def _fork_name(interp: pd.DataFrame, fork: int, names: Mapping[int, str] | None) -> str:
    if names and fork in names:
        return names[fork]
    row = interp[interp["fork"] == fork].iloc[0]
    if pd.isna(row["fork_point"]):
        return f"fork {fork}"
    return f"fork {fork}: {row['fork_point']:g} · update {int(row['fork_update'])}"


def _success_bars(
    ax: Axes, t: pd.DataFrame, color, label: str | None = None, line: bool = True, style: str = "-"
) -> None:
    """Success against α with its 95% Wilson interval."""
    y = t["success_rate"].to_numpy(float)
    yerr = np.nan_to_num(
        np.vstack([y - t["success_ci_low"].to_numpy(float), t["success_ci_high"].to_numpy(float) - y])
    )
    ax.errorbar(
        t.index,
        y,
        yerr=yerr,
        fmt="o" + style if line else "o",
        ms=3,
        capsize=2,
        lw=1.2,
        color=color,
        label=label,
    )


def _ends(compare: bool) -> dict[str, str]:
    """What the two endpoints are called: a fork's children, or `lmc.py compare`'s two checkpoints
    (which may be two checkpoints of one run, so not "children")."""
    if compare:
        return dict(
            a="A", b="B", tick_a="A: --a", tick_b="B: --b", both="the two checkpoints", whose="A's and B's"
        )
    return dict(
        a="child A", b="child B", tick_a="child A", tick_b="child B", both="the children", whose="children's"
    )


def _chord(ax: Axes, t: pd.DataFrame, metric: str, compare: bool = False) -> None:
    """The straight line between the endpoints (what the barrier is measured from)."""
    a, y = t.index.to_numpy(float), t[metric].to_numpy(float)
    label = f"linear between {_ends(compare)['both']}"
    ax.plot([a[0], a[-1]], [y[0], y[-1]], ls="--", color="0.55", lw=0.9, label=label)


def _headroom(ax: Axes, fraction: float = 0.45) -> None:
    """Room above the curves for a legend at the top."""
    low, high = ax.get_ylim()
    ax.set_ylim(low, high + fraction * (high - low))


def _alpha_axis(ax: Axes, compare: bool = False) -> None:
    ends = _ends(compare)
    ax.set_xlim(-0.03, 1.03)
    ax.set_xticks(
        [0, 0.25, 0.5, 0.75, 1.0], [f"0\n({ends['tick_a']})", "0.25", "0.5", "0.75", f"1\n({ends['tick_b']})"]
    )
    ax.set_xlabel("α  (θ = (1−α)·θ_A + α·θ_B)")


def _is_compare(interp: pd.DataFrame) -> bool:
    """Rows of `lmc.py compare` (no fork point): no fork legend, no fork-point axis."""
    return bool(interp["fork_point"].isna().all())


@styled
def plot_all_interpolations(interp: pd.DataFrame, names: Mapping[int, str] | None = None) -> Figure:
    """Every fork pair's interpolation curve on shared axes: success (95% Wilson bars), held-out
    loss and mean LPC against α; colour from early (dark) to late (light) fork point, one line
    style per child pair. A compare (two checkpoints, no fork) has no fork legend."""
    interp = with_pairs(interp)
    forks = sorted(interp["fork"].unique())
    colors = _fork_colors(forks)
    metrics = [m for m in ("success_rate", "heldout_ce", "mean_lpc") if m in set(interp["metric"])]
    compare = _is_compare(interp)
    fig = new_figure(PANEL * len(metrics) + (0 if compare else 1.6), PANEL)
    axes = np.atleast_1d(fig.subplots(1, len(metrics)))
    for k, q in units_of(interp):
        t = wide(interp, k, q)
        label = _fork_name(interp, k, names) if q == 0 else None
        for ax, m in zip(axes, metrics):
            if m == "success_rate":
                _success_bars(ax, t, colors[k], label, style=PAIR_STYLES[q % 4])
            else:
                ax.plot(t.index, t[m], "o" + PAIR_STYLES[q % 4], ms=3, lw=1.2, color=colors[k])
    for ax, m in zip(axes, metrics):
        ax.set_ylabel(METRICS[m])
        _alpha_axis(ax, compare)
    if "success_rate" in metrics:
        axes[0].set_ylim(-0.03, 1.03)
    pairs = int(interp["pair"].max()) + 1
    if compare:
        title = (names or {}).get(forks[0], "two checkpoints")
        fig.suptitle(f"Interpolation between {title} (success: 95% Wilson intervals)")
        return fig
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside right center", title="fork point")
    styles = f"; pairs 0-{pairs - 1}: solid, dashed, ..." if pairs > 1 else ""
    fig.suptitle(
        f"Interpolation between the two children of every fork (success: 95% Wilson intervals{styles})"
    )
    return fig


@styled
def plot_fork_interpolation(
    interp: pd.DataFrame,
    fork: int,
    names: Mapping[int, str] | None = None,
    expert_sizes: list[list[int]] | None = None,
    pair: int = 0,
) -> Figure:
    """One fork pair: success with 95% Wilson bars, held-out loss and accuracy, path ratio, mean LPC,
    expert usage per layer, and routing distance (JS, bits) of θ(α) to each child per layer,
    against α; dashed grey: the straight line between the children (the barrier's baseline). A
    compare's endpoints are named A (--a) and B (--b), not children."""
    t = wide(interp, fork, pair)
    compare = _is_compare(interp)
    fig = new_figure(PANEL * 3, PANEL * 2.1)
    axes = fig.subplots(2, 3).ravel()
    _success_bars(axes[0], t, "C0")
    _chord(axes[0], t, "success_rate", compare)
    axes[0].set_ylim(-0.03, 1.03)
    axes[0].set_ylabel(METRICS["success_rate"])
    axes[0].legend(loc="lower left")
    axes[1].plot(t.index, t["heldout_ce"], "o-", ms=3, color="C3", label="loss")
    _chord(axes[1], t, "heldout_ce", compare)
    axes[1].set_ylabel(METRICS["heldout_ce"])
    if "heldout_accuracy" in t:
        twin = axes[1].twinx()
        twin.plot(t.index, t["heldout_accuracy"], "s:", ms=2.5, color="0.35", label="accuracy")
        twin.set_ylabel("held-out accuracy (dotted)")
    for ax, m, c in ((axes[2], "path_ratio", "C2"), (axes[3], "mean_lpc", "C4")):
        if m in t and t[m].notna().any():
            ax.plot(t.index, t[m], "o-", ms=3, color=c)
            _chord(ax, t, m, compare)
        else:
            ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes, color="0.5")
        ax.set_ylabel(METRICS[m])
    usage = [c for c in t.columns if str(c).startswith("usage_layer_")]
    num_layers = len({c.split("_")[2] for c in usage})
    for col in sorted(usage):
        _, _, layer, _, expert = col.split("_")
        layer, expert = int(layer), int(expert)
        size = expert_sizes[layer][expert] if expert_sizes else None
        name = f"L{layer} · " + ("id" if size == 0 else f"{size}u" if size else f"e{expert}")
        axes[4].plot(
            t.index, t[col], LAYER_STYLES[layer % 4], color=EXPERT_COLORS[expert % 6], lw=1.2, label=name
        )
    axes[4].set_ylabel("expert usage (mean router weight)")
    if usage:
        axes[4].set_ylim(-0.02, 1.5)  # headroom for the legend above the curves
        axes[4].set_yticks([0, 0.25, 0.5, 0.75, 1.0])
        axes[4].legend(
            ncol=max(1, num_layers), fontsize=6, loc="upper center", title="layer · expert", title_fontsize=6
        )
    for layer in layers_of(t.columns, "js_to_a_layer_"):
        axes[5].plot(
            t.index,
            t[f"js_to_a_layer_{layer}"],
            LAYER_STYLES[layer % 4],
            color="C0",
            label=f"to A · layer {layer}",
        )
        axes[5].plot(
            t.index,
            t[f"js_to_b_layer_{layer}"],
            LAYER_STYLES[layer % 4],
            color="C1",
            label=f"to B · layer {layer}",
        )
    axes[5].set_ylabel("routing JS divergence (bits)")
    if layers_of(t.columns, "js_to_a_layer_"):
        _headroom(axes[5])
        axes[5].legend(fontsize=6, ncol=2, loc="upper center")
    else:
        axes[5].text(
            0.5,
            0.5,
            "no routers (GRU baseline)",
            ha="center",
            va="center",
            transform=axes[5].transAxes,
            color="0.5",
        )
    for ax in axes:
        _alpha_axis(ax, compare)
    where = _fork_name(interp, fork, names) + (f" · pair {pair}" if pair else "")
    fig.suptitle(f"{where}: along the line between {_ends(compare)['both']}")
    return fig


def _fork_axis(ax: Axes, table: pd.DataFrame) -> np.ndarray:
    """x of each row: its fork point, or (a compare: no fork point) its row number."""
    if table["fork_point"].isna().all():
        x = np.arange(len(table), dtype=float)
        ax.set_xticks(x, ["compare"] * len(x))
        ax.set_xlim(-0.5, len(x) - 0.5)
        return x
    x = table["fork_point"].to_numpy(float)
    ax.set_xlabel("fork point (fraction of training)")
    ax.set_xlim(min(0.0, np.nanmin(x)) - 0.03, 1.0)
    return x


def _with_interval(ax: Axes, x: np.ndarray, y, low, high, color, marker: str, label: str, **kw) -> None:
    y, low, high = (np.asarray(v, float) for v in (y, low, high))
    err = np.vstack([y - low, high - y])
    ax.errorbar(
        x,
        y,
        yerr=np.where(np.isfinite(err), err, 0),
        fmt=marker,
        color=color,
        capsize=2,
        lw=0.9,
        label=label,
        **{"ms": 4, **kw},
    )


def _barrier_interval(table: pd.DataFrame, key: str) -> tuple[pd.Series, pd.Series]:
    """A pair's barrier interval to draw: the simultaneous t interval that decides (calibrated at a
    true barrier of 0, docs/calibration.md), never the percentile bootstrap it replaced, which
    under-covers there; NaN (no bar) for an evaluation from before the units were kept."""
    nan = pd.Series(np.nan, index=table.index)
    return table.get(f"{key}_t_ci_low", nan), table.get(f"{key}_t_ci_high", nan)


def _pair_offsets(table: pd.DataFrame) -> np.ndarray:
    """Small x offsets so a fork's pairs sit side by side."""
    pairs = table["pair"].to_numpy(int) if "pair" in table else np.zeros(len(table), int)
    return 0.012 * (pairs - pairs.max() / 2)


@styled
def plot_instability(table: pd.DataFrame, forks: pd.DataFrame | None = None) -> Figure:
    """Against the fork point, per fork pair (small markers, side by side) with its simultaneous
    95% t interval (the one that decides; the withdrawn percentile bootstrap is not drawn) and,
    with several pairs, the mean over pairs (large hollow markers; no interval, forks.csv's note):
    (1) the held-out loss barrier in both forms, barrier_line and barrier_mean, and the line form's
    signed interior extreme (×: negative when the interior beats the line); (2) the success
    barrier in both forms; (3) the paired success drop at the midpoint α with its bootstrap
    interval and the randomisation test's p. Intervals missing: not measured (an evaluation
    without units)."""
    t = table.sort_values(["fork_point", "fork"] + (["pair"] if "pair" in table else []))
    fig = new_figure(PANEL * 3, PANEL * 1.05)
    axes = fig.subplots(1, 3)
    several = forks is not None and len(forks) and (forks["n_pairs"] > 1).any()
    for ax, name, unit in zip(axes[:2], ("ce", "success"), ("nats", "success rate")):
        x = _fork_axis(ax, t) + _pair_offsets(t)
        for form, color in (("line", "C3"), ("mean", "C0")):
            label, marker = BARRIER_FORMS[form]
            key = f"{name}_barrier_{form}"
            low, high = _barrier_interval(t, key)
            _with_interval(ax, x, t[key], low, high, color, marker, label)
            if several:
                f = forks.sort_values("fork_point")
                fx = _fork_axis(ax, f)
                _with_interval(
                    ax,
                    fx,
                    f[key],
                    f[f"{key}_ci_low"],
                    f[f"{key}_ci_high"],
                    color,
                    marker,
                    f"{form}: mean over pairs",
                    mfc="none",
                    ms=8,
                )
        ax.plot(
            x,
            t[f"{name}_extreme_line"],
            "x",
            color="0.35",
            ms=4,
            label="line form's interior extreme (signed)",
        )
        ax.axhline(0, color="0.7", lw=0.8)
        ax.set_ylabel(f"{'held-out loss' if name == 'ce' else 'success'} barrier ({unit})")
        _headroom(ax, 0.6)
        ax.legend(fontsize=6, loc="upper right")
    ax = axes[2]
    x = _fork_axis(ax, t) + _pair_offsets(t)
    if t["success_drop_mid"].notna().any():
        _with_interval(
            ax,
            x,
            t["success_drop_mid"],
            t["success_drop_mid_ci_low"],
            t["success_drop_mid_ci_high"],
            "C2",
            "o",
            "paired drop (95% bootstrap)",
        )
        pairs = t["pair"].to_numpy(int) if "pair" in t else np.zeros(len(t), int)
        for xi, pair, r in zip(x, pairs, t.itertuples()):
            if pd.notna(r.success_drop_mid):
                # A fork's pairs sit 0.012 apart: even pairs are labelled to the left, odd ones to
                # the right, and further pairs a line higher each, so no two labels overlap.
                left = pair % 2 == 0
                ax.annotate(
                    f"p={r.success_drop_mid_p:.2g}\n{int(r.success_drop_mid_n_worse)}/"
                    f"{int(r.success_drop_mid_n_better)}",
                    (xi, r.success_drop_mid),
                    textcoords="offset points",
                    xytext=(-3 if left else 3, 3 + 15 * (pair // 2)),
                    ha="right" if left else "left",
                    fontsize=5,
                    color="0.3",
                )
        ax.legend(fontsize=6, loc="upper right")
        alpha = t["midpoint_alpha"].dropna()
        ax.set_title(f"α = {alpha.iloc[0]:.2f}: layouts worse/better, randomisation p", fontsize=7)
    else:
        ax.text(
            0.5,
            0.5,
            "not measured\n(no per-layout results)",
            ha="center",
            va="center",
            transform=ax.transAxes,
            color="0.5",
        )
    ax.axhline(0, color="0.7", lw=0.8)
    ax.set_ylabel("success drop at the midpoint\n(endpoint line − midpoint)")
    fig.suptitle(
        "Instability vs fork point: both barrier forms; per pair the simultaneous 95% t interval, "
        "over pairs their mean (no interval: withdrawn)"
    )
    return fig


@styled
def plot_routing_agreement(
    table: pd.DataFrame,
    interp: pd.DataFrame,
    names: Mapping[int, str] | None = None,
    corr: pd.DataFrame | None = None,
) -> Figure:
    """Do the children route alike? Per layer against the fork point: the fraction of held-out
    states whose dominant expert agrees between the children, and the mean Jensen–Shannon
    divergence between their router distributions (bits); hollow markers: layers that agree
    trivially (>= 99% of the weight on the same expert in both children). Along the path, θ(α)'s
    JS to child A (solid) and B (dashed), mean over layers; and the loss barrier against the
    agreement over non-trivial layers, with Spearman ρ and its permutation p. A compare's
    endpoints are named A (--a) and B (--b), not children."""
    interp = with_pairs(interp)
    compare = _is_compare(interp)
    ends = _ends(compare)
    t = table.sort_values(["fork_point", "fork"] + (["pair"] if "pair" in table else []))
    layers = layers_of(t.columns, "routing_js_layer_")
    fig = new_figure(PANEL * 2, PANEL * 2)
    axes = fig.subplots(2, 2).ravel()
    if not layers:
        for ax in axes:
            ax.text(0.5, 0.5, "no routers (GRU baseline)", ha="center", va="center", transform=ax.transAxes)
        return fig
    for ax, what, label in (
        (axes[0], "agreement", "dominant expert agrees (fraction of states)"),
        (axes[1], "js", "JS(router A ‖ router B) (bits)"),
    ):
        x = _fork_axis(ax, t) + _pair_offsets(t)
        for layer in layers:
            y = t[f"routing_{what}_layer_{layer}"].to_numpy(float)
            marked = t.get(f"routing_trivial_layer_{layer}", pd.Series(0.0, index=t.index))
            trivial = marked.astype(object).eq(True).to_numpy()  # NaN (not measured): not marked
            color = f"C{layer % 10}"
            ax.plot(x[~trivial], y[~trivial], "o", color=color, ms=4, label=f"layer {layer}")
            if trivial.any():
                ax.plot(
                    x[trivial],
                    y[trivial],
                    "o",
                    mfc="none",
                    color=color,
                    ms=6,
                    label=f"layer {layer}: trivial (≥99% one expert)",
                )
        ax.set_ylabel(label)
        if what == "agreement":
            ax.set_ylim(-0.03, 1.15)
        ax.legend(fontsize=6, loc="lower left" if what == "agreement" else "upper right")
    forks = units_of(interp)
    colors = _fork_colors(sorted({k for k, _ in forks}))
    for k, q in forks:
        w = wide(interp, k, q)
        to_a = w[[f"js_to_a_layer_{layer}" for layer in layers]].mean(axis=1)
        to_b = w[[f"js_to_b_layer_{layer}" for layer in layers]].mean(axis=1)
        label = _fork_name(interp, k, names) if q == 0 and not compare else None
        axes[2].plot(w.index, to_a, "-", color=colors[k], lw=1.2, label=label)
        axes[2].plot(w.index, to_b, "--", color=colors[k], lw=1.2)
    _alpha_axis(axes[2], compare)
    axes[2].set_ylabel(f"JS of θ(α) to {ends['a']} (solid) / {ends['b']} (dashed)")
    if not compare:
        _headroom(axes[2])
        axes[2].legend(fontsize=6, loc="upper center")
    ax = axes[3]
    xcol = (
        "routing_agreement_mean_nontrivial"
        if "routing_agreement_mean_nontrivial" in t
        else "routing_agreement_mean"
    )
    ax.scatter(t[xcol], t["ce_barrier_line"], c=[colors[k] for k in t["fork"]], s=18, zorder=3)
    for _, r in t.iterrows():
        tag = "compare" if pd.isna(r["fork_point"]) else f"{r['fork_point']:g}"
        ax.annotate(
            tag, (r[xcol], r["ce_barrier_line"]), textcoords="offset points", xytext=(3, 3), fontsize=6
        )
    ax.margins(x=0.15, y=0.15)
    ax.set_xlabel(f"{ends['whose']} dominant-expert agreement\n(non-trivial layers)")  # one line ran off
    ax.set_ylabel("held-out loss barrier_line (nats)")
    ax.axhline(0, color="0.7", lw=0.8)
    if corr is not None and len(corr):
        lines = []
        for _, r in corr[(corr["x"] == xcol) & (corr["y"] == "ce_barrier_line")].iterrows():
            rho = "n/a" if pd.isna(r["rho"]) else f"{r['rho']:+.2f}"
            p = "no test" if pd.isna(r["p"]) else f"p={r['p']:.2g}"
            if "p_holm" in r and pd.notna(r["p_holm"]):
                p += f" (Holm {r['p_holm']:.2g})"
            forks = f", {int(r['n_forks'])} forks" if "n_forks" in r and pd.notna(r["n_forks"]) else ""
            lines.append(f"over {r['unit']} (n={int(r['n'])}{forks}): ρ={rho}, {p}")
        title = "Spearman " + "; ".join(lines) + "; p: whole forks permuted" if lines else ""
        ax.set_title("\n".join(textwrap.wrap(title, 60)), fontsize=6)  # one line ran past the figure
    fig.suptitle(f"Routing agreement between {ends['both']}, on held-out bot states")
    return fig


def lmc_figures(
    interp: pd.DataFrame,
    table: pd.DataFrame,
    names: Mapping[int, str] | None = None,
    expert_sizes: list[list[int]] | None = None,
    forks: pd.DataFrame | None = None,
    corr: pd.DataFrame | None = None,
) -> dict[str, Figure]:
    """The standard LMC figure set: {name: Figure}, named as the PNGs in fork_analysis/
    (interp_fork_<k> for pair 0, interp_fork_<k>_pair_<q> for the others)."""
    interp = with_pairs(interp)
    figures = {"all_interpolations": plot_all_interpolations(interp, names)}
    for k, q in units_of(interp):
        name = f"interp_fork_{k}" + (f"_pair_{q}" if q else "")
        figures[name] = plot_fork_interpolation(interp, k, names, expert_sizes, q)
    figures["instability_over_time"] = plot_instability(table, forks)
    figures["routing_agreement"] = plot_routing_agreement(table, interp, names, corr)
    return figures
