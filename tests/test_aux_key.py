"""--aux_key_weight: a head reads, from the memory after each step, where the nearest key of a locked
door's colour that the agent has seen lies (babyai_env.KeyTracker, recorded in bot demos and by live
collection); the labels follow the env, the loss trains from a demo store and online, resumes, and a
store made before the labels is refused.

    pytest tests/test_aux_key.py
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from minigrid.core.world_object import Key

from conftest import tiny_config
from mop.babyai_env import NO_TARGET, KeyTracker, agent_frame, locked_doors, make_env, quiet_reset
from mop.bot_demos import bot_episode, generate_demos
from mop.experiment import ConfigError, read_metrics
from tests.test_aux_target import check_head_trains_from_demos_and_resumes

LEVEL = "BabyAI-Unlock-v0"


def matching_keys(env) -> list[tuple[int, int]]:
    colours = {env.grid.get(*p).color for p in locked_doors(env)}
    return [
        (x, y)
        for y in range(env.grid.height)
        for x in range(env.grid.width)
        if (o := env.grid.get(x, y)) is not None and o.type == "key" and o.color in colours
    ]


def start_layouts(env, cells_of, seeds: int = 80) -> tuple[int, int]:
    """(a layout seed whose agent sees one of cells_of(env) at the start, one whose agent sees none
    of them though there are some): the two starts a place tracker's first label tells apart."""
    seen = unseen = None
    for seed in range(seeds):
        quiet_reset(env, seed)
        cells = cells_of(env)
        visible = any(env.agent_sees(*c) for c in cells)
        if visible and seen is None:
            seen = seed
        if cells and not visible and unseen is None:
            unseen = seed
    assert seen is not None and unseen is not None
    return seen, unseen


def check_place_tracker(tracker, cells_of, forget) -> None:
    """A place tracker (KeyTracker, DoorTracker) on GoToImpUnlock: where the agent sees one of
    cells_of(env) at the start, the label is the nearest seen one in its frame, still after it turns
    away (a view without it), and None once forget(env, cell) has made it moot; where it sees none,
    None."""
    env = make_env("BabyAI-GoToImpUnlock-v0")
    seen, unseen = start_layouts(env, cells_of)
    obs = quiet_reset(env, seen)
    tracker.reset(env)
    visible = [c for c in cells_of(env) if env.agent_sees(*c)]
    nearest = min(visible, key=lambda c: abs(c[0] - env.agent_pos[0]) + abs(c[1] - env.agent_pos[1]))
    assert tracker.label(env, obs["image"]) == agent_frame(env, nearest)
    env.step(env.actions.left)  # turned away: still remembered, now in the new frame
    assert tracker.label(env, np.zeros_like(obs["image"])) == agent_frame(env, nearest)
    forget(env, nearest)
    assert tracker.label(env, obs["image"]) is None
    obs = quiet_reset(env, unseen)
    tracker.reset(env)
    assert tracker.label(env, obs["image"]) is None  # nothing seen yet


def test_the_label_is_the_nearest_seen_key_in_the_agents_frame_until_one_is_held():
    def hold(env, key):  # holding one of its colour: nothing left to remember
        env.carrying = Key(env.grid.get(*key).color)

    check_place_tracker(KeyTracker(), matching_keys, hold)


def test_bot_demos_record_the_key_labels_the_env_gives():
    env = make_env("BabyAI-GoToImpUnlock-v0")
    for seed in range(40):  # the first layout whose bot sees a matching key
        episode, _ = bot_episode(env, seed)
        if episode is not None and (episode.key[:, 0] != NO_TARGET).any():
            break
    assert episode.key.shape == (len(episode), 2)
    # replay the bot's actions: the recorded label is NO_TARGET exactly until a matching key is in
    # view, and again from when the agent holds one
    quiet_reset(env, seed)
    keys, seen, held = matching_keys(env), False, False
    colours = {env.grid.get(*k).color for k in keys}
    for t, action in enumerate(episode.label.tolist()):
        seen = seen or any(env.agent_sees(*k) for k in keys)
        known = episode.key[t, 0] != NO_TARGET
        assert known == (seen and not held), t
        env.step(action)
        carried = env.carrying  # the bot also carries other objects out of its way
        held = held or (carried is not None and carried.type == "key" and carried.color in colours)


