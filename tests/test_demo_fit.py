"""bench/demo_fit.py and mop/demo_fit.py (issue 41's diagnosis): the three labelled sets are the
episodes they say they are (the student's own, stitched across collection chunks, equal the bot's
held-out episodes when the bot drives, and the evaluation's episodes when the student does), the
table's numbers are the sets' per-step means, and bad input is refused before torch is imported."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT, runs_off, stderr_lines, tiny_config

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
        (
            ["--breakdown", "/no/such/folder/b.csv"],
            r"--breakdown '/no/such/folder/b.csv' must be a \.csv file",
        ),
        (["--breakdown", "b.txt"], r"--breakdown 'b.txt' must be a \.csv file in an existing folder"),
        (["--out", "x.csv", "--breakdown", "x.csv"], r"--out and --breakdown name the same file"),
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


def test_a_targets_kind_is_read_from_its_spelling():
    from mop.demo_fit import target_kind

    assert [target_kind(t) for t in ("red key", "key", "yellow door (3,5)", "(4,2)", "")] == [
        "key",
        "key",
        "door",
        "position",
        "",
    ]


def test_a_remembered_targets_age_is_the_steps_since_any_matching_object_was_in_view():
    """An instruction's description matches several objects: the most recent sight counts; a
    position, or an object never in view, has no age; the group names the distance and the age."""
    from types import SimpleNamespace

    from mop.demo_fit import _age, _seen_group

    red, blue = SimpleNamespace(type="key"), SimpleNamespace(type="key")
    seen = {id(red): 3, id(blue): 20}
    assert _age(SimpleNamespace(obj_set=[red, blue]), 25, seen) == 5
    assert _age(red, 25, seen) == 22 and _age((4, 2), 25, seen) is None
    assert _age(SimpleNamespace(type="door"), 25, seen) is None
    assert _seen_group("target out of view", 9, 12) == "target out of view · 8+ to go · seen 11-40 ago"
    assert _seen_group("target out of view", 5, 41) == "target out of view · 4-7 to go · seen 41+ ago"
    assert _seen_group("target out of view", 2, None) == "target out of view · 1-3 to go · never seen"
    assert _seen_group("target in view", 2, 0) == "target in view · 1-3 to go"
    assert _seen_group("exploring", 2, None) == "exploring"


def test_the_unfit_labels_figure_draws_both_views_at_each_distance_and_says_what_its_whiskers_are():
    from mop.plot_style import figure_note
    from mop.subgoal_plots import plot_unfit_labels

    def row(by, group, steps, errors):
        acc = 1 - errors / steps
        return {"set": "held out", "by": by, "group": group, "steps": steps, "errors": errors,
                "step_share": steps / 400, "error_share": errors / 20, "accuracy": acc,
                "accuracy_ci_low": acc - 0.01, "accuracy_ci_high": min(1.0, acc + 0.01)}  # fmt: skip

    table = pd.DataFrame(
        [
            row("action", "forward", 400, 20),
            row("view", "exploring", 100, 1),
            row("view", "target in view", 150, 2),
        ]
        + [row("view", "target out of view", 150, 17)]
        + [
            row("view, steps to go", f"target {v} · {b} to go", 50, e)
            for v, e in (("in view", 1), ("out of view", 6))
            for b in ("1-3", "4-7", "8+")
        ]
    )
    for layout in ("screen", "paper"):
        title = "BabyAI-GoToImpUnlock-v0, update 5120: the bot's labels the student does not fit"
        fig = plot_unfit_labels(table, title=title, layout=layout)
        left, right = fig.axes
        assert len(left.patches) == 6 and len(right.patches) == 6  # 3 distances x 2 views; 3 views x 2 shares
        assert [t.get_text() for t in left.get_xticklabels()] == ["1-3", "4-7", "8+"]
        assert "400 labelled steps, 20 errors" in figure_note(fig) and "95% Wilson" in figure_note(fig)
        # every drawn label, title and tick inside the figure (the long y label was cut off under a title)
        assert not runs_off(fig, slack=0.0), layout
    # an interval end a rounding error inside its point (a table written before the fix) still draws
    perfect = table["group"] == "target in view · 1-3 to go"
    table.loc[perfect, ["errors", "accuracy", "accuracy_ci_high"]] = [0, 1.0, 1.0 - 1e-16]
    assert len(plot_unfit_labels(table).axes[0].patches) == 6


def test_the_proportions_interval_is_wilsons_at_the_effective_size():
    """Equal clusters: no design effect, Wilson's interval for the pooled steps (by hand); clusters
    that differ widen it; all right: the upper end is 1 and the lower Wilson's, never NaN."""
    from mop.routing_analysis import clustered_proportion

    p, low, high = clustered_proportion(np.full(50, 0.9), np.full(50, 10))
    n, z = 500, 1.959963984540054
    centre = (0.9 + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(0.9 * 0.1 / n + z * z / (4 * n * n))
    assert p == pytest.approx(0.9) and (low, high) == pytest.approx((centre - half, centre + half))
    p2, low2, high2 = clustered_proportion(np.tile([0.8, 1.0], 25), np.full(50, 10))
    assert p2 == pytest.approx(0.9) and low2 < low and high2 > high
    p3, low3, high3 = clustered_proportion(np.ones(20), np.full(20, 3))
    assert p3 == 1.0 and high3 == 1.0 and low3 == pytest.approx(60 / (60 + z * z))
    # exactly, at both ends (a plot's whiskers, high - p and p - low, must not go below 0)
    for steps in (1, 3, 7, 27, 405):
        assert clustered_proportion(np.ones(5), np.full(5, steps))[2] == 1.0
        assert clustered_proportion(np.zeros(5), np.full(5, steps))[1] == 0.0


def test_the_breakdown_counts_each_groups_steps_errors_and_their_cost():
    """Two episodes, hand-counted: steps and errors per group, shares of the set's, costly errors
    (cost > 0), their median, the errors after which the bot did not finish; an episode whose
    replay failed its control (None) counts nowhere."""
    from mop.demo_fit import BREAKDOWNS, Scored, breakdown_rows

    correct = [np.array([1, 0, 1, 0]), np.array([0, 1]), np.array([0, 0, 0])]
    scored = Scored("held out", np.array([4, 2, 3]), np.zeros(3), np.array([2, 1, 0]))
    scored.step_correct, scored.step_ce = (
        correct,
        [np.array([0.1, 2.0, 0.1, 1.0]), np.array([3.0, 0.2]), np.ones(3)],
    )

    def episode(subgoal, cost):
        n = len(subgoal)
        return (
            {by: np.array(subgoal) for by in BREAKDOWNS}
            | {"cost": np.array(cost, float)}
            | {"action": np.array(["forward"] * n)}
        )

    groups = [
        episode(["A", "A", "B", "B"], [np.nan, 2.0, np.nan, 0.0]),
        episode(["B", "A"], [np.inf, np.nan]),
        None,
    ]
    rows = breakdown_rows(scored, groups)
    sub = rows[rows["by"] == "subgoal"].set_index("group")
    assert sub.loc["A", "steps"] == 3 and sub.loc["B", "steps"] == 3
    assert sub.loc["A", "errors"] == 1 and sub.loc["B", "errors"] == 2
    assert sub.loc["B", "error_share"] == pytest.approx(2 / 3) and sub.loc[
        "A", "step_share"
    ] == pytest.approx(0.5)
    assert sub.loc["A", "costly_errors"] == 1 and sub.loc["A", "costly_median_steps"] == 2.0
    assert sub.loc["B", "costly_errors"] == 1 and sub.loc["B", "unfinished"] == 1  # cost 0: not costly
    assert sub.loc["A", "accuracy"] == pytest.approx(2 / 3) and sub.loc["B", "ce"] == pytest.approx(4.1 / 3)
    assert sub.loc["A", "episodes"] == 2
    action = rows[rows["by"] == "action"].set_index("group")
    assert action.loc["forward", "errors"] == 3 and action.loc["forward", "steps"] == 6
    for g in groups[:2]:
        g["cost"] = None  # not costed (bot_subgoals without the student): no cost columns
    assert "costly_errors" not in breakdown_rows(scored, groups).columns
    perfect = Scored("held out", np.array([2]), np.zeros(1), np.array([2]))
    perfect.step_correct, perfect.step_ce = [np.array([1, 1])], [np.zeros(2)]
    rows = breakdown_rows(perfect, [episode(["A", "A"], [np.nan, np.nan])])  # no error: still costed
    assert rows.loc[0, "costly_errors"] == 0 and rows.loc[0, "accuracy"] == 1.0


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
    # the bot's episodes also record its targets, subgoals, key and door places; the student's do not
    recorded = ("target", "subgoal", "key", "door_place")
    for episode in held:
        for name in recorded:
            assert getattr(episode, name) is not None and getattr(by_seed[episode.seed], name) is None, name
        bare = dataclasses.replace(episode, **dict.fromkeys(recorded))
        assert bare.equals(by_seed[episode.seed])


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


@pytest.mark.slow
def test_the_bots_replay_is_its_own_route_and_an_errors_cost_is_measured_from_a_fork():
    """On Unlock: the replayed bot takes every stored label; taking the bot's own action at step t
    and letting it finish costs exactly the rest of its route (the fork control: a deep copy of
    env and bot fails it, the copied bot stops seeing); turning away from the door it should open
    costs 2 steps (turn back, then open); a stored
    label changed by hand fails the replay's control and the episode is left out."""
    from mop.babyai_env import make_env
    from mop.demo_fit import _steps_to_finish, bot_subgoals, heldout_episodes

    task = "BabyAI-Unlock-v0"
    held, _ = heldout_episodes(task, 3, None)
    env = make_env(task, None)
    for ep in held:
        for t in range(0, len(ep.label), max(1, len(ep.label) // 6)):
            assert _steps_to_finish(env, ep, t, int(ep.label[t])) == len(ep.label) - t
    student = [ep.label.copy() for ep in held]
    t = len(held[0].label) - 1  # the last step toggles the locked door: turn left instead
    assert held[0].label[t] == 5
    student[0][t] = 0
    groups, left = bot_subgoals(task, held, None, student)
    assert left == 0 and all(g is not None for g in groups)
    assert np.isnan(groups[1]["cost"]).all() and groups[0]["cost"][t] == 2  # turn back, then toggle
    assert np.isnan(np.delete(groups[0]["cost"], t)).all()
    for ep, g in zip(held, groups):
        assert len(g["subgoal"]) == len(ep.label) and g["moment"][0] == "starts a subgoal"
        assert set(g["view"]) <= {"target in view", "target out of view", "exploring", "at the object"}
        assert g["subgoal"][-1] == "Open door"  # Unlock ends by opening the locked door
    with pytest.raises(ValueError, match="bot-driven episodes only"):
        bot_subgoals(task, held, None, student, taken=student)
    taken, _ = bot_subgoals(task, held, None, taken=[ep.label for ep in held])  # the bot's own actions
    assert all(g["subgoal"].tolist() == h["subgoal"].tolist() for g, h in zip(taken, groups))
    tampered = held[2]
    label = tampered.label.copy()
    label[len(label) // 2] = (label[len(label) // 2] + 1) % 3
    tampered = type(tampered)(
        tampered.image, tampered.direction, tampered.carrying, label, tampered.mission, tampered.seed
    )
    groups, left = bot_subgoals(task, [held[0], tampered], None)
    assert left == 1 and groups[1] is None and groups[0] is not None


@pytest.mark.slow
def test_the_breakdown_accounts_for_every_unfit_label_of_the_fit_table(demo_run, tmp_path, capsys):
    import demo_fit

    checkpoint, demos = demo_run
    out, parts = tmp_path / "fit.csv", tmp_path / "breakdown.csv"
    demo_fit.main(
        ["--checkpoint", checkpoint, "--episodes", "4", "--envs", "2", "--demos_dir", str(demos)]
        + ["--out", str(out), "--breakdown", str(parts)]
    )
    text = capsys.readouterr().out
    assert "held out: where its" in text
    update = pd.read_csv(out)["update"].iloc[0]
    figure = tmp_path / f"breakdown_update{update}.png"
    assert f"wrote {figure}" in text and figure.read_bytes()[:4] == b"\x89PNG"
    fit, breakdown = pd.read_csv(out).set_index("set"), pd.read_csv(parts)
    assert (
        {"trained", "held out"} <= set(breakdown.set) <= {"trained", "held out", "own, solved", "own, failed"}
    )
    own = breakdown[breakdown.set.str.startswith("own") & (breakdown.by == "action")]
    assert own.steps.sum() == fit.loc["own", "labelled_steps"]  # the student's replay reproduced every step
    assert own.costly_errors.isna().all()  # no cost on the student's own states

    for name in ("trained", "held out"):
        rows = breakdown[breakdown.set == name]
        unfit = round(fit.loc[name, "labelled_steps"] * (1 - fit.loc[name, "accuracy"]))
        for by, group in rows.groupby("by"):
            assert group.steps.sum() == fit.loc[name, "labelled_steps"], by
            assert group.errors.sum() == unfit, by


@pytest.mark.slow
def test_two_checkpoints_of_one_update_get_a_figure_each(demo_run, tmp_path, capsys):
    """Two runs' checkpoints at the same update (a recipe against another): neither figure
    overwrites the other."""
    import demo_fit

    checkpoint, demos = demo_run
    parts = tmp_path / "parts.csv"
    demo_fit.main(
        ["--checkpoint", checkpoint, checkpoint, "--episodes", "3", "--envs", "2", "--demos_dir", str(demos)]
        + ["--breakdown", str(parts)]
    )
    update = pd.read_csv(parts)["update"].iloc[0]
    assert sorted(p.name for p in tmp_path.glob("*.png")) == [
        f"parts_0_update{update}.png",
        f"parts_1_update{update}.png",
    ]
