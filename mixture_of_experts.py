"""Recurrent Mixture-of-Pathways (MoP) policy and the plain GRU baseline.

The idea (Cook et al. 2025, "Brain-like processing pathways form in models with heterogeneous
experts"): every layer holds experts of *different* sizes, including a size-0 identity expert, and
a recurrent router mixes them with softmax weights. Charging each expert its size squared
(Learned Pathway Complexity, LPC, eq. 1) pushes easy inputs onto cheap pathways, so where the
router sends its weight tells us how much computation the policy thinks a state needs.

    input = obs (152 or one-hot) ⊕ mission embedding (lang_dim)
          → Linear(intermediate_dim) → L × MoELayer → Linear(num_actions) = action logits
    MoELayer: router GRU(router_hidden_size) → Linear → softmax over experts (B, E)
              expert j: GRU(intermediate → s_j) → Linear(s_j → intermediate); s_j = 0 is identity
              output = Σ_j w_j · expert_j(x)            (dense soft mixture)
    layer_norm_residual (the MoP paper's block): output = LayerNorm(x + Σ_j w_j · expert_j(x)),
              expert j: GRU → LayerNorm(s_j) → ReLU → Linear (see MoELayer)
    input_encoder 'film' (BabyAI 1.1's trunk, FiLMTrunk): per-cell code embedding → two 3x3 convs
              → two mission-conditioned FiLM blocks with residuals → max-pool over the view → Linear

Recurrent memory is ONE flat tensor per batch row, (B, memory_size): the hidden states of every
router and every non-identity expert, concatenated layer by layer. Resetting, detaching, slicing
per env and storing are then plain tensor operations; `reset_memory` is the one place that zeroes
finished episodes.

Two forward paths share the same `nn.GRU` weights:
- `step(obs, lang, memory)`: one time step, used to act (no graph needed);
- `forward_sequence(obs, lang, memory, done)`: a whole unroll of T steps, with episode ends inside
  it, used by the learner. The stateless parts (input encoder, head) run on all T x B steps at
  once, and each layer's router and experts run as one fused recurrence that zeroes the memory
  where an episode starts; tests check both paths agree.

At inference an expert can be knocked out (`set_knockout`: zeroed, survivors renormalised) or
intervened on (`set_interventions`: zero, route_around, swap; causal.py measures their effects).

Example:
    policy = MixtureOfExpertsPolicy(MoPConfig(expert_hidden_sizes=((0, 16, 32),) * 3))
    out = policy.step(obs, lang, policy.init_memory(16))   # out.logits, out.memory, out.router_weights
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from mop.checks import normalize_expert_sizes  # noqa: F401  (re-exported; checked before torch is needed)

NUM_ACTIONS = 7  # minigrid Actions: left, right, forward, pickup, drop, toggle, done
EXPERT_CELLS = ("gru", "lstm")


# ----------------------------------------------------------------------------- config


@dataclass(frozen=True)
class MoPConfig:
    obs_dim: int = 152
    lang_dim: int = 32
    intermediate_dim: int = 64
    expert_hidden_sizes: tuple[tuple[int, ...], ...] = field(default=((0, 16, 32),) * 3)
    router_hidden_size: int = 64
    num_actions: int = NUM_ACTIONS
    input_encoder: str = "linear"  # "linear" (earlier system), "bilinear" or "film" (both need one-hot obs)
    trunk_channels: int = 128  # input_encoder "film": channels of its convolutions (BabyAI 1.1: 128)
    # The MoP paper's block (jackcook/mixture-of-pathways): LayerNorm(x + mixture) per layer, and a
    # norm and a ReLU after each expert's GRU. False: the earlier system's layer, bare mixture.
    layer_norm_residual: bool = False
    # The experts' memory cell: "gru" (the MoP paper's and the earlier system's) or "lstm" (BabyAI's
    # IL model's cell): an LSTM expert's memory holds its h and then its c (2 x size); its output
    # Linear reads h. The router stays a GRU; LPC still charges size squared.
    expert_cell: str = "gru"
    # Routing-dependent expert dropout (Cook et al. 2025): an expert with weight w < gamma is
    # dropped with probability beta * (1 - w / gamma) during training. beta = 0 turns it off.
    expert_dropout_beta: float = 0.0
    expert_dropout_gamma: float = 0.1
    # The action head: 0 is one Linear on the last layer's output (the MoP paper's); H > 0 is
    # Linear(H) -> Tanh -> Linear, BabyAI's actor (its model.py: H = 64), which can combine features
    # (the key ahead's colour against a remembered door's) that one Linear can only add.
    head_hidden_size: int = 0
    # The head's input: False is the last layer's output alone; True adds every layer's experts'
    # states (what each output Linear reads, the memory where a door's colour is held), each scaled
    # by its router weight, so routing still gates all an expert does (a knocked-out expert is
    # read as 0) and LPC keeps its meaning.
    head_reads_experts: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "expert_hidden_sizes", normalize_expert_sizes(self.expert_hidden_sizes))
        if self.expert_cell not in EXPERT_CELLS:
            raise ValueError(f"expert_cell must be one of {EXPERT_CELLS}, got {self.expert_cell!r}")


class PolicyOutput(NamedTuple):
    logits: torch.Tensor  # (B, A) from step, (T, B, A) from forward_sequence
    memory: torch.Tensor  # (B, memory_size): memory after the last step
    router_weights: list[torch.Tensor]  # per layer (B, E) or (T, B, E); empty for the GRU baseline
    memory_seq: torch.Tensor | None = None  # forward_sequence: (T, B, M) memory after each step
    # forward_sequence: (T, B, F) what the action head reads at each step (head_input_size wide)
    head_input_seq: torch.Tensor | None = None


# ----------------------------------------------------------------------------- memory


def reset_memory(memory: torch.Tensor, done: torch.Tensor) -> torch.Tensor:
    """Zero the memory rows of envs whose episode just ended. memory (B, M), done (B,) bool."""
    return memory * (~done.bool()).unsqueeze(-1).to(memory.dtype)


class RecurrentPolicy(nn.Module):
    """Shared step / sequence machinery.

    Subclasses split the forward pass in three: `_input` and `_output` act on each step alone
    (so the sequence path runs them on all T*B steps at once), `_recurrent` runs the memory."""

    memory_sizes: list[int]  # widths of the recurrent states inside the flat memory

    @property
    def memory_size(self) -> int:
        return sum(self.memory_sizes)

    @property
    def head_input_size(self) -> int:
        """The width of what the action head reads at a step (PolicyOutput.head_input_seq)."""
        first = getattr(self, "head_hidden", None) or self.head
        return first.in_features

    def init_memory(self, batch_size: int, device: torch.device | str = "cpu") -> torch.Tensor:
        return torch.zeros(batch_size, self.memory_size, device=device)

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        """obs ⊕ mission (..., D) -> recurrent input (..., I)."""
        raise NotImplementedError

    def _recurrent(
        self, h: torch.Tensor, memory: torch.Tensor, starts: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """h (T, B, I), memory (B, M), starts (T, B): zero the memory before step t ->
        features (T, B, F), router weights [(T, B, E)], memory after each step (T, B, M)."""
        raise NotImplementedError

    def _output(self, features: torch.Tensor) -> torch.Tensor:
        """features (..., F) -> action logits (..., A)."""
        raise NotImplementedError

    def step(self, obs: torch.Tensor, lang: torch.Tensor, memory: torch.Tensor) -> PolicyOutput:
        """One time step for B envs: obs (B, obs_dim), lang (B, lang_dim), memory (B, M)."""
        h = self._input(torch.cat([obs, lang], dim=-1)).unsqueeze(0)  # (1, B, I)
        features, weights, mem_seq = self._recurrent(h, memory)
        return PolicyOutput(self._output(features[0]), mem_seq[0], [w[0] for w in weights])

    def forward_sequence(
        self, obs: torch.Tensor, lang: torch.Tensor, memory: torch.Tensor, done: torch.Tensor
    ) -> PolicyOutput:
        """A T-step unroll: obs (T, B, obs_dim), lang (T, B, lang_dim), memory (B, M) at t = 0,
        done (T, B) = episode ended after step t. Equals T calls of `step` with `reset_memory`."""
        h = self._input(torch.cat([obs, lang], dim=-1))  # (T, B, I)
        starts = torch.zeros_like(done, dtype=torch.bool)
        starts[1:] = done[:-1]  # memory restarts at t + 1 after an episode ends at t
        features, weights, mem_seq = self._recurrent(h, memory, starts)
        logits = self._output(features).float()  # float32 under the learner's bfloat16 autocast too
        return PolicyOutput(logits, reset_memory(mem_seq[-1], done[-1]), weights, mem_seq, features)


# ----------------------------------------------------------------------------- MoP modules


FusedWeights = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def fuse_gru_weights(grus: Sequence[nn.GRU]) -> FusedWeights:
    """(w_ih (D, 3H), b_ih (3H,), w_hh (H, 3H) block-diagonal per gate, b_hh) of GRUs sharing one
    input, gates r, z, n of every GRU in turn. The weights are stored transposed and contiguous,
    the layout a small matmul reads fastest (`torch.addmm(b, x, w)`)."""
    return fuse_rnn_weights(grus, 3)


def fuse_lstm_weights(lstms: Sequence[nn.LSTM]) -> FusedWeights:
    """As fuse_gru_weights for LSTMs (gates i, f, g, o, PyTorch's order): w_ih (D, 4H), ..."""
    return fuse_rnn_weights(lstms, 4)


def fuse_rnn_weights(rnns: Sequence[nn.RNNBase], num_gates: int) -> FusedWeights:
    sizes = [g.hidden_size for g in rnns]

    def gates(name: str) -> list[list[torch.Tensor]]:  # [gate][rnn] blocks, each (h_k, ...)
        return [
            [getattr(g, name)[i * h : (i + 1) * h] for g, h in zip(rnns, sizes)] for i in range(num_gates)
        ]

    return (
        torch.cat([torch.cat(blocks) for blocks in gates("weight_ih_l0")]).t().contiguous(),
        torch.cat([torch.cat(blocks) for blocks in gates("bias_ih_l0")]),
        torch.cat([torch.block_diag(*blocks) for blocks in gates("weight_hh_l0")]).t().contiguous(),
        torch.cat([torch.cat(blocks) for blocks in gates("bias_hh_l0")]),
    )


class FusionCache:
    """Weights fused from several modules' parameters. With grad they are fused anew on every call,
    so gradients reach the parameters; without (acting, evaluation) once per weight version: the
    key is every parameter's storage and in-place version, so loading a state dict or an
    optimizer step is seen."""

    def __init__(self, modules: Sequence[nn.Module], fuse: Callable[[], Any]):
        self._modules, self._fuse = list(modules), fuse  # not registered: the owner holds the parameters
        self._cache: tuple[tuple, Any] | None = None

    def get(self) -> Any:
        if torch.is_grad_enabled():
            return self._fuse()
        key = tuple(
            (p.data_ptr(), p._version) for m in self._modules for p in m._parameters.values() if p is not None
        )
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, self._fuse())
        return self._cache[1]


