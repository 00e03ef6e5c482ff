"""The numbers of linear mode connectivity (LMC): the straight line between two policies' weights,
what a policy scores along it, the barriers on it and how alike the two route. lmc.py runs the
experiment (parent, forks, children) and its `compare`; mop/lmc_plots.py draws these tables.

- Interpolation θ(α) = (1−α)·θ_A + α·θ_B (torch.lerp: exact at α = 0 and 1, and θ_A when θ_A =
  θ_B) over evenly spaced α in [0, 1], every parameter including the routers and the mission
  encoder (`interpolate`; `check_pair` refuses two checkpoints of other levels or architectures).
- Evaluation (`Evaluator`): for each α, on one fixed set of evaluation envs (layouts
  EVAL_SEED_START + 0..N−1, envs built once and reused, policies swapped) the stage's episode
  metrics (eval_mop's: success rate with its 95% Wilson interval, path ratio, mean LPC, per-layer
  expert usage) and, on a held-out labelled set (`heldout_set`: bot-driven episodes on evaluation
  seeds EVAL_SEED_START + k, saved once per experiment), the mean cross-entropy against the bot's
  labels and the accuracy (`heldout_pass`: teacher-forced, memory from each episode's reset).
- Instability (numbers from mop/lmc_stats.py, `instability_table`): both barrier forms of the
  held-out loss f and of success (sign flipped: the drop), named barrier_line (Entezari et al.
  2022: max over α of f(α) − ((1−α)·f(0) + α·f(1))) and barrier_mean (Frankle et al. 2020 and seed
  003: max over α of f(α) − (f(0) + f(1))/2), each with its α, its signed interior extreme and its
  percentile bootstrap interval (units: held-out episodes for the loss, layouts for success); the
  success drop at the midpoint as a paired per-layout statistic with its interval and an exact sign
  test. Identical children give exactly 0 for both forms.
- Routing agreement (`routing_agreement`), on the held-out labelled states: per layer, the mean
  Jensen–Shannon divergence (bits, in [0, 1]) between two router distributions and the fraction of
  states whose dominant expert agrees, between the children (α = 0 vs 1) and between each child
  and θ(α). Heterogeneous expert sizes make experts identifiable: no permutation matching. A layer
  whose router gives >= 99% of its weight to the same expert in both children agrees trivially: it
  is marked, and the means are also given over the other layers.

Tables: the interpolation table (COLUMNS: one row per fork × pair × α × metric: value, ci_low,
ci_high), the units of each fork pair (UNIT_KEYS, an .npz: success per layout and cross-entropy
per held-out episode at every α, what the intervals resample), the instability table (one row per
fork pair), the fork summary (one row per fork: means and t intervals across pairs) and the
correlations (Spearman ρ with permutation p). An analysed folder holds them as interpolation.csv,
instability.csv, forks.csv and correlations.csv (`write_tables` writes; `load_results`,
`load_summaries` read them back). Reads checkpoints and heldout.npz; writes heldout.npz (first use),
the units and the CSVs.

    ev = Evaluator(task_id, max_steps, 100, 16, heldout_set(path, task_id, 100, max_steps), play)
    table, units = interpolation_table(ckpt_a, ckpt_b, alpha_values(11), ev, "a.pt")
    instability_table(table, {(0, 0): units}, bootstrap=1000)
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from mixture_of_experts import build_policy
from mop import lmc_stats
from mop.babyai_env import EVAL_SEED_START, encode_obs, make_env
from mop.bot_demos import bot_episode
from mop.bot_paths import BotPaths
from mop.conditions import WEIGHT_KEYS
from mop.experiment import ConfigError, load_policy
from mop.inference import holm_over_asked
from mop.numpy_policy import one_thread
from mop.replay_buffer import BufferError, EpisodeBuffer, StoredEpisode, episodes_as_chunk
from mop.runs import atomic_write

# The files of an analysed experiment (or compare) folder.
CONFIG_FILE, HELDOUT_FILE = "config.json", "heldout.npz"
INTERPOLATION_FILE, INSTABILITY_FILE = "interpolation.csv", "instability.csv"
FORKS_FILE, CORRELATIONS_FILE = "forks.csv", "correlations.csv"
COLUMNS = ["fork", "pair", "fork_point", "fork_update", "alpha", "metric", "value", "ci_low", "ci_high"]
UNIT_KEYS = ("alphas", "success", "ce_sum", "labels")
DEFAULT_BOOTSTRAP = 1000
# A layer whose router gives at least this share of its weight to one expert in both children
# (the same expert) agrees trivially: its agreement says nothing about the children.
TRIVIAL_SHARE = 0.99
PAIRED_COLUMNS = (
    "midpoint_alpha",
    "success_drop_mid",
    "success_drop_mid_ci_low",
    "success_drop_mid_ci_high",
    "success_drop_mid_n_worse",
    "success_drop_mid_n_better",
    "success_drop_mid_p",
)
# Averaged over a fork's child pairs (fork_summary), and correlated with the barriers.
SUMMARY_METRICS = (
    "ce_barrier_line",
    "ce_barrier_mean",
    "success_barrier_line",
    "success_barrier_mean",
    "success_drop_mid",
    "routing_js_mean_nontrivial",
    "routing_agreement_mean_nontrivial",
)
CORRELATED_X = ("routing_agreement_mean_nontrivial", "routing_js_mean_nontrivial", "fork_point")
CORRELATED_Y = ("ce_barrier_line", "ce_barrier_mean")
CORRELATION_COLUMNS = [
    "x", "y", "unit", "n", "n_forks", "rho", "p", "p_min", "p_method", "p_holm", "family", "note"
]  # fmt: skip
# Beside each barrier's percentile interval (_ci_low, _ci_high): lmc_stats.barrier_test's one-sided
# p of "barrier > 0" and its simultaneous t interval (clipped below at 0).
BARRIER_TEST_SUFFIXES = ("_p", "_t_ci_low", "_t_ci_high")
# The instability.csv columns every figure reads (load_results refuses a table without them).
INSTABILITY_COLUMNS = [
    "fork",
    "fork_point",
    "fork_update",
    "ce_barrier_line",
    "ce_barrier_mean",
    "success_barrier_line",
]
# What two checkpoints must share to be interpolated (plus identical parameter names and shapes):
# the keys that shape the weights, and those a checkpoint's config adds to a recipe's.
ARCHITECTURE_KEYS = ("policy_type", "num_actions", *WEIGHT_KEYS, "hidden_size")
# Episode metrics of eval_mop's that are not drawn along the line (counts, or success's interval,
# which goes into success_rate's ci_low/ci_high).
SKIPPED_METRICS = ("num_episodes", "bot_plan_failures", "success_ci_low", "success_ci_high")


class LMCError(ConfigError):
    """A bad LMC setting, folder or checkpoint pair; the message names it (one line)."""


def check_evaluation(
    alphas: int, eval_episodes: int, eval_envs: int, heldout_episodes: int, ends: str
) -> None:
    """LMCError for evaluation settings that cannot be run; `ends` names the line's two ends."""
    if alphas < 2:
        raise LMCError(f"--alphas must be at least 2 ({ends}), got {alphas}")
    for name, value in (
        ("eval_episodes", eval_episodes),
        ("eval_envs", eval_envs),
        ("heldout_episodes", heldout_episodes),
    ):
        if not 1 <= value <= 1_000_000:
            raise LMCError(f"--{name} must be a whole number from 1 to 1,000,000, got {value}")


