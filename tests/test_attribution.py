"""Attribution through time (attribution.py, mop/attribution.py): completeness of integrated
gradients, the delay-line toy whose router reads one cell k steps back, parameter randomisation,
the cell/channel split, the bad inputs, and one end-to-end run on a tiny checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import attribution
from mixture_of_experts import MixtureOfExpertsPolicy, MoPConfig
from mop.attribution import (
    AttributionError,
    Target,
    check_window,
    delay_toy_policy,
    integrated_gradients,
    map_rank_correlation,
    parse_target,
    randomized_copy,
    split_by_cell,
)
from mop.babyai_env import encode_obs, obs_dim

DELAY, CELL, CHANNEL, DISTRACTOR = 3, (2, 4), 1, (5, 1)
ROUTER = Target("router", 0, 1)


def toy_episode(T: int = 14, encoding: str = "raw", seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    image = torch.randint(1, 6, (T, 7, 7, 3), generator=g)
    return encode_obs(image, torch.randint(0, 4, (T,), generator=g), torch.zeros(T), encoding).float()


@pytest.fixture(scope="module")
def toy():
    return delay_toy_policy(DELAY, CELL, CHANNEL, DISTRACTOR)


def test_completeness_within_one_percent(toy):
    obs = toy_episode()
    result = integrated_gradients(toy, obs, torch.zeros(2), 11, 6, ROUTER)
    assert abs(result.delta) > 0.05  # a real change to account for
    assert result.completeness_error < 0.01
    # a random (not hand-set) policy with the one-hot input, both kinds of target, the mean baseline
    torch.manual_seed(1)
    policy = MixtureOfExpertsPolicy(
        MoPConfig(
            obs_dim=obs_dim("onehot"),
            lang_dim=4,
            intermediate_dim=16,
            expert_hidden_sizes=((0, 4, 8), (0, 8)),
            router_hidden_size=8,
            input_encoder="bilinear",
            layer_norm_residual=True,
        )
    ).eval()
    obs = toy_episode(encoding="onehot")
    for target in (Target("router", 1, 1), Target("action")):
        result = integrated_gradients(policy, obs[:8], torch.randn(4), 7, 3, target, 2, obs.mean(0))
        assert result.completeness_error < 0.01, target
        assert np.isclose(result.total, result.delta, rtol=0.01)


def test_toy_attribution_peaks_at_the_step_and_cell_the_router_reads(toy):
    obs = toy_episode()
    t, k = 11, 6
    result = integrated_gradients(toy, obs, torch.zeros(2), t, k, ROUTER)
    profile = np.abs(result.profile)
    assert int(np.argmax(profile)) - k == -DELAY
    assert profile[k - DELAY] > 0.8 * profile.sum()
    cells, extras = split_by_cell(result.attributions, "raw")
    w, x, y, c = np.unravel_index(np.abs(cells).argmax(), cells.shape)
    assert (w - k, (x, y), c) == (-DELAY, CELL, CHANNEL)
    assert np.isclose(cells.sum() + extras.sum(), result.total)
    # the distractor read at t itself gets the second place, at step t and its own cell
    cells[k - DELAY, CELL[0], CELL[1], CHANNEL] = 0
    w, x, y, c = np.unravel_index(np.abs(cells).argmax(), cells.shape)
    assert (w - k, (x, y), c) == (0, DISTRACTOR, 0)


def test_attribution_runs_through_the_recurrence_from_the_episode_start(toy):
    """The steps before t-k are not part of the window but set the memory at t-k: with the window
    ending before the read step's delay, nothing in the window matters."""
    obs = toy_episode()
    short = integrated_gradients(toy, obs, torch.zeros(2), 11, DELAY - 1, ROUTER)
    assert abs(short.profile[:-1]).max() < 1e-3  # only the distractor at t is in reach
    other = obs.clone()
    other[11 - DELAY, CHANNEL * 49 + CELL[0] * 7 + CELL[1]] += 3.0  # before the window
    moved = integrated_gradients(toy, other, torch.zeros(2), 11, DELAY - 1, ROUTER)
    assert abs(moved.output - short.output) > 1e-3  # ... but it still sets y(x) through the memory


def test_randomised_weights_change_the_map(toy):
    obs = toy_episode()
    before = integrated_gradients(toy, obs, torch.zeros(2), 11, 6, ROUTER)
    after = integrated_gradients(randomized_copy(toy, seed=3), obs, torch.zeros(2), 11, 6, ROUTER)
    cells_before, _ = split_by_cell(before.attributions, "raw")
    cells_after, _ = split_by_cell(after.attributions, "raw")
    rho = map_rank_correlation(cells_before, cells_after)
    assert rho < 0.3
    assert map_rank_correlation(cells_before, cells_before * 2) == pytest.approx(1.0)
    assert toy.layers[0].router.out.weight[1, DELAY] == 4.0  # the original is left alone


