"""The online-imitation loop that train.py and train_mop.py both run (DAgger with the BabyAI bot).

One update, as the loop body reads:
    chunk = collect(...)          envs act for unroll_len steps with the current policy (worker
                                  processes), the bot labels every visited state
    parts = learner.step(chunk)   the learner replays the unroll as whole sequences with gradients
                                  from the memory the workers started from, one Adam step on loss_fn
    state.record(chunk, parts)    counters, recent success and path ratio
    log / save                    metrics.jsonl (+ tqdm, stdout, wandb) and checkpoints
The replay equals the acting pass (a test checks the logits), so this is the same algorithm as
stepping with graph, only faster. The policy and the loss come from the stage script.

--resume restores weights, Adam, RNGs, counters and each env's episode counter and RNG, but not the
envs' episodes in progress (minigrid and bot state are not plain tensors): every env starts its
next episode with zeroed memory. So a resumed run is reproducible and equal to the uninterrupted
one up to the checkpoint, and differs after it (README "Resuming"; tests/test_hardening.py).

    summary = run_imitation(cfg, "mop", build_policy, loss_fn)   # what train_mop.main does
    python train_mop.py --task_id BabyAI-GoToLocal-v0 --num_updates 300
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch

from babyai_env import encode_obs, make_env, obs_dim
from collection import ParallelCollector
from experiment import (
    ConfigError,
    MetricLogger,
    TrainConfig,
    default_num_workers,
    newest_checkpoint,
    read_metrics,
    rng_state,
    run_dir,
    run_seed,
    save_checkpoint,
    seed_everything,
    set_rng_state,
)
from language import MissionEncoderError, build_mission_encoder
from runs import (
    METRICS_FILE,
    check_writable_dir,
    checkpoint_name,
    checkpoint_paths,
    final_checkpoint,
    remove_stale_temp_files,
    run_lock,
    write_run_config,
)

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
    elapsed_s: float = 0.0


# ----------------------------------------------------------------------------- start or resume


def checkpoint_to_resume(cfg: TrainConfig, resume: bool) -> tuple[Path, dict] | None:
    """(path, checkpoint) a run continues from: the newest readable one (None for a new run);
    refuses to overwrite a run. A run killed after its last numbered checkpoint at num_updates but
    before checkpoint_final.pt (runs that stored the final weights twice) is returned too: the
    loop then only completes what is missing."""
    directory = run_dir(cfg)
    if not resume:
        if checkpoint_paths(directory) or final_checkpoint(directory):
            raise ConfigError(
                f"{str(directory)!r} already holds checkpoints; use --resume, or another --trial/--seed/--checkpoint_dir"
            )
        return None
    path, ckpt = newest_checkpoint(directory)
    finished = path.name == checkpoint_name(None)
    if ckpt["update"] > cfg.num_updates or (finished and ckpt["update"] == cfg.num_updates):
        raise ConfigError(
            f"--resume: the run in {str(directory)!r} already reached update {ckpt['update']}; raise --num_updates to continue"
        )
    return path, ckpt


class TrainingDiverged(ConfigError):
    """The loss or the weights became non-finite; nothing is saved over the last good checkpoint."""


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

    @classmethod
    def build(
        cls,
        cfg: TrainConfig,
        policy_type: str,
        build_policy_fn: Callable[[dict], torch.nn.Module],
        loss_fn: LossFn,
        ckpt: dict | None,
    ) -> Learner:
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
            build_mission_encoder, cfg.lang_encoder, cfg.lang_dim, cfg.distilbert_path, None, run_seed(cfg)
        )
        try:
            encoder = encoder_factory()
        except MissionEncoderError as e:  # e.g. DistilBERT weights absent: one line, nothing written
            raise ConfigError(str(e)) from None
        params = list(policy.parameters()) + [p for p in encoder.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=cfg.lr)
        if ckpt is not None:
            policy.load_state_dict(ckpt["policy_state_dict"])
            encoder.load_encoder_state(ckpt["encoder_state"])
            optimizer.load_state_dict(ckpt["optimizer_state_dict"])
        return cls(cfg, model_config, policy, encoder, encoder_factory, optimizer, params, loss_fn)

    def step(self, chunk: dict) -> dict:
        """Replay one chunk with gradients and take one optimizer step; returns the loss parts."""
        self.policy.train()
        self.encoder.train()
        obs = encode_obs(
            torch.from_numpy(chunk["image"]),
            torch.from_numpy(chunk["direction"]),
            torch.from_numpy(chunk["carrying"]),
            self.cfg.obs_encoding,
        )  # (T, N, obs_dim)
        lang = self.encoder(chunk["missions"])[torch.from_numpy(chunk["mission_index"])]  # (T, N, lang_dim)
        out = self.policy.forward_sequence(obs, lang, chunk["memory"], torch.from_numpy(chunk["done"]))
        loss, parts = self.loss_fn(
            out, torch.from_numpy(chunk["label"]), torch.from_numpy(chunk["label_mask"])
        )
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"the loss became {loss.item()} ({_loss_parts(parts)})")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.max_grad_norm is not None:
            parts["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.params, self.cfg.max_grad_norm))
        self.optimizer.step()
        if not all(bool(torch.isfinite(p).all()) for p in self.params):
            raise TrainingDiverged(
                f"the weights became non-finite after a finite loss ({_loss_parts(parts)})"
            )
        return parts


def _loss_parts(parts: dict) -> str:
    return ", ".join(
        f"{k.removeprefix('train/')} {v:.4g}" for k, v in parts.items() if k.startswith("train/")
    )


@dataclass
class TrainState:
    """Where the run stands: the update, counters, recent windows and the collector's env state."""

    update: int
    stats: RunStats
    recent_success: deque
    recent_ratio: deque
    slot_states: list | None
    started: float  # perf_counter() at the (virtual) start of the run, resumed time included
    window: dict = field(default_factory=dict)

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
        )
        state.reset_window()
        return state

    def reset_window(self) -> None:
        self.window = {"frames": 0, "time": time.perf_counter(), "sums": {}, "n": 0}

    def record(self, chunk: dict, parts: dict) -> None:
        """Count the chunk's frames and finished episodes, and sum the loss parts for the log."""
        self.slot_states = chunk["slot_states"]
        frames = int(np.prod(chunk["done"].shape))
        self.stats.frames += frames
        self.window["frames"] += frames
        for _, ep in chunk["episodes"]:
            self.stats.episodes += 1
            self.stats.successes += ep.success
            self.stats.bot_failures += ep.bot_failure is not None
            self.recent_success.append(float(ep.success))
            if ep.bot_steps:
                self.recent_ratio.append(ep.length / ep.bot_steps)
        for k, v in parts.items():
            self.window["sums"][k] = self.window["sums"].get(k, 0.0) + float(v)
        self.window["n"] += 1

    def log_row(self) -> dict:
        """The metrics.jsonl row for the updates since the last one."""
        now = time.perf_counter()
        row = {"update": self.update, "frames": self.stats.frames}
        row.update({k: v / self.window["n"] for k, v in self.window["sums"].items()})
        recent, ratio = self.recent_success, self.recent_ratio
        row["train/success_recent"] = float(np.mean(recent)) if recent else float("nan")
        row["train/path_ratio_recent"] = float(np.mean(ratio)) if ratio else float("nan")
        row["episodes/total"] = self.stats.episodes
        row["episodes/recent_window"] = len(recent)
        row["episodes/bot_failures"] = self.stats.bot_failures
        row["perf/frames_per_s"] = self.window["frames"] / max(now - self.window["time"], 1e-9)
        row["time/elapsed_s"] = now - self.started
        return row


