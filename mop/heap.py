"""The training process's resources: the CPU time it and its children have spent (`cpu_seconds`,
a run's load-free cost: its checkpoints' stats.cpu_s), what its heap holds (`resident_mb`, logged
with every metrics row) and handing glibc's free pages back to the system (`trim_heap`, every
TRIM_EVERY updates).

Why: a resumed DAgger run of the wide Unlock recipe grew its resident memory by 7-37 MB per update
(1.1 -> 3.3 GB in 270 updates; an earlier resume reached 4.1 GB before it was stopped) while the
memory malloc had handed out stayed at 0.34-0.57 GB. `malloc_stats()` in the running process
(through gdb): the main arena held 3.68 GB from the system, 0.35 GB of it in use, the others
nothing; `malloc_trim(0)` brought the process from 3.30 to 0.86 GB at once, and again from 2.16 to
0.62 GB a minute later. The learner's batches, replayed episodes and the buffer's turnover leave
free chunks inside the heap, where glibc keeps their pages: free memory, not a leak. Capping
malloc's arenas (MALLOC_ARENA_MAX=2) and a fixed mmap threshold did not stop it; trimming does.
docs/findings.md gives the runs.

    from mop.heap import resident_mb, trim_heap
    trim_heap()        # True where glibc's malloc_trim ran (Linux); False elsewhere: nothing to do
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import resource

TRIM_EVERY = 10  # updates between trims: each returns the free pages of ~10 updates' batches


@functools.cache
def _malloc_trim():
    """glibc's malloc_trim, or None (another C library: macOS, musl)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    trim = getattr(libc, "malloc_trim", None)
    if trim is not None:
        trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def trim_heap() -> bool:
    """Return the heap's free pages to the system (glibc's malloc_trim(0): the top of the heap and
    every whole free page inside it). False where the C library has no malloc_trim."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


def resident_mb() -> float:
    """This process's resident memory now, in MB (Linux /proc; NaN elsewhere): logged with every
    metrics row, so a run whose memory climbs says when it did."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return float("nan")


def _live_children_cpu() -> float:
    """User + system seconds of this process's live children (Linux /proc; 0 elsewhere)."""
    ticks, total = os.sysconf("SC_CLK_TCK"), 0
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return 0.0
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/children") as f:
                pids = f.read().split()
        except OSError:
            continue
        for pid in pids:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()  # after the command's (name)
                total += int(fields[11]) + int(fields[12])  # utime, stime: the stat's 14th and 15th
            except (OSError, IndexError, ValueError):
                continue  # a child that ended in between: its time is in RUSAGE_CHILDREN once reaped
    return total / ticks


def cpu_seconds() -> float:
    """CPU seconds (user + system) spent so far by this process (all its threads) and its children:
    the ones that ended and were waited for (getrusage) and the live ones (/proc: a run's env
    workers). What a run costs on a box whatever else runs beside it, where its wall clock grows
    with the load; the difference of two readings is what happened between them."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    ended = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + ended.ru_utime + ended.ru_stime + _live_children_cpu()
