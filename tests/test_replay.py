"""The DAgger aggregation buffer and offline behavioural cloning from bot demos (issue 9)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mixture_of_experts
from conftest import fake_episode, tiny_config
from mop.babyai_env import DEMO_SEED_START, EVAL_SEED_START, TRAIN_SEED_START, demo_episode_seed
from mop.experiment import ConfigError, load_checkpoint
from mop.replay_buffer import (
    BufferError,
    EpisodeAssembler,
    EpisodeBuffer,
    concat_chunks,
    replay_columns,
    replay_frames_for,
)

TASK = "BabyAI-GoToRedBallGrey-v0"


def test_buffer_is_bounded_oldest_first_and_round_trips(tmp_path):
    buf = EpisodeBuffer(3, TASK, seed=1)
    buf.extend([fake_episode(n, seed=n) for n in (2, 3, 4, 5, 6)])
    assert [ep.seed for ep in buf.episodes] == [4, 5, 6]  # the two oldest left
    assert buf.frames == 15 and buf.added == 5
    buf.sample_frames(7)  # advance the sampling stream: it must survive the round trip too
    path = buf.save(tmp_path / "b.npz", update=12)
    back, meta = EpisodeBuffer.load(path, TASK)
    assert meta["update"] == 12 and back.capacity == 3 and back.added == 5 and back.frames == 15
    assert all(a.equals(b) for a, b in zip(buf.episodes, back.episodes)) and len(back) == 3
    assert [ep.seed for ep in back.sample_frames(20)] == [ep.seed for ep in buf.sample_frames(20)]


def test_buffer_refuses_other_levels_versions_and_damage(tmp_path):
    buf = EpisodeBuffer(2, TASK)
    buf.extend([fake_episode(3, 0)])
    path = buf.save(tmp_path / "b.npz")
    with pytest.raises(
        BufferError, match="holds episodes of BabyAI-GoToRedBallGrey-v0, not BabyAI-GoToLocal-v0"
    ):
        EpisodeBuffer.load(path, "BabyAI-GoToLocal-v0")
    newer = tmp_path / "newer.npz"
    buf.save(newer, format_version=99)
    with pytest.raises(BufferError, match="format version 99"):
        EpisodeBuffer.load(newer, TASK)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(path.read_bytes()[:100])
    with pytest.raises(BufferError, match="not a readable episode buffer"):
        EpisodeBuffer.load(bad, TASK)


def test_a_full_disk_never_leaves_half_a_buffer(tmp_path, monkeypatch):
    buf = EpisodeBuffer(2, TASK)
    buf.extend([fake_episode(3, 0)])

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez_compressed", full)
    with pytest.raises(OSError):
        buf.save(tmp_path / "b.npz")
    assert list(tmp_path.iterdir()) == []


def test_split_and_copy_for_forks():
    buf = EpisodeBuffer(10, TASK, seed=0)
    buf.extend([fake_episode(2, seed=s) for s in range(7)])
    a, b = buf.split((1, 2))
    assert [e.seed for e in a.episodes] == [0, 2, 4, 6] and [e.seed for e in b.episodes] == [1, 3, 5]
    c = buf.copy(seed=5)
    c.extend([fake_episode(2, 99)])
    assert len(buf) == 7 and len(c) == 8  # independent containers


def test_replay_frames_for_ratio():
    assert replay_frames_for(100, 0.0) == 0
    assert replay_frames_for(100, 0.5) == 100
    assert replay_frames_for(90, 0.25) == 30


def _collect_episodes(cfg, chunks: int, window_policy=None):
    """Real collector chunks of a tiny policy acting (no teacher forcing), cut into episodes."""
    from mop.collection import Collector
    from mop.experiment import run_seed
    from mop.language import build_mission_encoder

    torch.manual_seed(0)
    from mop.babyai_env import make_env, obs_dim

    env = make_env(cfg.task_id)
    model_config = {
        **cfg.__dict__,
        "policy_type": "mop",
        "input_dim": obs_dim(cfg.obs_encoding),
        "num_actions": int(env.action_space.n),
    }
    policy = mixture_of_experts.build_policy(model_config)
    encoder = build_mission_encoder(cfg.lang_encoder, cfg.lang_dim, None, None, run_seed(cfg))
    collector = Collector(cfg.task_id, list(range(cfg.num_envs)), 0, cfg.max_steps, cfg.obs_encoding)
    assembler = EpisodeAssembler(cfg.num_envs)
    episodes, reported = [], []
    for _ in range(chunks):
        chunk = collector.collect(policy, encoder, cfg.unroll_len)
        episodes += assembler.add(chunk)
        reported += [ep for _, ep in chunk["episodes"]]
    return policy, encoder, episodes, reported


def test_assembled_episodes_are_the_collectors_episodes(tmp_path):
    cfg = tiny_config(tmp_path, num_envs=3, unroll_len=16, max_steps=20)
    _, _, episodes, reported = _collect_episodes(cfg, chunks=6)
    assert len(episodes) == len(reported) >= 6
    assert [(ep.seed, len(ep), ep.mission) for ep in episodes] == [
        (e.seed, e.length, e.mission) for e in reported
    ]
    assert all(ep.seed >= TRAIN_SEED_START for ep in episodes)


def test_replayed_windows_give_the_logits_of_acting_through_the_episode(tmp_path):
    """The no-grad memory pass + windows equals stepping the policy through each episode."""
    from mop.babyai_env import encode_obs
    from mop.collection import MissionCache

    cfg = tiny_config(tmp_path, num_envs=3, unroll_len=16, max_steps=20)
    policy, encoder, episodes, _ = _collect_episodes(cfg, chunks=4)
    episodes = episodes[:5]
    policy.eval()
    encoder.eval()
    window = 3  # shorter than the episodes: memory must be carried across windows
    cols = replay_columns(episodes, policy, encoder, window, cfg.obs_encoding)
    with torch.no_grad():
        lang = encoder(cols["missions"])[torch.from_numpy(cols["mission_index"])]
        obs = encode_obs(
            torch.from_numpy(cols["image"]),
            torch.from_numpy(cols["direction"]),
            torch.from_numpy(cols["carrying"]),
            cfg.obs_encoding,
        )
        replayed = policy.forward_sequence(obs, lang, cols["memory"], torch.from_numpy(cols["done"])).logits
        missions = MissionCache(encoder)
        longest = max(len(e) for e in episodes)
        # replay_columns' column order: window-major, episodes inside, windows with a real step
        order = [
            (w, b)
            for w in range(-(-longest // window))
            for b in range(len(episodes))
            if w * window < len(episodes[b])
        ]
        c = 0
        for b, ep in enumerate(episodes):
            memory = policy.init_memory(1)
            acted = []
            for t in range(len(ep)):
                x = encode_obs(
                    torch.from_numpy(ep.image[t : t + 1]),
                    torch.from_numpy(ep.direction[t : t + 1].astype(np.int64)),
                    torch.from_numpy(ep.carrying[t : t + 1]),
                    cfg.obs_encoding,
                )
                out = policy.step(x, missions([ep.mission]), memory)
                memory = out.memory
                acted.append(out.logits[0])
            cols_of = [i for i, (w, bb) in enumerate(order) if bb == b]  # its windows, in order
            got = torch.cat([replayed[:, i] for i in cols_of])[: len(ep)]
            assert torch.allclose(got, torch.stack(acted), atol=1e-5)
            c += 1
    assert c == 5
    # labels: the replay batch keeps the bot's labels where it gave them
    assert cols["label_mask"].sum() == sum(int((ep.label >= 0).sum()) for ep in episodes)


def test_concat_keeps_missions_consistent():
    from mop.collection import STEP_KEYS, empty_chunk

    a = {**empty_chunk(2, 1), "missions": ["go to the red ball"], "memory": torch.zeros(1, 4)}
    b = dict(a, missions=["pick up the key", "go to the red ball"], mission_index=np.array([[0, 1], [0, 1]]))
    b = {**b, **{k: np.concatenate([a[k], a[k]], 1) for k in STEP_KEYS}}
    b["memory"] = torch.zeros(2, 4)
    out = concat_chunks(a, b)
    names = [out["missions"][i] for i in out["mission_index"][0]]
    assert names == ["go to the red ball", "pick up the key", "go to the red ball"]


# ----------------------------------------------------------------------------- demos


def test_demo_seeds_lie_between_evaluation_and_training():
    from eval_mop import EVAL_LIMITS

    assert EVAL_SEED_START + EVAL_LIMITS["num_episodes"] <= DEMO_SEED_START
    assert demo_episode_seed(49, 10**7 - 1) < TRAIN_SEED_START
    with pytest.raises(ValueError):
        demo_episode_seed(50, 0)


def test_demos_are_reproducible_cached_and_skip_what_the_bot_cannot_solve(tmp_path, monkeypatch):
    from mop import bot_demos as demos

    a, info, path = demos.load_or_generate_demos(TASK, 12, 3, tmp_path, progress=False)
    assert path == tmp_path / TASK / "set_3" and len(a) == 12  # the level's demo store (mop/demo_store.py)
    seeds = [ep.seed for ep in a.episodes]
    assert seeds == [demo_episode_seed(3, k) for k in range(12)]  # this level's bot solves every layout
    assert all((ep.label >= 0).all() for ep in a.episodes)
    b, _ = demos.generate_demos(TASK, 12, 3, progress=False)
    assert all(x.equals(y) for x, y in zip(a.episodes, b.episodes))
    again, meta, _ = demos.load_or_generate_demos(TASK, 12, 3, tmp_path, progress=False)  # from the cache
    assert meta["kind"] == "demo_store" and all(x.equals(y) for x, y in zip(a.episodes, again.episodes))
    # a layout the bot fails on is skipped and counted, never stored
    real = demos.bot_episode
    failing = {demo_episode_seed(0, 1), demo_episode_seed(0, 4)}

    def sometimes_fails(env, seed, fast=True):
        return (None, "bot_failure") if seed in failing else real(env, seed, fast)

    monkeypatch.setattr(demos, "bot_episode", sometimes_fails)
    c, info = demos.generate_demos(TASK, 5, 0, progress=False)
    assert info["skipped_bot_failure"] == 2
    assert [ep.seed for ep in c.episodes] == [demo_episode_seed(0, k) for k in (0, 2, 3, 5, 6)]


def test_demo_cache_of_another_request_is_refused(tmp_path):
    from mop import bot_demos as demos

    buf, info = demos.generate_demos(TASK, 4, 0, progress=False)
    wrong = demos.demo_path(tmp_path, TASK, 4, 1)  # a file saying demo set 0 under set 1's name
    buf.save(wrong, kind="demos", **info)
    with pytest.raises(BufferError, match="demo_seed 0, not 1"):
        demos.load_or_generate_demos(TASK, 4, 1, tmp_path, progress=False)
    other = demos.demo_path(tmp_path, "BabyAI-GoToLocal-v0", 4, 0)
    buf.save(other, kind="demos", **info)
    with pytest.raises(BufferError, match="not BabyAI-GoToLocal-v0"):
        demos.load_or_generate_demos("BabyAI-GoToLocal-v0", 4, 0, tmp_path, progress=False)


def test_demos_cli_bad_count(capsys):
    import demos

    assert demos.main(["--task_id", TASK, "--demos", "0"]) == 2
    # one line naming the flag, the range it must be in and the value given
    assert "--demos must be from 1 to 10,000,000, got 0" in capsys.readouterr().err


# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"buffer_episodes": -1}, "buffer_episodes must be >= 0"),
        ({"demos": -5}, "demos must be >= 0"),
        ({"replay_ratio": 1.0}, r"replay_ratio must be in \[0, 1\)"),
        ({"replay_ratio": -0.1}, r"replay_ratio must be in \[0, 1\)"),
        ({"demos": 10, "buffer_episodes": 10}, "give one of them"),
        ({"demo_seed": 50}, "demo_seed must be at most 49"),
        ({"demos": 10, "task_id": "BabyAI-GoToLocal-v0,BabyAI-PickupLoc-v0"}, "takes one level"),
    ],
)
def test_bad_buffer_and_demo_settings_are_refused(tmp_path, overrides, match):
    with pytest.raises(ConfigError, match=match):
        tiny_config(tmp_path, **overrides)


# ----------------------------------------------------------------------------- training


@pytest.mark.slow
def test_dagger_with_buffer_trains_resumes_and_evaluates(tmp_path):
    import train_mop
    from eval_mop import EvalOptions, evaluate
    from mop.imitation import Replay

    cfg = tiny_config(tmp_path, buffer_episodes=20, replay_ratio=0.5, max_steps=12, num_updates=6)
    summary = train_mop.main(cfg, progress=False)
    run = tmp_path / TASK / "trial_0"
    assert sorted(p.name for p in run.glob("buffer_*.npz")) == ["buffer_6.npz"]  # only the newest kept
    saved, meta = EpisodeBuffer.load(run / "buffer_6.npz", TASK)
    assert meta["update"] == 6 and len(saved) > 0
    rows = [
        r for r in __import__("mop.experiment", fromlist=["read_metrics"]).read_metrics(run / "metrics.jsonl")
    ]
    assert rows[-1]["train/replay_frames"] > 0 and rows[-1]["buffer/episodes"] == len(saved)
    # the checkpoint stays weights_only-loadable (the buffer lives beside it)
    torch.load(run / "checkpoint_final.pt", weights_only=True)
    # --resume restores the buffer exactly, sampling stream included
    ckpt = load_checkpoint(run / "checkpoint_final.pt")
    resumed = Replay.start(tiny_config(tmp_path, buffer_episodes=20, max_steps=12, num_updates=9), run, ckpt)
    assert all(a.equals(b) for a, b in zip(saved.episodes, resumed.buffer.episodes))
    assert resumed.buffer.rng.bit_generator.state == saved.rng.bit_generator.state
    train_mop.main(
        tiny_config(tmp_path, buffer_episodes=20, max_steps=12, num_updates=9), resume=True, progress=False
    )
    assert sorted(p.name for p in run.glob("buffer_*.npz")) == ["buffer_9.npz"]
    after, _ = EpisodeBuffer.load(run / "buffer_9.npz", TASK)
    assert after.added >= saved.added
    result = evaluate(
        summary["checkpoints"][-1], EvalOptions(num_episodes=4, num_envs=2, progress=False), None
    )
    assert result.metrics["num_episodes"] == 4


def test_resume_without_its_buffer_is_refused(tmp_path):
    import train_mop

    cfg = tiny_config(tmp_path, buffer_episodes=20, max_steps=12, num_updates=3, checkpoint_interval=None)
    train_mop.main(cfg, progress=False)
    run = tmp_path / TASK / "trial_0"
    (run / "buffer_3.npz").unlink()
    with pytest.raises(ConfigError, match="replay buffer for update 3 .* is missing"):
        train_mop.main(
            tiny_config(tmp_path, buffer_episodes=20, max_steps=12, num_updates=6),
            resume=True,
            progress=False,
        )
    (run / "buffer_3.npz").write_bytes(b"not a zip")
    with pytest.raises(ConfigError, match="not a readable episode buffer"):
        train_mop.main(
            tiny_config(tmp_path, buffer_episodes=20, max_steps=12, num_updates=6),
            resume=True,
            progress=False,
        )


@pytest.mark.slow
def test_offline_bc_from_demos_trains_resumes_and_evaluates(tmp_path):
    import train_mop
    from eval_mop import EvalOptions, evaluate

    demos_dir = tmp_path / "demos"
    cfg = tiny_config(tmp_path, demos=30, demos_dir=str(demos_dir), num_updates=6)
    summary = train_mop.main(cfg, progress=False)
    assert (demos_dir / TASK / "set_0" / "manifest.json").exists()  # the level's demo store
    run = tmp_path / TASK / "trial_0"
    rows = __import__("mop.experiment", fromlist=["read_metrics"]).read_metrics(run / "metrics.jsonl")
    assert rows[-1]["episodes/total"] > 30  # more than one pass over 30 short demos
    assert rows[-1]["demos/epoch"] >= 1 and rows[-1]["train/teacher_forcing"] == 1.0
    assert not list(run.glob("buffer_*.npz"))  # the demos are the cache, not a run buffer
    ckpt = torch.load(run / "checkpoint_final.pt", weights_only=True)
    assert ckpt["demo_sampler"]["epoch"] >= 1
    # a resumed BC run continues the same pass over the demos as the uninterrupted one
    other = tmp_path / "other"
    full = tiny_config(other, demos=30, demos_dir=str(demos_dir), num_updates=9)
    train_mop.main(full, progress=False)
    train_mop.main(
        tiny_config(tmp_path, demos=30, demos_dir=str(demos_dir), num_updates=9), resume=True, progress=False
    )
    a = torch.load(run / "checkpoint_final.pt", weights_only=True)["demo_sampler"]
    b = torch.load(other / TASK / "trial_0" / "checkpoint_final.pt", weights_only=True)["demo_sampler"]
    assert a == b
    result = evaluate(
        summary["checkpoints"][-1], EvalOptions(num_episodes=4, num_envs=2, progress=False), None
    )
    assert result.metrics["num_episodes"] == 4
