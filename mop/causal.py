"""Causal importance beside routing: the numbers of causal.py, tables in, tables out (no torch,
no matplotlib, nothing read or written).

causal.py evaluates every run intact and under each intervention on each expert (zero,
route_around, swap: mixture_of_experts.Intervention), all on the same evaluation layouts, and hands
the episodes tables here. Per run and layout the paired outcome (success, path ratio, LPC of the
effective weights, LPC of the router's own weights), and from them:

- `effect_row` (causal_effects.csv): one run's effect = intervened - intact, with a per-layout
  paired interval that is about *this network on these layouts*, never a recipe: a percentile
  bootstrap over the shared layouts (layouts resampled, both arms together), and for success the
  exact McNemar test (mop.contrasts.exact_paired); Holm over the table's McNemar tests.
- `summarize` (causal_summary.csv): per (condition, layer, expert, intervention, metric), runs as
  the units (replicate = (condition, seed)): the mean of the runs' effects, its 95% t interval over
  runs clipped to what the effect can be (the metric's range minus the intact mean: success
  [0, 1], path ratio [0, inf), LPC [0, max LPC]), the one-sample t-test against 0 and Holm over ONE
  family: every test of the table (conditions x experts x interventions x metrics asked for).
  One run in a condition: no inference (the cells say so).
- `observational_stats`: per expert, from the intact evaluation's per-step routing: mean weight,
  the normalised entropy of its weight over steps, the share of steps it dominates its layer, its
  share of the LPC, and selectivity by subgoal (max over subgoals of its mean weight there minus
  its overall mean; needs the cache's `subgoal` column, else NaN with a note).
- `predict` (causal_predict.csv): per (statistic, intervention, metric), whether the statistic
  orders the effects among a run's experts: rho = the mean over runs of each run's Spearman rho
  (a between-run association cannot make it), p from permutations of the statistic within each
  run, the interval a 95% t interval over runs (Fisher z), Holm over statistics x interventions x
  metrics; rho_pooled (Spearman over every point) beside it, descriptive only.

    from mop import causal
    stats = causal.observational_stats(steps, [[0, 16, 32]] * 3, 2.0)
    causal.summarize(effects, max_lpc=2048.0)
    causal.predict(effects)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from mop.contrasts import exact_paired
from mop.inference import NO_INFERENCE, aggregate_r, holm_over_asked
from mop.lmc_stats import t_test

METRICS = ("success_rate", "path_ratio", "mean_lpc", "router_lpc")
METRIC_HELP = {
    "success_rate": "share of layouts solved",
    "path_ratio": "agent steps / bot steps, over solved layouts",
    "mean_lpc": "LPC per step of the effective weights (after the intervention)",
    "router_lpc": "LPC per step of the router's own weights (before it)",
}
STATISTICS = ("mean_weight", "weight_entropy", "dominance_share", "lpc_share", "subgoal_selectivity")
BOOTSTRAP = 2000  # resamples of the per-layout intervals
PERMUTATIONS = 2000  # within-run permutations of predict's test
LAYOUT_INTERVAL = "95% percentile bootstrap over {n} shared layouts: this network on these layouts"

RUN_COLUMNS = ["run", "checkpoint_path", "condition", "condition_label", "task_id", "trial", "seed"]
EFFECT_COLUMNS = [
    *RUN_COLUMNS,
    "layer",
    "expert",
    "expert_size",
    "intervention",
    "swap_target",
    "metric",
    "layouts",
    "intact",
    "intervened",
    "effect",
    "layout_ci_low",
    "layout_ci_high",
    "layout_p",
    "layout_p_holm",
    "layout_test",
    *STATISTICS,
    "note",
]
SUMMARY_COLUMNS = [
    "condition",
    "condition_label",
    "layer",
    "expert",
    "expert_size",
    "intervention",
    "metric",
    "n_runs",
    "mean_intact",
    "mean_intervened",
    "effect",
    "ci_low",
    "ci_high",
    "range_low",
    "range_high",
    "p",
    "p_holm",
    "family_size",
    "interval",
    "note",
]
SIZED = "sized (identity left out)"  # causal_predict.csv's control set of experts

PREDICT_COLUMNS = [
    "statistic",
    "intervention",
    "metric",
    "experts",
    "n_points",
    "n_runs",
    "rho",
    "rho_pooled",
    "ci_low",
    "ci_high",
    "p",
    "p_holm",
    "family_size",
    "permutations",
    "test",
    "note",
]


# ----------------------------------------------------------------------------- per layout


def layouts(episodes: pd.DataFrame, router_lpc: Mapping[int, float] | None = None) -> pd.DataFrame:
    """One row per evaluation layout (index: its seed): success, length, ratio (length / bot
    length where solved and the bot's length is known, else NaN), mean_lpc and router_lpc (the
    per-step means of one episode; router_lpc: by episode index, default the effective one)."""
    e = episodes if episodes["seed"].is_monotonic_increasing else episodes.sort_values("seed")
    optimal = pd.to_numeric(e["optimal_length"], errors="coerce").to_numpy(dtype=float)
    length = e["length"].to_numpy(dtype=float)
    success = e["success"].to_numpy(dtype=bool)
    ratio = np.where(
        success & np.isfinite(optimal) & (optimal > 0), length / np.where(optimal > 0, optimal, 1), np.nan
    )
    lpc = e["mean_lpc"].to_numpy(dtype=float)
    raw = lpc if router_lpc is None else np.array([router_lpc[int(i)] for i in e["episode"]], dtype=float)
    return pd.DataFrame(
        {"success": success, "length": length, "ratio": ratio, "mean_lpc": lpc, "router_lpc": raw},
        index=pd.Index(e["seed"].to_numpy(dtype=int), name="seed"),
    )


def metric_of(table: pd.DataFrame, metric: str, take: np.ndarray | None = None) -> np.ndarray:
    """The run-level metric of the layouts (as eval_mop.compute_metrics takes it: path ratio the
    mean over solved layouts, LPC step-weighted), for each row of `take` (B, N) layout positions
    at once (bootstrap resamples); take None: the table itself, shape (1,)."""
    take = np.arange(len(table))[None, :] if take is None else take
    if metric == "success_rate":
        return table["success"].to_numpy(dtype=float)[take].mean(-1)
    if metric == "path_ratio":
        r = table["ratio"].to_numpy(dtype=float)[take]
        ok = np.isfinite(r)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(ok, r, 0.0).sum(-1) / ok.sum(-1)
    if metric in ("mean_lpc", "router_lpc"):
        w = table["length"].to_numpy(dtype=float)[take]
        return (table[metric].to_numpy(dtype=float)[take] * w).sum(-1) / w.sum(-1)
    raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")


def metric_range(metric: str, max_lpc: float) -> tuple[float, float]:
    """What the metric itself can be."""
    return {"success_rate": (0.0, 1.0), "path_ratio": (0.0, math.inf)}.get(metric, (0.0, max_lpc))


def paired_layout_effect(
    intact: pd.DataFrame, intervened: pd.DataFrame, metric: str, max_lpc: float, seed: int = 0
) -> dict[str, Any]:
    """One run's effect of one intervention on one metric, on the layouts both evaluations
    played: intact, intervened, effect, and the per-layout paired interval (LAYOUT_INTERVAL,
    clipped to what the effect can be) and, for success, McNemar's exact p."""
    if intact.index.equals(intervened.index):  # the usual case: both played the same layouts
        shared, a, b = intact.index, intact, intervened
    else:
        shared = intact.index.intersection(intervened.index)
        a, b = intact.loc[shared], intervened.loc[shared]
    out: dict[str, Any] = {"layouts": len(shared), "note": ""}
    with np.errstate(invalid="ignore", divide="ignore"):
        va, vb = float(metric_of(a, metric)[0]), float(metric_of(b, metric)[0])
    out |= {"intact": va, "intervened": vb, "effect": vb - va}
    out |= {"layout_ci_low": math.nan, "layout_ci_high": math.nan, "layout_p": math.nan, "layout_test": ""}
    if not (math.isfinite(va) and math.isfinite(vb)):
        out["note"] = (
            "no solved layout with a bot path in one arm: no path ratio"
            if metric == "path_ratio"
            else "not measured"
        )
        out["effect"] = math.nan
        return out
    rng = np.random.default_rng(seed)
    take = rng.integers(0, len(shared), (BOOTSTRAP, len(shared)))
    with np.errstate(invalid="ignore", divide="ignore"):
        d = metric_of(b, metric, take) - metric_of(a, metric, take)
    d = d[np.isfinite(d)]
    lo, hi = metric_range(metric, max_lpc)
    if len(d) >= 0.9 * BOOTSTRAP:
        low, high = np.percentile(d, [2.5, 97.5])
        out["layout_ci_low"] = float(np.clip(low, lo - va, hi - va))
        out["layout_ci_high"] = float(np.clip(high, lo - va, hi - va))
        out["layout_test"] = LAYOUT_INTERVAL.format(n=len(shared))
    else:
        out["note"] = "too few solved layouts for a bootstrap interval"
    if metric == "success_rate":
        out["layout_p"] = exact_paired(a["success"].to_numpy(), b["success"].to_numpy())["p_exact"]
        out["layout_test"] += "; p: McNemar exact on the shared layouts"
    return out


