"""Where do Mixture-of-Pathways routers send their weight? Heatmaps of one evaluation's routing.

A marimo notebook over one routing cache (or a fresh evaluation of a checkpoint): metrics, the
dominant expert per grid cell by grouping (starting room, door, phase...), LPC, routing over time,
weight distributions and phase specialisation. The plots live in plotting_utils.py, the numbers in
routing_analysis.py; this file is wiring. Paths default to the project layout under the working
directory; environment variables override them: ROUTING_CACHE_DIR (evaluation_cache),
CHECKPOINT_DIRS (checkpoints:modal_checkpoints, os.pathsep-separated), RESULTS_CSV
(evaluation_results.csv), PLOTS_DIR (plots).

    marimo run routing_viz.py            # the app
    marimo edit routing_viz.py           # the notebook
    python routing_viz.py                # headless, as a script
"""

import marimo

__generated_with = "0.25.2"
app = marimo.App(width="medium", app_title="MoP routing")

with app.setup:
    from mop.notebook_script import script_help

    script_help(__file__)  # --help: how to run this notebook, before the imports below
    # Only what reading a cache needs: torch (batch_eval, eval_mop, mop.experiment) is imported in
    # the cells that evaluate a checkpoint or read metrics.jsonl, minigrid where the level is drawn.
    import os
    from pathlib import Path

    import marimo as mo

    import plotting_utils as pu
    from mop import level_image as levels
    from mop import routing_analysis as ra
    from mop import routing_cache
    from mop import subgoal_analysis as sga
    from mop import subgoal_plots as sgp
    from mop.notebook_script import refusal
    from mop.results import read_results
    from mop.runs import DEFAULT_CHECKPOINT_DIRS, cache_dir_for, find_checkpoints, run_label, run_subpath


@app.cell(hide_code=True)
def _():
    mo.md("""
    # Mixture-of-Pathways routing on BabyAI

    **Which expert does the router pick, where in the level and when in the episode, and what does
    that cost?** Each layer mixes GRU experts of different sizes (*identity* = the free size-0
    pathway); a cell's hue names its dominant expert and its depth how dominant it is, and each
    expert's own map below shows where it gets more or less weight than its mean; LPC
    (Σ weight · size²) is the computation spent. The level picture is one example layout of the
    evaluation's N (the same one `render_plots.py` draws), not a picture of all of them.

    Reads a routing cache written by `batch_eval.py` under `evaluation_cache/` (`ROUTING_CACHE_DIR`),
    or evaluates a checkpoint from `checkpoints/` / `modal_checkpoints/` (`CHECKPOINT_DIRS`) on the
    spot. **Save figures** writes PNGs under `plots/` (`PLOTS_DIR`), mirroring the cache's folder.
    """)
    return


@app.cell
def _():
    cache_root = Path(os.environ.get("ROUTING_CACHE_DIR", "evaluation_cache"))
    checkpoint_dirs = os.environ.get("CHECKPOINT_DIRS", os.pathsep.join(DEFAULT_CHECKPOINT_DIRS)).split(
        os.pathsep
    )
    results_csv = Path(os.environ.get("RESULTS_CSV", "evaluation_results.csv"))
    plots_root = Path(os.environ.get("PLOTS_DIR", "plots"))
    _found = routing_cache.find_caches(cache_root)
    caches = {run_label(_c): str(_c) for _c in _found}
    newest = run_label(_c) if (_c := routing_cache.newest_cache(_found)) else None  # the latest evaluation
    # A path scan (no torch): whether there is anything to evaluate when there is no cache.
    any_checkpoint = not caches and bool(find_checkpoints(checkpoint_dirs))
    return any_checkpoint, cache_root, caches, checkpoint_dirs, newest, plots_root, results_csv


@app.cell
def _(any_checkpoint, caches, newest):
    use_cache = mo.ui.switch(value=bool(caches) or not any_checkpoint, label="use cached routing data")
    cache_dropdown = mo.ui.dropdown(caches, value=newest, label="cache", searchable=True)
    # A fresh evaluation reaches `data` through this state, so `data` (and every figure) does not
    # wait for the checkpoint list, which reads checkpoint files with torch (the last cell).
    get_evaluated, set_evaluated = mo.state(None)
    return cache_dropdown, get_evaluated, set_evaluated, use_cache


