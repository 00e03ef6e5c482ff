"""The routing cache: what evaluation records at every step, stored columnar for the notebooks.

One cache folder per (checkpoint, evaluated task, knockout) holds
    steps.parquet     one row per agent step (episode, t, position, router weights, logits, phases...)
    episodes.parquet  one row per episode (seed, mission, outcome, lengths, start layout as JSON)
    metadata.json     schema version, checkpoint path, config, metrics, evaluation settings
and, with --cache_format json, `routing_data.json` in the earlier system's shape for its tools.

Folder layout (`cache_dir_for`): <cache_dir>/<task_id>/trial_<N>/[seed_<S>/][update_<U>/][<variant>/]
where update_<U> is left out for checkpoint_final.pt and <variant> is `eval_<task>` and/or
`knockout_<spec>` when the evaluation was not the default one.

    data = load_cache("evaluation_cache/BabyAI-GoToLocal-v0/trial_0")
    data.steps.groupby("episode")["lpc"].mean(); data.meta["metrics"]["success_rate"]
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from runs import atomic_write

SCHEMA_VERSION = 1
STEPS_FILE, EPISODES_FILE, META_FILE, JSON_FILE = (
    "steps.parquet",
    "episodes.parquet",
    "metadata.json",
    "routing_data.json",
)

# Per-step columns, besides the router weights `layer_<k>_expert_<j>` and logits `logit_<a>`.
STEP_COLUMNS = {
    "episode": "episode index within this evaluation (its layout seed is in episodes.parquet)",
    "t": "step index within the episode (0 = first decision)",
    "env_slot": "which parallel env ran the episode",
    "x": "agent column before acting",
    "y": "agent row before acting",
    "direction": "agent direction before acting (0 right, 1 down, 2 left, 3 up)",
    "lpc": "Learned Pathway Complexity of this step (sum over layers of w_j * size_j^2)",
    "action": "action taken (0 left, 1 right, 2 forward, 3 pickup, 4 drop, 5 toggle, 6 done)",
    "entropy": "entropy of the policy's action distribution, in nats",
    "carrying": "1 if the agent carries an object before acting",
    "door_unlocked": "1 once the episode's first door has been opened (t_unlocked is set)",
    "t_unlocked": "step at which the first door was opened, if that has happened by now, else NaN",
    "t_pick": "step at which the agent first picked something up, if by now, else NaN",
    "t_drop": "step of the first drop after that pickup, if by now, else NaN",
    "dist_to_door": "straight-line distance to the door opened first in this episode (else the "
    "mission's door, else the only door; NaN if none)",
    "dist_to_key": "straight-line distance to the key's current position (0 while carried; NaN: no key)",
    "dist_to_target": "straight-line distance to the current position of the mission's first target "
    "in execution order (0 while carried; NaN: no object target)",
}


class CacheError(ValueError):
    """A cache folder that is missing, incomplete or of an unknown schema."""


@dataclass
class CacheData:
    steps: pd.DataFrame
    episodes: pd.DataFrame
    meta: dict
    path: Path

    @property
    def expert_sizes(self) -> list[list[int]]:
        return self.meta["config"].get("expert_hidden_sizes", [])

    def weight_columns(self, layer: int) -> list[str]:
        return sorted(
            (c for c in self.steps.columns if c.startswith(f"layer_{layer}_expert_")),
            key=lambda c: int(c.rsplit("_", 1)[1]),
        )

    def contexts(self) -> list[dict]:
        """The start-of-episode env context of every episode, as dicts."""
        return [json.loads(s) for s in self.episodes["env_context"]]


def weight_column(layer: int, expert: int) -> str:
    return f"layer_{layer}_expert_{expert}"


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return None if not np.isfinite(value) else float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


# The split between what evaluation records at each step and what is a function of those columns
# and of the episode row. Derived columns are computed once, by `derive_step_columns`: evaluation
# calls it on what it recorded, `load_cache` on what it read; they are never stored.
RECORDED_STEP_COLUMNS = (
    "episode",
    "t",
    "env_slot",
    "x",
    "y",
    "direction",
    "action",
    "carrying",
    "dist_to_key",
    "dist_to_target",
)  # besides the router weights layer_<k>_expert_<j> and the logits logit_<a>
DERIVED_STEP_COLUMNS = ("door_unlocked", "t_unlocked", "t_pick", "t_drop", "dist_to_door", "lpc", "entropy")


def _storage_steps(steps: pd.DataFrame) -> pd.DataFrame:
    """What steps.parquet holds: router weights and logits as float16 (relative error < 0.05%,
    far below anything a routing plot shows; metrics are computed before, at full precision),
    other floats as float32, small integers downcast, derived columns dropped. This is what
    makes the cache ~10x smaller than the earlier system's JSON: those 16 noisy floats per step do not
    compress."""
    df = steps.drop(columns=[c for c in DERIVED_STEP_COLUMNS if c in steps.columns])
    for c in df.columns:
        if c.startswith(("logit_", "layer_")):
            df[c] = df[c].astype(np.float16)
        elif df[c].dtype == np.float64:
            df[c] = df[c].astype(np.float32)
        elif pd.api.types.is_integer_dtype(df[c]):
            df[c] = pd.to_numeric(df[c], downcast="integer")
    return df


def _episode_positions(episodes: pd.DataFrame, episode_of_step: np.ndarray) -> np.ndarray:
    """Row of `episodes` holding each step's episode."""
    ids = episodes["episode"].to_numpy()
    order = np.argsort(ids, kind="stable")
    return order[np.searchsorted(ids[order], episode_of_step)]


