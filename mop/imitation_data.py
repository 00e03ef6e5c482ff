"""The imitation loop's data: where labelled steps come from and where they are kept between
updates. `Replay` holds the DAgger buffer of whole labelled episodes (mop/replay_buffer.py) and its
file beside each checkpoint (`buffer_path`); `DemoSource` serves `--demos N` bot demonstrations
(mop/bot_demos.py) in epochs; `open_collector` starts the parallel collector of a config. With
--learner_stream streamed both serve their episodes as persistent columns (mop/streams.py's
EpisodeColumns, the producer of every stored-episode stream), whose memory the learner's step hands
back (`carry_memory`) and whose state goes into the checkpoint. Used by
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
from mop.devices import default_num_workers
from mop.experiment import ConfigError, TrainConfig, run_seed
from mop.replay_buffer import (
    BufferError,
    EpisodeAssembler,
    EpisodeBuffer,
    concat_chunks,
    replay_columns,
    replay_frames_for,
)
from mop.streams import EpisodeColumns

# mop.imitation's Learner and TrainState are passed in (typed Any here: that module imports this one)
Learner = TrainState = Any


BUFFER_PREFIX = "buffer_"


def buffer_path(directory: Path, update: int) -> Path:
    """The DAgger buffer saved with the checkpoint of `update` (final included)."""
    return directory / f"{BUFFER_PREFIX}{update}.npz"


def buffer_seed(cfg: TrainConfig) -> list[int]:
    return [run_seed(cfg), 0xB0FFE7]  # its own stream: sampling never shifts the run's other draws


def stored_columns(cfg: TrainConfig, demos: bool) -> int:
    """--learner_stream streamed: the columns of stored episodes per Adam step (cfg.batch_columns;
    null: the padded path's frames, num_envs for demos, num_envs x r / (1 - r) beside a buffer)."""
    if cfg.batch_columns is not None:
        return cfg.batch_columns
    if demos:
        return cfg.num_envs
    return replay_frames_for(cfg.num_envs, cfg.replay_ratio)


def uses_subgoals(cfg: TrainConfig) -> bool:
    """Whether the recipe trains on the bot's subgoal per step (--aux_subgoal_weight's head or
    --subgoal_ce_weights): demo stores must hold them, and live collection records them."""
    return cfg.aux_subgoal_weight > 0 or bool(cfg.subgoal_ce_weights)


def carry_memory(batch: dict, end_memory: Any) -> None:
    """After the learner's step: each stream of the batch gets the memory its columns ended with."""
    for stream, columns in batch.get("carry", ()):
        stream.carry(end_memory[columns])


@dataclass
class Replay:
    """Online DAgger's aggregation buffer: finished episodes of every chunk go in, and every
    update trains on the fresh unroll plus replayed episodes making up cfg.replay_ratio of it."""

    cfg: TrainConfig
    buffer: EpisodeBuffer
    assembler: EpisodeAssembler
    stream: EpisodeColumns | None = None  # --learner_stream streamed: made at the first replay
    stream_state: dict | None = None  # a resumed stream's, loaded when it is made

    @classmethod
    def start(cls, cfg: TrainConfig, directory: Path, ckpt: dict | None) -> Replay | None:
        if cfg.buffer_episodes == 0:
            return None
        if ckpt is None or int(ckpt["update"]) <= cfg.demo_updates:  # no DAgger update yet: empty
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
        state = None if ckpt is None else ckpt.get("replay_stream")
        return cls(cfg, buffer, EpisodeAssembler(cfg.num_envs), stream_state=state)

    def training_batch(self, chunk: dict, learner: Learner) -> tuple[dict, dict]:
        """(the learner's batch: chunk + replayed columns, log parts). Replayed episodes are drawn
        before this chunk's finished episodes join the buffer, so nothing is trained on twice in
        one update; their memory comes from the weights this update steps from."""
        if self.cfg.learner_stream == "streamed":
            return self._streamed_batch(chunk, learner)
        fresh = int(np.prod(chunk["done"].shape))
        episodes = self.buffer.sample_frames(replay_frames_for(fresh, self.cfg.replay_ratio))
        columns = replay_columns(
            episodes, learner.policy, learner.encoder, self.cfg.unroll_len, self.cfg.obs_encoding
        )
        self.buffer.extend(self.assembler.add(chunk))
        parts = {"train/replay_frames": float(columns["frames"]) if columns else 0.0}
        return concat_chunks(chunk, columns), parts

    def _streamed_batch(self, chunk: dict, learner: Learner) -> tuple[dict, dict]:
        """The chunk beside stored_columns(cfg) persistent replay columns (EpisodeColumns, drawing
        uniformly from the buffer); none while the buffer is empty."""
        columns = None
        if len(self.buffer) and stored_columns(self.cfg, demos=False) > 0:
            if self.stream is None:
                self.stream = EpisodeColumns(
                    stored_columns(self.cfg, demos=False),
                    self.cfg.unroll_len,
                    self.buffer.draw_uniform,
                    self.buffer.get,
                    learner.policy.memory_size,
                )
                if self.stream_state is not None:
                    self.stream.load_state(self.stream_state)
                    self.stream_state = None
            columns = self.stream.next_chunk()
        self.buffer.extend(self.assembler.add(chunk))
        batch = concat_chunks(chunk, columns)
        if columns is not None:
            live = chunk["done"].shape[1]
            batch["carry"] = [(self.stream, slice(live, live + self.stream.columns))]
        return batch, {"train/replay_frames": float(columns["frames"]) if columns else 0.0}

    def state(self) -> dict | None:
        """The replay stream's state for the checkpoint (None: padded, or not started)."""
        if self.stream is not None:
            return self.stream.state()
        return self.stream_state

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
                need_targets=cfg.aux_target_weight > 0,
                need_subgoals=uses_subgoals(cfg),
                need_keys=cfg.aux_key_weight > 0,
                need_door_places=cfg.aux_door_place_weight > 0,
            )
        except BufferError as e:
            raise ConfigError(str(e)) from None
        self.buffer.rng = np.random.default_rng(buffer_seed(cfg))
        if ckpt is not None and "demo_sampler" in ckpt:
            self.load_state(ckpt["demo_sampler"])
        self.cfg = cfg
        self.pending: tuple | None = None
        self.stream: EpisodeColumns | None = None  # --learner_stream streamed: made at the first batch
        self.stream_state = None if ckpt is None else ckpt.get("demo_sampler", {}).get("stream")

    def state(self) -> dict:
        state = {
            "rng": self.buffer.rng.bit_generator.state,
            "epoch": self.buffer.epoch,
            "epoch_order": list(self.buffer._epoch_order),
        }
        stream = self.stream.state() if self.stream is not None else self.stream_state
        if stream is not None:
            state["stream"] = stream
        return state

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
        if self.cfg.learner_stream == "streamed":
            if self.stream is None:
                self.stream = EpisodeColumns(
                    stored_columns(self.cfg, demos=True),
                    unroll_len,
                    self.buffer.draw_epoch,
                    self.buffer.get,
                    policy.memory_size,
                )
                if self.stream_state is not None:
                    self.stream.load_state(self.stream_state)
                    self.stream_state = None
            chunk = self.stream.next_chunk()
            chunk.update(
                episodes=[],
                slot_states=None,
                teacher_forcing=1.0,
                demo_episodes=int(chunk["done"].sum()),  # demos finished in this batch
                carry=[(self.stream, slice(0, self.stream.columns))],
            )
            return chunk
        episodes = self.buffer.next_epoch_batch(self.cfg.num_envs * unroll_len)
        chunk = replay_columns(episodes, policy, encoder, unroll_len, self.cfg.obs_encoding)
        chunk.update(episodes=[], slot_states=None, teacher_forcing=1.0, demo_episodes=len(episodes))
        return chunk

    def beside(self, batch: dict, extra: dict, learner: Learner) -> tuple[dict, dict]:
        """--demos_in_dagger: a DAgger update's batch (live columns, replayed ones) with the demo
        batch BC would have drawn next beside it; streamed demo columns carry their memory on."""
        self.submit(learner.policy, learner.encoder, self.cfg.unroll_len)
        demos = self.result()
        out, offset = concat_chunks(batch, demos), batch["done"].shape[1]
        carry = [
            *batch.get("carry", ()),
            *((s, slice(offset + c.start, offset + c.stop)) for s, c in demos.get("carry", ())),
        ]
        if carry:
            out["carry"] = carry
        return out, {**extra, "train/demo_frames": float(demos["frames"])}

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
        record_targets=cfg.aux_target_weight > 0,
        record_subgoals=uses_subgoals(cfg),
        bot_undo=cfg.bot_undo,
        record_keys=cfg.aux_key_weight > 0,
        bot_revision=cfg.bot_revision,
        record_doors=cfg.aux_door_weight > 0 or cfg.aux_match_weight > 0,
        record_door_places=cfg.aux_door_place_weight > 0,
    )
