"""headline.py: the multi-task headline as one command (issue 42 item 4), on a tiny recipe."""

from __future__ import annotations

import pandas as pd
import pytest

import headline
from conftest import TINY_PRESET

LEVELS = "BabyAI-GoToRedBallGrey-v0,BabyAI-GoToLocal-v0"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--levels", "BabyAI-GoToLocal-v0"], "two or more levels"),
        (["--levels", "BabyAI-GoToLocal-v0,BabyAI-Nope-v0"], "unknown task_id 'BabyAI-Nope-v0'"),
        (["--seeds", "x"], "--seeds"),
        (["--episodes", "0"], "--episodes"),
        (["--num_updates", "10", "--checkpoint_interval", "20"], "--checkpoint_interval"),
        (["--ce_threshold", "0"], "--ce_threshold"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, extra, message):
    out = tmp_path / "hl"
    with pytest.raises(SystemExit) as e:
        headline.main(["--out", str(out), *extra])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and message in err, err
    assert not out.exists()


@pytest.mark.slow  # 2 tiny multi-task runs + 4 single-task repeats, evaluations, stats, causal
def test_one_command_trains_evaluates_the_time_course_and_plays_each_level(tmp_path, capsys):
    out = tmp_path / "hl"
    argv = ["--config", str(TINY_PRESET), "--levels", LEVELS, "--seeds", "0-1", "--num_updates", "4",
            "--checkpoint_interval", "2", "--single_task_updates", "2", "--episodes", "4",
            "--causal_episodes", "4", "--out", str(out)]  # fmt: skip
    written = headline.main(argv)
    course = pd.read_csv(out / "stats" / "time_course.csv")
    assert sorted(set(course["update"])) == [2, 4] and set(course["level"]) == set(LEVELS.split(","))
    assert (course["runs"] == 2).all()
    pairs = pd.read_csv(out / "stats" / "time_course_pairs.csv")
    assert len(pairs) == 2 and pairs["family"].str.contains("2 update\\(s\\) x 1 pair").all()
    for level in LEVELS.split(","):
        effects = pd.read_csv(out / "causal" / level / "causal_effects.csv")
        assert set(effects["intervention"]) == {"zero", "route_around", "swap"}
        assert written[f"causal {level}"] == str(out / "causal" / level)
    capsys.readouterr()
    headline.main(argv)  # again: nothing trained, evaluated or played twice
    said = capsys.readouterr().out
    assert "0 to evaluate" in said and said.count("done before") == 2 and said.count("already at update") == 6
