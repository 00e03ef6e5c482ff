"""record.py, generative.py, train_generative.py and generative_analysis.py on the tiny run."""

import json
import math
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import generative_analysis
import record
import train_generative
from eval_mop import run_episodes
from mop import generative
from mop.babyai_env import encode_obs, make_env
from mop.experiment import load_policy
from mop.generative import (
    AGENT_CELL,
    CANVAS_SIZE,
    CELL_DIM,
    AgentTrace,
    GenerativeConfig,
    GenerativeModel,
    ObsProbs,
    SimOutput,
    agent_input,
    agreeing_prefix,
    exact_obs,
    greedy_actions,
    motion_probs,
    parse_target,
    run_agent,
    see_through,
    soft_visibility,
    start_frame_canvas,
    turn_direction,
    view_loss,
)

ROOT = Path(__file__).resolve().parent.parent


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
    # a time budget stops early with a final model at the update reached, which --resume continues
    timed = train_generative.main(
        [*common, "--out", str(tmp_path / "timed"), "--num_updates", "50", "--max_minutes", "1e-6"]
    )
    assert timed["metrics"]["update"] == 1 and (tmp_path / "timed" / "model_final.pt").exists()
    more = train_generative.main(
        [*common, "--out", str(tmp_path / "timed"), "--num_updates", "2", "--resume"]
    )
    assert more["metrics"]["update"] == 2
    model = str(out / "model_final.pt")
    few = ["--num_opt_contexts", "1", "--num_contexts", "1"]  # the tiny recording's held-out windows
    for analysis, extra, produced in (
        ("samples", [], "samples.png"),
        (
            "maximise",
            ["--target", "layer_0:expert_2", "--steps", "2", "--from_episode_start", *few],
            "maximise_layer_0_expert_2.png",
        ),
        ("pca", [], "pca.png"),
        ("directions", ["--alphas=-1,0,1"], "direction_pc1.png"),
        ("saliency", ["--target", "layer_0:expert_2", "--num_contexts", "2"], "saliency.png"),
        ("edits", ["--num_contexts", "2"], "edits.png"),
        ("behaviours", ["--window", "3", "--num_clusters", "2"], "behaviours.png"),
        ("accuracy", ["--num_windows", "4"], "accuracy.png"),
    ):
        s = generative_analysis.main(["--model", model, "--analysis", analysis, "--num_samples", "2", *extra])
        folder = out / analysis
        assert (folder / produced).stat().st_size > 0 and (folder / "summary.json").exists()
        if analysis == "maximise":  # minutes on a real model: its bar reaches a log too
            err = capsys.readouterr().err
            assert "target x mode" in err and "4/4" in err, err[-400:]
        assert s["analysis"] == analysis
    assert 0 <= s["closed_loop"]["cell"] <= 1 and len(s["recorded_actions"]["by_step"]) == 4
    assert np.asarray(s["closed_loop"]["by_view_cell"]).shape == (7, 7)
    scene = json.loads((out / "maximise" / "summary.json").read_text())["scene_after"]
    assert 0 <= scene["key_in_view"] <= 1 and sum(scene["actions"].values()) == pytest.approx(1, abs=0.01)
    directions = json.loads((out / "directions" / "summary.json").read_text())
    assert np.isfinite(directions["routing"]["layer_0:expert_2 (16)"]).all()
    maximised = json.loads((out / "maximise" / "summary.json").read_text())
    assert [(r["target"], r["mode"]) for r in maximised["runs"]] == [
        ("layer_0:expert_2", "leash"),
        ("layer_0:expert_2", "typical"),
        ("action:2", "leash"),  # the positive control, beside every target
        ("action:2", "typical"),
    ]
    assert {r["verdict"] for r in maximised["runs"]} <= {"moved", "not resolved"}  # no --margin
    assert all("Holm" in r["family"] or "alone" in r["family"] for r in maximised["runs"])
    assert maximised["model_kl"]["kl_nats"] >= 0 and (out / "maximise" / "z_sensitivity.png").exists()
    edits = json.loads((out / "edits" / "summary.json").read_text())
    assert (
        set(edits["results"]) == {"direction", "random"}
        and (out / "edits" / "edit_swap_direction.npz").exists()
    )
    recorded = np.load(out / "edits" / "edit_collapse_direction.npz")
    assert (
        recorded["views"].shape[1:] == (4, 7, 7, 3)
        and recorded["actions"].shape == recorded["reread_actions"].shape
    )
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.ones(3))
    # bad input: one line, exit 2, nothing overwritten
    before = (out / "model_final.pt").read_bytes()
    for argv in (
        ["--model", model, "--analysis", "maximise", "--target", "layer_9:expert_0"],
        ["--model", model, "--analysis", "saliency", "--target", "layer_0:expert_7"],
        ["--model", model, "--analysis", "maximise", "--target", "all", "--num_contexts", "1000"],
        ["--model", model, "--analysis", "edits", "--direction", str(wrong), "--out", str(tmp_path / "e")],
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
    assert not (tmp_path / "e").exists()


def _random_walk(task_id: str, seeds: range, steps: int):
    """(view before, action, view after, unmasked content of the view before, minigrid's mask) of
    random actions in real levels, minigrid's own code (not fast_grid)."""
    rng = np.random.default_rng(0)
    for seed in seeds:
        env = make_env(task_id, fast=False)
        obs, _ = env.reset(seed=seed)
        for _ in range(steps):
            top_x, top_y, _, _ = env.get_view_exts()
            grid = env.grid.slice(top_x, top_y, 7, 7)
            for _ in range(env.agent_dir + 1):
                grid = grid.rotate_left()
            content = grid.encode()  # every cell, before occlusion
            mask = grid.process_vis(agent_pos=AGENT_CELL)
            action = int(rng.choice([0, 1, 2, 2, 2, 3, 4, 5]))
            after, _, terminated, truncated, _ = env.step(action)
            yield obs, action, after, content, mask
            obs = after
            if terminated or truncated:
                break


def test_soft_visibility_is_minigrids_occlusion():
    checked = hidden = 0
    for obs, _, _, content, mask in _random_walk("BabyAI-UnlockPickup-v0", range(3), 60):
        codes = exact_obs(torch.from_numpy(content), torch.tensor(0), torch.tensor(0))
        see = see_through(codes.cells[0], codes.cells[2])
        see[AGENT_CELL] = 1.0  # the agent stands on a free cell
        visible = soft_visibility(see[None])[0]
        assert torch.equal(visible.bool(), torch.from_numpy(mask)), (visible, mask)
        assert ((obs["image"][..., 0] == 0) == ~mask).all()  # the env's view hides exactly those
        checked += 1
        hidden += int((~mask).sum())
    assert checked > 100 and hidden > 0  # occlusion happened
    # a wall row decoded at 1 - 1e-5 leaks about 1e-5 behind it, not more the further back (a soft
    # OR over the paths multiplied it about tenfold per row: 95% visible five rows behind the wall)
    see = torch.ones(1, 7, 7)
    see[0, :, 5] = 1e-5
    visible = soft_visibility(see)
    assert float(visible[0, :, :5].max()) <= 1e-5 and float(visible[0, :, 5:].min()) > 0.99999
    # soft inputs give soft visibility, differentiable in the see-through probabilities
    see = torch.full((1, 7, 7), 0.5, requires_grad=True)
    visible = soft_visibility(see)
    assert 0 < float(visible.detach()[0, 3, 0]) < 1 and visible.detach()[0, 3, 6] == 1
    visible.sum().backward()
    assert see.grad.abs().sum() > 0


def test_canvas_moves_like_minigrid():
    model = GenerativeModel(GenerativeConfig(hidden_size=8, z_dim=2), "onehot", lang_dim=4, num_actions=7)
    counts = {}
    for obs, action, after, _, _ in _random_walk("BabyAI-UnlockPickup-v0", range(3), 80):
        before = exact_obs(
            torch.from_numpy(obs["image"])[None], torch.tensor([obs["direction"]]), torch.tensor([0])
        )
        taken = torch.nn.functional.one_hot(torch.tensor([action]), 7).float()
        motion = motion_probs(taken, before)
        canvas = model.move_canvas(model.write_real_view(model.empty_canvas(1), before), motion)
        window = canvas[0, model.view_index].reshape(7, 7, CELL_DIM + 1)
        seen = (window[..., -1] > 0) & torch.from_numpy(after["image"][..., 0] != 0)
        seen[AGENT_CELL] = False
        if action not in (0, 1, 2):  # pickup, drop and toggle change the cell ahead
            seen[3, 5] = False
        expected = exact_obs(torch.from_numpy(after["image"]), torch.tensor(0), torch.tensor(0))
        expected = torch.cat(expected.cells, -1)
        assert torch.equal(window[..., :CELL_DIM][seen], expected[seen]), action
        turned = turn_direction(
            torch.nn.functional.one_hot(torch.tensor([obs["direction"]]), 4).float(), motion
        )
        assert int(turned.argmax()) == after["direction"] and float(turned.max()) == 1.0
        moved = int(motion[0, 0]) == 1
        kind = {0: "left", 1: "right"}.get(
            action, "forward" if moved else ("blocked" if action == 2 else "stay")
        )
        counts[kind] = counts.get(kind, 0) + int(seen.sum())
    assert all(counts.get(k, 0) > 50 for k in ("left", "right", "forward", "blocked", "stay")), counts


def test_decoder_copies_an_unchanged_world():
    """With its learned residual silenced, the decoder repeats what the canvas and the visibility
    rule say: after a 'done' action (nothing moves) that is the previous view, unseen cells too."""
    model = GenerativeModel(GenerativeConfig(hidden_size=8, z_dim=2), "onehot", lang_dim=4, num_actions=7)
    with torch.no_grad():
        model.cells_net[-1].weight.zero_()
        model.cells_net[-1].bias.zero_()
        model.copy_gain.fill_(1.0)
    done = torch.nn.functional.one_hot(torch.tensor([6]), 7).float()
    n = moved_carrying = 0
    for obs, action, _, _, _ in _random_walk("BabyAI-UnlockPickup-v0", range(2), 40):
        real = exact_obs(
            torch.from_numpy(obs["image"])[None], torch.tensor([obs["direction"]]), torch.tensor([0])
        )
        canvas = model.write_real_view(model.empty_canvas(1), real)
        canvas = torch.cat([canvas, torch.randn(1, canvas.shape[1], model.config.map_channels)], -1)
        _, probs, _, _ = model.decode_step(
            torch.zeros(1, 8), canvas, real, done, torch.zeros(1, 2), torch.zeros(1, 4)
        )
        image, direction, _ = probs.codes()
        assert (
            torch.equal(image[0], torch.from_numpy(obs["image"]).long())
            and int(direction) == obs["direction"]
        )
        n += 1
        if action in (0, 1, 2):  # what the agent carries moves with it (its cell is not the floor)
            image = torch.from_numpy(obs["image"]).clone()
            image[AGENT_CELL] = torch.tensor([5, 1, 0])  # a green key
            held = exact_obs(image[None], torch.tensor([obs["direction"]]), torch.tensor([1]))
            canvas = model.write_real_view(model.empty_canvas(1), held)
            canvas = torch.cat([canvas, torch.zeros(1, canvas.shape[1], model.config.map_channels)], -1)
            taken = torch.nn.functional.one_hot(torch.tensor([action]), 7).float()
            _, probs, _, _ = model.decode_step(
                torch.zeros(1, 8), canvas, held, taken, torch.zeros(1, 2), torch.zeros(1, 4)
            )
            assert probs.codes()[0][0, AGENT_CELL[0], AGENT_CELL[1]].tolist() == [5, 1, 0]
            moved_carrying += int(action == 2 and obs["image"][3, 5, 0] == 1)
    assert n > 20 and moved_carrying > 0


def test_older_model_formats_are_refused(recording, tmp_path, capsys):
    _, data, _ = recording
    old = tmp_path / "old" / "model_final.pt"
    old.parent.mkdir()
    torch.save({"format_version": 1, "model_state": {}}, old)
    with pytest.raises(train_generative.GenerativeError, match="format 1 generative model"):
        train_generative.load_model(old)
    with pytest.raises(SystemExit) as e:
        generative_analysis.main(["--model", str(old), "--analysis", "samples"])
    assert e.value.code == 2 and capsys.readouterr().err.count("\n") == 1
    with pytest.raises(SystemExit) as e:  # nor resumed
        train_generative.main(
            ["--dataset", str(data), "--out", str(old.parent), "--resume", "--num_updates", "2"]
        )
    assert e.value.code == 2 and "format 1" in capsys.readouterr().err


def test_forced_actions_move_the_simulated_world(recording):
    """Training moves the world by the recorded actions: forcing 'turn left' at every step turns
    the decoded direction by one each step, whatever the agent would do."""
    checkpoint, out, meta = recording
    policy, encoder, config = load_policy(checkpoint)
    w = record.load_windows(out, 6)
    batch = train_generative.to_tensors(w, np.arange(min(4, len(w["image"]))))
    model = GenerativeModel(
        GenerativeConfig(num_init_steps=2, num_sim_steps=4, hidden_size=8, z_dim=2),
        "onehot",
        config["lang_dim"],
        config["num_actions"],
    )
    with torch.no_grad():
        model.cells_net[-1].weight.zero_()
        model.cells_net[-1].bias.zero_()
        model.head[-1].weight.zero_()
        model.head[-1].bias.zero_()
        model.copy_gain.fill_(1.0)
    lang_table = encoder(meta["missions"]).detach()
    init = generative.batch_init(batch, 2, lang_table)
    z = torch.zeros(len(batch["image"]), model.config.latent_size)
    left = torch.zeros(len(batch["image"]), 4, dtype=torch.long)  # Actions.left
    with torch.no_grad():
        forced = model.simulate(policy, init, z, forced_actions=left)
        own = model.simulate(policy, init, z, forced_actions=torch.full_like(left, -1))
        free = model.simulate(policy, init, z)
    start = batch["direction"][:, 1]
    decoded = torch.stack([o.direction.argmax(-1) for o in forced.obs_probs], 1)
    assert torch.equal(decoded, (start[:, None] - torch.arange(1, 5)) % 4)
    for a, b in zip(own.obs_probs, free.obs_probs):  # -1: the agent's own actions
        torch.testing.assert_close(a.direction, b.direction)


def test_start_frame_canvas_is_the_world():
    """The spatial latent's posterior reads the window's views laid out in the frame of its start
    step: every cell written there is the level's cell at that place (turns and walks, blocked
    walks included; the world does not change without pickup, drop or toggle)."""
    from minigrid.core.constants import DIR_TO_VEC

    rng = np.random.default_rng(1)
    K, c = CANVAS_SIZE, CANVAS_SIZE // 2
    for seed in range(3):
        env = make_env("BabyAI-UnlockPickup-v0", fast=False)
        obs, _ = env.reset(seed=seed)
        images, actions, poses = [], [], []
        for _ in range(24):
            images.append(obs["image"])
            poses.append((tuple(env.agent_pos), env.agent_dir))
            actions.append(int(rng.choice([0, 1, 2, 2, 2])))
            obs, *_ = env.step(actions[-1])
        start = 5
        views = torch.from_numpy(np.stack(images))[None]
        canvas = start_frame_canvas(views, torch.tensor([actions]), start)[0]
        (px, py), d = poses[start]
        forward, right = np.asarray(DIR_TO_VEC[d]), np.asarray(DIR_TO_VEC[(d + 1) % 4])
        seen = torch.nonzero(canvas[:, -1] > 0)[:, 0].tolist()
        for flat in seen:
            dx, dy = flat // K - c, flat % K - c
            wx, wy = np.asarray([px, py]) + dx * right - dy * forward
            cell = env.grid.get(int(wx), int(wy))
            expected = exact_obs(
                torch.tensor(cell.encode() if cell else (1, 0, 0)), torch.tensor(0), torch.tensor(0)
            )
            assert torch.equal(canvas[flat, :CELL_DIM], torch.cat(expected.cells, -1)), (seed, dx, dy)
        assert len(seen) > 30


def test_learning_rate_schedule():
    lr = train_generative.scheduled_lr
    assert lr(1e-3, "constant", 0.7) == 1e-3
    assert lr(1e-3, "cosine", 0.0) == pytest.approx(1e-3)
    assert lr(1e-3, "cosine", 0.5) == pytest.approx(1e-3 * (0.05 + 0.95 * 0.5))
    assert lr(1e-3, "cosine", 1.0) == lr(1e-3, "cosine", 3.0) == pytest.approx(5e-5)


def test_decoding_a_half_visible_cell():
    """A grey wall seen with probability 0.6 decodes as a grey wall, not as a red one (the unseen
    share's colour code 0 does not count for a seen cell); exact observations decode to themselves."""
    objects = torch.zeros(11)
    objects[0], objects[2] = 0.4, 0.6  # unseen or a wall
    colours = torch.tensor([0.4, 0, 0, 0, 0, 0]) + 0.6 * torch.tensor([0.3, 0, 0, 0, 0, 0.7])
    states = torch.tensor([1.0, 0, 0])
    cell = lambda x: x.expand(7, 7, -1).clone()  # noqa: E731
    direction, carrying = torch.tensor([1.0, 0, 0, 0]), torch.tensor([1.0, 0])
    obs = ObsProbs([cell(objects), cell(colours), cell(states)], direction, carrying)
    assert obs.codes()[0][0, 0].tolist() == [2, 5, 0]
    assert [int(c.argmax()) for c in (objects, colours)] == [2, 0]  # channel by channel: a red wall
    unseen = [cell(torch.nn.functional.one_hot(torch.tensor(0), n).float()) for n in (11, 6, 3)]
    hidden = ObsProbs(unseen, direction, carrying)
    assert hidden.codes()[0].sum() == 0
    rng = np.random.default_rng(0)
    image = torch.from_numpy(np.stack([rng.integers(0, n, (7, 7)) for n in (11, 6, 3)], -1))
    image[image[..., 0] == 0] = 0  # minigrid: unseen cells are (0, 0, 0)
    exact = exact_obs(image, torch.tensor(2), torch.tensor(1))
    assert torch.equal(exact.codes()[0], image) and torch.equal(exact.argmax().features(), exact.features())


def test_view_loss_scores_colour_and_state_only_where_seen():
    image = torch.zeros(1, 1, 7, 7, 3, dtype=torch.long)
    image[0, 0, 3, 5] = torch.tensor([2, 5, 0])  # a grey wall ahead, everything else unseen
    logits = ObsProbs([torch.randn(1, 7, 7, n) for n in (11, 6, 3)], torch.zeros(1, 4), torch.zeros(1, 2))
    base = view_loss([logits], image)
    hidden = ObsProbs([c.clone() for c in logits.cells], logits.direction, logits.carrying)
    hidden.cells[1][0, 0, 0] += torch.tensor([9.0, 0, 0, 0, 0, 0])  # colour of an unseen cell
    assert view_loss([hidden], image) == base
    shown = ObsProbs([c.clone() for c in logits.cells], logits.direction, logits.carrying)
    shown.cells[1][0, 3, 5] += torch.tensor([9.0, 0, 0, 0, 0, 0])  # the wall's colour: red now
    assert view_loss([shown], image) > base
    unseen = ObsProbs([c.clone() for c in logits.cells], logits.direction, logits.carrying)
    unseen.cells[0][0, 0, 0] += torch.tensor([9.0] + [0.0] * 10)  # more sure it is unseen
    assert view_loss([unseen], image) < base


def test_the_simulated_agent_acts_greedily_without_gradient():
    """Recorded agents act greedily: the simulated world moves by the one-hot argmax (not the
    blur of the softmax); z reaches the agent only through the views (no gradient through the
    choice, whose straight-through estimate misled maximise)."""
    logits = torch.tensor([[0.2, 0.1, 0.5, -1.0], [2.0, 0.0, 0.0, 0.0]], requires_grad=True)
    act = greedy_actions(logits)
    assert torch.equal(act, torch.tensor([[0.0, 0, 1, 0], [1, 0, 0, 0]])) and not act.requires_grad


def test_agreeing_prefix_ends_at_the_first_disagreement():
    """Views are compared with the recording only while the simulated agent has taken the
    recorded actions: step s counts if every action before it agreed (step 0 always does)."""
    n_init, A = 2, 4
    recorded = torch.tensor([[0, 0, 1, 2, 3], [0, 0, 1, 2, 3]])  # greedy actions, (B, n_init + S)
    simulated = torch.tensor([[1, 2, 3], [2, 2, 3]])  # the first row agrees, the second differs at 0
    sim = SimOutput([], [], torch.zeros(2, 3), AgentTrace(F.one_hot(simulated, A).float(), None, []), None)
    batch = {"logits": F.one_hot(recorded, A).float()}
    assert agreeing_prefix(sim, batch, n_init).tolist() == [[True, True, True], [True, False, False]]


# ----------------------------------------------------------------------------- bad input (tier 1)


def _refused(capsys, main, argv) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--max_steps", "0"], "--max_steps must be a whole number >= 1"),
        (["--max_steps", "-5"], "--max_steps"),
        (["--max_steps", "100000000000"], "<= 1e+06"),
        (["--num_episodes", "0"], "--num_episodes"),
        (["--num_envs", "5000"], "--num_envs"),
        (["--chunk_steps", "-1"], "--chunk_steps"),
    ],
)
def test_record_refuses_numbers_out_of_range(capsys, tmp_path, extra, message):
    argv = ["--checkpoint", str(tmp_path / "none.pt"), "--out", str(tmp_path / "rec"), *extra]
    assert message in _refused(capsys, record.main, argv)
    assert not (tmp_path / "rec").exists()


