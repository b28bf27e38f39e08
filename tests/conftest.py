"""Shared fixtures: small real demo datasets (from ../shared/data or downloaded) and paths."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dlworkflow.demo import DemoSourceUnavailable, prepare_demo

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
DEMO_SOURCES = {"digits": "sklearn_digits", "fsdd": "fsdd", "sms_spam": "sms_spam",
                "co2": "statsmodels_co2"}
PER_CLASS = 10


@pytest.fixture(scope="session")
def demo_raw(tmp_path_factory) -> Path:
    """data/raw/ holding the four demo datasets, at most 10 items per class (real data)."""
    raw = tmp_path_factory.mktemp("demo") / "data" / "raw"
    demo = {"shared_data": str(SHARED_DATA), "download": True, "max_per_class": PER_CLASS}
    for name, source in DEMO_SOURCES.items():
        try:
            prepare_demo(source, raw / name, demo, seed=7, downloads=REPO / "data" / "downloads")
        except DemoSourceUnavailable as exc:
            pytest.skip(f"demo source unavailable here: {exc}")
    return raw


@pytest.fixture
def copy_demo(demo_raw, tmp_path):
    """Copy one demo dataset into a test's own data/raw/ (so tests may damage it)."""

    def copy(name: str, dest_root: Path | None = None) -> Path:
        dest = (dest_root or tmp_path) / "data" / "raw" / name
        shutil.copytree(demo_raw / name, dest)
        return dest

    return copy


@pytest.fixture(scope="session")
def digit_png(demo_raw) -> bytes:
    """A real 8x8 digit PNG."""
    return sorted((demo_raw / "digits" / "3").glob("*.png"))[0].read_bytes()


@pytest.fixture(scope="session")
def fsdd_wav(demo_raw) -> bytes:
    """A real FSDD recording."""
    return sorted((demo_raw / "fsdd" / "recordings").glob("*.wav"))[0].read_bytes()


@pytest.fixture(scope="session")
def sms_lines(demo_raw) -> list[bytes]:
    """Real SMS Spam Collection lines (label<TAB>text)."""
    return (demo_raw / "sms_spam" / "SMSSpamCollection").read_bytes().splitlines()


@pytest.fixture(scope="session")
def co2_csv(demo_raw) -> bytes:
    """The real weekly CO2 series as CSV bytes (date,co2)."""
    return (demo_raw / "co2" / "co2.csv").read_bytes()


@pytest.fixture(scope="session")
def demo_project(tmp_path_factory) -> Path:
    """One project (the quick shipped params, all four datasets) on which the whole workflow
    ran once, locally: shared by read-only tests, and the local run the SLURM run must equal."""
    from tests.workflow.conftest import make_project, run

    root = make_project(tmp_path_factory.mktemp("demo-run"))
    done = run(["snakemake", "--cores", "2"], root)
    assert done.returncode == 0, done.stderr[-3000:]
    return root
