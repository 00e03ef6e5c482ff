"""Acting with a policy in BabyAI envs: the one acting step, and the training collector.

- `act(policy, encoder, batch, memory)`: encode a batch of observations and missions and take one
  policy step in torch. `acting_step(policy, missions, obs_encoding)` gives the same step in numpy
  (numpy_policy.py: equal to float rounding, 2-3x faster) or `act` where numpy does not cover the
  policy (knockout) or the policy is on a GPU (evaluation with --device cuda: the batch acts in
  one torch step there, handed back in one transfer by `on_cpu`); training collection, evaluation
  (eval_mop) and everything built on them act through it, so a policy sees the same inputs
  wherever it runs. Training collection always acts on CPUs, whatever the learner's device.
- `Collector` / `ParallelCollector`: N training envs, each labelled by its own bot at every step,
  acting with a copy of the current policy; worker processes each own a slice of the envs and
  return whole chunks of steps (numpy arrays) for the learner to replay with gradients. A
  multi-task run (task_id "A,B,C") gives each env index its own level (babyai_env.env_levels);
  its layouts still come from train_episode_seed(run_seed, env_index, episode_index). Besides
  the bot's labels a chunk records `rooms_visited`, a bitmask of the rooms (babyai_env.RoomLayout)
  the agent has stood in so far in its episode, the target of `--aux_rooms_weight`, and, when
  asked (`record_targets`: `--aux_target_weight`), `target`: where the bot heads (SafeBot.target,
  as bot demos record it); else NO_TARGET, because SafeBot.target repeats a search of the bot's;
  and when asked (`record_subgoals`: `--aux_subgoal_weight` or `--subgoal_ce_weights`), `subgoal`:
  what the bot is doing (SafeBot.subgoal, an index into SUBGOAL_KINDS); else NO_SUBGOAL; and when
  asked (`record_keys`: `--aux_key_weight`), `key`: where the nearest key of a locked door's colour
  the agent has seen lies (babyai_env.KeyTracker, on every step, labelled or not); else NO_TARGET;
  and when asked (`record_door_places`: `--aux_door_place_weight`), `door_place`: where the nearest
  still-locked door the agent has seen lies (babyai_env.DoorTracker, every step); else NO_TARGET.

Example:
    with ParallelCollector("BabyAI-GoToLocal-v0", num_envs=16, num_workers=2, run_seed=0, ...) as c:
        chunk = c.collect(policy, encoder, unroll_len=32)
"""

from __future__ import annotations

import copy
import multiprocessing as mp
import signal
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mixture_of_experts import PolicyOutput, reset_memory
from mop.babyai_env import (
    BOT_REVISION,
    EVAL_SEED_START,
    MAX_ROOMS,
    NO_DOOR,
    NO_SUBGOAL,
    NO_TARGET,
    DoorTracker,
    KeyTracker,
    RoomLayout,
    SafeBot,
    bot_path_length,
    check_task_ids,
    door_labels,
    encode_obs,
    env_levels,
    make_env,
    needs_key,
    quiet_reset,
    subgoal_code,
    target_code,
    train_episode_seed,
)
from mop.devices import module_device
from mop.numpy_policy import NumpyPolicy, use_one_thread

# ----------------------------------------------------------------------------- the acting step


@dataclass
class ObsBatch:
    """What a policy reads for a batch of envs at one step."""

    image: np.ndarray  # (B, 7, 7, 3) uint8
    direction: np.ndarray  # (B,)
    carrying: np.ndarray  # (B,) 0/1
    missions: list[str]

    @classmethod
    def of(cls, envs: list[Any], observations: list[dict]) -> ObsBatch:
        return cls(
            np.stack([o["image"] for o in observations]),
            np.array([o["direction"] for o in observations], np.int64),
            np.array([env.carrying is not None for env in envs], np.uint8),
            [o["mission"] for o in observations],
        )


