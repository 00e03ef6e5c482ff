"""A run's stopping rule, fixed before it runs (--stop_unless): "A-B: metric < x, metric >= y".

At the end of update B the mean of each named metric over the run's metrics.jsonl rows logged at
updates A..B (each row already averages the updates since the row before) must satisfy its
comparison. When every one does, the run goes on. When one does not, the run saves
checkpoint_B.pt and stops there: its remaining updates are not spent. Either way the verdict goes
to gate.json in the run folder, with each metric's mean, so the decision and its numbers are part
of the run, not of a watcher script beside it. A gate may have stages, separated by ";" (in a
config file also a mapping, one window per key), each judged at its own B in turn: an early,
cheap stage stops a run that is already off course long before the late one would.

    stop_unless: "3000-3072: train/aux_match < 0.05, train/aux_door_place < 0.5"
    stop_unless: "1500-1536: train/aux_match < 0.15; 3000-3072: train/aux_match < 0.05"

Rules, each refused in one line before anything trains (ConfigError):
- B is a logged update (a multiple of log_interval, the last update of a --demo_updates phase, or
  num_updates) and at most num_updates; 1 <= A <= B; each stage's B after the one before.
- Comparisons are <, <=, >, >= against a finite number; conditions are separated by "," or "and".
- A metric a row of the window's phase does not log stops the run at its first such row (a typo
  costs minutes, not the run); a mean that is NaN fails its comparison.
- A gate that failed (at any stage) is final: the run does not resume
  (imitation.checkpoint_to_resume). To train on anyway, resume with --stop_unless '' (the key is not
  part of the recipe: up to update B a run with a gate is update for update the run without one), or
  fork from checkpoint_B.pt.
- A gate is set before its windows end: resuming or forking past a stage's B with a gate that was not
  judged there (a new or changed gate) is refused.
"""

from __future__ import annotations

import difflib
import json
import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mop.checks import ConfigError
from mop.metrics_log import read_metrics
from mop.runs import METRICS_FILE, atomic_write_text

GATE_FILE = "gate.json"
OPS = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt}
_WINDOW = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*:\s*(.*?)\s*$", re.S)
_CONDITION = re.compile(r"^([A-Za-z0-9_./-]+)\s*(<=|>=|<|>)\s*(\S+)$")
_SEPARATOR = re.compile(r"\s*,\s*|\s+and\s+")
STAGES = ";"
EXAMPLE = '"3000-3072: train/aux_match < 0.05, train/aux_door_place < 0.5"'


@dataclass(frozen=True)
class Condition:
    metric: str
    op: str
    value: float

    def holds(self, mean: float | None) -> bool:
        return mean is not None and not math.isnan(mean) and OPS[self.op](mean, self.value)

    def __str__(self) -> str:  # the number as short as it reads back exactly (0.05, 1, 0.0512345678)
        short = format(self.value, "g")
        return f"{self.metric} {self.op} {short if float(short) == self.value else repr(self.value)}"


@dataclass(frozen=True)
class Stage:
    """One window of a gate and its conditions."""

    start: int
    end: int
    conditions: tuple[Condition, ...]

    @property
    def spec(self) -> str:
        return f"{self.start}-{self.end}: " + ", ".join(map(str, self.conditions))

    def missing(self, row: dict) -> list[str]:
        """The stage's metrics that `row` does not log."""
        return [c.metric for c in self.conditions if c.metric not in row]

    def verdict(self, rows: list[dict]) -> dict:
        """The stage's record from a run's metrics rows: the window's mean of each metric (None
        where no row in the window logs it) and whether each comparison holds."""
        window = [r for r in rows if self.start <= r.get("update", -1) <= self.end]
        conditions = []
        for c in self.conditions:
            values = [float(r[c.metric]) for r in window if isinstance(r.get(c.metric), (int, float))]
            mean = sum(values) / len(values) if values else None
            conditions.append(
                {
                    "metric": c.metric,
                    "op": c.op,
                    "value": c.value,
                    "mean": mean,
                    "rows": len(values),
                    "holds": c.holds(mean),
                }
            )
        return {
            "stop_unless": self.spec,
            "window": [self.start, self.end],
            "rows": len(window),
            "conditions": conditions,
            "passed": all(c["holds"] for c in conditions),
        }


