"""--aux_rooms_weight: the collector records the rooms visited so far, the buffer keeps them (and
reads buffers written before them), and the auxiliary head trains the memory, resumes and refuses
levels of one room.

    pytest tests/test_aux_rooms.py
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import fake_episode, tiny_config
from mop.babyai_env import RoomLayout, make_env, quiet_reset, train_episode_seed
from mop.collection import Collector
from mop.experiment import ConfigError, load_checkpoint, read_metrics
from mop.replay_buffer import EpisodeAssembler, EpisodeBuffer, episodes_as_chunk
from tests.test_env import small_agent

MAZE = "BabyAI-Unlock-v0"


def test_the_collector_records_the_rooms_each_episode_has_visited():
    """With the bot at the wheel the executed actions are the labels, so replaying the labels from
    each env's first layout gives the positions; their rooms must be the recorded bitmask."""
    policy, encoder = small_agent()
    run_seed, steps = 2, 150
    chunk = Collector(MAZE, [0, 1], run_seed, None, "raw", teacher_forcing=1.0).collect(
        policy, encoder, steps
    )
    layout = RoomLayout(8, 3, 3)
    ends = {k: min([t for t, ep in chunk["episodes"] if ep.env_index == k] or [steps - 1]) for k in (0, 1)}
    for k in (0, 1):
        env = make_env(MAZE)
        quiet_reset(env, train_episode_seed(run_seed, k, 0))
        assert RoomLayout.of(env) == layout
        visited = 0
        for t in range(ends[k] + 1):
            visited |= 1 << layout.room_of(*env.agent_pos)
            assert chunk["rooms_visited"][t, k] == visited, (k, t)
            env.step(int(chunk["label"][t, k]))
        assert bin(visited).count("1") >= 2  # the bot went through a door: more than one room
        if ends[k] < steps - 1:  # the next episode starts afresh in one room
            assert bin(int(chunk["rooms_visited"][ends[k] + 1, k])).count("1") == 1


def test_one_room_levels_record_one_room_and_padding_is_unknown():
    policy, encoder = small_agent()
    chunk = Collector("BabyAI-GoToLocal-v0", [0], 0, None, "raw").collect(policy, encoder, 10)
    assert (chunk["rooms_visited"] == 1).all()
    episodes = [fake_episode(3, 1), fake_episode(5, 2)]
    episodes[1].rooms_visited = np.array([1, 1, 3, 3, 7], np.int32)
    padded = episodes_as_chunk(episodes)
    assert padded["rooms_visited"][:, 1].tolist() == [1, 1, 3, 3, 7]
    assert (padded["rooms_visited"][:, 0] == -1).all()  # not recorded, and padding: no target


def test_the_buffer_keeps_rooms_and_reads_buffers_written_without_them(tmp_path):
    episodes = [fake_episode(4, seed) for seed in (1, 2)]
    for ep in episodes:
        ep.rooms_visited = np.array([1, 3, 3, 11], np.int32)
    buf = EpisodeBuffer(5, MAZE)
    buf.extend(episodes)
    back, _ = EpisodeBuffer.load(buf.save(tmp_path / "rooms.npz"), MAZE)
    assert all(a.equals(b) for a, b in zip(episodes, back.episodes))
    assert back.episodes[0].rooms_visited.tolist() == [1, 3, 3, 11]
    changed = fake_episode(4, 1)
    assert not changed.equals(episodes[0])  # None against a recorded bitmask is a difference
    old = EpisodeBuffer(5, MAZE)
    old.extend([fake_episode(4, 3)])  # as written before rooms were recorded: no rooms_visited array
    path = old.save(tmp_path / "old.npz")
    assert "rooms_visited" not in np.load(path).files
    loaded, _ = EpisodeBuffer.load(path, MAZE)
    assert loaded.episodes[0].rooms_visited is None


def test_assembled_episodes_carry_the_chunks_rooms():
    policy, encoder = small_agent()
    collector = Collector(MAZE, [0, 1], 0, 20, "raw", teacher_forcing=1.0)
    assembler = EpisodeAssembler(2)
    chunks, episodes = [], []
    for _ in range(3):
        chunks.append(collector.collect(policy, encoder, 16))
        episodes += assembler.add(chunks[-1])
    assert episodes
    rooms = np.concatenate([c["rooms_visited"] for c in chunks])  # (48, 2)
    first = [ep for ep in episodes if ep.seed == train_episode_seed(0, 0, 0)][0]
    assert first.rooms_visited.tolist() == rooms[: len(first), 0].tolist()


