"""bench/calibration_lib/analyses.py (issue 40): the knockouts' paired t across runs, the learning-speed
'hardest level' verdict and the routing intervals by subgoal and around events are measured
through the code the tool runs, on simulators whose stated truth is checked here; on a small
fixed-seed draw every null row holds its rate and every confound or withdrawn row lands above it,
so a wrong simulator or a wrong code path fails.

    pytest tests/test_calibration_analyses.py
"""

from pathlib import Path

import calibration
import numpy as np
import pandas as pd
import pytest
from calibration_lib import analyses
from scipy import stats as sps

from eval_mop import wilson_interval
from mop import difficulty

SEED = 0
NEW = {
    "knockout": ("knockout_one_test_null", "knockout_holm_familywise", "knockout_any_unadjusted"),
    "hardest": (
        "hardest_two_tied_3_repeats",
        "hardest_unbounded_ranking_3_repeats",
        "hardest_margin_3_repeats",
        "hardest_two_tied_7_repeats",
        "hardest_tied_unequal_spread_7_repeats",
        "hardest_margin_7_repeats",
        "hardest_two_tied_9_repeats",
        "hardest_named_9_repeats",
    ),
    "subgoal": (
        "subgoal_interval_coverage",
        "subgoal_within_cell_null",
        "subgoal_within_cell_pair_null",
        "subgoal_unadjusted_cell_confound",
        "subgoal_within_step_null",
        "subgoal_within_step_pair_null",
        "subgoal_unadjusted_step_confound",
        "event_locked_coverage",
    ),
}


def entry(name: str) -> calibration.Entry:
    return next(e for e in calibration.ENTRIES if e.name == name)


def upper(nominal: float, draws: int) -> float:
    """The top of the Monte-Carlo 95% interval of a rate of exactly `nominal` over `draws`."""
    return wilson_interval(round(nominal * draws), draws)[1]


def holds(name: str, draws: int) -> calibration.Measured:
    """Measure an entry; assert it holds its nominal rate (a rejection rate not above the MC band,
    a coverage not below it) and return the measurement."""
    e = entry(name)
    m = calibration.measure(e, draws, SEED)
    if e.kind == "rejection":
        assert m.rate <= upper(e.nominal, m.draws), (name, m.rate, e.nominal)
    else:
        assert m.rate >= wilson_interval(round(e.nominal * m.draws), m.draws)[0], (name, m.rate)
    return m


def fails(name: str, draws: int) -> calibration.Measured:
    """Measure a confound / withdrawn entry: its rate lands above the nominal's MC band."""
    e = entry(name)
    m = calibration.measure(e, draws, SEED)
    assert m.rate > upper(e.nominal, m.draws), (name, m.rate)
    return m


def test_the_new_entries_are_registered_once_and_the_moved_ones_kept():
    names = [e.name for e in calibration.ENTRIES]
    assert len(names) == len(set(names))
    assert {n for group in NEW.values() for n in group} <= set(names)
    assert {"causal_predict_within_run_null", "time_course_holm_familywise"} <= set(names)  # moved, not lost
    for path in Path(calibration.__file__).parent.glob("calibration*.py"):
        assert len(path.read_text().splitlines()) <= 1000, path


# ----------------------------------------------------------------------------- knockouts