@pytest.mark.parametrize("main", [record.main, generative_analysis.main])
def test_a_bad_out_is_one_line(capsys, tmp_path, main):
    (tmp_path / "file").write_text("x")
    first = (
        ["--checkpoint", str(tmp_path / "none.pt")]
        if main is record.main
        else ["--model", str(tmp_path / "none.pt"), "--analysis", "samples"]
    )
    for out, message in (
        (tmp_path / "file" / "sub", "cannot be a folder"),
        (tmp_path / "file", "cannot be a folder"),
        (Path("/proc/rl_mop_no_such_folder"), "not writable"),  # unwritable even for root
    ):
        assert message in _refused(capsys, main, [*first, "--out", str(out)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--loss_scale_kl", "nan"], "--loss_scale_kl must be a finite number"),
        (["--lr", "nan"], "--lr must be a finite number"),
        (["--lr", "-1"], "--lr must be a number > 0"),
        (["--lr", "inf"], "--lr must be a finite number"),
        (["--kl_free_bits", "-0.1"], "--kl_free_bits"),
        (["--max_minutes", "nan"], "--max_minutes"),
        (["--action_forcing", "nan"], "--action_forcing"),
        (["--num_updates", "0"], "--num_updates"),
        (["--obs_temperature", "0"], "--obs_temperature"),
        (["--seed", "-1"], "--seed"),
    ],
)
def test_train_generative_refuses_bad_numbers(capsys, tmp_path, extra, message):
    argv = ["--dataset", str(tmp_path / "none"), "--out", str(tmp_path / "gen"), *extra]
    assert message in _refused(capsys, train_generative.main, argv)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--steps", "-1"], "--steps"),
        (["--alphas", "nan"], "--alphas must be a finite number"),
        (["--alphas", "1,x"], "--alphas must be comma-separated numbers"),
        (["--lr", "nan"], "--lr"),
        (["--lr", "0"], "--lr must be a number > 0"),
        (["--kl_weight", "-1"], "--kl_weight"),
        (["--num_samples", "0"], "--num_samples"),
        (["--num_windows", "-3"], "--num_windows"),
        (["--num_contexts", "0"], "--num_contexts"),
        (["--num_opt_contexts", "0"], "--num_opt_contexts"),
        (["--prior_scale", "inf"], "--prior_scale"),
        (["--prior_scale", "-1"], "--prior_scale"),
        (["--max_steps", "0"], "--max_steps"),
        (["--num_clusters", "0"], "--num_clusters"),
        (["--window", "1"], "--window"),
        (["--layer", "-1"], "--layer"),
        (["--component", "-2"], "--component"),
        (["--seed", "-1"], "--seed"),
        (["--num_threads", "0"], "--num_threads"),
        (["--modes", "leash,wild"], "--modes"),
        (["--analysis", "maximise"], "needs --target"),
    ],
)
def test_generative_analysis_validates_every_number(capsys, tmp_path, extra, message):
    argv = [
        "--model",
        str(tmp_path / "none.pt"),
        "--analysis",
        "samples",
        "--out",
        str(tmp_path / "o"),
        *extra,
    ]
    assert message in _refused(capsys, generative_analysis.main, argv)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- a toy agent


