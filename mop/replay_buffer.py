"""Whole labelled episodes for imitation: the DAgger aggregation buffer and the bot-demo store.

An `EpisodeBuffer` keeps episodes from their reset to their end, compactly (per step the uint8
7x7x3 view, direction, carrying, the bot's label; per episode the mission and the layout seed),
bounded to `capacity` episodes (the oldest leave first). Two users:

- online DAgger (`--buffer_episodes N --replay_ratio r`): `EpisodeAssembler` cuts the collector's
  chunks into finished episodes and adds them; every update then trains on the fresh unroll plus
  replayed episodes making up a fraction r of its frames;
- offline behavioural cloning (`--demos N`, demos.py): the buffer holds N bot demos and every
  update trains on a batch of them, epoch after epoch.

Replay is exact for the recurrent memory: a replayed episode starts from its reset with zero
memory; `replay_columns` runs a no-grad pass of the current policy over the episode to get the
memory at every `window`-step boundary, then cuts the episode into windows, each a column of the
training batch starting from that memory, so truncated BPTT over windows sees the same memory the
policy would have had acting through the episode (BabyAI's IL does the same). A label of -1 marks
a step the bot could not label (its failure ends the episode); label_mask = label >= 0.
That is --learner_stream padded; with streamed, mop/streams.py's EpisodeColumns plays the buffer's
episodes (`get`, `draw_uniform`, `draw_epoch`: one id at a time) in persistent columns instead,
memory carried from the previous update, with no padding and no rebuild pass.

On disk (`save` / `load`, one .npz written atomically) the buffer is part of a run's state:
training writes `buffer_<update>.npz` beside each checkpoint (the checkpoint itself stays
`weights_only`-loadable) and `--resume` restores it, sampling RNG included, so a resumed run
replays what the uninterrupted run would have.

    buf = EpisodeBuffer(capacity=1000, task_id="BabyAI-GoToLocal-v0", seed=0)
    assembler = EpisodeAssembler(num_envs=16)
    buf.extend(assembler.add(chunk))                  # finished episodes of a collector chunk
    cols = replay_columns(buf.sample_frames(512), policy, encoder, window=32, obs_encoding="onehot")
"""

from __future__ import annotations

import json
import os
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mop.babyai_env import NO_SUBGOAL, NO_TARGET, door_labels
from mop.collection import STEP_KEYS, empty_chunk
from mop.runs import atomic_write

BUFFER_FORMAT_VERSION = 1


# Per-step arrays an episode may lack (None): dtype and per-step shape, as a buffer file stores them.
OPTIONAL_STEP_ARRAYS = {
    "rooms_visited": (np.int32, ()),
    "target": (np.int8, (2,)),
    "subgoal": (np.int8, ()),
    "key": (np.int8, (2,)),
    "door_place": (np.int8, (2,)),
}


class BufferError(ValueError):
    """A buffer file that cannot be used here (another level, a newer format, damaged)."""


@dataclass
class StoredEpisode:
    """One labelled episode from its reset: T steps."""

    image: np.ndarray  # (T, 7, 7, 3) uint8
    direction: np.ndarray  # (T,) uint8
    carrying: np.ndarray  # (T,) uint8 0/1
    label: np.ndarray  # (T,) int8, -1 = no label (the bot failed at that step)
    mission: str
    seed: int  # the layout seed it was played on
    rooms_visited: np.ndarray | None = None  # (T,) int32 bitmask of rooms stood in so far; None: not recorded
    target: np.ndarray | None = None  # (T, 2) int8 the bot's goal (ahead, right), collection.NO_TARGET: none
    subgoal: np.ndarray | None = None  # (T,) int8 what the bot is doing (SafeBot.subgoal), NO_SUBGOAL: none
    key: np.ndarray | None = None  # (T, 2) int8 where the seen key lies (KeyTracker), NO_TARGET: none
    door_place: np.ndarray | None = None  # (T, 2) int8 where the seen locked door lies (DoorTracker)

    def __len__(self) -> int:
        return len(self.label)

    def equals(self, other: StoredEpisode) -> bool:
        return (
            self.mission == other.mission
            and self.seed == other.seed
            and all(
                np.array_equal(getattr(self, k), getattr(other, k))
                for k in ("image", "direction", "carrying", "label")
            )
            and all(
                (getattr(self, k) is None) == (getattr(other, k) is None)
                and (getattr(self, k) is None or np.array_equal(getattr(self, k), getattr(other, k)))
                for k in OPTIONAL_STEP_ARRAYS
            )
        )


