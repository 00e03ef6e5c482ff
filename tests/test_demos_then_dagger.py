"""BabyAI's recipe in one run (issue 41): `--demos N --demo_updates K` clones the bot's demos for
updates 1..K, then trains online by DAgger for K+1..num_updates; its schedules, its metrics rows,
--resume on both sides of the switch (and a finished BC run continued into DAgger), bad input."""

from __future__ import annotations

import dataclasses
import re
import shutil

import pytest
import torch

import train_mop
from conftest import stderr_lines, tiny_cli, tiny_config
from mop.experiment import ConfigError, read_metrics
from mop.imitation import ImitationRun
from mop.schedules import lr_at, offline_update, teacher_forcing_at

TASK = "BabyAI-GoToRedBallGrey-v0"
# Four updates on 10 demos, then four of DAgger with a buffer and teacher forcing 1 -> 0 over two.
RECIPE = dict(
    demos=10,
    demo_updates=4,
    num_updates=8,
    buffer_episodes=20,
    max_steps=12,
    teacher_forcing=1.0,
    teacher_forcing_final=0.0,
    teacher_forcing_decay_updates=2,
    log_interval=3,
    checkpoint_interval=3,
)


def recipe(checkpoint_dir, demos_dir, **changes):
    return tiny_config(checkpoint_dir, **{**RECIPE, "demos_dir": str(demos_dir), **changes})


def run_folder(checkpoint_dir):
    return checkpoint_dir / TASK / "trial_0"


def files(folder):
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


# ----------------------------------------------------------------------------- tier 1


def test_the_schedules_count_as_documented(tmp_path):
    cfg = recipe(tmp_path, tmp_path / "demos")
    assert [offline_update(cfg, u) for u in range(1, 9)] == [True] * 4 + [False] * 4
    # teacher forcing is DAgger's beta_i: it starts at the switch, 1 -> 0.5 -> 0 from update 5 on
    assert [teacher_forcing_at(cfg, u) for u in (5, 6, 7, 8)] == [1.0, 0.5, 0.0, 0.0]
    # the learning rate is the run's: a function of the update since update 1, whatever the phase
    scheduled = recipe(tmp_path, tmp_path / "demos", lr_final=1e-3, lr_decay_updates=4)
    assert [lr_at(scheduled, u) for u in (1, 5)] == pytest.approx([3e-3, 1e-3])
    # --dagger_lr: the schedule through the BC updates 1-4, then that rate for every DAgger update
    bumped = recipe(tmp_path, tmp_path / "demos", lr_final=1e-4, lr_decay_updates=4, dagger_lr=2e-3)
    assert [lr_at(bumped, u) for u in (1, 4, 5, 8)] == pytest.approx(
        [3e-3, 3e-3 - 2.9e-3 * 3 / 4, 2e-3, 2e-3]
    )
    # demo_updates 0 (absent): the demos throughout, as before the key existed
    alone = tiny_config(tmp_path, demos=10)
    assert alone.demo_updates == 0 and all(offline_update(alone, u) for u in range(1, 7))
    assert not any(offline_update(tiny_config(tmp_path), u) for u in range(1, 7))