TOY_CELL, TOY_CODE = (3, 5), 6  # the cell ahead of the agent holds a ball


class ToyOut(NamedTuple):
    logits: torch.Tensor
    memory: torch.Tensor
    router_weights: list


class ToyAgent(torch.nn.Module):
    """An agent whose expert 1 weight is exactly the probability that the cell ahead holds a ball
    (the rest goes to expert 0); it always chooses 'done', so the simulated world stays put."""

    expert_sizes = ((0, 8),)
    memory_size = 4

    def step(self, x: torch.Tensor, lang: torch.Tensor, memory: torch.Tensor) -> ToyOut:
        p = x[:, (TOY_CELL[0] * 7 + TOY_CELL[1]) * CELL_DIM + TOY_CODE]
        logits = torch.zeros(len(x), 7)
        logits[:, 6] = 5.0
        return ToyOut(logits, memory, [torch.stack([1 - p, p], -1)])


def toy_model_and_contexts(batch: int = 4):
    torch.manual_seed(0)
    config = GenerativeConfig(
        num_init_steps=1, num_sim_steps=1, hidden_size=16, z_dim=4, decoder_channels=8, map_channels=2
    )
    model = GenerativeModel(config, "onehot", lang_dim=4, num_actions=7).eval()
    for p in model.parameters():
        p.requires_grad_(False)

    def contexts(seed: int) -> generative.Init:  # nothing seen yet: the decoder decides every cell
        g = torch.Generator().manual_seed(seed)
        none = torch.zeros(batch, 1, dtype=torch.long)
        image = torch.zeros(batch, 1, 7, 7, 3, dtype=torch.long)
        return generative.Init(image, none, none, torch.zeros(batch, 4), torch.randn(batch, 4, generator=g))

    return model, contexts(1), contexts(2)


