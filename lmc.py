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
import dataclasses
import json
import os
import shlex
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from eval_mop import EvalError, compute_metrics, run_episodes
from mixture_of_experts import build_policy
from mop.babyai_env import check_task_id
from mop.connectivity import (
    CONFIG_FILE,
    HELDOUT_FILE,
    INSTABILITY_FILE,
    INTERPOLATION_FILE,
    Evaluator,
    LMCError,
    alpha_values,
    check_evaluation,
    check_pair,
    findings,
    fork_names,
    heldout_set,
    interpolation_table,
    write_tables,
)
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
    resolve_aliases,
    run_dir,
)
from mop.imitation import (
    DONE,
    NEW,
    PARTIAL,
    Fork,
    ImitationRun,
    buffer_path,
    learner_device,
    run_in_lockstep,
    run_status,
    train_to_end,
)
from mop.lmc_settings import DEFAULTS, EVALUATION_SETTINGS, EXPERIMENT_SETTINGS, STRATEGIES, add_flags
from mop.replay_buffer import BufferError, EpisodeBuffer
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
    own_run,
    run_task_name,
    safe_name,
)
from train_mop import POLICY_TYPE, make_loss

CHILDREN = ("A", "B")
EXPERIMENT_KIND, EXPERIMENT_VERSION = "lmc_experiment", 1
TIMING_FILE, EVAL_DIR = "timing.json", "evaluations"
FIGURE_DIR, CHECKPOINT_DIR = "fork_analysis", "checkpoints"
# Run-time settings that --resume may change (they do not change what is computed).
RESUMABLE = {"num_workers", "log_interval", "wandb_project", "device"}
# lmc.py decides these: the folders of the parent and children.
OWN_KEYS = {"trial": "fork k's children are trial k+1", "checkpoint_dir": "use --results_root"}


# ----------------------------------------------------------------------------- the experiment


def parse_fork_points(text: str, num_updates: int) -> tuple[list[float], list[int]]:
    """'0.1,0.5' -> ([0.1, 0.5], fork updates [round(p * num_updates)]): each in (0, 1) or exactly 0,
    strictly increasing, each on its own update in 1..num_updates-1 (0 only for p = 0)."""
    points = _points(text)
    return points, check_fork_points(points, num_updates)


