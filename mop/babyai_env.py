"""BabyAI environments: construction, seeds, observation encoding, the bot wrapper and its failure
handling, and the layout/phase knowledge of a level (targets, doors, phase times, start context).

Everything that training, evaluation and the analyses must agree on about the env lives here, once.
It knows nothing of the policy (the acting loop is collection.py):
- `make_env(task_id, max_steps, fast)`: a minigrid level, with the UnlockPickup episode-limit typo
  fixed; fast (the default) serves its observations from fast_grid.FastView (identical, ~10x faster)
  and generates levels with layout_sampler (the same layout per seed, ~1.25x cheaper on Unlock);
- seed ranges: training episodes draw layouts from `train_episode_seed(...)` (>= 10**9), evaluation
  from `EVAL_SEED_START + k` (< 10**6), bot demos from `demo_episode_seed(...)` (5*10**8 .. 10**9),
  so no evaluation layout is ever trained on and demos never overlap either;
- multi-task runs (task_id "A,B,C"): `check_task_ids` checks the levels, `env_levels` says which
  level each training env index runs (by --task_weights, deterministic);
- `encode_obs`: the policy input, "raw" (the earlier system's 152 numbers) or "onehot" (per image channel);
- `SafeBot`: minigrid's `BabyAIBot` (fast: fast_grid.FastBot, same labels) with a bounded subgoal
  stack and a watchdog, so a bot that raises or would loop forever reports a failure instead of
  crashing or hanging the run;
- `env_context` / `PhaseTracker`: the start layout of an episode and its phase events (door opened,
  first pickup, first drop) and distances (key, the mission's first target), as the routing cache
  records them.

Example:
    env = make_env("BabyAI-GoToLocal-v0"); obs = quiet_reset(env, EVAL_SEED_START)
    bot = SafeBot(env); action = bot.label(None)
"""

from __future__ import annotations

import contextlib
import io
import math
import signal
import threading
from collections import deque
from typing import TYPE_CHECKING, Any, NamedTuple

import gymnasium as gym
import minigrid  # noqa: F401  (registers the BabyAI-* ids with gymnasium)
import numpy as np
from minigrid.core.actions import Actions
from minigrid.core.constants import COLOR_TO_IDX
from minigrid.utils.baby_ai_bot import BabyAIBot, DropSubgoal, GoNextToSubgoal, PickupSubgoal, Subgoal

from mop import fast_grid, layout_sampler
from mop.fast_grid import FastBot
from mop.level_names import (  # noqa: F401  (re-exported: the env's callers import them from here)
    BOT_REVISION,
    BOT_REVISIONS,
    CHANNEL_SIZES,
    LEVEL_TABLE,
    OBS_ENCODINGS,
    SUBGOAL_KINDS,
    babyai_task_ids,
    check_task_id,
    check_task_ids,
    env_levels,
    obs_dim,
)

if TYPE_CHECKING:  # torch is imported where a tensor is made: drawing a level needs none
    import torch

# ----------------------------------------------------------------------------- tasks and seeds

EVAL_SEED_START = 0  # evaluation layouts: EVAL_SEED_START + episode index, always < TRAIN_SEED_START
TRAIN_SEED_START = 10**9
# Validation layouts (bench/levels.py --select_episodes, BabyAI's model selection): evaluation
# episodes VALIDATION_START + k, far above any reported evaluation's 0..N-1, so the checkpoint a run
# keeps is chosen on layouts its reported success never plays.
VALIDATION_START = 900_000
_TRAIN_ENV_STRIDE = 10**7  # episodes one training env may run before colliding with the next env
_TRAIN_RUN_STRIDE = 10**10  # per run seed: room for 1000 envs
# Bot demos for offline imitation (demos.py): DEMO_SEED_START + demo_seed * DEMO_SET_STRIDE + k,
# between the evaluation seeds (< 10**6, eval_mop's limit) and the training seeds (>= 10**9).
DEMO_SEED_START = 5 * 10**8
DEMO_SET_STRIDE = 10**7  # demos per demo set
DEMO_SETS = (TRAIN_SEED_START - DEMO_SEED_START) // DEMO_SET_STRIDE  # 50 disjoint demo sets

# minigrid 3.2.0 UnlockPickup tests `if max is None` instead of `max_steps`, so its intended default
# (8 * room_size**2 = 288) is never set and RoomGridLevel falls back to 72 steps.
_UPSTREAM_MAX_STEPS_FIX = {"BabyAI-UnlockPickup-v0": 288, "BabyAI-UnlockPickupDist-v0": 288}


def make_env(task_id: str, max_steps: int | None = None, fast: bool = True) -> Any:
    """A minigrid BabyAI level (unwrapped: we call the bot and read the grid directly).

    max_steps None means the level's own limit (with the UnlockPickup typo fixed). fast: observations
    from fast_grid.FastView (equal to minigrid's own gen_obs) and level generation by layout_sampler
    (the same layout per seed); False: minigrid's own code."""
    check_task_id(task_id)
    if max_steps is None:
        max_steps = _UPSTREAM_MAX_STEPS_FIX.get(task_id)
    kwargs = {} if max_steps is None else {"max_steps": int(max_steps)}
    env = gym.make(task_id, **kwargs).unwrapped
    if fast:
        fast_grid.install(env)
        layout_sampler.install(env)  # cheaper level generation, the same layout per seed
    return env


