"""Run identity and run files: the one place that knows how a run is laid out on disk.

A run is (task_id, trial, seed). Its folder is `<root>/<task_id>/trial_<N>/[seed_<S>/]` (no
`seed_<S>/` when the run was started without --seed), and holds
    checkpoint_<update>.pt ...  every --checkpoint_interval updates, and the last update
    checkpoint_final.pt         the last update again: a hard link to its checkpoint_<U>.pt (a copy
                                where the filesystem has no hard links), as the earlier system wrote
    resume_<update>.pt          while a run trains, its state every RESUME_POINT_MINUTES of wall since
                                the last file it saved: a cut-off run loses at most that, not a whole
                                --checkpoint_interval; one at a time, removed once a numbered checkpoint
                                or the run's end passes it; not a checkpoint (nothing evaluates it)
    metrics.jsonl               one row per log interval
    config.json                 the resolved config, readable without torch
Evaluation caches mirror the run folder: `<cache_root>/<task_id>/trial_<N>/[seed_<S>/]update_<U>/
[eval_<task>/][knockout_<spec>/]`, keyed by the update the weights hold (checkpoint_final.pt caches
under its update too, as the earlier system's batch_eval did), so a resumed run, whose
checkpoint_final.pt then names a later update, never overwrites an earlier update's cache. Only a
checkpoint_final.pt whose update is unknown caches in the run's folder itself.

One evaluation, one identity (`evaluation_identity`; mop/results.py keys the results CSV by it):
the run folder, the update the weights hold, the evaluated level and the knockout.
checkpoint_<U>.pt and a checkpoint_final.pt holding update U in one run folder are the same
weights, so they are one evaluation: evaluated once (`canonical_checkpoints` keeps the numbered
file), one row naming checkpoint_<U>.pt (the name the earlier system's batch_eval skips by), one
cache folder. The update a checkpoint_final.pt holds is read from the file (torch) by the caller.

What a run holds and continues from is decided here too: `store_last_update` (the last update's
numbered file and its checkpoint_final.pt link), `retire_final` (a finished run going on: its
final weights keep only their numbered name) and `resume_candidates` (newest first).

A multi-task run (task_id a comma list of levels, train_mop.py --task_id "A,B,C") lives under one
folder name for the list, `multi_<short>+<short>+...` (`run_task_name`; BabyAI-GoToLocal-v0 is
GoToLocal), which `run_task_ids` turns back into the levels; everything else is as above.

Who writes a run folder holds it: `own_run(folder, ...)` (the run lock, `.train.lock`, then the
temp files a killed writer left removed) is the one lock for every writer of a run folder, so two
processes never write one run; a second one gets RunLockedError naming the holder. There is no
other run lock in the project (no copy of it, no lock of another kind on a run folder). Its takers:
- training (train_mop.py, train.py, Modal's train_run, sweep.py's runs, lmc.py's parent and
  single children): mop/imitation.py `train_to_end`, which also decides whether the run is new,
  partial or done (`run_status`) and refuses a folder holding another policy type;
- lmc.py's shared-buffer pair: both children's folders at once (`own_run(a, b)`), trained in
  lockstep by imitation.run_in_lockstep;
- lmc.py train's experiment folder, for the whole command (`run_experiment`): the same experiment
  started twice is refused before it writes anything;
- any other writer of a run folder (generative training's output folder, a sweep's bookkeeping)
  holds it the same way, `with own_run(folder): ...`, and nothing else.
Readers (evaluation, statistics, notebooks) take no lock: every file is replaced atomically.
The results CSV is not a run folder: mop/results.merge_results serialises its writers with
`locked` (a blocking lock beside the file), the one other lock here.

Everything here is torch-free (notebooks and Modal's local side import it), and every path built
from a file's contents goes through `safe_name`, so no task id, trial, seed, update or knockout
label read from a checkpoint can point a write outside the chosen root.

    run = RunId("BabyAI-GoToLocal-v0", trial=0, seed=None); run_dir("checkpoints", run)
    find_checkpoints(["checkpoints", "modal_checkpoints"])   # every checkpoint in that layout
    run_task_name("BabyAI-GoToLocal-v0,BabyAI-PickupLoc-v0")  # 'multi_GoToLocal+PickupLoc'
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FINAL = "final"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
# How training refuses a folder that holds a run (mop/imitation.py); bench/levels.py and
# bench/readme_walk.py recognise the refusal by it and continue with --resume.
HOLDS_CHECKPOINTS = "already holds checkpoints; use --resume"
_CHECKPOINT = re.compile(r"^checkpoint_(\d+|final)\.pt$")
_RESUME_POINT = re.compile(r"^resume_(\d+)\.pt$")
RESUME_POINT_MINUTES = 5.0  # wall between resume points: a 65 MB resume save took 0.14 s here
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=-]*$")


class RunPathError(ValueError):
    """A name that cannot be one component of a path under a root (e.g. '../x', 'a/b')."""


def safe_name(value: Any, what: str) -> str:
    """`value` as one path component, or RunPathError: letters, digits and . _ + = - only, no
    leading dot (so never '..'), at most 200 characters."""
    text = str(value)
    if not _SAFE.match(text) or len(text) > 200:
        raise RunPathError(f"{what} {text!r} cannot be used in a path (letters, digits, '._+=-' only)")
    return text


def _count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        try:
            number = int(value)
        except (TypeError, ValueError):
            number = -1
        if number < 0 or str(number) != str(value).strip():
            raise RunPathError(f"{what} {value!r} is not a non-negative integer")
        value = number
    return int(value)


MULTI_PREFIX = "multi_"
_BABYAI_ID = re.compile(r"^BabyAI-([A-Za-z0-9]+)-v0$")


def split_task_ids(task_id: str) -> list[str]:
    """The levels of a task_id: one level, or a comma list of levels (a multi-task run)."""
    return [t.strip() for t in str(task_id).split(",") if t.strip()]


def is_multi_task(task_id: str) -> bool:
    """Whether a task_id (a comma list) or a run folder name (multi_...) names several levels."""
    return "," in str(task_id) or str(task_id).startswith(MULTI_PREFIX)


def run_task_name(task_id: str) -> str:
    """The folder name of a task_id: a single level as it is; a comma list as
    multi_<level>+<level>+... with BabyAI-<Name>-v0 shortened to <Name> (other ids kept whole)."""
    if "," not in str(task_id):  # one level, or already a folder name
        return str(task_id)
    levels = split_task_ids(task_id)
    if len(set(levels)) != len(levels):
        raise RunPathError(f"task_id {task_id!r} names a level twice")
    shorts = []
    for level in levels:
        m = _BABYAI_ID.match(level)
        shorts.append(m.group(1) if m else safe_name(level, "task_id level"))
    return MULTI_PREFIX + "+".join(shorts)


def run_task_ids(name: str) -> list[str]:
    """The levels of a run folder name (run_task_name's inverse); [name] for a single level."""
    if not name.startswith(MULTI_PREFIX):
        return split_task_ids(name) if "," in name else [name]
    return [p if "-" in p else f"BabyAI-{p}-v0" for p in name[len(MULTI_PREFIX) :].split("+") if p]


@dataclass(frozen=True)
class RunId:
    """Which run: the level (or the folder name of a multi-task run's levels), the experiment
    number and (optionally) the RNG seed. A comma list of levels is stored as its folder name
    (run_task_name); `levels` gives them back."""

    task_id: str
    trial: int
    seed: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "task_id", run_task_name(self.task_id))
        safe_name(self.task_id, "task_id")
        object.__setattr__(self, "trial", _count(self.trial, "trial"))
        if self.seed is not None:
            object.__setattr__(self, "seed", _count(self.seed, "seed"))

    @classmethod
    def of(cls, config: dict) -> RunId:
        """The run a (checkpoint's) config belongs to."""
        return cls(config["task_id"], config.get("trial", 0), config.get("seed"))

    @property
    def levels(self) -> list[str]:
        """The levels this run trained on (one for a single-task run)."""
        return run_task_ids(self.task_id)

    @property
    def subpath(self) -> Path:
        d = Path(self.task_id) / f"trial_{self.trial}"
        return d / f"seed_{self.seed}" if self.seed is not None else d

    @property
    def label(self) -> str:
        return f"{self.task_id}-t{self.trial}" + (f"-s{self.seed}" if self.seed is not None else "")


