"""The earlier system's routing_data.json, both ways, and its seed-metrics table (tier 1).

Its files are built here by hand, field by field, as its evaluation wrote them (reference_facts
§3.3-3.5: step-major records over N parallel envs, deduplicated layouts, timestamps as they were at
recording time, null before the event); ours from hand-made steps/episodes tables through the
same derive_step_columns that evaluation uses. No training, no env.
"""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import seed_metrics as sm
from mop import routing_analysis as ra
from mop.routing_cache import (
    JSON_FILE,
    LEGACY_RECORD_KEYS,
    LEGACY_TOP_KEYS,
    CacheData,
    derive_step_columns,
    find_caches,
    load_cache,
    read_legacy_json,
    weight_column,
    write_cache,
    write_legacy_json,
)

TASK = "BabyAI-UnlockPickup-v0"
SIZES = [[0, 8, 16], [0, 8]]

# UnlockPickup-like: one locked door, a key, a box to fetch (RoomGrid: start room and shape).
CTX_KEY = {
    "grid_size": [11, 6],
    "agent_start_pos": [2, 2],
    "agent_start_room": [0, 0],
    "room_grid_shape": [2, 1],
    "room_bounds": [1, 1, 4, 4],
    "goals": [],
    "doors": [[5, 3, "yellow", False, True]],
    "keys": [[3, 1, "yellow"]],
    "balls": [],
    "boxes": [[8, 2, "red"]],
    "target_pos": [8, 2],
}
# Two unlocked doors (OpenTwoDoors-like), not a RoomGrid level: no start room / room grid.
CTX_TWO = {
    "grid_size": [8, 5],
    "agent_start_pos": [1, 1],
    "agent_start_room": None,
    "room_grid_shape": None,
    "room_bounds": [1, 1, 6, 3],
    "goals": [],
    "doors": [[3, 2, "red", False, False], [6, 2, "blue", False, False]],
    "keys": [],
    "balls": [],
    "boxes": [],
    "target_pos": [3, 2],
}
CTX_LOCKED_FIRST = {**CTX_TWO, "doors": [[3, 2, "red", False, True], [6, 2, "blue", False, False]]}
CTX_OPEN_AT_START = {**CTX_TWO, "doors": [[3, 2, "red", True, False], [6, 2, "blue", False, False]]}

# episode: (context, length, t_pick, t_unlocked, t_drop, door)
EPISODES = [
    (CTX_KEY, 10, 3, 5, 7, (5, 3)),  # pick, open, drop
    (CTX_KEY, 6, 2, None, 4, (5, 3)),  # key dropped before any door opened
    (CTX_TWO, 8, None, 4, None, (6, 2)),  # the second door (row-major) opened first
    (CTX_LOCKED_FIRST, 5, None, 2, None, (6, 2)),  # a locked door remains after the opening
    (CTX_LOCKED_FIRST, 4, None, 4, None, (6, 2)),  # opened by the last action
    (CTX_OPEN_AT_START, 4, None, None, None, None),  # a door already open at the start
]


def position(episode: int, t: int) -> tuple[int, int]:
    return 1 + t % 3, 1 + episode % 3


