"""What limits a student trained on bot demos: fitting them, generalising them, or its own states.

A level that stalls below BabyAI's number after many passes over its demos (issue 41) can be held
back by three different things, and each asks for a different lever. Three labelled sets, each
scored teacher-forced (memory from each episode's reset, the bot's label at every state; a state
the bot could not label is left out):

- `trained`: N demos drawn at random (seeded) from the ones the run trained on (its demo store's
  first `demos` episodes);
- `held out`: the bot's own episodes on the first N evaluation layouts (connectivity.make_heldout;
  a layout the bot fails is skipped and counted);
- `own`: the student's greedy episodes on the same N evaluation layouts, every state labelled by
  the bot (the states DAgger trains on), also split into the episodes it solved and failed. Its
  success is the evaluation's: same layouts, same greedy policy. Its CE is DAgger's loss there,
  not a score of the student's actions: where the student took another route (it still solves
  many such episodes) the bot labels the way back to its own, so agreement is low even on solved
  episodes; compare own, solved with own, failed rather than own with held out alone.

Per set the cross-entropy per labelled step (nats) and the accuracy (argmax = label), clustered by
episode (routing_analysis.clustered_interval: bootstrap-t over episodes with the jackknife's error;
Student's t covered 93.7% on CE-like data, docs/calibration.md `demo_fit_own_ce_*`), and "whole":
the share of episodes with every labelled step right. Two differences, with
routing_analysis.clustered_difference (bootstrap-t over the episodes of two independent samples;
`demo_fit_gap_coverage`): held out − trained (what the demos did not teach: large → more
demos) and own − held out (the states only the student visits, read with the
caveat above). Trained and held out alike and well short of 100%: the network does not fit the
bot's policy even on the bot's own states (capacity, memory, the input, the optimisation).

Where the unfit labels are (bot_subgoals, breakdown_rows; bench/demo_fit.py --breakdown): the
bot-driven sets replayed with the bot, each step grouped by what the bot was doing (its subgoal,
the action, whether the subgoal's target is in view or only remembered) and each error costed in
the bot's own steps (the bot forked at the error, finishing after the student's action); the
student's own episodes grouped the same way (bot_subgoals' `taken`), without a cost.

    from mop.demo_fit import bot_subgoals, breakdown_rows, fit_rows, heldout_episodes, score_sets, trained_sample
    heldout, skipped = heldout_episodes(config["task_id"], 500, config.get("max_steps"))
    sets, cut = score_sets(policy, encoder, config, 500, trained_sample(store, 100_000, 500), heldout)
    table = fit_rows(sets)   # one row per set, then the two differences
    groups, left_out = bot_subgoals(config["task_id"], heldout, config.get("max_steps"), sets["held out"].step_argmax)
    parts = breakdown_rows(sets["held out"], groups)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from mop.babyai_env import EVAL_SEED_START
from mop.collection import Collector
from mop.connectivity import heldout_detail, make_heldout
from mop.numpy_policy import one_thread
from mop.replay_buffer import StoredEpisode
from mop.routing_analysis import clustered_difference, clustered_interval, clustered_proportion

SAMPLE_SEED = 0  # which trained demos are drawn
CHUNK = 64  # steps per collect call for the student's own episodes
SETS = ("trained", "held out", "own", "own, solved", "own, failed")
GAPS = (("held out", "trained"), ("own", "held out"))


@dataclass
class Scored:
    """One set's episodes, teacher-forced: per episode labelled steps, summed CE and correct steps."""

    name: str
    labels: np.ndarray
    ce_sum: np.ndarray
    correct: np.ndarray
    success: np.ndarray | None = None  # own episodes: solved or not
    step_ce: list[np.ndarray] | None = None  # per episode, each labelled step's CE (breakdown)
    step_correct: list[np.ndarray] | None = None  # per episode, each labelled step right or not
    step_argmax: list[np.ndarray] | None = None  # per episode, the student's argmax at each step
    episodes: Sequence[StoredEpisode] | None = None  # the set's episodes (the breakdown replays them)


