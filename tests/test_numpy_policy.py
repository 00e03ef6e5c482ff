"""Tier 1: the numpy acting step equals the torch one (numpy_policy.py) for every policy kind it
covers, on real BabyAI observations and missions, and collection takes it only where it applies."""

import numpy as np
import pytest
import torch

from mixture_of_experts import build_policy
from mop import collection
from mop.babyai_env import make_env, obs_dim
from mop.collection import Collector, MissionCache, ObsBatch, act, acting_step
from mop.language import build_mission_encoder
from mop.numpy_policy import NumpyPolicy

LEVEL = "BabyAI-PutNextLocal-v0"  # two objects per mission, carrying: every input part varies


def _policy(policy_type, input_encoder, obs_encoding, sizes=((0, 16, 32), (0, 8), (4, 16, 32, 0)), **keys):
    torch.manual_seed(1)
    policy = build_policy(
        {
            "policy_type": policy_type,
            "input_dim": obs_dim(obs_encoding),
            "lang_dim": 12,
            "hidden_size": 24,
            "intermediate_dim": 20,
            "expert_hidden_sizes": [list(s) for s in sizes],
            "router_hidden_size": 10,
            "num_actions": 7,
            "input_encoder": input_encoder,
            **keys,
        }
    )
    with torch.no_grad():  # larger weights than the init: saturated gates and peaked routing too
        for p in policy.parameters():
            p.mul_(3.0)
    return policy.eval()


def _rollout(policy, encoder, obs_encoding, steps=40, n=6, corrupt=False):
    """Act with torch through real episodes; at every step compare the numpy step on the same
    inputs and memory. Returns the largest differences (logits, memory, router weights)."""
    envs = [make_env(LEVEL) for _ in range(n)]
    obs = [env.reset(seed=100 + i)[0] for i, env in enumerate(envs)]
    missions = MissionCache(encoder)
    actor = NumpyPolicy.of(policy, missions, obs_encoding)
    assert actor is not None
    memory = policy.init_memory(n)
    rng = np.random.default_rng(0)
    worst = np.zeros(3)
    for _ in range(steps):
        batch = ObsBatch.of(envs, obs)
        if corrupt:  # codes beyond minigrid's ranges are clamped by both encoders
            batch.image[0, 0, 0] = 255
        with torch.no_grad():
            ref = act(policy, missions, batch, memory, obs_encoding)
        logits, memory_np, weights = actor.step(batch, memory.numpy().copy())
        worst = np.maximum(
            worst,
            [
                np.abs(logits - ref.logits.numpy()).max(),
                np.abs(memory_np - ref.memory.numpy()).max(),
                max((np.abs(w - r.numpy()).max() for w, r in zip(weights, ref.router_weights)), default=0.0),
            ],
        )
        assert len(weights) == len(ref.router_weights)
        memory = ref.memory.clone()
        for k, env in enumerate(envs):
            obs[k], _, terminated, truncated, _ = env.step(int(rng.integers(7)))
            if terminated or truncated:
                obs[k] = env.reset(seed=200 + k)[0]
                memory[k] = 0
    return worst


@pytest.mark.parametrize(
    "policy_type,input_encoder,obs_encoding,lang",
    [
        ("mop", "bilinear", "onehot", "bow"),
        ("mop", "bilinear", "onehot", "gru"),
        ("mop", "linear", "onehot", "bow"),
        ("mop", "linear", "raw", "bow"),
        ("gru", "linear", "onehot", "bow"),
        ("gru", "linear", "raw", "gru"),
        ("gru", "bilinear", "onehot", "bow"),
    ],
)
def test_numpy_step_equals_torch_step(policy_type, input_encoder, obs_encoding, lang):
    torch.manual_seed(2)
    encoder = build_mission_encoder(lang, 12).eval()
    policy = _policy(policy_type, input_encoder, obs_encoding)
    worst = _rollout(policy, encoder, obs_encoding)
    assert worst.max() < 2e-5, worst


@pytest.mark.parametrize("sizes", [((0,),), ((16,),), ((8, 0, 4), (0, 0, 16)), ((0, 16, 32),) * 3])
def test_numpy_step_equals_torch_step_for_any_expert_layout(sizes):
    """Identity-only layers, GRU-only layers, identities in the middle, the default layout."""
    torch.manual_seed(2)
    encoder = build_mission_encoder("bow", 12).eval()
    policy = _policy("mop", "bilinear", "onehot", sizes)
    assert _rollout(policy, encoder, "onehot", steps=15, corrupt=True).max() < 2e-5


