"""How long the notebooks take to show their first figure: cold (server start) and warm, and where
the cold seconds go.

Default (server): for each notebook (routing_viz.py and logit_viz.py) and each --tree, starts
`marimo run --headless` in --workdir (the notebooks read evaluation_cache/, checkpoints/ and
evaluation_results.csv there, as a user's `marimo run` does), opens it in Debian's headless
Chromium through Playwright (the browser is started before the clock) and times
    cold   server start -> the first figure PNG loaded in the page (what a user waits for)
    up     server start -> the server answers HTTP (marimo's own start, before any notebook code)
    warm   a new page (a new session) on the same server, once the server is idle (the previous
           session's remaining cells done) -> its first figure (modules imported)
    cpu    CPU seconds the server's process group spent up to the cold first figure (and, for warm,
           during the session up to its first figure; the browser's own CPU is not counted)
Then, in a fresh Python per tree, the breakdown of the cold start in CPU seconds (comparable on a
busy box, unlike wall time): the notebook's setup imports, its cells run as `python notebook.py`
does (cache load, the first tab's figures), load_cache alone, and encoding the figures the way
marimo does (PNG at twice the figure's dpi, tight bounding box), with the heaviest top-level
imports from `python -X importtime`. --tree twice (e.g. main's checkout and this one) makes an A/B:
rounds alternate the trees back to back and the summary gives their ratio.

Without --workdir it first builds a project folder (a tiny MoP checkpoint on --task trained for a
few updates, evaluated on --episodes episodes). --inprocess instead runs the earlier measurement:
routing_viz's app in this process, first and later renders of one cache (no server, no browser).

    python bench/notebook_render.py --workdir /path/to/quickstart/run           # cold + warm, this tree
    python bench/notebook_render.py --workdir RUN --tree /work/main --tree . --rounds 3   # A/B
    python bench/notebook_render.py --inprocess --cache evaluation_cache/BabyAI-UnlockPickup-v0/trial_0
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

NOTEBOOKS = ("routing_viz.py", "logit_viz.py")
CHROMIUM = "/usr/bin/chromium"
PNG = 'img[src^="data:image/png"]'  # how marimo shows a matplotlib Figure
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"]
TICKS = os.sysconf("SC_CLK_TCK")


def build_cache(out: Path, task_id: str, num_episodes: int) -> Path:
    """Train a tiny checkpoint and evaluate it into a routing cache under out/evaluation_cache."""
    import eval_mop
    import train_mop
    from mop.experiment import load_config

    cfg = load_config(
        None,
        {
            "task_id": task_id,
            "num_envs": 4,
            "unroll_len": 16,
            "num_updates": 6,
            "num_workers": 0,
            "checkpoint_interval": None,
            "checkpoint_dir": str(out / "checkpoints"),
            "intermediate_dim": 16,
            "router_hidden_size": 8,
            "expert_hidden_sizes": [[0, 8, 16], [0, 8]],
            "lang_dim": 8,
            "teacher_forcing": 0.9,
        },
    )
    ckpt = train_mop.main(cfg, progress=False)["checkpoints"][-1]
    workers = max(1, min(os.cpu_count() or 1, 8))
    result = eval_mop.evaluate(
        ckpt, eval_mop.EvalOptions(num_episodes=num_episodes, num_envs=16, num_workers=workers)
    )
    return eval_mop.save_evaluation(result, ckpt, out / "evaluation_cache")


# ----------------------------------------------------------------------------- served (marimo run)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _group_cpu(pgid: int) -> float:
    """CPU seconds (user + system, with reaped children) of every live process in a group."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:  # field 5 of stat: the process group
                total += sum(int(v) for v in fields[11:15])  # utime stime cutime cstime
    return total / TICKS


def _wait_idle(pgid: int, quiet: float = 0.1, window: float = 1.0, timeout: float = 60) -> None:
    """Wait until the server's processes spend less than `quiet` CPU seconds in `window` seconds."""
    deadline = time.monotonic() + timeout
    before = _group_cpu(pgid)
    while time.monotonic() < deadline:
        time.sleep(window)
        now = _group_cpu(pgid)
        if now - before < quiet:
            return
        before = now


@contextlib.contextmanager
def _server(tree: Path, notebook: str, workdir: Path, log: Path):
    """`marimo run` of tree/notebook with cwd workdir; yields (process, url, start time)."""
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(tree), "MPLBACKEND": "Agg"}
    command = [sys.executable, "-m", "marimo", "run", "--headless", "--port", str(port)]
    command += ["--host", "127.0.0.1", str(tree / notebook)]
    with open(log, "w") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(
            command, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield proc, f"http://127.0.0.1:{port}/", start
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)


