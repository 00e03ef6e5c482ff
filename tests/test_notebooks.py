"""The marimo notebooks (routing_viz, logit_viz, cross_task_viz, stats_viz, generative_viz) on real
inputs.

The module fixture trains a tiny MoP on BabyAI-UnlockPickup-v0 (checkpoints at updates 3 and 6 and
final), runs batch_eval on every checkpoint and once more on the final one under a knockout, and
points the notebooks at it through their environment variables. Each notebook must pass
`marimo check`, run as a script, build its figures when run in-process (and show a message instead
of crashing when there is no data), and export to HTML. The browser tests serve each notebook with
`marimo run` on 127.0.0.1 and open it in Debian's headless Chromium through Playwright; they are
skipped only when /usr/bin/chromium is absent (install it with scripts/install_browser.sh).
stats_viz reads seed_metrics.csv tables that stats.py builds from synthetic caches of two levels
(bench/stats_speed.make_cache, as tests/test_stats.py); generative_viz reads two tiny generative
models trained on a recording of the session's tiny run (as tests/test_generative.py).

    pytest tests/test_notebooks.py
    pytest tests/test_notebooks.py -m browser -s      # prints where the screenshots are
    pytest tests/test_notebooks.py -m "not browser"   # without Chromium
"""

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

import batch_eval
import stats
import train_mop
from conftest import tiny_config
from mop import inference, routing_cache
from mop.experiment import read_metrics
from mop.runs import run_subpath

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ["routing_viz.py", "logit_viz.py", "cross_task_viz.py"]  # over the `project` chain
ALL_NOTEBOOKS = [*NOTEBOOKS, "stats_viz.py", "generative_viz.py"]
TASK = "BabyAI-UnlockPickup-v0"
EPISODES = 12
CHROMIUM = "/usr/bin/chromium"
PNG = 'img[src^="data:image/png"]'  # how marimo shows a matplotlib Figure
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# What marimo's front end shows when a cell fails (an app shows the first as a toast).
ERROR_TEXTS = (
    "An internal error occurred",
    "This cell wasn't run because it has errors",
    "Ancestor prevented from running",
    "Traceback (most recent call last)",
)


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> dict:
    """A tiny trained run, batch-evaluated into a results CSV and routing caches; returns the
    notebooks' environment variables and what the chain wrote."""
    root = tmp_path_factory.mktemp("notebooks")
    cfg = tiny_config(
        root / "checkpoints",
        task_id=TASK,
        unroll_len=16,
        log_interval=2,
        teacher_forcing=0.9,
        max_steps=64,  # short failed episodes keep the evaluations quick
        path_ratio_fraction=0.1,
    )
    train_mop.main(cfg, progress=False)
    common = [
        "--checkpoint_dir",
        str(root / "checkpoints"),
        "--results_path",
        str(root / "evaluation_results.csv"),
        "--cache_dir",
        str(root / "evaluation_cache"),
    ]
    # the knockout first: the notebooks open on the newest cache, here the final checkpoint's
    batch_eval.main([*common, "--num_episodes", "8", "--final_only", "--knockout", "largest"])
    batch_eval.main([*common, "--num_episodes", str(EPISODES)])
    env = {
        "ROUTING_CACHE_DIR": str(root / "evaluation_cache"),
        "CHECKPOINT_DIRS": str(root / "checkpoints"),
        "RESULTS_CSV": str(root / "evaluation_results.csv"),
        "PLOTS_DIR": str(root / "plots"),
        "MPLBACKEND": "Agg",
    }
    return {"root": root, "env": env}


STATS_LEVELS = {"BabyAI-GoToLocal-v0": (10, 20), "BabyAI-UnlockPickup-v0": (20,)}  # level: updates


