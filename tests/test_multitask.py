"""Multi-task MoP (issue 12 §2): one policy on a comma list of levels.

Envs are spread over the levels by --task_weights (deterministically), training logs per-level
success, the run lives under a multi-task folder name that batch_eval finds and parses back, each
trained level gets its own evaluation row and cache, and routing_analysis.routing_by_level gives
the numbers of the routing-by-level figure.
"""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import batch_eval
from mop.babyai_env import check_task_ids, env_levels
from mop.collection import Episode, ParallelCollector
from mop.experiment import ConfigError, load_config
from mop.results import EXTRA_COLUMNS, LEGACY_COLUMNS, merge_results, read_results, result_row
from mop.routing_analysis import (
    clustered_difference,
    clustered_mean,
    curriculum_rank,
    level_difficulty_summary,
    routing_by_level,
)
from mop.runs import CheckpointRef, RunId, find_checkpoints, parse_run_path, run_task_ids, run_task_name

LEVELS = ["BabyAI-GoToLocal-v0", "BabyAI-PickupLoc-v0", "BabyAI-UnlockPickup-v0"]
TASKS = ",".join(LEVELS)


# ----------------------------------------------------------------------------- envs per level


def test_envs_are_spread_by_weight_deterministically_and_interleaved():
    levels = env_levels(LEVELS, 16, [0.5, 0.25, 0.25])
    assert [levels.count(t) for t in LEVELS] == [8, 4, 4]
    assert levels == env_levels(LEVELS, 16, [0.5, 0.25, 0.25])  # the same every time
    # interleaved: the two consecutive halves a 2-worker run gets each hold every level
    assert set(levels[:8]) == set(levels[8:]) == set(LEVELS)
    equal = env_levels(LEVELS, 16)
    assert [equal.count(t) for t in LEVELS] == [6, 5, 5]  # largest remainder, ties to the first
    assert equal[:3] == LEVELS


def test_every_level_needs_an_env_and_one_weight():
    with pytest.raises(ValueError, match="without an env"):
        env_levels(LEVELS, 4, [10.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="one weight per level"):
        env_levels(LEVELS, 16, [1.0, 1.0])


def test_collector_gives_each_env_its_level_and_episodes_name_it():
    with ParallelCollector(
        "BabyAI-GoToRedBallGrey-v0,BabyAI-GoToLocal-v0",
        num_envs=4,
        num_workers=0,
        run_seed=0,
        max_steps=None,
        obs_encoding="onehot",
        policy_factory=None,
        encoder_factory=None,
        task_weights=[3.0, 1.0],
    ) as collector:
        slots = collector.local.slots
        assert [s.task_id for s in slots] == env_levels(
            ["BabyAI-GoToRedBallGrey-v0", "BabyAI-GoToLocal-v0"], 4, [3.0, 1.0]
        )
        assert [s.env.spec.id for s in slots] == [s.task_id for s in slots]
        assert slots[0].finish(False, None).task_id == slots[0].task_id


# ----------------------------------------------------------------------------- config


def test_comma_list_task_id_and_weights_are_accepted():
    cfg = load_config(None, {"task_id": TASKS, "task_weights": "0.5,0.25,0.25"})
    assert cfg.task_id == TASKS and cfg.task_weights == [0.5, 0.25, 0.25]
    assert load_config(None, {"task_id": TASKS, "task_weights": [2, 1, 1]}).task_weights == [2.0, 1.0, 1.0]
    assert check_task_ids(TASKS) == LEVELS


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"task_weights": "0.5,0.5"}, "2 task_weights for 3 level"),
        ({"task_weights": "1,-1,1"}, "positive finite"),
        ({"task_weights": "1,0,1"}, "positive finite"),
        ({"task_weights": "1,nan,1"}, "positive finite"),
        ({"task_weights": "1,inf,1"}, "positive finite"),
        ({"task_weights": "a,b,c"}, "comma list of numbers"),
        ({"task_weights": "1,1,1", "num_envs": 2}, "without an env"),
        ({"task_id": "BabyAI-GoToLocal-v0,BabyAI-GoToLocal-v0"}, "more than once"),
        ({"task_id": "BabyAI-GoToLocal-v0,BabyAI-Pickuploc-v0"}, "did you mean BabyAI-PickupLoc-v0"),
        ({"task_id": "BabyAI-GoToLocal-v0,"}, "empty level"),
    ],
)
def test_bad_multi_task_config_is_one_line(overrides, message):
    with pytest.raises(ConfigError, match=message) as e:
        load_config(None, {"task_id": TASKS, **overrides})
    assert "\n" not in str(e.value)


