"""bench/levels.py, the level table, on a tiny recipe: it picks up configs/<level>.yaml, writes one
CSV row per level, skips a level already in the table, resumes a run that was cut off, and reports
the run's own training time (summed over sessions), not its wall clock.

    pytest tests/test_level_table.py
"""

from __future__ import annotations

import csv

import pytest
import torch
import yaml

from bench import levels
from tests.conftest import TINY_PRESET

pytestmark = pytest.mark.slow

LEVEL = "BabyAI-GoToObj-v0"


def rows_of(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_level_table_rows_skip_and_resume(tmp_path, capsys):
    configs = tmp_path / "configs"
    configs.mkdir()
    preset = yaml.safe_load(TINY_PRESET.read_text())
    (configs / f"{LEVEL}.yaml").write_text(yaml.safe_dump({**preset, "task_id": LEVEL}))
    out, root = tmp_path / "levels.csv", tmp_path / "runs"
    # tiny: 4 envs x 8 steps = 32 frames per update; 192 frames = 6 updates, probes every 3
    argv = [
        "--levels", LEVEL, "--frames", "192", "--probe_every", "96", "--probe_episodes", "4",
        "--eval_episodes", "8", "--configs_dir", str(configs), "--root", str(root), "--out", str(out),
        "--quiet",
    ]  # fmt: skip
    assert levels.main(argv) == 0
    (row,) = rows_of(out)
    recipe = levels.recipe_of(configs / f"{LEVEL}.yaml", {})
    assert row["level"] == LEVEL and row["recipe"] == recipe == f"{LEVEL}-{recipe.rsplit('-', 1)[1]}"
    assert (int(row["updates"]), int(row["frames"]), int(row["eval_episodes"])) == (6, 192, 8)
    assert 0.0 <= float(row["eval_ci_low"]) <= float(row["eval_success"]) <= float(row["eval_ci_high"]) <= 1.0
    assert row["babyai_success_1m"] == "100.0"
    run = root / recipe / LEVEL / "trial_0"
    final = torch.load(run / "checkpoint_final.pt", map_location="cpu", weights_only=True)
    assert float(row["train_s"]) == pytest.approx(final["stats"]["elapsed_s"], abs=0.06)
    assert row["command"].startswith(f"python train_mop.py --config {configs / LEVEL}.yaml --task_id {LEVEL}")
    assert "--num_updates 6 --checkpoint_interval 3" in row["command"]

    capsys.readouterr()
    assert levels.main(argv) == 0  # in the table: skipped, the table untouched
    assert "already in" in capsys.readouterr().out and rows_of(out) == [row]

    # A run cut off after its first checkpoint (no row, no final checkpoint) resumes from it.
    out.unlink()
    (run / "checkpoint_final.pt").unlink()
    first = torch.load(run / "checkpoint_3.pt", map_location="cpu", weights_only=True)
    assert levels.main(argv) == 0
    (again,) = rows_of(out)
    assert (int(again["updates"]), int(again["frames"])) == (6, 192)
    resumed = torch.load(run / "checkpoint_final.pt", map_location="cpu", weights_only=True)
    assert resumed["update"] == 6 and resumed["stats"]["elapsed_s"] > first["stats"]["elapsed_s"]
    assert float(again["train_s"]) == pytest.approx(resumed["stats"]["elapsed_s"], abs=0.06)


def test_shown_paths_are_relative_to_the_repository(tmp_path):
    assert levels._shown(levels.REPO / "configs" / "tiny.yaml") == "configs/tiny.yaml"
    assert levels._shown(tmp_path / "x.yaml") == str(tmp_path / "x.yaml")
