"""A generative model of agent-environment rollouts whose decoder is a learned, differentiable
simulator with the REAL frozen agent inside the loop (after the procgen work on "understanding
RL agents using generative visualisation and differentiable environment simulation", brought to
MoP policies on BabyAI's symbolic views).

    encoder:   GRU over num_init_steps + num_sim_steps recorded steps (view, direction, carrying,
               action) ⊕ mission embedding -> q(z) = N(mu, sigma)
    context:   GRU over the first num_init_steps real views; the agent reads them too (exact
               one-hot) from its recorded memory, so its memory at the first simulated step is real
    canvas:    an egocentric map (25x25 cells, agent at the centre facing up) of the last seen code
               probabilities of every cell. The real init views are written into it; before each
               simulated step it is moved by the agent's own greedy action, as recorded agents act
               (turn left, turn right, forward times the probability that the cell ahead is free:
               exact index maps, so a cell seen once stays where the world keeps it), and the
               decoded view is written back where it is visible. Most cells do not change between
               steps: the decoder only has to say what does (the cell ahead after pickup/drop/toggle,
               newly seen cells, occlusion)
    simulator: GRUCell(previous view, agent's action (one-hot), z, mission) -> state h; a small
               CNN over the 7x7 view reads, per cell, the canvas there, the previous view, a learned
               embedding of the cell and h/z/mission/action, and adds a residual to a copy of the
               canvas (and of the agent's own cell: what it carries) -> per cell categorical logits
               over object (11) / colour (6) / state (3); direction (the previous direction turned
               by the action, plus a residual), carrying, done. The agent reads the
               softmax of those logits as its one-hot input (a soft one-hot; "raw" agents read the
               expected codes), updates its memory and routes, and its greedy action drives the
               next simulated step.
Everything is differentiable from z through the decoded views to the agent's routing and logits
(not through the agent's discrete choice of action), so z can be optimised
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

from mixture_of_experts import ONEHOT_CELLS, compute_lpc
from mop.babyai_env import CHANNEL_SIZES

CELL_DIM = sum(CHANNEL_SIZES)  # 20 codes per cell
VIEW_DIM = ONEHOT_CELLS * CELL_DIM  # 980
FEATURE_DIM = VIEW_DIM + 4 + 2  # view ⊕ direction ⊕ carrying (two classes)
CHANNEL_NAMES = ("object", "colour", "state")
VIEW_SIZE = 7
AGENT_CELL = (3, 6)  # the agent's own cell in the view (x, y): it shows what the agent carries
FRONT_CELL = (3, 5)  # the cell ahead
CANVAS_SIZE = 25  # an egocentric map: a 7x7 view after any turn, and a two-room level from anywhere
CANVAS_DIM = CELL_DIM + 1  # code probabilities of the last sighting ⊕ "seen" weight
MOTIONS = ("forward", "left", "right")  # minigrid Actions.forward, .left, .right move the view
MOTION_ACTIONS = (2, 0, 1)
_FREE_OBJECTS = (1, 3, 8, 9)  # empty, floor, goal, lava: forward moves onto them (and open doors)
_WALL, _DOOR, _DOOR_OPEN = 2, 4, 0
POSITION_DIM = 8
# headings in the frame of the first simulated step (up, right, down, left): minigrid direction + 1
# is a right turn
_HEADINGS = torch.tensor([[0, -1], [1, 0], [0, 1], [-1, 0]])


@dataclass(frozen=True)
class GenerativeConfig:
    num_init_steps: int = 3
    num_sim_steps: int = 16
    z_dim: int = 32  # the global latent
    hidden_size: int = 256
    obs_temperature: float = 1.0  # softmax temperature of the views the agent reads
    decoder_channels: int = 32  # width of the per-cell CNN of the view decoder
    map_channels: int = 4  # the spatial latent: channels per canvas cell (0: none)

    def __post_init__(self) -> None:
        for name in ("num_init_steps", "num_sim_steps", "z_dim", "hidden_size", "decoder_channels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"--{name} must be a whole number >= 1, got {value!r}")
        if (
            isinstance(self.map_channels, bool)
            or not isinstance(self.map_channels, int)
            or self.map_channels < 0
        ):
            raise ValueError(f"--map_channels must be a whole number >= 0, got {self.map_channels!r}")
        if not self.obs_temperature > 0:
            raise ValueError(f"--obs_temperature must be > 0, got {self.obs_temperature!r}")

    @property
    def latent_size(self) -> int:
        """Size of z: the global latent ⊕ the spatial one (map_channels per canvas cell)."""
        return self.z_dim + CANVAS_SIZE * CANVAS_SIZE * self.map_channels

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
        """The hard (one-hot) observation of the most likely codes (codes())."""
        image, direction, carrying = self.codes()
        return ObsProbs(
            [F.one_hot(image[..., k], c.shape[-1]).to(c.dtype) for k, c in enumerate(self.cells)],
            F.one_hot(direction, 4).to(self.direction.dtype),
            F.one_hot(carrying, 2).to(self.carrying.dtype),
        )

    def codes(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(image (..., 7, 7, 3) long, direction (...), carrying (...)): the most likely object of
        each cell, then, where it is not 'unseen', its most likely colour and state given that it
        is seen. minigrid writes every unseen cell (0, 0, 0), so a half-visible grey wall has
        colour 0 (red) with the unseen share: taken channel by channel it would decode as a red
        wall. Exact one-hot observations decode to their own codes."""
        objects = self.cells[0].argmax(-1)
        unseen = self.cells[0][..., :1]
        rest = []
        for c in self.cells[1:]:
            given_seen = torch.cat([c[..., :1] - unseen, c[..., 1:]], -1)  # unseen cells' code 0 removed
            rest.append(torch.where(objects == 0, torch.zeros_like(objects), given_seen.argmax(-1)))
        image = torch.stack([objects, *rest], dim=-1)
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
        codes = [(c * torch.arange(c.shape[-1], dtype=c.dtype, device=c.device)).sum(-1) for c in obs.cells]
        view = torch.stack(codes, dim=-3).flatten(-3)  # (..., 3, 7, 7) -> (..., 147)
    else:
        raise ValueError(f"obs_encoding must be 'onehot' or 'raw', got {encoding!r}")
    return torch.cat([view, obs.direction, carry], dim=-1)


