"""Calibration entries for the intervals and tests that the remaining tables print, registered in
bench/calibration.py's ENTRIES (which runs and reports them; see its docstring): a multi-task
policy's LPC per level and the hardest-minus-easiest difference (render_plots.py --by_level:
routing_analysis.routing_by_level and level_difficulty_summary, episodes as the units), the
levels' LPC across runs and their paired differences at one update (stats.py's by_level.csv and
level_pairs.csv: difficulty.routing_across_runs), causal.py's summary across runs
(causal.summarize) and its per-layout interval of one run (causal.paired_layout_effect), and
attribution.py --aggregate's share of |attribution| per step offset (attribution.summarise),
failures.py --against's per-kind McNemar tests with Holm (contrasts.exact_paired_by_group) and
bench/demo_fit.py's per-step CE and its own − held out gap (clustered_mean, clustered_difference). Each
entry calls the function the tool calls, on the table the tool hands it. Two of them moved the
tool: clustered_mean's error is the jackknife's (FIX_CLUSTERED), the share's interval is
widened to the bootstrap-t (FIX_SHARE) and the hardest-minus-easiest difference's is the
bootstrap-t over each level's episodes (FIX_DIFFERENCE); each former interval is kept as a row.

    python bench/calibration.py --draws 1000 --only level_lpc_difference_coverage,causal_summary_holm_familywise --merge
    python bench/calibration.py --draws 200 --only attribution_share_oldest_coverage --out /tmp/c.md
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from calibration_lib.entry import ALPHA, SEEDS, Entry, covers, rejects

FIX_CLUSTERED = "0b3a46b"  # the commit that gave clustered_mean the jackknife's error
FIX_SHARE = "e6e81a5"  # the commit that widened attribution's share interval to the bootstrap-t
FIX_DIFFERENCE = "c5cca0c"  # the commit that gave lpc_difference the bootstrap-t interval

# ----------------------------------------------------------------------------- one policy, by level

MAX_STEPS = 64  # a failed episode runs to the step limit
LEVEL_EPISODES = 100  # evaluation episodes per level (headline.py --episodes, eval_mop --num_episodes)
STEP_RHO, STEP_SD, EPISODE_SD = 0.8, 40.0, 30.0  # per-step LPC: AR(1) within an episode, episode effect
FAIL_SHIFT, LENGTH_SLOPE = 60.0, 2.0  # a failed episode's extra LPC; LPC per step of a longer success
# level: (bot path mean, sd; success rate; successes' lengths lo..hi; LPC base), easiest first
LEVELS = {
    "BabyAI-GoToObj-v0": (5.0, 1.5, 0.9, (5, 12), 400.0),
    "BabyAI-GoToLocal-v0": (12.0, 3.0, 0.7, (8, 24), 450.0),
    "BabyAI-PickupLoc-v0": (25.0, 5.0, 0.3, (15, 40), 500.0),
}
EASIEST, HARDEST = "BabyAI-GoToObj-v0", "BabyAI-PickupLoc-v0"


def success_lpc(level: str, length: Any) -> Any:
    """A successful episode's expected LPC per step: the level's base, more for a longer one."""
    lo, hi = LEVELS[level][3]
    return LEVELS[level][4] + LENGTH_SLOPE * (np.asarray(length, float) - (lo + hi) / 2)


def level_truth(level: str, successes_only: bool = False) -> float:
    """The level's expected LPC per step (routing_by_level's estimand, sum of LPC over sum of
    steps): successes' lengths uniform on lo..hi with success_lpc, failures MAX_STEPS long with the
    base + FAIL_SHIFT, mixed at the success rate; successes_only: the successes' alone."""
    _, _, rate, (lo, hi), base = LEVELS[level]
    lengths = np.arange(lo, hi + 1, dtype=float)
    steps, lpc = lengths.mean(), (lengths * success_lpc(level, lengths)).mean()
    if successes_only:
        return float(lpc / steps)
    return float(
        (rate * lpc + (1 - rate) * MAX_STEPS * (base + FAIL_SHIFT)) / (rate * steps + (1 - rate) * MAX_STEPS)
    )


