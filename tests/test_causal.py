"""Interventions on experts (mixture_of_experts: zero, route_around, swap) and causal.py: hand
computations on toy layers, the numbers of mop/causal.py on data whose truth is known, the bad
inputs (one error line, exit 2, nothing written) and a tiny end-to-end run (slow)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats as sps

import causal as causal_stage
from mixture_of_experts import (
    Intervention,
    MixtureOfExpertsPolicy,
    MoELayer,
    MoPConfig,
    build_policy,
    intervene_weights,
)
from mop import causal
from tests.conftest import tiny_config

# ----------------------------------------------------------------------------- the model


def test_intervene_weights_by_hand():
    w = torch.tensor([[0.5, 0.3, 0.2]])
    assert torch.allclose(intervene_weights(w, "zero", 1), torch.tensor([[0.5, 0.0, 0.2]]))
    assert torch.allclose(
        intervene_weights(w, "route_around", 1), torch.tensor([[0.5 / 0.7, 0.0, 0.2 / 0.7]])
    )
    assert torch.allclose(intervene_weights(w, "swap", 1, 2), torch.tensor([[0.5, 0.0, 0.5]]))
    assert torch.allclose(intervene_weights(w, "swap", 0, 1), torch.tensor([[0.0, 0.8, 0.2]]))
    with pytest.raises(ValueError, match="another expert"):
        intervene_weights(w, "swap", 1, 1)
    with pytest.raises(ValueError, match="must be one of"):
        intervene_weights(w, "ablate", 1)


def _toy_layer(seed: int = 0) -> tuple[MoELayer, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    layer = MoELayer(dim=3, sizes=(0, 4), router_hidden_size=5).eval()
    x = torch.randn(2, 3, 3)  # (T, B, D)
    return layer, x, torch.zeros(3, 5 + 4)  # h0 (B, R + 4)


def _by_hand(layer: MoELayer, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Router weights (T, B, 2) and the 4-unit expert's output (T, B, D), from the nn modules."""
    h_router, _ = layer.router.gru(x)
    w = torch.softmax(layer.router.out(h_router), -1)
    h_expert, _ = layer.experts[1].gru(x)
    return w, layer.experts[1].out(h_expert)


@pytest.mark.parametrize("expert", [0, 1])
def test_two_expert_layer_equals_hand_computation(expert):
    layer, x, h0 = _toy_layer()
    with torch.no_grad():
        w, out1 = _by_hand(layer, x)
        outs = [x, out1]  # expert 0 is the identity
        other = 1 - expert
        expected = {
            "zero": w[..., other : other + 1] * outs[other],  # not renormalised: the mixture shrinks
            "route_around": outs[other],  # all the weight on the survivor
            "swap": (w[..., 0:1] + w[..., 1:2]) * outs[other],  # its output replaced at its weight
        }
        intact, w_intact, _ = layer(x, h0)
        assert torch.allclose(intact, w[..., :1] * x + w[..., 1:] * out1, atol=1e-6)
        for kind, want in expected.items():
            layer.interventions = (Intervention(0, expert, kind, other if kind == "swap" else None),)
            got, weights, _ = layer(x, h0)
            assert torch.allclose(got, want, atol=1e-6), kind
            assert torch.allclose(layer.last_router_weights, w_intact, atol=1e-6)  # the router's own
            assert weights[..., expert].abs().max() == 0  # effective weights: none on it
        layer.interventions = ()


def _always_identity(layer_norm_residual: bool = False) -> MixtureOfExpertsPolicy:
    torch.manual_seed(1)
    policy = MixtureOfExpertsPolicy(
        MoPConfig(
            obs_dim=6,
            lang_dim=2,
            intermediate_dim=4,
            expert_hidden_sizes=((0, 4, 8),),
            router_hidden_size=3,
            layer_norm_residual=layer_norm_residual,
        )
    ).eval()
    with torch.no_grad():  # the router always picks the identity expert (weight 1 - 1e-9)
        policy.layers[0].router.out.weight.zero_()
        policy.layers[0].router.out.bias.copy_(torch.tensor([25.0, 0.0, 0.0]))
    return policy


def _logits(policy: MixtureOfExpertsPolicy, interventions=None) -> torch.Tensor:
    torch.manual_seed(2)
    obs, lang = torch.randn(5, 6), torch.randn(5, 2)
    policy.set_interventions(interventions)
    with torch.no_grad():
        out = policy.step(obs, lang, policy.init_memory(5)).logits
    policy.set_interventions(None)
    return out


