r"""Train and evaluate on Modal: the same train_mop/train/batch_eval code as on a workstation, one
container per run, checkpoints and results on two Modal volumes.

Volumes (created on first use):
- `rl-mop`: checkpoints in the local layout, <task_id>/trial_<N>/[seed_<S>/]checkpoint_*.pt and
  metrics.jsonl, so `modal volume get rl-mop / ./modal_checkpoints/` gives the folder batch_eval.py
  scans.
- `rl-mop-eval`: evaluation_results.csv and evaluation_cache/ in the local layout, plus
  pending_rows/ (one JSON row per evaluated checkpoint, waiting to be merged into the CSV).

Every setting goes through the local schema (`experiment.load_config` on config.yaml plus the
overrides), and is checked on this machine before anything starts in the cloud: any config key can be
set with --set "key=value ..." or a --config YAML file. A run resumes from its latest checkpoint on
the volume, and one that already reached num_updates is reported and skipped, so re-running a command
after a preemption, timeout or crash continues where it stopped.

    modal run --detach modal_app.py::main --task-ids "BabyAI-GoToObj-v0,BabyAI-UnlockPickup-v0" --trials "0,1,2"
    modal run --detach modal_app.py::main --task-ids "BabyAI-GoToObj-v0" --trials "0" --script train.py \
        --set "hidden_size=128 lr=1e-3" --config my_defaults.yaml
    modal run --detach modal_app.py::main_seeds --task-ids "BabyAI-UnlockPickup-v0" --trials "20,21" \
        --seeds "0,1,2,3" --checkpoint-interval 250 --lpc-alpha 1e-4 --normalize-lpc --num-updates 5000
    modal run --detach modal_app.py::sweep --task-id BabyAI-UnlockPickup-v0 --lpc-alpha "0,1e-5,1e-4" \
        --seeds 0-4 --num-updates 5000
    modal run --detach modal_app.py::main --task-ids "BabyAI-UnlockPickup-v0" --trials "30" --gpu L4 \
        --set "expert_hidden_sizes=[[32,64,128],[64,128,256]] intermediate_dim=256"
    modal run modal_app.py::eval_parallel --num-episodes 500 --task BabyAI-UnlockPickup-v0
    modal run modal_app.py::eval_parallel --gpu=""     # CPU-only containers
    modal volume get rl-mop-eval /evaluation_results.csv ./evaluation_results.csv
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.util
import inspect
import json
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

if __name__ == "__main__" and importlib.util.find_spec("modal") is None:
    # `python modal_app.py --help` on a machine without Modal: say how to run it, not a traceback.
    print(
        "modal_app.py runs on Modal: pip install modal==1.6.4, `modal token new`, then "
        "`modal run modal_app.py::NAME --help` (NAME: main, main_seeds, sweep, eval_parallel, eval_main, lmc)",
        file=sys.stdout if sys.argv[1:] in ([], ["--help"], ["-h"]) else sys.stderr,
    )
    sys.exit(0 if sys.argv[1:] in ([], ["--help"], ["-h"]) else 2)

import modal

from mop.launch import (  # the launch's checks; OVERRIDE_FLAGS and parse_set re-exported for callers
    CHECKPOINT_VOLUME,
    LAUNCHER_KEYS,
    OVERRIDE_FLAGS,  # noqa: F401
    TRAIN_CPUS,
    LaunchError,
    check_gpu,
    parse_set,  # noqa: F401
    training_device,
    training_jobs,  # noqa: F401  (re-exported: callers use modal_app.training_jobs)
    training_overrides,
    training_plan,
)
from mop.lmc_settings import DEFAULTS as LMC_DEFAULTS
from mop.runs import RESUME_POINT_MINUTES

if TYPE_CHECKING:
    import pandas as pd

    import batch_eval

ROOT = Path(__file__).resolve().parent  # the repo here; /root in the container
CONFIG_PATH = ROOT / "config.yaml"

# ----------------------------------------------------------------------------- app, image, volumes

app = modal.App("rl-mop")

# The project's own modules, added explicitly (not the working directory: no checkpoints, caches or
# notebooks travel with every launch). Mounted at container start, so code edits need no rebuild.
# The list is derived, not written out, so a new module can never be missing from the image: the
# library package (`mop/`, every module the stages import) and every top-level *.py of the repo
# except the marimo notebooks (*_viz.py, never imported by training or evaluation) and this file
# (Modal adds it itself). bench/, tests/ and scripts/ are not packages, so they never travel. Shipping
# a module no run imports costs a few kilobytes; missing one costs a ModuleNotFoundError an hour
# into a launch.
PACKAGE = "mop"
NOTEBOOK_SUFFIX = "_viz"
PROJECT_MODULES = (PACKAGE,) + tuple(
    sorted(
        p.stem
        for p in ROOT.glob("*.py")
        if p.stem.isidentifier()
        and not p.stem.endswith(NOTEBOOK_SUFFIX)
        and p.stem not in ("modal_app", "conftest")
    )
)
# requirements.txt pins torch==2.13.0. Locally that is the CPU build (2.13.0+cpu from the PyTorch
# CPU index); on Modal's Linux pip takes PyPI's 2.13.0 wheel, which bundles CUDA: a bigger image,
# the same version (numbers may still differ from the laptop's in the last bits).
image = (
    modal.Image.debian_slim(python_version="3.11")
    .pip_install_from_requirements(str(ROOT / "requirements.txt"))
    # Container logs are not a terminal: refresh tqdm's bar once a minute; the loop still prints
    # one line per --log-interval updates.
    .env({"TQDM_MININTERVAL": "60"})
    .add_local_python_source(*PROJECT_MODULES)
    .add_local_file(ROOT / "config.yaml", "/root/config.yaml")
)

EVAL_VOLUME = "rl-mop-eval"  # CHECKPOINT_VOLUME, "rl-mop", is mop/launch.py's
checkpoint_volume = modal.Volume.from_name(CHECKPOINT_VOLUME, create_if_missing=True)
eval_volume = modal.Volume.from_name(EVAL_VOLUME, create_if_missing=True)
# The checkpoint volume is mounted at .../modal_checkpoints and evaluation runs from its parent, so a
# checkpoint is named `modal_checkpoints/<task>/trial_<N>/...`, exactly as a local batch_eval.py of
# the downloaded volume names it: rows from Modal and from the workstation share one key.
CHECKPOINT_ROOT = "/vol/modal_checkpoints"
EVAL_ROOT = "/vol/eval"
RESULTS_FILE, CACHE_DIR, PENDING_DIR = "evaluation_results.csv", "evaluation_cache", "pending_rows"
LOCAL_RESULTS = "evaluation_results.csv"  # the workstation's CSV, when eval_parallel plans

# Collection is CPU-bound (every step is a minigrid env step plus a BabyAI bot plan in pure Python)
# and always runs on CPUs, so a training container asks for one core per env worker process
# (num_workers is pinned to it: inside a container os.sched_getaffinity may report the host's
# cores, not the reservation), with or without a GPU. `main --gpu TYPE` adds a GPU and puts the
# learner on it (device cuda); bench/learner_throughput.py says when that pays (big students, big
# unrolls). Evaluation runs one process per checkpoint: eval_parallel gives each a GPU (EVAL_GPU,
# seed 000's "one GPU job per missing checkpoint"; --gpu "" for CPU only), where the batch of envs
# acts in one torch step, and EVAL_CPUS cores for its envs either way.
EVAL_CPUS = 1.0
EVAL_GPU = "T4"
# Each env worker process imports torch (~0.25 GB with the CPU wheel, more with the CUDA one).
TRAIN_MEMORY_MB, EVAL_MEMORY_MB = 4096, 2048
# 23 h per run (Modal's cap is 24 h): the launcher that waits on the runs gets 24 h, so a run hits
# its own limit first. Retries are safe because every attempt resumes from the latest checkpoint on
# the volume, committed every COMMIT_EVERY_S while training runs and at the end: a preemption or
# crash loses only the updates since the last committed checkpoint or resume point. The commits
# follow the trainer's resume points (one every RESUME_POINT_MINUTES, mop/runs.py), so at most two
# intervals are lost (a point written just after a commit), not a commit interval on top of them.
# A run longer than 23 h: re-run the same command; it resumes.
TRAIN_TIMEOUT_S = 23 * 3600
LAUNCH_TIMEOUT_S = 24 * 3600
EVAL_TIMEOUT_S = 3 * 3600
COMMIT_EVERY_S = RESUME_POINT_MINUTES * 60
TRAIN_RETRIES = modal.Retries(max_retries=3, initial_delay=30.0, backoff_coefficient=2.0)
EVAL_RETRIES = modal.Retries(max_retries=2, initial_delay=10.0)

# ----------------------------------------------------------------------------- bodies (plain Python)


@contextlib.contextmanager
def _committing(commit: Callable[[], None] | None, every_s: float = COMMIT_EVERY_S) -> Iterator[None]:
    """Run commit() every every_s seconds from a daemon thread while the block runs, and once at the
    end (also after a failure: the checkpoints written so far are kept). The block stays on the main
    thread, where the bot's SIGALRM timeout works."""
    if commit is None:
        yield
        return
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every_s):
            try:
                commit()
            except Exception as e:  # e.g. a file open at that instant; the next commit picks it up
                print(f"volume commit failed, retrying in {every_s:.0f}s: {e}", file=sys.stderr, flush=True)

    thread = threading.Thread(target=loop, name="volume-commit", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        commit()


def _train_body(
    overrides: dict,
    checkpoint_root: str,
    script: str = "train_mop.py",
    commit: Callable[[], None] | None = None,
    commit_every_s: float = COMMIT_EVERY_S,
) -> dict:
    """Train one (task, trial, seed) into checkpoint_root: resume from its latest checkpoint, skip it
    if it already reached num_updates (imitation.run_status decides both; the trainer's
    run_imitation holds the run folder while it trains). Returns the trainer's summary, or
    {"skipped"} / {"error"}."""
    from mop import experiment, gate, imitation

    trainer = importlib.import_module(script.removesuffix(".py"))  # train_mop or train: same main()
    overrides = {**overrides, "checkpoint_dir": checkpoint_root}
    try:
        cfg = experiment.load_config(CONFIG_PATH, overrides)
        status = imitation.run_status(cfg)
        if status.state != imitation.NEW:  # the run's own config; only RESUMABLE_OVERRIDES may differ
            cfg = experiment.resume_config(CONFIG_PATH, overrides)
            status = imitation.run_status(cfg)  # against the num_updates it is given now
            # (a numbered checkpoint at num_updates without checkpoint_final.pt: the loop finishes it)
            if status.state == imitation.DONE:
                return {
                    "run_dir": str(experiment.run_dir(cfg)),
                    "skipped": f"already at update {status.update}",
                }
            stopped = gate.stopped(cfg.stop_unless, experiment.run_dir(cfg))
            if stopped is not None:  # its gate failed: final (mop/gate.py)
                return {"run_dir": str(experiment.run_dir(cfg)), "skipped": gate.describe(stopped)}
        with _committing(commit, commit_every_s):
            summary = trainer.main(cfg, resume=status.state != imitation.NEW)
    except experiment.ConfigError as e:  # a settings problem: returned, since a retry cannot fix it
        return {"error": str(e)}
    return {**summary, "resumed_from": None if status.path is None else str(status.path)}


def _fan_out(spawn: Callable[..., Any], jobs: list[dict]) -> list[dict]:
    """Start every job, then wait for each; a failed job becomes {"label", "error"}."""
    calls = [(job, spawn(job["overrides"], job["script"])) for job in jobs]
    results = []
    for job, call in calls:
        try:
            results.append({"label": job["label"], **call.get()})
        except Exception as e:
            results.append({"label": job["label"], "error": f"{type(e).__name__}: {e}"})
        print(
            f"{job['label']}: {results[-1].get('error') or results[-1].get('skipped') or 'done'}", flush=True
        )
    return results


def _list_body(checkpoint_root: str, eval_root: str) -> dict:
    """What the volumes hold: the checkpoints (named modal_checkpoints/...), the results CSV's text,
    and the checkpoints whose row waits in pending_rows/."""
    import batch_eval

    root = Path(checkpoint_root)
    with contextlib.chdir(root.parent):
        refs = batch_eval.discover([root.name])
    csv = Path(eval_root) / RESULTS_FILE
    pending = sorted((Path(eval_root) / PENDING_DIR).glob("*.json"))
    return {
        "refs": [dataclasses.asdict(r) for r in refs],
        "results_csv": csv.read_text() if csv.exists() else None,
        "pending": [json.loads(p.read_text())["checkpoint_path"] for p in pending],
    }


def plan_eval(
    refs: list[dict], results: pd.DataFrame, pending: list[str], task: str = "", force: bool = False
) -> list[dict]:
    """The checkpoints to evaluate: those of `task` (all if empty) whose path is neither in the
    results table nor waiting in pending_rows/ (all of them with force). Same rule as batch_eval."""
    import batch_eval

    selected = batch_eval.select(
        [batch_eval.CheckpointRef(**r) for r in refs], task or None, None, None, None, False
    )
    todo = batch_eval.plan(selected, results, None, "none", force)
    waiting = set() if force else set(pending)
    return [dataclasses.asdict(r) for r in todo if r.path not in waiting]


def _row_file(eval_root: str, checkpoint_path: str) -> Path:
    from mop import runs

    name = runs.safe_name(checkpoint_path.replace("/", "__") + ".json", "checkpoint path")
    return runs.inside(Path(eval_root) / PENDING_DIR, Path(eval_root) / PENDING_DIR / name)


def _eval_body(ref: dict, options: batch_eval.BatchOptions, checkpoint_root: str, eval_root: str) -> dict:
    """Evaluate one checkpoint of the volume with batch_eval.evaluate_one: its routing cache goes to
    <eval_root>/evaluation_cache/, its row to its own file in pending_rows/, so parallel jobs never
    write the same file (the bot path lengths in evaluation_cache/_bot_paths/ aside: if two jobs
    commit that file, the last wins and the other's layouts are recomputed another time). Returns
    the row or {"error"}."""
    import batch_eval

    root, out = Path(checkpoint_root), Path(eval_root)
    if not ref["path"].startswith(root.name + "/"):
        raise ValueError(f"{ref['path']!r} is not under {root.name}/")
    with tempfile.TemporaryDirectory() as scratch, contextlib.chdir(root.parent):
        # evaluate_one also merges its row into options.results_path: a throwaway file here.
        opts = dataclasses.replace(
            options, cache_dir=str(out / CACHE_DIR), results_path=str(Path(scratch) / RESULTS_FILE)
        )
        row = batch_eval.evaluate_one(batch_eval.CheckpointRef(**ref), opts)
    if "error" in row:
        return row
    if row.get("cache_path"):  # as a local batch_eval writes it: evaluation_cache/<task>/...
        row["cache_path"] = Path(row["cache_path"]).relative_to(out).as_posix()
    from mop import runs

    runs.atomic_write_text(_row_file(eval_root, row["checkpoint_path"]), json.dumps(row, default=_plain))
    return row


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _reduce_body(eval_root: str) -> dict:
    """Merge every pending row into evaluation_results.csv with mop.results.merge_results (a row
    replaces the one with the same key), then delete the merged row files."""
    from mop.results import merge_results

    files = sorted((Path(eval_root) / PENDING_DIR).glob("*.json"))
    rows = [json.loads(p.read_text()) for p in files]
    table = merge_results(Path(eval_root) / RESULTS_FILE, rows)
    for p in files:
        p.unlink()
    return {"merged": len(rows), "rows": len(table)}


def _eval_all_body(
    refs: list[dict],
    options: batch_eval.BatchOptions,
    checkpoint_root: str,
    eval_root: str,
    commit: Callable[[], None] | None,
) -> dict:
    """eval_main in one container: evaluate each checkpoint in turn, then merge."""
    with _committing(commit):
        results = [_eval_body(ref, options, checkpoint_root, eval_root) for ref in refs]
        merged = _reduce_body(eval_root)
    return {"results": results, **merged}


# ----------------------------------------------------------------------------- Modal functions


@app.function(
    image=image,
    cpu=TRAIN_CPUS,
    memory=TRAIN_MEMORY_MB,
    timeout=TRAIN_TIMEOUT_S,
    retries=TRAIN_RETRIES,
    volumes={CHECKPOINT_ROOT: checkpoint_volume},
)
def train_run(overrides: dict, script: str = "train_mop.py") -> dict:
    """One training run (task, trial, seed) in its own container."""
    return _train_body(overrides, CHECKPOINT_ROOT, script, commit=checkpoint_volume.commit)


@app.function(image=image, timeout=LAUNCH_TIMEOUT_S)
def train_all(jobs: list[dict], cpu: float = TRAIN_CPUS, gpu: str = "") -> list[dict]:
    """Start one train_run per job and wait for all. The fan-out runs in the cloud, not in the
    launching terminal, because a detached local entrypoint keeps only the last Function call it
    made alive once the terminal goes away (Modal's warning): that call is this one."""
    options = {"cpu": cpu} | ({"gpu": gpu} if gpu else {})
    run = train_run.with_options(**options) if cpu != TRAIN_CPUS or gpu else train_run
    return _fan_out(run.spawn, jobs)


@app.function(image=image, timeout=600, volumes={CHECKPOINT_ROOT: checkpoint_volume, EVAL_ROOT: eval_volume})
def list_checkpoints() -> dict:
    """The checkpoints on rl-mop and the results on rl-mop-eval (nothing is downloaded)."""
    return _list_body(CHECKPOINT_ROOT, EVAL_ROOT)


@app.function(
    image=image,
    cpu=EVAL_CPUS,
    memory=EVAL_MEMORY_MB,
    timeout=EVAL_TIMEOUT_S,
    retries=EVAL_RETRIES,
    volumes={CHECKPOINT_ROOT: checkpoint_volume, EVAL_ROOT: eval_volume},
)
def eval_checkpoint(ref: dict, options: batch_eval.BatchOptions) -> dict:
    """Evaluate one checkpoint; its cache and row file land on rl-mop-eval."""
    row = _eval_body(ref, options, CHECKPOINT_ROOT, EVAL_ROOT)
    eval_volume.commit()
    return row


@app.function(image=image, timeout=1800, volumes={EVAL_ROOT: eval_volume})
def reduce_rows() -> dict:
    """The one writer of evaluation_results.csv: merge the rows the jobs committed."""
    eval_volume.reload()  # see the row files other containers committed after this one started
    summary = _reduce_body(EVAL_ROOT)
    eval_volume.commit()
    return summary


@app.function(
    image=image,
    cpu=EVAL_CPUS,
    memory=EVAL_MEMORY_MB,
    timeout=LAUNCH_TIMEOUT_S,
    volumes={CHECKPOINT_ROOT: checkpoint_volume, EVAL_ROOT: eval_volume},
)
def eval_all(refs: list[dict], options: batch_eval.BatchOptions) -> dict:
    """eval_main: every checkpoint in turn in this one container, then the merge. No retries: a
    re-run skips what is merged or pending and merges leftovers."""
    return _eval_all_body(refs, options, CHECKPOINT_ROOT, EVAL_ROOT, commit=eval_volume.commit)


# ----------------------------------------------------------------------------- launching (this machine)

# Every launch is checked here before anything starts in the cloud, by mop/launch.py (the settings
# over config.yaml, one job per run, the GPU and the device), which needs no Modal.


def _refuse(error: Exception) -> NoReturn:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)


