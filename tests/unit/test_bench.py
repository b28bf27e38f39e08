"""The bench scripts that run outside a workflow: they must measure what they say."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_startup_bench_finds_a_slow_import_and_the_faster_side(tmp_path):
    """`bench/startup.py --against DIR` times the same code with DIR first on PYTHONPATH:
    a module that spends 0.4 s of CPU at import there is named among the slowest of those
    runs (and not of the others), and the ratio says the installed side is faster. Without
    `--against`, `--runs` processes of the installed side."""
    fast, slow = tmp_path / "fast", tmp_path / "slow"
    fast.mkdir()
    slow.mkdir()
    (fast / "probe_module.py").write_text("VALUE = 1\n")
    (slow / "probe_module.py").write_text(
        "import time\nend = time.process_time() + 0.4\n"
        "while time.process_time() < end:\n    pass\nVALUE = 2\n")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(fast)}
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "startup.py"), "--runs", "2", "--top", "3",
         "--code", "import probe_module, json", "--against", str(slow)],
        env=env, capture_output=True, text=True, check=True)
    installed, other = done.stdout.split(f"with {slow} first:")

    def slowest(section: str) -> dict[str, float]:
        """{module: its own median import seconds} from a section's ranking lines."""
        return {m[2]: float(m[1]) for m in re.finditer(r"^ +([\d.]+) s  (\S+)$", section, re.M)}

    assert installed.startswith("installed: 2 fresh processes")
    assert slowest(installed).get("probe_module", 0.0) < 0.1
    assert slowest(other)["probe_module"] >= 0.35
    assert max(slowest(other), key=slowest(other).get) == "probe_module"
    ratio = float(done.stdout.strip().splitlines()[-1].split(":")[-1])
    assert ratio < 0.9
    alone = subprocess.run(
        [sys.executable, str(REPO / "bench" / "startup.py"), "--runs", "3", "--code",
         "import probe_module"], env=env, capture_output=True, text=True, check=True)
    assert alone.stdout.startswith("installed: 3 fresh processes")
    assert "first:" not in alone.stdout


def test_host_bench_tells_a_shared_core_from_a_slower_one():
    """`bench/host.py` times the same matrix products again and again, wall and CPU time
    apart. With a busy loop on the probe's own core each sample takes about twice its CPU
    time in wall time, and the summary says the core was shared."""
    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("no CPU affinity on this platform (the probe pins itself to a core)")
    core = min(os.sched_getaffinity(0))
    command = [sys.executable, str(REPO / "bench" / "host.py"), "--for", "3", "--every", "0.3",
               "--cpu", str(core)]
    hog = subprocess.Popen([sys.executable, "-c",
                            f"import os; os.sched_setaffinity(0, {{{core}}})\nwhile True: pass"])
    try:
        busy = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    finally:
        hog.kill()
        hog.wait()
    shared = float(re.search(r"the core was shared\): ([\d.]+)", busy)[1])
    count = int(re.search(r"^(\d+) samples:", busy, re.M)[1])
    lines = re.findall(r"^\d\d:\d\d:\d\d +([\d.]+) +([\d.]+)$", busy, re.M)
    assert count == len(lines) >= 5
    assert shared > 1.5  # two processes on one core: each runs about half the time
    assert sum(float(wall) > 1.2 * float(cpu) for wall, cpu in lines) >= 0.8 * len(lines)


def test_teardown_bench_trains_the_same_weights_both_ways():
    """`bench/teardown.py` fits the same network from the same weights on an autotuned
    stream and on an `untuned` one, taking turns: autotuning only schedules the pipeline,
    so both ways train the same weights to the bit, and each way gets its row of figures."""
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "teardown.py"), "--seconds", "1", "--rounds",
         "1", "--rows", "256", "--features", "64"],
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, capture_output=True, text=True,
        check=True)
    rows = re.findall(r"^\| 1 \| (autotuned|untuned) \| [\d.]+ \| [\d.]+ \| [\d.]+ \| (\w+) \|$",
                      done.stdout, re.M)
    assert sorted(way for way, _ in rows) == ["autotuned", "untuned"]
    assert [same for _, same in rows] == ["yes", "yes"]
    assert "untuned: median ms a step" in done.stdout
