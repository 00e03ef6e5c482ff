"""Train the plain GRU baseline on a BabyAI level by online imitation of the BabyAI bot.

Same loop, data, seeds, checkpoint layout and metrics as train_mop.py (so `diff train.py
train_mop.py` shows the real difference): the policy is one GRU(hidden_size) and the loss is the
cross-entropy on the bot's labels, with no routing and no LPC.

The learner (mop/imitation.py) adds what both stages share: --entropy_coef subtracts that times
the policy's mean entropy on the labelled steps (BabyAI's bonus), and --epochs takes that many
optimizer steps on each update's batch.

Reads config.yaml (every key is also a flag; the MoP keys are ignored); writes checkpoints and
metrics.jsonl to <checkpoint_dir>/<task_id>/trial_<N>/[seed_<S>/].

    python train.py --task_id BabyAI-GoToLocal-v0 --trial 0
    python train.py --task_id BabyAI-GoToObj-v0 --trial 1 --hidden_size 128 --num_updates 500
    python train.py --task_id BabyAI-GoToLocal-v0 --trial 9 --match_params   # as many weights as the MoP recipe

--match_params sizes the GRU to the MoP policy the same config describes (its expert sizes,
intermediate and router widths, input encoder, lang_dim): hidden_size is set to the size whose
policy parameter count is nearest the MoP policy's (the mission encoder is the same in both and is
not counted), printed with both counts; refused when no size comes within MATCH_TOLERANCE.
The MoP paper's baseline is a GRU "of equal size": this is that baseline.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import TYPE_CHECKING

from mop.experiment import LIMITS, ConfigError, TrainConfig, args_overrides, cli_main, load_config

if TYPE_CHECKING:  # torch and the loop are imported by what runs: flags and config are checked first
    import torch

    from mixture_of_experts import PolicyOutput

POLICY_TYPE = "gru"
MATCH_TOLERANCE = 0.05  # |GRU - MoP| / MoP parameters that --match_params accepts


# ----------------------------------------------------------------------------- loss


def make_loss(cfg: TrainConfig):
    import torch.nn.functional as F

    def loss_fn(out: PolicyOutput, labels: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """out.logits (T, N, A), labels (T, N), mask (T, N): steps the bot labelled."""
        if not mask.any():  # every bot failed this unroll: nothing to learn from
            return out.logits.sum() * 0.0, {}
        logits = out.logits[mask]
        ce = F.cross_entropy(logits, labels[mask])
        loss = ce
        parts = {
            "train/loss": loss.item(),
            "train/ce": ce.item(),
            "train/accuracy": (logits.argmax(-1) == labels[mask]).float().mean().item(),
        }
        return loss, parts

    return loss_fn


# ----------------------------------------------------------------------------- parameter matching


def policy_parameters(cfg: TrainConfig, policy_type: str, **changes) -> int:
    """Trainable parameters of the policy a config builds (policy_type "mop" or "gru"; `changes`
    override config keys), the mission encoder left out (the same in both)."""
    from mixture_of_experts import NUM_ACTIONS, build_policy
    from mop.level_names import obs_dim

    config = {**dataclasses.asdict(cfg), **changes, "policy_type": policy_type}
    config |= {"input_dim": obs_dim(cfg.obs_encoding), "num_actions": NUM_ACTIONS}
    return sum(p.numel() for p in build_policy(config).parameters() if p.requires_grad)


def matched_hidden_size(cfg: TrainConfig, tolerance: float = MATCH_TOLERANCE) -> dict:
    """The GRU hidden_size whose policy has the parameter count nearest the MoP policy of `cfg`:
    {hidden_size, gru_parameters, mop_parameters, relative (GRU / MoP - 1)}. The count grows with
    the size, so a bisection finds the first size at or above the target and its neighbour below.
    ConfigError when even the nearest is further than `tolerance` (a relative difference)."""
    target = policy_parameters(cfg, "mop")
    low, high = 1, LIMITS["hidden_size"][0]
    while low < high:
        mid = (low + high) // 2
        if policy_parameters(cfg, POLICY_TYPE, hidden_size=mid) < target:
            low = mid + 1
        else:
            high = mid
    sizes = {h: policy_parameters(cfg, POLICY_TYPE, hidden_size=h) for h in {max(1, low - 1), low}}
    best = min(sizes, key=lambda h: (abs(sizes[h] - target), h))
    relative = sizes[best] / target - 1
    if abs(relative) > tolerance:
        raise ConfigError(
            f"--match_params: the nearest GRU (hidden_size {best}, {sizes[best]:,} parameters) is "
            f"{relative:+.1%} from the MoP recipe's {target:,}; more than {tolerance:.0%}"
        )
    return {
        "hidden_size": best,
        "gru_parameters": sizes[best],
        "mop_parameters": target,
        "relative": relative,
    }


def describe_match(match: dict) -> str:
    return (
        f"matched GRU: hidden_size {match['hidden_size']}, {match['gru_parameters']:,} parameters "
        f"vs the MoP recipe's {match['mop_parameters']:,} ({match['relative']:+.2%})"
    )


def _match_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--match_params",
        action="store_true",
        help="size hidden_size so the GRU has as many parameters as the MoP policy of this config",
    )


def _apply_match(args: argparse.Namespace) -> None:
    """--match_params: hidden_size from the config's MoP recipe (refused beside --hidden_size)."""
    if not args.match_params:
        return
    if "hidden_size" in vars(args):
        raise ConfigError("--match_params sets hidden_size: do not give --hidden_size too")
    path, overrides = args_overrides(args)
    match = matched_hidden_size(load_config(path, overrides))
    print(describe_match(match))
    args.hidden_size = match["hidden_size"]


# ----------------------------------------------------------------------------- main


def main(cfg: TrainConfig, resume: bool = False, progress: bool = True) -> dict:
    """Train; returns {run_dir, checkpoints, metrics_path, final, ...}."""
    from mixture_of_experts import build_policy
    from mop.imitation import run_imitation

    return run_imitation(cfg, POLICY_TYPE, build_policy, make_loss(cfg), resume=resume, progress=progress)


if __name__ == "__main__":
    cli_main(main, __doc__, _match_flag, _apply_match)
