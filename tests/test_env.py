"""Tier 1: env construction, seeds, observation encoding, the safe bot and the collector."""

import multiprocessing
import signal
import threading
import time
from functools import partial

import numpy as np
import pytest
import torch

from mixture_of_experts import build_policy
from mop import babyai_env, collection
from mop.babyai_env import (
    EVAL_SEED_START,
    TRAIN_SEED_START,
    SafeBot,
    check_task_id,
    encode_obs,
    make_env,
    obs_dim,
    quiet_reset,
    train_episode_seed,
)
from mop.collection import Collector, ParallelCollector, merge_chunks
from mop.language import build_mission_encoder

TASK = "BabyAI-GoToLocal-v0"
POLICY_CONFIG = dict(
    policy_type="mop",
    input_dim=152,
    lang_dim=8,
    num_actions=7,
    intermediate_dim=16,
    router_hidden_size=8,
    expert_hidden_sizes=[[0, 8], [0, 8]],
    hidden_size=8,
)


def small_agent(seed: int = 0):
    torch.manual_seed(seed)
    return build_policy(POLICY_CONFIG), build_mission_encoder("bow", 8)


def test_unknown_task_suggests_close_matches():
    assert check_task_id(TASK) == TASK
    with pytest.raises(ValueError, match="BabyAI-GoToLocal-v0"):
        check_task_id("BabyAI-GoToLocl-v0")


def test_max_steps_really_sets_the_episode_limit():
    env = make_env("BabyAI-UnlockPickup-v0")
    quiet_reset(env, 0)
    assert env.max_steps == 288  # minigrid's typo would leave 72
    env = make_env("BabyAI-UnlockPickup-v0", max_steps=300)
    quiet_reset(env, 0)
    assert env.max_steps == 300
    env = make_env("BabyAI-GoToImpUnlock-v0", max_steps=1500)
    quiet_reset(env, 0)
    assert env.max_steps == 1500


def test_training_seeds_are_disjoint_from_evaluation_seeds():
    seeds = {train_episode_seed(r, e, i) for r in (0, 1, 7) for e in (0, 1, 15) for i in (0, 1, 999_999)}
    assert len(seeds) == 27
    assert min(seeds) >= TRAIN_SEED_START > EVAL_SEED_START + 10**8


def test_same_seed_same_layout():
    a, b = make_env(TASK), make_env(TASK)
    oa, ob = quiet_reset(a, 5), quiet_reset(b, 5)
    assert oa["mission"] == ob["mission"] and np.array_equal(oa["image"], ob["image"])


def test_cells_in_view_are_the_cells_minigrid_says_the_agent_sees():
    env = make_env("BabyAI-GoToImpUnlock-v0")
    rng = np.random.default_rng(0)
    for seed in range(2):
        obs, grid = quiet_reset(env, EVAL_SEED_START + seed), env.unwrapped.grid
        for _ in range(25):
            seen = babyai_env.cells_in_view(env, obs["image"])
            assert len(seen) == int((obs["image"][..., 0] != 0).sum())
            for y in range(grid.height):
                for x in range(grid.width):
                    if grid.get(x, y) is not None:  # agent_sees answers for objects and walls only
                        assert env.unwrapped.agent_sees(x, y) == ((x, y) in seen)
            obs, *_ = env.step(int(rng.choice([0, 1, 2, 2, 2])))


def test_encode_obs_raw_and_onehot():
    env = make_env(TASK)
    obs = quiet_reset(env, 1)
    image = torch.from_numpy(obs["image"])[None]
    raw = encode_obs(image, torch.tensor([obs["direction"]]), torch.tensor([1]), "raw")
    assert raw.shape == (1, obs_dim("raw")) == (1, 152)
    assert raw[0, :147].tolist() == torch.from_numpy(obs["image"]).permute(2, 0, 1).flatten().float().tolist()
    assert raw[0, 147 + obs["direction"]] == 1 and raw[0, 147:151].sum() == 1 and raw[0, -1] == 1
    onehot = encode_obs(image, torch.tensor([obs["direction"]]), torch.tensor([0]), "onehot")
    assert onehot.shape == (1, obs_dim("onehot")) == (1, 985)
    cells = onehot[0, :980].reshape(49, 20)
    assert torch.all(cells[:, :11].sum(-1) == 1) and torch.all(cells[:, 11:17].sum(-1) == 1)
    with pytest.raises(ValueError, match="obs_encoding"):
        obs_dim("pixels")


