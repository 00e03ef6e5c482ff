"""The results table, evaluation_results.csv: its columns, the one spelling of its row key, building
a row from an evaluation, reading it and merging rows into it. Every reader and writer of the CSV
(batch_eval.py, stats.py, render_plots.py, the notebooks, modal_app.py) goes through here.

One row per evaluation. Its identity (`evaluation_identity`): for a checkpoint in the run layout
whose update is known, (run folder, update, evaluated level, knockout) (the weights' part is
mop/runs.py's weights_identity), so checkpoint_<U>.pt and a checkpoint_final.pt holding update U
in one run folder (the same weights: both systems store the last update under both names) are one
row, which names checkpoint_<U>.pt (the name the earlier system's batch_eval skips by), and a
checkpoint_final.pt row stays its update's after a resumed run moves the final name on;
otherwise (checkpoint_path, evaluated level, knockout). A CSV
mixing both systems' rows therefore never holds one set of weights twice, batch_eval never
re-evaluates weights a row of either system covers, and a merged row replaces the row of the same
identity (the last one read wins where an older CSV already holds two). Columns, in this order: the
earlier system's 20 (LEGACY_COLUMNS, in its batch_eval's order: users' scripts read them by
position), then ours (EXTRA_COLUMNS), then `trained_tasks` where some row is of a multi-task run,
then usage_layer_<k>_expert_<j> in layer, expert order. Whole-number columns stay integers through
empty cells. The earlier system's CSVs read and merge as they are (missing eval_task_id, knockout
and lang_dim filled as it meant them).

Writes: only `merge_results`, under a file lock (mop.runs.locked) and with an atomic replace, so
concurrent writers (local workers, Modal's reduce) lose and duplicate nothing and a crash leaves the
previous file. A CSV with columns this project does not write is refused (ResultsError, one line).

    from mop.results import read_results, merge_results
    table = read_results("evaluation_results.csv")     # empty with the columns if absent
    merge_results("evaluation_results.csv", [row])      # row: result_row(ref, config, metrics, cache)
    knockout_label("layer_1:0, layer_0:1", 0.1)          # 'layer_0:1,layer_1:0+threshold_0.1'
"""

from __future__ import annotations

import json
import os
import posixpath
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mop.runs import CheckpointRef, atomic_write, is_multi_task, locked, weights_identity

if TYPE_CHECKING:  # pandas is imported where a table is read or written: flags are checked without it
    import pandas as pd

# The earlier system's columns first, in its batch_eval's order (users' scripts read them), then
# ours; usage_layer_<k>_expert_<j> follow.
LEGACY_COLUMNS = [
    "checkpoint_path",
    "task_id",
    "trial",
    "seed",
    "update",
    "num_episodes",
    "success_rate",
    "path_ratio",
    "mean_lpc",
    "bot_plan_failures",
    "num_updates",
    "unroll_len",
    "lr",
    "lpc_alpha",
    "expert_hidden_sizes",
    "intermediate_dim",
    "router_hidden_size",
    "max_steps",
    "lang_dim",
    "evaluated_at",
]
EXTRA_COLUMNS = [
    "eval_task_id",
    "knockout",
    "sample",
    "success_ci_low",
    "success_ci_high",
    "mean_episode_length",
    "mean_entropy",
    "policy_type",
    "normalize_lpc",
    "obs_encoding",
    "input_encoder",
    "lang_encoder",
    "hidden_size",
    "eval_max_steps",
    "cache_path",
]
# Multi-task checkpoints' rows also name the levels they were trained on (comma list); the column
# is written only when some row has it, so a CSV of single-task runs keeps exactly its columns.
MULTI_TASK_COLUMNS = ["trained_tasks"]
# Columns copied from the checkpoint's training config as they are.
CONFIG_COLUMNS = (
    [
        c
        for c in LEGACY_COLUMNS[LEGACY_COLUMNS.index("num_updates") : LEGACY_COLUMNS.index("evaluated_at")]
        if c != "expert_hidden_sizes"  # written as JSON, MoP checkpoints only
    ]
    + EXTRA_COLUMNS[EXTRA_COLUMNS.index("policy_type") : EXTRA_COLUMNS.index("eval_max_steps")]
)
KEY = ["checkpoint_path", "eval_task_id", "knockout"]
_USAGE = re.compile(r"^usage_layer_\d+_expert_\d+$")
# Whole numbers, kept integers (nullable Int64) through empty cells: otherwise one empty seed turns
# the column to float and 0 is written back as 0.0, which the earlier system's tools do not match.
INTEGER_COLUMNS = [
    "trial",
    "seed",
    "update",
    "num_episodes",
    "bot_plan_failures",
    "num_updates",
    "unroll_len",
    "intermediate_dim",
    "router_hidden_size",
    "max_steps",
    "lang_dim",
    "hidden_size",
    "eval_max_steps",
]
# The earlier system filled lang_dim, absent from its oldest rows, with its default then.
LEGACY_LANG_DIM = 128


