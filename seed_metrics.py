"""The seed-metrics table, `eval_metrics_<task>.csv`: one row per (trial, seed, update) cache of a
task with the scalar metrics the earlier system's figures plot (reference_facts §8.7).

Reads the routing caches under <cache_dir>/<task_id>/trial_<N>/[seed_<S>/][update_<U>/] (ours,
and the earlier system's routing_data.json caches through routing_cache.load_cache; knockout and
cross-task evaluations are left out) and, for lpc_alpha, evaluation_results.csv. Writes the CSV
atomically. Columns, in this order: task_id, trial, seed, update, lpc_alpha, success_rate,
path_ratio, mean_lpc, policy_complexity; then for every phase p of the task's phase system and
c in (lpc_entropy, lpc_kl_local, lpc_kl_global) r_<p>_<c>, p_<p>_<c>; then per phase
policy_complexity_<p>, mean_entropy_<p>, mean_lpc_<p>.

    python seed_metrics.py --results evaluation_results.csv --cache_dir evaluation_cache \\
        --task BabyAI-UnlockPickup-v0 --out eval_metrics_unlockpickup.csv
    python seed_metrics.py --task BabyAI-OpenTwoDoors-v0 --out eval_metrics_opentwodoorsv0.csv

Definitions, as the earlier system computes them (so its plotting scripts read our rows unchanged):
- state = the (x, y) cell only; per cell, π̂(a|s) = (n_sa + 0.5) / (n_s + 7 · 0.5) from the actions
  taken (greedy evaluation: the spread of the argmax over visits, not the policy's own entropy);
  P_a = the same smoothing of the pooled action counts; cells with n_s >= 5 are "included";
- entropies and KLs in **bits** (log2), as its CSVs hold; the steps table's `entropy` column (the
  policy's own entropy) is in nats and is not used here;
- policy_complexity = I(S;A) estimate = Σ_included P(s) · KL(π̂(·|s) ‖ P_a) with P(s) = n_s / all
  records: **not renormalised** after dropping the cells below 5 visits, reproduced for
  compatibility with its numbers (it underestimates I(S;A) by the dropped mass; §9.2.12);
- per phase: the phase's records, the whole cache's P_a; mean_entropy_<p> = Σ_included P(s) · H(s)
  (same unrenormalised P(s) over the phase's records); mean_lpc_<p> = mean LPC of its records;
- r/p: Pearson (scipy.stats.pearsonr) over the phase's included cells between per-cell mean LPC and
  per-cell H(s) (lpc_entropy), KL to the phase's own P_a (lpc_kl_local) and to the whole cache's
  P_a (lpc_kl_global); NaN with fewer than 3 cells or a constant series (constant up to float
  rounding: experts of equal sizes give every step the same LPC). As in its tables, p treats
  cells as independent samples (they are not: neighbouring cells share episodes), so read p as
  descriptive;
- phases: by default the earlier system's phase system of the level (mop.phases.
  legacy_phase_system, its TASK_PHASE_SYSTEM): BabyAI-UnlockPickup-v0 the 4 key phases (pre_key:
  nothing picked up yet; post_key_pre_unlock: picked up, no door opened; with_key_post_unlock:
  door opened, no drop; post_unlock_post_key: dropped), checked in that order on the timestamps
  visible at each step as its `key_phase` does; BabyAI-OpenTwoDoors-v0 pre_unlock / post_unlock
  (routing_analysis' by_door_unlocked_phase, the same rule); every other level one phase, named
  "None" as in its files (r_None_lpc_entropy, ...), so its `seed_agg_plots.py --from_csv` finds
  the columns it looks for. --phase_system picks another (ours for door levels: unlock_phase);
  stats.py's own tables use mop.phases.phase_system and call the single phase "all".
Where it is not the same: on our caches t_drop is the first drop after the first pickup, its the
first drop once a door is open, so a key dropped before the door opens moves our steps to
post_unlock_post_key as soon as the door opens (its: with_key_post_unlock until the next drop); on
its own caches read back, its timestamps and so its phases are used exactly. lpc_alpha comes from
the cache's run config (its caches have none: then the results CSV row of (trial, seed, update),
else the first row of the trial, as it did). One row per (trial, seed, update): a final
checkpoint's cache that repeats a numbered checkpoint's update is not written twice. A run trained
without --seed (no seed_<S>/ folder) is seed 0, as training seeds it, and its row says 0.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from mop.checks import command_edges
from mop.inference import constant
from mop.phases import (
    PHASES,
    SPATIAL,
    legacy_columns,
    legacy_phase_system,
    phase_of_steps,
    phase_system,  # noqa: F401  (ours, re-exported: callers use sm.phase_system)
)
from mop.results import ResultsError, read_results
from mop.routing_cache import CacheData, CacheError, find_caches, load_cache
from mop.runs import OutputError, RunPathError, atomic_write, check_writable_file, safe_name

MIN_VISITS = 5
SMOOTHING = 0.5  # Jeffreys prior on each action's count
NUM_ACTIONS = 7
BASE_COLUMNS = (
    "task_id",
    "trial",
    "seed",
    "update",
    "lpc_alpha",
    "success_rate",
    "path_ratio",
    "mean_lpc",
    "policy_complexity",
)


def columns_for(system: str) -> list[str]:
    """The CSV's columns, in order, for a phase system."""
    phases = PHASES[system]
    cols = list(BASE_COLUMNS)
    for p in phases:
        for c in SPATIAL:
            cols += [f"r_{p}_{c}", f"p_{p}_{c}"]
    for p in phases:
        cols += [f"policy_complexity_{p}", f"mean_entropy_{p}", f"mean_lpc_{p}"]
    return cols


