"""A Modal launch, checked on this machine before anything starts in the cloud (modal_app.py's local
side; it needs no Modal). The settings every run gets over config.yaml: a --config file, --set
"key=value ..." (YAML values), the earlier system's --extra-args "--key value ..." (the training
script's flags) and the typed shorthands (--num-updates ...), one of each key; one job per (task,
trial, seed), each validated by the same load_config call the container makes; the GPU spec and
the learner's device. Any bad value is LaunchError or experiment.ConfigError, one line, before a
container starts; modal_app.py's entrypoints, and its check at import under `modal run`, call
these. `modal run modal_app.py::<entrypoint> --flags` imports modal_app.py before it connects (a
missing token stops it there) and runs the entrypoint's body only after the login and the image
build: `modal_run_call` recognises that command line at import and `entrypoint_flags` parses its
flags as Modal's CLI will (click, one --dashed-flag per parameter), so the body's checks run first.

    from mop.launch import training_plan
    jobs, gpu = training_plan({"task_ids": "BabyAI-GoToObj-v0", "trials": "0", "seeds": "", ...})
    python -c "from mop import launch; launch.training_jobs('BabyAI-GoToObj-v0', '0', '', 'train_mop.py', {})"
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

# config.yaml beside the package: the repo here, /root in a container (modal_app adds it there).
CONFIG_PATH = Path(__file__).resolve().parent.parent / "config.yaml"
CHECKPOINT_VOLUME = "rl-mop"  # where a run's checkpoints go (modal_app's checkpoint volume)
# A training container's cores: one per env worker process (modal_app's TRAIN_CPUS).
TRAIN_CPUS = 4.0

# Modal's GPU types (modal.com/docs/guide/gpu; Modal reads them case-insensitively), optionally
# ':N' for N GPUs of that type. A type outside this list is refused here, before anything starts;
# add a new one of Modal's here.
MODAL_GPU_TYPES = (
    "T4",
    "L4",
    "A10",
    "A10G",
    "L40S",
    "A100",
    "A100-40GB",
    "A100-80GB",
    "RTX-PRO-6000",
    "H100",
    "H100!",
    "H200",
    "B200",
    "B200+",
    "ANY",
)
MAX_GPUS_PER_CONTAINER = 8

# The typed shorthands of main: each is the config key of the same name, exactly as if given in
# --set (they are the earlier system's documented flags). Every other key goes through --set or --config.
OVERRIDE_FLAGS = ("num_updates", "checkpoint_interval", "lpc_alpha", "normalize_lpc")
# Keys the launcher decides: --task-ids, --trials and --seeds name the runs, the volume holds them.
LAUNCHER_KEYS = {
    "task_id": "--task-ids",
    "trial": "--trials",
    "seed": "--seeds",
    "checkpoint_dir": "the volume",
}
SCRIPTS = ("train_mop.py", "train.py")


class LaunchError(ValueError):
    """A bad flag; raised on this machine before anything is started in the cloud."""


def check_gpu(text: str, flag: str = "--gpu") -> str:
    """A Modal GPU spec, 'TYPE' or 'TYPE:N' (e.g. T4, a100-80gb, H100:2), in Modal's spelling; ''
    (no GPU) stays ''. LaunchError in one line for anything else."""
    spec = text.strip()
    if not spec:
        return ""
    kind, sep, count = spec.partition(":")
    if kind.upper() not in MODAL_GPU_TYPES or (
        sep and not (count.isdigit() and 1 <= int(count) <= MAX_GPUS_PER_CONTAINER)
    ):
        raise LaunchError(
            f"{flag} must be a Modal GPU type, optionally ':N' for 1 to {MAX_GPUS_PER_CONTAINER} of them "
            f"({', '.join(MODAL_GPU_TYPES)}; e.g. T4 or H100:2), got {text!r}"
        )
    return kind.upper() + (f":{int(count)}" if sep else "")


def gpu_count(gpu: str) -> int:
    """GPUs a container gets for a checked spec: 0 for '', N for 'TYPE:N', else 1."""
    return 0 if not gpu else int(gpu.partition(":")[2] or 1)


def training_device(overrides: dict, gpu: str) -> dict:
    """The overrides with the device each run's learner uses. With --gpu: 'cuda' unless a CUDA
    device is given (so a container that cannot see its GPU stops in one line rather than training
    on its CPUs); without: the given device, if any. Refused in one line: a CUDA device without
    --gpu (the container has none), --gpu with device cpu (the GPU would sit idle), and an index
    beyond the container's GPUs."""
    from mop.devices import DeviceError, check_device

    given = overrides.get("device")
    try:
        device = None if given is None else check_device(given, "device")
    except DeviceError as e:
        raise LaunchError(str(e)) from None
    if not gpu:
        if device is not None and device.startswith("cuda"):
            raise LaunchError(
                f"device={given}: a training container has no GPU unless --gpu TYPE gives one (e.g. --gpu T4)"
            )
        return overrides
    if device == "cpu":
        raise LaunchError(f"--gpu {gpu} with device=cpu: the GPU would sit idle; drop one of them")
    if device is None or device == "auto":
        return {**overrides, "device": "cuda"}
    index = int(device.partition(":")[2] or 0)
    if index >= gpu_count(gpu):
        raise LaunchError(f"device={given}: --gpu {gpu} gives each container {gpu_count(gpu)} GPU(s)")
    return overrides


