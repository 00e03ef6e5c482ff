"""The earlier system's formats that ours read: its config key `input_dim`, and its checkpoints.

Every config file of the earlier system (and the MoP integration guide's YAML) holds `input_dim`,
the size of the observation vector without the mission. Here it is a config key too
(experiment.TrainConfig), read as what it meant there:
- 152: the earlier system's network, obs_encoding raw (147 view codes + 4 direction one-hot + 1
  carrying flag), input_encoder linear (Linear(obs ⊕ mission)), lang_encoder distilbert (frozen
  DistilBERT CLS through a frozen random projection to lang_dim);
- 985: obs_encoding onehot (ours);
- null (our default): whatever obs_encoding gives.
Each implied key is set only where the source that gives input_dim (a file, the command line) does
not set it; with 152, the layer sizes no source gives (expert_hidden_sizes, intermediate_dim,
router_hidden_size) are the earlier system's train_mop.py defaults (EARLIER_NETWORK), not ours; experiment.load_config applies this per source and experiment.validate refuses an
obs_encoding that contradicts input_dim. Any other size is refused naming the ones that work.

Its checkpoints (format 0, as this project's were before `format_version`) are brought to the
current format by `upgrade` (experiment.load_checkpoint calls it through upgrade_checkpoint).
Reads and writes nothing.

    python train_mop.py --config its_config.yaml      # input_dim: 152 -> its network, one note line
                                                      # (no expert keys: its [32,64,128] / 256 / 64)
    python train_mop.py --input_dim 985               # = --obs_encoding onehot
"""

from __future__ import annotations

import copy
import re
from typing import Any

import numpy as np

from mop.level_names import obs_dim

# Each size an observation encoding produces, and the settings it selects.
INPUT_DIM_SETTINGS = {
    152: {"obs_encoding": "raw", "input_encoder": "linear", "lang_encoder": "distilbert"},
    985: {"obs_encoding": "onehot"},
}
_NOTED: set[str] = set()
# The network the earlier system's train_mop.py built when its config left these keys out (its
# code defaults, reference §1.8: one layer of experts [32, 64, 128], intermediate 256, router 64).
# Its configs with input_dim 152 and no expert keys (quick_test.yaml, large_scale.yaml) train it.
EARLIER_NETWORK = {
    "expert_hidden_sizes": [[32, 64, 128]],
    "intermediate_dim": 256,
    "router_hidden_size": 64,
}


def earlier_network(input_dim: Any, given: set[str]) -> dict:
    """The earlier system's network keys that no config source gives (`given`: the keys of the
    file and the command line) when input_dim is 152; {} otherwise (ours are config.yaml's)."""
    if input_dim is None or int(input_dim) != 152:
        return {}
    return {k: copy.deepcopy(v) for k, v in EARLIER_NETWORK.items() if k not in given}


def implied_settings(dim: int, lang_dim: Any = None) -> dict:
    """The settings input_dim `dim` selects; ValueError (input_dim_problem) for a size no
    observation encoding produces."""
    if dim not in INPUT_DIM_SETTINGS:
        raise ValueError(input_dim_problem(dim, lang_dim))
    return dict(INPUT_DIM_SETTINGS[dim])


def input_dim_problem(dim: Any, lang_dim: Any = None) -> str:
    """Why input_dim `dim` is refused, naming the sizes that work (and, when dim is one of them
    plus lang_dim, that the mission is not counted)."""
    sizes = (
        "152 (obs_encoding raw: 147 view codes + 4 direction + 1 carrying, the earlier system's network) "
        "or 985 (onehot)"
    )
    text = f"input_dim {dim} is no observation encoding's size: use {sizes}"
    try:
        with_mission = int(dim) - int(lang_dim) in (obs_dim("raw"), obs_dim("onehot"))
    except (TypeError, ValueError):
        with_mission = False
    if with_mission:
        text += f"; input_dim counts the observation only (the mission's lang_dim {lang_dim} comes on top)"
    return text


def contradiction(input_dim: int, obs_encoding: str) -> str | None:
    """Why input_dim and obs_encoding cannot both hold (None when they agree)."""
    if input_dim == obs_dim(obs_encoding):
        return None
    if input_dim in INPUT_DIM_SETTINGS:
        return (
            f"input_dim {input_dim} is obs_encoding {INPUT_DIM_SETTINGS[input_dim]['obs_encoding']!r}, but "
            f"obs_encoding is {obs_encoding!r} ({obs_dim(obs_encoding)} inputs): give one of them"
        )
    return input_dim_problem(input_dim)


