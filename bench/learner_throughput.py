"""Learner throughput on the CPU against a CUDA device, and where an update's time goes: does a
GPU help a recipe, or do more env workers?

For each recipe (the default student of config.yaml; seed 002's two layers [32,64,128] and
[64,128,256] with intermediate 256 and router 64, on this project's inputs; any YAML given), all in
this one run so the ratios compare like with like on a noisy machine:
- learner updates/s: `Learner.step` (the replay forward, backward and Adam step) on ONE fixed
  batch of --num_envs x --unroll_len labelled steps (default 64 x 64) collected once from the
  level, on the CPU with each of --cpu_threads torch threads (default 1 and 2: "two CPU cores" is
  the better of the two, since on a busy machine a second thread can cost more than it gives) and
  on the device, after warm-up steps; the ratio device / best CPU; with --one_recurrence also on
  the CPU with each layer's router and experts in one block-diagonal recurrence (the learner
  before GRUs of mixture_of_experts.SPLIT_UNITS units or more got their own), same batch;
- end to end: train_mop's own loop (the same batch size, --workers env workers, async collection)
  for --e2e_updates updates, on the CPU and on the device: frames/s from metrics.jsonl, and per
  update the slowest worker's acting time (perf/collect_s) and the learner's (perf/learn_s). Their
  share says what bounds the loop: when collection takes longer than learning, more env workers
  (cores, or Modal containers' cpu) speed training up and a GPU does not.
Without CUDA the device columns say "no CUDA device: CPU only" and only the CPU is measured.

With --streams it measures instead the padded learner against the streamed one (issue 41,
mop/streams.py), in frame-gradients per CPU-second (labelled frames that received a gradient, per
second of this process's CPU time, time.process_time: load from other jobs matters less than for
wall time), all arms of a recipe interleaved step by step so they share the machine's state:
- padded: --learner_stream padded's replay path: episodes drawn from a pool until they hold the
  recipe's num_envs x unroll_len frames (--num_envs / --unroll_len, when given, override every
  recipe's), cut into unroll_len windows (the last padded) whose memory
  a no-grad pass rebuilds (replay_columns), then Learner.step;
- streamed C: EpisodeColumns with C columns of the same pool, memory carried, then Learner.step;
  C = the recipe's num_envs (the padded batch's real frames, paired) and each of --columns;
- with --one_recurrence, "streamed C fused": C = the recipe's num_envs on the same batches, each
  layer's router and experts in one block-diagonal recurrence, the learner before GRUs of
  mixture_of_experts.SPLIT_UNITS units or more got their own (its ratio to "streamed C" is printed).
The pool: --pool_frames frames of episodes the bot drives in the recipe's level (what DAgger
replays at first, and what demos hold). Per arm also the share of the matmul peak reached: the
learner's matmul FLOPs per frame (torch's FlopCounterMode, on one step) times frames per
CPU-second, over one core's measured float32 matmul peak (the best square product of 256, 512 or
1024, FLOPs per CPU-second); a recipe with `learner_precision: bfloat16` is measured against that
float32 peak too, so its share can pass 100% where the CPU has bf16 instructions.

    python bench/learner_throughput.py
    python bench/learner_throughput.py --recipes default,seed002,configs/BabyAI-GoToObjMaze-v0.yaml --updates 20
    python bench/learner_throughput.py --num_envs 16 --unroll_len 32 --e2e_updates 0   # learner only
    python bench/learner_throughput.py --streams --recipes default,configs/BabyAI-Unlock-v0.yaml,film
    python bench/learner_throughput.py --streams --one_recurrence --recipes configs/Unlock-bc.yaml,configs/GoToImpUnlock-wide-dagger.yaml \
        --num_envs 64 --unroll_len 64 --columns 64 --updates 6
    python bench/learner_throughput.py --one_recurrence --recipes configs/GoToImpUnlock-wide-dagger.yaml \
        --num_envs 64 --unroll_len 64 --e2e_updates 0 --updates 5 --cpu_threads 1,2   # wall, per thread count
Writes nothing but --out (JSON of every number, if given).
"""

from __future__ import annotations

import argparse
import contextlib
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