def test_zeroing_the_always_picked_identity_changes_the_output_routing_around_others_does_not():
    policy = _always_identity()
    intact = _logits(policy)
    assert not torch.allclose(_logits(policy, [Intervention(0, 0, "zero")]), intact, atol=1e-3)
    for j in (1, 2):  # experts the router never picks: routing around them leaves the output
        assert torch.allclose(_logits(policy, [Intervention(0, j, "route_around")]), intact, atol=1e-6)
        assert torch.allclose(_logits(policy, [Intervention(0, j, "zero")]), intact, atol=1e-6)
    # routing around the identity itself hands its whole weight to the others: a different output
    assert not torch.allclose(_logits(policy, [Intervention(0, 0, "route_around")]), intact, atol=1e-3)


def test_zeroing_the_identity_under_the_papers_block_is_invisible():
    """LayerNorm(x + mixture): with all the weight on the identity the layer returns LayerNorm(2x);
    zeroed, LayerNorm(x): the same up to its eps (LayerNorm ignores scale)."""
    policy = _always_identity(layer_norm_residual=True)
    assert torch.allclose(_logits(policy, [Intervention(0, 0, "zero")]), _logits(policy), atol=1e-4)


def test_route_around_is_the_knockout_and_set_knockout_restores_everything():
    policy = _always_identity()
    with torch.no_grad():
        policy.layers[0].router.out.bias.copy_(torch.tensor([0.2, 0.5, -0.1]))
    intact = _logits(policy)
    policy.set_knockout([[False, True, False]])
    knocked = _logits(policy)  # _logits clears interventions only: the knockout stays
    policy.set_knockout()
    assert torch.allclose(_logits(policy, [Intervention(0, 1, "route_around")]), knocked, atol=1e-6)
    policy.set_interventions([Intervention(0, 1, "zero")])
    policy.set_knockout()  # the full model again
    assert not policy.layers[0].intervened
    torch.manual_seed(2)
    obs, lang = torch.randn(5, 6), torch.randn(5, 2)
    with torch.no_grad():
        assert torch.allclose(policy.step(obs, lang, policy.init_memory(5)).logits, intact)


@pytest.mark.parametrize(
    "bad, match",
    [
        (Intervention(0, 1, "ablate"), "must be one of"),
        (Intervention(1, 0, "zero"), "layers 0..0"),
        (Intervention(0, 3, "zero"), "experts 0..2"),
        (Intervention(0, 1, "swap", 1), "onto the same expert is refused"),
        (Intervention(0, 1, "swap"), "target"),
        (Intervention(0, 1, "zero", 2), "only a swap"),
    ],
)
def test_set_interventions_refuses(bad, match):
    policy = _always_identity()
    with pytest.raises(ValueError, match=match):
        policy.set_interventions([bad])
    with pytest.raises(ValueError, match="one intervention per expert"):
        policy.set_interventions([Intervention(0, 1, "zero"), Intervention(0, 1, "route_around")])


def test_numpy_actor_leaves_interventions_to_torch():
    from mop.numpy_policy import NumpyPolicy

    policy = build_policy({**_model_config(tiny_config("/tmp/unused")), "seed": 0})
    policy.eval()
    assert NumpyPolicy.of(policy, lambda m: None, "onehot") is not None
    policy.set_interventions([Intervention(0, 1, "swap", 0)])
    assert NumpyPolicy.of(policy, lambda m: None, "onehot") is None


# ----------------------------------------------------------------------------- the numbers


def _layouts(success, lpc, ratio=None, seeds=None) -> pd.DataFrame:
    n = len(success)
    return pd.DataFrame(
        {
            "success": np.asarray(success, bool),
            "length": np.full(n, 10.0),
            "ratio": np.where(np.asarray(success, bool), 1.0 if ratio is None else ratio, np.nan),
            "mean_lpc": np.asarray(lpc, float),
            "router_lpc": np.asarray(lpc, float) + 1.0,
        },
        index=pd.Index(range(n) if seeds is None else seeds, name="seed"),
    )


def test_paired_layout_effect_by_hand():
    a = _layouts([1, 1, 1, 1, 0, 0, 1, 1], [10] * 8)
    b = _layouts([0, 0, 0, 1, 0, 0, 1, 1], [4] * 8)
    s = causal.paired_layout_effect(a, b, "success_rate", max_lpc=100.0)
    assert s["effect"] == pytest.approx(-3 / 8) and s["layouts"] == 8
    assert s["layout_p"] == pytest.approx(sps.binomtest(3, 3, 0.5).pvalue)  # 3 discordant, one way
    assert -6 / 8 <= s["layout_ci_low"] <= s["effect"] <= s["layout_ci_high"] <= 0.0
    lpc = causal.paired_layout_effect(a, b, "mean_lpc", max_lpc=100.0)
    assert lpc["effect"] == pytest.approx(-6.0) and math.isnan(lpc["layout_p"])
    assert lpc["layout_ci_low"] == pytest.approx(-6.0) and lpc["layout_ci_high"] == pytest.approx(-6.0)
    # an interval is clipped to what the effect can be: success can fall by at most the intact rate
    all_lost = causal.paired_layout_effect(a, _layouts([0] * 8, [4] * 8), "success_rate", 100.0)
    assert all_lost["layout_ci_low"] >= -6 / 8 - 1e-12


