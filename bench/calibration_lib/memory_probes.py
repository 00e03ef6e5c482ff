"""Calibration entries for memory_probe.py's gain over the no-memory probe and its 95% interval (each
fold's bootstrap sd over its episodes, its probe held fixed, the two sds added: gain_interval), registered
in bench/calibration.py's ENTRIES (which runs and reports them; see its docstring).

The simulated episodes walk a 3 x 3 maze of rooms (a move to a neighbouring room with chance 0.15
per step). --target key: each episode's key lies in a random room and is first seen at a random
step of its first half; the probe's entries are the steps after that. --target door: each
episode's door has one of six colours, first seen at a random step of its first half; the entries
are the steps after that until a pickup at a random step of the second half. --target door_offset:
a door at a random cell, the agent's heading a walk of its own (a turn at 30% of the steps); the
entries are the steps after a pickup in the first half, labelled with the door's ten bins ahead of
and to the right of the agent (offset_bins), the no-memory features the room x heading and the step
count (heading_features); where the memory holds it, 10 columns carry the bins. --target key_match: a
key lies ahead at 6% of the steps, of the door's colour (one of six) at 40% of them; the entries are
those after the door was first seen (a random step of the first half), the no-memory features add the
key's colour, and the feature set probed stands for the head's input. --target rooms: "stood in
room r before", every room but the current one (the simulator draws it; no entry measures that target
yet). The memory is 24 columns of noise, and where it
holds the target, 9 of them carry it (key: the key room's one-hot times `strength`, from the first
sighting on; door: 6 of them, the colour's one-hot likewise; key_match: one of them, the match times
`strength` at each entry; rooms: the visited rooms times `strength`). The truth is what the printed gain stands
for: the two fold probes' AUC on fresh episodes (2,000 of them, drawn the same way), averaged over
the two probes and the target columns, minus the no-memory probes' on the same fresh episodes.

    python bench/calibration.py --draws 1000 --only memory_probe_key_null_coverage,memory_probe_key_null_percentile,memory_probe_key_weak_coverage,memory_probe_key_failed_coverage --merge
    python bench/calibration.py --draws 2500 --only memory_probe_key_null_claims --merge
    python bench/calibration.py --draws 1000 --only memory_probe_door_null_coverage,memory_probe_door_weak_coverage,memory_probe_door_null_claims --merge
    python bench/calibration.py --draws 1000 --only memory_probe_key_match_null_coverage,memory_probe_key_match_weak_coverage,memory_probe_key_match_null_claims --merge
    python bench/calibration.py --draws 1000 --only memory_probe_door_offset_null_coverage,memory_probe_door_offset_weak_coverage --merge
    python bench/calibration.py --draws 2500 --only memory_probe_door_offset_null_claims --merge
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from calibration_lib.entry import Entry, covers

EPISODES, STEPS, MEMORY, FRESH = 200, 60, 24, 2000
COLOURS = 6  # --target door: minigrid's six colours
# --target key_match: the share of steps facing a key (~3.6 an episode), and of those keys of the door's colour
FACING, MATCH = 0.06, 0.4
RESAMPLES = 200  # bootstrap resamples per draw (the tool's default is 1000)
FAIL_SHARE = 0.25  # episodes marked failed (auc_failed: a quarter of the episodes)
TURN = 0.3  # --target door_offset: the chance per step that the agent turns (left or right)


def walks(rng: np.random.Generator, episodes: int) -> pd.DataFrame:
    """Room walks of `episodes` x STEPS steps on the 3 x 3 maze (cells at each room's centre)."""
    moves = np.array([(0, 1), (0, -1), (1, 0), (-1, 0)])
    pos = np.zeros((episodes, STEPS, 2), dtype=np.int64)
    pos[:, 0] = rng.integers(3, size=(episodes, 2))
    for t in range(1, STEPS):
        step = moves[rng.integers(4, size=episodes)] * (rng.random(episodes) < 0.15)[:, None]
        pos[:, t] = np.clip(pos[:, t - 1] + step, 0, 2)
    return pd.DataFrame(
        {
            "episode": np.repeat(np.arange(episodes), STEPS),
            "t": np.tile(np.arange(STEPS), episodes),
            "x": pos[..., 1].ravel() * 7 + 3,
            "y": pos[..., 0].ravel() * 7 + 3,
            "success": np.repeat(rng.random(episodes) >= FAIL_SHARE, STEPS),
        }
    )


def episodes_of(rng: np.random.Generator, target: str, strength: float, episodes: int) -> tuple:
    """(steps, memory, Targets) of one simulated set of episodes."""
    import memory_probe as mp
    from mop.babyai_env import RoomLayout

    layout = RoomLayout(room_size=8, num_rows=3, num_cols=3)
    steps = walks(rng, episodes)
    if target == "door":  # a colour of six; seen in the first half, the steps until a pickup
        colour = np.repeat(rng.integers(COLOURS, size=episodes), STEPS)
        seen_at = np.repeat(rng.integers(0, STEPS // 2, size=episodes), STEPS)
        carried_at = np.repeat(rng.integers(STEPS // 2, STEPS + 1, size=episodes), STEPS)
        t = steps["t"].to_numpy()
        eligible = (t > seen_at) & (t <= carried_at)
        rooms = mp.visit_targets(steps, layout)[0]
        labels = np.eye(COLOURS, dtype=bool)[colour]
        mask = np.repeat(eligible[:, None], COLOURS, axis=1)
        young = (t - seen_at < 20)[:, None]
        targets = mp.Targets(labels, mask, mask & young, mask & ~young, mp.no_memory_features(rooms, t, 9))
        held = np.zeros((len(steps), 9))
        held[:, :COLOURS] = labels * (t > seen_at)[:, None]
    elif target == "key":
        key_room = np.repeat(rng.integers(9, size=episodes), STEPS)
        seen_at = np.repeat(rng.integers(0, STEPS // 2, size=episodes), STEPS)
        t = steps["t"].to_numpy()
        eligible = t > seen_at
        rooms = mp.visit_targets(steps, layout)[0]
        labels = np.eye(9, dtype=bool)[key_room]
        mask = np.repeat(eligible[:, None], 9, axis=1)
        young = (t - seen_at < 20)[:, None]
        targets = mp.Targets(labels, mask, mask & young, mask & ~young, mp.no_memory_features(rooms, t, 9))
        held = labels * eligible[:, None]
    elif target == "key_match":  # a key ahead at FACING of the steps, its colour the door's at MATCH
        door = np.repeat(rng.integers(COLOURS, size=episodes), STEPS)
        seen_at = np.repeat(rng.integers(0, STEPS // 2, size=episodes), STEPS)
        t = steps["t"].to_numpy()
        facing = rng.random(len(steps)) < FACING
        match = rng.random(len(steps)) < MATCH
        other = (door + rng.integers(1, COLOURS, size=len(steps))) % COLOURS
        hue = np.eye(COLOURS)[np.where(match, door, other)] * facing[:, None]
        eligible = facing & (t > seen_at)
        rooms = mp.visit_targets(steps, layout)[0]
        labels, mask = (match & facing)[:, None], eligible[:, None]
        young = (t - seen_at < 20)[:, None]
        free = np.concatenate([mp.no_memory_features(rooms, t, 9), hue], axis=1)
        targets = mp.Targets(labels, mask, mask & young, mask & ~young, free)
        held = np.zeros((len(steps), 9))
        held[:, 0] = labels[:, 0] & eligible  # the head's input holds the match where there is one to make
    elif target == "door_offset":  # the door's bins in the agent's frame, from a pickup until the end
        door = rng.integers(3 * 7, size=(episodes, 2))  # a cell anywhere in the maze
        turns = rng.random((episodes, STEPS)) < TURN
        heading = (
            rng.integers(4, size=(episodes, 1)) + np.cumsum(turns * rng.choice([-1, 1], size=turns.shape), 1)
        ) % 4
        steps["direction"] = heading.ravel()
        seen_at = rng.integers(0, STEPS // 4, size=episodes)
        held_at = np.repeat(seen_at + rng.integers(1, STEPS // 4, size=episodes), STEPS)
        t = steps["t"].to_numpy()
        cells, direction = steps[["x", "y"]].to_numpy(), steps["direction"].to_numpy()
        labels = np.zeros((len(steps), 2 * len(mp.OFFSET_BINS)), dtype=bool)
        for e in range(episodes):
            rows = slice(e * STEPS, (e + 1) * STEPS)
            labels[rows] = mp.offset_bins(cells[rows], direction[rows], tuple(door[e]))
        eligible = t > held_at
        mask = np.repeat(eligible[:, None], labels.shape[1], axis=1)
        young = (t - np.repeat(seen_at, STEPS) < 20)[:, None]
        targets = mp.Targets(labels, mask, mask & young, mask & ~young, mp.heading_features(steps, layout))
        held = labels * eligible[:, None]
    else:
        targets = mp.room_targets(steps, layout, min_age=20)
        held = targets.labels
    memory = rng.normal(size=(len(steps), MEMORY))
    memory[:, : held.shape[1]] += strength * held
    return steps, memory, targets


def probe_draw(target: str, strength: float, fresh: bool = True):
    """One draw: (the sample, FRESH episodes drawn after it for the truth); fresh=False skips the fresh
    ones (a claims entry needs no truth; the key and door claims rows were measured with them drawn,
    and keep them so that `--only NAME` still reproduces them)."""

    def draw(rng: np.random.Generator) -> tuple:
        sample = episodes_of(rng, target, strength, EPISODES)
        return (sample, episodes_of(rng, target, strength, FRESH) if fresh else None), None

    return draw


def truth_of(sample: tuple, fresh: tuple, column: str) -> float:
    """The fold probes' mean AUC on the fresh episodes minus the no-memory probes' (subset `column`)."""
    import memory_probe as mp

    (steps, memory, targets), (f_steps, f_memory, f_targets) = sample, fresh
    episode, labels = steps["episode"].to_numpy(), targets.labels.astype(np.float64)
    gains = []
    for features, fresh_features in (
        (targets.free, f_targets.free),
        (np.concatenate([targets.free, memory], 1), np.concatenate([f_targets.free, f_memory], 1)),
    ):
        probes = mp.fold_probes(features, labels, targets.mask, episode, targets.free.shape[1])
        mask = subset(f_steps, f_targets, column)
        values = []
        for r in range(f_targets.labels.shape[1]):
            if f_targets.labels[mask[:, r], r].any() and not f_targets.labels[mask[:, r], r].all():
                for probe in probes:
                    scores = mp.probe_scores(probe, fresh_features[mask[:, r]])[:, r]
                    values.append(mp.auc(scores, f_targets.labels[mask[:, r], r]))
        gains.append(float(np.mean(values)))
    return gains[1] - gains[0]


def subset(steps: pd.DataFrame, targets: Any, column: str) -> np.ndarray:
    solved = steps["success"].to_numpy(dtype=bool)[:, None]
    return {"auc": targets.mask, "auc_old": targets.old, "auc_failed": targets.mask & ~solved}[column]


def table_of(sample: tuple) -> pd.DataFrame:
    import memory_probe as mp

    steps, memory, targets = sample
    return mp.probe_table(steps, memory, [("memory", slice(0, MEMORY))], targets, bootstrap=RESAMPLES).iloc[1]


def gain_covers(column: str):
    gain = f"gain{column[3:]}"

    def run(inputs: tuple, _: Any) -> bool:
        row = table_of(inputs[0])
        return covers(row[f"{gain}_low"], row[f"{gain}_high"], truth_of(*inputs, column))

    return run


def percentile_covers(inputs: tuple, _: Any) -> bool:
    """The interval first written (never released): the 2.5-97.5 percentiles of the resampled gain
    (both folds' episodes resampled together, the two fold probes held fixed), auc column."""
    import memory_probe as mp

    (steps, memory, targets), _fresh = inputs
    episode = steps["episode"].to_numpy()
    ids, index = np.unique(episode, return_inverse=True)
    weights = np.random.default_rng(0).multinomial(len(ids), np.full(len(ids), 1 / len(ids)), size=RESAMPLES)
    rooms = mp.counted_rooms(targets.labels, targets.mask, 20)
    draws = []
    for features in (targets.free, np.concatenate([targets.free, memory], 1)):
        scores = mp.cross_fitted_scores(
            features, targets.labels.astype(np.float64), targets.mask, episode, targets.free.shape[1]
        )
        draws.append(mp.fold_aucs(scores, targets.labels, targets.mask, rooms, index, weights).mean(1))
    low, high = np.nanpercentile(draws[1] - draws[0], [2.5, 97.5])
    return covers(low, high, truth_of(*inputs, "auc"))


def gain_claims(inputs: tuple, _: Any) -> bool:
    """The claim a researcher reads off the table: the gain's interval lies above 0 ("the memory
    holds it")."""
    return bool(table_of(inputs[0])["gain_low"] > 0)


# fmt: off
SETUP = f"{EPISODES} episodes x {STEPS} steps of room walks on a 3 x 3 maze, a {MEMORY}-column memory"
PRINTED = (
    "memory_probe.py gain_low/high ({}: the gain of the cross-fitted memory probe's mean per-room AUC "
    "over the no-memory probe's; gain +- 1.96 x the mean of the two folds' bootstrap sds)"
)
DOOR_PRINTED = PRINTED.format("--target door, auc").replace("per-room", "per-colour")
MATCH_PRINTED = PRINTED.format("--target key_match, auc: the head input's row").replace("mean per-room ", "")
OFFSET_PRINTED = PRINTED.format("--target door_offset, auc").replace("per-room", "per-bin")
OFFSET_SETUP = (f"{SETUP}; the agent turns at {TURN:.0%} of the steps, a door at a random cell, its 10 bins "
                "ahead / right of the agent the entries from a pickup in the first half on")
MATCH_SETUP = (f"{SETUP} standing for the head's input; a key ahead at {FACING:.0%} of the steps, of the door's "
               f"colour at {MATCH:.0%}, the entries after the door's sighting")
ENTRIES: list[Entry] = [
    Entry("memory_probe_key_null_coverage", PRINTED.format("--target key, auc"), "coverage", 0.95, "coverage",
          probe_draw("key", 0.0), gain_covers("auc"),
          f"{SETUP} of noise (holds nothing); truth: the fold probes' gain on {FRESH} fresh episodes", cost=3.33),
    Entry("memory_probe_key_null_percentile", "the interval first written: percentiles of the resampled gain, "
          "both folds resampled together with their probes held fixed (as if the folds' errors were "
          "independent)", "coverage", 0.95, "coverage", probe_draw("key", 0.0), percentile_covers,
          "the first row's data", cost=3.33,
          outcome="fixed before it was reported: the two folds' bootstrap sds are added (gain_interval, first row)"),
    Entry("memory_probe_key_null_claims", "the same interval above 0 (read as 'the memory holds where the key "
          "lies'; one-sided, so nominal 0.025)", "rejection", 0.025, "null", probe_draw("key", 0.0), gain_claims,
          f"{SETUP} of noise: the memory holds nothing", cost=2.5),
    Entry("memory_probe_key_weak_coverage", PRINTED.format("--target key, auc"), "coverage", 0.95, "coverage",
          probe_draw("key", 0.3), gain_covers("auc"),
          f"{SETUP}; 9 columns hold the key room's one-hot x 0.3 from its first sighting", cost=3.33),
    Entry("memory_probe_key_failed_coverage", PRINTED.format("--target key, auc_failed: a quarter of the "
          "episodes"), "coverage", 0.95, "coverage", probe_draw("key", 0.3), gain_covers("auc_failed"),
          f"the same data; {FAIL_SHARE:.0%} of the episodes marked failed", cost=3.33),
    Entry("memory_probe_door_null_coverage", DOOR_PRINTED, "coverage", 0.95, "coverage",
          probe_draw("door", 0.0), gain_covers("auc"),
          f"{SETUP} of noise; the door's colour one of {COLOURS}, seen in the first half, the steps until a "
          f"pickup in the second; truth: the fold probes' gain on {FRESH} fresh episodes", cost=3.33),
    Entry("memory_probe_door_null_claims", "the same interval above 0 (--target door: read as 'the memory "
          "holds the door's colour'; one-sided, so nominal 0.025)", "rejection", 0.025, "null",
          probe_draw("door", 0.0), gain_claims, "the first door row's data: the memory holds nothing", cost=1.0),
    Entry("memory_probe_door_weak_coverage", DOOR_PRINTED, "coverage", 0.95, "coverage",
          probe_draw("door", 0.3), gain_covers("auc"),
          f"{SETUP}; 6 columns hold the door colour's one-hot x 0.3 from its first sighting", cost=3.33),
    Entry("memory_probe_key_match_null_coverage", MATCH_PRINTED, "coverage", 0.95, "coverage",
          probe_draw("key_match", 0.0), gain_covers("auc"),
          f"{MATCH_SETUP}; it holds nothing; truth: the fold probes' gain on {FRESH} fresh episodes", cost=1.0),
    Entry("memory_probe_key_match_null_claims", "the same interval above 0 (--target key_match: read as 'the "
          "head's input holds whether the key ahead matches the door'; one-sided, so nominal 0.025)",
          "rejection", 0.025, "null", probe_draw("key_match", 0.0, fresh=False), gain_claims,
          "the first key_match row's setup, without the fresh episodes (no truth needed): it holds nothing",
          cost=1.0),
    Entry("memory_probe_key_match_weak_coverage", MATCH_PRINTED, "coverage", 0.95, "coverage",
          probe_draw("key_match", 0.5), gain_covers("auc"),
          f"{MATCH_SETUP}; one column holds the match x 0.5 at each entry", cost=1.0),
    Entry("memory_probe_door_offset_null_coverage", OFFSET_PRINTED, "coverage", 0.95, "coverage",
          probe_draw("door_offset", 0.0), gain_covers("auc"),
          f"{OFFSET_SETUP}; it holds nothing; truth: the fold probes' gain on {FRESH} fresh episodes", cost=3.33),
    Entry("memory_probe_door_offset_null_claims", "the same interval above 0 (--target door_offset: read as 'the "
          "memory holds where the door lies'; one-sided, so nominal 0.025)", "rejection", 0.025, "null",
          probe_draw("door_offset", 0.0, fresh=False), gain_claims,
          "the first door_offset row's setup, without the fresh episodes (no truth needed): it holds nothing",
          cost=2.5),
    Entry("memory_probe_door_offset_weak_coverage", OFFSET_PRINTED, "coverage", 0.95, "coverage",
          probe_draw("door_offset", 0.3), gain_covers("auc"),
          f"{OFFSET_SETUP}; 10 columns hold the door's bins x 0.3 at each entry", cost=3.33),
]
# fmt: on
