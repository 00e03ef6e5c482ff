"""Calibration entries for the analyses across runs of the routing and its causes, registered in
bench/calibration.py's ENTRIES (which runs and reports them; see its docstring): causal.py's
prediction test, stats.py --time_course's family, stats.py's knockouts across runs, the
learning-speed "hardest level" verdict (mop.difficulty) and the routing intervals by the bot's
subgoal and around events (mop.subgoal_analysis). Each simulator's unit of replication is a run
(a seed); each entry calls the function the tool calls.

    python bench/calibration.py --draws 3000 --only knockout_one_test_null,hardest_two_tied_7_repeats --merge
    python bench/calibration.py --draws 200 --only subgoal_within_cell_null --out /tmp/c.md
"""

from __future__ import annotations

import atexit
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from calibration_lib.entry import ALPHA, EPISODES, SEEDS, Entry, covers, rejects

FIX_HARDEST = "19bc558"  # the commit that gave the learning-speed 'hardest' its error bound


def expit(x: Any) -> Any:
    return 1 / (1 + np.exp(-x))


# ----------------------------------------------------------------------------- causal.py, time course


def causal_experts(rng: np.random.Generator, identity_effect: float = 0.0) -> tuple:
    """3 runs x 3 layers x 3 experts (expert 0 the identity): a statistic and an effect, independent
    among the sized ones; identity_effect > 0: the identity is heaviest and most costly to remove."""
    runs = np.repeat(np.arange(3), 9)
    identity = np.tile(np.arange(9) % 3 == 0, 3)
    stat = rng.uniform(0.0, 0.3, 27)
    effect = rng.normal(0.0, 0.05, 27)
    if identity_effect:
        stat[identity] += 0.6
        effect[identity] -= identity_effect
    return (stat, effect, runs, identity, int(rng.integers(2**31))), 0.0


def causal_confounded(rng: np.random.Generator) -> tuple:
    return causal_experts(rng, identity_effect=0.5)


def causal_all_rejects(inputs: tuple, truth: Any) -> bool:
    from mop import causal

    stat, effect, runs, _, seed = inputs
    return rejects(causal.within_run_spearman(stat, effect, runs, 199, seed)["p"])


def causal_sized_rejects(inputs: tuple, truth: Any) -> bool:
    from mop import causal

    stat, effect, runs, identity, seed = inputs
    keep = ~identity
    return rejects(causal.within_run_spearman(stat[keep], effect[keep], runs[keep], 199, seed)["p"])


def causal_interval_covers(inputs: tuple, truth: float) -> bool:
    from mop import causal

    stat, effect, runs, _, seed = inputs
    r = causal.within_run_spearman(stat, effect, runs, 19, seed)
    return covers(r["ci_low"], r["ci_high"], truth)


def time_course_null(rng: np.random.Generator) -> tuple:
    """3 runs x 3 levels x 4 updates, every level's LPC the same in truth (run spread, episode noise)."""
    course = {}
    for update in (250, 500, 750, 1000):
        course[update] = {}
        for run in range(3):
            base = rng.normal(500.0, 60.0)
            course[update][(0, run)] = {
                level: pd.DataFrame(
                    {
                        "mean_lpc": base + rng.normal(0.0, 40.0, 20),
                        "length": np.full(20, 10),
                        "success": np.ones(20),
                    }
                )
                for level in ("A", "B", "C")
            }
    return course, None


def time_course_any(course: dict, truth: Any) -> bool:
    from mop import difficulty

    _, pairs, _ = difficulty.routing_time_course(course)
    return bool((pairs["p_holm"] < ALPHA).any())


def time_course_any_unadjusted(course: dict, truth: Any) -> bool:
    from mop import difficulty

    _, pairs, _ = difficulty.routing_time_course(course)
    return bool((pairs["p"].astype(float) < ALPHA).any())


# ----------------------------------------------------------------------------- knockouts across runs

KNOCKOUT_TASK = "BabyAI-GoToLocal-v0"
KNOCKOUT_CONDITIONS = {"alpha_0": 0.0, "alpha_1e-4": 1e-4}  # condition: its lpc_alpha
KNOCKOUTS = ("layer_0:1", "layer_1:2")  # per run and condition: 2 knockouts x 2 metrics = 8 tests


