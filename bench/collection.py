"""Env + bot steps per second on one core: minigrid as is vs ours (fast_grid), in the same run.

Each step is what collection does per env: the bot labels the state (SafeBot.label), a student
acts (the label with probability --follow, else a uniformly random action) and the env steps,
resetting on episode end or bot failure. Both arms drive the same layouts with the same student
draws and, the labels being identical, walk the same trajectories; they alternate in short blocks
so both see the same machine load, and the ratio is the median over blocks.

    python bench/collection.py
    python bench/collection.py --tasks BabyAI-GoToLocal-v0 --seconds 20 --follow 0.5
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mop.babyai_env import SafeBot, make_env, quiet_reset  # noqa: E402

TASKS = ["BabyAI-GoToLocal-v0", "BabyAI-UnlockPickup-v0", "BabyAI-GoToImpUnlock-v0"]


class Arm:
    """One env, its bot and a student, stepping on; `run(n)` returns seconds for n steps."""

    def __init__(self, task: str, fast: bool, follow: float):
        self.env, self.fast, self.follow = make_env(task, fast=fast), fast, follow
        self.rng = np.random.default_rng(0)
        self.seed = 0
        self.labels: list[int] = []
        self._reset()

    def _reset(self) -> None:
        quiet_reset(self.env, self.seed)
        self.seed += 1
        self.bot, self.previous = SafeBot(self.env, self.fast), None

    def run(self, steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            label = self.bot.label(self.previous)
            self.labels.append(-1 if label is None else label)
            if label is None:
                self._reset()
                continue
            action = label if self.rng.random() < self.follow else int(self.rng.integers(0, 7))
            _, _, terminated, truncated, _ = self.env.step(action)
            self.previous = action
            if terminated or truncated:
                self._reset()
        return time.perf_counter() - start


def bench(task: str, seconds: float, follow: float, block: int) -> tuple[float, float, float]:
    minigrid, ours = Arm(task, False, follow), Arm(task, True, follow)
    minigrid.run(block // 4), ours.run(block // 4)  # warm-up
    times: dict[str, list[float]] = {"minigrid": [], "ours": []}
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        times["minigrid"].append(minigrid.run(block))
        times["ours"].append(ours.run(block))
    assert minigrid.labels == ours.labels, "labels differ: run tests/test_fast_env.py"
    ratios = np.array(times["minigrid"]) / np.array(times["ours"])
    return block / np.median(times["minigrid"]), block / np.median(times["ours"]), float(np.median(ratios))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", nargs="+", default=TASKS)
    parser.add_argument("--seconds", type=float, default=20.0, help="per task, both arms together")
    parser.add_argument("--follow", type=float, default=0.8, help="how often the student takes the label")
    parser.add_argument("--block", type=int, default=200, help="steps per alternation block")
    args = parser.parse_args()
    print(f"env+bot steps/s on one core, student follows the bot {args.follow:.0%}")
    for task in args.tasks:
        slow, fast, ratio = bench(task, args.seconds, args.follow, args.block)
        print(f"{task:<28} minigrid {slow:7.0f}/s   ours {fast:7.0f}/s   {ratio:5.2f}x")


if __name__ == "__main__":
    main()
