"""Shared fixtures: small real demo datasets (from ../shared/data or downloaded) and paths."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from dlworkflow.demo import DemoSourceUnavailable, prepare_demo

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
DEMO_SOURCES = {"digits": "sklearn_digits", "fsdd": "fsdd", "sms_spam": "sms_spam",
                "co2": "statsmodels_co2"}
PER_CLASS = 10


def pytest_configure(config) -> None:
    """Refuse, before any worker starts, the one combination known to lose the groups:
    pytest-xdist (up to 3.8) marks a test's group in its id, which pytest 9.2 no longer lets
    it change (pytest-dev/pytest-xdist#1386); the demo run would then be made on every worker."""
    if hasattr(config, "workerinput") or getattr(config.option, "dist", "no") != "loadgroup":
        return
    import xdist
    from packaging.version import Version

    if Version(pytest.__version__) >= Version("9.2") and Version(xdist.__version__) <= Version("3.8"):
        raise pytest.UsageError(f"pytest-xdist {xdist.__version__} cannot group tests under pytest "
                                f"{pytest.__version__} (--dist loadgroup): install 'pytest<9.2', as "
                                "the dev extra does")


#: fixture scopes that tie a module's tests to one worker (a session fixture is made once per
#: worker whatever the grouping; a function fixture for each test)
SHARED_SCOPES = ("class", "module", "package")


def _group(item) -> str:
    """The xdist group of a test: "demo" for the shared demo run and the SLURM tests (one
    cluster, compared with that run); its module when it shares a module-scoped fixture with
    its neighbours; else the test alone, so the two workers can share a module's load."""
    if "demo_project" in item.fixturenames or item.get_closest_marker("cluster"):
        return "demo"
    definitions = getattr(item, "_fixtureinfo", None)
    for name in item.fixturenames:
        defs = definitions.name2fixturedefs.get(name, ()) if definitions else ()
        if any(d.scope in SHARED_SCOPES for d in defs):
            return item.module.__name__
    # xdist reads the group after the last "@" unless a "]" follows it: no brackets in it
    return item.nodeid.replace("[", "(").replace("]", ")")


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(config, items) -> None:
    """Under pytest-xdist (`make test`: a worker per core, `--dist loadgroup`), tests that share
    an expensive fixture stay on one worker, so it is made once (`_group`), and the groups are
    handed out longest first (the `seconds` marks; the demo group leads: its run overlaps the
    SLURM run), so no long test starts last while the other worker idles."""
    if not config.pluginmanager.hasplugin("xdist"):
        return
    groups, cost = {}, {}
    for item in items:
        group = groups[id(item)] = _group(item)
        mark = item.get_closest_marker("seconds")
        cost[group] = cost.get(group, 0) + (mark.args[0] if mark else 0)
        item.add_marker(pytest.mark.xdist_group(group))
    cost["demo"] = float("inf")
    order = {id(item): number for number, item in enumerate(items)}
    items.sort(key=lambda item: (-cost[groups[id(item)]], order[id(item)]))


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
    """The README's quick look, run once: `make quick`, the block's first command, in a fresh
    clone with the quick shipped params (all four datasets, at most 10 items a class). Shared
    by read-only tests, the local run the SLURM run must equal, and the start of the
    quick-look test, which goes on with the block's other commands on a copy taken here
    (`quick_look_start`), before any test touches the project."""
    from tests.workflow.conftest import GIT, fresh_clone, recipe, run

    root = fresh_clone(tmp_path_factory.mktemp("demo-run"))
    first = recipe("quick-look")[0]
    assert first == "make quick", first
    # 3-4 min alone; up to three times that while the other test worker and the SLURM run
    # share the two cores. The Makefile takes the tools from .venv (PATH as a newcomer's)
    done = run(first.split(), root, timeout=1800, env={**GIT, "PATH": os.environ["PATH"]})
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    (root.parent / "make-quick.out").write_text(done.stdout)
    shutil.copytree(root, root.parent / "after-make-quick", symlinks=True)
    return root


def quick_look_start(demo_project: Path) -> tuple[Path, str]:
    """A copy of the demo project as `make quick` left it, and what `make quick` printed."""
    return (demo_project.parent / "after-make-quick",
            (demo_project.parent / "make-quick.out").read_text())
