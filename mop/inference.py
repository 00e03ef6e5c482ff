"""Inference across runs: from a table of per-run numbers to means, intervals, tests and Holm.

The statistics half of stats.py, on tables only (no cache reading, no matplotlib, nothing written).
Its input is the seed-metrics table stats.py builds (one row per (trial, seed, update) checkpoint:
lpc_alpha, the SCALARS metrics, r_<phase>_<correlation> per phase) and, for knockouts, the results
CSV (mop.results). Its outputs are the tables stats.py writes and the aggregates its figures draw
(mop.stats_plots takes them as arguments).

Units and choices (stats.py's --help says the same at length):
- Units are runs (trial, seed) at one update (`final_rows`: the given update, else each run's
  last); checkpoints of one run are never pooled as replicates.
- Conditions: a run's resolved recipe (mop.conditions; the table's `condition` id and `recipe`
  JSON columns): every table is per condition, and runs of different recipes are never pooled
  (`runs_by_condition`; labels name the keys in which the table's conditions differ). A table
  from before conditions existed groups by lpc_alpha (`with_conditions`).
- Correlations: r clipped to ±CLIP, z = artanh(r); one-sample t-test of the runs' z against 0 and
  the 95% t interval of mean z, back-transformed with tanh (`aggregate_r`). A t interval over runs,
  not the 1/(N-3) Fisher one, because the spread that matters is seed to seed, not cell to cell.
- Metrics (`mean_ci`, `success_ci`, `scalar_ci`): the 95% t interval of the mean on a scale where
  the metric's bounds hold (SCALE_OF), mapped back: success rate on the logit (a run's logit is the
  empirical one from its episode counts, finite at 0 and n successes), path ratio on the log, LPC
  and policy complexity as they are. No bootstrap: with 2-5 seeds it covers far less than 95%.
- Paired comparisons (`phase_pairs`): paired t-tests on the same runs' values; contrasts
  between conditions and knockouts are mop.contrasts'.
- Decision-relevance without the visit confound (`partial_r`, `partial_summary`): beside each
  r(LPC, H) and r(LPC, KL) over cells, the partial r given log visits and given log visits and
  the mean step within the episode (residuals of both on the covariates, then Pearson).
- Multiplicity: Holm's step-down adjustment (`holm`) over every test one table or figure shows.
- One run: no inference; the p and CI cells hold NO_INFERENCE, never a NaN that reads as "not
  significant". A cell that cannot be computed holds its reason as text.

    from mop import inference
    table = pd.read_csv("stats/BabyAI-UnlockPickup-v0/seed_metrics.csv")
    inference.across_seeds(table)          # per (condition, phase, correlation): mean r, CI, p, Holm
    inference.metrics_by_alpha(table)      # per (condition, metric): n, mean, estimate, CI on its scale
    inference.partial_summary(table)       # per (condition, phase): raw r beside the partial r
    inference.aggregate_r([0.3, 0.5, 0.4])  # one aggregate from bare numbers
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import special
from scipy import stats as sps

from mop.lmc_stats import t_test
from mop.phases import PHASES, SPATIAL, phase_system

# SPATIAL (per cell: lpc_entropy, lpc_kl_local, lpc_kl_global) and, per timestep, LPC / H(A|S) /
# KL against the distance to the phase's goal: the r_<phase>_<c> columns of the table.
TEMPORAL = ("lpc_dist", "entropy_dist", "kl_dist")
CORRELATIONS = SPATIAL + TEMPORAL
SCALARS = ("success_rate", "mean_lpc", "policy_complexity", "path_ratio")
# The scale each is aggregated on across runs (mean_ci): a rate's interval must stay in [0, 1]; the
# path ratio is a positive ratio (not >= 1: the bot explores what it has not seen, so an agent can
# beat it on a layout, reference_facts §1.5), so log.
SCALE_OF = {"success_rate": "logit", "mean_lpc": "linear", "policy_complexity": "linear", "path_ratio": "log"}
SCALES: dict[str, tuple[Callable[[Any], Any], Callable[[Any], Any]]] = {
    "linear": (lambda v: v, lambda v: v),
    "log": (np.log, np.exp),
    "logit": (special.logit, special.expit),
}
DOMAIN = {"linear": "the reals", "log": "(0, inf)", "logit": "(0, 1)"}
NO_INFERENCE = "n=1: no inference"
CLIP = 0.9999


class StatsError(ValueError):
    """Input these statistics cannot use (one line, names the problem)."""


# ----------------------------------------------------------------------------- the units: runs


def run_folder(cache_path: Any) -> str:
    """The run part of a cache folder (its path without a trailing update_<U>/): two caches of one
    run share it; two runs of one trial (trial_<N>/ and trial_<N>/seed_<S>/) do not."""
    if not isinstance(cache_path, str):
        return ""
    parts = cache_path.rstrip("/").split("/")
    return "/".join(parts[:-1] if parts and parts[-1].startswith("update_") else parts)


def check_replicates(runs: pd.DataFrame) -> None:
    """StatsError naming both folders when two runs of one condition have one seed: a replicate
    is (condition, seed), so a seed trained twice (two trials, or a sweep run beside a trial
    made by hand) is one replicate, never two. Runs whose condition is unknown are not checked."""
    if "condition" not in runs.columns or runs.empty:
        return
    known = runs[runs["condition"].notna()]
    where = known["cache_path"] if "cache_path" in known else pd.Series("", index=known.index)
    seen: dict[tuple, str] = {}
    for cid, seed, trial, path in zip(known["condition"], known["seed"], known["trial"], where):
        key = (cid, -1 if pd.isna(seed) else int(seed))
        here = run_folder(path) or f"trial {trial}"
        if key in seen and seen[key] != here:
            raise StatsError(
                f"condition {cid} seed {key[1]} is trained twice ({seen[key]} and {here}): a replicate is "
                "(condition, seed), one run each; remove one run's caches or pass a --manifest naming one"
            )
        seen[key] = here


def common_update(runs: pd.DataFrame) -> tuple[float, str]:
    """(update, note) of one condition's checkpoints: the newest update every run of it has
    (NaN and a note naming the runs when they share none)."""
    updates = runs.assign(_u=runs["update"].astype("Float64").fillna(-1.0))
    per_run = updates.groupby(["trial", "seed"], dropna=False)["_u"].apply(set)
    shared = set.intersection(*per_run.tolist()) if len(per_run) else set()
    if shared:
        return max(shared), ""
    last = updates.groupby(["trial", "seed"], dropna=False)["_u"].max()
    shown = ", ".join(f"trial {t} seed {s} at {u:g}" for (t, s), u in last.items())
    return math.nan, f"its runs share no evaluated update ({shown})"


def final_rows(table: pd.DataFrame, update: int | None = None) -> pd.DataFrame:
    """One row per run (trial, seed), every run of one condition at one update: the given update,
    else the newest update all the condition's runs have (common_update; a table without
    conditions: each run's last). StatsError when a condition's runs share no update (mixed
    updates are never pooled: pass --update) or when one (condition, seed) is two runs
    (check_replicates)."""
    if update is not None:
        out = table[table["update"] == update]
        check_replicates(out)
        return out
    order = table.assign(_u=table["update"].astype("Float64").fillna(-1.0))
    if "condition" in table.columns and table["condition"].notna().any():
        keep = order["condition"].isna()
        for cid, group in order[order["condition"].notna()].groupby("condition", sort=False):
            u, why = common_update(group)
            if why:
                raise StatsError(f"condition {cid}: {why}: runs are compared at one update (pass --update)")
            keep |= (order["condition"] == cid) & (order["_u"] == u)
        unknown = order[order["condition"].isna()].sort_values("_u", kind="stable")
        known = order[keep & order["condition"].notna()]
        tail = unknown.groupby(["trial", "seed"], dropna=False).tail(1)
        out = pd.concat([known, tail]).sort_values("_u", kind="stable").drop(columns="_u")
    else:
        out = order.sort_values("_u").groupby(["trial", "seed"], dropna=False).tail(1).drop(columns="_u")
    check_replicates(out)
    return out


def with_conditions(table: pd.DataFrame) -> pd.DataFrame:
    """The table with its `condition` and `condition_label` columns: labels from the `recipe`
    column (mop.conditions.labels: the keys in which this table's conditions differ). A table
    written before conditions existed (no `condition` column) has one condition per lpc_alpha
    ("alpha=<α>"), as it was aggregated then."""
    from mop import conditions

    out = table.copy()
    if "condition" not in out.columns:
        alpha = pd.to_numeric(out["lpc_alpha"], errors="coerce")
        out["condition"] = [f"alpha={a:g}" if pd.notna(a) else None for a in alpha]
        out["condition_label"] = [f"α={a:g}" if pd.notna(a) else None for a in alpha]
        return out
    known = out[out["condition"].notna()]
    recipes = {}
    for cid, text in zip(known["condition"], known.get("recipe", pd.Series(index=known.index, dtype=object))):
        recipes.setdefault(cid, json.loads(text) if isinstance(text, str) else {"condition": cid})
    names = conditions.labels(recipes) if recipes else {}
    out["condition_label"] = out["condition"].map(names)
    return out


def _condition_order(runs: pd.DataFrame) -> list[str]:
    """Conditions in the order of their first trial (a sweep's order), then by id."""
    first = runs.groupby("condition")["trial"].min().astype("Float64").fillna(-1.0)
    return sorted(first.index, key=lambda c: (float(first[c]), str(c)))


def runs_by_condition(
    table: pd.DataFrame, update: int | None = None, routed: bool = False
) -> Iterator[tuple[str, str, pd.DataFrame]]:
    """(condition, label, its runs) in the order of first trial: final_rows of the runs whose
    condition is known; routed: only conditions with a router (not the GRU: no LPC to correlate)."""
    runs = runs_with_alpha(table, update)
    if routed and "policy_type" in runs:
        runs = runs[runs["policy_type"].fillna("mop") != "gru"]
    for cid in _condition_order(runs):
        group = runs[runs["condition"] == cid]
        yield cid, str(group["condition_label"].iloc[0]), group


def runs_with_alpha(table: pd.DataFrame, update: int | None = None) -> pd.DataFrame:
    """final_rows of the runs whose condition is known (the name is from when conditions were
    lpc_alpha alone), with condition_label."""
    runs = final_rows(with_conditions(table), update)
    return runs[runs["condition"].notna()]


def condition_alpha(group: pd.DataFrame) -> float:
    """The lpc_alpha of one condition's runs (NaN for a GRU, or where the table does not say)."""
    alpha = pd.to_numeric(group["lpc_alpha"], errors="coerce").dropna().unique()
    return float(alpha[0]) if len(alpha) == 1 else math.nan


def phases_of(table: pd.DataFrame) -> list[str]:
    """The phases of the table's level (one level per table: StatsError if mixed)."""
    tasks = table["task_id"].dropna().unique()
    if len(tasks) > 1:
        raise StatsError(
            f"one aggregation mixes levels {', '.join(sorted(tasks))}: aggregate one task at a time"
        )
    systems = table["phase_system"].dropna().unique() if "phase_system" in table else []
    system = systems[0] if len(systems) else phase_system(str(tasks[0]))
    return list(PHASES[system])


def check_phase(table: pd.DataFrame, phase: str) -> None:
    """StatsError unless `phase` is one of the table's level's phases."""
    phases = phases_of(table)
    if phase not in phases:
        raise StatsError(f"phase {phase!r} is not one of this level's phases ({', '.join(phases)})")


# ----------------------------------------------------------------------------- one aggregate


def fisher_z(r: Any) -> np.ndarray:
    """artanh of r clipped to ±CLIP (so r = ±1 gives a finite z)."""
    return np.arctanh(np.clip(np.asarray(r, dtype=float), -CLIP, CLIP))


def aggregate_r(r: Any) -> dict[str, Any]:
    """Fisher aggregation of per-run r (NaN ignored): mean_r = tanh(mean z), 95% CI = tanh of the
    t interval of mean z, p = one-sample t-test on z vs 0, n, share_positive. With one run, ci and
    p are NO_INFERENCE; with none, everything is NaN."""
    r = np.asarray(r, dtype=float)
    r = r[np.isfinite(r)]
    n = len(r)
    out: dict[str, Any] = {"n": n, "mean_r": math.nan, "ci_low": math.nan, "ci_high": math.nan, "p": math.nan}
    out["share_positive"] = float((r > 0).mean()) if n else math.nan
    if n == 0:
        return out
    z = fisher_z(r)
    out["mean_r"] = float(np.tanh(z.mean()))
    if n == 1:
        return out | {"ci_low": NO_INFERENCE, "ci_high": NO_INFERENCE, "p": NO_INFERENCE}
    if np.ptp(z) == 0:  # every run the same r: the t statistic is undefined
        return out | {
            "ci_low": "no spread: no test",
            "ci_high": "no spread: no test",
            "p": "no spread: no test",
        }
    low, high, p = t_test(z)
    return out | {"ci_low": float(np.tanh(low)), "ci_high": float(np.tanh(high)), "p": p}


def mean_ci(values: Any, scale: str = "linear") -> dict[str, Any]:
    """Runs' mean and a 95% t interval (scipy's) of the mean on `scale`, mapped back: "linear"
    (the t interval of the mean), "log" (of the mean log, so of the geometric mean: stays > 0) or
    "logit" (of the mean logit: stays inside (0, 1); needs every value strictly inside, see
    success_ci for rates of exactly 0 or 1). Keys: n, mean (arithmetic, of the runs), estimate
    (the back-transformed mean the interval is centred on; the mean on "linear"), ci_low, ci_high,
    scale, assumes (ASSUMES[scale] where an interval was given, else ""). NO_INFERENCE with one
    run; NaN without any."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    forward, back = SCALES[scale]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = forward(v)
    out = {"n": len(v), "mean": float(v.mean()) if len(v) else math.nan, "scale": scale}
    if not np.isfinite(t).all():
        reason = f"a value outside {DOMAIN[scale]}: no {scale}-scale interval"
        return out | {"estimate": math.nan, "ci_low": reason, "ci_high": reason, "assumes": ""}
    return out | _interval(t, back, scale)


def success_ci(rates: Any, successes: Any = None, episodes: Any = None) -> dict[str, Any]:
    """mean_ci of success rates on the logit scale, so the interval stays inside [0, 1] at any n.
    Where a run's episode counts are known, its logit is the empirical one, log((k + ½) / (n - k
    + ½)) (Haldane-Anscombe; finite at 0 and at n successes); elsewhere the plain logit, and a rate of
    exactly 0 or 1 without counts has no interval (the cells say so)."""
    r = np.asarray(rates, dtype=float)
    k = np.full(len(r), math.nan) if successes is None else np.asarray(successes, dtype=float)
    n = np.full(len(r), math.nan) if episodes is None else np.asarray(episodes, dtype=float)
    ok = np.isfinite(r)
    r, k, n = r[ok], k[ok], n[ok]
    known = np.isfinite(k) & np.isfinite(n) & (n > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        logits = np.where(known, np.log((k + 0.5) / (n - k + 0.5)), special.logit(r))
    out = {"n": len(r), "mean": float(r.mean()) if len(r) else math.nan, "scale": "logit"}
    if not np.isfinite(logits).all():
        reason = "a rate of 0 or 1 without episode counts: no interval (stats.py --force adds them)"
        return out | {"estimate": math.nan, "ci_low": reason, "ci_high": reason, "assumes": ""}
    return out | _interval(logits, special.expit, "logit")


def _interval(t: np.ndarray, back: Callable[[Any], Any], scale: str) -> dict[str, Any]:
    """estimate = back(mean t) and back() of the 95% t interval of mean t (finite t), and what
    that interval assumes (ASSUMES[scale]; "" where none was given)."""
    if len(t) < 2:
        mark = NO_INFERENCE if len(t) else math.nan
        estimate = float(back(t[0])) if len(t) else math.nan
        return {"estimate": estimate, "ci_low": mark, "ci_high": mark, "assumes": ""}
    estimate = float(back(t.mean()))
    # every run the same, up to float32 rounding (a homogeneous layout's LPC is one constant): the t
    # statistic is undefined, or would give an interval of rounding noise
    if float(np.ptp(t)) <= ROUNDING * max(1.0, float(np.abs(t).max())):
        none = "no spread: no interval"
        return {"estimate": estimate, "ci_low": none, "ci_high": none, "assumes": ""}
    low, high, _ = t_test(t)
    low, high = float(back(low)), float(back(high))
    return {"estimate": estimate, "ci_low": low, "ci_high": high, "assumes": ASSUMES[scale]}


# What each metric can be: its interval stays inside (the scale keeps success and path ratio in;
# LPC and policy complexity, on the plain t interval, are clipped at 0). The `bounds` column.
BOUNDS = {"success_rate": (0.0, 1.0), "path_ratio": (0.0, math.inf)}
BOUNDS |= {"mean_lpc": (0.0, math.inf), "policy_complexity": (0.0, math.inf)}


# What a t interval over runs assumes (the `assumes` column): the runs' values spread normally on
# the interval's scale. It covers 95% when they do (docs/calibration.md: across_runs_lpc_coverage
# 0.952, complexity 0.954, lognormal path ratio 0.944); at 3 skewed runs it covers less (Gamma(2)
# 0.911, exponential 0.902, the path ratio's 1 + Gamma 0.933: the rows beside them). No interval of a mean holds 95% under every distribution at
# any n (Bahadur & Savage 1956), and 3 runs cannot check the shape, so the table states it.
ASSUMES = {
    "linear": "t over runs: the runs' values spread normally",
    "log": "t over runs: the runs' log values spread normally",
    "logit": "t over runs: the runs' logits spread normally",
}


def scalar_ci(runs: pd.DataFrame, metric: str) -> dict[str, Any]:
    """The across-run interval of one SCALARS metric on its scale (SCALE_OF): success_ci with the
    runs' episode counts where the table has them, else mean_ci; clipped to BOUNDS (`bounds`
    says the range, `clipped` whether the interval was cut, `assumes` what its 95% rests on)."""
    if metric == "success_rate":
        counts = [runs[c] if c in runs else None for c in ("successes", "num_episodes")]
        out = success_ci(runs[metric], *counts)
    else:
        out = mean_ci(runs[metric], SCALE_OF[metric])
    low, high = BOUNDS[metric]
    out["bounds"] = f"[{low:g}, {'inf)' if high == math.inf else f'{high:g}]'}"
    out["clipped"] = False
    if isinstance(out["ci_low"], float) and math.isfinite(out["ci_low"]):
        clipped = (max(out["ci_low"], low), min(out["ci_high"], high))
        out["clipped"] = clipped != (out["ci_low"], out["ci_high"])
        out["ci_low"], out["ci_high"] = clipped
    return out


def holm(pvalues: Any) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaN and non-numbers stay NaN and are not counted)."""
    p = np.array([v if isinstance(v, (int, float)) else math.nan for v in pvalues], dtype=float)
    ok = np.flatnonzero(np.isfinite(p))
    adjusted = np.full(len(p), math.nan)
    order = ok[np.argsort(p[ok], kind="stable")]
    m = len(order)
    running = 0.0
    for i, idx in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[idx]))
        adjusted[idx] = running
    return adjusted


