"""How fast this host is right now: the same small piece of work, timed again and again.

    python bench/host.py [--for 60] [--every 1] [--size 192] [--products 200] [--cpu N]

Every `--every` seconds it multiplies two float32 matrices on one thread (a training step's
kind of arithmetic) a fixed number of times and prints the sample's wall and CPU time, then a
summary: the median, the fastest and the slowest sample, and the median's ratio to the
fastest. The CPU time tells the two ways a host slows down apart:
- the same work takes more CPU time: the core itself runs slower (a lower clock when the host
  is busy: an EPYC under KVM runs at its base clock or well above it, and the samples then
  gather around two values);
- the same CPU time takes more wall time: the core is shared (another process ran on it).
Run it beside `make demo` with `--every 10` (about 1 % of a core) to see at which speed the
demo ran: two runs of the same work can be compared only when their host figures agree
(docs/PERFORMANCE.md, "The host's clock"). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before NumPy loads its BLAS
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np


def sample(a: np.ndarray, products: int) -> tuple[float, float]:
    """(wall, CPU) seconds of `products` matrix products of `a` with itself."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(products):
        a @ a
    return time.perf_counter() - wall, time.process_time() - cpu


def summary(samples: list[tuple[float, float]]) -> list[str]:
    """The lines under the samples: median, fastest, slowest, and the ratios that matter."""
    walls = [w for w, _ in samples]
    cpus = [c for _, c in samples]
    median_wall, median_cpu = statistics.median(walls), statistics.median(cpus)
    shared = statistics.median(w / c for w, c in samples if c > 0)
    return [
        f"{len(samples)} samples: wall ms median {1000 * median_wall:.1f}, fastest "
        f"{1000 * min(walls):.1f}, slowest {1000 * max(walls):.1f}",
        f"CPU ms median {1000 * median_cpu:.1f}, fastest {1000 * min(cpus):.1f}, slowest "
        f"{1000 * max(cpus):.1f}",
        f"median / fastest (CPU time, the core's speed): {median_cpu / min(cpus):.2f}",
        f"wall / CPU time, median (above 1: the core was shared): {shared:.2f}",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--for", dest="seconds", type=float, default=60.0,
                        help="how long to sample (seconds)")
    parser.add_argument("--every", type=float, default=1.0, help="seconds between samples")
    parser.add_argument("--size", type=int, default=192, help="the matrices' side")
    parser.add_argument("--products", type=int, default=200, help="products per sample")
    parser.add_argument("--cpu", type=int, default=None, help="pin the probe to this core")
    args = parser.parse_args(argv)
    if args.cpu is not None:
        if not hasattr(os, "sched_setaffinity"):
            parser.error("--cpu needs os.sched_setaffinity (Linux); run without it")
        os.sched_setaffinity(0, {args.cpu})
    a = np.random.default_rng(0).standard_normal((args.size, args.size)).astype(np.float32)
    sample(a, 5)  # load the BLAS kernels before the first sample counts
    print(f"{args.products} products of {args.size}x{args.size} float32 matrices a sample, "
          f"one thread" + (f", core {args.cpu}" if args.cpu is not None else ""))
    print("time (UTC)  wall ms  CPU ms")
    samples: list[tuple[float, float]] = []
    end = time.monotonic() + args.seconds
    while True:
        wall, cpu = sample(a, args.products)
        samples.append((wall, cpu))
        print(f"{time.strftime('%H:%M:%S', time.gmtime())}  {1000 * wall:7.1f}  "
              f"{1000 * cpu:6.1f}", flush=True)
        if time.monotonic() + args.every > end:
            break
        time.sleep(args.every)
    print("\n".join(summary(samples)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
