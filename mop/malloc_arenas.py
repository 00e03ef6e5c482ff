"""A cap on glibc's malloc arenas for the training process and its workers.

A long DAgger run's process grew ~15 MB per update once it had run a few hundred updates (RssAnon
1.3 -> 4.1 GB over ~450 updates of the wide Unlock recipe, on its way to filling the box), with no
Python object growing. Resumed from the same checkpoint with `MALLOC_ARENA_MAX=2` in the
environment, the same deterministic updates stayed at ~1.6 GB through 700 of them: the memory was
glibc's per-thread arenas (the process runs a handful of threads: torch's and BLAS's pools, a
jemalloc background thread), each keeping freed chunks of its own that no other thread reuses.
docs/findings.md gives the runs.

`cap_malloc_arenas()` caps them for this process (`mallopt(M_ARENA_MAX, 2)`) and, through the
environment, for every worker process it starts from now on. glibc applies the cap to each arena
created after the call, so training calls it first thing, before its workers and before the
learner has run (arenas already made stay). A value the user set in `MALLOC_ARENA_MAX` is left as
it is; on a C library other than glibc (macOS, musl) nothing changes and the call says so.

    from mop.malloc_arenas import cap_malloc_arenas
    cap_malloc_arenas()          # -> "mallopt" | "environment" | "not glibc"
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

ENV_KEY = "MALLOC_ARENA_MAX"
ARENAS = 2  # the main arena and one more: the measured fix (docs/findings.md)
M_ARENA_MAX = -8  # glibc's malloc.h


def _glibc() -> ctypes.CDLL | None:
    """The process's C library when it is glibc (it has mallopt and gnu_get_libc_version)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return None
    return libc


def cap_malloc_arenas(arenas: int = ARENAS) -> str:
    """Cap glibc's malloc arenas at `arenas` here and in child processes started after this call.
    Returns what was done: 'environment' (the user's own MALLOC_ARENA_MAX stands), 'mallopt' (the
    cap set now), or 'not glibc' (nothing to cap)."""
    if os.environ.get(ENV_KEY):
        return "environment"
    libc = _glibc()
    if libc is None:
        return "not glibc"
    if libc.mallopt(ctypes.c_int(M_ARENA_MAX), ctypes.c_int(arenas)) != 1:
        return "not glibc"  # mallopt refused the option: leave the allocator as it is
    os.environ[ENV_KEY] = str(arenas)  # spawned workers read it when their C library starts
    return "mallopt"


def arena_count() -> int | None:
    """How many malloc arenas this process has now (glibc's malloc_info), None off glibc. For the
    test that the cap holds."""
    libc = _glibc()
    if libc is None or not hasattr(libc, "malloc_info"):
        return None
    import tempfile

    libc.fdopen.restype = ctypes.c_void_p
    libc.fdopen.argtypes = [ctypes.c_int, ctypes.c_char_p]
    libc.fclose.argtypes = [ctypes.c_void_p]
    libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
    with tempfile.TemporaryFile() as f:
        stream = libc.fdopen(os.dup(f.fileno()), b"w")
        libc.malloc_info(0, stream)
        libc.fclose(stream)
        f.seek(0)
        text = f.read().decode()
    return text.count("<heap nr=")
