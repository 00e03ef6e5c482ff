"""Routing by the bot's subgoal and around the level's events, with runs as units (no matplotlib).

Reads routing caches recorded with `eval_mop.py --record_subgoals` (the steps columns `subgoal`,
`subgoal_target` and `event_*`, mop/subgoals.py defines them); `mop/subgoal_plots.py` draws the
tables, `render_plots.py --subgoals` writes both.

- `routing_by_subgoal(runs)`: per subgoal, every expert's mean routing weight and the mean LPC.
  Unit: the run (one cache per run): each run's mean over its steps with that subgoal, then the
  95% t interval across the runs that have the subgoal, clipped to what the quantity can be. With
  one run there is no across-run inference: the interval is over that run's episodes (each
  episode's mean over its steps with the subgoal), and the `interval` column says so.
  Visits: `steps` and `episodes` per subgoal are reported beside every mean (a subgoal held for
  few steps has a wide interval, not a biased one).
  Position: a subgoal is held in particular cells (Explore far from the target, Pickup next to
  it), and routing can follow the cell. `adjustment == "within_cell"` rows remove that: each
  step's value minus the mean of its run's steps in the same cell (x, y), averaged per subgoal
  (a fixed effect of the cell, as a difference from the cell's mean).
  Time: a subgoal is held at particular steps of an episode (Explore is the bot's first one or
  two steps on UnlockPickup, when the policy's memory has just been reset), and routing can
  follow the step. `adjustment == "within_step"` rows remove that the same way: each value minus
  the mean of its run's steps at the same step t of their episodes. Not controlled by either: the
  agent's direction, what it carries, the layout around the cell (cells are pooled over layouts)
  and the policy's memory beyond its age. `steps_mixed_cells` / `steps_mixed_t` count the steps in
  cells / at step indices held under two or more subgoals, the only ones that carry information
  within a cell / within a step.
- `event_locked(runs, event, k)`: mean routing weight from k steps before to k steps after each
  occurrence of `event` (offset 0: the step at which the event is first visible, mop/subgoals).
  Per run, the mean over its events at each offset (an offset outside the event's episode is
  left out); then the 95% t interval across runs (one run: across its events, labelled so).

    runs = {"seed_0": load_cache(a).steps, "seed_1": load_cache(b).steps}
    table = routing_by_subgoal(runs, expert_sizes=[[0, 8, 16]])
    locked = event_locked(runs, "event_pickup", k=5)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from mop.lmc_stats import mean_interval as t_interval  # the Student-t interval of a mean, one home
from mop.routing_cache import EVENT_COLUMNS, SUBGOAL_STEP_COLUMNS, SUBGOAL_VOCABULARY

LEVEL = 0.95


class SubgoalAnalysisError(ValueError):
    """A cache without subgoal columns, an unknown event or an impossible window; names the flag."""


def has_subgoals(steps: pd.DataFrame) -> bool:
    return all(c in steps.columns for c in SUBGOAL_STEP_COLUMNS)


def require_subgoals(steps: pd.DataFrame, source: str, flag: str = "--cache") -> None:
    """SubgoalAnalysisError unless the steps hold the subgoal and event columns."""
    if not has_subgoals(steps):
        raise SubgoalAnalysisError(
            f"{flag} {source!r} has no subgoal columns (recorded before schema version 2 or without "
            "--record_subgoals): re-evaluate it with eval_mop.py --record_subgoals"
        )


def check_window(k: object, longest_episode: int, flag: str = "--event_k") -> int:
    """k as a whole number from 0 to the longest episode's last step (a wider window never holds
    data on either side); SubgoalAnalysisError naming the flag otherwise."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise SubgoalAnalysisError(f"{flag} must be a whole number of steps >= 0, got {k!r}")
    if k > max(longest_episode - 1, 0):
        raise SubgoalAnalysisError(
            f"{flag} {k} is larger than the longest episode allows (it has {longest_episode} steps: "
            f"k at most {max(longest_episode - 1, 0)})"
        )
    return int(k)


def check_event(event: str, flag: str = "--event") -> str:
    if event not in EVENT_COLUMNS:
        raise SubgoalAnalysisError(f"{flag} must be one of {', '.join(EVENT_COLUMNS)}, got {event!r}")
    return event