def holm_over_asked(pvalues: Any) -> np.ndarray:
    """Holm over every test asked: one that could not run (NaN, or a reason in place of its p)
    counts in the family as p = 1 (it cannot reject, and leaving it out would shrink the family
    with the data) and gets no adjusted p of its own."""
    values = list(pvalues)
    ran = np.array([isinstance(v, (int, float)) and math.isfinite(v) for v in values], dtype=bool)
    adjusted = holm([v if ok else 1.0 for v, ok in zip(values, ran)])
    adjusted[~ran] = math.nan
    return adjusted


def tost_paired(diffs: Any, margin: float, alpha: float = 0.05) -> dict[str, Any]:
    """Paired equivalence test (TOST: two one-sided t tests) of the mean of per-pair differences
    against ±margin. H0: |mean d| >= margin; rejected at `alpha` when both one-sided t tests
    (mean d > -margin, mean d < +margin; df = n - 1) reject, which is the same as the
    (1 - 2·alpha) t interval of mean d (90% at alpha 0.05) lying inside (-margin, +margin).
    Keys: n, mean, se, df, margin, alpha, t_lower, t_upper, p_lower, p_upper, p (the larger of the
    two one-sided p: the TOST p), ci_low, ci_high (that 1 - 2·alpha interval), equivalent (bool),
    note. Fewer than two finite differences or no spread: p, intervals NaN, equivalent False, and
    the note says why. ValueError for margin <= 0 or alpha outside (0, 0.5)."""
    if not (isinstance(margin, (int, float)) and math.isfinite(margin) and margin > 0):
        raise ValueError(f"margin must be a positive number, got {margin!r}")
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha must be in (0, 0.5), got {alpha!r}")
    d = np.asarray(diffs, dtype=float)
    d = d[np.isfinite(d)]
    n = len(d)
    out: dict[str, Any] = {"n": n, "mean": float(d.mean()) if n else math.nan, "margin": float(margin)}
    out |= {"alpha": alpha, "df": n - 1 if n else math.nan}
    blank = {
        k: math.nan for k in ("se", "t_lower", "t_upper", "p_lower", "p_upper", "p", "ci_low", "ci_high")
    }
    if n < 2:
        return out | blank | {"equivalent": False, "note": f"n={n}: no equivalence test"}
    se = float(d.std(ddof=1) / math.sqrt(n))
    if not se > 0:
        return out | blank | {"equivalent": False, "note": "no spread: no equivalence test"}
    t_lower = (out["mean"] + margin) / se
    t_upper = (out["mean"] - margin) / se
    p_lower = float(sps.t.sf(t_lower, n - 1))
    p_upper = float(sps.t.cdf(t_upper, n - 1))
    half = float(sps.t.ppf(1 - alpha, n - 1)) * se
    p = max(p_lower, p_upper)
    return out | {
        "se": se,
        "t_lower": float(t_lower),
        "t_upper": float(t_upper),
        "p_lower": p_lower,
        "p_upper": p_upper,
        "p": p,
        "ci_low": out["mean"] - half,
        "ci_high": out["mean"] + half,
        "equivalent": bool(p < alpha),
        "note": "",
    }


