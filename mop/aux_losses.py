"""The learner's auxiliary losses: linear heads that read, from the policy's memory after each
step, what the memory should hold. Training only: the policy never sees their targets.

- `aux_rooms_loss` (--aux_rooms_weight, online imitation): which rooms the agent has stood in so far;
  `rooms_of` checks the levels' room grid first.
- `aux_target_loss` (--aux_target_weight, bot demos): where the bot is heading
  (babyai_env.SafeBot.target), the quantity demo_fit's breakdown found the unfit labels hinge on
  (docs/findings.md, "where the unfit labels are").

    head = torch.nn.Linear(policy.memory_size, 2 * (2 * TARGET_RANGE + 1))
    loss = loss + cfg.aux_target_weight * aux_target_loss(head, out, chunk["target"], parts)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mop.babyai_env import MAX_ROOMS, NO_TARGET, TARGET_RANGE, RoomLayout
from mop.checks import ConfigError


def aux_rooms_loss(head: torch.nn.Linear, out: Any, rooms_visited: np.ndarray, parts: dict) -> torch.Tensor:
    """--aux_rooms_weight's term: binary cross-entropy of the head's reading of the memory after
    each step (out.memory_seq, forward_sequence's) against the rooms visited so far (the chunk's
    bitmask; -1 = unknown, e.g. padding, is left out), mean over steps and rooms. Logs
    train/aux_rooms and train/aux_rooms_accuracy (per room and step) into parts."""
    visited = torch.from_numpy(rooms_visited.astype(np.int64)).to(out.logits.device)
    known = visited >= 0
    if not known.any():
        return out.logits.sum() * 0.0
    rooms = torch.arange(head.out_features, device=visited.device)
    target = ((visited[known].unsqueeze(-1) >> rooms) & 1).float()  # (K, R)
    logits = head(out.memory_seq[known])
    aux = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    parts["train/aux_rooms"] = aux.item()
    parts["train/aux_rooms_accuracy"] = ((logits > 0).float() == target).float().mean().item()
    return aux


def aux_target_loss(head: torch.nn.Linear, out: Any, target: np.ndarray, parts: dict) -> torch.Tensor:
    """--aux_target_weight's term: the head's reading of the memory after each step
    (out.memory_seq) against where the bot heads at that step (the chunk's (T, N, 2) target,
    cells ahead and to the right, babyai_env.SafeBot.target): a cross-entropy over -R..R per axis,
    the mean of the two, over the steps with a target (NO_TARGET: none, e.g. Open, padding, live
    collection). Logs train/aux_target and train/aux_target_accuracy (both axes right) into parts."""
    code = torch.from_numpy(np.ascontiguousarray(target).astype(np.int64)).to(out.logits.device)
    known = code[..., 0] != NO_TARGET
    if not known.any():
        return out.logits.sum() * 0.0
    classes = code[known] + TARGET_RANGE  # (K, 2) in 0..2R
    logits = head(out.memory_seq[known]).view(-1, 2, 2 * TARGET_RANGE + 1)
    aux = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), classes.reshape(-1))
    parts["train/aux_target"] = aux.item()
    parts["train/aux_target_accuracy"] = (logits.argmax(-1) == classes).all(-1).float().mean().item()
    return aux


def rooms_of(envs: dict[str, Any]) -> RoomLayout:
    """The room grid that every level of a run shares, for --aux_rooms_weight; ConfigError when one
    has a single room, more than MAX_ROOMS, or the levels differ."""
    layouts = {level: RoomLayout.of(env) for level, env in envs.items()}
    for level, layout in layouts.items():
        if not 2 <= layout.num_rooms <= MAX_ROOMS:
            raise ConfigError(
                f"--aux_rooms_weight needs levels of 2 to {MAX_ROOMS} rooms; {level} has {layout.num_rooms}"
            )
    if len(set(layouts.values())) > 1:
        raise ConfigError(f"--aux_rooms_weight: the levels have different room grids ({layouts})")
    return next(iter(layouts.values()))
