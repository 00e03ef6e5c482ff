"""modal_app.py offline: the app's shape and flags, and its function bodies run here on a tiny real
BabyAI run, with temporary folders standing in for the rl-mop and rl-mop-eval volumes and fakes
standing in for .remote/.spawn/.map (no Modal account or network needed)."""

import ast
import dataclasses
import inspect
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
import types
import typing
from pathlib import Path

import pandas as pd
import pytest
import yaml

modal = pytest.importorskip("modal", reason="the Modal client (pip install modal==1.6.4) is not installed")

import click  # noqa: E402  (Modal's CLI library)

import batch_eval  # noqa: E402
import modal_app  # noqa: E402
from eval_mop import EvalOptions  # noqa: E402
from mop import experiment  # noqa: E402
from mop.results import read_results  # noqa: E402
from mop.runs import RESUME_POINT_MINUTES  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TASK = "BabyAI-GoToRedBallGrey-v0"
TINY = {
    "task_id": TASK,
    "trial": 0,
    "seed": 1,
    "num_envs": 4,
    "unroll_len": 8,
    "num_updates": 3,
    "checkpoint_interval": 1,
    "log_interval": 1,
    "num_workers": 0,
    "intermediate_dim": 16,
    "router_hidden_size": 8,
    "expert_hidden_sizes": [[0, 8], [0, 8]],
    "lang_dim": 8,
    "path_ratio_fraction": 0.0,
}
EVAL_OPTIONS = batch_eval.BatchOptions(eval=EvalOptions(num_episodes=4, num_envs=2))
RUN = Path(TASK) / "trial_0" / "seed_1"


