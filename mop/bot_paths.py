"""The bot path lengths of evaluation layouts: the one cache of path_ratio's denominator.

Evaluating a checkpoint replays the BabyAI bot on every evaluation layout it played, to know how
many steps the level needs (babyai_env.bot_path_length; None where the bot fails). The number
depends only on the level, the layout seed and the step limit, so one `BotPaths` per (task,
max_steps) holds them for every checkpoint evaluated there:
- in memory (eval_mop.evaluate's default, lmc.py's Evaluator over all its α), or
- backed by a file under a cache folder (batch_eval.py: every checkpoint of a level, across
  processes and Modal jobs): `<cache_dir>/_bot_paths/<task>__max_steps_<N|default>.json`, a JSON
  object {"<seed>": length or null}. `save` merges this process's new lengths into the file under
  `runs.locked` and replaces it atomically, so concurrent writers never lose one.

    paths = BotPaths("BabyAI-GoToLocal-v0", None, cache_dir="evaluation_cache")   # reads the file
    paths.length(EVAL_SEED_START + 3)     # known, or computed now with the bot
    paths.save()                           # writes only if something was computed
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from mop.babyai_env import bot_path_length
from mop.runs import atomic_write_text, locked, safe_name

BOT_PATH_DIR = "_bot_paths"


def cache_file(cache_dir: str | os.PathLike, task_id: str, max_steps: int | None) -> Path:
    """Where one level's bot path lengths at one step limit are kept under `cache_dir` (the task
    id is checked with safe_name: RunPathError for one that would leave the folder)."""
    name = f"{safe_name(task_id, 'task_id')}__max_steps_{int(max_steps) if max_steps else 'default'}.json"
    return Path(cache_dir) / BOT_PATH_DIR / name


def read_cache_file(path: str | os.PathLike) -> dict[int, int | None]:
    """The lengths stored at `path` by seed; {} when the file is absent or unreadable."""
    try:
        return {int(k): v for k, v in json.loads(Path(path).read_text()).items()}
    except (OSError, ValueError, AttributeError):
        return {}


class BotPaths(Mapping[int, "int | None"]):
    """Bot path lengths of one level's evaluation layouts at one step limit, by layout seed
    (None: the bot failed there); a read-only mapping plus `length`, which fills in a missing one.
    With `cache_dir` the known lengths are read from, and `save` writes to, cache_file's file."""

    def __init__(self, task_id: str, max_steps: int | None, cache_dir: str | os.PathLike | None = None):
        self.task_id, self.max_steps = task_id, max_steps
        self.path = None if cache_dir is None else cache_file(cache_dir, task_id, max_steps)
        self.known: dict[int, int | None] = {} if self.path is None else read_cache_file(self.path)
        self.added: dict[int, int | None] = {}  # found by this process, not yet saved

    def __getitem__(self, seed: int) -> int | None:
        return self.known[seed]

    def __iter__(self) -> Iterator[int]:
        return iter(self.known)

    def __len__(self) -> int:
        return len(self.known)

    def check(self, task_id: str, max_steps: int | None) -> None:
        """ValueError if these lengths are another level's or another step limit's."""
        if (task_id, max_steps) != (self.task_id, self.max_steps):
            raise ValueError(
                f"bot paths of {self.task_id} (max_steps {self.max_steps}) asked for {task_id} "
                f"(max_steps {max_steps})"
            )

    def length(self, seed: int, env: Callable[[], Any] | None = None) -> int | None:
        """The bot's path length on layout `seed`, computed (and kept) if unknown; `env()` gives
        an env of the level to reuse for the rollout (a reset with the seed lays out the same
        level as a new env)."""
        seed = int(seed)
        if seed not in self.known:
            steps = bot_path_length(
                self.task_id, seed, self.max_steps, env=env() if env is not None else None
            )
            self.known[seed] = self.added[seed] = steps
        return self.known[seed]

    def update(self, lengths: Mapping[int, int | None]) -> None:
        """Lengths measured elsewhere (evaluation worker processes), kept like computed ones."""
        for seed, steps in lengths.items():
            if int(seed) not in self.known:
                self.known[int(seed)] = self.added[int(seed)] = steps

    def save(self) -> Path | None:
        """Merge the lengths this process added into the cache file (under its lock, atomically);
        nothing without a cache folder or without new lengths. The file's path, if written."""
        if self.path is None or not self.added:
            return None
        with locked(self.path):
            merged = {**read_cache_file(self.path), **self.added}
            atomic_write_text(self.path, json.dumps({str(k): v for k, v in sorted(merged.items())}))
        self.added = {}
        return self.path
