"""The command lines of stats.py, render_plots.py and lmc.py (and its analyze and compare
commands), without their heavy imports (torch, pandas, scipy, matplotlib, pyarrow, minigrid): each
script parses its flags with these, and checks the values that need nothing heavy, before it
imports the rest, so `--help`, a misspelt flag or a bad value answers at once (bench/startup.py,
tests/test_startup.py); its main parses them again with the same parser and runs the same checks.
A constant that lives in a heavy module is spelled here as a literal, and tests/test_startup.py
checks it is that module's own.

    args = stats_parser(stats.__doc__).parse_args(["--task_id", "BabyAI-GoToLocal-v0"])
    answer_early(lambda: lmc_early(sys.argv[1:], __doc__))   # a script's first lines
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from mop.checks import ConfigError, refuse
from mop.experiment import ArgumentParser, args_overrides, build_arg_parser, load_config
from mop.lmc_settings import EVALUATION_SETTINGS, EXPERIMENT_SETTINGS, add_flags, check_bootstrap

STATS_STATES = ("cell", "cell_dir_carry")  # stats.STATES' keys (tests/test_startup.py checks)
STATS_MIN_VISITS = 5  # seed_metrics.MIN_VISITS (tests/test_startup.py checks)
LAYOUTS = ("screen", "paper")  # mop.plot_style's figure layouts (tests/test_startup.py checks)


def answer_early(check: Callable[[], object]) -> None:
    """A script's first lines: `check` parses its flags (argparse answers --help and a usage error
    itself) and checks their values with this module's light checks; a bad value (ValueError:
    ConfigError, DeviceError, an unknown level) is the one `error:` line and exit 2 the script's
    main gives for it, before the heavy imports."""
    try:
        check()
    except ValueError as e:
        refuse(str(e))


def stats_parser(description: str | None) -> argparse.ArgumentParser:
    parser = ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--task_id", "--task", dest="task_id", required=True, help="gymnasium id of the level"
    )
    parser.add_argument(
        "--cache_dir", default="evaluation_cache", help="routing cache root (default evaluation_cache)"
    )
    parser.add_argument(
        "--results_path",
        default="evaluation_results.csv",
        help="results CSV: lpc_alpha, knockouts, older runs' recipes",
    )
    parser.add_argument(
        "--out", default=None, help="output folder (default stats/<task_id>, or stats/<manifest name>)"
    )
    parser.add_argument(
        "--update",
        type=int,
        default=None,
        help="compare the runs at this update (default: per condition, the newest update all its runs have)",
    )
    parser.add_argument(
        "--min_visits", type=int, default=STATS_MIN_VISITS, help="visits for a cell to count (default 5)"
    )
    parser.add_argument(
        "--state",
        choices=list(STATS_STATES),
        default="cell",
        help="the state of H(A|S) and KL (default cell)",
    )
    parser.add_argument(
        "--manifest", default=None, help="a sweep manifest: only its runs (sweep.py writes it)"
    )
    parser.add_argument(
        "--contrast",
        action="append",
        default=[],
        help="FACTORS[=A:B]: paired-by-seed contrasts of the conditions that differ in these config keys "
        "(comma list; policy_type for MoP vs GRU) alone, or of conditions A and B (repeatable)",
    )
    parser.add_argument(
        "--metrics",
        default=None,
        help="comma list: the metrics of the contrasts' Holm family (default every contrast metric: "
        "success_rate, mean_lpc, policy_complexity, path_ratio); the family is the pairs asked by "
        "--contrast x these metrics, whatever else the table holds",
    )
    parser.add_argument(
        "--single_task_dir",
        action="append",
        default=None,
        help="multi-task --task_id: where the single-task repeats of the recipe are (repeatable; default checkpoints)",
    )
    parser.add_argument(
        "--ce_threshold",
        type=float,
        default=1.0,
        help="multi-task: learning speed = updates to train/ce <= this (1.0)",
    )
    parser.add_argument(
        "--margin",
        action="append",
        default=[],
        help="[METRIC=]M: the equivalence margin of contrasts (paired TOST, 90%% CI inside ±M on the "
        "difference scale; a bare M is success_rate's; repeatable). Without one, a non-significant "
        "contrast is 'not resolved', never 'alike'",
    )
    parser.add_argument(
        "--time_course",
        action="store_true",
        help="multi-task --task_id: routing by level at every update the runs were evaluated at "
        "(time_course.csv, time_course_pairs.csv with Holm over updates x pairs, a figure per condition)",
    )
    parser.add_argument("--force", action="store_true", help="recompute every cache's row")
    parser.add_argument("--no_figures", action="store_true", help="tables only")
    parser.add_argument(
        "--layout",
        choices=list(LAYOUTS),
        default="screen",
        help="figures at most 10.5 in wide (screen, default) or one 3.3 in paper column (paper)",
    )
    return parser


def render_plots_parser(description: str | None) -> argparse.ArgumentParser:
    parser = ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", action="append", default=None, help="a routing cache folder (repeatable)")
    parser.add_argument("--all", action="store_true", help="every cache under --cache_dir")
    parser.add_argument(
        "--by_level",
        action="store_true",
        help="routing by level of every checkpoint evaluated on several levels (from --results_path)",
    )
    parser.add_argument(
        "--cache_dir", default="evaluation_cache", help="cache root for --all (default evaluation_cache)"
    )
    parser.add_argument("--out", default="plots", help="output root (default plots/)")
    parser.add_argument(
        "--results_path", default="evaluation_results.csv", help="for the knockout comparison"
    )
    parser.add_argument("--dpi", type=int, default=150)
    parser.add_argument(
        "--layout",
        choices=list(LAYOUTS),
        default="screen",
        help="figures at most 10.5 in wide (screen, default) or one 3.3 in paper column (paper)",
    )
    parser.add_argument(
        "--subgoals",
        action="store_true",
        help="routing by subgoal and around events across the given caches, one per run (needs caches "
        "recorded with eval_mop.py --record_subgoals)",
    )
    parser.add_argument(
        "--event_k",
        type=int,
        default=5,
        help="steps before and after each event in the event-locked figure (default 5; at most the "
        "longest episode's last step)",
    )
    return parser


# ----------------------------------------------------------------------------- lmc.py

LMC_COMMANDS = ("analyze", "compare", "train")  # `python lmc.py [command]`; no command: train
# lmc.py decides these: the folders of the parent and children.
LMC_OWN_KEYS = {"trial": "fork k's children are trial k+1", "checkpoint_dir": "use --results_root"}


def lmc_train_flags(parser: argparse.ArgumentParser) -> None:
    """lmc.py's own flags beside train_mop.py's (mop.experiment.build_arg_parser)."""
    # the experiment's settings are absent when not given: --resume compares only those given
    add_flags(parser, EXPERIMENT_SETTINGS, given_only=True)
    add_flags(parser, ("results_root", "parallel_children", "bootstrap"))
    parser.add_argument("--no_progress", action="store_true", help="no progress bars")


def lmc_parser(command: str, description: str | None = None) -> argparse.ArgumentParser:
    """The parser of `python lmc.py <command>` (`description`: train's, lmc.py's docstring)."""
    if command == "analyze":
        parser = ArgumentParser(
            prog="lmc.py analyze",
            description="Evaluate every complete fork of an LMC experiment "
            "that is not evaluated yet, then write interpolation.csv, instability.csv and fork_analysis/*.png.",
        )
        parser.add_argument(
            "--results_dir",
            required=True,
            help="the experiment folder (<results_root>/<task>/seed_<S>/<strategy>)",
        )
        add_flags(parser, ("bootstrap",))
        return parser
    if command == "compare":
        parser = ArgumentParser(
            prog="lmc.py compare",
            description="Interpolate two checkpoints of the same architecture and level "
            "(e.g. two seeds of one trial, or runs downloaded from Modal).",
        )
        parser.add_argument("--a", required=True, help="checkpoint at α = 0")
        parser.add_argument("--b", required=True, help="checkpoint at α = 1")
        parser.add_argument(
            "--out", default=None, help="output folder (default <results_root>/compare/<task>/<a>__<b>)"
        )
        add_flags(parser, ("results_root", *EVALUATION_SETTINGS, "bootstrap"), compare=True)
        return parser
    return build_arg_parser(description or "", lmc_train_flags)


def lmc_command(argv: Sequence[str]) -> tuple[str, list[str]]:
    """(command, its flags) of lmc.py's command line."""
    argv = list(argv)
    return (argv.pop(0) if argv and argv[0] in LMC_COMMANDS else "train"), argv