@dataclass(frozen=True)
class Gate:
    """A --stop_unless rule: its stages, in the order their windows end."""

    stages: tuple[Stage, ...]

    @property
    def spec(self) -> str:
        """The canonical text (what config.json and gate.json hold; parse(spec) gives it back)."""
        return f"{STAGES} ".join(stage.spec for stage in self.stages)

    def ended_by(self, update: int) -> list[Stage]:
        """The stages whose windows have ended by `update`."""
        return [stage for stage in self.stages if stage.end <= update]

    def verdict(self, rows: list[dict], update: int | None = None) -> dict:
        """gate.json's record at `update` (default: the last stage's end): the verdict of the last
        stage ended by then at the top level (what a single-stage gate's record always was), the
        whole gate's text, and every ended stage's verdict under "stages"."""
        ended = self.ended_by(self.stages[-1].end if update is None else update)
        if not ended:
            raise ValueError(f"no stage of {self.spec!r} has ended by update {update}")
        stages = [stage.verdict(rows) for stage in ended]
        return {**stages[-1], "stop_unless": self.spec, "stages": stages}


def parse(spec: str) -> Gate:
    """The gate of a --stop_unless text; ConfigError naming what is wrong."""
    stages = [_stage(part.strip(), spec) for part in spec.split(STAGES)]
    for before, after in zip(stages, stages[1:]):
        if after.end <= before.end:
            raise ConfigError(
                f"stop_unless: each stage's window must end after the one before, got "
                f"{before.start}-{before.end} then {after.start}-{after.end}"
            )
    return Gate(tuple(stages))


def _stage(text: str, spec: str) -> Stage:
    """One stage's text ("A-B: conditions"); `spec`, the whole gate, for the message."""
    match = _WINDOW.match(text)
    if match is None:
        shown = repr(spec) + (f" (the stage {text!r})" if STAGES in spec else "")
        raise ConfigError(f"stop_unless must read 'A-B: metric < x, ...' (e.g. {EXAMPLE}), got {shown}")
    start, end, body = int(match.group(1)), int(match.group(2)), match.group(3)
    if not 1 <= start <= end:
        raise ConfigError(f"stop_unless: the window {start}-{end} must have 1 <= A <= B")
    if not body:
        raise ConfigError(f"stop_unless: no condition after the window (e.g. {EXAMPLE})")
    conditions = []
    for part in _SEPARATOR.split(body):
        found = _CONDITION.match(part.strip())
        if found is None:
            raise ConfigError(
                f"stop_unless: {part.strip()!r} is not 'metric <|<=|>|>= number' (e.g. {EXAMPLE})"
            )
        try:
            value = float(found.group(3))
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise ConfigError(f"stop_unless: {part.strip()!r} must compare with a finite number")
        conditions.append(Condition(found.group(1), found.group(2), value))
    return Stage(start, end, tuple(conditions))


def check(spec: str, num_updates: int, log_interval: int, demo_updates: int) -> None:
    """validate()'s check of --stop_unless against the run's length and logging (ConfigError).
    demo_updates: the last update of a BC phase that DAgger follows (0: none), which logs."""
    for stage in parse(spec).stages:
        if stage.end > num_updates:
            raise ConfigError(
                f"stop_unless: the window ends at update {stage.end}, after num_updates ({num_updates})"
            )
        logged = stage.end % log_interval == 0 or stage.end in (num_updates, demo_updates)
        if not logged:
            raise ConfigError(
                f"stop_unless: the window must end on a logged update (a multiple of log_interval "
                f"{log_interval}, demo_updates or num_updates), got {stage.end}"
            )


def unlogged(stage: Stage, row: dict, update: int) -> str | None:
    """The refusal when the first metrics row of a stage's phase (`row`, logged at `update`) lacks
    a metric the stage names, with the nearest names it does log; None when it has them all."""
    missing = stage.missing(row)
    if not missing:
        return None
    logs = sorted(k for k in row if "/" in k)
    named = []
    for metric in missing:
        near = difflib.get_close_matches(metric, logs, n=2)
        named.append(f"{metric!r}" + (f" (did you mean {' or '.join(near)}?)" if near else ""))
    return (
        f"stop_unless names {', '.join(named)}, which update {update}'s metrics row does not log; "
        f"it logs {', '.join(logs)}"
    )


def judge(rule: Gate, directory: Path, update: int) -> dict:
    """The gate's verdict at `update` (a stage's end), on the run's metrics.jsonl, written to its
    gate.json (atomically) and returned."""
    verdict = {**rule.verdict(read_metrics(Path(directory) / METRICS_FILE), update), "update": update}
    atomic_write_text(Path(directory) / GATE_FILE, json.dumps(verdict, indent=1) + "\n")
    return verdict


