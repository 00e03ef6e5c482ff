"""A policy's acting step in numpy: the same maths as `RecurrentPolicy.step`, for collection.

Acting runs one step for a handful of envs at a time (8 rows per worker by default), so torch's
per-op overhead, not arithmetic, sets its cost: about 100 small ops at 4-10 us each, against
1-2 us for numpy's. `NumpyPolicy` reads a policy's weights once per chunk (they are fixed while a
chunk is collected) and steps it in numpy, with two rewrites that are exact in real arithmetic:

- The first affine map of the step (the input encoder, or a bare GRU's input gates) reads
  obs ⊕ mission, so it splits into an image part, a direction/carrying part and a mission part;
  the mission part (with the bias) is computed once per distinct mission, not every step.
- The bilinear encoder's per-cell detector applied to a one-hot cell is the sum of three rows of
  the mission's detector matrix, one per channel code. Per mission, a table of that sum (plus the
  detector's bias) for every (object, colour, state) triple is built once; a step is then one
  table lookup per cell, and the 980-wide one-hot view is never built.

- The 'film' trunk's code embedding is likewise one (object, colour, state) table, built once;
  its FiLM blocks' scales and shifts are per-mission arrays, and its 3x3 convolutions are one
  matmul each over the 9 shifted copies of the zero-padded view (im2col).

It covers what collection acts with: `MixtureOfExpertsPolicy` (with or without layer_norm_residual,
GRU or LSTM experts)
and `GRUPolicy`, the 'linear', 'bilinear' and 'film' input encoders, the 'raw' and 'onehot'
observation encodings, in eval mode and without knockout. `NumpyPolicy.of` returns None for anything else, and callers act with torch then.
Logits, memory and router weights equal the torch step's to float rounding
(tests/test_numpy_policy.py); the learner recomputes every unroll in torch from the chunk's initial
memory, so the rounding never reaches a gradient.

    actor = NumpyPolicy.of(policy, missions, "onehot")  # weights read now; missions: MissionCache
    logits, memory, weights = actor.step(batch, memory)  # batch: collection.ObsBatch; numpy arrays
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from torch import nn

from mixture_of_experts import (
    ONEHOT_CELL_DIM,
    ONEHOT_CELLS,
    VIEW,
    BilinearInput,
    FiLMTrunk,
    GRUPolicy,
    MixtureOfExpertsPolicy,
    MoELayer,
    fuse_gru_weights,
    fuse_linear_blocks,
    fuse_lstm_weights,
)
from mop.babyai_env import CHANNEL_SIZES, OBS_ENCODINGS, obs_dim

EXTRA = 5  # direction one-hot (4) ⊕ carrying (1), after the image in every observation encoding
_OFFSETS = np.cumsum((0,) + CHANNEL_SIZES[:-1])  # where each channel's codes start in a cell's 20
_CODE_MAX = np.array(CHANNEL_SIZES, np.uint8) - 1  # encode_obs clamps codes into range
# (obj, colour, state) -> row of a mission's table, and back
_TRIPLE = np.array([CHANNEL_SIZES[1] * CHANNEL_SIZES[2], CHANNEL_SIZES[2], 1], np.intp)
TRIPLES = int(np.prod(CHANNEL_SIZES))  # 198 rows per mission's table
_TRIPLE_CODES = np.unravel_index(np.arange(TRIPLES), CHANNEL_SIZES)


def use_one_thread() -> None:
    """torch and numpy's BLAS on one thread for the rest of this process (a collection, evaluation or
    demo worker, or a learner whose workers use the other cores); see `one_thread`."""
    torch.set_num_threads(1)
    threadpool_limits(1, user_api="blas")


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """torch and numpy's BLAS on one thread inside the block, as they were after it.

    Acting multiplies batches of <= num_envs rows, where a second thread only adds synchronisation,
    and on a busy machine much worse: a thread that waits for its partner spins while the partner
    waits for a core. With two training runs on the 2 cores, one (16, 985) @ (985, 128) product
    took 24 ms on numpy's default two OpenBLAS threads against 0.14 ms on one, and a maze run
    went from 5 s per update to 1.3 s. torch's threads behave the same (10x slower in evaluation).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(threads)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float32, copy=True)


