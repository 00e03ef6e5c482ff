"""The imitation loop's recipe: why PutNextLocal stalled (the mission encoder), the teacher-forcing
schedule (DAgger's beta_i), the learning-rate schedule and their logging; where a run stands
(run_status) and the one driver that trains it (train_to_end).

    pytest tests/test_imitation.py -q
"""

from functools import partial

import pytest
import torch
from minigrid.envs.babyai.core.verifier import PutNextInstr

import train_mop
from conftest import tiny_config
from mixture_of_experts import build_policy
from mop.babyai_env import SafeBot, make_env, quiet_reset, train_episode_seed
from mop.collection import Collector
from mop.experiment import ConfigError, load_config, read_metrics
from mop.imitation import DONE, NEW, PARTIAL, run_status, train_to_end
from mop.language import build_mission_encoder
from mop.runs import RunLockedError, checkpoint_name, run_lock
from mop.schedules import lr_at, teacher_forcing_at

PUTNEXT = "BabyAI-PutNextLocal-v0"
# One bag of words, three missions: which object moves, and which colour goes with which type.
SAME_BAG = [
    "put the yellow ball next to the grey box",
    "put the grey box next to the yellow ball",
    "put the yellow box next to the grey ball",
]


# ----------------------------------------------------------------------------- the PutNextLocal stall


def first_pickup(env, instrs=None):
    """The object the bot picks up first when it drives the episode (with `instrs` swapped in)."""
    if instrs is not None:
        env.instrs = instrs
        instrs.reset_verifier(env)
    bot = SafeBot(env)
    for _ in range(env.max_steps):
        action = bot.label(None)
        assert action is not None, bot.failure
        env.step(action)
        if env.carrying is not None:
            return env.carrying
    raise AssertionError("the bot never picked anything up")


def test_putnext_labels_depend_on_word_order():
    """The bot moves a different object for the same words in another order: the labels for one
    observation and one bag of words contradict each other, so a bag-of-words student cannot fit them
    (the stall: training accuracy ~0.5 on PutNextLocal while GoToLocal, one object, reaches 99%)."""
    differ = 0
    for episode in range(5):
        seed = train_episode_seed(0, 0, episode)
        env = make_env(PUTNEXT)
        quiet_reset(env, seed)
        moved = first_pickup(env)
        quiet_reset(env, seed)
        swapped = PutNextInstr(env.instrs.desc_fixed, env.instrs.desc_move)
        differ += first_pickup(env, swapped) is not moved
    assert differ == 5


def test_bow_is_blind_to_putnext_word_order_and_gru_is_not():
    torch.manual_seed(0)
    bow = build_mission_encoder("bow", 16)(SAME_BAG)
    assert torch.allclose(bow[0], bow[1]) and torch.allclose(bow[0], bow[2])  # pinned: one input, 3 missions
    assert load_config(None, {"lang_encoder": "gru"}).lang_encoder == "gru"
    gru = build_mission_encoder("gru", 16)(SAME_BAG)
    assert (gru[0] - gru[1]).abs().max() > 1e-3 and (gru[0] - gru[2]).abs().max() > 1e-3


def test_gru_encoder_round_trip_and_gradients():
    enc = build_mission_encoder("gru", 8)
    out = enc(SAME_BAG + ["go to the red ball"])
    assert out.shape == (4, 8)
    out.sum().backward()
    assert enc.embedding.weight.grad.abs().sum() > 0
    again = build_mission_encoder("gru", 8, state=enc.encoder_state())
    assert torch.equal(again(SAME_BAG), enc(SAME_BAG))
    with pytest.raises(ValueError, match="lang_dim"):
        build_mission_encoder("gru", 16, state=enc.encoder_state())


# ----------------------------------------------------------------------------- teacher forcing


