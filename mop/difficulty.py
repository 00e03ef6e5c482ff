"""Multi-task difficulty and routing across runs: which level is harder, and does the policy route
more compute to it? Tables in, tables out (and one small JSON cache).

Difficulty, as the MoP paper measures it (Cook et al. 2025): the *learning speed* of a level, the
updates a single-task run of the recipe needs before its training cross-entropy (metrics.jsonl
`train/ce`, logged every log_interval updates) first falls to a threshold (`updates_to_threshold`).
Per level, the median over >= MIN_REPEATS single-task repeats (seeds) of that recipe, with the
distribution-free interval of the median (`median_interval`: order statistics X(k) <= median <=
X(n+1-k), its exact coverage 1 - 2 P(Binomial(n, ½) < k) stated beside it; with fewer than 6
repeats no pair reaches 95%, and the range's coverage is given: 75% at 3, 94% at 5). A repeat that
never reaches the threshold is censored at its last logged update (`censored` counts them; a
median among censored values is a lower bound and says so). Cached per (level, recipe) as
`<cache_root>/_learning_speed/<level>/<condition>.json` (each repeat's number, the threshold, the
run folders); recomputed when the runs or the threshold change (`learning_speed`). Beside it,
the bot path length of the evaluation layouts (routing_analysis.routing_by_level): a walking
distance, not a difficulty (GoToRedBallGrey, BabyAI's easiest, has long paths in a big room).

Ranking (routing_analysis.ranking): a level is named hardest (easiest) only when its interval lies
wholly above (below) every other level's; otherwise no verdict, and the reason. The learning-speed
"hardest" also states its error rate (`hardest_level`, `verdict_error`: a union bound on the
probability that the named level is not the hardest, from the intervals' coverages) and stands
only when that is <= 5%. The verdict's intervals are each level's median interval at
1 - 5%/(levels - 1) (`verdict_confidence`: 97.5% for three levels), so the bound holds at any
number of repeats; with fewer repeats it is "not resolved" and names the repeats needed
(`repeats_needed`: 6 per level for two levels, 7 for three).

Routing against difficulty across runs (`routing_across_runs`): the units are multi-task runs
(trial, seed) of one condition. Per run and level, the mean LPC per step of the level's
evaluation episodes (routing_analysis.clustered_mean); per level the mean over runs with its 95%
t interval (inference.mean_ci); per pair of levels the paired difference across runs (the same
run on both: contrasts.paired_difference), Holm over the pairs.

    speed = learning_speed("BabyAI-GoToLocal-v0", run_dirs, threshold=1.0, cache_root="evaluation_cache")
    routing_analysis.ranking(table, "speed_median", "speed_ci_low", "speed_ci_high")
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from mop.routing_analysis import ranking  # noqa: F401  (the levels' ranking lives with routing_by_level)
from mop.runs import METRICS_FILE, atomic_write_text, safe_name

MIN_REPEATS = 3
CE_KEY = "train/ce"


MAX_ERROR = 0.05  # the largest probability of a wrong "hardest level" a verdict may carry


def verdict_error(coverages: Sequence[float]) -> float:
    """An upper bound on the probability that a "hardest" verdict is wrong, from the coverages of
    the levels' intervals (the named level's first). If another level is as hard (equal true
    medians m), the two intervals can separate only when the named level's lies wholly above m
    or the other's wholly below it; each of an interval's two tails holds at most half its
    non-coverage (the order-statistic interval of the median is symmetric in its ranks), so per
    other level the chance is at most (1 - c_named)/2 + (1 - c_other)/2, summed over the other
    levels (a union bound). 3 repeats per level (the range, 75%): 25% for two levels; 6 (96.9%):
    3.1%."""
    c = [float(v) for v in coverages]
    if len(c) < 2 or not all(math.isfinite(v) for v in c):
        return math.nan
    return float(sum((1 - c[0]) / 2 + (1 - o) / 2 for o in c[1:]))


def verdict_confidence(levels: int) -> float:
    """The coverage each level's interval needs for a "hardest" verdict among `levels` levels to
    keep verdict_error <= MAX_ERROR: the union bound spends (1 - c) per other level, so
    c = 1 - MAX_ERROR / (levels - 1) (95% for two levels, 97.5% for three). Intervals fixed at 95%
    whatever the number of levels made the verdict stricter as repeats grew (at 9 repeats the
    narrowest 95% interval covers 96.1%, a bound of 7.8% for three levels: withheld)."""
    return 1.0 - MAX_ERROR / max(int(levels) - 1, 1)


def hardest_level(
    table: pd.DataFrame,
    value: str,
    low: str,
    high: str,
    coverage: str,
    what: str,
    repeats: Mapping[str, Sequence[float]] | None = None,
) -> dict[str, Any]:
    """ranking(...) whose "hardest" stands only when its error bound (verdict_error over the
    levels' interval coverages) is <= MAX_ERROR; otherwise the hardest is withdrawn and the
    verdict says "not resolved" with the bound and the repeats it needs. With `repeats` (level ->
    its repeats' values, learning_speed's `updates`) the verdict ranks each level's median interval
    at verdict_confidence(levels) (the family is the levels compared), not the table's 95%
    columns, which stay as printed; without it the table's [low, high] and `coverage` decide.
    Keys as ranking's, plus error_bound and confidence (the intervals' level the verdict used)."""
    t = table.dropna(subset=[value, low, high])
    confidence = verdict_confidence(len(t))
    if repeats is not None and len(t) >= 2:
        t = t.copy()
        for i, level in zip(t.index, t["level"]):
            m = median_interval(list(repeats.get(level, ())), confidence)
            t.loc[i, [low, high, coverage]] = [m["ci_low"], m["ci_high"], m["coverage"]]
        t = t.dropna(subset=[value, low, high])
    out = ranking(t, value, low, high, what)
    out["error_bound"] = math.nan
    out["confidence"] = confidence if repeats is not None else math.nan
    if out["hardest"] is None:
        return out
    named = t[t["level"] == out["hardest"]]
    rest = t[t["level"] != out["hardest"]]
    bound = verdict_error([*named[coverage], *rest[coverage]])
    out["error_bound"] = bound
    if not (bound <= MAX_ERROR):
        out["verdict"] = (
            f"by {what}: hardest not resolved ({out['hardest']}'s interval separates, but with these "
            f"repeats a wrong 'hardest' has probability up to {bound:.0%} > {MAX_ERROR:.0%}: "
            f"needs {repeats_needed(len(t))} repeats per level)"
        )
        out["hardest"] = None
    else:
        shown = "" if repeats is None else f" (each level's {confidence:.1%} interval of the median)"
        out["verdict"] += f"{shown}; a wrong 'hardest' has probability <= {bound:.1%}"
    return out


def learning_speed_verdict(
    table: pd.DataFrame, repeats: Mapping[str, Sequence[float]] | None
) -> dict[str, Any]:
    """hardest_level on stats.py's by_level.csv speed columns (speed_median, speed_ci_low/high,
    speed_coverage), each level's repeats (learning_speed's `updates`) setting the verdict's
    intervals: difficulty.json's `learning_speed`."""
    return hardest_level(
        table,
        "speed_median",
        "speed_ci_low",
        "speed_ci_high",
        "speed_coverage",
        "learning speed",
        repeats=repeats,
    )


