"""Linear mode connectivity (LMC) of MoP policies: fork a training run, train two children to the
end, and evaluate the straight line between their weights (Frankle et al. 2020, "Linear Mode
Connectivity and the Lottery Ticket Hypothesis"; the LMC-RL workflow, on BabyAI imitation).

Semantics
- The parent trains with the normal loop (imitation.ImitationRun, train_mop's policy and loss). At
  each fork point p (a fraction of num_updates; fork update u = round(p * num_updates)) its full
  state is saved: checkpoint_<u>.pt (weights, Adam, RNGs, counters, per-env episode counters) and
  buffer_<u>.npz. Fork point 0 forks the initialisation: two independent runs from one init.
- Two children A and B start from exactly that state (imitation.Fork) and train to num_updates.
  They differ only in their data noise: child A of fork k has run seed S + 1 + 2k, child B
  S + 2 + 2k (parent: S), so each has its own training-layout and teacher-forcing streams
  (babyai_env.train_episode_seed: disjoint per run seed, all >= 1e9, never an evaluation layout)
  and its own buffer-sampling stream. The global torch RNG (expert dropout only) is the parent's.
- Buffer strategies (--fork_buffer_strategy, as in LMC-RL): `copy`: each child gets its own copy
  of the parent's DAgger buffer; `fresh`: both start empty; `split`: the parent's buffer divided
  into two disjoint halves (every other episode); `shared`: both children read and write ONE
  buffer object. Shared is deterministic because the two children run in lockstep in one process:
  every round A takes its update (samples from the buffer, then adds its finished episodes), then
  B; a shared pair killed mid-way restarts from its fork point (the two resume only together).
  With the buffer off (buffer_episodes 0) only `fresh` is meaningful: the others are refused.
  Default: `copy` with a buffer, `fresh` without.
- Interpolation θ(α) = (1−α)·θ_A + α·θ_B (torch.lerp: exact at α = 0 and 1, and θ_A when θ_A = θ_B)
  over --alphas evenly spaced α in [0, 1], every parameter including the routers and the mission
  encoder. For each α, on one fixed set of evaluation envs (layouts EVAL_SEED_START + 0..N−1,
  envs built once and reused, policies swapped): success rate with its 95% Wilson interval, path
  ratio, mean LPC, per-layer expert usage (eval_mop.run_episodes / compute_metrics, as
  eval_mop.evaluate), and, on a held-out labelled set (bot-driven episodes on evaluation seeds
  EVAL_SEED_START + k, generated once per experiment as heldout.npz), mean cross-entropy against
  the bot's labels and accuracy (teacher-forced pass, memory from each episode's reset).
- Instability (Frankle et al.): barrier = max over α of [f(α) − ((1−α)·f(0) + α·f(1))] for the
  held-out loss f; for success the sign is flipped (the drop below the line). Both the height and
  its α are reported; identical children give exactly 0.
- Routing agreement, on the held-out labelled states: per layer, the mean Jensen–Shannon
  divergence (bits, in [0, 1]) between two router distributions, and the fraction of states whose
  dominant expert agrees, between the children (α = 0 vs 1) and between each child and θ(α).
  Heterogeneous expert sizes make experts identifiable across children: no permutation matching.

Outputs: <results_root>/<task>/seed_<S>/<strategy>/
    config.json                    the experiment (train config, fork points/updates, children)
    heldout.npz                    the held-out labelled episodes (replay_buffer format)
    checkpoints/<task>/trial_0/seed_<S>/              the parent (standard layout)
    checkpoints/<task>/trial_<k+1>/seed_<seed>/       fork k's children A and B
    evaluations/fork_<k>.csv       one fork's interpolation rows (what --resume keeps)
    interpolation.csv              one row per fork × α × metric (value, ci_low, ci_high)
    instability.csv                one row per fork: barriers and their α, routing agreement
    fork_analysis/                 all_interpolations.png, interp_fork_<k>.png,
                                   instability_over_time.png, routing_agreement.png
    timing.json                    wall time of each invocation: training, evaluation, figures
batch_eval.py --checkpoint_dir <experiment>/checkpoints evaluates every parent and child checkpoint.

    python lmc.py --task_id BabyAI-GoToLocal-v0 --seed 42 --num_updates 2000 --buffer_episodes 2000 \\
        --fork_points "0.01,0.05,0.1,0.2,0.3,0.5,0.7,0.9" --fork_buffer_strategy copy
    python lmc.py --task_id BabyAI-UnlockPickup-v0 --seed 42 --fork_buffer_strategy fresh --alphas 21
    python lmc.py --task_id BabyAI-GoToLocal-v0 --seed 42 --resume        # finish a killed experiment
    python lmc.py analyze --results_dir lmc_results/BabyAI-GoToLocal-v0/seed_42/copy
    python lmc.py compare --a runs/A/checkpoint_final.pt --b runs/B/checkpoint_final.pt
Every flag of train_mop.py applies (same config schema); lmc.py sets trial, seed folders and
checkpoint_dir itself. Bad input is one `error:` line and exit code 2, with nothing written.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import shlex
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from eval_mop import EvalError, compute_metrics, run_episodes
from mixture_of_experts import build_policy
from mop.babyai_env import EVAL_SEED_START, check_task_id, encode_obs, make_env
from mop.bot_paths import BotPaths
from mop.experiment import (
    CONFIG_ALIASES,
    CONFIG_KEYS,
    LIMITS,
    CheckpointError,
    ConfigError,
    TrainConfig,
    build_arg_parser,
    default_num_workers,
    load_checkpoint,
    load_config,
    load_policy,
    resolve_aliases,
    run_dir,
)
from mop.imitation import Fork, ImitationRun, buffer_path
from mop.numpy_policy import one_thread
from mop.replay_buffer import BufferError, EpisodeBuffer, StoredEpisode, episodes_as_chunk
from mop.runs import (
    OutputError,
    RunId,
    RunLockedError,
    RunPathError,
    atomic_write,
    atomic_write_text,
    checkpoint_name,
    checkpoint_paths,
    final_checkpoint,
    is_multi_task,
    remove_stale_temp_files,
    run_lock,
    run_task_name,
    safe_name,
)

STRATEGIES = ("copy", "fresh", "shared", "split")
CHILDREN = ("A", "B")
DEFAULT_FORK_POINTS = "0.01,0.05,0.1,0.2,0.3,0.5,0.7,0.9"
EXPERIMENT_KIND, EXPERIMENT_VERSION = "lmc_experiment", 1
CONFIG_FILE, HELDOUT_FILE, TIMING_FILE = "config.json", "heldout.npz", "timing.json"
INTERPOLATION_FILE, INSTABILITY_FILE = "interpolation.csv", "instability.csv"
EVAL_DIR, FIGURE_DIR, CHECKPOINT_DIR = "evaluations", "fork_analysis", "checkpoints"
# Run-time settings that --resume may change (they do not change what is computed).
RESUMABLE = {"num_workers", "log_interval", "wandb_project"}
# lmc.py decides these: the folders of the parent and children.
OWN_KEYS = {"trial": "fork k's children are trial k+1", "checkpoint_dir": "use --results_root"}
# What two checkpoints must share to be interpolated (plus identical parameter names and shapes).
ARCHITECTURE_KEYS = (
    "policy_type",
    "input_dim",
    "num_actions",
    "obs_encoding",
    "input_encoder",
    "lang_encoder",
    "lang_dim",
    "expert_hidden_sizes",
    "intermediate_dim",
    "router_hidden_size",
    "hidden_size",
)
COLUMNS = ["fork", "fork_point", "fork_update", "alpha", "metric", "value", "ci_low", "ci_high"]


class LMCError(ConfigError):
    """A bad LMC setting, folder or checkpoint pair; the message names it (one line)."""


# ----------------------------------------------------------------------------- the experiment


def parse_fork_points(text: str, num_updates: int) -> tuple[list[float], list[int]]:
    """'0.1,0.5' -> ([0.1, 0.5], fork updates [round(p * num_updates)]): each in (0, 1) or exactly 0,
    strictly increasing, each on its own update in 1..num_updates-1 (0 only for p = 0)."""
    try:
        points = [float(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise LMCError(f"--fork_points must be comma-separated fractions, got {text!r}") from None
    return points, check_fork_points(points, num_updates)


def check_fork_points(points: list[float], num_updates: int) -> list[int]:
    """The fork updates of `points` (parse_fork_points' rules), or LMCError."""
    if not points:
        raise LMCError("--fork_points is empty")
    for p in points:
        if not (p == 0 or 0 < p < 1):
            raise LMCError(
                f"--fork_points: {p:g} is outside (0, 1) (fractions of num_updates; 0 alone forks the "
                "initialisation: two runs from one init)"
            )
    if any(b <= a for a, b in zip(points, points[1:])):
        raise LMCError(f"--fork_points must be sorted and distinct, got {','.join(f'{p:g}' for p in points)}")
    updates = [int(round(p * num_updates)) for p in points]
    for p, u in zip(points, updates):
        if p > 0 and not 1 <= u <= num_updates - 1:
            raise LMCError(
                f"--fork_points: {p:g} of {num_updates} updates is update {u}; with --num_updates "
                f"{num_updates} a fork point must lie in [{0.5 / num_updates:.3g}, {1 - 0.5 / num_updates:.4g})"
            )
    for (p, u), (q, v) in zip(zip(points, updates), zip(points[1:], updates[1:])):
        if u == v:
            raise LMCError(
                f"--fork_points: {p:g} and {q:g} are both update {u} of {num_updates}; drop one or raise --num_updates"
            )
    return updates


@dataclasses.dataclass(frozen=True)
class Experiment:
    """One LMC experiment: the parent's config, the forks, the buffer strategy, the evaluation."""

    directory: Path
    train: dict  # the parent's TrainConfig fields (checkpoint_dir: set from `directory`)
    fork_points: tuple[float, ...]
    strategy: str
    alphas: int = 11
    eval_episodes: int = 100
    eval_envs: int = 16
    heldout_episodes: int = 100

    # ------------------------------------------------------------------ identity

    @property
    def seed(self) -> int:
        return int(self.train["seed"])

    @property
    def task_id(self) -> str:
        return self.train["task_id"]

    @property
    def fork_updates(self) -> list[int]:
        return check_fork_points(list(self.fork_points), self.train["num_updates"])

    @property
    def alpha_values(self) -> np.ndarray:
        return np.linspace(0.0, 1.0, self.alphas)  # exactly 0 and 1 at the ends

    def child_seed(self, fork: int, child: str) -> int:
        return self.seed + 1 + 2 * fork + CHILDREN.index(child)

    def parent_config(self, num_workers: int | None = None) -> TrainConfig:
        values = {**self.train, "trial": 0, "checkpoint_dir": str(self.directory / CHECKPOINT_DIR)}
        if num_workers is not None:
            values["num_workers"] = num_workers
        return TrainConfig(**values)

    def child_config(self, fork: int, child: str, num_workers: int | None = None) -> TrainConfig:
        return dataclasses.replace(
            self.parent_config(num_workers), trial=fork + 1, seed=self.child_seed(fork, child)
        )

    def label(self, fork: int) -> str:
        return f"fork {fork} ({self.fork_points[fork]:g}, update {self.fork_updates[fork]})"

    # ------------------------------------------------------------------ config.json

    def to_json(self) -> dict:
        forks = [
            {
                "fork": k,
                "point": p,
                "update": u,
                "children": {
                    c: {
                        "trial": k + 1,
                        "seed": self.child_seed(k, c),
                        "run": self._relative(self.child_folder(k, c)),
                    }
                    for c in CHILDREN
                },
            }
            for k, (p, u) in enumerate(zip(self.fork_points, self.fork_updates))
        ]
        return {
            "kind": EXPERIMENT_KIND,
            "version": EXPERIMENT_VERSION,
            "task_id": self.task_id,
            "seed": self.seed,
            "strategy": self.strategy,
            "fork_points": list(self.fork_points),
            "alphas": self.alphas,
            "eval_episodes": self.eval_episodes,
            "eval_envs": self.eval_envs,
            "heldout_episodes": self.heldout_episodes,
            "parent": self._relative(self.parent_folder()),
            "forks": forks,
            "train": {k: v for k, v in self.train.items() if k != "checkpoint_dir"},
        }

    def _relative(self, path: Path) -> str:
        return path.relative_to(self.directory).as_posix()

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Experiment:
        """The experiment in `directory`, or LMCError in one line."""
        directory = Path(directory)
        path = directory / CONFIG_FILE
        if not directory.is_dir():
            raise LMCError(f"{str(directory)!r} is not a folder")
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise LMCError(f"{str(directory)!r} is not an LMC experiment (no {CONFIG_FILE})") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise LMCError(f"{str(path)!r} is unreadable ({type(e).__name__})") from None
        if not isinstance(doc, dict) or doc.get("kind") != EXPERIMENT_KIND:
            raise LMCError(f"{str(directory)!r} is not an LMC experiment ({CONFIG_FILE} is another file)")
        if doc.get("version") != EXPERIMENT_VERSION:
            raise LMCError(
                f"{str(path)!r} has version {doc.get('version')!r}; this code reads {EXPERIMENT_VERSION}"
            )
        try:
            train = dataclasses.asdict(load_config(None, doc["train"]))
            exp = cls(
                directory,
                {**train, "checkpoint_dir": str(directory / CHECKPOINT_DIR)},
                tuple(float(p) for p in doc["fork_points"]),
                str(doc["strategy"]),
                int(doc["alphas"]),
                int(doc["eval_episodes"]),
                int(doc["eval_envs"]),
                int(doc["heldout_episodes"]),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise LMCError(f"{str(path)!r} is not a valid experiment: {e}") from None
        exp.check()
        return exp

    def write(self) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        return atomic_write_text(self.directory / CONFIG_FILE, json.dumps(self.to_json(), indent=1) + "\n")

    def check(self) -> Experiment:
        """Everything parse_fork_points, the strategy and the evaluation need (LMCError)."""
        cfg = self.parent_config()
        if cfg.seed is None:
            raise LMCError("an LMC experiment needs an integer --seed")
        if is_multi_task(cfg.task_id):
            raise LMCError("--task_id: LMC runs one level at a time, not a comma list")
        if cfg.demos:
            raise LMCError(
                "--demos: offline children would replay the parent's demo order exactly (no data noise "
                "to fork on); LMC forks online imitation"
            )
        self.fork_updates  # noqa: B018  (validates the points against num_updates)
        if self.strategy not in STRATEGIES:
            raise LMCError(
                f"--fork_buffer_strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}"
            )
        if self.strategy != "fresh" and not cfg.buffer_episodes:
            raise LMCError(
                f"--fork_buffer_strategy {self.strategy} needs the DAgger buffer (--buffer_episodes N); "
                "with the buffer off only 'fresh' is meaningful"
            )
        if self.alphas < 2:
            raise LMCError(f"--alphas must be at least 2 (the two children), got {self.alphas}")
        for name in ("eval_episodes", "eval_envs", "heldout_episodes"):
            if not 1 <= getattr(self, name) <= 1_000_000:
                raise LMCError(
                    f"--{name} must be a whole number from 1 to 1,000,000, got {getattr(self, name)}"
                )
        last = self.child_seed(len(self.fork_points) - 1, "B")
        if last > LIMITS["seed"][0]:
            raise LMCError(f"--seed {self.seed}: the children's seeds (up to {last}) must stay below 2**32")
        return self

    # ------------------------------------------------------------------ folders

    def parent_folder(self) -> Path:
        return run_dir(self.parent_config())

    def child_folder(self, fork: int, child: str) -> Path:
        return run_dir(self.child_config(fork, child))

    def evaluation_file(self, fork: int) -> Path:
        return self.directory / EVAL_DIR / f"fork_{fork}.csv"


def experiment_dir(results_root: str | os.PathLike, task_id: str, seed: int, strategy: str) -> Path:
    return (
        Path(results_root)
        / safe_name(run_task_name(task_id), "task_id")
        / f"seed_{int(seed)}"
        / safe_name(strategy, "--fork_buffer_strategy")
    )


# ----------------------------------------------------------------------------- training


def _loss(cfg: TrainConfig):
    import train_mop

    return train_mop.make_loss(cfg, cfg.expert_hidden_sizes)


def _policy_type() -> str:
    import train_mop

    return train_mop.POLICY_TYPE


def run_state(cfg: TrainConfig) -> str:
    """'done' (checkpoint_final.pt at num_updates), 'partial' (some checkpoint) or 'new'."""
    directory = run_dir(cfg)
    final = final_checkpoint(directory)
    if final is not None:
        try:
            if int(load_checkpoint(final)["update"]) == cfg.num_updates:
                return "done"
        except CheckpointError:
            pass
    return "partial" if final is not None or checkpoint_paths(directory) else "new"


def train_parent(exp: Experiment, progress: bool = True, num_workers: int | None = None) -> str:
    """Train (or finish) the parent, saving its full state at every fork update; its state."""
    cfg = exp.parent_config(num_workers)
    state = run_state(cfg)
    if state == "done":
        return "done"
    directory = run_dir(cfg)
    with run_lock(directory):
        remove_stale_temp_files(directory)
        run = ImitationRun(
            cfg,
            _policy_type(),
            build_policy,
            _loss(cfg),
            resume=state == "partial",
            progress=progress,
            save_at=tuple(exp.fork_updates),
        )
        with run:
            if (
                run.state.update == 0
                and 0 in exp.fork_updates
                and not (directory / checkpoint_name(0)).exists()
            ):
                run.save(checkpoint_name(0))  # fork point 0: the initialisation, before any update
            while not run.done:
                run.update()
    return "trained" if state == "new" else "resumed"


def fork_state(exp: Experiment, fork: int) -> tuple[dict, EpisodeBuffer | None]:
    """The parent's checkpoint payload and buffer at fork `fork`'s update."""
    directory, update = exp.parent_folder(), exp.fork_updates[fork]
    path = directory / checkpoint_name(update)
    try:
        ckpt = load_checkpoint(path)
    except CheckpointError as e:
        raise LMCError(f"{exp.label(fork)}: the parent's fork checkpoint is not usable: {e}") from None
    buffer = None
    if exp.train["buffer_episodes"]:
        try:
            buffer, _ = EpisodeBuffer.load(buffer_path(directory, update), exp.task_id)
        except (FileNotFoundError, BufferError) as e:
            raise LMCError(
                f"{exp.label(fork)}: the parent's buffer at update {update} is not usable: {e}"
            ) from None
    return ckpt, buffer


def child_buffers(
    strategy: str, parent: EpisodeBuffer | None, seeds: tuple[int, int], parent_seed: int | None = None
) -> tuple[EpisodeBuffer | None, EpisodeBuffer | None]:
    """The two children's buffers at a fork: copy (independent copies), fresh (none: each child
    starts empty), split (disjoint halves), shared (the same object twice). Each copy or half
    samples with its child's seed; a child with the parent's seed continues the parent's stream
    (then it equals the parent resumed from the fork)."""
    if strategy not in STRATEGIES:
        raise LMCError(f"unknown buffer strategy {strategy!r}")
    if parent is None or strategy == "fresh":
        return None, None
    if strategy == "copy":
        a, b = (parent.copy(seed=None if s == parent_seed else s) for s in seeds)
        return a, b
    if strategy == "split":
        return parent.split(seeds)
    shared = parent.copy(seed=seeds[0])
    return shared, shared


def _clear_run(directory: Path) -> None:
    """A shared pair restarts from its fork: its children's checkpoints and buffers go."""
    for pattern in ("checkpoint_*.pt", "buffer_*.npz"):
        for p in directory.glob(pattern):
            p.unlink()


def train_child(
    cfg: TrainConfig, checkpoint: dict, buffer: EpisodeBuffer | None, progress: bool = True
) -> str:
    """Train one child to cfg.num_updates: from the fork (new), from its own newest checkpoint
    (partial), or not at all (done). Returns the state it was found in, as a verb."""
    state = run_state(cfg)
    if state == "done":
        return "done"
    directory = run_dir(cfg)
    with run_lock(directory):
        remove_stale_temp_files(directory)
        # A copy per child: Adam's load_state_dict keeps the given tensors and steps them in place.
        fork = Fork(copy.deepcopy(checkpoint), buffer) if state == "new" else None
        run = ImitationRun(
            cfg,
            _policy_type(),
            build_policy,
            _loss(cfg),
            resume=state == "partial",
            progress=progress,
            fork=fork,
        )
        with run:
            while not run.done:
                run.update()
    return "trained" if state == "new" else "resumed"


def train_shared_pair(
    cfg_a: TrainConfig, cfg_b: TrainConfig, checkpoint: dict, buffer: EpisodeBuffer, progress: bool = True
) -> str:
    """Children A and B in lockstep in this process, reading and writing ONE buffer: every round A
    updates, then B. A pair that is not complete restarts from the fork (both children)."""
    if run_state(cfg_a) == run_state(cfg_b) == "done":
        return "done"
    dirs = [run_dir(cfg_a), run_dir(cfg_b)]
    with run_lock(dirs[0]), run_lock(dirs[1]):
        restarted = any(checkpoint_paths(d) or final_checkpoint(d) for d in dirs)
        for d in dirs:
            remove_stale_temp_files(d)
            _clear_run(d)
        runs = [
            ImitationRun(
                cfg,
                _policy_type(),
                build_policy,
                _loss(cfg),
                progress=progress,
                fork=Fork(copy.deepcopy(checkpoint), buffer),  # Adam steps its loaded tensors in place
            )
            for cfg in (cfg_a, cfg_b)
        ]
        for run in runs:  # one object even when it is empty (Fork treats an empty buffer as none)
            run.replay.buffer = buffer
        with runs[0], runs[1]:
            while not all(run.done for run in runs):
                for run in runs:
                    if not run.done:
                        run.update()
    return "restarted" if restarted else "trained"


def train_fork(
    exp: Experiment,
    fork: int,
    children: Sequence[str] = CHILDREN,
    progress: bool = True,
    num_workers: int | None = None,
) -> dict[str, str]:
    """Train fork `fork`'s children (both, for the shared strategy); {child: what was done}."""
    cfgs = {c: exp.child_config(fork, c, num_workers) for c in CHILDREN}
    if all(run_state(cfgs[c]) == "done" for c in children):
        return {c: "done" for c in children}
    checkpoint, parent_buffer = fork_state(exp, fork)
    seeds = (cfgs["A"].seed, cfgs["B"].seed)
    buffers = dict(zip(CHILDREN, child_buffers(exp.strategy, parent_buffer, seeds, exp.seed)))
    if exp.strategy == "shared":
        done = train_shared_pair(cfgs["A"], cfgs["B"], checkpoint, buffers["A"], progress)
        return {c: done for c in CHILDREN}
    return {c: train_child(cfgs[c], checkpoint, buffers[c], progress) for c in children}


def _train_fork_job(directory: str, fork: int, child: str, num_workers: int | None) -> dict[str, str]:
    return train_fork(Experiment.load(directory), fork, (child,), progress=False, num_workers=num_workers)


def train_children(exp: Experiment, progress: bool = True, parallel: int = 1) -> dict[str, str]:
    """Every child, one after another, or `parallel` at a time (processes; the env workers split)."""
    jobs = [(k, c) for k in range(len(exp.fork_points)) for c in CHILDREN]
    out: dict[str, str] = {}
    if parallel > 1 and exp.strategy != "shared":
        workers = exp.train["num_workers"]
        workers = default_num_workers() if workers is None else workers
        share = workers if workers <= 1 else max(1, workers // parallel)
        with ProcessPoolExecutor(parallel, mp_context=get_context("spawn")) as pool:
            futures = {(k, c): pool.submit(_train_fork_job, str(exp.directory), k, c, share) for k, c in jobs}
            for (k, c), future in futures.items():
                out[f"{k}{c}"] = future.result()[c]
        return out
    for k in range(len(exp.fork_points)):
        for c, done in train_fork(exp, k, progress=progress).items():
            out[f"{k}{c}"] = done
    return out


# ----------------------------------------------------------------------------- held-out labelled set


def make_heldout(task_id: str, count: int, max_steps: int | None) -> tuple[EpisodeBuffer, int]:
    """`count` bot-driven labelled episodes on evaluation seeds EVAL_SEED_START + k (layouts the
    bot fails on or does not solve are skipped and counted); (buffer, skipped)."""
    from demos import bot_episode

    env = make_env(task_id, max_steps)
    buffer = EpisodeBuffer(count, task_id)
    skipped, k = 0, 0
    while len(buffer) < count:
        if k >= 10 * count + 100:
            raise LMCError(f"the bot solved only {len(buffer)} of {k} evaluation layouts of {task_id}")
        episode, _ = bot_episode(env, EVAL_SEED_START + k)
        k += 1
        if episode is None:
            skipped += 1
        else:
            buffer.extend([episode])
    return buffer, skipped


def heldout_set(path: Path, task_id: str, count: int, max_steps: int | None) -> list[StoredEpisode]:
    """The held-out episodes saved at `path`, generated (and saved) on first use."""
    if path.is_file():
        try:
            buffer, meta = EpisodeBuffer.load(path, task_id)
        except BufferError as e:
            raise LMCError(str(e)) from None
        if len(buffer) == count and meta.get("max_steps") == max_steps:
            return list(buffer.episodes)
    buffer, skipped = make_heldout(task_id, count, max_steps)
    buffer.save(path, heldout=True, skipped=skipped, max_steps=max_steps, eval_seed_start=EVAL_SEED_START)
    return list(buffer.episodes)


@torch.no_grad()
def heldout_pass(
    policy: torch.nn.Module,
    encoder: torch.nn.Module,
    episodes: Sequence[StoredEpisode],
    obs_encoding: str,
    batch_size: int = 64,
) -> tuple[dict, list[np.ndarray]]:
    """Teacher-forced pass over the held-out episodes (memory from each reset): ({heldout_ce,
    heldout_accuracy}, router weights per layer at every labelled state, (N, E) each, states in
    the same order for every policy)."""
    ce_sum, correct, count = 0.0, 0, 0
    weights: list[list[np.ndarray]] = []
    for start in range(0, len(episodes), batch_size):
        chunk = episodes_as_chunk(list(episodes[start : start + batch_size]))
        obs = encode_obs(
            torch.from_numpy(chunk["image"]),
            torch.from_numpy(chunk["direction"]),
            torch.from_numpy(chunk["carrying"]),
            obs_encoding,
        )  # (L, B, obs_dim)
        lang = encoder(chunk["missions"])[torch.from_numpy(chunk["mission_index"])]  # (L, B, lang_dim)
        memory = policy.init_memory(obs.shape[1])
        out = policy.forward_sequence(obs, lang, memory, torch.from_numpy(chunk["done"]))
        mask = torch.from_numpy(chunk["label_mask"])
        logits, labels = out.logits[mask].double(), torch.from_numpy(chunk["label"])[mask]
        ce_sum += float(F.cross_entropy(logits, labels, reduction="sum"))
        correct += int((logits.argmax(-1) == labels).sum())
        count += int(mask.sum())
        for k, w in enumerate(out.router_weights):
            if len(weights) <= k:
                weights.append([])
            weights[k].append(w[mask].double().numpy())  # (n, E)
    metrics = {"heldout_ce": ce_sum / count, "heldout_accuracy": correct / count}
    return metrics, [np.concatenate(w) for w in weights]


# ----------------------------------------------------------------------------- interpolation


def interpolate(a: Any, b: Any, alpha: float, where: str = "") -> Any:
    """θ(α) = (1−α)·a + α·b over nested dicts of tensors (torch.lerp: exactly a at α = 0, b at
    α = 1, and a when a = b). Non-float entries must be equal; LMCError names the first that is not."""
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            odd = sorted(set(a) ^ set(b), key=str)[0]
            raise LMCError(f"the checkpoints differ in architecture: {where}{odd} is in one only")
        return {k: interpolate(a[k], b[k], alpha, f"{where}{k}.") for k in a}
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        if a.shape != b.shape:
            raise LMCError(
                f"the checkpoints differ in architecture: {where.rstrip('.')} is {tuple(a.shape)} vs {tuple(b.shape)}"
            )
        if a.is_floating_point():
            return torch.lerp(a, b.to(a.dtype), float(alpha))
        if not torch.equal(a, b):
            raise LMCError(
                f"the checkpoints differ in {where.rstrip('.')} (not a float tensor: cannot interpolate)"
            )
        return a
    if a != b:
        raise LMCError(f"the checkpoints differ in {where.rstrip('.')}: {a!r} vs {b!r}")
    return a


def check_pair(ckpt_a: dict, ckpt_b: dict, name_a: str = "a", name_b: str = "b") -> None:
    """Refuse two checkpoints that cannot be interpolated: other levels or architectures."""
    ca, cb = ckpt_a["config"], ckpt_b["config"]
    if ca.get("task_id") != cb.get("task_id"):
        raise LMCError(
            f"--{name_a} is trained on {ca.get('task_id')}, --{name_b} on {cb.get('task_id')}: compare one level"
        )
    for key in ARCHITECTURE_KEYS:
        if ca.get(key) != cb.get(key):
            raise LMCError(
                f"the checkpoints differ in architecture: {key} is {ca.get(key)!r} vs {cb.get(key)!r}"
            )
    interpolate(ckpt_a["policy_state_dict"], ckpt_b["policy_state_dict"], 0.0, "policy ")
    interpolate(ckpt_a.get("encoder_state"), ckpt_b.get("encoder_state"), 0.0, "mission encoder ")


class Evaluator:
    """One set of evaluation envs and layouts, and the held-out labelled set, for every policy
    evaluated: envs are built once and reused (each reset re-seeds its layout), bot path lengths
    are measured once per layout."""

    def __init__(
        self,
        task_id: str,
        max_steps: int | None,
        episodes: int,
        num_envs: int,
        heldout: Sequence[StoredEpisode],
    ):
        self.task_id, self.max_steps = task_id, max_steps
        self.episodes = list(range(episodes))
        self.num_envs = num_envs
        self.envs = [make_env(task_id, max_steps) for _ in range(min(num_envs, episodes))]
        self.bot_paths = BotPaths(task_id, max_steps)
        self.heldout = list(heldout)
        self.seconds = 0.0

    def __call__(
        self, policy: torch.nn.Module, encoder: torch.nn.Module, config: dict
    ) -> tuple[dict, list[np.ndarray]]:
        """(metrics, held-out router weights per layer) of one policy, as eval_mop.evaluate's."""
        started = time.perf_counter()
        with one_thread():  # as eval_mop.evaluate: batches of <= num_envs rows
            _, episodes = run_episodes(
                policy,
                encoder,
                config,
                self.task_id,
                self.episodes,
                num_envs=self.num_envs,
                max_steps=self.max_steps,
                record=False,
                bot_paths=self.bot_paths,
                envs=self.envs,
            )
            expert_sizes = [list(s) for s in getattr(policy, "expert_sizes", ())]
            metrics = compute_metrics(episodes, expert_sizes)
            held, weights = heldout_pass(policy, encoder, self.heldout, config["obs_encoding"])
        self.seconds += time.perf_counter() - started
        return {**metrics, **held}, weights


def js_divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Jensen–Shannon divergence in bits (0..1) between the rows of two (N, E) distributions."""
    from scipy.special import rel_entr

    m = 0.5 * (p + q)
    return 0.5 * (rel_entr(p, m).sum(-1) + rel_entr(q, m).sum(-1)) / math.log(2)


def routing_agreement(p: np.ndarray, q: np.ndarray) -> tuple[float, float]:
    """(mean JS divergence in bits, fraction of states whose dominant expert agrees)."""
    return float(js_divergence(p, q).mean()), float((p.argmax(-1) == q.argmax(-1)).mean())


def interpolation_rows(
    ckpt_a: dict, ckpt_b: dict, alphas: Sequence[float], evaluator: Evaluator, path_a: str = "a"
) -> list[dict]:
    """Evaluate θ(α) for every α: long rows (alpha, metric, value, ci_low, ci_high)."""
    policy, encoder, config = load_policy(path_a, ckpt=ckpt_a)
    rows, heldout = [], {}
    for alpha in alphas:
        policy = build_policy(config)
        policy.load_state_dict(interpolate(ckpt_a["policy_state_dict"], ckpt_b["policy_state_dict"], alpha))
        policy.eval()
        encoder.load_encoder_state(interpolate(ckpt_a["encoder_state"], ckpt_b["encoder_state"], alpha))
        encoder.eval()
        metrics, heldout[alpha] = evaluator(policy, encoder, config)
        for metric, value in metrics.items():
            if metric in ("num_episodes", "bot_plan_failures", "success_ci_low", "success_ci_high"):
                continue
            ci = (
                (metrics["success_ci_low"], metrics["success_ci_high"])
                if metric == "success_rate"
                else (math.nan,) * 2
            )
            rows.append(
                {
                    "alpha": round(float(alpha), 12),  # 0.3, not 0.30000000000000004
                    "metric": metric,
                    "value": float(value),
                    "ci_low": ci[0],
                    "ci_high": ci[1],
                }
            )
    ends = {"a": heldout[alphas[0]], "b": heldout[alphas[-1]]}
    for alpha in alphas:
        for layer, w in enumerate(heldout[alpha]):
            for child, ref in ends.items():
                js, agree = routing_agreement(w, ref[layer])
                for metric, value in (
                    (f"js_to_{child}_layer_{layer}", js),
                    (f"agree_to_{child}_layer_{layer}", agree),
                ):
                    rows.append(
                        {
                            "alpha": round(float(alpha), 12),  # 0.3, not 0.30000000000000004
                            "metric": metric,
                            "value": value,
                            "ci_low": math.nan,
                            "ci_high": math.nan,
                        }
                    )
    return rows


def evaluate_fork(exp: Experiment, fork: int, evaluator: Evaluator) -> pd.DataFrame:
    """Interpolate fork `fork`'s two final children; writes evaluations/fork_<k>.csv."""
    paths = [exp.child_folder(fork, c) / checkpoint_name(None) for c in CHILDREN]
    ckpts = [load_checkpoint(p) for p in paths]
    check_pair(*ckpts)
    rows = interpolation_rows(ckpts[0], ckpts[1], exp.alpha_values, evaluator, str(paths[0]))
    table = pd.DataFrame(rows)
    table.insert(0, "fork", fork)
    table.insert(1, "fork_point", exp.fork_points[fork])
    table.insert(2, "fork_update", exp.fork_updates[fork])
    out = exp.evaluation_file(fork)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda tmp: table[COLUMNS].to_csv(tmp, index=False))
    return table[COLUMNS]


# ----------------------------------------------------------------------------- instability (numbers)


def _line(f0: float, f1: float, alpha: np.ndarray) -> np.ndarray:
    """(1−α)·f0 + α·f1, exact at the ends and equal to f0 when f0 = f1 (lerp's two-sided form)."""
    return np.where(alpha < 0.5, f0 + alpha * (f1 - f0), f1 - (1.0 - alpha) * (f1 - f0))


def barrier(alpha: Sequence[float], values: Sequence[float], sign: float = 1.0) -> tuple[float, float]:
    """(height, α) of max over α of sign·[f(α) − ((1−α)·f(0) + α·f(1))] (Frankle et al. 2020):
    sign 1 for a loss, −1 for success (its drop below the line). 0 at α = 0 when nothing rises."""
    a, f = np.asarray(alpha, float), np.asarray(values, float)
    order = np.argsort(a)
    a, f = a[order], f[order]
    gap = sign * (f - _line(f[0], f[-1], a))
    i = int(np.nanargmax(gap))
    return float(gap[i]) + 0.0, float(a[i])  # + 0.0: no -0.0 for a flat success curve


def wide(interp: pd.DataFrame, fork: int) -> pd.DataFrame:
    """One fork's rows as a table: index alpha, one column per metric (+ success_ci_low/high)."""
    rows = interp[interp["fork"] == fork]
    table = rows.pivot_table(index="alpha", columns="metric", values="value", aggfunc="first").sort_index()
    success = rows[rows["metric"] == "success_rate"].set_index("alpha").sort_index()
    table["success_ci_low"], table["success_ci_high"] = success["ci_low"], success["ci_high"]
    table.columns.name = None
    return table


def layers_of(columns: Sequence[str], prefix: str) -> list[int]:
    return sorted(int(c.rsplit("_", 1)[1]) for c in columns if c.startswith(prefix))


def instability_table(interp: pd.DataFrame) -> pd.DataFrame:
    """One row per fork: the loss barrier (held-out CE) and the success drop with their α (and
    the half-width of success's 95% Wilson interval there, the drop's noise scale), the
    endpoints, and the children's routing agreement per layer (JS in bits, dominant-expert
    agreement) and its mean over layers."""
    rows = []
    for fork, group in interp.groupby("fork", sort=True):
        t = wide(interp, fork)
        alpha = t.index.to_numpy(float)
        loss, loss_at = barrier(alpha, t["heldout_ce"], 1.0)
        drop, drop_at = barrier(alpha, t["success_rate"], -1.0)
        row = {
            "fork": fork,
            "fork_point": group["fork_point"].iloc[0],
            "fork_update": group["fork_update"].iloc[0],
            "loss_barrier": loss,
            "loss_barrier_alpha": loss_at,
            "success_barrier": drop,
            "success_barrier_alpha": drop_at,
            # the noise scale of that drop: half the 95% Wilson interval of success at its α
            "success_barrier_ci": float((t["success_ci_high"] - t["success_ci_low"]).loc[drop_at] / 2.0),
            "heldout_ce_a": t["heldout_ce"].iloc[0],
            "heldout_ce_b": t["heldout_ce"].iloc[-1],
            "success_a": t["success_rate"].iloc[0],
            "success_b": t["success_rate"].iloc[-1],
        }
        layers = layers_of(t.columns, "js_to_b_layer_")
        for layer in layers:  # the children: θ(0) = A against B
            row[f"routing_js_layer_{layer}"] = t[f"js_to_b_layer_{layer}"].iloc[0]
            row[f"routing_agreement_layer_{layer}"] = t[f"agree_to_b_layer_{layer}"].iloc[0]
        if layers:
            row["routing_js_mean"] = float(np.mean([row[f"routing_js_layer_{k}"] for k in layers]))
            row["routing_agreement_mean"] = float(
                np.mean([row[f"routing_agreement_layer_{k}"] for k in layers])
            )
        rows.append(row)
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- analysis


def missing_children(exp: Experiment) -> list[str]:
    """'fork k (p, update u) child A: <folder>' for every child without its final checkpoint."""
    out = []
    if run_state(exp.parent_config()) != "done":
        out.append(f"the parent ({exp.parent_folder()})")
    for k in range(len(exp.fork_points)):
        for c in CHILDREN:
            if run_state(exp.child_config(k, c)) != "done":
                out.append(f"{exp.label(k)} child {c} ({exp.child_folder(k, c)})")
    return out


def fork_complete(exp: Experiment, fork: int) -> bool:
    return all(run_state(exp.child_config(fork, c)) == "done" for c in CHILDREN)


def evaluate_missing(
    exp: Experiment, forks: Sequence[int] | None = None, evaluator: Evaluator | None = None
) -> tuple[list[int], float]:
    """Evaluate every complete fork without its evaluations/fork_<k>.csv; (forks done, seconds)."""
    todo = [
        k
        for k in (range(len(exp.fork_points)) if forks is None else forks)
        if not exp.evaluation_file(k).is_file() and fork_complete(exp, k)
    ]
    if not todo:
        return [], 0.0
    if evaluator is None:
        cfg = exp.parent_config()
        held = heldout_set(exp.directory / HELDOUT_FILE, exp.task_id, exp.heldout_episodes, cfg.max_steps)
        evaluator = Evaluator(exp.task_id, cfg.max_steps, exp.eval_episodes, exp.eval_envs, held)
    started = time.perf_counter()
    for k in todo:
        evaluate_fork(exp, k, evaluator)
        print(f"evaluated {exp.label(k)}: {exp.alphas} α", flush=True)
    return todo, time.perf_counter() - started


def load_results(directory: str | os.PathLike) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(interpolation, instability) tables of an analysed experiment (or compare) folder."""
    directory = Path(directory)
    files = [directory / INTERPOLATION_FILE, directory / INSTABILITY_FILE]
    for f in files:
        if not f.is_file():
            raise LMCError(
                f"{str(directory)!r} has no {f.name}: run `python lmc.py analyze --results_dir {directory}`"
            )
    return pd.read_csv(files[0]), pd.read_csv(files[1])


def find_experiments(root: str | os.PathLike) -> dict[str, str]:
    """{label: folder} of every analysed experiment (and compare) under `root`, for the notebook:
    'BabyAI-GoToLocal-v0 · seed 42 · copy'."""
    root = Path(root)
    found = {}
    for table in sorted(root.glob(f"**/{INSTABILITY_FILE}")):
        folder = table.parent
        if (folder / INTERPOLATION_FILE).is_file() and (folder / CONFIG_FILE).is_file():
            found[" · ".join(p.replace("_", " ", 1) for p in folder.relative_to(root).parts)] = str(folder)
    return found


def expert_sizes_of(directory: str | os.PathLike) -> list | None:
    """The expert sizes of an experiment folder's runs (for figure legends); None if unknown."""
    try:
        doc = json.loads((Path(directory) / CONFIG_FILE).read_text(encoding="utf-8"))
        return doc.get("train", doc).get("expert_hidden_sizes")
    except (OSError, ValueError, AttributeError):
        return None


def fork_names(interp: pd.DataFrame) -> dict[str, int]:
    """{'fork 0: 0.05 · update 20': 0, ...} of an interpolation table (a compare: 'compare')."""
    names = {}
    for fork, rows in interp.groupby("fork", sort=True):
        point, update = rows["fork_point"].iloc[0], rows["fork_update"].iloc[0]
        names["compare" if pd.isna(point) else f"fork {fork}: {point:g} · update {int(update)}"] = int(fork)
    return names


def write_tables_and_figures(
    directory: Path, interp: pd.DataFrame, names: dict[int, str] | None, expert_sizes: list | None
) -> dict:
    """interpolation.csv, instability.csv and fork_analysis/*.png of the given rows."""
    from mop import lmc_plots
    from plotting_utils import save_figures

    interp = interp.sort_values(["fork", "metric", "alpha"]).reset_index(drop=True)[COLUMNS]
    table = instability_table(interp)
    atomic_write(directory / INTERPOLATION_FILE, lambda tmp: interp.to_csv(tmp, index=False))
    atomic_write(directory / INSTABILITY_FILE, lambda tmp: table.to_csv(tmp, index=False))
    figures = lmc_plots.lmc_figures(interp, table, names, expert_sizes)
    paths = save_figures(figures, directory / FIGURE_DIR)
    return {
        "interpolation": str(directory / INTERPOLATION_FILE),
        "instability": str(directory / INSTABILITY_FILE),
        "figures": [str(p) for p in paths],
        "table": table,
    }


def analyze(directory: str | os.PathLike, evaluator: Evaluator | None = None) -> dict:
    """Evaluate every complete fork not yet evaluated, then write the tables and figures of every
    evaluated fork. 'missing' names each child (and the parent) that is not finished."""
    exp = Experiment.load(directory)
    started = time.perf_counter()
    missing = missing_children(exp)
    evaluated, eval_s = evaluate_missing(exp, evaluator=evaluator)
    done = [
        k for k in range(len(exp.fork_points)) if exp.evaluation_file(k).is_file() and fork_complete(exp, k)
    ]
    summary: dict[str, Any] = {
        "results_dir": str(exp.directory),
        "evaluated": evaluated,
        "missing": missing,
        "analysed": done,
        "eval_s": eval_s,
    }
    if not done:
        return summary
    interp = pd.concat([pd.read_csv(exp.evaluation_file(k)) for k in done], ignore_index=True)
    names = {k: name for name, k in fork_names(interp).items()}
    figures_started = time.perf_counter()
    sizes = exp.train["expert_hidden_sizes"]
    summary.update(write_tables_and_figures(exp.directory, interp, names, sizes))
    summary["figures_s"] = time.perf_counter() - figures_started
    summary["analysis_s"] = time.perf_counter() - started
    return summary


def record_timing(directory: Path, entry: dict) -> None:
    path = directory / TIMING_FILE
    runs = json.loads(path.read_text()) if path.is_file() else []
    runs.append(entry)
    atomic_write_text(path, json.dumps(runs, indent=1) + "\n")


def print_findings(table: pd.DataFrame) -> None:
    for _, r in table.iterrows():
        routing = (
            f"  routing JS {r['routing_js_mean']:.3f} bits, dominant agree {r['routing_agreement_mean']:.2f}"
            if "routing_js_mean" in r and pd.notna(r.get("routing_js_mean"))
            else ""
        )
        print(
            f"fork {int(r['fork'])} ({r['fork_point']:g}, update {r['fork_update']:g}): loss barrier "
            f"{r['loss_barrier']:.4f} at α {r['loss_barrier_alpha']:.2f}, success drop "
            f"{r['success_barrier']:.3f} at α {r['success_barrier_alpha']:.2f} "
            f"(95% interval ±{r['success_barrier_ci']:.3f}){routing}"
        )


# ----------------------------------------------------------------------------- train (the experiment)


def open_experiment(exp: Experiment, resume: bool, given: set[str] | None = None) -> Experiment:
    """Start a new experiment folder (refused if one is there) or, with resume, the stored one:
    the flags given (`given`) must agree with it, except RESUMABLE run-time settings."""
    path = exp.directory / CONFIG_FILE
    if not resume:
        if path.exists() or (exp.directory / CHECKPOINT_DIR).exists():
            raise LMCError(
                f"{str(exp.directory)!r} already holds an experiment: finish it with --resume, or choose "
                "another --results_root"
            )
        return exp
    stored = Experiment.load(exp.directory)
    given = set(given or ())
    for key in sorted(given):
        if key in RESUMABLE:
            continue
        new, old = _setting(exp, key), _setting(stored, key)
        if new != old:
            raise LMCError(f"--resume: {key}={new!r} differs from the experiment's {old!r} ({path})")
    train = {**stored.train, **{k: exp.train[k] for k in RESUMABLE & given}}
    return dataclasses.replace(stored, train=train)


def prepare(exp: Experiment) -> Experiment:
    """Write config.json and the held-out labelled set (generated once per experiment)."""
    exp.write()
    cfg = exp.parent_config()
    heldout_set(exp.directory / HELDOUT_FILE, exp.task_id, exp.heldout_episodes, cfg.max_steps)
    return exp


def training_jobs(exp: Experiment) -> list[dict]:
    """The children's training units after the parent: one per child, or one per fork for the
    shared strategy (its pair runs in lockstep in one process). Modal runs each in a container."""
    per_fork = [list(CHILDREN)] if exp.strategy == "shared" else [[c] for c in CHILDREN]
    return [{"fork": k, "children": c} for k in range(len(exp.fork_points)) for c in per_fork]


def drop_stale_evaluations(exp: Experiment, trained: dict[str, str]) -> None:
    """A fork whose children were (re)trained now ({"<k><child>": "trained"|"resumed"|...}) is
    evaluated anew: its evaluations/fork_<k>.csv goes."""
    for k in range(len(exp.fork_points)):
        if any(trained.get(f"{k}{c}", "done") != "done" for c in CHILDREN):
            exp.evaluation_file(k).unlink(missing_ok=True)


def _setting(exp: Experiment, key: str) -> Any:
    if key in exp.train:
        return exp.train[key]
    value = getattr(exp, key)
    return list(value) if isinstance(value, tuple) else value


def run_experiment(
    exp: Experiment,
    resume: bool = False,
    progress: bool = True,
    parallel_children: int = 1,
    given: set[str] | None = None,
    command: str = "",
) -> dict:
    """Train the parent and every child, evaluate every fork, write tables and figures; resumable
    (every finished run, child and fork evaluation is kept)."""
    exp = open_experiment(exp, resume, given)
    started = time.perf_counter()
    prepare(exp)
    trained = {"parent": train_parent(exp, progress)}
    trained.update(train_children(exp, progress, parallel_children))
    drop_stale_evaluations(exp, trained)
    train_s = time.perf_counter() - started
    summary = analyze(exp.directory)
    wall = time.perf_counter() - started
    timing = {
        "command": command,
        "wall_s": wall,
        "train_s": train_s,
        "eval_s": summary["eval_s"],
        "figures_s": summary.get("figures_s", 0.0),
        "trained": trained,
    }
    record_timing(exp.directory, timing)
    summary.update(trained=trained, timing=timing)
    return summary


# ----------------------------------------------------------------------------- compare


def compare(
    path_a: str,
    path_b: str,
    out: str | os.PathLike | None = None,
    alphas: int = 11,
    eval_episodes: int = 100,
    eval_envs: int = 16,
    heldout_episodes: int = 100,
    results_root: str = "lmc_results",
) -> dict:
    """Interpolate any two checkpoints of one architecture and level (e.g. two seeds of a trial,
    or runs trained on Modal): interpolation.csv, instability.csv and the figures in `out`."""
    if alphas < 2:
        raise LMCError(f"--alphas must be at least 2 (the two checkpoints), got {alphas}")
    for name, value in (
        ("eval_episodes", eval_episodes),
        ("eval_envs", eval_envs),
        ("heldout_episodes", heldout_episodes),
    ):
        if not 1 <= value <= 1_000_000:
            raise LMCError(f"--{name} must be a whole number from 1 to 1,000,000, got {value}")
    ckpts = []
    for name, path in (("a", path_a), ("b", path_b)):
        try:
            ckpts.append(load_checkpoint(path))
        except CheckpointError as e:
            raise LMCError(f"--{name}: {e}") from None
    check_pair(*ckpts)
    config = ckpts[0]["config"]
    task_id = config["task_id"]
    try:
        check_task_id(task_id)
        labels = [RunId.of(c["config"]).label + f"-u{c['config'].get('update')}" for c in ckpts]
    except (ValueError, RunPathError) as e:
        raise LMCError(f"--a: {e}") from None
    directory = (
        Path(out)
        if out
        else Path(results_root) / "compare" / safe_name(run_task_name(task_id), "task_id") / "__".join(labels)
    )
    if (directory / INTERPOLATION_FILE).exists():
        raise LMCError(f"{str(directory)!r} already holds a comparison: choose another --out")
    directory.mkdir(parents=True, exist_ok=True)
    held = heldout_set(directory / HELDOUT_FILE, task_id, heldout_episodes, config.get("max_steps"))
    evaluator = Evaluator(task_id, config.get("max_steps"), eval_episodes, eval_envs, held)
    rows = interpolation_rows(ckpts[0], ckpts[1], np.linspace(0.0, 1.0, alphas), evaluator, path_a)
    interp = pd.DataFrame(rows)
    interp.insert(0, "fork", 0)
    interp.insert(1, "fork_point", math.nan)
    interp.insert(2, "fork_update", math.nan)
    atomic_write_text(
        directory / CONFIG_FILE,
        json.dumps(
            {
                "kind": "lmc_compare",
                "a": str(path_a),
                "b": str(path_b),
                "alphas": alphas,
                "eval_episodes": eval_episodes,
                "eval_envs": eval_envs,
                "heldout_episodes": heldout_episodes,
                "expert_hidden_sizes": config.get("expert_hidden_sizes"),
            },
            indent=1,
        )
        + "\n",
    )
    names = {0: f"{labels[0]} vs {labels[1]}"}
    summary = write_tables_and_figures(directory, interp, names, config.get("expert_hidden_sizes"))
    summary.update(results_dir=str(directory), eval_s=evaluator.seconds)
    return summary


# ----------------------------------------------------------------------------- command line


def _train_flags(parser: argparse.ArgumentParser) -> None:
    S = argparse.SUPPRESS
    parser.add_argument(
        "--fork_points",
        default=S,
        help=f"fork points, fractions of num_updates in (0, 1), sorted; 0 forks the initialisation (default {DEFAULT_FORK_POINTS})",
    )
    parser.add_argument(
        "--fork_buffer_strategy",
        default=S,
        help="children's DAgger buffers: copy | fresh | shared | split (default: copy with --buffer_episodes, fresh without; only fresh without a buffer)",
    )
    parser.add_argument(
        "--alphas",
        type=int,
        default=S,
        help="evenly spaced interpolation points in [0, 1], ends included, at least 2 (default 11)",
    )
    parser.add_argument(
        "--eval_episodes",
        type=int,
        default=S,
        help="evaluation episodes per α, on evaluation seeds 0..N-1 (default 100)",
    )
    parser.add_argument(
        "--eval_envs", type=int, default=S, help="evaluation envs stepped together, built once (default 16)"
    )
    parser.add_argument(
        "--heldout_episodes",
        type=int,
        default=S,
        help="bot-driven labelled episodes for the held-out loss and routing agreement (default 100)",
    )
    parser.add_argument(
        "--results_root",
        default="lmc_results",
        help="experiments go to <results_root>/<task>/seed_<S>/<strategy>/ (default lmc_results)",
    )
    parser.add_argument(
        "--parallel_children",
        type=int,
        default=1,
        help="children trained at once, in processes with the env workers split (default 1; shared: always one pair in lockstep)",
    )
    parser.add_argument("--no_progress", action="store_true", help="no progress bars")


LMC_DEFAULTS = {
    "fork_points": DEFAULT_FORK_POINTS,
    "alphas": 11,
    "eval_episodes": 100,
    "eval_envs": 16,
    "heldout_episodes": 100,
}


def build_experiment(
    overrides: dict,
    settings: dict | None = None,
    results_root: str | os.PathLike = "lmc_results",
    config_path: str | os.PathLike | None = None,
    resume: bool = False,
) -> Experiment:
    """The experiment that config keys (`overrides`, over `config_path`) and LMC settings
    (fork_points, fork_buffer_strategy, alphas, eval_episodes, eval_envs, heldout_episodes; absent:
    the defaults) describe, validated (LMCError/ConfigError). With resume: the folder of the stored
    experiment (with no strategy given, the one of this task and seed under results_root), not
    checked: open_experiment continues the stored one."""
    overrides = resolve_aliases(overrides, "the command line")
    for key, why in OWN_KEYS.items():
        if key in overrides:
            raise LMCError(f"--{key} is set by lmc.py ({why})")
    settings = {**LMC_DEFAULTS, **(settings or {})}
    unknown = set(settings) - set(LMC_DEFAULTS) - {"fork_buffer_strategy"}
    if unknown:
        raise LMCError(f"unknown LMC setting {sorted(unknown)[0]!r}")
    cfg = load_config(config_path, overrides)
    seed = 0 if cfg.seed is None else cfg.seed
    strategy = settings.get("fork_buffer_strategy")
    if strategy is None and resume:  # the one experiment of this task and seed
        seed_dir = Path(results_root) / run_task_name(cfg.task_id) / f"seed_{seed}"
        found = sorted(p.parent.name for p in seed_dir.glob(f"*/{CONFIG_FILE}"))
        if len(found) > 1:
            raise LMCError(
                f"--resume: {seed_dir} holds several experiments ({', '.join(found)}): give --fork_buffer_strategy"
            )
        strategy = found[0] if found else None
    if strategy is None:
        strategy = "copy" if cfg.buffer_episodes else "fresh"
    directory = experiment_dir(results_root, cfg.task_id, seed, strategy)
    if resume and not (directory / CONFIG_FILE).is_file():
        raise LMCError(f"--resume: no experiment in {str(directory)!r} to finish")
    try:
        points = [float(v) for v in str(settings["fork_points"]).split(",") if v.strip()]
    except ValueError:
        raise LMCError(
            f"--fork_points must be comma-separated fractions, got {settings['fork_points']!r}"
        ) from None
    train = {**dataclasses.asdict(cfg), "seed": seed, "checkpoint_dir": str(directory / CHECKPOINT_DIR)}
    exp = Experiment(
        directory,
        train,
        tuple(points),
        strategy,
        settings["alphas"],
        settings["eval_episodes"],
        settings["eval_envs"],
        settings["heldout_episodes"],
    )
    # With resume the stored experiment is the one that runs (open_experiment compares the given
    # settings with it); these defaults need not fit it.
    return exp if resume else exp.check()


def experiment_from_args(args: argparse.Namespace) -> tuple[Experiment, set[str]]:
    """The experiment the flags describe (validated), and which settings were given."""
    overrides = {k: v for k, v in vars(args).items() if k in CONFIG_KEYS or k in CONFIG_ALIASES}
    settings = {k: getattr(args, k) for k in (*LMC_DEFAULTS, "fork_buffer_strategy") if hasattr(args, k)}
    path = (
        args.config if args.config is not None else ("config.yaml" if Path("config.yaml").exists() else None)
    )
    exp = build_experiment(overrides, settings, args.results_root, path, args.resume)
    given = set(resolve_aliases(overrides, "the command line")) | set(settings) - {"fork_buffer_strategy"}
    return exp, given


def _analyze_main(argv: list[str]) -> dict:
    from mop.experiment import ArgumentParser

    parser = ArgumentParser(
        prog="lmc.py analyze",
        description="Evaluate every complete fork of an LMC experiment "
        "that is not evaluated yet, then write interpolation.csv, instability.csv and fork_analysis/*.png.",
    )
    parser.add_argument(
        "--results_dir",
        required=True,
        help="the experiment folder (<results_root>/<task>/seed_<S>/<strategy>)",
    )
    args = parser.parse_args(argv)
    summary = analyze(args.results_dir)
    if "table" in summary:
        print_findings(summary["table"])
        print(
            f"wrote {summary['interpolation']}, {summary['instability']} and {len(summary['figures'])} figures"
        )
    if summary["missing"]:
        shown = "; ".join(summary["missing"][:4]) + (
            f"; and {len(summary['missing']) - 4} more" if len(summary["missing"]) > 4 else ""
        )
        analysed = ", ".join(map(str, summary["analysed"])) or "none"
        raise LMCError(
            f"incomplete experiment: missing {shown}; analysed forks: {analysed} (finish it with --resume)"
        )
    return summary


def _compare_main(argv: list[str]) -> dict:
    from mop.experiment import ArgumentParser

    parser = ArgumentParser(
        prog="lmc.py compare",
        description="Interpolate two checkpoints of the same architecture and level "
        "(e.g. two seeds of one trial, or runs downloaded from Modal).",
    )
    parser.add_argument("--a", required=True, help="checkpoint at α = 0")
    parser.add_argument("--b", required=True, help="checkpoint at α = 1")
    parser.add_argument(
        "--out", default=None, help="output folder (default <results_root>/compare/<task>/<a>__<b>)"
    )
    parser.add_argument("--results_root", default="lmc_results")
    parser.add_argument(
        "--alphas", type=int, default=11, help="interpolation points, ends included (default 11)"
    )
    parser.add_argument(
        "--eval_episodes", type=int, default=100, help="evaluation episodes per α (default 100)"
    )
    parser.add_argument(
        "--eval_envs", type=int, default=16, help="evaluation envs stepped together (default 16)"
    )
    parser.add_argument(
        "--heldout_episodes", type=int, default=100, help="held-out bot episodes (default 100)"
    )
    args = parser.parse_args(argv)
    summary = compare(
        args.a,
        args.b,
        args.out,
        args.alphas,
        args.eval_episodes,
        args.eval_envs,
        args.heldout_episodes,
        args.results_root,
    )
    print_findings(summary["table"])
    print(f"wrote {summary['results_dir']}")
    return summary


def _train_main(argv: list[str]) -> dict:
    parser = build_arg_parser(__doc__, _train_flags)
    args = parser.parse_args(argv)
    exp, given = experiment_from_args(args)
    if args.parallel_children < 1:
        raise LMCError(f"--parallel_children must be at least 1, got {args.parallel_children}")
    torch.set_num_threads(1)
    summary = run_experiment(
        exp,
        args.resume,
        not args.no_progress,
        args.parallel_children,
        given,
        shlex.join(["python", "lmc.py", *argv]),
    )
    if "table" in summary:
        print_findings(summary["table"])
    t = summary["timing"]
    print(
        f"{summary['results_dir']}: {t['wall_s'] / 60:.1f} min, training {t['train_s'] / 60:.1f} min, "
        f"evaluation {t['eval_s'] / 60:.1f} min ({t['eval_s'] / max(t['wall_s'], 1e-9):.0%})"
    )
    if summary["missing"]:
        raise LMCError(f"missing after training: {'; '.join(summary['missing'])}")
    return summary


COMMANDS = {"analyze": _analyze_main, "compare": _compare_main, "train": _train_main}


def main(argv: list[str] | None = None) -> dict:
    """`python lmc.py [train] ...`, `python lmc.py analyze ...`, `python lmc.py compare ...`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv.pop(0) if argv and argv[0] in COMMANDS else "train"
    try:
        return COMMANDS[command](argv)
    except (ConfigError, RunLockedError, OutputError, EvalError, RunPathError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted; finish with --resume", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
