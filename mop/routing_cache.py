"""The routing cache: what evaluation records at every step, stored columnar for the notebooks.

One cache folder per (checkpoint, evaluated task, knockout) holds
    steps.parquet     one row per agent step (episode, t, position, router weights, logits, phases...)
    episodes.parquet  one row per episode (seed, mission, outcome, lengths, start layout as JSON)
    metadata.json     schema version, checkpoint path, config, metrics, evaluation settings
and, with --cache_format json, `routing_data.json` in the earlier system's current ("v3") shape
for its tools (`write_legacy_json`). `load_cache` also reads the earlier system's own caches, a
folder holding only its routing_data.json (v1, v2 or v3; `read_legacy_json`), and `find_caches`
lists them: its JSON, both ways, lives here.

Folder layout (`cache_dir_for`): <cache_dir>/<task_id>/trial_<N>/[seed_<S>/][update_<U>/][<variant>/]
where update_<U> is the update the weights hold (left out only for a final checkpoint whose update
is unknown, an earlier system's) and <variant> is `eval_<task>` and/or
`knockout_<spec>` when the evaluation was not the default one.

    data = load_cache("evaluation_cache/BabyAI-GoToLocal-v0/trial_0")
    data.steps.groupby("episode")["lpc"].mean(); data.meta["metrics"]["success_rate"]
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mop.runs import atomic_write, parse_run_path

SCHEMA_VERSION = 2  # 2: the optional subgoal and event columns (SUBGOAL_STEP_COLUMNS)
READABLE_SCHEMA_VERSIONS = (1, 2)  # a version-1 cache reads the same, without those columns
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
    # recorded only with eval_mop --record_subgoals (mop/subgoals.py defines each precisely)
    "subgoal": "the BabyAI bot's subgoal on the student's state before acting (top of its stack): "
    "GoNextTo, Explore, Open, Pickup, Drop, Close, Done, Failed or Other",
    "subgoal_target": "what that subgoal is about: 'red key', 'yellow door (3,5)', a position '(x,y)', or ''",
    "event_pickup": "1 if the agent carries something at this step and carried nothing at the one before",
    "event_drop": "1 if the agent carried something at the step before and carries nothing now",
    "event_open": "1 if a door opened between the step before and this one",
    "event_unlock": "1 if a door was unlocked between the step before and this one (it opens too)",
    "event_close": "1 if a door closed between the step before and this one",
    "event_target_in_view": "1 if one of the mission's first-target objects is in the agent's view now "
    "and none was at the step before",
}
# The columns of eval_mop --record_subgoals (schema version 2; absent from older caches and from
# evaluations without the flag). Other analyses read `subgoal` and `subgoal_target` by these names.
EVENT_COLUMNS = (
    "event_pickup",
    "event_drop",
    "event_open",
    "event_unlock",
    "event_close",
    "event_target_in_view",
)
SUBGOAL_STEP_COLUMNS = ("subgoal", "subgoal_target", *EVENT_COLUMNS)
# The values of `subgoal`, in the order tables and figures list them (mop/subgoals.py: meanings).
SUBGOAL_VOCABULARY = ("GoNextTo", "Explore", "Open", "Pickup", "Drop", "Close", "Done", "Failed", "Other")


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
)  # besides the router weights layer_<k>_expert_<j>, the logits logit_<a> and SUBGOAL_STEP_COLUMNS
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
            # the router's weights sum to 1 (softmax, knockouts renormalise), but stored as float16
            # they sum to 1 +- 3e-4: renormalised, a layout of equal sizes has one LPC, not noise
            # that a correlation with H or a t-test across runs would measure
            total = weights.sum(axis=1, keepdims=True)
            weights = np.divide(weights, total, out=weights.copy(), where=total > 0)
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
        atomic_write(directory / JSON_FILE, lambda p: write_legacy_json(p, steps, episodes, meta))
    atomic_write(directory / META_FILE, lambda p: Path(p).write_text(json.dumps(meta, indent=1)))
    return directory


def load_cache(directory: str | os.PathLike) -> CacheData:
    """Read a cache folder into DataFrames; refuses unknown schema versions with a clear message.
    A folder holding only the earlier system's routing_data.json (or that file itself) is read
    with `read_legacy_json`."""
    directory = Path(directory)
    if directory.suffix == ".json" and directory.is_file():
        return read_legacy_json(directory)
    meta_path = directory / META_FILE
    if not meta_path.is_file() and (directory / JSON_FILE).is_file():
        return read_legacy_json(directory / JSON_FILE)
    if not meta_path.is_file():
        raise CacheError(f"{str(directory)!r} is not a routing cache (no {META_FILE})")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError, RecursionError) as e:  # RecursionError: absurdly nested JSON
        raise CacheError(f"{str(meta_path)!r} is unreadable: {type(e).__name__}") from None
    if not isinstance(meta, dict):
        raise CacheError(f"{str(meta_path)!r} is not a routing cache's metadata (not a JSON object)")
    version = meta.get("schema_version")
    if version not in READABLE_SCHEMA_VERSIONS or isinstance(version, bool):
        newer = isinstance(version, int) and version > SCHEMA_VERSION
        raise CacheError(
            f"cache {str(directory)!r} has schema version {version!r}; this code reads versions "
            f"{READABLE_SCHEMA_VERSIONS[0]} to {SCHEMA_VERSION}"
            + ("; update this project to read it" if newer else "; re-evaluate with batch_eval.py --force")
        )
    if not (directory / STEPS_FILE).is_file():
        raise CacheError(
            f"cache {str(directory)!r} has no {STEPS_FILE} (written with --cache_format json only?)"
        )
    if not isinstance(meta.get("config"), dict):
        raise CacheError(f"{str(meta_path)!r} has no run config: not written by this project's evaluation")
    if not (directory / EPISODES_FILE).is_file():
        raise CacheError(f"cache {str(directory)!r} has no {EPISODES_FILE} (incomplete: re-evaluate it)")
    try:
        episodes = pq.ParquetFile(directory / EPISODES_FILE).read().to_pandas()
        table = pq.ParquetFile(directory / STEPS_FILE).read()  # lighter than pd.read_parquet for one file
        stored = {name: table.column(name).to_numpy() for name in table.column_names}
        steps = derive_step_columns(_restore_types(stored), episodes, meta["config"])
    except (OSError, pa.ArrowException, KeyError, ValueError, TypeError) as e:
        # a truncated or foreign Parquet file, or tables without the columns evaluation writes
        detail = str(e).strip().splitlines()[0] if str(e).strip() else "no detail"
        raise CacheError(
            f"cache {str(directory)!r} is corrupt or not this project's ({type(e).__name__}: {detail}); re-evaluate it"
        ) from None
    order = meta.get("step_column_order")
    if order and set(order) <= set(steps.columns):  # the columns, in the order, evaluation returned
        steps = steps[order]
    return CacheData(steps, episodes, meta, directory)


def find_caches(root: str | os.PathLike) -> list[Path]:
    """Every cache folder under root (any depth), sorted: ours (metadata.json) and the earlier
    system's (a routing_data.json alone, in any of its layouts)."""
    found = [p for p in Path(root).rglob("*.json") if p.name in (META_FILE, JSON_FILE)]
    return sorted({p.parent for p in found if p.name == META_FILE or not (p.parent / META_FILE).is_file()})


