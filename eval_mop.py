"""Evaluate a trained checkpoint (MoP or GRU baseline): success, path ratio, LPC, expert usage,
and the per-step routing record that the plots read.

Evaluation runs exactly `num_episodes` episodes whose layouts are the evaluation seeds
EVAL_SEED_START + k (never trained on), so every checkpoint meets the same layouts and two runs
give the same numbers. Envs pick up the next episode when theirs ends; no episode is cut short to
fill a quota, and only the counted episodes reach the cache. Greedy actions unless --sample.

    python eval_mop.py --checkpoint checkpoints/BabyAI-GoToObj-v0/trial_0/checkpoint_final.pt --num_episodes 100
    python eval_mop.py --checkpoint ... --task_id BabyAI-GoToLocal-v0 --knockout largest --cache_dir evaluation_cache
    python eval_mop.py --checkpoint ... --device cuda     # the batch of envs acts in one step on the GPU

A multi-task checkpoint (trained on "A,B,C") is evaluated on each of its levels in turn (or on the
levels of --task_id "A,C"), with one result and one routing cache (eval_<level>/) per level.
"""

from __future__ import annotations

if __name__ == "__main__":  # flags answered before torch, pandas and minigrid load (bench/startup.py)
    from mop.eval_options import parse_eval_args

    parse_eval_args(None, __doc__)

import argparse
import json
import math
import multiprocessing as mp
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch

from mixture_of_experts import MixtureOfExpertsPolicy, PolicyOutput, compute_lpc
from mop import results
from mop.babyai_env import (
    EVAL_SEED_START,
    PhaseTracker,
    check_task_id,
    env_context,
    make_env,
    obs_dim,
    quiet_reset,
)
from mop.bot_paths import BotPaths
from mop.checks import command_edges
from mop.collection import MissionCache, ObsBatch, acting_step
from mop.devices import (
    DeviceError,
    device_label,
    resolve_device,
    use_deterministic,
)
from mop.eval_options import (  # noqa: F401  (re-exported: eval_mop's options are its public API)
    EVAL_LIMITS,
    EvalError,
    EvalOptions,
    add_cache_format_argument,
    add_device_argument,
    add_distilbert_path_argument,
    add_record_subgoals_argument,
    cache_formats,
    canonical_knockout,
    parse_eval_args,
)
from mop.experiment import CheckpointError, load_checkpoint, load_policy
from mop.numpy_policy import one_thread, use_one_thread
from mop.progress import progress_bar
from mop.routing_cache import RECORDED_STEP_COLUMNS, derive_step_columns, weight_column, write_cache
from mop.runs import (
    OutputError,
    RunId,
    RunPathError,
    atomic_write,
    cache_dir_for,
    check_writable_file,
    inside,
    is_multi_task,
    split_task_ids,
)
from mop.subgoals import SUBGOAL_COLUMNS, SubgoalRecorder

# ----------------------------------------------------------------------------- knockout


def parse_knockout(spec: str | None, expert_sizes: list[list[int]]) -> list[list[bool]] | None:
    """'largest' (every layer's largest expert) or 'layer_<k>:<j>[,layer_<k>:<j>...]' (0-based,
    as in the cache's column names) -> disabled[k][j]."""
    spec = canonical_knockout(spec)
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
        k, j = (int(v) for v in results.KNOCKOUT_PART.match(part).groups())
        if k >= len(expert_sizes) or j >= len(expert_sizes[k]):
            raise EvalError(
                f"--knockout {spec!r}: {part} is not an expert of this checkpoint (expert sizes per "
                f"layer {expert_sizes}; 0-based)"
            )
        disabled[k][j] = True
    return disabled


# ----------------------------------------------------------------------------- evaluation loop


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


