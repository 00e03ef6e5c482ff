"""Numbers from routing caches: groupings, per-cell aggregates, action KL, router entropy, usage.

Reads what `routing_cache.load_cache` returns (steps and episodes DataFrames; the episodes'
env_context JSON for rooms, doors and targets), evaluation metrics and results rows
(evaluation_results.csv), and metrics.jsonl rows. Writes nothing and draws nothing: no matplotlib
here, so notebooks, stats scripts and tests can compute without a plotting backend;
`plotting_utils.py` turns these tables into figures. Grid cells are (x, y) as in the cache, row 0
at the top; layers and experts are numbered from 0, as in the `layer_<k>_expert_<j>` columns.

    data = routing_cache.load_cache("evaluation_cache/BabyAI-UnlockPickup-v0/trial_0")
    groups = group_routing_data(data.steps, data.episodes, "by_key_phase")  # {phase: its steps}
    kl = action_kl_by_cell(data.steps, "neighbours")  # per cell: visits, kl (nats)
    table = routing_by_level({level: load_cache(folder).episodes, ...})  # a multi-task policy, per level
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

# ----------------------------------------------------------------------------- constants

ACTION_NAMES: tuple[str, ...] = ("left", "right", "forward", "pickup", "drop", "toggle", "done")
EVENT_NAMES = {"t_pick": "first pickup", "t_unlocked": "door opened", "t_drop": "first drop"}
KEY_PHASES = ("before pickup", "carrying key", "door open", "after drop")
ANALYSES = (
    "overall",
    "by_starting_room",
    "by_door_location",
    "by_carrying_phase",
    "by_door_unlocked_phase",
    "by_key_phase",
    "by_quadrant",
)
_WEIGHT_RE = re.compile(r"^layer_(\d+)_expert_(\d+)$")

# ----------------------------------------------------------------------------- columns and checks


def routing_layers(columns: Iterable[str]) -> dict[int, list[str]]:
    """{layer: its weight columns in expert order} from `layer_<k>_expert_<j>` column names."""
    found: dict[int, list[tuple[int, str]]] = {}
    for c in columns:
        m = _WEIGHT_RE.match(str(c))
        if m:
            found.setdefault(int(m.group(1)), []).append((int(m.group(2)), c))
    return {k: [c for _, c in sorted(v)] for k, v in sorted(found.items())}


def has_routing(steps: pd.DataFrame) -> bool:
    """Whether a table holds router weights (a GRU-baseline cache does not)."""
    return bool(routing_layers(steps.columns))


def require_routing(table: pd.DataFrame, what: str) -> dict[int, list[str]]:
    """routing_layers(table.columns), or a ValueError naming `what` when the table has no router
    weights (a GRU-baseline cache)."""
    layers = routing_layers(table.columns)
    if not layers:
        raise ValueError(
            f"{what} needs router weights (layer_<k>_expert_<j> columns) and this table has none: "
            "a GRU-baseline cache has no routing to plot; use the behaviour plots instead"
        )
    return layers


# ----------------------------------------------------------------------------- grids


def compute_grid_bounds(positions: Any, grid_size: Sequence[int] | None = None) -> dict[str, int]:
    """x_min/x_max/y_min/y_max/grid_width/grid_height of the cells to draw: the whole level when
    grid_size (width, height) is given (so heatmaps line up with the level image), else the
    bounding box of the positions ((N, 2) array or a DataFrame with x, y)."""
    if grid_size is not None:
        w, h = int(grid_size[0]), int(grid_size[1])
        return {"x_min": 0, "x_max": w - 1, "y_min": 0, "y_max": h - 1, "grid_width": w, "grid_height": h}
    if isinstance(positions, pd.DataFrame):
        xy = positions[["x", "y"]].to_numpy()
    else:
        xy = np.asarray(positions, dtype=int).reshape(-1, 2)
    if len(xy) == 0:
        raise ValueError("compute_grid_bounds: no positions and no grid_size")
    x_min, y_min = (int(v) for v in xy.min(0))
    x_max, y_max = (int(v) for v in xy.max(0))
    return {
        "x_min": x_min,
        "x_max": x_max,
        "y_min": y_min,
        "y_max": y_max,
        "grid_width": x_max - x_min + 1,
        "grid_height": y_max - y_min + 1,
    }


@functools.lru_cache(maxsize=1 << 16)
def _parse_context(text: str) -> dict:
    # Cached: every grouping re-reads the same 10^3 JSON strings; callers treat the dicts as read-only.
    return json.loads(text)


def _contexts(episodes: pd.DataFrame | None) -> list[dict]:
    if episodes is None or "env_context" not in episodes.columns:
        return []
    return [_parse_context(c) if isinstance(c, str) else dict(c) for c in episodes["env_context"]]


def grid_info_for(steps: pd.DataFrame, episodes: pd.DataFrame | None = None) -> dict[str, int]:
    """Grid bounds of the whole level (largest grid_size in the episodes' env_context), else of
    the visited cells."""
    sizes = [c["grid_size"] for c in _contexts(episodes) if c.get("grid_size")]
    if sizes:
        return compute_grid_bounds(None, (max(s[0] for s in sizes), max(s[1] for s in sizes)))
    return compute_grid_bounds(steps)


def to_grid(agg: pd.DataFrame, values: np.ndarray, grid_info: Mapping[str, int]) -> np.ndarray:
    """Scatter per-cell values (rows of agg, indexed by (x, y)) into a (height, width, ...) array of
    NaN, so unvisited cells stay NaN."""
    shape = (grid_info["grid_height"], grid_info["grid_width"]) + values.shape[1:]
    grid = np.full(shape, np.nan)
    xs = agg.index.get_level_values("x").to_numpy() - grid_info["x_min"]
    ys = agg.index.get_level_values("y").to_numpy() - grid_info["y_min"]
    inside = (xs >= 0) & (xs < shape[1]) & (ys >= 0) & (ys < shape[0])
    grid[ys[inside], xs[inside]] = values[inside]
    return grid


# ----------------------------------------------------------------------------- aggregation


def aggregate_routing_by_position(
    steps: pd.DataFrame, filter_fn: Callable[[pd.DataFrame], Any] | None = None
) -> pd.DataFrame:
    """Per visited (x, y): mean router weight of every layer/expert, mean LPC (and policy entropy
    when recorded), and `visits` (steps spent there). filter_fn(steps) -> boolean mask keeps a
    subset first (vectorised, e.g. `lambda s: s.carrying == 1`)."""
    if filter_fn is not None:
        steps = steps[np.asarray(filter_fn(steps), dtype=bool)]
    cols = [c for cols in routing_layers(steps.columns).values() for c in cols]
    cols += [c for c in ("lpc", "entropy") if c in steps.columns]
    grouped = steps.groupby(["x", "y"], sort=True)
    agg = grouped[cols].mean()
    agg["visits"] = grouped.size()
    return agg


def routing_entropy(steps: pd.DataFrame, layer: int) -> np.ndarray:
    """Entropy of the router's weights in one layer at every step, in nats (0 log 0 = 0)."""
    cols = require_routing(steps, "routing_entropy").get(layer)
    if cols is None:
        raise ValueError(f"no layer {layer} in this table (layers {list(routing_layers(steps.columns))})")
    w = steps[cols].to_numpy(dtype=float)
    return -(w * np.log(np.where(w > 0, w, 1.0))).sum(1)


def expert_usage(source: Any) -> dict[int, np.ndarray]:
    """{layer: mean weight of each expert}. source: a steps table (step-weighted mean), an
    evaluation metrics dict or results row (usage_layer_<k>_expert_<j>), or training metrics
    (routing/layer_<k>/expert_<j>; of a list of rows, the last row that has them)."""
    if isinstance(source, pd.DataFrame) and routing_layers(source.columns):
        layers = routing_layers(source.columns)
        return {k: source[cols].to_numpy(dtype=float).mean(0) for k, cols in layers.items()}
    if isinstance(source, pd.DataFrame):
        source = source.to_dict("records")
    if isinstance(source, (list, tuple)):
        rows = [r for r in source if any(str(k).startswith("routing/") for k in r)]
        if not rows:
            raise ValueError("expert_usage: no row holds routing/layer_<k>/expert_<j> (a GRU-baseline run?)")
        source = rows[-1]
    usage: dict[int, dict[int, float]] = {}
    for key, value in dict(source).items():
        m = re.match(r"^(?:usage_layer_(\d+)_expert_(\d+)|routing/layer_(\d+)/expert_(\d+))$", str(key))
        if m and value is not None and not pd.isna(value):
            k, j = (int(g) for g in m.groups() if g is not None)
            usage.setdefault(k, {})[j] = float(value)
    if not usage:
        raise ValueError("expert_usage: no usage_layer_<k>_expert_<j> or routing/ keys (a GRU-baseline run?)")
    return {k: np.array([v[j] for j in sorted(v)]) for k, v in sorted(usage.items())}


def action_kl_by_cell(steps: pd.DataFrame, reference: str = "global", min_visits: int = 5) -> pd.DataFrame:
    """KL(p_cell || q) in nats for every visited cell (index x, y; columns visits, kl).

    p_cell is the cell's action distribution with the Jeffreys prior (add 1/2 to every action's
    count), so a cell with few visits and an unseen action does not give an infinite KL. q is the
    whole table's action distribution ('global') or the pooled counts of the cell's 4 neighbours
    ('neighbours'), smoothed the same way. kl is NaN where the cell, or its neighbours pooled, have
    fewer than min_visits steps."""
    if reference not in ("global", "neighbours"):
        raise ValueError(f"reference must be 'global' or 'neighbours', not {reference!r}")
    num_actions = max(len(ACTION_NAMES), int(steps["action"].max()) + 1 if len(steps) else 0)
    counts = (
        steps.groupby(["x", "y", "action"])
        .size()
        .unstack("action", fill_value=0)
        .reindex(columns=range(num_actions), fill_value=0)
    )  # (cells, A)
    n = counts.to_numpy(dtype=float)
    visits = n.sum(1)
    p = (n + 0.5) / (visits[:, None] + 0.5 * num_actions)
    if reference == "global":
        total = n.sum(0)
        q = np.broadcast_to((total + 0.5) / (total.sum() + 0.5 * num_actions), n.shape)
        ref_visits = np.full(len(n), total.sum())
    else:
        info = compute_grid_bounds(steps)
        grid = np.nan_to_num(to_grid(counts, n, info))  # (H, W, A)
        padded = np.pad(grid, ((1, 1), (1, 1), (0, 0)))
        neighbours = padded[:-2, 1:-1] + padded[2:, 1:-1] + padded[1:-1, :-2] + padded[1:-1, 2:]
        xs = counts.index.get_level_values("x").to_numpy() - info["x_min"]
        ys = counts.index.get_level_values("y").to_numpy() - info["y_min"]
        m = neighbours[ys, xs]  # (cells, A)
        ref_visits = m.sum(1)
        q = (m + 0.5) / (ref_visits[:, None] + 0.5 * num_actions)
    kl = (p * (np.log(p) - np.log(q))).sum(1)
    kl[(visits < min_visits) | (ref_visits < min_visits)] = np.nan
    return pd.DataFrame({"visits": visits.astype(int), "kl": kl}, index=counts.index)


# ----------------------------------------------------------------------------- groupings


def get_available_analyses(steps: pd.DataFrame, episodes: pd.DataFrame) -> list[str]:
    """The groupings this cache supports, in ANALYSES order: 'overall' always; 'by_starting_room'
    when the level has several rooms and episodes start in more than one; 'by_door_location' when
    an episode has a door; the carrying / door phases when those events happened; key phases when
    a key and a locked door exist and something was picked up;
    'by_quadrant' when episodes have a target. Routing plots additionally need has_routing(steps)."""
    contexts = _contexts(episodes)
    found = ["overall"]
    shapes = [c.get("room_grid_shape") for c in contexts]
    rooms = {tuple(c["agent_start_room"]) for c in contexts if c.get("agent_start_room") is not None}
    if any(s is not None and s[0] * s[1] > 1 for s in shapes) and len(rooms) > 1:
        found.append("by_starting_room")
    if (
        "door_x" in episodes.columns
        and any(c.get("doors") for c in contexts)
        and episodes["door_x"].notna().any()
    ):
        found.append("by_door_location")
    carrying = "carrying" in steps.columns and bool((steps["carrying"] == 1).any())
    if carrying:
        found.append("by_carrying_phase")
    if "door_unlocked" in steps.columns and bool((steps["door_unlocked"] == 1).any()):
        found.append("by_door_unlocked_phase")
    # Key phases mean something only where a key opens a locked door (not for distractor keys).
    locked = any(c.get("keys") and any(len(d) > 4 and d[4] for d in c.get("doors", [])) for c in contexts)
    if locked and "t_pick" in steps.columns and steps["t_pick"].notna().any():
        found.append("by_key_phase")
    if any(c.get("target_pos") is not None for c in contexts):
        found.append("by_quadrant")
    return found


def room_labels_for_groups(
    sorted_keys: Sequence[Sequence[int]],
    room_grid_shape: Sequence[int],
    grid_size: Sequence[int] | None = None,
) -> list[str]:
    """Names like 'Top-Left' for rooms given by their top-left cell (x, y), in a room grid of
    room_grid_shape (columns, rows). Room pitch comes from grid_size (width, height) when given,
    else from the keys themselves."""
    cols, rows = int(room_grid_shape[0]), int(room_grid_shape[1])
    xs = [int(k[0]) for k in sorted_keys]
    ys = [int(k[1]) for k in sorted_keys]

    def pitch(values: list[int], count: int, extent: int | None) -> int:
        # RoomGrid levels are (room_size - 1) * count + 1 cells wide: neighbours share a wall.
        if extent is not None:
            return max(1, (int(extent) - 1) // count)
        nonzero = [v for v in values if v > 0]
        return math.gcd(*nonzero) if nonzero else 1

    px = pitch(xs, cols, grid_size[0] if grid_size is not None else None)
    py = pitch(ys, rows, grid_size[1] if grid_size is not None else None)
    col_names = {1: [""], 2: ["Left", "Right"], 3: ["Left", "Center", "Right"]}.get(cols)
    row_names = {1: [""], 2: ["Top", "Bottom"], 3: ["Top", "Middle", "Bottom"]}.get(rows)
    labels = []
    for x, y in zip(xs, ys):
        c, r = min(x // px, cols - 1), min(y // py, rows - 1)
        col = col_names[c] if col_names else f"Col {c}"
        row = row_names[r] if row_names else f"Row {r}"
        labels.append("-".join(p for p in (row, col) if p) or "Only room")
    return labels


def _per_step(steps: pd.DataFrame, episodes: pd.DataFrame, per_episode: Sequence[Any]) -> np.ndarray:
    lookup = pd.Series(list(per_episode), index=episodes["episode"].to_numpy())
    return steps["episode"].map(lookup).to_numpy()


def _door_side(ctx: dict, door_x: float, door_y: float) -> str:
    if not np.isfinite(door_x) or not np.isfinite(door_y):
        return "no door identified"
    x0, y0, x1, y1 = ctx.get("room_bounds") or (1, 1, ctx["grid_size"][0] - 2, ctx["grid_size"][1] - 2)
    along_y = ("upper", "middle", "lower")
    along_x = ("left part", "middle", "right part")

    def third(v: float, lo: float, hi: float) -> int:
        return int(min(2, max(0, (v - lo) / max(hi - lo + 1, 1) * 3)))

    if door_x > x1:
        return f"right wall, {along_y[third(door_y, y0, y1)]}"
    if door_x < x0:
        return f"left wall, {along_y[third(door_y, y0, y1)]}"
    if door_y < y0:
        return f"top wall, {along_x[third(door_x, x0, x1)]}"
    if door_y > y1:
        return f"bottom wall, {along_x[third(door_x, x0, x1)]}"
    return "not on start room's wall"


def group_labels(steps: pd.DataFrame, episodes: pd.DataFrame, group_by: str) -> tuple[pd.Series, list[str]]:
    """(label of every step, labels in display order) for one of ANALYSES."""
    n = len(steps)
    if group_by == "overall":
        return pd.Series(["all steps"] * n, index=steps.index), ["all steps"]
    if group_by not in ANALYSES:
        raise ValueError(f"unknown grouping {group_by!r}; choose from {list(ANALYSES)}")
    contexts = _contexts(episodes)
    if group_by == "by_starting_room":
        rooms = [tuple(c.get("agent_start_room") or (0, 0)) for c in contexts]
        keys = sorted(set(rooms), key=lambda r: (r[1], r[0]))
        shape = next((c["room_grid_shape"] for c in contexts if c.get("room_grid_shape")), (1, 1))
        grid = max((c["grid_size"] for c in contexts), key=lambda s: s[0] * s[1])
        names = dict(zip(keys, room_labels_for_groups(keys, shape, grid)))
        labels = _per_step(steps, episodes, [names[r] for r in rooms])
        order = [names[k] for k in keys]
    elif group_by == "by_door_location":
        dx = episodes["door_x"].to_numpy(dtype=float, na_value=np.nan)
        dy = episodes["door_y"].to_numpy(dtype=float, na_value=np.nan)
        sides = [_door_side(c, x, y) for c, x, y in zip(contexts, dx, dy)]
        labels = _per_step(steps, episodes, sides)
        walls = ("top", "right", "bottom", "left", "not", "no")
        parts = ("upper", "left part", "middle", "lower", "right part")

        def rank(side: str) -> tuple[int, int]:
            wall = next(i for i, w in enumerate(walls) if side.startswith(w))
            return wall, next((i for i, p in enumerate(parts) if side.endswith(p)), 0)

        order = sorted(set(sides), key=rank)
    elif group_by == "by_carrying_phase":
        labels = np.where(steps["carrying"].to_numpy() == 1, "carrying", "not carrying")
        order = ["not carrying", "carrying"]
    elif group_by == "by_door_unlocked_phase":
        labels = np.where(steps["door_unlocked"].to_numpy() == 1, "door opened", "door not yet opened")
        order = ["door not yet opened", "door opened"]
    elif group_by == "by_key_phase":
        # Later events win: the phases are a progression (pick up the key, open the door, drop it).
        labels = np.full(n, KEY_PHASES[0], dtype=object)
        labels[steps["t_pick"].notna().to_numpy()] = KEY_PHASES[1]
        labels[steps["door_unlocked"].to_numpy() == 1] = KEY_PHASES[2]
        labels[steps["t_drop"].notna().to_numpy()] = KEY_PHASES[3]
        order = list(KEY_PHASES)
    else:  # by_quadrant: where the agent stands relative to the target it must reach
        targets = [c.get("target_pos") or (np.nan, np.nan) for c in contexts]
        tx = _per_step(steps, episodes, [float(t[0]) for t in targets]).astype(float)
        ty = _per_step(steps, episodes, [float(t[1]) for t in targets]).astype(float)
        dx, dy = steps["x"].to_numpy() - tx, steps["y"].to_numpy() - ty
        vertical = np.where(dy < 0, "above", "below")
        horizontal = np.where(dx < 0, "left", "right")
        labels = np.char.add(np.char.add(vertical.astype(str), "-"), horizontal.astype(str)).astype(object)
        labels[(dx == 0) | (dy == 0)] = "same row or column"
        labels[np.isnan(tx)] = "no target"
        order = ["above-left", "above-right", "below-left", "below-right", "same row or column", "no target"]
    series = pd.Series(labels, index=steps.index, dtype=object)
    present = set(series.unique())
    return series, [g for g in order if g in present]


def group_routing_data(steps: pd.DataFrame, episodes: pd.DataFrame, group_by: str) -> dict[str, pd.DataFrame]:
    """{group label: its steps}, in display order; the groups partition the steps."""
    labels, order = group_labels(steps, episodes, group_by)
    return {g: steps[labels == g] for g in order}


# ----------------------------------------------------------------------------- runs and episodes


def default_runs(results_df: pd.DataFrame) -> pd.DataFrame:
    """Rows of default evaluations (no knockout, on the training task, greedy)."""
    df = results_df.copy()
    if "knockout" in df.columns:
        df = df[df["knockout"].fillna("none") == "none"]
    if "eval_task_id" in df.columns:
        df = df[df["eval_task_id"].fillna(df["task_id"]) == df["task_id"]]
    if "sample" in df.columns:
        df = df[~df["sample"].fillna(False).astype(bool)]
    if df.empty:
        raise ValueError("no default evaluations (knockout none, on the training task) in the results")
    return df


def _example_pool(episodes: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The episodes pick_example_episode chooses among, and the rule's clauses that applied."""
    events = sum(episodes[c].notna().astype(int) for c in EVENT_NAMES if c in episodes.columns)
    pool = episodes[events == events.max()] if len(episodes) else episodes
    rule = []
    if len(episodes) and isinstance(events, pd.Series) and events.max() > 0:
        rule.append(f"{int(events.max())} phase event{'s' if events.max() > 1 else ''}")
    if "success" in pool.columns and pool["success"].any():
        pool = pool[pool["success"]]
        rule.append("successful")
    return pool, rule + ["median length"]


def pick_example_episode(episodes: pd.DataFrame) -> int:
    """A typical episode to draw step by step: among those with the most phase events (pickup,
    door, drop), successful ones first, the one of median length (lowest index on ties)."""
    pool, _ = _example_pool(episodes)
    if pool.empty:
        raise ValueError("pick_example_episode: no episodes")
    gap = (pool["length"] - pool["length"].median()).abs()
    return int(pool.assign(gap=gap).sort_values(["gap", "episode"])["episode"].iloc[0])


@dataclasses.dataclass(frozen=True)
class ExampleLayout:
    """The one evaluation layout a figure shows as the level picture (and whose episode it draws
    step by step): episode, its layout seed (None in the earlier system's caches), mission, the
    number of layouts (episodes) in the cache, and the rule that chose it in words."""

    episode: int
    seed: int | None
    mission: str | None
    n_layouts: int
    rule: str

    def caption(self) -> str:
        """'one example layout of 200: seed 2 (episode 2: successful, median length)'."""
        seed = "" if self.seed is None else f"seed {self.seed} "
        return f"one example layout of {self.n_layouts}: {seed}(episode {self.episode}: {self.rule})"


def example_layout(episodes: pd.DataFrame) -> ExampleLayout:
    """The example layout of a cache: pick_example_episode's episode (the typical one: most phase
    events, successful first, median length). The one home of this choice: render_plots.py's level
    picture, routing_viz's and the episode-routing figure all show this layout."""
    episode = pick_example_episode(episodes)
    row = episodes.loc[episodes["episode"] == episode].iloc[0]
    seed = row.get("seed")
    mission = row.get("mission")
    return ExampleLayout(
        episode=episode,
        seed=None if seed is None or pd.isna(seed) else int(seed),
        mission=None if mission is None or pd.isna(mission) else str(mission),
        n_layouts=int(episodes["episode"].nunique()),
        rule=", ".join(_example_pool(episodes)[1]),
    )


# ----------------------------------------------------------------------------- routing by level

# BabyAI's ICLR 2019 levels in the order of its curriculum (Chevalier-Boisvert et al. 2019,
# "BabyAI: a platform to study the sample efficiency of grounded language learning", Table 1 and
# docs/iclr19_levels.md: each level adds competencies to those before it). Other levels (bonus
# levels such as UnlockPickup) have no place in it: curriculum_rank gives None for them.
BABYAI_CURRICULUM: tuple[str, ...] = (
    "GoToObj",
    "GoToRedBallGrey",
    "GoToRedBall",
    "GoToLocal",
    "PutNextLocal",
    "PickupLoc",
    "GoToObjMaze",
    "GoTo",
    "Pickup",
    "UnblockPickup",
    "Open",
    "Unlock",
    "PutNext",
    "Synth",
    "SynthLoc",
    "GoToSeq",
    "SynthSeq",
    "GoToImpUnlock",
    "BossLevel",
)


def level_name(task_id: str) -> str:
    """'GoToLocal' for BabyAI-GoToLocal-v0 (other ids as they are)."""
    m = re.match(r"^BabyAI-([A-Za-z0-9]+)-v\d+$", str(task_id))
    return m.group(1) if m else str(task_id)


def curriculum_rank(task_id: str) -> int | None:
    """1-based position of a level in BABYAI_CURRICULUM (1 = easiest), None if not in it."""
    name = level_name(task_id)
    return BABYAI_CURRICULUM.index(name) + 1 if name in BABYAI_CURRICULUM else None


def _t_quantile(df: int, confidence: float) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.5 + confidence / 2, df))


def _jackknife_se(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The jackknife standard error over clusters (last axis) of Σ w v / Σ w: each cluster left
    out in turn. Broadcasts over the leading axes (a batch of bootstrap resamples)."""
    n = values.shape[-1]
    total, weight = (weights * values).sum(-1, keepdims=True), weights.sum(-1, keepdims=True)
    left_out = (total - weights * values) / (weight - weights)  # the mean without cluster i
    return np.sqrt((n - 1) / n * ((left_out - left_out.mean(-1, keepdims=True)) ** 2).sum(-1))


def _clusters(values: Any, weights: Any) -> tuple[np.ndarray, np.ndarray]:
    v, w = np.asarray(values, float), np.asarray(weights, float)
    keep = np.isfinite(v) & np.isfinite(w) & (w > 0)
    return v[keep], w[keep]


def clustered_mean(values: Any, weights: Any, confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, standard error, half-width of the confidence interval) of the weighted mean
    Σ w_i v_i / Σ w_i over independent clusters i (episodes: v = the episode's mean per step,
    w = its length, so the mean is per step, as evaluation_results.csv's mean_lpc). The standard
    error is the jackknife's over clusters (each episode left out in turn; steps within an
    episode are not independent): unlike the ratio estimator's linearised error it does not shrink
    when a few long episodes carry most of the steps (a level's failures at the step limit,
    docs/calibration.md); with equal weights it is the usual s / sqrt(n). The interval uses
    Student's t with n - 1 degrees of freedom. n < 2: NaN error."""
    v, w = _clusters(values, weights)
    n = len(v)
    if n == 0:
        return math.nan, math.nan, math.nan
    mean = float((w * v).sum() / w.sum())
    if n < 2:
        return mean, math.nan, math.nan
    se = float(_jackknife_se(v, w))
    return mean, se, se * _t_quantile(n - 1, confidence)


DIFFERENCE_RESAMPLES = 2000  # bootstrap resamples of clustered_difference
DIFFERENCE_SEED = 0  # its default seed: a summary is reproducible


def clustered_difference(
    values_a: Any,
    weights_a: Any,
    values_b: Any,
    weights_b: Any,
    confidence: float = 0.95,
    resamples: int = DIFFERENCE_RESAMPLES,
    seed: int = DIFFERENCE_SEED,
) -> tuple[float, float, float]:
    """(difference, low, high): clustered_mean of a minus clustered_mean of b, with the
    studentized bootstrap (bootstrap-t) interval over clusters of two independent samples (two
    levels' episodes). Each resample draws a's clusters with replacement and, independently, b's;
    its t* = (difference* - difference) / se*, se* = sqrt(se_a*^2 + se_b*^2) from the jackknife
    errors (clustered_mean's) of that resample (resamples with se* = 0 dropped); the interval is
    difference - q_high se, difference - q_low se for t*'s quantiles q. A ratio mean whose few
    long episodes (failures at the step limit) carry half the steps is skewed and its error
    varies with them: the t with Welch-Satterthwaite degrees of freedom on the two jackknife
    errors covered 93-94% where this holds 95% (docs/calibration.md). NaN difference when a
    sample is empty; NaN ends with fewer than 2 clusters in either sample, no spread (se = 0) or
    no resample with spread. Seeded: the same input gives the same interval."""
    va, wa = _clusters(values_a, weights_a)
    vb, wb = _clusters(values_b, weights_b)
    if len(va) == 0 or len(vb) == 0:
        return math.nan, math.nan, math.nan
    difference = float((wa * va).sum() / wa.sum() - (wb * vb).sum() / wb.sum())
    if min(len(va), len(vb)) < 2:
        return difference, math.nan, math.nan
    se = math.sqrt(float(_jackknife_se(va, wa)) ** 2 + float(_jackknife_se(vb, wb)) ** 2)
    if not se > 0:
        return difference, math.nan, math.nan
    low, high = _bootstrap_t([(va, wa), (vb, wb)], (1.0, -1.0), difference, se, confidence, resamples, seed)
    return difference, low, high


def _bootstrap_t(
    samples: Sequence[tuple[np.ndarray, np.ndarray]],
    signs: Sequence[float],
    estimate: float,
    se: float,
    confidence: float,
    resamples: int,
    seed: int,
) -> tuple[float, float]:
    """The studentized bootstrap interval of Σ sign_k · (clustered mean of sample k): each
    resample draws every sample's clusters with replacement, independently; t* = (estimate* −
    estimate) / se*, se* from the resample's jackknife errors (resamples with se* = 0 dropped);
    (estimate − q_high se, estimate − q_low se) for t*'s quantiles. NaN ends when none has spread."""
    rng = np.random.default_rng(seed)
    t = []
    for start in range(0, resamples, 250):  # chunks: (chunk, n) index arrays stay small
        chunk = min(250, resamples - start)
        drawn = [rng.integers(0, len(v), (chunk, len(v))) for v, _ in samples]
        value, variance = np.zeros(chunk), np.zeros(chunk)
        for (v, w), i, sign in zip(samples, drawn, signs):
            value += sign * (w[i] * v[i]).sum(1) / w[i].sum(1)
            variance += _jackknife_se(v[i], w[i]) ** 2
        spread = np.sqrt(variance)
        ok = spread > 0
        t.append((value[ok] - estimate) / spread[ok])
    t = np.concatenate(t)
    if len(t) == 0:
        return math.nan, math.nan
    q_low, q_high = np.quantile(t, [(1 - confidence) / 2, (1 + confidence) / 2])
    return estimate - float(q_high) * se, estimate - float(q_low) * se


def clustered_interval(
    values: Any,
    weights: Any,
    confidence: float = 0.95,
    resamples: int = DIFFERENCE_RESAMPLES,
    seed: int = DIFFERENCE_SEED,
) -> tuple[float, float, float]:
    """(mean, low, high): clustered_mean with the studentized bootstrap (bootstrap-t) interval over
    clusters instead of Student's t, for a mean whose few long clusters carry most of the steps
    and whose values are skewed (bench/demo_fit.py's cross-entropy: failed episodes at the step
    limit; the t interval covered 93.7% there, this 94.5%, docs/calibration.md). Seeded; NaN ends with fewer
    than 2 clusters or no spread."""
    v, w = _clusters(values, weights)
    if len(v) == 0:
        return math.nan, math.nan, math.nan
    mean = float((w * v).sum() / w.sum())
    se = float(_jackknife_se(v, w)) if len(v) >= 2 else math.nan
    if not se > 0:
        return mean, math.nan, math.nan
    low, high = _bootstrap_t([(v, w)], (1.0,), mean, se, confidence, resamples, seed)
    return mean, low, high


def clustered_proportion(values: Any, weights: Any, confidence: float = 0.95) -> tuple[float, float, float]:
    """(p, low, high): a per-step proportion (values: each cluster's share, weights: its steps)
    with Wilson's score interval at the effective sample size, Σw / design effect, the design
    effect being the jackknife variance over clusters against the binomial p(1-p)/Σw, floored
    at 1 (Kish). For rare events clustered by episode (bench/demo_fit.py --breakdown: a group's
    errors, often under 10), where the bootstrap-t covered 89.7% at ~7 errors and this 95.4%
    (~250 errors: 94.9%; docs/calibration.md `demo_fit_breakdown_*`). 0 or 1: no spread, design
    effect 1."""
    from scipy import stats

    v, w = _clusters(values, weights)
    if len(v) == 0:
        return math.nan, math.nan, math.nan
    total = float(w.sum())
    p = float((w * v).sum() / total)
    deff = 1.0
    if 0 < p < 1 and len(v) >= 2:
        deff = max(1.0, float(_jackknife_se(v, w)) ** 2 / (p * (1 - p) / total))
    n, z = total / deff, float(stats.norm.ppf(0.5 + confidence / 2))
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # At 0 and 1 Wilson's interval ends exactly at the point (not a rounding error away from it).
    return p, 0.0 if p == 0 else max(0.0, centre - half), 1.0 if p == 1 else min(1.0, centre + half)


def _level_columns(episodes: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean LPC per step, length, success) per episode of a level's cache episodes table."""
    return (
        episodes["mean_lpc"].to_numpy(float),
        episodes["length"].to_numpy(float),
        episodes["success"].fillna(False).to_numpy(bool),
    )


def routing_by_level(episodes_by_level: Mapping[str, pd.DataFrame], confidence: float = 0.95) -> pd.DataFrame:
    """One row per evaluated level of a (multi-task) policy, from each level's cache episodes table
    (per-episode mean_lpc, length, success, optimal_length = the bot's path length of the layout,
    and the per-episode mean router weights layer_<k>_expert_<j>), sorted by mean bot path length
    (the measured difficulty), with:
    level, curriculum_rank (BabyAI's order, None if not in it), episodes, success_rate,
    mean_lpc with lpc_se / lpc_ci_low / lpc_ci_high (per step, clustered by episode),
    the same over successful episodes only (successes, lpc_success, lpc_success_se,
    lpc_success_ci_low/high: a failed episode runs to the step limit wherever the policy wanders,
    so this separates "the level is harder" from "the policy has not learned it"),
    bot_path_mean with bot_path_ci_low/high (t interval over the layouts the bot solved), bot_paths
    (their number), mean_length, r_lpc_bot_path (Pearson r over episodes between an episode's mean
    LPC and its layout's bot path length: within the level, are longer layouts given more LPC?), and
    usage_layer_<k>_expert_<j> (mean router weight per step)."""
    rows = []
    for task_id, episodes in episodes_by_level.items():
        if episodes.empty:
            raise ValueError(f"routing_by_level: no episodes of {task_id}")
        lpc, lengths, success = _level_columns(episodes)
        mean, se, half = clustered_mean(lpc, lengths, confidence)
        ok_mean, ok_se, ok_half = clustered_mean(lpc[success], lengths[success], confidence)
        bot = pd.to_numeric(episodes["optimal_length"], errors="coerce").to_numpy(float)
        known = np.isfinite(bot)
        bot_mean, bot_se, bot_half = clustered_mean(bot[known], np.ones(known.sum()), confidence)
        pair = known & np.isfinite(lpc)
        r = (
            float(np.corrcoef(lpc[pair], bot[pair])[0, 1])
            if pair.sum() > 2 and np.std(lpc[pair]) > 0 and np.std(bot[pair]) > 0
            else math.nan
        )
        row = {
            "level": task_id,
            "curriculum_rank": curriculum_rank(task_id),
            "episodes": len(episodes),
            "success_rate": float(success.mean()),
            "mean_lpc": mean,
            "lpc_se": se,
            "lpc_ci_low": mean - half,
            "lpc_ci_high": mean + half,
            "successes": int(success.sum()),
            "lpc_success": ok_mean,
            "lpc_success_se": ok_se,
            "lpc_success_ci_low": ok_mean - ok_half,
            "lpc_success_ci_high": ok_mean + ok_half,
            "bot_path_mean": bot_mean,
            "bot_path_ci_low": bot_mean - bot_half,
            "bot_path_ci_high": bot_mean + bot_half,
            "bot_paths": int(known.sum()),
            "mean_length": float(lengths.mean()),
            "r_lpc_bot_path": r,
        }
        for cols in routing_layers(episodes.columns).values():
            for c in cols:
                row[f"usage_{c}"] = float((episodes[c].to_numpy(float) * lengths).sum() / lengths.sum())
        rows.append(row)
    table = pd.DataFrame(rows)
    table["curriculum_rank"] = table["curriculum_rank"].astype("Int64")
    return table.sort_values(["bot_path_mean", "level"], na_position="last").reset_index(drop=True)


def ranking(
    table: pd.DataFrame, value: str, low: str, high: str, what: str = "learning speed"
) -> dict[str, Any]:
    """Levels ordered by `value` (larger = harder); hardest / easiest named only when that
    level's [low, high] lies wholly above / below every other level's, else None. Keys: order,
    hardest, easiest, verdict."""
    t = table.dropna(subset=[value, low, high]).sort_values(value)
    out: dict[str, Any] = {"order": list(t["level"]), "hardest": None, "easiest": None}
    if len(t) < 2:
        out["verdict"] = f"fewer than 2 levels with a {what} interval: no ranking"
        return out
    top, bottom = t.iloc[-1], t.iloc[0]
    if (t.iloc[:-1][high] < top[low]).all():
        out["hardest"] = top["level"]
    if (t.iloc[1:][low] > bottom[high]).all():
        out["easiest"] = bottom["level"]
    if out["hardest"] and out["easiest"]:
        out["verdict"] = f"by {what}: {out['hardest']} hardest, {out['easiest']} easiest (intervals separate)"
    else:
        out["verdict"] = (
            f"by {what}, the intervals overlap: no hardest level"
            + (f" (hardest: {out['hardest']})" if out["hardest"] else "")
            + ("" if out["easiest"] is None else f" (easiest: {out['easiest']})")
        )
    return out


DIFFERENCE_INTERVAL = (
    "{confidence:.0%} bootstrap-t over episodes, resampled within each level ({resamples} resamples)"
)


def level_difficulty_summary(
    table: pd.DataFrame, episodes_by_level: Mapping[str, pd.DataFrame], confidence: float = 0.95
) -> dict:
    """Does the policy spend more LPC on harder levels? From routing_by_level's table and the
    episodes tables it was made from (for the difference's interval):
    n_levels; spearman_lpc_bot_path (Spearman rho of mean LPC against mean bot path length over
    the levels) and spearman_lpc_curriculum (against BabyAI's curriculum rank, over the n_curriculum
    levels that have one): None under 3 levels or when either side is constant, descriptive only (a p-value only from 4 levels on:
    with 3 the smallest possible p is 0.33); hardest / easiest by bot path length, each named only
    when its 95% interval is separated from every other level's (`ranking`; else None,
    and the verdict says the lengths do not resolve it: a walking distance is no verdict on
    difficulty when the layouts overlap), and, when both are named,
    lpc_difference (hardest minus easiest, LPC per step) with its interval from
    clustered_difference (the studentized bootstrap over episodes, each level's resampled on its
    own: the levels' episodes are independent; seeded, so the summary is reproducible), and the
    same on successful episodes only (lpc_difference_success...; None without two successes on
    each, or without spread); lpc_difference_interval says what the interval is (in
    routing_by_level_summary.json); verdict, one line."""
    from scipy import stats

    t = table.dropna(subset=["mean_lpc", "bot_path_mean"]).sort_values("bot_path_mean")
    out: dict[str, Any] = {"n_levels": len(t)}
    if len(t) < 2:
        out["verdict"] = "fewer than 2 levels with an LPC and a bot path length: nothing to compare"
        return out

    def spearman(x: pd.Series, y: pd.Series) -> tuple[float | None, float | None]:
        if len(x) < 3 or x.nunique() < 2 or y.nunique() < 2:  # a constant side: rho is undefined
            return None, None
        rho, p = stats.spearmanr(x.astype(float), y.astype(float))
        return float(rho), float(p) if len(x) >= 4 else None

    out["spearman_lpc_bot_path"], out["spearman_lpc_bot_path_p"] = spearman(t["mean_lpc"], t["bot_path_mean"])
    ranked = t[t["curriculum_rank"].notna()]
    out["n_curriculum"] = len(ranked)
    out["spearman_lpc_curriculum"], out["spearman_lpc_curriculum_p"] = spearman(
        ranked["mean_lpc"], ranked["curriculum_rank"]
    )
    ranked = ranking(t, "bot_path_mean", "bot_path_ci_low", "bot_path_ci_high", "bot path length")
    out.update(hardest=ranked["hardest"], easiest=ranked["easiest"])
    if ranked["hardest"] is None or ranked["easiest"] is None:
        out.update(
            {f"lpc_difference{s}{k}": None for s in ("", "_success") for k in ("", "_ci_low", "_ci_high")}
        )
        out["verdict"] = (
            "the bot path lengths of the levels overlap (95% intervals): no hardest or easiest level, "
            "no LPC comparison between them"
        )
        return out
    hard, easy = t.iloc[-1], t.iloc[0]
    hard_lpc, hard_length, hard_success = _level_columns(episodes_by_level[hard["level"]])
    easy_lpc, easy_length, easy_success = _level_columns(episodes_by_level[easy["level"]])
    out["lpc_difference_interval"] = DIFFERENCE_INTERVAL.format(
        confidence=confidence, resamples=DIFFERENCE_RESAMPLES
    )
    phrases = []
    for suffix, hard_keep, easy_keep in (
        ("", np.ones(len(hard_lpc), bool), np.ones(len(easy_lpc), bool)),
        ("_success", hard_success, easy_success),
    ):
        diff, low, high = clustered_difference(
            hard_lpc[hard_keep],
            hard_length[hard_keep],
            easy_lpc[easy_keep],
            easy_length[easy_keep],
            confidence,
        )
        if not (math.isfinite(low) and math.isfinite(high)):
            out.update({f"lpc_difference{suffix}{k}": None for k in ("", "_ci_low", "_ci_high")})
            phrases.append("too few episodes, or no spread, to tell")
            continue
        out[f"lpc_difference{suffix}"] = diff
        out[f"lpc_difference{suffix}_ci_low"], out[f"lpc_difference{suffix}_ci_high"] = low, high
        if low > 0:
            phrases.append(f"more LPC on the hardest level ({level_name(hard['level'])}) than on the easiest")
        elif high < 0:
            phrases.append(f"less LPC on the hardest level ({level_name(hard['level'])}) than on the easiest")
        else:
            phrases.append("no clear LPC difference between the hardest and the easiest level")
    out["verdict"] = f"{phrases[0]}; on successful episodes only: {phrases[1]}"
    return out
