"""The look shared by every figure of the project: sizes and fonts, the two layouts, expert colours,
how experts are named. plotting_utils.py (routing-cache figures), results_plots.py (figures over
evaluation_results.csv and metrics.jsonl) and stats_plots.py all draw with it, so a figure looks
the same whichever module made it.

Layouts (every multi-panel figure takes `layout=`):
- "screen" (default): at most SCREEN_WIDTH (10.5 in) wide, so marimo's medium-width column shows
  it at 100% (marimo displays a figure at 100 px per inch and its column is ~1,080 px wide; a wider
  figure is scaled down and its 8-9 pt text becomes unreadable); panels wrap onto more rows
  instead of shrinking. render_plots.py writes this layout by default.
- "paper": one column of a two-column paper, PAPER_WIDTH (3.3 in) wide, panels in a grid of at
  most two columns (heatmaps: three), 7-8 pt text: the figure goes into a paper at 100% with no
  rescaling. `render_plots.py --layout paper` and `stats.py --layout paper` write it.

    @styled
    def plot_x(..., layout: str = "screen") -> Figure:
        fig, axes = panel_grid(3, layout, panel=(PANEL, 0.8 * PANEL)); ...
    expert_label(1, 2, 32)   # 'layer 1 · 32 units'
"""

from __future__ import annotations

import functools
import math
import textwrap
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
# Line plots also tell experts apart by dash, so lines that coincide (two experts both near 0) stay
# visible as two and the figures survive greyscale printing.
EXPERT_DASHES: tuple[str, ...] = ("-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 2)))


def expert_dash(expert: int) -> Any:
    return EXPERT_DASHES[expert % len(EXPERT_DASHES)]


def task_colours(tasks: Sequence[str]) -> dict[str, str]:
    """One colour per task (level), fixed by the task's rank among `tasks` sorted: figures over the
    same results give a level the same colour (runs of one level differ by line style instead)."""
    return {t: f"C{i % 10}" for i, t in enumerate(sorted(set(tasks)))}


RUN_STYLES: tuple[Any, ...] = ("-", "--", ":", "-.", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1)))
RUN_MARKERS: tuple[str, ...] = ("o", "s", "^", "D", "v", "P")


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


# The paper layout's text: a 3.3 in column holds 7-8 pt text at 100%, as a paper's captions are.
COLUMN_STYLE = {
    **PAPER_STYLE,
    "font.size": 7,
    "axes.titlesize": 7.5,
    "axes.labelsize": 7,
    "xtick.labelsize": 6.5,
    "ytick.labelsize": 6.5,
    "legend.fontsize": 6.5,
    "legend.title_fontsize": 6.5,
    "figure.titlesize": 8,
    "lines.linewidth": 1.0,
    "lines.markersize": 3,
    "axes.linewidth": 0.6,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "xtick.major.size": 2.5,
    "ytick.major.size": 2.5,
    "hatch.linewidth": 0.4,
}
LAYOUTS = ("screen", "paper")
SCREEN_WIDTH = 10.5  # in: widest figure marimo's medium column shows at 100% (~1,080 px at 100 px/in)
PAPER_WIDTH = 3.3  # in: one column of a two-column paper


def check_layout(layout: str) -> str:
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, not {layout!r}")
    return layout


_STYLED_DEPTH = [0]  # how many styled calls are drawing right now (the outermost set the style)