def test_split_by_cell_places_each_number_in_its_cell_and_channel():
    for encoding in ("raw", "onehot"):
        obs = toy_episode(3, encoding)
        image = torch.zeros(1, 7, 7, 3, dtype=torch.long)
        image[0, 5, 2] = torch.tensor([4, 3, 1])  # cell x = 5, y = 2
        one = encode_obs(image, torch.zeros(1), torch.ones(1), encoding)[0].numpy()
        zero = encode_obs(
            torch.zeros(1, 7, 7, 3, dtype=torch.long), torch.zeros(1), torch.zeros(1), encoding
        )[0].numpy()
        cells, extras = split_by_cell(np.abs(one - zero)[None], encoding)  # |.|: a one-hot moves, sums to 0
        assert set(zip(*np.nonzero(cells[0])[:2])) == {(5, 2)}, encoding
        assert extras[0, 1] == 1.0 and extras[0, 0] == 0.0
        assert obs.shape[-1] == len(one)


def test_bad_targets_and_windows_name_their_flag(toy):
    assert parse_target("router:layer0:expert1", toy) == Target("router", 0, 1)
    assert parse_target("action:3", toy) == Target("action", None, 3)
    for spec, flag in (
        ("router:layer1:expert0", "layers 0..0"),
        ("router:layer0:expert2", "experts 0..1"),
        ("action:9", "actions 0..6"),
        ("weights", "use router"),
    ):
        with pytest.raises(AttributionError, match="--target") as e:
            parse_target(spec, toy)
        assert flag in str(e.value)
    for step, window, length, flag in (
        (5, -1, None, "--window"),
        (3, 4, None, "--window"),
        (-1, 0, None, "--step"),
        (9, 2, 9, "--step"),
    ):
        with pytest.raises(AttributionError, match=flag):
            check_window(step, window, length)
    check_window(8, 8, 9)


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["--checkpoint", "/nonexistent/ck.pt", "--step", "4", "--window", "2"], "--checkpoint"),
        (["--checkpoint", "X", "--step", "4", "--window", "5"], "--window"),
        (["--checkpoint", "X", "--step", "4", "--window", "-1"], "--window"),
        (["--checkpoint", "X", "--window", "2"], "--step"),
        (["--checkpoint", "X", "--step", "4", "--window", "2", "--ig_steps", "0"], "--ig_steps"),
        (["--checkpoint", "X", "--step", "4", "--window", "2", "--baseline", "blur"], "--baseline"),
    ],
)
def test_command_line_refuses_bad_input_before_anything_is_written(tmp_path, capsys, argv, flag):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        attribution.main([*argv, "--out_dir", str(out)])
    message = capsys.readouterr().err
    assert e.value.code == 2
    assert message.startswith("error:") and flag in message and "\n" not in message.strip()
    assert not out.exists()


# ----------------------------------------------------------------------------- a tiny checkpoint


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    import train_mop
    from tests.conftest import tiny_config

    root = tmp_path_factory.mktemp("attribution_run")
    summary = train_mop.main(tiny_config(root / "checkpoints", task_id="BabyAI-GoToLocal-v0"), progress=False)
    return summary["checkpoints"][-1]


@pytest.mark.slow
def test_end_to_end_example_and_aggregate(tiny_checkpoint, tmp_path, capsys):
    import pandas as pd

    out = tmp_path / "out"
    summary = attribution.main(
        [
            "--checkpoint",
            str(tiny_checkpoint),
            "--episode",
            "1",
            "--step",
            "6",
            "--window",
            "4",
            "--target",
            "router:layer1:expert1",
            "--ig_steps",
            "32",
            "--out_dir",
            str(out),
        ]
    )
    table = pd.read_csv(summary["csv"])
    assert list(table.columns) == ["step_offset", "t", "x", "y", "channel", "value"]
    assert len(table) == 5 * (7 * 7 * 3 + 2) and sorted(table["step_offset"].unique()) == [-4, -3, -2, -1, 0]
    assert table["value"].sum() == pytest.approx(
        summary["output"] - summary["baseline_output"], rel=0.01, abs=1e-6
    )
    assert summary["completeness_error"] < 0.01
    assert -1 <= summary["randomized_rank_correlation"] <= 1
    assert (out / summary["figure"].split("/")[-1]).stat().st_size > 10_000
    agg = attribution.main(
        [
            "--checkpoint",
            str(tiny_checkpoint),
            "--aggregate",
            "--num_episodes",
            "2",
            "--window",
            "3",
            "--stride",
            "8",
            "--target",
            "action",
            "--ig_steps",
            "16",
            "--out_dir",
            str(out),
        ]
    )
    table = pd.read_csv(agg["summary_csv"])
    pooled = table[table["subgoal"] == "all"]
    assert sorted(pooled["step_offset"]) == [-3, -2, -1, 0]
    assert pooled["mean_abs_share"].sum() == pytest.approx(1.0, abs=1e-6)
    assert set(agg["subgoals"]) <= {"GoNextTo", "Open", "Pickup", "Drop", "Explore", "Close", "none"}