class EpisodeBuffer:
    """At most `capacity` whole episodes, oldest evicted first; sampling has its own RNG."""

    def __init__(self, capacity: int, task_id: str, seed: int = 0):
        if capacity <= 0:
            raise ValueError(f"buffer capacity must be positive, got {capacity}")
        self.capacity, self.task_id = int(capacity), task_id
        self.episodes: deque[StoredEpisode] = deque()
        self.frames = 0
        self.added = 0  # episodes ever added (evicted ones included)
        self.rng = np.random.default_rng(seed)
        self._epoch_order: list[int] = []  # for epoch-wise passes (offline BC)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.episodes)

    def extend(self, episodes: list[StoredEpisode]) -> None:
        for ep in episodes:
            if len(ep) == 0:
                continue
            self.episodes.append(ep)
            self.frames += len(ep)
            self.added += 1
            while len(self.episodes) > self.capacity:
                self.frames -= len(self.episodes.popleft())

    # ------------------------------------------------------------------ sampling

    def sample_frames(self, frames: int) -> list[StoredEpisode]:
        """Episodes drawn uniformly (with replacement) until they hold at least `frames` steps;
        none when the buffer is empty or frames <= 0."""
        chosen: list[StoredEpisode] = []
        total = 0
        while self.episodes and total < frames:
            ep = self.episodes[int(self.rng.integers(len(self.episodes)))]
            chosen.append(ep)
            total += len(ep)
        return chosen

    def next_epoch_batch(self, frames: int) -> list[StoredEpisode]:
        """The next episodes of a shuffled pass over the buffer, at least `frames` steps (fewer at
        the end of the buffer's last pass only if it is smaller than `frames`); a new pass starts,
        reshuffled, when one is used up (`epoch` counts the passes started)."""
        chosen: list[StoredEpisode] = []
        total = 0
        while self.episodes and total < frames:
            if not self._epoch_order:
                self._epoch_order = self.rng.permutation(len(self.episodes)).tolist()[::-1]
                self.epoch += 1
            ep = self.episodes[self._epoch_order.pop()]
            chosen.append(ep)
            total += len(ep)
            if len(chosen) >= len(self.episodes) and not self._epoch_order:
                break  # a buffer smaller than one batch: one whole pass per batch
        return chosen

    # ------------------------------------------------------------------ one episode at a time (streams)

    def get(self, episode_id: int) -> StoredEpisode | None:
        """The episode with this id (ids count every episode ever added, from 0), or None once
        it has been evicted."""
        index = int(episode_id) - (self.added - len(self.episodes))
        return self.episodes[index] if 0 <= index < len(self.episodes) else None

    def draw_uniform(self) -> int:
        """The id of an episode drawn uniformly (sample_frames' draw, one at a time)."""
        if not self.episodes:
            raise ValueError("draw from an empty episode buffer")
        return self.added - len(self.episodes) + int(self.rng.integers(len(self.episodes)))

    def draw_epoch(self) -> int:
        """The id of the next episode of a shuffled pass (next_epoch_batch's order, one at a time)."""
        if not self.episodes:
            raise ValueError("draw from an empty episode buffer")
        if not self._epoch_order:
            self._epoch_order = self.rng.permutation(len(self.episodes)).tolist()[::-1]
            self.epoch += 1
        return self.added - len(self.episodes) + self._epoch_order.pop()

    # ------------------------------------------------------------------ copies (LMC forks)

    def copy(self, seed: int | None = None) -> EpisodeBuffer:
        """An independent buffer with the same episodes (episodes are immutable and shared);
        `seed` gives the copy its own sampling stream (None: continue this one's)."""
        other = EpisodeBuffer(self.capacity, self.task_id)
        other.episodes = deque(self.episodes)
        other.frames, other.added, other.epoch = self.frames, self.added, self.epoch
        other._epoch_order = list(self._epoch_order)
        if seed is None:
            other.rng.bit_generator.state = self.rng.bit_generator.state
        else:
            other.rng = np.random.default_rng(seed)
        return other

    def split(self, seeds: tuple[int, int]) -> tuple[EpisodeBuffer, EpisodeBuffer]:
        """Two disjoint halves (every other episode, oldest first), each with the full capacity."""
        halves = []
        for k, seed in enumerate(seeds):
            half = EpisodeBuffer(self.capacity, self.task_id, seed)
            half.extend(list(self.episodes)[k::2])
            halves.append(half)
        return halves[0], halves[1]

    # ------------------------------------------------------------------ persistence

    def state_arrays(self) -> dict[str, np.ndarray]:
        eps = list(self.episodes)
        missions = sorted({ep.mission for ep in eps})
        index = {m: i for i, m in enumerate(missions)}

        def cat(key: str, dtype: Any, shape: tuple) -> np.ndarray:
            return (
                np.concatenate([getattr(ep, key) for ep in eps]).astype(dtype)
                if eps
                else np.zeros(shape, dtype)
            )

        meta = {
            "format_version": BUFFER_FORMAT_VERSION,
            "kind": "episode_buffer",
            "task_id": self.task_id,
            "capacity": self.capacity,
            "added": self.added,
            "epoch": self.epoch,
            "epoch_order": self._epoch_order,
            "rng": self.rng.bit_generator.state,
        }
        return {
            "meta": np.array(json.dumps(meta)),
            "lengths": np.array([len(ep) for ep in eps], np.int64),
            "seeds": np.array([ep.seed for ep in eps], np.int64),
            "mission_index": np.array([index[ep.mission] for ep in eps], np.int64),
            "missions": np.array(missions, dtype=str),
            "image": cat("image", np.uint8, (0, 7, 7, 3)),
            "direction": cat("direction", np.uint8, (0,)),
            "carrying": cat("carrying", np.uint8, (0,)),
            "label": cat("label", np.int8, (0,)),
            **{
                key: cat(key, dtype, (0, *shape))
                for key, (dtype, shape) in OPTIONAL_STEP_ARRAYS.items()
                if eps and all(getattr(ep, key) is not None for ep in eps)
            },
        }

    def save(self, path: str | os.PathLike, **extra_meta: Any) -> Path:
        """Write atomically (a reader never sees half a buffer, a full disk leaves the old file)."""
        arrays = self.state_arrays()
        if extra_meta:
            meta = json.loads(str(arrays["meta"]))
            meta.update(extra_meta)
            arrays["meta"] = np.array(json.dumps(meta))

        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, **arrays)

        return atomic_write(path, write)

    @classmethod
    def load(cls, path: str | os.PathLike, task_id: str | None = None) -> tuple[EpisodeBuffer, dict]:
        """(buffer, meta) from `save`'s file; refuses another level or format in one line."""
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
            meta = json.loads(str(arrays["meta"]))
        except FileNotFoundError:
            raise
        except Exception as e:  # zip/npz/json damage: one line
            raise BufferError(
                f"{str(path)!r} is not a readable episode buffer ({type(e).__name__})"
            ) from None
        if meta.get("kind") not in ("episode_buffer", "demos"):
            raise BufferError(f"{str(path)!r} is not an episode buffer (kind {meta.get('kind')!r})")
        version = int(meta.get("format_version", -1))
        if version != BUFFER_FORMAT_VERSION:
            raise BufferError(
                f"{str(path)!r} has buffer format version {version}; this code reads version {BUFFER_FORMAT_VERSION}"
            )
        if task_id is not None and meta["task_id"] != task_id:
            raise BufferError(f"{str(path)!r} holds episodes of {meta['task_id']}, not {task_id}")
        buf = cls(int(meta["capacity"]), meta["task_id"])
        ends = np.cumsum(arrays["lengths"])
        starts = ends - arrays["lengths"]
        missions = [str(m) for m in arrays["missions"]]
        if len(ends) and ends[-1] != len(arrays["label"]):
            raise BufferError(f"{str(path)!r} is inconsistent (episode lengths do not match its steps)")
        for k, (a, b) in enumerate(zip(starts, ends)):
            buf.episodes.append(
                StoredEpisode(
                    arrays["image"][a:b],
                    arrays["direction"][a:b],
                    arrays["carrying"][a:b],
                    arrays["label"][a:b],
                    missions[int(arrays["mission_index"][k])],
                    int(arrays["seeds"][k]),
                    **{k: arrays[k][a:b] if k in arrays else None for k in OPTIONAL_STEP_ARRAYS},
                )
            )
        buf.frames = int(arrays["lengths"].sum())
        buf.added, buf.epoch = int(meta["added"]), int(meta.get("epoch", 0))
        buf._epoch_order = [int(i) for i in meta.get("epoch_order", [])]
        buf.rng.bit_generator.state = meta["rng"]
        return buf, meta


