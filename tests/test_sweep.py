"""sweep.py: the grid, the manifest (one record of trial -> α), resuming and skipping runs, and
modal_app.py::sweep's local side (Modal's CLI parses it; bad input is refused before any spawn)."""

import json

import pytest

import sweep
from conftest import TINY_PRESET, tiny_config
from mop import experiment

TASK = "BabyAI-GoToRedBallGrey-v0"


def test_alpha_and_seed_lists():
    assert sweep.parse_alphas("0,1e-6,1e-5") == [0.0, 1e-6, 1e-5]
    assert sweep.parse_seeds("0-2,5") == [0, 1, 2, 5]
    for bad, fn in (
        ("0,x", sweep.parse_alphas),
        ("1e-4,1e-4", sweep.parse_alphas),
        ("-1", sweep.parse_alphas),
    ):
        with pytest.raises(sweep.SweepError):
            fn(bad)
    for bad in ("a-b", "", "1,1", "3-1x"):
        with pytest.raises(sweep.SweepError):
            sweep.parse_seeds(bad)


def test_plan_validates_every_run_and_the_manifest_maps_trials_to_alpha(tmp_path):
    runs = sweep.plan(TASK, [0.0, 1e-4], [0, 1], 3, {"num_updates": 2}, TINY_PRESET)
    assert [(r["trial"], r["seed"], r["lpc_alpha"]) for r in runs] == [
        (3, 0, 0.0),
        (3, 1, 0.0),
        (4, 0, 1e-4),
        (4, 1, 1e-4),
    ]
    with pytest.raises(sweep.SweepError, match="set by the sweep"):
        sweep.plan(TASK, [0.0], [0], 0, {"seed": 3}, TINY_PRESET)
    with pytest.raises(experiment.ConfigError, match="lr"):
        sweep.plan(TASK, [0.0], [0], 0, {"lr": -1}, TINY_PRESET)
    path = sweep.manifest("grid", runs, ["python", "sweep.py", "--seeds", "0-1"], tmp_path)
    doc = json.loads(path.read_text())
    assert doc["trials"] == {"3": 0.0, "4": 1e-4} and doc["seeds"] == [0, 1]
    assert doc["command"] == "python sweep.py --seeds 0-1" and doc["settings"]["num_updates"] == 2
    other = sweep.plan(TASK, [1e-3], [0], 3, {}, TINY_PRESET)
    with pytest.raises(sweep.SweepError, match="maps trial 3"):
        sweep.manifest("grid", other, ["python"], tmp_path)


def test_cli_refuses_bad_input_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for argv, message in (
        (["--task_id", TASK, "--seeds", "0"], "--lpc_alpha"),
        (["--task_id", TASK, "--lpc_alpha", "0", "--seeds", "0", "--trial", "2"], "set by the sweep"),
        (["--task_id", TASK, "--lpc_alpha", "0,x", "--seeds", "0"], "--lpc_alpha"),
        (["--task_id", TASK, "--lpc_alpha", "0", "--seeds", "0", "--parallel", "0"], "--parallel"),
    ):
        with pytest.raises(SystemExit) as e:
            sweep.main(["--config", str(TINY_PRESET), *argv])
        err = capsys.readouterr().err
        assert e.value.code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "checkpoints").exists()


def test_a_finished_run_is_skipped_and_a_killed_one_resumes(tmp_path):
    cfg = tiny_config(tmp_path / "ck", task_id=TASK, trial=0, seed=0, num_updates=3, checkpoint_interval=3)
    overrides = {k: getattr(cfg, k) for k in ("task_id", "trial", "seed", "lpc_alpha", "checkpoint_dir")}
    overrides |= {"num_updates": 3, "checkpoint_interval": 3}
    first = sweep.train_one(overrides, TINY_PRESET)
    assert first["resumed"] is False
    assert "already at update 3" in sweep.train_one(overrides, TINY_PRESET)["skipped"]
    longer = sweep.train_one({**overrides, "num_updates": 6}, TINY_PRESET)  # as after a kill at 3
    assert longer["resumed"] is True
    assert experiment.newest_checkpoint(experiment.run_dir(cfg), report=False)[1]["update"] == 6


# ----------------------------------------------------------------------------- modal_app.py::sweep

modal = pytest.importorskip("modal", reason="the Modal client is not installed")


class Launcher:
    def __init__(self):
        self.calls = []

    def remote(self, jobs, cpu, gpu):
        self.calls.append((jobs, cpu, gpu))
        return [{"label": j["label"], "skipped": "already at update 5"} for j in jobs]

    def spawn(self, *args, **kwargs):
        raise AssertionError("spawn must not be called")


