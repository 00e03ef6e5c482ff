"""Run plumbing shared by every stage: the config schema and its loading, seeding, checkpoints,
metric logging, and the online-imitation loop that train.py and train_mop.py both run.

- `TrainConfig`: every key of config.yaml, typed and documented; `load_config` merges YAML and CLI
  flags and rejects unknown keys, wrong types and impossible values with a message naming the key.
- checkpoints: plain dicts of tensors and plain types, written atomically, loadable with
  `torch.load(weights_only=True)`, under `<checkpoint_dir>/<task_id>/trial_<N>/[seed_<S>/]`.
- `run_imitation(cfg, policy, loss_fn)`: the DAgger-style loop (workers act, the learner replays
  each unroll as whole sequences with gradients), logging to tqdm, stdout, metrics.jsonl, wandb.

Example:
    cfg = load_config("config.yaml", {"task_id": "BabyAI-GoToLocal-v0", "num_updates": 10})
    python train_mop.py --help    # every key, with its meaning and default
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
import tempfile
import time
import types
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import numpy as np
import torch
import yaml

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
        "observation encoding: 'raw' (the seed's 152 integer codes) or 'onehot' (per image channel, 985)",
        "onehot",
    )
    input_encoder: str = _help(
        "how obs and mission enter the policy: 'linear' (the seed's Linear(obs ⊕ mission)) or 'bilinear' "
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
    d = Path(cfg.checkpoint_dir) / cfg.task_id / f"trial_{cfg.trial}"
    return d / f"seed_{cfg.seed}" if cfg.seed is not None else d


def run_seed(cfg: TrainConfig) -> int:
    return cfg.seed if cfg.seed is not None else 0


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


def checkpoint_paths(directory: Path) -> list[tuple[int, Path]]:
    """Numbered checkpoints in a run folder, sorted by update."""
    out = []
    for p in Path(directory).glob("checkpoint_*.pt"):
        stem = p.stem.removeprefix("checkpoint_")
        if stem.isdigit():
            out.append((int(stem), p))
    return sorted(out)


def atomic_torch_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Load a checkpoint safely (weights_only); raise ValueError with one clear line if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint {str(path)!r} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"checkpoint {str(path)!r} is unreadable or corrupt ({type(e).__name__})") from None
    if not isinstance(ckpt, dict) or "policy_state_dict" not in ckpt or "config" not in ckpt:
        raise ValueError(
            f"checkpoint {str(path)!r} has no policy_state_dict/config: not a checkpoint of this project"
        )
    return ckpt


def resume_config(path: str | os.PathLike | None, overrides: dict) -> TrainConfig:
    """The config of the run to resume: the checkpoint's, with only RESUMABLE_OVERRIDES changed."""
    base = load_config(path, overrides)
    latest = latest_checkpoint(run_dir(base))
    if latest is None:
        raise ConfigError(f"--resume: no checkpoint to resume in {str(run_dir(base))!r}")
    saved = load_checkpoint(latest)["config"]
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


def latest_checkpoint(directory: Path) -> Path | None:
    numbered = checkpoint_paths(directory)
    return numbered[-1][1] if numbered else None


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


# ----------------------------------------------------------------------------- the loop


@dataclass
class RunStats:
    """Counters that survive --resume."""

    frames: int = 0
    episodes: int = 0
    successes: int = 0
    bot_failures: int = 0
    recent_success: list = field(default_factory=list)
    recent_path_ratio: list = field(default_factory=list)
    elapsed_s: float = 0.0


