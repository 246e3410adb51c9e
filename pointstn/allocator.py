"""Process-wide glibc malloc settings that keep freed memory for reuse (Linux with glibc only).

With glibc's defaults, a forward pass that allocates and frees a few large tensors hands that
memory back to the kernel at `free` (blocks above the dynamic mmap threshold are unmapped, and the
top of the heap is trimmed), so the next call faults the same pages in again. `tune_allocator` raises
both thresholds once per process, before the first tensor exists, so blocks up to `MMAP_THRESHOLD`
come from the heap and freed memory stays mapped up to `TRIM_THRESHOLD`. For batch-16 inference of the
default config at 2 threads that halved the page faults per call (29,000 -> 15,000) and cut system
time from 68 to 21 ms (docs/BENCHMARKS.md, "Allocator and channels-last inference"). The price is
resident memory: the process keeps its peak heap instead of shrinking after it (the peak itself does
not grow).

The command line (`pointstn.cli.main`) and the benchmark workers call it. It changes nothing when
the environment already chooses malloc settings (`MALLOC_*_` variables or `GLIBC_TUNABLES`, e.g. the
decoder benchmark's allocator rows), and `POINTSTN_ALLOCATOR=glibc` keeps glibc's defaults.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

from pointstn.errors import PointstnError

ENV = "POINTSTN_ALLOCATOR"
CHOICES = ("tuned", "glibc")
MMAP_THRESHOLD = 32 * 2**20  # glibc's largest allowed value on 64-bit
TRIM_THRESHOLD = 2**30  # free memory at the top of the heap is returned only beyond 1 GiB
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
GLIBC_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_",
                   "GLIBC_TUNABLES")


def allocator_choice(environ: dict[str, str] | os._Environ = os.environ) -> str:
    """'tuned' or 'glibc' from $POINTSTN_ALLOCATOR (default 'tuned'); PointstnError on anything else."""
    value = environ.get(ENV, "tuned").strip().lower() or "tuned"
    if value not in CHOICES:
        raise PointstnError(f"{ENV} must be one of {', '.join(CHOICES)}, got {environ.get(ENV)!r}")
    return value


def tune_allocator(environ: dict[str, str] | os._Environ = os.environ) -> str:
    """Apply the settings of the module docstring if nothing else chose malloc settings; returns what
    this process runs with, one of 'tuned', 'glibc (POINTSTN_ALLOCATOR)', 'glibc (set by the
    environment: NAMES)', 'not glibc'."""
    choice = allocator_choice(environ)
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return "not glibc"
    if choice == "glibc":
        return f"glibc ({ENV})"
    chosen = [name for name in GLIBC_VARIABLES if name in environ]
    if chosen:
        return f"glibc (set by the environment: {', '.join(chosen)})"
    libc = ctypes.CDLL("libc.so.6")
    if not (libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)):
        return "glibc (mallopt refused the settings)"
    return "tuned"