def level_episodes(rng: np.random.Generator, level: str) -> tuple[pd.DataFrame, np.ndarray]:
    """One level's evaluation episodes as the cache's episodes table (mean_lpc per step, length,
    success, optimal_length) and all their steps' LPC: an episode's steps are its expected LPC +
    an episode effect N(0, EPISODE_SD) + AR(1) noise (rho STEP_RHO, marginal sd STEP_SD), so steps
    of one episode are not independent and long (failed) episodes carry more LPC."""
    path_mean, path_sd, rate, (lo, hi), base = LEVELS[level]
    success = rng.random(LEVEL_EPISODES) < rate
    length = np.where(success, rng.integers(lo, hi + 1, LEVEL_EPISODES), MAX_STEPS)
    expected = np.where(success, success_lpc(level, length), base + FAIL_SHIFT)
    means, steps = [], []
    for n, mu in zip(length, expected + rng.normal(0.0, EPISODE_SD, LEVEL_EPISODES)):
        shocks = rng.normal(0.0, STEP_SD * np.sqrt(1 - STEP_RHO**2), n)
        noise = np.empty(n)
        noise[0] = rng.normal(0.0, STEP_SD)
        for t in range(1, n):
            noise[t] = STEP_RHO * noise[t - 1] + shocks[t]
        steps.append(mu + noise)
        means.append(steps[-1].mean())
    path = np.maximum(1.0, np.round(rng.normal(path_mean, path_sd, LEVEL_EPISODES)))
    table = pd.DataFrame({"mean_lpc": means, "length": length, "success": success, "optimal_length": path})
    return table, np.concatenate(steps)


def by_level(rng: np.random.Generator) -> tuple:
    """Three levels of one multi-task policy; truth: the hardest level's LPC per step."""
    drawn = {level: level_episodes(rng, level) for level in LEVELS}
    return drawn, level_truth(HARDEST)


def level_row(drawn: dict, level: str) -> pd.Series:
    from mop.routing_analysis import routing_by_level

    table = routing_by_level({name: episodes for name, (episodes, _) in drawn.items()})
    return table.set_index("level").loc[level]


def level_lpc_covers(drawn: dict, truth: float) -> bool:
    row = level_row(drawn, HARDEST)
    return covers(row["lpc_ci_low"], row["lpc_ci_high"], truth)


def steps_as_units_covers(drawn: dict, truth: float) -> bool:
    """The same mean with every step its own unit (clustered_mean over steps, weight 1)."""
    from mop.routing_analysis import clustered_mean

    mean, _, half = clustered_mean(drawn[HARDEST][1], np.ones(len(drawn[HARDEST][1])))
    return covers(mean - half, mean + half, truth)


def difference_draw(rng: np.random.Generator) -> tuple:
    drawn, _ = by_level(rng)
    return drawn, level_truth(HARDEST) - level_truth(EASIEST)


def difference_success_draw(rng: np.random.Generator) -> tuple:
    drawn, _ = by_level(rng)
    return drawn, level_truth(HARDEST, True) - level_truth(EASIEST, True)


def difference_covers(suffix: str) -> Any:
    """level_difficulty_summary's lpc_difference{suffix} interval (None where it names no
    hardest or easiest level: a miss) holds the true hardest - easiest difference."""

    def run(drawn: dict, truth: float) -> bool:
        from mop.routing_analysis import level_difficulty_summary, routing_by_level

        episodes = {name: episodes for name, (episodes, _) in drawn.items()}
        summary = level_difficulty_summary(routing_by_level(episodes), episodes)
        if (summary.get("hardest"), summary.get("easiest")) != (HARDEST, EASIEST):
            return False
        return covers(
            summary[f"lpc_difference{suffix}_ci_low"], summary[f"lpc_difference{suffix}_ci_high"], truth
        )

    return run


def difference_welch_covers(drawn: dict, truth: float) -> bool:
    """The former lpc_difference interval: the two levels' jackknife errors (routing_by_level's
    lpc_se) combined, Student's t with Welch-Satterthwaite degrees of freedom."""
    from scipy import stats

    from mop.routing_analysis import routing_by_level

    table = routing_by_level({name: episodes for name, (episodes, _) in drawn.items()}).set_index("level")
    hard, easy = table.loc[HARDEST], table.loc[EASIEST]
    v1, v2 = hard["lpc_se"] ** 2, easy["lpc_se"] ** 2
    welch = (v1 + v2) ** 2 / (v1**2 / (hard["episodes"] - 1) + v2**2 / (easy["episodes"] - 1))
    diff, half = hard["mean_lpc"] - easy["mean_lpc"], np.sqrt(v1 + v2) * stats.t.ppf(1 - ALPHA / 2, welch)
    return covers(diff - half, diff + half, truth)