class MissionCache:
    """Mission embeddings of one set of encoder weights, each distinct string encoded once."""

    def __init__(self, encoder: torch.nn.Module):
        self.encoder, self.cache = encoder, {}

    def __call__(self, missions: list[str]) -> torch.Tensor:
        new = [m for m in dict.fromkeys(missions) if m not in self.cache]
        if new:
            self.cache.update(zip(new, self.encoder(new)))
        return torch.stack([self.cache[m] for m in missions])


@torch.no_grad()
def act(
    policy: torch.nn.Module, missions: MissionCache, batch: ObsBatch, memory: torch.Tensor, obs_encoding: str
) -> PolicyOutput:
    """One policy step for a batch of envs: logits (B, A), new memory (B, M), router weights, on
    the policy's device (the batch and memory are moved there; a CPU policy reads them in place)."""
    device = module_device(policy)
    obs = encode_obs(
        torch.from_numpy(batch.image).to(device),
        torch.from_numpy(batch.direction).to(device),
        torch.from_numpy(batch.carrying).to(device),
        obs_encoding,
    )
    return policy.step(obs, missions(batch.missions), memory.to(device))


def on_cpu(out: PolicyOutput) -> PolicyOutput:
    """A step's output on the CPU in ONE transfer (one device sync per step, not one per tensor):
    logits, memory and router weights side by side, then split into views."""
    parts = [out.logits, out.memory, *out.router_weights]
    flat = torch.cat(parts, dim=-1).cpu()
    logits, memory, *weights = flat.split([p.shape[-1] for p in parts], dim=-1)
    return PolicyOutput(logits, memory, list(weights))


def acting_backend(policy: torch.nn.Module) -> str:
    """'torch' or 'numpy': which acting step is cheaper on the CPU for this policy's trunk, a rule
    from `measure_acting` (docs/speed.md, "Acting backend"): the 'film' trunk's convolutions are
    cheaper in torch (~1.8x), every other trunk's small matmuls in numpy (2-3x). A fixed rule, not a
    per-run timing, so that a run's actions never depend on how busy the box was."""
    trunk = getattr(policy, "input_projection", None)
    return "torch" if type(trunk).__name__ == "FiLMTrunk" else "numpy"


def measure_acting(
    policy: torch.nn.Module, missions: MissionCache, obs_encoding: str, batch: ObsBatch, repeats: int = 20
) -> dict[str, float]:
    """Seconds per acting step of `batch` in torch and in numpy (None: numpy does not cover the
    policy), the median of `repeats` after one warm-up step each; and their largest logit difference."""

    memory = policy.init_memory(len(batch.missions))
    actor = NumpyPolicy.of(policy, missions, obs_encoding)
    steps = {"torch": lambda: on_cpu(act(policy, missions, batch, memory, obs_encoding)).logits.numpy()}
    if actor is not None:
        steps["numpy"] = lambda: actor.step(batch, memory.numpy())[0]
    out: dict[str, Any] = {"numpy": None}
    logits = {}
    for name, step in steps.items():
        logits[name] = step()
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            step()
            times.append(time.perf_counter() - t)
        out[name] = float(np.median(times))
    if actor is not None:
        out["max_logit_diff"] = float(np.abs(logits["torch"] - logits["numpy"]).max())
    return out


