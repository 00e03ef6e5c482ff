"""Bot demos for offline behavioural cloning (BabyAI's imitation learning), stored on disk.

`--demos N` (train_mop.py / train.py, through mop.imitation.DemoSource) trains on N bot-driven
episodes only: the first N of the level's demo store `<demos_dir>/<task>/set_<demo_seed>[_max<m>]/`
(mop/demo_store.py: memory-mapped chunks, a checked manifest), generated there in worker processes
if the store holds fewer, and appended to, never rewritten. A run that asks for more demos extends
the same store. An older single-file cache `<demos_dir>/<task>/<N>_<demo_seed>.npz` (an
EpisodeBuffer file of kind "demos", format 1) is still read when it exists for exactly that request.
The command line is demos.py at the top.

- Layouts: candidate k of demo set s is `babyai_env.demo_episode_seed(s, k)`, a range disjoint from
  both the training and the evaluation seeds. The demos are the first N candidates (in k order)
  the bot solves: a layout whose bot fails (raises, loops) or runs out of steps is skipped and
  counted (`skipped_bot_failure`, `skipped_unsolved` in the file's metadata), never stored as a
  dummy demo. So the set depends only on (level, N, s, max_steps), not on the number of workers.
- Generation runs in worker processes (blocks of candidates in order, merged in order).
- A store (or old cache) of another level, observation encoding, demo set or format version is
  refused in one line; a store commits every CHUNK_EPISODES demos atomically, so a kill loses at
  most the uncommitted chunk, regenerated from the same layout seeds when generation resumes.

    buf, info, path = load_or_generate_demos("BabyAI-GoToLocal-v0", 1000, demo_seed=0, root="demos")
    python demos.py --task_id BabyAI-GoToLocal-v0 --demos 1000      # generate (or check) the cache
"""

from __future__ import annotations

import multiprocessing as mp
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from mop.babyai_env import (
    DoorTracker,
    KeyTracker,
    SafeBot,
    demo_episode_seed,
    make_env,
    quiet_reset,
    subgoal_code,
    target_code,
)
from mop.demo_store import MANIFEST, STORE_KIND, DemoStore, DemoStoreError
from mop.replay_buffer import BufferError, EpisodeBuffer, StoredEpisode
from mop.runs import remove_stale_temp_files, safe_name

BLOCK = 64  # candidate layouts per work item
NO_TARGETS = (
    "made before demos recorded where the bot heads; --aux_target_weight needs them: "
    "move the store away to regenerate it, or give another --demos_dir"
)
NO_SUBGOALS = (
    "made before demos recorded what the bot is doing; --aux_subgoal_weight and --subgoal_ce_weights need them: "
    "move the store away to regenerate it, or give another --demos_dir"
)
NO_KEYS = (
    "made before demos recorded where the seen key lies; --aux_key_weight needs them: "
    "move the store away to regenerate it, or give another --demos_dir"
)
NO_DOOR_PLACES = (
    "made before demos recorded where the seen locked door lies; --aux_door_place_weight needs them: "
    "move the store away to regenerate it, or give another --demos_dir"
)
# What a store's manifest flag holds and why a run needs it: flag -> (what, why), in the order asked.
NEEDS = {
    "targets": ("bot targets", NO_TARGETS),
    "subgoals": ("bot subgoals", NO_SUBGOALS),
    "keys": ("seen-key places", NO_KEYS),
    "door_places": ("seen-door places", NO_DOOR_PLACES),
}
CHUNK_EPISODES = 1024  # solved demos per committed store chunk


def demo_path(root: str | Path, task_id: str, num_demos: int, demo_seed: int) -> Path:
    return Path(root) / safe_name(task_id, "task_id") / f"{int(num_demos)}_{int(demo_seed)}.npz"


