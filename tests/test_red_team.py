"""A red-team sweep of bad inputs over every stage that came after the first hardening pass (issue 35):
record, train_generative, generative_analysis, stats, seed_metrics, sweep, failures, memory_probe,
lmc, demos, render_plots, batch_eval, eval_mop, the trainers' run folders, the notebooks run as
scripts and Modal's entrypoints. Each case is one command a careless or hostile user could type:

    number       a count or rate out of range, nan, inf, absurdly large
    path         an output that is a file, below a file, a folder, read-only; '../' in a name;
                 an input that is missing, a folder, a foreign file
    content      a truncated, binary, foreign, corrupt or deeply nested file
    concurrency  two writers of one run folder, results CSV or output at once

and the rule for every one is the project's: one `error:` line on stderr, a non-zero exit, no
traceback, and nothing written or changed in the watched folder (the whole temporary tree, so a
'../' that escapes the working folder is seen too). Commands run in-process through the stages'
`main(argv)` (fast); those whose output must be checked exactly as a user sees it (torch's
warnings, the notebooks, Modal's CLI) run as subprocesses.

Every case must pass (the stages of issues 30 and 31, once xfail while their owners worked, are
fixed: `owner` records whose stage a case covers).
Tier 1 (no marker): cases refused before any checkpoint, recording or model is needed; tier 2
(slow): cases that need the session's tiny run, a recording or a generative model.

    pytest tests/test_red_team.py -m "not slow" -q        # tier 1
    pytest tests/test_red_team.py -q                       # the whole sweep
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from conftest import TINY_PRESET, stderr_lines

ROOT = Path(__file__).resolve().parent.parent
OWNERS = {"30": "issue 30 (stats/seed_metrics/sweep bad input)", "31": "issue 31 (record/generative)"}


# ----------------------------------------------------------------------------- the cases


@dataclass(frozen=True)
class Case:
    """One bad command: `stage` (script name) with `args` ({placeholders} filled from the inputs);
    `kind` one of number/path/content; `owner` the issue whose stage it is (OWNERS);
    `needs` the tier-2 inputs it uses; `subprocess` to run it as `python stage args` (with
    `timeout` seconds, for cases that could hang or whose warnings matter); `env` for notebooks."""

    stage: str
    args: tuple[str, ...]
    kind: str
    owner: str | None = None
    needs: tuple[str, ...] = ()
    subprocess: bool = False
    timeout: float = 120.0
    env: tuple[tuple[str, str], ...] = ()

    @property
    def id(self) -> str:
        text = (
            " ".join(self.args)
            if self.args
            else ",".join(f"{k}={v}" for k, v in self.env if k != "MPLBACKEND")
        )
        return f"{self.stage} {text}".replace(str(TINY_PRESET), "tiny.yaml")[:150]


def C(stage: str, kind: str, *args: str, **kw) -> Case:
    return Case(stage, tuple(args), kind, **kw)


CK = ("ckpt",)  # needs the tiny run's checkpoint (tier 2)


def stage_cases() -> list[Case]:
    cases: list[Case] = []
    # --- record (issue 31 owns its numbers, --out and writers; the checkpoint loader is shared)
    rec = ["--checkpoint", "{ckpt}", "--num_episodes", "2", "--num_envs", "2"]
    for flag, values in {
        "--num_episodes": ("0", "-1", "nan", "1000000000000"),
        "--num_envs": ("0", "-3", "100000"),
        "--chunk_steps": ("0", "-1"),
        "--max_steps": ("0", "-5"),
    }.items():
        # as subprocesses with a time limit: an unrefused count records (almost) forever
        cases += [
            C("record", "number", *rec, flag, v, owner="31", needs=CK, subprocess=True, timeout=60)
            for v in values
        ]
    cases.append(
        C(
            "record",
            "number",
            *rec,
            "--max_steps",
            "100000000000",
            owner="31",
            needs=CK,
            subprocess=True,
            timeout=60,
        )
    )
    cases += [
        C("record", "path", *rec, "--out", o, owner="31", needs=CK)
        for o in ("{file}", "{file}/below", "{ro}/rec")
    ]
    cases += [
        C("record", "content", "--checkpoint", c, "--out", "{new}")
        for c in ("{missing}", "{pickle}", "{jit}", "{text}")
    ]
    cases += [C("record", "content", "--checkpoint", "{truncated}", "--out", "{new}", needs=CK)]
    # --- train_generative (issue 31)
    gen = ["--dataset", "{recording}", "--out", "{new}", "--num_init_steps", "2", "--num_sim_steps", "4"]
    gen += [
        "--hidden_size",
        "16",
        "--z_dim",
        "4",
        "--num_updates",
        "2",
        "--no_progress",
    ]  # unrefused: seconds
    for flag, values in {
        "--num_updates": ("0", "-1"),
        "--batch_size": ("0",),
        "--lr": ("nan", "-1", "0", "inf"),
        "--loss_scale_kl": ("nan", "-1"),
        "--z_dim": ("0",),
        "--num_sim_steps": ("0",),
        "--log_interval": ("0",),
        "--max_minutes": ("nan", "-1"),
    }.items():
        cases += [
            C("train_generative", "number", *gen, flag, v, owner="31", needs=("recording",)) for v in values
        ]
    base = [a for a in gen if a not in ("{new}",)]
    out_at = base.index("--out")
    for out in ("{file}", "{file}/below", "{ro}/gen"):
        args = base[: out_at + 1] + [out] + base[out_at + 1 :]
        cases.append(C("train_generative", "path", *args, owner="31", needs=("recording",)))
    cases += [
        C("train_generative", "content", "--dataset", d, "--out", "{new}", "--num_updates", "1", owner="31")
        for d in ("{missing}", "{file}", "{empty_dir}", "{binary_csv}")
    ]
    # --- generative_analysis (issue 31)
    ana = ["--model", "{model}", "--analysis"]
    for analysis, flag, values in (
        ("samples", "--num_samples", ("0", "-1")),
        ("samples", "--prior_scale", ("nan", "-1")),
        ("maximise", "--steps", ("-1", "0")),
        ("maximise", "--lr", ("nan", "0")),
        ("maximise", "--kl_weight", ("nan",)),
        ("pca", "--num_clusters", ("0",)),
        ("directions", "--alphas", ("nan", "1,x")),
        ("accuracy", "--num_windows", ("0",)),
    ):
        cases += [
            C("generative_analysis", "number", *ana, analysis, flag, v, owner="31", needs=("model",))
            for v in values
        ]
    cases.append(C("generative_analysis", "number", *ana, "bogus", owner="31", needs=("model",)))
    cases.append(
        C(
            "generative_analysis",
            "number",
            *ana,
            "maximise",
            "--target",
            "layer_9:expert_9",
            owner="31",
            needs=("model",),
        )
    )
    cases += [
        C("generative_analysis", "path", *ana, "samples", "--out", o, owner="31", needs=("model",))
        for o in ("{file}", "{file}/below")
    ]
    cases += [
        C("generative_analysis", "content", "--model", m, "--analysis", "samples", owner="31")
        for m in ("{missing}", "{pickle}", "{truncated_model}", "{file}")
    ]
    # --- stats (issue 30)
    st = [
        "--task_id",
        "BabyAI-GoToRedBallGrey-v0",
        "--cache_dir",
        "{cache_dir}",
        "--results_path",
        "{results}",
    ]
    cases += [
        C(
            "stats",
            "path",
            "--task_id",
            t,
            "--cache_dir",
            "{cache_dir}",
            "--results_path",
            "{results}",
            owner="30",
            needs=("caches",),
        )
        for t in ("../../../x", "a/b", "..")
    ]
    cases += [
        C("stats", "number", *st, flag, v, owner="30", needs=("caches",))
        for flag, v in (("--min_visits", "-1"), ("--min_visits", "0"), ("--update", "-5"))
    ]
    cases += [
        C("stats", "path", *st, "--out", o, owner="30", needs=("caches",))
        for o in ("{file}", "{file}/below", "{ro}/stats")
    ]
    cases += [
        C(
            "stats",
            "content",
            "--task_id",
            "BabyAI-GoToRedBallGrey-v0",
            "--cache_dir",
            "{cache_dir}",
            "--results_path",
            r,
            owner="30",
            needs=("caches",),
        )
        for r in ("{binary_csv}", "{foreign_csv}", "{empty_dir}")
    ]
    cases.append(
        C(
            "stats",
            "content",
            "--task_id",
            "BabyAI-UnlockPickup-v0",
            "--cache_dir",
            "{nested_root}",
            "--results_path",
            "{its_csv}",
            owner="30",
            subprocess=True,
        )
    )
    # --- seed_metrics (issue 30 owns bad input; the phase naming is issue 35's, tests/test_earlier_system.py)
    sm = ["--task", "BabyAI-UnlockPickup-v0", "--cache_dir", "{nested_root}", "--results", "{its_csv}"]
    cases.append(C("seed_metrics", "content", *sm, "--out", "{new}", owner="30", subprocess=True))
    cases += [
        C("seed_metrics", "path", "--task", t, "--cache_dir", "{cache_dir}", "--out", "{new}", owner="30")
        for t in ("../../x", "..")
    ]
    cases += [
        C(
            "seed_metrics",
            "path",
            "--task",
            "BabyAI-GoToRedBallGrey-v0",
            "--cache_dir",
            "{cache_dir}",
            "--out",
            o,
            owner="30",
            needs=("caches",),
        )
        for o in ("{file}/below", "{empty_dir}", "{ro}/m.csv")
    ]
    cases += [
        C(
            "seed_metrics",
            "content",
            "--task",
            "BabyAI-GoToRedBallGrey-v0",
            "--cache_dir",
            "{cache_dir}",
            "--results",
            r,
            "--out",
            "{new}",
            owner="30",
            needs=("caches",),
        )
        for r in ("{binary_csv}", "{foreign_csv}")
    ]
    cases.append(
        C(
            "seed_metrics",
            "number",
            "--task",
            "BabyAI-GoToRedBallGrey-v0",
            "--phase_system",
            "bogus",
            owner="30",
        )
    )
    # --- sweep (issue 30)
    sw = [
        "--config",
        str(TINY_PRESET),
        "--task_id",
        "BabyAI-GoToRedBallGrey-v0",
        "--lpc_alpha",
        "0",
        "--checkpoint_dir",
        "{new}",
    ]
    sw += ["--sweeps_dir", "{new2}", "--results_path", "{new3}", "--cache_dir", "{new4}"]
    for flag, v in (
        ("--num_episodes", "0"),
        ("--num_episodes", "-1"),
        ("--parallel", "0"),
        ("--parallel", "-2"),
    ):
        cases.append(
            C("sweep", "number", *sw, "--seeds", "0", flag, v, owner="30", subprocess=True, timeout=90)
        )
    cases += [
        C("sweep", "number", *sw, "--seeds", s, owner="30", subprocess=True, timeout=60)
        for s in ("0-100000000", "5-1", "x", "")
    ]
    cases.append(C("sweep", "number", *[a if a != "0" else "nan" for a in sw], "--seeds", "0", owner="30"))
    cases.append(
        C(
            "sweep",
            "content",
            *sw[:-8],
            "--sweeps_dir",
            "{corrupt_sweeps}",
            "--name",
            "bad",
            "--seeds",
            "0",
            "--results_path",
            "{new3}",
            "--cache_dir",
            "{new4}",
            owner="30",
            subprocess=True,
            timeout=90,
        )
    )
    cases.append(
        C(
            "sweep",
            "path",
            *sw[:-6],
            "{file}",
            "--results_path",
            "{new3}",
            "--cache_dir",
            "{new4}",
            "--seeds",
            "0",
            owner="30",
            subprocess=True,
            timeout=90,
        )
    )
    # --- failures and memory_probe (issue 35)
    # a level each tool can dissect (a locked door; several rooms), played by the tiny run's
    # checkpoint: before issue 35 the episodes were played and the save then raised a traceback
    plays = {"failures": ["--task_id", "BabyAI-Unlock-v0", "--num_episodes", "2"]}
    plays["memory_probe"] = ["--task_id", "BabyAI-GoToObjMaze-v0", "--num_episodes", "4"]
    for stage, extra in (("failures", []), ("memory_probe", [])):
        cases += [
            C(stage, "path", "--checkpoint", "{ckpt}", *plays[stage], "--out", o, needs=CK)
            for o in ("{file}/below", "{empty_dir}", "{ro}/t.csv")
        ]
        cases += [
            C(stage, "content", "--checkpoint", c, *extra) for c in ("{missing}", "{text}", "{empty_dir}")
        ]
        cases += [C(stage, "content", "--checkpoint", c, subprocess=True) for c in ("{pickle}", "{jit}")]
        cases += [C(stage, "content", "--checkpoint", "{truncated}", needs=CK)]
        cases += [
            C(stage, "path", "--checkpoint", "{ckpt}", "--task_id", t, needs=CK)
            for t in ("../x", "BabyAI-Nope-v0")
        ]
    cases += [
        C("failures", "number", "--checkpoint", "{ckpt}", "--num_episodes", v, needs=CK)
        for v in ("0", "-1", "x")
    ]
    cases += [
        C("failures", "path", "--checkpoint", "{ckpt}", "--num_episodes", "2", needs=CK)
    ]  # a level without a locked door
    cases += [
        C("memory_probe", "number", "--checkpoint", "{ckpt}", flag, v, needs=CK)
        for flag, v in (("--num_episodes", "3"), ("--min_age", "0"), ("--min_count", "-1"))
    ]
    cases += [
        C("memory_probe", "path", "--checkpoint", "{ckpt}", "--num_episodes", "4", needs=CK)
    ]  # a one-room level
    # --- lmc (issue 35)
    lm = [
        "--config",
        str(TINY_PRESET),
        "--task_id",
        "BabyAI-GoToRedBallGrey-v0",
        "--seed",
        "1",
        "--results_root",
        "{new}",
    ]
    for flag, v in (
        ("--fork_points", "2"),
        ("--fork_points", "nan"),
        ("--fork_points", "0.5,0.4"),
        ("--alphas", "1"),
        ("--alphas", "-3"),
        ("--eval_episodes", "0"),
        ("--fork_buffer_strategy", "bogus"),
        ("--fork_buffer_strategy", "copy"),
        ("--trial", "3"),
    ):
        cases.append(C("lmc", "number", *lm, flag, v))
    cases.append(C("lmc", "path", *lm[:-1], "{file}"))
    cases.append(C("lmc", "path", *lm[:-1], "{file}/below"))
    cases += [
        C("lmc", "content", "analyze", "--results_dir", d)
        for d in ("{missing}", "{file}", "{empty_dir}", "{corrupt_lmc}")
    ]
    cases += [
        C("lmc", "content", "compare", "--a", a, "--b", "{missing}", "--out", "{new}")
        for a in ("{missing}", "{pickle}")
    ]
    # --- demos (issue 35)
    de = ["--task_id", "BabyAI-GoToRedBallGrey-v0", "--demos_dir", "{new}"]
    for flag, v in (
        ("--demos", "0"),
        ("--demos", "-1"),
        ("--demos", "x"),
        ("--demo_seed", "50"),
        ("--demo_seed", "-1"),
        ("--max_steps", "0"),
        ("--num_workers", "-1"),
    ):
        cases.append(C("demos", "number", *de, *(["--demos", "2"] if flag != "--demos" else []), flag, v))
    cases += [
        C("demos", "path", "--task_id", t, "--demos", "2", "--demos_dir", "{new}")
        for t in ("BabyAI-Nope-v0", "../x")
    ]
    cases.append(
        C("demos", "path", "--task_id", "BabyAI-GoToRedBallGrey-v0", "--demos", "2", "--demos_dir", "{file}")
    )
    # --- render_plots, batch_eval, eval_mop (the first pass's stages; new kinds of input)
    # its JSON nested 100,000 deep: routing_cache's reader, fixed at that cause by issue 30
    cases += [
        C(
            "render_plots",
            "content",
            "--cache",
            "{nested_cache}",
            "--out",
            "{new}",
            owner="30",
            subprocess=True,
        )
    ]
    cases += [
        C(
            "render_plots",
            "content",
            "--cache",
            "{good_cache}",
            "--out",
            "{new}",
            "--results_path",
            r,
            needs=("caches",),
        )
        for r in ("{binary_csv}", "{foreign_csv}")
    ]
    cases += [
        C(
            "render_plots",
            "number",
            "--cache",
            "{good_cache}",
            "--out",
            "{new}",
            "--dpi",
            v,
            needs=("caches",),
        )
        for v in ("nan", "0")
    ]
    be = [
        "--checkpoint_dir",
        "{ck_dir}",
        "--results_path",
        "{new}",
        "--cache_dir",
        "{new2}",
        "--num_episodes",
        "2",
    ]
    cases += [
        C("batch_eval", "number", *be, flag, v, needs=CK)
        for flag, v in (("--num_episodes", "nan"), ("--num_envs", "nan"), ("--max_steps", "1e3"))
    ]
    cases += [
        C("batch_eval", "content", *be[:2], "--results_path", r, needs=CK)
        for r in ("{binary_csv}", "{foreign_csv}")
    ]
    cases += [C("batch_eval", "path", "--checkpoint_dir", d) for d in ("{file}", "{missing}")]
    cases += [
        C(
            "batch_eval",
            "content",
            "--checkpoint_dir",
            "{jit_layout}",
            "--results_path",
            "{new}",
            "--cache_dir",
            "{new2}",
            subprocess=True,
        )
    ]
    cases += [
        C("eval_mop", "content", "--checkpoint", c, subprocess=True)
        for c in ("{pickle}", "{jit}", "{text}", "{empty_dir}")
    ]
    cases += [
        C("eval_mop", "number", "--checkpoint", "{ckpt}", flag, v, needs=CK)
        for flag, v in (("--num_episodes", "nan"), ("--num_envs", "inf"), ("--cache_format", "bogus"))
    ]
    # --- the trainers' run folders (issue 35)
    cases += [
        C("train", "content", "--config", str(TINY_PRESET), "--checkpoint_dir", "{mop_run_root}", "--resume")
    ]
    cases += [C("train", "content", "--config", str(TINY_PRESET), "--checkpoint_dir", "{mop_run_root}")]
    cases += [
        C(
            "train_mop",
            "content",
            "--config",
            str(TINY_PRESET),
            "--checkpoint_dir",
            "{gru_run_root}",
            "--resume",
        )
    ]
    cases += [
        C("train_mop", "content", "--config", "{guide_yaml}", "--input_dim", v, "--checkpoint_dir", "{new}")
        for v in ("280", "151", "-1", "nan")
    ]
    return cases


def notebook_cases() -> list[Case]:
    """The notebooks run as scripts (`python <notebook>.py`) on bad files behind their variables."""
    empty = (
        ("CHECKPOINT_DIRS", "{empty_dir}"),
        ("RESULTS_CSV", "{missing}"),
        ("PLOTS_DIR", "{new}"),
        ("MPLBACKEND", "Agg"),
    )
    cases = [
        C("routing_viz.py", "content", env=(("ROUTING_CACHE_DIR", "{corrupt_caches}"), *empty)),
        C("routing_viz.py", "content", env=(("ROUTING_CACHE_DIR", "{newer_caches}"), *empty)),
        C("logit_viz.py", "content", env=(("ROUTING_CACHE_DIR", "{corrupt_caches}"), *empty)),
        C("logit_viz.py", "content", env=(("ROUTING_CACHE_DIR", "{newer_caches}"), *empty)),
        C(
            "cross_task_viz.py",
            "content",
            env=(*empty[:1], ("RESULTS_CSV", "{binary_csv}"), ("ROUTING_CACHE_DIR", "{empty_dir}")),
        ),
        C(
            "cross_task_viz.py",
            "content",
            env=(*empty[:1], ("RESULTS_CSV", "{foreign_csv}"), ("ROUTING_CACHE_DIR", "{empty_dir}")),
        ),
        C("stats_viz.py", "content", env=(("STATS_DIR", "{binary_stats}"),)),
        C("stats_viz.py", "content", env=(("STATS_DIR", "{foreign_stats}"),)),
        C("lmc_viz.py", "content", env=(("LMC_RESULTS_DIR", "{corrupt_lmc_root}"),)),
        C("lmc_viz.py", "content", env=(("LMC_RESULTS_DIR", "{foreign_lmc_root}"),)),
        C("generative_viz.py", "content", env=(("GENERATIVE_DIR", "{bad_generative}"),)),
    ]
    return [Case(c.stage, c.args, c.kind, subprocess=True, timeout=300, env=c.env) for c in cases]


def modal_cases() -> list[Case]:
    """`modal run modal_app.py::<entrypoint>` with a bad flag and no Modal token: refused before Modal
    asks for one (checked at import; see modal_app.check_modal_run)."""
    run = ["run", "modal_app.py::main", "--task-ids"]
    return [
        Case("modal", (*run, "BabyAI-Nope-v0", "--trials", "0"), "number", subprocess=True),
        Case("modal", (*run, "BabyAI-GoToObj-v0", "--trials", "0", "--set", "lr=nan"), "number", subprocess=True),
        Case("modal", ("run", "modal_app.py::eval_parallel", "--num-episodes", "0"), "number", subprocess=True),
        Case("modal", ("run", "modal_app.py::lmc", "--task-id", "BabyAI-GoToObj-v0", "--fork-points", "2"), "number", subprocess=True),
        Case("modal", ("run", "modal_app.py::sweep", "--task-id", "BabyAI-GoToObj-v0", "--lpc-alpha", "0", "--seeds", "x"), "number", subprocess=True),
        Case("modal", ("run", "modal_app.py::main_seeds", "--task-ids", "BabyAI-GoToObj-v0", "--trials", "0", "--seeds", "0", "--extra-args", "--lr nan"), "number", subprocess=True),
    ]  # fmt: skip


ALL_CASES = stage_cases() + notebook_cases() + modal_cases()


def case_ids(cases: list[Case]) -> list[str]:
    """Each case's id with the arguments every case of its stage shares left out (as '…')."""
    shared: dict[str, tuple[str, ...]] = {}
    for case in cases:
        first = shared.setdefault(case.stage, case.args)
        n = next(
            (i for i, (a, b) in enumerate(zip(first, case.args)) if a != b), min(len(first), len(case.args))
        )
        shared[case.stage] = first[:n]
    ids = []
    for case in cases:
        cut = len(shared[case.stage]) if sum(c.stage == case.stage for c in cases) > 1 else 0
        ids.append(
            Case(case.stage, ("…", *case.args[cut:]) if cut else case.args, case.kind, env=case.env).id
        )
    return ids