def alpha_values(count: int) -> np.ndarray:
    """`count` evenly spaced α in [0, 1], exactly 0 and 1 at the ends."""
    return np.linspace(0.0, 1.0, count)


# ----------------------------------------------------------------------------- the line


def interpolate(a: Any, b: Any, alpha: float, where: str = "") -> Any:
    """θ(α) = (1−α)·a + α·b over nested dicts of tensors (torch.lerp: exactly a at α = 0, b at
    α = 1, and a when a = b). Non-float entries must be equal; LMCError names the first that is not."""
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            odd = sorted(set(a) ^ set(b), key=str)[0]
            raise LMCError(f"the checkpoints differ in architecture: {where}{odd} is in one only")
        return {k: interpolate(a[k], b[k], alpha, f"{where}{k}.") for k in a}
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        if a.shape != b.shape:
            raise LMCError(
                f"the checkpoints differ in architecture: {where.rstrip('.')} is {tuple(a.shape)} vs {tuple(b.shape)}"
            )
        if a.is_floating_point():
            return torch.lerp(a, b.to(a.dtype), float(alpha))
        if not torch.equal(a, b):
            raise LMCError(
                f"the checkpoints differ in {where.rstrip('.')} (not a float tensor: cannot interpolate)"
            )
        return a
    if a != b:
        raise LMCError(f"the checkpoints differ in {where.rstrip('.')}: {a!r} vs {b!r}")
    return a


def check_pair(ckpt_a: dict, ckpt_b: dict, name_a: str = "a", name_b: str = "b") -> None:
    """Refuse two checkpoints that cannot be interpolated: other levels or architectures."""
    ca, cb = ckpt_a["config"], ckpt_b["config"]
    if ca.get("task_id") != cb.get("task_id"):
        raise LMCError(
            f"--{name_a} is trained on {ca.get('task_id')}, --{name_b} on {cb.get('task_id')}: compare one level"
        )
    for key in ARCHITECTURE_KEYS:
        if ca.get(key) != cb.get(key):
            raise LMCError(
                f"the checkpoints differ in architecture: {key} is {ca.get(key)!r} vs {cb.get(key)!r}"
            )
    interpolate(ckpt_a["policy_state_dict"], ckpt_b["policy_state_dict"], 0.0, "policy ")
    interpolate(ckpt_a.get("encoder_state"), ckpt_b.get("encoder_state"), 0.0, "mission encoder ")


# ----------------------------------------------------------------------------- held-out labelled set


def make_heldout(task_id: str, count: int, max_steps: int | None) -> tuple[EpisodeBuffer, int]:
    """`count` bot-driven labelled episodes on evaluation seeds EVAL_SEED_START + k (layouts the
    bot fails on or does not solve are skipped and counted); (buffer, skipped), counted by a progress bar."""
    from mop.progress import progress_bar

    env = make_env(task_id, max_steps)
    buffer = EpisodeBuffer(count, task_id)
    skipped, k = 0, 0
    with progress_bar(count, "held-out bot episodes", leave=False) as bar:
        while len(buffer) < count:
            if k >= 10 * count + 100:
                raise LMCError(f"the bot solved only {len(buffer)} of {k} evaluation layouts of {task_id}")
            episode, _ = bot_episode(env, EVAL_SEED_START + k)
            k += 1
            if episode is None:
                skipped += 1
            else:
                buffer.extend([episode])
                bar.update(1)
    return buffer, skipped


def heldout_set(path: Path, task_id: str, count: int, max_steps: int | None) -> list[StoredEpisode]:
    """The held-out episodes saved at `path`, generated (and saved) on first use."""
    if path.is_file():
        try:
            buffer, meta = EpisodeBuffer.load(path, task_id)
        except BufferError as e:
            raise LMCError(str(e)) from None
        if len(buffer) == count and meta.get("max_steps") == max_steps:
            return list(buffer.episodes)
    buffer, skipped = make_heldout(task_id, count, max_steps)
    buffer.save(path, heldout=True, skipped=skipped, max_steps=max_steps, eval_seed_start=EVAL_SEED_START)
    return list(buffer.episodes)


