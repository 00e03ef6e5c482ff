"""What situations make a MoP agent route to its big experts? The generative model's analyses.

A marimo notebook over one trained generative model (train_generative.py): its held-out
reconstruction metrics, and each analysis of generative_analysis.py run on demand: samples from the
prior; maximising a routing / LPC / action target ('all': every expert) with its positive control,
reported on held-out contexts with intervals, the model's KL and its z-sensitivity; saliency;
collapse / swap of a memory direction, re-read by the real agent; behaviour clusters; PCA of the
memory; memory directions; decoder accuracy. Each analysis shows its figures and a table of its
calibrated results (mop/generative_probes.result_table).
All logic lives in generative_analysis.py and generative_plots.py; this file is wiring. Models are
looked for under GENERATIVE_DIR (default generative/).

    marimo run generative_viz.py        # the app
    python generative_viz.py            # headless, as a script
"""

import marimo

__generated_with = "0.25.2"
app = marimo.App(width="medium", app_title="MoP generative analyses")

with app.setup:
    from mop.notebook_script import script_help

    script_help(__file__)  # --help: how to run this notebook, before the imports below
    import os
    from pathlib import Path

    import marimo as mo

    import generative_analysis
    from mop import generative_probes
    from mop.experiment import ConfigError, read_metrics
    from mop.notebook_script import refusal
    from mop.runs import OutputError
    from record import RecordingError
    from train_generative import GenerativeError


@app.cell(hide_code=True)
def _():
    mo.md("""
    # Generative visualisation of a MoP agent

    **Which situations recruit the big experts?** A VAE whose decoder simulates BabyAI views with
    the real, frozen agent inside the loop: decode rollouts from the prior, optimise the latent to
    raise a router weight (beside an action target, the positive control) and check the change on
    held-out contexts and on hard (argmax) views; saliency maps, memory-direction edits and behaviour
    clusters. "moved" is decided with Holm over the mode's targets; "did not move" only by an
    equivalence test at a stated margin; otherwise "not resolved" (a blank interval: not
    measured). Reads `model_final.pt` files under `generative/`
    (`GENERATIVE_DIR`); analyses write next to the model.
    """)
    return


@app.cell
def _():
    root = Path(os.environ.get("GENERATIVE_DIR", "generative"))
    models = sorted(str(p) for p in root.rglob("model_final.pt")) if root.is_dir() else []
    model_picker = mo.ui.dropdown(models, value=models[0] if models else None, label="model")
    analysis_picker = mo.ui.dropdown(list(generative_analysis.ANALYSES), value="samples", label="analysis")
    target = mo.ui.text(value="lpc", label="maximise target (`layer_<k>:expert_<j>` | `lpc` | `action:<a>`)")
    from_start = mo.ui.checkbox(
        value=False, label="samples/maximise: contexts from an episode's first step (the opening phase)"
    )
    run_button = mo.ui.run_button(label="run analysis")
    mo.vstack([model_picker, analysis_picker, target, from_start, run_button])
    return analysis_picker, from_start, model_picker, run_button, target


@app.cell
def _(model_picker):
    mo.stop(model_picker.value is None, mo.md("No generative model found: run train_generative.py first."))
    try:
        metrics = read_metrics(Path(model_picker.value).parent / "metrics.jsonl")
    except OSError as _e:  # missing: the model is still usable
        mo.stop(True, mo.callout(mo.md(f"**No held-out metrics.** {_e}"), kind="warn"))
    except ValueError as _e:  # not this project's metrics.jsonl: a file it cannot use
        mo.stop(True, refusal("Cannot read the held-out metrics.", _e))
    held_out = {k: v for k, v in (metrics[-1] if metrics else {}).items() if k.startswith("held_out/")}
    mo.ui.table([{"metric": k, "value": v} for k, v in held_out.items()], label="held-out metrics")
    return


@app.cell
def _(analysis_picker, from_start, model_picker, run_button, target):
    mo.stop(not run_button.value or model_picker.value is None)
    argv = ["--model", model_picker.value, "--analysis", analysis_picker.value]
    if analysis_picker.value == "maximise":
        argv += ["--target", target.value]
    if from_start.value and analysis_picker.value in ("samples", "maximise"):
        argv += ["--from_episode_start"]
    try:
        summary = generative_analysis.run(generative_analysis.build_parser().parse_args(argv))
    except (GenerativeError, RecordingError, ConfigError, OutputError) as _e:  # one line, not a traceback
        mo.stop(True, refusal("Cannot run this analysis.", _e))
    # The GIFs are 84-pixel views: a row of them, enlarged with sharp cells (not stretched to the
    # page's width, as a vstack would); the figures at their own size.
    gifs = [
        mo.image(src=f, width=168, style={"image-rendering": "pixelated"})
        for f in summary["files"]
        if f.endswith(".gif")
    ]
    figures = [mo.image(src=f) for f in summary["files"] if f.endswith(".png")]
    shown = mo.json({k: v for k, v in summary.items() if k != "files"})
    rows = generative_probes.result_table(summary)  # the calibrated results, one row per run
    table = [mo.ui.table(rows, label="results", page_size=20)] if rows else []
    mo.vstack([*table, mo.hstack(gifs, justify="start", wrap=True), *figures, shown], align="start")
    return


if __name__ == "__main__":
    app.run()
