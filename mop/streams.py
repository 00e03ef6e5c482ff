"""What the learner eats: persistent columns of labelled steps, each playing episodes back to back.

Live collection already feeds the learner this way: each env is a column, its memory carried from
one update to the next and zeroed where an episode starts (`forward_sequence` restarts the memory
after every step whose `done` is set). `EpisodeColumns` does the same for stored episodes (the
DAgger buffer's replayed episodes, bot demos, any sequence of `StoredEpisode`s): `columns`
columns, each plays one episode after another with no padding, and each update takes the next
`unroll_len` steps of every column. The memory a column starts an update from is the memory the
learner's previous pass ended it with (`carry`), so no no-grad pass rebuilds it. The price is
staleness: that memory was computed with the weights of the update before (one optimizer step
old), where the padded path (replay_buffer.replay_columns) recomputes it with the current weights.

A source is two callables: `draw()` -> the id of the next episode a column plays (uniform draws
from the DAgger buffer, shuffled passes over demos) and `get(id)` -> that episode, or None when it
is gone (evicted from the buffer); a column keeps the episode it plays, and `state()` stores the
ones its source no longer holds, so a resumed stream continues exactly.

    stream = EpisodeColumns(64, 32, draw=buffer.draw_uniform, get=buffer.get, memory_size=480)
    chunk = stream.next_chunk()        # (32, 64) steps, memory (64, M), the learner's chunk format
    ...learner.step(chunk)...; stream.carry(learner.end_memory)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from mop.babyai_env import door_labels
from mop.collection import empty_chunk
from mop.replay_buffer import OPTIONAL_STEP_ARRAYS, StoredEpisode

_EPISODE_ARRAYS = ("image", "direction", "carrying", "label")


class EpisodeColumns:
    """`columns` persistent columns of stored episodes, `unroll_len` steps per chunk."""

    def __init__(
        self,
        columns: int,
        unroll_len: int,
        draw: Callable[[], int],
        get: Callable[[int], StoredEpisode | None],
        memory_size: int,
    ):
        if columns < 1 or unroll_len < 1:
            raise ValueError(f"columns and unroll_len must be >= 1, got {columns} and {unroll_len}")
        self.columns, self.unroll_len = int(columns), int(unroll_len)
        self.draw, self.get = draw, get
        self.episode_ids = [-1] * self.columns  # -1: the column starts a new episode next
        self.offsets = [0] * self.columns
        self.playing: list[StoredEpisode | None] = [None] * self.columns
        self.doors: list[np.ndarray] = [np.zeros(0, np.int8)] * self.columns  # door_labels of `playing`
        self.memory = torch.zeros(self.columns, memory_size)  # (C, M) at the next chunk's first step

    def _next_episode(self, c: int) -> StoredEpisode:
        while True:
            episode_id = int(self.draw())
            episode = self.get(episode_id)
            if episode is not None and len(episode) > 0:
                break
        self.episode_ids[c], self.offsets[c], self.playing[c] = episode_id, 0, episode
        self.doors[c] = door_labels(episode.image)  # once per episode, from its views
        return episode

    def next_chunk(self) -> dict:
        """The next unroll_len steps of every column as a chunk: image, direction, carrying,
        mission_index, label, label_mask, done, rooms_visited (T, C), target (T, C, 2), subgoal (T, C),
        missions, memory (C, M), frames (T x C: every step is real). `done` is set at each episode's last step, so the
        memory restarts at the next episode's first."""
        T, C = self.unroll_len, self.columns
        chunk: dict[str, Any] = empty_chunk(T, C)
        missions: dict[str, int] = {}
        for c in range(C):
            t = 0
            while t < T:
                episode = self.playing[c]
                if episode is None or self.offsets[c] >= len(episode):
                    episode = self._next_episode(c)
                a = self.offsets[c]
                n = min(len(episode) - a, T - t)
                rows = slice(t, t + n)
                chunk["image"][rows, c] = episode.image[a : a + n]
                chunk["direction"][rows, c] = episode.direction[a : a + n]
                chunk["carrying"][rows, c] = episode.carrying[a : a + n]
                label = episode.label[a : a + n]
                chunk["label"][rows, c] = np.maximum(label, 0)
                chunk["label_mask"][rows, c] = label >= 0
                chunk["mission_index"][rows, c] = missions.setdefault(episode.mission, len(missions))
                for key in OPTIONAL_STEP_ARRAYS:
                    if getattr(episode, key) is not None:
                        chunk[key][rows, c] = getattr(episode, key)[a : a + n]
                chunk["door"][rows, c] = self.doors[c][a : a + n]
                self.offsets[c] = a + n
                if self.offsets[c] == len(episode):
                    chunk["done"][t + n - 1, c] = True  # the episode ends: the next starts from zero memory
                t += n
        chunk["missions"] = list(missions)
        chunk["memory"] = self.memory.clone()
        chunk["frames"] = T * C
        return chunk

    def carry(self, memory: torch.Tensor) -> None:
        """The memory the learner's pass ended the last chunk with (C, M): where the next chunk
        starts (forward_sequence already zeroed the columns whose episode ended at its last step)."""
        if tuple(memory.shape) != tuple(self.memory.shape):
            raise ValueError(
                f"carry: memory of shape {tuple(memory.shape)}, the stream holds {tuple(self.memory.shape)}"
            )
        self.memory = memory.detach().to("cpu", torch.float32).clone()

    # ------------------------------------------------------------------ resume

    def state(self) -> dict:
        """Plain types and tensors (a checkpoint's): each column's episode id and offset, the
        carried memory, and the episodes in play that the source no longer holds."""
        held = {}
        for episode_id, episode in zip(self.episode_ids, self.playing):
            if episode is not None and episode_id not in held and self.get(episode_id) is not episode:
                held[episode_id] = _episode_tensors(episode)
        return {
            "columns": self.columns,
            "unroll_len": self.unroll_len,
            "episode_ids": list(self.episode_ids),
            "offsets": list(self.offsets),
            "memory": self.memory.clone(),
            "held": held,
        }

    def load_state(self, state: dict) -> None:
        if int(state["columns"]) != self.columns or int(state["unroll_len"]) != self.unroll_len:
            raise ValueError(
                f"stream state of {state['columns']} columns x {state['unroll_len']} steps, "
                f"this stream has {self.columns} x {self.unroll_len}"
            )
        if tuple(state["memory"].shape) != tuple(self.memory.shape):
            raise ValueError(
                f"stream memory of shape {tuple(state['memory'].shape)}, expected {tuple(self.memory.shape)}"
            )
        held = {int(k): _episode_from_tensors(v) for k, v in state["held"].items()}
        self.episode_ids = [int(i) for i in state["episode_ids"]]
        self.offsets = [int(o) for o in state["offsets"]]
        self.playing = [None if i < 0 else held[i] if i in held else self.get(i) for i in self.episode_ids]
        if any(p is None and i >= 0 for p, i in zip(self.playing, self.episode_ids)):
            raise ValueError("stream state names an episode its source does not hold")
        self.doors = [np.zeros(0, np.int8) if p is None else door_labels(p.image) for p in self.playing]
        self.memory = state["memory"].detach().to("cpu", torch.float32).clone()


