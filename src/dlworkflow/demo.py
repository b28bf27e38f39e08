"""The embedded demo datasets: real public data written into data/raw/<name>/ by a rule.

Sources are read from a local read-only copy (`demo.shared_data`) when present, otherwise
downloaded from their public URL; either way the bytes are checked against a published
sha256 before anything is written. Nothing here invents data: a source that cannot be had
raises `DemoSourceUnavailable` naming the dataset that is skipped.
"""

from __future__ import annotations

import ast
import hashlib
import io
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dlworkflow.errors import DemoSourceUnavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoSource:
    """Where a demo dataset comes from and how to credit it."""

    title: str
    licence: str
    attribution: str
    url: str | None = None
    sha256: str | None = None
    per_class: bool = True  # `demo.max_per_class` caps it (a series has no classes)


SOURCES: dict[str, DemoSource] = {
    "sklearn_digits": DemoSource(
        "scikit-learn digits (UCI optical recognition of handwritten digits, 8x8)", "BSD-3-Clause",
        "Bundled with scikit-learn (sklearn.datasets.load_digits); E. Alpaydin, C. Kaynak, UCI."),
    "fsdd": DemoSource(
        "Free Spoken Digit Dataset", "CC BY-SA 4.0",
        'Zohar Jackson et al., "Free Spoken Digit Dataset", doi:10.5281/zenodo.1342401',
        url="https://github.com/Jakobovski/free-spoken-digit-dataset/archive/"
            "26eb9aaf76e81b692f806f9140c2d2777410d7a1.tar.gz",
        sha256="ddb17656a0bca4c5ddace082be188ca630516dc2ef1110afe3c4e9cc71173de4"),
    "sms_spam": DemoSource(
        "SMS Spam Collection v.1", "CC BY 4.0",
        "T. A. Almeida, J. M. G. Hidalgo, A. Yamakami, \"Contributions to the Study of SMS Spam "
        "Filtering: New Collection and Results\", DocEng 2011.",
        url="https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip",
        sha256="7d039a24a6083ed9ef0f806ebad56bbb976e3aeb8de05669173bfdc4996c239d"),
    "statsmodels_co2": DemoSource(
        "Mauna Loa weekly atmospheric CO2 (statsmodels co2)", "public domain (NOAA / Scripps)",
        "Bundled with statsmodels (statsmodels.datasets.co2); C. D. Keeling, T. P. Whorf, SIO.",
        per_class=False),
}


def sha256_of_files(paths: Iterable[Path], root: Path) -> str:
    """sha256 of the files' bytes concatenated in sorted relative-path order."""
    digest = hashlib.sha256()
    for path in sorted(paths, key=lambda p: p.relative_to(root).as_posix()):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def verify(actual: str, expected: str | None, what: str) -> None:
    """Raise DemoSourceUnavailable when a checksum does not match."""
    if expected and actual != expected:
        raise DemoSourceUnavailable(f"{what}: sha256 {actual} does not match the published "
                                    f"{expected}; the copy is damaged or a different version")


def download(url: str, dest: Path, timeout: float = 60.0) -> Path:
    """Download url to dest (kept as a cache); return dest."""
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    # a name of this process's own: two processes fetching the same file never share one
    partial = dest.with_suffix(f"{dest.suffix}.{os.getpid()}.part")
    log.info("downloading %s", url)
    with urllib.request.urlopen(url, timeout=timeout) as response, partial.open("wb") as out:
        shutil.copyfileobj(response, out)
    partial.rename(dest)
    return dest


def cap_per_class(labels: Sequence[Any], max_per_class: int | None, seed: int) -> np.ndarray:
    """Indices (sorted) keeping at most max_per_class per label, chosen with the seed."""
    labels = np.asarray(labels)
    if max_per_class is None:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    keep = []
    for label in sorted(set(labels.tolist())):
        members = np.flatnonzero(labels == label)
        if len(members) > max_per_class:
            members = np.sort(rng.choice(members, size=max_per_class, replace=False))
        keep.extend(members.tolist())
    return np.array(sorted(keep), dtype=int)


# --------------------------------------------------------------------------- the four sources