def trained_sample(store: Any, trained_on: int, count: int, seed: int = SAMPLE_SEED) -> list[StoredEpisode]:
    """`count` of the store's first `trained_on` episodes, drawn without replacement (all of them
    when there are no more), in store order."""
    n = min(int(trained_on), len(store))
    picked = np.sort(np.random.default_rng(seed).choice(n, size=min(count, n), replace=False))
    return [store[int(i)] for i in picked]


def own_episodes(
    policy: torch.nn.Module,
    encoder: torch.nn.Module,
    config: dict,
    count: int,
    envs: int = 16,
    teacher_forcing: float = 0.0,
) -> tuple[list[StoredEpisode], np.ndarray, int]:
    """The student's greedy episodes on evaluation layouts EVAL_SEED_START + 0..count-1 (each
    played once: env i plays i, i + envs, ...), every state labelled by the bot: (episodes in
    layout order, solved per episode, episodes cut by a bot failure and left out).
    teacher_forcing 1.0: the bot drives, which gives make_heldout's episodes (a test's control)."""
    from mop.progress import progress_bar

    envs = max(1, min(envs, count))
    collector = Collector(
        config["task_id"],
        list(range(envs)),
        run_seed=0,
        max_steps=config.get("max_steps"),
        obs_encoding=config["obs_encoding"],
        eval_stride=envs,
    )
    steps: list[list[tuple[int, int]]] = [[] for _ in range(envs)]  # (chunk, t) since each slot's reset
    chunks: list[dict[str, Any]] = []
    kept: dict[int, tuple[StoredEpisode, bool]] = {}
    cut = 0
    with progress_bar(count, "own episodes") as bar:
        while any(slot.seed - EVAL_SEED_START < count for slot in collector.slots):
            chunk = collector.collect(policy, encoder, CHUNK, teacher_forcing=teacher_forcing)
            chunks.append(chunk)
            finished = {(t, ep.env_index): ep for t, ep in chunk["episodes"]}
            for t in range(CHUNK):
                for k in range(envs):
                    steps[k].append((len(chunks) - 1, t))
                    ep = finished.get((t, k))
                    if ep is None:
                        continue
                    taken, steps[k] = steps[k], []
                    if ep.seed - EVAL_SEED_START >= count:
                        continue  # a layout past the ones asked: played while other envs finish
                    if ep.bot_failure is not None:
                        cut += 1
                    else:
                        kept[ep.seed] = (_stored(chunks, taken, k, ep.seed), ep.success)
                    bar.update(1)
    order = sorted(kept)
    return [kept[s][0] for s in order], np.array([kept[s][1] for s in order], bool), cut


def _stored(chunks: list[dict], taken: list[tuple[int, int]], k: int, seed: int) -> StoredEpisode:
    """One slot's steps across chunks as a StoredEpisode (label -1 where the bot gave none)."""

    def column(key: str) -> np.ndarray:
        return np.stack([chunks[c][key][t, k] for c, t in taken])

    c0, t0 = taken[0]
    label = np.where(column("label_mask"), column("label"), -1).astype(np.int8)
    return StoredEpisode(
        column("image"),
        column("direction"),
        column("carrying"),
        label,
        chunks[c0]["missions"][int(chunks[c0]["mission_index"][t0, k])],
        seed,
    )


def score(
    name: str, policy: Any, encoder: Any, episodes: Sequence[StoredEpisode], obs_encoding: str
) -> Scored:
    held = heldout_detail(policy, encoder, episodes, obs_encoding)
    steps = (held.step_ce, held.step_correct, held.step_argmax)
    return Scored(name, held.labels, held.ce_sum, held.correct, None, *steps, list(episodes))


def split(scored: Scored, keep: np.ndarray, name: str) -> Scored:
    def pick(steps: list[np.ndarray] | None) -> list[np.ndarray] | None:
        return None if steps is None else [x for x, k in zip(steps, keep) if k]

    return Scored(
        name,
        scored.labels[keep],
        scored.ce_sum[keep],
        scored.correct[keep],
        scored.success[keep],
        pick(scored.step_ce),
        pick(scored.step_correct),
        pick(scored.step_argmax),
        pick(scored.episodes),
    )


