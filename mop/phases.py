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

    from mop.phases import PHASES, phase_system
    PHASES[phase_system("BabyAI-UnlockPickup-v0")]  # ('pre_key', 'post_key_pre_unlock', ...)
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