def check_lmc_own_keys(overrides: dict) -> None:
    """ConfigError for a config key lmc.py sets itself (`overrides`: aliases resolved)."""
    for key, why in LMC_OWN_KEYS.items():
        if key in overrides:
            raise ConfigError(f"--{key} is set by lmc.py ({why})")


def check_lmc_settings(args: argparse.Namespace) -> None:
    """The flags of any lmc.py command that need nothing but themselves: --parallel_children and
    --bootstrap; ConfigError naming the flag."""
    if getattr(args, "parallel_children", 1) < 1:
        raise ConfigError(f"--parallel_children must be at least 1, got {args.parallel_children}")
    try:
        check_bootstrap(args.bootstrap)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def check_lmc_args(command: str, args: argparse.Namespace) -> None:
    """What lmc.py checks before its heavy imports: train's config (the keys lmc.py sets, then every
    key as train_mop.py checks it: level, ranges, config file), and check_lmc_settings."""
    if command == "train":
        path, overrides = args_overrides(args)
        check_lmc_own_keys(overrides)
        load_config(path, overrides)
    check_lmc_settings(args)


def lmc_early(argv: Sequence[str], description: str | None) -> None:
    """lmc.py's first lines: parse `argv` as the command it names and check_lmc_args."""
    command, rest = lmc_command(argv)
    check_lmc_args(command, lmc_parser(command, description).parse_args(rest))
