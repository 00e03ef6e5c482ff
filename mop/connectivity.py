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
- Instability (Frankle et al. 2020, `barrier`): max over α of [f(α) − ((1−α)·f(0) + α·f(1))] for
  the held-out loss f; for success the sign is flipped (the drop below the line). Both the height
  and its α are reported; identical children give exactly 0.
- Routing agreement (`routing_agreement`), on the held-out labelled states: per layer, the mean
  Jensen–Shannon divergence (bits, in [0, 1]) between two router distributions and the fraction of
  states whose dominant expert agrees, between the children (α = 0 vs 1) and between each child
  and θ(α). Heterogeneous expert sizes make experts identifiable: no permutation matching.

Tables: the interpolation table (COLUMNS: one row per fork × α × metric: value, ci_low, ci_high)
and the instability table (`instability_table`: one row per fork). An analysed folder holds them as
interpolation.csv and instability.csv (`write_tables` writes, `load_results` reads them back).
Reads checkpoints and heldout.npz; writes heldout.npz (first use) and the two CSVs.

    ev = Evaluator(task_id, max_steps, 100, 16, heldout_set(path, task_id, 100, max_steps), play)
    table = interpolation_table(ckpt_a, ckpt_b, alpha_values(11), ev, "a.pt")
    instability_table(table)
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from mixture_of_experts import build_policy
from mop.babyai_env import EVAL_SEED_START, encode_obs, make_env
from mop.bot_demos import bot_episode
from mop.bot_paths import BotPaths
from mop.experiment import ConfigError, load_policy
from mop.numpy_policy import one_thread
from mop.replay_buffer import BufferError, EpisodeBuffer, StoredEpisode, episodes_as_chunk
from mop.runs import atomic_write

# The files of an analysed experiment (or compare) folder.
CONFIG_FILE, HELDOUT_FILE = "config.json", "heldout.npz"
INTERPOLATION_FILE, INSTABILITY_FILE = "interpolation.csv", "instability.csv"
COLUMNS = ["fork", "fork_point", "fork_update", "alpha", "metric", "value", "ci_low", "ci_high"]
# What two checkpoints must share to be interpolated (plus identical parameter names and shapes).
ARCHITECTURE_KEYS = (
    "policy_type",
    "input_dim",
    "num_actions",
    "obs_encoding",
    "input_encoder",
    "lang_encoder",
    "lang_dim",
    "expert_hidden_sizes",
    "intermediate_dim",
    "router_hidden_size",
    "hidden_size",
)
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
    bot fails on or does not solve are skipped and counted); (buffer, skipped)."""
    env = make_env(task_id, max_steps)
    buffer = EpisodeBuffer(count, task_id)
    skipped, k = 0, 0
    while len(buffer) < count:
        if k >= 10 * count + 100:
            raise LMCError(f"the bot solved only {len(buffer)} of {k} evaluation layouts of {task_id}")
        episode, _ = bot_episode(env, EVAL_SEED_START + k)
        k += 1
        if episode is None:
            skipped += 1
        else:
            buffer.extend([episode])
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


@torch.no_grad()
def heldout_pass(
    policy: torch.nn.Module,
    encoder: torch.nn.Module,
    episodes: Sequence[StoredEpisode],
    obs_encoding: str,
    batch_size: int = 64,
) -> tuple[dict, list[np.ndarray]]:
    """Teacher-forced pass over the held-out episodes (memory from each reset): ({heldout_ce,
    heldout_accuracy}, router weights per layer at every labelled state, (N, E) each, states in
    the same order for every policy)."""
    ce_sum, correct, count = 0.0, 0, 0
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
        mask = torch.from_numpy(chunk["label_mask"])
        logits, labels = out.logits[mask].double(), torch.from_numpy(chunk["label"])[mask]
        ce_sum += float(F.cross_entropy(logits, labels, reduction="sum"))
        correct += int((logits.argmax(-1) == labels).sum())
        count += int(mask.sum())
        for k, w in enumerate(out.router_weights):
            if len(weights) <= k:
                weights.append([])
            weights[k].append(w[mask].double().numpy())  # (n, E)
    metrics = {"heldout_ce": ce_sum / count, "heldout_accuracy": correct / count}
    return metrics, [np.concatenate(w) for w in weights]


# ----------------------------------------------------------------------------- evaluation along the line

# play(policy, encoder, config, evaluator) -> the episode metrics of one policy on the evaluator's
# envs and layouts (lmc.py passes eval_mop's run_episodes + compute_metrics: the package does not
# import the evaluation stage).
Play = Callable[[torch.nn.Module, torch.nn.Module, dict, "Evaluator"], dict]


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

    def __call__(
        self, policy: torch.nn.Module, encoder: torch.nn.Module, config: dict
    ) -> tuple[dict, list[np.ndarray]]:
        """(metrics, held-out router weights per layer) of one policy, as eval_mop.evaluate's."""
        started = time.perf_counter()
        with one_thread():  # as eval_mop.evaluate: batches of <= num_envs rows
            metrics = self.play(policy, encoder, config, self)
            held, weights = heldout_pass(policy, encoder, self.heldout, config["obs_encoding"])
        self.seconds += time.perf_counter() - started
        return {**metrics, **held}, weights


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
) -> list[dict]:
    """Evaluate θ(α) for every α: long rows (alpha, metric, value, ci_low, ci_high)."""
    policy, encoder, config = load_policy(path_a, ckpt=ckpt_a)
    rows, heldout = [], {}
    for alpha in alphas:
        policy = build_policy(config)
        policy.load_state_dict(interpolate(ckpt_a["policy_state_dict"], ckpt_b["policy_state_dict"], alpha))
        policy.eval()
        encoder.load_encoder_state(interpolate(ckpt_a["encoder_state"], ckpt_b["encoder_state"], alpha))
        encoder.eval()
        metrics, heldout[alpha] = evaluator(policy, encoder, config)
        for metric, value in metrics.items():
            if metric in SKIPPED_METRICS:
                continue
            success = metric == "success_rate"
            ci = (metrics["success_ci_low"], metrics["success_ci_high"]) if success else (math.nan,) * 2
            rows.append(_row(alpha, metric, float(value), ci))
    ends = {"a": heldout[alphas[0]], "b": heldout[alphas[-1]]}
    for alpha in alphas:
        for layer, w in enumerate(heldout[alpha]):
            for child, ref in ends.items():
                js, agree = routing_agreement(w, ref[layer])
                rows.append(_row(alpha, f"js_to_{child}_layer_{layer}", js))
                rows.append(_row(alpha, f"agree_to_{child}_layer_{layer}", agree))
    return rows


