"""Analyses of an agent through its trained generative model (train_generative.py).

--analysis
  samples     decode rollouts from the prior (z ~ N(0, I)) after real init steps; render them with
              minigrid's renderer beside the real recorded rollouts (PNG strip + GIFs)
  maximise    climb one latent z, shared by --num_opt_contexts recorded contexts of training
              episodes, to raise (or --minimise) each --target ('layer_<k>:expert_<j>' router weight,
              'lpc', 'action:<a>' probability; 'all': every expert of every layer), in the modes
              'leash' (from z = 0, the --kl_weight·½|z|² leash) and 'typical' (z on the sphere
              |z| = √d); the --control action target runs the same way beside them. Reported on
              --num_contexts held-out contexts: the change of the target (soft views, and the hard
              argmax views re-read by the real agent) with its 95% interval, "moved" or "did not
              move", fidelity (NaN below a soft change of 0.01); plus the model's KL and its
              z-sensitivity (mop/generative_probes.py)
  saliency    gradients of each target and the control with respect to the views the agent reads
              (per view cell) and its memory (per memory block), on generated and recorded views
              of held-out contexts
  edits       collapse / swap a memory direction (a PCA --component or a --direction .npy) in the
              simulated rollouts, record the samples and re-read them with the real agent; a random
              direction is the control
  behaviours  k-means behaviours of recorded windows (memory trajectory ⊕ actions), fitted on
              training episodes, described on held-out ones, with their stability
  pca         PCA and k-means of the recorded memory; PC1-PC2 coloured by carrying and by the
              dominant expert, with episode trajectories
  directions  shift the agent's memory along a PCA direction inside the simulated rollout and
              measure how routing and action probabilities change
  accuracy    where the decoded views are wrong on held-out windows (posterior-mean z): per
              channel, per view cell, per simulated step, per object, changed vs unchanged
              cells; closed loop (the world moves by the agent's own greedy actions, the
              training metric) and with the recorded actions; agreeing_prefix: the same over
              the steps the simulated agent reaches by taking the recorded actions
Writes <out>/<analysis>/{summary.json, *.png, *.gif, *.npz}; default out: the model's folder.
Bad input (a number out of range or not finite, a target the agent does not have, more contexts
than the recording holds, a direction of the wrong size, an --out that cannot be written) is one
`error:` line, exit 2, nothing written.

    python generative_analysis.py --model generative/BabyAI-GoToLocal-v0/trial_0/final/model_final.pt --analysis samples
    python generative_analysis.py --model ... --analysis maximise --target all
    python generative_analysis.py --model ... --analysis saliency --target layer_1:expert_2
"""

from __future__ import annotations

if __name__ == "__main__":  # flags answered before torch and matplotlib load (bench/startup.py)
    from mop.cli_specs import answer_early, check_generative_analysis_args, generative_analysis_parser

    answer_early(lambda: check_generative_analysis_args(generative_analysis_parser(__doc__).parse_args()))

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from mop import generative_probes as probes
from mop.checks import command_edges
from mop.cli_specs import (
    ANALYSES,  # noqa: F401  (generative_analysis.ANALYSES: the notebook's choices)
    NEEDS_TARGET,
    check_generative_analysis_args,
    generative_analysis_parser,
)
from mop.experiment import ConfigError
from mop.generative import (
    ACTIVE_KL,
    Init,
    accuracy_breakdown,
    batch_init,
    decoded_image,
    kl_per_dimension,
    losses,
    parse_target,
)
from mop.generative_plots import (
    frames_to_gif,
    plot_accuracy,
    plot_behaviours,
    plot_direction_effects,
    plot_edits,
    plot_maximise,
    plot_pca,
    plot_rollout_strips,
    plot_saliency,
    plot_z_sensitivity,
    render_view,
)
from mop.generative_probes import kmeans, pca_of
from mop.runs import OutputError, atomic_write, atomic_write_text, check_writable_dir
from record import RecordingError, iter_chunks, load_windows, read_metadata
from train_generative import GenerativeError, load_model, split_windows, to_tensors, training_windows


def _dataset(loaded: dict, dataset: str | None) -> tuple[str, dict]:
    """The recording to draw contexts from (default: the model's), checked to be of its agent."""
    path = dataset or loaded["ckpt"]["dataset"]
    meta = read_metadata(path)
    if meta["agent_hash"] != loaded["ckpt"]["agent_hash"]:
        raise GenerativeError(f"recording {path!r} was made with another agent than the model's")
    return path, meta


