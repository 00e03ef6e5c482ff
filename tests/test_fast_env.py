"""fast_grid against minigrid 3.2.0 itself: observations, visibility and bot labels at every step.

Twelve levels are driven by a random student (all seven actions, so pickups, drops, door and box
toggles happen) and by the bot (its label, with a random action one step in ten). At every step
the fast env's observation must equal minigrid's own `MiniGridEnv.gen_obs`, its visibility
`gen_obs_grid`'s mask, its grid encoding `Grid.encode()`, and `FastBot`'s label (or failure) and
explored map those of a plain `BabyAIBot.replan` on the same env. Tier 1 runs 1,000 steps a level
(~40 s in all on a quiet 2-core box); the `long` version 20,000 (~15 min).

    pytest tests/test_fast_env.py -m "not slow"
    pytest tests/test_fast_env.py -m long
"""

import copy
import json

import numpy as np
import pytest
from minigrid.minigrid_env import MiniGridEnv
from minigrid.utils.baby_ai_bot import BabyAIBot

from conftest import tiny_config
from mop.babyai_env import LEVEL_TABLE, _BoundedStack, bot_path_length, make_env, quiet_reset
from mop.fast_grid import FastBot, FastView

LEVELS = [*LEVEL_TABLE, "BabyAI-PutNextS7N4-v0"]  # the level table's levels, and a PutNext


def _replan(bot: BabyAIBot, action: int | None) -> int | str:
    try:
        return int(bot.replan(action))
    except Exception as e:  # the bot gives up (a box opened, a stack without end): both must, alike
        return f"{type(e).__name__}: {e}"


def _check_view(env, obs: dict) -> None:
    expected = MiniGridEnv.gen_obs(env)  # minigrid's own, not the instance's fast one
    assert obs["image"].dtype == expected["image"].dtype and obs["image"].shape == (7, 7, 3)
    assert np.array_equal(obs["image"], expected["image"])
    assert obs["direction"] == expected["direction"] and obs["mission"] == expected["mission"]
    view = env._fast_view
    assert np.array_equal(view.visibility(), MiniGridEnv.gen_obs_grid(env)[1])
    assert np.array_equal(view.encoding, env.grid.encode())


def drive(task: str, steps: int, seed: int = 0) -> dict:
    """Step `task` for `steps` steps, checking everything against minigrid; counts of what ran."""
    env = make_env(task, fast=True)
    rng = np.random.default_rng(seed)
    counts = {"episodes": 0, "bot_failures": 0, "toggles": 0, "pickups": 0, "drops": 0}
    done = 0
    while done < steps:
        obs = quiet_reset(env, seed * 100_000 + counts["episodes"])
        bot_driven = counts["episodes"] % 2 == 1
        counts["episodes"] += 1
        fast, reference = FastBot(env), BabyAIBot(env)
        fast.stack, reference.stack = _BoundedStack(fast.stack), _BoundedStack(reference.stack)
        previous = None
        for _ in range(min(env.max_steps, 250)):  # a new layout now and then
            _check_view(env, obs)
            label = _replan(fast, previous)
            assert label == _replan(reference, previous), f"{task} episode {counts['episodes']} step {done}"
            assert np.array_equal(fast.vis_mask, reference.vis_mask)
            if isinstance(label, str):
                counts["bot_failures"] += 1
                break
            action = label if bot_driven and rng.random() < 0.9 else int(rng.integers(0, 7))
            kind = {3: "pickups", 4: "drops", 5: "toggles"}.get(action)
            if kind:
                counts[kind] += 1
            obs, _, terminated, truncated, _ = env.step(action)
            previous = action
            done += 1
            if terminated or truncated or done >= steps:
                break
    return counts


@pytest.mark.parametrize("task", LEVELS)
def test_fast_env_equals_minigrid(task):
    counts = drive(task, 1_000)
    assert counts["episodes"] >= 2 and counts["toggles"] > 0 and counts["pickups"] > 0


@pytest.mark.slow
@pytest.mark.long
@pytest.mark.parametrize("task", LEVELS)
def test_fast_env_equals_minigrid_long(task):
    drive(task, 20_000, seed=1)


@pytest.mark.parametrize("task", LEVELS + ["BabyAI-UnblockPickup-v0"])
def test_fast_env_draws_the_same_layouts(task):
    """fast_grid.install must not change minigrid's level generation (same grid, agent, mission;
    UnblockPickup calls check_objs_reachable(raise_exc=False))."""
    fast, plain = make_env(task, fast=True), make_env(task, fast=False)
    for seed in range(25):
        a, b = quiet_reset(fast, seed), quiet_reset(plain, seed)
        assert np.array_equal(a["image"], b["image"]) and a["mission"] == b["mission"]
        assert np.array_equal(fast.grid.encode(), plain.grid.encode())
        assert tuple(fast.agent_pos) == tuple(plain.agent_pos) and fast.agent_dir == plain.agent_dir


def test_view_follows_changes_made_outside_a_step():
    """A new grid (a reset) is re-encoded whole; install is idempotent; a deep copy of an env is
    fast and exact on its own (its view and reachability check follow the copy, not the original)."""
    env = make_env("BabyAI-UnlockPickup-v0")
    assert FastView.install(env) is env._fast_view
    for seed in range(3):
        obs = quiet_reset(env, seed)
        _check_view(env, obs)
    twin = copy.deepcopy(env)
    assert twin._fast_view.env is twin and twin.check_objs_reachable.__self__ is twin
    _check_view(twin, twin.step(twin.actions.right)[0])
    _check_view(env, env.gen_obs())


@pytest.mark.slow
def test_fast_env_switch_gives_identical_training(tmp_path):
    """--fast_env and --no-fast_env train the same run: same losses, same episodes."""
    import train_mop

    def metrics(fast: bool) -> list[dict]:
        cfg = tiny_config(
            tmp_path / str(fast),
            fast_env=fast,
            task_id="BabyAI-GoToLocal-v0",
            num_updates=10,
            log_interval=2,
            unroll_len=16,
            teacher_forcing=0.5,
            path_ratio_fraction=0.5,
        )
        summary = train_mop.main(cfg, progress=False)
        with open(summary["metrics_path"]) as f:
            rows = [json.loads(line) for line in f]
        return [{k: v for k, v in r.items() if not k.startswith(("perf/", "time/"))} for r in rows]

    fast, plain = metrics(True), metrics(False)
    assert (
        len(fast) == 5 and fast[-1]["episodes/total"] > 0 and np.isfinite(fast[-1]["train/path_ratio_recent"])
    )
    assert json.dumps(fast) == json.dumps(plain)  # every loss, accuracy and episode statistic


def test_bot_path_length_reuses_an_env_without_changing_it():
    task = "BabyAI-UnlockPickup-v0"
    env = make_env(task)
    for seed in range(6):
        assert bot_path_length(task, seed, env=env) == bot_path_length(task, seed, fast=False)