@app.cell(hide_code=True)
def _(cache_dropdown, use_cache):
    mo.hstack([use_cache, cache_dropdown] if use_cache.value else [use_cache], justify="start", gap=1.5)
    return


@app.cell(hide_code=True)
def _(
    checkpoint_dirs,
    checkpoint_dropdown,
    envs_slider,
    episodes_slider,
    evaluate_button,
    get_evaluated,
    set_evaluated,
    use_cache,
):
    mo.stop(use_cache.value)
    _controls = mo.hstack(
        [checkpoint_dropdown, episodes_slider, envs_slider, evaluate_button],
        justify="start",
        gap=1.5,
        wrap=True,
    )
    mo.stop(
        checkpoint_dropdown.value is None,
        mo.callout(
            mo.md(f"""
            **No checkpoint under {", ".join(f"`{d}`" for d in checkpoint_dirs)}.** Train one:
            `python train_mop.py --task_id BabyAI-GoToLocal-v0 --trial 0` (or set `CHECKPOINT_DIRS`).
            """),
            kind="warn",
        ),
    )
    if not evaluate_button.value:
        if get_evaluated() is not None:  # another checkpoint or setting: evaluate again first
            set_evaluated(None)
        mo.stop(True, _controls)
    import eval_mop as _eval_mop  # torch: only to evaluate

    try:
        with mo.status.spinner(title=f"Evaluating {episodes_slider.value} episodes..."):
            _result = _eval_mop.evaluate(
                checkpoint_dropdown.value,
                _eval_mop.EvalOptions(num_episodes=episodes_slider.value, num_envs=envs_slider.value),
            )
    except _eval_mop.EvalError as _e:
        mo.stop(True, refusal("Cannot evaluate this checkpoint.", _e))
    _meta = {
        "checkpoint_path": checkpoint_dropdown.value,
        "config": _result.config,
        "metrics": _result.metrics,
    }
    set_evaluated(
        (
            routing_cache.CacheData(_result.steps, _result.episodes, _meta, Path(checkpoint_dropdown.value)),
            cache_dir_for("", _result.config, checkpoint_dropdown.value),
        )
    )
    _controls
    return


@app.cell
def _(cache_dropdown, cache_root, get_evaluated, use_cache):
    mo.stop(
        use_cache.value and cache_dropdown.value is None,
        mo.callout(
            mo.md(f"""
            **No routing cache under `{cache_root}`.** Create one by evaluating checkpoints:
            `python batch_eval.py --cache_dir {cache_root}` (or point `ROUTING_CACHE_DIR` at one),
            or switch *use cached routing data* off to evaluate a checkpoint here.
            """),
            kind="warn",
        ),
    )
    if use_cache.value:
        try:
            # a sign that work is under way: the figures below follow once it is read
            with mo.status.spinner(title=f"Reading {Path(cache_dropdown.value).name} ..."):
                data = routing_cache.load_cache(cache_dropdown.value)
        except routing_cache.CacheError as _e:  # the project's one-line reason, not a traceback
            mo.stop(True, refusal("Cannot read this cache.", _e))
        plot_dir = run_subpath(cache_dropdown.value)  # plots/ mirrors the cache's folder
    else:
        mo.stop(
            get_evaluated() is None,
            mo.md("Choose a checkpoint and press **evaluate** (greedy actions, evaluation layouts)."),
        )
        data, plot_dir = get_evaluated()
    return data, plot_dir


@app.cell
def _(data):
    grid_info = ra.grid_info_for(data.steps, data.episodes)
    analyses = ra.get_available_analyses(data.steps, data.episodes)
    has_routing = ra.has_routing(data.steps)
    eval_task = data.meta["metrics"].get("eval_task_id") or data.meta["config"]["task_id"]
    return analyses, eval_task, grid_info, has_routing


