"""Evaluate every checkpoint that evaluation_results.csv does not hold yet, and cache its routing.

Scans checkpoints/ and modal_checkpoints/ (or --checkpoint_dir, repeatable) for
<task_id>/trial_<N>/[seed_<S>/]checkpoint_<update|final>.pt, evaluates each with eval_mop.evaluate,
merges one row per evaluation (the weights' run and update, evaluated task, knockout) into the
results CSV and writes the routing cache under evaluation_cache/. Every update that has weights and
no row is evaluated: a run's last update is checkpoint_<U>.pt (its checkpoint_final.pt is a link to
it and is not evaluated twice), so resuming a run to more updates leaves the earlier last update's
row and cache as they were. Rows are merged under a file lock and the CSV is replaced atomically,
so several batch_eval processes (or Modal jobs) never lose or duplicate a row, and a crash leaves
the previous file intact. Bot path lengths of the evaluation layouts are computed once per task and
reused by every checkpoint (evaluation_cache/_bot_paths/).

    python batch_eval.py                              # every checkpoint not yet in the CSV
    python batch_eval.py --num_episodes 200 --task BabyAI-GoToRedBall-v0 --trial 0 --seed 3 --update 1500
    python batch_eval.py --final_only --skip_routing --num_workers 2
    python batch_eval.py --final-only --task BabyAI-UnlockPickup-v0   # the earlier system's spellings
    python batch_eval.py --device cuda                # each checkpoint's envs act on the GPU

A multi-task checkpoint (checkpoints/multi_<A>+<B>/..., trained on "A,B") gets one row per level it
was trained on (those of --task_id, when given): `task_id` is the evaluated level there, and
`trained_tasks` (a column only CSVs with such rows have, after the EXTRA columns) its comma list.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mop.checks import command_edges
from mop.eval_options import EvalError, EvalOptions, cache_formats
from mop.level_names import check_task_id
from mop.results import (
    ResultsError,
    evaluation_identity,
    merge_results,
    read_results,
    result_row,
    results_identities,
)
from mop.runs import (
    DEFAULT_CHECKPOINT_DIRS,
    CheckpointRef,
    OutputError,
    RunId,
    RunPathError,
    canonical_checkpoints,
    check_writable_dir,
    check_writable_file,
    find_checkpoints,
    is_multi_task,
    run_task_name,
    split_task_ids,
)

if TYPE_CHECKING:  # the evaluator (torch, minigrid) and pandas load after the flags are checked
    import pandas as pd


class BatchEvalError(ValueError):
    pass


def discover(checkpoint_dirs: list[str]) -> list[CheckpointRef]:
    """Every set of weights under the given roots in the run layout, once
    (mop.runs.canonical_checkpoints): a checkpoint_final.pt whose numbered twin
    checkpoint_<U>.pt is there is left out (rows name the numbered file, as the earlier system's
    did); one without a twin (runs written before the last update was stored twice) is kept,
    carrying the update it holds (final_update; None if unreadable)."""
    return canonical_checkpoints(find_checkpoints(checkpoint_dirs), final_update)


def final_update(path: Path) -> int | None:
    """The update checkpoint_final.pt was written at (None if it cannot be read)."""
    from mop.experiment import load_checkpoint

    try:
        update = load_checkpoint(path)["config"].get("update")
    except ValueError:
        return None
    return int(update) if update is not None else None


def names_run(ref: CheckpointRef, task: str) -> bool:
    """Whether `task` names the checkpoint's run as a whole: its level, its comma list of levels
    or its folder name (multi_<A>+<B>)."""
    try:
        return task == ref.task_id or run_task_name(task) == ref.task_id
    except RunPathError:
        return False


def trained_on(ref: CheckpointRef, task: str) -> bool:
    """Whether a checkpoint's run trained on `task`: the run as a whole (names_run), a level of
    it, or a comma list of levels one of which it trained on."""
    return names_run(ref, task) or bool(set(ref.run.levels) & set(split_task_ids(task)))


def select(
    refs: list[CheckpointRef],
    task: str | None,
    trial: int | None,
    seed: int | None,
    update: int | None,
    final_only: bool,
) -> list[CheckpointRef]:
    out = []
    for r in refs:
        if task and not trained_on(r, task) or trial is not None and r.trial != trial:
            continue
        if seed is not None and r.seed != seed:
            continue
        if final_only and not r.is_final or update is not None and r.held_update != update:
            continue
        out.append(r)
    return out


# ----------------------------------------------------------------------------- evaluation jobs


@dataclass(frozen=True)
class BatchOptions:
    """One batch evaluation: how each checkpoint is evaluated, and where its results go. The
    EvalOptions' task_id is the level to evaluate on (None: each checkpoint's training level)."""

    eval: EvalOptions = field(default_factory=lambda: EvalOptions(num_episodes=1000))
    cache_dir: str = "evaluation_cache"
    results_path: str = "evaluation_results.csv"
    formats: tuple[str, ...] = ("parquet",)

    @property
    def skip_routing(self) -> bool:
        return not self.eval.record


def evaluate_one(ref: CheckpointRef, options: BatchOptions) -> dict:
    """Evaluate one checkpoint, write its cache, merge its row; returns the row (or an error)."""
    from eval_mop import EvalError, evaluate, load_policy, save_evaluation
    from mop.numpy_policy import use_one_thread

    use_one_thread()
    try:
        try:
            _, _, config = load_policy(ref.path, distilbert_path=options.eval.distilbert_path)
            RunId.of(config)  # names the cache folder and the bot-path file: refuse '../x' first
        except ValueError as e:
            raise EvalError(str(e)) from None
        if options.eval.task_id is None and is_multi_task(config["task_id"]):
            raise EvalError(
                f"trained on several levels ({config['task_id']}): evaluate one at a time "
                "(BatchOptions' eval.task_id; batch_eval.py's plan_jobs gives one job per level)"
            )
        eval_task = options.eval.task_id or config["task_id"]
        max_steps = options.eval.max_steps or config.get("max_steps")
        from mop.bot_paths import BotPaths

        bot_paths = BotPaths(eval_task, max_steps, options.cache_dir)  # shared by every checkpoint
        result = evaluate(ref.path, replace(options.eval, task_id=eval_task, max_steps=max_steps), bot_paths)
        bot_paths.save()
        cache = None
        if options.eval.record:
            cache = save_evaluation(result, ref.path, options.cache_dir, options.formats).as_posix()
        row = result_row(ref, config, result.metrics, cache)
        merge_results(options.results_path, [row])
        return row
    except EvalError as e:
        return {"checkpoint_path": ref.path, "error": str(e)}


def _pool_job(args: tuple) -> dict:
    return evaluate_one(*args)


def evaluation_levels(
    ref: CheckpointRef, eval_task_id: str | None, task: str | None = None
) -> list[str | None]:
    """The levels one checkpoint is evaluated on: eval_task_id if given; else None (its training
    level) for a single-task run, and every level of a multi-task run, or those of `task` (the
    --task_id filter) unless it names the whole run."""
    if eval_task_id:
        return [eval_task_id]
    if not is_multi_task(ref.task_id):
        return [None]
    if task and not names_run(ref, task):
        return [t for t in ref.run.levels if t in split_task_ids(task)]
    return ref.run.levels


def plan_jobs(
    refs: list[CheckpointRef],
    results: pd.DataFrame,
    eval_task_id: str | None,
    knockout: str,
    force: bool,
    task: str | None = None,
) -> list[tuple[CheckpointRef, str | None]]:
    """(checkpoint, level) evaluations still missing from the results (all of them with force);
    level None: the checkpoint's training level (single-task runs). An evaluation is in the
    results when a row has its identity (mop.results.evaluation_identity: the run folder and
    update of the weights, level and knockout), whichever file name the row gives the weights:
    the earlier system's checkpoint_<U>.pt row covers our checkpoint_final.pt holding update U."""
    done = set() if force else results_identities(results)
    return [
        (r, level)
        for r in refs
        for level in evaluation_levels(r, eval_task_id, task)
        if evaluation_identity(r.path, r.held_update, level or r.task_id, knockout) not in done
    ]


