"""bench/calibration.py (issue 40, item 6): on a small fixed-seed draw, every null test the tool
prints keeps its false-positive rate inside the Monte-Carlo interval around 5% (or below it: a
conservative test), and the tests it withdrew show why (they land above it on the same draws).

    pytest tests/test_calibration.py
"""

import dataclasses

import calibration
import pytest
from calibration_lib import memory_probes
from test_calibration_analyses import NEW, entry  # their draws are that file's tests
from test_calibration_metrics import NEW as METRICS  # and that file's
from test_calibration_tables import NEW as TABLES  # and that file's

from eval_mop import wilson_interval

DRAWS = 200
SEED = 0
# measured in their own files
OWN = {n for g in (NEW, TABLES, METRICS) for names in g.values() for n in names}
# the withdrawn tests, measured on the same draws: each must land above the band (so this test can fail)
WITHDRAWN = (
    "generative_any_of_9_targets_unadjusted",
    "duplicated_seeds_counted",
    "mcnemar_same_recipe_different_networks",
)


def band(draws: int) -> tuple[float, float]:
    """The Monte-Carlo 95% interval of a rate of exactly 5% over `draws` draws."""
    return wilson_interval(round(0.05 * draws), draws)


# The cheap null tests, one test item each so that pytest-xdist spreads them over the workers.
CHEAP = [
    e.name
    for e in calibration.ENTRIES
    if e.role == "null" and e.kind == "rejection" and e.cost <= 1 and not e.outcome and e.name not in OWN
]
# Claims rows that draw fresh episodes only so that `--only NAME` reproduces their recorded row: the
# rate needs no truth, so here they draw without them (the same distribution).
NO_FRESH = {"memory_probe_door_null_claims": memory_probes.probe_draw("door", 0.0, fresh=False)}
# memory_probe.py's tables cost ~1.6 s (door) and ~0.25 s (key_match) a draw (bootstrapped AUCs) against
# milliseconds for the rest: half the draws here (the band's top 11.2% instead of 9.0%; docs/calibration.md
# measures them at 1,000 draws: 0.009 and 0.015 of a nominal 0.025).
FEWER = {"memory_probe_door_null_claims": DRAWS // 2, "memory_probe_key_match_null_claims": DRAWS // 2}


def test_the_small_draw_covers_the_null_tests():
    assert len(CHEAP) >= 10 and set(NO_FRESH) <= set(CHEAP) and set(FEWER) <= set(CHEAP)


@pytest.mark.slow
@pytest.mark.parametrize("name", CHEAP)
def test_every_null_test_holds_its_rate_on_a_small_draw(name):
    e = entry(name)
    if name in NO_FRESH:
        e = dataclasses.replace(e, simulate=NO_FRESH[name])
    m = calibration.measure(e, FEWER.get(name, DRAWS), SEED)
    assert m.rate <= band(m.draws)[1], (name, m.rate, band(m.draws))


@pytest.mark.slow
@pytest.mark.parametrize("name", WITHDRAWN)
def test_every_withdrawn_test_lands_above_the_band(name):
    e = entry(name)
    m = calibration.measure(e, DRAWS if e.cost <= 1 else DRAWS * 2, SEED)
    assert m.rate > band(m.draws)[1], (name, m.rate)


def test_an_entry_is_reproducible_and_bad_flags_are_refused(tmp_path, capsys):
    e = entry("paired_t_identical_recipes")
    assert calibration.measure(e, 60, 3).hits == calibration.measure(e, 60, 3).hits
    out = tmp_path / "c.md"
    for argv in (["--only", "no_such_entry"], ["--draws", "10"]):
        with pytest.raises(SystemExit) as e:
            calibration.main([*argv, "--out", str(out)])
        assert e.value.code == 2 and capsys.readouterr().err.startswith("error: ") and not out.exists()
    summary = calibration.main(["--draws", "50", "--only", "wilson_success_interval", "--out", str(out)])
    assert (
        "wilson_success_interval" in out.read_text()
        and summary["results"]["wilson_success_interval"][3] == 50
    )


def test_merge_replaces_only_the_rows_asked_and_records_the_command(tmp_path, capsys):
    out = tmp_path / "c.md"
    argv = ["--draws", "50", "--out", str(out)]
    calibration.main([*argv, "--only", "wilson_success_interval,paired_t_identical_recipes"])
    before = out.read_text()
    merge = ["--draws", "60", "--out", str(out), "--only", "missing_seed_dropped,wilson_success_interval"]
    calibration.main([*merge, "--merge"])
    after = out.read_text()
    rows = [line for line in after.splitlines() if line.startswith("| `")]
    assert [r.split("`")[1] for r in rows] == [  # registry order
        "paired_t_identical_recipes",
        "missing_seed_dropped",
        "wilson_success_interval",
    ]
    kept = next(line for line in before.splitlines() if line.startswith("| `paired_t_identical_recipes`"))
    assert kept in rows  # untouched
    assert rows[2].endswith("| 60 | within MC error |") and rows[2] not in before  # replaced
    assert "--only missing_seed_dropped,wilson_success_interval --merge  # merged: 2 rows, " in after
    assert after.count("python bench/calibration.py") == 2 and "first command's entries" in after
    for bad in (["--only", "wilson_success_interval", "--merge", "--seed", "1"], ["--merge"]):
        with pytest.raises(SystemExit) as e:
            calibration.main([*argv, *bad])
        assert e.value.code == 2 and capsys.readouterr().err.startswith("error: ")
    assert out.read_text() == after  # a refused merge writes nothing


def test_a_merge_keeps_rows_merged_by_another_run_while_it_measured(tmp_path, monkeypatch):
    """Two merges at once (a long entry measured in the background while another is merged): the
    report is read again before writing, so the first to finish does not drop the other's rows."""
    out = tmp_path / "c.md"
    calibration.main(["--draws", "50", "--out", str(out), "--only", "wilson_success_interval"])
    measure = calibration.measure

    def measure_while_another_merges(entry, draws, seed):
        if entry.name == "paired_t_identical_recipes":  # the other run lands its row meanwhile
            monkeypatch.setattr(calibration, "measure", measure)
            calibration.main(
                ["--draws", "50", "--out", str(out), "--only", "missing_seed_dropped", "--merge"]
            )
        return measure(entry, draws, seed)

    monkeypatch.setattr(calibration, "measure", measure_while_another_merges)
    calibration.main(["--draws", "50", "--out", str(out), "--only", "paired_t_identical_recipes", "--merge"])
    names = [line.split("`")[1] for line in out.read_text().splitlines() if line.startswith("| `")]
    assert names == ["paired_t_identical_recipes", "missing_seed_dropped", "wilson_success_interval"]
