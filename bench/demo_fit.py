"""Does a student trained on bot demos fit them, generalise them, or err on its own states?

For each checkpoint, teacher-forced cross-entropy per labelled step and accuracy (95% intervals
clustered by episode) on three sets of `--episodes` episodes: demos it trained on (drawn from its
demo store), the bot's episodes on evaluation layouts (held out), and the student's own greedy
episodes on those layouts labelled by the bot (its success is the evaluation's); then held out −
trained and own − held out, with bootstrap-t intervals. How to read it, and the statistics:
mop/demo_fit.py. An online run (no demo store) gets no trained row. --breakdown: where the trained
and held-out sets' unfit labels are (the bot's subgoal, the action, the subgoal's target in view or
only remembered), and what each error costs in the bot's steps.

    python bench/demo_fit.py --checkpoint RUN/BabyAI-Unlock-v0/trial_0/checkpoint_final.pt
    python bench/demo_fit.py --checkpoint RUN/.../checkpoint_4096.pt RUN/.../checkpoint_final.pt --out fit.csv
    python bench/demo_fit.py --checkpoint RUN/BabyAI-Unlock-v0/trial_0/checkpoint_final.pt --breakdown parts.csv
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mop.checks import ConfigError, check_number, command_edges, refuse  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", nargs="+", required=True, help="checkpoints of one level")
    p.add_argument("--episodes", type=int, default=500, help="episodes per set (default 500)")
    p.add_argument("--envs", type=int, default=16, help="envs the student's own episodes are played in")
    p.add_argument(
        "--demos_dir",
        default=None,
        help="where the runs' demo stores are (default: each run's demos_dir, from the current folder)",
    )
    p.add_argument("--out", default=None, help="write every row to this CSV (its folder must exist)")
    p.add_argument(
        "--breakdown",
        default=None,
        metavar="FILE.csv",
        help="also break the trained and held-out sets' unfit labels down by what the bot was doing "
        "(its subgoal, the action, whether the subgoal's target is in view) with each error's cost in "
        "the bot's steps, print it and write it to this CSV (mop/demo_fit.py breakdown_rows)",
    )
    return p


def check_args(args: argparse.Namespace) -> None:
    """Everything that can be refused before torch is imported."""
    check_number(args.episodes, "--episodes", 2, 100_000, whole=True)
    check_number(args.envs, "--envs", 1, 256, whole=True)
    for path in args.checkpoint:
        if not Path(path).is_file():
            raise ConfigError(f"--checkpoint {path!r} is not a file")
    for flag, value in (("--out", args.out), ("--breakdown", args.breakdown)):
        if value is not None and (Path(value).suffix != ".csv" or not Path(value).parent.is_dir()):
            raise ConfigError(f"{flag} {value!r} must be a .csv file in an existing folder")
    if args.out is not None and args.out == args.breakdown:
        raise ConfigError("--out and --breakdown name the same file")
    if args.demos_dir is not None and not Path(args.demos_dir).is_dir():
        raise ConfigError(f"--demos_dir {args.demos_dir!r} is not a folder")


def interval(row, metric: str, scale: float, sign: bool = False) -> str:
    """`value [low, high]` times `scale`: 3 decimals for CE (scale 1), 1 for percentages; a
    difference (`sign`) shows its sign."""
    v, lo, hi = (row[metric] * scale, row[f"{metric}_ci_low"] * scale, row[f"{metric}_ci_high"] * scale)
    d = 3 if scale == 1 else 1
    return f"{v:{'+' if sign else ''}.{d}f} [{lo:.{d}f}, {hi:.{d}f}]"


def table_text(rows) -> str:
    import pandas as pd

    lines = [
        f"{'set':<22}{'episodes':>9}{'steps':>9}  {'CE nats/step [95% CI]':<26}{'accuracy % [95% CI]':<24}{'whole':>7}{'success':>9}"
    ]
    for _, r in rows.iterrows():
        gap = "−" in r["set"]
        steps = "" if gap else f"{int(r['labelled_steps']):,}"
        whole = "" if gap else f"{100 * r['whole_episodes']:.0f}%"
        success = "" if gap or pd.isna(r["success"]) else f"{100 * r['success']:.1f}%"
        lines.append(
            f"{r['set']:<22}{int(r['episodes']):>9}{steps:>9}  {interval(r, 'ce', 1, gap):<26}"
            f"{interval(r, 'accuracy', 100, gap):<24}{whole:>7}{success:>9}"
        )
    return "\n".join(lines)


def breakdown_text(rows) -> str:
    """One set's breakdown: per grouping and value, steps, errors, accuracy and the errors' cost
    (blank where no cost was measured: the student's own episodes)."""
    import pandas as pd

    costed = "costly_errors" in rows and rows["costly_errors"].notna().any()
    lines, width = [], max(33, 2 + max(len(g) for g in rows["group"]))
    for by, group in rows.groupby("by", sort=False):
        lines.append(
            f"  by {by:<{width - 3}}{'steps':>8}{'share':>7}{'errors':>8}{'share':>7}  {'accuracy % [95% CI]':<22}"
            + (f"{'costly':>7}{'median':>7}" if costed else "")
        )
        for _, r in group.iterrows():
            cost = ""
            if costed:
                median = r["costly_median_steps"]
                cost = f"{int(r['costly_errors']):>7}{'' if pd.isna(median) else f'{median:.0f}':>7}"
            lines.append(
                f"  {r['group']:<{width}}{int(r['steps']):>8,}{100 * r['step_share']:>6.1f}%{int(r['errors']):>8}"
                f"{100 * r['error_share']:>6.1f}%  {interval(r, 'accuracy', 100):<22}{cost}"
            )
    return "\n".join(lines)


def set_breakdowns(sets: dict, key: tuple):
    """(set, breakdown_rows, episodes left out) for the bot-driven sets (with each error's cost)
    and the student's own, solved and failed (the bot labelling the student's states)."""
    from mop.demo_fit import bot_subgoals, breakdown_rows

    for name in ("trained", "held out"):
        if name in sets:
            groups, left = bot_subgoals(key[0], sets[name].episodes, key[1], sets[name].step_argmax)
            yield name, breakdown_rows(sets[name], groups), left
    own = sets["own"]
    groups, left = bot_subgoals(key[0], own.episodes, key[1], taken=own.step_argmax)
    for name, outcome in (("own, solved", True), ("own, failed", False)):
        part = [g for g, solved in zip(groups, own.success) if solved == outcome]
        if part:
            yield name, breakdown_rows(sets[name], part), sum(g is None for g in part)


def breakdown_figures(held: list, out: Path, level: str) -> list[Path]:
    """Per checkpoint (held: its update and held-out breakdown, in --checkpoint order), the figure
    (subgoal_plots.plot_unfit_labels) beside the breakdown's CSV: parts.csv -> parts_update<U>.png,
    or parts_<k>_update<U>.png (k: the checkpoint's place in --checkpoint) where two checkpoints
    share an update (two runs)."""
    from mop.runs import atomic_write
    from mop.subgoal_plots import plot_unfit_labels

    shared = len({update for update, _ in held}) < len(held)
    paths = []
    for k, (update, parts) in enumerate(held):
        path = out.with_name(
            f"{out.stem}_{k}_update{update}.png" if shared else f"{out.stem}_update{update}.png"
        )
        fig = plot_unfit_labels(
            parts, title=f"{level}, update {update}: the bot's labels the student does not fit"
        )
        atomic_write(path, lambda tmp, fig=fig: fig.savefig(tmp, dpi=150, format="png"))
        paths.append(path)
    return paths


def main(argv: list[str] | None = None):
    args = build_parser().parse_args(argv)
    try:
        check_args(args)
    except ConfigError as e:
        refuse(str(e))
    import pandas as pd

    from mop.bot_demos import open_store
    from mop.demo_fit import demo_source, fit_rows, heldout_episodes, score_sets, trained_sample
    from mop.demo_store import DemoStoreError
    from mop.experiment import CheckpointError, load_checkpoint, load_policy
    from mop.runs import atomic_write_text

    tables, breakdowns, held, heldout, level = [], [], [], None, None
    for path in args.checkpoint:
        try:
            ckpt = load_checkpoint(path)
            policy, encoder, config = load_policy(path, ckpt=ckpt)
        except CheckpointError as e:
            refuse(str(e))
        key = (config["task_id"], config.get("max_steps"))
        if level is not None and key != level:
            refuse(
                f"--checkpoint {path!r} is of {key[0]} (step limit {key[1]}), the first of {level[0]} ({level[1]})"
            )
        trained, note = None, "an online run: no trained demos"
        source = demo_source(config, args.demos_dir)
        if source is not None:
            root, trained_on = source
            try:
                store = open_store(root, config["task_id"], int(config.get("demo_seed", 0)), key[1])
            except DemoStoreError as e:
                refuse(f"{e} (the demos {path!r} trained on; --demos_dir DIR)")
            trained = trained_sample(store, trained_on, args.episodes)
            note = f"trained: {len(trained)} of the {min(trained_on, len(store)):,} demos in {store.root}"
        if heldout is None:
            level = key
            heldout, skipped = heldout_episodes(key[0], args.episodes, key[1])
            print(
                f"held out: the bot's episodes on evaluation layouts (skipped {skipped} the bot did not solve)"
            )
        sets, cut = score_sets(policy, encoder, config, args.episodes, trained, heldout, args.envs)
        rows = fit_rows(sets)
        cut_note = f"; {cut} own episodes cut by a bot failure, left out" if cut else ""
        print(f"\n{path} (update {ckpt.get('update')}, {key[0]}); {note}{cut_note}")
        print(table_text(rows))
        tables.append(rows.assign(checkpoint=str(path), update=ckpt.get("update")))
        if args.breakdown is not None:
            for name, parts, left in set_breakdowns(sets, key):
                breakdowns.append(parts.assign(checkpoint=str(path), update=ckpt.get("update")))
                if name == "held out":
                    held.append((ckpt.get("update"), parts))
                dropped = (
                    f"; {left} episodes left out: the replayed bot did not give their labels" if left else ""
                )
                errors = int(parts.loc[parts["by"] == "action", "errors"].sum())  # each step has one action
                if name.startswith("own"):
                    print(
                        f"\n{name}: where it disagrees with the bot on its own states ({errors} steps; the bot "
                        f"labels its own route there, so these are DAgger's labels, not errors of the student's){dropped}"
                    )
                    parts = parts[parts["by"].isin(("subgoal", "view"))]
                else:
                    print(
                        f"\n{name}: where its {errors} unfit labels are (costly: the student's action leaves "
                        f"the bot more steps to finish; median: its extra steps){dropped}"
                    )
                print(breakdown_text(parts))
    table = pd.concat(tables, ignore_index=True)
    if breakdowns:
        atomic_write_text(args.breakdown, pd.concat(breakdowns, ignore_index=True).to_csv(index=False))
        print(f"\nwrote {args.breakdown}")
        for path in breakdown_figures(held, Path(args.breakdown), level[0]):
            print(f"wrote {path}")
    if args.out is not None:
        atomic_write_text(args.out, table.to_csv(index=False))
        print(f"\nwrote {args.out}")
    return table


if __name__ == "__main__":
    with command_edges():
        main(sys.argv[1:])
