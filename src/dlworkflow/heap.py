"""Freed heap memory kept for reuse in the processes that run TensorFlow.

TensorFlow allocates and frees the buffers of every op on every step. glibc's malloc returns
the free top of its heap to the kernel as soon as it passes a small threshold, so the next
step maps those pages again and the kernel zeroes each one on its first touch. In a
forecasting fold job that cost 3.3 million page faults, a third of the job's CPU time in the
kernel, and steps of 26 ms instead of 13 ms; the final model's test scoring (six averaged
networks) took twice as long (docs/PERFORMANCE.md, `bench/heap.py`). No result changes: only
where the memory comes from.

glibc has a setting for each part (`mallopt`; the `MALLOC_*_` environment variables set them
at start-up), and both are set here:
- `M_TOP_PAD`: the heap keeps this much of its freed top mapped;
- `M_MMAP_THRESHOLD`: blocks up to this size come from the heap, larger ones are mapped on
  their own. glibc raises it by itself as large blocks are freed, up to 32 MB, but setting
  either value stops that, and a threshold stuck at its starting 128 kB maps (and faults in)
  every larger buffer anew: measured, a digits fold job took 6.9 million page faults and
  steps of 51 ms instead of 24 ms. So it is set to that same 32 MB at once.

They are set from inside the process because the jobs start from Snakemake, DVC or a
cluster's scheduler, none of which passes an environment of ours. Settings the user chose
(`MALLOC_TOP_PAD_`, `MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`, or malloc tunables
in `GLIBC_TUNABLES`) are left as they are, and so is any C library other than glibc.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform

#: glibc's `mallopt` parameter numbers (malloc.h)
M_TOP_PAD, M_MMAP_THRESHOLD = -2, -3
#: bytes of freed heap kept mapped: a few training steps' buffers of the demo's largest
#: networks; pages never touched cost nothing (fold jobs' peaks moved by -1 to +8 %)
TOP_PAD_BYTES = 256 * 1024**2
#: glibc's own upper bound for its sliding threshold on 64-bit systems
MMAP_THRESHOLD_BYTES = 32 * 1024**2
#: the user's own malloc settings, which are left alone
ENVIRONMENT = ("MALLOC_TOP_PAD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


@functools.cache
def keep_freed_heap(pad: int = TOP_PAD_BYTES) -> bool:
    """Ask glibc to keep `pad` bytes of freed heap mapped and to take blocks up to 32 MB from
    the heap; True when it was set here. Each caller (training, loading a network, features)
    may call it: the process asks glibc once."""
    chosen = any(name in os.environ for name in ENVIRONMENT)
    if (chosen or "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", "")
            or platform.libc_ver()[0] != "glibc"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    threshold = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    return bool(mallopt(M_TOP_PAD, int(pad)) and threshold)
