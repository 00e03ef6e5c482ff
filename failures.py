"""Where does a policy fail a locked-door level? The milestones of every episode.

On Unlock and GoToImpUnlock the bot the student imitates finds the locked door, fetches a key of
its colour (walking straight back to one it has seen: it keeps a map of every cell it has seen),
and unlocks the door. A student that fails runs to the step limit somewhere along that chain; this
tool says where.

The checkpoint plays `--num_episodes` evaluation layouts itself (eval_mop.run_episodes, greedy, or
sampled with --sample); each episode is then replayed action by action in a fresh env of the same
layout, recording the first step at which
    door_seen   a locked door is in the agent's view
    key_seen    a key of a locked door's colour is in view
    key_held    the agent carries such a key
    unlocked    a door locked at the start is no longer locked
(steps count from 0; empty: never), and the kind of the mission's instruction. On "put X next to Y"
missions also
    move_held   the agent carries an object the mission moves (X)
    fixed_held  it carries an object that only the fixed description (Y) matches
and whether the mission is `reversible`: some object Y describes can move too, so "put Y next to
X" is another possible mission with the same words; a bag-of-words mission encoder cannot tell the
two apart (only word order can), and a student that confuses them carries Y. A layout `needs the
key` when no target of the mission's first instruction can be reached with the locked doors as
walls: Unlock gives the locked door's colour to another, unlocked door in about 40% of its
layouts (opening that one succeeds too), and GoToImpUnlock's target has a twin outside the locked
room in about 60%.

The report: success on the layouts that need the key and on those that do not; by instruction
kind where a level mixes them (Synth); put-next success by reversible or not, and what its failed
episodes carried; the failed episodes that needed the key by the furthest
step of the chain they reached (unlocked, held a key, saw a key, saw none), split by whether they
saw the locked door; the share of the reachable cells they stood on, against the solved
episodes'. Then, on the failed layouts a policy can solve (`key_reachable`: false where every key
of the locked door's colour lies behind it; GoToImpUnlock lays out 17 of its first 500 evaluation
layouts so, and the bot fails them as every student does), whether they stopped exploring and what
they held: the share of the cells reachable without a key that came into view (`open_cells_seen`;
on GoToImpUnlock's first 500 layouts the bot has seen every one when it picks up the key on 186 of
the 189 it solves that need it), the step the last of them first did (`t_last_new_cell`), how many
separate times a matching key came into view (`key_sightings`, the bot's median 5 before its
pickup; `key_sightings_late`: those after the last new cell), and what it picked up that is not a
key of the door's colour (`t_other_held`, the first step it carried one; `held_at_end`;
`wrong_key_held`: a key of another colour at the end, which keeps it from picking up the right one).
Whether it tells the keys apart: at the first step it faced a key of the door's colour with free
hands, and the first it faced one of another colour, whether it picked it up and where the locked
door was (`faced_*`; the report tabulates them, one event per episode, with Wilson intervals; on
GoToImpUnlock the bot takes 2% of the other colour's after seeing the door, the students about half).
`--bot` plays the bot itself on the same layouts: the control a student's table is read against.
Any level with a locked door in its first 40 layouts can be dissected.

    python failures.py --checkpoint checkpoints/BabyAI-Unlock-v0/trial_0/checkpoint_final.pt
    python failures.py --checkpoint CK --num_episodes 500 --out failures.csv
    python failures.py --checkpoint CK2 --num_episodes 500 --against failures.csv   # layout by layout
    python failures.py --table failures.csv --against other.csv   # two saved tables, nothing played
    python failures.py --checkpoint CK --num_episodes 500 --takeover 150,300   # the bot finishes them?
    python failures.py --bot --task_id BabyAI-GoToImpUnlock-v0 --num_episodes 500 --out bot.csv   # the control

--takeover T hands each failed episode a policy can solve to the bot after T of the student's steps:
the bot watches those steps as it does when it labels DAgger's states, then drives. Where it cannot
finish from there (it gives up: the reasons are counted), its labels on those states teach nothing.

--against's McNemar p tests two trained policies on the same layouts (the layouts are the sample):
two runs of one recipe from different seeds can differ as well, so a recipe is compared
over its seeds, not by one pair of runs.
"""