def repeats_needed(levels: int) -> int:
    """The fewest repeats per level whose median intervals, at verdict_confidence(levels), keep
    verdict_error <= MAX_ERROR (6 for two levels, 7 for three)."""
    levels = max(levels, 2)
    for n in range(2, 200):
        c = median_interval(list(range(n)), verdict_confidence(levels))["coverage"]
        if verdict_error([c] * levels) <= MAX_ERROR:
            return n
    return 200


# ----------------------------------------------------------------------------- learning speed


def updates_to_threshold(
    rows: Sequence[Mapping[str, Any]], threshold: float, key: str = CE_KEY
) -> tuple[int, bool]:
    """(update, reached): the first logged update whose `key` is <= threshold, or the last logged
    update and False (censored) when it never is. ValueError when no row logs `key`."""
    logged = [
        (int(r["update"]), float(r[key])) for r in rows if key in r and "update" in r and r[key] is not None
    ]
    if not logged:
        raise ValueError(f"no {key} logged")
    for update, value in sorted(logged):
        if value <= threshold:
            return update, True
    return max(u for u, _ in logged), False


def median_interval(values: Sequence[float], confidence: float = 0.95) -> dict[str, Any]:
    """Median and its distribution-free interval (X(k), X(n+1-k)): the largest k whose coverage
    1 - 2 P(B < k), B ~ Binomial(n, ½), is >= confidence, else k = 1 (the range) with its smaller
    coverage. Keys: n, median, ci_low, ci_high, coverage."""
    x = np.sort(np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float))
    n = len(x)
    if n == 0:
        return {"n": 0, "median": math.nan, "ci_low": math.nan, "ci_high": math.nan, "coverage": math.nan}
    best = 1
    for k in range(1, (n + 1) // 2 + 1):
        if 1 - 2 * sps.binom.cdf(k - 1, n, 0.5) >= confidence:
            best = k
    coverage = float(1 - 2 * sps.binom.cdf(best - 1, n, 0.5)) if n > 1 else 0.0
    return {
        "n": n,
        "median": float(np.median(x)),
        "ci_low": float(x[best - 1]),
        "ci_high": float(x[n - best]),
    } | {"coverage": coverage}


def _read_rows(run_dir: Path) -> list[dict]:
    from mop.experiment import read_metrics

    return read_metrics(run_dir / METRICS_FILE)


def learning_speed(
    level: str,
    run_dirs: Sequence[str | Path],
    threshold: float,
    condition: str | None = None,
    cache_root: str | Path | None = None,
) -> dict[str, Any]:
    """One level's learning speed from its single-task repeats (run folders with metrics.jsonl):
    level, repeats, updates (per run), censored, speed_median, speed_ci_low, speed_ci_high,
    speed_coverage, threshold; cached per (level, condition) under cache_root (see the module
    docstring). Fewer than MIN_REPEATS repeats: the numbers are NaN and `note` says why."""
    runs = sorted(Path(d).as_posix() for d in run_dirs)
    cache = None
    if cache_root is not None and condition is not None:
        cache = (
            Path(cache_root)
            / "_learning_speed"
            / safe_name(level, "level")
            / f"{safe_name(condition, 'condition')}.json"
        )
        try:
            doc = json.loads(cache.read_text())
            if doc.get("runs") == runs and doc.get("threshold") == threshold:
                return doc
        except (OSError, ValueError, RecursionError):
            pass
    updates, censored = [], 0
    for d in runs:
        try:
            update, reached = updates_to_threshold(_read_rows(Path(d)), threshold)
        except (OSError, ValueError):
            continue
        updates.append(update)
        censored += not reached
    out: dict[str, Any] = {"level": level, "condition": condition, "threshold": threshold, "runs": runs}
    out |= {"repeats": len(updates), "updates": updates, "censored": censored}
    if len(updates) < MIN_REPEATS:
        out |= {"speed_median": math.nan, "speed_ci_low": math.nan, "speed_ci_high": math.nan}
        out |= {
            "speed_coverage": math.nan,
            "note": f"{len(updates)} single-task repeat(s): the median needs {MIN_REPEATS}",
        }
    else:
        m = median_interval(updates)
        out |= {"speed_median": m["median"], "speed_ci_low": m["ci_low"], "speed_ci_high": m["ci_high"]}
        out |= {"speed_coverage": m["coverage"]}
        if censored:
            out["note"] = (
                f"{censored} repeat(s) never reached ce <= {threshold:g}: counted at their last update (a lower bound)"
            )
    if cache is not None:
        atomic_write_text(cache, json.dumps(out, indent=1) + "\n")
    return out


def single_task_runs(roots: Sequence[str | Path], level: str, recipe: Mapping[str, Any]) -> list[Path]:
    """Run folders under the roots, trained on `level` alone, whose recipe (mop.conditions) is
    `recipe` but for task_id and task_weights (the single-task repeats of a multi-task recipe)."""
    from mop import conditions
    from mop.runs import read_run_config

    want = {k: v for k, v in recipe.items() if k not in ("task_id", "task_weights")}
    found = []
    for root in roots:
        base = Path(root) / level
        for config_path in sorted(base.glob("trial_*/**/config.json")) if base.is_dir() else []:
            config = read_run_config(config_path.parent)
            if config is None or config.get("task_id") != level:
                continue
            rec = conditions.recipe(config)
            if {k: v for k, v in rec.items() if k not in ("task_id", "task_weights")} == want:
                found.append(config_path.parent)
    return found


# ----------------------------------------------------------------------------- routing across runs


def routing_across_runs(
    episodes: Mapping[tuple[Any, Any], Mapping[str, pd.DataFrame]],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per level, per pair of levels) from {run: {level: its evaluation episodes}} of one
    condition's multi-task runs. Per level: runs, lpc (mean over runs of each run's mean LPC per
    step), lpc_ci_low/high (95% t over runs, clipped at 0: lpc_clipped says where), success
    (mean over runs). Per pair: the paired
    difference B - A of the runs' LPC (contrasts.paired_difference), p_holm over the pairs."""
    from mop.contrasts import paired_difference
    from mop.inference import holm, mean_ci
    from mop.routing_analysis import clustered_mean

    per_run: dict[str, dict[Any, float]] = {}
    success: dict[str, list[float]] = {}
    for run, levels in episodes.items():
        for level, ep in levels.items():
            mean, _, _ = clustered_mean(ep["mean_lpc"].to_numpy(float), ep["length"].to_numpy(float))
            per_run.setdefault(level, {})[run] = mean
            success.setdefault(level, []).append(float(ep["success"].fillna(False).astype(bool).mean()))
    rows = []
    for level, values in per_run.items():
        ci = mean_ci(list(values.values()))
        low, high = ci["ci_low"], ci["ci_high"]
        clipped = isinstance(low, float) and math.isfinite(low) and low < 0.0
        if clipped:  # LPC is >= 0: the t interval is cut there and says so
            low = 0.0
        rows.append({"level": level, "runs": ci["n"], "lpc": ci["mean"], "lpc_ci_low": low}
                    | {"lpc_ci_high": high, "lpc_bounds": "[0, inf)", "lpc_clipped": clipped}
                    | {"lpc_assumes": ci["assumes"]}
                    | {"success": float(np.mean(success[level]))})  # fmt: skip
    levels = list(per_run)
    pairs = []
    for i, a in enumerate(levels):
        for b in levels[i + 1 :]:
            shared = sorted(set(per_run[a]) & set(per_run[b]), key=str)
            d = paired_difference(
                [per_run[a][r] for r in shared], [per_run[b][r] for r in shared], "mean_lpc"
            )
            pairs.append({"level_a": a, "level_b": b, "runs": d["n"], "lpc_a": d["mean_a"], "lpc_b": d["mean_b"]}
                         | {"difference": d["estimate"], "ci_low": d["ci_low"], "ci_high": d["ci_high"], "p": d["p"]}
                         | {"assumes": d["assumes"]})  # fmt: skip
    pair_df = pd.DataFrame(pairs)
    if len(pair_df):
        pair_df["p_holm"] = holm(pair_df["p"])
    return pd.DataFrame(rows), pair_df