# ----------------------------------------------------------------------------- levels across runs

PAIR_LEVELS = ("A", "B", "C")
RUN_LPC, RUN_SD, EPISODE_NOISE, RUN_EPISODES = 500.0, 60.0, 40.0, 20


def runs_by_level(rng: np.random.Generator) -> tuple:
    """{run: {level: episodes}} of SEEDS multi-task runs at one update, every level's LPC the same
    in truth: a run's level N(RUN_LPC, RUN_SD) shared by its levels, each episode's mean LPC that
    + N(0, EPISODE_NOISE), lengths 5-30 steps (unrelated to LPC). Truth: RUN_LPC."""
    runs = {}
    for run in range(SEEDS):
        base = rng.normal(RUN_LPC, RUN_SD)
        runs[(0, run)] = {
            level: pd.DataFrame(
                {
                    "mean_lpc": base + rng.normal(0.0, EPISODE_NOISE, RUN_EPISODES),
                    "length": rng.integers(5, 31, RUN_EPISODES),
                    "success": rng.random(RUN_EPISODES) < 0.8,
                }
            )
            for level in PAIR_LEVELS
        }
    return runs, RUN_LPC


def level_pairs(runs: dict) -> pd.DataFrame:
    """level_pairs.csv's rows of one condition (difficulty.routing_across_runs); RuntimeError
    unless it holds the 3 pairs over SEEDS runs each."""
    from mop import difficulty

    _, pairs = difficulty.routing_across_runs(runs)
    if len(pairs) != 3 or set(pairs["runs"]) != {SEEDS}:
        raise RuntimeError(
            f"routing_across_runs returned {len(pairs)} pairs (runs {sorted(set(pairs['runs']))})"
        )
    return pairs


def pairs_any_holm(runs: dict, truth: Any) -> bool:
    return bool((level_pairs(runs)["p_holm"] < ALPHA).any())


def pairs_any_unadjusted(runs: dict, truth: Any) -> bool:
    return any(rejects(p) for p in level_pairs(runs)["p"])


def across_runs_covers(runs: dict, truth: float) -> bool:
    from mop import difficulty

    levels, _ = difficulty.routing_across_runs(runs)
    row = levels.set_index("level").loc[PAIR_LEVELS[0]]
    return covers(row["lpc_ci_low"], row["lpc_ci_high"], truth)


# ----------------------------------------------------------------------------- causal.py

CAUSAL_SIZES = [[0, 16, 32]] * 3
INTERVENTIONS = ("zero", "route_around", "swap")  # causal.py's default: every one
CAUSAL_LAYOUTS = 100  # headline.py --causal_episodes (causal.py --episodes: 200)


