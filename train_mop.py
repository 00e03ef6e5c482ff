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
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mop.experiment import TrainConfig, cli_main

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


def main(cfg: TrainConfig, resume: bool = False, progress: bool = True) -> dict:
    """Train; returns {run_dir, checkpoints, metrics_path, final, ...}."""
    from mixture_of_experts import build_policy
    from mop.imitation import run_imitation

    return run_imitation(
        cfg,
        POLICY_TYPE,
        build_policy,
        make_loss(cfg, cfg.expert_hidden_sizes),
        resume=resume,
        progress=progress,
    )


if __name__ == "__main__":
    cli_main(main, __doc__)
