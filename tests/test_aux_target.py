"""--aux_target_weight: a head reads, from the memory after each step, where the bot heads
(babyai_env.SafeBot.target, recorded in bot demos); the loss reaches the memory, skips steps
without a target, trains from a demo store, resumes, and refuses what cannot work.

    pytest tests/test_aux_target.py
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import tiny_config
from mop.aux_losses import aux_target_loss
from mop.babyai_env import NO_TARGET, TARGET_RANGE, encode_obs
from mop.bot_demos import generate_demos
from mop.experiment import ConfigError, load_checkpoint, read_metrics
from mop.replay_buffer import episodes_as_chunk
from tests.test_env import small_agent

LEVEL = "BabyAI-Unlock-v0"
CLASSES = 2 * TARGET_RANGE + 1


def _forward(policy, encoder, chunk):
    obs = encode_obs(*(torch.from_numpy(chunk[k]) for k in ("image", "direction", "carrying")), "raw")
    lang = encoder(chunk["missions"])[torch.from_numpy(chunk["mission_index"])]
    memory = torch.zeros(chunk["label"].shape[1], policy.memory_size)
    return policy.forward_sequence(obs, lang, memory, torch.from_numpy(chunk["done"]))


def test_the_target_loss_reaches_the_memory_and_skips_steps_without_a_target():
    policy, encoder = small_agent()
    buf, _ = generate_demos(LEVEL, 2, 0, progress=False)
    chunk = episodes_as_chunk(list(buf.episodes))
    assert (chunk["target"][:, :, 0] != NO_TARGET).sum() > 20  # the demos' targets reach the chunk
    assert (chunk["target"][len(buf.episodes[0]) :, 0] == NO_TARGET).all()  # padding has none
    head = torch.nn.Linear(policy.memory_size, 2 * CLASSES)
    check_reaches_the_memory(policy, encoder, chunk, aux_target_loss, head, "target", NO_TARGET)


def check_reaches_the_memory(policy, encoder, chunk, loss_fn, head, key, none_code):
    """An auxiliary loss on chunk[key]: it logs train/aux_<key> and its accuracy, its gradient
    reaches every GRU of the policy and not the action head, and a chunk with none_code at every
    step gives a zero loss and logs nothing."""
    out = _forward(policy, encoder, chunk)
    parts: dict = {}
    loss_fn(head, out, chunk[key], parts).backward()
    assert 0.0 < parts[f"train/aux_{key}"] and 0.0 <= parts[f"train/aux_{key}_accuracy"] <= 1.0
    grus = [name for name, p in policy.named_parameters() if "gru" in name]
    assert grus and all(policy.get_parameter(n).grad.abs().sum() > 0 for n in grus)
    assert policy.head.weight.grad is None  # the action head is not touched
    none: dict = {}
    blank = np.full_like(chunk[key], none_code)
    assert loss_fn(head, out, blank, none).item() == 0.0 and none == {}


def test_a_head_that_reads_the_target_exactly_has_no_loss_and_full_accuracy():
    target = np.array([[[3, -2], [NO_TARGET, NO_TARGET]], [[-TARGET_RANGE, TARGET_RANGE], [0, 0]]], np.int8)
    known = target[..., 0] != NO_TARGET
    # a memory that is the one-hot of both axes' classes, read by an identity head
    memory = torch.zeros(2, 2, 2 * CLASSES)
    for t, n in zip(*np.nonzero(known)):
        memory[t, n, int(target[t, n, 0]) + TARGET_RANGE] = 60.0
        memory[t, n, CLASSES + int(target[t, n, 1]) + TARGET_RANGE] = 60.0

    class Out:
        logits = torch.zeros(2, 2, 7)
        memory_seq = memory

    head = torch.nn.Linear(2 * CLASSES, 2 * CLASSES)
    with torch.no_grad():
        head.weight.copy_(torch.eye(2 * CLASSES))
        head.bias.zero_()
    parts: dict = {}
    assert aux_target_loss(head, Out, target, parts).item() < 1e-6
    assert parts["train/aux_target_accuracy"] == 1.0
    wrong = target.copy()
    wrong[0, 0, 1] = -1  # one axis of one of three steps wrong: accuracy 2/3
    aux_target_loss(head, Out, wrong, parts)
    assert parts["train/aux_target_accuracy"] == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"aux_target_weight": -1.0}, "aux_target_weight must be >= 0"),
        ({"aux_target_weight": float("inf")}, "'aux_target_weight' must be a finite number"),
    ],
)
def test_bad_target_settings_are_refused(tmp_path, overrides, match):
    with pytest.raises(ConfigError, match=match):
        tiny_config(tmp_path, **overrides)


def test_the_target_head_trains_from_demos_and_resumes(tmp_path):
    check_head_trains_from_demos_and_resumes(tmp_path, "target")


def check_head_trains_from_demos_and_resumes(tmp_path, name: str, outputs: int = 2 * CLASSES) -> None:
    """The head of --aux_<name>_weight (a cells-ahead / cells-right head: target, key) trains from a
    demo store (train/aux_<name> logged), is saved as <name>_head_state_dict and moves on after a
    --resume; without the loss the checkpoint has no head and the same policy weights."""
    import train_mop

    def cfg(updates, weight=1.0, folder="aux"):
        return tiny_config(
            tmp_path / folder,
            task_id=LEVEL,
            demos=6,
            demos_dir=str(tmp_path / "demos"),
            num_updates=updates,
            **{f"aux_{name}_weight": weight},
        )

    key = f"{name}_head_state_dict"
    train_mop.main(cfg(3), progress=False)
    run = tmp_path / "aux" / LEVEL / "trial_0"
    rows = [r for r in read_metrics(run / "metrics.jsonl") if f"train/aux_{name}" in r]
    assert rows and all(0.0 < r[f"train/aux_{name}"] < 10.0 for r in rows)
    ckpt = torch.load(run / "checkpoint_final.pt", weights_only=True)
    head = ckpt[key]
    assert head["weight"].shape[0] == outputs
    train_mop.main(cfg(5), resume=True, progress=False)
    resumed = load_checkpoint(run / "checkpoint_final.pt")
    assert resumed["update"] == 5 and not torch.equal(resumed[key]["weight"], head["weight"])
    # without the loss the checkpoint has no head, and the policy's weights are the same set
    plain = load_checkpoint(
        train_mop.main(cfg(2, weight=0.0, folder="plain"), progress=False)["checkpoints"][-1]
    )
    assert key not in plain
    assert set(plain["policy_state_dict"]) == set(ckpt["policy_state_dict"])


def test_a_store_without_targets_is_refused_before_anything_is_written(tmp_path):
    import train_mop
    from mop import bot_demos

    store = bot_demos.DemoStore.create(
        bot_demos.store_path(tmp_path / "demos", LEVEL, 0), LEVEL, targets=False
    )
    bot_demos.extend_store(store, 3, progress=False)
    cfg = tiny_config(
        tmp_path / "ck", task_id=LEVEL, demos=3, demos_dir=str(tmp_path / "demos"), aux_target_weight=1.0
    )
    with pytest.raises(ConfigError, match="holds no bot targets"):
        train_mop.main(cfg, progress=False)
    assert not list((tmp_path / "ck").rglob("checkpoint_*.pt"))


def test_streamed_columns_carry_each_episodes_targets_and_keep_them_across_a_resume():
    from itertools import count

    from mop.streams import EpisodeColumns

    buf, _ = generate_demos(LEVEL, 3, 0, progress=False)
    episodes = list(buf.episodes)
    ids = count()
    stream = EpisodeColumns(1, 40, lambda: next(ids) % 3, episodes.__getitem__, memory_size=4)
    total = sum(len(ep) for ep in episodes)
    played = np.concatenate([stream.next_chunk()["target"][:, 0] for _ in range(-(-total // 40))])
    assert np.array_equal(played[:total], np.concatenate([ep.target for ep in episodes]))
    again = EpisodeColumns(1, 40, lambda: next(ids) % 3, episodes.__getitem__, memory_size=4)
    again.load_state(stream.state())
    assert np.array_equal(again.next_chunk()["target"][:5], stream.next_chunk()["target"][:5])


def test_online_dagger_trains_the_target_head(tmp_path):
    import train_mop

    cfg = tiny_config(
        tmp_path, task_id=LEVEL, aux_target_weight=1.0, buffer_episodes=6, max_steps=30, num_updates=3
    )
    train_mop.main(cfg, progress=False)
    rows = read_metrics(tmp_path / LEVEL / "trial_0" / "metrics.jsonl")
    assert [r for r in rows if 0.0 < r.get("train/aux_target", 0.0)]
