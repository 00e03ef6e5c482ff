"""What does each expert cause? Closed-loop interventions on every expert, beside its routing.

For every run given, every expert of every layer (or those of --experts) and every intervention:
    zero          its output removed from the mixture, the other weights NOT renormalised
    route_around  today's knockout: its weight zeroed and the survivors renormalised
    swap          its output replaced by another expert's (--swap_target) at its routed weight
the run plays the same evaluation layouts (seeds 0..N-1, eval_mop.run_episodes, greedy) intact and
intervened; the effect on success, path ratio and LPC is intervened - intact, paired per run.
LPC is reported twice: `mean_lpc` of the effective weights (after the intervention: what the
mixture used; eval_mop's knockout numbers are these too) and `router_lpc` of the router's own
weights (before it; the MoP paper's code reports this one for its knockouts).

Runs are the units: a replicate is (condition, seed) (mop/conditions.py); two runs with the same
identity in one call are refused. Across runs: the mean effect per (condition, expert,
intervention, metric), its 95% t interval over runs clipped to the effect's range, the t-test
against 0 and Holm over ONE family, every test of causal_summary.csv (conditions x experts x
interventions x metrics asked for). One run: no across-run inference; each run's own effects carry
a per-layout paired interval (percentile bootstrap over the shared layouts; McNemar's exact test
for success), about that network on those layouts, not about its recipe.

Beside each expert, its routing in the intact evaluation (mean weight, entropy of its weight over
steps, share of steps it dominates its layer, its LPC share, selectivity by subgoal: the intact
arm records the bot's subgoal at every step), and whether each statistic orders the effects among a
run's experts: the mean within-run Spearman rho, p from permutations of the statistic within each
run, Holm over statistics x interventions x metrics (mop/causal.py).

Writes to --out (default causal/<task>/): causal_effects.csv, causal_summary.csv,
causal_predict.csv and causal_<metric>.png (statistic vs effect, one point per expert per run).

    python causal.py --runs "checkpoints/BabyAI-GoToLocal-v0/trial_0/seed_*" --task BabyAI-GoToLocal-v0 --episodes 200
    python causal.py --runs checkpoints/BabyAI-GoToLocal-v0/trial_0 --interventions zero,swap --swap_target 0 --experts layer_0:1,layer_0:2
"""

from __future__ import annotations

if __name__ == "__main__":  # flags answered before torch, pandas and minigrid load (bench/startup.py)
    from mop.cli_specs import answer_early, causal_parser, check_causal

    answer_early(lambda: check_causal(causal_parser(__doc__).parse_args()))

import glob
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mixture_of_experts import INTERVENTIONS, Intervention, MixtureOfExpertsPolicy, compute_lpc, max_lpc
from mop import causal, cli_specs, conditions
from mop.checks import ConfigError, command_edges
from mop.experiment import CheckpointError, load_policy
from mop.results import KNOCKOUT_PART
from mop.runs import (
    OutputError,
    atomic_write,
    check_writable_dir,
    checkpoint_paths,
    final_checkpoint,
    is_multi_task,
    parse_checkpoint_name,
    run_task_name,
)


class CausalError(ValueError):
    """Bad input, one line naming the flag."""


@dataclass(frozen=True)
class CausalConfig:
    runs: tuple[str, ...]  # checkpoint files, run folders, folders of runs, or globs of them
    task_id: str | None = None  # level to play (default: each run's own)
    episodes: int = 200  # evaluation layouts 0..N-1, the same for every arm
    interventions: tuple[str, ...] = INTERVENTIONS
    experts: str | None = None  # 'layer_<k>:<j>,...' (default: every expert)
    swap_target: str = "next"  # 'next' (expert j+1, cyclic) or an expert index
    metrics: tuple[str, ...] = causal.METRICS
    num_envs: int = 16
    out: str | None = None  # default causal/<task>/
    layout: str = "screen"
    permutations: int | None = None  # None: 100 per test of the family, at least causal.PERMUTATIONS
    seed: int = 0  # of the bootstraps and permutations
    progress: bool = True