def test_the_key_head_trains_from_demos_and_resumes(tmp_path):
    check_head_trains_from_demos_and_resumes(tmp_path, "key")  # test_aux_target's, for this head


# Each per-step place label a demo store may hold: its manifest flag, the StoredEpisode field, the
# loss that needs it, and what the refusal calls it (test_aux_door_place.py uses the door's).
PLACE_LABELS = {
    "key": ("keys", "key", "aux_key_weight", "seen-key places"),
    "door_place": ("door_places", "door_place", "aux_door_place_weight", "seen-door places"),
}


def check_store_without_labels_is_refused(tmp_path, name: str) -> None:
    """A store made without the labels (its flag False) is refused for the loss that needs them
    in one ConfigError naming them and the loss, before any checkpoint is written."""
    import train_mop
    from mop import bot_demos

    flag, _, weight, what = PLACE_LABELS[name]
    root = bot_demos.store_path(tmp_path / "demos", LEVEL, 0)
    store = bot_demos.DemoStore.create(root, LEVEL, **{flag: False})
    bot_demos.extend_store(store, 3, progress=False)
    assert store.targets and not store.manifest[flag]
    cfg = tiny_config(
        tmp_path / "ck", task_id=LEVEL, demos=3, demos_dir=str(tmp_path / "demos"), **{weight: 1.0}
    )
    with pytest.raises(ConfigError, match=f"holds no {what} .*--{weight}"):
        train_mop.main(cfg, progress=False)
    assert not list((tmp_path / "ck").rglob("checkpoint_*.pt"))


def check_store_round_trips_labels(tmp_path, name: str) -> None:
    """The labels the generator plays are the ones a store gives back, bit-exact."""
    from mop.bot_demos import load_or_generate_demos

    flag, field, _, _ = PLACE_LABELS[name]
    made, _ = generate_demos(LEVEL, 3, 0, progress=False)  # in RAM, as the store's generator plays them
    stored, meta = load_or_generate_demos(LEVEL, 3, 0, tmp_path, progress=False, **{f"need_{flag}": True})[:2]
    assert meta[flag] and all(getattr(ep, field) is not None for ep in stored.episodes)
    for a, b in zip(made.episodes, stored.episodes):
        assert np.array_equal(np.asarray(getattr(a, field)), np.asarray(getattr(b, field))) and a.equals(b)


def test_a_store_without_key_labels_is_refused_before_anything_is_written(tmp_path):
    check_store_without_labels_is_refused(tmp_path, "key")


def test_demos_store_their_key_labels_and_read_them_back(tmp_path):
    check_store_round_trips_labels(tmp_path, "key")


# the door and the match: live chunks only too (they record the door labels when either loss is on)
@pytest.mark.parametrize("name, buffer", [("key", 6), ("door", 0), ("match", 0)])
def test_online_dagger_trains_the_key_door_and_match_heads(tmp_path, name, buffer):
    import train_mop

    cfg = tiny_config(  # one room: its key and door come into view within a few steps
        tmp_path,
        task_id="BabyAI-UnlockLocal-v0",
        buffer_episodes=buffer,
        max_steps=30,
        num_updates=3,
        **{f"aux_{name}_weight": 1.0},
        **({"teacher_forcing": 1.0} if name == "match" else {}),  # the bot acts: it faces its key
    )
    train_mop.main(cfg, progress=False)
    rows = read_metrics(tmp_path / "BabyAI-UnlockLocal-v0" / "trial_0" / "metrics.jsonl")
    assert [r for r in rows if 0.0 < r.get(f"train/aux_{name}", 0.0)]


