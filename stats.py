"""Statistics across checkpoints, seeds and conditions: does the compute the router chooses (LPC)
track how decision-relevant a state is, per task phase, and what does a recipe (α, expert sizes,
routing dropout, MoP vs GRU...) trade for it?

Reads the routing caches of one task (<cache_dir>/<task>/trial_<N>/[seed_<S>/][update_<U>/], default
evaluations only; with --manifest only the sweep's runs) and evaluation_results.csv (lpc_alpha per
row, knockout rows, and the recipe of older runs whose cache holds no config). Each run's condition
is its resolved recipe (mop.conditions: its config minus seeds, folders, logging and execution-only
keys; a GRU is its own condition); runs of different recipes are never pooled. Writes, under --out
(default stats/<task>/, or stats/<manifest name>/), all atomically, after every check has passed:
    seed_metrics.csv        one row per (trial, seed, update): α, success (with its episode counts
                            and 95% Wilson interval), path ratio, LPC, policy complexity, r/p/n per
                            phase and correlation, the partial r given visits, and the run's
                            policy_type, condition, recipe (built incrementally: a cache already in
                            it is skipped unless --force)
    conditions.csv          per condition: id, label, policy, its runs, the recipe
    across_seeds.csv        per (condition, phase, correlation): Fisher-z mean r, 95% CI, t-test p, n
    decision_relevance.csv  per (condition, phase, correlation): the raw r beside the partial r given
                            log visits and given log visits and step, each with its CI and p (Holm)
    phase_pairs.csv         per (condition, correlation, phase pair): paired t-test on z, Holm
    knockouts.csv           per (condition, knockout, metric): knockout - none, one checkpoint per
                            run, paired across runs: difference, 95% CI, p, Holm
    knockout_layouts.csv    per (run, knockout): McNemar's exact test on the shared layouts
    metrics_by_alpha.csv    success, LPC, policy complexity, path ratio per condition: n, mean, 95%
                            CI on the metric's scale, the estimate it is centred on and what the
                            CI assumes (the runs spread normally on that scale)
    contrasts.csv           (--contrast) per (pair of conditions, metric): the per-seed paired
                            difference B - A, 95% t CI (clipped to its range: bounds), p, Holm
                            over the pairs asked x --metrics, the seeds only one arm has (missing), and a verdict:
                            "differs", "equivalent within ±m" (only from the paired TOST at
                            --margin: margin, tost_p), else "not resolved" (mop.contrasts)
    network_pairs.csv       (--contrast) per (pair, seed): McNemar's exact test of success of the
                            two trained networks on their shared layouts: a test of two networks,
                            not of the recipes (two runs of one recipe differ by it too)
    *.png                   the figures of mop/stats_plots.py (contrasts.png, knockouts.png when any;
                            --layout paper: each one 3.3 in paper column wide; default screen: at
                            most 10.5 in), each saying what its intervals are
A multi-task --task_id ("A,B,C") instead writes by_level.csv, level_pairs.csv, difficulty.json:
per condition of its runs, each level's LPC across runs and the levels' paired differences, beside
their learning speed (single-task repeats under --single_task_dir) and bot path length, and a
hardest level only where the intervals separate (mop.difficulty).

    python stats.py --task_id BabyAI-UnlockPickup-v0
    python stats.py --task_id BabyAI-GoToLocal-v0 --manifest sweeps/gotolocal.json \\
        --contrast lpc_alpha --contrast expert_hidden_sizes --contrast policy_type
    python stats.py --task_id BabyAI-GoToLocal-v0 --cache_dir evaluation_cache \\
        --results_path evaluation_results.csv --out stats/gotolocal --update 5000 --force

Every table is tidy: numeric columns hold numbers (NaN where none) and a `note` column says why;
an empty table is written with its header. Every table names its `update`, and its Holm `family`
(printed too): per condition for across_seeds / decision_relevance (phases × correlations; what is
asked of a condition, whatever other conditions are present), per (condition, correlation) for
phase_pairs, the pairs asked x --metrics for contrasts (a factor alone asks for every pair
present that differs only in it; FACTORS=A:B names them), the whole table for knockouts. r(LPC, KL global) that equals r(LPC, KL
local) run for run (one-phase levels) is reported once.

Bad input (one `error:` line, exit 2, nothing written): a task id that is not one path component,
--min_visits < 1, --update < 0, an --out that cannot be a writable folder, a contrast factor that is
not a recipe key or does not vary, a pair that differs in other keys too, fewer than two shared
seeds, a manifest that is unreadable or names runs without an evaluation, a --margin <= 0 (or
without --contrast), one (condition, seed) trained twice (both folders named: a replicate is
(condition, seed); a run trained without --seed is seed 0), a condition whose runs share no
evaluated update (pass --update).

Per checkpoint (one cache). The spatial numbers are seed_metrics.py's (one home, see its docstring:
state = cell, π̂ smoothed, bits, cells with >= --min_visits... visits; 5 as there):
- r_<phase>_lpc_entropy / lpc_kl_local / lpc_kl_global: Pearson r over the phase's cells between the
  cell's mean LPC and its H(A|S) / KL to the phase's P_a / KL to the cache's P_a. p: scipy.stats.pearsonr
  with cells as the units. Cells are not independent (neighbouring cells share episodes and the router
  is smooth in space), so this p is too small; it is kept per checkpoint as a description, and the
  inference this module makes is across seeds (below), where the units are independent runs.
- r_<phase>_lpc_dist / entropy_dist / kl_dist (per timestep): Pearson r over the phase's steps
  between LPC and the distance to the phase's goal (PHASE_GOAL: the key before pickup, the door while
  carrying it, the target after the door opens; door levels: the door, then the target; other
  levels: the target, else the door), and between the step's cell H(A|S) / KL-global (cells with
  enough visits) and that distance. p: scipy.stats.pearsonr with steps as units: steps of one episode
  are autocorrelated, so again descriptive only.
- policy_complexity (I(S;A), overall and per phase), mean_entropy_<p>, mean_lpc_<p>: seed_metrics'.
- r_<phase>_<c>_given_visits / _given_visits_step (c: the three spatial correlations): the partial r
  over the same cells given log visits (and the mean step in the episode): both the cell's mean LPC
  and its H / KL residualised on the covariates, then Pearson (inference.partial_r). Rarely visited
  cells have a π̂ smoothed toward uniform and their own LPC, so the raw r partly measures visits.
  --state cell_dir_carry takes the state as cell × direction × carrying.
- n_cells_<p> (cells with enough visits), n_steps_<p>: a phase with < 3 cells has no spatial r
  (an empty cell in the table, counted in the printed notes, never dropped silently).
- num_episodes, successes, success_ci_low/high: the counts behind success_rate (from the cache's
  episodes table) and their 95% Wilson interval (scipy.stats.binomtest(k, n).proportion_ci), the
  interval of that one run; NaN where the episodes do not give the counts.

Across seeds (the inference). Units: runs (condition, seed) at one update (--update, default the
newest update every run of the condition has). r is clipped to ±0.9999 and z = artanh(r); the test is a one-sample t-test on z
against 0 (scipy.stats.ttest_1samp) and the 95% CI is its t interval of the mean z, back-transformed
with tanh. Why t on z, not on r: z is close to normal whatever r is (r is bounded and skewed near ±1),
and why not the fixed-variance 1/(N-3) Fisher interval: that treats cells as independent and
ignores the seed-to-seed spread, which is the variance that matters for "does this replicate". One run
(n = 1): no inference, the p and CI cells are NaN and the note says "n=1: no inference"; runs that
all give one value: no test and no interval ("no spread"). Per condition: the same, per
condition (never across conditions).
Paired comparisons: phase vs phase, the same runs' z values, scipy.stats.ttest_rel (paired t, for the
reason above; a Wilcoxon signed-rank test cannot reach p < 0.05 with n <= 5 seeds, two-sided);
knockout vs none: success rate and mean LPC of each run's one checkpoint with and without the
knockout (results CSV), paired t across runs; contrasts between conditions: runs paired by seed
(mop.contrasts). Holm's step-down correction over every test one figure or one table shows (holm();
scipy has Benjamini-Hochberg, not Holm).
Metrics across runs (metrics_by_alpha, the metrics-vs-α and vs-update figures): the 95% t interval
of the mean on a scale where the metric's bounds hold, mapped back (mean_ci, SCALE_OF). Success
rate: t interval of the mean logit, through expit, so it stays inside [0, 1] at any n (a t
interval of raw rates leaves it at n = 3 for rates near 0 or 1, and clipping it would claim a
coverage it does not have); a run's logit is the empirical one from its episode counts,
log((k + ½) / (n − k + ½)), finite at 0 and n successes. Why not a bootstrap over seeds
(scipy.stats.bootstrap): with 2-5 seeds it has only a handful of distinct resamples and its
percentile interval never reaches beyond the runs' range, so it covers far less than 95%. Path
ratio: t interval of the mean log (the geometric mean), so it stays > 0; not forced >= 1, as the
bot is no shortest-path planner and an agent can beat it. LPC and policy complexity: the plain t
interval. The `estimate` column is the back-transformed mean the interval is centred on (for r,
as mean_r is tanh of the mean z); `mean` is the runs' arithmetic mean. `assumes` says what the
95% rests on: the runs spread normally on the interval's scale. It holds then; at 3 runs whose
values are skewed it covers less (0.90-0.93 measured, docs/calibration.md's across_runs rows), and
no interval of a mean holds under every shape at 3 runs, so the column states it.
"""