@pytest.fixture(scope="module")
def stats_tables(tmp_path_factory) -> dict:
    """stats/<task>/seed_metrics.csv of two levels, built by stats.main from synthetic caches
    (2 α × 3 seeds; GoToLocal at updates 10 and 20); returns stats_viz's environment variables."""
    from bench.stats_speed import make_cache, results_rows

    root = tmp_path_factory.mktemp("stats_viz")
    rng = np.random.default_rng(0)
    for task, updates in STATS_LEVELS.items():
        made = [
            make_cache(
                root / "cache",
                task,
                trial,
                seed,
                update,
                alpha,
                rng,
                episodes=20,
                length=24,
                key_phases=task == "BabyAI-UnlockPickup-v0",
            )
            for trial, alpha in enumerate([0.0, 1e-4])
            for seed in range(3)
            for update in updates
        ]
        results = root / f"results_{task}.csv"
        results_rows(made).to_csv(results, index=False)
        argv = ["--task_id", task, "--cache_dir", str(root / "cache"), "--results_path", str(results)]
        stats.main([*argv, "--out", str(root / "stats" / task), "--no_figures"])
    return {"STATS_DIR": str(root / "stats"), "MPLBACKEND": "Agg"}


@pytest.fixture(scope="module")
def generative_models(tiny_run, tmp_path_factory) -> dict:
    """Two tiny generative models (2 and 3 updates) of a recording of the tiny run's final
    checkpoint, under one GENERATIVE_DIR; returns generative_viz's environment variables."""
    import record
    import train_generative

    root = tmp_path_factory.mktemp("generative_viz")
    recording = root / "recording"
    record.record(tiny_run.run_dir / "checkpoint_final.pt", recording, num_episodes=6, num_envs=3)
    common = ["--dataset", str(recording), "--num_init_steps", "2", "--num_sim_steps", "4"]
    common += ["--hidden_size", "32", "--z_dim", "4", "--log_interval", "1", "--no_progress"]
    for name, updates in (("a", "2"), ("b", "3")):
        train_generative.main([*common, "--out", str(root / "generative" / name), "--num_updates", updates])
    return {"GENERATIVE_DIR": str(root / "generative"), "MPLBACKEND": "Agg"}


@pytest.fixture()
def empty_env(tmp_path) -> dict:
    """Environment variables that point at folders with nothing in them."""
    return {
        "ROUTING_CACHE_DIR": str(tmp_path / "no_cache"),
        "CHECKPOINT_DIRS": str(tmp_path / "no_checkpoints"),
        "RESULTS_CSV": str(tmp_path / "no_results.csv"),
        "PLOTS_DIR": str(tmp_path / "plots"),
        "MPLBACKEND": "Agg",
    }


