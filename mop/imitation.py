"""The online-imitation loop that train.py and train_mop.py both run (DAgger with the BabyAI bot).

One update, as the loop body reads:
    chunk = collect(...)          envs act for unroll_len steps with the current policy (worker
                                  processes), the bot labels every visited state
    parts = learner.step(chunk)   the learner replays the unroll as whole sequences with gradients
                                  from the memory the workers started from, one Adam step on loss_fn
                                  (minus --entropy_coef x the policy's entropy), --epochs times
    state.record(chunk, parts)    counters, recent success and path ratio
    log / save                    metrics.jsonl (+ tqdm, stdout, wandb) and checkpoints
The replay equals the acting pass (a test checks the logits), so this is the same algorithm as
stepping with graph, only faster. The policy and the loss come from the stage script. The learner
runs on cfg.device (mop/devices.py; chunks, checkpoints and buffers are device-free), the
collector's acting on CPUs.

Where the labelled steps come from (README "Training"):
- online DAgger (default): the collector's chunk;
- with `--buffer_episodes N` (`Replay`): the chunk plus whole episodes replayed from the DAgger
  aggregation buffer (replay_buffer.py), `--replay_ratio` of the update's frames; the buffer is
  saved as buffer_<update>.npz beside each checkpoint and restored by --resume;
- with `--demos N` (`DemoSource`, in the collector's place): bot demos only (mop/bot_demos.py), offline
  behavioural cloning in passes over the cached demos; with `--demo_updates K` too, for updates
  1..K only: after update K the collector starts and the run goes on as online DAgger
  (mop/schedules.py: `offline_update` says which an update is; teacher forcing starts at K + 1), with
  `--demos_in_dagger` the demo batch BC would draw next beside each DAgger update's (`self.demos`).
With `--learner_stream streamed` replayed and demo episodes arrive as persistent columns
(mop/streams.py's EpisodeColumns, the one producer of stored-episode streams) beside or instead of
the live chunk's; after each step the loop hands every stream the memory its columns ended with
(`carry_memory`), and the streams' state goes into the checkpoint. `train/frame_gradients` counts
the labelled frames that received a gradient (times --epochs), across --resume.

--resume restores weights, Adam, RNGs, counters and each env's episode counter and RNG, but not the
envs' episodes in progress (minigrid and bot state are not plain tensors): every env starts its
next episode with zeroed memory. So a resumed run is reproducible and equal to the uninterrupted
one up to the checkpoint, and differs after it (README "Resuming"; tests/test_hardening.py).

Where a run stands, and who drives it (the one owner of a run's state):
- `run_status(cfg)`: 'new' (no checkpoint), 'partial' (a checkpoint to continue from, or a
  numbered one at num_updates whose checkpoint_final.pt is missing) or 'done' (its newest readable
  checkpoint is checkpoint_final.pt at num_updates, or any checkpoint beyond it), with that
  checkpoint's path and update. Reads only.
- `train_to_end(cfg, ...)`: holds the run folder (runs.own_run: the run lock, stale temp files
  removed), decides from run_status under the lock and drives an ImitationRun to num_updates. With
  resume=None the folder decides (done: nothing, partial: resume, new: start, from a Fork if given:
  lmc.py's runs); with resume=True/False the caller decided (train_mop.py --resume; a new run over
  checkpoints, or resuming a finished one, is refused). `run_imitation` (train_mop.py, train.py) is
  its summary; modal_app.py decides skip/resume with run_status and trains through run_imitation.
- `run_in_lockstep(runs)`: several ImitationRuns, one update each per round (lmc.py's shared
  pair, whose folders it holds with runs.own_run).

    summary = run_imitation(cfg, "mop", build_policy, loss_fn)   # what train_mop.main does
    state, summary = train_to_end(cfg, "mop", build_policy, loss_fn, resume=None)  # new|partial|done
    python train_mop.py --task_id BabyAI-GoToLocal-v0 --num_updates 300
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mop import gate
from mop.aux_losses import (
    AUX_HEADS,
    FRESH_HEADS,
    action_ce_weights,
    aux_match_loss,
    aux_rooms_loss,
    aux_subgoal_loss,
    aux_target_loss,
    ce_weight_shift,
    head_optimizer_state,
    rooms_of,
)
from mop.babyai_env import (
    NUM_COLOURS,
    SUBGOAL_KINDS,
    TARGET_RANGE,
    check_task_ids,
    encode_obs,
    make_env,
    obs_dim,
    quiet_reset,
)
from mop.devices import (
    DeviceError,
    bf16_warning,
    device_label,
    resolve_device,
    rng_state,
    seed_everything,
    set_rng_state,
    to_cpu,
    use_deterministic,
)
from mop.experiment import (
    ConfigError,
    MetricLogger,
    TrainConfig,
    newest_checkpoint,
    read_metrics,
    run_dir,
    run_seed,
    save_checkpoint,
)
from mop.heap import TRIM_EVERY, cpu_seconds, resident_mb, trim_heap
from mop.imitation_data import (  # the loop's data; buffer_path re-exported for lmc.py and callers
    DemoSource,
    Replay,
    buffer_path,  # noqa: F401
    buffer_seed,
    carry_memory,
    open_collector,
)
from mop.language import MissionEncoderError, build_mission_encoder
from mop.numpy_policy import use_one_thread
from mop.progress import format_log_line
from mop.replay_buffer import (
    EpisodeAssembler,
    EpisodeBuffer,
)
from mop.runs import (
    DONE,
    HOLDS_CHECKPOINTS,
    METRICS_FILE,
    NEW,
    PARTIAL,
    RESUME_POINT_MINUTES,
    check_writable_dir,
    checkpoint_name,
    checkpoint_paths,
    drop_resume_points,
    link_or_copy,
    own_run,
    resume_candidates,
    resume_point_name,
    retire_final,
    run_stands,
    store_last_update,
    write_run_config,
)
from mop.schedules import check_demo_switch, lr_at, offline_update, teacher_forcing_at

LossFn = Callable[..., tuple[torch.Tensor, dict]]


@dataclass
class RunStats:
    """Counters that survive --resume."""

    frames: int = 0
    episodes: int = 0
    successes: int = 0
    bot_failures: int = 0
    recent_success: list = field(default_factory=list)
    recent_path_ratio: list = field(default_factory=list)
    elapsed_s: float = 0.0  # wall seconds of training, summed over sittings (the demos' making not)
    cpu_s: float = 0.0  # heap.cpu_seconds of the run's processes, likewise: its cost whatever the load
    frame_gradients: int = 0  # labelled frames that received a gradient, summed over passes (epochs)
    # multi-task runs: {level: {"episodes": n, "success": [recent], "path_ratio": [recent]}}
    recent_by_level: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------- start or resume

# The states of a run and the rule deciding them live in mop/runs.py (run_stands); re-exported here.


@dataclass(frozen=True)
class RunStatus:
    """Where a run stands: NEW, PARTIAL or DONE, and its newest readable checkpoint (path, update
    and the policy type it holds; None for a new run, or for a partial one whose checkpoints are
    all unreadable)."""

    state: str
    path: Path | None = None
    update: int | None = None
    policy_type: str | None = None


# The stage script that trains each policy type (named when a run folder holds the other type).
TRAINERS = {"mop": "train_mop.py", "gru": "train.py"}


def check_policy_type(status: RunStatus, policy_type: str, directory: Path) -> None:
    """ConfigError naming both types when the run folder holds checkpoints of another policy type
    than the trainer's (train.py --resume in a train_mop.py run, and the reverse): its weights could
    never load into this trainer's policy."""
    held = status.policy_type
    if held is None or held == policy_type:
        return
    raise ConfigError(
        f"{str(directory)!r} holds a {held!r} policy ({TRAINERS.get(held, 'another trainer')}), "
        f"this trainer trains {policy_type!r} ({TRAINERS.get(policy_type, 'this script')}): continue it "
        f"with {TRAINERS.get(held, 'the trainer that wrote it')}, or choose another --trial/--seed/--checkpoint_dir"
    )


