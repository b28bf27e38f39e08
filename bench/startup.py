"""What a training job pays before it trains: the imports, measured in fresh processes.

Every training, test, latency and predict job imports TensorFlow and Keras anew (a job is a
process), so a second spent importing is paid about 30 times in the demo and about a
hundred times in the test suite. This script runs a training job's imports
(`configure_tensorflow`, the metrics, pandas) in `--runs` fresh processes under `python -X
importtime` and prints the median wall and CPU seconds, then the modules whose own import
time (children excluded) is largest, median over the runs. Nothing is asserted.

    python bench/startup.py [--runs 5] [--top 12] [--code "import ..."]
    python bench/startup.py --against DIR    # DIR first on PYTHONPATH, the two taking turns

`--against` compares the installed packages with others put first on `PYTHONPATH` (for
example `pip install --target DIR ml_dtypes==0.7.0`): the two kinds of run alternate, so a
drift of the machine's speed falls on both, and the ratio is measured in one run.
docs/PERFORMANCE.md ("Imports", twenty-third session) shows the output.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from collections import defaultdict

#: what a training job imports before its first step (dlworkflow.train's own lazy imports)
JOB_IMPORTS = ("from dlworkflow.train import configure_tensorflow; configure_tensorflow(1, 0); "
               "import dlworkflow.models.networks, dlworkflow.metrics, sklearn.metrics, pandas")
#: a line of -X importtime: own microseconds | with children | indented module name
LINE = re.compile(r"^import time:\s+(\d+) \|\s+\d+ \| *(\S+)$")


def one_run(pythonpath: str | None, code: str = JOB_IMPORTS) -> dict:
    """Wall and CPU seconds of one fresh process doing the imports, and each module's own
    import microseconds (from -X importtime)."""
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (pythonpath, env.get("PYTHONPATH")) if p)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", code], env=env,
                          capture_output=True, text=True, check=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    own: dict[str, int] = {}
    for line in done.stderr.splitlines():
        match = LINE.match(line)
        if match:
            own[match[2]] = own.get(match[2], 0) + int(match[1])
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": wall, "cpu": cpu, "own": own}


def top_modules(runs: list[dict], top: int) -> list[tuple[str, float]]:
    """The `top` modules by median own import seconds over the runs (0 where a run did not
    import one)."""
    seconds: dict[str, list[float]] = defaultdict(list)
    for run in runs:
        for name, micro in run["own"].items():
            seconds[name].append(micro / 1e6)
    medians = {name: statistics.median(values + [0.0] * (len(runs) - len(values)))
               for name, values in seconds.items()}
    return sorted(medians.items(), key=lambda item: -item[1])[:top]


def summary(label: str, runs: list[dict], top: int) -> float:
    wall = statistics.median(r["wall"] for r in runs)
    cpu = statistics.median(r["cpu"] for r in runs)
    own = statistics.median(sum(r["own"].values()) / 1e6 for r in runs)
    each = ", ".join(f"{r['wall']:.2f}" for r in runs)
    print(f"{label}: {len(runs)} fresh processes, median {wall:.2f} s wall, {cpu:.2f} s CPU, "
          f"{own:.2f} s in imports (each: {each})")
    for name, seconds in top_modules(runs, top):
        print(f"  {seconds:6.3f} s  {name}")
    return wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--against", help="a folder put first on PYTHONPATH, taking turns")
    parser.add_argument("--code", default=JOB_IMPORTS,
                        help="the Python to time (default: a training job's imports)")
    args = parser.parse_args(argv)
    installed: list[dict] = []
    other: list[dict] = []
    one_run(None, args.code)  # the page cache warm for both kinds, not counted
    for turn in range(args.runs):
        sides = [None, args.against] if args.against else [None]
        for path in sides if turn % 2 == 0 else sides[::-1]:
            (other if path else installed).append(one_run(path, args.code))
    wall = summary("installed", installed, args.top)
    if args.against:
        other_wall = summary(f"with {args.against} first", other, args.top)
        print(f"installed / other, median wall: {wall / other_wall:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
