"""Evaluation: metric definitions, exact episode counts, phases, the cache, the CSV, bad input."""

import json
import multiprocessing as mp
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from minigrid.core.world_object import Ball, Key
from minigrid.envs.babyai.core.verifier import AfterInstr, BeforeInstr, GoToInstr, ObjDesc, PickupInstr

import batch_eval
import train_mop
from eval_mop import EvalError, EvalOptions, compute_metrics, evaluate, wilson_interval
from mop.babyai_env import PhaseTracker, SafeBot, make_env, ordered_instructions, quiet_reset
from mop.experiment import load_config
from mop.results import LEGACY_COLUMNS, ResultsError, merge_results
from mop.routing_cache import (
    JSON_FILE,
    LEGACY_RECORD_KEYS,
    LEGACY_TOP_KEYS,
    SCHEMA_VERSION,
    CacheError,
    load_cache,
    write_cache,
)
from mop.runs import cache_dir_for

ROOT = Path(__file__).resolve().parent.parent
TASK = "BabyAI-GoToRedBallGrey-v0"


@pytest.fixture(scope="module")
def trained(tiny_run):
    """The session's tiny MoP run (configs/tiny.yaml: checkpoint_3.pt and checkpoint_final.pt,
    update 6) under <root>/checkpoints/ (tier 2)."""
    return tiny_run.root


def hand_episodes():
    return pd.DataFrame(
        {
            "success": [True, True, False, True],
            "length": [10, 20, 64, 5],
            "optimal_length": pd.array([5, None, 8, 5], dtype="Int64"),
            "mean_lpc": [100.0, 200.0, 50.0, 0.0],
            "mean_entropy": [1.0, 1.0, 1.0, 1.0],
            "layer_0_expert_0": [1.0, 0.0, 0.5, 0.0],
            "layer_0_expert_1": [0.0, 1.0, 0.5, 1.0],
        }
    )


def test_metrics_on_hand_made_episodes():
    m = compute_metrics(hand_episodes(), [[0, 10]])
    assert m["success_rate"] == 0.75 and m["num_episodes"] == 4
    assert m["path_ratio"] == pytest.approx((10 / 5 + 5 / 5) / 2)  # successful episodes with a bot path only
    assert m["mean_lpc"] == pytest.approx((100 * 10 + 200 * 20 + 50 * 64 + 0) / 99)  # per step
    assert m["bot_plan_failures"] == 1
    assert m["usage_layer_0_expert_0"] == pytest.approx((10 + 32) / 99)
    assert m["mean_episode_length"] == pytest.approx(99 / 4)
    low, high = wilson_interval(3, 4)
    assert (m["success_ci_low"], m["success_ci_high"]) == (low, high) and 0.3 < low < 0.75 < high <= 1.0
    assert wilson_interval(0, 50)[0] == 0.0 and wilson_interval(50, 50)[1] == 1.0


def test_execution_order_of_compound_missions():
    ball, key = GoToInstr(ObjDesc("ball", "red")), PickupInstr(ObjDesc("key", "blue"))
    assert ordered_instructions(AfterInstr(ball, key)) == [key, ball]  # "go to ball after you pick up key"
    assert ordered_instructions(BeforeInstr(ball, key)) == [ball, key]


def test_multi_door_phase_fields_follow_the_door_opened_first():
    """OpenTwoDoors: t_unlocked is the first opening, and the door distance is to that door."""
    env = make_env("BabyAI-OpenTwoDoors-v0")
    for seed in range(3):
        quiet_reset(env, seed)
        tracker, bot = PhaseTracker(env), SafeBot(env)
        doors = list(tracker.closed_at_start)
        assert len(doors) == 2
        first_open = None
        for t in range(env.max_steps):
            tracker.observe(t)
            opened = [p for p in doors if env.grid.get(*p).is_open]
            if first_open is None and opened:
                first_open = (opened[0], t)
            _, _, terminated, truncated, _ = env.step(bot.label(None))
            if terminated or truncated:
                tracker.observe(t + 1)
                break
        assert first_open is not None
        assert tracker.first_door == first_open[0] and tracker.t_unlocked == first_open[1]
        assert tracker.door_of_episode() == first_open[0]


