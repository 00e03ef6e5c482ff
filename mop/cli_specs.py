"""The command lines of the analysis scripts, without their heavy imports (torch, pandas, scipy,
matplotlib, pyarrow, minigrid): stats.py, render_plots.py, lmc.py (and its analyze and compare
commands), causal.py, attribution.py, demos.py, failures.py, memory_probe.py, record.py,
train_generative.py and generative_analysis.py. Each script parses its flags with these, and
checks the values that need nothing heavy, before it imports the rest, so `--help`, a misspelt
flag or a bad value answers at once (bench/startup.py, tests/test_startup.py); its main parses
them again with the same parser and runs the same checks. A constant that lives in a heavy module
is spelled here as a literal, and tests/test_startup.py checks it is that module's own.

    args = stats_parser(stats.__doc__).parse_args(["--task_id", "BabyAI-GoToLocal-v0"])
    answer_early(lambda: check_causal(causal_parser(__doc__).parse_args()))   # a script's first lines
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mop.checks import ConfigError, check_number, refuse
from mop.devices import DEVICE_HELP, DeviceError, check_device
from mop.eval_options import add_device_argument
from mop.experiment import LIMITS, ArgumentParser, args_overrides, build_arg_parser, load_config
from mop.level_names import check_task_id
from mop.lmc_settings import EVALUATION_SETTINGS, EXPERIMENT_SETTINGS, add_flags, check_bootstrap

STATS_STATES = ("cell", "cell_dir_carry")  # stats.STATES' keys (tests/test_startup.py checks)
MEMORY_PROBE_TARGETS = ("rooms", "key", "key_offset", "door", "key_match", "door_offset")  # --target
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


# ----------------------------------------------------------------------------- causal.py

CAUSAL_INTERVENTIONS = ("zero", "route_around", "swap")  # mixture_of_experts.INTERVENTIONS (checked)
CAUSAL_METRICS = ("success_rate", "path_ratio", "mean_lpc", "router_lpc")  # mop.causal.METRICS (checked)
CAUSAL_PERMUTATIONS = 2000  # mop.causal.PERMUTATIONS (checked)


def causal_parser(description: str | None) -> argparse.ArgumentParser:
    parser = ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--runs",
        nargs="+",
        required=True,
        help="checkpoint files, run folders (their checkpoint_final.pt, else the latest), folders "
        "of runs, or globs of them (quote a glob to let causal.py expand it)",
    )
    parser.add_argument(
        "--task_id", "--task", dest="task_id", default=None, help="level to play (default: each run's own)"
    )
    parser.add_argument(
        "--episodes",
        type=int,
        default=200,
        help="evaluation layouts 0..N-1, shared by every arm (default 200)",
    )
    parser.add_argument(
        "--interventions",
        default=",".join(CAUSAL_INTERVENTIONS),
        help=f"comma list of {', '.join(CAUSAL_INTERVENTIONS)} (default all)",
    )
    parser.add_argument(
        "--experts", default=None, help="'layer_<k>:<j>[,...]' (0-based; default every expert)"
    )
    parser.add_argument(
        "--swap_target",
        default="next",
        help="swap: the expert whose output stands in: 'next' (j+1, cyclic; default) or an index",
    )
    parser.add_argument(
        "--metrics",
        default=",".join(CAUSAL_METRICS),
        help=f"comma list of {', '.join(CAUSAL_METRICS)} (default all)",
    )
    parser.add_argument("--num_envs", type=int, default=16, help="envs stepped together (default 16)")
    parser.add_argument("--out", default=None, help="output folder (default causal/<task>/)")
    parser.add_argument("--layout", default="screen", help="figure layout: screen or paper")
    parser.add_argument(
        "--permutations",
        type=int,
        default=None,
        help="within-run permutations of the prediction test (default 100 per test of its family, at least "
        f"{CAUSAL_PERMUTATIONS}: the smallest attainable Holm p stays below 0.01)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstraps and permutations")
    return parser


def parse_list(text: str | tuple | list, allowed: Sequence[str], flag: str) -> tuple[str, ...]:
    """A comma list (or a sequence) of distinct names from `allowed`; ConfigError naming `flag`."""
    items = tuple(text.split(",")) if isinstance(text, str) else tuple(text)
    items = tuple(i.strip() for i in items if i.strip())
    bad = [i for i in items if i not in allowed]
    if bad or not items or len(set(items)) != len(items):
        raise ConfigError(f"{flag} {','.join(items)!r}: give distinct names from {', '.join(allowed)}")
    return items


def check_causal(cfg: Any) -> tuple[str, ...]:
    """causal.py's flags that need no run (its CausalConfig or parsed args): the interventions (returned)
    and metrics, the counts and the layout; ConfigError naming the flag."""
    kinds = parse_list(cfg.interventions, CAUSAL_INTERVENTIONS, "--interventions")
    parse_list(cfg.metrics, CAUSAL_METRICS, "--metrics")
    for name in ("episodes", "num_envs", "permutations"):
        value = getattr(cfg, name)
        if name == "permutations" and value is None:  # 100 per test of the family (causal.predict)
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"--{name} must be a whole number >= 1, got {value!r}")
    if cfg.layout not in LAYOUTS:
        raise ConfigError(f"--layout must be one of {', '.join(LAYOUTS)}, got {cfg.layout!r}")
    return kinds


# ----------------------------------------------------------------------------- attribution.py

ATTRIBUTION_BASELINES = ("zero", "mean")  # mop.attribution.BASELINES (checked)
MAX_EPISODE = 10**6 - 1  # attribution.py: evaluation seeds stay below the demo and training seeds


def attribution_parser(doc: str | None) -> argparse.ArgumentParser:
    """attribution.py's parser; its docstring's examples (third paragraph) are the epilog."""
    parser = ArgumentParser(
        description="Integrated gradients through a recurrent policy: which past observations a "
        "router weight or an action logit at step t depends on.",
        epilog=doc.split("\n\n")[2] if doc else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--checkpoint", required=True, help="a train_mop.py (or train.py: --target action) checkpoint"
    )
    parser.add_argument(
        "--task_id",
        "--task",
        dest="task_id",
        default=None,
        help="the level to play (default: the checkpoint's)",
    )
    parser.add_argument(
        "--episode", type=int, default=0, help="evaluation episode (layout seed) to attribute (default 0)"
    )
    parser.add_argument(
        "--step", type=int, default=None, help="the step t attributed (required without --aggregate)"
    )
    parser.add_argument("--window", type=int, default=8, help="k: attribute to the steps t-k..t (default 8)")
    parser.add_argument(
        "--target",
        default="action",
        help="router:layer<k>:expert<j> (that layer's routing weight of expert j), action (the logit "
        "of the action taken at t) or action:<a> (default action)",
    )
    parser.add_argument(
        "--baseline",
        choices=ATTRIBUTION_BASELINES,
        default="zero",
        help="for steps t-k..t: zero (the all-zero encoded observation) or mean (the episode's mean "
        "encoded observation) (default zero)",
    )
    parser.add_argument(
        "--ig_steps", type=int, default=64, help="trapezoid intervals along the path (default 64)"
    )
    parser.add_argument(
        "--max_ig_steps",
        type=int,
        default=1024,
        help="double --ig_steps while completeness misses 1%%, up to this many (default 1024)",
    )
    parser.add_argument(
        "--aggregate", action="store_true", help="many steps of many episodes: the mean profile"
    )
    parser.add_argument(
        "--num_episodes", type=int, default=20, help="--aggregate: episodes 0..N-1 (default 20)"
    )
    parser.add_argument(
        "--stride", type=int, default=2, help="--aggregate: every stride-th step t >= k (default 2)"
    )
    parser.add_argument(
        "--randomize_seed", type=int, default=0, help="seed of the randomised-weights check (default 0)"
    )
    parser.add_argument("--layout", choices=LAYOUTS, default="screen", help="figure layout (default screen)")
    parser.add_argument(
        "--out_dir",
        default="attribution_results",
        help="folder for the CSVs and figures (default attribution_results/)",
    )
    return parser


def check_step_window(step: int, window: int, length: int | None = None) -> None:
    """ConfigError naming the flag: a negative step or window, a window reaching before the
    episode start, a step past its end (length: the episode's steps, when known)."""
    if step < 0:
        raise ConfigError(f"--step {step}: steps count from 0")
    if window < 0:
        raise ConfigError(f"--window {window}: the window k must be >= 0")
    if window > step:
        raise ConfigError(f"--window {window}: larger than --step {step} allows (k <= t)")
    if length is not None and step >= length:
        raise ConfigError(f"--step {step}: outside the episode (steps 0..{length - 1})")


def check_attribution_args(args: argparse.Namespace) -> None:
    """attribution.py's flag values that need no checkpoint; ConfigError naming the flag."""
    if not 1 <= args.ig_steps <= 65536:
        raise ConfigError(f"--ig_steps {args.ig_steps}: must be from 1 to 65,536")
    if not args.ig_steps <= args.max_ig_steps <= 65536:
        raise ConfigError(f"--max_ig_steps {args.max_ig_steps}: must be from --ig_steps to 65,536")
    if args.window < 0:
        raise ConfigError(f"--window {args.window}: the window k must be >= 0")
    if args.aggregate:
        if not 1 <= args.num_episodes <= 10_000:
            raise ConfigError(f"--num_episodes {args.num_episodes}: must be from 1 to 10,000")
        if args.stride < 1:
            raise ConfigError(f"--stride {args.stride}: must be >= 1")
        return
    if args.step is None:
        raise ConfigError("--step is required without --aggregate")
    if not 0 <= args.episode <= MAX_EPISODE:
        raise ConfigError(f"--episode {args.episode}: evaluation episodes are 0..{MAX_EPISODE:,}")
    check_step_window(args.step, args.window)


# ----------------------------------------------------------------------------- demos.py


def demos_parser() -> argparse.ArgumentParser:
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
    return parser


def check_demos_args(args: argparse.Namespace) -> None:
    """demos.py's level and numbers (ValueError in one line): the same bounds as the config keys of
    the same names (experiment.LIMITS)."""
    check_task_id(args.task_id)
    if not 1 <= args.demos <= LIMITS["demos"][0]:
        raise ConfigError(f"--demos must be from 1 to {LIMITS['demos'][0]:,}, got {args.demos}")
    if not 0 <= args.demo_seed <= LIMITS["demo_seed"][0]:
        raise ConfigError(
            f"--demo_seed must be from 0 to {LIMITS['demo_seed'][0]} (disjoint demo sets), got {args.demo_seed}"
        )
    if args.max_steps is not None and not 1 <= args.max_steps <= LIMITS["max_steps"][0]:
        raise ConfigError(f"--max_steps must be from 1 to {LIMITS['max_steps'][0]:,}, got {args.max_steps}")
    if args.num_workers is not None and not 0 <= args.num_workers <= LIMITS["num_workers"][0]:
        raise ConfigError(
            f"--num_workers must be from 0 to {LIMITS['num_workers'][0]} (0 or 1: in this process), got {args.num_workers}"
        )


# ----------------------------------------------------------------------------- failures.py, memory_probe.py


def failures_parser(description: str | None) -> argparse.ArgumentParser:
    parser = ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="checkpoint .pt (MoP or GRU baseline) to play")
    source.add_argument(
        "--table",
        help="a saved --out CSV instead: its report (and --against's pairing) again, nothing played",
    )
    source.add_argument(
        "--bot",
        action="store_true",
        help="the bot plays the layouts instead of a checkpoint (needs --task_id): the control a "
        "student's table is read against",
    )
    parser.add_argument("--task_id", default=None, help="level to play (default: the run's; one level)")
    parser.add_argument(
        "--num_episodes", type=int, default=None, help="evaluation layouts 0..N-1 (default 200)"
    )
    parser.add_argument("--sample", action="store_true", help="sample actions instead of the greedy argmax")
    parser.add_argument("--out", default=None, help="CSV of the per-episode milestones")
    parser.add_argument(
        "--against",
        default=None,
        help="another --out CSV on the same level: both compared layout by layout "
        "(McNemar exact; per instruction kind with Holm)",
    )
    parser.add_argument(
        "--takeover",
        default=None,
        metavar="T[,T...]",
        help="hand each failed episode that a policy can solve to the bot after T of the student's "
        "steps (it watches them, as when it labels DAgger's states, then drives): can the labels there "
        "lead anywhere?",
    )
    add_device_argument(parser)
    parser.add_argument("--no_progress", action="store_true", help="no bar while the episodes play")
    return parser