def our_tables() -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Steps and episodes as evaluation builds them (derive_step_columns), for EPISODES."""
    rng = np.random.default_rng(0)
    recorded: dict[str, list] = {
        k: [] for k in ("episode", "t", "env_slot", "x", "y", "direction", "carrying")
    }
    for e, (_, length, t_pick, _, t_drop, _) in enumerate(EPISODES):
        for t in range(length):
            x, y = position(e, t)
            carrying = t_pick is not None and t >= t_pick and (t_drop is None or t < t_drop)
            for k, v in zip(recorded, (e, t, e % 2, x, y, t % 4, int(carrying))):
                recorded[k].append(v)
    cols = {k: np.asarray(v) for k, v in recorded.items()}
    n = len(cols["t"])
    logits = rng.normal(size=(n, 7)).astype(np.float32)
    cols["action"] = logits.argmax(1)
    cols["dist_to_key"] = np.zeros(n)  # ours: to the key's current cell (not what its files hold)
    cols["dist_to_target"] = np.zeros(n)
    for a in range(7):
        cols[f"logit_{a}"] = logits[:, a]
    for k, sizes in enumerate(SIZES):
        w = rng.dirichlet(np.ones(len(sizes)), size=n).astype(np.float32)
        for j in range(len(sizes)):
            cols[weight_column(k, j)] = w[:, j]
    episodes = pd.DataFrame(
        {
            "episode": range(len(EPISODES)),
            "seed": range(len(EPISODES)),
            "success": [True] * len(EPISODES),
            "length": [ep[1] for ep in EPISODES],
            "t_unlocked": pd.array([ep[3] for ep in EPISODES], dtype="Int64"),
            "t_pick": pd.array([ep[2] for ep in EPISODES], dtype="Int64"),
            "t_drop": pd.array([ep[4] for ep in EPISODES], dtype="Int64"),
            "door_x": pd.array([ep[5][0] if ep[5] else None for ep in EPISODES], dtype="Int64"),
            "door_y": pd.array([ep[5][1] if ep[5] else None for ep in EPISODES], dtype="Int64"),
            "env_context": [json.dumps(ep[0]) for ep in EPISODES],
        }
    )
    config = {"task_id": TASK, "trial": 0, "expert_hidden_sizes": SIZES, "lpc_exponent": 2.0}
    return derive_step_columns(cols, episodes, config), episodes, config


def our_meta(config: dict) -> dict:
    metrics = {"success_rate": 1.0, "path_ratio": math.nan, "mean_lpc": 12.5, "bot_plan_failures": 0}
    metrics |= {"evaluated_at": "2026-01-01T00:00:00+00:00", "success_ci_low": 0.5}
    return {
        "checkpoint_path": f"checkpoints/{TASK}/trial_0/checkpoint_5.pt",
        "num_episodes": 6,
        "config": config,
        "metrics": metrics,
    }


@pytest.fixture
def exported(tmp_path):
    steps, episodes, config = our_tables()
    path = tmp_path / JSON_FILE
    write_legacy_json(path, steps, episodes, our_meta(config))
    return steps, episodes, path


def _no_nan(token: str):
    raise AssertionError(f"{token} in the JSON (its readers expect null)")


# ----------------------------------------------------------------------------- our export, v3


def test_export_names_and_order(exported):
    _, _, path = exported
    text = path.read_text()
    doc = json.loads(text, parse_constant=_no_nan)
    assert list(doc) == list(LEGACY_TOP_KEYS) == [
        "checkpoint_path", "num_episodes", "evaluated_at", "expert_hidden_sizes", "metrics", "episodes", "routing_data",
    ]  # fmt: skip
    assert text.index('"metrics"') < min(2000, text.index('"episodes"'))  # its backfill regexes 2 KB
    assert doc["metrics"] == {
        "success_rate": 1.0,
        "path_ratio": None,
        "mean_lpc": 12.5,
        "bot_plan_failures": 0,
    }
    assert doc["expert_hidden_sizes"] == SIZES and doc["num_episodes"] == 6
    assert doc["evaluated_at"] == "2026-01-01T00:00:00+00:00"
    for record in doc["routing_data"]:
        assert list(record) == list(LEGACY_RECORD_KEYS)
    assert list(LEGACY_RECORD_KEYS) == [
        "episode", "position", "layer_routing", "lpc", "carrying", "door_unlocked", "action_logits", "action",
        "entropy", "t_step", "t_unlocked", "t_pick", "t_drop", "dist_to_door", "dist_to_key", "dist_to_target",
    ]  # fmt: skip
    r = doc["routing_data"][0]
    assert list(r["layer_routing"]) == ["layer_0", "layer_1"] and len(r["layer_routing"]["layer_0"]) == 3
    assert len(r["action_logits"]) == 7 and isinstance(r["action"], int) and r["position"] == [1, 1]
    assert list(doc["episodes"][0])[:6] == [
        "grid_size", "agent_start_pos", "agent_start_room", "room_grid_shape", "target_pos", "room_bounds",
    ]  # fmt: skip
    # agent_start_room / room_grid_shape exist only for RoomGrid levels in its files (absent, not null)
    assert "agent_start_room" not in doc["episodes"][2] and "room_grid_shape" not in doc["episodes"][2]
    assert len(doc["episodes"]) == len(EPISODES)  # one entry per episode (it deduplicated layouts)


def test_export_semantics(exported):
    steps, _, path = exported
    doc = json.loads(path.read_text())
    records: dict[tuple[int, int], dict] = {(r["episode"], r["t_step"]): r for r in doc["routing_data"]}
    assert len(records) == len(steps) == len(doc["routing_data"])

    def rec(e: int, t: int) -> dict:
        return records[(e, t)]

    def dist(e: int, t: int, cell) -> float:
        x, y = position(e, t)
        return math.hypot(x - cell[0], y - cell[1])

    # timestamps as at recording time: null before the event, the event's step from then on
    assert [rec(0, t)["t_pick"] for t in range(10)] == [None] * 3 + [3] * 7
    assert [rec(0, t)["t_unlocked"] for t in range(10)] == [None] * 5 + [5] * 5
    assert [rec(0, t)["t_drop"] for t in range(10)] == [None] * 7 + [7] * 3
    # its t_drop needs an open door: a drop before any opening is not its t_drop
    assert [rec(1, t)["t_drop"] for t in range(6)] == [None] * 6
    # its door_unlocked: the first door (row-major) not locked
    assert [rec(0, t)["door_unlocked"] for t in range(10)] == [0] * 5 + [1] * 5
    assert {rec(2, t)["door_unlocked"] for t in range(8)} == {1}  # unlocked doors
    assert {rec(3, t)["door_unlocked"] for t in range(5)} == {0}  # still locked (another door opened)
    # distances: key and target at their start cells (even while the key is carried), one door whatever its state
    for t in range(10):
        assert rec(0, t)["dist_to_key"] == pytest.approx(dist(0, t, (3, 1)))
        assert rec(0, t)["dist_to_target"] == pytest.approx(dist(0, t, (8, 2)))
        assert rec(0, t)["dist_to_door"] == pytest.approx(dist(0, t, (5, 3)))
    assert rec(2, 0)["dist_to_key"] is None
    # several doors: backfilled with the door opened first, then the first door still locked, else null
    assert [rec(2, t)["dist_to_door"] for t in range(4, 8)] == [None] * 4
    assert [rec(2, t)["dist_to_door"] for t in range(4)] == pytest.approx(
        [dist(2, t, (6, 2)) for t in range(4)]
    )
    assert [rec(3, t)["dist_to_door"] for t in range(5)] == pytest.approx(
        [dist(3, t, (6, 2)) for t in range(2)] + [dist(3, t, (3, 2)) for t in range(2, 5)]
    )
    assert [rec(4, t)["dist_to_door"] for t in range(4)] == [None] * 4  # opening on the last action
    # a door open at the start: its t_unlocked is 1 and that door is "the door opened first"
    assert [rec(5, t)["t_unlocked"] for t in range(4)] == [None, 1, 1, 1]
    assert (
        rec(5, 0)["dist_to_door"] == pytest.approx(dist(5, 0, (3, 2))) and rec(5, 1)["dist_to_door"] is None
    )
    # entropy in nats from the logits, with its +1e-9; the action taken (greedy: the argmax)
    r = rec(0, 4)
    p = np.exp(r["action_logits"]) / np.exp(r["action_logits"]).sum()
    assert r["entropy"] == pytest.approx(-(p * np.log(p + 1e-9)).sum(), rel=1e-6)
    assert r["action"] == int(np.argmax(r["action_logits"]))
    row = steps[(steps["episode"] == 0) & (steps["t"] == 4)].iloc[0]
    assert r["lpc"] == pytest.approx(row["lpc"]) and r["layer_routing"]["layer_1"] == pytest.approx(
        [row["layer_1_expert_0"], row["layer_1_expert_1"]]
    )


def their_reader(doc: dict) -> list[dict]:
    """Its build_routing_data_tuples and key_phase grouping (§6.1, §6.3), re-implemented from the
    description: .get() with None defaults, env_context from episodes[episode] (or embedded)."""
    out = []
    for r in doc["routing_data"]:
        ctx = doc["episodes"][r["episode"]] if "episode" in r else r.get("env_context", {})
        logits = np.asarray(r["action_logits"]) if r.get("action_logits") is not None else None
        action = r.get("action", int(np.argmax(logits)) if logits is not None else None)
        t, t_pick, t_unl, t_drop = (r.get(k) for k in ("t_step", "t_pick", "t_unlocked", "t_drop"))
        if t_pick is None or t < t_pick:
            key_phase = 0
        elif t_unl is None or t < t_unl:
            key_phase = 1
        elif t_drop is None or t < t_drop:
            key_phase = 2
        else:
            key_phase = 3
        unlock_phase = 0 if t_unl is None or t < t_unl else 1
        weights = {k: np.asarray(v) for k, v in r["layer_routing"].items()}
        out.append(
            {"position": tuple(r["position"]), "weights": weights, "context": ctx, "action": action,
             "entropy": r.get("entropy", 0), "key_phase": key_phase, "unlock_phase": unlock_phase,
             "carrying": r.get("carrying", 0), "dist_to_door": r.get("dist_to_door")}
        )  # fmt: skip
    return out


def test_its_reader_accepts_our_export(exported):
    steps, episodes, path = exported
    doc = json.loads(path.read_text())
    tuples = their_reader(doc)
    assert len(tuples) == len(steps)
    ours = steps.reset_index(drop=True)
    key = sm.phase_of_steps(ours, episodes, "key_phase")
    for i, t in enumerate(tuples):
        row = ours.iloc[i]
        assert t["position"] == (row["x"], row["y"]) and t["action"] == row["action"]
        assert t["context"]["grid_size"] == json.loads(episodes["env_context"][row["episode"]])["grid_size"]
        assert t["weights"]["layer_0"].sum() == pytest.approx(1.0, abs=1e-5)
        if row["episode"] in (0, 2, 3):  # where its phase rules and ours coincide
            assert sm.PHASES["key_phase"][t["key_phase"]] == key[i]
            assert t["unlock_phase"] == row["door_unlocked"]


# ----------------------------------------------------------------------------- reading


def test_round_trip_our_export(exported):
    steps, episodes, path = exported
    data = load_cache(path.parent)  # a folder holding only routing_data.json
    back = data.steps
    assert data.meta["legacy_format"] == "v3" and data.meta["num_envs"] == 1
    assert data.expert_sizes == SIZES and data.meta["expert_hidden_sizes_source"] == "file"
    assert list(back["episode"]) == list(steps["episode"]) and list(back["t"]) == list(steps["t"])
    for c in ("x", "y", "action", "carrying"):
        assert back[c].tolist() == steps[c].tolist(), c
    weights_and_logits = [c for c in steps.columns if c.startswith(("layer_", "logit_"))]
    assert set(weights_and_logits) <= set(back.columns)
    np.testing.assert_array_equal(back[weights_and_logits].to_numpy(), steps[weights_and_logits].to_numpy())
    np.testing.assert_allclose(back["lpc"], steps["lpc"], rtol=1e-6)
    np.testing.assert_allclose(back["entropy"], steps["entropy"], atol=1e-6)
    pd.testing.assert_series_equal(back["t_pick"], steps["t_pick"])
    same = steps["episode"] != 5  # its t_unlocked counts a door open at the start (documented)
    pd.testing.assert_series_equal(back["t_unlocked"][same], steps["t_unlocked"][same])
    assert (back["door_unlocked"][same] == steps["door_unlocked"][same]).all()
    # the phases every analysis groups by are the same, where its rules and ours coincide
    for grouping in ("by_key_phase", "by_door_unlocked_phase", "by_carrying_phase"):
        mine, _ = ra.group_labels(steps, episodes, grouping)
        theirs, _ = ra.group_labels(back, data.episodes, grouping)
        kept = same & (steps["episode"] != 1)  # episode 1 dropped the key before any door opened
        assert (mine[kept] == theirs[kept]).all(), grouping
    mine, _ = ra.group_labels(steps, episodes, "by_key_phase")
    theirs, _ = ra.group_labels(back, data.episodes, "by_key_phase")
    ep1 = steps["episode"] == 1
    assert list(mine[ep1]) != list(theirs[ep1]) and "after drop" not in set(theirs[ep1])
    assert list(data.episodes["length"]) == [ep[1] for ep in EPISODES]
    assert [json.loads(c)["doors"] for c in data.episodes["env_context"]] == [
        ep[0]["doors"] for ep in EPISODES
    ]


def step_major(episodes_per_env: list[list[tuple[int, int]]]) -> list[tuple[int, int, int]]:
    """(env, layout, t_step) in its record order: all envs at step k, then step k+1."""
    streams = [
        [(env, layout, t) for layout, length in eps for t in range(length)]
        for env, eps in enumerate(episodes_per_env)
    ]
    steps = min(len(s) for s in streams)  # its loop stops for all envs at once
    return [streams[env][k] for k in range(steps) for env in range(len(streams))]


def hand_v3(with_phases: bool = True) -> dict:
    """A v3 file as its batch_eval wrote it: 2 envs, env 0 runs layout 0 (3 steps) then layout 1,
    env 1 runs layout 1 (the same layout, so the same `episode` index), timestamps null until set."""
    rng = np.random.default_rng(1)
    contexts = [CTX_KEY, {**CTX_KEY, "agent_start_pos": [3, 3]}]
    order = step_major([[(0, 3), (1, 2)], [(1, 5)]])
    records = []
    for i, (env, layout, t) in enumerate(order):
        logits = rng.normal(size=7)
        record = {
            "episode": layout,
            "position": [1 + t, 1 + env],
            "layer_routing": {"layer_0": list(rng.dirichlet([1, 1, 1]))},
            "lpc": 0.0,
            "carrying": int(env == 1 and t >= 3),
            "door_unlocked": 0,
            "action_logits": list(logits),
        }
        record["lpc"] = float(np.dot(record["layer_routing"]["layer_0"], [32**2, 64**2, 128**2]))
        if with_phases:
            p = np.exp(logits) / np.exp(logits).sum()
            record |= {
                "action": int(np.argmax(logits)),
                "entropy": float(-(p * np.log(p + 1e-9)).sum()),
                "t_step": t,
                "t_unlocked": None,
                "t_pick": 3 if env == 1 and t >= 3 else None,
                "t_drop": None,
                "dist_to_door": math.hypot(1 + t - 5, 1 + env - 3),
                "dist_to_key": None if i == 0 else math.hypot(1 + t - 3, 1 + env - 1),
                "dist_to_target": None,
            }
        records.append(record)
    return {
        "checkpoint_path": f"/checkpoints/{TASK}/trial_20/seed_3/checkpoint_250.pt",
        "num_episodes": 2,
        "evaluated_at": "2026-03-20T10:00:00",
        "expert_hidden_sizes": [32, 64, 128],  # a flat list: one layer, as its default config
        "metrics": {"success_rate": 0.5, "path_ratio": 1.4, "mean_lpc": 5000.0, "bot_plan_failures": 0},
        "episodes": contexts,
        "routing_data": records,
    }


def test_read_its_v3_with_null_timestamps(tmp_path):
    doc = hand_v3()
    (tmp_path / JSON_FILE).write_text(json.dumps(doc))
    data = read_legacy_json(tmp_path / JSON_FILE)
    s = data.steps
    assert data.meta["legacy_format"] == "v3" and data.meta["num_envs"] == 2
    # episodes rebuilt from the record order: env r % 2, a new episode at each t_step 0
    assert list(s["env_slot"]) == [0, 1] * 5
    assert list(s["episode"]) == [0, 1, 0, 1, 0, 1, 2, 1, 2, 1]
    assert list(s["t"]) == [0, 0, 1, 1, 2, 2, 0, 3, 1, 4]
    assert list(data.episodes["layout"]) == [0, 1, 1] and list(data.episodes["length"]) == [3, 5, 2]
    assert data.episodes["success"].isna().all() and data.episodes["seed"].isna().all()
    assert json.loads(data.episodes["env_context"][1])["agent_start_pos"] == [3, 3]
    # null timestamps/distances -> NaN; set ones kept as they were recorded
    assert s["t_unlocked"].isna().all() and (s["door_unlocked"] == 0).all()
    assert s["t_pick"].tolist()[7] == 3 and s["t_pick"].isna().sum() == 8
    assert math.isnan(s["dist_to_key"][0]) and s["dist_to_target"].isna().all()
    assert s["dist_to_door"][0] == pytest.approx(math.hypot(1 - 5, 1 - 3))
    r = doc["routing_data"][4]
    assert s["action"][4] == r["action"] and s["entropy"][4] == r["entropy"]
    assert [s[f"logit_{a}"][4] for a in range(7)] == r["action_logits"]
    assert [s[f"layer_0_expert_{j}"][4] for j in range(3)] == r["layer_routing"]["layer_0"]
    assert data.expert_sizes == [[32, 64, 128]]
    assert data.meta["metrics"]["success_rate"] == 0.5 and data.meta["checkpoint_path"].startswith(
        "/checkpoints"
    )
    # key phases from its timestamps: env 1 picked the key up at step 3
    phase = sm.phase_of_steps(s, data.episodes, "key_phase")
    assert list(phase[s["episode"] == 1]) == ["pre_key"] * 3 + ["post_key_pre_unlock"] * 2


def test_read_its_early_v3_v2_v1(tmp_path):
    # early v3: logits but no action/entropy/t_step: action = argmax, episodes = layout index
    doc = hand_v3(with_phases=False)
    del doc["evaluated_at"], doc["expert_hidden_sizes"]
    (tmp_path / "v3").mkdir()
    (tmp_path / "v3" / JSON_FILE).write_text(json.dumps(doc))
    data = load_cache(tmp_path / "v3")
    assert data.meta["legacy_format"] == "v3" and data.meta["num_envs"] is None
    assert list(data.steps["episode"]) == [r["episode"] for r in doc["routing_data"]]
    assert data.steps["t"].isna().all() and data.steps["env_slot"].isna().all()
    logits = np.array([r["action_logits"] for r in doc["routing_data"]])
    assert list(data.steps["action"]) == list(logits.argmax(1))
    assert data.steps["t_pick"].isna().all() and data.steps["door_unlocked"].isna().all()
    # no expert_hidden_sizes in the file: the layout its runs used that reproduces every lpc
    assert data.expert_sizes == [[32, 64, 128]] and "lpc" in data.meta["expert_hidden_sizes_source"]

    # v2: episodes list + episode index, no logits; sizes not a known layout: solved from the LPC
    v2 = {k: doc[k] for k in ("checkpoint_path", "num_episodes", "metrics", "episodes")}
    rng = np.random.default_rng(2)
    v2["routing_data"] = []
    for r in doc["routing_data"]:
        w = list(rng.dirichlet([1, 1, 1]))
        v2["routing_data"].append(
            {"episode": r["episode"], "position": r["position"], "layer_routing": {"layer_0": w},
             "lpc": float(np.dot(w, [0, 10**2, 20**2]))}
        )  # fmt: skip
    (tmp_path / "v2").mkdir()
    (tmp_path / "v2" / JSON_FILE).write_text(json.dumps(v2))
    data = load_cache(tmp_path / "v2")
    assert data.meta["legacy_format"] == "v2" and data.expert_sizes == [[0, 10, 20]]
    assert data.steps["action"].isna().all() and not any(c.startswith("logit_") for c in data.steps)
    assert len(data.episodes) == 2 and data.episodes["episode"].tolist() == [0, 1]

    # v1: env_context in every record; layouts deduplicated by str(context), as its v2 writer did
    v1 = {k: v2[k] for k in ("checkpoint_path", "num_episodes", "metrics")}
    v1["routing_data"] = [
        {k: r[k] for k in ("position", "layer_routing", "lpc")}
        | {"env_context": doc["episodes"][r["episode"]]}
        for r in v2["routing_data"]
    ]
    (tmp_path / "v1").mkdir()
    (tmp_path / "v1" / JSON_FILE).write_text(json.dumps(v1))
    data = load_cache(tmp_path / "v1")
    assert data.meta["legacy_format"] == "v1"
    assert list(data.steps["episode"]) == [r["episode"] for r in v2["routing_data"]]
    assert [json.loads(c) for c in data.episodes["env_context"]] == doc["episodes"]
    np.testing.assert_allclose(data.steps["lpc"], [r["lpc"] for r in v2["routing_data"]])


def test_its_folder_layouts_are_found_and_named(tmp_path):
    root = tmp_path / "evaluation_cache"
    seeded = root / TASK / "trial_20" / "seed_3" / "update_250"
    double = root / TASK / TASK / "trial_2"  # its double-task-id layout
    for folder in (seeded, double):
        folder.mkdir(parents=True)
        (folder / JSON_FILE).write_text(json.dumps(hand_v3()))
    steps, episodes, config = our_tables()
    ours = write_cache(
        root / TASK / "trial_0", steps, episodes, our_meta(config), formats=("parquet", "json")
    )
    assert find_caches(root) == sorted([seeded, double, ours])
    run = load_cache(seeded).meta["config"]
    assert (run["task_id"], run["trial"], run["seed"], run["update"]) == (TASK, 20, 3, 250)
    run = load_cache(double / JSON_FILE).meta["config"]  # the file itself works too
    assert (run["task_id"], run["trial"], run["seed"], run["update"]) == (TASK, 2, None, None)
    assert "legacy_format" not in load_cache(ours).meta  # ours with a JSON beside it: the Parquet tables
    again = load_cache(ours / JSON_FILE)
    assert list(again.steps["t"]) == list(steps["t"])


def test_eval_mop_json_without_cache_dir_refuses(capsys):
    import eval_mop

    with pytest.raises(SystemExit) as stop:
        eval_mop.main(["--checkpoint", "no/such/checkpoint.pt", "--cache_format", "json"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--cache_dir" in err


# ----------------------------------------------------------------------------- seed metrics


def test_seed_metrics_columns():
    assert (
        sm.phase_system(TASK) == "key_phase" and sm.phase_system("BabyAI-OpenTwoDoors-v0") == "unlock_phase"
    )
    assert sm.phase_system("BabyAI-GoToLocal-v0") == "none"
    cols = sm.columns_for("key_phase")
    base = [
        "task_id",
        "trial",
        "seed",
        "update",
        "lpc_alpha",
        "success_rate",
        "path_ratio",
        "mean_lpc",
        "policy_complexity",
    ]
    phases = ["pre_key", "post_key_pre_unlock", "with_key_post_unlock", "post_unlock_post_key"]
    corr = [
        f"{w}_{p}_{c}" for p in phases for c in ("lpc_entropy", "lpc_kl_local", "lpc_kl_global") for w in "rp"
    ]
    tail = [f"{m}_{p}" for p in phases for m in ("policy_complexity", "mean_entropy", "mean_lpc")]
    assert cols == base + corr + tail and len(cols) == 9 + 24 + 12
    assert cols[9:13] == [
        "r_pre_key_lpc_entropy",
        "p_pre_key_lpc_entropy",
        "r_pre_key_lpc_kl_local",
        "p_pre_key_lpc_kl_local",
    ]
    assert sm.columns_for("unlock_phase")[-3:] == [
        "policy_complexity_post_unlock",
        "mean_entropy_post_unlock",
        "mean_lpc_post_unlock",
    ]
    assert sm.columns_for("none")[9:] == [
        "r_all_lpc_entropy", "p_all_lpc_entropy", "r_all_lpc_kl_local", "p_all_lpc_kl_local",
        "r_all_lpc_kl_global", "p_all_lpc_kl_global", "policy_complexity_all", "mean_entropy_all", "mean_lpc_all",
    ]  # fmt: skip


def smoothed_bits(counts: list[int]) -> np.ndarray:
    n = np.asarray(counts + [0] * (7 - len(counts)), dtype=float)
    return (n + 0.5) / (n.sum() + 3.5)


def known_answer_tables() -> tuple[pd.DataFrame, pd.DataFrame, list[float], list[list[int]]]:
    """Six cells of 10 visits with more and more spread actions, one cell of 2 visits; the LPC of a
    cell is 10 + 5 * its smoothed action entropy in bits, so r(LPC, H) = 1."""
    cell_counts = [[10], [9, 1], [8, 2], [6, 2, 2], [4, 3, 3], [2, 2, 2, 2, 2], [1, 1]]
    xs, actions, lpcs, entropies = [], [], [], []
    for x, counts in enumerate(cell_counts, start=1):
        p = smoothed_bits(counts)
        h = float(-(p * np.log2(p)).sum())
        entropies.append(h)
        for a, c in enumerate(counts):
            xs += [x] * c
            actions += [a] * c
            lpcs += [10 + 5 * h] * c
    n = len(xs)
    steps = pd.DataFrame(
        {"episode": 0, "t": range(n), "x": xs, "y": 1, "action": actions, "lpc": lpcs}
        | {c: np.nan for c in ("t_pick", "t_unlocked", "t_drop")}
        | {"door_unlocked": 0, "carrying": 0}
    )
    episodes = pd.DataFrame({"episode": [0], "length": [n], "env_context": [json.dumps(CTX_TWO)]})
    return steps, episodes, entropies, cell_counts


def test_seed_metrics_known_answer():
    steps, episodes, entropies, counts = known_answer_tables()
    meta = {
        "config": {"lpc_alpha": 1e-4},
        "metrics": {"success_rate": 0.75, "path_ratio": 1.2, "mean_lpc": 20.0},
    }
    row = sm.cache_metrics(CacheData(steps, episodes, meta, None), "none")
    assert row["r_all_lpc_entropy"] == pytest.approx(1.0, abs=1e-12) and row["p_all_lpc_entropy"] < 1e-6
    assert row["r_all_lpc_kl_local"] == row["r_all_lpc_kl_global"]  # one phase: the same P_a
    # I(S;A) by hand: P(s) = n_s / all 62 records, the 2-visit cell left out and NOT renormalised
    total = sum(sum(c) for c in counts)
    pooled = np.bincount(steps["action"], minlength=7).astype(float)
    p_a = (pooled + 0.5) / (pooled.sum() + 3.5)
    kl = [float((smoothed_bits(c) * np.log2(smoothed_bits(c) / p_a)).sum()) for c in counts]
    expected = sum(sum(c) / total * k for c, k in zip(counts[:-1], kl[:-1]))
    assert row["policy_complexity"] == pytest.approx(expected, rel=1e-12)
    assert row["policy_complexity_all"] == pytest.approx(expected, rel=1e-12)
    h_mean = sum(sum(c) / total * h for c, h in zip(counts[:-1], entropies[:-1]))
    assert row["mean_entropy_all"] == pytest.approx(h_mean, rel=1e-12)
    assert row["mean_lpc_all"] == pytest.approx(steps["lpc"].mean())
    assert (row["success_rate"], row["path_ratio"], row["mean_lpc"]) == (0.75, 1.2, 20.0)
    # the per-cell KL to the cells' own marginal is routing_analysis' estimator, in bits not nats
    cells = sm.cell_statistics(steps)
    nats = ra.action_kl_by_cell(steps, "global", min_visits=5)["kl"]
    np.testing.assert_allclose(cells["kl"][cells["included"]], nats.dropna() / math.log(2), rtol=1e-12)


def test_key_phases_follow_its_order():
    steps = pd.DataFrame(
        {
            "t_pick": [np.nan, 2, 2, 2, 2],
            "t_unlocked": [np.nan, np.nan, np.nan, 5, 5],
            "t_drop": [np.nan, np.nan, 3, 3, np.nan],
        }
    )
    # a drop before the door opened stays "with key, pre-unlock" until the door opens (its order of checks)
    assert list(sm.phase_of_steps(steps, None, "key_phase")) == [
        "pre_key", "post_key_pre_unlock", "post_key_pre_unlock", "post_unlock_post_key", "with_key_post_unlock",
    ]  # fmt: skip


def test_seed_metrics_csv_from_caches(tmp_path):
    steps, episodes, _, _ = known_answer_tables()
    n = len(steps)
    recorded = {
        "episode": np.zeros(n, dtype=np.int64),
        "t": np.arange(n),
        "env_slot": np.zeros(n, dtype=np.int64),
        "x": steps["x"].to_numpy(),
        "y": steps["y"].to_numpy(),
        "direction": np.zeros(n, dtype=np.int64),
        "action": steps["action"].to_numpy(),
        "carrying": np.zeros(n, dtype=np.int64),
        "dist_to_key": np.full(n, np.nan),
        "dist_to_target": np.full(n, np.nan),
        # lpc = 64 * w_1 with sizes [0, 8, 16]: w_1 carries the designed LPC
        weight_column(0, 0): 1 - steps["lpc"].to_numpy() / 64,
        weight_column(0, 1): steps["lpc"].to_numpy() / 64,
        weight_column(0, 2): np.zeros(n),
    }
    episodes = episodes.assign(
        **{c: pd.array([None], dtype="Int64") for c in ("t_unlocked", "t_pick", "t_drop", "door_x", "door_y")}
    )
    task = "BabyAI-GoToLocal-v0"
    root = tmp_path / "evaluation_cache"
    for seed, update, final in ((0, 100, False), (1, 100, False), (1, 200, False), (1, 200, True)):
        config = {
            "task_id": task,
            "trial": 4,
            "seed": seed,
            "update": update,
            "lpc_alpha": 1e-5,
            "expert_hidden_sizes": [[0, 8, 16]],
        }
        full = derive_step_columns(recorded, episodes, config)
        folder = root / task / "trial_4" / f"seed_{seed}" / ("" if final else f"update_{update}")
        meta = {
            "checkpoint_path": "x",
            "num_episodes": 1,
            "config": config,
            "metrics": {"success_rate": 1.0, "mean_lpc": 3.0},
        }
        write_cache(folder, full, episodes, meta)
    write_cache(root / task / "trial_4" / "seed_0" / "update_100" / "knockout_largest", full, episodes, meta)
    out = tmp_path / "eval_metrics_gotolocal.csv"
    summary = sm.main(
        ["--cache_dir", str(root), "--task", task, "--out", str(out), "--results", str(tmp_path / "none.csv")]
    )
    assert summary["rows"] == 3  # the final alias of update 200 and the knockout add no rows
    text = out.read_text().splitlines()
    # its phase naming: the none system's one phase is "None" in its files (issue 35)
    assert text[0].split(",") == sm.legacy_columns(sm.columns_for("none"))
    assert "r_None_lpc_entropy" in text[0].split(",") and "r_all_lpc_entropy" not in text[0]
    assert [line.split(",")[1:5] for line in text[1:]] == [
        ["4", "0", "100", "1e-05"],
        ["4", "1", "100", "1e-05"],
        ["4", "1", "200", "1e-05"],
    ]
    table = pd.read_csv(out)
    assert (table["r_None_lpc_entropy"] > 0.999).all()  # router weights are stored as float16


def test_seed_metrics_reads_its_caches_with_alpha_from_the_csv(tmp_path):
    root = tmp_path / "evaluation_cache"
    folder = root / TASK / "trial_20" / "seed_3" / "update_250"
    folder.mkdir(parents=True)
    (folder / JSON_FILE).write_text(json.dumps(hand_v3()))
    results = tmp_path / "evaluation_results.csv"
    pd.DataFrame(
        {"checkpoint_path": ["a", "b"], "task_id": [TASK, TASK], "trial": [20, 20], "seed": [3, 4],
         "update": [250, 250], "lpc_alpha": [1e-4, 1e-3]}
    ).to_csv(results, index=False)  # fmt: skip
    table = sm.seed_metrics(root, TASK, results)
    assert list(table.columns) == sm.columns_for("key_phase") and len(table) == 1
    row = table.iloc[0]
    assert (row["trial"], row["seed"], row["update"], row["lpc_alpha"]) == (20, 3, 250, 1e-4)
    assert row["success_rate"] == 0.5 and row["mean_lpc"] == 5000.0
    assert row["mean_lpc_pre_key"] == pytest.approx(
        np.mean([r["lpc"] for r in hand_v3()["routing_data"] if r["t_pick"] is None])
    )


def test_render_plots_draws_its_v3_cache(tmp_path):
    """Its caches record no layout seed and no outcome: no level picture and no success/failure
    figure, every other standard figure (tests the earlier system's users' files end to end)."""
    import render_plots

    folder = tmp_path / "evaluation_cache" / TASK / "trial_20" / "seed_3" / "update_250"
    folder.mkdir(parents=True)
    (folder / "routing_data.json").write_text(json.dumps(hand_v3()))
    out = render_plots.main(["--cache", str(folder), "--out", str(tmp_path / "plots")])
    names = {Path(p).stem for p in out["paths"]}
    assert "routing_overall" in names or any(n.startswith("routing") for n in names)
    assert "success_vs_failure" not in names and len(names) >= 8
    assert all(Path(p).is_relative_to(tmp_path / "plots") for p in out["paths"])