def checkpoint_payload(learner: Learner, state: TrainState) -> dict:
    """Everything --resume needs, as plain dicts of tensors and plain types."""
    stats = state.stats
    stats.recent_success, stats.recent_path_ratio = list(state.recent_success), list(state.recent_ratio)
    stats.elapsed_s = time.perf_counter() - state.started
    encoder_state = learner.encoder.encoder_state()
    payload = {
        "policy_state_dict": learner.policy.state_dict(),
        "encoder_state": encoder_state,
        "optimizer_state_dict": learner.optimizer.state_dict(),
        "config": {**learner.model_config, "update": state.update},
        "update": state.update,
        "rng": rng_state(),
        "collector_state": state.slot_states,
        "stats": dataclasses.asdict(stats),
    }
    if "lang_proj_state_dict" in encoder_state:  # the earlier system's key, for its tools
        payload["lang_proj_state_dict"] = encoder_state["lang_proj_state_dict"]
    return payload


def open_collector(
    cfg: TrainConfig, learner: Learner, build_policy_fn: Callable, state: TrainState
) -> ParallelCollector:
    num_workers = cfg.num_workers if cfg.num_workers is not None else default_num_workers()
    return ParallelCollector(
        cfg.task_id,
        cfg.num_envs,
        num_workers,
        run_seed=run_seed(cfg),
        max_steps=cfg.max_steps,
        obs_encoding=cfg.obs_encoding,
        policy_factory=partial(build_policy_fn, learner.model_config),
        encoder_factory=learner.encoder_factory,
        teacher_forcing=cfg.teacher_forcing,
        path_ratio_fraction=cfg.path_ratio_fraction,
        slot_states=state.slot_states,
        fast_env=cfg.fast_env,
    )


