"""Evaluate a trained checkpoint (MoP or GRU baseline): success, path ratio, LPC, expert usage,
and the per-step routing record that the plots read.

Evaluation runs exactly `num_episodes` episodes whose layouts are the evaluation seeds
EVAL_SEED_START + k (never trained on), so every checkpoint meets the same layouts and two runs
give the same numbers. Envs pick up the next episode when theirs ends; no episode is cut short to
fill a quota, and only the counted episodes reach the cache. Greedy actions unless --sample.

    python eval_mop.py --checkpoint checkpoints/BabyAI-GoToObj-v0/trial_0/checkpoint_final.pt --num_episodes 100
    python eval_mop.py --checkpoint ... --task_id BabyAI-GoToLocal-v0 --knockout largest --cache_dir evaluation_cache
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing as mp
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from babyai_env import (
    EVAL_SEED_START,
    bot_path_length,
    check_task_id,
    encode_obs,
    make_env,
    obs_dim,
    quiet_reset,
)
from experiment import load_checkpoint
from language import MissionEncoderError, build_mission_encoder
from mixture_of_experts import MixtureOfExpertsPolicy, build_policy, compute_lpc
from routing_cache import cache_dir_for, weight_column, write_cache


class EvalError(ValueError):
    """A bad checkpoint, task or option; the message names it."""


# ----------------------------------------------------------------------------- loading


def load_policy(checkpoint_path: str | os.PathLike) -> tuple[torch.nn.Module, torch.nn.Module, dict]:
    """(policy, mission encoder, config) of a checkpoint, in eval mode. Raises EvalError."""
    try:
        ckpt = load_checkpoint(checkpoint_path)
    except ValueError as e:
        raise EvalError(str(e)) from None
    config = dict(ckpt["config"])
    # Checkpoints of the seed's format predate these keys.
    config.setdefault("policy_type", "mop")
    config.setdefault("obs_encoding", "raw")
    config.setdefault("input_encoder", "linear")
    config.setdefault("num_actions", 7)
    config.setdefault("update", ckpt.get("update"))
    missing = [k for k in ("task_id", "input_dim", "lang_dim") if k not in config]
    if missing:
        raise EvalError(f"checkpoint {str(checkpoint_path)!r} has no {', '.join(missing)} in its config")
    try:
        policy = build_policy(config)
        policy.load_state_dict(ckpt["policy_state_dict"])
    except (KeyError, RuntimeError, ValueError, TypeError) as e:
        first = str(e).strip().splitlines()[0]
        raise EvalError(f"checkpoint {str(checkpoint_path)!r} does not match its config: {first}") from None
    state = ckpt.get("encoder_state")
    kind = config.get("lang_encoder", "distilbert" if "lang_proj_state_dict" in ckpt else "bow")
    if state is None and "lang_proj_state_dict" in ckpt:
        state = {
            "kind": "distilbert",
            "lang_dim": config["lang_dim"],
            "lang_proj_state_dict": ckpt["lang_proj_state_dict"],
        }
    try:
        encoder = build_mission_encoder(
            kind, config["lang_dim"], config.get("distilbert_path", "distilbert-base-uncased"), state=state
        )
    except (MissionEncoderError, ValueError) as e:
        raise EvalError(f"checkpoint {str(checkpoint_path)!r}: {e}") from None
    policy.eval()
    encoder.eval()
    return policy, encoder, config


def parse_knockout(spec: str | None, expert_sizes: list[list[int]]) -> list[list[bool]] | None:
    """'largest' (every layer's largest expert) or 'layer_<k>:<j>[,layer_<k>:<j>...]' (0-based,
    as in the cache's column names) -> disabled[k][j]."""
    if not spec:
        return None
    if not expert_sizes:
        raise EvalError("--knockout needs a MoP checkpoint (the GRU baseline has no experts)")
    disabled = [[False] * len(sizes) for sizes in expert_sizes]
    if spec == "largest":
        for k, sizes in enumerate(expert_sizes):
            disabled[k][int(np.argmax(sizes))] = True
        return disabled
    for part in spec.split(","):
        try:
            layer, expert = part.strip().removeprefix("layer_").split(":")
            k, j = int(layer), int(expert)
            disabled[k][j] = True
        except (ValueError, IndexError):
            raise EvalError(
                f"--knockout {spec!r}: use 'largest' or 'layer_<k>:<j>' with k < {len(expert_sizes)} and j an expert "
                f"index of that layer (sizes {expert_sizes})"
            ) from None
    return disabled


# ----------------------------------------------------------------------------- env context and phases


def _objects(env: Any) -> dict[str, list]:
    found: dict[str, list] = {"goals": [], "doors": [], "keys": [], "balls": [], "boxes": []}
    names = {"goal": "goals", "door": "doors", "key": "keys", "ball": "balls", "box": "boxes"}
    for y in range(env.grid.height):
        for x in range(env.grid.width):
            obj = env.grid.get(x, y)
            if obj is None or obj.type not in names:
                continue
            entry = [x, y, obj.color]
            if obj.type == "door":
                entry += [bool(obj.is_open), bool(obj.is_locked)]
            found[names[obj.type]].append(entry)
    return found


def _ordered_instructions(instr: Any) -> list:
    """Leaf instructions in execution order: AfterInstr(a, b) runs b first."""
    name = type(instr).__name__
    if name == "AfterInstr":
        return _ordered_instructions(instr.instr_b) + _ordered_instructions(instr.instr_a)
    if name in ("BeforeInstr", "AndInstr"):
        return _ordered_instructions(instr.instr_a) + _ordered_instructions(instr.instr_b)
    return [instr]


def _target_objects(env: Any) -> tuple[list, list]:
    """(objects of the first target in execution order, door objects named by the mission)."""
    leaves = _ordered_instructions(env.instrs)
    first = leaves[0]
    desc = getattr(first, "desc_move", None) or getattr(first, "desc", None)
    targets = list(getattr(desc, "obj_set", []) or [])
    doors = [
        o
        for leaf in leaves
        for o in (getattr(getattr(leaf, "desc", None), "obj_set", []) or [])
        if o.type == "door"
    ]
    return targets, doors


def env_context(env: Any, targets: list) -> dict:
    """The layout at episode start, as the seed's env_context plus room bounds and target."""
    ctx: dict[str, Any] = {
        "grid_size": [env.grid.width, env.grid.height],
        "agent_start_pos": [int(v) for v in env.agent_pos],
    }
    if hasattr(env, "room_grid"):
        room = env.room_from_pos(*env.agent_pos)
        ctx["agent_start_room"] = [int(v) for v in room.top]
        ctx["room_grid_shape"] = [env.num_cols, env.num_rows]
        (x0, y0), (w, h) = room.top, room.size
        ctx["room_bounds"] = [x0 + 1, y0 + 1, x0 + w - 2, y0 + h - 2]
    else:
        ctx["agent_start_room"] = None
        ctx["room_grid_shape"] = None
        ctx["room_bounds"] = [1, 1, env.grid.width - 2, env.grid.height - 2]
    ctx.update(_objects(env))
    positions = [o.cur_pos for o in targets if o.cur_pos is not None]
    if positions:
        start = np.asarray(env.agent_pos)
        nearest = min(positions, key=lambda p: float(np.hypot(*(np.asarray(p) - start))))
        ctx["target_pos"] = [int(v) for v in nearest]
    else:
        ctx["target_pos"] = None
    return ctx


class _Tracker:
    """Phase timestamps and distances for one episode (what the routing analyses group by)."""

    def __init__(self, env: Any):
        self.env = env
        self.targets, self.mission_doors = _target_objects(env)
        self.doors = [
            (x, y)
            for y in range(env.grid.height)
            for x in range(env.grid.width)
            if (o := env.grid.get(x, y)) is not None and o.type == "door"
        ]
        self.closed_at_start = {p for p in self.doors if not env.grid.get(*p).is_open}
        self.key = next(
            (
                env.grid.get(x, y)
                for y in range(env.grid.height)
                for x in range(env.grid.width)
                if (o := env.grid.get(x, y)) is not None and o.type == "key"
            ),
            None,
        )
        self.t_unlocked = self.t_pick = self.t_drop = None
        self.first_door: tuple[int, int] | None = None

    def _distance_to(self, objects: list) -> float:
        pos = np.asarray(self.env.agent_pos, dtype=float)
        best = math.nan
        for o in objects:
            if self.env.carrying is o:
                return 0.0
            if o.cur_pos is None or o.cur_pos[0] < 0:
                continue
            d = float(np.hypot(*(np.asarray(o.cur_pos) - pos)))
            best = d if math.isnan(best) else min(best, d)
        return best

    def observe(self, t: int) -> tuple:
        """Update timestamps from the state before step t's action; return this step's phase fields."""
        env = self.env
        if self.t_unlocked is None:
            for p in self.closed_at_start:
                if env.grid.get(*p).is_open:
                    self.t_unlocked, self.first_door = t, p
                    break
        carrying = env.carrying is not None
        if self.t_pick is None and carrying:
            self.t_pick = t
        elif self.t_pick is not None and self.t_drop is None and not carrying:
            self.t_drop = t
        nan = math.nan
        return (
            int(carrying),
            int(self.t_unlocked is not None),
            nan if self.t_unlocked is None else self.t_unlocked,
            nan if self.t_pick is None else self.t_pick,
            nan if self.t_drop is None else self.t_drop,
            nan if self.key is None else self._distance_to([self.key]),
            self._distance_to(self.targets) if self.targets else nan,
        )

    def door_of_episode(self) -> tuple[int, int] | None:
        """The door opened first; else the mission's first door; else the only door."""
        if self.first_door is not None:
            return self.first_door
        for o in self.mission_doors:
            if o.cur_pos is not None:
                return tuple(int(v) for v in o.cur_pos)
        return self.doors[0] if len(self.doors) == 1 else None


# ----------------------------------------------------------------------------- evaluation loop


# Per-step fields recorded in Python (weights and logits are recorded as arrays).
_RECORDED = (
    "episode",
    "t",
    "env_slot",
    "x",
    "y",
    "direction",
    "carrying",
    "door_unlocked",
    "t_unlocked",
    "t_pick",
    "t_drop",
    "dist_to_key",
    "dist_to_target",
    "action",
    "lpc",
    "entropy",
)


@dataclass
class EvalResult:
    metrics: dict
    steps: pd.DataFrame  # empty when record=False
    episodes: pd.DataFrame
    config: dict  # the checkpoint's run config (what save_evaluation and the cache need)


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval for a success rate (sound near 0 and 1, unlike the normal one)."""
    if n == 0:
        return math.nan, math.nan
    p = successes / n
    denom = 1 + z**2 / n
    center = (p + z**2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denom
    low = 0.0 if successes == 0 else max(0.0, center - half)  # exact at the ends (no rounding)
    high = 1.0 if successes == n else min(1.0, center + half)
    return low, high


@torch.no_grad()
def run_episodes(
    policy: torch.nn.Module,
    encoder: torch.nn.Module,
    config: dict,
    task_id: str,
    episode_indices: list[int],
    num_envs: int = 16,
    max_steps: int | None = None,
    sample: bool = False,
    record: bool = True,
    bot_paths: dict[int, int | None] | None = None,
    progress: Any = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run exactly the given evaluation episodes (layout seed EVAL_SEED_START + index)."""
    expert_sizes = [list(s) for s in getattr(policy, "expert_sizes", ())]
    is_mop = isinstance(policy, MixtureOfExpertsPolicy)
    queue = list(episode_indices)[::-1]
    n = min(num_envs, len(queue))
    envs = [make_env(task_id, max_steps) for _ in range(n)]
    memory = policy.init_memory(n)
    lang_cache: dict[str, torch.Tensor] = {}
    slot_episode: list[int | None] = [None] * n
    slot_obs: list[dict] = [{}] * n
    slot_t = [0] * n
    slot_tracker: list[_Tracker | None] = [None] * n
    slot_rng: list[np.random.Generator | None] = [None] * n
    slot_sums: list[dict] = [{}] * n
    episode_rows: list[dict] = []
    step_cols: dict[str, list] = {k: [] for k in _RECORDED}
    step_arrays: dict[str, list[np.ndarray]] = {
        "logits": [],
        **{f"w{k}": [] for k in range(len(expert_sizes))},
    }
    finished: dict[int, dict] = {}

    def start(i: int) -> None:
        k = queue.pop()
        seed = EVAL_SEED_START + k
        slot_episode[i], slot_t[i] = k, 0
        slot_obs[i] = quiet_reset(envs[i], seed)
        slot_tracker[i] = _Tracker(envs[i])
        slot_rng[i] = np.random.default_rng(seed) if sample else None
        slot_sums[i] = {
            "lpc": 0.0,
            "weights": [np.zeros(len(s)) for s in expert_sizes],
            "entropy": 0.0,
            "context": env_context(envs[i], slot_tracker[i].targets),
            "mission": slot_obs[i]["mission"],
            "seed": seed,
            "max_steps": int(envs[i].max_steps),
        }
        memory[i] = 0.0

    for i in range(n):
        start(i)
    while any(e is not None for e in slot_episode):
        active = [i for i in range(n) if slot_episode[i] is not None]
        idx = torch.tensor(active)
        obs = encode_obs(
            torch.from_numpy(np.stack([slot_obs[i]["image"] for i in active])),
            torch.tensor([slot_obs[i]["direction"] for i in active]),
            torch.tensor([envs[i].carrying is not None for i in active]),
            config["obs_encoding"],
        )
        missions = [slot_obs[i]["mission"] for i in active]
        new = [m for m in dict.fromkeys(missions) if m not in lang_cache]
        if new:
            lang_cache.update(zip(new, encoder(new)))
        out = policy.step(obs, torch.stack([lang_cache[m] for m in missions]), memory[idx])
        memory[idx] = out.memory
        log_probs = torch.log_softmax(out.logits, -1)
        entropy = -(log_probs.exp() * log_probs).sum(-1).numpy()
        lpc = (
            compute_lpc(out.router_weights, expert_sizes, config.get("lpc_exponent", 2.0)).numpy()
            if is_mop
            else np.zeros(len(active))
        )
        weights = [w.numpy() for w in out.router_weights]
        if sample:
            probs = log_probs.exp().double().numpy()
            actions = [int(slot_rng[i].choice(len(p), p=p / p.sum())) for i, p in zip(active, probs)]
        else:
            actions = out.logits.argmax(-1).tolist()
        if record:
            step_arrays["logits"].append(out.logits.numpy())
            for k, w in enumerate(weights):
                step_arrays[f"w{k}"].append(w)
        for r, i in enumerate(active):
            env, t = envs[i], slot_t[i]
            sums = slot_sums[i]
            sums["lpc"] += float(lpc[r])
            sums["entropy"] += float(entropy[r])
            for k, w in enumerate(weights):
                sums["weights"][k] += w[r]
            if record:
                phase = slot_tracker[i].observe(t)
                for key, value in zip(
                    _RECORDED,
                    (
                        slot_episode[i],
                        t,
                        i,
                        int(env.agent_pos[0]),
                        int(env.agent_pos[1]),
                        int(env.agent_dir),
                        *phase,
                        actions[r],
                        float(lpc[r]),
                        float(entropy[r]),
                    ),
                ):
                    step_cols[key].append(value)
            else:
                slot_tracker[i].observe(t)
            slot_obs[i], reward, terminated, truncated, _ = env.step(actions[r])
            slot_t[i] = t + 1
            if terminated or truncated:
                k = slot_episode[i]
                tracker = slot_tracker[i]
                tracker.observe(t + 1)  # events caused by the last action
                length = t + 1
                success = bool(terminated and reward > 0)
                door = tracker.door_of_episode()
                episode_rows.append(
                    {
                        "episode": k,
                        "seed": sums["seed"],
                        "env_slot": i,
                        "mission": sums["mission"],
                        "success": success,
                        "terminated": bool(terminated),
                        "truncated": bool(truncated),
                        "reward": float(reward),
                        "length": length,
                        "max_steps": sums["max_steps"],
                        "mean_lpc": sums["lpc"] / length,
                        "mean_entropy": sums["entropy"] / length,
                        "t_unlocked": tracker.t_unlocked,
                        "t_pick": tracker.t_pick,
                        "t_drop": tracker.t_drop,
                        "door_x": None if door is None else door[0],
                        "door_y": None if door is None else door[1],
                        "env_context": json.dumps(sums["context"], separators=(",", ":")),
                        **{
                            weight_column(kk, j): float(w[j] / length)
                            for kk, w in enumerate(sums["weights"])
                            for j in range(len(w))
                        },
                    }
                )
                finished[k] = episode_rows[-1]
                if progress is not None:
                    progress.update(1)
                if queue:
                    start(i)
                else:
                    slot_episode[i] = None

    episodes = pd.DataFrame(episode_rows).sort_values("episode").reset_index(drop=True)
    # Bot path lengths: the path_ratio denominator, shared by every checkpoint on this layout.
    optimal = []
    for seed in episodes["seed"]:
        if bot_paths is not None and int(seed) in bot_paths:
            optimal.append(bot_paths[int(seed)])
        else:
            steps_needed = bot_path_length(task_id, int(seed), max_steps)
            optimal.append(steps_needed)
            if bot_paths is not None:
                bot_paths[int(seed)] = steps_needed
    episodes["optimal_length"] = pd.array(optimal, dtype="Int64")
    for col in ("t_unlocked", "t_pick", "t_drop", "door_x", "door_y"):
        episodes[col] = pd.array(episodes[col].tolist(), dtype="Int64")
    if not record:
        return pd.DataFrame(), episodes
    steps = pd.DataFrame(step_cols)
    logits = np.concatenate(step_arrays["logits"]) if step_arrays["logits"] else np.zeros((0, 7))
    for a in range(logits.shape[1]):
        steps[f"logit_{a}"] = logits[:, a]
    for k, sizes in enumerate(expert_sizes):
        w = np.concatenate(step_arrays[f"w{k}"])
        for j in range(len(sizes)):
            steps[weight_column(k, j)] = w[:, j]
    steps = steps.sort_values(["episode", "t"], kind="stable").reset_index(drop=True)
    door_x = steps["episode"].map(episodes.set_index("episode")["door_x"]).astype(float)
    door_y = steps["episode"].map(episodes.set_index("episode")["door_y"]).astype(float)
    steps["dist_to_door"] = np.hypot(steps["x"] - door_x, steps["y"] - door_y)
    return steps, episodes


def compute_metrics(episodes: pd.DataFrame, expert_sizes: list[list[int]]) -> dict:
    """Summary numbers of one evaluation, from its episodes table (step-weighted where per step)."""
    n = len(episodes)
    successes = int(episodes["success"].sum())
    low, high = wilson_interval(successes, n)
    lengths = episodes["length"].to_numpy(dtype=float)
    ok = episodes[episodes["success"] & episodes["optimal_length"].notna()]
    ratios = ok["length"].to_numpy(dtype=float) / ok["optimal_length"].to_numpy(dtype=float)
    metrics = {
        "num_episodes": n,
        "success_rate": successes / n if n else math.nan,
        "success_ci_low": low,
        "success_ci_high": high,
        "path_ratio": float(ratios.mean()) if len(ratios) else math.nan,
        "mean_lpc": float((episodes["mean_lpc"] * lengths).sum() / lengths.sum())
        if expert_sizes
        else math.nan,
        "mean_episode_length": float(lengths.mean()) if n else math.nan,
        "mean_entropy": float((episodes["mean_entropy"] * lengths).sum() / lengths.sum()),
        "bot_plan_failures": int(episodes["optimal_length"].isna().sum()),
    }
    for k, sizes in enumerate(expert_sizes):
        for j in range(len(sizes)):
            col = weight_column(k, j)
            metrics[f"usage_{col}"] = float((episodes[col] * lengths).sum() / lengths.sum())
    return metrics


def _worker(args: tuple) -> tuple[pd.DataFrame, pd.DataFrame]:
    torch.set_num_threads(1)
    checkpoint_path, task_id, block, kwargs, knockout = args
    policy, encoder, config = load_policy(checkpoint_path)
    if knockout is not None:
        policy.set_knockout(*knockout)
    return run_episodes(policy, encoder, config, task_id, block, **kwargs)


@contextlib.contextmanager
def _one_torch_thread() -> Iterator[None]:
    """Batches of <= num_envs rows: extra torch threads only add contention (10x slower here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def evaluate(
    checkpoint_path: str | os.PathLike,
    task_id: str | None = None,
    num_episodes: int = 100,
    num_envs: int = 16,
    max_steps: int | None = None,
    sample: bool = False,
    knockout: str | None = None,
    knockout_threshold: float | None = None,
    record: bool = True,
    num_workers: int = 1,
    bot_paths: dict[int, int | None] | None = None,
    progress: bool = False,
) -> EvalResult:
    """Evaluate one checkpoint: the function eval_mop, batch_eval, the notebooks and Modal share.

    task_id: level to evaluate on (default: the one it was trained on); max_steps: default the
    training run's. num_workers > 1 splits the episodes over processes (same numbers)."""
    if num_episodes <= 0 or num_envs <= 0 or num_workers <= 0:
        raise EvalError("num_episodes, num_envs and num_workers must be positive")
    policy, encoder, config = load_policy(checkpoint_path)
    task_id = task_id or config["task_id"]
    try:
        check_task_id(task_id)
    except ValueError as e:
        raise EvalError(str(e)) from None
    if max_steps is None:
        max_steps = config.get("max_steps")
    expert_sizes = [list(s) for s in getattr(policy, "expert_sizes", ())]
    ko = None
    if knockout or knockout_threshold is not None:
        if not isinstance(policy, MixtureOfExpertsPolicy):
            raise EvalError("knockout needs a MoP checkpoint (the GRU baseline has no experts)")
        ko = (parse_knockout(knockout, expert_sizes), knockout_threshold)
        try:
            policy.set_knockout(*ko)
        except ValueError as e:
            raise EvalError(f"--knockout {knockout!r}: {e}") from None
    if config.get("input_dim") != obs_dim(config["obs_encoding"]):
        raise EvalError(
            f"checkpoint {str(checkpoint_path)!r}: input_dim {config.get('input_dim')} does not match obs_encoding"
        )
    kwargs = dict(num_envs=num_envs, max_steps=max_steps, sample=sample, record=record, bot_paths=bot_paths)
    episodes_all = list(range(num_episodes))
    description = f"eval {Path(checkpoint_path).name} on {task_id}"
    with (
        _one_torch_thread(),
        tqdm(
            total=num_episodes, desc=description, disable=not progress, dynamic_ncols=True, leave=False
        ) as bar,
    ):
        if num_workers <= 1 or num_episodes < 2 * num_workers:
            steps, episodes = run_episodes(
                policy, encoder, config, task_id, episodes_all, progress=bar, **kwargs
            )
        else:  # contiguous blocks of episodes per process; the same numbers either way
            blocks = [b.tolist() for b in np.array_split(episodes_all, num_workers)]
            worker_kwargs = {**kwargs, "bot_paths": dict(bot_paths or {})}
            with mp.get_context("spawn").Pool(num_workers) as pool:
                parts = pool.map(
                    _worker, [(str(checkpoint_path), task_id, b, worker_kwargs, ko) for b in blocks]
                )
            bar.update(num_episodes)
            steps = pd.concat([p[0] for p in parts], ignore_index=True)
            episodes = pd.concat([p[1] for p in parts], ignore_index=True)
            if bot_paths is not None:
                bot_paths.update(
                    {
                        int(s): (None if pd.isna(o) else int(o))
                        for s, o in zip(episodes["seed"], episodes["optimal_length"])
                    }
                )
    metrics = compute_metrics(episodes, expert_sizes)
    metrics.update(
        {
            "task_id": config["task_id"],
            "eval_task_id": task_id,
            "knockout": knockout_label(knockout, knockout_threshold),
            "sample": sample,
            "max_steps": max_steps,
            "evaluated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
    )
    return EvalResult(metrics, steps, episodes, config)


def knockout_label(knockout: str | None, threshold: float | None) -> str:
    parts = ([knockout] if knockout else []) + ([f"threshold_{threshold:g}"] if threshold is not None else [])
    return "+".join(parts) if parts else "none"


def save_evaluation(
    result: EvalResult,
    checkpoint_path: str | os.PathLike,
    cache_root: str | os.PathLike,
    formats: tuple[str, ...] = ("parquet",),
) -> Path:
    """Write the routing cache of one evaluation; returns its folder."""
    config = result.config
    knockout = None if result.metrics["knockout"] == "none" else result.metrics["knockout"]
    directory = cache_dir_for(cache_root, config, checkpoint_path, result.metrics["eval_task_id"], knockout)
    meta = {
        "checkpoint_path": Path(checkpoint_path).as_posix(),
        "num_episodes": result.metrics["num_episodes"],
        "config": config,
        "metrics": result.metrics,
        "eval_seed_start": EVAL_SEED_START,
    }
    return write_cache(directory, result.steps, result.episodes, meta, formats)


def add_cache_format_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cache_format",
        choices=["parquet", "json", "both"],
        default="parquet",
        help="json (or both) also writes the seed's routing_data.json shape beside the Parquet files",
    )


def cache_formats(choice: str) -> tuple[str, ...]:
    return ("parquet",) if choice == "parquet" else ("parquet", "json")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", required=True, help="checkpoint .pt file (MoP or GRU baseline)")
    parser.add_argument("--task_id", default=None, help="level to evaluate on (default: the training level)")
    parser.add_argument(
        "--num_episodes", type=int, default=100, help="episodes, on evaluation seeds 0..N-1 (default 100)"
    )
    parser.add_argument("--num_envs", type=int, default=16, help="envs stepped together (default 16)")
    parser.add_argument(
        "--num_workers", type=int, default=1, help="processes to split the episodes over (default 1)"
    )
    parser.add_argument(
        "--max_steps", type=int, default=None, help="episode limit (default: the training run's)"
    )
    parser.add_argument("--sample", action="store_true", help="sample actions instead of taking the argmax")
    parser.add_argument(
        "--knockout", default=None, help="'largest' or 'layer_<k>:<j>[,...]' (0-based): disable experts"
    )
    parser.add_argument(
        "--knockout_threshold",
        type=float,
        default=None,
        help="also disable experts whose weight is below this",
    )
    parser.add_argument(
        "--cache_dir", default=None, help="write the routing cache under this folder (e.g. evaluation_cache)"
    )
    add_cache_format_argument(parser)
    args = parser.parse_args(argv)
    try:
        result = evaluate(
            args.checkpoint,
            args.task_id,
            args.num_episodes,
            args.num_envs,
            args.max_steps,
            args.sample,
            args.knockout,
            args.knockout_threshold,
            record=args.cache_dir is not None,
            num_workers=args.num_workers,
            progress=True,
        )
    except EvalError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    m = result.metrics
    print(f"{m['eval_task_id']}  knockout {m['knockout']}  {m['num_episodes']} episodes")
    print(
        f"success_rate {m['success_rate']:.3f} [{m['success_ci_low']:.3f}, {m['success_ci_high']:.3f}]  "
        f"path_ratio {m['path_ratio']:.3f}  mean_lpc {m['mean_lpc']:.1f}  mean_length {m['mean_episode_length']:.1f}  "
        f"bot_plan_failures {m['bot_plan_failures']}"
    )
    usage = {k.removeprefix("usage_"): round(v, 3) for k, v in m.items() if k.startswith("usage_")}
    if usage:
        print("expert usage", usage)
    summary = {"metrics": m}
    if args.cache_dir:
        formats = cache_formats(args.cache_format)
        summary["cache"] = str(save_evaluation(result, args.checkpoint, args.cache_dir, formats))
        print("cache:", summary["cache"])
    return summary


if __name__ == "__main__":
    main()
