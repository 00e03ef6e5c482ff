"""Generate (or check) a level's store of BabyAI bot demos for offline behavioural cloning (--demos).

The demos and their layouts are mop/bot_demos.py's, the store format mop/demo_store.py's; this is
their command line. Generation runs in --num_workers processes and appends to the level's store
(`<demos_dir>/<task>/set_<demo_seed>/`), committing chunk by chunk: run it again with a larger
--demos to add demos, or after a kill to resume. `--demos N` on train_mop.py / train.py generates
the same store on first use. --check generates nothing: it verifies every file's checksum and that
the store holds N demos.

    python demos.py --task_id BabyAI-GoToLocal-v0 --demos 1000      # generate (or extend) the store
    python demos.py --task_id BabyAI-GoToLocal-v0 --demos 1000 --demo_seed 1 --num_workers 2
    python demos.py --task_id BabyAI-GoToLocal-v0 --demos 1000 --check
"""

from __future__ import annotations

import argparse
import sys

from mop.bot_demos import load_or_generate_demos
from mop.checks import command_edges
from mop.demo_store import STORE_KIND, DemoStore
from mop.replay_buffer import BufferError


def check_args(args: argparse.Namespace) -> None:
    """Every flag, before any demo is generated (ValueError in one line): the same bounds as the
    config keys of the same names (experiment.LIMITS), an output folder that can be written."""
    from mop.experiment import LIMITS
    from mop.runs import check_writable_dir

    if not 1 <= args.demos <= LIMITS["demos"][0]:
        raise ValueError(f"--demos must be from 1 to {LIMITS['demos'][0]:,}, got {args.demos}")
    if not 0 <= args.demo_seed <= LIMITS["demo_seed"][0]:
        raise ValueError(
            f"--demo_seed must be from 0 to {LIMITS['demo_seed'][0]} (disjoint demo sets), got {args.demo_seed}"
        )
    if args.max_steps is not None and not 1 <= args.max_steps <= LIMITS["max_steps"][0]:
        raise ValueError(f"--max_steps must be from 1 to {LIMITS['max_steps'][0]:,}, got {args.max_steps}")
    if args.num_workers is not None and not 0 <= args.num_workers <= LIMITS["num_workers"][0]:
        raise ValueError(
            f"--num_workers must be from 0 to {LIMITS['num_workers'][0]} (0 or 1: in this process), got {args.num_workers}"
        )
    if not getattr(args, "check", False):
        check_writable_dir(args.demos_dir, "--demos_dir")


def main(argv: list[str] | None = None) -> int:
    from mop.experiment import ArgumentParser

    parser = ArgumentParser(
        description="Generate (or check) a cached set of BabyAI bot demos for offline imitation (--demos)."
    )
    parser.add_argument("--task_id", required=True, help="BabyAI level")
    parser.add_argument("--demos", type=int, required=True, help="number of solved demos")
    parser.add_argument("--demo_seed", type=int, default=0, help="demo set (0..49), disjoint layouts per set")
    parser.add_argument("--demos_dir", default="demos", help="cache root (default demos/)")
    parser.add_argument(
        "--max_steps", type=int, default=None, help="episode step limit (default: the level's)"
    )
    parser.add_argument("--num_workers", type=int, default=None, help="worker processes (default: CPU cores)")
    parser.add_argument(
        "--check",
        action="store_true",
        help="generate nothing: verify the store's checksums and that it holds --demos",
    )
    args = parser.parse_args(argv)
    from mop.babyai_env import check_task_id
    from mop.experiment import default_num_workers

    try:
        check_task_id(args.task_id)
        check_args(args)
        buf, meta, path = load_or_generate_demos(
            args.task_id,
            args.demos,
            args.demo_seed,
            args.demos_dir,
            args.max_steps,
            args.num_workers if args.num_workers is not None else default_num_workers(),
            generate=not args.check,
        )
        if args.check and meta.get("kind") == STORE_KIND:
            DemoStore.open(path).verify()
    except (ValueError, BufferError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    held = f" of the {meta['store_episodes']} stored" if "store_episodes" in meta else ""
    print(
        f"{path}: {len(buf)} demos{held}, {buf.frames} steps (skipped: {meta['skipped_bot_failure']} bot failures, "
        f"{meta['skipped_unsolved']} unsolved; generated in {meta['generation_s']} s)"
    )
    return 0


if __name__ == "__main__":
    with command_edges():
        sys.exit(main())
