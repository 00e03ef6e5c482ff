"""A run's metrics: metrics.jsonl in the run folder (one JSON row per log interval, slash names
such as train/ce), always; mirrored to one logger when asked (config `logger`): wandb (to
wandb_project; `logger: null` with a wandb_project means wandb, as the earlier system's configs
do: without the wandb package that is one note line and metrics.jsonl alone; WANDB_MODE=offline
works without network) or tensorboard (the same scalars as event files in <run>/tensorboard/,
mop/event_file.py). Torch-free, so notebooks and figures read a run's curves without loading
torch; mop/experiment.py re-exports both names.

    rows = read_metrics("checkpoints/BabyAI-GoToLocal-v0/trial_0/metrics.jsonl")
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from mop.checks import ConfigError
from mop.runs import atomic_write_text

TENSORBOARD_DIR = "tensorboard"
DEFAULT_WANDB_PROJECT = "rl-mop"


def logger_kind(cfg: Any) -> str:
    """The logger a run uses beside metrics.jsonl: cfg.logger, or (null) wandb when a
    wandb_project is set, else none."""
    kind = getattr(cfg, "logger", None)
    return kind if kind else ("wandb" if getattr(cfg, "wandb_project", None) else "none")


class MetricLogger:
    """metrics.jsonl in the run folder (slash names), and the run's logger (logger_kind); cfg: the
    run's TrainConfig (its logger, wandb_project, task_id, trial, seed and fields)."""

    def __init__(self, directory: Path, cfg: Any, resume: bool, resume_update: int | None = None):
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "metrics.jsonl"
        self.wandb = self.events = None
        kind = logger_kind(cfg)
        if kind == "wandb":
            project = cfg.wandb_project or DEFAULT_WANDB_PROJECT
            try:
                import wandb  # lazy: wandb is optional
            except ImportError:
                if getattr(cfg, "logger", None) == "wandb":  # asked for by name: refused, not noted
                    raise ConfigError(
                        "logger wandb: the wandb package is not installed (pip install wandb)"
                    ) from None
                print(
                    f"note: wandb_project {project!r}: wandb is not installed, so the metrics go to metrics.jsonl only"
                )
            else:
                name = f"{cfg.task_id}-t{cfg.trial}" + (f"-s{cfg.seed}" if cfg.seed is not None else "")
                self.wandb = wandb.init(
                    project=project, name=name, config=dataclasses.asdict(cfg), resume="allow"
                )
        elif kind == "tensorboard":
            from mop.event_file import EventWriter

            self.events = EventWriter(directory / TENSORBOARD_DIR)
        # A new run replaces an old metrics.jsonl with its first row, not before: a start that
        # fails before logging anything leaves the file of a killed run as it was.
        self.fresh = not resume
        if resume and self.path.exists() and resume_update is not None:
            # Rows logged after the checkpoint we resume from will be logged again: drop them (and
            # a last line torn by a kill).
            try:
                kept = [r for r in read_metrics(self.path) if r.get("update", 0) <= resume_update]
            except ValueError as e:
                raise ConfigError(f"--resume: {e}") from None
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))

    def log(self, row: dict) -> None:
        with open(self.path, "w" if self.fresh else "a") as f:
            f.write(json.dumps(row) + "\n")
        self.fresh = False
        if self.wandb is not None:
            self.wandb.log(row, step=row["update"])
        if self.events is not None:
            self.events.scalars(row["update"], {k: v for k, v in row.items() if k != "update"})

    def close(self) -> None:
        if self.wandb is not None:
            self.wandb.finish()
        if self.events is not None:
            self.events.close()


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The rows of a metrics.jsonl. A last line that is not JSON (torn by a kill mid-write) is
    dropped; a bad line before it is a ValueError naming the file and line."""
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = [(n, line) for n, line in enumerate(f, 1) if line.strip()]
    rows = []
    for n, line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if n == lines[-1][0]:
                break
            raise ValueError(
                f"{str(path)!r} line {n} is not JSON: not a metrics.jsonl of this project"
            ) from None
        if not isinstance(row, dict):
            raise ValueError(f"{str(path)!r} line {n} is not a row of metrics")
        rows.append(row)
    return rows