from __future__ import annotations

if __name__ == "__main__":  # flags answered before pandas, scipy and matplotlib load (bench/startup.py)
    from mop.cli_specs import stats_parser

    stats_parser(__doc__).parse_args()

import argparse
import math
import re
import sys
import warnings
from collections.abc import Callable, Collection
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import stats as sps

import seed_metrics as sm
from mop import conditions
from mop.checks import command_edges
from mop.contrasts import ContrastError, check_metrics, contrast_pairs, contrasts, knockout_pairs
from mop.inference import (
    NO_INFERENCE,
    PARTIAL,
    SPATIAL,
    TEMPORAL,
    StatsError,
    across_seeds,
    correlation_summary,
    final_rows,
    metrics_by_alpha,
    metrics_by_update,
    partial_r,
    partial_summary,
    phase_fits,
    phase_pairs,
    phases_of,
    run_folder,
    runs_by_condition,
    runs_with_alpha,
    spatial_for_figure,
    tidy,
    with_conditions,
)
from mop.phases import PHASES, phase_of_steps, phase_system
from mop.results import read_results
from mop.routing_cache import CacheData, CacheError, find_caches, load_cache
from mop.runs import atomic_write, check_writable_dir, safe_name

if TYPE_CHECKING:  # matplotlib is loaded only when figures are drawn
    from matplotlib.figure import Figure

