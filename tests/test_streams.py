"""Streamed learner columns (issue 41, mop/streams.py): stored episodes played back to back in
persistent columns whose memory the learner carries, against the padded path that cuts them into
windows and rebuilds each window's memory with a no-grad pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import fake_episode, tiny_config
from mop.babyai_env import encode_obs
from mop.experiment import ConfigError
from mop.replay_buffer import EpisodeBuffer, replay_columns
from mop.streams import EpisodeColumns

TASK = "BabyAI-GoToRedBallGrey-v0"


def _in_order(episodes):
    """A source that hands out the episodes in order (ids 0, 1, ...)."""
    drawn = iter(range(len(episodes)))
    return (lambda: next(drawn)), (lambda i: episodes[i])


def _sum_ce(out, labels, mask):
    """A loss that adds over labelled steps, so the gradients of two batches add up."""
    return F.cross_entropy(out.logits[mask], labels[mask], reduction="sum"), {}


def _learner(tmp_path, **overrides):
    from mixture_of_experts import build_policy
    from mop.imitation import Learner

    cfg = tiny_config(tmp_path, max_grad_norm=None, **overrides)
    return Learner.build(cfg, "mop", build_policy, _sum_ce, None)


def _logits(learner, chunk, memory=None, done=None):
    t = torch.from_numpy
    obs = encode_obs(t(chunk["image"]), t(chunk["direction"]), t(chunk["carrying"]), learner.cfg.obs_encoding)
    lang = learner.encoder(chunk["missions"])[t(chunk["mission_index"])]
    memory = chunk["memory"] if memory is None else memory
    return learner.policy.forward_sequence(obs, lang, memory, t(chunk["done"] if done is None else done))


def _grads(learner):
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in learner.params]


# Episodes whose lengths fill two 4-step columns exactly over two updates: column 0 plays
# 0 (5 steps) then 3 (3 steps), column 1 plays 1 (2) then 2 (6).
LENGTHS = (5, 2, 6, 3)
MISSIONS = ("go to the red ball", "go to the grey key", "go to the red ball", "pick up the box")


def _episodes():
    return [fake_episode(n, seed=k, mission=m) for k, (n, m) in enumerate(zip(LENGTHS, MISSIONS))]


# Two 8-step columns over three updates: column 0 plays 3, 5, 12, 4 steps, column 1 plays 6, 2, 16
# (in draw order 3, 5, 6, 2, 12, 16, 4). The two long episodes cross an update boundary at their
# step 8, where the padded path cuts its windows too, so truncated BPTT cuts both at the same steps.
ALIGNED = (3, 5, 6, 2, 12, 16, 4)


def test_streamed_loss_and_gradients_equal_the_padded_learners_when_memory_is_recomputed(tmp_path):
    """With the weights held still (lr 0), carried memory IS the recomputed memory: three streamed
    updates give the padded learner's summed loss and gradients on the same episodes."""
    learner = _learner(tmp_path)
    episodes = [fake_episode(n, seed=k, mission=MISSIONS[k % 4]) for k, n in enumerate(ALIGNED)]
    padded = replay_columns(episodes, learner.policy, learner.encoder, 8, learner.cfg.obs_encoding)
    assert padded["done"].shape[1] == 9 and not padded["label_mask"].all()  # 9 windows, 24 steps of padding
    learner.step(padded, lr=0.0)
    want = _grads(learner)
    with torch.no_grad():
        want_loss = _sum_ce(
            _logits(learner, padded),
            torch.from_numpy(padded["label"]),
            torch.from_numpy(padded["label_mask"]),
        )[0]

    stream = EpisodeColumns(2, 8, *_in_order(episodes), learner.policy.memory_size)
    got = [torch.zeros_like(g) for g in want]
    got_loss = 0.0
    for _ in range(3):
        chunk = stream.next_chunk()
        assert chunk["label_mask"].all()  # no padding: every step is an episode's
        with torch.no_grad():
            got_loss += float(
                _sum_ce(
                    _logits(learner, chunk),
                    torch.from_numpy(chunk["label"]),
                    torch.from_numpy(chunk["label_mask"]),
                )[0]
            )
        learner.step(chunk, lr=0.0)
        stream.carry(learner.end_memory)
        got = [a + b for a, b in zip(got, _grads(learner))]
    assert stream.episode_ids == [6, 5] and stream.offsets == [4, 16]  # every episode played once
    assert got_loss == pytest.approx(float(want_loss), rel=1e-5)
    for a, b in zip(got, want):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)