def set_row(s: Scored) -> dict[str, Any]:
    """One set's numbers: per-step CE and accuracy with 95% intervals clustered by episode."""
    w = s.labels.astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        ce, acc = s.ce_sum / w, s.correct / w
    row: dict[str, Any] = {"set": s.name, "episodes": len(w), "labelled_steps": int(w.sum())}
    for metric, values in (("ce", ce), ("accuracy", acc)):
        mean, low, high = clustered_interval(values, w)
        row |= {metric: mean, f"{metric}_ci_low": low, f"{metric}_ci_high": high}
    row["whole_episodes"] = float(np.mean(s.correct == s.labels)) if len(w) else math.nan
    row["success"] = float(np.mean(s.success)) if s.success is not None and len(w) else math.nan
    return row


def gap_row(a: Scored, b: Scored) -> dict[str, Any]:
    """a − b, per-step CE and accuracy, bootstrap-t over the episodes of the two sets."""
    row: dict[str, Any] = {"set": f"{a.name} − {b.name}", "episodes": len(a.labels) + len(b.labels)}
    for metric, num_a, num_b in (("ce", a.ce_sum, b.ce_sum), ("accuracy", a.correct, b.correct)):
        with np.errstate(invalid="ignore", divide="ignore"):
            diff, low, high = clustered_difference(num_a / a.labels, a.labels, num_b / b.labels, b.labels)
        row |= {metric: diff, f"{metric}_ci_low": low, f"{metric}_ci_high": high}
    return row


def fit_rows(sets: dict[str, Scored]) -> pd.DataFrame:
    """The table: one row per set present, then the two differences where both sets are there."""
    rows = [set_row(sets[name]) for name in SETS if name in sets]
    rows += [gap_row(sets[a], sets[b]) for a, b in GAPS if a in sets and b in sets]
    return pd.DataFrame(rows)


def score_sets(
    policy: Any,
    encoder: Any,
    config: dict,
    episodes: int,
    trained: Sequence[StoredEpisode] | None,
    heldout: Sequence[StoredEpisode],
    envs: int = 16,
) -> tuple[dict[str, Scored], int]:
    """Every set of one checkpoint: ({name: Scored}, own episodes cut by a bot failure). On one
    thread, as evaluation (numpy_policy.one_thread: batches of <= 64 rows only synchronise)."""
    with one_thread():
        encoding = config["obs_encoding"]
        sets: dict[str, Scored] = {}
        if trained:
            sets["trained"] = score("trained", policy, encoder, trained, encoding)
        sets["held out"] = score("held out", policy, encoder, heldout, encoding)
        own, solved, cut = own_episodes(policy, encoder, config, episodes, envs)
        scored = score("own", policy, encoder, own, encoding)
        scored.success = solved
        sets["own"] = scored
        sets["own, solved"] = split(scored, solved, "own, solved")
        sets["own, failed"] = split(scored, ~solved, "own, failed")
        return sets, cut


def heldout_episodes(task_id: str, count: int, max_steps: int | None) -> tuple[list[StoredEpisode], int]:
    """The bot's episodes on the first evaluation layouts it solves: (episodes, layouts skipped)."""
    buffer, skipped = make_heldout(task_id, count, max_steps)
    return list(buffer.episodes), skipped


def demo_source(config: dict, demos_root: str | Path | None) -> tuple[Path, int] | None:
    """(demo store root, episodes trained on) of a run that trained on a demo store; None otherwise."""
    demos = int(config.get("demos") or 0)
    if demos <= 0:
        return None
    return Path(demos_root if demos_root is not None else config.get("demos_dir", "demos")), demos


# ----------------------------------------------------------------------------- the unfit labels, by what the bot was doing

BREAKDOWNS = ("subgoal", "action", "moment", "view", "view, action", "view, steps to go", "last seen")
TO_GO_BINS = ((1, 3), (4, 7), (8, 1_000_000))  # a GoNextTo step's steps left to its subgoal's end
AGE_BINS = ((1, 10), (11, 40), (41, 1_000_000))  # steps since an out-of-view target was last in view
_THINGS = ("door", "key", "ball", "box")  # the objects whose last sight is tracked
_KIND = {0: "turn", 1: "turn", 2: "forward"} | {a: "other" for a in range(3, 7)}  # by action index
_NO_KIND = ("Explore", "Done", "Drop", "Failed", "Other")  # subgoals named without their target


