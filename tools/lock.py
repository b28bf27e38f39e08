"""requirements.lock: the exact versions CI installs and the benchmarks were measured with.

pyproject.toml gives ranges; pip resolves them to whatever is newest on the day, and other
versions of TensorFlow, NumPy or scikit-learn can give other weights and scores from the
same commit, params and data (docs/BENCHMARKS.md). The lock pins every installed
distribution for one platform, named in its first line; `make install` applies it as pip
constraints where the interpreter matches and resolves the ranges elsewhere.

    python tools/lock.py pip-args    # what `make install` adds to pip: -c requirements.lock, or nothing
    python tools/lock.py write       # the lock from this venv (`make lock`, after changing pyproject)
"""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

LOCK = Path(__file__).resolve().parents[1] / "requirements.lock"
HEADER = "# platform: "


def this_platform() -> str:
    """`cpython-3.11-linux-x86_64`: what a lock made here is valid for."""
    return (f"{sys.implementation.name}-{sys.version_info[0]}.{sys.version_info[1]}-"
            f"{platform.system().lower()}-{platform.machine().lower()}")


def lock_platform(path: Path = LOCK) -> str | None:
    """The platform a lock file was made for (its first line), None without a lock."""
    if not path.is_file():
        return None
    first = path.read_text().splitlines()[0]
    return first[len(HEADER):].strip() if first.startswith(HEADER) else None


def pip_args(path: Path = LOCK) -> list[str]:
    """`["-c", lock]` when the lock was made for this interpreter and platform, else []
    (and a line on stderr saying the ranges are resolved instead)."""
    made_for = lock_platform(path)
    if made_for is None:
        return []
    if made_for != this_platform():
        print(f"{path.name} is for {made_for}, this is {this_platform()}: installing the "
              "newest versions pyproject.toml allows", file=sys.stderr)
        return []
    return ["-c", str(path)]


def write(path: Path = LOCK) -> int:
    """The lock from the running interpreter's installed distributions (not dlworkflow)."""
    frozen = subprocess.run([sys.executable, "-m", "pip", "freeze", "--exclude-editable"],
                            check=True, capture_output=True, text=True).stdout
    pins = sorted((line for line in frozen.splitlines() if "==" in line), key=str.lower)
    path.write_text(f"{HEADER}{this_platform()}\n"
                    "# pip constraints for `make install` (tools/lock.py); regenerate with "
                    "`make lock`\n" + "\n".join(pins) + "\n")
    print(f"{path}: {len(pins)} distributions pinned for {this_platform()}")
    return 0


def main(argv: list[str]) -> int:
    if argv == ["pip-args"]:
        print(" ".join(pip_args()))
        return 0
    if argv == ["write"]:
        return write()
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