class Fake:
    """Stands in for a Modal Function: records calls, runs `body` here."""

    def __init__(self, body=None):
        self.body, self.calls, self.options = body, [], []

    def with_options(self, **options):  # a Function in a container with other resources
        self.options.append(options)
        return self

    def remote(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        return self.body(*args, **kwargs)

    def spawn(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        raise AssertionError("spawn must not be called")

    def map(self, items, kwargs=None, return_exceptions=False):
        self.calls.append((items, kwargs))
        return [self.body(item, **(kwargs or {})) for item in items]


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    """A checkpoint 'volume' holding one tiny trained run (updates 1, 2, final = 3)."""
    base = tmp_path_factory.mktemp("vol")
    commits = []
    summary = modal_app._train_body(TINY, str(base / "modal_checkpoints"), commit=lambda: commits.append(1))
    return types.SimpleNamespace(
        base=base, checkpoints=base / "modal_checkpoints", summary=summary, commits=commits
    )


# ----------------------------------------------------------------------------- shape


def test_app_functions_volumes_and_image_contents():
    assert modal_app.app.name == "rl-mop"
    for name in ("train_run", "train_all", "list_checkpoints", "eval_checkpoint", "reduce_rows", "eval_all"):
        assert isinstance(getattr(modal_app, name), modal.Function), name
    for name in ("main", "main_seeds", "eval_parallel", "eval_main"):
        assert isinstance(getattr(modal_app, name), modal.app.LocalEntrypoint), name
    assert modal_app.checkpoint_volume.name == "rl-mop"
    assert modal_app.eval_volume.name == "rl-mop-eval"
    # Which volume each function mounts where (the spec is the decorator's arguments).
    spec = {n: getattr(modal_app, n)._spec_ for n in ("train_run", "eval_checkpoint", "reduce_rows")}
    mounts = {n: {path: vol.name for path, vol in s.volumes.items()} for n, s in spec.items()}
    checkpoints, evals = modal_app.CHECKPOINT_ROOT, modal_app.EVAL_ROOT
    assert mounts["train_run"] == {checkpoints: "rl-mop"}
    assert mounts["eval_checkpoint"] == {checkpoints: "rl-mop", evals: "rl-mop-eval"}
    assert mounts["reduce_rows"] == {evals: "rl-mop-eval"}
    assert spec["train_run"].cpu == modal_app.TRAIN_CPUS and spec["train_run"].gpus is None
    assert Path(modal_app.CHECKPOINT_ROOT).name == "modal_checkpoints"  # row keys match local batch_eval
    assert modal_app.TRAIN_TIMEOUT_S < modal_app.LAUNCH_TIMEOUT_S <= 24 * 3600
    # Every project module that an added module imports is added too (the package counts as one).
    local = {p.stem for p in ROOT.glob("*.py")} | {modal_app.PACKAGE}
    sources = [ROOT / f"{n}.py" for n in modal_app.PROJECT_MODULES if n != modal_app.PACKAGE]
    sources += sorted((ROOT / modal_app.PACKAGE).glob("*.py"))
    for path in sources:
        tree = ast.parse(path.read_text())
        imported = {
            a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
        }
        imported |= {
            n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module
        }
        missing = (imported & local) - set(modal_app.PROJECT_MODULES)
        assert not missing, f"{path.name} imports {missing}, which the image does not add"
    # The list is derived from the repo, so it covers every module the entry scripts reach.
    entry = {"train_mop", "train", "batch_eval", "eval_mop", modal_app.PACKAGE}
    assert entry <= set(modal_app.PROJECT_MODULES)
    assert (ROOT / modal_app.PACKAGE / "experiment.py").exists()  # the library travels inside the package
    assert not {"modal_app", "routing_viz", "logit_viz", "cross_task_viz"} & set(modal_app.PROJECT_MODULES)
    assert set(modal_app.PROJECT_MODULES) == {modal_app.PACKAGE} | {
        p.stem for p in ROOT.glob("*.py") if not p.stem.endswith("_viz") and p.stem != "modal_app"
    }


def _hints(entrypoint) -> tuple[inspect.Signature, dict]:
    raw = entrypoint.info.raw_f
    return inspect.signature(raw), typing.get_type_hints(raw)


def test_entrypoints_are_typed_and_match_the_config_schema():
    schema = typing.get_type_hints(experiment.TrainConfig)
    for ep in (modal_app.main, modal_app.main_seeds, modal_app.eval_parallel, modal_app.eval_main):
        sig, hints = _hints(ep)
        for name in sig.parameters:
            assert hints[name] in (str, int, float, bool, int | None, float | None, bool | None), name
    for ep in (modal_app.main, modal_app.main_seeds):
        sig, hints = _hints(ep)
        assert {"task_ids", "trials", "script", "gpu"} <= set(sig.parameters)
        for key in modal_app.OVERRIDE_FLAGS:
            assert key in experiment.CONFIG_KEYS and key in sig.parameters, key
            base = [t for t in typing.get_args(schema[key]) if t is not type(None)] or [schema[key]]
            expected = str if base[0] is list else base[0] | None
            assert hints[key] == expected, key
    assert "seeds" in _hints(modal_app.main_seeds)[0].parameters
    sig, hints = _hints(modal_app.eval_parallel)
    assert sig.parameters["num_episodes"].default == 1000 and hints["force"] is bool


def test_the_readme_commands_parse():
    from modal.cli.run import _get_click_command_for_local_entrypoint as command

    def parse(entrypoint, args):
        return command(modal_app.app, entrypoint).make_context("modal run", args).params

    p = parse(
        modal_app.main, ["--task-ids", "BabyAI-GoToObj-v0", "--trials", "0", "--script", "train_mop.py"]
    )
    assert (p["task_ids"], p["trials"], p["script"], p["num_updates"], p["normalize_lpc"]) == (
        "BabyAI-GoToObj-v0",
        "0",
        "train_mop.py",
        None,
        None,
    )
    args = ["--task-ids", "BabyAI-UnlockPickup-v0", "--trials", "20,21", "--seeds", "0,1,2,3"]
    args += [
        "--checkpoint-interval",
        "250",
        "--lpc-alpha",
        "1e-4",
        "--normalize-lpc",
        "--num-updates",
        "5000",
    ]
    p = parse(modal_app.main_seeds, args)
    assert (p["seeds"], p["checkpoint_interval"], p["lpc_alpha"], p["normalize_lpc"], p["num_updates"]) == (
        "0,1,2,3",
        250,
        1e-4,
        True,
        5000,
    )
    p = parse(
        modal_app.eval_parallel, ["--num-episodes", "500", "--force", "--task", "BabyAI-UnlockPickup-v0"]
    )
    assert (p["num_episodes"], p["force"], p["task"]) == (500, True, "BabyAI-UnlockPickup-v0")
    assert parse(modal_app.eval_main, [])["num_episodes"] == 1000
    p = parse(
        modal_app.main,
        ["--task-ids", TASK, "--trials", "0", "--seeds", "1", "--set", "hidden_size=128 lr=1e-3"]
        + ["--config", "my.yaml", "--script", "train.py"],
    )
    assert (p["seeds"], p["set"], p["config"]) == ("1", "hidden_size=128 lr=1e-3", "my.yaml")
    with pytest.raises(click.MissingParameter):  # main_seeds is main with --seeds required
        parse(modal_app.main_seeds, ["--task-ids", TASK, "--trials", "0"])


def _documented_commands() -> list[list[str]]:
    """Every `modal run` command of README.md, of docs/reference.md's Modal section and of
    modal_app's docstring."""
    readme = (ROOT / "README.md").read_text()
    reference = (ROOT / "docs" / "reference.md").read_text()
    section = reference.split("## Cloud runs on Modal", 1)[1].split("\n## ", 1)[0]
    text = (readme + "\n" + section + "\n" + modal_app.__doc__).replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip().startswith("modal run")]
    # README marks optional flags as [--flag value]
    return [[t.strip("[]") for t in shlex.split(line, comments=True) if t.strip("[]")] for line in lines]


def test_every_documented_command_parses_and_its_training_settings_validate(monkeypatch, tmp_path):
    """Each `modal run` line of the README and the docstring goes through Modal's own CLI parser; the
    training ones then run main's local validation (with a fake launcher) without an error."""
    from modal.cli.run import _get_click_command_for_local_entrypoint as command

    monkeypatch.chdir(tmp_path)
    launcher = Fake(lambda jobs, cpu, gpu: [{"label": j["label"], "skipped": "at update 5"} for j in jobs])
    monkeypatch.setattr(modal_app, "train_all", launcher)
    commands = _documented_commands()
    names = [re.search(r"modal_app\.py::(\w+)", " ".join(c)).group(1) for c in commands]
    assert {"main", "main_seeds", "eval_parallel", "eval_main"} <= set(names)
    documented = (ROOT / "README.md").read_text() + (ROOT / "docs" / "reference.md").read_text()
    assert "--set" in documented and "--config" in documented and "--seeds" in documented
    for args, name in zip(commands, names):
        rest = args[args.index(f"modal_app.py::{name}") + 1 :]
        entrypoint = getattr(modal_app, name)
        params = command(modal_app.app, entrypoint).make_context("modal run", rest).params
        if name in ("main", "main_seeds"):
            if params["config"]:
                Path(params["config"]).write_text("lr: 0.001\n")
            before = len(launcher.calls)
            entrypoint(**params)
            assert len(launcher.calls) == before + 1, args


def test_modal_cli_builds_main_seeds_from_mains_signature():
    """`modal run modal_app.py::main_seeds --help` (offline): main's flags, --seeds required."""
    modal_cli = Path(sys.executable).parent / "modal"
    out = subprocess.run(
        [str(modal_cli), "run", "modal_app.py::main_seeds", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    flags = dict(re.findall(r"^\s+(--[\w-]+)[^\n]*?(\[required\])?$", out.stdout, re.M))
    main_flags = {"--" + n.replace("_", "-") for n in inspect.signature(modal_app.main.info.raw_f).parameters}
    assert main_flags <= set(flags)
    assert {f for f, req in flags.items() if req} == {"--task-ids", "--trials", "--seeds"}


# ----------------------------------------------------------------------------- launching training


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"task_ids": "BabyAI-NoSuchLevel-v0", "trials": "0"}, "task_id"),
        ({"task_ids": TASK, "trials": "0", "set": "lr=-1"}, "lr"),
        ({"task_ids": TASK, "trials": "0,x"}, "--trials"),
        ({"task_ids": TASK, "trials": "0", "script": "train_gru.py"}, "--script"),
        ({"task_ids": TASK, "trials": "0", "set": "expert_hidden_sizes=8,a"}, "expert_hidden_sizes"),
        ({"task_ids": TASK, "trials": "0", "set": "hiden_size=128"}, "did you mean 'hidden_size'"),
        ({"task_ids": TASK, "trials": "0", "set": "hidden_size=big"}, "hidden_size"),
        ({"task_ids": TASK, "trials": "0", "set": "hidden_size=[1"}, "--set hidden_size"),
        ({"task_ids": TASK, "trials": "0", "set": "lpc_alpha 1e-4"}, "key=value"),
        ({"task_ids": TASK, "trials": "0", "set": "lr=1e-3 lr=1e-2"}, "twice"),
        ({"task_ids": TASK, "trials": "0", "set": "lpc_alpha=0.1", "lpc_alpha": 0.2}, "twice"),
        ({"task_ids": TASK, "trials": "0", "set": "trial=3"}, "--trials"),
        ({"task_ids": TASK, "trials": "0", "set": "checkpoint_dir=/tmp"}, "volume"),
        ({"task_ids": TASK, "trials": "0", "config": "no_such_file.yaml"}, "cannot read"),
        ({"task_ids": TASK, "trials": "0", "config": "{tmp}/typo.yaml"}, "unknown key 'lpc_alfa'"),
        ({"task_ids": TASK, "trials": "0", "config": "{tmp}/bad.yaml"}, "normalize_lpc"),
        ({"task_ids": TASK, "trials": "0", "seeds": "1", "gpu": "T4 x2"}, "--gpu"),
    ],
)
def test_bad_flags_fail_here_before_anything_starts(monkeypatch, capsys, tmp_path, kwargs, message):
    (tmp_path / "typo.yaml").write_text("lpc_alfa: 0.1\n")
    (tmp_path / "bad.yaml").write_text("normalize_lpc: maybe\n")
    launcher, runner = Fake(), Fake()
    monkeypatch.setattr(modal_app, "train_all", launcher)
    monkeypatch.setattr(modal_app, "train_run", runner)
    kwargs = {k: v.replace("{tmp}", str(tmp_path)) if isinstance(v, str) else v for k, v in kwargs.items()}
    with pytest.raises(SystemExit) as exit_info:
        modal_app.main(**kwargs)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.startswith("error: ") and err.count("\n") == 1  # one line
    assert launcher.calls == [] and runner.calls == []