# ----------------------------------------------------------------------------- observational


def _entropy_share(w: np.ndarray) -> float:
    """Shannon entropy of the weight mass over steps, divided by log(steps): 1 = spread evenly
    over every step, 0 = all on one."""
    total = w.sum()
    if len(w) < 2 or total <= 0:
        return math.nan
    p = w[w > 0] / total
    return float(-(p * np.log(p)).sum() / math.log(len(w)))


def observational_stats(
    steps: pd.DataFrame, expert_sizes: Sequence[Sequence[int]], exponent: float = 2.0
) -> pd.DataFrame:
    """Per (layer, expert) of the intact evaluation's steps (columns layer_<k>_expert_<j>, and
    `subgoal` when the cache recorded it): mean_weight, weight_entropy (_entropy_share),
    dominance_share (steps where it has its layer's largest weight; ties to the lower index),
    lpc_share (its share of the run's LPC: mean w_j s_j^exponent over the mean LPC), and
    subgoal_selectivity (max over subgoals of its mean weight there, minus its mean weight), with
    a note where one is NaN."""
    rows = []
    total_lpc = sum(
        (steps[f"layer_{k}_expert_{j}"].to_numpy(dtype=float) * float(s) ** exponent).mean()
        for k, sizes in enumerate(expert_sizes)
        for j, s in enumerate(sizes)
    )
    subgoal = steps["subgoal"].astype(str) if "subgoal" in steps.columns else None
    for k, sizes in enumerate(expert_sizes):
        w = np.stack([steps[f"layer_{k}_expert_{j}"].to_numpy(dtype=float) for j in range(len(sizes))], -1)
        top = w.argmax(-1)
        for j, s in enumerate(sizes):
            mean = float(w[:, j].mean())
            note = []
            share = float(mean * float(s) ** exponent / total_lpc) if total_lpc > 0 else math.nan
            if total_lpc <= 0:
                note.append("the run's LPC is 0: no LPC share")
            if subgoal is not None and subgoal.notna().any():
                by = pd.Series(w[:, j]).groupby(subgoal.to_numpy()).mean()
                selectivity = float(by.max() - mean)
            else:
                selectivity = math.nan
                note.append("no subgoal column in the routing record: no selectivity")
            rows.append(
                {
                    "layer": k,
                    "expert": j,
                    "expert_size": int(s),
                    "mean_weight": mean,
                    "weight_entropy": _entropy_share(w[:, j]),
                    "dominance_share": float((top == j).mean()),
                    "lpc_share": share,
                    "subgoal_selectivity": selectivity,
                    "stats_note": "; ".join(note),
                }
            )
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- the tables