# ----------------------------------------------------------------------------- the canvas


def view_to_canvas_index() -> torch.Tensor:
    """(49,) flat canvas index of each view cell, in the view's (x, y) order: the agent's cell
    (3, 6) is the canvas centre and the view looks up (towards smaller y)."""
    c = CANVAS_SIZE // 2
    x, y = torch.meshgrid(torch.arange(VIEW_SIZE), torch.arange(VIEW_SIZE), indexing="ij")
    return ((c + x - AGENT_CELL[0]) * CANVAS_SIZE + (c + y - AGENT_CELL[1])).reshape(-1)


def motion_source_index(motion: str) -> torch.Tensor:
    """(K*K,) for each canvas cell after `motion`, the flat cell it comes from (K*K: from outside,
    unseen). Forward moves the world one cell towards the agent; a left turn brings what was on the
    left ahead (minigrid's direction - 1), a right turn what was on the right."""
    K, c = CANVAS_SIZE, CANVAS_SIZE // 2
    X, Y = torch.meshgrid(torch.arange(K), torch.arange(K), indexing="ij")
    dx, dy = X - c, Y - c
    if motion == "forward":
        sx, sy = X, Y - 1
    elif motion == "left":
        sx, sy = c + dy, c - dx
    elif motion == "right":
        sx, sy = c - dy, c + dx
    else:
        raise ValueError(f"motion must be one of {MOTIONS}, got {motion!r}")
    inside = (sx >= 0) & (sx < K) & (sy >= 0) & (sy < K)
    return torch.where(inside, sx * K + sy, torch.full_like(sx, K * K)).reshape(-1)


def front_free(obs: ObsProbs) -> torch.Tensor:
    """(...) probability that the cell ahead can be walked onto (empty, floor, goal, lava or an
    open door), as in minigrid."""
    fx, fy = FRONT_CELL
    obj, state = obs.cells[0][..., fx, fy, :], obs.cells[2][..., fx, fy, :]
    return obj[..., list(_FREE_OBJECTS)].sum(-1) + obj[..., _DOOR] * state[..., _DOOR_OPEN]


def motion_probs(action_probs: torch.Tensor, obs: ObsProbs, free: torch.Tensor | None = None) -> torch.Tensor:
    """(B, 3) probabilities that the view moves forward / turns left / turns right after the agent
    acts on `obs`: forward counts only when the cell ahead is free (front_free(obs) unless given)."""
    free = front_free(obs) if free is None else free
    return torch.stack([action_probs[..., a] for a in MOTION_ACTIONS], -1) * torch.stack(
        [free, torch.ones_like(free), torch.ones_like(free)], -1
    )


