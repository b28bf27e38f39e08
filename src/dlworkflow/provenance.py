"""What a model was made with: the Python, platform and library versions that decide its
numbers. The same commit, params and data give the same bytes only with the same versions:
measured, TREC's network scored 0.9111 on the test with one install's libraries and
0.9078 with those a fresh install on another machine resolved the same day, from the same
commit (docs/BENCHMARKS.md). Model cards record `environment()`; loading a model compares."""

from __future__ import annotations

import platform
from collections.abc import Iterable, Mapping
from importlib import metadata

#: the distributions whose versions can move a weight or a score, by the name a card uses
#: (the first installed distribution of each: TensorFlow comes as several)
DECIDING: dict[str, tuple[str, ...]] = {
    "dlworkflow": ("dlworkflow",),
    "tensorflow": ("tensorflow", "tensorflow-cpu", "tensorflow-macos"),
    "keras": ("keras",),
    "numpy": ("numpy",),
    "scipy": ("scipy",),
    "scikit-learn": ("scikit-learn",),
    "pandas": ("pandas",),
    "statsmodels": ("statsmodels",),
    "librosa": ("librosa",),
    "soxr": ("soxr",),
    "pillow": ("pillow",),
    "skops": ("skops",),
}

#: what loading a model needs to read it as it was saved, by the kind of model
LOADING = {"network": ("tensorflow", "keras"), "baseline": ("scikit-learn", "skops", "numpy")}


def _version(distributions: Iterable[str]) -> str | None:
    for name in distributions:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def environment() -> dict[str, str]:
    """{"python", "platform", then each installed DECIDING library: its version}, read from
    the installed distributions' metadata (nothing is imported)."""
    found = {"python": platform.python_version(),
             "platform": f"{platform.system()}-{platform.machine()}".lower()}
    for name, distributions in DECIDING.items():
        version = _version(distributions)
        if version is not None:
            found[name] = version
    return found


def differences(recorded: Mapping[str, str], names: Iterable[str] | None = None,
                current: Mapping[str, str] | None = None) -> list[str]:
    """`"<name> <recorded> (here <current>)"` for each of `names` (default: every recorded
    one) whose version here differs from the recorded one; a library the record lacks (an
    older card) is not compared."""
    current = environment() if current is None else current
    return [f"{name} {recorded[name]} (here {current.get(name, 'not installed')})"
            for name in (recorded if names is None else names)
            if name in recorded and recorded[name] != current.get(name)]


def describe(recorded: Mapping[str, str]) -> str:
    """One line for a report: "Python 3.11.2 on linux-x86_64; tensorflow 2.21.0, ..."."""
    libraries = ", ".join(f"{name} {version}" for name, version in recorded.items()
                          if name not in ("python", "platform"))
    return (f"Python {recorded.get('python', '?')} on {recorded.get('platform', '?')}"
            + (f"; {libraries}" if libraries else ""))