def takeover_steps(text: str | None) -> list[int]:
    """--takeover's steps (ConfigError for anything but comma-separated integers >= 0)."""
    if text is None:
        return []
    try:
        steps = [int(v) for v in text.split(",")]
    except ValueError:
        raise ConfigError(f"--takeover takes steps such as 150,300, got {text!r}") from None
    if any(t < 0 for t in steps):
        raise ConfigError(f"--takeover steps must be >= 0, got {text!r}")
    return steps


def check_failures_args(args: argparse.Namespace) -> None:
    takeover_steps(args.takeover)
    if args.bot:
        if args.task_id is None:
            raise ConfigError("--bot plays a level the bot is given: add --task_id")
        given = ["--takeover"] * (args.takeover is not None) + ["--sample"] * args.sample
        if given:
            raise ConfigError(f"--bot: the bot plays its own episodes, drop {', '.join(given)}")
    if args.table is not None:
        playing = {"--task_id": args.task_id, "--num_episodes": args.num_episodes, "--out": args.out}
        playing["--takeover"] = args.takeover
        given = [flag for flag, value in playing.items() if value is not None] + ["--sample"] * args.sample
        if given:
            raise ConfigError(f"--table reports a saved table, nothing is played: drop {', '.join(given)}")
    if args.num_episodes is not None and args.num_episodes < 1:
        raise ConfigError(f"--num_episodes must be >= 1, got {args.num_episodes}")
    for flag, path in (("--table", args.table), ("--against", args.against)):
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"{flag} {path!r} is not a file (a failures.py --out CSV)")