import mixture_of_experts as moe  # noqa: E402
import train_mop  # noqa: E402
from mixture_of_experts import build_policy  # noqa: E402
from mop.devices import DeviceError, default_num_workers, device_label, resolve_device  # noqa: E402
from mop.experiment import (  # noqa: E402
    ArgumentParser,
    ConfigError,
    TrainConfig,
    load_config,
    read_metrics,
)
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
# The FiLM arm of issue 32 (docs/findings.md): the Unlock recipe with BabyAI 1.1's trunk at 64 channels
FILM = (ROOT / "configs" / "BabyAI-Unlock-v0.yaml", {"input_encoder": "film", "trunk_channels": 64})


@contextlib.contextmanager
def one_recurrence_per_layer(on: bool = True):
    """Policies built inside run each layer's router and experts as one block-diagonal recurrence
    (mixture_of_experts.SPLIT_UNITS out of reach): the learner before GRUs of SPLIT_UNITS units or
    more got their own. The shipped value is back on exit."""
    shipped = moe.SPLIT_UNITS
    moe.SPLIT_UNITS = 10**9 if on else shipped
    try:
        yield
    finally:
        moe.SPLIT_UNITS = shipped


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
    if args.one_recurrence:  # the same batch, thread counts and warm-up, each layer as one recurrence
        result["learner_cpu_threads_fused"] = {}
        for threads in args.cpu_threads:
            torch.set_num_threads(threads)
            with one_recurrence_per_layer():
                result["learner_cpu_threads_fused"][threads] = learner_updates_per_s(cfg, chunk, args.updates)
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
        if "learner_cpu_threads_fused" in r:
            fused = r["learner_cpu_threads_fused"]
            cpu = "".join(f"{fused[t]:11.2f}" for t in threads)
            ratios = ", ".join(f"{r['learner_cpu_threads'][t] / fused[t]:.2f}x on {t}" for t in threads)
            print(f"{'  one recurrence per layer':<44}{'':>10}{cpu}   (split / one: {ratios})")
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


# ----------------------------------------------------------------------------- padded vs streamed


def stream_recipe(recipe: str, overrides: dict) -> TrainConfig:
    """A recipe at its own batch shape (num_envs, unroll_len): config.yaml's named ones, film, or a YAML."""
    if recipe == "film":
        base, keys = FILM
    elif recipe in RECIPES:
        base, keys = ROOT / "config.yaml", RECIPES[recipe]
    else:
        base, keys = Path(recipe), {}
    return load_config(base, {**keys, "checkpoint_interval": None, "device": "cpu", **overrides})


def shape_overrides(args: argparse.Namespace) -> dict:
    """--streams: the batch shape flags given, as config overrides of every recipe (once they were
    silently ignored there: `--unroll_len 256` measured the recipe's 64)."""
    return {k: getattr(args, k) for k in ("num_envs", "unroll_len") if getattr(args, k) is not None}


def matmul_peak(seconds: float = 0.5) -> float:
    """One core's float32 matmul FLOPs per CPU-second: the best of square products of 256, 512 and
    1024 (one torch thread), each repeated for `seconds` of CPU."""
    best = 0.0
    for n in (256, 512, 1024):
        a, b = torch.randn(n, n), torch.randn(n, n)
        a @ b
        count, started = 0, time.process_time()
        while time.process_time() - started < seconds:
            a @ b
            count += 1
        best = max(best, count * 2 * n**3 / (time.process_time() - started))
    return best


def episode_pool(cfg: TrainConfig, frames: int) -> list:
    """Whole episodes the bot drives (teacher forcing 1) in cfg's level, at least `frames` steps."""
    from mop.replay_buffer import EpisodeAssembler

    cfg = dataclasses.replace(
        cfg, teacher_forcing=1.0, teacher_forcing_final=None, teacher_forcing_decay_updates=0
    )
    learner = Learner.build(cfg, "mop", build_policy, train_mop.make_loss(cfg, cfg.expert_hidden_sizes), None)
    assembler, episodes = EpisodeAssembler(cfg.num_envs), []
    with open_collector(cfg, learner, build_policy, TrainState.start(cfg, None)) as collector:
        while sum(len(ep) for ep in episodes) < frames:
            episodes += assembler.add(collector.collect(learner.policy, learner.encoder, cfg.unroll_len))
    return episodes


