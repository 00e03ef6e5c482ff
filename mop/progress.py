"""Progress bars for every stage that can run past ~10 s: one spelling, on stderr, with a count
and an ETA (tqdm). In a terminal the bar redraws as usual; in a log or a pipe (stderr is not a
terminal: a job runner, `2> log`, a test capturing stderr) it still appears, refreshed at most
every LOG_INTERVAL_S seconds, so a long stage is never silent and a log is not flooded.

    with progress_bar(len(jobs), "evaluations") as bar: ... bar.update(1)
"""

from __future__ import annotations

import sys
from typing import Any

LOG_INTERVAL_S = 10.0  # a log or pipe gets a refreshed line at most this often


def progress_bar(total: int | None, desc: str, enabled: bool = True, **kwargs: Any) -> Any:
    """A tqdm bar on stderr (disabled: a no-op bar with the same methods). kwargs go to tqdm."""
    from tqdm.auto import tqdm

    terminal = sys.stderr.isatty()
    settings: dict[str, Any] = {
        "total": total,
        "desc": desc,
        "disable": not enabled,
        "dynamic_ncols": True,
        "file": sys.stderr,
        "mininterval": 0.1 if terminal else LOG_INTERVAL_S,
    }
    return tqdm(**{**settings, **kwargs})