def param(case: Case, case_id: str):
    marks = []
    if case.needs or case.subprocess:  # a trained input, or a fresh interpreter (seconds each)
        marks.append(pytest.mark.slow)
    return pytest.param(case, id=case_id, marks=marks)


# ----------------------------------------------------------------------------- the inputs


def snapshot(folder: Path) -> dict:
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if (p.is_file() or p.is_symlink()) and "__marimo__" not in p.parts
    }


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict:
    """Bad files every case may point at (tier 1: no checkpoint needed), under one root."""
    root = tmp_path_factory.mktemp("red_team")
    made: dict[str, Path] = {"root": root}

    def path(name: str) -> Path:
        made[name] = root / "in" / name
        made[name].parent.mkdir(parents=True, exist_ok=True)
        return made[name]

    path("file").write_text("x")
    path("text").write_text("not a checkpoint\n")
    path("empty_dir").mkdir()
    path("ro").mkdir()
    path("binary_csv").write_bytes(b"checkpoint_path,task_id\n\x00\x01\xff\xfe,x\n")
    path("foreign_csv").write_text("name,score\na,1\n")
    torch.save(torch.nn.Linear(1, 1).state_dict(), path("plain.pt"))
    import pickle

    path("pickle").write_bytes(pickle.dumps({"x": list(range(3))}, protocol=4))
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(path("jit")))
    layout = path("jit_layout") / "BabyAI-GoToLocal-v0" / "trial_0"
    layout.mkdir(parents=True)
    shutil.copy(made["jit"], layout / "checkpoint_final.pt")
    # its routing_data.json nested 100,000 deep, where its tools and ours look for a seeded cache
    deep = path("nested_root") / "BabyAI-UnlockPickup-v0" / "trial_20" / "seed_3" / "update_250"
    deep.mkdir(parents=True)
    (deep / "routing_data.json").write_text('{"routing_data": ' + nested(100_000) + "}")
    made["nested_cache"] = deep
    path("its_csv").write_text(
        "checkpoint_path,task_id,trial,seed,update,lpc_alpha\nx,BabyAI-UnlockPickup-v0,20,3,250,0.0001\n"
    )
    bad_sweeps = path("corrupt_sweeps")
    bad_sweeps.mkdir()
    (bad_sweeps / "bad.json").write_text('{"trials": ')
    for name, table in (("binary_stats", b"\x00\xff\xfe\x01"), ("foreign_stats", b"name,score\na,1\n")):
        folder = path(name) / "BabyAI-GoToLocal-v0"
        folder.mkdir(parents=True)
        (folder / "seed_metrics.csv").write_bytes(table)
    for name, interp in (("corrupt_lmc_root", b"\x00\xff\xfe"), ("foreign_lmc_root", b"a,b\n1,2\n")):
        folder = path(name) / "BabyAI-GoToLocal-v0" / "seed_1" / "copy"
        folder.mkdir(parents=True)
        (folder / "interpolation.csv").write_bytes(interp)
        (folder / "instability.csv").write_text("fork\n0\n")
        (folder / "config.json").write_text("{}")
    made["corrupt_lmc"] = made["corrupt_lmc_root"] / "BabyAI-GoToLocal-v0" / "seed_1" / "copy"
    gen = path("bad_generative") / "m"
    gen.mkdir(parents=True)
    (gen / "model_final.pt").write_bytes(b"not a model")
    (gen / "metrics.jsonl").write_text('{"update": 1}\nnot json\n{"update": 2}\n')
    path("truncated_model").write_bytes(b"PK\x03\x04 truncated")
    path("guide_yaml").write_text("task_id: BabyAI-GoToRedBallGrey-v0\ninput_dim: 152\nlang_dim: 16\n")
    # run folders of the other policy type, as a killed run leaves them (one checkpoint)
    from conftest import tiny_config
    from mop.experiment import save_checkpoint

    for name, policy_type in (("mop_run_root", "mop"), ("gru_run_root", "gru")):
        cfg = tiny_config(root / "in" / name)
        import dataclasses

        folder = root / "in" / name / cfg.task_id / "trial_0"
        config = {**dataclasses.asdict(cfg), "policy_type": policy_type, "update": 3, "input_dim": 985}
        save_checkpoint(folder / "checkpoint_3.pt", {"policy_state_dict": {}, "config": config, "update": 3})
        made[name] = root / "in" / name
    return made


