"""Subgoal and event recording (mop/subgoals.py), their cache columns (schema 2), the analyses
(mop/subgoal_analysis.py), the figures and render_plots' refusals."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from test_legacy_cache import our_meta, our_tables

from mop.babyai_env import PhaseTracker, SafeBot, make_env, quiet_reset
from mop.routing_cache import (
    EVENT_COLUMNS,
    JSON_FILE,
    META_FILE,
    SCHEMA_VERSION,
    SUBGOAL_STEP_COLUMNS,
    load_cache,
    write_cache,
)
from mop.subgoal_analysis import (
    SubgoalAnalysisError,
    event_locked,
    routing_by_subgoal,
    steps_per_subgoal,
)
from mop.subgoals import SubgoalRecorder

UNLOCK = "BabyAI-UnlockPickup-v0"  # pick up the key, open the locked door, drop it, pick up the box


def bot_episode(task_id: str, seed: int) -> tuple[list[dict], list[tuple[str, str]], list[int], dict]:
    """The bot plays a layout while a SubgoalRecorder watches: (recorded rows, the acting bot's
    own subgoal at each step, its actions, PhaseTracker's event times)."""
    env = make_env(task_id)
    obs = quiet_reset(env, seed)
    actor, recorder, tracker = SafeBot(env), SubgoalRecorder(env), PhaseTracker(env)
    rows, own, actions, previous = [], [], [], None
    for t in range(env.max_steps):
        tracker.observe(t)
        rows.append(recorder.observe(obs, previous))
        action = actor.label(previous)
        top = actor.bot.stack[-1] if actor.bot.stack else None
        own.append((type(top).__name__, getattr(top, "reason", None), getattr(top, "datum", None)))
        actions.append(action)
        obs, _, terminated, truncated, _ = env.step(action)
        previous = action
        if terminated or truncated:
            break
    times = {"t_pick": tracker.t_pick, "t_unlocked": tracker.t_unlocked, "t_drop": tracker.t_drop}
    return rows, own, actions, times


# The vocabulary by hand, from the acting bot's raw stack (class name, reason).
EXPECTED = {"GoNextToSubgoal": "GoNextTo", "OpenSubgoal": "Open", "PickupSubgoal": "Pickup",
            "DropSubgoal": "Drop", "CloseSubgoal": "Close", "ExploreSubgoal": "Explore", "NoneType": "Done"}  # fmt: skip


def test_recorded_subgoal_equals_the_bots_own_stack_when_it_plays():
    rows, own, _, _ = bot_episode(UNLOCK, 0)
    recorded = [(r["subgoal"], r["subgoal_target"]) for r in rows]
    expected = ["Explore" if reason == "Explore" else EXPECTED[cls] for cls, reason, _ in own]
    assert [s for s, _ in recorded] == expected
    for (_, target), (_, _, datum) in zip(recorded, own):
        if isinstance(datum, tuple):
            assert target == f"({datum[0]},{datum[1]})"
        elif datum is not None and hasattr(datum, "obj_set"):  # the mission's description
            assert target == " ".join(p for p in (datum.color, datum.type) if p)
    names = {s for s, _ in recorded}
    assert {"Pickup", "Open"} <= names and "Failed" not in names
    assert any(t.endswith(" key") for s, t in recorded if s == "Pickup")
    assert any(" door (" in t for s, t in recorded if s == "Open")


def test_event_times_are_the_steps_at_which_the_state_changed():
    rows, _, actions, times = bot_episode(UNLOCK, 0)
    events = {e: [t for t, r in enumerate(rows) if r[e]] for e in EVENT_COLUMNS}
    assert events["event_pickup"] == [times["t_pick"]] and actions[times["t_pick"] - 1] == 3  # pickup
    assert events["event_unlock"] == [times["t_unlocked"]] == events["event_open"]
    assert actions[times["t_unlocked"] - 1] == 5  # toggle
    assert events["event_drop"] == [times["t_drop"]] and actions[times["t_drop"] - 1] == 4  # drop
    assert events["event_close"] == []
    # the box (the mission's target) behind the door comes into view when the door opens
    assert events["event_target_in_view"][0] == times["t_unlocked"]
    assert rows[0]["event_target_in_view"] == 0  # step 0 has no event by definition


def test_events_of_a_constructed_pickup_drop_and_door():
    """Pick the key, open a door, close it and drop the key by hand: each event at the step after
    the action that caused it, and nowhere else."""
    env = make_env(UNLOCK)
    obs = quiet_reset(env, 3)
    recorder = SubgoalRecorder(env)
    rows = [recorder.observe(obs, None)]
    key = next(o for o in env.grid.grid if o is not None and o.type == "key")
    door = next(o for o in env.grid.grid if o is not None and o.type == "door")

    def seen(action: int) -> None:
        env._fast_view.refresh()  # the grid changed by hand, not by env.step
        rows.append(recorder.observe(env.gen_obs(), action))

    env.grid.set(*key.cur_pos, None)  # what a pickup does
    env.carrying, key.cur_pos = key, np.array([-1, -1])
    seen(3)
    door.is_locked, door.is_open = False, True
    seen(5)
    door.is_open = False
    seen(5)
    env.carrying = None
    seen(4)
    fired = [[e for e in EVENT_COLUMNS if r[e] and e != "event_target_in_view"] for r in rows]
    assert fired == [[], ["event_pickup"], ["event_open", "event_unlock"], ["event_close"], ["event_drop"]]


def with_subgoals(steps: pd.DataFrame) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    out = steps.copy()
    out["subgoal"] = rng.choice(["GoNextTo", "Explore", "Pickup"], size=len(out))
    out["subgoal_target"] = np.where(out["subgoal"] == "Explore", "(1,2)", "red key")
    for e in EVENT_COLUMNS:
        out[e] = (rng.random(len(out)) < 0.15).astype(np.int64)
    return out


def test_cache_round_trip_with_subgoal_columns(tmp_path):
    steps, episodes, config = our_tables()
    steps = with_subgoals(steps)
    write_cache(tmp_path / "c", steps, episodes, our_meta(config))
    back = load_cache(tmp_path / "c")
    for c in SUBGOAL_STEP_COLUMNS:
        assert c in back.steps.columns
    assert back.steps["subgoal"].tolist() == steps["subgoal"].tolist()
    assert back.steps["subgoal_target"].tolist() == steps["subgoal_target"].tolist()
    for e in EVENT_COLUMNS:
        assert back.steps[e].tolist() == steps[e].tolist()
    assert json.loads((tmp_path / "c" / META_FILE).read_text())["schema_version"] == SCHEMA_VERSION == 2


def test_a_version_1_cache_reads_with_the_columns_absent(tmp_path):
    steps, episodes, config = our_tables()
    write_cache(tmp_path / "c", steps, episodes, our_meta(config))
    meta_path = tmp_path / "c" / META_FILE
    meta = json.loads(meta_path.read_text())
    meta["schema_version"] = 1
    meta_path.write_text(json.dumps(meta))
    back = load_cache(tmp_path / "c")
    assert not set(SUBGOAL_STEP_COLUMNS) & set(back.steps.columns)
    assert len(back.steps) == len(steps)
    with pytest.raises(SubgoalAnalysisError, match="--cache .*no subgoal columns"):
        routing_by_subgoal({"old": back.steps})


def test_the_earlier_systems_json_export_is_unchanged(tmp_path):
    steps, episodes, config = our_tables()
    write_cache(tmp_path / "a", steps, episodes, our_meta(config), ("parquet", "json"))
    write_cache(tmp_path / "b", with_subgoals(steps), episodes, our_meta(config), ("parquet", "json"))
    assert (tmp_path / "a" / JSON_FILE).read_bytes() == (tmp_path / "b" / JSON_FILE).read_bytes()


def toy_run(shift: float, rng: np.random.Generator, episodes: int = 6, length: int = 12) -> pd.DataFrame:
    """Expert 1's weight is 0.2 + shift under Pickup and 0.2 elsewhere, wherever the agent stands;
    one pickup per episode at t = 6, after which expert 1 weighs 0.7."""
    rows = []
    for e in range(episodes):
        for t in range(length):
            subgoal = "Pickup" if t in (4, 5) else ("GoNextTo" if t < 6 else "Drop")
            w1 = 0.2 + (shift if subgoal == "Pickup" else 0.0) + rng.normal(0, 0.01)
            w1 = 0.7 if t >= 6 else w1
            rows.append(
                {"episode": e, "t": t, "x": t % 3, "y": e % 2, "subgoal": subgoal, "subgoal_target": "",
                 "layer_0_expert_0": 1 - w1, "layer_0_expert_1": w1, "lpc": 16 * w1,
                 **{ev: int(ev == "event_pickup" and t == 6) for ev in EVENT_COLUMNS}}
            )  # fmt: skip
    return pd.DataFrame(rows)


def test_routing_by_subgoal_runs_as_units_and_one_run_labelled():
    rng = np.random.default_rng(0)
    runs = {f"seed_{s}": toy_run(0.3 + 0.05 * s, rng) for s in range(3)}
    table = routing_by_subgoal(runs, expert_sizes=[[0, 4]])
    row = table.query("subgoal == 'Pickup' and quantity == 'layer_0_expert_1' and adjustment == 'none'").iloc[
        0
    ]
    assert row["n_units"] == 3 and row["unit"] == "runs" and row["mean"] == pytest.approx(0.55, abs=0.01)
    assert row["ci_low"] < 0.55 < row["ci_high"] <= 1.0 and "over 3 runs" in row["interval"]
    assert row["steps"] == 3 * 6 * 2
    one = routing_by_subgoal({"seed_0": runs["seed_0"]}, expert_sizes=[[0, 4]])
    assert set(one["unit"]) == {"episodes of one run"}
    counts = steps_per_subgoal(runs)
    assert counts.query("run == 'seed_0' and subgoal == 'Pickup'")["steps"].item() == 12


def test_within_cell_adjustment_removes_routing_that_follows_the_cell():
    """Routing set by the cell alone, with a subgoal held in some cells more than others: the
    raw means differ by subgoal, the within-cell ones do not."""
    rng = np.random.default_rng(2)
    n = 600
    x = rng.integers(0, 4, n)
    subgoal = np.where(rng.random(n) < 0.2 + 0.2 * x, "Explore", "GoNextTo")
    w1 = 0.1 + 0.2 * x
    steps = pd.DataFrame(
        {"episode": np.arange(n) // 20, "t": np.arange(n) % 20, "x": x, "y": 0, "subgoal": subgoal,
         "subgoal_target": "", "layer_0_expert_0": 1 - w1, "layer_0_expert_1": w1, "lpc": 16 * w1,
         **{e: 0 for e in EVENT_COLUMNS}}
    )  # fmt: skip
    table = routing_by_subgoal({"a": steps, "b": steps.copy()}).set_index(
        ["adjustment", "subgoal", "quantity"]
    )
    raw = (
        table.loc[("none", "Explore", "layer_0_expert_1"), "mean"]
        - table.loc[("none", "GoNextTo", "layer_0_expert_1"), "mean"]
    )
    adjusted = table.loc[("within_cell", "Explore", "layer_0_expert_1"), "mean"]
    assert raw > 0.05 and abs(adjusted) < 1e-9


def test_within_step_adjustment_removes_routing_that_follows_the_step_of_the_episode():
    """Routing set by the step index alone (high right after the reset), with Explore held at the
    first steps (as the bot does on UnlockPickup): the raw means differ by subgoal, the within-step
    ones do not, and only the steps at indices held under both subgoals inform them."""
    rng = np.random.default_rng(4)
    episodes, length = 40, 12
    t = np.tile(np.arange(length), episodes)
    explore = (t == 0) | ((t == 1) & (rng.random(t.size) < 0.8))
    w1 = np.where(t < 2, 0.8, 0.2)
    steps = pd.DataFrame(
        {"episode": np.repeat(np.arange(episodes), length), "t": t, "x": rng.integers(0, 5, t.size), "y": 0,
         "subgoal": np.where(explore, "Explore", "GoNextTo"), "subgoal_target": "",
         "layer_0_expert_0": 1 - w1, "layer_0_expert_1": w1, "lpc": 16 * w1, **{e: 0 for e in EVENT_COLUMNS}}
    )  # fmt: skip
    table = routing_by_subgoal({"a": steps, "b": steps.copy()}).set_index(
        ["adjustment", "subgoal", "quantity"]
    )
    raw = table.loc[("none", "Explore", "lpc"), "mean"] - table.loc[("none", "GoNextTo", "lpc"), "mean"]
    assert raw > 5 and abs(table.loc[("within_step", "Explore", "lpc"), "mean"]) < 1e-9
    mixed = table.loc[("within_step", "Explore", "lpc"), "steps_mixed_t"]
    assert mixed == 2 * int((explore & (t == 1)).sum())  # t = 0 is Explore only: it informs nothing


def test_event_locked_routing_steps_at_the_event():
    rng = np.random.default_rng(0)
    runs = {f"seed_{s}": toy_run(0.0, rng) for s in range(3)}
    table = event_locked(runs, "event_pickup", k=3)
    w = table[table["quantity"] == "layer_0_expert_1"].set_index("offset")["mean"]
    assert list(w.index) == [-3, -2, -1, 0, 1, 2, 3]
    assert w[-1] == pytest.approx(0.2, abs=0.02) and w[0] == pytest.approx(0.7)
    assert set(table["unit"]) == {"runs"} and table["events"].iloc[0] == 18
    one = event_locked({"seed_0": runs["seed_0"]}, "event_pickup", k=3)
    assert set(one["unit"]) == {"events of one run"} and one["n_units"].max() == 6


@pytest.mark.parametrize("k", [-1, 12, 1.5, True])
def test_a_bad_window_names_the_flag(k):
    runs = {"a": toy_run(0.0, np.random.default_rng(0))}
    with pytest.raises(SubgoalAnalysisError, match="--event_k"):
        event_locked(runs, "event_pickup", k=k)
    with pytest.raises(SubgoalAnalysisError, match="--event "):
        event_locked(runs, "event_jump", k=1)


def subgoal_caches(tmp_path, seeds=(0, 1), subgoals=True) -> list[str]:
    steps, episodes, config = our_tables()
    folders = []
    for seed in seeds:
        meta = our_meta({**config, "seed": seed})
        folder = tmp_path / "cache" / f"seed_{seed}"
        write_cache(folder, with_subgoals(steps) if subgoals else steps, episodes, meta)
        folders.append(str(folder))
    return folders


def test_render_plots_subgoals_writes_figures_and_tables(tmp_path):
    import render_plots

    folders = subgoal_caches(tmp_path)
    out = render_plots.main(
        ["--subgoals", *sum((["--cache", f] for f in folders), []), "--out", str(tmp_path / "p")]
    )
    names = sorted(p.rsplit("/", 1)[1] for p in out["paths"])
    assert names == [
        "event_locked_routing.csv", "event_locked_routing.png", "routing_by_subgoal.csv",
        "routing_by_subgoal.png", "routing_by_subgoal_within_cell.png", "routing_by_subgoal_within_step.png",
        "steps_per_subgoal.csv",
    ]  # fmt: skip
    table = pd.read_csv(tmp_path / "p" / "subgoals" / "BabyAI-UnlockPickup-v0" / "routing_by_subgoal.csv")
    assert set(table["unit"]) == {"runs"} and {"subgoal", "mean", "ci_low", "ci_high", "steps"} <= set(
        table.columns
    )


@pytest.mark.parametrize(
    "case, flag",
    [("old", "--cache"), ("negative", "--event_k"), ("too_wide", "--event_k"), ("same_run", "--cache")],
)
def test_render_plots_subgoals_refuses_bad_input(tmp_path, capsys, case, flag):
    import render_plots

    folders = subgoal_caches(tmp_path, subgoals=case != "old", seeds=(0, 0) if case == "same_run" else (0, 1))
    if case == "same_run":
        folders = [folders[0], folders[0] + "/../seed_0"]
    k = {"negative": "-1", "too_wide": "10"}.get(case, "2")  # the longest episode has 10 steps
    out = tmp_path / "p"
    with pytest.raises(SystemExit) as exit_info:
        render_plots.main(
            ["--subgoals", "--event_k", k, *sum((["--cache", f] for f in folders), []), "--out", str(out)]
        )
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and flag in err[0]
    assert not out.exists()


@pytest.mark.slow
def test_recording_subgoals_leaves_the_actions_unchanged(tiny_run, tmp_path):
    """The bot only watches: the same actions, logits and routing with and without it; eval_mop
    --record_subgoals writes the columns into the cache."""
    import eval_mop
    from eval_mop import EvalOptions, evaluate

    checkpoint = str(tiny_run.checkpoints[-1])
    plain = evaluate(checkpoint, EvalOptions(num_episodes=4, num_envs=2))
    watched = evaluate(checkpoint, EvalOptions(num_episodes=4, num_envs=2, record_subgoals=True))
    assert not set(SUBGOAL_STEP_COLUMNS) & set(plain.steps.columns)
    assert set(SUBGOAL_STEP_COLUMNS) <= set(watched.steps.columns)
    shared = list(plain.steps.columns)
    pd.testing.assert_frame_equal(plain.steps[shared], watched.steps[shared])
    assert watched.steps["subgoal"].isin(["GoNextTo", "Explore", "Done", "Failed"]).all()
    summary = eval_mop.main(
        ["--checkpoint", checkpoint, "--num_episodes", "2", "--cache_dir", str(tmp_path), "--record_subgoals"]
    )
    data = load_cache(summary["cache"])
    assert set(SUBGOAL_STEP_COLUMNS) <= set(data.steps.columns)


def test_eval_mop_record_subgoals_without_a_cache_refuses(capsys):
    import eval_mop

    with pytest.raises(SystemExit) as exit_info:
        eval_mop.main(["--checkpoint", "nowhere.pt", "--record_subgoals"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --record_subgoals")