def memory_probe_parser(doc: str | None) -> argparse.ArgumentParser:
    """memory_probe.py's parser; its docstring's last paragraph (the examples) is the epilog."""
    parser = ArgumentParser(
        description="Linear probes: which rooms has the agent visited (or, --target key / key_offset, where "
        "lies the key it needs; --target door, the locked door's colour; --target key_match, whether the key "
        "ahead has the door's colour; --target door_offset, where the locked door lies while its key is "
        "held), read from each block of its memory, from what its action head reads, and, as a positive "
        "control, from the view it read last.",
        epilog=doc.split("\n\n")[-1] if doc else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--checkpoint", required=True, help="a train_mop.py or train.py checkpoint")
    parser.add_argument("--task_id", default=None, help="a level of several rooms; default: the checkpoint's")
    parser.add_argument(
        "--num_episodes", type=int, default=200, help="evaluation layouts played (default 200)"
    )
    parser.add_argument("--sample", action="store_true", help="sample actions instead of the greedy one")
    parser.add_argument(
        "--target",
        choices=MEMORY_PROBE_TARGETS,
        default="rooms",
        help="rooms: the rooms stood in before each step (default); key: the room of a key of the "
        "locked door's colour, after one was seen (a level with a locked door); key_offset: that key's "
        "cells ahead of and to the right of the agent, binned; door: the locked door's colour, after it "
        "was seen and before anything was carried; key_match: the key in the cell ahead has the door's "
        "colour, on the steps facing a key with free hands after the door was seen; door_offset: the "
        "locked door's cells ahead of and to the right of the agent, binned, on the steps holding a key of "
        "its colour while it is still locked, after it was seen",
    )
    parser.add_argument(
        "--min_age",
        type=int,
        default=32,
        help="auc_old: visits (--target key / key_offset / door / key_match / door_offset: the key's or the "
        "door's last sighting) at least this many steps ago (default 32)",
    )
    parser.add_argument(
        "--min_count", type=int, default=20, help="a room counts with this many test entries of each class"
    )
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=1000,
        help="episode resamples behind each gain's 95%% interval (default 1000)",
    )
    parser.add_argument("--seed", type=int, default=0, help="the resamples' seed (default 0)")
    parser.add_argument("--out", default=None, help="also write the table to this CSV")
    add_device_argument(parser)
    parser.add_argument("--no_progress", action="store_true", help="no bar while the episodes play")
    return parser