@pytest.fixture(scope="module")
def trained(inputs, tiny_run, tmp_path_factory) -> dict:
    """Tier 2 inputs: the session's tiny run (checkpoint, caches) and files made from it."""
    root = inputs["root"]
    final = tiny_run.run_dir / "checkpoint_final.pt"
    made = {"ckpt": root / "in" / "ckpt" / "checkpoint_final.pt"}
    made["ckpt"].parent.mkdir(parents=True)
    shutil.copy(final, made["ckpt"])
    made["truncated"] = root / "in" / "truncated.pt"
    made["truncated"].write_bytes(final.read_bytes()[:4000])
    made["ck_dir"] = root / "in" / "ck_dir"
    shutil.copytree(tiny_run.root / "checkpoints", made["ck_dir"])
    made["cache_dir"] = root / "in" / "cache_dir"
    shutil.copytree(tiny_run.cache_root, made["cache_dir"])
    made["results"] = root / "in" / "results.csv"
    shutil.copy(tiny_run.results, made["results"])
    good = sorted(made["cache_dir"].rglob("metadata.json"))[0].parent
    made["good_cache"] = good
    for name, damage in (
        ("corrupt_caches", lambda d: (d / "steps.parquet").write_bytes(b"PAR1 not really")),
        ("newer_caches", lambda d: (d / "metadata.json").write_text(json.dumps({**json.loads((d / "metadata.json").read_text()), "schema_version": 99}))),
    ):  # fmt: skip
        copy = root / "in" / name / "BabyAI-GoToRedBallGrey-v0" / "trial_0"
        shutil.copytree(good, copy)
        damage(copy)
        made[name] = root / "in" / name
    return made