# With grad (the learner: 64 x 64 rows and more per op) a GRU of at least this many units runs
# its own recurrent matmul: the block-diagonal one's zero blocks then cost more than the ops saved
# (the router + [128, 512] experts: their recurrence's forward + backward 1.3-1.6x faster split
# that way, [128, 256] 1.4-1.8x, on 1 thread at 64 columns x 64 steps; docs/speed.md).
SPLIT_UNITS = 128


def gru_groups(sizes: Sequence[int], split_units: int | None = None) -> list[list[int]]:
    """Contiguous groups of GRU indices that share one block-diagonal recurrence: each GRU of
    >= split_units (default SPLIT_UNITS, read when called) alone, the smaller ones between them
    together, in order (the memory's layout)."""
    split_units = SPLIT_UNITS if split_units is None else split_units
    groups: list[list[int]] = []
    for i, size in enumerate(sizes):
        if size < split_units and groups and sizes[groups[-1][-1]] < split_units:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


class FusedGRUs(nn.Module):
    """Several single-layer GRUs that read the same input, run as ONE recurrence.

    PyTorch's CPU GRU backward is a Python-level loop of small ops per GRU, so fusing the router
    and the experts of a layer (input projections of all steps in one matmul, one block-diagonal
    matmul per step) cuts the learner's op count about threefold. The weights stay in the
    `nn.GRU` modules (gate order r, z, n), so checkpoints keep the standard names; a test checks
    this equals calling each `nn.GRU` on its own. With grad, a GRU of SPLIT_UNITS or more runs as
    its own recurrence (gru_groups): the same equations without the zero blocks' arithmetic.
    """

    def __init__(self, grus: Sequence[nn.GRU]):
        super().__init__()
        self.sizes = [g.hidden_size for g in grus]
        self._fused = FusionCache(grus, partial(fuse_gru_weights, list(grus)))
        groups = gru_groups(self.sizes)
        self._groups = (
            None
            if len(groups) == 1
            else [
                (
                    sum(self.sizes[i] for i in g),
                    FusionCache([grus[i] for i in g], partial(fuse_gru_weights, [grus[i] for i in g])),
                )
                for g in groups
            ]
        )

    def weights(self) -> FusedWeights:
        return self._fused.get()

    def forward(self, x: torch.Tensor, h0: torch.Tensor, starts: torch.Tensor | None = None) -> torch.Tensor:
        """x (T, B, D), h0 (B, H) with H = sum of hidden sizes -> hidden sequence (T, B, H)."""
        if self._groups is None or not torch.is_grad_enabled():
            return gru_recurrence(x, h0, self.weights(), starts)
        parts = h0.split([size for size, _ in self._groups], dim=-1)
        return torch.cat(
            [gru_recurrence(x, h, fused.get(), starts) for h, (_, fused) in zip(parts, self._groups)], -1
        )


