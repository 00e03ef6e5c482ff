"""What the BabyAI bot would be doing at each step of a student's episode, and the level's events.

Evaluation (eval_mop.run_episodes) gives every env a `SubgoalRecorder`; before each step's action
it calls `observe(obs, previous_action)` and records what comes back as the routing cache's step
columns `subgoal`, `subgoal_target` and the boolean `event_*` columns (SUBGOAL_COLUMNS). The
recorder never acts: it reads the env the student plays in.

Subgoal. The bot (babyai_env.SafeBot, fast_grid.FastBot) watches the student's own trajectory the
way DAgger labelling does: at step t it replans with the student's action of step t-1, and the top
of its subgoal stack after that replan (the subgoal whose action it would take now) is the step's
subgoal, named from SUBGOAL_VOCABULARY:
    GoNextTo   go next to an object or position named by the mission (minigrid GoNextToSubgoal)
    Explore    go to an unexplored cell: a GoNextToSubgoal the bot pushed to explore (reason
               "Explore"), or ExploreSubgoal itself
    Open       open (or unlock) the door in front (OpenSubgoal)
    Pickup     pick up the object in front (PickupSubgoal)
    Drop       drop what is carried (DropSubgoal)
    Close      close the door in front (CloseSubgoal)
    Done       the stack is empty: the bot thinks the mission is accomplished
    Failed     the bot could not plan from this state (SafeBot's failure; it stays Failed for the
               rest of the episode, because a failed bot's state is unusable)
    Other      a subgoal class not listed above (none in minigrid 2.x)
`subgoal_target`: the subgoal's datum: an object description "<color> <type>" ("red key", "key"
when the mission names no colour), a door as "<color> door (x,y)", a position "(x,y)"; for Open,
Pickup and Close (which have no datum) the object in front of the agent, in the same spelling;
"" for Drop, Done and Failed.

Events (`event_*`, 1 or 0): an event at step t means that the state seen before step t's action
differs from the state seen before step t-1's action, i.e. step t-1's action caused it (the same
convention as the phase times t_pick / t_unlocked: visible from the step it happened on). Step 0
has no event (there is no earlier state).
    event_pickup          the agent carries an object at t and carried nothing at t-1
    event_drop            the agent carried an object at t-1 and carries nothing at t
    event_open            some door's is_open went from False (t-1) to True (t)
    event_unlock          some door's is_locked went from True (t-1) to False (t); minigrid opens a
                          door in the same toggle that unlocks it, so event_open fires too
    event_close           some door's is_open went from True (t-1) to False (t)
    event_target_in_view  one of the mission's first-target objects (babyai_env.target_objects) is
                          visible in the agent's observation at t (its cell in the egocentric
                          image shows that object) and none was at t-1; a carried target is not
                          in view

    recorder = SubgoalRecorder(env); row = recorder.observe(obs, None)   # after reset
    row = recorder.observe(obs, action)   # before each later step, with the previous action
"""

from __future__ import annotations

from typing import Any

from minigrid.core.constants import COLOR_TO_IDX, OBJECT_TO_IDX

from mop.babyai_env import SafeBot, target_objects
from mop.routing_cache import EVENT_COLUMNS as EVENT_COLUMNS  # re-exported: the events' names
from mop.routing_cache import SUBGOAL_STEP_COLUMNS, SUBGOAL_VOCABULARY

_CLASS_NAMES = {
    "GoNextToSubgoal": "GoNextTo",
    "ExploreSubgoal": "Explore",
    "OpenSubgoal": "Open",
    "PickupSubgoal": "Pickup",
    "DropSubgoal": "Drop",
    "CloseSubgoal": "Close",
}
SUBGOAL_COLUMNS = SUBGOAL_STEP_COLUMNS  # the cache's names (routing_cache: the schema's home)
assert set(_CLASS_NAMES.values()) <= set(SUBGOAL_VOCABULARY)


