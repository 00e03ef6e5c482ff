"""The task phases a level is analysed in, and the spatial correlations measured in each.

The vocabulary every per-phase table shares: seed_metrics.py and stats.py name their columns
r_<phase>_<correlation>, and mop.inference aggregates them per phase. Reads and writes nothing.

- phase systems (`phase_system`): UnlockPickup levels the 4 key phases (pre_key: nothing picked up
  yet; post_key_pre_unlock: picked up, no door opened; with_key_post_unlock: door opened, no drop;
  post_unlock_post_key: dropped), checked in that order on the timestamps visible at each step;
  door levels pre_unlock / post_unlock (routing_analysis' by_door_unlocked_phase, the same rule);
  other levels one phase, "all".
- SPATIAL: per phase, Pearson r over the visited cells between a cell's mean LPC and its H(A|S)
  (lpc_entropy), its KL to the phase's action marginal (lpc_kl_local) and to the whole cache's
  (lpc_kl_global); seed_metrics.py defines and computes them.

- the earlier system's seed-metrics export (seed_metrics.py's eval_metrics_<task>.csv, which its
  `seed_agg_plots.py --from_csv` and `metrics_vs_alpha_plots.py` read): its phase system of a level
  is `legacy_phase_system` (key_phase for BabyAI-UnlockPickup-v0, unlock_phase for
  BabyAI-OpenTwoDoors-v0, none for every other level: its TASK_PHASE_SYSTEM and default), and its
  single phase of the none system is named "None" (it formats its phase None into the column
  names: r_None_lpc_entropy), where ours is "all" (`legacy_columns` renames). Our own tables
  (stats.py's seed_metrics.csv) keep phase_system and "all".

    from mop.phases import PHASES, phase_system
    PHASES[phase_system("BabyAI-UnlockPickup-v0")]  # ('pre_key', 'post_key_pre_unlock', ...)
    legacy_phase_system("BabyAI-GoToImpUnlock-v0")  # 'none' (ours: 'unlock_phase')
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from mop.routing_analysis import group_labels

SPATIAL = ("lpc_entropy", "lpc_kl_local", "lpc_kl_global")
PHASES = {
    "key_phase": ("pre_key", "post_key_pre_unlock", "with_key_post_unlock", "post_unlock_post_key"),
    "unlock_phase": ("pre_unlock", "post_unlock"),
    "none": ("all",),
}


def phase_system(task_id: str) -> str:
    """'key_phase' where a key opens a locked door before the target (UnlockPickup levels),
    'unlock_phase' on levels about opening or unlocking doors, else 'none'."""
    name = task_id.removeprefix("BabyAI-")
    if "UnlockPickup" in name:
        return "key_phase"
    if re.match(r"(Open|Unlock|KeyCorridor|KeyInBox|GoToImpUnlock)", name):
        return "unlock_phase"
    return "none"


# The earlier system's phase system per level (its corr_plots.TASK_PHASE_SYSTEM; any other level:
# its default, "none"), and its name of the none system's one phase.
LEGACY_TASK_PHASE_SYSTEM = {"BabyAI-UnlockPickup-v0": "key_phase", "BabyAI-OpenTwoDoors-v0": "unlock_phase"}
LEGACY_PHASE_NAMES = {"all": "None"}


def legacy_phase_system(task_id: str) -> str:
    """The phase system the earlier system's tools use for a level unless told otherwise."""
    return LEGACY_TASK_PHASE_SYSTEM.get(task_id, "none")


def legacy_columns(columns: list[str]) -> list[str]:
    """Column names as the earlier system's seed-metrics CSV spells them: a phase named "all"
    (ours) becomes "None" (its), in r_<p>_<c>, p_<p>_<c> and <metric>_<p>; others unchanged."""
    out = []
    for column in columns:
        for ours, its in LEGACY_PHASE_NAMES.items():
            column = re.sub(rf"^([rp])_{ours}_", rf"\1_{its}_", column)
            column = re.sub(rf"^(policy_complexity|mean_entropy|mean_lpc)_{ours}$", rf"\1_{its}", column)
        out.append(column)
    return out


def phase_of_steps(steps: pd.DataFrame, episodes: pd.DataFrame, system: str) -> np.ndarray:
    """The phase name of every step under `system`."""
    n = len(steps)
    if system == "none":
        return np.full(n, "all", dtype=object)
    if system == "unlock_phase":
        labels, _ = group_labels(steps, episodes, "by_door_unlocked_phase")
        return np.where(labels.to_numpy() == "door opened", "post_unlock", "pre_unlock").astype(object)
    picked, opened, dropped = (steps[c].notna().to_numpy() for c in ("t_pick", "t_unlocked", "t_drop"))
    names = PHASES["key_phase"]
    return np.select([~picked, ~opened, ~dropped], [names[0], names[1], names[2]], default=names[3]).astype(
        object
    )
