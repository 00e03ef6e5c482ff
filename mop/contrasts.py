"""Contrasts between conditions and knockouts, with runs as the units: tables in, tables out.

Input: the seed-metrics table stats.py builds (one row per checkpoint, with its `condition` and
`recipe`; mop.inference.with_conditions), the results CSV (mop.results) for knockouts, and the
routing caches' episodes tables (`seed`, `success` per evaluation layout) for the exact tests.
Nothing is read from disk here but those episodes tables (`layout_outcomes`), nothing written.

Contrasts (`contrast_pairs`, `contrasts`). Two conditions are compared when they differ in the
factors asked for and in nothing else (mop.conditions.extra_keys; with policy_type among the
factors, the keys only one policy has go with it); any other pair is refused in one line naming
the keys it also differs in. Runs are paired by seed: the same seed in both conditions, compared
at the same update (a pair at different updates is refused: pass --update), on the same
evaluation layouts (the results' num_episodes N: layouts 0..N-1). Per metric, the per-seed
difference d = B - A (success rate: in rate; path ratio: of the logs, reported as the ratio B/A;
LPC and policy complexity: as they are); across seeds the mean d, its 95% t interval and the
one-sample t-test of d against 0 (scipy.stats.ttest_1samp), Holm over the pairs x metrics asked. Fewer
than two shared seeds: refused (ContrastError), a mean of one difference has no interval.
For success, beside it, an exact paired test per seed pair on the shared layouts (`exact_paired`):
McNemar's exact test, the two-sided binomial test of the discordant layouts (A solved and B not,
against B solved and A not) at probability ½ (scipy.stats.binomtest); Holm over that table.

Knockouts (`knockout_pairs`): one unit per run, the run's final checkpoint (or --update), never
every checkpoint of it (checkpoints of one run are not independent replicates): per (condition,
knockout, metric) the paired difference knockout - none across runs with its 95% t interval and
p, Holm over the table; per run, the exact paired test of its two evaluations on the shared
layouts (`knockout_layouts`).

    from mop import contrasts, inference
    table = inference.with_conditions(pd.read_csv("stats/gotolocal/seed_metrics.csv"))
    pairs = contrasts.contrast_pairs(table, ["lpc_alpha"])
    contrasts.contrasts(table, pairs)                         # per (pair, metric): d, CI, p, Holm
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from mop import conditions
from mop.inference import (
    NO_INFERENCE,
    ROUNDING,
    StatsError,
    equivalence_verdict,
    final_rows,
    holm,
    holm_over_asked,
    tost_paired,
    with_conditions,
)
from mop.lmc_stats import t_test


class ContrastError(StatsError):
    """A contrast that cannot be made as asked (one line)."""


# How each metric's per-seed difference is taken, and how it is shown: (to scale, back, name).
DIFFERENCE = {
    "success_rate": (lambda v: v, lambda d: d, "difference"),
    "mean_lpc": (lambda v: v, lambda d: d, "difference"),
    "policy_complexity": (lambda v: v, lambda d: d, "difference"),
    "path_ratio": (np.log, np.exp, "ratio"),
}


# The range the difference B - A of each metric can take (its interval is clipped to it; the
# table's `bounds` column says so): a success rate is in [0, 1], so its difference in [-1, 1].
DIFFERENCE_BOUNDS = {"success_rate": (-1.0, 1.0), "mean_lpc": (-math.inf, math.inf)}
DIFFERENCE_BOUNDS |= {"policy_complexity": (-math.inf, math.inf), "path_ratio": (0.0, math.inf)}


def bounds_text(low: float, high: float) -> str:
    """'[-1, 1]', '[0, inf)', '(-inf, inf)': the range an interval is clipped to."""
    left = "(-inf" if low == -math.inf else f"[{low:g}"
    right = "inf)" if high == math.inf else f"{high:g}]"
    return f"{left}, {right}"


# ----------------------------------------------------------------------------- which pairs


def recipes_of(table: pd.DataFrame) -> dict[str, dict]:
    """{condition id: recipe} of the table's rows (its `recipe` JSON column)."""
    if "recipe" not in table.columns:
        raise ContrastError(
            "this table has no recipes (built before conditions existed): rebuild it with --force"
        )
    known = table[table["condition"].notna() & table["recipe"].notna()]
    return {cid: json.loads(text) for cid, text in zip(known["condition"], known["recipe"])}


