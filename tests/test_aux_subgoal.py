"""--aux_subgoal_weight: a head reads, from the memory after each step, what the bot is doing
(babyai_env.SafeBot.subgoal: exploring, going to the key, to a locked door, opening it, ...),
recorded by live collection and in bot demos; the loss reaches the memory and skips steps without
one; a fork that adds the head starts it fresh and keeps Adam's state of everything else.

    pytest tests/test_aux_subgoal.py
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from minigrid.utils.baby_ai_bot import PickupSubgoal

import train_mop
from conftest import tiny_config
from mop import babyai_env
from mop.aux_losses import AUX_HEADS, FRESH_HEADS, aux_subgoal_loss, head_optimizer_state
from mop.babyai_env import (
    EVAL_SEED_START,
    NO_SUBGOAL,
    NO_TARGET,
    SUBGOAL_KINDS,
    SafeBot,
    bot_path_length,
    locked_doors,
    make_env,
    needs_key,
    quiet_reset,
    subgoal_code,
    target_code,
    train_episode_seed,
)
from mop.bot_demos import bot_episode
from mop.experiment import ConfigError, load_checkpoint, read_metrics
from mop.replay_buffer import episodes_as_chunk
from tests.test_aux_target import check_reaches_the_memory
from tests.test_env import small_agent

LEVEL = "BabyAI-Unlock-v0"
KIND = {name: i for i, name in enumerate(SUBGOAL_KINDS)}


def bot_kinds(level: str, seed: int) -> list[str]:
    """The bot's subgoal kind at each step of its own episode on the layout of `seed`."""
    env = make_env(level)
    quiet_reset(env, seed)
    bot, kinds = SafeBot(env), []
    while True:
        label = bot.label(None)
        kinds.append(SUBGOAL_KINDS[bot.subgoal()])
        _, _, terminated, truncated, _ = env.step(label)
        if terminated or truncated:
            return kinds


def test_the_kinds_follow_the_bots_plan_on_a_locked_door_level():
    """On Unlock's layouts that need the key the bot goes to the key, picks it up, goes to the
    locked door and opens it, in that order; on every layout opening is the last thing it does."""
    keyed = 0
    for k in range(8):
        kinds = bot_kinds(LEVEL, EVAL_SEED_START + k)
        assert kinds[-1] == "open" and kinds[0] in ("explore", "go to door", "go to other object"), kinds
        if "pick up" in kinds:
            keyed += 1
            order = [kinds.index(name) for name in ("go to other object", "pick up", "go to locked door")]
            assert order == sorted(order), kinds
            assert kinds[kinds.index("pick up") - 1] == "go to other object"
    assert keyed >= 2


def test_a_mission_object_is_told_apart_from_another_object():
    """GoToLocal's last steps go to the object the mission names; nothing there is another object."""
    kinds = [kind for k in range(4) for kind in bot_kinds("BabyAI-GoToLocal-v0", EVAL_SEED_START + k)]
    assert "go to mission object" in kinds and "go to other object" not in kinds


def test_a_failed_bot_has_no_subgoal():
    env = make_env(LEVEL)
    quiet_reset(env, EVAL_SEED_START)
    bot = SafeBot(env)
    bot.label(None)
    assert bot.subgoal() is not None
    bot.bot = None  # what SafeBot.label does when the bot raises
    assert bot.subgoal() is None and subgoal_code(bot.subgoal()) == NO_SUBGOAL


def test_the_subgoal_loss_reaches_the_memory_and_skips_steps_without_one():
    policy, encoder = small_agent()
    env = make_env(LEVEL)
    episodes = [bot_episode(env, EVAL_SEED_START + k)[0] for k in range(2)]
    chunk = episodes_as_chunk(episodes)
    n = len(episodes[0])
    assert np.array_equal(chunk["subgoal"][:n, 0], episodes[0].subgoal)  # the demos' kinds reach the chunk
    assert (chunk["subgoal"][n:, 0] == NO_SUBGOAL).all()  # padding has none
    head = torch.nn.Linear(policy.memory_size, len(SUBGOAL_KINDS))
    check_reaches_the_memory(policy, encoder, chunk, aux_subgoal_loss, head, "subgoal", NO_SUBGOAL)