def stream_arms(
    cfg: TrainConfig,
    episodes: list,
    columns: list[int],
    steps: int,
    peak: float,
    one_recurrence: bool = False,
) -> dict:
    """frame-gradients per CPU-second of each arm (interleaved, `steps` timed steps after one warm-up
    each), the padded arm's padding share, and each arm's share of the matmul peak. one_recurrence:
    also the recipe's own column count with each layer's GRUs in one block-diagonal recurrence
    (mixture_of_experts.SPLIT_UNITS out of reach: the learner before the split), on the same
    batches as its split arm."""
    from torch.utils.flop_counter import FlopCounterMode

    from mop.replay_buffer import EpisodeBuffer, replay_columns
    from mop.streams import EpisodeColumns

    loss = train_mop.make_loss(cfg, cfg.expert_hidden_sizes)
    arms: dict[str, dict] = {}

    def arm(name: str, batch_fn, after=None, fused: bool = False) -> None:
        torch.manual_seed(0)
        with one_recurrence_per_layer(fused):
            learner = Learner.build(cfg, "mop", build_policy, loss, None)
        arms[name] = {
            "learner": learner,
            "batch": batch_fn,
            "after": after,
            "cpu_s": 0.0,
            "frames": 0,
            "steps": 0,
        }

    pad_buffer = EpisodeBuffer(len(episodes), cfg.task_id, 0)
    pad_buffer.extend(episodes)

    def padded_batch(learner: Learner) -> dict:
        chosen = pad_buffer.sample_frames(cfg.num_envs * cfg.unroll_len)
        return replay_columns(chosen, learner.policy, learner.encoder, cfg.unroll_len, cfg.obs_encoding)

    arm("padded", padded_batch)

    def streamed(c: int) -> tuple:
        """A streamed arm's batch and carry functions: its own columns over the pool (seed c)."""
        buffer = EpisodeBuffer(len(episodes), cfg.task_id, c)
        buffer.extend(episodes)
        streams: dict = {}

        def streamed_batch(learner: Learner) -> dict:
            if "s" not in streams:
                streams["s"] = EpisodeColumns(
                    c, cfg.unroll_len, buffer.draw_uniform, buffer.get, learner.policy.memory_size
                )
            return streams["s"].next_chunk()

        def carry(learner: Learner) -> None:
            streams["s"].carry(learner.end_memory)

        return streamed_batch, carry

    for c in dict.fromkeys([cfg.num_envs, *columns]):
        arm(f"streamed {c}", *streamed(c))
        if one_recurrence and c == cfg.num_envs:  # the same batches, each layer's GRUs as one recurrence
            arm(f"streamed {c} fused", *streamed(c), fused=True)
    padded_frames = padded_steps = 0
    for step in range(steps + 1):
        for name, a in arms.items():
            learner = a["learner"]
            started = time.process_time()
            chunk = a["batch"](learner)
            learner.step(chunk)
            if a["after"]:
                a["after"](learner)
            spent = time.process_time() - started
            if step == 0:
                continue  # warm-up
            a["cpu_s"] += spent
            a["frames"] += int(chunk["label_mask"].sum())
            a["steps"] += 1
            if name == "padded":
                padded_frames += int(chunk["done"].size)
                padded_steps += int(chunk["label_mask"].sum())
    out: dict = {"padding_share": 1 - padded_steps / max(padded_frames, 1)}
    for name, a in arms.items():
        learner = a["learner"]
        with FlopCounterMode(display=False) as counter:
            chunk = a["batch"](learner)
            learner.step(chunk)
            if a["after"]:
                a["after"](learner)
        per_frame = counter.get_total_flops() / max(int(chunk["label_mask"].sum()), 1)
        rate = a["frames"] / a["cpu_s"]
        out[name] = {
            "frame_gradients_per_cpu_s": rate,
            "cpu_s": a["cpu_s"],
            "steps": a["steps"],
            "flops_per_frame": per_frame,
            "peak_share": per_frame * rate / peak,
        }
    return out


