"""The small files through which DVC sees the workflow: one code digest per step and one
output manifest per step, under results/.steps/.

A DVC stage reruns when one of its deps changes, and `dvc exp show` prints one column per
dep. Listing every library module and every upstream output file as deps made ~270 columns
for the demo; instead each step's stage depends on two kinds of digest:

- `results/.steps/code-<step>.json`: sha256 of every file whose change can change the step's
  outputs (`workflow.step_code`: its rules, scripts, and the modules they import). The
  `code` stage writes them all from the source folders; a digest's bytes change only when
  its own step's code does, so editing the trainer reruns train and final, not intake.
- `results/.steps/<step>.json`: sha256 of every file the step produced (its DVC outs), written
  when the step finishes. A later step depends on it, not on each file: same rerun rule,
  one column per step instead of one per dataset and file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dlworkflow.workflow import STEPS, Step, step_code, step_datasets, step_outputs

#: where the digests live (inside results/, which DVC tracks and git ignores)
STEPS_DIR = "results/.steps"
#: folders the code stage hashes (everything step_code can name lies inside them)
CODE_FOLDERS = ("rules", "schemas", "scripts", "src/dlworkflow")


def code_digest_path(step: Step | str) -> str:
    """The code digest file of `step`."""
    return f"{STEPS_DIR}/code-{getattr(step, 'name', step)}.json"


def manifest_path(step: Step | str) -> str:
    """The output manifest file of `step`."""
    return f"{STEPS_DIR}/{getattr(step, 'name', step)}.json"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _files(root: Path, names: list[str]) -> dict[str, str]:
    """{path: sha256} of every file named, folders walked (Python caches and resume
    backups skipped: neither is a result), in sorted order."""
    found: dict[str, str] = {}
    for name in names:
        path = root / name
        if path.is_dir():
            members = sorted(p for p in path.rglob("*") if p.is_file()
                             and "__pycache__" not in p.parts and ".backup" not in p.parts)
        elif path.is_file():
            members = [path]
        else:
            raise FileNotFoundError(f"{name}: missing; run the step that makes it before "
                                    "recording it for DVC")
        for member in members:
            found[member.relative_to(root).as_posix()] = _sha256(member)
    return dict(sorted(found.items()))


def _write(path: Path, document: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")


def active_steps(params: Mapping[str, Any]) -> list[Step]:
    """The steps that have a dataset to run on (those dvc.yaml has a stage for)."""
    return [step for step in STEPS if step_datasets(step, params)]


def write_code_digests(params: Mapping[str, Any], root: str | Path = ".") -> list[str]:
    """Write every active step's code digest; return their paths."""
    root = Path(root)
    written = []
    for step in active_steps(params):
        _write(root / code_digest_path(step),
               {"step": step.name, "files": _files(root, step_code(step, root))})
        written.append(code_digest_path(step))
    return written


def write_manifest(step: Step, params: Mapping[str, Any], root: str | Path = ".") -> str:
    """Write the manifest of a finished step's outputs; return its path."""
    root = Path(root)
    _write(root / manifest_path(step),
           {"step": step.name, "files": _files(root, step_outputs(step, params, for_dvc=True))})
    return manifest_path(step)


def write_all(params: Mapping[str, Any], root: str | Path = ".") -> None:
    """Code digests and every step's manifest, after a complete run (before `dvc commit`)."""
    write_code_digests(params, root)
    for step in active_steps(params):
        write_manifest(step, params, root)
