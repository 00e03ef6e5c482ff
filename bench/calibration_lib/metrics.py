"""Calibration entries for the intervals and family tests a previous audit left unmeasured,
registered in bench/calibration.py's ENTRIES (which runs and reports them; see its docstring):
stats.py's across-run intervals of LPC, policy complexity and the path ratio
(metrics_by_alpha.csv / metrics_by_update.csv: inference.metrics_by_alpha, scalar_ci), the
path-ratio contrast's ratio interval (contrasts.csv: contrasts.paired_difference), LMC's forks.csv
interval across a fork's child pairs (connectivity.fork_summary, each pair's barrier from
lmc_stats.barrier_line), generative_analysis's `vs_control` p and its Holm over targets
(generative_probes.verdicts) and causal.py's `layout_p_holm` (Holm over causal_effects.csv's
per-layout exact tests: causal.paired_layout_effect, causal.effects_table). Each entry calls the
function the tool calls, on the table the tool hands it. One layout_p alone is contrasts.exact_paired
on one network evaluated twice: bench/calibration.py's mcnemar_same_network, not repeated here.

    python bench/calibration.py --draws 1000 --only across_runs_path_ratio_coverage,fork_barrier_at_0_2_pairs --merge
    python bench/calibration.py --draws 200 --only causal_layout_holm_familywise --out /tmp/c.md
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import pandas as pd
from calibration_lib.entry import ALPHA, SEEDS, Entry, covers, rejects
from scipy import integrate, stats

# ----------------------------------------------------------------------------- metrics across runs

LPC_MEAN, LPC_SD = 400.0, 60.0  # a run's mean LPC per step (the GoToLocal sweep's range)
COMPLEXITY_MEAN = 0.1  # bits: a policy complexity near 0, where the interval's clip at 0 bites
PATH_SHAPE, PATH_SCALE = 2.0, 0.2  # a run's path ratio: 1 + Gamma(2, 0.2) (mean 1.4, skewed right)
COMPLEXITY_SD = 0.04  # bits: normal runs' spread near 0 (the interval's low end below 0 in some draws)
PATH_GEOMETRIC, PATH_LOG_SD = 1.35, 0.15  # lognormal runs' path ratio: geometric mean, sd of the log
PATH_STRETCH = 1.5  # recipe B's path excess over the bot, x A's (the contrast's known ratio)
SEED_SD = 0.1  # a seed's shared log path ratio (both recipes' runs of one seed alike)


@functools.cache
def geometric_mean_path(stretch: float = 1.0) -> float:
    """exp(E log(1 + stretch X)), X ~ Gamma(PATH_SHAPE, PATH_SCALE): the estimand of an interval
    of the mean log path ratio (the runs' geometric mean), by quadrature."""
    pdf = stats.gamma(PATH_SHAPE, scale=PATH_SCALE).pdf
    mean_log, _ = integrate.quad(lambda x: math.log1p(stretch * x) * pdf(x), 0.0, math.inf)
    return math.exp(mean_log)


def runs_table(rng: np.random.Generator, complexity_shape: float, normal: bool = False) -> pd.DataFrame:
    """stats.py's table of one condition's SEEDS runs at one update: success on 500 layouts, mean
    LPC N(LPC_MEAN, LPC_SD), policy complexity Gamma(complexity_shape) with mean COMPLEXITY_MEAN
    (skewed, never negative), path ratio 1 + Gamma(PATH_SHAPE, PATH_SCALE). normal: the shapes the
    intervals assume instead (`assumes`): complexity N(COMPLEXITY_MEAN, COMPLEXITY_SD) and a log
    path ratio N(log PATH_GEOMETRIC, PATH_LOG_SD)."""
    k = rng.binomial(500, 0.8, SEEDS)
    if normal:
        complexity = rng.normal(COMPLEXITY_MEAN, COMPLEXITY_SD, SEEDS)
        path = np.exp(rng.normal(math.log(PATH_GEOMETRIC), PATH_LOG_SD, SEEDS))
    else:
        complexity = rng.gamma(complexity_shape, COMPLEXITY_MEAN / complexity_shape, SEEDS)
        path = 1.0 + rng.gamma(PATH_SHAPE, PATH_SCALE, SEEDS)
    return pd.DataFrame(
        {"trial": 0, "seed": np.arange(SEEDS), "update": 1000, "lpc_alpha": 0.1}
        | {"success_rate": k / 500, "successes": k, "num_episodes": 500}
        | {"mean_lpc": rng.normal(LPC_MEAN, LPC_SD, SEEDS)}
        | {"policy_complexity": complexity, "path_ratio": path}
    )


def metrics_draw(metric: str, complexity_shape: float = 2.0, normal: bool = False) -> Any:
    truth = {"mean_lpc": LPC_MEAN, "policy_complexity": COMPLEXITY_MEAN}.get(metric)
    if truth is None:
        truth = PATH_GEOMETRIC if normal else geometric_mean_path()

    def simulate(rng: np.random.Generator) -> tuple:
        return runs_table(rng, complexity_shape, normal), truth

    return simulate


def metric_row(table: pd.DataFrame, metric: str) -> pd.Series:
    """metrics_by_alpha.csv's row of the metric; RuntimeError unless it is over SEEDS runs."""
    from mop import inference

    rows = inference.metrics_by_alpha(table)
    row = rows[rows["metric"] == metric].iloc[0]
    if row["n"] != SEEDS:
        raise RuntimeError(f"metrics_by_alpha's {metric} row is over {row['n']} runs")
    return row


def metric_covers(metric: str) -> Any:
    def run(table: pd.DataFrame, truth: float) -> bool:
        row = metric_row(table, metric)
        return covers(row["ci_low"], row["ci_high"], truth)

    return run


def paired_paths(rng: np.random.Generator) -> tuple:
    """contrasts.csv's path_ratio pairs, seed by seed: A's run exp(u)(1 + X), B's exp(u)(1 +
    PATH_STRETCH X'), u ~ N(0, SEED_SD) shared by a seed's two runs. Truth: the ratio of the
    recipes' geometric means."""
    u = rng.normal(0.0, SEED_SD, SEEDS)
    a = np.exp(u) * (1.0 + rng.gamma(PATH_SHAPE, PATH_SCALE, SEEDS))
    b = np.exp(u) * (1.0 + PATH_STRETCH * rng.gamma(PATH_SHAPE, PATH_SCALE, SEEDS))
    return (a, b), geometric_mean_path(PATH_STRETCH) / geometric_mean_path()


def ratio_covers(pairs: tuple, truth: float) -> bool:
    from mop import contrasts

    out = contrasts.paired_difference(*pairs, "path_ratio")
    if out["scale"] != "ratio" or out["n"] != SEEDS:
        raise RuntimeError(f"paired_difference gave {out['scale']} over {out['n']} pairs")
    return covers(out["ci_low"], out["ci_high"], truth)


# ----------------------------------------------------------------------------- LMC forks

ALPHAS = np.linspace(0.0, 1.0, 11)  # connectivity's interpolation grid
FORK_PAIRS = 2  # lmc.py's default children per fork: 2 pairs
CE_NOISE = 0.004  # held-out CE's noise at one α (per-episode sd 0.04 over 100 episodes)
BARRIER_MEAN, BARRIER_SHAPE = 0.05, 2.0  # a pair's true barrier: Gamma, mean 0.05 nats (skewed)


def fork_pairs(rng: np.random.Generator, barrier_mean: float) -> tuple:
    """forks.csv's input, one fork: FORK_PAIRS child pairs, each with its own true barrier h
    (Gamma(BARRIER_SHAPE) with mean barrier_mean; 0 when barrier_mean is 0), a held-out CE curve
    2.0 + h 4α(1 - α) + N(0, CE_NOISE) at each α, and its measured barrier lmc_stats.barrier_line
    (never negative). Truth: barrier_mean, the fork's expected barrier."""
    from mop import lmc_stats

    rows = []
    for pair in range(FORK_PAIRS):
        h = rng.gamma(BARRIER_SHAPE, barrier_mean / BARRIER_SHAPE) if barrier_mean else 0.0
        curve = 2.0 + h * 4 * ALPHAS * (1 - ALPHAS) + rng.normal(0.0, CE_NOISE, len(ALPHAS))
        rows.append({"fork": 0, "fork_point": 0.5, "fork_update": 100, "pair": pair})
        rows[-1]["ce_barrier_line"] = lmc_stats.barrier_line(ALPHAS, curve, 1.0).height
    return pd.DataFrame(rows), barrier_mean


FORK_WITHDRAWN = (
    "withdrawn: forks.csv gives the barriers' mean over pairs without an interval (its note says why); "
    "each pair's barrier > 0 test and simultaneous t interval decide"
)


def fork_covers(table: pd.DataFrame, truth: float) -> bool:
    """The interval forks.csv printed before it was withdrawn: the 95% t across the fork's pairs
    (lmc_stats.across_pairs), clipped at 0 (connectivity.fork_summary now leaves it NaN)."""
    from mop import lmc_stats

    if len(table) != FORK_PAIRS:
        raise RuntimeError(f"the fork has {len(table)} pairs")
    _, low, high = lmc_stats.across_pairs(table["ce_barrier_line"])
    return covers(max(low, 0.0), high, truth)


# ----------------------------------------------------------------------------- generative vs control

TARGETS, CONTEXTS = 9, 16  # generative_analysis maximise --target all; its report contexts
CONTEXT_SD, TARGET_SD = 0.02, 0.01  # a context's change shared by every target, and each one's own


def vs_control_null(rng: np.random.Generator) -> tuple:
    """maximise's per-context soft changes of TARGETS targets and the control (last row), on the
    same CONTEXTS contexts: a context's change N(0, CONTEXT_SD) shared by all, each target's own
    N(0, TARGET_SD). No target differs from the control (truth 0)."""
    shared = rng.normal(0.0, CONTEXT_SD, CONTEXTS)
    return shared + rng.normal(0.0, TARGET_SD, (TARGETS + 1, CONTEXTS)), 0.0


def vs_control_rows(changes: np.ndarray) -> list[dict]:
    """probes.verdicts's rows of maximise (targets and the control), their vs_control filled in."""
    from mop import generative_probes as probes

    runs = [
        {"target": f"t{i}", "role": "target" if i < TARGETS else "control", "mode": "typical"}
        | probes.change_summary(c, c)
        for i, c in enumerate(changes)
    ]
    rows = [r for r in probes.verdicts(runs) if r["role"] == "target"]
    if len(rows) != TARGETS or not all("vs_control_p_holm" in r for r in rows):
        raise RuntimeError("verdicts gave no vs_control for every target")
    return rows


def vs_control_one_rejects(changes: np.ndarray, truth: Any) -> bool:
    return rejects(vs_control_rows(changes)[0]["vs_control_p"])


def vs_control_any_holm(changes: np.ndarray, truth: Any) -> bool:
    return any(rejects(r["vs_control_p_holm"]) for r in vs_control_rows(changes))


def vs_control_any_unadjusted(changes: np.ndarray, truth: Any) -> bool:
    return any(rejects(r["vs_control_p"]) for r in vs_control_rows(changes))


# ----------------------------------------------------------------------------- causal.py per layout

CAUSAL_SIZES = [[0, 16, 32]] * 3  # 3 layers x 3 experts
INTERVENTIONS = ("zero", "route_around", "swap")
CAUSAL_LAYOUTS = 100  # headline.py --causal_episodes


def played(rng: np.random.Generator, q: np.ndarray) -> pd.DataFrame:
    """causal.layouts of one evaluation on CAUSAL_LAYOUTS layouts: success ~ Bernoulli(q) per
    layout (sampled actions), a failure runs the 64-step limit."""
    from mop import causal

    n = len(q)
    success = rng.random(n) < q
    length = np.where(success, rng.integers(5, 30, n), 64)
    episodes = {"seed": np.arange(n), "episode": np.arange(n), "success": success, "length": length}
    episodes |= {"optimal_length": np.full(n, 5.0), "mean_lpc": rng.normal(400.0, 50.0, n)}
    return causal.layouts(pd.DataFrame(episodes))  # one frame: the same draws in the same order


def causal_null(rng: np.random.Generator) -> tuple:
    """causal_effects.csv of SEEDS runs x 9 experts x 3 interventions x causal.METRICS (324 rows,
    81 of them success with a per-layout exact test): a run's layout success probability q ~
    U(0.3, 1) and every intervention leaves it as it is (one intact evaluation per run, one per
    intervention, on the same layouts). Truth: no intervention changes success. The success rows
    are causal.paired_layout_effect's; the other metrics' rows carry what it gives them for the
    test (no layout_p), so effects_table's Holm family is the tool's 324 rows."""
    from mop import causal
    from mop.subgoal_analysis import max_lpc

    top, rows = max_lpc(CAUSAL_SIZES), []
    for seed in range(SEEDS):
        q = rng.uniform(0.3, 1.0, CAUSAL_LAYOUTS)
        intact = played(rng, q)
        head = {"run": f"trial_0/seed_{seed}", "condition": "c0", "condition_label": "c0", "seed": seed}
        for k, sizes in enumerate(CAUSAL_SIZES):
            for j, size in enumerate(sizes):
                for n, kind in enumerate(INTERVENTIONS):
                    arm = played(rng, q)
                    where = head | {"layer": k, "expert": j, "expert_size": size, "intervention": kind}
                    effect = causal.paired_layout_effect(intact, arm, "success_rate", top, seed * 100 + n)
                    effect.pop("note")
                    rows.append(where | {"metric": "success_rate"} | effect)
                    # the other metrics' rows: no exact test (layout_p NaN, p = 1 in the Holm family);
                    # their bootstrap intervals are not what this entry measures, so not drawn
                    rows += [where | {"metric": m, "layouts": CAUSAL_LAYOUTS} for m in causal.METRICS[1:]]
    return causal.effects_table(rows), 0.0


def layout_tests(effects: pd.DataFrame) -> pd.DataFrame:
    """causal_effects.csv's success rows; RuntimeError unless each of the 81 has its exact p."""
    success = effects[effects["metric"] == "success_rate"]
    if len(success) != SEEDS * 27 or not np.isfinite(success["layout_p"]).all():
        raise RuntimeError(f"effects_table holds {len(success)} tested success rows")
    return success


def layout_holm_any(effects: pd.DataFrame, truth: Any) -> bool:
    return bool((layout_tests(effects)["layout_p_holm"] < ALPHA).any())


# The skewed rows' verdict: the table prints what the interval assumes (inference.ASSUMES), and it
# holds its 95% where that holds (across_runs_lpc_coverage); at 3 runs no interval of a mean holds
# under every shape (Bahadur & Savage 1956), so these rows measure the cost of a broken assumption.
STATED = (
    "stated: metrics_by_alpha.csv's `assumes` column and the figure name the normal runs it rests "
    "on (holds then: across_runs_complexity_normal_coverage, across_runs_path_ratio_lognormal_coverage)"
)

# fmt: off
RUNS = f"{SEEDS} runs"
ENTRIES: list[Entry] = [
    Entry("across_runs_lpc_coverage", "metrics_by_alpha.csv / metrics_by_update.csv mean_lpc ci_low/high (95% t "
          "over 3 runs, clipped at 0; stats.py, inference.scalar_ci)", "coverage", 0.95, "coverage",
          metrics_draw("mean_lpc"), metric_covers("mean_lpc"),
          f"{RUNS}; a run's LPC N({LPC_MEAN:g}, {LPC_SD:g}); truth {LPC_MEAN:g}"),
    Entry("across_runs_complexity_normal_coverage", "metrics_by_alpha.csv policy_complexity ci_low/high (95% t "
          "over 3 runs, clipped at 0) near 0, runs as its `assumes` says", "coverage", 0.95, "coverage",
          metrics_draw("policy_complexity", normal=True), metric_covers("policy_complexity"),
          f"{RUNS}; a run's I(S;A) N({COMPLEXITY_MEAN:g}, {COMPLEXITY_SD:g}) bits; truth {COMPLEXITY_MEAN:g}"),
    Entry("across_runs_path_ratio_lognormal_coverage", "metrics_by_alpha.csv path_ratio ci_low/high (95% t of "
          "the runs' mean log), runs as its `assumes` says", "coverage", 0.95, "coverage",
          metrics_draw("path_ratio", normal=True), metric_covers("path_ratio"),
          f"{RUNS}; a run's log path ratio N(log {PATH_GEOMETRIC:g}, {PATH_LOG_SD:g}); truth {PATH_GEOMETRIC:g}"),
    Entry("across_runs_complexity_skewed_coverage", "metrics_by_alpha.csv policy_complexity ci_low/high (95% t "
          "over 3 runs, clipped at 0) near 0, its `assumes` (normal runs) broken", "coverage", 0.95, "assumption",
          metrics_draw("policy_complexity", 2.0), metric_covers("policy_complexity"),
          f"{RUNS}; a run's I(S;A) Gamma(shape 2), mean {COMPLEXITY_MEAN:g} bits (the t interval's low end "
          "below 0 in most draws); truth its mean", outcome=STATED),
    Entry("across_runs_complexity_exponential_coverage", "the same interval when the runs' complexity is "
          "exponential (more skewed)", "coverage", 0.95, "assumption",
          metrics_draw("policy_complexity", 1.0), metric_covers("policy_complexity"),
          f"{RUNS}; a run's I(S;A) Exponential, mean {COMPLEXITY_MEAN:g} bits; truth its mean", outcome=STATED),
    Entry("across_runs_path_ratio_coverage", "metrics_by_alpha.csv path_ratio ci_low/high (95% t of the runs' "
          "mean log, shown back: the geometric mean), its `assumes` (normal logs) broken", "coverage", 0.95,
          "assumption", metrics_draw("path_ratio"), metric_covers("path_ratio"),
          f"{RUNS}; a run's path ratio 1 + Gamma(2, 0.2) (its log skewed right); truth exp(E log) = "
          f"{geometric_mean_path():.4f}", outcome=STATED),
    Entry("contrast_path_ratio_coverage", "contrasts.csv path_ratio ci_low/high (paired t of the seeds' log "
          "ratio B/A, shown as a ratio; contrasts.paired_difference)", "coverage", 0.95, "coverage",
          paired_paths, ratio_covers,
          f"{RUNS} per recipe, paired by seed (shared N(0, {SEED_SD:g}) in log); A 1 + Gamma(2, 0.2), B 1 + "
          f"{PATH_STRETCH:g} x Gamma(2, 0.2); truth {geometric_mean_path(PATH_STRETCH) / geometric_mean_path():.4f}"),
    Entry("fork_barrier_coverage_2_pairs", "forks.csv ce_barrier_line_ci_low/high as printed before its "
          "withdrawal (95% t over a fork's 2 child pairs, clipped at 0)", "coverage", 0.95, "coverage",
          lambda rng: fork_pairs(rng, BARRIER_MEAN), fork_covers,
          f"a pair's true barrier Gamma(shape 2), mean {BARRIER_MEAN:g} nats; CE at 11 α with noise "
          f"N(0, {CE_NOISE:g}); truth {BARRIER_MEAN:g}", outcome=FORK_WITHDRAWN),
    Entry("fork_barrier_at_0_2_pairs", "the same interval when no pair has a barrier (each measured barrier "
          "is the max of the noise: never negative)", "coverage", 0.95, "coverage",
          lambda rng: fork_pairs(rng, 0.0), fork_covers,
          f"every pair's true barrier 0; CE at 11 α with noise N(0, {CE_NOISE:g}); truth 0", outcome=FORK_WITHDRAWN),
    Entry("generative_vs_control_one_null", "generative maximise vs_control_p: one target (paired t over 16 "
          "contexts of its change minus the control's; probes.verdicts)", "rejection", ALPHA, "null",
          vs_control_null, vs_control_one_rejects,
          "9 targets + the control on 16 shared contexts, no target differs from the control"),
    Entry("generative_vs_control_holm_familywise", "generative maximise vs_control_p_holm: any of 9 targets "
          "below 0.05 (Holm over the targets)", "rejection", ALPHA, "null", vs_control_null,
          vs_control_any_holm, "9 targets + the control on 16 shared contexts, no target differs"),
    Entry("generative_vs_control_any_unadjusted", "the same 9 vs_control tests, each at its own p",
          "rejection", ALPHA, "pseudo", vs_control_null, vs_control_any_unadjusted,
          "9 targets + the control, no target differs"),
    Entry("causal_layout_holm_familywise", "causal_effects.csv layout_p_holm: any of the 81 success tests "
          "below 0.05 (Holm over the table's 324 rows, untested ones as p = 1; causal.effects_table)",
          "rejection", ALPHA, "null", causal_null, layout_holm_any,
          "3 runs x 9 experts x 3 interventions; layout success q ~ U(0.3, 1), unchanged by any", cost=8),
]
# fmt: on
