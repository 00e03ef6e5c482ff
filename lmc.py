"""Linear mode connectivity (LMC) of MoP policies: fork a training run, train child pairs to the
end, and evaluate the straight line between their weights (Frankle et al. 2020, "Linear Mode
Connectivity and the Lottery Ticket Hypothesis"; the LMC-RL workflow, on BabyAI imitation).
docs/reference.md "Linear mode connectivity" is the manual; the numbers are mop/connectivity.py's
and mop/lmc_stats.py's.

Semantics
- The parent trains with the normal loop (imitation.ImitationRun, train_mop's policy and loss). At
  each fork point p (a fraction of num_updates; fork update u = round(p * num_updates)) its full
  state is saved: checkpoint_<u>.pt (weights, Adam, RNGs, counters, per-env episode counters) and
  buffer_<u>.npz. Fork point 0 forks the initialisation: two independent runs from one init.
- --pairs K pairs of children A and B per fork start from exactly that state (imitation.Fork) and
  train to num_updates. They differ only in their data noise: with F forks, child A of fork k in
  pair q has run seed S + 1 + 2(qF + k), child B S + 2 + 2(qF + k) (parent: S), so each has its
  own training-layout and teacher-forcing streams (babyai_env.train_episode_seed: disjoint per run
  seed, all >= 1e9, never an evaluation layout) and its own buffer-sampling stream. The global
  torch RNG (expert dropout only) is the parent's.
- Buffer strategies (--fork_buffer_strategy, as in LMC-RL): `copy`: each child gets its own copy
  of the parent's DAgger buffer; `fresh`: both start empty; `split`: the parent's buffer divided
  into two disjoint halves (every other episode); `shared`: both children of a pair read and write
  ONE buffer object, in lockstep in one process (every round A updates, then B); a shared pair
  killed mid-way restarts from its fork point. With the buffer off only `fresh` is meaningful.
  Default: `copy` with a buffer, `fresh` without.
- Interpolation θ(α) = (1−α)·θ_A + α·θ_B of every parameter (routers and mission encoder too) at
  --alphas evenly spaced α, each evaluated on one fixed set of evaluation layouts as eval_mop does
  (success per layout, path ratio, LPC, usage) and teacher-forced on a held-out set of bot
  episodes (heldout.npz: cross-entropy per episode, accuracy, router weights).
- Instability: both barrier forms of the held-out loss and of success, barrier_line (Entezari et
  al. 2022) and barrier_mean (Frankle et al. 2020), each with a one-sided test of "barrier > 0"
  and a simultaneous t interval (clipped at 0) beside the percentile bootstrap interval over
  held-out episodes / layouts (--bootstrap; withdrawn as the barrier's interval, it under-covers
  near 0: docs/calibration.md), signed interior extremes, and the success drop at the midpoint as a
  paired per-layout statistic with a t-test over layouts; per fork, the mean and t interval across
  pairs; Spearman ρ of routing agreement (and the fork point) with the barriers, the fork as the
  unit (whole forks permuted; the smallest attainable p printed), Holm over the table's family.

Outputs: <results_root>/<task>/seed_<S>/<strategy>/
    config.json                    the experiment (train config, fork points/updates, children)
    heldout.npz                    the held-out labelled episodes (replay_buffer format)
    checkpoints/<task>/trial_0/seed_<S>/              the parent (standard layout)
    checkpoints/<task>/trial_<k+1>/seed_<seed>/       fork k's children (every pair)
    evaluations/fork_<k>[_pair_<q>].csv / .npz        one pair's interpolation rows and units
    interpolation.csv, instability.csv, forks.csv, correlations.csv
    fork_analysis/                 all_interpolations.png, interp_fork_<k>[_pair_<q>].png,
                                   instability_over_time.png, routing_agreement.png
    timing.json                    wall time of each invocation: training, evaluation, figures

    python lmc.py --task_id BabyAI-GoToLocal-v0 --seed 42 --num_updates 400 --pairs 2 \\
        --fork_points "0.1,0.25,0.5,0.75"
    python lmc.py --task_id BabyAI-GoToLocal-v0 --seed 42 --resume        # finish a killed experiment
    python lmc.py analyze --results_dir lmc_results/BabyAI-GoToLocal-v0/seed_42/fresh
    python lmc.py compare --a runs/A/checkpoint_final.pt --b runs/B/checkpoint_final.pt
Every flag of train_mop.py applies (same config schema); lmc.py sets trial, seed folders and
checkpoint_dir itself. Bad input is one `error:` line and exit code 2, with nothing written.
"""