def _launch_training(flags: dict) -> None:
    """main's body: validate everything here (one `error:` line and exit 2 on a bad flag, nothing
    started), then hand the jobs to train_all and report each run."""
    from mop import experiment

    try:
        jobs, gpu = training_plan(flags)
    except (LaunchError, experiment.ConfigError) as e:
        _refuse(e)
    cpu = float(max(1, jobs[0]["overrides"]["num_workers"]))  # a core per env worker (0 or 1: in-process)
    shown = ", ".join(f"{k}={v}" for k, v in jobs[0]["overrides"].items() if k not in LAUNCHER_KEYS)
    where = f"{cpu:g} cores for the env workers" + (f", the learner on a {gpu} GPU" if gpu else "")
    print(f"launching {len(jobs)} run(s) on Modal ({where}), checkpoints to volume {CHECKPOINT_VOLUME}")
    print(f"settings over config.yaml: {shown}")
    for result in train_all.remote(jobs, cpu, gpu):
        if "error" in result:
            print(f"✗ {result['label']}: {result['error']}")
        elif "skipped" in result:
            print(f"- {result['label']}: skipped, {result['skipped']}")
        else:
            succ = result.get("final", {}).get("train/success_recent", float("nan"))
            print(f"✓ {result['label']}: {result['run_dir']} (recent success {succ:.3f})")
    print(f"download: modal volume get {CHECKPOINT_VOLUME} / ./modal_checkpoints/")