class HeldOut(NamedTuple):
    """A teacher-forced pass over the held-out episodes."""

    metrics: dict  # heldout_ce (nats per labelled step), heldout_accuracy
    weights: list[np.ndarray]  # router weights per layer at every labelled state, (N, E) each
    ce_sum: np.ndarray  # (episodes,) summed cross-entropy of each episode's labelled steps
    labels: np.ndarray  # (episodes,) labelled steps of each episode
    correct: np.ndarray  # (episodes,) labelled steps whose argmax is the label
    step_ce: list[np.ndarray]  # per episode, the cross-entropy of each labelled step, in order
    step_correct: list[np.ndarray]  # per episode, whether each labelled step's argmax is its label
    step_argmax: list[np.ndarray]  # per episode, the policy's argmax action at each labelled step


@torch.no_grad()
def heldout_detail(
    policy: torch.nn.Module,
    encoder: torch.nn.Module,
    episodes: Sequence[StoredEpisode],
    obs_encoding: str,
    batch_size: int = 64,
) -> HeldOut:
    """Teacher-forced pass over the held-out episodes (memory from each reset), states in the same
    order for every policy; per episode too, for the bootstrap over episodes."""
    ce_parts, label_parts, correct_parts = [], [], []
    step_ce: list[np.ndarray] = []
    step_correct: list[np.ndarray] = []
    step_argmax: list[np.ndarray] = []
    weights: list[list[np.ndarray]] = []
    for start in range(0, len(episodes), batch_size):
        chunk = episodes_as_chunk(list(episodes[start : start + batch_size]))
        obs = encode_obs(
            torch.from_numpy(chunk["image"]),
            torch.from_numpy(chunk["direction"]),
            torch.from_numpy(chunk["carrying"]),
            obs_encoding,
        )  # (L, B, obs_dim)
        lang = encoder(chunk["missions"])[torch.from_numpy(chunk["mission_index"])]  # (L, B, lang_dim)
        memory = policy.init_memory(obs.shape[1])
        out = policy.forward_sequence(obs, lang, memory, torch.from_numpy(chunk["done"]))
        mask = torch.from_numpy(chunk["label_mask"])  # (L, B)
        labels = torch.from_numpy(chunk["label"])
        logits = out.logits.double()
        ce = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none").view(mask.shape)
        ce_parts.append((ce * mask).sum(0).numpy())  # (B,)
        label_parts.append(mask.sum(0).numpy())
        argmax = logits.argmax(-1)
        right = (argmax == labels) & mask
        correct_parts.append(right.sum(0).numpy())
        for b in range(mask.shape[1]):
            step_ce.append(ce[:, b][mask[:, b]].numpy())
            step_correct.append(right[:, b][mask[:, b]].numpy())
            step_argmax.append(argmax[:, b][mask[:, b]].numpy())
        for k, w in enumerate(out.router_weights):
            if len(weights) <= k:
                weights.append([])
            weights[k].append(w[mask].double().numpy())  # (n, E)
    ce_sum, counts = np.concatenate(ce_parts), np.concatenate(label_parts).astype(np.int64)
    correct = np.concatenate(correct_parts).astype(np.int64)
    count = int(counts.sum())
    metrics = {"heldout_ce": float(ce_sum.sum()) / count, "heldout_accuracy": int(correct.sum()) / count}
    return HeldOut(
        metrics,
        [np.concatenate(w) for w in weights],
        ce_sum,
        counts,
        correct,
        step_ce,
        step_correct,
        step_argmax,
    )


def heldout_pass(
    policy: torch.nn.Module,
    encoder: torch.nn.Module,
    episodes: Sequence[StoredEpisode],
    obs_encoding: str,
    batch_size: int = 64,
) -> tuple[dict, list[np.ndarray]]:
    """({heldout_ce, heldout_accuracy}, router weights per layer at every labelled state)."""
    held = heldout_detail(policy, encoder, episodes, obs_encoding, batch_size)
    return held.metrics, held.weights


# ----------------------------------------------------------------------------- evaluation along the line

# play(policy, encoder, config, evaluator) -> (the episode metrics of one policy on the evaluator's
# envs and layouts, its success per layout in layout order) (lmc.py passes eval_mop's run_episodes
# + compute_metrics: the package does not import the evaluation stage).
Play = Callable[[torch.nn.Module, torch.nn.Module, dict, "Evaluator"], tuple[dict, np.ndarray]]


class Evaluation(NamedTuple):
    """One policy on the evaluator's layouts and held-out set."""

    metrics: dict  # eval_mop's episode metrics + heldout_ce, heldout_accuracy
    weights: list[np.ndarray]  # held-out router weights per layer, (N, E) each
    success: np.ndarray  # (layouts,) bool, in layout order
    ce_sum: np.ndarray  # (held-out episodes,) summed cross-entropy
    labels: np.ndarray  # (held-out episodes,) labelled steps


class Evaluator:
    """One set of evaluation envs and layouts, and the held-out labelled set, for every policy
    evaluated: envs are built once and reused (each reset re-seeds its layout), bot path lengths
    are measured once per layout (`bot_paths`, in memory)."""

    def __init__(
        self,
        task_id: str,
        max_steps: int | None,
        episodes: int,
        num_envs: int,
        heldout: Sequence[StoredEpisode],
        play: Play,
    ):
        self.task_id, self.max_steps = task_id, max_steps
        self.episodes = list(range(episodes))
        self.num_envs = num_envs
        self.envs = [make_env(task_id, max_steps) for _ in range(min(num_envs, episodes))]
        self.bot_paths = BotPaths(task_id, max_steps)
        self.heldout = list(heldout)
        self.play = play
        self.seconds = 0.0

    def __call__(self, policy: torch.nn.Module, encoder: torch.nn.Module, config: dict) -> Evaluation:
        """One policy's metrics (as eval_mop.evaluate's), held-out router weights and per-unit results."""
        started = time.perf_counter()
        with one_thread():  # as eval_mop.evaluate: batches of <= num_envs rows
            metrics, success = self.play(policy, encoder, config, self)
            held = heldout_detail(policy, encoder, self.heldout, config["obs_encoding"])
        self.seconds += time.perf_counter() - started
        return Evaluation({**metrics, **held.metrics}, held.weights, success, held.ce_sum, held.labels)