# ----------------------------------------------------------------------------- the loop


def teacher_forcing_at(cfg: TrainConfig, update: int) -> float:
    """DAgger's beta_i for update `update` (1-based): the probability that the bot's label, not the
    student's action, is executed. Linear from teacher_forcing at update 1 to teacher_forcing_final
    at update 1 + teacher_forcing_decay_updates, constant after; decay 0: constant teacher_forcing."""
    if cfg.teacher_forcing_decay_updates == 0 or cfg.teacher_forcing_final is None:
        return cfg.teacher_forcing
    progress = min(max(update - 1, 0) / cfg.teacher_forcing_decay_updates, 1.0)
    return cfg.teacher_forcing + (cfg.teacher_forcing_final - cfg.teacher_forcing) * progress


def run_imitation(
    cfg: TrainConfig,
    policy_type: str,
    build_policy_fn: Callable[[dict], torch.nn.Module],
    loss_fn: LossFn,
    resume: bool = False,
    progress: bool = True,
) -> dict:
    """Online imitation on cfg.task_id; returns a summary (paths written, final metrics). Holds
    the run folder's lock (runs.run_lock) throughout: a second start of the same run is refused."""
    check_writable_dir(cfg.checkpoint_dir, "checkpoint_dir")
    with run_lock(run_dir(cfg)):
        remove_stale_temp_files(run_dir(cfg))  # left by a kill mid-write; no one else writes here now
        return _run_locked(cfg, policy_type, build_policy_fn, loss_fn, resume, progress)