@torch.no_grad()
def start_frame_canvas(image: torch.Tensor, action: torch.Tensor, start: int) -> torch.Tensor:
    """The canvas of a whole recorded window in the frame of step `start` (the agent at the centre
    facing up, as the simulator's canvas is when simulation begins): every real view (B, T, 7, 7, 3)
    written where its cells lie, the agent's pose followed through the recorded actions (B, T)
    and the real cells ahead (forward moves only onto free cells), later sightings over earlier.
    (B, K*K, CANVAS_DIM); what the posterior of the spatial latent reads."""
    B, T = action.shape
    K, c = CANVAS_SIZE, CANVAS_SIZE // 2
    image, action = image.long(), action.long()
    dev = image.device  # every tensor made here follows the batch (CPU or GPU)
    headings = _HEADINGS.to(dev)
    obs = exact_obs(image, torch.zeros(B, T, device=dev), torch.zeros(B, T, device=dev))
    free = front_free(obs) > 0.5  # (B, T)
    pos = [torch.zeros(B, 2, dtype=torch.long, device=dev)] * T
    rot = [torch.zeros(B, dtype=torch.long, device=dev)] * T
    pos[start] = torch.full((B, 2), c, dtype=torch.long, device=dev)
    for t in range(start + 1, T):
        a = action[:, t - 1]
        pos[t] = pos[t - 1] + ((a == 2) & free[:, t - 1])[:, None] * headings[rot[t - 1]]
        rot[t] = (rot[t - 1] + (a == 1).long() - (a == 0).long()) % 4
    for t in reversed(range(start)):
        a = action[:, t]
        rot[t] = (rot[t + 1] - (a == 1).long() + (a == 0).long()) % 4
        pos[t] = pos[t + 1] - ((a == 2) & free[:, t])[:, None] * headings[rot[t]]
    x, y = torch.meshgrid(
        torch.arange(VIEW_SIZE, device=dev), torch.arange(VIEW_SIZE, device=dev), indexing="ij"
    )
    ahead, lateral = (AGENT_CELL[1] - y).reshape(-1), (x - AGENT_CELL[0]).reshape(-1)  # (49,)
    content = torch.cat(obs.cells, -1).reshape(B, T, -1, CELL_DIM)
    visible = (image[..., 0] != 0).reshape(B, T, -1)
    visible[..., AGENT_CELL[0] * VIEW_SIZE + AGENT_CELL[1]] = False  # it shows what is carried
    canvas = torch.zeros(B * K * K + 1, CANVAS_DIM, device=dev)  # the last row: cells off the canvas
    rows = torch.arange(B, device=dev)[:, None] * K * K
    for t in range(T):
        forward, right = headings[rot[t]], headings[(rot[t] + 1) % 4]  # (B, 2)
        wx = pos[t][:, :1] + ahead * forward[:, :1] + lateral * right[:, :1]  # (B, 49)
        wy = pos[t][:, 1:] + ahead * forward[:, 1:] + lateral * right[:, 1:]
        keep = visible[:, t] & (wx >= 0) & (wx < K) & (wy >= 0) & (wy < K)
        index = torch.where(keep, rows + wx * K + wy, torch.full_like(wx, B * K * K))
        canvas[index.reshape(-1)] = torch.cat(
            [content[:, t], torch.ones(B, content.shape[2], 1, device=dev)], -1
        ).reshape(-1, CANVAS_DIM)
    return canvas[:-1].reshape(B, K * K, CANVAS_DIM)


def greedy_actions(logits: torch.Tensor) -> torch.Tensor:
    """(..., A) the agent's greedy action as a one-hot, without gradient: the simulated world moves
    by the agent's choice, and z acts on the agent only through what it shows it.

    Recorded agents act greedily, and the simulator is trained on their one-hot actions
    (--action_forcing). Moving the simulated world by the softmax instead blurred it whenever the
    agent was unsure and fed the decoder inputs it never saw in training: on the UnlockPickup
    models of the README, closed-loop per-cell accuracy 88.3% soft vs 94.7% greedy (20,000
    episodes) and 90.0% vs 96.9% (2,000), same held-out windows. A straight-through gradient
    (the softmax's) was tried for maximise and misled it: it linearises moving the whole view,
    its norm was 200-3,000x that through the views, and the first Adam step already lowered
    the target. Without it the target is smooth in z between the points where an action flips,
    and maximise keeps the best z it met."""
    return F.one_hot(logits.detach().argmax(-1), logits.shape[-1]).to(logits.dtype)


def turn_direction(direction: torch.Tensor, motion: torch.Tensor) -> torch.Tensor:
    """Direction probabilities (B, 4) after the motion (B, 3): left is direction - 1, right + 1."""
    left, right = motion[..., 1:2], motion[..., 2:3]
    return (
        (1 - left - right) * direction
        + left * torch.roll(direction, -1, -1)  # new[d] = old[d + 1]
        + right * torch.roll(direction, 1, -1)
    )


COPY_FLOOR = 1e-6  # the least probability a copied or scored code keeps (log(0) would be -inf)


def _log(probs: torch.Tensor) -> torch.Tensor:
    """log of probabilities, floored: an unseen canvas cell (all 0) copies no preference."""
    return torch.log(probs.clamp_min(COPY_FLOOR))


