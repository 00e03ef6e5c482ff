"""How long a command line takes to answer --help and to refuse a bad flag, beside how long
`python -c "import torch"` takes on the same box in the same run (issue 43: a refusal must come
back in under a second; a command that checks its flags before its heavy imports answers in a
fraction of the torch import). Each command runs `--repeats` times, interleaved with the torch
baseline, so box load hits them alike; prints median seconds and the ratio to the baseline.

    python bench/startup.py
    python bench/startup.py --repeats 9 --scripts train_mop.py,batch_eval.py
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Every stage's entry point, with a refusal it gives (a flag out of range, an unknown name, a bad
# flag's type; stats.py checks values that need its tables after its imports).
SCRIPTS = {
    "train_mop.py": ["--num_envs", "0"],
    "train.py": ["--lr", "-1"],
    "batch_eval.py": ["--num_episodes", "0"],
    "eval_mop.py": ["--checkpoint", "missing.pt", "--num_episodes", "0"],
    "stats.py": ["--task_id", "BabyAI-GoToLocal-v0", "--min_visits", "x"],
    "render_plots.py": ["--layout", "poster"],
    "sweep.py": ["--bogus"],
    "lmc.py": ["--bogus"],
    "causal.py": ["--bogus"],
    "headline.py": ["--episodes", "0"],
    "attribution.py": ["--bogus"],
    "demos.py": ["--bogus"],
    "record.py": ["--bogus"],
    "train_generative.py": ["--bogus"],
    "generative_analysis.py": ["--bogus"],
    "failures.py": ["--bogus"],
    "memory_probe.py": ["--bogus"],
}
BASELINE = ["-c", "import torch"]


def seconds(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, check=False)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs of each command (default 5)")
    parser.add_argument("--scripts", default=None, help="comma list (default: every entry point)")
    args = parser.parse_args(argv)
    names = list(SCRIPTS) if args.scripts is None else [s.strip() for s in args.scripts.split(",")]
    unknown = [n for n in names if n not in SCRIPTS]
    if unknown or args.repeats < 1:
        parser.error(f"unknown script(s) {unknown}" if unknown else "--repeats must be at least 1")
    times: dict[str, list[float]] = {"import torch": []}
    for name in names:
        times[f"{name} --help"], times[f"{name} refusal"] = [], []
    for _ in range(args.repeats):  # interleaved: the baseline sees the same load as the commands
        times["import torch"].append(seconds(BASELINE))
        for name in names:
            times[f"{name} --help"].append(seconds([name, "--help"]))
            times[f"{name} refusal"].append(seconds([name, *SCRIPTS[name]]))
    base = statistics.median(times["import torch"])
    print(f"{'command':42s} {'median s':>9s} {'/ import torch':>15s}")
    rows = {}
    for label, values in times.items():
        median = statistics.median(values)
        rows[label] = {"median_s": median, "ratio": median / base}
        flag = "" if label == "import torch" or median < 1.0 else "  (over 1 s)"
        print(f"{label:42s} {median:9.2f} {median / base:15.2f}{flag}")
    return rows


if __name__ == "__main__":
    main()