def knockout_runs(rng: np.random.Generator, effect: float = 0.0) -> tuple:
    """stats.py's knockout inputs: 2 conditions x SEEDS runs, each run's final checkpoint evaluated
    on EPISODES layouts without a knockout (the seed-metrics table) and with each of 2 knockouts
    (the results CSV). A run's success logit is N(1.5, 0.4) and its LPC N(400, 50); a knockout
    moves a run's logit by N(effect, 0.3) (the expert helps in one run and hurts in another) and
    its LPC by N(0, 15): with effect 0 the recipe's knockout changes nothing on average over runs."""
    table, results = [], []
    for trial, (condition, alpha) in enumerate(KNOCKOUT_CONDITIONS.items()):
        for seed in range(SEEDS):
            cache = f"cache/trial_{trial}/seed_{seed}"
            run = {"task_id": KNOCKOUT_TASK, "trial": trial, "seed": seed, "update": 1000}
            logit, lpc = rng.normal(1.5, 0.4), rng.normal(400.0, 50.0)
            success = rng.binomial(EPISODES, expit(logit)) / EPISODES
            table.append(run | {"condition": condition, "lpc_alpha": alpha, "cache_path": cache}
                         | {"success_rate": success, "mean_lpc": lpc})  # fmt: skip
            evaluation = run | {"eval_task_id": KNOCKOUT_TASK, "checkpoint_path": f"{cache}.pt"}
            results.append(evaluation | {"knockout": "none", "cache_path": cache}
                           | {"success_rate": success, "mean_lpc": lpc})  # fmt: skip
            for knockout in KNOCKOUTS:
                knocked = rng.binomial(EPISODES, expit(logit + rng.normal(effect, 0.3))) / EPISODES
                results.append(evaluation | {"knockout": knockout, "cache_path": f"{cache}_{knockout}"}
                               | {"success_rate": knocked, "mean_lpc": lpc + rng.normal(0.0, 15.0)})  # fmt: skip
    return (pd.DataFrame(results), pd.DataFrame(table)), effect


def knockout_table(inputs: tuple) -> pd.DataFrame:
    """knockouts.csv as stats.py builds it (contrasts.knockout_pairs; no per-layout outcomes, so no
    exact tests). RuntimeError unless it holds every (condition, knockout, metric) over SEEDS runs:
    a table the code path silently shrank would read as 'nothing rejected'."""
    from mop.contrasts import knockout_pairs

    results, table = inputs
    knock, _ = knockout_pairs(results, KNOCKOUT_TASK, table, outcomes=lambda path: None)
    if len(knock) != len(KNOCKOUT_CONDITIONS) * len(KNOCKOUTS) * 2 or set(knock["n"]) != {SEEDS}:
        raise RuntimeError(f"knockout_pairs returned {len(knock)} rows (n {sorted(set(knock['n']))})")
    return knock


def knockout_one_rejects(inputs: tuple, truth: Any) -> bool:
    knock = knockout_table(inputs)
    first = knock[(knock["condition"] == "alpha_0") & (knock["knockout"] == KNOCKOUTS[0])]
    return rejects(first.loc[first["metric"] == "success_rate", "p"].iloc[0])


def knockout_any_holm(inputs: tuple, truth: Any) -> bool:
    return bool((knockout_table(inputs)["p_holm"] < ALPHA).any())


def knockout_any_unadjusted(inputs: tuple, truth: Any) -> bool:
    return any(rejects(p) for p in knockout_table(inputs)["p"])  # a p may be a reason: "no spread: no test"


# ----------------------------------------------------------------------------- the hardest level

LEVELS = ("level_a", "level_b", "level_c")
SPEED_SD = 0.35  # a repeat's updates to the threshold: the level's median x exp(N(0, SPEED_SD))
HEADLINE_SPEED = {"median": 200.0, "log_interval": 25, "updates": 400}  # headline.py's repeats
FINE_SPEED = {"median": 2000.0, "log_interval": 25, "updates": 6000}  # ties between repeats rare
_speed_root: list[Path] = []


def speed_root() -> Path:
    """One scratch folder per process for the repeats' metrics.jsonl, rewritten at every draw."""
    if not _speed_root:
        _speed_root.append(Path(tempfile.mkdtemp(prefix="calibration_speed_")))
        atexit.register(shutil.rmtree, _speed_root[0], True)
    return _speed_root[0]