def test_saliency_of_the_toy_agent_peaks_at_its_cell():
    from mop import generative_probes as probes

    model, init, _ = toy_model_and_contexts()
    with torch.no_grad():
        sim = model.simulate(ToyAgent(), init, torch.zeros(4, model.config.latent_size))
    sal = probes.saliency_maps(
        ToyAgent(), "onehot", sim.obs_probs, init.lang, sim.memory_start, ("router", 0, 1), [[0, 8]]
    )
    cell_map = sal.cells.mean((0, 1))
    assert probes.peak_cell(cell_map) == TOY_CELL and cell_map.sum() == pytest.approx(cell_map[TOY_CELL])
    assert sal.memory.sum() == 0  # the toy ignores its memory


@pytest.mark.slow
def test_maximise_finds_the_toy_agents_cell_and_the_leash_does_not_move():
    """Over the typical set, z raises the toy's expert weight on held-out contexts, and what it
    changed most in the views is the ball probability of the one cell the weight reads; under the
    default leash (weight 0.01 over thousands of dimensions) no step pays for itself: 'did not move'."""
    from mop import generative_probes as probes

    model, opt, report = toy_model_and_contexts()
    target, runs = ("router", 0, 1), {}
    for mode in ("typical", "leash"):
        runs[mode] = probes.maximise_target(
            model, ToyAgent(), opt, report, target, [[0, 8]], mode, 60, 0.05, 0.01
        )
    typical = runs["typical"].summary
    assert typical["verdict"] == "moved" and typical["soft_change_ci"][0] > 0
    assert typical["soft_change"] >= probes.MIN_SOFT_CHANGE

    def ball(sim) -> np.ndarray:  # (7, 7) probability of a ball per view cell
        return torch.stack([o.cells[0][..., TOY_CODE] for o in sim.obs_probs], 1).mean((0, 1)).numpy()

    found = ball(runs["typical"].sim_after) - ball(runs["typical"].sim_reference)
    assert probes.peak_cell(found) == TOY_CELL
    leash = runs["leash"].summary
    assert leash["verdict"] == "did not move" and math.isnan(leash["fidelity"])
    assert abs(leash["soft_change"]) < probes.MIN_SOFT_CHANGE