def run_streams(args: argparse.Namespace) -> dict:
    from mop.numpy_policy import use_one_thread

    use_one_thread()
    torch.set_num_threads(1)
    peak = matmul_peak()
    print(
        f"matmul peak: {peak / 1e9:.1f} GFLOP per CPU-second (one thread, best of 256/512/1024 square float32 products)",
        flush=True,
    )
    results = {"matmul_peak_flops_per_cpu_s": peak, "recipes": {}}
    for recipe in args.recipes.split(","):
        cfg = stream_recipe(recipe, {"num_workers": 0, **shape_overrides(args)})
        started = time.process_time()
        pool = episode_pool(cfg, args.pool_frames)
        print(
            f"{recipe}: {len(pool)} bot-driven episodes ({sum(map(len, pool))} frames, {time.process_time() - started:.1f} "
            f"CPU s); batch {cfg.num_envs} x {cfg.unroll_len}",
            flush=True,
        )
        result = stream_arms(cfg, pool, args.columns, args.updates, peak, args.one_recurrence)
        result["episode_lengths"] = [len(ep) for ep in pool]
        results["recipes"][recipe] = result
        base = result["padded"]["frame_gradients_per_cpu_s"]
        print(f"  padded batches: {result['padding_share']:.0%} of their steps are padding")
        for name, r in result.items():
            if isinstance(r, dict):
                print(
                    f"  {name:<20}{r['frame_gradients_per_cpu_s']:9.0f} frame-gradients/CPU-s  "
                    f"{r['frame_gradients_per_cpu_s'] / base:5.2f}x padded  {r['peak_share']:6.1%} of the matmul peak  "
                    f"({r['steps']} steps, {r['cpu_s']:.1f} CPU s)",
                    flush=True,
                )
        fused = result.get(f"streamed {cfg.num_envs} fused")
        if fused:
            split = result[f"streamed {cfg.num_envs}"]["frame_gradients_per_cpu_s"]
            print(
                f"  GRUs of >= {moe.SPLIT_UNITS} units in their own recurrence: "
                f"{split / fused['frame_gradients_per_cpu_s']:.2f}x one recurrence per layer (same batches)"
            )
    return results


def main(argv: list[str] | None = None) -> dict:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--recipes", default="default,seed002", help="comma list: default, seed002 or YAML files"
    )
    parser.add_argument("--task", default=None, help="level (default: each recipe's own)")
    parser.add_argument(
        "--num_envs", type=int, default=None, help="envs per batch (default 64; --streams: the recipe's)"
    )
    parser.add_argument(
        "--unroll_len",
        type=int,
        default=None,
        help="steps per env per batch (default 64; --streams: the recipe's, which this overrides)",
    )
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
    parser.add_argument(
        "--streams",
        action="store_true",
        help="measure the padded learner against the streamed one instead (frame-gradients per CPU-second)",
    )
    parser.add_argument(
        "--columns",
        default="16,32,64,128",
        help="--streams: streamed column counts measured (default 16,32,64,128)",
    )
    parser.add_argument(
        "--pool_frames",
        type=int,
        default=6000,
        help="--streams: frames of bot-driven episodes to replay (default 6000)",
    )
    parser.add_argument(
        "--one_recurrence",
        action="store_true",
        help="also time the learner with each layer's router and experts in one block-diagonal recurrence, "
        "as before GRUs of mixture_of_experts.SPLIT_UNITS units ran their own: per --cpu_threads on the "
        "same batch; with --streams, the recipe's own columns on the same batches (arm 'streamed C fused')",
    )
    args = parser.parse_args(argv)
    if args.streams:
        try:
            args.columns = [int(c) for c in args.columns.split(",")]
            if min(args.columns) < 1:
                raise ValueError
            for recipe in args.recipes.split(","):
                stream_recipe(recipe, shape_overrides(args))
        except (ValueError, ConfigError) as e:
            print(
                f"error: --columns/--recipes: {e or 'column counts must be integers >= 1'}", file=sys.stderr
            )
            sys.exit(2)
        load = os.getloadavg()
        results = run_streams(args)
        load_end = os.getloadavg()
        print(
            f"load average {load[0]:.2f} at the start, {load_end[0]:.2f} at the end ({os.cpu_count()} cores)"
        )
        results["load_average"] = [load[0], load_end[0]]
        if args.out:
            Path(args.out).write_text(json.dumps(results, indent=1))
        return results
    args.num_envs = 64 if args.num_envs is None else args.num_envs
    args.unroll_len = 64 if args.unroll_len is None else args.unroll_len
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
