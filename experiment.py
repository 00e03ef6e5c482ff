"""The experiment's plumbing, shared by every stage: the config schema and its loading, seeding,
checkpoint save/load (one place, with its format version and the upgrade of older formats), and
metric logging. The imitation loop that uses them is imitation.py; run folders are runs.py.

- `TrainConfig`: every key of config.yaml, typed and documented; `load_config` merges YAML and CLI
  flags and rejects unknown keys, wrong types and impossible values with a message naming the key.
- checkpoints: plain dicts of tensors and plain types, written atomically, loadable with
  `torch.load(weights_only=True)`; `load_checkpoint` checks `format_version` and brings older
  checkpoints (the earlier system's included) to the current form in `upgrade_checkpoint`;
  `load_policy` rebuilds the policy and mission encoder of any checkpoint.
- `MetricLogger`: metrics.jsonl in the run folder (slash names), and wandb when asked.

Example:
    cfg = load_config("config.yaml", {"task_id": "BabyAI-GoToLocal-v0", "num_updates": 10})
    policy, encoder, config = load_policy("checkpoints/BabyAI-GoToLocal-v0/trial_0/checkpoint_final.pt")
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import math
import os
import random
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import numpy as np
import torch
import yaml

from runs import RunId, atomic_write, resume_candidates
from runs import run_dir as _run_dir

# Version of the checkpoint dict written by save_checkpoint. Checkpoints without `format_version`
# (the earlier system's, and this project's before it was checked) are format 0.
CHECKPOINT_FORMAT = 1


class ConfigError(ValueError):
    """A bad config value, file or command line; the message names the key."""


def _help(text: str, default: Any = dataclasses.MISSING, **kw: Any) -> Any:
    if isinstance(default, list):
        return field(
            default_factory=lambda: [list(x) if isinstance(x, list) else x for x in default],
            metadata={"help": text},
        )
    return field(default=default, metadata={"help": text}, **kw)


@dataclass
class TrainConfig:
    # What to train
    task_id: str = _help("BabyAI level (a registered gymnasium id)", "BabyAI-GoToLocal-v0")
    trial: int = _help("experiment number; checkpoints go to <checkpoint_dir>/<task_id>/trial_<N>/", 0)
    seed: int | None = _help(
        "run seed (weights, layouts, teacher forcing). null: seed 0, checkpoints directly under "
        "trial_<N>/; an integer S: checkpoints under trial_<N>/seed_<S>/",
        None,
    )
    # Environments and collection
    num_envs: int = _help("parallel environments, each labelled by its own BabyAI bot", 16)
    num_workers: int | None = _help(
        "env worker processes (null: the CPU cores available; 0 or 1: everything in this process)", None
    )
    unroll_len: int = _help("steps per env per update (truncated BPTT length)", 32)
    async_collection: bool = _help(
        "collect the next unroll while the learner updates on this one, i.e. with the weights from "
        "one update earlier (faster with workers; still reproducible). --no-async_collection acts "
        "with the newest weights, so the learner's replay equals the acting pass exactly",
        True,
    )
    max_steps: int | None = _help(
        "episode step limit (null: the level's own default, UnlockPickup fixed to 288)", None
    )
    teacher_forcing: float = _help(
        "probability of executing the bot's action instead of the student's (0: pure DAgger)", 0.0
    )
    path_ratio_fraction: float = _help(
        "fraction of training episodes whose bot path length is measured for path_ratio "
        "(each costs one extra bot rollout of the layout; 0 disables)",
        0.1,
    )
    # Optimisation
    num_updates: int = _help("optimizer steps; each uses num_envs x unroll_len labelled steps", 2000)
    lr: float = _help("Adam learning rate", 3e-3)
    max_grad_norm: float | None = _help("clip the gradient norm to this (null: no clipping)", 1.0)
    # Inputs
    obs_encoding: str = _help(
        "observation encoding: 'raw' (the earlier system's 152 integer codes) or 'onehot' (per image channel, 985)",
        "onehot",
    )
    input_encoder: str = _help(
        "how obs and mission enter the policy: 'linear' (the earlier system's Linear(obs ⊕ mission)) or 'bilinear' "
        "(per-cell detectors whose weights the mission sets; needs obs_encoding onehot)",
        "bilinear",
    )
    lang_encoder: str = _help(
        "mission encoder: 'bow' (learned bag of words over the BabyAI vocabulary, offline) or "
        "'distilbert' (frozen DistilBERT CLS + frozen random projection)",
        "bow",
    )
    distilbert_path: str = _help(
        "DistilBERT weights: a Hugging Face id in the local cache or a directory", "distilbert-base-uncased"
    )
    lang_dim: int = _help("mission embedding size", 32)
    # MoP architecture (train_mop.py)
    expert_hidden_sizes: list = _help(
        "expert GRU sizes per layer, 0 = identity; a flat list is one layer. On the command line also "
        "'16,32,64;32,64,128' (alias --mop_layers)",
        [[0, 16, 32], [0, 16, 32], [0, 16, 32]],
    )
    intermediate_dim: int = _help("width between MoE layers", 64)
    router_hidden_size: int = _help("router GRU size", 64)
    expert_dropout_beta: float = _help(
        "routing-dependent expert dropout (Cook et al. 2025): max drop probability beta; 0 = off", 0.0
    )
    expert_dropout_gamma: float = _help("... applied to experts whose weight is below gamma", 0.1)
    # LPC regulariser (train_mop.py)
    lpc_alpha: float = _help("weight of the Learned Pathway Complexity cost (0: logged, not trained on)", 0.0)
    lpc_exponent: float = _help("LPC = sum of w_j * size_j ** lpc_exponent", 2.0)
    normalize_lpc: bool = _help(
        "use alpha * LPC / (eps + CE) (Cook et al. 2025, eq. 2) instead of alpha * LPC", False
    )
    lpc_normalize_detach: bool = _help(
        "with --normalize_lpc, stop gradients through the CE denominator (so the cost cannot be "
        "lowered by raising CE); --no-lpc_normalize_detach lets them flow, as the paper's code does",
        True,
    )
    lpc_epsilon: float = _help("eps in the normalised cost", 1e-8)
    # GRU baseline (train.py)
    hidden_size: int = _help("GRU size of the baseline policy (train.py)", 64)
    # Output
    checkpoint_dir: str = _help("root folder for checkpoints and metrics.jsonl", "checkpoints")
    checkpoint_interval: int | None = _help("save every N updates (null: only the final checkpoint)", 500)
    log_interval: int = _help("updates between log lines / metrics.jsonl rows", 25)
    recent_window: int = _help("episodes in the 'recent' success and path-ratio averages", 100)
    wandb_project: str | None = _help("also log to this Weights & Biases project (null: off)", None)


CONFIG_KEYS = [f.name for f in dataclasses.fields(TrainConfig)]
_TYPES = get_type_hints(TrainConfig)
# Keys that may change when a run is resumed; everything else must match the checkpoint.
RESUMABLE_OVERRIDES = {
    "num_updates",
    "num_workers",
    "log_interval",
    "checkpoint_interval",
    "wandb_project",
    "checkpoint_dir",
}


def _base_type(tp: Any) -> tuple[Any, bool]:
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        return args[0], True
    return tp, False


def _coerce(key: str, value: Any) -> Any:
    """Check (and gently convert) one value against the schema; raise ConfigError naming the key."""
    tp, optional = _base_type(_TYPES[key])
    if value is None:
        if optional:
            return None
        raise ConfigError(f"config key {key!r} may not be null")
    if isinstance(value, str) and tp is not str and value.lower() in ("null", "none") and optional:
        return None
    if key == "expert_hidden_sizes":
        from mixture_of_experts import normalize_expert_sizes

        try:
            return [list(layer) for layer in normalize_expert_sizes(value)]
        except ValueError as e:
            raise ConfigError(f"expert_hidden_sizes: {e}") from None
    try:
        if tp is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
                return value.lower() in ("true", "1", "yes")
            raise ValueError
        if tp is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if tp is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if tp is str:
            if not isinstance(value, str):
                raise ValueError
            return value
    except (TypeError, ValueError):
        pass
    raise ConfigError(
        f"config key {key!r} must be {tp.__name__}{' or null' if optional else ''}, got {value!r}"
    )


def validate(cfg: TrainConfig) -> TrainConfig:
    """Raise ConfigError on impossible values (each message names the key)."""
    from babyai_env import OBS_ENCODINGS, check_task_id

    try:
        check_task_id(cfg.task_id)
    except ValueError as e:
        raise ConfigError(f"task_id: {e}") from None
    for key in (
        "num_envs",
        "unroll_len",
        "num_updates",
        "log_interval",
        "lang_dim",
        "intermediate_dim",
        "router_hidden_size",
        "hidden_size",
        "recent_window",
    ):
        if getattr(cfg, key) <= 0:
            raise ConfigError(f"{key} must be positive, got {getattr(cfg, key)}")
    for key in ("checkpoint_interval", "max_steps"):
        if getattr(cfg, key) is not None and getattr(cfg, key) <= 0:
            raise ConfigError(f"{key} must be positive or null, got {getattr(cfg, key)}")
    for key in ("trial", "seed", "num_workers"):
        if getattr(cfg, key) is not None and getattr(cfg, key) < 0:
            raise ConfigError(f"{key} must be >= 0, got {getattr(cfg, key)}")
    if not (cfg.lr > 0 and math.isfinite(cfg.lr)):
        raise ConfigError(f"lr must be a positive number, got {cfg.lr}")
    if cfg.max_grad_norm is not None and cfg.max_grad_norm <= 0:
        raise ConfigError(f"max_grad_norm must be positive or null, got {cfg.max_grad_norm}")
    for key in ("teacher_forcing", "path_ratio_fraction", "expert_dropout_beta"):
        if not 0.0 <= getattr(cfg, key) <= 1.0:
            raise ConfigError(f"{key} must be in [0, 1], got {getattr(cfg, key)}")
    if not 0.0 < cfg.expert_dropout_gamma <= 1.0:
        raise ConfigError(f"expert_dropout_gamma must be in (0, 1], got {cfg.expert_dropout_gamma}")
    if cfg.lpc_alpha < 0 or cfg.lpc_epsilon <= 0 or cfg.lpc_exponent < 0:
        raise ConfigError("lpc_alpha and lpc_exponent must be >= 0 and lpc_epsilon > 0")
    if cfg.obs_encoding not in OBS_ENCODINGS:
        raise ConfigError(f"obs_encoding must be one of {OBS_ENCODINGS}, got {cfg.obs_encoding!r}")
    if cfg.input_encoder not in ("linear", "bilinear"):
        raise ConfigError(f"input_encoder must be 'linear' or 'bilinear', got {cfg.input_encoder!r}")
    if cfg.input_encoder == "bilinear" and cfg.obs_encoding != "onehot":
        raise ConfigError("input_encoder 'bilinear' needs obs_encoding 'onehot'")
    if cfg.lang_encoder not in ("bow", "distilbert"):
        raise ConfigError(f"lang_encoder must be 'bow' or 'distilbert', got {cfg.lang_encoder!r}")
    return cfg


def load_yaml(path: str | os.PathLike | None) -> dict:
    if path is None:
        return {}
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise ConfigError(f"cannot read config {str(path)!r}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config {str(path)!r} is not valid YAML: {str(e).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config {str(path)!r} must be a mapping of keys to values")
    return data


def check_keys(values: dict, source: str) -> None:
    for key in values:
        if key not in CONFIG_KEYS:
            close = difflib.get_close_matches(str(key), CONFIG_KEYS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown key {key!r} in {source}{hint}")


def load_config(path: str | os.PathLike | None = None, overrides: dict | None = None) -> TrainConfig:
    """Defaults <- YAML file <- overrides (CLI flags), validated."""
    data = load_yaml(path)
    check_keys(data, f"config {str(path)!r}")
    overrides = overrides or {}
    check_keys(overrides, "overrides")
    merged = {**data, **overrides}
    values = {k: _coerce(k, v) for k, v in merged.items()}
    return validate(TrainConfig(**values))


def build_arg_parser(
    description: str, extra: Callable[[argparse.ArgumentParser], None] | None = None
) -> argparse.ArgumentParser:
    """One --flag per config key (help from the schema), plus --config and --resume."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config", default=None, help="YAML file of defaults (default: config.yaml if present)"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in the checkpoint folder from its latest checkpoint",
    )
    for f in dataclasses.fields(TrainConfig):
        tp, optional = _base_type(_TYPES[f.name])
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        text = f"{f.metadata['help']} (default: {json.dumps(default)})"
        if tp is bool:
            parser.add_argument(
                f"--{f.name}", action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=text
            )
        else:
            parser.add_argument(f"--{f.name}", default=argparse.SUPPRESS, metavar=f.name.upper(), help=text)
    parser.add_argument(
        "--mop_layers",
        dest="expert_hidden_sizes",
        default=argparse.SUPPRESS,
        metavar="SPEC",
        help="alias of --expert_hidden_sizes in the integration guide's syntax, e.g. '16,32,64;32,64,128'",
    )
    if extra:
        extra(parser)
    return parser


