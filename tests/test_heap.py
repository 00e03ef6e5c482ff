"""mop/heap.py: glibc's free pages inside the heap go back to the system (`trim_heap`), and training
trims every TRIM_EVERY updates, so a long DAgger run's resident memory follows what it uses
(docs/findings.md: 3.30 -> 0.86 GB at one trim of a running wide Unlock run)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from conftest import ROOT, tiny_config
from mop import heap

glibc_only = pytest.mark.skipif(heap._malloc_trim() is None, reason="not glibc: no malloc_trim")

# 200 MB in 50 KB chunks (under malloc's mmap threshold: they come from the heap), a small chunk
# kept above them so the heap's top cannot shrink, then every big chunk freed: the pages stay
# resident, as the learner's freed batches did. Prints RSS (MB) after the frees and after `finish`.
FRAGMENT = """
import ctypes
from mop.heap import resident_mb, trim_heap
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
chunks = [libc.malloc(50_000) for _ in range(4000)]
for c in chunks:
    libc.memset(c, 1, 50_000)
keep = libc.malloc(64)
for c in chunks:
    libc.free(c)
before = resident_mb()
{finish}
print(before, resident_mb())
"""


def _rss(finish: str) -> tuple[float, float]:
    out = subprocess.run(
        [sys.executable, "-c", FRAGMENT.replace("{finish}", finish)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
        env={"PYTHONPATH": str(ROOT), "PATH": ""},
    ).stdout.split()
    return float(out[0]), float(out[1])


@glibc_only
def test_freed_heap_pages_stay_resident_until_trimmed():
    """The control: without a trim the freed 200 MB stay resident (else the next test proves nothing)."""
    before, after = _rss("pass")
    assert after > before - 20 and before > 150


@glibc_only
def test_trim_heap_hands_the_free_pages_back():
    before, after = _rss("assert trim_heap()")
    assert after < before - 150


def test_resident_mb_is_this_process():
    assert heap.resident_mb() > 10 or sys.platform != "linux"


def _burn_cpu(seconds, then_idle=0.0):
    started = time.process_time()
    while time.process_time() - started < seconds:
        pass
    time.sleep(then_idle)  # a child stays alive, idle, until the test ends it


def test_cpu_seconds_counts_this_process_and_its_live_and_ended_children():
    """A child that spent 0.4 CPU-s shows in the reading while it lives (/proc) and after it was
    waited for (getrusage); this process's own work shows too."""
    import multiprocessing as mp

    if sys.platform != "linux":
        pytest.skip("live children are read from /proc")
    before = heap.cpu_seconds()
    _burn_cpu(0.2)
    assert heap.cpu_seconds() - before >= 0.19
    child = mp.get_context("spawn").Process(target=_burn_cpu, args=(0.4, 60.0), daemon=True)
    child.start()
    started = heap.cpu_seconds()
    deadline = time.monotonic() + 50
    while heap.cpu_seconds() - started < 0.35 and time.monotonic() < deadline:  # the child is burning
        time.sleep(0.05)
    live = heap.cpu_seconds() - started
    child.terminate()
    child.join()
    assert live >= 0.35 and heap.cpu_seconds() - started >= live - 0.01  # reaped: still counted


def test_training_trims_every_trim_every_updates(tmp_path, monkeypatch):
    """Six tiny updates with TRIM_EVERY 3 trim twice; fails if the loop stops calling trim_heap."""
    import train_mop
    from mop import imitation

    calls = []
    monkeypatch.setattr(imitation, "TRIM_EVERY", 3)
    monkeypatch.setattr(imitation, "trim_heap", lambda: calls.append(1) or True)
    train_mop.main(tiny_config(tmp_path), progress=False)
    assert len(calls) == 2