def newest_cache(caches: list[Path]) -> Path | None:
    """The cache written last (its metadata or JSON file's mtime): the one a notebook opens on, so
    the evaluation just run is on screen, not the alphabetically first folder."""

    def written(cache: Path) -> float:
        files = [cache / name for name in (META_FILE, JSON_FILE) if (cache / name).is_file()]
        return max((f.stat().st_mtime for f in files), default=0.0)

    return max(caches, key=written, default=None)


# ----------------------------------------------------------------------------- the earlier system's JSON
#
# The earlier system (reference_facts §3.3-3.5) wrote one routing_data.json per evaluation, with no
# version field; its readers tell the shapes apart: "v1" embeds env_context in every record, "v2"
# has a top-level `episodes` list and an `episode` index per record, "v3" adds `action_logits`
# (later files also carry action, entropy, door_unlocked, t_*, dist_*, read with .get()).
# `write_legacy_json` writes its current v3 shape from our tables; `read_legacy_json` reads any of
# the three into our tables, so every reader of this project works on its caches.

LEGACY_TOP_KEYS = (
    "checkpoint_path",
    "num_episodes",
    "evaluated_at",
    "expert_hidden_sizes",
    "metrics",
    "episodes",
    "routing_data",
)
LEGACY_RECORD_KEYS = (
    "episode",
    "position",
    "layer_routing",
    "lpc",
    "carrying",
    "door_unlocked",
    "action_logits",
    "action",
    "entropy",
    "t_step",
    "t_unlocked",
    "t_pick",
    "t_drop",
    "dist_to_door",
    "dist_to_key",
    "dist_to_target",
)
LEGACY_METRICS = ("success_rate", "path_ratio", "mean_lpc", "bot_plan_failures")
# Its env_context key order (§3.4); agent_start_room and room_grid_shape only for RoomGrid levels.
_LEGACY_CONTEXT_ORDER = (
    "grid_size",
    "agent_start_pos",
    "agent_start_room",
    "room_grid_shape",
    "target_pos",
    "room_bounds",
    "goals",
    "doors",
    "keys",
    "balls",
    "boxes",
)
# Layouts the earlier system's runs used (its code default; PROJECT.md; history): tried when a
# file without `expert_hidden_sizes` has several layers, whose sizes its LPC alone cannot fix.
_LEGACY_KNOWN_SIZES = ([[32, 64, 128]], [[0, 16, 32]] * 3, [[32, 64, 128], [64, 128, 256]])


