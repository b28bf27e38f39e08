"""A throw-away project folder holding the workflow and a params.yaml of tiny real data."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import PER_CLASS, REPO, SHARED_DATA

WORKFLOW_FILES = ("Snakefile", "rules", "scripts", "schemas", "profiles", "src", "report")
BIN = Path(sys.executable).parent


def tools_env() -> dict[str, str]:
    """The environment with the test interpreter's tools (snakemake, dvc) first on PATH."""
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}


def run(command: list[str], cwd: Path, timeout: int = 600,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run a command with the test interpreter's tools first on PATH (and `env` on top);
    capture its output."""
    return subprocess.run(command, cwd=cwd, env={**tools_env(), **(env or {})},
                          capture_output=True, text=True, timeout=timeout, check=False)


#: tests train tiny networks for two epochs; the shipped defaults stay real
QUICK_TRAIN = {"min_steps": 0, "patience_steps": 0,
               "epochs": 2, "patience": 1, "filters": 4, "units": 8, "layers": 2,
               "batch_size": 16, "text": {"embedding_dim": 8, "max_tokens": 2000}}


#: two folds (the fewest a mean ± std needs): every fold-wise behaviour shows, with fewer jobs
QUICK_FOLDS = 2


def shipped_params(per_class: int = PER_CLASS, quick: bool = True) -> dict:
    """The shipped params.yaml, capped per class and pointed at this machine's shared data;
    `quick` shrinks the networks and their epochs."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["demo"].update(max_per_class=per_class, shared_data=str(SHARED_DATA))
    if quick:
        params["split"]["folds"] = QUICK_FOLDS
        params["train"].update({k: v for k, v in QUICK_TRAIN.items() if k != "text"})
        params["train"].setdefault("text", {}).update(QUICK_TRAIN["text"])
        params["final"].update(bootstrap=200, latency_items=10, explanations=1)
    return params


def make_project(parent: Path) -> Path:
    """A copy of the workflow (no data, no results) with the shipped params, capped per class."""
    root = parent / "project"
    root.mkdir()
    for name in WORKFLOW_FILES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, root / name)
    (root / "params.yaml").write_text(yaml.safe_dump(shipped_params(), sort_keys=False))
    return root


@pytest.fixture
def project(tmp_path) -> Path:
    """A fresh project per test."""
    return make_project(tmp_path)


def write_params(project: Path, params: dict) -> None:
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


README = (REPO / "README.md").read_text(encoding="utf-8")


def recipe(name: str) -> list[str]:
    """The commands of the README block marked `<!-- recipe: name ... -->`: the indented
    lines that follow it, up to the first line that is not indented."""
    marker = re.search(rf"<!-- recipe: {re.escape(name)}\b.*?-->\n", README)
    assert marker, f"README has no recipe {name!r}"
    commands = []
    for line in README[marker.end():].splitlines():
        if not line.strip():
            if commands:
                break
            continue
        if not line.startswith("    "):
            break
        commands.append(line.strip())
    assert commands, f"recipe {name!r} is empty"
    return commands


def add_venv(project: Path) -> None:
    """A stand-in for `make install`'s .venv: the test interpreter's tools and an activate
    script, its stamp newer than pyproject.toml (so `make` finds it installed), ignored by
    git as the repository's .gitignore says."""
    venv = project / ".venv" / "bin"
    venv.mkdir(parents=True)
    for tool in ("python", "dlworkflow", "snakemake", "dvc", "pytest"):
        (venv / tool).symlink_to(BIN / tool)
    (venv / "activate").write_text(f'export PATH="{venv}:$PATH"\n')
    time.sleep(0.01)
    (project / ".venv" / ".installed").touch()
    ignore = project / ".gitignore"
    lines = ignore.read_text().splitlines() if ignore.is_file() else []
    if ".venv/" not in lines:
        ignore.write_text("\n".join([*lines, ".venv/"]) + "\n")


#: what a fresh clone has beside the workflow files: DVC's config, ignore files, the generated
#: dvc.yaml, the Makefile (`make quick`) and the package metadata and lock it installs from
CLONE_FILES = (".dvc/config", ".dvc/.gitignore", ".dvc/plots.html", ".dvcignore", ".gitignore",
               "dvc.yaml", "Makefile", "pyproject.toml", "requirements.lock")

#: who commits in the tests' git repositories
GIT = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
       "GIT_COMMITTER_EMAIL": "t@t"}


def git_commit(project: Path, message: str) -> None:
    """Commit everything in `project` (as GIT)."""
    for command in (["git", "add", "-A"], ["git", "commit", "-qm", message]):
        done = run(command, project, env=GIT)
        assert done.returncode == 0, done.stderr


def run_recipe(name: str, project: Path, skip: int = 0,
               timeout: int = 1500) -> subprocess.CompletedProcess:
    """The README's recipe `name` (after its first `skip` commands) as one bash script that
    stops at the first failure, with the tools a newcomer has: those `source` puts on PATH."""
    script = "set -ex\n" + "\n".join(recipe(name)[skip:]) + "\n"
    return run(["bash", "-c", script], project, timeout=timeout,
               env={**GIT, "PATH": os.environ["PATH"]})


def fresh_clone(parent: Path) -> Path:
    """A project as `git clone` gives it (one commit of the workflow with the quick shipped
    params), with a stand-in for `make install`'s .venv."""
    project = make_project(parent)
    for name in CLONE_FILES:
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, project / name)
    add_venv(project)
    assert run(["git", "init", "-q"], project).returncode == 0
    git_commit(project, "clone")
    return project