def routing_time_course(
    episodes: Mapping[Any, Mapping[tuple[Any, Any], Mapping[str, pd.DataFrame]]],
) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(per (update, level), per (update, pair of levels), notes) from {update: {run: {level:
    episodes}}} of one condition's multi-task runs: routing_across_runs at each update that every
    run of the condition has (an update some run lacks is left out, and a note names it: runs at
    different updates are never pooled). The pairs' Holm family is the whole time course (updates
    x pairs of levels), since looking at several updates is several tests; `family` says so."""
    from mop.inference import holm

    runs = set().union(*(set(by_run) for by_run in episodes.values())) if episodes else set()
    levels_rows, pair_rows, notes = [], [], []
    for update in sorted(episodes, key=float):
        by_run = episodes[update]
        if set(by_run) != runs:
            missing = sorted(runs - set(by_run), key=str)
            notes.append(f"update {update}: left out, not evaluated for run(s) {missing}")
            continue
        levels, pairs = routing_across_runs(by_run)
        levels_rows.append(levels.assign(update=update))
        if len(pairs):
            pair_rows.append(pairs.drop(columns="p_holm").assign(update=update))
    levels_df = pd.concat(levels_rows, ignore_index=True) if levels_rows else pd.DataFrame()
    pairs_df = pd.concat(pair_rows, ignore_index=True) if pair_rows else pd.DataFrame()
    if len(pairs_df):
        pairs_df["p_holm"] = holm(pairs_df["p"])
        n_updates = pairs_df["update"].nunique()
        pairs_df["family"] = (
            f"Holm over the time course: {n_updates} update(s) x "
            f"{len(pairs_df) // max(n_updates, 1)} pair(s) of levels = {len(pairs_df)} tests"
        )
    for df in (levels_df, pairs_df):
        if len(df):
            df.insert(0, "update", df.pop("update"))
    return levels_df, pairs_df, notes