def equivalence_verdict(test: dict[str, Any], what: str = "difference") -> str:
    """The words a table prints for a tost_paired result: 'equivalent within ±m (TOST p ...)' only
    when it rejects; otherwise 'not resolved at ±m' (never 'alike' from a non-significant test)."""
    m = f"±{test['margin']:g}"
    if test.get("equivalent"):
        return f"equivalent within {m} (TOST p={test['p']:.3g}, {100 * (1 - 2 * test['alpha']):g}% CI inside)"
    why = f": {test['note']}" if test.get("note") else f" (TOST p={test['p']:.3g})"
    return f"{what} not resolved at {m}{why}"


def stars(p: Any) -> str:
    """'***' / '**' / '*' / 'ns' at 0.001 / 0.01 / 0.05; '' for a p that is not a number."""
    if not isinstance(p, (int, float)) or not math.isfinite(p):
        return ""
    return "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < 0.05 else "ns"


# ----------------------------------------------------------------------------- tidy tables

# Columns that hold numbers (a number, or NaN where there is none): the names the tables use.
NUMERIC = re.compile(
    r"^(n|r|p|mean|estimate|difference|margin|update|lpc_alpha|layouts|both|a_only|b_only|neither)$"
    r"|(^|_)(n|p|p_holm|p_exact|tost_p|ci_low|ci_high|mean_r|mean_a|mean_b|mean_none|mean_knockout"
    r"|share_positive|r_given_visits|r_given_visits_step)$"
)