@app.local_entrypoint()
def main(
    task_ids: str,
    trials: str,
    seeds: str = "",
    script: str = "train_mop.py",
    set: str = "",
    config: str = "",
    num_updates: int | None = None,
    checkpoint_interval: int | None = None,
    lpc_alpha: float | None = None,
    normalize_lpc: bool | None = None,
    gpu: str = "",
    extra_args: str = "",
) -> None:
    """Train every task x trial [x seed] (comma-separated lists), one container each. Any config key:
    --set "key=value ..." (YAML values) over --config FILE (read here) over config.yaml; the typed
    flags are shorthands for --set, and --extra-args "--lpc_alpha 1e-4 --num_updates 5000" (the
    earlier system's spelling: the training script's flags) works as --set does. With --seeds,
    checkpoints go to trial_<N>/seed_<S>/. --gpu TYPE (T4, A10G, L40S, A100, H100, ...): each
    container gets that GPU and its learner runs there (device cuda); the env workers keep their cores."""
    _launch_training(locals())


def _main_seeds(seeds: str, **flags: Any) -> None:
    """main with --seeds required (the earlier system's entrypoint for seed sweeps)."""
    main(seeds=seeds, **flags)


# main_seeds takes main's flags, copied from main's signature (Modal builds the CLI from
# __signature__ and the annotations) so the two cannot drift; only --seeds becomes required.
_main_seeds.__signature__ = inspect.signature(main.info.raw_f).replace(
    parameters=[
        p.replace(default=inspect.Parameter.empty) if p.name == "seeds" else p
        for p in inspect.signature(main.info.raw_f).parameters.values()
    ]
)
_main_seeds.__annotations__ = dict(main.info.raw_f.__annotations__)
main_seeds = app.local_entrypoint(name="main_seeds")(_main_seeds)


