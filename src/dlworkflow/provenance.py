"""What a model was made with: the Python, platform and library versions that decide its
numbers. The same commit, params and data give the same bytes only with the same versions:
measured, TREC's network scored 0.9111 on the test with one install's libraries and
0.9078 with those a fresh install on another machine resolved the same day, from the same
commit (docs/BENCHMARKS.md). The CPU decides them too: TensorFlow picks its kernels by the
instruction set and turns its oneDNN kernels on by default where AVX-512 VNNI, BF16 or AMX
are there; measured, the demo's digits, FSDD and co2 networks differ in their last digits
between an AVX2 and an AVX-512 host with the same libraries, and on one host with oneDNN on
and off (docs/BENCHMARKS.md). Model cards record `environment()`; loading a model compares
the libraries that read it (a model loaded on another CPU predicts the same up to rounding,
so the CPU is recorded, not compared)."""

from __future__ import annotations

import platform
import sys
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

#: the widest vector extension first: the first of these the CPU has names its kind
VECTOR_LEVELS = ("avx512f", "avx2", "avx", "sse4_2")
#: the extensions beside it that change TensorFlow's kernels (oneDNN's default among them)
MATRIX_EXTENSIONS = ("avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_bf16")
#: what describe() puts beside the platform rather than among the libraries
HOST_KEYS = ("python", "platform", "cpu", "onednn")

#: what loading a model needs to read it as it was saved, by the kind of model
LOADING = {"network": ("tensorflow", "keras"), "baseline": ("scikit-learn", "skops", "numpy")}


def _version(distributions: Iterable[str]) -> str | None:
    for name in distributions:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def cpu_kind(cpuinfo: str | None = None) -> str | None:
    """The x86 CPU's instruction set as far as it picks numeric kernels, from /proc/cpuinfo's
    flags (or `cpuinfo`'s text): "avx512f avx512_vnni avx512_bf16", "avx2", ...; None where
    there are no such flags to read (macOS, Arm: the platform names the kind)."""
    if cpuinfo is None:  # read up to the first "flags" line: the file has one per core
        try:
            with open("/proc/cpuinfo", errors="replace") as handle:
                line = next((line for line in handle if line.startswith("flags")), "")
        except OSError:
            return None
    else:
        line = next((line for line in cpuinfo.split("\n") if line.startswith("flags")), "")
    flags = set(line.partition(":")[2].split())
    level = next((name for name in VECTOR_LEVELS if name in flags), None)
    if level is None:
        return None
    return " ".join([level, *(name for name in MATRIX_EXTENSIONS if name in flags)])


def onednn() -> str | None:
    """"on" or "off": whether TensorFlow, when this process has imported it, runs its oneDNN
    kernels (`TF_ENABLE_ONEDNN_OPTS`, else TensorFlow's default for the CPU); None when it
    has not been imported (importing it only to ask costs seconds)."""
    if "tensorflow" not in sys.modules:
        return None
    try:  # TensorFlow's own probe (private: a release without it records nothing)
        from tensorflow.python.util import _pywrap_util_port

        enabled = _pywrap_util_port.IsMklEnabled()
    except (ImportError, AttributeError):
        return None
    return "on" if enabled else "off"


def environment() -> dict[str, str]:
    """{"python", "platform", "cpu" (cpu_kind), "onednn" (when TensorFlow is imported), then
    each installed DECIDING library: its version}, read from the installed distributions'
    metadata and the CPU's flags (nothing is imported)."""
    found = {"python": platform.python_version(),
             "platform": f"{platform.system()}-{platform.machine()}".lower()}
    for name, value in (("cpu", cpu_kind()), ("onednn", onednn())):
        if value is not None:
            found[name] = value
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
    """One line for a report: "Python 3.11.2 on linux-x86_64 (CPU avx2, oneDNN off);
    tensorflow 2.21.0, ..." (an older card without the CPU: no parenthesis)."""
    libraries = ", ".join(f"{name} {version}" for name, version in recorded.items()
                          if name not in HOST_KEYS)
    host = [f"CPU {recorded['cpu']}"] if recorded.get("cpu") else []
    host += [f"oneDNN {recorded['onednn']}"] if recorded.get("onednn") else []
    return (f"Python {recorded.get('python', '?')} on {recorded.get('platform', '?')}"
            + (f" ({', '.join(host)})" if host else "") + (f"; {libraries}" if libraries else ""))
