"""Issue 40: a replicate is (condition, seed), runs of one condition are compared at one update,
"alike" needs a margin (paired TOST), the per-seed exact test is a test of two networks, tables
are tidy, and a sweep run twice trains nothing."""

import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

import stats
from bench.stats_speed import make_cache, results_rows
from mop import contrasts, inference
from mop.routing_cache import META_FILE

TASK = "BabyAI-GoToLocal-v0"


def _complete(folder, **config):
    meta = json.loads((folder / META_FILE).read_text())
    meta["config"] |= {"policy_type": "mop"} | config
    (folder / META_FILE).write_text(json.dumps(meta))


@pytest.fixture(scope="module")
def two_recipes(tmp_path_factory):
    """MoP α = 0 (trial 0) and α = 1e-4 (trial 1), seeds 0-2, update 10."""
    base = tmp_path_factory.mktemp("replicates")
    rng = np.random.default_rng(11)
    made = []
    for trial, alpha in enumerate([0.0, 1e-4]):
        for seed in range(3):
            m = make_cache(base / "cache", TASK, trial, seed, 10, alpha, rng, episodes=30, length=15)
            _complete(m["folder"], hidden_size=64)
            made.append(m)
    results_rows(made).to_csv(base / "results.csv", index=False)
    return base, made


def _argv(base, out, *extra):
    return ["--task_id", TASK, "--cache_dir", str(base / "cache"), "--results_path", str(base / "results.csv"),
            "--out", str(out), "--no_figures", *extra]  # fmt: skip


def _table(base):
    return stats.build_table(base / "cache", TASK, pd.read_csv(base / "results.csv"))


# ----------------------------------------------------------------------------- replicate identity


def test_a_seed_trained_twice_is_refused_naming_both_folders(two_recipes, tmp_path, capsys):
    base, made = two_recipes
    copy = tmp_path / "copy"
    shutil.copytree(base, copy)
    # trial 0 seed 0 trained again as trial 7 (same recipe, same seed): one replicate, not two
    src = copy / "cache" / TASK / "trial_0" / "seed_0"
    shutil.copytree(src, copy / "cache" / TASK / "trial_7" / "seed_0")
    with pytest.raises(inference.StatsError, match="seed 0 is trained twice") as e:
        inference.final_rows(_table(copy))
    assert "trial_0/seed_0" in str(e.value) and "trial_7/seed_0" in str(e.value)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as ex:
        stats.main(_argv(copy, out))
    err = capsys.readouterr().err
    assert ex.value.code == 2 and err.count("\n") == 1 and "trained twice" in err and not out.exists()


def test_a_run_without_seed_is_seed_0_and_sits_as_seed_0(two_recipes, tmp_path):
    base, _ = two_recipes
    copy = tmp_path / "copy"
    shutil.copytree(base, copy)
    # a run trained without --seed (trial_5/, no seed_<S>/) beside a sweep's seed_0 of one recipe
    shutil.copytree(copy / "cache" / TASK / "trial_0" / "seed_0", copy / "cache" / TASK / "trial_5")
    table = _table(copy)
    assert table.loc[table["trial"] == 5, "seed"].tolist() == [0]
    with pytest.raises(inference.StatsError, match="trained twice"):
        inference.final_rows(table)


def test_runs_of_one_condition_are_compared_at_the_newest_update_they_all_have():
    rows = [(0, 0, 800), (0, 1, 800), (0, 2, 200), (0, 2, 800), (0, 0, 200)]
    table = pd.DataFrame(rows, columns=["trial", "seed", "update"]).assign(condition="mop-a")
    got = inference.final_rows(table)
    assert sorted(got["update"]) == [800, 800, 800]
    # 800, 800 and 200 with nothing shared: refused, never pooled
    mixed = pd.DataFrame([(0, 0, 800), (0, 1, 800), (0, 2, 200)], columns=["trial", "seed", "update"])
    with pytest.raises(inference.StatsError, match="share no evaluated update"):
        inference.final_rows(mixed.assign(condition="mop-a"))
    assert len(inference.final_rows(mixed.assign(condition="mop-a"), update=800)) == 2


