"""The settings of a linear-mode-connectivity experiment: the one place their defaults are written.

`LmcSettings` holds what lmc.py runs an experiment with beyond its runs' training config (that is
train_mop.py's: mop/experiment.py's TrainConfig and config.yaml). Each field carries its default
and its --help text, as TrainConfig's do: lmc.py's flags and its `compare` subcommand's are built
from them (`add_flags`), its functions' keyword defaults read `DEFAULTS`, and modal_app.py's `lmc`
entrypoint takes its parameters' defaults from `DEFAULTS` (tests/test_lmc.py checks all three).

--bootstrap's bounds are here too (`check_bootstrap`, mop/lmc_stats.py's rule), so lmc.py refuses a
bad count before its heavy imports. Torch-free (plain values and argparse only), so modal_app.py
can import it on the launching machine without torch. Reads and writes nothing.

    from mop.lmc_settings import DEFAULTS, LmcSettings
    DEFAULTS.alphas                          # 11
    LmcSettings(alphas=21, eval_envs=8)      # one experiment's settings
"""

from __future__ import annotations

import argparse
import dataclasses
import numbers
from collections.abc import Iterable
from typing import Any

# The children's DAgger buffers at a fork (lmc.py's module docstring says what each means).
STRATEGIES = ("copy", "fresh", "shared", "split")
MIN_BOOTSTRAP = 100  # fewer resamples than this give percentile ends that move from run to run


def _setting(default: Any, help: str, compare: str | None = None) -> Any:
    """A field with its flag's help in `python lmc.py` and (`compare`) in `python lmc.py compare`;
    "{default}" in either is replaced by the default."""
    return dataclasses.field(default=default, metadata={"help": help, "compare": compare})


@dataclasses.dataclass(frozen=True)
class LmcSettings:
    """What an LMC experiment is run with, beyond the training config of its runs."""

    fork_points: str = _setting(
        "0.01,0.05,0.1,0.2,0.3,0.5,0.7,0.9",
        "fork points, fractions of num_updates in (0, 1), sorted; 0 forks the initialisation (default {default})",
    )
    # None: decided by the buffer (copy with one, fresh without)
    fork_buffer_strategy: str | None = _setting(
        None,
        f"children's DAgger buffers: {' | '.join(STRATEGIES)} (default: copy with --buffer_episodes, fresh "
        "without; only fresh without a buffer)",
    )
    alphas: int = _setting(
        11,
        "evenly spaced interpolation points in [0, 1], ends included, at least 2 (default {default})",
        "interpolation points, ends included (default {default})",
    )
    eval_episodes: int = _setting(
        100,
        "evaluation episodes per α, on evaluation seeds 0..N-1 (default {default})",
        "evaluation episodes per α (default {default})",
    )
    eval_envs: int = _setting(
        16,
        "evaluation envs stepped together, built once (default {default})",
        "evaluation envs stepped together (default {default})",
    )
    heldout_episodes: int = _setting(
        100,
        "bot-driven labelled episodes for the held-out loss and routing agreement (default {default})",
        "held-out bot episodes (default {default})",
    )
    pairs: int = _setting(
        1,
        "child pairs per fork, each trained from the fork with its own seeds: barriers are "
        "reported per pair and as a mean with its t interval across pairs (default {default})",
    )
    bootstrap: int = _setting(
        1000,
        "bootstrap resamples for the barriers' and the success drop's percentile intervals, at "
        "least 100 (default {default})",
        "bootstrap resamples for the intervals, at least 100 (default {default})",
    )
    results_root: str = _setting(
        "lmc_results", "experiments go to <results_root>/<task>/seed_<S>/<strategy>/ (default {default})"
    )
    parallel_children: int = _setting(
        1,
        "children trained at once, in processes with the env workers split (default {default}; shared: "
        "always one pair in lockstep)",
    )


DEFAULTS = LmcSettings()

# The settings an experiment stores in its config.json (and --resume compares), as lmc.py's
# build_experiment takes them: a dict of some of these keys, the rest from DEFAULTS.
EXPERIMENT_SETTINGS = (
    "fork_points",
    "fork_buffer_strategy",
    "pairs",
    "alphas",
    "eval_episodes",
    "eval_envs",
    "heldout_episodes",
)
# The evaluation settings, shared by an experiment and `lmc.py compare`.
EVALUATION_SETTINGS = ("alphas", "eval_episodes", "eval_envs", "heldout_episodes")


def add_flags(
    parser: argparse.ArgumentParser, names: Iterable[str], compare: bool = False, given_only: bool = False
) -> None:
    """A --<name> flag per setting, in the order given, with its help (`compare`: the compare
    subcommand's) and DEFAULTS' value; `given_only`: argparse.SUPPRESS instead, so a flag not given
    is absent from the parsed args (lmc.py tells --resume which settings were given)."""
    fields = {f.name: f for f in dataclasses.fields(LmcSettings)}
    for name in names:
        default = fields[name].default
        text = fields[name].metadata["compare" if compare else "help"]
        parser.add_argument(
            f"--{name}",
            type=int if isinstance(default, int) else None,
            default=argparse.SUPPRESS if given_only else default,
            help=None if text is None else text.format(default=default),
        )


def check_bootstrap(count: int) -> int:
    """`count` if it is a usable number of bootstrap resamples; ValueError otherwise (mop.lmc_stats
    uses it; lmc.py checks --bootstrap with it before its heavy imports)."""
    if isinstance(count, bool) or not isinstance(count, numbers.Integral) or not count >= MIN_BOOTSTRAP:
        raise ValueError(f"--bootstrap must be a whole number >= {MIN_BOOTSTRAP}, got {count!r}")
    if count > 1_000_000:
        raise ValueError(f"--bootstrap must be at most 1,000,000 (time), got {count}")
    return int(count)