@pytest.mark.parametrize("seed", [6, 14, 35])
def test_bot_that_would_loop_forever_fails_cleanly(seed):
    """minigrid's replan never returns on these GoToImpUnlock layouts (its subgoal stack grows
    without end), even when the bot drives. SafeBot must report a failure instead."""
    threads = threading.active_count()
    env = make_env("BabyAI-GoToImpUnlock-v0")
    quiet_reset(env, seed)
    bot = SafeBot(env)
    for _ in range(env.max_steps):
        action = bot.label(None)
        if action is None:
            break
        _, _, terminated, truncated, _ = env.step(action)
        assert not (terminated or truncated), "expected this layout to trip the bot"
    assert action is None and "subgoal stack" in bot.failure
    assert threading.active_count() == threads  # no thread left behind
    assert bot.label(None) is None  # stays failed


def test_a_replan_past_the_time_limit_is_a_bot_failure(monkeypatch):
    env = make_env("BabyAI-GoToLocal-v0")
    quiet_reset(env, 0)
    bot = SafeBot(env)
    assert bot.label(None) is not None  # an ordinary replan is not interrupted
    monkeypatch.setattr(babyai_env, "BOT_TIMEOUT_S", 0.05)
    monkeypatch.setattr(bot.bot, "replan", lambda action: time.sleep(2))
    started = time.perf_counter()
    assert bot.label(None) is None and "longer than 0.05s" in bot.failure
    assert time.perf_counter() - started < 1.5
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)  # nothing left armed


def test_the_bot_timer_passes_other_alarms_to_the_handler_it_replaced():
    """SafeBot's SIGALRM handler stays installed between labels (swapping it per label cost
    ~4% of collection); an alarm that is not its own reaches the handler it replaced."""
    seen = []
    previous = signal.signal(signal.SIGALRM, lambda signum, frame: seen.append(signum))
    try:
        env = make_env("BabyAI-GoToLocal-v0")
        quiet_reset(env, 0)
        bot = SafeBot(env)
        assert bot.label(None) is not None
        signal.raise_signal(signal.SIGALRM)
        assert seen == [signal.SIGALRM]
        assert bot.label(None) is not None  # and SafeBot still times its own replans
    finally:
        signal.signal(signal.SIGALRM, previous)


def test_bot_survives_normal_layouts_of_the_same_level():
    env = make_env("BabyAI-GoToImpUnlock-v0")
    quiet_reset(env, 2)
    bot = SafeBot(env)
    for _ in range(env.max_steps):
        _, reward, terminated, truncated, _ = env.step(bot.label(None))
        if terminated or truncated:
            break
    assert terminated and reward > 0


def test_toggling_a_box_is_a_bot_failure_not_a_crash():
    env = make_env("BabyAI-UnlockPickup-v0")
    for seed in range(20):
        quiet_reset(env, seed)
        bot, previous = SafeBot(env), None
        for _ in range(env.max_steps):
            label = bot.label(previous)
            if label is None:
                assert "DisappearedBoxError" in bot.failure
                return
            front = env.grid.get(*env.front_pos)
            previous = env.actions.toggle if front is not None and front.type == "box" else label
            _, _, terminated, truncated, _ = env.step(previous)
            if terminated or truncated:
                break
    pytest.fail("no layout led the student to toggle a box")


@pytest.mark.parametrize("task", ["BabyAI-GoToLocal-v0", "BabyAI-UnlockPickup-v0", "BabyAI-GoToImpUnlock-v0"])
def test_fast_env_collects_what_minigrid_collects(task):
    """fast_env (fast_grid's view and bot) against minigrid's own code, through the collector
    (tests/test_fast_env.py checks every step of many levels in detail)."""
    policy, encoder = small_agent()

    def chunk(fast: bool) -> dict:
        c = Collector(
            task, [0, 1], run_seed=1, max_steps=None, obs_encoding="raw", teacher_forcing=0.5, fast_env=fast
        )
        return c.collect(policy, encoder, 60)

    fast, plain = chunk(True), chunk(False)
    for key in ("image", "direction", "carrying", "label", "label_mask", "done"):
        assert np.array_equal(fast[key], plain[key]), key
    assert [e.seed for _, e in fast["episodes"]] == [e.seed for _, e in plain["episodes"]]


def collector(indices=(0, 1, 2, 3), **kw):
    return Collector(TASK, list(indices), run_seed=3, max_steps=None, obs_encoding="raw", **kw)