def tidy(df: pd.DataFrame) -> pd.DataFrame:
    """The table as written: every numeric column (NUMERIC) holds numbers, NaN where there is
    none; the text a cell held instead (n=1: no inference, no spread: no test...) moves to the
    row's `note` column (joined with '; ', each reason once). A table without rows keeps its
    header (pandas reads it back)."""
    out = df.copy()
    notes = [[] for _ in range(len(out))]
    if "note" in out.columns:
        notes = [[str(v)] if isinstance(v, str) and v else [] for v in out["note"]]
    for col in out.columns:
        if col == "note" or not NUMERIC.search(str(col)) or out[col].dtype.kind in "biufc":
            continue
        values = []
        for i, v in enumerate(out[col].tolist()):
            if isinstance(v, str):
                if v not in notes[i]:
                    notes[i].append(v)
                values.append(math.nan)
            elif isinstance(v, bool) or v is None:
                values.append(math.nan if v is None else float(v))
            else:
                values.append(v)
        out[col] = pd.to_numeric(pd.Series(values, index=out.index, dtype=object), errors="coerce")
    out["note"] = ["; ".join(n) for n in notes]
    return out


# ----------------------------------------------------------------------------- the tables


CONDITION_COLUMNS = ["condition", "condition_label", "lpc_alpha", "update"]


