"""Are two children of a MoP training run linearly connected, and do they route alike? lmc.py's
experiments, interactively.

A marimo notebook over the analysed LMC experiments under LMC_RESULTS_DIR (default lmc_results):
each folder's instability.csv (one row per fork pair: both barrier forms with bootstrap intervals,
the paired success drop at the midpoint and its sign test, routing agreement per layer),
forks.csv (per fork, the mean and interval across child pairs), correlations.csv (Spearman ρ of
routing agreement with the barriers, with permutation p) and interpolation.csv (one row per fork ×
pair × α × metric). The numbers come from lmc.py (mop/connectivity.py, mop/lmc_stats.py), the
figures from mop/lmc_plots.py; this file is wiring.

    marimo run lmc_viz.py
    python lmc_viz.py
"""

import marimo

__generated_with = "0.25.2"
app = marimo.App(width="medium", app_title="MoP linear mode connectivity")

with app.setup:
    from mop.notebook_script import script_help

    script_help(__file__)  # --help: how to run this notebook, before the imports below
    import os

    import marimo as mo

    from mop import connectivity, lmc_plots
    from mop.notebook_script import refusal


@app.cell(hide_code=True)
def _():
    mo.md("""
    # Linear mode connectivity of MoP policies

    **From which fork point are two children of one training run linearly connected, and do they
    route the same way?** A parent is forked at several points; pairs of children that differ only
    in their data train to the end; θ(α) = (1−α)·θ_A + α·θ_B is evaluated on fixed layouts and a
    held-out set of bot-labelled states. Barriers in both forms, `barrier_line` (Entezari et al.
    2022) and `barrier_mean` (Frankle et al. 2020), with 95% bootstrap intervals; an empty interval
    means "not measured", not "no effect". Reads the tables of each experiment under
    `LMC_RESULTS_DIR` (default `lmc_results`).
    """)
    return


@app.cell
def _():
    results_root = os.environ.get("LMC_RESULTS_DIR", "lmc_results")
    experiments = connectivity.find_experiments(results_root)
    return experiments, results_root


@app.cell
def _(experiments):
    experiment_dropdown = mo.ui.dropdown(experiments, value=next(iter(experiments), None), label="experiment")
    experiment_dropdown
    return (experiment_dropdown,)


@app.cell
def _(experiment_dropdown, results_root):
    mo.stop(
        experiment_dropdown.value is None,
        mo.md(
            f"No analysed LMC experiment under `{results_root}/`: run `python lmc.py --task_id <task> "
            "--seed <S>` (or `python lmc.py analyze --results_dir <folder>`) first."
        ),
    )
    try:
        interp, table = connectivity.load_results(experiment_dropdown.value)
        fork_summary, correlations = connectivity.load_summaries(experiment_dropdown.value)
    except connectivity.LMCError as _e:  # the project's one-line reason, not a traceback
        mo.stop(True, refusal("Cannot read this experiment.", _e))
    forks = connectivity.pair_names(interp)
    names = {k: name for name, k in connectivity.fork_names(interp).items()}
    expert_sizes = connectivity.expert_sizes_of(experiment_dropdown.value)
    mo.ui.table(
        table.round(4), page_size=10, label="instability and routing agreement, one row per fork pair"
    )
    return correlations, expert_sizes, fork_summary, forks, interp, names, table


@app.cell
def _(correlations, fork_summary):
    mo.vstack(
        [
            mo.ui.table(fork_summary.round(4), label="per fork: mean and t 95% interval across child pairs"),
            mo.ui.table(correlations.round(4), label="Spearman ρ of routing agreement with the barriers"),
        ]
    )
    return


@app.cell
def _(fork_summary, table):
    lmc_plots.plot_instability(table, fork_summary)
    return


@app.cell
def _(correlations, interp, names, table):
    lmc_plots.plot_routing_agreement(table, interp, names, correlations)
    return


@app.cell
def _(interp, names):
    lmc_plots.plot_all_interpolations(interp, names)
    return


@app.cell
def _(forks):
    fork_dropdown = mo.ui.dropdown(forks, value=next(iter(forks)), label="fork")
    fork_dropdown
    return (fork_dropdown,)


@app.cell
def _(expert_sizes, fork_dropdown, interp, names):
    _fork, _pair = fork_dropdown.value
    fig_fork = lmc_plots.plot_fork_interpolation(interp, _fork, names, expert_sizes, _pair)
    fig_fork
    return (fig_fork,)


if __name__ == "__main__":
    app.run()
