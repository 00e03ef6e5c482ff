"""routing_analysis: the numbers behind the figures, on hand-made tables (tier 1).

Every expected value is worked out by hand from the table in the test. The same functions on real
caches (a tiny trained MoP on BabyAI-UnlockPickup-v0, a GRU baseline) are checked in
test_plotting.py, beside the figures drawn from them, so that those caches are built once.
"""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mop import routing_analysis as ra


def hand_steps() -> pd.DataFrame:
    """Two cells of one row; layer 0 has 3 experts, layer 1 has 2."""
    return pd.DataFrame(
        {
            "episode": [0, 0, 0, 1, 1, 1],
            "t": [0, 1, 2, 0, 1, 2],
            "x": [1, 1, 2, 1, 2, 2],
            "y": [1, 1, 1, 1, 1, 1],
            "action": [2, 2, 0, 2, 1, 1],
            "lpc": [0.0, 100.0, 50.0, 10.0, 20.0, 30.0],
            "entropy": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
            "layer_0_expert_0": [1.0, 0.5, 1 / 3, 0.0, 0.2, 0.2],
            "layer_0_expert_1": [0.0, 0.5, 1 / 3, 0.0, 0.3, 0.3],
            "layer_0_expert_2": [0.0, 0.0, 1 / 3, 1.0, 0.5, 0.5],
            "layer_1_expert_0": [0.5, 0.5, 0.9, 0.1, 0.0, 1.0],
            "layer_1_expert_1": [0.5, 0.5, 0.1, 0.9, 1.0, 0.0],
        }
    )


def test_imports_no_matplotlib():
    # Stats scripts and notebooks compute with this module alone: no plotting backend comes with it.
    code = "import mop.routing_analysis, sys; assert 'matplotlib' not in sys.modules, 'matplotlib imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


def test_action_names():
    assert ra.ACTION_NAMES[3] == "pickup" and len(ra.ACTION_NAMES) == 7


def test_grid_bounds():
    assert ra.compute_grid_bounds([(2, 3), (5, 1)]) == {
        "x_min": 2, "x_max": 5, "y_min": 1, "y_max": 3, "grid_width": 4, "grid_height": 3
    }  # fmt: skip
    full = ra.compute_grid_bounds(None, (11, 6))
    assert (full["x_min"], full["x_max"], full["grid_width"], full["grid_height"]) == (0, 10, 11, 6)
    with pytest.raises(ValueError):
        ra.compute_grid_bounds([])


def test_aggregate_routing_by_position_means_and_visits():
    agg = ra.aggregate_routing_by_position(hand_steps())
    assert agg.loc[(1, 1), "visits"] == 3 and agg.loc[(2, 1), "visits"] == 3
    assert agg.loc[(1, 1), "lpc"] == pytest.approx((0 + 100 + 10) / 3)
    assert agg.loc[(1, 1), "layer_0_expert_2"] == pytest.approx(1 / 3)
    only = ra.aggregate_routing_by_position(hand_steps(), lambda s: s.episode == 0)
    assert only.loc[(1, 1), "visits"] == 2 and only.loc[(2, 1), "lpc"] == 50.0


def test_routing_entropy_and_usage_by_hand():
    steps = hand_steps()
    h = ra.routing_entropy(steps, 0)
    expected = [0.0, math.log(2), math.log(3), 0.0]
    assert h[:4] == pytest.approx(expected)
    assert h[4] == pytest.approx(-(0.2 * math.log(0.2) + 0.3 * math.log(0.3) + 0.5 * math.log(0.5)))
    usage = ra.expert_usage(steps)
    assert usage[0] == pytest.approx(
        [(1 + 0.5 + 1 / 3 + 0 + 0.2 + 0.2) / 6, (0.5 + 1 / 3 + 0.6) / 6, (1 / 3 + 2) / 6]
    )
    assert usage[1].sum() == pytest.approx(1.0)
    assert ra.expert_usage(
        {"usage_layer_0_expert_1": 0.25, "usage_layer_0_expert_0": 0.75, "success_rate": 1}
    )[0] == pytest.approx([0.75, 0.25])
    rows = [{"update": 1, "routing/layer_0/expert_0": 0.1, "routing/layer_0/expert_1": 0.9}, {"update": 2}]
    assert ra.expert_usage(rows)[0] == pytest.approx([0.1, 0.9])
    with pytest.raises(ValueError):
        ra.expert_usage([{"update": 1, "train/loss": 1.0}])


def _kl(p_counts, q_counts, num_actions=7):
    p = [(c + 0.5) / (sum(p_counts) + 0.5 * num_actions) for c in p_counts]
    q = [(c + 0.5) / (sum(q_counts) + 0.5 * num_actions) for c in q_counts]
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


