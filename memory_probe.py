"""Does a policy's recurrent memory hold which rooms it has visited, or where the key it needs lies?
Linear probes per memory block.

On the maze levels (3x3 rooms) a student that fails runs to the step limit in a loop of rooms that
never enters the room with the key or the door, while the bot it imitates explores what it has not
seen. The question this tool answers: can the rooms the agent has visited be read linearly out of
its memory *before* a step, and which block of the memory (a router's or an expert's hidden state)
holds them?

The checkpoint plays `--num_episodes` evaluation layouts itself (eval_mop.run_episodes, greedy, or
sampled with --sample). At every step t and every room r other than the one the agent stands in,
the target is "the agent stood in room r at some step before t". A linear probe per room reads it
from a feature set; every step is scored by the probe fitted on the other half of the episodes
(two folds), and the scores are summarised by ROC AUC (0.5 = no information) per room, averaged
over the rooms with enough of both classes:
- `no memory`: the current room (one-hot) and the step count, which say how likely a visit is
  without remembering one;
- `all`: the whole memory; `layer k router`, `layer k expert j (size s)`: one block of it. Each
  memory probe reads the no-memory features too, so what it gains over that row is what the
  memory adds (a memory that held the visited rooms exactly would score near 1).
Columns: `auc` over every target; `auc_old` over visits at least --min_age steps ago (against the
unvisited rooms): what the memory keeps; `auc_recent` over the visits since (against the same):
what it has just seen; `auc_solved` / `auc_failed` on the episodes each ended so.

`--target key` (a level with a locked door: Unlock, GoToImpUnlock) asks instead "which room holds a
key of the locked door's colour", on the steps after one has been in view and before the agent first
holds one (each episode is replayed in a fresh env of its layout to find them); every room is a
target, the one the agent stands in too. `auc_old`: the steps at least --min_age steps after a
matching key was last in view, the ones a memory must keep it for. `--target key_offset` asks the
same in the agent's own frame, the one it would walk back by: how many cells ahead and to its right
the key lies, each axis in five bins about a room wide (the no-memory row then knows the agent's
room and heading, which bound the offsets). A memory could hold either frame. The failing GoToImpUnlock
students see a key of the door's colour and never fetch it; this says whether they still hold where
it was, and on which episodes. `--target door` asks "the locked door's colour is c" (a column per
colour) on the steps after the door was in view and before the agent first carried anything, where
it chooses which key to take: `auc_old` counts the steps at least --min_age after the door was last
in view. The failing GoToImpUnlock students take a key of another colour (failures.py).

`--target key_match` asks the question those answers leave: at the steps where a key lies in the cell
ahead, the agent's hands are free and the locked door has been in view, "the key ahead has the
locked door's colour" (the steps where it chooses to pick up or walk on; the bot picks up only the
key that matches). The no-memory features add the colour of the key ahead. No linear probe of the
memory before the step can answer it (the match is a product of the door's colour the memory holds
and the key's colour the view shows), so the row to read is the next one.

`--target door_offset` asks the step after: on the steps holding a key of the locked door's colour
while the door is still locked (after it was in view), where the door lies in the agent's frame, in
key_offset's bins (the no-memory row again knows the agent's room and heading). `auc_old` counts
the steps at least --min_age after the door was last in view. The GoToImpUnlock students that hold
the right key and never unlock have seen the door, most of them long before (failures.py's
key_held stage); this says whether their memory still holds the way back to it.

Two rows read what the action head reads at step t, after the layers have read its view: `head
input`, the last layer's output (the residual stream: the features the MoP paper's one Linear head,
or BabyAI's actor, is fed), and, for a policy with --head_hidden_size H, `actor hidden` (the H Tanh
units its last Linear reads); for a policy with --head_reads_experts, `head input (output + routed
experts)` after the first: all the head reads, the experts' states times their router weights
included. They are not memory (they saw step t's view); what they hold bounds
what the head can act on linearly: a key match the head input holds is one a linear head can read,
one only the actor hidden holds was computed by the actor itself.

The last row, `last view (control)`, probes the view the memory read last (the observation of step
t - 1, encoded as the policy reads it; zeros at t = 0) instead of a memory block: a positive
control, what a memory that kept its last input exactly would give. With --min_age 2 its recent
column covers the steps just after a sighting, where that view shows what the target asks about:
an interval above 0 there says the probe can find the target in a view that holds it, so a memory
row near 0 there is the memory's, not the probe's, shortfall.

Every memory row's gain over the no-memory row comes with a 95% interval: within each fold of
episodes the probe that scores it was fitted on the other fold, so each fold's gain has a bootstrap
sd over its own episodes (--bootstrap resamples of whole episodes); the interval is the gain +-
1.96 times the mean of the two sds, which holds whatever the two folds' errors share
(docs/calibration.md, memory_probe_* rows; taken as independent they covered 0.900 of 300 simulated truths).

    python memory_probe.py --checkpoint checkpoints/BabyAI-Unlock-v0/trial_0/checkpoint_final.pt
    python memory_probe.py --checkpoint CK --num_episodes 300 --min_age 64 --out probe.csv
    python memory_probe.py --checkpoint CK --task_id BabyAI-GoToImpUnlock-v0 --target key --num_episodes 300
    python memory_probe.py --checkpoint CK --task_id BabyAI-GoToImpUnlock-v0 --target door --num_episodes 300
    python memory_probe.py --checkpoint CK --task_id BabyAI-GoToImpUnlock-v0 --target key_match --num_episodes 500
    python memory_probe.py --checkpoint CK --task_id BabyAI-GoToImpUnlock-v0 --target door_offset --num_episodes 500
"""

from __future__ import annotations

if __name__ == "__main__":  # flags answered before torch, pandas and scipy load (bench/startup.py)
    from mop.cli_specs import answer_early, check_memory_probe_args, memory_probe_parser

    answer_early(lambda: check_memory_probe_args(memory_probe_parser(__doc__).parse_args()))