def _wait_up(proc: subprocess.Popen, url: str, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"marimo run did not serve {url}:\n{log.read_text()[-2000:]}")
        time.sleep(0.05)


FIGURE_SHOWN = f"() => [...document.querySelectorAll('{PNG}')].some(i => i.complete && i.naturalWidth > 0)"


def _wait_figure(page, log: Path, timeout: float = 180) -> None:
    """Wait until the page shows a loaded figure; stop at once if the server logged a traceback."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            page.wait_for_function(FIGURE_SHOWN, timeout=1000, polling=50)
            return
        except Exception as e:  # playwright's TimeoutError: look at the log, then wait on
            if "Traceback" in log.read_text() or time.monotonic() > deadline:
                raise SystemExit(f"no figure shown ({e}):\n{log.read_text()[-2000:]}") from None


def _first_figure(browser, url: str, log: Path) -> float:
    """Open url in a new page; seconds until its first figure PNG has loaded."""
    page = browser.new_page(viewport={"width": 1400, "height": 1600})
    try:
        start = time.perf_counter()
        page.goto(url)
        _wait_figure(page, log)
        return time.perf_counter() - start
    finally:
        page.close()


def served(browser, tree: Path, notebook: str, workdir: Path, warm: int, log: Path) -> dict:
    """One cold start of `marimo run` (server start -> first figure) and `warm` new sessions."""
    with _server(tree, notebook, workdir, log) as (proc, url, start):
        _wait_up(proc, url, log)
        up = time.perf_counter() - start
        page = browser.new_page(viewport={"width": 1400, "height": 1600})
        try:
            page.goto(url)
            _wait_figure(page, log)
            cold = time.perf_counter() - start
            cpu = _group_cpu(proc.pid)
        finally:
            page.close()
        warm_s, warm_cpu = [], []
        for _ in range(warm):
            # A session's kernel is a thread of the server: let the previous session's remaining
            # cells (other tabs' figures, the checkpoint list) finish before the next page opens.
            _wait_idle(proc.pid)
            before = _group_cpu(proc.pid)
            warm_s.append(_first_figure(browser, url, log))
            warm_cpu.append(_group_cpu(proc.pid) - before)
    return {"cold_s": cold, "up_s": up, "cpu_s": cpu, "warm_s": warm_s, "warm_cpu_s": warm_cpu}


# ----------------------------------------------------------------------------- breakdown (one process)

# Run in a fresh interpreter per tree (argv: tree, notebook, cache): CPU seconds of each part.
BREAKDOWN = r"""
import contextlib, io, json, sys, time, importlib.util
tree, notebook, cache = sys.argv[1:4]
sys.path.insert(0, tree)
clock = time.process_time
t0 = clock()
spec = importlib.util.spec_from_file_location("nb", f"{tree}/{notebook}")
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)          # the setup cell: the notebook's imports
t1 = clock()
with contextlib.redirect_stdout(io.StringIO()):
    outputs, defs = module.app.run()    # every cell of the first view
t2 = clock()
from matplotlib.figure import Figure
figures = [o for o in outputs if isinstance(o, Figure)]
for fig in figures:
    fig.savefig(io.BytesIO(), format="png", bbox_inches="tight", dpi=2 * fig.dpi)
t3 = clock()
from mop import routing_cache
routing_cache.load_cache(cache)
t4 = clock()
print(json.dumps({"imports_cpu_s": t1 - t0, "cells_cpu_s": t2 - t1, "encode_cpu_s": t3 - t2,
                  "load_cache_cpu_s": t4 - t3, "figures": len(figures), "loaded": "data" in defs}))
"""


def breakdown(tree: Path, notebook: str, workdir: Path, cache: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree), "MPLBACKEND": "Agg"}
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", BREAKDOWN, str(tree), notebook, str(cache)],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise SystemExit(f"breakdown of {tree / notebook} failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    top = []
    for line in out.stderr.splitlines():  # "import time: self | cumulative | name" (top level: no indent)
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \| (\S.*)$", line)
        if m and not m.group(2).startswith(" "):
            top.append((int(m.group(1)) / 1e6, m.group(2)))
    result["imports_top"] = sorted(top, reverse=True)[:6]
    return result


# The floor: what marimo run, the page and one small figure cost with no project code at all.
FLOOR_NOTEBOOK = """
import marimo