PHASE_GOAL = {
    "pre_key": "dist_to_key",
    "post_key_pre_unlock": "dist_to_door",
    "with_key_post_unlock": "dist_to_target",
    "post_unlock_post_key": "dist_to_target",
    "pre_unlock": "dist_to_door",
    "post_unlock": "dist_to_target",
    "all": "dist_to_target",
}
# Per run, from the cache's episodes table: the counts behind success_rate and its Wilson interval.
COUNT_COLUMNS = ("num_episodes", "successes", "success_ci_low", "success_ci_high")
# Per run, what it was (mop.conditions): its policy, condition id and recipe (JSON), where the
# recipe was read from (config / results_csv), and the state definition of the table (--state).
CONDITION_COLUMNS = ("policy_type", "condition", "recipe", "recipe_source", "state")
TABLE = "seed_metrics.csv"
# The state of H(A|S), KL and the per-state LPC: the cell (the earlier system's), or the richer
# cell × direction × carrying (what the agent's own view depends on besides its cell).
STATES = {"cell": sm.CELL, "cell_dir_carry": ("x", "y", "direction", "carrying")}


# ----------------------------------------------------------------------------- per checkpoint


def columns_for(system: str) -> list[str]:
    """seed_metrics.csv's columns: seed_metrics' own, then per phase the per-timestep r/p, the
    partial r (PARTIAL) and the phase sizes, then the counts, and what each run was."""
    cols = sm.columns_for(system)
    for p in PHASES[system]:
        for c in TEMPORAL:
            cols += [f"r_{p}_{c}", f"p_{p}_{c}"]
        cols += [f"r_{p}_{c}" for c in PARTIAL]
        cols += [f"n_cells_{p}", f"n_steps_{p}"]
    return cols + [*COUNT_COLUMNS, "phase_system", "cache_path", *CONDITION_COLUMNS]


def goal_column(phase: str, steps: pd.DataFrame) -> str | None:
    """The distance column of the phase's goal, the door's when a level has no target."""
    goal = PHASE_GOAL[phase]
    if goal in steps and steps[goal].notna().any():
        return goal
    return "dist_to_door" if "dist_to_door" in steps and steps["dist_to_door"].notna().any() else None


def success_counts(episodes: pd.DataFrame, success_rate: float) -> dict[str, float]:
    """COUNT_COLUMNS of one cache: its episodes, their successes and the 95% Wilson interval of the
    rate (scipy.stats.binomtest(...).proportion_ci(method="wilson")). NaN where the episodes table
    does not say which episodes succeeded, or disagrees with the cache's success_rate (an earlier
    system's cache whose episodes were rebuilt in part): then the counts are not known."""
    success = episodes["success"] if "success" in episodes else pd.Series(dtype=float)
    n = len(success)
    unknown = {c: math.nan for c in COUNT_COLUMNS}
    if n == 0 or success.isna().any():
        return unknown
    k = int(success.astype(bool).sum())
    if math.isfinite(success_rate) and abs(k / n - success_rate) > 1e-9:
        return unknown
    ci = sps.binomtest(k, n).proportion_ci(0.95, method="wilson")
    return {"num_episodes": n, "successes": k, "success_ci_low": ci.low, "success_ci_high": ci.high}


def partial_correlations(part: pd.DataFrame, cells: pd.DataFrame, keys: tuple[str, ...], phase: str) -> dict:
    """r_<phase>_<c>_given_visits / _given_visits_step of one phase: over the states seed_metrics
    correlates (visits >= 5), partial_r of the state's mean LPC and its H(A|S) / KL to the phase's
    P_a / KL to the cache's P_a, given log visits (and the mean step within the episode)."""
    out = {f"r_{phase}_{c}": math.nan for c in PARTIAL}
    inc = cells[cells["included"]]
    if len(inc) < 3:
        return out
    local = sm.cell_statistics(part, None, keys)["kl"].reindex(inc.index).to_numpy()
    log_visits = np.log(inc["visits"].to_numpy(dtype=float))
    steps = inc["mean_t"].to_numpy(dtype=float) if "mean_t" in inc else np.full(len(inc), math.nan)
    lpc = inc["lpc"].to_numpy(dtype=float)
    for c, values in zip(SPATIAL, (inc["entropy"].to_numpy(), local, inc["kl"].to_numpy())):
        out[f"r_{phase}_{c}_given_visits"] = partial_r(lpc, values, log_visits)
        out[f"r_{phase}_{c}_given_visits_step"] = partial_r(lpc, values, np.column_stack([log_visits, steps]))
    return out