def _contexts(
    loaded: dict, dataset: str, num: int, seed: int, from_start: bool = False
) -> tuple[dict[str, torch.Tensor], Init]:
    """`num` held-out recorded windows and the Init of each (from_start: windows that begin at
    an episode's first step)."""
    model = loaded["model"]
    windows = load_windows(
        dataset, model.config.window, stride=model.config.window, max_windows=2000, seed=seed
    )
    _, held = split_windows(windows)
    if from_start:
        held = held[windows["t"][held, 0] == 0]
        if not len(held):
            raise GenerativeError(f"no held-out window of {dataset!r} begins at an episode's first step")
    pick = np.random.default_rng(seed).permutation(held)[:num]
    batch = to_tensors(windows, pick)
    return batch, batch_init(batch, model.config.num_init_steps, loaded["lang_table"])


def _save_fig(fig, path: Path) -> str:
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=150))
    return str(path)


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> str:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)

    atomic_write(path, write)
    return str(path)


ACTION_NAMES = ("left", "right", "forward", "pickup", "drop", "toggle", "done")


def scene_stats(sim) -> dict:
    """What the decoded (argmax) views of a rollout show, as shares of simulated steps: carrying,
    a key / a door (closed or locked, open) / a box in view, a wall or door right ahead, and the
    agent's greedy actions. Describes the situations an optimised z decodes to."""
    codes = decoded_image(sim)  # (B, S, 7, 7, 3)
    obj, state = codes[..., 0].clone(), codes[..., 2]
    obj[..., 3, 6] = 1  # the agent's own cell shows what it carries, not what is in view
    door = obj == 4
    actions = sim.agent.logits.argmax(-1)
    share = lambda x: round(float(x.float().mean()), 3)  # noqa: E731
    return {
        "carrying": share(torch.stack([o.carrying.argmax(-1) for o in sim.obs_probs], 1) == 1),
        "key_in_view": share((obj == 5).flatten(2).any(-1)),
        "closed_door_in_view": share((door & (state > 0)).flatten(2).any(-1)),
        "open_door_in_view": share((door & (state == 0)).flatten(2).any(-1)),
        "box_in_view": share((obj == 7).flatten(2).any(-1)),
        "wall_ahead": share(obj[..., 3, 5] == 2),
        "door_ahead": share(obj[..., 3, 5] == 4),
        "actions": {name: share(actions == a) for a, name in enumerate(ACTION_NAMES)},
    }


def _decoded_codes(sim) -> np.ndarray:
    """(B, S, 7, 7, 3) argmax codes of a simulated rollout."""
    return decoded_image(sim).numpy().astype(np.uint8)


# ----------------------------------------------------------------------------- analyses


@torch.no_grad()
def samples(
    loaded: dict,
    dataset: str,
    out: Path,
    num_samples: int,
    seed: int,
    prior_scale: float = 1.0,
    from_start: bool = False,
) -> dict:
    model = loaded["model"]
    batch, init = _contexts(loaded, dataset, num_samples, seed, from_start)
    torch.manual_seed(seed)
    z = prior_scale * torch.randn(len(init.memory), model.config.latent_size)
    sim = model.simulate(loaded["agent"], init, z)
    decoded = _decoded_codes(sim)
    real = batch["image"].numpy().astype(np.uint8)
    n_init = model.config.num_init_steps
    rows, labels, files = [], [], []
    for b in range(len(decoded)):
        rows += [list(real[b]), list(real[b, :n_init]) + list(decoded[b])]
        labels += [f"real {b}", f"prior {b}"]
        gif = out / f"sample_{b}.gif"
        frames_to_gif([render_view(v) for v in list(real[b, :n_init]) + list(decoded[b])], gif)
        files.append(str(gif))
    prior = "N(0, I)" if prior_scale == 1 else f"N(0, {prior_scale:g}² I)"
    fig = plot_rollout_strips(rows, labels, f"{n_init} real init steps, then decoded from z ~ {prior}")
    files.append(_save_fig(fig, out / "samples.png"))
    actions = sim.agent.logits.argmax(-1).numpy()
    return {"files": files, "num_samples": len(decoded), "simulated_actions": actions.tolist()}


