"""Freed heap memory kept for reuse in the processes that run TensorFlow.

TensorFlow allocates and frees the buffers of every op on every step. glibc's malloc returns
the free top of its heap to the kernel as soon as it passes a small threshold, so the next
step maps those pages again and the kernel zeroes each one on its first touch. In a
forecasting fold job that cost 3.1 million page faults, a third of the job's CPU time in the
kernel, and steps of 26 ms instead of 13 ms; the final model's test scoring (six averaged
networks) took twice as long (docs/PERFORMANCE.md, `bench/heap.py`). Image, audio and text
networks were not affected, nor is any result: only where memory comes from changes.

`M_TOP_PAD` is glibc's own setting for this (the `MALLOC_TOP_PAD_` environment variable sets
it at start-up): the heap keeps that much of its freed top mapped. It is set here, from
inside the process, because the jobs start from Snakemake, DVC or a cluster's scheduler,
none of which passes an environment of ours. A `MALLOC_TOP_PAD_` the user set is left as it
is, and so is any C library other than glibc (there is nothing to set).
"""

from __future__ import annotations

import ctypes
import os
import platform

#: glibc's `mallopt` parameter number of M_TOP_PAD (malloc.h)
M_TOP_PAD = -2
#: bytes of freed heap kept mapped: a few training steps' buffers of the demo's largest
#: networks; pages never touched cost nothing (a fold job's peak grew by about 3 %)
TOP_PAD_BYTES = 256 * 1024**2
ENVIRONMENT = "MALLOC_TOP_PAD_"


def keep_freed_heap(pad: int = TOP_PAD_BYTES) -> bool:
    """Ask glibc to keep `pad` bytes of freed heap mapped; True when it was set here. Safe to
    call more than once."""
    if os.environ.get(ENVIRONMENT) is not None or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_TOP_PAD, int(pad)))