def default_num_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def run_imitation(
    cfg: TrainConfig,
    policy_type: str,
    build_policy_fn: Callable[[dict], torch.nn.Module],
    loss_fn: Callable[..., tuple[torch.Tensor, dict]],
    resume: bool = False,
    progress: bool = True,
) -> dict:
    """Online imitation on cfg.task_id; returns a summary (paths written, final metrics).

    Each update: the envs act for unroll_len steps with the current policy (in worker processes),
    the bot labels every visited state, then the learner replays the unroll as whole sequences
    with gradients from the memory the workers started from, and takes one Adam step on
    loss_fn(...). The replay equals the acting pass (a test checks the logits), so this is the
    same algorithm as stepping with graph, only faster.
    """
    from babyai_env import ParallelCollector, encode_obs, make_env, obs_dim
    from language import MissionEncoderError, build_mission_encoder

    directory = run_dir(cfg)
    ckpt = None
    if resume:
        ckpt = load_checkpoint(latest_checkpoint(directory))
        if ckpt["update"] >= cfg.num_updates:
            raise ConfigError(
                f"--resume: the run in {str(directory)!r} already reached update {ckpt['update']}; raise --num_updates to continue"
            )
    elif checkpoint_paths(directory) or (directory / "checkpoint_final.pt").exists():
        raise ConfigError(
            f"{str(directory)!r} already holds checkpoints; use --resume, or another --trial/--seed/--checkpoint_dir"
        )

    seed = run_seed(cfg)
    seed_everything(seed)
    probe = make_env(cfg.task_id, cfg.max_steps)
    probe.reset(seed=0)
    model_config = {
        **dataclasses.asdict(cfg),
        "policy_type": policy_type,
        "input_dim": obs_dim(cfg.obs_encoding),
        "num_actions": int(probe.action_space.n),
        "effective_max_steps": int(probe.max_steps),
    }
    policy = build_policy_fn(model_config)
    encoder_factory = partial(
        build_mission_encoder, cfg.lang_encoder, cfg.lang_dim, cfg.distilbert_path, None, seed
    )
    try:
        encoder = encoder_factory()
    except MissionEncoderError as e:  # e.g. DistilBERT weights absent: one line, nothing written
        raise ConfigError(str(e)) from None
    params = list(policy.parameters()) + [p for p in encoder.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=cfg.lr)
    stats, start_update = RunStats(), 0
    if ckpt is not None:
        policy.load_state_dict(ckpt["policy_state_dict"])
        encoder.load_encoder_state(ckpt["encoder_state"])
        optimizer.load_state_dict(ckpt["optimizer_state_dict"])
        set_rng_state(ckpt["rng"])
        stats = RunStats(**ckpt["stats"])
        start_update = int(ckpt["update"])
    num_workers = cfg.num_workers if cfg.num_workers is not None else default_num_workers()
    torch.set_num_threads(1)  # small matrices: one thread is faster, and workers use the other cores
    logger = MetricLogger(directory, cfg, resume, start_update if resume else None)
    recent_success = deque(stats.recent_success, maxlen=cfg.recent_window)
    recent_ratio = deque(stats.recent_path_ratio, maxlen=cfg.recent_window)

    def save(update: int, name: str) -> Path:
        stats.recent_success, stats.recent_path_ratio = list(recent_success), list(recent_ratio)
        stats.elapsed_s = time.perf_counter() - started
        encoder_state = encoder.encoder_state()
        payload = {
            "format_version": CHECKPOINT_FORMAT,
            "policy_state_dict": policy.state_dict(),
            "encoder_state": encoder_state,
            "optimizer_state_dict": optimizer.state_dict(),
            "config": {**model_config, "update": update},
            "update": update,
            "rng": rng_state(),
            "collector_state": slot_states,
            "stats": dataclasses.asdict(stats),
        }
        if "lang_proj_state_dict" in encoder_state:
            payload["lang_proj_state_dict"] = encoder_state["lang_proj_state_dict"]
        path = directory / name
        atomic_torch_save(payload, path)
        return path

    written: list[str] = []
    row: dict = {}
    with ParallelCollector(
        cfg.task_id,
        cfg.num_envs,
        num_workers,
        run_seed=seed,
        max_steps=cfg.max_steps,
        obs_encoding=cfg.obs_encoding,
        policy_factory=partial(build_policy_fn, model_config),
        encoder_factory=encoder_factory,
        teacher_forcing=cfg.teacher_forcing,
        path_ratio_fraction=cfg.path_ratio_fraction,
        slot_states=ckpt["collector_state"] if ckpt is not None else None,
    ) as collector:
        from tqdm.auto import tqdm

        bar = tqdm(
            range(start_update + 1, cfg.num_updates + 1),
            initial=start_update,
            total=cfg.num_updates,
            desc=f"{cfg.task_id} t{cfg.trial}",
            disable=not progress,
            dynamic_ncols=True,
        )
        started = time.perf_counter() - (ckpt["stats"].get("elapsed_s", 0.0) if ckpt is not None else 0.0)
        window = {"frames": 0, "time": time.perf_counter(), "sums": {}, "n": 0}
        slot_states = ckpt["collector_state"] if ckpt is not None else None
        collector.submit(policy, encoder, cfg.unroll_len)
        for update in bar:
            chunk = collector.result()
            slot_states = chunk["slot_states"]
            if cfg.async_collection and update < cfg.num_updates:
                collector.submit(policy, encoder, cfg.unroll_len)  # overlaps with this update
            policy.train()
            encoder.train()
            obs = encode_obs(
                torch.from_numpy(chunk["image"]),
                torch.from_numpy(chunk["direction"]),
                torch.from_numpy(chunk["carrying"]),
                cfg.obs_encoding,
            )  # (T, N, obs_dim)
            lang = encoder(chunk["missions"])[torch.from_numpy(chunk["mission_index"])]  # (T, N, lang_dim)
            out = policy.forward_sequence(obs, lang, chunk["memory"], torch.from_numpy(chunk["done"]))
            labels = torch.from_numpy(chunk["label"])
            mask = torch.from_numpy(chunk["label_mask"])
            loss, parts = loss_fn(out, labels, mask)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.max_grad_norm is not None:
                parts["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm))
            optimizer.step()
            if not cfg.async_collection and update < cfg.num_updates:
                collector.submit(policy, encoder, cfg.unroll_len)

            frames = int(np.prod(chunk["done"].shape))
            stats.frames += frames
            window["frames"] += frames
            for _, ep in chunk["episodes"]:
                stats.episodes += 1
                stats.successes += ep.success
                stats.bot_failures += ep.bot_failure is not None
                recent_success.append(float(ep.success))
                if ep.bot_steps:
                    recent_ratio.append(ep.length / ep.bot_steps)
            for k, v in parts.items():
                window["sums"][k] = window["sums"].get(k, 0.0) + float(v)
            window["n"] += 1

            if update % cfg.log_interval == 0 or update == cfg.num_updates:
                now = time.perf_counter()
                row = {"update": update, "frames": stats.frames}
                row.update({k: v / window["n"] for k, v in window["sums"].items()})
                row["train/success_recent"] = (
                    float(np.mean(recent_success)) if recent_success else float("nan")
                )
                row["train/path_ratio_recent"] = (
                    float(np.mean(recent_ratio)) if recent_ratio else float("nan")
                )
                row["episodes/total"] = stats.episodes
                row["episodes/recent_window"] = len(recent_success)
                row["episodes/bot_failures"] = stats.bot_failures
                row["perf/frames_per_s"] = window["frames"] / max(now - window["time"], 1e-9)
                row["time/elapsed_s"] = now - started
                logger.log(row)
                if progress:
                    bar.write(format_log_line(row))
                bar.set_postfix(
                    succ=f"{row['train/success_recent']:.2f}",
                    loss=f"{row.get('train/loss', float('nan')):.3f}",
                )
                window = {"frames": 0, "time": now, "sums": {}, "n": 0}
            if cfg.checkpoint_interval and update % cfg.checkpoint_interval == 0 and update < cfg.num_updates:
                written.append(str(save(update, f"checkpoint_{update}.pt")))
        final = save(cfg.num_updates, f"checkpoint_{cfg.num_updates}.pt")
        written += [str(final), str(save(cfg.num_updates, "checkpoint_final.pt"))]
        bar.close()
    logger.close()
    return {
        "run_dir": str(directory),
        "checkpoints": written,
        "metrics_path": str(logger.path),
        "final": row,
        "episodes": stats.episodes,
        "bot_failures": stats.bot_failures,
    }


def format_log_line(row: dict) -> str:
    parts = [
        f"upd {row['update']:>5}",
        f"loss {row.get('train/loss', float('nan')):.3f}",
        f"acc {row.get('train/accuracy', float('nan')):.3f}",
        f"succ {row['train/success_recent']:.3f} ({row['episodes/recent_window']} ep)",
        f"path {row['train/path_ratio_recent']:.2f}",
    ]
    if "train/lpc" in row:
        parts.append(f"lpc {row['train/lpc']:.0f}")
        layers = sorted({k.split("/")[1] for k in row if k.startswith("routing/")})
        for layer in layers:
            ws = [row[k] for k in sorted(k for k in row if k.startswith(f"routing/{layer}/"))]
            parts.append(f"{layer.replace('layer_', 'L')} " + "/".join(f"{w:.2f}" for w in ws))
    parts += [
        f"{row['perf/frames_per_s']:.0f} f/s",
        f"ep {row['episodes/total']}",
        f"botfail {row['episodes/bot_failures']}",
    ]
    return " | ".join(parts)


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