def bot_episode(env: Any, seed: int, fast: bool = True) -> tuple[StoredEpisode | None, str | None]:
    """The bot plays the layout of `seed`: (episode, None) if it solves it, else (None, why)."""
    obs = quiet_reset(env, seed)
    bot = SafeBot(env, fast)
    tracker, doors = KeyTracker(), DoorTracker()
    tracker.reset(env)
    doors.reset(env)
    images, dirs, carrying, labels, targets, subgoals, keys, places = [], [], [], [], [], [], [], []
    prev = None
    while True:
        label = bot.label(prev)
        if label is None:
            return None, "bot_failure"
        targets.append(target_code(bot.target()))
        subgoals.append(subgoal_code(bot.subgoal()))
        keys.append(target_code(tracker.label(env, obs["image"])))
        places.append(target_code(doors.label(env, obs["image"])))
        images.append(obs["image"])
        dirs.append(obs["direction"])
        carrying.append(env.carrying is not None)
        labels.append(label)
        obs, reward, terminated, truncated, _ = env.step(label)
        prev = label
        if terminated or truncated:
            if terminated and reward > 0:
                return (
                    StoredEpisode(
                        np.stack(images).astype(np.uint8),
                        np.array(dirs, np.uint8),
                        np.array(carrying, np.uint8),
                        np.array(labels, np.int8),
                        obs["mission"],
                        int(seed),
                        target=np.array(targets, np.int8),
                        subgoal=np.array(subgoals, np.int8),
                        key=np.array(keys, np.int8).reshape(-1, 2),
                        door_place=np.array(places, np.int8).reshape(-1, 2),
                    ),
                    None,
                )
            return None, "unsolved"


def _block(args: tuple) -> list[tuple[StoredEpisode | None, str | None]]:
    task_id, demo_seed, start, stop, max_steps, fast = args
    env = make_env(task_id, max_steps, fast)
    return [bot_episode(env, demo_episode_seed(demo_seed, k), fast) for k in range(start, stop)]


def _worker_init() -> None:
    import signal

    from mop.numpy_policy import use_one_thread

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and closes the pool
    use_one_thread()


def candidates(
    task_id: str, demo_seed: int, start: int, max_steps: int | None, num_workers: int, fast: bool = True
) -> Iterator[tuple[int, StoredEpisode | None, str | None]]:
    """(k, episode or None, why not) for candidates k = start, start + 1, ... in order, played by
    `num_workers` processes (blocks of BLOCK candidates; workers run ahead a few blocks)."""

    def blocks() -> Any:
        k = start
        while True:
            yield (task_id, demo_seed, k, k + BLOCK, max_steps, fast)
            k += BLOCK

    pool = None
    try:
        if num_workers > 1:
            pool = mp.get_context("spawn").Pool(num_workers, initializer=_worker_init)
            results = pool.imap(_block, blocks())
        else:
            results = map(_block, blocks())
        k = start
        for block in results:
            for ep, why in block:
                yield k, ep, why
                k += 1
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()


def _too_many_skips(task_id: str, solved: int, skipped: int, asked: int) -> None:
    if skipped > 10 * asked + 1000:
        raise RuntimeError(
            f"the bot solved only {solved} of {solved + skipped} {task_id} layouts; "
            "this level cannot be imitated from its demos"
        )


def generate_demos(
    task_id: str,
    num_demos: int,
    demo_seed: int = 0,
    max_steps: int | None = None,
    num_workers: int = 1,
    fast: bool = True,
    progress: bool = True,
) -> tuple[EpisodeBuffer, dict]:
    """(buffer of the first `num_demos` solved candidates, info with skip counts), in RAM."""
    if num_demos <= 0:
        raise ValueError(f"the number of demos must be positive, got {num_demos}")
    from mop.progress import progress_bar

    started = time.perf_counter()
    demos: list[StoredEpisode] = []
    skipped = {"bot_failure": 0, "unsolved": 0}
    with progress_bar(num_demos, f"demos {task_id}", enabled=progress) as bar:
        stream = candidates(task_id, demo_seed, 0, max_steps, num_workers, fast)
        try:
            for _, ep, why in stream:
                if ep is None:
                    skipped[why] += 1
                    _too_many_skips(task_id, len(demos), sum(skipped.values()), num_demos)
                    continue
                demos.append(ep)
                bar.update(1)
                if len(demos) == num_demos:
                    break
        finally:
            stream.close()
    buf = EpisodeBuffer(num_demos, task_id)
    buf.extend(demos)
    info = {
        "num_demos": num_demos,
        "demo_seed": demo_seed,
        "max_steps": max_steps,
        "skipped_bot_failure": skipped["bot_failure"],
        "skipped_unsolved": skipped["unsolved"],
        "frames": buf.frames,
        "generation_s": round(time.perf_counter() - started, 2),
    }
    return buf, info