def _effects(values: dict[str, list[float]], stat: list[list[float]] | None = None) -> pd.DataFrame:
    """Effects rows: one run per key of `values`, one expert per value."""
    rows = []
    for r, (run, effects) in enumerate(values.items()):
        for j, e in enumerate(effects):
            rows.append(
                {"run": run, "condition": "mop-x", "condition_label": "MoP", "layer": 0, "expert": j}
                | {"expert_size": 8 * j, "intervention": "zero", "metric": "success_rate", "layouts": 20}
                | {"intact": 0.8, "intervened": 0.8 + e, "effect": e, "note": ""}
                | {s: (stat[r][j] if stat else float(j)) for s in causal.STATISTICS}
            )
    return causal.effects_table(rows)


def test_summary_t_over_runs_clipped_with_one_family():
    effects = _effects({"s0": [-0.1, -0.5], "s1": [-0.3, -0.7], "s2": [-0.2, -0.75]})
    summary = causal.summarize(effects, max_lpc=10.0)
    row = summary[summary["expert"] == 0].iloc[0]
    test = sps.ttest_1samp([-0.1, -0.3, -0.2], 0.0)
    assert row["effect"] == pytest.approx(-0.2) and row["p"] == pytest.approx(test.pvalue)
    assert row["ci_low"] == pytest.approx(test.confidence_interval().low)
    clipped = summary[summary["expert"] == 1].iloc[0]  # the t interval reaches below -0.8
    assert clipped["range_low"] == pytest.approx(-0.8) and clipped["ci_low"] == pytest.approx(-0.8)
    assert list(summary["family_size"]) == [2, 2]
    assert summary["p_holm"].tolist() == pytest.approx(list(causal.holm_over_asked(summary["p"])))
    one = causal.summarize(_effects({"s0": [-0.1, -0.5]}), 10.0)
    assert one["note"].eq(causal.NO_INFERENCE).all() and one["p"].isna().all()
    # an effect with no spread over runs is not tested, yet stays in the family as p = 1
    still = causal.summarize(_effects({"s0": [-0.1, -1.0], "s1": [-0.3, -1.0], "s2": [-0.2, -1.0]}), 10.0)
    assert math.isnan(still.loc[1, "p"]) and math.isnan(still.loc[1, "p_holm"])
    assert list(still["family_size"]) == [2, 2]
    assert still.loc[0, "p_holm"] == pytest.approx(min(1.0, 2 * still.loc[0, "p"]))


def test_predict_permutes_within_runs():
    rng = np.random.default_rng(0)
    # within every run the statistic orders the effects: found
    stat = [list(rng.permutation(6) / 6) for _ in range(4)]
    linked = {f"s{r}": [-s for s in stat[r]] for r in range(4)}
    p_linked = causal.predict(_effects(linked, stat), ["mean_weight"])
    assert p_linked["rho"].iloc[0] == pytest.approx(-1.0) and p_linked["p"].iloc[0] < 0.01
    # only between runs: each run's level of the statistic goes with its level of effect, and
    # inside a run they are unrelated. Pooled rho is large, the within-run test says nothing.
    stat = [[r + 0.1 * v for v in rng.permutation(6)] for r in range(4)]
    between = {f"s{r}": [-r + 0.01 * v for v in rng.permutation(6)] for r in range(4)}
    res = causal.predict(_effects(between, stat), ["mean_weight"]).iloc[0]
    assert res["rho_pooled"] < -0.7  # what pooling the points would claim
    assert abs(res["rho"]) < 0.5 and res["p"] > 0.05
    assert res["n_runs"] == 4 and res["ci_low"] < res["rho"] < res["ci_high"]


