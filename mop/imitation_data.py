"""The imitation loop's data: where labelled steps come from and where they are kept between
updates. `Replay` holds the DAgger buffer of whole labelled episodes (mop/replay_buffer.py) and its
file beside each checkpoint (`buffer_path`); `DemoSource` serves `--demos N` bot demonstrations
(mop/bot_demos.py) in epochs; `open_collector` starts the parallel collector of a config. Used by
mop/imitation.py's ImitationRun, which re-exports these names (lmc.py's forks import them there).
Reads and writes buffer_<update>.npz beside a run's checkpoints.

    path = buffer_path(run_dir(cfg), 200)         # checkpoint_200.pt's buffer
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mop.collection import ParallelCollector
from mop.experiment import ConfigError, TrainConfig, default_num_workers, run_seed
from mop.replay_buffer import (
    BufferError,
    EpisodeAssembler,
    EpisodeBuffer,
    concat_chunks,
    replay_columns,
    replay_frames_for,
)

# mop.imitation's Learner and TrainState are passed in (typed Any here: that module imports this one)
Learner = TrainState = Any


BUFFER_PREFIX = "buffer_"


def buffer_path(directory: Path, update: int) -> Path:
    """The DAgger buffer saved with the checkpoint of `update` (final included)."""
    return directory / f"{BUFFER_PREFIX}{update}.npz"


def buffer_seed(cfg: TrainConfig) -> list[int]:
    return [run_seed(cfg), 0xB0FFE7]  # its own stream: sampling never shifts the run's other draws


@dataclass
class Replay:
    """Online DAgger's aggregation buffer: finished episodes of every chunk go in, and every
    update trains on the fresh unroll plus replayed episodes making up cfg.replay_ratio of it."""

    cfg: TrainConfig
    buffer: EpisodeBuffer
    assembler: EpisodeAssembler

    @classmethod
    def start(cls, cfg: TrainConfig, directory: Path, ckpt: dict | None) -> Replay | None:
        if cfg.buffer_episodes == 0:
            return None
        if ckpt is None or int(ckpt["update"]) == 0:
            buffer = EpisodeBuffer(cfg.buffer_episodes, cfg.task_id, buffer_seed(cfg))
        else:
            path = buffer_path(directory, int(ckpt["update"]))
            try:
                buffer, _ = EpisodeBuffer.load(path, cfg.task_id)
            except FileNotFoundError:
                raise ConfigError(
                    f"--resume: the run's replay buffer for update {ckpt['update']} ({path.name}) is missing; "
                    "it is written beside each checkpoint and cannot be rebuilt"
                ) from None
            except BufferError as e:
                raise ConfigError(f"--resume: {e}") from None
        # The collector starts every env at a fresh episode (a new run, or a resumed one).
        return cls(cfg, buffer, EpisodeAssembler(cfg.num_envs))

    def training_batch(self, chunk: dict, learner: Learner) -> tuple[dict, dict]:
        """(the learner's batch: chunk + replayed columns, log parts). Replayed episodes are drawn
        before this chunk's finished episodes join the buffer, so nothing is trained on twice in
        one update; their memory comes from the weights this update steps from."""
        fresh = int(np.prod(chunk["done"].shape))
        episodes = self.buffer.sample_frames(replay_frames_for(fresh, self.cfg.replay_ratio))
        columns = replay_columns(
            episodes, learner.policy, learner.encoder, self.cfg.unroll_len, self.cfg.obs_encoding
        )
        self.buffer.extend(self.assembler.add(chunk))
        parts = {"train/replay_frames": float(columns["frames"]) if columns else 0.0}
        return concat_chunks(chunk, columns), parts

    def log_fields(self) -> dict:
        """Where the buffer stands now (metrics.jsonl, beside the per-update averages)."""
        return {
            "buffer/episodes": len(self.buffer),
            "buffer/frames": self.buffer.frames,
            "buffer/added": self.buffer.added,
        }

    def save(self, directory: Path, update: int) -> None:
        self.buffer.save(buffer_path(directory, update), update=update)

    @staticmethod
    def drop_older(directory: Path, keep: set[int]) -> None:
        """Only the newest buffer (and those of `keep`, e.g. fork points) stays: each can be tens of MB."""
        names = {buffer_path(directory, u).name for u in keep}
        for p in directory.glob(f"{BUFFER_PREFIX}*.npz"):
            if p.name not in names:
                p.unlink(missing_ok=True)


class DemoSource:
    """Offline behavioural cloning: serves batches of bot demos in the collector's place. Each
    update's batch holds about num_envs x unroll_len demo steps, whole episodes from their reset in
    unroll_len windows (replay_columns), drawn pass after pass over the shuffled demos."""

    def __init__(self, cfg: TrainConfig, ckpt: dict | None, progress: bool):
        from mop.bot_demos import load_or_generate_demos

        num_workers = cfg.num_workers if cfg.num_workers is not None else default_num_workers()
        try:
            self.buffer, self.meta, self.path = load_or_generate_demos(
                cfg.task_id,
                cfg.demos,
                cfg.demo_seed,
                cfg.demos_dir,
                cfg.max_steps,
                num_workers,
                cfg.fast_env,
                progress,
            )
        except BufferError as e:
            raise ConfigError(str(e)) from None
        self.buffer.rng = np.random.default_rng(buffer_seed(cfg))
        if ckpt is not None and "demo_sampler" in ckpt:
            self.load_state(ckpt["demo_sampler"])
        self.cfg = cfg
        self.pending: tuple | None = None

    def state(self) -> dict:
        return {
            "rng": self.buffer.rng.bit_generator.state,
            "epoch": self.buffer.epoch,
            "epoch_order": list(self.buffer._epoch_order),
        }

    def load_state(self, state: dict) -> None:
        self.buffer.rng.bit_generator.state = state["rng"]
        self.buffer.epoch = int(state["epoch"])
        self.buffer._epoch_order = [int(i) for i in state["epoch_order"]]

    def submit(
        self, policy: torch.nn.Module, encoder: torch.nn.Module, unroll_len: int, teacher_forcing: Any = None
    ) -> None:
        self.pending = (policy, encoder, unroll_len)

    def result(self) -> dict:
        policy, encoder, unroll_len = self.pending
        self.pending = None
        episodes = self.buffer.next_epoch_batch(self.cfg.num_envs * unroll_len)
        chunk = replay_columns(episodes, policy, encoder, unroll_len, self.cfg.obs_encoding)
        chunk.update(episodes=[], slot_states=None, teacher_forcing=1.0, demo_episodes=len(episodes))
        return chunk

    def __enter__(self) -> DemoSource:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass


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
        task_weights=cfg.task_weights,
        key_layout_share=cfg.key_layout_share,
    )