@app.cell(hide_code=True)
def _(data, eval_task, has_routing):
    _m = data.meta["metrics"]

    def _fmt(value, pattern="{:.2f}"):
        return "–" if value is None or value != value else pattern.format(value)  # None or NaN

    _rows = [
        f"layer {k}: "
        + " · ".join(
            f"{'identity' if size == 0 else f'{size} units'} **{w:.2f}**"
            for size, w in zip(data.expert_sizes[k], u)
        )
        for k, u in (ra.expert_usage(_m) if has_routing else {}).items()
    ]
    _ko = _m.get("knockout", "none")
    mo.vstack(
        [
            mo.md(
                f"**{eval_task}** · `{data.meta.get('checkpoint_path')}`"
                + ("" if _ko in (None, "none") else f" · knockout **{_ko}**")
            ),
            mo.hstack(
                [
                    mo.stat(
                        _fmt(_m.get("success_rate")),
                        label="success rate",
                        caption=f"95% CI [{_fmt(_m.get('success_ci_low'))}, {_fmt(_m.get('success_ci_high'))}]"
                        f" · {len(data.episodes)} episodes",
                        bordered=True,
                    ),
                    mo.stat(
                        _fmt(_m.get("path_ratio")),
                        label="path ratio",
                        caption="agent / bot steps (successes)",
                        bordered=True,
                    ),
                    mo.stat(
                        _fmt(_m.get("mean_lpc"), "{:.1f}"),
                        label="mean LPC",
                        caption="Σ w·size² per step",
                        bordered=True,
                    ),
                    mo.stat(
                        _fmt(_m.get("mean_episode_length"), "{:.1f}"),
                        label="episode length",
                        caption=f"steps; {_m.get('bot_plan_failures', 0)} bot plan failures",
                        bordered=True,
                    ),
                ],
                justify="start",
                widths="equal",
            ),
            mo.md("**Expert usage** (mean router weight per step) — " + "; ".join(_rows))
            if _rows
            else mo.md("*No router weights in this cache (a GRU baseline): see `logit_viz.py`.*"),
        ]
    )
    return


@app.cell
def _(analyses, data, has_routing):
    # Every family's controls live in the cell that defines the tabs, so moving a slider does not
    # rebuild the tabs (and jump back to the first one); plot cells below read `family.value`.
    analysis_dropdown = mo.ui.dropdown(
        {a.replace("_", " "): a for a in analyses}, value="overall", label="group by"
    )
    _episodes = data.episodes["episode"]
    episode_slider = mo.ui.slider(
        int(_episodes.min()),
        int(_episodes.max()),
        value=ra.pick_example_episode(data.episodes) if has_routing else int(_episodes.min()),
        label="episode",
        include_input=True,
    )
    _events = {
        name: e for e, name in ra.EVENT_NAMES.items() if e in data.steps and data.steps[e].notna().any()
    }
    event_dropdown = mo.ui.dropdown(_events, value=next(iter(_events), None), label="align on")
    window_slider = mo.ui.slider(3, 40, value=10, label="steps either side", show_value=True)
    _groupings = {a.replace("_", " "): a for a in analyses if a != "overall"}
    _preferred = ("by key phase", "by door unlocked phase", "by carrying phase", "by quadrant")
    phase_dropdown = mo.ui.dropdown(
        _groupings,
        value=next((g for g in _preferred if g in _groupings), next(iter(_groupings), None)),
        label="group by",
    )
    family = mo.ui.tabs(
        {
            "spatial routing": analysis_dropdown,
            "LPC": mo.md("Mean LPC per cell (Σ w·size², the computation the router spends there)."),
            "time": mo.hstack([episode_slider, event_dropdown, window_slider], justify="start", gap=2),
            "distributions": mo.md("Router weights and router entropy over all steps; mean usage."),
            "specialisation": mo.hstack(
                [phase_dropdown, mo.md("and routing in successful vs failed episodes")], justify="start"
            ),
        }
    )
    family
    return (
        analysis_dropdown,
        episode_slider,
        event_dropdown,
        family,
        phase_dropdown,
        window_slider,
    )