def test_the_knockout_rows_read_stats_py_s_knockout_table():
    (results, table), _ = analyses.knockout_runs(np.random.default_rng(SEED))
    knock = analyses.knockout_table((results, table))
    assert (
        len(knock) == 8
        and set(knock["n"]) == {3}
        and "8 (condition, knockout, metric) tests asked, 8 of them run" in knock["family"].iloc[0]
    )
    # the first test by hand: the 3 runs' success with layer_0:1 knocked out minus without, a t-test
    runs = table[table["condition"] == "alpha_0"].sort_values("seed")
    knocked = results[(results["knockout"] == "layer_0:1") & (results["trial"] == 0)].sort_values("seed")
    d = knocked["success_rate"].to_numpy() - runs["success_rate"].to_numpy()
    row = knock[(knock["condition"] == "alpha_0") & (knock["knockout"] == "layer_0:1")]
    row = row[row["metric"] == "success_rate"].iloc[0]
    assert row["difference"] == pytest.approx(d.mean()) and row["p"] == pytest.approx(
        sps.ttest_1samp(d, 0).pvalue
    )
    assert analyses.knockout_one_rejects((results, table), None) == (row["p"] < 0.05)
    # a knockout that costs every run 2 logits is found: the row read is the knockout's
    rng = np.random.default_rng(1)
    assert (
        sum(analyses.knockout_one_rejects(*analyses.knockout_runs(rng, effect=-2.0)) for _ in range(30)) >= 20
    )
    # three runs with one and the same difference: no test, a reason in place of its p, which rejects nothing
    same = results.copy()
    none = same["knockout"] == "none"
    first = (same["knockout"] == "layer_0:1") & (same["trial"] == 0)
    same.loc[first, "success_rate"] = same.loc[none & (same["trial"] == 0), "success_rate"].to_numpy() - 0.01
    knock = analyses.knockout_table((same, table))
    assert (knock["p"] == "no spread: no test").sum() == 1
    assert analyses.knockout_any_unadjusted((same, table), None) == any(
        isinstance(p, float) and p < 0.05 for p in knock["p"]
    )
    # the test that could not run stays in Holm's family as p = 1 (inference.holm_over_asked, one rule
    # with the contrasts and causal.py): the other 7 are adjusted over 8, not 7, and it gets no p_holm
    ran = knock["p"].map(lambda p: isinstance(p, float))
    assert knock.loc[~ran, "p_holm"].isna().all() and "8 of them asked" not in knock["family"].iloc[0]
    assert "7 of them run" in knock["family"].iloc[0]
    smallest = min(knock.loc[ran, "p"])
    assert knock.loc[ran, "p_holm"].min() == pytest.approx(min(1.0, 8 * smallest))
    with pytest.raises(RuntimeError, match="knockout_pairs returned"):
        analyses.knockout_table((results[results["seed"] != 2], table))  # a run lost: not 3 runs per test


@pytest.mark.slow
def test_knockout_rows_on_a_small_draw():
    holds("knockout_one_test_null", 150)
    holds("knockout_holm_familywise", 150)
    fails("knockout_any_unadjusted", 150)


# ----------------------------------------------------------------------------- the hardest level


def test_the_speed_table_is_learning_speed_on_the_written_repeats():
    crossing = [
        np.array([110.0, 260.0, 330.0]),
        np.array([20.0, 30.0, 450.0]),
        np.array([400.0, 401.0, 399.0]),
    ]
    table = analyses.speed_table((crossing, analyses.HEADLINE_SPEED)).set_index("level")
    assert list(table.index) == list(analyses.LEVELS)
    assert table.loc["level_a", "updates"] == [125, 275, 350] and table.loc["level_a", "censored"] == 0
    assert (table.loc["level_a", "speed_median"], table.loc["level_a", "speed_ci_low"]) == (275.0, 125.0)
    assert table.loc["level_a", "speed_coverage"] == 0.75  # 3 repeats: the range
    assert sorted(table.loc["level_b", "updates"]) == [25, 50, 400] and table.loc["level_b", "censored"] == 1
    assert table.loc["level_c", "updates"] == [400, 400, 400] and table.loc["level_c", "censored"] == 1


def test_the_hardest_rows_read_hardest_level_and_its_stated_bound():
    assert analyses.claimed_at(3) == difficulty.MAX_ERROR  # 3 repeats: bound 50%, the verdict withheld
    assert analyses.bound_at(3) == pytest.approx(0.5) and analyses.claimed_at(7) == pytest.approx(1 / 32)
    assert difficulty.repeats_needed(3) == 7  # the repeats the withheld verdict asks for
    rng = np.random.default_rng(SEED)
    inputs, truth = analyses.speed_repeats(rng, 7, (3.0, 1.0, 1.0), analyses.FINE_SPEED)
    assert truth == "level_a"
    assert not analyses.hardest_wrong(inputs, truth) and analyses.hardest_wrong(
        inputs, "level_b"
    )  # named level_a
    # at 3 repeats the same gap is withheld (a bound of 50%) while the bare ranking names it
    inputs, _ = analyses.speed_repeats(rng, 3, (3.0, 1.0, 1.0), analyses.FINE_SPEED)
    assert not analyses.hardest_wrong(inputs, "level_b") and analyses.ranking_wrong(inputs, "level_b")
    assert analyses.speed_repeats(rng, 3, (1.0, 1.0, 0.4), analyses.FINE_SPEED)[1] is None  # a tie: all wrong


