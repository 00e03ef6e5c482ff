"""Statistics across checkpoints, seeds and lpc_alpha: does the compute the router chooses (LPC)
track how decision-relevant a state is, per task phase, and what does α trade for it?

Reads the routing caches of one task (<cache_dir>/<task>/trial_<N>/[seed_<S>/][update_<U>/], default
evaluations only) and evaluation_results.csv (the one source of lpc_alpha: its per-row value, from
the checkpoint's config; never guessed from the trial number). Writes, under --out (default
stats/<task>/), all atomically and without asking:
    seed_metrics.csv      one row per (trial, seed, update): α, success (with its episode counts
                          and 95% Wilson interval), path ratio, LPC, policy complexity, and r/p/n
                          per phase and correlation (built incrementally: a cache already in it is
                          skipped unless --force)
    across_seeds.csv      per (α, phase, correlation): Fisher-z mean r, 95% CI, t-test p, n, share > 0
    phase_pairs.csv       per (α, correlation, phase pair): paired t-test on z across runs, Holm-adjusted
    knockouts.csv         per (α, knockout, metric): paired t-test of knockout vs none across runs
    metrics_by_alpha.csv  success, LPC, policy complexity, path ratio per α: n, mean, 95% CI on
                          the metric's scale and the estimate it is centred on
    *.png                 the figures of stats_plots.py (--layout paper: each one 3.3 in paper column
                          wide; default screen: at most 10.5 in), each saying what its intervals are

    python stats.py --task_id BabyAI-UnlockPickup-v0
    python stats.py --task_id BabyAI-GoToLocal-v0 --cache_dir evaluation_cache \\
        --results_path evaluation_results.csv --out stats/gotolocal --update 5000 --force

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
- n_cells_<p> (cells with enough visits), n_steps_<p>: a phase with < 3 cells has no spatial r
  (an empty cell in the table, counted in the printed notes, never dropped silently).
- num_episodes, successes, success_ci_low/high: the counts behind success_rate (from the cache's
  episodes table) and their 95% Wilson interval (scipy.stats.binomtest(k, n).proportion_ci), the
  interval of that one run; NaN where the episodes do not give the counts.

Across seeds (the inference). Units: runs (trial, seed) at one update (--update, default each run's
last evaluated one). r is clipped to ±0.9999 and z = artanh(r); the test is a one-sample t-test on z
against 0 (scipy.stats.ttest_1samp) and the 95% CI is its t interval of the mean z, back-transformed
with tanh. Why t on z, not on r: z is close to normal whatever r is (r is bounded and skewed near ±1),
and why not the fixed-variance 1/(N-3) Fisher interval: that treats cells as independent and
ignores the seed-to-seed spread, which is the variance that matters for "does this replicate". One run
(n = 1): no inference, the p and CI cells say "n=1: no inference". Across α: the same, per α.
Paired comparisons: phase vs phase, the same runs' z values, scipy.stats.ttest_rel (paired t, for the
reason above; a Wilcoxon signed-rank test cannot reach p < 0.05 with n <= 5 seeds, two-sided);
knockout vs none: success rate and mean LPC of the same checkpoint with and without the knockout
(results CSV), paired t across runs. Holm's step-down correction over every test one figure or one
table shows (holm(); scipy has Benjamini-Hochberg, not Holm).
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
as mean_r is tanh of the mean z); `mean` is the runs' arithmetic mean.
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import stats as sps

import seed_metrics as sm
from mop.inference import (
    NO_INFERENCE,
    SPATIAL,
    TEMPORAL,
    StatsError,
    across_seeds,
    correlation_summary,
    final_rows,
    knockout_pairs,
    metrics_by_alpha,
    metrics_by_update,
    phase_fits,
    phase_pairs,
    phases_of,
    runs_by_alpha,
    runs_with_alpha,
    spatial_for_figure,
)
from mop.phases import PHASES, phase_of_steps, phase_system
from mop.results import read_results
from mop.routing_cache import CacheData, CacheError, find_caches, load_cache
from mop.runs import atomic_write

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
TABLE = "seed_metrics.csv"


# ----------------------------------------------------------------------------- per checkpoint


def columns_for(system: str) -> list[str]:
    """seed_metrics.csv's columns: seed_metrics' own, then the per-timestep r/p and the phase sizes."""
    cols = sm.columns_for(system)
    for p in PHASES[system]:
        for c in TEMPORAL:
            cols += [f"r_{p}_{c}", f"p_{p}_{c}"]
        cols += [f"n_cells_{p}", f"n_steps_{p}"]
    return cols + [*COUNT_COLUMNS, "phase_system", "cache_path"]


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


def checkpoint_stats(data: CacheData, system: str, min_visits: int = sm.MIN_VISITS) -> dict[str, float]:
    """Every number of one cache's row after lpc_alpha: seed_metrics.cache_metrics' (spatial r/p,
    policy complexity...), plus per phase the per-timestep r/p and n_cells/n_steps, and the
    success counts (success_counts)."""
    row = sm.cache_metrics(data, system)
    row |= success_counts(data.episodes, row["success_rate"])
    steps = data.steps
    acted = steps[steps["action"].notna()] if "action" in steps else steps.iloc[:0]
    empty = {f"{k}_{p}_{c}": math.nan for p in PHASES[system] for c in TEMPORAL for k in ("r", "p")}
    if acted.empty:
        return row | empty | {f"n_{w}_{p}": 0 for p in PHASES[system] for w in ("cells", "steps")}
    global_pa = sm.marginal(acted["action"].to_numpy(dtype=np.int64))
    phase = phase_of_steps(acted, data.episodes, system)
    for p in PHASES[system]:
        part = acted[phase == p]
        row[f"n_steps_{p}"] = len(part)
        cells = sm.cell_statistics(part, global_pa) if len(part) else None
        included = cells[cells["visits"] >= min_visits] if cells is not None else None
        row[f"n_cells_{p}"] = 0 if included is None else len(included)
        goal = goal_column(p, part) if len(part) else None
        if goal is None:
            row |= {k: v for k, v in empty.items() if f"_{p}_" in k}
            continue
        dist = part[goal].to_numpy(dtype=float)
        row[f"r_{p}_lpc_dist"], row[f"p_{p}_lpc_dist"] = sm.pearson(part["lpc"].to_numpy(dtype=float), dist)
        looked = part[["x", "y", goal]].join(included[["entropy", "kl"]], on=["x", "y"], how="inner")
        d = looked[goal].to_numpy(dtype=float)
        row[f"r_{p}_entropy_dist"], row[f"p_{p}_entropy_dist"] = sm.pearson(looked["entropy"].to_numpy(), d)
        row[f"r_{p}_kl_dist"], row[f"p_{p}_kl_dist"] = sm.pearson(looked["kl"].to_numpy(), d)
    return row


# ----------------------------------------------------------------------------- the table


def alpha_lookup(results: pd.DataFrame, task_id: str) -> dict:
    """{cache_path: α} and {(trial, seed, update): α} of the task's default-evaluation rows."""
    if results.empty or "lpc_alpha" not in results.columns:
        return {}
    rows = results[(results["task_id"] == task_id) & (results["knockout"].fillna("none") == "none")]
    if "eval_task_id" in rows.columns:
        rows = rows[rows["eval_task_id"].fillna(task_id) == task_id]
    if "trained_tasks" in rows.columns:  # a multi-task run's row of this level: another run's trial
        rows = rows[rows["trained_tasks"].isna()]
    found: dict = {}
    for r in rows.itertuples(index=False):
        alpha = getattr(r, "lpc_alpha", math.nan)
        if pd.isna(alpha):
            continue
        if isinstance(getattr(r, "cache_path", None), str):
            found[Path(r.cache_path).as_posix()] = float(alpha)
        key = tuple(None if pd.isna(v) else int(v) for v in (r.trial, r.seed, r.update))
        found[key] = float(alpha)
    return found