class _SplitAffine:
    """x @ w + b for x = image (I) ⊕ direction one-hot (4) ⊕ carrying (1) ⊕ mission (L), with the
    mission part and the bias computed once per mission. w is (I + 5 + L, O), as stored for addmm."""

    def __init__(self, w: np.ndarray, b: np.ndarray, image_dim: int):
        self.image = np.ascontiguousarray(w[:image_dim])
        self.direction = np.ascontiguousarray(w[image_dim : image_dim + 4])
        self.carrying = w[image_dim + 4].copy()
        self.mission_w, self.b = np.ascontiguousarray(w[image_dim + EXTRA :]), b

    def mission(self, lang: np.ndarray) -> np.ndarray:
        """(L,) -> this mission's constant term (O,)."""
        return lang @ self.mission_w + self.b

    def __call__(
        self, image: np.ndarray, direction: np.ndarray, carrying: np.ndarray, mission: np.ndarray
    ) -> np.ndarray:
        """image (B, I), direction (B,) int, carrying (B,) float, mission terms (B, O) -> (B, O)."""
        y = image @ self.image
        y += mission
        y += self.direction.take(direction, axis=0)
        y += carrying[:, None] * self.carrying
        return y


def _linear_t(linear: nn.Linear) -> tuple[np.ndarray, np.ndarray]:
    """(weight (in, out), bias) in the layout the torch read-out uses (fuse_linear_blocks)."""
    bias, weight = fuse_linear_blocks([linear])
    return _np(weight), _np(bias)


class _GRUCell:
    """Fused GRUs (gate order r, z, n) for one step, from precomputed input gates gi (B, 3H)."""

    def __init__(self, grus: list[nn.GRU]):
        self.w_ih, self.b_ih, self.w_hh, self.b_hh = (_np(t) for t in fuse_gru_weights(grus))
        self.H = self.w_hh.shape[0]

    def __call__(self, gi: np.ndarray, h: np.ndarray) -> np.ndarray:
        H, H2 = self.H, 2 * self.H
        gh = h @ self.w_hh
        gh += self.b_hh
        rz = gi[:, :H2] + gh[:, :H2]  # contiguous: the sigmoid runs in place on it
        np.negative(rz, out=rz)
        np.minimum(rz, 80.0, out=rz)  # exp(88.7) overflows float32; sigmoid(-80) is 0 to its precision
        np.exp(rz, out=rz)
        rz += 1.0
        np.reciprocal(rz, out=rz)
        n = gh[:, H2:]
        n *= rz[:, :H]
        n += gi[:, H2:]
        np.tanh(n, out=n)
        out = h - n  # (1 - z) * n + z * h
        out *= rz[:, H:]
        out += n
        return out


class _LSTMCell:
    """One LSTM (gates i, f, g, o) for one step: x (B, D), state [h, c] (B, 2H) -> [h, c] after it."""

    def __init__(self, lstm: nn.LSTM):
        self.w_ih, self.b_ih, self.w_hh, self.b_hh = (_np(t) for t in fuse_lstm_weights([lstm]))
        self.H = self.w_hh.shape[0]

    def __call__(self, x: np.ndarray, state: np.ndarray) -> np.ndarray:
        H = self.H
        gates = x @ self.w_ih
        gates += self.b_ih
        gates += state[:, :H] @ self.w_hh
        gates += self.b_hh
        ifo = np.concatenate([gates[:, : 2 * H], gates[:, 3 * H :]], axis=1)
        np.negative(ifo, out=ifo)
        np.minimum(ifo, 80.0, out=ifo)  # as _GRUCell's sigmoid
        np.exp(ifo, out=ifo)
        ifo += 1.0
        np.reciprocal(ifo, out=ifo)
        c = state[:, H:] * ifo[:, H : 2 * H]
        c += ifo[:, :H] * np.tanh(gates[:, 2 * H : 3 * H])
        return np.concatenate([ifo[:, 2 * H :] * np.tanh(c), c], axis=1)


