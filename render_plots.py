"""Render the standard figure set of routing caches to PNG files, headless.

For each cache folder it loads the cache, draws the level with minigrid's own renderer (the start
layout of a typical episode, recreated from its seed), finds the run's metrics.jsonl beside the
checkpoint and the rows of evaluation_results.csv for that checkpoint (knockout comparison), and
writes plotting_utils.standard_figures to plots/<task_id>/trial_<N>/[seed_<S>/][update_<U>/]...

    python render_plots.py --cache evaluation_cache/BabyAI-UnlockPickup-v0/trial_0 --out plots/
    python render_plots.py --all                  # every cache under evaluation_cache/
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from routing_cache import CacheError, find_caches, load_cache
from runs import run_subpath


def render_cache(
    cache_folder: str | Path, out_root: str | Path = "plots", results_path: str | None = None, dpi: int = 150
) -> list[Path]:
    """Render one cache's standard figures; returns the PNG paths."""
    from babyai_env import render_layout
    from experiment import read_metrics
    from plotting_utils import save_figures, standard_figures
    from routing_analysis import pick_example_episode

    folder = Path(cache_folder)
    data = load_cache(folder)
    task = data.meta.get("metrics", {}).get("eval_task_id") or data.meta["config"]["task_id"]
    example = pick_example_episode(data.episodes)
    seed = int(data.episodes.loc[data.episodes["episode"] == example, "seed"].iloc[0])
    image, mission = render_layout(task, seed, data.meta.get("metrics", {}).get("max_steps"))
    checkpoint = Path(data.meta.get("checkpoint_path", ""))
    metrics_file = checkpoint.parent / "metrics.jsonl"
    rows = read_metrics(metrics_file) if metrics_file.is_file() else None
    results = None
    if results_path and Path(results_path).is_file():
        table = pd.read_csv(results_path)
        results = table[table["checkpoint_path"] == checkpoint.as_posix()]
        results = results if len(results) else None
    figures = standard_figures(
        data, env_image=image, metrics_rows=rows, results_df=results, env_mission=mission
    )
    return save_figures(figures, Path(out_root) / run_subpath(folder.resolve()), dpi)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cache", action="append", default=None, help="a routing cache folder (repeatable)")
    parser.add_argument("--all", action="store_true", help="every cache under --cache_dir")
    parser.add_argument(
        "--cache_dir", default="evaluation_cache", help="cache root for --all (default evaluation_cache)"
    )
    parser.add_argument("--out", default="plots", help="output root (default plots/)")
    parser.add_argument(
        "--results_path", default="evaluation_results.csv", help="for the knockout comparison"
    )
    parser.add_argument("--dpi", type=int, default=150)
    args = parser.parse_args(argv)
    folders = [Path(c) for c in args.cache or []]
    if args.all:
        folders += find_caches(args.cache_dir)
    if not folders:
        print(
            f"error: no cache given (--cache FOLDER) or found under {args.cache_dir!r} (--all); "
            "make one with batch_eval.py",
            file=sys.stderr,
        )
        sys.exit(2)
    from tqdm.auto import tqdm

    written = []
    for folder in tqdm(folders, desc="caches", disable=len(folders) < 2):
        try:
            paths = render_cache(folder, args.out, args.results_path, args.dpi)
        except CacheError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        written += paths
        print(f"{folder}: {len(paths)} figures -> {paths[0].parent if paths else '-'}")
    return {"paths": [str(p) for p in written]}


if __name__ == "__main__":
    main()