def test_predict_has_a_control_without_the_identity_expert():
    """The identity pathway (size 0) is a layer's skip connection, heaviest and the one whose
    removal hurts most: a prediction it carries alone shows in "all" and vanishes in the sized set."""
    rng = np.random.default_rng(2)
    stat, values = [], {}
    for r in range(6):  # expert 0 is the identity (_effects: size 8 * j)
        stat.append([0.9, *rng.uniform(0.01, 0.05, 5)])
        values[f"s{r}"] = [-0.8, *rng.uniform(-0.02, 0.0, 5)]
    out = causal.predict(_effects(values, stat), ["mean_weight"]).set_index("experts")
    assert set(out.index) == {"all", causal.SIZED}
    assert out.loc["all", "n_points"] == 36 and out.loc[causal.SIZED, "n_points"] == 30
    assert out.loc["all", "rho"] < -0.3 and abs(out.loc[causal.SIZED, "rho"]) < abs(out.loc["all", "rho"])
    assert (out["family_size"] == 2).all()  # one family: both expert sets
    no_identity = _effects(values, stat)
    no_identity = no_identity[no_identity["expert_size"] > 0]
    assert list(causal.predict(no_identity, ["mean_weight"])["experts"]) == ["all"]


def test_predict_says_why_without_a_statistic_and_empty_tables_keep_headers():
    effects = _effects({"s0": [-0.1, -0.5, 0.0]})
    effects["subgoal_selectivity"] = np.nan
    out = causal.predict(effects)
    row = out[out["statistic"] == "subgoal_selectivity"].iloc[0]
    assert math.isnan(row["p"]) and "NaN at every point" in row["note"]
    assert out["family_size"].iloc[0] == len(out)  # the untested count too, as p = 1 (holm_over_asked)
    empty = causal.effects_table([])
    assert list(empty.columns) == causal.EFFECT_COLUMNS
    assert list(causal.summarize(empty, 1.0).columns) == causal.SUMMARY_COLUMNS
    assert list(causal.predict(empty).columns) == causal.PREDICT_COLUMNS


def test_one_run_reports_this_network_on_these_layouts_not_a_recipe():
    effects = _effects({"s0": [-0.1, -0.5, 0.0]})
    text = causal_stage.report(effects, causal.summarize(effects, 1.0), causal.predict(effects), 1)
    assert "no across-run inference" in text and "this network on these layouts" in text
    assert "family for Holm" not in text


def test_observational_stats_by_hand():
    steps = pd.DataFrame(
        {
            "layer_0_expert_0": [0.9, 0.1, 0.5, 0.5],
            "layer_0_expert_1": [0.1, 0.9, 0.5, 0.5],
            "subgoal": ["a", "b", "a", "b"],
        }
    )
    s = causal.observational_stats(steps, [[0, 4]], 2.0).set_index("expert")
    assert s.loc[0, "mean_weight"] == pytest.approx(0.5) and s.loc[0, "lpc_share"] == 0.0
    assert s.loc[1, "lpc_share"] == pytest.approx(1.0)
    assert s.loc[0, "dominance_share"] == pytest.approx(0.75)  # ties go to the lower index
    assert s.loc[0, "subgoal_selectivity"] == pytest.approx(0.7 - 0.5)
    p = np.array([0.9, 0.1, 0.5, 0.5]) / 2.0
    assert s.loc[0, "weight_entropy"] == pytest.approx(-(p * np.log(p)).sum() / np.log(4))
    without = causal.observational_stats(steps.drop(columns="subgoal"), [[0, 4]], 2.0)
    assert without["subgoal_selectivity"].isna().all()
    assert without["stats_note"].str.contains("no subgoal column").all()


# ----------------------------------------------------------------------------- bad input


def _model_config(cfg) -> dict:
    from mop.babyai_env import obs_dim

    return {
        **dataclasses.asdict(cfg),
        "policy_type": "mop",
        "input_dim": obs_dim(cfg.obs_encoding),
        "num_actions": 7,
        "effective_max_steps": 64,
    }


def _untrained_run(root, seed: int):
    """An untrained checkpoint in the run layout (loads like a trained one)."""
    from mop.experiment import save_checkpoint
    from mop.language import build_mission_encoder

    cfg = tiny_config(root, seed=seed)
    config = _model_config(cfg)
    torch.manual_seed(seed)
    policy = build_policy(config)
    encoder = build_mission_encoder(cfg.lang_encoder, cfg.lang_dim, cfg.distilbert_path, None, seed)
    path = root / cfg.task_id / "trial_0" / f"seed_{seed}" / "checkpoint_final.pt"
    payload = {
        "policy_state_dict": policy.state_dict(),
        "encoder_state": encoder.encoder_state(),
        "config": config,
    }
    save_checkpoint(path, payload)
    return path