def test_verdicts_edits_and_cluster_agreement():
    from mop import generative_probes as probes

    moved = probes.change_summary(np.full(20, 0.05) + np.linspace(-0.01, 0.01, 20), np.full(20, 0.04))
    assert moved["verdict"] == "moved" and moved["fidelity"] == pytest.approx(0.8)
    noise = probes.change_summary(np.linspace(-0.05, 0.06, 20), np.zeros(20))
    assert noise["verdict"] == "did not move"  # its interval holds 0
    tiny = probes.change_summary(np.full(20, 0.002), np.full(20, 0.002))
    assert tiny["verdict"] == "did not move" and math.isnan(tiny["fidelity"])  # below MIN_SOFT_CHANGE
    lowered = probes.change_summary(np.full(20, -0.03), np.full(20, -0.03), sign=-1.0)
    assert lowered["verdict"] == "moved"
    # "did not move" where the positive control moved; "not measured" where it did not move either
    runs = [
        {"role": "target", "mode": "leash", "verdict": "did not move"},
        {"role": "control", "mode": "leash", "verdict": "did not move"},
        {"role": "target", "mode": "typical", "verdict": "did not move"},
        {"role": "target", "mode": "typical", "verdict": "moved"},
        {"role": "control", "mode": "typical", "verdict": "moved"},
    ]
    verdicts = [r["verdict"] for r in probes.calibrate_verdicts(runs)]
    assert verdicts == ["not measured", "did not move", "did not move", "moved", "moved"]
    u, mean = torch.tensor([0.6, 0.8, 0.0]), torch.tensor([1.0, 1.0, 1.0])
    memory = torch.tensor([[2.0, 3.0, 5.0]])
    projection = float((memory - mean) @ u)
    collapsed = probes.edit_function("collapse", u, mean)(0, memory)
    swapped = probes.edit_function("swap", u, mean)(0, memory)
    assert float((collapsed - mean) @ u) == pytest.approx(0.0, abs=1e-6)  # float32
    assert float((swapped - mean) @ u) == pytest.approx(-projection)
    assert torch.equal(probes.edit_function("none", u, mean)(0, memory), memory)
    assert collapsed[0, 2] == swapped[0, 2] == 5.0  # orthogonal to u: untouched
    a = np.array([0, 0, 1, 1, 2, 2])
    assert probes.adjusted_rand(a, a) == 1.0 and probes.adjusted_rand(a, np.array([5, 5, 0, 0, 9, 9])) == 1.0
    assert probes.adjusted_rand(a, np.array([0, 1, 0, 1, 0, 1])) < 0.1