def test_collector_is_reproducible_and_split_invariant():
    policy, encoder = small_agent()
    whole = collector().collect(policy, encoder, 20)
    again = collector().collect(policy, encoder, 20)
    split = merge_chunks(
        [collector((0, 1)).collect(policy, encoder, 20), collector((2, 3)).collect(policy, encoder, 20)]
    )
    for key in ("image", "direction", "label", "label_mask", "done"):
        assert np.array_equal(whole[key], again[key]), key
        assert np.array_equal(whole[key], split[key]), key
    assert [whole["missions"][i] for i in whole["mission_index"].flat] == [
        split["missions"][i] for i in split["mission_index"].flat
    ]
    assert whole["label_mask"].all() and whole["label"].min() >= 0


def test_success_needs_positive_reward(monkeypatch):
    c = collector((0,))
    policy, encoder = small_agent()
    env = c.slots[0].env
    outcomes = iter([0.0, 0.7])

    def fake_step(action):  # minigrid terminates with reward 0 on a failed instruction
        return env.gen_obs(), next(outcomes), True, False, {}

    monkeypatch.setattr(env, "step", fake_step)
    chunk = c.collect(policy, encoder, 2)
    assert [ep.success for _, ep in chunk["episodes"]] == [False, True]
    assert chunk["done"].all()


def test_bot_failure_masks_the_step_and_resets(monkeypatch):
    hang_seeds = iter([6, 14, 35] + [2] * 100)  # GoToImpUnlock layouts where the bot loops forever
    monkeypatch.setattr(collection, "train_episode_seed", lambda *a: next(hang_seeds))
    policy, encoder = small_agent()
    c = Collector(
        "BabyAI-GoToImpUnlock-v0", [0], run_seed=0, max_steps=None, obs_encoding="raw", teacher_forcing=1.0
    )
    chunk = c.collect(policy, encoder, 800)
    failures = [ep for _, ep in chunk["episodes"] if ep.bot_failure]
    assert len(failures) == 3 and all("subgoal stack" in ep.bot_failure for ep in failures)
    failed_steps = ~chunk["label_mask"][:, 0]
    assert failed_steps.sum() == 3
    assert chunk["done"][failed_steps, 0].all()  # the env was reset right there
    assert (chunk["label"][failed_steps, 0] == -1).all()


def test_parallel_workers_match_one_process_and_shut_down():
    policy, encoder = small_agent()
    kw = dict(
        run_seed=3,
        max_steps=None,
        obs_encoding="raw",
        policy_factory=partial(build_policy, POLICY_CONFIG),
        encoder_factory=partial(build_mission_encoder, "bow", 8),
    )
    with ParallelCollector(TASK, 4, 1, **kw) as local:
        a = [local.collect(policy, encoder, 10) for _ in range(2)]
    with ParallelCollector(TASK, 4, 2, **kw) as par:
        b = [par.collect(policy, encoder, 10) for _ in range(2)]
        procs = [p for p, _ in par.workers]
    assert [s["episode_index"] for s in b[-1]["slot_states"]] == [
        s["episode_index"] for s in a[-1]["slot_states"]
    ]
    for x, y in zip(a, b):
        assert np.array_equal(x["label"], y["label"]) and np.array_equal(x["image"], y["image"])
        torch.testing.assert_close(x["memory"], y["memory"])
    assert not any(p.is_alive() for p in procs)
    assert not multiprocessing.active_children()


def test_workers_act_on_the_weights_given_at_submit():
    """With async collection the learner steps while workers collect: changing the weights right
    after submit() must not reach the chunk being collected (they must get a snapshot, not the
    shared storage torch would otherwise hand them)."""
    policy, encoder = small_agent()
    kw = dict(
        run_seed=3,
        max_steps=None,
        obs_encoding="raw",
        policy_factory=partial(build_policy, POLICY_CONFIG),
        encoder_factory=partial(build_mission_encoder, "bow", 8),
    )
    with ParallelCollector(TASK, 4, 1, **kw) as local:
        expected = local.collect(policy, encoder, 12)
    with ParallelCollector(TASK, 4, 2, **kw) as par:
        par.submit(policy, encoder, 12)
        with torch.no_grad():  # the learner's optimizer step, while the workers run
            for p in list(policy.parameters()) + list(encoder.parameters()):
                p.mul_(-3.0)
        got = par.result()
    assert np.array_equal(got["image"], expected["image"]) and np.array_equal(
        got["direction"], expected["direction"]
    )
