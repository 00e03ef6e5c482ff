"""--stop_unless (mop/gate.py): a stopping rule fixed before the run. Its text and its refusals,
its verdict on rows where the means are known, a tiny run that stops at its gate (and one that
passes), the refusal to resume a failed gate, training on past it with --stop_unless '', the key
left out of the recipe, and the callers that skip a stopped run (bench/levels.py, sweep.py)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import sys

import pytest
import yaml

import train_mop
from conftest import TINY_PRESET, stderr_lines, tiny_cli, tiny_config
from mop import gate
from mop.experiment import ConfigError, load_config, read_metrics, recipe_keys, resume_config

TASK = "BabyAI-GoToRedBallGrey-v0"
FAILS = "1-3: train/ce < 0"  # a cross-entropy is never below 0
PASSES = "1-3: train/ce < 1000, train/loss >= -1000"


def run_folder(checkpoint_dir):
    return checkpoint_dir / TASK / "trial_0"


# ----------------------------------------------------------------------------- the text


@pytest.mark.parametrize(
    "spec, canonical",
    [
        ("3000-3072: train/aux_match < 0.05, train/aux_door_place < 0.5", None),
        (
            "3000 - 3072 :train/aux_match<0.05 and train/aux_door_place<0.5",
            "3000-3072: train/aux_match < 0.05, train/aux_door_place < 0.5",
        ),
        ("5-5: probe/success >= 0.9", None),
        ("1-10: train/ce <= 1e-3", "1-10: train/ce <= 0.001"),
        ("1-10: train/ce < 0.0512345678", None),  # no digit lost to the canonical text
    ],
)
def test_a_gate_reads_back_as_its_canonical_text(spec, canonical):
    parsed = gate.parse(spec)
    assert parsed.spec == (canonical or spec)
    assert gate.parse(parsed.spec) == parsed


@pytest.mark.parametrize(
    "spec, match",
    [
        ("train/ce < 1", r"must read 'A-B: metric < x, \.\.\.'"),
        ("10-5: train/ce < 1", r"the window 10-5 must have 1 <= A <= B"),
        ("0-5: train/ce < 1", r"the window 0-5 must have 1 <= A <= B"),
        ("1-5:", r"no condition after the window"),
        ("1-5: train/ce = 1", r"'train/ce = 1' is not 'metric <\|<=\|>\|>= number'"),
        ("1-5: train/ce < one", r"'train/ce < one' must compare with a finite number"),
        ("1-5: train/ce < nan", r"must compare with a finite number"),
        ("1-5: train/ce < inf", r"must compare with a finite number"),
        ("1-5: train/ce < 1,", r"'' is not 'metric"),
    ],
)
def test_a_bad_gate_is_refused_naming_what_is_wrong(spec, match):
    with pytest.raises(ConfigError, match=match):
        gate.parse(spec)


def test_the_config_checks_the_window_against_the_run_and_its_logging(tmp_path):
    assert tiny_config(tmp_path, stop_unless="1-3: train/ce < 1").stop_unless == "1-3: train/ce < 1"
    assert tiny_config(tmp_path, stop_unless="").stop_unless is None  # '' and null: no gate
    assert tiny_config(tmp_path, stop_unless="null").stop_unless is None
    # YAML (a config file, bench/levels.py's --set) reads "A-B: ..." unquoted as a one-key mapping
    assert tiny_config(tmp_path, stop_unless={"1-3": "train/ce < 1"}).stop_unless == "1-3: train/ce < 1"
    with pytest.raises(ConfigError, match=r"the window ends at update 9, after num_updates \(6\)"):
        tiny_config(tmp_path, stop_unless="1-9: train/ce < 1")
    with pytest.raises(ConfigError, match=r"must end on a logged update .* got 4"):
        tiny_config(tmp_path, stop_unless="1-4: train/ce < 1")  # tiny logs every 3 updates
    assert tiny_config(tmp_path, stop_unless="1-6: train/ce < 1").stop_unless  # num_updates logs
    bc = dict(demos=10, demo_updates=4, num_updates=8, max_steps=12)
    assert tiny_config(tmp_path, stop_unless="1-4: train/ce < 1", **bc).stop_unless  # BC's last update logs
    with pytest.raises(ConfigError, match=r"stop_unless must be a text"):
        tiny_config(tmp_path, stop_unless=3)


def test_the_gate_is_not_part_of_the_recipe(tmp_path):
    with_gate = tiny_config(tmp_path, stop_unless=FAILS)
    assert recipe_keys(with_gate) == recipe_keys(tiny_config(tmp_path))


def test_a_gate_of_stages_reads_back_and_its_windows_must_end_in_order(tmp_path):
    parsed = gate.parse("1-3: train/ce<1;2-6: train/loss >= 0 and train/ce < 2")
    assert parsed.spec == "1-3: train/ce < 1; 2-6: train/loss >= 0, train/ce < 2"
    assert [(s.start, s.end) for s in parsed.stages] == [(1, 3), (2, 6)] and gate.parse(parsed.spec) == parsed
    with pytest.raises(
        ConfigError, match=r"each stage's window must end after the one before, got 1-6 then 1-3"
    ):
        gate.parse("1-6: train/ce < 1; 1-3: train/ce < 1")
    with pytest.raises(
        ConfigError, match=r"got '1-3: train/ce < 1; train/ce < 2' \(the stage 'train/ce < 2'\)"
    ):
        gate.parse("1-3: train/ce < 1; train/ce < 2")
    # a config file's mapping, one window a key, is the same gate
    staged = {"1-3": "train/ce < 1", "4-6": "train/ce < 2"}
    assert tiny_config(tmp_path, stop_unless=staged).stop_unless == "1-3: train/ce < 1; 4-6: train/ce < 2"
    with pytest.raises(ConfigError, match=r"the window ends at update 9, after num_updates \(6\)"):
        tiny_config(tmp_path, stop_unless="1-3: train/ce < 1; 4-9: train/ce < 1")
    with pytest.raises(ConfigError, match=r"must end on a logged update .* got 5"):
        tiny_config(tmp_path, stop_unless="1-3: train/ce < 1; 4-5: train/ce < 1")


# ----------------------------------------------------------------------------- the verdict


def test_the_verdict_is_each_metrics_mean_over_the_window_inclusive():
    rows = [{"update": u, "train/a": float(u), "train/b": 1.0} for u in range(25, 201, 25)]
    rule = gate.parse("50-100: train/a < 76, train/b >= 1")
    verdict = rule.verdict(rows)
    assert verdict["rows"] == 3 and verdict["window"] == [50, 100]  # updates 50, 75, 100
    first, second = verdict["conditions"]
    assert first["mean"] == pytest.approx(75.0) and first["holds"] and first["rows"] == 3
    assert second["mean"] == 1.0 and second["holds"]
    assert verdict["passed"]
    assert not gate.parse("50-100: train/a < 75").verdict(rows)["passed"]  # 75 < 75 is false
    assert gate.parse("50-100: train/a <= 75").verdict(rows)["passed"]


def test_a_metric_not_logged_or_nan_fails_its_condition():
    rows = [{"update": 3, "train/a": math.nan, "train/b": 0.5}]
    verdict = gate.parse("1-3: train/a < 1, train/c < 1, train/b < 1").verdict(rows)
    holds = [c["holds"] for c in verdict["conditions"]]
    assert holds == [False, False, True] and not verdict["passed"]
    assert verdict["conditions"][1]["mean"] is None
    line = gate.describe(verdict)
    assert line.startswith("gate failed over updates 1-3: ") and "train/c not logged (fails < 1)" in line


def test_a_staged_verdict_is_its_last_ended_stage_with_every_stage_so_far():
    rows = [{"update": u, "train/a": float(u)} for u in range(25, 201, 25)]
    rule = gate.parse("25-50: train/a < 100; 150-200: train/a < 100")
    early = rule.verdict(rows, 100)
    assert early["window"] == [25, 50] and early["passed"] and len(early["stages"]) == 1
    assert early["stop_unless"] == rule.spec  # the whole gate's text, which resume compares
    late = rule.verdict(rows)
    assert late["window"] == [150, 200] and not late["passed"]
    assert [s["passed"] for s in late["stages"]] == [True, False]
    assert late["conditions"][0]["mean"] == pytest.approx(175.0)
    with pytest.raises(ValueError, match="no stage"):
        rule.verdict(rows, 49)


# ----------------------------------------------------------------------------- a run


def test_a_failed_gate_stops_the_run_at_its_end_with_a_checkpoint_and_its_verdict(tmp_path, capsys):
    cfg = tiny_config(tmp_path / "ck", stop_unless=FAILS)
    summary = train_mop.main(cfg, progress=False)
    folder = run_folder(tmp_path / "ck")
    assert summary["stopped_at_gate"] == 3
    assert (folder / "checkpoint_3.pt").exists()
    assert not (folder / "checkpoint_6.pt").exists() and not (folder / "checkpoint_final.pt").exists()
    assert [r["update"] for r in read_metrics(folder / "metrics.jsonl")] == [3]
    verdict = json.loads((folder / gate.GATE_FILE).read_text())
    assert verdict["passed"] is False and verdict["update"] == 3 and verdict["stop_unless"] == FAILS
    assert verdict["conditions"][0]["mean"] > 0
    out = capsys.readouterr().out
    assert re.search(r"gate failed over updates 1-3: train/ce [0-9.]+ \(fails < 0\); the run stops here", out)


def test_a_passed_gate_trains_on_to_the_end(tmp_path):
    cfg = tiny_config(tmp_path / "ck", stop_unless=PASSES)
    summary = train_mop.main(cfg, progress=False)
    folder = run_folder(tmp_path / "ck")
    assert summary["stopped_at_gate"] is None and (folder / "checkpoint_final.pt").exists()
    verdict = gate.read_verdict(folder)
    assert verdict["passed"] and [c["holds"] for c in verdict["conditions"]] == [True, True]


def test_a_failed_gate_does_not_resume_and_trains_on_without_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert tiny_cli(monkeypatch, "--checkpoint_dir", "ck", "--stop_unless", FAILS) is None
    capsys.readouterr()
    assert tiny_cli(monkeypatch, "--checkpoint_dir", "ck", "--resume") == 2  # the checkpoint's gate
    lines = stderr_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "--resume: " in lines[0] and "stopped at its gate: gate failed" in lines[0]
    assert "resume with --stop_unless ''" in lines[0]
    folder = tmp_path / "ck" / TASK / "trial_0"
    assert not (folder / "checkpoint_final.pt").exists()
    # '' lifts it (the key may change on --resume): the run goes on to num_updates
    located = {"checkpoint_dir": "ck", "stop_unless": ""}
    assert resume_config(TINY_PRESET, located).stop_unless is None
    assert tiny_cli(monkeypatch, "--checkpoint_dir", "ck", "--resume", "--stop_unless", "") is None
    assert (folder / "checkpoint_final.pt").exists()
    assert [r["update"] for r in read_metrics(folder / "metrics.jsonl")] == [3, 6]


@pytest.mark.parametrize(
    "spec, stop, judged",
    [
        ("1-3: train/ce < 1000; 4-6: train/ce < 0", 6, [True, False]),  # the second stage stops it
        ("1-3: train/ce < 0; 4-6: train/ce < 1000", 3, [False]),  # the first: the second never judged
    ],
)
def test_a_staged_gate_judges_each_stage_at_its_end_and_stops_at_the_first_failed(
    tmp_path, monkeypatch, capsys, spec, stop, judged
):
    monkeypatch.chdir(tmp_path)
    assert (
        tiny_cli(monkeypatch, "--checkpoint_dir", "ck", "--num_updates", "9", "--stop_unless", spec) is None
    )
    out = capsys.readouterr().out
    folder = tmp_path / "ck" / TASK / "trial_0"
    assert (folder / f"checkpoint_{stop}.pt").exists() and not (folder / "checkpoint_final.pt").exists()
    assert [r["update"] for r in read_metrics(folder / "metrics.jsonl")] == list(range(3, stop + 1, 3))
    verdict = gate.read_verdict(folder)
    assert verdict["window"][1] == stop and verdict["update"] == stop and verdict["stop_unless"] == spec
    assert [s["passed"] for s in verdict["stages"]] == judged
    assert out.count("gate passed over updates") == judged.count(True)
    assert f"gate failed over updates {stop - 2}-{stop}: " in out and "the run stops here" in out
    assert gate.stopped(spec, folder) is not None
    assert tiny_cli(monkeypatch, "--checkpoint_dir", "ck", "--resume") == 2
    lines = stderr_lines(capsys.readouterr().err)
    assert len(lines) == 1 and f"or fork from checkpoint_{stop}.pt" in lines[0]


def test_a_run_past_a_passed_stage_resumes_under_that_gate_and_not_under_a_changed_one(tmp_path):
    spec = "1-3: train/ce < 1000; 7-9: train/ce < 1000"
    cfg = tiny_config(tmp_path / "ck", stop_unless=spec, num_updates=9, checkpoint_interval=3)
    train_mop.main(cfg, progress=False)
    folder = run_folder(tmp_path / "ck")
    assert [s["passed"] for s in gate.read_verdict(folder)["stages"]] == [True, True]
    assert gate.refusal(spec, folder, 6) is None  # its first stage was judged at 3 under this gate
    changed = "1-3: train/ce < 1000; 7-9: train/ce < 1"  # a second stage edited after the first ended
    assert "a gate is set before its window ends" in gate.refusal(changed, folder, 6)
    assert gate.refusal("7-9: train/ce < 1", folder, 6) is None  # no window ended by 6: not late


def test_a_verdict_without_its_checkpoint_is_judged_again(tmp_path):
    """Killed between gate.json and checkpoint_B.pt: the run resumes from an earlier checkpoint and
    judges its gate again at B, rather than being refused on a verdict its files do not back."""
    rule = gate.parse("1-6: train/ce < 0")
    cfg = tiny_config(tmp_path / "ck", stop_unless=rule.spec, checkpoint_interval=3, num_updates=6)
    train_mop.main(dataclasses.replace(cfg, num_updates=3, stop_unless=None), progress=False)
    folder = run_folder(tmp_path / "ck")
    gate.judge(rule, folder, 6)  # a failed verdict at 6 with no checkpoint_6.pt beside it
    assert gate.stopped(rule.spec, folder) is None and gate.refusal(rule.spec, folder, 3) is None
    summary = train_mop.main(cfg, resume=True, progress=False)
    assert summary["stopped_at_gate"] is None and (folder / "checkpoint_final.pt").exists()
    assert gate.read_verdict(folder)["update"] == 6 and gate.stopped(rule.spec, folder) is not None


def test_a_gate_set_after_its_window_is_refused_on_resume_and_fork(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert tiny_cli(monkeypatch, "--checkpoint_dir", "ck", "--num_updates", "3") is None
    capsys.readouterr()
    late = ["--stop_unless", "1-3: train/ce < 1"]
    assert tiny_cli(monkeypatch, "--checkpoint_dir", "ck", "--resume", "--num_updates", "6", *late) == 2
    lines = stderr_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "a gate is set before its window ends" in lines[0]
    parent = tmp_path / "ck" / TASK / "trial_0" / "checkpoint_3.pt"
    assert tiny_cli(monkeypatch, "--checkpoint_dir", "fork", "--fork_from", str(parent), *late) == 2
    lines = stderr_lines(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].startswith(
        "error: --fork_from: stop_unless's window ends at update 3"
    )


def test_a_misspelt_metric_is_refused_at_the_first_row(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert tiny_cli(monkeypatch, "--checkpoint_dir", "ck", "--stop_unless", "1-6: train/cee < 1") == 2
    lines = stderr_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "stop_unless names 'train/cee' (did you mean train/ce" in lines[0]
    assert "which update 3's metrics row does not log" in lines[0]


# ----------------------------------------------------------------------------- callers


def test_levels_and_sweep_skip_a_run_stopped_at_its_gate(tmp_path, capsys):
    sys.path.insert(0, str(TINY_PRESET.parent.parent / "bench"))
    import levels

    import sweep

    cfg = tiny_config(tmp_path / "ck", stop_unless=FAILS)
    train_mop.main(cfg, progress=False)
    capsys.readouterr()
    assert levels.gate_stopped(TASK, cfg)
    out = capsys.readouterr().out
    assert out.startswith(f"[{TASK}] gate failed over updates 1-3") and "no row (gate.json)" in out
    assert not levels.gate_stopped(TASK, tiny_config(tmp_path / "ck"))  # no gate asked: not stopped
    # the window is checked against the bench's length (--frames), not the recipe file's num_updates
    bench = levels.bench_config(TASK, TINY_PRESET, {"stop_unless": "1-9: train/ce < 1"}, frames=320)
    assert (bench.num_updates, bench.stop_unless) == (10, "1-9: train/ce < 1")
    staged = (
        "1-3: train/ce < 1; 4-9: train/ce < 1"  # the l1x2 command's shape: --set 'stop_unless="...; ..."'
    )
    sets = levels.parse_sets([f'stop_unless="{staged}"'], argparse.ArgumentParser())
    assert levels.bench_config(TASK, TINY_PRESET, sets, frames=320).stop_unless == staged
    done = sweep.train_one({"checkpoint_dir": str(tmp_path / "ck"), "stop_unless": FAILS}, TINY_PRESET)
    assert done["skipped"].startswith("gate failed over updates 1-3")
    assert load_config(TINY_PRESET, {"stop_unless": FAILS}).stop_unless == FAILS


def test_a_gate_at_the_end_of_bc_stops_before_dagger_starts(tmp_path):
    """The doorplace recipes' gate: judged on BC's last update, a failure leaves DAgger unstarted."""
    bc = dict(demos=10, demo_updates=4, num_updates=8, max_steps=12, buffer_episodes=20)
    cfg = tiny_config(
        tmp_path / "ck", demos_dir=str(tmp_path / "demos"), stop_unless="1-4: train/ce < 0", **bc
    )
    summary = train_mop.main(cfg, progress=False)
    folder = run_folder(tmp_path / "ck")
    assert summary["stopped_at_gate"] == 4 and (folder / "checkpoint_4.pt").exists()
    rows = read_metrics(folder / "metrics.jsonl")
    assert [r["update"] for r in rows] == [3, 4] and all(r.get("demos/epoch") is not None for r in rows)
    assert not list(folder.glob("buffer_*"))  # no DAgger update ran, none saved its buffer


def test_lmc_refuses_a_gate_and_modal_skips_a_run_stopped_at_one(tmp_path):
    import lmc
    import modal_app

    with pytest.raises(lmc.LMCError, match="stop_unless stops a single run at its gate"):
        lmc.build_experiment({"stop_unless": FAILS}, config_path=TINY_PRESET, results_root=tmp_path)
    root = tmp_path / "modal"
    train_mop.main(tiny_config(root, stop_unless=FAILS), progress=False)
    overrides = yaml.safe_load(TINY_PRESET.read_text())  # modal_app's jobs are keys over config.yaml
    out = modal_app._train_body({**overrides, "stop_unless": FAILS}, str(root))
    assert out["skipped"].startswith("gate failed over updates 1-3") and "error" not in out
