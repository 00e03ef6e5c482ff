"""A demo store at BabyAI's scale: labelled bot episodes on disk, memory-mapped, appendable.

One folder per (level, demo set, step limit) holds the solved demos in candidate order, in chunks
of fixed-width .npy arrays (no pickles) and one `manifest.json`:

- per step (`c<NNNNN>.image.npy` (S, 7, 7, 3) uint8, `.direction.npy` (S,) uint8, `.carrying.npy`
  (S,) uint8, `.label.npy` (S,) int8): what `replay_buffer.StoredEpisode` holds per step; in a
  store whose manifest says `"targets": true` (every store made since they were recorded) also
  `.target.npy` (S, 2) int8, where the bot was heading (babyai_env.SafeBot.target, ahead and right
  of the agent; collection.NO_TARGET: nowhere), which `--aux_target_weight` trains on; in one whose
  manifest says `"subgoals": true` also `.subgoal.npy` (S,) int8, what the bot was doing
  (babyai_env.SafeBot.subgoal, an index into SUBGOAL_KINDS), which `--aux_subgoal_weight` trains
  on; in one whose manifest says `"keys": true` also `.key.npy` (S, 2) int8, where the nearest key
  of a locked door's colour the agent had seen lay (babyai_env.KeyTracker, ahead and right;
  NO_TARGET: none), which `--aux_key_weight` trains on; in one whose manifest says
  `"door_places": true` also `.door_place.npy` (S, 2) int8, where the nearest still-locked door the
  agent had seen lay (babyai_env.DoorTracker), which `--aux_door_place_weight` trains on. A store
  without one (made before it was recorded) stays readable and is extended without it;
- per episode (`c<NNNNN>.episodes.npy` (E, 4) int64): offset in the chunk, length, layout seed,
  mission index into the manifest's `missions` list;
- the manifest: format version, kind, level (`task_id`), observation encoding, demo set, step
  limit, counts (episodes, frames, next candidate, skips) and per chunk its files' sizes and sha256.

A chunk is committed by writing its files (each atomically) and then rewriting the manifest
atomically, so a writer killed at any point leaves the store as of its last commit: files no
manifest names are an uncommitted tail, overwritten when generation resumes from the manifest's
`next_candidate`, i.e. from the same layout seeds. Reading memory-maps each chunk
(`np.load(mmap_mode="r")`), checks its files' sizes when the store is opened (truncation) and its
checksums the first time it is touched (`verify()` checks all), so 100 K+ episodes never sit in RAM.
Torch-free (StoredEpisode is imported from mop.replay_buffer only when an episode is built).

    store = DemoStore.create("demos/BabyAI-Unlock-v0/set_0", "BabyAI-Unlock-v0", demo_seed=0)
    store.append(episodes, next_candidate=k, skipped={"bot_failure": 0, "unsolved": 3})
    store = DemoStore.open("demos/BabyAI-Unlock-v0/set_0", task_id="BabyAI-Unlock-v0")
    ep = store.episode(17)              # a StoredEpisode whose arrays are views of the memory map
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mop.runs import atomic_write, atomic_write_text

STORE_FORMAT_VERSION = 2  # 1 was the single-.npz EpisodeBuffer cache (mop/bot_demos.demo_path)
STORE_KIND = "demo_store"
OBSERVATION = "minigrid_image_uint8_7x7x3+direction+carrying"  # what a step stores, before encoding
MANIFEST = "manifest.json"
STEP_ARRAYS = {"image": (np.uint8, (7, 7, 3)), "direction": (np.uint8, ()), "carrying": (np.uint8, ())}
STEP_ARRAYS["label"] = (np.int8, ())
EPISODE_COLUMNS = ("offset", "length", "seed", "mission")  # columns of c<N>.episodes.npy, int64


class DemoStoreError(ValueError):
    """A store that cannot be used as asked; the message names the file or key."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# Per-step arrays a store holds when its manifest's flag says so: name -> (flag, dtype, step shape).
EXTRA_ARRAYS = {
    "target": ("targets", np.int8, (2,)),
    "subgoal": ("subgoals", np.int8, ()),
    "key": ("keys", np.int8, (2,)),
    "door_place": ("door_places", np.int8, (2,)),
}


