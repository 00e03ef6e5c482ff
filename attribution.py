"""Which past observation made the router choose now? Integrated gradients through the recurrence.

For one step t of an evaluation episode and a target at t (a layer's routing weight for one expert,
or an action logit), integrated gradients attribute the target to every number of the encoded
observations of steps t-k..t, through the policy's memory carried from the episode start (the
steps before t-k keep their recorded inputs; the mission is held fixed); see mop/attribution.py
and docs/reference.md ("Attribution through time") for the method, the baseline and the checks.

    python attribution.py --checkpoint checkpoints/BabyAI-GoToLocal-v0/trial_0/checkpoint_final.pt --episode 3 --step 12 --window 8 --target router:layer0:expert2
    python attribution.py --checkpoint CK --episode 3 --step 12 --window 8 --target action --baseline mean
    python attribution.py --checkpoint CK --aggregate --num_episodes 20 --window 8 --target router:layer0:expert2

The episode is played in-process by eval_mop's own runner (greedy, layout seed EVAL_SEED_START +
episode, the run's step limit): the same episode, observations and actions as evaluation episode
N of `eval_mop.py` and its routing cache. One example writes a CSV (step_offset, t, x, y,
channel, value: one row per view cell and image channel per step, plus direction and carrying)
and a figure; every example also reports the completeness error (|Σ IG - (y(x) - y(b))| / |Δy|)
and the rank correlation of its map with the map of the same policy with randomised weights.
--aggregate attributes every --stride-th step (t >= k) of episodes 0..N-1 and writes the mean
share of |attribution| per step offset, by the bot's subgoal at t (replayed: mop.attribution).
"""

from __future__ import annotations

if __name__ == "__main__":  # flags answered before torch, pandas and scipy load (bench/startup.py)
    from mop.cli_specs import answer_early, attribution_parser, check_attribution_args

    answer_early(lambda: check_attribution_args(attribution_parser(__doc__).parse_args()))

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from eval_mop import ActedStep, run_episodes
from mop.attribution import (
    COMPLETENESS_TOLERANCE,
    AttributionError,
    abs_share_profile,
    attribution_table,
    baseline_vector,
    check_window,
    input_differs,
    integrated_gradients,
    map_rank_correlation,
    parse_target,
    randomized_copy,
    replay_subgoals,
    split_by_cell,
)
from mop.babyai_env import EVAL_SEED_START, check_task_id, encode_obs
from mop.checks import ConfigError, command_edges
from mop.cli_specs import attribution_parser, check_attribution_args
from mop.experiment import CheckpointError, load_policy
from mop.runs import OutputError, atomic_write, check_writable_dir, is_multi_task


def build_parser() -> argparse.ArgumentParser:
    return attribution_parser(__doc__)


# ----------------------------------------------------------------------------- episodes


def record_episodes(policy, encoder, config: dict, task_id: str, episodes: list[int]) -> dict[int, dict]:
    """Play evaluation episodes with eval_mop's runner and keep what the policy read: per episode
    image (T, 7, 7, 3), direction (T,), carrying (T,), actions (T,), mission, seed."""
    kept: dict[int, dict] = {
        e: {"image": [], "direction": [], "carrying": [], "actions": []} for e in episodes
    }

    def keep(step: ActedStep) -> None:
        for r, (e, t) in enumerate(zip(step.episode, step.t)):
            record = kept[e]
            assert len(record["actions"]) == t, "steps of an episode arrive in order"
            record["image"].append(step.batch.image[r].copy())
            record["direction"].append(int(step.batch.direction[r]))
            record["carrying"].append(int(step.batch.carrying[r]))
            record["actions"].append(int(step.action[r]))
            record["mission"] = step.batch.missions[r]

    with torch.no_grad():
        run_episodes(
            policy,
            encoder,
            config,
            task_id,
            episodes,
            num_envs=min(16, len(episodes)),
            max_steps=config.get("max_steps"),
            on_step=keep,
            measure_bot_paths=False,
        )
    for e, record in kept.items():
        record["image"] = np.stack(record["image"])
        record["seed"] = EVAL_SEED_START + e
        with torch.no_grad():
            record["lang"] = encoder([record["mission"]])[0].detach().float()
        record["obs"] = encode_obs(
            torch.from_numpy(record["image"]),
            torch.tensor(record["direction"]),
            torch.tensor(record["carrying"]),
            config["obs_encoding"],
        ).float()
    return kept


def attribute(policy, record: dict, step: int, args: argparse.Namespace, target) -> object:
    baseline = baseline_vector(record["obs"], args.baseline)
    return integrated_gradients(
        policy,
        record["obs"],
        record["lang"],
        step,
        args.window,
        target,
        record["actions"][step],
        baseline,
        args.ig_steps,
        args.max_ig_steps,
    )


# ----------------------------------------------------------------------------- checks of the command line