@app.cell
def _(analysis_dropdown, data, eval_task):
    # The level picture: the cache's example layout (routing_analysis.example_layout, the one rule
    # render_plots.py uses too), captioned as one layout of N; for the starting-room grouping, the
    # first episode starting in each room. Drawn once per server (mop.level_image keeps them).
    level_image, example = levels.example_image(data)
    level_mission = example.mission
    level_images = level_image
    if analysis_dropdown.value == "by_starting_room" and level_image is not None:
        _seeds = data.episodes.set_index("episode")["seed"]
        _max_steps = data.meta["metrics"].get("max_steps")
        _max_steps = None if _max_steps is None else int(_max_steps)
        _labels, _rooms = ra.group_labels(data.steps, data.episodes, "by_starting_room")
        _first = data.steps.groupby(_labels.to_numpy())["episode"].first()
        level_images = {g: levels.render(eval_task, int(_seeds[_first[g]]), _max_steps)[0] for g in _rooms}
    return example, level_image, level_images, level_mission


@app.cell
def _(
    analysis_dropdown,
    data,
    example,
    family,
    grid_info,
    has_routing,
    level_image,
    level_images,
):
    mo.stop(family.value != "spatial routing")
    mo.stop(not has_routing, mo.md("*No router weights in this cache: nothing to route.*"))
    fig_routing = (
        pu.plot_overall_routing(
            data.steps,
            data.expert_sizes,
            level_image,
            example.mission,
            grid_info=grid_info,
            example=example,
        )
        if analysis_dropdown.value == "overall"
        else pu.plot_grouped_routing(
            data.steps,
            data.episodes,
            analysis_dropdown.value,
            data.expert_sizes,
            env_images=level_images,
            grid_info=grid_info,
        )
    )
    fig_routing
    return


@app.cell
def _(analysis_dropdown, data, family, grid_info, has_routing):
    # Each expert's own map (its difference from its mean): readable where one expert floods a layer.
    mo.stop(family.value != "spatial routing" or not has_routing or analysis_dropdown.value != "overall")
    fig_by_expert = pu.plot_routing_by_expert(data.steps, data.expert_sizes, grid_info)
    fig_by_expert
    return


@app.cell
def _(data, family, grid_info, has_routing):
    mo.stop(family.value != "LPC" or not has_routing)
    fig_lpc = pu.plot_lpc_heatmap(data.steps, grid_info)
    fig_lpc
    return


@app.cell
def _(data, episode_slider, example, family, has_routing):
    mo.stop(family.value != "time" or not has_routing)
    _mission = data.episodes.set_index("episode")["mission"].get(episode_slider.value)
    fig_episode = pu.plot_episode_routing(
        data.steps, episode_slider.value, data.expert_sizes, _mission, example=example
    )
    fig_episode
    return


@app.cell
def _(data, event_dropdown, family, has_routing, window_slider):
    mo.stop(family.value != "time" or not has_routing)
    mo.stop(
        event_dropdown.value is None,
        mo.md("*No pickup, door opening or drop happened in these episodes: nothing to align on.*"),
    )
    fig_event = pu.plot_event_aligned_routing(
        data.steps, event_dropdown.value, window_slider.value, data.expert_sizes
    )
    fig_event
    return


@app.cell
def _(data, family, has_routing):
    mo.stop(family.value != "distributions" or not has_routing)
    fig_histograms = pu.plot_weight_histograms(data.steps, data.expert_sizes)
    fig_histograms
    return


@app.cell
def _(data, family, has_routing):
    mo.stop(family.value != "distributions" or not has_routing)
    fig_router_entropy = pu.plot_routing_entropy(data.steps, data.expert_sizes)
    fig_router_entropy
    return


@app.cell
def _(data, family, has_routing):
    mo.stop(family.value != "distributions" or not has_routing)
    fig_usage = pu.plot_expert_usage(data.steps, data.expert_sizes)
    fig_usage
    return


@app.cell
def _(data, family, has_routing, phase_dropdown):
    mo.stop(family.value != "specialisation" or not has_routing)
    mo.stop(phase_dropdown.value is None, mo.md("*This cache supports no grouping besides 'overall'.*"))
    fig_phases = pu.plot_phase_specialisation(
        data.steps, data.episodes, data.expert_sizes, phase_dropdown.value
    )
    fig_phases
    return