def context_split(
    loaded: dict, dataset: str, num_opt: int, num_report: int, seed: int, from_start: bool = False
) -> tuple[tuple[dict, Init], tuple[dict, Init]]:
    """Optimisation contexts (windows of training episodes) and report contexts (windows of held-out
    episodes, never trained on by the model nor optimised on): ((batch, Init), (batch, Init)).
    GenerativeError when the recording has fewer windows than asked for."""
    model = loaded["model"]
    windows = load_windows(
        dataset, model.config.window, stride=model.config.window, max_windows=20_000, seed=seed
    )
    train, held = split_windows(windows)
    if from_start:
        train, held = (i[windows["t"][i, 0] == 0] for i in (train, held))
    where = " beginning at an episode's first step" if from_start else ""
    for name, pool, wanted in (("--num_opt_contexts", train, num_opt), ("--num_contexts", held, num_report)):
        if wanted > len(pool):
            raise GenerativeError(
                f"{name} {wanted}: the recording {dataset!r} has {len(pool)} such windows{where} "
                f"({'training' if pool is train else 'held-out'} episodes); ask for fewer or record more"
            )
    rng = np.random.default_rng(seed)
    out = []
    for pool, wanted in ((train, num_opt), (held, num_report)):
        batch = to_tensors(windows, rng.permutation(pool)[:wanted])
        out.append((batch, batch_init(batch, model.config.num_init_steps, loaded["lang_table"])))
    return out[0], out[1]


@torch.no_grad()
def model_kl(loaded: dict, dataset: str, max_windows: int = 512) -> dict:
    """The posterior's KL to the prior on held-out windows (nats per window; global z, spatial z)
    and the latent dimensions carrying more than ACTIVE_KL nats: how much z says at all."""
    model = loaded["model"]
    trained = loaded["ckpt"]["args"]
    windows, _, held = training_windows(dataset, model.config, trained["max_windows"], trained["seed"])
    batch = to_tensors(windows, held[:max_windows])
    lang = loaded["lang_table"][batch["mission_index"][:, 0].long()]
    mu, logvar = model.encode(batch["image"], batch["direction"], batch["carrying"], batch["action"], lang)
    kl = kl_per_dimension(mu, logvar)
    z = model.config.z_dim
    return {
        "windows": int(len(mu)),
        "kl_nats": float(kl.sum()),
        "kl_global_nats": float(kl[:z].sum()),
        "kl_spatial_nats": float(kl[z:].sum()),
        "active_dims": int((kl > ACTIVE_KL).sum()),
        "latent_size": int(len(kl)),
        "active_threshold_nats": ACTIVE_KL,
    }


def target_list(spec: str, expert_sizes: list[list[int]], num_actions: int) -> list[str]:
    """--target as a list: 'all' is every expert of every layer (size-0 identity experts included:
    their weight is a routing choice like any other); otherwise a comma list, each checked."""
    if spec.strip() == "all":
        if not expert_sizes:
            raise GenerativeError("--target all: the GRU baseline agent has no router")
        return [f"layer_{k}:expert_{j}" for k, sizes in enumerate(expert_sizes) for j in range(len(sizes))]
    targets = [t.strip() for t in spec.split(",") if t.strip()]
    for t in targets:
        try:
            parse_target(t, expert_sizes, num_actions)
        except ValueError as e:
            raise GenerativeError(str(e)) from None
    if not targets:
        raise GenerativeError("--target is empty")
    return targets


