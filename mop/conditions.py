"""Conditions: which runs are replicates of what.

A run's *condition* is its resolved recipe: the run's config (config.json, or the config stored in
its checkpoint and copied into every routing cache's metadata) minus the keys that do not decide
what the run learns. Two runs share a condition exactly when their recipes are equal, and only runs
of one condition are ever aggregated as replicates; runs of different recipes are never pooled.

Keys that are not part of the recipe, and why (NOT_RECIPE):
- replicates: `seed` (the replicate itself) and `trial` (the experiment number: a folder name);
- output and logging: `checkpoint_dir`, `demos_dir`, `distilbert_path` (where files are),
  `checkpoint_interval`, `log_interval`, `recent_window` (the window of logged moving averages,
  never read by the learner), `wandb_project`;
- execution only: `num_workers` (every env keeps its own layout seeds and RNG whichever process
  steps it; tests/test_env.py checks workers against one process), `fast_env` (fast_grid serves
  the same observations and bot labels as minigrid, only faster; tests/test_fast_env.py),
  `num_updates` (how long, not how: the schedules are functions of the update alone, so a
  run's checkpoint at update U does not depend on num_updates; the update compared is the
  tables' own `update` column, and contrasts refuse runs compared at different updates),
  `stop_unless` (where a run may stop, not how it learns: up to its window's end a run with a gate
  is update for update the run without one; mop/gate.py).
Every other key is part of the recipe, including `async_collection` (acting with weights one
update old changes what is learned) and `path_ratio_fraction` (it draws from the RNG that teacher
forcing uses). A key added to the schema later is part of the recipe by default: the safe error
is to split runs that could have been pooled, never to pool runs that differ.

The policy type (`policy_type`: "mop" from train_mop.py, "gru" from train.py) is part of the
recipe. Keys only one policy reads are left out of the other's recipe (MOP_ONLY_KEYS: expert
sizes, router, dropout, LPC; GRU_ONLY_KEYS: hidden_size), so a GRU run is not split by an
lpc_alpha it never used (train.py's results rows carry lpc_alpha 0.0), and a GRU baseline is its
own condition beside every MoP one.

A recipe read from a complete config (one that names its policy_type: this project's runs, and the
earlier system's checkpoints as experiment.upgrade_checkpoint reads them) counts a key it lacks as
the schema's default (as experiment.config_changes does: a config written before the key existed).
A partial recipe (the earlier system's routing_data.json caches, completed from the results CSV's
config columns) says UNKNOWN for what neither source records.

Each condition has a short stable id, `<policy>-<8 hex>`, the SHA-1 of the recipe's keys that
differ from the schema's defaults (the same recipe gives the same id on any machine, and keys added
to the schema later leave the ids of older runs as they were), and a readable label made of the keys in which the conditions
of one table differ (`labels`). `extra_keys` tells a contrast which keys besides the factors asked
for differ between two conditions (contrasts refuse those pairs).

    recipe = conditions.recipe(json.load(open("checkpoints/.../config.json")))
    conditions.condition_id(recipe)               # 'mop-3f2a9c1d'
    conditions.labels({id_a: recipe_a, id_b: recipe_b})   # {'mop-...': 'MoP α=0', ...}
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mop.results import CONFIG_COLUMNS

POLICY_KEY = "policy_type"
POLICIES = ("mop", "gru")
REPLICATE_KEYS = ("seed", "trial")
OUTPUT_KEYS = (
    "checkpoint_dir",
    "demos_dir",
    "distilbert_path",
    "checkpoint_interval",
    "log_interval",
    "recent_window",
    "wandb_project",
)
# device: same numbers, any device; stop_unless: where a run may stop, not how it learns
EXECUTION_KEYS = ("num_workers", "fast_env", "num_updates", "device", "stop_unless")
NOT_RECIPE = frozenset(REPLICATE_KEYS + OUTPUT_KEYS + EXECUTION_KEYS)
MOP_ONLY_KEYS = frozenset(
    {
        "expert_hidden_sizes",
        "intermediate_dim",
        "router_hidden_size",
        "head_hidden_size",
        "head_reads_experts",
        "expert_dropout_beta",
        "expert_dropout_gamma",
        "lpc_alpha",
        "lpc_exponent",
        "normalize_lpc",
        "lpc_normalize_detach",
        "lpc_epsilon",
    }
)
GRU_ONLY_KEYS = frozenset({"hidden_size"})
# The config keys that shape a MoP policy's weights: `train_mop.py --fork_from` may change any other,
# and LMC's pair check (connectivity.ARCHITECTURE_KEYS) compares these and a checkpoint's own.
WEIGHT_KEYS = (
    "input_dim",
    "obs_encoding",
    "input_encoder",
    "trunk_channels",
    "lang_encoder",
    "lang_dim",
    "expert_hidden_sizes",
    "intermediate_dim",
    "router_hidden_size",
    "head_hidden_size",
    "head_reads_experts",
)
UNKNOWN = "(unknown)"
# How a key is written in labels (figures and tables show them); other keys by their own name.
SHORT = {
    "expert_hidden_sizes": "experts",
    "lpc_alpha": "α",
    "expert_dropout_beta": "β",
    "expert_dropout_gamma": "γ",
    "normalize_lpc": "normalised LPC",
    "hidden_size": "hidden",
}


class ConditionError(ValueError):
    """Runs or conditions that cannot be compared as asked (one line, names the keys)."""


# ----------------------------------------------------------------------------- one recipe


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _plain(value: Any) -> Any:
    """JSON-plain (tuples to lists, numpy scalars to Python), so equal recipes hash equal."""
    return json.loads(json.dumps(value, default=lambda v: v.item() if hasattr(v, "item") else str(v)))


def policy_of(config: Mapping[str, Any]) -> str:
    """The policy type a config names ("mop" when it names none: the earlier system trained MoP only)."""
    value = config.get(POLICY_KEY)
    return "mop" if _missing(value) else str(value)


def recipe(config: Mapping[str, Any], complete: bool = True) -> dict[str, Any]:
    """The recipe of a run's config: policy_type and every config key but NOT_RECIPE and the other
    policy's keys, with the schema's types. complete: a key the config lacks is the default;
    otherwise (a partial record) UNKNOWN. A value today's schema refuses is kept as written."""
    from mop.experiment import CONFIG_KEYS, ConfigError, recipe_value

    policy = policy_of(config)
    skip = NOT_RECIPE | (MOP_ONLY_KEYS if policy == "gru" else GRU_ONLY_KEYS)
    out: dict[str, Any] = {POLICY_KEY: policy}
    for key in CONFIG_KEYS:
        if key in skip:
            continue
        if not complete and (key not in config or _missing(config[key])):
            out[key] = UNKNOWN
            continue
        try:
            out[key] = _plain(recipe_value(dict(config), key))
        except ConfigError:
            out[key] = str(config[key])
    return out


