"""The edges every command shares (mop.checks.command_edges): a full disk or a file-size limit is one
`error:` line and exit 2 with nothing torn, Ctrl-C is one line and exit 130, a reader that closes
stdout early (`| head`) ends the output and not the command, and every other error is left alone.
The commands run as a user runs them (subprocesses), the disk limit set by RLIMIT_FSIZE (what
`prlimit --fsize` sets): Python ignores SIGXFSZ, so a write past it fails with EFBIG."""

from __future__ import annotations

import errno
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import interruptible
from mop.checks import command_edges, no_room

ROOT = Path(__file__).resolve().parent.parent


def _refused(call) -> tuple[int, str]:
    with pytest.raises(SystemExit) as e:
        with command_edges("interrupted: run it again"):
            call()
    return e.value.code


def _raise(error: BaseException):
    def call():
        raise error

    return call


@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.ENOSPC, "No space left on device", "results.csv"),
        OSError(errno.EFBIG, "File too large"),
        OSError("IOError: [Errno 28] No space left on device"),  # pyarrow's spelling: no errno
        RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534"),  # torch.save
    ],
)
def test_a_write_the_disk_cannot_take_is_one_line_and_exit_2(error, capsys):
    assert no_room(error)
    assert _refused(_raise(error)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "free space" in err


def test_ctrl_c_is_one_line_and_exit_130(capsys):
    assert _refused(_raise(KeyboardInterrupt())) == 130
    assert capsys.readouterr().err == "interrupted: run it again\n"


def test_an_error_from_cleanup_that_ctrl_c_cut_short_is_still_ctrl_c(capsys):
    """tqdm's bar.write, interrupted inside its lock's acquire, releases the lock it never took and
    raises RuntimeError with the KeyboardInterrupt as context (seen in CI): still exit 130, one line."""

    def call():
        try:
            try:
                raise KeyboardInterrupt
            finally:
                raise RuntimeError("cannot release un-acquired lock")
        except RuntimeError as e:
            raise ValueError("a wrapper's own error") from e  # the interrupt two links back

    assert _refused(call) == 130
    assert capsys.readouterr().err == "interrupted: run it again\n"


@pytest.mark.parametrize(
    "error",
    [OSError(errno.ENOENT, "No such file"), RuntimeError("a bug"), ValueError("x"), PermissionError()],
)
def test_other_errors_are_left_alone(error):
    assert not no_room(error)
    with pytest.raises(type(error)):
        with command_edges():
            raise error


def _limited(bytes_: int):
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (bytes_, bytes_))


def _run(argv: list[str], cwd: Path, limit: int | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        preexec_fn=_limited(limit) if limit else None,
        timeout=300,
    )


@pytest.mark.slow
def test_training_and_batch_eval_past_a_file_size_limit_say_one_line(tmp_path, tiny_run):
    train = _run(
        [str(ROOT / "train_mop.py"), "--config", str(ROOT / "configs/tiny.yaml"), "--checkpoint_dir", "ck"],
        tmp_path,
        limit=20_000,  # below a tiny checkpoint (~300 KB)
    )  # fmt: skip
    assert train.returncode == 2 and "Traceback" not in train.stderr, train.stderr
    assert train.stderr.strip().splitlines()[-1].startswith("error: ") and "free space" in train.stderr
    # batch_eval into a CSV that already holds rows: the limit stops the cache write; the CSV stays
    # readable with its rows, none duplicated
    shutil.copytree(tiny_run.root / "checkpoints", tmp_path / "checkpoints")
    results = tmp_path / "evaluation_results.csv"
    shutil.copy(tiny_run.results, results)
    before = pd.read_csv(results)
    shutil.copytree(tiny_run.cache_root, tmp_path / "evaluation_cache")
    evaluated = _run(
        [str(ROOT / "batch_eval.py"), "--checkpoint_dir", "checkpoints", "--num_episodes", "4", "--force"],
        tmp_path,
        limit=3_000,
    )
    assert evaluated.returncode == 2 and "Traceback" not in evaluated.stderr, evaluated.stderr
    assert (
        evaluated.stderr.strip().splitlines()[-1].startswith("error: ") and "free space" in evaluated.stderr
    )
    after = pd.read_csv(results)
    assert len(after) == len(before) and not after.duplicated().any()


@pytest.mark.slow
def test_ctrl_c_during_batch_eval_is_one_line_130_and_the_csv_stays_readable(tmp_path, tiny_run):
    shutil.copytree(tiny_run.root / "checkpoints", tmp_path / "checkpoints")
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "batch_eval.py"),
            "--checkpoint_dir",
            "checkpoints",
            "--num_episodes",
            "400",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=interruptible,
    )
    try:
        line = proc.stdout.readline()
        if "to evaluate" not in line:  # evaluation under way, or say why not
            proc.kill()
            pytest.fail(f"first stdout line {line!r}; stderr: {proc.communicate()[1][-3000:]}")
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("interrupted")
    results = tmp_path / "evaluation_results.csv"
    if results.exists():  # a checkpoint finished before the signal: its row is whole, once
        table = pd.read_csv(results)
        assert not table.duplicated(subset=["checkpoint"]).any()


@pytest.mark.slow
def test_batch_eval_shows_its_bars_in_a_captured_stderr_and_no_progress_hides_them(
    tmp_path, tiny_run, capsys
):
    """A log or pipe gets the bars too (count and ETA), so an evaluation of minutes is not silent."""
    import batch_eval

    shutil.copytree(tiny_run.root / "checkpoints", tmp_path / "checkpoints")
    common = ["--checkpoint_dir", str(tmp_path / "checkpoints"), "--num_episodes", "3", "--skip_routing"]
    batch_eval.main([*common, "--results_path", str(tmp_path / "a.csv")])
    err = capsys.readouterr().err
    assert "evaluations:" in err and "2/2" in err and "eval checkpoint_3.pt" in err  # the inner bar: episodes
    batch_eval.main([*common, "--results_path", str(tmp_path / "b.csv"), "--no_progress"])
    assert "evaluations" not in capsys.readouterr().err


def _read_one_line_then_close(argv: list[str], cwd: Path) -> tuple[int, str]:
    """What `command | head -1` does to a command: its reader goes after the first line."""
    proc = subprocess.Popen(
        [sys.executable, *argv], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read()
    return proc.wait(timeout=120), err


def test_a_reader_that_closes_stdout_early_ends_the_output_not_the_command(tmp_path):
    script = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from mop.checks import command_edges\n"
        "with command_edges():\n"
        "    for i in range(200_000):\n"
        "        print('a line of the report', i)\n"
        "    open('written.txt', 'w').write('after the report')\n"
        "    print('the last line')\n"
    )
    rc, err = _read_one_line_then_close(["-c", script, str(ROOT)], tmp_path)
    assert rc == 0 and err == "", err
    assert (tmp_path / "written.txt").read_text() == "after the report"


def test_levels_markdown_into_head_is_quiet():
    rc, err = _read_one_line_then_close([str(ROOT / "bench/levels.py"), "--markdown"], ROOT)
    assert rc == 0 and "Traceback" not in err and "BrokenPipe" not in err, err
