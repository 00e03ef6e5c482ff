"""record.py, generative.py, train_generative.py and generative_analysis.py on the tiny run."""

import json
import shutil

import numpy as np
import pytest
import torch

import generative_analysis
import record
import train_generative
from babyai_env import encode_obs
from eval_mop import run_episodes
from experiment import load_policy
from generative import ObsProbs, agent_input, exact_obs, parse_target, run_agent


@pytest.fixture(scope="module")
def recording(tiny_run, tmp_path_factory):
    checkpoint = tiny_run.run_dir / "checkpoint_final.pt"
    out = tmp_path_factory.mktemp("rec") / "final"
    meta = record.record(checkpoint, out, num_episodes=6, num_envs=3, chunk_steps=40)
    return checkpoint, out, meta


def test_recording_round_trip_and_streaming(recording):
    checkpoint, out, meta = recording
    assert len(meta["chunks"]) > 1 and meta["num_episodes"] == 6
    chunks = list(record.iter_chunks(out))
    steps = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
    assert len(steps["episode"]) == meta["num_steps"] == sum(c["num_steps"] for c in meta["chunks"])
    assert steps["image"].shape[1:] == (7, 7, 3) and steps["image"].dtype == np.uint8
    assert steps["memory"].shape[1] == meta["memory_size"] and np.isnan(steps["bot_label"]).all()
    for e in np.unique(steps["episode"]):
        sel = steps["episode"] == e
        assert (steps["t"][sel] == np.arange(sel.sum())).all()  # whole episodes, in order, one chunk
        assert steps["done"][sel][-1] and not steps["done"][sel][:-1].any()
        assert not steps["memory"][sel][0].any()  # memory starts at zero
    # the same actions as an evaluation of the same layouts
    policy, encoder, config = load_policy(checkpoint)
    evaluated, _ = run_episodes(
        policy, encoder, config, config["task_id"], list(range(6)), num_envs=3, measure_bot_paths=False
    )
    order = np.lexsort((steps["t"], steps["episode"]))
    assert (steps["action"][order] == evaluated["action"].to_numpy()).all()
    # streaming windows: T consecutive steps of one episode, the episode's end included
    windows = list(record.iter_windows(out, 5))
    assert windows and all(len(w["t"]) == 5 and len(set(w["episode"])) == 1 for w in windows)
    assert all((np.diff(w["t"]) == 1).all() for w in windows)
    assert sum(w["done"][-1] for w in windows) == 6


def test_partial_or_corrupt_recordings_are_refused(recording, tmp_path, capsys):
    _, out, _ = recording
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    chunk = bad / "chunk_00001.parquet"
    chunk.write_bytes(chunk.read_bytes()[:100])
    with pytest.raises(record.RecordingError, match="partial or corrupt"):
        record.read_metadata(bad)
    (bad / "metadata.json").unlink()
    with pytest.raises(record.RecordingError, match="not a finished recording"):
        record.read_metadata(bad)
    with pytest.raises(SystemExit) as e:
        train_generative.main(["--dataset", str(bad), "--out", str(tmp_path / "g"), "--num_updates", "1"])
    assert e.value.code == 2 and capsys.readouterr().err.count("\n") == 1
    assert not (tmp_path / "g").exists()


def test_soft_input_of_exact_one_hot_is_the_agents_encoding():
    rng = np.random.default_rng(0)
    image = torch.from_numpy(
        np.stack([rng.integers(0, n, (2, 7, 7)) for n in (11, 6, 3)], -1).astype(np.uint8)
    )
    direction, carrying = torch.tensor([0, 3]), torch.tensor([1, 0])
    for encoding in ("onehot", "raw"):
        expected = encode_obs(image, direction, carrying, encoding)
        assert torch.equal(agent_input(exact_obs(image, direction, carrying), encoding), expected)