def maximise(
    loaded: dict,
    dataset: str,
    out: Path,
    targets: list[str],
    control: str,
    modes: list[str],
    num_opt: int,
    num_report: int,
    steps: int,
    lr: float,
    kl_weight: float,
    minimise: bool,
    seed: int,
    from_start: bool = False,
    sensitivity_directions: int = 4,
    margin: float | None = None,
) -> dict:
    """Every target and the control, in every mode (generative_probes.maximise_target): optimised on
    training-episode contexts, reported on held-out ones; the model's KL and its z-sensitivity."""
    model, agent = loaded["model"], loaded["agent"]
    sizes = [list(s) for s in getattr(agent, "expert_sizes", ())]
    num_actions = loaded["agent_config"]["num_actions"]
    (opt_batch, opt_init), (report_batch, report_init) = context_split(
        loaded, dataset, num_opt, num_report, seed, from_start
    )
    sign = -1.0 if minimise else 1.0
    word = "minimise" if minimise else "maximise"
    d = model.config.latent_size
    distances = sorted({0.25, 1.0, 4.0, 0.5 * math.sqrt(d), math.sqrt(d)})
    sensitivity = probes.z_sensitivity(model, agent, report_init, distances, sensitivity_directions, seed)
    runs, files = [], []
    real = report_batch["image"].numpy().astype(np.uint8)
    n_init = model.config.num_init_steps
    started = time.perf_counter()
    from mop.progress import progress_bar

    bar = progress_bar((len(targets) + 1) * len(modes), f"{word} (target x mode, {steps} steps each)")
    for spec in [*targets, control]:
        target = parse_target(spec, sizes, num_actions)
        for mode in modes:
            bar.set_postfix_str(f"{spec} {mode}")
            bar.update(0)
            t0 = time.perf_counter()
            result = probes.maximise_target(
                model, agent, opt_init, report_init, target, sizes, mode, steps, lr, kl_weight, sign, seed
            )
            run = {
                "target": spec,
                "role": "control" if spec == control else "target",
                **result.summary,
                "scene_before": scene_stats(result.sim_reference),
                "scene_after": scene_stats(result.sim_after),
                "seconds": round(time.perf_counter() - t0, 1),
            }
            runs.append(run)
            bar.update(1)
            if mode == modes[-1] and len(targets) <= 3:  # the rollouts themselves, for a few targets
                before, after = _decoded_codes(result.sim_reference), _decoded_codes(result.sim_after)
                rows, labels = [], []
                for b in range(min(4, len(before))):
                    rows += [
                        list(real[b, :n_init]) + list(before[b]),
                        list(real[b, :n_init]) + list(after[b]),
                    ]
                    labels += [f"reference {b}", f"optimised {b}"]
                title = (
                    f"{word} {spec} ({mode}), held-out contexts: soft {run['soft_before']:.3f} → "
                    f"{run['soft_after']:.3f}, hard {run['hard_before']:.3f} → {run['hard_after']:.3f}: {run['verdict']}"
                )
                slug = spec.replace(":", "_")
                files.append(_save_fig(plot_rollout_strips(rows, labels, title), out / f"{word}_{slug}.png"))
    bar.close()
    probes.verdicts(runs, margin)
    kl = model_kl(loaded, dataset)
    files.append(_save_fig(plot_maximise(runs, control, word, kl), out / f"{word}_summary.png"))
    files.append(_save_fig(plot_z_sensitivity(sensitivity, d, kl), out / "z_sensitivity.png"))
    summary = {
        "targets": targets,
        "control": control,
        "direction": word,
        "modes": modes,
        "contexts": {"optimised_on": num_opt, "reported_on": num_report, "from_episode_start": from_start},
        "min_soft_change": probes.MIN_SOFT_CHANGE,
        "margin": margin,
        "model_kl": kl,
        "sensitivity": sensitivity,
        "runs": runs,
        "seconds": round(time.perf_counter() - started, 1),
        "files": files,
    }
    first = runs[0]  # one target: its first mode's numbers at the top, as before
    keys = (
        "soft_before",
        "soft_after",
        "hard_before",
        "hard_after",
        "fidelity",
        "verdict",
        "z_norm",
        "best_step",
    )
    summary.update({"target": first["target"], **{k: first[k] for k in keys}})
    summary.update(scene_before=first["scene_before"], scene_after=first["scene_after"])
    return summary


def recorded_memory(dataset: str, max_steps: int) -> dict[str, np.ndarray]:
    """Memory and per-step fields of the first episodes of a recording, up to max_steps steps."""
    parts: dict[str, list[np.ndarray]] = {}
    total = 0
    for columns in iter_chunks(dataset):
        for k in ("memory", "carrying", "episode", "t", *[c for c in columns if c.startswith("router_")]):
            parts.setdefault(k, []).append(columns[k])
        total += len(columns["episode"])
        if total >= max_steps:
            break
    return {k: np.concatenate(v)[:max_steps] for k, v in parts.items()}


