"""Which runs are replicates of what, and the answers a reviewer would accept (issue 30): a
condition is a recipe (a GRU is its own), knockouts take one unit per run, contrasts pair runs by
seed and refuse what they cannot compare, the partial r removes a visit confound and equals a hand
computation, the matched GRU is within tolerance, and a multi-task ranking with overlapping
intervals gives no verdict. Every formula is checked against scipy or a hand computation."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

import stats
from bench.stats_speed import make_cache, results_rows
from mop import conditions, contrasts, difficulty, inference
from mop.experiment import load_config
from mop.routing_analysis import ranking
from mop.routing_cache import META_FILE, CacheData

TASK = "BabyAI-GoToLocal-v0"


def _complete(folder, **config):
    """Give a synthetic cache a complete run config (policy_type set): a run of this project."""
    meta = json.loads((folder / META_FILE).read_text())
    meta["config"] |= {"policy_type": "mop"} | config
    (folder / META_FILE).write_text(json.dumps(meta))


def _stats(base, *extra, results="results.csv"):
    argv = ["--task_id", TASK, "--cache_dir", str(base / "cache"), "--results_path", str(base / results)]
    return stats.main([*argv, "--out", str(base / "out"), "--no_figures", *extra])


# ----------------------------------------------------------------------------- conditions


def test_a_recipe_leaves_out_replicate_output_and_execution_keys_and_the_other_policys_keys():
    cfg = load_config(None, {"task_id": TASK, "seed": 3, "trial": 7})
    base = conditions.recipe({**vars(cfg), "policy_type": "mop"})
    for key in ("seed", "trial", "checkpoint_dir", "num_workers", "fast_env", "num_updates", "log_interval"):
        assert key not in base
    assert "lpc_alpha" in base and "hidden_size" not in base and base["policy_type"] == "mop"
    gru = conditions.recipe({**vars(cfg), "policy_type": "gru", "lpc_alpha": 0.5})
    assert "lpc_alpha" not in gru and "expert_hidden_sizes" not in gru and gru["hidden_size"] == 64
    # replicate keys and execution keys do not change the id; a recipe key does; "1e-3" is 0.001
    same = conditions.recipe(
        {**vars(cfg), "policy_type": "mop", "seed": 9, "num_workers": 0, "fast_env": False}
    )
    assert conditions.condition_id(same) == conditions.condition_id(base)
    other = conditions.recipe({**vars(cfg), "policy_type": "mop", "lpc_alpha": "1e-3"})
    assert other["lpc_alpha"] == 0.001 and conditions.condition_id(other) != conditions.condition_id(base)
    # a key a config lacks is its default (a key added later leaves old ids as they were)
    older = {k: v for k, v in vars(cfg).items() if k != "buffer_episodes"} | {"policy_type": "mop"}
    assert conditions.condition_id(conditions.recipe(older)) == conditions.condition_id(base)
    assert conditions.condition_id(base).startswith("mop-") and conditions.condition_id(gru).startswith(
        "gru-"
    )
    # the device is execution (same numbers on any device), and input_dim equal to its encoding's
    # size is no more than the encoding (train_mop writes 985 for onehot): neither moves the id
    assert "device" not in base
    written = conditions.recipe({**vars(cfg), "policy_type": "mop", "device": "cpu", "input_dim": 985})
    assert conditions.condition_id(written) == conditions.condition_id(base)
    raw = conditions.recipe({**vars(cfg), "policy_type": "mop", "obs_encoding": "raw", "input_dim": 985})
    assert conditions.condition_id(raw) != conditions.condition_id(
        conditions.recipe({**vars(cfg), "policy_type": "mop", "obs_encoding": "raw"})
    )


def test_labels_name_the_keys_in_which_conditions_differ_and_extra_keys_refuse_a_pair():
    cfg = vars(load_config(None, {"task_id": TASK}))
    a = conditions.recipe({**cfg, "policy_type": "mop"})
    b = conditions.recipe({**cfg, "policy_type": "mop", "lpc_alpha": 1e-3})
    c = conditions.recipe({**cfg, "policy_type": "mop", "lpc_alpha": 1e-3, "lr": 1e-3})
    g = conditions.recipe({**cfg, "policy_type": "gru", "hidden_size": 116})
    names = conditions.labels({"a": a, "b": b, "g": g})
    assert names == {"a": "MoP α=0", "b": "MoP α=0.001", "g": "GRU"}
    homogeneous = conditions.recipe({**cfg, "policy_type": "mop", "expert_hidden_sizes": [[17, 17, 17]] * 3})
    assert conditions.labels({"a": a, "h": homogeneous})["h"] == "MoP experts=[[17,17,17]]*3"
    assert conditions.extra_keys(a, b, ["lpc_alpha"]) == []
    assert conditions.extra_keys(a, c, ["lpc_alpha"]) == ["lr"]
    # policy_type takes the keys only one policy has with it
    assert conditions.extra_keys(a, g, ["policy_type"]) == []
    with pytest.raises(conditions.ConditionError, match="not a config key"):
        conditions.check_factors(["lpc_alfa"])
    with pytest.raises(conditions.ConditionError, match="not part of a run's recipe"):
        conditions.check_factors(["seed"])


# ----------------------------------------------------------------------------- synthetic runs


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """GoToLocal-like caches with complete configs: MoP α = 0 (trial 0) and α = 1e-4 (trial 1), 3
    seeds each, and a GRU (trial 2, 3 seeds) whose results rows say lpc_alpha 0.0, as train.py's."""
    base = tmp_path_factory.mktemp("conditions")
    rng = np.random.default_rng(5)
    made = []
    for trial, alpha in enumerate([0.0, 1e-4, 0.0]):
        for seed in range(3):
            m = make_cache(base / "cache", TASK, trial, seed, 10, alpha, rng, episodes=40, length=20)
            gru = trial == 2
            _complete(m["folder"], policy_type="gru" if gru else "mop", hidden_size=64)
            made.append(m)
    rows = results_rows(made)
    rows["policy_type"] = ["gru" if t == 2 else "mop" for t in rows["trial"]]
    rows.to_csv(base / "results.csv", index=False)
    return base, made, rows


