"""Our code run by another program's command line: the project's one-line answer to bad input
where marimo (a notebook run as a script) or Modal (`modal run`) drives, not our own argparse.

Notebooks. The marimo notebooks (*_viz.py) run as an app (`marimo run`/`marimo edit`), exported
(`marimo export html`), and as a script (`python routing_viz.py`). A cell that cannot use a file (a
corrupt cache, a foreign CSV, a table of another tool) stops with `refusal(title, error)`:
- in the app and the export: a danger callout, "**title** reason", in the cell;
- run as a script: the project's one line, `error: title reason`, on stderr and exit code 2, as
  every CLI answers bad input (before, the script printed nothing and exited 0, or a traceback).
The refusal happens in the cell (SystemExit leaves marimo's script runner as it is), not in the
file's closing `__main__` block, which marimo rewrites whenever the notebook is saved.

Modal. `modal run modal_app.py::<entrypoint> --flags` imports modal_app.py before it connects (a
missing token stops it there) and runs the entrypoint's body only after the login and the image
build. `modal_run_call(argv, ...)` recognises that command line at import and `entrypoint_flags`
parses its flags as Modal's CLI will (click, one --dashed-flag per parameter), so modal_app can run
the body's checks first (modal_app.check_modal_run).

Reads and writes nothing; imports marimo or click only when called.

    mo.stop(True, refusal("Cannot read this cache.", error))      # in a cell
    python routing_viz.py     # with ROUTING_CACHE_DIR at a corrupt cache: one `error:` line, exit 2
    modal run modal_app.py::main --task-ids BabyAI-Nope-v0 --trials 0   # one line, no login asked
"""

from __future__ import annotations

import functools
import inspect
import sys
import typing
from pathlib import Path
from typing import Any


def run_as_script() -> bool:
    """Whether a notebook is being run by `python <notebook>.py`: no marimo kernel runs it (an app,
    an edit session or an export does), and the program's main file is a marimo notebook (it has
    `@app.cell`s; marimo runs the cells in a fresh `__main__` module that keeps the notebook's file
    name; under pytest the main file is pytest's)."""
    import marimo as mo

    if mo.running_in_notebook():
        return False
    return _is_notebook(getattr(sys.modules.get("__main__"), "__file__", None))


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


def modal_run_call(
    argv: list[str], app_file: str, module: str, names: set[str]
) -> tuple[str, list[str]] | None:
    """(entrypoint, its flags) when argv is `modal run [Modal's options] <app_file>::<entrypoint>
    [flags]` (or `modal run -m <module>::<entrypoint>`) naming one of `names`; None otherwise."""
    if len(argv) < 3 or Path(argv[0]).name not in ("modal", "__main__.py") or argv[1] != "run":
        return None
    here = Path(app_file).resolve()
    for i, arg in enumerate(argv[2:], start=2):
        base, sep, name = arg.partition("::")
        if not sep:
            continue
        this = base == module or (base.endswith(".py") and Path(base).resolve() == here)
        return (name, argv[i + 1 :]) if this and name in names else None
    return None


def entrypoint_flags(function: typing.Callable[..., Any], args: list[str]) -> dict | None:
    """The keyword arguments Modal's CLI passes `function` (a local entrypoint's raw function) for
    `args`: each parameter a --dashed-flag, a bool one --flag/--no-flag, the defaults filled in.
    None where click refuses the flags (an unknown flag, a word for a number): Modal reports those
    itself, before it connects."""
    import click

    hints = typing.get_type_hints(function)
    parsed: dict = {}
    command = click.Command("entrypoint", callback=lambda **kw: parsed.update(kw))
    for param in inspect.signature(function).parameters.values():
        kinds = [t for t in typing.get_args(hints[param.name]) if t is not type(None)] or [hints[param.name]]
        flag = "--" + param.name.replace("_", "-")
        if kinds[0] is bool:
            flag += "/--no-" + param.name.replace("_", "-")
        required = param.default is inspect.Parameter.empty
        default = None if required else param.default
        command.params.append(
            click.Option([flag], param.name, type=kinds[0], default=default, required=required)
        )
    try:
        command.main(list(args), standalone_mode=False)
    except click.ClickException:
        return None
    return parsed
