"""Evaluation speed and routing-cache cost, measured in one run.

1. episodes/s of eval_mop.evaluate on BabyAI-GoToLocal-v0 with routing recording off and on
   (1 process and all cores): the recording overhead is the ratio of the two.
2. The same with the bot's subgoals and the level's events recorded too (eval_mop --record_subgoals,
   1 process): its cost as the ratio of episodes/s with recording to episodes/s with subgoals too.
3. A 1,000-episode evaluation written as the Parquet cache and as the earlier system's routing_data.json:
   size on disk and time to load each back (load_cache vs json.loads; best of 5 reads each).

Needs a checkpoint; without --checkpoint it trains a small one first (about a minute).

    python bench/eval_throughput.py
    python bench/eval_throughput.py --checkpoint checkpoints/BabyAI-GoToLocal-v0/trial_0/checkpoint_final.pt
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import train_mop  # noqa: E402
from eval_mop import EvalOptions, evaluate, save_evaluation  # noqa: E402
from mop.bot_paths import BotPaths  # noqa: E402
from mop.devices import default_num_workers  # noqa: E402
from mop.experiment import load_checkpoint, load_config  # noqa: E402
from mop.routing_cache import JSON_FILE, load_cache  # noqa: E402


def timed(fn, repeat: int = 1):
    """(result, best wall time of `repeat` calls): the minimum is the least noisy estimate."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return out, best


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--checkpoint", default=None, help="checkpoint to evaluate (default: train a small one)"
    )
    parser.add_argument("--episodes", type=int, default=1000, help="episodes per measurement (default 1000)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint
        if checkpoint is None:
            print("training a small GoToLocal checkpoint (300 updates) ...")
            cfg = load_config(
                None,
                {
                    "task_id": "BabyAI-GoToLocal-v0",
                    "num_updates": 300,
                    "checkpoint_dir": tmp,
                    "checkpoint_interval": None,
                },
            )
            checkpoint = train_mop.main(cfg, progress=False)["checkpoints"][-1]
        workers = default_num_workers()
        config = load_checkpoint(checkpoint)["config"]
        bot_paths = BotPaths(config["task_id"], config.get("max_steps"))  # in memory, shared by every run
        evaluate(
            checkpoint, EvalOptions(num_episodes=args.episodes, record=False), bot_paths
        )  # warm the bot-path cache
        rates = {}
        for record in (False, True):
            for n in (1, workers):
                options = EvalOptions(num_episodes=args.episodes, record=record, num_workers=n)
                result, seconds = timed(partial(evaluate, checkpoint, options, bot_paths))
                rates[record, n] = args.episodes / seconds
                if record and n == 1:
                    recorded = result
        options = EvalOptions(num_episodes=args.episodes, record=True, record_subgoals=True)
        _, seconds = timed(partial(evaluate, checkpoint, options, bot_paths))
        subgoal_rate = args.episodes / seconds
        print(
            f"{args.episodes} episodes of BabyAI-GoToLocal-v0, success {recorded.metrics['success_rate']:.3f}, "
            f"{len(recorded.steps)} steps"
        )
        for n in (1, workers):
            overhead = rates[False, n] / rates[True, n] - 1
            print(
                f"{n} worker(s): {rates[False, n]:6.1f} episodes/s without recording, {rates[True, n]:6.1f} with "
                f"-> recording costs {overhead:+.0%}"
            )
        print(
            f"1 worker: {rates[True, 1]:6.1f} episodes/s recording, {subgoal_rate:6.1f} with subgoals too "
            f"-> time ratio {rates[True, 1] / subgoal_rate:.2f} (--record_subgoals is off by default)"
        )
        directory = save_evaluation(recorded, checkpoint, Path(tmp) / "cache", ("parquet", "json"))
        parquet_bytes = sum(
            (directory / f).stat().st_size for f in ("steps.parquet", "episodes.parquet", "metadata.json")
        )
        json_bytes = (directory / JSON_FILE).stat().st_size
        _, parquet_s = timed(lambda: load_cache(directory), repeat=5)
        _, json_s = timed(lambda: json.loads((directory / JSON_FILE).read_text()), repeat=5)
        print(
            f"cache size: parquet {parquet_bytes / 1e6:.2f} MB, json {json_bytes / 1e6:.2f} MB "
            f"-> {json_bytes / parquet_bytes:.1f}x smaller"
        )
        print(
            f"load time:  parquet {parquet_s * 1e3:.0f} ms, json {json_s * 1e3:.0f} ms -> {json_s / parquet_s:.1f}x faster"
        )


if __name__ == "__main__":
    main()
