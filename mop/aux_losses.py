"""The learner's auxiliary losses: linear heads that read, from the policy's memory after each
step, what the memory should hold. Training only: the policy never sees their targets.

- `aux_rooms_loss` (--aux_rooms_weight, online imitation): which rooms the agent has stood in so far;
  `rooms_of` checks the levels' room grid first.
- `aux_target_loss` (--aux_target_weight, bot demos): where the bot is heading
  (babyai_env.SafeBot.target), the quantity demo_fit's breakdown found the unfit labels hinge on
  (docs/findings.md, "where the unfit labels are");
- `aux_subgoal_loss` (--aux_subgoal_weight, bot demos or online imitation): what the bot is doing
  (babyai_env.SafeBot.subgoal: exploring, going to the key, to a locked door, opening it, ...).
- `aux_target_loss` again, as --aux_key_weight's term (bot demos or online imitation, `name` "key"):
  where the nearest key of a locked door's colour that the agent has seen lies
  (babyai_env.KeyTracker), which memory_probe.py --target key_offset found the memory not to hold.
- `aux_subgoal_loss` again, as --aux_door_weight's term (any imitation, `name` "door"): the colour
  of the locked door last in view (babyai_env.door_labels, read from the episode's own views), which
  memory_probe.py --target door found the memory not to hold where the student picks a key.
- `aux_match_loss` (--aux_match_weight, any imitation): on the steps facing a key with free hands
  after a locked door was in view (babyai_env.key_match), whether that key has the door's colour,
  read from what the action head reads (out.head_input_seq), not the memory: the door head made the
  memory hold the colour (AUC 0.999) and the students still took the wrong keys; the match itself
  was computed nowhere the head reads (memory_probe.py --target key_match).
- `aux_target_loss` again, as --aux_door_place_weight's term (bot demos or online imitation, `name`
  "door_place"): where the nearest locked door the agent has seen lies, until it is unlocked
  (babyai_env.DoorTracker), which memory_probe.py --target door_offset found the memory to hold
  barely above the agent's room and heading while it carried the key back.
- `ce_weight_shift` (--subgoal_ce_weights, --key_ahead_ce_weight): not a head: the action loss
  weighted per step, by the same subgoals (the steps of some kinds, the key chain's, counted as if
  they were more common) or on the steps that face a key with free hands (`babyai_env.key_ahead`: where the
  agent takes a key or passes it by, the choice the failing GoToImpUnlock students get wrong).

    head = torch.nn.Linear(policy.memory_size, 2 * (2 * TARGET_RANGE + 1))
    loss = loss + cfg.aux_target_weight * aux_target_loss(head, out, chunk["target"], parts)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mop.babyai_env import (
    MAX_ROOMS,
    NO_SUBGOAL,
    NO_TARGET,
    SUBGOAL_KINDS,
    TARGET_RANGE,
    RoomLayout,
    key_ahead,
    key_match,
)
from mop.checks import ConfigError


def codes(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A chunk's int8 code column (target, subgoal) as an int64 index tensor on `device`."""
    return torch.from_numpy(np.ascontiguousarray(array).astype(np.int64)).to(device)


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
    logits = head(out.memory_seq[known]).float()  # float32 under bfloat16 autocast too
    aux = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    parts["train/aux_rooms"] = aux.item()
    parts["train/aux_rooms_accuracy"] = ((logits > 0).float() == target).float().mean().item()
    return aux