def test_every_table_names_its_update(two_recipes, tmp_path):
    base, _ = two_recipes
    stats.main(_argv(base, tmp_path / "out", "--contrast", "lpc_alpha"))
    for name in ("across_seeds.csv", "decision_relevance.csv", "metrics_by_alpha.csv", "contrasts.csv"):
        df = pd.read_csv(tmp_path / "out" / name)
        assert (df["update"] == 10).all(), name


# ----------------------------------------------------------------------------- units by design


def test_the_per_seed_exact_test_is_two_networks_in_its_own_table(two_recipes, tmp_path):
    base, _ = two_recipes
    table = inference.with_conditions(_table(base))
    pairs = contrasts.contrast_pairs(table, ["lpc_alpha"])
    compared, networks = contrasts.contrasts(table, pairs)
    assert not {"p_exact", "a_only", "b_only"} & set(compared.columns)
    assert networks["test"].str.contains("two trained networks").all() and len(networks) == 3
    # identical recipes: never a contrast, so never a per-seed "recipe" test
    a = pairs[0][0]
    with pytest.raises(contrasts.ContrastError, match="one recipe"):
        contrasts.contrast_pairs(table, ["lpc_alpha"], (a, a))
    stats.main(_argv(base, tmp_path / "out", "--contrast", "lpc_alpha"))
    assert not (tmp_path / "out" / "contrast_layouts.csv").exists()
    assert (tmp_path / "out" / "network_pairs.csv").is_file()


def test_a_seed_missing_in_one_arm_is_named(two_recipes):
    base, _ = two_recipes
    table = inference.with_conditions(_table(base))
    cid = table.loc[table["trial"] == 1, "condition"].iloc[0]
    short = table[~((table["condition"] == cid) & (table["seed"] == 2))]
    notes = []
    compared, _ = contrasts.contrasts(short, contrasts.contrast_pairs(short, ["lpc_alpha"]), notes=notes)
    assert (compared["n"] == 2).all() and compared["missing"].str.contains("seed 2 only in").all()
    assert len(notes) == 1 and "seed 2 only in" in notes[0]


# ----------------------------------------------------------------------------- equivalence


def test_tost_paired_against_a_hand_computation_and_scipy():
    d = np.array([0.02, -0.01, 0.03, 0.00, 0.015])
    m = 0.05
    got = inference.tost_paired(d, m)
    n, mean, se = len(d), d.mean(), d.std(ddof=1) / math.sqrt(len(d))
    p_low = 1 - sps.t.cdf((mean + m) / se, n - 1)
    p_high = sps.t.cdf((mean - m) / se, n - 1)
    assert got["p"] == pytest.approx(max(p_low, p_high), rel=1e-12)
    assert got["p_lower"] == pytest.approx(sps.ttest_1samp(d + m, 0, alternative="greater").pvalue, rel=1e-9)
    assert got["p_upper"] == pytest.approx(sps.ttest_1samp(d - m, 0, alternative="less").pvalue, rel=1e-9)
    ci = sps.t.interval(0.90, n - 1, loc=mean, scale=se)
    assert (got["ci_low"], got["ci_high"]) == pytest.approx(ci, rel=1e-12)
    assert got["equivalent"] is True and inference.equivalence_verdict(got).startswith("equivalent")
    wide = inference.tost_paired(np.array([0.1, -0.12, 0.05]), m)
    assert wide["equivalent"] is False and "not resolved at ±0.05" in inference.equivalence_verdict(wide)
    assert math.isnan(inference.tost_paired([0.1], m)["p"])
    for bad in (0, -0.1, math.nan):
        with pytest.raises(ValueError, match="margin"):
            inference.tost_paired(d, bad)


@pytest.mark.parametrize("margin", ["0", "-0.1", "success_rate=0", "x", "foo=0.1"])
def test_a_margin_that_is_not_positive_is_refused(two_recipes, tmp_path, capsys, margin):
    base, _ = two_recipes
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        stats.main(_argv(base, out, "--contrast", "lpc_alpha", "--margin", margin))
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "--margin" in err and not out.exists()
    assert "a margin must be a number > 0" in err or "is not a contrast metric" in err