def sweep_plan(
    task_id: str,
    seeds: str,
    lpc_alpha: str = "",
    grid: str = "",
    recipes: str = "",
    first_trial: int = 0,
    set: str = "",
    config: str = "",
    num_updates: int | None = None,
    checkpoint_interval: int | None = None,
    normalize_lpc: bool | None = None,
    name: str = "",
    **_: Any,
) -> tuple[list[dict], list[dict], list[int], dict]:
    """(jobs, runs, seeds, factors) of sweep's flags: the conditions (sweep.py's grid points, then its
    recipes), every run validated (LaunchError, SweepError, ConfigError); writes nothing (the body
    writes the manifest). factors: sweep.factors_of, for the manifest. As sweep.py: the grid is
    counted before it is built (sweep.count_conditions, refused past sweep.MAX_CONDITIONS), and a
    sweep run again under its name keeps each known condition at the trial its manifest gives it
    and puts a new one at a fresh trial (sweep.keep_trials): nothing is trained twice."""
    import re

    import sweep as grid_sweep
    from mop import conditions

    seed_list = grid_sweep.parse_seeds(seeds)
    flags = {"num_updates": num_updates, "checkpoint_interval": checkpoint_interval, "lpc_alpha": None}
    overrides = training_overrides(set, config, flags | {"normalize_lpc": normalize_lpc})
    factors = grid_sweep.parse_grid([grid] if grid.strip() else [])
    if lpc_alpha:
        if "lpc_alpha" in overrides:
            raise LaunchError("lpc_alpha is set by --lpc-alpha (the sweep's list), not by --set or --config")
        factors = {"lpc_alpha": grid_sweep.parse_alphas(lpc_alpha), **factors}
    extra = [grid_sweep.parse_recipe(r) for r in re.split(r"\s+;\s+", recipes.strip()) if r.strip()]
    if not factors and not extra:
        raise LaunchError('give the conditions: --grid "KEY=V1|V2", --recipes "KEY=V ..." or --lpc-alpha')
    if overrides.get("num_workers") is None:
        overrides["num_workers"] = int(TRAIN_CPUS)
    overrides = training_device(overrides, "")  # the sweep's containers have CPUs only
    grid_sweep.count_conditions(factors, extra, grid_sweep.MAX_CONDITIONS)
    points = grid_sweep.expand(factors, extra)
    runs = grid_sweep.plan_runs(task_id, points, seed_list, first_trial, overrides, CONFIG_PATH)
    path = grid_sweep.manifest_path(sweep_name(task_id, first_trial, len(points), name))
    old = conditions.read_manifest(path) if path.is_file() else None
    runs = grid_sweep.keep_trials(
        runs, old, seed_list, points,
        lambda pt, t: grid_sweep.plan_runs(task_id, [pt], seed_list, t, overrides, CONFIG_PATH),
    )  # fmt: skip
    jobs = [
        {
            "label": f"{task_id} trial {r['trial']} seed {r['seed']} ({r['policy']})",
            "overrides": {k: r["overrides"][k] for k in ("task_id", "trial", "seed", *overrides, *r["set"])
                          if k in r["overrides"]},
            "script": f"{grid_sweep.TRAINERS[r['policy']]}.py",
        }
        for r in runs
    ]  # fmt: skip
    return jobs, runs, seed_list, grid_sweep.factors_of(factors, extra)