def test_memory_blocks_cover_the_agents_memory():
    from mixture_of_experts import MixtureOfExpertsPolicy, MoPConfig
    from mop import generative_probes as probes

    policy = MixtureOfExpertsPolicy(MoPConfig(expert_hidden_sizes=((0, 16, 32), (0, 8))))
    blocks = probes.memory_blocks(policy)
    assert sum(w for _, w in blocks) == policy.memory_size
    assert [name for name, _ in blocks][:3] == [
        "layer 0 router",
        "layer 0 expert 1 (16)",
        "layer 0 expert 2 (32)",
    ]


# ----------------------------------------------------------------------------- one writer per folder, resume


def _training(data, out, updates: int, *extra: str) -> list[str]:
    return [
        "--dataset", str(data), "--out", str(out), "--num_init_steps", "2", "--num_sim_steps", "4",
        "--hidden_size", "32", "--z_dim", "4", "--no_progress", "--max_held_out", "4",
        "--num_updates", str(updates), *extra,
    ]  # fmt: skip


def _start(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "train_generative.py", *argv],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(condition, process: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_a_second_training_into_one_out_is_refused(recording, tmp_path, capsys):
    _, data, _ = recording
    out = tmp_path / "gen"
    first = _start(_training(data, out, 100_000, "--log_interval", "1"))
    try:
        _wait_for(lambda: (out / "metrics.jsonl").is_file(), first)
        err = _refused(capsys, train_generative.main, _training(data, out, 3))
        assert "is being trained by pid" in err
        assert first.poll() is None  # the first goes on
    finally:
        first.kill()
        first.wait()


def test_resume_after_sigkill_logs_every_update_once(recording, tmp_path):
    _, data, _ = recording
    out = tmp_path / "gen"
    argv = _training(data, out, 100_000, "--log_interval", "1", "--checkpoint_interval", "3")

    def rows() -> list[int]:
        path = out / "metrics.jsonl"
        return (
            [json.loads(line)["update"] for line in path.read_text().splitlines()] if path.is_file() else []
        )

    run = _start(argv)
    try:  # killed after a checkpoint with updates logged beyond it
        _wait_for(lambda: (out / "model_3.pt").is_file() and len(rows()) >= 5 and len(rows()) % 3 != 0, run)
        run.send_signal(signal.SIGKILL)
        run.wait()
    finally:
        if run.poll() is None:
            run.kill()
    logged = rows()
    assert logged == list(range(1, len(logged) + 1)) and len(logged) > max(
        int(p.stem.split("_")[1]) for p in out.glob("model_[0-9]*.pt")
    )  # updates after the newest checkpoint were logged, then lost with the process
    final = len(logged) + 2
    train_generative.main([*argv[: argv.index("--num_updates")], "--num_updates", str(final), "--log_interval",
                           "1", "--checkpoint_interval", "3", "--resume"])  # fmt: skip
    assert rows() == list(range(1, final + 1))  # each update once


def test_resume_from_a_crafted_pickle_is_one_line_and_runs_no_code(recording, tmp_path, capsys):
    """A folder whose newest model file is a pickle that would run code when unpickled: --resume
    refuses it in one line (torch.load's weights_only refuses the global), and the code never ran."""
    _, data, _ = recording
    out = tmp_path / "gen"
    out.mkdir()
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    torch.save({"format_version": 1, "x": Payload()}, out / "model_5.pt")
    err = _refused(capsys, train_generative.main, [*_training(data, out, 8), "--resume"])
    assert "model_5.pt" in err and "UnpicklingError" in err
    assert not marker.exists()


def test_tost_p_is_the_projects_tost_and_there_is_none_without_spread():
    """One equivalence test in the project (inference.tost_paired): identical changes over the
    contexts are no test (NaN, verdict 'not resolved' saying so), not an equivalence at p = 0."""
    from mop import generative_probes as probes
    from mop.inference import tost_paired

    d = np.random.default_rng(0).normal(0.01, 0.02, 12)
    assert probes.tost_p(d, 0.05) == tost_paired(d, 0.05)["p"]
    assert math.isnan(probes.tost_p(np.zeros(8), 0.05)) and math.isnan(probes.tost_p(np.ones(1), 0.05))
    row = {"target": "action:2", "role": "target", "mode": "typical", "soft_changes": [0.0] * 8}
    (out,) = probes.verdicts([row | {"soft_change": 0.0}], margin=0.05)
    assert out["verdict"] == "not resolved" and "no spread" in out["why"]


def test_generative_verdicts_have_a_family_and_the_control_decides_none():
    """Issue 40: Holm over the targets of a mode; 'did not move' only from a TOST at a margin; the
    control's own test no longer rewrites any target's verdict; each target against the control."""
    from mop import generative_probes as probes

    rng = np.random.default_rng(0)
    strong = 0.05 + rng.normal(0, 0.01, 16)
    weak = 0.012 + rng.normal(0, 0.01, 16)  # p about 0.001 alone; Holm over 9 targets decides
    null = [rng.normal(0, 0.002, 16) for _ in range(7)]

    def rows(control: np.ndarray) -> list[dict]:
        out = [
            {"target": f"t{i}", "role": "target", "mode": "typical"} | probes.change_summary(c, c)
            for i, c in enumerate([strong, weak, *null])
        ]
        return out + [
            {"target": "action:2", "role": "control", "mode": "typical"}
            | probes.change_summary(control, control)
        ]

    flat = probes.verdicts(rows(rng.normal(0, 0.002, 16)))
    moving = probes.verdicts(rows(0.1 + rng.normal(0, 0.01, 16)))
    assert [r["verdict"] for r in flat[:9]] == [
        r["verdict"] for r in moving[:9]
    ]  # the control decides nothing
    assert flat[0]["verdict"] == "moved" and all(r["verdict"] == "not resolved" for r in flat[2:9])
    assert flat[1]["p_holm"] == pytest.approx(min(1.0, 8 * flat[1]["p"])) or flat[1]["p_holm"] >= flat[1]["p"]
    assert "9 target(s)" in flat[0]["family"] and "control alone" in flat[-1]["family"]
    assert (
        moving[2]["vs_control"] < 0 and moving[2]["vs_control_p_holm"] < 0.05
    )  # moved less than the control
    equivalent = probes.verdicts(rows(rng.normal(0, 0.002, 16)), margin=0.01)
    assert all(r["verdict"] == "did not move" and r["tost_p_holm"] < 0.05 for r in equivalent[2:9])
    with pytest.raises(ValueError):
        probes.verdicts(rows(strong), margin=0.0)
    # a target that cannot be tested (one context) stays in the family as p = 1: the weak target's
    # Holm p is over the 9 targets asked, not the 8 the data let run (inference.holm_over_asked)
    short = rows(rng.normal(0, 0.002, 16))
    short[-2] |= probes.change_summary(null[-1][:1], null[-1][:1])
    one = probes.verdicts(short)
    ps = sorted(r["p"] for r in one[:8])
    assert math.isnan(one[8]["p"]) and math.isnan(one[8]["p_holm"])
    assert one[0]["p_holm"] == pytest.approx(min(1.0, 9 * ps[0]))