def test_carried_memory_is_exactly_one_update_stale(tmp_path):
    """With a real step, the memory a column carries into the next update is the one the weights
    before that step computed (and not what the stepped weights would recompute)."""
    learner = _learner(tmp_path)
    episodes = _episodes()
    stream = EpisodeColumns(2, 4, *_in_order(episodes), learner.policy.memory_size)
    chunk = stream.next_chunk()
    with torch.no_grad():
        before = _logits(learner, chunk).memory  # the weights this update steps from
    learner.step(chunk)
    stream.carry(learner.end_memory)
    with torch.no_grad():
        after = _logits(learner, chunk).memory  # what the new weights would rebuild
    assert torch.allclose(stream.memory, before, atol=1e-6)
    assert stream.memory[0].abs().sum() > 0  # column 0 is inside episode 0: memory carried
    assert not torch.allclose(stream.memory[0], after[0], atol=1e-6)  # the staleness, one step
    assert torch.equal(stream.memory[1], torch.zeros_like(stream.memory[1])) or stream.offsets[1] != 6


def test_an_episode_ending_inside_a_column_never_leaks_memory_into_the_next(tmp_path):
    learner = _learner(tmp_path)
    first, second = fake_episode(3, seed=1), fake_episode(5, seed=2, mission="go to the grey key")
    stream = EpisodeColumns(1, 8, *_in_order([first, second]), learner.policy.memory_size)
    chunk = stream.next_chunk()
    assert chunk["done"][:, 0].tolist() == [False, False, True, False, False, False, False, True]
    alone = EpisodeColumns(1, 5, *_in_order([second]), learner.policy.memory_size).next_chunk()
    with torch.no_grad():
        streamed = _logits(learner, chunk).logits[3:, 0]
        fresh = _logits(learner, alone).logits[:, 0]
        # the same chunk without the reset: the first episode's memory flows into the second
        leaked = _logits(learner, chunk, done=np.zeros_like(chunk["done"])).logits[3:, 0]
    assert torch.allclose(streamed, fresh, atol=1e-6)
    assert not torch.allclose(leaked, fresh, atol=1e-4)
    # an episode that ends on a chunk's last step hands the next chunk zero memory
    with torch.no_grad():
        end = _logits(learner, chunk).memory
    stream.carry(end)
    assert torch.equal(stream.memory, torch.zeros_like(stream.memory))