def _head(cid: str, label: str, group: pd.DataFrame) -> dict[str, Any]:
    """The columns that say which runs a row is of: the condition, and the one update its runs
    are compared at (final_rows)."""
    updates = group["update"].dropna().unique() if "update" in group else []
    update = float(updates[0]) if len(updates) == 1 else math.nan
    return {"condition": cid, "condition_label": label, "lpc_alpha": condition_alpha(group), "update": update}


IDENTICAL = "identical to lpc_kl_local (the phase's action marginal is the cache's): reported once"


def same_test(group: pd.DataFrame, a: str, b: str) -> bool:
    """Whether two columns of per-run numbers are one test: present in both and exactly equal in
    every run (r(LPC, KL local) = r(LPC, KL global) on a one-phase level)."""
    if a not in group or b not in group:
        return False
    x, y = group[a].to_numpy(dtype=float), group[b].to_numpy(dtype=float)
    return bool(np.isfinite(x).any() and np.array_equal(x, y, equal_nan=True))


def across_seeds(table: pd.DataFrame, update: int | None = None) -> pd.DataFrame:
    """Per (condition, phase, correlation): aggregate_r over the condition's runs at one update.
    Holm per condition (`family`): its phases × CORRELATIONS, the question this table asks of a
    condition, whatever other conditions the table holds. A correlation whose per-run values equal
    another's exactly (KL global = KL local on a one-phase level) is reported once: the row stays,
    its p is NaN and its note says so, and it is not counted in the family."""
    phases = phases_of(table)
    out = []
    for cid, label, group in runs_by_condition(table, update, routed=True):
        family = []
        for p in phases:
            for c in CORRELATIONS:
                col = f"r_{p}_{c}"
                values = group[col] if col in group else pd.Series(dtype=float)
                row = _head(cid, label, group) | {"phase": p, "correlation": c} | aggregate_r(values)
                if row["n"] == 0:
                    row["p"] = "empty: no run has this r (phase not reached or < 3 cells)"
                if c == "lpc_kl_global" and same_test(group, f"r_{p}_lpc_kl_local", col):
                    row["p"] = IDENTICAL
                family.append(row)
        tested = sum(isinstance(r["p"], float) and math.isfinite(r["p"]) for r in family)
        for row, adj in zip(family, holm([r["p"] for r in family])):
            row["p_holm"] = adj
            row["family"] = (
                f"Holm per condition: {tested} tests ({len(phases)} phases × {len(CORRELATIONS)} correlations, tested ones)"
            )
        out += family
    columns = [*CONDITION_COLUMNS, "phase", "correlation", "n", "mean_r", "ci_low", "ci_high", "p"]
    return pd.DataFrame(out, columns=[*columns, "share_positive", "p_holm", "family"])


