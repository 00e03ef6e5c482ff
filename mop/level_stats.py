"""stats.py for a multi-task --task_id ("A,B,C"): per condition of its runs, each level's LPC
across runs and the levels' paired differences, beside their learning speed (single-task repeats
under --single_task_dir) and bot path length, a hardest level only where intervals separate
(mop.difficulty); with --time_course, the same at every evaluated update (Holm over updates x pairs)
and its figure. Writes by_level.csv, level_pairs.csv, difficulty.json [, time_course.csv,
time_course_pairs.csv, time_course_<condition>.png].

    run_levels(stats.build_parser().parse_args(["--task_id", "A,B,C", "--time_course"]))
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pandas as pd

from mop import conditions
from mop.inference import StatsError
from mop.results import read_results
from mop.routing_cache import load_cache
from mop.runs import atomic_write, check_writable_dir, safe_name


def run_levels(args: argparse.Namespace) -> dict:
    """A multi-task --task_id: per condition of its runs, routing by level across runs and the
    levels' difficulty (mop.difficulty): by_level.csv, level_pairs.csv, difficulty.json."""
    from mop import difficulty
    from mop.routing_analysis import ranking, routing_by_level
    from mop.runs import run_task_name

    name = safe_name(run_task_name(args.task_id), "--task_id")
    if args.update is not None and args.update < 0:
        raise StatsError(f"--update must be >= 0, got {args.update}")
    if not (args.ce_threshold > 0 and math.isfinite(args.ce_threshold)):
        raise StatsError(f"--ce_threshold must be a positive number, got {args.ce_threshold}")
    out = Path(args.out) if args.out else Path("stats") / name
    check_writable_dir(out, "--out")
    results = read_results(args.results_path)
    trained = results.get("trained_tasks", pd.Series(index=results.index, dtype=object))
    rows = results[
        (trained == args.task_id) & (results["knockout"] == "none") & results["cache_path"].notna()
    ]
    if rows.empty:
        raise StatsError(
            f"no evaluated multi-task run of {args.task_id} in {args.results_path!r} (batch_eval.py)"
        )
    if args.update is not None:
        rows = rows[rows["update"] == args.update]
    last = rows.assign(_u=rows["update"].astype("Float64").fillna(-1.0))
    last = last[last["_u"] == last.groupby(["trial", "seed"], dropna=False)["_u"].transform("max")]
    runs: dict[str, dict] = {}
    recipes, evaluations = condition_episodes(last)
    for cid, _, run, level, episodes in evaluations:
        runs.setdefault(cid, {}).setdefault(run, {})[level] = episodes
    labels = conditions.labels(recipes)
    by_level, pairs, verdicts, repeats = [], [], {}, {}
    roots = args.single_task_dir or ["checkpoints"]
    for cid, by_run in runs.items():
        levels, level_pairs = difficulty.routing_across_runs(by_run)
        first = next(iter(by_run.values()))
        paths = routing_by_level(first).set_index("level")
        for row in levels.to_dict("records"):
            level = row["level"]
            speed = difficulty.learning_speed(
                level, difficulty.single_task_runs(roots, level, recipes[cid]), args.ce_threshold, cid, out
            )
            row |= {k: paths.loc[level, k] for k in ("bot_path_mean", "bot_path_ci_low", "bot_path_ci_high")}
            row |= {
                k: speed.get(k)
                for k in ("repeats", "censored", "speed_median", "speed_ci_low", "speed_ci_high")
            }
            row |= {"speed_coverage": speed.get("speed_coverage"), "speed_note": speed.get("note", "")}
            repeats.setdefault(cid, {})[level] = speed.get("updates", [])
            by_level.append({"condition": cid, "condition_label": labels[cid]} | row)
        table = pd.DataFrame([r for r in by_level if r["condition"] == cid])
        verdicts[cid] = {
            "label": labels[cid],
            "runs": len(by_run),
            "learning_speed": difficulty.learning_speed_verdict(table, repeats[cid]),
            "bot_path_length": ranking(
                table, "bot_path_mean", "bot_path_ci_low", "bot_path_ci_high", "bot path length"
            ),
        }
        pairs += [
            {"condition": cid, "condition_label": labels[cid]} | p for p in level_pairs.to_dict("records")
        ]
    course = time_course(rows, args) if getattr(args, "time_course", False) else {}
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for file, df in (
        ("by_level.csv", pd.DataFrame(by_level)),
        ("level_pairs.csv", pd.DataFrame(pairs)),
        *course.get("tables", {}).items(),
    ):
        atomic_write(out / file, lambda p, df=df: df.to_csv(p, index=False))
        written[file] = str(out / file)
    atomic_write(
        out / "difficulty.json", lambda p: Path(p).write_text(json.dumps(verdicts, indent=1, default=str))
    )
    written["difficulty.json"] = str(out / "difficulty.json")
    for v in verdicts.values():
        print(
            f"{v['label']} ({v['runs']} runs): {v['learning_speed']['verdict']}; {v['bot_path_length']['verdict']}"
        )
    for r in by_level:
        print(
            f"  {r['level']}: LPC {r['lpc']:.0f} {_plain_interval(r['lpc_ci_low'], r['lpc_ci_high'])} over {r['runs']} runs; "
            f"updates to ce<={args.ce_threshold:g}: median {r['speed_median']} [{r['speed_ci_low']}, {r['speed_ci_high']}] "
            f"({r['repeats']} repeats); bot path {r['bot_path_mean']:.1f}"
        )
    for cid, fig in course.get("figures", {}).items():
        path = out / f"time_course_{cid}.png"
        atomic_write(path, lambda p, fig=fig: fig.savefig(p, dpi=150, format="png"))
        written[path.name] = str(path)
    for line in course.get("lines", []):
        print(line)
    print(f"wrote {len(written)} files to {out}/")
    return {"out": str(out), "written": written, "verdicts": verdicts}


