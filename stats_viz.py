"""Does LPC track decision-relevance, per phase, and what does lpc_alpha trade? stats.py's tables
and figures, interactively.

A marimo notebook over stats/<task>/seed_metrics.csv (written by `python stats.py --task_id ...`
or sweep.py): seed-aggregated correlations per phase and condition (a run's recipe: α, expert
sizes, policy...; Fisher z, 95% CI, t-test on z, Holm), the raw r beside the partial r given log
visits (decision_relevance), metrics per condition and vs update, pooled scatter (descriptive),
correlation summary. The numbers live in
mop/inference.py, the figures in mop/stats_plots.py; this file is wiring. STATS_DIR (default
stats) overrides where it looks.

    marimo run stats_viz.py
    python stats_viz.py
"""

import marimo

__generated_with = "0.25.2"
app = marimo.App(width="medium", app_title="MoP statistics")

with app.setup:
    from mop.notebook_script import script_help

    script_help(__file__)  # --help: how to run this notebook, before the imports below
    import os
    from pathlib import Path

    import marimo as mo
    import pandas as pd

    import stats
    from mop import inference, stats_plots
    from mop.notebook_script import readable, refusal


@app.cell(hide_code=True)
def _():
    mo.md("""
    # LPC against decision-relevance, across seeds and α

    **Does the compute the router chooses (LPC) follow how decision-relevant a state is (H(A|S),
    KL from the marginal), per task phase, and what does the LPC strength α cost in success?**
    Units of inference are runs (trial × seed); a *condition* is a run's whole recipe (lpc_alpha,
    expert sizes, policy: MoP or GRU, ...), and runs of different recipes are never pooled. r is
    aggregated on Fisher's z with a t interval, success rate and path ratio on the logit and log
    scales (their intervals stay in bounds); a single run per condition is shown, never tested.
    `r` is the raw r(LPC, H) over cells; `r_given_visits` the partial r given log visits (rarely
    visited cells have both a smoothed, high H(A|S) and their own LPC: the visit confound), and
    `r_given_visits_step` also given the mean step in the episode. The pooled scatter pools runs of
    every condition: descriptive, no p-value. Reads `stats/<task>/seed_metrics.csv` (`STATS_DIR`).
    """)
    return


@app.cell
def _():
    stats_root = Path(os.environ.get("STATS_DIR", "stats"))
    tables = {p.parent.name: str(p) for p in sorted(stats_root.glob(f"*/{stats.TABLE}"))}
    return stats_root, tables


@app.cell
def _(tables):
    task_dropdown = mo.ui.dropdown(tables, value=next(iter(tables), None), label="task")
    task_dropdown
    return (task_dropdown,)


@app.cell
def _(stats_root, task_dropdown):
    mo.stop(
        task_dropdown.value is None,
        mo.md(f"No `{stats.TABLE}` under `{stats_root}/`: run `python stats.py --task_id <task>` first."),
    )
    try:
        table = pd.read_csv(task_dropdown.value)
        _missing = sorted({"task_id", "trial", "seed", "update", "lpc_alpha"} - set(table.columns))
        if _missing:
            raise ValueError(f"no column {', '.join(_missing)}: not a {stats.TABLE} of stats.py")
        inference.phases_of(table)  # one level per table (StatsError names the levels)
        updates = sorted(int(u) for u in table["update"].dropna().unique())
    except (OSError, ValueError) as _e:  # unreadable, not stats.py's table, levels mixed
        mo.stop(True, refusal("Cannot use this table.", _e))
    mo.stop(
        table["lpc_alpha"].isna().all(),
        mo.md("No run in this table has an lpc_alpha: evaluate its checkpoints with `batch_eval.py`."),
    )
    return table, updates


@app.cell
def _(updates):
    update_dropdown = mo.ui.dropdown(
        {"newest all runs of a condition have": None} | {str(u): u for u in updates},
        value="newest all runs of a condition have",
        label="update",
    )
    update_dropdown
    return (update_dropdown,)


@app.cell
def _(table, update_dropdown):
    try:  # a seed trained twice, or runs of a condition that share no update: refused, named
        inference.final_rows(table, update_dropdown.value)
    except inference.StatsError as _e:
        mo.stop(True, refusal("Cannot compare these runs.", _e))
    seeds = inference.across_seeds(table, update_dropdown.value)
    scalars = inference.metrics_by_alpha(table, update_dropdown.value)
    mo.ui.table(
        readable(seeds), page_size=12, label="across seeds: mean r, 95% CI, t-test on z, Holm per condition"
    )
    return scalars, seeds


@app.cell
def _(table, update_dropdown):
    relevance = inference.partial_summary(table, update_dropdown.value)
    mo.ui.table(
        readable(relevance),
        page_size=12,
        label="decision-relevance: raw r beside the partial r given log visits (and the step), 95% CI, Holm",
    )
    return (relevance,)


@app.cell
def _(seeds, table, update_dropdown):
    stats_plots.plot_r_vs_alpha(
        inference.runs_with_alpha(table, update_dropdown.value),
        inference.spatial_for_figure(seeds),
        inference.phases_of(table),
    )
    return


@app.cell
def _(scalars, table, update_dropdown):
    stats_plots.plot_metrics_vs_alpha(inference.runs_with_alpha(table, update_dropdown.value), scalars)
    return


@app.cell
def _(table):
    stats_plots.plot_metrics_vs_update(inference.metrics_by_update(table))
    return


@app.cell
def _(table, update_dropdown):
    _runs = inference.runs_with_alpha(table, update_dropdown.value)
    stats_plots.plot_pooled_scatter(_runs, inference.phase_fits(_runs, inference.phases_of(table)))
    return


@app.cell
def _(table, update_dropdown):
    stats_plots.plot_correlation_summary(
        inference.correlation_summary(table, update_dropdown.value),
        len(inference.final_rows(table, update_dropdown.value)),
    )
    return


if __name__ == "__main__":
    app.run()
