"""Tier 1: head_hidden_size (BabyAI's actor, Linear -> Tanh -> Linear, on the last layer's output):
0 keeps the MoP paper's one Linear and every earlier checkpoint's weights; H > 0 computes what it
says on both forward paths, trains, saves, loads and resumes with the run's own head."""

import pytest
import torch

import train_mop
from conftest import TINY_PRESET, sequence_against_steps, tiny_config
from mixture_of_experts import build_policy
from mop.checkpoints import load_policy
from mop.experiment import ConfigError, resume_config

BASE = dict(
    input_dim=20,
    lang_dim=6,
    num_actions=7,
    intermediate_dim=12,
    router_hidden_size=10,
    expert_hidden_sizes=[[0, 8], [0, 4]],
)


def test_without_the_key_the_head_is_one_linear_with_the_earlier_names():
    policy = build_policy(BASE)
    assert policy.head_hidden is None
    assert {n for n in policy.state_dict() if "head" in n} == {"head.weight", "head.bias"}


def test_the_hidden_head_is_tanh_between_two_linears_on_both_paths():
    torch.manual_seed(0)
    policy = build_policy({**BASE, "head_hidden_size": 16}).eval()
    features = torch.randn(5, 12)
    by_hand = torch.tanh(features @ policy.head_hidden.weight.T + policy.head_hidden.bias)
    by_hand = by_hand @ policy.head.weight.T + policy.head.bias
    torch.testing.assert_close(policy._output(features), by_hand)
    seq = sequence_against_steps(policy, 20, 6)
    seq.logits.sum().backward()
    assert policy.head_hidden.weight.grad.abs().sum() > 0


def test_a_run_with_the_hidden_head_trains_loads_and_resumes(tmp_path):
    common = dict(head_hidden_size=8, async_collection=False, checkpoint_interval=2)
    train_mop.main(tiny_config(tmp_path / "ck", num_updates=2, **common), progress=False)
    train_mop.main(tiny_config(tmp_path / "ck", num_updates=4, **common), resume=True, progress=False)
    checkpoint = next((tmp_path / "ck").rglob("checkpoint_final.pt"))
    policy, _, config = load_policy(str(checkpoint))
    assert config["head_hidden_size"] == 8 and policy.head_hidden.out_features == 8
    assert config["update"] == 4  # the resumed run went on from update 2
    # --resume reads the run's own config: the head stays without the flag, another size is refused
    located = {"checkpoint_dir": str(tmp_path / "ck")}
    assert resume_config(TINY_PRESET, located).head_hidden_size == 8
    with pytest.raises(ConfigError, match="head_hidden_size"):
        resume_config(TINY_PRESET, {**located, "head_hidden_size": 4})
