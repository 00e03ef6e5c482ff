"""Across tasks, runs and checkpoints: what does routing cost, and what does it buy?

A marimo notebook over evaluation_results.csv (one row per evaluated checkpoint), several routing
caches and, optionally, a run's metrics.jsonl: success rate against mean LPC per task and lpc_alpha,
success and LPC against the training update, the table behind them, knockouts, routing of several
caches side by side, and training curves. The plots live in plotting_utils.py, the numbers in
routing_analysis.py; this file is wiring. Paths default to the project layout under the working
directory; environment variables override them: RESULTS_CSV (evaluation_results.csv),
ROUTING_CACHE_DIR (evaluation_cache), CHECKPOINT_DIRS (checkpoints:modal_checkpoints,
os.pathsep-separated; where metrics.jsonl files are).

    marimo run cross_task_viz.py
    python cross_task_viz.py
"""

import marimo

__generated_with = "0.25.2"
app = marimo.App(width="medium", app_title="MoP across tasks")

with app.setup:
    from mop.notebook_script import script_help

    script_help(__file__)  # --help: how to run this notebook, before the imports below
    import os
    from pathlib import Path

    import marimo as mo

    import plotting_utils as pu
    from mop import experiment, routing_cache
    from mop import results_plots as rp
    from mop import routing_analysis as ra
    from mop.notebook_script import refusal
    from mop.results import ResultsError, read_results
    from mop.runs import DEFAULT_CHECKPOINT_DIRS, run_label


@app.cell(hide_code=True)
def _():
    mo.md("""
    # Mixture-of-Pathways across tasks

    **What does routing cost (LPC, Σ weight · size²) and what does it buy (success), per task and
    LPC penalty, and how do both move during training?** Reads `evaluation_results.csv`
    (`RESULTS_CSV`, written by `batch_eval.py`), routing caches under `evaluation_cache/`
    (`ROUTING_CACHE_DIR`) and the runs' `metrics.jsonl` under `checkpoints/` / `modal_checkpoints/`
    (`CHECKPOINT_DIRS`). Points are default evaluations (no knockout, on the training task).
    """)
    return


@app.cell
def _():
    results_csv = Path(os.environ.get("RESULTS_CSV", "evaluation_results.csv"))
    cache_root = Path(os.environ.get("ROUTING_CACHE_DIR", "evaluation_cache"))
    checkpoint_dirs = os.environ.get("CHECKPOINT_DIRS", os.pathsep.join(DEFAULT_CHECKPOINT_DIRS)).split(
        os.pathsep
    )
    return cache_root, checkpoint_dirs, results_csv


@app.cell
def _(results_csv):
    try:
        results = read_results(results_csv)
    except ResultsError as _e:  # the project's one-line reason, not a traceback
        mo.stop(True, refusal("Cannot read the results.", _e))
    return (results,)


@app.cell
def _(results, results_csv):
    mo.stop(
        results.empty,
        mo.callout(
            mo.md(f"""
            **No evaluation results in `{results_csv}`.** Evaluate your checkpoints:
            `python batch_eval.py --results_path {results_csv}` (or point `RESULTS_CSV` at a CSV).
            """),
            kind="warn",
        ),
    )
    _tasks = sorted(results["task_id"].unique())
    task_select = mo.ui.multiselect(_tasks, value=_tasks, label="tasks")
    task_select
    return (task_select,)


@app.cell
def _(results, task_select):
    runs = results[
        results["task_id"].isin(task_select.value)
        & (results["knockout"] == "none")
        & (results["eval_task_id"] == results["task_id"])
    ]
    mo.md(
        f"Default evaluations: {len(runs)} · checkpoints: {runs['checkpoint_path'].nunique()} · "
        f"runs (task, trial, seed): {runs.groupby(['task_id', 'trial', 'seed'], dropna=False).ngroups} · "
        f"tasks: {runs['task_id'].nunique()} · lpc_alpha: "
        + ", ".join(f"{a:g}" for a in sorted(runs["lpc_alpha"].dropna().unique()))
    )
    return (runs,)


@app.cell(hide_code=True)
def _():
    mo.md("""
    ## Success against routing cost
    """)
    return


@app.cell
def _(runs):
    mo.stop(runs.empty, mo.md("*No default evaluations for these tasks.*"))
    fig_success_vs_lpc = rp.plot_success_vs_lpc(runs)
    fig_success_vs_lpc
    return


@app.cell(hide_code=True)
def _(runs):
    mo.md(f"## During training (runs: {runs.groupby(['task_id', 'trial', 'seed'], dropna=False).ngroups})")
    return


@app.cell
def _(runs):
    mo.stop(runs.empty, mo.md("*No default evaluations for these tasks.*"))
    fig_vs_update = rp.plot_metrics_vs_update(runs)
    fig_vs_update
    return


@app.cell
def _(runs):
    _columns = ["task_id", "trial", "seed", "update", "lpc_alpha", "success_rate", "success_ci_low"]
    _columns += ["success_ci_high", "path_ratio", "mean_lpc", "mean_episode_length", "num_episodes"]
    _columns += [c for c in runs.columns if c.startswith("usage_")]
    mo.vstack(
        [
            mo.md("## The evaluations"),
            mo.ui.table(
                runs[[c for c in _columns if c in runs.columns]]
                .round({c: 3 for c in _columns if c != "lpc_alpha"})
                .reset_index(drop=True),
                selection=None,
                page_size=15,
            ),
        ]
    )
    return


