"""Give freed heap memory back to the OS whenever the torch thread runs out of work.

Why: glibc only returns the free memory at the top of a heap on its own. Memory freed in the middle
stays resident, and after the first large free glibc's dynamic mmap threshold moves allocations of up
to 32 MiB (activations, a voice's resampled audio, a prompt prefix) from mmap into those heaps. Each
request and each new voice leaves holes behind, so RSS climbs in steps that are not live memory and
what really leaks hides in the holes until they run out (both seen in the memory soak: README,
"Memory soak"). `malloc_trim(0)` releases every free page of every arena; once per idle spell it
costs milliseconds, against requests that take seconds.

`serve_large_buffers_from_heap()` is the other half, for while requests run: a batched flow or HiFT
pass allocates and frees tensors of 10-60 MiB at every op. Above glibc's mmap threshold (at most 32
MiB even once it has moved, and reset by each trim) each of them is a fresh mapping that the kernel
zero-fills page by page on first touch, then unmaps: measured on 2 cores, on a thread as the torch
thread runs, a batched HiFT pass over 7 rows of 206 frames took 6.4 s (in a burst of 8 requests:
7.3-7.9 s) with glibc's defaults and 4.1-4.8 s (4.8-5.3 s) with buffers up to 256 MiB served from
the heap, where freed memory is reused. The idle trim above still gives it all back.

A no-op where the C library is not glibc (musl, macOS)."""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable

# mallopt's parameter numbers (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
LARGE_BUFFER_BYTES = 256 * 1024 * 1024  # the largest allocation served from the heap
# Free memory at a heap's top that glibc keeps rather than returning at once; the idle trim returns it.
KEPT_FREE_BYTES = 1024 * 1024 * 1024


def _find_libc_function(name: str, argtypes: list) -> Callable[..., int] | None:
    library = ctypes.util.find_library("c")
    if library is None:
        return None
    try:
        function = getattr(ctypes.CDLL(library), name)
    except (OSError, AttributeError):
        return None
    function.argtypes = argtypes
    function.restype = ctypes.c_int
    return function


_malloc_trim = _find_libc_function("malloc_trim", [ctypes.c_size_t])
_mallopt = _find_libc_function("mallopt", [ctypes.c_int, ctypes.c_int])


def serve_large_buffers_from_heap() -> bool:
    """Allocations up to LARGE_BUFFER_BYTES come from the heap and freed ones stay for reuse until the
    next idle trim; whether glibc took both settings (False where unsupported). Call before loading."""
    if _mallopt is None:
        return False
    return bool(_mallopt(M_MMAP_THRESHOLD, LARGE_BUFFER_BYTES)) and bool(_mallopt(M_TRIM_THRESHOLD, KEPT_FREE_BYTES))


def release_free_heap() -> bool:
    """Return free heap pages to the OS; whether any were released (False where unsupported)."""
    if _malloc_trim is None:
        return False
    return bool(_malloc_trim(0))
