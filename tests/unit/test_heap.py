"""Processes that run TensorFlow keep freed heap for reuse instead of faulting it in again."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from dlworkflow.heap import ENVIRONMENT

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")

# What training steps do to the heap, in plain C calls, from the start of a process: take
# about 20 MB in buffers of one size, write them, free them all, again. The pages the kernel
# had to map afresh are the process's minor page faults.
ROUNDS = """
import ctypes, json, resource, sys
from dlworkflow.heap import keep_freed_heap

kept = keep_freed_heap() if sys.argv[1] == "keep" else None
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
block = int(sys.argv[2])
count, rounds = 20 * 1024**2 // block, 10
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(rounds):
    buffers = [libc.malloc(block) for _ in range(count)]
    for buffer in buffers:
        ctypes.memset(buffer, 1, block)
    for buffer in reversed(buffers):
        libc.free(buffer)
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"kept": kept, "faults": faults, "round_pages": block * count // 4096}))
"""


def _rounds(mode: str, block: int, **env: str) -> dict:
    environment = {k: v for k, v in os.environ.items() if k not in ENVIRONMENT} | env
    done = subprocess.run([sys.executable, "-c", ROUNDS, mode, str(block)], capture_output=True,
                          text=True, env=environment, check=True)
    return json.loads(done.stdout)


# 96 kB: below glibc's starting mmap threshold, from the heap, whose freed top glibc trims;
# 1 MB: above it, mapped on its own until glibc raises the threshold (or for good, were the
# threshold frozen at its start, as setting the pad alone would freeze it)
@pytest.mark.parametrize("block", [96 * 1024, 1024**2])
def test_freed_heap_is_kept_mapped_so_the_next_round_does_not_fault_it_in_again(block):
    default = _rounds("default", block)
    kept = _rounds("keep", block)
    assert kept["kept"] is True
    pages = default["round_pages"]
    # glibc's default returns each round's 20 MB to the kernel: every round faults it in
    assert default["faults"] >= 0.8 * 10 * pages
    # kept: the first round maps it, the other nine reuse it
    assert kept["faults"] <= 2 * pages


def test_malloc_settings_the_user_chose_stand():
    chosen = _rounds("keep", 96 * 1024, MALLOC_TOP_PAD_=str(128 * 1024))
    assert chosen["kept"] is False
    assert chosen["faults"] >= 0.8 * 10 * chosen["round_pages"]  # glibc's, as asked
    assert _rounds("keep", 96 * 1024, GLIBC_TUNABLES="glibc.malloc.top_pad=131072")["kept"] is False