def check_args(args: argparse.Namespace) -> None:
    """Flag values that need no checkpoint (mop.cli_specs.check_attribution_args, checked before
    the imports too when run as a script); AttributionError naming the flag."""
    try:
        check_attribution_args(args)
    except ConfigError as e:
        raise AttributionError(str(e)) from None


def load(args: argparse.Namespace):
    if not Path(args.checkpoint).is_file():
        what = "a folder, not a checkpoint file" if Path(args.checkpoint).is_dir() else "no such file"
        raise AttributionError(f"--checkpoint {args.checkpoint!r}: {what}")
    try:
        policy, encoder, config = load_policy(args.checkpoint)
    except CheckpointError as e:
        raise AttributionError(f"--checkpoint: {e}") from None
    target = parse_target(args.target, policy)
    task_id = args.task_id or config["task_id"]
    if is_multi_task(task_id):
        raise AttributionError(f"--task_id {task_id}: names several levels; attribute one level at a time")
    try:
        check_task_id(task_id)
    except ValueError as e:
        raise AttributionError(f"--task_id: {e}") from None
    return policy, encoder, config, target, task_id


def _slug(text: str) -> str:
    return text.replace(":", "_").replace("/", "_")


# ----------------------------------------------------------------------------- the two modes


def run_example(args, policy, encoder, config, target, task_id, out_dir: Path) -> dict:
    from mop import attribution_plots

    record = record_episodes(policy, encoder, config, task_id, [args.episode])[args.episode]
    check_window(args.step, args.window, len(record["actions"]))
    result = attribute(policy, record, args.step, args, target)
    shuffled = attribute(randomized_copy(policy, args.randomize_seed), record, args.step, args, target)
    encoding = config["obs_encoding"]
    cells, _ = split_by_cell(result.attributions, encoding)
    random_cells, _ = split_by_cell(shuffled.attributions, encoding)
    rho = map_rank_correlation(cells, random_cells)
    rho_moved = map_rank_correlation(cells, random_cells, input_differs(result.difference, encoding))
    name = f"attribution_{task_id}_ep{args.episode}_t{args.step}_{_slug(args.target)}"
    table = pd.DataFrame(attribution_table(result, encoding))
    table["x"] = table["x"].astype("Int64")
    table["y"] = table["y"].astype("Int64")
    fig = attribution_plots.plot_example(
        result,
        cells,
        record["image"][args.step - args.window : args.step + 1],
        title=f"{task_id} · episode {args.episode} · t = {args.step}: {target.label}",
        mission=record["mission"],
        baseline=args.baseline,
        randomized_rho=(rho, rho_moved),
        layout=args.layout,
    )
    csv_path = atomic_write(out_dir / f"{name}.csv", lambda tmp: table.to_csv(tmp, index=False))
    png_path = atomic_write(out_dir / f"{name}.png", lambda tmp: fig.savefig(tmp, dpi=200, format="png"))
    summary = {
        "csv": str(csv_path),
        "figure": str(png_path),
        "output": result.output,
        "baseline_output": result.baseline_output,
        "attribution_sum": result.total,
        "completeness_error": result.completeness_error,
        "ig_steps_used": result.ig_steps,
        "profile": result.profile.tolist(),
        "randomized_rank_correlation": rho,
        "randomized_rank_correlation_moved": rho_moved,
        "randomized_completeness_error": shuffled.completeness_error,
        "episode_length": len(record["actions"]),
        "mission": record["mission"],
    }
    peak = int(np.argmax(np.abs(result.profile))) - args.window
    print(
        f"{task_id} episode {args.episode} ({record['mission']!r}, {len(record['actions'])} steps), t = {args.step}, "
        f"{target.label}: y(x) = {result.output:.4f}, y(baseline {args.baseline}) = {result.baseline_output:.4f}"
    )
    print(
        f"sum of attributions {result.total:.4f}, completeness error {100 * result.completeness_error:.3f}% "
        f"({result.ig_steps} trapezoid intervals); largest |step attribution| at offset {peak}; rank correlation "
        f"of |map| with the randomised-weights map (Spearman) {rho:.3f}, {rho_moved:.3f} over the cells whose "
        "input differs from the baseline"
    )
    _warn_completeness([result.completeness_error], args.max_ig_steps)
    print(f"wrote {csv_path}\nwrote {png_path}")
    return summary


def _warn_completeness(errors: list[float], ig_steps: int) -> None:
    bad = sum(e > COMPLETENESS_TOLERANCE for e in errors)
    if bad:
        print(
            f"warning: {bad} of {len(errors)} examples miss completeness by more than "
            f"{100 * COMPLETENESS_TOLERANCE:.0f}% at --max_ig_steps {ig_steps} intervals: raise it",
            file=sys.stderr,
        )