def checkpoint_stats(
    data: CacheData, system: str, min_visits: int = sm.MIN_VISITS, state: str = "cell"
) -> dict[str, float]:
    """Every number of one cache's row after lpc_alpha: seed_metrics.cache_metrics' (spatial r/p,
    policy complexity...), plus per phase the per-timestep r/p, the partial r
    (partial_correlations) and n_cells/n_steps, and the success counts (success_counts).
    `state`: STATES' key; StatsError when the steps do not record what it needs."""
    keys = STATES[state]
    missing = [k for k in keys if k not in data.steps or data.steps[k].isna().all()]
    if missing and "action" in data.steps and data.steps["action"].notna().any():
        raise StatsError(
            f"--state {state} needs {', '.join(missing)} per step, which this cache does not record"
        )
    row = sm.cache_metrics(data, system, keys)
    row |= success_counts(data.episodes, row["success_rate"])
    steps = data.steps
    acted = steps[steps["action"].notna()] if "action" in steps else steps.iloc[:0]
    empty = {f"{k}_{p}_{c}": math.nan for p in PHASES[system] for c in TEMPORAL for k in ("r", "p")}
    empty |= {f"r_{p}_{c}": math.nan for p in PHASES[system] for c in PARTIAL}
    if acted.empty:
        return row | empty | {f"n_{w}_{p}": 0 for p in PHASES[system] for w in ("cells", "steps")}
    global_pa = sm.marginal(acted["action"].to_numpy(dtype=np.int64))
    phase = phase_of_steps(acted, data.episodes, system)
    for p in PHASES[system]:
        part = acted[phase == p]
        row[f"n_steps_{p}"] = len(part)
        cells = sm.cell_statistics(part, global_pa, keys) if len(part) else None
        included = cells[cells["visits"] >= min_visits] if cells is not None else None
        row[f"n_cells_{p}"] = 0 if included is None else len(included)
        row |= (
            partial_correlations(part, cells, keys, p)
            if cells is not None
            else {f"r_{p}_{c}": math.nan for c in PARTIAL}
        )
        goal = goal_column(p, part) if len(part) else None
        if goal is None:
            row |= {k: v for k, v in empty.items() if f"_{p}_" in k and k not in row}
            continue
        dist = part[goal].to_numpy(dtype=float)
        row[f"r_{p}_lpc_dist"], row[f"p_{p}_lpc_dist"] = sm.pearson(part["lpc"].to_numpy(dtype=float), dist)
        looked = part[[*keys, goal]].join(included[["entropy", "kl"]], on=list(keys), how="inner")
        d = looked[goal].to_numpy(dtype=float)
        row[f"r_{p}_entropy_dist"], row[f"p_{p}_entropy_dist"] = sm.pearson(looked["entropy"].to_numpy(), d)
        row[f"r_{p}_kl_dist"], row[f"p_{p}_kl_dist"] = sm.pearson(looked["kl"].to_numpy(), d)
    return row


# ----------------------------------------------------------------------------- the table


def result_lookup(results: pd.DataFrame, task_id: str) -> dict:
    """{cache_path: row} and {(trial, seed, update): row} of the task's default-evaluation rows
    of the results CSV (rows as dicts)."""
    if results.empty:
        return {}
    rows = results[(results["task_id"] == task_id) & (results["knockout"].fillna("none") == "none")]
    if "eval_task_id" in rows.columns:
        rows = rows[rows["eval_task_id"].fillna(task_id) == task_id]
    if "trained_tasks" in rows.columns:  # a multi-task run's row of this level: another run's trial
        rows = rows[rows["trained_tasks"].isna()]
    found: dict = {}
    for r in rows.to_dict("records"):
        if isinstance(r.get("cache_path"), str):
            found[Path(r["cache_path"]).as_posix()] = r
        key = tuple(None if pd.isna(r.get(k)) else int(r[k]) for k in ("trial", "seed", "update"))
        found[key] = r
    return found


def alpha_lookup(results: pd.DataFrame, task_id: str) -> dict:
    """{cache_path: α} and {(trial, seed, update): α} of the task's default-evaluation rows."""
    if "lpc_alpha" not in results.columns:
        return {}
    return {
        k: float(r["lpc_alpha"])
        for k, r in result_lookup(results, task_id).items()
        if pd.notna(r["lpc_alpha"])
    }


_RUN_PART = re.compile(r"^(trial|seed)_(\d+)$")


def trial_seed(folder: Path, root: Path) -> tuple[int | None, int | None]:
    """(trial, seed) of a cache folder below root = <cache_dir>/<task>, from its path alone."""
    found: dict[str, int] = {}
    for part in folder.relative_to(root).parts:
        m = _RUN_PART.match(part)
        if m and m.group(1) not in found:
            found[m.group(1)] = int(m.group(2))
    return found.get("trial"), found.get("seed")


def describe(data: CacheData, row: dict | None) -> dict:
    """CONDITION_COLUMNS (but state) of one cache: mop.conditions.run_recipe of its config and
    its results row."""
    rec, source = conditions.run_recipe(data.meta.get("config") or {}, row)
    if rec is None:
        return {"policy_type": None, "condition": None, "recipe": None, "recipe_source": source}
    cid = conditions.condition_id(rec)
    return {
        "policy_type": rec[conditions.POLICY_KEY],
        "condition": cid,
        "recipe": conditions.recipe_json(rec),
    } | {"recipe_source": source}


