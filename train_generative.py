"""Train the generative model of agent-environment rollouts (generative.py) on a recording (record.py).

The agent inside the simulator is the frozen agent the dataset was recorded from: its checkpoint is
read from the recording's metadata (or --agent_checkpoint) and its weights hash must equal the
recording's. Windows of num_init_steps + num_sim_steps steps of one episode are the examples; one
episode in ten is held out, and held-out reconstruction accuracy per channel, agent-memory error
and action agreement are logged to metrics.jsonl beside the checkpoints:
    <out>/model_<update>.pt, model_final.pt, metrics.jsonl
(default out: generative/<task>/trial_<N>/[seed_<S>/]<final|update_U>/, mirroring the recording).
One process writes an --out folder at a time (mop.runs.own_run, the run lock every writer of a run
folder takes: a second is refused in one line). --resume continues from the newest model file and
drops the metrics rows logged after it (a run killed between checkpoints logs those updates again).
KL: --kl_free_bits λ trains on sum_d max(KL_d, λ) (free bits per latent dimension) and
--kl_warmup_updates N scales the KL term up from 0 over the first N updates; metrics.jsonl logs the
true KL (loss/kl, nats per window) and the dimensions above 0.01 nats (loss/kl_active_dims).

    python train_generative.py --dataset recordings/BabyAI-UnlockPickup-v0/trial_0/final \
        --num_sim_steps 16 --num_init_steps 3 --num_updates 5000
    python train_generative.py --dataset ... --resume
    python train_generative.py --dataset ... --device cuda   # the model and the agent on the GPU
"""

from __future__ import annotations

if __name__ == "__main__":  # flags answered before torch and pyarrow load (bench/startup.py)
    from mop.cli_specs import answer_early, check_train_generative_args, train_generative_parser

    answer_early(lambda: check_train_generative_args(train_generative_parser(__doc__).parse_args()))

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from mop.checks import command_edges
from mop.cli_specs import LOSS_NAMES, check_train_generative_args, train_generative_parser
from mop.devices import (
    DeviceError,
    cuda_rng_state,
    resolve_device,
    set_cuda_rng_state,
    to_cpu,
    use_deterministic,
)
from mop.experiment import CheckpointError, ConfigError, load_policy
from mop.generative import GenerativeConfig, GenerativeModel, losses, reconstruction_metrics
from mop.progress import progress_bar
from mop.runs import (
    OutputError,
    RunLockedError,
    RunPathError,
    atomic_write,
    atomic_write_text,
    check_writable_dir,
    own_run,
    run_subpath,
)
from record import RecordingError, load_windows, read_metadata, weights_hash

MODEL_FORMAT = 2  # 2: the canvas decoder (format 1 models have no canvas: retrain them)
HELD_OUT_EVERY = 10  # episode % 10 == 0 is held out
LR_FLOOR = 0.05  # the cosine schedule ends at this fraction of --lr


class GenerativeError(ValueError):
    """A bad dataset, model file or option; one line."""


def load_agent(
    checkpoint_path: str, expected_hash: str | None
) -> tuple[torch.nn.Module, torch.nn.Module, dict]:
    """The frozen agent of a recording / model; GenerativeError if its weights are not the expected ones."""
    try:
        agent, encoder, config = load_policy(checkpoint_path)
    except CheckpointError as e:
        raise GenerativeError(str(e)) from None
    if expected_hash is not None and weights_hash(agent, encoder) != expected_hash:
        raise GenerativeError(
            f"agent checkpoint {checkpoint_path!r} is not the agent the recording was made with "
            "(weights hash differs): record again with this checkpoint"
        )
    for p in [*agent.parameters(), *encoder.parameters()]:
        p.requires_grad_(False)
    return agent, encoder, config


@torch.no_grad()
def mission_table(encoder: torch.nn.Module, missions: list[str]) -> torch.Tensor:
    return encoder(missions).detach() if missions else torch.zeros(0)


