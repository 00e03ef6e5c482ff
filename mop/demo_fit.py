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

    from mop.demo_fit import fit_rows, heldout_episodes, score_sets, trained_sample
    heldout, skipped = heldout_episodes(config["task_id"], 500, config.get("max_steps"))
    sets, cut = score_sets(policy, encoder, config, 500, trained_sample(store, 100_000, 500), heldout)
    table = fit_rows(sets)   # one row per set, then the two differences
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
from mop.routing_analysis import clustered_difference, clustered_interval

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
    return Scored(name, held.labels, held.ce_sum, held.correct)


def split(scored: Scored, keep: np.ndarray, name: str) -> Scored:
    return Scored(
        name,
        scored.labels[keep],
        scored.ce_sum[keep],
        scored.correct[keep],
        scored.success[keep],
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