# ----------------------------------------------------------------------------- per-level metrics


def test_per_level_success_is_logged_and_single_task_keys_are_unchanged():
    from mop.imitation import TrainState

    def chunk(episodes):
        return {"slot_states": None, "done": np.zeros((2, 2), bool), "episodes": list(enumerate(episodes))}

    def episode(task, success, bot_steps=None):
        return Episode(0, 1, 10, success, None, bot_steps, "go to the red ball", task)

    state = TrainState.start(load_config(None, {"task_id": TASKS, "recent_window": 2}), None)
    state.record(
        chunk(
            [
                episode(LEVELS[0], True, 5),
                episode(LEVELS[0], False),
                episode(LEVELS[0], False),
                episode(LEVELS[1], True),
            ]
        ),
        {},
    )
    row = state.log_row()
    assert row[f"train/success_recent/{LEVELS[0]}"] == 0.0  # window 2: the last two of its level
    assert row[f"train/success_recent/{LEVELS[1]}"] == 1.0
    assert math.isnan(row[f"train/success_recent/{LEVELS[2]}"])  # no episode yet
    assert row[f"train/path_ratio_recent/{LEVELS[0]}"] == 2.0
    assert row[f"episodes/total/{LEVELS[0]}"] == 3 and row["episodes/total"] == 4
    assert row["train/success_recent"] == 0.5  # the overall window is kept
    # the per-level windows are plain lists in RunStats: --resume keeps them
    assert state.stats.recent_by_level[LEVELS[0]] == {
        "episodes": 3,
        "success": [0.0, 0.0],
        "path_ratio": [2.0],
    }

    single = TrainState.start(load_config(None, {"task_id": LEVELS[0]}), None)
    single.record(chunk([episode(LEVELS[0], True)]), {})
    assert not [k for k in single.log_row() if k.count("/") > 1]


# ----------------------------------------------------------------------------- run names


def test_multi_task_run_name_round_trips_through_runs(tmp_path):
    run = RunId(TASKS, trial=2, seed=1)
    assert run.task_id == "multi_GoToLocal+PickupLoc+UnlockPickup" == run_task_name(TASKS)
    assert run.levels == LEVELS == run_task_ids(run.task_id)
    assert RunId.of({"task_id": TASKS, "trial": 2, "seed": 1}) == run
    path = tmp_path / "ck" / run.subpath / "checkpoint_50.pt"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")
    assert parse_run_path(path.relative_to(tmp_path / "ck")) == (run, 50)
    (ref,) = find_checkpoints([tmp_path / "ck"])
    assert (ref.run, ref.update) == (run, 50)
    assert RunId(LEVELS[0], 0).subpath == Path(LEVELS[0]) / "trial_0"  # single-task: unchanged