def effects_table(rows: list[dict]) -> pd.DataFrame:
    """causal_effects.csv from effect rows (EFFECT_COLUMNS), Holm over its McNemar tests."""
    df = pd.DataFrame(rows, columns=EFFECT_COLUMNS)
    for c in ("layer", "expert", "expert_size", "layouts"):
        df[c] = pd.to_numeric(df[c]).astype("Int64")
    numeric = ["intact", "intervened", "effect", "layout_ci_low", "layout_ci_high", "layout_p", *STATISTICS]
    df[numeric] = df[numeric].apply(pd.to_numeric, errors="coerce").astype(float)
    df["layout_p_holm"] = holm_over_asked(df["layout_p"]) if len(df) else []  # untestable: p = 1 in it
    df["layout_p_holm"] = df["layout_p_holm"].astype(float)
    return df


def _t_over_runs(d: np.ndarray) -> tuple[float, float, float, str]:
    """(ci_low, ci_high, p, note) of the runs' differences d: 95% t interval, t-test against 0."""
    if len(d) < 2:
        return math.nan, math.nan, math.nan, NO_INFERENCE if len(d) else "no run measured"
    if float(np.ptp(d)) <= 1e-12 * max(1.0, float(np.abs(d).max())):
        return float(d[0]), float(d[0]), math.nan, "no spread over runs: no test"
    low, high, p = t_test(d)
    return low, high, p, ""


