"""What does the policy do, and where is it unsure? Action statistics of one evaluation's cache.

A marimo notebook over one routing cache (MoP or GRU baseline): action frequencies (split by whether
the agent carries something), the policy's entropy per grid cell, where a cell's actions differ from
all steps' or from its neighbours' (KL), and one cell's action distribution. The plots live in
plotting_utils.py, the numbers in routing_analysis.py; this file is wiring. ROUTING_CACHE_DIR
overrides the cache root (default evaluation_cache under the working directory).

    marimo run logit_viz.py
    python logit_viz.py
"""

import marimo

__generated_with = "0.25.2"
app = marimo.App(width="medium", app_title="MoP policy logits")

with app.setup:
    from mop.notebook_script import script_help

    script_help(__file__)  # --help: how to run this notebook, before the imports below
    import os
    from pathlib import Path

    import marimo as mo

    import plotting_utils as pu
    from mop import routing_analysis as ra
    from mop import routing_cache
    from mop.notebook_script import refusal
    from mop.runs import run_label


@app.cell(hide_code=True)
def _():
    mo.md("""
    # What the policy does, and where it is unsure

    **Which actions does the policy take, where is its action distribution broad, and where does it
    act differently from everywhere else?** Reads the per-step actions and logits of a routing cache
    written by `batch_eval.py` under `evaluation_cache/` (`ROUTING_CACHE_DIR`); works for the GRU
    baseline too. Routing itself is in `routing_viz.py`.
    """)
    return


@app.cell
def _():
    cache_root = Path(os.environ.get("ROUTING_CACHE_DIR", "evaluation_cache"))
    _found = routing_cache.find_caches(cache_root)
    caches = {run_label(_c): str(_c) for _c in _found}
    _newest = routing_cache.newest_cache(_found)  # the evaluation just run, not the first by name
    cache_dropdown = mo.ui.dropdown(
        caches, value=run_label(_newest) if _newest else None, label="cache", searchable=True
    )
    cache_dropdown
    return cache_dropdown, cache_root


@app.cell
def _(cache_dropdown, cache_root):
    mo.stop(
        cache_dropdown.value is None,
        mo.callout(
            mo.md(f"""
            **No routing cache under `{cache_root}`.** Create one by evaluating checkpoints:
            `python batch_eval.py --cache_dir {cache_root}` (or point `ROUTING_CACHE_DIR` at one).
            """),
            kind="warn",
        ),
    )
    try:
        # a sign that work is under way: the figures below follow once it is read
        with mo.status.spinner(title=f"Reading {Path(cache_dropdown.value).name} ..."):
            data = routing_cache.load_cache(cache_dropdown.value)
    except routing_cache.CacheError as _e:  # the project's one-line reason, not a traceback
        mo.stop(True, refusal("Cannot read this cache.", _e))
    return (data,)


@app.cell
def _(data):
    grid_info = ra.grid_info_for(data.steps, data.episodes)
    _m = data.meta["metrics"]
    mo.md(
        f"**{_m.get('eval_task_id') or data.meta['config']['task_id']}** · "
        f"`{data.meta.get('checkpoint_path')}` · {len(data.episodes)} episodes, {len(data.steps)} steps · "
        f"success rate {_m.get('success_rate', float('nan')):.2f}"
    )
    return (grid_info,)


@app.cell(hide_code=True)
def _(data):
    _carries = bool((data.steps["carrying"] == 1).any())
    carrying_switch = mo.ui.switch(value=_carries, label="split by carrying", disabled=not _carries)
    mo.hstack([mo.md("## Actions"), carrying_switch], justify="space-between", align="center")
    return (carrying_switch,)


@app.cell
def _(carrying_switch, data):
    fig_actions = pu.plot_action_frequency(data.steps, by_carrying=carrying_switch.value)
    fig_actions
    return


@app.cell(hide_code=True)
def _(data):
    mo.md(f"""
    ## Policy entropy
    Mean entropy of the action distribution per cell (mean over all {len(data.steps)} steps
    {data.steps["entropy"].mean():.2f} nats): bright cells are where the policy hesitates.
    """)
    return


@app.cell
def _(data, grid_info):
    fig_entropy = pu.plot_entropy_heatmap(data.steps, grid_info)
    fig_entropy
    return


@app.cell(hide_code=True)
def _(data):
    min_visits_slider = mo.ui.slider(1, 50, value=5, label="min visits per cell", show_value=True)
    mo.vstack(
        [
            mo.md(f"""
            ## Where actions differ (KL)
            KL of a cell's action distribution from all steps' (*global*) and from its four
            neighbours' pooled (*neighbours*), over the {data.steps.groupby(["x", "y"]).ngroups}
            visited cells; cells with fewer visits are left out.
            """),
            min_visits_slider,
        ]
    )
    return (min_visits_slider,)


@app.cell
def _(data, grid_info, min_visits_slider):
    fig_kl_global = pu.plot_kl_heatmap(data.steps, "global", min_visits_slider.value, grid_info)
    fig_kl_global
    return


@app.cell
def _(data, grid_info, min_visits_slider):
    fig_kl_neighbours = pu.plot_kl_heatmap(data.steps, "neighbours", min_visits_slider.value, grid_info)
    fig_kl_neighbours
    return


@app.cell(hide_code=True)
def _(data, grid_info):
    _busiest = data.steps.groupby(["x", "y"]).size().idxmax()  # default: the most visited cell
    x_slider = mo.ui.slider(
        grid_info["x_min"], grid_info["x_max"], value=int(_busiest[0]), label="x", include_input=True
    )
    y_slider = mo.ui.slider(
        grid_info["y_min"], grid_info["y_max"], value=int(_busiest[1]), label="y", include_input=True
    )
    mo.vstack([mo.md("## One cell's actions"), mo.hstack([x_slider, y_slider], justify="start", gap=2)])
    return x_slider, y_slider


@app.cell
def _(data, x_slider, y_slider):
    _here = (data.steps["x"] == x_slider.value) & (data.steps["y"] == y_slider.value)
    mo.stop(
        not _here.any(),
        mo.md(f"*Cell ({x_slider.value}, {y_slider.value}) was never visited; pick a coloured cell above.*"),
    )
    fig_cell = pu.plot_cell_action_distribution(data.steps, x_slider.value, y_slider.value)
    fig_cell
    return


if __name__ == "__main__":
    app.run()