def _order(table: pd.DataFrame) -> list[str]:
    first = (
        table[table["condition"].notna()].groupby("condition")["trial"].min().astype("Float64").fillna(-1.0)
    )
    return sorted(first.index, key=lambda c: (float(first[c]), str(c)))


def contrast_pairs(
    table: pd.DataFrame, factors: Sequence[str], pair: tuple[str, str] | None = None
) -> list[tuple[str, str, list[str]]]:
    """(A, B, factors) for every two conditions of the table that differ in `factors` and in
    nothing else, A the one of the earlier first trial; or the one `pair` asked for, refused when
    it differs in other keys too (ContrastError naming them) or in none of the factors."""
    factors = conditions.check_factors(factors)
    recipes = recipes_of(table)
    order = [c for c in _order(table) if c in recipes]
    if pair is not None:
        a, b = pair
        for c in (a, b):
            if c not in recipes:
                raise ContrastError(f"no condition {c!r} in this table (its conditions: {', '.join(order)})")
        extra = conditions.extra_keys(recipes[a], recipes[b], factors)
        if extra:
            raise ContrastError(
                f"{a} and {b} differ in {', '.join(extra)} besides {', '.join(factors)}: "
                "not a contrast of those factors (add them to the factors, or compare other conditions)"
            )
        if not conditions.differing_keys([recipes[a], recipes[b]]):
            raise ContrastError(f"{a} and {b} are one recipe: nothing to contrast")
        return [(a, b, factors)]
    out, closest = [], None
    for i, a in enumerate(order):
        for b in order[i + 1 :]:
            diff = conditions.differing_keys([recipes[a], recipes[b]])
            extra = conditions.extra_keys(recipes[a], recipes[b], factors)
            if not any(f in diff for f in factors):
                continue
            if not extra:
                out.append((a, b, factors))
            elif closest is None or len(extra) < len(closest[2]):
                closest = (a, b, extra)
    if not out:
        varies = any(len({json.dumps(r.get(f)) for r in recipes.values()}) > 1 for f in factors)
        if not varies:
            raise ContrastError(
                f"{', '.join(factors)} does not vary between this table's conditions: nothing to contrast"
            )
        hint = (
            f" (the closest pair, {closest[0]} and {closest[1]}, also differs in {', '.join(closest[2])})"
            if closest
            else ""
        )
        raise ContrastError(f"no two conditions differ in {', '.join(factors)} alone{hint}")
    return out


# ----------------------------------------------------------------------------- exact tests


def exact_paired(a: Sequence[bool], b: Sequence[bool]) -> dict[str, Any]:
    """McNemar's exact test of two paired binary outcomes (the same layouts): counts both / a_only
    / b_only / neither and p = the two-sided binomial test of a_only against a_only + b_only at ½
    (1 when no layout is discordant)."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    out = {
        "layouts": len(a),
        "both": int((a & b).sum()),
        "a_only": int((a & ~b).sum()),
        "b_only": int((~a & b).sum()),
        "neither": int((~a & ~b).sum()),
    }
    out["p_exact"] = sign_test_p(out["a_only"], out["b_only"])
    return out


def sign_test_p(a_only: int, b_only: int) -> float:
    """Two-sided exact binomial p of a_only out of a_only + b_only at ½ (McNemar's exact test; 1
    with no discordant pair): scipy.stats.binomtest's sum for p = ½, the two tails of the symmetric
    distribution, with the same functions (binom.cdf, binom.sf), so the same float, ~5x faster."""
    n = a_only + b_only
    low = min(a_only, b_only)
    if n == 0 or 2 * low == n:
        return 1.0
    return float(min(1.0, sps.binom.cdf(low, n, 0.5) + sps.binom.sf(n - low - 1, n, 0.5)))


def exact_paired_by_group(
    a: Sequence[bool], b: Sequence[bool], groups: Sequence[str]
) -> list[dict[str, Any]]:
    """exact_paired overall ("all", its p on its own) and, with two or more groups, per group in
    sorted order, Holm over the groups' p; each dict gains `group` and `p` (the p to print)."""
    a, b, groups = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool), np.asarray(groups)
    names = sorted(set(groups.tolist()))
    parts = [("all", np.ones(len(a), bool))] + ([(g, groups == g) for g in names] if len(names) > 1 else [])
    tests = [exact_paired(a[m], b[m]) | {"group": g} for g, m in parts]
    adjusted = [tests[0]["p_exact"], *holm([t["p_exact"] for t in tests[1:]])]
    return [t | {"p": float(p)} for t, p in zip(tests, adjusted)]