# What the columns read from its files mean where that is not what STEP_COLUMNS says.
_LEGACY_MEANINGS = {
    "episode": "episode (rebuilt from the record order) or, where that is impossible, its layout index",
    "t_drop": "step of the first drop once a door was open, if by now, else NaN (its rule)",
    "dist_to_door": "its rule: the only door; with several, the door opened first before the opening, "
    "then the first door still locked (NaN if none or before an opening it never backfilled)",
    "dist_to_key": "straight-line distance to the first key's start position, even once carried",
    "dist_to_target": "straight-line distance to env_context target_pos (fixed at episode start)",
}


# env_context's copy of the earlier system's target rule (babyai_env.legacy_target_pos): the JSON
# export's target_pos. Contexts written before it existed export our target_pos.
LEGACY_TARGET_KEY = "legacy_target_pos"


def _legacy_target(ctx: dict) -> Any:
    return ctx[LEGACY_TARGET_KEY] if LEGACY_TARGET_KEY in ctx else ctx.get("target_pos")


def _legacy_context(ctx: dict) -> dict:
    ctx = {k: v for k, v in ctx.items() if k != LEGACY_TARGET_KEY} | (
        {"target_pos": ctx[LEGACY_TARGET_KEY]} if LEGACY_TARGET_KEY in ctx else {}
    )
    out = {k: ctx[k] for k in _LEGACY_CONTEXT_ORDER if k in ctx}
    out.update({k: v for k, v in ctx.items() if k not in out})
    for k in ("agent_start_room", "room_grid_shape"):  # absent, not null, outside RoomGrid levels
        if out.get(k, 0) is None:
            del out[k]
    return out


def _none_if_nan(values: np.ndarray, cast: type = float) -> list:
    return [None if v != v else cast(v) for v in values.tolist()]


def _legacy_entropy(logits: np.ndarray) -> np.ndarray:
    """Its entropy: softmax of the logits, -sum p log(p + 1e-9), in nats."""
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    return -(p * np.log(p + 1e-9)).sum(axis=1)