@pytest.fixture(scope="module")
def generative(trained, inputs) -> dict:
    """Tier 2: a recording of the tiny run and a generative model trained on it for 2 updates."""
    import record
    import train_generative

    root = inputs["root"] / "in"
    recording = root / "recording"
    record.record(trained["ckpt"], recording, num_episodes=4, num_envs=2, chunk_steps=40)
    model_dir = root / "model"
    args = [
        "--dataset",
        str(recording),
        "--out",
        str(model_dir),
        "--num_init_steps",
        "2",
        "--num_sim_steps",
        "4",
    ]
    train_generative.main(
        [*args, "--hidden_size", "16", "--z_dim", "4", "--num_updates", "2", "--no_progress"]
    )
    return {"recording": recording, "model": model_dir / "model_final.pt"}


# ----------------------------------------------------------------------------- running a case


def main_of(stage: str):
    """The in-process entry of a stage: a callable taking argv."""
    if stage in ("train", "train_mop"):
        import importlib

        from mop import experiment

        module = importlib.import_module(stage)

        def run(argv: list[str]) -> None:
            saved = sys.argv
            sys.argv = [f"{stage}.py", *argv]
            try:
                experiment.cli_main(module.main, module.__doc__)
            finally:
                sys.argv = saved

        return run
    import importlib

    module = importlib.import_module(stage)

    def run(argv: list[str]):
        code = module.main(argv)
        if isinstance(code, int) and code:  # demos.py returns its exit code
            raise SystemExit(code)
        return code

    return run