@pytest.mark.parametrize("layer_norm_residual", [False, True])
@pytest.mark.parametrize("sizes", [((0, 16, 32), (0, 8), (4, 16, 32, 0)), ((0,), (8, 0, 4))])
def test_numpy_step_equals_torch_step_with_lstm_experts(sizes, layer_norm_residual):
    """expert_cell 'lstm': the router's GRU then each expert's [h, c]; an identity-only layer too."""
    torch.manual_seed(2)
    encoder = build_mission_encoder("bow", 12).eval()
    policy = _policy(
        "mop", "bilinear", "onehot", sizes, expert_cell="lstm", layer_norm_residual=layer_norm_residual
    )
    _perturb_norms(policy)
    assert policy.memory_size == len(sizes) * 10 + 2 * sum(s for layer in sizes for s in layer)
    assert _rollout(policy, encoder, "onehot", steps=25, corrupt=True).max() < 2e-5


@pytest.mark.parametrize("input_encoder,obs_encoding", [("bilinear", "onehot"), ("linear", "raw")])
def test_numpy_step_equals_torch_step_with_babyais_actor_head(input_encoder, obs_encoding):
    """--head_hidden_size: Linear -> Tanh -> Linear on the last layer's output, in both actors."""
    torch.manual_seed(2)
    encoder = build_mission_encoder("bow", 12).eval()
    policy = _policy("mop", input_encoder, obs_encoding, head_hidden_size=24)
    assert policy.head_hidden.out_features == 24 and policy.head.in_features == 24
    assert _rollout(policy, encoder, obs_encoding, steps=25).max() < 2e-5


@pytest.mark.parametrize(
    "keys",
    [
        {},
        {"layer_norm_residual": True},
        {"expert_cell": "lstm", "head_hidden_size": 12},
        {"expert_cell": "lstm", "layer_norm_residual": True},
    ],
)
@pytest.mark.parametrize("sizes", [((0, 16, 32), (0, 8), (4, 16, 32, 0)), ((0,), (8, 0, 4))])
def test_numpy_step_equals_torch_step_with_a_head_that_reads_the_experts(sizes, keys):
    """--head_reads_experts: every expert's read-out input times its weight beside the output, in
    both actors; GRU and LSTM experts, with and without norms, an identity-only layer too."""
    torch.manual_seed(2)
    encoder = build_mission_encoder("bow", 12).eval()
    policy = _policy("mop", "bilinear", "onehot", sizes, head_reads_experts=True, **keys)
    _perturb_norms(policy)
    head_in = (policy.head_hidden or policy.head).in_features
    assert head_in == 20 + sum(s for layer in sizes for s in layer)
    assert _rollout(policy, encoder, "onehot", steps=25, corrupt=True).max() < 2e-5


def test_numpy_policy_declines_what_it_does_not_cover():
    missions = MissionCache(build_mission_encoder("bow", 12).eval())
    policy = _policy("mop", "bilinear", "onehot")
    assert NumpyPolicy.of(policy, missions, "onehot") is not None
    assert NumpyPolicy.of(policy.train(), missions, "onehot") is None  # training: dropout may apply
    policy.eval()
    policy.set_knockout([[False, True, False], [False, False], [False, False, False, False]])
    assert NumpyPolicy.of(policy, missions, "onehot") is None
    policy.set_knockout(threshold=0.1)
    assert NumpyPolicy.of(policy, missions, "onehot") is None
    policy.set_knockout()
    assert NumpyPolicy.of(policy, missions, "onehot") is not None
    policy.input_projection = torch.nn.Sequential(policy.input_projection)  # an encoder it does not know
    assert NumpyPolicy.of(policy, missions, "onehot") is None