def phase_pairs(table: pd.DataFrame, update: int | None = None) -> pd.DataFrame:
    """Per (condition, correlation, phase pair): paired t-test on the same runs' z (ttest_rel);
    Holm within each (condition, correlation)."""
    phases = phases_of(table)
    out = []
    for cid, label, group in runs_by_condition(table, update, routed=True):
        for c in CORRELATIONS:
            family = []
            for a, b in itertools.combinations(phases, 2):
                za, zb = fisher_z(group[f"r_{a}_{c}"]), fisher_z(group[f"r_{b}_{c}"])
                both = np.isfinite(za) & np.isfinite(zb)
                n = int(both.sum())
                row = _head(cid, label, group) | {"correlation": c, "phase_a": a, "phase_b": b, "n": n}
                row["mean_r_a"] = float(np.tanh(za[both].mean())) if n else math.nan
                row["mean_r_b"] = float(np.tanh(zb[both].mean())) if n else math.nan
                if n < 2:
                    row["p"] = NO_INFERENCE if n == 1 else "empty: no run has both phases"
                elif np.ptp(za[both] - zb[both]) == 0:
                    row["p"] = "no spread: no test"
                else:
                    row["p"] = float(sps.ttest_rel(za[both], zb[both]).pvalue)
                family.append(row)
            for row, adj in zip(family, holm([r["p"] for r in family])):
                row["p_holm"] = adj
                row["family"] = f"Holm per (condition, correlation): the {len(family)} phase pairs"
            out += family
    columns = [*CONDITION_COLUMNS, "correlation", "phase_a", "phase_b", "n", "mean_r_a", "mean_r_b", "p"]
    return pd.DataFrame(out, columns=[*columns, "p_holm", "family"])


