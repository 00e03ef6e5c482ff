"""Record a dataset of agent-environment rollouts for the generative model (train_generative.py).

A trained checkpoint plays `num_episodes` evaluation-range layouts (EVAL_SEED_START + k, never
trained on) through eval_mop.run_episodes, the evaluation's own acting loop; every step is kept:
the symbolic 7x7x3 view, direction, carrying, mission index, the agent's whole recurrent memory
*before* the step (every router and expert hidden state), router weights, logits, action, reward,
done. The bot's label is not replayed here (the column is NaN; kept for the schema).

Layout: recordings/<task>/trial_<N>/[seed_<S>/]<update_<U>|final>/ (or --out DIR) holding
    chunk_00000.parquet ...  columnar, about --chunk_steps steps each, whole episodes per chunk
    metadata.json            schema version, checkpoint path and weights hash, config, mission
                             table, chunk list with row counts (written last: its absence means
                             an unfinished recording)
`iter_windows` streams windows of T consecutive steps of one episode, one chunk in memory at a time.

    python record.py --checkpoint checkpoints/BabyAI-UnlockPickup-v0/trial_0/checkpoint_final.pt --num_episodes 2000
    python record.py --checkpoint ... --num_episodes 50 --out /tmp/rec
    python record.py --checkpoint ... --num_episodes 2000 --device cuda   # the agent acts on the GPU
"""

from __future__ import annotations

if __name__ == "__main__":  # flags answered before torch and pyarrow load (bench/startup.py)
    from mop.cli_specs import answer_early, check_record_args, record_parser

    answer_early(lambda: check_record_args(record_parser(__doc__).parse_args()))

import hashlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from eval_mop import ActedStep, run_episodes
from mop.babyai_env import EVAL_SEED_START
from mop.checks import command_edges
from mop.cli_specs import RECORDINGS_ROOT, check_record_args, record_parser
from mop.devices import DeviceError, device_label, resolve_device, use_deterministic
from mop.experiment import CheckpointError, ConfigError, load_policy
from mop.numpy_policy import one_thread
from mop.progress import progress_bar
from mop.runs import (
    OutputError,
    RunId,
    RunLockedError,
    RunPathError,
    atomic_write,
    atomic_write_text,
    check_writable_dir,
    own_run,
    parse_checkpoint_name,
)

SCHEMA_VERSION = 1
METADATA_FILE = "metadata.json"


class RecordingError(ValueError):
    """A recording that is missing, partial, corrupt or does not fit the request; one line."""


# ----------------------------------------------------------------------------- identity


