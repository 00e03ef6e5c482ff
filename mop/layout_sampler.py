"""Cheaper BabyAI level generation with the same layout for every seed (bit-identical to minigrid).

minigrid generates a BabyAI layout by rejection: `RoomGridLevel._gen_grid` builds a whole layout,
and `check_objs_reachable` (or `validate_instrs`) rejects it, ~3.3 attempts per reset on Unlock.
Skipping or reordering an attempt's random draws would change which layout a seed gives (and so
what an evaluation seed means), so nothing here changes what is drawn or in which order; it makes
the Python around the draws cheaper, answer for answer:

- `check_objs_reachable`: the agent's connected region of empty cells and doors found with
  scipy.ndimage.label on a code array, grown by one cell (the blocking cells the flood fill enters);
  an object outside it is unreachable, as in minigrid's flood fill;
- `place_obj`: minigrid's loop, with the agent-position test on plain ints (np.array_equal per try
  was ~5% of a reset) and the grid read from its list;
- `_rand_int`, `_rand_bool`, `_rand_elem`: the same Generator calls, without gymnasium's property.

`install(env)` (mop.babyai_env.make_env, with fast=True) binds these on one env instance.
tests/test_layout_sampler.py checks that seeds give identical layouts (grid encoding, agent
position and direction, mission) with and without it on several levels.

    env = layout_sampler.install(gym.make("BabyAI-Unlock-v0").unwrapped)
    python bench/collection.py     # or: the per-reset ratio command in docs/speed.md
"""

from __future__ import annotations

import math
import types
from typing import Any

import numpy as np
from minigrid.envs.babyai.core.roomgrid_level import RejectSampling
from scipy import ndimage

_CROSS = ndimage.generate_binary_structure(2, 1)


def _code(cell: Any) -> int:
    if cell is None:
        return 0
    t = cell.type
    return 1 if t == "door" else 2 if t == "wall" else 3


def check_objs_reachable(env: Any, raise_exc: bool = True) -> bool:
    """minigrid's RoomGridLevel.check_objs_reachable: every object (door included) can be reached
    from the agent through empty cells and doors; else RejectSampling (or False)."""
    grid = env.grid
    w, h = grid.width, grid.height
    codes = np.fromiter(map(_code, grid.grid), np.int8, w * h).reshape(h, w)  # (y, x)
    ai, aj = int(env.agent_pos[0]), int(env.agent_pos[1])
    if codes[aj, ai] >= 2:  # the agent on a blocking cell: only that cell is reached
        region = np.zeros((h, w), bool)
        region[aj, ai] = True
    else:
        labels, _ = ndimage.label(codes <= 1, structure=_CROSS)
        region = ndimage.binary_dilation(labels == labels[aj, ai], structure=_CROSS)
    unreachable = np.argwhere(((codes == 1) | (codes == 3)) & ~region)
    if len(unreachable) == 0:
        return True
    if not raise_exc:
        return False
    x, y = min((int(x), int(y)) for y, x in unreachable)  # minigrid scans x, then y
    raise RejectSampling("unreachable object at " + str((x, y)))


def place_obj(
    env: Any, obj: Any, top: Any = None, size: Any = None, reject_fn: Any = None, max_tries: float = math.inf
) -> tuple[int, int]:
    """MiniGridEnv.place_obj: the same draws, tests and order."""
    top = (0, 0) if top is None else (max(top[0], 0), max(top[1], 0))
    grid = env.grid
    width, height = grid.width, grid.height
    if size is None:
        size = (width, height)
    integers = (env._np_random or env.np_random).integers
    x_high, y_high = min(top[0] + size[0], width), min(top[1] + size[1], height)
    agent = env.agent_pos
    ax, ay = (None, None) if agent is None else (int(agent[0]), int(agent[1]))
    cells = grid.grid
    num_tries = 0
    while True:
        if num_tries > max_tries:
            raise RecursionError("rejection sampling failed in place_obj")
        num_tries += 1
        pos = (integers(top[0], x_high), integers(top[1], y_high))
        if cells[pos[1] * width + pos[0]] is not None:
            continue
        if pos[0] == ax and pos[1] == ay:
            continue
        if reject_fn and reject_fn(env, pos):
            continue
        break
    grid.set(pos[0], pos[1], obj)
    if obj is not None:
        obj.init_pos = pos
        obj.cur_pos = pos
    return pos


def _rand_int(env: Any, low: int, high: int) -> int:
    return (env._np_random or env.np_random).integers(low, high)


def _rand_bool(env: Any) -> bool:
    return (env._np_random or env.np_random).integers(0, 2) == 0


def _rand_elem(env: Any, iterable: Any) -> Any:
    lst = list(iterable)
    return lst[(env._np_random or env.np_random).integers(0, len(lst))]


def install(env: Any) -> Any:
    """Bind the cheaper generation on one BabyAI env instance (others are left as they are)."""
    if not hasattr(env, "check_objs_reachable"):
        return env
    for name, function in (
        ("check_objs_reachable", check_objs_reachable),
        ("place_obj", place_obj),
        ("_rand_int", _rand_int),
        ("_rand_bool", _rand_bool),
        ("_rand_elem", _rand_elem),
    ):
        setattr(env, name, types.MethodType(function, env))
    return env
