"""Render the standard figure set of routing caches to PNG files, headless.

For each cache folder it loads the cache, draws the level with minigrid's own renderer (the
cache's example layout, routing_analysis.example_layout: the typical episode, recreated from its
seed; routing_viz.py shows the same one), finds the run's metrics.jsonl beside the checkpoint and
the rows of evaluation_results.csv for that checkpoint (knockout comparison), and writes
plotting_utils.standard_figures to plots/<task_id>/trial_<N>/[seed_<S>/][update_<U>/]...

--layout paper draws every figure one paper column wide (3.3 in, panels in a grid of at most two
columns, 7-8 pt text) for a paper at 100%; the default, screen, draws them at most 10.5 in wide.
Both layouts write the same file names: give each its own --out.

    python render_plots.py --cache evaluation_cache/BabyAI-UnlockPickup-v0/trial_0 --out plots/
    python render_plots.py --cache evaluation_cache/BabyAI-UnlockPickup-v0/trial_0 --layout paper --out plots_paper/
    python render_plots.py --all                  # every cache under evaluation_cache/
    python render_plots.py --by_level             # routing by level of each multi-task checkpoint
    python render_plots.py --subgoals --cache A --cache B --cache C --event_k 5 --out plots/

A cache recorded with `eval_mop.py --record_subgoals` also gets routing_by_subgoal.png,
routing_by_subgoal_within_cell.png, routing_by_subgoal_within_step.png and event_locked_routing.png (mop/subgoal_plots; one run:
intervals over its episodes / events); one without those columns gets a one-line note instead.
--subgoals pools the given caches (one per run: a replicate is (recipe, seed)) with runs as units
(mop/subgoal_analysis) into plots/subgoals/<task>/: the three figures and routing_by_subgoal.csv,
event_locked_routing.csv, steps_per_subgoal.csv.

--by_level: every checkpoint evaluated on two or more levels (a multi-task one: batch_eval.py writes
a row and a cache per level) gets plots/<task>/trial_<N>/[seed_<S>/][update_<U>/]routing_by_level.png,
its numbers (routing_by_level.csv, routing_by_level_summary.json: routing_analysis.routing_by_level
and level_difficulty_summary) and a printed table.
"""

from __future__ import annotations

if __name__ == "__main__":  # flags answered before pandas, scipy and matplotlib load (bench/startup.py)
    from mop.cli_specs import render_plots_parser

    render_plots_parser(__doc__).parse_args()

import posixpath
import sys
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from mop.checks import command_edges
from mop.results import ResultsError, read_results
from mop.routing_cache import CacheError, find_caches, load_cache
from mop.runs import OutputError, RunPathError, check_writable_dir, inside, parse_run_path, run_subpath


def cache_figures(
    cache_folder: str | Path, results_path: str | None = None, layout: str = "screen", event_k: int = 5
) -> dict[str, Figure]:
    """One cache's standard figures by file stem (what render_cache writes): the level picture is
    the cache's example layout (mop.level_image, as routing_viz shows it); with subgoal columns,
    the subgoal figures too (event_k steps either side of each event)."""
    from mop.babyai_env import check_task_id
    from mop.experiment import read_metrics
    from mop.level_image import cache_task, example_image
    from plotting_utils import standard_figures

    folder = Path(cache_folder)
    data = load_cache(folder)
    try:
        check_task_id(cache_task(data.meta))
    except ValueError as e:
        raise CacheError(f"cache {str(folder)!r} names no level to draw: {e}") from None
    if data.episodes.empty:
        raise CacheError(f"cache {str(folder)!r} holds no episodes")
    # the earlier system's caches record no layout seed: no level picture (image None)
    image, example = example_image(data)
    checkpoint = Path(str(data.meta.get("checkpoint_path", "")))
    metrics_file = checkpoint.parent / "metrics.jsonl"
    try:
        rows = read_metrics(metrics_file) if metrics_file.is_file() else None
    except ValueError as e:
        raise CacheError(f"the run's metrics of cache {str(folder)!r}: {e}") from None
    results = None
    if results_path and Path(results_path).is_file():
        table = read_results(results_path)  # ResultsError for a CSV that is not ours
        results = table[table["checkpoint_path"] == posixpath.normpath(checkpoint.as_posix())]
        results = results if len(results) else None
    figures = standard_figures(
        data,
        env_image=image,
        metrics_rows=rows,
        results_df=results,
        env_mission=example.mission,
        layout=layout,
    )
    from mop.subgoal_analysis import has_subgoals

    if has_subgoals(data.steps):
        name = str(data.meta.get("config", {}).get("task_id") or folder.name)
        k = min(event_k, int(data.steps["t"].max()))  # this cache's widest window
        figures.update(subgoal_figures({name: data.steps}, data.expert_sizes, k, layout, data.meta))
    return figures


