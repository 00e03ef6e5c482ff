"""Bench: stats.py on 25 synthetic routing caches (5 α × 5 seeds) of 1,000 episodes each; the
target is <= 60 s for the table, the aggregates and every figure. `make_cache` writes a cache whose
answer is known (per-cell LPC = slope · H(A|S) + noise), used by tests/test_stats.py too.

    python bench/stats_speed.py                 # 25 caches x 1000 episodes in a temporary folder
    python bench/stats_speed.py --episodes 200 --keep /tmp/stats_bench
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import seed_metrics as sm  # noqa: E402
from mop.results import EXTRA_COLUMNS, LEGACY_COLUMNS  # noqa: E402
from mop.routing_cache import derive_step_columns, write_cache  # noqa: E402
from mop.runs import cache_dir_for  # noqa: E402

SIZES = [[0, 16]]  # one layer: LPC = w_1 · 16² exactly
WIDTH = 8


def make_cache(
    cache_root: Path,
    task_id: str,
    trial: int,
    seed: int | None,
    update: int | None,
    alpha: float,
    rng: np.random.Generator,
    episodes: int = 200,
    length: int = 40,
    slope: float = 50.0,
    noise: float = 20.0,
    key_phases: bool = False,
) -> dict:
    """Write one cache under cache_root in the evaluation layout; returns its folder and the
    per-cell truth (cells table of seed_metrics.cell_statistics with the lpc set as designed).
    Actions: a cell's spread s ~ U(0, 1) picks 'forward' with probability 1 - s, else uniform.
    LPC at every step = 40 + slope · H(cell) + e(cell), e ~ N(0, noise) per cell (constant in the
    cell, so the per-cell mean LPC is exactly linear in H plus e)."""
    n = episodes * length
    cells = WIDTH * WIDTH
    spread = rng.uniform(0, 1, cells)
    cell = rng.integers(0, cells, n)
    x, y = 1 + cell % WIDTH, 1 + cell // WIDTH
    uniform = rng.random(n) < spread[cell]
    action = np.where(uniform, rng.integers(0, 7, n), 2)
    episode = np.repeat(np.arange(episodes), length)
    t = np.tile(np.arange(length), episodes)
    steps = pd.DataFrame({"episode": episode, "t": t, "x": x, "y": y, "action": action, "lpc": 0.0})
    entropy = sm.cell_statistics(steps)["entropy"]  # (x, y) -> bits over all steps
    e = pd.Series(rng.normal(0, noise, len(entropy)), index=entropy.index)
    lpc_cell = np.clip(40 + slope * entropy + e, 0, 256)
    lpc = lpc_cell.reindex(pd.MultiIndex.from_arrays([x, y], names=["x", "y"])).to_numpy()
    w1 = lpc / 256.0
    target = np.array([WIDTH, WIDTH])
    recorded = pd.DataFrame(
        {
            "episode": episode,
            "t": t,
            "env_slot": episode % 16,
            "x": x,
            "y": y,
            "direction": rng.integers(0, 4, n),
            "action": action,
            "carrying": (t >= length // 2).astype(int) if key_phases else np.zeros(n, dtype=int),
            "dist_to_key": np.hypot(x - 1, y - 1),
            "dist_to_target": np.hypot(x - target[0], y - target[1]),
            "layer_0_expert_0": 1 - w1,
            "layer_0_expert_1": w1,
        }
    )
    context = json.dumps({"grid_size": [WIDTH + 2, WIDTH + 2], "target_pos": target.tolist()})
    q = length // 4
    eps = pd.DataFrame(
        {
            "episode": np.arange(episodes),
            "seed": np.arange(episodes),
            "mission": "go to the box",
            "success": rng.random(episodes) < 0.5,
            "length": length,
            "t_pick": float(q) if key_phases else np.nan,
            "t_unlocked": float(2 * q) if key_phases else np.nan,
            "t_drop": float(3 * q) if key_phases else np.nan,
            "door_x": 0.0 if key_phases else np.nan,
            "door_y": 5.0 if key_phases else np.nan,
            "env_context": context,
        }
    )
    config = {"task_id": task_id, "trial": trial, "seed": seed, "update": update, "lpc_alpha": alpha}
    config |= {"expert_hidden_sizes": SIZES, "lpc_exponent": 2.0}
    metrics = {"success_rate": float(eps["success"].mean()), "path_ratio": 1.2, "mean_lpc": float(lpc.mean())}
    folder = cache_dir_for(cache_root, config, f"checkpoint_{update}.pt")
    full = derive_step_columns({c: recorded[c].to_numpy() for c in recorded}, eps, config)
    write_cache(folder, full, eps, {"config": config, "metrics": metrics})
    truth = sm.cell_statistics(steps).assign(lpc=lpc_cell)
    return {"folder": folder, "cells": truth, "metrics": metrics, "config": config}


def results_rows(made: list[dict]) -> pd.DataFrame:
    """The results CSV rows batch_eval would write for the synthetic caches (lpc_alpha per row)."""
    rows = []
    for m in made:
        c = m["config"]
        path = f"checkpoints/{c['task_id']}/trial_{c['trial']}/seed_{c['seed']}/checkpoint_{c['update']}.pt"
        rows.append(
            {"checkpoint_path": path, "task_id": c["task_id"], "trial": c["trial"], "seed": c["seed"]}
            | {"update": c["update"], "lpc_alpha": c["lpc_alpha"], "eval_task_id": c["task_id"]}
            | {"knockout": "none", "cache_path": Path(m["folder"]).as_posix()}
            | m["metrics"]
        )
    return pd.DataFrame(rows, columns=LEGACY_COLUMNS + EXTRA_COLUMNS)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--length", type=int, default=40, help="steps per episode (default 40)")
    parser.add_argument("--keep", default=None, help="write here instead of a temporary folder")
    args = parser.parse_args(argv)
    import stats

    task = "BabyAI-UnlockPickup-v0"
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(args.keep or tmp)
        rng = np.random.default_rng(0)
        start = time.perf_counter()
        made = [
            make_cache(
                base / "cache",
                task,
                trial,
                seed,
                100,
                alpha,
                rng,
                args.episodes,
                args.length,
                key_phases=True,
            )
            for trial, alpha in enumerate([0, 1e-6, 1e-5, 1e-4, 1e-3])
            for seed in range(5)
        ]
        results_rows(made).to_csv(base / "results.csv", index=False)
        made_s = time.perf_counter() - start
        argv = ["--task_id", task, "--cache_dir", str(base / "cache")]
        argv += ["--results_path", str(base / "results.csv"), "--out", str(base / "stats")]
        start = time.perf_counter()
        summary = stats.main([*argv, "--force"])
        took = time.perf_counter() - start
        start = time.perf_counter()
        stats.main([*argv, "--no_figures"])
        again = time.perf_counter() - start
    steps = args.episodes * args.length
    print(
        f"{len(made)} caches x {args.episodes} episodes ({steps} steps each; written in {made_s:.1f} s): "
        f"stats {took:.1f} s (target <= 60 s), incremental re-run without figures {again:.1f} s"
    )
    return {"seconds": took, "incremental_seconds": again, "rows": summary["rows"]}


if __name__ == "__main__":
    main()