def write_legacy_json(
    path: str | os.PathLike, steps: pd.DataFrame, episodes: pd.DataFrame, meta: dict
) -> None:
    """The earlier system's current ("v3") routing_data.json from our steps/episodes tables.

    Top-level keys in its order (metadata first: its backfill scripts regex the first 2 KB), then
    per step record `episode` (index into `episodes`), `position`, `layer_routing`, `lpc`,
    `carrying`, `door_unlocked`, `action_logits`, `action`, `entropy`, `t_step`, `t_unlocked`,
    `t_pick`, `t_drop`, `dist_to_door`, `dist_to_key`, `dist_to_target`; missing values are null
    (never NaN). Its readers (`.get()` with None defaults) read the file unchanged.

    Reproduced exactly, from what we record:
    - `t_step` and the timestamps as they were when the step was recorded (null before the event;
      an event at step k is visible from the record with t_step k, as in its files); `t_pick` = the
      first step carrying anything; `t_unlocked` = the first step a door is open, and, as in its
      code, a door already open at the start counts from t_step 1;
    - `dist_to_key`: to the first key of env_context at its *start* position, even once carried;
      `dist_to_target`: to env_context `target_pos`; `dist_to_door` (§3.3): one door -> that door
      whatever its state; several -> null until the first opening, then backfilled with the door
      opened first (null when that opening is the episode's last action, as its backfill misses
      it), afterwards the first door (row-major) still locked, null if none (so OpenTwoDoors'
      post-unlock records are null, as in its files); straight lines through walls;
    - `door_unlocked`: its flag, "the first door (row-major) is not locked" (0 without doors);
    - `entropy` in nats with its +1e-9 inside the log; `action_logits` as floats; `position` (x, y);
    - `target_pos` (and `dist_to_target` to it) follow its rule, not ours: the first description
      in grammatical order (instr_a before instr_b) and the first object BabyAI lists for it
      (env_context `legacy_target_pos`, babyai_env.legacy_target_pos), where our Parquet keeps the
      nearest instance of the first target in execution order (17% of GoToLocal's episodes
      differ; caches evaluated before `legacy_target_pos` was recorded export ours).
    Not reproducible, and what is written instead:
    - `episodes` has one entry per episode (ours), where it deduplicated identical layouts into one
      entry; `episode` is therefore a real episode id here. Records are episode-major (sorted by
      episode, then t_step), where its are step-major over the parallel envs;
    - `t_drop`: ours is the first drop after the first pickup; its is the first drop once a door is
      open (a later pickup-drop counts). Written when our drop came at or after the opening, null
      when the drop came before it (its later drop, if any, was not recorded by us);
    - `dist_to_door` after the first opening, and `door_unlocked` when the first door is locked
      but another door was opened first, assume the doors locked at the start stay locked (we
      record only the first opening): exact unless a second locked door is unlocked later
      (KeyCorridor, UnlockToUnlock, BossLevel). Checked against its rules applied live to
      bot-driven episodes: every field identical on UnlockPickup, OpenTwoDoors and GoTo;
    - `action` is the action taken: with greedy evaluation (the default) the argmax of the logits,
      as its files have; with --sample the sampled action (its evaluation was greedy only);
    - `lpc` uses the run's lpc_exponent (2, its only value, unless configured otherwise);
    - `num_episodes` = the episodes run (ours runs exactly the requested number);
      `metrics.path_ratio` is null when no episode succeeded (it wrote NaN).
    """
    config = meta.get("config") or {}
    metrics = meta.get("metrics") or {}
    ep = episodes.reset_index(drop=True)
    contexts = [json.loads(c) if isinstance(c, str) else dict(c) for c in ep["env_context"]]
    index_of = {int(e): i for i, e in enumerate(ep["episode"])}
    pos = np.array([index_of[int(e)] for e in steps["episode"]], dtype=np.int64)
    n_ep, n = len(ep), len(steps)
    t = steps["t"].to_numpy(dtype=float)
    x, y = steps["x"].to_numpy(dtype=float), steps["y"].to_numpy(dtype=float)

    def per_episode(values: list) -> np.ndarray:
        return np.asarray(values, dtype=float).reshape(n_ep, -1)[pos] if n_ep else np.zeros((n, 2))

    nan2 = [math.nan, math.nan]
    key_xy = per_episode([c["keys"][0][:2] if c.get("keys") else nan2 for c in contexts])
    target_xy = per_episode([_legacy_target(c) or nan2 for c in contexts])
    doors = [c.get("doors") or [] for c in contexts]
    # Its t_unlocked: a door open at the start is "open after the first step" (t = 1).
    ep_unlocked = ep["t_unlocked"].to_numpy(dtype=float, na_value=np.nan)
    open_at_start = np.array([any(len(d) > 3 and d[3] for d in ds) for ds in doors])
    ep_unlocked_legacy = np.where(open_at_start, np.fmin(ep_unlocked, 1.0), ep_unlocked)
    first_open = []
    for i, ds in enumerate(doors):  # the door its eval calls unlocked_door_pos
        opened = next((d[:2] for d in ds if len(d) > 3 and d[3]), None)
        if opened is None and not np.isnan(ep_unlocked[i]) and pd.notna(ep.at[i, "door_x"]):
            opened = [int(ep.at[i, "door_x"]), int(ep.at[i, "door_y"])]
        first_open.append(opened)
    next_locked = [
        next((d[:2] for d in ds if len(d) > 4 and d[4] and d[:2] != first_open[i]), None)
        for i, ds in enumerate(doors)
    ]
    num_doors = np.array([len(ds) for ds in doors])[pos]
    door0 = per_episode([ds[0][:2] if ds else nan2 for ds in doors])
    opened_xy = per_episode([o if o is not None else nan2 for o in first_open])
    locked_xy = per_episode([o if o is not None else nan2 for o in next_locked])
    length = ep["length"].to_numpy(dtype=float)[pos]
    t_unl = ep_unlocked_legacy[pos]
    before = ~(t >= t_unl)  # NaN-safe: True while the first opening has not happened
    backfilled = before & (t_unl < length)  # its backfill runs when the opening is not terminal
    many = np.where(before, np.where(backfilled, _dist(x, y, opened_xy), np.nan), _dist(x, y, locked_xy))
    dist_to_door = np.where(num_doors == 1, _dist(x, y, door0), np.where(num_doors > 1, many, np.nan))
    t_unlocked_now = np.where(t >= t_unl, t_unl, np.nan)
    step_drop = steps["t_drop"].to_numpy(dtype=float) if "t_drop" in steps else np.full(n, np.nan)
    t_drop = np.where(t_unl <= step_drop, step_drop, np.nan)
    first_locked = np.array([bool(ds and len(ds[0]) > 4 and ds[0][4]) for ds in doors])[pos]
    first_is_opened = np.array(
        [bool(ds) and first_open[i] is not None and ds[0][:2] == first_open[i] for i, ds in enumerate(doors)]
    )[pos]
    door_flag = np.where(
        num_doors == 0, 0, np.where(~first_locked | (first_is_opened & ~np.isnan(t_unlocked_now)), 1, 0)
    )
    logit_cols = sorted((c for c in steps.columns if c.startswith("logit_")), key=lambda c: int(c[6:]))
    logits = steps[logit_cols].to_numpy(dtype=np.float64) if logit_cols else None
    layers = sorted({int(c.split("_")[1]) for c in steps.columns if c.startswith("layer_")})
    weights = {
        k: steps[sorted((c for c in steps.columns if c.startswith(f"layer_{k}_expert_")),
                        key=lambda c: int(c.rsplit("_", 1)[1]))].to_numpy(dtype=np.float64).tolist()
        for k in layers
    }  # fmt: skip
    columns = {
        "episode": pos.tolist(),
        "position": [[int(a), int(b)] for a, b in zip(steps["x"].tolist(), steps["y"].tolist())],
        "lpc": _none_if_nan(steps["lpc"].to_numpy(dtype=float)) if "lpc" in steps else [None] * n,
        "carrying": steps["carrying"].astype(int).tolist() if "carrying" in steps else [None] * n,
        "door_unlocked": door_flag.astype(int).tolist(),
        "action_logits": logits.tolist() if logits is not None else [None] * n,
        "action": steps["action"].astype(int).tolist(),
        "entropy": _legacy_entropy(logits).tolist() if logits is not None else [None] * n,
        "t_step": steps["t"].astype(int).tolist(),
        "t_unlocked": _none_if_nan(t_unlocked_now, int),
        "t_pick": _none_if_nan(steps["t_pick"].to_numpy(dtype=float), int)
        if "t_pick" in steps
        else [None] * n,
        "t_drop": _none_if_nan(t_drop, int),
        "dist_to_door": _none_if_nan(dist_to_door),
        "dist_to_key": _none_if_nan(_dist(x, y, key_xy)),
        "dist_to_target": _none_if_nan(_dist(x, y, target_xy)),
    }
    columns["layer_routing"] = [{f"layer_{k}": weights[k][i] for k in layers} for i in range(n)]
    ordered = [columns[k] for k in LEGACY_RECORD_KEYS]
    records = [dict(zip(LEGACY_RECORD_KEYS, values)) for values in zip(*ordered)] if n else []
    doc = {
        "checkpoint_path": meta.get("checkpoint_path"),
        "num_episodes": meta.get("num_episodes"),
        "evaluated_at": metrics.get("evaluated_at") or meta.get("evaluated_at"),
        "expert_hidden_sizes": config.get("expert_hidden_sizes"),
        "metrics": _jsonable({k: metrics.get(k) for k in LEGACY_METRICS}),
        "episodes": _jsonable([_legacy_context(c) for c in contexts]),
        "routing_data": records,
    }
    text = json.dumps(doc, allow_nan=False)  # one-shot dumps uses the C encoder; json.dump does not
    Path(path).write_text(text)


