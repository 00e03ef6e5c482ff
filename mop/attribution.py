"""Attribution through time: integrated gradients through a recurrent policy's memory.

Which past observation made the router (or the action head) choose what it chose at step t? For a
recorded episode with encoded observations x_0..x_T, a step t, a window k and a scalar target y_t
(one layer's routing weight for one expert, or one action logit), integrated gradients
(Sundararajan et al. 2017) attribute y_t to every number of the observations of steps t-k..t:

    IG_i = (x_i - b_i) * ∫_0^1 ∂y_t(b + α(x - b)) / ∂x_i dα,  over steps t-k..t at once,

with the memory carried from the episode start: steps 0..t-k-1 keep their recorded observations
(their memory at t-k is a constant of the path), the mission embedding is held fixed, and the
path runs through the recurrence (every router and expert GRU). The integral is a trapezoid rule
on `ig_steps` intervals, the points of the path as one batch (in chunks of bounded size).
Completeness (Σ IG = y(x) - y(b)) is checked on every example and reported.

Baselines (for the steps t-k..t only): "zero", the all-zero encoded observation (no cell codes,
no direction, not carrying), or "mean", the mean encoded observation over the episode's steps.

The attribution vector of a step is then summed per grid cell and image channel (object, colour,
state) of the 7x7 view, plus two non-spatial inputs (direction, carrying); the per-step sum is the
time profile. Sanity checks the field expects live here too: a hand-built toy policy whose router
at t reads one cell k steps back (`delay_toy_policy`), and model-parameter randomisation (Adebayo
et al. 2018: `randomized_copy`, compared by `map_rank_correlation`).

    result = integrated_gradients(policy, obs, lang, t=12, window=8, target=parse_target("action", policy))
    cells, extras = split_by_cell(result.attributions, "onehot")   # (k+1, 7, 7, 3), (k+1, 2)
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr

from mixture_of_experts import MixtureOfExpertsPolicy, MoPConfig
from mop.babyai_env import CHANNEL_SIZES, SafeBot, make_env, quiet_reset
from mop.checks import ConfigError
from mop.cli_specs import check_step_window

VIEW = 7
CHANNELS = ("object", "color", "state")
EXTRAS = ("direction", "carrying")
BASELINES = ("zero", "mean")
COMPLETENESS_TOLERANCE = 0.01  # |Σ IG - Δy| / |Δy| the issue requires
PATH_NUMBERS = 2**23  # inputs of one batched pass along the path (~32 MB of floats, a few 100 MB of graph)


class AttributionError(ValueError):
    """A bad target, window, step or baseline; the message names the flag."""


# ----------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class Target:
    """What is attributed at step t: kind "router" (layer, expert) or "action" (index; None = the
    action the agent took at t)."""

    kind: str
    layer: int | None = None
    index: int | None = None

    @property
    def label(self) -> str:
        if self.kind == "router":
            return f"router weight, layer {self.layer}, expert {self.index}"
        return "logit of the action taken" if self.index is None else f"logit of action {self.index}"

    def value(self, logits: torch.Tensor, weights: list[torch.Tensor], action: int) -> torch.Tensor:
        """The target at the last step of a (T, B, ...) pass: (B,)."""
        if self.kind == "router":
            return weights[self.layer][-1, :, self.index]
        return logits[-1, :, action if self.index is None else self.index]


def parse_target(spec: str, policy: torch.nn.Module) -> Target:
    """'router:layer<k>:expert<j>', 'action' or 'action:<a>' -> Target; AttributionError naming
    --target for a spelling, layer, expert or action the policy lacks."""
    spec = str(spec).strip()
    sizes = getattr(policy, "expert_sizes", ())
    if m := re.fullmatch(r"router:layer(\d+):expert(\d+)", spec):
        layer, expert = int(m.group(1)), int(m.group(2))
        if layer >= len(sizes):
            have = f"layers 0..{len(sizes) - 1}" if sizes else "no routers (a GRU baseline)"
            raise AttributionError(f"--target {spec}: the checkpoint has {have}")
        if expert >= len(sizes[layer]):
            raise AttributionError(f"--target {spec}: layer {layer} has experts 0..{len(sizes[layer]) - 1}")
        return Target("router", layer, expert)
    if spec == "action":
        return Target("action")
    if m := re.fullmatch(r"action:(\d+)", spec):
        actions = policy.head.out_features
        if int(m.group(1)) >= actions:
            raise AttributionError(f"--target {spec}: the policy has actions 0..{actions - 1}")
        return Target("action", None, int(m.group(1)))
    raise AttributionError(f"--target {spec!r}: use router:layer<k>:expert<j>, action or action:<a>")


def check_window(step: int, window: int, length: int | None = None) -> None:
    """AttributionError naming the flag: a negative step or window, a window reaching before the
    episode start, a step past its end (length: the episode's steps, when known). The rule is
    mop.cli_specs.check_step_window's (attribution.py checks its flags with it before it imports
    torch)."""
    try:
        check_step_window(step, window, length)
    except ConfigError as e:
        raise AttributionError(str(e)) from None


# ----------------------------------------------------------------------------- integrated gradients


@dataclass
class Attribution:
    """One example: attributions (k+1, D) over steps t-k..t (row 0 is t-k), the target at the
    observation and at the baseline, and completeness."""

    attributions: np.ndarray
    step: int
    window: int
    output: float  # y(x)
    baseline_output: float  # y(b)
    ig_steps: int
    difference: np.ndarray | None = None  # x - b (k+1, D)

    @property
    def total(self) -> float:
        return float(self.attributions.sum())

    @property
    def delta(self) -> float:
        return self.output - self.baseline_output

    @property
    def completeness_error(self) -> float:
        """|Σ IG - (y(x) - y(b))| relative to |y(x) - y(b)| (absolute when that is ~0)."""
        gap = abs(self.total - self.delta)
        return gap / abs(self.delta) if abs(self.delta) > 1e-6 else gap

    @property
    def profile(self) -> np.ndarray:
        """(k+1,) signed attribution per step, t-k first."""
        return self.attributions.sum(-1)


def baseline_vector(obs: torch.Tensor, kind: str) -> torch.Tensor:
    """The baseline of one encoded observation (D,) for an episode's observations obs (T, D)."""
    if kind == "zero":
        return torch.zeros(obs.shape[-1], dtype=obs.dtype)
    if kind == "mean":
        return obs.mean(0)
    raise AttributionError(f"--baseline {kind!r}: use one of {', '.join(BASELINES)}")