def config_from_args(args: argparse.Namespace) -> tuple[TrainConfig, bool]:
    overrides = {k: v for k, v in vars(args).items() if k in CONFIG_KEYS}
    path = args.config
    if path is None and Path("config.yaml").exists():
        path = "config.yaml"
    if args.resume:
        return resume_config(path, overrides), True
    return load_config(path, overrides), False


# ----------------------------------------------------------------------------- run folders, seeding


def run_dir(cfg: TrainConfig) -> Path:
    """The run folder of a config: <checkpoint_dir>/<task_id>/trial_<N>/[seed_<S>/]."""
    return _run_dir(cfg.checkpoint_dir, RunId(cfg.task_id, cfg.trial, cfg.seed))


def run_seed(cfg: TrainConfig) -> int:
    return cfg.seed if cfg.seed is not None else 0


def default_num_workers() -> int:
    """The CPU cores this process may use (what num_workers null means)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    return {
        "torch": torch.get_rng_state(),
        "numpy": list(np.random.get_state(legacy=True)[1].tolist())
        + [int(np.random.get_state(legacy=True)[2])],
        "python": [list(random.getstate()[1]), random.getstate()[0]],
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    keys = np.array(state["numpy"][:-1], dtype=np.uint32)
    np.random.set_state(("MT19937", keys, int(state["numpy"][-1])))
    internal, version = state["python"]
    random.setstate((version, tuple(internal), None))


# ----------------------------------------------------------------------------- checkpoints


class CheckpointError(ValueError):
    """A file that is not a loadable checkpoint of this project (or of the earlier system)."""


def save_checkpoint(path: str | os.PathLike, payload: dict) -> Path:
    """Write a checkpoint dict atomically, stamped with CHECKPOINT_FORMAT."""
    return atomic_write(path, lambda tmp: torch.save({"format_version": CHECKPOINT_FORMAT, **payload}, tmp))


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Load a checkpoint safely (weights_only), check its format version and upgrade an older one;
    raise CheckpointError with one clear line if it is not a checkpoint this code can read."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is unreadable or corrupt ({type(e).__name__})"
        ) from None
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
    """Bring a checkpoint of any older format to the current one (the one place that knows them).

    Format 0 (the earlier system's): the config predates `policy_type`,
    `obs_encoding`, `input_encoder` (the earlier system's raw 152 inputs through a linear layer), carries no
    `update` (it is top-level, if anywhere), and the mission encoder is a bare
    `lang_proj_state_dict` (DistilBERT)."""
    config = dict(ckpt["config"])
    config.setdefault("policy_type", "mop")
    config.setdefault("obs_encoding", "raw")
    config.setdefault("input_encoder", "linear")
    config.setdefault("num_actions", 7)
    config.setdefault("update", ckpt.get("update"))
    if "lang_encoder" not in config:
        config["lang_encoder"] = "distilbert" if "lang_proj_state_dict" in ckpt else "bow"
    out = {**ckpt, "config": config, "format_version": CHECKPOINT_FORMAT}
    if out.get("encoder_state") is None and "lang_proj_state_dict" in ckpt:
        out["encoder_state"] = {
            "kind": "distilbert",
            "lang_dim": config.get("lang_dim"),
            "lang_proj_state_dict": ckpt["lang_proj_state_dict"],
        }
    return out


def load_policy(
    checkpoint_path: str | os.PathLike, ckpt: dict | None = None
) -> tuple[torch.nn.Module, torch.nn.Module, dict]:
    """(policy, mission encoder, config) of a checkpoint, in eval mode. Raises CheckpointError."""
    from language import MissionEncoderError, build_mission_encoder
    from mixture_of_experts import build_policy

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
            config.get("distilbert_path", "distilbert-base-uncased"),
            state=ckpt.get("encoder_state"),
        )
    except (MissionEncoderError, ValueError) as e:
        raise CheckpointError(f"checkpoint {str(checkpoint_path)!r}: {e}") from None
    policy.eval()
    encoder.eval()
    return policy, encoder, config


def resume_config(path: str | os.PathLike | None, overrides: dict) -> TrainConfig:
    """The config of the run to resume: the checkpoint's, with only RESUMABLE_OVERRIDES changed."""
    base = load_config(path, overrides)
    candidates = resume_candidates(run_dir(base))
    if not candidates:
        raise ConfigError(f"--resume: no checkpoint to resume in {str(run_dir(base))!r}")
    try:
        saved = load_checkpoint(candidates[0])["config"]
    except CheckpointError as e:
        raise ConfigError(f"--resume: {e}") from None
    stored = {k: saved[k] for k in CONFIG_KEYS if k in saved}
    for key, value in overrides.items():
        if key in RESUMABLE_OVERRIDES:
            stored[key] = value
        elif _coerce(key, value) != _coerce(key, stored.get(key)):
            raise ConfigError(
                f"--resume: {key}={value!r} differs from the checkpoint's {stored.get(key)!r}; "
                f"only {', '.join(sorted(RESUMABLE_OVERRIDES))} may change"
            )
    return validate(TrainConfig(**{k: _coerce(k, v) for k, v in stored.items()}))


# ----------------------------------------------------------------------------- metrics


class MetricLogger:
    """metrics.jsonl in the run folder (slash names), and wandb when a project is given."""

    def __init__(self, directory: Path, cfg: TrainConfig, resume: bool, resume_update: int | None = None):
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "metrics.jsonl"
        self.wandb = None
        if cfg.wandb_project:
            try:
                import wandb  # lazy: wandb is optional
            except ImportError:
                raise ConfigError(
                    "wandb_project is set but wandb is not installed (pip install wandb)"
                ) from None
            name = f"{cfg.task_id}-t{cfg.trial}" + (f"-s{cfg.seed}" if cfg.seed is not None else "")
            self.wandb = wandb.init(
                project=cfg.wandb_project, name=name, config=dataclasses.asdict(cfg), resume="allow"
            )
        if not resume:
            self.path.unlink(missing_ok=True)
        elif self.path.exists() and resume_update is not None:
            # Rows logged after the checkpoint we resume from will be logged again: drop them.
            kept = [r for r in read_metrics(self.path) if r.get("update", 0) <= resume_update]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))

    def log(self, row: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.wandb is not None:
            self.wandb.log(row, step=row["update"])

    def close(self) -> None:
        if self.wandb is not None:
            self.wandb.finish()


def read_metrics(path: str | os.PathLike) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def cli_main(main: Callable[[TrainConfig, bool], dict], description: str) -> None:
    """Parse flags, run main, and turn expected errors into one line and exit code 2."""
    args = build_arg_parser(description).parse_args()
    try:
        cfg, resume = config_from_args(args)
        main(cfg, resume=resume)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted; continue with --resume", file=sys.stderr)
        sys.exit(130)
