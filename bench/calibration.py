"""Calibration, measured: every test and interval the tool prints, run by simulation on data whose
truth is known, with the project's own functions (mop/inference.py, mop/contrasts.py,
mop/lmc_stats.py, mop/connectivity.py, mop/generative_probes.py, eval_mop's Wilson interval; the
analyses across runs of routing and its causes are bench/calibration_lib/analyses.py's entries;
LPC by level, level pairs, causal.py's summary and attribution shares bench/calibration_lib/tables.py's;
metrics across runs, path-ratio contrasts, LMC forks, generative vs_control and causal.py's
per-layout Holm bench/calibration_lib/metrics.py's; memory_probe.py's gains
bench/calibration_lib/memory_probes.py's).
Writes docs/calibration.md: per entry the nominal rate, the measured rate with its Monte-Carlo 95%
Wilson interval, the draws, the command and a verdict.

    python bench/calibration.py                               # every entry, docs/calibration.md
    python bench/calibration.py --draws 200 --only barrier_line_percentile_at_0 --out /tmp/c.md
    python bench/calibration.py --draws 3000 --only wilson_success_interval --merge   # one row replaced

--merge (with --only) puts the measured rows into the existing --out in registry order and keeps
every other row as it was, adding the command to the header; without it --out is rewritten with
the measured rows alone.

The registry (ENTRIES) is the suite: an entry is a name, what the tool prints it as, its kind
('rejection': the rate of p < 0.05 or of a verdict; 'coverage': the rate at which an interval
holds the truth), its nominal rate, its role and two functions: simulate(rng) -> (inputs, truth)
and run(inputs, truth) -> bool (rejected / covered). Roles: 'null' and 'coverage' are checked
against the nominal rate (a test holds its rate when the measured rejection rate is not above it
beyond the Monte-Carlo error; an interval when its coverage is not below it); 'power',
'confound', 'pseudo' and 'assumption' are reported, not checked (what a known difference, a
confounder, counting non-independent units, or data that break the assumption the table prints
beside the interval do; an 'assumption' row's null or coverage twin, where the assumption holds,
is checked). A new entry is a few lines: see `tost` at the end, which
runs once mop.inference has `tost_paired(diffs, margin, alpha)`.

Verdicts: 'within MC error' (the nominal rate is inside the measured rate's interval),
'conservative' (outside on the safe side: fewer false positives, more coverage), and for the
unsafe side the entry's `outcome`: 'fixed in <commit>' (the printed test is now another, also an
entry) or 'withdrawn: ...' (the tool no longer prints it as that). Every entry draws from its own
seeded stream (--seed and its name), so --only reproduces an entry's number exactly.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.append(str(Path(__file__).resolve().parent))  # the registry's other modules, beside this one

from calibration_lib import analyses, memory_probes, metrics, tables  # noqa: E402
from calibration_lib.entry import ALPHA, EPISODES, SEEDS, Entry, covers, rejects  # noqa: E402, F401

from eval_mop import wilson_interval  # noqa: E402
from mop import contrasts, inference, lmc_stats  # noqa: E402
from mop import generative_probes as probes  # noqa: E402
from mop.connectivity import correlations  # noqa: E402
from mop.runs import atomic_write_text  # noqa: E402

DEFAULT_DRAWS = 2000
BOOTSTRAP = 200  # resamples per percentile interval in the simulation (the tool's default is 1000)
PERCENTILE_RETIRED = "withdrawn as the barrier's interval: the table keeps it, labelled, beside <barrier>_t_ci_low/high and <barrier>_p, which decide"
FIX_FORKS = "03556e4"  # the commit that made the LMC correlations test at the fork
FIX_MIDPOINT = "962ccf2"  # the commit that replaced the midpoint sign test
FIX_GENERATIVE = "962ccf2"  # ... and gave generative verdicts a Holm family


# ----------------------------------------------------------------------------- recipes across seeds


def runs_success(rng: np.random.Generator, seeds: int, shift: float = 0.0) -> np.ndarray:
    """Success rates of `seeds` runs of one recipe: each run's true rate expit(N(1.5, 0.4) + shift)
    (seed-to-seed spread), scored on EPISODES layouts (binomial)."""
    p = 1 / (1 + np.exp(-(rng.normal(1.5, 0.4, seeds) + shift)))
    return rng.binomial(EPISODES, p) / EPISODES


def paired_recipes(rng: np.random.Generator, shift: float = 0.0, seeds: int = SEEDS) -> tuple:
    return (runs_success(rng, seeds), runs_success(rng, seeds, shift)), shift


def paired_t_rejects(inputs: tuple, truth: Any) -> bool:
    return rejects(contrasts.paired_difference(*inputs, "success_rate")["p"])


def holm_family(rng: np.random.Generator) -> tuple:
    return [paired_recipes(rng)[0] for _ in range(6)], 0.0


def holm_any(inputs: list, truth: Any) -> bool:
    p = [contrasts.paired_difference(a, b, "success_rate")["p"] for a, b in inputs]
    return bool(np.nanmin(inference.holm(p)) < ALPHA)


def duplicated(rng: np.random.Generator) -> tuple:
    (a, b), _ = paired_recipes(rng)
    return (np.repeat(a, 2), np.repeat(b, 2)), 0.0  # seeds 0,0,1,1,2,2: every seed trained twice


def deduplicated(inputs: tuple, truth: Any) -> bool:
    a, b = inputs
    return paired_t_rejects((a[::2], b[::2]), truth)  # one per (condition, seed): the 40a rule


def missing_seed(rng: np.random.Generator) -> tuple:
    (a, b), _ = paired_recipes(rng)
    return (a[:-1], b[:-1]), 0.0  # seed 2 missing in one arm: the pair is dropped, n = 2


# ----------------------------------------------------------------------------- intervals of one run


def wilson_draw(rng: np.random.Generator) -> tuple:
    p = rng.uniform(0.05, 0.95)
    n = int(rng.choice([50, 100, 500]))
    return (int(rng.binomial(n, p)), n), p


def wilson_covers(inputs: tuple, truth: float) -> bool:
    return covers(*wilson_interval(*inputs), truth)


def success_ci_draw(rng: np.random.Generator) -> tuple:
    mu = rng.normal(1.5, 0.5)
    logits = mu + rng.normal(0, 0.4, SEEDS)
    k = rng.binomial(EPISODES, 1 / (1 + np.exp(-logits)))
    return (k / EPISODES, k, np.full(SEEDS, EPISODES)), 1 / (1 + np.exp(-mu))


def success_ci_covers(inputs: tuple, truth: float) -> bool:
    ci = inference.success_ci(*inputs)
    return covers(ci["ci_low"], ci["ci_high"], truth)


# ----------------------------------------------------------------------------- McNemar on layouts

LAYOUTS = 500


def layouts_same_network(rng: np.random.Generator) -> tuple:
    """One network evaluated twice (sampled actions): per layout one success probability."""
    q = 1 / (1 + np.exp(-(1.5 + rng.normal(0, 1.5, LAYOUTS))))
    return (rng.random(LAYOUTS) < q, rng.random(LAYOUTS) < q), 0.0


def layouts_same_recipe(rng: np.random.Generator) -> tuple:
    """Two networks of one recipe (two seeds): layout difficulty shared, plus each network's own
    per-layout strengths (network × layout, sd 1.0) and overall level (sd 0.3): the recipe is
    the same, the networks are not."""
    layout = 1.5 + rng.normal(0, 1.5, LAYOUTS)
    qa = 1 / (1 + np.exp(-(layout + rng.normal(0, 0.3) + rng.normal(0, 1.0, LAYOUTS))))
    qb = 1 / (1 + np.exp(-(layout + rng.normal(0, 0.3) + rng.normal(0, 1.0, LAYOUTS))))
    return (rng.random(LAYOUTS) < qa, rng.random(LAYOUTS) < qb), 0.0


def mcnemar_rejects(inputs: tuple, truth: Any) -> bool:
    return rejects(contrasts.exact_paired(*inputs)["p_exact"])


# ----------------------------------------------------------------------------- LMC barriers

ALPHAS = np.linspace(0, 1, 11)
HELDOUT = 100


def ce_curves(rng: np.random.Generator, height: float) -> tuple:
    """Held-out CE per episode at 11 α: an episode's labels L ~ 1 + Poisson(14), its difficulty
    m ~ Gamma(2, 0.1) nats per label, the true curve m + height·4α(1−α) (line and mean barrier
    both = height) and per-(α, episode) evaluation noise N(0, 0.05) per label."""
    labels = 1 + rng.poisson(14, HELDOUT)
    m = rng.gamma(2.0, 0.1, HELDOUT)
    bump = height * 4 * ALPHAS * (1 - ALPHAS)
    per_label = m[None, :] + bump[:, None] + rng.normal(0, 0.05, (len(ALPHAS), HELDOUT))
    return (per_label * labels[None, :], labels.astype(float)), height


def success_curves(rng: np.random.Generator, height: float) -> tuple:
    """Success per layout at 11 α: layout probability q (mean 0.9), lowered by height·4α(1−α)
    (the success barrier = height), one Bernoulli draw per (α, layout)."""
    q = 1 / (1 + np.exp(-(2.5 + rng.normal(0, 1.0, HELDOUT))))
    true = np.clip(q[None, :] - height * 4 * ALPHAS[:, None] * (1 - ALPHAS[:, None]), 0, 1)
    truth = lmc_stats.barrier_line(ALPHAS, true.mean(1), -1.0).height
    return ((rng.random(true.shape) < true).astype(float), None), truth


def percentile_covers(form: str, sign: float) -> Callable:
    def run(inputs: tuple, truth: float) -> bool:
        intervals = lmc_stats.bootstrap_barriers(ALPHAS, inputs[0], inputs[1], BOOTSTRAP, sign, seed=0)
        return covers(*getattr(intervals, form), truth)

    return run


def t_covers(form: str, sign: float) -> Callable:
    def run(inputs: tuple, truth: float) -> bool:
        test = lmc_stats.barrier_test(ALPHAS, inputs[0], inputs[1], form, sign)
        return covers(test.low, test.high, truth)

    return run


def barrier_rejects(form: str, sign: float) -> Callable:
    def run(inputs: tuple, truth: float) -> bool:
        return rejects(lmc_stats.barrier_test(ALPHAS, inputs[0], inputs[1], form, sign).p)

    return run


def midpoint_null(rng: np.random.Generator) -> tuple:
    """No drop at the midpoint: per layout logit base + N(0, 1) with base ~ U(1.5, 4.5) per draw
    (mean success 0.8-0.98), the two ends apart by ±gap logit (gap ~ U(0, 1): children that
    differ), the midpoint's rate the ends' average, one Bernoulli draw per (α, layout)."""
    logit = rng.uniform(1.5, 4.5) + rng.normal(0, 1.0, HELDOUT)
    gap = rng.uniform(0, 1)
    q0, q1 = 1 / (1 + np.exp(-(logit + gap))), 1 / (1 + np.exp(-(logit - gap)))
    q = np.stack([q0 + (q1 - q0) * a for a in ALPHAS])  # the line between the ends' rates
    return (rng.random(q.shape) < q).astype(float), 0.0


def midpoint_rejects(success: np.ndarray, truth: Any) -> bool:
    return rejects(lmc_stats.paired_drop(ALPHAS, success, BOOTSTRAP).p)


def midpoint_sign_rejects(success: np.ndarray, truth: Any) -> bool:
    drop = lmc_stats.paired_drop(ALPHAS, success, BOOTSTRAP)
    return rejects(lmc_stats.sign_test(drop.n_worse, drop.n_better))  # the withdrawn sign test


def midpoint_covers(success: np.ndarray, truth: float) -> bool:
    drop = lmc_stats.paired_drop(ALPHAS, success, BOOTSTRAP)
    return covers(drop.ci_low, drop.ci_high, truth)


# ----------------------------------------------------------------------------- correlations


def independent(rng: np.random.Generator, n: int = 7) -> tuple:
    return (rng.normal(size=n), rng.normal(size=n)), 0.0


def spearman_rejects(inputs: tuple, truth: Any) -> bool:
    return rejects(lmc_stats.spearman(*inputs).p)


def lmc_forks(rng: np.random.Generator, forks: int = 4, pairs: int = 2) -> tuple:
    """The LMC design under the null: x = the fork point (shared by a fork's pairs), y = a barrier
    with a fork effect (sd 1) and a pair effect (sd 0.5), independent of x."""
    point = np.repeat(np.linspace(0.1, 0.9, forks), pairs)
    y = np.repeat(rng.normal(0, 1, forks), pairs) + rng.normal(0, 0.5, forks * pairs)
    return (point, y, np.repeat(np.arange(forks), pairs)), 0.0


def fork_rejects(inputs: tuple, truth: Any) -> bool:
    return rejects(lmc_stats.fork_spearman(*inputs).p)


def pairs_as_units_rejects(inputs: tuple, truth: Any) -> bool:
    return rejects(lmc_stats.spearman(inputs[0], inputs[1]).p)  # the withdrawn pair-level p


def lmc_family(rng: np.random.Generator) -> tuple:
    """A whole correlations table under the null: 6 forks × 2 pairs, every x and y independent."""
    import pandas as pd

    (point, _, fork), _ = lmc_forks(rng, 6, 2)
    cols = (
        "ce_barrier_line",
        "ce_barrier_mean",
        "routing_agreement_mean_nontrivial",
        "routing_js_mean_nontrivial",
    )
    table = pd.DataFrame({"fork": fork, "fork_point": point} | {c: lmc_forks(rng, 6, 2)[0][1] for c in cols})
    return table, 0.0


def lmc_family_rejects(table: Any, truth: Any) -> bool:
    summary = table.groupby("fork", as_index=False).mean()
    return bool((correlations(table, summary)["p_holm"] < ALPHA).any())


CELLS = 60


def visit_cells(rng: np.random.Generator, runs: int = SEEDS) -> tuple:
    """Per run, CELLS cells whose log visits drive both LPC and KL (no direct link between them):
    LPC = v + noise, KL = v + noise, v ~ N(0, 1)."""
    out = []
    for _ in range(runs):
        v = rng.normal(0, 1, CELLS)
        out.append((v + rng.normal(0, 1, CELLS), v + rng.normal(0, 1, CELLS), v))
    return out, 0.0


def raw_r_rejects(cells: list, truth: Any) -> bool:
    return rejects(inference.aggregate_r([np.corrcoef(x, y)[0, 1] for x, y, _ in cells])["p"])


def partial_r_rejects(cells: list, truth: Any) -> bool:
    return rejects(inference.aggregate_r([inference.partial_r(x, y, v) for x, y, v in cells])["p"])


def null_cells(rng: np.random.Generator) -> tuple:
    return [(rng.normal(size=CELLS), rng.normal(size=CELLS), None) for _ in range(SEEDS)], 0.0


# ----------------------------------------------------------------------------- generative targets

TARGETS, CONTEXTS = 9, 16


def generative_null(rng: np.random.Generator) -> tuple:
    """maximise's held-out changes under the null: 9 targets + the control, 16 report contexts,
    every per-context change N(0, 0.02) (nothing moves; changes above MIN_SOFT_CHANGE possible)."""
    return rng.normal(0, 0.02, (TARGETS + 1, CONTEXTS)), 0.0


def generative_any_moved(changes: np.ndarray, truth: Any) -> bool:
    runs = [
        {"target": f"t{i}", "role": "target" if i < TARGETS else "control", "mode": "typical"}
        | probes.change_summary(c, c)
        for i, c in enumerate(changes)
    ]
    probes.verdicts(runs)
    return any(r["verdict"] == "moved" for r in runs if r["role"] == "target")


def generative_any_unadjusted(changes: np.ndarray, truth: Any) -> bool:
    return any(probes.change_summary(c, c)["verdict"] == "moved" for c in changes[:TARGETS])


def generative_at_margin(rng: np.random.Generator) -> tuple:
    signs = rng.choice([-1.0, 1.0], TARGETS + 1)[:, None]
    return signs * 0.01 + rng.normal(0, 0.004, (TARGETS + 1, CONTEXTS)), 0.01


def generative_any_equivalent(changes: np.ndarray, margin: float) -> bool:
    runs = [
        {"target": f"t{i}", "role": "target" if i < TARGETS else "control", "mode": "typical"}
        | probes.change_summary(c, c)
        for i, c in enumerate(changes)
    ]
    probes.verdicts(runs, margin)
    return any(r["verdict"] == "did not move" for r in runs if r["role"] == "target")


def generative_one_moved(changes: np.ndarray, truth: Any) -> bool:
    return probes.change_summary(changes[0], changes[0])["verdict"] == "moved"


# ----------------------------------------------------------------------------- the registry

ENTRIES: list[Entry] = [
    Entry(
        "paired_t_identical_recipes",
        "contrasts.csv p (paired t of a recipe contrast across seeds; stats.py)",
        "rejection",
        ALPHA,
        "null",
        paired_recipes,
        paired_t_rejects,
        "two identical recipes, 3 seeds, success on 500 layouts",
    ),
    Entry(
        "paired_t_known_difference",
        "contrasts.csv p, power at +0.3 logit (about +0.04 success)",
        "rejection",
        ALPHA,
        "power",
        lambda rng: paired_recipes(rng, 0.3),
        paired_t_rejects,
        "B's true logit 0.3 above A's, 3 seeds",
    ),
    Entry(
        "holm_familywise",
        "contrasts.csv p_holm: any of 6 null contrasts below 0.05",
        "rejection",
        ALPHA,
        "null",
        holm_family,
        holm_any,
        "6 contrasts of identical recipes, 3 seeds each",
    ),
    Entry(
        "duplicated_seeds_counted",
        "a paired t with every seed counted twice (seeds 0,0,1,1,2,2)",
        "rejection",
        ALPHA,
        "pseudo",
        duplicated,
        paired_t_rejects,
        "identical recipes; each seed's run trained twice (the same numbers)",
        outcome="withdrawn: one replicate per (condition, seed) (issue 40 item 1; next row)",
    ),
    Entry(
        "duplicated_seeds_one_per_identity",
        "the same data, one run per (condition, seed)",
        "rejection",
        ALPHA,
        "null",
        duplicated,
        deduplicated,
        "identical recipes; duplicates kept once",
    ),
    Entry(
        "missing_seed_dropped",
        "contrasts.csv p with one seed missing in one arm (n = 2, t with 1 df)",
        "rejection",
        ALPHA,
        "null",
        missing_seed,
        paired_t_rejects,
        "identical recipes; seed 2 missing in one arm",
    ),
    Entry(
        "wilson_success_interval",
        "a run's success_ci_low/high (95% Wilson; eval_mop, interpolation.csv)",
        "coverage",
        0.95,
        "coverage",
        wilson_draw,
        wilson_covers,
        "true rate ~ U(0.05, 0.95), n in {50, 100, 500} episodes",
    ),
    Entry(
        "success_ci_across_seeds",
        "metrics_by_alpha.csv success interval (t on the empirical logit over 3 seeds)",
        "coverage",
        0.95,
        "coverage",
        success_ci_draw,
        success_ci_covers,
        "runs' logits N(mu, 0.4); truth expit(mu) (the recipe's median rate)",
    ),
    Entry(
        "mcnemar_same_network",
        "contrast_layouts.csv p_exact, one network evaluated twice (sampled actions)",
        "rejection",
        ALPHA,
        "null",
        layouts_same_network,
        mcnemar_rejects,
        "one network, 500 layouts, two evaluations",
    ),
    Entry(
        "mcnemar_same_recipe_different_networks",
        "contrast_layouts.csv p_exact read as a test of two recipes",
        "rejection",
        ALPHA,
        "pseudo",
        layouts_same_recipe,
        mcnemar_rejects,
        "two seeds of one recipe: networks differ per layout (sd 1.0 logit) and overall (sd 0.3)",
        outcome="withdrawn as a recipe test: it tests two networks (issue 40 item 2: its own table, never beside a recipe contrast)",
    ),
    Entry(
        "barrier_line_percentile_at_0",
        "instability.csv ce_barrier_line_ci_low/high (percentile bootstrap over held-out episodes)",
        "coverage",
        0.95,
        "coverage",
        lambda rng: ce_curves(rng, 0.0),
        percentile_covers("line", 1.0),
        "true CE barrier 0 (curve on the line), 100 held-out episodes, 11 α",
        cost=5,
        outcome=PERCENTILE_RETIRED,
    ),
    Entry(
        "barrier_mean_percentile_at_0",
        "instability.csv ce_barrier_mean_ci_low/high (percentile bootstrap)",
        "coverage",
        0.95,
        "coverage",
        lambda rng: ce_curves(rng, 0.0),
        percentile_covers("mean", 1.0),
        "true CE barrier 0 (flat curve)",
        cost=5,
        outcome=PERCENTILE_RETIRED,
    ),
    Entry(
        "barrier_line_percentile_at_0.02",
        "instability.csv ce_barrier_line_ci_low/high at a real barrier",
        "coverage",
        0.95,
        "coverage",
        lambda rng: ce_curves(rng, 0.02),
        percentile_covers("line", 1.0),
        "true CE barrier 0.02 nats at α 0.5",
        cost=5,
        outcome=PERCENTILE_RETIRED,
    ),
    Entry(
        "barrier_line_t_at_0",
        "instability.csv ce_barrier_line_t_ci_low/high (simultaneous t over α, clipped at 0)",
        "coverage",
        0.95,
        "coverage",
        lambda rng: ce_curves(rng, 0.0),
        t_covers("line", 1.0),
        "true CE barrier 0",
    ),
    Entry(
        "barrier_mean_t_at_0",
        "instability.csv ce_barrier_mean_t_ci_low/high",
        "coverage",
        0.95,
        "coverage",
        lambda rng: ce_curves(rng, 0.0),
        t_covers("mean", 1.0),
        "true CE barrier 0",
    ),
    Entry(
        "barrier_line_t_at_0.02",
        "instability.csv ce_barrier_line_t_ci_low/high at a real barrier",
        "coverage",
        0.95,
        "coverage",
        lambda rng: ce_curves(rng, 0.02),
        t_covers("line", 1.0),
        "true CE barrier 0.02 nats",
    ),
    Entry(
        "barrier_line_test_at_0",
        "instability.csv ce_barrier_line_p (one-sided barrier > 0, Bonferroni over α)",
        "rejection",
        ALPHA,
        "null",
        lambda rng: ce_curves(rng, 0.0),
        barrier_rejects("line", 1.0),
        "true CE barrier 0",
    ),
    Entry(
        "barrier_mean_test_at_0",
        "instability.csv ce_barrier_mean_p",
        "rejection",
        ALPHA,
        "null",
        lambda rng: ce_curves(rng, 0.0),
        barrier_rejects("mean", 1.0),
        "true CE barrier 0",
    ),
    Entry(
        "barrier_line_test_at_0.02",
        "instability.csv ce_barrier_line_p, power at 0.02 nats",
        "rejection",
        ALPHA,
        "power",
        lambda rng: ce_curves(rng, 0.02),
        barrier_rejects("line", 1.0),
        "true CE barrier 0.02 nats",
    ),
    Entry(
        "success_barrier_t_at_0",
        "instability.csv success_barrier_line_t_ci_low/high",
        "coverage",
        0.95,
        "coverage",
        lambda rng: success_curves(rng, 0.0),
        t_covers("line", -1.0),
        "true success barrier 0, 100 layouts (mean success 0.9)",
    ),
    Entry(
        "success_barrier_test_at_0",
        "instability.csv success_barrier_line_p",
        "rejection",
        ALPHA,
        "null",
        lambda rng: success_curves(rng, 0.0),
        barrier_rejects("line", -1.0),
        "true success barrier 0",
    ),
    Entry(
        "success_barrier_percentile_at_0",
        "instability.csv success_barrier_line_ci_low/high (percentile bootstrap over layouts)",
        "coverage",
        0.95,
        "coverage",
        lambda rng: success_curves(rng, 0.0),
        percentile_covers("line", -1.0),
        "true success barrier 0",
        cost=5,
        outcome=PERCENTILE_RETIRED,
    ),
    Entry(
        "midpoint_sign_test",
        "the former success_drop_mid_p (exact sign test of n_worse vs n_better)",
        "rejection",
        ALPHA,
        "null",
        midpoint_null,
        midpoint_sign_rejects,
        "no drop at the midpoint, 100 layouts, mean success 0.8-0.98, ends apart",
        cost=5,
        outcome=f"fixed in {FIX_MIDPOINT}: withdrawn, success_drop_mid_p is the randomisation test below",
    ),
    Entry(
        "midpoint_randomisation_test",
        "instability.csv success_drop_mid_p (randomisation: each layout's 3 outcomes shuffled)",
        "rejection",
        ALPHA,
        "null",
        midpoint_null,
        midpoint_rejects,
        "no drop at the midpoint, 100 layouts, mean success 0.8-0.98, ends apart",
        cost=5,
    ),
    Entry(
        "midpoint_drop_interval",
        "instability.csv success_drop_mid_ci_low/high (percentile bootstrap over layouts)",
        "coverage",
        0.95,
        "coverage",
        midpoint_null,
        midpoint_covers,
        "no drop",
        cost=5,
    ),
    Entry(
        "spearman_exact_null",
        "a Spearman p over n = 7 independent units (lmc_stats.spearman, exact)",
        "rejection",
        ALPHA,
        "null",
        independent,
        spearman_rejects,
        "x, y independent normal, n 7",
    ),
    Entry(
        "lmc_correlation_forks_as_units",
        "correlations.csv p over pairs, whole forks permuted (4 forks × 2 pairs)",
        "rejection",
        ALPHA,
        "null",
        lmc_forks,
        fork_rejects,
        "fork point vs a barrier with fork and pair effects, independent of the fork point",
    ),
    Entry(
        "lmc_correlation_pairs_as_units",
        "the former correlations.csv p over pairs (pairs as independent units)",
        "rejection",
        ALPHA,
        "pseudo",
        lmc_forks,
        pairs_as_units_rejects,
        "the same data as lmc_correlation_forks_as_units",
        cost=10,
        outcome=f"fixed in {FIX_FORKS}: whole forks permuted (lmc_correlation_forks_as_units)",
    ),
    Entry(
        "lmc_correlation_family_holm",
        "correlations.csv p_holm: any of the 12 correlations below 0.05 (6 forks × 2 pairs)",
        "rejection",
        ALPHA,
        "null",
        lmc_family,
        lmc_family_rejects,
        "every x and y independent, 6 forks × 2 pairs",
        cost=4,
    ),
    Entry(
        "correlation_across_runs_null",
        "across_seeds.csv / decision_relevance.csv r_p (t on Fisher z over 3 runs)",
        "rejection",
        ALPHA,
        "null",
        null_cells,
        raw_r_rejects,
        "per run 60 cells, x and y independent",
    ),
    Entry(
        "raw_r_visit_confound",
        "decision_relevance.csv r_p when visits drive both LPC and KL",
        "rejection",
        ALPHA,
        "confound",
        visit_cells,
        raw_r_rejects,
        "no direct LPC–KL link; both = log visits + noise",
    ),
    Entry(
        "partial_r_given_visits",
        "decision_relevance.csv r_given_visits_p, the same data",
        "rejection",
        ALPHA,
        "null",
        visit_cells,
        partial_r_rejects,
        "no direct link given visits",
    ),
    Entry(
        "generative_one_target",
        "generative maximise: one target's 'moved' (its 95% t interval over 16 contexts)",
        "rejection",
        ALPHA,
        "null",
        generative_null,
        generative_one_moved,
        "nothing moves; per-context changes N(0, 0.02)",
    ),
    Entry(
        "generative_any_of_9_targets_unadjusted",
        "the former maximise --target all: any of 9 targets 'moved', each by its own interval",
        "rejection",
        ALPHA,
        "null",
        generative_null,
        generative_any_unadjusted,
        "nothing moves; 9 targets + the control",
        outcome=f"fixed in {FIX_GENERATIVE}: Holm over the targets (next row)",
    ),
    Entry(
        "generative_any_of_9_targets_holm",
        "generative maximise --target all: any of 9 targets 'moved' (probes.verdicts, Holm)",
        "rejection",
        ALPHA,
        "null",
        generative_null,
        generative_any_moved,
        "nothing moves; 9 targets + the control",
        cost=3,
    ),
    Entry(
        "generative_did_not_move_at_margin",
        "maximise 'did not move' (TOST at --margin 0.01, Holm over 9 targets): any of them",
        "rejection",
        ALPHA,
        "null",
        generative_at_margin,
        generative_any_equivalent,
        "every target's true change = the margin (0.01): 'did not move' is false",
        cost=3,
    ),
]

ENTRIES += analyses.ENTRIES  # causal.py, stats.py --time_course, knockouts, the hardest level, subgoals
ENTRIES += tables.ENTRIES  # LPC by level and its difference, level pairs, causal.py's summary, attribution
ENTRIES += (
    metrics.ENTRIES
)  # metrics across runs, path-ratio contrasts, LMC forks, vs_control, causal layout Holm
ENTRIES += memory_probes.ENTRIES  # memory_probe.py's gain over no memory and its interval

if hasattr(inference, "tost_paired"):  # mop.inference's paired TOST (issue 40, item 5)

    def tost_at_margin(rng: np.random.Generator) -> tuple:
        (a, b), _ = paired_recipes(rng, seeds=5)
        return b - a + 0.05, 0.05  # the true difference sits at the margin: equivalence is false

    def tost_rejects(diffs: np.ndarray, margin: float) -> bool:
        result = inference.tost_paired(diffs, margin, ALPHA)
        p = result["p"] if isinstance(result, dict) else getattr(result, "p", result)
        return rejects(p)

    ENTRIES.append(
        Entry(
            "tost_at_the_margin",
            "'alike' from tost_paired (equivalence at --margin 0.05)",
            "rejection",
            ALPHA,
            "null",
            tost_at_margin,
            tost_rejects,
            "true difference = the margin (+0.05 success), 5 seeds",
        )
    )


# ----------------------------------------------------------------------------- running


@dataclass
class Measured:
    entry: Entry
    draws: int
    hits: int
    low: float
    high: float
    seconds: float

    @property
    def rate(self) -> float:
        return self.hits / self.draws

    @property
    def verdict(self) -> str:
        e = self.entry
        if e.role in ("power", "confound", "pseudo", "assumption"):
            return {
                "power": "power (no nominal)",
                "confound": "what the confound does",
                "pseudo": "pseudo-replication",
                "assumption": "its stated assumption broken",
            }[e.role] + (f"; {e.outcome}" if e.outcome else "")
        if self.low <= e.nominal <= self.high:
            return "within MC error"
        safe = self.high < e.nominal if e.kind == "rejection" else self.low > e.nominal
        if safe:
            return "conservative (holds its rate)"
        return e.outcome or "OUTSIDE: not yet fixed or withdrawn"


def entry_seed(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def measure(entry: Entry, draws: int, seed: int) -> Measured:
    rng = entry_seed(seed, entry.name)
    count = max(50, round(draws / entry.cost))
    started = time.perf_counter()
    hits = sum(bool(entry.run(*entry.simulate(rng))) for _ in range(count))
    low, high = wilson_interval(hits, count)
    return Measured(entry, count, hits, low, high, time.perf_counter() - started)


def report(results: list[Measured], command: str, seed: int) -> str:
    lines = [
        "# Calibration, measured",
        "",
        "Every test and interval the tool prints, run on simulated data whose truth is known, with the",
        "project's own functions (bench/calibration.py; issue 40). Generated by:",
        "",
        f"    {command}",
        "",
        f"Seed {seed}; each entry draws from its own stream (seed and name), so `--only NAME` reproduces",
        "its row. Rate: the share of draws that rejected at p < 0.05 (kind 'rejection') or whose interval",
        "held the truth ('coverage'). MC 95%: the Wilson interval of that rate over the draws. Verdict:",
        "'within MC error' when the nominal rate is inside it; 'conservative' when outside on the safe",
        "side; otherwise the entry is fixed (a new test, also listed) or withdrawn as that claim. Rows",
        "marked power, confound or pseudo-replication have no nominal rate to hold: they show what a known",
        "difference, a confounder or counting non-independent units does; rows marked 'its stated",
        "assumption broken' show what data that break the assumption the table prints beside the",
        "interval (its `assumes` column) do, beside a checked row where the assumption holds.",
        f"Percentile bootstraps use {BOOTSTRAP} resamples here (the tool's default is 1000).",
        "",
        "| entry | what the tool prints | truth simulated | kind | nominal | measured [MC 95%] | draws | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [row(m) for m in results]
    total = sum(m.seconds for m in results)
    if not hasattr(inference, "tost_paired"):
        lines += [
            "",
            "`tost_at_the_margin` (the paired TOST behind 'alike') runs once mop.inference has `tost_paired`.",
        ]
    lines += ["", f"Total {total:.0f} s (wall, on a shared 2-core machine) for the entries above.", ""]
    return "\n".join(lines)


def row(m: Measured) -> str:
    e = m.entry
    return (
        f"| `{e.name}` | {e.printed_as} | {e.truth} | {e.kind} | {e.nominal:.3g} | "
        f"{m.rate:.3f} [{m.low:.3f}, {m.high:.3f}] | {m.draws} | {m.verdict} |"
    )


ROW = re.compile(r"^\| `([^`]+)` \|")
SEED_LINE = re.compile(r"^Seed (-?\d+);")


def merged(old: str, results: list[Measured], command: str, seed: int) -> str:
    """The report `old` with the measured entries' rows put in (replacing theirs, or inserted in
    registry order) and every other row kept; the command is listed under the first one, with
    its rows and seconds. ValueError when `old` has no table or was measured with another seed."""
    lines = old.rstrip("\n").split("\n")
    at = [i for i, line in enumerate(lines) if ROW.match(line)]
    seeds = [int(m.group(1)) for line in lines if (m := SEED_LINE.match(line))]
    if not at or not seeds:
        raise ValueError("no calibration table in it")
    if seeds[0] != seed:
        raise ValueError(f"its rows were measured with --seed {seeds[0]}, not {seed}")
    kept = {ROW.match(lines[i]).group(1): lines[i] for i in at}
    new = {m.entry.name: row(m) for m in results}
    registry = [e.name for e in ENTRIES]
    order = [n for n in registry if n in kept or n in new] + [n for n in kept if n not in registry]
    head, tail = lines[: at[0]], lines[at[-1] + 1 :]
    commands = [i for i, line in enumerate(head) if line.startswith("    python bench/calibration.py")]
    seconds = sum(m.seconds for m in results)
    note = f"    {command}  # merged: {len(new)} row{'s' * (len(new) != 1)}, {seconds:.0f} s"
    head = head[: commands[-1] + 1] + [note] + head[commands[-1] + 1 :] if commands else head
    tail = [
        line.replace("for the entries above.", "for the first command's entries (a merged one's: beside it).")
        for line in tail
    ]
    return "\n".join([*head, *(new.get(n) or kept[n] for n in order), *tail, ""])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--draws", type=int, default=DEFAULT_DRAWS, help="draws per cheap entry")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="docs/calibration.md", help="the report (markdown)")
    parser.add_argument("--only", default=None, help="comma list of entry names")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="with --only: put its rows into the existing --out, keep the rest",
    )
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    names = {e.name for e in ENTRIES}
    only = [n.strip() for n in args.only.split(",")] if args.only else None
    if only and not set(only) <= names:
        unknown = sorted(set(only) - names)[0]
        print(f"error: --only: no entry named {unknown!r}", file=sys.stderr)
        raise SystemExit(2)
    if args.draws < 50:
        print(f"error: --draws must be at least 50, got {args.draws}", file=sys.stderr)
        raise SystemExit(2)
    if args.merge and not only:
        print("error: --merge needs --only (every entry rewrites the report)", file=sys.stderr)
        raise SystemExit(2)
    out = Path(args.out)
    old = out.read_text() if args.merge and out.exists() else None
    if old is not None:
        try:
            merged(old, [], "", args.seed)  # refuse before measuring, not after
        except ValueError as e:
            print(f"error: --merge into {args.out}: {e}", file=sys.stderr)
            raise SystemExit(2) from None
    results = []
    for entry in ENTRIES:
        if only and entry.name not in only:
            continue
        m = measure(entry, args.draws, args.seed)
        print(
            f"{entry.name}: {m.rate:.3f} [{m.low:.3f}, {m.high:.3f}] of {m.draws} ({m.seconds:.1f} s): {m.verdict}"
        )
        results.append(m)
    command = ("python bench/calibration.py " + " ".join(argv if argv is not None else sys.argv[1:])).strip()
    if old is not None:  # read again: a report merged into while this one measured keeps those rows
        old = out.read_text() if out.exists() else old
    text = report(results, command, args.seed) if old is None else merged(old, results, command, args.seed)
    atomic_write_text(out, text)
    return {
        "out": args.out,
        "results": {m.entry.name: (m.rate, m.low, m.high, m.draws, m.verdict) for m in results},
    }


if __name__ == "__main__":
    main()