METRIC_COLUMNS = ["n", "mean", "estimate", "ci_low", "ci_high", "scale", "bounds", "clipped", "assumes"]


def metrics_by_alpha(table: pd.DataFrame, update: int | None = None) -> pd.DataFrame:
    """success, LPC, policy complexity, path ratio per condition: n, mean, and the 95% CI over
    runs with the estimate it is centred on, on the metric's scale (scalar_ci). A metric a
    condition does not measure (a GRU's LPC) is left out."""
    out = [
        _head(cid, label, group) | {"metric": m} | scalar_ci(group, m)
        for cid, label, group in runs_by_condition(table, update)
        for m in SCALARS
        if group[m].notna().any()
    ]
    return pd.DataFrame(out, columns=[*CONDITION_COLUMNS, "metric", *METRIC_COLUMNS])


def metrics_by_update(table: pd.DataFrame) -> pd.DataFrame:
    """metrics_by_alpha at every update: per (condition, metric, update) in that order,
    scalar_ci over the runs' checkpoints of that update (rows without a condition or an update
    left out)."""
    df = with_conditions(table)
    df = df[df["condition"].notna() & df["update"].notna()]
    out = [
        _head(cid, str(group["condition_label"].iloc[0]), group)
        | {"metric": m, "update": u}
        | scalar_ci(g, m)
        for cid in _condition_order(df)
        for group in [df[df["condition"] == cid]]
        for m in SCALARS
        if group[m].notna().any()
        for u, g in group.groupby("update")
    ]
    return pd.DataFrame(out, columns=[*CONDITION_COLUMNS, "metric", *METRIC_COLUMNS])


def correlation_summary(table: pd.DataFrame, update: int | None = None) -> pd.DataFrame:
    """Per condition × phase × SPATIAL correlation, in that order: aggregate_r over the
    condition's runs of the raw r and of the partial r given log visits (`r_...`, `partial_...`
    columns); p_holm and partial_p_holm: Holm over every test of the table. Runs of different
    conditions are never pooled."""
    phases = phases_of(table)
    out = []
    for cid, label, group in runs_by_condition(table, update, routed=True):
        for p in phases:
            for c in SPATIAL:
                row = (
                    _head(cid, label, group)
                    | {"phase": p, "correlation": c}
                    | aggregate_r(group[f"r_{p}_{c}"])
                )
                column = f"r_{p}_{c}_given_visits"
                partial = aggregate_r(group[column] if column in group else [])
                out.append(row | {f"partial_{k}": v for k, v in partial.items() if k != "share_positive"})
    df = pd.DataFrame(out)
    if len(df):
        adjusted = holm(list(df["p"]) + list(df["partial_p"]))
        df["p_holm"], df["partial_p_holm"] = adjusted[: len(df)], adjusted[len(df) :]
    return df


# ----------------------------------------------------------------------------- partial correlation

COVARIATES = {
    "visits": "log visits of the state",
    "visits_step": "log visits and mean step within the episode",
}
PARTIAL = tuple(f"{c}_given_{cov}" for c in SPATIAL for cov in COVARIATES)


# Relative spread below which numbers are one number: LPC is recorded in float32 (about 7 digits),
# so the per-cell and per-run means of a constant LPC (experts of equal sizes) differ in the 7th
# digit; a correlation or a t-test of that spread would measure rounding.
ROUNDING = 1e-6


def constant(values: Any) -> bool:
    """Whether finite values are one number up to float rounding (ROUNDING, relative)."""
    v = np.asarray(values, dtype=float)
    return len(v) == 0 or float(np.ptp(v)) <= ROUNDING * max(1.0, float(np.abs(v).max()))


