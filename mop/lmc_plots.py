"""The figures of lmc.py: linear mode connectivity of MoP children. Data in (the interpolation
table, one row per fork × α × metric, and the instability table, one row per fork),
`matplotlib.figure.Figure` out, drawn with plot_style; every number (barriers, Jensen–Shannon
divergence, agreement, Wilson intervals) comes from mop/connectivity.py and eval_mop.

    interp, table = connectivity.load_results("lmc_results/BabyAI-GoToLocal-v0/seed_42/copy")
    figures = lmc_figures(interp, table)   # all_interpolations, interp_fork_<k>, instability_over_time, routing_agreement
"""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from mop.connectivity import layers_of, wide
from mop.plot_style import EXPERT_COLORS, PANEL, new_figure, styled

METRICS = {
    "success_rate": "success rate",
    "heldout_ce": "held-out loss (CE vs bot, nats)",
    "heldout_accuracy": "held-out accuracy",
    "path_ratio": "path ratio (agent / bot)",
    "mean_lpc": "mean LPC per step",
}
LAYER_STYLES = ("-", "--", ":", "-.")


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


def _success_bars(ax: Axes, t: pd.DataFrame, color, label: str | None = None, line: bool = True) -> None:
    """Success against α with its 95% Wilson interval."""
    y = t["success_rate"].to_numpy(float)
    yerr = np.nan_to_num(
        np.vstack([y - t["success_ci_low"].to_numpy(float), t["success_ci_high"].to_numpy(float) - y])
    )
    ax.errorbar(
        t.index, y, yerr=yerr, fmt="o-" if line else "o", ms=3, capsize=2, lw=1.2, color=color, label=label
    )


def _chord(ax: Axes, t: pd.DataFrame, metric: str) -> None:
    """The straight line between the endpoints (what the barrier is measured from)."""
    a, y = t.index.to_numpy(float), t[metric].to_numpy(float)
    ax.plot([a[0], a[-1]], [y[0], y[-1]], ls="--", color="0.55", lw=0.9, label="linear between children")


def _headroom(ax: Axes, fraction: float = 0.45) -> None:
    """Room above the curves for a legend at the top."""
    low, high = ax.get_ylim()
    ax.set_ylim(low, high + fraction * (high - low))


def _alpha_axis(ax: Axes) -> None:
    ax.set_xlim(-0.03, 1.03)
    ax.set_xticks([0, 0.25, 0.5, 0.75, 1.0], ["0\n(child A)", "0.25", "0.5", "0.75", "1\n(child B)"])
    ax.set_xlabel("α  (θ = (1−α)·θ_A + α·θ_B)")


@styled
def plot_all_interpolations(interp: pd.DataFrame, names: Mapping[int, str] | None = None) -> Figure:
    """Every fork's interpolation curve on shared axes: success (95% Wilson bars), held-out loss
    and mean LPC against α; colour from early (dark) to late (light) fork point."""
    forks = sorted(interp["fork"].unique())
    colors = _fork_colors(forks)
    metrics = [m for m in ("success_rate", "heldout_ce", "mean_lpc") if m in set(interp["metric"])]
    fig = new_figure(PANEL * len(metrics) + 1.6, PANEL)
    axes = np.atleast_1d(fig.subplots(1, len(metrics)))
    for k in forks:
        t = wide(interp, k)
        for ax, m in zip(axes, metrics):
            if m == "success_rate":
                _success_bars(ax, t, colors[k], _fork_name(interp, k, names))
            else:
                ax.plot(t.index, t[m], "o-", ms=3, lw=1.2, color=colors[k])
    for ax, m in zip(axes, metrics):
        ax.set_ylabel(METRICS[m])
        _alpha_axis(ax)
    if "success_rate" in metrics:
        axes[0].set_ylim(-0.03, 1.03)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside right center", title="fork point")
    fig.suptitle("Interpolation between the two children of every fork (success: 95% Wilson intervals)")
    return fig


@styled
def plot_fork_interpolation(
    interp: pd.DataFrame,
    fork: int,
    names: Mapping[int, str] | None = None,
    expert_sizes: list[list[int]] | None = None,
) -> Figure:
    """One fork: success with 95% Wilson bars, held-out loss and accuracy, path ratio, mean LPC,
    expert usage per layer, and routing distance (JS, bits) of θ(α) to each child per layer,
    against α; dashed grey: the straight line between the children (the barrier's baseline)."""
    t = wide(interp, fork)
    fig = new_figure(PANEL * 3, PANEL * 2.1)
    axes = fig.subplots(2, 3).ravel()
    _success_bars(axes[0], t, "C0")
    _chord(axes[0], t, "success_rate")
    axes[0].set_ylim(-0.03, 1.03)
    axes[0].set_ylabel(METRICS["success_rate"])
    axes[0].legend(loc="lower left")
    axes[1].plot(t.index, t["heldout_ce"], "o-", ms=3, color="C3", label="loss")
    _chord(axes[1], t, "heldout_ce")
    axes[1].set_ylabel(METRICS["heldout_ce"])
    if "heldout_accuracy" in t:
        twin = axes[1].twinx()
        twin.plot(t.index, t["heldout_accuracy"], "s:", ms=2.5, color="0.35", label="accuracy")
        twin.set_ylabel("held-out accuracy (dotted)")
    for ax, m, c in ((axes[2], "path_ratio", "C2"), (axes[3], "mean_lpc", "C4")):
        if m in t and t[m].notna().any():
            ax.plot(t.index, t[m], "o-", ms=3, color=c)
            _chord(ax, t, m)
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
        _alpha_axis(ax)
    fig.suptitle(f"{_fork_name(interp, fork, names)}: along the line between the children")
    return fig