def test_modal_sweep_parses_and_launches_one_job_per_alpha_and_seed(monkeypatch, tmp_path, capsys):
    from modal.cli.run import _get_click_command_for_local_entrypoint as command

    import modal_app

    args = ["--task-id", "BabyAI-UnlockPickup-v0", "--lpc-alpha", "0,1e-6,1e-5", "--seeds", "0-1"]
    args += ["--num-updates", "50", "--first-trial", "20"]
    params = command(modal_app.app, modal_app.sweep).make_context("modal run", args).params
    assert (params["lpc_alpha"], params["seeds"], params["first_trial"], params["num_updates"]) == (
        "0,1e-6,1e-5",
        "0-1",
        20,
        50,
    )
    monkeypatch.chdir(tmp_path)
    launcher = Launcher()
    monkeypatch.setattr(modal_app, "train_all", launcher)
    modal_app.sweep(**params)
    ((jobs, cpu, _),) = launcher.calls
    assert [(j["overrides"]["trial"], j["overrides"]["seed"], j["overrides"]["lpc_alpha"]) for j in jobs] == [
        (20, 0, 0.0),
        (20, 1, 0.0),
        (21, 0, 1e-6),
        (21, 1, 1e-6),
        (22, 0, 1e-5),
        (22, 1, 1e-5),
    ]
    assert all(j["overrides"]["num_updates"] == 50 for j in jobs) and cpu == modal_app.TRAIN_CPUS
    doc = json.loads((tmp_path / "sweeps" / "BabyAI-UnlockPickup-v0_trial20-22.json").read_text())
    assert doc["trials"] == {"20": 0.0, "21": 1e-6, "22": 1e-5}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"lpc_alpha": "0,x"}, "--lpc_alpha"),
        ({"seeds": "a"}, "--seeds"),
        ({"task_id": "BabyAI-NoSuchLevel-v0"}, "task_id"),
        ({"set": "lpc_alpha=1e-3"}, "lpc_alpha is set by --lpc-alpha"),
        ({"set": "seed=3"}, "--seeds"),
        ({"set": "lr=-1"}, "lr"),
    ],
)
def test_modal_sweep_refuses_bad_input_before_any_spawn(monkeypatch, tmp_path, capsys, kwargs, message):
    import modal_app

    monkeypatch.chdir(tmp_path)
    launcher = Launcher()
    monkeypatch.setattr(modal_app, "train_all", launcher)
    base = {"task_id": TASK, "lpc_alpha": "0,1e-4", "seeds": "0-1"}
    with pytest.raises(SystemExit) as e:
        modal_app.sweep(**(base | kwargs))
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and err.count("\n") == 1, err
    assert launcher.calls == [] and not (tmp_path / "sweeps").exists()


# ----------------------------------------------------------------------------- the grid over any key


def test_grid_values_are_yaml_with_list_repetition_and_bad_factors_are_refused():
    grid = sweep.parse_grid(
        ["lpc_alpha=0|1e-3", "expert_hidden_sizes=[[0,16,32]]*3|[[17, 17, 17]]*3 normalize_lpc=false|true"]
    )
    assert grid["lpc_alpha"] == [0, "1e-3"]  # YAML 1.1 reads 1e-3 as text: the schema types it
    assert grid["expert_hidden_sizes"] == [[[0, 16, 32]] * 3, [[17, 17, 17]] * 3]
    assert grid["normalize_lpc"] == [False, True]
    for item, message in (
        ("lpc_alfa=0|1", "did you mean 'lpc_alpha'"),
        ("lpc_alpha=0", "a factor must vary"),
        ("lpc_alpha=0|0", "repeats a value"),
        ("seed=0|1", "set by the sweep"),
        ("num_workers=0|1", "does not change what a run learns"),
        ("policy=mop|lstm", "policy takes"),
        ("expert_hidden_sizes=[[0,8]]*0|[[0,8]]", "repeats a list"),
        ("lpc_alpha", "KEY=V1|V2"),
    ):
        with pytest.raises((sweep.SweepError, experiment.ConfigError), match=message.replace("|", r"\|")):
            sweep.parse_grid([item])
    assert sweep.parse_recipe("policy=gru hidden_size=match") == {"policy": "gru", "hidden_size": "match"}
    # without a grid, the settings alone are one condition beside the recipes (MoP and its matched GRU)
    assert sweep.expand({}, [{"policy": "gru", "hidden_size": "match"}]) == [
        {},
        {"policy": "gru", "hidden_size": "match"},
    ]
    assert sweep.factors_of({}, [{"policy": "gru"}]) == ["policy_type"]


def test_plan_gives_each_condition_a_trial_and_refuses_two_conditions_of_one_recipe():
    points = sweep.expand({"lpc_alpha": [0.0, 1e-3]}, [{"policy": "gru", "hidden_size": "match"}])
    runs = sweep.plan_runs(TASK, points, [0, 1], 10, {"num_updates": 2}, TINY_PRESET)
    assert [(r["trial"], r["seed"], r["policy"]) for r in runs] == [
        (10, 0, "mop"), (10, 1, "mop"), (11, 0, "mop"), (11, 1, "mop"), (12, 0, "gru"), (12, 1, "gru"),
    ]  # fmt: skip
    gru = runs[-1]
    assert gru["match"] and gru["overrides"]["hidden_size"] == gru["match"]["hidden_size"]
    assert len({r["condition"] for r in runs}) == 3 and runs[0]["condition"] == runs[1]["condition"]
    # a GRU on a grid over a MoP key: the same recipe twice
    with pytest.raises(sweep.SweepError, match="one recipe"):
        sweep.plan_runs(TASK, sweep.expand({"lpc_alpha": [0.0, 1e-3], "policy": ["mop", "gru"]}, []), [0], 0, {},
                        TINY_PRESET)  # fmt: skip
    with pytest.raises(sweep.SweepError, match="policy=gru"):
        sweep.plan_runs(TASK, [{"hidden_size": "match"}], [0], 0, {}, TINY_PRESET)


