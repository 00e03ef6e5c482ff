"""bench/demo_fit.py and mop/demo_fit.py (issue 41's diagnosis): the three labelled sets are the
episodes they say they are (the student's own, stitched across collection chunks, equal the bot's
held-out episodes when the bot drives, and the evaluation's episodes when the student does), the
table's numbers are the sets' per-step means, and bad input is refused before torch is imported."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT, stderr_lines, tiny_config

TASK = "BabyAI-GoToRedBallGrey-v0"
SCRIPT = ROOT / "bench" / "demo_fit.py"
sys.path.insert(0, str(ROOT / "bench"))


# ----------------------------------------------------------------------------- tier 1


def test_the_table_is_each_sets_per_step_mean_and_the_gaps_subtract_in_the_order_named():
    from mop.demo_fit import Scored, fit_rows

    labels_a, labels_b = np.array([10, 30, 20]), np.array([5, 5, 40, 10])
    a = Scored("trained", labels_a, np.array([1.0, 6.0, 2.0]), np.array([10, 27, 18]))
    b = Scored("held out", labels_b, np.array([1.0, 2.0, 20.0, 5.0]), np.array([5, 4, 30, 10]))
    rows = fit_rows({"held out": b, "trained": a}).set_index("set")
    assert list(rows.index) == ["trained", "held out", "held out − trained"]
    assert rows.loc["trained", "ce"] == pytest.approx(9.0 / 60)
    assert rows.loc["held out", "accuracy"] == pytest.approx(49 / 60)
    assert rows.loc["trained", "whole_episodes"] == pytest.approx(1 / 3)
    assert rows.loc["held out", "labelled_steps"] == 60
    gap = rows.loc["held out − trained"]
    assert gap["ce"] == pytest.approx(28.0 / 60 - 9.0 / 60)
    assert gap["accuracy"] == pytest.approx(49 / 60 - 55 / 60)
    for name in rows.index:
        assert rows.loc[name, "ce_ci_low"] <= rows.loc[name, "ce"] <= rows.loc[name, "ce_ci_high"]


def test_trained_demos_are_drawn_from_the_ones_the_run_trained_on():
    from mop.demo_fit import trained_sample

    store = list(range(100))
    picked = trained_sample(store, trained_on=30, count=10)
    assert len(set(picked)) == 10 and max(picked) < 30 and picked == sorted(picked)
    assert trained_sample(store, trained_on=30, count=10) == picked  # seeded
    assert trained_sample(store, trained_on=8, count=10) == list(range(8))  # all there are


@pytest.mark.parametrize(
    "args, message",
    [
        (["--episodes", "1"], r"--episodes must be a whole number >= 2"),
        (["--envs", "0"], r"--envs must be a whole number >= 1"),
        (["--out", "/no/such/folder/fit.csv"], r"--out '/no/such/folder/fit.csv' must be a \.csv file"),
        (["--demos_dir", "/no/such/demos"], r"--demos_dir '/no/such/demos' is not a folder"),
    ],
)
def test_bad_flags_are_one_line_and_exit_2_before_torch_is_imported(tmp_path, args, message):
    checkpoint = tmp_path / "checkpoint_final.pt"
    checkpoint.write_bytes(b"not read: the flags are refused first")
    code = (
        "import runpy, sys\n"
        f"sys.argv = ['demo_fit.py', '--checkpoint', {str(checkpoint)!r}, *{args!r}]\n"
        "try:\n"
        f"    runpy.run_path({str(SCRIPT)!r}, run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    print('exit', e.code, 'torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.stdout.strip() == "exit 2 False"
    lines = stderr_lines(done.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert re.search(message, lines[0]), lines[0]


def test_a_missing_checkpoint_is_refused(tmp_path, capsys):
    import demo_fit

    with pytest.raises(SystemExit) as e:
        demo_fit.main(["--checkpoint", str(tmp_path / "nope.pt")])
    assert e.value.code == 2
    assert stderr_lines(capsys.readouterr().err) == [
        f"error: --checkpoint {str(tmp_path / 'nope.pt')!r} is not a file"
    ]


# ----------------------------------------------------------------------------- tier 2: real episodes


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """A tiny run trained on 10 bot demos, then DAgger: its final checkpoint and demo store root."""
    import train_mop

    root = tmp_path_factory.mktemp("demo_fit")
    cfg = tiny_config(
        root / "checkpoints", demos=10, demo_updates=4, demos_dir=str(root / "demos"), max_steps=24
    )
    summary = train_mop.main(cfg, progress=False)
    return summary["checkpoints"][-1], root / "demos"


@pytest.mark.slow
def test_with_the_bot_driving_the_own_episodes_are_the_heldout_ones_across_chunks(demo_run, monkeypatch):
    """Stitching a slot's steps across collect() chunks and dropping the layouts past the asked
    ones: with teacher forcing 1 the student's "own" episodes are exactly make_heldout's."""
    from mop import demo_fit
    from mop.experiment import load_policy

    monkeypatch.setattr(demo_fit, "CHUNK", 5)  # episodes of up to 24 steps span several chunks
    policy, encoder, config = load_policy(demo_run[0])
    own, solved, cut = demo_fit.own_episodes(policy, encoder, config, 7, envs=3, teacher_forcing=1.0)
    assert [e.seed for e in own] == sorted(e.seed for e in own) and max(e.seed for e in own) < 7
    solved_seeds = [e.seed for e, s in zip(own, solved) if s]
    held, _ = demo_fit.heldout_episodes(TASK, len(solved_seeds), config["max_steps"])
    assert solved_seeds and [e.seed for e in held] == solved_seeds  # the first layouts the bot solves
    by_seed = {e.seed: e for e in own}
    for episode in held:
        assert episode.equals(by_seed[episode.seed])


@pytest.mark.slow
def test_the_students_own_episodes_are_the_evaluations(demo_run, monkeypatch):
    """Same layouts, same greedy policy: the same lengths and outcomes as eval_mop's episodes."""
    import eval_mop
    from mop import demo_fit
    from mop.experiment import load_policy

    monkeypatch.setattr(demo_fit, "CHUNK", 7)
    policy, encoder, config = load_policy(demo_run[0])
    own, solved, cut = demo_fit.own_episodes(policy, encoder, config, 8, envs=3)
    _, episodes = eval_mop.run_episodes(
        policy,
        encoder,
        config,
        TASK,
        list(range(8)),
        num_envs=4,
        max_steps=config["max_steps"],
        record=False,
        measure_bot_paths=False,
    )
    played = episodes.set_index("episode")
    assert cut == 0 and [e.seed for e in own] == list(range(8))
    assert [len(e) for e in own] == played.length.tolist()
    assert solved.tolist() == played.success.astype(bool).tolist()