_DEFAULT_RECIPE: dict[str, Any] = {}


def defaults() -> dict[str, Any]:
    """Every config key's default, JSON-plain (the schema's TrainConfig())."""
    if not _DEFAULT_RECIPE:
        from mop.experiment import TrainConfig

        _DEFAULT_RECIPE.update(_plain(dataclasses.asdict(TrainConfig())))
    return _DEFAULT_RECIPE


def condition_id(rec: Mapping[str, Any]) -> str:
    """`<policy>-<8 hex>`: the SHA-1 of the canonical JSON of the recipe's keys that are not at
    their default, so equal recipes share an id, and a key added to the schema later (a config
    written before it counts it as its default) leaves every id as it was."""
    base = defaults()
    changed = {k: v for k, v in rec.items() if k == POLICY_KEY or k not in base or base[k] != v}
    text = json.dumps(_plain(changed), sort_keys=True, separators=(",", ":"))
    return f"{rec.get(POLICY_KEY, 'mop')}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"


def recipe_json(rec: Mapping[str, Any]) -> str:
    """The recipe as one JSON string, in its own key order (the `recipe` column of the stats
    tables; json.loads gives the recipe back, order included)."""
    return json.dumps(_plain(dict(rec)), separators=(",", ":"))


# ----------------------------------------------------------------------------- several recipes


def differing_keys(recipes: Iterable[Mapping[str, Any]]) -> list[str]:
    """The keys whose value is not the same in every recipe (a key some recipe lacks included), in
    the order the recipes hold them (recipe() writes policy_type first, then the schema's order)."""
    recs = list(recipes)
    keys = list(dict.fromkeys(k for r in recs for k in r))
    return [k for k in keys if len({json.dumps(r.get(k, "(absent)"), sort_keys=True) for r in recs}) > 1]