@pytest.mark.slow
@pytest.mark.parametrize(
    "extra, flag",
    [
        (["--step", "4", "--window", "2", "--target", "router:layer5:expert0"], "--target"),
        (["--step", "4", "--window", "2", "--target", "router:layer0:expert7"], "--target"),
        (["--step", "100000", "--window", "2"], "--step"),
    ],
)
def test_bad_input_that_needs_the_checkpoint(tiny_checkpoint, tmp_path, capsys, extra, flag):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        attribution.main(["--checkpoint", str(tiny_checkpoint), *extra, "--out_dir", str(out)])
    message = capsys.readouterr().err
    assert e.value.code == 2 and message.startswith("error:") and flag in message
    assert not out.exists()


def test_rank_correlation_can_leave_out_the_entries_every_map_shares():
    """Entries where the input equals the baseline are 0 in any model's map: their ties alone
    correlate two unrelated maps; `where` leaves them out."""
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=200), rng.normal(size=200)
    a[:150] = b[:150] = 0.0  # 150 shared zeros, 50 unrelated entries
    assert map_rank_correlation(a, b) > 0.5
    assert abs(map_rank_correlation(a, b, np.arange(200) >= 150)) < 0.3


def test_replayed_subgoals_equal_the_bots_own_stack():
    """replay_subgoals (the aggregate's grouping) on the bot's own episode gives the top of the
    stack the bot had at each step as it acted."""
    from mop.attribution import replay_subgoals, subgoal_name
    from mop.babyai_env import SafeBot, make_env, quiet_reset

    env = make_env("BabyAI-Unlock-v0")
    quiet_reset(env, 0)
    bot, actions, tops = SafeBot(env), [], []
    for _ in range(300):
        actions.append(bot.label(actions[-1] if actions else None))
        tops.append(subgoal_name(bot.bot.stack[-1]))
        _, _, terminated, truncated, _ = env.step(actions[-1])
        if terminated or truncated:
            break
    assert replay_subgoals("BabyAI-Unlock-v0", 0, actions) == tops
    assert {"GoNextTo", "Pickup", "Open"} <= set(tops)


def test_path_in_chunks_equals_one_pass(toy, monkeypatch):
    import mop.attribution as attribution_numbers

    obs = toy_episode()
    whole = integrated_gradients(toy, obs, torch.zeros(2), 11, 6, ROUTER, ig_steps=16)
    monkeypatch.setattr(attribution_numbers, "PATH_NUMBERS", 7 * 152 * 3)  # 3 path points a pass
    parts = integrated_gradients(toy, obs, torch.zeros(2), 11, 6, ROUTER, ig_steps=16)
    np.testing.assert_allclose(parts.attributions, whole.attributions, rtol=1e-5, atol=1e-9)
    assert (parts.output, parts.baseline_output) == pytest.approx((whole.output, whole.baseline_output))


def test_gru_baseline_has_action_targets_only():
    from mixture_of_experts import GRUPolicy

    torch.manual_seed(0)
    policy = GRUPolicy(152, 2, 8).eval()
    with pytest.raises(AttributionError, match="--target.*no routers"):
        parse_target("router:layer0:expert0", policy)
    result = integrated_gradients(
        policy, toy_episode(), torch.zeros(2), 6, 3, parse_target("action", policy), 1
    )
    assert result.completeness_error < 0.01


@pytest.mark.slow
def test_the_attributed_episode_is_evaluations_episode(tiny_checkpoint):
    """record_episodes plays episode N alone; evaluation plays it among others: same actions."""
    from eval_mop import run_episodes
    from mop.experiment import load_policy

    policy, encoder, config = load_policy(tiny_checkpoint)
    steps, _ = run_episodes(
        policy, encoder, config, config["task_id"], [0, 1, 2], num_envs=3, measure_bot_paths=False
    )
    record = attribution.record_episodes(policy, encoder, config, config["task_id"], [1])[1]
    assert steps[steps["episode"] == 1].sort_values("t")["action"].tolist() == record["actions"]
    assert record["obs"].shape == (len(record["actions"]), 985)