def time_course(rows: pd.DataFrame, args: argparse.Namespace) -> dict:
    """--time_course: routing by level at every update the runs were evaluated at, per condition
    (mop.difficulty.routing_time_course): tables time_course.csv (per update and level) and
    time_course_pairs.csv (per update and pair of levels, Holm over the whole course), a figure per
    condition, and the lines to print (the family, the updates left out)."""
    from mop import difficulty

    by_update: dict[str, dict] = {}
    recipes, evaluations = condition_episodes(rows)
    for cid, update, run, level, episodes in evaluations:
        by_update.setdefault(cid, {}).setdefault(int(update), {}).setdefault(run, {})[level] = episodes
    labels = conditions.labels(recipes)
    levels, pairs, figures, lines = [], [], {}, []
    for cid, episodes in by_update.items():
        lv, pr, notes = difficulty.routing_time_course(episodes)
        lines += [f"time course of {labels[cid]}: {n}" for n in notes]
        if lv.empty:
            continue
        head = {"condition": cid, "condition_label": labels[cid]}
        levels.append(lv.assign(**head))
        if len(pr):
            pairs.append(pr.assign(**head))
            lines.append(f"time course of {labels[cid]}: {pr['family'].iloc[0]}")
        if not args.no_figures:
            from mop import stats_plots

            figures[cid] = stats_plots.plot_time_course(lv, labels[cid], layout=args.layout, pairs=pr)
    tables = {
        "time_course.csv": pd.concat(levels, ignore_index=True) if levels else pd.DataFrame(),
        "time_course_pairs.csv": pd.concat(pairs, ignore_index=True) if pairs else pd.DataFrame(),
    }
    return {"tables": tables, "figures": figures, "lines": lines}


def _plain_interval(low, high) -> str:
    return str(low) if isinstance(low, str) else f"[{low:.0f}, {high:.0f}]"


def condition_episodes(rows: pd.DataFrame) -> tuple[dict[str, dict], list[tuple]]:
    """(recipes by condition id, [(condition, update, (trial, seed), level, episodes)]) of results
    rows' routing caches; a row whose recipe is unknown (mop.conditions.run_recipe) is left out."""
    recipes: dict[str, dict] = {}
    out = []
    for r in rows.to_dict("records"):
        data = load_cache(r["cache_path"])
        rec, _ = conditions.run_recipe(data.meta.get("config") or {}, r)
        if rec is None:
            continue
        cid = conditions.condition_id(rec)
        recipes[cid] = rec
        out.append((cid, r["update"], (r["trial"], r["seed"]), r["eval_task_id"], data.episodes))
    return recipes, out