class Watch:
    """A run's gate while it trains (mop/imitation.py's ImitationRun): `after` each update checks
    each stage's names on the first row of its window's phase and judges at each window's end;
    `stopped` says the run ends there. With no --stop_unless it does nothing."""

    def __init__(self, spec: str | None, offline: Callable[[int], bool]):
        self.rule = parse(spec) if spec else None
        self.offline = offline  # update -> whether it trains on the demos (schedules.offline_update)
        self.checked: set[int] = set()  # the stages whose names a row of their phase has passed
        self.stopped = False

    def in_phase(self, stage: Stage, update: int) -> bool:
        """Whether `update` trains as the stage's window end does (on the demos, or online)."""
        return self.offline(update) == self.offline(stage.end)

    def after(self, update: int, logged: dict | None, last: bool, directory: Path) -> str | None:
        """After update `update` was logged (its row, or None): ConfigError (unlogged) at a stage's
        phase's first row; at a window's end the verdict's line, gate.json written and, failed
        before the last update, `stopped`."""
        if self.rule is None:
            return None
        for index, stage in enumerate(self.rule.stages):
            if logged is not None and index not in self.checked and self.in_phase(stage, update):
                self.checked.add(index)
                refused = unlogged(stage, logged, update)
                if refused:
                    raise ConfigError(refused)
        if update not in {stage.end for stage in self.rule.stages}:
            return None
        verdict = judge(self.rule, directory, update)
        self.stopped = not verdict["passed"] and not last
        stops = f"; the run stops here (checkpoint_{update}.pt, {GATE_FILE})" if self.stopped else ""
        return describe(verdict) + stops


def read_verdict(directory: Path) -> dict | None:
    """The run's gate.json (None: no gate has spoken); ConfigError if it is not one."""
    path = Path(directory) / GATE_FILE
    if not path.exists():
        return None
    try:
        verdict = json.loads(path.read_text())
        verdict["passed"], verdict["window"]  # noqa: B018  (the keys every verdict has)
    except (ValueError, KeyError, TypeError):
        raise ConfigError(f"{str(path)!r} is not a gate verdict of this project; move it aside") from None
    return verdict


def describe(verdict: dict) -> str:
    """One line: the verdict and each mean against its condition."""
    start, end = verdict["window"]
    parts = [
        f"{c['metric']} {'not logged' if c['mean'] is None else format(c['mean'], '.4g')} "
        f"({'holds' if c['holds'] else 'fails'} {c['op']} {c['value']:g})"
        for c in verdict["conditions"]
    ]
    return f"gate {'passed' if verdict['passed'] else 'failed'} over updates {start}-{end}: " + "; ".join(
        parts
    )


def stopped(spec: str | None, directory: Path) -> dict | None:
    """The failed verdict of gate `spec` in the run folder (None: no gate, not this gate, it passed,
    or the failed stage's checkpoint_B.pt is missing: a run killed between the verdict and that
    checkpoint goes back to an earlier one and is judged again at B): a run that stopped at its
    gate, which --resume refuses and sweeps and bench/levels.py skip."""
    return _failed(parse(spec), directory, read_verdict(directory)) if spec else None


def _failed(rule: Gate, directory: Path, verdict: dict | None) -> dict | None:
    """`stopped` on a verdict already read."""
    if verdict is None or verdict.get("stop_unless") != rule.spec or verdict["passed"]:
        return None
    return verdict if (Path(directory) / f"checkpoint_{verdict['window'][1]}.pt").exists() else None


def refuse(spec: str | None, directory: Path, update: int, flag: str) -> None:
    """ConfigError ("<flag>: <why>") when `refusal` has a reason."""
    why = refusal(spec, directory, update)
    if why:
        raise ConfigError(f"{flag}: {why}")


def refusal(spec: str | None, directory: Path, update: int) -> str | None:
    """Why a run at `update` (resumed or forked) cannot go on under gate `spec`, or None: its gate
    failed (gate.json), or a stage's window ended by `update` and this gate was not judged there
    (a gate set late)."""
    if not spec:
        return None
    rule = parse(spec)
    verdict = read_verdict(directory)
    if _failed(rule, directory, verdict) is not None:
        return (
            f"{str(directory)!r} stopped at its gate: {describe(verdict)} (gate.json). To train on anyway "
            f"resume with --stop_unless '' (not part of the recipe), or fork from "
            f"checkpoint_{verdict['window'][1]}.pt"
        )
    ended = rule.ended_by(update)
    judged_to = verdict["window"][1] if verdict is not None and verdict.get("stop_unless") == rule.spec else 0
    if ended and ended[-1].end > judged_to:
        return (
            f"stop_unless's window ends at update {ended[-1].end} and this run is at update {update}: a gate is "
            "set before its window ends (give another window, or --stop_unless '')"
        )
    return None
