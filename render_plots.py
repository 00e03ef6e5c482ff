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
import posixpath
import sys
from pathlib import Path

import pandas as pd

from routing_cache import CacheError, find_caches, load_cache
from runs import OutputError, RunPathError, check_writable_dir, inside, run_subpath


def render_cache(
    cache_folder: str | Path, out_root: str | Path = "plots", results_path: str | None = None, dpi: int = 150
) -> list[Path]:
    """Render one cache's standard figures; returns the PNG paths."""
    from babyai_env import check_task_id, render_layout
    from batch_eval import read_results
    from experiment import read_metrics
    from plotting_utils import save_figures, standard_figures
    from routing_analysis import pick_example_episode

    folder = Path(cache_folder)
    data = load_cache(folder)
    out = inside(out_root, Path(out_root) / run_subpath(folder.resolve()))
    metrics = data.meta.get("metrics") if isinstance(data.meta.get("metrics"), dict) else {}
    task = metrics.get("eval_task_id") or data.meta["config"].get("task_id")
    try:
        check_task_id(str(task))
    except ValueError as e:
        raise CacheError(f"cache {str(folder)!r} names no level to draw: {e}") from None
    if data.episodes.empty:
        raise CacheError(f"cache {str(folder)!r} holds no episodes")
    example = pick_example_episode(data.episodes)
    seed = data.episodes.loc[data.episodes["episode"] == example, "seed"].iloc[0]
    image, mission = None, None  # the earlier system's caches record no layout seed: no level picture
    if pd.notna(seed):
        image, mission = render_layout(task, int(seed), metrics.get("max_steps"))
    checkpoint = Path(str(data.meta.get("checkpoint_path", "")))
    metrics_file = checkpoint.parent / "metrics.jsonl"
    try:
        rows = read_metrics(metrics_file) if metrics_file.is_file() else None
    except ValueError as e:
        raise CacheError(f"the run's metrics of cache {str(folder)!r}: {e}") from None
    results = None
    if results_path and Path(results_path).is_file():
        table = read_results(results_path)  # BatchEvalError for a CSV that is not ours
        results = table[table["checkpoint_path"] == posixpath.normpath(checkpoint.as_posix())]
        results = results if len(results) else None
    figures = standard_figures(
        data, env_image=image, metrics_rows=rows, results_df=results, env_mission=mission
    )
    return save_figures(figures, out, dpi)


DPI_RANGE = (10, 1200)  # a 1200-dpi figure set is already ~100 MB of PNGs


def main(argv: list[str] | None = None) -> dict:
    from batch_eval import BatchEvalError
    from experiment import ArgumentParser

    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    if not DPI_RANGE[0] <= args.dpi <= DPI_RANGE[1]:
        parser.error(f"--dpi must be from {DPI_RANGE[0]} to {DPI_RANGE[1]}, got {args.dpi}")
    try:
        check_writable_dir(args.out, "--out")
    except OutputError as e:
        parser.error(str(e))
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
        except (CacheError, BatchEvalError, RunPathError) as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        written += paths
        print(f"{folder}: {len(paths)} figures -> {paths[0].parent if paths else '-'}")
    return {"paths": [str(p) for p in written]}


if __name__ == "__main__":
    main()
