"""bench/calibration_lib/metrics.py (issue 40, item 6): stats.py's across-run intervals of LPC,
policy complexity and the path ratio, the path-ratio contrast, forks.csv's interval over a fork's
child pairs, generative_analysis's vs_control and causal.py's layout_p_holm are measured through
the code the tool runs, on simulators whose stated truth is checked here; on a small fixed-seed
draw every null and coverage row that holds its rate does, and the rows that fall short show
it, so a wrong simulator or a wrong code path fails.

    pytest tests/test_calibration_metrics.py
"""

import math
from pathlib import Path

import calibration
import numpy as np
import pytest
from calibration_lib import metrics
from scipy import stats as sps
from test_calibration_analyses import entry, holds
from test_calibration_tables import band, misses

from mop import causal, connectivity, contrasts, inference

SEED = 0
NEW = {
    "across_runs": (
        "across_runs_lpc_coverage",
        "across_runs_complexity_skewed_coverage",
        "across_runs_complexity_exponential_coverage",
        "across_runs_path_ratio_coverage",
        "contrast_path_ratio_coverage",
        "across_runs_complexity_normal_coverage",
        "across_runs_path_ratio_lognormal_coverage",
    ),
    "forks": ("fork_barrier_coverage_2_pairs", "fork_barrier_at_0_2_pairs"),
    "vs_control": (
        "generative_vs_control_one_null",
        "generative_vs_control_holm_familywise",
        "generative_vs_control_any_unadjusted",
    ),
    "causal_layouts": ("causal_layout_holm_familywise",),
}


def test_the_entries_are_registered_once():
    names = [e.name for e in calibration.ENTRIES]
    assert len(names) == len(set(names))
    assert {n for group in NEW.values() for n in group} <= set(names)
    assert len(Path(metrics.__file__).read_text().splitlines()) <= 1000


# ----------------------------------------------------------------------------- metrics across runs


def test_the_runs_simulator_holds_the_truth_it_states():
    rng = np.random.default_rng(SEED)
    many = [metrics.runs_table(rng, 2.0) for _ in range(3000)]
    lpc = np.concatenate([t["mean_lpc"] for t in many])
    complexity = np.concatenate([t["policy_complexity"] for t in many])
    path = np.concatenate([t["path_ratio"] for t in many])
    assert lpc.mean() == pytest.approx(metrics.LPC_MEAN, abs=3.0)
    assert complexity.min() >= 0 and complexity.mean() == pytest.approx(metrics.COMPLEXITY_MEAN, rel=0.03)
    assert sps.skew(complexity) > 1.0  # skewed, as the row says
    assert path.min() >= 1 and math.exp(np.log(path).mean()) == pytest.approx(
        metrics.geometric_mean_path(), rel=0.005
    )
    normal = [metrics.runs_table(rng, 2.0, normal=True) for _ in range(3000)]
    complexity = np.concatenate([t["policy_complexity"] for t in normal])
    logs = np.log(np.concatenate([t["path_ratio"] for t in normal]))
    assert complexity.mean() == pytest.approx(metrics.COMPLEXITY_MEAN, abs=0.002)
    assert abs(sps.skew(complexity)) < 0.15 and abs(sps.skew(logs)) < 0.15  # the shapes `assumes` names
    assert math.exp(logs.mean()) == pytest.approx(metrics.PATH_GEOMETRIC, rel=0.005)
    assert metrics.metrics_draw("path_ratio", normal=True)(rng)[1] == metrics.PATH_GEOMETRIC
    (a, b), truth = metrics.paired_paths(np.random.default_rng(SEED))
    logs = [metrics.paired_paths(rng)[0] for _ in range(9000)]
    ratio = math.exp(np.mean([np.log(b) - np.log(a) for a, b in logs]))
    assert ratio == pytest.approx(truth, rel=0.005) and truth > 1.1


def test_the_across_run_rows_read_metrics_by_alpha():
    rng = np.random.default_rng(SEED + 1)
    for _ in range(20):
        table = metrics.runs_table(rng, 1.0)
        for metric, scale in (("mean_lpc", "linear"), ("policy_complexity", "linear"), ("path_ratio", "log")):
            row = metrics.metric_row(table, metric)
            v = table[metric].to_numpy()
            t = np.log(v) if scale == "log" else v
            low, high = sps.t.interval(0.95, 2, loc=t.mean(), scale=sps.sem(t))
            if scale == "log":
                low, high = math.exp(low), math.exp(high)
            assert row["scale"] == scale
            assert (row["ci_low"], row["ci_high"]) == pytest.approx((max(low, 0.0), high))
            assert row["assumes"] == inference.ASSUMES[scale] and "normal" in row["assumes"]
    (a, b), truth = metrics.paired_paths(rng)
    d = np.log(b) - np.log(a)
    low, high = sps.t.interval(0.95, 2, loc=d.mean(), scale=sps.sem(d))
    out = contrasts.paired_difference(a, b, "path_ratio")
    assert (out["ci_low"], out["ci_high"]) == pytest.approx((math.exp(low), math.exp(high)))
    assert metrics.ratio_covers((a, b), truth) == (out["ci_low"] <= truth <= out["ci_high"])