def fill(text: str, values: dict, work: Path) -> str:
    for key in ("new", "new2", "new3", "new4"):
        values.setdefault(key, work / "out" / key)
    values.setdefault("missing", work / "missing.pt")
    for key, value in values.items():
        text = text.replace("{" + key + "}", str(value))
    return text


def run_case(case: Case, values: dict, work: Path) -> tuple[int | None, str, str]:
    """(exit code, stdout, stderr) of the case run in `work` (a folder three deep in the watched tree)."""
    args = [fill(a, values, work) for a in case.args]
    env = {k: fill(v, values, work) for k, v in case.env}
    if case.subprocess:
        if case.stage == "modal":
            import tempfile

            command = [str(Path(sys.executable).parent / "modal"), *args]
            env |= {"HOME": tempfile.mkdtemp(prefix="no_modal_token_")}  # no token, outside the watched tree
            cwd = ROOT
        else:
            script = case.stage if case.stage.endswith(".py") else f"{case.stage}.py"
            command, cwd = [sys.executable, str(ROOT / script), *args], work
        full = {k: v for k, v in os.environ.items() if not k.startswith("MODAL_TOKEN")}
        full |= {"PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg", **env}
        try:
            out = subprocess.run(
                command, cwd=cwd, env=full, capture_output=True, text=True, timeout=case.timeout
            )
        except subprocess.TimeoutExpired as e:
            return None, "", f"timed out after {case.timeout:g} s ({e.cmd[1:3]})"
        return out.returncode, out.stdout, out.stderr
    stdout, stderr = io.StringIO(), io.StringIO()
    code: int | None = 0
    old = os.getcwd()
    os.chdir(work)
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                main_of(case.stage)(args)
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
                if isinstance(e.code, str):
                    print(e.code, file=sys.stderr)
            except Exception as e:  # a traceback the user would see
                code = 1
                print(f"Traceback (most recent call last):\n{type(e).__name__}: {e}", file=sys.stderr)
    finally:
        os.chdir(old)
    return code, stdout.getvalue(), stderr.getvalue()