@app.cell
def _(data, family, has_routing):
    mo.stop(family.value != "specialisation" or not has_routing)
    fig_outcome = pu.plot_success_vs_failure(data.steps, data.episodes, data.expert_sizes)
    fig_outcome
    return


@app.cell
def _(data, family, has_routing):
    # Routing by the BabyAI bot's subgoal and around the level's events (mop/subgoal_analysis):
    # one cache is one run, so the intervals are over its episodes / events, as the figures say.
    mo.stop(family.value != "specialisation" or not has_routing)
    mo.stop(
        not sga.has_subgoals(data.steps),
        mo.md("*No subgoal columns in this cache: evaluate with `eval_mop.py --record_subgoals` to see "
              "routing by the bot's subgoal and around events.*"),
    )  # fmt: skip
    _runs = {"this run": data.steps}
    _k = min(5, int(data.steps["t"].max()))
    _locked = {_e: sga.event_locked(_runs, _e, _k) for _e in sga.events_present(_runs)}
    fig_subgoals = mo.vstack(
        [
            sgp.plot_routing_by_subgoal(
                sga.routing_by_subgoal(_runs, data.expert_sizes), data.expert_sizes,
                title="Routing by the bot's subgoal",
            ),
            sgp.plot_event_locked(_locked, data.expert_sizes, title=f"Routing around events, ±{_k} steps"),
        ]
    )  # fmt: skip
    fig_subgoals
    return


@app.cell(hide_code=True)
def _(plot_dir, plots_root):
    save_button = mo.ui.run_button(label="save figures")
    mo.hstack(
        [save_button, mo.md(f"every figure of this evaluation as PNG under `{plots_root / plot_dir}/`")],
        justify="start",
    )
    return (save_button,)


@app.cell
def _(
    analysis_dropdown,
    data,
    example,
    level_image,
    level_images,
    plot_dir,
    plots_root,
    results_csv,
    save_button,
):
    mo.stop(not save_button.value)
    from mop.experiment import read_metrics as _read_metrics  # torch: only when saving

    _metrics_file = Path(str(data.meta.get("checkpoint_path"))).parent / "metrics.jsonl"
    try:
        _rows = _read_metrics(_metrics_file) if _metrics_file.is_file() else None
        _results = read_results(results_csv)
    except ValueError as _e:  # ResultsError, or a metrics.jsonl that is not ours
        mo.stop(True, refusal("Nothing saved.", _e))
    _figures = pu.standard_figures(
        data,
        env_image=level_image,
        env_mission=example.mission,
        metrics_rows=_rows,
        results_df=_results,
    )
    if analysis_dropdown.value != "overall" and ra.has_routing(data.steps):
        _figures[f"routing_{analysis_dropdown.value}"] = pu.plot_grouped_routing(
            data.steps, data.episodes, analysis_dropdown.value, data.expert_sizes, env_images=level_images
        )
    saved = pu.save_figures(_figures, plots_root / plot_dir)
    mo.md(f"Saved {len(saved)} figures to `{plots_root / plot_dir}/`: " + ", ".join(p.name for p in saved))
    return


@app.cell
def _(checkpoint_dirs):
    # Last in the file, so the kernel runs it after the figures: discover reads each run's
    # checkpoint_final.pt (torch) to leave out numbered checkpoints that hold the same weights.
    import batch_eval as _batch_eval

    checkpoints = {
        f"{_r.task_id} · trial {_r.trial}"
        + ("" if _r.seed is None else f" · seed {_r.seed}")
        + (" · final" if _r.update is None else f" · update {_r.update}"): _r.path
        for _r in _batch_eval.discover(checkpoint_dirs)
    }
    checkpoint_dropdown = mo.ui.dropdown(
        checkpoints, value=next(iter(checkpoints), None), label="checkpoint", searchable=True
    )
    episodes_slider = mo.ui.slider(10, 1000, step=10, value=100, label="episodes", show_value=True)
    envs_slider = mo.ui.slider(1, 32, value=16, label="parallel envs", show_value=True)
    evaluate_button = mo.ui.run_button(label="evaluate")
    return checkpoint_dropdown, checkpoints, envs_slider, episodes_slider, evaluate_button


if __name__ == "__main__":
    app.run()