def weight_columns(steps: pd.DataFrame) -> list[str]:
    """layer_<k>_expert_<j> columns in (layer, expert) order."""
    cols = [c for c in steps.columns if c.startswith("layer_") and "_expert_" in c]
    return sorted(cols, key=lambda c: [int(v) for v in c.removeprefix("layer_").split("_expert_")])


def _layer_expert(quantity: str) -> tuple[float, float]:
    if quantity == "lpc":
        return math.nan, math.nan
    layer, expert = quantity.removeprefix("layer_").split("_expert_")
    return int(layer), int(expert)


def max_lpc(expert_sizes: Sequence[Sequence[int]] | None, exponent: float = 2.0) -> float:
    """The largest LPC a layout allows (every layer routing all weight to its largest expert)."""
    if not expert_sizes:
        return math.inf
    return float(sum(max(s) ** exponent for s in expert_sizes if len(s)))


ADJUSTMENTS = {"within_cell": ["x", "y"], "within_step": ["t"]}  # the fixed effect each removes


def _bounds(quantity: str, adjustment: str, lpc_max: float) -> tuple[float, float]:
    top = lpc_max if quantity == "lpc" else 1.0
    return (-top, top) if adjustment in ADJUSTMENTS else (0.0, top)


def _codes(*keys: pd.Series) -> np.ndarray:
    """One integer per distinct combination of the keys, in sorted order of the combinations."""
    return np.unique(
        np.stack([pd.factorize(k, sort=True)[0] for k in keys], axis=1), axis=0, return_inverse=True
    )[1].ravel()