def run_dir(root: str | os.PathLike, run: RunId) -> Path:
    return Path(root) / run.subpath


# ----------------------------------------------------------------------------- checkpoints


def checkpoint_name(update: int | None) -> str:
    """checkpoint_<update>.pt, or checkpoint_final.pt for None."""
    return f"checkpoint_{FINAL if update is None else _count(update, 'update')}.pt"


def parse_checkpoint_name(name: str) -> int | str | None:
    """The update of checkpoint_<update>.pt, FINAL for checkpoint_final.pt, None for other files."""
    m = _CHECKPOINT.match(name)
    if not m:
        return None
    return FINAL if m.group(1) == FINAL else int(m.group(1))


def checkpoint_paths(directory: str | os.PathLike) -> list[tuple[int, Path]]:
    """Numbered checkpoints in a run folder, sorted by update."""
    out = []
    for p in Path(directory).glob("checkpoint_*.pt"):
        update = parse_checkpoint_name(p.name)
        if isinstance(update, int):
            out.append((update, p))
    return sorted(out)


def final_checkpoint(directory: str | os.PathLike) -> Path | None:
    path = Path(directory) / checkpoint_name(None)
    return path if path.is_file() else None


def resume_point_name(update: int) -> str:
    return f"resume_{_count(update, 'update')}.pt"


