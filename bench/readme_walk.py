"""Walk README.md as a new user does: every command in order, as written, in a folder that holds the
quickstart's setup (a fresh clone after `bash scripts/quickstart.sh`), each timed, with the longest
stretch it printed nothing and any evaluation result it made disappear (issue 43's Done-when).

    python bench/readme_walk.py --list                       # the numbered commands, by section
    python bench/readme_walk.py --workdir ../clone           # walk (resumes where the last walk stopped)
    python bench/readme_walk.py --workdir ../clone --only 9,10 --again
    python bench/readme_walk.py --workdir ../clone --markdown    # the walk's table, for a note

Each command runs in `bash` after `source .venv/bin/activate` (the README enters the environment
once; every later command assumes it), stdin closed, its output (stdout and stderr together) kept
in `<workdir>/readme_walk/<N>.log`; a row per command goes to `<workdir>/readme_walk/walk.csv`
as it finishes, so a walk cut off goes on from its first command without a row (a failed one is
run again). The walk stops at the first failure, as a reader would (`--keep_going` does not).
What cannot run here is said, not faked: `modal ...` needs Modal and an account (skipped); `marimo
run NB` serves a page until stopped, so the walk runs the notebook as a script (`python NB`,
every cell once; bench/notebook_render.py times the page itself); `bash scripts/test.sh` is the
suite (skipped unless `--with_suite`; CI times it). A command an earlier walk started and never
finished (a log, no row: the walk was cut off inside it) that now refuses its folder because the cut
run left checkpoints there ("use --resume") runs once more with `--resume`, as its refusal tells a
reader, and says so in `ran_as`; a command the walk never started gets no such second try (a README
line that collides with an earlier one's folder is the README's failure). A result is an evaluation identity of
`<workdir>/evaluation_results.csv` (mop.results): one present before a command and gone after it
is counted in `dropped_results`. The box's load average is recorded at each command's start and
end: times from a shared box are not an idle box's."""

from __future__ import annotations

import argparse
import csv
import io
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from mop.readme_commands import Command, readme_commands, words  # noqa: E402
from mop.runs import HOLDS_CHECKPOINTS, atomic_write_text  # noqa: E402

ACTIVATE = "source .venv/bin/activate"
COLUMNS = [
    "number",
    "section",
    "command",
    "ran_as",
    "status",
    "returncode",
    "wall_s",
    "longest_silence_s",
    "output_lines",
    "dropped_results",
    "load_start",
    "load_end",
    "commit",
    "finished_at",
]
SUITE = ["bash", "scripts/test.sh"]


def plan(command: Command, with_suite: bool) -> tuple[str | None, str]:
    """(the shell line the walk runs or None to skip, how it ran / why not)."""
    ws = words(command.line)
    if command.line.strip() == ACTIVATE:
        return ACTIVATE, "as written (and before every later command)"
    if ws[:1] == ["modal"]:
        return None, "skipped: needs the modal package and a Modal account"
    if ws[:2] == SUITE and not with_suite:
        return None, "skipped: the test suite (--with_suite runs it; CI times it)"
    if ws[:2] == ["marimo", "run"]:
        notebook = next(w for w in ws if w.endswith(".py"))
        return (
            f"python {notebook}",
            f"python {notebook}: marimo run serves a page; the notebook ran as a script",
        )
    return command.line, "as written"


def load_average() -> str:
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except OSError:
        return ""


def results_identities(workdir: Path) -> set[tuple]:
    """The evaluations `<workdir>/evaluation_results.csv` holds (none when absent or unreadable)."""
    path = workdir / "evaluation_results.csv"
    if not path.exists():
        return set()
    from mop import results

    try:
        return results.results_identities(results.read_results(path))
    except Exception:  # a CSV the command left unreadable is the command's failure, not the walk's
        return set()


def run_timed(line: str, workdir: Path, log: Path, timeout: float | None) -> tuple[int, float, float, int]:
    """Run `line` in bash after entering the environment; (returncode, wall s, longest silence s,
    output lines). Silence: the longest gap between two pieces of output, the start and the end
    counted as output."""
    script = line if line == ACTIVATE else f"{ACTIVATE} && {line}"
    started = time.perf_counter()
    stamps = [started]
    lines = 0
    with open(log, "wb") as sink:
        proc = subprocess.Popen(
            ["bash", "-c", script],
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )

        def read() -> None:
            nonlocal lines
            assert proc.stdout is not None
            while chunk := os.read(proc.stdout.fileno(), 65536):
                stamps.append(time.perf_counter())
                lines += chunk.count(b"\n") + chunk.count(b"\r")
                sink.write(chunk)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
            sink.write(f"\n[readme_walk] killed after {timeout:.0f} s\n".encode())
        reader.join()
    ended = time.perf_counter()
    stamps.append(ended)
    silence = max(b - a for a, b in zip(stamps, stamps[1:]))
    return code, ended - started, silence, lines


def commit_of(workdir: Path) -> str:
    out = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=workdir, capture_output=True, text=True, check=False
    )
    return out.stdout.strip()


