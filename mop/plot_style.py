"""The look shared by every figure of the project: paper sizes and fonts, expert colours, how
experts are named. plotting_utils.py (routing-cache figures) and results_plots.py (figures over
evaluation_results.csv and metrics.jsonl) both draw with it, so a figure looks the same whichever
module made it.

    @styled
    def plot_x(...) -> Figure: fig = new_figure(2 * PANEL, PANEL); ...
    expert_label(1, 2, 32)   # 'layer 1 · 32 units'
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import matplotlib
import numpy as np
from matplotlib.colors import LinearSegmentedColormap, to_rgb
from matplotlib.figure import Figure

# One hue per expert index (tab10's first six, colour-blind-tolerable), as pale-to-dark ramps so
# a heatmap cell's hue says which expert dominates and its depth how strongly.
EXPERT_HUES = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2")


def _ramp(name: str, hue: str) -> LinearSegmentedColormap:
    rgb = np.array(to_rgb(hue))
    return LinearSegmentedColormap.from_list(name, [0.8 + 0.2 * rgb, rgb, 0.55 * rgb])


EXPERT_CMAPS: tuple[LinearSegmentedColormap, ...] = tuple(
    _ramp(f"expert_{j}", h) for j, h in enumerate(EXPERT_HUES)
)
EXPERT_COLORS: tuple[str, ...] = EXPERT_HUES
UNVISITED_COLOR = "#d4d4d4"
UNVISITED_HATCH_COLOR = "#8c8c8c"
# Paper sizes: ~3.3 in per panel and 8-9 pt text stay readable when printed at 1x.
PANEL = 3.3
PAPER_STYLE = {
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "legend.title_fontsize": 8,
    "figure.titlesize": 10,
    "hatch.linewidth": 0.6,
}


def styled(fn: Callable) -> Callable:
    """Create every artist under the paper style (font sizes are fixed when an artist is made)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with matplotlib.rc_context(PAPER_STYLE):
            return fn(*args, **kwargs)

    return wrapper


def new_figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def heat_size(grid_info: Mapping[str, int], width: float = 2.6) -> tuple[float, float]:
    """(width, height) in inches of one grid panel: fixed width, height from the level's aspect
    (an 11x6 two-room level gets a flat panel, not a square one with empty bands)."""
    aspect = grid_info["grid_height"] / grid_info["grid_width"]
    return width, float(np.clip(width * aspect, 1.0, 1.4 * width))


def expert_label(layer: int, expert: int, size: int | None) -> str:
    """'layer 1 · 32 units'; 'layer 1 · identity' for the size-0 skip expert; the expert index when
    the size is unknown."""
    if size is None:
        return f"layer {layer} · expert {expert}"
    return f"layer {layer} · identity" if int(size) == 0 else f"layer {layer} · {int(size)} units"


def short_size(size: int | None, expert: int) -> str:
    return f"e{expert}" if size is None else ("id" if int(size) == 0 else str(int(size)))


def expert_size(expert_sizes: Sequence[Sequence[int]] | None, layer: int, expert: int) -> int | None:
    try:
        return int(expert_sizes[layer][expert])  # type: ignore[index]
    except (TypeError, IndexError, KeyError):
        return None
