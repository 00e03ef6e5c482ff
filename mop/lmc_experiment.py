"""One LMC experiment as data: its settings, identity, children and folders (lmc.py runs it).

`Experiment` holds the parent's training config, the fork points (`parse_fork_points`: fractions
of num_updates -> fork updates), the buffer strategy, the child pairs per fork and the evaluation
settings; it names every run's config and folder (parent: trial 0, seed S; fork k's pair q:
trial k+1, seeds S + 1 + 2(qF + k) and S + 2 + 2(qF + k) for F forks) and every evaluation file,
and reads and writes the experiment's config.json (`load`, `write`; experiments from before
child pairs read as one pair). Reads and writes config.json only.

    exp = Experiment.load("lmc_results/BabyAI-GoToLocal-v0/seed_42/fresh")
    exp.child_folder(fork=1, child="B", pair=1); exp.evaluation_file(1, 1)
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path

from mop.connectivity import (
    CONFIG_FILE,
    HELDOUT_FILE,
    Evaluator,
    LMCError,
    Play,
    alpha_values,
    check_evaluation,
    heldout_set,
)
from mop.experiment import LIMITS, TrainConfig, load_config, run_dir
from mop.lmc_settings import EVALUATION_SETTINGS, STRATEGIES
from mop.runs import atomic_write_text, is_multi_task, run_task_name, safe_name

CHILDREN = ("A", "B")
EXPERIMENT_KIND, EXPERIMENT_VERSION = "lmc_experiment", 1
TIMING_FILE, EVAL_DIR = "timing.json", "evaluations"
FIGURE_DIR, CHECKPOINT_DIR = "fork_analysis", "checkpoints"


# ----------------------------------------------------------------------------- the experiment


def parse_fork_points(text: str, num_updates: int) -> tuple[list[float], list[int]]:
    """'0.1,0.5' -> ([0.1, 0.5], fork updates [round(p * num_updates)]): each in (0, 1) or exactly 0,
    strictly increasing, each on its own update in 1..num_updates-1 (0 only for p = 0)."""
    points = _points(text)
    return points, check_fork_points(points, num_updates)


def _points(text: str) -> list[float]:
    try:
        return [float(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise LMCError(f"--fork_points must be comma-separated fractions, got {text!r}") from None


def check_fork_points(points: list[float], num_updates: int) -> list[int]:
    """The fork updates of `points` (parse_fork_points' rules), or LMCError."""
    if not points:
        raise LMCError("--fork_points is empty")
    for p in points:
        if not (p == 0 or 0 < p < 1):
            raise LMCError(
                f"--fork_points: {p:g} is outside (0, 1) (fractions of num_updates; 0 alone forks the "
                "initialisation: two runs from one init)"
            )
    if any(b <= a for a, b in zip(points, points[1:])):
        raise LMCError(f"--fork_points must be sorted and distinct, got {','.join(f'{p:g}' for p in points)}")
    updates = [int(round(p * num_updates)) for p in points]
    for p, u in zip(points, updates):
        if p > 0 and not 1 <= u <= num_updates - 1:
            raise LMCError(
                f"--fork_points: {p:g} of {num_updates} updates is update {u}; with --num_updates "
                f"{num_updates} a fork point must lie in [{0.5 / num_updates:.3g}, {1 - 0.5 / num_updates:.4g})"
            )
    for (p, u), (q, v) in zip(zip(points, updates), zip(points[1:], updates[1:])):
        if u == v:
            raise LMCError(
                f"--fork_points: {p:g} and {q:g} are both update {u} of {num_updates}; drop one or raise --num_updates"
            )
    return updates


@dataclasses.dataclass(frozen=True)
class Experiment:
    """One LMC experiment: the parent's config, the forks, the buffer strategy, the evaluation
    (build_experiment fills in mop/lmc_settings.py's defaults)."""

    directory: Path
    train: dict  # the parent's TrainConfig fields (checkpoint_dir: set from `directory`)
    fork_points: tuple[float, ...]
    strategy: str
    alphas: int
    eval_episodes: int
    eval_envs: int
    heldout_episodes: int
    pairs: int = 1

    # ------------------------------------------------------------------ identity

    @property
    def seed(self) -> int:
        return int(self.train["seed"])

    @property
    def task_id(self) -> str:
        return self.train["task_id"]

    @property
    def fork_updates(self) -> list[int]:
        return check_fork_points(list(self.fork_points), self.train["num_updates"])

    @property
    def alpha_values(self) -> Sequence[float]:
        return alpha_values(self.alphas)

    def child_seed(self, fork: int, child: str, pair: int = 0) -> int:
        return self.seed + 1 + 2 * (pair * len(self.fork_points) + fork) + CHILDREN.index(child)

    def parent_config(self, num_workers: int | None = None) -> TrainConfig:
        values = {**self.train, "trial": 0, "checkpoint_dir": str(self.directory / CHECKPOINT_DIR)}
        if num_workers is not None:
            values["num_workers"] = num_workers
        return TrainConfig(**values)

    def child_config(
        self, fork: int, child: str, num_workers: int | None = None, pair: int = 0
    ) -> TrainConfig:
        return dataclasses.replace(
            self.parent_config(num_workers), trial=fork + 1, seed=self.child_seed(fork, child, pair)
        )

    def units(self) -> list[tuple[int, int]]:
        """Every (fork, pair), fork by fork."""
        return [(k, q) for k in range(len(self.fork_points)) for q in range(self.pairs)]

    def label(self, fork: int, pair: int = 0) -> str:
        where = f"fork {fork} ({self.fork_points[fork]:g}, update {self.fork_updates[fork]})"
        return where + (f" pair {pair}" if pair else "")

    # ------------------------------------------------------------------ config.json

    def to_json(self) -> dict:
        def children(k: int, q: int) -> dict:
            return {
                c: {
                    "trial": k + 1,
                    "seed": self.child_seed(k, c, q),
                    "run": self._relative(self.child_folder(k, c, q)),
                }
                for c in CHILDREN
            }

        forks = [
            {
                "fork": k,
                "point": p,
                "update": u,
                "children": children(k, 0),
                "pairs": [children(k, q) for q in range(self.pairs)],
            }
            for k, (p, u) in enumerate(zip(self.fork_points, self.fork_updates))
        ]
        return {
            "kind": EXPERIMENT_KIND,
            "version": EXPERIMENT_VERSION,
            "task_id": self.task_id,
            "seed": self.seed,
            "strategy": self.strategy,
            "fork_points": list(self.fork_points),
            **{k: getattr(self, k) for k in EVALUATION_SETTINGS},
            "pairs": self.pairs,
            "parent": self._relative(self.parent_folder()),
            "forks": forks,
            "train": {k: v for k, v in self.train.items() if k != "checkpoint_dir"},
        }

    def _relative(self, path: Path) -> str:
        return path.relative_to(self.directory).as_posix()

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Experiment:
        """The experiment in `directory`, or LMCError in one line."""
        directory = Path(directory)
        path = directory / CONFIG_FILE
        if not directory.is_dir():
            raise LMCError(f"{str(directory)!r} is not a folder")
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise LMCError(f"{str(directory)!r} is not an LMC experiment (no {CONFIG_FILE})") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise LMCError(f"{str(path)!r} is unreadable ({type(e).__name__})") from None
        if not isinstance(doc, dict) or doc.get("kind") != EXPERIMENT_KIND:
            raise LMCError(f"{str(directory)!r} is not an LMC experiment ({CONFIG_FILE} is another file)")
        if doc.get("version") != EXPERIMENT_VERSION:
            raise LMCError(
                f"{str(path)!r} has version {doc.get('version')!r}; this code reads {EXPERIMENT_VERSION}"
            )
        try:
            train = dataclasses.asdict(load_config(None, doc["train"]))
            exp = cls(
                directory,
                {**train, "checkpoint_dir": str(directory / CHECKPOINT_DIR)},
                tuple(float(p) for p in doc["fork_points"]),
                str(doc["strategy"]),
                **{k: int(doc[k]) for k in EVALUATION_SETTINGS},
                pairs=int(doc.get("pairs", 1)),  # experiments from before child pairs: one
            )
        except (KeyError, TypeError, ValueError) as e:
            raise LMCError(f"{str(path)!r} is not a valid experiment: {e}") from None
        exp.check()
        return exp

    def write(self) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        return atomic_write_text(self.directory / CONFIG_FILE, json.dumps(self.to_json(), indent=1) + "\n")

    def check(self) -> Experiment:
        """Everything parse_fork_points, the strategy and the evaluation need (LMCError)."""
        cfg = self.parent_config()
        if cfg.seed is None:
            raise LMCError("an LMC experiment needs an integer --seed")
        if is_multi_task(cfg.task_id):
            raise LMCError("--task_id: LMC runs one level at a time, not a comma list")
        if cfg.demos:
            raise LMCError(
                "--demos: offline children would replay the parent's demo order exactly (no data noise "
                "to fork on); LMC forks online imitation"
            )
        self.fork_updates  # noqa: B018  (validates the points against num_updates)
        if self.strategy not in STRATEGIES:
            raise LMCError(
                f"--fork_buffer_strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}"
            )
        if self.strategy != "fresh" and not cfg.buffer_episodes:
            raise LMCError(
                f"--fork_buffer_strategy {self.strategy} needs the DAgger buffer (--buffer_episodes N); "
                "with the buffer off only 'fresh' is meaningful"
            )
        check_evaluation(*(getattr(self, k) for k in EVALUATION_SETTINGS), "the two children")
        if isinstance(self.pairs, bool) or not isinstance(self.pairs, int) or not 1 <= self.pairs <= 1000:
            raise LMCError(f"--pairs must be a whole number from 1 to 1,000, got {self.pairs!r}")
        last = self.child_seed(len(self.fork_points) - 1, "B", self.pairs - 1)
        if last > LIMITS["seed"][0]:
            raise LMCError(f"--seed {self.seed}: the children's seeds (up to {last}) must stay below 2**32")
        return self

    # ------------------------------------------------------------------ folders

    def parent_folder(self) -> Path:
        return run_dir(self.parent_config())

    def child_folder(self, fork: int, child: str, pair: int = 0) -> Path:
        return run_dir(self.child_config(fork, child, pair=pair))

    def evaluation_file(self, fork: int, pair: int = 0) -> Path:
        """The pair's interpolation rows (its units: the .npz beside it)."""
        return (
            self.directory / EVAL_DIR / (f"fork_{fork}.csv" if pair == 0 else f"fork_{fork}_pair_{pair}.csv")
        )

    def evaluator(self, play: Play) -> Evaluator:
        """The evaluation envs and the held-out set (heldout.npz, made on first use); `play` plays
        one policy on them (lmc.play)."""
        max_steps = self.parent_config().max_steps
        held = heldout_set(self.directory / HELDOUT_FILE, self.task_id, self.heldout_episodes, max_steps)
        return Evaluator(self.task_id, max_steps, self.eval_episodes, self.eval_envs, held, play)


def experiment_dir(results_root: str | os.PathLike, task_id: str, seed: int, strategy: str) -> Path:
    return (
        Path(results_root)
        / safe_name(run_task_name(task_id), "task_id")
        / f"seed_{int(seed)}"
        / safe_name(strategy, "--fork_buffer_strategy")
    )
