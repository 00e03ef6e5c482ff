"""A grid of recipes × seeds on one level: train every run, evaluate it, compare the conditions.

The grid is over any config keys; each grid point, and each extra whole recipe, is a *condition*
(mop.conditions: a run's resolved recipe minus seed, folders and logging), trained once per seed:

    --grid "KEY=V1|V2|..."   one factor: its values separated by '|', each read as YAML (0, 1e-4,
                             true, null, [[0,16,32],[0,16,32]]); a list followed by *N is that list
                             repeated N times, as in Python: [[0,16,32]]*3 is three layers of
                             [0,16,32]. Repeat --grid for more factors (or give several in one
                             string, separated by spaces: "lpc_alpha=0|1e-3 normalize_lpc=false|true");
                             the conditions are every combination, in the order given. A factor
                             needs two or more distinct values.
    policy=mop|gru           the pseudo-key for the trainer: train_mop.py (MoP, default) or train.py
                             (the GRU baseline)
    --recipe "KEY=V KEY=V"   one extra condition beside the grid (repeatable), e.g. the
                             parameter-matched GRU: --recipe "policy=gru hidden_size=match" (the
                             size whose policy has as many parameters as the MoP policy of the
                             sweep's settings: train.py --match_params; the number is resolved
                             here, printed, and recorded)
    --lpc_alpha "0,1e-4"     today's shorthand for --grid "lpc_alpha=0|1e-4" (one value: a setting)

Condition i (grid points first, then the recipes) trains as trial --first_trial + i, one run per
--seeds seed, at <checkpoint_dir>/<task>/trial_<N>/seed_<S>/. Every other config key is a flag,
as for train_mop.py (--config FILE for a YAML of defaults); the sweep sets task_id, trial, seed.

Before anything trains, every run's config is validated and the manifest sweeps/<name>.json is
written: the conditions (trial, trainer, the grid values, the condition id and label, the resolved
recipe's id), and one entry per run (trial, seed, condition, run folder). A manifest of the same
name is merged with, never overwritten: a trial it maps to another condition is refused (choose
--first_trial or --name); a manifest that is not this project's JSON is refused in one line.
Resumable: a run that reached num_updates is skipped, one with checkpoints resumes from its
latest (its checkpoint's config compared by recipe value: input_dim null and 985 are one onehot
setting), so re-running the same command continues where it stopped and trains nothing twice; run
with more seeds or conditions under its --name it adds only those. Everything (flags, values,
output folders, the device, the resume of each existing run) is checked before the manifest is
written or any run starts: a grid of more than --max_conditions conditions (counted, never built),
a --device this machine lacks, a manifest field of the wrong type, and a trial folder made outside
the sweep (a run trained without --seed directly in trial_<N>/, where seed_<S>/ would nest, or a
trial_<N>/seed_<S>/ the manifest does not name) are refused in one line.

Then the manifest's runs, and only they, are evaluated (batch_eval.py per run, --num_episodes on
the evaluation layouts 0..N-1, so every run meets the same layouts; --knockout SPEC, repeatable, on
the final checkpoints of the MoP runs), and analysed: stats.py --manifest, with one --contrast per
factor (and policy_type when the recipes add another trainer): per-seed paired differences between
conditions that differ in that factor alone, with their 95% CI, p and Holm.

    python sweep.py --task_id BabyAI-GoToLocal-v0 --grid "lpc_alpha=0|1e-3" \\
        --grid "expert_hidden_sizes=[[0,16,32]]*3|[[17,17,17]]*3" \\
        --recipe "policy=gru hidden_size=match" --seeds 0-2 --num_updates 800 --parallel 2
    python sweep.py --task_id BabyAI-UnlockPickup-v0 --lpc_alpha "0,1e-6,1e-5,1e-4,1e-3" --seeds 0-4 \\
        --num_updates 5000
On Modal, the same grid: modal run modal_app.py::sweep --task-id ... --grid "..." --recipes "..." --seeds 0-4.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import re
import shlex
import sys
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import yaml

from mop import conditions, experiment, gate
from mop.checks import command_edges
from mop.runs import (
    OutputError,
    RunLockedError,
    RunPathError,
    atomic_write_text,
    check_writable_dir,
    check_writable_file,
    resume_candidates,
    run_task_name,
    safe_name,
)

SWEEP_KEYS = ("task_id", "trial", "seed")  # the sweep's, not settable as flags or grid keys
POLICY = "policy"  # the trainer pseudo-key of --grid and --recipe
TRAINERS = {"mop": "train_mop", "gru": "train"}
MATCH = "match"  # hidden_size=match: the parameter-matched GRU
MAX_SEEDS = 1000  # a larger sweep would not end on any machine this runs on
MAX_CONDITIONS = 256  # --max_conditions' default: a grid larger than this is refused unbuilt
MANIFEST_VERSION = 2
_REPEAT = re.compile(r"^(?P<list>\[.*\])\s*\*\s*(?P<n>\d+)$", re.S)


class SweepError(ValueError):
    pass


# ----------------------------------------------------------------------------- parsing the grid


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
    """'0-4' -> [0, 1, 2, 3, 4]; '0,2,5' -> [0, 2, 5]; ranges and lists may mix; at most MAX_SEEDS
    seeds, each a valid run seed (checked before any list is built)."""
    seeds: list[int] = []
    limit = experiment.LIMITS["seed"][0]
    try:
        for part in (p.strip() for p in str(text).split(",") if p.strip()):
            lo, _, hi = part.partition("-")
            first, last = int(lo), int(hi) if hi else int(lo)
            if last - first + 1 + len(seeds) > MAX_SEEDS:
                raise SweepError(
                    f"--seeds {text!r} names more than {MAX_SEEDS} seeds; a sweep that size would not end"
                )
            if max(first, last) > limit:
                raise SweepError(f"--seeds must be at most {limit} (numpy's RNG), got {text!r}")
            seeds += list(range(first, last + 1))
    except ValueError as e:
        if isinstance(e, SweepError):
            raise
        raise SweepError(f"--seeds takes '0-4' or '0,1,2', got {text!r}") from None
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise SweepError(f"--seeds must list distinct seeds >= 0, got {text!r}")
    return seeds


def parse_value(text: str, what: str) -> Any:
    """One value of --grid or --recipe: YAML, or a YAML list followed by *N (the list repeated N
    times: [[0,16,32]]*3 is [[0,16,32],[0,16,32],[0,16,32]])."""
    text = text.strip()
    m = _REPEAT.match(text)
    try:
        value = yaml.safe_load(m.group("list") if m else text)
    except yaml.YAMLError:
        raise SweepError(f"{what}: {text!r} is not a YAML value") from None
    if m:
        if not isinstance(value, list) or not 1 <= int(m.group("n")) <= 64:
            raise SweepError(f"{what}: {text!r}: LIST*N repeats a list 1 to 64 times")
        value = value * int(m.group("n"))
    if value is None and text == "":
        raise SweepError(f"{what}: an empty value")
    return value


def _check_key(key: str, what: str) -> str:
    if key in SWEEP_KEYS:
        raise SweepError(f"{what}: {key} is set by the sweep (--task_id, --seeds, --first_trial)")
    if key == POLICY:
        return key
    key = experiment.CONFIG_ALIASES.get(key, key)
    if key not in experiment.CONFIG_KEYS:
        experiment.check_keys({key: None}, what)  # ConfigError: unknown key, with a did-you-mean
    if key in conditions.NOT_RECIPE:
        raise SweepError(
            f"{what}: {key} does not change what a run learns (not part of a condition): pass it as --{key}"
        )
    return key


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """--grid strings -> {key: [values]} in the order given (see the module docstring)."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        try:
            pairs = conditions.split_assignments(item)
        except ValueError as e:
            raise SweepError(f'--grid takes "KEY=V1|V2|...", got {str(e)!r}') from None
        if not pairs:
            raise SweepError("--grid is empty")
        for key, raw in pairs:
            key = _check_key(key, f"--grid {key}")
            if key in grid:
                raise SweepError(f"--grid gives {key} twice")
            values = [parse_value(v, f"--grid {key}") for v in raw.split("|")]
            if len({json.dumps(v, sort_keys=True) for v in values}) != len(values):
                raise SweepError(f"--grid {key} repeats a value: {raw!r}")
            if len(values) < 2:
                raise SweepError(
                    f"--grid {key} has one value ({raw!r}): a factor must vary; give a setting as --{key}"
                )
            if key == POLICY and set(values) - set(TRAINERS):
                raise SweepError(f"--grid policy takes {'|'.join(TRAINERS)}, got {raw!r}")
            grid[key] = values
    return grid