def aux_target_loss(
    head: torch.nn.Linear,
    out: Any,
    target: np.ndarray,
    parts: dict,
    name: str = "target",
    reads: str = "memory",
) -> torch.Tensor:
    """--aux_target_weight's term: the head's reading of the memory after each step
    (out.memory_seq) against where the bot heads at that step (the chunk's (T, N, 2) target,
    cells ahead and to the right, babyai_env.SafeBot.target): a cross-entropy over -R..R per axis,
    the mean of the two, over the steps with a target (NO_TARGET: none, e.g. Open, padding, live
    collection). Logs train/aux_<name> and train/aux_<name>_accuracy (both axes right) into parts.
    --aux_key_weight's term is the same with the chunk's `key` column (name "key"); with
    --aux_key_reads head_input (`reads`) the head reads what the action head reads
    (out.head_input_seq) instead of the memory. --aux_door_place_weight's is the same with the
    chunk's `door_place` column (name "door_place"), read from the memory."""
    code = codes(target, out.logits.device)
    known = code[..., 0] != NO_TARGET
    if not known.any():
        return out.logits.sum() * 0.0
    classes = code[known] + TARGET_RANGE  # (K, 2) in 0..2R
    features = out.head_input_seq if reads == "head_input" else out.memory_seq
    logits = head(features[known]).float().view(-1, 2, 2 * TARGET_RANGE + 1)
    aux = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), classes.reshape(-1))
    parts[f"train/aux_{name}"] = aux.item()
    parts[f"train/aux_{name}_accuracy"] = (logits.argmax(-1) == classes).all(-1).float().mean().item()
    return aux


def aux_subgoal_loss(
    head: torch.nn.Linear, out: Any, subgoal: np.ndarray, parts: dict, name: str = "subgoal"
) -> torch.Tensor:
    """--aux_subgoal_weight's term: the head's reading of the memory after each step against what
    the bot is doing at that step (the chunk's (T, N) subgoal, an index into SUBGOAL_KINDS): a
    cross-entropy over the kinds, mean over the steps with one (NO_SUBGOAL: none, e.g. padding, a
    failed bot). Logs train/aux_<name> and train/aux_<name>_accuracy into parts.
    --aux_door_weight's term is the same with the chunk's `door` column (name "door": the colour of
    the locked door seen so far, NO_DOOR = NO_SUBGOAL = -1 before any)."""
    code = codes(subgoal, out.logits.device)
    known = code != NO_SUBGOAL
    if not known.any():
        return out.logits.sum() * 0.0
    logits = head(out.memory_seq[known]).float()  # float32 under bfloat16 autocast too
    classes = code[known]
    aux = torch.nn.functional.cross_entropy(logits, classes)
    parts[f"train/aux_{name}"] = aux.item()
    parts[f"train/aux_{name}_accuracy"] = (logits.argmax(-1) == classes).float().mean().item()
    return aux


def aux_match_loss(
    head: torch.nn.Linear,
    out: Any,
    image: torch.Tensor,
    carrying: torch.Tensor,
    door: np.ndarray,
    parts: dict,
) -> torch.Tensor:
    """--aux_match_weight's term: a binary cross-entropy of the head's reading of the action head's
    input (out.head_input_seq) against "the key ahead has the locked door's colour", mean over the
    eligible steps (babyai_env.key_match: a key ahead, hands free, a locked door seen; the chunk's
    `door` column). Logs train/aux_match, train/aux_match_accuracy and train/aux_match_share (the
    eligible steps' share that match) into parts; none where no step is eligible."""
    eligible, match = key_match(image, carrying, codes(door, image.device))
    if not eligible.any():
        return out.logits.sum() * 0.0
    logits = head(out.head_input_seq[eligible]).float().squeeze(-1)  # float32 under bfloat16 autocast
    target = match[eligible].float()
    aux = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    parts["train/aux_match"] = aux.item()
    parts["train/aux_match_accuracy"] = ((logits > 0).float() == target).float().mean().item()
    parts["train/aux_match_share"] = target.mean().item()
    return aux


def subgoal_ce_weights(subgoal: np.ndarray, weights: dict, device: torch.device) -> torch.Tensor:
    """--subgoal_ce_weights: each step's weight (T, N) by the bot's subgoal at it (`weights`
    {kind: w}; 1 for the kinds not listed and for steps without one, NO_SUBGOAL)."""
    table = torch.ones(len(SUBGOAL_KINDS) + 1, device=device)  # the last: NO_SUBGOAL (-1)
    for kind, weight in weights.items():
        table[SUBGOAL_KINDS.index(kind)] = float(weight)
    return table[codes(subgoal, device) % table.numel()]  # NO_SUBGOAL (-1) -> the last entry