def build_table(
    cache_dir: str | Path,
    task_id: str,
    results: pd.DataFrame,
    previous: pd.DataFrame | None = None,
    force: bool = False,
    min_visits: int = sm.MIN_VISITS,
    notes: list[str] | None = None,
    runs: Collection[tuple[int, int]] | None = None,
    state: str = "cell",
) -> pd.DataFrame:
    """seed_metrics.csv of one task: previous rows kept (their caches not re-read) unless force or
    their condition is unknown; each row's condition from its cache's config (else its results
    row: mop.conditions.run_recipe); lpc_alpha from the results CSV, else a MoP run's config, and
    empty for a GRU (a cache without either: lpc_alpha empty, and a note). runs: only these
    (trial, seed) runs (a sweep manifest's)."""
    notes = notes if notes is not None else []
    system = phase_system(task_id)
    root = Path(cache_dir) / task_id
    if not root.is_dir():
        raise StatsError(f"no caches of {task_id} under {str(cache_dir)!r} (make them with batch_eval.py)")
    keep = pd.DataFrame(columns=columns_for(system))
    if previous is not None and not previous.empty and not force:
        if set(previous.get("task_id", pd.Series([task_id]))) != {task_id}:
            raise StatsError(f"{TABLE} holds other levels than {task_id}: pass another --out or --force")
        made = set(previous["state"].dropna()) if "state" in previous else set()
        if made - {state}:
            raise StatsError(
                f"{TABLE} was built with --state {made.pop()}, not {state}: pass another --out or --force"
            )
        # a table from before a column existed: the column, empty, in its place
        schema = columns_for(system)
        keep = previous.reindex(columns=[*schema, *(c for c in previous.columns if c not in schema)])
        keep = keep[keep["condition"].notna()]  # rows of unknown condition are read again
    if runs is not None:
        keep = keep[[(t, s) in runs for t, s in zip(keep["trial"], keep["seed"])]]
    done = set(keep["cache_path"]) if "cache_path" in keep else set()
    lookup = result_lookup(results, task_id)
    rows = []
    for folder in find_caches(root):
        if folder.as_posix() in done or (runs is not None and trial_seed(folder, root) not in runs):
            continue
        try:
            data = load_cache(folder)
        except CacheError as e:
            notes.append(f"skipped {folder}: {e}")
            continue
        fields = sm.run_fields(folder, root, data)
        if fields is None:  # knockout_* / eval_* evaluations are not the checkpoint's own numbers
            continue
        result = lookup.get(
            folder.as_posix(), lookup.get((fields["trial"], fields["seed"], fields["update"]))
        )
        what = describe(data, result)
        config_alpha = (data.meta.get("config") or {}).get("lpc_alpha")
        alpha = None if result is None or pd.isna(result.get("lpc_alpha")) else float(result["lpc_alpha"])
        if what["policy_type"] == "gru":
            alpha = math.nan  # train.py's rows say 0.0: a GRU has no LPC cost, not an α of 0
        elif alpha is None and what["recipe_source"] == "config" and config_alpha is not None:
            alpha = float(config_alpha)
        if alpha is None:
            notes.append(
                f"lpc_alpha of {folder} is not in the results CSV: row kept with lpc_alpha empty, "
                "left out of every per-α number (evaluate it with batch_eval.py)"
            )
            alpha = math.nan
        elif (
            config_alpha is not None
            and not math.isnan(alpha)
            and not math.isclose(alpha, float(config_alpha), rel_tol=1e-9)
        ):
            notes.append(f"{folder}: results CSV says lpc_alpha {alpha:g}, the cache's config {config_alpha}")
        try:
            numbers = checkpoint_stats(data, system, min_visits, state)
        except StatsError as e:
            notes.append(f"skipped {folder}: {e}")
            continue
        base = {"task_id": task_id, **{k: fields[k] for k in ("trial", "seed", "update")}, "lpc_alpha": alpha}
        extra = {"phase_system": system, "cache_path": folder.as_posix(), "_final": fields["final"]}
        rows.append(base | numbers | extra | what | {"state": state})
    new = pd.DataFrame(rows, columns=[*columns_for(system), "_final"])
    if not new.empty:  # a final checkpoint's cache beside the numbered one of the same update
        new = new.sort_values(["trial", "seed", "update", "_final"], na_position="first", kind="stable")
    new = new.drop(columns="_final")
    table = pd.concat([keep, new], ignore_index=True) if len(keep) else new
    # one row per (run folder, update): trial_<N>/ and trial_<N>/seed_0/ are two runs of seed 0
    # (final_rows then refuses them as one replicate trained twice), never one silently dropped
    folder = [run_folder(p) for p in table.get("cache_path", pd.Series([None] * len(table)))]
    table = table.assign(_run=folder).drop_duplicates(["trial", "seed", "update", "_run"], keep="first")
    table = table.drop(columns="_run")
    for key in ("trial", "seed", "update"):
        table[key] = pd.array(table[key].tolist(), dtype="Int64")
    unknown = table["condition"].isna().sum()
    if unknown:
        notes.append(
            f"{unknown} checkpoint(s) have no recipe (no config in the cache, no results CSV row): "
            "in the table, in no condition (evaluate them with batch_eval.py)"
        )
    return table.sort_values(["trial", "seed", "update"], na_position="first").reset_index(drop=True)