def build_table(
    cache_dir: str | Path,
    task_id: str,
    results: pd.DataFrame,
    previous: pd.DataFrame | None = None,
    force: bool = False,
    min_visits: int = sm.MIN_VISITS,
    notes: list[str] | None = None,
) -> pd.DataFrame:
    """seed_metrics.csv of one task: previous rows kept (their caches not re-read) unless force;
    α from the results CSV (a cache without a row there: lpc_alpha empty, and a note)."""
    notes = notes if notes is not None else []
    system = phase_system(task_id)
    root = Path(cache_dir) / task_id
    if not root.is_dir():
        raise StatsError(f"no caches of {task_id} under {str(cache_dir)!r} (make them with batch_eval.py)")
    keep = pd.DataFrame(columns=columns_for(system))
    if previous is not None and not previous.empty and not force:
        if set(previous.get("task_id", pd.Series([task_id]))) != {task_id}:
            raise StatsError(f"{TABLE} holds other levels than {task_id}: pass another --out or --force")
        # a table from before a column existed: the column, empty, in its place
        schema = columns_for(system)
        keep = previous.reindex(columns=[*schema, *(c for c in previous.columns if c not in schema)])
    done = set(keep["cache_path"]) if "cache_path" in keep else set()
    alphas = alpha_lookup(results, task_id)
    rows = []
    for folder in find_caches(root):
        if folder.as_posix() in done:
            continue
        try:
            data = load_cache(folder)
        except CacheError as e:
            notes.append(f"skipped {folder}: {e}")
            continue
        fields = sm.run_fields(folder, root, data)
        if fields is None:  # knockout_* / eval_* evaluations are not the checkpoint's own numbers
            continue
        alpha = alphas.get(folder.as_posix(), alphas.get((fields["trial"], fields["seed"], fields["update"])))
        config_alpha = (data.meta.get("config") or {}).get("lpc_alpha")
        if alpha is None:
            notes.append(
                f"lpc_alpha of {folder} is not in the results CSV: row kept with lpc_alpha empty, "
                "left out of every per-α number (evaluate it with batch_eval.py)"
            )
            alpha = math.nan
        elif config_alpha is not None and not math.isclose(alpha, float(config_alpha), rel_tol=1e-9):
            notes.append(f"{folder}: results CSV says lpc_alpha {alpha:g}, the cache's config {config_alpha}")
        base = {"task_id": task_id, **{k: fields[k] for k in ("trial", "seed", "update")}, "lpc_alpha": alpha}
        extra = {"phase_system": system, "cache_path": folder.as_posix(), "_final": fields["final"]}
        rows.append(base | checkpoint_stats(data, system, min_visits) | extra)
    new = pd.DataFrame(rows, columns=[*columns_for(system), "_final"])
    if not new.empty:  # a final checkpoint's cache beside the numbered one of the same update
        new = new.sort_values(["trial", "seed", "update", "_final"], na_position="first", kind="stable")
    new = new.drop(columns="_final")
    table = pd.concat([keep, new], ignore_index=True) if len(keep) else new
    table = table.drop_duplicates(["trial", "seed", "update"], keep="first")
    for key in ("trial", "seed", "update"):
        table[key] = pd.array(table[key].tolist(), dtype="Int64")
    return table.sort_values(["trial", "seed", "update"], na_position="first").reset_index(drop=True)


