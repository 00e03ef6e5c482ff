"""--subgoal_ce_weights: the action cross-entropy weighted by what the bot is doing at each step
(babyai_env.SUBGOAL_KINDS). The loss's CE term becomes sum(w ce) / sum(w) with its gradient; kinds
not listed and steps without a subgoal weigh 1; train/ce stays the plain mean; a YAML mapping and a
command line's 'kind=w,...' give the same config, and a bad one is refused in one line naming the key.

    pytest tests/test_subgoal_ce_weights.py
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import train_mop
from conftest import TINY_PRESET, tiny_config
from mop.aux_losses import ce_weight_shift, subgoal_ce_weights
from mop.babyai_env import NO_SUBGOAL, SUBGOAL_KINDS, key_ahead
from mop.experiment import ConfigError, load_config, read_metrics, resume_config

KIND = {name: i for i, name in enumerate(SUBGOAL_KINDS)}
LEVEL = "BabyAI-Unlock-v0"


def batch(seed: int = 0, T: int = 6, N: int = 4, A: int = 7):
    """Logits (a leaf), labels, a mask with unlabelled steps and subgoal codes with NO_SUBGOAL."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(T, N, A, generator=g, requires_grad=True)
    labels = torch.randint(0, A, (T, N), generator=g)
    mask = torch.rand(T, N, generator=g) > 0.25
    subgoal = np.random.default_rng(seed).integers(-1, len(SUBGOAL_KINDS), (T, N)).astype(np.int8)
    return logits, labels, mask, subgoal


def test_the_loss_becomes_the_weighted_mean_with_its_gradient():
    """CE + the shift equals sum(w ce) / sum(w) over the labelled steps, and so does its gradient,
    where w is 4 for 'pick up', 0.5 for 'explore' and 1 elsewhere (NO_SUBGOAL steps included)."""
    weights = {"pick up": 4.0, "explore": 0.5}
    logits, labels, mask, subgoal = batch()
    assert (subgoal[mask.numpy()] == NO_SUBGOAL).any() and (subgoal[mask.numpy()] == KIND["pick up"]).any()
    parts: dict = {}
    plain = F.cross_entropy(logits[mask], labels[mask])
    w_of = subgoal_ce_weights(subgoal, weights, logits.device)
    total = plain + ce_weight_shift(SimpleNamespace(logits=logits), labels, mask, w_of, parts)
    (got,) = torch.autograd.grad(total, logits)

    w = torch.ones(subgoal.shape)
    w[torch.from_numpy(subgoal == KIND["pick up"])] = 4.0
    w[torch.from_numpy(subgoal == KIND["explore"])] = 0.5
    per_step = F.cross_entropy(logits.reshape(-1, 7), labels.reshape(-1), reduction="none").view(6, 4)
    expected = (w[mask] * per_step[mask]).sum() / w[mask].sum()
    (want,) = torch.autograd.grad(expected, logits)
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert parts["train/ce_weighted"] == pytest.approx(expected.item(), rel=1e-6)
    assert torch.allclose(got, want, atol=1e-7)
    (unweighted,) = torch.autograd.grad(F.cross_entropy(logits[mask], labels[mask]), logits)
    assert not torch.allclose(got, unweighted, atol=1e-4)  # it did reweight
    listed = np.isin(subgoal, [KIND["pick up"], KIND["explore"]])[mask.numpy()]
    assert parts["train/ce_weighted_share"] == pytest.approx(listed.mean())
    assert got[~mask].abs().max() == 0  # unlabelled steps stay out


def test_weights_of_one_change_nothing_and_an_unlabelled_batch_gives_zero():
    logits, labels, mask, subgoal = batch(1)
    out = SimpleNamespace(logits=logits)
    ones = subgoal_ce_weights(subgoal, {"explore": 1.0, "open": 1.0}, logits.device)
    assert ce_weight_shift(out, labels, mask, ones, {}).abs().item() < 1e-6
    none = torch.zeros_like(mask)
    threes = subgoal_ce_weights(subgoal, {"open": 3.0}, logits.device)
    assert ce_weight_shift(out, labels, none, threes, {}).item() == 0.0


def test_a_mapping_and_a_command_line_give_one_config(tmp_path):
    path = tmp_path / "w.yaml"
    path.write_text(f"base: {TINY_PRESET}\nsubgoal_ce_weights: {{go to other object: 4, pick up: 2.5}}\n")
    from_yaml = load_config(path, {"checkpoint_dir": str(tmp_path)}).subgoal_ce_weights
    cli = tiny_config(tmp_path, subgoal_ce_weights="go to other object=4, pick up=2.5").subgoal_ce_weights
    assert from_yaml == cli == {"go to other object": 4.0, "pick up": 2.5}
    assert tiny_config(tmp_path).subgoal_ce_weights is None  # the default: plain CE