def run_status(cfg: TrainConfig) -> RunStatus:
    """Where the run of `cfg` stands against cfg.num_updates (see the module docstring). Reads
    its checkpoints only; a caller that acts on the answer holds the run folder (train_to_end)."""
    directory = run_dir(cfg)
    if not resume_candidates(directory):
        return RunStatus(NEW)
    try:
        path, ckpt = newest_checkpoint(directory, report=False)
    except ConfigError:  # none readable: resuming names them
        return RunStatus(PARTIAL)
    update = int(ckpt["update"])
    return RunStatus(
        run_stands(path, update, cfg.num_updates), path, update, ckpt["config"].get("policy_type")
    )


def checkpoint_to_resume(cfg: TrainConfig, resume: bool) -> tuple[Path, dict] | None:
    """(path, checkpoint) a run continues from: the newest readable one (None for a new run);
    refuses to overwrite a run. A run killed after its last numbered checkpoint at num_updates but
    before checkpoint_final.pt (runs that stored the final weights twice) is returned too: the
    loop then only completes what is missing."""
    directory = run_dir(cfg)
    if not resume:
        if resume_candidates(directory):  # numbered, final or a resume point: a run is there
            raise ConfigError(
                f"{str(directory)!r} {HOLDS_CHECKPOINTS}, or another --trial/--seed/--checkpoint_dir"
            )
        return None
    path, ckpt = newest_checkpoint(directory)
    if run_stands(path, int(ckpt["update"]), cfg.num_updates) == DONE:
        raise ConfigError(
            f"--resume: the run in {str(directory)!r} already reached update {ckpt['update']}; raise --num_updates to continue"
        )
    check_demo_switch(ckpt["config"], int(ckpt["update"]), cfg)
    gate.refuse(cfg.stop_unless, directory, int(ckpt["update"]), "--resume")
    return path, ckpt


class TrainingDiverged(ConfigError):
    """The loss or the weights became non-finite; nothing is saved over the last good checkpoint."""


# The Learner's auxiliary heads' fields, in AUX_HEADS' order (the fields'); each saved as <field>_state_dict.
HEAD_FIELDS = tuple(key.removesuffix("_state_dict") for key in AUX_HEADS.values())