def _column(episodes: pd.DataFrame, column: str, position: np.ndarray) -> np.ndarray:
    """episodes[column] for each step (via _episode_positions), as float with NaN for missing."""
    return episodes[column].to_numpy(dtype=float, na_value=np.nan)[position]


def _restore_types(stored: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Inverse of _storage_steps' downcasts: float32 weights/logits, float64 other floats, int64."""
    cols: dict[str, np.ndarray] = {}
    for name, values in stored.items():
        if values.dtype == np.float16:
            cols[name] = values.astype(np.float32)
        elif values.dtype == np.float32:
            cols[name] = values.astype(np.float64)
        elif np.issubdtype(values.dtype, np.integer):
            cols[name] = values.astype(np.int64)
        else:
            cols[name] = values
    return cols


def step_column_order(columns: list[str] | Any) -> list[str]:
    """The canonical order of a steps table: STEP_COLUMNS' order, then logits, then router weights."""
    columns = list(columns)
    logits = sorted((c for c in columns if c.startswith("logit_")), key=lambda c: int(c[6:]))
    weights = sorted(
        (c for c in columns if c.startswith("layer_")),
        key=lambda c: [int(v) for v in c.removeprefix("layer_").split("_expert_")],
    )
    known = [c for c in STEP_COLUMNS if c in columns]
    rest = [c for c in columns if c not in known and c not in logits and c not in weights]
    return known + rest + logits + weights


def derive_step_columns(
    recorded: dict[str, np.ndarray], episodes: pd.DataFrame, config: dict
) -> pd.DataFrame:
    """The full steps table from the recorded columns (numpy arrays, rows sorted by episode and
    t), the episodes table and the run config: an event time is visible from the step it happened
    on; the door distance uses the episode's door; LPC (with the run's lpc_exponent) and the policy
    entropy come from the router weights and logits. One DataFrame is built at the end (fast)."""
    cols = dict(recorded)
    position, t = _episode_positions(episodes, cols["episode"]), cols["t"]
    for name in ("t_unlocked", "t_pick", "t_drop"):
        when = _column(episodes, name, position)
        cols[name] = np.where(when <= t, when, np.nan)
    cols["door_unlocked"] = (~np.isnan(cols["t_unlocked"])).astype(np.int64)
    door_x, door_y = _column(episodes, "door_x", position), _column(episodes, "door_y", position)
    cols["dist_to_door"] = np.hypot(cols["x"] - door_x, cols["y"] - door_y)
    exponent = float(config.get("lpc_exponent", 2.0))
    lpc = np.zeros(len(t))
    for k, sizes in enumerate(config.get("expert_hidden_sizes") or []):
        names = [weight_column(k, j) for j in range(len(sizes))]
        if all(c in cols for c in names):
            weights = np.stack([cols[c] for c in names], axis=1).astype(np.float64)
            lpc += weights @ (np.asarray(sizes, dtype=np.float64) ** exponent)
    cols["lpc"] = lpc
    logit_columns = sorted((c for c in cols if c.startswith("logit_")), key=lambda c: int(c[6:]))
    if logit_columns:
        logits = np.stack([cols[c] for c in logit_columns], axis=1).astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        cols["entropy"] = -(np.exp(log_p) * log_p).sum(axis=1)
    return pd.DataFrame({c: cols[c] for c in step_column_order(cols)})


def write_cache(
    directory: str | os.PathLike,
    steps: pd.DataFrame,
    episodes: pd.DataFrame,
    meta: dict,
    formats: tuple[str, ...] = ("parquet",),
) -> Path:
    """Write one evaluation's cache (each file atomically; metadata last, so a reader that finds
    metadata.json finds complete tables)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta = _jsonable(
        {
            **meta,
            "schema_version": SCHEMA_VERSION,
            "step_columns": STEP_COLUMNS,
            "step_column_order": list(steps.columns),
        }
    )
    if "parquet" in formats:
        stored = _storage_steps(steps)
        atomic_write(directory / STEPS_FILE, lambda p: stored.to_parquet(p, index=False, compression="zstd"))
        atomic_write(
            directory / EPISODES_FILE,
            lambda p: episodes.to_parquet(p, index=False, compression="zstd"),
        )
    if "json" in formats:
        atomic_write(directory / JSON_FILE, lambda p: _write_legacy_json(p, steps, episodes, meta))
    atomic_write(directory / META_FILE, lambda p: Path(p).write_text(json.dumps(meta, indent=1)))
    return directory


def load_cache(directory: str | os.PathLike) -> CacheData:
    """Read a cache folder into DataFrames; refuses unknown schema versions with a clear message."""
    directory = Path(directory)
    meta_path = directory / META_FILE
    if not meta_path.is_file():
        raise CacheError(f"{str(directory)!r} is not a routing cache (no {META_FILE})")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CacheError(f"{str(meta_path)!r} is unreadable: {e}") from None
    version = meta.get("schema_version")
    if version != SCHEMA_VERSION:
        newer = isinstance(version, int) and version > SCHEMA_VERSION
        raise CacheError(
            f"cache {str(directory)!r} has schema version {version!r}; this code reads version {SCHEMA_VERSION}"
            + ("; update this project to read it" if newer else "; re-evaluate with batch_eval.py --force")
        )
    if not (directory / STEPS_FILE).is_file():
        raise CacheError(
            f"cache {str(directory)!r} has no {STEPS_FILE} (written with --cache_format json only?)"
        )
    episodes = pq.ParquetFile(directory / EPISODES_FILE).read().to_pandas()
    table = pq.ParquetFile(directory / STEPS_FILE).read()  # lighter than pd.read_parquet for one file
    stored = {name: table.column(name).to_numpy() for name in table.column_names}
    steps = derive_step_columns(_restore_types(stored), episodes, meta.get("config", {}))
    order = meta.get("step_column_order")
    if order and set(order) <= set(steps.columns):  # the columns, in the order, evaluation returned
        steps = steps[order]
    return CacheData(steps, episodes, meta, directory)


def find_caches(root: str | os.PathLike) -> list[Path]:
    """Every cache folder under root (any depth), sorted."""
    return sorted(p.parent for p in Path(root).rglob(META_FILE))


def _write_legacy_json(path: str, steps: pd.DataFrame, episodes: pd.DataFrame, meta: dict) -> None:
    """The earlier system's routing_data.json: one record per step with position, layer_routing, lpc and
    the episode's env_context (field names and nesting as the earlier system documents them)."""
    contexts = {int(e): json.loads(c) for e, c in zip(episodes["episode"], episodes["env_context"])}
    layers = sorted({int(c.split("_")[1]) for c in steps.columns if c.startswith("layer_")})
    columns = {k: [c for c in steps.columns if c.startswith(f"layer_{k}_expert_")] for k in layers}
    for k in layers:
        columns[k].sort(key=lambda c: int(c.rsplit("_", 1)[1]))
    weights = {k: steps[columns[k]].to_numpy().tolist() for k in layers}
    xs, ys, lpcs, eps = (steps[c].tolist() for c in ("x", "y", "lpc", "episode"))
    records = [
        {
            "position": [int(xs[i]), int(ys[i])],
            "layer_routing": {f"layer_{k}": weights[k][i] for k in layers},
            "lpc": float(lpcs[i]),
            "env_context": contexts[int(eps[i])],
        }
        for i in range(len(steps))
    ]
    metrics = meta.get("metrics", {})
    doc = {
        "checkpoint_path": meta.get("checkpoint_path"),
        "num_episodes": meta.get("num_episodes"),
        "metrics": {
            k: metrics.get(k) for k in ("success_rate", "path_ratio", "mean_lpc", "bot_plan_failures")
        },
        "routing_data": records,
    }
    with open(path, "w") as f:
        json.dump(_jsonable(doc), f)