def resume_points(directory: str | os.PathLike) -> list[tuple[int, Path]]:
    """resume_<update>.pt files in a run folder, sorted by update."""
    found = ((_RESUME_POINT.match(p.name), p) for p in Path(directory).glob("resume_*.pt"))
    return sorted((int(m.group(1)), p) for m, p in found if m)


def drop_resume_points(directory: str | os.PathLike, keep: int | None = None) -> None:
    """Remove the run's resume points but the one of update `keep`."""
    for update, path in resume_points(directory):
        if update != keep:
            path.unlink(missing_ok=True)


def resume_candidates(directory: str | os.PathLike) -> list[Path]:
    """Checkpoints to resume from, newest first: the final one (written last), then the numbered
    ones and a resume point by update (a resume point only where it is newer than every numbered
    one: a numbered checkpoint passes it)."""
    final = final_checkpoint(directory)
    numbered = checkpoint_paths(directory)
    newest = numbered[-1][0] if numbered else -1
    points = [(u, p) for u, p in resume_points(directory) if u > newest]
    ordered = sorted(numbered + points, key=lambda item: item[0], reverse=True)
    return ([final] if final else []) + [p for _, p in ordered]


NEW, PARTIAL, DONE = "new", "partial", "done"


def run_stands(newest: Path | None, update: int | None, num_updates: int) -> str:
    """Where a run stands against num_updates, from its newest readable checkpoint (path and the
    update it holds; None: no checkpoint): NEW without one; DONE when that is checkpoint_final.pt
    at num_updates, or any checkpoint beyond it; PARTIAL otherwise (a checkpoint to continue from,
    or a numbered one at num_updates whose checkpoint_final.pt link is missing: only the link is
    left to make). mop/imitation.py's run_status and --resume's refusal both ask this."""
    if newest is None or update is None:
        return NEW if newest is None else PARTIAL
    finished = newest.name == checkpoint_name(None)
    return DONE if update > num_updates or (update == num_updates and finished) else PARTIAL


def link_or_copy(source: str | os.PathLike, target: str | os.PathLike) -> Path:
    """`target` as a hard link to `source` (no extra disk), or a copy where the filesystem has no
    hard links (some network volumes: the checkpoint's size again); replaced atomically."""
    import shutil

    source, target = Path(source), Path(target)

    def write(tmp: str) -> None:
        os.unlink(tmp)
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)

    return atomic_write(target, write, mode=source.stat().st_mode & 0o777)


def store_last_update(directory: str | os.PathLike, update: int, save: Callable[[Path], Any]) -> list[Path]:
    """The last update of a run: `save(path)` writes checkpoint_<update>.pt, then
    checkpoint_final.pt becomes a link to it (link_or_copy). The numbered name is the weights'
    identity (results rows and caches are keyed by it); the final name is where users and the
    earlier system's tools look for the end of a run. Returns both paths."""
    numbered = Path(directory) / checkpoint_name(update)
    save(numbered)
    return [numbered, link_or_copy(numbered, Path(directory) / checkpoint_name(None))]