def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_rows(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(sorted(rows, key=lambda r: int(r["number"])))
    atomic_write_text(path, buf.getvalue())  # a walk killed mid-write keeps the previous table


def walk(args: argparse.Namespace, commands: list[Command]) -> int:
    workdir = Path(args.workdir).resolve()
    out_dir = workdir / "readme_walk"
    out_dir.mkdir(exist_ok=True)
    table = out_dir / "walk.csv"
    rows = {int(r["number"]): r for r in read_rows(table)}
    chosen = set(args.only) if args.only else None
    commit = commit_of(workdir)
    for command in commands:
        if chosen is not None and command.number not in chosen:
            continue
        done = rows.get(command.number)
        if done and done["command"] == command.line and done["status"] != "failed" and not args.again:
            continue
        line, ran_as = plan(command, args.with_suite)
        print(f"[{command.number}/{len(commands)}] {command.section}: {command.line}", flush=True)
        row = {
            "number": command.number,
            "section": command.section,
            "command": command.line,
            "ran_as": ran_as,
        }
        if line is None:
            row |= {
                "status": "skipped",
                "commit": commit,
                "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            }
            print(f"  {ran_as}", flush=True)
        else:
            before = results_identities(workdir)
            load_start = load_average()
            log = out_dir / f"{command.number}.log"
            cut = done is None and log.exists()  # an earlier walk was cut off inside this command
            code, wall, silence, lines = run_timed(line, workdir, log, args.timeout)
            if cut and code != 0 and HOLDS_CHECKPOINTS in log.read_text(errors="replace"):
                line, ran_as = (
                    f"{line} --resume",
                    f"{ran_as}; cut off by an earlier walk: continued with --resume",
                )
                print(f"  {ran_as}", flush=True)
                row["ran_as"] = ran_as
                code, wall, silence, lines = run_timed(line, workdir, log, args.timeout)
            dropped = len(before - results_identities(workdir))
            row |= {
                "status": "ok" if code == 0 else "failed",
                "returncode": code,
                "wall_s": round(wall, 1),
                "longest_silence_s": round(silence, 1),
                "output_lines": lines,
                "dropped_results": dropped,
                "load_start": load_start,
                "load_end": load_average(),
                "commit": commit,
                "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            }
            print(
                f"  {row['status']} (exit {code}) in {wall:.1f} s; longest silence {silence:.1f} s"
                + (f"; {dropped} evaluation result(s) disappeared" if dropped else ""),
                flush=True,
            )
        rows[command.number] = row
        write_rows(table, list(rows.values()))
        if row["status"] == "failed" and not args.keep_going:
            print(
                f"stopped at command {command.number}: see {out_dir / f'{command.number}.log'}",
                file=sys.stderr,
            )
            return 1
    return 0


def _duration(seconds: str) -> str:
    if not seconds:
        return ""
    s = float(seconds)
    return f"{s:.1f} s" if s < 60 else f"{s / 60:.1f} min" if s < 3600 else f"{s / 3600:.2f} h"


def markdown(rows: list[dict]) -> str:
    lines = [
        "| # | section | command | wall | longest silence | load (start → end) | result |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: int(r["number"])):
        result = r["status"] if r["status"] != "failed" else f"failed (exit {r['returncode']})"
        if r.get("dropped_results") not in (None, "", "0"):
            result += f"; {r['dropped_results']} result(s) dropped"
        if r["ran_as"] != "as written":
            result += f"; {r['ran_as']}"
        load = f"{r['load_start']} → {r['load_end']}" if r.get("load_start") else ""
        command = r["command"].replace("|", "\\|")
        lines.append(
            f"| {r['number']} | {r['section']} | `{command}` | {_duration(r.get('wall_s', ''))} | "
            f"{_duration(r.get('longest_silence_s', ''))} | {load} | {result} |"
        )
    return "\n".join(lines)


def numbers(text: str) -> list[int]:
    try:
        return sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--only takes command numbers like 3,5 (see --list), got {text!r}"
        ) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--workdir", default=".", help="where the commands run: a clone set up by the quickstart"
    )
    parser.add_argument(
        "--readme", default=None, help="the README to walk (default: the workdir's README.md)"
    )
    parser.add_argument("--list", action="store_true", help="print the numbered commands and run nothing")
    parser.add_argument(
        "--markdown", action="store_true", help="print the walk's table (readme_walk/walk.csv)"
    )
    parser.add_argument(
        "--only", type=numbers, default=None, metavar="N[,N]", help="walk only these commands"
    )
    parser.add_argument("--again", action="store_true", help="run commands that already have a row")
    parser.add_argument("--keep_going", action="store_true", help="do not stop at the first failure")
    parser.add_argument("--with_suite", action="store_true", help="run `bash scripts/test.sh` too")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per command (default: none)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    workdir = Path(args.workdir)
    if not workdir.is_dir():
        parser.error(f"--workdir {args.workdir!r} is not a folder")
    readme = Path(args.readme) if args.readme else workdir / "README.md"
    if not readme.is_file():
        parser.error(f"no README at {str(readme)!r}")
    commands = readme_commands(readme.read_text())
    if args.list:
        for c in commands:
            print(f"{c.number:3d}  [{c.section}]  {c.line}")
        return 0
    if args.markdown:
        rows = read_rows(workdir / "readme_walk" / "walk.csv")
        if not rows:
            parser.error(f"{workdir / 'readme_walk' / 'walk.csv'} holds no walk yet")
        print(markdown(rows))
        return 0
    if not (workdir / ".venv" / "bin" / "activate").exists():
        parser.error(f"{str(workdir)!r} has no .venv: run `bash scripts/quickstart.sh` there first")
    unknown = [n for n in args.only or [] if not 1 <= n <= len(commands)]
    if unknown:
        parser.error(f"--only: no command {unknown} (the README has {len(commands)}; see --list)")
    return walk(args, commands)


if __name__ == "__main__":
    sys.exit(main())
