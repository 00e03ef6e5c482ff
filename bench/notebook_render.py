"""How long routing_viz.py takes to show a 1,000-episode routing cache for the first time.

Runs the notebook itself (its marimo App, in-process, as `python routing_viz.py` does) pointed at
one cache, then encodes every figure it displays the way marimo's app does (PNG at twice the
figure's dpi, tight bounding box). The timed part is the first-render work: load_cache, the
available analyses, the level image, the metrics and the default routing heatmap (the other tabs
are not computed until they are opened). Module imports (torch, minigrid: paid once per server
process, not per view) are timed separately. Without --cache it first builds a cache: trains a tiny
MoP checkpoint on --task for a few updates and evaluates it on --episodes episodes (a barely
trained policy fails, so episodes run to the step limit: a large cache, the slow case).

    python bench/notebook_render.py                                   # build a 1,000-episode cache, then time
    python bench/notebook_render.py --cache evaluation_cache/BabyAI-UnlockPickup-v0/trial_0 --repeat 5
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def build_cache(out: Path, task_id: str, num_episodes: int) -> Path:
    """Train a tiny checkpoint and evaluate it into a routing cache under out/evaluation_cache."""
    import eval_mop
    import train_mop
    from mop.experiment import load_config

    cfg = load_config(
        None,
        {
            "task_id": task_id,
            "num_envs": 4,
            "unroll_len": 16,
            "num_updates": 6,
            "num_workers": 0,
            "checkpoint_interval": None,
            "checkpoint_dir": str(out / "checkpoints"),
            "intermediate_dim": 16,
            "router_hidden_size": 8,
            "expert_hidden_sizes": [[0, 8, 16], [0, 8]],
            "lang_dim": 8,
            "teacher_forcing": 0.9,
        },
    )
    ckpt = train_mop.main(cfg, progress=False)["checkpoints"][-1]
    workers = max(1, min(os.cpu_count() or 1, 8))
    result = eval_mop.evaluate(
        ckpt, eval_mop.EvalOptions(num_episodes=num_episodes, num_envs=16, num_workers=workers)
    )
    return eval_mop.save_evaluation(result, ckpt, out / "evaluation_cache")


def render_once(cache: Path) -> tuple[float, int, list[str]]:
    """Seconds for one first render of routing_viz.py on `cache`, the number of figures encoded and
    the names of the cells' outputs that are figures."""
    from matplotlib.figure import Figure

    os.environ["ROUTING_CACHE_DIR"] = str(cache)  # the only cache under this root
    os.environ.setdefault("CHECKPOINT_DIRS", str(cache / "_no_checkpoints_"))
    os.environ.setdefault("RESULTS_CSV", str(cache / "_no_results_.csv"))
    sys.modules.pop("routing_viz", None)
    start = time.perf_counter()
    import routing_viz

    with contextlib.redirect_stdout(io.StringIO()):
        outputs, defs = routing_viz.app.run()
    figures = [o for o in outputs if isinstance(o, Figure)]
    for fig in figures:  # what marimo does to show a figure
        fig.savefig(io.BytesIO(), format="png", bbox_inches="tight", dpi=2 * fig.dpi)
    seconds = time.perf_counter() - start
    if "data" not in defs:
        raise SystemExit(f"the notebook did not load {cache} (no 'data' defined); is it a routing cache?")
    return seconds, len(figures), [f.get_suptitle() or "figure" for f in figures]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cache", default=None, help="an existing cache folder (default: build one)")
    parser.add_argument("--task", default="BabyAI-UnlockPickup-v0", help="level of the built cache")
    parser.add_argument("--episodes", type=int, default=1000, help="episodes in the built cache")
    parser.add_argument("--keep", default=None, help="build the cache in this folder and keep it")
    parser.add_argument("--repeat", type=int, default=3, help="timed renders after the first (default 3)")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    import marimo  # noqa: F401

    import plotting_utils  # noqa: F401
    from mop import (
        babyai_env,  # noqa: F401  (torch, minigrid)
        routing_analysis,  # noqa: F401
        routing_cache,
    )

    imports = time.perf_counter() - start
    tmp = None
    if args.cache:
        cache = Path(args.cache)
    else:
        if args.keep:
            out = Path(args.keep)
        else:
            tmp = tempfile.TemporaryDirectory(prefix="notebook_render_")
            out = Path(tmp.name)
        t0 = time.perf_counter()
        cache = build_cache(out, args.task, args.episodes)
        print(f"built {cache} in {time.perf_counter() - t0:.0f} s")
    data = routing_cache.load_cache(cache)
    print(
        f"cache: {cache}: {len(data.episodes)} episodes, {len(data.steps)} steps, "
        f"{data.meta['config']['task_id']}"
    )
    print(f"imports (once per process): {imports:.2f} s")
    first, count, names = render_once(cache)
    print(f"figures shown on first render: {count} ({'; '.join(names)})")
    print(f"first render: {first:.2f} s")
    again = [render_once(cache)[0] for _ in range(args.repeat)]
    if again:
        print(
            f"later renders: median {statistics.median(again):.2f} s (min {min(again):.2f}, n={len(again)})"
        )
    if tmp is not None:
        tmp.cleanup()
    return {"cache": str(cache), "first_render_s": first, "later_render_s": again, "imports_s": imports}


if __name__ == "__main__":
    main()
