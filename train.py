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
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mixture_of_experts import PolicyOutput, build_policy
from mop.experiment import TrainConfig, cli_main
from mop.imitation import run_imitation

POLICY_TYPE = "gru"


# ----------------------------------------------------------------------------- loss


def make_loss(cfg: TrainConfig):
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


# ----------------------------------------------------------------------------- main


def main(cfg: TrainConfig, resume: bool = False, progress: bool = True) -> dict:
    """Train; returns {run_dir, checkpoints, metrics_path, final, ...}."""
    return run_imitation(cfg, POLICY_TYPE, build_policy, make_loss(cfg), resume=resume, progress=progress)


if __name__ == "__main__":
    cli_main(main, __doc__)