def plan(
    refs: list[CheckpointRef], results: pd.DataFrame, eval_task_id: str | None, knockout: str, force: bool
) -> list[CheckpointRef]:
    """Checkpoints that still need this evaluation (all of them with force); a multi-task one
    while any of its levels does."""
    jobs = plan_jobs(refs, results, eval_task_id, knockout, force)
    return list(dict.fromkeys(r for r, _ in jobs))


def main(argv: list[str] | None = None) -> dict:
    from mop.experiment import ArgumentParser

    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--checkpoint_dir",
        action="append",
        default=None,
        help=f"folder to scan, repeatable (default: {' and '.join(DEFAULT_CHECKPOINT_DIRS)})",
    )
    parser.add_argument(
        "--results_path",
        default="evaluation_results.csv",
        help="results CSV (default evaluation_results.csv)",
    )
    parser.add_argument(
        "--cache_dir", default="evaluation_cache", help="routing cache root (default evaluation_cache)"
    )
    parser.add_argument(
        "--num_episodes", type=int, default=1000, help="episodes per checkpoint (default 1000)"
    )
    parser.add_argument("--num_envs", type=int, default=16, help="envs stepped together (default 16)")
    parser.add_argument(
        "--num_workers",
        "--workers",
        dest="num_workers",
        type=int,
        default=1,
        help="checkpoints evaluated in parallel processes (default 1; --workers is an alias)",
    )
    parser.add_argument("--force", action="store_true", help="re-evaluate checkpoints already in the CSV")
    parser.add_argument(
        "--no_progress",
        action="store_true",
        help="no progress bars on stderr (default: bars, refreshed every ~10 s in a log or pipe)",
    )
    parser.add_argument(
        "--task_id",
        "--task",
        dest="task_id",
        default=None,
        help="only checkpoints trained on this level, or on any of a comma list of levels; a "
        "multi-task checkpoint is then evaluated on those of its levels (--task is the earlier "
        "system's spelling)",
    )
    parser.add_argument("--trial", type=int, default=None, help="only this trial")
    parser.add_argument("--seed", type=int, default=None, help="only this seed folder")
    parser.add_argument("--update", type=int, default=None, help="only checkpoint_<update>.pt")
    parser.add_argument(
        "--final_only",
        "--final-only",
        dest="final_only",
        action="store_true",
        help="only each run's last update (checkpoint_final.pt and the checkpoint_<U>.pt it links; "
        "--final-only is the earlier system's spelling)",
    )
    parser.add_argument("--skip_routing", action="store_true", help="metrics only, no routing cache (faster)")
    parser.add_argument(
        "--eval_task_id", default=None, help="evaluate on this level instead of the training one"
    )
    parser.add_argument("--max_steps", type=int, default=None, help="episode limit (default: each run's own)")
    parser.add_argument("--sample", action="store_true", help="sample actions instead of the argmax")
    parser.add_argument("--knockout", default=None, help="as eval_mop.py: 'largest' or 'layer_<k>:<j>[,...]'")
    parser.add_argument("--knockout_threshold", type=float, default=None, help="as eval_mop.py")
    from mop.eval_options import (
        add_cache_format_argument,
        add_device_argument,
        add_distilbert_path_argument,
        add_record_subgoals_argument,
    )

    add_cache_format_argument(parser)
    add_distilbert_path_argument(parser)
    add_device_argument(parser)
    add_record_subgoals_argument(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (BatchEvalError, ResultsError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def run(args: argparse.Namespace) -> dict:
    try:  # every flag and output is checked before the evaluator (torch) is imported
        evaluation = EvalOptions.from_args(args, record=not args.skip_routing)
        if args.num_workers < 1:
            raise EvalError(f"--num_workers must be at least 1, got {args.num_workers}")
        if args.record_subgoals and args.skip_routing:
            raise EvalError(
                "--record_subgoals records into the routing cache, which --skip_routing leaves out"
            )
        check_writable_file(args.results_path, "--results_path")
        if not args.skip_routing:
            check_writable_dir(args.cache_dir, "--cache_dir")
        if args.eval_task_id:
            check_task_id(args.eval_task_id)
        from eval_mop import eval_device

        eval_device(evaluation)  # a GPU this machine lacks: one line, nothing written
    except (EvalError, OutputError, ValueError) as e:
        raise BatchEvalError(str(e)) from None
    dirs = args.checkpoint_dir or list(DEFAULT_CHECKPOINT_DIRS)
    refs = discover(dirs)
    if not refs:
        raise BatchEvalError(
            f"no checkpoints (<task>/trial_<N>/[seed_<S>/]checkpoint_*.pt) under {', '.join(dirs)}"
        )
    refs = select(refs, args.task_id, args.trial, args.seed, args.update, args.final_only)
    if not refs:
        raise BatchEvalError("no checkpoint matches --task_id/--trial/--seed/--update/--final_only")
    jobs = plan_jobs(
        refs,
        read_results(args.results_path),
        args.eval_task_id,
        evaluation.knockout_label,
        args.force,
        args.task_id,
    )
    todo = list(dict.fromkeys(r for r, _ in jobs))
    levels = f" ({len(jobs)} evaluations: one per level of multi-task runs)" if len(jobs) > len(todo) else ""
    print(
        f"{len(refs)} checkpoints found, {len(todo)} to evaluate{levels} ({args.num_episodes} episodes each)"
    )
    formats = cache_formats(args.cache_format)
    options = BatchOptions(
        eval=evaluation,
        cache_dir=args.cache_dir,
        results_path=args.results_path,
        formats=formats,
    )

    def job_options(level: str | None, **settings: Any) -> BatchOptions:
        return replace(options, eval=replace(options.eval, task_id=level or options.eval.task_id, **settings))

    from mop.progress import progress_bar

    rows, errors = [], []
    # bars in a log too (refreshed every ~10 s): an evaluation of minutes is never silent
    bars = not args.no_progress
    with progress_bar(len(jobs), "evaluations", enabled=bars) as bar:
        if args.num_workers > 1 and len(jobs) > 1:
            with mp.get_context("spawn").Pool(min(args.num_workers, len(jobs))) as pool:
                for out in pool.imap_unordered(_pool_job, [(r, job_options(t)) for r, t in jobs]):
                    (errors if "error" in out else rows).append(out)
                    bar.update(1)
        else:
            for ref, level in jobs:
                out = evaluate_one(ref, job_options(level, progress=bars))
                (errors if "error" in out else rows).append(out)
                bar.update(1)
    for row in sorted(rows, key=lambda r: (r["checkpoint_path"], str(r.get("eval_task_id")))):
        ci = f"[{row['success_ci_low']:.2f}, {row['success_ci_high']:.2f}]"
        lpc = (
            ""
            if row.get("mean_lpc") is None or math.isnan(row["mean_lpc"])
            else f"  lpc {row['mean_lpc']:.0f}"
        )
        on = f" on {row['eval_task_id']}" if row.get("trained_tasks") else ""
        print(
            f"{row['checkpoint_path']}{on}: success {row['success_rate']:.3f} {ci}  path {row['path_ratio']:.2f}{lpc}"
        )
    if errors and not rows:  # one line: the first reason (the same for all, as a bad flag usually is)
        more = f" (and {len(errors) - 1} more checkpoints)" if len(errors) > 1 else ""
        raise BatchEvalError(f"no checkpoint could be evaluated{more}: {errors[0]['error']}")
    for e in errors:
        print(f"skipped {e['checkpoint_path']}: {e['error']}", file=sys.stderr)
    print(
        f"results: {args.results_path}" + ("" if args.skip_routing else f"; routing cache: {args.cache_dir}/")
    )
    return {"evaluated": rows, "errors": errors, "results_path": args.results_path}


if __name__ == "__main__":
    with command_edges(
        "interrupted: the rows and caches written so far are kept; run batch_eval.py again for the rest"
    ):
        main()