# ----------------------------------------------------------------------------- pooled cell grids


def pooled_cells(
    cache_dir: str | Path, table: pd.DataFrame, update: int | None = None, min_visits: int = sm.MIN_VISITS
) -> dict[tuple[float, str], tuple[pd.DataFrame, dict]]:
    """{(α, phase): (per-cell table of the pooled steps of every run of that α, grid info)} for the
    phase × α heatmaps: mean LPC, H(A|S), KL to the pooled P_a, cells with >= min_visits visits."""
    from mop.routing_analysis import grid_info_for

    phases = phases_of(table)
    system = next(s for s, ph in PHASES.items() if list(ph) == phases)
    out = {}
    for alpha, group in runs_by_alpha(table, update):
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
            out[(float(alpha), p)] = (cells[cells["visits"] >= min_visits] if len(cells) else cells, info)
    return out


def draw_figures(
    table: pd.DataFrame,
    seeds: pd.DataFrame,
    scalars: pd.DataFrame,
    cache_dir: str | Path,
    update: int | None,
    notes: list[str],
    layout: str = "screen",
) -> dict[str, Figure]:
    """Every figure stats.py writes, by file stem: the aggregates computed here (mop.inference,
    pooled_cells), drawn by mop.stats_plots; a figure that cannot be made is a note instead.
    layout: "screen" or "paper" (one 3.3 in paper column; mop/plot_style.py)."""
    from mop import stats_plots as plots

    kw = {"layout": layout}

    def pooled_scatter() -> Figure:
        runs = final_rows(table, update)
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
            correlation_summary(table, update), len(final_rows(table, update)), **kw
        ),
    }
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
    except (ValueError, KeyError, OSError) as e:
        notes.append(f"phase × α heatmaps not drawn: {e}")
    return figures