def parse_recipe(text: str) -> dict[str, Any]:
    """--recipe "policy=gru hidden_size=match" -> {"policy": "gru", "hidden_size": "match"}."""
    try:
        pairs = conditions.split_assignments(text)
    except ValueError as e:
        raise SweepError(f'--recipe takes "KEY=V KEY=V", got {str(e)!r}') from None
    if not pairs:
        raise SweepError("--recipe is empty")
    out: dict[str, Any] = {}
    for key, raw in pairs:
        key = _check_key(key, f"--recipe {key}")
        if key in out:
            raise SweepError(f"--recipe gives {key} twice")
        out[key] = parse_value(raw, f"--recipe {key}")
    if out.get(POLICY, "mop") not in TRAINERS:
        raise SweepError(f"--recipe policy takes {' or '.join(TRAINERS)}, got {out[POLICY]!r}")
    return out


def expand(grid: dict[str, list[Any]], recipes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The conditions' settings: every combination of the grid (first factor slowest), then the
    recipes; an empty grid is one condition, the settings alone (so `--recipe "policy=gru
    hidden_size=match"` without a grid trains the MoP recipe and its matched GRU)."""
    points = [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())] if grid else [{}]
    return points + [dict(r) for r in recipes]


# ----------------------------------------------------------------------------- the plan


def _resolve(
    task_id: str, point: dict, seed: int, trial: int, settings: dict, config_path: Any
) -> tuple[str, experiment.TrainConfig, dict | None]:
    """(trainer, validated config, parameter match) of one run of one condition."""
    point = dict(point)
    policy = point.pop(POLICY, "mop")
    match = None
    if point.get("hidden_size") == MATCH:
        if policy != "gru":
            raise SweepError("hidden_size=match sizes a GRU: give it with policy=gru")
        import train

        base = {k: v for k, v in {**settings, **point}.items() if k != "hidden_size"}
        match = train.matched_hidden_size(experiment.load_config(config_path, {**base, "task_id": task_id}))
        point["hidden_size"] = match["hidden_size"]
    run = {**settings, **point, "task_id": task_id, "trial": trial, "seed": seed}
    return policy, experiment.load_config(config_path, run), match


def plan_runs(
    task_id: str,
    points: list[dict],
    seeds: list[int],
    first_trial: int,
    settings: dict,
    config_path: Any,
) -> list[dict]:
    """One validated entry per (condition, seed), condition-major: trial, seed, policy, condition
    (mop.conditions id of the resolved recipe), label values (`set`), overrides (every config key,
    typed: what the trainer gets), match (the matched GRU's numbers, or None). Raises SweepError or
    experiment.ConfigError before anything runs, also when two conditions are one recipe."""
    clash = [k for k in SWEEP_KEYS if k in settings]
    if clash:
        raise SweepError(f"{', '.join(clash)} is set by the sweep (--task_id, --seeds, --first_trial)")
    runs, seen = [], {}
    for i, point in enumerate(points):
        trial = first_trial + i
        for seed in seeds:
            policy, cfg, match = _resolve(task_id, point, seed, trial, settings, config_path)
            overrides = dataclasses.asdict(cfg)
            cid = conditions.condition_id(conditions.recipe({**overrides, conditions.POLICY_KEY: policy}))
            shown = {k: overrides[experiment.CONFIG_ALIASES.get(k, k)] for k in point if k != POLICY}
            runs.append(
                {"trial": trial, "seed": seed, "policy": policy, "condition": cid}
                | {"set": {POLICY: policy, **shown}, "overrides": overrides, "match": match}
            )
        cid = runs[-1]["condition"]
        if cid in seen and seen[cid] != trial:
            raise SweepError(
                f"conditions {seen[cid] - first_trial + 1} and {i + 1} are one recipe ({cid}): "
                f"{'a GRU ignores the MoP keys; put it in --recipe' if runs[-1]['policy'] == 'gru' else 'drop one'}"
            )
        seen[cid] = trial
    return runs


def plan(
    task_id: str, alphas: list[float], seeds: list[int], first_trial: int, overrides: dict, config_path
) -> list[dict]:
    """The α-only grid (--lpc_alpha): one validated override dict (every config key) per (α, seed),
    α-major; α index i -> trial first_trial + i."""
    if "lpc_alpha" in overrides:
        raise SweepError("lpc_alpha is set by the sweep (--lpc_alpha)")
    points = [{"lpc_alpha": a} for a in alphas]
    return [r["overrides"] for r in plan_runs(task_id, points, seeds, first_trial, overrides, config_path)]


# ----------------------------------------------------------------------------- the manifest


def manifest_path(name: str, sweeps_dir: str | Path = "sweeps") -> Path:
    return Path(sweeps_dir) / f"{safe_name(name, '--name')}.json"


def _entries(runs: list[dict]) -> list[dict]:
    """plan_runs entries, or override dicts of the α-only plan (MoP runs)."""
    out = []
    for r in runs:
        if "overrides" in r:
            out.append(r)
            continue
        cid = conditions.condition_id(conditions.recipe({**r, conditions.POLICY_KEY: "mop"}))
        out.append({"trial": r["trial"], "seed": r["seed"], "policy": "mop", "condition": cid,
                    "set": {POLICY: "mop", "lpc_alpha": r.get("lpc_alpha")}, "overrides": r, "match": None})  # fmt: skip
    return out


def manifest(
    name: str,
    runs: list[dict],
    command: list[str],
    sweeps_dir: str | Path = "sweeps",
    extra: dict | None = None,
) -> Path:
    """Write sweeps/<name>.json (module docstring), merged with an earlier one of that name; a
    trial it maps to another condition (or α) is refused."""
    path = manifest_path(name, sweeps_dir)
    entries = _entries(runs)
    labels = conditions.labels(
        {
            e["condition"]: conditions.recipe({**e["overrides"], conditions.POLICY_KEY: e["policy"]})
            for e in entries
        }
    )
    conds: dict[str, dict] = {}
    for e in entries:
        conds.setdefault(str(e["trial"]), {"condition": e["condition"], "label": labels[e["condition"]]}
                         | {"policy": e["policy"], "set": e["set"], "match": e["match"]})  # fmt: skip
    first = entries[0]["overrides"]
    doc = {
        "version": MANIFEST_VERSION,
        "name": name,
        "task_id": first["task_id"],
        "trials": {
            t: (c["set"].get("lpc_alpha", first.get("lpc_alpha")) if c["policy"] == "mop" else None)
            for t, c in conds.items()
        },  # fmt: skip
        "seeds": sorted({e["seed"] for e in entries}),
        "conditions": conds,
        "runs": [{"trial": e["trial"], "seed": e["seed"], "condition": e["condition"]} for e in entries],
        "settings": {k: v for k, v in first.items() if k not in SWEEP_KEYS},
        "command": shlex.join(command),
        **(extra or {}),
    }
    if path.is_file():
        old = conditions.read_manifest(path)
        if old.get("task_id") != doc["task_id"]:
            raise SweepError(
                f"{path} is a sweep of {old.get('task_id')}, not {doc['task_id']}: choose --name"
            )
        for trial, before in old.get("conditions", {}).items():
            now = conds.get(trial)
            if now is not None and isinstance(before, dict) and before.get("condition") != now["condition"]:
                raise SweepError(
                    f"{path} maps trial {trial} to condition {before.get('condition')} ({before.get('label')}); "
                    f"this sweep would give it {now['condition']} ({now['label']}): choose --first_trial or --name"
                )
        for trial, alpha in old.get("trials", {}).items():
            if "conditions" not in old and trial in doc["trials"] and doc["trials"][trial] != alpha:
                raise SweepError(
                    f"{path} maps trial {trial} of {old.get('task_id')} to lpc_alpha {alpha}; this sweep "
                    f"would give it {doc['trials'][trial]}: choose --first_trial or --name"
                )
        doc["trials"] = {**old.get("trials", {}), **doc["trials"]}
        doc["conditions"] = {**old.get("conditions", {}), **conds}
        doc["seeds"] = sorted(set(old.get("seeds", [])) | set(doc["seeds"]))
        known = {(r["trial"], r["seed"]) for r in doc["runs"]}
        doc["runs"] = [r for r in old.get("runs", []) if (r["trial"], r["seed"]) not in known] + doc["runs"]
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(doc, indent=1) + "\n")
    return path


# ----------------------------------------------------------------------------- training


def resume_overrides(overrides: dict, saved: dict) -> dict:
    """The sweep's overrides of a run that has checkpoints, less the keys that say the same as the
    checkpoint's config (experiment.recipe_value: input_dim None and 985 are one onehot setting),
    so a re-run resumes or skips it and only a real change of recipe is refused."""
    return {
        k: v
        for k, v in overrides.items()
        if k in experiment.RESUMABLE_OVERRIDES
        or k in SWEEP_KEYS
        or experiment.recipe_value(dict(overrides), k) != experiment.recipe_value(dict(saved), k)
    }


def existing_config(overrides: dict, config_path) -> experiment.TrainConfig | None:
    """The config a run of the sweep resumes with (None: it has no checkpoint yet); ConfigError
    in one line when its checkpoint is of another recipe."""
    cfg = experiment.load_config(config_path, overrides)
    if not resume_candidates(experiment.run_dir(cfg)):
        return None
    saved = experiment.newest_checkpoint(experiment.run_dir(cfg), report=False)[1]["config"]
    return experiment.resume_config(config_path, resume_overrides(overrides, saved))


def train_one(overrides: dict, config_path, policy: str = "mop", progress: bool = False) -> dict:
    """Train one run with its trainer: skip it if it reached num_updates, resume it if it has
    checkpoints. progress: its training bar on stderr (off in a sweep's parallel runs)."""
    import importlib

    trainer = importlib.import_module(TRAINERS[policy])
    cfg = experiment.load_config(config_path, overrides)
    label = f"trial {cfg.trial} seed {cfg.seed} ({policy}, lpc_alpha {cfg.lpc_alpha:g})"
    if policy == "gru":
        label = f"trial {cfg.trial} seed {cfg.seed} (gru, hidden_size {cfg.hidden_size})"
    resumed = existing_config(overrides, config_path)
    resume = resumed is not None
    if resume:
        cfg = resumed
        done = experiment.newest_checkpoint(experiment.run_dir(cfg), report=False)[1]["update"]
        if done >= cfg.num_updates:
            return {"label": label, "skipped": f"already at update {done}"}
        stopped = gate.stopped(cfg.stop_unless, experiment.run_dir(cfg))
        if stopped is not None:  # its gate failed: final (mop/gate.py)
            return {"label": label, "skipped": gate.describe(stopped)}
    summary = trainer.main(cfg, resume=resume, progress=progress)
    return {"label": label, "run_dir": summary["run_dir"], "resumed": resume}


def _extra(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seeds", required=True, help="seeds, '0-4' or '0,1,2'")
    parser.add_argument(
        "--grid", action="append", default=[], help='a factor, "KEY=V1|V2|..." (repeatable; see above)'
    )
    parser.add_argument(
        "--recipe", action="append", default=[], help='an extra condition, "KEY=V KEY=V" (repeatable)'
    )
    parser.add_argument("--first_trial", type=int, default=0, help="trial of the first condition (default 0)")
    parser.add_argument("--name", default=None, help="manifest name (default <task>_trial<first>-<last>)")
    parser.add_argument("--sweeps_dir", default="sweeps", help="where manifests go (default sweeps)")
    parser.add_argument(
        "--parallel", type=int, default=1, help="runs trained (and evaluated) at once (default 1)"
    )
    parser.add_argument("--num_episodes", type=int, default=1000, help="evaluation episodes (default 1000)")
    parser.add_argument(
        "--knockout",
        action="append",
        default=[],
        help="also evaluate the MoP runs' final checkpoints with this knockout",
    )
    parser.add_argument("--results_path", default="evaluation_results.csv")
    parser.add_argument("--cache_dir", default="evaluation_cache")
    parser.add_argument("--stats_dir", default=None, help="stats output (default stats/<name>)")
    parser.add_argument("--skip_eval", action="store_true", help="train only")
    parser.add_argument(
        "--max_conditions",
        type=int,
        default=MAX_CONDITIONS,
        help=f"refuse a grid of more conditions than this (default {MAX_CONDITIONS}; counted, never built)",
    )


def main(argv: list[str] | None = None) -> dict:
    parser = experiment.build_arg_parser(__doc__, _extra)
    args = parser.parse_args(argv)
    try:
        return run(args, list(sys.argv[1:] if argv is None else argv))
    except (
        SweepError,
        conditions.ConditionError,
        experiment.ConfigError,
        OutputError,
        RunPathError,
        RunLockedError,  # a run of the grid being trained by another sweep or training: one line
    ) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def keep_trials(
    runs: list[dict], old: dict | None, seeds: list[int], points: list[dict], replan
) -> list[dict]:
    """The runs with each condition at the trial the manifest of this name already gives it, and
    a condition it does not know at a fresh trial past every trial it names: so a sweep run again
    with a grid extended by new values (in any position) keeps its trained runs and adds only the
    new conditions. replan(point, trial): plan_runs of one point at another trial. Without an
    earlier manifest (or one without conditions): the runs as planned."""
    known = {
        c.get("condition"): int(t)
        for t, c in (old or {}).get("conditions", {}).items()
        if isinstance(c, dict)
    }
    if not known:
        return runs
    used = set(known.values()) | {int(t) for t in (old or {}).get("trials", {})}
    planned = [runs[i * len(seeds) : (i + 1) * len(seeds)] for i in range(len(points))]
    out = []
    for point, chunk in zip(points, planned):
        cid, trial = chunk[0]["condition"], chunk[0]["trial"]
        want = known.get(cid)
        if want is None:
            want = trial if trial not in used else max(used) + 1
            used.add(want)
        out += chunk if want == trial else replan(point, want)
    return out


def count_conditions(grid: dict[str, list[Any]], recipes: list[dict], cap: int) -> int:
    """The number of conditions (the grid's product plus the recipes), multiplied out factor by
    factor and refused as soon as it passes `cap` (so a grid of 10^6 is refused, never built)."""
    if cap < 1:
        raise SweepError(f"--max_conditions must be at least 1, got {cap}")
    total = 1  # expand: an empty grid is one condition, the settings alone
    for key, values in grid.items():
        total *= len(values)
        if total + len(recipes) > cap:
            raise SweepError(
                f"--grid: {' × '.join(str(len(v)) for v in grid.values())} = more than {cap} conditions "
                f"(at {key}): split the sweep or raise --max_conditions"
            )
    total += len(recipes)
    if total > cap:
        raise SweepError(f"{total} conditions is more than --max_conditions {cap}")
    return total


def check_folders(runs: list[dict], old: dict | None) -> None:
    """SweepError naming the folder when a run of the sweep would land in a trial made outside
    it: a trial folder holding a run trained without --seed (train_mop.py / train.py: checkpoints
    directly in trial_<N>/, where seed_<S>/ would nest inside it), or a trial_<N>/seed_<S>/ with
    checkpoints that this sweep's manifest does not name (another command's run)."""
    known = {(r["trial"], r["seed"]) for r in (old or {}).get("runs", [])}
    if old and not old.get("runs"):
        known = {(int(t), int(sd)) for t in old.get("trials", {}) for sd in old.get("seeds", [])}
    for e in runs:
        o = e["overrides"]
        seeded = Path(experiment.run_dir(experiment.TrainConfig(**o)))
        trial_dir = seeded.parent
        if resume_candidates(trial_dir):
            raise SweepError(
                f"{trial_dir} holds a run trained without --seed; the sweep's seed_<S>/ would nest inside "
                "it: choose --first_trial past the trials in use"
            )
        if resume_candidates(seeded) and (e["trial"], e["seed"]) not in known:
            raise SweepError(
                f"{seeded} holds a run this sweep's manifest does not name (trained by another command): "
                "choose --first_trial past the trials in use, or --name of the sweep that made it"
            )


def factors_of(grid: dict, recipes: list[dict]) -> list[str]:
    """The contrasts the analysis runs: each grid factor, and policy_type when a recipe or the grid
    names another trainer than MoP."""
    out = [conditions.POLICY_KEY if k == POLICY else k for k in grid]
    policies = {r.get(POLICY, "mop") for r in recipes} | set(grid.get(POLICY, ["mop"]))
    if len(policies) > 1 and conditions.POLICY_KEY not in out:
        out.append(conditions.POLICY_KEY)
    return out


def run(args: argparse.Namespace, argv: list[str]) -> dict:
    from mop.results import canonical_knockout

    given = {
        k: v for k, v in vars(args).items() if k in experiment.CONFIG_KEYS or k in experiment.CONFIG_ALIASES
    }
    given = experiment.resolve_aliases(given, "the command line")
    if args.resume:
        raise SweepError("--resume is implied: a sweep resumes every unfinished run")
    if "task_id" not in given:
        raise SweepError("--task_id is required")
    grid = parse_grid(args.grid)
    if "lpc_alpha" in given:
        if "lpc_alpha" in grid:
            raise SweepError("lpc_alpha is given by both --lpc_alpha and --grid: keep one")
        alphas = parse_alphas(given.pop("lpc_alpha"))
        if len(alphas) > 1:
            grid = {"lpc_alpha": alphas, **grid}
        else:
            given["lpc_alpha"] = alphas[0]
    recipes = [parse_recipe(r) for r in args.recipe]
    if not grid and not recipes and "lpc_alpha" not in given:
        raise SweepError(
            'give the conditions: --grid "KEY=V1|V2", --recipe "KEY=V ..." or --lpc_alpha "0,1e-4"'
        )
    if args.parallel < 1:
        raise SweepError(f"--parallel must be at least 1, got {args.parallel}")
    if args.num_episodes < 1:
        raise SweepError(f"--num_episodes must be at least 1, got {args.num_episodes}")
    knockouts = []
    for spec in args.knockout:
        try:
            knockouts.append(canonical_knockout(spec) or "none")
        except ValueError as e:
            raise SweepError(str(e)) from None
    if "none" in knockouts:
        raise SweepError("--knockout none is the default evaluation; name experts or 'largest'")
    seeds = parse_seeds(args.seeds)
    task_id = given.pop("task_id")
    config_path = args.config or ("config.yaml" if Path("config.yaml").exists() else None)
    count_conditions(grid, recipes, args.max_conditions)
    points = expand(grid, recipes)
    runs = plan_runs(task_id, points, seeds, args.first_trial, given, config_path)
    last = args.first_trial + len(points) - 1
    name = args.name or f"{run_task_name(task_id)}_trial{args.first_trial}-{last}"
    path = manifest_path(name, args.sweeps_dir)
    old = conditions.read_manifest(path) if path.is_file() else None
    runs = keep_trials(
        runs, old, seeds, points, lambda pt, t: plan_runs(task_id, [pt], seeds, t, given, config_path)
    )
    stats_dir = args.stats_dir or str(Path("stats") / safe_name(name, "--name"))
    check_writable_file(path, "--sweeps_dir")
    checkpoint_dir = runs[0]["overrides"]["checkpoint_dir"]
    check_writable_dir(checkpoint_dir, "--checkpoint_dir")
    if not args.skip_eval:
        check_writable_file(args.results_path, "--results_path")
        check_writable_dir(args.cache_dir, "--cache_dir")
        check_writable_dir(stats_dir, "--stats_dir")
    from mop.devices import DeviceError, resolve_device

    try:
        resolve_device(runs[0]["overrides"]["device"])
    except DeviceError as e:
        raise SweepError(str(e)) from None
    check_folders(runs, old)
    for e in runs:  # a run that has checkpoints must resume as the recipe it is, before any write
        existing_config(e["overrides"], config_path)
    for e in runs:
        if e["match"] and e["seed"] == seeds[0]:
            import train

            print(f"trial {e['trial']}: {train.describe_match(e['match'])}")
    factors = factors_of(grid, recipes)
    extra = {"factors": factors, "checkpoint_dir": checkpoint_dir, "results_path": args.results_path}
    extra["cache_dir"] = args.cache_dir
    path = manifest(name, runs, ["python", "sweep.py", *argv], args.sweeps_dir, extra)
    print(
        f"{len(runs)} runs ({len(points)} conditions × {len(seeds)} seeds), trials {args.first_trial}-{last}; "
        f"manifest {path}"
    )
    jobs = [(e["overrides"], config_path, e["policy"]) for e in runs]
    if args.parallel > 1 and len(runs) > 1:
        # spawn: each run in a fresh interpreter; pool processes are not daemons, so a run's own
        # env workers (num_workers > 0) can start
        with ProcessPoolExecutor(min(args.parallel, len(runs)), mp_context=get_context("spawn")) as pool:
            results = list(pool.map(train_one, *zip(*jobs)))
    else:
        results = [train_one(*job, progress=True) for job in jobs]  # one run at a time: its bar
    for r in results:
        print(f"{r['label']}: {r.get('skipped') or ('resumed, done' if r['resumed'] else 'done')}")
    summary: dict[str, Any] = {"manifest": str(path), "runs": results}
    if args.skip_eval:
        return summary
    summary["evaluated"] = evaluate(runs, task_id, checkpoint_dir, knockouts, args)
    import stats

    contrasts = [a for f in factors for a in ("--contrast", f)] if len(seeds) > 1 else []
    if not contrasts:
        print("note: one seed per condition: no contrasts (they pair runs by seed)")
    summary["stats"] = stats.main(
        ["--task_id", task_id, "--cache_dir", args.cache_dir, "--results_path", args.results_path]
        + ["--out", stats_dir, "--manifest", str(path), *contrasts]
    )
    return summary


def evaluate(
    runs: list[dict], task_id: str, checkpoint_dir: str, knockouts: list[str], args: argparse.Namespace
) -> int:
    """batch_eval.py on the manifest's runs only (one call per run; evaluations already in the
    results CSV are skipped), then each knockout on the MoP runs' final checkpoints."""
    import batch_eval

    common = [
        "--checkpoint_dir",
        checkpoint_dir,
        "--task_id",
        task_id,
        "--num_episodes",
        str(args.num_episodes),
    ]
    common += [
        "--results_path",
        args.results_path,
        "--cache_dir",
        args.cache_dir,
        "--num_workers",
        str(args.parallel),
    ]
    calls = 0
    for e in runs:
        which = ["--trial", str(e["trial"]), "--seed", str(e["seed"])]
        batch_eval.main(common + which)
        calls += 1
        for spec in knockouts if e["policy"] == "mop" else []:
            batch_eval.main(common + which + ["--final_only", "--knockout", spec])
            calls += 1
    return calls


if __name__ == "__main__":
    with command_edges("interrupted: run the same sweep.py command again to continue"):
        main()