def test_stream_state_resumes_exactly_even_when_its_episodes_were_evicted(tmp_path):
    buffer = EpisodeBuffer(3, TASK, seed=7)
    buffer.extend([fake_episode(n, seed=k) for k, n in enumerate((9, 4, 7))])
    stream = EpisodeColumns(2, 3, buffer.draw_uniform, buffer.get, memory_size=6)
    stream.next_chunk()
    stream.carry(torch.randn(2, 6))
    buffer.extend([fake_episode(5, seed=10 + k) for k in range(3)])  # every episode in play evicted
    path = tmp_path / "state.pt"
    torch.save(stream.state(), path)
    buffer.save(tmp_path / "buffer.npz")
    state = torch.load(path, weights_only=True)
    assert state["held"]  # the evicted episodes in play travel with the state
    restored_buffer, _ = EpisodeBuffer.load(tmp_path / "buffer.npz", TASK)
    restored = EpisodeColumns(2, 3, restored_buffer.draw_uniform, restored_buffer.get, memory_size=6)
    restored.load_state(state)
    for _ in range(4):
        a, b = stream.next_chunk(), restored.next_chunk()
        assert a["missions"] == b["missions"] and torch.equal(a["memory"], b["memory"])
        for key in ("image", "direction", "label", "label_mask", "done", "mission_index"):
            assert np.array_equal(a[key], b[key]), key
        memory = torch.randn(2, 6)
        stream.carry(memory)
        restored.carry(memory)
    with pytest.raises(ValueError, match="stream state of 2 columns"):
        EpisodeColumns(3, 3, buffer.draw_uniform, buffer.get, memory_size=6).load_state(state)


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"batch_columns": 0}, "batch_columns must be an integer >= 1"),
        ({"batch_columns": -4}, "batch_columns must be an integer >= 1"),
        ({"batch_columns": 2.5}, "batch_columns"),
        ({"batch_columns": "many"}, "batch_columns"),
        ({"batch_columns": 2**20}, r"batch_columns x unroll_len must be at most .* \(memory\)"),
        ({"learner_stream": "chunked"}, "learner_stream must be 'padded' or 'streamed'"),
    ],
)
def test_bad_stream_settings_are_refused(tmp_path, overrides, match):
    with pytest.raises(ConfigError, match=match):
        tiny_config(tmp_path, **overrides)


@pytest.mark.slow
def test_streamed_demos_resume_the_stream_and_the_frame_gradients_exactly(tmp_path):
    import train_mop
    from mop.experiment import read_metrics

    demos_dir = str(tmp_path / "demos")
    keys = dict(demos=20, demos_dir=demos_dir, learner_stream="streamed", batch_columns=3)
    train_mop.main(tiny_config(tmp_path / "a", num_updates=9, **keys), progress=False)
    train_mop.main(tiny_config(tmp_path / "b", num_updates=5, **keys), progress=False)
    train_mop.main(tiny_config(tmp_path / "b", num_updates=9, **keys), resume=True, progress=False)
    runs = [tmp_path / x / TASK / "trial_0" for x in "ab"]
    a, b = (torch.load(r / "checkpoint_final.pt", weights_only=True) for r in runs)
    assert a["demo_sampler"]["stream"]["episode_ids"] == b["demo_sampler"]["stream"]["episode_ids"]
    assert a["demo_sampler"]["stream"]["offsets"] == b["demo_sampler"]["stream"]["offsets"]
    assert torch.equal(a["demo_sampler"]["stream"]["memory"], b["demo_sampler"]["stream"]["memory"])
    assert a["demo_sampler"]["stream"]["memory"].abs().sum() > 0  # the learner carried it back
    for key, value in a["policy_state_dict"].items():
        assert torch.equal(value, b["policy_state_dict"][key]), key
    rows = [read_metrics(r / "metrics.jsonl")[-1] for r in runs]
    assert rows[0]["train/frame_gradients"] == rows[1]["train/frame_gradients"] == 9 * 3 * 8
    assert a["stats"]["frame_gradients"] == 9 * 3 * 8


@pytest.mark.slow
def test_streamed_dagger_replays_columns_and_resumes_them(tmp_path):
    import train_mop

    keys = dict(buffer_episodes=20, max_steps=12, learner_stream="streamed", batch_columns=2)
    train_mop.main(tiny_config(tmp_path, num_updates=3, **keys), progress=False)
    run = tmp_path / TASK / "trial_0"
    ckpt = torch.load(run / "checkpoint_final.pt", weights_only=True)
    assert ckpt["replay_stream"]["columns"] == 2 and ckpt["replay_stream"]["memory"].shape[0] == 2
    summary = train_mop.main(tiny_config(tmp_path, num_updates=6, **keys), resume=True, progress=False)
    assert summary["final"]["train/replay_frames"] == 2 * 8