def pca(
    loaded: dict, dataset: str, out: Path, max_steps: int, num_clusters: int, layer: int | None, seed: int
) -> dict:
    data = recorded_memory(dataset, max_steps)
    mean, components, explained = pca_of(data["memory"])
    pcs = (data["memory"] - mean) @ components[:2].T
    clusters, _ = kmeans(
        (data["memory"] - mean) @ components[: min(10, len(components))].T, num_clusters, seed
    )
    routers = sorted(k for k in data if k.startswith("router_"))
    if routers:
        k = len(routers) - 1 if layer is None else layer
        if not 0 <= k < len(routers):
            raise GenerativeError(f"--layer {layer}: the agent has layers 0..{len(routers) - 1}")
        dominant, label = data[f"router_{k}"].argmax(-1), f"dominant expert, layer {k}"
    else:  # the GRU baseline: no router, colour by cluster
        dominant, label = clusters, "k-means cluster"
    episodes = np.unique(data["episode"])[:4]
    trajectories = [pcs[data["episode"] == e] for e in episodes]
    fig = plot_pca(pcs, data["carrying"], dominant, label, trajectories, explained)
    files = [_save_fig(fig, out / "pca.png")]
    np.savez(out / "pca.npz", mean=mean, components=components[:10], explained=explained[:10])
    files.append(str(out / "pca.npz"))
    per_cluster = []
    for j in range(num_clusters):
        sel = clusters == j
        if sel.any():
            row = {"cluster": j, "steps": int(sel.sum()), "carrying": float(data["carrying"][sel].mean())}
            for r in routers:
                row[f"{r}_mean_weight"] = data[r][sel].mean(0).round(3).tolist()
            per_cluster.append(row)
    return {
        "num_steps": int(len(pcs)),
        "explained_variance_ratio": explained[:10].round(4).tolist(),
        "clusters": per_cluster,
        "files": files,
    }


@torch.no_grad()
def directions(
    loaded: dict,
    dataset: str,
    out: Path,
    component: int,
    alphas: list[float],
    num_samples: int,
    max_steps: int,
    seed: int,
) -> dict:
    model, agent = loaded["model"], loaded["agent"]
    data = recorded_memory(dataset, max_steps)
    mean, components, explained = pca_of(data["memory"])
    if not 0 <= component < len(components):
        raise GenerativeError(f"--component {component}: the memory has {len(components)} components")
    direction = torch.from_numpy(components[component]).float()
    std = float(np.std((data["memory"] - mean) @ components[component]))
    _, init = _contexts(loaded, dataset, num_samples, seed)
    z = torch.zeros(len(init.memory), model.config.latent_size)
    expert_sizes = [list(s) for s in getattr(agent, "expert_sizes", ())]
    routing: dict[str, list[float]] = {}
    action_probs = []
    for alpha in alphas:

        def edit(step: int, memory: torch.Tensor, alpha: float = alpha) -> torch.Tensor:
            return memory + alpha * std * direction if step == 0 else memory

        sim = model.simulate(agent, init, z, memory_edit=edit)
        for k, w in enumerate(sim.agent.router_weights):
            for j in range(w.shape[-1]):
                routing.setdefault(f"layer_{k}:expert_{j} ({expert_sizes[k][j]})", []).append(
                    float(w[..., j].mean())
                )
        action_probs.append(torch.softmax(sim.agent.logits, -1).mean((0, 1)).numpy())
    actions = np.stack(action_probs)
    a = np.asarray(alphas, float)
    fig = plot_direction_effects(
        a,
        {k: np.asarray(v) for k, v in routing.items()},
        actions,
        f"memory PC{component + 1} ({explained[component]:.0%} of variance)",
    )
    files = [_save_fig(fig, out / f"direction_pc{component + 1}.png")]
    return {
        "component": component,
        "std": std,
        "alphas": alphas,
        "routing": routing,
        "action_probs": actions.round(4).tolist(),
        "files": files,
    }


@torch.no_grad()
def accuracy(loaded: dict, dataset: str, out: Path, num_windows: int, seed: int) -> dict:
    """The held-out windows train_generative.py evaluates (same windows, same order: the model's own
    --max_windows and --seed draw them)."""
    model, agent = loaded["model"], loaded["agent"]
    trained = loaded["ckpt"]["args"]
    windows, _, held = training_windows(dataset, model.config, trained["max_windows"], trained["seed"])
    batch = to_tensors(windows, held[:num_windows])
    result = {"num_windows": int(len(batch["image"]))}
    for name, forcing in (("closed_loop", 0.0), ("recorded_actions", 1.0)):
        torch.manual_seed(seed)
        _, sim = losses(model, agent, batch, loaded["lang_table"], sample=False, action_forcing=forcing)
        result[name] = accuracy_breakdown(sim, batch, model.config.num_init_steps)
    fig = plot_accuracy(
        np.asarray(result["closed_loop"]["by_view_cell"]),
        {k: result[k]["by_step"] for k in ("closed_loop", "recorded_actions")},
        f"held-out per-cell accuracy {result['closed_loop']['cell']:.3f} (closed loop)",
    )
    result["files"] = [_save_fig(fig, out / "accuracy.png")]
    return result


