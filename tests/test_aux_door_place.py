"""--aux_door_place_weight: a head reads, from the memory after each step, where the nearest locked door
the agent has seen lies (babyai_env.DoorTracker, recorded in bot demos and by live collection) until it
is unlocked; the labels follow the env, the loss trains from a demo store and online, resumes, and a
store made before the labels is refused.

    pytest tests/test_aux_door_place.py
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import tiny_config
from mop.babyai_env import NO_TARGET, DoorTracker, agent_frame, locked_doors, make_env, quiet_reset
from mop.bot_demos import bot_episode
from mop.experiment import ConfigError, read_metrics
from tests.test_aux_key import (
    check_place_tracker,
    check_store_round_trips_labels,
    check_store_without_labels_is_refused,
)
from tests.test_aux_target import check_head_trains_from_demos_and_resumes


def test_the_label_is_the_seen_locked_door_in_the_agents_frame_until_it_is_unlocked():
    def unlock(env, door):  # unlocked: nothing left to find
        env.grid.get(*door).is_locked = False

    check_place_tracker(DoorTracker(), locked_doors, unlock)  # test_aux_key's, for this tracker


def test_bot_demos_record_the_door_place_labels_the_env_gives():
    """Replaying the bot's actions: a step is labelled exactly when a locked door has been in view
    at or before it and is still locked as the step begins (the unlocking toggle is the last one),
    and the label is that door's place in the agent's frame. The layout is one where the bot
    unlocks the door, so the labels must stop: dropping the locked condition fails this test."""
    env = make_env("BabyAI-GoToImpUnlock-v0")
    for seed in range(60):
        episode, _ = bot_episode(env, seed)
        if episode is None:
            continue
        quiet_reset(env, seed)
        doors = locked_doors(env)
        if len(doors) == 1 and episode.door_place is not None:
            labelled = np.nonzero(episode.door_place[:, 0] != NO_TARGET)[0]
            if labelled[-1] < len(episode) - 1:  # unlocked before the episode's end
                break
    assert episode.door_place.shape == (len(episode), 2)
    (door,) = doors
    seen, unlocked_at = False, None
    for t, action in enumerate(episode.label.tolist()):
        seen = seen or env.agent_sees(*door)
        locked = env.grid.get(*door).is_locked
        want = agent_frame(env, door) if seen and locked else (NO_TARGET, NO_TARGET)
        assert tuple(episode.door_place[t]) == want, t
        env.step(action)
        if locked and not env.grid.get(*door).is_locked:
            unlocked_at = t
    assert unlocked_at is not None and episode.door_place[unlocked_at, 0] != NO_TARGET
    assert (episode.door_place[unlocked_at + 1 :] == NO_TARGET).all()


def test_the_door_place_head_trains_from_demos_and_resumes(tmp_path):
    check_head_trains_from_demos_and_resumes(tmp_path, "door_place")  # test_aux_target's, for this head


def test_a_store_without_door_places_is_refused_before_anything_is_written(tmp_path):
    check_store_without_labels_is_refused(tmp_path, "door_place")  # test_aux_key's, for this label


def test_demos_store_their_door_place_labels_and_read_them_back(tmp_path):
    check_store_round_trips_labels(tmp_path, "door_place")


@pytest.mark.parametrize("buffer", [0, 6])  # live chunks only, and a replay buffer of them
def test_online_dagger_trains_the_door_place_head(tmp_path, buffer):
    import train_mop

    cfg = tiny_config(  # one room: its locked door comes into view within a few steps
        tmp_path,
        task_id="BabyAI-UnlockLocal-v0",
        buffer_episodes=buffer,
        max_steps=30,
        num_updates=3,
        aux_door_place_weight=1.0,
    )
    train_mop.main(cfg, progress=False)
    rows = read_metrics(tmp_path / "BabyAI-UnlockLocal-v0" / "trial_0" / "metrics.jsonl")
    assert [r for r in rows if 0.0 < r.get("train/aux_door_place", 0.0)]


@pytest.mark.parametrize(
    "value, match",
    [
        (-1.0, "aux_door_place_weight must be >= 0"),
        (float("nan"), "'aux_door_place_weight' must be a finite"),
    ],
)
def test_a_bad_door_place_weight_is_refused(tmp_path, value, match):
    with pytest.raises(ConfigError, match=match):
        tiny_config(tmp_path, aux_door_place_weight=value)