def run_notebook(name: str, env: dict, monkeypatch, with_outputs: bool = False):
    """Run a notebook's app in this process (as `python name` does); returns its definitions
    (and, with_outputs, first the cells' outputs)."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    spec = importlib.util.spec_from_file_location(f"notebook_{Path(name).stem}", ROOT / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    outputs, defs = module.app.run()
    return (outputs, defs) if with_outputs else defs


def subprocess_env(env: dict) -> dict:
    return {**os.environ, **env, "PYTHONPATH": str(ROOT)}


# ----------------------------------------------------------------------------- static and headless


@pytest.mark.parametrize("notebook", ALL_NOTEBOOKS)
def test_marimo_check_passes(notebook):
    out = subprocess.run(
        [sys.executable, "-m", "marimo", "check", notebook], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("notebook", sorted(p.name for p in ROOT.glob("*_viz.py")))
def test_help_says_how_to_run_it_without_running_it(notebook):
    """`python <notebook>.py --help` answers in one line (how to run it, its environment variables)
    and exits 0 before the notebook's imports: no pandas or torch is loaded for it."""
    probe = (
        "import runpy, sys; sys.argv = [sys.argv[1], '--help']\n"
        "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    print('heavy:', sorted(m for m in ('torch', 'pandas', 'matplotlib') if m in sys.modules))\n"
        "    raise\n"
    )
    out = subprocess.run([sys.executable, "-c", probe, notebook], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    line, heavy = out.stdout.strip().split("\n")
    assert f"marimo run {notebook}" in line and f"python {notebook}" in line
    assert heavy == "heavy: []"


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_runs_as_a_script(notebook, project):
    out = subprocess.run(
        [sys.executable, str(ROOT / notebook)],
        cwd=ROOT,
        env=subprocess_env(project["env"]),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_exports_to_html(notebook, project, tmp_path):
    # Export a copy: marimo writes a session snapshot into __marimo__/ beside the notebook it exports.
    copy = tmp_path / notebook
    shutil.copy(ROOT / notebook, copy)
    html = tmp_path / f"{Path(notebook).stem}.html"
    out = subprocess.run(
        [sys.executable, "-m", "marimo", "export", "html", str(copy), "-o", str(html)],
        cwd=ROOT,
        env=subprocess_env(project["env"]),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "data:image/png" in html.read_text()  # at least one figure was rendered into the page


def test_routing_viz_builds_the_default_view(project, monkeypatch):
    defs = run_notebook("routing_viz.py", project["env"], monkeypatch)
    data = defs["data"]
    assert len(data.episodes) == EPISODES and data.meta["config"]["task_id"] == TASK
    # The dropdown lists every cache folder, each keyed by the update its weights hold (the final
    # checkpoint's is update 6's); the default is the newest written, the final checkpoint's.
    assert set(defs["caches"]) == {
        f"{TASK} · trial 0 · update 3",
        f"{TASK} · trial 0 · update 6",
        f"{TASK} · trial 0 · update 6 · knockout largest",
    }
    assert defs["cache_dropdown"].value == str(
        project["root"] / "evaluation_cache" / TASK / "trial_0" / "update_6"
    )
    assert defs["plot_dir"] == Path(TASK, "trial_0", "update_6")
    assert isinstance(defs["fig_routing"], Figure)
    assert defs["level_image"].ndim == 3 and defs["level_image"].shape[2] == 3
    assert defs["analysis_dropdown"].value == "overall" and defs["family"].value == "spatial routing"
    assert set(defs["checkpoints"]) == {  # update 6: the last, checkpoint_final.pt links it
        f"{TASK} · trial 0 · update 3",
        f"{TASK} · trial 0 · update 6",
    }


def test_routing_viz_shows_the_example_layout_render_plots_draws(project, monkeypatch):
    """One rule picks the level picture: the notebook and render_plots' PNG of the same cache show
    the same layout (seed), captioned as one layout of N."""
    import render_plots
    from mop import routing_analysis as ra

    defs = run_notebook("routing_viz.py", project["env"], monkeypatch)
    data = defs["data"]
    example = ra.example_layout(data.episodes)
    assert defs["example"] == example and example.n_layouts == EPISODES

    def level(fig):
        return next(ax for ax in fig.axes if ax.get_label() == "env_image")

    notebook = level(defs["fig_routing"])
    png = level(render_plots.cache_figures(data.path, project["env"]["RESULTS_CSV"])["routing_overall"])
    caption = notebook.get_title().replace("\n", " ")
    assert f"one example layout of {EPISODES}: seed {example.seed}" in caption
    assert png.get_title() == notebook.get_title()
    np.testing.assert_array_equal(png.get_images()[0].get_array(), notebook.get_images()[0].get_array())
    assert isinstance(defs["fig_by_expert"], Figure)  # each expert's map under the overall one


def test_logit_viz_builds_every_figure(project, monkeypatch):
    defs = run_notebook("logit_viz.py", project["env"], monkeypatch)
    for name in ("fig_actions", "fig_entropy", "fig_kl_global", "fig_kl_neighbours", "fig_cell"):
        assert isinstance(defs[name], Figure), name
    # The cell selectors start on the most visited cell.
    steps = defs["data"].steps
    busiest = steps.groupby(["x", "y"]).size().idxmax()
    assert (defs["x_slider"].value, defs["y_slider"].value) == tuple(int(v) for v in busiest)


def test_cross_task_viz_reads_results_caches_and_metrics(project, monkeypatch):
    defs = run_notebook("cross_task_viz.py", project["env"], monkeypatch)
    runs = defs["runs"]
    # Default evaluations only: the two checkpoints (3 and final), not the knockout row.
    assert len(runs) == 2 and set(runs["knockout"]) == {"none"}
    assert len(defs["results"]) == 3
    assert isinstance(defs["fig_knockout"], Figure)
    assert isinstance(defs["fig_training"], Figure)
    assert list(defs["loaded"]) == [f"{TASK} · trial 0 · update 3"]  # the first cache of the run


def test_stats_viz_aggregates_the_first_table_and_names_an_unusable_one(stats_tables, tmp_path, monkeypatch):
    defs = run_notebook("stats_viz.py", stats_tables, monkeypatch)
    assert list(defs["tables"]) == list(STATS_LEVELS)
    table = pd.read_csv(defs["task_dropdown"].value)
    assert len(defs["seeds"]) == len(inference.across_seeds(table)) and defs["updates"] == [10, 20]
    success = defs["scalars"][defs["scalars"]["metric"] == "success_rate"]
    assert ((success["ci_low"] >= 0) & (success["ci_high"] <= 1)).all()
    good = table
    for name, bad, message in (
        ("mixed", pd.concat([good, good.assign(task_id="BabyAI-UnlockPickup-v0")]), "mixes levels"),
        ("no_alpha", good.assign(lpc_alpha=np.nan), "No run in this table has an lpc_alpha"),
        ("foreign", good.drop(columns="lpc_alpha"), "no column lpc_alpha"),
    ):
        folder = tmp_path / name / "BabyAI-GoToLocal-v0"
        folder.mkdir(parents=True)
        bad.to_csv(folder / stats.TABLE, index=False)
        env = {"STATS_DIR": str(tmp_path / name), "MPLBACKEND": "Agg"}
        outputs, defs = run_notebook("stats_viz.py", env, monkeypatch, with_outputs=True)
        assert "seeds" not in defs, name  # the cells after the table stopped instead of raising
        shown = " ".join(getattr(o, "text", "") for o in outputs if o is not None)
        assert message in shown, name


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_without_data_says_how_to_make_it(notebook, empty_env, monkeypatch):
    outputs, defs = run_notebook(notebook, empty_env, monkeypatch, with_outputs=True)
    assert "data" not in defs and "runs" not in defs  # the data cells stopped instead of raising
    shown = " ".join(getattr(o, "text", "") for o in outputs if o is not None)
    assert "batch_eval.py" in shown  # the message names the command that writes the data


# ----------------------------------------------------------------------------- in a browser


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def marimo_server(notebook: str, env: dict, log: Path):
    """`marimo run` on 127.0.0.1 at a free port; yields its URL once it answers; always stops it."""
    port = free_port()
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "marimo",
                "run",
                "--headless",
                "--port",
                str(port),
                "--host",
                "127.0.0.1",
                str(ROOT / notebook),
            ],
            cwd=ROOT,
            env=subprocess_env(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so its children stop with it
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None:
                raise AssertionError(f"marimo run exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"marimo run did not serve {url} within 90 s:\n{log.read_text()[-3000:]}"
                )
            time.sleep(0.3)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)


# marimo's app shows a failing cell as a toast that disappears after ~5 s: record every error text
# that appears in the page at any time, from before the first render.
RECORD_ERRORS = """
window.__marimoErrors = [];
new MutationObserver((mutations) => {
  for (const m of mutations) {
    for (const node of m.addedNodes) {
      const text = node.textContent || "";
      for (const e of ERROR_TEXTS) {
        if (text.includes(e) && !window.__marimoErrors.includes(e)) window.__marimoErrors.push(e);
      }
    }
  }
}).observe(document, {subtree: true, childList: true});
""".replace("ERROR_TEXTS", json.dumps(list(ERROR_TEXTS)))


def open_page(browser, url: str):
    page = browser.new_page(viewport={"width": 1400, "height": 2400})
    page.add_init_script(RECORD_ERRORS)
    page.goto(url)
    return page


def marimo_errors(page, log: Path) -> list[str]:
    """Error texts the page shows or showed, and a traceback in the server's log."""
    text = page.inner_text("body")
    seen = set(page.evaluate("window.__marimoErrors")) | {t for t in ERROR_TEXTS if t in text}
    if "Traceback (most recent call last)" in log.read_text():
        seen.add("traceback in the server log:\n" + log.read_text()[-3000:])
    return sorted(seen)


def skip_without_chromium() -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is absent: install it with `bash scripts/install_browser.sh` (as root)")


def launch(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


FAILING_NOTEBOOK = """
import marimo

app = marimo.App()


@app.cell
def _():
    import marimo as mo

    mo.md("before the failure")
    return


@app.cell
def _():
    raise ValueError("this cell fails on purpose")
    return


if __name__ == "__main__":
    app.run()
"""


@pytest.mark.browser
def test_browser_error_check_sees_a_failing_cell(tmp_path):
    """The error check below is not vacuous: it reports a notebook whose cell raises."""
    skip_without_chromium()
    from playwright.sync_api import sync_playwright

    notebook, log = tmp_path / "failing.py", tmp_path / "marimo_run.log"
    notebook.write_text(FAILING_NOTEBOOK)
    with marimo_server(str(notebook), {}, log) as url, sync_playwright() as p:
        browser = launch(p)
        try:
            page = open_page(browser, url)
            page.get_by_text("before the failure").wait_for(timeout=60_000)
            page.wait_for_function("window.__marimoErrors.length > 0", timeout=30_000)
            errors = marimo_errors(page, log)
        finally:
            browser.close()
    assert "An internal error occurred" in errors
    assert any(e.startswith("traceback in the server log") and "on purpose" in e for e in errors)


@pytest.mark.browser
@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_browser_renders_the_app(notebook, project, tmp_path):
    skip_without_chromium()
    from playwright.sync_api import sync_playwright

    log = tmp_path / "marimo_run.log"
    shot = tmp_path / f"{Path(notebook).stem}.png"
    with marimo_server(notebook, project["env"], log) as url, sync_playwright() as p:
        browser = launch(p)
        try:
            page = open_page(browser, url)
            # A figure cell's output is an <img> holding the PNG marimo rendered from the Figure.
            figure = page.wait_for_selector(PNG, timeout=120_000)
            assert figure.evaluate("img => img.naturalWidth") > 300
            page.wait_for_timeout(1500)  # let the remaining cells settle
            page.screenshot(path=str(shot), full_page=True)
            print(f"screenshot: {shot}")
            assert marimo_errors(page, log) == []
            if notebook == "routing_viz.py":
                # Each tab shows its own figures (the other tabs' cells stop): wait until the page
                # holds exactly that many PNGs, none of them left over from the previous tab.
                run = Path(project["env"]["ROUTING_CACHE_DIR"], TASK, "trial_0")
                # the notebook opens on the newest cache of the run (its update_<U>/ folder)
                newest = routing_cache.newest_cache(sorted(run.glob("update_*")))
                steps = routing_cache.load_cache(newest).steps
                events = any(steps[e].notna().any() for e in ("t_pick", "t_unlocked", "t_drop"))
                tabs = {"distributions": 3, "time": 1 + events, "specialisation": 2, "LPC": 1}
                for tab, count in tabs.items():
                    old = page.eval_on_selector_all(PNG, "imgs => imgs.map(i => i.src)")
                    page.get_by_role("tab", name=tab).click()
                    page.wait_for_function(
                        """([selector, old, count]) => {
                            const now = [...document.querySelectorAll(selector)].map(i => i.src);
                            return now.length === count && now.every(src => !old.includes(src));
                        }""",
                        arg=[PNG, old, count],
                        timeout=60_000,
                    )
                page.get_by_role("tab", name="spatial routing").click()
                page.get_by_role("button", name="save figures").click()
                page.get_by_text("Saved ").wait_for(timeout=120_000)
                saved = Path(project["env"]["PLOTS_DIR"]) / run_subpath(newest)  # plots/ mirrors the cache
                assert (saved / "routing_overall.png").is_file()
                assert (saved / "knockout_comparison.png").is_file()  # the CSV holds a knockout row
                assert marimo_errors(page, log) == []
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000


@pytest.mark.browser
def test_browser_routing_viz_evaluates_a_checkpoint(project, tmp_path):
    """With the cache switch off, 'evaluate' runs eval_mop.evaluate on the chosen checkpoint."""
    skip_without_chromium()
    from playwright.sync_api import sync_playwright

    log = tmp_path / "marimo_run.log"
    with marimo_server("routing_viz.py", project["env"], log) as url, sync_playwright() as p:
        browser = launch(p)
        try:
            page = open_page(browser, url)
            page.wait_for_selector(PNG, timeout=120_000)
            page.get_by_role("switch").click()
            page.get_by_text("press evaluate").wait_for(timeout=60_000)
            # Nothing until evaluated: the cells that drew the cache's figures stop (marimo may
            # repaint them a moment after the prompt appears, so wait for that state).
            page.wait_for_function(f"() => document.querySelectorAll('{PNG}').length === 0", timeout=30_000)
            assert page.locator(PNG).count() == 0
            page.get_by_role("button", name="evaluate").click()
            page.wait_for_selector(PNG, timeout=120_000)
            # The default checkpoint is the first found: update 3, evaluated on 100 episodes.
            page.get_by_text("checkpoint_3.pt").wait_for(timeout=30_000)
            assert page.get_by_text("100 episodes").count() >= 1
            page.screenshot(path=str(tmp_path / "routing_viz_fresh.png"), full_page=True)
            assert marimo_errors(page, log) == []
        finally:
            browser.close()


def png_sources(page) -> list[str]:
    return page.eval_on_selector_all(PNG, "imgs => imgs.map(i => i.src)")


def wait_for_pngs(page, old: list[str], count: int, new: int) -> None:
    """Wait until the page holds `count` loaded figure PNGs, `new` of them not among `old`."""
    page.wait_for_function(
        """([selector, old, count, fresh]) => {
            const now = [...document.querySelectorAll(selector)];
            return now.length === count && now.every(i => i.complete && i.naturalWidth > 0)
                && now.filter(i => !old.includes(i.src)).length === fresh;
        }""",
        arg=[PNG, old, count, new],
        timeout=120_000,
    )


def dropdown(page, option: str):
    """The <select> that offers `option`."""
    return page.locator("select", has=page.locator("option", has_text=option))


@pytest.mark.browser
def test_browser_stats_viz_follows_its_task_and_update(stats_tables, tmp_path):
    skip_without_chromium()
    from playwright.sync_api import sync_playwright

    root = Path(stats_tables["STATS_DIR"])
    rows = {t: len(inference.across_seeds(pd.read_csv(root / t / stats.TABLE))) for t in STATS_LEVELS}
    assert rows == {"BabyAI-GoToLocal-v0": 12, "BabyAI-UnlockPickup-v0": 48}  # 2 α × phases × 6
    log = tmp_path / "marimo_run.log"
    with marimo_server("stats_viz.py", stats_tables, log) as url, sync_playwright() as p:
        browser = launch(p)
        try:
            page = open_page(browser, url)
            # The first task: the across-seeds table and the five figures.
            wait_for_pngs(page, [], 5, 5)
            widths = page.eval_on_selector_all(PNG, "imgs => imgs.map(i => i.naturalWidth)")
            assert min(widths) > 300
            page.get_by_text(f"{rows['BabyAI-GoToLocal-v0']} rows").first.wait_for(timeout=30_000)
            assert marimo_errors(page, log) == []
            # Another update: the four figures of one update are redrawn; metrics vs update is not.
            old = png_sources(page)
            dropdown(page, "newest all runs of a condition have").select_option(label="10")
            wait_for_pngs(page, old, 5, 4)
            assert png_sources(page)[2] == old[2]
            # Another task: every figure, the table (four phases) and the update choices follow.
            old = png_sources(page)
            dropdown(page, "BabyAI-UnlockPickup-v0").select_option(label="BabyAI-UnlockPickup-v0")
            wait_for_pngs(page, old, 5, 5)
            page.get_by_text(f"{rows['BabyAI-UnlockPickup-v0']} rows").first.wait_for(timeout=30_000)
            page.get_by_text("pre_key", exact=True).first.wait_for(timeout=30_000)
            options = (
                dropdown(page, "newest all runs of a condition have").locator("option").all_inner_texts()
            )
            assert options == ["newest all runs of a condition have", "20"]
            page.screenshot(path=str(tmp_path / "stats_viz.png"), full_page=True)
            assert marimo_errors(page, log) == []
        finally:
            browser.close()


@pytest.mark.browser
def test_browser_generative_viz_runs_the_chosen_analysis(generative_models, tmp_path):
    skip_without_chromium()
    from playwright.sync_api import expect, sync_playwright

    models = sorted(Path(generative_models["GENERATIVE_DIR"]).rglob("model_final.pt"))
    # held_out/loss/obs of each model as the table starts to print it
    loss = [str(read_metrics(m.parent / "metrics.jsonl")[-1]["held_out/loss/obs"])[:6] for m in models]
    assert len(models) == 2 and loss[0] != loss[1]
    gif, png = 'img[src$=".gif"]', 'img[src$=".png"]'  # analysis files, served by marimo as @file/
    log = tmp_path / "marimo_run.log"
    with marimo_server("generative_viz.py", generative_models, log) as url, sync_playwright() as p:
        browser = launch(p)
        try:
            page = open_page(browser, url)
            table = page.locator("table").first
            page.get_by_text("held_out/loss/obs").wait_for(timeout=60_000)
            assert loss[0] in table.inner_text() and loss[1] not in table.inner_text()
            run = page.get_by_role("button", name="run analysis")
            # samples (the default): a GIF per sample, shown at twice its size, and the strip figure
            run.click()
            page.wait_for_function(
                f"""() => document.querySelectorAll('{gif}').length === 4
                    && [...document.querySelectorAll('img')].every(i => i.complete)""",
                timeout=120_000,
            )
            sizes = page.eval_on_selector_all(
                gif, "imgs => imgs.map(i => [i.naturalWidth, i.getBoundingClientRect().width])"
            )
            assert sizes == [[84, 168]] * 4
            assert page.eval_on_selector_all(png, "imgs => imgs.map(i => i.naturalWidth)")[0] > 300
            page.get_by_text("simulated_actions").wait_for(timeout=10_000)
            strip = page.eval_on_selector(png, "img => img.src")
            # pca: choosing it clears the output until run; then its one figure, nothing else
            dropdown(page, "directions").select_option(label="pca")
            page.wait_for_function(f"() => document.querySelectorAll('{png}').length === 0", timeout=30_000)
            run.click()
            page.get_by_text("explained_variance_ratio").wait_for(timeout=120_000)
            page.wait_for_selector(png, timeout=30_000)
            assert page.locator(gif).count() == 0 and page.locator(png).count() == 1
            assert page.eval_on_selector(png, "img => img.src") != strip
            # maximise with a target this agent lacks: the one-line reason in the cell, no error
            dropdown(page, "directions").select_option(label="maximise")
            target = page.get_by_test_id("marimo-plugin-text-input")
            target.fill("layer_9:expert_0")
            target.press("Enter")
            run.click()
            page.get_by_text("Cannot run this analysis").wait_for(timeout=60_000)
            assert page.get_by_text("not an expert of this agent").count() == 1
            assert marimo_errors(page, log) == []
            # the other model: its own held-out metrics
            dropdown(page, str(models[1])).select_option(label=str(models[1]))
            expect(table).to_contain_text(loss[1], timeout=60_000)  # the table is in a shadow root
            page.screenshot(path=str(tmp_path / "generative_viz.png"), full_page=True)
            assert marimo_errors(page, log) == []
        finally:
            browser.close()


def test_the_notebooks_open_on_the_newest_cache_not_the_first_by_name(tmp_path):
    from mop import routing_cache

    caches = []
    for k, name in enumerate(["a_untrained", "b_just_evaluated", "c_older"]):
        folder = tmp_path / name
        folder.mkdir()
        (folder / routing_cache.META_FILE).write_text("{}")
        os.utime(folder / routing_cache.META_FILE, (1000 + [0, 50, 10][k],) * 2)
        caches.append(folder)
    assert routing_cache.newest_cache(caches) == tmp_path / "b_just_evaluated"
    assert routing_cache.newest_cache([]) is None


def test_notebook_tables_show_four_significant_digits_and_keep_small_p():
    from mop.notebook_script import readable

    table = pd.DataFrame(
        {"r": [0.43119871260981244, -0.0012345678, 3.1234567e-9, 0.0, np.nan], "n": [1, 2, 3, 4, 5]}
    )
    shown = readable(table)
    assert shown["r"].tolist()[:4] == [0.4312, -0.001235, 3.123e-09, 0.0] and np.isnan(shown["r"].iloc[4])
    assert shown["n"].tolist() == [1, 2, 3, 4, 5] and table["r"].iloc[0] == 0.43119871260981244  # a copy