@pytest.mark.parametrize("name", ["key", "door", "match"])
@pytest.mark.parametrize(
    "value, match", [(-1.0, "{} must be >= 0"), (float("nan"), "'{}' must be a finite number")]
)
def test_bad_key_door_and_match_weights_are_refused(tmp_path, name, value, match):
    key = f"aux_{name}_weight"
    with pytest.raises(ConfigError, match=match.format(key)):
        tiny_config(tmp_path, **{key: value})


def test_the_key_loss_reads_the_action_heads_input_when_asked():
    """--aux_key_reads head_input: aux_target_loss reads out.head_input_seq, not the memory; the
    same labels give the same cross-entropy by hand, and steps without a label get no gradient."""
    from mop.aux_losses import aux_target_loss
    from mop.babyai_env import TARGET_RANGE

    torch.manual_seed(0)
    classes = 2 * TARGET_RANGE + 1
    head_input = torch.randn(3, 1, 5, requires_grad=True)
    memory = torch.randn(3, 1, 9)  # another width: reading it would not fit the head
    out = type(
        "Out", (), {"logits": torch.zeros(3, 1, 7), "head_input_seq": head_input, "memory_seq": memory}
    )()
    key = np.array([[[2, -1]], [[NO_TARGET, NO_TARGET]], [[0, 3]]], np.int8)
    head = torch.nn.Linear(5, 2 * classes)
    parts: dict = {}
    loss = aux_target_loss(head, out, key, parts, "key", "head_input")
    logits = head(head_input[[0, 2], 0]).view(2, 2, classes)
    by_hand = torch.nn.functional.cross_entropy(
        logits.reshape(-1, classes), torch.tensor([[2, -1], [0, 3]]).reshape(-1) + TARGET_RANGE
    )
    assert torch.allclose(loss, by_hand) and "train/aux_key" in parts
    loss.backward()
    assert (head_input.grad[1] == 0).all() and (head_input.grad[[0, 2]] != 0).any()
    with pytest.raises(RuntimeError):  # the default reads the memory (9 wide)
        aux_target_loss(head, out, key, {}, "key")


def test_a_key_head_on_the_head_input_trains_saves_and_is_refused_by_a_memory_fork(tmp_path):
    """A run with --aux_key_reads head_input: the saved key head reads the action head's input
    (policy.head_input_size features, not memory_size); a fork of it whose key head reads the
    memory is refused in one line naming the head, before anything is written."""
    import train_mop
    from mop.checkpoints import load_checkpoint, load_policy

    online = dict(task_id="BabyAI-UnlockLocal-v0", buffer_episodes=6, max_steps=30, aux_key_weight=1.0)
    train_mop.main(
        tiny_config(tmp_path / "run", **online, num_updates=2, aux_key_reads="head_input"), progress=False
    )
    parent = tmp_path / "run" / "BabyAI-UnlockLocal-v0" / "trial_0" / "checkpoint_final.pt"
    rows = read_metrics(parent.parent / "metrics.jsonl")
    assert [r for r in rows if 0.0 < r.get("train/aux_key", 0.0)]
    policy, _, _ = load_policy(parent)
    assert policy.head_input_size != policy.memory_size
    assert load_checkpoint(parent)["key_head_state_dict"]["weight"].shape[1] == policy.head_input_size
    child = tiny_config(tmp_path / "fork", **online, num_updates=3)  # aux_key_reads: memory
    with pytest.raises(
        ConfigError, match=rf"key_head_state_dict reads {policy.head_input_size} .*\(another --aux_key_reads"
    ):
        train_mop.main(child, progress=False, fork_from=str(parent))
    assert not list((tmp_path / "fork").rglob("*"))  # refused before anything is written


def test_an_unknown_aux_key_reads_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="aux_key_reads must be one of memory, head_input, got 'router'"):
        tiny_config(tmp_path, aux_key_reads="router")