def check_refused(case: Case, values: dict, root: Path) -> str:
    """Run `case` and assert the rule; returns the error line."""
    shutil.rmtree(root / "work", ignore_errors=True)
    work = root / "work" / "a" / "b"
    work.mkdir(parents=True, exist_ok=True)
    ro = values.get("ro")
    if ro is not None:
        ro.chmod(0o555)
    before = snapshot(root)
    try:
        code, out, err = run_case(case, values, work)
    finally:
        if ro is not None:
            ro.chmod(0o755)
    after = snapshot(root)
    lines = stderr_lines(err)  # a bar that had started before the bad input surfaced is not an error line
    assert code not in (0, None), f"exit {code}; stderr: {err[-600:]}"
    assert "Traceback" not in err, err[-1500:]
    assert len(lines) == 1 and lines[0].startswith("error:"), f"stderr is not one error line: {err[-1500:]}"
    changed = sorted(set(before.items()) ^ set(after.items()))
    assert not changed, f"changed: {changed[:5]}"
    return lines[0]


# ----------------------------------------------------------------------------- the sweep


@pytest.mark.parametrize("case", [param(c, i) for c, i in zip(ALL_CASES, case_ids(ALL_CASES))])
def test_bad_input_is_refused_in_one_line(case, inputs, request):
    if case.stage == "modal":
        pytest.importorskip("modal")
    if os.geteuid() == 0 and "{ro}" in " ".join(case.args):
        pytest.skip("root writes into read-only folders")
    values = dict(inputs)
    if case.needs or case.stage.endswith("_viz.py") or case.kind == "content" and "{truncated}" in case.args:
        values |= request.getfixturevalue("trained")
    if {"recording", "model"} & set(case.needs):
        values |= request.getfixturevalue("generative")
    check_refused(case, values, inputs["root"])


