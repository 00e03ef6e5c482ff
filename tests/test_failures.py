"""failures.py and --key_layout_share: which layouts need the key, the milestones of a replayed
episode, the CLI, and training on a chosen share of key layouts.

pytest tests/test_failures.py
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import eval_mop as em
import failures as fl
from conftest import tiny_config
from mop.babyai_env import (
    EVAL_SEED_START,
    SafeBot,
    bot_path_length,
    check_locked_level,
    locked_doors,
    make_env,
    needs_key,
    quiet_reset,
    target_objects,
)
from mop.collection import Collector
from mop.experiment import ConfigError
from tests.test_env import small_agent


def _objects(env):
    return [o for o in env.grid.grid if o is not None]


def test_unlock_needs_the_key_exactly_when_no_other_door_has_the_locked_colour():
    # Unlock gives the locked door's colour to no other door in about half of its layouts;
    # where another door has it, opening that one meets "open the <colour> door".
    env = make_env("BabyAI-Unlock-v0")
    kinds = []
    for k in range(30):
        quiet_reset(env, EVAL_SEED_START + k)
        (locked,) = [o for o in _objects(env) if o.type == "door" and o.is_locked]
        alone = sum(o.type == "door" and o.color == locked.color for o in _objects(env)) == 1
        assert needs_key(env) == alone, k
        kinds.append(alone)
    assert 5 < sum(kinds) < 25  # both kinds are tested


def test_gotoimpunlock_needs_the_key_exactly_when_only_the_locked_room_holds_the_target():
    # The mission names an object of the locked room; an object elsewhere may match it too.
    # (minigrid means to leave the locked room otherwise empty, but `i is not id` on numpy ints
    # is always true, so its distractors land there as well: room membership decides, not counts.)
    env = make_env("BabyAI-GoToImpUnlock-v0")
    kinds = []
    for k in range(30):
        quiet_reset(env, EVAL_SEED_START + k)
        (locked_room,) = [r for row in env.room_grid for r in row if r.locked]
        (target,) = {(o.type, o.color) for o in target_objects(env)[0]}
        inside = all(o in locked_room.objs for o in _objects(env) if (o.type, o.color) == target)
        assert needs_key(env) == inside, k
        kinds.append(inside)
    assert 3 < sum(kinds) < 27


def _bot_actions(env, seed):
    quiet_reset(env, seed)
    bot, actions = SafeBot(env), []
    while True:
        actions.append(bot.label(None))
        _, reward, terminated, truncated, _ = env.step(actions[-1])
        if terminated or truncated:
            assert reward > 0
            return actions


def test_replaying_the_bot_reaches_every_milestone_in_order_and_a_cut_episode_stops_early():
    env = make_env("BabyAI-Unlock-v0")
    seed = next(
        EVAL_SEED_START + k for k in range(50) if (quiet_reset(env, EVAL_SEED_START + k), needs_key(env))[1]
    )
    actions = _bot_actions(env, seed)
    full = fl.replay_milestones(env, seed, actions)
    assert full["needs_key"] and full["locked_doors"] == 1 and full["replay_success"]
    assert full["t_key_seen"] <= full["t_key_held"] < full["t_unlocked"] == len(actions) - 1
    assert full["t_door_seen"] is not None and 0 < full["cells_stood_on"] < 1
    assert 0 < full["open_cells_seen"] <= 1 and full["key_sightings"] >= 1 and full["key_reachable"]
    assert full["t_last_new_cell"] < len(actions)
    assert full["t_other_held"] is None and not full["wrong_key_held"]  # it holds the door's key at the end
    quiet_reset(env, seed)
    assert full["held_at_end"] == f"{env.unwrapped.grid.get(*locked_doors(env)[0]).color} key"
    cut = fl.replay_milestones(env, seed, actions[: full["t_key_held"]])  # stops before the pickup
    assert cut["t_key_held"] is None and cut["t_unlocked"] is None and not cut["replay_success"]
    assert cut["t_key_seen"] == full["t_key_seen"] and cut["open_cells_seen"] <= full["open_cells_seen"]
    # facing the key before the pickup, two turns on the spot lose it from view and two more bring
    # it back: one sighting more, nothing new seen
    turned = fl.replay_milestones(env, seed, actions[: full["t_key_held"]] + [0] * 4)
    assert turned["key_sightings"] == cut["key_sightings"] + 1
    assert turned["key_sightings_late"] == cut["key_sightings_late"] + (
        turned["t_last_new_cell"] == cut["t_last_new_cell"]
    )
    assert (
        turned["t_last_new_cell"] == cut["t_last_new_cell"]
        or turned["open_cells_seen"] > cut["open_cells_seen"]
    )
    row = pd.Series({f"t_{k}": cut[f"t_{k}"] for k in fl.MILESTONES})
    assert fl.stage(row) == "key_seen"


def test_a_layout_whose_every_key_lies_behind_the_locked_door_is_marked_and_the_bot_fails_it():
    """GoToImpUnlock's generator puts the key in any room but the one it locks, and connect_all may
    reach that room only through the locked one: evaluation layout 6 is such a layout."""
    env = make_env("BabyAI-GoToImpUnlock-v0")
    seed = EVAL_SEED_START + 6
    row = fl.replay_milestones(env, seed, [0] * 8)
    assert row["needs_key"] and not row["key_reachable"]
    assert bot_path_length("BabyAI-GoToImpUnlock-v0", seed) is None
    solvable = fl.replay_milestones(env, EVAL_SEED_START + 294, [0] * 8)
    assert solvable["needs_key"] and solvable["key_reachable"]


def test_an_episode_that_picks_up_a_key_of_another_colour_is_marked_holding_it():
    """The bot drives GoToImpUnlock until, on its way to the right key, it faces one of another
    colour; the agent picks that up and stops there (the recipe's student does so in 82 of its 106
    solvable failures)."""
    env = make_env("BabyAI-GoToImpUnlock-v0")
    for k in range(60):
        seed = EVAL_SEED_START + k
        quiet_reset(env, seed)
        if not needs_key(env):
            continue
        colours = {env.unwrapped.grid.get(*p).color for p in locked_doors(env)}
        bot, actions = SafeBot(env), []
        for _ in range(300):
            label = bot.label(None)
            front = env.unwrapped.grid.get(*env.unwrapped.front_pos)
            if label is None:
                break
            free = env.unwrapped.carrying is None
            if front is not None and front.type == "key" and front.color not in colours and free:
                if label == 3:  # the bot moves it out of its way: not the first refusal the test needs
                    break
                row = fl.replay_milestones(env, seed, [*actions, 3, 0])
                assert row["t_other_held"] <= len(actions) and row["wrong_key_held"]
                assert row["held_at_end"] == f"{front.color} key" and row["t_key_held"] is None
                # the first time it faced that key with free hands it picked it up; turning away
                # instead is a refusal at the same step, with the door where it was then
                assert row["faced_other_picked"] is True and not row["faced_match_picked"]
                turned = fl.replay_milestones(env, seed, [*actions, 0, 0])
                assert turned["faced_other_picked"] is False and not turned["wrong_key_held"]
                image = env.unwrapped.gen_obs()["image"]
                in_view = ((image[..., 0] == 4) & (image[..., 2] == 2)).any()  # a locked door
                place = "in view" if in_view else "not seen" if row["t_door_seen"] is None else "seen"
                assert row["faced_other_door"] == turned["faced_other_door"] == place
                return
            actions.append(label)
            _, _, terminated, truncated, _ = env.step(label)
            if terminated or truncated:
                break
    raise AssertionError("no layout where the bot faces a key of another colour")


def test_the_bot_takes_over_a_replayed_episode_and_finishes_it():
    env = make_env("BabyAI-Unlock-v0")
    seed = next(
        EVAL_SEED_START + k for k in range(50) if (quiet_reset(env, EVAL_SEED_START + k), needs_key(env))[1]
    )
    actions = _bot_actions(env, seed)
    for start in (0, len(actions) // 2, len(actions)):
        assert fl.bot_takeover(env, seed, actions, start, undo=False) == (True, None)
    wander = [0, 2, 1, 2] * 10  # forty steps of the student's own
    assert fl.bot_takeover(env, seed, wander, 40, undo=True) == (True, None)
    assert fl.takeover_steps("150,300") == [150, 300] and fl.takeover_steps(None) == []
    for bad in ("150;300", "-5", ""):
        with pytest.raises(ConfigError, match="--takeover"):
            fl.takeover_steps(bad)


def test_a_level_without_a_locked_door_is_refused():
    with pytest.raises(ValueError, match="no locked door"):
        check_locked_level("BabyAI-GoToObjMaze-v0")
    check_locked_level("BabyAI-Unlock-v0")


@pytest.mark.slow
def test_the_cli_dissects_a_real_checkpoint_and_refuses_bad_input(tiny_run, tmp_path, capsys):
    checkpoint = str(tiny_run.checkpoints[-1])
    out = tmp_path / "failures.csv"
    played = ["--checkpoint", checkpoint, "--task_id", "BabyAI-Unlock-v0", "--num_episodes", "3"]
    table = fl.main([*played, "--out", str(out)])
    printed, err = capsys.readouterr()
    # the episodes play under a bar on stderr (minutes on a hard level); --no_progress drops it
    assert f"play {Path(checkpoint).name} on BabyAI-Unlock-v0" in err
    assert "BabyAI-Unlock-v0: 3 episodes (greedy)" in printed and "never saw a matching key" in printed
    # every success rate it prints comes with its 95% Wilson interval over the episodes it counts
    k = int(table["success"].sum())
    low, high = em.wilson_interval(k, 3)
    assert f"success {k / 3:.1%} [{low:.1%}, {high:.1%}] (95% Wilson)" in printed
    key = table[table["needs_key"]]
    if len(key):
        low, high = em.wilson_interval(int(key["success"].sum()), len(key))
        assert f"[{low:.1%}, {high:.1%}]" in printed.split("need the key")[1].splitlines()[0]
    assert len(table) == 3 and list(pd.read_csv(out)["episode"]) == [0, 1, 2]
    # --takeover: the bot drives the failed layouts from step T; from the start it solves them all
    fl.main([*played, "--takeover", "0,5", "--no_progress"])
    taken = capsys.readouterr().out
    failed = table[table.needs_key & ~table.success & table.key_reachable]
    if len(failed):
        assert f"T = 0     solved {len(failed)} of {len(failed)}; the bot gave up: none" in taken
        assert "T = 5 " in taken
    # the same checkpoint against its own table: every layout agrees with itself, p 1
    fl.main([*played, "--against", str(out), "--no_progress"])
    paired, err = capsys.readouterr()
    assert "play " not in err
    (row,) = [line.split() for line in paired.splitlines() if line.startswith("all ")]
    assert row[1:] == ["3", str(k), "0", "0", str(3 - k), "1"]
    assert set(table["stage"]) <= {key for key, _ in fl.STAGES}
    # the saved table reports the same again with nothing played (--table), and pairs with itself
    fl.main(["--table", str(out), "--against", str(out)])
    again = capsys.readouterr().out.splitlines()
    low, high = em.wilson_interval(k, 3)
    assert (
        again[0]
        == f"{out}: 3 episodes (a saved table), success {k / 3:.1%} [{low:.1%}, {high:.1%}] (95% Wilson)"
    )
    report = printed.splitlines()[1:]
    assert again[1 : 1 + len(report)] == report
    assert [line.split() for line in again if line.startswith("all ")][0][1:] == row[1:]
    for argv, message in (
        (["--table", str(out), "--num_episodes", "3"], "nothing is played: drop --num_episodes"),
        (["--table", str(out), "--out", str(tmp_path / "x.csv")], "drop --out"),
        (["--table", str(tmp_path / "none.csv")], "--table"),
        (["--table", str(out), "--checkpoint", checkpoint], "not allowed with"),
        (["--table", str(out), "--takeover", "10"], "drop --takeover"),
        (["--bot", "--num_episodes", "2"], "--bot plays a level the bot is given: add --task_id"),
        (["--bot", "--task_id", "BabyAI-Unlock-v0", "--takeover", "5"], "--bot: the bot plays its own"),
        (["--bot", "--task_id", "BabyAI-GoToLocal-v0"], "no locked door"),
        (["--bot", "--checkpoint", checkpoint], "not allowed with"),
    ):
        with pytest.raises(SystemExit) as refused:
            fl.main(argv)
        err = capsys.readouterr().err
        assert (
            refused.value.code == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1
        )
    assert not (tmp_path / "x.csv").exists()
    for argv, message in (
        (["--task_id", "BabyAI-GoToLocal-v0"], "no locked door"),
        (["--num_episodes", "0"], "--num_episodes must be >= 1"),
        (["--takeover", "ten"], "--takeover takes steps"),
        (["--task_id", "BabyAI-Unlock-v0,BabyAI-GoToLocal-v0"], "several levels"),
        (["--device", "cuda:7"], "--device cuda:7"),
    ):
        with pytest.raises(SystemExit) as refused:
            fl.main(["--checkpoint", checkpoint, *argv])
        err = capsys.readouterr().err
        assert refused.value.code == 2 and err.startswith("error: ") and message in err, err
        assert err.count("\n") == 1
    with pytest.raises(SystemExit) as refused:
        fl.main(["--checkpoint", str(tmp_path / "no-such.pt")])
    assert refused.value.code == 2 and "no-such" in capsys.readouterr().err


def _played_layouts(share, run_seed=0, steps=60):
    """(seed, needs_key) of every episode two Unlock envs play in `steps` steps of 4 each."""
    policy, encoder = small_agent()
    collector = Collector(
        "BabyAI-Unlock-v0", [0, 1], run_seed, 4, "raw", teacher_forcing=1.0, key_layout_share=share
    )
    chunk = collector.collect(policy, encoder, steps)
    env = make_env("BabyAI-Unlock-v0")
    out = []
    for _, episode in chunk["episodes"]:
        quiet_reset(env, episode.seed)
        out.append((episode.seed, needs_key(env)))
    return out


def test_key_layout_share_trains_on_the_kind_of_layout_asked_for():
    own = _played_layouts(None)
    assert 0 < sum(k for _, k in own) < len(own) and len(own) >= 20  # the level's own mix has both
    assert all(k for _, k in _played_layouts(1.0)) and not any(k for _, k in _played_layouts(0.0))
    half = _played_layouts(0.5)
    assert half == _played_layouts(0.5)  # reproducible for a run seed
    assert 0 < sum(k for _, k in half) < len(half)
    seeds = [s for s, _ in half]
    assert len(set(seeds)) == len(seeds) and min(seeds) >= 10**9  # training seeds, none twice


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"key_layout_share": 1.5, "task_id": "BabyAI-Unlock-v0"}, "key_layout_share must be in"),
        ({"key_layout_share": 0.8}, "no mission of BabyAI-GoToRedBallGrey-v0 needs a key"),
        (
            {"key_layout_share": 0.5, "task_id": "BabyAI-Synth-v0"},
            "no mission of BabyAI-Synth-v0 needs a key",
        ),
        ({"key_layout_share": 0.8, "task_id": "BabyAI-Unlock-v0", "demos": 10}, "bot demos"),
    ],
)
def test_bad_key_layout_settings_are_refused(tmp_path, overrides, match):
    with pytest.raises(ConfigError, match=match):
        tiny_config(tmp_path, **overrides)


def test_instruction_kinds_follow_the_missions_verb():
    env = make_env("BabyAI-Synth-v0")
    prefixes = {"go to": "go to", "pick up": "pick up", "open": "open", "put next": "put"}
    seen = set()
    for k in range(40):
        mission = quiet_reset(env, EVAL_SEED_START + k)["mission"]
        kind = fl.instruction_kind(env.instrs)
        assert mission.startswith(prefixes[kind]), (kind, mission)
        seen.add(kind)
    assert seen == set(prefixes)
    boss = make_env("BabyAI-BossLevel-v0")
    missions = [(quiet_reset(boss, k)["mission"], fl.instruction_kind(boss.instrs)) for k in range(30)]
    assert any(
        kind == "two instructions" and (" and " in m or "then" in m or "after" in m) for m, kind in missions
    )


def test_put_next_records_which_object_was_carried_and_a_swapped_mission_shows_as_the_fixed_one():
    """The bot on "put X next to Y" carries an X; the bot on "put Y next to X" in the same layout
    (what a student that cannot read word order may do) carries a Y, which the replay of the
    original mission records as fixed_held, never move_held, and the report counts."""
    from minigrid.envs.babyai.core.verifier import PutNextInstr

    env = make_env("BabyAI-PutNextLocal-v0")
    for k in range(40):  # a layout whose two descriptions match disjoint objects
        seed = EVAL_SEED_START + k
        quiet_reset(env, seed)
        move, fixed = env.instrs.desc_move, env.instrs.desc_fixed
        if not {id(o) for o in move.obj_set} & {id(o) for o in fixed.obj_set}:
            break
    right = fl.replay_milestones(env, seed, _bot_actions(env, seed))
    assert right["instruction"] == "put next" and right["reversible"] and right["replay_success"]
    assert right["t_move_held"] is not None and right["t_fixed_held"] is None

    quiet_reset(env, seed)
    env.instrs = PutNextInstr(fixed, move)  # the same words in the other order
    env.instrs.reset_verifier(env)
    bot, swapped = SafeBot(env), []
    for _ in range(200):
        swapped.append(bot.label(None))
        _, reward, terminated, truncated, _ = env.step(swapped[-1])
        if terminated or truncated:
            break
    assert reward > 0  # the bot solved the swapped mission
    wrong = fl.replay_milestones(env, seed, swapped)  # replayed under the layout's own mission
    assert wrong["t_fixed_held"] is not None and wrong["t_move_held"] is None and not wrong["replay_success"]

    table = pd.DataFrame(
        [
            {
                "success": True,
                "instruction": "put next",
                "reversible": True,
                "t_move_held": 3,
                "t_fixed_held": None,
            },
            {
                "success": False,
                "instruction": "put next",
                "reversible": True,
                "t_move_held": None,
                "t_fixed_held": 4,
            },
            {
                "success": False,
                "instruction": "put next",
                "reversible": False,
                "t_move_held": None,
                "t_fixed_held": None,
            },
        ]
    )
    report = "\n".join(fl.put_next_report(table))
    assert "the fixed object can move too" in report and "2 failed: held an object to move 0" in report
    assert "held only the fixed one (the words swapped) 1, held neither 1" in report


def test_a_saved_table_reads_back_to_the_same_report_and_a_foreign_one_is_refused(tmp_path):
    """--table: what --out wrote (missing milestones, a put-next mission's reversible flag, NaN
    elsewhere) reads back typed as anatomy types it, so format_report prints the same lines."""
    milestones = {
        f"t_{k}": pd.array(v, dtype="Int64")
        for k, v in zip(
            fl.MILESTONES + fl.PUT_NEXT_MILESTONES,
            (
                [3, None, 5, None],
                [4, None, None, 2],
                [9, None, None, None],
                [None] * 4,
                [None, None, None, 1],
                [None] * 4,
            ),
        )
    }
    table = pd.DataFrame(
        {
            "episode": range(4),
            "success": [True, False, False, False],
            "length": [20, 64, 64, 64],
            "instruction": ["go to", "go to", "go to", "put next"],
            "locked_doors": [1, 1, 1, 0],
            "needs_key": [True, True, True, False],
            "reversible": pd.array([None, None, None, True], dtype="boolean"),
            **milestones,
            "cells_stood_on": [0.2, 0.5, 0.4, 0.1],
        }
    )
    table["stage"] = table.apply(fl.stage, axis=1)
    path = tmp_path / "t.csv"
    em.save_table(table, str(path))
    back = fl.read_against(str(path), "--table")
    assert fl.format_report(back) == fl.format_report(table)
    assert "saw a matching key, never held one" in fl.format_report(back)
    assert back["t_key_held"].dtype == "Int64" and back["reversible"].dtype == "boolean"
    assert "reachable without a key" not in fl.format_report(back)  # a table from before those columns
    explored = table.assign(
        open_cells_seen=[0.9, 1.0, 0.5, 1.0],
        t_last_new_cell=[10, 30, 50, 5],
        key_sightings=[1, 4, 0, 0],
        key_sightings_late=[0, 3, 0, 0],
        key_reachable=[True, True, True, False],
        t_other_held=pd.array([None, 40, 70, None], dtype="Int64"),
        wrong_key_held=[False, True, False, False],
    )
    assert fl.facing_report(explored) == []  # a table from before the facing columns
    explored = explored.assign(
        faced_match_picked=[True, False, None, None],
        faced_match_door=["in view", "seen", None, None],
        faced_other_picked=[False, True, True, None],
        faced_other_door=["seen", "seen", "not seen", None],
    )
    facing = fl.facing_report(explored)
    assert "(3 layouts that need a key it can reach" in facing[1]
    assert facing[3].split()[:4] == ["in", "view", "1/1", "100%"] and facing[3].rstrip().endswith("-")
    assert facing[4].split()[1:3] == ["0/1", "0%"] and facing[4].split()[5:7] == ["1/2", "50%"]
    assert facing[5].split()[2:4] == ["-", "1/1"]
    explored = explored.drop(columns=[c for c in explored.columns if c.startswith("faced_")])
    report = fl.format_report(explored).splitlines()
    assert "failed 75%, solved 90%; 1 of the 2 failed with a key to reach saw every one" in report[-4]
    assert report[-3].endswith("step 40 (median) of 64") and " 4 separate times" in report[-1]
    assert report[-2] == (
        "failed with a key to reach that picked up something else: 2 of 2 (first at step 55, median),"
        " still holding a key of another colour at the end: 1; solved: 0 of 1"
    )
    assert report[-1].endswith("3 of them after the last new cell")
    (behind,) = [line for line in report if "every matching key behind" in line]
    assert behind.endswith("0 failed of 0 such layouts")
    lost = fl.format_report(explored.assign(key_reachable=[True, True, False, False])).splitlines()
    assert any(line.endswith("1 failed of 1 such layouts") for line in lost)
    assert "1 of the 1 failed with a key to reach" in lost[-4]  # the lost layout is left out there
    foreign = tmp_path / "f.csv"
    table.assign(stage="lost").to_csv(foreign, index=False)
    with pytest.raises(fl.FailureError, match="needs_key or stage column"):
        fl.read_against(str(foreign), "--table")
    table.drop(columns="success").to_csv(foreign, index=False)
    with pytest.raises(fl.FailureError, match=r"--table .* \(no success\)"):
        fl.read_against(str(foreign), "--table")


def test_a_level_table_row_of_outcomes_only_is_reported_and_paired(tmp_path, capsys):
    """bench/levels.py keeps each row's layouts as episode, seed, success, instruction, length:
    --table reports its success and pairs it, and says there is nothing to dissect."""
    kinds = ["go to"] * 4
    for name, successes in (("a.csv", [True, True, False, True]), ("b.csv", [True, False, False, False])):
        pd.DataFrame(
            {"episode": range(4), "seed": range(4), "success": successes, "instruction": kinds, "length": 9}
        ).to_csv(tmp_path / name, index=False)
    fl.main(["--table", str(tmp_path / "a.csv"), "--against", str(tmp_path / "b.csv")])
    lines = capsys.readouterr().out.splitlines()
    low, high = em.wilson_interval(3, 4)
    head = f"4 episodes (a saved table), success 75.0% [{low:.1%}, {high:.1%}] (95% Wilson)"
    assert lines[0] == f"{tmp_path / 'a.csv'}: {head}"
    assert lines[1] == fl.OUTCOMES_ONLY
    (row,) = [line.split() for line in lines if line.startswith("all ")]
    assert row[1:6] == ["4", "1", "2", "0", "1"]  # both, this only, other only, neither


def _table(successes, instructions):
    return pd.DataFrame({"episode": range(len(successes)), "success": successes, "instruction": instructions})


def test_against_pairs_two_runs_layout_by_layout_and_refuses_what_cannot_be_paired(tmp_path):
    kinds = ["go to"] * 6 + ["put next"] * 6
    this = _table([True] * 6 + [True, True, True, True, False, False], kinds)
    other = _table([True] * 5 + [False] + [False, False, False, True, True, False], kinds)
    lines = fl.paired_report(this, other, "b.csv")
    rows = {line.split()[0] + (" next" if line.startswith("put") else ""): line.split() for line in lines[3:]}
    # all: both 6, this only 4 (layouts 5, 6, 7, 8), other only 1 (10), neither 1 (11)
    assert rows["all"][1:6] == ["12", "6", "4", "1", "1"]
    assert float(rows["all"][6]) == pytest.approx(0.375)  # binomial(4 of 5, 1/2), two-sided
    # per kind, Holm over the two kinds: put next 3 vs 1 (p 0.625), go to 1 vs 0 (p 1)
    assert rows["put next"][2:7] == ["6", "1", "3", "1", "1"] and rows["go"][2:6] == ["6", "5", "1", "0"]
    assert "12 shared layouts" in lines[1] and lines[-1] == fl.SCOPE and "not their recipes" in fl.SCOPE
    swapped = _table(this.success, ["pick up"] * 12)
    with pytest.raises(fl.FailureError, match="missions differ"):
        fl.paired_report(this, swapped, "c.csv")
    with pytest.raises(fl.FailureError, match="shares no evaluation layout"):
        fl.paired_report(this, other.assign(episode=other.episode + 100), "d.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("episode,outcome\n0,1\n")
    with pytest.raises(fl.FailureError, match="no success, instruction"):
        fl.read_against(str(bad))
    twice = tmp_path / "twice.csv"
    pd.concat([other, other]).to_csv(twice, index=False)
    with pytest.raises(fl.FailureError, match="one row each"):
        fl.read_against(str(twice))
    good = tmp_path / "good.csv"
    other.to_csv(good, index=False)
    assert fl.read_against(str(good)).equals(other)


def test_against_a_missing_file_is_refused_before_anything_is_played(tmp_path, capsys):
    with pytest.raises(SystemExit) as refused:
        fl.main(["--checkpoint", str(tmp_path / "none.pt"), "--against", str(tmp_path / "no.csv")])
    err = capsys.readouterr().err
    assert refused.value.code == 2 and "--against" in err and "no.csv" in err and err.count("\n") == 1


def test_key_layout_share_chooses_the_layouts_of_a_demos_runs_dagger_phase(tmp_path, monkeypatch):
    """With --demo_updates K the student acts from update K+1: the share is accepted and reaches
    the DAgger phase's collector (a run on demos alone is still refused, above)."""
    import train_mop
    from mop import imitation_data

    shares = []
    real = imitation_data.ParallelCollector

    def recording(*args, **kwargs):
        shares.append(kwargs["key_layout_share"])
        return real(*args, **kwargs)

    monkeypatch.setattr(imitation_data, "ParallelCollector", recording)
    cfg = tiny_config(
        tmp_path,
        task_id="BabyAI-Unlock-v0",
        demos=4,
        demos_dir=str(tmp_path / "demos"),
        demo_updates=2,
        num_updates=3,
        max_steps=16,
        key_layout_share=1.0,
    )
    train_mop.main(cfg, resume=False, progress=False)
    assert shares == [1.0]


def test_the_bot_plays_the_control_table_it_solves_what_can_be_solved_and_takes_no_wrong_key(
    tmp_path, capsys
):
    """--bot: the bot's own episodes on the first GoToImpUnlock layouts, dissected as a student's
    are: it fails exactly the layouts whose every matching key lies behind the door (layout 6 among
    them) and never ends holding a key of another colour."""
    out = tmp_path / "bot.csv"
    table = fl.main(
        ["--bot", "--task_id", "BabyAI-GoToImpUnlock-v0", "--num_episodes", "12", "--out", str(out)]
    )
    printed = capsys.readouterr().out
    assert printed.startswith("BabyAI-GoToImpUnlock-v0: 12 episodes (the bot)")
    assert (table.success == (~table.needs_key | table.key_reachable)).all() and not table.loc[6, "success"]
    assert not table.wrong_key_held.any() and out.exists()
    assert "the first time it faced a key with free hands" in printed