def test_a_new_weight_version_needs_a_new_actor():
    """The actor is a snapshot: collection builds one per chunk, so the next chunk sees updates."""
    encoder = build_mission_encoder("bow", 12).eval()
    missions = MissionCache(encoder)
    policy = _policy("mop", "bilinear", "onehot")
    env = make_env(LEVEL)
    batch = ObsBatch.of([env], [env.reset(seed=0)[0]])
    memory = policy.init_memory(1)
    before = NumpyPolicy.of(policy, missions, "onehot").step(batch, memory.numpy())[0]
    with torch.no_grad():
        policy.head.bias.add_(1.0)
    assert np.allclose(
        NumpyPolicy.of(policy, missions, "onehot").step(batch, memory.numpy())[0], before + 1.0, atol=1e-5
    )


def test_collection_with_the_numpy_step_equals_collection_with_torch(monkeypatch):
    """Whole chunks (observations, labels, episode ends, memory) are the same either way."""

    def chunks():
        torch.manual_seed(3)
        encoder = build_mission_encoder("bow", 12)
        policy = _policy("mop", "bilinear", "onehot")
        c = Collector(LEVEL, list(range(4)), run_seed=5, max_steps=24, obs_encoding="onehot")
        return [c.collect(policy, encoder, unroll_len=16) for _ in range(3)]

    fast = chunks()
    monkeypatch.setattr(collection.NumpyPolicy, "of", classmethod(lambda cls, *a: None))
    slow = chunks()
    for a, b in zip(fast, slow):
        for key in ("image", "direction", "carrying", "mission_index", "label", "label_mask", "done"):
            assert np.array_equal(a[key], b[key]), key
        assert a["missions"] == b["missions"]
        # Two float32 kernels (numpy's BLAS, torch's) sum in different orders, and the rounding
        # compounds through 48 recurrent steps: 1.7e-5 at most on an AMD EPYC, under 1e-5 on the
        # Intel boxes before it. A wrong gate or a missed reset moves the memory by ~0.1.
        assert torch.allclose(a["memory"], b["memory"], atol=1e-4)
        assert [(t, e.seed, e.length, e.success) for t, e in a["episodes"]] == [
            (t, e.seed, e.length, e.success) for t, e in b["episodes"]
        ]


def test_acting_step_falls_back_to_torch():
    missions = MissionCache(build_mission_encoder("bow", 12).eval())
    policy = _policy("mop", "bilinear", "onehot").train()
    env = make_env(LEVEL)
    batch = ObsBatch.of([env], [env.reset(seed=0)[0]])
    with torch.no_grad():
        out = acting_step(policy, missions, "onehot")(batch, policy.init_memory(1))
        ref = act(policy, missions, batch, policy.init_memory(1), "onehot")
    assert torch.equal(out.logits, ref.logits)


def test_saturated_gates_give_the_torch_values_without_overflow_warnings():
    """Trained policies drive some gate pre-activations far past -88, where exp overflows float32."""
    import warnings

    torch.manual_seed(2)
    encoder = build_mission_encoder("bow", 12).eval()
    policy = _policy("mop", "bilinear", "onehot")
    with torch.no_grad():
        for layer in policy.layers:
            layer.router.gru.bias_ih_l0.fill_(-500.0)  # r, z gates of the router: sigmoid(-500) = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _rollout(policy, encoder, "onehot", steps=5).max() < 2e-5


def _blas_threads() -> int:
    from threadpoolctl import threadpool_info

    return max(info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas")


def test_acting_runs_torch_and_numpy_blas_on_one_thread_and_restores_them():
    # Two BLAS threads spin-wait for each other on a busy machine (24 ms against 0.14 ms per
    # product beside two training runs): acting must use one, and leave the caller's settings.
    from threadpoolctl import threadpool_limits

    from mop.numpy_policy import one_thread

    torch_before = torch.get_num_threads()
    with threadpool_limits(3, user_api="blas"):
        torch.set_num_threads(3)
        try:
            with one_thread():
                assert torch.get_num_threads() == 1
                assert _blas_threads() == 1
            assert torch.get_num_threads() == 3
            assert _blas_threads() == 3
        finally:
            torch.set_num_threads(torch_before)


# ----------------------------------------------------------------------------- issue 32: the MoP
# paper's block (layer_norm_residual) and BabyAI 1.1's trunk (input_encoder 'film')


@pytest.mark.parametrize(
    "policy_type,input_encoder,layer_norm_residual,lang",
    [
        ("mop", "bilinear", True, "bow"),
        ("mop", "linear", True, "gru"),
        ("mop", "film", False, "bow"),
        ("mop", "film", True, "gru"),
        ("gru", "film", False, "bow"),
    ],
)
def test_numpy_step_equals_torch_step_for_the_new_layer_and_trunk(
    policy_type, input_encoder, layer_norm_residual, lang
):
    torch.manual_seed(2)
    encoder = build_mission_encoder(lang, 12).eval()
    policy = _policy(
        policy_type, input_encoder, "onehot", layer_norm_residual=layer_norm_residual, trunk_channels=16
    )
    _perturb_norms(policy)
    assert _rollout(policy, encoder, "onehot", steps=25, corrupt=True).max() < 2e-5


def _perturb_norms(policy):
    """Norm weights in [0.5, 1.5] and biases in [-0.5, 0.5]: away from their identity init, so a
    missed norm shows, and not x3 as _policy scales the rest (a norm's x3 gain on logits of ~14
    leaves float32 rounding of 2-3e-5, the torch step's own distance from float64 included)."""
    with torch.no_grad():
        for module in policy.modules():
            if isinstance(module, (torch.nn.LayerNorm, torch.nn.GroupNorm)):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)