def summarize(effects: pd.DataFrame, max_lpc: float) -> pd.DataFrame:
    """causal_summary.csv: per (condition, layer, expert, intervention, metric), the runs'
    effects: mean, 95% t interval over runs clipped to [range_low, range_high] (the metric's range
    minus the mean intact value), p (t-test against 0), Holm over every test of the table (the
    declared family, its size in family_size: a test that could not run, one run or no spread,
    counts as p = 1, so the family is the question's, not the data's)."""
    rows = []
    keys = ["condition", "layer", "expert", "intervention", "metric"]
    groups = effects.groupby(keys, sort=False, dropna=False) if len(effects) else []
    for (cid, k, j, kind, metric), g in groups:
        d = g["effect"].to_numpy(dtype=float)
        ok = np.isfinite(d)
        d, intact = d[ok], g["intact"].to_numpy(dtype=float)[ok]
        low, high, p, note = _t_over_runs(d)
        lo, hi = metric_range(metric, max_lpc)
        mean_intact = float(intact.mean()) if len(d) else math.nan
        range_low, range_high = lo - mean_intact, hi - mean_intact
        interval = f"95% t over {len(d)} runs, clipped to the effect's range" if len(d) >= 2 else ""
        if len(d) >= 2 and math.isfinite(low):
            low, high = (
                float(np.clip(low, range_low, range_high)),
                float(np.clip(high, range_low, range_high)),
            )
        rows.append(
            {
                "condition": cid,
                "condition_label": g["condition_label"].iloc[0],
                "layer": k,
                "expert": j,
                "expert_size": g["expert_size"].iloc[0],
                "intervention": kind,
                "metric": metric,
                "n_runs": len(d),
                "mean_intact": mean_intact,
                "mean_intervened": float(g["intervened"].to_numpy(dtype=float)[ok].mean())
                if len(d)
                else math.nan,
                "effect": float(d.mean()) if len(d) else math.nan,
                "ci_low": low,
                "ci_high": high,
                "range_low": range_low,
                "range_high": range_high,
                "p": p,
                "interval": interval,
                "note": note,
            }
        )
    df = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    df["p_holm"] = holm_over_asked(df["p"]) if len(df) else []  # a test that cannot run counts as p = 1
    df["family_size"] = len(df)
    for c in ("layer", "expert", "expert_size", "n_runs", "family_size"):
        df[c] = pd.to_numeric(df[c]).astype("Int64")
    floats = [
        "mean_intact",
        "mean_intervened",
        "effect",
        "ci_low",
        "ci_high",
        "range_low",
        "range_high",
        "p",
        "p_holm",
    ]
    df[floats] = df[floats].apply(pd.to_numeric, errors="coerce").astype(float)
    return df


def _ranks(v: np.ndarray) -> np.ndarray:
    return sps.rankdata(v)