from __future__ import annotations

if __name__ == "__main__":  # flags answered before torch, pandas and minigrid load (bench/startup.py)
    import sys

    from mop.cli_specs import answer_early, lmc_early

    answer_early(lambda: lmc_early(sys.argv[1:], __doc__))

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

import numpy as np
import pandas as pd
import torch

from eval_mop import EvalError, compute_metrics, run_episodes
from mixture_of_experts import build_policy
from mop import lmc_stats
from mop.babyai_env import check_task_id
from mop.checks import command_edges
from mop.cli_specs import (
    check_lmc_own_keys,
    check_lmc_settings,
    lmc_command,
    lmc_parser,
    lmc_train_flags,
)
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
    load_units,
    save_units,
    write_tables,
)
from mop.devices import default_num_workers
from mop.experiment import (
    CONFIG_ALIASES,
    CONFIG_KEYS,
    CheckpointError,
    ConfigError,
    TrainConfig,
    build_arg_parser,  # noqa: F401  (lmc.build_arg_parser(doc, lmc._train_flags): train's parser)
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
from mop.lmc_experiment import (
    CHECKPOINT_DIR,
    CHILDREN,
    EVAL_DIR,
    FIGURE_DIR,
    TIMING_FILE,
    Experiment,
    _points,
    experiment_dir,
    parse_fork_points,  # noqa: F401  (lmc.parse_fork_points: the fork points' rules, with the experiment)
)
from mop.lmc_settings import DEFAULTS, EVALUATION_SETTINGS, EXPERIMENT_SETTINGS, STRATEGIES
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
    own_run,
    run_task_name,
    safe_name,
)
from train_mop import POLICY_TYPE, make_loss

# Run-time settings that --resume may change (they do not change what is computed).
RESUMABLE = {"num_workers", "log_interval", "wandb_project", "device"}


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


def run_key(fork: int, child: str, pair: int = 0) -> str:
    """A child's key in what training reports: '0A' (pair 0), '0A_pair1'."""
    return f"{fork}{child}" + (f"_pair{pair}" if pair else "")


def train_fork(
    exp: Experiment,
    fork: int,
    children: Sequence[str] = CHILDREN,
    progress: bool = True,
    num_workers: int | None = None,
    pair: int = 0,
) -> dict[str, str]:
    """Train one pair of fork `fork`'s children (both, for the shared strategy); {child: what was done}."""
    cfgs = {c: exp.child_config(fork, c, num_workers, pair) for c in CHILDREN}
    if all(run_status(cfgs[c]).state == DONE for c in children):  # (each trainer checks again, locked)
        return {c: "done" for c in children}
    checkpoint, parent_buffer = fork_state(exp, fork)
    seeds = (cfgs["A"].seed, cfgs["B"].seed)
    buffers = dict(zip(CHILDREN, child_buffers(exp.strategy, parent_buffer, seeds, exp.seed)))
    if exp.strategy == "shared":
        done = train_shared_pair(cfgs["A"], cfgs["B"], checkpoint, buffers["A"], progress)
        return {c: done for c in CHILDREN}
    return {c: train_child(cfgs[c], checkpoint, buffers[c], progress) for c in children}


def _train_fork_job(
    directory: str, fork: int, child: str, num_workers: int | None, pair: int = 0
) -> dict[str, str]:
    exp = Experiment.load(directory)
    return train_fork(exp, fork, (child,), progress=False, num_workers=num_workers, pair=pair)


