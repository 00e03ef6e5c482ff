"""Does a policy's recurrent memory hold which rooms it has visited? Linear probes per memory block.

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
unvisited rooms): what the memory keeps; `auc_solved` / `auc_failed` on the episodes each ended so.

    python memory_probe.py --checkpoint checkpoints/BabyAI-Unlock-v0/trial_0/checkpoint_final.pt
    python memory_probe.py --checkpoint CK --num_episodes 300 --min_age 64 --out probe.csv
"""

from __future__ import annotations

if __name__ == "__main__":  # flags answered before torch, pandas and scipy load (bench/startup.py)
    from mop.cli_specs import answer_early, check_memory_probe_args, memory_probe_parser

    answer_early(lambda: check_memory_probe_args(memory_probe_parser(__doc__).parse_args()))

import argparse
import sys

import numpy as np
import pandas as pd
import torch
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
from mop.babyai_env import RoomLayout, make_env
from mop.checks import ConfigError, command_edges, refuse
from mop.cli_specs import check_memory_probe_args, memory_probe_parser

NO_MEMORY = "no memory"


class ProbeError(ValueError):
    """A checkpoint or level the probe cannot read; one line."""


def room_layout(task_id: str) -> RoomLayout:
    """The room grid of a level; ProbeError for a level of one room (nothing to remember)."""
    layout = RoomLayout.of(make_env(task_id))
    if layout.num_rooms < 2:
        raise ProbeError(f"{task_id} has one room: there are no visited rooms to remember")
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
    """Ridge regressions of y on x with an intercept, one per penalty (times rows); the first
    `free` columns are not penalised."""
    mean_x, mean_y = x.mean(0), y.mean()
    xc = x - mean_x
    gram, moment = xc.T @ xc, xc.T @ (y - mean_y)
    scale = np.ones(x.shape[1])
    scale[:free] = 0.0
    fits = []
    for penalty in penalties:
        regularised = gram + np.diag(scale * penalty * len(x) + 1e-9 * len(x))
        w = np.linalg.solve(regularised, moment)
        fits.append((w, float(mean_y - mean_x @ w)))
    return fits