def _recurrence_inputs(
    x: torch.Tensor, weights: FusedWeights, starts: torch.Tensor | None
) -> tuple[tuple[torch.Tensor, ...], torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...] | None]:
    """What gru_recurrence and lstm_recurrence share: every step's input gates (T x (B, G)), the
    recurrent weight and bias, and the keep mask of each step (T x (B, 1); None without starts)."""
    w_ih, b_ih, w_hh, b_hh = weights
    if torch.is_autocast_enabled(x.device.type):  # the learner's bfloat16 (learner_precision)
        # Fused weights are not leaves, which autocast's cache skips: cast them once, not per step.
        # The matmuls' results come back to float32 (.float()), so the memory stays float32.
        dtype = torch.get_autocast_dtype(x.device.type)
        w_ih, b_ih, w_hh, b_hh = (w.to(dtype) for w in weights)
    # Input gates of every step in one matmul (on 2-D rows: no batched-matmul detour); unbind (not
    # indexing) so backward does not allocate a full (L, S, G) gradient per step.
    gi = torch.addmm(b_ih, x.reshape(-1, x.shape[-1]), w_ih).float().view(*x.shape[:-1], -1).unbind(0)
    keep = None if starts is None else (~starts).to(x.dtype).unsqueeze(-1).unbind(0)  # T x (B, 1)
    return gi, w_hh, b_hh, keep


def gru_recurrence(
    x: torch.Tensor, h0: torch.Tensor, weights: FusedWeights, starts: torch.Tensor | None = None
) -> torch.Tensor:
    """The GRU equations (PyTorch's convention) over x (T, B, D) from h0 (B, H) -> (T, B, H).

    starts (T, B) bool marks steps where an episode begins: the memory is zeroed before them, so
    a whole unroll with episode ends inside runs as one recurrence."""
    gi, w_hh, b_hh, keep = _recurrence_inputs(x, weights, starts)
    H = w_hh.shape[0]
    h, out = h0, []
    for t in range(x.shape[0]):
        if keep is not None:
            h = h * keep[t]
        gh = torch.addmm(b_hh, h, w_hh).float()  # (S, 3H): the three gates' recurrent terms in one matmul
        r, z = torch.sigmoid(gi[t][:, : 2 * H] + gh[:, : 2 * H]).chunk(2, dim=-1)
        n = torch.tanh(gi[t][:, 2 * H :] + r * gh[:, 2 * H :])  # (S, H)
        h = n + z * (h - n)  # (1 - z) * n + z * h
        out.append(h)
    return torch.stack(out)  # (L, S, H)


def lstm_recurrence(
    x: torch.Tensor, state0: torch.Tensor, weights: FusedWeights, starts: torch.Tensor | None = None
) -> torch.Tensor:
    """The LSTM equations (PyTorch's convention, gates i, f, g, o) over x (T, B, D) from
    state0 (B, 2H) = [h, c] -> the states after each step (T, B, 2H); starts as in gru_recurrence
    (h and c both zeroed)."""
    gi, w_hh, b_hh, keep = _recurrence_inputs(x, weights, starts)
    H = w_hh.shape[0]
    h, c = state0[:, :H], state0[:, H:]
    out = []
    for t in range(x.shape[0]):
        if keep is not None:
            h, c = h * keep[t], c * keep[t]
        gates = gi[t] + torch.addmm(b_hh, h, w_hh).float()  # (S, 4H)
        i, f = torch.sigmoid(gates[:, : 2 * H]).chunk(2, dim=-1)
        c = f * c + i * torch.tanh(gates[:, 2 * H : 3 * H])
        h = torch.sigmoid(gates[:, 3 * H :]) * torch.tanh(c)
        out.append(torch.cat([h, c], -1))
    return torch.stack(out)  # (L, S, 2H)