def retire_final(directory: str | os.PathLike, update: int) -> Path:
    """A finished run that goes on (--resume to more updates): its checkpoint_final.pt, holding
    `update`, keeps only its numbered name checkpoint_<update>.pt (made from it if a run written
    before the last update was stored twice lacks it), so the final name moves on with the run
    and every evaluation of update `update` (its row, its cache) stays that update's."""
    final, numbered = Path(directory) / checkpoint_name(None), Path(directory) / checkpoint_name(update)
    if final.is_file():
        if not numbered.is_file():
            link_or_copy(final, numbered)
        final.unlink()
    return numbered


def canonical_checkpoints(
    refs: list[CheckpointRef], held: Callable[[Path], int | None]
) -> list[CheckpointRef]:
    """One ref per set of weights: a checkpoint_final.pt whose run folder has the numbered file of
    the update it holds (`held(path)`: that update, None if unreadable) is left out (the numbered
    name is the identity); one without its numbered twin (runs written before the last update was
    stored twice) is kept, carrying the update it holds (final_update). A numbered ref that
    checkpoint_final.pt links carries final_update == update (`is_final`)."""
    from dataclasses import replace

    numbered = {(Path(r.path).parent, r.update) for r in refs if r.update is not None}
    twins = set()
    out = []
    for r in refs:
        if r.update is None:
            update = held(Path(r.path))
            if update is not None and (Path(r.path).parent, update) in numbered:
                twins.add((Path(r.path).parent, update))
                continue
            r = replace(r, final_update=update)
        out.append(r)
    return [replace(r, final_update=r.update) if (Path(r.path).parent, r.update) in twins else r for r in out]


@dataclass(frozen=True)
class CheckpointRef:
    """A checkpoint found in the run layout under some root."""

    path: str  # as found, POSIX (relative when the root was relative)
    task_id: str
    trial: int
    seed: int | None
    update: int | None  # None for checkpoint_final.pt
    final_update: int | None = None  # the update checkpoint_final.pt holds, where it was read

    @property
    def held_update(self) -> int | None:
        """The update of the weights: the numbered one, or the one the final checkpoint holds."""
        return self.update if self.update is not None else self.final_update

    @property
    def run(self) -> RunId:
        return RunId(self.task_id, self.trial, self.seed)

    @property
    def is_final(self) -> bool:
        """checkpoint_final.pt, or the numbered file it links (canonical_checkpoints)."""
        return self.update is None or self.final_update == self.update


def parse_run_path(path: str | os.PathLike) -> tuple[RunId, int | None] | None:
    """(run, update) of `.../<task>/trial_<N>/[seed_<S>/]checkpoint_<U|final>.pt`, else None."""
    parts = Path(path).parts
    update = parse_checkpoint_name(parts[-1]) if parts else None
    if update is None or len(parts) < 3:
        return None
    seed = None
    rest = parts[:-1]
    if rest[-1].startswith("seed_"):
        if not rest[-1][5:].isdigit() or len(rest) < 3:
            return None
        seed, rest = int(rest[-1][5:]), rest[:-1]
    if not rest[-1].startswith("trial_") or not rest[-1][6:].isdigit():
        return None
    try:
        run = RunId(rest[-2], int(rest[-1][6:]), seed)
    except RunPathError:
        return None
    return run, None if update == FINAL else int(update)


def weights_identity(path: str | os.PathLike, update: Any = None) -> tuple[str, int] | None:
    """(run folder, update) of the weights a checkpoint path holds: the update from a numbered
    name, else `update` (what a checkpoint_final.pt holds, or a results row's update column);
    None outside the run layout or when the update is unknown. Paths are normalised
    ('./checkpoints/x' is 'checkpoints/x'), so one set of weights has one identity."""
    import posixpath

    text = posixpath.normpath(Path(path).as_posix())
    parsed = parse_run_path(text)
    if parsed is None:
        return None
    held = parsed[1]
    if held is None:
        try:
            number = float(update)
        except (TypeError, ValueError):
            return None
        if not (number == number and number.is_integer() and number >= 0):  # NaN, 2.5, -1
            return None
        held = int(number)
    return posixpath.dirname(text), held