from __future__ import annotations

if __name__ == "__main__":  # flags answered before torch, pandas and minigrid load (bench/startup.py)
    from mop.cli_specs import answer_early, check_failures_args, failures_parser

    answer_early(lambda: check_failures_args(failures_parser(__doc__).parse_args()))

import argparse
import sys
from typing import Any

import numpy as np
import pandas as pd
from minigrid.core.constants import COLOR_TO_IDX, OBJECT_TO_IDX

from eval_mop import EvalError, check_table_out, play_checkpoint, played_line, save_table, wilson_interval
from mop.babyai_env import (
    EVAL_SEED_START,
    NO_DOOR,
    KeyTracker,
    SafeBot,
    bot_play,
    cells_in_view,
    check_locked_level,
    locked_door_colour,
    locked_doors,
    make_env,
    needs_key,
    quiet_reset,
    reachable_cells,
)
from mop.checks import ConfigError, command_edges, refuse
from mop.cli_specs import check_failures_args, failures_parser, takeover_steps
from mop.progress import progress_bar

DEFAULT_EPISODES = 200  # --num_episodes when not given
MILESTONES = ("door_seen", "key_seen", "key_held", "unlocked")
PUT_NEXT_MILESTONES = ("move_held", "fixed_held")
CARRIED = (  # what a failed put-next episode carried, first match wins
    ("move_held", "held an object to move"),
    ("fixed_held", "held only the fixed one (the words swapped)"),
    ("neither", "held neither"),
)
STAGES = (  # the furthest step of the chain a failed episode reached, furthest first
    ("unlocked", "unlocked a locked door"),
    ("key_held", "held a matching key, never unlocked"),
    ("key_seen", "saw a matching key, never held one"),
    ("none", "never saw a matching key"),
)
_KEY = OBJECT_TO_IDX["key"]
_PICKUP = 3  # minigrid's Actions.pickup
# The keys an agent can face with free hands: one of a locked door's colour, or one of another colour.
FACED = ("match", "other")
# Where the locked door was at that step: in the view the policy reads, out of it but seen earlier
# in the episode (its colour must come from the memory), never seen yet.
DOOR_PLACES = ("in view", "seen", "not seen")


class FailureError(ValueError):
    """A checkpoint or level this tool cannot analyse; one line."""


INSTRUCTION_KINDS = {
    "GoToInstr": "go to",
    "PickupInstr": "pick up",
    "OpenInstr": "open",
    "PutNextInstr": "put next",
}


def instruction_kind(instrs: Any) -> str:
    """'go to', 'pick up', 'open' or 'put next'; 'two instructions' for and / then / after."""
    return INSTRUCTION_KINDS.get(type(instrs).__name__, "two instructions")