def test_teacher_forcing_schedule_is_linear_then_constant(tmp_path):
    cfg = tiny_config(
        tmp_path, teacher_forcing=1.0, teacher_forcing_final=0.2, teacher_forcing_decay_updates=4
    )
    values = [teacher_forcing_at(cfg, u) for u in range(1, 8)]
    assert values == pytest.approx([1.0, 0.8, 0.6, 0.4, 0.2, 0.2, 0.2])
    constant = tiny_config(tmp_path, teacher_forcing=0.3)
    assert {teacher_forcing_at(constant, u) for u in range(1, 5)} == {0.3}


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"teacher_forcing_decay_updates": -5, "teacher_forcing_final": 0.0}, "before it starts"),
        ({"teacher_forcing_final": 1.5, "teacher_forcing_decay_updates": 3}, "teacher_forcing_final"),
        ({"teacher_forcing_final": 0.1}, "go together"),
        ({"teacher_forcing_decay_updates": 10}, "go together"),
    ],
)
def test_bad_teacher_forcing_schedules_are_refused(tmp_path, overrides, match):
    with pytest.raises(ConfigError, match=match):
        tiny_config(tmp_path, **overrides)


def test_collector_acts_with_the_submitted_teacher_forcing():
    """A collector built with 0 that is handed 1.0 executes the bot's labels: every episode it
    finishes is a success (GoToRedBallGrey's bot always solves it)."""
    config = {
        "policy_type": "mop",
        "input_dim": 985,
        "num_actions": 7,
        "lang_dim": 8,
        "intermediate_dim": 16,
        "router_hidden_size": 8,
        "expert_hidden_sizes": [[0, 8]],
        "obs_encoding": "onehot",
        "input_encoder": "bilinear",
    }
    policy = build_policy({**tiny_config(".").__dict__, **config})
    encoder = partial(build_mission_encoder, "bow", 8)()
    collector = Collector("BabyAI-GoToRedBallGrey-v0", [0, 1], 0, None, "onehot", teacher_forcing=0.0)
    chunk = collector.collect(policy, encoder, 40, teacher_forcing=1.0)
    assert chunk["teacher_forcing"] == 1.0
    assert chunk["episodes"] and all(ep.success for _, ep in chunk["episodes"])
    assert (chunk["label"][chunk["label_mask"]] >= 0).all()


def test_schedule_value_is_logged_per_row(tmp_path):
    cfg = tiny_config(
        tmp_path, teacher_forcing=1.0, teacher_forcing_final=0.0, teacher_forcing_decay_updates=5
    )
    summary = train_mop.main(cfg, progress=False)
    rows = read_metrics(summary["metrics_path"])
    logged = [row["train/teacher_forcing"] for row in rows]
    # rows average updates 1-3 (1.0, 0.8, 0.6) and 4-6 (0.4, 0.2, 0.0)
    assert logged == pytest.approx([0.8, 0.2])


# ----------------------------------------------------------------------------- learning-rate schedule


def test_lr_schedule_is_linear_then_constant(tmp_path):
    cfg = tiny_config(tmp_path, lr=1e-3, lr_final=2e-4, lr_decay_updates=4)
    assert [lr_at(cfg, u) for u in range(1, 8)] == pytest.approx([1e-3, 8e-4, 6e-4, 4e-4, 2e-4, 2e-4, 2e-4])
    assert {lr_at(tiny_config(tmp_path, lr=5e-4), u) for u in range(1, 5)} == {5e-4}


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"lr_decay_updates": -5, "lr_final": 1e-4}, "before it starts"),
        ({"lr_final": 0.0, "lr_decay_updates": 3}, "lr_final must be a positive"),
        ({"lr_final": float("nan"), "lr_decay_updates": 3}, "lr_final"),
        ({"lr_final": 1e-4}, "go together"),
        ({"lr_decay_updates": 10}, "go together"),
        ({"lr_final": 2.0, "lr_decay_updates": 3}, "at most 1"),
    ],
)
def test_bad_lr_schedules_are_refused(tmp_path, overrides, match):
    with pytest.raises(ConfigError, match=match):
        tiny_config(tmp_path, **overrides)