def subgoal_figures(
    runs: dict[str, pd.DataFrame],
    expert_sizes: list,
    event_k: int,
    layout: str = "screen",
    meta: dict | None = None,
) -> dict[str, Figure]:
    """Routing by subgoal (raw and within-cell) and event-locked routing of these runs' steps."""
    from mop.subgoal_analysis import event_locked, events_present, routing_by_subgoal
    from mop.subgoal_plots import plot_event_locked, plot_routing_by_subgoal

    exponent = float((meta or {}).get("config", {}).get("lpc_exponent", 2.0))
    table = routing_by_subgoal(runs, expert_sizes, exponent)
    locked = {e: event_locked(runs, e, event_k) for e in events_present(runs)}
    unit = f"{len(runs)} runs" if len(runs) > 1 else "one run"
    return {
        "routing_by_subgoal": plot_routing_by_subgoal(
            table, expert_sizes, title=f"Routing by the bot's subgoal ({unit})", layout=layout
        ),
        "routing_by_subgoal_within_cell": plot_routing_by_subgoal(
            table, expert_sizes, "within_cell", title="Routing by subgoal, within cell", layout=layout
        ),
        "routing_by_subgoal_within_step": plot_routing_by_subgoal(
            table,
            expert_sizes,
            "within_step",
            title="Routing by subgoal, within the same step of the episode",
            layout=layout,
        ),
        "event_locked_routing": plot_event_locked(
            locked, expert_sizes, title=f"Routing around events, ±{event_k} steps", layout=layout
        ),
    }


def longest_episode(folder: str | Path) -> int | None:
    """The longest episode of a cache, from its episodes.parquet alone (None: none there)."""
    import pyarrow.parquet as pq

    from mop.routing_cache import EPISODES_FILE

    path = Path(folder) / EPISODES_FILE
    try:
        lengths = pq.read_table(path, columns=["length"]).column("length").to_pylist()
    except Exception:  # noqa: BLE001  (load_cache reports a bad cache itself)
        return None
    return max((int(v) for v in lengths if v is not None), default=None)


def render_subgoals(
    folders: list[Path], out_root: str | Path, event_k: int, dpi: int = 150, layout: str = "screen"
) -> list[Path]:
    """--subgoals: the given caches as runs (module docstring); SubgoalAnalysisError (naming the
    flag) for a cache without the columns, two caches of one run, several levels, or a bad k,
    before anything is written."""
    from mop.runs import atomic_write_text
    from mop.subgoal_analysis import (
        SubgoalAnalysisError,
        check_window,
        event_locked,
        events_present,
        require_subgoals,
        routing_by_subgoal,
        steps_per_subgoal,
    )
    from plotting_utils import save_figures

    runs: dict[str, pd.DataFrame] = {}
    tasks, sizes, meta = set(), None, {}
    for folder in folders:
        data = load_cache(folder)
        require_subgoals(data.steps, str(folder))
        config = data.meta.get("config", {})
        name = f"trial_{config.get('trial')}/seed_{config.get('seed')}"
        if name in runs:
            raise SubgoalAnalysisError(f"--cache {str(folder)!r}: a second cache of run {name} (one per run)")
        runs[name], sizes, meta = data.steps, data.expert_sizes, data.meta
        tasks.add(str(data.meta.get("metrics", {}).get("eval_task_id") or config.get("task_id")))
    if len(tasks) > 1:
        raise SubgoalAnalysisError(
            f"--cache: caches of several levels ({', '.join(sorted(tasks))}): one at a time"
        )
    longest = max(int(s.groupby("episode")["t"].max().max()) + 1 for s in runs.values())
    event_k = check_window(event_k, longest)
    exponent = float(meta.get("config", {}).get("lpc_exponent", 2.0))
    table = routing_by_subgoal(runs, sizes, exponent)
    locked = pd.concat(
        [event_locked(runs, e, event_k) for e in events_present(runs)] or [pd.DataFrame()], ignore_index=True
    )
    figures = subgoal_figures(runs, sizes, event_k, layout, meta)
    out = inside(out_root, Path(out_root) / "subgoals" / next(iter(tasks)))
    written = save_figures(figures, out, dpi)
    for name, frame in (
        ("routing_by_subgoal", table),
        ("event_locked_routing", locked),
        ("steps_per_subgoal", steps_per_subgoal(runs)),
    ):
        atomic_write_text(out / f"{name}.csv", frame.to_csv(index=False))
        written.append(out / f"{name}.csv")
    return written


def render_cache(
    cache_folder: str | Path,
    out_root: str | Path = "plots",
    results_path: str | None = None,
    dpi: int = 150,
    layout: str = "screen",
    event_k: int = 5,
) -> list[Path]:
    """Render one cache's standard figures (cache_figures); returns the PNG paths."""
    from plotting_utils import save_figures

    folder = Path(cache_folder)
    out = inside(out_root, Path(out_root) / run_subpath(folder.resolve()))
    figures = cache_figures(folder, results_path, layout, event_k)
    if "routing_by_subgoal" not in figures:
        print(f"note: {folder}: no subgoal columns (recorded without --record_subgoals): no subgoal figures")
    return save_figures(figures, out, dpi)


