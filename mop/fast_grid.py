"""minigrid's agent view and BabyAI bot search on arrays, bit-identical to minigrid 3.2.0.

minigrid builds the 7x7 agent view per step cell by cell in Python (`Grid.slice`, `rotate_left`
twice to five times, `process_vis`, `encode`), and its BabyAI bot runs a Python breadth-first
search over the grid several times per label (`_find_obj_pos` once per candidate object, then
again to walk there). Together they are most of the collection time. Here:

- `FastView`, installed on one env instance, keeps an encoding of the whole grid (padded with
  walls, as `Grid.slice` pads) in step with the grid, and serves `env.gen_obs()` from it with one
  gather and a row-by-row visibility table. In a minigrid step the grid changes only through
  pickup, drop and toggle (a door opens or unlocks, a box turns into its contents), always in the
  cell in front of the agent, which does not move in those steps; so re-encoding that one cell
  before each view keeps the encoding exact, and a new `env.grid` (a reset) is encoded whole.
- `FastBot`, a `BabyAIBot` whose `_shortest_path` and `_find_obj_pos` share one lazily advanced
  search per replan (minigrid restarts the same search for every query) on flat lists built from
  that encoding, visiting cells in minigrid's exact order so that every path, every tie and hence
  every label is the same.

tests/test_fast_env.py checks both against minigrid's own `gen_obs`, `gen_obs_grid` and
`BabyAIBot.replan` at every step of long random and bot-driven runs on twelve levels.

`install(env)` also swaps in an exact, faster `check_objs_reachable` for level generation.

Example:
    env = fast_grid.install(gym.make("BabyAI-GoToLocal-v0").unwrapped)   # what make_env does
    env.reset(seed=0); bot = FastBot(env); action = bot.replan(None)
    python -m pytest tests/test_fast_env.py; python bench/collection.py
"""

from __future__ import annotations

import types
from functools import lru_cache
from typing import Any

import numpy as np
from minigrid.core.constants import COLOR_TO_IDX, DIR_TO_VEC, OBJECT_TO_IDX
from minigrid.envs.babyai.core.roomgrid_level import RejectSampling
from minigrid.utils.baby_ai_bot import BabyAIBot, ExploreSubgoal, GoNextToSubgoal

_EMPTY = (OBJECT_TO_IDX["empty"], 0, 0)
_WALL = (OBJECT_TO_IDX["wall"], COLOR_TO_IDX["grey"], 0)  # what Grid.slice puts outside the grid
_WALL_IDX, _DOOR_IDX = OBJECT_TO_IDX["wall"], OBJECT_TO_IDX["door"]
MAX_VIEW_SIZE = 9  # the visibility table has 4**view_size entries
_DIRS = [tuple(int(c) for c in v) for v in DIR_TO_VEC]  # agent_dir -> (dx, dy)


def _encode(obj: Any) -> tuple[int, int, int]:
    return _EMPTY if obj is None else obj.encode()


def _rotate_left(a: np.ndarray) -> np.ndarray:
    """minigrid's Grid.rotate_left on an (x, y, ...) array: new[y, W-1-x] = old[x, y]."""
    return a.swapaxes(0, 1)[:, ::-1]