def partial_r(x: Any, y: Any, covariates: Any) -> float:
    """Pearson r of x and y after removing from each its least-squares fit on the covariates
    (columns of `covariates`, with an intercept): the partial correlation given them. NaN when
    fewer than (covariates + 3) finite rows remain, or x, y or a residual is constant."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    z = np.asarray(covariates, dtype=float).reshape(len(x), -1)
    ok = np.isfinite(x) & np.isfinite(y) & np.isfinite(z).all(axis=1)
    x, y, z = x[ok], y[ok], z[ok]
    if len(x) < z.shape[1] + 3 or constant(x) or constant(y):
        return math.nan
    design = np.column_stack([np.ones(len(x)), z])
    rx = x - design @ np.linalg.lstsq(design, x, rcond=None)[0]
    ry = y - design @ np.linalg.lstsq(design, y, rcond=None)[0]
    if np.ptp(rx) < 1e-12 * max(1.0, np.abs(x).max()) or np.ptp(ry) < 1e-12 * max(1.0, np.abs(y).max()):
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def partial_summary(table: pd.DataFrame, update: int | None = None) -> pd.DataFrame:
    """The decision-relevance table: per (condition, phase, SPATIAL correlation), the raw r
    (r, r_ci_low, r_ci_high, r_p) beside the partial r given log visits (r_given_visits...) and
    given log visits and the mean step (r_given_visits_step...): each Fisher-aggregated over the
    condition's runs (aggregate_r); *_p_holm: Holm over every p of the table."""
    phases = phases_of(table)
    out = []
    names = {"r": "", "r_given_visits": "_given_visits", "r_given_visits_step": "_given_visits_step"}
    for cid, label, group in runs_by_condition(table, update, routed=True):
        for p in phases:
            for c in SPATIAL:
                row = _head(cid, label, group) | {"phase": p, "correlation": c}
                for name, suffix in names.items():
                    column = f"r_{p}_{c}{suffix}"
                    agg = aggregate_r(group[column] if column in group else [])
                    row |= {f"{name}_n" if name != "r" else "n": agg["n"], name: agg["mean_r"]}
                    row |= {
                        f"{name}_ci_low": agg["ci_low"],
                        f"{name}_ci_high": agg["ci_high"],
                        f"{name}_p": agg["p"],
                    }
                    if c == "lpc_kl_global" and same_test(group, f"r_{p}_lpc_kl_local{suffix}", column):
                        row[f"{name}_p"] = IDENTICAL
                out.append(row)
    columns = [f"{name}_p" for name in names]
    head = [*CONDITION_COLUMNS, "phase", "correlation", "n", "r", "r_ci_low", "r_ci_high", "r_p"]
    for name in list(names)[1:]:
        head += [f"{name}_n", name, f"{name}_ci_low", f"{name}_ci_high", f"{name}_p"]
    df = pd.DataFrame(out, columns=head)
    for c in columns:
        df[f"{c}_holm"] = math.nan
    df["family"] = ""
    for cid in df["condition"].unique():
        rows = df.index[df["condition"] == cid]
        part = df.loc[rows]
        adjusted = holm([v for c in columns for v in part[c]])
        tested = int(np.isfinite(adjusted).sum())
        for k, c in enumerate(columns):
            df.loc[rows, f"{c}_holm"] = adjusted[k * len(rows) : (k + 1) * len(rows)]
        df.loc[rows, "family"] = (
            f"Holm per condition: {tested} tests (raw and partial r, phases × spatial correlations)"
        )
    return df


# ----------------------------------------------------------------------------- figure aggregates


def spatial_for_figure(seeds: pd.DataFrame) -> pd.DataFrame:
    """across_seeds' SPATIAL rows with p_fig: Holm over every point of the one figure that shows
    them (the table's p_holm counts the temporal rows too)."""
    shown = seeds[seeds["correlation"].isin(SPATIAL)].copy()
    shown["p_fig"] = holm(shown["p"])
    return shown


def ols_band(x: Any, y: Any, points: int = 50) -> dict[str, Any]:
    """OLS of y on x over the finite pairs (scipy.stats.linregress) and the 95% confidence band of
    the mean at `points` x values across their range: n always; with n >= 3 and x not constant
    also r, p, grid, line, low, high."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    n = int(ok.sum())
    if n < 3 or not np.ptp(x[ok]) > 0:
        return {"n": n}
    x, y = x[ok], y[ok]
    fit = sps.linregress(x, y)
    grid = np.linspace(x.min(), x.max(), points)
    resid = y - (fit.intercept + fit.slope * x)
    s = np.sqrt((resid**2).sum() / (n - 2))
    se = s * np.sqrt(1 / n + (grid - x.mean()) ** 2 / ((x - x.mean()) ** 2).sum())
    t = sps.t.ppf(0.975, n - 2)
    line = fit.intercept + fit.slope * grid
    band = {"low": line - t * se, "high": line + t * se}
    return {"n": n, "r": fit.rvalue, "p": fit.pvalue, "grid": grid, "line": line} | band


def phase_fits(runs: pd.DataFrame, phases: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per phase, ols_band of the runs' mean LPC in the phase on their mean H(A|S) in it."""
    return {p: ols_band(runs[f"mean_entropy_{p}"], runs[f"mean_lpc_{p}"]) for p in phases}