def target_kind(target: str) -> str:
    """A subgoal target's kind (subgoals.describe's spelling): "red key" -> "key", "yellow door
    (3,5)" -> "door", "(4,2)" -> "position", "" -> ""."""
    if not target:
        return ""
    if target.startswith("("):
        return "position"
    return target.split(" (")[0].split()[-1]


def target_in_view(env: Any, image: np.ndarray, datum: Any) -> bool:
    """Whether a GoNextTo subgoal's datum is visible in the agent's observation `image`: an object
    (its cell shows it), an instruction's object description (any object it matches does), or a
    position (its cell is in view and not hidden: minigrid zeroes unseen cells)."""
    from mop.subgoals import object_in_view

    if hasattr(datum, "obj_set"):  # ObjDesc
        return any(object_in_view(env, image, o) for o in datum.obj_set)
    if hasattr(datum, "type") and hasattr(datum, "cur_pos"):  # WorldObj
        return object_in_view(env, image, datum)
    view = env.relative_coords(int(datum[0]), int(datum[1]))
    return view is not None and bool(image[view[0], view[1]].any())


def _view_group(name: str, in_view: bool) -> str:
    if name.startswith("GoNextTo"):
        return "target in view" if in_view else "target out of view"
    return "exploring" if name == "Explore" else "at the object"


def _bin_label(value: int, bins: tuple[tuple[int, int], ...]) -> str:
    """The bin holding `value`, spelled "4-7", or "8+" for the open last one."""
    low, high = next(b for b in bins if b[0] <= value <= b[1])
    return f"{low}+" if high >= 1_000_000 else f"{low}-{high}"


def _to_go_group(view: str, to_go: int) -> str:
    return f"{view} · {_bin_label(to_go, TO_GO_BINS)} to go" if view.startswith("target") else view


def _age(datum: Any, t: int, last_seen: dict[int, int]) -> int | None:
    """Steps since the datum (an object, or any object an instruction's description matches) was
    last in view; None for a position, or an object not yet in view."""
    objects = datum.obj_set if hasattr(datum, "obj_set") else [datum] if hasattr(datum, "type") else []
    seen = [last_seen[id(o)] for o in objects if id(o) in last_seen]
    return t - max(seen) if seen else None


def _seen_group(view: str, to_go: int, age: int | None) -> str:
    group = _to_go_group(view, to_go)
    if view != "target out of view":
        return group
    return f"{group} · never seen" if age is None else f"{group} · seen {_bin_label(age, AGE_BINS)} ago"