@pytest.mark.parametrize(
    "value, message",
    [
        ("go to key=4", "'go to key' is not a subgoal kind"),
        ("open=0", "the weight of 'open' must be a number > 0, got 0.0"),
        ("open=-1", "the weight of 'open' must be a number > 0, got -1.0"),
        ("open=nan", "the weight of 'open' must be a finite number"),
        ("open=x", "the weight of 'open' must be a finite number"),
        ({"open": True}, "the weight of 'open' must be a finite number"),
        ("open", "must be 'kind=weight,...' or a mapping"),
        ({}, "must be a mapping of subgoal kinds to weights"),
        (3, "must be a mapping of subgoal kinds to weights"),
    ],
)
def test_a_bad_value_is_refused_in_one_line_naming_the_key(tmp_path, value, message):
    with pytest.raises(ConfigError, match="^subgoal_ce_weights") as info:
        tiny_config(tmp_path, subgoal_ce_weights=value)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_online_dagger_records_subgoals_and_logs_the_weighted_ce_and_resumes(tmp_path):
    """Live collection records the bot's subgoals when the weights are on, the rows carry
    train/ce_weighted beside the plain train/ce, and the run resumes under its weights (a mapping
    saved, the same given as a command line) and refuses others."""
    online = dict(task_id=LEVEL, buffer_episodes=0, max_steps=30, log_interval=1)
    weights = {"explore": 2.0, "go to other object": 4.0, "pick up": 4.0, "open": 4.0}
    train_mop.main(tiny_config(tmp_path, **online, num_updates=2, subgoal_ce_weights=weights), progress=False)
    rows = read_metrics(tmp_path / LEVEL / "trial_0" / "metrics.jsonl")
    assert rows and all("train/ce" in r and "train/ce_weighted" in r for r in rows)
    assert any(r["train/ce_weighted_share"] > 0 for r in rows)  # live steps carry the bot's subgoal
    cfg = tiny_config(tmp_path, **online, num_updates=3, subgoal_ce_weights=weights)
    train_mop.main(cfg, progress=False, resume=True)
    assert read_metrics(tmp_path / LEVEL / "trial_0" / "metrics.jsonl")[-1]["update"] == 3
    # --resume on the command line: the same weights spelt as a command line continue the run
    located = {"checkpoint_dir": str(tmp_path), "task_id": LEVEL, "max_steps": 30}
    line = "explore=2,go to other object=4,pick up=4,open=4"
    assert resume_config(TINY_PRESET, {**located, "subgoal_ce_weights": line}).subgoal_ce_weights == weights
    with pytest.raises(ConfigError, match="subgoal_ce_weights"):
        resume_config(TINY_PRESET, {**located, "subgoal_ce_weights": "open=2"})


def test_key_ahead_marks_the_steps_that_face_a_key_with_free_hands():
    """Against minigrid's own front cell and carried object on random walks of GoToImpUnlock: the
    view's cell (3, 5) of a 7 x 7 view is the cell ahead; a key carried turns the mark off."""
    from mop.babyai_env import make_env, quiet_reset

    env = make_env("BabyAI-GoToImpUnlock-v0")
    rng = np.random.default_rng(0)
    marked = carried = 0
    for seed in range(40):
        obs = quiet_reset(env, seed)
        for _ in range(60):
            front = env.unwrapped.grid.get(*env.unwrapped.front_pos)
            holding = env.unwrapped.carrying is not None
            want = front is not None and front.type == "key" and not holding
            image = torch.from_numpy(obs["image"])[None, None]
            got = key_ahead(image, torch.tensor([[int(holding)]], dtype=torch.uint8))
            assert bool(got) == want
            marked += want
            carried += holding and front is not None and front.type == "key"
            action = 3 if want and rng.random() < 0.5 else int(rng.integers(3))
            obs, *_ = env.step(action)
    assert marked > 20 and carried > 0


def test_a_key_ahead_weight_trains_logs_and_a_bad_one_is_refused(tmp_path):
    online = dict(task_id=LEVEL, buffer_episodes=0, max_steps=30, log_interval=1)
    train_mop.main(tiny_config(tmp_path, **online, num_updates=2, key_ahead_ce_weight=5.0), progress=False)
    rows = read_metrics(tmp_path / LEVEL / "trial_0" / "metrics.jsonl")
    assert rows and all("train/ce_weighted" in r for r in rows)
    assert tiny_config(tmp_path).key_ahead_ce_weight == 1.0  # the default: plain CE
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="key_ahead_ce_weight'? must be a finite number") as info:
            tiny_config(tmp_path, key_ahead_ce_weight=bad)
        assert "\n" not in str(info.value)
