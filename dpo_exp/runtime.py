"""Process-wide settings of the C runtime under torch on CPU, applied once when a run starts."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

# mallopt parameters (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2**20  # the largest glibc accepts on 64-bit
TRIM_THRESHOLD = 2**30


def keep_freed_memory() -> bool:
    """Have glibc's malloc reuse freed memory instead of handing it back and faulting it in again.

    By default glibc maps large blocks afresh and returns freed ones, so a training step's
    activations and gradients, allocated and freed every step, are zero-filled by the kernel each
    time: at 0.5B parameters on 2 CPU cores half the step time was system time. Blocks up to
    32 MiB then come from the heap, and up to 1 GiB of freed heap stays with the process (docs/speed.md,
    "Real size"). Nothing is done off glibc (musl, macOS) or when the environment sets
    `GLIBC_TUNABLES`, whose malloc settings win. Returns whether the settings were applied.
    """
    if not sys.platform.startswith("linux") or "GLIBC_TUNABLES" in os.environ:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