class ResultsError(ValueError):
    """A results CSV this project cannot use (one line, names the file and the problem)."""


# ----------------------------------------------------------------------------- the knockout column


KNOCKOUT_PART = re.compile(r"^layer_(\d+):(\d+)$")


def canonical_knockout(spec: str | None) -> str | None:
    """The one spelling of a knockout spec (None for none): 'largest', or 'layer_<k>:<j>' parts
    without spaces or leading zeros, sorted and unique, so one evaluation has one row key and one
    cache folder. ValueError for anything else (negative indices included: they would knock out
    an expert counted from the end while the row names another)."""
    text = "" if spec is None else str(spec).strip()
    if text in ("", "none"):
        return None
    if text == "largest":
        return text
    pairs = set()
    for part in text.split(","):
        m = KNOCKOUT_PART.match(part.strip())
        if m is None:
            raise ValueError(
                f"--knockout {spec!r}: use 'largest' or 'layer_<k>:<j>[,...]' with 0-based layer k and expert j"
            )
        pairs.add((int(m.group(1)), int(m.group(2))))
    return ",".join(f"layer_{k}:{j}" for k, j in sorted(pairs))


def knockout_label(knockout: str | None, threshold: float | None) -> str:
    """The knockout column and cache-folder label: 'none', 'largest', 'layer_0:1+threshold_0.1'..."""
    knockout = canonical_knockout(knockout)
    parts = ([knockout] if knockout else []) + ([f"threshold_{threshold:g}"] if threshold is not None else [])
    return "+".join(parts) if parts else "none"


def canonical_knockout_label(label: Any) -> str:
    """A knockout label as knockout_label spells it (results rows written before, or by hand,
    may differ in spaces or order); a label that is not one of ours is kept as written."""
    text = "" if not isinstance(label, str) else label.strip()
    parts = [p.strip() for p in text.split("+") if p.strip() and p.strip() != "none"]
    spec = [p for p in parts if not p.startswith("threshold_")]
    thresholds = [p.removeprefix("threshold_") for p in parts if p.startswith("threshold_")]
    try:
        if len(spec) > 1 or len(thresholds) > 1:
            raise ValueError
        return knockout_label(spec[0] if spec else None, float(thresholds[0]) if thresholds else None)
    except ValueError:
        return text


# ----------------------------------------------------------------------------- rows


def result_row(ref: CheckpointRef, config: dict, metrics: dict, cache_path: str | None) -> dict:
    """One CSV row: the checkpoint's training config and the evaluation's metrics."""
    sizes = config.get("expert_hidden_sizes")
    trained = config.get("task_id", ref.task_id)
    multi = is_multi_task(trained)
    row = {
        "checkpoint_path": ref.path,
        # a multi-task checkpoint: one row per evaluated level, named here; its levels below
        "task_id": metrics.get("eval_task_id", trained) if multi else trained,
        "trial": config.get("trial", ref.trial),
        "seed": ref.seed,
        "update": config.get("update") if ref.update is None else ref.update,
        "expert_hidden_sizes": json.dumps(sizes) if config.get("policy_type", "mop") == "mop" else None,
        "eval_max_steps": metrics.get("max_steps"),
        "cache_path": cache_path,
    }
    if multi:
        row["trained_tasks"] = trained
    for key in CONFIG_COLUMNS:
        row[key] = config.get(key)
    for key, value in metrics.items():
        if key in LEGACY_COLUMNS + EXTRA_COLUMNS and key not in row or key.startswith("usage_"):
            row[key] = value
    return row


# ----------------------------------------------------------------------------- read and merge


def _integers(df: pd.DataFrame) -> pd.DataFrame:
    """INTEGER_COLUMNS as Int64 where every value is a whole number (left alone otherwise)."""
    import pandas as pd

    for col in INTEGER_COLUMNS:
        if col in df.columns:
            values = pd.to_numeric(df[col], errors="coerce")
            if values.notna().sum() == df[col].notna().sum() and (values.dropna() % 1 == 0).all():
                df[col] = values.astype("Int64")
    return df