def acting_step(
    policy: torch.nn.Module, missions: MissionCache, obs_encoding: str
) -> Callable[[ObsBatch, torch.Tensor], PolicyOutput]:
    """`act` with the policy's current weights, as collection and evaluation take it (CPU tensors
    in and out): in numpy where numpy_policy covers a policy on the CPU and `acting_backend` says
    numpy is the cheaper (2-3x faster per step for the MLP trunks; equal to float rounding), else in torch on the policy's device, all envs of the batch in one
    step (a CUDA policy: evaluation's acting on the GPU). Build it again whenever the weights
    change (here: once per chunk)."""
    on_the_cpu = module_device(policy).type == "cpu"
    numpy_wins = on_the_cpu and acting_backend(policy) == "numpy"
    actor = NumpyPolicy.of(policy, missions, obs_encoding) if numpy_wins else None
    if actor is None:
        return lambda batch, memory: on_cpu(act(policy, missions, batch, memory, obs_encoding))

    def step(batch: ObsBatch, memory: torch.Tensor) -> PolicyOutput:
        logits, memory_after, weights = actor.step(batch, memory.numpy())
        return PolicyOutput(
            torch.from_numpy(logits), torch.from_numpy(memory_after), [torch.from_numpy(w) for w in weights]
        )

    return step


# ----------------------------------------------------------------------------- training collection


KEY_LAYOUT_TRIES = 200  # --key_layout_share: seeds tried for a layout of the drawn kind (~2 on Unlock)

# The per-step arrays a chunk holds besides mission_index (which is re-indexed when chunks join).
STEP_KEYS = (
    "image",
    "direction",
    "carrying",
    "label",
    "label_mask",
    "done",
    "rooms_visited",
    "target",
    "subgoal",
    "key",
    "door",
    "door_place",
)


def empty_chunk(T: int, n: int, done: bool = False) -> dict[str, np.ndarray]:
    """The per-step arrays of a chunk of T steps x n envs, as the learner reads them (collector
    chunks and replay_buffer's replay windows share this layout)."""
    return {
        "image": np.zeros((T, n, 7, 7, 3), np.uint8),
        "direction": np.zeros((T, n), np.int64),
        "carrying": np.zeros((T, n), np.uint8),
        "mission_index": np.zeros((T, n), np.int64),
        "label": np.zeros((T, n), np.int64),
        "label_mask": np.zeros((T, n), bool),
        "done": np.full((T, n), done, bool),
        "rooms_visited": np.full((T, n), -1, np.int32),
        "target": np.full((T, n, 2), NO_TARGET, np.int8),  # the bot's goal (ahead, right): SafeBot.target
        "subgoal": np.full((T, n), NO_SUBGOAL, np.int8),  # what the bot is doing: SafeBot.subgoal
        "key": np.full((T, n, 2), NO_TARGET, np.int8),  # where the seen key lies (ahead, right): KeyTracker
        "door": np.full((T, n), NO_DOOR, np.int8),  # the colour of the locked door seen: door_labels
        "door_place": np.full((T, n, 2), NO_TARGET, np.int8),  # where the seen locked door lies: DoorTracker
    }


@dataclass
class Episode:
    """A finished training episode, as logged."""

    env_index: int
    seed: int
    length: int
    success: bool  # terminated with reward > 0 (minigrid also terminates on a failed instruction)
    bot_failure: str | None  # why the bot gave up, if it did (the episode was then cut short)
    bot_steps: int | None  # bot path length of this layout, when it was measured
    mission: str
    task_id: str = ""  # the env's level (several in a multi-task run)