import argparse
import sys
import warnings
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch
from minigrid.core.constants import COLOR_TO_IDX, OBJECT_TO_IDX
from scipy import sparse
from scipy.stats import rankdata

from eval_mop import (
    ActedStep,
    EvalError,
    check_table_out,
    play_checkpoint,
    played_line,
    save_table,
)
from mixture_of_experts import MixtureOfExpertsPolicy
from mop.babyai_env import (
    EVAL_SEED_START,
    NO_DOOR,
    KeyTracker,
    RoomLayout,
    check_locked_level,
    encode_obs,
    key_ahead,
    locked_door_colour,
    locked_doors,
    make_env,
    quiet_reset,
)
from mop.checks import ConfigError, command_edges, refuse
from mop.cli_specs import MEMORY_PROBE_TARGETS, check_memory_probe_args, memory_probe_parser
from mop.collection import MissionCache, ObsBatch, act

NO_MEMORY = "no memory"
TARGETS = MEMORY_PROBE_TARGETS  # --target: its parser answers --help before torch is imported
SUBSETS = ("auc", "auc_recent", "auc_old", "auc_solved", "auc_failed")
_KEY = OBJECT_TO_IDX["key"]
COLOURS = tuple(COLOR_TO_IDX)  # --target door's columns, minigrid's colour order
AHEAD = (3, 5)  # the cell in front of the agent in its 7 x 7 view (indexed [x, y]; it stands at (3, 6))
HEAD_INPUT = "head input (last layer's output)"
HEAD_READ = "head input (output + routed experts)"  # --head_reads_experts: all the head reads
ACTOR_HIDDEN = "actor hidden (Tanh)"


class Targets(NamedTuple):
    """What the probes read, per step (rows: the steps sorted by episode and t) and target column."""

    labels: np.ndarray  # (N, R) bool: the target holds
    mask: np.ndarray  # (N, R) bool: the entries a probe is fitted on and scored on
    recent: np.ndarray  # (N, R) bool: the entries of mask fresh in the memory (under --min_age)
    old: np.ndarray  # (N, R) bool: the entries of mask that test what the memory keeps (--min_age)
    free: np.ndarray  # (N, F) the no-memory features (every memory probe reads them too)


class ProbeError(ValueError):
    """A checkpoint or level the probe cannot read; one line."""


def room_layout(task_id: str, target: str = "rooms") -> RoomLayout:
    """The room grid of a level; ProbeError for a level of one room (nothing to remember) and, for
    the key targets, for a level without a locked door in its first layouts."""
    layout = RoomLayout.of(make_env(task_id))
    if layout.num_rooms < 2:
        raise ProbeError(f"{task_id} has one room: there are no visited rooms to remember")
    if target != "rooms":
        try:
            check_locked_level(task_id)
        except ValueError as e:
            raise ProbeError(f"--target {target}: {e}") from None
    return layout


def visit_ages(rooms: np.ndarray, episode: np.ndarray, num_rooms: int) -> np.ndarray:
    """(N, R) steps since the agent last stood in each room before this step (1 = the step before);
    0 where it never has in this episode. Rows sorted by (episode, t)."""
    ages = np.zeros((len(rooms), num_rooms), dtype=np.int64)
    last = np.full(num_rooms, -1, dtype=np.int64)
    for i in range(len(rooms)):
        if i == 0 or episode[i] != episode[i - 1]:
            last[:] = -1
            t0 = i
        t = i - t0
        seen = last >= 0
        ages[i, seen] = t - last[seen]
        last[rooms[i]] = t
    return ages


def memory_blocks(policy: torch.nn.Module) -> list[tuple[str, slice]]:
    """Named column ranges of the flat memory: the whole of it, then each router and expert."""
    sizes = list(policy.memory_sizes)
    names: list[str] = []
    if isinstance(policy, MixtureOfExpertsPolicy):
        for k, layer_sizes in enumerate(policy.expert_sizes):
            names.append(f"layer {k} router")
            names += [f"layer {k} expert {j} (size {s})" for j, s in enumerate(layer_sizes) if s > 0]
    else:
        names = [f"gru {i}" for i in range(len(sizes))]
    edges = np.cumsum([0, *sizes])
    blocks = [("all", slice(0, int(edges[-1])))]
    if len(sizes) > 1:
        blocks += [(name, slice(int(a), int(b))) for name, a, b in zip(names, edges[:-1], edges[1:])]
    return blocks


RIDGE_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)  # l2 per fitted row, on standardised features


def _ridge(
    x: np.ndarray, y: np.ndarray, free: int, penalties: tuple[float, ...]
) -> list[tuple[np.ndarray, float]]:
    """Ridge regressions of each column of y (N, K) on x with an intercept, one (W (D, K), b (K,))
    per penalty (times rows); the first `free` columns of x are not penalised."""
    mean_x, mean_y = x.mean(0), y.mean(0)
    xc = x - mean_x
    gram, moment = xc.T @ xc, xc.T @ (y - mean_y)
    scale = np.ones(x.shape[1])
    scale[:free] = 0.0
    fits = []
    for penalty in penalties:
        regularised = gram + np.diag(scale * penalty * len(x) + 1e-9 * len(x))
        w = np.linalg.solve(regularised, moment)
        fits.append((w, mean_y - mean_x @ w))
    return fits