class RoomLayout(NamedTuple):
    """The room grid of a level (minigrid's RoomGrid; a one-room level is 1 x 1)."""

    room_size: int
    num_rows: int
    num_cols: int

    @classmethod
    def of(cls, env: Any) -> RoomLayout:
        env = getattr(env, "unwrapped", env)
        rows, cols = int(getattr(env, "num_rows", 1)), int(getattr(env, "num_cols", 1))
        return cls(int(getattr(env, "room_size", max(env.width, env.height))), rows, cols)

    @property
    def num_rooms(self) -> int:
        return self.num_rows * self.num_cols

    def room_of(self, x: int, y: int) -> int:
        """Room index (row-major) of cell (x, y), as RoomGrid.room_from_pos (a doorway belongs to
        the room on its right / below). Plain ints: the collector calls it for every env and step."""
        step = self.room_size - 1
        return min(int(y) // step, self.num_rows - 1) * self.num_cols + min(int(x) // step, self.num_cols - 1)


MAX_ROOMS = 31  # rooms a visited-rooms bitmask (int32, -1 = unknown) can hold


def train_episode_seed(run_seed: int, env_index: int, episode_index: int) -> int:
    """Layout seed of training env `env_index`'s `episode_index`-th episode; never an eval seed."""
    if not 0 <= env_index < _TRAIN_RUN_STRIDE // _TRAIN_ENV_STRIDE:
        raise ValueError(f"env_index {env_index} out of range")
    episode_index %= _TRAIN_ENV_STRIDE
    return TRAIN_SEED_START + run_seed * _TRAIN_RUN_STRIDE + env_index * _TRAIN_ENV_STRIDE + episode_index


def demo_episode_seed(demo_seed: int, index: int) -> int:
    """Layout seed of the `index`-th candidate demo of demo set `demo_seed`; never a training or an
    evaluation seed."""
    if not 0 <= demo_seed < DEMO_SETS:
        raise ValueError(f"demo_seed must be in [0, {DEMO_SETS - 1}], got {demo_seed}")
    if not 0 <= index < DEMO_SET_STRIDE:
        raise ValueError(f"demo index {index} out of range (at most {DEMO_SET_STRIDE} per demo set)")
    return DEMO_SEED_START + demo_seed * DEMO_SET_STRIDE + index


def render_layout(
    task_id: str, seed: int, max_steps: int | None = None, tile_size: int = 24
) -> tuple[np.ndarray, str]:
    """minigrid's own picture (RGB array, no view highlight) of the start layout of `seed`, and
    its mission: the level image beside routing heatmaps (one tile per grid cell)."""
    env = make_env(task_id, max_steps)
    obs = quiet_reset(env, seed)
    return env.get_frame(highlight=False, tile_size=tile_size), obs["mission"]


# ----------------------------------------------------------------------------- observations


def encode_obs(
    image: torch.Tensor, direction: torch.Tensor, carrying: torch.Tensor, encoding: str
) -> torch.Tensor:
    """image (..., 7, 7, 3) uint8, direction (...), carrying (...) -> float (..., obs_dim).

    raw: channel-first flattened integer codes (147) ⊕ direction one-hot (4) ⊕ carrying (1).
    onehot: each of the three channels one-hot per cell (980) ⊕ direction one-hot ⊕ carrying."""
    import torch  # here, not at the top: the notebooks draw levels without loading torch (~1 s)

    image = torch.as_tensor(image)
    lead = image.shape[:-3]
    direction_1h = torch.nn.functional.one_hot(torch.as_tensor(direction).long(), 4).float()
    carry = torch.as_tensor(carrying).float().unsqueeze(-1)
    if encoding == "raw":
        img = image.float().movedim(-1, -3).reshape(*lead, 147)  # (..., 3, 7, 7) -> (..., 147)
    elif encoding == "onehot":
        img = image.long()
        parts = [
            torch.nn.functional.one_hot(img[..., c].clamp(0, n - 1), n).float()
            for c, n in enumerate(CHANNEL_SIZES)
        ]
        img = torch.cat(parts, dim=-1).reshape(*lead, 7 * 7 * sum(CHANNEL_SIZES))
    else:
        raise ValueError(f"obs_encoding must be one of {OBS_ENCODINGS}, got {encoding!r}")
    return torch.cat([img, direction_1h, carry], dim=-1)


# ----------------------------------------------------------------------------- the bot

BOT_MAX_STACK = 100  # normal episodes stay below a depth of ~20 (measured on GoToImpUnlock)
BOT_TIMEOUT_S = 5.0  # wall-clock backstop for any other hang


class BotFailure(Exception):
    """The bot could not label this state (it raised, its plan diverged, or it timed out)."""


class _BoundedStack(list):
    # minigrid's BabyAIBot.replan loops `while self.stack` and some subgoals keep pushing new
    # subgoals (e.g. GoToImpUnlock seeds 6, 14, 35): the stack grows without end and replan never
    # returns. Bounding the stack turns that into an exception within milliseconds.
    def append(self, item: Any) -> None:
        if len(self) >= BOT_MAX_STACK:
            raise BotFailure(f"subgoal stack exceeded {BOT_MAX_STACK}")
        super().append(item)


class _BotAlarm:
    """The wall-clock backstop of SafeBot.label: a SIGALRM timer armed around each replan.

    Swapping the SIGALRM handler in and out around every label cost ~13 us in isolation
    (signal.signal wraps its handlers in enums) against ~1 us for arming the timer alone; dropping
    the swap made env + bot steps 11-24% faster (bench/collection.py, before and after). So the
    handler is installed once per process (again if someone replaced it, checked once per bot)
    and passes any SIGALRM that arrives while no replan is timed on to the handler it replaced.
    SIGALRM only works on the main thread; elsewhere (notebooks) the stack bound is the backstop."""

    def __init__(self) -> None:
        self.armed = False
        self.previous: Any = signal.SIG_DFL

    def _handle(self, signum: int, frame: Any) -> None:
        if self.armed:
            raise BotFailure(f"replan took longer than {BOT_TIMEOUT_S}s")
        if callable(self.previous):
            self.previous(signum, frame)
        elif self.previous == signal.SIG_DFL:  # what the signal would have done without us
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            signal.raise_signal(signal.SIGALRM)

    def install(self) -> bool:
        """Install the handler if it is not (main thread only); whether labels can be timed."""
        if threading.current_thread() is not threading.main_thread():
            return False
        current = signal.getsignal(signal.SIGALRM)
        if current != self._handle:
            self.previous = current
            signal.signal(signal.SIGALRM, self._handle)
        return True

    def arm(self) -> None:
        self.armed = True
        signal.setitimer(signal.ITIMER_REAL, BOT_TIMEOUT_S)

    def disarm(self) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        self.armed = False


_ALARM = _BotAlarm()


TARGET_RANGE = 31  # |ahead|, |right| a target code holds (BabyAI grids are at most 25 cells)
NO_TARGET = -128  # `target` of a step where the bot heads for no position (SafeBot.target None)


_minigrid_undo = Subgoal._plan_undo_action
WORLD_CHANGES = (Actions.pickup, Actions.drop, Actions.toggle)  # they change the grid or what is carried


def _plan_undo_action(self: Any, action_taken: Any) -> None:
    """minigrid's undo plan, unless the bot keeps the agent's changes (SafeBot undo=False): then a
    pickup, drop or toggle it did not suggest is the new state of the world, not a step to revert
    (a move it did not suggest is still walked back, to face what the subgoal acts on)."""
    if getattr(self.bot, "keep_changes", False) and int(action_taken) in WORLD_CHANGES:
        return
    _minigrid_undo(self, action_taken)


Subgoal._plan_undo_action = _plan_undo_action  # the same as minigrid's for every bot with undo

_minigrid_pickup = PickupSubgoal.replan_before_action
_minigrid_drop = DropSubgoal.replan_before_action


def _pickup_before_action(self: Any) -> Any:
    """minigrid's, unless the agent's hands are full: a student that kept its own pickup (SafeBot
    undo=False) can stand before the key the bot means to fetch holding a key of another colour,
    where minigrid's bot asserts and DAgger lost the episode's labels (GoToImpUnlock: 64% of a
    failing student's episodes 300 steps in). Then the bot puts what it holds down at a free cell
    it has seen, as its own plans do before an unlock, and comes back to face what it meant to
    pick up. Its own episodes never reach this branch: demos and labels elsewhere are minigrid's."""
    if self.carrying is None or getattr(self.bot, "revision", BOT_REVISION) < 1:
        return _minigrid_pickup(self)
    # back to face this cell: a position, not the object (one the agent once dropped has a numpy
    # cur_pos, which minigrid's own path search compares with == and fails on)
    self.bot.stack.append(GoNextToSubgoal(self.bot, tuple(int(v) for v in self.fwd_pos)))
    self.bot.stack.append(DropSubgoal(self.bot))
    self.bot.stack.append(GoNextToSubgoal(self.bot, self.bot._find_drop_pos()))
    return None


def _drop_before_action(self: Any) -> Any:
    """minigrid's, unless there is nothing to drop (the student dropped it already: the subgoal is
    done) or the cell ahead was filled since the bot chose it (drop at another free cell); minigrid's
    bot asserts in both."""
    if getattr(self.bot, "revision", BOT_REVISION) < 1:
        return _minigrid_drop(self)
    if self.carrying is None:
        self.bot.stack.pop()
        return None
    if self.fwd_cell is not None:
        self.bot.stack.append(GoNextToSubgoal(self.bot, self.bot._find_drop_pos()))
        return None
    return _minigrid_drop(self)


PickupSubgoal.replan_before_action = _pickup_before_action
DropSubgoal.replan_before_action = _drop_before_action


class SafeBot:
    """BabyAIBot that never crashes, hangs or leaks a thread: `label()` returns an action or None.

    fast: fast_grid.FastBot (minigrid's labels, its view and searches on arrays); False: BabyAIBot.
    undo: minigrid's labels on an agent that did not take the bot's action: it plans to revert a
    pickup, drop or door toggle it did not suggest (drop the object where it was found, close the
    door); False: it keeps them and plans from the world as the agent left it (--no-bot_undo).
    revision: BOT_REVISION's (0: minigrid's bot where it asserts, as runs before --bot_revision had)."""

    def __init__(self, env: Any, fast: bool = True, undo: bool = True, revision: int = BOT_REVISION):
        self.failure: str | None = None
        self.timed = _ALARM.install()
        try:
            self.bot = FastBot(env) if fast else BabyAIBot(env)
            self.bot.keep_changes = not undo
            self.bot.revision = revision
            self.bot.stack = _BoundedStack(self.bot.stack)
        except Exception as e:  # an instruction the bot cannot parse: a layout it cannot solve
            self.bot = None
            self.failure = f"{type(e).__name__}: {e}"

    def label(self, action_taken: int | None) -> int | None:
        if self.bot is None:
            return None
        timed = self.timed and threading.current_thread() is threading.main_thread()
        if timed:
            _ALARM.arm()
        try:
            return int(self.bot.replan(action_taken))
        except Exception as e:  # DisappearedBoxError, BotFailure, assertion errors inside minigrid
            self.failure = f"{type(e).__name__}: {e}"
            self.bot = None  # its internal state is unusable after a failure
            return None
        finally:
            if timed:
                _ALARM.disarm()

    def target(self) -> tuple[int, int] | None:
        """Where the bot is heading after its last replan, in the agent's frame: (cells ahead,
        cells to the right) of the position of the GoNextTo subgoal on top of its stack (an object
        named by the mission: the closest one the bot has seen, as the bot itself picks it; a
        door; a position, exploring included). None when the top is not a GoNextTo (open, pick
        up, drop: the object is in front), the bot failed, or it knows no such object (it is about
        to explore). What --aux_target_weight's head learns to read from the memory."""
        if self.bot is None or not self.bot.stack:
            return None
        top = self.bot.stack[-1]
        if type(top).__name__ != "GoNextToSubgoal" or top.datum is None:
            return None
        datum = top.datum
        if hasattr(datum, "obj_set"):  # ObjDesc: the bot's own choice among the matching objects
            pos = self.bot._find_obj_pos(datum, getattr(top, "reason", None) == "PutNext")[1]
        elif hasattr(datum, "cur_pos"):  # WorldObj
            pos = datum.cur_pos
        else:
            pos = datum
        if pos is None or int(pos[0]) < 0:
            return None
        return agent_frame(self.bot.mission.unwrapped, pos)

    def subgoal(self) -> int | None:
        """What the bot is doing after its last replan, as an index into SUBGOAL_KINDS: the kind of
        the subgoal on top of its stack, a GoNextTo told apart by what it goes to (a cell it explores
        towards; an object the mission names; another object, such as the key of a locked door; a
        door it will open, locked or not; any other cell). None when the bot failed, its stack is
        empty or its top is of a kind minigrid did not have. What --aux_subgoal_weight's head learns
        to read from the memory."""
        if self.bot is None or not self.bot.stack:
            return None
        top = self.bot.stack[-1]
        kind = type(top).__name__.removesuffix("Subgoal")
        if kind != "GoNextTo":  # a subgoal minigrid may add later: none (left out of the loss)
            return SUBGOAL_KINDS.index(_SUBGOAL_OF[kind]) if kind in _SUBGOAL_OF else None
        if top.reason == "Explore":
            return SUBGOAL_KINDS.index("explore")
        if top.reason == "Open" or getattr(top.datum, "type", None) == "door":
            locked = getattr(top.datum, "is_locked", False)
            return SUBGOAL_KINDS.index("go to locked door" if locked else "go to door")
        if hasattr(top.datum, "obj_set"):  # an ObjDesc: the mission's own, or the key of a door
            named = any(top.datum is desc for desc in mission_descs(self.bot.mission.instrs))
            return SUBGOAL_KINDS.index("go to mission object" if named else "go to other object")
        if hasattr(top.datum, "cur_pos"):  # a WorldObj other than a door: an object in the way
            return SUBGOAL_KINDS.index("go to other object")
        return SUBGOAL_KINDS.index("go to cell")


_SUBGOAL_OF = {"Open": "open", "Pickup": "pick up", "Drop": "drop", "Close": "close", "Explore": "explore"}
NO_SUBGOAL = -1  # `subgoal` of a step without one (the bot failed, padding, a store without them)


def mission_descs(instr: Any) -> list[Any]:
    """The object descriptions (ObjDesc) a BabyAI instruction names, through And/Before/After."""
    descs = [getattr(instr, k) for k in ("desc", "desc_move", "desc_fixed") if hasattr(instr, k)]
    for k in ("instr_a", "instr_b"):
        if hasattr(instr, k):
            descs += mission_descs(getattr(instr, k))
    return descs


def subgoal_code(subgoal: int | None) -> int:
    """SafeBot.subgoal as a chunk's int8: NO_SUBGOAL for none."""
    return NO_SUBGOAL if subgoal is None else int(subgoal)


def agent_frame(env: Any, pos: Any) -> tuple[int, int]:
    """Cell `pos` in the agent's frame: (cells ahead, cells to the right)."""
    dx, dy = int(pos[0]) - int(env.agent_pos[0]), int(pos[1]) - int(env.agent_pos[1])
    fx, fy = (int(v) for v in env.dir_vec)
    return dx * fx + dy * fy, dx * -fy + dy * fx  # right_vec = (-dir_y, dir_x)


def cells_in_view(env: Any, image: np.ndarray) -> set[tuple[int, int]]:
    """The world cells the agent sees in `image`, the view it observes where it stands now (every
    cell minigrid's visibility mask lets through, encoded as anything but "unseen"): the view's
    cell (vx, vy) lies at top_left + vx * right - vy * forward, the inverse of get_view_coords."""
    env = getattr(env, "unwrapped", env)
    vx, vy = np.nonzero(image[..., 0] != _UNSEEN_IDX)
    forward, right = np.asarray(env.dir_vec), np.asarray(env.right_vec)
    size = image.shape[0]
    top_left = np.asarray(env.agent_pos) + forward * (size - 1) - right * (size // 2)
    cells = top_left[None, :] + vx[:, None] * right[None, :] - vy[:, None] * forward[None, :]
    return {(int(x), int(y)) for x, y in cells}


_UNSEEN_IDX = 0  # minigrid's OBJECT_TO_IDX["unseen"]
_KEY_IDX = 5  # minigrid's OBJECT_TO_IDX["key"]
_DOOR_IDX, _LOCKED_STATE = 4, 2  # minigrid's OBJECT_TO_IDX["door"], STATE_TO_IDX["locked"]
NO_DOOR = -1  # `door` of a step before any locked door was in view (--aux_door_weight)
NUM_COLOURS = len(COLOR_TO_IDX)  # minigrid's six: --aux_door_weight's classes
_NO_COLOUR = 127


def locked_door_colour(image: np.ndarray) -> np.ndarray:
    """(...) int8: the colour index (minigrid's COLOR_TO_IDX) of a locked door in each view
    (..., V, V, 3), the lowest where several are; NO_DOOR where none is."""
    locked = (image[..., 0] == _DOOR_IDX) & (image[..., 2] == _LOCKED_STATE)
    colour = np.where(locked, image[..., 1], _NO_COLOUR).min(axis=(-2, -1))
    return np.where(colour == _NO_COLOUR, NO_DOOR, colour).astype(np.int8)


def key_ahead(image: torch.Tensor, carrying: torch.Tensor) -> torch.Tensor:
    """(...) bool: the view (..., V, V, 3) shows a key in the cell ahead of the agent (view cell
    (V // 2, V - 2): the agent stands at (V // 2, V - 1) facing up the view) and its hands are free,
    the steps where it decides whether to take that key (torch or numpy; --key_ahead_ce_weight)."""
    size = image.shape[-2]
    return (image[..., size // 2, size - 2, 0] == _KEY_IDX) & (carrying == 0)


def key_match(image: Any, carrying: Any, door: Any) -> tuple[Any, Any]:
    """(eligible, match), each (...) bool, for views (..., V, V, 3), carrying (...) and door labels
    (...) (door_labels: the locked door last in view, NO_DOOR before any), torch or numpy: eligible
    where a key lies in the cell ahead with the hands free (key_ahead) after a locked door was in
    view; match where that key has the door's colour. What --aux_match_weight's head predicts, the
    choice memory_probe.py --target key_match asks about (take this key or walk on)."""
    size = image.shape[-2]
    eligible = key_ahead(image, carrying) & (door != NO_DOOR)
    return eligible, eligible & (image[..., size // 2, size - 2, 1] == door)


def door_labels(image: np.ndarray, start: int = NO_DOOR) -> np.ndarray:
    """(T,) int8 for an episode's views (T, V, V, 3) in order: the colour of the locked door last
    in view at or before each step (the view the policy reads there), `start` before any (a live
    episode's state from an earlier chunk): what --aux_door_weight's head reads from the memory.
    The door stays the one seen once it is unlocked (it is the door the key was for)."""
    seen = locked_door_colour(image).astype(np.int64)
    index = np.where(seen != NO_DOOR, np.arange(len(seen)), -1)
    last = np.maximum.accumulate(index) if len(index) else index
    return np.where(last >= 0, seen[np.maximum(last, 0)], start).astype(np.int8)


class KeyTracker:
    """The keys of a locked door's colour the agent has seen this episode, and where the nearest of
    them lies in its frame: what --aux_key_weight's head learns to read from the memory.

    reset(env) after each env.reset; label(env, image) each step with the image the policy reads,
    before the step: a key whose cell the agent sees in that view (env.agent_sees) counts as seen
    from then on. The label is the nearest seen key still lying where it was (Manhattan), in the
    agent's frame (agent_frame); None before any is seen, from the step the agent first holds a
    key of that colour on (dropped again or not: the chain has moved on), once none is left where
    it was, or on a level without a locked door (memory_probe.py --target key asks about the same
    steps)."""

    def reset(self, env: Any) -> None:
        grid = env.grid
        self.colours = {grid.get(*p).color for p in locked_doors(env)}
        self.keys = [
            (x, y) for y in range(grid.height) for x in range(grid.width) if self.opens(grid.get(x, y))
        ]
        self.seen: set[tuple[int, int]] = set()
        self.held = False  # a key of that colour has been held this episode

    def opens(self, obj: Any) -> bool:
        """Whether `obj` (a grid cell's object, what the agent carries; None) is a key of a locked
        door's colour."""
        return obj is not None and obj.type == "key" and obj.color in self.colours

    def update_held(self, env: Any) -> bool:
        """Whether such a key has been held this episode, what the agent carries now included."""
        self.held = self.held or self.opens(env.carrying)
        return self.held

    def label(self, env: Any, image: np.ndarray) -> tuple[int, int] | None:
        if len(self.seen) < len(self.keys) and (image[..., 0] == _KEY_IDX).any():
            self.seen.update(k for k in self.keys if k not in self.seen and env.agent_sees(*k))
        if self.update_held(env):
            return None
        lying = [k for k in self.seen if self.opens(env.grid.get(*k))]
        return agent_frame(env, nearest_cell(env, lying)) if lying else None


def nearest_cell(env: Any, cells: list[tuple[int, int]]) -> tuple[int, int]:
    """The cell of `cells` nearest the agent (Manhattan; ties: the lowest (x, y))."""
    ax, ay = (int(v) for v in env.agent_pos)
    return min(cells, key=lambda c: (abs(c[0] - ax) + abs(c[1] - ay), c))


class DoorTracker:
    """The locked doors the agent has seen this episode, and where the nearest of them still
    locked lies in its frame: what --aux_door_place_weight's head learns to read from the memory.

    reset(env) after each env.reset; label(env, image) each step with the image the policy reads,
    before the step: a locked door whose cell the agent sees in that view (env.agent_sees) counts
    as seen from then on. The label is the nearest seen door that is still locked (Manhattan), in
    the agent's frame (agent_frame); None before any is seen, once every seen one is unlocked (the
    toggle that unlocks it is the last step labelled), or on a level without a locked door. Wider
    than memory_probe.py --target door_offset, which asks about the same place on the steps that
    hold a key of its colour."""

    def reset(self, env: Any) -> None:
        self.doors = locked_doors(env)
        self.seen: set[tuple[int, int]] = set()

    def label(self, env: Any, image: np.ndarray) -> tuple[int, int] | None:
        if len(self.seen) < len(self.doors) and (locked_door_colour(image) != NO_DOOR).any():
            self.seen.update(d for d in self.doors if d not in self.seen and env.agent_sees(*d))
        locked = [
            d for d in self.seen if (o := env.grid.get(*d)) is not None and o.type == "door" and o.is_locked
        ]
        return agent_frame(env, nearest_cell(env, locked)) if locked else None


def target_code(target: tuple[int, int] | None) -> tuple[int, int]:
    """SafeBot.target as a chunk's int8 pair: NO_TARGET for none, else clipped to +-TARGET_RANGE."""
    if target is None:
        return NO_TARGET, NO_TARGET
    return tuple(max(-TARGET_RANGE, min(TARGET_RANGE, int(v))) for v in target)  # type: ignore[return-value]


def bot_path_length(
    task_id: str, seed: int, max_steps: int | None = None, fast: bool = True, env: Any = None
) -> int | None:
    """Steps the bot needs to solve the layout of `seed` (the path_ratio denominator).

    None if the bot fails or does not finish with reward > 0. The bot explores a partially
    observed grid, so this is the bot's path, not the shortest one. env: an env made by
    make_env(task_id, max_steps, fast) to reuse (making one costs more than a GoToLocal rollout);
    reset with the seed, it lays out the same level as a new one."""
    env = make_env(task_id, max_steps, fast) if env is None else env
    actions, solved = bot_play(env, seed, fast)
    return len(actions) if solved else None


def bot_play(env: Any, seed: int, fast: bool = True) -> tuple[list[int], bool]:
    """The bot plays the layout of `seed` in `env` (at most env.max_steps steps): the actions it
    took, and whether it finished with reward > 0 (False where it gave up: its actions stop there)."""
    quiet_reset(env, seed)
    bot, actions = SafeBot(env, fast), []
    for _ in range(env.max_steps):
        action = bot.label(None)
        if action is None:
            return actions, False
        actions.append(action)
        _, reward, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            return actions, bool(terminated and reward > 0)
    return actions, False


# ----------------------------------------------------------------------------- stepping


def quiet_reset(env: Any, seed: int) -> dict:
    """env.reset(seed=seed) without minigrid's 'Sampling rejected' chatter on stdout."""
    with contextlib.redirect_stdout(io.StringIO()):
        obs, _ = env.reset(seed=seed)
    return obs


# ----------------------------------------------------------------------------- env context and phases


def _objects(env: Any) -> dict[str, list]:
    found: dict[str, list] = {"goals": [], "doors": [], "keys": [], "balls": [], "boxes": []}
    names = {"goal": "goals", "door": "doors", "key": "keys", "ball": "balls", "box": "boxes"}
    for y in range(env.grid.height):
        for x in range(env.grid.width):
            obj = env.grid.get(x, y)
            if obj is None or obj.type not in names:
                continue
            entry = [x, y, obj.color]
            if obj.type == "door":
                entry += [bool(obj.is_open), bool(obj.is_locked)]
            found[names[obj.type]].append(entry)
    return found


def ordered_instructions(instr: Any) -> list:
    """Leaf instructions in execution order: AfterInstr(a, b) runs b first."""
    name = type(instr).__name__
    if name == "AfterInstr":
        return ordered_instructions(instr.instr_b) + ordered_instructions(instr.instr_a)
    if name in ("BeforeInstr", "AndInstr"):
        return ordered_instructions(instr.instr_a) + ordered_instructions(instr.instr_b)
    return [instr]


def target_objects(env: Any) -> tuple[list, list]:
    """(objects of the first target in execution order, door objects named by the mission)."""
    leaves = ordered_instructions(env.instrs)
    first = leaves[0]
    desc = getattr(first, "desc_move", None) or getattr(first, "desc", None)
    targets = list(getattr(desc, "obj_set", []) or [])
    doors = [
        o
        for leaf in leaves
        for o in (getattr(getattr(leaf, "desc", None), "obj_set", []) or [])
        if o.type == "door"
    ]
    return targets, doors


def locked_doors(env: Any) -> list[tuple[int, int]]:
    """Positions of the doors locked now."""
    return [
        (x, y)
        for y in range(env.grid.height)
        for x in range(env.grid.width)
        if (o := env.grid.get(x, y)) is not None and o.type == "door" and o.is_locked
    ]


def reachable_cells(env: Any, walls: set[tuple[int, int]]) -> set[tuple[int, int]]:
    """Cells the agent can walk to from where it stands, through every door but `walls`
    (objects count as passable: the bot moves one that blocks its way)."""
    seen, queue = {tuple(env.agent_pos)}, deque([tuple(env.agent_pos)])
    while queue:
        x, y = queue.popleft()
        for nx, ny in ((x + 1, y), (x - 1, y), (x, y + 1), (x, y - 1)):
            if (
                (nx, ny) in seen
                or (nx, ny) in walls
                or not (0 <= nx < env.grid.width and 0 <= ny < env.grid.height)
            ):
                continue
            cell = env.grid.get(nx, ny)
            if cell is not None and cell.type == "wall":
                continue
            seen.add((nx, ny))
            queue.append((nx, ny))
    return seen


def needs_key(env: Any) -> bool:
    """Whether every target of the mission's first instruction is behind a locked door (or is
    one): no target is next to a cell reachable with the locked doors as walls."""
    locked = set(locked_doors(env))
    if not locked:
        return False
    reach = reachable_cells(env, locked)
    for o in target_objects(env)[0]:
        if o.cur_pos is None or tuple(o.cur_pos) in locked:
            continue
        x, y = o.cur_pos
        if any(p in reach for p in ((x + 1, y), (x - 1, y), (x, y + 1), (x, y - 1), (x, y))):
            return False
    return True


KEY_CHECK_LAYOUTS = 40  # evaluation layouts a level is checked on for locked doors and key layouts


def key_layout_counts(task_id: str, layouts: int = KEY_CHECK_LAYOUTS) -> tuple[int, int]:
    """(layouts with a locked door, layouts whose mission needs the key) among the level's first
    `layouts` evaluation layouts."""
    env = make_env(task_id)
    locked = key = 0
    for k in range(layouts):
        quiet_reset(env, EVAL_SEED_START + k)
        if locked_doors(env):
            locked += 1
            key += needs_key(env)
    return locked, key


def check_locked_level(task_id: str, layouts: int = KEY_CHECK_LAYOUTS) -> None:
    """ValueError for a level none of whose first layouts holds a locked door (failures.py has
    nothing to dissect there)."""
    if key_layout_counts(task_id, layouts)[0] == 0:
        raise ValueError(f"{task_id} has no locked door in its first {layouts} evaluation layouts")


def legacy_target_pos(instr: Any) -> list[int] | None:
    """The earlier system's env_context `target_pos` (its eval's first-target rule, reference §3.4):
    in the instruction tree's grammatical order (instr_a before instr_b, AfterInstr included, which
    runs b first), the first description (`desc`, else `desc_move`), and of the objects it matches
    the first one BabyAI lists (`obj_poss`, a column-major scan made at reset), not the nearest.
    None when that description matches nothing. Only its JSON export uses it (routing_cache.
    write_legacy_json); our target_pos is the nearest instance in execution order (env_context)."""
    desc = getattr(instr, "desc", None) or getattr(instr, "desc_move", None)
    if desc is not None:
        found = list(getattr(desc, "obj_poss", None) or [])
        return [int(found[0][0]), int(found[0][1])] if found else None
    for part in ("instr_a", "instr_b"):
        sub = getattr(instr, part, None)
        if sub is not None and (pos := legacy_target_pos(sub)) is not None:
            return pos
    return None


def env_context(env: Any, targets: list) -> dict:
    """The layout at episode start, as the earlier system's env_context plus room bounds and target
    (ours: nearest instance of the first target in execution order; `legacy_target_pos`: its rule,
    for the JSON export)."""
    ctx: dict[str, Any] = {
        "grid_size": [env.grid.width, env.grid.height],
        "agent_start_pos": [int(v) for v in env.agent_pos],
    }
    if hasattr(env, "room_grid"):
        room = env.room_from_pos(*env.agent_pos)
        ctx["agent_start_room"] = [int(v) for v in room.top]
        ctx["room_grid_shape"] = [env.num_cols, env.num_rows]
        (x0, y0), (w, h) = room.top, room.size
        ctx["room_bounds"] = [x0 + 1, y0 + 1, x0 + w - 2, y0 + h - 2]
    else:
        ctx["agent_start_room"] = None
        ctx["room_grid_shape"] = None
        ctx["room_bounds"] = [1, 1, env.grid.width - 2, env.grid.height - 2]
    ctx.update(_objects(env))
    positions = [o.cur_pos for o in targets if o.cur_pos is not None]
    if positions:
        start = np.asarray(env.agent_pos)
        nearest = min(positions, key=lambda p: float(np.hypot(*(np.asarray(p) - start))))
        ctx["target_pos"] = [int(v) for v in nearest]
    else:
        ctx["target_pos"] = None
    ctx["legacy_target_pos"] = legacy_target_pos(env.instrs) if hasattr(env, "instrs") else None
    return ctx


class StepPhase(NamedTuple):
    """The phase fields evaluation records at a step (before the step's action)."""

    carrying: int  # 1 if the agent carries an object
    dist_to_key: float  # to the key's current position (0 while carried; NaN: no key)
    dist_to_target: float  # to the mission's first target in execution order (0 while carried)


class PhaseTracker:
    """Phase timestamps and distances for one episode (what the routing analyses group by)."""

    def __init__(self, env: Any):
        self.env = env
        self.targets, self.mission_doors = target_objects(env)
        self.doors = [
            (x, y)
            for y in range(env.grid.height)
            for x in range(env.grid.width)
            if (o := env.grid.get(x, y)) is not None and o.type == "door"
        ]
        self.closed_at_start = {p for p in self.doors if not env.grid.get(*p).is_open}
        self.key = next(
            (
                env.grid.get(x, y)
                for y in range(env.grid.height)
                for x in range(env.grid.width)
                if (o := env.grid.get(x, y)) is not None and o.type == "key"
            ),
            None,
        )
        self.t_unlocked = self.t_pick = self.t_drop = None
        self.first_door: tuple[int, int] | None = None

    def _distance_to(self, objects: list) -> float:
        pos = np.asarray(self.env.agent_pos, dtype=float)
        best = math.nan
        for o in objects:
            if self.env.carrying is o:
                return 0.0
            if o.cur_pos is None or o.cur_pos[0] < 0:
                continue
            d = float(np.hypot(*(np.asarray(o.cur_pos) - pos)))
            best = d if math.isnan(best) else min(best, d)
        return best

    def observe(self, t: int) -> StepPhase:
        """Update the event times from the state before step t's action (door opened, first pickup,
        first drop after it); return what evaluation records of this step. The per-step event
        columns of the routing cache are derived from the event times (routing_cache)."""
        env = self.env
        if self.t_unlocked is None:
            for p in self.closed_at_start:
                if env.grid.get(*p).is_open:
                    self.t_unlocked, self.first_door = t, p
                    break
        carrying = env.carrying is not None
        if self.t_pick is None and carrying:
            self.t_pick = t
        elif self.t_pick is not None and self.t_drop is None and not carrying:
            self.t_drop = t
        return StepPhase(
            int(carrying),
            math.nan if self.key is None else self._distance_to([self.key]),
            self._distance_to(self.targets) if self.targets else math.nan,
        )

    def door_of_episode(self) -> tuple[int, int] | None:
        """The door opened first; else the mission's first door; else the only door."""
        if self.first_door is not None:
            return self.first_door
        for o in self.mission_doors:
            if o.cur_pos is not None:
                return tuple(int(v) for v in o.cur_pos)
        return self.doors[0] if len(self.doors) == 1 else None