def saliency(
    loaded: dict, dataset: str, out: Path, targets: list[str], control: str, num_contexts: int, seed: int
) -> dict:
    """Saliency of each target and of the control on held-out contexts (generative_probes.saliency_maps):
    on the views the simulator generates from z = 0 and on the recorded views of the same steps,
    per view cell, and on the memory before the first simulated step, per memory block."""
    model, agent = loaded["model"], loaded["agent"]
    sizes = [list(s) for s in getattr(agent, "expert_sizes", ())]
    _, (batch, init) = context_split(loaded, dataset, 0, num_contexts, seed)
    n_init, steps = model.config.num_init_steps, model.config.num_sim_steps
    with torch.no_grad():
        sim = model.simulate(agent, init, torch.zeros(len(init.memory), model.config.latent_size))
    recorded = probes.recorded_views(batch, n_init, steps)
    blocks = probes.memory_blocks(agent)
    maps, results = {}, []
    for spec in [*targets, control]:
        target = parse_target(spec, sizes, loaded["agent_config"]["num_actions"])
        row = {"target": spec, "role": "control" if spec == control else "target"}
        for name, views in (("generated", sim.obs_probs), ("recorded", recorded)):
            sal = probes.saliency_maps(
                agent, model.obs_encoding, views, init.lang, sim.memory_start, target, sizes
            )
            cell_map = sal.cells.mean((0, 1))  # (7, 7) over (x, y)
            maps[(spec, name)] = cell_map
            share = cell_map / max(float(cell_map.sum()), 1e-30)
            row[name] = {
                "peak_cell": list(probes.peak_cell(cell_map)),
                "peak_share": float(share.max()),
                "map": cell_map.round(8).tolist(),
                "memory_share_of_total": float(
                    sal.memory.mean(0).sum() / max(sal.memory.mean(0).sum() + cell_map.sum() * steps, 1e-30)
                ),
                "memory_blocks": _block_means(sal.memory.mean(0), blocks),
            }
        g, r = (maps[(spec, n)].ravel() for n in ("generated", "recorded"))
        row["generated_vs_recorded_r"] = (
            float(np.corrcoef(g, r)[0, 1]) if g.std() > 0 and r.std() > 0 else math.nan
        )
        results.append(row)
    fig = plot_saliency(results, maps, [b for b, _ in blocks])
    return {
        "targets": targets,
        "control": control,
        "contexts": num_contexts,
        "results": results,
        "files": [_save_fig(fig, out / "saliency.png")],
    }


def _block_means(grad: np.ndarray, blocks: list[tuple[str, int]]) -> dict[str, float]:
    """Mean |gradient| per unit of each memory block."""
    out, start = {}, 0
    for name, width in blocks:
        out[name] = float(grad[start : start + width].mean()) if width else math.nan
        start += width
    return out


def edits(
    loaded: dict,
    dataset: str,
    out: Path,
    component: int,
    direction_file: str | None,
    num_contexts: int,
    max_steps: int,
    seed: int,
) -> dict:
    """Collapse and swap a memory direction inside held-out simulated rollouts (z = 0), record the
    samples (edit_<mode>_<direction>.npz: hard views, actions, routing) and re-read them with the
    real agent; a random unit direction is the control (generative_probes.edit_rollouts)."""
    model, agent = loaded["model"], loaded["agent"]
    data = recorded_memory(dataset, max_steps)
    mean, components, explained = pca_of(data["memory"])
    size = data["memory"].shape[1]
    if direction_file is not None:
        u, where = check_direction(direction_file, size), f"--direction {direction_file}"
    else:
        if not 0 <= component < len(components):
            raise GenerativeError(f"--component {component}: the memory has {len(components)} components")
        u, where = components[component], f"memory PC{component + 1} ({explained[component]:.0%} of variance)"
    rng = np.random.default_rng(seed)
    directions = {"direction": u / np.linalg.norm(u), "random": rng.standard_normal(size)}
    directions["random"] /= np.linalg.norm(directions["random"])
    _, (_, init) = context_split(loaded, dataset, 0, num_contexts, seed)
    z = torch.zeros(model.config.latent_size)
    mu = torch.from_numpy(mean).float()
    sizes = [list(s) for s in getattr(agent, "expert_sizes", ())]
    labels = [f"layer_{k}:expert_{j}" for k, s in enumerate(sizes) for j in range(len(s))]
    results, files = {}, []
    for dname, vec in directions.items():
        d = torch.from_numpy(vec).float()
        base = probes.edit_rollouts(model, agent, init, z, probes.edit_function("none", d, mu), d, mu)
        results[dname] = {"unedited_projection": list(probes.mean_interval(base.projection.mean(1)))}
        for mode in ("collapse", "swap"):
            edited = probes.edit_rollouts(model, agent, init, z, probes.edit_function(mode, d, mu), d, mu)
            path = out / f"edit_{mode}_{dname}.npz"
            arrays = {
                "views": edited.views,
                "actions": edited.actions,
                "reread_actions": edited.reread_actions,
                "projection": edited.projection,
                **{f"router_{k}": w for k, w in enumerate(edited.routing)},
            }
            files.append(_save_npz(path, arrays))
            results[dname][mode] = probes.edit_effects(edited, base, labels)
    files.append(_save_fig(plot_edits(results, labels, where), out / "edits.png"))
    return {"direction": where, "contexts": num_contexts, "results": results, "files": files}


