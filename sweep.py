"""An lpc_alpha × seed grid on one level: train every run, evaluate every checkpoint, build the stats.

Trial numbers hold the α values in the order given, from --first_trial (α index i -> trial
first_trial + i); the one record of which trial holds which α is the manifest
sweeps/<name>.json (trial -> α, the seeds, the settings, the command), written before anything
trains and refused if an earlier manifest of that name maps a trial to another α. Evaluation rows
carry each checkpoint's own lpc_alpha, which stats.py uses. Resumable: a run that reached
num_updates is skipped, one with checkpoints resumes from its latest (train_mop's resume), so
re-running the same command after a kill continues. Every config key is a flag, as for
train_mop.py (--config FILE for a YAML of defaults); the sweep sets task_id, trial, seed, lpc_alpha.

    python sweep.py --task_id BabyAI-UnlockPickup-v0 --lpc_alpha "0,1e-6,1e-5,1e-4,1e-3" --seeds 0-4 \\
        --num_updates 5000
    python sweep.py --config configs/tiny.yaml --task_id BabyAI-GoToLocal-v0 --lpc_alpha "0,1e-4,1e-3" \\
        --seeds 0-2 --parallel 3 --num_episodes 100
On Modal, the same grid: modal run modal_app.py::sweep --task-id ... --lpc-alpha ... --seeds 0-4.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from mop import experiment
from mop.runs import atomic_write_text, resume_candidates, safe_name

SWEEP_KEYS = ("task_id", "trial", "seed", "lpc_alpha")  # the sweep's, not settable as flags


class SweepError(ValueError):
    pass


def parse_alphas(text: str) -> list[float]:
    """'0,1e-6,1e-5' -> [0.0, 1e-06, 1e-05]: distinct, non-negative."""
    try:
        values = [float(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise SweepError(f"--lpc_alpha must be comma-separated numbers, got {text!r}") from None
    if not values:
        raise SweepError("--lpc_alpha is empty")
    if len(set(values)) != len(values):
        raise SweepError(f"--lpc_alpha repeats a value: {text!r}")
    if any(v < 0 or v != v for v in values):
        raise SweepError(f"--lpc_alpha values must be >= 0, got {text!r}")
    return values


def parse_seeds(text: str) -> list[int]:
    """'0-4' -> [0, 1, 2, 3, 4]; '0,2,5' -> [0, 2, 5]; ranges and lists may mix."""
    seeds: list[int] = []
    try:
        for part in (p.strip() for p in str(text).split(",") if p.strip()):
            lo, _, hi = part.partition("-")
            seeds += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
    except ValueError:
        raise SweepError(f"--seeds takes '0-4' or '0,1,2', got {text!r}") from None
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise SweepError(f"--seeds must list distinct seeds >= 0, got {text!r}")
    return seeds


def plan(
    task_id: str, alphas: list[float], seeds: list[int], first_trial: int, overrides: dict, config_path
) -> list[dict]:
    """One validated override dict per (α, seed), in α-major order (ConfigError before anything runs)."""
    clash = [k for k in SWEEP_KEYS if k in overrides]
    if clash:
        raise SweepError(f"{', '.join(clash)} is set by the sweep (--task_id, --lpc_alpha, --seeds)")
    runs = []
    for i, alpha in enumerate(alphas):
        for seed in seeds:
            run = {
                **overrides,
                "task_id": task_id,
                "trial": first_trial + i,
                "seed": seed,
                "lpc_alpha": alpha,
            }
            cfg = experiment.load_config(config_path, run)
            runs.append({k: getattr(cfg, k) for k in run})
    return runs


def manifest(name: str, runs: list[dict], command: list[str], sweeps_dir: str | Path = "sweeps") -> Path:
    """Write sweeps/<name>.json: trial -> α, seeds, settings, command; refuse a conflicting one."""
    path = Path(sweeps_dir) / f"{safe_name(name, '--name')}.json"
    trials = {str(r["trial"]): r["lpc_alpha"] for r in runs}
    doc = {
        "name": name,
        "task_id": runs[0]["task_id"],
        "trials": trials,
        "seeds": sorted({r["seed"] for r in runs}),
        "settings": {k: v for k, v in runs[0].items() if k not in SWEEP_KEYS},
        "command": shlex.join(command),
    }
    if path.is_file():
        old = json.loads(path.read_text())
        for trial, alpha in old.get("trials", {}).items():
            if trial in trials and trials[trial] != alpha or old.get("task_id") != doc["task_id"]:
                raise SweepError(
                    f"{path} maps trial {trial} of {old.get('task_id')} to lpc_alpha {alpha}; this sweep "
                    f"would give it {trials.get(trial)}: choose --first_trial or --name"
                )
        doc["trials"] = {**old.get("trials", {}), **trials}
        doc["seeds"] = sorted(set(old.get("seeds", [])) | set(doc["seeds"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(doc, indent=1) + "\n")
    return path


def train_one(overrides: dict, config_path) -> dict:
    """Train one run: skip it if it reached num_updates, resume it if it has checkpoints."""
    import train_mop

    cfg = experiment.load_config(config_path, overrides)
    label = f"trial {cfg.trial} seed {cfg.seed} (lpc_alpha {cfg.lpc_alpha:g})"
    resume = bool(resume_candidates(experiment.run_dir(cfg)))
    if resume:
        cfg = experiment.resume_config(config_path, overrides)
        done = experiment.newest_checkpoint(experiment.run_dir(cfg), report=False)[1]["update"]
        if done >= cfg.num_updates:
            return {"label": label, "skipped": f"already at update {done}"}
    summary = train_mop.main(cfg, resume=resume, progress=False)
    return {"label": label, "run_dir": summary["run_dir"], "resumed": resume}


def _extra(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seeds", required=True, help="seeds, '0-4' or '0,1,2'")
    parser.add_argument("--first_trial", type=int, default=0, help="trial of the first α (default 0)")
    parser.add_argument("--name", default=None, help="manifest name (default <task>_trial<first>-<last>)")
    parser.add_argument("--sweeps_dir", default="sweeps", help="where manifests go (default sweeps)")
    parser.add_argument("--parallel", type=int, default=1, help="runs trained at once (default 1)")
    parser.add_argument("--num_episodes", type=int, default=1000, help="evaluation episodes (default 1000)")
    parser.add_argument("--results_path", default="evaluation_results.csv")
    parser.add_argument("--cache_dir", default="evaluation_cache")
    parser.add_argument("--stats_dir", default=None, help="stats output (default stats/<task_id>)")
    parser.add_argument("--skip_eval", action="store_true", help="train only")


def main(argv: list[str] | None = None) -> dict:
    parser = experiment.build_arg_parser(__doc__, _extra)
    args = parser.parse_args(argv)
    try:
        return run(args, list(sys.argv[1:] if argv is None else argv))
    except (SweepError, experiment.ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def run(args: argparse.Namespace, argv: list[str]) -> dict:
    given = {
        k: v for k, v in vars(args).items() if k in experiment.CONFIG_KEYS or k in experiment.CONFIG_ALIASES
    }
    given = experiment.resolve_aliases(given, "the command line")
    if args.resume:
        raise SweepError("--resume is implied: a sweep resumes every unfinished run")
    if "task_id" not in given or "lpc_alpha" not in given:
        raise SweepError("--task_id and --lpc_alpha are required")
    if args.parallel < 1:
        raise SweepError(f"--parallel must be at least 1, got {args.parallel}")
    alphas, seeds = parse_alphas(given.pop("lpc_alpha")), parse_seeds(args.seeds)
    task_id = given.pop("task_id")
    config_path = args.config or ("config.yaml" if Path("config.yaml").exists() else None)
    runs = plan(task_id, alphas, seeds, args.first_trial, given, config_path)
    last = args.first_trial + len(alphas) - 1
    name = args.name or f"{task_id}_trial{args.first_trial}-{last}"
    path = manifest(name, runs, ["python", "sweep.py", *argv], args.sweeps_dir)
    print(
        f"{len(runs)} runs ({len(alphas)} α × {len(seeds)} seeds), trials {args.first_trial}-{last}; manifest {path}"
    )
    if args.parallel > 1 and len(runs) > 1:
        # spawn: each run in a fresh interpreter; pool processes are not daemons, so a run's own
        # env workers (num_workers > 0) can start
        with ProcessPoolExecutor(min(args.parallel, len(runs)), mp_context=get_context("spawn")) as pool:
            results = list(pool.map(train_one, runs, [config_path] * len(runs)))
    else:
        results = [train_one(r, config_path) for r in runs]
    for r in results:
        print(f"{r['label']}: {r.get('skipped') or ('resumed, done' if r['resumed'] else 'done')}")
    summary = {"manifest": str(path), "runs": results}
    if args.skip_eval:
        return summary
    import batch_eval
    import stats

    checkpoint_dir = experiment.load_config(config_path, runs[0]).checkpoint_dir
    batch_eval.main(
        ["--checkpoint_dir", checkpoint_dir, "--task_id", task_id, "--num_episodes", str(args.num_episodes)]
        + ["--results_path", args.results_path, "--cache_dir", args.cache_dir]
    )
    out = args.stats_dir or str(Path("stats") / task_id)
    summary["stats"] = stats.main(
        [
            "--task_id",
            task_id,
            "--cache_dir",
            args.cache_dir,
            "--results_path",
            args.results_path,
            "--out",
            out,
        ]
    )
    return summary


if __name__ == "__main__":
    main()
