"""Model cards record the versions that decide a model's numbers."""

from __future__ import annotations

import platform

import numpy
import pandas
import scipy
import sklearn

from dlworkflow.provenance import describe, differences, environment


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