app = marimo.App(width="medium")


@app.cell
def _():
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4, 3))
    fig.subplots().plot([0, 1], [0, 1])
    fig
    return


if __name__ == "__main__":
    app.run()
"""


def _first_cache(workdir: Path) -> Path:
    from mop.routing_cache import find_caches

    caches = find_caches(workdir / "evaluation_cache")
    if not caches:
        raise SystemExit(f"no routing cache under {workdir / 'evaluation_cache'}")
    return caches[0]


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def run_served(args: argparse.Namespace, workdir: Path) -> dict:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        raise SystemExit(f"{CHROMIUM} is absent: install it with `bash scripts/install_browser.sh`")
    trees = [Path(t).resolve() for t in (args.tree or [str(ROOT)])]
    cache = _first_cache(workdir)
    if args.floor:
        floor = Path(tempfile.mkdtemp(prefix="notebook_floor_"))
        (floor / "floor.py").write_text(FLOOR_NOTEBOOK)
        jobs = [(floor, "floor.py")]
    else:
        jobs = []
    print(f"workdir {workdir} (first cache {cache}); load before: {os.getloadavg()[0]:.2f}")
    results: dict[tuple[str, str], list[dict]] = {}
    logs = Path(tempfile.mkdtemp(prefix="notebook_bench_"))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for r in range(args.rounds):
                order = [
                    (t, n) for n in args.notebook or NOTEBOOKS for t in (trees if r % 2 == 0 else trees[::-1])
                ]
                for tree, notebook in jobs + order:  # trees alternate who goes first
                    log = logs / f"{Path(notebook).stem}_{len(results)}_{r}.log"
                    res = served(browser, tree, notebook, workdir, args.warm, log)
                    res["load"] = os.getloadavg()[0]
                    results.setdefault((str(tree), notebook), []).append(res)
                    print(
                        f"round {r} {tree.name or tree} {notebook}: cold {res['cold_s']:.2f} s "
                        f"(server up {res['up_s']:.2f} s, {res['cpu_s']:.2f} CPU s), warm "
                        + ", ".join(f"{w:.2f}" for w in res["warm_s"])
                        + f" s ({_median(res['warm_cpu_s']):.2f} CPU s); load {res['load']:.2f}"
                    )
        finally:
            browser.close()
    summary = {}
    for (tree, notebook), runs in results.items():
        if notebook == "floor.py":
            row = {k: _median([x[k] for x in runs]) for k in ("cold_s", "up_s", "cpu_s")}
            row["warm_s"] = _median([w for x in runs for w in x["warm_s"]])
            row["warm_cpu_s"] = _median([w for x in runs for w in x["warm_cpu_s"]])
            summary["floor"] = row
            print(
                f"floor (marimo run + page + one small figure, no project code): cold "
                f"{row['cold_s']:.2f} s (up {row['up_s']:.2f}, {row['cpu_s']:.2f} CPU s), warm {row['warm_s']:.2f} s "
                f"({row['warm_cpu_s']:.2f} CPU s)"
            )
            continue
        parts = breakdown(Path(tree), notebook, workdir, cache)
        row = {
            "cold_s": _median([x["cold_s"] for x in runs]),
            "up_s": _median([x["up_s"] for x in runs]),
            "cpu_s": _median([x["cpu_s"] for x in runs]),
            "warm_s": _median([w for x in runs for w in x["warm_s"]]),
            "warm_cpu_s": _median([w for x in runs for w in x["warm_cpu_s"]]),
            **parts,
        }
        summary[f"{tree}::{notebook}"] = row
        top = ", ".join(f"{name} {s:.2f}" for s, name in row["imports_top"])
        print(
            f"{tree} {notebook}: median cold {row['cold_s']:.2f} s (up {row['up_s']:.2f}, "
            f"{row['cpu_s']:.2f} CPU s), warm {row['warm_s']:.2f} s ({row['warm_cpu_s']:.2f} CPU s) | CPU s: imports "
            f"{row['imports_cpu_s']:.2f}, cells {row['cells_cpu_s']:.2f} (load_cache "
            f"{row['load_cache_cpu_s']:.2f}), encode {row['encode_cpu_s']:.2f} ({row['figures']} figures)"
            f" | top imports (wall s): {top}"
        )
    if len(trees) == 2:
        a, b = (str(t) for t in trees)
        for notebook in args.notebook or NOTEBOOKS:
            x, y = summary[f"{a}::{notebook}"], summary[f"{b}::{notebook}"]
            keys = ("cold_s", "cpu_s", "warm_s", "warm_cpu_s", "imports_cpu_s")
            ratios = {k: y[k] / x[k] for k in keys if x[k]}
            print(
                f"{notebook}: {Path(b).name} / {Path(a).name}: "
                + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items())
            )
    print(f"load after: {os.getloadavg()[0]:.2f}; server logs in {logs}")
    return summary


# ----------------------------------------------------------------------------- in-process (earlier)


def render_once(cache: Path) -> tuple[float, int, list[str]]:
    """Seconds for one first render of routing_viz.py on `cache`, the number of figures encoded and
    the names of the cells' outputs that are figures."""
    from matplotlib.figure import Figure

    os.environ["ROUTING_CACHE_DIR"] = str(cache)  # the only cache under this root
    os.environ.setdefault("CHECKPOINT_DIRS", str(cache / "_no_checkpoints_"))
    os.environ.setdefault("RESULTS_CSV", str(cache / "_no_results_.csv"))
    sys.modules.pop("routing_viz", None)
    start = time.perf_counter()
    import routing_viz

    with contextlib.redirect_stdout(io.StringIO()):
        outputs, defs = routing_viz.app.run()
    figures = [o for o in outputs if isinstance(o, Figure)]
    for fig in figures:  # what marimo does to show a figure
        fig.savefig(io.BytesIO(), format="png", bbox_inches="tight", dpi=2 * fig.dpi)
    seconds = time.perf_counter() - start
    if "data" not in defs:
        raise SystemExit(f"the notebook did not load {cache} (no 'data' defined); is it a routing cache?")
    return seconds, len(figures), [f.get_suptitle() or "figure" for f in figures]