def _run_locked(
    cfg: TrainConfig,
    policy_type: str,
    build_policy_fn: Callable[[dict], torch.nn.Module],
    loss_fn: LossFn,
    resume: bool,
    progress: bool,
) -> dict:
    from tqdm.auto import tqdm

    directory = run_dir(cfg)
    resumed = checkpoint_to_resume(cfg, resume)
    ckpt = None if resumed is None else resumed[1]
    if ckpt is not None and ckpt["update"] == cfg.num_updates:
        # Killed between its last numbered checkpoint and checkpoint_final.pt: only the name is missing.
        final = directory / checkpoint_name(None)
        os.replace(resumed[0], final)
        print(
            f"{str(directory)!r} had reached update {cfg.num_updates}: {resumed[0].name} is now {final.name}"
        )
        rows = read_metrics(directory / METRICS_FILE) if (directory / METRICS_FILE).exists() else []
        return {
            "run_dir": str(directory),
            "checkpoints": [str(final)],
            "metrics_path": str(directory / METRICS_FILE),
            "final": rows[-1] if rows else {},
            "episodes": ckpt["stats"]["episodes"],
            "bot_failures": ckpt["stats"]["bot_failures"],
        }
    seed_everything(run_seed(cfg))
    learner = Learner.build(cfg, policy_type, build_policy_fn, loss_fn, ckpt)
    if ckpt is not None:
        set_rng_state(ckpt["rng"])
    state = TrainState.start(cfg, ckpt)
    torch.set_num_threads(1)  # small matrices: one thread is faster, and workers use the other cores

    def save(name: str) -> str:
        return str(save_checkpoint(directory / name, checkpoint_payload(learner, state)))

    written: list[str] = []
    row: dict = {}
    with open_collector(cfg, learner, build_policy_fn, state) as collector:
        # Only now, with every worker up, does the run touch its folder: a failed start changes nothing.
        logger = MetricLogger(directory, cfg, resume, state.update if resume else None)
        write_run_config(directory, learner.model_config)
        if resumed is not None and resumed[0].name == checkpoint_name(None):
            # A finished run goes on: its final weights keep their update. (A bad checkpoint_final.pt
            # skipped by newest_checkpoint stays until this run writes a new one over it.)
            os.replace(resumed[0], directory / checkpoint_name(state.update))
        bar = tqdm(
            range(state.update + 1, cfg.num_updates + 1),
            initial=state.update,
            total=cfg.num_updates,
            desc=f"{cfg.task_id} t{cfg.trial}",
            disable=not progress,
            dynamic_ncols=True,
        )
        state.reset_window()
        collector.submit(
            learner.policy, learner.encoder, cfg.unroll_len, teacher_forcing_at(cfg, state.update + 1)
        )
        for update in bar:
            state.update, last = update, update == cfg.num_updates
            chunk = collector.result()
            if cfg.async_collection and not last:  # the next unroll overlaps with this update
                collector.submit(
                    learner.policy, learner.encoder, cfg.unroll_len, teacher_forcing_at(cfg, update + 1)
                )
            try:
                parts = learner.step(chunk)
            except TrainingDiverged as e:
                saved = Path(written[-1]).name if written else "none yet"
                raise TrainingDiverged(
                    f"update {update}: {e}; training stopped and nothing was saved (last checkpoint: "
                    f"{saved}); lower --lr or --lpc_alpha"
                ) from None
            if not cfg.async_collection and not last:
                collector.submit(
                    learner.policy, learner.encoder, cfg.unroll_len, teacher_forcing_at(cfg, update + 1)
                )
            parts["train/teacher_forcing"] = chunk["teacher_forcing"]  # the value this chunk acted with
            state.record(chunk, parts)
            if update % cfg.log_interval == 0 or last:
                row = state.log_row()
                logger.log(row)
                if progress:
                    bar.write(format_log_line(row))
                bar.set_postfix(
                    succ=f"{row['train/success_recent']:.2f}",
                    loss=f"{row.get('train/loss', float('nan')):.3f}",
                )
                state.reset_window()
            if cfg.checkpoint_interval and update % cfg.checkpoint_interval == 0 and not last:
                written.append(save(checkpoint_name(update)))
        written.append(save(checkpoint_name(None)))  # the final weights, stored once
        bar.close()
    logger.close()
    return {
        "run_dir": str(directory),
        "checkpoints": written,
        "metrics_path": str(logger.path),
        "final": row,
        "episodes": state.stats.episodes,
        "bot_failures": state.stats.bot_failures,
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