def replay_milestones(env: Any, seed: int, actions: list[int]) -> dict:
    """Replay an episode's actions in `env` from layout `seed`; the first step of each milestone
    (None: never), whether the layout needs the key, the share of the reachable cells stood on,
    and whether the replay succeeded (it must, where the recorded episode did)."""
    obs = quiet_reset(env, seed)
    locked = locked_doors(env)
    keys = KeyTracker()  # the keys of a locked door's colour, and what counts as one
    keys.reset(env)
    colours = [COLOR_TO_IDX[c] for c in keys.colours]
    row: dict[str, Any] = {
        "instruction": instruction_kind(env.instrs),
        "locked_doors": len(locked),
        "needs_key": needs_key(env),
    }
    reach = reachable_cells(env, set())
    open_reach = reachable_cells(env, set(locked))  # what the agent can explore without a key
    row["key_reachable"] = any(k in open_reach for k in keys.keys)
    seen_open: set[tuple[int, int]] = set()
    last_new, sightings, in_view = 0, [], False
    other_held: int | None = None  # the first step it carried anything but a key of a locked door's colour
    first: dict[str, int | None] = dict.fromkeys(MILESTONES + PUT_NEXT_MILESTONES)
    put_next = row["instruction"] == "put next"
    move = env.instrs.desc_move.obj_set if put_next else []
    fixed = env.instrs.desc_fixed.obj_set if put_next else []
    row["reversible"] = any(o.type != "door" for o in fixed) if put_next else None
    stood = {tuple(env.agent_pos)}
    faced: dict[str, tuple[bool, str]] = {}  # "match"/"other": (picked it up, where the door was)
    success = False
    for t, action in enumerate(actions):
        image = obs["image"]
        door_in_view = bool(locked_door_colour(image) != NO_DOOR)
        if first["door_seen"] is None and door_in_view:
            first["door_seen"] = t
        front = env.grid.get(*env.front_pos)
        if front is not None and front.type == "key" and env.carrying is None:
            kind = "match" if keys.opens(front) else "other"
            if kind not in faced:  # the first time it faces such a key with its hands free
                door = "in view" if door_in_view else "not seen" if first["door_seen"] is None else "seen"
                faced[kind] = (int(action) == _PICKUP, door)
        key_in_view = bool(((image[..., 0] == _KEY) & np.isin(image[..., 1], colours)).any())
        if first["key_seen"] is None and key_in_view:
            first["key_seen"] = t
        if key_in_view and not in_view:
            sightings.append(t)
        in_view = key_in_view
        new_cells = (cells_in_view(env, image) & open_reach) - seen_open
        if new_cells:
            seen_open |= new_cells
            last_new = t
        obs, reward, terminated, truncated, _ = env.step(int(action))
        stood.add(tuple(env.agent_pos))
        held = env.carrying
        if first["key_held"] is None and keys.opens(held):
            first["key_held"] = t
        if other_held is None and held is not None and not keys.opens(held):
            other_held = t
        if put_next and held is not None:  # (the objects are the verifier's own, matched by identity)
            if first["move_held"] is None and any(held is o for o in move):
                first["move_held"] = t
            elif (
                first["fixed_held"] is None
                and any(held is o for o in fixed)
                and not any(held is o for o in move)
            ):
                first["fixed_held"] = t
        if first["unlocked"] is None and any(not env.grid.get(*p).is_locked for p in locked):
            first["unlocked"] = t
        if terminated or truncated:
            success = reward > 0
            break
    row.update({f"t_{k}": v for k, v in first.items()})
    row["cells_stood_on"] = len(stood & reach) / len(reach)
    row["open_cells_seen"] = len(seen_open) / len(open_reach)
    row["t_last_new_cell"] = last_new
    row["key_sightings"] = len(sightings)
    row["key_sightings_late"] = sum(t > last_new for t in sightings)  # after exploring stopped
    row["t_other_held"] = other_held
    end = env.carrying
    row["held_at_end"] = None if end is None else f"{end.color} {end.type}"
    row["wrong_key_held"] = end is not None and end.type == "key" and not keys.opens(end)
    for kind in FACED:  # the first step it faced a key of each kind with free hands: picked it up?
        picked, door = faced.get(kind, (None, None))
        row[f"faced_{kind}_picked"], row[f"faced_{kind}_door"] = picked, door
    row["replay_success"] = success
    return row


def bot_takeover(env: Any, seed: int, actions: list[int], start: int, undo: bool) -> tuple[bool, str | None]:
    """Replay the first `start` actions of an episode with the bot watching (labelling each state
    and told the action taken, as DAgger's collector does), then let the bot drive to the episode's
    end. (solved, why the bot gave up if it did)."""
    quiet_reset(env, seed)
    bot, previous = SafeBot(env, undo=undo), None
    for action in actions[:start]:
        bot.label(previous)
        _, reward, terminated, truncated, _ = env.step(int(action))
        previous = int(action)
        if terminated or truncated:
            return bool(terminated and reward > 0), None
    while True:
        action = bot.label(previous)
        if action is None:
            return False, bot.failure
        _, reward, terminated, truncated, _ = env.step(action)
        previous = action
        if terminated or truncated:
            return bool(terminated and reward > 0), None


