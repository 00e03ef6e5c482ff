"""The cap on glibc's malloc arenas (mop/malloc_arenas.py): a training process, and the workers it
starts, keep at most two arenas however many threads allocate, so a long DAgger run's memory stays
flat (docs/findings.md). Each check runs in a fresh interpreter: the cap is process-wide."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import ROOT, TINY_PRESET
from mop.malloc_arenas import _glibc

pytestmark = pytest.mark.skipif(_glibc() is None, reason="not glibc: nothing to cap")

# After `setup`, eight threads each malloc a thousand chunks at once (each wants an arena of its
# own), then the script prints the process's arena count and the MALLOC_ARENA_MAX a worker inherits.
SCRIPT = """
import ctypes, os, threading
{setup}
from mop.malloc_arenas import arena_count
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
barrier = threading.Barrier(8)
def work():
    barrier.wait()
    chunks = [libc.malloc(200) for _ in range(1000)]
    barrier.wait()
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
print(arena_count(), os.environ.get("MALLOC_ARENA_MAX"))
"""

TRAIN = """
import train_mop
from mop.experiment import load_config
cfg = load_config(PRESET, {"checkpoint_dir": CKPT, "num_updates": 2})
train_mop.main(cfg, progress=False)
"""


def _run(setup: str, env_value: str | None = None) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    if env_value is not None:
        env["MALLOC_ARENA_MAX"] = env_value
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT.replace("{setup}", setup)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=True,
    ).stdout.split()
    return int(out[-2]), out[-1]


def test_without_the_cap_threads_make_arenas_of_their_own():
    """The control: the same threads in a process with no cap make more than two arenas (else the
    tests below could not fail)."""
    arenas, env_value = _run("")
    assert arenas > 2 and env_value == "None"


def test_training_caps_the_arenas_here_and_for_its_workers(tmp_path):
    """train_mop.main caps the arenas before it trains: threads that allocate afterwards share two,
    and a worker process started afterwards inherits MALLOC_ARENA_MAX=2. Fails if training stops
    calling cap_malloc_arenas."""
    arenas, env_value = _run(f"PRESET, CKPT = {str(TINY_PRESET)!r}, {str(tmp_path)!r}" + TRAIN)
    assert arenas <= 2
    assert env_value == "2"


def test_a_users_own_setting_stands():
    """MALLOC_ARENA_MAX set by the user is kept as it is, here and for workers."""
    arenas, env_value = _run("from mop.malloc_arenas import cap_malloc_arenas\ncap_malloc_arenas()", "3")
    assert env_value == "3" and arenas == 3