class _Slot:
    """One env, its bot and its episode bookkeeping."""

    def __init__(
        self,
        task_id: str,
        env_index: int,
        run_seed: int,
        max_steps: int | None,
        rng_seed: int,
        fast: bool,
        key_layout_share: float | None = None,
        eval_stride: int | None = None,
        bot_undo: bool = True,
        bot_revision: int = BOT_REVISION,
    ):
        self.bot_undo = bot_undo  # --bot_undo: the labelling bot reverts the student's changes
        self.bot_revision = bot_revision  # --bot_revision: which labelling bot
        self.task_id, self.env_index, self.run_seed, self.max_steps = task_id, env_index, run_seed, max_steps
        self.fast, self.key_layout_share, self.eval_stride = fast, key_layout_share, eval_stride
        self.env = make_env(task_id, max_steps, fast)
        layout = RoomLayout.of(self.env)
        self.layout = layout if layout.num_rooms <= MAX_ROOMS else None  # None: rooms_visited stays -1
        self.path_env: Any = None  # made on first use: the bot's own rollouts for path_ratio
        self.episode_index = 0
        self.rng = np.random.default_rng(rng_seed)  # teacher forcing and path-ratio sampling
        self.keys = KeyTracker()
        self.door_places = DoorTracker()

    def start_episode(self, path_ratio_fraction: float) -> None:
        # --key_layout_share: draw the kind of layout, then take the env's next seeds until one is
        # of that kind (the seeds skipped are never used; at most KEY_LAYOUT_TRIES of them).
        want = None if self.key_layout_share is None else bool(self.rng.random() < self.key_layout_share)
        for _ in range(KEY_LAYOUT_TRIES):
            self.seed = (
                train_episode_seed(self.run_seed, self.env_index, self.episode_index)
                if self.eval_stride is None
                else EVAL_SEED_START + self.env_index + self.eval_stride * self.episode_index
            )
            self.episode_index += 1
            self.obs = quiet_reset(self.env, self.seed)
            if want is None or needs_key(self.env) == want:
                break
        self.bot = SafeBot(self.env, self.fast, self.bot_undo, self.bot_revision)
        self.prev_action: int | None = None
        self.steps = 0
        self.visited = 0  # bitmask of the rooms the agent has stood in this episode
        self.keys.reset(self.env)  # the keys of a locked door's colour seen this episode
        self.door_places.reset(self.env)  # the locked doors seen this episode
        self.door = NO_DOOR  # the colour of the locked door last in view this episode (door_labels)
        self.measure_bot_path = path_ratio_fraction > 0 and self.rng.random() < path_ratio_fraction

    def finish(self, success: bool, failure: str | None) -> Episode:
        bot_steps = None
        if self.measure_bot_path and success:
            if self.path_env is None:
                self.path_env = make_env(self.task_id, self.max_steps, self.fast)
            bot_steps = bot_path_length(self.task_id, self.seed, self.max_steps, self.fast, self.path_env)
        return Episode(
            self.env_index,
            self.seed,
            self.steps,
            success,
            failure,
            bot_steps,
            self.obs["mission"],
            self.task_id,
        )

    def state(self) -> dict:
        return {"episode_index": self.episode_index, "rng": self.rng.bit_generator.state}

    def load_state(self, state: dict) -> None:
        self.episode_index = int(state["episode_index"])
        self.rng.bit_generator.state = state["rng"]