def test_a_head_that_reads_the_subgoal_exactly_has_no_loss_and_full_accuracy():
    subgoal = np.array([[KIND["explore"], NO_SUBGOAL], [KIND["open"], KIND["go to locked door"]]], np.int8)
    memory = torch.zeros(2, 2, len(SUBGOAL_KINDS))
    for t, n in zip(*np.nonzero(subgoal != NO_SUBGOAL)):
        memory[t, n, int(subgoal[t, n])] = 60.0

    class Out:
        logits = torch.zeros(2, 2, 7)
        memory_seq = memory

    head = torch.nn.Linear(len(SUBGOAL_KINDS), len(SUBGOAL_KINDS))
    with torch.no_grad():
        head.weight.copy_(torch.eye(len(SUBGOAL_KINDS)))
        head.bias.zero_()
    parts: dict = {}
    assert aux_subgoal_loss(head, Out(), subgoal, parts).item() == pytest.approx(0.0, abs=1e-6)
    assert parts["train/aux_subgoal_accuracy"] == 1.0


@pytest.mark.parametrize("key", ["target", "subgoal"])
def test_live_collection_records_the_bots_target_and_subgoal_only_when_asked(key):
    """With the bot at the wheel, a collector asked for targets (subgoals) records, at every step,
    what SafeBot.target (.subgoal) gives on the same layout replayed; one not asked records none."""
    from mop.collection import Collector

    none, code = {"target": (NO_TARGET, _target), "subgoal": (NO_SUBGOAL, _subgoal)}[key]
    policy, encoder = small_agent()
    plain = Collector(LEVEL, [0], 3, None, "raw", teacher_forcing=1.0).collect(policy, encoder, 20)
    assert (plain[key] == none).all()
    asked = {f"record_{key}s": True}
    chunk = Collector(LEVEL, [0, 1], 3, None, "raw", teacher_forcing=1.0, **asked).collect(
        policy, encoder, 60
    )
    for k in (0, 1):
        env = make_env(LEVEL)
        quiet_reset(env, train_episode_seed(3, k, 0))
        bot, previous = SafeBot(env), None
        end = min([t for t, ep in chunk["episodes"] if ep.env_index == k] or [59])
        for t in range(end + 1):
            label = bot.label(previous)
            assert label == chunk["label"][t, k]
            assert np.array_equal(chunk[key][t, k], code(bot)), (k, t)
            env.step(label)
            previous = label
    recorded = chunk[key] if key == "subgoal" else chunk[key][..., 0]
    assert (recorded != none).mean() > 0.5


def _target(bot):
    return target_code(bot.target())


def _subgoal(bot):
    return subgoal_code(bot.subgoal())


def test_online_dagger_trains_the_subgoal_head_and_saves_it(tmp_path):
    cfg = tiny_config(
        tmp_path, task_id=LEVEL, aux_subgoal_weight=1.0, buffer_episodes=6, max_steps=30, num_updates=3
    )
    train_mop.main(cfg, progress=False)
    folder = tmp_path / LEVEL / "trial_0"
    rows = read_metrics(folder / "metrics.jsonl")
    assert [r for r in rows if 0.0 < r.get("train/aux_subgoal", 0.0)]
    ckpt = load_checkpoint(folder / "checkpoint_3.pt")
    assert ckpt["subgoal_head_state_dict"]["weight"].shape[0] == len(SUBGOAL_KINDS)


def test_a_negative_weight_is_refused():
    with pytest.raises(ConfigError, match="aux_subgoal_weight must be >= 0"):
        tiny_config("x", aux_subgoal_weight=-1.0)


# ----------------------------------------------------------------------------- forks that add a head


def adam_after_steps(heads: dict[str, bool], steps: int = 2) -> tuple[dict, dict, int]:
    """An Adam over a base of 3 parameters and the named heads (Linear 2->2 each), stepped: its
    state dict, the ckpt keys of its heads (as a checkpoint holds them) and the base's size."""
    torch.manual_seed(0)
    base = [torch.nn.Parameter(torch.randn(2)) for _ in range(3)]
    modules = {key: torch.nn.Linear(2, 2) if on else None for key, on in heads.items()}
    params = base + [p for m in modules.values() if m is not None for p in m.parameters()]
    opt = torch.optim.Adam(params, lr=0.1)
    for _ in range(steps):
        opt.zero_grad()
        sum((p**2).sum() for p in params).backward()
        opt.step()
    ckpt = {"optimizer_state_dict": opt.state_dict()}
    ckpt.update({key: m.state_dict() for key, m in modules.items() if m is not None})
    return ckpt, modules, len(base)