def _group_mean(codes: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per code (0..max), each column's mean over its finite values (NaN where it has none)."""
    n = int(codes.max()) + 1
    finite = np.isfinite(values)
    sums = np.stack(
        [np.bincount(codes, np.where(finite[:, j], values[:, j], 0.0), n) for j in range(values.shape[1])], 1
    )
    counts = np.stack([np.bincount(codes, finite[:, j], n) for j in range(values.shape[1])], 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts


def _distinct_per_group(codes: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per code, how many distinct labels its rows hold."""
    pairs = np.unique(np.stack([codes, labels], axis=1), axis=0)
    return np.bincount(pairs[:, 0], minlength=int(codes.max()) + 1)


def per_run_by_subgoal(steps: pd.DataFrame) -> pd.DataFrame:
    """One run's steps: per (subgoal, quantity, adjustment) its mean over steps (`value`), and
    the per-episode means (`episode_values`, for one-run intervals), with steps and episodes.
    `within_cell` / `within_step` values are each step's minus the mean of the run's steps in
    the same cell / at the same step index (module docstring). Computed with integer group codes
    and bincount: pandas' per-group overhead was ~85% of a calibration draw on small caches."""
    columns = [*weight_columns(steps), "lpc"]
    subgoal_codes, names = pd.factorize(steps["subgoal"], sort=True)
    keep = subgoal_codes >= 0  # a step without a subgoal counts in its cell's mean, in no subgoal's
    if not keep.any():
        return pd.DataFrame()
    values = steps[columns].to_numpy(float)
    fixed = {a: _codes(*(steps[k] for k in keys)) for a, keys in ADJUSTMENTS.items()}  # cell, step index
    tables = {"none": values} | {a: values - _group_mean(c, values)[c] for a, c in fixed.items()}
    subgoal_codes, cells, ts = subgoal_codes[keep], fixed["within_cell"][keep], fixed["within_step"][keep]
    tables = {a: table[keep] for a, table in tables.items()}
    episode_codes, _ = pd.factorize(steps["episode"][keep], sort=True)
    pair = _codes(pd.Series(subgoal_codes), pd.Series(episode_codes))  # (subgoal, episode), sorted
    pair_subgoal = np.zeros(int(pair.max()) + 1, int)
    pair_subgoal[pair] = subgoal_codes
    steps_n = np.bincount(subgoal_codes, minlength=len(names))
    episodes_n = np.bincount(pair_subgoal, minlength=len(names))
    mixed_cells = np.bincount(subgoal_codes, _distinct_per_group(cells, subgoal_codes)[cells] > 1, len(names))
    mixed_t = np.bincount(subgoal_codes, _distinct_per_group(ts, subgoal_codes)[ts] > 1, len(names))
    means = {a: _group_mean(subgoal_codes, table) for a, table in tables.items()}
    per_episode = {a: _group_mean(pair, table) for a, table in tables.items()}
    rows = []
    for i, name in enumerate(names):
        mine = pair_subgoal == i
        for adjustment in tables:
            for j, q in enumerate(columns):
                rows.append(
                    {
                        "subgoal": name,
                        "quantity": q,
                        "adjustment": adjustment,
                        "value": float(means[adjustment][i, j]),
                        "episode_values": per_episode[adjustment][mine, j],
                        "steps": int(steps_n[i]),
                        "episodes": int(episodes_n[i]),
                        "steps_mixed_cells": int(mixed_cells[i]),
                        "steps_mixed_t": int(mixed_t[i]),
                    }
                )
    return pd.DataFrame(rows)


def _check_runs(runs: Mapping[str, pd.DataFrame]) -> None:
    if not runs:
        raise SubgoalAnalysisError("--cache: no runs given")
    for name, steps in runs.items():
        require_subgoals(steps, name)


def routing_by_subgoal(
    runs: Mapping[str, pd.DataFrame],
    expert_sizes: Sequence[Sequence[int]] | None = None,
    lpc_exponent: float = 2.0,
    level: float = LEVEL,
) -> pd.DataFrame:
    """Per (subgoal, quantity, adjustment) across runs (module docstring); quantity is a weight
    column layer_<k>_expert_<j> or "lpc", with `layer` and `expert` split out (NaN for lpc).
    Columns: subgoal, quantity, layer, expert, adjustment, mean, ci_low, ci_high, n_units, unit,
    interval, steps, episodes, steps_mixed_cells, steps_mixed_t, runs_with_subgoal."""
    _check_runs(runs)
    per_run = pd.concat(
        [per_run_by_subgoal(steps).assign(run=name) for name, steps in runs.items()], ignore_index=True
    )
    lpc_top = max_lpc(expert_sizes, lpc_exponent)
    one_run = len(runs) == 1
    rows = []
    for (subgoal, quantity, adjustment), part in per_run.groupby(
        ["subgoal", "quantity", "adjustment"], sort=False
    ):
        if one_run:
            units = part["episode_values"].iloc[0]
            unit = "episodes of one run"
        else:
            units = part["value"].to_numpy()
            unit = "runs"
        mean, low, high = t_interval(units, level)
        lo, hi = _bounds(quantity, adjustment, lpc_top)
        n = int(np.isfinite(np.asarray(units, float)).sum())
        layer, expert = _layer_expert(quantity)
        rows.append(
            {
                "subgoal": subgoal,
                "quantity": quantity,
                "layer": layer,
                "expert": expert,
                "adjustment": adjustment,
                "mean": mean,
                "ci_low": max(low, lo) if np.isfinite(low) else low,
                "ci_high": min(high, hi) if np.isfinite(high) else high,
                "n_units": n,
                "unit": unit,
                "interval": f"{level:.0%} t over {n} {unit}" + (", clipped to the range" if n > 1 else ""),
                "steps": int(part["steps"].sum()),
                "episodes": int(part["episodes"].sum()),
                "steps_mixed_cells": int(part["steps_mixed_cells"].sum()),
                "steps_mixed_t": int(part["steps_mixed_t"].sum()),
                "runs_with_subgoal": len(part),
            }
        )
    table = pd.DataFrame(rows)
    order = {s: i for i, s in enumerate(_subgoal_order(table["subgoal"]))}
    return table.sort_values(
        ["adjustment", "subgoal", "layer", "expert"], key=lambda c: c.map(order) if c.name == "subgoal" else c
    ).reset_index(drop=True)


def _subgoal_order(names: pd.Series) -> list[str]:
    present = set(names)
    return [s for s in SUBGOAL_VOCABULARY if s in present] + sorted(present - set(SUBGOAL_VOCABULARY))


def steps_per_subgoal(runs: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """The visit counts: steps and episodes per (run, subgoal), and each subgoal's share of its run."""
    _check_runs(runs)
    rows = []
    for name, steps in runs.items():
        counts = steps.groupby("subgoal")["episode"].agg(["size", "nunique"])
        for subgoal, (n, episodes) in counts.iterrows():
            rows.append(
                {"run": name, "subgoal": subgoal, "steps": int(n), "episodes": int(episodes),
                 "share": n / len(steps)}
            )  # fmt: skip
    return pd.DataFrame(rows)


def _event_windows(steps: pd.DataFrame, event: str, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(row index of each offset's step or -1, offsets) for every occurrence of event: shape
    (events, 2k + 1). Rows must be sorted by episode and t."""
    episode, t = steps["episode"].to_numpy(), steps["t"].to_numpy()
    at = np.flatnonzero(steps[event].to_numpy() == 1)
    offsets = np.arange(-k, k + 1)
    idx = at[:, None] + offsets[None, :]
    inside = (idx >= 0) & (idx < len(steps))
    clipped = np.clip(idx, 0, max(len(steps) - 1, 0))
    same = inside & (episode[clipped] == episode[at][:, None]) & (t[clipped] == t[at][:, None] + offsets)
    return np.where(same, clipped, -1), offsets


def event_locked(runs: Mapping[str, pd.DataFrame], event: str, k: int, level: float = LEVEL) -> pd.DataFrame:
    """Mean routing weight at each offset -k..k from every occurrence of `event` (module
    docstring). Columns: event, offset, quantity, layer, expert, mean, ci_low, ci_high (clipped to
    [0, 1]), n_units, unit, interval, events (occurrences summed over runs). Empty when the event
    never happens. SubgoalAnalysisError for a bad event, k, or a cache without the columns."""
    _check_runs(runs)
    check_event(event)
    longest = max(int(s.groupby("episode")["t"].max().max()) + 1 if len(s) else 0 for s in runs.values())
    k = check_window(k, longest)
    one_run = len(runs) == 1
    per_run: dict[
        str, tuple[np.ndarray, np.ndarray]
    ] = {}  # run: (per-event values (E, O, Q), quantity names)
    quantities: list[str] = []
    for name, steps in runs.items():
        steps = steps.sort_values(["episode", "t"], kind="stable").reset_index(drop=True)
        quantities = weight_columns(steps)
        rows, offsets = _event_windows(steps, event, k)
        values = steps[quantities].to_numpy(dtype=float)
        windows = np.where((rows >= 0)[..., None], values[np.maximum(rows, 0)], np.nan)  # (E, O, Q)
        per_run[name] = windows
    offsets = np.arange(-k, k + 1)
    out = []
    total_events = sum(w.shape[0] for w in per_run.values())
    if total_events == 0:
        return pd.DataFrame(
            columns=["event", "offset", "quantity", "layer", "expert", "mean", "ci_low", "ci_high",
                     "n_units", "unit", "interval", "events"]
        )  # fmt: skip
    for o, offset in enumerate(offsets):
        for q, quantity in enumerate(quantities):
            if one_run:
                units = next(iter(per_run.values()))[:, o, q]
                unit = "events of one run"
            else:
                with np.errstate(all="ignore"):
                    units = np.array(
                        [np.nanmean(w[:, o, q]) if np.isfinite(w[:, o, q]).any() else np.nan
                         for w in per_run.values()]
                    )  # fmt: skip
                unit = "runs"
            mean, low, high = t_interval(units, level)
            n = int(np.isfinite(units).sum())
            layer, expert = _layer_expert(quantity)
            out.append(
                {
                    "event": event,
                    "offset": int(offset),
                    "quantity": quantity,
                    "layer": layer,
                    "expert": expert,
                    "mean": mean,
                    "ci_low": max(low, 0.0) if np.isfinite(low) else low,
                    "ci_high": min(high, 1.0) if np.isfinite(high) else high,
                    "n_units": n,
                    "unit": unit,
                    "interval": f"{level:.0%} t over {n} {unit}" + (", clipped to [0, 1]" if n > 1 else ""),
                    "events": total_events,
                }
            )
    return pd.DataFrame(out)


def events_present(runs: Mapping[str, pd.DataFrame]) -> list[str]:
    """The event columns that fire at least once in these runs, in EVENT_COLUMNS' order."""
    return [e for e in EVENT_COLUMNS if any(int(s[e].sum()) > 0 for s in runs.values() if e in s)]