def read_results(path: str | os.PathLike) -> pd.DataFrame:
    """The results CSV (empty if absent); refuses a CSV with columns this project does not write."""
    import pandas as pd

    path = Path(path)
    if not path.exists():
        return pd.DataFrame(columns=LEGACY_COLUMNS + EXTRA_COLUMNS)
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as e:
        raise ResultsError(f"results CSV {str(path)!r} is unreadable: {str(e).splitlines()[0]}") from None
    except pd.errors.EmptyDataError:
        return pd.DataFrame(columns=LEGACY_COLUMNS + EXTRA_COLUMNS)
    known = LEGACY_COLUMNS + EXTRA_COLUMNS + MULTI_TASK_COLUMNS
    foreign = [c for c in df.columns if c not in known and not _USAGE.match(c)]
    if foreign:
        raise ResultsError(
            f"results CSV {str(path)!r} has columns this project does not write ({', '.join(foreign[:5])}); "
            "pass another --results_path"
        )
    missing = [c for c in ("checkpoint_path", "task_id") if c not in df.columns]
    if missing:
        raise ResultsError(f"results CSV {str(path)!r} has no {' or '.join(missing)} column")
    # Rows from the earlier system's tool: one default evaluation on the training task.
    if "eval_task_id" not in df.columns:
        df["eval_task_id"] = df["task_id"]
    df["eval_task_id"] = df["eval_task_id"].fillna(df["task_id"])
    df["knockout"] = df["knockout"].fillna("none") if "knockout" in df.columns else "none"
    df["lang_dim"] = df["lang_dim"].fillna(LEGACY_LANG_DIM) if "lang_dim" in df.columns else LEGACY_LANG_DIM
    return _integers(normalise_keys(df))


def normalise_keys(df: pd.DataFrame) -> pd.DataFrame:
    """One spelling per row key (KEY): checkpoint paths normalised ('./checkpoints/x.pt' is
    'checkpoints/x.pt'), knockout labels in their one spelling (' layer_0:1' is 'layer_0:1'); of
    rows that then share a key, or an evaluation identity (evaluation_identity: the earlier
    system's checkpoint_<U>.pt row and our checkpoint_final.pt row of update U), the last is kept,
    so one evaluation is one row."""
    import pandas as pd

    if not len(df):
        return df
    df["checkpoint_path"] = [
        posixpath.normpath(p) if isinstance(p, str) else p for p in df["checkpoint_path"]
    ]
    if "knockout" in df.columns:
        df["knockout"] = [canonical_knockout_label(k) for k in df["knockout"]]
    # Not by KEY alone: two rows naming checkpoint_final.pt at different updates (a run resumed
    # between two evaluations) are two evaluations; the identity tells them apart.
    ids = pd.Series(_identities(df), index=df.index)
    return df[~ids.duplicated(keep="last")].reset_index(drop=True)


def evaluation_identity(path: Any, update: Any, eval_task: Any, knockout: Any = "none") -> tuple:
    """What one evaluation measures (see the module docstring): ("run", run folder, update, level,
    knockout) for a checkpoint in the run layout whose update is known (from its numbered name,
    else `update`: the update a checkpoint_final.pt holds), else ("path", checkpoint path, level,
    knockout)."""
    path = posixpath.normpath(path) if isinstance(path, str) else str(path)
    label = canonical_knockout_label(knockout if isinstance(knockout, str) and knockout else "none")
    weights = weights_identity(path, update)  # mop/runs.py: the one rule for the weights' identity
    if weights is not None:
        return ("run", *weights, str(eval_task), label)
    return ("path", path, str(eval_task), label)


def _identities(df: pd.DataFrame) -> list[tuple]:
    """evaluation_identity of every row (level: eval_task_id, else task_id)."""

    def column(name: str) -> list:
        return df[name].tolist() if name in df.columns else [None] * len(df)

    return [
        evaluation_identity(path, update, ev if isinstance(ev, str) and ev else task, ko)
        for path, update, ev, task, ko in zip(
            column("checkpoint_path"),
            column("update"),
            column("eval_task_id"),
            column("task_id"),
            column("knockout"),
        )
    ]


def results_identities(df: pd.DataFrame) -> set[tuple]:
    """The evaluations a results table holds (evaluation_identity of each row)."""
    return set(_identities(df)) if len(df) else set()


def merge_results(path: str | os.PathLike, rows: list[dict]) -> pd.DataFrame:
    """Merge rows into the CSV (a new row replaces the one of the same evaluation identity: same
    checkpoint, evaluated task and knockout, or the same weights under the other file name), under
    a lock and with an atomic replace. The one merge used locally and by Modal."""
    import pandas as pd

    path = Path(path)
    with locked(path):
        current = read_results(path)
        new = normalise_keys(pd.DataFrame(rows))
        if len(new):
            ids = results_identities(new)
            keep = [i not in ids for i in _identities(current)] if len(current) else []
            current = pd.concat([current[keep] if len(current) else current, new], ignore_index=True)
        usage = sorted(
            (c for c in current.columns if _USAGE.match(c)),
            key=lambda c: [int(x) for x in re.findall(r"\d+", c)],
        )
        multi = [c for c in MULTI_TASK_COLUMNS if c in current.columns and current[c].notna().any()]
        columns = LEGACY_COLUMNS + EXTRA_COLUMNS + multi + usage
        current = _integers(current.reindex(columns=columns))
        sort = [c for c in ("task_id", "trial", "seed", "update", "eval_task_id", "knockout") if c in current]
        current = current.sort_values(sort, na_position="last", kind="stable").reset_index(drop=True)
        atomic_write(path, lambda tmp: current.to_csv(tmp, index=False))
    return current