def test_carried_target_and_key_distance_is_zero():
    env = make_env("BabyAI-UnlockPickup-v0")
    quiet_reset(env, 1)
    tracker = PhaseTracker(env)
    assert isinstance(tracker.key, Key)
    env.carrying = tracker.key
    fields = tracker.observe(0)
    assert fields.carrying == 1 and fields.dist_to_key == 0.0
    assert tracker.t_pick == 0
    env.carrying = None
    tracker.observe(3)
    assert tracker.t_drop == 3
    assert not isinstance(tracker.targets[0], Ball)


def test_evaluation_is_exact_reproducible_and_split_invariant(trained):
    ckpt = trained / "checkpoints" / TASK / "trial_0" / "checkpoint_final.pt"
    a = evaluate(ckpt, EvalOptions(num_episodes=13, num_envs=4))
    b = evaluate(ckpt, EvalOptions(num_episodes=13, num_envs=3))
    c = evaluate(ckpt, EvalOptions(num_episodes=13, num_envs=4, num_workers=2))
    assert len(a.episodes) == 13 and a.episodes["episode"].tolist() == list(range(13))
    assert a.episodes["seed"].tolist() == list(range(13))  # evaluation seeds, disjoint from training
    for other in (b, c):
        pd.testing.assert_frame_equal(
            a.episodes.drop(columns="env_slot"), other.episodes.drop(columns="env_slot")
        )
        assert a.metrics["success_rate"] == other.metrics["success_rate"]
    # every recorded step belongs to a counted episode, and every counted step is recorded
    assert set(a.steps["episode"]) == set(range(13))
    lengths = a.steps.groupby("episode").size()
    assert (lengths.to_numpy() == a.episodes["length"].to_numpy()).all()
    assert (a.steps.groupby("episode")["t"].max() + 1 == lengths).all()
    w = a.steps[[c for c in a.steps.columns if c.startswith("layer_0_expert_")]].to_numpy()
    np.testing.assert_allclose(w.sum(1), 1.0, rtol=1e-5)


def test_knockout_changes_routing_and_is_named(trained):
    ckpt = trained / "checkpoints" / TASK / "trial_0" / "checkpoint_final.pt"
    r = evaluate(ckpt, EvalOptions(num_episodes=6, knockout="largest"))
    assert r.metrics["knockout"] == "largest"
    assert r.steps["layer_0_expert_2"].max() == 0 and r.steps["layer_1_expert_1"].max() == 0
    t = evaluate(ckpt, EvalOptions(num_episodes=6, knockout_threshold=0.4, record=False))
    assert t.metrics["knockout"] == "threshold_0.4" and t.steps.empty
    for bad in ("layer_5:0", "layer_0:9", "layer_0-1", "layer_1:0,layer_1:1"):
        with pytest.raises(EvalError):
            evaluate(ckpt, EvalOptions(num_episodes=2, knockout=bad))