def js_divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Jensen–Shannon divergence in bits (0..1) between the rows of two (N, E) distributions."""
    from scipy.special import rel_entr

    m = 0.5 * (p + q)
    return 0.5 * (rel_entr(p, m).sum(-1) + rel_entr(q, m).sum(-1)) / math.log(2)


def routing_agreement(p: np.ndarray, q: np.ndarray) -> tuple[float, float]:
    """(mean JS divergence in bits, fraction of states whose dominant expert agrees)."""
    return float(js_divergence(p, q).mean()), float((p.argmax(-1) == q.argmax(-1)).mean())


def _row(alpha: float, metric: str, value: float, ci: tuple[float, float] = (math.nan, math.nan)) -> dict:
    return {
        "alpha": round(float(alpha), 12),  # 0.3, not 0.30000000000000004
        "metric": metric,
        "value": value,
        "ci_low": ci[0],
        "ci_high": ci[1],
    }


def interpolation_rows(
    ckpt_a: dict, ckpt_b: dict, alphas: Sequence[float], evaluator: Evaluator, path_a: str = "a"
) -> tuple[list[dict], dict[str, np.ndarray]]:
    """Evaluate θ(α) for every α: long rows (alpha, metric, value, ci_low, ci_high), and the units
    (UNIT_KEYS: success per layout, cross-entropy and labels per held-out episode, per α)."""
    policy, encoder, config = load_policy(path_a, ckpt=ckpt_a)
    rows, heldout = [], {}
    success, ce_sum, labels = [], [], None
    from mop.progress import progress_bar

    for alpha in progress_bar(len(alphas), "θ(α) points", iterable=alphas, leave=False):
        policy = build_policy(config)
        policy.load_state_dict(interpolate(ckpt_a["policy_state_dict"], ckpt_b["policy_state_dict"], alpha))
        policy.eval()
        encoder.load_encoder_state(interpolate(ckpt_a["encoder_state"], ckpt_b["encoder_state"], alpha))
        encoder.eval()
        ev = evaluator(policy, encoder, config)
        heldout[alpha] = ev.weights
        success.append(np.asarray(ev.success, bool))
        ce_sum.append(ev.ce_sum)
        labels = ev.labels
        for metric, value in ev.metrics.items():
            if metric in SKIPPED_METRICS:
                continue
            is_success = metric == "success_rate"
            ci = (
                (ev.metrics["success_ci_low"], ev.metrics["success_ci_high"])
                if is_success
                else (math.nan,) * 2
            )
            rows.append(_row(alpha, metric, float(value), ci))
        for layer, w in enumerate(ev.weights):  # how much one expert takes: trivially agreeing layers
            usage = w.mean(0)
            rows.append(_row(alpha, f"top_weight_layer_{layer}", float(usage.max())))
            rows.append(_row(alpha, f"top_expert_layer_{layer}", float(usage.argmax())))
    ends = {"a": heldout[alphas[0]], "b": heldout[alphas[-1]]}
    for alpha in alphas:
        for layer, w in enumerate(heldout[alpha]):
            for child, ref in ends.items():
                js, agree = routing_agreement(w, ref[layer])
                rows.append(_row(alpha, f"js_to_{child}_layer_{layer}", js))
                rows.append(_row(alpha, f"agree_to_{child}_layer_{layer}", agree))
    units = {
        "alphas": np.asarray([round(float(a), 12) for a in alphas]),
        "success": np.stack(success).astype(np.uint8),
        "ce_sum": np.stack(ce_sum),
        "labels": np.asarray(labels, np.int64),
    }
    return rows, units


def interpolation_table(
    ckpt_a: dict,
    ckpt_b: dict,
    alphas: Sequence[float],
    evaluator: Evaluator,
    path_a: str = "a",
    fork: int = 0,
    fork_point: float = math.nan,
    fork_update: float = math.nan,
    pair: int = 0,
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """interpolation_rows as one fork pair's rows of the interpolation table (COLUMNS), and its units."""
    rows, units = interpolation_rows(ckpt_a, ckpt_b, alphas, evaluator, path_a)
    table = pd.DataFrame(rows)
    table.insert(0, "fork", fork)
    table.insert(1, "pair", pair)
    table.insert(2, "fork_point", fork_point)
    table.insert(3, "fork_update", fork_update)
    return table[COLUMNS], units


def save_units(path: Path, units: dict[str, np.ndarray]) -> Path:
    """One fork pair's units (UNIT_KEYS) as .npz, atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **{k: units[k] for k in UNIT_KEYS})

    return atomic_write(path, write)


def load_units(path: Path) -> dict[str, np.ndarray] | None:
    """The units saved at `path`; None when there are none (an evaluation from before they were
    kept: its intervals are not measured) or the file is unreadable."""
    try:
        with np.load(path) as data:
            return {k: data[k] for k in UNIT_KEYS}
    except (OSError, KeyError, ValueError):
        return None


# ----------------------------------------------------------------------------- instability (numbers)


def barrier(alpha: Sequence[float], values: Sequence[float], sign: float = 1.0) -> tuple[float, float]:
    """(height, α) of the line form, max over α of sign·[f(α) − ((1−α)·f(0) + α·f(1))] (Entezari
    et al. 2022; lmc_stats.barrier_line): sign 1 for a loss, −1 for success (its drop below the
    line). 0 at α = 0 when nothing rises."""
    b = lmc_stats.barrier_line(alpha, values, sign)
    return b.height, b.alpha


def with_pairs(interp: pd.DataFrame) -> pd.DataFrame:
    """The table with its `pair` column (rows from before child pairs, without one or with it
    empty: pair 0)."""
    if "pair" in interp.columns and interp["pair"].notna().all():
        return interp
    interp = interp.copy()
    if "pair" not in interp.columns:
        interp.insert(1, "pair", 0)
    interp["pair"] = interp["pair"].fillna(0).astype(int)
    return interp


def wide(interp: pd.DataFrame, fork: int, pair: int = 0) -> pd.DataFrame:
    """One fork pair's rows as a table: index alpha, one column per metric (+ success_ci_low/high)."""
    interp = with_pairs(interp)
    rows = interp[(interp["fork"] == fork) & (interp["pair"] == pair)]
    table = rows.pivot_table(index="alpha", columns="metric", values="value", aggfunc="first").sort_index()
    success = rows[rows["metric"] == "success_rate"].set_index("alpha").sort_index()
    table["success_ci_low"], table["success_ci_high"] = success["ci_low"], success["ci_high"]
    table.columns.name = None
    return table