# Where checkpoints are looked for by default: local training's root and the folder
# `modal volume get rl-mop / ./modal_checkpoints/` fills.
DEFAULT_CHECKPOINT_DIRS = ("checkpoints", "modal_checkpoints")


def find_checkpoints(roots: list[str | os.PathLike]) -> list[CheckpointRef]:
    """Every checkpoint under the given roots in the run layout, sorted by path."""
    found = []
    for root in roots:
        root_path = Path(root)
        if not root_path.is_dir():
            continue
        for p in sorted(root_path.rglob("checkpoint_*.pt")):
            rel = p.relative_to(root_path)
            if len(rel.parts) not in (3, 4):
                continue
            parsed = parse_run_path(rel)
            if parsed is None:
                continue
            run, update = parsed
            found.append(CheckpointRef(p.as_posix(), run.task_id, run.trial, run.seed, update))
    return found


# ----------------------------------------------------------------------------- caches and plots


def knockout_slug(spec: str | None) -> str | None:
    if not spec:
        return None
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", spec).strip("-") or None


def cache_dir_for(
    cache_root: str | os.PathLike,
    config: dict,
    checkpoint_path: str | os.PathLike,
    eval_task_id: str | None = None,
    knockout: str | None = None,
) -> Path:
    """Where the routing cache of one evaluation lives (see the module docstring). Every component
    is checked with safe_name: a checkpoint whose config names '../x' is refused, never followed."""
    run = RunId.of(config)
    d = Path(cache_root) / run.subpath
    update = parse_checkpoint_name(Path(checkpoint_path).name)
    if update is None:  # a checkpoint not named in the layout: use the update it stores
        update = config.get("update")
        update = "unknown" if update is None else _count(update, "update")
    if update == FINAL and config.get("update") is not None:
        update = _count(
            config["update"], "update"
        )  # the last update, as that update: a resume moves the name
    if update != FINAL:  # (a final whose update is unknown: the run folder itself, keyed by its name)
        d = d / f"update_{update}"
    if eval_task_id and eval_task_id != config["task_id"]:
        d = d / f"eval_{safe_name(eval_task_id, 'eval_task_id')}"
    if knockout:
        d = d / f"knockout_{safe_name(knockout_slug(knockout), 'knockout')}"
    return d


def run_subpath(path: str | os.PathLike) -> Path:
    """<task>/trial_<N>/[seed_<S>/][update_<U>/][eval_*/][knockout_*/] of a cache folder, run folder
    or checkpoint (its .pt suffix dropped), whatever the root: where its plots go below plots/.
    Always relative, without '..' (the root '/' or a '..' of the given path is never kept)."""
    path = Path(path)
    path = path.with_suffix("") if path.suffix == ".pt" else path
    parts = tuple(p for p in path.parts if p not in (path.anchor, "..", "."))
    if not parts:
        raise RunPathError(f"{str(path)!r} names no folder to mirror")
    start = next((i - 1 for i, p in enumerate(parts) if i and p.startswith("trial_")), len(parts) - 1)
    return Path(*parts[start:])


def inside(root: str | os.PathLike, path: str | os.PathLike) -> Path:
    """`path`, or RunPathError if it does not lie under `root` (symlinks and '..' resolved): the
    last check before a write whose folder was built from a file's contents."""
    real_root, real = Path(root).resolve(), Path(path).resolve()
    if real != real_root and real_root not in real.parents:
        raise RunPathError(f"{str(path)!r} lies outside {str(root)!r}; refusing to write there")
    return Path(path)


def run_label(path: str | os.PathLike) -> str:
    """'BabyAI-UnlockPickup-v0 · trial 0 · seed 2 · update 1500' for .../trial_0/seed_2/update_1500."""
    return " · ".join(p.replace("_", " ", 1) for p in run_subpath(path).parts)


# ----------------------------------------------------------------------------- files


def atomic_write(path: str | os.PathLike, write: Callable[[str], Any], mode: int = 0o644) -> Path:
    """Write via `write(tmp_path)` to a temp file beside `path`, then rename it over `path`: a
    reader sees the old file or the new one, never half of one. The temp file is removed if
    anything fails (a full disk included)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, mode)  # mkstemp makes 0600; run files are shared read-only data
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def remove_stale_temp_files(directory: str | os.PathLike) -> list[Path]:
    """Temp files a killed atomic_write left behind in `directory` (not recursive); removes them."""
    stale = sorted(Path(directory).glob(".*.tmp")) if Path(directory).is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


@contextmanager
def locked(path: str | os.PathLike) -> Iterator[None]:
    """An exclusive, blocking lock beside `path` (fcntl: processes on this machine or one volume)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