def interpolation_table(
    ckpt_a: dict,
    ckpt_b: dict,
    alphas: Sequence[float],
    evaluator: Evaluator,
    path_a: str = "a",
    fork: int = 0,
    fork_point: float = math.nan,
    fork_update: float = math.nan,
) -> pd.DataFrame:
    """interpolation_rows as one fork's rows of the interpolation table (COLUMNS)."""
    table = pd.DataFrame(interpolation_rows(ckpt_a, ckpt_b, alphas, evaluator, path_a))
    table.insert(0, "fork", fork)
    table.insert(1, "fork_point", fork_point)
    table.insert(2, "fork_update", fork_update)
    return table[COLUMNS]


# ----------------------------------------------------------------------------- instability (numbers)


def _line(f0: float, f1: float, alpha: np.ndarray) -> np.ndarray:
    """(1−α)·f0 + α·f1, exact at the ends and equal to f0 when f0 = f1 (lerp's two-sided form)."""
    return np.where(alpha < 0.5, f0 + alpha * (f1 - f0), f1 - (1.0 - alpha) * (f1 - f0))


def barrier(alpha: Sequence[float], values: Sequence[float], sign: float = 1.0) -> tuple[float, float]:
    """(height, α) of max over α of sign·[f(α) − ((1−α)·f(0) + α·f(1))] (Frankle et al. 2020):
    sign 1 for a loss, −1 for success (its drop below the line). 0 at α = 0 when nothing rises."""
    a, f = np.asarray(alpha, float), np.asarray(values, float)
    order = np.argsort(a)
    a, f = a[order], f[order]
    gap = sign * (f - _line(f[0], f[-1], a))
    i = int(np.nanargmax(gap))
    return float(gap[i]) + 0.0, float(a[i])  # + 0.0: no -0.0 for a flat success curve


def wide(interp: pd.DataFrame, fork: int) -> pd.DataFrame:
    """One fork's rows as a table: index alpha, one column per metric (+ success_ci_low/high)."""
    rows = interp[interp["fork"] == fork]
    table = rows.pivot_table(index="alpha", columns="metric", values="value", aggfunc="first").sort_index()
    success = rows[rows["metric"] == "success_rate"].set_index("alpha").sort_index()
    table["success_ci_low"], table["success_ci_high"] = success["ci_low"], success["ci_high"]
    table.columns.name = None
    return table


