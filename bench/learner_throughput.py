"""Learner throughput on the CPU against a CUDA device, and where an update's time goes: does a
GPU help a recipe, or do more env workers?

For each recipe (the default student of config.yaml; seed 002's two layers [32,64,128] and
[64,128,256] with intermediate 256 and router 64, on this project's inputs; any YAML given), all in
this one run so the ratios compare like with like on a noisy machine:
- learner updates/s: `Learner.step` (the replay forward, backward and Adam step) on ONE fixed
  batch of --num_envs x --unroll_len labelled steps (default 64 x 64) collected once from the
  level, on the CPU with each of --cpu_threads torch threads (default 1 and 2: "two CPU cores" is
  the better of the two, since on a busy machine a second thread can cost more than it gives) and
  on the device, after warm-up steps; the ratio device / best CPU;
- end to end: train_mop's own loop (the same batch size, --workers env workers, async collection)
  for --e2e_updates updates, on the CPU and on the device: frames/s from metrics.jsonl, and per
  update the slowest worker's acting time (perf/collect_s) and the learner's (perf/learn_s). Their
  share says what bounds the loop: when collection takes longer than learning, more env workers
  (cores, or Modal containers' cpu) speed training up and a GPU does not.
Without CUDA the device columns say "no CUDA device: CPU only" and only the CPU is measured.

    python bench/learner_throughput.py
    python bench/learner_throughput.py --recipes default,seed002,configs/BabyAI-GoToObjMaze-v0.yaml --updates 20
    python bench/learner_throughput.py --num_envs 16 --unroll_len 32 --e2e_updates 0   # learner only
Writes nothing but --out (JSON of every number, if given).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import train_mop  # noqa: E402
from mixture_of_experts import build_policy  # noqa: E402
from mop.devices import DeviceError, device_label, resolve_device  # noqa: E402
from mop.experiment import ArgumentParser, TrainConfig, default_num_workers, load_config, read_metrics  # noqa: E402
from mop.imitation import Learner, TrainState, open_collector  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
NO_DEVICE = "no CUDA device: CPU only"
# seed 002's configuration (the MoP integration guide): two layers, intermediate 256, router 64
RECIPES = {
    "default": {},
    "seed002": {
        "expert_hidden_sizes": [[32, 64, 128], [64, 128, 256]],
        "intermediate_dim": 256,
        "router_hidden_size": 64,
    },
}


def recipe_config(recipe: str, args: argparse.Namespace, **overrides) -> TrainConfig:
    """A named recipe over config.yaml, or a YAML file's, at the bench's batch size and level."""
    base, keys = (ROOT / "config.yaml", RECIPES[recipe]) if recipe in RECIPES else (Path(recipe), {})
    settings = {"num_envs": args.num_envs, "unroll_len": args.unroll_len, "checkpoint_interval": None}
    if args.task:
        settings["task_id"] = args.task
    return load_config(base, {**keys, **settings, **overrides})


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def learner_updates_per_s(cfg: TrainConfig, chunk: dict, updates: int, warmup: int = 2) -> float:
    """Learner.step on the same batch, `updates` times after `warmup` (cfg.device's learner)."""
    learner = Learner.build(cfg, "mop", build_policy, train_mop.make_loss(cfg, cfg.expert_hidden_sizes), None)
    for _ in range(warmup):
        learner.step(chunk)
    _sync(learner.device)
    started = time.perf_counter()
    for _ in range(updates):
        learner.step(chunk)
    _sync(learner.device)
    return updates / (time.perf_counter() - started)


def one_batch(cfg: TrainConfig) -> tuple[dict, int]:
    """One real chunk of cfg.num_envs x cfg.unroll_len labelled steps (the untrained student acts),
    and the policy's parameter count."""
    learner = Learner.build(cfg, "mop", build_policy, train_mop.make_loss(cfg, cfg.expert_hidden_sizes), None)
    with open_collector(cfg, learner, build_policy, TrainState.start(cfg, None)) as collector:
        chunk = collector.collect(learner.policy, learner.encoder, cfg.unroll_len)
    return chunk, sum(p.numel() for p in learner.policy.parameters())


def end_to_end(cfg: TrainConfig) -> dict:
    """train_mop's loop for cfg.num_updates updates: medians over the updates after the first
    (its collector start-up and warm-up) of frames/s and the perf/ seconds per update."""
    with tempfile.TemporaryDirectory() as tmp:
        run = dataclasses.replace(cfg, checkpoint_dir=tmp, log_interval=1)
        rows = read_metrics(train_mop.main(run, progress=False)["metrics_path"])[1:]
    out = {"frames_per_s": float(np.median([r["perf/frames_per_s"] for r in rows]))}
    for part in ("collect", "learn", "wait"):
        out[f"{part}_s"] = float(np.median([r.get(f"perf/{part}_s", np.nan) for r in rows]))
    out["collection_share"] = out["collect_s"] / (out["collect_s"] + out["learn_s"])
    return out


def bound_by(e2e: dict) -> str:
    if e2e["collect_s"] > e2e["learn_s"]:
        return "collection: more env workers help, a GPU does not"
    return "learning: a faster learner (a GPU) helps"


def measure(recipe: str, args: argparse.Namespace, device: torch.device | None) -> dict:
    print(f"{recipe}: collecting one batch, then timing the learner and the loop", flush=True)
    cfg = recipe_config(recipe, args, device="cpu", num_workers=args.workers)
    chunk, params = one_batch(cfg)
    result: dict = {"recipe": recipe, "params": params, "frames_per_update": cfg.num_envs * cfg.unroll_len}
    result["learner_cpu_threads"] = {}
    for threads in args.cpu_threads:
        torch.set_num_threads(threads)
        result["learner_cpu_threads"][threads] = learner_updates_per_s(cfg, chunk, args.updates)
    result["learner_cpu"] = max(result["learner_cpu_threads"].values())
    torch.set_num_threads(1)
    if device is not None:
        result["learner_device"] = learner_updates_per_s(
            recipe_config(recipe, args, device=str(device)), chunk, args.updates
        )
        result["learner_ratio"] = result["learner_device"] / result["learner_cpu"]
    if args.e2e_updates > 0:
        e2e = dict(device="cpu", num_workers=args.workers, num_updates=args.e2e_updates + 1)
        result["e2e_cpu"] = end_to_end(recipe_config(recipe, args, **e2e))
        if device is not None:
            e2e["device"] = str(device)
            result["e2e_device"] = end_to_end(recipe_config(recipe, args, **e2e))
            result["e2e_ratio"] = result["e2e_device"]["frames_per_s"] / result["e2e_cpu"]["frames_per_s"]
    return result


def report(results: list[dict], device_text: str) -> None:
    threads = list(results[0]["learner_cpu_threads"])
    print(f"\nlearner updates/s (forward + backward + Adam on one batch); device: {device_text}")
    cpu_columns = "".join(f"{f'CPU {t} thr':>11}" for t in threads)
    print(f"{'recipe':<44}{'params':>10}{cpu_columns}{'device':>10}{'ratio':>9}")
    for r in results:
        cpu = "".join(f"{r['learner_cpu_threads'][t]:11.2f}" for t in threads)
        dev = (
            f"{r['learner_device']:10.2f}{r['learner_ratio']:8.1f}x"
            if "learner_device" in r
            else f"{'-':>10}{'-':>9}"
        )
        print(f"{r['recipe']:<44}{r['params']:>10,}{cpu}{dev}")
    if not any("e2e_cpu" in r for r in results):
        return
    print(
        "\nend to end (train_mop's loop): frames/s; per update, the slowest worker's acting and the learner's step"
    )
    print(
        f"{'recipe':<28}{'where':<8}{'frames/s':>10}{'collect s':>11}{'learn s':>9}{'collect share':>15}  bound by"
    )
    for r in results:
        for where in ("cpu", "device"):
            e2e = r.get(f"e2e_{where}")
            if e2e is None:
                continue
            print(
                f"{r['recipe']:<28}{where:<8}{e2e['frames_per_s']:10.0f}{e2e['collect_s']:11.2f}"
                f"{e2e['learn_s']:9.2f}{e2e['collection_share']:14.0%}  {bound_by(e2e)}"
            )
        if "e2e_ratio" in r:
            print(f"{r['recipe']:<28}device / CPU end to end: {r['e2e_ratio']:.2f}x")


def main(argv: list[str] | None = None) -> dict:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--recipes", default="default,seed002", help="comma list: default, seed002 or YAML files"
    )
    parser.add_argument("--task", default=None, help="level (default: each recipe's own)")
    parser.add_argument("--num_envs", type=int, default=64, help="envs per batch (default 64)")
    parser.add_argument("--unroll_len", type=int, default=64, help="steps per env per batch (default 64)")
    parser.add_argument(
        "--updates", type=int, default=10, help="timed learner steps per setting (default 10)"
    )
    parser.add_argument("--e2e_updates", type=int, default=4, help="timed loop updates per setting; 0: none")
    parser.add_argument(
        "--workers", type=int, default=default_num_workers(), help="env workers (default: cores)"
    )
    parser.add_argument(
        "--cpu_threads",
        default="1,2",
        help="torch thread counts of the CPU learner, each measured (default 1,2)",
    )
    parser.add_argument("--device", default="auto", help="the device to compare with the CPU (default auto)")
    parser.add_argument("--out", default=None, help="also write the numbers as JSON here")
    args = parser.parse_args(argv)
    try:
        text, args.cpu_threads = (
            args.cpu_threads,
            [int(t) for t in args.cpu_threads.split(",") if t.isdigit()],
        )
        if len(args.cpu_threads) != len(text.split(",")) or min(args.cpu_threads) < 1:
            raise ValueError(f"--cpu_threads must be a comma list of thread counts >= 1, got {text!r}")
        device = resolve_device(args.device)
        for recipe in args.recipes.split(","):
            recipe_config(recipe, args)
    except (DeviceError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    device_text = device_label(device) if device.type != "cpu" else NO_DEVICE
    load = os.getloadavg()
    print(
        f"batch {args.num_envs} envs x {args.unroll_len} steps, {args.workers} env workers, {os.cpu_count()} "
        f"cores, device {device_text}; load average {load[0]:.2f} at the start"
    )
    results = [
        measure(recipe, args, device if device.type != "cpu" else None) for recipe in args.recipes.split(",")
    ]
    report(results, device_text)
    load_end = os.getloadavg()
    print(
        f"\nload average {load_end[0]:.2f} at the end (other work on this machine slows every column alike)"
    )
    summary = {"device": device_text, "load_average": [load[0], load_end[0]], "results": results}
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    main()