def test_frame_gradients_count_labelled_frames_times_passes(tmp_path):
    from mop.imitation import TrainState

    learner = _learner(tmp_path, epochs=2)
    episodes = _episodes()
    episodes[1].label[:] = -1  # a step the bot could not label gets no gradient
    chunk = EpisodeColumns(2, 4, *_in_order(episodes), learner.policy.memory_size).next_chunk()
    parts = learner.step(chunk)
    assert parts["frame_gradients"] == 2 * (8 - 2)
    state = TrainState.start(learner.cfg, None)
    chunk.update(episodes=[], slot_states=None)
    for _ in range(2):
        state.record(chunk, dict(parts))
    assert state.log_row()["train/frame_gradients"] == 4 * 6
    assert "frame_gradients" not in state.window["sums"]  # a counter, not a per-update mean


def test_shuffled_passes_visit_every_episode_once_per_pass_and_resume(tmp_path):
    from mop.streams import ShuffledPasses

    passes = ShuffledPasses(5, seed=3)
    first = [passes.draw() for _ in range(5)]
    assert sorted(first) == list(range(5)) and passes.epoch == 1
    passes.draw()
    torch.save(passes.state(), tmp_path / "s.pt")
    again = ShuffledPasses(5, seed=99)
    again.load_state(torch.load(tmp_path / "s.pt", weights_only=True))
    assert [again.draw() for _ in range(7)] == [passes.draw() for _ in range(7)]
    with pytest.raises(ValueError, match="5 episodes"):
        ShuffledPasses(6).load_state(passes.state())


def test_the_streams_bench_takes_the_batch_shape_flags_given():
    """bench/learner_throughput.py --streams measured each recipe at its own unroll_len and silently
    ignored `--unroll_len 256`; given flags now override every recipe's shape, absent ones leave it."""
    import argparse

    import learner_throughput as lt

    given = lt.shape_overrides(argparse.Namespace(num_envs=None, unroll_len=256))
    assert given == {"unroll_len": 256}
    cfg = lt.stream_recipe("default", given)
    assert (cfg.unroll_len, cfg.num_envs) == (256, lt.stream_recipe("default", {}).num_envs)


def test_the_streams_bench_times_one_recurrence_on_the_same_batches():
    """--one_recurrence adds the recipe's own column count with each layer's GRUs in one
    block-diagonal recurrence: its matmuls carry the zero blocks the split learner skips (more
    FLOPs per frame on the same batches), and the shipped SPLIT_UNITS is left as it was."""
    import learner_throughput as lt

    import mixture_of_experts as moe

    cfg = lt.stream_recipe(
        "default",
        {"num_envs": 2, "unroll_len": 4, "num_workers": 0, "expert_hidden_sizes": [[0, 8, 130]]},
    )
    pool = lt.episode_pool(cfg, 40)
    out = lt.stream_arms(cfg, pool, [2], 1, 1e9, one_recurrence=True)
    assert {"padded", "streamed 2", "streamed 2 fused"} <= set(out)
    assert out["streamed 2 fused"]["flops_per_frame"] > out["streamed 2"]["flops_per_frame"]
    assert moe.SPLIT_UNITS == 128
    assert "streamed 2 fused" not in lt.stream_arms(cfg, pool, [2], 1, 1e9)


def test_the_learner_bench_times_one_recurrence_per_thread_count(tmp_path, capsys):
    """bench/learner_throughput.py --one_recurrence without --streams: each --cpu_threads count is
    timed for the split learner and for one recurrence per layer on the same batch, and the ratio
    printed; the shipped SPLIT_UNITS is left as it was."""
    import learner_throughput as lt
    import yaml

    import mixture_of_experts as moe

    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"expert_hidden_sizes": [[0, 8, 130]], "num_workers": 0}))
    out = lt.main(
        ["--recipes", str(recipe), "--num_envs", "2", "--unroll_len", "4", "--updates", "1"]
        + [
            "--e2e_updates",
            "0",
            "--cpu_threads",
            "1",
            "--workers",
            "0",
            "--device",
            "cpu",
            "--one_recurrence",
        ]
    )
    assert "split / one: " in capsys.readouterr().out
    assert set(out["results"][0]["learner_cpu_threads_fused"]) == {1}
    assert moe.SPLIT_UNITS == 128