def marginal(actions: np.ndarray) -> np.ndarray:
    """P_a: the smoothed distribution of the actions taken."""
    counts = np.bincount(actions, minlength=NUM_ACTIONS)[:NUM_ACTIONS].astype(float)
    return (counts + SMOOTHING) / (counts.sum() + SMOOTHING * NUM_ACTIONS)


CELL = ("x", "y")  # the state of these definitions; stats.py --state may refine it (STATES there)


def cell_statistics(
    steps: pd.DataFrame, reference: np.ndarray | None = None, keys: tuple[str, ...] = CELL
) -> pd.DataFrame:
    """Per visited state (index `keys`, the (x, y) cell unless given): visits, p_state = visits /
    all records, entropy and kl (bits, KL to `reference`, default the marginal of these steps),
    mean lpc, mean_t (the mean step within the episode of its visits, where the steps have t),
    included (visits >= 5)."""
    steps = steps[steps["action"].notna()]
    actions = steps["action"].to_numpy(dtype=np.int64)
    keys = list(keys)
    if reference is None:
        reference = marginal(actions)
    counts = (
        steps.assign(action=actions)
        .groupby([*keys, "action"])
        .size()
        .unstack("action", fill_value=0)
        .reindex(columns=range(NUM_ACTIONS), fill_value=0)
    )
    n = counts.to_numpy(dtype=float)
    visits = n.sum(1)
    policy = (n + SMOOTHING) / (visits[:, None] + SMOOTHING * NUM_ACTIONS)
    table = pd.DataFrame(
        {
            "visits": visits.astype(int),
            "p_state": visits / max(visits.sum(), 1.0),
            "entropy": -(policy * np.log2(policy)).sum(1),
            "kl": (policy * (np.log2(policy) - np.log2(reference))).sum(1),
            "lpc": steps.groupby(keys)["lpc"].mean().reindex(counts.index).to_numpy(),
        },
        index=counts.index,
    )
    if "t" in steps:
        table["mean_t"] = steps.groupby(keys)["t"].mean().reindex(counts.index).to_numpy(dtype=float)
    table["included"] = table["visits"] >= MIN_VISITS
    return table