def check_memory_probe_args(args: argparse.Namespace) -> None:
    for name in ("num_episodes", "min_age", "min_count"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name} must be >= 1, got {getattr(args, name)}")
    try:
        check_bootstrap(args.bootstrap)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if args.num_episodes < 4:
        raise ConfigError(
            f"--num_episodes must be >= 4 (two folds of fit and check episodes), got {args.num_episodes}"
        )


# ----------------------------------------------------------------------------- generative stages


def check_numbers(args: argparse.Namespace, rules: dict[str, tuple]) -> None:
    """ConfigError naming the first flag of `rules` ({name: (low, high, low excluded, whole
    number)}) whose value is not a finite number in its range (None: the flag is unset, allowed)."""
    for name, (low, high, low_open, whole) in rules.items():
        value = getattr(args, name)
        if value is not None:
            check_number(value, f"--{name}", low, high, low_open, whole)


def check_device_flag(spec: str) -> None:
    """--device's spelling (mop.devices.check_device; whether this machine has it is the script's
    to say), as ConfigError."""
    try:
        check_device(spec)
    except DeviceError as e:
        raise ConfigError(str(e)) from None


# ----------------------------------------------------------------------------- record.py

RECORDINGS_ROOT = "recordings"  # record.py's default root: recordings/<task>/trial_<N>/...
# The command line's numbers: (low, high, low excluded, whole number) (an episode limit of 0 or -5
# recorded one-step episodes, 1e11 never ended; LIMITS["max_steps"] is the training config's own bound).
RECORD_NUMBER_FLAGS = {
    "num_episodes": (1, 10**7, False, True),
    "num_envs": (1, LIMITS["num_envs"][0], False, True),
    "chunk_steps": (1, 10**8, False, True),
    "max_steps": (1, LIMITS["max_steps"][0], False, True),
}