def _dist(x: np.ndarray, y: np.ndarray, xy: np.ndarray) -> np.ndarray:
    return np.hypot(x - xy[:, 0], y - xy[:, 1])


def legacy_version(doc: dict) -> str:
    """'v1' (env_context in every record), 'v2' (episodes list + episode index) or 'v3' (v2 with
    action_logits), as the earlier system's readers tell its unversioned files apart."""
    records = doc.get("routing_data") or [{}]
    if "env_context" in records[0] or "episodes" not in doc:
        return "v1"
    return "v3" if any("action_logits" in r for r in records[:1000]) else "v2"


def _floats(records: list, name: str) -> np.ndarray:
    return np.array([np.nan if (v := r.get(name)) is None else v for r in records], dtype=float)


def _maybe_int(values: np.ndarray) -> np.ndarray:
    return values.astype(np.int64) if len(values) and not np.isnan(values).any() else values


def _legacy_num_envs(t: np.ndarray, layout: np.ndarray) -> int | None:
    """How many envs its evaluation stepped together, from the record order alone: records are
    step-major over N envs that all start at t_step 0, so record r belongs to env r % N. None when
    the file does not fit that (no t_step, or any record breaking the pattern)."""
    n = len(t)
    if n == 0 or np.isnan(t).any() or t[0] != 0:
        return None
    num = int(np.argmax(t != 0)) if (t != 0).any() else n
    if n % num:
        return None
    cur, prev = t[num:], t[:-num]
    same_episode = cur != 0
    if (
        not ((cur == 0) | (cur == prev + 1)).all()
        or (layout[num:][same_episode] != layout[:-num][same_episode]).any()
    ):
        return None
    return num