def test_a_forks_new_head_starts_without_adam_state_and_the_rest_keeps_theirs():
    rooms, target, subgoal, *_later = AUX_HEADS.values()
    parent, parent_heads, base = adam_after_steps({rooms: True, target: False, subgoal: True})
    heads = {rooms: torch.nn.Linear(2, 2), target: torch.nn.Linear(2, 2), subgoal: torch.nn.Linear(2, 2)}
    state = head_optimizer_state(parent, base, heads)
    old = parent["optimizer_state_dict"]["state"]
    # new order: base 0-2, rooms 3-4, target 5-6 (new: no state), subgoal 7-8 (the parent's 5-6)
    assert sorted(state["state"]) == [0, 1, 2, 3, 4, 7, 8]
    for new, was in {0: 0, 2: 2, 3: 3, 4: 4, 7: 5, 8: 6}.items():
        assert torch.equal(state["state"][new]["exp_avg"], old[was]["exp_avg"])
    assert state["param_groups"][0]["params"] == list(range(9))
    params = [torch.nn.Parameter(torch.zeros(2)) for _ in range(3)]
    params += [p for m in heads.values() for p in m.parameters()]
    torch.optim.Adam(params).load_state_dict(state)  # loads into the fork's optimizer
    # a fork that drops a head: its state is left out
    dropped = head_optimizer_state(parent, base, {rooms: None, target: None, subgoal: heads[subgoal]})
    assert sorted(dropped["state"]) == [0, 1, 2, 3, 4]
    assert torch.equal(dropped["state"][3]["exp_avg"], old[5]["exp_avg"])
    # the same heads: the state as saved
    assert (
        head_optimizer_state(parent, base, {rooms: heads[rooms], target: None, subgoal: heads[subgoal]})
        is (parent["optimizer_state_dict"])
    )


def test_a_fork_that_adds_the_subgoal_head_trains_it_from_its_initialisation(tmp_path):
    """A DAgger run without the head, forked at update 2 under --aux_subgoal_weight: the fork
    trains (its head's loss logged), its checkpoint holds the head, and its policy's Adam state
    at the fork point is the parent's."""
    online = dict(task_id=LEVEL, buffer_episodes=0, max_steps=30, log_interval=1)
    train_mop.main(tiny_config(tmp_path / "parent", **online, num_updates=2), progress=False)
    parent = tmp_path / "parent" / LEVEL / "trial_0" / "checkpoint_2.pt"
    child = tiny_config(tmp_path / "fork", **online, num_updates=3, aux_subgoal_weight=1.0)
    ckpt = train_mop.fork_checkpoint(child, str(parent))
    assert ckpt[FRESH_HEADS] == ["subgoal_head_state_dict"]
    train_mop.main(child, progress=False, fork_from=str(parent))
    folder = tmp_path / "fork" / LEVEL / "trial_0"
    assert [r for r in read_metrics(folder / "metrics.jsonl") if r.get("train/aux_subgoal", 0.0) > 0]
    assert "subgoal_head_state_dict" in load_checkpoint(folder / "checkpoint_3.pt")
    assert FRESH_HEADS not in load_checkpoint(folder / "checkpoint_3.pt")


# ----------------------------------------------------------------------------- --no-bot_undo


def deviate_by_pickup(level: str, undo: bool) -> tuple[list[str], int]:
    """The bot drives an evaluation layout until it faces an object it does not pick up; there the
    agent picks it up. The bot's subgoal kinds over the next 6 steps (the agent then follows it)."""
    for k in range(40):
        env = make_env(level)
        quiet_reset(env, EVAL_SEED_START + k)
        bot, previous = SafeBot(env, undo=undo), None
        for _ in range(env.max_steps):
            label = bot.label(previous)
            front = env.unwrapped.grid.get(*env.unwrapped.front_pos)
            if label is None:
                break
            if (
                front is not None
                and front.type in ("ball", "box", "key")
                and label != 3
                and not env.unwrapped.carrying
            ):
                env.step(3)
                assert env.unwrapped.carrying is not None
                kinds, previous = [], 3
                for _ in range(6):
                    label = bot.label(previous)
                    kinds.append(SUBGOAL_KINDS[bot.subgoal()])
                    env.step(label)
                    previous = label
                return kinds, k
            env.step(label)
            previous = label
    raise AssertionError("no layout where the bot passes an object by")


