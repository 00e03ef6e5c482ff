"""memory_probe.py: rooms and visit ages are right, a probe finds visits a memory really holds and
nothing in one that does not, and the CLI refuses what it cannot read.

    pytest tests/test_memory_probe.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import memory_probe as mp
from mop.babyai_env import RoomLayout, SafeBot, bot_path_length, locked_doors, make_env, needs_key

LAYOUT = RoomLayout(room_size=8, num_rows=3, num_cols=3)


def test_room_of_agrees_with_minigrid_on_every_cell():
    env = make_env("BabyAI-Unlock-v0").unwrapped
    env.reset(seed=3)
    layout = mp.room_layout("BabyAI-Unlock-v0")
    assert layout == LAYOUT
    for x in range(env.width - 1):
        for y in range(env.height - 1):
            room = env.room_from_pos(x, y)
            i, j = room.top[0] // (env.room_size - 1), room.top[1] // (env.room_size - 1)
            assert layout.room_of(x, y) == j * env.num_cols + i, (x, y)


def test_a_one_room_level_is_refused():
    with pytest.raises(mp.ProbeError, match="one room"):
        mp.room_layout("BabyAI-GoToLocal-v0")


def test_visit_ages_count_steps_since_the_last_visit_and_restart_each_episode():
    rooms = np.array([0, 0, 1, 1, 0, 2, 2, 0])
    episode = np.array([0, 0, 0, 0, 0, 1, 1, 1])
    ages = mp.visit_ages(rooms, episode, 3)
    assert ages[:, 0].tolist() == [0, 1, 1, 2, 3, 0, 0, 0]  # never before t=0; episode 1 starts afresh
    assert ages[:, 1].tolist() == [0, 0, 0, 1, 1, 0, 0, 0]
    assert ages[:, 2].tolist() == [0, 0, 0, 0, 0, 0, 1, 1]
    cells = pd.DataFrame({"episode": episode, "t": [0, 1, 2, 3, 4, 0, 1, 2], "x": rooms * 7 + 3, "y": 3})
    targets_rooms, targets_ages, elsewhere = mp.visit_targets(cells, LAYOUT)
    assert targets_rooms.tolist() == rooms.tolist() and targets_ages[:, :3].tolist() == ages.tolist()
    assert not elsewhere[np.arange(8), rooms].any() and elsewhere.sum() == 8 * (LAYOUT.num_rooms - 1)


def random_walks(num_episodes: int, length: int, seed: int = 0) -> pd.DataFrame:
    """Episodes that walk the 3x3 rooms, moving to a neighbouring room every few steps."""
    rng = np.random.default_rng(seed)
    rows = []
    for e in range(num_episodes):
        row, col = rng.integers(3, size=2)
        for t in range(length):
            if rng.random() < 0.15:
                dr, dc = [(0, 1), (0, -1), (1, 0), (-1, 0)][rng.integers(4)]
                row, col = int(np.clip(row + dr, 0, 2)), int(np.clip(col + dc, 0, 2))
            rows.append({"episode": e, "t": t, "x": col * 7 + 3, "y": row * 7 + 3, "success": e % 3 == 0})
    return pd.DataFrame(rows)


def test_a_probe_reads_visits_a_memory_holds_and_nothing_from_noise():
    steps = random_walks(60, 80)
    rooms = mp.visit_targets(steps, LAYOUT)[0]
    visited = mp.visit_ages(rooms, steps["episode"].to_numpy(), LAYOUT.num_rooms) > 0
    rng = np.random.default_rng(1)
    memory = np.concatenate(
        [visited + rng.normal(0.0, 0.5, visited.shape), rng.normal(size=(len(steps), 40))], 1
    )
    blocks = [("all", slice(0, 49)), ("signal", slice(0, 9)), ("noise", slice(9, 49))]
    targets = mp.room_targets(steps, LAYOUT, min_age=10)
    table = mp.probe_table(steps, memory, blocks, targets, bootstrap=200).set_index("features")
    base = table.loc[mp.NO_MEMORY]
    assert table.loc["signal", "size"] == 9 and base["size"] == LAYOUT.num_rooms + 2
    for column in mp.SUBSETS:
        gain = f"gain{column[3:]}"
        assert table.loc["signal", column] > max(base[column] + 0.1, 0.9), column
        assert table.loc["all", column] > base[column] + 0.1, column
        assert abs(table.loc["noise", column] - base[column]) < 0.03, column
        assert table.loc["signal", f"{gain}_low"] > 0.05, column  # the interval excludes no gain
        assert table.loc["noise", f"{gain}_low"] < 0 < table.loc["noise", f"{gain}_high"] + 0.01, column
        assert np.isclose(table.loc["signal", gain], table.loc["signal", column] - base[column])
    assert (table["rooms_auc"] >= 1).all() and np.isnan(base.get("gain_low", np.nan))


def test_resampled_auc_is_the_auc_of_the_episodes_counted_that_often():
    rng = np.random.default_rng(0)
    episode = np.repeat(np.arange(6), 5)
    scores = np.round(rng.normal(size=30), 1)  # ties, counted half
    labels = rng.random(30) < 0.4
    weights = np.array([[1, 1, 1, 1, 1, 1], [2, 0, 1, 0, 3, 0], [0, 0, 0, 0, 0, 6]])
    got = mp.resampled_auc(scores, labels, episode, weights)
    assert np.isclose(got[0], mp.auc(scores, labels))
    rows = np.repeat(np.arange(30), weights[1][episode])  # episodes 0 twice, 2 once, 4 three times
    assert np.isclose(got[1], mp.auc(scores[rows], labels[rows]))
    assert np.isnan(got[2]) == (labels[episode == 5].all() or (~labels[episode == 5]).all())
    assert np.isnan(mp.resampled_auc(scores[:0], labels[:0], episode[:0], weights)).all()  # nothing to rank


def key_walks(num_episodes: int, length: int, seed: int = 0) -> tuple[pd.DataFrame, mp.Targets, np.ndarray]:
    """Random room walks whose key lies in a random room and is first seen at a random step; the
    key targets as key_targets builds them, and the key's room per step."""
    steps = random_walks(num_episodes, length, seed)
    rng = np.random.default_rng(seed + 1)
    key_room = np.repeat(rng.integers(LAYOUT.num_rooms, size=num_episodes), length)
    seen_at = np.repeat(rng.integers(0, length // 2, size=num_episodes), length)
    t = steps["t"].to_numpy()
    eligible = t > seen_at
    labels = np.eye(LAYOUT.num_rooms, dtype=bool)[key_room]
    mask = np.repeat(eligible[:, None], LAYOUT.num_rooms, 1)
    rooms = mp.visit_targets(steps, LAYOUT)[0]
    young = (t - seen_at < 20)[:, None]
    free = mp.no_memory_features(rooms, t, LAYOUT.num_rooms)
    return steps, mp.Targets(labels, mask, mask & young, mask & ~young, free), key_room


def test_a_key_probe_finds_a_key_room_the_memory_holds_and_nothing_from_noise():
    steps, targets, key_room = key_walks(80, 60)
    rng = np.random.default_rng(2)
    held = np.eye(LAYOUT.num_rooms)[key_room] * targets.mask[:, :1]  # held once seen
    memory = np.concatenate([held + rng.normal(0.0, 0.5, held.shape), rng.normal(size=(len(steps), 30))], 1)
    blocks = [("signal", slice(0, 9)), ("noise", slice(9, 39))]
    table = mp.probe_table(steps, memory, blocks, targets, bootstrap=200).set_index("features")
    assert table.loc["signal", "auc"] > 0.8 and table.loc["signal", "gain_low"] > 0.2
    assert table.loc["noise", "gain_low"] < 0.02 and table.loc["noise", "gain_high"] > -0.05
    assert table.loc["signal", "rooms_auc"] == LAYOUT.num_rooms


def test_a_subset_one_fold_lacks_gets_its_gain_without_an_interval_and_the_table_says_why():
    steps, targets, key_room = key_walks(40, 60)
    steps["success"] = (steps["episode"] < 20) | (steps["episode"] % 2 == 0)
    rng = np.random.default_rng(3)
    held = np.eye(LAYOUT.num_rooms)[key_room] * targets.mask[:, :1]
    memory = held + rng.normal(0.0, 0.5, held.shape)
    table = mp.probe_table(steps, memory, [("signal", slice(0, 9))], targets, bootstrap=50)
    row = table.iloc[1]
    assert np.isfinite(row["gain_failed"]) and np.isnan(row["gain_failed_low"])
    assert np.isfinite(row["gain_solved_low"])
    text = mp.format_table(table, 20, 50)
    assert f"{row['gain_failed']:+.3f} [no interval]*" in text and "one of the two folds" in text
    assert "no interval" not in mp.format_table(
        table.assign(gain_failed_low=0.0, gain_failed_high=0.1), 20, 50
    )


def test_offset_bins_put_the_key_ahead_or_to_the_right_in_the_agent_s_own_frame():
    cells, key = np.array([[5, 5], [5, 5], [5, 5]]), (9, 3)  # 4 cells east, 2 north of the agent
    bins = mp.offset_bins(cells, np.array([0, 3, 2]), key)  # facing east, north, west
    names = [f"ahead {b}" for b in mp.OFFSET_BINS] + [f"right {b}" for b in mp.OFFSET_BINS]
    assert [[names[i] for i in np.flatnonzero(row)] for row in bins] == [
        ["ahead 4..10", "right -3..3"],  # east: 4 ahead, 2 to the left
        ["ahead -3..3", "right 4..10"],  # north: 2 ahead, 4 to the right
        ["ahead -10..-4", "right -3..3"],  # west: 4 behind, 2 to the right
    ]


def test_key_targets_follow_a_replayed_episode_and_refuse_another_path():
    env = make_env("BabyAI-GoToImpUnlock-v0")
    layout = mp.room_layout("BabyAI-GoToImpUnlock-v0", "key")
    rng = np.random.default_rng(0)
    for episode in range(40):  # the first layout whose random walk sees the key after step 0
        actions = rng.integers(0, 3, size=150).tolist()  # turn left / right, forward
        seen = mp.key_sightings(env, episode, actions)
        cells, last_seen, held, key_cells = seen.cells, seen.key_last_seen, seen.key_held, seen.keys
        if (last_seen > 0).any():
            break
    else:
        pytest.fail("no random walk saw a matching key")
    assert len(key_cells) >= 1 and not held.any()
    mp.quiet_reset(env, episode)
    directions = []
    for action in actions:
        directions.append(int(env.agent_dir))
        env.step(action)
    steps = pd.DataFrame(
        {"episode": episode, "t": range(150), "x": [c[0] for c in cells], "y": [c[1] for c in cells]}
    ).assign(action=actions, direction=directions)
    targets = mp.key_targets(steps, "BabyAI-GoToImpUnlock-v0", None, layout, min_age=10)
    first = int(np.flatnonzero(last_seen >= 0)[0])  # the step after the first sighting
    assert not targets.mask[:first].any() and targets.mask[first:].all()
    key_rooms = {layout.room_of(*k) for k in key_cells}
    assert set(np.flatnonzero(targets.labels[0])) == key_rooms and (targets.labels == targets.labels[0]).all()
    age = np.arange(150) - last_seen
    assert (targets.old[:, 0] == (targets.mask[:, 0] & (age >= 10))).all()
    assert (targets.recent[:, 0] == (targets.mask[:, 0] & (age < 10))).all()
    offsets = mp.key_targets(steps, "BabyAI-GoToImpUnlock-v0", None, layout, min_age=10, frame="agent")
    assert offsets.labels.shape == (150, 10) and (offsets.mask == targets.mask[:, :1]).all()
    expected = np.zeros((150, 10), dtype=bool)
    for key in key_cells:
        expected |= mp.offset_bins(np.array(cells), np.array(directions), key)
    assert (offsets.labels == expected).all() and (offsets.labels[:, :5].sum(1) >= 1).all()
    assert offsets.free.shape[1] == 4 * layout.num_rooms + 2  # room x heading, t, t^2
    steps.loc[5, "x"] += 1
    with pytest.raises(mp.ProbeError, match=f"episode {episode} replays"):
        mp.key_targets(steps, "BabyAI-GoToImpUnlock-v0", None, layout, min_age=10)


def reset_to_a_solvable_need_key_layout(env, task: str) -> tuple[int, tuple[int, int], str]:
    """Reset `env` to the first evaluation layout that needs the key and the bot solves: (its episode
    number, its locked door's cell, the door's colour)."""
    for episode in range(40):
        mp.quiet_reset(env, mp.EVAL_SEED_START + episode)
        if needs_key(env) and bot_path_length(task, mp.EVAL_SEED_START + episode) is not None:
            break
    mp.quiet_reset(env, mp.EVAL_SEED_START + episode)
    (door,) = locked_doors(env)
    return episode, door, env.unwrapped.grid.get(*door).color


def test_door_targets_hold_the_door_s_colour_from_its_sighting_until_anything_is_carried():
    """The bot's own GoToImpUnlock episode on a layout that needs the key: the door colour's column
    is on, the others off; the steps count from the one after the door first came into view to the
    one of the pickup (its memory before the pickup included), and split by the door's age."""
    task = "BabyAI-GoToImpUnlock-v0"
    env, layout = make_env(task), mp.room_layout(task, "door")
    episode, door, colour = reset_to_a_solvable_need_key_layout(env, task)
    bot, rows, pickup = SafeBot(env), [], None
    while True:
        action = bot.label(None)
        rows.append((*env.unwrapped.agent_pos, int(env.unwrapped.agent_dir), action))
        _, _, terminated, truncated, _ = env.step(action)
        if pickup is None and env.unwrapped.carrying is not None:
            pickup = len(rows) - 1
        if terminated or truncated:
            break
    steps = pd.DataFrame(rows, columns=["x", "y", "direction", "action"]).assign(
        episode=episode, t=range(len(rows))
    )
    seen = mp.key_sightings(env, mp.EVAL_SEED_START + episode, steps["action"].tolist())
    first = int(np.flatnonzero(seen.door_last_seen >= 0)[0])
    targets = mp.door_targets(steps, task, None, layout, min_age=5)
    assert targets.labels.shape == (len(steps), len(mp.COLOURS))
    assert (np.flatnonzero(targets.labels[0]) == [mp.COLOURS.index(colour)]).all()
    on = np.flatnonzero(targets.mask[:, 0])
    assert on[0] == first and on[-1] == pickup and len(on) == pickup - first + 1  # carried from pickup + 1
    age = steps["t"].to_numpy() - seen.door_last_seen
    assert (targets.old[:, 0] == (targets.mask[:, 0] & (age >= 5))).all()
    assert (targets.recent | targets.old == targets.mask).all() and targets.free.shape[
        1
    ] == layout.num_rooms + 2


def test_door_offset_targets_hold_the_door_s_place_from_the_key_s_pickup_until_it_is_unlocked():
    """The bot's own GoToImpUnlock episode on a layout that needs the key: the steps run from the one
    after a key of the door's colour is picked up (held before the step's action) to the step of the
    toggle that unlocks it, the labels are the door's bins in the agent's frame, split by the door's
    age; a probe-less walk that never holds the key has none."""
    task = "BabyAI-GoToImpUnlock-v0"
    env, layout = make_env(task), mp.room_layout(task, "door_offset")
    episode, door, colour = reset_to_a_solvable_need_key_layout(env, task)
    bot, rows, pickup, unlock = SafeBot(env), [], None, None
    while True:
        action = bot.label(None)
        rows.append((*env.unwrapped.agent_pos, int(env.unwrapped.agent_dir), action))
        _, _, terminated, truncated, _ = env.step(action)
        carried = env.unwrapped.carrying
        if pickup is None and carried is not None and carried.type == "key" and carried.color == colour:
            pickup = len(rows) - 1
        if unlock is None and not env.unwrapped.grid.get(*door).is_locked:
            unlock = len(rows) - 1
        if terminated or truncated:
            break
    assert pickup is not None and unlock is not None and pickup < unlock
    steps = pd.DataFrame(rows, columns=["x", "y", "direction", "action"]).assign(
        episode=episode, t=range(len(rows))
    )
    seen = mp.key_sightings(env, mp.EVAL_SEED_START + episode, steps["action"].tolist())
    assert (
        seen.doors == [door]
        and seen.door_locked[: unlock + 1].all()
        and not seen.door_locked[unlock + 1 :].any()
    )
    targets = mp.door_offset_targets(steps, task, None, layout, min_age=5)
    assert targets.labels.shape == (len(steps), 10)
    on = np.flatnonzero(targets.mask[:, 0])
    assert (
        on[0] == pickup + 1 and on[-1] == unlock and len(on) == unlock - pickup
    )  # the door seen before the key
    cells = steps[["x", "y"]].to_numpy()
    assert (targets.labels == mp.offset_bins(cells, steps["direction"].to_numpy(), door)).all()
    age = steps["t"].to_numpy() - seen.door_last_seen
    assert (targets.old[:, 0] == (targets.mask[:, 0] & (age >= 5))).all()
    assert (targets.recent | targets.old == targets.mask).all()
    assert targets.free.shape[1] == 4 * layout.num_rooms + 2  # room x heading, t, t^2
    walk = steps.iloc[:1].assign(action=0)  # one turn: no key held, no steps
    assert not mp.door_offset_targets(walk, task, None, layout, min_age=5).mask.any()


def test_key_match_targets_are_the_steps_facing_a_key_with_free_hands_after_the_door_was_seen():
    """The bot's own episode on a layout that needs the key, checked against the env itself: the
    steps whose front cell (minigrid's front_pos) holds a key while the hands are free and after the
    door was seen, the label its colour against the door's; a step with full hands is no entry."""
    task = "BabyAI-GoToImpUnlock-v0"
    env, layout = make_env(task), mp.room_layout(task, "key_match")
    for episode in range(60):
        seed = mp.EVAL_SEED_START + episode
        mp.quiet_reset(env, seed)
        if needs_key(env) and bot_path_length(task, seed) is not None:
            (door,) = locked_doors(env)
            colour = env.unwrapped.grid.get(*door).color
            obs, bot, rows, images, carrying, truth = mp.quiet_reset(env, seed), SafeBot(env), [], [], [], []
            while True:
                u = env.unwrapped
                front = u.grid.get(*u.front_pos)
                truth.append(
                    None if front is None or front.type != "key" or u.carrying else front.color == colour
                )
                images.append(obs["image"])
                carrying.append(u.carrying is not None)
                action = bot.label(None)
                rows.append((*u.agent_pos, int(u.agent_dir), action))
                obs, _, terminated, truncated, _ = env.step(action)
                if terminated or truncated:
                    break
            steps = pd.DataFrame(rows, columns=["x", "y", "direction", "action"]).assign(
                episode=episode, t=range(len(rows))
            )
            seen = mp.key_sightings(env, seed, steps["action"].tolist())
            expected_mask = np.array([v is not None for v in truth]) & (seen.door_last_seen >= 0)
            if expected_mask.any():
                break
    else:
        pytest.fail("no bot episode faced a key after seeing the door")
    images, carrying = np.stack(images), np.array(carrying)
    targets = mp.key_match_targets(steps, images, carrying, task, None, layout, min_age=3)
    assert targets.labels.shape == (len(steps), 1) and (targets.mask[:, 0] == expected_mask).all()
    on = np.flatnonzero(expected_mask)
    assert (targets.labels[on, 0] == np.array([truth[i] for i in on])).all()
    assert targets.labels[on, 0].any()  # the bot faces the key it picks up
    age = steps["t"].to_numpy() - seen.door_last_seen
    assert (targets.old[:, 0] == (expected_mask & (age >= 3))).all()
    hue = targets.free[:, layout.num_rooms + 2 :]
    assert hue.shape[1] == len(mp.COLOURS) and (hue[on].sum(1) == 1).all()
    full = carrying.copy()
    full[on[0]] = True  # the same view with full hands: no choice of key to make
    assert not mp.key_match_targets(steps, images, full, task, None, layout, min_age=3).mask[on[0], 0]


def _head_case(**head_keys):
    """A small GoToImpUnlock policy with the given head keys, five first views as a batch, a random
    memory before them, and what head_features catches: (policy, missions, batch, memory, heads)."""
    import torch

    from mixture_of_experts import build_policy
    from mop.collection import MissionCache, ObsBatch
    from mop.language import build_mission_encoder

    torch.manual_seed(0)
    env = make_env("BabyAI-GoToImpUnlock-v0")
    config = {"obs_encoding": "onehot", "input_dim": 985, "lang_dim": 8, "num_actions": 7}
    policy = build_policy(
        {**config, "intermediate_dim": 12, "router_hidden_size": 6, "expert_hidden_sizes": [[0, 4], [0, 8]]}
        | head_keys
    ).eval()
    missions = MissionCache(build_mission_encoder("bow", 8).eval())
    obs = [mp.quiet_reset(env, seed) for seed in range(5)]
    batch = ObsBatch(
        np.stack([o["image"] for o in obs]),
        np.array([o["direction"] for o in obs], np.int64),
        np.zeros(5, np.int64),
        [o["mission"] for o in obs],
    )
    memory = torch.randn(5, sum(policy.memory_sizes)).numpy()
    heads = dict(mp.head_features(policy, missions, config, batch, memory, chunk=2))
    return policy, missions, batch, memory, heads


def test_head_features_are_what_the_actor_reads_and_give_the_played_logits():
    """A policy with BabyAI's actor: the head input is the last layer's output, the actor hidden its
    Tanh units; the head applied to them gives the logits of a step played from the same memory."""
    import torch

    from mop.collection import act

    policy, missions, batch, memory, heads = _head_case(head_hidden_size=5)
    assert list(heads) == [mp.HEAD_INPUT, mp.ACTOR_HIDDEN]
    assert heads[mp.HEAD_INPUT].shape == (5, 12) and heads[mp.ACTOR_HIDDEN].shape == (5, 5)
    with torch.no_grad():
        hidden = torch.tanh(policy.head_hidden(torch.from_numpy(heads[mp.HEAD_INPUT])))
        logits = policy.head(torch.from_numpy(heads[mp.ACTOR_HIDDEN]))
    played = act(policy, missions, batch, torch.from_numpy(memory), "onehot").logits
    torch.testing.assert_close(hidden, torch.from_numpy(heads[mp.ACTOR_HIDDEN]))
    torch.testing.assert_close(logits, played)


def test_a_head_that_reads_the_experts_gives_its_output_and_all_it_reads():
    """--head_reads_experts: the last layer's output first, then all the head reads, which the head
    turns into the played step's logits."""
    import torch

    from mop.collection import act

    policy, missions, batch, memory, heads = _head_case(head_reads_experts=True)
    assert list(heads) == [mp.HEAD_INPUT, mp.HEAD_READ]
    assert heads[mp.HEAD_INPUT].shape == (5, 12) and heads[mp.HEAD_READ].shape == (5, 12 + 4 + 8)
    np.testing.assert_array_equal(heads[mp.HEAD_INPUT], heads[mp.HEAD_READ][:, :12])
    with torch.no_grad():
        logits = policy.head(torch.from_numpy(heads[mp.HEAD_READ]))
    played = act(policy, missions, batch, torch.from_numpy(memory), "onehot").logits
    torch.testing.assert_close(logits, played)


def test_memory_blocks_name_each_router_and_expert_of_a_mop():
    from mixture_of_experts import MixtureOfExpertsPolicy, MoPConfig

    policy = MixtureOfExpertsPolicy(MoPConfig(expert_hidden_sizes=((0, 4, 8), (0, 6)), router_hidden_size=5))
    blocks = dict(mp.memory_blocks(policy))
    assert list(blocks) == [
        "all",
        "layer 0 router",
        "layer 0 expert 1 (size 4)",
        "layer 0 expert 2 (size 8)",
        "layer 1 router",
        "layer 1 expert 1 (size 6)",
    ]
    assert blocks["all"] == slice(0, 5 + 4 + 8 + 5 + 6)
    assert blocks["layer 0 expert 2 (size 8)"] == slice(9, 17) and blocks[
        "layer 1 expert 1 (size 6)"
    ] == slice(22, 28)


def test_the_cli_probes_a_real_checkpoint_on_a_maze_and_refuses_bad_input(tiny_run, tmp_path, capsys):
    checkpoint = str(tiny_run.checkpoints[-1])
    out = tmp_path / "probe.csv"
    table = mp.main(
        [
            "--checkpoint",
            checkpoint,
            "--task_id",
            "BabyAI-Unlock-v0",
            "--num_episodes",
            "4",
            "--min_count",
            "1",
            "--out",
            str(out),
        ]
    )
    printed, err = capsys.readouterr()
    assert "BabyAI-Unlock-v0: 4 episodes (greedy)" in printed and mp.NO_MEMORY in printed
    assert f"play {Path(checkpoint).name} on BabyAI-Unlock-v0" in err  # the bar
    assert list(pd.read_csv(out)["features"]) == list(table["features"])
    # no memory, all, then the tiny preset's layers [[0, 8, 16], [0, 8]]: a router and 2 + 1 experts,
    # the head's input (one Linear head: no actor hidden), then the control: the view the memory read last
    assert list(table["features"])[:2] == [mp.NO_MEMORY, "all"] and len(table) == 2 + 3 + 2 + 1 + 1
    assert (
        table["features"].iloc[-2] == mp.HEAD_INPUT
        and table["size"].iloc[-2] == tiny_run.config.intermediate_dim
    )
    assert table["features"].iloc[-1] == mp.CONTROL and table["size"].iloc[-1] == 985  # onehot
    table = mp.main(
        ["--checkpoint", checkpoint, "--task_id", "BabyAI-Unlock-v0", "--num_episodes", "4"]
        + ["--min_count", "1", "--target", "key", "--bootstrap", "100", "--no_progress"]
    )
    printed = capsys.readouterr().out
    assert "a key of the locked door's colour lies in room r" in printed and "gain over no memory" in printed
    assert {"gain", "gain_low", "gain_high", "gain_old_low"} <= set(table.columns)
    mp.main(
        ["--checkpoint", checkpoint, "--task_id", "BabyAI-Unlock-v0", "--num_episodes", "4"]
        + ["--min_count", "1", "--target", "key_offset", "--bootstrap", "100", "--no_progress"]
    )
    assert "cells ahead / to the right" in capsys.readouterr().out
    table = mp.main(
        ["--checkpoint", checkpoint, "--task_id", "BabyAI-Unlock-v0", "--num_episodes", "8"]
        + ["--min_count", "1", "--target", "key_match", "--bootstrap", "100", "--no_progress"]
    )
    assert "the key ahead has the locked door's colour" in capsys.readouterr().out
    assert mp.HEAD_INPUT in set(table["features"])
    for argv, message in (
        (
            ["--task_id", "BabyAI-GoToObjMaze-v0", "--target", "key"],
            "--target key: BabyAI-GoToObjMaze-v0 has no",
        ),
        (["--bootstrap", "10"], "--bootstrap must be"),
        (["--task_id", "BabyAI-GoToLocal-v0"], "one room"),
        (["--num_episodes", "3"], "--num_episodes must be >= 4"),
        (["--task_id", "BabyAI-Nope-v0"], "BabyAI-Nope-v0"),
        (["--device", "cuda:7"], "--device cuda:7"),
    ):
        with pytest.raises(SystemExit) as refused:
            mp.main(["--checkpoint", checkpoint, *argv])
        err = capsys.readouterr().err
        assert refused.value.code == 2 and err.startswith("error: ") and message in err, err
        assert err.count("\n") == 1
    with pytest.raises(SystemExit) as refused:
        mp.main(["--checkpoint", str(tmp_path / "no-such.pt"), "--task_id", "BabyAI-Unlock-v0"])
    assert refused.value.code == 2 and "no-such" in capsys.readouterr().err


def test_the_control_row_reads_the_view_the_memory_read_last():
    steps = pd.DataFrame({"episode": [0, 0, 0, 1, 1], "t": [0, 1, 2, 0, 1]})
    views = np.arange(10, dtype=np.float32).reshape(5, 2) + 1
    last = mp.last_views(steps, views)
    assert last.tolist() == [[0, 0], [1, 2], [3, 4], [0, 0], [7, 8]]  # zeros where an episode starts