def causal_effects(rng: np.random.Generator) -> tuple:
    """causal_effects.csv of one condition's SEEDS runs, every expert x intervention x metric
    (3 x 3 x 3 x 4 = 108 rows per run) with no effect on average over runs: a run's intact
    success p0 = expit(N(1.0, 0.3)) and an intervention's p0 + N(0, 0.04) (this network's own
    effect; E = 0 on the probability scale), each scored on CAUSAL_LAYOUTS layouts; path ratio
    intact exp(N(0.3, 0.1)) and intervened x exp(N(0, 0.05)) less its mean (E = 0); LPC (effective
    and the router's) intact N(400, 50) and intervened + N(0, 15)."""
    from mop import causal

    rows = []
    for seed in range(SEEDS):
        p0 = 1 / (1 + np.exp(-rng.normal(1.0, 0.3)))
        intact = {
            "success_rate": rng.binomial(CAUSAL_LAYOUTS, p0) / CAUSAL_LAYOUTS,
            "path_ratio": float(np.exp(rng.normal(0.3, 0.1))),
            "mean_lpc": rng.normal(400.0, 50.0),
            "router_lpc": rng.normal(400.0, 50.0),
        }
        head = {"run": f"trial_0/seed_{seed}", "condition": "c0", "condition_label": "c0"}
        head |= {"task_id": "BabyAI-GoToLocal-v0", "trial": 0, "seed": seed}
        for k, sizes in enumerate(CAUSAL_SIZES):
            for j, size in enumerate(sizes):
                for kind in INTERVENTIONS:
                    p1 = float(np.clip(p0 + rng.normal(0.0, 0.04), 0.0, 1.0))
                    stretch = np.exp(rng.normal(0.0, 0.05)) - np.exp(0.05**2 / 2)  # mean 0
                    after = {
                        "success_rate": rng.binomial(CAUSAL_LAYOUTS, p1) / CAUSAL_LAYOUTS,
                        "path_ratio": intact["path_ratio"] * (1 + stretch),
                        "mean_lpc": intact["mean_lpc"] + rng.normal(0.0, 15.0),
                        "router_lpc": intact["router_lpc"] + rng.normal(0.0, 15.0),
                    }
                    for metric in causal.METRICS:
                        rows.append(
                            head
                            | {"layer": k, "expert": j, "expert_size": size, "intervention": kind}
                            | {"metric": metric, "layouts": CAUSAL_LAYOUTS, "intact": intact[metric]}
                            | {"intervened": after[metric], "effect": after[metric] - intact[metric]}
                        )
    return causal.effects_table(rows), 0.0


def causal_summary(effects: pd.DataFrame) -> pd.DataFrame:
    """causal_summary.csv as causal.py writes it (causal.summarize); RuntimeError unless it holds
    every (expert, intervention, metric) over SEEDS runs in one family."""
    from mop import causal
    from mop.subgoal_analysis import max_lpc

    summary = causal.summarize(effects, max_lpc(CAUSAL_SIZES))
    tests = 9 * len(INTERVENTIONS) * len(causal.METRICS)
    if len(summary) != tests or set(summary["n_runs"]) != {SEEDS} or set(summary["family_size"]) != {tests}:
        raise RuntimeError(
            f"causal.summarize returned {len(summary)} rows (runs {sorted(set(summary['n_runs']))})"
        )
    return summary


def summary_one_rejects(effects: pd.DataFrame, truth: Any) -> bool:
    s = causal_summary(effects)
    row = s[(s["layer"] == 1) & (s["expert"] == 2) & (s["intervention"] == "zero")]
    return rejects(row.loc[row["metric"] == "success_rate", "p"].iloc[0])


def summary_any_holm(effects: pd.DataFrame, truth: Any) -> bool:
    return bool((causal_summary(effects)["p_holm"] < ALPHA).any())


def summary_any_unadjusted(effects: pd.DataFrame, truth: Any) -> bool:
    return any(rejects(p) for p in causal_summary(effects)["p"])


EFFECT_DROP = 0.1  # the intervention's true cost in success, on every layout


def layout_arms(rng: np.random.Generator) -> tuple:
    """One run, intact and intervened, on CAUSAL_LAYOUTS shared layouts (causal.layouts' tables of
    the episodes): a layout's intact success probability q ~ U(0.3, 1.0), intervened q -
    EFFECT_DROP (sampled actions: one Bernoulli draw per arm and layout). Truth: -EFFECT_DROP, the
    network's effect over the layouts it could be given."""
    from mop import causal

    q = rng.uniform(0.3, 1.0, CAUSAL_LAYOUTS)
    arms = []
    for p in (q, q - EFFECT_DROP):
        success = rng.random(CAUSAL_LAYOUTS) < p
        length = np.where(success, rng.integers(5, 30, CAUSAL_LAYOUTS), MAX_STEPS)
        episodes = pd.DataFrame({"seed": np.arange(CAUSAL_LAYOUTS), "episode": np.arange(CAUSAL_LAYOUTS)})
        episodes = episodes.assign(success=success, length=length, optimal_length=5.0)
        arms.append(causal.layouts(episodes.assign(mean_lpc=rng.normal(400.0, 50.0, CAUSAL_LAYOUTS))))
    return (arms[0], arms[1], int(rng.integers(2**31))), -EFFECT_DROP


def layout_interval_covers(inputs: tuple, truth: float) -> bool:
    from mop import causal
    from mop.subgoal_analysis import max_lpc

    intact, intervened, seed = inputs
    effect = causal.paired_layout_effect(intact, intervened, "success_rate", max_lpc(CAUSAL_SIZES), seed)
    return covers(effect["layout_ci_low"], effect["layout_ci_high"], truth)