def test_the_aux_loss_reaches_every_recurrent_weight_and_skips_unknown_steps():
    from mop.aux_losses import aux_rooms_loss
    from mop.babyai_env import encode_obs

    policy, encoder = small_agent()
    chunk = Collector(MAZE, [0, 1], 0, None, "raw", teacher_forcing=1.0).collect(policy, encoder, 12)
    obs = encode_obs(*(torch.from_numpy(chunk[k]) for k in ("image", "direction", "carrying")), "raw")
    lang = encoder(chunk["missions"])[torch.from_numpy(chunk["mission_index"])]
    out = policy.forward_sequence(obs, lang, chunk["memory"], torch.from_numpy(chunk["done"]))
    head = torch.nn.Linear(policy.memory_size, 9)
    parts: dict = {}
    aux_rooms_loss(head, out, chunk["rooms_visited"], parts).backward()
    assert 0.0 < parts["train/aux_rooms"] and 0.0 <= parts["train/aux_rooms_accuracy"] <= 1.0
    grus = [name for name, p in policy.named_parameters() if "gru" in name]
    assert grus and all(
        policy.get_parameter(n).grad is not None and policy.get_parameter(n).grad.abs().sum() > 0
        for n in grus
    )
    assert policy.head.weight.grad is None  # the action head is not touched
    # only known steps count: marking every step unknown leaves a zero loss and no log
    unknown, none = np.full_like(chunk["rooms_visited"], -1), {}
    assert aux_rooms_loss(head, out, unknown, none).item() == 0.0 and none == {}
    # the target of a step is its bitmask: a head that reads it exactly has a loss near 0
    bits = (torch.from_numpy(chunk["rooms_visited"].astype(np.int64)).unsqueeze(-1) >> torch.arange(9)) & 1
    exact = out._replace(memory_seq=(bits.float() * 2 - 1) * 50)
    reader = torch.nn.Linear(9, 9)
    with torch.no_grad():
        reader.weight.copy_(torch.eye(9))
        reader.bias.zero_()
    assert aux_rooms_loss(reader, exact, chunk["rooms_visited"], {}).item() < 1e-6


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"aux_rooms_weight": -0.5}, "aux_rooms_weight must be >= 0"),
        ({"aux_rooms_weight": float("nan")}, "'aux_rooms_weight' must be a finite number"),
        ({"aux_rooms_weight": 1.0, "demos": 10}, "needs online imitation"),
    ],
)
def test_bad_aux_settings_are_refused(tmp_path, overrides, match):
    with pytest.raises(ConfigError, match=match):
        tiny_config(tmp_path, **overrides)


def test_a_one_room_level_is_refused_before_training(tmp_path):
    import train_mop

    with pytest.raises(ConfigError, match="GoToRedBallGrey-v0 has 1"):
        train_mop.main(tiny_config(tmp_path, aux_rooms_weight=1.0), progress=False)
    assert not list(tmp_path.rglob("checkpoint_*.pt"))


@pytest.mark.slow
def test_aux_rooms_trains_the_memory_resumes_and_stays_out_of_the_policy(tmp_path):
    import train_mop
    from eval_mop import EvalOptions, evaluate

    def cfg(updates, weight=1.0, folder="aux"):
        return tiny_config(
            tmp_path / folder,
            task_id=MAZE,
            aux_rooms_weight=weight,
            buffer_episodes=10,
            max_steps=24,
            num_updates=updates,
        )

    summary = train_mop.main(cfg(6), progress=False)
    run = tmp_path / "aux" / MAZE / "trial_0"
    rows = [r for r in read_metrics(run / "metrics.jsonl") if "train/aux_rooms" in r]
    assert rows and all(
        0.0 < r["train/aux_rooms"] < 5.0 and 0.0 <= r["train/aux_rooms_accuracy"] <= 1.0 for r in rows
    )
    ckpt = torch.load(run / "checkpoint_final.pt", weights_only=True)  # still weights_only-loadable
    head = ckpt["aux_head_state_dict"]
    assert head["weight"].shape == (sum(summary_sizes(ckpt)), 9)[::-1]
    # the head is not part of the policy: the policy's weights load into a policy built without it
    plain = train_mop.main(cfg(6, weight=0.0, folder="plain"), progress=False)
    plain_ckpt = load_checkpoint(plain["checkpoints"][-1])
    assert "aux_head_state_dict" not in plain_ckpt
    assert set(plain_ckpt["policy_state_dict"]) == set(ckpt["policy_state_dict"])
    train_mop.main(cfg(9), resume=True, progress=False)
    resumed = load_checkpoint(run / "checkpoint_final.pt")
    assert resumed["update"] == 9 and not torch.equal(
        resumed["aux_head_state_dict"]["weight"], head["weight"]
    )
    result = evaluate(
        summary["checkpoints"][-1], EvalOptions(num_episodes=2, num_envs=2, progress=False), None
    )
    assert result.metrics["num_episodes"] == 2


def summary_sizes(ckpt: dict) -> list[int]:
    """Memory widths of the tiny preset's MoP: per layer the router and each non-identity expert."""
    config = ckpt["config"]
    return [
        s for sizes in config["expert_hidden_sizes"] for s in (config["router_hidden_size"], *sizes) if s > 0
    ]