def test_set_parses_space_separated_yaml_pairs():
    assert modal_app.parse_set("") == {}
    got = modal_app.parse_set(
        "lpc_alpha=1e-4  hidden_size=128 expert_hidden_sizes=[[0, 16, 32], [0, 8]] max_steps=null"
        " normalize_lpc=true wandb_project='my project'"
    )
    assert got == {
        "lpc_alpha": "1e-4",  # YAML 1.1 reads 1e-4 as a string; the schema makes it a float
        "hidden_size": 128,
        "expert_hidden_sizes": [[0, 16, 32], [0, 8]],
        "max_steps": None,
        "normalize_lpc": True,
        "wandb_project": "my project",
    }
    assert modal_app.parse_set("expert_hidden_sizes=0,16,32;0,8") == {"expert_hidden_sizes": "0,16,32;0,8"}


class Done:
    """A finished Modal FunctionCall."""

    def __init__(self, result):
        self.result = result

    def get(self):
        return self.result


def test_config_file_and_set_reach_the_trained_run(monkeypatch, capsys, tmp_path):
    """--config (read here) < --set < typed flags, every key of the schema (hidden_size: the GRU
    baseline's, which no typed flag exposes), down to the checkpoint a train.py run writes."""
    defaults = {k: v for k, v in TINY.items() if k not in ("trial", "seed")}
    defaults |= {"task_id": "BabyAI-GoToObj-v0", "lr": 0.01, "hidden_size": 8, "checkpoint_dir": "elsewhere"}
    config = tmp_path / "defaults.yaml"
    config.write_text(yaml.safe_dump(defaults))
    root = tmp_path / "modal_checkpoints"
    spawn = Fake()
    spawn.spawn = lambda overrides, script: Done(modal_app._train_body(overrides, str(root), script))
    launcher = Fake(lambda jobs, cpu, gpu: modal_app._fan_out(spawn.spawn, jobs))
    monkeypatch.setattr(modal_app, "train_all", launcher)

    modal_app.main(
        task_ids=TASK,
        trials="3",
        script="train.py",
        config=str(config),
        set="hidden_size=12 max_steps=null lpc_exponent=1.5",
        num_updates=1,
    )
    (jobs, cpu, _), _ = launcher.calls[0]
    assert cpu == 1.0  # num_workers: 0 from the file, so one core
    (job,) = jobs
    assert job["script"] == "train.py" and job["label"] == f"{TASK} trial 3"
    o = job["overrides"]
    assert (o["task_id"], o["trial"], o["hidden_size"], o["lr"], o["num_updates"]) == (TASK, 3, 12, 0.01, 1)
    assert o["lpc_exponent"] == 1.5 and o["max_steps"] is None and "checkpoint_dir" not in o
    out = capsys.readouterr().out
    assert "checkpoint_dir" in out and f"✓ {TASK} trial 3" in out

    ckpt = experiment.load_checkpoint(root / TASK / "trial_3" / "checkpoint_final.pt")
    assert (ckpt["config"]["hidden_size"], ckpt["config"]["lr"], ckpt["config"]["update"]) == (12, 0.01, 1)
    assert any(t.shape[-1] == 12 for t in ckpt["policy_state_dict"].values())  # the GRU is 12 wide

    capsys.readouterr()
    modal_app.main(
        task_ids=TASK, trials="3", script="train.py", config=str(config), set="hidden_size=12", num_updates=1
    )
    assert "skipped, already at update 1" in capsys.readouterr().out  # a re-run resumes or skips