# ----------------------------------------------------------------------------- the plan


def find_runs(patterns: tuple[str, ...]) -> list[Path]:
    """One checkpoint per run: a .pt file as given; a run folder's checkpoint_final.pt, else its
    latest numbered one; for any other folder, that of every run under it."""
    found: list[Path] = []
    for pattern in patterns:
        for hit in sorted(glob.glob(pattern, recursive=True)) or (
            [pattern] if Path(pattern).exists() else []
        ):
            path = Path(hit)
            if path.is_file():
                found.append(path)
            elif path.is_dir():
                own = final_checkpoint(path) or next(
                    iter(p for _, p in reversed(checkpoint_paths(path))), None
                )
                if own is not None:
                    found.append(own)
                    continue
                runs = {
                    p.parent
                    for p in path.rglob("checkpoint_*.pt")
                    if parse_checkpoint_name(p.name) is not None
                }
                for run in sorted(runs):
                    own = final_checkpoint(run) or next(
                        iter(p for _, p in reversed(checkpoint_paths(run))), None
                    )
                    if own is not None:
                        found.append(own)
    return list(dict.fromkeys(found))


def parse_list(text: str | tuple | list, allowed: tuple[str, ...], flag: str) -> tuple[str, ...]:
    """mop.cli_specs.parse_list, a bad list as CausalError."""
    try:
        return cli_specs.parse_list(text, allowed, flag)
    except ConfigError as e:
        raise CausalError(str(e)) from None


def chosen_experts(spec: str | None, sizes: list[list[int]], path: Path) -> list[tuple[int, int]]:
    """(layer, expert) pairs of --experts (default every expert), checked against one run."""
    if not spec:
        return [(k, j) for k, layer in enumerate(sizes) for j in range(len(layer))]
    pairs = []
    for part in spec.split(","):
        m = KNOCKOUT_PART.match(part.strip())
        if m is None:
            raise CausalError(f"--experts {spec!r}: use 'layer_<k>:<j>[,...]' (0-based)")
        k, j = int(m.group(1)), int(m.group(2))
        if k >= len(sizes) or j >= len(sizes[k]):
            raise CausalError(
                f"--experts {spec!r}: {part.strip()} is not an expert of {path} (expert sizes per layer {sizes})"
            )
        pairs.append((k, j))
    return list(dict.fromkeys(pairs))


def swap_target(spec: str, layer: int, expert: int, sizes: list[list[int]]) -> int:
    """The expert whose output stands in for `expert` under swap."""
    E = len(sizes[layer])
    if spec == "next":
        target = (expert + 1) % E
    else:
        try:
            target = int(spec)
        except ValueError:
            raise CausalError(f"--swap_target {spec!r}: 'next' or an expert index") from None
        if not 0 <= target < E:
            raise CausalError(f"--swap_target {spec}: layer {layer} has experts 0..{E - 1}")
    if target == expert:
        raise CausalError(
            f"--swap_target {spec}: a swap of layer_{layer}:{expert} onto itself is refused "
            "(leave it out with --experts, or use --swap_target next)"
        )
    return target


@dataclass
class Run:
    path: Path
    policy: Any
    encoder: Any
    config: dict
    task_id: str
    condition: str
    recipe: dict
    experts: list[tuple[int, int]]

    @property
    def sizes(self) -> list[list[int]]:
        return [list(s) for s in self.policy.expert_sizes]


