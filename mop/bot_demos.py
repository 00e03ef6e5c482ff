"""Bot demos for offline behavioural cloning (BabyAI's imitation learning), cached on disk.

`--demos N` (train_mop.py / train.py, through mop.imitation.DemoSource) trains on N bot-driven
episodes only. They are generated once and cached as `<demos_dir>/<task>/<N>_<demo_seed>.npz` (an
EpisodeBuffer file of kind "demos"); later runs with the same level, N and demo seed reuse the file.
The command line is demos.py at the top.

- Layouts: candidate k of demo set s is `babyai_env.demo_episode_seed(s, k)`, a range disjoint from
  both the training and the evaluation seeds. The demos are the first N candidates (in k order)
  the bot solves: a layout whose bot fails (raises, loops) or runs out of steps is skipped and
  counted (`skipped_bot_failure`, `skipped_unsolved` in the file's metadata), never stored as a
  dummy demo. So the set depends only on (level, N, s, max_steps), not on the number of workers.
- Generation runs in worker processes (blocks of candidates in order, merged in order).
- A cache of another level, count, demo set or format version is refused in one line; the file
  is written atomically, so a full disk or a kill never leaves half a cache to be read back.

    buf, info, path = load_or_generate_demos("BabyAI-GoToLocal-v0", 1000, demo_seed=0, root="demos")
    python demos.py --task_id BabyAI-GoToLocal-v0 --demos 1000      # generate (or check) the cache
"""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path
from typing import Any

import numpy as np

from mop.babyai_env import SafeBot, demo_episode_seed, make_env, quiet_reset
from mop.replay_buffer import BufferError, EpisodeBuffer, StoredEpisode
from mop.runs import safe_name

BLOCK = 64  # candidate layouts per work item


def demo_path(root: str | Path, task_id: str, num_demos: int, demo_seed: int) -> Path:
    return Path(root) / safe_name(task_id, "task_id") / f"{int(num_demos)}_{int(demo_seed)}.npz"


def bot_episode(env: Any, seed: int, fast: bool = True) -> tuple[StoredEpisode | None, str | None]:
    """The bot plays the layout of `seed`: (episode, None) if it solves it, else (None, why)."""
    obs = quiet_reset(env, seed)
    bot = SafeBot(env, fast)
    images, dirs, carrying, labels = [], [], [], []
    prev = None
    while True:
        label = bot.label(prev)
        if label is None:
            return None, "bot_failure"
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


def generate_demos(
    task_id: str,
    num_demos: int,
    demo_seed: int = 0,
    max_steps: int | None = None,
    num_workers: int = 1,
    fast: bool = True,
    progress: bool = True,
) -> tuple[EpisodeBuffer, dict]:
    """(buffer of the first `num_demos` solved candidates, info with skip counts)."""
    if num_demos <= 0:
        raise ValueError(f"the number of demos must be positive, got {num_demos}")
    from tqdm.auto import tqdm

    started = time.perf_counter()
    demos: list[StoredEpisode] = []
    skipped = {"bot_failure": 0, "unsolved": 0}
    next_k = 0

    def blocks() -> Any:
        nonlocal next_k
        while True:
            start = next_k
            next_k += BLOCK
            yield (task_id, demo_seed, start, start + BLOCK, max_steps, fast)

    bar = tqdm(total=num_demos, desc=f"demos {task_id}", disable=not progress, dynamic_ncols=True)
    pool = None
    try:
        if num_workers > 1:
            pool = mp.get_context("spawn").Pool(num_workers, initializer=_worker_init)
            results = pool.imap(_block, blocks())  # in order; workers run ahead a few blocks
        else:
            results = map(_block, blocks())
        for block in results:
            for ep, why in block:
                if len(demos) == num_demos:
                    break
                if ep is None:
                    skipped[why] += 1
                else:
                    demos.append(ep)
                    bar.update(1)
            if len(demos) == num_demos:
                break
            if sum(skipped.values()) > 10 * num_demos + 1000:
                raise RuntimeError(
                    f"the bot solved only {len(demos)} of {len(demos) + sum(skipped.values())} {task_id} layouts; "
                    "this level cannot be imitated from its demos"
                )
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
            pool.join()
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


def load_or_generate_demos(
    task_id: str,
    num_demos: int,
    demo_seed: int = 0,
    root: str | Path = "demos",
    max_steps: int | None = None,
    num_workers: int = 1,
    fast: bool = True,
    progress: bool = True,
) -> tuple[EpisodeBuffer, dict, Path]:
    """The cached demo set (checked against what is asked), or a new one generated and cached."""
    path = demo_path(root, task_id, num_demos, demo_seed)
    if path.exists():
        buf, meta = EpisodeBuffer.load(path, task_id)
        if meta.get("kind") != "demos":
            raise BufferError(f"{str(path)!r} is a replay buffer, not a demo cache")
        asked = {"num_demos": num_demos, "demo_seed": demo_seed, "max_steps": max_steps}
        for key, value in asked.items():
            if meta.get(key) != value:
                raise BufferError(
                    f"{str(path)!r} holds demos with {key} {meta.get(key)!r}, not {value!r}; move it or use another --demos_dir"
                )
        return buf, meta, path
    buf, info = generate_demos(task_id, num_demos, demo_seed, max_steps, num_workers, fast, progress)
    buf.save(path, kind="demos", **info)
    _, meta = EpisodeBuffer.load(path, task_id)
    return buf, meta, path