def takeover_report(
    table: pd.DataFrame,
    steps: pd.DataFrame,
    task_id: str,
    config: dict,
    starts: list[int],
    progress: bool = True,
) -> list[str]:
    """--takeover: the bot driving each failed episode a policy can solve from step T on (a bar on
    stderr over the takeovers: a few hundred bot episodes take a minute or two)."""
    failed = table[table.needs_key & ~table.success & table.key_reachable.astype(bool)]
    if not len(failed) or not starts:
        return []
    env = make_env(task_id, config.get("max_steps"))
    actions = steps.groupby("episode")["action"].apply(list)
    undo = bool(config.get("bot_undo", True))
    lines = [
        "",
        f"the bot driving the {len(failed)} failed episodes with a key to reach from step T (bot_undo {undo}):",
    ]
    bar = progress_bar(len(starts) * len(failed), "the bot takes over", enabled=progress, leave=False)
    for start in starts:
        results = []
        for e in failed.episode:
            results.append(bot_takeover(env, EVAL_SEED_START + int(e), actions[e], start, undo))
            bar.update(1)
        solved = sum(ok for ok, _ in results)
        reasons = pd.Series([why.split(":")[0] for ok, why in results if why]).value_counts()
        gave_up = ", ".join(f"{n} {kind}" for kind, n in reasons.items()) or "none"
        lines.append(f"  T = {start:<5} solved {solved} of {len(failed)}; the bot gave up: {gave_up}")
    bar.close()
    return lines


