"""The row type of bench/calibration.py's registry and the two ways a draw is judged, shared by the
registry's modules (bench/calibration.py, bench/calibration_lib/analyses.py) so each imports only this.

    from calibration_lib.entry import ALPHA, Entry, covers, rejects
    Entry("name", "what the tool prints", "rejection", ALPHA, "null", simulate, run, "the truth")
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

ALPHA = 0.05
SEEDS = 3  # the GoToLocal sweep's seeds per recipe: the runs a simulated condition has
EPISODES = 500  # evaluation layouts per run


@dataclass(frozen=True)
class Entry:
    name: str
    printed_as: str  # what the tool prints, and where
    kind: str  # 'rejection' | 'coverage'
    nominal: float
    role: str  # 'null' | 'coverage' | 'power' | 'confound' | 'pseudo' | 'assumption'
    simulate: Callable[[np.random.Generator], tuple[Any, Any]]
    run: Callable[[Any, Any], bool]
    truth: str  # the simulated truth, in words
    cost: float = 1.0  # draws = max(50, round(--draws / cost)): bootstrap entries are slower
    outcome: str = ""  # verdict when outside on the unsafe side: 'fixed in ...' / 'withdrawn: ...'


def rejects(p: Any) -> bool:
    return isinstance(p, (int, float)) and np.isfinite(p) and p < ALPHA


def covers(low: Any, high: Any, truth: float) -> bool:
    """Whether an interval holds the truth; no interval (NaN, or the reason the tool gives in its
    place, e.g. "no spread: no interval") counts as a miss, so coverage is never flattered."""
    numbers = all(isinstance(v, (int, float, np.floating)) for v in (low, high))
    return bool(numbers and np.isfinite(low) and np.isfinite(high) and low - 1e-12 <= truth <= high + 1e-12)