def test_a_contrast_says_equivalent_only_from_tost(two_recipes, tmp_path, capsys):
    base, _ = two_recipes
    stats.main(_argv(base, tmp_path / "a", "--contrast", "lpc_alpha"))
    plain = pd.read_csv(tmp_path / "a" / "contrasts.csv")
    assert not plain["verdict"].str.contains("equivalent|alike").any()
    assert "family" in plain and plain["family"].str.startswith("Holm").all()
    capsys.readouterr()
    stats.main(_argv(base, tmp_path / "b", "--contrast", "lpc_alpha", "--margin", "0.9"))
    printed = capsys.readouterr().out
    wide = pd.read_csv(tmp_path / "b" / "contrasts.csv")
    success = wide[wide["metric"] == "success_rate"].iloc[0]
    assert success["margin"] == 0.9 and np.isfinite(success["tost_p"])
    assert ("equivalent within ±0.9" in success["verdict"]) == (success["tost_p"] < 0.05)
    assert success["verdict"] in printed


# ----------------------------------------------------------------------------- tidy tables


def test_tidy_tables_hold_numbers_and_an_empty_one_reads_back(tmp_path):
    df = pd.DataFrame({"condition": ["a", "b"], "n": [1, 3], "p": [inference.NO_INFERENCE, 0.2],
                       "ci_low": [inference.NO_INFERENCE, -0.1], "ci_high": [inference.NO_INFERENCE, 0.3]})  # fmt: skip
    tidy = inference.tidy(df)
    for col in ("n", "p", "ci_low", "ci_high"):
        assert tidy[col].dtype.kind in "if", col
    assert tidy.loc[0, "note"] == inference.NO_INFERENCE and tidy.loc[1, "note"] == ""
    # a table with no rows: written with its header, pandas reads it back
    # a GRU alone: no router, so no decision-relevance row
    gru = pd.DataFrame({"task_id": [TASK], "trial": [0], "seed": [0], "update": [10], "lpc_alpha": [math.nan],
                        "condition": ["gru-a"], "recipe": [json.dumps({"policy_type": "gru"})], "policy_type": ["gru"]})  # fmt: skip
    empty = inference.partial_summary(gru)
    assert empty.empty
    inference.tidy(empty).to_csv(tmp_path / "e.csv", index=False)
    back = pd.read_csv(tmp_path / "e.csv")
    assert back.empty and "r_p_holm" in back.columns and "update" in back.columns


def test_success_difference_intervals_stay_in_range():
    got = contrasts.paired_difference([0.0, 1.0, 0.0], [1.0, 0.0, 1.0], "success_rate")
    assert -1 <= got["ci_low"] <= got["ci_high"] <= 1 and got["clipped"] and got["bounds"] == "[-1, 1]"


def test_identical_correlations_are_reported_once():
    table = pd.DataFrame({"task_id": TASK, "trial": [0, 0, 0], "seed": [0, 1, 2], "update": 10, "lpc_alpha": 0.0,
                          "condition": "mop-a", "recipe": json.dumps({"policy_type": "mop"}), "policy_type": "mop",
                          "r_all_lpc_entropy": [0.2, 0.4, 0.3], "r_all_lpc_kl_local": [0.5, 0.6, 0.4],
                          "r_all_lpc_kl_global": [0.5, 0.6, 0.4]})  # fmt: skip
    seeds = inference.across_seeds(table)
    glob = seeds[seeds["correlation"] == "lpc_kl_global"].iloc[0]
    assert glob["p"] == inference.IDENTICAL and math.isnan(glob["p_holm"])
    local = seeds[seeds["correlation"] == "lpc_kl_local"].iloc[0]
    assert local["p_holm"] == pytest.approx(min(1.0, 2 * local["p"]))  # a family of 2, not 3


# ----------------------------------------------------------------------------- sweep.py


def test_sweep_refuses_a_huge_grid_without_building_it():
    import sweep

    grid = {"lr": list(range(1000)), "lpc_alpha": list(range(1000))}
    with pytest.raises(sweep.SweepError, match="more than 256"):
        sweep.count_conditions(grid, [], 256)
    assert sweep.count_conditions({"lr": [1, 2]}, [{"policy": "gru"}], 256) == 3