def behaviours(
    loaded: dict, dataset: str, out: Path, num_clusters: int, window: int, max_windows: int, seed: int
) -> dict:
    """k-means behaviours of recorded windows (generative_probes.cluster_windows), fitted on training
    episodes, described on held-out ones: per cluster its share, actions, routing (mean and 95%
    interval over held-out windows), carrying, time in the episode; examples and stability."""
    agent = loaded["agent"]
    windows = load_windows(dataset, window, stride=max(1, window // 2), max_windows=max_windows, seed=seed)
    train_idx, held_idx = split_windows(windows)
    train = np.zeros(len(windows["episode"]), bool)
    train[train_idx] = True
    mean, components, _ = pca_of(windows["memory"][train].reshape(-1, windows["memory"].shape[-1]))
    k_comp = min(10, len(components))
    num_actions = loaded["agent_config"]["num_actions"]
    features = probes.window_features(
        windows["memory"], windows["action"], mean, components[:k_comp], num_actions
    )
    if num_clusters > int(train.sum()):
        raise GenerativeError(
            f"--num_clusters {num_clusters}: only {int(train.sum())} training windows of {window} steps"
        )
    labels, centres, stability = probes.cluster_windows(features, train, num_clusters, seed)
    sizes = [list(s) for s in getattr(agent, "expert_sizes", ())]
    routers = [f"router_{k}" for k in range(len(sizes))]
    clusters = []
    for c in range(num_clusters):
        held = np.flatnonzero(~train & (labels == c))
        row = {
            "cluster": c,
            "train_share": float((labels[train] == c).mean()),
            "held_out_windows": int(len(held)),
            "held_out_share": float(len(held) / max(1, int((~train).sum()))),
        }
        if len(held):
            acts = windows["action"][held].astype(int)
            row["actions"] = {
                ACTION_NAMES[a]: float((acts == a).mean()) for a in range(min(num_actions, len(ACTION_NAMES)))
            }
            row["carrying"] = float(windows["carrying"][held].mean())
            row["mean_t"] = float(windows["t"][held].mean())
            row["routing"] = {
                f"layer_{k}:expert_{j}": list(probes.mean_interval(windows[r][held][..., j].mean(1)))
                for k, r in enumerate(routers)
                for j in range(len(sizes[k]))
            }
            nearest = held[np.argmin(((features[held] - centres[c]) ** 2).sum(1))]
            row["example"] = {
                "episode": int(windows["episode"][nearest, 0]),
                "t": int(windows["t"][nearest, 0]),
            }
            row["_views"] = windows["image"][nearest]
        clusters.append(row)
    fig = plot_behaviours(clusters, stability)
    for row in clusters:
        row.pop("_views", None)
    return {
        "windows": {"train": int(train.sum()), "held_out": int((~train).sum()), "length": window},
        "features": f"memory on {k_comp} principal components per step ⊕ one-hot actions",
        "stability_ari": stability,
        "clusters": clusters,
        "files": [_save_fig(fig, out / "behaviours.png")],
    }


# ----------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    return generative_analysis_parser(__doc__)


def check_args(args: argparse.Namespace) -> list[float]:
    """Every numeric flag, --alphas, --modes and --target's presence (ConfigError, one line;
    mop.cli_specs, checked before the imports too when run as a script); the alphas."""
    return check_generative_analysis_args(args)


def run(args: argparse.Namespace) -> dict:
    alphas = check_args(args)
    out = Path(args.out) if args.out else Path(args.model).parent / args.analysis
    check_writable_dir(out, "--out")
    if args.direction is not None and not Path(args.direction).is_file():
        raise GenerativeError(f"--direction {args.direction!r} is not a file")
    torch.set_num_threads(args.num_threads)
    loaded = load_model(args.model)
    sizes = [list(s) for s in getattr(loaded["agent"], "expert_sizes", ())]
    num_actions = loaded["agent_config"]["num_actions"]
    targets: list[str] = []
    if args.analysis in NEEDS_TARGET:  # a bad target is refused before any work
        targets = target_list(args.target, sizes, num_actions)
        target_list(args.control, sizes, num_actions)
    if args.analysis == "edits" and args.direction is not None:
        check_direction(args.direction, int(loaded["agent"].memory_size))
    dataset, _ = _dataset(loaded, args.dataset)
    created = [p for p in [out, *out.parents] if not p.exists()]
    out.mkdir(parents=True, exist_ok=True)
    try:
        summary = _dispatch(args, loaded, dataset, out, targets, alphas)
    except BaseException:
        for folder in created:  # a refused analysis leaves no empty folder behind (deepest first)
            try:
                folder.rmdir()
            except OSError:
                break
        raise
    summary = {"analysis": args.analysis, "model": str(args.model), **summary}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
    return summary


def check_direction(path: str, size: int) -> np.ndarray:
    """The unit vector of a --direction .npy file of `size` finite numbers; GenerativeError otherwise."""
    try:
        u = np.load(path, allow_pickle=False).astype(np.float64).ravel()
    except (OSError, ValueError) as e:
        raise GenerativeError(f"--direction {path!r} is not a .npy array ({type(e).__name__})") from None
    if u.shape != (size,) or not np.isfinite(u).all() or not np.linalg.norm(u) > 0:
        raise GenerativeError(
            f"--direction {path!r} holds {u.size} numbers; a direction must be {size} finite numbers "
            "(the agent's memory size), not all 0"
        )
    return u / np.linalg.norm(u)


def _dispatch(
    args: argparse.Namespace, loaded: dict, dataset: str, out: Path, targets: list[str], alphas: list[float]
) -> dict:
    if args.analysis == "samples":
        summary = samples(
            loaded, dataset, out, args.num_samples, args.seed, args.prior_scale, args.from_episode_start
        )
    elif args.analysis == "maximise":
        modes = [m.strip() for m in args.modes.split(",") if m.strip()]
        summary = maximise(
            loaded,
            dataset,
            out,
            targets,
            args.control,
            modes,
            args.num_opt_contexts,
            args.num_contexts,
            args.steps,
            args.lr,
            args.kl_weight,
            args.minimise,
            args.seed,
            args.from_episode_start,
            margin=args.margin,
        )
    elif args.analysis == "accuracy":
        summary = accuracy(loaded, dataset, out, args.num_windows, args.seed)
    elif args.analysis == "pca":
        summary = pca(loaded, dataset, out, args.max_steps, args.num_clusters, args.layer, args.seed)
    elif args.analysis == "saliency":
        summary = saliency(loaded, dataset, out, targets, args.control, args.num_contexts, args.seed)
    elif args.analysis == "edits":
        summary = edits(
            loaded, dataset, out, args.component, args.direction, args.num_contexts, args.max_steps, args.seed
        )
    elif args.analysis == "behaviours":
        summary = behaviours(
            loaded, dataset, out, args.num_clusters, args.window, args.max_windows, args.seed
        )
    else:
        summary = directions(
            loaded, dataset, out, args.component, alphas, args.num_samples, args.max_steps, args.seed
        )
    return summary


SHOWN_HIDDEN = (
    "files",
    "optimised_actions",
    "simulated_actions",
    "routing",
    "clusters",
    "runs",
    "results",
    "sensitivity",
    "scene_before",
    "scene_after",
)


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    try:
        summary = run(args)
    except (GenerativeError, RecordingError, ConfigError, OutputError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    shown = {k: v for k, v in summary.items() if k not in SHOWN_HIDDEN}
    for k in ("closed_loop", "recorded_actions"):  # the accuracy analysis: the headline numbers
        if k in shown:
            shown[k] = {m: shown[k][m] for m in ("cell", "channels", "action_agreement", "agreeing_prefix")}
    print(json.dumps(shown))
    for line in probes.report_lines(summary):
        print(line)
    print("wrote", Path(summary["files"][-1]).parent)
    return summary


if __name__ == "__main__":
    with command_edges():
        main()
