"""A command line refuses a bad flag, a bad config value or an unknown level, and prints --help,
before it imports torch, pandas, matplotlib or minigrid (issue 43: 37-44 s on a loaded box before a
one-line error). Each case runs the script as `python <script> ...` would, in a fresh interpreter,
and reads which heavy modules it had imported when it exited."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "pandas", "matplotlib", "minigrid", "gymnasium", "scipy", "pyarrow")

PROBE = """
import json, runpy, sys
sys.argv = {argv!r}
code = 0
try:
    runpy.run_path({script!r}, run_name="__main__")
except SystemExit as e:
    code = e.code
print(json.dumps({{"code": code, "heavy": [m for m in {heavy!r} if m in sys.modules]}}), file=sys.__stderr__)
"""

CASES = [
    ("train_mop.py", ["--help"], 0, None),
    ("train_mop.py", ["--bogus"], 2, "unrecognized arguments"),
    ("train_mop.py", ["--task_id", "BabyAI-GoTooLocal-v0"], 2, "did you mean BabyAI-GoToLocal-v0"),
    ("train_mop.py", ["--num_envs", "0"], 2, "num_envs must be positive"),
    ("train_mop.py", ["--expert_hidden_sizes", "[[0,x]]"], 2, "expert"),
    ("train.py", ["--help"], 0, None),
    ("train.py", ["--lr", "-1"], 2, "lr must be a positive number"),
    ("batch_eval.py", ["--help"], 0, None),
    ("batch_eval.py", ["--num_episodes", "0"], 2, "--num_episodes must be"),
    ("batch_eval.py", ["--eval_task_id", "BabyAI-Nope-v0"], 2, "unknown task_id"),
    ("batch_eval.py", ["--knockout", "layer_x"], 2, "--knockout"),
    ("eval_mop.py", ["--help"], 0, None),
    ("eval_mop.py", ["--checkpoint", "x.pt", "--num_episodes", "0"], 2, "--num_episodes must be"),
    ("eval_mop.py", ["--checkpoint", "x.pt", "--task_id", "BabyAI-Nope-v0"], 2, "unknown task_id"),
    ("stats.py", ["--help"], 0, None),
    ("stats.py", ["--task_id", "BabyAI-GoToLocal-v0", "--min_visits", "x"], 2, "--min_visits"),
    ("render_plots.py", ["--help"], 0, None),
    ("render_plots.py", ["--layout", "poster"], 2, "--layout"),
    ("headline.py", ["--help"], 0, None),
    ("headline.py", ["--episodes", "0"], 2, "--episodes"),
    ("lmc.py", ["--help"], 0, None),
    ("lmc.py", ["analyze", "--help"], 0, None),
    ("lmc.py", ["compare", "--help"], 0, None),
    ("lmc.py", ["--bogus"], 2, "unrecognized arguments"),
    ("lmc.py", ["--task_id", "BabyAI-Nope-v0"], 2, "unknown task_id"),
    ("lmc.py", ["--trial", "2"], 2, "--trial is set by lmc.py"),
    ("lmc.py", ["--parallel_children", "0"], 2, "--parallel_children must be at least 1"),
    ("lmc.py", ["analyze", "--results_dir", "x", "--bootstrap", "5"], 2, "--bootstrap must be"),
    ("lmc.py", ["compare", "--a", "x"], 2, "--b"),
    ("causal.py", ["--help"], 0, None),
    ("causal.py", ["--runs", "x", "--interventions", "zap"], 2, "--interventions 'zap'"),
    ("causal.py", ["--runs", "x", "--episodes", "0"], 2, "--episodes must be"),
    ("attribution.py", ["--help"], 0, None),
    ("attribution.py", ["--checkpoint", "x", "--step", "3", "--window", "5"], 2, "--window 5"),
    ("demos.py", ["--help"], 0, None),
    ("demos.py", ["--task_id", "BabyAI-Nope-v0", "--demos", "3"], 2, "unknown task_id"),
    ("demos.py", ["--task_id", "BabyAI-GoToLocal-v0", "--demos", "0"], 2, "--demos must be"),
    ("record.py", ["--help"], 0, None),
    ("record.py", ["--checkpoint", "x", "--num_envs", "0"], 2, "--num_envs must be"),
    ("record.py", ["--checkpoint", "x", "--device", "gpu"], 2, "--device must be"),
    ("train_generative.py", ["--help"], 0, None),
    ("train_generative.py", ["--dataset", "x", "--lr", "0"], 2, "--lr must be"),
    ("generative_analysis.py", ["--help"], 0, None),
    ("generative_analysis.py", ["--model", "x", "--analysis", "maximise"], 2, "needs --target"),
    ("generative_analysis.py", ["--model", "x", "--analysis", "pca", "--modes", "x"], 2, "--modes"),
    ("failures.py", ["--help"], 0, None),
    ("failures.py", ["--checkpoint", "x", "--num_episodes", "0"], 2, "--num_episodes must be"),
    ("memory_probe.py", ["--help"], 0, None),
    ("memory_probe.py", ["--checkpoint", "x", "--num_episodes", "3"], 2, "--num_episodes must be >= 4"),
]


@pytest.mark.parametrize(
    ("script", "argv", "code", "message"), CASES, ids=[f"{c[0]} {' '.join(c[1])}" for c in CASES]
)
def test_a_command_answers_before_its_heavy_imports(script, argv, code, message, tmp_path):
    probe = PROBE.format(argv=[script, *argv], script=str(ROOT / script), heavy=HEAVY)
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    report = json.loads(done.stderr.strip().splitlines()[-1])
    assert report["code"] == code, done.stderr
    assert report["heavy"] == [], f"{script} {argv} imported {report['heavy']} before answering"
    if message is None:
        assert "usage:" in done.stdout
    else:
        errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and message in errors[0], done.stderr


def test_the_level_names_are_the_installed_minigrids():
    """mop.level_names lists BabyAI's ids without importing minigrid; an upgrade that adds or drops
    a level fails here, not in a run."""
    import gymnasium as gym
    import minigrid  # noqa: F401  (registers the BabyAI-* ids)

    from mop.level_names import BABYAI_LEVELS

    assert sorted(BABYAI_LEVELS) == sorted(k for k in gym.registry if k.startswith("BabyAI-"))


def test_the_light_parsers_name_what_the_heavy_modules_define():
    """mop.cli_specs and mop.cli_specs spell the constants of heavy modules their parsers and
    checks use (stats.py's --state choices and --min_visits default, the figure layouts, causal.py's
    interventions, metrics and permutations, attribution.py's baselines, generative_analysis.py's
    maximise modes, lmc.py's commands) without importing them; they must stay the modules' own."""
    import lmc
    import mixture_of_experts
    import seed_metrics
    import stats
    from mop import attribution, causal, cli_specs, generative_probes, plot_style

    assert list(cli_specs.STATS_STATES) == list(stats.STATES)
    assert cli_specs.STATS_MIN_VISITS == seed_metrics.MIN_VISITS
    assert tuple(cli_specs.LAYOUTS) == tuple(plot_style.LAYOUTS)
    assert tuple(cli_specs.CAUSAL_INTERVENTIONS) == tuple(mixture_of_experts.INTERVENTIONS)
    assert tuple(cli_specs.CAUSAL_METRICS) == tuple(causal.METRICS)
    assert cli_specs.CAUSAL_PERMUTATIONS == causal.PERMUTATIONS
    assert tuple(cli_specs.ATTRIBUTION_BASELINES) == tuple(attribution.BASELINES)
    assert tuple(cli_specs.GENERATIVE_MODES) == tuple(generative_probes.MODES)
    assert set(cli_specs.LMC_COMMANDS) == set(lmc.COMMANDS)
