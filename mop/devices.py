"""Where torch computes: the `device` setting of every stage, device-free saved state, and CUDA's
deterministic mode.

- `check_device(spec)`: the spelling of a device setting, 'auto', 'cpu', 'cuda' or 'cuda:N'
  (DeviceError, one line, otherwise). Config files are checked with it on any machine: a config
  that asks for CUDA is valid on a laptop that will only launch it on Modal.
- `resolve_device(spec)`: the torch.device it means on THIS machine ('auto': cuda:0 when CUDA is
  present, else the CPU); DeviceError in one line when the machine lacks it (no CUDA, or an index
  beyond its GPUs). Every stage calls it before it writes anything.
- `to_cpu(obj)`: the same nesting of dicts, lists and tuples with every tensor on the CPU; what
  checkpoints, generative models and in-memory forks store, so a file written on a GPU loads,
  resumes and evaluates on a CPU-only machine (and the other way round: loaders map to the CPU,
  then the stage moves what it needs to its device).
- `use_deterministic(device)`: on CUDA, deterministic kernels where torch has them, full float32
  precision (no TF32), and the cuBLAS workspace torch documents; the CPU is left as it is (its
  kernels are deterministic for a fixed thread count, which every stage fixes).
- `default_num_workers()`: the CPU cores this process may use (what num_workers null means).
- `bf16_warning(device)`: a line to print before a bf16 learner starts where the device has no fast
  bf16 matmul (a CPU without AVX-512, whose bf16 kernels are ~14x slower than float32); None where it has.
- `seed_everything(seed)`, `rng_state(device)`, `set_rng_state(state, device)`: every generator a
  run draws from (Python, numpy, torch, and the device's), seeded, saved into a checkpoint, restored.

torch is imported inside the functions that use it, so a command line checks its flags first.

    device = resolve_device("auto")          # cuda:0 on a GPU workstation, cpu elsewhere
    policy.to(device)
    torch.save(to_cpu({"policy_state_dict": policy.state_dict()}), "ckpt.pt")
"""

from __future__ import annotations

import os
import random
import re
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # torch is imported where it is used: a command checks its flags without it
    import torch


DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"
DEVICE_HELP = (
    "where torch computes: 'auto' (the first CUDA GPU when this machine has one, else the CPU), "
    "'cpu', 'cuda' or 'cuda:N'"
)
_SPEC = re.compile(r"auto|cpu|cuda(:\d+)?")
# cuBLAS needs a fixed workspace to give the same sums run after run (torch's reproducibility
# notes); it must be in the environment before the first cuBLAS call of the process.
CUBLAS_WORKSPACE = ":4096:8"


class DeviceError(ValueError):
    """A device setting that is misspelt or names a device this machine lacks; one line."""


def check_device(spec: Any, flag: str = "--device") -> str:
    """The canonical spelling of a device setting ('CUDA:0 ' -> 'cuda:0'); DeviceError naming
    `flag` for anything else. Says nothing about this machine (resolve_device does)."""
    text = spec.strip().lower() if isinstance(spec, str) else None
    if text is None or not _SPEC.fullmatch(text):
        raise DeviceError(f"{flag} must be {DEVICE_CHOICES}, got {spec!r}")
    return text


def resolve_device(spec: Any, flag: str = "--device") -> torch.device:
    """The torch.device `spec` means on this machine; DeviceError in one line when it has none."""
    import torch

    text = check_device(spec, flag)
    if text == "cpu":
        return torch.device("cpu")
    available = torch.cuda.is_available()
    if text == "auto":
        return torch.device("cuda", 0) if available else torch.device("cpu")
    if not available:
        build = "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}"
        raise DeviceError(
            f"{flag} {text}: this machine has no CUDA device (torch {torch.__version__}, {build}); "
            "use --device cpu or auto"
        )
    index = int(text.partition(":")[2] or 0)
    count = torch.cuda.device_count()
    if index >= count:
        raise DeviceError(
            f"{flag} {text}: this machine has {count} CUDA device{'s' if count != 1 else ''} "
            f"(cuda:0{f' to cuda:{count - 1}' if count > 1 else ''})"
        )
    return torch.device("cuda", index)


def device_label(device: torch.device) -> str:
    """'cpu', or 'cuda:0 (NVIDIA H100 80GB HBM3)': what a run or a bench reports."""
    import torch

    if device.type != "cuda":
        return str(device)
    index = device.index if device.index is not None else torch.cuda.current_device()
    return f"cuda:{index} ({torch.cuda.get_device_name(index)})"