def layout_outcomes(cache_path: Any) -> pd.Series | None:
    """success per evaluation layout seed of one cache (its episodes table), None when the cache
    does not record them (the earlier system's caches) or cannot be read."""
    from mop.routing_cache import CacheError, load_cache

    if not isinstance(cache_path, str) or not Path(cache_path).exists():
        return None
    try:
        episodes = load_cache(cache_path).episodes
    except CacheError:
        return None
    if not {"seed", "success"} <= set(episodes.columns) or episodes["success"].isna().any():
        return None
    return pd.Series(episodes["success"].astype(bool).to_numpy(), index=episodes["seed"].to_numpy())


def paired_layouts(a: pd.Series | None, b: pd.Series | None) -> dict[str, Any]:
    """exact_paired on the layout seeds both evaluations played; why not, where they cannot be
    paired."""
    if a is None or b is None:
        return {"p_exact": "no per-layout outcomes in a cache: no exact test"}
    shared = a.index.intersection(b.index)
    if len(shared) == 0:
        return {"p_exact": "no shared evaluation layouts: no exact test"}
    return exact_paired(a.loc[shared].to_numpy(), b.loc[shared].to_numpy())


# ----------------------------------------------------------------------------- contrasts


# What the paired t interval and test rest on (the `assumes` column; inference.ASSUMES for one arm):
# the pairs' differences spread normally on the difference scale.
PAIRED_ASSUMES = {
    "difference": "paired t: the pairs' differences spread normally",
    "ratio": "paired t: the pairs' log ratios spread normally",
}


def paired_difference(a: Any, b: Any, metric: str, margin: float | None = None) -> dict[str, Any]:
    """Per-pair d = B - A on the metric's difference scale (DIFFERENCE): n, mean_a, mean_b,
    estimate (mean d, shown back: a difference, or the ratio B/A of geometric means), its 95% t
    interval clipped to what the difference can be (DIFFERENCE_BOUNDS; `bounds`, and `clipped`
    when it was), p (t-test of d against 0), scale. n = 1: NO_INFERENCE in the interval and p.
    margin: also the paired TOST of d at ±margin (on the difference scale: the log ratio for
    path_ratio): tost_p, and `verdict` ("equivalent within ±m" only when TOST rejects)."""
    out = _paired_difference(a, b, metric)
    low, high = DIFFERENCE_BOUNDS[metric]
    out["bounds"] = bounds_text(low, high)
    out["clipped"] = False
    if isinstance(out.get("ci_low"), float) and math.isfinite(out["ci_low"]):
        clipped = (max(out["ci_low"], low), min(out["ci_high"], high))
        out["clipped"] = clipped != (out["ci_low"], out["ci_high"])
        out["ci_low"], out["ci_high"] = clipped
    if margin is not None:
        forward, _, _ = DIFFERENCE[metric]
        a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
        ok = np.isfinite(a) & np.isfinite(b) & (((a > 0) & (b > 0)) if metric == "path_ratio" else True)
        with np.errstate(divide="ignore", invalid="ignore"):
            test = tost_paired(forward(b[ok]) - forward(a[ok]), margin)
        out |= {"margin": margin, "tost_p": test["p"], "verdict": equivalence_verdict(test)}
    return out


def _paired_difference(a: Any, b: Any, metric: str) -> dict[str, Any]:
    forward, back, scale = DIFFERENCE[metric]
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    ok = np.isfinite(a) & np.isfinite(b)
    if scale == "ratio":
        ok &= (a > 0) & (b > 0)
    a, b = a[ok], b[ok]
    n = len(a)
    out = {"n": n, "mean_a": float(a.mean()) if n else math.nan, "mean_b": float(b.mean()) if n else math.nan}
    out |= {"scale": scale, "assumes": ""}  # what the t interval rests on, where one is given
    if n == 0:
        return out | {"estimate": math.nan, "ci_low": math.nan, "ci_high": math.nan, "p": "no pair measured"}
    d = forward(b) - forward(a)
    out["estimate"] = float(back(d.mean()))
    if n == 1:
        return out | {"ci_low": NO_INFERENCE, "ci_high": NO_INFERENCE, "p": NO_INFERENCE}
    if float(np.ptp(d)) <= ROUNDING * max(
        1.0, float(np.abs(forward(a)).max()), float(np.abs(forward(b)).max())
    ):
        # every pair the same difference, up to float rounding (a homogeneous layout's LPC is one
        # constant): the t statistic is undefined or would test rounding noise
        return out | {
            "ci_low": "no spread: no test",
            "ci_high": "no spread: no test",
            "p": "no spread: no test",
        }
    low, high, p = t_test(d)
    return (
        out
        | {"ci_low": float(back(low)), "ci_high": float(back(high)), "p": p}
        | {"assumes": PAIRED_ASSUMES[scale]}
    )