def test_main_seeds_launches_one_validated_job_per_task_trial_seed(monkeypatch, capsys):
    launcher = Fake(
        lambda jobs, cpu, gpu: [{"label": j["label"], "skipped": "already at update 5"} for j in jobs]
    )
    monkeypatch.setattr(modal_app, "train_all", launcher)
    modal_app.main_seeds(
        task_ids=TASK, trials="20,21", seeds="0,3", lpc_alpha=1e-4, normalize_lpc=True, num_updates=50
    )
    (jobs, cpu, gpu), _ = launcher.calls[0]
    assert len(launcher.calls) == 1 and cpu == modal_app.TRAIN_CPUS and gpu == ""
    assert [(j["overrides"]["trial"], j["overrides"]["seed"]) for j in jobs] == [
        (20, 0),
        (20, 3),
        (21, 0),
        (21, 3),
    ]
    for job in jobs:
        assert job["script"] == "train_mop.py"
        cfg = experiment.load_config(modal_app.CONFIG_PATH, job["overrides"])
        assert (cfg.lpc_alpha, cfg.normalize_lpc, cfg.num_updates) == (1e-4, True, 50)
        assert cfg.num_workers == modal_app.TRAIN_CPUS  # pinned to the container's cores
        assert "lr" not in job["overrides"]  # flags left out keep config.yaml's value
    assert capsys.readouterr().out.count("skipped") == 4


