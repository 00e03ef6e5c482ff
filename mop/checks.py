"""ConfigError and the number rules every setting and flag shares: a config key, a stage's flag or
a notebook's input is a finite number, whole where it counts something, within its range, or one
line naming it and the range. The lowest of the package's modules (nothing of the project
imported), so the config schema (mop/experiment.py, which re-exports these names), the metrics log
and every stage use one rule. Reads and writes nothing. Also the edges every command shares:
`refuse(message)` (one `error:` line, exit 2) and `command_edges()` around a command's main (a full
disk or a file-size limit is one `error:` line and exit 2, Ctrl-C one line and exit 130: every
write of the project is atomic, so what was written before stays whole; `| head` ends the output,
not the command).

    check_number(args.steps, "--steps", 1, 10**6, whole=True)      # ConfigError: --steps must be ...
"""

from __future__ import annotations

import ast
import contextlib
import errno
import math
import numbers
import os
import sys
from collections.abc import Iterator
from typing import NoReturn


class ConfigError(ValueError):
    """A bad config value, file or command line; the message names the key."""


def finite_number(value: float, what: str) -> float:
    """`value` if it is a finite number; ConfigError "<what> must be a finite number" otherwise.
    One rule for every float setting, config keys and other stages' flags: nan and inf never are one."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{what} must be a finite number, got {value!r}")
    return float(value)


def check_number(
    value: float,
    what: str,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    whole: bool = False,
) -> float:
    """`value` if it is finite (finite_number), a whole number when `whole`, and within [low, high]
    ((low, high] with low_open); ConfigError naming `what` and the range otherwise."""
    number = finite_number(value, what)
    bad_low = low is not None and (number <= low if low_open else number < low)
    bad_high = high is not None and number > high
    if (whole and not float(number).is_integer()) or bad_low or bad_high:
        kind = "a whole number" if whole else "a number"
        lower = "" if low is None else (f"> {low:g}" if low_open else f">= {low:g}")
        upper = "" if high is None else f"<= {high:g}"
        bounds = " and ".join(b for b in (lower, upper) if b)
        raise ConfigError(f"{what} must be {kind}{' ' + bounds if bounds else ''}, got {value!r}")
    return number


def refuse(message: str) -> NoReturn:
    """A command's answer to bad input: one `error:` line on stderr and exit code 2 (the code
    argparse gives a usage error), nothing written. `raise SystemExit("error: ...")` would exit 1."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


# errno values of "the disk cannot take this write": full, over the file-size limit, over quota.
_NO_ROOM = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}
# What torch.save's C++ writer raises instead of an OSError when a write fails (RuntimeError text).
_TORCH_WRITE_FAILED = ("inline_container.cc", "PytorchStreamWriter failed", "file write failed")


def no_room(error: BaseException) -> bool:
    """Whether an exception is a write the disk could not take (OSError ENOSPC/EFBIG/EDQUOT,
    pyarrow's OSError spelling of them, or torch.save's RuntimeError from its writer)."""
    if isinstance(error, OSError):
        text = str(error)
        return error.errno in _NO_ROOM or "No space left" in text or "File too large" in text
    return isinstance(error, RuntimeError) and any(t in str(error) for t in _TORCH_WRITE_FAILED)


def during_interrupt(error: BaseException) -> bool:
    """Whether an exception was raised while a KeyboardInterrupt was being handled: cleanup code
    that Ctrl-C cut short (tqdm releasing a lock its interrupted acquire never took) raises its own
    error with the interrupt as its context, and the command was still interrupted."""
    seen = error.__context__
    while seen is not None:
        if isinstance(seen, KeyboardInterrupt):
            return True
        seen = seen.__context__
    return False


class _ClosedPipeQuiet:
    """stdout that, once its reader has gone (`| head` read what it wanted), sends the rest to
    /dev/null: the command goes on and writes its files, where a print would have raised
    BrokenPipeError with a traceback and left them unwritten."""

    def __init__(self, stream):
        self._stream = stream

    def _to_devnull(self) -> None:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, self._stream.fileno())
        os.close(devnull)

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._to_devnull()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._to_devnull()

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