def test_a_gru_run_in_the_folder_is_its_own_condition(runs):
    base, made, _ = runs
    _stats(base, "--force")
    scalars = pd.read_csv(base / "out" / "metrics_by_alpha.csv")
    success = scalars[scalars["metric"] == "success_rate"]
    assert len(success) == 3 and (success["n"] == 3).all()  # not 6 at α = 0
    zero = success[success["lpc_alpha"] == 0.0]
    assert len(zero) == 1 and zero["condition_label"].iloc[0].startswith("MoP")
    gru = success[success["condition_label"] == "GRU"]
    assert len(gru) == 1 and gru["lpc_alpha"].isna().all()
    mop_runs = [m for m in made if m["config"]["trial"] == 0]
    assert zero["mean"].iloc[0] == pytest.approx(np.mean([m["metrics"]["success_rate"] for m in mop_runs]))
    table = pd.read_csv(base / "out" / stats.TABLE)
    assert table.loc[table["trial"] == 2, "lpc_alpha"].isna().all()  # a GRU has no α, not α = 0
    assert set(table.loc[table["trial"] == 2, "policy_type"]) == {"gru"}
    seeds = pd.read_csv(base / "out" / "across_seeds.csv")
    assert "GRU" not in set(seeds["condition_label"])  # no LPC: nothing to correlate