class Expert(nn.Module):
    """GRU(in -> size) + Linear(size -> in); size 0 is the identity (a free skip pathway).
    With `norm` (layer_norm_residual) the GRU's state goes through LayerNorm(size) and a ReLU
    before the Linear, as the MoP paper's expert does (there a BatchNorm1d; see MoELayer).
    With cell "lstm" an LSTM(in -> size) (`self.lstm`) holds the memory: its state is [h, c]
    (state_size = 2 x size) and the Linear reads h."""

    def __init__(self, dim: int, size: int, norm: bool = False, cell: str = "gru"):
        super().__init__()
        self.size = size
        self.lstm_cell = cell == "lstm" and size > 0
        self.state_size = size * (2 if self.lstm_cell else 1)
        self.norm: nn.LayerNorm | None = None
        if size > 0:
            if self.lstm_cell:
                self.lstm = nn.LSTM(dim, size)
            else:
                self.gru = nn.GRU(dim, size)
            self.out = nn.Linear(size, dim)
            if norm:
                self.norm = nn.LayerNorm(size)

    def features(self, h: torch.Tensor) -> torch.Tensor:
        """The expert's state (..., state_size) -> what the output Linear reads (..., size)."""
        if self.lstm_cell:
            h = h[..., : self.size]
        return h if self.norm is None else torch.relu(self.norm(h))


class Router(nn.Module):
    """GRU over the layer input, then a linear map to one logit per expert."""

    def __init__(self, dim: int, hidden_size: int, num_experts: int):
        super().__init__()
        self.gru = nn.GRU(dim, hidden_size)
        self.out = nn.Linear(hidden_size, num_experts)


def routing_dependent_dropout(weights: torch.Tensor, beta: float, gamma: float) -> torch.Tensor:
    """Cook et al. 2025: drop expert j with probability beta * (1 - w_j / gamma) if w_j < gamma,
    then renormalise the surviving weights. The largest expert of a row is never dropped, so
    a row can never lose all its experts. weights (..., E) -> (..., E)."""
    with torch.no_grad():
        p_drop = beta * (1.0 - weights / gamma).clamp(min=0.0)
        keep = torch.bernoulli(1.0 - p_drop.clamp(max=1.0)).bool()
        keep |= F.one_hot(weights.argmax(-1), weights.shape[-1]).bool()
    kept = weights * keep.to(weights.dtype)
    return kept / kept.sum(-1, keepdim=True)


def apply_knockout(
    weights: torch.Tensor, disabled: torch.Tensor | None, threshold: float | None
) -> torch.Tensor:
    """Expert knockout at inference (Cook et al. 2025): zero the `disabled` experts (E,) bool and,
    with a threshold, every expert whose weight is below it (a row's largest surviving expert is
    always kept), then renormalise the rest. weights (..., E) -> (..., E)."""
    keep = torch.ones_like(weights, dtype=torch.bool)
    if disabled is not None:
        keep &= ~disabled.to(weights.device)
    if threshold is not None:
        masked = weights.masked_fill(~keep, -1.0)
        keep &= (weights >= threshold) | F.one_hot(masked.argmax(-1), weights.shape[-1]).bool()
    kept = weights * keep.to(weights.dtype)
    return kept / kept.sum(-1, keepdim=True).clamp_min(1e-12)


INTERVENTIONS = ("zero", "route_around", "swap")


@dataclass(frozen=True)
class Intervention:
    """What one expert's output becomes at inference (causal.py; docs/reference.md):
    - zero: removed from the mixture, the other weights NOT renormalised (the mixture shrinks);
    - route_around: today's knockout, the survivors renormalised (apply_knockout);
    - swap: replaced by expert `target`'s output at the same routed weight (target != expert).
    Every one is a linear map of the routed weights (intervene_weights), so the layer's router
    weights after it are the *effective* weights: how much each expert's output is in the mixture."""

    layer: int
    expert: int
    kind: str
    target: int | None = None  # swap only: the expert whose output stands in

    @property
    def label(self) -> str:
        swap = f">{self.target}" if self.kind == "swap" else ""
        return f"{self.kind} layer_{self.layer}:{self.expert}{swap}"


def intervene_weights(
    weights: torch.Tensor, kind: str, expert: int, target: int | None = None
) -> torch.Tensor:
    """Effective weights (..., E) of one intervention on `expert`: the intervened mixture is
    Σ_j w'_j · expert_j(x). zero: w'_e = 0. route_around: w'_e = 0 and the rest renormalised (the
    knockout of apply_knockout). swap: w'_target = w_target + w_e and w'_e = 0, i.e. expert e's
    output replaced by the target's at e's routed weight. weights (..., E) -> (..., E)."""
    E = weights.shape[-1]
    mask = torch.zeros(E, dtype=torch.bool, device=weights.device)
    mask[expert] = True
    if kind == "route_around":
        return apply_knockout(weights, mask, None)
    removed = weights.masked_fill(mask, 0.0)
    if kind == "zero":
        return removed
    if kind == "swap":
        if target is None or target == expert:
            raise ValueError(f"a swap of expert {expert} needs another expert as its target, got {target}")
        moved = torch.zeros_like(weights)
        moved[..., target] = weights[..., expert]
        return removed + moved
    raise ValueError(f"intervention must be one of {INTERVENTIONS}, got {kind!r}")