def plan(cfg: CausalConfig) -> tuple[list[Run], Path]:
    """Every flag, run and output checked before anything is played or written."""
    from mop.babyai_env import check_task_id

    try:  # the flags that need no run (checked before the imports too, when run as a script)
        kinds = cli_specs.check_causal(cfg)
    except ConfigError as e:
        raise CausalError(str(e)) from None
    paths = find_runs(tuple(cfg.runs))
    if not paths:
        raise CausalError(f"--runs {' '.join(cfg.runs)}: no checkpoints found")
    runs: list[Run] = []
    for path in paths:
        try:
            policy, encoder, config = load_policy(path)
        except CheckpointError as e:
            raise CausalError(f"--runs: {e}") from None
        if not isinstance(policy, MixtureOfExpertsPolicy):
            raise CausalError(f"--runs: {path} is a GRU baseline (no experts to intervene on)")
        task = cfg.task_id or config["task_id"]
        if is_multi_task(task):
            raise CausalError(f"--task: {path} trained on several levels ({task}); name one level")
        try:
            check_task_id(task)
        except ValueError as e:
            raise CausalError(f"--task: {e}") from None
        rec = conditions.recipe(config)
        sizes = [list(s) for s in policy.expert_sizes]
        experts = chosen_experts(cfg.experts, sizes, path)
        if "swap" in kinds:
            for k, j in experts:
                swap_target(cfg.swap_target, k, j, sizes)
        runs.append(Run(path, policy, encoder, config, task, conditions.condition_id(rec), rec, experts))
    twice = causal.duplicate_identity([(r.condition, r.config.get("seed")) for r in runs])
    if twice is not None:
        same = [str(r.path) for r in runs if (r.condition, r.config.get("seed")) == twice]
        raise CausalError(
            f"--runs: {same[0]} and {same[1]} are the same replicate (condition {twice[0]}, seed "
            f"{twice[1]}): one run per (condition, seed)"
        )
    out = Path(cfg.out) if cfg.out else Path("causal") / run_task_name(runs[0].task_id)
    try:
        check_writable_dir(out, "--out")
    except OutputError as e:
        raise CausalError(str(e)) from None
    return runs, out


# ----------------------------------------------------------------------------- playing


class RouterLPC:
    """eval_mop.run_episodes' on_step: the LPC of the router's own weights (before the
    intervention: MoELayer.last_router_weights), summed per episode."""

    def __init__(self, policy: MixtureOfExpertsPolicy, exponent: float):
        self.policy, self.exponent = policy, exponent
        self.sums: dict[int, float] = {}

    def __call__(self, acted: Any) -> None:
        raw = [  # (B, E) per layer; a layer left alone routes as it chose
            layer.last_router_weights[0] if layer.intervened else w
            for layer, w in zip(self.policy.layers, acted.out.router_weights)
        ]
        lpc = compute_lpc([w.cpu() for w in raw], self.policy.expert_sizes, self.exponent).numpy()
        for episode, value in zip(acted.episode, lpc):
            self.sums[episode] = self.sums.get(episode, 0.0) + float(value)

    def per_episode(self, episodes: pd.DataFrame) -> dict[int, float]:
        return {int(e): self.sums[int(e)] / int(n) for e, n in zip(episodes["episode"], episodes["length"])}