def fit_probe(x: np.ndarray, y: np.ndarray, mask: np.ndarray, episode: np.ndarray, free: int = 0) -> tuple:
    """Linear probes, one per target column r: a ridge regression of y[:, r] on the standardised
    features over the rows where mask[:, r] (a linear score is all an AUC needs). The first `free`
    columns (the no-memory features) are not penalised, so the memory's columns are shrunk towards
    the no-memory probe. Each column's penalty is picked from RIDGE_GRID by AUC on the last quarter
    of these episodes (fitted on the rest), then refitted on all of them: with hundreds of features
    and a few hundred episodes an unpenalised probe fits the noise of the episodes it saw. Columns
    with the same mask (--target key: all of them) share one Gram matrix.
    Returns (mean, std, W (D, R), b (R,)); a column with one class predicts its mean."""
    mean, std = x.mean(0), x.std(0) + 1e-6
    z = (x - mean) / std
    ids = np.unique(episode)
    held = np.isin(episode, ids[(3 * len(ids)) // 4 :])
    w_all, b_all = np.zeros((x.shape[1], y.shape[1])), np.zeros(y.shape[1])
    groups: dict[bytes, list[int]] = {}
    for r in range(y.shape[1]):
        rows, target = mask[:, r], y[:, r]
        if not rows.any() or target[rows].min() == target[rows].max():
            b_all[r] = float(target[rows].mean()) if rows.any() else 0.0
            continue
        groups.setdefault(np.packbits(rows).tobytes(), []).append(r)
    for columns in groups.values():
        rows = mask[:, columns[0]]
        fit, check = rows & ~held, rows & held
        best = {r: RIDGE_GRID[-1] for r in columns}
        usable = [r for r in columns if len(set(y[fit, r])) == 2 and len(set(y[check, r])) == 2]
        if fit.sum() > 1 and usable:
            fits = _ridge(z[fit], y[fit][:, usable], free, RIDGE_GRID)
            for k, r in enumerate(usable):
                scores = [auc(z[check] @ w[:, k] + b[k], y[check, r] > 0.5) for w, b in fits]
                best[r] = RIDGE_GRID[int(np.argmax(scores))]
        for penalty in sorted(set(best.values())):
            chosen = [r for r in columns if best[r] == penalty]
            w, b = _ridge(z[rows], y[rows][:, chosen], free, (penalty,))[0]
            w_all[:, chosen], b_all[chosen] = w, b
    return mean, std, w_all, b_all


def probe_scores(probe: tuple, x: np.ndarray) -> np.ndarray:
    mean, std, w, b = probe
    return ((x - mean) / std) @ w + b


def second_fold(episode: np.ndarray) -> np.ndarray:
    """The rows of the second half of the episodes (by id): the probes' two folds."""
    ids = np.unique(episode)
    return np.isin(episode, ids[len(ids) // 2 :])


def cross_fitted_scores(
    x: np.ndarray, y: np.ndarray, mask: np.ndarray, episode: np.ndarray, free: int = 0
) -> np.ndarray:
    """Every row's probe score from the probe fitted on the other half of the episodes (two folds,
    split by episode, second_fold): each step is scored by a probe that never saw its episode."""
    second = second_fold(episode)
    scores = np.zeros(y.shape)
    for test, probe in zip((~second, second), fold_probes(x, y, mask, episode, free)):
        scores[test] = probe_scores(probe, x[test])
    return scores


def fold_probes(x: np.ndarray, y: np.ndarray, mask: np.ndarray, episode: np.ndarray, free: int = 0) -> tuple:
    """The two probes cross_fitted_scores scores with: the one that scores the first fold (fitted on
    the second) and the one that scores the second."""
    second = second_fold(episode)
    return tuple(
        fit_probe(x[train], y[train], mask[train], episode[train], free) for train in (second, ~second)
    )


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC (ties count half); NaN without both classes."""
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


class Played(NamedTuple):
    """What collect played and kept, per step (rows: the steps sorted by episode and t)."""

    steps: pd.DataFrame  # x, y, action, ... and the episode's success
    memory: np.ndarray  # (N, M) the memory before each step
    policy: torch.nn.Module
    task_id: str
    layout: RoomLayout
    config: dict
    views: np.ndarray  # (N, obs_dim) the view each step read, encoded as the policy reads it
    images: np.ndarray  # (N, 7, 7, 3) the raw view (object, colour, state codes)
    carrying: np.ndarray  # (N,) the agent's hands were full
    heads: list[tuple[str, np.ndarray]]  # head_features: what the action head read at each step


def collect(
    checkpoint: str,
    task_id: str | None,
    num_episodes: int,
    sample: bool,
    num_envs: int = 16,
    device: str = "cpu",
    progress: bool = True,
    target: str = "rooms",
) -> Played:
    """Play the episodes and keep what the probes read (Played). The key targets refuse, before any
    play, a level without a locked door."""
    memories: dict[tuple[int, int], np.ndarray] = {}
    reads: dict[tuple[int, int], tuple] = {}

    def keep(step: ActedStep) -> None:
        mem = step.memory.numpy()
        b = step.batch
        for r, (e, t) in enumerate(zip(step.episode, step.t)):
            memories[(e, t)] = mem[r].copy()
            reads[(e, t)] = (b.image[r].copy(), int(b.direction[r]), int(b.carrying[r]), b.missions[r])

    layouts: list[RoomLayout] = []  # room_layout refuses a one-room level before any play
    try:
        steps, episodes, policy, config, task_id, encoder = play_checkpoint(
            checkpoint,
            task_id,
            num_episodes,
            sample,
            keep,
            num_envs,
            lambda t: layouts.append(room_layout(t, target)),
            device,
            progress=progress,
        )
    except EvalError as e:
        raise ProbeError(str(e)) from None
    layout = layouts[0]
    success = episodes.set_index("episode")["success"].astype(bool)
    steps["success"] = success.loc[steps["episode"]].to_numpy()
    keys = list(zip(steps["episode"].astype(int), steps["t"].astype(int)))
    memory = np.stack([memories[k] for k in keys])
    image, direction, carrying, missions = zip(*(reads[k] for k in keys))
    batch = ObsBatch(np.stack(image), np.array(direction, np.int64), np.array(carrying), list(missions))
    views = encode_obs(
        torch.from_numpy(batch.image),
        torch.from_numpy(batch.direction),
        torch.from_numpy(batch.carrying),
        config["obs_encoding"],
    ).numpy()
    heads = head_features(policy, MissionCache(encoder), config, batch, memory)
    return Played(
        steps, memory, policy, task_id, layout, config, views, batch.image, batch.carrying > 0, heads
    )


@torch.no_grad()
def head_features(
    policy: torch.nn.Module,
    missions: MissionCache,
    config: dict,
    batch: ObsBatch,
    memory: np.ndarray,
    chunk: int = 2048,
) -> list[tuple[str, np.ndarray]]:
    """What the action head read at each step: each step played again in torch from the view and the
    memory before it (the play itself may have acted in numpy, which equals torch to float rounding),
    with the input of the head's Linear layers caught on the way. [(HEAD_INPUT, (N, D))], and
    (ACTOR_HIDDEN, (N, H)) after it for a policy with an actor (--head_hidden_size H). A head that
    reads the experts (--head_reads_experts) gives its last layer's output as HEAD_INPUT and all it
    reads (that and the routed experts' states) as HEAD_READ after it."""
    layers = [getattr(policy, "head_hidden", None), policy.head]
    names = (
        [(HEAD_INPUT, layers[0]), (ACTOR_HIDDEN, layers[1])]
        if layers[0] is not None
        else [(HEAD_INPUT, layers[1])]
    )
    caught: dict[str, list[np.ndarray]] = {name: [] for name, _ in names}
    hooks = [
        layer.register_forward_pre_hook(
            lambda _m, args, name=name: caught[name].append(args[0].float().cpu().numpy())
        )
        for name, layer in names
    ]
    try:
        for start in range(0, len(memory), chunk):
            part = slice(start, start + chunk)
            rows = ObsBatch(
                batch.image[part], batch.direction[part], batch.carrying[part], batch.missions[part]
            )
            act(policy, missions, rows, torch.from_numpy(memory[part]), config["obs_encoding"])
    finally:
        for hook in hooks:
            hook.remove()
    out = [(name, np.concatenate(caught[name]) if caught[name] else np.zeros((0, 0))) for name, _ in names]
    if getattr(getattr(policy, "config", None), "head_reads_experts", False):
        full = out[0][1]
        out[:1] = [(HEAD_INPUT, full[:, : policy.config.intermediate_dim]), (HEAD_READ, full)]
    return out


CONTROL = "last view (control)"


def last_views(steps: pd.DataFrame, views: np.ndarray) -> np.ndarray:
    """(N, D) the view each step's memory read last: the one encoded at step t - 1 of its episode
    (zeros at t = 0). A probe on it is the positive control of a memory probe: what a memory that
    kept its last input exactly would give, and on the steps just after a sighting (--min_age 2:
    the recent column), whether the probe can find the target in a view that holds it."""
    out = np.zeros_like(views, dtype=np.float32)
    follows = np.zeros(len(steps), dtype=bool)
    follows[1:] = steps["episode"].to_numpy()[1:] == steps["episode"].to_numpy()[:-1]
    out[1:][follows[1:]] = views[:-1][follows[1:]]
    return out


def step_rooms(steps: pd.DataFrame, layout: RoomLayout) -> np.ndarray:
    """(N,) the room each step's agent stands in."""
    return np.array([layout.room_of(x, y) for x, y in zip(steps["x"], steps["y"])], dtype=np.int64)


def after_sightings(
    labels: np.ndarray, eligible: np.ndarray, age: np.ndarray, min_age: int, free: np.ndarray
) -> Targets:
    """The key and door targets: every column on the `eligible` steps (N,), recent where fewer than
    min_age steps have passed since the last sighting (`age`), old where at least min_age."""
    mask = np.repeat(eligible[:, None], labels.shape[1], axis=1)
    young, old = mask & (age < min_age)[:, None], mask & (age >= min_age)[:, None]
    return Targets(labels=labels, mask=mask, recent=young, old=old, free=free)


def visit_targets(steps: pd.DataFrame, layout: RoomLayout) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(room of each step (N,), visit ages (N, R), elsewhere (N, R)): elsewhere is False for the
    room the agent stands in, which its view shows and is no test of memory."""
    rooms = step_rooms(steps, layout)
    ages = visit_ages(rooms, steps["episode"].to_numpy(), layout.num_rooms)
    elsewhere = np.ones_like(ages, dtype=bool)
    elsewhere[np.arange(len(rooms)), rooms] = False
    return rooms, ages, elsewhere


def no_memory_features(rooms: np.ndarray, t: np.ndarray, num_rooms: int) -> np.ndarray:
    """What says how likely a visit is without remembering one: the current room (one-hot) and the
    step count (t, t^2, scaled to the longest episode)."""
    scaled = t.astype(np.float64) / max(float(t.max()), 1.0)
    return np.concatenate([np.eye(num_rooms)[rooms], scaled[:, None], scaled[:, None] ** 2], axis=1)


def room_targets(steps: pd.DataFrame, layout: RoomLayout, min_age: int) -> Targets:
    """--target rooms: "the agent stood in room r before this step", for every room but the one it
    stands in; old: visits at least min_age steps ago (against the rooms never visited), recent:
    the visits since."""
    rooms, ages, elsewhere = visit_targets(steps, layout)
    visited = ages > 0
    return Targets(
        labels=visited,
        mask=elsewhere,
        recent=elsewhere & (~visited | (ages < min_age)),
        old=elsewhere & (~visited | (ages >= min_age)),
        free=no_memory_features(rooms, steps["t"].to_numpy(), layout.num_rooms),
    )


class Sightings(NamedTuple):
    """One replayed episode, per step t (before its action): what the agent had seen and held."""

    cells: list[tuple[int, int]]  # the agent's cell
    key_last_seen: np.ndarray  # the step a matching key was last in view before t (-1: never)
    key_held: np.ndarray  # bool: such a key was held before t (KeyTracker.update_held)
    keys: list[tuple[int, int]]  # the cells those keys lay in at the start
    door_last_seen: np.ndarray  # the step a locked door was last in view before t (-1: never)
    carried: np.ndarray  # bool: the agent has carried anything (any key, ball, box) before t
    door_colours: set[str]  # the locked doors' colours
    doors: list[tuple[int, int]]  # the cells of the doors locked at the start
    door_locked: np.ndarray  # bool: one of them is still locked at t (before its action)


def key_sightings(env: Any, seed: int, actions: list[int]) -> Sightings:
    """Replay one episode from layout `seed` (Sightings). The keys, their colours and the held flag
    are KeyTracker's (the --aux_key_weight head's); a sighting here is any such key, or any locked
    door, in the view the policy read."""
    obs = quiet_reset(env, seed)
    tracker = KeyTracker()
    tracker.reset(env)
    colours = [COLOR_TO_IDX[c] for c in tracker.colours]
    doors = locked_doors(env)
    cells, last_seen, held, door_seen, carried, locked = [], [], [], [], [], []
    seen = door = -1
    anything = False
    for t, action in enumerate(actions):
        cells.append(tuple(int(v) for v in env.agent_pos))
        last_seen.append(seen)
        door_seen.append(door)
        image = obs["image"]
        held.append(tracker.update_held(env))  # what the agent carries before step t included
        anything = anything or env.carrying is not None
        carried.append(anything)
        locked.append(any(env.grid.get(*d).is_locked for d in doors))
        if ((image[..., 0] == _KEY) & np.isin(image[..., 1], colours)).any():
            seen = t
        if locked_door_colour(image) != NO_DOOR:
            door = t
        obs, *_ = env.step(int(action))
    return Sightings(
        cells,
        np.array(last_seen),
        np.array(held),
        tracker.keys,
        np.array(door_seen),
        np.array(carried),
        set(tracker.colours),
        doors,
        np.array(locked, dtype=bool),
    )


# --target key_offset: the key's offset from the agent in its own frame (cells ahead, cells to its
# right), each axis cut into five bins about a room wide: <= -11, -10..-4, -3..3, 4..10, >= 11.
OFFSET_EDGES = (-10.5, -3.5, 3.5, 10.5)
OFFSET_BINS = ("<=-11", "-10..-4", "-3..3", "4..10", ">=11")
_DIRECTIONS = np.array([(1, 0), (0, 1), (-1, 0), (0, -1)])  # minigrid's agent_dir 0..3 as (dx, dy)


def offset_bins(cells: np.ndarray, direction: np.ndarray, key: tuple[int, int]) -> np.ndarray:
    """(N, 10) bool: the bin of the key's cells ahead (columns 0-4) and to the right (5-9) of an
    agent at `cells` (N, 2) facing `direction` (N,)."""
    forward = _DIRECTIONS[direction]
    right = np.stack([-forward[:, 1], forward[:, 0]], axis=1)
    offset = np.asarray(key)[None, :] - cells
    out = np.zeros((len(cells), 2 * len(OFFSET_BINS)), dtype=bool)
    for axis, unit in enumerate((forward, right)):
        bins = np.digitize((offset * unit).sum(1), OFFSET_EDGES)
        out[np.arange(len(cells)), axis * len(OFFSET_BINS) + bins] = True
    return out


def key_targets(
    steps: pd.DataFrame,
    task_id: str,
    max_steps: int | None,
    layout: RoomLayout,
    min_age: int,
    frame: str = "room",
) -> Targets:
    """--target key (frame "room"): "a key of the locked door's colour lies in room r" (where it lay
    at the start), for every room; --target key_offset (frame "agent"): "it lies in this bin of
    cells ahead of / to the right of the agent" (offset_bins; the no-memory features add the agent's
    heading within its room, which bound the offsets a room allows). Both on the steps after such a
    key was in view and before the agent first held one; old: at least min_age steps since one was
    last in view, recent: fewer (the view that showed it is fresh in the memory: a positive
    control, since a memory that holds anything of its views holds the key's place there). Each episode is replayed from its layout (EVAL_SEED_START + episode); ProbeError
    if the replay walks elsewhere than the play did."""
    num = len(steps)
    width = layout.num_rooms if frame == "room" else 2 * len(OFFSET_BINS)
    labels = np.zeros((num, width), dtype=bool)
    eligible, age = np.zeros(num, dtype=bool), np.zeros(num, dtype=np.int64)
    for rows, group, seen in replays(steps, task_id, max_steps):
        cells, last_seen, held, key_cells = seen.cells, seen.key_last_seen, seen.key_held, seen.keys
        for key in key_cells:
            if frame == "room":
                labels[rows, layout.room_of(*key)] = True
            else:
                labels[rows] |= offset_bins(np.array(cells), group["direction"].to_numpy(), key)
        eligible[rows] = (last_seen >= 0) & ~held & bool(key_cells)
        age[rows] = group["t"].to_numpy() - last_seen
    if frame == "room":
        free = no_memory_features(step_rooms(steps, layout), steps["t"].to_numpy(), layout.num_rooms)
    else:
        free = heading_features(steps, layout)
    return after_sightings(labels, eligible, age, min_age, free)


def heading_features(steps: pd.DataFrame, layout: RoomLayout) -> np.ndarray:
    """The no-memory features of an offset target: the agent's room x heading (one-hot: what its
    place says about the offsets a room allows) and the step count's."""
    rooms = step_rooms(steps, layout)
    free = no_memory_features(rooms, steps["t"].to_numpy(), layout.num_rooms)
    place = rooms * 4 + steps["direction"].to_numpy()
    return np.concatenate([np.eye(4 * layout.num_rooms)[place], free[:, layout.num_rooms :]], axis=1)


def replayed(env: Any, episode: int, group: pd.DataFrame) -> Sightings:
    """key_sightings of one played episode (its rows of steps) from its layout; ProbeError if the
    replay walks elsewhere than the play did."""
    seen = key_sightings(env, EVAL_SEED_START + episode, group["action"].tolist())
    if seen.cells != list(zip(group["x"].astype(int), group["y"].astype(int))):
        raise ProbeError(f"episode {episode} replays to other cells than it was played in")
    return seen


def replays(steps: pd.DataFrame, task_id: str, max_steps: int | None):
    """Each played episode in turn: (its rows of `steps`, sorted by episode and t, as a slice; those
    rows; its replay, `replayed`), all replayed in one env of the level."""
    env = make_env(task_id, max_steps)
    start = 0
    for episode, group in steps.groupby("episode", sort=True):
        rows = slice(start, start + len(group))
        yield rows, group, replayed(env, int(episode), group)
        start = rows.stop


def door_targets(
    steps: pd.DataFrame, task_id: str, max_steps: int | None, layout: RoomLayout, min_age: int
) -> Targets:
    """--target door: "the locked door's colour is c", one column per minigrid colour (COLOURS), on
    the steps after a locked door was in view and before the agent first carried anything: the
    steps where it chooses which key to take, and the colour it must match is out of its view
    unless the door is still in it (recent: fewer than min_age steps since the door was last in
    view; old: at least min_age, what the memory must keep). The no-memory features are the agent's
    room and the step count, as for the other targets. Each episode is replayed from its layout."""
    num = len(steps)
    labels = np.zeros((num, len(COLOURS)), dtype=bool)
    eligible, age = np.zeros(num, dtype=bool), np.zeros(num, dtype=np.int64)
    for rows, group, seen in replays(steps, task_id, max_steps):
        labels[rows, [COLOURS.index(c) for c in seen.door_colours]] = True
        eligible[rows] = (seen.door_last_seen >= 0) & ~seen.carried
        age[rows] = group["t"].to_numpy() - seen.door_last_seen
    free = no_memory_features(step_rooms(steps, layout), steps["t"].to_numpy(), layout.num_rooms)
    return after_sightings(labels, eligible, age, min_age, free)


def door_offset_targets(
    steps: pd.DataFrame, task_id: str, max_steps: int | None, layout: RoomLayout, min_age: int
) -> Targets:
    """--target door_offset: "the locked door lies in this bin of cells ahead of / to the right of
    the agent" (offset_bins, ten columns), on the steps from the one a key of its colour is first
    held (KeyTracker's held flag: carried before the step's action) while the door is still locked,
    after it was in view: the steps where the agent must bring the key back to a door it may have
    seen hundreds of steps before. recent: fewer than min_age steps since a locked door was last in
    view; old: at least min_age. The no-memory features are the agent's room x heading and the step
    count (heading_features), as for key_offset. Each episode is replayed from its layout."""
    num = len(steps)
    labels = np.zeros((num, 2 * len(OFFSET_BINS)), dtype=bool)
    eligible, age = np.zeros(num, dtype=bool), np.zeros(num, dtype=np.int64)
    for rows, group, seen in replays(steps, task_id, max_steps):
        for door in seen.doors:
            labels[rows] |= offset_bins(np.array(seen.cells), group["direction"].to_numpy(), door)
        eligible[rows] = seen.key_held & seen.door_locked & (seen.door_last_seen >= 0) & bool(seen.doors)
        age[rows] = group["t"].to_numpy() - seen.door_last_seen
    return after_sightings(labels, eligible, age, min_age, heading_features(steps, layout))


def key_match_targets(
    steps: pd.DataFrame,
    images: np.ndarray,
    carrying: np.ndarray,
    task_id: str,
    max_steps: int | None,
    layout: RoomLayout,
    min_age: int,
) -> Targets:
    """--target key_match: "the key in the cell ahead has the locked door's colour" (one column), on
    the steps where a key lies ahead (AHEAD in the raw view `images` (N, 7, 7, 3)), the hands are free
    (`carrying` (N,)) and a locked door was in view before: the steps where the agent chooses to pick
    a key up or walk on. recent: fewer than min_age steps since the door was last in view; old: at
    least min_age. The no-memory features are the agent's room, the step count and the colour of
    the key ahead (one-hot over COLOURS). Each episode is replayed from its layout."""
    num = len(steps)
    ahead = images[:, AHEAD[0], AHEAD[1]]
    facing = key_ahead(images, carrying)  # the learner's --key_ahead_ce_weight / --aux_match_weight steps
    colour = np.where(facing, ahead[:, 1], -1)
    labels = np.zeros((num, 1), dtype=bool)
    eligible, age = np.zeros(num, dtype=bool), np.zeros(num, dtype=np.int64)
    for rows, group, seen in replays(steps, task_id, max_steps):
        door = [COLOR_TO_IDX[c] for c in seen.door_colours]
        labels[rows, 0] = np.isin(colour[rows], door) & facing[rows]
        eligible[rows] = facing[rows] & (seen.door_last_seen >= 0) & bool(door)
        age[rows] = group["t"].to_numpy() - seen.door_last_seen
    hue = np.zeros((num, len(COLOURS)))
    hue[facing, colour[facing]] = 1.0
    free = no_memory_features(step_rooms(steps, layout), steps["t"].to_numpy(), layout.num_rooms)
    return after_sightings(labels, eligible, age, min_age, np.concatenate([free, hue], axis=1))


def resampled_auc(
    scores: np.ndarray, labels: np.ndarray, episode: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """ROC AUC (ties count half) of scores against labels when every row of episode e counts
    weights[b, e] times: one AUC per row b of weights (NaN where a class is empty). episode: 0..E-1."""
    if len(scores) == 0:  # e.g. a fold without any step of a column's subset
        return np.full(len(weights), np.nan)
    _, group = np.unique(scores, return_inverse=True)
    shape = (int(group.max()) + 1, weights.shape[1])
    out = np.empty(len(weights))
    for start in range(0, len(weights), 100):  # (groups x resamples) dense blocks stay ~100 MB
        w = weights[start : start + 100].T.astype(np.float64)
        pos = sparse.csr_matrix((labels.astype(np.float64), (group, episode)), shape=shape) @ w
        neg = sparse.csr_matrix(((~labels).astype(np.float64), (group, episode)), shape=shape) @ w
        below = np.cumsum(neg, axis=0) - neg
        numerator = (pos * (below + 0.5 * neg)).sum(0)
        denominator = pos.sum(0) * neg.sum(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[start : start + 100] = np.where(denominator > 0, numerator / denominator, np.nan)
    return out


def counted_rooms(labels: np.ndarray, mask: np.ndarray, min_count: int) -> list[int]:
    """The target columns with >= min_count masked entries of each class."""
    return [
        r
        for r in range(labels.shape[1])
        if labels[mask[:, r], r].sum() >= min_count and (~labels[mask[:, r], r]).sum() >= min_count
    ]


def fold_aucs(
    scores: np.ndarray,
    labels: np.ndarray,
    mask: np.ndarray,
    rooms: list[int],
    episode: np.ndarray,
    weights: np.ndarray,
) -> np.ndarray:
    """Within each fold (second_fold: the first, then the second), the AUC of every target column in
    `rooms`, averaged over them; one pair per resample (row of weights: how often each episode
    0..E-1 counts), (B, 2). Within a fold every score comes from one probe: pooling the two folds'
    scores would rank one probe's intercept against the other's, and a probe fitted on the other
    half of a few hundred episodes leans away from this half's rates, which pulls a pooled AUC
    below 0.5 where there is nothing to read and credits any noise that dilutes that lean."""
    second = second_fold(episode)
    folds = []
    for fold in (~second, second):
        per_room = []
        for r in rooms:
            m = mask[:, r] & fold
            per_room.append(resampled_auc(scores[m, r], labels[m, r], episode[m], weights))
        folds.append(_nanmean(np.array(per_room)) if per_room else np.full(len(weights), np.nan))
    return np.stack(folds, axis=1)


Z95 = 1.959963984540054


def gain_interval(gain: float, draws: np.ndarray) -> tuple[float, float]:
    """The 95% interval of a cross-fitted gain (the mean of its two folds' gains) from each fold's
    resampled gains (B, 2): gain +- 1.96 (sd_1 + sd_2) / 2. Each fold's bootstrap sd is its own
    probe's (fitted on the other fold, so fixed while this fold's episodes are resampled); the two
    folds' errors are not independent (each fold's episodes both fit one probe and score the other),
    so their sds are added, the bound that holds whatever their correlation (docs/calibration.md,
    memory_probe_*: treating them as independent gave 0.900 coverage)."""
    if (np.isfinite(draws).sum(0) < 2).any():  # a fold without this subset: its spread is unknown
        return np.nan, np.nan
    sds = [float(np.nanstd(draws[:, k], ddof=1)) for k in range(2)]
    if not all(np.isfinite(sds)):
        return np.nan, np.nan
    half = Z95 * (sds[0] + sds[1]) / 2
    return gain - half, gain + half


def _nanmean(values: np.ndarray) -> np.ndarray:
    """Mean over axis 0, NaN only where every value is (a resample without both classes)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(values, axis=0)


def probe_table(
    steps: pd.DataFrame,
    memory: np.ndarray,
    blocks: list[tuple[str, slice]],
    targets: Targets,
    min_count: int = 20,
    bootstrap: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per feature set: its size and mean per-target AUCs of cross-fitted probe scores
    (`auc`, `auc_recent`, `auc_old`, `auc_solved`, `auc_failed`: fold_aucs over the targets with
    >= min_count entries of each class, the two folds averaged), with the targets each average
    counts; memory rows add each AUC's gain over the no-memory row and its 95% interval
    (gain_interval) from `bootstrap` resamples of whole episodes (the same resamples for every row
    and column)."""
    episode = steps["episode"].to_numpy()
    ids, episode_index = np.unique(episode, return_inverse=True)
    if len(ids) < 4:
        raise ProbeError(f"{len(ids)} episodes cannot be split into probe folds; play at least 4")
    labels, baseline, free = targets.labels, targets.free, targets.free.shape[1]
    solved = steps["success"].to_numpy(dtype=bool)[:, None]
    subsets = {
        "auc": targets.mask,
        "auc_recent": targets.recent,
        "auc_old": targets.old,
        "auc_solved": targets.mask & solved,
        "auc_failed": targets.mask & ~solved,
    }
    counted = {c: counted_rooms(labels, m, min_count) for c, m in subsets.items()}
    weights = np.random.default_rng(seed).multinomial(
        len(ids), np.full(len(ids), 1.0 / len(ids)), size=bootstrap
    )
    weights = np.concatenate([np.ones((1, len(ids)), dtype=weights.dtype), weights])  # row 0: the data
    rows, base_draws = [], {}
    sets = [(NO_MEMORY, baseline)] + [(n, np.concatenate([baseline, memory[:, s]], 1)) for n, s in blocks]
    for name, features in sets:
        scores = cross_fitted_scores(features, labels.astype(np.float64), targets.mask, episode, free)
        row: dict[str, Any] = {
            "features": name,
            "size": features.shape[1] - free if name != NO_MEMORY else free,
        }
        for column, mask in subsets.items():
            rooms = counted[column]
            full, draws = np.split(fold_aucs(scores, labels, mask, rooms, episode_index, weights), [1])
            row[column] = float(_nanmean(full[0]))
            row[f"rooms_{column}"] = len(rooms)
            if name == NO_MEMORY:
                base_draws[column] = draws
                continue
            gain = f"gain{column[3:]}"
            row[gain] = row[column] - rows[0][column]
            low, high = gain_interval(row[gain], draws - base_draws[column]) if rooms else (np.nan, np.nan)
            row[f"{gain}_low"], row[f"{gain}_high"] = float(low), float(high)
        rows.append(row)
    return pd.DataFrame(rows)


def format_table(table: pd.DataFrame, min_age: int, bootstrap: int) -> str:
    names = ("auc", f"recent<{min_age}", f"old>={min_age}", "solved", "failed")
    lines = [f"{'features':<28} {'size':>5}" + "".join(f" {n:>9}" for n in names)]
    for row in table.to_dict("records"):
        cells = ["-" if np.isnan(row[c]) else f"{row[c]:.3f}" for c in SUBSETS]
        lines.append(f"{row['features']:<28} {row['size']:>5}" + "".join(f" {c:>9}" for c in cells))
    lines += [
        "",
        f"gain over {NO_MEMORY}, 95% interval (each fold's sd over {bootstrap} resamples of the episodes, added):",
        f"{'features':<28}" + "".join(f" {n:>24}" for n in names),
    ]
    unbounded = False
    for row in table.iloc[1:].to_dict("records"):
        cells = []
        for column in SUBSETS:
            gain = f"gain{column[3:]}"
            low, high = row[f"{gain}_low"], row[f"{gain}_high"]
            if np.isnan(row[gain]):
                cells.append("-")
            elif np.isnan(low):  # a fold holds no step of this subset, or its resamples lack a class
                cells.append(f"{row[gain]:+.3f} [no interval]*")
                unbounded = True
            else:
                cells.append(f"{row[gain]:+.3f} [{low:+.3f}, {high:+.3f}]")
        lines.append(f"{row['features']:<28}" + "".join(f" {c:>24}" for c in cells))
    if unbounded:
        lines.append(
            "* one of the two folds has no step of this subset (or none of a class), so its spread"
            " is unknown: play more episodes (--num_episodes)"
        )
    return "\n".join(lines)


def probe_features(played: Played) -> tuple[np.ndarray, list[tuple[str, slice]]]:
    """The feature matrix the probes read and its named blocks: the memory's (memory_blocks), the
    head's (head_features: HEAD_INPUT, ACTOR_HIDDEN), then the control (CONTROL: the last view)."""
    parts = [played.memory, *(x for _, x in played.heads), last_views(played.steps, played.views)]
    names = [name for name, _ in played.heads] + [CONTROL]
    edges = np.cumsum([0, *(x.shape[1] for x in parts)])
    blocks = memory_blocks(played.policy)
    blocks += [(name, slice(int(a), int(b))) for name, a, b in zip(names, edges[1:-1], edges[2:])]
    return np.concatenate(parts, axis=1), blocks


def build_parser() -> argparse.ArgumentParser:
    return memory_probe_parser(__doc__)


def main(argv: list[str] | None = None) -> pd.DataFrame:
    args = build_parser().parse_args(argv)
    try:
        check_memory_probe_args(args)
        try:
            check_table_out(args.out)  # before the episodes are played
        except EvalError as e:
            raise ProbeError(str(e)) from None
        played = collect(
            args.checkpoint,
            args.task_id,
            args.num_episodes,
            args.sample,
            device=args.device,
            progress=not args.no_progress,
            target=args.target,
        )
        steps, layout, task_id, max_steps = (
            played.steps,
            played.layout,
            played.task_id,
            played.config.get("max_steps"),
        )
        if args.target in ("key", "key_offset"):
            frame = "room" if args.target == "key" else "agent"
            targets = key_targets(steps, task_id, max_steps, layout, args.min_age, frame)
        elif args.target == "door":
            targets = door_targets(steps, task_id, max_steps, layout, args.min_age)
        elif args.target == "door_offset":
            targets = door_offset_targets(steps, task_id, max_steps, layout, args.min_age)
        elif args.target == "key_match":
            targets = key_match_targets(
                steps, played.images, played.carrying, task_id, max_steps, layout, args.min_age
            )
        else:
            targets = room_targets(steps, layout, args.min_age)
        features, blocks = probe_features(played)
        table = probe_table(steps, features, blocks, targets, args.min_count, args.bootstrap, args.seed)
    except (ConfigError, ProbeError) as e:
        refuse(str(e))
    success = steps.groupby("episode")["success"].first().mean()
    after = f"on {int(targets.mask[:, 0].sum())} steps after one was seen, before one was held"
    what = {
        "rooms": "mean per-room AUC of 'stood in room r before'",
        "key": f"mean per-room AUC of 'a key of the locked door's colour lies in room r' {after}",
        "key_offset": "mean AUC over the 10 bins of 'a key of the locked door's colour lies this many "
        f"cells ahead / to the right' ({', '.join(OFFSET_BINS)}) {after}",
        "door": "mean per-colour AUC of 'the locked door's colour is c' on "
        f"{int(targets.mask[:, 0].sum())} steps after one was seen, before anything was carried",
        "key_match": "AUC of 'the key ahead has the locked door's colour' on "
        f"{int(targets.mask[:, 0].sum())} steps facing a key with free hands after the door was seen "
        f"({int(targets.labels[targets.mask[:, 0], 0].sum())} of them its colour)",
        "door_offset": "mean AUC over the 10 bins of 'the locked door lies this many cells ahead / to the "
        f"right' ({', '.join(OFFSET_BINS)}) on {int(targets.mask[:, 0].sum())} steps holding a key of its "
        "colour while it is still locked, after it was seen",
    }[args.target]
    print(
        f"{played_line(task_id, args.num_episodes, args.sample, success)}, {len(steps)} steps; "
        f"{what}, probes cross-fitted over two halves of the episodes"
    )
    print(format_table(table, args.min_age, args.bootstrap))
    save_table(table, args.out)
    return table


if __name__ == "__main__":
    with command_edges():
        main(sys.argv[1:])