def prepare_sklearn_digits(out: Path, max_per_class: int | None, seed: int, **_: Any) -> None:
    """Write scikit-learn's 1,797 digit images as 8x8 grayscale PNGs, one folder per class."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.rint(digits.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    for index in cap_per_class(digits.target, max_per_class, seed):
        folder = out / str(int(digits.target[index]))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels[index], mode="L").save(folder / f"digit-{index:04d}.png")


def prepare_statsmodels_co2(out: Path, **_: Any) -> None:
    """Write the weekly Mauna Loa CO2 series (with its missing weeks) as co2.csv."""
    from statsmodels.datasets import co2

    frame = co2.load_pandas().data
    frame.index.name = "date"
    out.mkdir(parents=True, exist_ok=True)
    frame.reset_index().assign(date=lambda f: f["date"].dt.strftime("%Y-%m-%d")).to_csv(
        out / "co2.csv", index=False, lineterminator="\n")


def _fsdd_from_archive(archive: Path, workdir: Path) -> Path:
    """Extract recordings/ (and metadata.py as speakers.csv) from the FSDD archive."""
    target = workdir / "fsdd"
    (target / "recordings").mkdir(parents=True)
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            parts = Path(member.name).parts
            if not member.isfile() or len(parts) < 2:
                continue
            inner = Path(*parts[1:])
            if inner.parent.as_posix() == "recordings" and inner.suffix == ".wav":
                (target / inner).write_bytes(tar.extractfile(member).read())
            elif inner.as_posix() == "metadata.py":
                _speakers_from_metadata(tar.extractfile(member).read().decode("utf-8"),
                                        target / "speakers.csv")
    return target


def _speakers_from_metadata(source: str, dest: Path) -> None:
    """FSDD ships speaker metadata as a Python dict literal; write it as speakers.csv."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict):
            table = ast.literal_eval(node.value)
            rows = [{"speaker": name, **info} for name, info in table.items()
                    if isinstance(info, dict)]
            if rows:
                pd.DataFrame(rows).to_csv(dest, index=False, lineterminator="\n")
                return


def prepare_fsdd(out: Path, shared: Path, max_per_class: int | None, seed: int,
                 allow_download: bool, downloads: Path, **_: Any) -> None:
    """Copy the FSDD recordings (checked by sha256) and speakers.csv into out."""
    source = SOURCES["fsdd"]
    with tempfile.TemporaryDirectory() as tmp:
        folder = shared / "fsdd"
        if not (folder / "recordings").is_dir():
            folder = _fsdd_from_archive(_fetch("fsdd", folder, allow_download, downloads), Path(tmp))
        wavs = sorted((folder / "recordings").glob("*.wav"))
        verify(sha256_of_files(wavs, folder / "recordings"), source.sha256, f"FSDD at {folder}")
        (out / "recordings").mkdir(parents=True, exist_ok=True)
        labels = [p.name.split("_", 1)[0] for p in wavs]
        for index in cap_per_class(labels, max_per_class, seed):
            shutil.copyfile(wavs[index], out / "recordings" / wavs[index].name)
        if (folder / "speakers.csv").is_file():
            shutil.copyfile(folder / "speakers.csv", out / "speakers.csv")
        else:
            log.warning("FSDD speaker metadata not found: the side table will be missing")


def prepare_sms_spam(out: Path, shared: Path, max_per_class: int | None, seed: int,
                     allow_download: bool, downloads: Path, **_: Any) -> None:
    """Copy the SMS Spam Collection (checked by sha256), optionally capped per class."""
    source = SOURCES["sms_spam"]
    local = shared / "sms_spam" / "SMSSpamCollection"
    if local.is_file():
        data = local.read_bytes()
    else:
        archive = _fetch("sms_spam", local, allow_download, downloads)
        with zipfile.ZipFile(archive) as zf:
            data = zf.read("SMSSpamCollection")
    verify(hashlib.sha256(data).hexdigest(), source.sha256, "SMSSpamCollection")
    lines = data.split(b"\n")
    trailing = lines[-1] == b""
    if trailing:
        lines.pop()
    labels = [line.split(b"\t", 1)[0] for line in lines]
    kept = [lines[i] for i in cap_per_class(labels, max_per_class, seed)]
    out.mkdir(parents=True, exist_ok=True)
    (out / "SMSSpamCollection").write_bytes(b"\n".join(kept) + (b"\n" if trailing else b""))