def format_value(value: Any) -> str:
    """A recipe value as labels show it: 0.001, true, null, and repeated layers as [[0,16,32]]*3."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        if len(value) > 1 and all(v == value[0] for v in value) and isinstance(value[0], list):
            return f"[{format_value(value[0])}]*{len(value)}"
        return "[" + ",".join(format_value(v) for v in value) + "]"
    return str(value)


def label(rec: Mapping[str, Any], keys: Sequence[str]) -> str:
    """'MoP experts=[[0,16,32]]*3 α=0.001': the policy, then key=value for each of `keys` the
    recipe has."""
    parts = []
    for key in keys:
        if key == POLICY_KEY:
            parts.append({"mop": "MoP", "gru": "GRU"}.get(str(rec.get(key)), str(rec.get(key))))
        elif key in rec:
            parts.append(f"{SHORT.get(key, key)}={format_value(rec[key])}")
    return " ".join(parts)


def label_keys(recipes: Iterable[Mapping[str, Any]]) -> list[str]:
    """The keys a label needs: policy_type when the policies differ, and each key whose value
    differs among the recipes that have it (a GRU's lack of lpc_alpha is said by 'GRU')."""
    recs = list(recipes)
    keys = []
    for key in differing_keys(recs):
        having = [json.dumps(r[key], sort_keys=True) for r in recs if key in r]
        if key == POLICY_KEY or len(set(having)) > 1:
            keys.append(key)
    return keys


def labels(recipes: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """{condition id: label} over the keys in which these conditions differ (label_keys), the
    policy first; one condition: its policy ('MoP' / 'GRU')."""
    keys = label_keys(recipes.values()) or [POLICY_KEY]
    if POLICY_KEY not in keys:
        keys = [POLICY_KEY, *keys]
    out = {cid: label(rec, keys) for cid, rec in recipes.items()}
    if len(set(out.values())) < len(out):  # equal labels (a value formatted alike): add the id
        out = {cid: f"{text} ({cid})" for cid, text in out.items()}
    return out


def extra_keys(a: Mapping[str, Any], b: Mapping[str, Any], factors: Iterable[str]) -> list[str]:
    """The keys besides `factors` in which two recipes differ. With policy_type among the factors,
    the keys only one policy has are part of that factor (a GRU has no lpc_alpha)."""
    factors = set(factors)
    policy = POLICY_KEY in factors
    return [k for k in differing_keys([a, b]) if k not in factors and not (policy and ((k in a) != (k in b)))]


def check_factors(factors: Iterable[str]) -> list[str]:
    """The factor names of a contrast, each a recipe key (policy_type or a config key outside
    NOT_RECIPE); ConditionError naming the first that is not."""
    from mop.experiment import CONFIG_KEYS

    out = []
    for f in factors:
        f = f.strip()
        if not f:
            continue
        if f in ("policy", "policy_type"):
            f = POLICY_KEY
        elif f not in CONFIG_KEYS:
            raise ConditionError(
                f"{f!r} is not a config key (a contrast compares recipes that differ in config keys)"
            )
        elif f in NOT_RECIPE:
            raise ConditionError(
                f"{f!r} is not part of a run's recipe (seeds, folders, logging): nothing to contrast"
            )
        out.append(f)
    if not out:
        raise ConditionError("a contrast needs at least one factor (a config key, or policy_type)")
    return out


# ----------------------------------------------------------------------------- "key=value key=value"

# One key=value pair starts at each space that is followed by `name=`, so a value may hold spaces
# inside brackets or quotes: "expert_hidden_sizes=[[0, 16], [0, 16]] lr=1e-3".
_PAIR_START = re.compile(r"\s+(?=[A-Za-z_]\w*=)")


def split_assignments(text: str) -> list[tuple[str, str]]:
    """'a=1 b=[[0, 16]]' -> [('a', '1'), ('b', '[[0, 16]]')]: space-separated key=value pairs
    (modal_app's --set, sweep.py's --grid and --recipe). ValueError for a piece without '='."""
    out = []
    for pair in _PAIR_START.split(text.strip()) if text.strip() else []:
        key, sep, raw = pair.partition("=")
        if not sep or not key or not raw:
            raise ValueError(pair)
        out.append((key, raw))
    return out


# ----------------------------------------------------------------------------- sweep manifests


def read_manifest(path: str | Path) -> dict:
    """A sweep manifest (sweep.py's sweeps/<name>.json, either version), or ConditionError in one
    line: absent, unreadable, not JSON, or without task_id, trials and (trial, seed) runs."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConditionError(f"no sweep manifest {str(path)!r}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ConditionError(f"sweep manifest {str(path)!r} is unreadable ({type(e).__name__})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("trials"), dict) or "task_id" not in doc:
        raise ConditionError(f"{str(path)!r} is not a sweep manifest (no task_id and trials)")
    runs = doc.get("runs", [])
    if not isinstance(runs, list) or not all(
        isinstance(r, dict) and isinstance(r.get("trial"), int) and isinstance(r.get("seed"), int)
        for r in runs
    ):
        raise ConditionError(f"{str(path)!r}: its runs are not (trial, seed) entries")
    if not isinstance(doc.get("conditions", {}), dict):
        raise ConditionError(f"{str(path)!r}: its conditions are not a mapping")
    check_manifest_types(doc, str(path))
    return doc


# The type each manifest field must have where present (sweep.py writes them so).
MANIFEST_TYPES: dict[str, tuple[type, ...]] = {
    "version": (int,),
    "name": (str,),
    "task_id": (str,),
    "seeds": (list,),
    "settings": (dict,),
    "factors": (list,),
    "command": (str,),
    "checkpoint_dir": (str,),
    "results_path": (str,),
    "cache_dir": (str,),
}


def check_manifest_types(doc: dict, where: str) -> None:
    """ConditionError naming the field when a manifest field has the wrong type: seeds not a list
    of integers, a trial key that is not a number, a condition entry that is not a mapping..."""
    for key, types in MANIFEST_TYPES.items():
        if key in doc and (not isinstance(doc[key], types) or isinstance(doc[key], bool)):
            raise ConditionError(
                f"{where!r}: its {key} is {type(doc[key]).__name__}, not {' or '.join(t.__name__ for t in types)}"
            )
    if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in doc.get("seeds", [])):
        raise ConditionError(f"{where!r}: its seeds are not a list of integers >= 0")
    if not all(isinstance(f, str) for f in doc.get("factors", [])):
        raise ConditionError(f"{where!r}: its factors are not a list of names")
    if not all(re.fullmatch(r"\d+", str(t)) for t in doc["trials"]):
        raise ConditionError(f"{where!r}: its trials are not keyed by trial numbers")
    if not all(isinstance(c, dict) for c in doc.get("conditions", {}).values()):
        raise ConditionError(f"{where!r}: a condition entry is not a mapping")


def manifest_runs(doc: dict) -> dict[tuple[int, int], str | None]:
    """{(trial, seed): condition id or None} of a manifest; an earlier manifest (trials -> α and
    seeds, no runs) names every trial × seed, with no condition."""
    if doc.get("runs"):
        return {(r["trial"], r["seed"]): r.get("condition") for r in doc["runs"]}
    return {(int(t), int(s)): None for t in doc["trials"] for s in doc.get("seeds", [])}


# What an earlier system's run records of its recipe when its cache holds no config: the results
# CSV's config columns (mop.results.CONFIG_COLUMNS), its expert sizes and level.
RESULTS_CONFIG_COLUMNS = (*CONFIG_COLUMNS, "expert_hidden_sizes", "task_id")


def run_recipe(config: Mapping[str, Any], row: Mapping[str, Any] | None) -> tuple[dict | None, str]:
    """(recipe, source) of one evaluated run: from its cache's config when that config is
    complete (it names its policy_type: "config"); else a partial recipe from the results CSV
    row's config columns and what the config has ("results_csv"; the rest UNKNOWN); else
    (None, "unknown"): no record says what the run was, and it joins no condition."""
    if not _missing(config.get(POLICY_KEY)):
        return recipe(config), "config"
    if row is None:
        return None, "unknown"
    known = {k: row[k] for k in RESULTS_CONFIG_COLUMNS if k in row and not _missing(row[k])}
    known |= {k: v for k, v in config.items() if not _missing(v)}
    return recipe(known, complete=False), "results_csv"
