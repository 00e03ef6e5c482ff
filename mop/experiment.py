"""The experiment's plumbing, shared by every stage: the config schema and its loading, checkpoint
save/load (one place, with its format version and the upgrade of older formats), and metric logging.

- `TrainConfig`: every key of config.yaml, typed and documented; `load_config` merges YAML and CLI
  flags and rejects unknown keys, wrong types and impossible values with a message naming the key.
  The imitation loop that uses them is imitation.py; run folders are runs.py.
- checkpoints (mop/checkpoints.py, re-exported here): `save_checkpoint`, `load_checkpoint` (format
  version checked, older formats upgraded), `load_policy`, `newest_checkpoint`.
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
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, Union, get_args, get_origin, get_type_hints

import yaml

from mop import gate, legacy_config
from mop.checkpoints import (  # noqa: F401  (re-exported: callers import them from here)
    CHECKPOINT_FORMAT,
    CHECKPOINT_SAFE_GLOBALS,
    CheckpointError,
    load_checkpoint,
    load_policy,
    load_torch_file,
    newest_checkpoint,
    save_checkpoint,
    upgrade_checkpoint,
)
from mop.checks import (  # noqa: F401  (re-exported)
    LIMITS,
    MAX_STEPS_PER_UPDATE,
    ConfigError,
    check_number,
    command_edges,
    finite_number,
)
from mop.devices import DeviceError, check_device
from mop.level_names import BOT_REVISIONS, OBS_ENCODINGS, checked_levels, env_levels, subgoal_weights
from mop.metrics_log import MetricLogger, read_metrics  # noqa: F401  (re-exported: callers use experiment.read_metrics)
from mop.runs import OutputError, RunId, RunLockedError
from mop.runs import run_dir as _run_dir

# What --aux_key_weight's head may read (aux_losses.aux_target_loss's `reads`).
AUX_KEY_READS = ("memory", "head_input")


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
    task_id: str = _help(
        "BabyAI level (a registered gymnasium id), or a comma list of levels for one multi-task "
        "policy ('BabyAI-GoToLocal-v0,BabyAI-PickupLoc-v0'; checkpoints then under "
        "multi_GoToLocal+PickupLoc/)",
        "BabyAI-GoToLocal-v0",
    )
    task_weights: list | None = _help(
        "multi-task runs: the share of the envs per level, one positive weight per level in "
        "task_id's order, e.g. '0.5,0.25,0.25' (null: equal shares)",
        None,
    )
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
    demo_threads: int = _help(
        "torch threads of the learner while it trains on --demos (no env workers then; 1 while "
        "collecting). An execution setting; more help only on an idle box (docs/speed.md)",
        1,
    )
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
    teacher_forcing_final: float | None = _help(
        "teacher forcing at the end of its schedule (DAgger's beta_i): it goes linearly from "
        "--teacher_forcing at update 1 to this over --teacher_forcing_decay_updates updates, then "
        "stays (null: no schedule, --teacher_forcing throughout)",
        None,
    )
    teacher_forcing_decay_updates: int = _help(
        "updates over which teacher forcing goes from --teacher_forcing to --teacher_forcing_final "
        "(0: constant --teacher_forcing)",
        0,
    )
    path_ratio_fraction: float = _help(
        "fraction of training episodes whose bot path length is measured for path_ratio "
        "(each costs one extra bot rollout of the layout; 0 disables)",
        0.1,
    )
    fast_env: bool = _help(
        "serve observations and bot labels from fast_grid (numpy view, array search; identical to "
        "minigrid's, several times faster). --no-fast_env runs minigrid's own gen_obs and BabyAIBot",
        True,
    )
    # Imitation data: online DAgger (default), its aggregation buffer, or offline bot demos
    buffer_episodes: int = _help(
        "DAgger aggregation buffer: keep this many whole labelled episodes (oldest leave first) and "
        "replay them every update beside the fresh unroll, from their reset so the memory is exact "
        "(0: off). Saved as buffer_<update>.npz beside each checkpoint; --resume restores it",
        0,
    )
    replay_ratio: float = _help(
        "with --buffer_episodes: the fraction of each update's frames that are replayed episodes, in [0, 1)",
        0.5,
    )
    demos: int = _help(
        "offline behavioural cloning (BabyAI's IL): generate this many bot demos once (cached as "
        "<demos_dir>/<task>/<N>_<demo_seed>.npz, reused) and train on them only, in epochs "
        "(0: online imitation)",
        0,
    )
    demo_updates: int = _help(
        "K > 0 with --demos N: BabyAI's recipe, behavioural cloning then DAgger. Updates 1..K train "
        "offline on the N demos (as --demos alone), updates K+1..num_updates online as a run without "
        "--demos (live collection, --buffer_episodes/--replay_ratio/--batch_columns as set). The teacher "
        "forcing schedule starts at the switch (--teacher_forcing at update K+1), the lr schedule at "
        "update 1 (one Adam throughout); metrics.jsonl rows of the BC phase carry demos/epoch, one is "
        "logged at update K, and frames and episodes/total count on. 0: --demos trains offline throughout",
        0,
    )
    demos_in_dagger: bool = _help(
        "with --demo_updates K: every DAgger update trains on the BC phase's next demo batch too (its "
        "streamed columns or padded windows beside the live ones): the demos stay in DAgger's aggregate",
        False,
    )
    demo_seed: int = _help(
        "demo set: its layouts are seeds 5e8 + demo_seed x 1e7 + k, disjoint from training and evaluation (0..49)",
        0,
    )
    demos_dir: str = _help("root of the demo cache", "demos")
    learner_stream: str = _help(
        "how replayed and demo episodes reach the learner: 'padded' (each episode cut into "
        "unroll_len windows, the last padded, each window's starting memory rebuilt by a no-grad pass "
        "of the current weights) or 'streamed' (persistent columns playing episodes back to back, "
        "memory carried from the previous update: no padding, no rebuild, the memory one update "
        "old; docs/speed.md). Live collection is streamed either way",
        "padded",
    )
    batch_columns: int | None = _help(
        "with --learner_stream streamed: the columns of stored episodes in each Adam step (demos: "
        "the whole batch; --buffer_episodes: the replayed columns beside the num_envs live ones, "
        "in place of --replay_ratio); null: as many as the padded path's frames (demos: num_envs; "
        "a buffer: num_envs x replay_ratio / (1 - replay_ratio))",
        None,
    )
    # Optimisation
    num_updates: int = _help("optimizer steps; each uses num_envs x unroll_len labelled steps", 2000)
    lr: float = _help("Adam learning rate (at update 1, when --lr_final gives a schedule)", 3e-3)
    lr_final: float | None = _help(
        "learning rate at the end of its schedule: it goes linearly from --lr at update 1 to this "
        "over --lr_decay_updates updates, then stays (null: no schedule, --lr throughout)",
        None,
    )
    lr_decay_updates: int = _help(
        "updates over which the learning rate goes from --lr to --lr_final (0: constant --lr)", 0
    )
    dagger_lr: float | None = _help(
        "with --demo_updates K: the learning rate of the DAgger updates K+1.. (constant; Adam's "
        "moments carry over). null: the --lr schedule runs on through the switch",
        None,
    )
    max_grad_norm: float | None = _help("clip the gradient norm to this (null: no clipping)", 1.0)
    learner_precision: str = _help(
        "the learner's matmuls: 'float32' or 'bfloat16' (autocast; the weights, Adam, memory, routing "
        "weights and losses stay float32; faster where the CPU has bf16 kernels (AVX-512 or AMX), ~14x "
        "slower where it has not, which a warning says at the start: docs/speed.md)",
        "float32",
    )
    epochs: int = _help(
        "optimizer steps per update, each a pass over the same batch (the fresh unroll and its replayed "
        "episodes), from the memory the batch was collected with; 1: one step per batch",
        1,
    )
    entropy_coef: float = _help(
        "entropy bonus: the loss minus this times the mean entropy of the policy's action distribution "
        "on the labelled steps (BabyAI's imitation learning: 0.01; 0: off, the entropy is still logged)",
        0.0,
    )
    aux_rooms_weight: float = _help(
        "auxiliary loss on levels of several rooms: a linear head reads, from the memory after each "
        "step, which rooms the agent has stood in so far this episode (binary cross-entropy per "
        "room, mean), added to the loss times this weight. Training only: the policy never sees "
        "the rooms (0: off; memory_probe.py measures what the memory holds)",
        0.0,
    )
    aux_target_weight: float = _help(
        "auxiliary loss: a linear head reads where the bot heads (its GoNextTo target: cells ahead, "
        "cells right; a softmax each) from the memory after each step, times this weight (0: off)",
        0.0,
    )
    aux_subgoal_weight: float = _help(
        "auxiliary loss: a linear head reads what the bot is doing (exploring, going to the key, to a "
        "locked door, opening it, ...: babyai_env.SUBGOAL_KINDS; a softmax) from the memory after each "
        "step, times this weight (0: off; --demos needs a demo store made with them)",
        0.0,
    )
    aux_key_weight: float = _help(
        "auxiliary loss: a linear head reads where the nearest key of a locked door's colour that the "
        "agent has seen lies (cells ahead, cells right; a softmax each; babyai_env.KeyTracker) from the "
        "memory after each step, until it holds one, times this weight (0: off; --demos needs a demo "
        "store made with them; memory_probe.py --target key_offset measures what the memory holds)",
        0.0,
    )
    aux_key_reads: str = _help(
        "what --aux_key_weight's head reads: memory (every layer's states after the step) or head_input "
        "(what the action head reads, as --aux_match_weight's head does: the place asked for where the "
        "action is chosen)",
        "memory",
    )
    aux_door_weight: float = _help(
        "auxiliary loss: a linear head reads the colour of the locked door last in view (a softmax over "
        "minigrid's six colours; babyai_env.door_labels, from the episode's own views, so any demo store "
        "serves) from the memory after each step from its first sighting on, times this weight (0: off; "
        "memory_probe.py --target door measures what the memory holds)",
        0.0,
    )
    aux_match_weight: float = _help(
        "auxiliary loss: on the steps facing a key with free hands after a locked door was in view, a "
        "linear head reads whether that key has the door's colour (a sigmoid; babyai_env.key_match, from "
        "the episode's own views, so any demo store serves) from what the action head reads, times this "
        "weight (0: off; memory_probe.py --target key_match measures where the match is held)",
        0.0,
    )
    aux_door_place_weight: float = _help(
        "auxiliary loss: a linear head reads where the nearest locked door the agent has seen lies "
        "(cells ahead, cells right; a softmax each; babyai_env.DoorTracker) from the memory after each "
        "step, from its first sighting until it is unlocked, times this weight (0: off; --demos needs a "
        "demo store made with them; memory_probe.py --target door_offset measures what the memory holds)",
        0.0,
    )
    subgoal_ce_weights: dict | None = _help(
        "the action loss weighted by what the bot is doing at each step: {kind: weight > 0} over "
        "babyai_env.SUBGOAL_KINDS (command line: 'go to other object=4,open=4'), other kinds and steps "
        "without one 1; the loss's CE is sum(w ce) / sum(w). null: plain CE (--demos: a store with them)",
        None,
    )
    key_ahead_ce_weight: float = _help(
        "the action loss weighted on the steps whose view shows a key in the cell ahead while the agent's "
        "hands are free (where it takes a key or passes it by: the bot takes one of the locked door's "
        "colour, failures.py shows a student that takes any), other steps 1; the loss's CE is "
        "sum(w ce) / sum(w), times --subgoal_ce_weights' weight where both are given. 1: plain CE",
        1.0,
    )
    bot_undo: bool = _help(
        "DAgger's labels: the bot plans to revert a pickup, drop or door toggle the student did without "
        "it (minigrid's bot; --no-bot_undo: it keeps them and plans from the world the student left)",
        True,
    )
    bot_revision: int = _help(
        "which labelling bot: 1 (from 2026-11-30): where it means to pick something up with its hands "
        "full (a student kept its own pickup, --no-bot_undo) it puts what it holds down first; 0: "
        "minigrid's, which gives up there and DAgger loses the episode's labels. A run's config written "
        "before this key had 0: such a run resumes with it, and its recipe differs from today's",
        1,
    )
    key_layout_share: float | None = _help(
        "locked-door levels: share of the training episodes played on layouts where the mission "
        "needs the key (no target reachable without unlocking), the rest on layouts with a way "
        "around (null: the level's own mix, about 0.6 on Unlock and 0.4 on GoToImpUnlock). "
        "With --demos and --demo_updates K it chooses the DAgger phase's layouts. Evaluation always "
        "plays the level's own mix; failures.py scores the two kinds apart",
        None,
    )
    # Inputs
    input_dim: int | None = _help(
        "the earlier system's key, its observation size: 152 selects its network (obs_encoding raw, "
        "input_encoder linear, lang_encoder distilbert, where not set), 985 onehot (null: from obs_encoding)",
        None,
    )
    obs_encoding: str = _help(
        "observation encoding: 'raw' (the earlier system's 152 integer codes) or 'onehot' (per image channel, 985)",
        "onehot",
    )
    input_encoder: str = _help(
        "how obs and mission enter the policy: 'linear' (the earlier system's Linear(obs ⊕ mission)), 'bilinear' "
        "(per-cell detectors whose weights the mission sets; needs obs_encoding onehot) or 'film' (BabyAI 1.1's "
        "trunk: per-cell code embedding, two 3x3 convs, two mission-conditioned FiLM blocks with residuals, "
        "max-pool over the view at the end; needs obs_encoding onehot; see --trunk_channels)",
        "bilinear",
    )
    trunk_channels: int = _help(
        "input_encoder 'film': channels of its embedding and convolutions (BabyAI 1.1: 128; the learner's "
        "cost grows with its square)",
        128,
    )
    lang_encoder: str = _help(
        "mission encoder: 'bow' (learned bag of words over the BabyAI vocabulary, offline; blind to "
        "word order, so it cannot tell which object a PutNext mission moves), 'gru' (learned word "
        "embeddings read in order by a GRU, as BabyAI's) or 'distilbert' (frozen DistilBERT CLS + "
        "frozen random projection)",
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
    intermediate_dim: int = _help("width between MoE layers (alias --mop_intermediate_dim)", 64)
    router_hidden_size: int = _help("router GRU size (alias --mop_router_dim)", 64)
    expert_dropout_beta: float = _help(
        "routing-dependent expert dropout (Cook et al. 2025): max drop probability beta; 0 = off", 0.0
    )
    expert_dropout_gamma: float = _help("... applied to experts whose weight is below gamma", 0.1)
    layer_norm_residual: bool = _help(
        "the MoP paper's block (Cook et al. 2025's code): each layer outputs LayerNorm(x + mixture(x)) and "
        "each expert applies LayerNorm and ReLU after its GRU. false: the earlier system's bare mixture "
        "(its checkpoints load as they are)",
        False,
    )
    expert_cell: str = _help(
        "the experts' memory cell: 'gru' (the MoP paper's) or 'lstm' (BabyAI's IL model's: memory "
        "[h, c], twice the GRU's width; the router stays a GRU)",
        "gru",
    )
    head_hidden_size: int = _help(
        "the action head: 0 = one Linear on the last layer's output (the MoP paper's); H > 0 = "
        "Linear(H) -> Tanh -> Linear, BabyAI's actor (H 64 there)",
        0,
    )
    head_reads_experts: bool = _help(
        "the action head also reads every layer's experts' states (the memory), each scaled by its "
        "router weight (routing still gates them; a knocked-out expert reads as 0). false: the last "
        "layer's output alone (the MoP paper's)",
        False,
    )
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
    # Where it runs
    device: str = _help(
        "where the learner's forward, backward and Adam step run: 'auto' (the first CUDA GPU when "
        "this machine has one, else the CPU), 'cpu', 'cuda' or 'cuda:N'; the env workers always act "
        "on CPUs. An execution setting like num_workers, not part of the run's recipe: CPU and CUDA "
        "run the same algorithm and differ only in float rounding, so --resume may change it and a "
        "resumed run takes this invocation's value (docs/reference.md 'GPUs')",
        "auto",
    )
    # Output
    checkpoint_dir: str = _help("root folder for checkpoints and metrics.jsonl", "checkpoints")
    checkpoint_interval: int | None = _help("save every N updates (null: only the final checkpoint)", 500)
    log_interval: int = _help("updates between log lines / metrics.jsonl rows", 25)
    recent_window: int = _help("episodes in the 'recent' success and path-ratio averages", 100)
    stop_unless: str | None = _help(
        "a stopping rule fixed before the run: 'A-B: metric < x, metric >= y' (e.g. '3000-3072: "
        "train/aux_match < 0.05'): at update B, unless each metric's mean over the metrics.jsonl rows "
        "of updates A..B holds, the run saves checkpoint_B.pt and stops. Stages, each judged at its own "
        "B: 'A-B: ...; C-D: ...'. The verdict goes to gate.json either way; a failed gate does not "
        "resume (--resume --stop_unless '' trains on). Not part of the recipe (mop/gate.py). null: no gate",
        None,
    )
    wandb_project: str | None = _help(
        "also log to this Weights & Biases project (null: off); without the wandb package one note line "
        "and metrics.jsonl only",
        None,
    )
    logger: str | None = _help(
        "where the metrics also go: none, wandb (to wandb_project, default 'rl-mop'), tensorboard "
        "(event files in <run>/tensorboard/); null: wandb when wandb_project is set, else none. "
        "metrics.jsonl is always written",
        None,
    )


CONFIG_KEYS = [f.name for f in dataclasses.fields(TrainConfig)]
LOGGERS = ("none", "wandb", "tensorboard")
CHOICES = {  # keys with a fixed set of values (obs_encoding's: mop.level_names)
    "obs_encoding": OBS_ENCODINGS,
    "input_encoder": ("linear", "bilinear", "film"),
    "expert_cell": ("gru", "lstm"),
    "lang_encoder": ("bow", "gru", "distilbert"),
    "learner_precision": ("float32", "bfloat16"),
}
_DEFAULTS = {
    f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING
}
_TYPES = get_type_hints(TrainConfig)
# The MoP integration guide's spellings (YAML keys and flags) -> config keys. `mop_layers` may be
# a list of one "16,32,64" string per layer, or one "16,32,64;32,64,128" string.
CONFIG_ALIASES = {
    "mop_layers": "expert_hidden_sizes",
    "mop_intermediate_dim": "intermediate_dim",
    "mop_router_dim": "router_hidden_size",
}
# Keys that may change when a run is resumed; everything else must match the checkpoint.
# `device` is one of them: an execution setting, so a run's recipe (recipe_keys) leaves it out.
RESUMABLE_OVERRIDES = set(
    "num_updates num_workers demo_threads device log_interval checkpoint_interval wandb_project "
    "logger checkpoint_dir demos_dir stop_unless".split()
)


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
    if key == "task_weights":
        items = value.split(",") if isinstance(value, str) else value
        try:
            weights = [float(w) for w in items]
            if isinstance(value, bool) or any(isinstance(w, bool) for w in items) or not weights:
                raise TypeError
        except (TypeError, ValueError):
            raise ConfigError(f"task_weights must be a comma list of numbers, got {value!r}") from None
        if not all(math.isfinite(w) and w > 0 for w in weights):
            raise ConfigError(f"task_weights must be positive finite numbers, got {value!r}")
        return weights
    if key == "subgoal_ce_weights":
        return subgoal_weights(value)
    if key == "stop_unless":
        if isinstance(value, dict) and value:  # YAML read "A-B: ..." unquoted as a mapping (a stage a key)
            value = f"{gate.STAGES} ".join(f"{window}: {conditions}" for window, conditions in value.items())
        if not isinstance(value, str):
            raise ConfigError(f"stop_unless must be a text such as {gate.EXAMPLE}, got {value!r}")
        return None if value.strip().lower() in ("", "null", "none") else gate.parse(value).spec
    if key == "expert_hidden_sizes":
        from mop.checks import normalize_expert_sizes

        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            value = ";".join(value)  # the integration guide's YAML: one "16,32,64" string per layer
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
            return finite_number(float(value), f"config key {key!r}")
        if tp is str:
            if not isinstance(value, str):
                raise ValueError
            return value
    except ConfigError:
        raise
    except (TypeError, ValueError, OverflowError):
        pass
    raise ConfigError(
        f"config key {key!r} must be {tp.__name__}{' or null' if optional else ''}, got {value!r}"
    )


def _check_limits(cfg: TrainConfig) -> None:
    for key, (limit, why) in LIMITS.items():
        value = getattr(cfg, key)
        values = [s for layer in value for s in layer] if key == "expert_hidden_sizes" else [value]
        if any(v is not None and v > limit for v in values):
            raise ConfigError(f"{key} must be at most {limit:g} ({why}), got {value}")
    if cfg.num_envs * cfg.unroll_len > MAX_STEPS_PER_UPDATE:
        raise ConfigError(
            f"num_envs x unroll_len must be at most {MAX_STEPS_PER_UPDATE} steps per update (memory), "
            f"got {cfg.num_envs} x {cfg.unroll_len}"
        )


KEY_NEEDS = (  # (key, the key it is refused without, what it does): validate's prerequisites
    ("demo_updates", "demos", "counts the offline updates on --demos N before DAgger"),
    ("demos_in_dagger", "demo_updates", "keeps the demos in the DAgger phase"),
    ("dagger_lr", "demo_updates", "is the DAgger phase's learning rate"),
)


def keys_needing(key: str) -> set[str]:
    """`key` and every key refused without it, directly or through another (KEY_NEEDS)."""
    found = {key}
    while True:
        more = {k for k, needs, _ in KEY_NEEDS if needs in found} - found
        if not more:
            return found
        found |= more


def validate(cfg: TrainConfig) -> TrainConfig:
    """Raise ConfigError on impossible values (each message names the key): negative or zero
    counts, probabilities outside [0, 1], and values above LIMITS (non-finite floats never get
    here: `_coerce` refuses them for every float key)."""
    levels = checked_levels(cfg.task_id)
    for key in (
        "num_envs",
        "demo_threads",
        "unroll_len",
        "num_updates",
        "log_interval",
        "lang_dim",
        "intermediate_dim",
        "router_hidden_size",
        "hidden_size",
        "recent_window",
        "trunk_channels",
    ):
        if getattr(cfg, key) <= 0:
            raise ConfigError(f"{key} must be positive, got {getattr(cfg, key)}")
    for key in ("checkpoint_interval", "max_steps"):
        if getattr(cfg, key) is not None and getattr(cfg, key) <= 0:
            raise ConfigError(f"{key} must be positive or null, got {getattr(cfg, key)}")
    for key in ("trial", "seed", "num_workers", "head_hidden_size"):
        if getattr(cfg, key) is not None and getattr(cfg, key) < 0:
            raise ConfigError(f"{key} must be >= 0, got {getattr(cfg, key)}")
    for key in ("lr", "lr_final", "dagger_lr"):
        value = getattr(cfg, key)
        if value is not None and not (value > 0 and math.isfinite(value)):
            raise ConfigError(f"{key} must be a positive number, got {value}")
    if cfg.max_grad_norm is not None and cfg.max_grad_norm <= 0:
        raise ConfigError(f"max_grad_norm must be positive or null, got {cfg.max_grad_norm}")
    for key in ("teacher_forcing", "path_ratio_fraction", "expert_dropout_beta"):
        if not 0.0 <= getattr(cfg, key) <= 1.0:
            raise ConfigError(f"{key} must be in [0, 1], got {getattr(cfg, key)}")
    for key in ("buffer_episodes", "demos", "demo_seed", "demo_updates"):
        if getattr(cfg, key) < 0:
            raise ConfigError(f"{key} must be >= 0 (0: off), got {getattr(cfg, key)}")
    if cfg.epochs < 1:
        raise ConfigError(f"epochs must be >= 1 (optimizer steps per batch), got {cfg.epochs}")
    if cfg.entropy_coef < 0:
        raise ConfigError(f"entropy_coef must be >= 0 (a bonus; 0: off), got {cfg.entropy_coef}")
    if not 0.0 <= cfg.replay_ratio < 1.0:
        raise ConfigError(f"replay_ratio must be in [0, 1), got {cfg.replay_ratio}")
    if cfg.learner_stream not in ("padded", "streamed"):
        raise ConfigError(f"learner_stream must be 'padded' or 'streamed', got {cfg.learner_stream!r}")
    if cfg.batch_columns is not None:
        if cfg.batch_columns < 1:
            raise ConfigError(f"batch_columns must be an integer >= 1 or null, got {cfg.batch_columns}")
        if cfg.batch_columns * cfg.unroll_len > MAX_STEPS_PER_UPDATE:
            raise ConfigError(
                f"batch_columns x unroll_len must be at most {MAX_STEPS_PER_UPDATE} steps per update "
                f"(memory), got {cfg.batch_columns} x {cfg.unroll_len}"
            )
    for key, needs, said in KEY_NEEDS:
        if getattr(cfg, key) and not getattr(cfg, needs):
            raise ConfigError(f"{key} {said}: give --{needs} too")
    if cfg.stop_unless is not None:
        gate.check(cfg.stop_unless, cfg.num_updates, cfg.log_interval, cfg.demo_updates if cfg.demos else 0)
    if cfg.demo_updates >= cfg.num_updates:
        raise ConfigError(
            f"demo_updates ({cfg.demo_updates}) must be below num_updates ({cfg.num_updates}): no online "
            "update would be left (for offline behavioural cloning only, leave demo_updates at 0)"
        )
    if cfg.demos and "," in cfg.task_id:
        raise ConfigError(
            f"--demos{' (and demo_updates, its offline phase)' if cfg.demo_updates else ''} takes one "
            "level (demo caches are per level), not a multi-task task_id"
        )
    if cfg.demos and cfg.buffer_episodes and not cfg.demo_updates:
        raise ConfigError(
            "--demos trains offline on bot demos only; --buffer_episodes is online DAgger's buffer: give "
            "one of them (or --demo_updates K: the demos for K updates, then DAgger with the buffer)"
        )
    for key in (
        "aux_rooms_weight",
        "aux_target_weight",
        "aux_subgoal_weight",
        "aux_key_weight",
        "aux_door_weight",
        "aux_match_weight",
        "aux_door_place_weight",
    ):
        if getattr(cfg, key) < 0:
            raise ConfigError(f"{key} must be >= 0 (0: off), got {getattr(cfg, key)}")
    if cfg.aux_key_reads not in AUX_KEY_READS:
        raise ConfigError(
            f"aux_key_reads must be one of {', '.join(AUX_KEY_READS)}, got {cfg.aux_key_reads!r}"
        )
    if cfg.bot_revision not in BOT_REVISIONS:
        raise ConfigError(
            f"bot_revision must be one of {', '.join(map(str, BOT_REVISIONS))}, got {cfg.bot_revision}"
        )
    if not (math.isfinite(cfg.key_ahead_ce_weight) and cfg.key_ahead_ce_weight > 0):
        raise ConfigError(
            f"key_ahead_ce_weight must be a finite number > 0 (1: plain CE), got {cfg.key_ahead_ce_weight}"
        )
    if cfg.aux_rooms_weight and cfg.demos:
        raise ConfigError(
            "--aux_rooms_weight needs online imitation: bot demos do not record the rooms visited"
        )
    if cfg.key_layout_share is not None:
        if not 0.0 <= cfg.key_layout_share <= 1.0:
            raise ConfigError(f"key_layout_share must be in [0, 1] or null, got {cfg.key_layout_share}")
        if cfg.demos and not cfg.demo_updates:  # with demo_updates: the DAgger phase's layouts
            raise ConfigError(
                "--key_layout_share chooses the layouts the student acts in; bot demos have none"
            )
        for level in levels:
            from mop.babyai_env import KEY_CHECK_LAYOUTS, key_layout_counts  # builds layouts: only here

            _, key = key_layout_counts(level)
            if cfg.key_layout_share > 0 and key == 0:
                raise ConfigError(
                    f"--key_layout_share: no mission of {level} needs a key in its first {KEY_CHECK_LAYOUTS} layouts"
                )
            if cfg.key_layout_share < 1 and key == KEY_CHECK_LAYOUTS:
                raise ConfigError(f"--key_layout_share: every mission of {level} needs a key: nothing to mix")
    if not 0.0 < cfg.expert_dropout_gamma <= 1.0:
        raise ConfigError(f"expert_dropout_gamma must be in (0, 1], got {cfg.expert_dropout_gamma}")
    if cfg.lpc_alpha < 0 or cfg.lpc_epsilon <= 0 or cfg.lpc_exponent < 0:
        raise ConfigError("lpc_alpha and lpc_exponent must be >= 0 and lpc_epsilon > 0")
    if cfg.logger is not None and cfg.logger not in LOGGERS:
        raise ConfigError(f"logger must be one of {', '.join(LOGGERS)} (or null), got {cfg.logger!r}")
    for key, options in CHOICES.items():
        if getattr(cfg, key) not in options:
            raise ConfigError(f"{key} must be one of {', '.join(options)}, got {getattr(cfg, key)!r}")
    if cfg.input_dim is not None and (
        problem := legacy_config.contradiction(cfg.input_dim, cfg.obs_encoding)
    ):
        raise ConfigError(problem)
    if cfg.input_encoder != "linear" and cfg.obs_encoding != "onehot":
        raise ConfigError(f"input_encoder {cfg.input_encoder!r} needs obs_encoding 'onehot' (per-cell codes)")
    try:  # the spelling only: a config may name a GPU that only the machine it runs on has
        cfg.device = check_device(cfg.device, "device")
    except DeviceError as e:
        raise ConfigError(str(e)) from None
    for key, tp in _TYPES.items():  # also for a TrainConfig built without load_config
        if _base_type(tp)[0] is float:
            _coerce(key, getattr(cfg, key))
    _check_limits(cfg)
    if cfg.teacher_forcing_final is not None and not 0.0 <= cfg.teacher_forcing_final <= 1.0:
        raise ConfigError(f"teacher_forcing_final must be in [0, 1], got {cfg.teacher_forcing_final}")
    for name in ("teacher_forcing", "lr"):
        final, decay = getattr(cfg, f"{name}_final"), getattr(cfg, f"{name}_decay_updates")
        if decay < 0:
            raise ConfigError(
                f"{name}_decay_updates must be >= 0 (a schedule cannot end before it starts), got {decay}"
            )
        if (decay > 0) != (final is not None):
            raise ConfigError(
                f"{name}_final and {name}_decay_updates go together: give both (a schedule) "
                f"or neither, got {final} and {decay}"
            )
    if cfg.task_weights is not None or len(levels) > 1:  # multi-task: every level gets envs
        weights = None if cfg.task_weights is None else _coerce("task_weights", cfg.task_weights)
        try:
            env_levels(levels, cfg.num_envs, weights)
        except ValueError as e:
            raise ConfigError(f"{'task_weights' if weights else 'num_envs'}: {e}") from None
    return cfg


def load_yaml(path: str | os.PathLike | None, _including: tuple[Path, ...] = ()) -> dict:
    """A config file's keys. `base: other.yaml` (a path relative to the file) reads that file first
    and lets this one's keys override it, so a per-level recipe can say only what differs."""
    if path is None:
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise ConfigError(f"cannot read config {str(path)!r}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config {str(path)!r} is not a text file (not UTF-8)") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config {str(path)!r} is not valid YAML: {str(e).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config {str(path)!r} must be a mapping of keys to values")
    if "base" not in data:
        return data
    base = data.pop("base")
    if not isinstance(base, str) or not base.strip():
        raise ConfigError(f"config {str(path)!r}: base must name a YAML file, got {base!r}")
    here = Path(path).resolve()
    base_path = Path(path).parent / base
    if base_path.resolve() in (*_including, here):
        raise ConfigError(f"config {str(path)!r}: base {base!r} leads back to itself")
    source = f"config {str(path)!r}"
    inherited = resolve_aliases(load_yaml(base_path, (*_including, here)), f"config {str(base_path)!r}")
    return {**inherited, **resolve_aliases(data, source)}


def check_keys(values: dict, source: str) -> None:
    for key in values:
        if key not in CONFIG_KEYS:
            close = difflib.get_close_matches(str(key), CONFIG_KEYS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown key {key!r} in {source}{hint}")


def resolve_aliases(values: dict, source: str) -> dict:
    """CONFIG_ALIASES renamed to their config keys; giving both spellings is an error naming both."""
    out = dict(values)
    for alias, key in CONFIG_ALIASES.items():
        if alias in out:
            if key in out:
                raise ConfigError(f"{source} gives both {alias!r} and {key!r} (the same setting): keep one")
            out[key] = out.pop(alias)
    return out


def apply_input_dim(values: dict, source: str, lang_dim: Any = None) -> dict:
    """`values` (one source's keys) with the settings its `input_dim` (the earlier system's key,
    mop/legacy_config.py) selects filled in where the source does not give them; ConfigError naming
    the sizes that work for one no encoding produces."""
    if values.get("input_dim") is None:
        return values
    dim = _coerce("input_dim", values["input_dim"])
    try:
        return {
            **legacy_config.implied_settings(dim, values.get("lang_dim", lang_dim)),
            **values,
            "input_dim": dim,
        }
    except ValueError as e:
        raise ConfigError(f"{source}: {e}") from None


def load_config(
    path: str | os.PathLike | None = None, overrides: dict | None = None, check: bool = True
) -> TrainConfig:
    """Defaults <- YAML file <- overrides (CLI flags), validated unless not `check`. An `input_dim`
    (the earlier system's key) selects the settings it implies and prints one note line saying so."""
    source = f"config {str(path)!r}"
    data = resolve_aliases(load_yaml(path), source)
    check_keys(data, source)
    overrides = resolve_aliases(overrides or {}, "overrides")
    check_keys(overrides, "overrides")
    lang_dim = {**data, **overrides}.get("lang_dim")  # for the hint of a size that counts the mission
    merged = {
        **apply_input_dim(data, source, lang_dim),
        **apply_input_dim(overrides, "the command line", lang_dim),
    }
    values = {k: _coerce(k, v) for k, v in merged.items()}
    network = legacy_config.earlier_network(values.get("input_dim"), set(data) | set(overrides))
    cfg = TrainConfig(**{**values, **network})
    cfg = validate(cfg) if check else cfg
    if cfg.input_dim is not None:
        legacy_config.note(cfg.input_dim, cfg.obs_encoding, cfg.input_encoder, cfg.lang_encoder, network)
    return cfg


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are one `error:` line and exit code 2, as every other bad input
    of the project's command lines (--help is unchanged). Every CLI of the project uses it."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see --help)\n")


def build_arg_parser(
    description: str, extra: Callable[[argparse.ArgumentParser], None] | None = None
) -> argparse.ArgumentParser:
    """One --flag per config key (help from the schema), plus --config and --resume."""
    parser = ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--config",
        default=None,
        help="YAML file of defaults (default: config.yaml if present); it may build on another "
        "with a 'base: other.yaml' key",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run from its newest readable checkpoint, or from its resume_<update>.pt if newer",
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
    for alias, key in CONFIG_ALIASES.items():  # also accepted as YAML keys
        example = ", e.g. '16,32,64;32,64,128'" if alias == "mop_layers" else ""
        parser.add_argument(
            f"--{alias}",
            default=argparse.SUPPRESS,
            metavar=key.upper(),
            help=f"alias of --{key} (the MoP integration guide's spelling){example}",
        )
    if extra:
        extra(parser)
    return parser


def args_overrides(args: argparse.Namespace) -> tuple[str | None, dict]:
    """(config file, config keys given as flags) of a parsed command line: --config, else
    config.yaml when present."""
    given = {k: v for k, v in vars(args).items() if k in CONFIG_KEYS or k in CONFIG_ALIASES}
    overrides = resolve_aliases(given, "the command line")
    path = args.config
    if path is None and Path("config.yaml").exists():
        path = "config.yaml"
    return path, overrides


def config_from_args(args: argparse.Namespace) -> tuple[TrainConfig, bool]:
    path, overrides = args_overrides(args)
    if args.resume:
        return resume_config(path, overrides), True
    return load_config(path, overrides), False


# ----------------------------------------------------------------------------- run folders, seeding


def run_dir(cfg: TrainConfig) -> Path:
    """The run folder of a config: <checkpoint_dir>/<task_id>/trial_<N>/[seed_<S>/]."""
    return _run_dir(cfg.checkpoint_dir, RunId(cfg.task_id, cfg.trial, cfg.seed))


def run_seed(cfg: TrainConfig) -> int:
    return cfg.seed if cfg.seed is not None else 0


def recipe_keys(config: TrainConfig | dict) -> dict:
    """The keys that decide what a run learns: every config key but RESUMABLE_OVERRIDES, as JSON values."""
    values = dataclasses.asdict(config) if isinstance(config, TrainConfig) else config
    return json.loads(
        json.dumps({k: values[k] for k in CONFIG_KEYS if k in values and k not in RESUMABLE_OVERRIDES})
    )


# Keys whose absence from a stored config means other than today's default: the value the code had
# before the key existed (a run config, a level-table row, a checkpoint written then).
ABSENT_MEANS = {"bot_revision": 0}


def recipe_value(config: dict, key: str) -> Any:
    """One config key's value as the schema types it (1e-4 and "1e-4" are one value); a key the config
    lacks counts as its default (written before the key existed), "(absent)" for one without. input_dim
    equal to its encoding's size is null: the earlier system's key then says no more than obs_encoding
    (train_mop writes 985 for onehot), so --input_dim 985 never splits a condition or a resume;
    likewise bot_revision is null for BC alone (demos without a DAgger phase), whose labels the
    bot's revisions share."""
    if key == "bot_revision" and recipe_value(config, "demos") and not recipe_value(config, "demo_updates"):
        return None  # BC alone: the bot drives every demo, where the two revisions are the same bot
    if key in config:
        value = _coerce(key, config[key])
    elif key in ABSENT_MEANS:
        value = ABSENT_MEANS[key]
    elif key in _DEFAULTS:
        value = _coerce(key, _DEFAULTS[key])
    else:
        return "(absent)"
    if key == "input_dim" and value is not None:
        from mop.babyai_env import obs_dim

        try:
            if value == obs_dim(recipe_value(config, "obs_encoding")):
                return None
        except ValueError:  # an encoding the schema refuses: the value as written
            pass
    return value


def config_changes(old: dict, new: dict) -> list[str]:
    """'key: old -> new' for each recipe key (recipe_keys) that differs between two configs (a key one
    side lacks counts as its default)."""
    return [
        f"{key}: {recipe_value(old, key)!r} -> {recipe_value(new, key)!r}"
        for key in CONFIG_KEYS
        if key not in RESUMABLE_OVERRIDES and recipe_value(old, key) != recipe_value(new, key)
    ]


def resume_config(path: str | os.PathLike | None, overrides: dict) -> TrainConfig:
    """The config of the run to resume: the checkpoint's, with only RESUMABLE_OVERRIDES changed, and
    demo_updates (checked by imitation.checkpoint_to_resume). File + flags only locate the run:
    the merged config is validated, not their mix (a BC run's --demos, the file's buffer_episodes)."""
    base = load_config(path, overrides, check=False)
    checked_levels(base.task_id)  # the level names the run folder: refused as a new run refuses it
    saved = newest_checkpoint(run_dir(base), report=False)[1]["config"]
    stored = {k: saved[k] for k in CONFIG_KEYS if k in saved}
    stored.update({k: v for k, v in ABSENT_MEANS.items() if k not in saved})  # as it was trained
    # The device belongs to the machine, not to the run: a run trained on a GPU resumes on a
    # laptop with the laptop's setting (--device, else config.yaml's), not with 'cuda'.
    stored["device"] = base.device
    for key, value in overrides.items():
        if key in RESUMABLE_OVERRIDES or key == "demo_updates":
            stored[key] = value
        elif _coerce(key, value) != _coerce(key, stored.get(key, _DEFAULTS.get(key))):
            raise ConfigError(
                f"--resume: {key}={value!r} differs from the checkpoint's {stored.get(key)!r}; "
                f"only {', '.join(sorted(RESUMABLE_OVERRIDES))} may change"
            )
    return validate(TrainConfig(**{k: _coerce(k, v) for k, v in stored.items()}))


def cli_main(
    main: Callable[[TrainConfig, bool], dict],
    description: str,
    extra: Callable[[argparse.ArgumentParser], None] | None = None,
    adjust: Callable[[argparse.Namespace], None] | None = None,
) -> None:
    """Parse flags, run main, and turn expected errors into one line and exit code 2. extra adds a
    script's own flags; adjust(args) may turn them into config keys (ConfigError to refuse)."""
    args = build_arg_parser(description, extra).parse_args()
    with command_edges("interrupted; continue with --resume"):  # disk full: one line too
        try:
            if adjust is not None:
                adjust(args)
            cfg, resume = config_from_args(args)
            main(cfg, resume=resume)
        except (ConfigError, RunLockedError, OutputError) as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