def test_fan_out_starts_everything_and_reports_each_failure():
    class Call:
        def __init__(self, result):
            self.result = result

        def get(self):
            if isinstance(self.result, Exception):
                raise self.result
            return self.result

    started = []

    def spawn(overrides, script):
        started.append(overrides["trial"])
        return Call(RuntimeError("preempted too often") if overrides["trial"] == 1 else {"run_dir": "x"})

    jobs = [{"label": f"t{i}", "overrides": {"trial": i}, "script": "train.py"} for i in range(3)]
    results = modal_app._fan_out(spawn, jobs)
    assert started == [0, 1, 2]
    assert [r.get("error", "") for r in results] == ["", "RuntimeError: preempted too often", ""]


# ----------------------------------------------------------------------------- the training body


def test_training_writes_the_volume_layout_and_commits(volumes):
    run = volumes.checkpoints / RUN
    assert sorted(p.name for p in run.glob("checkpoint_*.pt")) == [
        "checkpoint_1.pt",
        "checkpoint_2.pt",
        "checkpoint_3.pt",
        "checkpoint_final.pt",  # a link to checkpoint_3.pt (mop/runs.py store_last_update)
    ]
    assert (run / "metrics.jsonl").exists() and volumes.summary["resumed_from"] is None
    assert len(volumes.commits) >= 1


def test_a_finished_run_is_skipped_and_a_longer_one_resumes(volumes, tmp_path):
    root = tmp_path / "modal_checkpoints"
    shutil.copytree(volumes.checkpoints, root)
    before = {p.name: p.stat().st_mtime_ns for p in (root / RUN).iterdir()}
    out = modal_app._train_body(TINY, str(root))
    assert out["skipped"] == "already at update 3"
    assert {p.name: p.stat().st_mtime_ns for p in (root / RUN).iterdir()} == before

    out = modal_app._train_body({**TINY, "num_updates": 4}, str(root))
    assert out["resumed_from"].endswith("checkpoint_final.pt")  # the newest: update 3
    assert experiment.load_checkpoint(root / RUN / "checkpoint_3.pt")["update"] == 3  # kept, renamed
    assert experiment.load_checkpoint(root / RUN / "checkpoint_final.pt")["update"] == 4
    rows = experiment.read_metrics(root / RUN / "metrics.jsonl")
    assert [r["update"] for r in rows] == [1, 2, 3, 4]

    out = modal_app._train_body({**TINY, "num_updates": 5, "lpc_alpha": 0.5}, str(root))
    assert "lpc_alpha" in out["error"]  # a different experiment in the same folder: refused, not retried


def test_committing_commits_periodically_and_at_the_end_even_after_a_failure():
    calls = []
    lock = threading.Lock()

    def commit():
        with lock:
            calls.append(time.monotonic())
        if len(calls) == 2:
            raise RuntimeError("open file")  # an interim failure is logged, not fatal

    with modal_app._committing(commit, every_s=0.02):
        time.sleep(0.2)
    assert len(calls) >= 4
    calls.clear()
    with pytest.raises(KeyError), modal_app._committing(lambda: calls.append(1), every_s=60):
        raise KeyError("crash")
    assert calls == [1]


# ----------------------------------------------------------------------------- evaluation


def test_listing_and_planning(volumes, tmp_path):
    state = modal_app._list_body(str(volumes.checkpoints), str(tmp_path))
    paths = [r["path"] for r in state["refs"]]
    prefix = f"modal_checkpoints/{RUN.as_posix()}/"
    assert paths == [
        prefix + n for n in ("checkpoint_1.pt", "checkpoint_2.pt", "checkpoint_3.pt")
    ]  # 3: the final
    assert state["results_csv"] is None and state["pending"] == []

    done = pd.DataFrame(
        {"checkpoint_path": [paths[0]], "task_id": [TASK], "eval_task_id": [TASK], "knockout": ["none"]}
    )
    todo = modal_app.plan_eval(state["refs"], done, [paths[2]])
    assert [r["path"] for r in todo] == [paths[1]]
    assert len(modal_app.plan_eval(state["refs"], done, [paths[2]], force=True)) == 3
    assert modal_app.plan_eval(state["refs"], done, [], task="BabyAI-GoToObj-v0") == []
    assert len(modal_app.plan_eval(state["refs"], done, [], task=TASK)) == 2