class Collector:
    """Runs a slice of the training envs in this process and returns chunks of labelled steps.

    Each env's layouts, teacher-forcing draws and path-ratio samples depend only on (run_seed,
    env_index), so a run is reproducible and does not depend on how envs are split over workers.
    task_id: one level for every env, or a list with the level of each of env_indices.
    eval_stride: None (training) or the evaluation layouts instead of training ones, env i playing
    EVAL_SEED_START + i, i + eval_stride, i + 2 eval_stride, ... (bench/demo_fit.py: the student's
    own states on the layouts evaluation plays, each labelled by the bot).
    """

    def __init__(
        self,
        task_id: str | list[str],
        env_indices: list[int],
        run_seed: int,
        max_steps: int | None,
        obs_encoding: str,
        teacher_forcing: float = 0.0,
        path_ratio_fraction: float = 0.0,
        slot_states: list[dict] | None = None,
        fast_env: bool = True,
        key_layout_share: float | None = None,
        eval_stride: int | None = None,
        record_targets: bool = False,
        record_subgoals: bool = False,
        bot_undo: bool = True,
        record_keys: bool = False,
        bot_revision: int = BOT_REVISION,
        record_doors: bool = False,
        record_door_places: bool = False,
    ):
        self.obs_encoding, self.teacher_forcing = obs_encoding, teacher_forcing
        self.record_door_places = record_door_places  # --aux_door_place_weight: each step's DoorTracker label
        self.record_keys = record_keys  # --aux_key_weight: each step's KeyTracker label
        self.record_doors = record_doors  # --aux_door_weight: each step's door_labels
        self.record_targets = record_targets  # --aux_target_weight: each step's SafeBot.target
        self.record_subgoals = record_subgoals  # imitation_data.uses_subgoals: each step's SafeBot.subgoal
        self.path_ratio_fraction = path_ratio_fraction
        levels = [task_id] * len(env_indices) if isinstance(task_id, str) else list(task_id)
        if len(levels) != len(env_indices):
            raise ValueError(f"{len(levels)} levels for {len(env_indices)} envs")
        self.slots = [
            _Slot(
                level,
                i,
                run_seed,
                max_steps,
                run_seed * 1_000_003 + i,
                fast_env,
                key_layout_share,
                eval_stride,
                bot_undo,
                bot_revision,
            )
            for level, i in zip(levels, env_indices)
        ]
        for k, slot in enumerate(self.slots):
            if slot_states is not None:
                slot.load_state(slot_states[k])
            slot.start_episode(path_ratio_fraction)
        self.memory: torch.Tensor | None = None

    def state(self) -> list[dict]:
        return [slot.state() for slot in self.slots]

    @torch.no_grad()
    def collect(
        self,
        policy: torch.nn.Module,
        encoder: torch.nn.Module,
        unroll_len: int,
        teacher_forcing: float | None = None,
    ) -> dict:
        """Act for `unroll_len` steps in every env; every state is labelled by its bot.
        teacher_forcing: this chunk's probability of executing the bot's label (None: the
        constructor's), so a schedule (DAgger's beta_i) can change it every update."""
        started = time.perf_counter()
        n, T = len(self.slots), unroll_len
        beta = self.teacher_forcing if teacher_forcing is None else float(teacher_forcing)
        if self.memory is None or self.memory.shape[-1] != policy.memory_size:
            self.memory = policy.init_memory(n)
        policy.eval()
        encoder.eval()
        missions = MissionCache(encoder)  # weights are fixed during a chunk
        step = acting_step(policy, missions, self.obs_encoding)
        chunk = {
            **empty_chunk(T, n),
            "memory": self.memory.clone(),
            "missions": [],
            "episodes": [],
            "teacher_forcing": beta,
        }
        mission_ids: dict[str, int] = {}
        for t in range(T):
            batch = ObsBatch.of([slot.env for slot in self.slots], [slot.obs for slot in self.slots])
            chunk["image"][t], chunk["direction"][t], chunk["carrying"][t] = (
                batch.image,
                batch.direction,
                batch.carrying,
            )
            for k, slot in enumerate(self.slots):
                chunk["mission_index"][t, k] = mission_ids.setdefault(batch.missions[k], len(mission_ids))
                if slot.layout is not None:
                    slot.visited |= 1 << slot.layout.room_of(*slot.env.agent_pos)
                    chunk["rooms_visited"][t, k] = slot.visited
                label = slot.bot.label(slot.prev_action)
                chunk["label_mask"][t, k] = label is not None
                chunk["label"][t, k] = -1 if label is None else label
                if self.record_targets and label is not None:
                    chunk["target"][t, k] = target_code(slot.bot.target())
                if self.record_subgoals and label is not None:
                    chunk["subgoal"][t, k] = subgoal_code(slot.bot.subgoal())
                if self.record_keys:  # every step: a sighting counts whether or not the bot labels it
                    chunk["key"][t, k] = target_code(slot.keys.label(slot.env, slot.obs["image"]))
                if self.record_doors:
                    slot.door = int(door_labels(slot.obs["image"][None], slot.door)[0])
                    chunk["door"][t, k] = slot.door
                if self.record_door_places:  # every step, as the key's
                    place = slot.door_places.label(slot.env, slot.obs["image"])
                    chunk["door_place"][t, k] = target_code(place)
            out = step(batch, self.memory)
            actions = out.logits.argmax(-1).tolist()
            for k, slot in enumerate(self.slots):
                label = int(chunk["label"][t, k])
                if beta > 0 and slot.rng.random() < beta and label >= 0:
                    actions[k] = label
                if label < 0:  # the bot failed: no label enters the loss; cut the episode short
                    chunk["episodes"].append((t, slot.finish(False, slot.bot.failure)))
                    chunk["done"][t, k] = True
                    slot.start_episode(self.path_ratio_fraction)
                    continue
                slot.obs, reward, terminated, truncated, _ = slot.env.step(actions[k])
                slot.steps += 1
                slot.prev_action = actions[k]
                if terminated or truncated:
                    chunk["episodes"].append((t, slot.finish(bool(terminated and reward > 0), None)))
                    chunk["done"][t, k] = True
                    slot.start_episode(self.path_ratio_fraction)
            self.memory = reset_memory(out.memory, torch.from_numpy(chunk["done"][t]))
        inverse = {i: m for m, i in mission_ids.items()}
        chunk["missions"] = [inverse[i] for i in range(len(inverse))]
        chunk["slot_states"] = self.state()  # where each env stands after this chunk (for --resume)
        chunk["collect_s"] = time.perf_counter() - started  # this process's acting time (perf/ logs)
        return chunk