def _split(text: str, name: str, cast: Callable[[str], Any] = str) -> list:
    items = [s.strip() for s in text.split(",") if s.strip()]
    try:
        values = list(dict.fromkeys(cast(s) for s in items))
    except ValueError:
        raise LaunchError(f"--{name} must be a comma-separated list, got {text!r}") from None
    if not values:
        raise LaunchError(f"--{name} is empty")
    return values


# One key=value pair starts at each space that is followed by `name=`, so a value may hold spaces
# inside brackets or quotes: --set "expert_hidden_sizes=[[0, 16], [0, 16]] lr=1e-3".


def parse_set(text: str) -> dict:
    """--set "lpc_alpha=1e-4 hidden_size=128" -> {"lpc_alpha": "1e-4", "hidden_size": 128}: space-separated
    key=value pairs (conditions.split_assignments: a value may hold spaces inside brackets), each
    value read as YAML (a number, true/false, null, [[0,16,32]], a string). Types are the schema's
    business (load_config converts "1e-4", which YAML 1.1 reads as a string)."""
    import yaml

    from mop.conditions import split_assignments

    try:
        pairs = split_assignments(text)
    except ValueError as e:
        raise LaunchError(
            f'--set takes space-separated key=value pairs ("lr=1e-3 hidden_size=128"), got {str(e)!r}'
        ) from None
    values: dict = {}
    for key, raw in pairs:
        if key in values:
            raise LaunchError(f"--set gives {key} twice")
        try:
            values[key] = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise LaunchError(f"--set {key}: {raw!r} is not a YAML value") from None
    return values


def parse_extra_args(text: str) -> dict:
    """--extra-args "--lpc_alpha 1e-4 --num_updates 5000" (the earlier system's way to hand the
    training script its flags) -> the config keys train_mop.py would read from them (aliases such
    as --mop_layers resolved); LaunchError for anything that is not a config flag (--config and
    --resume included: give --config to the entrypoint; a run on the volume resumes by itself)."""
    import shlex

    from mop import experiment

    try:
        tokens = shlex.split(text)
    except ValueError as e:
        raise LaunchError(f"--extra-args {text!r}: {e}") from None
    parser = experiment.build_arg_parser("")

    def refuse(message: str) -> NoReturn:
        raise LaunchError(f"--extra-args: {message}")

    parser.error = refuse  # type: ignore[method-assign]
    args, unknown = parser.parse_known_args(tokens)
    if unknown:
        refuse(f"{' '.join(unknown)} is not a flag of the training scripts")
    if args.config is not None or args.resume:
        refuse("--config and --resume are the entrypoint's (--config FILE); runs resume by themselves")
    keys = set(experiment.CONFIG_KEYS) | set(experiment.CONFIG_ALIASES)
    return experiment.resolve_aliases({k: v for k, v in vars(args).items() if k in keys}, "--extra-args")


def training_overrides(set_text: str, config_file: str, flags: dict, extra_args: str = "") -> dict:
    """The settings every run gets over config.yaml: the --config file's, then --set's, --extra-args'
    and the typed flags' (a key given twice among them is refused). Only the keys given, so the rest
    keep config.yaml's value; the launcher's own keys come from --task-ids/--trials/--seeds."""
    from mop import experiment

    from_file = experiment.load_yaml(config_file or None)
    experiment.check_keys(from_file, f"--config {config_file!r}")
    if "checkpoint_dir" in from_file:
        print(
            f"note: checkpoint_dir of {config_file} is ignored; checkpoints go to volume {CHECKPOINT_VOLUME}"
        )
        del from_file["checkpoint_dir"]
    from_set = parse_set(set_text)
    experiment.check_keys(from_set, "--set")
    from_extra = parse_extra_args(extra_args) if extra_args else {}
    typed = {k: v for k, v in flags.items() if v is not None}
    for source, given in (("--set", from_set), ("--extra-args", from_extra)):
        for key in given:
            if key in LAUNCHER_KEYS:
                raise LaunchError(f"{source} {key}: {key} is set by {LAUNCHER_KEYS[key]}")
            if key in typed:
                raise LaunchError(f"{key} is given twice, by {source} and by --{key.replace('_', '-')}")
    for key in set(from_set) & set(from_extra):
        raise LaunchError(f"{key} is given twice, by --set and by --extra-args")
    return {**from_file, **from_set, **from_extra, **typed}