def bot_subgoals(
    task_id: str,
    episodes: Sequence[StoredEpisode],
    max_steps: int | None,
    student: Sequence[np.ndarray] | None = None,
    taken: Sequence[np.ndarray] | None = None,
) -> tuple[list[dict[str, np.ndarray] | None], int]:
    """What the bot was doing at every step of bot-driven episodes (demos, held-out episodes),
    replayed from each episode's layout seed, or with `taken` (per episode, the actions played:
    the student's own episodes, where the bot labels states it did not choose; "steps to go" then
    counts the student's steps until the bot's subgoal changes, and no cost is measured): per
    episode {"subgoal": the top of the bot's stack
    after its replan (subgoals.bot_subgoal) named with its target's kind ("GoNextTo key", "Open
    door", "Explore"), "action": the label's name, "moment": "starts a subgoal" where the subgoal
    or its target differs from the step before's (step 0 does), else "continues", "view": for a
    GoNextTo step whether its target is visible in the observation ("target in view") or only in
    the bot's memory ("target out of view"), else "exploring" or "at the object" (Open, Pickup,
    Drop, Done), "view, action": the view with the action's kind (turn, forward, other),
    because turns are where the labels go unfit and their share differs between the views, and
    "view, steps to go": a GoNextTo step's view with the steps left on the bot's route until that
    subgoal ends (TO_GO_BINS), because a target out of view is on average further away: within a
    bin, in view and out of view are compared at the same remaining distance, and "last seen": an
    out-of-view target's steps to go with the steps since it was last in view (AGE_BINS; "never"
    for a position, or an object the agent has not had in view), so that memory's age is compared
    at the same remaining distance}.

    With `student` (per episode, the student's teacher-forced argmax at each step), also "cost":
    at each step where the student's action differs from the label, the steps the bot then needs to
    finish from the state the student's action leads to (the env and bot forked, the bot replanning
    with the student's action, as in DAgger) minus the steps it needed from the same state on its
    own route; 0 where the two actions are as good as each other by the bot's own measure (a turn
    either way round), NaN where there is no error, inf where the bot does not finish (fails, or
    meets the step limit) after the student's action.

    Control: the replayed bot must give the stored label at every step (and, with `taken`, the
    episode must end where it was stored); an episode where it does not (or with an unlabelled
    step) is None, and counted: (per episode, episodes left out)."""
    if student is not None and taken is not None:
        raise ValueError("an error's cost is measured on bot-driven episodes only: give student or taken")
    from mop.babyai_env import SafeBot, make_env, quiet_reset
    from mop.progress import progress_bar
    from mop.routing_analysis import ACTION_NAMES
    from mop.subgoals import bot_subgoal

    env, fork = make_env(task_id, max_steps), make_env(task_id, max_steps)
    out: list[dict[str, np.ndarray] | None] = []
    with progress_bar(len(episodes), "bot subgoals (replayed)", leave=False) as bar:
        for ep in episodes:
            obs = quiet_reset(env, int(ep.seed))
            bot, previous = SafeBot(env), None
            names, full, views, ages = [], [], [], []
            things = [o for o in env.grid.grid if o is not None and o.type in _THINGS]
            last_seen: dict[int, int] = {}
            length = len(ep.label)
            cost = np.full(length, math.nan)
            played = ep.label.tolist() if taken is None else [int(a) for a in taken[len(out)]]
            finished = False
            for t, label in enumerate(ep.label.tolist()):
                if label < 0 or finished or bot.label(previous) != label:
                    break
                if student is not None and int(student[len(out)][t]) != label:
                    cost[t] = _steps_to_finish(fork, ep, t, int(student[len(out)][t])) - (length - t)
                name, target = bot_subgoal(bot.bot, env)
                kind = target_kind(target)
                names.append(name if name in _NO_KIND or not kind else f"{name} {kind}")
                full.append(f"{name} {target}")
                top = bot.bot.stack[-1] if bot.bot.stack else None
                seen = (
                    top is not None and top.datum is not None and target_in_view(env, obs["image"], top.datum)
                )
                views.append(_view_group(name, seen))
                for o in things:
                    if target_in_view(env, obs["image"], o):
                        last_seen[id(o)] = t
                ages.append(_age(top.datum, t, last_seen) if top is not None else None)
                obs, _, terminated, truncated, _ = env.step(played[t])
                finished = terminated or truncated
                previous = played[t]
            bar.update(1)
            if len(names) != len(ep.label) or not finished:
                out.append(None)
                continue
            starts = np.array([i == 0 or full[i] != full[i - 1] for i in range(len(full))])
            to_go = np.empty(len(full), int)  # steps until the subgoal (with its target) changes
            for i in range(len(full) - 1, -1, -1):
                to_go[i] = 1 if i == len(full) - 1 or full[i + 1] != full[i] else to_go[i + 1] + 1
            out.append(
                {
                    "subgoal": np.array(names),
                    "action": np.array([ACTION_NAMES[a] for a in ep.label.tolist()]),
                    "moment": np.where(starts, "starts a subgoal", "continues"),
                    "view": np.array(views),
                    "view, action": np.array([f"{v} · {_KIND[a]}" for v, a in zip(views, ep.label.tolist())]),
                    "view, steps to go": np.array([_to_go_group(v, g) for v, g in zip(views, to_go)]),
                    "last seen": np.array([_seen_group(v, g, a) for v, g, a in zip(views, to_go, ages)]),
                    "cost": cost if student is not None else None,
                }
            )
    return out, sum(g is None for g in out)


