"""Giving the memory a large read freed back to the system.

The check runs inside the Agent's process. The decoded rows of a page are freed once compared, but glibc's
allocator keeps most of what it freed in its heap (each row's dict table is a malloc'd block), so the Agent's
resident memory would stay near the run's peak until the next run reuses it: 220 MB instead of 110 MB between
runs for the benchmark's large organization. malloc_trim(0) returns the free pages of the heap to the system.
It exists in glibc only; elsewhere (musl, macOS, Windows) this does nothing.

Python's own allocator keeps small objects in arenas of 1 MiB and gives an arena back only once every object in it
is freed. A large read fills a hundred arenas with decoded rows; the few objects made meanwhile that outlive the run
(the ledgers' series keys, the costs' kept days, the standard library's cache of parsed URLs) end up scattered over
all of them, and hold them all: 105 arenas for 36 MB of live objects after the benchmark's large organization's
first run. pack() has them held as blocks between runs, made anew at the next run, so that they fill few arenas.

And the time a large read costs: the cyclic garbage collector is paused while a source reads (see
cyclic_collector_paused).
"""

from __future__ import annotations

import ctypes
import gc
import sys
import urllib.parse
from contextlib import contextmanager
from typing import Iterable, Iterator

# A run that read this many rows or more gives back, at its end, the memory its pages, points and saves took.
RELEASE_AFTER_ROWS = 10_000

_trim = None


def release_freed_memory() -> bool:
    """Return freed heap memory to the system where the C library can; whether it could."""
    global _trim
    if _trim is None:
        _trim = False
        if sys.platform.startswith('linux'):
            try:
                trim = ctypes.CDLL(None).malloc_trim  # the process's own C library
            except (OSError, AttributeError):
                pass
            else:
                trim.argtypes = [ctypes.c_size_t]
                trim.restype = ctypes.c_int
                _trim = trim
    if not _trim:
        return False
    _trim(0)
    return True


def pack(sources: Iterable) -> list:
    """Have the sources hold what they keep between runs in small objects as blocks until their next run (Source.pack),
    then free what the run left in reference cycles; the sources that could not pack, forgotten (they read their saved
    state again at the next run, which holds what they held: the state is saved before a run's change is applied in
    memory).

    Unpacked at the start of the next run, before anything is read, those objects are made where the heap has room
    then, in few arenas; and between runs the Agent holds a few MB of blocks instead of them."""
    failed = []
    for source in sources:
        try:
            source.pack()
        except Exception:
            source.forget()
            failed.append(source)
    # The standard library keeps the last 128 URLs it parsed (urlsplit), with their parts: the run's own requests.
    clear_cache = getattr(urllib.parse, 'clear_cache', None)
    if clear_cache is not None:
        clear_cache()
    # What the run left in reference cycles (the collector is paused while a source reads) still holds its arenas. The
    # young generations only: the run's objects are there, and a full collection walks every object of the Agent's
    # interpreter every run (17 to 25 ms in the benchmark's process, 50,000 tracked objects, where it found no garbage).
    gc.collect(1)
    return failed


@contextmanager
def cyclic_collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while a source reads, compares and submits, then as it was.

    A decoded page is hundreds of thousands of dicts, each a tracked object: while they pile up, the collector
    runs full collections that walk all of them again and again (8 a run, 0.45 s of the benchmark's 5.7 s at
    20,000 series), and finds nothing, since reading a page makes no reference cycles; the rows are freed by
    their reference counts. Paused only for one source at a time and restored even when the read fails, so the
    Agent's other checks (same interpreter) lose at most that long of cycle collection, and a host that turned
    the collector off keeps it off."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