def test_batch_eval_plans_one_evaluation_per_level():
    multi = CheckpointRef(
        "ck/multi_GoToLocal+PickupLoc+UnlockPickup/trial_0/checkpoint_final.pt",
        run_task_name(TASKS),
        0,
        None,
        None,
    )
    single = CheckpointRef("ck/BabyAI-GoToLocal-v0/trial_0/checkpoint_final.pt", LEVELS[0], 0, None, None)
    empty = read_results("/nonexistent/results.csv")
    jobs = batch_eval.plan_jobs([multi, single], empty, None, "none", False)
    assert jobs == [(multi, t) for t in LEVELS] + [(single, None)]
    # --task_id keeps the runs trained on that level, and a multi-task run is evaluated on it only
    assert batch_eval.select([multi, single], LEVELS[1], None, None, None, False) == [multi]
    assert batch_eval.plan_jobs([multi], empty, None, "none", False, LEVELS[1]) == [(multi, LEVELS[1])]
    assert batch_eval.select([multi, single], run_task_name(TASKS), None, None, None, False) == [multi]
    done = pd.DataFrame(
        [{"checkpoint_path": multi.path, "task_id": LEVELS[0], "eval_task_id": LEVELS[0], "knockout": "none"}]
    )
    assert batch_eval.plan_jobs([multi], done, None, "none", False) == [(multi, t) for t in LEVELS[1:]]
    assert batch_eval.plan([multi, single], done, None, "none", False) == [multi, single]


def test_result_rows_name_the_level_and_the_trained_levels(tmp_path):
    config = {"task_id": TASKS, "trial": 0, "policy_type": "mop", "expert_hidden_sizes": [[0, 8]]}
    ref = CheckpointRef("ck/x/trial_0/checkpoint_final.pt", run_task_name(TASKS), 0, None, None)
    metrics = {"eval_task_id": LEVELS[1], "success_rate": 0.5, "knockout": "none"}
    row = result_row(ref, config, metrics, None)
    assert (row["task_id"], row["eval_task_id"], row["trained_tasks"]) == (LEVELS[1], LEVELS[1], TASKS)
    single = result_row(ref, {**config, "task_id": LEVELS[0]}, {**metrics, "eval_task_id": LEVELS[0]}, None)
    assert "trained_tasks" not in single
    path = tmp_path / "results.csv"
    table = merge_results(path, [single])
    assert list(table.columns[: len(LEGACY_COLUMNS + EXTRA_COLUMNS)]) == (LEGACY_COLUMNS + EXTRA_COLUMNS)
    assert "trained_tasks" not in table.columns  # single-task CSVs keep exactly their columns
    table = merge_results(path, [row])
    assert list(table.columns).index("trained_tasks") == len(LEGACY_COLUMNS + EXTRA_COLUMNS)
    assert read_results(path)["trained_tasks"].tolist().count(TASKS) == 1


# ----------------------------------------------------------------------------- routing by level


def _episodes(mean_lpc, lengths, bot, w0=0.5):
    n = len(mean_lpc)
    return pd.DataFrame(
        {
            "episode": range(n),
            "mean_lpc": mean_lpc,
            "length": lengths,
            "success": [True] * (n - 1) + [False],
            "optimal_length": pd.array(bot, dtype="Int64"),
            "layer_0_expert_0": [w0] * n,
            "layer_0_expert_1": [1 - w0] * n,
        }
    )


def test_clustered_mean_is_the_per_step_mean_with_the_jackknife_error():
    v, w = np.array([1.0, 2.0, 4.0]), np.array([1.0, 1.0, 2.0])
    mean, se, half = clustered_mean(v, w)
    assert mean == pytest.approx((1 + 2 + 8) / 4)  # per step, not per episode (7/3)
    left_out = np.array([(2 + 8) / 3, (1 + 8) / 3, (1 + 2) / 2])  # each episode left out in turn
    by_hand = math.sqrt(2 / 3 * ((left_out - left_out.mean()) ** 2).sum())
    assert se == pytest.approx(by_hand)
    assert half == pytest.approx(by_hand * 4.302652729749464)  # t(0.975, 2 df)
    assert math.isnan(clustered_mean([3.0], [2.0])[1])
    # equal weights: the plain mean's s / sqrt(n)
    x = np.array([3.0, 5.0, 4.0, 10.0])
    assert clustered_mean(x, np.ones(4))[1] == pytest.approx(x.std(ddof=1) / 2)
    # a few long episodes carry most of the steps (failures at the step limit): the linearised
    # (sandwich) error of the ratio shrank there and its interval under-covered (docs/calibration.md)
    v = np.array([400.0] * 18 + [470.0, 460.0])
    w = np.array([8.0] * 18 + [64.0, 64.0])
    mean, se, _ = clustered_mean(v, w)
    sandwich = math.sqrt(20 / 19 * ((w * (v - mean)) ** 2).sum()) / w.sum()
    assert se > 1.2 * sandwich