def test_agent_in_simulator_reproduces_the_recording(recording):
    checkpoint, out, meta = recording
    policy, encoder, _ = load_policy(checkpoint)
    w = record.load_windows(out, 8)
    lang = encoder(meta["missions"]).detach()[torch.from_numpy(w["mission_index"][:, 0].astype(np.int64))]
    obs = exact_obs(
        torch.from_numpy(w["image"]), torch.from_numpy(w["direction"]), torch.from_numpy(w["carrying"])
    )
    steps = [
        ObsProbs([c[:, t] for c in obs.cells], obs.direction[:, t], obs.carrying[:, t]) for t in range(8)
    ]
    with torch.no_grad():
        trace = run_agent(policy, meta["obs_encoding"], steps, lang, torch.from_numpy(w["memory"][:, 0]))
    torch.testing.assert_close(trace.logits, torch.from_numpy(w["logits"]), atol=1e-5, rtol=0)
    torch.testing.assert_close(trace.memory[:, :-1], torch.from_numpy(w["memory"][:, 1:]), atol=1e-5, rtol=0)
    for k, weights in enumerate(trace.router_weights):
        torch.testing.assert_close(weights, torch.from_numpy(w[f"router_{k}"]), atol=1e-5, rtol=0)


def test_targets():
    sizes = [[0, 8, 16], [0, 8]]
    assert parse_target("layer_1:expert_1", sizes, 7) == ("router", 1, 1)
    assert parse_target("action:3", sizes, 7) == ("action", 3, 0)
    for bad in ("layer_9:expert_0", "layer_0:expert_3", "action:7", "nonsense"):
        with pytest.raises(ValueError, match="target"):
            parse_target(bad, sizes, 7)
    with pytest.raises(ValueError, match="GRU baseline"):
        parse_target("layer_0:expert_0", [], 7)


def test_record_train_and_every_analysis(recording, tiny_run, tmp_path, capsys):
    _, data, _ = recording
    out = tmp_path / "gen"
    common = ["--dataset", str(data), "--out", str(out), "--num_init_steps", "2", "--num_sim_steps", "4"]
    common += [
        "--hidden_size",
        "32",
        "--z_dim",
        "4",
        "--log_interval",
        "2",
        "--checkpoint_interval",
        "2",
        "--no_progress",
    ]
    summary = train_generative.main([*common, "--num_updates", "2"])
    assert (out / "model_final.pt").exists()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert 0 <= rows[-1]["held_out/acc/object"] <= 1 and rows[-1]["held_out/memory/mse"] >= 0
    assert summary["metrics"]["update"] == 2
    resumed = train_generative.main([*common, "--num_updates", "3", "--resume"])
    assert resumed["metrics"]["update"] == 3
    model = str(out / "model_final.pt")
    for analysis, extra, produced in (
        ("samples", [], "samples.png"),
        ("maximise", ["--target", "layer_0:expert_2", "--steps", "2"], "maximise_layer_0_expert_2.png"),
        ("pca", [], "pca.png"),
        ("directions", ["--alphas=-1,0,1"], "direction_pc1.png"),
    ):
        s = generative_analysis.main(["--model", model, "--analysis", analysis, "--num_samples", "2", *extra])
        folder = out / analysis
        assert (folder / produced).stat().st_size > 0 and (folder / "summary.json").exists()
        assert s["analysis"] == analysis
    assert np.isfinite(s["routing"]["layer_0:expert_2 (16)"]).all()
    # bad input: one line, exit 2, nothing overwritten
    before = (out / "model_final.pt").read_bytes()
    for argv in (
        ["--model", model, "--analysis", "maximise", "--target", "layer_9:expert_0"],
        [*common, "--num_updates", "2", "--agent_checkpoint", str(tiny_run.run_dir / "checkpoint_3.pt")],
        [*common[:-6], "--out", str(tmp_path / "long"), "--num_sim_steps", "500", "--num_updates", "1"],
        [*common, "--num_updates", "2"],
    ):
        main = generative_analysis.main if "--model" in argv else train_generative.main
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert (out / "model_final.pt").read_bytes() == before