@pytest.mark.slow
def test_across_run_rows_on_a_small_draw():
    for name in ("across_runs_lpc_coverage", "contrast_path_ratio_coverage", *NEW["across_runs"][5:]):
        holds(name, 200)
    # a 3-run t interval on a skewed metric falls short of 95% (docs/calibration.md: 1000 draws): the
    # rows say the assumption the table states is broken, never that the interval holds
    for name in NEW["across_runs"][1:4]:
        assert calibration.measure(entry(name), 200, SEED).rate < 0.95, name
        assert entry(name).role == "assumption" and "assumes" in entry(name).outcome


# ----------------------------------------------------------------------------- LMC forks


def test_the_fork_simulator_holds_the_truth_it_states():
    rng = np.random.default_rng(SEED)
    at_0 = np.concatenate([metrics.fork_pairs(rng, 0.0)[0]["ce_barrier_line"] for _ in range(500)])
    assert at_0.min() >= 0 and at_0.mean() > 0.003  # the max over α of noise: never below the truth 0
    real = np.concatenate([metrics.fork_pairs(rng, 0.05)[0]["ce_barrier_line"] for _ in range(2000)])
    assert real.mean() == pytest.approx(0.05, abs=0.004)  # the noise's lift is small beside 0.05
    table, truth = metrics.fork_pairs(rng, 0.05)
    assert truth == 0.05 and len(table) == metrics.FORK_PAIRS == 2


def test_the_fork_rows_measure_the_withdrawn_interval_and_forks_csv_no_longer_prints_it():
    """forks.csv's barrier interval across pairs covered a true 0 in 84%: withdrawn (issue 40). The
    table keeps the mean over pairs, NaN interval and a note; the rows measure what it printed."""
    rng = np.random.default_rng(SEED + 2)
    for barrier in (0.0, 0.05) * 10:
        table, truth = metrics.fork_pairs(rng, barrier)
        row = connectivity.fork_summary(table).iloc[0]
        v = table["ce_barrier_line"].to_numpy()
        low, high = sps.t.interval(0.95, 1, loc=v.mean(), scale=sps.sem(v))
        assert row["ce_barrier_line"] == pytest.approx(v.mean())
        assert np.isnan(row["ce_barrier_line_ci_low"]) and np.isnan(row["ce_barrier_line_ci_high"])
        assert "withdrawn" in row["note"]
        assert metrics.fork_covers(table, truth) == (max(low, 0.0) - 1e-12 <= truth <= high + 1e-12)


@pytest.mark.slow
def test_fork_rows_on_a_small_draw():
    # 2 pairs of a skewed barrier: short of 95% (0.931 over 1000 draws); at 0 the measured
    # barrier's lift (a max over α of noise) leaves the truth below the interval (0.838)
    assert calibration.measure(entry("fork_barrier_coverage_2_pairs"), 200, SEED).rate < 0.95
    misses("fork_barrier_at_0_2_pairs", 200)


# ----------------------------------------------------------------------------- generative vs control


def test_the_vs_control_rows_read_verdicts():
    rng = np.random.default_rng(SEED)
    many = np.stack([metrics.vs_control_null(rng)[0] for _ in range(2000)])
    assert np.abs(many.mean(axis=(0, 2))).max() < 0.002  # every target and the control: no change
    diffs = many[:, :-1] - many[:, -1:]  # the shared context's change cancels in the difference
    assert diffs.std() == pytest.approx(math.sqrt(2) * metrics.TARGET_SD, rel=0.03)
    changes = many[0]
    rows = metrics.vs_control_rows(changes)
    ps = [sps.ttest_1samp(changes[i] - changes[-1], 0.0).pvalue for i in range(metrics.TARGETS)]
    assert [r["vs_control_p"] for r in rows] == pytest.approx(ps)
    assert [r["vs_control_p_holm"] for r in rows] == pytest.approx(list(inference.holm(ps)))


@pytest.mark.slow
def test_vs_control_rows_on_a_small_draw():
    holds("generative_vs_control_one_null", 200)
    holds("generative_vs_control_holm_familywise", 200)
    misses("generative_vs_control_any_unadjusted", 200)


# ----------------------------------------------------------------------------- causal.py per layout


def test_the_causal_null_reads_effects_table():
    effects, truth = metrics.causal_null(np.random.default_rng(SEED))
    assert truth == 0.0 and len(effects) == 3 * 27 * len(causal.METRICS)
    success = metrics.layout_tests(effects)
    assert np.isnan(effects.loc[effects["metric"] != "success_rate", "layout_p"]).all()
    # each success row's p is McNemar's exact test: the discordant layouts' binomial
    q = effects["layout_p"].to_numpy()
    expected = inference.holm([p if math.isfinite(p) else 1.0 for p in q])
    assert success["layout_p_holm"].to_numpy() == pytest.approx(expected[effects["metric"] == "success_rate"])
    assert (success["layout_p_holm"] >= success["layout_p"]).all()
    rng = np.random.default_rng(SEED + 3)
    q = rng.uniform(0.3, 1.0, metrics.CAUSAL_LAYOUTS)
    a, b = metrics.played(rng, q), metrics.played(rng, q)
    worse, better = int((a["success"] & ~b["success"]).sum()), int((~a["success"] & b["success"]).sum())
    p = causal.paired_layout_effect(a, b, "success_rate", 100.0)["layout_p"]
    assert p == pytest.approx(sps.binomtest(worse, worse + better).pvalue)


@pytest.mark.slow
def test_causal_layout_rows_on_a_small_draw():
    e = entry("causal_layout_holm_familywise")
    m = calibration.measure(e, 400, SEED)  # 50 draws (cost 8)
    assert m.draws == 50 and m.rate <= band(e.nominal, m.draws)[1], m.rate
