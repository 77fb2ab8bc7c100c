"""Give freed heap memory back to the OS whenever the torch thread runs out of work.

Why: glibc only returns the free memory at the top of a heap on its own. Memory freed in the middle
stays resident, and after the first large free glibc's dynamic mmap threshold moves allocations of up
to 32 MiB (activations, a voice's resampled audio, a prompt prefix) from mmap into those heaps. Each
request and each new voice leaves holes behind, so RSS climbs in steps that are not live memory and
what really leaks hides in the holes until they run out (both seen in the memory soak: README,
"Memory soak"). `malloc_trim(0)` releases every free page of every arena; once per idle spell it
costs milliseconds, against requests that take seconds.

A no-op where the C library is not glibc (musl, macOS)."""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable


def _find_malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_malloc_trim = _find_malloc_trim()


def release_free_heap() -> bool:
    """Return free heap pages to the OS; whether any were released (False where unsupported)."""
    if _malloc_trim is None:
        return False
    return bool(_malloc_trim(0))