def evaluate_run(
    run: Run, cfg: CausalConfig, kinds: tuple[str, ...], bot_paths: Any, label: str
) -> list[dict]:
    """Effect rows of one run: intact, then every intervention on every chosen expert."""
    from eval_mop import run_episodes
    from mop.numpy_policy import one_thread

    config, sizes = run.config, run.sizes
    exponent = float(config.get("lpc_exponent", 2.0))
    top = max_lpc(sizes, exponent)
    max_steps = config.get("max_steps")
    idx = list(range(cfg.episodes))
    play = dict(num_envs=cfg.num_envs, max_steps=max_steps, bot_paths=bot_paths)
    head = {
        "run": f"{run.task_id} trial {config.get('trial', 0)} seed {config.get('seed')}",
        "checkpoint_path": run.path.as_posix(),
        "condition": run.condition,
        "condition_label": label,
        "task_id": run.task_id,
        "trial": config.get("trial", 0),
        "seed": config.get("seed"),
    }
    rows = []
    with one_thread():
        # the intact arm records the bot's subgoal per step (one arm of many: ~2x on it alone), for
        # each expert's selectivity by subgoal; the actions are the same (mop/subgoals.py)
        steps, episodes = run_episodes(
            run.policy, run.encoder, config, run.task_id, idx, record=True, record_subgoals=True, **play
        )
        intact = causal.layouts(episodes)
        stats = causal.observational_stats(steps, sizes, exponent).set_index(["layer", "expert"])
        for n, (k, j) in enumerate(run.experts):
            for kind in kinds:
                target = swap_target(cfg.swap_target, k, j, sizes) if kind == "swap" else None
                run.policy.set_interventions([Intervention(k, j, kind, target)])
                raw = RouterLPC(run.policy, exponent)
                try:
                    _, played = run_episodes(
                        run.policy, run.encoder, config, run.task_id, idx, record=False, on_step=raw, **play
                    )
                finally:
                    run.policy.set_interventions(None)
                arm = causal.layouts(played, raw.per_episode(played))
                s = stats.loc[(k, j)]
                if cfg.progress:
                    print(
                        f"  {run.path}: {kind} layer_{k}:{j} success {arm['success'].mean():.3f}",
                        file=sys.stderr,
                    )
                for metric in cfg.metrics:
                    effect = causal.paired_layout_effect(intact, arm, metric, top, cfg.seed + n)
                    note = "; ".join(v for v in (effect.pop("note"), s["stats_note"]) if v)
                    rows.append(
                        head
                        | {"layer": k, "expert": j, "expert_size": sizes[k][j], "intervention": kind}
                        | {"swap_target": target, "metric": metric}
                        | effect
                        | {stat: s[stat] for stat in causal.STATISTICS}
                        | {"note": note}
                    )
    return rows


# ----------------------------------------------------------------------------- main


def main(cfg: CausalConfig) -> dict:
    """Play, measure and write; returns {out, paths written, effects, summary, predict}."""
    from mop.bot_paths import BotPaths

    try:
        runs, out = plan(cfg)
        kinds = parse_list(cfg.interventions, INTERVENTIONS, "--interventions")
        cfg = CausalConfig(
            **{**cfg.__dict__, "metrics": parse_list(cfg.metrics, causal.METRICS, "--metrics")}
        )
    except CausalError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    labels = conditions.labels({r.condition: r.recipe for r in runs})
    bot_paths: dict[tuple, BotPaths] = {}
    rows: list[dict] = []
    for run in runs:
        key = (run.task_id, run.config.get("max_steps"))
        bot_paths.setdefault(key, BotPaths(*key))
        print(f"{run.path}: {len(run.experts)} experts x {len(kinds)} interventions, {cfg.episodes} layouts")
        rows += evaluate_run(run, cfg, kinds, bot_paths[key], labels[run.condition])
    top = max(max_lpc(r.sizes, float(r.config.get("lpc_exponent", 2.0))) for r in runs)
    effects = causal.effects_table(rows)
    summary = causal.summarize(effects, top)
    predicted = causal.predict(effects, permutations=cfg.permutations, seed=cfg.seed)
    written = write_outputs(out, effects, summary, predicted, cfg)
    print(report(effects, summary, predicted, len(runs)))
    print(f"written: {', '.join(str(p) for p in written)}")
    return {"out": out, "written": written, "effects": effects, "summary": summary, "predict": predicted}


def write_outputs(
    out: Path, effects: pd.DataFrame, summary: pd.DataFrame, predicted: pd.DataFrame, cfg: CausalConfig
) -> list[Path]:
    from mop.causal_plots import plot_causal_predict

    written = []
    for name, table in (
        ("causal_effects", effects),
        ("causal_summary", summary),
        ("causal_predict", predicted),
    ):
        path = out / f"{name}.csv"
        written.append(atomic_write(path, lambda tmp, t=table: t.to_csv(tmp, index=False)))
    for metric in cfg.metrics:
        fig = plot_causal_predict(effects, predicted, metric, layout=cfg.layout)
        path = out / f"causal_{metric}.png"
        written.append(atomic_write(path, lambda tmp, f=fig: f.savefig(tmp, dpi=150, format="png")))
    return written


