"""Tier 1: the MoP model and the GRU baseline (shapes, LPC, identity expert, memory, both paths)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mixture_of_experts import (
    FiLMTrunk,
    FusedGRUs,
    GRUPolicy,
    MixtureOfExpertsPolicy,
    MoELayer,
    MoPConfig,
    build_policy,
    compute_lpc,
    fuse_gru_weights,
    gru_groups,
    gru_recurrence,
    max_lpc,
    normalize_expert_sizes,
    reset_memory,
    routing_dependent_dropout,
)

SIZES = ((0, 16, 32), (0, 8), (4, 16, 32, 0))


def make_policy(**kw) -> MixtureOfExpertsPolicy:
    torch.manual_seed(0)
    return MixtureOfExpertsPolicy(
        MoPConfig(
            obs_dim=20,
            lang_dim=6,
            intermediate_dim=12,
            router_hidden_size=10,
            expert_hidden_sizes=kw.pop("sizes", SIZES),
            **kw,
        )
    )


def test_step_shapes_and_router_weights_every_call():
    p = make_policy()
    out = p.step(torch.randn(5, 20), torch.randn(5, 6), p.init_memory(5))
    assert out.logits.shape == (5, 7)
    assert out.memory.shape == (5, p.memory_size) == (5, 3 * 10 + 16 + 32 + 8 + 4 + 16 + 32)
    assert [w.shape for w in out.router_weights] == [(5, 3), (5, 2), (5, 4)]
    for w in out.router_weights:
        torch.testing.assert_close(w.sum(-1), torch.ones(5))


def test_expert_sizes_parsing():
    assert normalize_expert_sizes([32, 64, 128]) == ((32, 64, 128),)
    assert normalize_expert_sizes("[[0,16,32],[0,16,32]]") == ((0, 16, 32), (0, 16, 32))
    assert normalize_expert_sizes("16,32,64;32,64,128") == ((16, 32, 64), (32, 64, 128))
    for bad in ("[[0,16],[]]", "[1,-2]", "[[1.5]]", "abc", "[]", [[0, True]]):
        with pytest.raises(ValueError):
            normalize_expert_sizes(bad)


def test_lpc_matches_hand_computation():
    w0 = torch.tensor([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]])
    w1 = torch.tensor([[0.5, 0.5], [0.25, 0.75]])
    sizes = [[0, 16, 32], [4, 8]]
    expected = torch.tensor([0.3 * 256 + 0.5 * 1024 + 0.5 * 16 + 0.5 * 64, 0.25 * 16 + 0.75 * 64])
    torch.testing.assert_close(compute_lpc([w0, w1], sizes), expected)
    torch.testing.assert_close(compute_lpc([w0, w1], sizes, reduction="mean"), expected.mean())
    cubic = compute_lpc([w0[:1]], [[0, 16, 32]], exponent=3)
    torch.testing.assert_close(cubic, torch.tensor([0.3 * 16**3 + 0.5 * 32**3]))
    assert max_lpc(sizes) == 1024 + 64
    with pytest.raises(ValueError):
        compute_lpc([w0], sizes)


def test_size_zero_expert_is_identity():
    p = make_policy(sizes=((0, 8),))
    layer = p.layers[0]
    with torch.no_grad():  # all router weight on the identity expert
        layer.router.out.weight.zero_()
        layer.router.out.bias.copy_(torch.tensor([50.0, -50.0]))
    x = torch.randn(3, 4, 12)
    y, w, _ = layer(x, torch.zeros(4, layer.grus.sizes[0] + 8))
    torch.testing.assert_close(y, x, atol=1e-5, rtol=0)
    assert torch.all(w[..., 0] > 0.999)


def test_reset_memory_zeroes_only_finished_rows():
    m = torch.randn(4, 7)
    out = reset_memory(m, torch.tensor([False, True, False, True]))
    assert torch.all(out[[1, 3]] == 0)
    torch.testing.assert_close(out[[0, 2]], m[[0, 2]])


def test_fused_grus_equal_separate_nn_gru():
    torch.manual_seed(1)
    grus = [nn.GRU(9, h) for h in (10, 4, 6)]
    x, h0 = torch.randn(7, 3, 9), torch.randn(3, 20)
    expected = torch.cat(
        [g(x, h.unsqueeze(0).contiguous())[0] for g, h in zip(grus, h0.split([10, 4, 6], -1))], -1
    )
    torch.testing.assert_close(FusedGRUs(grus)(x, h0), expected, atol=1e-6, rtol=1e-5)
    with torch.no_grad():  # the cached no-grad path sees weight updates
        first = FusedGRUs(grus)
        a = first(x, h0)
        grus[1].weight_hh_l0.add_(0.5)
        b = first(x, h0)
        assert not torch.allclose(a, b)


def test_gru_groups_split_the_large_grus_off_in_order():
    assert gru_groups([64, 16, 32]) == [[0, 1, 2]]  # the default recipe's layer: one recurrence
    assert gru_groups([64, 128, 512]) == [[0], [1], [2]]
    assert gru_groups([64, 16, 256, 32, 8]) == [[0, 1], [2], [3, 4]]  # contiguous: the memory's layout
    assert gru_groups([300]) == [[0]]


@pytest.mark.parametrize("sizes", [(10, 140, 6), (12, 5, 130, 7)])
def test_split_recurrences_equal_separate_nn_gru_with_episode_starts(sizes):
    """With grad, GRUs of SPLIT_UNITS or more run their own recurrence: hidden states and every
    parameter's gradient equal each nn.GRU run alone (the memory zeroed where an episode starts)
    and the one block-diagonal recurrence of the no-grad path."""
    torch.manual_seed(2)
    assert len(gru_groups(sizes)) > 1
    grus = [nn.GRU(9, h) for h in sizes]
    x, h0 = torch.randn(6, 3, 9), torch.randn(3, sum(sizes))
    starts = torch.zeros(6, 3, dtype=torch.bool)
    starts[3, 1] = True
    fused = FusedGRUs(grus)
    assert len(fused._groups) == len(gru_groups(sizes))  # the grad path runs one recurrence per group
    out = fused(x, h0, starts)
    expected = []
    for g, h in zip(grus, h0.split(list(sizes), -1)):
        first = g(x[:3], h.unsqueeze(0).contiguous())[0]
        h3 = first[-1].clone()
        h3[1] = 0  # row 1's episode starts at step 3
        expected.append(torch.cat([first, g(x[3:], h3.unsqueeze(0))[0]]))
    expected = torch.cat(expected, -1)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(fused(x, h0, starts), out.detach(), atol=1e-6, rtol=1e-5)
    loss_weights = torch.randn_like(out)
    split_grads = torch.autograd.grad((out * loss_weights).sum(), [p for g in grus for p in g.parameters()])
    one = gru_recurrence(x, h0, fuse_gru_weights(grus), starts)
    fused_grads = torch.autograd.grad((one * loss_weights).sum(), [p for g in grus for p in g.parameters()])
    for a, b in zip(split_grads, fused_grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("sizes", [(0, 16, 32), (16, 0, 8, 0), (8, 4), (0,)])
def test_moe_layer_reads_out_the_same_with_and_without_grad(sizes):
    """Without grad (acting) the router and the experts are read out by one block-diagonal
    matmul; with grad each Linear reads its own slice. Both equal the layer written out by hand,
    identity experts anywhere in the list included."""
    torch.manual_seed(3)
    layer = MoELayer(12, sizes, 10)
    x, h0 = torch.randn(5, 3, 12), torch.randn(3, sum(layer.memory_sizes))
    h_seq = layer.grus(x, h0)
    parts = torch.split(h_seq, layer.memory_sizes, dim=-1)
    weights = torch.softmax(layer.router.out(parts[0]), -1)
    outs, k = [], 1
    for expert in layer.experts:
        outs.append(x if expert.size == 0 else expert.out(parts[k]))
        k += expert.size > 0
    expected = sum(w.unsqueeze(-1) * o for w, o in zip(weights.unbind(-1), outs))
    with_grad = layer(x, h0)
    with torch.no_grad():
        without = layer(x, h0)
        for layer_out in (with_grad, without):
            torch.testing.assert_close(layer_out[0], expected, atol=1e-6, rtol=1e-5)
            torch.testing.assert_close(layer_out[1], weights, atol=1e-6, rtol=1e-5)
        if any(sizes):  # the cached read-out sees a weight update
            next(e for e in layer.experts if e.size > 0).out.bias.add_(1.0)
            assert not torch.allclose(layer(x, h0)[0], without[0])


@pytest.mark.parametrize("kind", ["mop", "gru"])
def test_step_by_step_equals_sequence_pass_with_resets(kind):
    torch.manual_seed(2)
    p = make_policy() if kind == "mop" else GRUPolicy(20, 6, 16)
    T, B = 12, 5
    obs, lang = torch.randn(T, B, 20), torch.randn(T, B, 6)
    done = torch.zeros(T, B, dtype=torch.bool)
    done[3, 0] = done[4, 0] = done[11, 1] = done[0, 2] = done[6, 4] = True
    memory = torch.randn(B, p.memory_size)
    seq = p.forward_sequence(obs, lang, memory, done)
    m, logits, weights = memory, [], []
    for t in range(T):
        out = p.step(obs[t], lang[t], m)
        logits.append(out.logits)
        weights.append(out.router_weights)
        m = reset_memory(out.memory, done[t])
    torch.testing.assert_close(seq.logits, torch.stack(logits), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(seq.memory, m, atol=1e-5, rtol=1e-4)
    for k, w in enumerate(seq.router_weights):
        torch.testing.assert_close(w, torch.stack([ws[k] for ws in weights]), atol=1e-5, rtol=1e-4)


def test_gradients_reach_every_expert_and_router():
    p = make_policy()
    obs, lang = torch.randn(6, 3, 20), torch.randn(6, 3, 6)
    out = p.forward_sequence(obs, lang, p.init_memory(3), torch.zeros(6, 3, dtype=torch.bool))
    (out.logits.square().mean() + compute_lpc(out.router_weights, SIZES, reduction="mean") * 1e-4).backward()
    for name, param in p.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_routing_dependent_dropout():
    torch.manual_seed(3)
    w = torch.softmax(torch.randn(1000, 4) * 3, -1)
    dropped = routing_dependent_dropout(w, beta=1.0, gamma=0.3)
    torch.testing.assert_close(dropped.sum(-1), torch.ones(1000))
    assert torch.all(dropped.argmax(-1) == w.argmax(-1))  # the largest expert always survives
    low = w < 0.3
    assert (dropped[low] == 0).float().mean() > 0.3  # low-weight experts are really dropped
    assert torch.all(dropped[~low] > 0)  # experts above gamma never are
    p = make_policy(expert_dropout_beta=1.0, expert_dropout_gamma=0.5)
    x = torch.randn(4, 20)
    p.eval()
    a = p.step(x, torch.zeros(4, 6), p.init_memory(4)).logits
    b = p.step(x, torch.zeros(4, 6), p.init_memory(4)).logits
    torch.testing.assert_close(a, b)  # no dropout outside training


def test_build_policy_from_config_dict():
    base = dict(
        input_dim=20,
        lang_dim=6,
        num_actions=7,
        intermediate_dim=12,
        router_hidden_size=10,
        expert_hidden_sizes=[[0, 8]],
        hidden_size=16,
    )
    assert isinstance(build_policy({**base, "policy_type": "mop"}), MixtureOfExpertsPolicy)
    gru = build_policy({**base, "policy_type": "gru"})
    assert isinstance(gru, GRUPolicy) and gru.memory_size == 16


# ----------------------------------------------------------------------------- issue 32: the MoP
# paper's block (layer_norm_residual) and BabyAI 1.1's trunk (input_encoder 'film')

ONEHOT_OBS = 985  # 49 cells x 20 codes + direction (4) + carrying (1)


def make_film_policy(kind: str = "mop", **kw):
    torch.manual_seed(0)
    if kind == "gru":
        return GRUPolicy(ONEHOT_OBS, 6, 16, input_encoder="film", trunk_channels=8)
    return MixtureOfExpertsPolicy(
        MoPConfig(
            obs_dim=ONEHOT_OBS,
            lang_dim=6,
            intermediate_dim=12,
            router_hidden_size=10,
            expert_hidden_sizes=kw.pop("sizes", SIZES),
            input_encoder="film",
            trunk_channels=8,
            **kw,
        )
    )


def onehot_obs(*lead: int) -> torch.Tensor:
    """Random one-hot views (each cell one object, colour and state code), direction, carrying."""
    codes = [torch.randint(0, n, (*lead, 49)) for n in (11, 6, 3)]
    cells = torch.cat([F.one_hot(c, n) for c, n in zip(codes, (11, 6, 3))], -1).float()  # (..., 49, 20)
    direction = F.one_hot(torch.randint(0, 4, lead), 4).float()
    carrying = torch.randint(0, 2, (*lead, 1)).float()
    return torch.cat([cells.flatten(-2), direction, carrying], -1)


@pytest.mark.parametrize("sizes", [(0, 16, 32), (16, 0, 8, 0), (8, 4), (0,)])
def test_layer_norm_residual_layer_is_the_papers_block_written_out(sizes):
    """y = LayerNorm(x + sum_j w_j expert_j(x)), a GRU expert's output Linear reading
    relu(LayerNorm(its state)); with and without grad (the fused read-out)."""
    torch.manual_seed(3)
    layer = MoELayer(12, sizes, 10, layer_norm_residual=True)
    with torch.no_grad():  # norms away from their identity init, so a missed one shows
        for module in [layer.norm] + [e.norm for e in layer.experts if e.size > 0]:
            module.weight.uniform_(0.5, 1.5)
            module.bias.uniform_(-0.5, 0.5)
    x, h0 = torch.randn(5, 3, 12), torch.randn(3, sum(layer.memory_sizes))
    h_seq = layer.grus(x, h0)
    parts = torch.split(h_seq, layer.memory_sizes, dim=-1)
    weights = torch.softmax(layer.router.out(parts[0]), -1)
    outs, k = [], 1
    for expert in layer.experts:
        if expert.size == 0:
            outs.append(x)
        else:
            outs.append(
                expert.out(
                    torch.relu(F.layer_norm(parts[k], (expert.size,), expert.norm.weight, expert.norm.bias))
                )
            )
            k += 1
    mixture = sum(w.unsqueeze(-1) * o for w, o in zip(weights.unbind(-1), outs))
    expected = F.layer_norm(x + mixture, (12,), layer.norm.weight, layer.norm.bias)
    with_grad = layer(x, h0)
    with torch.no_grad():
        without = layer(x, h0)
    for out in (with_grad, without):
        torch.testing.assert_close(out[0], expected, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(out[1], weights, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(out[2], h_seq)  # the memory is the GRUs' own states


def test_layer_norm_residual_identity_expert_passes_its_input_on_normalised():
    p = make_policy(sizes=((0, 8),), layer_norm_residual=True)
    layer = p.layers[0]
    with torch.no_grad():
        layer.router.out.weight.zero_()
        layer.router.out.bias.copy_(torch.tensor([50.0, -50.0]))
    x = torch.randn(3, 4, 12)
    y, w, _ = layer(x, torch.zeros(4, layer.grus.sizes[0] + 8))
    torch.testing.assert_close(y, F.layer_norm(x, (12,)), atol=1e-4, rtol=0)  # LayerNorm(2x) = LayerNorm(x)
    assert torch.all(w[..., 0] > 0.999)


def test_default_layer_has_no_norms_so_earlier_state_dicts_keep_their_names():
    names = set(make_policy().state_dict())
    assert not any("norm" in n for n in names)
    on = set(make_policy(layer_norm_residual=True).state_dict())
    assert on - names == {
        f"layers.{k}.{part}"
        for k, sizes in enumerate(SIZES)
        for part in [f"norm.{p}" for p in ("weight", "bias")]
        + [f"experts.{j}.norm.{p}" for j, s in enumerate(sizes) if s > 0 for p in ("weight", "bias")]
    }
    # the same LPC and the same memory layout as the plain layer
    assert make_policy(layer_norm_residual=True).memory_size == make_policy().memory_size


def test_film_trunk_shapes_and_what_it_reads():
    p = make_film_policy()
    assert isinstance(p.input_projection, FiLMTrunk)
    out = p.step(onehot_obs(5), torch.randn(5, 6), p.init_memory(5))
    assert out.logits.shape == (5, 7) and out.memory.shape == (5, p.memory_size)
    h = p.input_projection(torch.cat([onehot_obs(2, 3), torch.randn(2, 3, 6)], -1))
    assert h.shape == (2, 3, 12)
    # it needs the one-hot view: the 152 raw codes are refused
    with pytest.raises(ValueError, match="one-hot"):
        FiLMTrunk(152, 6, 12)
    # the mission conditions the features (FiLM), not only the last Linear
    trunk = p.input_projection
    obs = onehot_obs(4)
    with torch.no_grad():
        trunk.proj.weight[:, -6:] = 0.0  # the mission's direct path to the output cut
        a = trunk(torch.cat([obs, torch.randn(4, 6)], -1))
        b = trunk(torch.cat([obs, torch.randn(4, 6)], -1))
    assert not torch.allclose(a, b)


def test_film_embedding_of_a_one_hot_cell_is_the_sum_of_its_code_embeddings():
    trunk = make_film_policy().input_projection
    w = trunk.embed.weight.t()  # (20, C)
    cell = torch.zeros(20)
    cell[[4, 11 + 2, 17 + 1]] = 1.0  # object 4, colour 2, state 1
    torch.testing.assert_close(trunk.embed(cell), w[4] + w[13] + w[18])


@pytest.mark.parametrize("kind", ["mop_ln", "mop_film", "mop_film_ln", "gru_film"])
def test_new_layer_and_trunk_step_by_step_equal_the_sequence_pass(kind):
    torch.manual_seed(2)
    ln = kind.endswith("_ln")
    if kind == "mop_ln":
        p, obs_dim = make_policy(layer_norm_residual=True), 20
    else:
        p, obs_dim = make_film_policy(kind.split("_")[0], layer_norm_residual=ln), ONEHOT_OBS
    T, B = 10, 4
    obs = onehot_obs(T, B) if obs_dim == ONEHOT_OBS else torch.randn(T, B, obs_dim)
    lang = torch.randn(T, B, 6)
    done = torch.zeros(T, B, dtype=torch.bool)
    done[3, 0] = done[4, 0] = done[9, 1] = done[0, 2] = True
    memory = torch.randn(B, p.memory_size)
    seq = p.forward_sequence(obs, lang, memory, done)
    m, logits = memory, []
    for t in range(T):
        out = p.step(obs[t], lang[t], m)
        logits.append(out.logits)
        m = reset_memory(out.memory, done[t])
    torch.testing.assert_close(seq.logits, torch.stack(logits), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(seq.memory, m, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", ["mop", "gru"])
def test_gradients_reach_every_parameter_of_the_trunk_and_the_papers_block(kind):
    p = make_film_policy(kind, **({"layer_norm_residual": True} if kind == "mop" else {}))
    out = p.forward_sequence(
        onehot_obs(4, 3), torch.randn(4, 3, 6), p.init_memory(3), torch.zeros(4, 3, dtype=torch.bool)
    )
    out.logits.square().mean().backward()
    for name, param in p.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_build_policy_reads_the_new_keys_and_defaults_them():
    base = dict(
        input_dim=ONEHOT_OBS,
        lang_dim=6,
        num_actions=7,
        intermediate_dim=12,
        router_hidden_size=10,
        expert_hidden_sizes=[[0, 8]],
        hidden_size=16,
    )
    plain = build_policy(base)
    assert plain.layers[0].norm is None and isinstance(plain.input_projection, nn.Linear)
    p = build_policy({**base, "layer_norm_residual": True, "input_encoder": "film", "trunk_channels": 4})
    assert p.layers[0].norm is not None and p.input_projection.channels == 4
    gru = build_policy({**base, "policy_type": "gru", "input_encoder": "film", "trunk_channels": 4})
    assert isinstance(gru.input_projection, FiLMTrunk) and gru.input_projection.channels == 4