def weights_hash(*modules: torch.nn.Module) -> str:
    """sha256 of the parameters and buffers of the modules (names, shapes, bytes): the agent a
    recording or a generative model belongs to."""
    digest = hashlib.sha256()
    for module in modules:
        for name, tensor in sorted(module.state_dict().items()):
            digest.update(name.encode())
            digest.update(str(tuple(tensor.shape)).encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def recording_dir(root: str | os.PathLike, config: dict, checkpoint_path: str | os.PathLike) -> Path:
    """<root>/<task>/trial_<N>/[seed_<S>/]<update_<U>|final>/ of a checkpoint."""
    update = parse_checkpoint_name(Path(checkpoint_path).name)
    if update is None:
        update = config.get("update", "unknown")
    leaf = "final" if update == "final" else f"update_{update}"
    return Path(root) / RunId.of(config).subpath / leaf


# ----------------------------------------------------------------------------- writing


class _ChunkWriter:
    """Collects finished episodes and writes them as Parquet chunks of about `chunk_steps` rows."""

    def __init__(self, directory: Path, chunk_steps: int, num_layers: int):
        self.directory, self.chunk_steps, self.num_layers = directory, chunk_steps, num_layers
        self.rows: list[dict] = []
        self.chunks: list[dict] = []

    def add_episode(self, steps: list[dict]) -> None:
        self.rows.extend(steps)
        if len(self.rows) >= self.chunk_steps:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        rows, self.rows = self.rows, []

        def fixed(key: str, dtype: Any) -> pa.Array:
            values = np.stack([r[key] for r in rows]).astype(dtype)
            flat = pa.array(values.reshape(len(rows), -1).ravel())
            return pa.FixedSizeListArray.from_arrays(flat, int(np.prod(values.shape[1:])))

        columns = {
            "episode": pa.array([r["episode"] for r in rows], pa.int32()),
            "t": pa.array([r["t"] for r in rows], pa.int32()),
            "image": fixed("image", np.uint8),
            "direction": pa.array([r["direction"] for r in rows], pa.int8()),
            "carrying": pa.array([r["carrying"] for r in rows], pa.int8()),
            "mission_index": pa.array([r["mission_index"] for r in rows], pa.int32()),
            "memory": fixed("memory", np.float32),
            "logits": fixed("logits", np.float32),
            **{f"router_{k}": fixed(f"router_{k}", np.float32) for k in range(self.num_layers)},
            "action": pa.array([r["action"] for r in rows], pa.int8()),
            "bot_label": pa.array([r["bot_label"] for r in rows], pa.float32()),
            "reward": pa.array([r["reward"] for r in rows], pa.float32()),
            "done": pa.array([r["done"] for r in rows], pa.bool_()),
        }
        name = f"chunk_{len(self.chunks):05d}.parquet"
        table = pa.table(columns)
        atomic_write(self.directory / name, lambda tmp: pq.write_table(table, tmp))
        self.chunks.append({"file": name, "num_steps": len(rows)})


@torch.no_grad()
def record(
    checkpoint_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    num_episodes: int,
    num_envs: int = 16,
    chunk_steps: int = 10_000,
    max_steps: int | None = None,
    progress: bool = False,
    device: str = "auto",
) -> dict:
    """Record `num_episodes` evaluation episodes of a checkpoint into out_dir; returns the metadata.
    device: where the agent acts (eval_mop's --device; the recorded numbers are the CPU's up to
    float rounding)."""
    try:
        where = resolve_device(device)
    except DeviceError as e:
        raise RecordingError(str(e)) from None
    policy, encoder, config = load_policy(checkpoint_path)
    out = Path(out_dir)
    if (out / METADATA_FILE).exists():
        raise RecordingError(f"{str(out)!r} already holds a recording; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    num_layers = len(getattr(policy, "expert_sizes", ()))
    writer = _ChunkWriter(out, chunk_steps, num_layers)
    missions: dict[str, int] = {}
    open_episodes: dict[int, list[dict]] = {}
    started = time.perf_counter()

    def on_step(step: ActedStep) -> None:
        memory = step.memory.numpy()
        logits = step.out.logits.numpy()
        weights = [w.numpy() for w in step.out.router_weights]
        b = step.batch
        for r, episode in enumerate(step.episode):
            row = {
                "episode": episode,
                "t": step.t[r],
                "image": b.image[r],
                "direction": int(b.direction[r]),
                "carrying": int(b.carrying[r]),
                "mission_index": missions.setdefault(b.missions[r], len(missions)),
                "memory": memory[r],
                "logits": logits[r],
                **{f"router_{k}": w[r] for k, w in enumerate(weights)},
                "action": step.action[r],
                "bot_label": float("nan"),
                "reward": step.reward[r],
                "done": step.done[r],
            }
            open_episodes.setdefault(episode, []).append(row)
            if step.done[r]:
                writer.add_episode(open_episodes.pop(episode))

    use_deterministic(where)
    with one_thread():
        with progress_bar(num_episodes, "record", enabled=progress) as bar:
            _, episodes = run_episodes(
                policy.to(where),
                encoder.to(where),
                config,
                config["task_id"],
                list(range(num_episodes)),
                num_envs=num_envs,
                max_steps=max_steps if max_steps is not None else config.get("max_steps"),
                record=False,
                progress=bar,
                on_step=on_step,
                measure_bot_paths=False,
            )
    writer.flush()
    meta = {
        "schema_version": SCHEMA_VERSION,
        "checkpoint_path": Path(checkpoint_path).as_posix(),
        "agent_hash": weights_hash(policy, encoder),
        "config": config,
        "task_id": config["task_id"],
        "eval_seed_start": EVAL_SEED_START,
        "num_episodes": int(len(episodes)),
        "num_steps": int(sum(c["num_steps"] for c in writer.chunks)),
        "success_rate": float(episodes["success"].mean()) if len(episodes) else float("nan"),
        "missions": [m for m, _ in sorted(missions.items(), key=lambda kv: kv[1])],
        "memory_size": int(policy.memory_size),
        "expert_sizes": [list(s) for s in getattr(policy, "expert_sizes", ())],
        "obs_encoding": config["obs_encoding"],
        "chunks": writer.chunks,
        "seconds": round(time.perf_counter() - started, 2),
        "device": device_label(where),
    }
    atomic_write_text(out / METADATA_FILE, json.dumps(meta, indent=1))
    return meta


# ----------------------------------------------------------------------------- reading


def read_metadata(directory: str | os.PathLike) -> dict:
    """The metadata of a finished recording; RecordingError if it is missing, partial or corrupt."""
    directory = Path(directory)
    path = directory / METADATA_FILE
    if not path.is_file():
        raise RecordingError(f"{str(directory)!r} is not a finished recording (no {METADATA_FILE})")
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError):
        raise RecordingError(f"{str(path)!r} is unreadable or corrupt") from None
    if meta.get("schema_version") != SCHEMA_VERSION:
        raise RecordingError(
            f"{str(path)!r} has schema version {meta.get('schema_version')!r}; this code reads {SCHEMA_VERSION}"
        )
    for chunk in meta["chunks"]:
        file = directory / chunk["file"]
        try:
            rows = pq.read_metadata(file).num_rows
        except (OSError, pa.ArrowException):
            raise RecordingError(f"recording chunk {str(file)!r} is missing, partial or corrupt") from None
        if rows != chunk["num_steps"]:
            raise RecordingError(
                f"recording chunk {str(file)!r} has {rows} steps, the metadata says {chunk['num_steps']}"
            )
    return meta


def _read_chunk(file: Path) -> dict[str, np.ndarray]:
    try:
        table = pq.read_table(file)
    except (OSError, pa.ArrowException):
        raise RecordingError(f"recording chunk {str(file)!r} is missing, partial or corrupt") from None
    columns = {}
    for name in table.column_names:
        col = table.column(name).combine_chunks()
        if pa.types.is_fixed_size_list(col.type):
            flat = col.flatten().to_numpy(zero_copy_only=False)
            columns[name] = flat.reshape(len(col), col.type.list_size)
        else:
            columns[name] = col.to_numpy(zero_copy_only=False)
    columns["image"] = columns["image"].reshape(-1, 7, 7, 3)
    return columns


def iter_chunks(directory: str | os.PathLike) -> Iterator[dict[str, np.ndarray]]:
    """Each chunk of a recording as numpy columns (image (N, 7, 7, 3), memory (N, M), ...)."""
    meta = read_metadata(directory)
    for chunk in meta["chunks"]:
        yield _read_chunk(Path(directory) / chunk["file"])


def iter_windows(
    directory: str | os.PathLike, length: int, stride: int | None = None, end_aligned: bool = True
) -> Iterator[dict[str, np.ndarray]]:
    """Windows of `length` consecutive steps of one episode, streamed chunk by chunk. Windows start
    every `stride` steps (default: length); with end_aligned each episode also yields the window
    that ends at its last step (the one whose done is 1). Episodes shorter than `length` are skipped."""
    stride = stride or length
    for columns in iter_chunks(directory):
        episode = columns["episode"]
        bounds = np.flatnonzero(np.diff(episode)) + 1
        for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(episode)]):
            starts = list(range(lo, hi - length + 1, stride))
            if end_aligned and hi - length >= lo and (not starts or starts[-1] != hi - length):
                starts.append(hi - length)
            for s in starts:
                yield {k: v[s : s + length] for k, v in columns.items()}


