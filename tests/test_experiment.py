"""Tier 1: config schema and CLI errors, checkpoints; tier 2: tiny real training runs."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import train
import train_mop
from conftest import tiny_config
from mixture_of_experts import GRUPolicy, MixtureOfExpertsPolicy, build_policy
from mop.experiment import (
    ConfigError,
    TrainConfig,
    build_arg_parser,
    config_from_args,
    load_checkpoint,
    load_config,
    read_metrics,
    recipe_keys,
    run_dir,
    save_checkpoint,
)

ROOT = Path(__file__).resolve().parent.parent


def test_config_yaml_matches_the_schema_defaults():
    from_file = load_config(ROOT / "config.yaml")
    assert from_file == TrainConfig()  # config.yaml is the documented copy of the defaults


@pytest.mark.parametrize("preset", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_config_preset_loads(preset):
    """configs/*.yaml: the tiny preset and the per-level recipes (configs/<level>.yaml, which
    bench/levels.py picks up for its level) are valid configs; a level recipe names its level."""
    cfg = load_config(preset)
    if preset.stem.startswith("BabyAI-"):
        assert cfg.task_id == preset.stem


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"num_envs": 0}, "num_envs"),
        ({"unroll_len": -3}, "unroll_len"),
        ({"lr": "fast"}, "lr"),
        ({"num_updates": 2.5}, "num_updates"),
        ({"expert_hidden_sizes": "[[0,16],[8,-1]]"}, "expert_hidden_sizes"),
        ({"expert_hidden_sizes": "[[0,16"}, "expert_hidden_sizes"),
        ({"task_id": "BabyAI-GoToLocl-v0"}, "GoToLocal"),
        ({"teacher_forcing": 1.5}, "teacher_forcing"),
        ({"obs_encoding": "raw", "input_encoder": "bilinear"}, "onehot"),
        ({"num_envz": 4}, "num_envs"),
        ({"obs_encoding": "raw", "input_encoder": "film"}, "input_encoder 'film' .* obs_encoding 'onehot'"),
        ({"input_encoder": "cnn"}, "input_encoder"),
        ({"trunk_channels": 0}, "trunk_channels"),
        ({"epochs": 0}, "epochs must be >= 1"),
        ({"epochs": 1.5}, "epochs"),
        ({"entropy_coef": -0.01}, "entropy_coef must be >= 0"),
        ({"entropy_coef": "nan"}, "entropy_coef"),
        ({"entropy_coef": float("inf")}, "entropy_coef"),
        ({"layer_norm_residual": "maybe"}, "layer_norm_residual"),
    ],
)
def test_bad_values_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_yaml_problems(tmp_path):
    (tmp_path / "typo.yaml").write_text("lpc_alpa: 0.1\n")
    with pytest.raises(ConfigError, match="did you mean 'lpc_alpha'"):
        load_config(tmp_path / "typo.yaml")
    (tmp_path / "broken.yaml").write_text("num_envs: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "broken.yaml")
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml")


def test_cli_flags_override_yaml_and_mop_layers_alias(tmp_path):
    (tmp_path / "c.yaml").write_text("num_envs: 4\nlr: 0.01\n")
    parser = build_arg_parser("x")
    args = parser.parse_args(
        [
            "--config",
            str(tmp_path / "c.yaml"),
            "--lr",
            "1e-4",
            "--normalize_lpc",
            "--mop_layers",
            "16,32,64;32,64,128",
            "--max_steps",
            "null",
        ]
    )
    cfg, resume = config_from_args(args)
    assert (cfg.num_envs, cfg.lr, cfg.normalize_lpc, resume, cfg.max_steps) == (4, 1e-4, True, False, None)
    assert cfg.expert_hidden_sizes == [[16, 32, 64], [32, 64, 128]]


def test_every_config_key_is_a_documented_flag():
    help_text = build_arg_parser("x").format_help()
    for key in TrainConfig.__dataclass_fields__:
        assert f"--{key}" in help_text


def run_cli(*args, cwd):
    return subprocess.run(
        [sys.executable, str(ROOT / "train_mop.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--task_id", "BabyAI-GoToLocl-v0"], "BabyAI-GoToLocal-v0"),
        (["--expert_hidden_sizes", "[[0,16],[x]]"], "expert_hidden_sizes"),
        (["--num_envs", "0"], "num_envs"),
        (["--config", "nope.yaml"], "nope.yaml"),
        (["--resume"], "no checkpoint to resume"),
        (["--epochs", "0"], "epochs"),
        (["--entropy_coef", "-1"], "entropy_coef"),
        (["--input_encoder", "film", "--obs_encoding", "raw"], "obs_encoding 'onehot'"),
    ],
)
def test_cli_bad_input_is_one_line_and_nonzero(tmp_path, args, message):
    result = run_cli(*args, "--checkpoint_dir", str(tmp_path / "ck"), cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "ck").exists()  # a failed start writes nothing


def test_checkpoint_round_trip_and_corrupt_file(tmp_path):
    policy = build_policy(
        {
            "input_dim": 152,
            "lang_dim": 8,
            "num_actions": 7,
            "intermediate_dim": 16,
            "router_hidden_size": 8,
            "expert_hidden_sizes": [[0, 8]],
        }
    )
    save_checkpoint(tmp_path / "c.pt", {"policy_state_dict": policy.state_dict(), "config": {"a": [1, 2]}})
    loaded = load_checkpoint(tmp_path / "c.pt")
    for k, v in policy.state_dict().items():
        torch.testing.assert_close(loaded["policy_state_dict"][k], v)
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temp files left behind
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="corrupt"):
        load_checkpoint(tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="does not exist"):
        load_checkpoint(tmp_path / "none.pt")


# ----------------------------------------------------------------------------- tier 2: real runs


def tiny(tmp_path, **kw):
    """configs/tiny.yaml, 4 updates with checkpoints every 2."""
    overrides = dict(num_updates=4, log_interval=2, checkpoint_interval=2, path_ratio_fraction=0.5)
    return tiny_config(tmp_path / "ck", **{**overrides, **kw})


@pytest.mark.slow
def test_tiny_real_training_run_writes_loadable_checkpoints(tmp_path):
    cfg = tiny(tmp_path, seed=1, lpc_alpha=1e-4, normalize_lpc=True)
    summary = train_mop.main(cfg, progress=False)
    directory = tmp_path / "ck" / "BabyAI-GoToRedBallGrey-v0" / "trial_0" / "seed_1"
    assert Path(summary["run_dir"]) == directory == run_dir(cfg)
    assert sorted(p.name for p in directory.glob("*.pt")) == [  # the last update: numbered + final link
        "checkpoint_2.pt",
        "checkpoint_4.pt",
        "checkpoint_final.pt",
    ]
    assert (directory / "checkpoint_4.pt").samefile(directory / "checkpoint_final.pt")
    written = json.loads((directory / "config.json").read_text())
    assert written["task_id"] == "BabyAI-GoToRedBallGrey-v0" and (
        written["seed"],
        written["replicate_seed"],
    ) == (1, 1)
    ckpt = torch.load(directory / "checkpoint_final.pt", weights_only=True)
    for key in (
        "task_id",
        "trial",
        "input_dim",
        "intermediate_dim",
        "expert_hidden_sizes",
        "router_hidden_size",
        "num_actions",
        "lang_dim",
        "lr",
        "lpc_alpha",
        "num_updates",
        "unroll_len",
        "max_steps",
        "seed",
        "update",
    ):
        assert key in ckpt["config"], key
    assert ckpt["update"] == 4 and ckpt["config"]["effective_max_steps"] > 0
    policy = build_policy(ckpt["config"])
    policy.load_state_dict(ckpt["policy_state_dict"])
    assert isinstance(policy, MixtureOfExpertsPolicy)
    rows = read_metrics(directory / "metrics.jsonl")
    assert [r["update"] for r in rows] == [2, 4]
    for r in rows:
        assert torch.isfinite(torch.tensor(r["train/loss"])) and r["train/lpc"] > 0
        assert "routing/layer_1/expert_1" in r and r["perf/frames_per_s"] > 0 and r["perf/rss_mb"] > 50
        # where the time went: acting, learning, waiting, sending weights (seconds per update)
        assert r["perf/collect_s"] > 0 and r["perf/learn_s"] > 0
        assert r["perf/wait_s"] >= 0 and r["perf/submit_s"] >= 0


@pytest.mark.slow
def test_a_run_without_seed_records_seed_0_explicitly_and_keeps_its_folder(tmp_path):
    """Issue 40: every run records its seed; one trained without --seed is seed 0 (replicate_seed)
    while `seed` stays null, the key that keeps it in trial_<N>/ (not seed_0/) on --resume."""
    cfg = tiny(tmp_path)
    directory = Path(train_mop.main(cfg, progress=False)["run_dir"])
    assert directory == tmp_path / "ck" / "BabyAI-GoToRedBallGrey-v0" / "trial_0"
    written = json.loads((directory / "config.json").read_text())
    assert (written["seed"], written["replicate_seed"]) == (None, 0)
    assert "replicate_seed" not in recipe_keys(written)  # not a recipe key: never splits a condition


def test_same_seed_same_loss_curve(tmp_path):
    a = train_mop.main(tiny(tmp_path / "a", seed=3), progress=False)
    b = train_mop.main(tiny(tmp_path / "b", seed=3), progress=False)
    c = train_mop.main(tiny(tmp_path / "c", seed=4), progress=False)
    losses = [[r["train/loss"] for r in read_metrics(s["metrics_path"])] for s in (a, b, c)]
    assert losses[0] == losses[1]
    assert losses[0] != losses[2]


@pytest.mark.slow
def test_existing_run_is_not_overwritten_and_resume_continues(tmp_path):
    train_mop.main(tiny(tmp_path, num_updates=2), progress=False)
    directory = tmp_path / "ck" / "BabyAI-GoToRedBallGrey-v0" / "trial_0"
    before = (directory / "checkpoint_final.pt").read_bytes()
    from mop.runs import HOLDS_CHECKPOINTS  # levels.py and the README walk continue on this refusal

    with pytest.raises(ConfigError, match=re.escape(HOLDS_CHECKPOINTS)):
        train_mop.main(tiny(tmp_path, num_updates=4), progress=False)
    assert (directory / "checkpoint_final.pt").read_bytes() == before
    with open(directory / "metrics.jsonl", "a") as f:  # a row logged after the last checkpoint, then killed
        f.write(json.dumps({"update": 3, "train/loss": 9.9}) + "\n")
    train_mop.main(tiny(tmp_path, num_updates=4), resume=True, progress=False)
    ckpt = torch.load(directory / "checkpoint_final.pt", weights_only=True)
    assert ckpt["update"] == 4
    assert [r["update"] for r in read_metrics(directory / "metrics.jsonl")] == [2, 4]
    first_seeds = {s["episode_index"] for s in ckpt["collector_state"]}
    assert min(first_seeds) > 0  # episode counters continued, so no layout was replayed
    with pytest.raises(ConfigError, match="already reached update 4"):
        train_mop.main(tiny(tmp_path, num_updates=4), resume=True, progress=False)


@pytest.mark.slow
def test_gru_baseline_writes_the_same_formats(tmp_path):
    summary = train.main(tiny(tmp_path), progress=False)
    ckpt = torch.load(Path(summary["run_dir"]) / "checkpoint_final.pt", weights_only=True)
    assert ckpt["config"]["policy_type"] == "gru"
    policy = build_policy(ckpt["config"])
    policy.load_state_dict(ckpt["policy_state_dict"])
    assert isinstance(policy, GRUPolicy)
    rows = read_metrics(summary["metrics_path"])
    assert json.dumps(rows) and all("train/lpc" not in r for r in rows) and rows[-1]["update"] == 4


@pytest.mark.slow
def test_parallel_workers_train(tmp_path):
    summary = train_mop.main(
        tiny(tmp_path, num_workers=2, num_updates=2, checkpoint_interval=None), progress=False
    )
    assert Path(summary["checkpoints"][-1]).name == "checkpoint_final.pt"


def test_config_changes_names_recipe_keys_and_reads_missing_keys_as_defaults():
    from mop.experiment import _DEFAULTS, config_changes, recipe_keys

    overrides = {"lr_final": 3e-4, "lr_decay_updates": 5, "num_updates": 7, "num_workers": 0}
    cfg = recipe_keys(load_config(None, overrides))
    assert "num_updates" not in cfg and "checkpoint_dir" not in cfg and cfg["lr_final"] == 3e-4
    assert config_changes(cfg, {**cfg, "num_updates": 99, "log_interval": 1}) == []  # resumable keys
    assert config_changes(cfg, {**cfg, "lr_final": 1e-3}) == ["lr_final: 0.0003 -> 0.001"]
    # A config written before a key existed (an older run's config.json) counts it as its default.
    older = {k: v for k, v in cfg.items() if k != "fast_env"}
    assert config_changes(older, {**cfg, "fast_env": _DEFAULTS["fast_env"]}) == []
    assert config_changes(older, {**cfg, "fast_env": not _DEFAULTS["fast_env"]}) != []
    # Values are compared as the schema reads them: [[0, 16]] and "0,16" are one expert list.
    sizes = {**cfg, "expert_hidden_sizes": [[0, 16]]}
    assert config_changes(sizes, {**cfg, "expert_hidden_sizes": ["0,16"]}) == []


def test_a_run_from_before_bot_revision_resumes_with_the_bot_it_had(tmp_path):
    """A config without bot_revision was written when the labelling bot was minigrid's (revision
    0): its recipe differs from today's, a resume continues with that bot, and a resume that asks
    for another is refused; a new config gets today's, and an unknown revision is refused."""
    from mop.experiment import config_changes, recipe_keys, recipe_value, resume_config

    cfg = recipe_keys(load_config(None, {}))
    assert cfg["bot_revision"] == 1 and recipe_value({}, "bot_revision") == 0
    older = {k: v for k, v in cfg.items() if k != "bot_revision"}
    assert config_changes(older, cfg) == ["bot_revision: 0 -> 1"]
    # BC alone: the bot drives every demo, where both revisions act alike: no split, no refusal
    bc = {**cfg, "demos": 100, "demo_updates": 0}
    before = {k: v for k, v in bc.items() if k != "bot_revision"}
    assert recipe_value(bc, "bot_revision") is None and config_changes(before, bc) == []
    dagger = {"demo_updates": 50}  # BC, then DAgger on the student's states: the revisions differ
    assert config_changes(before | dagger, bc | dagger) == ["bot_revision: 0 -> 1"]
    train_mop.main(tiny(tmp_path, num_updates=2), progress=False)
    directory = tmp_path / "ck" / "BabyAI-GoToRedBallGrey-v0" / "trial_0"
    for path in directory.glob("checkpoint_*.pt"):  # as a run of 2026-11-29 wrote it
        ckpt = torch.load(path, weights_only=True)
        ckpt["config"].pop("bot_revision", None)  # (final may be a link to the last numbered one)
        torch.save(ckpt, path)
    located = {"checkpoint_dir": str(tmp_path / "ck"), "task_id": "BabyAI-GoToRedBallGrey-v0"}
    assert resume_config(None, located).bot_revision == 0
    with pytest.raises(ConfigError, match="bot_revision=1 differs"):
        resume_config(None, {**located, "bot_revision": 1})
    with pytest.raises(ConfigError, match="^bot_revision must be one of 0, 1, got 2$"):
        load_config(None, {"bot_revision": 2})


def test_a_config_may_build_on_a_base_file(tmp_path):
    (tmp_path / "maze.yaml").write_text("unroll_len: 64\nlr: 0.002\nmop_intermediate_dim: 96\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "level.yaml").write_text("base: ../maze.yaml\ntask_id: BabyAI-GoTo-v0\nlr: 0.001\n")
    (tmp_path / "top.yaml").write_text("base: sub/level.yaml\nintermediate_dim: 32\n")
    cfg = load_config(tmp_path / "sub" / "level.yaml")  # base relative to the file, not the cwd
    assert (cfg.task_id, cfg.unroll_len, cfg.lr, cfg.intermediate_dim) == ("BabyAI-GoTo-v0", 64, 0.001, 96)
    top = load_config(tmp_path / "top.yaml", {"lr": 0.003})  # a chain; the child's alias spelling wins
    assert (top.task_id, top.unroll_len, top.lr, top.intermediate_dim) == ("BabyAI-GoTo-v0", 64, 0.003, 32)

    bad = {
        "base: itself.yaml\n": "leads back to itself",
        "base: [a.yaml]\n": "base must name a YAML file",
        "base: missing.yaml\n": "cannot read config",
        "base: maze.yaml\nlrr: 1\n": "unknown key 'lrr'",
    }
    for text, message in bad.items():
        (tmp_path / "itself.yaml").write_text(text)
        with pytest.raises(ConfigError, match=message):
            load_config(tmp_path / "itself.yaml")
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="leads back to itself"):
        load_config(tmp_path / "a.yaml")


def test_the_per_level_recipes_that_build_on_the_maze_recipe_resolve_to_it():
    from mop.experiment import config_changes, recipe_keys

    maze = recipe_keys(load_config(ROOT / "configs" / "BabyAI-GoToObjMaze-v0.yaml"))
    for level in ("GoTo", "Pickup", "Unlock", "Synth", "GoToImpUnlock"):
        cfg = load_config(ROOT / "configs" / f"BabyAI-{level}-v0.yaml")
        assert config_changes(maze, recipe_keys(cfg)) == [
            f"task_id: 'BabyAI-GoToObjMaze-v0' -> 'BabyAI-{level}-v0'"
        ]


def test_a_bc_run_resumes_into_dagger_under_a_config_file_with_a_buffer(tmp_path):
    """--resume --demo_updates K continues a BC run (--demos, buffer 0) under a config file that
    sets buffer_episodes: the file and flags only locate the run, so their mix (--demos beside a
    buffer, refused for a new run) is not refused; the run's recipe is. Failed before the fix
    with the new-run message that asked for the --demo_updates that was given."""
    from mop.experiment import resume_config

    preset = tmp_path / "maze.yaml"
    preset.write_text("task_id: BabyAI-GoToRedBallGrey-v0\nbuffer_episodes: 50\n")
    flags = {"checkpoint_dir": str(tmp_path / "ck"), "demos": 10}
    with pytest.raises(ConfigError, match="give one of them"):  # a new run with this mix: refused
        load_config(preset, flags)
    bc = load_config(preset, {**flags, "buffer_episodes": 0, "num_updates": 4})
    save_checkpoint(
        run_dir(bc) / "checkpoint_4.pt", {"update": 4, "config": vars(bc), "policy_state_dict": {}}
    )
    resumed = resume_config(preset, {**flags, "num_updates": 8, "demo_updates": 4})
    assert (resumed.demos, resumed.buffer_episodes, resumed.demo_updates) == (10, 0, 4)
    with pytest.raises(ConfigError, match="buffer_episodes"):  # a recipe key given: compared as always
        resume_config(preset, {**flags, "num_updates": 8, "demo_updates": 4, "buffer_episodes": 50})
    with pytest.raises(ConfigError, match="task_id"):  # a bad level is still the level's one line
        resume_config(preset, {**flags, "task_id": "BabyAI-Nope-v0"})


# ----------------------------------------------------------------------------- issue 32


ISSUE_32_KEYS = dict(
    layer_norm_residual=True, input_encoder="film", trunk_channels=8, epochs=2, entropy_coef=0.01
)


@pytest.mark.slow
def test_papers_block_trunk_epochs_and_entropy_train_round_trip_and_resume(tmp_path):
    from conftest import TINY_PRESET
    from mop.experiment import load_policy, resume_config

    train_mop.main(tiny(tmp_path, num_updates=2, **ISSUE_32_KEYS), progress=False)
    directory = tmp_path / "ck" / "BabyAI-GoToRedBallGrey-v0" / "trial_0"
    overrides = {"checkpoint_dir": str(tmp_path / "ck"), "num_updates": 4, **ISSUE_32_KEYS}
    assert resume_config(TINY_PRESET, overrides).epochs == 2  # what --resume reads back
    with pytest.raises(ConfigError, match="epochs"):  # a recipe key may not change on --resume
        resume_config(TINY_PRESET, {**overrides, "epochs": 3})
    train_mop.main(tiny(tmp_path, num_updates=4, **ISSUE_32_KEYS), resume=True, progress=False)
    ckpt = torch.load(directory / "checkpoint_final.pt", weights_only=True)
    assert ckpt["update"] == 4
    for key, value in ISSUE_32_KEYS.items():
        assert ckpt["config"][key] == value, key
    # epochs=2: two Adam steps per update
    assert all(int(state["step"]) == 8 for state in ckpt["optimizer_state_dict"]["state"].values())
    policy, encoder, _ = load_policy(directory / "checkpoint_final.pt")
    assert policy.layers[0].norm is not None and policy.input_projection.channels == 8
    for name, value in policy.state_dict().items():
        assert torch.equal(value, ckpt["policy_state_dict"][name]), name
    rows = read_metrics(directory / "metrics.jsonl")
    assert [r["update"] for r in rows] == [2, 4]
    for r in rows:
        assert r["train/epochs"] == 2 and 0 < r["train/entropy"] <= torch.log(torch.tensor(7.0)).item() + 1e-6
        assert "train/ce_last_epoch" in r


@pytest.mark.slow
def test_the_entropy_bonus_enters_the_loss_and_the_trunk_feeds_the_gru_baseline(tmp_path):
    def final_weights(name, **kw):
        summary = train_mop.main(
            tiny(tmp_path / name, num_updates=1, checkpoint_interval=None, **kw), progress=False
        )
        return torch.load(summary["checkpoints"][-1], weights_only=True)["policy_state_dict"]

    a, b, c = final_weights("a"), final_weights("b", entropy_coef=0.0), final_weights("c", entropy_coef=0.5)
    assert all(torch.equal(a[k], b[k]) for k in a)  # 0 is off: the same run as without the key
    assert not all(torch.equal(a[k], c[k]) for k in a)
    summary = train.main(tiny(tmp_path / "gru", input_encoder="film", trunk_channels=8), progress=False)
    ckpt = torch.load(Path(summary["run_dir"]) / "checkpoint_final.pt", weights_only=True)
    policy = build_policy(ckpt["config"])
    policy.load_state_dict(ckpt["policy_state_dict"])
    assert isinstance(policy, GRUPolicy) and policy.input_projection.channels == 8


@pytest.mark.slow
def test_tensorboard_logger_writes_the_metrics_scalars(tmp_path):
    """--logger tensorboard: every finite number of every metrics.jsonl row is a scalar of the event
    file at its update, read back by our reader and by protobuf itself (an Event message built
    from TensorBoard's field numbers), framed with valid CRCs."""
    from mop.event_file import read_events, read_scalars

    summary = train_mop.main(tiny(tmp_path, logger="tensorboard"), progress=False)
    rows = read_metrics(summary["metrics_path"])
    events_dir = Path(summary["run_dir"]) / "tensorboard"
    scalars = read_scalars(events_dir)
    assert [u for u, _ in scalars["train/loss"]] == [r["update"] for r in rows] == [2, 4]
    for row in rows:
        for key, value in row.items():
            if key != "update" and isinstance(value, float) and value == value:
                assert (row["update"], pytest.approx(value, rel=1e-6, abs=1e-30)) in scalars[key]
    (path,) = events_dir.glob("events.out.tfevents.*")
    assert read_events(path)[0]["file_version"] == "brain.Event:2"
    pb = pytest.importorskip("google.protobuf.descriptor_pb2")
    from google.protobuf import descriptor_pool, message_factory

    field = pb.FieldDescriptorProto
    proto = pb.FileDescriptorProto(name="event.proto", package="tb", syntax="proto3")
    value = proto.message_type.add(name="Value")
    value.field.add(name="tag", number=1, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
    value.field.add(name="simple_value", number=2, type=field.TYPE_FLOAT, label=field.LABEL_OPTIONAL)
    summ = proto.message_type.add(name="Summary")
    summ.field.add(
        name="value", number=1, type=field.TYPE_MESSAGE, type_name=".tb.Value", label=field.LABEL_REPEATED
    )
    event = proto.message_type.add(name="Event")
    event.field.add(name="wall_time", number=1, type=field.TYPE_DOUBLE, label=field.LABEL_OPTIONAL)
    event.field.add(name="step", number=2, type=field.TYPE_INT64, label=field.LABEL_OPTIONAL)
    event.field.add(
        name="summary", number=5, type=field.TYPE_MESSAGE, type_name=".tb.Summary", label=field.LABEL_OPTIONAL
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    message = message_factory.GetMessageClass(pool.FindMessageTypeByName("tb.Event"))
    data = path.read_bytes()
    size = int.from_bytes(data[:8], "little")
    second = data[16 + size :]  # the first scalar record
    parsed = message.FromString(second[12 : 12 + int.from_bytes(second[:8], "little")])
    assert parsed.step == 2 and {v.tag for v in parsed.summary.value} >= {"train/loss", "train/lpc"}


def test_logger_values_are_checked(tmp_path):
    assert tiny(tmp_path, logger="tensorboard").logger == "tensorboard"
    with pytest.raises(ConfigError, match="logger must be one of none, wandb, tensorboard"):
        tiny(tmp_path, logger="mlflow")


@pytest.mark.parametrize(
    "key, value",
    [
        ("learner_precision", "float16"),
        ("input_encoder", "cnn"),
        ("lang_encoder", "bert"),
        ("obs_encoding", "rgb"),
    ],
)
def test_keys_with_a_fixed_set_of_values_refuse_another_in_one_line_naming_them(tmp_path, key, value):
    with pytest.raises(ConfigError, match=f"^{key} must be one of .*, got '{value}'$"):
        tiny(tmp_path, **{key: value})
    assert tiny(tmp_path, learner_precision="bfloat16").learner_precision == "bfloat16"


WIDE_DAGGER = {
    "demo_updates": 3072,
    "bot_undo": False,
    "expert_hidden_sizes": [[0, 128, 512], [0, 128, 512], [0, 128, 512]],
}


@pytest.mark.parametrize(
    "preset, level, sets",
    [
        ("Unlock-bc", "BabyAI-Unlock-v0", {}),
        ("Synth-bc", "BabyAI-Synth-v0", {}),
        ("GoToImpUnlock-bc", "BabyAI-GoToImpUnlock-v0", {}),
        ("GoToImpUnlock-wide-dagger", "BabyAI-GoToImpUnlock-v0", WIDE_DAGGER),
        (
            "GoToImpUnlock-wide-sg-dagger",
            "BabyAI-GoToImpUnlock-v0",
            {**WIDE_DAGGER, "aux_subgoal_weight": 0.5},
        ),
        (
            "GoToImpUnlock-long-dagger",
            "BabyAI-GoToImpUnlock-v0",
            {**WIDE_DAGGER, "demo_updates": 2048, "num_updates": 6144, "learner_precision": "bfloat16"},
        ),
        (
            "GoToImpUnlock-wide-bc-200k",
            "BabyAI-GoToImpUnlock-v0",
            {
                "demos": 200000,
                "expert_hidden_sizes": WIDE_DAGGER["expert_hidden_sizes"],
                "num_updates": 6144,
                "learner_precision": "bfloat16",
            },
        ),
    ],
)
def test_the_bc_presets_are_the_level_tables_bc_recipe(preset, level, sets):
    """configs/{Unlock,Synth,GoToImpUnlock}-bc.yaml are what their comments say: the level-table rows'
    recipe (the level's config plus the bench's --set keys) at their 5,120 updates, key for key;
    GoToImpUnlock-wide-dagger.yaml is the same with its own --set keys (512-unit experts, 3,072 BC
    updates, then DAgger to 5,120 with bot_undo off), GoToImpUnlock-wide-sg-dagger.yaml that
    recipe with the subgoal head, and GoToImpUnlock-long-dagger.yaml that recipe with 2,048 BC and
    4,096 DAgger updates in bf16 (its bench command's --frames 6291456), GoToImpUnlock-wide-bc-200k.yaml
    the BC recipe with 512-unit experts on 200 K demos for 6,144 updates in bf16 (--frames 6291456)."""
    from mop.experiment import recipe_keys

    table = load_config(
        ROOT / "configs" / f"{level}.yaml",
        {
            "demos": 100000,
            "buffer_episodes": 0,
            "expert_hidden_sizes": [[0, 128, 256], [0, 128, 256], [0, 128, 256]],
            "intermediate_dim": 256,
            "aux_target_weight": 0.5,
            "num_updates": 5120,
            **sets,
        },
    )
    loaded = load_config(ROOT / "configs" / f"{preset}.yaml")
    assert recipe_keys(loaded) == recipe_keys(table)
    schedule = ("demo_updates", "num_updates", "bot_undo", "learner_precision")
    assert [getattr(loaded, k) for k in schedule] == [getattr(table, k) for k in schedule]