def note(
    input_dim: int, obs_encoding: str, input_encoder: str, lang_encoder: str, network: dict | None = None
) -> None:
    """The one line that says what an input_dim selected (printed once per process and setting),
    with the earlier system's layer sizes where they were filled in (earlier_network)."""
    what = "the earlier system's network: " if obs_encoding == "raw" else ""
    line = (
        f"note: input_dim {input_dim} trains {what}obs_encoding {obs_encoding}, "
        f"input_encoder {input_encoder}, lang_encoder {lang_encoder}"
    )
    if network:
        sizes = ", ".join(f"{k} {v}" for k, v in network.items())
        line += f"; no {'/'.join(network)} given: its train_mop.py defaults {sizes}"
    if line not in _NOTED:
        _NOTED.add(line)
        print(line)


# ----------------------------------------------------------------------------- its checkpoints

# The earlier system's train_mop wrote these when its config left them out; its eval fell back to
# them (and to lang_dim 32) too (reference §1.7, §1.8).
FORMAT0_DEFAULTS = {
    "expert_hidden_sizes": [32, 64, 128],
    "intermediate_dim": 256,
    "router_hidden_size": 64,
    "num_actions": 7,
}
# The earlier system's parameter names -> ours. Its single-layer version (before moe_layers) had
# the router and experts at the top level.
_LEGACY_KEY_RENAMES = [
    (re.compile(r"^moe_layers\.(\d+)\."), r"layers.\1."),
    (re.compile(r"^(router|experts)\."), r"layers.0.\1."),
    (re.compile(r"^(layers\.\d+\.router)\.fc\."), r"\1.out."),
    (re.compile(r"^(layers\.\d+\.experts\.\d+)\.projection\."), r"\1.out."),
]


def _rename_legacy_key(key: str) -> str:
    for pattern, replacement in _LEGACY_KEY_RENAMES:
        key = pattern.sub(replacement, key)
    return key


def _plain(value: Any) -> Any:
    """numpy scalars (anywhere in dicts, lists, tuples) -> Python numbers; tensors untouched."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_plain(v) for v in value)
    return value


def upgrade(ckpt: dict, current: int) -> dict:
    """A checkpoint of format 0 brought to format `current` (experiment.upgrade_checkpoint).

    Format 0 (the earlier system's): the config predates `policy_type`,
    `obs_encoding`, `input_encoder` (the earlier system's raw 152 inputs through a linear layer), carries no
    `update` (it is top-level, if anywhere), and the mission encoder is a bare
    `lang_proj_state_dict` (DistilBERT). The earlier system also stored `num_actions` as a
    numpy.int64, named its modules `moe_layers.K.router.fc` / `moe_layers.K.experts.J.projection`
    (ours: `layers.K.router.out` / `layers.K.experts.J.out`; GRU, input and head names agree) and
    left out architecture keys it had defaults for (FORMAT0_DEFAULTS)."""
    ckpt = {k: v if k == "policy_state_dict" else _plain(v) for k, v in ckpt.items()}
    config = dict(ckpt["config"])
    if ckpt.get("format_version", 0) == 0:
        if config.get("policy_type", "mop") == "mop":
            ckpt["policy_state_dict"] = {
                _rename_legacy_key(k): v for k, v in ckpt["policy_state_dict"].items()
            }
            for key, value in FORMAT0_DEFAULTS.items():
                config.setdefault(key, copy.deepcopy(value))
        if "lang_dim" not in config:  # its eval fell back to 32; a saved projection knows better
            proj = (ckpt.get("lang_proj_state_dict") or {}).get("weight")
            config["lang_dim"] = int(proj.shape[0]) if proj is not None else 32
    config.setdefault("policy_type", "mop")
    config.setdefault("obs_encoding", "raw")
    config.setdefault("input_encoder", "linear")
    # Architecture keys newer than a checkpoint: absent means the layer and encoders it was made with.
    config.setdefault("layer_norm_residual", False)
    config.setdefault("head_hidden_size", 0)
    config.setdefault("head_reads_experts", False)
    config.setdefault("trunk_channels", 128)
    config.setdefault("num_actions", 7)
    config.setdefault("update", ckpt.get("update"))
    if "lang_encoder" not in config:
        config["lang_encoder"] = "distilbert" if "lang_proj_state_dict" in ckpt else "bow"
    out = {**ckpt, "config": config, "format_version": current}
    if out.get("encoder_state") is None and "lang_proj_state_dict" in ckpt:
        out["encoder_state"] = {
            "kind": "distilbert",
            "lang_dim": config.get("lang_dim"),
            "lang_proj_state_dict": ckpt["lang_proj_state_dict"],
        }
    return out