@dataclass
class Learner:
    """The policy, its mission encoder and the optimizer over both, and the loss."""

    cfg: TrainConfig
    model_config: dict  # the resolved config stored in every checkpoint and in config.json
    policy: torch.nn.Module
    encoder: torch.nn.Module
    encoder_factory: Callable[[], torch.nn.Module]
    optimizer: torch.optim.Optimizer
    params: list[torch.nn.Parameter]
    loss_fn: LossFn
    aux_head: torch.nn.Linear | None = None  # --aux_rooms_weight: memory -> rooms visited so far
    target_head: torch.nn.Linear | None = None  # --aux_target_weight: memory -> where the bot heads
    subgoal_head: torch.nn.Linear | None = None  # --aux_subgoal_weight: memory -> what the bot is doing
    key_head: torch.nn.Linear | None = None  # --aux_key_weight: memory / head input -> the seen key's place
    door_head: torch.nn.Linear | None = None  # --aux_door_weight: memory -> the locked door's colour
    match_head: torch.nn.Linear | None = None  # --aux_match_weight: head input -> the key ahead opens it
    door_place_head: torch.nn.Linear | None = None  # --aux_door_place_weight: memory -> the seen door's place
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))  # where it all lives
    end_memory: torch.Tensor | None = None  # (N, M) after the last pass's final step, for streams to carry

    @classmethod
    def build(
        cls,
        cfg: TrainConfig,
        policy_type: str,
        build_policy_fn: Callable[[dict], torch.nn.Module],
        loss_fn: LossFn,
        ckpt: dict | None,
    ) -> Learner:
        levels = check_task_ids(cfg.task_id)  # several in a multi-task run, each its own max_steps
        probes = {level: make_env(level, cfg.max_steps) for level in levels}
        for probe in probes.values():
            quiet_reset(probe, 0)
        actions = {int(probe.action_space.n) for probe in probes.values()}
        if len(actions) > 1:
            raise ConfigError(f"task_id: the levels have different action sets ({sorted(actions)} actions)")
        max_steps = {level: int(probe.max_steps) for level, probe in probes.items()}
        model_config = {
            **dataclasses.asdict(cfg),
            "policy_type": policy_type,
            "input_dim": obs_dim(cfg.obs_encoding),
            "num_actions": actions.pop(),
            "effective_max_steps": max(max_steps.values()),
            # The replicate's seed, explicit: a run trained without --seed is seed 0 in every
            # table (`seed` stays null there: it decides the run folder, trial_<N>/ not seed_0/).
            # Not a config key, so never part of a recipe.
            "replicate_seed": 0 if cfg.seed is None else cfg.seed,
        }
        if len(levels) > 1:
            model_config["level_max_steps"] = max_steps
        device = learner_device(cfg)
        if cfg.learner_precision == "bfloat16" and (slow := bf16_warning(device)):
            print(slow, file=sys.stderr)  # before hours of a run that would find out from its s/update
        use_deterministic(device)  # before the first CUDA kernel (cuBLAS reads its setting once)
        # Built and loaded on the CPU, then moved: the initial weights come from the CPU's
        # generator, so a run starts from the same weights on every device.
        policy = build_policy_fn(model_config)
        encoder_factory = partial(
            build_mission_encoder, cfg.lang_encoder, cfg.lang_dim, cfg.distilbert_path, None, run_seed(cfg)
        )
        try:
            encoder = encoder_factory()
        except MissionEncoderError as e:  # e.g. DistilBERT weights absent: one line, nothing written
            hint = (
                " (then --distilbert_path DIR; or --lang_encoder bow: a learned bag of words, offline)"
                if cfg.lang_encoder == "distilbert"
                else ""
            )
            raise ConfigError(f"{e}{hint}") from None
        aux_head = None
        if cfg.aux_rooms_weight > 0:
            aux_head = torch.nn.Linear(policy.memory_size, rooms_of(probes).num_rooms)
        target_head = None
        if cfg.aux_target_weight > 0:  # a softmax over -R..R per axis (ahead, right)
            target_head = torch.nn.Linear(policy.memory_size, 2 * (2 * TARGET_RANGE + 1))
        subgoal_head = None
        if cfg.aux_subgoal_weight > 0:  # a softmax over the bot's subgoal kinds
            subgoal_head = torch.nn.Linear(policy.memory_size, len(SUBGOAL_KINDS))
        key_head = None
        if cfg.aux_key_weight > 0:  # a softmax over -R..R per axis (ahead, right), as the target's
            reads = policy.head_input_size if cfg.aux_key_reads == "head_input" else policy.memory_size
            key_head = torch.nn.Linear(reads, 2 * (2 * TARGET_RANGE + 1))
        door_head = torch.nn.Linear(policy.memory_size, NUM_COLOURS) if cfg.aux_door_weight > 0 else None
        match_head = torch.nn.Linear(policy.head_input_size, 1) if cfg.aux_match_weight > 0 else None
        door_place_head = None
        if cfg.aux_door_place_weight > 0:  # a softmax over -R..R per axis (ahead, right), as the target's
            door_place_head = torch.nn.Linear(policy.memory_size, 2 * (2 * TARGET_RANGE + 1))
        made_heads = (aux_head, target_head, subgoal_head, key_head, door_head, match_head, door_place_head)
        heads = {f"{name}_state_dict": head for name, head in zip(HEAD_FIELDS, made_heads)}
        fresh = set(ckpt.get(FRESH_HEADS, ())) if ckpt is not None else set()  # a fork's new heads
        if ckpt is not None:
            policy.load_state_dict(ckpt["policy_state_dict"])
            encoder.load_encoder_state(ckpt["encoder_state"])
            for key, head in heads.items():
                if head is not None and key not in fresh:
                    if key not in ckpt:
                        raise ConfigError(f"the checkpoint has no {key} for its auxiliary loss")
                    (outs, ins), (want_outs, want_ins) = ckpt[key]["weight"].shape, head.weight.shape
                    if (outs, ins) != (want_outs, want_ins):  # e.g. another --aux_key_reads
                        raise ConfigError(
                            f"the checkpoint's {key} reads {ins} features into {outs}, this recipe's head "
                            f"{want_ins} into {want_outs} (another --aux_key_reads?)"
                        )
                    head.load_state_dict(ckpt[key])
        for module in (policy, encoder, *heads.values()):
            if module is not None:
                module.to(device)
        params = list(policy.parameters()) + [p for p in encoder.parameters() if p.requires_grad]
        base = len(params)
        for head in heads.values():
            if head is not None:
                params += list(head.parameters())
        optimizer = torch.optim.Adam(params, lr=cfg.lr)
        if ckpt is not None:  # Adam moves its saved state to its parameters' device (a resume may switch)
            optimizer.load_state_dict(head_optimizer_state(ckpt, base, heads))
        made = (cfg, model_config, policy, encoder, encoder_factory, optimizer, params, loss_fn)
        return cls(*made, *heads.values(), device)  # the heads in the fields' order, HEAD_FIELDS'

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        """A chunk's numpy column on the learner's device (the CPU: the array's own memory)."""
        return torch.from_numpy(array).to(self.device)

    def step(self, chunk: dict, lr: float | None = None) -> dict:
        """Replay one chunk with gradients and take cfg.epochs optimizer steps on it (at learning
        rate `lr`; None: the optimizer's current one); returns the loss parts of the first pass
        (the batch as the weights found it; with epochs > 1 also train/ce_last_epoch)."""
        self.policy.train()
        self.encoder.train()
        t = self._tensor  # chunks are device-free (numpy and CPU tensors): the step moves them, once
        image, carrying = t(chunk["image"]), t(chunk["carrying"])  # also read by the match head
        moved = {
            "obs": encode_obs(image, t(chunk["direction"]), carrying, self.cfg.obs_encoding),
            "image": image,  # (T, N, 7, 7, 3) uint8 codes; obs is their one-hot (T, N, obs_dim)
            "carrying": carrying,
            "labels": t(chunk["label"]),
            "mask": t(chunk["label_mask"]),
        }
        moved["ce_weights"] = action_ce_weights(self.cfg, chunk, image, carrying)  # None: plain CE
        if lr is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = lr
        first: dict = {}
        for epoch in range(self.cfg.epochs):
            # Every pass starts from the memory the chunk was collected with (and replayed episodes
            # from their reset), as the first does: later passes see weights that moved since.
            parts = self._pass(chunk, moved)
            if epoch == 0:
                first = parts
            elif "train/ce" in parts:
                first["train/ce_last_epoch"] = parts["train/ce"]
        first["train/epochs"] = self.cfg.epochs
        first["frame_gradients"] = int(moved["mask"].sum()) * self.cfg.epochs  # TrainState.record sums it
        return first

    def _pass(self, chunk: dict, moved: dict) -> dict:
        """One forward + backward over the chunk (`moved`: its arrays step put on the device) and
        one optimizer step; the loss parts."""
        # learner_precision bfloat16: the forward's matmuls in bf16 (autocast), backward after it
        with torch.autocast(self.device.type, torch.bfloat16, self.cfg.learner_precision == "bfloat16"):
            loss, parts, out = self._forward(chunk, moved)
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"the loss became {loss.item()} ({_loss_parts(parts)})")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.max_grad_norm is not None:
            parts["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.params, self.cfg.max_grad_norm))
        self.optimizer.step()
        # One check (one device sync on a GPU, not one per parameter).
        if not bool(torch.stack([torch.isfinite(p).all() for p in self.params]).all()):
            raise TrainingDiverged(
                f"the weights became non-finite after a finite loss ({_loss_parts(parts)})"
            )
        return parts

    def _forward(self, chunk: dict, moved: dict) -> tuple:
        """The chunk's loss (a float32 scalar), its parts and the policy's output."""
        t = self._tensor
        obs, labels, mask = moved["obs"], moved["labels"], moved["mask"]
        lang = self.encoder(chunk["missions"])[t(chunk["mission_index"])]  # (T, N, lang_dim)
        out = self.policy.forward_sequence(obs, lang, chunk["memory"].to(self.device), t(chunk["done"]))
        loss, parts = self.loss_fn(out, labels, mask)
        # A stream's columns go on from here next update (computed with the weights before this
        # pass's step: the memory a streamed column carries is one optimizer step old).
        self.end_memory = out.memory.detach()
        if mask.any():
            # BabyAI's imitation loss: minus entropy_coef x the policy's mean entropy on the labelled
            # steps (logged whatever the coefficient, so arms can be compared).
            with torch.set_grad_enabled(self.cfg.entropy_coef > 0):
                log_p = torch.log_softmax(out.logits[mask], dim=-1)
                entropy = -(log_p.exp() * log_p).sum(-1).mean()
            parts["train/entropy"] = entropy.item()
            if self.cfg.entropy_coef > 0:
                loss = loss - self.cfg.entropy_coef * entropy
        if self.aux_head is not None:
            aux = aux_rooms_loss(self.aux_head, out, chunk["rooms_visited"], parts)
            loss = loss + self.cfg.aux_rooms_weight * aux
        if self.target_head is not None:
            aux = aux_target_loss(self.target_head, out, chunk["target"], parts)
            loss = loss + self.cfg.aux_target_weight * aux
        if self.subgoal_head is not None:
            aux = aux_subgoal_loss(self.subgoal_head, out, chunk["subgoal"], parts)
            loss = loss + self.cfg.aux_subgoal_weight * aux
        if self.key_head is not None:
            aux = aux_target_loss(self.key_head, out, chunk["key"], parts, "key", self.cfg.aux_key_reads)
            loss = loss + self.cfg.aux_key_weight * aux
        if self.door_head is not None:
            aux = aux_subgoal_loss(self.door_head, out, chunk["door"], parts, name="door")
            loss = loss + self.cfg.aux_door_weight * aux
        if self.match_head is not None:
            image, carrying = moved["image"], moved["carrying"]
            aux = aux_match_loss(self.match_head, out, image, carrying, chunk["door"], parts)
            loss = loss + self.cfg.aux_match_weight * aux
        if self.door_place_head is not None:
            aux = aux_target_loss(self.door_place_head, out, chunk["door_place"], parts, "door_place")
            loss = loss + self.cfg.aux_door_place_weight * aux
        if moved["ce_weights"] is not None:
            loss = loss + ce_weight_shift(out, labels, mask, moved["ce_weights"], parts)
        return loss, parts, out


def learner_device(cfg: TrainConfig) -> torch.device:
    """The device of cfg's learner on this machine; ConfigError in one line when it lacks it
    (train_to_end asks before it touches the run folder)."""
    try:
        return resolve_device(cfg.device, "device")
    except DeviceError as e:
        raise ConfigError(str(e)) from None


def _loss_parts(parts: dict) -> str:
    return ", ".join(
        f"{k.removeprefix('train/')} {v:.4g}" for k, v in parts.items() if k.startswith("train/")
    )


FORKED_FROM = "forked_from"  # a forked run's checkpoints: its parents (train_mop.fork_record)


@dataclass
class TrainState:
    """Where the run stands: the update, counters, recent windows and the collector's env state."""

    update: int
    stats: RunStats
    recent_success: deque
    recent_ratio: deque
    slot_states: list | None
    started: float  # perf_counter() at the (virtual) start of the run, resumed time included
    cpu_started: float  # cpu_seconds() at that start, likewise
    window: dict = field(default_factory=dict)
    levels: list = field(default_factory=list)  # a multi-task run's levels (logged one by one)
    forked_from: list = field(default_factory=list)  # FORKED_FROM: a forked run's parents

    @classmethod
    def start(cls, cfg: TrainConfig, ckpt: dict | None) -> TrainState:
        stats = RunStats(**ckpt["stats"]) if ckpt is not None else RunStats()
        state = cls(
            update=int(ckpt["update"]) if ckpt is not None else 0,
            stats=stats,
            recent_success=deque(stats.recent_success, maxlen=cfg.recent_window),
            recent_ratio=deque(stats.recent_path_ratio, maxlen=cfg.recent_window),
            slot_states=ckpt["collector_state"] if ckpt is not None else None,
            started=time.perf_counter() - stats.elapsed_s,
            cpu_started=cpu_seconds() - stats.cpu_s,
            forked_from=list(ckpt.get(FORKED_FROM, [])) if ckpt is not None else [],
        )
        levels = check_task_ids(cfg.task_id)
        state.levels = levels if len(levels) > 1 else []
        for level in state.levels:
            stats.recent_by_level.setdefault(level, {"episodes": 0, "success": [], "path_ratio": []})
        state.reset_window()
        return state

    def reset_window(self) -> None:
        self.window = {"frames": 0, "time": time.perf_counter(), "sums": {}, "n": 0}

    def record(self, chunk: dict, parts: dict) -> None:
        """Count the chunk's frames and finished episodes, and sum the loss parts for the log."""
        self.slot_states = chunk["slot_states"]
        self.stats.frame_gradients += int(parts.pop("frame_gradients", 0))
        frames = int(chunk["frames"]) if "frames" in chunk else int(np.prod(chunk["done"].shape))
        self.stats.frames += frames
        self.window["frames"] += frames
        self.stats.episodes += int(chunk.get("demo_episodes", 0))  # offline: demos trained on
        for _, ep in chunk["episodes"]:
            self.stats.episodes += 1
            self.stats.successes += ep.success
            self.stats.bot_failures += ep.bot_failure is not None
            self.recent_success.append(float(ep.success))
            if ep.bot_steps:
                self.recent_ratio.append(ep.length / ep.bot_steps)
            if self.levels:
                self._record_level(ep)
        for k, v in parts.items():
            self.window["sums"][k] = self.window["sums"].get(k, 0.0) + float(v)
        self.window["n"] += 1

    def _record_level(self, ep: Any) -> None:
        """A multi-task run's per-level counters and recent windows (plain lists in RunStats, so
        --resume keeps them; each as long as the overall window at most)."""
        level = self.stats.recent_by_level[ep.task_id]
        level["episodes"] += 1
        for key, value in (
            ("success", float(ep.success)),
            ("path_ratio", ep.length / ep.bot_steps if ep.bot_steps else None),
        ):
            if value is not None:
                level[key].append(value)
                del level[key][: -self.recent_success.maxlen]

    def log_row(self) -> dict:
        """The metrics.jsonl row for the updates since the last one."""
        now = time.perf_counter()
        row = {"update": self.update, "frames": self.stats.frames}
        row["train/frame_gradients"] = self.stats.frame_gradients
        row.update({k: v / self.window["n"] for k, v in self.window["sums"].items()})
        recent, ratio = self.recent_success, self.recent_ratio
        row["train/success_recent"] = float(np.mean(recent)) if recent else float("nan")
        row["train/path_ratio_recent"] = float(np.mean(ratio)) if ratio else float("nan")
        for name in self.levels:  # multi-task: the same, per level
            level = self.stats.recent_by_level[name]
            for key in ("success", "path_ratio"):
                values = level[key]
                row[f"train/{key}_recent/{name}"] = float(np.mean(values)) if values else float("nan")
            row[f"episodes/total/{name}"] = level["episodes"]
        row["episodes/total"] = self.stats.episodes
        row["episodes/recent_window"] = len(recent)
        row["episodes/bot_failures"] = self.stats.bot_failures
        row["perf/frames_per_s"] = self.window["frames"] / max(now - self.window["time"], 1e-9)
        row["time/elapsed_s"] = now - self.started
        row["time/cpu_s"] = cpu_seconds() - self.cpu_started
        row["perf/rss_mb"] = resident_mb()
        return row


def checkpoint_payload(learner: Learner, state: TrainState) -> dict:
    """Everything --resume needs, as plain dicts of tensors and plain types."""
    stats = state.stats
    stats.recent_success, stats.recent_path_ratio = list(state.recent_success), list(state.recent_ratio)
    stats.elapsed_s = time.perf_counter() - state.started
    stats.cpu_s = cpu_seconds() - state.cpu_started
    encoder_state = learner.encoder.encoder_state()
    payload = {
        "policy_state_dict": learner.policy.state_dict(),
        "encoder_state": encoder_state,
        "optimizer_state_dict": learner.optimizer.state_dict(),
        "config": {**learner.model_config, "update": state.update},
        "update": state.update,
        "rng": rng_state(learner.device),
        "collector_state": state.slot_states,
        "stats": dataclasses.asdict(stats),
        "device": device_label(learner.device),  # where it was trained (a record; loading ignores it)
    }
    for name in HEAD_FIELDS:  # each auxiliary loss's head that the run trains
        if (head := getattr(learner, name)) is not None:
            payload[f"{name}_state_dict"] = head.state_dict()
    if state.forked_from:
        payload[FORKED_FROM] = state.forked_from
    if "lang_proj_state_dict" in encoder_state:  # the earlier system's key, for its tools
        payload["lang_proj_state_dict"] = encoder_state["lang_proj_state_dict"]
    # Device-free: on the CPU these are the live tensors (no copy), from a GPU copies on the CPU.
    return to_cpu(payload)


# ----------------------------------------------------------------------------- the loop


@dataclass
class Fork:
    """Start a new run from another run's state (lmc.py's children): the parent's checkpoint
    payload at the fork point (weights, Adam, RNGs, counters, update) and this child's buffer.
    A child with another cfg.seed than the parent runs its own layout and teacher-forcing
    streams (those of its seed), so two children differ only in their data; a child with the
    parent's seed and a copy of its buffer equals the parent resumed from that checkpoint."""

    checkpoint: dict
    buffer: EpisodeBuffer | None = None  # None with a buffer configured: the child starts empty


def run_imitation(
    cfg: TrainConfig,
    policy_type: str,
    build_policy_fn: Callable[[dict], torch.nn.Module],
    loss_fn: LossFn,
    resume: bool = False,
    progress: bool = True,
    fork: Fork | None = None,
    save_at: tuple[int, ...] = (),
) -> dict:
    """Online (or offline, --demos) imitation on cfg.task_id; returns a summary (paths written,
    final metrics). train_to_end with the caller's resume: a second start of the same run is
    refused (the run lock), and so are a new run over checkpoints and resuming a finished one."""
    return train_to_end(cfg, policy_type, build_policy_fn, loss_fn, resume, progress, fork, save_at)[1]


def train_to_end(
    cfg: TrainConfig,
    policy_type: str,
    build_policy_fn: Callable[[dict], torch.nn.Module],
    loss_fn: LossFn,
    resume: bool | None = None,
    progress: bool = True,
    fork: Fork | None = None,
    save_at: tuple[int, ...] = (),
) -> tuple[str, dict]:
    """Train the run of `cfg` to cfg.num_updates, holding its folder throughout (runs.own_run):
    (the state it was found in, NEW/PARTIAL/DONE, and the summary). resume None: run_status
    decides under the lock (DONE trains nothing, PARTIAL resumes, NEW starts, from `fork` if
    given); True/False: the caller's choice, checked by checkpoint_to_resume. `fork`: start from
    another run's state (a new run folder); `save_at`: also checkpoint at these updates, each with
    its buffer kept (LMC's fork points; 0: the initial state, before any update)."""
    learner_device(cfg)  # a device this machine lacks: one line before anything is written
    check_writable_dir(cfg.checkpoint_dir, "checkpoint_dir")
    directory = run_dir(cfg)
    with own_run(directory):
        status = run_status(cfg)
        check_policy_type(status, policy_type, directory)
        if resume is None:
            if status.state == DONE:
                return DONE, {"run_dir": str(directory), "checkpoints": [], "update": status.update}
            resume = status.state == PARTIAL
            fork = fork if status.state == NEW else None
        finished = _complete_if_only_renaming(cfg, resume)
        if finished is not None:
            return status.state, finished
        run = ImitationRun(cfg, policy_type, build_policy_fn, loss_fn, resume, progress, fork, save_at)
        run_in_lockstep([run])
        return status.state, run.summary()


def run_in_lockstep(runs: list[ImitationRun]) -> None:
    """Enter the runs and update them in turn, one update each per round, until each is done
    (one run: the plain loop). The caller holds their folders (runs.own_run)."""
    with contextlib.ExitStack() as stack:
        for run in runs:
            stack.enter_context(run)
        while not all(run.done for run in runs):
            for run in runs:
                if not run.done:
                    run.update()


def _complete_if_only_renaming(cfg: TrainConfig, resume: bool) -> dict | None:
    """A run killed between its last numbered checkpoint at num_updates and checkpoint_final.pt:
    only the name is missing (runs that stored the final weights twice). None otherwise."""
    if not resume:
        return None
    directory = run_dir(cfg)
    resumed = checkpoint_to_resume(cfg, resume)
    if resumed is None or resumed[1]["update"] != cfg.num_updates:
        return None
    path, ckpt = resumed
    final = link_or_copy(path, directory / checkpoint_name(None))  # mop/runs.py: store_last_update's link
    print(f"{str(directory)!r} had reached update {cfg.num_updates}: {final.name} now links {path.name}")
    rows = read_metrics(directory / METRICS_FILE) if (directory / METRICS_FILE).exists() else []
    return {
        "run_dir": str(directory),
        "checkpoints": [str(final)],
        "metrics_path": str(directory / METRICS_FILE),
        "final": rows[-1] if rows else {},
        "episodes": ckpt["stats"]["episodes"],
        "bot_failures": ckpt["stats"]["bot_failures"],
    }


class ImitationRun:
    """One run, steppable: `with ImitationRun(...) as run: while not run.done: run.update()`.
    train_to_end drives one; lmc.py drives two children in lockstep (its shared-buffer strategy).
    The caller holds the run folder's lock. Entering starts the collector (worker processes) and
    only then touches the run folder, so a failed start changes nothing."""

    def __init__(
        self,
        cfg: TrainConfig,
        policy_type: str,
        build_policy_fn: Callable[[dict], torch.nn.Module],
        loss_fn: LossFn,
        resume: bool = False,
        progress: bool = True,
        fork: Fork | None = None,
        save_at: tuple[int, ...] = (),
    ):
        if fork is not None and resume:
            raise ValueError("a forked run starts new; resume it as a normal run")
        self.cfg, self.progress, self.save_at = cfg, progress, set(int(u) for u in save_at)
        self.directory = directory = run_dir(cfg)
        self.gate = gate.Watch(cfg.stop_unless, partial(offline_update, cfg))  # --stop_unless (mop/gate.py)
        if fork is not None:
            gate.refuse(cfg.stop_unless, directory, int(fork.checkpoint["update"]), "--fork_from")
        self.resumed = checkpoint_to_resume(cfg, resume)
        if fork is not None:
            # Its own copy: Adam's load_state_dict keeps the given tensors and updates them in place,
            # so two children forked from one payload would otherwise share optimizer state.
            ckpt = copy.deepcopy(fork.checkpoint)
        else:
            ckpt = None if self.resumed is None else self.resumed[1]
        self.resume_flag = resume
        seed_everything(run_seed(cfg))
        self.learner = Learner.build(cfg, policy_type, build_policy_fn, loss_fn, ckpt)
        if ckpt is not None:
            set_rng_state(ckpt["rng"], self.learner.device)
        self.state = TrainState.start(cfg, ckpt)
        if fork is not None:
            if cfg.seed != fork.checkpoint["config"].get("seed"):
                self.state.slot_states = None  # another seed: its own layout and forcing streams
            # (with the parent's seed the child continues the parent's streams: it equals the
            # parent resumed from this checkpoint, which is how a test checks that forks are exact)
            self.replay = None
            if cfg.buffer_episodes:
                buffer = fork.buffer
                if buffer is None:  # (an empty buffer given is kept: the shared strategy's one buffer)
                    buffer = EpisodeBuffer(cfg.buffer_episodes, cfg.task_id, buffer_seed(cfg))
                self.replay = Replay(cfg, buffer, EpisodeAssembler(cfg.num_envs))
        else:
            self.replay = Replay.start(cfg, directory, ckpt)
        use_one_thread()  # small matrices: one thread is faster, and workers use the other cores
        self.build_policy_fn, self.ckpt = build_policy_fn, ckpt
        self.written: list[str] = []
        self.saved_at = time.monotonic()  # the wall clock of the last file saved (resume points)
        self.last_numbered = max((u for u, _ in checkpoint_paths(self.directory)), default=None)
        self.row: dict = {}
        self.collector: Any = None
        self.demos: DemoSource | None = None  # --demos_in_dagger, in the DAgger phase
        self.logger: MetricLogger | None = None

    @property
    def demo_source(self) -> DemoSource | None:
        """Where the run's demos come from now: the BC phase's collector, or --demos_in_dagger's
        source beside the live collector in the DAgger phase (None: no demos in play)."""
        return self.collector if isinstance(self.collector, DemoSource) else self.demos

    @property
    def done(self) -> bool:
        return self.state.update >= self.cfg.num_updates or self.gate.stopped

    def __enter__(self) -> ImitationRun:
        from mop.progress import progress_bar

        cfg, state, learner = self.cfg, self.state, self.learner
        if offline_update(cfg, state.update + 1):
            self.collector = self._demo_source()
            torch.set_num_threads(cfg.demo_threads)  # no env workers on the other cores until DAgger
        else:
            self.demos = self._demo_source() if cfg.demos_in_dagger else None
            self.collector = open_collector(cfg, learner, self.build_policy_fn, state)
        try:
            continuing = self.resume_flag
            self.logger = MetricLogger(self.directory, cfg, continuing, state.update if continuing else None)
            write_run_config(self.directory, learner.model_config)
            if self.resumed is not None:
                path = self.resumed[0]
                print(f"resuming from {path} (update {state.update}, training to {cfg.num_updates})")
                if path.name == checkpoint_name(None):
                    # A finished run goes on: its final weights keep only their numbered name (a bad
                    # checkpoint_final.pt skipped by newest_checkpoint stays until this run writes a new one).
                    retire_final(self.directory, state.update)
            self.bar = progress_bar(
                cfg.num_updates,
                f"{cfg.task_id} t{cfg.trial}" + (f" s{cfg.seed}" if cfg.seed is not None else ""),
                enabled=self.progress,
                initial=state.update,
            )
            state.reset_window()
            if not self.done:
                self._submit(state.update + 1)
            if state.update == 0 and 0 in self.save_at and not (self.directory / checkpoint_name(0)).exists():
                self.written.append(self.save(checkpoint_name(0)))  # the initialisation (LMC fork point 0)
        except BaseException:
            self.collector.__exit__(None, None, None)
            raise
        return self

    def _demo_source(self) -> DemoSource:
        """The run's demos. The wall and CPU spent making (or loading) their store are not training
        time: bench/levels.py charges a store's generation to a row once, as its demo_s."""
        wall, cpu = time.perf_counter(), cpu_seconds()
        source = DemoSource(self.cfg, self.ckpt, self.progress)
        self.state.started += time.perf_counter() - wall
        self.state.cpu_started += cpu_seconds() - cpu
        return source

    def __exit__(self, *exc: Any) -> None:
        if self.collector is not None:
            self.collector.__exit__(*exc)
        if self.logger is not None:
            self.logger.close()
        if getattr(self, "bar", None) is not None:
            self.bar.close()

    def _submit(self, update: int) -> float:
        """Start collecting the chunk of `update`; the seconds this took (sending the weights)."""
        started, learner = time.perf_counter(), self.learner
        self.collector.submit(
            learner.policy, learner.encoder, self.cfg.unroll_len, teacher_forcing_at(self.cfg, update)
        )
        return time.perf_counter() - started

    def update(self) -> dict | None:
        """One update (collect -> learner step -> record -> log -> save); the logged row, if any.
        After the last update the final checkpoint is written."""
        cfg, state, learner = self.cfg, self.state, self.learner
        update = state.update + 1
        state.update, last = update, update == cfg.num_updates
        # The last update on the demos before DAgger (--demo_updates): the live collector starts
        # after it, and its first unroll acts with this update's weights (as when resumed here).
        switching = offline_update(cfg, update) and not offline_update(cfg, update + 1) and not last
        online = not offline_update(cfg, update)
        waited = time.perf_counter()
        chunk = self.collector.result()
        waited = time.perf_counter() - waited
        submitted = 0.0
        if cfg.async_collection and not last and not switching:  # the next unroll overlaps with this update
            submitted = self._submit(update + 1)
        learning = time.perf_counter()
        replaying = self.replay is not None and online  # the DAgger buffer holds live episodes only
        batch, extra = self.replay.training_batch(chunk, learner) if replaying else (chunk, {})
        if online and self.demos is not None:  # --demos_in_dagger: the next demo batch beside them
            batch, extra = self.demos.beside(batch, extra, learner)
        try:
            parts = learner.step(batch, lr_at(cfg, update))
            carry_memory(batch, learner.end_memory)  # streamed columns go on from where this step ended
        except TrainingDiverged as e:
            saved = Path(self.written[-1]).name if self.written else "none yet"
            raise TrainingDiverged(
                f"update {update}: {e}; training stopped and nothing was saved (last checkpoint: "
                f"{saved}); lower --lr or --lpc_alpha"
            ) from None
        learning = time.perf_counter() - learning
        if not cfg.async_collection and not last and not switching:
            submitted = self._submit(update + 1)
        # Where the update's time went (means over the logged window): the learner waiting for the
        # chunk, sending the weights for the next one, its own replay + step, and the slowest
        # collector's acting for that chunk. In async runs wait ~ 0 means collection keeps up and
        # the learner is the bottleneck.
        parts["perf/wait_s"] = waited
        parts["perf/submit_s"] = submitted
        parts["perf/learn_s"] = learning
        if "collect_s" in chunk:
            parts["perf/collect_s"] = chunk["collect_s"]
        parts["train/teacher_forcing"] = chunk["teacher_forcing"]  # the value this chunk acted with
        parts["train/lr"] = lr_at(cfg, update)
        parts.update(extra)
        state.record(chunk, parts)
        if update % TRIM_EVERY == 0:
            trim_heap()  # the batches' free pages back to the system (mop/heap.py): memory stays flat
        self.bar.update(1)
        logged = None
        if update % cfg.log_interval == 0 or last or switching:  # no row mixes the two phases
            logged = self.row = state.log_row()
            if replaying:
                self.row.update(self.replay.log_fields())
            if self.demo_source is not None:
                self.row["demos/epoch"] = self.demo_source.buffer.epoch  # passes over the demos started
            self.logger.log(self.row)
            if self.progress:
                self.bar.write(format_log_line(self.row))
            self.bar.set_postfix(
                succ=f"{self.row['train/success_recent']:.2f}",
                loss=f"{self.row.get('train/loss', float('nan')):.3f}",
            )
            state.reset_window()
        said = self.gate.after(update, logged, last, self.directory)  # stopped: checkpoint_<update>.pt
        if said and self.progress:
            self.bar.write(said)
        elif said:
            print(said, flush=True)
        interval = (cfg.checkpoint_interval and update % cfg.checkpoint_interval == 0) or self.gate.stopped
        if (interval or update in self.save_at) and not last:
            self.written.append(self.save(checkpoint_name(update)))
        if last:  # checkpoint_<U>.pt, and checkpoint_final.pt linking it (mop/runs.py store_last_update)
            self.written += [
                str(p) for p in store_last_update(self.directory, update, lambda p: self.save(p.name))
            ]
        if interval or update in self.save_at or last:
            self.last_numbered, self.saved_at = update, time.monotonic()
            drop_resume_points(self.directory)  # a numbered checkpoint passes them
        elif time.monotonic() - self.saved_at >= RESUME_POINT_MINUTES * 60:
            self.save(resume_point_name(update), point=True)  # not in `written`: not a checkpoint
            drop_resume_points(self.directory, keep=update)
            self.saved_at = time.monotonic()
        if switching and not self.gate.stopped:
            self.demos = self.collector if cfg.demos_in_dagger else None  # its demo stream goes on
            self.collector.__exit__(None, None, None)
            self.collector = None  # (a failed start leaves nothing for __exit__ to close twice)
            use_one_thread()  # the env workers take the other cores from here
            self.collector = open_collector(cfg, learner, self.build_policy_fn, state)
            self._submit(update + 1)
        return logged

    def payload(self) -> dict:
        """The checkpoint payload of the run as it stands (what a fork starts from). Its tensors
        are the live ones (Fork copies what it is given)."""
        payload = checkpoint_payload(self.learner, self.state)
        if self.demo_source is not None:
            payload["demo_sampler"] = self.demo_source.state()
        if self.replay is not None and self.replay.state() is not None:
            payload["replay_stream"] = self.replay.state()  # --learner_stream streamed: columns and memory
        return payload

    def save(self, name: str, point: bool = False) -> str:
        """Save the run as it stands to `name` in its folder (a numbered checkpoint, or with `point`
        a resume point, beside which the newest numbered checkpoint's buffer is kept: the run goes
        back to it if the resume point is unreadable)."""
        update = self.state.update
        # The buffer first: a checkpoint on disk always has its buffer (none while the run is on its
        # demos: it is empty until the first DAgger update, and Replay.start makes it so).
        buffered = self.replay is not None and not offline_update(self.cfg, update)
        if buffered:
            self.replay.save(self.directory, update)
        path = str(save_checkpoint(self.directory / name, self.payload()))
        if buffered:
            numbered = {self.last_numbered} - {None} if point else set()
            Replay.drop_older(self.directory, keep={update, *self.save_at} | numbered)
        return path

    def summary(self) -> dict:
        return {
            "run_dir": str(self.directory),
            "checkpoints": self.written,
            "metrics_path": str(self.directory / METRICS_FILE),
            "final": self.row,
            "episodes": self.state.stats.episodes,
            "bot_failures": self.state.stats.bot_failures,
            "stopped_at_gate": self.state.update if self.gate.stopped else None,
        }