@styled
def plot_instability(table: pd.DataFrame) -> Figure:
    """Barrier height against the fork point, one panel per metric: the held-out loss barrier
    (nats) and the success drop below the straight line (Frankle et al. 2020), with the α where
    each peaks; the drop's bars are half the 95% Wilson interval of success at that α."""
    t = table.sort_values("fork_point")
    fig = new_figure(PANEL * 2, PANEL)
    axes = fig.subplots(1, 2)
    x = t["fork_point"].to_numpy(float)
    for ax, (metric, label, color) in zip(
        axes,
        (
            ("loss_barrier", "held-out loss barrier (nats)", "C3"),
            ("success_barrier", "success drop below the line (±95% CI at α)", "C0"),
        ),
    ):
        y = t[metric].to_numpy(float)
        ax.plot(x, y, "o-", color=color, ms=4)
        if metric == "success_barrier" and "success_barrier_ci" in t:  # older tables lack it
            ax.errorbar(
                x,
                y,
                yerr=t["success_barrier_ci"].to_numpy(float),
                fmt="none",
                ecolor=color,
                capsize=2,
                lw=0.8,
            )
        for xi, yi, a in zip(x, y, t[f"{metric}_alpha"]):
            if yi > 0:
                ax.annotate(
                    f"α={a:.2f}",
                    (xi, yi),
                    textcoords="offset points",
                    xytext=(3, 4),
                    fontsize=6,
                    color="0.35",
                )
        ax.axhline(0, color="0.7", lw=0.8)
        ax.set_xlabel("fork point (fraction of training)")
        ax.set_ylabel(label)
        ax.set_xlim(min(0.0, x.min()) - 0.03, 1.0)
    fig.suptitle("Instability vs fork point: max over α of f(α) − [(1−α)·f(0) + α·f(1)]")
    return fig


@styled
def plot_routing_agreement(
    table: pd.DataFrame, interp: pd.DataFrame, names: Mapping[int, str] | None = None
) -> Figure:
    """Do the children route alike? Per layer against the fork point: the mean Jensen–Shannon
    divergence between the children's router distributions (bits) and the fraction of held-out
    states whose dominant expert agrees; along the path, θ(α)'s JS to child A (solid) and B
    (dashed), mean over layers; and the loss barrier against the children's routing JS."""
    t = table.sort_values("fork_point")
    layers = layers_of(t.columns, "routing_js_layer_")
    fig = new_figure(PANEL * 2, PANEL * 2)
    axes = fig.subplots(2, 2).ravel()
    if not layers:
        for ax in axes:
            ax.text(0.5, 0.5, "no routers (GRU baseline)", ha="center", va="center", transform=ax.transAxes)
        return fig
    x = t["fork_point"].to_numpy(float)
    for layer in layers:
        axes[0].plot(
            x, t[f"routing_js_layer_{layer}"], "o" + LAYER_STYLES[layer % 4], ms=3, label=f"layer {layer}"
        )
        axes[1].plot(
            x,
            t[f"routing_agreement_layer_{layer}"],
            "o" + LAYER_STYLES[layer % 4],
            ms=3,
            label=f"layer {layer}",
        )
    axes[0].set_ylabel("JS(router A ‖ router B) (bits)")
    axes[1].set_ylabel("dominant expert agrees (fraction of states)")
    axes[1].set_ylim(-0.03, 1.03)
    for ax in axes[:2]:
        ax.set_xlabel("fork point (fraction of training)")
        ax.set_xlim(min(0.0, x.min()) - 0.03, 1.0)
        ax.legend(fontsize=7)
    forks = sorted(interp["fork"].unique())
    colors = _fork_colors(forks)
    for k in forks:
        w = wide(interp, k)
        to_a = w[[f"js_to_a_layer_{layer}" for layer in layers]].mean(axis=1)
        to_b = w[[f"js_to_b_layer_{layer}" for layer in layers]].mean(axis=1)
        axes[2].plot(w.index, to_a, "-", color=colors[k], lw=1.2, label=_fork_name(interp, k, names))
        axes[2].plot(w.index, to_b, "--", color=colors[k], lw=1.2)
    _alpha_axis(axes[2])
    axes[2].set_ylabel("JS of θ(α) to child A (solid) / B (dashed)")
    _headroom(axes[2])
    axes[2].legend(fontsize=6, loc="upper center")
    axes[3].scatter(t["routing_js_mean"], t["loss_barrier"], c=[colors[k] for k in t["fork"]], s=18, zorder=3)
    for _, r in t.iterrows():
        axes[3].annotate(
            f"{r['fork_point']:g}",
            (r["routing_js_mean"], r["loss_barrier"]),
            textcoords="offset points",
            xytext=(3, 3),
            fontsize=6,
        )
    axes[3].margins(x=0.15, y=0.15)
    axes[3].set_xlabel("children's routing JS (bits, layer mean)")
    axes[3].set_ylabel("held-out loss barrier (nats)")
    axes[3].axhline(0, color="0.7", lw=0.8)
    fig.suptitle("Routing agreement between the children, on held-out bot states")
    return fig


def lmc_figures(
    interp: pd.DataFrame,
    table: pd.DataFrame,
    names: Mapping[int, str] | None = None,
    expert_sizes: list[list[int]] | None = None,
) -> dict[str, Figure]:
    """The standard LMC figure set: {name: Figure}, named as the PNGs in fork_analysis/."""
    figures = {"all_interpolations": plot_all_interpolations(interp, names)}
    for k in sorted(interp["fork"].unique()):
        figures[f"interp_fork_{k}"] = plot_fork_interpolation(interp, k, names, expert_sizes)
    figures["instability_over_time"] = plot_instability(table)
    figures["routing_agreement"] = plot_routing_agreement(table, interp, names)
    return figures