def run_inprocess(args: argparse.Namespace, cache: Path) -> dict:
    start = time.perf_counter()
    import marimo  # noqa: F401

    import plotting_utils  # noqa: F401
    from mop import routing_analysis, routing_cache  # noqa: F401

    imports = time.perf_counter() - start
    data = routing_cache.load_cache(cache)
    print(
        f"cache: {cache}: {len(data.episodes)} episodes, {len(data.steps)} steps, "
        f"{data.meta['config']['task_id']}"
    )
    print(f"imports (once per process): {imports:.2f} s")
    first, count, names = render_once(cache)
    print(f"figures shown on first render: {count} ({'; '.join(names)})")
    print(f"first render: {first:.2f} s")
    again = [render_once(cache)[0] for _ in range(args.repeat)]
    if again:
        print(
            f"later renders: median {statistics.median(again):.2f} s (min {min(again):.2f}, n={len(again)})"
        )
    return {"cache": str(cache), "first_render_s": first, "later_render_s": again, "imports_s": imports}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workdir", default=None, help="project folder to serve in (default: build one)")
    parser.add_argument("--tree", action="append", help="checkout whose notebooks to serve (repeatable)")
    parser.add_argument("--notebook", action="append", help=f"notebook(s) to time (default {NOTEBOOKS})")
    parser.add_argument("--rounds", type=int, default=2, help="cold starts per notebook and tree")
    parser.add_argument("--warm", type=int, default=3, help="warm sessions after each cold start")
    parser.add_argument(
        "--floor", action="store_true", help="also time a one-figure notebook with no project code"
    )
    parser.add_argument("--inprocess", action="store_true", help="the earlier in-process measurement")
    parser.add_argument("--cache", default=None, help="--inprocess: an existing cache folder")
    parser.add_argument("--repeat", type=int, default=3, help="--inprocess: renders after the first")
    parser.add_argument("--task", default="BabyAI-UnlockPickup-v0", help="level of the built cache")
    parser.add_argument("--episodes", type=int, default=1000, help="episodes in the built cache")
    parser.add_argument("--keep", default=None, help="build the cache in this folder and keep it")
    args = parser.parse_args(argv)

    tmp = None
    folder = None
    if not (args.workdir or args.cache):
        if args.keep:
            folder = Path(args.keep)
        else:
            tmp = tempfile.TemporaryDirectory(prefix="notebook_render_")
            folder = Path(tmp.name)
        t0 = time.perf_counter()
        built = build_cache(folder, args.task, args.episodes)
        print(f"built {built} in {time.perf_counter() - t0:.0f} s")
    try:
        if args.inprocess:
            return run_inprocess(args, Path(args.cache) if args.cache else _first_cache(folder))
        return run_served(args, Path(args.workdir).resolve() if args.workdir else folder)
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    main()