def train_children(exp: Experiment, progress: bool = True, parallel: int = 1) -> dict[str, str]:
    """Every child, one after another, or `parallel` at a time (processes; the env workers split)."""
    jobs = [(k, c, q) for k, q in exp.units() for c in CHILDREN]
    out: dict[str, str] = {}
    if parallel > 1 and exp.strategy != "shared":
        workers = exp.train["num_workers"]
        workers = default_num_workers() if workers is None else workers
        share = workers if workers <= 1 else max(1, workers // parallel)
        with ProcessPoolExecutor(parallel, mp_context=get_context("spawn")) as pool:
            futures = {
                (k, c, q): pool.submit(_train_fork_job, str(exp.directory), k, c, share, q)
                for k, c, q in jobs
            }
            for (k, c, q), future in futures.items():
                out[run_key(k, c, q)] = future.result()[c]
        return out
    for k, q in exp.units():
        for c, done in train_fork(exp, k, progress=progress, pair=q).items():
            out[run_key(k, c, q)] = done
    return out


# ----------------------------------------------------------------------------- evaluation


def play(
    policy: torch.nn.Module, encoder: torch.nn.Module, config: dict, ev: Evaluator
) -> tuple[dict, np.ndarray]:
    """One policy's episode metrics on the evaluator's envs and layouts, as eval_mop.evaluate's,
    and its success per layout in layout order (the connectivity.Evaluator's `play`)."""
    where = dict(num_envs=ev.num_envs, max_steps=ev.max_steps, bot_paths=ev.bot_paths, envs=ev.envs)
    _, episodes = run_episodes(policy, encoder, config, ev.task_id, ev.episodes, record=False, **where)
    metrics = compute_metrics(episodes, [list(s) for s in getattr(policy, "expert_sizes", ())])
    return metrics, episodes.sort_values("episode")["success"].to_numpy(bool)


def evaluate_fork(exp: Experiment, fork: int, evaluator: Evaluator, pair: int = 0) -> pd.DataFrame:
    """Interpolate one pair of fork `fork`'s final children; writes its evaluations/ .npz (units),
    then its .csv (rows: its presence marks the evaluation done)."""
    paths = [exp.child_folder(fork, c, pair) / checkpoint_name(None) for c in CHILDREN]
    ckpts = [load_checkpoint(p) for p in paths]
    check_pair(*ckpts)
    point, update = exp.fork_points[fork], exp.fork_updates[fork]
    table, units = interpolation_table(
        *ckpts, exp.alpha_values, evaluator, str(paths[0]), fork, point, update, pair
    )
    out = exp.evaluation_file(fork, pair)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_units(out.with_suffix(".npz"), units)
    atomic_write(out, lambda tmp: table.to_csv(tmp, index=False))
    return table


# ----------------------------------------------------------------------------- analysis


def missing_children(exp: Experiment) -> list[str]:
    """'fork k (p, update u) [pair q] child A: <folder>' for every child without its final checkpoint."""
    out = []
    if run_status(exp.parent_config()).state != DONE:
        out.append(f"the parent ({exp.parent_folder()})")
    for k, q in exp.units():
        for c in CHILDREN:
            if run_status(exp.child_config(k, c, pair=q)).state != DONE:
                out.append(f"{exp.label(k, q)} child {c} ({exp.child_folder(k, c, q)})")
    return out


def fork_complete(exp: Experiment, fork: int, pair: int = 0) -> bool:
    return all(run_status(exp.child_config(fork, c, pair=pair)).state == DONE for c in CHILDREN)


def evaluate_missing(
    exp: Experiment,
    units: Sequence[tuple[int, int]] | None = None,
    evaluator: Evaluator | None = None,
) -> tuple[list[int], float]:
    """Evaluate every complete fork pair (of `units`, default all) without its evaluation file;
    (the forks of the pairs evaluated, seconds)."""
    todo = [
        (k, q)
        for k, q in (exp.units() if units is None else units)
        if not evaluated(exp, k, q) and fork_complete(exp, k, q)
    ]
    if not todo:
        return [], 0.0
    if evaluator is None:
        evaluator = exp.evaluator(play)
    started = time.perf_counter()
    for k, q in todo:
        evaluate_fork(exp, k, evaluator, q)
        print(f"evaluated {exp.label(k, q)}: {exp.alphas} α", flush=True)
    return sorted({k for k, _ in todo}), time.perf_counter() - started


def write_tables_and_figures(
    directory: Path,
    interp: pd.DataFrame,
    names: dict[int, str] | None,
    expert_sizes: list | None,
    units: dict[tuple[int, int], dict | None] | None = None,
    bootstrap: int = DEFAULTS.bootstrap,
) -> dict:
    """interpolation.csv, instability.csv, forks.csv, correlations.csv and fork_analysis/*.png of
    the given rows (intervals from `units`, where given)."""
    from mop import lmc_plots
    from plotting_utils import save_figures

    results = write_tables(directory, interp, units, bootstrap)
    figures = lmc_plots.lmc_figures(
        results.interpolation, results.instability, names, expert_sizes, results.forks, results.correlations
    )
    paths = save_figures(figures, directory / FIGURE_DIR)
    return {
        "interpolation": str(directory / INTERPOLATION_FILE),
        "instability": str(directory / INSTABILITY_FILE),
        "figures": [str(p) for p in paths],
        "table": results.instability,
        "forks": results.forks,
        "correlations": results.correlations,
    }


def evaluated(exp: Experiment, fork: int, pair: int = 0) -> bool:
    """The pair's evaluation is on disk with its units (one without them, from before they were
    kept, is evaluated again: the intervals need them)."""
    path = exp.evaluation_file(fork, pair)
    return path.is_file() and path.with_suffix(".npz").is_file()


def check_bootstrap(count: int) -> int:
    try:
        return lmc_stats.check_bootstrap(count)
    except ValueError as e:
        raise LMCError(str(e)) from None


def analyze(
    directory: str | os.PathLike, evaluator: Evaluator | None = None, bootstrap: int = DEFAULTS.bootstrap
) -> dict:
    """Evaluate every complete fork pair not yet evaluated, then write the tables and figures of
    every evaluated pair. 'missing' names each child (and the parent) that is not finished."""
    check_bootstrap(bootstrap)
    exp = Experiment.load(directory)
    started = time.perf_counter()
    missing = missing_children(exp)
    forks, eval_s = evaluate_missing(exp, evaluator=evaluator)
    done = [(k, q) for k, q in exp.units() if evaluated(exp, k, q) and fork_complete(exp, k, q)]
    summary: dict[str, Any] = {
        "results_dir": str(exp.directory),
        "evaluated": forks,
        "missing": missing,
        "analysed": sorted({k for k, _ in done}),
        "eval_s": eval_s,
    }
    if not done:
        return summary
    interp = pd.concat([pd.read_csv(exp.evaluation_file(k, q)) for k, q in done], ignore_index=True)
    units = {(k, q): load_units(exp.evaluation_file(k, q).with_suffix(".npz")) for k, q in done}
    names = {k: name for name, k in fork_names(interp).items()}
    figures_started = time.perf_counter()
    sizes = exp.train["expert_hidden_sizes"]
    summary.update(write_tables_and_figures(exp.directory, interp, names, sizes, units, bootstrap))
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
    """The children's training units after the parent: one per child, or one per pair for the
    shared strategy (a pair runs in lockstep in one process). Modal runs each in a container."""
    per_fork = [list(CHILDREN)] if exp.strategy == "shared" else [[c] for c in CHILDREN]
    # pair 0's jobs carry no "pair" key, as before child pairs
    return [{"fork": k, "children": c} | ({"pair": q} if q else {}) for k, q in exp.units() for c in per_fork]


def drop_stale_evaluations(exp: Experiment, trained: dict[str, str]) -> None:
    """A fork pair whose children were (re)trained now ({run_key: "trained"|"resumed"|...}) is
    evaluated anew: its evaluation files go."""
    for k, q in exp.units():
        if any(trained.get(run_key(k, c, q), "done") != "done" for c in CHILDREN):
            exp.evaluation_file(k, q).unlink(missing_ok=True)
            exp.evaluation_file(k, q).with_suffix(".npz").unlink(missing_ok=True)


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
    bootstrap: int = DEFAULTS.bootstrap,
) -> dict:
    """Train the parent and every child, evaluate every fork pair, write tables and figures;
    resumable (every finished run, child and pair evaluation is kept)."""
    check_bootstrap(bootstrap)
    # One process per experiment folder: a second start of the same command is refused here, in one
    # line, before it writes config.json or plays the held-out set (the parent's own lock comes later).
    with own_run(exp.directory):
        exp = open_experiment(exp, resume, given)
        started = time.perf_counter()
        prepare(exp)
        trained = {"parent": train_parent(exp, progress)}
        trained.update(train_children(exp, progress, parallel_children))
        drop_stale_evaluations(exp, trained)
        train_s = time.perf_counter() - started
        summary = analyze(exp.directory, bootstrap=bootstrap)
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
    bootstrap: int = DEFAULTS.bootstrap,
) -> dict:
    """Interpolate any two checkpoints of one architecture and level (e.g. two seeds of a trial,
    or runs trained on Modal): the tables, the units (evaluations/fork_0.npz) and the figures in `out`."""
    check_evaluation(alphas, eval_episodes, eval_envs, heldout_episodes, "the two checkpoints")
    check_bootstrap(bootstrap)
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
    interp, units = interpolation_table(*ckpts, alpha_values(alphas), evaluator, path_a)  # fork 0, point NaN
    (directory / EVAL_DIR).mkdir(exist_ok=True)
    save_units(directory / EVAL_DIR / "fork_0.npz", units)
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
    summary = write_tables_and_figures(
        directory, interp, names, config.get("expert_hidden_sizes"), {(0, 0): units}, bootstrap
    )
    summary.update(results_dir=str(directory), eval_s=evaluator.seconds)
    return summary