def bot_episodes(task_id: str, num_episodes: int, progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """--bot: the bot itself plays evaluation layouts 0..N-1 (it acts, so bot_undo does not arise;
    the level's own step limit), as the control a student's table is read against: (steps: episode,
    action; episodes: episode, success, length), the shapes play_checkpoint gives anatomy. An
    episode the bot gives up in ends there, failed."""
    env = make_env(task_id)
    steps, episodes = [], []
    bar = progress_bar(num_episodes, "the bot plays", enabled=progress, leave=False)
    for e in range(num_episodes):
        actions, success = bot_play(env, EVAL_SEED_START + e)
        steps += [(e, a) for a in actions]
        episodes.append((e, success, len(actions)))
        bar.update(1)
    bar.close()
    return (
        pd.DataFrame(steps, columns=["episode", "action"]),
        pd.DataFrame(episodes, columns=["episode", "success", "length"]),
    )


def first_reached(row: pd.Series, chain: tuple) -> str:
    """The first key of `chain` whose milestone t_<key> the episode reached; the last key (a
    milestone-less fallback) when none was."""
    for key, _ in chain[:-1]:
        if pd.notna(row[f"t_{key}"]):
            return key
    return chain[-1][0]


def stage(row: pd.Series) -> str:
    """The furthest step of the chain an episode reached (STAGES' key)."""
    return first_reached(row, STAGES)


def anatomy(steps: pd.DataFrame, episodes: pd.DataFrame, task_id: str, max_steps: int | None) -> pd.DataFrame:
    """One row per episode: episode, success, length, the milestones (replay_milestones), stage.
    Raises FailureError when the replay disagrees with the recorded outcome."""
    env = make_env(task_id, max_steps)
    actions = steps.groupby("episode")["action"].apply(list)
    rows = []
    for ep in episodes.sort_values("episode").itertuples():
        row = {"episode": int(ep.episode), "success": bool(ep.success), "length": int(ep.length)}
        row.update(replay_milestones(env, EVAL_SEED_START + int(ep.episode), actions.get(ep.episode, [])))
        if row["replay_success"] != row["success"]:
            raise FailureError(f"episode {ep.episode} replays to a different outcome than it was played")
        rows.append(row)
    table = pd.DataFrame(rows).drop(columns="replay_success")
    for k in MILESTONES + PUT_NEXT_MILESTONES:
        table[f"t_{k}"] = table[f"t_{k}"].astype("Int64")
    table["reversible"] = table["reversible"].astype("boolean")
    table["stage"] = table.apply(stage, axis=1)
    return table


def _rate(success: pd.Series) -> str:
    """A success column's rate and its 95% Wilson interval over the episodes, as a report cell."""
    if not len(success):
        return f"{'-':>9}"
    low, high = wilson_interval(int(success.sum()), len(success))
    return f"{success.mean():>9.1%}  [{low:.1%}, {high:.1%}]"


def carried(row: pd.Series) -> str:
    """What a put-next episode carried (CARRIED's key)."""
    return first_reached(row, CARRIED)


def put_next_report(table: pd.DataFrame) -> list[str]:
    """Put-next success by whether the mission is reversible, and what its failures carried."""
    part = table[table.instruction == "put next"]
    if not len(part):
        return []
    lines = ["", f"{'put next':<34}{'episodes':>9}{'success':>9}  95% Wilson"]
    for label, rows in (
        ("the fixed object can move too", part[part.reversible.fillna(False)]),
        ("the fixed object is a door", part[~part.reversible.fillna(False)]),
    ):
        lines.append(f"  {label:<32}{len(rows):>9}{_rate(rows.success)}")
    failed = part[~part.success]
    if len(failed):
        kinds = failed.apply(carried, axis=1)
        lines.append(
            f"  {len(failed)} failed: "
            + ", ".join(f"{label} {int((kinds == k).sum())}" for k, label in CARRIED)
        )
    return lines


def format_report(table: pd.DataFrame) -> str:
    """The summary a researcher reads: success by layout kind; the failed key layouts by stage."""
    lines = [f"{'layouts':<34}{'episodes':>9}{'success':>9}  95% Wilson"]
    for label, part in (
        ("need the key", table[table.needs_key]),
        ("met without the key", table[~table.needs_key]),
    ):
        lines.append(f"{label:<34}{len(part):>9}{_rate(part.success)}")
    kinds = table.groupby("instruction", sort=False)["success"]
    if kinds.ngroups > 1:
        lines.append("")
        lines.append(f"{'instruction':<34}{'episodes':>9}{'success':>9}  95% Wilson")
        for kind, part in sorted(kinds, key=lambda kv: kv[1].mean()):
            lines.append(f"{kind:<34}{len(part):>9}{_rate(part)}")
    lines += put_next_report(table)
    failed = table[table.needs_key & ~table.success]
    if not len(failed):
        return "\n".join([*lines, "", "no failed episode needed the key"])
    lines.append("")
    lines.append(f"{len(failed)} failed episodes that needed the key, by the furthest step reached:")
    lines.append(f"{'':<38}{'saw the door':>14}{'never saw it':>14}")
    seen = failed.t_door_seen.notna()
    for key, label in STAGES:
        at = failed.stage == key
        lines.append(f"  {label:<36}{int((at & seen).sum()):>14}{int((at & ~seen).sum()):>14}")
    if "key_reachable" in failed.columns:
        lost = failed[~failed.key_reachable.astype(bool)]
        played = int((table.needs_key & ~table.key_reachable.astype(bool)).sum())
        lines.append(
            f"  every matching key behind the locked door (unsolvable, the bot fails too): "
            f"{len(lost)} failed of {played} such layouts"
        )
    solved = table[table.needs_key & table.success]
    if len(solved):
        lines.append("")
        lines.append(
            f"reachable cells stood on (median): failed {failed.cells_stood_on.median():.0%}, "
            f"solved {solved.cells_stood_on.median():.0%} (solved episodes are shorter)"
        )
    if "key_reachable" in failed.columns:  # the layouts no policy solves say nothing of how it explores
        failed = failed[failed.key_reachable.astype(bool)]
    lines += exploration_report(failed, solved)
    lines += facing_report(table)
    return "\n".join(lines)


def facing_report(table: pd.DataFrame) -> list[str]:
    """Does it tell the keys apart? At the first step each episode faced a key of the locked door's
    colour, and the first it faced one of another colour, its hands free: the share that picked it
    up, by where the locked door was (DOOR_PLACES). One event per episode and kind, so the episodes
    are the independent units of each 95% Wilson interval. Tables written before these columns have
    nothing to say here."""
    if "faced_other_picked" not in table.columns:
        return []
    part = table[table.needs_key & table.key_reachable.astype(bool)]
    if not len(part):
        return []
    lines = [
        "",
        f"the first time it faced a key with free hands, it picked it up ({len(part)} layouts that need a"
        " key it can reach; 95% Wilson over episodes):",
        f"{'the locked door':<20}{'a key of its colour':>32}{'a key of another colour':>32}",
    ]
    for place in DOOR_PLACES:
        cells = []
        for kind in FACED:
            events = part[part[f"faced_{kind}_door"] == place][f"faced_{kind}_picked"].astype(bool)
            if not len(events):
                cells.append(f"{'-':>32}")
                continue
            low, high = wilson_interval(int(events.sum()), len(events))
            text = f"{int(events.sum())}/{len(events)} {events.mean():.0%} [{low:.0%}, {high:.0%}]"
            cells.append(f"{text:>32}")
        lines.append(f"  {place:<18}" + "".join(cells))
    return lines


def exploration_report(failed: pd.DataFrame, solved: pd.DataFrame) -> list[str]:
    """Did the failed key layouts stop exploring, and did they keep seeing a key? (tables written
    before these columns existed have nothing to say here)."""
    if not {"open_cells_seen", "t_last_new_cell", "key_sightings", "length"} <= set(failed.columns):
        return []
    if not len(failed):
        return []
    whole = int((failed.open_cells_seen >= 1.0).sum())
    lines = [
        f"cells reachable without a key seen (median): failed {failed.open_cells_seen.median():.0%}"
        + (f", solved {solved.open_cells_seen.median():.0%}" if len(solved) else "")
        + f"; {whole} of the {len(failed)} failed with a key to reach saw every one",
        f"failed: the last such cell first seen at step {failed.t_last_new_cell.median():.0f} (median)"
        f" of {failed.length.median():.0f}",
    ]
    if "t_other_held" in failed.columns:
        other = failed.t_other_held.notna()
        lines.append(
            f"failed with a key to reach that picked up something else: {int(other.sum())} of {len(failed)}"
            f" (first at step {failed.t_other_held.median():.0f}, median), still holding a key of another"
            f" colour at the end: {int(failed.wrong_key_held.astype(bool).sum())}"
            + (f"; solved: {int(solved.t_other_held.notna().sum())} of {len(solved)}" if len(solved) else "")
        )
    saw = failed[failed.key_sightings > 0]
    if len(saw):
        late = saw.get("key_sightings_late")
        lines.append(
            f"failed that saw a matching key: it came into view {saw.key_sightings.median():.0f} separate"
            f" times (median; quartiles {saw.key_sightings.quantile(0.25):.0f}-{saw.key_sightings.quantile(0.75):.0f})"
            + ("" if late is None else f", {late.median():.0f} of them after the last new cell")
        )
    return lines


AGAINST_COLUMNS = ("episode", "success", "instruction")
# What --table reads back: every column anatomy writes (format_report uses them).
TABLE_COLUMNS = (
    *AGAINST_COLUMNS,
    "needs_key",
    "reversible",
    *(f"t_{k}" for k in MILESTONES + PUT_NEXT_MILESTONES),
    "cells_stood_on",
    "stage",
)


def whole_table(table: pd.DataFrame) -> bool:
    """Whether a table has every column --out writes (a level-table row's has outcomes only)."""
    return set(TABLE_COLUMNS) <= set(table.columns)


def read_against(path: str, flag: str = "--against") -> pd.DataFrame:
    """A table of one policy's layouts, outcomes and instructions, checked before anything is
    played: this tool's --out or a level-table row's (bench/results/levels_episodes/). For
    --against the other run; with flag "--table" the table to report again, a whole --out table
    typed as anatomy types it."""
    try:
        other = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise FailureError(f"{flag} {path!r} cannot be read as CSV: {e}") from None
    missing = [c for c in AGAINST_COLUMNS if c not in other.columns]
    if missing:
        raise FailureError(f"{flag} {path!r} is not a failures.py --out table (no {', '.join(missing)})")
    if other.episode.duplicated().any() or other.success.dtype != bool:
        raise FailureError(f"{flag} {path!r}: its episodes are not one row each with a true/false success")
    if flag == "--table" and whole_table(other):  # typed for format_report
        if other.needs_key.dtype != bool or not set(other.stage) <= {k for k, _ in STAGES}:
            raise FailureError(f"{flag} {path!r}: its needs_key or stage column is not one this tool writes")
        for k in MILESTONES + PUT_NEXT_MILESTONES:
            other[f"t_{k}"] = other[f"t_{k}"].astype("Int64")
        other["reversible"] = other["reversible"].astype("boolean")
    return other


OUTCOMES_ONLY = "(a table of outcomes only, as bench/levels.py keeps them: no milestones to dissect)"


def table_line(path: str, table: pd.DataFrame) -> str:
    """--table's first line: the saved table's success with its 95% Wilson interval (played_line's)."""
    low, high = wilson_interval(int(table.success.sum()), len(table))
    return (
        f"{path}: {len(table)} episodes (a saved table), "
        f"success {table.success.mean():.1%} [{low:.1%}, {high:.1%}] (95% Wilson)"
    )


# What --against's p is about, printed under its table: the layouts are the sample, the two trained
# policies fixed. Two recipes differ by more than that (each run of one is one draw of its seed).
SCOPE = (
    "p: these two trained policies on these layouts, not their recipes "
    "(a run is the replicate: recipes are compared over their seeds)"
)


def paired_report(table: pd.DataFrame, other: pd.DataFrame, name: str) -> list[str]:
    """This table against another on the layouts both played (the same layout seeds give the same
    mission; a layout whose instruction differs means another level and is refused): per layout,
    solved by both, by this only, by the other only, by neither, and McNemar's exact p (the layouts
    one solved and the other did not, against ½), overall and per instruction kind (Holm over the
    kinds, the overall test on its own)."""
    from mop.contrasts import exact_paired_by_group

    both = table.merge(other[list(AGAINST_COLUMNS)], on="episode", suffixes=("", "_other"))
    if not len(both):
        raise FailureError(f"--against {name!r} shares no evaluation layout with this run")
    if (both.instruction != both.instruction_other).any():
        raise FailureError(f"--against {name!r}: another level or other layouts (its missions differ)")
    tests = exact_paired_by_group(both.success, both.success_other, both.instruction)
    lines = [
        "",
        f"against {name}: {len(both)} shared layouts (McNemar exact p; per instruction kind, Holm)",
        f"{'':<34}{'layouts':>8}{'both':>7}{'this only':>11}{'other only':>12}{'neither':>9}{'p':>9}",
    ]
    for t in tests:
        lines.append(
            f"{t['group']:<34}{t['layouts']:>8}{t['both']:>7}{t['a_only']:>11}{t['b_only']:>12}{t['neither']:>9}{t['p']:>9.3g}"
        )
    lines.append(SCOPE)
    return lines


def build_parser() -> argparse.ArgumentParser:
    return failures_parser(__doc__)


def _check_level(task_id: str) -> None:
    """babyai_env.check_locked_level, as this tool's one-line error."""
    try:
        check_locked_level(task_id)
    except ValueError as e:
        raise FailureError(str(e)) from None


def main(argv: list[str] | None = None) -> pd.DataFrame:
    args = build_parser().parse_args(argv)
    try:
        check_failures_args(args)
        check_table_out(args.out)  # before the episodes are played
        other = read_against(args.against) if args.against else None
        if args.table is not None:
            table = read_against(args.table, "--table")
            head = table_line(args.table, table)
        elif args.bot:
            num_episodes = args.num_episodes or DEFAULT_EPISODES
            _check_level(args.task_id)
            steps, episodes = bot_episodes(args.task_id, num_episodes, not args.no_progress)
            table = anatomy(steps, episodes, args.task_id, None)
            head = played_line(args.task_id, num_episodes, False, table.success.mean(), "the bot")
            takeover = []
        else:
            num_episodes = args.num_episodes or DEFAULT_EPISODES
            steps, episodes, _, config, task_id, _ = play_checkpoint(
                args.checkpoint,
                args.task_id,
                num_episodes,
                args.sample,
                check_level=_check_level,
                device=args.device,
                progress=not args.no_progress,
            )
            table = anatomy(steps, episodes, task_id, config.get("max_steps"))
            head = played_line(task_id, num_episodes, args.sample, table.success.mean())
            starts = takeover_steps(args.takeover)
            takeover = takeover_report(table, steps, task_id, config, starts, not args.no_progress)
        paired = [] if other is None else paired_report(table, other, args.against)
    except (ConfigError, EvalError, FailureError) as e:
        refuse(str(e))
    print(head)
    report = [format_report(table) if whole_table(table) else OUTCOMES_ONLY]
    print("\n".join([*report, *(takeover if args.table is None else []), *paired]))
    if args.table is None:
        save_table(table, args.out)
    return table


if __name__ == "__main__":
    with command_edges():
        main(sys.argv[1:])