def missing_seeds(runs: pd.DataFrame, a: str, b: str) -> str:
    """One line naming the seeds only one arm has ('' when both have the same seeds): those runs
    have no partner and are left out of the paired contrast."""
    sa = set(runs.loc[runs["condition"] == a, "seed"].dropna().astype(int))
    sb = set(runs.loc[runs["condition"] == b, "seed"].dropna().astype(int))
    parts = [
        f"seed {', '.join(map(str, sorted(x - y)))} only in {c}"
        for c, x, y in ((a, sa, sb), (b, sb, sa))
        if x - y
    ]
    return "; ".join(parts) + " (unpaired: left out)" if parts else ""


def _paired_runs(runs: pd.DataFrame, a: str, b: str, update: int | None) -> pd.DataFrame:
    """The runs of A and B paired by seed (columns <metric>_a, <metric>_b, ...); ContrastError
    for runs compared at different updates or fewer than two shared seeds."""
    left, right = runs[runs["condition"] == a], runs[runs["condition"] == b]
    both = left.merge(right, on="seed", suffixes=("_a", "_b")).sort_values("seed", kind="stable")
    late = both[both["update_a"].astype("Float64") != both["update_b"].astype("Float64")]
    if len(late) and update is not None:
        s = late.iloc[0]
        raise ContrastError(
            f"seed {s['seed']}: {a} is at update {s['update_a']}, {b} at {s['update_b']}: runs are compared "
            "at one update (pass --update)"
        )
    if len(both) < 2:
        raise ContrastError(
            f"{a} and {b} share {len(both)} seed(s) ({', '.join(map(str, both['seed']))}): a contrast "
            "pairs runs by seed and needs two or more"
        )
    return both


def _same_update(runs: pd.DataFrame, a: str, b: str) -> pd.DataFrame:
    """The runs of A and B at the newest update all of them have (each condition alone may be
    at a later one: a contrast compares both at one update); ContrastError when they share none."""
    from mop.inference import common_update

    two = runs[runs["condition"].isin([a, b])]
    u, why = common_update(two)
    if why:
        raise ContrastError(f"{a} and {b}: {why}: runs are compared at one update (pass --update)")
    return two[two["update"].astype("Float64").fillna(-1.0) == u]