def _legacy_sizes(doc: dict, weights: list[np.ndarray], lpc: np.ndarray) -> tuple[list | None, str | None]:
    """(expert_hidden_sizes, where they came from): the file's own list (v3), else a layout of its
    runs whose LPC matches every record, else (one layer) the sizes solving lpc = W @ size**2."""
    top = doc.get("expert_hidden_sizes")
    if isinstance(top, str):
        with contextlib.suppress(json.JSONDecodeError):
            top = json.loads(top)
    if isinstance(top, list) and top:
        flat = all(isinstance(v, (int, float)) for v in top)
        return ([[int(v) for v in top]] if flat else [[int(v) for v in layer] for layer in top]), "file"
    ok = ~np.isnan(lpc)
    if not weights or not ok.any():
        return None, None

    def fits(sizes: list[list[int]]) -> bool:
        predicted = sum(w[ok] @ (np.asarray(s, dtype=float) ** 2) for w, s in zip(weights, sizes))
        return bool(np.allclose(predicted, lpc[ok], rtol=1e-3, atol=1e-3))

    counts = [w.shape[1] for w in weights]
    for candidate in _LEGACY_KNOWN_SIZES:
        if [len(layer) for layer in candidate] == counts and fits(candidate):
            return [list(layer) for layer in candidate], "a layout its runs used, matching every record's lpc"
    if len(weights) == 1 and np.linalg.matrix_rank(weights[0][ok]) == counts[0]:
        squares = np.linalg.lstsq(weights[0][ok], lpc[ok], rcond=None)[0]
        sizes = [[int(round(math.sqrt(max(v, 0.0)))) for v in squares]]
        if fits(sizes):
            return sizes, "solved from lpc = sum w * size**2"
    return None, None


def _legacy_run(folder: Path, checkpoint_path: Any) -> dict:
    """task_id, trial, seed, update from <task>/trial_N/[seed_S/][update_U/] (either of its layouts,
    the double-task-id one included), else from its checkpoint path."""
    parts = folder.parts
    i = next((i for i in range(len(parts) - 1, 0, -1) if re.fullmatch(r"trial_\d+", parts[i])), None)
    if i is not None:
        run: dict[str, Any] = {
            "task_id": parts[i - 1],
            "trial": int(parts[i][6:]),
            "seed": None,
            "update": None,
        }
        for p in parts[i + 1 :]:
            if re.fullmatch(r"seed_\d+", p):
                run["seed"] = int(p[5:])
            elif re.fullmatch(r"update_\d+", p):
                run["update"] = int(p[7:])
        return run
    parsed = parse_run_path(checkpoint_path) if isinstance(checkpoint_path, str) else None
    if parsed is None:
        return {"task_id": None, "trial": None, "seed": None, "update": None}
    (rid, update) = parsed
    return {"task_id": rid.task_id, "trial": rid.trial, "seed": rid.seed, "update": update}