def layers_of(columns: Sequence[str], prefix: str) -> list[int]:
    """The layer numbers of the columns named <prefix><layer>, sorted."""
    return sorted(int(c.rsplit("_", 1)[1]) for c in columns if c.startswith(prefix))


def units_of(interp: pd.DataFrame) -> list[tuple[int, int]]:
    """The (fork, pair) of every fork pair in the table, sorted."""
    interp = with_pairs(interp)
    return sorted({(int(f), int(p)) for f, p in zip(interp["fork"], interp["pair"])})


def _barrier_columns(row: dict, name: str, alpha: np.ndarray, f: np.ndarray, sign: float) -> None:
    for form, function in (("line", lmc_stats.barrier_line), ("mean", lmc_stats.barrier_mean)):
        b = function(alpha, f, sign)
        row[f"{name}_barrier_{form}"] = b.height
        row[f"{name}_barrier_{form}_alpha"] = b.alpha
        row[f"{name}_barrier_{form}_ci_low"] = row[f"{name}_barrier_{form}_ci_high"] = math.nan
        for suffix in BARRIER_TEST_SUFFIXES:
            row[f"{name}_barrier_{form}{suffix}"] = math.nan
        row[f"{name}_extreme_{form}"] = b.extreme
    row[f"{name}_interior_better"] = lmc_stats.interior_better(alpha, f, sign)


def _interval_columns(row: dict, alpha: np.ndarray, units: dict, bootstrap: int) -> None:
    """The bootstrap intervals of both barriers and the paired midpoint test, from the units."""
    if not np.allclose(np.sort(units["alphas"]), alpha):
        raise LMCError("an evaluation's units do not match its interpolation rows (evaluate it again)")
    order = np.argsort(units["alphas"], kind="stable")
    success, ce_sum = units["success"][order], units["ce_sum"][order]
    for name, intervals in (
        ("ce", lmc_stats.bootstrap_barriers(alpha, ce_sum, units["labels"], bootstrap, 1.0)),
        ("success", lmc_stats.bootstrap_barriers(alpha, success, None, bootstrap, -1.0)),
    ):
        numerators, denominators, sign = (
            (ce_sum, units["labels"], 1.0) if name == "ce" else (success, None, -1.0)
        )
        for form in ("line", "mean"):
            low, high = getattr(intervals, form)
            row[f"{name}_barrier_{form}_ci_low"], row[f"{name}_barrier_{form}_ci_high"] = low, high
            test = lmc_stats.barrier_test(alpha, numerators, denominators, form, sign)
            key = f"{name}_barrier_{form}"
            row[f"{key}_p"], row[f"{key}_t_ci_low"], row[f"{key}_t_ci_high"] = test.p, test.low, test.high
    drop = lmc_stats.paired_drop(alpha, success, bootstrap)
    row.update(
        midpoint_alpha=drop.alpha,
        success_drop_mid=drop.drop,
        success_drop_mid_ci_low=drop.ci_low,
        success_drop_mid_ci_high=drop.ci_high,
        success_drop_mid_n_worse=drop.n_worse,
        success_drop_mid_n_better=drop.n_better,
        success_drop_mid_p=drop.p,
    )


def _routing_columns(row: dict, t: pd.DataFrame) -> None:
    """Per layer: the children's JS and dominant-expert agreement, and whether the layer agrees
    trivially (both children give >= TRIVIAL_SHARE of its weight to the same expert); the means
    over all layers and over the non-trivial ones."""
    layers = layers_of(t.columns, "js_to_b_layer_")
    nontrivial = []
    for layer in layers:  # the children: θ(0) = A against B
        row[f"routing_js_layer_{layer}"] = t[f"js_to_b_layer_{layer}"].iloc[0]
        row[f"routing_agreement_layer_{layer}"] = t[f"agree_to_b_layer_{layer}"].iloc[0]
        top, expert = f"top_weight_layer_{layer}", f"top_expert_layer_{layer}"
        if top in t:
            trivial = bool(
                t[top].iloc[0] >= TRIVIAL_SHARE
                and t[top].iloc[-1] >= TRIVIAL_SHARE
                and t[expert].iloc[0] == t[expert].iloc[-1]
            )
            row[f"routing_trivial_layer_{layer}"] = trivial
            if not trivial:
                nontrivial.append(layer)
        else:  # an evaluation from before the top weight was kept: not measured
            row[f"routing_trivial_layer_{layer}"] = math.nan
            nontrivial.append(layer)
    if not layers:
        return
    for what in ("js", "agreement"):
        row[f"routing_{what}_mean"] = float(np.mean([row[f"routing_{what}_layer_{k}"] for k in layers]))
        row[f"routing_{what}_mean_nontrivial"] = (
            float(np.mean([row[f"routing_{what}_layer_{k}"] for k in nontrivial])) if nontrivial else math.nan
        )
    row["routing_nontrivial_layers"] = len(nontrivial)