def _chunk_files(index: int, extras: dict) -> dict[str, str]:
    names = (*STEP_ARRAYS, *extras, "episodes")
    return {name: f"c{index:05d}.{name}.npy" for name in names}


class DemoStore(Sequence):
    """The demos of one folder; a Sequence of StoredEpisode (store[i] == store.episode(i))."""

    def __init__(self, root: Path, manifest: dict):
        self.root, self.manifest = Path(root), manifest
        chunks = manifest["chunks"]
        self._ends = np.cumsum([c["episodes"] for c in chunks]).astype(np.int64)
        self._arrays: dict[int, dict[str, np.ndarray]] = {}

    # ------------------------------------------------------------------ opening

    @classmethod
    def create(
        cls,
        root: str | Path,
        task_id: str,
        demo_seed: int = 0,
        max_steps: int | None = None,
        targets: bool = True,
        subgoals: bool = True,
        keys: bool = True,
        door_places: bool = True,
    ) -> DemoStore:
        """A new empty store (its manifest written now); DemoStoreError if `root` holds one.
        targets, subgoals, keys, door_places: it stores each step's bot target, subgoal, seen-key
        place, seen-door place (False: a store as made before they were)."""
        root = Path(root)
        if (root / MANIFEST).exists():
            raise DemoStoreError(f"{str(root / MANIFEST)!r} exists: open it (DemoStore.open) or move it")
        manifest = {
            "format_version": STORE_FORMAT_VERSION,
            "kind": STORE_KIND,
            "task_id": task_id,
            "observation": OBSERVATION,
            "demo_seed": int(demo_seed),
            "max_steps": None if max_steps is None else int(max_steps),
            "targets": bool(targets),
            "subgoals": bool(subgoals),
            "keys": bool(keys),
            "door_places": bool(door_places),
            "episodes": 0,
            "frames": 0,
            "next_candidate": 0,
            "skipped": {"bot_failure": 0, "unsolved": 0},
            "generation_s": 0.0,
            "missions": [],
            "chunks": [],
        }
        root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(root / MANIFEST, json.dumps(manifest, indent=1))
        return cls(root, manifest)

    @classmethod
    def open(
        cls,
        root: str | Path,
        task_id: str | None = None,
        observation: str = OBSERVATION,
        demo_seed: int | None = None,
        max_steps: Any = "any",
    ) -> DemoStore:
        """The store in `root`, checked against what is asked (level, observation encoding, demo set,
        step limit; None / "any": not checked), its format and every committed file's size."""
        root = Path(root)
        path = root / MANIFEST
        try:
            manifest = json.loads(path.read_text())
        except FileNotFoundError:
            raise DemoStoreError(f"{str(path)!r} does not exist: no demo store there") from None
        except (OSError, ValueError) as e:
            raise DemoStoreError(f"{str(path)!r} is not a readable demo store manifest ({e})") from None
        if not isinstance(manifest, dict) or manifest.get("kind") != STORE_KIND:
            raise DemoStoreError(
                f"{str(path)!r} is not a demo store manifest (kind {manifest.get('kind')!r})"
            )
        version = manifest.get("format_version")
        if version != STORE_FORMAT_VERSION:
            older = isinstance(version, int) and version < STORE_FORMAT_VERSION
            raise DemoStoreError(
                f"{str(path)!r} has format_version {version!r}, this code reads {STORE_FORMAT_VERSION}"
                + ("; it was written by an older format: regenerate it" if older else "")
            )
        asked = {"task_id": task_id, "observation": observation, "demo_seed": demo_seed}
        if max_steps != "any":
            asked["max_steps"] = max_steps
        for key, value in asked.items():
            if value is not None and manifest.get(key) != value:
                raise DemoStoreError(
                    f"{str(path)!r} holds {key} {manifest.get(key)!r}, not {value!r}; move it or use another --demos_dir"
                )
        store = cls(root, manifest)
        store._check_sizes()
        return store

    def _check_sizes(self) -> None:
        total_e = total_s = 0
        for chunk in self.manifest["chunks"]:
            for info in chunk["files"].values():
                f = self.root / info["name"]
                size = f.stat().st_size if f.exists() else None
                if size != info["bytes"]:
                    raise DemoStoreError(
                        f"{str(f)!r} is truncated or missing ({size} bytes, the manifest says {info['bytes']})"
                    )
            total_e += chunk["episodes"]
            total_s += chunk["frames"]
        if (total_e, total_s) != (self.manifest["episodes"], self.manifest["frames"]):
            raise DemoStoreError(f"{str(self.root / MANIFEST)!r}: its chunks do not add up to its counts")

    # ------------------------------------------------------------------ reading

    def __len__(self) -> int:
        return int(self.manifest["episodes"])

    @property
    def targets(self) -> bool:
        """Whether each step's bot target is stored (stores made before they were: False)."""
        return bool(self.manifest.get("targets", False))

    @property
    def subgoals(self) -> bool:
        """Whether each step's bot subgoal is stored (stores made before they were: False)."""
        return bool(self.manifest.get("subgoals", False))

    @property
    def keys(self) -> bool:
        """Whether each step's seen-key place is stored (stores made before they were: False)."""
        return bool(self.manifest.get("keys", False))

    @property
    def door_places(self) -> bool:
        """Whether each step's seen-door place is stored (stores made before they were: False)."""
        return bool(self.manifest.get("door_places", False))

    @property
    def frames(self) -> int:
        return int(self.manifest["frames"])

    def frames_of(self, n: int) -> int:
        """Steps in the first n episodes."""
        if n <= 0:
            return 0
        k = int(np.searchsorted(self._ends, n - 1, side="right"))
        before = int(self._ends[k - 1]) if k else 0
        eps = self._chunk(k)["episodes"]
        in_chunk = n - before
        return sum(c["frames"] for c in self.manifest["chunks"][:k]) + int(eps[:in_chunk, 1].sum())

    def _chunk(self, k: int) -> dict[str, np.ndarray]:
        if k not in self._arrays:
            chunk = self.manifest["chunks"][k]
            arrays = {}
            for name, info in chunk["files"].items():
                f = self.root / info["name"]
                if _sha256(f) != info["sha256"]:
                    raise DemoStoreError(f"{str(f)!r} does not match its checksum in the manifest: damaged")
                arrays[name] = np.load(f, mmap_mode="r", allow_pickle=False)
            self._arrays[k] = arrays
        return self._arrays[k]

    def episode(self, i: int):  # -> replay_buffer.StoredEpisode
        from mop.replay_buffer import StoredEpisode

        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"episode {i} of a store of {n}")
        i %= n
        k = int(np.searchsorted(self._ends, i, side="right"))
        a = self._chunk(k)
        offset, length, seed, mission = (
            int(v) for v in a["episodes"][i - (int(self._ends[k - 1]) if k else 0)]
        )
        s = slice(offset, offset + length)
        return StoredEpisode(
            a["image"][s],
            a["direction"][s],
            a["carrying"][s],
            a["label"][s],
            self.manifest["missions"][mission],
            seed,
            **{name: a[name][s] if name in a else None for name in EXTRA_ARRAYS},
        )

    def __getitem__(self, i: int):  # type: ignore[override]
        if isinstance(i, slice):
            return [self.episode(j) for j in range(*i.indices(len(self)))]
        return self.episode(int(i))

    def head(self, n: int) -> Sequence:
        """The first n episodes as a lazy sequence; DemoStoreError if the store holds fewer."""
        if not 0 <= n <= len(self):
            raise DemoStoreError(
                f"{str(self.root / MANIFEST)!r} holds {len(self)} demos, not the {n} asked (--demos); generate more with demos.py"
            )
        return _Head(self, n)

    def verify(self) -> int:
        """Every committed file against its size and checksum; returns the number of files checked."""
        self._check_sizes()
        self._arrays.clear()
        files = 0
        for k, chunk in enumerate(self.manifest["chunks"]):
            a = self._chunk(k)
            files += len(a)
            eps = a["episodes"]
            if (
                eps.shape != (chunk["episodes"], len(EPISODE_COLUMNS))
                or int(eps[:, 1].sum()) != chunk["frames"]
            ):
                raise DemoStoreError(
                    f"{str(self.root / chunk['files']['episodes']['name'])!r} disagrees with the manifest"
                )
            for name, (dtype, shape) in {**STEP_ARRAYS, **self._extras()}.items():
                if name not in a or a[name].dtype != dtype or a[name].shape != (chunk["frames"], *shape):
                    raise DemoStoreError(
                        f"{str(self.root / chunk['files'][name]['name'])!r} has the wrong dtype or shape"
                    )
        return files

    def _extras(self) -> dict[str, tuple]:
        """The extra per-step arrays this store holds: name -> (dtype, step shape)."""
        return {
            name: (dtype, shape)
            for name, (flag, dtype, shape) in EXTRA_ARRAYS.items()
            if self.manifest.get(flag, False)
        }

    # ------------------------------------------------------------------ writing

    def append(
        self,
        episodes: list,
        next_candidate: int,
        skipped: dict[str, int] | None = None,
        generation_s: float = 0.0,
    ) -> None:
        """Commit `episodes` (StoredEpisode) as one chunk, with the candidate index generation goes on
        from and the skips since the last commit: chunk files first, then the manifest (atomic)."""
        manifest = json.loads(json.dumps(self.manifest))  # a copy: self.manifest changes only on success
        index = len(manifest["chunks"])
        missions = {m: j for j, m in enumerate(manifest["missions"])}
        for ep in episodes:
            if ep.mission not in missions:
                missions[ep.mission] = len(manifest["missions"])
                manifest["missions"].append(ep.mission)
        for name in self._extras():
            if any(getattr(ep, name) is None for ep in episodes):
                raise DemoStoreError(f"{str(self.root / MANIFEST)!r} stores bot {name}s: an episode has none")
        lengths = np.array([len(ep) for ep in episodes], np.int64)
        offsets = (
            np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64) if len(episodes) else lengths
        )
        table = np.stack(
            [
                offsets,
                lengths,
                np.array([ep.seed for ep in episodes], np.int64),
                np.array([missions[ep.mission] for ep in episodes], np.int64),
            ],
            axis=1,
        ).reshape(len(episodes), len(EPISODE_COLUMNS))
        arrays = {
            name: (
                np.concatenate([np.asarray(getattr(ep, name)) for ep in episodes]).astype(dtype)
                if episodes
                else np.zeros((0, *shape), dtype)
            )
            for name, (dtype, shape) in {**STEP_ARRAYS, **self._extras()}.items()
        }
        arrays["episodes"] = table
        files = {}
        for name, fname in _chunk_files(index, self._extras()).items():
            path = self.root / fname
            atomic_write(path, lambda tmp, a=arrays[name]: _save_npy(tmp, a))
            files[name] = {"name": fname, "bytes": path.stat().st_size, "sha256": _sha256(path)}
        manifest["chunks"].append({"episodes": len(episodes), "frames": int(lengths.sum()), "files": files})
        manifest["episodes"] += len(episodes)
        manifest["frames"] += int(lengths.sum())
        manifest["next_candidate"] = int(next_candidate)
        for why, count in (skipped or {}).items():
            manifest["skipped"][why] = manifest["skipped"].get(why, 0) + int(count)
        manifest["generation_s"] = round(manifest["generation_s"] + float(generation_s), 2)
        atomic_write_text(self.root / MANIFEST, json.dumps(manifest, indent=1))
        self.manifest = manifest
        self._ends = np.cumsum([c["episodes"] for c in manifest["chunks"]]).astype(np.int64)


def _save_npy(path: str, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, np.ascontiguousarray(array), allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())


class _Head(Sequence):
    """The first n episodes of a store, read lazily."""

    def __init__(self, store: DemoStore, n: int):
        self.store, self.n = store, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):  # type: ignore[override]
        if isinstance(i, slice):
            return [self.store.episode(j) for j in range(*i.indices(self.n))]
        if not -self.n <= i < self.n:
            raise IndexError(f"episode {i} of {self.n}")
        return self.store.episode(int(i) % self.n)