def styled(fn: Callable) -> Callable:
    """Create every artist under the figure's text style (font sizes are fixed when an artist is
    made): PAPER_STYLE, or COLUMN_STYLE when called with layout="paper". A styled helper called
    without `layout` inside another styled call (a panel drawn into its figure) keeps that call's
    style: it used to reset a paper figure's panels to the screen's larger text."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if _STYLED_DEPTH[0] and "layout" not in kwargs:
            return fn(*args, **kwargs)
        paper = check_layout(kwargs.get("layout", "screen")) == "paper"
        _STYLED_DEPTH[0] += 1
        try:
            with matplotlib.rc_context(COLUMN_STYLE if paper else PAPER_STYLE):
                out = fn(*args, **kwargs)
                if isinstance(out, Figure) and out.get_suptitle():
                    _fit_suptitle(out)
                return out
        finally:
            _STYLED_DEPTH[0] -= 1

    return wrapper


def _fit_suptitle(fig: Figure) -> None:
    """Re-wrap a suptitle to the figure's width (a paper column, a one-panel figure): a line
    longer than the figure runs off both sides."""
    size = matplotlib.rcParams["figure.titlesize"]
    width = int(fig.get_figwidth() * 72 / (0.55 * float(size)))
    lines = [w for line in fig.get_suptitle().split("\n") for w in textwrap.wrap(line, width) or [""]]
    fig.suptitle("\n".join(lines))


def new_figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def sized_figure(width: float, height: float, layout: str = "screen") -> Figure:
    """A one-panel figure of (width, height) inches on screen; PAPER_WIDTH wide, same aspect, in
    the paper layout (and never wider than SCREEN_WIDTH on screen)."""
    top = PAPER_WIDTH if check_layout(layout) == "paper" else min(width, SCREEN_WIDTH)
    return new_figure(top, height * top / width)


def grid_shape(n: int, layout: str, screen_cols: int, paper_cols: int = 2) -> tuple[int, int]:
    """(rows, columns) of n panels: at most screen_cols (or paper_cols) columns, filled row by row."""
    cols = max(1, min(n, paper_cols if check_layout(layout) == "paper" else screen_cols))
    return math.ceil(n / cols), cols


def panel_grid(
    n: int,
    layout: str,
    panel: tuple[float, float] = (PANEL, 0.8 * PANEL),
    screen_cols: int | None = None,
    paper_cols: int = 2,
    extra: tuple[float, float] = (0.0, 0.4),
    **subplots: Any,
) -> tuple[Figure, list]:
    """A constrained-layout figure of n panels in a grid (surplus cells of the last row removed);
    returns it and the n axes in reading order. panel: (width, height) in inches of one panel on
    screen; the screen layout fits as many columns as SCREEN_WIDTH holds (or screen_cols); the paper
    layout is PAPER_WIDTH wide with paper_cols columns, each panel scaled to keep its aspect
    (screen panels shrink by up to a fifth to stay on one row rather than wrap).
    extra: (width, height) in inches for what is not a panel (suptitle, legends, colour bars)."""
    width, height = panel
    fit = max(1, int((SCREEN_WIDTH - extra[0]) // (0.8 * width)))  # panels may shrink by a fifth
    rows, cols = grid_shape(n, layout, screen_cols or fit, paper_cols)
    if layout == "paper":
        scale = min(1.0, (PAPER_WIDTH - extra[0]) / (cols * width))
        fig = new_figure(PAPER_WIDTH, rows * height * max(scale, 0.5) + extra[1])
    else:
        scale = min(1.0, (SCREEN_WIDTH - extra[0]) / (cols * width))
        fig = new_figure(cols * width * scale + extra[0], rows * height * scale + extra[1])
    grid = fig.subplots(rows, cols, squeeze=False, **subplots)
    axes = list(grid.ravel())
    for ax in axes[n:]:
        ax.remove()
    return fig, axes[:n]


_LOWER_CENTER = 8  # matplotlib's code for "lower center"


def _bottom_legend(fig: Figure) -> Any:
    """The figure's legend at the outside lower centre, if it has one."""
    return next(
        (
            lg
            for lg in fig.legends
            if getattr(lg, "_outside_loc", None) == "lower" and lg._loc == _LOWER_CENTER
        ),
        None,
    )


def note(fig: Figure, text: str) -> None:
    """Small italic text under the figure: what the intervals are and over what, or what is not
    drawn and why - a figure says so on itself rather than leave a reader to guess at a missing
    band. It is the title of the legend at the outside lower centre (made, with no entries, when
    the figure has none): constrained layout makes room for that legend, but would draw a
    supxlabel or a second bottom legend over it. Call it after the figure's legends; a second call
    adds a line."""
    size = matplotlib.rcParams["font.size"]
    width = max(30, int(fig.get_figwidth() * 72 / (0.5 * size)))  # characters per line, about
    lines = textwrap.wrap(text, width)
    legend = _bottom_legend(fig)
    if legend is None:
        legend = fig.legend(handles=[], loc="outside lower center", frameon=False, title=" ")
        legend.set_label("note")
        old: list[str] = []
    else:
        old = [t for t in legend.get_title().get_text().split("\n") if t.strip()]
        notes = getattr(legend, "_mop_note_lines", 0)
        # notes first, then (after a blank line, so it reads as the entries' heading and not as the
        # note's last words) the legend's own title
        lines = old[:notes] + lines + ([""] + old[notes:] if old[notes:] else [])
        old = []
    legend._mop_note_lines = getattr(legend, "_mop_note_lines", 0) + len(textwrap.wrap(text, width))
    legend.set_title("\n".join(lines + old))
    legend.get_title().set_fontstyle("italic")
    legend.get_title().set_fontsize(size * 0.9)
    legend.get_title().set_multialignment("center")  # the entries' heading over the entries
    legend.set_alignment("center")


def figure_note(fig: Figure) -> str:
    """The text note() put under a figure ('' if none), for tests and callers that quote it."""
    legend = _bottom_legend(fig)
    if legend is None:
        return ""
    lines = legend.get_title().get_text().split("\n")
    return " ".join(lines[: getattr(legend, "_mop_note_lines", 0)])


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


def size_name(size: int | None, expert: int) -> str:
    """'identity', '32 units', or 'expert 2' when the size is unknown."""
    return f"expert {expert}" if size is None else ("identity" if int(size) == 0 else f"{int(size)} units")


def short_size(size: int | None, expert: int) -> str:
    return f"e{expert}" if size is None else ("id" if int(size) == 0 else str(int(size)))


def expert_size(expert_sizes: Sequence[Sequence[int]] | None, layer: int, expert: int) -> int | None:
    try:
        return int(expert_sizes[layer][expert])  # type: ignore[index]
    except (TypeError, IndexError, KeyError):
        return None