def test_rows_and_reduce_give_one_row_per_checkpoint_like_local_batch_eval(volumes, tmp_path, monkeypatch):
    eval_root = tmp_path / "eval"
    refs = modal_app._list_body(str(volumes.checkpoints), str(eval_root))["refs"]
    for _ in range(2):  # evaluating everything twice still leaves one row per checkpoint
        for ref in refs:
            row = modal_app._eval_body(ref, EVAL_OPTIONS, str(volumes.checkpoints), str(eval_root))
            assert modal_app._row_file(str(eval_root), row["checkpoint_path"]).exists()
        assert modal_app._reduce_body(str(eval_root)) == {"merged": 3, "rows": 3}
        assert list((eval_root / "pending_rows").iterdir()) == []
    table = read_results(eval_root / "evaluation_results.csv")
    assert sorted(table["checkpoint_path"]) == [r["path"] for r in refs]
    for cache in table["cache_path"]:
        assert cache.startswith("evaluation_cache/") and (eval_root / cache / "metadata.json").exists()
    assert modal_app._reduce_body(str(eval_root)) == {"merged": 0, "rows": 3}

    # A local batch_eval of the downloaded volume names the checkpoint and its cache the same way.
    monkeypatch.chdir(volumes.base)
    ref = batch_eval.discover(["modal_checkpoints"])[1]
    local = batch_eval.evaluate_one(
        ref,
        dataclasses.replace(
            EVAL_OPTIONS, cache_dir="evaluation_cache", results_path=str(tmp_path / "local.csv")
        ),
    )
    shutil.rmtree(volumes.base / "evaluation_cache")
    remote = table.set_index("checkpoint_path").loc[local["checkpoint_path"]]
    assert local["cache_path"] == remote["cache_path"]
    assert (local["success_rate"], local["mean_lpc"]) == pytest.approx(
        (remote["success_rate"], remote["mean_lpc"])
    )


def test_eval_parallel_plans_against_the_local_csv_first(volumes, tmp_path, monkeypatch, capsys):
    eval_root = tmp_path / "eval"
    work = tmp_path / "workstation"
    work.mkdir()
    monkeypatch.chdir(work)
    lister = Fake(lambda: modal_app._list_body(str(volumes.checkpoints), str(eval_root)))
    evaluator = Fake(
        lambda ref, options: modal_app._eval_body(ref, options, str(volumes.checkpoints), str(eval_root))
    )
    reducer = Fake(lambda: modal_app._reduce_body(str(eval_root)))
    for name, fake in [
        ("list_checkpoints", lister),
        ("eval_checkpoint", evaluator),
        ("reduce_rows", reducer),
    ]:
        monkeypatch.setattr(modal_app, name, fake)

    modal_app.eval_parallel(num_episodes=4, num_envs=2)  # no CSV anywhere: everything
    assert [len(items) for items, _ in evaluator.calls] == [3]
    assert len(pd.read_csv(eval_root / "evaluation_results.csv")) == 3

    modal_app.eval_parallel(num_episodes=4, num_envs=2)  # the volume's CSV has them all
    assert len(evaluator.calls) == 1 and len(reducer.calls) == 1

    table = pd.read_csv(eval_root / "evaluation_results.csv")
    table.iloc[:1].to_csv(work / "evaluation_results.csv", index=False)  # a local CSV wins
    capsys.readouterr()
    modal_app.eval_parallel(num_episodes=4, num_envs=2)
    assert "2 to evaluate" in capsys.readouterr().out and len(evaluator.calls[-1][0]) == 2
    table = pd.read_csv(eval_root / "evaluation_results.csv")
    assert len(table) == 3 and table["checkpoint_path"].is_unique

    calls = len(lister.calls)
    with pytest.raises(SystemExit):
        modal_app.eval_parallel(task="BabyAI-NoSuchLevel-v0")
    assert len(lister.calls) == calls


def test_eval_all_body_evaluates_in_turn_and_merges(volumes, tmp_path):
    refs = modal_app._list_body(str(volumes.checkpoints), str(tmp_path))["refs"][:1]
    commits = []
    out = modal_app._eval_all_body(
        refs, EVAL_OPTIONS, str(volumes.checkpoints), str(tmp_path), commit=lambda: commits.append(1)
    )
    assert (out["merged"], out["rows"], len(commits)) == (1, 1, 1)
    assert out["results"][0]["checkpoint_path"] == refs[0]["path"]