def check_manifest(table: pd.DataFrame, wanted: dict[tuple[int, int], str | None], cache_dir: str) -> None:
    """StatsError unless every run the manifest names has a row, of the condition it names."""
    present = set(zip(table["trial"], table["seed"]))
    missing = [k for k in wanted if k not in present]
    if missing:
        shown = ", ".join(f"trial {t} seed {s}" for t, s in missing[:4]) + (
            " ..." if len(missing) > 4 else ""
        )
        raise StatsError(
            f"the manifest names {len(missing)} run(s) with no evaluation under {cache_dir!r}: {shown} "
            "(run the sweep again to train and evaluate them)"
        )
    for r in final_rows(table).itertuples(index=False):
        said = wanted.get((r.trial, r.seed))
        if said is not None and r.condition != said:
            raise StatsError(
                f"trial {r.trial} seed {r.seed} is condition {r.condition} by its config, {said} by the manifest "
                "(retrained with another recipe?): re-run the sweep or remove that run"
            )


# ----------------------------------------------------------------------------- pooled cell grids


def pooled_cells(
    cache_dir: str | Path, table: pd.DataFrame, update: int | None = None, min_visits: int = sm.MIN_VISITS
) -> dict[tuple[str, str], tuple[pd.DataFrame, dict]]:
    """{(condition label, phase): (per-cell table of the pooled steps of every run of that
    condition, grid info)} for the phase × condition heatmaps: mean LPC, H(A|S), KL to the pooled
    P_a, cells with >= min_visits visits. Descriptive: the runs' steps pooled, no test."""
    from mop.routing_analysis import grid_info_for

    phases = phases_of(table)
    system = next(s for s, ph in PHASES.items() if list(ph) == phases)
    out = {}
    for _, label, group in runs_by_condition(table, update):
        loaded = [load_cache(p) for p in group["cache_path"]]
        steps = [
            d.steps[d.steps["action"].notna()].assign(
                _phase=phase_of_steps(d.steps[d.steps["action"].notna()], d.episodes, system)
            )
            for d in loaded
        ]
        pooled = pd.concat(steps, ignore_index=True)
        info = grid_info_for(pooled, pd.concat([d.episodes for d in loaded], ignore_index=True))
        global_pa = sm.marginal(pooled["action"].to_numpy(dtype=np.int64))
        for p in phases:
            part = pooled[pooled["_phase"] == p]
            cells = sm.cell_statistics(part, global_pa) if len(part) else pd.DataFrame()
            if len(cells) and (group["policy_type"] == "gru").all():
                cells["lpc"] = math.nan  # a GRU has no router: no LPC (its caches record 0)
            out[(label, p)] = (cells[cells["visits"] >= min_visits] if len(cells) else cells, info)
    return out


def draw_figures(
    table: pd.DataFrame,
    seeds: pd.DataFrame,
    scalars: pd.DataFrame,
    cache_dir: str | Path,
    update: int | None,
    notes: list[str],
    compared: pd.DataFrame | None = None,
    knocked: pd.DataFrame | None = None,
    layout: str = "screen",
) -> dict[str, Figure]:
    """Every figure stats.py writes, by file stem: the aggregates computed here (mop.inference,
    mop.contrasts, pooled_cells), drawn by mop.stats_plots; a figure that cannot be made is a note
    instead. layout: "screen" or "paper" (one 3.3 in paper column; mop/plot_style.py)."""
    from mop import stats_plots as plots

    kw = {"layout": layout}

    def pooled_scatter() -> Figure:
        runs = runs_with_alpha(table, update)
        runs = runs[runs["policy_type"].fillna("mop") != "gru"]  # no router: no LPC to plot
        return plots.plot_pooled_scatter(runs, phase_fits(runs, phases_of(table)), **kw)

    makers: dict[str, Callable[[], Figure]] = {
        "r_vs_alpha": lambda: plots.plot_r_vs_alpha(
            runs_with_alpha(table, update), spatial_for_figure(seeds), phases_of(table), **kw
        ),
        "metrics_vs_alpha": lambda: plots.plot_metrics_vs_alpha(
            runs_with_alpha(table, update), scalars, **kw
        ),
        "metrics_vs_update": lambda: plots.plot_metrics_vs_update(metrics_by_update(table), **kw),
        "pooled_scatter": pooled_scatter,
        "correlation_summary": lambda: plots.plot_correlation_summary(
            correlation_summary(table, update), **kw
        ),
    }
    if compared is not None and len(compared):
        makers["contrasts"] = lambda: plots.plot_contrasts(compared, **kw)
    if knocked is not None and len(knocked):
        makers["knockouts"] = lambda: plots.plot_knockouts(knocked, **kw)
    figures: dict[str, Figure] = {}
    for name, make in makers.items():
        try:
            figures[name] = make()
        except (ValueError, KeyError) as e:
            notes.append(f"figure {name} not drawn: {e}")
    try:
        cells = pooled_cells(cache_dir, table, update)
        for q in plots.QUANTITIES:
            figures[f"phase_alpha_{q}"] = plots.plot_phase_alpha_grid(cells, q, **kw)
    except (ValueError, KeyError, OSError, CacheError) as e:
        notes.append(f"phase × condition heatmaps not drawn: {e}")
    return figures