class ShuffledPasses:
    """Draws for a fixed sequence of n episodes (a demo store): shuffled pass after pass, as
    EpisodeBuffer.draw_epoch does for a buffer. `draw` is EpisodeColumns' source of ids; the state
    (RNG, passes started, what is left of this pass) is plain types, for a checkpoint.

        passes = ShuffledPasses(len(store), seed=[run_seed, 7])
        stream = EpisodeColumns(64, 80, passes.draw, store.__getitem__, memory_size=480)
    """

    def __init__(self, n: int, seed: Any = 0):
        if n < 1:
            raise ValueError(f"no episodes to draw from (n = {n})")
        self.n, self.rng = int(n), np.random.default_rng(seed)
        self.order: list[int] = []
        self.epoch = 0

    def draw(self) -> int:
        if not self.order:
            self.order = self.rng.permutation(self.n).tolist()[::-1]
            self.epoch += 1
        return self.order.pop()

    def state(self) -> dict:
        return {
            "n": self.n,
            "rng": self.rng.bit_generator.state,
            "epoch": self.epoch,
            "order": list(self.order),
        }

    def load_state(self, state: dict) -> None:
        if int(state["n"]) != self.n:
            raise ValueError(f"draw state of {state['n']} episodes, this source has {self.n}")
        self.rng.bit_generator.state = state["rng"]
        self.epoch, self.order = int(state["epoch"]), [int(i) for i in state["order"]]


def _tensor(array: np.ndarray) -> torch.Tensor:
    """A tensor of its own: the demo store's episodes are read-only memory maps, which torch will
    not wrap (and must never write through), so those are copied; in-memory arrays are shared."""
    array = np.ascontiguousarray(array)
    return torch.from_numpy(array if array.flags.writeable else array.copy())


def _episode_tensors(episode: StoredEpisode) -> dict:
    out = {k: _tensor(getattr(episode, k)) for k in _EPISODE_ARRAYS}
    out.update(mission=episode.mission, seed=int(episode.seed))
    for key in OPTIONAL_STEP_ARRAYS:
        if getattr(episode, key) is not None:
            out[key] = _tensor(getattr(episode, key))
    return out


def _episode_from_tensors(d: dict) -> StoredEpisode:
    return StoredEpisode(
        *(d[k].numpy() for k in _EPISODE_ARRAYS),
        mission=str(d["mission"]),
        seed=int(d["seed"]),
        **{k: d[k].numpy() if k in d else None for k in OPTIONAL_STEP_ARRAYS},
    )
