"""mop/layout_sampler.py: the cheaper level generation gives every seed minigrid's own layout."""

from __future__ import annotations

import pytest
from minigrid.envs.babyai.core.roomgrid_level import RejectSampling

from mop import layout_sampler
from mop.babyai_env import make_env, quiet_reset


def layout(env) -> tuple:
    return (
        env.grid.encode().tobytes(),
        tuple(int(v) for v in env.agent_pos),
        int(env.agent_dir),
        env.mission,
    )


@pytest.mark.parametrize(
    "task, seeds",
    [
        ("BabyAI-Unlock-v0", 150),  # ~3.3 generation attempts per reset: ~500 layouts, rejections exercised
        ("BabyAI-GoToImpUnlock-v0", 100),
        ("BabyAI-Synth-v0", 150),
        ("BabyAI-GoToLocal-v0", 300),
        ("BabyAI-PutNextLocal-v0", 200),
    ],
)
@pytest.mark.slow
def test_every_seed_gives_minigrids_layout(task, seeds):
    plain = make_env(task, fast=False)  # minigrid's own generation
    cheap = layout_sampler.install(make_env(task, fast=False))
    assert cheap.check_objs_reachable.__func__ is layout_sampler.check_objs_reachable
    for seed in range(seeds):
        quiet_reset(plain, seed)
        quiet_reset(cheap, seed)
        assert layout(cheap) == layout(plain), f"{task} seed {seed}"


def test_make_env_installs_it_and_reachability_answers_as_minigrid():
    env = make_env("BabyAI-Unlock-v0")
    assert env.place_obj.__func__ is layout_sampler.place_obj
    quiet_reset(env, 3)
    assert env.check_objs_reachable() is True
    # wall the agent in: every object is now unreachable, as minigrid's flood fill finds
    from minigrid.core.world_object import Wall

    x, y = (int(v) for v in env.agent_pos)
    for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        env.grid.set(x + dx, y + dy, Wall())
    plain = make_env("BabyAI-Unlock-v0", fast=False)
    quiet_reset(plain, 3)
    plain.grid = env.grid
    assert plain.check_objs_reachable(raise_exc=False) is False
    assert env.check_objs_reachable(raise_exc=False) is False
    with pytest.raises(RejectSampling) as mine:
        env.check_objs_reachable()
    with pytest.raises(RejectSampling) as theirs:
        plain.check_objs_reachable()
    assert str(mine.value) == str(theirs.value)
