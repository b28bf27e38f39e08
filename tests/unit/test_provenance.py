"""Model cards record the versions that decide a model's numbers."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy
import pandas
import pytest
import scipy
import sklearn

from dlworkflow.provenance import cpu_kind, describe, differences, environment


def test_the_environment_names_the_versions_the_libraries_report():
    found = environment()
    assert found["python"] == platform.python_version()
    assert found["platform"] == f"{platform.system()}-{platform.machine()}".lower()
    for name, module in (("numpy", numpy), ("scipy", scipy), ("scikit-learn", sklearn),
                         ("pandas", pandas)):
        assert found[name] == module.__version__, name
    assert "tensorflow" in found and "dlworkflow" in found  # tensorflow-cpu here, by its name


def test_only_named_libraries_that_the_record_has_and_that_changed_are_listed():
    here = {"python": "3.11.7", "keras": "3.15.1", "numpy": "2.4.6", "scikit-learn": "1.9.1"}
    saved = {**here, "keras": "3.10.0", "scikit-learn": "1.6.0"}
    assert differences(saved, current=here) == ["keras 3.10.0 (here 3.15.1)",
                                                "scikit-learn 1.6.0 (here 1.9.1)"]
    assert differences(saved, ["keras", "numpy"], here) == ["keras 3.10.0 (here 3.15.1)"]
    assert differences({"numpy": "2.4.6"}, ["keras", "numpy"], here) == []  # an older card
    assert differences({"librosa": "0.11.0"}, current=here) == [
        "librosa 0.11.0 (here not installed)"]
    assert describe(saved) == ("Python 3.11.7 on ?; keras 3.10.0, numpy 2.4.6, "
                               "scikit-learn 1.6.0")


#: /proc/cpuinfo's lines as Linux writes them, cut to what cpu_kind reads
ZEN3 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse4_2 avx fma avx2 bmi2\n"
ZEN5 = ("processor\t: 0\nflags\t\t: fpu sse4_2 avx avx2 avx512f avx512bw avx_vnni avx512_bf16 "
        "avx512_vnni\nbugs\t\t: sysret_ss_attrs\n")


def test_the_cpu_kind_names_the_widest_vector_extension_and_the_matrix_ones_beside_it():
    assert cpu_kind(ZEN3) == "avx2"
    assert cpu_kind(ZEN5) == "avx512f avx512_vnni avx512_bf16 avx_vnni"
    assert cpu_kind("processor\t: 0\nflags\t\t: fpu sse sse2\n") is None  # nothing it knows
    assert cpu_kind("Processor\t: AArch64\nFeatures\t: fp asimd\n") is None  # Arm: no flags
    if platform.system() == "Linux" and platform.machine() == "x86_64":  # CI's, and ours
        assert environment()["cpu"] == cpu_kind(Path("/proc/cpuinfo").read_text())
    assert describe({"python": "3.11.7", "platform": "linux-x86_64", "cpu": "avx2",
                     "onednn": "off", "keras": "3.15.1"}) == (
        "Python 3.11.7 on linux-x86_64 (CPU avx2, oneDNN off); keras 3.15.1")


@pytest.mark.seconds(9)
def test_onednn_is_recorded_as_tensorflow_runs_it_once_tensorflow_is_imported():
    """Asked before TensorFlow is imported, the environment has no oneDNN entry (importing it
    only to ask would cost seconds); after, it says what the variable made of it."""
    probe = ("import json; from dlworkflow.provenance import environment as e; before = e();"
             " import tensorflow; print(json.dumps([before.get('onednn'), e().get('onednn')]))")
    for setting, expected in (("0", "off"), ("1", "on")):
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                              env={**os.environ, "TF_ENABLE_ONEDNN_OPTS": setting}, check=True)
        assert json.loads(done.stdout.strip().splitlines()[-1]) == [None, expected], setting