def test_the_optimizer_steps_at_the_scheduled_lr_and_resume_continues_it(tmp_path):
    """Each update's Adam step uses lr_at(update) (logged as train/lr, averaged per row like every
    train/ value); the checkpoint's optimizer holds the last step's rate, and a resumed run goes on
    along the schedule, not from the saved rate."""
    schedule = dict(lr=1e-3, lr_final=1e-4, lr_decay_updates=6, async_collection=False)
    summary = train_mop.main(tiny_config(tmp_path / "a", num_updates=3, **schedule), progress=False)
    saved = torch.load(summary["checkpoints"][-1], weights_only=True)
    assert [g["lr"] for g in saved["optimizer_state_dict"]["param_groups"]] == pytest.approx([7e-4])
    resumed = train_mop.main(
        tiny_config(tmp_path / "a", num_updates=9, **schedule), resume=True, progress=False
    )
    logged = [row["train/lr"] for row in read_metrics(resumed["metrics_path"])]
    # rows: updates 1-3 (1e-3, 8.5e-4, 7e-4), 4-6 (5.5e-4, 4e-4, 2.5e-4), 7-9 (1e-4 each)
    assert logged == pytest.approx([8.5e-4, 4e-4, 1e-4])
    final = torch.load(resumed["checkpoints"][-1], weights_only=True)
    assert [g["lr"] for g in final["optimizer_state_dict"]["param_groups"]] == pytest.approx([1e-4])
    # without a schedule (the defaults, as for a checkpoint saved before these keys) the rate is lr
    assert lr_at(tiny_config(tmp_path / "b"), 100) == tiny_config(tmp_path / "b").lr


def test_training_start_prints_no_minigrid_sampling_chatter(tmp_path, capfd):
    # The learner resets one probe env per level to read its action set and step limit; on
    # BabyAI-Unlock-v0, seed 0's layout is rejected once and minigrid printed "Sampling rejected"
    # into every training log.
    cfg = tiny_config(tmp_path / "ck", task_id="BabyAI-Unlock-v0", num_updates=1, checkpoint_interval=None)
    train_mop.main(cfg, progress=False)
    out, err = capfd.readouterr()
    assert "Sampling rejected" not in out + err


# ----------------------------------------------------------------------------- where a run stands


def test_run_status_and_train_to_end_decide_and_drive_a_run(tmp_path):
    """new -> trained; done -> nothing trained and no file touched; more updates -> partial,
    resumed; a numbered checkpoint at num_updates without checkpoint_final.pt (a kill between the
    two) -> partial, finished by the link alone; a folder held by another writer -> refused."""
    policy = (train_mop.POLICY_TYPE, build_policy)

    def drive(cfg):
        return train_to_end(cfg, *policy, train_mop.make_loss(cfg, cfg.expert_hidden_sizes), progress=False)

    cfg = tiny_config(tmp_path, num_updates=3, async_collection=False)
    folder = tmp_path / cfg.task_id / "trial_0"
    assert run_status(cfg).state == NEW and drive(cfg)[0] == NEW
    status = run_status(cfg)
    assert (status.state, status.path.name, status.update) == (DONE, checkpoint_name(None), 3)
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert drive(cfg)[0] == DONE
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before
    longer = tiny_config(tmp_path, num_updates=4, async_collection=False)
    assert run_status(longer).state == PARTIAL and drive(longer)[0] == PARTIAL
    assert run_status(longer).update == 4 and run_status(cfg).state == DONE  # beyond 3: done for it
    (folder / checkpoint_name(None)).unlink()  # killed between checkpoint_4.pt and its final link
    state, summary = drive(longer)
    assert state == PARTIAL and summary["checkpoints"] == [str(folder / checkpoint_name(None))]
    assert (folder / checkpoint_name(4)).samefile(folder / checkpoint_name(None))
    assert run_status(longer).state == DONE
    with run_lock(folder), pytest.raises(RunLockedError):
        drive(tiny_config(tmp_path, num_updates=5, async_collection=False))