def module_device(module: torch.nn.Module) -> torch.device:
    """The device of a module's first parameter (the CPU for a module without any)."""
    import torch

    for p in module.parameters():
        return p.device
    return torch.device("cpu")


def to_cpu(obj: Any) -> Any:
    """obj with every tensor inside dicts, lists and tuples moved to the CPU (detached). A tensor
    already on the CPU is returned as it is, not copied: saving a CPU run costs nothing extra."""
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu() if obj.device.type != "cpu" else obj
    if isinstance(obj, dict):
        return type(obj)((k, to_cpu(v)) for k, v in obj.items())
    if isinstance(obj, list | tuple) and not hasattr(obj, "_fields"):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def use_deterministic(device: torch.device) -> None:
    """On CUDA: the same seed gives the same numbers run after run on one GPU model. Deterministic
    kernels where torch has them (warn_only: an op without one warns instead of stopping a run),
    cuDNN's deterministic algorithms, no TF32 (full float32, so the numbers stay within the
    documented tolerance of the CPU's) and the cuBLAS workspace torch's notes ask for. Nothing
    changes on the CPU."""
    import torch

    if device.type != "cuda":
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


# learner_precision bfloat16 on a CPU whose oneDNN has no bf16 kernels: updates/s measured against
# float32 on the wide GoToImpUnlock recipe, one run, 2 threads (AMD EPYC without AVX-512, 2026-12-01;
# bench/learner_throughput.py, docs/speed.md)
SLOW_BF16_RATIO = 14


def native_bf16(device: torch.device) -> bool:
    """Whether `device` has fast bf16 matmuls: a CUDA GPU that says so, a CPU whose oneDNN has bf16
    kernels (AVX-512 or AMX on x86, bf16 on Arm: torch's own test); other devices are trusted."""
    import torch

    if device.type == "cuda":  # Ampere on (or ROCm); torch.cuda.is_bf16_supported() counts emulation
        return bool(torch.version.hip) or torch.cuda.get_device_properties(device).major >= 8
    if device.type != "cpu":
        return True
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN: autocast's fallback is slow too
        return False


def bf16_warning(device: torch.device) -> str | None:
    """The line a bf16 learner prints before it starts on a device without fast bf16 matmuls (a run
    of hours that would otherwise find out from its s/update); None where the device has them."""
    import torch

    if native_bf16(device):
        return None
    if device.type == "cpu":
        what = (
            f"a CPU without bf16 kernels (torch sees {torch.backends.cpu.get_cpu_capability()}; they need "
            f"AVX-512 or AMX): autocast falls back to slow kernels, measured ~{SLOW_BF16_RATIO}x slower than "
            "float32 (docs/speed.md)"
        )
    else:  # not measured on a GPU: no ratio claimed
        what = f"{device}, a GPU older than Ampere: autocast emulates bf16 there, slower than float32"
    return (
        f"warning: learner_precision bfloat16 on {what}; --learner_precision float32 trains the same "
        "recipe at full speed here (another draw of it, not the same numbers)"
    )


def cuda_rng_state(device: torch.device) -> torch.Tensor | None:
    """The CUDA generator's state of `device` (a CPU tensor, saved beside the CPU's), None on the CPU."""
    import torch

    return torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def set_cuda_rng_state(state: torch.Tensor | None, device: torch.device) -> None:
    """Restore cuda_rng_state's value; nothing on the CPU or for a state saved on the CPU (a run
    resumed on another device continues its CPU streams; the GPU's own draws start anew)."""
    import torch

    if state is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state, device)


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state(device: torch.device | None = None) -> dict:
    """Every generator a run draws from; with a CUDA device also its generator (expert dropout
    draws there)."""
    import torch

    state = {
        "torch": torch.get_rng_state(),
        "numpy": list(np.random.get_state(legacy=True)[1].tolist())
        + [int(np.random.get_state(legacy=True)[2])],
        "python": [list(random.getstate()[1]), random.getstate()[0]],
    }
    cuda = None if device is None else cuda_rng_state(device)
    if cuda is not None:
        state["torch_cuda"] = cuda
    return state


def set_rng_state(state: dict, device: torch.device | None = None) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    if device is not None:
        set_cuda_rng_state(state.get("torch_cuda"), device)
    keys = np.array(state["numpy"][:-1], dtype=np.uint32)
    np.random.set_state(("MT19937", keys, int(state["numpy"][-1])))
    internal, version = state["python"]
    random.setstate((version, tuple(internal), None))


def default_num_workers() -> int:
    """The CPU cores this process may use (what num_workers null means)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