@app.cell
def _(results):
    _conditions = results.groupby("checkpoint_path")["knockout"].nunique()
    _checkpoints = {run_label(c): c for c in _conditions[_conditions > 1].index}
    knockout_dropdown = mo.ui.dropdown(
        _checkpoints, value=next(iter(_checkpoints), None), label="checkpoint", searchable=True
    )
    mo.vstack([mo.md("## Knockouts"), knockout_dropdown])
    return (knockout_dropdown,)


@app.cell
def _(knockout_dropdown, results_csv):
    mo.stop(
        knockout_dropdown.value is None,
        mo.md(
            "*No checkpoint evaluated under a knockout yet:* "
            f"`python batch_eval.py --final_only --knockout largest --results_path {results_csv}`."
        ),
    )
    fig_knockout = rp.plot_knockout_comparison(read_results(results_csv), knockout_dropdown.value)
    fig_knockout
    return


@app.cell
def _(cache_root):
    caches = {run_label(_c): str(_c) for _c in routing_cache.find_caches(cache_root)}
    # Default: one cache per task (the first of its own evaluations: the final checkpoint's if any), up to 3.
    _own = [label for label in caches if not any(w in label for w in ("eval ", "knockout "))]
    _defaults = list({label.split(" · ")[0]: label for label in reversed(_own)}.values())[::-1][:3]
    cache_select = mo.ui.multiselect(caches, value=_defaults, label="caches")
    figure_dropdown = mo.ui.dropdown(
        ["expert usage", "routing by position", "LPC by position", "router entropy"],
        value="expert usage",
        label="figure",
    )
    mo.vstack(
        [
            mo.md("## Routing caches side by side"),
            mo.hstack([cache_select, figure_dropdown], justify="start", gap=2),
        ]
    )
    return cache_select, caches, figure_dropdown


@app.cell
def _(cache_root, cache_select, caches):
    mo.stop(
        not caches,
        mo.md(f"*No routing cache under `{cache_root}`: `python batch_eval.py --cache_dir {cache_root}`.*"),
    )
    try:
        loaded = {
            run_label(path): routing_cache.load_cache(path) for path in cache_select.value if path is not None
        }
    except routing_cache.CacheError as _e:
        mo.stop(True, refusal("Cannot read a cache.", _e))
    return (loaded,)


@app.cell
def _(figure_dropdown, loaded):
    mo.stop(not loaded, mo.md("*Pick one or more caches.*"))
    _plot = {
        "expert usage": lambda d: pu.plot_expert_usage(d.steps, d.expert_sizes),
        "routing by position": lambda d: pu.plot_overall_routing(
            d.steps, d.expert_sizes, grid_info=ra.grid_info_for(d.steps, d.episodes)
        ),
        "LPC by position": lambda d: pu.plot_lpc_heatmap(d.steps, ra.grid_info_for(d.steps, d.episodes)),
        "router entropy": lambda d: pu.plot_routing_entropy(d.steps, d.expert_sizes),
    }[figure_dropdown.value]
    mo.hstack(
        [
            mo.vstack([mo.md(f"**{label}**"), _plot(d)])
            if ra.has_routing(d.steps)
            else mo.md(f"**{label}**: no router weights (GRU baseline)")
            for label, d in loaded.items()
        ],
        justify="start",
        wrap=True,
    )
    return


@app.cell
def _(checkpoint_dirs):
    _files = sorted(f for d in checkpoint_dirs for f in Path(d).rglob("metrics.jsonl"))
    metrics_dropdown = mo.ui.dropdown(
        {run_label(f.parent): str(f) for f in _files},
        value=run_label(_files[0].parent) if _files else None,
        label="run",
        searchable=True,
    )
    mo.vstack([mo.md("## Training curves"), metrics_dropdown])
    return (metrics_dropdown,)


@app.cell
def _(checkpoint_dirs, metrics_dropdown):
    mo.stop(
        metrics_dropdown.value is None,
        mo.md(f"*No metrics.jsonl under {', '.join(f'`{d}`' for d in checkpoint_dirs)}.*"),
    )
    try:  # a metrics.jsonl or checkpoint that is not ours: ValueError / CheckpointError
        _rows = experiment.read_metrics(metrics_dropdown.value)
        _checkpoint = next(Path(metrics_dropdown.value).parent.glob("checkpoint_*.pt"), None)
        _sizes = (
            experiment.load_checkpoint(_checkpoint)["config"].get("expert_hidden_sizes")
            if _checkpoint
            else None
        )
    except ValueError as _e:
        mo.stop(True, refusal("Cannot read this run.", _e))
    mo.stop(not _rows, mo.md("*This metrics.jsonl is empty.*"))
    fig_training = rp.plot_training_curves(_rows, _sizes)
    fig_training
    return


if __name__ == "__main__":
    app.run()