def layers_of(columns: Sequence[str], prefix: str) -> list[int]:
    """The layer numbers of the columns named <prefix><layer>, sorted."""
    return sorted(int(c.rsplit("_", 1)[1]) for c in columns if c.startswith(prefix))


def instability_table(interp: pd.DataFrame) -> pd.DataFrame:
    """One row per fork: the loss barrier (held-out CE) and the success drop with their α (and
    the half-width of success's 95% Wilson interval there, the drop's noise scale), the
    endpoints, and the children's routing agreement per layer (JS in bits, dominant-expert
    agreement) and its mean over layers."""
    rows = []
    for fork, group in interp.groupby("fork", sort=True):
        t = wide(interp, fork)
        alpha = t.index.to_numpy(float)
        loss, loss_at = barrier(alpha, t["heldout_ce"], 1.0)
        drop, drop_at = barrier(alpha, t["success_rate"], -1.0)
        row = {
            "fork": fork,
            "fork_point": group["fork_point"].iloc[0],
            "fork_update": group["fork_update"].iloc[0],
            "loss_barrier": loss,
            "loss_barrier_alpha": loss_at,
            "success_barrier": drop,
            "success_barrier_alpha": drop_at,
            # the noise scale of that drop: half the 95% Wilson interval of success at its α
            "success_barrier_ci": float((t["success_ci_high"] - t["success_ci_low"]).loc[drop_at] / 2.0),
            "heldout_ce_a": t["heldout_ce"].iloc[0],
            "heldout_ce_b": t["heldout_ce"].iloc[-1],
            "success_a": t["success_rate"].iloc[0],
            "success_b": t["success_rate"].iloc[-1],
        }
        layers = layers_of(t.columns, "js_to_b_layer_")
        for layer in layers:  # the children: θ(0) = A against B
            row[f"routing_js_layer_{layer}"] = t[f"js_to_b_layer_{layer}"].iloc[0]
            row[f"routing_agreement_layer_{layer}"] = t[f"agree_to_b_layer_{layer}"].iloc[0]
        if layers:
            row["routing_js_mean"] = float(np.mean([row[f"routing_js_layer_{k}"] for k in layers]))
            row["routing_agreement_mean"] = float(
                np.mean([row[f"routing_agreement_layer_{k}"] for k in layers])
            )
        rows.append(row)
    return pd.DataFrame(rows)


def findings(table: pd.DataFrame) -> list[str]:
    """One line per fork of an instability table: its barriers and routing agreement."""
    lines = []
    for _, r in table.iterrows():
        routing = (
            f"  routing JS {r['routing_js_mean']:.3f} bits, dominant agree {r['routing_agreement_mean']:.2f}"
            if "routing_js_mean" in r and pd.notna(r.get("routing_js_mean"))
            else ""
        )
        lines.append(
            f"fork {int(r['fork'])} ({r['fork_point']:g}, update {r['fork_update']:g}): loss barrier "
            f"{r['loss_barrier']:.4f} at α {r['loss_barrier_alpha']:.2f}, success drop "
            f"{r['success_barrier']:.3f} at α {r['success_barrier_alpha']:.2f} "
            f"(95% interval ±{r['success_barrier_ci']:.3f}){routing}"
        )
    return lines


# ----------------------------------------------------------------------------- result tables


def write_tables(directory: Path, interp: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """interpolation.csv (the rows, sorted by fork, metric, α) and instability.csv of `interp` in
    `directory`, each replaced atomically; (interpolation, instability) as written."""
    interp = interp.sort_values(["fork", "metric", "alpha"]).reset_index(drop=True)[COLUMNS]
    table = instability_table(interp)
    atomic_write(directory / INTERPOLATION_FILE, lambda tmp: interp.to_csv(tmp, index=False))
    atomic_write(directory / INSTABILITY_FILE, lambda tmp: table.to_csv(tmp, index=False))
    return interp, table


def load_results(directory: str | os.PathLike) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(interpolation, instability) tables of an analysed experiment (or compare) folder."""
    directory = Path(directory)
    files = [directory / INTERPOLATION_FILE, directory / INSTABILITY_FILE]
    for f in files:
        if not f.is_file():
            raise LMCError(
                f"{str(directory)!r} has no {f.name}: run `python lmc.py analyze --results_dir {directory}`"
            )
    return pd.read_csv(files[0]), pd.read_csv(files[1])


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
