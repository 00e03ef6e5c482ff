"""Sample efficiency of offline behavioural cloning against BabyAI's imitation learning.

Trains train_mop's recipe with `--demos 2^k` for each k of the grid (smallest first), each for
`--epochs` passes over its demos (at least `--min_updates`, at most `--max_updates` updates),
evaluates the final weights on `--eval_episodes` evaluation layouts (Wilson 95% interval), and
prints the smallest demo count that reaches `--target`, beside BabyAI's estimate for the level
(GoToLocal: 148.5-193.2 K demos to 99%, BabyAI 1.0/1.1). Stops at the first count that reaches
the target unless `--all`. Resumable: counts already in the CSV (same recipe) are not retrained;
each row stores its resolved config (`config`, JSON), and a count whose row was made under another
config (config.yaml edited since) is refused with the keys that differ (exit 2), not reused.

    python bench/sample_efficiency.py --task BabyAI-GoToLocal-v0
    python bench/sample_efficiency.py --task BabyAI-GoToLocal-v0 --k 8,10,12,14,16 --epochs 30 --all
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

# the repository (train_mop, ...) and bench/ (levels), when run as a script or imported as bench.*
sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]

from levels import parse_sets, read_rows, recipe_of, stale_row, train_command, write_rows  # noqa: E402  (bench/levels.py)

if TYPE_CHECKING:
    from mop.experiment import TrainConfig

BABYAI_DEMOS_TO_99 = {
    "BabyAI-GoToLocal-v0": "148.5-193.2 K",
    "BabyAI-PickupLoc-v0": "204-241 K",
    "BabyAI-PutNextLocal-v0": "245-323 K",
    "BabyAI-GoTo-v0": "341-409 K",
}
COLUMNS = [
    "task", "recipe", "demos", "demo_steps", "updates", "epochs", "frames", "eval_episodes",
    "eval_success", "eval_ci_low", "eval_ci_high", "train_s", "command", "config",
]  # fmt: skip


def count_recipe(task: str, demos: int, sets: dict) -> dict:
    """The overrides that make one count's recipe (each count trains in its own trial folder);
    run_count adds only the length and folders, which a stale-row check does not compare."""
    return {"task_id": task, **sets, "demos": demos, "trial": demos}


def run_count(counted: dict, base: TrainConfig, args: argparse.Namespace, recipe: str) -> dict:
    """Train one count (`counted`: count_recipe's overrides; `base`: load_config of them) and
    evaluate its final weights; one CSV row."""
    import train_mop
    from eval_mop import EvalOptions, evaluate
    from mop.bot_demos import load_or_generate_demos
    from mop.devices import default_num_workers
    from mop.experiment import load_config, recipe_keys

    task, demos = base.task_id, base.demos
    buf, _, _ = load_or_generate_demos(
        task,
        demos,
        base.demo_seed,
        args.demos_dir,
        base.max_steps,
        default_num_workers(),
        base.fast_env,
        not args.quiet,
    )
    per_update = base.num_envs * base.unroll_len
    updates = min(args.max_updates, max(args.min_updates, round(args.epochs * buf.frames / per_update)))
    overrides = {
        **counted,
        "demos_dir": args.demos_dir,
        "num_updates": updates,
        "checkpoint_interval": None,
        "checkpoint_dir": str(Path(args.root) / recipe),
    }
    command = train_command(None, overrides)
    print(f"[{demos} demos] {command}", flush=True)
    started = time.perf_counter()
    cfg = load_config(None, overrides)
    summary = train_mop.main(cfg, progress=not args.quiet)
    train_s = time.perf_counter() - started
    result = evaluate(
        summary["checkpoints"][-1], EvalOptions(num_episodes=args.eval_episodes, record=False), None
    )
    m = result.metrics
    return {
        "task": task,
        "recipe": recipe,
        "demos": demos,
        "demo_steps": buf.frames,
        "updates": updates,
        "epochs": round(updates * per_update / buf.frames, 2),
        "frames": updates * per_update,
        "eval_episodes": m["num_episodes"],
        "eval_success": round(m["success_rate"], 4),
        "eval_ci_low": round(m["success_ci_low"], 4),
        "eval_ci_high": round(m["success_ci_high"], 4),
        "train_s": round(train_s, 1),
        "command": command,
        "config": json.dumps(recipe_keys(cfg), sort_keys=True),
    }


def main(argv: list[str] | None = None) -> int:
    from mop.experiment import ArgumentParser, ConfigError

    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="BabyAI-GoToLocal-v0")
    parser.add_argument("--k", default="10,11,12,13,14,15,16", help="demo counts 2^k, comma list")
    parser.add_argument("--epochs", type=float, default=20.0, help="passes over the demos per run")
    parser.add_argument("--min_updates", type=int, default=200)
    parser.add_argument("--max_updates", type=int, default=4000)
    parser.add_argument("--eval_episodes", type=int, default=500)
    parser.add_argument("--target", type=float, default=0.99)
    parser.add_argument("--all", action="store_true", help="run every count, not only up to the first hit")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--demos_dir", default="demos")
    parser.add_argument("--root", default="bench_runs/sample_efficiency")
    parser.add_argument("--out", default="bench/results/sample_efficiency.csv")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    sets = parse_sets(args.set, parser)
    try:
        ks = sorted(int(x) for x in args.k.split(","))
    except ValueError:
        parser.error(f"--k takes a comma list of integers, got {args.k!r}")
    try:
        hit = run_grid(args, sets, ks)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    babyai = BABYAI_DEMOS_TO_99.get(args.task, "not published")
    print(
        f"smallest demo count reaching {args.target:.0%}: {hit if hit else 'none in the grid'} "
        f"(BabyAI IL: {babyai})"
    )
    return 0


def run_grid(args: argparse.Namespace, sets: dict, ks: list[int]) -> int | None:
    """Each count of the grid, trained or read from the CSV; the smallest reaching the target."""
    from mop.experiment import ConfigError, load_config, recipe_keys

    recipe = recipe_of(None, {**sets, "epochs": args.epochs})
    out = Path(args.out)
    hit = None
    for k in ks:
        demos = 2**k
        done = [
            r
            for r in read_rows(out)
            if r["task"] == args.task and r["recipe"] == recipe and int(r["demos"]) == demos
        ]
        counted = count_recipe(args.task, demos, sets)
        base = load_config(None, counted)
        changes = stale_row(done[0], recipe_keys(base)) if done else []
        if changes:
            raise ConfigError(
                f"{out}'s row for {demos} demos (recipe {recipe}) was made with another config "
                f"({'; '.join(changes)}); delete that row (and its run folder under {args.root}/{recipe}) to run it again"
            )
        row = done[0] if done else run_count(counted, base, args, recipe)
        if not done:
            write_rows(out, read_rows(out) + [row], COLUMNS)
        success = float(row["eval_success"])
        print(
            f"{args.task} {demos:>7} demos: success {success:.3f} "
            f"[{float(row['eval_ci_low']):.3f}, {float(row['eval_ci_high']):.3f}] after {row['epochs']} epochs",
            flush=True,
        )
        if success >= args.target and hit is None:
            hit = demos
            if not args.all:
                break
    return hit


if __name__ == "__main__":
    sys.exit(main())