def sweep_name(task_id: str, first_trial: int, conditions: int, name: str = "") -> str:
    """The manifest name of a sweep: --name, else sweep.py's default for these trials."""
    from mop.runs import run_task_name

    return name or f"{run_task_name(task_id)}_trial{first_trial}-{first_trial + conditions - 1}"


@app.local_entrypoint()
def sweep(
    task_id: str,
    seeds: str,
    lpc_alpha: str = "",
    grid: str = "",
    recipes: str = "",
    first_trial: int = 0,
    name: str = "",
    set: str = "",
    config: str = "",
    num_updates: int | None = None,
    checkpoint_interval: int | None = None,
    normalize_lpc: bool | None = None,
) -> None:
    """sweep.py's grid on Modal: condition i (grid points, then recipes) trains as trial
    first_trial + i, every seed, each run through train_all like main's; the manifest
    sweeps/<name>.json is written here first. --grid "KEY=V1|V2 KEY=V1|V2" (several factors,
    space-separated), --recipes "KEY=V KEY=V ; KEY=V" (recipes separated by ' ; '), --lpc-alpha
    "0,1e-4" (the α shorthand). Then eval_parallel and stats.py --manifest on the downloaded results."""
    import sweep as grid_sweep
    from mop import experiment

    try:
        jobs, runs, seed_list, factors = sweep_plan(
            task_id, seeds, lpc_alpha, grid, recipes, first_trial, set, config,
            num_updates, checkpoint_interval, normalize_lpc, name,
        )  # fmt: skip
        conditions = len(jobs) // len(seed_list)
        path = grid_sweep.manifest(
            sweep_name(task_id, first_trial, conditions, name),
            runs,
            ["modal", "run", *sys.argv[1:]],
            extra={"factors": factors, "checkpoint_dir": "modal_checkpoints"},
        )
    except (
        LaunchError,
        grid_sweep.SweepError,
        experiment.ConfigError,
        ValueError,
    ) as e:  # ConditionError too
        _refuse(e)
    print(f"sweep: {len(jobs)} runs ({conditions} conditions × {len(seed_list)} seeds); manifest {path}")
    cpus = float(max(1, jobs[0]["overrides"].get("num_workers") or TRAIN_CPUS))  # one per env worker
    for result in train_all.remote(jobs, cpus, ""):
        status = result.get("error") or result.get("skipped") or result.get("run_dir")
        print(f"{'✗' if 'error' in result else '✓'} {result['label']}: {status}")
    print(
        f"next: modal run modal_app.py::eval_parallel --task {task_id}; then python stats.py --task_id {task_id} "
        f"--manifest {path} --cache_dir evaluation_cache --contrast <factor>"
    )