def test_cache_round_trip_json_shape_and_schema(trained, tmp_path):
    ckpt = trained / "checkpoints" / TASK / "trial_0" / "checkpoint_3.pt"
    r = evaluate(ckpt, EvalOptions(num_episodes=5))
    config = {"task_id": TASK, "trial": 0, "seed": 2, "expert_hidden_sizes": [[0, 8, 16], [0, 8]]}
    directory = cache_dir_for(tmp_path, config, ckpt)
    assert directory == tmp_path / TASK / "trial_0" / "seed_2" / "update_3"
    assert cache_dir_for(tmp_path, config, "x/checkpoint_final.pt", "BabyAI-GoToLocal-v0", "layer_0:1") == (
        tmp_path / TASK / "trial_0" / "seed_2" / "eval_BabyAI-GoToLocal-v0" / "knockout_layer_0-1"
    )
    write_cache(
        directory,
        r.steps,
        r.episodes,
        {"checkpoint_path": str(ckpt), "num_episodes": 5, "config": config, "metrics": r.metrics},
        formats=("parquet", "json"),
    )
    data = load_cache(directory)
    # weights and logits are stored as float16 (documented); everything else round-trips exactly
    pd.testing.assert_frame_equal(data.steps, r.steps, check_exact=False, rtol=1e-3, atol=1e-3)
    exact = [
        c
        for c in r.steps.columns
        if not c.startswith(("logit_", "layer_", "lpc", "entropy", "dist_to_k", "dist_to_t"))
    ]
    pd.testing.assert_frame_equal(data.steps[exact], r.steps[exact])
    pd.testing.assert_frame_equal(data.episodes, r.episodes, check_exact=False, rtol=1e-3, atol=1e-3)
    assert data.meta["metrics"]["success_rate"] == r.metrics["success_rate"] and data.expert_sizes == [
        [0, 8, 16],
        [0, 8],
    ]
    doc = json.loads((directory / JSON_FILE).read_text())
    # the earlier system's current (v3) shape; its field semantics: tests/test_legacy_cache.py
    assert list(doc) == list(LEGACY_TOP_KEYS)
    assert set(doc["metrics"]) == {"success_rate", "path_ratio", "mean_lpc", "bot_plan_failures"}
    record = doc["routing_data"][0]
    assert list(record) == list(LEGACY_RECORD_KEYS)
    assert (
        list(record["layer_routing"]) == ["layer_0", "layer_1"]
        and len(record["layer_routing"]["layer_0"]) == 3
    )
    assert {"grid_size", "agent_start_pos", "goals", "doors", "keys", "balls", "boxes"} <= set(
        doc["episodes"][record["episode"]]
    )
    assert len(doc["routing_data"]) == len(r.steps) and len(doc["episodes"]) == len(r.episodes)
    meta = json.loads((directory / "metadata.json").read_text())
    meta["schema_version"] = SCHEMA_VERSION + 1
    (directory / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(CacheError, match="update this project"):
        load_cache(directory)


def _append_rows(args):
    path, worker = args
    for i in range(10):
        merge_results(
            path,
            [
                {
                    "checkpoint_path": f"w{worker}/c{i}.pt",
                    "task_id": "T",
                    "trial": worker,
                    "eval_task_id": "T",
                    "knockout": "none",
                    "success_rate": i / 10,
                }
            ],
        )


def test_concurrent_csv_writers_lose_and_duplicate_nothing(tmp_path):
    path = tmp_path / "evaluation_results.csv"
    with mp.get_context("spawn").Pool(4) as pool:
        pool.map(_append_rows, [(path, w) for w in range(4)])
    df = pd.read_csv(path)
    assert len(df) == 40 and df["checkpoint_path"].is_unique
    merge_results(
        path,
        [
            {
                "checkpoint_path": "w0/c0.pt",
                "task_id": "T",
                "trial": 0,
                "eval_task_id": "T",
                "knockout": "none",
                "success_rate": 0.99,
            }
        ],
    )
    df = pd.read_csv(path)
    assert len(df) == 40 and df.loc[df["checkpoint_path"] == "w0/c0.pt", "success_rate"].item() == 0.99


def test_crash_mid_write_leaves_the_previous_csv(tmp_path, monkeypatch):
    path = tmp_path / "r.csv"
    merge_results(
        path, [{"checkpoint_path": "a.pt", "task_id": "T", "eval_task_id": "T", "knockout": "none"}]
    )
    before = path.read_bytes()

    def boom(self, *a, **k):
        Path(a[0]).write_text("half a fi")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", boom)
    with pytest.raises(OSError):
        merge_results(
            path, [{"checkpoint_path": "b.pt", "task_id": "T", "eval_task_id": "T", "knockout": "none"}]
        )
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp"] == []


def test_foreign_csv_is_refused(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("name,score\nx,1\n")
    before = path.read_bytes()
    with pytest.raises(ResultsError, match="name"):
        merge_results(path, [{"checkpoint_path": "a.pt"}])
    assert path.read_bytes() == before


def test_batch_eval_end_to_end_and_planning(trained, tmp_path, monkeypatch):
    monkeypatch.chdir(trained)
    results, cache = tmp_path / "res.csv", tmp_path / "cache"
    common = ["--num_episodes", "4", "--results_path", str(results), "--cache_dir", str(cache)]
    out = batch_eval.main(common)
    assert len(out["evaluated"]) == 2  # checkpoint_3, checkpoint_6 (checkpoint_final.pt links it)
    df = pd.read_csv(results)
    assert list(df.columns[:20]) == LEGACY_COLUMNS and len(df) == 2
    assert list(df.columns[3:5]) == ["seed", "update"]  # the earlier batch_eval's positions 4-5
    assert set(df["update"]) == {3, 6} and df["checkpoint_path"].str.startswith("checkpoints/").all()
    assert (cache / TASK / "trial_0" / "update_3" / "steps.parquet").exists()
    assert (cache / TASK / "trial_0" / "update_6" / "steps.parquet").exists()  # the last update
    assert df["checkpoint_path"].str.endswith(("checkpoint_3.pt", "checkpoint_6.pt")).all()
    assert batch_eval.main(common)["evaluated"] == []  # nothing new
    again = batch_eval.main([*common, "--force", "--final_only", "--skip_routing"])
    assert len(again["evaluated"]) == 1 and len(pd.read_csv(results)) == 2
    ko = batch_eval.main([*common, "--update", "3", "--knockout", "largest"])
    assert len(ko["evaluated"]) == 1 and len(pd.read_csv(results)) == 3


def test_a_numbered_alias_of_the_final_checkpoint_is_evaluated_once(trained, tmp_path):
    """A run's last update is checkpoint_<N>.pt and checkpoint_final.pt (a link, or a copy as the
    earlier system wrote): one evaluation, named by the numbered file; a run of ours written before
    the last update was stored twice (final only) is evaluated under the final name."""
    import shutil

    run = tmp_path / "ck" / TASK / "trial_0"
    shutil.copytree(trained / "checkpoints" / TASK / "trial_0", run)
    refs = batch_eval.discover([str(tmp_path / "ck")])
    assert sorted(Path(r.path).name for r in refs) == ["checkpoint_3.pt", "checkpoint_6.pt"]
    assert [Path(r.path).name for r in refs if r.is_final] == ["checkpoint_6.pt"]
    (run / "checkpoint_6.pt").unlink()
    refs = batch_eval.discover([str(tmp_path / "ck")])
    assert sorted(Path(r.path).name for r in refs) == ["checkpoint_3.pt", "checkpoint_final.pt"]
    assert [r.held_update for r in refs if r.is_final] == [6]


def run_cli(script, *args, cwd):
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_bot_path_lengths_have_one_cache_file_that_evaluations_read_and_merge(trained, tmp_path):
    """mop.bot_paths: evaluate fills a BotPaths (from worker processes too) with each layout's bot
    path length, the episodes' optimal_length; saved, it is batch_eval's file
    <cache>/_bot_paths/<task>__max_steps_<N|default>.json ({"<seed>": length}); a later
    evaluation reads it instead of replaying the bot, and two writers' lengths merge."""
    from mop.babyai_env import bot_path_length
    from mop.bot_paths import BotPaths, cache_file

    ckpt = trained / "checkpoints" / TASK / "trial_0" / "checkpoint_final.pt"
    options = EvalOptions(num_episodes=6, num_envs=3, num_workers=2, record=False)
    max_steps = evaluate(ckpt, EvalOptions(num_episodes=1, record=False)).metrics["max_steps"]
    cache = tmp_path / "cache"
    paths, other = BotPaths(TASK, max_steps, cache), BotPaths(TASK, max_steps, cache)
    result = evaluate(ckpt, options, paths)
    lengths = {int(s): int(n) for s, n in zip(result.episodes["seed"], result.episodes["optimal_length"])}
    assert dict(paths) == lengths and len(lengths) == 6
    assert lengths[2] == bot_path_length(TASK, 2, max_steps)
    path = paths.save()
    assert path == cache_file(cache, TASK, max_steps) == cache / "_bot_paths" / path.name
    assert path.name == f"{TASK}__max_steps_{max_steps or 'default'}.json"
    assert json.loads(path.read_text()) == {str(k): v for k, v in sorted(lengths.items())}
    assert other.length(7) == bot_path_length(TASK, 7, max_steps) and other.save() == path
    assert json.loads(path.read_text()) == {str(k): v for k, v in sorted({**lengths, 7: other[7]}.items())}
    path.write_text(json.dumps({"0": 999}))  # a cached length is used, not measured again
    again = evaluate(ckpt, EvalOptions(num_episodes=2, record=False), BotPaths(TASK, max_steps, cache))
    assert again.episodes["optimal_length"].tolist()[0] == 999
    with pytest.raises(ValueError, match="bot paths of"):
        evaluate(ckpt, EvalOptions(num_episodes=1, record=False), BotPaths("BabyAI-GoToLocal-v0", max_steps))


def test_cli_bad_input(trained, tmp_path):
    ckpt = str(trained / "checkpoints" / TASK / "trial_0" / "checkpoint_final.pt")
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    cases = [
        ("eval_mop.py", ["--checkpoint", str(tmp_path / "missing.pt")], "does not exist"),
        ("eval_mop.py", ["--checkpoint", str(tmp_path / "bad.pt")], "corrupt"),
        ("eval_mop.py", ["--checkpoint", ckpt, "--task_id", "BabyAI-GoToObjj-v0"], "BabyAI-GoToObj-v0"),
        ("batch_eval.py", ["--checkpoint_dir", str(tmp_path / "empty")], "no checkpoints"),
    ]
    for script, args, message in cases:
        result = run_cli(script, *args, cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert lines[-1].startswith("error:") and message in lines[-1] and "Traceback" not in result.stderr


def test_incompatible_checkpoint_is_named(trained, tmp_path):
    import torch

    ckpt = torch.load(trained / "checkpoints" / TASK / "trial_0" / "checkpoint_final.pt", weights_only=True)
    ckpt["config"]["expert_hidden_sizes"] = [[0, 4]]
    torch.save(ckpt, tmp_path / "other.pt")
    with pytest.raises(EvalError, match="does not match its config"):
        evaluate(tmp_path / "other.pt", EvalOptions(num_episodes=2))


def test_distilbert_encoder_trains_and_evaluates(tiny_distilbert, tmp_path):
    """The earlier system's language option end to end, on a small randomly initialised DistilBERT."""
    import torch

    cfg = load_config(
        None,
        {
            "task_id": TASK,
            "num_envs": 2,
            "unroll_len": 4,
            "num_updates": 2,
            "num_workers": 0,
            "checkpoint_interval": None,
            "intermediate_dim": 8,
            "router_hidden_size": 4,
            "expert_hidden_sizes": [[0, 4]],
            "lang_dim": 8,
            "lang_encoder": "distilbert",
            "distilbert_path": tiny_distilbert,
            "checkpoint_dir": str(tmp_path),
        },
    )
    ckpt_path = train_mop.main(cfg, progress=False)["checkpoints"][-1]
    ckpt = torch.load(ckpt_path, weights_only=True)
    assert ckpt["lang_proj_state_dict"]["weight"].shape == (8, 32)
    assert evaluate(ckpt_path, EvalOptions(num_episodes=3, record=False)).metrics["num_episodes"] == 3


def test_derived_phase_columns_are_rebuilt_exactly(tmp_path):
    """door_unlocked, t_unlocked, t_pick, t_drop and dist_to_door are not stored but rebuilt."""
    t = np.array([0, 1, 2, 3, 4, 0, 1])
    episode = np.array([0, 0, 0, 0, 0, 1, 1])
    x, y = np.array([1, 2, 3, 3, 3, 5, 5]), np.array([1, 1, 1, 2, 3, 5, 4])
    event = {0: (2, 1, 3), 1: (None, None, None)}  # t_unlocked, t_pick, t_drop of each episode
    steps = pd.DataFrame({"episode": episode, "t": t, "x": x, "y": y})
    for k, name in enumerate(("t_unlocked", "t_pick", "t_drop")):
        steps[name] = [
            float(event[e][k]) if event[e][k] is not None and event[e][k] <= tt else np.nan
            for e, tt in zip(episode, t)
        ]
    steps["door_unlocked"] = steps["t_unlocked"].notna().astype(np.int64)
    steps["dist_to_door"] = [
        np.hypot(xx - 4, yy - 1) if e == 0 else np.nan for e, xx, yy in zip(episode, x, y)
    ]
    steps["layer_0_expert_0"] = np.float32(0.25)
    episodes = pd.DataFrame(
        {
            "episode": [0, 1],
            "env_context": ["{}", "{}"],
            "t_unlocked": pd.array([2, None], dtype="Int64"),
            "t_pick": pd.array([1, None], dtype="Int64"),
            "t_drop": pd.array([3, None], dtype="Int64"),
            "door_x": pd.array([4, None], dtype="Int64"),
            "door_y": pd.array([1, None], dtype="Int64"),
        }
    )
    write_cache(tmp_path, steps, episodes, {"config": {}})
    pd.testing.assert_frame_equal(load_cache(tmp_path).steps, steps)


def test_run_paths_and_labels_from_any_root():
    from mop.runs import run_label, run_subpath

    cache = "/x/evaluation_cache/BabyAI-UnlockPickup-v0/trial_0/seed_2/update_1500/knockout_threshold_0.1"
    assert run_subpath(cache) == Path(
        "BabyAI-UnlockPickup-v0/trial_0/seed_2/update_1500/knockout_threshold_0.1"
    )
    assert run_label("modal_checkpoints/BabyAI-GoToObj-v0/trial_3/checkpoint_250.pt") == (
        "BabyAI-GoToObj-v0 · trial 3 · checkpoint 250"
    )
    assert run_label("evaluation_cache/BabyAI-GoToObj-v0/trial_3") == "BabyAI-GoToObj-v0 · trial 3"


def test_resume_then_evaluate_keeps_the_earlier_final_row_and_cache(tmp_path, monkeypatch, capsys):
    """Issue 43: train, batch_eval, --resume to more updates, batch_eval. The earlier last
    update's row and cache stay that update's (the resumed run's final must not replace them), the
    resume names what it continues from, and every update with weights has a row."""
    from conftest import tiny_config

    monkeypatch.chdir(tmp_path)
    train_mop.main(tiny_config("checkpoints", num_updates=4, checkpoint_interval=None), progress=False)
    run = Path("checkpoints") / TASK / "trial_0"
    assert (run / "checkpoint_4.pt").samefile(run / "checkpoint_final.pt")  # stored twice, one inode
    common = ["--num_episodes", "3", "--num_envs", "3", "--results_path", "res.csv", "--cache_dir", "cache"]
    batch_eval.main(common)
    first = pd.read_csv("res.csv")
    assert first["checkpoint_path"].tolist() == [
        f"{run.as_posix()}/checkpoint_4.pt"
    ]  # the earlier system's name
    cache_4 = Path(first["cache_path"][0])
    assert cache_4 == Path("cache") / TASK / "trial_0" / "update_4"
    written = {p.name: p.read_bytes() for p in cache_4.iterdir() if p.is_file()}
    capsys.readouterr()
    train_mop.main(
        tiny_config("checkpoints", num_updates=7, checkpoint_interval=None), resume=True, progress=False
    )
    assert f"resuming from {run / 'checkpoint_final.pt'} (update 4" in capsys.readouterr().out
    assert (run / "checkpoint_7.pt").samefile(run / "checkpoint_final.pt") and (
        run / "checkpoint_4.pt"
    ).is_file()
    assert len(batch_eval.main(common)["evaluated"]) == 1  # update 7 only: 4 has its row
    df = pd.read_csv("res.csv").sort_values("update")
    assert df["update"].tolist() == [4, 7]
    kept = df[df["update"] == 4].iloc[0]
    assert kept["checkpoint_path"] == first["checkpoint_path"][0]
    assert kept["evaluated_at"] == first["evaluated_at"][0] and kept["cache_path"] == first["cache_path"][0]
    assert {p.name: p.read_bytes() for p in cache_4.iterdir() if p.is_file()} == written