def _num(v: float, digits: int = 3) -> str:
    return "-" if not np.isfinite(v) else f"{v:.{digits}f}"


def report(effects: pd.DataFrame, summary: pd.DataFrame, predicted: pd.DataFrame, n_runs: int) -> str:
    """What the terminal shows: the family, the effects (per run with one run), the predictions."""
    lines = []
    if n_runs == 1 or summary["n_runs"].max() < 2:
        lines.append(
            "one run per condition: no across-run inference. Per-run effects below are about this "
            "network on these layouts (95% percentile bootstrap over the shared layouts; success: "
            "McNemar exact p, Holm over the McNemar tests), not about its recipe."
        )
        for r in effects.itertuples(index=False):
            p = f"  p_holm {_num(r.layout_p_holm)}" if np.isfinite(r.layout_p_holm) else ""
            lines.append(
                f"  {r.run}  {r.intervention:<12} layer_{r.layer}:{r.expert:<2} {r.metric:<12} "
                f"{_num(r.intact)} -> {_num(r.intervened)}  effect {_num(r.effect)} "
                f"[{_num(r.layout_ci_low)}, {_num(r.layout_ci_high)}]{p}"
            )
    else:
        family = int(summary["family_size"].iloc[0]) if len(summary) else 0
        lines.append(
            f"family for Holm: {family} tests = conditions x experts x interventions x metrics asked for; "
            "effect = intervened - intact, mean over runs, 95% t interval over runs (clipped to the effect's range)"
        )
        for r in summary.itertuples(index=False):
            lines.append(
                f"  {r.condition_label:<20.20} {r.intervention:<12} layer_{r.layer}:{r.expert:<2} {r.metric:<12} "
                f"n={r.n_runs}  effect {_num(r.effect)} [{_num(r.ci_low)}, {_num(r.ci_high)}]  "
                f"p {_num(r.p)}  p_holm {_num(r.p_holm)}  {r.note}"
            )
    family = int(predicted["family_size"].iloc[0]) if len(predicted) else 0
    tested = predicted["permutations"].dropna()
    if family and len(tested) and int(tested.max()):
        floor = family / (int(tested.max()) + 1)
        lines.append(
            f"smallest attainable Holm p: {family} tests / ({int(tested.max())} permutations + 1) = {floor:.3g}"
            + ("" if floor < 0.05 else ": no result can pass; raise --permutations")
        )
    lines.append(
        f"does routing predict the effect? rho = mean within-run Spearman rho [95% t over runs, Fisher z], "
        f"p by permutation within runs, Holm over {family} tests (statistics x interventions x metrics x "
        "expert sets: all, and the sized experts alone, the identity left out as a control):"
    )
    for r in predicted.itertuples(index=False):
        lines.append(
            f"  {r.statistic:<20} {r.intervention:<12} {r.metric:<12} {'sized' if r.experts != 'all' else 'all':<5} "
            f"rho {_num(r.rho, 2)} "
            f"[{_num(r.ci_low, 2)}, {_num(r.ci_high, 2)}]  p {_num(r.p)}  p_holm {_num(r.p_holm)}  {r.note}"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> CausalConfig:
    parser = cli_specs.causal_parser(__doc__)
    a = parser.parse_args(argv)
    return CausalConfig(
        runs=tuple(a.runs),
        task_id=a.task_id,
        episodes=a.episodes,
        interventions=tuple(a.interventions.split(",")),
        experts=a.experts,
        swap_target=a.swap_target,
        metrics=tuple(a.metrics.split(",")),
        num_envs=a.num_envs,
        out=a.out,
        layout=a.layout,
        permutations=a.permutations,
        seed=a.seed,
    )


if __name__ == "__main__":
    with command_edges():
        main(parse_args())