def _fetch(name: str, local: Path, allow_download: bool, downloads: Path) -> Path:
    """Download a source's archive, or explain why the dataset is skipped."""
    source = SOURCES[name]
    if not allow_download:
        raise DemoSourceUnavailable(
            f"demo dataset '{name}' skipped: no local copy at {local} and demo.download is false")
    try:
        return download(source.url, downloads / Path(source.url).name)
    except OSError as exc:
        raise DemoSourceUnavailable(
            f"demo dataset '{name}' skipped: no local copy at {local} and the download from "
            f"{source.url} failed ({exc}). Provide the data there, or remove the dataset from "
            "params.yaml.") from exc


PREPARERS: dict[str, Callable[..., None]] = {
    "sklearn_digits": prepare_sklearn_digits,
    "fsdd": prepare_fsdd,
    "sms_spam": prepare_sms_spam,
    "statsmodels_co2": prepare_statsmodels_co2,
}


def prepare_demo(source: str, out: str | Path, demo: Mapping[str, Any], seed: int,
                 base_dir: str | Path = ".", downloads: str | Path = "data/downloads") -> Path:
    """Write demo dataset `source` into out (replaced whole, so a rerun never mixes versions)."""
    out = Path(out)
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    PREPARERS[source](staging, shared=Path(base_dir) / demo.get("shared_data", "../shared/data"),
                      max_per_class=demo.get("max_per_class"), seed=seed,
                      allow_download=demo.get("download", True), downloads=Path(downloads))
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    info = SOURCES[source]
    log.info("%s: %s — licence %s — %s", out, info.title, info.licence, info.attribution)
    return out


#: where each downloadable source's local copy is looked for, under `demo.shared_data`
LOCAL_COPIES = {"fsdd": "fsdd/recordings", "sms_spam": "sms_spam/SMSSpamCollection"}


def demo_plan(params: Mapping[str, Any], base_dir: str | Path = ".",
              downloads: str | Path = "data/downloads") -> list[str]:
    """Before a run: per demo dataset, where its data will come from (already prepared,
    bundled with a library, the local copy under `demo.shared_data`, or a download), so
    nobody learns offline, half-way through, that the demo needed the internet."""
    base, demo = Path(base_dir), params.get("demo") or {}
    shared = base / demo.get("shared_data", "../shared/data")
    lines = []
    for name, dataset in params["datasets"].items():
        source = dataset.get("demo")
        if not source:
            continue
        info = SOURCES[source]
        relative = dataset.get("root") or f"data/raw/{name}"  # params as written, or resolved
        root = base / relative
        cap = ""
        if demo.get("max_per_class"):
            cap = (f", {demo['max_per_class']} per class (demo.max_per_class)" if info.per_class
                   else ", the whole series (demo.max_per_class caps classes only)")
        if root.is_dir() and any(root.iterdir()):
            where = f"already in {relative}"
        elif info.url is None:
            where = "bundled with its library"
        elif (shared / LOCAL_COPIES[source]).exists():
            where = f"copied from {shared / LOCAL_COPIES[source]} (demo.shared_data)"
        elif (Path(downloads) / Path(info.url).name).is_file():
            where = f"from the earlier download in {downloads}"
        elif demo.get("download", True):
            where = (f"no copy in {shared} (demo.shared_data): downloads {info.url} "
                     f"(internet needed), checked by sha256")
        else:
            where = f"skipped: no copy in {shared} and demo.download is false"
        lines.append(f"  {name}: {info.title}{cap}: {where}")
    return lines


def describe_sources() -> str:
    """Attribution lines for every demo source (README and reports)."""
    out = io.StringIO()
    for name, info in SOURCES.items():
        out.write(f"- {name}: {info.title}; licence {info.licence}; {info.attribution}\n")
    return out.getvalue()