def fit_probe(x: np.ndarray, y: np.ndarray, mask: np.ndarray, episode: np.ndarray, free: int = 0) -> tuple:
    """Linear probes, one per target column r: a ridge regression of y[:, r] on the standardised
    features over the rows where mask[:, r] (a linear score is all an AUC needs). The first `free`
    columns (the no-memory features) are not penalised, so the memory's columns are shrunk towards
    the no-memory probe. Each column's penalty is picked from RIDGE_GRID by AUC on the last quarter
    of these episodes (fitted on the rest), then refitted on all of them: with hundreds of features
    and a few hundred episodes an unpenalised probe fits the noise of the episodes it saw.
    Returns (mean, std, W (D, R), b (R,)); a column with one class predicts its mean."""
    mean, std = x.mean(0), x.std(0) + 1e-6
    z = (x - mean) / std
    ids = np.unique(episode)
    held = np.isin(episode, ids[(3 * len(ids)) // 4 :])
    w_all, b_all = np.zeros((x.shape[1], y.shape[1])), np.zeros(y.shape[1])
    for r in range(y.shape[1]):
        rows, target = mask[:, r], y[:, r]
        if not rows.any() or target[rows].min() == target[rows].max():
            b_all[r] = float(target[rows].mean()) if rows.any() else 0.0
            continue
        fit, check = rows & ~held, rows & held
        best = RIDGE_GRID[-1]
        if fit.sum() > 1 and len(set(target[fit])) == 2 and len(set(target[check])) == 2:
            fits = _ridge(z[fit], target[fit], free, RIDGE_GRID)
            scores = [auc(z[check] @ w + b, target[check] > 0.5) for w, b in fits]
            best = RIDGE_GRID[int(np.argmax(scores))]
        w_all[:, r], b_all[r] = _ridge(z[rows], target[rows], free, (best,))[0]
    return mean, std, w_all, b_all


def probe_scores(probe: tuple, x: np.ndarray) -> np.ndarray:
    mean, std, w, b = probe
    return ((x - mean) / std) @ w + b


def cross_fitted_scores(
    x: np.ndarray, y: np.ndarray, mask: np.ndarray, episode: np.ndarray, free: int = 0
) -> np.ndarray:
    """Every row's probe score from the probe fitted on the other half of the episodes (two folds,
    split by episode): each step is scored by a probe that never saw its episode."""
    ids = np.unique(episode)
    second = np.isin(episode, ids[len(ids) // 2 :])
    scores = np.zeros(y.shape)
    for test in (second, ~second):
        probe = fit_probe(x[~test], y[~test], mask[~test], episode[~test], free)
        scores[test] = probe_scores(probe, x[test])
    return scores


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC (ties count half); NaN without both classes."""
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def mean_room_auc(
    scores: np.ndarray, labels: np.ndarray, mask: np.ndarray, min_count: int
) -> tuple[float, int]:
    """AUC per room over its masked entries, averaged over the rooms with >= min_count of each
    class: (mean AUC, rooms counted)."""
    values = []
    for r in range(labels.shape[1]):
        m = mask[:, r]
        lab = labels[m, r]
        if lab.sum() >= min_count and (~lab).sum() >= min_count:
            values.append(auc(scores[m, r], lab))
    return (float(np.mean(values)) if values else float("nan")), len(values)


def collect(
    checkpoint: str,
    task_id: str | None,
    num_episodes: int,
    sample: bool,
    num_envs: int = 16,
    device: str = "cpu",
    progress: bool = True,
):
    """Play the episodes; returns (steps sorted by episode and t, with x, y and the episode's
    success; the memory before each step (N, M); the policy; the level played; its room layout)."""
    memories: dict[tuple[int, int], np.ndarray] = {}

    def keep(step: ActedStep) -> None:
        mem = step.memory.numpy()
        for r, (e, t) in enumerate(zip(step.episode, step.t)):
            memories[(e, t)] = mem[r].copy()

    layouts: list[RoomLayout] = []  # room_layout refuses a one-room level before any play
    try:
        steps, episodes, policy, _, task_id = play_checkpoint(
            checkpoint,
            task_id,
            num_episodes,
            sample,
            keep,
            num_envs,
            lambda t: layouts.append(room_layout(t)),
            device,
            progress=progress,
        )
    except EvalError as e:
        raise ProbeError(str(e)) from None
    layout = layouts[0]
    success = episodes.set_index("episode")["success"].astype(bool)
    steps["success"] = success.loc[steps["episode"]].to_numpy()
    memory = np.stack([memories[(int(e), int(t))] for e, t in zip(steps["episode"], steps["t"])])
    return steps, memory, policy, task_id, layout


def visit_targets(steps: pd.DataFrame, layout: RoomLayout) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(room of each step (N,), visit ages (N, R), elsewhere (N, R)): elsewhere is False for the
    room the agent stands in, which its view shows and is no test of memory."""
    rooms = np.array([layout.room_of(x, y) for x, y in zip(steps["x"], steps["y"])], dtype=np.int64)
    ages = visit_ages(rooms, steps["episode"].to_numpy(), layout.num_rooms)
    elsewhere = np.ones_like(ages, dtype=bool)
    elsewhere[np.arange(len(rooms)), rooms] = False
    return rooms, ages, elsewhere


def no_memory_features(rooms: np.ndarray, t: np.ndarray, num_rooms: int) -> np.ndarray:
    """What says how likely a visit is without remembering one: the current room (one-hot) and the
    step count (t, t^2, scaled to the longest episode)."""
    scaled = t.astype(np.float64) / max(float(t.max()), 1.0)
    return np.concatenate([np.eye(num_rooms)[rooms], scaled[:, None], scaled[:, None] ** 2], axis=1)


def probe_table(
    steps: pd.DataFrame,
    memory: np.ndarray,
    blocks: list[tuple[str, slice]],
    layout: RoomLayout,
    min_age: int = 32,
    min_count: int = 20,
) -> pd.DataFrame:
    """One row per feature set: its size and mean per-room AUCs of cross-fitted probe scores
    (`auc`, `auc_old`, `auc_solved`, `auc_failed`), with the rooms each average counts."""
    episode = steps["episode"].to_numpy()
    if len(np.unique(episode)) < 4:
        raise ProbeError(
            f"{len(np.unique(episode))} episodes cannot be split into probe folds; play at least 4"
        )
    rooms, ages, elsewhere = visit_targets(steps, layout)
    visited = ages > 0
    baseline = no_memory_features(rooms, steps["t"].to_numpy(), layout.num_rooms)
    free = baseline.shape[1]
    solved = steps["success"].to_numpy(dtype=bool)[:, None]
    subsets = {
        "auc": elsewhere,
        "auc_old": elsewhere & (~visited | (ages >= min_age)),
        "auc_solved": elsewhere & solved,
        "auc_failed": elsewhere & ~solved,
    }
    rows = []
    sets = [(NO_MEMORY, baseline)] + [(n, np.concatenate([baseline, memory[:, s]], 1)) for n, s in blocks]
    for name, features in sets:
        scores = cross_fitted_scores(features, visited.astype(np.float64), elsewhere, episode, free)
        row = {"features": name, "size": features.shape[1] - free if name != NO_MEMORY else free}
        for column, mask in subsets.items():
            row[column], row[f"rooms_{column}"] = mean_room_auc(scores, visited, mask, min_count)
        rows.append(row)
    return pd.DataFrame(rows)


def format_table(table: pd.DataFrame, min_age: int) -> str:
    head = f"{'features':<28} {'size':>5} {'auc':>6} {'old>=' + str(min_age):>8} {'solved':>7} {'failed':>7}"
    lines = [head]
    for row in table.itertuples():
        values = [row.auc, row.auc_old, row.auc_solved, row.auc_failed]
        cells = ["     -" if np.isnan(v) else f"{v:6.3f}" for v in values]
        lines.append(
            f"{row.features:<28} {row.size:>5} {cells[0]:>6} {cells[1]:>8} {cells[2]:>7} {cells[3]:>7}"
        )
    return "\n".join(lines)


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
        steps, memory, policy, task_id, layout = collect(
            args.checkpoint,
            args.task_id,
            args.num_episodes,
            args.sample,
            device=args.device,
            progress=not args.no_progress,
        )
        table = probe_table(steps, memory, memory_blocks(policy), layout, args.min_age, args.min_count)
    except (ConfigError, ProbeError) as e:
        refuse(str(e))
    success = steps.groupby("episode")["success"].first().mean()
    print(
        f"{played_line(task_id, args.num_episodes, args.sample, success)}, {len(steps)} steps; "
        "mean per-room AUC, probes cross-fitted over two halves of the episodes"
    )
    print(format_table(table, args.min_age))
    save_table(table, args.out)
    return table


if __name__ == "__main__":
    with command_edges():
        main(sys.argv[1:])