# ----------------------------------------------------------------------------- chunks -> episodes


class EpisodeAssembler:
    """Cuts consecutive collector chunks into whole episodes, per env. Every env must be at an
    episode start when the assembler is made (a new run, or a resumed one: the collector starts
    fresh episodes); an episode is emitted at the chunk step where its `done` is set."""

    def __init__(self, num_envs: int):
        self.partial: list[list[dict]] = [[] for _ in range(num_envs)]

    def add(self, chunk: dict) -> list[StoredEpisode]:
        done = chunk["done"]
        T, n = done.shape
        if n != len(self.partial):
            raise ValueError(f"chunk has {n} envs, the assembler {len(self.partial)}")
        seeds = {(t, ep.env_index): ep.seed for t, ep in chunk["episodes"]}
        finished: list[tuple[int, int, StoredEpisode]] = []
        for k in range(n):
            start = 0
            ends = np.flatnonzero(done[:, k]).tolist()
            segments = [(end, True) for end in ends]
            if not ends or ends[-1] != T - 1:
                segments.append((T - 1, False))  # an episode still running at the chunk's end
            for end, finishes in segments:
                stop = end + 1
                if stop > start:
                    self.partial[k].append(
                        {
                            "image": chunk["image"][start:stop, k],
                            "direction": chunk["direction"][start:stop, k],
                            "carrying": chunk["carrying"][start:stop, k],
                            "label": np.where(
                                chunk["label_mask"][start:stop, k], chunk["label"][start:stop, k], -1
                            ),
                            "mission": chunk["missions"][int(chunk["mission_index"][start, k])],
                            "rooms_visited": chunk["rooms_visited"][start:stop, k],
                            "target": chunk["target"][start:stop, k],
                            "subgoal": chunk["subgoal"][start:stop, k],
                            "key": chunk["key"][start:stop, k],
                            "door_place": chunk["door_place"][start:stop, k],
                        }
                    )
                if finishes:
                    pieces, self.partial[k] = self.partial[k], []
                    finished.append((end, k, _join(pieces, seeds.get((end, k), -1))))
                start = stop
        finished.sort(key=lambda x: (x[0], x[1]))  # in (step, env) order, like the chunk's episodes
        return [ep for _, _, ep in finished]


