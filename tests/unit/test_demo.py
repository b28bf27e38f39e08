"""Demo data preparation: real sources, checked by sha256, capped per class with the seed."""

from __future__ import annotations

import hashlib
import shutil
import tarfile

import pandas as pd
import pytest

from dlworkflow import demo
from dlworkflow.demo import DemoSourceUnavailable, cap_per_class, prepare_demo, sha256_of_files
from tests.conftest import SHARED_DATA


def test_cap_per_class_is_seeded_and_keeps_small_classes():
    labels = ["a"] * 10 + ["b"] * 3
    kept = cap_per_class(labels, 4, seed=1)
    assert list(kept) == sorted(kept)
    assert sum(labels[i] == "a" for i in kept) == 4 and sum(labels[i] == "b" for i in kept) == 3
    assert list(cap_per_class(labels, 4, seed=1)) == list(kept)
    assert len(cap_per_class(labels, None, seed=1)) == 13


def test_digits_are_written_as_pngs_one_folder_per_class(tmp_path):
    out = prepare_demo("sklearn_digits", tmp_path / "digits", {"max_per_class": 3}, seed=0)
    assert sorted(p.name for p in out.iterdir()) == [str(d) for d in range(10)]
    assert len(list(out.glob("*/*.png"))) == 30
    assert not (tmp_path / "digits.partial").exists()


def test_co2_keeps_its_missing_weeks(tmp_path):
    out = prepare_demo("statsmodels_co2", tmp_path / "co2", {}, seed=0)
    frame = pd.read_csv(out / "co2.csv")
    assert list(frame.columns) == ["date", "co2"]
    assert len(frame) == 2284 and frame["co2"].isna().sum() == 59


@pytest.fixture
def shared_copy(tmp_path):
    """A writable copy of ../shared/data (to damage it or hide it)."""
    if not (SHARED_DATA / "fsdd").is_dir():
        pytest.skip("../shared/data is not present on this machine")
    copy = tmp_path / "shared"
    shutil.copytree(SHARED_DATA, copy)
    return copy


def test_sms_and_fsdd_come_from_the_verified_local_copy(tmp_path, shared_copy):
    settings = {"shared_data": str(shared_copy), "max_per_class": 5, "download": False}
    sms = prepare_demo("sms_spam", tmp_path / "sms", settings, seed=0)
    labels = [line.split("\t", 1)[0] for line in (sms / "SMSSpamCollection").read_text().splitlines()]
    assert sorted(labels) == ["ham"] * 5 + ["spam"] * 5
    fsdd = prepare_demo("fsdd", tmp_path / "fsdd", settings, seed=0)
    assert len(list((fsdd / "recordings").glob("*.wav"))) == 50
    assert (fsdd / "speakers.csv").read_bytes() == (shared_copy / "fsdd" / "speakers.csv").read_bytes()


def test_a_damaged_copy_is_refused(tmp_path, shared_copy):
    victim = sorted((shared_copy / "fsdd" / "recordings").glob("*.wav"))[7]
    victim.write_bytes(victim.read_bytes()[:-2])
    settings = {"shared_data": str(shared_copy), "download": False}
    with pytest.raises(DemoSourceUnavailable, match="does not match the published"):
        prepare_demo("fsdd", tmp_path / "fsdd", settings, seed=0)
    sms = shared_copy / "sms_spam" / "SMSSpamCollection"
    sms.write_bytes(sms.read_bytes() + b"ham\tinjected\n")
    with pytest.raises(DemoSourceUnavailable, match="does not match the published"):
        prepare_demo("sms_spam", tmp_path / "sms", settings, seed=0)
    assert not (tmp_path / "fsdd").exists() and not (tmp_path / "sms").exists()


def test_without_a_copy_or_download_the_dataset_is_skipped_by_name(tmp_path):
    settings = {"shared_data": str(tmp_path / "nowhere"), "download": False}
    with pytest.raises(DemoSourceUnavailable, match="demo dataset 'fsdd' skipped"):
        prepare_demo("fsdd", tmp_path / "fsdd", settings, seed=0)