def merge_chunks(chunks: list[dict]) -> dict:
    """Concatenate worker chunks along the env axis (workers hold consecutive env slices)."""
    if len(chunks) == 1:
        return chunks[0]
    merged: dict[str, Any] = {"missions": [], "episodes": [], "slot_states": []}
    merged["teacher_forcing"] = chunks[0].get("teacher_forcing")
    merged["collect_s"] = max(c.get("collect_s", 0.0) for c in chunks)  # the slowest worker
    offset_index = []
    for c in chunks:
        remap = np.array([len(merged["missions"]) + i for i in range(len(c["missions"]))], np.int64)
        merged["missions"].extend(c["missions"])
        offset_index.append(remap[c["mission_index"]] if len(remap) else c["mission_index"])
        merged["episodes"].extend(c["episodes"])
        merged["slot_states"].extend(c["slot_states"])
    for key in STEP_KEYS:
        merged[key] = np.concatenate([c[key] for c in chunks], axis=1)
    merged["mission_index"] = np.concatenate(offset_index, axis=1)
    merged["memory"] = torch.cat([c["memory"] for c in chunks])
    # Finished episodes in (step, env) order, so logs do not depend on the worker split.
    merged["episodes"].sort(key=lambda te: (te[0], te[1].env_index))
    return merged


def _worker_main(conn: Any, collector_kwargs: dict, policy_factory: Any, encoder_factory: Any) -> None:
    # Ctrl-C reaches the whole process group: only the parent handles it (and closes the workers);
    # a worker interrupted mid-send printed a ConnectionResetError traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    use_one_thread()
    try:
        collector = Collector(**collector_kwargs)
        policy, encoder = policy_factory(), encoder_factory()
        conn.send(("ready", None))
    except Exception:
        conn.send(("error", traceback.format_exc()))
        return
    while True:
        try:
            command, payload = conn.recv()
        except (EOFError, KeyboardInterrupt, ConnectionResetError, BrokenPipeError):
            return
        try:
            if command == "collect":
                policy_state, encoder_state, unroll_len, teacher_forcing = payload
                policy.load_state_dict({k: torch.from_numpy(v) for k, v in policy_state.items()})
                encoder.load_state_dict({k: torch.from_numpy(v) for k, v in encoder_state.items()})
                with torch.inference_mode():  # ~10% faster acting; its tensors never reach autograd here
                    chunk = collector.collect(policy, encoder, unroll_len, teacher_forcing)
                chunk["memory"] = chunk["memory"].numpy()  # see _snapshot
                conn.send(("ok", chunk))
            elif command == "close":
                return
        except (KeyboardInterrupt, ConnectionResetError, BrokenPipeError):
            return  # the parent is gone: nobody to send to
        except Exception:
            conn.send(("error", traceback.format_exc()))