# ----------------------------------------------------------------------------- command line


_train_flags = lmc_train_flags  # lmc.py's own flags beside train_mop.py's (mop.cli_specs)


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
    try:
        check_lmc_own_keys(overrides)
    except ConfigError as e:
        raise LMCError(str(e)) from None
    unknown = set(settings or {}) - set(EXPERIMENT_SETTINGS)
    if unknown:
        raise LMCError(f"unknown LMC setting {sorted(unknown)[0]!r}")
    given = dataclasses.replace(DEFAULTS, **(settings or {}))
    cfg = load_config(config_path, overrides)
    if cfg.stop_unless:  # its children must reach the end the interpolation compares
        raise LMCError("stop_unless stops a single run at its gate; lmc.py trains its runs to num_updates")
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
    exp = Experiment(directory, train, tuple(points), strategy, **evaluation, pairs=given.pairs)
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
    args = lmc_parser("analyze").parse_args(argv)
    summary = analyze(args.results_dir, bootstrap=args.bootstrap)
    if "table" in summary:
        print(*findings(summary["table"], summary["forks"], summary["correlations"]), sep="\n")
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
    args = lmc_parser("compare").parse_args(argv)
    evaluation = {k: getattr(args, k) for k in EVALUATION_SETTINGS}
    summary = compare(
        args.a, args.b, args.out, results_root=args.results_root, bootstrap=args.bootstrap, **evaluation
    )
    print(*findings(summary["table"], summary["forks"], summary["correlations"]), sep="\n")
    print(f"wrote {summary['results_dir']}")
    return summary


def _train_main(argv: list[str]) -> dict:
    args = lmc_parser("train", __doc__).parse_args(argv)
    exp, given = experiment_from_args(args)
    check_lmc_settings(args)
    learner_device(exp.parent_config())  # a GPU this machine lacks: one line before config.json
    torch.set_num_threads(1)
    summary = run_experiment(
        exp,
        args.resume,
        not args.no_progress,
        args.parallel_children,
        given,
        shlex.join(["python", "lmc.py", *argv]),
        args.bootstrap,
    )
    if "table" in summary:
        print(*findings(summary["table"], summary["forks"], summary["correlations"]), sep="\n")
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
    command, argv = lmc_command(sys.argv[1:] if argv is None else argv)
    try:
        return COMMANDS[command](argv)
    except (ConfigError, RunLockedError, OutputError, EvalError, RunPathError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted; finish with --resume", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    with command_edges("interrupted: run the same lmc.py command again to continue"):
        main()