def record_parser(description: str | None) -> argparse.ArgumentParser:
    parser = ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="checkpoint .pt (MoP or GRU baseline)")
    parser.add_argument("--num_episodes", type=int, default=2000, help="evaluation layouts 0..N-1")
    parser.add_argument("--num_envs", type=int, default=16, help="envs stepped together")
    parser.add_argument("--chunk_steps", type=int, default=10_000, help="about this many steps per chunk")
    parser.add_argument("--max_steps", type=int, default=None, help="episode limit (default: the run's)")
    parser.add_argument(
        "--out", default=None, help=f"folder (default {RECORDINGS_ROOT}/<task>/trial_<N>/...)"
    )
    parser.add_argument("--device", default="auto", help=f"{DEVICE_HELP} (default auto)")
    return parser


def check_record_args(args: argparse.Namespace) -> None:
    """record.py's numbers and --device's spelling; ConfigError naming the flag."""
    check_numbers(args, RECORD_NUMBER_FLAGS)
    check_device_flag(args.device)


# ----------------------------------------------------------------------------- train_generative.py

LOSS_NAMES = ("obs", "hx", "act_log_probs", "done", "kl")  # the --loss_scale_<name> terms
# Every numeric flag: (low, high, low excluded, whole number). Checked before anything is read or
# written (mop.checks.check_number: finite, in range).
TRAIN_GENERATIVE_NUMBER_FLAGS = {
    "num_init_steps": (1, 1000, False, True),
    "num_sim_steps": (1, 1000, False, True),
    "num_updates": (1, LIMITS["num_updates"][0], False, True),
    "batch_size": (1, 100_000, False, True),
    "lr": (0, 1, True, False),
    "z_dim": (1, 4096, False, True),
    "hidden_size": (1, 4096, False, True),
    "obs_temperature": (0, 1000, True, False),
    "decoder_channels": (1, 1024, False, True),
    "map_channels": (0, 64, False, True),
    "action_forcing": (0, 1, False, False),
    **{f"loss_scale_{k}": (0, 1e6, False, False) for k in LOSS_NAMES},
    "kl_free_bits": (0, 100, False, False),
    "kl_warmup_updates": (0, LIMITS["num_updates"][0], False, True),
    "max_minutes": (0, 1e6, True, False),
    "log_interval": (1, LIMITS["num_updates"][0], False, True),
    "checkpoint_interval": (1, LIMITS["num_updates"][0], False, True),
    "max_windows": (1, 10**8, False, True),
    "max_held_out": (1, 10**7, False, True),
    "seed": (0, LIMITS["seed"][0], False, True),
    "num_threads": (1, 1024, False, True),
}


