"""What an evaluation is asked to do: eval_mop's options (`EvalOptions`, the one check of them),
the flags eval_mop.py and batch_eval.py share, and `EvalError`. Nothing heavy is imported (no
torch, pandas or minigrid), so a command line refuses a bad flag before it loads the evaluator;
eval_mop re-exports every name.

    options = EvalOptions(num_episodes=200, knockout="layer_0:2")   # EvalError naming a bad flag
"""

from __future__ import annotations

import argparse
import numbers
from dataclasses import dataclass
from typing import Any

from mop import results
from mop.devices import DEVICE_HELP, DeviceError, check_device
from mop.results import knockout_label


class EvalError(ValueError):
    """A bad checkpoint, task or option; the message names it."""


def canonical_knockout(spec: str | None) -> str | None:
    """mop.results.canonical_knockout (the one spelling of a knockout spec, None for none), a spec
    it refuses as EvalError: --knockout is an evaluation option."""
    try:
        return results.canonical_knockout(spec)
    except ValueError as e:
        raise EvalError(str(e)) from None


@dataclass(frozen=True)
class EvalOptions:
    """How to evaluate a checkpoint (eval_mop's flags; batch_eval, Modal and the notebooks pass one)."""

    task_id: str | None = None  # level to evaluate on (None: the training level)
    num_episodes: int = 100  # on evaluation seeds EVAL_SEED_START + 0..N-1
    num_envs: int = 16  # envs stepped together
    max_steps: int | None = None  # episode limit (None: the training run's)
    sample: bool = False  # sample actions (seeded per episode) instead of the argmax
    knockout: str | None = None  # 'largest' or 'layer_<k>:<j>[,...]'
    knockout_threshold: float | None = None  # also disable experts below this weight
    record: bool = True  # keep the per-step routing record (the cache)
    record_subgoals: bool = (
        False  # with record: the bot's subgoal and level's events (bot replan: ~2x slower)
    )
    num_workers: int = 1  # processes to split the episodes over (same numbers)
    progress: bool = False  # a tqdm bar
    distilbert_path: str | None = None  # DistilBERT weights here (None: the run's distilbert_path)
    device: str = "auto"  # where the policy acts: auto | cpu | cuda | cuda:N (mop.devices)

    def __post_init__(self) -> None:
        """The one check of evaluation settings (eval_mop, batch_eval, Modal and the notebooks all
        build one): EvalError naming the flag. The knockout spec is stored in its one spelling."""
        for name, limit in EVAL_LIMITS.items():
            value = getattr(self, name)
            if value is None and name == "max_steps":
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 1 <= value <= limit:
                raise EvalError(f"--{name} must be a whole number from 1 to {limit:,}, got {value!r}")
        t = self.knockout_threshold
        if t is not None and (isinstance(t, bool) or not isinstance(t, numbers.Real) or not 0 < t <= 1):
            raise EvalError(f"--knockout_threshold must be a router weight in (0, 1], got {t!r}")
        object.__setattr__(self, "knockout", canonical_knockout(self.knockout))
        try:  # the spelling here; whether this machine has it, when evaluate() starts
            object.__setattr__(self, "device", check_device(self.device))
        except DeviceError as e:
            raise EvalError(str(e)) from None

    @classmethod
    def from_args(cls, args: argparse.Namespace, **settings: Any) -> EvalOptions:
        """The options eval_mop's and batch_eval's command lines share, plus `settings`."""
        return cls(
            task_id=args.eval_task_id,
            num_episodes=args.num_episodes,
            num_envs=args.num_envs,
            max_steps=args.max_steps,
            sample=args.sample,
            knockout=args.knockout,
            knockout_threshold=args.knockout_threshold,
            distilbert_path=args.distilbert_path,
            device=args.device,
            **({"record_subgoals": args.record_subgoals} if hasattr(args, "record_subgoals") else {}),
            **settings,
        )

    @property
    def knockout_label(self) -> str:
        return knockout_label(self.knockout, self.knockout_threshold)


# Upper bounds of EvalOptions: episodes and envs are held in memory (the per-step record), and an
# episode limit above the training one's bound never ends.
EVAL_LIMITS = {"num_episodes": 1_000_000, "num_envs": 1000, "num_workers": 256, "max_steps": 10**6}


