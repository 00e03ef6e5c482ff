"""README.md's commands work as written after the quickstart alone (issue 34): the environment is
entered once, before the first bare command; every `python X.py` names a script that exists and
takes every flag the command gives it (its own `--help` lists it); every notebook command names a
marimo app; every checkpoint a command reads belongs to a run the quickstart or an earlier README
command makes; and the README stays a guide (~350 lines). `modal run` lines are parsed by Modal's
own CLI in tests/test_modal_app.py, and the imports of every command by tests/test_compat.py."""

from __future__ import annotations

import re
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

from mop.readme_commands import located_commands, python_script, words

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
ACTIVATE = "source .venv/bin/activate"
QUICKSTART_RUN = ("BabyAI-GoToLocal-v0", 0)  # scripts/quickstart.sh: --task_id ... --trial 0
MAX_LINES = 380  # a guide: this phase's four new stages (causal, attribution, subgoals, the demo store) took it past 360


def commands(text: str) -> list[str]:
    return [command for _, command in located_commands(text)]


@cache
def help_text(script: str, sub: str | None) -> str:
    argv = [sys.executable, str(ROOT / script), *([sub] if sub else []), "--help"]
    out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, f"{script} {sub or ''} --help: {out.stderr[-500:]}"
    return out.stdout


def runs_made(cmds: list[str]) -> set[tuple[str, int]]:
    """Runs (task, trial) that the quickstart or a README training command makes (its flags over
    its --config file over config.yaml, as the trainers resolve them)."""
    from mop.experiment import load_config

    made = {QUICKSTART_RUN}
    for command in cmds:
        ws = words(command)
        parsed = python_script(ws)
        if parsed and Path(parsed[0]).name in ("train_mop.py", "train.py"):
            value = {flag: ws[i + 1] for i, flag in enumerate(ws[:-1]) if flag.startswith("--")}
            config = load_config(ROOT / value.get("--config", "config.yaml"))
            task = value.get("--task_id", config.task_id)
            made.add((task, int(value.get("--trial", config.trial))))
    return made


def test_readme_is_a_guide_with_the_two_quickstart_commands():
    text = README.read_text()
    assert len(text.splitlines()) <= MAX_LINES
    quickstart = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    first_block = re.search(r"```bash\n(.*?)```", quickstart, re.S).group(1)
    assert [words(c)[:2] for c in commands(f"```bash\n{first_block}```")] == [
        ["bash", "scripts/quickstart.sh"],
        ["bash", "scripts/test.sh"],
    ]
    assert (ROOT / ".ci/run").read_text().count("bash scripts/test.sh") == 1  # CI runs the second


def test_the_environment_is_entered_before_the_first_bare_command():
    text = README.read_text()
    assert ACTIVATE in text
    first_bare = min(at for at, c in located_commands(text) if words(c)[0] in ("python", "marimo", "pytest"))
    assert text.index(ACTIVATE) < first_bare
    assert (ROOT / ".venv/bin/activate").exists() or not (ROOT / ".venv").exists()


def test_every_notebook_and_script_a_command_names_exists():
    for command in commands(README.read_text()):
        ws = words(command)
        if ws[:2] == ["marimo", "run"] or ws[:3] == ["marimo", "export", "html"]:
            notebook = ROOT / next(w for w in ws if w.endswith(".py"))
            assert "marimo.App(" in notebook.read_text(), command
        elif ws[:1] == ["bash"]:
            assert (ROOT / ws[1]).exists(), command
        elif parsed := python_script(ws):
            assert (ROOT / parsed[0]).exists(), command


@pytest.mark.slow
def test_every_python_command_takes_the_flags_it_is_given():
    for command in commands(README.read_text()):
        parsed = python_script(words(command))
        if parsed is None:
            continue
        script, sub, flags = parsed
        helped = help_text(script, sub)
        unknown = [f for f in flags if not re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", helped)]
        assert unknown == [], f"{command}: {script} {sub or ''} does not take {unknown}"


def test_every_checkpoint_a_command_reads_is_made_by_the_quickstart_or_an_earlier_command():
    cmds = commands(README.read_text())
    made = runs_made(cmds)
    for command in cmds:
        for task, trial in re.findall(r"checkpoints/(BabyAI-[\w-]+)/trial_(\d+)", command):
            assert (task, int(trial)) in made, f"{command}: no README command makes {task} trial {trial}"


def test_no_training_command_lands_in_a_run_folder_an_earlier_one_made():
    """Walked in order, a second training command on the same (level, trial, seed) without --resume
    is refused ("already holds checkpoints"): each trains its own run, or says --resume."""
    from mop.experiment import load_config

    made = {(*QUICKSTART_RUN, None)}
    for command in commands(README.read_text()):
        ws = words(command)
        parsed = python_script(ws)
        if not parsed or Path(parsed[0]).name not in ("train_mop.py", "train.py") or "--resume" in ws:
            continue
        value = {flag: ws[i + 1] for i, flag in enumerate(ws[:-1]) if flag.startswith("--")}
        config = load_config(ROOT / value.get("--config", "config.yaml"))
        seed = value.get("--seed", config.seed)
        run = (value.get("--task_id", config.task_id), int(value.get("--trial", config.trial)), seed)
        assert run not in made, f"{command}: an earlier README command already trained {run}"
        made.add(run)


def test_the_walker_catches_a_bad_command():  # the checks above can fail
    assert python_script(words("python eval_mop.py --checkpoint x.pt --nope 3  # why")) == (
        "eval_mop.py",
        None,
        ["--checkpoint", "--nope"],
    )
    assert python_script(words("python lmc.py analyze --results_dir d"))[1] == "analyze"
    made = runs_made(["python train_mop.py --task_id BabyAI-GoToObj-v0 --trial 3"])
    assert ("BabyAI-GoToObj-v0", 3) in made and ("BabyAI-GoToObj-v0", 0) not in made


def section(text: str, title: str) -> str:
    start = text.index(f"### {title}")
    end = text.find("\n## ", start + 1), text.find("\n### ", start + 1)
    return text[start : min(e for e in end if e > 0)]


# What makes a README command small enough for the suite: the tiny preset for training, a few
# evaluation episodes. Every other word is the README's.
SMALL = {
    "train_mop.py": [
        "--config",
        str(ROOT / "configs" / "tiny.yaml"),
        "--num_updates",
        "6",
    ],  # the last flag wins
    "batch_eval.py": ["--num_episodes", "4"],
    "headline.py": [
        "--config",
        str(ROOT / "configs" / "tiny.yaml"),
        "--seeds",
        "0-1",
        "--num_updates",
        "4",
        "--checkpoint_interval",
        "2",
        "--single_task_updates",
        "2",
        "--episodes",
        "4",
        "--causal_episodes",
        "4",
    ],  # fmt: skip
}


@pytest.mark.slow
def test_the_multi_task_block_runs_in_order_as_written(tmp_path):
    """The multi-task block, in order, each command as written (made small by SMALL only): the last
    one (render_plots --by_level) needs the line before it to evaluate the run on both levels."""
    block = [c for c in commands(section(README.read_text(), "Multi-task routing"))]
    assert [python_script(words(c))[0] for c in block] == [
        "train_mop.py",
        "batch_eval.py",
        "render_plots.py",
        "headline.py",
    ]
    for command in block:
        ws = words(command)
        script = ws[1]
        argv = [sys.executable, str(ROOT / script), *ws[2:], *SMALL.get(script, [])]
        out = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=900, check=False)
        assert out.returncode == 0, f"{command}: {out.stderr[-800:]}"
