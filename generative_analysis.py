"""Analyses of an agent through its trained generative model (train_generative.py).

--analysis
  samples     decode rollouts from the prior (z ~ N(0, I)) after real init steps; render them with
              minigrid's renderer beside the real recorded rollouts (PNG strip + GIFs)
  maximise    gradient ascent on z (the KL to the prior as a leash) to raise (or --minimise) a
              target along the simulated rollout: 'layer_<k>:expert_<j>' router weight, 'lpc' or
              'action:<a>' probability. Fidelity: the real agent re-run on the argmax (hard)
              decoded views from the same memory; how far the target still moves
  pca         PCA and k-means of the recorded memory; PC1-PC2 coloured by carrying and by the
              dominant expert, with episode trajectories
  directions  shift the agent's memory along a PCA direction inside the simulated rollout and
              measure how routing and action probabilities change
  accuracy    where the decoded views are wrong on held-out windows (posterior-mean z): per
              channel, per view cell, per simulated step, per object, changed vs unchanged
              cells; closed loop (the world moves by the agent's own greedy actions, the
              training metric) and with the recorded actions; agreeing_prefix: the same over
              the steps the simulated agent reaches by taking the recorded actions
Writes <out>/<analysis>/{summary.json, *.png, *.gif}; default out: the model's folder.

    python generative_analysis.py --model generative/BabyAI-UnlockPickup-v0/trial_0/final/model_final.pt --analysis samples
    python generative_analysis.py --model ... --analysis maximise --target layer_0:expert_2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from mop.experiment import ArgumentParser
from mop.generative import (
    Init,
    accuracy_breakdown,
    batch_init,
    decoded_image,
    losses,
    parse_target,
    run_agent,
    target_value,
)
from mop.generative_plots import (
    frames_to_gif,
    plot_accuracy,
    plot_direction_effects,
    plot_pca,
    plot_rollout_strips,
    render_view,
)
from mop.runs import atomic_write, atomic_write_text
from record import RecordingError, iter_chunks, load_windows, read_metadata
from train_generative import GenerativeError, load_model, split_windows, to_tensors, training_windows

ANALYSES = ("samples", "maximise", "pca", "directions", "accuracy")


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


def maximise(
    loaded: dict,
    dataset: str,
    out: Path,
    target_spec: str,
    num_samples: int,
    steps: int,
    lr: float,
    kl_weight: float,
    minimise: bool,
    seed: int,
    from_start: bool = False,
) -> dict:
    model, agent = loaded["model"], loaded["agent"]
    expert_sizes = [list(s) for s in getattr(agent, "expert_sizes", ())]
    target = parse_target(target_spec, expert_sizes, loaded["agent_config"]["num_actions"])
    batch, init = _contexts(loaded, dataset, num_samples, seed, from_start)
    sign = -1.0 if minimise else 1.0
    enc = model.obs_encoding

    def measure(z: torch.Tensor) -> tuple[float, float, object]:
        with torch.no_grad():
            sim = model.simulate(agent, init, z)
            soft = target_value(sim.agent, target, expert_sizes)
            hard_trace = run_agent(
                agent, enc, [o.argmax() for o in sim.obs_probs], init.lang, sim.memory_start
            )
            hard = target_value(hard_trace, target, expert_sizes)
        return float(soft.mean()), float(hard.mean()), sim

    z0 = torch.zeros(len(init.memory), model.config.latent_size)
    soft_before, hard_before, sim_before = measure(z0)
    z = z0.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([z], lr=lr)
    best: tuple[float, torch.Tensor, int] | None = None
    started = time.perf_counter()
    for step in range(steps):
        sim = model.simulate(agent, init, z)
        value = target_value(sim.agent, target, expert_sizes).mean()
        objective = sign * value - kl_weight * 0.5 * z.pow(2).sum(-1).mean()
        if best is None or objective.item() > best[0]:  # Adam on z can overshoot: keep the best z
            best = (objective.item(), z.detach().clone(), step)
        optimizer.zero_grad()
        (-objective).backward()
        optimizer.step()
    seconds = time.perf_counter() - started
    z = best[1] if best is not None else z.detach()
    best_step = best[2] if best is not None else 0
    soft_after, hard_after, sim_after = measure(z)
    moved_soft = soft_after - soft_before
    fidelity = (hard_after - hard_before) / moved_soft if abs(moved_soft) > 1e-9 else float("nan")
    n_init = model.config.num_init_steps
    real = batch["image"].numpy().astype(np.uint8)
    before, after = _decoded_codes(sim_before), _decoded_codes(sim_after)
    rows, labels = [], []
    for b in range(len(before)):
        rows += [list(real[b, :n_init]) + list(before[b]), list(real[b, :n_init]) + list(after[b])]
        labels += [f"z=0 {b}", f"optimised {b}"]
    word = "minimise" if minimise else "maximise"
    slug = target_spec.replace(":", "_")
    fig = plot_rollout_strips(
        rows,
        labels,
        f"{word} {target_spec}: soft {soft_before:.3f} → {soft_after:.3f}, hard {hard_before:.3f} → {hard_after:.3f}",
    )
    files = [_save_fig(fig, out / f"{word}_{slug}.png")]
    for b in range(len(after)):
        gif = out / f"{word}_{slug}_{b}.gif"
        frames_to_gif([render_view(v) for v in list(real[b, :n_init]) + list(after[b])], gif)
        files.append(str(gif))
    carrying = torch.stack([o.carrying[..., 1] for o in sim_after.obs_probs], 1)
    return {
        "scene_before": scene_stats(sim_before),
        "scene_after": scene_stats(sim_after),
        "target": target_spec,
        "direction": word,
        "soft_before": soft_before,
        "soft_after": soft_after,
        "hard_before": hard_before,
        "hard_after": hard_after,
        "fidelity": fidelity,
        "z_norm": float(z.detach().norm(dim=-1).mean()),
        "best_step": best_step,  # the step on z whose z is kept (0: none beat z = 0)
        "optimised_mean_carrying": float(carrying.mean()),
        "optimised_actions": sim_after.agent.logits.argmax(-1).tolist(),
        "seconds": round(seconds, 2),
        "files": files,
    }


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


def pca_of(memory: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean (M,), components (K, M) unit rows, explained variance ratio (K,))."""
    mean = memory.mean(0)
    _, sv, vt = np.linalg.svd(memory - mean, full_matrices=False)
    var = sv**2
    return mean, vt, var / var.sum()