@pytest.mark.slow
def test_the_command_prints_and_writes_every_set(demo_run, tmp_path, capsys):
    import demo_fit

    checkpoint, demos = demo_run
    out = tmp_path / "fit.csv"
    demo_fit.main(
        [
            "--checkpoint",
            checkpoint,
            "--episodes",
            "4",
            "--envs",
            "2",
            "--demos_dir",
            str(demos),
            "--out",
            str(out),
        ]
    )
    text = capsys.readouterr().out
    assert "trained: 4 of the 10 demos in" in text
    table = pd.read_csv(out)
    assert table.set.tolist() == [
        "trained",
        "held out",
        "own",
        "own, solved",
        "own, failed",
        "held out − trained",
        "own − held out",
    ]
    assert set(table.checkpoint) == {str(checkpoint)}
    own = table.set_index("set").loc["own"]
    assert own.episodes == 4 and 0 <= own.success <= 1


@pytest.mark.slow
def test_a_run_whose_demo_store_moved_is_one_line(demo_run, tmp_path, capsys):
    import demo_fit

    with pytest.raises(SystemExit) as e:
        demo_fit.main(["--checkpoint", demo_run[0], "--episodes", "2", "--demos_dir", str(tmp_path)])
    assert e.value.code == 2
    (line,) = stderr_lines(capsys.readouterr().err)
    assert line.startswith("error: ") and "no demo store there" in line and "--demos_dir DIR" in line


def test_an_online_run_has_no_trained_row(tiny_run, capsys):
    import demo_fit

    table = demo_fit.main(["--checkpoint", str(tiny_run.checkpoints[-1]), "--episodes", "3", "--envs", "3"])
    assert "an online run: no trained demos" in capsys.readouterr().out
    assert "trained" not in set(table.set) and "own − held out" in set(table.set)