def _steps_to_finish(env: Any, episode: StoredEpisode, t: int, action: int) -> float:
    """Steps from step t of a bot-driven episode to its end when `action` is taken at t and the bot
    drives after it, replanning with that action; inf if the bot does not finish. `env` is a second
    env of the level: it and a new bot replay the episode's first t steps (a copy.deepcopy of env
    and bot would not do: FastBot's and FastView's arrays are views of one buffer, which a deep
    copy splits, and the copied bot stops seeing)."""
    from mop.babyai_env import SafeBot, quiet_reset

    quiet_reset(env, int(episode.seed))
    bot, previous = SafeBot(env), None
    for label in episode.label[:t].tolist():
        bot.label(previous)
        env.step(label)
        previous = label
    bot.label(previous)  # the replan at step t, as on the bot's own route
    steps = 0
    while True:
        _, reward, terminated, truncated, _ = env.step(action)
        steps += 1
        if terminated or truncated:
            return float(steps) if terminated and reward > 0 else math.inf
        action = bot.label(action)
        if action is None:
            return math.inf


def breakdown_rows(scored: Scored, groups: Sequence[dict[str, np.ndarray] | None]) -> pd.DataFrame:
    """Where one set's unfit labels are: per grouping (BREAKDOWNS) and value, its labelled steps
    and their share, errors (argmax != label) and their share of the set's errors, the mean CE,
    and the per-step accuracy with a 95% interval clustered by episode (routing_analysis.
    clustered_proportion: Wilson's at the effective sample size, which holds for a handful of
    errors where the bootstrap-t does not; docs/calibration.md `demo_fit_breakdown_*`).
    Where bot_subgoals measured each error's cost: costly errors (cost > 0: the student's action
    leaves the bot a longer way to finish), their rate per labelled step with the same interval,
    the median extra steps of a costly one, and the errors after which the bot did not finish.
    Episodes whose groups are None (bot_subgoals' control) are left out of every number."""
    keep = [i for i, g in enumerate(groups) if g is not None]
    correct = [scored.step_correct[i].astype(bool) for i in keep]
    ce = [scored.step_ce[i] for i in keep]
    costs = [groups[i]["cost"] for i in keep]
    costed = bool(keep) and all(c is not None for c in costs)  # bot_subgoals was given the student
    total_steps = sum(len(c) for c in correct)
    total_errors = sum(int((~c).sum()) for c in correct)
    rows = []
    for by in BREAKDOWNS:
        values = [groups[i][by] for i in keep]
        names = pd.Series(np.concatenate(values)).value_counts().index if values else []
        for name in names:
            masks = [v == name for v in values]
            n = np.array([int(m.sum()) for m in masks], float)
            right = np.array([int(c[m].sum()) for c, m in zip(correct, masks)], float)
            nats = np.array([float(x[m].sum()) for x, m in zip(ce, masks)])
            has = n > 0
            row: dict[str, Any] = {"set": scored.name, "by": by, "group": name, "episodes": int(has.sum())}
            row |= {"steps": int(n.sum()), "step_share": n.sum() / total_steps}
            errors = int((n - right).sum())
            row |= {"errors": errors, "error_share": errors / total_errors if total_errors else math.nan}
            row["ce"] = float(nats.sum() / n.sum())
            metrics = [("accuracy", right)]
            if costed:
                cost = np.concatenate([c[m] for c, m in zip(costs, masks)])
                costly = np.array([int((c[m] > 0).sum()) for c, m in zip(costs, masks)], float)
                row |= {
                    "costly_errors": int(costly.sum()),
                    "costly_median_steps": float(np.median(cost[cost > 0])) if (cost > 0).any() else math.nan,
                    "unfinished": int(np.isinf(cost).sum()),
                }
                metrics.append(("costly_rate", costly))
            for metric, num in metrics:
                mean, low, high = clustered_proportion(num[has] / n[has], n[has])
                row |= {metric: mean, f"{metric}_ci_low": low, f"{metric}_ci_high": high}
            rows.append(row)
    return pd.DataFrame(rows)
