"""Training throughput (frames/s) of train_mop's loop vs a plain sequential step-with-graph loop.

Frames = labelled env steps used for training. Ours is measured through train_mop.main itself
(default config: 16 envs x 32 steps on BabyAI-GoToLocal-v0) with 1 worker and with all cores,
with sync and async collection (the default), after a warm-up; the baseline is the straightforward loop in one process: step every env and
ask minigrid's own BabyAIBot in Python, run the policy one step at a time with graph, backward
once per unroll (same model, same fused GRU kernels).
All three run in this one invocation, so the ratios compare like with like on a noisy machine.

    python bench/train_throughput.py
    python bench/train_throughput.py --updates 60 --task BabyAI-GoToLocal-v0 --rounds 3
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from minigrid.utils.baby_ai_bot import BabyAIBot

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import train_mop  # noqa: E402
from mixture_of_experts import build_policy, compute_lpc, reset_memory  # noqa: E402
from mop.babyai_env import encode_obs, make_env, obs_dim, quiet_reset, train_episode_seed  # noqa: E402
from mop.devices import default_num_workers  # noqa: E402
from mop.experiment import load_config, read_metrics  # noqa: E402
from mop.language import build_mission_encoder  # noqa: E402

PARTS = ("wait", "submit", "learn", "collect")


def ours(task: str, updates: int, workers: int, async_collection: bool) -> dict:
    """frames/s, and the learner's mean per-update seconds (perf/*_s), medians over the logged
    windows after the first (the warm-up)."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(
            None,
            {
                "task_id": task,
                "num_updates": updates,
                "log_interval": 10,
                "num_workers": workers,
                "checkpoint_dir": tmp,
                "checkpoint_interval": None,
                "async_collection": async_collection,
            },
        )
        summary = train_mop.main(cfg, progress=False)
        rows = read_metrics(summary["metrics_path"])
    rows = rows[1:]  # skip the warm-up window
    result = {"fps": float(np.median([r["perf/frames_per_s"] for r in rows]))}
    for part in PARTS:
        result[part] = float(np.median([r.get(f"perf/{part}_s", np.nan) for r in rows]))
    return result


def baseline(task: str, updates: int) -> float:
    """The straightforward loop, as a first implementation would write it."""
    cfg = load_config(None, {"task_id": task})
    torch.set_num_threads(1)
    config = {**dataclasses.asdict(cfg), "input_dim": obs_dim(cfg.obs_encoding), "num_actions": 7}
    policy, encoder = build_policy(config), build_mission_encoder("bow", cfg.lang_dim)
    optimizer = torch.optim.Adam(list(policy.parameters()) + list(encoder.parameters()), lr=cfg.lr)
    envs = [make_env(task, fast=False) for _ in range(cfg.num_envs)]  # minigrid's own gen_obs
    obs = [quiet_reset(env, train_episode_seed(0, i, 0)) for i, env in enumerate(envs)]
    bots = [BabyAIBot(env) for env in envs]
    prev = [None] * cfg.num_envs
    episodes = [1] * cfg.num_envs
    memory = policy.init_memory(cfg.num_envs)
    frames, start = 0, None
    for update in range(updates):
        if update == 2:
            frames, start = 0, time.perf_counter()
        memory = memory.detach()
        losses = []
        for _ in range(cfg.unroll_len):
            labels = torch.tensor([int(b.replan(p)) for b, p in zip(bots, prev)])
            x = encode_obs(
                torch.from_numpy(np.stack([o["image"] for o in obs])),
                torch.tensor([o["direction"] for o in obs]),
                torch.tensor([env.carrying is not None for env in envs]),
                cfg.obs_encoding,
            )
            out = policy.step(x, encoder([o["mission"] for o in obs]), memory)
            losses.append(
                F.cross_entropy(out.logits, labels)
                + cfg.lpc_alpha * compute_lpc(out.router_weights, cfg.expert_hidden_sizes, reduction="mean")
            )
            actions = out.logits.argmax(-1).tolist()
            done = torch.zeros(cfg.num_envs, dtype=torch.bool)
            for i, env in enumerate(envs):
                obs[i], _, terminated, truncated, _ = env.step(actions[i])
                prev[i] = actions[i]
                if terminated or truncated:
                    obs[i] = quiet_reset(env, train_episode_seed(0, i, episodes[i]))
                    episodes[i] += 1
                    bots[i], prev[i], done[i] = BabyAIBot(env), None, True
            memory = reset_memory(out.memory, done)
            frames += cfg.num_envs
        optimizer.zero_grad()
        torch.stack(losses).mean().backward()
        optimizer.step()
    return frames / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--task", default="BabyAI-GoToLocal-v0")
    parser.add_argument("--updates", type=int, default=50, help="updates per measurement (default 50)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure every setting this many times, in turn; report the best",
    )
    args = parser.parse_args()
    all_workers = default_num_workers()
    print(f"task {args.task}, 16 envs x 32 steps, default MoP model, {all_workers} cores")
    settings = ((1, False), (all_workers, False), (all_workers, True))
    best: dict = {"base": 0.0, **{s: {"fps": 0.0} for s in settings}}
    for _ in range(args.rounds):  # on a shared machine, the best of a few rounds is the least disturbed
        best["base"] = max(best["base"], baseline(args.task, max(args.updates // 2, 6)))
        for s in settings:
            measured = ours(args.task, args.updates, *s)
            if measured["fps"] > best[s]["fps"]:
                best[s] = measured
    base = best["base"]
    print(f"baseline  {'sequential step-with-graph loop':<32}: {base:7.0f} frames/s   1.00x")
    for workers, async_collection in settings:
        fps = best[(workers, async_collection)]["fps"]
        mode = "async" if async_collection else "sync"
        name = f"{workers} worker(s), {mode} collection"
        print(f"ours      {name:<32}: {fps:7.0f} frames/s   {fps / base:.2f}x")
    one, two = best[settings[0]]["fps"], best[settings[2]]["fps"]
    print(f"{all_workers} workers async / 1 worker sync: {two / one:.2f}x")
    print("\nthe learner's time per update, ms (wait: for the chunk; submit: sending weights;")
    print("learn: replay + step; collect: the slowest collector acting for the chunk)")
    print(f"{'':<32}" + "".join(f"{part:>9}" for part in PARTS))
    for workers, async_collection in settings:
        mode = "async" if async_collection else "sync"
        measured = best[(workers, async_collection)]
        cells = "".join(f"{1000 * measured[part]:9.1f}" for part in PARTS)
        print(f"{f'{workers} worker(s), {mode}':<32}{cells}")


if __name__ == "__main__":
    main()