def test_action_kl_against_hand_values():
    steps = hand_steps()  # cell (1,1): actions 2,2,2; cell (2,1): 0,1,1
    kl = ra.action_kl_by_cell(steps, "global", min_visits=1)
    cell_11 = [0, 0, 3, 0, 0, 0, 0]
    cell_21 = [1, 2, 0, 0, 0, 0, 0]
    total = [1, 2, 3, 0, 0, 0, 0]
    # Jeffreys prior by hand: p_a = (n_a + 1/2) / (N + 7/2)
    assert kl.loc[(1, 1), "kl"] == pytest.approx(_kl(cell_11, total))
    assert kl.loc[(2, 1), "kl"] == pytest.approx(_kl(cell_21, total))
    # The number itself: p = (.5, .5, 3.5, .5, .5, .5, .5)/6.5, q = (1.5, 2.5, 3.5, .5, .5, .5, .5)/9.5.
    assert kl.loc[(1, 1), "kl"] == pytest.approx(0.171178, abs=1e-6)
    nb = ra.action_kl_by_cell(steps, "neighbours", min_visits=1)
    assert nb.loc[(1, 1), "kl"] == pytest.approx(_kl(cell_11, cell_21))  # its only neighbour
    assert nb.loc[(2, 1), "kl"] == pytest.approx(_kl(cell_21, cell_11))
    assert ra.action_kl_by_cell(steps, "global", min_visits=4)["kl"].isna().all()
    same = pd.DataFrame({"x": [1] * 4 + [2] * 4, "y": [1] * 8, "action": [2] * 8})
    # Same counts on both sides smooth identically: zero KL from the neighbour.
    assert ra.action_kl_by_cell(same, "neighbours", min_visits=1)["kl"].to_numpy() == pytest.approx(
        [0.0, 0.0]
    )
    with pytest.raises(ValueError, match="reference"):
        ra.action_kl_by_cell(steps, "elsewhere")


def test_room_labels():
    keys = [(0, 0), (7, 0), (0, 7), (7, 7)]
    assert ra.room_labels_for_groups(keys, (2, 2), (15, 15)) == [
        "Top-Left",
        "Top-Right",
        "Bottom-Left",
        "Bottom-Right",
    ]
    assert ra.room_labels_for_groups(keys, (2, 2)) == ["Top-Left", "Top-Right", "Bottom-Left", "Bottom-Right"]
    assert ra.room_labels_for_groups([(0, 0), (12, 0)], (3, 1), (19, 7)) == ["Left", "Right"]
    assert ra.room_labels_for_groups([(6, 6)], (3, 3), (19, 19)) == ["Middle-Center"]
    assert ra.room_labels_for_groups([(0, 0)], (1, 1), (8, 8)) == ["Only room"]
    assert ra.room_labels_for_groups([(18, 0)], (4, 1), (25, 7)) == ["Col 3"]


def test_key_phases_follow_events():
    steps = pd.DataFrame(
        {
            "episode": [0] * 5,
            "x": [1] * 5,
            "y": [1] * 5,
            "carrying": [0, 1, 1, 0, 0],
            "door_unlocked": [0, 0, 1, 1, 1],
            "t_pick": [np.nan, 1, 1, 1, 1],
            "t_drop": [np.nan, np.nan, np.nan, 3, 3],
        }
    )
    ctx = {
        "grid_size": [8, 8],
        "keys": [[2, 2, "red"]],
        "doors": [[4, 4, "red", False, True]],
        "target_pos": None,
    }
    episodes = pd.DataFrame({"episode": [0], "env_context": [json.dumps(ctx)]})
    labels, order = ra.group_labels(steps, episodes, "by_key_phase")
    assert labels.tolist() == ["before pickup", "carrying key", "door open", "after drop", "after drop"]
    assert order == list(ra.KEY_PHASES)
    assert "by_key_phase" in ra.get_available_analyses(steps, episodes)
    unlocked = ctx | {"doors": [[4, 4, "red", False, False]]}  # a distractor key: no key phases
    assert "by_key_phase" not in ra.get_available_analyses(
        steps, episodes.assign(env_context=json.dumps(unlocked))
    )


def test_starting_rooms_and_quadrants_on_hand_episodes():
    def ctx(room, target):
        return json.dumps(
            {"grid_size": [15, 15], "agent_start_room": room, "room_grid_shape": [2, 2], "target_pos": target,
             "room_bounds": [room[0] + 1, room[1] + 1, room[0] + 6, room[1] + 6], "doors": [], "keys": []}
        )  # fmt: skip

    episodes = pd.DataFrame({"episode": [0, 1], "env_context": [ctx([0, 0], [3, 3]), ctx([7, 7], [9, 9])]})
    steps = pd.DataFrame({"episode": [0, 0, 0, 1, 1], "x": [1, 5, 3, 8, 12], "y": [1, 1, 5, 12, 9]})
    assert "by_starting_room" in ra.get_available_analyses(steps, episodes)
    groups = ra.group_routing_data(steps, episodes, "by_starting_room")
    assert {k: len(v) for k, v in groups.items()} == {"Top-Left": 3, "Bottom-Right": 2}
    labels, _ = ra.group_labels(steps, episodes, "by_quadrant")
    assert labels.tolist() == [
        "above-left",
        "above-right",
        "same row or column",
        "below-left",
        "same row or column",
    ]