def _results_table(local_path: str, remote_csv: str | None) -> tuple[pd.DataFrame, str]:
    """The results to compare with: the local CSV if there is one, else the volume's."""
    from mop.results import read_results

    if Path(local_path).exists():
        return read_results(local_path), local_path
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / RESULTS_FILE
        if remote_csv is not None:
            path.write_text(remote_csv)
        source = f"{EVAL_VOLUME}:/{RESULTS_FILE}" if remote_csv is not None else "no results yet"
        return read_results(path), source


def eval_settings(
    num_episodes: int = 1000,
    num_envs: int = 16,
    task: str = "",
    skip_routing: bool = False,
    gpu: str = "",
    **_: Any,
) -> tuple[Any, str]:
    """(EvalOptions, GPU spec) of eval_parallel's and eval_main's flags, validated (EvalError,
    LaunchError, or ValueError for an unknown --task); reads nothing remote. The evaluation's
    device is 'auto': a container with a GPU acts on it, one without on its CPU."""
    import eval_mop
    from mop.babyai_env import check_task_id

    gpu = check_gpu(gpu)
    evaluation = eval_mop.EvalOptions(
        num_episodes=num_episodes, num_envs=num_envs, record=not skip_routing, device="auto"
    )
    if task:
        check_task_id(task)
    return evaluation, gpu


def _plan_remote(
    num_episodes: int, num_envs: int, force: bool, task: str, skip_routing: bool, gpu: str = ""
) -> tuple:
    """Validate the flags here, list the volumes remotely, and plan: (todo, pending, options, gpu)."""
    import batch_eval

    try:  # ConfigError, ResultsError, EvalError and LaunchError: ValueErrors with one clear line
        evaluation, gpu = eval_settings(num_episodes, num_envs, task, skip_routing, gpu)
        state = list_checkpoints.remote()
        results, source = _results_table(LOCAL_RESULTS, state["results_csv"])
    except ValueError as e:
        _refuse(e)
    todo = plan_eval(state["refs"], results, state["pending"], task, force)
    where = f"a {gpu} GPU" if gpu else "CPU only"
    print(
        f"{len(state['refs'])} checkpoints on {CHECKPOINT_VOLUME}, {len(state['pending'])} rows pending, "
        f"{len(todo)} to evaluate ({num_episodes} episodes each, {where}; compared with {source})"
    )
    return todo, state["pending"], batch_eval.BatchOptions(eval=evaluation), gpu


def with_gpu(function: Any, gpu: str) -> Any:
    """`function` as a container with the GPU `gpu` (checked) gets it, or as decorated for ''.
    The decorators give no GPU: Modal's with_options can add one but not take one away."""
    return function.with_options(gpu=gpu) if gpu else function


def _report(results: list, merged: dict) -> None:
    for r in results:
        if isinstance(r, BaseException):
            print(f"✗ {type(r).__name__}: {r}")
        elif "error" in r:
            print(f"✗ {r['checkpoint_path']}: {r['error']}")
    print(
        f"evaluated {sum(1 for r in results if isinstance(r, dict) and 'error' not in r)} of {len(results)}"
    )
    print(f"merged {merged['merged']} rows; {EVAL_VOLUME}:/{RESULTS_FILE} holds {merged['rows']}")
    print(f"download: modal volume get {EVAL_VOLUME} /{RESULTS_FILE} ./{RESULTS_FILE} --force")
    print(f"          modal volume get {EVAL_VOLUME} /{CACHE_DIR} . --force")


@app.local_entrypoint()
def eval_parallel(
    num_episodes: int = 1000,
    force: bool = False,
    task: str = "",
    num_envs: int = 16,
    skip_routing: bool = False,
    gpu: str = EVAL_GPU,
) -> None:
    """Evaluate every checkpoint on rl-mop that the results lack, one container each with a GPU
    (--gpu TYPE, default T4; --gpu "" for CPU only), then merge."""
    todo, pending, options, gpu = _plan_remote(num_episodes, num_envs, force, task, skip_routing, gpu)
    if not todo and not pending:
        return
    evaluate = with_gpu(eval_checkpoint, gpu)
    results = list(evaluate.map(todo, kwargs={"options": options}, return_exceptions=True))
    _report(results, reduce_rows.remote())


@app.local_entrypoint()
def eval_main(
    num_episodes: int = 1000,
    force: bool = False,
    task: str = "",
    num_envs: int = 16,
    skip_routing: bool = False,
    gpu: str = "",
) -> None:
    """As eval_parallel, but every checkpoint in turn in one container (CPU only unless --gpu TYPE)."""
    todo, pending, options, gpu = _plan_remote(num_episodes, num_envs, force, task, skip_routing, gpu)
    if not todo and not pending:
        return
    summary = with_gpu(eval_all, gpu).remote(todo, options)
    _report(summary["results"], summary)


# ----------------------------------------------------------------------------- linear mode connectivity (lmc.py)

# LMC experiments live on their own volume in lmc.py's local layout, so `modal volume get rl-mop-lmc
# / ./lmc_results/` gives the folders `python lmc.py analyze --results_dir ...` reads. The parent
# trains in one container; then every child (a shared-buffer pair: both, in lockstep) trains in its
# own container, every fork is evaluated in its own container, and the analysis runs last. A re-run
# of the same command continues the experiment (finished runs and evaluations are kept).
LMC_VOLUME = "rl-mop-lmc"
lmc_volume = modal.Volume.from_name(LMC_VOLUME, create_if_missing=True)
LMC_ROOT = "/vol/lmc_results"


