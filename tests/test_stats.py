"""stats.py on hand-made caches whose answer is known (per-cell LPC = slope · H + noise): the
per-checkpoint r is scipy's on the designed cells, the seed aggregate's CI covers the true ρ,
Fisher aggregation and Holm match direct computations, and bad inputs give one clear line."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import special
from scipy import stats as sps

import seed_metrics as sm
import stats
from bench.stats_speed import make_cache, results_rows
from mop import inference
from mop.routing_cache import load_cache

TASK = "BabyAI-GoToLocal-v0"


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """2 α × 6 seeds of GoToLocal-like caches (phase 'all'), and their results CSV rows."""
    base = tmp_path_factory.mktemp("stats")
    rng = np.random.default_rng(1)
    made = [
        make_cache(base / "cache", TASK, trial, seed, 10, alpha, rng, episodes=60, length=30, noise=noise)
        for trial, (alpha, noise) in enumerate([(0.0, 20.0), (1e-4, 60.0)])
        for seed in range(6)
    ]
    results = results_rows(made)
    results.to_csv(base / "results.csv", index=False)
    return base, made, results


def test_checkpoint_r_is_scipys_pearson_on_the_designed_cells(grid):
    _, made, _ = grid
    m = made[0]
    row = stats.checkpoint_stats(load_cache(m["folder"]), "none")
    cells = m["cells"][m["cells"]["visits"] >= sm.MIN_VISITS]
    direct = sps.pearsonr(cells["lpc"], cells["entropy"])
    assert row["r_all_lpc_entropy"] == pytest.approx(direct.statistic, abs=2e-3)  # float16 weights
    assert row["p_all_lpc_entropy"] == pytest.approx(direct.pvalue, rel=0.05)
    assert row["n_cells_all"] == len(cells)
    # per timestep: LPC vs distance to the target, as scipy gives it on the steps
    steps = load_cache(m["folder"]).steps
    d = sps.pearsonr(steps["lpc"], steps["dist_to_target"])
    assert row["r_all_lpc_dist"] == pytest.approx(d.statistic) and row["p_all_lpc_dist"] == pytest.approx(
        d.pvalue
    )


def test_seed_aggregate_recovers_r_and_its_ci_covers_the_truth(grid, tmp_path):
    base, made, results = grid
    table = stats.build_table(base / "cache", TASK, results)
    assert len(table) == 12 and set(table["lpc_alpha"]) == {0.0, 1e-4}
    agg = inference.across_seeds(table)
    for alpha, noise in ((0.0, 20.0), (1e-4, 60.0)):
        # ρ of (slope·H + e, H) over cells: slope·sd(H) / sqrt(slope²·var(H) + noise²)
        sd_h = np.mean([m["cells"]["entropy"].std() for m in made if m["config"]["lpc_alpha"] == alpha])
        rho = 50 * sd_h / math.sqrt((50 * sd_h) ** 2 + noise**2)
        row = agg[(agg["lpc_alpha"] == alpha) & (agg["correlation"] == "lpc_entropy")].iloc[0]
        assert row["n"] == 6 and row["ci_low"] <= rho <= row["ci_high"], (alpha, rho, row.to_dict())
        assert row["p"] < 0.01 and row["share_positive"] == 1.0
    low = agg[(agg["lpc_alpha"] == 1e-4) & (agg["correlation"] == "lpc_entropy")]["mean_r"].iloc[0]
    high = agg[(agg["lpc_alpha"] == 0.0) & (agg["correlation"] == "lpc_entropy")]["mean_r"].iloc[0]
    assert high > low  # more noise, smaller r


def test_fisher_aggregation_matches_a_direct_computation():
    r = np.array([0.2, 0.5, 0.35, 0.6, 0.1])
    got = inference.aggregate_r(r)
    z = np.arctanh(r)
    se = z.std(ddof=1) / math.sqrt(len(z))
    t = sps.t.ppf(0.975, len(z) - 1)
    assert got["mean_r"] == pytest.approx(math.tanh(z.mean()))
    assert got["ci_low"] == pytest.approx(math.tanh(z.mean() - t * se))
    assert got["ci_high"] == pytest.approx(math.tanh(z.mean() + t * se))
    tstat = z.mean() / se
    assert got["p"] == pytest.approx(2 * sps.t.sf(abs(tstat), len(z) - 1))
    assert got["p"] == pytest.approx(sps.ttest_1samp(z, 0).pvalue)  # on z, not on raw r
    assert got["p"] != pytest.approx(sps.ttest_1samp(r, 0).pvalue)
    assert got["n"] == 5 and got["share_positive"] == 1.0


def test_holm_matches_the_step_down_definition():
    p = [0.01, 0.04, 0.03, 0.005, "n=1: no inference", math.nan]
    got = inference.holm(p)
    ps = np.array([0.01, 0.04, 0.03, 0.005])
    order = np.argsort(ps)
    m = len(ps)
    expected = np.empty(m)
    running = 0
    for i, idx in enumerate(order):
        running = max(running, min(1, (m - i) * ps[idx]))
        expected[idx] = running
    assert np.allclose(got[:4], expected) and np.isnan(got[4:]).all()
    assert np.allclose(got[:4], [0.03, 0.06, 0.06, 0.02])


def test_single_seed_is_marked_never_a_nan_p():
    got = inference.aggregate_r([0.4])
    assert got["mean_r"] == pytest.approx(0.4) and got["p"] == inference.NO_INFERENCE
    assert got["ci_low"] == inference.NO_INFERENCE
    assert math.isnan(inference.aggregate_r([])["mean_r"])
    assert inference.mean_ci([3.0])["ci_low"] == inference.NO_INFERENCE


def test_an_across_run_interval_states_what_it_assumes_and_no_interval_states_nothing():
    runs = pd.DataFrame({"mean_lpc": [300.0, 420.0, 380.0], "path_ratio": [1.2, 1.5, 1.3]})
    assert inference.scalar_ci(runs, "mean_lpc")["assumes"] == inference.ASSUMES["linear"]
    assert inference.scalar_ci(runs, "path_ratio")["assumes"] == inference.ASSUMES["log"]
    assert "normal" in inference.ASSUMES["logit"]
    one = inference.scalar_ci(runs.head(1), "mean_lpc")
    assert one["ci_low"] == inference.NO_INFERENCE and one["assumes"] == ""
    flat = inference.scalar_ci(pd.DataFrame({"mean_lpc": [5.0, 5.0]}), "mean_lpc")
    assert flat["assumes"] == ""  # "no spread: no interval" rests on nothing
    # equal-size experts: LPC is one constant, its per-run means differ in float32's 7th digit
    rounding = inference.scalar_ci(pd.DataFrame({"mean_lpc": [867.0, 866.9999994, 867.0000003]}), "mean_lpc")
    assert rounding["ci_low"] == "no spread: no interval" and rounding["assumes"] == ""
    from mop import contrasts

    paired = contrasts.paired_difference([1.2, 1.4, 1.3], [1.5, 1.6, 1.9], "path_ratio")
    assert paired["assumes"] == contrasts.PAIRED_ASSUMES["ratio"] and "log ratios" in paired["assumes"]
    assert contrasts.paired_difference([0.5], [0.7], "success_rate")["assumes"] == ""
    assert "assumes" in contrasts.KNOCKOUT_COLUMNS


def test_phase_pairs_use_a_paired_t_test_on_z():
    table = pd.DataFrame(
        {
            "task_id": "BabyAI-UnlockPickup-v0",
            "phase_system": "key_phase",
            "trial": [0] * 4,
            "seed": [0, 1, 2, 3],
            "update": [5] * 4,
            "lpc_alpha": 1e-4,
        }
        | {f"r_{p}_{c}": np.nan for p in sm.PHASES["key_phase"] for c in inference.CORRELATIONS}
    )
    table["r_pre_key_lpc_entropy"] = [0.6, 0.5, 0.7, 0.65]
    table["r_post_key_pre_unlock_lpc_entropy"] = [0.2, 0.3, 0.1, 0.25]
    pairs = inference.phase_pairs(table)
    row = pairs[(pairs["phase_a"] == "pre_key") & (pairs["phase_b"] == "post_key_pre_unlock")]
    row = row[row["correlation"] == "lpc_entropy"].iloc[0]
    direct = sps.ttest_rel(
        np.arctanh(table["r_pre_key_lpc_entropy"]), np.arctanh(table["r_post_key_pre_unlock_lpc_entropy"])
    )
    assert row["p"] == pytest.approx(direct.pvalue) and row["n"] == 4
    empty = pairs[
        (pairs["phase_a"] == "with_key_post_unlock") & (pairs["correlation"] == "lpc_entropy")
    ].iloc[0]
    assert empty["p"].startswith("empty")


def test_bad_inputs_give_one_line(grid, tmp_path, capsys):
    base, made, results = grid
    table = stats.build_table(base / "cache", TASK, results)
    mixed = pd.concat([table, table.assign(task_id="BabyAI-UnlockPickup-v0")])
    with pytest.raises(inference.StatsError, match="mixes levels"):
        inference.across_seeds(mixed)
    with pytest.raises(inference.StatsError, match="not one of this level's phases"):
        inference.check_phase(table, "pre_key")
    # α not in the results CSV: the row stays, lpc_alpha empty, a note says so
    notes = []
    partial = stats.build_table(base / "cache", TASK, results.iloc[1:], notes=notes)
    assert len(partial) == 12 and partial["lpc_alpha"].isna().sum() == 1
    assert any("not in the results CSV" in n for n in notes)
    assert inference.across_seeds(partial)["n"].sum() < inference.across_seeds(table)["n"].sum()
    # the CLI: one error line, exit 2
    with pytest.raises(SystemExit) as e:
        stats.main(
            [
                "--task_id",
                "BabyAI-UnlockPickup-v0",
                "--cache_dir",
                str(base / "cache"),
                "--out",
                str(tmp_path),
            ]
        )
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1


@pytest.mark.slow  # draws every figure
def test_cli_writes_tables_and_figures_and_is_incremental(grid, tmp_path, capsys):
    base, made, _ = grid
    args = [
        "--task_id",
        TASK,
        "--cache_dir",
        str(base / "cache"),
        "--results_path",
        str(base / "results.csv"),
    ]
    summary = stats.main(args + ["--out", str(tmp_path)])
    names = set(summary["written"])
    assert {"seed_metrics.csv", "across_seeds.csv", "phase_pairs.csv", "metrics_by_alpha.csv"} <= names
    assert {"r_vs_alpha.png", "metrics_vs_alpha.png", "pooled_scatter.png", "phase_alpha_lpc.png"} <= names
    table = pd.read_csv(tmp_path / "seed_metrics.csv")
    assert list(table.columns) == stats.columns_for("none") and len(table) == 12
    capsys.readouterr()
    stats.main(args + ["--out", str(tmp_path), "--no_figures"])
    assert "(0 new)" in capsys.readouterr().out
    seeds = pd.read_csv(tmp_path / "across_seeds.csv")
    # a number, or NaN with its reason in `note`, never an empty p without a word (issue 40: tidy)
    assert seeds["p"].dtype.kind == "f"
    assert (seeds["p"].notna() | seeds["note"].fillna("").str.len().gt(0)).all()


def test_one_seed_per_alpha_is_marked_in_the_table(grid):
    base, _, results = grid
    table = stats.build_table(base / "cache", TASK, results)
    agg = inference.across_seeds(table[table["seed"] == 0])
    # on this one-phase level r(LPC, KL global) is r(LPC, KL local): reported once (issue 40)
    assert (agg["n"] == 1).all() and agg["p"].isin([inference.NO_INFERENCE, inference.IDENTICAL]).all()
    assert (agg["p"] == inference.IDENTICAL).sum() == (agg["correlation"] == "lpc_kl_global").sum()
    assert agg["mean_r"].notna().all() and np.isnan(agg["p_holm"]).all()


# Extreme success rates of 2 and 3 runs, with their episode counts: a t interval of raw rates
# leaves [0, 1] on each.
EXTREME_RUNS = [
    ([0, 50], [50, 50]),
    ([0, 50, 50], [50, 50, 50]),
    ([49, 50, 50], [50, 50, 50]),
    ([0, 0, 1], [40, 40, 40]),
]


@pytest.mark.parametrize(("successes", "episodes"), EXTREME_RUNS)
def test_success_interval_stays_in_bounds_and_is_scipys(successes, episodes):
    k, n = np.array(successes, float), np.array(episodes, float)
    rates = k / n
    raw = sps.ttest_1samp(rates, 0).confidence_interval(0.95)
    assert raw.low < 0 or raw.high > 1  # what a plain t interval would report
    got = inference.success_ci(rates, k, n)
    assert 0 <= got["ci_low"] <= got["estimate"] <= got["ci_high"] <= 1
    assert got["n"] == len(k) and got["mean"] == pytest.approx(rates.mean())
    # direct: the t interval of the mean empirical logit, through expit
    logit = np.log((k + 0.5) / (n - k + 0.5))
    low, high = sps.t.interval(0.95, len(k) - 1, loc=logit.mean(), scale=sps.sem(logit))
    assert got["ci_low"] == pytest.approx(special.expit(low))
    assert got["ci_high"] == pytest.approx(special.expit(high))
    assert got["estimate"] == pytest.approx(special.expit(logit.mean()))


def test_success_interval_without_episode_counts():
    rates = np.array([0.2, 0.9, 0.95])
    got = inference.success_ci(rates)
    low, high = sps.t.interval(0.95, 2, loc=special.logit(rates).mean(), scale=sps.sem(special.logit(rates)))
    assert (got["ci_low"], got["ci_high"]) == pytest.approx((special.expit(low), special.expit(high)))
    # a rate of exactly 1 has no logit without its counts: said in the cell, not NaN, not clipped
    unknown = inference.success_ci([0.5, 1.0])
    assert "without episode counts" in unknown["ci_low"] and math.isnan(unknown["estimate"])
    assert inference.success_ci([0.5], [5], [10])["ci_low"] == inference.NO_INFERENCE


@pytest.mark.parametrize("ratios", [[1.0, 6.0], [1.0, 1.02, 4.0], [0.9, 1.0, 12.0]])
def test_path_ratio_interval_is_positive_and_on_the_log_scale(ratios):
    got = inference.mean_ci(ratios, inference.SCALE_OF["path_ratio"])
    assert sps.ttest_1samp(ratios, 0).confidence_interval(0.95).low < 0  # the plain one goes below 0
    assert 0 < got["ci_low"] <= got["estimate"] <= got["ci_high"]
    logs = np.log(ratios)
    low, high = sps.t.interval(0.95, len(logs) - 1, loc=logs.mean(), scale=sps.sem(logs))
    assert (got["ci_low"], got["ci_high"]) == pytest.approx((math.exp(low), math.exp(high)))
    assert got["estimate"] == pytest.approx(math.exp(logs.mean()))  # the geometric mean
    assert "no log-scale interval" in inference.mean_ci([1.2, 0.0], "log")["ci_low"]


def test_each_run_has_its_wilson_interval_and_alpha_rows_use_the_counts(grid):
    from eval_mop import wilson_interval  # evaluation's own formula, written out by hand

    base, made, results = grid
    table = stats.build_table(base / "cache", TASK, results)
    assert (table["num_episodes"] == 60).all()
    assert (table["successes"] == (table["success_rate"] * 60).round()).all()
    for row in table.itertuples():
        low, high = wilson_interval(int(row.successes), int(row.num_episodes))
        assert (row.success_ci_low, row.success_ci_high) == pytest.approx((low, high))
    scalars = inference.metrics_by_alpha(table)
    for alpha, runs in table.groupby("lpc_alpha"):
        row = scalars[(scalars["lpc_alpha"] == alpha) & (scalars["metric"] == "success_rate")].iloc[0]
        direct = inference.success_ci(runs["success_rate"], runs["successes"], runs["num_episodes"])
        assert row["scale"] == "logit" and (row["ci_low"], row["ci_high"]) == pytest.approx(
            (direct["ci_low"], direct["ci_high"])
        )
        assert 0 <= row["ci_low"] <= row["ci_high"] <= 1
        ratio = scalars[(scalars["lpc_alpha"] == alpha) & (scalars["metric"] == "path_ratio")].iloc[0]
        # every run 1.2: no spread, so no interval (never a zero-width [1.2, 1.2]; issue 40)
        assert ratio["scale"] == "log" and ratio["estimate"] == pytest.approx(1.2)
        assert ratio["ci_low"] == ratio["ci_high"] == "no spread: no interval"
    # a table written before the counts existed: its rows keep empty counts, in the schema's order
    old = table.drop(columns=list(stats.COUNT_COLUMNS)).iloc[:5]
    grown = stats.build_table(base / "cache", TASK, results, previous=old)
    assert list(grown.columns) == stats.columns_for("none") and len(grown) == 12
    assert grown["num_episodes"].isna().sum() == 5


# ----------------------------------------------------------------------------- hardening (issue 35)


def _snapshot(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_bad_command_lines_are_one_line_and_write_nothing(grid, tmp_path, capsys, monkeypatch):
    """Each: exit 2, one `error:` line, and the watched folder exactly as it was (a path-escaping
    task id is refused before any folder is made)."""
    base, _, _ = grid
    work = tmp_path / "a" / "b" / "c"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    common = ["--cache_dir", str(base / "cache"), "--results_path", str(base / "results.csv")]
    before = _snapshot(tmp_path)
    for argv, message in (
        (["--task_id", "../../../x"], "cannot be used in a path"),
        (["--task_id", TASK, "--min_visits", "-1"], "--min_visits"),
        (["--task_id", TASK, "--update", "-5"], "--update"),
        (["--task_id", TASK, "--out", str(a_file)], "--out"),
        (["--task_id", TASK, "--out", str(a_file / "sub")], "--out"),
        (["--task_id", TASK, "--contrast", "lpc_alfa"], "not a config key"),
        (["--task_id", TASK, "--state", "room"], "--state"),
    ):
        with pytest.raises(SystemExit) as e:
            stats.main([*argv, *common])
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, (argv, err)
        assert message in err, (argv, err)
        assert _snapshot(tmp_path) == before, argv
    assert not (tmp_path / "a" / "x").exists() and not (tmp_path / "x").exists()


def test_deeply_nested_json_is_one_line_in_stats_and_seed_metrics(tmp_path, capsys):
    """A routing_data.json nested 100,000 deep (json's parser recurses): one line, not a
    RecursionError traceback."""
    folder = tmp_path / "cache" / TASK / "trial_0"
    folder.mkdir(parents=True)
    (folder / "routing_data.json").write_text("[" * 100_000 + "]" * 100_000)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        stats.main(["--task_id", TASK, "--cache_dir", str(tmp_path / "cache"), "--out", str(out)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and not out.exists(), err
    with pytest.raises(SystemExit) as e:
        sm.main(["--task", TASK, "--cache_dir", str(tmp_path / "cache"), "--out", str(tmp_path / "m.csv")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "nested too deep" in err and err.count("\n") == 1
    assert not (tmp_path / "m.csv").exists()


def test_seed_metrics_refuses_a_foreign_or_binary_results_csv_and_a_bad_out(grid, tmp_path, capsys):
    base, _, _ = grid
    foreign = tmp_path / "foreign.csv"
    foreign.write_text("a,b\n1,2\n")
    binary = tmp_path / "binary.csv"
    binary.write_bytes(bytes(range(256)) * 40)
    for argv, message in (
        (["--results", str(foreign)], "columns this project does not write"),
        (["--results", str(binary)], "unreadable"),
        (["--out", str(tmp_path)], "is a folder"),
        (["--out", str(foreign / "x.csv")], "--out"),
    ):
        out = argv[1] if argv[0] == "--out" else str(tmp_path / "m.csv")
        with pytest.raises(SystemExit) as e:
            sm.main(["--task", TASK, "--cache_dir", str(base / "cache"), "--out", out, *argv])
        err = capsys.readouterr().err
        assert e.value.code == 2 and message in err and err.count("\n") == 1, (argv, err)
    assert not (tmp_path / "m.csv").exists()


def test_knockout_marks_stay_inside_their_panel_and_read_a_tidy_table():
    from mop import stats_plots

    labels = [f"MoP experts=[[0,16,32]]*3 α={a}" for a in (0, 0.001)]
    rows = [
        {"condition": f"c{i}", "condition_label": label, "knockout": "largest", "metric": m, "n": 3}
        | ({"difference": -300.0, "ci_low": -650.0, "ci_high": 60.0, "p": 0.2, "p_holm": 0.54, "note": ""}
           if i == 0 else {"difference": 0.0, "ci_low": math.nan, "ci_high": math.nan, "p": math.nan,
                           "p_holm": math.nan, "note": "no spread: no test"})
        for i, label in enumerate(labels)
        for m in ("success_rate", "mean_lpc")
    ]  # fmt: skip
    fig = stats_plots.plot_knockouts(pd.DataFrame(rows))  # as read back from knockouts.csv
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    marks = [t for ax in fig.axes for t in ax.texts]
    assert sorted(t.get_text() for t in marks) == sorted(["p=0.54 (n=3)", "no spread: no test"] * 2)
    for ax in fig.axes:
        box = ax.get_window_extent(renderer)
        for t in ax.texts:  # the untested rows sit at the right edge of the LPC panel: drawn inward
            text = t.get_window_extent(renderer)
            assert box.x0 - 1 <= text.x0 and text.x1 <= box.x1 + 1, t.get_text()