def _norm_params(norm: nn.LayerNorm | nn.GroupNorm) -> tuple[np.ndarray, np.ndarray, float]:
    return _np(norm.weight), _np(norm.bias), float(norm.eps)


def _normalize(
    x: np.ndarray, params: tuple[np.ndarray, np.ndarray, float], axes: tuple[int, ...]
) -> np.ndarray:
    """(x - mean) / sqrt(var + eps) * weight + bias, statistics over `axes` (LayerNorm over the
    last axis; GroupNorm(1, C) over cells and channels), weight and bias along the last axis."""
    weight, bias, eps = params
    y = x - x.mean(axis=axes, keepdims=True)
    y /= np.sqrt(np.square(y).mean(axis=axes, keepdims=True) + eps)
    y *= weight
    y += bias
    return y


class _MoELayer:
    def __init__(self, layer: MoELayer, reads: bool = False):
        experts = [e for e in layer.experts if e.size > 0]
        # LSTM experts (expert_cell 'lstm'): the router's GRU alone, then each expert's LSTM
        self.lstms = [_LSTMCell(e.lstm) for e in experts] if layer.lstm_experts else []
        self.gru = _GRUCell([layer.router.gru] + ([] if self.lstms else [e.gru for e in experts]))
        bias, weight = fuse_linear_blocks(layer._outputs_modules)
        self.out_b, self.out_w = _np(bias), _np(weight)
        self.E, self.D = len(layer.sizes), layer.dim
        self.recurrent_experts = [j for j, s in enumerate(layer.sizes) if s > 0]
        self.identities = [j for j, s in enumerate(layer.sizes) if s == 0]
        # The layer's norm (layer_norm_residual); each expert's (start, width) in the state, its
        # read width (h of an LSTM's [h, c]) and its norm, when the read-out maps the states
        self.norm = None if layer.norm is None else _norm_params(layer.norm)
        self.router_size = layer.memory_sizes[0]
        bounds = np.cumsum(layer.memory_sizes)
        self.expert_blocks = [
            (
                int(bounds[k]),
                int(layer.memory_sizes[k + 1]),
                e.size,
                None if e.norm is None else _norm_params(e.norm),
            )
            for k, e in enumerate(experts)
        ]
        self.mapped = layer._mapped_read_out  # the torch read-out's rule: norms, or LSTM experts
        self.reads = reads  # --head_reads_experts: also return MoELayer.routed_features

    def __call__(
        self, x: np.ndarray, h0: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """-> the layer's output, router weights, memory after the step and, with `reads`, the
        routed experts' features (None without)."""
        gi = x @ self.gru.w_ih
        gi += self.gru.b_ih
        if self.lstms:
            R = self.router_size
            h = np.concatenate(
                [self.gru(gi, h0[:, :R])]
                + [
                    cell(x, h0[:, start : start + width])
                    for cell, (start, width, _, _) in zip(self.lstms, self.expert_blocks)
                ],
                axis=1,
            )
        else:
            h = self.gru(gi, h0)
        features = h
        # The experts' states through their norms and a ReLU (an LSTM's h of [h, c]); the memory keeps h
        if self.mapped:
            features = [h[:, : self.router_size]]
            for start, _, size, params in self.expert_blocks:
                f = h[:, start : start + size]
                features.append(f if params is None else np.maximum(_normalize(f, params, (-1,)), 0.0))
            features = np.concatenate(features, axis=1)
        y = features @ self.out_w
        y += self.out_b
        weights = y[:, : self.E] - y[:, : self.E].max(axis=1, keepdims=True)
        np.exp(weights, out=weights)
        weights /= weights.sum(axis=1, keepdims=True)
        E, D = self.E, self.D
        if self.identities:  # size 0: the input itself
            mixed = x * weights[:, self.identities].sum(axis=1, keepdims=True)
        else:
            mixed = np.zeros_like(x)
        for g, j in enumerate(self.recurrent_experts):
            mixed += y[:, E + g * D : E + (g + 1) * D] * weights[:, j : j + 1]
        if self.norm is not None:
            mixed += x
            mixed = _normalize(mixed, self.norm, (-1,))
        read = None
        if self.reads:  # MoELayer.routed_features: each expert's read-out input times its weight
            reads, offset = [], self.router_size  # features: the router's, then each expert's `size`
            for (_, _, size, _), j in zip(self.expert_blocks, self.recurrent_experts):
                reads.append(features[:, offset : offset + size] * weights[:, j : j + 1])
                offset += size
            read = np.concatenate(reads, axis=1) if reads else np.zeros((len(h), 0), np.float32)
        return mixed, weights, h, read


class _Conv3x3:
    """nn.Conv2d(C, C', 3, padding=1) on channel-last views (B, 7, 7, C): one matmul over the 9
    shifted copies of the zero-padded view (im2col), patches ordered (row shift, column shift, C)."""

    def __init__(self, conv: nn.Conv2d):
        w = conv.weight.detach().permute(2, 3, 1, 0)  # (3, 3, C, C')
        self.w = _np(w.reshape(-1, w.shape[-1]))  # (9C, C')
        self.b = _np(conv.bias)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        B, H, W, C = x.shape
        padded = np.zeros((B, H + 2, W + 2, C), np.float32)
        padded[:, 1:-1, 1:-1] = x
        cols = np.empty((B, H, W, 9, C), np.float32)
        for k in range(9):
            dy, dx = divmod(k, 3)
            cols[:, :, :, k] = padded[:, dy : dy + H, dx : dx + W]
        y = cols.reshape(B * H * W, 9 * C) @ self.w
        y += self.b
        return y.reshape(B, H, W, -1)


class _FiLMTrunk:
    """FiLMTrunk's image part in numpy: (B, 49, 3) cell codes and each row's FiLM scales and
    shifts -> the pooled features (B, C)."""

    def __init__(self, trunk: FiLMTrunk):
        w = _np(trunk.embed.weight).T  # (20, C): a one-hot cell times it is its codes' embedding sum
        obj, col, state = _TRIPLE_CODES
        self.table = w[obj] + w[_OFFSETS[1] + col] + w[_OFFSETS[2] + state]  # (198, C)
        self.stem = [
            (_Conv3x3(trunk.conv1), _norm_params(trunk.norm1)),
            (_Conv3x3(trunk.conv2), _norm_params(trunk.norm2)),
        ]
        self.blocks = [
            (_Conv3x3(b.conv1), _norm_params(b.norm1), _Conv3x3(b.conv2), _norm_params(b.norm2))
            for b in trunk.film
        ]
        self.films = [tuple(_linear_t(m) for m in (b.gamma, b.beta)) for b in trunk.film]

    def mission(self, lang: np.ndarray) -> np.ndarray:
        """(L,) -> the FiLM blocks' (scale, shift) for this mission (blocks, 2, C)."""
        return np.stack([np.stack([lang @ w + b for w, b in film]) for film in self.films])

    def __call__(self, codes: np.ndarray, film: np.ndarray) -> np.ndarray:
        B = codes.shape[0]
        h = self.table.take(codes @ _TRIPLE, axis=0).reshape(B, VIEW, VIEW, -1)  # (B, 7, 7, C)
        cells = (1, 2, 3)  # GroupNorm(1, C): statistics over the cells and channels of each row
        for conv, norm in self.stem:
            h = np.maximum(_normalize(conv(h), norm, cells), 0.0)
        for k, (conv1, norm1, conv2, norm2) in enumerate(self.blocks):
            g = conv2(np.maximum(_normalize(conv1(h), norm1, cells), 0.0))
            g *= film[:, k, 0, None, None, :]
            g += film[:, k, 1, None, None, :]
            h = h + np.maximum(_normalize(g, norm2, cells), 0.0)
        return h.max(axis=(1, 2))


class NumpyPolicy:
    """A snapshot of a policy's weights that takes acting steps in numpy (see the module docstring).
    `missions` maps mission strings to the encoder's (B, lang_dim) tensor (collection.MissionCache)."""

    def __init__(self, policy: nn.Module, missions: Callable[[list[str]], torch.Tensor], obs_encoding: str):
        self.encode_missions, self.obs_encoding = missions, obs_encoding
        self.image_dim = obs_dim(obs_encoding) - EXTRA
        encoder = policy.input_projection
        self.bilinear = isinstance(encoder, BilinearInput)
        self.trunk = _FiLMTrunk(encoder) if isinstance(encoder, FiLMTrunk) else None
        if self.trunk is not None:
            self.first = _SplitAffine(*_linear_t(encoder.proj), encoder.channels)
        elif self.bilinear:
            self.cell_w, self.cell_w_b = _linear_t(encoder.cell_weights)
            self.cell_b, self.cell_b_b = _linear_t(encoder.cell_bias)
            self.cell_dim = encoder.cell_dim
            self.first = _SplitAffine(*_linear_t(encoder.proj), ONEHOT_CELLS * self.cell_dim)
        elif isinstance(encoder, nn.Linear):
            self.first = _SplitAffine(*_linear_t(encoder), self.image_dim)
        if isinstance(policy, MixtureOfExpertsPolicy):
            self.reads_experts = policy.config.head_reads_experts  # the routed experts beside the output
            self.layers = [_MoELayer(layer, self.reads_experts) for layer in policy.layers]
            self.layer_sizes = list(policy.layer_memory_sizes)
            self.gru = None
        else:
            self.layers, self.layer_sizes, self.reads_experts = [], [], False
            self.gru = _GRUCell([policy.gru])
            if encoder is None:  # obs ⊕ mission feeds the GRU: its input gates are the first map
                self.first = _SplitAffine(self.gru.w_ih, self.gru.b_ih, self.image_dim)
        hidden = getattr(policy, "head_hidden", None)  # --head_hidden_size: Linear -> Tanh first
        self.head_hidden = None if hidden is None else _linear_t(hidden)
        self.head_w, self.head_b = _linear_t(policy.head)
        self._index: dict[str, int] = {}  # mission -> row of the per-mission arrays
        self._terms: list[np.ndarray] = []
        self._tables: list[np.ndarray] = []
        self._films: list[np.ndarray] = []
        self._stacked: tuple[np.ndarray, np.ndarray | None, np.ndarray | None] | None = None

    @classmethod
    def of(
        cls, policy: nn.Module, missions: Callable[[list[str]], torch.Tensor], obs_encoding: str
    ) -> NumpyPolicy | None:
        """The numpy actor of `policy`, or None where it does not cover the policy (training mode,
        knockout or intervention, an encoder or class it does not know): act with torch then."""
        if policy.training or obs_encoding not in OBS_ENCODINGS:
            return None
        encoder = getattr(policy, "input_projection", "missing")
        if type(policy) is MixtureOfExpertsPolicy:
            if type(encoder) not in (nn.Linear, BilinearInput, FiLMTrunk):
                return None
            if any(layer.intervened for layer in policy.layers):  # knockouts and interventions
                return None
        elif type(policy) is GRUPolicy:
            if not (encoder is None or type(encoder) in (BilinearInput, FiLMTrunk)):
                return None
        else:
            return None
        if type(encoder) in (BilinearInput, FiLMTrunk) and (
            obs_encoding != "onehot" or encoder.extra != EXTRA
        ):
            return None
        return cls(policy, missions, obs_encoding)

    def _mission_rows(self, missions: list[str]) -> np.ndarray:
        """Row of each mission in the per-mission arrays, computing them for missions not seen yet."""
        new = [m for m in dict.fromkeys(missions) if m not in self._index]
        if new:
            with torch.no_grad():
                langs = self.encode_missions(new).numpy()
            for m, lang in zip(new, langs):
                lang = lang.astype(np.float32)
                self._index[m] = len(self._index)
                self._terms.append(self.first.mission(lang))
                if self.bilinear:  # the detector's response to each (object, colour, state) triple
                    w = (lang @ self.cell_w + self.cell_w_b).reshape(ONEHOT_CELL_DIM, self.cell_dim)
                    obj, col, state = _TRIPLE_CODES
                    table = w[obj] + w[_OFFSETS[1] + col] + w[_OFFSETS[2] + state]
                    table += lang @ self.cell_b + self.cell_b_b
                    self._tables.append(table)
                if self.trunk is not None:
                    self._films.append(self.trunk.mission(lang))
            self._stacked = (
                np.stack(self._terms),
                np.concatenate(self._tables) if self.bilinear else None,
                np.stack(self._films) if self.trunk is not None else None,
            )
        return np.fromiter((self._index[m] for m in missions), np.intp, len(missions))

    def _image(self, image: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """(B, 7, 7, 3) uint8 -> what the first map's image part reads (B, I)."""
        B = image.shape[0]
        if self.obs_encoding == "raw":
            return image.transpose(0, 3, 1, 2).reshape(B, self.image_dim).astype(np.float32)
        codes = np.minimum(image.reshape(B, ONEHOT_CELLS, 3), _CODE_MAX)
        if self.trunk is not None:
            return self.trunk(codes, self._stacked[2].take(rows, axis=0))
        if self.bilinear:
            triple = codes @ _TRIPLE  # (B, 49)
            triple += (rows * TRIPLES)[:, None]
            h = self._stacked[1].take(triple, axis=0)  # (B, 49, cell_dim)
            np.maximum(h, 0.0, out=h)
            return h.reshape(B, -1)
        onehot = np.zeros((B, ONEHOT_CELLS, ONEHOT_CELL_DIM), np.float32)
        np.put_along_axis(onehot, codes.astype(np.intp) + _OFFSETS, 1.0, axis=2)
        return onehot.reshape(B, -1)

    def step(self, batch: Any, memory: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        """batch: collection.ObsBatch of B envs, memory (B, M) float32 -> logits (B, A), memory
        after the step (B, M), router weights [(B, E)] per layer (empty for a GRU policy)."""
        rows = self._mission_rows(batch.missions)
        h = self.first(
            self._image(batch.image, rows),
            batch.direction,
            batch.carrying.astype(np.float32),
            self._stacked[0].take(rows, axis=0),
        )
        if self.gru is not None:
            if self.bilinear or self.trunk is not None:  # the encoder's output feeds the GRU's input gates
                h = h @ self.gru.w_ih + self.gru.b_ih
            h = self.gru(h, memory)
            return h @ self.head_w + self.head_b, h, []
        weights, states, reads, start = [], [], [], 0
        for layer, size in zip(self.layers, self.layer_sizes):
            h, w, state, read = layer(h, memory[:, start : start + size])
            start += size
            weights.append(w)
            states.append(state)
            reads.append(read)
        if self.reads_experts:  # --head_reads_experts: the routed experts' states beside the output
            h = np.concatenate([h, *reads], axis=1)
        if self.head_hidden is not None:
            h = np.tanh(h @ self.head_hidden[0] + self.head_hidden[1])
        return h @ self.head_w + self.head_b, np.concatenate(states, axis=1), weights