def _lmc_prepare_body(spec: dict, root: str) -> str:
    """config.json and the held-out set of the experiment `spec` describes (its folder). On a
    re-run the stored experiment is continued; other settings than it was started with are refused."""
    import lmc

    exp = lmc.build_experiment(spec["overrides"], spec["settings"], root, CONFIG_PATH)
    resume = (exp.directory / lmc.CONFIG_FILE).exists()
    return str(lmc.prepare(lmc.open_experiment(exp, resume, set(spec["given"]))).directory)


def _lmc_train_body(directory: str, job: dict, commit: Callable[[], None] | None = None) -> dict:
    """One training unit: the parent (fork None) or one pair of fork `fork`'s children (job "pair",
    default 0); {run: what was done}."""
    import lmc

    exp = lmc.Experiment.load(directory)
    pair = job.get("pair", 0)
    with _committing(commit):
        if job["fork"] is None:
            return {"parent": lmc.train_parent(exp, progress=False)}
        done = lmc.train_fork(exp, job["fork"], job["children"], progress=False, pair=pair)
    return {lmc.run_key(job["fork"], c, pair): v for c, v in done.items()}


def _lmc_eval_body(directory: str, fork: int, pair: int = 0) -> dict:
    """One fork pair's interpolation evaluation (evaluations/fork_<k>[_pair_<q>].csv/.npz), unless
    it is there."""
    import lmc

    evaluated, seconds = lmc.evaluate_missing(lmc.Experiment.load(directory), [(fork, pair)])
    return {"fork": fork, "pair": pair, "evaluated": bool(evaluated), "eval_s": seconds}


def _lmc_experiment_body(spec: dict, root: str, train: Any, evaluate: Any, volume: Any) -> dict:
    """lmc_experiment: prepare, the parent, the children in parallel containers, the forks'
    evaluations in parallel containers, then the tables and figures. A failed container is
    reported; analysis then names what is missing."""
    import lmc

    directory = _lmc_prepare_body(spec, root)
    volume.commit()
    trained, errors = train.remote(directory, {"fork": None}), []
    exp = lmc.Experiment.load(directory)
    calls = [(job, train.spawn(directory, job)) for job in lmc.training_jobs(exp)]
    for job, call in calls:
        try:
            trained.update(call.get())
        except Exception as e:
            where = f"fork {job['fork']}" + (f" pair {job['pair']}" if job.get("pair") else "")
            errors.append(f"{where} {'+'.join(job['children'])}: {type(e).__name__}: {e}")
    volume.reload()
    lmc.drop_stale_evaluations(exp, trained)
    volume.commit()
    units = exp.units()
    forks, pairs = [k for k, _ in units], [q for _, q in units]
    for result in evaluate.map([directory] * len(units), forks, pairs, return_exceptions=True):
        if isinstance(result, BaseException):
            errors.append(f"evaluation: {type(result).__name__}: {result}")
    volume.reload()
    summary = lmc.analyze(directory)
    volume.commit()
    return {
        "results_dir": directory,
        "trained": trained,
        "errors": errors,
        "missing": summary["missing"],
        "analysed": summary["analysed"],
        "figures": summary.get("figures", []),
    }


@app.function(
    image=image,
    cpu=TRAIN_CPUS,
    memory=TRAIN_MEMORY_MB,
    timeout=TRAIN_TIMEOUT_S,
    retries=TRAIN_RETRIES,
    volumes={LMC_ROOT: lmc_volume},
)
def lmc_train(directory: str, job: dict) -> dict:
    """The parent, or one fork's child (a shared pair: both), in its own container."""
    lmc_volume.reload()  # the parent's fork checkpoints, committed by another container
    return _lmc_train_body(directory, job, commit=lmc_volume.commit)


@app.function(
    image=image,
    cpu=EVAL_CPUS,
    memory=EVAL_MEMORY_MB,
    timeout=EVAL_TIMEOUT_S,
    retries=EVAL_RETRIES,
    volumes={LMC_ROOT: lmc_volume},
)
def lmc_evaluate(directory: str, fork: int, pair: int = 0) -> dict:
    """One fork pair's interpolation evaluation, in its own container."""
    lmc_volume.reload()
    result = _lmc_eval_body(directory, fork, pair)
    lmc_volume.commit()
    return result


@app.function(image=image, memory=EVAL_MEMORY_MB, timeout=LAUNCH_TIMEOUT_S, volumes={LMC_ROOT: lmc_volume})
def lmc_experiment(spec: dict) -> dict:
    """A whole LMC experiment, driven from the cloud (a detached launch keeps it going)."""
    return _lmc_experiment_body(spec, LMC_ROOT, lmc_train, lmc_evaluate, lmc_volume)


def lmc_spec(
    task_id: str,
    seed: int,
    settings: dict,
    set_text: str = "",
    config_file: str = "",
    flags: dict | None = None,
) -> dict:
    """What lmc_experiment receives, checked here with lmc.build_experiment (the same schema and
    LMC rules as `python lmc.py`): LaunchError/ConfigError before anything starts."""
    import lmc

    overrides = training_overrides(set_text, config_file, flags or {})
    for key in ("task_id", "seed"):
        if key in overrides:
            raise LaunchError(f"--set {key}: {key} is set by --{key.replace('_', '-')}")
    overrides.update(task_id=task_id, seed=seed)
    if overrides.get("num_workers") is None:  # a core per env worker, pinned to the reservation
        overrides["num_workers"] = int(TRAIN_CPUS)
    overrides = training_device(overrides, "")  # the LMC containers have CPUs only
    exp = lmc.build_experiment(overrides, settings, LMC_ROOT, CONFIG_PATH)
    given = sorted(set(overrides) | (set(settings) - {"fork_buffer_strategy"}))
    return {"overrides": {k: exp.train[k] for k in overrides}, "settings": settings, "given": given}


