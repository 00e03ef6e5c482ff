"""Tier 1: expert_cell 'lstm' (BabyAI's IL memory cell in the MoP experts): the recurrence equals
torch's LSTM, the memory layout, both forward paths, episode resets, gradients, bfloat16, the
config key and what it leaves unchanged for GRU checkpoints."""

import pytest
import torch
from torch import nn

from memory_probe import memory_blocks
from mixture_of_experts import (
    MixtureOfExpertsPolicy,
    MoELayer,
    MoPConfig,
    build_policy,
    compute_lpc,
    fuse_lstm_weights,
    lstm_recurrence,
    reset_memory,
)
from mop.experiment import ConfigError, load_config

SIZES = ((0, 16, 32), (0, 8), (4, 16, 32, 0))


def make_policy(cell="lstm", **kw) -> MixtureOfExpertsPolicy:
    torch.manual_seed(0)
    return MixtureOfExpertsPolicy(
        MoPConfig(
            obs_dim=20,
            lang_dim=6,
            intermediate_dim=12,
            router_hidden_size=10,
            expert_hidden_sizes=SIZES,
            expert_cell=cell,
            **kw,
        )
    )


def test_lstm_recurrence_equals_torch_lstm_and_restarts_where_episodes_start():
    torch.manual_seed(1)
    lstm = nn.LSTM(5, 8)
    x, h0, c0 = torch.randn(9, 3, 5), torch.randn(3, 8), torch.randn(3, 8)
    out = lstm_recurrence(x, torch.cat([h0, c0], -1), fuse_lstm_weights([lstm]))
    ref, (h_n, c_n) = lstm(x, (h0[None], c0[None]))
    torch.testing.assert_close(out[..., :8], ref, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out[-1, :, 8:], c_n[0], atol=1e-6, rtol=1e-5)
    # An episode starting at t = 4 in row 1: from there the row is torch's LSTM from zero h and c
    starts = torch.zeros(9, 3, dtype=torch.bool)
    starts[4, 1] = True
    cut = lstm_recurrence(x, torch.cat([h0, c0], -1), fuse_lstm_weights([lstm]), starts)
    fresh, _ = lstm(x[4:, 1:2])
    torch.testing.assert_close(cut[4:, 1, :8], fresh[:, 0], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(cut[:4], out[:4])  # before the start, and the other rows, unchanged
    torch.testing.assert_close(cut[:, [0, 2]], out[:, [0, 2]])


def test_memory_holds_h_then_c_of_each_expert_and_lpc_still_charges_size_squared():
    p = make_policy()
    assert p.layers[0].memory_sizes == [10, 32, 64]
    assert p.layers[2].memory_sizes == [10, 8, 32, 64]
    assert p.memory_size == 3 * 10 + 2 * sum(s for layer in SIZES for s in layer)
    assert [name for name, _ in memory_blocks(p)][:3] == [
        "all",
        "layer 0 router",
        "layer 0 expert 1 (size 16)",
    ]
    assert memory_blocks(p)[2][1] == slice(10, 42)
    out = p.step(torch.randn(2, 20), torch.randn(2, 6), p.init_memory(2))
    gru = make_policy("gru")
    lpc = compute_lpc(out.router_weights, SIZES)
    assert lpc.shape == (2,) and gru.memory_size == 3 * 10 + sum(s for layer in SIZES for s in layer)
    # The state [h, c]: the expert's Linear reads h, and the memory's h block is that LSTM's output
    layer, x = p.layers[1], torch.randn(4, 2, 12)
    h_seq = layer.recurrence(x, torch.zeros(2, sum(layer.memory_sizes)))
    ref, _ = layer.experts[1].lstm(x)
    torch.testing.assert_close(h_seq[..., 10:18], ref, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("layer_norm_residual", [False, True])
def test_step_by_step_equals_the_sequence_pass_with_resets(layer_norm_residual):
    """The acting path (one step, block read-out without grad) and the learner's sequence pass
    agree, episode ends inside the unroll included; and no memory crosses an episode start."""
    p = make_policy(layer_norm_residual=layer_norm_residual)
    torch.manual_seed(2)
    T, B = 10, 4
    obs, lang = torch.randn(T, B, 20), torch.randn(T, B, 6)
    done = torch.zeros(T, B, dtype=torch.bool)
    done[3, 0] = done[4, 0] = done[9, 1] = done[0, 2] = True
    memory = torch.randn(B, p.memory_size)
    seq = p.forward_sequence(obs, lang, memory, done)
    m, logits = memory, []
    with torch.no_grad():
        for t in range(T):
            out = p.step(obs[t], lang[t], m)
            logits.append(out.logits)
            m = reset_memory(out.memory, done[t])
    torch.testing.assert_close(seq.logits, torch.stack(logits), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(seq.memory, m, atol=1e-5, rtol=1e-4)
    # Row 2's episode ended at t = 0: other memory before it changes nothing from t = 1 on
    other = p.forward_sequence(obs, lang, memory + 5.0, done)
    torch.testing.assert_close(other.logits[1:, 2], seq.logits[1:, 2])
    assert not torch.allclose(other.logits[:, 3], seq.logits[:, 3])  # row 3 never restarts


def test_gradients_reach_every_lstm_expert_and_the_router():
    p = make_policy()
    out = p.forward_sequence(
        torch.randn(5, 3, 20),
        torch.randn(5, 3, 6),
        torch.randn(3, p.memory_size),
        torch.zeros(5, 3, dtype=torch.bool),
    )
    out.logits.square().mean().backward()
    for name, param in p.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert any(".lstm." in name for name, _ in p.named_parameters())
    assert not any(".gru." in name and ".experts." in name for name, _ in p.named_parameters())


def test_bfloat16_autocast_keeps_the_memory_float32_and_close():
    p = make_policy()
    obs, lang, mem = torch.randn(6, 3, 20), torch.randn(6, 3, 6), torch.randn(3, p.memory_size)
    done = torch.zeros(6, 3, dtype=torch.bool)
    full = p.forward_sequence(obs, lang, mem, done)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = p.forward_sequence(obs, lang, mem, done)
    assert low.memory.dtype == torch.float32 and low.logits.dtype == torch.float32
    torch.testing.assert_close(low.logits, full.logits, atol=0.1, rtol=0.05)


def test_moe_layer_reads_the_same_with_and_without_grad():
    torch.manual_seed(3)
    layer = MoELayer(12, (0, 16, 8), 10, expert_cell="lstm")
    x, h0 = torch.randn(5, 3, 12), torch.randn(3, sum(layer.memory_sizes))
    with_grad = layer(x, h0)
    with torch.no_grad():
        without = layer(x, h0)
    for a, b in zip(with_grad, without):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_config_key_builds_lstm_experts_and_a_config_without_it_builds_grus():
    base = dict(
        input_dim=20,
        lang_dim=6,
        num_actions=7,
        intermediate_dim=12,
        router_hidden_size=10,
        expert_hidden_sizes=[[0, 8]],
    )
    assert hasattr(build_policy(base).layers[0].experts[1], "gru")  # earlier checkpoints' configs
    lstm = build_policy({**base, "expert_cell": "lstm"})
    assert hasattr(lstm.layers[0].experts[1], "lstm")
    assert set(build_policy(base).state_dict()) == set(make_gru_names())
    with pytest.raises(ValueError, match="expert_cell"):
        build_policy({**base, "expert_cell": "rnn"})


def make_gru_names():
    """The GRU layer's state-dict names as the earlier system wrote them."""
    names = ["input_projection.weight", "input_projection.bias", "head.weight", "head.bias"]
    params = (
        "gru.weight_ih_l0",
        "gru.weight_hh_l0",
        "gru.bias_ih_l0",
        "gru.bias_hh_l0",
        "out.weight",
        "out.bias",
    )
    return names + [f"layers.0.{module}.{m}" for module in ("router", "experts.1") for m in params]


def test_yaml_and_overrides_set_the_cell_and_a_bad_one_is_refused(tmp_path):
    assert load_config(None, {"expert_cell": "lstm"}).expert_cell == "lstm"
    assert load_config(None).expert_cell == "gru"
    path = tmp_path / "c.yaml"
    path.write_text("expert_cell: lstm   # BabyAI's cell\n")
    assert load_config(path).expert_cell == "lstm"
    with pytest.raises(ConfigError, match="expert_cell"):
        load_config(None, {"expert_cell": "LSTMs"})
