"""The bench scripts that run outside a workflow: they must measure what they say."""

import re
import subprocess
import sys
from pathlib import Path

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