def train_generative_parser(description: str | None) -> argparse.ArgumentParser:
    p = ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, help="a recording folder (record.py)")
    p.add_argument(
        "--agent_checkpoint", default=None, help="the agent (default: the one the recording names)"
    )
    p.add_argument("--out", default=None, help="output folder (default generative/<task>/trial_<N>/...)")
    p.add_argument("--num_init_steps", type=int, default=3)
    p.add_argument("--num_sim_steps", type=int, default=16)
    p.add_argument("--num_updates", type=int, default=5000)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument(
        "--lr_schedule",
        choices=("constant", "cosine"),
        default="constant",
        help="cosine: from --lr down to 5%% of it as training progresses (the larger of the updates "
        "done / --num_updates and, with --max_minutes, the time used / the time budget)",
    )
    p.add_argument("--z_dim", type=int, default=32)
    p.add_argument("--hidden_size", type=int, default=256)
    p.add_argument("--obs_temperature", type=float, default=1.0)
    p.add_argument("--decoder_channels", type=int, default=32, help="width of the per-cell view decoder")
    p.add_argument(
        "--map_channels", type=int, default=4, help="spatial latent: channels per canvas cell (0: none)"
    )
    p.add_argument(
        "--action_forcing",
        type=float,
        default=1.0,
        help="fraction of training windows whose world moves by the recorded actions (held-out "
        "metrics always use the agent's own: the closed loop)",
    )
    p.add_argument("--loss_scale_obs", type=float, default=1.0)
    p.add_argument("--loss_scale_hx", type=float, default=1.0)
    p.add_argument("--loss_scale_act_log_probs", type=float, default=1.0)
    p.add_argument("--loss_scale_done", type=float, default=0.1)
    p.add_argument("--loss_scale_kl", type=float, default=0.01)
    p.add_argument(
        "--kl_free_bits",
        type=float,
        default=0.0,
        help="free bits: nats per latent dimension the KL term does not push back to the prior "
        "(sum_d max(KL_d, λ); 0: the plain KL)",
    )
    p.add_argument(
        "--kl_warmup_updates",
        type=int,
        default=0,
        help="scale the KL term linearly from 0 to --loss_scale_kl over this many updates (0: off)",
    )
    p.add_argument(
        "--max_minutes",
        type=float,
        default=None,
        help="stop after this many minutes of this process (held-out metrics logged, model_final.pt "
        "saved at the update reached; --resume with more --num_updates continues)",
    )
    p.add_argument("--log_interval", type=int, default=100)
    p.add_argument("--checkpoint_interval", type=int, default=1000)
    p.add_argument(
        "--max_windows",
        type=int,
        default=50_000,
        help="windows kept (a random subset); about 1.2 windows per UnlockPickup episode, ~30 KB each",
    )
    p.add_argument("--max_held_out", type=int, default=512, help="held-out windows evaluated per log")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num_threads", type=int, default=1, help="torch threads (the machine is shared)")
    p.add_argument(
        "--device",
        default="auto",
        help=f"{DEVICE_HELP}: the model and the frozen agent inside it; a model trained on one "
        "device resumes and is analysed on any other (default auto)",
    )
    p.add_argument("--resume", action="store_true", help="continue from the newest model_*.pt in --out")
    p.add_argument("--no_progress", action="store_true")
    return p


def check_train_generative_args(args: argparse.Namespace) -> None:
    """train_generative.py's numbers and --device's spelling; ConfigError naming the flag."""
    check_numbers(args, TRAIN_GENERATIVE_NUMBER_FLAGS)
    check_device_flag(args.device)


# ----------------------------------------------------------------------------- generative_analysis.py

ANALYSES = ("samples", "maximise", "saliency", "edits", "behaviours", "pca", "directions", "accuracy")
NEEDS_TARGET = ("maximise", "saliency")  # the analyses that need --target
GENERATIVE_MODES = ("leash", "typical")  # mop.generative_probes.MODES (tests/test_startup.py checks)
# Every numeric flag: (low, high, low excluded, whole number); checked before anything is read or
# written (mop.checks.check_number: finite and in range).
ANALYSIS_NUMBER_FLAGS = {
    "num_samples": (1, 10_000, False, True),
    "num_windows": (1, 10**6, False, True),
    "prior_scale": (0, 100, False, False),
    "num_opt_contexts": (1, 10_000, False, True),
    "num_contexts": (1, 10_000, False, True),
    "steps": (0, 100_000, False, True),
    "lr": (0, 100, True, False),
    "kl_weight": (0, 1e6, False, False),
    "margin": (0, 1e6, True, False),
    "max_steps": (1, 10**8, False, True),
    "num_clusters": (1, 1000, False, True),
    "window": (2, 1000, False, True),
    "max_windows": (1, 10**7, False, True),
    "layer": (0, 1000, False, True),
    "component": (0, 100_000, False, True),
    "seed": (0, 2**32 - 1, False, True),
    "num_threads": (1, 1024, False, True),
}