def lmc_flags_spec(
    task_id: str,
    seed: int = 0,
    fork_points: str = LMC_DEFAULTS.fork_points,
    fork_buffer_strategy: str | None = LMC_DEFAULTS.fork_buffer_strategy,
    alphas: int = LMC_DEFAULTS.alphas,
    num_updates: int | None = None,
    eval_episodes: int = LMC_DEFAULTS.eval_episodes,
    heldout_episodes: int = LMC_DEFAULTS.heldout_episodes,
    pairs: int = LMC_DEFAULTS.pairs,
    set: str = "",
    config: str = "",
    **_: Any,
) -> dict:
    """lmc_spec of the lmc entrypoint's flags (LaunchError/ConfigError before anything starts)."""
    settings = {
        "fork_points": fork_points,
        "alphas": alphas,
        "eval_episodes": eval_episodes,
        "heldout_episodes": heldout_episodes,
        "pairs": pairs,
    } | ({"fork_buffer_strategy": fork_buffer_strategy} if fork_buffer_strategy else {})
    return lmc_spec(task_id, seed, settings, set, config, {"num_updates": num_updates})


@app.local_entrypoint()
def lmc(
    task_id: str,
    seed: int = 0,
    fork_points: str = LMC_DEFAULTS.fork_points,
    fork_buffer_strategy: str | None = LMC_DEFAULTS.fork_buffer_strategy,
    alphas: int = LMC_DEFAULTS.alphas,
    num_updates: int | None = None,
    eval_episodes: int = LMC_DEFAULTS.eval_episodes,
    heldout_episodes: int = LMC_DEFAULTS.heldout_episodes,
    pairs: int = LMC_DEFAULTS.pairs,
    set: str = "",
    config: str = "",
) -> None:
    """lmc.py's experiment on Modal, the children in parallel containers: results on volume
    rl-mop-lmc as <task>/seed_<S>/<strategy>/. Training keys: --set "key=value ..." over --config
    FILE over config.yaml (e.g. --set "buffer_episodes=2000"). --fork-buffer-strategy: copy | fresh
    | shared | split (default: copy with a buffer, fresh without). Re-run the command to continue."""
    from mop import experiment

    try:
        spec = lmc_flags_spec(**locals())
    except (LaunchError, experiment.ConfigError) as e:
        _refuse(e)
    print(f"launching the LMC experiment {task_id} seed {seed} on Modal ({LMC_VOLUME} volume)")
    result = lmc_experiment.remote(spec)
    for line in result["errors"] + [f"missing: {m}" for m in result["missing"]]:
        print(f"✗ {line}")
    print(f"✓ {result['results_dir']}: analysed forks {result['analysed']}, {len(result['figures'])} figures")
    print(f"download: modal volume get {LMC_VOLUME} / ./lmc_results/")


# ----------------------------------------------------------------------------- python modal_app.py


def entrypoints() -> dict[str, modal.app.LocalEntrypoint]:
    """This app's `modal run` entrypoints by name, in the order they are defined."""
    found = {name: value for name, value in globals().items() if isinstance(value, modal.app.LocalEntrypoint)}
    return dict(sorted(found.items(), key=lambda kv: kv[1].info.raw_f.__code__.co_firstlineno))


def usage() -> str:
    """What `python modal_app.py --help` prints: this docstring and each entrypoint's flags, spelled
    as `modal run modal_app.py::NAME --help` spells them (underscores become dashes)."""
    lines = [__doc__.strip(), "", "Entrypoints (modal run modal_app.py::NAME [flags]):"]
    for name, entry in entrypoints().items():
        raw = entry.info.raw_f
        summary = (inspect.getdoc(raw) or "").split("\n\n")[0].replace("\n", " ")
        lines += ["", f"  {name}: {summary}"]
        for param in inspect.signature(raw).parameters.values():
            flag = "--" + param.name.replace("_", "-")
            default = "required" if param.default is inspect.Parameter.empty else f"default {param.default!r}"
            lines.append(f"      {flag} ({default})")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- checks before Modal connects

# `modal run modal_app.py::main --flags` imports this file, then connects to Modal (no token: it
# stops there), builds the image and only then runs the entrypoint's body. So an entrypoint's flags
# are also checked here, at import, by the functions its body calls (mop/launch.py parses them as
# Modal's CLI does): a bad flag is one `error:` line, exit 2, before any login. Without `modal run
# <this file>::<entrypoint>` in sys.argv (containers, tests, `modal deploy`) this does nothing.
ENTRYPOINT_CHECKS: dict[str, Callable[..., Any]] = {
    "main": lambda **flags: training_plan(flags),
    "main_seeds": lambda **flags: training_plan(flags),
    "sweep": sweep_plan,
    "eval_parallel": eval_settings,
    "eval_main": eval_settings,
    "lmc": lmc_flags_spec,
}


def check_modal_run(argv: list[str]) -> None:
    """At import under `modal run` (see above): the entrypoint's flags through its check; a bad
    one is `error: ...` on stderr and exit 2, before Modal asks for a token."""
    from mop.launch import entrypoint_flags, modal_run_call

    call = modal_run_call(argv, __file__, __name__, set(ENTRYPOINT_CHECKS))
    if call is None or any(a in ("--help", "-h") for a in call[1]):
        return
    name, args = call
    flags = entrypoint_flags(entrypoints()[name].info.raw_f, args)
    if flags is None:
        return
    try:
        ENTRYPOINT_CHECKS[name](**flags)
    except ValueError as e:  # LaunchError, ConfigError, SweepError, EvalError: one line each
        _refuse(e)


check_modal_run(sys.argv)


if __name__ == "__main__":
    # `modal run` imports this file and never runs this block; `python modal_app.py` only explains.
    if sys.argv[1:] in ([], ["--help"], ["-h"]):
        print(usage())
        sys.exit(0)
    print(
        "error: run an entrypoint with `modal run modal_app.py::NAME ...` (python modal_app.py --help)",
        file=sys.stderr,
    )
    sys.exit(2)
