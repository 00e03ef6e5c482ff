"""BabyAI environments for online imitation: construction, seeds, observation encoding, the bot
wrapper and its failure handling, and the (optionally multi-process) step collector.

Everything that training and evaluation must agree on lives here, once:
- `make_env(task_id, max_steps)`: a minigrid level, with the UnlockPickup episode-limit typo fixed;
- seed ranges: training episodes draw layouts from `train_episode_seed(...)` (>= 10**9), evaluation
  from `EVAL_SEED_START + k` (< 10**9), so no evaluation layout is ever trained on;
- `encode_obs`: the policy input, "raw" (the seed's 152 numbers) or "onehot" (per image channel);
- `SafeBot`: minigrid's `BabyAIBot` with a bounded subgoal stack and a watchdog, so a bot that raises
  or would loop forever reports a failure instead of crashing or hanging the run;
- `Collector` / `ParallelCollector`: N envs, each labelled by its own bot at every step, acting with
  a copy of the current policy; worker processes each own a slice of the envs and return whole
  chunks of steps (numpy arrays) for the learner to replay with gradients.

Example:
    env = make_env("BabyAI-GoToLocal-v0"); env.reset(seed=EVAL_SEED_START)
    with ParallelCollector("BabyAI-GoToLocal-v0", num_envs=16, num_workers=2, run_seed=0, ...) as c:
        chunk = c.collect(policy, encoder, unroll_len=32)
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import io
import multiprocessing as mp
import signal
import threading
import traceback
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import minigrid  # noqa: F401  (registers the BabyAI-* ids with gymnasium)
import numpy as np
import torch
from minigrid.utils.baby_ai_bot import BabyAIBot

from mixture_of_experts import reset_memory

# ----------------------------------------------------------------------------- tasks and seeds

EVAL_SEED_START = 0  # evaluation layouts: EVAL_SEED_START + episode index, always < TRAIN_SEED_START
TRAIN_SEED_START = 10**9
_TRAIN_ENV_STRIDE = 10**7  # episodes one training env may run before colliding with the next env
_TRAIN_RUN_STRIDE = 10**10  # per run seed: room for 1000 envs

# minigrid 3.2.0 UnlockPickup tests `if max is None` instead of `max_steps`, so its intended default
# (8 * room_size**2 = 288) is never set and RoomGridLevel falls back to 72 steps.
_UPSTREAM_MAX_STEPS_FIX = {"BabyAI-UnlockPickup-v0": 288, "BabyAI-UnlockPickupDist-v0": 288}


def babyai_task_ids() -> list[str]:
    return sorted(k for k in gym.registry if k.startswith("BabyAI-"))


def check_task_id(task_id: str) -> str:
    """Return task_id if it is a registered BabyAI level, else raise ValueError with close matches."""
    ids = babyai_task_ids()
    if task_id in ids:
        return task_id
    close = difflib.get_close_matches(task_id, ids, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see babyai_env.babyai_task_ids()"
    raise ValueError(f"unknown task_id {task_id!r}{hint}")


def make_env(task_id: str, max_steps: int | None = None) -> Any:
    """A minigrid BabyAI level (unwrapped: we call the bot and read the grid directly).

    max_steps None means the level's own limit (with the UnlockPickup typo fixed)."""
    check_task_id(task_id)
    if max_steps is None:
        max_steps = _UPSTREAM_MAX_STEPS_FIX.get(task_id)
    kwargs = {} if max_steps is None else {"max_steps": int(max_steps)}
    return gym.make(task_id, **kwargs).unwrapped


def train_episode_seed(run_seed: int, env_index: int, episode_index: int) -> int:
    """Layout seed of training env `env_index`'s `episode_index`-th episode; never an eval seed."""
    if not 0 <= env_index < _TRAIN_RUN_STRIDE // _TRAIN_ENV_STRIDE:
        raise ValueError(f"env_index {env_index} out of range")
    episode_index %= _TRAIN_ENV_STRIDE
    return TRAIN_SEED_START + run_seed * _TRAIN_RUN_STRIDE + env_index * _TRAIN_ENV_STRIDE + episode_index


