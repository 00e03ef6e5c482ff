"""Issue 32's building blocks, tier 1: what `layer_norm_residual` and `input_encoder: film` put in
the network (module types, shapes, the residual path), that `epochs` and `entropy_coef` reach the
learner, and that checkpoints written before these keys existed load and act as they did.

(The paper's block written out, step vs sequence, gradients: tests/test_model.py; numpy acting
step vs torch: tests/test_numpy_policy.py; bad values and the slow train/resume round trip:
tests/test_experiment.py.) Writes only to pytest's tmp_path.
    .venv/bin/python -m pytest -q tests/test_blocks.py
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import train_mop
from conftest import tiny_config
from mixture_of_experts import FiLMTrunk, MixtureOfExpertsPolicy, MoELayer, MoPConfig, build_policy
from mop.collection import Collector
from mop.experiment import load_checkpoint, load_policy
from mop.imitation import Learner

ONEHOT_OBS = 985  # 49 cells x 20 codes + direction (4) + carrying (1)
SIZES = ((0, 8, 16), (4, 0))
NEW_KEYS = ("layer_norm_residual", "trunk_channels", "epochs", "entropy_coef")


def mop(layer_norm_residual: bool = False, input_encoder: str = "linear", obs_dim: int = 20, **kw):
    torch.manual_seed(0)
    return MixtureOfExpertsPolicy(
        MoPConfig(
            obs_dim=obs_dim,
            lang_dim=6,
            intermediate_dim=12,
            router_hidden_size=10,
            expert_hidden_sizes=kw.pop("sizes", SIZES),
            input_encoder=input_encoder,
            layer_norm_residual=layer_norm_residual,
            **kw,
        )
    )


# ----------------------------------------------------------------------------- the paper's block


def test_layer_norm_residual_adds_a_layer_norm_per_layer_and_norm_relu_per_expert():
    plain, block = mop(), mop(layer_norm_residual=True)
    for layer, sizes in zip(block.layers, SIZES, strict=True):
        assert isinstance(layer.norm, nn.LayerNorm) and layer.norm.normalized_shape == (12,)
        for expert, size in zip(layer.experts, sizes, strict=True):
            if size == 0:  # the identity expert has no state to normalise
                assert expert.norm is None
            else:
                assert isinstance(expert.norm, nn.LayerNorm) and expert.norm.normalized_shape == (size,)
    for layer in plain.layers:
        assert layer.norm is None and all(e.norm is None for e in layer.experts)


@pytest.mark.parametrize("layer_norm_residual", [False, True])
def test_a_zero_mixture_leaves_layer_norm_of_x_only_with_the_residual(layer_norm_residual):
    """With every expert's output zeroed (no identity expert), the block outputs LayerNorm(x): the
    residual path carries x; the plain layer outputs zeros."""
    torch.manual_seed(1)
    layer = MoELayer(12, (8, 16), 10, layer_norm_residual=layer_norm_residual)
    with torch.no_grad():
        for expert in layer.experts:
            expert.out.weight.zero_()
            expert.out.bias.zero_()
    x = torch.randn(5, 3, 12) * 4 + 1
    y, w, _ = layer(x, torch.randn(3, sum(layer.memory_sizes)))
    expected = F.layer_norm(x, (12,)) if layer_norm_residual else torch.zeros_like(x)
    torch.testing.assert_close(y, expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(w.sum(-1), torch.ones(5, 3))


def test_the_expert_reads_relu_of_its_normalised_state():
    """An expert norm whose bias is very negative makes ReLU zero every unit: the expert then
    outputs its out-bias whatever the state (the ReLU sits between norm and read-out)."""
    torch.manual_seed(2)
    layer = MoELayer(12, (8,), 10, layer_norm_residual=True)
    expert = layer.experts[0]
    with torch.no_grad():
        expert.norm.bias.fill_(-100.0)
    states = torch.randn(4, 8) * 3
    torch.testing.assert_close(expert.out(expert.features(states)), expert.out.bias.expand(4, 12))
    assert expert.features(torch.randn(4, 8)).min() >= 0


# ----------------------------------------------------------------------------- the FiLM trunk


def test_film_trunk_modules_and_shapes():
    p = mop(input_encoder="film", obs_dim=ONEHOT_OBS, trunk_channels=8)
    trunk = p.input_projection
    assert isinstance(trunk, FiLMTrunk) and trunk.channels == 8
    assert isinstance(trunk.embed, nn.Linear) and trunk.embed.weight.shape == (8, 20)  # per-cell codes
    assert trunk.embed.bias is None
    assert [tuple(c.weight.shape) for c in (trunk.conv1, trunk.conv2)] == [(8, 8, 3, 3)] * 2
    assert len(trunk.film) == 2
    assert trunk.proj.in_features == 8 + 5 + 6 and trunk.proj.out_features == 12  # pooled, dir+carry, mission
    out = p.step(torch.rand(7, ONEHOT_OBS), torch.randn(7, 6), p.init_memory(7))
    assert out.logits.shape == (7, 7) and out.memory.shape == (7, p.memory_size)
    # the plain policy's trunk is still a Linear of obs (+) mission
    assert isinstance(mop().input_projection, nn.Linear)


def test_film_trunk_pools_only_at_the_end_so_a_cells_position_matters():
    """A global max-pool right after the embedding would be blind to where an object is; the
    convolutions before the pool are not: moving one object changes the output."""
    trunk = mop(input_encoder="film", obs_dim=ONEHOT_OBS, trunk_channels=8).input_projection
    cells = torch.zeros(49, 20)
    cells[:, 1] = 1.0  # empty
    cells[:, 11] = 1.0
    cells[:, 17] = 1.0
    a, b = cells.clone(), cells.clone()
    for view, cell in ((a, 10), (b, 40)):  # a red key at two places
        view[cell, :11] = 0.0
        view[cell, 5] = 1.0
        view[cell, 11:17] = 0.0
        view[cell, 11] = 1.0
    extra, lang = torch.zeros(5), torch.randn(6)
    with torch.no_grad():
        ya = trunk(torch.cat([a.flatten(), extra, lang]))
        yb = trunk(torch.cat([b.flatten(), extra, lang]))
    assert not torch.allclose(ya, yb)


# ----------------------------------------------------------------------------- the learner


def learner_and_chunk(tmp_path, **keys):
    cfg = tiny_config(tmp_path, **keys)
    sizes = [list(s) for s in cfg.expert_hidden_sizes]
    learner = Learner.build(cfg, "mop", build_policy, train_mop.make_loss(cfg, sizes), None)
    torch.manual_seed(5)
    collector = Collector(
        cfg.task_id, list(range(3)), run_seed=5, max_steps=20, obs_encoding=cfg.obs_encoding
    )
    chunk = collector.collect(learner.policy, learner.encoder, unroll_len=10)
    return learner, chunk


def adam_steps(learner: Learner) -> set[int]:
    return {int(s["step"]) for s in learner.optimizer.state.values()}


@pytest.mark.parametrize("epochs", [1, 3])
def test_epochs_is_the_number_of_optimizer_steps_per_update(tmp_path, epochs):
    learner, chunk = learner_and_chunk(tmp_path, epochs=epochs)
    parts = learner.step(chunk)
    assert adam_steps(learner) == {epochs}
    assert parts["train/epochs"] == epochs
    assert ("train/ce_last_epoch" in parts) == (epochs > 1)
    if epochs > 1:  # later passes saw moved weights (on the same batch)
        assert parts["train/ce_last_epoch"] != parts["train/ce"]


def test_entropy_coef_enters_the_gradient(tmp_path):
    """Same weights, same batch: the update differs with the bonus and not without it."""

    def weights_after_one_step(**keys):
        learner, chunk = learner_and_chunk(tmp_path / str(keys), **keys)
        parts = learner.step(chunk)
        return {k: v.clone() for k, v in learner.policy.state_dict().items()}, parts

    base, base_parts = weights_after_one_step()
    zero, _ = weights_after_one_step(entropy_coef=0.0)
    bonus, bonus_parts = weights_after_one_step(entropy_coef=0.5)
    assert all(torch.equal(base[k], zero[k]) for k in base)
    assert not all(torch.equal(base[k], bonus[k]) for k in base)
    # the entropy is logged either way, of the same (pre-step) logits
    assert base_parts["train/entropy"] == pytest.approx(bonus_parts["train/entropy"])
    assert 0 < base_parts["train/entropy"] <= torch.log(torch.tensor(7.0)).item() + 1e-6


# ----------------------------------------------------------------------------- older checkpoints


def test_a_checkpoint_without_the_new_keys_loads_as_the_plain_layer_and_equal_logits(tmp_path):
    """A checkpoint written before issue 32 (no layer_norm_residual / trunk_channels / epochs /
    entropy_coef in its config) loads as the plain layer and gives the logits it gave."""
    cfg = tiny_config(tmp_path / "ck", num_updates=1, checkpoint_interval=None)
    summary = train_mop.main(cfg, progress=False)
    path = summary["checkpoints"][-1]
    ckpt = torch.load(path, weights_only=True)
    reference = build_policy(ckpt["config"])  # as written, with the keys
    reference.load_state_dict(ckpt["policy_state_dict"])
    for key in NEW_KEYS:
        ckpt["config"].pop(key)
    assert not any("norm" in name for name in ckpt["policy_state_dict"])
    old = tmp_path / "old.pt"
    torch.save(ckpt, old)

    config = load_checkpoint(old)["config"]
    assert config["layer_norm_residual"] is False
    policy, encoder, _ = load_policy(old)
    assert all(layer.norm is None for layer in policy.layers)
    assert type(policy.input_projection) is type(reference.input_projection)
    reference.eval(), policy.eval()
    gen = torch.Generator().manual_seed(0)
    m_ref, m = reference.init_memory(4), policy.init_memory(4)
    with torch.no_grad():
        for _ in range(5):
            obs = torch.rand(4, config["input_dim"], generator=gen)
            lang = torch.randn(4, config["lang_dim"], generator=gen)
            a, b = reference.step(obs, lang, m_ref), policy.step(obs, lang, m)
            m_ref, m = a.memory, b.memory
            assert torch.equal(a.logits, b.logits)


@pytest.mark.parametrize("sizes", [None, [[0, 8, 128], [0, 8, 128]]])  # one fused recurrence; split (>= 128)
def test_a_bfloat16_learner_takes_the_float32_step_to_bf16_precision(tmp_path, sizes):
    """learner_precision bfloat16: the same batch from the same weights gives the float32 loss and
    gradient within bf16's rounding (not bit for bit: the matmuls did run in bf16), and the
    memory a stream carries, the weights and Adam stay float32."""
    keys = {} if sizes is None else {"expert_hidden_sizes": sizes}
    torch.manual_seed(0)  # Learner.build draws the initial weights from the global generator
    f32, chunk = learner_and_chunk(tmp_path / "f32", **keys)
    torch.manual_seed(0)
    bf, _ = learner_and_chunk(tmp_path / "bf16", learner_precision="bfloat16", **keys)
    assert all(torch.equal(a, b) for a, b in zip(f32.params, bf.params))  # the same start
    runs = {}
    for learner in (f32, bf):
        parts = learner.step(chunk)
        grad = torch.cat([p.grad.flatten() for p in learner.params if p.grad is not None])
        runs[learner.cfg.learner_precision] = (parts["train/ce"], grad)
    (ce32, g32), (ce16, g16) = runs["float32"], runs["bfloat16"]
    assert ce16 != ce32 and ce16 == pytest.approx(ce32, rel=1e-2)
    assert F.cosine_similarity(g16, g32, dim=0) > 0.99
    assert (g16.norm() / g32.norm()).item() == pytest.approx(1.0, abs=0.05)
    assert bf.end_memory.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in bf.params)
    assert all(v.dtype == torch.float32 for s in bf.optimizer.state.values() for v in s.values() if v.dim())