def test_python_modal_app_help_lists_every_entrypoint_and_its_flags():
    """`python modal_app.py --help` explains the app offline (it printed nothing before); any other
    argument points at `modal run` with exit 2."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "modal_app.py"), "--help"], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0 and out.stderr == ""
    assert set(modal_app.entrypoints()) >= {
        "main",
        "main_seeds",
        "sweep",
        "eval_parallel",
        "eval_main",
        "lmc",
    }
    for name, entry in modal_app.entrypoints().items():
        assert f"  {name}: " in out.stdout
        for param in inspect.signature(entry.info.raw_f).parameters:
            assert "--" + param.replace("_", "-") in out.stdout
    bad = subprocess.run(
        [sys.executable, str(ROOT / "modal_app.py"), "main"], cwd=ROOT, capture_output=True, text=True
    )
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "modal run" in bad.stderr


# ----------------------------------------------------------------------------- GPUs (issue 33)


def test_functions_gpu_and_cpu_settings():
    """No decorator gives a GPU (Modal's with_options can add one, never take one away): the
    entrypoints add it per launch. Cores stay set for the env workers either way."""
    names = ("train_run", "train_all", "eval_checkpoint", "eval_all", "lmc_train", "lmc_evaluate")
    spec = {n: getattr(modal_app, n)._spec_ for n in names}
    assert {n: s.gpus for n, s in spec.items()} == dict.fromkeys(names)
    assert spec["train_run"].cpu == modal_app.TRAIN_CPUS
    assert spec["eval_checkpoint"].cpu == spec["eval_all"].cpu == modal_app.EVAL_CPUS
    defaults = {
        name: inspect.signature(getattr(modal_app, name).info.raw_f).parameters["gpu"].default
        for name in ("main", "eval_parallel", "eval_main")
    }
    assert defaults == {"main": "", "eval_parallel": modal_app.EVAL_GPU, "eval_main": ""}
    assert modal_app.check_gpu(modal_app.EVAL_GPU) == modal_app.EVAL_GPU


def test_train_all_gives_each_run_the_gpu_and_its_cores(monkeypatch):
    class Runner(Fake):
        def spawn(self, *args):
            self.calls.append(args)
            return types.SimpleNamespace(get=lambda: {"run_dir": "x"})

    runner = Runner()
    monkeypatch.setattr(modal_app, "train_run", runner)
    jobs = [{"label": "a", "overrides": {}, "script": "train_mop.py"}]
    assert modal_app.train_all.local(jobs, 2.0, "A10G") == [{"label": "a", "run_dir": "x"}]
    assert runner.options == [{"cpu": 2.0, "gpu": "A10G"}]
    modal_app.train_all.local(jobs, modal_app.TRAIN_CPUS, "")
    assert len(runner.options) == 1 and len(runner.calls) == 2  # the decorated CPU function as it is


@pytest.mark.parametrize(
    "text, spec",
    [
        ("T4", "T4"),
        ("t4", "T4"),
        (" L4 ", "L4"),
        ("a100-80gb:2", "A100-80GB:2"),
        ("H100!", "H100!"),
        ("", ""),
    ],
)
def test_gpu_specs_take_modals_spelling(text, spec):
    assert modal_app.check_gpu(text) == spec


def test_main_with_gpu_puts_each_learner_on_cuda(monkeypatch, capsys):
    launcher = Fake(lambda jobs, cpu, gpu: [{"label": j["label"], "skipped": "at update 5"} for j in jobs])
    monkeypatch.setattr(modal_app, "train_all", launcher)
    modal_app.main(task_ids=TASK, trials="0,1", gpu="t4")
    (jobs, cpu, gpu), _ = launcher.calls[-1]
    assert gpu == "T4" and cpu == modal_app.TRAIN_CPUS
    assert [j["overrides"]["device"] for j in jobs] == ["cuda", "cuda"]
    out = capsys.readouterr().out
    assert "the learner on a T4 GPU" in out and "idle" not in out
    modal_app.main(task_ids=TASK, trials="0", gpu="T4:2", set="device=cuda:1")
    assert launcher.calls[-1][0][0][0]["overrides"]["device"] == "cuda:1"
    modal_app.main(task_ids=TASK, trials="0")  # no GPU: config.yaml's device (auto) picks the CPU
    (jobs, _, gpu), _ = launcher.calls[-1]
    assert gpu == "" and "device" not in jobs[0]["overrides"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"gpu": "T44"}, "--gpu must be a Modal GPU type"),
        ({"gpu": "T4:0"}, "--gpu must be a Modal GPU type"),
        ({"gpu": "T4:x"}, "--gpu must be a Modal GPU type"),
        ({"set": "device=cuda"}, "has no GPU unless --gpu"),
        ({"set": "device=cpu", "gpu": "T4"}, "would sit idle"),
        ({"set": "device=cuda:1", "gpu": "T4"}, "gives each container 1 GPU(s)"),
        ({"set": "device=gpu"}, "device must be auto, cpu, cuda or cuda:N"),
    ],
)
def test_bad_gpu_and_device_settings_fail_here_in_one_line(monkeypatch, capsys, kwargs, message):
    launcher = Fake()
    monkeypatch.setattr(modal_app, "train_all", launcher)
    with pytest.raises(SystemExit) as exit_info:
        modal_app.main(task_ids=TASK, trials="0", **kwargs)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert message in err and launcher.calls == []


def test_eval_parallel_gives_each_checkpoint_a_gpu_unless_told_not_to(volumes, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    lister = Fake(lambda: modal_app._list_body(str(volumes.checkpoints), str(tmp_path / "eval")))
    evaluator = Fake(lambda ref, options: {"checkpoint_path": ref["path"], "device": options.eval.device})
    reducer = Fake(lambda: {"merged": 0, "rows": 0})
    for name, fake in [
        ("list_checkpoints", lister),
        ("eval_checkpoint", evaluator),
        ("reduce_rows", reducer),
    ]:
        monkeypatch.setattr(modal_app, name, fake)
    modal_app.eval_parallel(num_episodes=4, num_envs=2)
    assert evaluator.options == [{"gpu": "T4"}] and "a T4 GPU" in capsys.readouterr().out
    (_, kwargs) = evaluator.calls[-1]
    assert kwargs["options"].eval.device == "auto"  # the container's GPU, or its CPU without one
    modal_app.eval_parallel(num_episodes=4, num_envs=2, gpu="")
    assert len(evaluator.options) == 1 and len(evaluator.calls) == 2 and "CPU only" in capsys.readouterr().out
    one = Fake(lambda refs, options: {"results": [], "merged": 0, "rows": 0})
    monkeypatch.setattr(modal_app, "eval_all", one)
    modal_app.eval_main(num_episodes=4, num_envs=2, gpu="l4")
    assert one.options == [{"gpu": "L4"}]
    calls = len(lister.calls)
    with pytest.raises(SystemExit) as exit_info:
        modal_app.eval_parallel(gpu="T4 please")
    assert exit_info.value.code == 2 and len(lister.calls) == calls
    assert capsys.readouterr().err.startswith("error: --gpu must be a Modal GPU type")


def test_sweep_and_lmc_containers_refuse_a_cuda_device(monkeypatch, capsys):
    """They have CPUs only: device=cuda would stop every run in the cloud; it stops here instead."""
    with pytest.raises(modal_app.LaunchError, match="has no GPU unless --gpu"):
        modal_app.lmc_spec(TASK, 0, {}, set_text="device=cuda num_updates=100")
    monkeypatch.setattr(modal_app, "train_all", Fake())
    with pytest.raises(SystemExit):
        modal_app.sweep(task_id=TASK, lpc_alpha="0", seeds="0", set="device=cuda:0")
    assert "has no GPU unless --gpu" in capsys.readouterr().err


def test_help_without_modal_says_how_to_run_it_in_one_line(tmp_path):
    """Without the modal package, `python modal_app.py --help` prints how to run it (exit 0) and any
    other call is one line on stderr (exit 2), not a ModuleNotFoundError traceback. The names it
    lists are the file's entrypoints."""
    hide = tmp_path / "sitecustomize.py"
    hide.write_text(
        "import importlib.util as u\n_real = u.find_spec\n"
        "u.find_spec = lambda name, *a, **k: None if name == 'modal' else _real(name, *a, **k)\n"
    )
    env = {**__import__("os").environ, "PYTHONPATH": str(tmp_path)}
    ok = subprocess.run(
        [sys.executable, "modal_app.py", "--help"], capture_output=True, text=True, env=env, cwd=ROOT
    )
    assert ok.returncode == 0 and "Traceback" not in ok.stderr, ok.stderr
    line = ok.stdout.strip()
    assert "\n" not in line and "pip install modal" in line
    for name in modal_app.ENTRYPOINT_CHECKS:
        assert name in line
    bad = subprocess.run(
        [sys.executable, "modal_app.py", "train"], capture_output=True, text=True, env=env, cwd=ROOT
    )
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr


def test_the_modal_sweep_counts_its_grid_and_keeps_a_known_conditions_trial(monkeypatch, tmp_path):
    """As sweep.py: a grid past sweep.MAX_CONDITIONS is refused before it is built, and the same
    sweep run again with a value added in front keeps the trained condition at its trial (a new
    trial for the new one) instead of renumbering, so nothing is trained twice."""
    import sweep as grid_sweep

    monkeypatch.chdir(tmp_path)
    values = "|".join(str(v) for v in range(40))
    with pytest.raises(grid_sweep.SweepError, match="max_conditions"):
        modal_app.sweep_plan(TASK, "0", grid=f"lpc_alpha={values} lpc_exponent={values}")
    jobs, runs, seeds, _ = modal_app.sweep_plan(TASK, "0,1", lpc_alpha="0.001", name="s")
    grid_sweep.manifest("s", runs, ["modal", "run"])
    _, again, _, _ = modal_app.sweep_plan(TASK, "0,1", lpc_alpha="0.0001,0.001", name="s")
    by_alpha = {r["overrides"]["lpc_alpha"]: r["trial"] for r in again}
    assert by_alpha[0.001] == runs[0]["trial"] == 0 and by_alpha[0.0001] == 1


def test_volume_commits_follow_the_trainers_resume_points():
    # A commit interval longer than the resume points' lets a preemption lose resume points the
    # trainer already wrote (the earlier 600 s beside 5-minute points: up to 15 min lost, now 10).
    assert modal_app.COMMIT_EVERY_S == RESUME_POINT_MINUTES * 60