def render_layout(
    task_id: str, seed: int, max_steps: int | None = None, tile_size: int = 24
) -> tuple[np.ndarray, str]:
    """minigrid's own picture (RGB array, no view highlight) of the start layout of `seed`, and
    its mission: the level image beside routing heatmaps (one tile per grid cell)."""
    env = make_env(task_id, max_steps)
    obs = quiet_reset(env, seed)
    return env.get_frame(highlight=False, tile_size=tile_size), obs["mission"]


# ----------------------------------------------------------------------------- observations

OBS_ENCODINGS = ("raw", "onehot")
_CHANNEL_SIZES = (11, 6, 3)  # minigrid OBJECT_TO_IDX, COLOR_TO_IDX, STATE_TO_IDX


def obs_dim(encoding: str) -> int:
    if encoding == "raw":
        return 3 * 7 * 7 + 4 + 1  # 152, the seed's input_dim
    if encoding == "onehot":
        return sum(_CHANNEL_SIZES) * 7 * 7 + 4 + 1  # 985
    raise ValueError(f"obs_encoding must be one of {OBS_ENCODINGS}, got {encoding!r}")


def encode_obs(
    image: torch.Tensor, direction: torch.Tensor, carrying: torch.Tensor, encoding: str
) -> torch.Tensor:
    """image (..., 7, 7, 3) uint8, direction (...), carrying (...) -> float (..., obs_dim).

    raw: channel-first flattened integer codes (147) ⊕ direction one-hot (4) ⊕ carrying (1).
    onehot: each of the three channels one-hot per cell (980) ⊕ direction one-hot ⊕ carrying."""
    image = torch.as_tensor(image)
    lead = image.shape[:-3]
    direction_1h = torch.nn.functional.one_hot(torch.as_tensor(direction).long(), 4).float()
    carry = torch.as_tensor(carrying).float().unsqueeze(-1)
    if encoding == "raw":
        img = image.float().movedim(-1, -3).reshape(*lead, 147)  # (..., 3, 7, 7) -> (..., 147)
    elif encoding == "onehot":
        img = image.long()
        parts = [
            torch.nn.functional.one_hot(img[..., c].clamp(0, n - 1), n).float()
            for c, n in enumerate(_CHANNEL_SIZES)
        ]
        img = torch.cat(parts, dim=-1).reshape(*lead, 7 * 7 * sum(_CHANNEL_SIZES))
    else:
        raise ValueError(f"obs_encoding must be one of {OBS_ENCODINGS}, got {encoding!r}")
    return torch.cat([img, direction_1h, carry], dim=-1)


# ----------------------------------------------------------------------------- the bot

BOT_MAX_STACK = 100  # normal episodes stay below a depth of ~20 (measured on GoToImpUnlock)
BOT_TIMEOUT_S = 5.0  # wall-clock backstop for any other hang


class BotFailure(Exception):
    """The bot could not label this state (it raised, its plan diverged, or it timed out)."""


class _BoundedStack(list):
    # minigrid's BabyAIBot.replan loops `while self.stack` and some subgoals keep pushing new
    # subgoals (e.g. GoToImpUnlock seeds 6, 14, 35): the stack grows without end and replan never
    # returns. Bounding the stack turns that into an exception within milliseconds.
    def append(self, item: Any) -> None:
        if len(self) >= BOT_MAX_STACK:
            raise BotFailure(f"subgoal stack exceeded {BOT_MAX_STACK}")
        super().append(item)


def _on_alarm(signum: int, frame: Any) -> None:
    raise BotFailure(f"replan took longer than {BOT_TIMEOUT_S}s")