def contrasts(
    table: pd.DataFrame,
    pairs: list[tuple[str, str, list[str]]],
    update: int | None = None,
    outcomes: Callable[[Any], pd.Series | None] = layout_outcomes,
    margins: dict[str, float] | None = None,
    notes: list[str] | None = None,
    metrics: Sequence[str] | None = None,
    asked: str = "",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(contrasts, network_pairs). contrasts: per (pair, metric) paired_difference across seeds
    (the unit: a seed, one run per arm), at one `update` (a column: the given one, else the newest
    both conditions' runs have); Holm over ONE family fixed by the question: the pairs asked for
    (`asked` says how they were asked: named pairs, or every pair of the conditions present that
    differs only in the factors) x `metrics` (default every contrast metric, DIFFERENCE), a
    metric a run did not measure included (its test counts, its p stays text, as unmeasured). The
    `family` column says which. A seed only one arm has is named in the
    row's `note` (and in `notes`); margins {metric: m}: the TOST verdict at ±m. network_pairs: per
    (pair, seed) McNemar's exact test of the two trained networks on their shared layouts: a test
    of two networks, not of the recipes (two runs of one recipe differ by it too), p_holm over
    that table alone."""
    table = with_conditions(table)
    margins = margins or {}
    notes = notes if notes is not None else []
    family_metrics = check_metrics(metrics)
    known = table[table["condition"].notna()]
    labels = dict(zip(table["condition"], table["condition_label"]))
    rows, exact = [], []
    for a, b, factors in pairs:
        if update is None:
            runs = _same_update(known, a, b)
        else:
            runs = known[known["update"] == update]
        from mop.inference import check_replicates

        check_replicates(runs)
        both = _paired_runs(runs, a, b, update)
        note = missing_seeds(runs, a, b)
        if note:
            notes.append(f"contrast {a} vs {b}: {note}")
        head = {"factors": ",".join(factors), "condition_a": a, "label_a": labels[a], "condition_b": b}
        head |= {"label_b": labels[b], "seeds": ",".join(str(s) for s in both["seed"])}
        head["update"] = both["update_a"].iloc[0]
        episodes = both.get("num_episodes_a", pd.Series(dtype=float)).astype("Float64")
        same = bool((episodes == both.get("num_episodes_b", pd.Series(dtype=float)).astype("Float64")).all())
        for metric in family_metrics:
            row = head | {"metric": metric}
            row |= paired_difference(both[f"{metric}_a"], both[f"{metric}_b"], metric, margins.get(metric))
            if both[f"{metric}_a"].isna().all() or both[f"{metric}_b"].isna().all():
                row["p"] = f"{metric} not measured in {a if both[f'{metric}_a'].isna().all() else b}"
            row["same_layouts"] = same if metric == "success_rate" else None
            row["unit"] = "seed (one run per arm)"
            row["missing"] = note
            rows.append(row)
        for r in both.itertuples(index=False):
            pairing = paired_layouts(outcomes(r.cache_path_a), outcomes(r.cache_path_b))
            exact.append(head | {"seed": r.seed, "update": r.update_a} | pairing)
    out = pd.DataFrame(rows)
    out["p_holm"] = holm_over_asked(out["p"]) if len(out) else []
    if len(out):
        how = f" ({asked})" if asked else ""
        out["family"] = (
            f"Holm over the contrasts asked: {len(pairs)} pair(s){how} x {len(family_metrics)} metric(s) "
            f"({', '.join(family_metrics)}) = {len(out)} tests"
        )
        for i, r in out.iterrows():
            if "verdict" not in out or not isinstance(r.get("verdict"), str):
                out.loc[i, "verdict"] = _verdict_without_margin(r)
            elif isinstance(r["p_holm"], float) and r["p_holm"] < 0.05:
                out.loc[i, "verdict"] = "differs (Holm p < 0.05)"
    exact_df = pd.DataFrame(exact)
    if len(exact_df):
        exact_df["p_holm"] = holm(exact_df["p_exact"])
        exact_df["test"] = "McNemar exact: two trained networks on their shared layouts (not a recipe test)"
    return out, exact_df


def check_metrics(metrics: Sequence[str] | None) -> list[str]:
    """The contrast family's metrics (default every one of DIFFERENCE, in its order); ContrastError
    naming a metric contrasts do not test, or an empty or repeated list."""
    if metrics is None:
        return list(DIFFERENCE)
    names = [str(m).strip() for m in metrics]
    unknown = [m for m in names if m not in DIFFERENCE]
    if unknown or not names:
        raise ContrastError(
            f"--metrics: {', '.join(map(repr, unknown)) or 'no metric'} is not a contrast metric "
            f"(one or more of {', '.join(DIFFERENCE)})"
        )
    if len(set(names)) < len(names):
        raise ContrastError(f"--metrics names a metric twice: {', '.join(names)}")
    return names


def _verdict_without_margin(row: pd.Series) -> str:
    p = row.get("p_holm")
    if isinstance(p, float) and math.isfinite(p) and p < 0.05:
        return "differs (Holm p < 0.05)"
    return "not resolved (no --margin: no equivalence test)"


# ----------------------------------------------------------------------------- knockouts

KNOCKOUT_COLUMNS = [
    "condition",
    "condition_label",
    "lpc_alpha",
    "knockout",
    "metric",
    "n",
    "mean_none",
    "mean_knockout",
    "difference",
    "ci_low",
    "ci_high",
    "p",
    "units",
    "assumes",
]


def knockout_pairs(
    results: pd.DataFrame,
    task_id: str,
    table: pd.DataFrame,
    update: int | None = None,
    outcomes: Callable[[Any], pd.Series | None] = layout_outcomes,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(knockouts, per-run exact tests). Units: one checkpoint per run of `table` (final_rows:
    its last, or `update`), its default evaluation (the table's cache) against the results CSV's
    knockout rows of the same checkpoint. Per (condition, knockout, metric): the paired
    difference knockout - none across runs (paired_difference), Holm over the table. Per (run,
    knockout): the exact paired test of success on the shared layouts, Holm over that table.
    A knockout test that cannot run counts in the family as p = 1 (inference.holm_over_asked)."""
    empty = pd.DataFrame(columns=[*KNOCKOUT_COLUMNS, "p_holm", "family"])
    if results.empty or "knockout" not in results or "condition" not in table:
        return empty, pd.DataFrame()
    rows = results[(results["task_id"] == task_id) & (results["eval_task_id"].fillna(task_id) == task_id)]
    if "trained_tasks" in rows.columns:  # single-task runs only (multi-task rows name their level)
        rows = rows[rows["trained_tasks"].isna()]
    own = rows[rows["knockout"] == "none"]
    by_cache = dict(zip(own["cache_path"].astype(str), own["checkpoint_path"]))
    # the same run and update, where the cache folder was named with another spelling of the root
    by_run = {
        tuple(None if pd.isna(v) else int(v) for v in key): path
        for key, path in zip(own[["trial", "seed", "update"]].itertuples(index=False), own["checkpoint_path"])
    }
    knocked = rows[rows["knockout"] != "none"]
    runs = final_rows(with_conditions(table[table["condition"].notna()]), update)
    pairs, exact = [], []
    for r in runs.itertuples(index=False):
        key = tuple(None if pd.isna(v) else int(v) for v in (r.trial, r.seed, r.update))
        checkpoint = by_cache.get(str(r.cache_path), by_run.get(key))
        if checkpoint is None:
            continue
        for ko in knocked[knocked["checkpoint_path"] == checkpoint].itertuples(index=False):
            pairs.append({"condition": r.condition, "condition_label": r.condition_label, "lpc_alpha": r.lpc_alpha,
                          "knockout": ko.knockout, "run": f"trial {r.trial} seed {r.seed}", "update": r.update,
                          "success_none": r.success_rate, "success_knockout": ko.success_rate,
                          "mean_lpc_none": r.mean_lpc, "mean_lpc_knockout": ko.mean_lpc})  # fmt: skip
            exact.append(
                {k: pairs[-1][k] for k in ("condition", "condition_label", "knockout", "run", "update")}
                | paired_layouts(outcomes(r.cache_path), outcomes(getattr(ko, "cache_path", None)))
            )
    out = []
    frame = pd.DataFrame(pairs)
    for (cid, knockout), group in frame.groupby(["condition", "knockout"], sort=False) if len(frame) else []:
        for metric in ("success_rate", "mean_lpc"):
            key = "success" if metric == "success_rate" else metric
            d = paired_difference(group[f"{key}_none"], group[f"{key}_knockout"], metric)
            out.append(
                {"condition": cid, "condition_label": group["condition_label"].iloc[0]}
                | {
                    "lpc_alpha": group["lpc_alpha"].iloc[0],
                    "knockout": knockout,
                    "metric": metric,
                    "n": d["n"],
                }
                | {"mean_none": d["mean_a"], "mean_knockout": d["mean_b"], "difference": d["estimate"]}
                | {
                    "ci_low": d["ci_low"],
                    "ci_high": d["ci_high"],
                    "p": d["p"],
                    "units": "runs (one checkpoint each)",
                    "assumes": d["assumes"],
                }
            )
    df = pd.DataFrame(out, columns=KNOCKOUT_COLUMNS)
    # one rule for every family (inference.holm_over_asked, as the contrasts and causal.py): a test
    # that cannot run (one run, no spread) counts as p = 1 and gets no adjusted p of its own
    df["p_holm"] = holm_over_asked(df["p"]) if len(df) else []
    df["family"] = (
        f"Holm over this table: {len(df)} (condition, knockout, metric) tests asked, "
        f"{int(df['p_holm'].notna().sum()) if len(df) else 0} of them run (the others count as p = 1)"
    )
    exact_df = pd.DataFrame(exact)
    if len(exact_df) and "p_exact" in exact_df:
        exact_df["p_holm"] = holm(exact_df["p_exact"])
    return df, exact_df