def action_ce_weights(
    cfg: Any, chunk: dict, image: torch.Tensor, carrying: torch.Tensor
) -> torch.Tensor | None:
    """Each step's action-loss weight (T, N) under --subgoal_ce_weights (by the bot's subgoal) and
    --key_ahead_ce_weight (on the steps key_ahead marks), the two multiplied; None when both are off.
    image (T, N, 7, 7, 3) and carrying (T, N): the chunk's, already on the learner's device."""
    if not cfg.subgoal_ce_weights and cfg.key_ahead_ce_weight == 1.0:
        return None
    device = image.device
    w = torch.ones(chunk["label"].shape, device=device)
    if cfg.subgoal_ce_weights:
        w = w * subgoal_ce_weights(chunk["subgoal"], cfg.subgoal_ce_weights, device)
    if cfg.key_ahead_ce_weight != 1.0:
        ahead = key_ahead(image, carrying)
        w = torch.where(ahead, w * cfg.key_ahead_ce_weight, w)
    return w


def ce_weight_shift(
    out: Any, labels: torch.Tensor, mask: torch.Tensor, w: torch.Tensor, parts: dict
) -> torch.Tensor:
    """--subgoal_ce_weights's and --key_ahead_ce_weight's term: the labelled steps' action
    cross-entropy weighted by w (T, N), sum(w ce) / sum(w), minus the plain mean that the policy's
    loss_fn already holds, so the loss's CE term becomes the weighted one (the same gradient as a
    loss_fn that weighted it; train/ce stays the plain mean, comparable across recipes). Logs
    train/ce_weighted and train/ce_weighted_share (the labelled steps whose weight is not 1)."""
    if not mask.any():
        return out.logits.sum() * 0.0
    w = w[mask]
    ce = torch.nn.functional.cross_entropy(out.logits[mask].float(), labels[mask], reduction="none")
    weighted = (w * ce).sum() / w.sum()
    parts["train/ce_weighted"] = weighted.item()
    parts["train/ce_weighted_share"] = (w != 1.0).float().mean().item()
    return weighted - ce.mean()


# A fork's checkpoint lists here the heads its recipe trains and its parent did not (train_mop.py
# --fork_from): they start from their initialisation, with no Adam state.
FRESH_HEADS = "fresh_heads"
# Each auxiliary loss's weight key and the checkpoint key of its head.
AUX_HEADS = {
    "aux_rooms_weight": "aux_head_state_dict",
    "aux_target_weight": "target_head_state_dict",
    "aux_subgoal_weight": "subgoal_head_state_dict",
    "aux_key_weight": "key_head_state_dict",
    "aux_door_weight": "door_head_state_dict",
    "aux_match_weight": "match_head_state_dict",
    "aux_door_place_weight": "door_place_head_state_dict",
}


def head_optimizer_state(ckpt: dict, base: int, heads: dict[str, torch.nn.Module | None]) -> dict:
    """The checkpoint's Adam state for a learner whose parameters are `base` of the policy and the
    encoder, then each head of `heads` that is not None, in order (keyed by its checkpoint key).
    As saved when the checkpoint trained the same heads; for a fork that adds heads (FRESH_HEADS)
    or drops some, the state of the base and of the heads both train is kept, a new head starts
    without any (Adam's first step on it is its first), a dropped head's is left out."""
    state = ckpt["optimizer_state_dict"]
    old = [k for k in heads if k in ckpt]
    new = [k for k, head in heads.items() if head is not None]
    if old == new:
        return state
    mapping = {i: i for i in range(base)}  # new parameter index -> the checkpoint's
    at_old, at_new = base, base
    for key, head in heads.items():
        n_old = len(ckpt[key]) if key in ckpt else 0  # a Linear head: weight and bias
        n_new = 0 if head is None else len(list(head.parameters()))
        if n_old and n_new:
            mapping.update({at_new + j: at_old + j for j in range(n_new)})
        at_old, at_new = at_old + n_old, at_new + n_new
    (group,) = state["param_groups"]
    if len(group["params"]) != at_old:
        raise ConfigError(
            f"the checkpoint's optimizer holds {len(group['params'])} parameters, its weights {at_old}"
        )
    old_ids = list(group["params"])
    kept = {
        new_i: state["state"][old_ids[old_i]]
        for new_i, old_i in mapping.items()
        if old_ids[old_i] in state["state"]
    }
    return {"state": kept, "param_groups": [{**group, "params": list(range(at_new))}]}


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