def test_seeds_are_bounded_before_any_list_is_built():
    with pytest.raises(sweep.SweepError, match="more than 1000 seeds"):
        sweep.parse_seeds("0-100000000")
    with pytest.raises(sweep.SweepError, match="at most"):
        sweep.parse_seeds(f"{2**32}")


def test_cli_checks_everything_before_training(tmp_path, capsys, monkeypatch):
    """--num_episodes 0, a corrupt manifest, a sweeps folder that is a file: one line, nothing trained."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "bad.json").write_text('{"trials": ')
    (tmp_path / "a_file").write_text("x")
    base = ["--config", str(TINY_PRESET), "--task_id", TASK, "--grid", "lpc_alpha=0|1e-3", "--seeds", "0-1"]
    for extra, message in (
        (["--num_episodes", "0"], "--num_episodes"),
        (["--name", "bad"], "unreadable"),
        (["--sweeps_dir", str(tmp_path / "a_file")], "--sweeps_dir"),
        (["--knockout", "layer_x"], "--knockout"),
        (["--seeds", "0-100000000"], "more than 1000"),
        (["--grid", "lr=1e-3|-1"], "lr"),
    ):
        with pytest.raises(SystemExit) as e:
            sweep.main([*base, *extra])
        err = capsys.readouterr().err
        assert e.value.code == 2 and message in err and err.count("\n") == 1, (extra, err)
    assert not (tmp_path / "checkpoints").exists()
    assert sorted(p.name for p in (tmp_path / "sweeps").iterdir()) == ["bad.json"]


def test_manifest_maps_runs_to_conditions_and_refuses_a_changed_condition(tmp_path):
    runs = sweep.plan_runs(TASK, [{"lpc_alpha": 0.0}, {"lpc_alpha": 1e-3}], [0, 1], 0, {}, TINY_PRESET)
    path = sweep.manifest("grid", runs, ["python", "sweep.py"], tmp_path, {"factors": ["lpc_alpha"]})
    doc = json.loads(path.read_text())
    assert [(r["trial"], r["seed"]) for r in doc["runs"]] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert doc["conditions"]["1"]["label"] == "MoP α=0.001" and doc["factors"] == ["lpc_alpha"]
    assert doc["runs"][2]["condition"] == doc["conditions"]["1"]["condition"]
    # the same plan again (a resumed sweep): accepted, the runs not repeated
    sweep.manifest("grid", runs, ["python", "sweep.py"], tmp_path)
    assert len(json.loads(path.read_text())["runs"]) == 4
    other = sweep.plan_runs(TASK, [{"lpc_alpha": 0.0}, {"lpc_alpha": 1e-2}], [0], 0, {}, TINY_PRESET)
    with pytest.raises(sweep.SweepError, match="maps trial 1 to condition"):
        sweep.manifest("grid", other, ["python"], tmp_path)


def test_modal_sweep_takes_a_grid_and_recipes(monkeypatch, tmp_path):
    import modal_app

    monkeypatch.chdir(tmp_path)
    launcher = Launcher()
    monkeypatch.setattr(modal_app, "train_all", launcher)
    modal_app.sweep(
        task_id=TASK,
        seeds="0-1",
        grid="lpc_alpha=0|1e-3 expert_hidden_sizes=[[0,16,32]]*3|[[17,17,17]]*3",
        recipes="policy=gru hidden_size=match ; policy=mop expert_dropout_beta=0.5",
        first_trial=0,
    )
    ((jobs, _, _),) = launcher.calls
    assert len(jobs) == 6 * 2
    scripts = {j["overrides"]["trial"]: j["script"] for j in jobs}
    assert scripts == {0: "train_mop.py", 1: "train_mop.py", 2: "train_mop.py", 3: "train_mop.py", 4: "train.py",
                       5: "train_mop.py"}  # fmt: skip
    gru = next(j for j in jobs if j["script"] == "train.py")
    assert gru["overrides"]["hidden_size"] == 116  # the default recipe's matched size
    assert [j["overrides"]["expert_hidden_sizes"] for j in jobs[:4:2]] == [
        [[0, 16, 32]] * 3,
        [[17, 17, 17]] * 3,
    ]
    doc = json.loads((tmp_path / "sweeps" / f"{TASK}_trial0-5.json").read_text())
    assert doc["factors"] == ["lpc_alpha", "expert_hidden_sizes", "policy_type"] and len(doc["runs"]) == 12