def test_failed_download_names_the_url_and_the_dataset(tmp_path, monkeypatch):
    broken = demo.DemoSource("x", "x", "x", url=(tmp_path / "no-such.zip").as_uri(), sha256="0")
    monkeypatch.setitem(demo.SOURCES, "sms_spam", broken)
    settings = {"shared_data": str(tmp_path / "nowhere"), "download": True}
    with pytest.raises(DemoSourceUnavailable, match=r"demo dataset 'sms_spam' skipped.*failed"):
        prepare_demo("sms_spam", tmp_path / "sms", settings, seed=0,
                     downloads=tmp_path / "downloads")


def test_fsdd_archive_download_path_is_verified(tmp_path, shared_copy, monkeypatch):
    """The download branch: an archive laid out like the public one, fetched by URL."""
    top = tmp_path / "archive" / "free-spoken-digit-dataset-26eb9aa"
    (top / "recordings").mkdir(parents=True)
    for wav in (shared_copy / "fsdd" / "recordings").glob("*.wav"):
        shutil.copyfile(wav, top / "recordings" / wav.name)
    (top / "metadata.py").write_text(
        "metadata = {\n  'jackson': {'gender': 'male', 'accent': 'USA/neutral', "
        "'language': 'english'},\n}\n")
    archive = tmp_path / "fsdd.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(top, arcname=top.name)
    source = demo.SOURCES["fsdd"]
    monkeypatch.setitem(demo.SOURCES, "fsdd", demo.DemoSource(
        source.title, source.licence, source.attribution, url=archive.as_uri(),
        sha256=source.sha256))
    settings = {"shared_data": str(tmp_path / "nowhere"), "download": True, "max_per_class": 2}
    out = prepare_demo("fsdd", tmp_path / "fsdd", settings, seed=0, downloads=tmp_path / "dl")
    assert len(list((out / "recordings").glob("*.wav"))) == 20
    assert pd.read_csv(out / "speakers.csv").to_dict("records") == [
        {"speaker": "jackson", "gender": "male", "accent": "USA/neutral", "language": "english"}]


def test_checksum_is_the_published_one_for_the_shared_fsdd():
    if not (SHARED_DATA / "fsdd").is_dir():
        pytest.skip("../shared/data is not present on this machine")
    recordings = SHARED_DATA / "fsdd" / "recordings"
    assert sha256_of_files(recordings.glob("*.wav"), recordings) == demo.SOURCES["fsdd"].sha256
    sms = (SHARED_DATA / "sms_spam" / "SMSSpamCollection").read_bytes()
    assert hashlib.sha256(sms).hexdigest() == demo.SOURCES["sms_spam"].sha256


def test_the_demo_says_where_each_datasets_data_will_come_from(tmp_path):
    import yaml

    from dlworkflow.demo import demo_plan
    from tests.conftest import REPO

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    (tmp_path / "shared" / "sms_spam").mkdir(parents=True)
    (tmp_path / "shared" / "sms_spam" / "SMSSpamCollection").write_text("ham\thi\n")
    (tmp_path / "data" / "raw" / "co2").mkdir(parents=True)
    (tmp_path / "data" / "raw" / "co2" / "co2.csv").write_text("date,co2\n")
    params["demo"].update(shared_data="shared", download=True, max_per_class=20)
    plan = dict(line.strip().split(":", 1) for line in demo_plan(params, tmp_path,
                                                                  tmp_path / "downloads"))
    assert "bundled with its library" in plan["digits"] and "20 per class" in plan["digits"]
    assert "internet needed" in plan["fsdd"] and "free-spoken-digit-dataset" in plan["fsdd"]
    assert f"copied from {tmp_path / 'shared' / 'sms_spam'}" in plan["sms_spam"]
    assert "already in data/raw/co2" in plan["co2"]
    # a series has no classes: the quick look keeps co2 whole and says so
    assert "per class" not in plan["co2"] and "the whole series" in plan["co2"]
    params["demo"]["download"] = False
    offline = dict(line.strip().split(":", 1) for line in demo_plan(params, tmp_path))
    assert "skipped" in offline["fsdd"] and "demo.download is false" in offline["fsdd"]
