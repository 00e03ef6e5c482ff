"""The MoP paper's headline on BabyAI, one command: does a policy trained on a mix of levels route
the harder ones through more complex pathways, and does that change over training?

Cook et al. (2025) report that hard tasks are first learned in complex experts and later moved to
simpler ones. This runs the whole question on BabyAI levels, every step resumable:

  1. train    one multi-task MoP run per seed on every level of --levels (trial --trial), with a
              checkpoint every --checkpoint_interval updates (the time course's points), and
              single-task repeats of the same recipe on each level alone (the levels' difficulty
              by learning speed: updates to train/ce <= --ce_threshold, mop/difficulty.py)
  2. evaluate every checkpoint of the multi-task runs on each of its levels (batch_eval.py: the
              same --episodes layouts per level, routing caches)
  3. stats    stats.py --task_id "A,B,C" --time_course: LPC by level with runs as units at every
              checkpoint (pairs of levels, Holm over updates x pairs), the levels' difficulty and
              the hardest level only where intervals separate
  4. causal   causal.py per level on the runs' last checkpoints: what each expert causes on that
              level (zero / route-around / swap), beside its routing there

Writes under --out (default headline/): checkpoints/, evaluation_results.csv, evaluation_cache/,
stats/ (by_level.csv, level_pairs.csv, difficulty.json, time_course.csv, time_course_pairs.csv,
time_course_<condition>.png) and causal/<level>/. Run again to continue where it stopped: trained
runs are skipped or resumed, evaluated checkpoints are not evaluated again, a level whose causal
table exists is not played again.

    python headline.py                                                     # the three default levels, seeds 0-2
    python headline.py --levels "BabyAI-GoToLocal-v0,BabyAI-PickupLoc-v0,BabyAI-UnlockPickup-v0" \\
        --seeds 0-2 --num_updates 1000 --checkpoint_interval 100 --single_task_updates 400 --episodes 100
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mop.checks import ConfigError, check_number, command_edges, refuse
from mop.experiment import ArgumentParser
from mop.level_names import check_task_ids
from mop.runs import OutputError, check_writable_dir, run_task_name

DEFAULT_LEVELS = "BabyAI-GoToLocal-v0,BabyAI-PickupLoc-v0,BabyAI-UnlockPickup-v0"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--levels", default=DEFAULT_LEVELS, help=f"comma list of 2+ BabyAI levels (default {DEFAULT_LEVELS})"
    )
    parser.add_argument(
        "--seeds", default="0-2", help="seeds of the multi-task runs and of each level's repeats"
    )
    parser.add_argument("--trial", type=int, default=0, help="trial of every run (default 0)")
    parser.add_argument(
        "--num_updates", type=int, default=1000, help="updates of each multi-task run (default 1000)"
    )
    parser.add_argument(
        "--checkpoint_interval",
        type=int,
        default=100,
        help="updates between the time course's points (default 100)",
    )
    parser.add_argument(
        "--single_task_updates",
        type=int,
        default=400,
        help="updates of each single-task repeat (default 400)",
    )
    parser.add_argument(
        "--episodes", type=int, default=100, help="evaluation layouts per level (default 100)"
    )
    parser.add_argument(
        "--causal_episodes", type=int, default=100, help="layouts of each causal intervention (default 100)"
    )
    parser.add_argument(
        "--ce_threshold", type=float, default=1.0, help="learning speed: updates to train/ce <= this"
    )
    parser.add_argument("--config", default=None, help="recipe YAML (default config.yaml)")
    parser.add_argument("--out", default="headline", help="output folder (default headline/)")
    parser.add_argument("--skip_causal", action="store_true", help="stop after the statistics")
    args = parser.parse_args(argv)
    try:
        args.level_list = check_task_ids(args.levels)
        if len(args.level_list) < 2:
            raise ConfigError(f"--levels: a multi-task run needs two or more levels, got {args.levels!r}")
        for flag, value, high in (
            ("--num_updates", args.num_updates, 10**7),
            ("--checkpoint_interval", args.checkpoint_interval, 10**7),
            ("--single_task_updates", args.single_task_updates, 10**7),
            ("--episodes", args.episodes, 10**6),
            ("--causal_episodes", args.causal_episodes, 10**6),
        ):
            check_number(value, flag, 1, high, whole=True)
        check_number(args.trial, "--trial", 0, 10**6, whole=True)
        check_number(args.ce_threshold, "--ce_threshold", 0, None, low_open=True)
        if args.checkpoint_interval > args.num_updates:
            raise ConfigError("--checkpoint_interval: larger than --num_updates leaves no time course")
        import sweep

        args.seed_list = sweep.parse_seeds(args.seeds)
        check_writable_dir(args.out, "--out")
    except (ValueError, ConfigError, OutputError) as e:  # SweepError and a bad level are ValueErrors
        refuse(str(e).removeprefix("task_id: "))
    return args


def train(args: argparse.Namespace, checkpoints: Path) -> None:
    import sweep

    config = args.config or ("config.yaml" if Path("config.yaml").exists() else None)
    common = {"trial": args.trial, "checkpoint_dir": str(checkpoints)}
    jobs = [
        {**common, "task_id": args.levels, "seed": s, "num_updates": args.num_updates,
         "checkpoint_interval": args.checkpoint_interval}
        for s in args.seed_list
    ] + [
        {**common, "task_id": level, "seed": s, "num_updates": args.single_task_updates,
         "checkpoint_interval": args.single_task_updates}
        for level in args.level_list for s in args.seed_list
    ]  # fmt: skip
    for k, overrides in enumerate(jobs, 1):
        what = "multi-task" if "," in overrides["task_id"] else overrides["task_id"]
        print(f"[train {k}/{len(jobs)}] {what} seed {overrides['seed']}", flush=True)
        done = sweep.train_one(overrides, config, progress=True)  # a bar: minutes are never silent
        if done.get("skipped"):
            print(f"  {done['skipped']}")


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    out = Path(args.out)
    checkpoints = out / "checkpoints"
    results = out / "evaluation_results.csv"
    cache = out / "evaluation_cache"
    train(args, checkpoints)

    import batch_eval
    import stats

    print("[evaluate] every checkpoint of the multi-task runs, on each level", flush=True)
    batch_eval.main(
        ["--checkpoint_dir", str(checkpoints), "--task_id", args.levels, "--trial", str(args.trial),
         "--num_episodes", str(args.episodes), "--results_path", str(results), "--cache_dir", str(cache)]
    )  # fmt: skip
    print("[stats] routing by level, its time course and the levels' difficulty", flush=True)
    summary = stats.main(
        ["--task_id", args.levels, "--results_path", str(results), "--single_task_dir", str(checkpoints),
         "--out", str(out / "stats"), "--time_course", "--ce_threshold", str(args.ce_threshold)]
    )  # fmt: skip
    written = {"stats": summary["out"]}
    if not args.skip_causal:
        import causal

        runs = checkpoints / run_task_name(args.levels) / f"trial_{args.trial}"
        for level in args.level_list:
            target = out / "causal" / level
            if (target / "causal_summary.csv").is_file():
                print(f"[causal] {level}: done before ({target})")
            else:
                print(
                    f"[causal] {level}: every expert of the runs' last checkpoints, played on {level}",
                    flush=True,
                )
                causal.main(
                    causal.CausalConfig(
                        runs=tuple(str(p) for p in sorted(runs.glob("seed_*"))),
                        task_id=level,
                        episodes=args.causal_episodes,
                        out=str(target),
                    )
                )
            written[f"causal {level}"] = str(target)
    print("headline: " + "; ".join(f"{k} -> {v}" for k, v in written.items()))
    return written


if __name__ == "__main__":
    with command_edges("interrupted; run the same command again to continue"):
        sys.exit(0 if main() else 1)