def pearson(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if len(a) < 3 or constant(a) or constant(b):  # constant: up to float rounding
        return math.nan, math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = stats.pearsonr(a, b)
    return float(result.statistic), float(result.pvalue)


def cache_metrics(data: CacheData, system: str, keys: tuple[str, ...] = CELL) -> dict[str, float]:
    """The metric columns of one cache's row (everything after lpc_alpha); `keys`: the state."""
    steps = data.steps
    metrics = data.meta.get("metrics") or {}
    row: dict[str, float] = {k: _number(metrics.get(k)) for k in ("success_rate", "path_ratio", "mean_lpc")}
    acted = steps[steps["action"].notna()] if "action" in steps else steps.iloc[:0]
    if acted.empty:  # its v1/v2 caches record no actions: no action statistics
        return row | {c: math.nan for c in columns_for(system)[len(BASE_COLUMNS) - 1 :]}
    global_pa = marginal(acted["action"].to_numpy(dtype=np.int64))
    overall = cell_statistics(acted, global_pa, keys)
    inc = overall[overall["included"]]
    row["policy_complexity"] = float((inc["p_state"] * inc["kl"]).sum())
    phase = phase_of_steps(acted, data.episodes, system)
    per_phase: dict[str, float] = {}
    for p in PHASES[system]:
        part = acted[phase == p]
        if part.empty:
            for c in SPATIAL:
                row[f"r_{p}_{c}"] = row[f"p_{p}_{c}"] = math.nan
            per_phase |= {f"policy_complexity_{p}": math.nan, f"mean_entropy_{p}": math.nan}
            per_phase[f"mean_lpc_{p}"] = math.nan
            continue
        cells = cell_statistics(part, global_pa, keys)
        inc = cells[cells["included"]]
        local = cell_statistics(part, None, keys)["kl"][cells["included"]].to_numpy()
        lpc = inc["lpc"].to_numpy()
        for c, values in zip(SPATIAL, (inc["entropy"].to_numpy(), local, inc["kl"].to_numpy())):
            row[f"r_{p}_{c}"], row[f"p_{p}_{c}"] = pearson(lpc, values)
        per_phase[f"policy_complexity_{p}"] = float((inc["p_state"] * inc["kl"]).sum())
        per_phase[f"mean_entropy_{p}"] = float((inc["p_state"] * inc["entropy"]).sum())
        per_phase[f"mean_lpc_{p}"] = float(part["lpc"].mean())
    return row | per_phase


def _number(value: Any) -> float:
    try:
        return math.nan if value is None else float(value)
    except (TypeError, ValueError):
        return math.nan


def run_fields(folder: Path, root: Path, data: CacheData) -> dict | None:
    """trial, seed, update of a default-evaluation cache folder below root = <cache_dir>/<task>
    (also its double-task-id layout <task>/<task>/trial_N), None for knockout/eval_* ones."""
    parts = folder.relative_to(root).parts
    if parts and parts[0] == root.name:
        parts = parts[1:]
    if not parts or not re.fullmatch(r"trial_\d+", parts[0]):
        return None
    fields: dict[str, Any] = {"trial": int(parts[0][6:]), "seed": None, "update": None}
    for p in parts[1:]:
        if re.fullmatch(r"seed_\d+", p):
            fields["seed"] = int(p[5:])
        elif re.fullmatch(r"update_\d+", p):
            fields["update"] = int(p[7:])
        elif p != "update_unknown":  # eval_<task>/, knockout_<spec>/
            return None
    config = data.meta.get("config") or {}
    if fields["seed"] is None:  # a run trained without --seed is seed 0 (experiment.run_seed)
        fields["seed"] = 0
    fields["final"] = fields["update"] is None
    if fields["update"] is None and config.get("update") is not None:
        fields["update"] = int(config["update"])
    return fields


def _alpha(data: CacheData, results: pd.DataFrame | None, task_id: str, fields: dict) -> float:
    config = data.meta.get("config") or {}
    if config.get("lpc_alpha") is not None:
        return float(config["lpc_alpha"])
    if results is None or results.empty or "lpc_alpha" not in results.columns:
        return math.nan
    rows = results[(results["task_id"] == task_id) & (results["trial"] == fields["trial"])]
    if "trained_tasks" in rows.columns:  # a multi-task run's row of this level: another run
        rows = rows[rows["trained_tasks"].isna()]
    if "knockout" in rows.columns:
        rows = rows[rows["knockout"].fillna("none") == "none"]
    same = rows
    for key in ("seed", "update"):
        if key in rows.columns:
            value = fields[key]
            same = same[same[key].isna()] if value is None else same[same[key] == value]
    chosen = same if len(same) else rows  # as it did: else the trial's first row
    return _number(chosen["lpc_alpha"].iloc[0]) if len(chosen) else math.nan


def seed_metrics(
    cache_dir: str | Path,
    task_id: str,
    results_path: str | Path | None = None,
    system: str | None = None,
) -> pd.DataFrame:
    """The seed-metrics table of one task: a row per (trial, seed, update) cache, sorted, with the
    earlier system's phases (system None: its default for the level, legacy_phase_system) and
    column names (legacy_columns: the none system's phase is "None")."""
    system = system or legacy_phase_system(task_id)
    if system not in PHASES:
        raise ValueError(f"phase system must be one of {list(PHASES)}, not {system!r}")
    root = Path(cache_dir) / task_id
    results = None
    if results_path is not None and Path(results_path).is_file():
        results = read_results(results_path)  # one reader: a foreign or binary CSV is one line
    rows, folders = [], []
    for folder in find_caches(root) if root.is_dir() else []:
        data = load_cache(folder)
        fields = run_fields(folder, root, data)
        if fields is None:
            continue
        row = {
            "task_id": task_id,
            "trial": fields["trial"],
            "seed": fields["seed"],
            "update": fields["update"],
            "lpc_alpha": _alpha(data, results, task_id, fields),
            "_final": fields["final"],
        }
        rows.append(row | cache_metrics(data, system))
        folders.append(folder.parent if folder.name.startswith("update_") else folder)
    table = pd.DataFrame(rows, columns=[*columns_for(system), "_final"])
    # A final checkpoint evaluated beside the numbered one of the same update: keep the numbered.
    # Two runs of one trial (trial_<N>/ and trial_<N>/seed_0/) are both seed 0: both rows stay.
    table["_run"] = [str(f) for f in folders]
    table = table.sort_values(["trial", "seed", "update", "_final"], na_position="first", kind="stable")
    table = table.drop_duplicates(["trial", "seed", "update", "_run"], keep="first")
    table = table.drop(columns=["_final", "_run"])
    for key in ("trial", "seed", "update"):
        table[key] = pd.array(table[key].tolist(), dtype="Int64")
    table.columns = legacy_columns(list(table.columns))
    return table.reset_index(drop=True)


def main(argv: list[str] | None = None) -> dict:
    from mop.experiment import ArgumentParser

    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True, help="gymnasium id, e.g. BabyAI-UnlockPickup-v0")
    parser.add_argument(
        "--cache_dir", default="evaluation_cache", help="cache root (default evaluation_cache)"
    )
    parser.add_argument(
        "--results",
        default="evaluation_results.csv",
        help="results CSV, for lpc_alpha where a cache's config lacks it (default evaluation_results.csv)",
    )
    parser.add_argument(
        "--out",
        default=None,
        help="output CSV (default eval_metrics_<level, lower case>.csv, e.g. eval_metrics_unlockpickup.csv)",
    )
    parser.add_argument(
        "--phase_system",
        choices=list(PHASES),
        default=None,
        help="default: the earlier system's for the task (key_phase for UnlockPickup, unlock_phase for "
        "OpenTwoDoors, none otherwise: columns r_None_*)",
    )
    args = parser.parse_args(argv)
    name = args.task.removeprefix("BabyAI-").removesuffix("-v0").lower().replace("-", "")
    out = Path(args.out or f"eval_metrics_{name}.csv")
    try:
        safe_name(args.task, "--task")  # it names a folder under --cache_dir
        check_writable_file(out, "--out")
        table = seed_metrics(args.cache_dir, args.task, args.results, args.phase_system)
    except (CacheError, ResultsError, OutputError, RunPathError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if table.empty:
        print(
            f"error: no caches of {args.task} under {args.cache_dir!r} (make them with batch_eval.py)",
            file=sys.stderr,
        )
        sys.exit(2)
    atomic_write(out, lambda p: table.to_csv(p, index=False))
    print(f"{len(table)} rows -> {out}")
    return {"path": str(out), "rows": len(table)}


if __name__ == "__main__":
    with command_edges():
        main()