def _lang_rows(lang: torch.Tensor, T: int, B: int) -> torch.Tensor:
    return lang.reshape(1, 1, -1).expand(T, B, -1)


def integrated_gradients(
    policy: torch.nn.Module,
    obs: torch.Tensor,
    lang: torch.Tensor,
    step: int,
    window: int,
    target: Target,
    action: int = 0,
    baseline: torch.Tensor | None = None,
    ig_steps: int = 64,
    max_ig_steps: int = 1024,
) -> Attribution:
    """IG of `target` at `step` w.r.t. the observations of steps step-window..step of one episode.

    obs (T, D): the episode's encoded observations from its start (T > step); lang (L,): its
    mission embedding, held fixed; action: the action taken at `step` (for Target('action'));
    baseline (D,) or (window+1, D), default zeros; ig_steps: trapezoid intervals along the path,
    doubled while completeness misses COMPLETENESS_TOLERANCE, up to max_ig_steps (ReLU and max
    kinks of the input encoders need more points than a smooth GRU path: measured 1.2% at 64 on
    a random bilinear policy, 0.08% at 256). The result says how many it used."""
    check_window(step, window, len(obs))
    if ig_steps < 1:
        raise AttributionError(f"--ig_steps {ig_steps}: must be >= 1")
    steps = ig_steps
    while True:
        result = _integrated_gradients(policy, obs, lang, step, window, target, action, baseline, steps)
        if result.completeness_error <= COMPLETENESS_TOLERANCE or steps * 2 > max(max_ig_steps, ig_steps):
            return result
        steps *= 2