# ----------------------------------------------------------------------------- the demo store


def store_path(root: str | Path, task_id: str, demo_seed: int, max_steps: int | None = None) -> Path:
    """The store folder of (level, demo set, step limit): `<root>/<task>/set_<s>[_max<m>]`."""
    limit = "" if max_steps is None else f"_max{int(max_steps)}"
    return Path(root) / safe_name(task_id, "task_id") / f"set_{int(demo_seed)}{limit}"


def open_store(
    root: str | Path, task_id: str, demo_seed: int, max_steps: int | None = None, create: bool = False
) -> DemoStore:
    """The level's store for that demo set (checked: level, encoding, format, sizes); a new empty
    one if `create` and none exists; DemoStoreError otherwise."""
    path = store_path(root, task_id, demo_seed, max_steps)
    if create and not (path / MANIFEST).exists():
        return DemoStore.create(path, task_id, demo_seed, max_steps)
    return DemoStore.open(path, task_id=task_id, demo_seed=demo_seed, max_steps=max_steps)


def extend_store(
    store: DemoStore,
    num_demos: int,
    num_workers: int = 1,
    fast: bool = True,
    progress: bool = True,
    chunk_episodes: int = CHUNK_EPISODES,
    on_commit: Callable[[int], None] | None = None,
) -> DemoStore:
    """Generate demos into `store` until it holds `num_demos`, from its `next_candidate` on,
    committing every `chunk_episodes` solved demos (a kill loses at most the uncommitted chunk,
    regenerated from the same layout seeds next time). `on_commit(chunks)` runs after each commit."""
    from mop.progress import progress_bar

    m = store.manifest
    task_id, demo_seed, max_steps = m["task_id"], m["demo_seed"], m["max_steps"]
    remove_stale_temp_files(store.root)
    if len(store) >= num_demos:
        return store
    pending: list[StoredEpisode] = []
    skipped = {"bot_failure": 0, "unsolved": 0}
    total_skipped = sum(m["skipped"].values())
    started = time.perf_counter()
    bar = progress_bar(num_demos, f"demos {task_id}", enabled=progress, initial=len(store))
    stream = candidates(task_id, demo_seed, m["next_candidate"], max_steps, num_workers, fast)
    try:
        for k, ep, why in stream:
            if ep is None:
                skipped[why] += 1
                _too_many_skips(
                    task_id, len(store) + len(pending), total_skipped + sum(skipped.values()), num_demos
                )
            else:
                pending.append(ep)
                bar.update(1)
            if pending and (len(pending) == chunk_episodes or len(store) + len(pending) == num_demos):
                store.append(pending, k + 1, skipped, time.perf_counter() - started)
                total_skipped += sum(skipped.values())
                pending, skipped, started = [], {"bot_failure": 0, "unsolved": 0}, time.perf_counter()
                if on_commit is not None:
                    on_commit(len(store.manifest["chunks"]))
                if len(store) >= num_demos:
                    break
    finally:
        stream.close()
        bar.close()
    return store


def store_buffer(store: DemoStore, num_demos: int) -> EpisodeBuffer:
    """An EpisodeBuffer over the store's first `num_demos` episodes, read lazily (memory-mapped):
    what DemoSource samples epoch by epoch."""
    buf = EpisodeBuffer(max(1, num_demos), store.manifest["task_id"])
    buf.episodes = store.head(num_demos)  # a lazy Sequence: indexing reads one episode's views
    buf.frames = store.frames_of(num_demos)
    buf.added = num_demos
    return buf