def _join(pieces: list[dict], seed: int) -> StoredEpisode:
    rooms = np.concatenate([p["rooms_visited"] for p in pieces]).astype(np.int32)
    target = np.concatenate([p["target"] for p in pieces]).astype(np.int8)
    subgoal = np.concatenate([p["subgoal"] for p in pieces]).astype(np.int8)
    key = np.concatenate([p["key"] for p in pieces]).astype(np.int8)
    door_place = np.concatenate([p["door_place"] for p in pieces]).astype(np.int8)
    return StoredEpisode(
        np.concatenate([p["image"] for p in pieces]).astype(np.uint8),
        np.concatenate([p["direction"] for p in pieces]).astype(np.uint8),
        np.concatenate([p["carrying"] for p in pieces]).astype(np.uint8),
        np.concatenate([p["label"] for p in pieces]).astype(np.int8),
        pieces[0]["mission"],
        int(seed),
        rooms if rooms.min(initial=0) >= 0 else None,  # -1: not recorded (more rooms than a bitmask holds)
        target if (target != NO_TARGET).any() else None,  # live collection records none (collection.py)
        subgoal if (subgoal != NO_SUBGOAL).any() else None,  # recorded only when used (uses_subgoals)
        key if (key != NO_TARGET).any() else None,  # recorded only when used (--aux_key_weight)
        door_place if (door_place != NO_TARGET).any() else None,  # only when used (--aux_door_place_weight)
    )


# ----------------------------------------------------------------------------- replay


