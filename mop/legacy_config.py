"""The earlier system's config key our schema spells differently: `input_dim`.

Every config file of the earlier system (and the MoP integration guide's YAML) holds `input_dim`,
the size of the observation vector without the mission. Here it is a config key too
(experiment.TrainConfig), read as what it meant there:
- 152: the earlier system's network, obs_encoding raw (147 view codes + 4 direction one-hot + 1
  carrying flag), input_encoder linear (Linear(obs ⊕ mission)), lang_encoder distilbert (frozen
  DistilBERT CLS through a frozen random projection to lang_dim);
- 985: obs_encoding onehot (ours);
- null (our default): whatever obs_encoding gives.
Each implied key is set only where the source that gives input_dim (a file, the command line) does
not set it; experiment.load_config applies this per source and experiment.validate refuses an
obs_encoding that contradicts input_dim. Any other size is refused naming the ones that work.
Reads and writes nothing.

    python train_mop.py --config its_config.yaml      # input_dim: 152 -> its network, one note line
    python train_mop.py --input_dim 985               # = --obs_encoding onehot
"""

from __future__ import annotations

from typing import Any

from mop.babyai_env import obs_dim

# Each size an observation encoding produces, and the settings it selects.
INPUT_DIM_SETTINGS = {
    152: {"obs_encoding": "raw", "input_encoder": "linear", "lang_encoder": "distilbert"},
    985: {"obs_encoding": "onehot"},
}
_NOTED: set[str] = set()


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


def note(input_dim: int, obs_encoding: str, input_encoder: str, lang_encoder: str) -> None:
    """The one line that says what an input_dim selected (printed once per process and setting)."""
    what = "the earlier system's network: " if obs_encoding == "raw" else ""
    line = (
        f"note: input_dim {input_dim} trains {what}obs_encoding {obs_encoding}, "
        f"input_encoder {input_encoder}, lang_encoder {lang_encoder}"
    )
    if line not in _NOTED:
        _NOTED.add(line)
        print(line)
