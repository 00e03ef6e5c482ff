"""--aux_match_weight: on the steps facing a key with free hands after a locked door was in view, a head
reads from what the action head reads whether that key has the door's colour (babyai_env.key_match,
from the episode's own views). The labels follow the env, the loss counts those steps alone, reads the
head's input (not the memory), trains from a demo store and online, resumes, and bad weights are refused.

    pytest tests/test_aux_match.py
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from minigrid.core.constants import COLOR_TO_IDX

from mixture_of_experts import build_policy
from mop.aux_losses import aux_match_loss
from mop.babyai_env import NO_DOOR, SafeBot, door_labels, key_match, locked_doors, make_env, quiet_reset
from tests.test_actor_head import BASE
from tests.test_aux_target import check_head_trains_from_demos_and_resumes

KEY, DOOR, LOCKED = 5, 4, 2


def view(ahead: tuple[int, int] | None = None) -> np.ndarray:
    """A 7 x 7 view of empty cells; `ahead` (object, colour) in the cell ahead, (3, 5)."""
    image = np.zeros((7, 7, 3), np.uint8)
    image[..., 0] = 1
    if ahead is not None:
        image[3, 5] = (ahead[0], ahead[1], 0)
    return image


def test_eligible_steps_face_a_key_with_free_hands_after_a_door_and_match_its_colour():
    red, green = COLOR_TO_IDX["red"], COLOR_TO_IDX["green"]
    images = np.stack([view((KEY, red)), view((KEY, green)), view((KEY, red)), view((KEY, red)), view()])
    carrying = np.array([0, 0, 1, 0, 0])
    door = np.array([red, red, red, NO_DOOR, red])
    eligible, match = key_match(images, carrying, door)
    assert eligible.tolist() == [True, True, False, False, False]  # held: no choice; no door seen yet
    assert match.tolist() == [True, False, False, False, False]
    te, tm = key_match(torch.from_numpy(images), torch.from_numpy(carrying), torch.from_numpy(door))
    assert te.tolist() == eligible.tolist() and tm.tolist() == match.tolist()  # torch as numpy


def test_the_labels_follow_the_env_on_the_bots_and_a_wandering_agents_episodes():
    """At each step the view's labels equal the world's: the cell in front holds a key, nothing is
    carried, a locked door was in view at or before the step, and the key's colour is that door's."""
    env = make_env("BabyAI-GoToImpUnlock-v0")
    rng = np.random.default_rng(0)
    counts = np.zeros(2, int)
    for seed in range(12):
        obs = quiet_reset(env, seed)
        u = env.unwrapped
        (door,) = locked_doors(u)
        colour = COLOR_TO_IDX[u.grid.get(*door).color]
        bot, views, held, truth, seen, last = SafeBot(env), [], [], [], False, None
        for _ in range(600):
            views.append(obs["image"])
            held.append(int(u.carrying is not None))
            seen = seen or bool(((obs["image"][..., 0] == DOOR) & (obs["image"][..., 2] == LOCKED)).any())
            front = u.grid.get(*u.front_pos)
            ahead = front is not None and front.type == "key" and u.carrying is None and seen
            truth.append((ahead, ahead and COLOR_TO_IDX[front.color] == colour))
            # the odd layouts: half the steps at random (the bot, told what was done, replans)
            action = bot.label(last)
            if action is None or (seed % 2 and rng.random() < 0.5):
                action = int(rng.integers(0, 6))
            last = action
            obs, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                break
        images = np.stack(views)
        eligible, match = key_match(images, np.array(held), door_labels(images))
        assert eligible.tolist() == [a for a, _ in truth] and match.tolist() == [m for _, m in truth]
        counts += [sum(m for _, m in truth), sum(a and not m for a, m in truth)]
    assert counts.min() > 0  # both a matching and another key were faced


def test_the_loss_counts_the_eligible_steps_alone_and_reads_the_heads_input():
    torch.manual_seed(0)
    red, green = COLOR_TO_IDX["red"], COLOR_TO_IDX["green"]
    images = np.stack([view((KEY, red)), view(), view((KEY, green)), view((KEY, red))])[:, None]  # (T=4, N=1)
    carrying = np.array([[0], [0], [0], [1]])
    door = np.array([[red], [red], [red], [red]], np.int8)
    features = torch.randn(4, 1, 5, requires_grad=True)
    out = type("Out", (), {"logits": torch.zeros(4, 1, 7), "head_input_seq": features})()
    head = torch.nn.Linear(5, 1)
    parts: dict = {}
    loss = aux_match_loss(head, out, torch.from_numpy(images), torch.from_numpy(carrying), door, parts)
    by_hand = torch.nn.functional.binary_cross_entropy_with_logits(
        head(features[[0, 2], 0]).squeeze(-1), torch.tensor([1.0, 0.0])
    )
    assert torch.allclose(loss, by_hand) and parts["train/aux_match_share"] == 0.5
    loss.backward()
    assert (features.grad[[1, 3]] == 0).all() and (features.grad[[0, 2]] != 0).any()
    none = aux_match_loss(head, out, torch.from_numpy(images), torch.from_numpy(carrying), door * 0 - 1, {})
    assert none.item() == 0.0


@pytest.mark.parametrize("extra", [{}, {"head_hidden_size": 4}, {"head_reads_experts": True}])
def test_the_head_input_is_what_the_action_head_reads(extra):
    policy = build_policy({**BASE, **extra})
    T, B = 5, 3
    out = policy.forward_sequence(
        torch.randn(T, B, 20),
        torch.randn(T, B, 6),
        policy.init_memory(B),
        torch.zeros(T, B, dtype=torch.bool),
    )
    assert out.head_input_seq.shape == (T, B, policy.head_input_size)
    assert torch.allclose(policy._output(out.head_input_seq), out.logits)


def test_the_match_head_trains_from_demos_and_resumes(tmp_path):
    check_head_trains_from_demos_and_resumes(tmp_path, "match", outputs=1)


# online DAgger (live chunks record the door labels it needs) and the bad weights: tests/test_aux_key.py