def test_without_undo_the_bot_keeps_what_the_student_picked_up():
    """minigrid's bot answers an unasked pickup by planning to put the object back (a drop, and
    the walk to where it was found); with undo=False it plans on from the world as it is."""
    with_undo, k = deviate_by_pickup("BabyAI-GoToImpUnlock-v0", True)
    without, k2 = deviate_by_pickup("BabyAI-GoToImpUnlock-v0", False)
    assert k == k2
    assert with_undo[0] == "drop", with_undo  # put it down, here, at once
    assert "drop" not in without and "go to cell" not in without, without


def carry_a_wrong_key_to_the_end(undo: bool, revision: int = 1) -> tuple[bool, list[int], str | None]:
    """The bot drives a GoToImpUnlock layout that needs the key until, on its way to fetch the
    right key, it faces a key of another colour than the locked door's; the agent picks that one up (a student's mistake: 82 of 106
    failing episodes of the recipe's student hold one), then follows the bot to the end. Whether it
    succeeds, the labels after the pickup, and the bot's failure if it gave up."""
    env = make_env("BabyAI-GoToImpUnlock-v0")
    for k in range(60):
        if bot_path_length("BabyAI-GoToImpUnlock-v0", EVAL_SEED_START + k) is None:
            continue  # every key of the door's colour lies behind it: no one solves this layout
        quiet_reset(env, EVAL_SEED_START + k)
        if not needs_key(env):
            continue
        colours = {env.unwrapped.grid.get(*p).color for p in locked_doors(env)}
        bot, previous, after = SafeBot(env, undo=undo, revision=revision), None, None
        for _ in range(env.unwrapped.max_steps):
            label = bot.label(previous)
            if label is None:
                return False, after or [], bot.failure
            front = env.unwrapped.grid.get(*env.unwrapped.front_pos)
            if after is None and front is not None and front.type == "key" and front.color not in colours:
                planned = any(type(g).__name__ == "PickupSubgoal" for g in bot.bot.stack)
                if env.unwrapped.carrying is None and label != 3 and planned:  # on its way to the key
                    label, after = 3, []
            elif after is not None:
                after.append(label)
            _, reward, terminated, truncated, _ = env.step(label)
            previous = label
            if terminated or truncated:
                if after is None:
                    break  # this layout offered no wrong key on the way
                return bool(terminated and reward > 0), after, bot.failure
    raise AssertionError("no layout where the bot passes a key of another colour by")


def test_a_bot_whose_agent_holds_a_wrong_key_puts_it_down_and_fetches_the_right_one(monkeypatch):
    """With undo=False the bot keeps the agent's pickup; minigrid's bot then reaches its own pickup
    of the right key with full hands and asserts, and DAgger lost the episode's labels. The
    patched bot drops what it holds first, then fetches the key and solves the layout."""
    solved, labels, failure = carry_a_wrong_key_to_the_end(undo=False)
    assert solved and failure is None
    assert 4 in labels and labels.index(4) < len(labels) - labels[::-1].index(3) - 1  # a drop, then a pickup
    monkeypatch.setattr(PickupSubgoal, "replan_before_action", babyai_env._minigrid_pickup)
    solved, _, failure = carry_a_wrong_key_to_the_end(undo=False)
    assert not solved and failure.startswith("AssertionError")


def test_bot_revision_0_is_minigrid_s_bot_that_gives_up_there(tmp_path):
    """--bot_revision 0, the bot of the runs before the fix, asserts where the agent holds a wrong
    key; the Collectors' bots get the run's revision."""
    from mop.collection import Collector

    solved, _, failure = carry_a_wrong_key_to_the_end(undo=False, revision=0)
    assert not solved and failure.startswith("AssertionError")
    assert all(
        s.bot.bot.revision == 0 for s in Collector(LEVEL, [0, 1], 3, None, "raw", bot_revision=0).slots
    )
    assert all(s.bot.bot.revision == 1 for s in Collector(LEVEL, [0], 3, None, "raw").slots)


def test_bot_undo_reaches_the_collectors_bots(tmp_path):
    from mop.collection import Collector

    cfg = tiny_config(tmp_path, bot_undo=False)
    assert cfg.bot_undo is False
    collector = Collector(LEVEL, [0, 1], 3, None, "raw", bot_undo=False)
    assert all(slot.bot.bot.keep_changes for slot in collector.slots)
    assert not any(s.bot.bot.keep_changes for s in Collector(LEVEL, [0], 3, None, "raw").slots)