def load_windows(
    directory: str | os.PathLike,
    length: int,
    stride: int | None = None,
    max_windows: int | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """The windows stacked: column -> (W, T, ...); with max_windows a uniform random subset of
    about that many, drawn while streaming (a large recording is never held whole).
    RecordingError if no episode is long enough."""
    keep = 1.0
    if max_windows is not None:
        estimate = read_metadata(directory)["num_steps"] / (stride or length)
        keep = min(1.0, max_windows / max(estimate, 1.0))
    rng = np.random.default_rng(seed)
    windows = [w for w in iter_windows(directory, length, stride) if keep >= 1.0 or rng.random() < keep]
    if not windows:
        raise RecordingError(
            f"recording {str(directory)!r} has no episode of {length} steps "
            "(num_init_steps + num_sim_steps); record longer episodes or use shorter windows"
        )
    return {k: np.stack([w[k] for w in windows]) for k in windows[0]}


# ----------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> dict:
    args = record_parser(__doc__).parse_args(argv)
    try:
        check_record_args(args)  # numbers, --device's spelling (as a script: before the imports)
        try:  # before anything is read or written
            resolve_device(args.device)
        except DeviceError as e:
            raise RecordingError(str(e)) from None
        if args.out is None:
            _, _, config = load_policy(args.checkpoint)
            out = recording_dir(RECORDINGS_ROOT, config, args.checkpoint)
        else:
            out = Path(args.out)
        check_writable_dir(out, "--out")
        with own_run(out):  # one recording per folder at a time: a second one is refused
            meta = record(
                args.checkpoint,
                out,
                args.num_episodes,
                args.num_envs,
                args.chunk_steps,
                args.max_steps,
                True,
                args.device,
            )
    except (RecordingError, CheckpointError, RunPathError, ConfigError, OutputError, RunLockedError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(
        f"recorded {meta['num_episodes']} episodes, {meta['num_steps']} steps in {meta['seconds']} s "
        f"(success {meta['success_rate']:.3f}) -> {out}"
    )
    return {"out": str(out), **{k: meta[k] for k in ("num_episodes", "num_steps", "seconds", "success_rate")}}


if __name__ == "__main__":
    with command_edges("interrupted: nothing was half-written; run record.py again"):
        main()