def _points(text: str) -> list[float]:
    try:
        return [float(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise LMCError(f"--fork_points must be comma-separated fractions, got {text!r}") from None


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
    """One LMC experiment: the parent's config, the forks, the buffer strategy, the evaluation
    (build_experiment fills in mop/lmc_settings.py's defaults)."""

    directory: Path
    train: dict  # the parent's TrainConfig fields (checkpoint_dir: set from `directory`)
    fork_points: tuple[float, ...]
    strategy: str
    alphas: int
    eval_episodes: int
    eval_envs: int
    heldout_episodes: int

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
    def alpha_values(self) -> Sequence[float]:
        return alpha_values(self.alphas)

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
            **{k: getattr(self, k) for k in EVALUATION_SETTINGS},
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
                **{k: int(doc[k]) for k in EVALUATION_SETTINGS},
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
        check_evaluation(*(getattr(self, k) for k in EVALUATION_SETTINGS), "the two children")
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

    def evaluator(self) -> Evaluator:
        """The evaluation envs and the held-out set (heldout.npz, made on first use)."""
        max_steps = self.parent_config().max_steps
        held = heldout_set(self.directory / HELDOUT_FILE, self.task_id, self.heldout_episodes, max_steps)
        return Evaluator(self.task_id, max_steps, self.eval_episodes, self.eval_envs, held, play)


def experiment_dir(results_root: str | os.PathLike, task_id: str, seed: int, strategy: str) -> Path:
    return (
        Path(results_root)
        / safe_name(run_task_name(task_id), "task_id")
        / f"seed_{int(seed)}"
        / safe_name(strategy, "--fork_buffer_strategy")
    )


# ----------------------------------------------------------------------------- training


def _trainer(cfg: TrainConfig) -> tuple:
    """train_to_end's / ImitationRun's first arguments: train_mop's policy and loss for `cfg`."""
    return cfg, POLICY_TYPE, build_policy, make_loss(cfg, cfg.expert_hidden_sizes)


VERBS = {NEW: "trained", PARTIAL: "resumed", DONE: "done"}  # what a trainer did, by the state found


def train_parent(exp: Experiment, progress: bool = True, num_workers: int | None = None) -> str:
    """Train (or finish) the parent, saving its full state at every fork update (fork point 0: the
    initialisation, before any update); what was done (VERBS)."""
    cfg = exp.parent_config(num_workers)
    state, _ = train_to_end(*_trainer(cfg), progress=progress, save_at=tuple(exp.fork_updates))
    return VERBS[state]


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
    (partial), or not at all (done). Returns what was done (VERBS)."""
    state, _ = train_to_end(*_trainer(cfg), progress=progress, fork=Fork(checkpoint, buffer))
    return VERBS[state]


def train_shared_pair(
    cfg_a: TrainConfig, cfg_b: TrainConfig, checkpoint: dict, buffer: EpisodeBuffer, progress: bool = True
) -> str:
    """Children A and B in lockstep in this process, reading and writing ONE buffer: every round A
    updates, then B. A pair that is not complete restarts from the fork (both children)."""
    dirs = [run_dir(cfg_a), run_dir(cfg_b)]
    with own_run(*dirs):
        if run_status(cfg_a).state == run_status(cfg_b).state == DONE:
            return "done"
        restarted = any(checkpoint_paths(d) or final_checkpoint(d) for d in dirs)
        for d in dirs:
            _clear_run(d)
        # Fork copies the checkpoint for each run: Adam steps its loaded tensors in place.
        runs = [
            ImitationRun(*_trainer(c), progress=progress, fork=Fork(checkpoint, buffer))
            for c in (cfg_a, cfg_b)
        ]
        for run in runs:  # one object even when it is empty (Fork treats an empty buffer as none)
            run.replay.buffer = buffer
        run_in_lockstep(runs)
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
    if all(run_status(cfgs[c]).state == DONE for c in children):  # (each trainer checks again, locked)
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


# ----------------------------------------------------------------------------- evaluation


def play(policy: torch.nn.Module, encoder: torch.nn.Module, config: dict, ev: Evaluator) -> dict:
    """One policy's episode metrics on the evaluator's envs and layouts, as eval_mop.evaluate's
    (the connectivity.Evaluator's `play`)."""
    where = dict(num_envs=ev.num_envs, max_steps=ev.max_steps, bot_paths=ev.bot_paths, envs=ev.envs)
    _, episodes = run_episodes(policy, encoder, config, ev.task_id, ev.episodes, record=False, **where)
    return compute_metrics(episodes, [list(s) for s in getattr(policy, "expert_sizes", ())])


def evaluate_fork(exp: Experiment, fork: int, evaluator: Evaluator) -> pd.DataFrame:
    """Interpolate fork `fork`'s two final children; writes evaluations/fork_<k>.csv."""
    paths = [exp.child_folder(fork, c) / checkpoint_name(None) for c in CHILDREN]
    ckpts = [load_checkpoint(p) for p in paths]
    check_pair(*ckpts)
    point, update = exp.fork_points[fork], exp.fork_updates[fork]
    table = interpolation_table(*ckpts, exp.alpha_values, evaluator, str(paths[0]), fork, point, update)
    out = exp.evaluation_file(fork)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda tmp: table.to_csv(tmp, index=False))
    return table


# ----------------------------------------------------------------------------- analysis


def missing_children(exp: Experiment) -> list[str]:
    """'fork k (p, update u) child A: <folder>' for every child without its final checkpoint."""
    out = []
    if run_status(exp.parent_config()).state != DONE:
        out.append(f"the parent ({exp.parent_folder()})")
    for k in range(len(exp.fork_points)):
        for c in CHILDREN:
            if run_status(exp.child_config(k, c)).state != DONE:
                out.append(f"{exp.label(k)} child {c} ({exp.child_folder(k, c)})")
    return out


def fork_complete(exp: Experiment, fork: int) -> bool:
    return all(run_status(exp.child_config(fork, c)).state == DONE for c in CHILDREN)


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
        evaluator = exp.evaluator()
    started = time.perf_counter()
    for k in todo:
        evaluate_fork(exp, k, evaluator)
        print(f"evaluated {exp.label(k)}: {exp.alphas} α", flush=True)
    return todo, time.perf_counter() - started


def write_tables_and_figures(
    directory: Path, interp: pd.DataFrame, names: dict[int, str] | None, expert_sizes: list | None
) -> dict:
    """interpolation.csv, instability.csv and fork_analysis/*.png of the given rows."""
    from mop import lmc_plots
    from plotting_utils import save_figures

    interp, table = write_tables(directory, interp)
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
    train["device"] = exp.train["device"]  # the machine's (flag, else config.yaml), not the stored one
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
    alphas: int = DEFAULTS.alphas,
    eval_episodes: int = DEFAULTS.eval_episodes,
    eval_envs: int = DEFAULTS.eval_envs,
    heldout_episodes: int = DEFAULTS.heldout_episodes,
    results_root: str = DEFAULTS.results_root,
) -> dict:
    """Interpolate any two checkpoints of one architecture and level (e.g. two seeds of a trial,
    or runs trained on Modal): interpolation.csv, instability.csv and the figures in `out`."""
    check_evaluation(alphas, eval_episodes, eval_envs, heldout_episodes, "the two checkpoints")
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
    max_steps = config.get("max_steps")
    held = heldout_set(directory / HELDOUT_FILE, task_id, heldout_episodes, max_steps)
    evaluator = Evaluator(task_id, max_steps, eval_episodes, eval_envs, held, play)
    interp = interpolation_table(*ckpts, alpha_values(alphas), evaluator, path_a)  # fork 0, point NaN
    atomic_write_text(
        directory / CONFIG_FILE,
        json.dumps(
            {
                "kind": "lmc_compare",
                "a": str(path_a),
                "b": str(path_b),
                **dict(zip(EVALUATION_SETTINGS, (alphas, eval_episodes, eval_envs, heldout_episodes))),
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
    # the experiment's settings are absent when not given: --resume compares only those given
    add_flags(parser, EXPERIMENT_SETTINGS, given_only=True)
    add_flags(parser, ("results_root", "parallel_children"))
    parser.add_argument("--no_progress", action="store_true", help="no progress bars")


def build_experiment(
    overrides: dict,
    settings: dict | None = None,
    results_root: str | os.PathLike = DEFAULTS.results_root,
    config_path: str | os.PathLike | None = None,
    resume: bool = False,
) -> Experiment:
    """The experiment that config keys (`overrides`, over `config_path`) and LMC settings
    (EXPERIMENT_SETTINGS' keys; absent: LmcSettings' defaults) describe, validated
    (LMCError/ConfigError). With resume: the folder of the stored
    experiment (with no strategy given, the one of this task and seed under results_root), not
    checked: open_experiment continues the stored one."""
    overrides = resolve_aliases(overrides, "the command line")
    for key, why in OWN_KEYS.items():
        if key in overrides:
            raise LMCError(f"--{key} is set by lmc.py ({why})")
    unknown = set(settings or {}) - set(EXPERIMENT_SETTINGS)
    if unknown:
        raise LMCError(f"unknown LMC setting {sorted(unknown)[0]!r}")
    given = dataclasses.replace(DEFAULTS, **(settings or {}))
    cfg = load_config(config_path, overrides)
    seed = 0 if cfg.seed is None else cfg.seed
    strategy = given.fork_buffer_strategy
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
    points = _points(given.fork_points)
    train = {**dataclasses.asdict(cfg), "seed": seed, "checkpoint_dir": str(directory / CHECKPOINT_DIR)}
    evaluation = {k: getattr(given, k) for k in EVALUATION_SETTINGS}
    exp = Experiment(directory, train, tuple(points), strategy, **evaluation)
    # With resume the stored experiment is the one that runs (open_experiment compares the given
    # settings with it); these defaults need not fit it.
    return exp if resume else exp.check()


def experiment_from_args(args: argparse.Namespace) -> tuple[Experiment, set[str]]:
    """The experiment the flags describe (validated), and which settings were given."""
    overrides = {k: v for k, v in vars(args).items() if k in CONFIG_KEYS or k in CONFIG_ALIASES}
    settings = {k: getattr(args, k) for k in EXPERIMENT_SETTINGS if hasattr(args, k)}
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
        print(*findings(summary["table"]), sep="\n")
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
    add_flags(parser, ("results_root", *EVALUATION_SETTINGS), compare=True)
    args = parser.parse_args(argv)
    evaluation = {k: getattr(args, k) for k in EVALUATION_SETTINGS}
    summary = compare(args.a, args.b, args.out, results_root=args.results_root, **evaluation)
    print(*findings(summary["table"]), sep="\n")
    print(f"wrote {summary['results_dir']}")
    return summary


def _train_main(argv: list[str]) -> dict:
    parser = build_arg_parser(__doc__, _train_flags)
    args = parser.parse_args(argv)
    exp, given = experiment_from_args(args)
    if args.parallel_children < 1:
        raise LMCError(f"--parallel_children must be at least 1, got {args.parallel_children}")
    learner_device(exp.parent_config())  # a GPU this machine lacks: one line before config.json
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
        print(*findings(summary["table"]), sep="\n")
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