def episodes_as_chunk(episodes: list[StoredEpisode], length: int | None = None) -> dict:
    """Episodes side by side as a (L, B) chunk, padded after each episode's end (label -1,
    done set at the last real step and on padding, so memory restarts and padding is ignored)."""
    L = max(len(ep) for ep in episodes) if length is None else length
    B = len(episodes)
    missions = sorted({ep.mission for ep in episodes})
    index = {m: i for i, m in enumerate(missions)}
    chunk: dict[str, Any] = {**empty_chunk(L, B, done=True), "missions": missions}
    for b, ep in enumerate(episodes):
        n = len(ep)
        chunk["image"][:n, b] = ep.image
        chunk["direction"][:n, b] = ep.direction
        chunk["carrying"][:n, b] = ep.carrying
        chunk["mission_index"][:, b] = index[ep.mission]
        chunk["label"][:n, b] = np.maximum(ep.label, 0)
        chunk["label_mask"][:n, b] = ep.label >= 0
        chunk["done"][: n - 1, b] = False
        for key in OPTIONAL_STEP_ARRAYS:
            if getattr(ep, key) is not None:
                chunk[key][:n, b] = getattr(ep, key)
        chunk["door"][:n, b] = door_labels(ep.image)  # from its views: every episode has them
    return chunk


_COLUMN_KEYS = ("mission_index", *STEP_KEYS)


@torch.no_grad()
def replay_columns(
    episodes: list[StoredEpisode],
    policy: torch.nn.Module,
    encoder: torch.nn.Module,
    window: int,
    obs_encoding: str,
) -> dict | None:
    """The episodes cut into `window`-step columns, each with the memory the current policy has
    at that point of its episode (a no-grad pass from the reset), as a chunk the learner trains on
    like a collector's: keys image, direction, carrying, mission_index, label, label_mask, done
    (window, C), memory (C, M), missions. None for no episodes."""
    from mop.babyai_env import encode_obs

    if not episodes:
        return None
    L = max(len(ep) for ep in episodes)
    n_windows = -(-L // window)
    full = episodes_as_chunk(episodes, n_windows * window)
    was_training = (policy.training, encoder.training)
    policy.eval()
    encoder.eval()
    device = next(policy.parameters()).device  # the pass runs where the learner is

    def tensor(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array)).to(device)

    lang_all = encoder(full["missions"])
    memory = policy.init_memory(len(episodes), device)
    starts = []  # memory at each window start, (B, M) per window
    for w in range(n_windows):
        starts.append(memory)
        if w == n_windows - 1:
            break
        s = slice(w * window, (w + 1) * window)
        obs = encode_obs(
            tensor(full["image"][s]), tensor(full["direction"][s]), tensor(full["carrying"][s]), obs_encoding
        )
        out = policy.forward_sequence(
            obs, lang_all[tensor(full["mission_index"][s])], memory, tensor(full["done"][s])
        )
        memory = out.memory
    policy.train(was_training[0])
    encoder.train(was_training[1])
    # Columns: (window w, episode b) pairs that hold at least one real step.
    cols = [(w, b) for w in range(n_windows) for b, ep in enumerate(episodes) if w * window < len(ep)]
    chunk: dict[str, Any] = {"missions": full["missions"]}
    for key in _COLUMN_KEYS:
        arr = full[key].reshape(n_windows, window, len(episodes), *full[key].shape[2:])
        chunk[key] = np.stack([arr[w, :, b] for w, b in cols], axis=1)
    # on the CPU, as a collector's chunk: chunks are device-free, the learner moves what it trains on
    chunk["memory"] = torch.stack([starts[w][b] for w, b in cols]).cpu()
    chunk["frames"] = int(sum(len(ep) for ep in episodes))
    return chunk


def concat_chunks(a: dict, b: dict | None) -> dict:
    """The learner's batch: chunk `a` (a collector's) and replay columns `b` side by side (same
    window length), missions re-indexed; everything else of `a` (episodes, slot states) kept."""
    if b is None:
        return a
    out = dict(a)
    missions = list(a["missions"])
    where = {m: i for i, m in enumerate(missions)}
    remap = np.array([where.setdefault(m, len(where)) for m in b["missions"]], np.int64)
    missions.extend(m for m in b["missions"] if m not in a["missions"])
    out["missions"] = missions
    for key in STEP_KEYS:
        out[key] = np.concatenate([a[key], b[key]], axis=1)
    out["mission_index"] = np.concatenate([a["mission_index"], remap[b["mission_index"]]], axis=1)
    out["memory"] = torch.cat([a["memory"], b["memory"]])
    return out


def replay_frames_for(fresh_frames: int, replay_ratio: float) -> int:
    """Replayed steps so that they make up `replay_ratio` of an update's frames."""
    if replay_ratio <= 0:
        return 0
    return int(round(fresh_frames * replay_ratio / (1.0 - replay_ratio)))
