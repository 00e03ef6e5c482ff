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

if __name__ == "__main__":  # flags answered before numpy and minigrid load (bench/startup.py)
    from mop.cli_specs import answer_early, check_demos_args, demos_parser

    answer_early(lambda: check_demos_args(demos_parser().parse_args()))

import argparse
import sys

from mop.bot_demos import load_or_generate_demos
from mop.checks import command_edges
from mop.cli_specs import check_demos_args, demos_parser
from mop.demo_store import STORE_KIND, DemoStore
from mop.replay_buffer import BufferError


def check_args(args: argparse.Namespace) -> None:
    """Every flag, before any demo is generated (ValueError in one line): the level and the numbers
    (mop.cli_specs.check_demos_args: the bounds of the config keys of the same names, checked
    before the imports too when run as a script), an output folder that can be written."""
    from mop.runs import check_writable_dir

    check_demos_args(args)
    if not getattr(args, "check", False):
        check_writable_dir(args.demos_dir, "--demos_dir")


def main(argv: list[str] | None = None) -> int:
    parser = demos_parser()
    args = parser.parse_args(argv)
    from mop.devices import default_num_workers

    try:
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