def test_clustered_difference_is_the_bootstrap_t_over_each_samples_clusters():
    a_v, a_w = np.array([30.0, 34.0, 32.0, 40.0, 31.0]), np.array([20.0, 64.0, 10.0, 64.0, 12.0])
    b_v, b_w = np.array([10.0, 12.0, 14.0, 11.0]), np.array([5.0, 5.0, 64.0, 6.0])
    diff, low, high = clustered_difference(a_v, a_w, b_v, b_w, resamples=200, seed=3)
    assert diff == pytest.approx(clustered_mean(a_v, a_w)[0] - clustered_mean(b_v, b_w)[0])
    # by hand: each sample resampled on its own (a's draws, then b's), t* over clustered_mean's errors
    rng = np.random.default_rng(3)
    ia, ib = rng.integers(0, 5, (200, 5)), rng.integers(0, 4, (200, 4))
    se = math.hypot(clustered_mean(a_v, a_w)[1], clustered_mean(b_v, b_w)[1])
    t = []
    for i, j in zip(ia, ib):
        (ma, sa, _), (mb, sb, _) = clustered_mean(a_v[i], a_w[i]), clustered_mean(b_v[j], b_w[j])
        if math.hypot(sa, sb) > 0:
            t.append((ma - mb - diff) / math.hypot(sa, sb))
    q_low, q_high = np.quantile(t, [0.025, 0.975])
    assert (low, high) == pytest.approx((diff - q_high * se, diff - q_low * se))
    assert low < diff < high
    # seeded: the same input gives the same interval; chunks of resamples do not change the draws
    assert clustered_difference(a_v, a_w, b_v, b_w, resamples=200, seed=3) == (diff, low, high)
    assert (
        clustered_difference(a_v, a_w, b_v, b_w, resamples=600)[1:]
        != clustered_difference(a_v, a_w, b_v, b_w, resamples=600, seed=1)[1:]
    )


def test_clustered_difference_edge_cases():
    v, w = np.array([3.0, 5.0, 4.0]), np.array([2.0, 2.0, 4.0])
    # fewer than 2 episodes in a sample: the difference, no interval; none: nothing
    diff, low, high = clustered_difference(v, w, [7.0], [3.0])
    assert diff == pytest.approx(4.0 - 7.0) and math.isnan(low) and math.isnan(high)
    assert all(math.isnan(x) for x in clustered_difference(v, w, [], []))
    # episodes without steps or without an LPC are not clusters
    diff, low, high = clustered_difference(v, w, [7.0, np.nan, 9.0, 8.0], [3.0, 3.0, 0.0, 3.0])
    assert diff == pytest.approx(4.0 - 7.5) and low < diff < high
    # no spread in either sample: no interval (a t* needs an error); spread in one is enough
    diff, low, high = clustered_difference([5.0] * 4, [1.0, 2.0, 3.0, 4.0], [2.0] * 3, [5.0] * 3)
    assert diff == 3.0 and math.isnan(low) and math.isnan(high)
    diff, low, high = clustered_difference(v, w, [2.0] * 3, [5.0] * 3)
    assert diff == pytest.approx(2.0) and low < diff < high