def subgoal_name(subgoal: Any) -> str:
    """The vocabulary's name of one bot subgoal (module docstring)."""
    cls = type(subgoal).__name__
    if cls == "GoNextToSubgoal" and getattr(subgoal, "reason", None) == "Explore":
        return "Explore"
    return _CLASS_NAMES.get(cls, "Other")


def describe(datum: Any) -> str:
    """A subgoal's datum as a short stable string: "red key", "yellow door (3,5)", "(4,2)"."""
    if datum is None:
        return ""
    if hasattr(datum, "obj_set") and hasattr(datum, "type"):  # an ObjDesc of the instruction
        return " ".join(p for p in (datum.color, datum.type) if p)
    if hasattr(datum, "type") and hasattr(datum, "color"):  # a WorldObj
        name = f"{datum.color} {datum.type}"
        pos = getattr(datum, "cur_pos", None)
        return f"{name} ({int(pos[0])},{int(pos[1])})" if datum.type == "door" and pos is not None else name
    try:
        x, y = datum
        return f"({int(x)},{int(y)})"
    except (TypeError, ValueError):
        return str(datum)


def bot_subgoal(bot: Any, env: Any) -> tuple[str, str]:
    """(subgoal, subgoal_target) of a bot that has just replanned: the top of its stack."""
    if bot is None:
        return "Failed", ""
    if not bot.stack:
        return "Done", ""
    top = bot.stack[-1]
    name = subgoal_name(top)
    if top.datum is not None:
        return name, describe(top.datum)
    if name in ("Open", "Pickup", "Close"):
        fx, fy = env.front_pos
        if 0 <= fx < env.grid.width and 0 <= fy < env.grid.height:
            return name, describe(env.grid.get(int(fx), int(fy)))
    return name, ""


def object_in_view(env: Any, image: Any, obj: Any) -> bool:
    """Whether the object's cell, in the agent's egocentric observation `image`, shows that object
    (its type and colour): not when carried, off the grid, outside the view or hidden."""
    pos = obj.cur_pos
    if env.carrying is obj or pos is None or pos[0] < 0:
        return False
    view = env.relative_coords(int(pos[0]), int(pos[1]))
    if view is None:
        return False
    cell = image[view[0], view[1]]
    return bool(cell[0] == OBJECT_TO_IDX[obj.type] and cell[1] == COLOR_TO_IDX[obj.color])


class SubgoalRecorder:
    """The bot's subgoal and the level's events at every step of one episode in `env` (module
    docstring); make one after each reset."""

    def __init__(self, env: Any):
        self.env = env.unwrapped
        self.bot = SafeBot(self.env)
        self.targets = target_objects(self.env)[0]
        self.doors = [
            o for o in self.env.grid.grid if o is not None and o.type == "door"
        ]  # doors never move or vanish
        self.before: tuple | None = None

    def _state(self, obs: dict) -> tuple:
        env = self.env
        return (
            env.carrying is not None,
            tuple(d.is_open for d in self.doors),
            tuple(d.is_locked for d in self.doors),
            self._target_in_view(obs),
        )

    def _target_in_view(self, obs: dict) -> bool:
        return any(object_in_view(self.env, obs["image"], o) for o in self.targets)

    def observe(self, obs: dict, previous_action: int | None) -> dict:
        """The step's columns (SUBGOAL_COLUMNS), from the state before its action; `obs` is the
        observation the student acts on, previous_action its action of the step before (None
        at step 0)."""
        self.bot.label(previous_action)
        subgoal, target = bot_subgoal(self.bot.bot, self.env)
        state = self._state(obs)
        before = self.before if self.before is not None else state
        self.before = state
        carried, opened, locked, seen = state
        carried0, opened0, locked0, seen0 = before
        return {
            "subgoal": subgoal,
            "subgoal_target": target,
            "event_pickup": int(carried and not carried0),
            "event_drop": int(carried0 and not carried),
            "event_open": int(any(b and not a for a, b in zip(opened0, opened))),
            "event_unlock": int(any(a and not b for a, b in zip(locked0, locked))),
            "event_close": int(any(a and not b for a, b in zip(opened0, opened))),
            "event_target_in_view": int(seen and not seen0),
        }