def level_episodes(results: pd.DataFrame, results_path: str | Path) -> dict[str, dict[str, pd.DataFrame]]:
    """{checkpoint path: {evaluated level: its cache's episodes}} for every checkpoint with default
    evaluations (no knockout, greedy) of two or more levels that have a routing cache. A cache
    path is read as written (relative to the working folder) or else beside the results CSV."""
    df = results.copy()
    df = df[(df["knockout"].fillna("none") == "none") & ~df["sample"].fillna(False).astype(bool)]
    df = df[df["cache_path"].notna()]
    out: dict[str, dict[str, pd.DataFrame]] = {}
    for checkpoint, rows in df.groupby("checkpoint_path", sort=True):
        if rows["eval_task_id"].nunique() < 2:
            continue
        levels = {}
        for level, cache in zip(rows["eval_task_id"], rows["cache_path"]):
            folder = Path(cache)
            if not folder.is_dir():
                folder = Path(results_path).parent / cache
            levels[str(level)] = load_cache(folder).episodes
        out[str(checkpoint)] = levels
    return out


def render_levels(
    results_path: str | Path, out_root: str | Path = "plots", dpi: int = 150, layout: str = "screen"
) -> list[Path]:
    """The routing-by-level figure and numbers of every checkpoint level_episodes finds."""
    import json

    from mop.results_plots import plot_routing_by_level
    from mop.routing_analysis import level_difficulty_summary, routing_by_level
    from mop.runs import atomic_write_text
    from plotting_utils import save_figures

    results = read_results(results_path)
    written = []
    for checkpoint, episodes in level_episodes(results, results_path).items():
        table = routing_by_level(episodes)
        summary = level_difficulty_summary(table, episodes)
        rows = results[results["checkpoint_path"] == checkpoint]
        sizes = rows["expert_hidden_sizes"].dropna()
        sizes = json.loads(sizes.iloc[0]) if len(sizes) else None
        parsed = parse_run_path(checkpoint)  # the caches' layout: <run>/[update_<U>/]
        where = run_subpath(checkpoint) if parsed is None else parsed[0].subpath
        if parsed is not None and parsed[1] is not None:
            where = where / f"update_{parsed[1]}"
        out = inside(out_root, Path(out_root) / where)
        fig = plot_routing_by_level(table, summary, sizes, title=f"Routing by level: {where}", layout=layout)
        written += save_figures({"routing_by_level": fig}, out, dpi)
        atomic_write_text(out / "routing_by_level.csv", table.to_csv(index=False))
        atomic_write_text(
            out / "routing_by_level_summary.json", json.dumps(summary, indent=1, default=str) + "\n"
        )
        columns = ["level", "curriculum_rank", "episodes", "success_rate", "mean_lpc", "lpc_ci_low"]
        columns += ["lpc_ci_high", "successes", "lpc_success", "bot_path_mean", "r_lpc_bot_path"]
        print(f"{checkpoint}:")
        print(table[columns].to_string(index=False, float_format="%.3g"))
        print(f"  {summary['verdict']}")
    return written


DPI_RANGE = (10, 1200)  # a 1200-dpi figure set is already ~100 MB of PNGs


def main(argv: list[str] | None = None) -> dict:
    from mop.cli_specs import render_plots_parser

    parser = render_plots_parser(__doc__)
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
    level_paths: list[Path] = []
    if args.by_level:
        try:
            level_paths = render_levels(args.results_path, args.out, args.dpi, args.layout)
        except (CacheError, ResultsError, RunPathError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        if not level_paths:
            print(
                f"error: no checkpoint in {args.results_path!r} is evaluated on two or more levels",
                file=sys.stderr,
            )
            sys.exit(2)
        if not folders:
            return {"paths": [str(p) for p in level_paths]}
    if not folders:
        print(
            f"error: no cache given (--cache FOLDER) or found under {args.cache_dir!r} (--all); "
            "make one with batch_eval.py",
            file=sys.stderr,
        )
        sys.exit(2)
    from mop.subgoal_analysis import SubgoalAnalysisError, check_window

    try:  # the window against every cache before anything is drawn
        longest = [n for n in map(longest_episode, folders) if n is not None]
        check_window(args.event_k, max(longest) if longest else args.event_k + 1)
        if args.subgoals:
            paths = render_subgoals(folders, args.out, args.event_k, args.dpi, args.layout)
            print(f"subgoals of {len(folders)} run(s): {len(paths)} files -> {paths[0].parent}")
            return {"paths": [str(p) for p in level_paths + paths]}
    except (SubgoalAnalysisError, CacheError, RunPathError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    from mop.progress import progress_bar

    written = []
    for folder in progress_bar(len(folders), "caches", enabled=len(folders) > 1, iterable=folders):
        try:
            paths = render_cache(folder, args.out, args.results_path, args.dpi, args.layout, args.event_k)
        except (CacheError, ResultsError, RunPathError, SubgoalAnalysisError) as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        written += paths
        print(f"{folder}: {len(paths)} figures -> {paths[0].parent if paths else '-'}")
    return {"paths": [str(p) for p in level_paths + written]}


if __name__ == "__main__":
    with command_edges():
        main()
