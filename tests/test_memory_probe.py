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
from mop.babyai_env import RoomLayout, make_env

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
    table = mp.probe_table(steps, memory, blocks, LAYOUT, min_age=10).set_index("features")
    base = table.loc[mp.NO_MEMORY]
    assert table.loc["signal", "size"] == 9 and base["size"] == LAYOUT.num_rooms + 2
    for column in ("auc", "auc_old", "auc_solved", "auc_failed"):
        assert table.loc["signal", column] > max(base[column] + 0.1, 0.9), column
        assert table.loc["all", column] > base[column] + 0.1, column
        assert abs(table.loc["noise", column] - base[column]) < 0.03, column
    assert (table["rooms_auc"] >= 1).all()


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
    # no memory, all, then the tiny preset's layers [[0, 8, 16], [0, 8]]: a router and 2 + 1 experts
    assert list(table["features"])[:2] == [mp.NO_MEMORY, "all"] and len(table) == 2 + 3 + 2
    for argv, message in (
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