# ----------------------------------------------------------------------------- attribution.py --aggregate

WINDOW, STRIDE, ATTRIBUTED_EPISODES = (
    8,
    2,
    20,
)  # attribution.py's defaults (--window, --stride, --num_episodes)
# the expected share per offset -8..0, as measured on UnlockPickup (docs/findings.md: about half at t,
# 15% at t - 1, 5-10% per earlier step)
SHARE_TRUTH = np.array([0.05] * 7 + [0.15, 0.50])
EPISODE_CONCENTRATION, STEP_CONCENTRATION = 20.0, 10.0


def attribution_profiles(rng: np.random.Generator) -> tuple:
    """attribution.py --aggregate's examples: ATTRIBUTED_EPISODES episodes of 10-40 steps, every
    STRIDE-th step t >= WINDOW attributed; an episode's mean profile over the offsets ~
    Dirichlet(EPISODE_CONCENTRATION x SHARE_TRUTH) and each step's shares ~ Dirichlet(
    STEP_CONCENTRATION x that), so steps of one episode are alike and a small share is skewed. Truth: SHARE_TRUTH (the expected share per offset)."""
    rows = []
    for e in range(ATTRIBUTED_EPISODES):
        mean = rng.dirichlet(EPISODE_CONCENTRATION * SHARE_TRUTH)
        for t in range(WINDOW, int(rng.integers(10, 41)), STRIDE):
            share = rng.dirichlet(STEP_CONCENTRATION * mean + 1e-9)
            subgoal = str(rng.choice(["GoNextTo", "Explore"]))
            rows += [
                {"episode": e, "t": t, "subgoal": subgoal, "step_offset": w - WINDOW, "abs_share": s}
                for w, s in enumerate(share)
            ]
    return pd.DataFrame(rows), SHARE_TRUTH


def share_covers(offset: int) -> Any:
    """attribution.summarise's pooled row ('all') at a step offset holds that offset's truth."""

    def run(profiles: pd.DataFrame, truth: np.ndarray) -> bool:
        from attribution import summarise

        summary = summarise(profiles)
        row = summary[(summary["subgoal"] == "all") & (summary["step_offset"] == offset)].iloc[0]
        return covers(row["ci_low"], row["ci_high"], float(truth[offset + WINDOW]))

    return run


def share_t_only_covers(profiles: pd.DataFrame, truth: np.ndarray) -> bool:
    """The former interval at offset -WINDOW: the Student t over episodes alone, clipped to [0, 1]."""
    from mop.lmc_stats import mean_interval

    oldest = profiles[profiles["step_offset"] == -WINDOW].groupby("episode")["abs_share"].mean()
    _, low, high = mean_interval(oldest.to_numpy())
    return covers(max(0.0, low), min(1.0, high), float(truth[0]))


# ----------------------------------------------------------------------------- failures.py --against

# Synth's instruction kinds, their share of layouts and a base logit of success (go to and pick up
# easy, put next hard), as failures.py --against groups them; a layout's logit adds N(0, 1.5).
KINDS = {"go to": (0.3, 2.5), "open": (0.2, 3.0), "pick up": (0.3, 2.5), "put next": (0.2, 0.0)}


def against_null(rng: np.random.Generator) -> tuple:
    """Two checkpoints alike on every layout (each outcome its own draw of the layout's success
    probability: McNemar's null in every kind): (success a, success b, kind per layout)."""
    names = np.array(list(KINDS))
    kind = rng.choice(names, size=500, p=[KINDS[k][0] for k in names])
    base = np.array([KINDS[k][1] for k in kind])
    q = 1 / (1 + np.exp(-(base + rng.normal(0, 1.5, len(kind)))))
    return (rng.random(len(q)) < q, rng.random(len(q)) < q, kind), None


def against_any_holm(inputs: tuple, truth: Any) -> bool:
    from mop.contrasts import exact_paired_by_group

    return any(rejects(t["p"]) for t in exact_paired_by_group(*inputs)[1:])


def against_any_unadjusted(inputs: tuple, truth: Any) -> bool:
    from mop.contrasts import exact_paired_by_group

    return any(rejects(t["p_exact"]) for t in exact_paired_by_group(*inputs)[1:])