@pytest.mark.slow
def test_hardest_rows_on_a_small_draw():
    for name in NEW["hardest"]:
        if name not in ("hardest_unbounded_ranking_3_repeats", "hardest_named_9_repeats"):
            m = holds(name, 150)
            assert (
                m.hits == 0 or "_repeats" in name and not name.endswith("_3_repeats")
            )  # at 3: never printed
    fails("hardest_unbounded_ranking_3_repeats", 400)  # why 19bc558 gave the verdict its bound
    named = calibration.measure(entry("hardest_named_9_repeats"), 100, SEED)
    assert named.hits > 20  # at 9 repeats a 3x gap is named about half the time; withheld always before


def test_more_repeats_never_withdraw_a_hardest_verdict():
    """The verdict's intervals are set by the levels compared (97.5% for three), so a gap resolved
    at 7 repeats stays resolved at 9; with 95% intervals the 9-repeat interval covered 96.1%, a
    bound of 7.8% > 5%, and the verdict was withheld ('needs 7 repeats') with 9 in hand."""
    rows, repeats = [], {}
    for level, base in (("A", 100.0), ("B", 1000.0), ("C", 5000.0)):
        values = [base + i for i in range(9)]
        m = difficulty.median_interval(values)
        rows.append({"level": level, "speed_median": m["median"], "speed_ci_low": m["ci_low"],
                     "speed_ci_high": m["ci_high"], "speed_coverage": m["coverage"]})  # fmt: skip
        repeats[level] = values
    args = ("speed_median", "speed_ci_low", "speed_ci_high", "speed_coverage", "learning speed")
    out = difficulty.hardest_level(pd.DataFrame(rows), *args, repeats=repeats)
    assert out["hardest"] == "C" and out["confidence"] == pytest.approx(0.975)
    assert out["error_bound"] <= difficulty.MAX_ERROR and "97.5% interval" in out["verdict"]
    assert difficulty.repeats_needed(3) == 7 and difficulty.repeats_needed(2) == 6


# ----------------------------------------------------------------------------- subgoals and events


def test_the_subgoal_simulators_hold_the_truth_they_state():
    rng = np.random.default_rng(SEED)
    runs = [analyses.subgoal_run(rng, "cell") for _ in range(40)]
    explore = np.array([r.loc[r["subgoal"] == "Explore", analyses.WEIGHT].mean() for r in runs])
    pickup = np.array([r.loc[r["subgoal"] == "Pickup", analyses.WEIGHT].mean() for r in runs])
    assert abs(explore.mean() - analyses.explore_truth()) < 4 * explore.std(ddof=1) / np.sqrt(len(runs))
    assert (pickup - explore).mean() > 0.15  # the confound is there: Pickup is held where routing is high
    steps = [analyses.subgoal_run(rng, "step") for _ in range(10)]
    first = pd.concat(steps)
    assert first.loc[first["t"] < 2, "subgoal"].eq("Explore").mean() > 0.7  # the bot explores first
    runs, truth = analyses.event_runs(rng)
    at = pd.concat(runs.values())
    assert abs(at.loc[at["event_pickup"] == 1, analyses.WEIGHT].mean() - truth) < 0.05


def test_the_subgoal_rows_are_routing_by_subgoal_over_runs():
    runs, truth = analyses.subgoal_runs(np.random.default_rng(SEED), "cell")
    table = analyses.subgoal_table(runs)
    row = analyses.subgoal_row(table, "Explore", "within_cell")
    assert row["interval"] == "95% t over 3 runs, clipped to the range"
    with pytest.raises(RuntimeError, match="no row over 3 runs"):  # one run: an interval over episodes
        analyses.subgoal_row(analyses.subgoal_table(dict(list(runs.items())[:1])), "Explore", "none")
    assert analyses.subgoal_covers(runs, truth) != analyses.subgoal_covers(runs, truth + 1.0)


@pytest.mark.slow
def test_subgoal_rows_on_a_small_draw():
    for name in NEW["subgoal"]:
        if "confound" not in name:
            holds(name, 50)
    fails("subgoal_unadjusted_cell_confound", 50)
    fails("subgoal_unadjusted_step_confound", 50)