def training_jobs(task_ids: str, trials: str, seeds: str, script: str, overrides: dict) -> list[dict]:
    """One job per (task, trial, seed), each validated against the local schema with the same
    load_config call the container makes; raises LaunchError or experiment.ConfigError before
    anything is started. A job carries the given keys with the schema's types."""
    from mop import experiment

    if script not in SCRIPTS:
        raise LaunchError(f"--script must be one of {', '.join(SCRIPTS)}, got {script!r}")
    tasks, trial_list = _split(task_ids, "task-ids"), _split(trials, "trials", int)
    seed_list = _split(seeds, "seeds", int) if seeds else [None]
    jobs = []
    for task in tasks:
        for trial in trial_list:
            for seed in seed_list:
                run = {**overrides, "task_id": task, "trial": trial} | (
                    {} if seed is None else {"seed": seed}
                )
                cfg = experiment.load_config(CONFIG_PATH, run)
                run = {k: getattr(cfg, k) for k in run}
                label = f"{task} trial {trial}" + ("" if cfg.seed is None else f" seed {cfg.seed}")
                jobs.append({"label": label, "overrides": run, "script": script})
    return jobs


def training_plan(flags: dict) -> tuple[list[dict], str]:
    """(jobs, GPU spec) main's flags describe, every job validated (LaunchError/ConfigError before
    anything starts); main's body and the check at import (check_modal_run) both call it."""
    gpu = check_gpu(flags["gpu"])
    overrides = training_overrides(
        flags["set"], flags["config"], {k: flags[k] for k in OVERRIDE_FLAGS}, flags.get("extra_args", "")
    )
    if overrides.get("num_workers") is None:  # null means "the host's cores": pin to the reservation
        overrides["num_workers"] = int(TRAIN_CPUS)
    overrides = training_device(overrides, gpu)
    return training_jobs(flags["task_ids"], flags["trials"], flags["seeds"], flags["script"], overrides), gpu


# ----------------------------------------------------------------------------- `modal run`, at import


def modal_run_call(
    argv: list[str], app_file: str, module: str, names: set[str]
) -> tuple[str, list[str]] | None:
    """(entrypoint, its flags) when argv is `modal run [Modal's options] <app_file>::<entrypoint>
    [flags]` (or `modal run -m <module>::<entrypoint>`) naming one of `names`; None otherwise."""
    if len(argv) < 3 or Path(argv[0]).name not in ("modal", "__main__.py") or argv[1] != "run":
        return None
    here = Path(app_file).resolve()
    for i, arg in enumerate(argv[2:], start=2):
        base, sep, name = arg.partition("::")
        if not sep:
            continue
        this = base == module or (base.endswith(".py") and Path(base).resolve() == here)
        return (name, argv[i + 1 :]) if this and name in names else None
    return None


def entrypoint_flags(function: typing.Callable[..., Any], args: list[str]) -> dict | None:
    """The keyword arguments Modal's CLI passes `function` (a local entrypoint's raw function) for
    `args`: each parameter a --dashed-flag, a bool one --flag/--no-flag, the defaults filled in.
    None where click refuses the flags (an unknown flag, a word for a number): Modal reports those
    itself, before it connects."""
    import click

    hints = typing.get_type_hints(function)
    parsed: dict = {}
    command = click.Command("entrypoint", callback=lambda **kw: parsed.update(kw))
    for param in inspect.signature(function).parameters.values():
        kinds = [t for t in typing.get_args(hints[param.name]) if t is not type(None)] or [hints[param.name]]
        flag = "--" + param.name.replace("_", "-")
        if kinds[0] is bool:
            flag += "/--no-" + param.name.replace("_", "-")
        required = param.default is inspect.Parameter.empty
        default = None if required else param.default
        command.params.append(
            click.Option([flag], param.name, type=kinds[0], default=default, required=required)
        )
    try:
        command.main(list(args), standalone_mode=False)
    except click.ClickException:
        return None
    return parsed