def speed_repeats(
    rng: np.random.Generator,
    repeats: int,
    factors: tuple[float, ...],
    setting: dict,
    spreads: tuple[float, ...] = (SPEED_SD,) * len(LEVELS),
) -> tuple:
    """Single-task repeats of 3 levels: level i's median updates to ce <= 1 is setting's median
    x factors[i]; a repeat's own crossing is that x exp(N(0, spreads[i])). Truth: the hardest
    level's name, or None when two levels tie at the top (any 'hardest' is then wrong)."""
    crossing = [
        setting["median"] * f * np.exp(rng.normal(0.0, sd, repeats)) for f, sd in zip(factors, spreads)
    ]
    top = [i for i, f in enumerate(factors) if f == max(factors)]
    return (crossing, setting), (LEVELS[top[0]] if len(top) == 1 else None)


def speed_table(inputs: tuple) -> pd.DataFrame:
    """stats.py's by_level.csv speed columns: each repeat's metrics.jsonl written (train/ce every
    log_interval updates, ce = crossing / update, so ce <= 1 from the first logged update past the
    crossing; a repeat that never gets there is censored at `updates`), then learning_speed."""
    from mop import difficulty
    from mop.runs import METRICS_FILE

    crossing, setting = inputs
    step, last, rows = setting["log_interval"], setting["updates"], []
    for level, times in zip(LEVELS, crossing):
        folders = []
        for i, when in enumerate(times):
            folder = speed_root() / level / f"repeat_{i}"
            folder.mkdir(parents=True, exist_ok=True)
            # the rows up to the first logged crossing: later ones change nothing learning_speed reads
            stop = min(last, int(math.ceil(when / step)) * step)
            lines = [
                f'{{"update": {u}, "train/ce": {float(when) / u!r}}}' for u in range(step, stop + 1, step)
            ]
            (folder / METRICS_FILE).write_text("\n".join(lines) + "\n")
            folders.append(folder)
        rows.append(difficulty.learning_speed(level, folders, threshold=1.0))
    return pd.DataFrame(rows)


def hardest_wrong(inputs: tuple, truth: Any) -> bool:
    """hardest_level (the verdict stats.py prints) names a level that is not the hardest."""
    named = _hardest(inputs)
    return named is not None and named != truth


def _hardest(inputs: tuple) -> str | None:
    """The level hardest_level names from the repeats' written metrics (None: no verdict)."""
    from mop import difficulty

    table = speed_table(inputs)
    return difficulty.learning_speed_verdict(table, dict(zip(table["level"], table["updates"])))["hardest"]


def hardest_right(inputs: tuple, truth: Any) -> bool:
    """hardest_level names the truly hardest level (power)."""
    return _hardest(inputs) == truth


def ranking_wrong(inputs: tuple, truth: Any) -> bool:
    """The same intervals' ranking without hardest_level's error bound (the verdict before it)."""
    from mop.routing_analysis import ranking

    named = ranking(speed_table(inputs), "speed_median", "speed_ci_low", "speed_ci_high")["hardest"]
    return named is not None and named != truth


def bound_at(repeats: int) -> float:
    """The error bound hardest_level prints for 3 levels of `repeats` each."""
    from mop import difficulty

    confidence = difficulty.verdict_confidence(len(LEVELS))
    coverage = difficulty.median_interval(list(range(repeats)), confidence)["coverage"]
    return difficulty.verdict_error([coverage] * len(LEVELS))


def claimed_at(repeats: int) -> float:
    """What a standing verdict claims: its printed bound when that is <= MAX_ERROR, else
    MAX_ERROR (the verdict is withheld, so no wrong 'hardest' beyond 5% is ever printed)."""
    from mop import difficulty

    return min(bound_at(repeats), difficulty.MAX_ERROR)


# ----------------------------------------------------------------------------- routing by subgoal

SUBGOAL_EPISODES = 30  # evaluation episodes per run, 8-20 steps each
SIZES = [[0, 8]]  # one layer: the identity and an expert of size 8 (LPC = 64 x its weight)
WEIGHT = "layer_0_expert_1"
BASE, CELL_SLOPE, STEP_BUMP = 0.45, 0.1, 0.3  # expert 1's weight: the cell's and the step's effects


