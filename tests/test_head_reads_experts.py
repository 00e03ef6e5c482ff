"""Tier 1: head_reads_experts (the action head reads every layer's experts' states, each times its
router weight, beside the last layer's output): off keeps the head and every earlier checkpoint as
they were; on, the head's input is what it says on both forward paths, routing gates it (a knocked-out
expert reads as 0), and a run trains, saves, loads and resumes with it."""

import pytest
import torch

import train_mop
from conftest import TINY_PRESET, sequence_against_steps, tiny_config
from mixture_of_experts import build_policy
from mop.checkpoints import load_policy
from mop.experiment import ConfigError, resume_config
from tests.test_actor_head import BASE as ACTOR_BASE

BASE = {**ACTOR_BASE, "expert_hidden_sizes": [[0, 8, 5], [0], [3, 0]]}  # an identity-only layer


def _head_input(policy, obs, lang, memory):
    """The head's input and the step's output, caught by a forward pre-hook."""
    seen = []
    handle = policy.head.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach()))
    try:
        out = policy.step(obs, lang, memory)
    finally:
        handle.remove()
    return seen[0], out


def test_off_the_head_reads_the_last_layers_output_alone():
    policy = build_policy(BASE)
    assert policy.head.in_features == 12
    assert build_policy({**BASE, "head_reads_experts": False}).head.in_features == 12


def test_on_the_head_reads_each_expert_state_times_its_router_weight():
    torch.manual_seed(0)
    policy = build_policy({**BASE, "head_reads_experts": True}).eval()
    assert policy.head.in_features == 12 + 8 + 5 + 3  # the identities (size 0) add nothing
    obs, lang = torch.randn(4, 20), torch.randn(4, 6)
    memory = torch.randn(4, policy.memory_size)
    seen, out = _head_input(policy, obs, lang, memory)
    # by hand: the memory after the step holds [router 10, expert 8, expert 5 | router 10 | router 10, expert 3]
    m, w = out.memory, out.router_weights
    expected = torch.cat(
        [m[:, 10:18] * w[0][:, 1:2], m[:, 18:23] * w[0][:, 2:3], m[:, 43:46] * w[2][:, 0:1]], dim=-1
    )
    torch.testing.assert_close(seen[:, 12:], expected)
    # a knocked-out expert's block reads 0, the others their renormalised weights
    policy.set_knockout([[False, True, False], [False], [False, False]])
    seen, out = _head_input(policy, obs, lang, memory)
    assert seen[:, 12:20].abs().max() == 0
    assert seen[:, 20:25].abs().max() > 0
    torch.testing.assert_close(seen[:, 20:25], out.memory[:, 18:23] * out.router_weights[0][:, 2:3])


@pytest.mark.parametrize(
    "keys", [{}, {"expert_cell": "lstm", "layer_norm_residual": True, "head_hidden_size": 9}]
)
def test_the_sequence_path_equals_the_steps_and_trains_the_experts_through_the_head(keys):
    torch.manual_seed(1)
    policy = build_policy({**BASE, "head_reads_experts": True, **keys})
    seq = sequence_against_steps(policy, 20, 6)
    # the head's columns on the experts' block get a gradient: the head does read them
    seq.logits.sum().backward()
    head = policy.head_hidden or policy.head
    assert head.weight.grad[:, 12:].abs().sum() > 0


def test_a_run_with_the_reading_head_trains_loads_and_resumes(tmp_path):
    common = dict(head_reads_experts=True, async_collection=False, checkpoint_interval=2)
    train_mop.main(tiny_config(tmp_path / "ck", num_updates=2, **common), progress=False)
    train_mop.main(tiny_config(tmp_path / "ck", num_updates=4, **common), resume=True, progress=False)
    checkpoint = next((tmp_path / "ck").rglob("checkpoint_final.pt"))
    policy, _, config = load_policy(str(checkpoint))
    assert config["head_reads_experts"] is True and config["update"] == 4
    assert policy.head.in_features > config["intermediate_dim"]
    located = {"checkpoint_dir": str(tmp_path / "ck")}
    assert resume_config(TINY_PRESET, located).head_reads_experts is True
    with pytest.raises(ConfigError, match="head_reads_experts"):
        resume_config(TINY_PRESET, {**located, "head_reads_experts": False})