def load_or_generate_demos(
    task_id: str,
    num_demos: int,
    demo_seed: int = 0,
    root: str | Path = "demos",
    max_steps: int | None = None,
    num_workers: int = 1,
    fast: bool = True,
    progress: bool = True,
    generate: bool = True,
    need_targets: bool = False,
    need_subgoals: bool = False,
    need_keys: bool = False,
    need_door_places: bool = False,
) -> tuple[EpisodeBuffer, dict, Path]:
    """(buffer of the first `num_demos` demos, metadata, path). An older single-file cache
    (`demo_path`, format 1) is read if one exists for exactly this request; otherwise the level's
    store (`store_path`) is opened, checked and, if `generate`, extended to `num_demos` (created if
    missing). DemoStoreError (a BufferError) for a store that cannot be used or holds too few, or,
    with `need_targets` (--aux_target_weight), `need_subgoals` (--aux_subgoal_weight,
    --subgoal_ce_weights), `need_keys` (--aux_key_weight) or `need_door_places`
    (--aux_door_place_weight), one made before the bot's targets, subgoals, seen-key or seen-door
    places were stored."""
    wanted = (need_targets, need_subgoals, need_keys, need_door_places)
    needs = tuple(flag for flag, want in zip(NEEDS, wanted) if want)  # NEEDS' order
    path = demo_path(root, task_id, num_demos, demo_seed)
    if path.exists():
        buf, meta = EpisodeBuffer.load(path, task_id)
        if meta.get("kind") != "demos":
            raise BufferError(f"{str(path)!r} is a replay buffer, not a demo cache")
        if needs:
            what, why = NEEDS[needs[0]]
            raise BufferError(f"{str(path)!r} is an older demo cache: it holds no {what} ({why})")
        asked = {"num_demos": num_demos, "demo_seed": demo_seed, "max_steps": max_steps}
        for key, value in asked.items():
            if meta.get(key) != value:
                raise BufferError(
                    f"{str(path)!r} holds demos with {key} {meta.get(key)!r}, not {value!r}; move it or use another --demos_dir"
                )
        return buf, meta, path
    if num_demos <= 0:
        raise ValueError(f"the number of demos must be positive, got {num_demos}")
    try:
        return _from_store(
            task_id,
            num_demos,
            demo_seed,
            root,
            max_steps,
            num_workers,
            fast,
            progress,
            generate,
            needs,
        )
    except DemoStoreError as e:
        raise BufferError(str(e)) from None  # what DemoSource turns into a ConfigError


def _from_store(
    task_id: str,
    num_demos: int,
    demo_seed: int,
    root: str | Path,
    max_steps: int | None,
    num_workers: int,
    fast: bool,
    progress: bool,
    generate: bool,
    needs: tuple[str, ...] = (),
) -> tuple[EpisodeBuffer, dict, Path]:
    try:
        store = open_store(root, task_id, demo_seed, max_steps, create=False)
    except DemoStoreError:
        if not generate or (store_path(root, task_id, demo_seed, max_steps) / MANIFEST).exists():
            raise
        store = open_store(root, task_id, demo_seed, max_steps, create=True)
    for flag in needs:  # NEEDS' flags the run asks for, in its order
        if not store.manifest.get(flag, False):
            what, why = NEEDS[flag]
            raise DemoStoreError(f"{str(store.root / MANIFEST)!r} holds no {what} ({why})")
    if generate:
        extend_store(store, num_demos, num_workers, fast, progress)
    buf = store_buffer(store, num_demos)  # DemoStoreError if it holds fewer
    m = store.manifest
    meta = {
        "kind": STORE_KIND,
        "format_version": m["format_version"],
        "task_id": task_id,
        "num_demos": num_demos,
        "store_episodes": len(store),
        "demo_seed": demo_seed,
        "max_steps": max_steps,
        "skipped_bot_failure": m["skipped"]["bot_failure"],
        "skipped_unsolved": m["skipped"]["unsolved"],
        "frames": buf.frames,
        "generation_s": m["generation_s"],
        **{flag: bool(m.get(flag, False)) for flag in NEEDS},
    }
    return buf, meta, store.root
