"""Train a Mixture-of-Pathways policy on a BabyAI level by online imitation of the BabyAI bot.

The student acts (greedy), the bot labels every state the student visits (DAgger), and the loss is
cross-entropy on those labels plus the Learned Pathway Complexity cost (Cook et al. 2025):
    eq. 1: loss = CE + lpc_alpha * LPC
    eq. 2: loss = CE + lpc_alpha * LPC / (lpc_epsilon + CE)          (--normalize_lpc)
CE and LPC are means over the labelled steps of the unroll. With --normalize_lpc the CE in the
denominator is detached by default (--no-lpc_normalize_detach lets gradients through it).

The learner (mop/imitation.py) adds what both stages share: --entropy_coef subtracts that times
the policy's mean entropy on the labelled steps (BabyAI's bonus), and --epochs takes that many
optimizer steps on each update's batch.

Reads config.yaml (every key is also a flag); writes checkpoints and metrics.jsonl to
<checkpoint_dir>/<task_id>/trial_<N>/[seed_<S>/].

    python train_mop.py --task_id BabyAI-GoToLocal-v0 --trial 0
    python train_mop.py --task_id BabyAI-UnlockPickup-v0 --trial 3 --seed 2 --lpc_alpha 1e-4 --normalize_lpc

--fork_from CHECKPOINT starts a new run (its own folder, from this config) at that checkpoint's
weights, optimizer, counters and update, and trains it to --num_updates under this recipe: a BC run
continued into another DAgger phase, say. The keys that shape the weights must match the
checkpoint's; with its seed the fork continues its layout streams, with another its own. Continue a
fork with --resume alone. Its checkpoints keep `forked_from`: the parent checkpoint, its update and
the keys the fork changed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mop.experiment import ConfigError, TrainConfig, cli_main

if TYPE_CHECKING:  # torch and the loop are imported by what runs: flags and config are checked first
    import torch

    from mixture_of_experts import PolicyOutput

POLICY_TYPE = "mop"


# ----------------------------------------------------------------------------- loss


def make_loss(cfg: TrainConfig, expert_sizes: list[list[int]]):
    import torch.nn.functional as F

    from mixture_of_experts import compute_lpc

    def loss_fn(out: PolicyOutput, labels: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """out.logits (T, N, A), labels (T, N), mask (T, N): steps the bot labelled."""
        if not mask.any():  # every bot failed this unroll: nothing to learn from
            return out.logits.sum() * 0.0, {}
        logits = out.logits[mask]
        ce = F.cross_entropy(logits, labels[mask])
        lpc = compute_lpc(out.router_weights, expert_sizes, cfg.lpc_exponent)[mask].mean()
        loss = ce
        if cfg.lpc_alpha > 0:
            if cfg.normalize_lpc:
                denominator = cfg.lpc_epsilon + (ce.detach() if cfg.lpc_normalize_detach else ce)
                loss = ce + cfg.lpc_alpha * lpc / denominator
            else:
                loss = ce + cfg.lpc_alpha * lpc
        parts = {
            "train/loss": loss.item(),
            "train/ce": ce.item(),
            "train/accuracy": (logits.argmax(-1) == labels[mask]).float().mean().item(),
            "train/lpc": lpc.item(),
        }
        for k, w in enumerate(out.router_weights):
            for j, mean_w in enumerate(w[mask].mean(0).tolist()):
                parts[f"routing/layer_{k}/expert_{j}"] = mean_w
        return loss, parts

    return loss_fn


# ----------------------------------------------------------------------------- main


# The keys the parent's place in its demos (order, pass, streamed columns) belongs to: a fork that
# changes one samples its own demos from the start of a pass.
DEMO_STATE_KEYS = "task_id demos demo_seed max_steps learner_stream batch_columns unroll_len".split()


def fork_checkpoint(cfg: TrainConfig, path: str) -> dict:
    """--fork_from's checkpoint, refused in one line (ConfigError) unless cfg's model can load it."""
    import dataclasses

    from mop.aux_losses import AUX_HEADS, FRESH_HEADS
    from mop.conditions import WEIGHT_KEYS  # a fork's recipe may change any other key
    from mop.experiment import CheckpointError, load_checkpoint, recipe_value
    from mop.imitation import FORKED_FROM

    try:
        ckpt = load_checkpoint(path)
    except CheckpointError as e:
        raise ConfigError(f"--fork_from: {e}") from None
    missing = [k for k in ("optimizer_state_dict", "rng", "stats") if k not in ckpt]
    if missing:  # the earlier system's checkpoints, say: weights without the state a run goes on from
        raise ConfigError(
            f"--fork_from {path!r} holds weights without a training state (no {', '.join(missing)}); "
            "a fork continues a run of this project"
        )
    stored, new = ckpt["config"], dataclasses.asdict(cfg)
    if stored.get("policy_type", POLICY_TYPE) != POLICY_TYPE:
        raise ConfigError(f"--fork_from {path!r} is a {stored['policy_type']} checkpoint, not a MoP one")
    differ = [
        f"{k}: {recipe_value(stored, k)!r} -> {recipe_value(new, k)!r}"
        for k in WEIGHT_KEYS
        if recipe_value(stored, k) != recipe_value(new, k)
    ]
    if differ:
        raise ConfigError(
            f"--fork_from {path!r}: its weights were built with other keys ({'; '.join(differ)})"
        )
    # A head the fork trains and the parent did not starts from its initialisation (aux_losses).
    fresh = [head for key, head in AUX_HEADS.items() if new[key] > 0 and head not in ckpt]
    if fresh:
        ckpt = {**ckpt, FRESH_HEADS: fresh}
    if "demo_sampler" in ckpt and any(
        recipe_value(stored, k) != recipe_value(new, k) for k in DEMO_STATE_KEYS
    ):
        ckpt = {k: v for k, v in ckpt.items() if k != "demo_sampler"}  # other demos: sampled afresh
    if int(ckpt["update"]) >= cfg.num_updates:
        raise ConfigError(
            f"--fork_from {path!r} is at update {ckpt['update']}: num_updates ({cfg.num_updates}) leaves nothing to train"
        )
    record = fork_record(stored, new, path, ckpt["update"])
    return {**ckpt, FORKED_FROM: [*ckpt.get(FORKED_FROM, []), record]}


def fork_record(parent: dict, child: dict, path: str, update: int) -> dict:
    """What a fork's checkpoints keep of where it came from (FORKED_FROM, one entry per fork, the
    oldest first): the parent checkpoint's path, its update, and each recipe key (and the seed) the
    fork changed, as [parent's value, fork's value]: its BC phase may have run under another
    precision or seed, which its own config.json cannot say."""
    from pathlib import Path

    from mop.conditions import differing_keys, recipe

    before, after = recipe(parent), recipe(child)
    before["seed"], after["seed"] = parent.get("seed"), child.get("seed")
    changed = {k: [before.get(k), after.get(k)] for k in differing_keys([before, after])}
    return {"checkpoint": str(Path(path).resolve()), "update": int(update), "changed": changed}


def main(cfg: TrainConfig, resume: bool = False, progress: bool = True, fork_from: str | None = None) -> dict:
    """Train (from `fork_from`'s checkpoint when given: a new run); returns {run_dir, checkpoints,
    metrics_path, final, ...}."""
    from mixture_of_experts import build_policy
    from mop.imitation import FORKED_FROM, Fork, run_imitation

    fork = None if fork_from is None else Fork(fork_checkpoint(cfg, fork_from))
    if fork is not None:
        record = fork.checkpoint[FORKED_FROM][-1]
        changed = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in record["changed"].items())
        print(f"forked from {record['checkpoint']} at update {record['update']} ({changed or 'same recipe'})")
    return run_imitation(
        cfg,
        POLICY_TYPE,
        build_policy,
        make_loss(cfg, cfg.expert_hidden_sizes),
        resume=resume,
        progress=progress,
        fork=fork,
    )


def cli() -> None:
    flags: dict = {}

    def add(parser) -> None:
        parser.add_argument(
            "--fork_from",
            metavar="CHECKPOINT",
            help="start a new run from this checkpoint's state under this config (see the top of --help)",
        )

    def keep(args) -> None:
        if args.fork_from is not None and args.resume:
            raise ConfigError("--fork_from starts a new run; continue one with --resume alone")
        flags["fork_from"] = args.fork_from

    cli_main(lambda cfg, resume: main(cfg, resume, fork_from=flags["fork_from"]), __doc__, add, keep)


if __name__ == "__main__":
    cli()