def test_a_run_outside_the_manifest_is_not_in_the_sweeps_tables(runs, tmp_path, capsys):
    base, _, _ = runs
    doc = {"name": "grid", "task_id": TASK, "trials": {"0": 0.0, "1": 1e-4}, "seeds": [0, 1, 2]}
    doc["runs"] = [{"trial": t, "seed": s, "condition": None} for t in (0, 1) for s in (0, 1)]
    manifest = tmp_path / "grid.json"
    manifest.write_text(json.dumps(doc))
    out = tmp_path / "sweep_stats"
    argv = [
        "--task_id",
        TASK,
        "--cache_dir",
        str(base / "cache"),
        "--results_path",
        str(base / "results.csv"),
    ]
    stats.main([*argv, "--out", str(out), "--manifest", str(manifest), "--no_figures"])
    table = pd.read_csv(out / stats.TABLE)
    assert sorted(set(zip(table["trial"], table["seed"]))) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    # a manifest naming a run that was never evaluated: one line, nothing written
    doc["runs"].append({"trial": 5, "seed": 0, "condition": None})
    manifest.write_text(json.dumps(doc))
    fresh = tmp_path / "fresh"
    with pytest.raises(SystemExit) as e:
        stats.main([*argv, "--out", str(fresh), "--manifest", str(manifest)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "trial 5 seed 0" in err and err.count("\n") == 1 and not fresh.exists()
    manifest.write_text("{not json")
    with pytest.raises(SystemExit):
        stats.main([*argv, "--out", str(fresh), "--manifest", str(manifest)])
    assert "unreadable" in capsys.readouterr().err and not fresh.exists()


def test_contrasts_pair_runs_by_seed_and_match_scipy(runs):
    base, _, _ = runs
    _stats(base, "--contrast", "lpc_alpha", "--contrast", "policy_type")
    compared = pd.read_csv(base / "out" / "contrasts.csv")
    table = pd.read_csv(base / "out" / stats.TABLE)
    alpha = compared[(compared["factors"] == "lpc_alpha") & (compared["metric"] == "success_rate")].iloc[0]
    a = table[table["trial"] == 0].sort_values("seed")["success_rate"].to_numpy()
    b = table[table["trial"] == 1].sort_values("seed")["success_rate"].to_numpy()
    direct = sps.ttest_rel(b, a)
    assert float(alpha["p"]) == pytest.approx(direct.pvalue, rel=1e-9) and alpha["n"] == 3
    ci = sps.ttest_1samp(b - a, 0).confidence_interval(0.95)
    assert (float(alpha["ci_low"]), float(alpha["ci_high"])) == pytest.approx((ci.low, ci.high), rel=1e-9)
    assert alpha["estimate"] == pytest.approx((b - a).mean())
    numeric = pd.to_numeric(compared["p"], errors="coerce")
    # Holm over every test asked (pairs x metrics): one that could not run counts as p = 1
    asked = inference.holm(numeric.fillna(1.0))
    assert np.allclose(compared["p_holm"].dropna(), asked[numeric.notna()])
    assert compared["p_holm"][numeric.isna()].isna().all()
    assert compared["family"].iloc[0].endswith(f"= {len(compared)} tests")
    # the path ratio: the ratio of geometric means, its interval from the t interval of log ratios
    ratio = compared[(compared["factors"] == "lpc_alpha") & (compared["metric"] == "path_ratio")].iloc[0]
    assert ratio["scale"] == "ratio" and ratio["estimate"] == pytest.approx(1.0)
    # MoP vs GRU: two pairs (GRU against each MoP condition), never GRU pooled with α = 0
    policy = compared[compared["factors"] == "policy_type"]
    assert set(policy["label_b"]) == {"GRU"} and len(set(policy["condition_a"])) == 2
    # the exact paired test per seed pair, on the shared layouts: a test of two networks, in its
    # own table (issue 40), never beside the recipe's test
    assert not (base / "out" / "contrast_layouts.csv").exists() and "p_exact" not in compared
    exact = pd.read_csv(base / "out" / "network_pairs.csv")
    assert exact["test"].str.contains("two trained networks").all()
    first = exact[(exact["factors"] == "lpc_alpha") & (exact["seed"] == 0)].iloc[0]
    assert (
        first["layouts"] == 40 and first["both"] + first["a_only"] + first["b_only"] + first["neither"] == 40
    )


def test_exact_paired_test_is_mcnemars_exact_binomial():
    a = np.array([1, 1, 1, 1, 1, 0, 0, 1, 0, 1, 1, 1], dtype=bool)
    b = np.array([0, 0, 0, 1, 1, 0, 1, 0, 0, 0, 1, 1], dtype=bool)
    got = contrasts.exact_paired(a, b)
    assert (got["both"], got["a_only"], got["b_only"], got["neither"]) == (4, 5, 1, 2)
    # by hand: two-sided exact binomial of 5 of 6 discordant at 1/2
    n, k = 6, 1
    by_hand = min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n)
    assert got["p_exact"] == pytest.approx(by_hand) == pytest.approx(sps.binomtest(5, 6, 0.5).pvalue)
    assert contrasts.exact_paired(a, a)["p_exact"] == 1.0
    # the fast form is scipy's own number, bit for bit (a scipy that changes its sum fails here)
    for n in range(1, 120):
        for k in range(n + 1):
            assert contrasts.sign_test_p(k, n - k) == sps.binomtest(k, n, 0.5).pvalue, (k, n)


def test_paired_difference_matches_scipy_and_one_pair_is_no_inference():
    a, b = np.array([0.6, 0.7, 0.55, 0.8]), np.array([0.5, 0.72, 0.4, 0.61])
    got = contrasts.paired_difference(a, b, "success_rate")
    assert got["p"] == pytest.approx(sps.ttest_rel(b, a).pvalue, rel=1e-12)
    low, high = sps.t.interval(0.95, 3, loc=(b - a).mean(), scale=sps.sem(b - a))
    assert (got["ci_low"], got["ci_high"]) == pytest.approx((low, high), rel=1e-12)
    ratio = contrasts.paired_difference(np.array([1.2, 1.5, 1.1]), np.array([1.8, 1.6, 1.9]), "path_ratio")
    logs = np.log([1.8, 1.6, 1.9]) - np.log([1.2, 1.5, 1.1])
    assert ratio["estimate"] == pytest.approx(math.exp(logs.mean()))
    assert ratio["p"] == pytest.approx(sps.ttest_1samp(logs, 0).pvalue)
    one = contrasts.paired_difference([0.5], [0.7], "success_rate")
    assert one["p"] == inference.NO_INFERENCE and one["ci_low"] == inference.NO_INFERENCE
    # differences that are one number up to float rounding (a homogeneous layout's LPC): no test
    flat = contrasts.paired_difference([162.0, 162.0, 162.0], [162.0 + 1e-9, 162.0 - 2e-9, 162.0], "mean_lpc")
    assert flat["p"] == "no spread: no test"


def test_contrasts_refuse_what_they_cannot_compare(runs, tmp_path, capsys):
    base, _, _ = runs
    table = inference.with_conditions(pd.read_csv(base / "out" / stats.TABLE))
    ids = dict(zip(table["trial"], table["condition"]))
    with pytest.raises(contrasts.ContrastError, match="does not vary"):
        contrasts.contrast_pairs(table, ["lr"])
    with pytest.raises(contrasts.ContrastError, match="differ in policy_type"):
        contrasts.contrast_pairs(table, ["lpc_alpha"], (ids[1], ids[2]))  # α=1e-4 MoP vs GRU
    one_seed = table[table["seed"] == 0]
    pairs = contrasts.contrast_pairs(one_seed, ["lpc_alpha"])
    with pytest.raises(contrasts.ContrastError, match="needs two or more"):
        contrasts.contrasts(one_seed, pairs)
    # through the CLI: one line, exit 2, nothing written
    cache_only = tmp_path / "one_seed"
    for argv in (["--contrast", "lpc_alpha", "--update", "10"], ["--contrast", "lr"], ["--contrast", "seed"]):
        with pytest.raises(SystemExit) as e:
            stats.main(["--task_id", TASK, "--cache_dir", str(base / "cache"), "--results_path",
                        str(base / "results.csv"), "--out", str(cache_only), *argv[:2]]
                       + (["--manifest", str(_one_seed_manifest(tmp_path))] if "10" in argv else []))  # fmt: skip
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert not cache_only.exists()


def _one_seed_manifest(tmp_path):
    doc = {"name": "one", "task_id": TASK, "trials": {"0": 0.0, "1": 1e-4}, "seeds": [0]}
    doc["runs"] = [{"trial": t, "seed": 0, "condition": None} for t in (0, 1)]
    path = tmp_path / "one.json"
    path.write_text(json.dumps(doc))
    return path


# ----------------------------------------------------------------------------- knockouts


def test_one_run_with_four_checkpoints_is_one_knockout_unit(tmp_path):
    """Checkpoints 100, 200, 300 and final of one run, each with and without a knockout: one unit
    (the final checkpoint), no inference; the earlier code counted n = 4 and gave a p."""
    rng = np.random.default_rng(2)
    made = [
        make_cache(tmp_path / "cache", TASK, 0, 0, u, 0.0, rng, episodes=30, length=10)
        for u in (100, 200, 300, 400)
    ]
    for m in made:
        _complete(m["folder"])
    rows = results_rows(made)
    knocked = rows.assign(knockout="largest", success_rate=rows["success_rate"] - [0.1, 0.2, 0.15, 0.3])
    knocked["mean_lpc"] = rows["mean_lpc"] - 20
    pd.concat([rows, knocked]).to_csv(tmp_path / "results.csv", index=False)
    argv = [
        "--task_id",
        TASK,
        "--cache_dir",
        str(tmp_path / "cache"),
        "--results_path",
        str(tmp_path / "results.csv"),
    ]
    stats.main([*argv, "--out", str(tmp_path / "out"), "--no_figures"])
    ko = pd.read_csv(tmp_path / "out" / "knockouts.csv")
    success = ko[ko["metric"] == "success_rate"].iloc[0]
    assert success["n"] == 1 and np.isnan(success["p"]) and inference.NO_INFERENCE in success["note"]
    assert float(success["difference"]) == pytest.approx(-0.3)  # the run's last checkpoint, update 400
    # --update picks another checkpoint: still one unit
    stats.main([*argv, "--out", str(tmp_path / "out"), "--no_figures", "--update", "200"])
    ko = pd.read_csv(tmp_path / "out" / "knockouts.csv")
    assert float(ko[ko["metric"] == "success_rate"]["difference"].iloc[0]) == pytest.approx(-0.2)


# ----------------------------------------------------------------------------- partial r


def visit_confounded(rng, cells=60):
    """Steps where a cell's visits drive both its LPC (fewer visits, more LPC) and its H(A|S) (a
    deterministic policy whose smoothed H falls with visits); LPC's own noise is independent of H."""
    visits = rng.integers(5, 400, cells)
    noise = rng.normal(0, 3.0, cells)
    rows = []
    for c in range(cells):
        lpc = 100 - 10 * math.log(visits[c]) + noise[c]
        for k in range(visits[c]):
            rows.append({"x": 1 + c % 10, "y": 1 + c // 10, "action": 2, "lpc": lpc, "t": k % 30})
    steps = pd.DataFrame(rows)
    steps["episode"] = np.arange(len(steps)) // 30
    steps["dist_to_target"] = rng.uniform(0, 5, len(steps))
    return steps


def test_partial_r_given_visits_removes_the_visit_confound_and_equals_a_hand_computation():
    rng = np.random.default_rng(0)
    steps = visit_confounded(rng)
    episodes = pd.DataFrame({"episode": range(steps["episode"].max() + 1), "success": True})
    data = CacheData(steps, episodes, {"config": {}, "metrics": {"success_rate": 1.0}}, None)
    row = stats.checkpoint_stats(data, "none")
    raw, partial = row["r_all_lpc_entropy"], row["r_all_lpc_entropy_given_visits"]
    assert raw > 0.8 and abs(partial) < 0.25, (raw, partial)
    # by hand: residuals of the per-cell LPC and H on log visits (numpy polyfit), then Pearson
    import seed_metrics as sm

    cells = sm.cell_statistics(steps)
    cells = cells[cells["included"]]
    z = np.log(cells["visits"].to_numpy(float))
    lpc, h = cells["lpc"].to_numpy(), cells["entropy"].to_numpy()
    rl = lpc - np.polyval(np.polyfit(z, lpc, 1), z)
    rh = h - np.polyval(np.polyfit(z, h, 1), z)
    assert partial == pytest.approx(sps.pearsonr(rl, rh).statistic, abs=1e-9)
    # and by the precision matrix of (LPC, H, log visits): -P12 / sqrt(P11 P22)
    precision = np.linalg.inv(np.corrcoef(np.vstack([lpc, h, z])))
    assert partial == pytest.approx(-precision[0, 1] / math.sqrt(precision[0, 0] * precision[1, 1]), abs=1e-9)
    # given the mean step too: the same rule with two covariates
    mean_t = cells["mean_t"].to_numpy()
    design = np.column_stack([np.ones(len(z)), z, mean_t])
    r2l = lpc - design @ np.linalg.lstsq(design, lpc, rcond=None)[0]
    r2h = h - design @ np.linalg.lstsq(design, h, rcond=None)[0]
    assert row["r_all_lpc_entropy_given_visits_step"] == pytest.approx(np.corrcoef(r2l, r2h)[0, 1], abs=1e-9)
    assert math.isnan(inference.partial_r([1.0, 2.0, 3.0], [2.0, 1.0, 5.0], [1.0, 2.0, 4.0]))  # too few cells


def test_a_float32_rounded_constant_lpc_is_one_number_everywhere():
    # LPC is recorded in float32: a homogeneous layout's constant LPC, averaged in float32 over cells
    # (or runs) with different visit counts, differs in the 7th digit; no correlation or test of that
    import seed_metrics as sm

    lpc = np.array(
        [np.full(n, np.float32(51.3333), dtype=np.float32).mean() for n in (3, 7, 1000, 12345, 99999)]
    )
    lpc = np.concatenate([lpc, lpc]).astype(float)
    assert np.ptp(lpc) > 1e-9 * lpc.max()  # the spread the old 1e-9 rule took for a real one
    entropy = np.linspace(0.1, 1.0, len(lpc))
    assert inference.constant(lpc) and not inference.constant(entropy)
    assert all(math.isnan(x) for x in sm.pearson(lpc, entropy))
    assert math.isnan(inference.partial_r(lpc, entropy, np.log(np.arange(1.0, len(lpc) + 1))))
    flat = contrasts.paired_difference(lpc[:3], lpc[5:8][::-1], "mean_lpc")
    assert flat["p"] == "no spread: no test"


# ----------------------------------------------------------------------------- matched GRU


@pytest.mark.parametrize("preset", [None, "tiny"])
def test_the_matched_grus_parameter_count_is_within_tolerance(preset):
    import train
    from conftest import TINY_PRESET

    cfg = load_config(TINY_PRESET if preset else None, {"task_id": TASK})
    match = train.matched_hidden_size(cfg)
    mop = train.policy_parameters(cfg, "mop")
    gru = train.policy_parameters(cfg, "gru", hidden_size=match["hidden_size"])
    assert match["mop_parameters"] == mop and match["gru_parameters"] == gru
    assert abs(gru / mop - 1) <= train.MATCH_TOLERANCE and abs(match["relative"] - (gru / mop - 1)) < 1e-12
    # the nearest size: one unit more or less is further from the MoP count
    for h in (match["hidden_size"] - 1, match["hidden_size"] + 1):
        assert abs(train.policy_parameters(cfg, "gru", hidden_size=h) - mop) >= abs(gru - mop)
    assert "matched GRU: hidden_size" in train.describe_match(match)
    with pytest.raises(Exception, match="more than"):
        train.matched_hidden_size(cfg, tolerance=1e-9)


# ----------------------------------------------------------------------------- multi-task difficulty


def test_median_interval_is_the_order_statistic_interval_with_its_coverage():
    got = difficulty.median_interval([300, 100, 200])
    assert (got["median"], got["ci_low"], got["ci_high"]) == (200, 100, 300)
    assert got["coverage"] == pytest.approx(0.75)  # 1 - 2 / 2**3
    six = difficulty.median_interval([1, 2, 3, 4, 5, 6])
    assert six["coverage"] == pytest.approx(1 - 2 * sps.binom.cdf(0, 6, 0.5)) and six["coverage"] >= 0.95
    assert difficulty.updates_to_threshold(
        [{"update": 25, "train/ce": 1.4}, {"update": 50, "train/ce": 0.9}], 1.0
    ) == (
        50,
        True,
    )
    assert difficulty.updates_to_threshold([{"update": 25, "train/ce": 1.4}], 1.0) == (25, False)


def test_a_multi_task_ranking_with_overlapping_intervals_gives_no_verdict():
    from mop.routing_analysis import level_difficulty_summary, routing_by_level

    def episodes(lpc, bot):
        n = len(lpc)
        return pd.DataFrame({"episode": range(n), "mean_lpc": lpc, "length": [10] * n, "success": True,
                             "optimal_length": pd.array(bot, dtype="Int64"), "layer_0_expert_0": 0.5})  # fmt: skip

    # bot path lengths 5-9 and 6-10: the longer is not resolved as the harder
    levels = {
        "BabyAI-GoToRedBallGrey-v0": episodes([10, 11, 12, 13, 14], [6, 8, 10, 7, 9]),
        "BabyAI-GoToLocal-v0": episodes([12, 13, 14, 15, 16], [5, 7, 9, 6, 8]),
    }
    table = routing_by_level(levels)
    summary = level_difficulty_summary(table, levels)
    assert summary["hardest"] is None and summary["easiest"] is None
    assert "overlap" in summary["verdict"] and summary["lpc_difference"] is None
    # three levels spending the same LPC: Spearman's rho is undefined, so None (not NaN in the JSON)
    same = {level: episodes([10] * 5, [4 + k, 5 + k, 6 + k, 7 + k, 8 + k]) for k, level in enumerate(levels)}
    same["BabyAI-GoTo-v0"] = episodes([10] * 5, [30, 31, 32, 33, 34])
    flat = level_difficulty_summary(routing_by_level(same), same)
    assert flat["n_levels"] == 3 and flat["spearman_lpc_bot_path"] is None
    # learning speed: medians 200 vs 300 with overlapping ranges: no hardest; separated: named
    speeds = pd.DataFrame(
        {
            "level": ["A", "B"],
            "speed_median": [200, 300],
            "speed_ci_low": [100, 250],
            "speed_ci_high": [260, 400],
        }
    )
    assert ranking(speeds, "speed_median", "speed_ci_low", "speed_ci_high")["hardest"] is None
    speeds.loc[0, "speed_ci_high"] = 240
    ranked = ranking(speeds, "speed_median", "speed_ci_low", "speed_ci_high")
    assert (ranked["hardest"], ranked["easiest"]) == ("B", "A")


def test_routing_across_runs_has_runs_as_units():
    def ep(lpc):
        return pd.DataFrame({"mean_lpc": lpc, "length": [10, 10], "success": [True, False]})

    by_run = {(0, s): {"A": ep([10.0 + s, 12.0 + s]), "B": ep([20.0 + 3 * s * s, 22.0])} for s in range(3)}
    levels, pairs = difficulty.routing_across_runs(by_run)
    a = [11.0 + s for s in range(3)]
    b = [(20.0 + 3 * s * s + 22.0) / 2 for s in range(3)]
    row = levels.set_index("level").loc["A"]
    assert row["runs"] == 3 and row["lpc"] == pytest.approx(np.mean(a))
    low, high = sps.t.interval(0.95, 2, loc=np.mean(a), scale=sps.sem(a))
    assert (row["lpc_ci_low"], row["lpc_ci_high"]) == pytest.approx((low, high))
    pair = pairs.iloc[0]
    assert pair["p"] == pytest.approx(sps.ttest_rel(b, a).pvalue)
    assert not row["lpc_clipped"] and row["lpc_bounds"] == "[0, inf)"
    assert "normally" in row["lpc_assumes"] and "differences spread normally" in pair["assumes"]
    one = difficulty.routing_across_runs({(0, 0): {"A": ep([1.0, 2.0]), "B": ep([3.0, 4.0])}})
    assert one[0]["lpc_assumes"].eq("").all() and one[1]["assumes"].eq("").all()  # no interval: no claim
    # runs far apart: the t interval would go below 0, and LPC cannot; it is cut there and says so
    spread = {(0, s): {"A": ep([v, v])} for s, v in enumerate([1.0, 2.0, 200.0])}
    row = difficulty.routing_across_runs(spread)[0].set_index("level").loc["A"]
    assert row["lpc_ci_low"] == 0.0 and row["lpc_clipped"] and row["lpc_ci_high"] > 200


def test_learning_speed_reads_the_repeats_and_caches_per_level_and_recipe(tmp_path):
    from mop.runs import write_run_config

    cfg = vars(load_config(None, {"task_id": TASK})) | {"policy_type": "mop"}
    dirs = []
    for seed, reached in enumerate([150, 100, 300]):
        run = tmp_path / "ck" / TASK / "trial_0" / f"seed_{seed}"
        run.mkdir(parents=True)
        write_run_config(run, cfg | {"seed": seed})
        rows = [{"update": u, "train/ce": 2.0 if u < reached else 0.8} for u in range(50, 400, 50)]
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        dirs.append(run)
    other = tmp_path / "ck" / TASK / "trial_1" / "seed_0"  # another recipe: not a repeat
    other.mkdir(parents=True)
    write_run_config(other, cfg | {"lr": 1e-4})
    multi = conditions.recipe(cfg | {"task_id": f"{TASK},BabyAI-PickupLoc-v0"})
    found = difficulty.single_task_runs([tmp_path / "ck"], TASK, multi)
    assert sorted(found) == sorted(dirs)
    speed = difficulty.learning_speed(TASK, found, 1.0, "mop-abc", tmp_path / "cache")
    assert speed["updates"] == [150, 100, 300] and speed["repeats"] == 3 and speed["censored"] == 0
    assert (speed["speed_median"], speed["speed_ci_low"], speed["speed_ci_high"]) == (150, 100, 300)
    cached = tmp_path / "cache" / "_learning_speed" / TASK / "mop-abc.json"
    assert json.loads(cached.read_text())["updates"] == [150, 100, 300]
    (dirs[0] / "metrics.jsonl").write_text("")  # the cache answers for the same runs and threshold
    assert difficulty.learning_speed(TASK, found, 1.0, "mop-abc", tmp_path / "cache")["updates"] == [
        150,
        100,
        300,
    ]
    fewer = difficulty.learning_speed(TASK, found[:2], 1.0, "mop-abc", tmp_path / "cache")
    assert math.isnan(fewer["speed_median"]) and "needs 3" in fewer["note"]


@pytest.mark.slow  # trains 2 tiny multi-task runs and 3 single-task repeats per level, evaluates them
def test_stats_by_level_aggregates_multi_task_runs_across_seeds(tmp_path):
    import batch_eval
    import train_mop
    from conftest import TINY_PRESET

    levels = "BabyAI-GoToRedBallGrey-v0,BabyAI-GoToLocal-v0"
    ck = tmp_path / "ck"
    for task, seeds in [(levels, (0, 1)), *[(level, (0, 1, 2)) for level in levels.split(",")]]:
        for seed in seeds:
            cfg = load_config(
                TINY_PRESET, {"task_id": task, "seed": seed, "checkpoint_dir": str(ck), "log_interval": 1}
            )
            train_mop.main(cfg, progress=False)
    results = tmp_path / "results.csv"
    batch_eval.main(["--checkpoint_dir", str(ck), "--task_id", levels, "--final_only", "--num_episodes", "8",
                     "--results_path", str(results), "--cache_dir", str(tmp_path / "cache")])  # fmt: skip
    out = tmp_path / "out"
    summary = stats.main(["--task_id", levels, "--results_path", str(results), "--single_task_dir", str(ck),
                          "--out", str(out), "--ce_threshold", "5", "--time_course"])  # fmt: skip
    by_level = pd.read_csv(out / "by_level.csv")
    course = pd.read_csv(out / "time_course.csv")  # one evaluated update here: the final one
    assert len(course) == 2 and set(course["update"]) == {by_level_update(results)}
    assert np.allclose(course.sort_values("level")["lpc"], by_level.sort_values("level")["lpc"])
    assert any(name.startswith("time_course_") and name.endswith(".png") for name in summary["written"])
    assert sorted(by_level["level"]) == sorted(levels.split(",")) and (by_level["runs"] == 2).all()
    assert (by_level["repeats"] == 3).all()  # ce <= 5 at the first log: every repeat reaches it
    verdict = next(iter(summary["verdicts"].values()))
    assert verdict["learning_speed"]["hardest"] is None  # equal medians: the intervals overlap
    assert len(pd.read_csv(out / "level_pairs.csv")) == 1


def by_level_update(results_path) -> int:
    return int(pd.read_csv(results_path)["update"].max())


def _episodes(rng, lpc: float, n: int = 6) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "mean_lpc": rng.normal(lpc, 5.0, n),
            "length": rng.integers(5, 20, n),
            "success": rng.random(n) < 0.8,
        }
    )


def test_the_time_course_pools_no_update_some_run_lacks_and_holms_over_the_course():
    rng = np.random.default_rng(3)
    a, b = "BabyAI-GoToLocal-v0", "BabyAI-PickupLoc-v0"
    runs = [(0, s) for s in range(3)]
    course = {
        u: {run: {a: _episodes(rng, 100.0), b: _episodes(rng, 100.0 + shift)} for run in runs}
        for u, shift in ((100, 0.0), (200, 40.0))
    }
    course[300] = {run: {a: _episodes(rng, 90.0), b: _episodes(rng, 150.0)} for run in runs[:2]}
    levels, pairs, notes = difficulty.routing_time_course(course)
    assert sorted(set(levels["update"])) == [100, 200] and len(levels) == 4
    assert len(notes) == 1 and "update 300" in notes[0] and "(0, 2)" in notes[0]
    single = [difficulty.routing_across_runs(course[u])[1]["p"].iloc[0] for u in (100, 200)]
    assert np.allclose(pairs["p"], single)
    assert np.allclose(pairs["p_holm"], inference.holm(single))  # the family: 2 updates x 1 pair
    assert pairs["family"].iloc[0].endswith("2 update(s) x 1 pair(s) of levels = 2 tests")
    for u in (100, 200):  # each update's level rows are routing_across_runs' own
        own = difficulty.routing_across_runs(course[u])[0].set_index("level")
        mine = levels[levels["update"] == u].set_index("level")
        assert np.allclose(mine.loc[[a, b], "lpc"], own.loc[[a, b], "lpc"])


def test_a_homogeneous_layouts_lpc_from_float16_weights_is_one_number():
    # the cache stores router weights as float16, which sum to 1 only to ~3e-4: LPC derived from
    # them varied by 0.3 around 867 on the sweep's [[17,17,17]]*3 runs, enough for a correlation
    from mop.routing_cache import derive_step_columns, weight_column

    rng = np.random.default_rng(0)
    n, sizes = 400, [[17, 17, 17]] * 3
    cols = {"episode": np.repeat(np.arange(4), n // 4), "t": np.tile(np.arange(n // 4), 4)}
    cols["x"], cols["y"] = rng.integers(1, 7, n), rng.integers(1, 7, n)
    for k in range(3):
        w = rng.dirichlet(np.ones(3), size=n).astype(np.float16).astype(np.float32)
        for j in range(3):
            cols[weight_column(k, j)] = w[:, j]
    assert np.abs(w.sum(1) - 1).max() > 1e-4  # the storage noise this is about
    none = pd.array([None] * 4, dtype="Int64")
    episodes = pd.DataFrame(
        {
            "episode": range(4),
            "t_unlocked": none,
            "t_pick": none,
            "t_drop": none,
            "door_x": none,
            "door_y": none,
        }
    )
    steps = derive_step_columns(cols, episodes, {"expert_hidden_sizes": sizes, "lpc_exponent": 2.0})
    assert steps["lpc"].to_numpy() == pytest.approx(np.full(n, 3 * 17.0**2), rel=1e-12)
    assert inference.constant(steps["lpc"].to_numpy())