def _integrated_gradients(
    policy: torch.nn.Module,
    obs: torch.Tensor,
    lang: torch.Tensor,
    step: int,
    window: int,
    target: Target,
    action: int,
    baseline: torch.Tensor | None,
    ig_steps: int,
) -> Attribution:
    obs = obs.detach().float()
    lang = lang.detach().float()
    start = step - window
    x = obs[start : step + 1]  # (W, D)
    b = torch.zeros_like(x) if baseline is None else baseline.float().expand_as(x)
    with torch.enable_grad():  # the same (grad-mode) kernels as the path below, then detached
        memory = policy.init_memory(1)
        if start > 0:
            prefix = obs[:start].unsqueeze(1)  # (start, 1, D)
            out = policy.forward_sequence(
                prefix, _lang_rows(lang, start, 1), memory, torch.zeros(start, 1, dtype=torch.bool)
            )
            memory = out.memory
        memory = memory.detach()
    n = ig_steps + 1
    alphas = torch.linspace(0.0, 1.0, n)
    weights = torch.full((n,), 1.0 / ig_steps)
    weights[0] = weights[-1] = 0.5 / ig_steps  # trapezoid rule
    mean_grad = torch.zeros_like(x)  # (W, D)
    chunk = max(1, PATH_NUMBERS // (len(x) * x.shape[-1]))  # path points per pass: bounded memory
    ys = []
    for lo in range(0, n, chunk):
        a = alphas[lo : lo + chunk]
        with torch.enable_grad():
            path = (b.unsqueeze(1) + a.view(1, -1, 1) * (x - b).unsqueeze(1)).requires_grad_(
                True
            )  # (W, c, D)
            out = policy.forward_sequence(
                path,
                _lang_rows(lang, len(x), len(a)),
                memory.expand(len(a), -1),
                torch.zeros(len(x), len(a), dtype=torch.bool),
            )
            y = target.value(out.logits, out.router_weights, action)  # (c,)
            (grads,) = torch.autograd.grad(y.sum(), path)
        mean_grad += (grads * weights[lo : lo + chunk].view(1, -1, 1)).sum(1)
        ys.append(y.detach())
    y = torch.cat(ys)
    attributions = ((x - b) * mean_grad).numpy().astype(np.float64)
    return Attribution(attributions, step, window, float(y[-1]), float(y[0]), ig_steps, (x - b).numpy())


# ----------------------------------------------------------------------------- cells and channels


def split_by_cell(attributions: np.ndarray, encoding: str) -> tuple[np.ndarray, np.ndarray]:
    """(W, D) per-number attributions -> per cell and channel (W, 7, 7, 3), indexed [x, y] as
    minigrid's view image is (the agent at x = 3, y = 6, facing up), and the non-spatial inputs
    (W, 2): direction (its one-hot summed), carrying. The two together sum to the total."""
    W = attributions.shape[0]
    if encoding == "onehot":
        width = sum(CHANNEL_SIZES)
        cells_flat = attributions[:, : VIEW * VIEW * width].reshape(W, VIEW, VIEW, width)
        edges = np.cumsum([0, *CHANNEL_SIZES])
        cells = np.stack([cells_flat[..., a:b].sum(-1) for a, b in zip(edges[:-1], edges[1:])], -1)
        rest = attributions[:, VIEW * VIEW * width :]
    elif encoding == "raw":  # channel-first codes (3, 7, 7) then direction, carrying
        cells = attributions[:, : 3 * VIEW * VIEW].reshape(W, 3, VIEW, VIEW).transpose(0, 2, 3, 1)
        rest = attributions[:, 3 * VIEW * VIEW :]
    else:
        raise AttributionError(f"obs_encoding {encoding!r} has no cell layout")
    extras = np.stack([rest[:, :4].sum(-1), rest[:, 4]], -1)
    return cells, extras


def attribution_table(result: Attribution, encoding: str) -> list[dict[str, Any]]:
    """Tidy rows: step_offset (-k..0), t, x, y (None for direction/carrying), channel, value."""
    cells, extras = split_by_cell(result.attributions, encoding)
    rows = []
    for w in range(cells.shape[0]):
        offset, t = w - result.window, result.step - result.window + w
        for cx in range(VIEW):
            for cy in range(VIEW):
                for c, name in enumerate(CHANNELS):
                    rows.append(
                        dict(step_offset=offset, t=t, x=cx, y=cy, channel=name, value=cells[w, cx, cy, c])
                    )
        for e, name in enumerate(EXTRAS):
            rows.append(dict(step_offset=offset, t=t, x=None, y=None, channel=name, value=extras[w, e]))
    return rows


def abs_share_profile(result: Attribution) -> np.ndarray:
    """(k+1,) share of the example's total |attribution| on each step (sums to 1; zeros if none)."""
    mass = np.abs(result.attributions).sum(-1)
    total = mass.sum()
    return mass / total if total > 0 else mass


def top_steps(result: Attribution, count: int) -> list[int]:
    """Row indices (0 = t-k) of the `count` steps with the most |attribution|, most first."""
    mass = np.abs(result.attributions).sum(-1)
    return [int(i) for i in np.argsort(-mass, kind="stable")[:count]]


# ----------------------------------------------------------------------------- sanity checks


def randomized_copy(policy: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Model-parameter randomisation (Adebayo et al. 2018, full, not cascading): a copy of the
    policy with every parameter re-drawn from its module's own initialisation, seeded (the
    global RNG is left as it was). An attribution that survives this does not explain the model."""
    twin = copy.deepcopy(policy)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in twin.modules():
            if module is not twin and hasattr(module, "reset_parameters"):
                module.reset_parameters()
    return twin.eval()


def map_rank_correlation(a: np.ndarray, b: np.ndarray, where: np.ndarray | None = None) -> float:
    """Spearman rank correlation of |a| and |b| over every entry (Adebayo et al.'s comparison of
    absolute maps), or over the entries `where` is true; NaN when either is constant there.

    Entries whose input equals the baseline are 0 in every map of any model (IG multiplies by
    x - b), so their shared ties raise the correlation for reasons that are the input's, not the
    model's: `input_differs` gives the mask that leaves them out."""
    x, y = np.abs(np.ravel(a)), np.abs(np.ravel(b))
    if where is not None:
        keep = np.ravel(where).astype(bool)
        x, y = x[keep], y[keep]
    if len(x) < 2:
        return float("nan")
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(spearmanr(x, y).statistic)


def input_differs(difference: np.ndarray, encoding: str) -> np.ndarray:
    """(W, 7, 7, 3) bool: cell channels where the window's input differs from the baseline, from
    x - b (W, D) (the entries an attribution can be non-zero on)."""
    cells, _ = split_by_cell(np.abs(difference), encoding)
    return cells > 0


def delay_toy_policy(
    delay: int, cell: tuple[int, int], channel: int = 0, distractor: tuple[int, int] = (0, 0)
) -> MixtureOfExpertsPolicy:
    """A one-layer, two-expert MoP policy on the raw encoding whose router at step t is a function
    of ONE input number, channel `channel` of view cell (x, y) at step t - delay, plus a weaker
    read of `distractor` (object channel) at step t itself: the ground truth of the attribution toy.

    Weights set by hand, everything else zero. The input Linear copies the two cells to units 0
    and 1 (scaled by 1/10: raw codes are up to 10). The router GRU's units 0..delay are a delay
    line: update gate shut (z ≈ 0, so h' = n), reset gate open, n_0 = tanh(input unit 0),
    n_i = tanh(2 h_{i-1}), so h_delay(t) carries the cell of step t - delay through `delay` tanh
    stages; its last unit is n = tanh(input unit 1), the distractor now. Router logits: expert 1
    minus expert 0 = 4 h_delay + 0.5 h_distractor. Experts, head and mission do not reach the router."""
    if delay < 0:
        raise ValueError(f"delay must be >= 0, got {delay}")
    H = delay + 2
    config = MoPConfig(
        obs_dim=152, lang_dim=2, intermediate_dim=4, expert_hidden_sizes=((0, 2),), router_hidden_size=H
    )
    policy = MixtureOfExpertsPolicy(config)
    with torch.no_grad():
        for p in policy.parameters():
            p.zero_()
        proj = policy.input_projection
        proj.weight[0, channel * VIEW * VIEW + cell[0] * VIEW + cell[1]] = 0.1
        proj.weight[1, distractor[0] * VIEW + distractor[1]] = 0.1
        gru = policy.layers[0].router.gru  # gates r, z, n, PyTorch's order
        gru.bias_ih_l0[:H] = 10.0  # r ≈ 1
        gru.bias_ih_l0[H : 2 * H] = -10.0  # z ≈ 0: h' = n
        gru.weight_ih_l0[2 * H, 0] = 1.0  # n_0 reads the cell
        for i in range(1, delay + 1):
            gru.weight_hh_l0[2 * H + i, i - 1] = 2.0  # n_i reads h_{i-1}: one step later
        gru.weight_ih_l0[2 * H + H - 1, 1] = 1.0  # the distractor unit reads the other cell
        out = policy.layers[0].router.out
        out.weight[1, delay] = 4.0
        out.weight[1, H - 1] = 0.5
    return policy.eval()


# ----------------------------------------------------------------------------- subgoals


def subgoal_name(subgoal: Any) -> str:
    """'GoNextTo', 'Open', 'Pickup', 'Drop', 'Explore', 'Close' from a bot subgoal object."""
    return type(subgoal).__name__.removesuffix("Subgoal")


def replay_subgoals(task_id: str, seed: int, actions: list[int], max_steps: int | None = None) -> list[str]:
    """The bot's current subgoal (top of its stack after it replans) at each step of an episode
    replayed from its layout seed and the agent's actions: the bot watches the agent's action at
    t-1 and replans at t, as the training collector's labelling bot does. 'none' after the bot
    fails or when its stack is empty."""
    env = make_env(task_id, max_steps)
    quiet_reset(env, seed)
    bot = SafeBot(env)
    labels, previous = [], None
    for action in actions:
        if bot.label(previous) is None or not bot.bot.stack:
            labels.append("none")
        else:
            labels.append(subgoal_name(bot.bot.stack[-1]))
        env.step(action)
        previous = action
    return labels
