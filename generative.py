"""A generative model of agent-environment rollouts whose decoder is a learned, differentiable
simulator with the REAL frozen agent inside the loop (after the procgen work on "understanding
RL agents using generative visualisation and differentiable environment simulation", brought to
MoP policies on BabyAI's symbolic views).

    encoder:   GRU over num_init_steps + num_sim_steps recorded steps (view, direction, carrying,
               action) ⊕ mission embedding -> q(z) = N(mu, sigma)
    context:   GRU over the first num_init_steps real views; the agent reads them too (exact
               one-hot) from its recorded memory, so its memory at the first simulated step is real
    simulator: GRUCell(previous view, agent's previous action probabilities, z, mission) -> per
               cell categorical logits over object (11) / colour (6) / state (3), direction (4),
               carrying (2), done (1). The agent reads the softmax of those logits as its one-hot
               input (a soft one-hot; "raw" agents read the expected codes), updates its memory and
               routes, and its action probabilities feed the next simulated step.
Everything is differentiable from z to the agent's routing and logits, so z can be optimised
(generative_analysis.py --analysis maximise). The agent's weights are frozen and never stored
here: a model names its agent checkpoint and the hash of its weights (record.weights_hash).

    model = GenerativeModel(GenerativeConfig(), obs_encoding="onehot", lang_dim=8, num_actions=7)
    out = model.simulate(agent, init, z)        # out.obs_logits, out.agent_logits, out.memory, ...
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from babyai_env import CHANNEL_SIZES
from mixture_of_experts import ONEHOT_CELLS, compute_lpc

CELL_DIM = sum(CHANNEL_SIZES)  # 20 codes per cell
VIEW_DIM = ONEHOT_CELLS * CELL_DIM  # 980
FEATURE_DIM = VIEW_DIM + 4 + 2  # view ⊕ direction ⊕ carrying (two classes)
CHANNEL_NAMES = ("object", "colour", "state")


@dataclass(frozen=True)
class GenerativeConfig:
    num_init_steps: int = 3
    num_sim_steps: int = 16
    z_dim: int = 32
    hidden_size: int = 256
    obs_temperature: float = 1.0  # softmax temperature of the views the agent reads

    def __post_init__(self) -> None:
        for name in ("num_init_steps", "num_sim_steps", "z_dim", "hidden_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"--{name} must be a whole number >= 1, got {value!r}")
        if not self.obs_temperature > 0:
            raise ValueError(f"--obs_temperature must be > 0, got {self.obs_temperature!r}")

    @property
    def window(self) -> int:
        return self.num_init_steps + self.num_sim_steps

    def to_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------- observations


class ObsProbs(NamedTuple):
    """A (soft or exact) observation: probabilities per categorical group."""

    cells: list[torch.Tensor]  # per channel (..., 7, 7, n_c)
    direction: torch.Tensor  # (..., 4)
    carrying: torch.Tensor  # (..., 2): [not carrying, carrying]

    def features(self) -> torch.Tensor:
        """(..., FEATURE_DIM): the cells in encode_obs's one-hot order, then direction, carrying."""
        lead = self.direction.shape[:-1]
        view = torch.cat(self.cells, dim=-1).reshape(*lead, VIEW_DIM)  # (..., 7, 7, 20) -> (..., 980)
        return torch.cat([view, self.direction, self.carrying], dim=-1)

    def argmax(self) -> ObsProbs:
        """The hard (one-hot) observation of the most likely codes."""
        return ObsProbs(
            [F.one_hot(c.argmax(-1), c.shape[-1]).to(c.dtype) for c in self.cells],
            F.one_hot(self.direction.argmax(-1), 4).to(self.direction.dtype),
            F.one_hot(self.carrying.argmax(-1), 2).to(self.carrying.dtype),
        )

    def codes(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(image (..., 7, 7, 3) long, direction (...), carrying (...)) of the argmax."""
        image = torch.stack([c.argmax(-1) for c in self.cells], dim=-1)
        return image, self.direction.argmax(-1), self.carrying.argmax(-1)


def exact_obs(image: torch.Tensor, direction: torch.Tensor, carrying: torch.Tensor) -> ObsProbs:
    """The exact one-hot ObsProbs of recorded codes: image (..., 7, 7, 3), direction, carrying."""
    image = torch.as_tensor(image).long()
    cells = [F.one_hot(image[..., c].clamp(0, n - 1), n).float() for c, n in enumerate(CHANNEL_SIZES)]
    return ObsProbs(
        cells,
        F.one_hot(torch.as_tensor(direction).long(), 4).float(),
        F.one_hot(torch.as_tensor(carrying).long().clamp(0, 1), 2).float(),
    )


def agent_input(obs: ObsProbs, encoding: str) -> torch.Tensor:
    """What the agent reads, differentiable in the probabilities. For exact one-hots this equals
    babyai_env.encode_obs of the codes (a test checks it): 'onehot' reads the probabilities as its
    one-hot, 'raw' reads the expected integer code of each channel."""
    carry = obs.carrying[..., 1:]
    if encoding == "onehot":
        view = torch.cat(obs.cells, dim=-1).flatten(-3)  # (..., 7, 7, 20) -> (..., 980)
    elif encoding == "raw":
        codes = [(c * torch.arange(c.shape[-1], dtype=c.dtype)).sum(-1) for c in obs.cells]
        view = torch.stack(codes, dim=-3).flatten(-3)  # (..., 3, 7, 7) -> (..., 147)
    else:
        raise ValueError(f"obs_encoding must be 'onehot' or 'raw', got {encoding!r}")
    return torch.cat([view, obs.direction, carry], dim=-1)


def split_logits(raw: torch.Tensor, temperature: float = 1.0) -> tuple[ObsProbs, ObsProbs, torch.Tensor]:
    """Decoder output (..., VIEW_DIM + 4 + 2 + 1) -> (logits, probabilities, done logit)."""
    lead = raw.shape[:-1]
    cells = raw[..., :VIEW_DIM].reshape(*lead, 7, 7, CELL_DIM)
    cell_logits = list(torch.split(cells, list(CHANNEL_SIZES), dim=-1))
    direction = raw[..., VIEW_DIM : VIEW_DIM + 4]
    carrying = raw[..., VIEW_DIM + 4 : VIEW_DIM + 6]
    logits = ObsProbs(cell_logits, direction, carrying)
    probs = ObsProbs(
        [torch.softmax(c / temperature, -1) for c in cell_logits],
        torch.softmax(direction / temperature, -1),
        torch.softmax(carrying / temperature, -1),
    )
    return logits, probs, raw[..., -1]


# ----------------------------------------------------------------------------- the agent in the loop


class AgentTrace(NamedTuple):
    logits: torch.Tensor  # (B, S, A)
    memory: torch.Tensor  # (B, S, M): memory after each step
    router_weights: list[torch.Tensor]  # per layer (B, S, E)


def run_agent(
    agent: nn.Module, encoding: str, observations: list[ObsProbs], lang: torch.Tensor, memory: torch.Tensor
) -> AgentTrace:
    """The agent over a sequence of (soft or exact) observations from `memory` (B, M), no resets
    (windows lie inside one episode); differentiable in the observations."""
    logits, memories, weights = [], [], []
    for obs in observations:
        out = agent.step(agent_input(obs, encoding), lang, memory)
        memory = out.memory
        logits.append(out.logits)
        memories.append(memory)
        weights.append(out.router_weights)
    layers = [torch.stack([w[k] for w in weights], 1) for k in range(len(weights[0]))] if weights else []
    return AgentTrace(torch.stack(logits, 1), torch.stack(memories, 1), layers)


# ----------------------------------------------------------------------------- the model


class SimOutput(NamedTuple):
    obs_logits: list[ObsProbs]  # per simulated step
    obs_probs: list[ObsProbs]
    done_logits: torch.Tensor  # (B, S)
    agent: AgentTrace  # the agent inside the simulator, per simulated step
    memory_start: torch.Tensor  # (B, M): the agent's memory before the first simulated step


class Init(NamedTuple):
    """The real context a rollout starts from: the first num_init_steps recorded steps."""

    image: torch.Tensor  # (B, n_init, 7, 7, 3)
    direction: torch.Tensor  # (B, n_init)
    carrying: torch.Tensor  # (B, n_init)
    memory: torch.Tensor  # (B, M): the agent's recorded memory before the first of them
    lang: torch.Tensor  # (B, L): the mission embedding (the agent's own encoder)


class GenerativeModel(nn.Module):
    def __init__(self, config: GenerativeConfig, obs_encoding: str, lang_dim: int, num_actions: int):
        super().__init__()
        self.config, self.obs_encoding, self.num_actions = config, obs_encoding, num_actions
        H, Z = config.hidden_size, config.z_dim
        step_in = FEATURE_DIM + num_actions
        self.encoder_in = nn.Linear(step_in, H)
        self.encoder_gru = nn.GRU(H, H, batch_first=True)
        self.to_posterior = nn.Linear(H + lang_dim, 2 * Z)
        self.context_in = nn.Linear(step_in, H)
        self.context_gru = nn.GRU(H, H, batch_first=True)
        self.to_h0 = nn.Linear(H + Z + lang_dim, H)
        self.cell = nn.GRUCell(FEATURE_DIM + num_actions + Z + lang_dim, H)
        self.head = nn.Sequential(
            nn.Linear(H + FEATURE_DIM, H), nn.ReLU(), nn.Linear(H, FEATURE_DIM + 1)
        )  # view, direction, carrying logits and the done logit

    def encode(
        self,
        image: torch.Tensor,
        direction: torch.Tensor,
        carrying: torch.Tensor,
        action: torch.Tensor,
        lang: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Recorded window (B, T, ...) -> posterior (mu, logvar), each (B, Z)."""
        x = torch.cat(
            [
                exact_obs(image, direction, carrying).features(),
                F.one_hot(action.long(), self.num_actions).float(),
            ],
            -1,
        )
        _, h = self.encoder_gru(torch.relu(self.encoder_in(x)))  # h (1, B, H)
        mu, logvar = self.to_posterior(torch.cat([h[0], lang], -1)).chunk(2, -1)
        return mu, logvar.clamp(-8, 8)

    def simulate(
        self,
        agent: nn.Module,
        init: Init,
        z: torch.Tensor,
        num_sim_steps: int | None = None,
        memory_edit: object = None,
    ) -> SimOutput:
        """Roll the simulator and the agent for num_sim_steps from the real init context.
        memory_edit(step, memory) -> memory, if given, changes the agent's memory before each
        simulated step (the directions analysis)."""
        S = num_sim_steps or self.config.num_sim_steps
        real = exact_obs(init.image, init.direction, init.carrying)
        n_init = init.image.shape[1]
        real_steps = [
            ObsProbs([c[:, t] for c in real.cells], real.direction[:, t], real.carrying[:, t])
            for t in range(n_init)
        ]
        trace = run_agent(agent, self.obs_encoding, real_steps, init.lang, init.memory)
        memory = trace.memory[:, -1]
        prev_act = torch.softmax(trace.logits, -1)  # (B, n_init, A): the agent's own choices
        x = torch.cat([real.features(), prev_act], -1)
        _, h_ctx = self.context_gru(torch.relu(self.context_in(x)))
        h = torch.tanh(self.to_h0(torch.cat([h_ctx[0], z, init.lang], -1)))
        prev_obs, act = real.features()[:, -1], prev_act[:, -1]
        memory_start = memory
        obs_logits, obs_probs, done_logits, logits, memories, weights = [], [], [], [], [], []
        for s in range(S):
            h = self.cell(torch.cat([prev_obs, act, z, init.lang], -1), h)
            lo, pr, done = split_logits(self.head(torch.cat([h, prev_obs], -1)), self.config.obs_temperature)
            if memory_edit is not None:
                memory = memory_edit(s, memory)
            out = agent.step(agent_input(pr, self.obs_encoding), init.lang, memory)
            memory = out.memory
            obs_logits.append(lo)
            obs_probs.append(pr)
            done_logits.append(done)
            logits.append(out.logits)
            memories.append(memory)
            weights.append(out.router_weights)
            prev_obs, act = pr.features(), torch.softmax(out.logits, -1)
        layers = [torch.stack([w[k] for w in weights], 1) for k in range(len(weights[0]))]
        agent_trace = AgentTrace(torch.stack(logits, 1), torch.stack(memories, 1), layers)
        return SimOutput(obs_logits, obs_probs, torch.stack(done_logits, 1), agent_trace, memory_start)


# ----------------------------------------------------------------------------- losses and metrics


def batch_init(batch: dict[str, torch.Tensor], num_init_steps: int, lang_table: torch.Tensor) -> Init:
    """The Init of a batch of recorded windows (column -> (B, T, ...) tensors)."""
    n_init = num_init_steps
    return Init(
        batch["image"][:, :n_init],
        batch["direction"][:, :n_init],
        batch["carrying"][:, :n_init],
        batch["memory"][:, 0],
        lang_table[batch["mission_index"][:, 0].long()],
    )


def kl_to_prior(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(-1).mean()


def losses(
    model: GenerativeModel,
    agent: nn.Module,
    batch: dict[str, torch.Tensor],
    lang_table: torch.Tensor,
    sample: bool = True,
) -> tuple[dict[str, torch.Tensor], SimOutput]:
    """Unscaled losses of a batch of recorded windows: obs (CE per cell and channel, direction,
    carrying), hx (agent memory MSE vs recorded), act_log_probs (KL recorded || simulated), done
    (BCE) and kl (posterior || N(0, I))."""
    n_init, S = model.config.num_init_steps, model.config.num_sim_steps
    lang = lang_table[batch["mission_index"][:, 0].long()]
    mu, logvar = model.encode(batch["image"], batch["direction"], batch["carrying"], batch["action"], lang)
    z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if sample else mu
    sim = model.simulate(agent, batch_init(batch, n_init, lang_table), z)
    image = batch["image"][:, n_init:].long()
    obs = 0.0
    for c, n in enumerate(CHANNEL_SIZES):
        lo = torch.stack([o.cells[c] for o in sim.obs_logits], 1)  # (B, S, 7, 7, n)
        obs = obs + F.cross_entropy(lo.reshape(-1, n), image[..., c].reshape(-1))
    direction = torch.stack([o.direction for o in sim.obs_logits], 1)
    carrying = torch.stack([o.carrying for o in sim.obs_logits], 1)
    obs = obs + F.cross_entropy(direction.reshape(-1, 4), batch["direction"][:, n_init:].reshape(-1).long())
    obs = obs + F.cross_entropy(carrying.reshape(-1, 2), batch["carrying"][:, n_init:].reshape(-1).long())
    # memory after simulated step s is the recorded memory before step n_init + s + 1
    hx = (
        F.mse_loss(sim.agent.memory[:, : S - 1], batch["memory"][:, n_init + 1 :])
        if S > 1
        else torch.zeros(())
    )
    recorded = torch.log_softmax(batch["logits"][:, n_init:], -1)
    simulated = torch.log_softmax(sim.agent.logits, -1)
    act = (recorded.exp() * (recorded - simulated)).sum(-1).mean()
    done = F.binary_cross_entropy_with_logits(sim.done_logits, batch["done"][:, n_init:].float())
    return {"obs": obs, "hx": hx, "act_log_probs": act, "done": done, "kl": kl_to_prior(mu, logvar)}, sim


@torch.no_grad()
def reconstruction_metrics(
    sim: SimOutput, batch: dict[str, torch.Tensor], num_init_steps: int
) -> dict[str, float]:
    """Per-channel accuracy of the decoded views (argmax vs recorded), agent-memory error and
    agreement of the simulated agent's greedy action with the recorded one."""
    n_init = num_init_steps
    image = batch["image"][:, n_init:].long()
    out = {}
    for c, name in enumerate(CHANNEL_NAMES):
        pred = torch.stack([o.cells[c].argmax(-1) for o in sim.obs_probs], 1)
        out[f"acc/{name}"] = float((pred == image[..., c]).float().mean())
    cells = torch.stack([torch.stack([c.argmax(-1) for c in o.cells], -1) for o in sim.obs_probs], 1)
    out["acc/cell"] = float((cells == image).all(-1).float().mean())
    out["acc/view"] = float((cells == image).all(-1).flatten(2).all(-1).float().mean())
    out["acc/direction"] = float(
        (torch.stack([o.direction.argmax(-1) for o in sim.obs_probs], 1) == batch["direction"][:, n_init:])
        .float()
        .mean()
    )
    out["acc/carrying"] = float(
        (
            torch.stack([o.carrying.argmax(-1) for o in sim.obs_probs], 1)
            == batch["carrying"][:, n_init:].long()
        )
        .float()
        .mean()
    )
    out["acc/done"] = float(((sim.done_logits > 0) == batch["done"][:, n_init:].bool()).float().mean())
    S = sim.agent.memory.shape[1]
    if S > 1:
        target = batch["memory"][:, n_init + 1 :]
        err = (sim.agent.memory[:, : S - 1] - target).pow(2).mean()
        out["memory/mse"] = float(err)
        out["memory/relative_mse"] = float(err / target.var().clamp_min(1e-12))
    out["acc/action"] = float(
        (sim.agent.logits.argmax(-1) == batch["logits"][:, n_init:].argmax(-1)).float().mean()
    )
    return out


# ----------------------------------------------------------------------------- analysis targets


def parse_target(spec: str, expert_sizes: list[list[int]], num_actions: int) -> tuple[str, int, int]:
    """'layer_<k>:expert_<j>' | 'lpc' | 'action:<a>' -> (kind, a, b); ValueError naming it."""
    text = spec.strip()
    if text == "lpc":
        if not expert_sizes:
            raise ValueError("target 'lpc' needs a MoP agent (the GRU baseline has no router)")
        return "lpc", 0, 0
    if text.startswith("action:"):
        try:
            a = int(text.removeprefix("action:"))
        except ValueError:
            a = -1
        if not 0 <= a < num_actions:
            raise ValueError(f"target {spec!r}: actions are 0..{num_actions - 1}")
        return "action", a, 0
    if text.startswith("layer_") and ":expert_" in text:
        if not expert_sizes:
            raise ValueError(f"target {spec!r} is a routing target; the GRU baseline agent has no router")
        try:
            k, j = int(text[6:].split(":expert_")[0]), int(text.split(":expert_")[1])
        except ValueError:
            k = j = -1
        if not (0 <= k < len(expert_sizes) and 0 <= j < len(expert_sizes[k])):
            raise ValueError(
                f"target {spec!r} is not an expert of this agent (expert sizes {expert_sizes}; 0-based)"
            )
        return "router", k, j
    raise ValueError(f"target {spec!r}: use 'layer_<k>:expert_<j>', 'lpc' or 'action:<a>'")


def target_value(
    trace: AgentTrace, target: tuple[str, int, int], expert_sizes: list[list[int]]
) -> torch.Tensor:
    """The target per rollout (B,), averaged over the simulated steps."""
    kind, a, b = target
    if kind == "router":
        return trace.router_weights[a][..., b].mean(-1)
    if kind == "lpc":
        return compute_lpc(trace.router_weights, expert_sizes).mean(-1)
    return torch.softmax(trace.logits, -1)[..., a].mean(-1)