def test_clustered_interval_is_the_one_sample_bootstrap_t():
    from mop.routing_analysis import clustered_interval

    v, w = np.array([30.0, 34.0, 32.0, 40.0, 31.0]), np.array([20.0, 64.0, 10.0, 64.0, 12.0])
    mean, low, high = clustered_interval(v, w, resamples=200, seed=3)
    m, se, _ = clustered_mean(v, w)
    assert mean == pytest.approx(m)
    rng = np.random.default_rng(3)
    t = []
    for i in rng.integers(0, 5, (200, 5)):  # by hand: clusters resampled, t* over clustered_mean's error
        mi, si, _ = clustered_mean(v[i], w[i])
        if si > 0:
            t.append((mi - m) / si)
    q_low, q_high = np.quantile(t, [0.025, 0.975])
    assert (low, high) == pytest.approx((m - q_high * se, m - q_low * se))
    assert low < mean < high and clustered_interval(v, w, resamples=200, seed=3) == (mean, low, high)
    # one cluster or no spread: the mean, no interval; nothing: nothing
    assert clustered_interval([5.0], [3.0])[0] == 5.0 and math.isnan(clustered_interval([5.0], [3.0])[1])
    assert math.isnan(clustered_interval([2.0] * 4, [1.0, 2.0, 3.0, 4.0])[2])
    assert all(math.isnan(x) for x in clustered_interval([], []))


def test_routing_by_level_on_a_hand_made_input():
    easy = _episodes([10.0, 12.0, 14.0, 12.0], [5, 5, 5, 5], [4, 5, 6, None], w0=0.8)
    hard = _episodes([30.0, 34.0, 32.0, 32.0], [20, 20, 20, 20], [20, 22, 24, 22], w0=0.2)
    levels = {"BabyAI-UnlockPickup-v0": hard, "BabyAI-GoToLocal-v0": easy}
    table = routing_by_level(levels)
    assert table["level"].tolist() == ["BabyAI-GoToLocal-v0", "BabyAI-UnlockPickup-v0"]  # by bot path
    first = table.iloc[0]
    assert first["mean_lpc"] == pytest.approx(12.0) and first["bot_path_mean"] == pytest.approx(5.0)
    assert first["bot_paths"] == 3 and first["success_rate"] == 0.75
    assert first["lpc_ci_low"] < 12.0 < first["lpc_ci_high"]
    assert first["r_lpc_bot_path"] == pytest.approx(1.0)  # 10, 12, 14 on 4, 5, 6
    assert first["usage_layer_0_expert_0"] == pytest.approx(0.8)
    assert table["curriculum_rank"].tolist()[0] == 4 and pd.isna(table["curriculum_rank"].iloc[1])
    summary = level_difficulty_summary(table, levels)
    assert summary["hardest"] == "BabyAI-UnlockPickup-v0" and summary["lpc_difference"] == pytest.approx(20.0)
    assert summary["lpc_difference_ci_low"] > 0 and summary["verdict"].startswith("more LPC")
    # the interval is clustered_difference's over the two levels' episodes (hardest first), and says so
    _, low, high = clustered_difference(hard["mean_lpc"], hard["length"], easy["mean_lpc"], easy["length"])
    assert (summary["lpc_difference_ci_low"], summary["lpc_difference_ci_high"]) == pytest.approx((low, high))
    assert summary["lpc_difference_interval"].startswith("95% bootstrap-t over episodes")
    # successful episodes only: the last episode of each level failed
    assert first["successes"] == 3 and first["lpc_success"] == pytest.approx(12.0)
    assert table.iloc[1]["lpc_success"] == pytest.approx(32.0)
    assert summary["lpc_difference_success"] == pytest.approx(20.0)
    levels = {"BabyAI-GoToLocal-v0": easy, "BabyAI-PickupLoc-v0": easy.assign(optimal_length=9)}
    same = level_difficulty_summary(routing_by_level(levels), levels)
    assert same["verdict"].startswith("no clear")
    assert same["spearman_lpc_bot_path"] is None  # two levels: no rho
    # one successful episode on a level: the difference on successes has no interval, and says why
    levels["BabyAI-PickupLoc-v0"] = levels["BabyAI-PickupLoc-v0"].assign(success=[True, False, False, False])
    few = level_difficulty_summary(routing_by_level(levels), levels)
    assert few["lpc_difference_success"] is None and few["lpc_difference_success_ci_low"] is None
    assert few["verdict"].endswith("on successful episodes only: too few episodes, or no spread, to tell")
    assert curriculum_rank("BabyAI-GoToObj-v0") == 1 and curriculum_rank("BabyAI-BossLevel-v0") == 19


