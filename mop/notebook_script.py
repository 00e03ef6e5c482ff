"""A notebook's refusal of a file, in the app and run as a script.

The marimo notebooks (*_viz.py) run as an app (`marimo run`/`marimo edit`), exported
(`marimo export html`), and as a script (`python routing_viz.py`). A cell that cannot use a file (a
corrupt cache, a foreign CSV, a table of another tool) stops with `refusal(title, error)`:
- in the app and the export: a danger callout, "**title** reason", in the cell;
- run as a script: the project's one line, `error: title reason`, on stderr and exit code 2, as
  every CLI answers bad input (before, the script printed nothing and exited 0, or a traceback).
The refusal happens in the cell (SystemExit leaves marimo's script runner as it is), not in the
file's closing `__main__` block, which marimo rewrites whenever the notebook is saved.

`script_help(path)`, the first line of every notebook's setup cell: `python <notebook>.py --help`
prints how to run that notebook in one line and exits 0, before the notebook imports anything heavy
(without it the script ran the whole notebook, 30-70 s).

Reads and writes nothing; imports marimo only when called, so only the notebooks need it.

    mo.stop(True, refusal("Cannot read this cache.", error))      # in a cell
    python routing_viz.py     # with ROUTING_CACHE_DIR at a corrupt cache: one `error:` line, exit 2
"""

from __future__ import annotations

import functools
import re
import sys
from pathlib import Path
from typing import Any


def run_as_script() -> bool:
    """Whether a notebook is being run by `python <notebook>.py`: no marimo kernel runs it (an app,
    an edit session or an export does), and the program python was started with is a marimo
    notebook (it has `@app.cell`s). Not `__main__`: marimo's script runner, in-process under pytest
    too, runs the cells in a fresh `__main__` module named after the notebook."""
    import marimo as mo

    if mo.running_in_notebook():
        return False
    return _is_notebook(sys.argv[0] if sys.argv else None)


@functools.cache
def _is_notebook(path: str | None) -> bool:
    try:
        return path is not None and "@app.cell" in Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False


def refusal(title: str, error: Any) -> Any:
    """A cell's answer to a file it cannot use (see the module docstring): the callout to pass to
    `mo.stop(True, ...)`, or, run as a script, one `error:` line on stderr and SystemExit(2)."""
    import marimo as mo

    if run_as_script():
        reason = " ".join(str(error).split())  # one line, whatever the exception's text holds
        print(f"error: {title} {reason}", file=sys.stderr)
        raise SystemExit(2)
    return mo.callout(mo.md(f"**{title}** {error}"), kind="danger")


def script_help(path: str) -> None:
    """`python <notebook>.py --help` (or -h): one line on how to run the notebook, exit 0. Does nothing
    in an app, an edit session or an export (python was not started with this file)."""
    if not sys.argv or Path(sys.argv[0]).resolve() != Path(path).resolve():
        return
    if not any(a in ("-h", "--help") for a in sys.argv[1:]):
        return
    name = Path(path).name
    text = Path(path).read_text(encoding="utf-8")
    env = sorted(set(re.findall(r"os\.environ\.get\(\"([A-Z_]+)\"", text)))
    reads = f"; settings by environment variable: {', '.join(env)}" if env else ""
    print(
        f"{name} is a marimo notebook: `marimo run {name}` (app), `marimo edit {name}`, "
        f"`python {name}` (as a script), `marimo export html {name} -o {Path(name).stem}.html`{reads}"
    )
    raise SystemExit(0)


def readable(table: Any, digits: int = 4) -> Any:
    """A table for the eye: every float column to `digits` significant digits (a p of 3e-9 stays
    3e-9, where round(4) would print 0; an r prints 0.4312, not 0.43119871260981244). The numbers
    behind it (CSV, figures) are not rounded."""
    import numpy as np

    out = table.copy()
    for column in out.columns:
        if out[column].dtype.kind == "f":
            values = out[column].to_numpy(dtype=float)
            finite = np.isfinite(values) & (values != 0)
            scale = np.zeros_like(values)
            scale[finite] = np.floor(np.log10(np.abs(values[finite])))
            factor = 10.0 ** (digits - 1 - scale)
            out[column] = np.where(finite, np.round(values * factor) / factor, values)
    return out
