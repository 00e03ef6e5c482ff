"""lmc.py (issue 10): linear mode connectivity of MoP children, its figures, notebook and Modal side.

Tier 1: fork points, buffer strategies and bad input, on synthetic data (barriers, interpolation,
JS divergence and the issue-31 statistics: tests/test_lmc_stats.py). Tier 2 (`experiment`: one tiny real experiment on BabyAI-GoToRedBallGrey-v0, 6
updates, forks at updates 2 and 4, 3 α, copy strategy with a DAgger buffer): outputs, the standard
checkpoint layout, endpoints equal eval_mop.evaluate, a fork with the parent's seed equals the
resumed parent, each strategy's buffers, shared-pair determinism (identical children: barrier 0),
--resume and analyze of an incomplete experiment, compare, the Modal bodies, the notebook.

    pytest tests/test_lmc.py -m "not slow and not browser"
    pytest tests/test_lmc.py
"""

import dataclasses
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure

import lmc
from conftest import TINY_PRESET, fake_episode
from mop import connectivity
from mop.experiment import load_checkpoint, run_dir, save_checkpoint
from mop.imitation import buffer_path
from mop.replay_buffer import EpisodeBuffer, StoredEpisode
from mop.runs import checkpoint_name

ROOT = Path(__file__).resolve().parent.parent
TASK = "BabyAI-GoToRedBallGrey-v0"
SEED = 3
# configs/tiny.yaml: 4 envs x 8 steps, in-process; 6 updates, forks at updates 2 and 4; 8-step
# episodes, so every unroll finishes episodes for the buffers
TINY = ["--config", str(TINY_PRESET), "--num_updates", "6", "--seed", str(SEED), "--fork_points", "0.34,0.67"]
TINY += ["--max_steps", "8"]
TINY += [
    "--alphas",
    "3",
    "--eval_episodes",
    "6",
    "--eval_envs",
    "3",
    "--heldout_episodes",
    "4",
    "--no_progress",
]
BUFFER = ["--buffer_episodes", "200", "--fork_buffer_strategy", "copy"]


def episode(seed: int, length: int = 3) -> StoredEpisode:
    return fake_episode(length, seed)


def one_line_exit_2(capsys, call) -> str:
    with pytest.raises(SystemExit) as info:
        call()
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


# ----------------------------------------------------------------------------- tier 1


def test_fork_points_give_updates_and_refuse_what_cannot_be_forked():
    assert lmc.parse_fork_points("0.01,0.05,0.1,0.2,0.3,0.5,0.7,0.9", 2000)[1] == [
        20,
        100,
        200,
        400,
        600,
        1000,
        1400,
        1800,
    ]
    assert lmc.parse_fork_points("0,0.5", 10) == ([0.0, 0.5], [0, 5])  # 0: the initialisation
    for text, message in [
        ("1.0", "outside (0, 1)"),
        ("-0.1", "outside (0, 1)"),
        ("0.5,0.2", "sorted and distinct"),
        ("0.2,0.2", "sorted and distinct"),
        ("0.01", "update 0"),  # 0.01 of 10 updates rounds to update 0
        ("0.96", "update 10"),  # ... and 0.96 to the last update
        ("0.3,0.32", "both update 3"),
        ("a,b", "comma-separated"),
        ("", "empty"),
    ]:
        with pytest.raises(lmc.LMCError, match=message.replace("(", r"\(").replace(")", r"\)")):
            lmc.parse_fork_points(text, 10)