def see_through(objects: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
    """Probability that a cell does not block the view (minigrid WorldObj.see_behind: walls and
    closed or locked doors block it), from object (..., 11) and state (..., 3) probabilities."""
    return 1 - objects[..., _WALL] - objects[..., _DOOR] * (1 - states[..., _DOOR_OPEN])


def _between_mask(width: int) -> torch.Tensor:
    """(W, W, W) bool: [i, k, l] is True when cell l lies on the way from i to k along a row,
    k excluded (i < k: i <= l < k; i > k: k < l <= i): light from i reaches k if all see through."""
    i, k, cell = torch.meshgrid(torch.arange(width), torch.arange(width), torch.arange(width), indexing="ij")
    return ((i <= cell) & (cell < k)) | ((k < cell) & (cell <= i))


def soft_visibility(see: torch.Tensor) -> torch.Tensor:
    """minigrid's Grid.process_vis with probabilities: see (B, 7, 7) over (x, y), the agent at
    (3, 6) -> visibility (B, 7, 7). Row by row from the agent's: a row's visible cells are those
    its seeds reach along the row through see-through cells, and every visible see-through cell
    shows the three cells above it. AND is a product and OR the largest of its sources, so on 0/1
    inputs this is minigrid's mask exactly (a test checks it against real views). The paths to a
    cell share their cells, so they are far from independent: a soft OR (1 - prod(1 - p)) counts
    a small leak through a wall row once per path and multiplied it about tenfold per row (a wall
    decoded at 1 - 1e-5 let the view 5 rows behind it be 95% visible); the max does not."""
    W, H = see.shape[-2], see.shape[-1]
    between = _between_mask(W).to(see.device)
    ones = torch.ones((), dtype=see.dtype, device=see.device)
    seed = F.one_hot(torch.tensor(AGENT_CELL[0], device=see.device), W).to(see.dtype)
    seed = seed.expand(*see.shape[:-2], W)
    rows = []
    for j in reversed(range(H)):
        s = see[..., j]  # (B, W)
        reach = torch.where(between, s[..., None, None, :], ones).prod(-1)  # (B, W from, W to)
        row = (seed[..., :, None] * reach).amax(-2)  # (B, W)
        rows.append(row)
        lit = row * s  # what each cell shows above it: itself and both diagonals
        seed = torch.stack([lit, F.pad(lit[..., :-1], (1, 0)), F.pad(lit[..., 1:], (0, 1))]).amax(0)
    return torch.stack(rows[::-1], -1)  # (B, W, H)


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
    obs_logits: list[ObsProbs]  # per simulated step: log P(object), log P(colour, state | seen)
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
        H, Z, C, D = config.hidden_size, config.z_dim, config.decoder_channels, config.map_channels
        step_in = FEATURE_DIM + num_actions
        self.encoder_in = nn.Linear(step_in, H)
        self.encoder_gru = nn.GRU(H, H, batch_first=True)
        self.to_posterior = nn.Linear(H + lang_dim, 2 * Z)
        # the spatial latent's posterior: per canvas cell, from the window's views laid out in
        # the frame of the first simulated step (start_frame_canvas)
        self.map_posterior = nn.Sequential(
            nn.Conv2d(CANVAS_DIM, C, 3, padding=1), nn.ReLU(), nn.Conv2d(C, 2 * D, 1)
        )
        self.context_in = nn.Linear(step_in, H)
        self.context_gru = nn.GRU(H, H, batch_first=True)
        self.to_h0 = nn.Linear(H + Z + lang_dim, H)
        self.view_in = nn.Linear(FEATURE_DIM, H)  # the previous view, for the cell and the head
        self.cell = nn.GRUCell(H + num_actions + Z + lang_dim, H)
        # the view decoder: per cell, canvas ⊕ previous view ⊕ cell embedding, and the global
        # state (h, z, mission, action) as a per-rollout bias of the first layer
        self.global_in = nn.Linear(H + Z + lang_dim + num_actions, C)
        self.position = nn.Parameter(0.1 * torch.randn(VIEW_SIZE * VIEW_SIZE, POSITION_DIM))
        self.cells_in = nn.Conv2d(CANVAS_DIM + D + CELL_DIM + POSITION_DIM, C, 3, padding=1)
        self.cells_net = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(C, C, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(C, CELL_DIM, 1),
        )
        # gains of the copies, added to the logits as gain * log(probability): canvas -> view,
        # previous agent cell -> agent cell, turned direction, previous carrying. At gain 1 and a
        # silent residual a copy is exact and does not fade over steps (a copy of probabilities
        # into logits loses a little of a cell's certainty at every step: a carried key's colour
        # drifted after a few steps)
        self.copy_gain = nn.Parameter(torch.ones(4))
        self.head = nn.Sequential(
            nn.Linear(2 * H, H), nn.ReLU(), nn.Linear(H, 4 + 2 + 1)
        )  # direction, carrying and done logits (residuals of the copies)
        self.register_buffer("view_index", view_to_canvas_index(), persistent=False)
        self.register_buffer(
            "motion_index", torch.stack([motion_source_index(m) for m in MOTIONS]), persistent=False
        )
        agent_cell = torch.zeros(VIEW_SIZE, VIEW_SIZE)
        agent_cell[AGENT_CELL] = 1.0
        self.register_buffer("agent_cell", agent_cell.reshape(-1, 1), persistent=False)

    def encode(
        self,
        image: torch.Tensor,
        direction: torch.Tensor,
        carrying: torch.Tensor,
        action: torch.Tensor,
        lang: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Recorded window (B, T, ...) -> posterior (mu, logvar), each (B, latent_size): the global
        latent ⊕ the spatial one (canvas cell-major)."""
        x = torch.cat(
            [
                exact_obs(image, direction, carrying).features(),
                F.one_hot(action.long(), self.num_actions).float(),
            ],
            -1,
        )
        _, h = self.encoder_gru(torch.relu(self.encoder_in(x)))  # h (1, B, H)
        mu, logvar = self.to_posterior(torch.cat([h[0], lang], -1)).chunk(2, -1)
        if self.config.map_channels:
            B, K = len(image), CANVAS_SIZE
            layout = start_frame_canvas(image, action, self.config.num_init_steps - 1)
            layout = layout.reshape(B, K, K, CANVAS_DIM).permute(0, 3, 1, 2)  # (B, C, K, K) over (X, Y)
            out = self.map_posterior(layout).permute(0, 2, 3, 1).reshape(B, -1)  # (B, K*K*2D)
            map_mu, map_logvar = out.reshape(B, K * K, 2, -1).unbind(2)
            mu = torch.cat([mu, map_mu.reshape(B, -1)], -1)
            logvar = torch.cat([logvar, map_logvar.reshape(B, -1)], -1)
        return mu, logvar.clamp(-8, 8)

    # -- the canvas: (B, K*K, CANVAS_DIM), code probabilities of the last sighting ⊕ seen weight

    def empty_canvas(self, batch: int) -> torch.Tensor:
        return torch.zeros(batch, CANVAS_SIZE * CANVAS_SIZE, CANVAS_DIM, device=self.position.device)

    def move_canvas(self, canvas: torch.Tensor, motion: torch.Tensor) -> torch.Tensor:
        """The canvas after the view moved: the mixture of its three motions and staying, weighted
        by motion (B, 3). Every channel moves, the spatial latent's too: it stays with the world."""
        padded = torch.cat([canvas, canvas.new_zeros(canvas.shape[0], 1, canvas.shape[-1])], 1)
        out = (1 - motion.sum(-1))[:, None, None] * canvas
        for m in range(len(MOTIONS)):
            out = out + motion[:, m, None, None] * padded[:, self.motion_index[m]]
        return out

    def write_view(self, canvas: torch.Tensor, content: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        """Write what the cells of a view hold, content (B, 49, 20), where they are visible
        (B, 49, 1); never the agent's own cell (it shows what the agent carries)."""
        visible = visible * (1 - self.agent_cell)
        new = torch.cat([content, torch.ones_like(visible)], -1)
        old = canvas[:, self.view_index]
        seen = visible * new + (1 - visible) * old[..., :CANVAS_DIM]
        return canvas.index_copy(1, self.view_index, torch.cat([seen, old[..., CANVAS_DIM:]], -1))

    def write_real_view(self, canvas: torch.Tensor, obs: ObsProbs) -> torch.Tensor:
        B = canvas.shape[0]
        content = torch.cat(obs.cells, -1).reshape(B, -1, CELL_DIM)  # (B, 7, 7, 20) -> (B, 49, 20)
        return self.write_view(canvas, content, 1 - obs.cells[0][..., :1].reshape(B, -1, 1))

    def decode_step(
        self,
        h: torch.Tensor,
        canvas: torch.Tensor,
        prev: ObsProbs,
        act: torch.Tensor,
        z: torch.Tensor,
        lang: torch.Tensor,
        free: torch.Tensor | None = None,
    ) -> tuple[ObsProbs, ObsProbs, torch.Tensor, torch.Tensor]:
        """One simulated environment step from the previous view and the agent's action
        probabilities on it: (logits, probabilities, done logit, canvas with the new view).
        The CNN decodes what each cell holds; what the agent can see of it is minigrid's
        occlusion rule applied to that (soft_visibility), so unseen cells need not be learned."""
        B, T = h.shape[0], self.config.obs_temperature
        motion = motion_probs(act, prev, free)
        canvas = self.move_canvas(canvas, motion)
        window = canvas[:, self.view_index]  # (B, 49, CANVAS_DIM + map_channels)
        prev_cells = torch.cat(prev.cells, -1).reshape(B, -1, CELL_DIM)  # (B, 49, 20)
        g = self.global_in(torch.cat([h, z, lang, act], -1))  # (B, C)
        x = torch.cat([window, prev_cells, self.position.expand(B, -1, -1)], -1)
        x = x.reshape(B, VIEW_SIZE, VIEW_SIZE, -1).permute(0, 3, 1, 2)  # (B, D, 7, 7) over (x, y)
        x = self.cells_in(x) + g[:, :, None, None]
        cells = self.cells_net(x).permute(0, 2, 3, 1).reshape(B, -1, CELL_DIM)  # (B, 49, 20)
        gain = self.copy_gain
        # the agent's own cell shows what it carries, not the canvas (the floor it stands on)
        cells = cells + (1 - self.agent_cell) * gain[0] * _log(window[..., :CELL_DIM])
        cells = cells + self.agent_cell * gain[1] * _log(prev_cells)
        objects, colours, states = torch.split(cells, list(CHANNEL_SIZES), -1)
        content = [
            F.pad(torch.softmax(objects[..., 1:] / T, -1), (1, 0)),  # a cell holds something
            torch.softmax(colours / T, -1),
            torch.softmax(states / T, -1),
        ]
        see = see_through(content[0], content[2])
        see = see * (1 - self.agent_cell[:, 0]) + self.agent_cell[:, 0]  # the agent's cell is free
        visible = soft_visibility(see.reshape(B, VIEW_SIZE, VIEW_SIZE)).reshape(B, -1, 1)
        unseen = [
            F.one_hot(torch.zeros((), dtype=torch.long, device=c.device), c.shape[-1]).to(c.dtype)
            for c in content
        ]
        view = [visible * c + (1 - visible) * u for c, u in zip(content, unseen)]  # unseen: (0, 0, 0)
        cell_probs = [v.reshape(B, VIEW_SIZE, VIEW_SIZE, -1) for v in view]
        # the loss reads the object's probability (unseen included) and what a seen cell holds:
        # the colour and state of an unseen cell are always 0, and scoring the mixture on them
        # would teach a cell the decoder is unsure it can see to be red
        cell_logits = [
            _log(cell_probs[0]),
            *[F.log_softmax(x / T, -1).reshape(B, VIEW_SIZE, VIEW_SIZE, -1) for x in (colours, states)],
        ]
        rest = self.head(torch.cat([h, torch.relu(self.view_in(prev.features()))], -1))
        direction = rest[:, :4] + gain[2] * _log(turn_direction(prev.direction, motion))
        carrying = rest[:, 4:6] + gain[3] * _log(prev.carrying)
        logits = ObsProbs(cell_logits, direction, carrying)
        probs = ObsProbs(cell_probs, torch.softmax(direction / T, -1), torch.softmax(carrying / T, -1))
        canvas = self.write_view(canvas, torch.cat(content, -1), visible)
        return logits, probs, rest[:, 6], canvas

    def simulate(
        self,
        agent: nn.Module,
        init: Init,
        z: torch.Tensor,
        num_sim_steps: int | None = None,
        memory_edit: object = None,
        forced_actions: torch.Tensor | None = None,
        forced_free: torch.Tensor | None = None,
    ) -> SimOutput:
        """Roll the simulator and the agent for num_sim_steps from the real init context.
        memory_edit(step, memory) -> memory, if given, changes the agent's memory before each
        simulated step (the directions analysis). forced_actions (B, S), if given, are the actions
        that move the world before each simulated step where >= 0 (training with the recorded
        actions: the world then follows the recording even where the agent would act otherwise);
        elsewhere the agent's own greedy action moves it. forced_free (B, S): whether the
        cell ahead was free before each step in the recording, for the forced forward moves.
        z (B, latent_size): the global latent ⊕ the spatial one, which is laid on the canvas in the
        frame of the first simulated step and moves with the world from then on."""
        Z, D = self.config.z_dim, self.config.map_channels
        z, z_map = z[:, :Z], z[:, Z:].reshape(len(z), CANVAS_SIZE * CANVAS_SIZE, D)
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
        # the canvas of the real views, moved by the actions taken (recordings act greedily)
        canvas = self.empty_canvas(len(z))
        for t in range(n_init):
            if t > 0:
                taken = F.one_hot(trace.logits[:, t - 1].argmax(-1), self.num_actions).float()
                canvas = self.move_canvas(canvas, motion_probs(taken, real_steps[t - 1]))
            canvas = self.write_real_view(canvas, real_steps[t])
        canvas = torch.cat([canvas, z_map], -1)
        x = torch.cat([real.features(), prev_act], -1)
        _, h_ctx = self.context_gru(torch.relu(self.context_in(x)))
        h = torch.tanh(self.to_h0(torch.cat([h_ctx[0], z, init.lang], -1)))
        prev, act = real_steps[-1], greedy_actions(trace.logits[:, -1])
        memory_start = memory
        obs_logits, obs_probs, done_logits, logits, memories, weights = [], [], [], [], [], []
        for s in range(S):
            free = None
            if forced_actions is not None:
                forced = forced_actions[:, s]
                taken = F.one_hot(forced.clamp_min(0), self.num_actions).to(act.dtype)
                act = torch.where((forced >= 0)[:, None], taken, act)
                if forced_free is not None:
                    free = torch.where(forced >= 0, forced_free[:, s].to(act.dtype), front_free(prev))
            h = self.cell(torch.cat([torch.relu(self.view_in(prev.features())), act, z, init.lang], -1), h)
            lo, pr, done, canvas = self.decode_step(h, canvas, prev, act, z, init.lang, free)
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
            prev, act = pr, greedy_actions(out.logits)
        layers = [torch.stack([w[k] for w in weights], 1) for k in range(len(weights[0]))]
        agent_trace = AgentTrace(torch.stack(logits, 1), torch.stack(memories, 1), layers)
        return SimOutput(obs_logits, obs_probs, torch.stack(done_logits, 1), agent_trace, memory_start)


# ----------------------------------------------------------------------------- losses and metrics


def decoded_image(sim: SimOutput) -> torch.Tensor:
    """(B, S, 7, 7, 3) long: the most likely codes (ObsProbs.codes) of every simulated view."""
    return torch.stack([o.codes()[0] for o in sim.obs_probs], 1)


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


def view_loss(obs_logits: list[ObsProbs], image: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the decoded views against the recorded ones (B, S, 7, 7, 3), summed over
    the three channels and averaged over cells: the object of every cell, the colour and state of
    the cells that are seen (an unseen cell is (0, 0, 0) whatever the decoder thinks it holds)."""
    image = image.long()
    seen = (image[..., 0] != 0).reshape(-1).float()
    loss = 0.0
    for c, n in enumerate(CHANNEL_SIZES):
        logits = torch.stack([o.cells[c] for o in obs_logits], 1)  # (B, S, 7, 7, n)
        ce = F.cross_entropy(logits.reshape(-1, n), image[..., c].reshape(-1), reduction="none")
        loss = loss + (ce.mean() if c == 0 else (ce * seen).mean())
    return loss


def kl_per_dimension(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """(latent_size,) KL(q(z_d) || N(0, 1)) of each latent dimension, nats, averaged over the batch."""
    return (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp())).mean(0)


# A latent dimension whose batch-mean KL exceeds this carries information (an "active unit",
# Burda et al. 2016 use a variance criterion; a KL threshold says the same in nats).
ACTIVE_KL = 0.01


def kl_objective(kl_dims: torch.Tensor, free_bits: float) -> torch.Tensor:
    """The KL term trained on: sum over dimensions of max(KL_d, free_bits) (free bits, Kingma et
    al. 2016, per dimension): below free_bits nats a dimension is not pushed back to the prior, so
    the posterior can carry that much per dimension at no cost. free_bits 0: the plain KL."""
    return kl_dims.clamp_min(free_bits).sum() if free_bits > 0 else kl_dims.sum()


def losses(
    model: GenerativeModel,
    agent: nn.Module,
    batch: dict[str, torch.Tensor],
    lang_table: torch.Tensor,
    sample: bool = True,
    action_forcing: float = 0.0,
    free_bits: float = 0.0,
) -> tuple[dict[str, torch.Tensor], SimOutput]:
    """Unscaled losses of a batch of recorded windows: obs (CE per cell and channel, direction,
    carrying), hx (agent memory MSE vs recorded), act_log_probs (KL recorded || simulated), done
    (BCE), kl (posterior || N(0, I), nats per window), kl_objective (kl_objective: with free bits)
    and kl_active_dims (dimensions whose KL exceeds ACTIVE_KL; a count, not a loss).
    action_forcing: the fraction of windows whose world moves by the recorded actions rather than
    the simulated agent's (the agent still reads the simulated views); 0 is the closed loop of the
    analyses."""
    n_init, S = model.config.num_init_steps, model.config.num_sim_steps
    lang = lang_table[batch["mission_index"][:, 0].long()]
    mu, logvar = model.encode(batch["image"], batch["direction"], batch["carrying"], batch["action"], lang)
    z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if sample else mu
    forced = free = None
    if action_forcing > 0:  # the action before each simulated step, and whether it could move
        recorded = batch["action"][:, n_init - 1 : n_init - 1 + S].long()
        # drawn on the CPU whatever the device: the same windows are forced on CPU and GPU
        keep = (torch.rand(len(recorded), 1) < action_forcing).to(recorded.device)
        forced = torch.where(keep, recorded, torch.full_like(recorded, -1))
        before = batch["image"][:, n_init - 1 : n_init - 1 + S]
        zeros = torch.zeros(before.shape[:2], device=before.device)
        free = front_free(exact_obs(before, zeros, zeros))
    sim = model.simulate(
        agent, batch_init(batch, n_init, lang_table), z, forced_actions=forced, forced_free=free
    )
    obs = view_loss(sim.obs_logits, batch["image"][:, n_init:])
    direction = torch.stack([o.direction for o in sim.obs_logits], 1)
    carrying = torch.stack([o.carrying for o in sim.obs_logits], 1)
    obs = obs + F.cross_entropy(direction.reshape(-1, 4), batch["direction"][:, n_init:].reshape(-1).long())
    obs = obs + F.cross_entropy(carrying.reshape(-1, 2), batch["carrying"][:, n_init:].reshape(-1).long())
    # memory after simulated step s is the recorded memory before step n_init + s + 1
    hx = (
        F.mse_loss(sim.agent.memory[:, : S - 1], batch["memory"][:, n_init + 1 :])
        if S > 1
        else torch.zeros((), device=mu.device)
    )
    recorded = torch.log_softmax(batch["logits"][:, n_init:], -1)
    simulated = torch.log_softmax(sim.agent.logits, -1)
    act = (recorded.exp() * (recorded - simulated)).sum(-1).mean()
    done = F.binary_cross_entropy_with_logits(sim.done_logits, batch["done"][:, n_init:].float())
    kl_dims = kl_per_dimension(mu, logvar)
    kl = {
        "kl": kl_dims.sum(),
        "kl_objective": kl_objective(kl_dims, free_bits),
        "kl_active_dims": (kl_dims.detach() > ACTIVE_KL).sum().float(),
    }
    return {"obs": obs, "hx": hx, "act_log_probs": act, "done": done, **kl}, sim


@torch.no_grad()
def reconstruction_metrics(
    sim: SimOutput, batch: dict[str, torch.Tensor], num_init_steps: int
) -> dict[str, float]:
    """Per-channel accuracy of the decoded views (argmax vs recorded), agent-memory error and
    agreement of the simulated agent's greedy action with the recorded one."""
    n_init = num_init_steps
    image = batch["image"][:, n_init:].long()
    out = {}
    cells = decoded_image(sim)
    for c, name in enumerate(CHANNEL_NAMES):
        out[f"acc/{name}"] = float((cells[..., c] == image[..., c]).float().mean())
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
    out["acc/action"] = float(action_agreement(sim, batch, n_init).float().mean())
    prefix = prefix_accuracy(
        (cells == image).all(-1).float().mean((2, 3)), agreeing_prefix(sim, batch, n_init)
    )
    out["acc/cell_agreeing"], out["acc/agreeing_share"] = prefix["accuracy"], prefix["share"]
    return out


def action_agreement(sim: SimOutput, batch: dict[str, torch.Tensor], num_init_steps: int) -> torch.Tensor:
    """(B, S) bool: the simulated agent's greedy action after step s is the recorded agent's."""
    return sim.agent.logits.argmax(-1) == batch["logits"][:, num_init_steps:].argmax(-1)


def agreeing_prefix(sim: SimOutput, batch: dict[str, torch.Tensor], num_init_steps: int) -> torch.Tensor:
    """(B, S) bool: simulated step s is reached by the recorded actions, i.e. the simulated agent's
    greedy action agreed with the recorded one at every step before it (the move into the first
    step is the agent's greedy action on the real context, which is the recorded one). After the
    first disagreement the simulated world rightly differs from the recording, so comparing views
    there measures the divergence, not the decoder."""
    agree = action_agreement(sim, batch, num_init_steps)
    reached = torch.cat([torch.ones_like(agree[:, :1]), agree[:, :-1]], 1)
    return reached.long().cumprod(1).bool()


def prefix_accuracy(per_step: torch.Tensor, agreed: torch.Tensor) -> dict[str, float]:
    """Per-step view accuracy (B, S) split by agreeing_prefix (B, S): the share of steps reached by
    the recorded actions, the accuracy there and after the divergence (nan where there are none)."""

    def mean(mask: torch.Tensor) -> float:
        return float(per_step[mask].mean()) if mask.any() else float("nan")

    return {
        "share": float(agreed.float().mean()),
        "accuracy": mean(agreed),
        "after_divergence": mean(~agreed),
    }


OBJECT_NAMES = ("unseen", "empty", "wall", "floor", "door", "key", "ball", "box", "goal", "lava", "agent")


@torch.no_grad()
def accuracy_breakdown(sim: SimOutput, batch: dict[str, torch.Tensor], num_init_steps: int) -> dict:
    """Where the decoded views are wrong: per-cell accuracy (all three codes right) by view cell
    (7, 7) over (x, y), by simulated step, by the true object, for cells whose codes changed
    since the previous real step vs unchanged ones, for the agent's own cell, plus per channel."""
    n_init = num_init_steps
    real = batch["image"][:, n_init:].long()  # (B, S, 7, 7, 3)
    before = batch["image"][:, n_init - 1 : -1].long()
    decoded = decoded_image(sim)
    right = (decoded == real).all(-1).float()  # (B, S, 7, 7)
    changed = (real != before).any(-1)
    objects = real[..., 0]
    return {
        "cell": float(right.mean()),
        "channels": {
            n: float((decoded[..., c] == real[..., c]).float().mean()) for c, n in enumerate(CHANNEL_NAMES)
        },
        "by_view_cell": right.mean((0, 1)).tolist(),  # [x][y]: y = 6 is the agent's row
        "by_step": right.mean((0, 2, 3)).tolist(),
        "by_object": {
            OBJECT_NAMES[o]: {
                "share": float((objects == o).float().mean()),
                "accuracy": float(right[objects == o].mean()),
            }
            for o in objects.unique().tolist()
        },
        "changed_cells": {"share": float(changed.float().mean()), "accuracy": float(right[changed].mean())},
        "unchanged_cells": float(right[~changed].mean()) if (~changed).any() else float("nan"),
        "copy_previous_view": float((~changed).float().mean()),  # the accuracy of "nothing changes"
        "agent_cell": float(right[..., AGENT_CELL[0], AGENT_CELL[1]].mean()),
        "action_agreement": float(action_agreement(sim, batch, n_init).float().mean()),
        "agreeing_prefix": prefix_accuracy(right.mean((2, 3)), agreeing_prefix(sim, batch, n_init)),
    }


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
