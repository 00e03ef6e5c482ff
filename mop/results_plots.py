"""Figures over many evaluations and runs: success against LPC, metrics against training update,
the knockout comparison (rows of evaluation_results.csv), training curves (a run's
metrics.jsonl) and a multi-task policy's routing by level (routing_analysis.routing_by_level). Pure functions, data in, `matplotlib.figure.Figure` out, drawn with plot_style;
the figures of one routing cache are plotting_utils.py.

    fig = plot_success_vs_lpc(results.read_results("evaluation_results.csv"))
    fig = plot_training_curves(experiment.read_metrics("checkpoints/BabyAI-GoToLocal-v0/trial_0/metrics.jsonl"))
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from mop.plot_style import (
    EXPERT_COLORS,
    PANEL,
    RUN_MARKERS,
    RUN_STYLES,
    expert_dash,
    expert_label,
    expert_size,
    note,
    panel_grid,
    sized_figure,
    styled,
    task_colours,
)
from mop.routing_analysis import default_runs, routing_layers

# ----------------------------------------------------------------------------- across evaluations


@styled
def plot_success_vs_lpc(results_df: pd.DataFrame, layout: str = "screen") -> Figure:
    """Success rate (95% Wilson CI) against mean LPC per step, one point per evaluated checkpoint,
    colour = task, one panel per lpc_alpha: the accuracy/computation trade-off across runs."""
    df = default_runs(results_df)
    without_lpc = int(df["mean_lpc"].isna().sum())
    df = df[df["mean_lpc"].notna()]
    if df.empty:
        raise ValueError("no MoP evaluations with an LPC (the GRU baseline has none)")
    alphas = sorted(df["lpc_alpha"].fillna(0.0).unique()) if "lpc_alpha" in df.columns else [0.0]
    tasks = sorted(df["task_id"].unique())
    colors = task_colours(results_df["task_id"].dropna())  # as plot_metrics_vs_update colours them
    fig, axes = panel_grid(len(alphas), layout, panel=(PANEL, PANEL * 0.95), extra=(0.4, 1.0), sharey=True)
    for ax, alpha in zip(axes, alphas):
        sub = df[df.get("lpc_alpha", pd.Series(0.0, index=df.index)).fillna(0.0) == alpha]
        for task in tasks:
            rows = sub[sub["task_id"] == task]
            if rows.empty:
                continue
            rate = rows["success_rate"].to_numpy(float)
            low = rows.get("success_ci_low", rows["success_rate"]).to_numpy(float)
            high = rows.get("success_ci_high", rows["success_rate"]).to_numpy(float)
            err = np.clip(np.nan_to_num(np.vstack([rate - low, high - rate])), 0.0, None)
            ax.errorbar(
                rows["mean_lpc"],
                rate,
                yerr=err,
                fmt="o",
                ms=4,
                capsize=2,
                color=colors[task],
                label=task.removeprefix("BabyAI-"),
            )
        ax.set_title(f"lpc_alpha = {alpha:g}")
        ax.set_xlabel("mean LPC per step (Σ w·size²)")
        ax.set_ylim(-0.03, 1.05)
    axes[0].set_ylabel("success rate (95% CI)")
    handles, labels = axes[0].get_legend_handles_labels()
    for ax in axes[1:]:
        h, lab = ax.get_legend_handles_labels()
        handles += [x for x, y in zip(h, lab) if y not in labels]
        labels += [y for y in lab if y not in labels]
    fig.legend(handles, labels, loc="outside lower center", ncols=min(4, len(labels)), title="task")
    left_out = f"; {without_lpc} without an LPC (GRU baseline) not drawn" if without_lpc else ""
    fig.suptitle(f"Success vs routing cost ({len(df)} evaluations{left_out})")
    note(
        fig,
        "Error bar: the 95% Wilson interval of each checkpoint's success rate over its evaluation episodes.",
    )
    return fig


@styled
def plot_metrics_vs_update(results_df: pd.DataFrame, layout: str = "screen") -> Figure:
    """Success rate (with its 95% CI band) and mean LPC against training update, one line per run
    (task, trial, seed); checkpoint_final rows are placed at their update."""
    df = default_runs(results_df)
    df = df[df["update"].notna()].copy()
    if df.empty:
        raise ValueError("no evaluations with an update number")
    df["run"] = (
        df["task_id"].str.removeprefix("BabyAI-")
        + " · t"
        + df["trial"].astype(str)
        + np.where(
            df.get("seed", pd.Series(np.nan, index=df.index)).notna(),
            " · s" + df.get("seed", pd.Series("", index=df.index)).astype(str).str.removesuffix(".0"),
            "",
        )
    )
    # CSVs written before the final weights were stored once (and the earlier system's) hold a
    # numbered row and a checkpoint_final row for the same update: one point per (run, update).
    df = df.sort_values("checkpoint_path").drop_duplicates(["run", "update"], keep="first")
    fig, (ax_success, ax_lpc) = panel_grid(2, layout, panel=(PANEL + 0.3, PANEL * 0.95), extra=(0.0, 1.0))
    colors = task_colours(results_df["task_id"].dropna())  # a level's colour as in plot_success_vs_lpc
    of_task: dict[str, int] = {}
    for run, rows in df.sort_values("update").groupby("run", sort=True):
        task = rows["task_id"].iloc[0]
        k = of_task[task] = of_task.get(task, -1) + 1  # the k-th run of its level: its line style
        color, style = colors[task], {"ls": RUN_STYLES[k % len(RUN_STYLES)], "marker": RUN_MARKERS[k % 6]}
        x = rows["update"].to_numpy(float)
        ax_success.plot(x, rows["success_rate"], ms=3, color=color, label=run, **style)
        if {"success_ci_low", "success_ci_high"} <= set(rows.columns):
            ax_success.fill_between(
                x,
                rows["success_ci_low"].astype(float),
                rows["success_ci_high"].astype(float),
                color=color,
                alpha=0.2,
                lw=0,
            )
        if rows["mean_lpc"].notna().any():
            ax_lpc.plot(x, rows["mean_lpc"], ms=3, color=color, label=run, **style)
    ax_success.set(title="success rate (95% CI)", xlabel="update", ylabel="success rate", ylim=(-0.03, 1.05))
    ax_lpc.set(title="routing cost", xlabel="update", ylabel="mean LPC per step (Σ w·size²)")
    handles, labels = ax_success.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(3, len(labels)), title="run")
    fig.suptitle("Evaluation over training (colour: level; line style: run)")
    note(
        fig,
        "Band: the 95% Wilson interval of each evaluation's success rate over its episodes (one run "
        "per line: no interval across runs); mean LPC: no interval.",
    )
    return fig


@styled
def plot_knockout_comparison(
    results_df: pd.DataFrame, checkpoint_path: str | None = None, layout: str = "screen"
) -> Figure:
    """Success rate (95% Wilson CI) of one checkpoint under each knockout condition, from
    evaluation_results.csv rows. Default checkpoint: the one evaluated under most conditions."""
    df = results_df.copy()
    if df.empty:
        raise ValueError("plot_knockout_comparison: no rows")
    df["knockout"] = df["knockout"].fillna("none") if "knockout" in df.columns else "none"
    if checkpoint_path is None:
        checkpoint_path = (
            df.groupby("checkpoint_path")["knockout"].nunique().sort_values(kind="stable").index[-1]
        )
    df = df[df["checkpoint_path"].astype(str) == str(checkpoint_path)]
    if df.empty:
        raise ValueError(f"no rows for checkpoint {checkpoint_path!r}")
    task = df["task_id"].iloc[0] if "task_id" in df.columns else "?"
    eval_task = (
        df["eval_task_id"].fillna(task) if "eval_task_id" in df.columns else pd.Series(task, index=df.index)
    )
    df = df.assign(
        label=np.where(eval_task == task, df["knockout"], df["knockout"] + "\non " + eval_task.astype(str))
    )
    df = df.sort_values(["label"], key=lambda s: s.map(lambda v: (not v.startswith("none"), v)))
    rate = df["success_rate"].to_numpy(dtype=float)
    low = df["success_ci_low"].to_numpy(dtype=float) if "success_ci_low" in df.columns else rate
    high = df["success_ci_high"].to_numpy(dtype=float) if "success_ci_high" in df.columns else rate
    fig = sized_figure(max(PANEL, 0.9 * len(df) + 1.2), PANEL * 0.9 + 0.4, layout)
    ax = fig.subplots()
    colors = ["#7f7f7f" if str(k).startswith("none") else "#d62728" for k in df["label"]]
    err = np.clip(np.nan_to_num(np.vstack([rate - low, high - rate])), 0.0, None)  # rounding at 0 and 1
    ax.bar(range(len(df)), rate, 0.6, yerr=err, capsize=3, color=colors)
    for i, r in enumerate(rate):
        ax.text(i, min(r + err[1, i] + 0.02, 1.05), f"{r:.2f}", ha="center", va="bottom", fontsize=8)
    known = (
        df["expert_hidden_sizes"].dropna()
        if "expert_hidden_sizes" in df.columns
        else pd.Series([], dtype=object)
    )
    sizes = json.loads(known.iloc[0]) if len(known) and isinstance(known.iloc[0], str) else None

    def readable(label: str) -> str:
        # 'layer_1:2' -> 'layer 1 · 32 units' when the row says the sizes; specs stay 0-based.
        label = label.replace("none", "no knockout").replace("largest", "largest per layer")
        return re.sub(
            r"layer_(\d+):(\d+)",
            lambda m: expert_label(int(m[1]), int(m[2]), expert_size(sizes, int(m[1]), int(m[2]))),
            label,
        )

    ax.set_xticks(range(len(df)), [readable(str(v)) for v in df["label"]], rotation=20, ha="right")
    ax.set_xlabel("knockout condition")
    ax.set_ylabel("success rate (95% CI)")
    ax.set_ylim(0, 1.12)
    n = df["num_episodes"].iloc[0] if "num_episodes" in df.columns else "?"
    ax.set_title(
        f"Knockouts: {Path(str(checkpoint_path)).parent.name}/{Path(str(checkpoint_path)).stem}\n{task}, {n} episodes"
    )
    episodes = df["num_episodes"].dropna().astype(int).unique() if "num_episodes" in df.columns else []
    over = f"{episodes[0]} episodes" if len(episodes) == 1 else "its episodes"
    note(fig, f"Error bar: the 95% Wilson interval of the success rate over {over} of each condition.")
    return fig


# ----------------------------------------------------------------------------- training


def _varies(df: pd.DataFrame, col: str) -> bool:
    values = (
        pd.to_numeric(df[col], errors="coerce").dropna() if col in df.columns else pd.Series([], dtype=float)
    )
    return len(values) > 1 and values.max() > values.min()


def _same_series(df: pd.DataFrame, a: str, b: str) -> bool:
    """Whether two logged series coincide at every update that has both (then one line hides the other)."""
    if a not in df.columns or b not in df.columns:
        return False
    x, y = df[a].to_numpy(dtype=float), df[b].to_numpy(dtype=float)
    both = np.isfinite(x) & np.isfinite(y)
    return bool(both.any()) and bool(np.allclose(x[both], y[both], rtol=1e-6, atol=1e-9))


@styled
def plot_training_curves(
    rows: Sequence[Mapping[str, Any]] | pd.DataFrame,
    expert_sizes: Sequence[Sequence[int]] | None = None,
    layout: str = "screen",
) -> Figure:
    """Loss, accuracy against the bot, recent success (and path ratio), for MoP runs LPC, the
    learning-rate and teacher-forcing schedules when they change over the run, and every layer's
    mean expert weights, against the update (metrics.jsonl rows). Where the total loss equals the
    cross-entropy at every update (no LPC term: lpc_alpha 0) one line is drawn and labelled so.
    One run: no interval (said under the figure)."""
    df = pd.DataFrame(list(rows)) if not isinstance(rows, pd.DataFrame) else rows
    if df.empty or "update" not in df.columns:
        raise ValueError("plot_training_curves: no rows with an 'update' column")
    df = df.sort_values("update")
    routing: dict[int, dict[int, str]] = {}
    for c in df.columns:
        m = re.match(r"^routing/layer_(\d+)/expert_(\d+)$", str(c))
        if m:
            routing.setdefault(int(m.group(1)), {})[int(m.group(2))] = c
    same = _same_series(df, "train/loss", "train/ce")
    loss = (
        [("train/loss", "total = cross-entropy")]
        if same
        else [("train/loss", "total"), ("train/ce", "cross-entropy")]
    )
    paper = layout == "paper"
    window = df["episodes/recent_window"].dropna() if "episodes/recent_window" in df.columns else []
    last = f"last {int(window.iloc[-1])} episodes" if len(window) else "recent episodes"
    over = "" if paper else f", {last}"  # the note says it too; a column has no room for it
    panels: list[tuple[str, list[tuple[str, str]], str]] = [
        ("loss", loss, "loss (nats)"),
        (
            "accuracy vs bot",
            [("train/accuracy", "accuracy")],
            "fraction of steps" if paper else "fraction of labelled steps",
        ),
        ("recent episodes", [("train/success_recent", "success rate")], f"success rate{over}"),
    ]
    if "train/path_ratio_recent" in df.columns:
        panels.append(
            ("path ratio (recent)", [("train/path_ratio_recent", "path ratio")], f"steps / bot steps{over}")
        )
    if "train/lpc" in df.columns:
        panels.append(("LPC", [("train/lpc", "LPC")], "LPC (Σ w·size²)"))
    # A schedule's panel only when it changes over the run: a constant rate is a config value.
    if _varies(df, "train/lr"):
        panels.append(("learning rate", [("train/lr", "lr")], "Adam lr (log scale)"))
    if _varies(df, "train/teacher_forcing"):
        panels.append(
            ("teacher forcing", [("train/teacher_forcing", "β")], "P(step acts with the bot label)")
        )
    for k, experts in sorted(routing.items()):
        series = [(experts[j], expert_label(k, j, expert_size(expert_sizes, k, j))) for j in sorted(experts)]
        panels.append((f"layer {k} routing", series, "mean router weight"))
    panels = [(t, [(c, n) for c, n in s if c in df.columns], u) for t, s, u in panels]
    panels = [p for p in panels if p[1]]
    # Every layer with the same experts: one legend under the figure names them, not one per panel.
    sizes = {tuple(expert_size(expert_sizes, k, j) for j in sorted(e)) for k, e in routing.items()}
    shared = len(sizes) == 1 and None not in next(iter(sizes))
    fig, axes = panel_grid(
        len(panels), layout, panel=(PANEL * 1.05, PANEL * 0.8), screen_cols=3, extra=(0.0, 0.8)
    )
    x = df["update"].to_numpy()
    for ax, (title, series, unit) in zip(axes, panels):
        for i, (col, name) in enumerate(series):
            is_routing = col.startswith("routing/")
            expert = int(col.rsplit("_", 1)[1]) if is_routing else i
            color = EXPERT_COLORS[expert % 6] if is_routing else f"C{i}"
            marker = "o" if len(x) <= 20 else None  # a few log rows: show the points, not a bare line
            ax.plot(
                x,
                df[col].to_numpy(dtype=float),
                label=name,
                color=color,
                linestyle=expert_dash(expert) if is_routing else "-",
                linewidth=1.3 if not paper else 1.0,
                marker=marker,
                markersize=3 if not paper else 2,
            )
        if title.startswith("layer") or title in ("accuracy vs bot", "recent episodes", "teacher forcing"):
            ax.set_ylim(-0.02, 1.02)
        if title == "learning rate":
            ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel("update")
        ax.set_ylabel(unit)
        if title == "loss" or (len(series) > 1 and not (shared and title.startswith("layer"))):
            ax.legend(frameon=False, fontsize="small")
    if shared:
        handles = [
            Line2D(
                [],
                [],
                color=EXPERT_COLORS[j % 6],
                linestyle=expert_dash(j),
                label="identity" if size == 0 else f"{size} units",
            )
            for j, size in enumerate(next(iter(sizes)))
        ]
        fig.legend(
            handles=handles,
            loc="outside lower center",
            ncols=len(handles),
            frameon=False,
            title="expert (every layer)",
        )
    fig.suptitle("Training curves")
    text = (
        "One run: no interval. Each point is the value logged at that update: losses, accuracy and "
        f"routing are means over the updates since the previous point; success and path ratio over the {last}."
    )
    if same:
        text += " The total loss equals the cross-entropy at every update (no LPC term: lpc_alpha 0), so one line shows both."
    note(fig, text)
    return fig


# ----------------------------------------------------------------------------- levels


@styled
def plot_routing_by_level(
    table: pd.DataFrame,
    summary: Mapping[str, Any] | None = None,
    expert_sizes: Sequence[Sequence[int]] | None = None,
    title: str | None = None,
    layout: str = "screen",
) -> Figure:
    """Routing of one (multi-task) policy by level, from routing_analysis.routing_by_level: mean
    LPC per step with its 95% CI per level (levels by mean bot path length, the measured
    difficulty; BabyAI's curriculum rank and the success rate under each), each layer's expert
    usage per level, and mean LPC against mean bot path length (both with CIs).
    summary: routing_analysis.level_difficulty_summary (its verdict and rho go in the title)."""
    if table.empty:
        raise ValueError("plot_routing_by_level: no levels")
    t = table.reset_index(drop=True)
    x = np.arange(len(t))
    fig, (ax_lpc, ax_usage, ax_path) = panel_grid(
        3, layout, panel=(PANEL + 0.2, PANEL * 1.05), paper_cols=1, extra=(0.2, 1.2)
    )

    def labels() -> list[str]:
        out = []
        for _, r in t.iterrows():
            rank = "bonus" if pd.isna(r["curriculum_rank"]) else f"#{int(r['curriculum_rank'])}"
            out.append(
                f"{str(r['level']).removeprefix('BabyAI-').removesuffix('-v0')}\n"
                f"BabyAI {rank}\nsuccess {r['success_rate']:.2f}"
            )
        return out

    lpc = t["mean_lpc"].to_numpy(float)
    err = np.clip(np.nan_to_num(np.vstack([lpc - t["lpc_ci_low"], t["lpc_ci_high"] - lpc])), 0.0, None)
    ax_lpc.bar(x, lpc, 0.6, yerr=err, capsize=3, color="#7f7f7f", label="all episodes")
    ok = t["lpc_success"].to_numpy(float) if "lpc_success" in t.columns else np.full(len(t), np.nan)
    if np.isfinite(ok).any():
        ok_err = np.vstack([ok - t["lpc_success_ci_low"], t["lpc_success_ci_high"] - ok])
        ok_err = np.clip(np.nan_to_num(ok_err), 0.0, None)
        ax_lpc.errorbar(
            x,
            ok,
            yerr=ok_err,
            fmt="D",
            ms=4,
            mfc="white",
            color="black",
            capsize=2,
            label="successful episodes",
        )
        ax_lpc.legend(frameon=False, fontsize=6, loc="upper left", ncols=2)
        ax_lpc.set_ylim(0, 1.2 * np.nanmax(np.concatenate([t["lpc_ci_high"], t["lpc_success_ci_high"]])))
    ax_lpc.set_xticks(x, labels(), fontsize=7)
    ax_lpc.set(ylabel="mean LPC per step (Σ w·size², 95% CI)", title="routing cost by level")
    ax_lpc.set_xlabel("level (by mean bot path length →)")

    layers = routing_layers(c.removeprefix("usage_") for c in t.columns if c.startswith("usage_"))
    width = 0.8 / max(len(layers), 1)
    for k, cols in layers.items():
        bottom = np.zeros(len(t))
        for j, col in enumerate(cols):
            w = t[f"usage_{col}"].to_numpy(float)
            sizes = [expert_size(expert_sizes, layer, j) for layer in layers]
            known = "/".join("id" if v == 0 else str(v) for v in sizes if v is not None)
            ax_usage.bar(
                x - 0.4 + width * (k + 0.5),
                w,
                width * 0.9,
                bottom=bottom,
                color=EXPERT_COLORS[j % len(EXPERT_COLORS)],
                label=(f"expert {j}" + (f" ({known})" if known else "")) if k == 0 else "_nolegend_",
                edgecolor="white",
                linewidth=0.4,
            )
            bottom += w
        for i in x:
            ax_usage.text(i - 0.4 + width * (k + 0.5), 1.01, f"L{k}", ha="center", va="bottom", fontsize=6)
    if layers:
        ax_usage.legend(frameon=False, fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncols=3)
    names = [str(v).removeprefix("BabyAI-").removesuffix("-v0") for v in t["level"]]
    ax_usage.set_xticks(x, names, fontsize=7)
    ax_usage.set(
        ylim=(0, 1.1), ylabel="mean router weight per step", title="expert usage per layer (L0, L1, ...)"
    )

    bot = t["bot_path_mean"].to_numpy(float)
    xerr = np.clip(
        np.nan_to_num(np.vstack([bot - t["bot_path_ci_low"], t["bot_path_ci_high"] - bot])), 0.0, None
    )
    for i in x:
        ax_path.errorbar(
            bot[i],
            lpc[i],
            xerr=xerr[:, i : i + 1],
            yerr=err[:, i : i + 1],
            fmt="o",
            ms=5,
            capsize=2,
            color=f"C{i % 10}",
        )
        if np.isfinite(ok[i]):
            ax_path.errorbar(
                bot[i],
                ok[i],
                yerr=ok_err[:, i : i + 1],
                fmt="D",
                ms=4,
                mfc="white",
                capsize=2,
                color=f"C{i % 10}",
                alpha=0.7,
            )
        ax_path.annotate(
            str(t["level"].iloc[i]).removeprefix("BabyAI-").removesuffix("-v0"),
            (bot[i], lpc[i]),
            textcoords="offset points",
            xytext=(4, 4),
            fontsize=7,
        )
    ax_path.set(
        xlabel="mean bot path length (steps, 95% CI)",
        ylabel="mean LPC per step (95% CI)",
        title="routing cost vs level difficulty",
    )
    if np.isfinite(ok).any():
        ax_path.text(
            0.02,
            0.98,
            "● all episodes   ◇ successful episodes",
            transform=ax_path.transAxes,
            va="top",
            fontsize=6,
        )
    head = title or "Routing by level"
    if summary:
        rho = summary.get("spearman_lpc_bot_path")
        extra = (
            f"Spearman ρ(LPC, bot path) = {rho:.2f} over {summary['n_levels']} levels · "
            if rho is not None and rho == rho
            else ""
        )
        verdict = str(summary.get("verdict", "")).replace("; ", "\n")
        head += f"\n{extra}{verdict}"
    fig.suptitle(head)
    note(
        fig,
        "Intervals: 95% t intervals over each level's episodes (LPC per step, clustered by episode; "
        "bot path: over the layouts the bot solved); usage: mean per step, no interval.",
    )
    return fig