def add_cache_format_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cache_format",
        choices=["parquet", "json", "both"],
        default="parquet",
        help="json (or both) also writes the earlier system's routing_data.json shape beside the Parquet files",
    )


def add_distilbert_path_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--distilbert_path",
        default=None,
        metavar="DIR",
        help="DistilBERT weights for checkpoints with the DistilBERT mission encoder (the earlier "
        "system's all have it): a directory saved with save_pretrained, or a Hugging Face id in the "
        "local cache (default: the path the run was trained with)",
    )


def add_record_subgoals_argument(parser: argparse.ArgumentParser) -> None:
    """--record_subgoals, as eval_mop.py and batch_eval.py spell it."""
    parser.add_argument(
        "--record_subgoals",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="with a routing cache: also record the bot's subgoal and the level's events at every step "
        "(mop/subgoals.py; the bot watches the student's states, the actions are the same; off by "
        "default: the bot's replan at every step about doubles evaluation time, bench/eval_throughput.py)",
    )


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        default="auto",
        help=f"{DEVICE_HELP}; on a GPU the envs of a batch act in one step there, on the CPU in "
        "numpy (the same numbers up to float rounding; default auto)",
    )


def cache_formats(choice: str) -> tuple[str, ...]:
    return ("parquet",) if choice == "parquet" else ("parquet", "json")


def parse_eval_args(
    argv: list[str] | None, description: str | None
) -> tuple[argparse.Namespace, EvalOptions]:
    """eval_mop.py's command line: (args, EvalOptions), or one `error:` line and exit 2 for a bad
    flag, a bad option value, an unknown level or an unwritable --cache_dir. Light (no torch,
    pandas or minigrid), so eval_mop.py calls it before its own imports: --help and a refusal
    answer at once."""
    import sys

    from mop.experiment import ArgumentParser
    from mop.level_names import check_task_ids
    from mop.runs import OutputError, check_writable_dir

    parser = ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="checkpoint .pt file (MoP or GRU baseline)")
    parser.add_argument(
        "--eval_task_id",
        "--task_id",
        dest="eval_task_id",
        default=None,
        help="level to evaluate on, or a comma list of levels (default: the training level, or every "
        "level of a multi-task checkpoint); --task_id is an alias",
    )
    parser.add_argument(
        "--num_episodes", type=int, default=100, help="episodes, on evaluation seeds 0..N-1 (default 100)"
    )
    parser.add_argument("--num_envs", type=int, default=16, help="envs stepped together (default 16)")
    parser.add_argument(
        "--num_workers", type=int, default=1, help="processes to split the episodes over (default 1)"
    )
    parser.add_argument(
        "--max_steps", type=int, default=None, help="episode limit (default: the training run's)"
    )
    parser.add_argument("--sample", action="store_true", help="sample actions instead of taking the argmax")
    parser.add_argument(
        "--knockout", default=None, help="'largest' or 'layer_<k>:<j>[,...]' (0-based): disable experts"
    )
    parser.add_argument(
        "--knockout_threshold",
        type=float,
        default=None,
        help="also disable experts whose weight is below this",
    )
    parser.add_argument(
        "--cache_dir", default=None, help="write the routing cache under this folder (e.g. evaluation_cache)"
    )
    add_cache_format_argument(parser)
    add_record_subgoals_argument(parser)
    add_distilbert_path_argument(parser)
    add_device_argument(parser)
    args = parser.parse_args(argv)
    if args.cache_format != "parquet" and args.cache_dir is None:
        # Refuse rather than guess a folder: without --cache_dir eval_mop records and writes nothing.
        print(
            f"error: --cache_format {args.cache_format} writes a cache and needs --cache_dir "
            "(e.g. --cache_dir evaluation_cache)",
            file=sys.stderr,
        )
        sys.exit(2)
    if args.record_subgoals and args.cache_dir is None:  # it records into the cache: nothing to keep
        print(
            "error: --record_subgoals records into the routing cache and needs --cache_dir", file=sys.stderr
        )
        sys.exit(2)
    try:
        options = EvalOptions.from_args(
            args, record=args.cache_dir is not None, num_workers=args.num_workers, progress=True
        )
        if options.task_id is not None:
            check_task_ids(options.task_id)
        if args.cache_dir is not None:  # before the work, not after it
            check_writable_dir(args.cache_dir, "--cache_dir")
    except (EvalError, OutputError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    return args, options