def kmeans(x: np.ndarray, k: int, seed: int, iterations: int = 50) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = x[rng.choice(len(x), size=min(k, len(x)), replace=False)]
    for _ in range(iterations):
        labels = ((x[:, None] - centres[None]) ** 2).sum(-1).argmin(1)
        centres = np.stack(
            [x[labels == j].mean(0) if (labels == j).any() else centres[j] for j in range(len(centres))]
        )
    return labels


def pca(
    loaded: dict, dataset: str, out: Path, max_steps: int, num_clusters: int, layer: int | None, seed: int
) -> dict:
    data = recorded_memory(dataset, max_steps)
    mean, components, explained = pca_of(data["memory"])
    pcs = (data["memory"] - mean) @ components[:2].T
    clusters = kmeans((data["memory"] - mean) @ components[: min(10, len(components))].T, num_clusters, seed)
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


# ----------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model_final.pt of train_generative.py")
    p.add_argument("--analysis", required=True, choices=ANALYSES)
    p.add_argument("--dataset", default=None, help="recording for contexts (default: the model's)")
    p.add_argument("--out", default=None, help="output folder (default: <model folder>/<analysis>)")
    p.add_argument("--num_samples", type=int, default=4)
    p.add_argument("--num_windows", type=int, default=512, help="accuracy: held-out windows")
    p.add_argument(
        "--prior_scale", type=float, default=1.0, help="samples: z ~ N(0, s^2 I) (0: the prior mean)"
    )
    p.add_argument("--target", default=None, help="maximise: layer_<k>:expert_<j> | lpc | action:<a>")
    p.add_argument("--minimise", action="store_true", help="maximise: lower the target instead")
    p.add_argument(
        "--from_episode_start",
        action="store_true",
        help="samples/maximise: contexts that begin at an episode's first step",
    )
    p.add_argument("--steps", type=int, default=60, help="maximise: gradient steps on z (default 60)")
    p.add_argument("--lr", type=float, default=0.05, help="maximise: Adam step size on z")
    p.add_argument("--kl_weight", type=float, default=0.01, help="maximise: weight of the 0.5*|z|^2 leash")
    p.add_argument("--max_steps", type=int, default=20_000, help="pca/directions: recorded steps used")
    p.add_argument("--num_clusters", type=int, default=6)
    p.add_argument(
        "--layer", type=int, default=None, help="pca: layer whose dominant expert colours (default last)"
    )
    p.add_argument("--component", type=int, default=0, help="directions: 0-based PCA component")
    p.add_argument("--alphas", default="-3,-1.5,0,1.5,3", help="directions: shifts in std units")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num_threads", type=int, default=1)
    return p


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.num_threads)
    if args.analysis == "maximise" and not args.target:
        raise GenerativeError("--analysis maximise needs --target (layer_<k>:expert_<j> | lpc | action:<a>)")
    loaded = load_model(args.model)
    if args.analysis == "maximise":  # a bad target is refused before any work
        try:
            parse_target(
                args.target,
                [list(s) for s in getattr(loaded["agent"], "expert_sizes", ())],
                loaded["agent_config"]["num_actions"],
            )
        except ValueError as e:
            raise GenerativeError(str(e)) from None
    dataset, _ = _dataset(loaded, args.dataset)
    out = Path(args.out) if args.out else Path(args.model).parent / args.analysis
    out.mkdir(parents=True, exist_ok=True)
    if args.analysis == "samples":
        summary = samples(
            loaded, dataset, out, args.num_samples, args.seed, args.prior_scale, args.from_episode_start
        )
    elif args.analysis == "maximise":
        summary = maximise(
            loaded,
            dataset,
            out,
            args.target,
            args.num_samples,
            args.steps,
            args.lr,
            args.kl_weight,
            args.minimise,
            args.seed,
            args.from_episode_start,
        )
    elif args.analysis == "accuracy":
        summary = accuracy(loaded, dataset, out, args.num_windows, args.seed)
    elif args.analysis == "pca":
        summary = pca(loaded, dataset, out, args.max_steps, args.num_clusters, args.layer, args.seed)
    else:
        alphas = [float(a) for a in args.alphas.split(",")]
        summary = directions(
            loaded, dataset, out, args.component, alphas, args.num_samples, args.max_steps, args.seed
        )
    summary = {"analysis": args.analysis, "model": str(args.model), **summary}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
    return summary


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    try:
        summary = run(args)
    except (GenerativeError, RecordingError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    hidden = ("files", "optimised_actions", "simulated_actions", "routing", "clusters")
    shown = {k: v for k, v in summary.items() if k not in hidden}
    for k in ("closed_loop", "recorded_actions"):  # the accuracy analysis: the headline numbers
        if k in shown:
            shown[k] = {m: shown[k][m] for m in ("cell", "channels", "action_agreement", "agreeing_prefix")}
    print(json.dumps(shown))
    print("wrote", Path(summary["files"][-1]).parent)
    return summary


if __name__ == "__main__":
    main()
