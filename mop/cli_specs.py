"""The command lines of stats.py and render_plots.py, without their heavy imports (pandas,
scipy, matplotlib, pyarrow): each script parses its flags with these before it imports them, so
`--help`, a misspelt flag or a bad value answers at once (bench/startup.py), and parses them again
with the same parser in its main.

    args = stats_parser(stats.__doc__).parse_args(["--task_id", "BabyAI-GoToLocal-v0"])
"""

from __future__ import annotations

import argparse

from mop.experiment import ArgumentParser

STATS_STATES = ("cell", "cell_dir_carry")  # stats.STATES' keys (tests/test_startup.py checks)
STATS_MIN_VISITS = 5  # seed_metrics.MIN_VISITS (tests/test_startup.py checks)
LAYOUTS = ("screen", "paper")  # mop.plot_style's figure layouts


def stats_parser(description: str | None) -> argparse.ArgumentParser:
    parser = ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--task_id", "--task", dest="task_id", required=True, help="gymnasium id of the level"
    )
    parser.add_argument(
        "--cache_dir", default="evaluation_cache", help="routing cache root (default evaluation_cache)"
    )
    parser.add_argument(
        "--results_path",
        default="evaluation_results.csv",
        help="results CSV: lpc_alpha, knockouts, older runs' recipes",
    )
    parser.add_argument(
        "--out", default=None, help="output folder (default stats/<task_id>, or stats/<manifest name>)"
    )
    parser.add_argument(
        "--update",
        type=int,
        default=None,
        help="compare the runs at this update (default: per condition, the newest update all its runs have)",
    )
    parser.add_argument(
        "--min_visits", type=int, default=STATS_MIN_VISITS, help="visits for a cell to count (default 5)"
    )
    parser.add_argument(
        "--state",
        choices=list(STATS_STATES),
        default="cell",
        help="the state of H(A|S) and KL (default cell)",
    )
    parser.add_argument(
        "--manifest", default=None, help="a sweep manifest: only its runs (sweep.py writes it)"
    )
    parser.add_argument(
        "--contrast",
        action="append",
        default=[],
        help="FACTORS[=A:B]: paired-by-seed contrasts of the conditions that differ in these config keys "
        "(comma list; policy_type for MoP vs GRU) alone, or of conditions A and B (repeatable)",
    )
    parser.add_argument(
        "--metrics",
        default=None,
        help="comma list: the metrics of the contrasts' Holm family (default every contrast metric: "
        "success_rate, mean_lpc, policy_complexity, path_ratio); the family is the pairs asked by "
        "--contrast x these metrics, whatever else the table holds",
    )
    parser.add_argument(
        "--single_task_dir",
        action="append",
        default=None,
        help="multi-task --task_id: where the single-task repeats of the recipe are (repeatable; default checkpoints)",
    )
    parser.add_argument(
        "--ce_threshold",
        type=float,
        default=1.0,
        help="multi-task: learning speed = updates to train/ce <= this (1.0)",
    )
    parser.add_argument(
        "--margin",
        action="append",
        default=[],
        help="[METRIC=]M: the equivalence margin of contrasts (paired TOST, 90%% CI inside ±M on the "
        "difference scale; a bare M is success_rate's; repeatable). Without one, a non-significant "
        "contrast is 'not resolved', never 'alike'",
    )
    parser.add_argument(
        "--time_course",
        action="store_true",
        help="multi-task --task_id: routing by level at every update the runs were evaluated at "
        "(time_course.csv, time_course_pairs.csv with Holm over updates x pairs, a figure per condition)",
    )
    parser.add_argument("--force", action="store_true", help="recompute every cache's row")
    parser.add_argument("--no_figures", action="store_true", help="tables only")
    parser.add_argument(
        "--layout",
        choices=list(LAYOUTS),
        default="screen",
        help="figures at most 10.5 in wide (screen, default) or one 3.3 in paper column (paper)",
    )
    return parser


def render_plots_parser(description: str | None) -> argparse.ArgumentParser:
    parser = ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", action="append", default=None, help="a routing cache folder (repeatable)")
    parser.add_argument("--all", action="store_true", help="every cache under --cache_dir")
    parser.add_argument(
        "--by_level",
        action="store_true",
        help="routing by level of every checkpoint evaluated on several levels (from --results_path)",
    )
    parser.add_argument(
        "--cache_dir", default="evaluation_cache", help="cache root for --all (default evaluation_cache)"
    )
    parser.add_argument("--out", default="plots", help="output root (default plots/)")
    parser.add_argument(
        "--results_path", default="evaluation_results.csv", help="for the knockout comparison"
    )
    parser.add_argument("--dpi", type=int, default=150)
    parser.add_argument(
        "--layout",
        choices=list(LAYOUTS),
        default="screen",
        help="figures at most 10.5 in wide (screen, default) or one 3.3 in paper column (paper)",
    )
    parser.add_argument(
        "--subgoals",
        action="store_true",
        help="routing by subgoal and around events across the given caches, one per run (needs caches "
        "recorded with eval_mop.py --record_subgoals)",
    )
    parser.add_argument(
        "--event_k",
        type=int,
        default=5,
        help="steps before and after each event in the event-locked figure (default 5; at most the "
        "longest episode's last step)",
    )
    return parser