@lru_cache
def _view_offsets(view_size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per agent direction, world offsets (dx, dy) of every view cell [x, y] from the agent:
    minigrid's get_view_exts slice, rotated left agent_dir + 1 times, as in gen_obs_grid."""
    v, half = view_size, view_size // 2
    tops = [(0, -half), (-half, 0), (-v + 1, -half), (-half, -v + 1)]
    out = []
    for d, (tx, ty) in enumerate(tops):
        xs, ys = np.meshgrid(np.arange(v) + tx, np.arange(v) + ty, indexing="ij")
        for _ in range(d + 1):
            xs, ys = _rotate_left(xs), _rotate_left(ys)
        out.append((np.ascontiguousarray(xs), np.ascontiguousarray(ys)))
    return out


@lru_cache
def _visibility_table(view_size: int) -> tuple[list[int], list[int]]:
    """Grid.process_vis one view row at a time: for (mask bits of the row on entry, see-behind bits
    of the row) -> (the row's final mask bits, the bits it marks in the row above). minigrid sweeps
    each row left to right, then right to left, rows from the agent's upwards; a row's result
    depends only on those two bit sets, so the whole 2-D sweep is one lookup per row."""
    v = view_size
    codes = np.arange(1 << (2 * v))
    bits = (codes[:, None] >> np.arange(2 * v)) & 1
    mask, see = bits[:, v:].astype(bool), bits[:, :v].astype(bool)
    above = np.zeros_like(mask)
    for i in range(v - 1):
        step = mask[:, i] & see[:, i]
        mask[:, i + 1] |= step
        above[:, i + 1] |= step
        above[:, i] |= step
    for i in range(v - 1, 0, -1):
        step = mask[:, i] & see[:, i]
        mask[:, i - 1] |= step
        above[:, i - 1] |= step
        above[:, i] |= step
    weights = 1 << np.arange(v)
    return (mask @ weights).tolist(), (above @ weights).tolist()


class FastView:
    """The agent view of one env from a full-grid encoding kept in step with the grid.

    `FastView.install(env)` (idempotent) replaces `env.gen_obs` on that instance; `visibility()`
    is `env.gen_obs_grid()[1]` for the current state, computed once per state. `gen_obs_grid`
    itself stays minigrid's (its Grid object is only needed for rendering)."""

    def __init__(self, env: Any):
        self.env = env
        self.view_size = v = env.agent_view_size
        if not 1 <= v <= MAX_VIEW_SIZE or v % 2 == 0:
            raise ValueError(f"FastView supports odd view sizes up to {MAX_VIEW_SIZE}, got {v}")
        self.offsets = _view_offsets(v)
        self.row_mask, self.row_above = _visibility_table(v)
        self.row_bits = ((np.arange(1 << v)[:, None] >> np.arange(v)) & 1).astype(bool)  # (2**v, v)
        self.weights = 1 << np.arange(v)
        self.grid: Any = None  # the env.grid the encoding describes
        self.width = self.height = -1
        self.version = 0  # bumped whenever the encoding changes
        self._vis_key: tuple | None = None
        self._vis: np.ndarray | None = None
        self._passable: dict[bool, tuple] = {}

    @classmethod
    def install(cls, env: Any) -> FastView:
        view = env.__dict__.get("_fast_view")
        if view is None:
            view = cls(env)
            env._fast_view = view
            env.gen_obs = view.gen_obs
        return view

    # -- the full-grid encoding

    def refresh(self) -> None:
        """Re-encode the whole grid at the next view: call after changing env.grid other than by
        env.step or env.reset (tests that place objects by hand)."""
        self.grid = None

    def _encode_all(self) -> None:
        grid, v = self.env.grid, self.view_size
        w, h = grid.width, grid.height
        if (w, h) != (self.width, self.height):
            self.width, self.height = w, h
            self.padded_height = hp = h + 2 * v
            # flat index into the padded (x, y) array of every view cell, per agent direction
            self.flat_offsets = [xs * hp + ys for xs, ys in self.offsets]
        self.codes = [_encode(o) for o in grid.grid]  # minigrid's order: index y * width + x
        padded = np.empty((w + 2 * v, h + 2 * v, 3), np.uint8)
        padded[:] = _WALL
        padded[v : v + w, v : v + h] = np.array(self.codes, np.uint8).reshape(h, w, 3).swapaxes(0, 1)
        self.flat = padded.reshape(-1, 3)  # a view: writes reach `padded`
        self.see = _sees_behind(self.flat)
        self.encoding = padded[v : v + w, v : v + h]  # (W, H, 3), as Grid.encode() returns
        self.grid = grid
        self.version += 1

    def sync(self) -> None:
        """Bring the encoding up to date with env.grid (see the module docstring for why the cell
        in front of the agent is the only one a step can change)."""
        env = self.env
        if env.grid is not self.grid:
            self._encode_all()
            return
        dx, dy = _DIRS[env.agent_dir]
        x, y = env.agent_pos[0] + dx, env.agent_pos[1] + dy
        if 0 <= x < self.width and 0 <= y < self.height:
            k = y * self.width + x
            code = _encode(self.grid.grid[k])
            if code != self.codes[k]:
                self.codes[k] = code
                f = (x + self.view_size) * self.padded_height + y + self.view_size
                self.flat[f] = code
                self.see[f] = _sees_behind(self.flat[f : f + 1])[0]
                self.version += 1

    def passable(self, ignore_blockers: bool) -> tuple[np.ndarray, bool]:
        """(W, H) cells minigrid's bot search may expand from, visibility aside, and whether any
        of them lies on the grid's edge: empty cells and open doors, or with ignore_blockers every
        cell but walls and closed doors."""
        cached = self._passable.get(ignore_blockers)
        if cached is not None and cached[0] == self.version:
            return cached[1], cached[2]
        obj, state = self.encoding[..., 0], self.encoding[..., 2]
        door_open = (obj == _DOOR_IDX) & (state == 0)
        if ignore_blockers:
            passable = (obj != _WALL_IDX) & ((obj != _DOOR_IDX) | door_open)
        else:
            passable = (obj == OBJECT_TO_IDX["empty"]) | door_open
        edge = bool(passable[0].any() or passable[-1].any() or passable[:, 0].any() or passable[:, -1].any())
        self._passable[ignore_blockers] = (self.version, passable, edge)
        return passable, edge

    # -- the view

    def _view(self) -> tuple[np.ndarray, np.ndarray]:
        """(codes (V, V, 3) of the rotated slice, visibility (V, V)) for the current state."""
        env, v = self.env, self.view_size
        base = (int(env.agent_pos[0]) + v) * self.padded_height + int(env.agent_pos[1]) + v
        index = self.flat_offsets[env.agent_dir] + base  # (V, V)
        codes = self.flat[index]  # (V, V, 3), a copy
        see_rows = (self.weights @ self.see[index]).tolist()  # per view row y: bit x if (x, y) sees behind
        rows = [0] * v
        mask = 1 << (v // 2)  # the agent's cell, bottom row
        table_mask, table_above = self.row_mask, self.row_above
        for y in range(v - 1, -1, -1):
            k = (mask << v) | see_rows[y]
            rows[y] = table_mask[k]
            mask = table_above[k]
        vis = self.row_bits[rows].T  # (V, V) indexed [x, y]
        return codes, vis

    def _key(self) -> tuple:
        env = self.env
        return (self.version, env.agent_pos[0], env.agent_pos[1], env.agent_dir)

    def visibility(self) -> np.ndarray:
        """minigrid's gen_obs_grid()[1] for the current state (do not modify it)."""
        self.sync()
        key = self._key()
        if key != self._vis_key:
            self._vis = self._view()[1]
            self._vis_key = key
        return self._vis

    def gen_obs(self) -> dict:
        """minigrid's MiniGridEnv.gen_obs(), from the encoding."""
        env, v = self.env, self.view_size
        self.sync()
        codes, vis = self._view()
        self._vis, self._vis_key = vis, self._key()
        codes[~vis] = 0
        codes[v // 2, v - 1] = _encode(env.carrying) if env.carrying else _EMPTY
        return {"image": codes, "direction": env.agent_dir, "mission": env.mission}


def _sees_behind(codes: np.ndarray) -> np.ndarray:
    """WorldObj.see_behind() of encoded cells (..., 3): walls and closed doors block the view."""
    obj = codes[..., 0]
    return (obj != _WALL_IDX) & ((obj != _DOOR_IDX) | (codes[..., 2] == 0))


def install(env: Any) -> Any:
    """Make one env instance fast: its observations from FastView and, on BabyAI levels, the
    reachability check of level generation (run up to ~10 times per reset) without minigrid's
    per-cell asserts and tuple sets; same answers, same RNG use, so the same layouts."""
    FastView.install(env)
    if hasattr(env, "check_objs_reachable"):  # a bound method (not a closure), so copies of env rebind it
        env.check_objs_reachable = types.MethodType(check_objs_reachable, env)
    return env


def check_objs_reachable(env: Any, raise_exc: bool = True) -> bool:
    """minigrid's RoomGridLevel.check_objs_reachable: every object can be reached from the agent
    through empty cells and doors (locked or not); else RejectSampling (or False)."""
    grid = env.grid
    w, h, cells = grid.width, grid.height, grid.grid
    reachable = bytearray(w * h)
    stack = [tuple(env.agent_pos)]
    while stack:
        i, j = stack.pop()
        if i < 0 or i >= w or j < 0 or j >= h:
            continue
        k = j * w + i
        if reachable[k]:
            continue
        reachable[k] = 1
        cell = cells[k]
        if cell is not None and cell.type != "door":
            continue
        stack += ((i + 1, j), (i - 1, j), (i, j + 1), (i, j - 1))
    unreachable = [
        (k % w, k // w)
        for k, cell in enumerate(cells)
        if cell is not None and cell.type != "wall" and not reachable[k]
    ]
    if not unreachable:
        return True
    if not raise_exc:
        return False
    raise RejectSampling("unreachable object at " + str(min(unreachable)))  # minigrid scans x, then y


# ----------------------------------------------------------------------------- the bot's search


def _closures(function: Any, freevars: tuple[str, ...]) -> set:
    return {
        c
        for c in function.__code__.co_consts
        if hasattr(c, "co_freevars") and c.co_name == "<lambda>" and c.co_freevars == freevars
    }


# The predicates minigrid's subgoals pass to _shortest_path on the hot path, recognised by their code
# objects so that they can be answered from arrays: `pos == target_pos` (GoNextToSubgoal) and
# `not self.bot.vis_mask[pos]` (ExploreSubgoal). Any other predicate is called cell by cell.
_GOTO_CODES = _closures(GoNextToSubgoal.replan_before_action, ("target_pos",))
_UNSEEN_CODES = _closures(ExploreSubgoal.replan_before_action, ("self",))
assert len(_GOTO_CODES) == 2 and len(_UNSEEN_CODES) == 1, "minigrid's bot changed: check FastBot"

# Neighbour order of minigrid's _breadth_first_search for a state entered moving (di, dj):
# [(di, dj), (dj, di), (-dj, -di), (-di, -dj)], as direction indices into DIR_TO_VEC.
_NEXT_DIRS = [[_DIRS.index(n) for n in ((di, dj), (dj, di), (-dj, -di), (-di, -dj))] for di, dj in _DIRS]
_STEPS: dict[int, list] = {}  # grid height -> per direction [(flat offset, direction)] in that order


class _Search:
    """minigrid's breadth-first search from fixed start states over a fixed map, advanced only as
    far as queries need and shared by all of them. Cells are flat indices x * height + y.

    minigrid queues every neighbour and skips a cell popped a second time; its queue is FIFO, so
    a cell's first pop is its first push, and marking cells when first pushed (textbook BFS) visits
    the same cells in the same order with the same predecessors, with a quarter of the queue."""

    __slots__ = ("expand", "height", "steps", "seen", "prev", "dirs", "order", "head")

    def __init__(self, expand: list, height: int, starts: list[tuple[int, int]]):
        self.expand, self.height = expand, height
        if height not in _STEPS:
            _STEPS[height] = [
                [(_DIRS[n][0] * height + _DIRS[n][1], n) for n in nexts] for nexts in _NEXT_DIRS
            ]
        self.steps = _STEPS[height]
        self.seen = bytearray(len(expand) + 1)  # the extra cell is never queued: a stop for _run
        self.prev = [-1] * len(expand)
        self.dirs = bytearray(len(expand))
        self.order: list[int] = []  # cells in the order minigrid's search visits them
        for c, d in starts:
            if not self.seen[c]:
                self.seen[c], self.dirs[c] = 1, d
                self.order.append(c)
        self.head = 0  # order[:head] have been expanded

    def _run(self, stop: int, limit: int) -> None:
        """Expand cells in visiting order until `stop` is queued, `limit` cells are queued, or the
        search is exhausted."""
        seen, prev, dirs, order, expand, steps = (
            self.seen,
            self.prev,
            self.dirs,
            self.order,
            self.expand,
            self.steps,
        )
        head = self.head
        while head < len(order) and len(order) < limit:
            c = order[head]
            head += 1
            if expand[c]:
                for delta, d in steps[dirs[c]]:
                    n = c + delta
                    if not seen[n]:
                        seen[n], prev[n], dirs[n] = 1, c, d
                        order.append(n)
                if seen[stop]:
                    break
        self.head = head

    def find(self, cell: int) -> bool:
        """Whether the search reaches `cell` (advancing it as far as needed)."""
        if not self.seen[cell]:
            self._run(cell, len(self.expand) + 1)
        return bool(self.seen[cell])

    def exhaust(self) -> list[int]:
        self._run(len(self.expand), len(self.expand) + 1)
        return self.order

    def first(self, accept: Any) -> int:
        """The first visited cell c with accept(c) (advancing as needed); -1 if none."""
        k, order = 0, self.order
        while True:
            if k == len(order):
                self._run(len(self.expand), k + 1)
                if k == len(order):
                    return -1
            c = order[k]
            if accept(c):
                return c
            k += 1

    def path(self, cell: int) -> list[tuple[int, int]]:
        """minigrid's path: from `cell` back to a start state, as (x, y) positions."""
        h, prev, out = self.height, self.prev, []
        while cell >= 0:
            out.append(divmod(cell, h))
            cell = prev[cell]
        return out


_NOT_BUILT = object()


class FastBot(BabyAIBot):
    """minigrid's BabyAIBot with its view read from `FastView` and its searches on arrays.

    Same plans and labels as BabyAIBot (tests/test_fast_env.py); only `_process_obs`,
    `_shortest_path` and `_find_obj_pos` are replaced, each keeping minigrid's visiting order."""

    def __init__(self, mission: Any):
        super().__init__(mission)
        self.view = FastView.install(mission.unwrapped)
        v = self.view.view_size
        w, h = self.vis_mask.shape
        # vis_mask inside a margin of one view, so that marking seen cells needs no bounds checks
        self._vis_padded = np.zeros((w + 2 * v, h + 2 * v), bool)
        self._vis_flat = self._vis_padded.reshape(-1)
        self.vis_mask = self._vis_padded[v : v + w, v : v + h]
        self._searches: dict[bool, _Search | None] = {}

    def _process_obs(self) -> None:
        """minigrid's: mark the cells of the agent's view that it sees."""
        env, view = self.mission.unwrapped, self.view
        vis = view.visibility()
        v = view.view_size
        base = (int(env.agent_pos[0]) + v) * view.padded_height + int(env.agent_pos[1]) + v
        self._vis_flat[view.flat_offsets[env.agent_dir][vis] + base] = True
        self._searches = {}  # the map changed: searches of the previous replan are stale

    # -- searches

    def _search(self, ignore_blockers: bool) -> _Search | None:
        """This replan's search (None: a cell on the grid's edge could be expanded, which minigrid
        would answer with an IndexError or AssertionError; the caller then runs minigrid's code)."""
        search = self._searches.get(ignore_blockers, _NOT_BUILT)
        if search is not _NOT_BUILT:
            return search
        passable, edge = self.view.passable(ignore_blockers)
        expand = self.vis_mask & passable
        if edge and (expand[0].any() or expand[-1].any() or expand[:, 0].any() or expand[:, -1].any()):
            self._searches[ignore_blockers] = None
            return None
        h = expand.shape[1]
        if ignore_blockers:  # minigrid restarts from every cell the first search visited, facing +x
            first = self._search(False)
            if first is None:
                return None
            starts = [(c, 0) for c in first.exhaust()]
        else:
            env = self.mission.unwrapped
            starts = [(int(env.agent_pos[0]) * h + int(env.agent_pos[1]), env.agent_dir)]
        search = _Search(expand.ravel().tolist(), h, starts)
        self._searches[ignore_blockers] = search
        return search

    def _predicate(self, accept_fn: Any) -> Any:
        """accept_fn as a query: a flat cell for `pos == target`, None when no cell can match,
        else a test on flat cells (from arrays where recognised, else minigrid's own call)."""
        code = getattr(accept_fn, "__code__", None)
        if code in _GOTO_CODES:
            return self._target(accept_fn.__closure__[0].cell_contents, accept_fn)
        if code in _UNSEEN_CODES and accept_fn.__closure__[0].cell_contents.bot is self:
            vis = self.vis_mask.ravel().tolist()
            return lambda c: not vis[c]
        return self._call(accept_fn)

    def _target(self, target: Any, accept_fn: Any) -> Any:
        """The query `pos == target`: a flat cell when target is an (x, y) tuple of integers."""
        if isinstance(target, tuple) and len(target) == 2:
            x, y = target
            if isinstance(x, (int, np.integer)) and isinstance(y, (int, np.integer)):
                w, h = self.vis_mask.shape
                return int(x) * h + int(y) if 0 <= x < w and 0 <= y < h else None
        return self._call(accept_fn)  # whatever `==` then does (numpy arrays raise), minigrid does too

    def _call(self, accept_fn: Any) -> Any:
        grid = self.mission.unwrapped.grid.grid
        w, h = self.vis_mask.shape

        def accept(c: int) -> bool:
            x, y = divmod(c, h)
            return accept_fn((x, y), grid[y * w + x])

        return accept

    def _query(self, search: _Search, predicate: Any) -> int:
        if predicate is None:
            search.exhaust()
            return -1
        if isinstance(predicate, int):
            return predicate if search.find(predicate) else -1
        return search.first(predicate)

    def _shortest_path(self, accept_fn: Any, try_with_blockers: bool = False) -> tuple:
        return self._shortest_path_to(self._predicate(accept_fn), try_with_blockers, accept_fn)

    def _shortest_path_to(self, predicate: Any, try_with_blockers: bool, accept_fn: Any) -> tuple:
        """minigrid's _shortest_path (same path, finish and with_blockers) for a predicate from
        `_predicate`; accept_fn is only used when minigrid's own code must run."""
        first = self._search(False)
        if first is None:
            return BabyAIBot._shortest_path(self, accept_fn, try_with_blockers)
        path = finish = None
        with_blockers = False
        found = self._query(first, predicate)
        if found >= 0:
            path = first.path(found)
            finish = path[0]
        elif try_with_blockers:
            with_blockers = True
            second = self._search(True)
            if second is None:
                return BabyAIBot._shortest_path(self, accept_fn, try_with_blockers)
            found = self._query(second, predicate)
            if found >= 0:
                path = second.path(found)
                finish = path[0]
                x, y = path[-1]
                path = path + first.path(x * first.height + y)[1:]
        if path:
            path = path[::-1][1:]
        return path, finish, with_blockers

    def _find_obj_pos(self, obj_desc: Any, adjacent: bool = False) -> tuple:
        """minigrid's _find_obj_pos, line for line, with the path query answered from arrays."""
        assert len(obj_desc.obj_set) > 0
        best_distance_to_obj = 999
        best_pos = None
        best_obj = None
        env = self.mission.unwrapped
        for i in range(len(obj_desc.obj_set)):
            if obj_desc.obj_set[i].type == "wall":
                continue
            try:
                if obj_desc.obj_set[i] == env.carrying:
                    continue
                obj_pos = obj_desc.obj_poss[i]
                if self.vis_mask[obj_pos]:
                    accept_fn = lambda pos, cell, obj_pos=obj_pos: pos == obj_pos  # noqa: E731 (for fallbacks)
                    shortest_path_to_obj, _, with_blockers = self._shortest_path_to(
                        self._target(obj_pos, accept_fn), True, accept_fn
                    )
                    assert shortest_path_to_obj is not None
                    distance_to_obj = len(shortest_path_to_obj)
                    if with_blockers:
                        distance_to_obj = len(shortest_path_to_obj) + (7 if env.carrying else 4)
                    if distance_to_obj == 0:
                        distance_to_obj = 3 if adjacent else 2
                    if distance_to_obj < best_distance_to_obj:
                        best_distance_to_obj = distance_to_obj
                        best_pos = obj_pos
                        best_obj = obj_desc.obj_set[i]
            except IndexError:
                pass
        return best_obj, best_pos
