"""requirements.lock: the versions `make install` pins on the platform CI runs on."""

from __future__ import annotations

from importlib import metadata

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import REPO
from tools.lock import lock_platform, pip_args, this_platform

tomllib = pytest.importorskip("tomllib")


def _pins() -> dict[str, str]:
    lines = (REPO / "requirements.lock").read_text().splitlines()
    pairs = [line.split("==") for line in lines if line and not line.startswith("#")]
    return {canonicalize_name(name): version for name, version in pairs}


def _direct_requirements(made_for: str) -> list[Requirement]:
    """pyproject's dependencies and extras that apply on the lock's platform."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    _, version, system, machine = made_for.split("-", 3)
    where = {"sys_platform": system, "platform_system": system.capitalize(),
             "python_version": version, "platform_machine": machine}
    found = [Requirement(line) for line in project["dependencies"]]
    found += [Requirement(line) for extra in project["optional-dependencies"].values()
              for line in extra]
    return [r for r in found if r.marker is None or r.marker.evaluate(where)]


def test_the_lock_pins_every_dependency_within_pyprojects_ranges():
    made_for = lock_platform()
    assert made_for and made_for.count("-") == 3, made_for
    pins = _pins()
    assert "dlworkflow" not in pins  # the project itself is installed editable, not pinned
    required = _direct_requirements(made_for)
    assert {canonicalize_name(r.name) for r in required} >= {"tensorflow-cpu", "keras",
                                                             "scikit-learn", "snakemake"}
    for requirement in required:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"requirements.lock lacks {name}: run `make lock`"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"requirements.lock pins {name} {pins[name]}, outside pyproject's "
            f"{requirement.specifier}: run `make lock`")


def test_make_install_takes_the_lock_only_on_its_own_platform(tmp_path, capsys):
    lock = tmp_path / "requirements.lock"
    lock.write_text(f"# platform: {this_platform()}\nnumpy==2.4.6\n")
    assert pip_args(lock) == ["-c", str(lock)]
    lock.write_text("# platform: cpython-3.99-plan9-mips\nnumpy==2.4.6\n")
    assert pip_args(lock) == []
    assert "for cpython-3.99-plan9-mips" in capsys.readouterr().err
    assert pip_args(tmp_path / "none.lock") == []


def test_this_venv_has_the_locked_versions_where_the_lock_applies():
    """`make install` applied the lock: every direct dependency at its pinned version."""
    if lock_platform() != this_platform():
        pytest.skip(f"the lock is for {lock_platform()}, this is {this_platform()}")
    pins = _pins()
    installed = {canonicalize_name(r.name): metadata.version(r.name)
                 for r in _direct_requirements(this_platform())}
    assert {name: pins[name] for name in installed} == installed, (
        "this venv was not installed from requirements.lock: `make install`")
