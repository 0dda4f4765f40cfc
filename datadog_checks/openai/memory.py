"""Giving the memory a large read freed back to the system.

The check runs inside the Agent's process. The decoded rows of a page are freed once compared, but glibc's
allocator keeps most of what it freed in its heap (each row's dict table is a malloc'd block), so the Agent's
resident memory would stay near the run's peak until the next run reuses it: 220 MB instead of 110 MB between
runs for the benchmark's large organization. malloc_trim(0) returns the free pages of the heap to the system.
It exists in glibc only; elsewhere (musl, macOS, Windows) this does nothing.
"""

from __future__ import annotations

import ctypes
import sys

# A read of this many rows or more gives back the memory its pages took, and a run that read as many the memory
# of its points, at its end.
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