# ----------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> dict:
    from mop.experiment import ArgumentParser

    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--task_id", "--task", dest="task_id", required=True, help="gymnasium id of the level"
    )
    parser.add_argument(
        "--cache_dir", default="evaluation_cache", help="routing cache root (default evaluation_cache)"
    )
    parser.add_argument(
        "--results_path", default="evaluation_results.csv", help="results CSV, the source of lpc_alpha"
    )
    parser.add_argument("--out", default=None, help="output folder (default stats/<task_id>)")
    parser.add_argument(
        "--update", type=int, default=None, help="aggregate this update (default: each run's last)"
    )
    parser.add_argument(
        "--min_visits", type=int, default=sm.MIN_VISITS, help="visits for a cell to count (default 5)"
    )
    parser.add_argument("--force", action="store_true", help="recompute every cache's row")
    parser.add_argument("--no_figures", action="store_true", help="tables only")
    parser.add_argument(
        "--layout",
        choices=["screen", "paper"],
        default="screen",
        help="figures at most 10.5 in wide (screen, default) or one 3.3 in paper column (paper)",
    )
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (StatsError, CacheError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def run(args: argparse.Namespace) -> dict:
    out = Path(args.out or Path("stats") / args.task_id)
    out.mkdir(parents=True, exist_ok=True)
    results = read_results(args.results_path)
    if "lpc_alpha" not in results.columns:
        raise StatsError(f"results CSV {args.results_path!r} has no lpc_alpha column")
    previous = pd.read_csv(out / TABLE) if (out / TABLE).is_file() and not args.force else None
    notes: list[str] = []
    before = 0 if previous is None else len(previous)
    table = build_table(args.cache_dir, args.task_id, results, previous, args.force, args.min_visits, notes)
    if table.empty:
        raise StatsError(f"no default-evaluation caches of {args.task_id} under {args.cache_dir!r}")
    atomic_write(out / TABLE, lambda p: table.to_csv(p, index=False))
    print(f"{TABLE}: {len(table)} rows ({len(table) - before} new) -> {out / TABLE}")
    phases = phases_of(table)
    for p in phases:
        few = table[table[f"n_cells_{p}"].fillna(0) < 3]
        if len(few):
            notes.append(
                f"phase {p}: {len(few)} of {len(table)} checkpoints have < 3 cells: spatial r left empty"
            )
    seeds = across_seeds(table, args.update)
    pairs = phase_pairs(table, args.update)
    knock = knockout_pairs(results, args.task_id, table)
    scalars = metrics_by_alpha(table, args.update)
    written = {TABLE: out / TABLE}
    for name, df in (
        ("across_seeds.csv", seeds),
        ("phase_pairs.csv", pairs),
        ("knockouts.csv", knock),
        ("metrics_by_alpha.csv", scalars),
    ):
        atomic_write(out / name, lambda p, df=df: df.to_csv(p, index=False))
        written[name] = out / name
    runs = final_rows(table, args.update)
    if runs["seed"].nunique(dropna=False) < 2 and runs.groupby("lpc_alpha").size().max() < 2:
        notes.append(f"one run per α: the tables report r only ('{NO_INFERENCE}' where a p would be)")
    if not args.no_figures:
        figures = draw_figures(
            table, seeds, scalars, args.cache_dir, args.update, notes, getattr(args, "layout", "screen")
        )
        for name, fig in figures.items():
            atomic_write(out / f"{name}.png", lambda p, fig=fig: fig.savefig(p, dpi=150, format="png"))
            written[f"{name}.png"] = out / f"{name}.png"
    for note in notes:
        print(f"note: {note}")
    _print_summary(seeds)
    print(f"wrote {len(written)} files to {out}/")
    return {
        "out": str(out),
        "rows": len(table),
        "written": {k: str(v) for k, v in written.items()},
        "notes": notes,
    }


def _print_summary(seeds: pd.DataFrame) -> None:
    show = seeds[seeds["correlation"].isin(SPATIAL)]
    for r in show.itertuples(index=False):
        p = r.p if isinstance(r.p, str) else f"p={r.p:.3g} (Holm {r.p_holm:.3g})"
        ci = "" if isinstance(r.ci_low, str) or pd.isna(r.ci_low) else f" [{r.ci_low:+.2f}, {r.ci_high:+.2f}]"
        print(f"α={r.lpc_alpha:g} {r.phase:22s} {r.correlation:14s} r={r.mean_r:+.2f}{ci} n={r.n} {p}")


if __name__ == "__main__":
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        main()