def _pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r of each row of x (P, N) with y (N,)."""
    xc = x - x.mean(-1, keepdims=True)
    yc = y - y.mean()
    return (xc @ yc) / np.sqrt((xc**2).sum(-1) * (yc**2).sum())


def within_run_spearman(
    stat: np.ndarray, effect: np.ndarray, runs: np.ndarray, permutations: int = PERMUTATIONS, seed: int = 0
) -> dict[str, Any]:
    """Does the statistic order the effects *within* runs? rho = the mean over runs of each run's
    Spearman rho (runs with >= 3 points and some spread in both), so a between-run association (a
    run with heavier routing everywhere that also loses more) cannot make it; p = (1 + #|rho*| >=
    |rho|) / (1 + permutations) with the statistic shuffled among each run's own points; the
    interval the 95% t interval over runs of Fisher's z (inference.aggregate_r). rho_pooled: Spearman over all the
    points, descriptive only (it mixes in the between-run association)."""
    out = {"n_points": len(stat), "n_runs": len(set(runs.tolist())), "rho": math.nan, "rho_pooled": math.nan}
    out |= {"ci_low": math.nan, "ci_high": math.nan, "p": math.nan, "permutations": 0, "note": ""}
    if len(stat) >= 3 and np.ptp(stat) > 0 and np.ptp(effect) > 0:
        out["rho_pooled"] = float(sps.spearmanr(stat, effect).statistic)
    groups = []
    for r in dict.fromkeys(runs.tolist()):
        idx = np.flatnonzero(runs == r)
        if len(idx) >= 3 and np.ptp(stat[idx]) > 0 and np.ptp(effect[idx]) > 0:
            groups.append(idx)
    if not groups:
        return out | {"note": "no run with 3 or more experts varying in both: no test"}
    rng = np.random.default_rng(seed)
    per_run, null = [], np.zeros(permutations)
    for idx in groups:
        rx, ry = _ranks(stat[idx]), _ranks(effect[idx])
        per_run.append(float(_pearson(rx[None, :], ry)[0]))
        null += _pearson(rng.permuted(np.tile(rx, (permutations, 1)), axis=1), ry)
    null /= len(groups)
    rho = float(np.mean(per_run))
    p = float((1 + (np.abs(null) >= abs(rho) - 1e-12).sum()) / (1 + permutations))
    out |= {"rho": rho, "p": p, "permutations": permutations, "n_runs": len(groups)}
    agg = aggregate_r(per_run)  # the 95% t interval over runs of Fisher's z, back-transformed
    if isinstance(agg["ci_low"], float) and math.isfinite(agg["ci_low"]):
        out["ci_low"], out["ci_high"] = agg["ci_low"], agg["ci_high"]
    else:
        out["note"] = f"{len(groups)} run(s) tested: no interval over runs"
    return out


def enough_permutations(tests: int) -> int:
    """Within-run permutations for a family of `tests`: at least PERMUTATIONS, and 100 per test, so
    the smallest attainable Holm p, tests / (permutations + 1), is below 0.01 (with 2,000 and 120
    tests it was 0.06: no result could pass, whatever the data)."""
    return max(PERMUTATIONS, 100 * int(tests))


def predict(
    effects: pd.DataFrame,
    statistics: Sequence[str] = STATISTICS,
    permutations: int | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """causal_predict.csv: per (statistic, intervention, metric, expert set), within_run_spearman
    over the (run, layer, expert) points with a finite statistic and effect; Holm over statistics x
    interventions x metrics x expert sets (every test of the table, one that could not run as p = 1;
    family_size). The expert sets:
    "all", and, when some expert is the identity (size 0), its control "sized (identity left
    out)": the identity pathway is a layer's skip connection, often its heaviest expert and the one
    whose removal hurts most, so a prediction carried by it alone is not one about experts.
    permutations None: enough_permutations(the number of tests), so the family can reach Holm
    p < 0.05 at all (a permutation p is at least 1 / (permutations + 1))."""
    rows = []
    combos = effects[["intervention", "metric"]].drop_duplicates() if len(effects) else pd.DataFrame()
    sets = [("all", effects)]
    if len(effects) and "expert_size" in effects and (effects["expert_size"] == 0).any():
        sets.append((SIZED, effects[effects["expert_size"] != 0]))
    if permutations is None:
        permutations = enough_permutations(len(statistics) * len(combos) * len(sets))
    for stat, (experts, chosen) in ((s, e) for s in statistics for e in sets):
        for kind, metric in combos.itertuples(index=False):
            g = chosen[(chosen["intervention"] == kind) & (chosen["metric"] == metric)]
            x, y = g[stat].to_numpy(dtype=float), g["effect"].to_numpy(dtype=float)
            ok = np.isfinite(x) & np.isfinite(y)
            head = {"statistic": stat, "intervention": kind, "metric": metric, "experts": experts}
            if not ok.any() and np.isfinite(y).any():
                reason = f"{stat} is NaN at every point (causal_effects.csv's note says why): no test"
                rows.append(head | {"n_points": 0, "n_runs": 0, "permutations": 0, "note": reason})
                continue
            res = within_run_spearman(x[ok], y[ok], g["run"].astype(str).to_numpy()[ok], permutations, seed)
            rows.append(
                head
                | res
                | {"test": "Spearman rho; p: permutation within runs" if res["permutations"] else ""}
            )
    df = pd.DataFrame(rows, columns=PREDICT_COLUMNS)
    df["p_holm"] = holm_over_asked(df["p"]) if len(df) else []  # a test that cannot run counts as p = 1
    df["family_size"] = len(df)
    for c in ("n_points", "n_runs", "permutations", "family_size"):
        df[c] = pd.to_numeric(df[c]).astype("Int64")
    floats = ["rho", "rho_pooled", "ci_low", "ci_high", "p", "p_holm"]
    df[floats] = df[floats].apply(pd.to_numeric, errors="coerce").astype(float)
    df["note"] = df["note"].fillna("")
    df["test"] = df["test"].fillna("")
    return df


def duplicate_identity(identities: Sequence[tuple[str, Any]]) -> tuple[str, Any] | None:
    """The first (condition, seed) that two runs share (they would count as one replicate twice)."""
    seen = set()
    for ident in identities:
        if ident in seen:
            return ident
        seen.add(ident)
    return None