def read_model_file(path: Path, context: str = "model") -> dict:
    """The dict a generative model file holds, read without running code (weights_only: a crafted
    pickle is refused, not unpickled); GenerativeError in one line for a missing, unreadable,
    corrupt or foreign file. context starts the message (e.g. '--resume: model')."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError for a crafted pickle, EOFError/RuntimeError for a torn file
        raise GenerativeError(
            f"{context} {str(path)!r} is missing, unreadable or corrupt ({type(e).__name__})"
        ) from None
    if not isinstance(ckpt, dict) or "format_version" not in ckpt:
        raise GenerativeError(f"{context} {str(path)!r} is not a generative model of this project")
    return ckpt


def load_model(path: str | Path) -> dict:
    """A trained generative model with its agent: {model, agent, encoder, agent_config, lang_table,
    meta (the recording's), ckpt}. GenerativeError in one line for a bad file or agent."""
    path = Path(path)
    ckpt = read_model_file(path)
    if ckpt["format_version"] != MODEL_FORMAT:
        raise GenerativeError(
            f"{str(path)!r} is a format {ckpt['format_version']!r} generative model; this code reads "
            f"format {MODEL_FORMAT} (the canvas decoder): train it again with train_generative.py"
        )
    agent, encoder, agent_config = load_agent(ckpt["agent_checkpoint"], ckpt["agent_hash"])
    config = GenerativeConfig(**ckpt["generative_config"])
    model = GenerativeModel(
        config, agent_config["obs_encoding"], agent_config["lang_dim"], agent_config["num_actions"]
    )
    model.load_state_dict(ckpt["model_state"])
    model.eval()
    return {
        "model": model,
        "agent": agent,
        "encoder": encoder,
        "agent_config": agent_config,
        "lang_table": mission_table(encoder, ckpt["missions"]),
        "ckpt": ckpt,
    }


def scheduled_lr(lr: float, schedule: str, progress: float) -> float:
    """The learning rate at `progress` (0: start, 1: the end of the budget) of a schedule."""
    if schedule == "constant":
        return lr
    return lr * (LR_FLOOR + (1 - LR_FLOOR) * 0.5 * (1 + math.cos(math.pi * min(max(progress, 0.0), 1.0))))


def to_tensors(
    windows: dict[str, np.ndarray], index: np.ndarray, device: torch.device | None = None
) -> dict[str, torch.Tensor]:
    """The windows `index` as tensors (float32 or int64), on `device` (None: the CPU)."""
    out = {}
    for k in ("image", "direction", "carrying", "mission_index", "memory", "logits", "action", "done"):
        v = windows[k][index]
        out[k] = torch.from_numpy(
            v.astype(np.float32) if v.dtype in (np.float32, np.float64) else v.astype(np.int64)
        ).to(device or "cpu")
    return out


def split_windows(windows: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) window indices: whole episodes held out (episode % 10 == 0)."""
    episode = windows["episode"][:, 0]
    held = episode % HELD_OUT_EVERY == 0
    if held.all() or not held.any():  # tiny datasets: hold out the last tenth
        held = np.zeros(len(episode), bool)
        held[-max(1, len(episode) // HELD_OUT_EVERY) :] = True
    train = np.flatnonzero(~held)
    return (train if len(train) else np.flatnonzero(held)), np.flatnonzero(held)


def training_windows(
    dataset: str, config: GenerativeConfig, max_windows: int, seed: int
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """The windows a model with `config` trains on (a random subset of about max_windows, drawn
    with `seed`) and their (train, held-out) split: train() and the accuracy analysis read the
    same held-out windows, in the same order, when given the model's max_windows and seed."""
    windows = load_windows(dataset, config.window, max(1, config.window // 2), max_windows, seed)
    return (windows, *split_windows(windows))


@torch.no_grad()
def evaluate(model, agent, windows, index, lang_table, batch_size: int = 256) -> dict[str, float]:
    """Held-out metrics with the posterior mean z, averaged over windows."""
    model.eval()
    totals: dict[str, float] = {}
    n = 0
    for lo in range(0, len(index), batch_size):
        batch = to_tensors(windows, index[lo : lo + batch_size], lang_table.device)
        loss, sim = losses(model, agent, batch, lang_table, sample=False)  # kl: the plain KL
        m = {
            **{f"loss/{k}": float(v) for k, v in loss.items()},
            **reconstruction_metrics(sim, batch, model.config.num_init_steps),
        }
        b = len(batch["image"])
        for k, v in m.items():
            totals[k] = totals.get(k, 0.0) + v * b
        n += b
    model.train()
    return {f"held_out/{k}": v / n for k, v in totals.items()}


def build_parser() -> argparse.ArgumentParser:
    return train_generative_parser(__doc__)


def _newest_model(out: Path) -> Path | None:
    if (out / "model_final.pt").exists():
        return out / "model_final.pt"
    found = sorted(
        out.glob("model_*.pt"),
        key=lambda p: int(p.stem.split("_")[1]) if p.stem.split("_")[1].isdigit() else -1,
    )
    return found[-1] if found else None


def _truncate_metrics(path: Path, last_update: int) -> None:
    """Drop metrics rows logged after `last_update` (updates a killed run logged after its newest
    model file: the resumed run logs them again)."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines()
    kept = [line for line in lines if line.strip() and json.loads(line).get("update", 0) <= last_update]
    if len(kept) != len(lines):
        atomic_write_text(path, "".join(line + "\n" for line in kept))


def train(args: argparse.Namespace) -> dict:
    check_train_generative_args(args)  # numbers, --device's spelling (as a script: before the imports)
    torch.set_num_threads(args.num_threads)
    try:
        device = resolve_device(args.device)
    except DeviceError as e:
        raise GenerativeError(str(e)) from None
    try:
        config = GenerativeConfig(
            num_init_steps=args.num_init_steps,
            num_sim_steps=args.num_sim_steps,
            z_dim=args.z_dim,
            hidden_size=args.hidden_size,
            obs_temperature=args.obs_temperature,
            decoder_channels=args.decoder_channels,
            map_channels=args.map_channels,
        )
    except ValueError as e:
        raise GenerativeError(str(e)) from None
    meta = read_metadata(args.dataset)
    agent_path = args.agent_checkpoint or meta["checkpoint_path"]
    agent, encoder, agent_config = load_agent(agent_path, meta["agent_hash"])
    out = Path(args.out) if args.out else Path("generative") / run_subpath(args.dataset)
    check_writable_dir(out, "--out")
    with own_run(out):  # one writer per folder: a second training into it is refused
        return _train_locked(args, config, meta, agent_path, agent, encoder, agent_config, out, device)


def _train_locked(
    args, config, meta, agent_path, agent, encoder, agent_config, out: Path, device: torch.device
) -> dict:
    resume_from = _newest_model(out) if args.resume else None
    if args.resume and resume_from is None:
        raise GenerativeError(f"--resume: no model_*.pt in {str(out)!r}")
    if not args.resume and (out / "model_final.pt").exists():
        raise GenerativeError(f"{str(out)!r} already holds model_final.pt; use --resume or another --out")
    windows, train_idx, held_idx = training_windows(args.dataset, config, args.max_windows, args.seed)
    held_idx = held_idx[: args.max_held_out]
    use_deterministic(device)
    lang_table = mission_table(encoder, meta["missions"]).to(device)
    agent.to(device)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    # built on the CPU (the same initial weights on every device), moved after a resume's load
    model = GenerativeModel(
        config, agent_config["obs_encoding"], agent_config["lang_dim"], agent_config["num_actions"]
    )
    start, ckpt = 0, None
    if resume_from is not None:
        ckpt = read_model_file(resume_from, "--resume: model")
        if ckpt.get("format_version") != MODEL_FORMAT:
            raise GenerativeError(
                f"--resume: {str(resume_from)!r} is a format {ckpt.get('format_version')!r} model, "
                f"this code trains format {MODEL_FORMAT}; start a new --out"
            )
        if ckpt.get("agent_hash") != meta["agent_hash"]:
            raise GenerativeError(
                f"--resume: {str(resume_from)!r} was trained on another agent than this recording's"
            )
        if ckpt["generative_config"] != config.to_dict():
            raise GenerativeError(
                f"--resume: {str(resume_from)!r} has config {ckpt['generative_config']}, not {config.to_dict()}"
            )
        model.load_state_dict(ckpt["model_state"])
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    if ckpt is not None:  # Adam moves its state to the parameters' device (a resume may switch)
        optimizer.load_state_dict(ckpt["optimizer_state"])
        start = int(ckpt["update"])
        torch.set_rng_state(ckpt["torch_rng"])
        set_cuda_rng_state(ckpt.get("cuda_rng"), device)
        rng = np.random.default_rng(args.seed + start)
    out.mkdir(parents=True, exist_ok=True)
    metrics_path = out / "metrics.jsonl"
    if resume_from is None:
        metrics_path.unlink(missing_ok=True)
    else:
        _truncate_metrics(metrics_path, start)
    scales = {k: getattr(args, f"loss_scale_{k}") for k in LOSS_NAMES}

    def save(update: int, final: bool) -> Path:
        payload = {
            "format_version": MODEL_FORMAT,
            "model_state": to_cpu(model.state_dict()),  # device-free: loads on any machine
            "optimizer_state": to_cpu(optimizer.state_dict()),
            "generative_config": config.to_dict(),
            "agent_checkpoint": str(agent_path),
            "agent_hash": meta["agent_hash"],
            "dataset": str(args.dataset),
            "missions": meta["missions"],
            "update": update,
            "torch_rng": torch.get_rng_state(),
            **({"cuda_rng": cuda_rng_state(device)} if device.type == "cuda" else {}),
            "args": {
                k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool, type(None)))
            },
        }
        name = "model_final.pt" if final else f"model_{update}.pt"
        return atomic_write(out / name, lambda tmp: torch.save(payload, tmp))

    model.train()
    started = time.perf_counter()
    last: dict = {}
    bar = progress_bar(
        args.num_updates - start,
        "train_generative",
        enabled=not args.no_progress,
        iterable=range(start, args.num_updates),
    )
    u = start
    for update in bar:
        progress = update / args.num_updates  # set every update: a resumed optimizer keeps its old lr
        if args.max_minutes is not None:
            progress = max(progress, (time.perf_counter() - started) / (60 * args.max_minutes))
        for group in optimizer.param_groups:
            group["lr"] = scheduled_lr(args.lr, args.lr_schedule, progress)
        batch = to_tensors(
            windows,
            rng.choice(train_idx, size=args.batch_size, replace=len(train_idx) < args.batch_size),
            device,
        )
        loss, _ = losses(
            model, agent, batch, lang_table, action_forcing=args.action_forcing, free_bits=args.kl_free_bits
        )
        warmup = min(1.0, (update + 1) / args.kl_warmup_updates) if args.kl_warmup_updates else 1.0
        total = sum(scales[k] * loss[k] for k in LOSS_NAMES if k != "kl")
        total = total + warmup * scales["kl"] * loss["kl_objective"]
        optimizer.zero_grad()
        total.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
        u = update + 1
        out_of_time = args.max_minutes is not None and time.perf_counter() - started > 60 * args.max_minutes
        if u % args.log_interval == 0 or u == args.num_updates or out_of_time:
            row = {
                "update": u,
                "train/loss": total.item(),
                **{f"train/{k}": v.item() for k, v in loss.items()},
                "train/grad_norm": float(grad_norm),
                "train/lr": optimizer.param_groups[0]["lr"],
                "train/kl_weight": warmup * scales["kl"],
                **evaluate(model, agent, windows, held_idx, lang_table),
                "time/elapsed_s": time.perf_counter() - started,
            }
            with open(metrics_path, "a") as f:
                f.write(
                    json.dumps(
                        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
                    )
                    + "\n"
                )
            last = row
            bar.set_postfix(loss=f"{total.item():.3f}", cell=f"{row.get('held_out/acc/cell', math.nan):.3f}")
        if u % args.checkpoint_interval == 0 and u != args.num_updates and not out_of_time:
            save(u, False)
        if out_of_time:
            break
    bar.close()
    final = save(u, True)
    return {
        "out": str(out),
        "model": str(final),
        "num_train_windows": int(len(train_idx)),
        "num_held_out_windows": int(len(held_idx)),
        "seconds": round(time.perf_counter() - started, 1),
        "metrics": last,
    }


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    try:
        summary = train(args)
    except (GenerativeError, RecordingError, RunPathError, ConfigError, RunLockedError, OutputError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    m = summary["metrics"]
    keys = [k for k in m if k.startswith("held_out/acc/") or k.startswith("held_out/memory/")]
    print(f"{summary['model']}  ({summary['seconds']} s)")
    print("  ".join(f"{k.removeprefix('held_out/')} {m[k]:.4f}" for k in keys))
    return summary


if __name__ == "__main__":
    with command_edges("interrupted: continue with --resume"):
        main()