RUN_LOCK_FILE = ".train.lock"


class RunLockedError(RuntimeError):
    """The run folder is held by another training process (the message says which)."""


@contextmanager
def run_lock(directory: str | os.PathLike) -> Iterator[Path]:
    """Hold the run folder for one training process: a non-blocking fcntl lock on
    `<directory>/.train.lock`, which holds the owner's pid, host and start time. A second start
    gets RunLockedError naming the owner. On exit the lock file is removed, and so are the folders
    this call created if they are still empty, so a start that fails leaves the disk as it was.
    Where the filesystem has no fcntl locks (some network volumes) the run goes on unlocked."""
    directory = Path(directory)
    created = [p for p in [directory, *directory.parents] if not p.exists()]
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / RUN_LOCK_FILE
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                break  # no locks on this filesystem: go on without one
            owner = os.read(fd, 1000).decode("utf-8", "replace").strip() or "another process (starting)"
            os.close(fd)
            raise RunLockedError(
                f"{str(directory)!r} is being trained by {owner}; wait for it to end, or stop it first"
            ) from None
        try:  # the holder before us may have removed the file it locked: lock the one at `path`
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {started}\n".encode())
        yield path
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)
        for folder in created:  # deepest first; stops at the first one something was written to
            try:
                folder.rmdir()
            except OSError:
                break


def lock_owner(directory: str | os.PathLike) -> str | None:
    """Who holds the run folder's training lock now (its pid, host, start), or None when nobody
    does (no lock file, or one nobody holds). Creates nothing; what `--resume` says of a run that is
    starting and has no checkpoint yet."""
    path = Path(directory) / RUN_LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno not in (errno.EAGAIN, errno.EACCES):
            return None
        return os.read(fd, 1000).decode("utf-8", "replace").strip() or "another process (starting)"
    finally:
        os.close(fd)  # closing drops a lock we took
    return None


@contextmanager
def own_run(*directories: str | os.PathLike) -> Iterator[list[Path]]:
    """Hold run folders for one writer: run_lock on each, in the order given (RunLockedError if
    another process holds one; those taken so far are released), then the temp files a killed
    writer left in each removed, which is safe only now that no one else writes there. Yields
    the lock files."""
    with contextlib.ExitStack() as stack:
        held = [stack.enter_context(run_lock(d)) for d in directories]
        for d in directories:
            remove_stale_temp_files(d)
        yield held


class OutputError(ValueError):
    """An output path that cannot be written (a file where a folder is needed, a read-only folder)."""


def check_writable_dir(path: str | os.PathLike, what: str) -> Path:
    """`path` as a folder this process can create files in (it may not exist yet); OutputError
    otherwise. Checked by creating and removing a probe file in the nearest existing folder, so it
    is true for read-only mounts and root alike. Creates nothing that stays."""
    path = Path(path)
    existing = next((p for p in [path, *path.parents] if p.exists()), Path("."))
    if not existing.is_dir():
        raise OutputError(f"{what} {str(path)!r} cannot be a folder: {str(existing)!r} is a file")
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".write_probe.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputError(
            f"{what} {str(path)!r} is not writable ({e.strerror} in {str(existing)!r})"
        ) from None
    return path


def check_writable_file(path: str | os.PathLike, what: str) -> Path:
    """`path` as a file that can be replaced atomically: not a folder, in a writable folder."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{what} {str(path)!r} is a folder, not a file")
    check_writable_dir(path.parent, what + " folder")
    return path


def write_run_config(directory: str | os.PathLike, config: dict) -> Path:
    """config.json: the resolved config of the run, so a notebook can label it without torch."""
    return atomic_write_text(
        Path(directory) / CONFIG_FILE, json.dumps(config, indent=1, sort_keys=True) + "\n"
    )


def read_run_config(directory: str | os.PathLike) -> dict | None:
    """config.json of a run folder, or None if absent or unreadable."""
    try:
        data = json.loads((Path(directory) / CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
