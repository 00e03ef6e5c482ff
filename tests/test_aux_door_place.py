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
from mop.bot_demos import bot_episode, generate_demos
from mop.experiment import ConfigError, read_metrics
from tests.test_aux_target import check_head_trains_from_demos_and_resumes

LEVEL = "BabyAI-Unlock-v0"


def test_the_label_is_the_seen_locked_door_in_the_agents_frame_until_it_is_unlocked():
    env = make_env("BabyAI-GoToImpUnlock-v0")
    seen_at_start = unseen_at_start = None
    for seed in range(80):
        obs = quiet_reset(env, seed)
        doors = locked_doors(env)
        visible = [d for d in doors if env.agent_sees(*d)]
        tracker = DoorTracker()
        tracker.reset(env)
        if visible and seen_at_start is None:
            seen_at_start = seed
            (door,) = visible  # GoToImpUnlock: one locked door
            assert tracker.label(env, obs["image"]) == agent_frame(env, door)
            env.step(env.actions.left)  # turned away: still remembered, now in the new frame
            assert tracker.label(env, np.zeros_like(obs["image"])) == agent_frame(env, door)
            env.grid.get(*door).is_locked = False  # unlocked: nothing left to find
            assert tracker.label(env, obs["image"]) is None
        if doors and not visible and unseen_at_start is None:
            unseen_at_start = seed
            assert tracker.label(env, obs["image"]) is None  # nothing seen yet
        if seen_at_start is not None and unseen_at_start is not None:
            break
    assert seen_at_start is not None and unseen_at_start is not None


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
    import train_mop
    from mop import bot_demos

    root = bot_demos.store_path(tmp_path / "demos", LEVEL, 0)
    store = bot_demos.DemoStore.create(root, LEVEL, door_places=False)
    bot_demos.extend_store(store, 3, progress=False)
    assert store.keys and not store.door_places
    cfg = tiny_config(
        tmp_path / "ck", task_id=LEVEL, demos=3, demos_dir=str(tmp_path / "demos"), aux_door_place_weight=1.0
    )
    with pytest.raises(ConfigError, match="holds no seen-door places .*--aux_door_place_weight"):
        train_mop.main(cfg, progress=False)
    assert not list((tmp_path / "ck").rglob("checkpoint_*.pt"))


def test_demos_store_their_door_place_labels_and_read_them_back(tmp_path):
    from mop.bot_demos import load_or_generate_demos

    made, _ = generate_demos(LEVEL, 3, 0, progress=False)  # in RAM, as the store's generator plays them
    stored, meta = load_or_generate_demos(LEVEL, 3, 0, tmp_path, progress=False, need_door_places=True)[:2]
    assert meta["door_places"] and all(ep.door_place is not None for ep in stored.episodes)
    for a, b in zip(made.episodes, stored.episodes):
        assert np.array_equal(np.asarray(a.door_place), np.asarray(b.door_place)) and a.equals(b)


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