def test_a_manifest_field_of_the_wrong_type_is_one_line(tmp_path):
    from mop import conditions

    path = tmp_path / "m.json"
    for doc, field in (({"seeds": "0-2"}, "seeds"), ({"factors": "lpc_alpha"}, "factors"),
                       ({"trials": {"x": 0}}, "trials"), ({"seeds": [0, "1"]}, "seeds")):  # fmt: skip
        path.write_text(json.dumps({"task_id": TASK, "trials": {"0": 0.0}} | doc))
        with pytest.raises(conditions.ConditionError, match=field):
            conditions.read_manifest(path)


@pytest.mark.slow
def test_a_sweep_run_twice_trains_nothing_the_second_time(tmp_path, monkeypatch, capsys):
    import sweep
    from conftest import TINY_PRESET

    monkeypatch.chdir(tmp_path)
    argv = ["--config", str(TINY_PRESET), "--task_id", "BabyAI-GoToRedBallGrey-v0", "--lpc_alpha", "0,1e-3",
            "--seeds", "0", "--num_updates", "2", "--checkpoint_interval", "2", "--skip_eval", "--name", "t"]  # fmt: skip
    first = sweep.main(argv)
    assert all("skipped" not in r for r in first["runs"])
    manifest = (tmp_path / "sweeps" / "t.json").read_text()
    called = []
    monkeypatch.setattr("train_mop.main", lambda cfg, **k: called.append(cfg) or {"run_dir": "x"})
    again = sweep.main(argv)  # the input_dim=None vs 985 refusal of issue 40 happened here
    assert called == [] and all("already at update 2" in r["skipped"] for r in again["runs"])
    assert json.loads((tmp_path / "sweeps" / "t.json").read_text())["runs"] == json.loads(manifest)["runs"]
    # the grid extended by a value in the middle: the trained conditions keep their trials, only
    # the new one trains, at a fresh trial
    wider = [*argv[:5], "0,1e-4,1e-3", *argv[6:]]
    sweep.main(wider)
    assert [(c.trial, c.lpc_alpha) for c in called] == [(2, 1e-4)]
    doc = json.loads((tmp_path / "sweeps" / "t.json").read_text())
    assert {t: c["set"]["lpc_alpha"] for t, c in doc["conditions"].items()} == {
        "0": 0.0,
        "1": 1e-3,
        "2": 1e-4,
    }
    called.clear()
    # a device this machine lacks: one line, the manifest untouched
    before = (tmp_path / "sweeps" / "t.json").read_text()
    with pytest.raises(SystemExit) as e:
        sweep.main([*argv, "--device", "cuda:7"])
    assert e.value.code == 2 and (tmp_path / "sweeps" / "t.json").read_text() == before
    capsys.readouterr()
    # a trial folder made by train_mop.py without --seed: the sweep never nests seed_0/ in it
    made = tmp_path / "checkpoints" / "BabyAI-GoToRedBallGrey-v0" / "trial_9"
    shutil.copytree(tmp_path / "checkpoints" / "BabyAI-GoToRedBallGrey-v0" / "trial_0" / "seed_0", made)
    with pytest.raises(SystemExit) as e:
        sweep.main([*argv[:-2], "--name", "u", "--first_trial", "9"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "trial_9" in err and err.count("\n") == 1
    assert not (tmp_path / "sweeps" / "u.json").exists()


def test_a_hardest_level_needs_the_repeats_that_keep_its_error_at_5_percent():
    from mop import difficulty

    def levels(n):
        rows = []
        for level, base in (("A", 100), ("B", 1000)):
            m = difficulty.median_interval([base + i for i in range(n)])
            rows.append({"level": level, "speed_median": m["median"], "speed_ci_low": m["ci_low"],
                         "speed_ci_high": m["ci_high"], "speed_coverage": m["coverage"]})  # fmt: skip
        return pd.DataFrame(rows)

    args = ("speed_median", "speed_ci_low", "speed_ci_high", "speed_coverage", "learning speed")
    three = difficulty.hardest_level(levels(3), *args)  # ranges separate, but each covers 75%
    assert three["hardest"] is None and "not resolved" in three["verdict"] and three["error_bound"] == 0.25
    assert "needs 6 repeats" in three["verdict"]
    six = difficulty.hardest_level(levels(6), *args)
    assert (
        six["hardest"] == "B" and six["error_bound"] == pytest.approx(1 / 32) and "<= 3.1%" in six["verdict"]
    )


def test_the_contrasts_figure_gives_n(two_recipes):
    from mop import stats_plots

    base, _ = two_recipes
    table = inference.with_conditions(_table(base))
    compared, _ = contrasts.contrasts(table, contrasts.contrast_pairs(table, ["lpc_alpha"]))
    fig = stats_plots.plot_contrasts(compared)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert texts and all("n=3" in t for t in texts)


def test_runs_at_different_updates_are_refused_with_nothing_written(two_recipes, tmp_path, capsys):
    base, _ = two_recipes
    copy = tmp_path / "copy"
    shutil.copytree(base, copy)
    seed2 = next((copy / "cache" / TASK / "trial_1" / "seed_2").glob("update_*"))
    seed2.rename(seed2.with_name("update_20"))  # 10, 10 and 20: no update all three have
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        stats.main(_argv(copy, out))
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "share no evaluated update" in err
    assert not out.exists()
    stats.main(_argv(copy, out, "--update", "10"))  # the update named: the two runs that have it
    scalars = pd.read_csv(out / "metrics_by_alpha.csv")
    assert sorted(scalars.loc[scalars["metric"] == "success_rate", "n"]) == [2, 3]


# ----------------------------------------------------------------------------- families by the question


def test_a_named_contrasts_family_does_not_grow_with_the_conditions_present(two_recipes, tmp_path):
    """Holm's family is the pairs asked x the metrics asked: a third recipe in the table leaves a
    named pair's adjusted p as it was (issue 40: 0.0046 became 0.005, 0.046 or 0.128 with 2, 4 or
    6 conditions present)."""
    base, _ = two_recipes
    table = inference.with_conditions(_table(base))
    a, b = sorted(set(table["condition"]), key=lambda c: table.loc[table["condition"] == c, "trial"].min())
    named = f"lpc_alpha={a}:{b}"
    stats.main(_argv(base, tmp_path / "two", "--contrast", named, "--metrics", "success_rate,mean_lpc"))
    two = pd.read_csv(tmp_path / "two" / "contrasts.csv")
    copy = tmp_path / "copy"
    shutil.copytree(base, copy)
    rng = np.random.default_rng(5)
    made = [
        make_cache(copy / "cache", TASK, 2, seed, 10, 1e-3, rng, episodes=30, length=15) for seed in range(3)
    ]
    for m in made:
        _complete(m["folder"], hidden_size=64)
    pd.concat([pd.read_csv(copy / "results.csv"), results_rows(made)]).to_csv(
        copy / "results.csv", index=False
    )
    stats.main(_argv(copy, tmp_path / "three", "--contrast", named, "--metrics", "success_rate,mean_lpc"))
    three = pd.read_csv(tmp_path / "three" / "contrasts.csv")
    assert list(three["metric"]) == ["success_rate", "mean_lpc"]
    assert np.allclose(two["p_holm"], three["p_holm"], equal_nan=True)
    assert three["family"].iloc[0].startswith("Holm over the contrasts asked: 1 pair(s) (named: ")
    assert "x 2 metric(s) (success_rate, mean_lpc) = 2 tests" in three["family"].iloc[0]
    # the factor form asks for every pair present: its family says so, and grows with them
    stats.main(_argv(copy, tmp_path / "factor", "--contrast", "lpc_alpha", "--metrics", "success_rate"))
    factor = pd.read_csv(tmp_path / "factor" / "contrasts.csv")
    assert len(factor) == 3 and "every pair present differing only in lpc_alpha" in factor["family"].iloc[0]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--contrast", "lpc_alpha", "--metrics", "success_rate,bogus"], "'bogus' is not a contrast metric"),
        (["--contrast", "lpc_alpha", "--metrics", "success_rate,success_rate"], "names a metric twice"),
        (["--metrics", "success_rate"], "give --contrast too"),
        (
            ["--contrast", "lpc_alpha", "--metrics", "success_rate", "--margin", "mean_lpc=2"],
            "not one of --metrics",
        ),
    ],
)
def test_a_family_naming_an_unknown_metric_is_one_line_and_writes_nothing(
    two_recipes, tmp_path, capsys, extra, message
):
    base, _ = two_recipes
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        stats.main(_argv(base, out, *extra))
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and message in err, err
    assert not out.exists()