@dataclass
class _EvalSlot:
    """One env of the evaluation batch and the episode it is running."""

    def __init__(self, env: Any, index: int):
        self.env, self.index = env, index
        self.episode: int | None = None

    def start(
        self, episode: int, sample: bool, num_layers_sizes: list[list[int]], subgoals: bool = False
    ) -> None:
        self.episode, self.t = episode, 0
        self.seed = EVAL_SEED_START + episode
        self.obs = quiet_reset(self.env, self.seed)
        self.tracker = PhaseTracker(self.env)
        self.rng = np.random.default_rng(self.seed) if sample else None
        self.context = env_context(self.env, self.tracker.targets)
        self.mission = self.obs["mission"]
        self.lpc_sum = self.entropy_sum = 0.0
        self.weight_sums = [np.zeros(len(s)) for s in num_layers_sizes]
        self.subgoals = SubgoalRecorder(self.env) if subgoals else None  # watches, never acts
        self.previous_action: int | None = None


class ActedStep(NamedTuple):
    """One batched step of run_episodes, as `on_step` sees it (rows: the envs that acted)."""

    episode: list[int]
    t: list[int]
    batch: ObsBatch  # what the policy read
    memory: torch.Tensor  # (B, M) the memory before the step
    out: PolicyOutput  # logits, memory after, router weights
    action: list[int]
    reward: list[float]
    done: list[bool]


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
    bot_paths: BotPaths | None = None,
    progress: Any = None,
    on_step: Callable[[ActedStep], None] | None = None,
    measure_bot_paths: bool = True,
    envs: list[Any] | None = None,
    record_subgoals: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run exactly the given evaluation episodes (layout seed EVAL_SEED_START + index), acting
    through collection.acting_step like training does (numpy where it covers the policy; torch
    with knockout). Returns (steps, episodes); steps holds the recorded
    columns plus those routing_cache derives from them (empty when record is False).
    on_step: called after every batched step with what was acted on (record.py keeps it);
    bot_paths: the level's known bot path lengths at max_steps (mop.bot_paths), read and extended;
    None: measured for this call only. measure_bot_paths False leaves optimal_length empty (no bot
    replay of every layout).
    envs: envs of task_id to run in (at least min(num_envs, episodes) of them), reused across calls
    (lmc.py swaps policies, not envs: every reset re-seeds the layout); None builds new ones.
    record_subgoals (with record): also the columns of mop.subgoals (the bot's subgoal on the
    student's states, the level's events); the bot only watches, the actions are the same."""
    expert_sizes = [list(s) for s in getattr(policy, "expert_sizes", ())]
    is_mop = isinstance(policy, MixtureOfExpertsPolicy)
    queue = list(episode_indices)[::-1]
    count = min(num_envs, len(queue))
    built = envs[:count] if envs is not None else [make_env(task_id, max_steps) for _ in range(count)]
    slots = [_EvalSlot(env, i) for i, env in enumerate(built)]
    memory = policy.init_memory(len(slots))
    missions = MissionCache(encoder)
    step = acting_step(policy, missions, config["obs_encoding"])  # the weights are fixed from here on
    episode_rows: list[dict] = []
    record_subgoals = record and record_subgoals
    recorded: dict[str, list] = {
        k: [] for k in (*RECORDED_STEP_COLUMNS, *(SUBGOAL_COLUMNS if record_subgoals else ()))
    }
    step_arrays: dict[str, list[np.ndarray]] = {
        "logits": [],
        **{f"w{k}": [] for k in range(len(expert_sizes))},
    }

    def start(slot: _EvalSlot) -> None:
        slot.start(queue.pop(), sample, expert_sizes, record_subgoals)
        memory[slot.index] = 0.0

    for slot in slots:
        start(slot)
    active = list(slots)
    while active:
        idx = torch.tensor([slot.index for slot in active])
        batch = ObsBatch.of([slot.env for slot in active], [slot.obs for slot in active])
        memory_before = memory[idx]
        episode_of, t_of = [slot.episode for slot in active], [slot.t for slot in active]
        rewards, dones = [], []
        out = step(batch, memory_before)
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
            actions = [int(slot.rng.choice(len(p), p=p / p.sum())) for slot, p in zip(active, probs)]
        else:
            actions = out.logits.argmax(-1).tolist()
        if record:
            step_arrays["logits"].append(out.logits.numpy())
            for k, w in enumerate(weights):
                step_arrays[f"w{k}"].append(w)
        for r, slot in enumerate(active):
            env, t = slot.env, slot.t
            slot.lpc_sum += float(lpc[r])
            slot.entropy_sum += float(entropy[r])
            for k, w in enumerate(weights):
                slot.weight_sums[k] += w[r]
            phase = slot.tracker.observe(t)._asdict()
            if record:
                for key, value in (
                    ("episode", slot.episode),
                    ("t", t),
                    ("env_slot", slot.index),
                    ("x", int(env.agent_pos[0])),
                    ("y", int(env.agent_pos[1])),
                    ("direction", int(env.agent_dir)),
                    ("action", actions[r]),
                    *phase.items(),
                ):
                    recorded[key].append(value)
                if record_subgoals:
                    for key, value in slot.subgoals.observe(slot.obs, slot.previous_action).items():
                        recorded[key].append(value)
                    slot.previous_action = actions[r]
            slot.obs, reward, terminated, truncated, _ = env.step(actions[r])
            rewards.append(float(reward))
            dones.append(bool(terminated or truncated))
            slot.t = t + 1
            if terminated or truncated:
                episode_rows.append(_episode_row(slot, reward, terminated, truncated))
                if progress is not None:
                    progress.update(1)
                if queue:
                    start(slot)
                else:
                    slot.episode = None
        if on_step is not None:
            on_step(ActedStep(episode_of, t_of, batch, memory_before, out, actions, rewards, dones))
        active = [slot for slot in active if slot.episode is not None]

    episodes = pd.DataFrame(episode_rows).sort_values("episode").reset_index(drop=True)
    if bot_paths is None:
        bot_paths = BotPaths(task_id, max_steps)
    bot_paths.check(task_id, max_steps)
    path_env: list = []  # one env for every bot rollout of this call, made on first need

    def bot_env() -> Any:
        if not path_env:
            path_env.append(make_env(task_id, max_steps))
        return path_env[0]

    episodes["optimal_length"] = pd.array(
        [bot_paths.length(int(seed), bot_env) if measure_bot_paths else None for seed in episodes["seed"]],
        dtype="Int64",
    )
    for col in ("t_unlocked", "t_pick", "t_drop", "door_x", "door_y"):
        episodes[col] = pd.array(episodes[col].tolist(), dtype="Int64")
    if not record:
        return pd.DataFrame(), episodes
    columns = {k: np.asarray(v) for k, v in recorded.items()}
    logits = np.concatenate(step_arrays["logits"]) if step_arrays["logits"] else np.zeros((0, 7))
    for a in range(logits.shape[1]):
        columns[f"logit_{a}"] = logits[:, a]
    for k, sizes in enumerate(expert_sizes):
        w = np.concatenate(step_arrays[f"w{k}"])
        for j in range(len(sizes)):
            columns[weight_column(k, j)] = w[:, j]
    order = np.lexsort((columns["t"], columns["episode"]))
    steps = derive_step_columns({k: v[order] for k, v in columns.items()}, episodes, config)
    return steps, episodes


def play_checkpoint(
    checkpoint: str,
    task_id: str | None,
    num_episodes: int,
    sample: bool = False,
    on_step: Callable[[ActedStep], None] | None = None,
    num_envs: int = 16,
    check_level: Callable[[str], None] | None = None,
    device: str = "cpu",
    first_episode: int = 0,
    progress: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame, torch.nn.Module, dict, str, torch.nn.Module]:
    """The analysis tools' way in (memory_probe, failures): load `checkpoint` and play evaluation
    layouts first_episode + 0..num_episodes-1 of one level (task_id None: the run's), greedy or
    sampled, at the run's step limit, without measuring bot paths. Returns (steps sorted by episode
    and t, episodes, policy, config, the level played, the mission encoder it played with). Raises EvalError (one line) for a checkpoint
    that does not load, an unknown level or several levels. check_level(task_id) runs before any
    play: a tool refuses a level it cannot analyse there (its exception propagates). device: as
    eval_mop's --device (auto | cpu | cuda | cuda:N); one that this machine lacks is an EvalError
    before the checkpoint is read. first_episode: bench/levels.py's model selection plays
    babyai_env.VALIDATION_START + k, layouts no reported evaluation plays. progress: a bar on stderr
    over the episodes as they finish (a few hundred take minutes on a hard level)."""
    torch_device = eval_device(EvalOptions(device=device))
    try:
        policy, encoder, config = load_policy(checkpoint)
    except CheckpointError as e:
        raise EvalError(str(e)) from None
    task_id = task_id or config["task_id"]
    if is_multi_task(task_id):
        raise EvalError(f"{task_id} names several levels: pass --task_id, one level at a time")
    try:
        check_task_id(task_id)
    except ValueError as e:
        raise EvalError(str(e)) from None
    if check_level is not None:
        check_level(task_id)
    use_deterministic(torch_device)
    policy, encoder = policy.to(torch_device), encoder.to(torch_device)
    description = f"play {Path(checkpoint).name} on {task_id}"
    with one_thread(), progress_bar(num_episodes, description, enabled=progress, leave=False) as bar:
        steps, episodes = run_episodes(
            policy,
            encoder,
            config,
            task_id,
            list(range(first_episode, first_episode + num_episodes)),
            num_envs=num_envs,
            max_steps=config.get("max_steps"),
            sample=sample,
            progress=bar,
            on_step=on_step,
            measure_bot_paths=False,
        )
    steps = steps.sort_values(["episode", "t"]).reset_index(drop=True)
    return steps, episodes, policy, config, task_id, encoder


def played_line(
    task_id: str, num_episodes: int, sample: bool, success: float, player: str | None = None
) -> str:
    """The first line an analysis tool prints about what play_checkpoint played, success with its
    95% Wilson interval over the episodes; `player` names who played where no policy did ("the bot")."""
    low, high = wilson_interval(round(success * num_episodes), num_episodes)
    how = player or ("sampled" if sample else "greedy")
    return (
        f"{task_id}: {num_episodes} episodes ({how}), "
        f"success {success:.1%} [{low:.1%}, {high:.1%}] (95% Wilson)"
    )


def check_table_out(out: str | None) -> None:
    """An analysis tool's --out, checked before it plays anything: a file it can replace (not a
    folder, nor below a file, in a folder it may write); EvalError in one line otherwise."""
    if out:
        try:
            check_writable_file(out, "--out")
        except OutputError as e:
            raise EvalError(str(e)) from None


def save_table(table: pd.DataFrame, out: str | None) -> None:
    """An analysis tool's --out: its table as CSV, written atomically (folders made); nothing when
    out is None. Check it first with check_table_out."""
    if out:
        atomic_write(out, lambda tmp: table.to_csv(tmp, index=False))


def _episode_row(slot: _EvalSlot, reward: float, terminated: bool, truncated: bool) -> dict:
    """The episodes.parquet row of the episode `slot` just finished."""
    tracker, length = slot.tracker, slot.t
    tracker.observe(length)  # events caused by the last action
    door = tracker.door_of_episode()
    return {
        "episode": slot.episode,
        "seed": slot.seed,
        "env_slot": slot.index,
        "mission": slot.mission,
        "success": bool(terminated and reward > 0),
        "terminated": bool(terminated),
        "truncated": bool(truncated),
        "reward": float(reward),
        "length": length,
        "max_steps": int(slot.env.max_steps),
        "mean_lpc": slot.lpc_sum / length,
        "mean_entropy": slot.entropy_sum / length,
        "t_unlocked": tracker.t_unlocked,
        "t_pick": tracker.t_pick,
        "t_drop": tracker.t_drop,
        "door_x": None if door is None else door[0],
        "door_y": None if door is None else door[1],
        "env_context": json.dumps(slot.context, separators=(",", ":")),
        **{
            weight_column(k, j): float(w[j] / length)
            for k, w in enumerate(slot.weight_sums)
            for j in range(len(w))
        },
    }


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
    use_one_thread()
    checkpoint_path, task_id, block, kwargs, knockout, distilbert_path, device = args
    policy, encoder, config = load_policy(checkpoint_path, distilbert_path=distilbert_path)
    if knockout is not None:
        policy.set_knockout(*knockout)
    use_deterministic(device)
    return run_episodes(policy.to(device), encoder.to(device), config, task_id, block, **kwargs)


def eval_device(options: EvalOptions) -> torch.device:
    """The device an evaluation acts on, on this machine; EvalError in one line when it lacks it."""
    try:
        return resolve_device(options.device)
    except DeviceError as e:
        raise EvalError(str(e)) from None


def evaluate(
    checkpoint_path: str | os.PathLike,
    options: EvalOptions = EvalOptions(),
    bot_paths: BotPaths | None = None,
) -> EvalResult:
    """Evaluate one checkpoint: the function eval_mop, batch_eval, the notebooks and Modal share.

    bot_paths: the known bot path lengths of the evaluated level's layouts at the evaluation's
    max_steps (mop.bot_paths.BotPaths, shared by every checkpoint evaluated there), read and
    extended; None: measured for this evaluation only. num_workers > 1 splits the episodes over
    processes (same numbers)."""
    o = options  # checked when it was built (EvalOptions.__post_init__)
    device = eval_device(o)
    try:
        policy, encoder, config = load_policy(checkpoint_path, distilbert_path=o.distilbert_path)
        RunId.of(config)  # its task/trial/seed name the cache folder: refuse '../x' before any work
    except CheckpointError as e:
        raise EvalError(str(e)) from None
    except RunPathError as e:
        raise EvalError(f"checkpoint {str(checkpoint_path)!r}: {e}") from None
    if o.task_id is None and is_multi_task(config["task_id"]):
        raise EvalError(
            f"checkpoint {str(checkpoint_path)!r} was trained on several levels ({config['task_id']}): "
            "evaluate one at a time (eval_levels; eval_mop.py and batch_eval.py evaluate each)"
        )
    task_id = o.task_id or config["task_id"]
    try:
        check_task_id(task_id)
    except ValueError as e:
        raise EvalError(str(e)) from None
    max_steps = config.get("max_steps") if o.max_steps is None else o.max_steps
    if bot_paths is None:
        bot_paths = BotPaths(task_id, max_steps)
    bot_paths.check(task_id, max_steps)
    expert_sizes = [list(s) for s in getattr(policy, "expert_sizes", ())]
    ko = None
    if o.knockout or o.knockout_threshold is not None:
        if not isinstance(policy, MixtureOfExpertsPolicy):
            raise EvalError("knockout needs a MoP checkpoint (the GRU baseline has no experts)")
        ko = (parse_knockout(o.knockout, expert_sizes), o.knockout_threshold)
        try:
            policy.set_knockout(*ko)
        except ValueError as e:
            raise EvalError(f"--knockout {o.knockout!r}: {e}") from None
    if config.get("input_dim") != obs_dim(config["obs_encoding"]):
        raise EvalError(
            f"checkpoint {str(checkpoint_path)!r}: input_dim {config.get('input_dim')} does not match obs_encoding"
        )
    kwargs = dict(
        num_envs=o.num_envs,
        max_steps=max_steps,
        sample=o.sample,
        record=o.record,
        bot_paths=bot_paths,
        record_subgoals=o.record_subgoals,
    )
    # On a GPU the envs' batch acts in one torch step there (collection.acting_step); on the CPU
    # the numpy step, as before. Both give the CPU numbers up to float rounding.
    use_deterministic(device)
    policy, encoder = policy.to(device), encoder.to(device)
    episodes_all = list(range(o.num_episodes))
    description = f"eval {Path(checkpoint_path).name} on {task_id}"
    with (
        one_thread(),
        progress_bar(o.num_episodes, description, enabled=o.progress, leave=False) as bar,
    ):
        if o.num_workers <= 1 or o.num_episodes < 2 * o.num_workers:
            steps, episodes = run_episodes(
                policy, encoder, config, task_id, episodes_all, progress=bar, **kwargs
            )
        else:  # contiguous blocks of episodes per process; the same numbers either way
            blocks = [b.tolist() for b in np.array_split(episodes_all, o.num_workers)]
            with mp.get_context("spawn").Pool(o.num_workers) as pool:
                parts = pool.map(
                    _worker,
                    [
                        (str(checkpoint_path), task_id, b, kwargs, ko, o.distilbert_path, device)
                        for b in blocks
                    ],
                )
            bar.update(o.num_episodes)
            steps = pd.concat([p[0] for p in parts], ignore_index=True)
            episodes = pd.concat([p[1] for p in parts], ignore_index=True)
            # each worker extended its own copy of bot_paths: the lengths come back in the episodes
            bot_paths.update(
                {
                    int(s): (None if pd.isna(n) else int(n))
                    for s, n in zip(episodes["seed"], episodes["optimal_length"])
                }
            )
    metrics = compute_metrics(episodes, expert_sizes)
    metrics.update(
        {
            "task_id": config["task_id"],
            "eval_task_id": task_id,
            "knockout": o.knockout_label,
            "sample": o.sample,
            "max_steps": max_steps,
            "evaluated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "device": device_label(device),  # the cache's meta.json keeps it; the CSV has no column
        }
    )
    return EvalResult(metrics, steps, episodes, config)


def eval_levels(trained_task_id: str, requested: str | None = None) -> list[str]:
    """The levels to evaluate a checkpoint on: `requested` (a level or a comma list, each checked)
    or else every level it was trained on (one for a single-task checkpoint)."""
    levels = split_task_ids(requested or trained_task_id)
    if not levels or len(set(levels)) != len(levels):
        raise EvalError(f"--task_id {requested!r}: give distinct levels, separated by commas")
    for level in levels:
        try:
            check_task_id(level)
        except ValueError as e:
            raise EvalError(str(e)) from None
    return levels


def save_evaluation(
    result: EvalResult,
    checkpoint_path: str | os.PathLike,
    cache_root: str | os.PathLike,
    formats: tuple[str, ...] = ("parquet",),
) -> Path:
    """Write the routing cache of one evaluation; returns its folder."""
    config = result.config
    knockout = None if result.metrics["knockout"] == "none" else result.metrics["knockout"]
    directory = inside(
        cache_root,
        cache_dir_for(cache_root, config, checkpoint_path, result.metrics["eval_task_id"], knockout),
    )
    meta = {
        "checkpoint_path": Path(checkpoint_path).as_posix(),
        "num_episodes": result.metrics["num_episodes"],
        "config": config,
        "metrics": result.metrics,
        "eval_seed_start": EVAL_SEED_START,
    }
    return write_cache(directory, result.steps, result.episodes, meta, formats)


def main(argv: list[str] | None = None) -> dict:
    args, options = parse_eval_args(argv, __doc__)  # every flag, before a checkpoint is read
    try:
        eval_device(options)  # a GPU this machine lacks: one line, nothing written
        trained = None
        if options.task_id is None:
            try:
                trained = str(load_checkpoint(args.checkpoint)["config"].get("task_id"))
            except CheckpointError:
                pass  # evaluate() says what is wrong with it
        if not is_multi_task(options.task_id or trained or ""):
            return _report(args, evaluate(args.checkpoint, options))
        # a multi-task checkpoint, or several levels asked for: each level in turn
        levels = eval_levels(trained or "", options.task_id)
        summaries = [_report(args, evaluate(args.checkpoint, replace(options, task_id=t))) for t in levels]
    except (EvalError, OutputError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    return {"evaluations": summaries}


def _report(args: argparse.Namespace, result: EvalResult) -> dict:
    """Print one evaluation's numbers (and write its cache with --cache_dir); its summary."""
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
    with command_edges():
        main()