def share_interval(values: np.ndarray) -> tuple[float, float, float]:
    """Mean and 95% interval over the values (one per episode): the Student-t interval, widened
    to the bootstrap-t's where that reaches further (a small share is skewed over episodes, some
    carrying it and most not: the t alone covered 92% there, docs/calibration.md), clipped to
    [0, 1]; NaN bounds for fewer than 2."""
    from mop.lmc_stats import bootstrap_t_interval, mean_interval  # a mean's intervals, one home

    mean, low, high = mean_interval(values)
    if math.isnan(low):
        return mean, low, high
    b_low, b_high = bootstrap_t_interval(values)
    if not math.isnan(b_low):
        low, high = min(low, b_low), max(high, b_high)
    return mean, max(0.0, low), min(1.0, high)  # a share of |attribution| lies in [0, 1]


def summarise(profiles: pd.DataFrame) -> pd.DataFrame:
    """Per (subgoal, step_offset): the mean over episodes of each episode's mean |attribution|
    share, a 95% interval over episodes (share_interval; the unit: steps of one episode are not
    independent),
    and the counts; subgoal 'all' pools every step."""
    rows = []
    pooled = profiles.assign(subgoal="all")
    for (group, offset), part in pd.concat([pooled, profiles]).groupby(["subgoal", "step_offset"], sort=True):
        per_episode = part.groupby("episode")["abs_share"].mean().to_numpy()
        mean, lo, hi = share_interval(per_episode)
        rows.append(
            dict(
                subgoal=group,
                step_offset=int(offset),
                mean_abs_share=mean,
                ci_low=lo,
                ci_high=hi,
                episodes=len(per_episode),
                examples=len(part),
            )
        )
    return pd.DataFrame(rows)


def run_aggregate(args, policy, encoder, config, target, task_id, out_dir: Path) -> dict:
    from mop import attribution_plots

    episodes = list(range(args.num_episodes))
    records = record_episodes(policy, encoder, config, task_id, episodes)
    rows, errors, used, short = [], [], [], 0
    for e in episodes:
        record = records[e]
        steps = list(range(args.window, len(record["actions"]), args.stride))
        if not steps:
            short += 1
            continue
        subgoals = replay_subgoals(task_id, record["seed"], record["actions"], config.get("max_steps"))
        for t in steps:
            result = attribute(policy, record, t, args, target)
            errors.append(result.completeness_error)
            used.append(result.ig_steps)
            for w, share in enumerate(abs_share_profile(result)):
                rows.append(
                    dict(
                        episode=e,
                        t=t,
                        subgoal=subgoals[t],
                        step_offset=w - args.window,
                        abs_share=share,
                        signed=float(result.profile[w]),
                        completeness_error=result.completeness_error,
                    )
                )
    if not rows:
        raise AttributionError(
            f"--window {args.window}: no episode of the {args.num_episodes} played is longer than the window"
        )
    profiles = pd.DataFrame(rows)
    summary = summarise(profiles)
    name = f"attribution_profile_{task_id}_{_slug(args.target)}_k{args.window}"
    fig = attribution_plots.plot_aggregate(
        summary,
        title=f"{task_id} · {target.label}: share of |attribution| per step",
        baseline=args.baseline,
        layout=args.layout,
    )
    paths = {
        "profiles_csv": atomic_write(
            out_dir / f"{name}_examples.csv", lambda tmp: profiles.to_csv(tmp, index=False)
        ),
        "summary_csv": atomic_write(out_dir / f"{name}.csv", lambda tmp: summary.to_csv(tmp, index=False)),
        "figure": atomic_write(out_dir / f"{name}.png", lambda tmp: fig.savefig(tmp, dpi=200, format="png")),
    }
    errors_arr = np.array(errors)
    print(
        f"{task_id}: {len(errors)} steps of {profiles['episode'].nunique()} episodes, {target.label}; "
        f"completeness error median {100 * np.median(errors_arr):.3f}%, max {100 * errors_arr.max():.3f}% "
        f"(trapezoid intervals {min(used)}..{max(used)})"
        + (f"; {short} episodes no longer than the window left out" if short else "")
    )
    pooled = summary[summary["subgoal"] == "all"]
    print("mean share of |attribution| per step offset (95% over episodes: t, widened to the bootstrap-t):")
    for row in pooled.itertuples():
        print(f"  {row.step_offset:>4}  {row.mean_abs_share:.3f}  [{row.ci_low:.3f}, {row.ci_high:.3f}]")
    _warn_completeness(errors, args.max_ig_steps)
    for p in paths.values():
        print(f"wrote {p}")
    return {
        **{k: str(v) for k, v in paths.items()},
        "examples": len(errors),
        "episodes_too_short": short,
        "completeness_error_max": float(errors_arr.max()),
        "completeness_error_median": float(np.median(errors_arr)),
        "subgoals": sorted(profiles["subgoal"].unique().tolist()),
    }


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    try:
        check_args(args)
        out_dir = check_writable_dir(args.out_dir, "--out_dir")
        policy, encoder, config, target, task_id = load(args)
        run = run_aggregate if args.aggregate else run_example
        return run(args, policy, encoder, config, target, task_id, out_dir)
    except (AttributionError, OutputError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    with command_edges():
        main(sys.argv[1:])