def _snapshot(module: torch.nn.Module) -> dict[str, np.ndarray]:
    """The weights as numpy copies, for a worker. Not tensors: torch pickles a tensor for another
    process by moving its storage to a new shared-memory segment, one per tensor, which took
    ~40x longer than pickling the same numbers as arrays (62 tensors of the default MoP policy);
    and a copy, so the learner's next optimizer step cannot reach weights a worker still loads."""
    return {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}


class ParallelCollector:
    """`num_envs` training envs split over `num_workers` processes (0 or 1: this process).
    task_id: a level, or a comma list of levels whose envs are shared out by `task_weights`
    (babyai_env.env_levels: interleaved, so every worker's slice holds a mix).

    `submit` sends the current weights to every worker, which acts for `unroll_len` steps; `result`
    waits for the chunks and merges them in env order. Between the two the caller may compute
    (the learner overlaps its update with the next collection). Use as a context manager so
    workers are always shut down."""

    def __init__(
        self,
        task_id: str,
        num_envs: int,
        num_workers: int,
        run_seed: int,
        max_steps: int | None,
        obs_encoding: str,
        policy_factory: Any,
        encoder_factory: Any,
        teacher_forcing: float = 0.0,
        path_ratio_fraction: float = 0.0,
        slot_states: list[dict] | None = None,
        fast_env: bool = True,
        task_weights: list[float] | None = None,
        key_layout_share: float | None = None,
        record_targets: bool = False,
        record_subgoals: bool = False,
        bot_undo: bool = True,
        record_keys: bool = False,
        bot_revision: int = BOT_REVISION,
        record_doors: bool = False,
        record_door_places: bool = False,
    ):
        levels = check_task_ids(task_id)
        self.env_levels = env_levels(levels, num_envs, task_weights) if len(levels) > 1 else None
        num_workers = max(1, min(num_workers, num_envs))
        bounds = np.linspace(0, num_envs, num_workers + 1).round().astype(int)
        self.slices = [list(range(bounds[w], bounds[w + 1])) for w in range(num_workers)]
        common = dict(
            run_seed=run_seed,
            max_steps=max_steps,
            obs_encoding=obs_encoding,
            teacher_forcing=teacher_forcing,
            path_ratio_fraction=path_ratio_fraction,
            fast_env=fast_env,
            key_layout_share=key_layout_share,
            record_targets=record_targets,
            record_subgoals=record_subgoals,
            bot_undo=bot_undo,
            record_keys=record_keys,
            bot_revision=bot_revision,
            record_doors=record_doors,
            record_door_places=record_door_places,
        )
        self.local: Collector | None = None
        self.cpu_actor: tuple[torch.nn.Module, torch.nn.Module] | None = None  # see _actor
        self.workers: list[tuple[Any, Any]] = []
        self.pending: Any = None
        states = slot_states or [None] * num_envs

        def tasks(indices: list[int]) -> str | list[str]:
            return task_id if self.env_levels is None else [self.env_levels[i] for i in indices]

        if num_workers == 1:
            self.local = Collector(
                tasks(self.slices[0]), env_indices=self.slices[0], slot_states=slot_states, **common
            )
            return
        ctx = mp.get_context("spawn")  # fork after torch has started threads can deadlock
        for indices in self.slices:
            kwargs = dict(
                task_id=tasks(indices),
                env_indices=indices,
                slot_states=None if slot_states is None else [states[i] for i in indices],
                **common,
            )
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=_worker_main, args=(child, kwargs, policy_factory, encoder_factory), daemon=True
            )
            proc.start()
            child.close()
            self.workers.append((proc, parent))
        for w in range(len(self.workers)):
            self._receive(w)  # wait until every worker has built its envs (or report why not)

    def _receive(self, w: int) -> Any:
        proc, conn = self.workers[w]
        try:
            status, payload = conn.recv()
        except EOFError:
            self.close()
            raise RuntimeError(f"env worker {w} died (exit code {proc.exitcode})") from None
        if status == "error":
            self.close()
            raise RuntimeError(f"env worker {w} failed:\n{payload}")
        return payload

    def submit(
        self,
        policy: torch.nn.Module,
        encoder: torch.nn.Module,
        unroll_len: int,
        teacher_forcing: float | None = None,
    ) -> None:
        """Start collecting the next chunk with (a snapshot of) the current weights."""
        if self.pending is not None:
            raise RuntimeError("submit() called twice without result()")
        if self.local is not None:  # in-process: nothing runs in the background, collect in result()
            self.pending = (
                copy.deepcopy(policy.state_dict()),
                copy.deepcopy(encoder.state_dict()),
                policy,
                encoder,
                unroll_len,
                teacher_forcing,
            )
            return
        self.pending = True
        payload = ("collect", (_snapshot(policy), _snapshot(encoder), unroll_len, teacher_forcing))
        for _, conn in self.workers:
            conn.send(payload)

    def result(self) -> dict:
        """The submitted chunk: envs concatenated in index order; `slot_states` for --resume."""
        if self.pending is None:
            raise RuntimeError("result() called without submit()")
        pending, self.pending = self.pending, None
        if self.local is not None:
            policy_state, encoder_state, policy, encoder, unroll_len, teacher_forcing = pending
            actor = self._actor(policy, encoder)
            if actor is not None:  # a learner on a GPU: act on the CPU, as the workers do
                actor[0].load_state_dict(policy_state)
                actor[1].load_state_dict(encoder_state)
                return self.local.collect(*actor, unroll_len, teacher_forcing)
            current = (copy.deepcopy(policy.state_dict()), copy.deepcopy(encoder.state_dict()))
            policy.load_state_dict(policy_state)  # act with the weights given at submit()
            encoder.load_state_dict(encoder_state)
            try:
                return self.local.collect(policy, encoder, unroll_len, teacher_forcing)
            finally:
                policy.load_state_dict(current[0])
                encoder.load_state_dict(current[1])
        chunks = [self._receive(w) for w in range(len(self.workers))]
        for chunk in chunks:
            chunk["memory"] = torch.from_numpy(chunk["memory"])
        return merge_chunks(chunks)

    def _actor(
        self, policy: torch.nn.Module, encoder: torch.nn.Module
    ) -> tuple[torch.nn.Module, torch.nn.Module] | None:
        """None for a learner on the CPU (in-process collection acts with its own modules, their
        weights swapped for the chunk); CPU copies of a learner on another device, made once.
        Acting is one small step per env step, where a GPU's launch and transfer costs outweigh
        its arithmetic, and the numpy step needs the weights on the CPU (docs/reference.md 'GPUs')."""
        if module_device(policy).type == "cpu" and module_device(encoder).type == "cpu":
            return None
        if self.cpu_actor is None:
            self.cpu_actor = (copy.deepcopy(policy).cpu(), copy.deepcopy(encoder).cpu())
        return self.cpu_actor

    def collect(
        self,
        policy: torch.nn.Module,
        encoder: torch.nn.Module,
        unroll_len: int,
        teacher_forcing: float | None = None,
    ) -> dict:
        self.submit(policy, encoder, unroll_len, teacher_forcing)
        return self.result()

    def close(self) -> None:
        for _, conn in self.workers:
            try:
                conn.send(("close", None))
            except (OSError, BrokenPipeError):
                pass
        for proc, conn in self.workers:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
                proc.join()
            conn.close()
        self.workers = []

    def __enter__(self) -> ParallelCollector:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