def instability_table(
    interp: pd.DataFrame,
    units: dict[tuple[int, int], dict | None] | None = None,
    bootstrap: int = DEFAULT_BOOTSTRAP,
) -> pd.DataFrame:
    """One row per fork pair: both barrier forms (ce_*: held-out cross-entropy, success_*), each
    with its α, signed interior extreme and (from the units) bootstrap interval; the paired
    success drop at the midpoint with its interval and t-test over layouts; the endpoints; the
    half-width of success's 95% Wilson interval at the line barrier's α (one α's noise, not an
    interval for the drop); routing agreement per layer, trivial layers marked, and its means.
    Without units (`units` None, or a pair missing from it) the intervals are NaN: not measured."""
    interp = with_pairs(interp)
    lmc_stats.check_bootstrap(bootstrap)
    rows = []
    for fork, pair in units_of(interp):
        t = wide(interp, fork, pair)
        first = interp[(interp["fork"] == fork) & (interp["pair"] == pair)].iloc[0]
        alpha = t.index.to_numpy(float)
        row: dict[str, Any] = {
            "fork": fork,
            "pair": pair,
            "fork_point": first["fork_point"],
            "fork_update": first["fork_update"],
        }
        _barrier_columns(row, "ce", alpha, t["heldout_ce"].to_numpy(float), 1.0)
        _barrier_columns(row, "success", alpha, t["success_rate"].to_numpy(float), -1.0)
        at = row["success_barrier_line_alpha"]
        row["success_wilson_half_width"] = float((t["success_ci_high"] - t["success_ci_low"]).loc[at] / 2.0)
        for key in PAIRED_COLUMNS:
            row[key] = math.nan
        found = (units or {}).get((fork, pair))
        if found is not None:
            _interval_columns(row, alpha, found, bootstrap)
        row.update(
            heldout_ce_a=t["heldout_ce"].iloc[0],
            heldout_ce_b=t["heldout_ce"].iloc[-1],
            success_a=t["success_rate"].iloc[0],
            success_b=t["success_rate"].iloc[-1],
        )
        _routing_columns(row, t)
        rows.append(row)
    return with_pair_family(pd.DataFrame(rows))


# The tests instability.csv prints per fork pair: one family for the table (issue 40: the family is
# the questions asked of the experiment, every pair x test, not whatever a reader scans).
PAIR_TESTS = (
    "ce_barrier_line_p",
    "ce_barrier_mean_p",
    "success_barrier_line_p",
    "success_barrier_mean_p",
    "success_drop_mid_p",
)


def with_pair_family(table: pd.DataFrame) -> pd.DataFrame:
    """`<test>_holm` beside each of PAIR_TESTS: Holm over every pair x test of the table (a test
    that could not run, e.g. an evaluation without units, counts as p = 1 and gets no adjusted p:
    inference.holm_over_asked), and `family` naming it."""
    if table.empty:
        return table
    tests = [c for c in PAIR_TESTS if c in table]
    flat = table[tests].to_numpy(float).ravel()  # row-major: pair by pair
    adjusted = holm_over_asked(list(flat)).reshape(len(table), len(tests))
    for k, c in enumerate(tests):
        table[f"{c}_holm"] = adjusted[:, k]
    tested = int(np.isfinite(flat).sum())
    table["family"] = (
        f"Holm over the {flat.size} tests of this table ({tested} run): {len(table)} pair(s) x "
        f"{len(tests)} (barrier > 0 for ce and success in both forms, the midpoint drop)"
    )
    return table


# What each summarised metric can be: forks.csv's intervals are clipped to it (a barrier is >= 0
# by its definition; success's drop and the routing numbers are rates or bits in [0, 1]).
SUMMARY_RANGES = {
    "ce_barrier_line": (0.0, math.inf),
    "ce_barrier_mean": (0.0, math.inf),
    "success_barrier_line": (0.0, 1.0),
    "success_barrier_mean": (0.0, 1.0),
    "success_drop_mid": (-1.0, 1.0),
    "routing_js_mean_nontrivial": (0.0, 1.0),
    "routing_agreement_mean_nontrivial": (0.0, 1.0),
}


# A pair's measured barrier is a maximum over α of noisy gaps: never negative and biased up, so a
# t interval across a fork's pairs covers the mean *measured* barrier, not the true one (84% at a
# true 0 with 2 pairs, docs/calibration.md fork_barrier_at_0_2_pairs). forks.csv gives these
# metrics' mean over pairs without an interval; each pair's test and simultaneous t interval in
# instability.csv decide (issue 40: withdrawn, not printed beside the mean).
WITHDRAWN_FORK_INTERVALS = (
    "ce_barrier_line",
    "ce_barrier_mean",
    "success_barrier_line",
    "success_barrier_mean",
)
FORK_NOTE = (
    "barrier intervals across pairs withdrawn: a measured barrier is a max over α, biased up, and the t "
    "across pairs covered a true 0 in 84% (docs/calibration.md); read each pair's barrier > 0 test "
    "(instability.csv <barrier>_p, _holm)"
)


def fork_summary(table: pd.DataFrame) -> pd.DataFrame:
    """One row per fork: n_pairs and, for each SUMMARY_METRICS, the mean over its child pairs and
    the Student-t 95% interval of that mean, clipped to the metric's range (SUMMARY_RANGES; NaN
    with one pair: not measured). The barriers' intervals are NaN (WITHDRAWN_FORK_INTERVALS;
    `note` says why): their mean over pairs is given alone."""
    rows = []
    for fork, group in table.groupby("fork", sort=True):
        row = {
            "fork": fork,
            "fork_point": group["fork_point"].iloc[0],
            "fork_update": group["fork_update"].iloc[0],
            "n_pairs": len(group),
        }
        for metric in SUMMARY_METRICS:
            values = group[metric] if metric in group else [math.nan]
            mean, low, high = lmc_stats.across_pairs(values)
            floor, ceiling = SUMMARY_RANGES.get(metric, (-math.inf, math.inf))
            row[metric] = mean
            if metric in WITHDRAWN_FORK_INTERVALS:
                low = high = math.nan
            row[f"{metric}_ci_low"] = max(low, floor) if math.isfinite(low) else low
            row[f"{metric}_ci_high"] = min(high, ceiling) if math.isfinite(high) else high
        row["note"] = FORK_NOTE
        rows.append(row)
    return pd.DataFrame(rows)