class MoELayer(nn.Module):
    """One MoP layer: a router and experts reading the same input x (T, B, D).

    layer_norm_residual=False (the earlier system's layer): y = Σ_j w_j · expert_j(x).
    layer_norm_residual=True, the MoP paper's block as its code builds it (jackcook/
    mixture-of-pathways, pathways/model.py): `Block.forward` returns `self.ln(x + moe_output)`,
    i.e. y = LayerNorm(x + Σ_j w_j · expert_j(x)), and `Expert.forward` runs GRU → norm → ReLU →
    Linear. Taken from it: those two lines' meaning. Not taken: its BatchNorm1d after the expert's
    GRU (here LayerNorm over the expert's units: batch statistics would make the learner's replay
    differ from the acting pass and a row's action depend on the other rows of its batch) and its
    ReLU between the router's GRU and output layer (the router here is unchanged). A size-0 expert
    is still the identity, so with all the weight on it the layer returns LayerNorm(2x) =
    LayerNorm(x) up to its eps: the cheap pathway passes its input on, normalised. The memory
    holds the GRUs' states themselves (the norm only feeds the read-out); LPC is unchanged."""

    def __init__(
        self,
        dim: int,
        sizes: Sequence[int],
        router_hidden_size: int,
        layer_norm_residual: bool = False,
        expert_cell: str = "gru",
    ):
        super().__init__()
        self.sizes = tuple(sizes)
        self.knockout: torch.Tensor | None = None  # (E,) bool: experts disabled at inference
        self.knockout_threshold: float | None = None
        self.interventions: tuple[Intervention, ...] = ()  # applied in turn, after the knockout
        # With a knockout or an intervention on: the router's own weights (T, B, E) of the last
        # forward, before either (causal.py reports the LPC of both).
        self.last_router_weights: torch.Tensor | None = None
        self.router = Router(dim, router_hidden_size, len(sizes))
        self.experts = nn.ModuleList(Expert(dim, s, layer_norm_residual, expert_cell) for s in sizes)
        # Registered after the experts, and only when on: the default layer's state dict (and the
        # earlier system's checkpoints) keep exactly their names.
        self.norm = nn.LayerNorm(dim) if layer_norm_residual else None
        self._recurrent_experts = [e for e in self.experts if e.size > 0]  # GRU or LSTM: all but identities
        self.lstm_experts = expert_cell == "lstm" and bool(self._recurrent_experts)
        if self.lstm_experts:  # the router's GRU alone, each LSTM expert its own recurrence
            self.grus = FusedGRUs([self.router.gru])
            self._lstms = [
                FusionCache([e.lstm], partial(fuse_lstm_weights, [e.lstm])) for e in self._recurrent_experts
            ]
        else:
            self.grus = FusedGRUs([self.router.gru] + [e.gru for e in self._recurrent_experts])
        # Widths of the layer's memory blocks: the router's, then each non-identity expert's state
        self.memory_sizes = [router_hidden_size] + [e.state_size for e in self._recurrent_experts]
        # The read-out needs the states mapped first (norms, or an LSTM's h out of [h, c])
        self._mapped_read_out = layer_norm_residual or self.lstm_experts
        self.dim = dim
        outputs = [self.router.out] + [e.out for e in self._recurrent_experts]
        self._outputs_modules = outputs  # a plain list: the router and experts register them
        self._outputs = FusionCache(outputs, partial(fuse_linear_blocks, outputs))
        self._recurrent_expert_index = _selector([j for j, s in enumerate(self.sizes) if s > 0])
        self._identity_experts = _selector([j for j, s in enumerate(self.sizes) if s == 0])

    def forward(
        self,
        x: torch.Tensor,
        h0: torch.Tensor,
        dropout: tuple[float, float] | None = None,
        starts: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (T, B, D), h0 (B, R + sum s_j) = [router, experts with s_j > 0].
        Returns output (T, B, D), router weights (T, B, E), hidden sequence (T, B, R + sum s_j)."""
        h_seq = self.recurrence(x, h0, starts)
        logits, outs = self._read_out(h_seq)
        weights = torch.softmax(logits.float(), dim=-1)  # (L, S, E); float32 under bfloat16 autocast too
        if dropout is not None:
            weights = routing_dependent_dropout(weights, *dropout)
        if self.intervened:
            self.last_router_weights = weights
            if self.knockout is not None or self.knockout_threshold is not None:
                weights = apply_knockout(weights, self.knockout, self.knockout_threshold)
            for iv in self.interventions:
                weights = intervene_weights(weights, iv.kind, iv.expert, iv.target)
        mixed = []  # sum_j weight_j * output_j, the recurrent experts' outputs, then the identities'
        if self._recurrent_expert_index is not None:
            mixed.append((outs * weights[..., self._recurrent_expert_index].unsqueeze(-1)).sum(-2))
        if self._identity_experts is not None:  # size 0: the input itself
            mixed.append(x * weights[..., self._identity_experts].sum(-1, keepdim=True))
        mixed = mixed[0] if len(mixed) == 1 else mixed[0] + mixed[1]
        if self.norm is not None:
            mixed = self.norm(x + mixed)
        return mixed, weights, h_seq

    def recurrence(
        self, x: torch.Tensor, h0: torch.Tensor, starts: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The router's and the experts' states after each step (T, B, sum of memory_sizes)."""
        if not self.lstm_experts:
            return self.grus(x, h0, starts)
        parts = h0.split(self.memory_sizes, dim=-1)
        seqs = [self.grus(x, parts[0], starts)]
        seqs += [lstm_recurrence(x, p, fused.get(), starts) for p, fused in zip(parts[1:], self._lstms)]
        return torch.cat(seqs, -1)

    @property
    def read_size(self) -> int:
        """Width of routed_features: every recurrent expert's read-out width (its size)."""
        return sum(e.size for e in self._recurrent_experts)

    def routed_features(self, h_seq: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """h_seq (..., R + sum of state sizes), weights (..., E) as forward returns them (after any
        knockout or intervention) -> each recurrent expert's features scaled by its weight,
        concatenated (..., read_size): what a head that reads the experts sees (head_reads_experts)."""
        if not self._recurrent_experts:  # identities only: nothing to read
            return h_seq[..., :0]
        parts = torch.split(h_seq, self.memory_sizes, dim=-1)[1:]
        routed = weights[..., self._recurrent_expert_index]  # (..., G): the recurrent experts' weights
        return torch.cat(
            [
                e.features(p) * routed[..., g : g + 1]
                for g, (e, p) in enumerate(zip(self._recurrent_experts, parts))
            ],
            dim=-1,
        )

    @property
    def intervened(self) -> bool:
        """Whether inference changes this layer's routing (a knockout or an intervention)."""
        return self.knockout is not None or self.knockout_threshold is not None or bool(self.interventions)

    def _read_out(self, h_seq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """h_seq (L, S, R + sum s_j) -> router logits (L, S, E), recurrent experts' outputs (L, S, G, D).

        Acting and evaluation (no grad, a few rows per call) are bound by per-op overhead: one
        block-diagonal matmul does the router and every expert (~20% faster steps). Training
        (hundreds of rows) is bound by arithmetic, and that matmul's zero blocks cost ~8% of a
        layer's forward + backward: there each Linear reads its own slice."""
        if not torch.is_grad_enabled():
            bias, weight = self._outputs.get()
            if (
                self._mapped_read_out
            ):  # the experts' states through their norms / h of [h, c] (the router's as is)
                parts = torch.split(h_seq, self.memory_sizes, dim=-1)
                h_seq = torch.cat(
                    [parts[0], *(e.features(p) for e, p in zip(self._recurrent_experts, parts[1:]))], -1
                )
            y = torch.addmm(bias, h_seq.reshape(-1, h_seq.shape[-1]), weight).view(*h_seq.shape[:-1], -1)
            E = len(self.sizes)
            return y[..., :E], y[..., E:].unflatten(-1, (-1, self.dim))
        parts = torch.split(h_seq, self.memory_sizes, dim=-1)
        outs = [e.out(e.features(p)) for e, p in zip(self._recurrent_experts, parts[1:])]
        return self._outputs_modules[0](parts[0]), torch.stack(outs, dim=-2) if outs else None


def _selector(indices: list[int]) -> slice | list[int] | None:
    """Index of `indices` along a last axis: a slice when they are consecutive (a view, no gather),
    None when there are none."""
    if not indices:
        return None
    if indices == list(range(indices[0], indices[-1] + 1)):
        return slice(indices[0], indices[-1] + 1)
    return indices


def fuse_linear_blocks(linears: Sequence[nn.Linear]) -> tuple[torch.Tensor, torch.Tensor]:
    """(bias, weight (in, out)) of one affine map applying each of `linears` to its own consecutive
    slice of the input and concatenating their outputs: a block-diagonal weight, transposed and
    contiguous as in fuse_gru_weights (`torch.addmm(bias, x, weight)`)."""
    return torch.cat([m.bias for m in linears]), torch.block_diag(
        *[m.weight for m in linears]
    ).t().contiguous()


ONEHOT_CELLS, ONEHOT_CELL_DIM = 49, 20  # the one-hot observation: 7x7 cells x (11 + 6 + 3) codes


class BilinearInput(nn.Module):
    """Mission-conditioned observation encoder (a per-cell hypernetwork, in the spirit of the
    BabyAI paper's FiLM conditioning).

    A linear map of obs ⊕ mission cannot express "this cell holds the object the mission names":
    that is a product of cell and mission features. Here the mission sets the weights of a small
    per-cell detector, h_c = relu(x_c W(m) + b(m)), shared over the 49 cells of the one-hot view;
    with one-hot codes x_c W(m) is a sum of mission-dependent scores for the cell's object, colour
    and state, so a unit can fire exactly on "red ball". The cells plus direction, carrying and
    mission are then projected to out_dim. Learned much faster than 'linear' here (offline fit of
    bot trajectories on GoToLocal: 85% vs 76% accuracy after the same 160 updates).
    x (..., obs_dim + lang_dim) with obs in the "onehot" layout -> (..., out_dim)."""

    def __init__(self, obs_dim: int, lang_dim: int, out_dim: int, cell_dim: int = 16):
        super().__init__()
        self.obs_dim, self.cell_dim = obs_dim, cell_dim
        self.extra = obs_dim - ONEHOT_CELLS * ONEHOT_CELL_DIM
        if self.extra < 0:
            raise ValueError(f"input_encoder 'bilinear' needs the one-hot observation, got obs_dim {obs_dim}")
        self.cell_weights = nn.Linear(lang_dim, ONEHOT_CELL_DIM * cell_dim)
        self.cell_bias = nn.Linear(lang_dim, cell_dim)
        self.proj = nn.Linear(ONEHOT_CELLS * cell_dim + self.extra + lang_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        cells = x[..., : ONEHOT_CELLS * ONEHOT_CELL_DIM].reshape(
            -1, ONEHOT_CELLS, ONEHOT_CELL_DIM
        )  # (N, 49, 20)
        extra, lang = x[..., ONEHOT_CELLS * ONEHOT_CELL_DIM : self.obs_dim], x[..., self.obs_dim :]
        w = self.cell_weights(lang).reshape(-1, ONEHOT_CELL_DIM, self.cell_dim)  # (N, 20, cell_dim)
        b = self.cell_bias(lang).reshape(-1, 1, self.cell_dim)  # (N, 1, cell_dim)
        h = torch.relu(torch.bmm(cells, w) + b).reshape(*lead, ONEHOT_CELLS * self.cell_dim)
        return self.proj(torch.cat([h, extra, lang], dim=-1))


VIEW = 7  # the agent's view is VIEW x VIEW cells


class FiLMBlock(nn.Module):
    """One of BabyAI 1.1's FiLM blocks (its `FiLM` module, after Perez et al. 2018), with the
    residual its 'res' architectures add: x + relu(norm2(conv2(relu(norm1(conv1(x)))) * γ(m) + β(m))).
    x (N, C, 7, 7), m the mission embedding (N, lang_dim). GroupNorm(1, C) stands for BabyAI's
    BatchNorm2d (see FiLMTrunk)."""

    def __init__(self, lang_dim: int, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm1 = nn.GroupNorm(1, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(1, channels)
        self.gamma = nn.Linear(lang_dim, channels)
        self.beta = nn.Linear(lang_dim, channels)

    def forward(self, x: torch.Tensor, lang: torch.Tensor) -> torch.Tensor:
        h = self.conv2(torch.relu(self.norm1(self.conv1(x))))
        h = h * self.gamma(lang)[..., None, None] + self.beta(lang)[..., None, None]
        return x + torch.relu(self.norm2(h))


class FiLMTrunk(nn.Module):
    """BabyAI 1.1's observation trunk (Hui et al. 2020, "BabyAI 1.1"; mila-iqia/babyai
    babyai/model.py, arch 'bow_endpool_res'): each cell's object, colour and state codes are
    embedded and summed (its ImageBOWEmbedding), two 3x3 convolutions with norm and ReLU, two FiLM
    blocks conditioned on the mission with residuals, and only then a max-pool over the whole
    7x7 view (its 'endpool'). The pooled features ⊕ direction ⊕ carrying ⊕ mission go through one
    Linear to out_dim, the MoP layers' (or the GRU baseline's) input.

    It reads the one-hot observation: a cell's one-hot (20) times a (20, C) matrix is exactly
    the sum of its three codes' embeddings, so the embedding is a bias-free Linear per cell (the
    'raw' codes are refused by the config). Departures from BabyAI's code, each for a reason:
    GroupNorm(1, C) (per sample, over channels and cells) where it has BatchNorm2d, whose batch
    statistics in training would make the learner's replay differ from the acting pass and tie a
    row's action to its batch; the ReLU after its pool is left out (every block ends in a ReLU and
    adds to a non-negative input, so it would be the identity); the mission reaches the FiLM
    blocks as the mission encoder's one vector (no attention over its words).
    x (..., obs_dim + lang_dim) with obs in the "onehot" layout -> (..., out_dim)."""

    def __init__(self, obs_dim: int, lang_dim: int, out_dim: int, channels: int = 128):
        super().__init__()
        self.obs_dim, self.channels = obs_dim, channels
        self.extra = obs_dim - ONEHOT_CELLS * ONEHOT_CELL_DIM
        if self.extra < 0:
            raise ValueError(f"input_encoder 'film' needs the one-hot observation, got obs_dim {obs_dim}")
        self.embed = nn.Linear(ONEHOT_CELL_DIM, channels, bias=False)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm1 = nn.GroupNorm(1, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(1, channels)
        self.film = nn.ModuleList(FiLMBlock(lang_dim, channels) for _ in range(2))
        self.proj = nn.Linear(channels + self.extra + lang_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        cells = x[..., : ONEHOT_CELLS * ONEHOT_CELL_DIM].reshape(-1, VIEW, VIEW, ONEHOT_CELL_DIM)
        extra, lang = x[..., ONEHOT_CELLS * ONEHOT_CELL_DIM : self.obs_dim], x[..., self.obs_dim :]
        flat_lang = lang.reshape(-1, lang.shape[-1])
        h = self.embed(cells).permute(0, 3, 1, 2)  # (N, C, 7, 7)
        h = torch.relu(self.norm1(self.conv1(h)))
        h = torch.relu(self.norm2(self.conv2(h)))
        for block in self.film:
            h = block(h, flat_lang)
        pooled = h.amax(dim=(-2, -1)).reshape(*lead, self.channels)  # (..., C)
        return self.proj(torch.cat([pooled, extra, lang], dim=-1))


INPUT_ENCODERS = ("linear", "bilinear", "film")


def make_input_encoder(
    kind: str, obs_dim: int, lang_dim: int, out_dim: int, trunk_channels: int = 128
) -> nn.Module:
    if kind == "linear":
        return nn.Linear(obs_dim + lang_dim, out_dim)
    if kind == "bilinear":
        return BilinearInput(obs_dim, lang_dim, out_dim)
    if kind == "film":
        return FiLMTrunk(obs_dim, lang_dim, out_dim, trunk_channels)
    raise ValueError(f"input_encoder must be one of {INPUT_ENCODERS}, got {kind!r}")


class MixtureOfExpertsPolicy(RecurrentPolicy):
    def __init__(self, config: MoPConfig):
        super().__init__()
        self.config = config
        self.expert_sizes = config.expert_hidden_sizes
        self.input_projection = make_input_encoder(
            config.input_encoder,
            config.obs_dim,
            config.lang_dim,
            config.intermediate_dim,
            config.trunk_channels,
        )
        self.layers = nn.ModuleList(
            MoELayer(
                config.intermediate_dim,
                sizes,
                config.router_hidden_size,
                config.layer_norm_residual,
                config.expert_cell,
            )
            for sizes in self.expert_sizes
        )
        head_in = config.intermediate_dim
        if config.head_reads_experts:
            head_in += sum(layer.read_size for layer in self.layers)
        hidden = config.head_hidden_size
        self.head_hidden = nn.Linear(head_in, hidden) if hidden > 0 else None
        self.head = nn.Linear(hidden or head_in, config.num_actions)
        self.layer_memory_sizes = [sum(layer.memory_sizes) for layer in self.layers]
        self.memory_sizes = [s for layer in self.layers for s in layer.memory_sizes]

    def set_knockout(
        self, disabled: Sequence[Sequence[bool]] | None = None, threshold: float | None = None
    ) -> None:
        """Disable experts at inference: disabled[k][j] for layer k, expert j, and/or every expert
        whose router weight is below `threshold`; the remaining weights are renormalised.
        set_knockout() restores the full model (interventions too)."""
        if disabled is None and threshold is None:
            self.set_interventions(None)
        if disabled is not None and len(disabled) != len(self.layers):
            raise ValueError(f"knockout lists {len(disabled)} layers, the policy has {len(self.layers)}")
        for k, layer in enumerate(self.layers):
            mask = None if disabled is None else torch.tensor(list(disabled[k]), dtype=torch.bool)
            if mask is not None and (mask.numel() != len(layer.sizes) or bool(mask.all())):
                raise ValueError(
                    f"knockout of layer {k} must leave at least one of its {len(layer.sizes)} experts"
                )
            layer.knockout = mask if mask is not None and bool(mask.any()) else None
            layer.knockout_threshold = threshold

    def set_interventions(self, interventions: Sequence[Intervention] | None = None) -> None:
        """Intervene on experts at inference (Intervention: zero, route_around or swap), each
        expert at most once, applied in the order given after any knockout; None or [] removes
        them (the knockout stays). Raises ValueError naming what this policy lacks."""
        chosen = list(interventions or ())
        seen = set()
        for iv in chosen:
            if iv.kind not in INTERVENTIONS:
                raise ValueError(f"intervention must be one of {INTERVENTIONS}, got {iv.kind!r}")
            if not 0 <= iv.layer < len(self.layers):
                raise ValueError(f"{iv.label}: the policy has layers 0..{len(self.layers) - 1}")
            E = len(self.layers[iv.layer].sizes)
            if not 0 <= iv.expert < E:
                raise ValueError(f"{iv.label}: layer {iv.layer} has experts 0..{E - 1}")
            if (iv.layer, iv.expert) in seen:
                raise ValueError(f"{iv.label}: one intervention per expert")
            seen.add((iv.layer, iv.expert))
            if iv.kind == "swap" and (iv.target is None or not 0 <= iv.target < E or iv.target == iv.expert):
                raise ValueError(
                    f"{iv.label}: a swap needs another expert of layer {iv.layer} (0..{E - 1}) as its "
                    "target; a swap onto the same expert is refused"
                )
            if iv.kind != "swap" and iv.target is not None:
                raise ValueError(f"{iv.label}: only a swap has a target")
            if iv.kind == "route_around" and E == 1:
                raise ValueError(f"{iv.label}: routing around the only expert of a layer leaves none")
        for k, layer in enumerate(self.layers):
            layer.interventions = tuple(iv for iv in chosen if iv.layer == k)
            layer.last_router_weights = None

    def _input(self, x):
        return self.input_projection(x)  # (..., intermediate_dim)

    def _output(self, features):
        if self.head_hidden is not None:
            features = torch.tanh(self.head_hidden(features))
        return self.head(features)

    def _recurrent(self, h, memory, starts=None):
        states = torch.split(memory, self.layer_memory_sizes, dim=-1)
        dropout = None
        if self.training and self.config.expert_dropout_beta > 0:
            dropout = (self.config.expert_dropout_beta, self.config.expert_dropout_gamma)
        weights, seqs, reads = [], [], []
        for layer, h0 in zip(self.layers, states):
            h, w, h_seq = layer(h, h0, dropout, starts)
            weights.append(w)
            seqs.append(h_seq)
            if self.config.head_reads_experts:
                reads.append(layer.routed_features(h_seq, w))
        if reads:  # the head reads the last layer's output and the routed experts' states
            h = torch.cat([h, *(r.to(h.dtype) for r in reads)], dim=-1)
        return h, weights, torch.cat(seqs, dim=-1)


# ----------------------------------------------------------------------------- GRU baseline


class GRUPolicy(RecurrentPolicy):
    """The baseline of train.py: obs ⊕ mission → one GRU(hidden_size) → Linear(num_actions).
    With input_encoder 'bilinear' or 'film' the same mission-conditioned input as the MoP policy
    feeds the GRU."""

    def __init__(
        self,
        obs_dim: int,
        lang_dim: int,
        hidden_size: int,
        num_actions: int = NUM_ACTIONS,
        input_encoder: str = "linear",
        trunk_channels: int = 128,
    ):
        super().__init__()
        self.input_projection = None
        in_dim = obs_dim + lang_dim
        if input_encoder != "linear":  # the earlier system's baseline feeds obs ⊕ mission straight to the GRU
            self.input_projection = make_input_encoder(
                input_encoder, obs_dim, lang_dim, hidden_size, trunk_channels
            )
            in_dim = hidden_size
        self.gru = nn.GRU(in_dim, hidden_size)
        self.head = nn.Linear(hidden_size, num_actions)
        self.grus = FusedGRUs([self.gru])
        self.memory_sizes = [hidden_size]
        self.expert_sizes: tuple[tuple[int, ...], ...] = ()

    def _input(self, x):
        return x if self.input_projection is None else self.input_projection(x)

    def _output(self, features):
        return self.head(features)

    def _recurrent(self, h, memory, starts=None):
        h_seq = self.grus(h, memory, starts)  # (T, B, H)
        return h_seq, [], h_seq


# ----------------------------------------------------------------------------- LPC


def compute_lpc(
    router_weights: Sequence[torch.Tensor],
    expert_sizes: Sequence[Sequence[int]],
    exponent: float = 2.0,
    reduction: str = "none",
) -> torch.Tensor:
    """Learned Pathway Complexity (Cook et al. 2025, eq. 1): Σ_layers Σ_j w_j · s_j^exponent.

    router_weights: per layer (..., E). reduction "none" gives one value per sample (...),
    "mean" the batch mean. The identity expert (s = 0) costs nothing.
    """
    if len(router_weights) != len(expert_sizes):
        raise ValueError(f"{len(router_weights)} layers of weights but {len(expert_sizes)} of sizes")
    if not router_weights:
        raise ValueError("compute_lpc needs at least one MoE layer")
    total = 0
    for w, sizes in zip(router_weights, expert_sizes):
        cost = torch.tensor([float(s) ** exponent for s in sizes], dtype=w.dtype, device=w.device)
        total = total + (w * cost).sum(-1)
    if reduction == "mean":
        return total.mean()
    if reduction != "none":
        raise ValueError(f"reduction must be 'none' or 'mean', got {reduction!r}")
    return total


def max_lpc(expert_sizes: Sequence[Sequence[int]], exponent: float = 2.0) -> float:
    """Largest possible LPC (all weight on every layer's largest expert), for --normalize_lpc scales."""
    return float(sum(max(sizes) ** exponent for sizes in expert_sizes))


def build_policy(config: dict) -> RecurrentPolicy:
    """Rebuild a policy from a run config (checkpoint['config']); the one place both kinds are made."""
    if config.get("policy_type", "mop") == "gru":
        return GRUPolicy(
            config["input_dim"],
            config["lang_dim"],
            config["hidden_size"],
            config["num_actions"],
            config.get("input_encoder", "linear"),
            config.get("trunk_channels", 128),
        )
    return MixtureOfExpertsPolicy(
        MoPConfig(
            obs_dim=config["input_dim"],
            lang_dim=config["lang_dim"],
            intermediate_dim=config["intermediate_dim"],
            expert_hidden_sizes=config["expert_hidden_sizes"],
            router_hidden_size=config["router_hidden_size"],
            num_actions=config["num_actions"],
            input_encoder=config.get("input_encoder", "linear"),
            trunk_channels=config.get("trunk_channels", 128),
            layer_norm_residual=config.get("layer_norm_residual", False),
            expert_cell=config.get("expert_cell", "gru"),
            expert_dropout_beta=config.get("expert_dropout_beta", 0.0),
            expert_dropout_gamma=config.get("expert_dropout_gamma", 0.1),
            head_hidden_size=config.get("head_hidden_size", 0),
            head_reads_experts=config.get("head_reads_experts", False),
        )
    )