# ----------------------------------------------------------------------------- bench/demo_fit.py

# Cross-entropy per labelled step: an episode's mean m·LogNormal(-0.125, 0.5) (mean m), its steps
# m_e·Exponential(1) (skewed, as per-step CE is). Held out (the bot's episodes): 10-200 steps, m
# 0.15. Own (the student's): success 0.87 with 10-200 steps, m 0.6; a failure runs 576 steps, m 1.6,
# so the 13% failures carry ~2/3 of the steps.
FIT_LENGTHS, FIT_FAIL_STEPS, FIT_SUCCESS = (10, 200), 576, 0.87
FIT_MEANS = {"held out": (0.15, 0.15), "own": (0.6, 1.6)}  # (solved, failed) episode mean


def fit_truth(name: str) -> float:
    solved, failed = FIT_MEANS[name]
    p = FIT_SUCCESS if name == "own" else 1.0
    mean_length = sum(FIT_LENGTHS) / 2
    steps = p * mean_length + (1 - p) * FIT_FAIL_STEPS
    return (p * mean_length * solved + (1 - p) * FIT_FAIL_STEPS * failed) / steps


def fit_set(rng: np.random.Generator, name: str, episodes: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """(per-episode mean CE, labelled steps) of one simulated set."""
    solved_mean, failed_mean = FIT_MEANS[name]
    fail = rng.random(episodes) >= (FIT_SUCCESS if name == "own" else 1.0)
    length = np.where(fail, FIT_FAIL_STEPS, rng.integers(FIT_LENGTHS[0], FIT_LENGTHS[1] + 1, episodes))
    m = np.where(fail, failed_mean, solved_mean) * rng.lognormal(-0.125, 0.5, episodes)
    ce = np.array([rng.exponential(mi, n).mean() for mi, n in zip(m, length)])
    return ce, length.astype(float)


def fit_draw(rng: np.random.Generator) -> tuple:
    return (fit_set(rng, "own"), fit_set(rng, "held out")), fit_truth("own") - fit_truth("held out")


def fit_own_covers(inputs: tuple, truth: float) -> bool:
    from mop.routing_analysis import clustered_interval

    _, low, high = clustered_interval(*inputs[0])
    return covers(low, high, fit_truth("own"))


def fit_own_t_covers(inputs: tuple, truth: float) -> bool:
    """The t interval demo_fit first printed: clustered_mean's jackknife error, Student's t."""
    from mop.routing_analysis import clustered_mean

    mean, _, half = clustered_mean(*inputs[0])
    return covers(mean - half, mean + half, fit_truth("own"))


def fit_gap_covers(inputs: tuple, truth: float) -> bool:
    from mop.routing_analysis import clustered_difference

    (own_ce, own_len), (held_ce, held_len) = inputs
    _, low, high = clustered_difference(own_ce, own_len, held_ce, held_len)
    return covers(low, high, truth)


# Where a set's unfit labels are (demo_fit --breakdown): one group's steps per episode
# Poisson(lam) (episodes without one drop out), an episode's error rate Beta with mean p and
# concentration 20 (episodes differ), its errors Binomial; 500 episodes. Rare: lam 0.7, p 0.02 (a
# group like "Pickup key": ~7 errors); common: lam 10, p 0.05 (like "GoNextTo door": ~250).
BREAKDOWN_CELLS = {"rare": (0.7, 0.02), "common": (10.0, 0.05)}


def breakdown_draw(cell: str):
    lam, p = BREAKDOWN_CELLS[cell]

    def draw(rng: np.random.Generator) -> tuple:
        n = rng.poisson(lam, 500)
        errors = rng.binomial(n, rng.beta(p * 20, (1 - p) * 20, 500))
        has = n > 0
        return ((n - errors)[has] / n[has], n[has]), 1 - p

    return draw


def breakdown_covers(inputs: tuple, truth: float) -> bool:
    from mop.routing_analysis import clustered_proportion

    _, low, high = clustered_proportion(*inputs)
    return covers(low, high, truth)


def breakdown_bootstrap_t_covers(inputs: tuple, truth: float) -> bool:
    """The interval the breakdown first printed: demo_fit's bootstrap-t (clustered_interval)."""
    from mop.routing_analysis import clustered_interval

    _, low, high = clustered_interval(*inputs)
    return covers(low, high, truth)


# fmt: off
BY_LEVEL = (f"3 levels x {LEVEL_EPISODES} episodes (success 0.9 / 0.7 / 0.3; a failure runs {MAX_STEPS} steps "
            "with +60 LPC); per-step LPC AR(1), rho 0.8, plus an episode effect")
ENTRIES: list[Entry] = [
    Entry("level_lpc_interval_coverage", "routing_by_level.csv lpc_ci_low/high (per step, clustered by episode; "
          "render_plots.py --by_level): the hardest level", "coverage", 0.95, "coverage", by_level,
          level_lpc_covers, f"{BY_LEVEL}; truth: its steps' expected LPC ({level_truth(HARDEST):.1f})"),
    Entry("level_lpc_steps_as_units", "the same mean's t interval with every step a unit (steps of an "
          "episode counted as independent)", "coverage", 0.95, "pseudo", by_level, steps_as_units_covers,
          f"the same data; truth {level_truth(HARDEST):.1f}"),
    Entry("level_lpc_difference_coverage", "routing_by_level_summary.json lpc_difference_ci_low/high (hardest "
          "minus easiest: 95% bootstrap-t over episodes, resampled within each level)", "coverage", 0.95,
          "coverage", difference_draw, difference_covers(""),
          f"{BY_LEVEL}; truth {level_truth(HARDEST) - level_truth(EASIEST):.1f}"),
    Entry("level_lpc_difference_welch_only", "the former interval: two clustered (jackknife) SEs, "
          "Welch-Satterthwaite t (on the row above's 6000 draws: 0.942 [0.935, 0.947])", "coverage", 0.95, "coverage", difference_draw, difference_welch_covers,
          f"the same simulator; truth {level_truth(HARDEST) - level_truth(EASIEST):.1f}",
          outcome=f"fixed in {FIX_DIFFERENCE}: the bootstrap-t (row above); it fell short where 10 of 100 "
          "episodes carry half the steps (the sandwich's SEs: 0.929 over 2000 draws)"),
    Entry("level_lpc_difference_success_coverage", "lpc_difference_success_ci_low/high (successful episodes "
          "only: the hardest level's ~30; the same bootstrap-t)", "coverage", 0.95, "coverage",
          difference_success_draw, difference_covers("_success"),
          f"{BY_LEVEL}; truth {level_truth(HARDEST, True) - level_truth(EASIEST, True):.1f}"),
    Entry("level_pairs_holm_familywise", "level_pairs.csv p_holm at one update: any of 3 pairs of levels below "
          "0.05 (stats.py, difficulty.routing_across_runs)", "rejection", ALPHA, "null", runs_by_level,
          pairs_any_holm, "3 runs, 3 levels of equal LPC (a run's level shared by its levels), 20 episodes each"),
    Entry("level_pairs_any_unadjusted", "the same 3 pair tests, each at its own p", "rejection", ALPHA,
          "pseudo", runs_by_level, pairs_any_unadjusted, "3 runs, 3 levels of equal LPC"),
    Entry("level_lpc_across_runs_coverage", "by_level.csv lpc_ci_low/high (95% t over 3 runs of each run's "
          "clustered mean, clipped at 0)", "coverage", 0.95, "coverage", runs_by_level, across_runs_covers,
          "3 runs; a run's LPC N(500, 60), its episodes' N(run's, 40), 5-30 steps; truth 500"),
    Entry("causal_summary_one_test_null", "causal_summary.csv p (t over runs of one run-level effect; causal.py, "
          "causal.summarize): one (expert, intervention, metric)", "rejection", ALPHA, "null", causal_effects,
          summary_one_rejects, "3 runs x 9 experts x 3 interventions x 4 metrics; no effect on average over runs"),
    Entry("causal_summary_holm_familywise", "causal_summary.csv p_holm: any of the 108 tests below 0.05 (Holm "
          "over the table)", "rejection", ALPHA, "null", causal_effects, summary_any_holm,
          "every intervention: no effect on average over runs"),
    Entry("causal_summary_any_unadjusted", "the same 108 tests, each at its own p", "rejection", ALPHA, "pseudo",
          causal_effects, summary_any_unadjusted, "every intervention: no effect on average over runs"),
    Entry("causal_layout_interval_coverage", "causal_effects.csv layout_ci_low/high for success (percentile "
          "bootstrap over 100 shared layouts: this network)", "coverage", 0.95, "coverage", layout_arms,
          layout_interval_covers, "a layout's success q ~ U(0.3, 1), intervened q - 0.1; truth -0.1", cost=2),
    Entry("attribution_share_now_coverage", "attribution.py --aggregate's ci_low/high at offset 0 (95% over 20 "
          "episodes: t widened to the bootstrap-t, clipped to [0, 1])", "coverage", 0.95, "coverage", attribution_profiles, share_covers(0),
          f"20 episodes, Dirichlet shares alike within an episode; truth {SHARE_TRUTH[-1]:.3f}"),
    Entry("attribution_share_oldest_coverage", f"the same at offset -{WINDOW} (a small, skewed share)",
          "coverage", 0.95, "coverage", attribution_profiles, share_covers(-WINDOW),
          f"the same data; truth {SHARE_TRUTH[0]:.4f}"),
    Entry("attribution_share_oldest_t_only", f"the former interval at offset -{WINDOW}: the Student t over "
          "episodes alone, clipped", "coverage", 0.95, "coverage", attribution_profiles, share_t_only_covers,
          f"the same data; truth {SHARE_TRUTH[0]:.4f}",
          outcome=f"fixed in {FIX_SHARE}: widened to the bootstrap-t (row above)"),
    Entry("against_kinds_holm_familywise", "failures.py --against p per instruction kind (McNemar exact, "
          "Holm over the kinds; contrasts.exact_paired_by_group): any kind below 0.05", "rejection", ALPHA, "null",
          against_null, against_any_holm, "500 layouts of 4 kinds (30/20/30/20%); two checkpoints alike on every layout"),
    Entry("against_kinds_any_unadjusted", "the same 4 kind tests, each at its own p", "rejection", ALPHA, "pseudo",
          against_null, against_any_unadjusted, "the same null"),
    Entry("demo_fit_own_ce_coverage", "bench/demo_fit.py own ce_ci_low/high (per step, bootstrap-t over "
          "episodes: routing_analysis.clustered_interval)", "coverage", 0.95, "coverage", fit_draw, fit_own_covers,
          f"500 episodes; 13% failures of 576 steps carry ~2/3 of the steps, per-step CE skewed; truth {fit_truth('own'):.3f}",
          cost=10),
    Entry("demo_fit_own_ce_t_only", "the interval it first printed: clustered_mean's jackknife error, "
          "Student's t", "coverage", 0.95, "coverage", fit_draw, fit_own_t_covers,
          f"the same data; truth {fit_truth('own'):.3f}", cost=2,
          outcome="fixed before it was reported: demo_fit prints the bootstrap-t (row above)"),
    Entry("demo_fit_gap_coverage", "bench/demo_fit.py own − held out ce_ci_low/high (bootstrap-t over the "
          "two sets' episodes: clustered_difference)", "coverage", 0.95, "coverage", fit_draw, fit_gap_covers,
          f"500 + 500 episodes, the same sets; truth {fit_truth('own') - fit_truth('held out'):.3f}", cost=20),
    *[Entry(f"demo_fit_breakdown_{cell}_coverage", "bench/demo_fit.py --breakdown accuracy_ci_low/high (and "
            "costly_rate's: per step, Wilson at the effective sample size, routing_analysis.clustered_proportion)",
            "coverage", 0.95, "coverage", breakdown_draw(cell), breakdown_covers,
            f"500 episodes; a group's steps per episode Poisson({lam}), its error rate Beta(mean {p}, "
            f"concentration 20); truth {1 - p}") for cell, (lam, p) in BREAKDOWN_CELLS.items()],
    Entry("demo_fit_breakdown_rare_bootstrap_t", "the interval the breakdown first printed: the bootstrap-t "
          "(clustered_interval)", "coverage", 0.95, "coverage", breakdown_draw("rare"), breakdown_bootstrap_t_covers,
          "the rare group's data; truth 0.98", cost=5,
          outcome="fixed before it was reported: the breakdown prints Wilson at the effective size (row above)"),
]
# fmt: on