def test_child_buffers_are_what_each_strategy_claims():
    parent = EpisodeBuffer(50, TASK, seed=1)
    parent.extend([episode(s) for s in range(7)])
    copy_a, copy_b = lmc.child_buffers("copy", parent, (11, 12))
    assert copy_a is not copy_b and copy_a is not parent
    for child in (copy_a, copy_b):
        assert len(child) == 7 and all(x is y for x, y in zip(child.episodes, parent.episodes))  # identity
    copy_a.extend([episode(99)])
    assert len(copy_b) == len(parent) == 7  # independent
    assert copy_a.rng.integers(1 << 30) != copy_b.rng.integers(1 << 30)  # own sampling streams
    same, _ = lmc.child_buffers("copy", parent, (1, 12), parent_seed=1)  # the parent's seed: its stream
    assert same.rng.bit_generator.state == parent.rng.bit_generator.state
    half_a, half_b = lmc.child_buffers("split", parent, (11, 12))
    seeds_a, seeds_b = [e.seed for e in half_a.episodes], [e.seed for e in half_b.episodes]
    assert (len(half_a), len(half_b)) == (4, 3) and not set(seeds_a) & set(seeds_b)  # disjoint
    assert sorted(seeds_a + seeds_b) == list(range(7))  # and together the parent's buffer
    shared_a, shared_b = lmc.child_buffers("shared", parent, (11, 12))
    assert shared_a is shared_b and shared_a is not parent and len(shared_a) == 7
    assert lmc.child_buffers("fresh", parent, (11, 12)) == (None, None)
    assert lmc.child_buffers("copy", None, (11, 12)) == (None, None)  # no buffer: both start empty


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--fork_points", "0.5,1.5"], "outside (0, 1)"),
        (["--fork_points", "0.5,0.2"], "sorted and distinct"),
        (["--fork_points", "0.5,0.5"], "sorted and distinct"),
        (["--fork_points", "0.05"], "update 0"),
        (["--fork_points", "0.3,0.32"], "both update 2"),
        (["--fork_buffer_strategy", "mirror"], "must be one of copy, fresh, shared, split"),
        (["--fork_buffer_strategy", "copy"], "needs the DAgger buffer"),
        (["--fork_buffer_strategy", "split", "--buffer_episodes", "0"], "only 'fresh' is meaningful"),
        (["--alphas", "1"], "--alphas must be at least 2"),
        (["--eval_episodes", "0"], "--eval_episodes"),
        (["--trial", "2"], "--trial is set by lmc.py"),
        (["--checkpoint_dir", "x"], "--checkpoint_dir is set by lmc.py"),
        (["--demos", "10"], "--demos"),
        (["--task_id", "BabyAI-GoToLocal-v0,BabyAI-PickupLoc-v0"], "one level at a time"),
        (["--lr", "-1"], "lr"),
        (["--seed", str(2**32 - 2)], "below 2**32"),
        (["--pairs", "0"], "--pairs must be a whole number from 1"),
        (["--bootstrap", "50"], "--bootstrap must be a whole number >= 100"),
        (["--fork_points"], "expected one argument"),
        (["--resume"], "no experiment"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(capsys, tmp_path, extra, message):
    argv = [*TINY, "--results_root", str(tmp_path / "r"), *extra]  # the last of a repeated flag wins
    err = one_line_exit_2(capsys, lambda: lmc.main(argv))
    assert message in err
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_help_documents_the_lmc_flags_and_commands():
    out = subprocess.run(
        [sys.executable, "lmc.py", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0
    for flag in (
        "--fork_points",
        "--fork_buffer_strategy",
        "--alphas",
        "--results_root",
        "--parallel_children",
        "--eval_episodes",
        "--heldout_episodes",
        "--resume",
        "--lpc_alpha",
        "lmc.py analyze",
        "lmc.py compare",
    ):
        assert flag in out.stdout, flag
    for command, flag in (("analyze", "--results_dir"), ("compare", "--a")):
        out = subprocess.run(
            [sys.executable, "lmc.py", command, "--help"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0 and flag in out.stdout


def test_every_lmc_default_is_written_once_in_lmc_settings(tmp_path):
    """mop/lmc_settings.py's LmcSettings is the one place an LMC default is written: lmc.py's flags
    (the experiment's, absent unless given, and compare's), its keyword defaults and the experiment
    it builds when nothing is given, and modal_app's lmc entrypoint all take it from there."""
    import inspect

    from mop.lmc_settings import DEFAULTS, EVALUATION_SETTINGS, EXPERIMENT_SETTINGS

    args = lmc.build_arg_parser(lmc.__doc__, lmc._train_flags).parse_args([])
    assert (args.results_root, args.parallel_children) == (DEFAULTS.results_root, DEFAULTS.parallel_children)
    assert not any(hasattr(args, k) for k in EXPERIMENT_SETTINGS)  # --resume compares the given only
    exp = lmc.build_experiment({"num_updates": 2000, "seed": 1}, {}, tmp_path)
    assert exp.fork_points == tuple(float(p) for p in DEFAULTS.fork_points.split(","))
    assert all(getattr(exp, k) == getattr(DEFAULTS, k) for k in EVALUATION_SETTINGS)
    assert exp.directory.parents[2] == tmp_path and list(tmp_path.iterdir()) == []  # nothing written
    defaults = {k: getattr(DEFAULTS, k) for k in (*EVALUATION_SETTINGS, "results_root")}
    compare = inspect.signature(lmc.compare).parameters
    assert {k: compare[k].default for k in defaults} == defaults
    assert inspect.signature(lmc.build_experiment).parameters["results_root"].default == DEFAULTS.results_root
    out = subprocess.run(
        [sys.executable, "lmc.py", "compare", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert f"(default {DEFAULTS.alphas})" in out.stdout and f"(default {DEFAULTS.eval_envs})" in out.stdout
    pytest.importorskip("modal", reason="the Modal client is not installed")
    from modal.cli.run import _get_click_command_for_local_entrypoint as command

    import modal_app

    params = command(modal_app.app, modal_app.lmc).make_context("modal run", ["--task-id", TASK]).params
    shared = ("fork_points", "fork_buffer_strategy", "alphas", "eval_episodes", "heldout_episodes")
    assert {k: params[k] for k in shared} == {k: getattr(DEFAULTS, k) for k in shared}


def test_analyze_and_compare_refuse_what_is_not_theirs(capsys, tmp_path):
    (tmp_path / "plain").mkdir()
    assert "not an LMC experiment" in one_line_exit_2(
        capsys, lambda: lmc.main(["analyze", "--results_dir", str(tmp_path / "plain")])
    )
    (tmp_path / "plain" / "config.json").write_text('{"task_id": "x"}')
    assert "another file" in one_line_exit_2(
        capsys, lambda: lmc.main(["analyze", "--results_dir", str(tmp_path / "plain")])
    )
    assert "not a folder" in one_line_exit_2(
        capsys, lambda: lmc.main(["analyze", "--results_dir", str(tmp_path / "none")])
    )
    err = one_line_exit_2(
        capsys, lambda: lmc.main(["compare", "--a", str(tmp_path / "a.pt"), "--b", str(tmp_path / "b.pt")])
    )
    assert "--a" in err and "does not exist" in err


def test_lmc_viz_passes_marimo_check():
    out = subprocess.run(
        [sys.executable, "-m", "marimo", "check", "lmc_viz.py"], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr


# ----------------------------------------------------------------------------- tier 2: a tiny experiment


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """A tiny real experiment (copy strategy, buffer on), trained, evaluated and analysed."""
    root = tmp_path_factory.mktemp("lmc")
    summary = lmc.main([*TINY, *BUFFER, "--results_root", str(root)])
    exp = lmc.Experiment.load(summary["results_dir"])
    return exp, summary, root


def copy_experiment(exp: lmc.Experiment, where: Path, strategy: str | None = None) -> lmc.Experiment:
    """The experiment copied to `where` (every file), optionally as another strategy's."""
    shutil.copytree(exp.directory, where)
    moved = lmc.Experiment.load(where)
    if strategy is None:
        return moved
    other = dataclasses.replace(moved, strategy=strategy).check()
    for k in range(len(other.fork_points)):  # only the parent is shared: the children train anew
        for c in lmc.CHILDREN:
            shutil.rmtree(other.child_folder(k, c))
    shutil.rmtree(other.directory / lmc.EVAL_DIR)
    return other


@pytest.mark.slow
def test_end_to_end_writes_every_output(experiment):
    exp, summary, _ = experiment
    d = exp.directory
    assert str(d) == summary["results_dir"]
    assert d.relative_to(d.parents[2]).as_posix() == f"{TASK}/seed_{SEED}/copy"
    doc = json.loads((d / "config.json").read_text())
    assert (
        doc["kind"] == "lmc_experiment" and doc["fork_points"] == [0.34, 0.67] and doc["strategy"] == "copy"
    )
    assert [f["update"] for f in doc["forks"]] == [2, 4]
    assert [f["children"]["A"]["seed"] for f in doc["forks"]] == [SEED + 1, SEED + 3]
    assert [f["children"]["B"]["seed"] for f in doc["forks"]] == [SEED + 2, SEED + 4]
    interp, table = connectivity.load_results(d)
    assert list(interp.columns) == connectivity.COLUMNS
    metrics = set(interp["metric"])
    assert {
        "success_rate",
        "path_ratio",
        "mean_lpc",
        "heldout_ce",
        "heldout_accuracy",
        "usage_layer_1_expert_1",
        "js_to_a_layer_0",
        "js_to_b_layer_1",
        "agree_to_a_layer_1",
        "agree_to_b_layer_0",
    } <= metrics
    assert len(interp) == 2 * 3 * len(metrics)  # one row per fork × α × metric
    assert sorted(interp["alpha"].unique()) == [0.0, 0.5, 1.0]
    success = interp[interp["metric"] == "success_rate"]
    assert (
        success[["ci_low", "ci_high"]].notna().all().all() and (success["ci_low"] <= success["value"]).all()
    )
    assert len(table) == 2 and {
        "ce_barrier_line",
        "ce_barrier_line_alpha",
        "success_barrier_line",
        "routing_js_mean",
    } <= set(table.columns)
    assert (table["ce_barrier_line"] >= 0).all()
    names = {p.name for p in (d / "fork_analysis").glob("*.png")}
    assert names == {
        "all_interpolations.png",
        "interp_fork_0.png",
        "interp_fork_1.png",
        "instability_over_time.png",
        "routing_agreement.png",
    }
    assert len(EpisodeBuffer.load(d / "heldout.npz", TASK)[0]) == 4
    timing = json.loads((d / "timing.json").read_text())[-1]
    assert timing["trained"] == {
        "parent": "trained",
        "0A": "trained",
        "0B": "trained",
        "1A": "trained",
        "1B": "trained",
    }
    assert 0 < timing["eval_s"] < timing["wall_s"]
    # the children start from the fork: their first logged update follows it, their counters continue
    child = load_checkpoint(exp.child_folder(1, "A") / "checkpoint_final.pt")
    fork_ckpt = load_checkpoint(exp.parent_folder() / "checkpoint_4.pt")
    assert child["update"] == 6 and child["stats"]["frames"] == fork_ckpt["stats"]["frames"] + 2 * 4 * 8
    assert child["config"]["seed"] == SEED + 3 and child["config"]["trial"] == 2


@pytest.mark.slow
def test_checkpoints_are_in_the_standard_layout(experiment):
    import batch_eval

    exp, _, _ = experiment
    refs = batch_eval.discover([str(exp.directory / "checkpoints")])
    finals = {(r.trial, r.seed) for r in refs if r.is_final}  # each run's last update (final links it)
    assert finals == {(0, SEED), (1, SEED + 1), (1, SEED + 2), (2, SEED + 3), (2, SEED + 4)}
    assert {r.update for r in refs if r.trial == 0} >= {2, 4}  # the fork states


@pytest.mark.slow
def test_interpolation_endpoints_reproduce_each_childs_own_evaluation(experiment):
    from eval_mop import EvalOptions, evaluate
    from mop.experiment import load_policy

    exp, _, _ = experiment
    interp, _ = connectivity.load_results(exp.directory)
    held = list(EpisodeBuffer.load(exp.directory / "heldout.npz", TASK)[0].episodes)
    for fork in (0, 1):
        rows = interp[interp["fork"] == fork]
        for child, alpha in (("A", 0.0), ("B", 1.0)):
            path = exp.child_folder(fork, child) / "checkpoint_final.pt"
            own = evaluate(path, EvalOptions(num_episodes=6, num_envs=3, record=False)).metrics
            at = rows[rows["alpha"] == alpha].set_index("metric")
            for metric in (
                "success_rate",
                "path_ratio",
                "mean_lpc",
                "mean_episode_length",
                "usage_layer_0_expert_2",
            ):
                a, b = at.loc[metric, "value"], own[metric]
                assert (a == b) or (math.isnan(a) and math.isnan(b)), (fork, child, metric, a, b)
            assert at.loc["success_rate", "ci_high"] == own["success_ci_high"]
            policy, encoder, config = load_policy(path)
            threads = torch.get_num_threads()
            torch.set_num_threads(1)  # as the evaluation: the same matmul reduction order
            try:
                held_metrics, _ = connectivity.heldout_pass(policy, encoder, held, config["obs_encoding"])
            finally:
                torch.set_num_threads(threads)
            assert at.loc["heldout_ce", "value"] == held_metrics["heldout_ce"]
        # the path's own ends: θ(0) against B is the children's agreement, θ(1) against B is B itself
        assert rows[(rows["alpha"] == 1.0) & (rows["metric"] == "js_to_b_layer_0")]["value"].item() == 0.0
        assert rows[(rows["alpha"] == 0.0) & (rows["metric"] == "js_to_a_layer_1")]["value"].item() == 0.0


def state_equal(a: dict, b: dict) -> bool:
    if isinstance(a, dict):
        return set(a) == set(b) and all(state_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(state_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    return a == b


@pytest.mark.slow
def test_a_fork_with_the_parents_seed_equals_the_parent_resumed_from_that_checkpoint(experiment, tmp_path):
    import train_mop
    from mop.experiment import read_metrics

    exp, _, _ = experiment
    parent = exp.parent_config()
    checkpoint, buffer = lmc.fork_state(exp, 0)  # update 2, with its buffer
    # the parent resumed from checkpoint_2.pt (the later files left out)
    resumed = dataclasses.replace(parent, checkpoint_dir=str(tmp_path / "resumed"))
    target = run_dir(resumed)
    target.mkdir(parents=True)
    for name in ("checkpoint_2.pt", "buffer_2.npz", "config.json", "metrics.jsonl"):
        shutil.copy(exp.parent_folder() / name, target / name)
    train_mop.main(resumed, resume=True, progress=False)
    # a fork child with the parent's seed (its layouts, forcing and buffer streams) in another folder
    same = dataclasses.replace(parent, trial=9, checkpoint_dir=str(tmp_path / "fork"))
    own_buffer, _ = lmc.child_buffers("copy", buffer, (same.seed, same.seed), parent_seed=exp.seed)
    assert lmc.train_child(same, checkpoint, own_buffer, progress=False) == "trained"
    a = load_checkpoint(target / "checkpoint_final.pt")
    b = load_checkpoint(run_dir(same) / "checkpoint_final.pt")
    for key in ("policy_state_dict", "encoder_state", "optimizer_state_dict", "rng", "collector_state"):
        assert state_equal(a[key], b[key]), key
    losses = [
        [r["train/loss"] for r in read_metrics(run_dir(c) / "metrics.jsonl") if r["update"] > 2]
        for c in (resumed, same)
    ]
    assert losses[0] == losses[1] and len(losses[0]) == 2  # updates 3 and 6 logged
    # the real children (other seeds) do differ from it
    child = load_checkpoint(exp.child_folder(0, "A") / "checkpoint_final.pt")
    assert not state_equal(child["policy_state_dict"], a["policy_state_dict"])


def buffer_of(exp: lmc.Experiment, fork: int, child: str) -> EpisodeBuffer:
    return EpisodeBuffer.load(buffer_path(exp.child_folder(fork, child), 6), TASK)[0]


def new_episodes(exp: lmc.Experiment, fork: int, child: str) -> int:
    """Episodes the child finished after its fork (its buffer received each one)."""
    parent = load_checkpoint(exp.parent_folder() / checkpoint_name(exp.fork_updates[fork]))
    final = load_checkpoint(exp.child_folder(fork, child) / "checkpoint_final.pt")
    return final["stats"]["episodes"] - parent["stats"]["episodes"]


@pytest.mark.slow
def test_each_strategy_gives_the_buffers_it_claims(experiment, tmp_path):
    exp, _, _ = experiment
    _, parent = lmc.fork_state(exp, 0)
    n, added, seeds = len(parent), parent.added, [e.seed for e in parent.episodes]
    assert n >= 2  # the tiny parent finished a few episodes before update 2
    new = {c: new_episodes(exp, 0, c) for c in lmc.CHILDREN}
    assert all(v > 0 for v in new.values())
    # copy (the experiment's own children): the parent's episodes, each child's own after them
    for c in lmc.CHILDREN:
        buf = buffer_of(exp, 0, c)
        assert buf.added == added + new[c] and [e.seed for e in buf.episodes][:n] == seeds
    for strategy in ("fresh", "split", "shared"):
        other = copy_experiment(exp, tmp_path / strategy, strategy)
        trained = lmc.train_fork(other, 0, progress=False)
        assert set(trained.values()) == {"trained"}
        new = {c: new_episodes(other, 0, c) for c in lmc.CHILDREN}
        bufs = {c: buffer_of(other, 0, c) for c in lmc.CHILDREN}
        if strategy == "fresh":
            assert all(bufs[c].added == new[c] for c in lmc.CHILDREN)
            assert not {e.seed for e in bufs["A"].episodes} & set(seeds)
        elif strategy == "split":
            for c, half in zip(lmc.CHILDREN, (seeds[0::2], seeds[1::2])):
                assert bufs[c].added == len(half) + new[c]
                assert [e.seed for e in bufs[c].episodes][: len(half)] == half  # disjoint halves
        else:  # shared: B's buffer, saved last, holds the parent's and both children's episodes
            assert bufs["B"].added == added + new["A"] + new["B"]
            assert {e.seed for e in bufs["A"].episodes} < {e.seed for e in bufs["B"].episodes}


@pytest.mark.slow
def test_shared_pair_is_deterministic_and_identical_children_have_no_barrier(experiment, tmp_path, capsys):
    exp, _, _ = experiment
    runs = []
    for name in ("one", "two"):
        other = copy_experiment(exp, tmp_path / name, "shared")
        lmc.train_fork(other, 0, progress=False)
        runs.append(other)
    finals = [
        [load_checkpoint(r.child_folder(0, c) / "checkpoint_final.pt") for c in lmc.CHILDREN] for r in runs
    ]
    for c in range(2):
        assert state_equal(finals[0][c]["policy_state_dict"], finals[1][c]["policy_state_dict"])
    assert not state_equal(finals[0][0]["policy_state_dict"], finals[0][1]["policy_state_dict"])  # A ≠ B
    paths = [str(r.child_folder(0, "A") / "checkpoint_final.pt") for r in runs]
    summary = lmc.main(
        [
            "compare",
            "--a",
            paths[0],
            "--b",
            paths[1],
            "--alphas",
            "5",
            "--eval_episodes",
            "4",
            "--eval_envs",
            "2",
            "--heldout_episodes",
            "3",
            "--out",
            str(tmp_path / "same"),
        ]
    )
    row = summary["table"].iloc[0]
    assert (row["ce_barrier_line"], row["success_barrier_line"]) == (0.0, 0.0)
    for key in ("ce_barrier_line", "ce_barrier_mean", "success_barrier_line", "success_barrier_mean"):
        assert row[key] == 0.0 and row[f"{key}_ci_low"] <= 0.0 <= row[f"{key}_ci_high"], key
    assert (row["routing_js_mean"], row["routing_agreement_mean"]) == (0.0, 1.0)
    assert {p.name for p in (tmp_path / "same" / "fork_analysis").glob("*.png")} >= {"interp_fork_0.png"}
    # two different children of one fork: same call, nonzero routing distance
    other = lmc.compare(
        paths[0],
        str(runs[0].child_folder(0, "B") / "checkpoint_final.pt"),
        tmp_path / "ab",
        alphas=3,
        eval_episodes=4,
        eval_envs=2,
        heldout_episodes=3,
    )
    assert other["table"].iloc[0]["routing_js_mean"] > 0
    capsys.readouterr()


@pytest.mark.slow
def test_compare_refuses_other_levels_and_architectures(experiment, tmp_path, capsys):
    exp, _, _ = experiment
    path = exp.child_folder(0, "A") / "checkpoint_final.pt"
    ckpt = load_checkpoint(path)
    level = {**ckpt, "config": {**ckpt["config"], "task_id": "BabyAI-GoToLocal-v0"}}
    save_checkpoint(tmp_path / "level.pt", level)
    sd = dict(ckpt["policy_state_dict"])
    sd["head.weight"] = sd["head.weight"][:, :-1]
    save_checkpoint(tmp_path / "shape.pt", {**ckpt, "policy_state_dict": sd})
    sizes = {**ckpt, "config": {**ckpt["config"], "expert_hidden_sizes": [[0, 8, 32], [0, 8]]}}
    save_checkpoint(tmp_path / "sizes.pt", sizes)
    for bad, message in (
        ("level.pt", "compare one level"),
        ("shape.pt", "head.weight"),
        ("sizes.pt", "expert_hidden_sizes"),
    ):
        out = tmp_path / f"out_{bad}"
        argv = ["compare", "--a", str(path), "--b", str(tmp_path / bad), "--out", str(out)]
        assert message in one_line_exit_2(capsys, lambda argv=argv: lmc.main(argv))
        assert not out.exists()


@pytest.mark.slow
def test_a_started_experiment_is_refused_and_resume_completes_exactly_what_is_missing(
    experiment, tmp_path, capsys
):
    exp, _, _ = experiment
    moved = copy_experiment(exp, tmp_path / "r" / TASK / f"seed_{SEED}" / "copy")
    argv = [*TINY, *BUFFER, "--results_root", str(tmp_path / "r")]
    before = (moved.directory / "config.json").stat().st_mtime_ns
    assert "already holds an experiment" in one_line_exit_2(capsys, lambda: lmc.main(argv))
    assert "differs" in one_line_exit_2(capsys, lambda: lmc.main([*argv, "--resume", "--lr", "0.01"]))
    assert (moved.directory / "config.json").stat().st_mtime_ns == before
    # fork 1's child B is lost: analyze says so and analyses fork 0
    original = load_checkpoint(moved.child_folder(1, "B") / "checkpoint_final.pt")
    for p in moved.child_folder(1, "B").glob("*_*"):
        p.unlink()
    err = one_line_exit_2(capsys, lambda: lmc.main(["analyze", "--results_dir", str(moved.directory)]))
    assert "fork 1 (0.67, update 4) child B" in err and "analysed forks: 0" in err
    assert set(pd.read_csv(moved.directory / "interpolation.csv")["fork"]) == {0}
    kept = {
        p: p.stat().st_mtime_ns
        for p in [moved.evaluation_file(0), *moved.directory.glob("checkpoints/*/*/*/checkpoint_final.pt")]
    }
    # --resume (the strategy found on disk) trains only that child, from the fork: the same weights
    minimal = ["--config", str(TINY_PRESET), "--seed", str(SEED), "--results_root", str(tmp_path / "r")]
    summary = lmc.main([*minimal, "--resume", "--no_progress"])  # the rest from the stored experiment
    assert summary["trained"] == {"parent": "done", "0A": "done", "0B": "done", "1A": "done", "1B": "trained"}
    assert summary["evaluated"] == [1] and summary["missing"] == []
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items())
    again = load_checkpoint(moved.child_folder(1, "B") / "checkpoint_final.pt")
    assert state_equal(original["policy_state_dict"], again["policy_state_dict"])
    assert set(pd.read_csv(moved.directory / "interpolation.csv")["fork"]) == {0, 1}
    capsys.readouterr()


@pytest.mark.slow
def test_parallel_children_train_the_same_children(experiment, tmp_path):
    exp, _, _ = experiment
    summary = lmc.main([*TINY, *BUFFER, "--results_root", str(tmp_path), "--parallel_children", "2"])
    other = lmc.Experiment.load(summary["results_dir"])
    for k in (0, 1):
        for c in lmc.CHILDREN:
            a, b = (load_checkpoint(e.child_folder(k, c) / "checkpoint_final.pt") for e in (exp, other))
            assert state_equal(a["policy_state_dict"], b["policy_state_dict"]), (k, c)
    assert summary["analysed"] == [0, 1]


@pytest.mark.slow
def test_child_pairs_have_their_own_seeds_evaluations_and_summary(tmp_path):
    summary = lmc.main([*TINY, "--pairs", "2", "--results_root", str(tmp_path)])
    exp = lmc.Experiment.load(summary["results_dir"])
    assert exp.pairs == 2 and summary["analysed"] == [0, 1] and summary["missing"] == []
    # pair q of fork k: seeds S + 1 + 2(qF + k), S + 2 + 2(qF + k), all distinct, trial k + 1
    seeds = {(k, q, c): exp.child_seed(k, c, q) for k, q in exp.units() for c in lmc.CHILDREN}
    assert seeds[(1, 1, "A")] == SEED + 1 + 2 * (2 + 1) and len(set(seeds.values())) == 8
    assert seeds[(0, 0, "A")] == SEED + 1 and seeds[(1, 0, "B")] == SEED + 4  # pair 0: as before pairs
    for (k, q, c), seed in seeds.items():
        assert (exp.child_folder(k, c, q) / "checkpoint_final.pt").is_file()
        assert (
            exp.child_folder(k, c, q).parent.name == f"trial_{k + 1}"
            and exp.child_folder(k, c, q).name == f"seed_{seed}"
        )
    assert {job.get("pair", 0) for job in lmc.training_jobs(exp)} == {0, 1}
    d = exp.directory
    assert (d / "evaluations" / "fork_1_pair_1.csv").is_file() and (
        d / "evaluations" / "fork_1_pair_1.npz"
    ).is_file()
    interp, table = connectivity.load_results(d)
    assert sorted(set(zip(table["fork"], table["pair"]))) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert table["ce_barrier_line_ci_low"].notna().all() and table["success_drop_mid_p"].between(0, 1).all()
    forks, corr = connectivity.load_summaries(d)
    assert forks["n_pairs"].tolist() == [2, 2] and forks["success_drop_mid_ci_low"].notna().all()
    assert forks["ce_barrier_line_ci_low"].isna().all() and forks["note"].str.contains("withdrawn").all()
    first = table[table["fork"] == 0]["ce_barrier_mean"]
    assert forks["ce_barrier_mean"].iloc[0] == pytest.approx(first.mean())
    assert set(corr["unit"]) == {"forks", "pairs"} and set(corr[corr["unit"] == "pairs"]["n"]) == {4}
    # issue 40: the barrier test beside the percentile interval; 2 forks give no correlation test
    assert table["ce_barrier_line_p"].between(0, 1).all() and (table["ce_barrier_mean_t_ci_low"] >= 0).all()
    assert corr["p"].isna().all() and corr["note"].str.startswith("no test").all()
    assert {p.name for p in (d / "fork_analysis").glob("interp_fork_*")} == {
        "interp_fork_0.png",
        "interp_fork_0_pair_1.png",
        "interp_fork_1.png",
        "interp_fork_1_pair_1.png",
    }
    assert list(connectivity.pair_names(interp).values()) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    # --resume with another number of pairs is another experiment
    argv = [*TINY, "--pairs", "3", "--results_root", str(tmp_path), "--resume"]
    with pytest.raises(SystemExit):
        lmc.main(argv)


@pytest.mark.slow
def test_fork_point_zero_forks_the_initialisation(tmp_path):
    summary = lmc.main([*[a if a != "0.34,0.67" else "0" for a in TINY], "--results_root", str(tmp_path)])
    exp = lmc.Experiment.load(summary["results_dir"])
    assert exp.strategy == "fresh" and exp.fork_updates == [0]  # no buffer: fresh by default
    init = load_checkpoint(exp.parent_folder() / "checkpoint_0.pt")
    assert init["update"] == 0
    a, b = (load_checkpoint(exp.child_folder(0, c) / "checkpoint_final.pt") for c in lmc.CHILDREN)
    assert not state_equal(a["policy_state_dict"], b["policy_state_dict"])  # two runs from one init
    assert summary["analysed"] == [0]


# ----------------------------------------------------------------------------- Modal (offline)


class FakeFunction:
    """Stands in for a Modal Function: .remote/.spawn/.map run the body here."""

    def __init__(self, body):
        self.body, self.calls = body, []

    def remote(self, *args):
        self.calls.append(("remote", args))
        return self.body(*args)

    def spawn(self, *args):
        self.calls.append(("spawn", args))
        result = self.body(*args)
        return type("Call", (), {"get": lambda _self: result})()

    def map(self, *iterables, return_exceptions=False):
        self.calls.append(("map", iterables))
        return [self.body(*args) for args in zip(*iterables)]


class FakeVolume:
    def __init__(self):
        self.commits = self.reloads = 0

    def commit(self):
        self.commits += 1

    def reload(self):
        self.reloads += 1


MODAL_SET = (
    "num_envs=4 num_workers=0 unroll_len=8 num_updates=6 max_steps=8 intermediate_dim=16 router_hidden_size=8 "
    "expert_hidden_sizes=[[0,8],[0,8]] lang_dim=8 path_ratio_fraction=0.0 checkpoint_interval=3 log_interval=3"
)
MODAL_SETTINGS = {"fork_points": "0.34,0.67", "alphas": 3, "eval_episodes": 4, "heldout_episodes": 3}


@pytest.mark.slow
def test_modal_lmc_runs_its_bodies_here_parent_then_children_in_parallel(tmp_path, monkeypatch, capsys):
    modal_app = pytest.importorskip("modal_app", reason="the Modal client is not installed")
    spec = modal_app.lmc_spec(
        TASK, 5, {**MODAL_SETTINGS, "fork_buffer_strategy": "shared"}, MODAL_SET + " buffer_episodes=50"
    )
    volume, commits = FakeVolume(), []
    train = FakeFunction(lambda d, job: modal_app._lmc_train_body(d, job, commit=lambda: commits.append(1)))
    evaluate = FakeFunction(modal_app._lmc_eval_body)
    result = modal_app._lmc_experiment_body(spec, str(tmp_path), train, evaluate, volume)
    assert result["errors"] == [] and result["missing"] == [] and result["analysed"] == [0, 1]
    assert result["trained"] == {"parent": "trained", **{f"{k}{c}": "trained" for k in (0, 1) for c in "AB"}}
    kinds = [(kind, args[1]) for kind, args in train.calls]
    assert kinds[0] == ("remote", {"fork": None})  # the parent first, in its own container
    # shared: one container per fork pair
    assert kinds[1:] == [
        ("spawn", {"fork": 0, "children": ["A", "B"]}),
        ("spawn", {"fork": 1, "children": ["A", "B"]}),
    ]
    assert evaluate.calls[0][0] == "map" and list(evaluate.calls[0][1][1]) == [0, 1]
    assert commits and volume.commits >= 3
    exp = lmc.Experiment.load(result["results_dir"])
    assert exp.directory == tmp_path / TASK / "seed_5" / "shared" and exp.train["num_workers"] == 0
    assert len(result["figures"]) == 5
    # a re-run of the same command trains and evaluates nothing
    again = modal_app._lmc_experiment_body(spec, str(tmp_path), train, evaluate, volume)
    assert set(again["trained"].values()) == {"done"}
    # another setting for the same experiment is refused
    changed = modal_app.lmc_spec(
        TASK,
        5,
        {**MODAL_SETTINGS, "alphas": 5, "fork_buffer_strategy": "shared"},
        MODAL_SET + " buffer_episodes=50",
    )
    with pytest.raises(lmc.LMCError, match="alphas"):
        modal_app._lmc_experiment_body(changed, str(tmp_path), train, evaluate, volume)
    capsys.readouterr()


def test_modal_lmc_entrypoint_checks_everything_here(monkeypatch, capsys):
    modal = pytest.importorskip("modal", reason="the Modal client is not installed")
    from modal.cli.run import _get_click_command_for_local_entrypoint as command

    import modal_app

    assert isinstance(modal_app.lmc, modal.app.LocalEntrypoint)
    assert modal_app.lmc_volume.name == "rl-mop-lmc"
    spec = modal_app.lmc_train._spec_
    assert {p: v.name for p, v in spec.volumes.items()} == {
        modal_app.LMC_ROOT: "rl-mop-lmc"
    } and spec.cpu == modal_app.TRAIN_CPUS
    args = [
        "--task-id",
        "BabyAI-GoToLocal-v0",
        "--seed",
        "42",
        "--fork-points",
        "0.1,0.5",
        "--fork-buffer-strategy",
        "copy",
        "--set",
        "buffer_episodes=2000",
        "--alphas",
        "21",
        "--num-updates",
        "2000",
    ]
    params = command(modal_app.app, modal_app.lmc).make_context("modal run", args).params
    assert (params["task_id"], params["seed"], params["alphas"], params["set"]) == (
        "BabyAI-GoToLocal-v0",
        42,
        21,
        "buffer_episodes=2000",
    )
    launched = FakeFunction(
        lambda spec: {"results_dir": "x", "errors": [], "missing": [], "analysed": [0], "figures": []}
    )
    monkeypatch.setattr(modal_app, "lmc_experiment", launched)
    modal_app.lmc(**params)
    sent = launched.calls[0][1][0]
    assert sent["overrides"]["buffer_episodes"] == 2000 and sent["overrides"]["num_workers"] == 4
    assert sent["settings"]["fork_buffer_strategy"] == "copy" and "alphas" in sent["given"]
    for bad, message in (
        ({"fork_buffer_strategy": "copy"}, "needs the DAgger buffer"),
        ({"set": "seed=3"}, "--set seed"),
        ({"fork_points": "0.5,0.1"}, "sorted"),
        ({"set": "lr=-1"}, "lr"),
    ):
        kwargs = {**params, "set": "", "fork_buffer_strategy": "fresh", **bad}
        assert message in one_line_exit_2(capsys, lambda kwargs=kwargs: modal_app.lmc(**kwargs))
    assert len(launched.calls) == 1  # nothing else was launched


# ----------------------------------------------------------------------------- the notebook


def notebook_env(root: Path) -> dict:
    return {"LMC_RESULTS_DIR": str(root), "MPLBACKEND": "Agg"}


@pytest.mark.slow
def test_lmc_viz_runs_as_a_script_and_builds_its_figures(experiment, monkeypatch):
    from test_notebooks import run_notebook, subprocess_env

    _, _, root = experiment
    out = subprocess.run(
        [sys.executable, str(ROOT / "lmc_viz.py")],
        cwd=ROOT,
        env=subprocess_env(notebook_env(root)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr[-3000:]
    defs = run_notebook("lmc_viz.py", notebook_env(root), monkeypatch)
    assert list(defs["experiments"]) == [f"{TASK} · seed {SEED} · copy"]
    assert list(defs["forks"]) == ["fork 0: 0.34 · update 2", "fork 1: 0.67 · update 4"]
    assert isinstance(defs["fig_fork"], Figure) and len(defs["table"]) == 2


def test_lmc_viz_without_experiments_says_how_to_make_one(tmp_path, monkeypatch):
    from test_notebooks import run_notebook

    outputs, defs = run_notebook("lmc_viz.py", notebook_env(tmp_path), monkeypatch, with_outputs=True)
    assert "interp" not in defs
    assert "python lmc.py" in " ".join(getattr(o, "text", "") for o in outputs if o is not None)


@pytest.mark.browser
def test_browser_lmc_viz_follows_the_chosen_fork(experiment, tmp_path):
    from test_notebooks import (
        PNG,
        dropdown,
        launch,
        marimo_errors,
        marimo_server,
        open_page,
        png_sources,
        skip_without_chromium,
        wait_for_pngs,
    )

    skip_without_chromium()
    from playwright.sync_api import sync_playwright

    _, _, root = experiment
    log = tmp_path / "marimo_run.log"
    with marimo_server("lmc_viz.py", notebook_env(root), log) as url, sync_playwright() as p:
        browser = launch(p)
        try:
            page = open_page(browser, url)
            # instability, routing agreement, all interpolations, the chosen fork
            wait_for_pngs(page, [], 4, 4)
            assert min(page.eval_on_selector_all(PNG, "imgs => imgs.map(i => i.naturalWidth)")) > 300
            page.get_by_text("ce_barrier_line").first.wait_for(timeout=30_000)
            assert marimo_errors(page, log) == []
            old = png_sources(page)
            dropdown(page, "fork 1: 0.67 · update 4").select_option(label="fork 1: 0.67 · update 4")
            wait_for_pngs(page, old, 4, 1)  # only the fork's figure is redrawn
            page.screenshot(path=str(tmp_path / "lmc_viz.png"), full_page=True)
            print(f"screenshot: {tmp_path / 'lmc_viz.png'}")
            assert marimo_errors(page, log) == []
        finally:
            browser.close()
    assert (tmp_path / "lmc_viz.png").stat().st_size > 10_000