class _FastBot(BabyAIBot):
    """BabyAIBot with `_process_obs` vectorised (same result; the original loops over the 49 view
    cells in Python, ~20% of collection time). A test checks labels match the original's."""

    def _process_obs(self) -> None:
        env = self.mission.unwrapped
        _, vis_mask = env.gen_obs_grid()
        view_size = env.agent_view_size
        f_vec, r_vec = np.asarray(env.dir_vec), np.asarray(env.right_vec)
        top_left = np.asarray(env.agent_pos) + f_vec * (view_size - 1) - r_vec * (view_size // 2)
        vis_i, vis_j = np.nonzero(vis_mask)
        cells = top_left - np.outer(vis_j, f_vec) + np.outer(vis_i, r_vec)  # (n, 2) world coords
        inside = (
            (cells[:, 0] >= 0)
            & (cells[:, 0] < self.vis_mask.shape[0])
            & (cells[:, 1] >= 0)
            & (cells[:, 1] < self.vis_mask.shape[1])
        )
        self.vis_mask[cells[inside, 0], cells[inside, 1]] = True


class SafeBot:
    """BabyAIBot that never crashes, hangs or leaks a thread: `label()` returns an action or None."""

    def __init__(self, env: Any):
        self.failure: str | None = None
        try:
            self.bot = _FastBot(env)
            self.bot.stack = _BoundedStack(self.bot.stack)
        except Exception as e:  # an instruction the bot cannot parse: a layout it cannot solve
            self.bot = None
            self.failure = f"{type(e).__name__}: {e}"

    def label(self, action_taken: int | None) -> int | None:
        if self.bot is None:
            return None
        use_alarm = threading.current_thread() is threading.main_thread()
        if use_alarm:  # SIGALRM only works on the main thread; notebooks fall back to the stack bound
            previous = signal.signal(signal.SIGALRM, _on_alarm)
            signal.setitimer(signal.ITIMER_REAL, BOT_TIMEOUT_S)
        try:
            return int(self.bot.replan(action_taken))
        except Exception as e:  # DisappearedBoxError, BotFailure, assertion errors inside minigrid
            self.failure = f"{type(e).__name__}: {e}"
            self.bot = None  # its internal state is unusable after a failure
            return None
        finally:
            if use_alarm:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, previous)


def bot_path_length(task_id: str, seed: int, max_steps: int | None = None) -> int | None:
    """Steps the bot needs to solve the layout of `seed` (the path_ratio denominator).

    None if the bot fails or does not finish with reward > 0. The bot explores a partially
    observed grid, so this is the bot's path, not the shortest one."""
    env = make_env(task_id, max_steps)
    quiet_reset(env, seed)
    bot = SafeBot(env)
    for steps in range(1, env.max_steps + 1):
        action = bot.label(None)
        if action is None:
            return None
        _, reward, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            return steps if terminated and reward > 0 else None
    return None


# ----------------------------------------------------------------------------- collection


class ViewCache:
    """Serve minigrid's second computation of the agent's view from the first.

    minigrid builds the agent's partial view twice per step: env.step for the observation, and the
    bot's replan (`_process_obs`) again for the same, unchanged state. That view is about 40% of
    collection time. Installed on one env instance, this returns the cached view until
    `invalidate()` is called, which the owner does before every env.step / env.reset.
    """

    def __init__(self, env: Any):
        self.compute = env.gen_obs_grid
        self.version = 0
        self.cached: tuple[int, Any] | None = None
        env.gen_obs_grid = self

    def invalidate(self) -> None:
        self.version += 1

    def __call__(self, agent_view_size: int | None = None) -> Any:
        if agent_view_size is not None:
            return self.compute(agent_view_size)
        if self.cached is None or self.cached[0] != self.version:
            self.cached = (self.version, self.compute())
        return self.cached[1]


def quiet_reset(env: Any, seed: int) -> dict:
    """env.reset(seed=seed) without minigrid's 'Sampling rejected' chatter on stdout."""
    with contextlib.redirect_stdout(io.StringIO()):
        obs, _ = env.reset(seed=seed)
    return obs


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