@contextlib.contextmanager
def command_edges(interrupted: str = "interrupted") -> Iterator[None]:
    """Around a command's main: a write the disk cannot take is one `error:` line and exit 2, and
    Ctrl-C is one line (`interrupted` says what to do next) and exit 130, instead of a traceback,
    also when cleanup that Ctrl-C cut short raised its own error. A reader that closes stdout early
    (`| head`) ends the output, not the command. Every other exception propagates unchanged."""
    stdout, sys.stdout = sys.stdout, _ClosedPipeQuiet(sys.stdout)
    try:
        yield
        sys.stdout.flush()  # a pipe closed after the last print: quiet here, not at exit
    except (KeyboardInterrupt, Exception) as e:
        # during_interrupt: e.g. tqdm's lock, cut by Ctrl-C mid-acquire, fails its release
        if isinstance(e, KeyboardInterrupt) or during_interrupt(e):
            print(interrupted, file=sys.stderr)
            raise SystemExit(130) from None
        if not no_room(e):
            raise
        where = f" writing {e.filename}" if getattr(e, "filename", None) else ""
        reason = os.strerror(e.errno) if getattr(e, "errno", None) in _NO_ROOM else "a write failed"
        print(
            f"error: {reason}{where} (disk full or a file-size limit?); what was written before is "
            "whole: free space and run the command again",
            file=sys.stderr,
        )
        raise SystemExit(2) from None
    finally:
        sys.stdout = stdout


def normalize_expert_sizes(sizes: object) -> tuple[tuple[int, ...], ...]:
    """Expert sizes as one tuple per layer. A flat list means one layer; raises ValueError.

    Accepts a nested/flat list, or a string: "[[0,16,32],[0,16,32]]", "[32,64,128]" or the
    integration guide's layer syntax "16,32,64;32,64,128" (layers separated by ';').
    """
    original = sizes
    if isinstance(sizes, str):
        text = sizes.strip()
        try:
            if text.startswith("["):
                sizes = ast.literal_eval(text)
            else:
                sizes = [[int(s) for s in layer.split(",") if s.strip()] for layer in text.split(";")]
        except (ValueError, SyntaxError):
            raise ValueError(
                f"expert sizes {original!r} are malformed: use '[[0,16,32],[0,16,32]]', "
                "'[32,64,128]' or '16,32,64;32,64,128'"
            ) from None
    if (
        isinstance(sizes, (list, tuple))
        and sizes
        and all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in sizes)
    ):
        sizes = [sizes]
    if not isinstance(sizes, (list, tuple)) or not sizes:
        raise ValueError(f"expert sizes {original!r} must be a non-empty list of layers")
    layers = []
    for i, layer in enumerate(sizes):
        if not isinstance(layer, (list, tuple)) or not layer:
            raise ValueError(f"expert sizes {original!r}: layer {i} must be a non-empty list of ints")
        for s in layer:
            if isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 0:
                raise ValueError(f"expert sizes {original!r}: layer {i} has {s!r}; sizes are integers >= 0")
        layers.append(tuple(int(s) for s in layer))
    return tuple(layers)


# Upper bounds where a larger value cannot work (each says why); mop.experiment's `validate`
# applies them and README "Bad input" lists them. Memory: one update holds num_envs x unroll_len
# labelled steps (<= MAX_STEPS_PER_UPDATE) and GRUs of the given sizes; seeds: numpy's legacy
# seeding takes < 2**32, and babyai_env's training layout seeds leave room for 1000 envs per run seed.
LIMITS = {
    "seed": (2**32 - 1, "numpy's RNG takes seeds below 2**32"),
    "num_envs": (1000, "training layout seeds leave room for 1000 envs per run"),
    "num_workers": (1000, "more worker processes than envs only idle"),
    "unroll_len": (10_000, "memory"),
    "num_updates": (10**9, "a run of more updates would not end"),
    "max_steps": (10**6, "an episode longer than this would not end"),
    "log_interval": (10**9, "at most num_updates"),
    "checkpoint_interval": (10**9, "at most num_updates"),
    "recent_window": (10**6, "memory (the window is stored in every checkpoint)"),
    "lang_dim": (4096, "memory"),
    "intermediate_dim": (4096, "memory"),
    "router_hidden_size": (4096, "memory"),
    "head_hidden_size": (4096, "memory"),
    "hidden_size": (4096, "memory"),
    "expert_hidden_sizes": (4096, "memory (each expert's GRU size)"),
    "lr": (1.0, "Adam diverges at once above it"),
    "lr_final": (1.0, "Adam diverges at once above it"),
    "dagger_lr": (1.0, "Adam diverges at once above it"),
    "lr_decay_updates": (10**9, "no run is longer: num_updates is at most 1e9"),
    "buffer_episodes": (10**7, "memory"),
    "trunk_channels": (1024, "memory and time: the learner's cost grows with its square"),
    "epochs": (1000, "an update of more passes would not end"),
    "demos": (10**7, "the layouts of one demo set (babyai_env.DEMO_SET_STRIDE)"),
    "demo_seed": (49, "50 disjoint demo sets lie between the evaluation and training seeds"),
}
MAX_STEPS_PER_UPDATE = 2**20