# ----------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> dict:
    from mop.cli_specs import stats_parser

    parser = stats_parser(__doc__)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (StatsError, CacheError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def parse_contrast(text: str) -> tuple[list[str], tuple[str, str] | None]:
    """--contrast "lpc_alpha" or "lpc_alpha,normalize_lpc=mop-1a2b3c4d:mop-5e6f7a8b"."""
    factors, sep, pair = text.partition("=")
    names = conditions.check_factors(factors.split(","))
    if not sep:
        return names, None
    a, colon, b = pair.partition(":")
    if not colon or not a.strip() or not b.strip():
        raise StatsError(f"--contrast {text!r}: name the pair as FACTORS=A:B (two condition ids)")
    return names, (a.strip(), b.strip())


def asked_text(items: list[str]) -> str:
    """How the contrasts' pairs were asked for, for the family statement: a named pair is fixed by
    the question; a factor alone takes every pair of the conditions present that differs only in
    it (name the pairs as FACTORS=A:B to fix the family before the runs exist)."""
    named = [c for c in items if "=" in c]
    factors = [c for c in items if "=" not in c]
    parts = [f"named: {', '.join(named)}"] if named else []
    if factors:
        parts.append(f"every pair present differing only in {' / '.join(factors)}")
    return "; ".join(parts)


def parse_margins(items: list[str]) -> dict[str, float]:
    """--margin "0.05" / "mean_lpc=2" -> {metric: margin}; StatsError for a margin <= 0 (or not a
    number) or a metric the contrasts do not test."""
    from mop.contrasts import DIFFERENCE

    out: dict[str, float] = {}
    for item in items:
        metric, sep, value = item.rpartition("=")
        metric = metric.strip() if sep else "success_rate"
        if metric not in DIFFERENCE:
            raise StatsError(
                f"--margin {item!r}: {metric!r} is not a contrast metric ({', '.join(DIFFERENCE)})"
            )
        try:
            m = float(value)
        except ValueError:
            m = math.nan
        if not (math.isfinite(m) and m > 0):
            raise StatsError(f"--margin {item!r}: a margin must be a number > 0")
        out[metric] = m
    return out


def validate(args: argparse.Namespace) -> tuple[Path, dict | None, list]:
    """(out, manifest, contrasts) after every check a bad command line fails, before anything is
    read or written."""
    safe_name(args.task_id, "--task_id")  # it names a folder under --cache_dir and the default --out
    if args.min_visits < 1:
        raise StatsError(f"--min_visits must be at least 1, got {args.min_visits}")
    if args.update is not None and args.update < 0:
        raise StatsError(f"--update must be >= 0, got {args.update}")
    if getattr(args, "time_course", False):
        raise StatsError('--time_course follows the levels of a multi-task --task_id ("A,B,C") over training')
    contrasts_asked = [parse_contrast(c) for c in args.contrast]
    args.margins = parse_margins(getattr(args, "margin", None) or [])
    if args.margins and not contrasts_asked:
        raise StatsError("--margin is the equivalence margin of a contrast: give --contrast too")
    metrics = getattr(args, "metrics", None)
    if metrics is not None and not contrasts_asked:
        raise StatsError("--metrics names the contrasts' family: give --contrast too")
    try:
        args.family_metrics = check_metrics(None if metrics is None else metrics.split(","))
    except ContrastError as e:
        raise StatsError(str(e)) from None
    unmeasured = [m for m in args.margins if m not in args.family_metrics]
    if unmeasured:
        raise StatsError(f"--margin {unmeasured[0]}: not one of --metrics ({', '.join(args.family_metrics)})")
    manifest = conditions.read_manifest(args.manifest) if args.manifest else None
    if manifest is not None and manifest["task_id"] != args.task_id:
        raise StatsError(
            f"--manifest {args.manifest!r} is a sweep of {manifest['task_id']}, not {args.task_id}"
        )
    default = Path("stats") / (
        safe_name(manifest.get("name", args.task_id), "manifest name") if manifest else args.task_id
    )
    out = Path(args.out) if args.out else default
    check_writable_dir(out, "--out")
    return out, manifest, contrasts_asked


def run(args: argparse.Namespace) -> dict:
    if "," in args.task_id:
        from mop.level_stats import run_levels

        return run_levels(args)
    out, manifest, asked = validate(args)
    results = read_results(args.results_path)
    if "lpc_alpha" not in results.columns:
        raise StatsError(f"results CSV {args.results_path!r} has no lpc_alpha column")
    previous = None
    if (out / TABLE).is_file() and not args.force:
        try:
            previous = pd.read_csv(out / TABLE)
        except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as e:
            raise StatsError(
                f"{out / TABLE} is not a table of stats.py ({type(e).__name__}): pass --force"
            ) from None
    notes: list[str] = []
    before = 0 if previous is None else len(previous)
    wanted = conditions.manifest_runs(manifest) if manifest else None
    table = build_table(
        args.cache_dir,
        args.task_id,
        results,
        previous,
        args.force,
        args.min_visits,
        notes,
        wanted,
        args.state,
    )
    if table.empty:
        raise StatsError(f"no default-evaluation caches of {args.task_id} under {args.cache_dir!r}")
    if wanted is not None:
        check_manifest(table, wanted, args.cache_dir)
    table = with_conditions(table)
    pairs = [p for factors, pair in asked for p in contrast_pairs(table, factors, pair)]
    compared, layouts = (
        contrasts(
            table,
            pairs,
            args.update,
            margins=args.margins,
            notes=notes,
            metrics=args.family_metrics,
            asked=asked_text(args.contrast),
        )
        if pairs
        else (pd.DataFrame(), pd.DataFrame())
    )
    knock, knock_layouts = knockout_pairs(results, args.task_id, table, args.update)
    phases = phases_of(table)
    for p in phases:
        few = table[table[f"n_cells_{p}"].fillna(0) < 3]
        if len(few):
            notes.append(
                f"phase {p}: {len(few)} of {len(table)} checkpoints have < 3 cells: spatial r left empty"
            )
    tables = {
        "across_seeds.csv": across_seeds(table, args.update),
        "decision_relevance.csv": partial_summary(table, args.update),
        "phase_pairs.csv": phase_pairs(table, args.update),
        "knockouts.csv": knock,
        "metrics_by_alpha.csv": metrics_by_alpha(table, args.update),
        "conditions.csv": condition_table(table, args.update),
    }
    if pairs:
        tables |= {"contrasts.csv": compared, "network_pairs.csv": layouts}
    if len(knock_layouts):
        tables["knockout_layouts.csv"] = knock_layouts
    out.mkdir(parents=True, exist_ok=True)
    written = {TABLE: out / TABLE}
    atomic_write(out / TABLE, lambda p: table.drop(columns="condition_label").to_csv(p, index=False))
    print(f"{TABLE}: {len(table)} rows ({len(table) - before} new) -> {out / TABLE}")
    for name, df in tables.items():
        atomic_write(out / name, lambda p, df=df: tidy(df).to_csv(p, index=False))
        written[name] = out / name
    runs = runs_with_alpha(table, args.update)
    if len(runs) and runs.groupby("condition").size().max() < 2:
        notes.append(f"one run per condition: the tables report r only ('{NO_INFERENCE}' where a p would be)")
    if not args.no_figures:
        figures = draw_figures(
            table, tables["across_seeds.csv"], tables["metrics_by_alpha.csv"], args.cache_dir, args.update,
            notes, compared, knock, getattr(args, "layout", "screen"),
        )  # fmt: skip
        for name, fig in figures.items():
            atomic_write(out / f"{name}.png", lambda p, fig=fig: fig.savefig(p, dpi=150, format="png"))
            written[f"{name}.png"] = out / f"{name}.png"
    for note in notes:
        print(f"note: {note}")
    for name, df in tables.items():
        if "family" in df.columns and len(df):
            print(f"{name}: {df['family'].iloc[0]}")
    _print_summary(tables["across_seeds.csv"], tables["decision_relevance.csv"], compared)
    print(f"wrote {len(written)} files to {out}/")
    return {
        "out": str(out),
        "rows": len(table),
        "written": {k: str(v) for k, v in written.items()},
        "notes": notes,
    }


def condition_table(table: pd.DataFrame, update: int | None = None) -> pd.DataFrame:
    """One row per condition: id, label, policy, its runs (trial seed) and seeds, and its recipe."""
    out = []
    for cid, label, group in runs_by_condition(table, update):
        group = group.sort_values(["trial", "seed"])
        runs = " ".join(f"t{t}s{s}" for t, s in zip(group["trial"], group["seed"]))
        out.append({"condition": cid, "condition_label": label, "policy_type": group["policy_type"].iloc[0]}
                   | {"runs": len(group), "run_ids": runs, "recipe": group["recipe"].iloc[0]})  # fmt: skip
    columns = ["condition", "condition_label", "policy_type", "runs", "run_ids", "recipe"]
    return pd.DataFrame(out, columns=columns)


def _interval(low, high) -> str:
    return "" if isinstance(low, str) or pd.isna(low) else f" [{low:+.2f}, {high:+.2f}]"


def _p(p, adjusted) -> str:
    return p if isinstance(p, str) else f"p={p:.3g} (Holm {adjusted:.3g})"


def _print_summary(seeds: pd.DataFrame, relevance: pd.DataFrame, compared: pd.DataFrame) -> None:
    show = seeds[seeds["correlation"].isin(SPATIAL)]
    for r in show.itertuples(index=False):
        print(
            f"{r.condition_label}: {r.phase} {r.correlation} r={r.mean_r:+.2f}{_interval(r.ci_low, r.ci_high)} "
            f"n={r.n} {_p(r.p, r.p_holm)}"
        )
    for r in relevance.itertuples(index=False):
        print(
            f"{r.condition_label}: {r.phase} {r.correlation} raw r={r.r:+.2f}{_interval(r.r_ci_low, r.r_ci_high)}, "
            f"given log visits r={r.r_given_visits:+.2f}{_interval(r.r_given_visits_ci_low, r.r_given_visits_ci_high)}"
        )
    for r in compared.itertuples(index=False) if len(compared) else []:
        what = "ratio" if r.scale == "ratio" else "difference"
        shown = isinstance(r.ci_low, float) and math.isfinite(r.ci_low) and isinstance(r.p, float)
        ci = f" [{r.ci_low:.3g}, {r.ci_high:.3g}] (95% t over seeds, within {r.bounds})" if shown else ""
        print(
            f"{r.metric}: {r.label_b} vs {r.label_a} at update {r.update}: {what} {r.estimate:.3g}{ci} "
            f"n={r.n} seeds, {_p(r.p, r.p_holm)}: {r.verdict}"
        )


if __name__ == "__main__":
    with command_edges():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            main()
