"""README.md's shell commands as a reader meets them: every command line of its fenced shell blocks
in order (continuation lines joined), with the section it sits in, its words and the script it
runs. One reading for tests/test_readme.py (the commands are valid) and bench/readme_walk.py (the
commands run, in order, timed)."""

from __future__ import annotations

import re
import shlex
from typing import NamedTuple

BLOCK = re.compile(r"```(?:bash|sh|console)?\n(.*?)```", re.S)
HEADING = re.compile(r"^#{1,6} +(.+?) *$", re.M)


class Command(NamedTuple):
    number: int  # 1-based, in README order
    offset: int  # where its block starts in the text
    section: str  # the nearest heading above it
    line: str  # the command as written (continuations joined), its trailing comment included


def located_commands(text: str) -> list[tuple[int, str]]:
    """(offset of its block, command) for every command line of the text's fenced shell blocks,
    continuation lines joined."""
    found = []
    for block in BLOCK.finditer(text):
        for line in block.group(1).replace("\\\n", " ").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                found.append((block.start(), line))
    return found


def readme_commands(text: str) -> list[Command]:
    """Every command with its number and section (the last heading before its block)."""
    headings = [(m.start(), m.group(1)) for m in HEADING.finditer(text)]
    out = []
    for number, (offset, line) in enumerate(located_commands(text), start=1):
        section = next((title for at, title in reversed(headings) if at < offset), "")
        out.append(Command(number, offset, section, line))
    return out


def words(command: str) -> list[str]:
    """The command's words without its trailing comment; `[--flag value]` marks optional flags."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=False)
    lexer.whitespace_split, lexer.commenters = True, "#"
    return [w.strip("[]") for w in lexer if w.strip("[]")]


def python_script(ws: list[str]) -> tuple[str, str | None, list[str]] | None:
    """(script, subcommand, flags) of a `python X.py [sub] --flag ...` command."""
    if len(ws) < 2 or ws[0] not in ("python", "python3") or not ws[1].endswith(".py"):
        return None
    sub = ws[2] if len(ws) > 2 and re.fullmatch(r"[a-z_]+", ws[2]) and not ws[2].endswith(".py") else None
    flags = [w.split("=")[0] for w in ws[2:] if w.startswith("--")]
    return ws[1], sub, flags
