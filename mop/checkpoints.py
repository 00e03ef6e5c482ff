"""Checkpoints, in one place: the format version, the atomic write, the safe load that upgrades
older formats (the earlier system's included), and the policy a checkpoint rebuilds.

- A checkpoint is a plain dict of tensors and plain types, written atomically by `save_checkpoint`
  and loadable with `torch.load(weights_only=True)`. `load_checkpoint` checks `format_version` and
  brings an older checkpoint to the current form (`upgrade_checkpoint`, i.e. mop/legacy_config.py).
- `load_policy` rebuilds the policy and mission encoder of any checkpoint, in eval mode.
- `newest_checkpoint` is the readable checkpoint a `--resume` continues from.
Every failure is a `CheckpointError` (or the `ConfigError` of a run with nothing to resume) in one
line. mop/experiment.py re-exports these names, where callers and users' scripts import them.

Example:
    policy, encoder, config = load_policy("checkpoints/BabyAI-GoToLocal-v0/trial_0/checkpoint_final.pt")
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mop import legacy_config
from mop.checks import ConfigError
from mop.devices import to_cpu
from mop.runs import RunLockedError, atomic_write, lock_owner, resume_candidates

if TYPE_CHECKING:  # torch is imported where it is used
    import torch

# Version of the checkpoint dict written by save_checkpoint. Checkpoints without `format_version`
# (the earlier system's, and this project's before it was checked) are format 0.
CHECKPOINT_FORMAT = 1

# What torch.load(weights_only=True) may build beyond tensors and plain types: the earlier system
# stored config["num_actions"] as gymnasium's numpy.int64, pickled as scalar(dtype('i8'), bytes).
# numpy 1.x writers name the reconstructor numpy.core.multiarray.scalar, numpy 2 numpy._core....
# Nothing else is allowed; upgrade_checkpoint turns the scalars into Python ints.
_NUMPY_SCALAR = np._core.multiarray.scalar
CHECKPOINT_SAFE_GLOBALS = [
    _NUMPY_SCALAR,
    (_NUMPY_SCALAR, "numpy.core.multiarray.scalar"),
    np.dtype,
    np.dtypes.Int64DType,
]


class CheckpointError(ValueError):
    """A file that is not a loadable checkpoint of this project (or of the earlier system)."""


def save_checkpoint(path: str | os.PathLike, payload: dict) -> Path:
    """Write a checkpoint dict atomically, stamped with CHECKPOINT_FORMAT; its tensors are stored
    on the CPU, whatever device they live on (load_checkpoint maps to the CPU as well)."""
    import torch

    payload = to_cpu({"format_version": CHECKPOINT_FORMAT, **payload})
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


# What torch's warnings about a file we refuse say it is (folded into the one error line).
_FOREIGN_KINDS = {"TorchScript": "a TorchScript archive (torch.jit)", "pickle protocol": "a plain pickle"}


def load_torch_file(path: str | os.PathLike, what: str = "checkpoint") -> Any:
    """torch.load(path, weights_only=True) (plus CHECKPOINT_SAFE_GLOBALS) of a file a user hands us,
    or CheckpointError in one line. torch warns before it fails on some foreign files (a TorchScript
    archive, a pickle of a newer protocol); those warnings are not printed, their gist goes into the
    error line, so a refused file gives that line and nothing else. A file that loads gets its
    warnings re-issued."""
    import torch

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            # map_location: tensors a GPU run saved (or a file whose storages name a device this
            # machine lacks) load on the CPU without a word; the stage then moves them to its device.
            with torch.serialization.safe_globals(CHECKPOINT_SAFE_GLOBALS):
                loaded = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            said = " ".join(str(w.message) for w in caught)
            kind = next((k for marker, k in _FOREIGN_KINDS.items() if marker in said), None)
            if kind:
                raise CheckpointError(f"{what} {str(path)!r} is {kind}, not a torch.save file") from None
            raise CheckpointError(
                f"{what} {str(path)!r} is unreadable or corrupt ({type(e).__name__})"
            ) from None
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return loaded


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Load a checkpoint safely (weights_only), check its format version and upgrade an older one;
    raise CheckpointError with one clear line if it is not a checkpoint this code can read."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    ckpt = load_torch_file(path)
    if (
        not isinstance(ckpt, dict)
        or "policy_state_dict" not in ckpt
        or not isinstance(ckpt.get("config"), dict)
    ):
        raise CheckpointError(
            f"checkpoint {str(path)!r} has no policy_state_dict/config: not a checkpoint of this project"
        )
    version = ckpt.get("format_version", 0)
    if not isinstance(version, int) or version > CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"checkpoint {str(path)!r} has format version {version!r}; this code reads up to "
            f"{CHECKPOINT_FORMAT}: update this project to read it"
        )
    return upgrade_checkpoint(ckpt)


def upgrade_checkpoint(ckpt: dict) -> dict:
    """Bring a checkpoint of any older format to the current one: format 0 (the earlier system's,
    and this project's before format_version) is mop/legacy_config.py's `upgrade`, the one place
    that knows it (its config keys, module names, numpy num_actions and architecture defaults)."""
    return legacy_config.upgrade(ckpt, CHECKPOINT_FORMAT)


def load_policy(
    checkpoint_path: str | os.PathLike, ckpt: dict | None = None, distilbert_path: str | None = None
) -> tuple[torch.nn.Module, torch.nn.Module, dict]:
    """(policy, mission encoder, config) of a checkpoint, in eval mode. Raises CheckpointError.

    distilbert_path: where this machine keeps the DistilBERT weights of a DistilBERT checkpoint
    (a directory or a Hugging Face id in the local cache); None: the run's `distilbert_path`."""
    from mixture_of_experts import build_policy
    from mop.language import MissionEncoderError, build_mission_encoder

    ckpt = load_checkpoint(checkpoint_path) if ckpt is None else ckpt
    config = ckpt["config"]
    missing = [k for k in ("task_id", "input_dim", "lang_dim") if k not in config]
    if missing:
        raise CheckpointError(
            f"checkpoint {str(checkpoint_path)!r} has no {', '.join(missing)} in its config"
        )
    try:
        policy = build_policy(config)
        policy.load_state_dict(ckpt["policy_state_dict"])
    except (KeyError, RuntimeError, ValueError, TypeError) as e:
        first = str(e).strip().splitlines()[0]
        raise CheckpointError(
            f"checkpoint {str(checkpoint_path)!r} does not match its config: {first}"
        ) from None
    try:
        encoder = build_mission_encoder(
            config["lang_encoder"],
            config["lang_dim"],
            distilbert_path or config.get("distilbert_path", "distilbert-base-uncased"),
            state=ckpt.get("encoder_state"),
        )
    except (MissionEncoderError, ValueError) as e:
        hint = " (eval_mop.py and batch_eval.py: --distilbert_path DIR)" if distilbert_path is None else ""
        raise CheckpointError(f"checkpoint {str(checkpoint_path)!r}: {e}{hint}") from None
    policy.eval()
    encoder.eval()
    return policy, encoder, config


def newest_checkpoint(directory: str | os.PathLike, report: bool = True) -> tuple[Path, dict]:
    """(path, checkpoint) of the newest readable checkpoint of a run folder (runs.resume_candidates'
    order). A bad one (truncated, not a checkpoint, a refused pickle) is skipped, named on stderr
    when `report`, and left in place (the run overwrites it when it gets there). ConfigError in one
    line if there is none."""
    candidates = resume_candidates(directory)
    if not candidates:
        owner = lock_owner(directory)
        if owner is not None:  # a run starting there has not written its first checkpoint yet
            raise RunLockedError(
                f"{str(directory)!r} is being trained by {owner}; wait for it to end, or stop it first"
            )
        raise ConfigError(f"--resume: no checkpoint to resume in {str(directory)!r}")
    bad = []
    for path in candidates:
        try:
            ckpt = load_checkpoint(path)
        except CheckpointError as e:
            bad.append(str(e))
            continue
        if bad and report:
            print(f"warning: {'; '.join(bad)}; resuming from {path.name}", file=sys.stderr)
        return path, ckpt
    raise ConfigError(f"--resume: no readable checkpoint in {str(directory)!r} ({'; '.join(bad)})")