@pytest.mark.parametrize(
    "change, flag",
    [
        ({"interventions": ("zero", "ablate")}, "--interventions"),
        ({"metrics": ("success",)}, "--metrics"),
        ({"experts": "layer_0:3"}, "--experts"),
        ({"experts": "layer_2:0"}, "--experts"),
        ({"experts": "layer_0:1", "swap_target": "1"}, "--swap_target"),
        ({"swap_target": "7"}, "--swap_target"),
        ({"runs": ("nowhere/*",)}, "--runs"),
        ({"episodes": 0}, "--episodes"),
    ],
)
def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path, capsys, change, flag):
    run = _untrained_run(tmp_path / "ck", 0)
    out = tmp_path / "out"
    cfg = causal_stage.CausalConfig(runs=(str(run),), episodes=2, out=str(out), progress=False)
    with pytest.raises(SystemExit) as e:
        causal_stage.main(dataclasses.replace(cfg, **change))
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and flag in err[0]
    assert not out.exists()


def test_two_runs_of_one_replicate_are_refused(tmp_path, capsys):
    a = _untrained_run(tmp_path / "a", 0)
    b = _untrained_run(tmp_path / "b", 0)  # same recipe and seed, another folder
    cfg = causal_stage.CausalConfig(runs=(str(a), str(b)), episodes=2, out=str(tmp_path / "out"))
    with pytest.raises(SystemExit):
        causal_stage.main(cfg)
    err = capsys.readouterr().err
    assert "same replicate" in err and "--runs" in err and not (tmp_path / "out").exists()


def test_find_runs_takes_one_checkpoint_per_run(tmp_path):
    a = _untrained_run(tmp_path / "ck", 0)
    b = _untrained_run(tmp_path / "ck", 1)
    (a.parent / "checkpoint_3.pt").write_bytes(a.read_bytes())
    assert causal_stage.find_runs((str(tmp_path / "ck"),)) == [a, b]
    assert causal_stage.find_runs((str(a.parent),)) == [a]
    assert causal_stage.find_runs((str(tmp_path / "ck" / "*" / "trial_0" / "seed_*"),)) == [a, b]


# ----------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_end_to_end_two_runs_write_three_tables_and_figures(tmp_path, capsys):
    import train_mop

    paths = []
    for seed in (0, 1):
        summary = train_mop.main(tiny_config(tmp_path / "ck", seed=seed, num_updates=3), progress=False)
        paths.append(summary["run_dir"])
    out = tmp_path / "out"
    cfg = causal_stage.CausalConfig(
        runs=tuple(str(p) for p in paths),
        episodes=4,
        num_envs=4,
        experts="layer_0:0,layer_0:2,layer_1:1",
        metrics=("success_rate", "router_lpc"),  # two of the four figures: drawing is most of the time
        out=str(out),
        permutations=200,
        progress=False,
    )
    result = causal_stage.main(cfg)
    for name in ("causal_effects.csv", "causal_summary.csv", "causal_predict.csv"):
        assert (out / name).is_file()
    for metric in ("success_rate", "router_lpc"):
        assert (out / f"causal_{metric}.png").stat().st_size > 10_000
    assert not (out / "causal_mean_lpc.png").exists()
    effects = pd.read_csv(out / "causal_effects.csv")
    assert len(effects) == 2 * 3 * 3 * 2  # runs x experts x interventions x metrics
    assert list(effects.columns) == causal.EFFECT_COLUMNS
    assert effects["effect"].dtype == float and effects["layouts"].eq(4).all()
    assert effects["subgoal_selectivity"].notna().all()  # the intact arm recorded the bot's subgoal
    swaps = effects[effects["intervention"] == "swap"]
    assert (swaps["swap_target"] == (swaps["expert"] + 1) % swaps["layer"].map({0: 3, 1: 2})).all()
    summary = pd.read_csv(out / "causal_summary.csv")
    assert summary["n_runs"].max() == 2 and len(summary) == 3 * 3 * 2
    assert "family for Holm" in capsys.readouterr().out
    assert result["predict"]["family_size"].nunique() <= 1


def test_the_per_layout_family_counts_a_test_that_could_not_run():
    """causal_effects.csv's layout_p_holm: Holm over every per-layout test asked (issue 40); one
    that could not run (NaN layout_p) counts as p = 1 and gets no adjusted p, so the family does
    not shrink with the data (it used to drop it: 2 tests here, not 3)."""
    rows = [
        {"layer": 0, "expert": e, "expert_size": 16, "layouts": 50, "layout_p": p, "metric": "success_rate"}
        for e, p in enumerate([0.01, float("nan"), 0.5])
    ]
    df = causal.effects_table(rows)
    assert df["layout_p_holm"].iloc[0] == pytest.approx(0.03) and np.isnan(df["layout_p_holm"].iloc[1])