def correlations(table: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """Spearman ρ of each of CORRELATED_X with each CORRELATED_Y, the fork as the unit of every
    test (lmc_stats.fork_spearman): over forks (n forks, the pair means) and, when some fork has
    several pairs, over pairs (ρ over the n pairs, p from permuting whole forks: pairs of one
    fork are not independent). p_min: the smallest p the fork permutations can reach. Holm
    (p_holm) over the family declared in `family`: every x × y × unit row of this table (12 with
    several pairs per fork, 6 with one); a row without a test (NaN p) says why in `note` and
    counts in the family as p = 1 (inference.holm_over_asked: the family is the correlations
    asked, not the ones the data let run), with no adjusted p of its own."""
    rows = []
    units = [("forks", summary)] + ([("pairs", table)] if len(table) > len(summary) else [])
    for unit, frame in units:
        for x in CORRELATED_X:
            for y in CORRELATED_Y:
                if x not in frame or y not in frame:
                    continue
                c = lmc_stats.fork_spearman(frame[x], frame[y], frame["fork"])
                note = "" if math.isfinite(c.p) else f"no test: {c.method}"
                if math.isfinite(c.p_min) and c.p_min > 0.05:
                    note = f"p cannot reach 0.05 with {c.n_forks} forks (smallest possible {c.p_min:.3g})"
                rows.append(
                    {"x": x, "y": y, "unit": unit, "n": c.n, "n_forks": c.n_forks, "rho": c.rho, "p": c.p}
                    | {"p_min": c.p_min, "p_method": c.method, "note": note}
                )
    out = pd.DataFrame(rows, columns=CORRELATION_COLUMNS)
    if len(out):
        out["p_holm"] = holm_over_asked(list(out["p"].astype(float)))
        tested = int(np.isfinite(out["p"].to_numpy(float)).sum())
        out["family"] = (
            f"Holm over the {len(out)} correlations asked ({tested} tested; an untested one counts as p = 1): "
            f"{len(CORRELATED_X)} x × {len(CORRELATED_Y)} barrier forms × {len(units)} unit(s)"
        )
    return out


def _interval(value: float, low: float, high: float, digits: int = 4) -> str:
    if pd.isna(low) or pd.isna(high):
        return f"{value:.{digits}f} [interval not measured]"
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def _holm_text(row: pd.Series, test: str) -> str:
    value = row.get(f"{test}_holm", math.nan)
    return f" (Holm {value:.3g})" if pd.notna(value) else ""


def findings(
    table: pd.DataFrame, summary: pd.DataFrame | None = None, corr: pd.DataFrame | None = None
) -> list[str]:
    """Lines for a terminal: per fork pair its barriers (both forms, intervals), the paired
    midpoint test and routing agreement; per fork the means across pairs; the correlations."""
    lines = []
    for _, r in table.iterrows():
        where = f"fork {int(r['fork'])}" + (
            f" ({r['fork_point']:g}, update {r['fork_update']:g})"
            if pd.notna(r["fork_point"])
            else " (two checkpoints compared: no fork)"
        )
        if "pair" in r and (table["pair"] > 0).any():
            where += f" pair {int(r['pair'])}"
        parts = []
        for name in ("ce", "success"):
            for form in ("line", "mean"):
                key = f"{name}_barrier_{form}"
                digits = 4 if name == "ce" else 3
                text = (
                    f"{name} barrier_{form} "
                    + _interval(r[key], r[f"{key}_ci_low"], r[f"{key}_ci_high"], digits)
                    + f" (percentile bootstrap) at α {r[f'{key}_alpha']:.2f}"
                )
                if pd.notna(r.get(f"{key}_p", math.nan)):
                    text += (
                        f", simultaneous t [{r[f'{key}_t_ci_low']:.{digits}f}, {r[f'{key}_t_ci_high']:.{digits}f}]"
                        f", barrier > 0 p {r[f'{key}_p']:.3g}" + _holm_text(r, f"{key}_p")
                    )
                parts.append(text + f" (interior extreme {r[f'{name}_extreme_{form}']:+.4f})")
            if r.get(f"{name}_interior_better"):
                parts.append(f"every interior α beats both ends in {name}")
        if pd.notna(r.get("success_drop_mid")):
            parts.append(
                f"success drop at α {r['midpoint_alpha']:.2f}: "
                + _interval(
                    r["success_drop_mid"], r["success_drop_mid_ci_low"], r["success_drop_mid_ci_high"], 3
                )
                + f", {int(r['success_drop_mid_n_worse'])} layouts worse / {int(r['success_drop_mid_n_better'])}"
                f" better, randomisation p {r['success_drop_mid_p']:.3g}"
                + _holm_text(r, "success_drop_mid_p")
            )
        if pd.notna(r.get("routing_agreement_mean_nontrivial", math.nan)):
            layers = len(layers_of(table.columns, "routing_js_layer_"))
            parts.append(
                f"routing agreement {r['routing_agreement_mean_nontrivial']:.2f}, JS "
                f"{r['routing_js_mean_nontrivial']:.3f} bits over {int(r['routing_nontrivial_layers'])}/{layers}"
                " non-trivial layers"
            )
        lines.append(f"{where}: " + "; ".join(parts))
    if "family" in table and len(table) and table[[c for c in PAIR_TESTS if c in table]].notna().any().any():
        lines.append(f"the fork pairs' tests: {table['family'].iloc[0]}")
    if summary is not None and (summary["n_pairs"] > 1).any():
        for _, r in summary.iterrows():
            lines.append(
                f"fork {int(r['fork'])} over {int(r['n_pairs'])} pairs: ce barrier_line "
                f"{r['ce_barrier_line']:.4f}, barrier_mean {r['ce_barrier_mean']:.4f} (the mean of its pairs' "
                "measured barriers; no interval across pairs: a measured barrier is biased up, so it would "
                "not cover a true 0; each pair's test above decides)"
            )
    corr = corr if corr is not None else pd.DataFrame()
    if len(corr):  # a correlation with no ρ (too few forks or pairs) is one line for all, not a nan each
        missing = corr[corr["rho"].isna()]
        if len(missing):
            why = next((n for n in missing.get("note", []) if isinstance(n, str) and n), "too few units")
            lines.append(f"{len(missing)} of {len(corr)} Spearman correlations not computed: {why}")
        corr = corr[corr["rho"].notna()]
    for _, r in corr.iterrows():
        forks = f", {int(r['n_forks'])} forks" if "n_forks" in r and pd.notna(r["n_forks"]) else ""
        line = f"Spearman {r['x']} vs {r['y']} over {r['unit']} (n {int(r['n'])}{forks}): ρ {r['rho']:+.2f}"
        if pd.notna(r["p"]):
            line += f", p {r['p']:.3g} ({r['p_method']})"
            if "p_holm" in r and pd.notna(r["p_holm"]):
                line += f", Holm {r['p_holm']:.3g}"
        if isinstance(r.get("note"), str) and r["note"]:
            line += f"; {r['note']}"
        lines.append(line)
    if len(corr) and "family" in corr and isinstance(corr["family"].iloc[0], str):
        lines.append(f"correlations' family: {corr['family'].iloc[0]}; the unit of every test is the fork")
    return lines


# ----------------------------------------------------------------------------- result tables


class Results(NamedTuple):
    interpolation: pd.DataFrame
    instability: pd.DataFrame  # one row per fork pair
    forks: pd.DataFrame  # one row per fork: means and intervals across pairs
    correlations: pd.DataFrame


def write_tables(
    directory: Path,
    interp: pd.DataFrame,
    units: dict[tuple[int, int], dict | None] | None = None,
    bootstrap: int = DEFAULT_BOOTSTRAP,
) -> Results:
    """interpolation.csv (the rows, sorted by fork, pair, metric, α), instability.csv, forks.csv
    and correlations.csv of `interp` in `directory`, each replaced atomically; the tables written."""
    interp = (
        with_pairs(interp).sort_values(["fork", "pair", "metric", "alpha"]).reset_index(drop=True)[COLUMNS]
    )
    table = instability_table(interp, units, bootstrap)
    summary = fork_summary(table)
    corr = correlations(table, summary)
    for name, frame in (
        (INTERPOLATION_FILE, interp),
        (INSTABILITY_FILE, table),
        (FORKS_FILE, summary),
        (CORRELATIONS_FILE, corr),
    ):
        atomic_write(directory / name, lambda tmp, frame=frame: frame.to_csv(tmp, index=False))
    return Results(interp, table, summary, corr)


def load_results(directory: str | os.PathLike) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(interpolation, instability) tables of an analysed experiment (or compare) folder."""
    directory = Path(directory)
    files = [directory / INTERPOLATION_FILE, directory / INSTABILITY_FILE]
    tables = []
    # an interpolation table from before child pairs has no `pair` column (with_pairs: pair 0)
    needed_interp = [c for c in COLUMNS if c != "pair"]
    for f, needed in zip(files, (needed_interp, INSTABILITY_COLUMNS)):
        if not f.is_file():
            raise LMCError(
                f"{str(directory)!r} has no {f.name}: run `python lmc.py analyze --results_dir {directory}`"
            )
        try:
            table = pd.read_csv(f)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise LMCError(f"{str(f)!r} is unreadable ({first}): not a table lmc.py wrote") from None
        missing = [c for c in needed if c not in table.columns]
        if missing:
            raise LMCError(
                f"{str(f)!r} has no {', '.join(missing)} column: not a table lmc.py wrote "
                f"(rewrite it with `python lmc.py analyze --results_dir {directory}`)"
            )
        tables.append(table)
    return with_pairs(tables[0]), tables[1]


def load_summaries(directory: str | os.PathLike) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(forks, correlations) tables of an analysed folder; empty tables for a folder analysed
    before they were written."""
    out = []
    for name in (FORKS_FILE, CORRELATIONS_FILE):
        path = Path(directory) / name
        out.append(pd.read_csv(path) if path.is_file() else pd.DataFrame())
    return out[0], out[1]


def find_experiments(root: str | os.PathLike) -> dict[str, str]:
    """{label: folder} of every analysed experiment (and compare) under `root`, for the notebook:
    'BabyAI-GoToLocal-v0 · seed 42 · copy'."""
    root = Path(root)
    found = {}
    for table in sorted(root.glob(f"**/{INSTABILITY_FILE}")):
        folder = table.parent
        if (folder / INTERPOLATION_FILE).is_file() and (folder / CONFIG_FILE).is_file():
            found[" · ".join(p.replace("_", " ", 1) for p in folder.relative_to(root).parts)] = str(folder)
    return found


def expert_sizes_of(directory: str | os.PathLike) -> list | None:
    """The expert sizes of an experiment folder's runs (for figure legends); None if unknown."""
    try:
        doc = json.loads((Path(directory) / CONFIG_FILE).read_text(encoding="utf-8"))
        return doc.get("train", doc).get("expert_hidden_sizes")
    except (OSError, ValueError, AttributeError):
        return None


def fork_names(interp: pd.DataFrame) -> dict[str, int]:
    """{'fork 0: 0.05 · update 20': 0, ...} of an interpolation table (a compare: 'compare')."""
    names = {}
    for fork, rows in interp.groupby("fork", sort=True):
        point, update = rows["fork_point"].iloc[0], rows["fork_update"].iloc[0]
        names["compare" if pd.isna(point) else f"fork {fork}: {point:g} · update {int(update)}"] = int(fork)
    return names


def pair_names(interp: pd.DataFrame) -> dict[str, tuple[int, int]]:
    """{label: (fork, pair)} of every fork pair: the fork's name (fork_names) for pair 0 when the
    table has one pair per fork, '<fork name> · pair <p>' when it has several."""
    interp = with_pairs(interp)
    forks = {k: name for name, k in fork_names(interp).items()}
    several = bool((interp["pair"] > 0).any())
    return {(f"{forks[f]} · pair {p}" if several else forks[f]): (f, p) for f, p in units_of(interp)}