def generative_analysis_parser(description: str | None) -> argparse.ArgumentParser:
    p = ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model_final.pt of train_generative.py")
    p.add_argument("--analysis", required=True, choices=ANALYSES)
    p.add_argument("--dataset", default=None, help="recording for contexts (default: the model's)")
    p.add_argument("--out", default=None, help="output folder (default: <model folder>/<analysis>)")
    p.add_argument("--num_samples", type=int, default=4, help="samples/directions: contexts")
    p.add_argument("--num_windows", type=int, default=512, help="accuracy: held-out windows")
    p.add_argument(
        "--prior_scale", type=float, default=1.0, help="samples: z ~ N(0, s^2 I) (0: the prior mean)"
    )
    p.add_argument(
        "--target",
        default=None,
        help="maximise/saliency: layer_<k>:expert_<j> | lpc | action:<a>, a comma list of them, or "
        "'all' (every expert of every layer)",
    )
    p.add_argument(
        "--control",
        default="action:2",
        help="maximise/saliency: the positive control run beside every target (default action:2, forward)",
    )
    p.add_argument(
        "--modes",
        default="leash,typical",
        help="maximise: leash (z from 0, --kl_weight·½|z|² leash) and/or typical (z on the sphere |z| = √d)",
    )
    p.add_argument("--minimise", action="store_true", help="maximise: lower the target instead")
    p.add_argument(
        "--from_episode_start",
        action="store_true",
        help="samples/maximise: contexts that begin at an episode's first step",
    )
    p.add_argument(
        "--num_opt_contexts",
        type=int,
        default=16,
        help="maximise: contexts z is optimised on (training episodes)",
    )
    p.add_argument(
        "--num_contexts",
        type=int,
        default=32,
        help="maximise/saliency/edits: held-out contexts the results are reported on (default 32; "
        "16 or more for a useful interval)",
    )
    p.add_argument("--steps", type=int, default=60, help="maximise: gradient steps on z (default 60)")
    p.add_argument("--lr", type=float, default=0.05, help="maximise: Adam step size on z")
    p.add_argument("--kl_weight", type=float, default=0.01, help="maximise: weight of the leash mode's ½|z|²")
    p.add_argument(
        "--margin",
        type=float,
        default=None,
        help="maximise: equivalence margin (target units, > 0): 'did not move' only when the TOST at "
        "±margin passes (Holm over the targets); without it a target that did not move is 'not resolved'",
    )
    p.add_argument("--max_steps", type=int, default=20_000, help="pca/directions/edits: recorded steps used")
    p.add_argument("--num_clusters", type=int, default=6, help="pca/behaviours: k-means clusters")
    p.add_argument("--window", type=int, default=8, help="behaviours: steps per window")
    p.add_argument(
        "--max_windows", type=int, default=20_000, help="behaviours: windows kept (a random subset)"
    )
    p.add_argument(
        "--layer", type=int, default=None, help="pca: layer whose dominant expert colours (default last)"
    )
    p.add_argument("--component", type=int, default=0, help="directions/edits: 0-based PCA component")
    p.add_argument(
        "--direction",
        default=None,
        help="edits: a .npy vector of the agent's memory size instead of a component",
    )
    p.add_argument("--alphas", default="-3,-1.5,0,1.5,3", help="directions: shifts in std units")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num_threads", type=int, default=1)
    return p


def check_generative_analysis_args(args: argparse.Namespace) -> list[float]:
    """Every numeric flag, --alphas, --modes and --target's presence (ConfigError, one line); the
    alphas."""
    check_numbers(args, ANALYSIS_NUMBER_FLAGS)
    try:
        alphas = [float(a) for a in args.alphas.split(",") if a.strip()]
    except ValueError:
        raise ConfigError(f"--alphas must be comma-separated numbers, got {args.alphas!r}") from None
    if not alphas:
        raise ConfigError("--alphas is empty")
    for a in alphas:
        check_number(a, "--alphas", -100, 100)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or any(m not in GENERATIVE_MODES for m in modes):
        raise ConfigError(
            f"--modes must be a comma list of {', '.join(GENERATIVE_MODES)}, got {args.modes!r}"
        )
    if args.analysis in NEEDS_TARGET and not args.target:
        raise ConfigError(
            f"--analysis {args.analysis} needs --target (layer_<k>:expert_<j> | lpc | action:<a> | all)"
        )
    return alphas