def test_three_levels_give_a_rho_but_no_p_value():
    levels = {
        "BabyAI-GoToLocal-v0": _episodes([10.0, 11.0, 12.0], [5, 5, 5], [4, 5, 6]),
        "BabyAI-PickupLoc-v0": _episodes([20.0, 21.0, 22.0], [5, 5, 5], [7, 8, 9]),
        "BabyAI-UnlockPickup-v0": _episodes([15.0, 16.0, 17.0], [5, 5, 5], [20, 21, 22]),
    }
    summary = level_difficulty_summary(routing_by_level(levels), levels)
    assert (
        summary["spearman_lpc_bot_path"] == pytest.approx(0.5) and summary["spearman_lpc_bot_path_p"] is None
    )
    assert summary["n_curriculum"] == 2


# ----------------------------------------------------------------------------- a real tiny run


@pytest.mark.slow
def test_tiny_multi_task_run_evaluates_and_plots_per_level(tmp_path, monkeypatch):
    import eval_mop
    import render_plots
    import train_mop
    from conftest import tiny_config
    from mop.experiment import read_metrics

    levels = ["BabyAI-GoToRedBallGrey-v0", "BabyAI-GoToLocal-v0"]
    cfg = tiny_config(tmp_path / "checkpoints", task_id=",".join(levels), task_weights="3,1")
    summary = train_mop.main(cfg, progress=False)
    run_dir = Path(summary["run_dir"])
    assert run_dir == tmp_path / "checkpoints" / "multi_GoToRedBallGrey+GoToLocal" / "trial_0"
    assert json.loads((run_dir / "config.json").read_text())["task_id"] == ",".join(levels)
    row = read_metrics(run_dir / "metrics.jsonl")[-1]
    assert {f"train/success_recent/{t}" for t in levels} <= set(row) and "train/success_recent" in row
    # --resume keeps the per-level counters (RunStats) and goes on counting
    train_mop.main(
        tiny_config(tmp_path / "checkpoints", task_id=",".join(levels), task_weights="3,1", num_updates=9),
        resume=True,
        progress=False,
    )
    resumed = read_metrics(run_dir / "metrics.jsonl")[-1]
    assert resumed["update"] == 9
    assert all(resumed[f"episodes/total/{t}"] >= row[f"episodes/total/{t}"] for t in levels)
    assert sum(resumed[f"episodes/total/{t}"] for t in levels) == resumed["episodes/total"]
    with pytest.raises(eval_mop.EvalError, match="several levels"):
        eval_mop.evaluate(run_dir / "checkpoint_final.pt", eval_mop.EvalOptions(num_episodes=2))

    monkeypatch.chdir(tmp_path)
    batch_eval.main(["--num_episodes", "4", "--final_only"])
    table = read_results("evaluation_results.csv")
    assert sorted(table["task_id"]) == sorted(levels) == sorted(table["eval_task_id"])
    assert set(table["trained_tasks"]) == {",".join(levels)}
    for cache in table["cache_path"]:
        assert (Path(cache) / "episodes.parquet").is_file() and "/eval_BabyAI-" in cache
    paths = render_plots.render_levels("evaluation_results.csv", "plots")
    assert paths == [Path("plots/multi_GoToRedBallGrey+GoToLocal/trial_0/update_9/routing_by_level.png")]
    numbers = pd.read_csv(paths[0].with_suffix(".csv"))
    assert sorted(numbers["level"]) == sorted(levels) and (numbers["episodes"] == 4).all()