def _cell_subgoals(x: np.ndarray, t: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Explore far from the target (x small), Pickup next to it (x large), GoNextTo 0.3 throughout."""
    explore = 0.6 - 0.1 * x
    return np.where(u < explore, "Explore", np.where(u < explore + 0.3, "GoNextTo", "Pickup"))


def _step_subgoals(x: np.ndarray, t: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Explore at an episode's first two steps (0.8), rarely later (0.1); then GoNextTo or Pickup."""
    explore = np.where(t < 2, 0.8, 0.1)
    return np.where(u < explore, "Explore", np.where(u < explore + (1 - explore) / 2, "GoNextTo", "Pickup"))


CONFOUNDS = {"cell": _cell_subgoals, "step": _step_subgoals}


def subgoal_run(rng: np.random.Generator, confound: str) -> pd.DataFrame:
    """One run's steps as a routing cache records them. Routing does not depend on the subgoal:
    the weight of expert 1 is BASE + a run effect N(0, 0.04) + an episode effect N(0, 0.03) +
    U(-0.1, 0.1) per step, plus CELL_SLOPE (x - 2.5) with confound 'cell' (x in 0..5: the cell,
    which also sets the subgoal) or STEP_BUMP at the first two steps with confound 'step' (the
    policy's memory just reset, when the bot explores). The weight stays inside [0, 1] but for
    noise beyond 3 sd, so the clip leaves the truth as stated."""
    from mop.routing_cache import EVENT_COLUMNS

    lengths = rng.integers(8, 21, SUBGOAL_EPISODES)
    episode = np.repeat(np.arange(SUBGOAL_EPISODES), lengths)
    t = np.concatenate([np.arange(n) for n in lengths])
    x, y = rng.integers(0, 6, len(t)), rng.integers(0, 4, len(t))
    weight = BASE + rng.normal(0, 0.04) + rng.normal(0, 0.03, SUBGOAL_EPISODES)[episode]
    weight += rng.uniform(-0.1, 0.1, len(t))
    weight += CELL_SLOPE * (x - 2.5) if confound == "cell" else STEP_BUMP * (t < 2)
    weight = np.clip(weight, 0.0, 1.0)
    steps = pd.DataFrame({"episode": episode, "t": t, "x": x, "y": y})
    steps["subgoal"] = CONFOUNDS[confound](x, t, rng.random(len(t)))
    steps["subgoal_target"] = ""
    steps = steps.assign(**{e: 0 for e in EVENT_COLUMNS})
    return steps.assign(layer_0_expert_0=1 - weight, layer_0_expert_1=weight, lpc=64 * weight)


def explore_truth() -> float:
    """Explore's expected weight of expert 1 under the cell confound: BASE + CELL_SLOPE (E[x |
    Explore] - 2.5), x uniform on 0..5 and P(Explore | x) = 0.6 - 0.1 x (_cell_subgoals)."""
    x = np.arange(6)
    explore = 0.6 - 0.1 * x
    return BASE + CELL_SLOPE * (float((explore * x).sum() / explore.sum()) - 2.5)


def subgoal_runs(rng: np.random.Generator, confound: str) -> tuple:
    """SEEDS runs; truth (confound 'cell'): Explore's expected weight, the 'none' rows' target."""
    runs = {f"trial_0/seed_{s}": subgoal_run(rng, confound) for s in range(SEEDS)}
    return runs, explore_truth() if confound == "cell" else None


def subgoal_table(runs: dict) -> pd.DataFrame:
    """routing_by_subgoal.csv as render_plots.py --subgoals writes it, over the SEEDS runs."""
    from mop.subgoal_analysis import routing_by_subgoal

    return routing_by_subgoal(runs, SIZES)


def subgoal_row(table: pd.DataFrame, subgoal: str, adjustment: str) -> pd.Series:
    """The table's row of a subgoal's weight of expert 1 under an adjustment; RuntimeError unless
    it is over SEEDS runs (a row over fewer, or over one run's episodes, is another interval)."""
    row = table[
        (table["subgoal"] == subgoal) & (table["quantity"] == WEIGHT) & (table["adjustment"] == adjustment)
    ]
    if len(row) != 1 or row["n_units"].iloc[0] != SEEDS or row["unit"].iloc[0] != "runs":
        raise RuntimeError(f"routing_by_subgoal: no row over {SEEDS} runs for {subgoal} / {adjustment}")
    return row.iloc[0]


def subgoal_covers(runs: dict, truth: float) -> bool:
    row = subgoal_row(subgoal_table(runs), "Explore", "none")
    return covers(row["ci_low"], row["ci_high"], truth)


def subgoal_excludes_zero(adjustment: str) -> Any:
    """An adjusted row read against the figure's zero line: Explore's interval excludes 0."""

    def run(runs: dict, truth: Any) -> bool:
        row = subgoal_row(subgoal_table(runs), "Explore", adjustment)
        return not covers(row["ci_low"], row["ci_high"], 0.0)

    return run


def subgoal_pair_separates(adjustment: str, other: str = "Pickup") -> Any:
    """The figure read as a comparison: Explore's and another subgoal's intervals do not overlap."""

    def run(runs: dict, truth: Any) -> bool:
        table = subgoal_table(runs)
        a, b = subgoal_row(table, "Explore", adjustment), subgoal_row(table, other, adjustment)
        return bool(a["ci_low"] > b["ci_high"] or b["ci_low"] > a["ci_high"])

    return run


def event_runs(rng: np.random.Generator) -> tuple:
    """SEEDS runs, one pickup per episode at step k ~ U(3, L - 4): expert 1's weight 0.4 +
    0.15 exp(-abs(t - k)) + run, episode and step noise as subgoal_run's. Truth at offset 0: 0.55."""
    from mop.routing_cache import EVENT_COLUMNS

    runs = {}
    for s in range(SEEDS):
        lengths = rng.integers(10, 21, SUBGOAL_EPISODES)
        episode = np.repeat(np.arange(SUBGOAL_EPISODES), lengths)
        t = np.concatenate([np.arange(n) for n in lengths])
        at = np.array([rng.integers(3, n - 3) for n in lengths])[episode]
        weight = 0.4 + 0.15 * np.exp(-np.abs(t - at)) + rng.normal(0, 0.04)
        weight += rng.normal(0, 0.03, SUBGOAL_EPISODES)[episode] + rng.uniform(-0.1, 0.1, len(t))
        steps = pd.DataFrame({"episode": episode, "t": t, "x": 0, "y": 0, "subgoal": "Pickup"})
        steps["subgoal_target"] = ""
        steps = steps.assign(
            **{e: (t == at).astype(int) if e == "event_pickup" else 0 for e in EVENT_COLUMNS}
        )
        runs[f"trial_0/seed_{s}"] = steps.assign(layer_0_expert_0=1 - weight, layer_0_expert_1=weight)
    return runs, 0.55


def event_covers(runs: dict, truth: float) -> bool:
    from mop.subgoal_analysis import event_locked

    table = event_locked(runs, "event_pickup", k=2)
    row = table[(table["offset"] == 0) & (table["quantity"] == WEIGHT)].iloc[0]
    return covers(row["ci_low"], row["ci_high"], truth)


# causal.py's prediction test and its identity control; stats.py --time_course's family
# fmt: off
ENTRIES: list[Entry] = [
    Entry("causal_predict_within_run_null", "causal_predict.csv p (does a routing statistic order the experts' "
          "effects? mean within-run Spearman, statistic permuted within runs)", "rejection", ALPHA, "null",
          causal_experts, causal_all_rejects, "3 runs x 9 experts, statistic and effect independent"),
    Entry("causal_predict_interval_at_0", "causal_predict.csv ci_low/high (95% t over runs of Fisher's z)",
          "coverage", 0.95, "coverage", causal_experts, causal_interval_covers, "3 runs x 9 experts, true rho 0"),
    Entry("causal_predict_identity_confound", "causal_predict.csv p over all experts when the identity is "
          "heaviest and most harmful to remove", "rejection", ALPHA, "confound", causal_confounded,
          causal_all_rejects, "no link among the sized experts; each layer's identity heavy and costly to remove"),
    Entry("causal_predict_sized_control", "causal_predict.csv p, experts 'sized (identity left out)': the "
          "control of the row above", "rejection", ALPHA, "null", causal_confounded, causal_sized_rejects,
          "the same data: no link among the sized experts"),
    Entry("time_course_holm_familywise", "time_course_pairs.csv p_holm: any of 4 updates x 3 pairs of levels "
          "below 0.05 (stats.py --time_course)", "rejection", ALPHA, "null", time_course_null, time_course_any,
          "3 runs, 3 levels of equal LPC, 4 evaluated updates", cost=8),
    Entry("time_course_any_unadjusted", "the same 12 tests, each at its own p (every update looked at without "
          "a family)", "rejection", ALPHA, "pseudo", time_course_null, time_course_any_unadjusted,
          "3 runs, 3 levels of equal LPC, 4 evaluated updates", cost=8),
]
# fmt: on

# stats.py's knockouts across runs (contrasts.knockout_pairs)
# fmt: off
ENTRIES += [
    Entry("knockout_one_test_null", "knockouts.csv p (paired t of knockout - none across runs; stats.py, "
          "contrasts.knockout_pairs): one (condition, knockout, metric)", "rejection", ALPHA, "null", knockout_runs,
          knockout_one_rejects, "2 conditions x 3 runs; a knockout moves a run's logit by N(0, 0.3): no effect on average"),
    Entry("knockout_holm_familywise", "knockouts.csv p_holm: any of 2 conditions x 2 knockouts x 2 metrics "
          "below 0.05 (Holm over the table)", "rejection", ALPHA, "null", knockout_runs, knockout_any_holm,
          "every knockout: no effect on success or LPC on average over runs"),
    Entry("knockout_any_unadjusted", "the same 8 knockout tests, each at its own p (without the table's Holm)",
          "rejection", ALPHA, "pseudo", knockout_runs, knockout_any_unadjusted,
          "every knockout: no effect on average over runs"),
]
# fmt: on

# the learning-speed 'hardest level' (difficulty.hardest_level), at headline.py's repeats and at 7
HEADLINE_3 = (
    "3 levels x 3 repeats (headline.py's counts), ce logged every 25 updates, median 2000 (ties rare)"
)
HEADLINE_GRID = "(headline.py: ce logged every 25 of 400 updates; median 200 to ce <= 1)"
TIED = "the two slowest levels tie, the third's median 0.4x theirs (repeat sd 0.35 in log)"
MARGIN = "level A truly hardest by a small margin: its median 1.2x B's and C's (repeat sd 0.35 in log)"
# fmt: off
ENTRIES += [
    Entry("hardest_two_tied_3_repeats", "difficulty.json learning_speed 'hardest' (hardest_level: stands only "
          "when its bound is <= 5%) names a level that is not the hardest", "rejection", claimed_at(3), "null",
          lambda rng: speed_repeats(rng, 3, (1.0, 1.0, 0.4), FINE_SPEED), hardest_wrong, f"{HEADLINE_3}; {TIED}"),
    Entry("hardest_unbounded_ranking_3_repeats", "the former 'hardest' (ranking: the intervals separate, no "
          "error bound) on the same data", "rejection", claimed_at(3), "null",
          lambda rng: speed_repeats(rng, 3, (1.0, 1.0, 0.4), FINE_SPEED), ranking_wrong,
          f"{HEADLINE_3}; {TIED}", outcome=f"fixed in {FIX_HARDEST}: hardest_level withholds it (row above)"),
    Entry("hardest_margin_3_repeats", "difficulty.json 'hardest' names a level other than the truly hardest",
          "rejection", claimed_at(3), "null", lambda rng: speed_repeats(rng, 3, (1.2, 1.0, 1.0), HEADLINE_SPEED),
          hardest_wrong, f"3 levels x 3 repeats {HEADLINE_GRID}; {MARGIN}"),
    Entry("hardest_two_tied_7_repeats", f"difficulty.json 'hardest' at 7 repeats (the repeats it asks for: "
          f"prints 'a wrong hardest has probability <= {bound_at(7):.1%}')", "rejection", claimed_at(7), "null",
          lambda rng: speed_repeats(rng, 7, (1.0, 1.0, 0.4), FINE_SPEED), hardest_wrong,
          "3 levels x 7 repeats, ce logged every 25 updates, median 2000 (ties rare); " + TIED),
    Entry("hardest_tied_unequal_spread_7_repeats", "difficulty.json 'hardest' at 7 repeats when the tied "
          "levels differ in spread (the shape the bound is built for)", "rejection", claimed_at(7), "null",
          lambda rng: speed_repeats(rng, 7, (1.0, 1.0, 0.4), FINE_SPEED, (0.35, 0.02, 0.35)), hardest_wrong,
          "as the row above, but one of the tied levels' repeats all alike (sd 0.02 in log)"),
    Entry("hardest_margin_7_repeats", "difficulty.json 'hardest' at 7 repeats names a level other than the "
          "truly hardest", "rejection", claimed_at(7), "null",
          lambda rng: speed_repeats(rng, 7, (1.2, 1.0, 1.0), HEADLINE_SPEED), hardest_wrong,
          f"3 levels x 7 repeats {HEADLINE_GRID}; {MARGIN}"),
    Entry("hardest_two_tied_9_repeats", f"difficulty.json 'hardest' at 9 repeats (intervals at 97.5% for 3 "
          f"levels: prints 'a wrong hardest has probability <= {bound_at(9):.1%}')", "rejection", claimed_at(9),
          "null", lambda rng: speed_repeats(rng, 9, (1.0, 1.0, 0.4), FINE_SPEED), hardest_wrong,
          "3 levels x 9 repeats, ce logged every 25 updates, median 2000 (ties rare); " + TIED),
    Entry("hardest_named_9_repeats", "difficulty.json names the truly hardest level at 9 repeats (before the "
          "verdict's intervals were set by the levels compared, 9 repeats gave 95% intervals covering 96.1%, "
          "a bound of 7.8%, and no verdict at all)", "rejection", ALPHA, "power",
          lambda rng: speed_repeats(rng, 9, (3.0, 1.0, 1.0), FINE_SPEED), hardest_right,
          "3 levels x 9 repeats, ce logged every 25 updates, median 2000; level A truly hardest, its median "
          "3x B's and C's (repeat sd 0.35 in log)"),
]
# fmt: on

# routing by the bot's subgoal and around events (subgoal_analysis), confounded by the cell or the step
CELL = (
    "3 runs x 30 episodes; routing follows the cell (+0.1 per column), so does the subgoal; no subgoal effect"
)
STEP = "3 runs x 30 episodes; routing +0.3 at an episode's first 2 steps, when the bot mostly explores"
# fmt: off
ENTRIES += [
    Entry("subgoal_interval_coverage", "routing_by_subgoal.csv ci_low/high, adjustment none (95% t over 3 runs, "
          "clipped to [0, 1]; render_plots.py --subgoals)", "coverage", 0.95, "coverage",
          lambda rng: subgoal_runs(rng, "cell"), subgoal_covers, f"{CELL}; truth: Explore's expected weight"),
    Entry("subgoal_within_cell_null", "routing_by_subgoal.csv within_cell: Explore's interval excludes 0 (the "
          "figure's zero line)", "rejection", ALPHA, "null", lambda rng: subgoal_runs(rng, "cell"),
          subgoal_excludes_zero("within_cell"), CELL),
    Entry("subgoal_within_cell_pair_null", "within_cell rows: Explore's and Pickup's intervals do not overlap",
          "rejection", ALPHA, "null", lambda rng: subgoal_runs(rng, "cell"),
          subgoal_pair_separates("within_cell"), CELL),
    Entry("subgoal_unadjusted_cell_confound", "unadjusted rows (none): Explore's and Pickup's intervals do not "
          "overlap, the same data", "rejection", ALPHA, "confound", lambda rng: subgoal_runs(rng, "cell"),
          subgoal_pair_separates("none"), CELL),
    Entry("subgoal_within_step_null", "routing_by_subgoal.csv within_step: Explore's interval excludes 0",
          "rejection", ALPHA, "null", lambda rng: subgoal_runs(rng, "step"), subgoal_excludes_zero("within_step"),
          f"{STEP}; no subgoal effect"),
    Entry("subgoal_within_step_pair_null", "within_step rows: Explore's and Pickup's intervals do not overlap",
          "rejection", ALPHA, "null", lambda rng: subgoal_runs(rng, "step"), subgoal_pair_separates("within_step"),
          f"{STEP}; no subgoal effect"),
    Entry("subgoal_unadjusted_step_confound", "unadjusted rows (none): Explore's and Pickup's intervals do not "
          "overlap, the same data", "rejection", ALPHA, "confound", lambda rng: subgoal_runs(rng, "step"),
          subgoal_pair_separates("none"), f"{STEP}; no subgoal effect"),
    Entry("event_locked_coverage", "event_locked_routing.csv ci_low/high at offset 0 (95% t over 3 runs, "
          "clipped to [0, 1])", "coverage", 0.95, "coverage", event_runs, event_covers,
          "3 runs x 30 episodes, one pickup each; weight 0.4 + 0.15 exp(-abs(offset)) + noise; truth 0.55"),
]
# fmt: on