def read_legacy_json(path: str | os.PathLike) -> CacheData:
    """One of the earlier system's routing_data.json files (v1, v2 or v3) as our tables.

    Steps get our column names (t = t_step; router weights layer_<k>_expert_<j>; logits
    logit_<a>); a field the file lacks is NaN (v1/v2 have no logits, actions, phases or
    distances). The values keep its meanings where they differ from ours (see
    write_legacy_json): dist_to_key to the key's start cell, dist_to_target to its target_pos,
    dist_to_door by its rules, t_drop only after an opening. `door_unlocked` is ours (1 once
    t_unlocked is set); its flag of the same name (first door not locked) is not kept.
    Episodes: its records are step-major over N parallel envs, so when the file has t_step and
    fits that pattern, record r is env r % N and each t_step 0 starts an episode: `episode` is
    then a real episode (in order of first record) and `layout` its index into the file's
    episodes list. Otherwise (v1/v2, or the pattern breaks) `episode` is that layout index,
    which merges identical layouts, as in its own analyses. Unknown per episode: seed, mission,
    outcome (NA); the last episode of each env may be unfinished, as in its files.
    Config: expert_hidden_sizes from the file (v3), else inferred from the router weights and
    LPC (`meta["expert_hidden_sizes_source"]`), else None; task/trial/seed/update from the
    folder (either of its layouts), else its checkpoint path.
    """
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        # RecursionError: JSON nested deeper than the parser's stack (not a routing_data.json)
        detail = "nested too deep" if isinstance(e, RecursionError) else e
        raise CacheError(f"{str(path)!r} is unreadable: {type(e).__name__}: {detail}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("routing_data"), list):
        raise CacheError(f"{str(path)!r} is not a routing_data.json (no routing_data list)")
    records = doc["routing_data"]
    version = legacy_version(doc)
    if version == "v1":  # deduplicate the embedded contexts the way its v2 writer did
        seen: dict[str, int] = {}
        contexts: list[dict] = []
        layout_list = []
        for r in records:
            ctx = r.get("env_context") or {}
            key = str(ctx)
            if key not in seen:
                seen[key] = len(contexts)
                contexts.append(ctx)
            layout_list.append(seen[key])
        layout = np.asarray(layout_list, dtype=np.int64)
    else:
        contexts = list(doc.get("episodes") or [])
        layout = np.array([int(r.get("episode") or 0) for r in records], dtype=np.int64)
    n = len(records)
    cols: dict[str, np.ndarray] = {}
    t = _floats(records, "t_step")
    num_envs = _legacy_num_envs(t, layout)
    if num_envs is not None:
        slot = np.arange(n) % num_envs
        start = np.where(t == 0, np.arange(n), -1)
        own_start = np.empty(n, dtype=np.int64)
        for s in range(num_envs):
            own_start[s::num_envs] = np.maximum.accumulate(start[s::num_envs])
        starts = np.flatnonzero(t == 0)
        cols["episode"] = np.searchsorted(starts, own_start).astype(np.int64)
        cols["env_slot"] = slot.astype(np.int64)
    else:
        cols["episode"] = layout.copy()
        cols["env_slot"] = np.full(n, np.nan)
    cols["t"] = _maybe_int(t)
    position = np.array([r["position"] for r in records], dtype=np.int64).reshape(n, 2)
    cols["x"], cols["y"] = position[:, 0], position[:, 1]
    cols["direction"] = np.full(n, np.nan)
    cols["lpc"] = _floats(records, "lpc")
    first = records[0] if records else {}
    layer_names = sorted(first.get("layer_routing") or {}, key=lambda k: int(k.rsplit("_", 1)[1]))
    weights = [np.array([r["layer_routing"][name] for r in records], dtype=float) for name in layer_names]
    logits = None
    if any(r.get("action_logits") is not None for r in records):
        width = max(len(r["action_logits"]) for r in records if r.get("action_logits") is not None)
        logits = np.array([r.get("action_logits") or [np.nan] * width for r in records], dtype=float).reshape(
            n, width
        )
    action = _floats(records, "action")
    if logits is not None:  # its readers: the action field, else the argmax of the logits
        missing = np.isnan(action) & ~np.isnan(logits).any(axis=1)
        action[missing] = np.nanargmax(logits[missing], axis=1) if missing.any() else action[missing]
    cols["action"] = _maybe_int(action)
    entropy = _floats(records, "entropy")
    if logits is not None:
        missing = np.isnan(entropy)
        entropy[missing] = _legacy_entropy(logits[missing]) if missing.any() else entropy[missing]
    cols["entropy"] = entropy
    cols["carrying"] = _maybe_int(_floats(records, "carrying"))
    for name in ("t_unlocked", "t_pick", "t_drop", "dist_to_door", "dist_to_key", "dist_to_target"):
        cols[name] = _floats(records, name)
    has_unlock = any("t_unlocked" in r for r in records[:1000])
    cols["door_unlocked"] = (
        (~np.isnan(cols["t_unlocked"])).astype(np.int64) if has_unlock else np.full(n, np.nan)
    )
    if logits is not None:
        for a in range(logits.shape[1]):
            cols[f"logit_{a}"] = logits[:, a]
    for k, (name, w) in enumerate(zip(layer_names, weights)):
        k = int(name.rsplit("_", 1)[1])
        for j in range(w.shape[1]):
            cols[weight_column(k, j)] = w[:, j]
    steps = pd.DataFrame({c: cols[c] for c in step_column_order(cols)})
    episodes = _legacy_episodes(steps, layout, contexts)
    sizes, source = _legacy_sizes(doc, weights, cols["lpc"])
    run = _legacy_run(path.parent, doc.get("checkpoint_path"))
    metrics = {k: (doc.get("metrics") or {}).get(k) for k in LEGACY_METRICS}
    metrics.update(
        {"evaluated_at": doc.get("evaluated_at"), "eval_task_id": run["task_id"], "max_steps": None}
    )
    meta = {
        "legacy_format": version,
        "source_file": path.as_posix(),
        "checkpoint_path": doc.get("checkpoint_path"),
        "num_episodes": doc.get("num_episodes"),
        "num_envs": num_envs,
        "config": {**run, "expert_hidden_sizes": sizes, "lpc_exponent": 2.0},
        "expert_hidden_sizes_source": source,
        "metrics": metrics,
        "step_columns": {**STEP_COLUMNS, **_LEGACY_MEANINGS},
    }
    return CacheData(steps, episodes, meta, path.parent)


def _legacy_episodes(steps: pd.DataFrame, layout: np.ndarray, contexts: list[dict]) -> pd.DataFrame:
    """One row per `episode` of the steps read from its file, in our episodes.parquet columns."""
    grouped = steps.assign(_layout=layout).groupby("episode", sort=True)
    weight_cols = [c for c in steps.columns if c.startswith("layer_")]
    firsts = grouped[["_layout", "env_slot", "t_unlocked", "t_pick", "t_drop"]].first()
    means = grouped[["lpc", "entropy", *weight_cols]].mean()
    m = len(firsts)
    ctx = [contexts[int(i)] if 0 <= int(i) < len(contexts) else {} for i in firsts["_layout"]]
    single = [c["doors"][0][:2] if len(c.get("doors") or []) == 1 else [None, None] for c in ctx]
    episodes = pd.DataFrame(
        {
            "episode": firsts.index.to_numpy(dtype=np.int64),
            "layout": firsts["_layout"].to_numpy(dtype=np.int64),
            "seed": pd.array([None] * m, dtype="Int64"),
            "env_slot": pd.array(firsts["env_slot"].tolist(), dtype="Int64"),
            "mission": [None] * m,
            "success": pd.array([None] * m, dtype="boolean"),
            "terminated": pd.array([None] * m, dtype="boolean"),
            "truncated": pd.array([None] * m, dtype="boolean"),
            "reward": np.full(m, np.nan),
            "length": grouped.size().to_numpy(dtype=np.int64),
            "max_steps": pd.array([None] * m, dtype="Int64"),
            "mean_lpc": means["lpc"].to_numpy(),
            "mean_entropy": means["entropy"].to_numpy(),
            **{c: pd.array(firsts[c].tolist(), dtype="Int64") for c in ("t_unlocked", "t_pick", "t_drop")},
            "door_x": pd.array([d[0] for d in single], dtype="Int64"),
            "door_y": pd.array([d[1] for d in single], dtype="Int64"),
            "env_context": [json.dumps(c, separators=(",", ":")) for c in ctx],
            **{c: means[c].to_numpy() for c in weight_cols},
            "optimal_length": pd.array([None] * m, dtype="Int64"),
        }
    )
    return episodes