@pytest.mark.parametrize("sizes", [((0,),), ((16,),), ((8, 0, 4), (0, 0, 16))])
def test_numpy_papers_block_for_any_expert_layout(sizes):
    torch.manual_seed(2)
    encoder = build_mission_encoder("bow", 12).eval()
    policy = _policy("mop", "bilinear", "onehot", sizes, layer_norm_residual=True)
    _perturb_norms(policy)
    assert _rollout(policy, encoder, "onehot", steps=15).max() < 2e-5


def test_collection_takes_the_numpy_step_for_the_trunk_and_equals_torch(monkeypatch):
    """The trunk and the paper's block are covered in numpy (no torch fallback), and whole chunks
    collected with them equal those collected with the torch step."""
    missions = MissionCache(build_mission_encoder("bow", 12).eval())
    policy = _policy("mop", "film", "onehot", layer_norm_residual=True, trunk_channels=8)
    assert isinstance(NumpyPolicy.of(policy, missions, "onehot"), NumpyPolicy)
    assert NumpyPolicy.of(policy, missions, "raw") is None  # (the config refuses film with raw)

    def chunks():
        torch.manual_seed(3)
        encoder = build_mission_encoder("bow", 12)
        policy = _policy("mop", "film", "onehot", layer_norm_residual=True, trunk_channels=8)
        c = Collector(LEVEL, list(range(3)), run_seed=5, max_steps=24, obs_encoding="onehot")
        return [c.collect(policy, encoder, unroll_len=12) for _ in range(2)]

    fast = chunks()
    monkeypatch.setattr(collection.NumpyPolicy, "of", classmethod(lambda cls, *a: None))
    slow = chunks()
    for a, b in zip(fast, slow):
        for key in ("image", "direction", "carrying", "mission_index", "label", "label_mask", "done"):
            assert np.array_equal(a[key], b[key]), key
        assert torch.allclose(a["memory"], b["memory"], atol=1e-4)


def test_the_film_trunk_acts_in_torch_and_both_backends_give_the_same_logits():
    """acting_backend's rule: the 'film' trunk acts in torch (its convolutions are cheaper there),
    the MLP trunks in numpy; both steps give the same logits (so the same actions) within 1e-5."""
    envs = [make_env(LEVEL) for _ in range(3)]
    batch = ObsBatch.of(envs, [env.reset(seed=7 + i)[0] for i, env in enumerate(envs)])
    for trunk, backend in (("film", "torch"), ("bilinear", "numpy")):
        policy = _policy("mop", trunk, "onehot", trunk_channels=8)
        missions = MissionCache(build_mission_encoder("bow", 12))
        assert collection.acting_backend(policy) == backend
        r = collection.measure_acting(policy, missions, "onehot", batch, repeats=1)
        assert r["max_logit_diff"] < 1e-5
        used = []
        real = NumpyPolicy.of
        collection.NumpyPolicy.of = lambda *a, used=used, real=real: used.append(1) or real(*a)
        try:
            out = acting_step(policy, missions, "onehot")(batch, policy.init_memory(3))
        finally:
            collection.NumpyPolicy.of = real
        assert bool(used) == (backend == "numpy") and out.logits.shape == (3, 7)