def test_the_sweep_covers_every_later_stage_and_kind():
    stages = {c.stage for c in ALL_CASES}
    for stage in ("record", "train_generative", "generative_analysis", "stats", "seed_metrics", "sweep"):
        assert stage in stages, stage
    for stage in (
        "failures",
        "memory_probe",
        "lmc",
        "demos",
        "render_plots",
        "batch_eval",
        "eval_mop",
        "modal",
    ):
        assert stage in stages, stage
    assert {s for s in stages if s.endswith("_viz.py")} == {p.name for p in ROOT.glob("*_viz.py")}
    assert {c.kind for c in ALL_CASES} == {"number", "path", "content"}
    assert len(ALL_CASES) >= 150


# ----------------------------------------------------------------------------- concurrency


def start(script: str, args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, str(ROOT / script), *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_the_two_trainers_never_share_a_run_folder(tmp_path):
    """train_mop.py and train.py started at once on one run: one trains, the other is refused in one
    line (the run lock, or the policy type once the first has written a checkpoint)."""
    args = ["--config", str(TINY_PRESET), "--checkpoint_dir", str(tmp_path / "ck"), "--num_updates", "30"]
    first = start("train_mop.py", args, tmp_path)
    folder = tmp_path / "ck" / "BabyAI-GoToRedBallGrey-v0" / "trial_0"
    deadline = time.monotonic() + 120
    while not (folder / ".train.lock").exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    second = start("train.py", [*args, "--resume"], tmp_path)
    _, err2 = second.communicate(timeout=300)
    first.communicate(timeout=300)
    assert first.returncode == 0
    lines = err2.strip().splitlines()
    assert second.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:"), err2
    assert "is being trained by" in lines[0] or "holds a 'mop' policy" in lines[0]


@pytest.mark.slow
def test_two_lmc_experiments_of_one_folder_at_once(tmp_path):
    """The same LMC command twice at once: one runs, the other is refused in one line."""
    args = ["--config", str(TINY_PRESET), "--task_id", "BabyAI-GoToRedBallGrey-v0", "--seed", "1"]
    args += ["--num_updates", "6", "--fork_points", "0.5", "--alphas", "2", "--eval_episodes", "2"]
    args += ["--heldout_episodes", "2", "--results_root", str(tmp_path / "lmc"), "--no_progress"]
    procs = [start("lmc.py", args, tmp_path) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    codes = sorted(p.returncode for p in procs)
    refused = [err for p, (_, err) in zip(procs, outs) if p.returncode != 0]
    assert codes[0] == 0 and len(refused) == 1, [o[1][-800:] for o in outs]
    lines = refused[0].strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), refused[0]


def test_an_lmc_experiment_being_run_refuses_a_second_start_before_any_work(tmp_path, capsys):
    """While one lmc.py holds its experiment folder, the same command is refused in one line at
    once: no config.json, no held-out set played (its progress bar once leaked into the refusal,
    when the second start ran up to the parent's run lock before it was refused)."""
    import lmc
    from mop.runs import run_lock

    root = tmp_path / "lmc"
    args = ["--config", str(TINY_PRESET), "--task_id", "BabyAI-GoToRedBallGrey-v0", "--seed", "1"]
    args += ["--num_updates", "6", "--fork_points", "0.5", "--alphas", "2", "--eval_episodes", "2"]
    args += ["--heldout_episodes", "2", "--results_root", str(root), "--no_progress"]
    folder = root / "BabyAI-GoToRedBallGrey-v0" / "seed_1" / "fresh"
    with run_lock(folder), pytest.raises(SystemExit) as refused:
        lmc.main(["train", *args])
    lines = stderr_lines(capsys.readouterr().err)
    assert refused.value.code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("error: ") and "is being trained by pid" in lines[0]
    assert not any(p.is_file() for p in root.rglob("*"))


@pytest.mark.slow
def test_two_batch_evals_into_one_csv_lose_no_row(trained, tmp_path):
    csv, cache = tmp_path / "r.csv", tmp_path / "cache"
    common = ["--checkpoint_dir", str(trained["ck_dir"]), "--num_episodes", "2", "--num_envs", "2"]
    procs = [
        start(
            "batch_eval.py",
            [*common, "--results_path", str(csv), "--cache_dir", str(cache), *extra],
            tmp_path,
        )
        for extra in ([], ["--knockout", "largest"])
    ]
    for p in procs:
        p.communicate(timeout=600)
        assert p.returncode == 0
    import pandas as pd

    table = pd.read_csv(csv)
    assert len(table) == 4 and sorted(table["knockout"]) == ["largest", "largest", "none", "none"]


@pytest.mark.slow
def test_two_recordings_into_one_out(trained, tmp_path):
    args = [
        "--checkpoint",
        str(trained["ckpt"]),
        "--num_episodes",
        "20",
        "--num_envs",
        "2",
        "--out",
        str(tmp_path / "rec"),
    ]
    procs = [start("record.py", args, tmp_path) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert sorted(p.returncode for p in procs)[0] == 0 and sorted(p.returncode for p in procs)[1] != 0, outs


@pytest.mark.slow
def test_two_generative_trainings_into_one_out(generative, tmp_path):
    args = ["--dataset", str(generative["recording"]), "--out", str(tmp_path / "g"), "--num_init_steps", "2"]
    args += [
        "--num_sim_steps",
        "4",
        "--hidden_size",
        "16",
        "--z_dim",
        "4",
        "--num_updates",
        "30",
        "--no_progress",
    ]
    procs = [start("train_generative.py", args, tmp_path) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes[0] == 0 and codes[1] != 0, [o[1][-500:] for o in outs]
    rows = (tmp_path / "g" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == len({json.loads(r)["update"] for r in rows})


@pytest.mark.slow
def test_two_seed_metrics_exports_to_one_out(trained, tmp_path):
    """Both succeed (the CSV is replaced atomically): the file is one whole table, never a mix."""
    out = tmp_path / "m.csv"
    args = [
        "--task",
        "BabyAI-GoToRedBallGrey-v0",
        "--cache_dir",
        str(trained["cache_dir"]),
        "--out",
        str(out),
    ]
    procs = [start("seed_metrics.py", args, tmp_path) for _ in range(2)]
    for p in procs:
        p.communicate(timeout=300)
        assert p.returncode == 0
    import pandas as pd

    assert len(pd.read_csv(out)) >= 1 and not list(tmp_path.glob(".m.csv.*"))


@pytest.mark.slow
def test_two_sweeps_of_one_grid_at_once(tmp_path):
    args = [
        "--config",
        str(TINY_PRESET),
        "--task_id",
        "BabyAI-GoToRedBallGrey-v0",
        "--lpc_alpha",
        "0",
        "--seeds",
        "0",
    ]
    args += [
        "--num_updates",
        "6",
        "--num_episodes",
        "2",
        "--checkpoint_dir",
        str(tmp_path / "ck"),
        "--skip_eval",
    ]
    procs = [start("sweep.py", args, tmp_path) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    codes = sorted(p.returncode for p in procs)
    # one trains; the other waits for, skips or refuses the run; neither tracebacks
    assert codes[0] == 0 and all("Traceback" not in o[1] for o in outs), [o[1][-800:] for o in outs]
    rows = (
        (tmp_path / "ck" / "BabyAI-GoToRedBallGrey-v0" / "trial_0" / "seed_0" / "metrics.jsonl")
        .read_text()
        .splitlines()
    )
    assert len(rows) == len({json.loads(r)["update"] for r in rows})


# ----------------------------------------------------------------------------- the specific fixes


def test_refused_checkpoints_give_no_torch_warning(inputs):
    """A plain pickle and a TorchScript archive: torch warns before it fails; the warning is not
    printed, its gist is in the one error line."""
    import warnings

    from mop.experiment import CheckpointError, load_checkpoint

    for name, said in (("pickle", "a plain pickle"), ("jit", "TorchScript archive")):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(CheckpointError, match=said):
                load_checkpoint(inputs[name])
        assert not caught, [str(w.message) for w in caught]


def test_modal_run_is_checked_at_import(capsys):
    pytest.importorskip("modal")
    import modal_app
    from mop import launch

    names = set(modal_app.ENTRYPOINT_CHECKS)
    argv = [
        str(Path(sys.executable).parent / "modal"),
        "run",
        "--detach",
        str(ROOT / "modal_app.py") + "::main",
    ]

    def call(args: list[str]):
        return launch.modal_run_call(args, modal_app.__file__, "modal_app", names)

    assert call([*argv, "--trials", "0"]) == ("main", ["--trials", "0"])
    assert call([argv[0], "run", "-m", "modal_app::lmc", "--seed", "1"]) == ("lmc", ["--seed", "1"])
    assert call(["pytest", "run", "modal_app.py::main"]) is None
    assert call([argv[0], "deploy", "modal_app.py"]) is None
    assert call([argv[0], "run", "other.py::main"]) is None
    assert call([argv[0], "run", "modal_app.py::train_run"]) is None  # a function, not an entrypoint
    modal_app.check_modal_run([*argv, "--task-ids", "BabyAI-GoToObj-v0", "--trials", "0"])  # good: nothing
    modal_app.check_modal_run([*argv, "--task-ids", "x", "--bogus", "1"])  # click's to report
    with pytest.raises(SystemExit) as exit_info:
        modal_app.check_modal_run(
            [*argv, "--task-ids", "BabyAI-GoToObj-v0", "--trials", "0", "--set", "num_envs=0"]
        )
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and lines == ["error: num_envs must be positive, got 0"]
    flags = launch.entrypoint_flags(
        modal_app.main.info.raw_f, ["--task-ids", "A", "--trials", "0", "--normalize-lpc"]
    )
    assert flags["normalize_lpc"] is True and flags["lpc_alpha"] is None and flags["script"] == "train_mop.py"


def test_a_notebook_refusal_is_a_callout_in_the_app(inputs, monkeypatch):
    """Outside a script run (an app, an export, an in-process app.run() as under pytest, whose
    script runner names its `__main__` after the notebook) the refusal is the callout it was."""
    import importlib.util

    from mop.notebook_script import refusal, run_as_script

    assert not run_as_script()
    shown = refusal("Cannot read this cache.", ValueError("cache 'x' is corrupt"))
    assert "Cannot read this cache." in shown.text and "danger" in shown.text
    monkeypatch.setenv("STATS_DIR", str(inputs["binary_stats"]))
    spec = importlib.util.spec_from_file_location("notebook_stats_viz", ROOT / "stats_viz.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    outputs, defs = module.app.run()  # no SystemExit here
    assert "Cannot use this table." in " ".join(getattr(o, "text", "") for o in outputs if o is not None)
    assert "table" not in defs