class _Slot:
    """One env, its bot and its episode bookkeeping."""

    def __init__(self, task_id: str, env_index: int, run_seed: int, max_steps: int | None, rng_seed: int):
        self.task_id, self.env_index, self.run_seed, self.max_steps = task_id, env_index, run_seed, max_steps
        self.env = make_env(task_id, max_steps)
        self.view = ViewCache(self.env)
        self.episode_index = 0
        self.rng = np.random.default_rng(rng_seed)  # teacher forcing and path-ratio sampling

    def start_episode(self, path_ratio_fraction: float) -> None:
        self.seed = train_episode_seed(self.run_seed, self.env_index, self.episode_index)
        self.episode_index += 1
        self.view.invalidate()
        self.obs = quiet_reset(self.env, self.seed)
        self.bot = SafeBot(self.env)
        self.prev_action: int | None = None
        self.steps = 0
        self.measure_bot_path = path_ratio_fraction > 0 and self.rng.random() < path_ratio_fraction

    def finish(self, success: bool, failure: str | None) -> Episode:
        bot_steps = None
        if self.measure_bot_path and success:
            bot_steps = bot_path_length(self.task_id, self.seed, self.max_steps)
        return Episode(
            self.env_index, self.seed, self.steps, success, failure, bot_steps, self.obs["mission"]
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
    """

    def __init__(
        self,
        task_id: str,
        env_indices: list[int],
        run_seed: int,
        max_steps: int | None,
        obs_encoding: str,
        teacher_forcing: float = 0.0,
        path_ratio_fraction: float = 0.0,
        slot_states: list[dict] | None = None,
    ):
        self.obs_encoding, self.teacher_forcing = obs_encoding, teacher_forcing
        self.path_ratio_fraction = path_ratio_fraction
        self.slots = [
            _Slot(task_id, i, run_seed, max_steps, rng_seed=run_seed * 1_000_003 + i) for i in env_indices
        ]
        for k, slot in enumerate(self.slots):
            if slot_states is not None:
                slot.load_state(slot_states[k])
            slot.start_episode(path_ratio_fraction)
        self.memory: torch.Tensor | None = None

    def state(self) -> list[dict]:
        return [slot.state() for slot in self.slots]

    @torch.no_grad()
    def collect(self, policy: torch.nn.Module, encoder: torch.nn.Module, unroll_len: int) -> dict:
        """Act for `unroll_len` steps in every env; every state is labelled by its bot."""
        n, T = len(self.slots), unroll_len
        if self.memory is None or self.memory.shape[-1] != policy.memory_size:
            self.memory = policy.init_memory(n)
        policy.eval()
        encoder.eval()
        lang_cache: dict[str, torch.Tensor] = {}  # weights are fixed during a chunk
        chunk = {
            "image": np.zeros((T, n, 7, 7, 3), np.uint8),
            "direction": np.zeros((T, n), np.int64),
            "carrying": np.zeros((T, n), np.uint8),
            "mission_index": np.zeros((T, n), np.int64),
            "label": np.zeros((T, n), np.int64),
            "label_mask": np.zeros((T, n), bool),
            "done": np.zeros((T, n), bool),
            "memory": self.memory.clone(),
            "missions": [],
            "episodes": [],
        }
        mission_ids: dict[str, int] = {}
        for t in range(T):
            missions = [slot.obs["mission"] for slot in self.slots]
            for k, slot in enumerate(self.slots):
                chunk["image"][t, k] = slot.obs["image"]
                chunk["direction"][t, k] = slot.obs["direction"]
                chunk["carrying"][t, k] = slot.env.carrying is not None
                chunk["mission_index"][t, k] = mission_ids.setdefault(missions[k], len(mission_ids))
                label = slot.bot.label(slot.prev_action)
                chunk["label_mask"][t, k] = label is not None
                chunk["label"][t, k] = -1 if label is None else label
            new = [m for m in dict.fromkeys(missions) if m not in lang_cache]
            if new:
                lang_cache.update(zip(new, encoder(new)))
            obs = encode_obs(
                torch.from_numpy(chunk["image"][t]),
                torch.from_numpy(chunk["direction"][t]),
                torch.from_numpy(chunk["carrying"][t]),
                self.obs_encoding,
            )
            lang = torch.stack([lang_cache[m] for m in missions])
            out = policy.step(obs, lang, self.memory)
            actions = out.logits.argmax(-1).tolist()
            for k, slot in enumerate(self.slots):
                label = int(chunk["label"][t, k])
                if self.teacher_forcing > 0 and slot.rng.random() < self.teacher_forcing and label >= 0:
                    actions[k] = label
                if label < 0:  # the bot failed: no label enters the loss; cut the episode short
                    chunk["episodes"].append((t, slot.finish(False, slot.bot.failure)))
                    chunk["done"][t, k] = True
                    slot.start_episode(self.path_ratio_fraction)
                    continue
                slot.view.invalidate()
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
        return chunk


def merge_chunks(chunks: list[dict]) -> dict:
    """Concatenate worker chunks along the env axis (workers hold consecutive env slices)."""
    if len(chunks) == 1:
        return chunks[0]
    merged: dict[str, Any] = {"missions": [], "episodes": [], "slot_states": []}
    offset_index = []
    for c in chunks:
        remap = np.array([len(merged["missions"]) + i for i in range(len(c["missions"]))], np.int64)
        merged["missions"].extend(c["missions"])
        offset_index.append(remap[c["mission_index"]] if len(remap) else c["mission_index"])
        merged["episodes"].extend(c["episodes"])
        merged["slot_states"].extend(c["slot_states"])
    for key in ("image", "direction", "carrying", "label", "label_mask", "done"):
        merged[key] = np.concatenate([c[key] for c in chunks], axis=1)
    merged["mission_index"] = np.concatenate(offset_index, axis=1)
    merged["memory"] = torch.cat([c["memory"] for c in chunks])
    # Finished episodes in (step, env) order, so logs do not depend on the worker split.
    merged["episodes"].sort(key=lambda te: (te[0], te[1].env_index))
    return merged


def _worker_main(conn: Any, collector_kwargs: dict, policy_factory: Any, encoder_factory: Any) -> None:
    torch.set_num_threads(1)
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
        except (EOFError, KeyboardInterrupt):
            return
        try:
            if command == "collect":
                policy_state, encoder_state, unroll_len = payload
                policy.load_state_dict(policy_state)
                encoder.load_state_dict(encoder_state)
                conn.send(("ok", collector.collect(policy, encoder, unroll_len)))
            elif command == "close":
                return
        except KeyboardInterrupt:
            return
        except Exception:
            conn.send(("error", traceback.format_exc()))


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


class ParallelCollector:
    """`num_envs` training envs split over `num_workers` processes (0 or 1: this process).

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
    ):
        num_workers = max(1, min(num_workers, num_envs))
        bounds = np.linspace(0, num_envs, num_workers + 1).round().astype(int)
        self.slices = [list(range(bounds[w], bounds[w + 1])) for w in range(num_workers)]
        common = dict(
            task_id=task_id,
            run_seed=run_seed,
            max_steps=max_steps,
            obs_encoding=obs_encoding,
            teacher_forcing=teacher_forcing,
            path_ratio_fraction=path_ratio_fraction,
        )
        self.local: Collector | None = None
        self.workers: list[tuple[Any, Any]] = []
        self.pending: Any = None
        states = slot_states or [None] * num_envs
        if num_workers == 1:
            self.local = Collector(env_indices=self.slices[0], slot_states=slot_states, **common)
            return
        ctx = mp.get_context("spawn")  # fork after torch has started threads can deadlock
        for indices in self.slices:
            kwargs = dict(
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

    def submit(self, policy: torch.nn.Module, encoder: torch.nn.Module, unroll_len: int) -> None:
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
            )
            return
        self.pending = True
        # Send copies: torch pickles tensors for worker processes by moving their storage to shared
        # memory, so sending state_dict() itself would let the learner's next optimizer step change
        # the weights a worker is still loading (an async run was then not reproducible).
        payload = ("collect", (_snapshot(policy), _snapshot(encoder), unroll_len))
        for _, conn in self.workers:
            conn.send(payload)

    def result(self) -> dict:
        """The submitted chunk: envs concatenated in index order; `slot_states` for --resume."""
        if self.pending is None:
            raise RuntimeError("result() called without submit()")
        pending, self.pending = self.pending, None
        if self.local is not None:
            policy_state, encoder_state, policy, encoder, unroll_len = pending
            current = (copy.deepcopy(policy.state_dict()), copy.deepcopy(encoder.state_dict()))
            policy.load_state_dict(policy_state)  # act with the weights given at submit()
            encoder.load_state_dict(encoder_state)
            try:
                return self.local.collect(policy, encoder, unroll_len)
            finally:
                policy.load_state_dict(current[0])
                encoder.load_state_dict(current[1])
        return merge_chunks([self._receive(w) for w in range(len(self.workers))])

    def collect(self, policy: torch.nn.Module, encoder: torch.nn.Module, unroll_len: int) -> dict:
        self.submit(policy, encoder, unroll_len)
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