@pytest.mark.parametrize(
    "flags, match",
    [
        (["--demos", "10", "--demo_updates", "-1"], r"demo_updates must be >= 0"),
        (["--demo_updates", "3"], r"demo_updates counts the offline updates on --demos N .* give --demos"),
        (
            ["--demos", "10", "--demos_in_dagger"],
            r"demos_in_dagger keeps the demos in the DAgger phase: give --demo_",
        ),
        (
            ["--demos", "10", "--dagger_lr", "1e-3"],
            r"dagger_lr is the DAgger phase's learning rate: give --demo_",
        ),
        (
            ["--demos", "10", "--demo_updates", "2", "--dagger_lr", "0"],
            r"dagger_lr must be a positive number",
        ),
        (["--demos", "10", "--demo_updates", "2", "--dagger_lr", "3"], r"dagger_lr must be at most 1"),
        (["--demos", "10", "--demo_updates", "6"], r"demo_updates \(6\) must be below num_updates \(6\)"),
        (["--demos", "10", "--demo_updates", "9"], r"no online update would be left"),
        (
            ["--demos", "10", "--demo_updates", "2", "--task_id", "BabyAI-GoToLocal-v0,BabyAI-PickupLoc-v0"],
            r"--demos \(and demo_updates, its offline phase\) takes one level",
        ),
    ],
)
def test_bad_demo_updates_are_one_error_line_and_write_nothing(tmp_path, monkeypatch, capsys, flags, match):
    monkeypatch.chdir(tmp_path)
    assert tiny_cli(monkeypatch, "--checkpoint_dir", str(tmp_path / "ck"), *flags) == 2
    lines = stderr_lines(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert re.search(match, lines[0]), lines[0]
    assert files(tmp_path) == {}


def test_the_buffer_combines_with_demos_only_through_demo_updates(tmp_path):
    with pytest.raises(ConfigError, match="give one of them .*--demo_updates K"):
        tiny_config(tmp_path, demos=10, buffer_episodes=20)
    assert tiny_config(tmp_path, demos=10, buffer_episodes=20, demo_updates=3).buffer_episodes == 20


# ----------------------------------------------------------------------------- tier 2


@pytest.mark.slow
def test_demos_then_dagger_logs_bc_rows_then_online_rows(tmp_path):
    ck = tmp_path / "ck"
    summary = train_mop.main(recipe(ck, tmp_path / "demos"), progress=False)
    rows = read_metrics(summary["metrics_path"])
    # a row at the switch (update 4) besides every third update: no row mixes the two phases
    assert [r["update"] for r in rows] == [3, 4, 6, 8]
    bc, online = rows[:2], rows[2:]
    for row in bc:  # the demos: bot-driven, demos/epoch, no student episode, the buffer not in play
        assert row["demos/epoch"] >= 1 and row["train/teacher_forcing"] == 1.0
        assert row["episodes/recent_window"] == 0 and "buffer/episodes" not in row
    for row in online:  # DAgger: live collection, the student's episodes, the buffer replayed
        assert "demos/epoch" not in row and "perf/collect_s" in row
        assert row["episodes/recent_window"] > 0 and row["buffer/episodes"] > 0
        assert row["train/replay_frames"] > 0
    # teacher forcing as configured from the switch: the mean of updates 5-6 (1, 0.5), then 0
    assert [r["train/teacher_forcing"] for r in online] == [0.75, 0.0]
    # the counters go on across the switch: demos trained on, then the episodes collected
    assert bc[1]["episodes/total"] >= 10 and online[1]["episodes/total"] > bc[1]["episodes/total"]
    assert (
        online[1]["frames"] > bc[1]["frames"]
        and online[1]["train/frame_gradients"] > bc[1]["train/frame_gradients"]
    )
    folder = run_folder(ck)
    assert "demo_sampler" in torch.load(folder / "checkpoint_3.pt", weights_only=True)
    final = torch.load(folder / "checkpoint_final.pt", weights_only=True)
    assert "demo_sampler" not in final and final["config"]["demo_updates"] == 4
    assert sorted(p.name for p in folder.glob("buffer_*.npz")) == ["buffer_8.npz"]


def test_the_learner_takes_demo_threads_on_the_demos_and_one_thread_from_the_switch(tmp_path, monkeypatch):
    """--demo_threads: no env workers run while the learner trains on demos, so it may use more
    torch threads; from the first DAgger update the workers take the other cores again."""
    from mop.imitation import Learner

    seen, step = [], Learner.step

    def counting(self, *args, **kwargs):
        seen.append(torch.get_num_threads())
        return step(self, *args, **kwargs)

    monkeypatch.setattr(Learner, "step", counting)
    before = torch.get_num_threads()
    try:
        train_mop.main(recipe(tmp_path / "ck", tmp_path / "demos", demo_threads=2), progress=False)
    finally:
        torch.set_num_threads(before)
    assert seen == [2] * 4 + [1] * 4


def test_dagger_lr_is_the_rate_of_every_dagger_step_and_the_schedule_holds_through_bc(tmp_path, monkeypatch):
    """--dagger_lr: Adam steps at the schedule's rate through the BC updates, at dagger_lr from the
    first DAgger update on (a test that fails if lr_at ignores the key or the phase)."""
    from mop.imitation import Learner

    seen, step = [], Learner.step

    def recording(self, *args, **kwargs):
        parts = step(self, *args, **kwargs)
        seen.append(self.optimizer.param_groups[0]["lr"])
        return parts

    monkeypatch.setattr(Learner, "step", recording)
    cfg = recipe(tmp_path / "ck", tmp_path / "demos", lr_final=1e-4, lr_decay_updates=100, dagger_lr=5e-4)
    rows = read_metrics(train_mop.main(cfg, progress=False)["metrics_path"])
    assert seen == pytest.approx([3e-3 - 2.9e-5 * u for u in range(4)] + [5e-4] * 4)
    assert [r["train/lr"] for r in rows if r["update"] > 4] == pytest.approx([5e-4, 5e-4])


@pytest.mark.slow
@pytest.mark.parametrize("stream", ["streamed", "padded"])
def test_demos_in_dagger_train_the_next_demo_batch_beside_each_dagger_update(tmp_path, monkeypatch, stream):
    """--demos_in_dagger: every DAgger update's batch is its live (and replayed) columns plus the
    demo batch that BC would have drawn next, the same demos in the same order; the streamed demo
    columns get back the memory they ended with (their slice of the batch, not the live one's); a
    run resumed after the switch continues the demo stream exactly."""
    from mop.imitation import Learner
    from mop.imitation_data import DemoSource
    from mop.streams import EpisodeColumns

    demos, columns = tmp_path / "demos", 3
    exact = dict(log_interval=1, async_collection=False, learner_stream=stream, batch_columns=None)
    if stream == "streamed":
        exact["batch_columns"] = columns
    drawn, widths, carried, ended, streams, demo_widths = [], [], [], [], set(), []
    result, step, carry = DemoSource.result, Learner.step, EpisodeColumns.carry

    def recording_result(self):
        chunk = result(self)
        streams.add(id(self.stream))
        drawn.append((chunk["image"].tobytes(), chunk["label"].tobytes(), chunk["done"].tobytes()))
        demo_widths.append(chunk["done"].shape[1])
        return chunk

    def recording_step(self, batch, lr):
        widths.append(batch["done"].shape[1])
        parts = step(self, batch, lr)
        ended.append(self.end_memory.clone())
        return parts

    def recording_carry(self, memory):
        carried.append((id(self), memory.clone()))
        return carry(self, memory)

    monkeypatch.setattr(DemoSource, "result", recording_result)
    monkeypatch.setattr(Learner, "step", recording_step)
    monkeypatch.setattr(EpisodeColumns, "carry", recording_carry)
    # BC on the demos for all 8 updates: the demo batches a BC run draws
    bc = {**RECIPE, "demo_updates": 0, "buffer_episodes": 0, **exact}
    train_mop.main(tiny_config(tmp_path / "bc", **bc, demos_dir=str(demos)), progress=False)
    bc_drawn = list(drawn)
    drawn.clear(), widths.clear(), carried.clear(), ended.clear(), demo_widths.clear()
    whole = train_mop.main(recipe(tmp_path / "whole", demos, demos_in_dagger=True, **exact), progress=False)
    assert drawn == bc_drawn  # updates 5-8 train on the demos BC would have drawn next
    assert widths[:4] == demo_widths[:4]  # BC: the demo batch alone
    live = [w - d for w, d in zip(widths[4:], demo_widths[4:])]  # DAgger: live (+ replayed), then demos
    assert all(w >= 4 for w in live)  # tiny.yaml's 4 envs at least
    plain_widths = list(widths)
    if stream == "streamed":
        # every update hands the demo stream its own columns' end memory: the batch's last ones
        demo_carries = [memory for source, memory in carried if source in streams]
        assert len(demo_carries) == 8
        for memory, end in zip(demo_carries, ended):
            assert torch.equal(memory, end[-columns:])
    rows = read_metrics(whole["metrics_path"])
    assert all(r["train/demo_frames"] > 0 and r["demos/epoch"] >= 1 for r in rows[4:]) and not any(
        "train/demo_frames" in r for r in rows[:4]
    )
    final = torch.load(run_folder(tmp_path / "whole") / "checkpoint_final.pt", weights_only=True)
    assert "demo_sampler" in final  # the demo stream's place, for --resume

    # Cut after the switch (at update 6): the resumed run draws the same demos and trains the same.
    drawn.clear(), widths.clear()
    cut = recipe(tmp_path / "cut", demos, demos_in_dagger=True, **{**exact, "num_updates": 6})
    train_mop.main(cut, progress=False)
    resumed = train_mop.main(
        recipe(tmp_path / "cut", demos, demos_in_dagger=True, **exact), resume=True, progress=False
    )
    assert drawn == bc_drawn  # the demos go on where the checkpoint left them
    assert widths[:6] == plain_widths[:6]  # (the live episodes restart at a resume: README "Resuming")
    again = read_metrics(resumed["metrics_path"])
    assert [r["train/loss"] for r in again[:6]] == [r["train/loss"] for r in rows[:6]]


@pytest.mark.parametrize("value", ["0", "-1"])
def test_demo_threads_below_one_is_refused(tmp_path, monkeypatch, capsys, value):
    assert tiny_cli(monkeypatch, "--checkpoint_dir", str(tmp_path), "--demo_threads", value) == 2
    assert stderr_lines(capsys.readouterr().err) == [f"error: demo_threads must be positive, got {value}"]
    assert not any(tmp_path.iterdir())


def cut_at(monkeypatch, update):
    """ImitationRun.update raises KeyboardInterrupt once `update` updates are done (a kill there);
    returns the real one."""
    real_update = ImitationRun.update

    def killed(run):
        if run.state.update == update:
            raise KeyboardInterrupt
        return real_update(run)

    monkeypatch.setattr(ImitationRun, "update", killed)
    return real_update


@pytest.mark.slow
def test_resume_inside_the_bc_phase_and_after_the_switch(tmp_path, monkeypatch):
    demos = tmp_path / "demos"
    exact = dict(log_interval=1, async_collection=False)
    whole = train_mop.main(recipe(tmp_path / "whole", demos, **exact), progress=False)
    uninterrupted = read_metrics(whole["metrics_path"])

    # Killed in update 4, after checkpoint_3.pt: the BC phase resumes with its demo sampler.
    cut_at(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        train_mop.main(recipe(tmp_path / "bc", demos, **exact), progress=False)
    monkeypatch.undo()
    assert not (run_folder(tmp_path / "bc") / "buffer_3.npz").exists()  # no buffer while on demos
    resumed = train_mop.main(recipe(tmp_path / "bc", demos, **exact), resume=True, progress=False)
    rows = read_metrics(resumed["metrics_path"])
    assert [r["update"] for r in rows] == list(range(1, 9))
    assert ["demos/epoch" in r for r in rows] == [True] * 4 + [False] * 4
    # cut before the switch, the whole run is the uninterrupted one: the demos go on where they
    # were, and the collector starts at the switch from the same weights either way
    assert [r["train/loss"] for r in rows] == [r["train/loss"] for r in uninterrupted]

    # Cut after the switch (at update 6): DAgger resumes with its collector and buffer.
    train_mop.main(recipe(tmp_path / "online", demos, num_updates=6, **exact), progress=False)
    assert (run_folder(tmp_path / "online") / "buffer_6.npz").exists()
    resumed = train_mop.main(recipe(tmp_path / "online", demos, **exact), resume=True, progress=False)
    rows = read_metrics(resumed["metrics_path"])
    assert [r["update"] for r in rows] == list(range(1, 9))
    assert ["demos/epoch" in r for r in rows] == [True] * 4 + [False] * 4
    assert [r["train/loss"] for r in rows[:6]] == [r["train/loss"] for r in uninterrupted[:6]]
    assert (
        rows[-1]["episodes/total"] > rows[5]["episodes/total"]
        and rows[-1]["buffer/added"] > rows[5]["buffer/added"]
    )
    assert (
        torch.load(run_folder(tmp_path / "online") / "checkpoint_final.pt", weights_only=True)["update"] == 8
    )


@pytest.mark.slow
def test_a_run_cut_between_checkpoints_resumes_from_its_resume_point(tmp_path, monkeypatch, capsys):
    """A resume point every RESUME_POINT_MINUTES (0 here: every update): one at a time, passed by
    numbered checkpoints, gone at the end; a cut run resumes from it, not from its last numbered
    checkpoint, and with an unreadable one from that checkpoint, whose buffer was kept."""
    import mop.imitation

    demos = tmp_path / "demos"
    exact = dict(log_interval=1, async_collection=False)
    uninterrupted = read_metrics(
        train_mop.main(recipe(tmp_path / "whole", demos, **exact), progress=False)["metrics_path"]
    )
    monkeypatch.setattr(mop.imitation, "RESUME_POINT_MINUTES", 0.0)

    # Cut in the BC phase with no numbered checkpoint yet: the whole run is the uninterrupted one.
    real_update = cut_at(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        train_mop.main(recipe(tmp_path / "bc", demos, checkpoint_interval=None, **exact), progress=False)
    monkeypatch.setattr(ImitationRun, "update", real_update)
    folder = run_folder(tmp_path / "bc")
    assert sorted(p.name for p in folder.glob("*.pt")) == ["resume_3.pt"]
    with pytest.raises(ConfigError, match="already holds checkpoints"):  # a new run does not start over it
        train_mop.main(recipe(tmp_path / "bc", demos, checkpoint_interval=None, **exact), progress=False)
    resumed = train_mop.main(
        recipe(tmp_path / "bc", demos, checkpoint_interval=None, **exact), resume=True, progress=False
    )
    assert "resuming from" in capsys.readouterr().out
    rows = read_metrics(resumed["metrics_path"])
    assert [r["update"] for r in rows] == list(range(1, 9))
    assert [r["train/loss"] for r in rows] == [r["train/loss"] for r in uninterrupted]
    assert sorted(p.name for p in folder.iterdir() if p.suffix in (".pt", ".npz")) == [
        "buffer_8.npz",
        "checkpoint_8.pt",
        "checkpoint_final.pt",
    ]

    # Cut in DAgger after checkpoint_5.pt: resume_7.pt beside it, and both buffers.
    cut_at(monkeypatch, 7)
    with pytest.raises(KeyboardInterrupt):
        train_mop.main(recipe(tmp_path / "dagger", demos, checkpoint_interval=5, **exact), progress=False)
    monkeypatch.undo()
    folder = run_folder(tmp_path / "dagger")
    assert sorted(p.name for p in folder.iterdir() if p.suffix in (".pt", ".npz")) == [
        "buffer_5.npz",
        "buffer_7.npz",
        "checkpoint_5.pt",
        "resume_7.pt",
    ]
    spare = tmp_path / "spare"
    shutil.copytree(tmp_path / "dagger", spare)
    resumed = train_mop.main(
        recipe(tmp_path / "dagger", demos, checkpoint_interval=5, **exact), resume=True, progress=False
    )
    rows = read_metrics(resumed["metrics_path"])
    assert [r["update"] for r in rows] == list(range(1, 9))
    assert [r["train/loss"] for r in rows[:7]] == [r["train/loss"] for r in uninterrupted[:7]]
    assert not list(folder.glob("resume_*.pt"))
    # The resume point unreadable (a full disk): back to checkpoint_5.pt and its buffer.
    (run_folder(spare) / "resume_7.pt").write_bytes(b"not a checkpoint")
    resumed = train_mop.main(
        recipe(spare, demos, checkpoint_interval=5, **exact), resume=True, progress=False
    )
    assert "resuming from checkpoint_5.pt" in capsys.readouterr().err
    rows = read_metrics(resumed["metrics_path"])
    assert [r["update"] for r in rows][:5] == [1, 2, 3, 4, 5] and rows[-1]["update"] == 8


@pytest.mark.slow
def test_a_finished_bc_run_goes_on_into_dagger_and_its_past_is_kept(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    ck, demos = tmp_path / "ck", tmp_path / "demos"
    where = ["--checkpoint_dir", str(ck), "--demos_dir", str(demos)]
    train_mop.main(tiny_config(ck, demos=10, demos_dir=str(demos), num_updates=4), progress=False)
    folder = run_folder(ck)
    for path in folder.glob("checkpoint_*.pt"):  # written before the key existed: no demo_updates
        ckpt = torch.load(path, weights_only=True)
        ckpt["config"].pop("demo_updates", None)  # (checkpoint_final.pt is a link to one of them)
        torch.save(ckpt, path)
    before = files(tmp_path)
    # moving the switch before updates already done on the demos is refused, nothing written
    assert tiny_cli(monkeypatch, *where, "--resume", "--num_updates", "8", "--demo_updates", "2") == 2
    lines = stderr_lines(capsys.readouterr().err)
    assert lines == [
        "error: --resume: demo_updates 2 contradicts the run's checkpoint, which trained offline on "
        "its demos through update 4: give demo_updates >= 4"
    ]
    assert files(tmp_path) == before
    # at (or after) its last update: the BC run goes on as DAgger
    assert tiny_cli(monkeypatch, *where, "--resume", "--num_updates", "8", "--demo_updates", "4") is None
    rows = read_metrics(folder / "metrics.jsonl")
    assert [r["update"] for r in rows] == [3, 4, 6, 8]
    assert ["demos/epoch" in r for r in rows] == [True, True, False, False]
    assert "perf/collect_s" in rows[-1] and "perf/collect_s" not in rows[1]  # live collection after update 4
    assert torch.load(folder / "checkpoint_final.pt", weights_only=True)["config"]["demo_updates"] == 4
    # ... and is the run that had --demo_updates 4 from the start (the collector starts from the
    # same weights at the switch either way)
    whole = tiny_config(tmp_path / "whole", demos=10, demos_dir=str(demos), num_updates=8, demo_updates=4)
    whole_rows = read_metrics(train_mop.main(whole, progress=False)["metrics_path"])
    assert [r["train/loss"] for r in rows] == [r["train/loss"] for r in whole_rows]
    # once it has turned to DAgger, the switch stays where it was
    capsys.readouterr()
    assert tiny_cli(monkeypatch, *where, "--resume", "--num_updates", "10", "--demo_updates", "6") == 2
    lines = stderr_lines(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].endswith("trained online after update 4: keep demo_updates 4")


# ----------------------------------------------------------------------------- --fork_from


def bc_checkpoint(tmp_path, demos):
    """A finished 4-update BC run on RECIPE's demos (no DAgger phase): its checkpoint_4.pt."""
    exact = dict(log_interval=1, async_collection=False)
    bc = {**RECIPE, "demo_updates": 0, "buffer_episodes": 0, "num_updates": 4, **exact}
    train_mop.main(tiny_config(tmp_path / "bc", **bc, demos_dir=str(demos)), progress=False)
    return run_folder(tmp_path / "bc") / "checkpoint_4.pt"


def test_a_fork_on_other_demos_samples_them_afresh(tmp_path, monkeypatch):
    """The parent's place in its 10 demos means nothing in 8: the fork starts its own pass."""
    parent = bc_checkpoint(tmp_path, tmp_path / "demos")
    monkeypatch.chdir(tmp_path)
    flags = ["--demos", "8", "--max_steps", "12", "--num_updates", "6", "--demos_dir", "demos"]
    assert tiny_cli(monkeypatch, *flags, "--checkpoint_dir", "fork", "--fork_from", str(parent)) is None
    sampler = torch.load(run_folder(tmp_path / "fork") / "checkpoint_6.pt", weights_only=True)["demo_sampler"]
    assert sampler["epoch_order"] and max(sampler["epoch_order"]) < 8
    same = tiny_config(
        tmp_path / "x", **{**RECIPE, "demo_updates": 0, "buffer_episodes": 0, "num_updates": 6}
    )
    assert "demo_sampler" in train_mop.fork_checkpoint(same, str(parent))  # the same demos: its place kept
    other = dataclasses.replace(same, demos=8)
    assert "demo_sampler" not in train_mop.fork_checkpoint(other, str(parent))


def test_an_earlier_system_checkpoint_is_not_forked(tmp_path, monkeypatch, capsys):
    """Its checkpoints hold weights and config only: one line, exit 2, nothing written."""
    from tests.test_compat import make_earlier

    path, _, _ = make_earlier(tmp_path, with_architecture=True)
    monkeypatch.chdir(tmp_path)
    before = files(tmp_path)
    assert tiny_cli(monkeypatch, "--checkpoint_dir", "fork", "--fork_from", str(path)) == 2
    lines = stderr_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "holds weights without a training state (no rng, stats)" in lines[0]
    assert files(tmp_path) == before


@pytest.mark.parametrize(
    "flags, match",
    [
        (["--expert_hidden_sizes", "[[0, 8], [0, 8]]"], r"other keys \(expert_hidden_sizes: "),
        (["--num_updates", "4"], r"is at update 4: num_updates \(4\) leaves nothing to train"),
        (["--resume"], r"--fork_from starts a new run; continue one with --resume alone"),
        (["--fork_from", "missing.pt"], r"--fork_from: checkpoint 'missing.pt' does not exist"),
    ],
)
def test_a_bad_fork_is_one_error_line_and_writes_nothing(tmp_path, monkeypatch, capsys, flags, match):
    parent = bc_checkpoint(tmp_path, tmp_path / "demos")
    monkeypatch.chdir(tmp_path)
    before = files(tmp_path)
    fork = ["--fork_from", str(parent)] if "--fork_from" not in flags else []
    argv = ["--checkpoint_dir", "fork", "--demos", "10", "--demos_dir", "demos", *fork, *flags]
    assert tiny_cli(monkeypatch, *argv) == 2
    lines = stderr_lines(capsys.readouterr().err)
    assert len(lines) == 1 and re.search(match, lines[0]), lines
    assert files(tmp_path) == before


def test_a_bc_checkpoint_forked_into_dagger_is_the_recipe_trained_from_the_start(
    tmp_path, monkeypatch, capsys
):
    """--fork_from a BC run's last checkpoint under RECIPE (its 4 BC updates, then DAgger with a
    buffer) trains updates 5-8 exactly as RECIPE run whole does: the BC phase of the two recipes is
    one computation, so a fork stands for the whole run (the findings' GoToImpUnlock forks)."""
    demos = tmp_path / "demos"
    exact = dict(log_interval=1, async_collection=False)
    whole = read_metrics(
        train_mop.main(recipe(tmp_path / "whole", demos, **exact), progress=False)["metrics_path"]
    )
    parent = bc_checkpoint(tmp_path, demos)
    parent_files = files(parent.parent)
    monkeypatch.chdir(tmp_path)
    flags = [f"--{k}={v}" for k, v in RECIPE.items()]
    flags += [
        "--log_interval=1",
        "--no-async_collection",
        "--demos_dir",
        str(demos),
        "--checkpoint_dir",
        "fork",
    ]
    capsys.readouterr()
    assert tiny_cli(monkeypatch, *flags, "--fork_from", str(parent)) is None
    assert f"forked from {parent.resolve()} at update 4 (" in capsys.readouterr().out
    folder = run_folder(tmp_path / "fork")
    rows = read_metrics(folder / "metrics.jsonl")
    assert [r["update"] for r in rows] == [5, 6, 7, 8] and not any("demos/epoch" in r for r in rows)
    assert [r["train/loss"] for r in rows] == [r["train/loss"] for r in whole[4:]]
    final = torch.load(folder / "checkpoint_final.pt", weights_only=True)
    assert final["config"]["buffer_episodes"] == 20 and final["config"]["demo_updates"] == 4
    assert files(parent.parent) == parent_files  # the parent run is read, never written
    # its checkpoints say where it came from and what the fork changed (the parent's say nothing)
    [record] = final["forked_from"]
    assert record["checkpoint"] == str(parent.resolve()) and record["update"] == 4
    assert record["changed"]["demo_updates"] == [0, 4] and record["changed"]["buffer_episodes"] == [0, 20]
    assert "seed" not in record["changed"] and "forked_from" not in torch.load(parent, weights_only=True)
    # the fork is a run like any other: --resume alone continues it, and keeps the record
    assert tiny_cli(monkeypatch, *flags, "--num_updates", "9", "--resume") is None
    assert read_metrics(folder / "metrics.jsonl")[-1]["update"] == 9
    assert torch.load(folder / "checkpoint_final.pt", weights_only=True)["forked_from"] == [record]


def test_making_the_demo_store_is_not_training_time(tmp_path, monkeypatch):
    """The wall and CPU spent making (or loading) the demos stay out of the run's elapsed_s and
    cpu_s (bench/levels.py charges a store's generation once, as its demo_s). The run's clocks are
    the real ones plus an offset that a store taking 1,000 s of each to make moves on: the run's
    totals stay far under 1,000 s. Fails if ImitationRun stops taking the store's time out."""
    import time
    import types

    from mop import imitation

    offset = {"wall": 0.0, "cpu": 0.0}
    clock = types.SimpleNamespace(
        perf_counter=lambda: time.perf_counter() + offset["wall"], monotonic=time.monotonic
    )
    monkeypatch.setattr(imitation, "time", clock)
    monkeypatch.setattr(imitation, "cpu_seconds", lambda: time.process_time() + offset["cpu"])

    class SlowDemoSource(imitation.DemoSource):
        def __init__(self, *args, **kwargs):
            offset["wall"] += 1000.0
            offset["cpu"] += 1000.0
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(imitation, "DemoSource", SlowDemoSource)
    config = recipe(tmp_path / "ck", tmp_path / "demos", num_updates=3, demo_updates=0, buffer_episodes=0)
    train_mop.main(config, progress=False)
    stats = torch.load(
        next((tmp_path / "ck").rglob("checkpoint_final.pt")), map_location="cpu", weights_only=True
    )["stats"]
    assert offset["wall"] == 1000.0  # the store was made (or loaded) once, inside the run
    assert 0 < stats["elapsed_s"] < 500 and 0 < stats["cpu_s"] < 500
