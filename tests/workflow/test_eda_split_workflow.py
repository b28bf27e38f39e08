"""Steps 1 and 4 end to end: EDA report, metric choice, splits and leakage on real data."""

from __future__ import annotations

import json
import shutil
from html.parser import HTMLParser

import pandas as pd
import pytest

from dlworkflow.eda import counted
from dlworkflow.metrics import metric_label
from tests.conftest import PER_CLASS
from tests.workflow.conftest import run, shipped_params, write_params

pytestmark = pytest.mark.workflow
DATASETS = ("digits", "fsdd", "sms_spam", "co2")


class Page(HTMLParser):
    """Collects tags with their attributes, and the visible text."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    def find(self, tag: str, **attrs) -> list[dict]:
        return [a for t, a in self.tags if t == tag
                and all(a.get(k.replace("_", "-"), "") == v or v in a.get(k, "").split()
                        for k, v in attrs.items())]


@pytest.mark.parametrize("name", DATASETS)
def test_eda_report_shows_samples_target_and_the_summary_numbers(demo_project, name):
    intake = demo_project / "results" / name / "intake"
    html = (intake / "eda.html").read_text()
    summary = json.loads((intake / "summary.json").read_text())
    page = Page(html)
    text = " ".join(page.text)
    rows = page.find("div", **{"class": "sample-row"})
    assert rows, "no sample grid"
    if name in ("digits", "fsdd"):
        assert sorted(r["data-label"] for r in rows) == [str(d) for d in range(10)]
    target = [a for t, a in page.tags if t == "img" and a.get("id") == "target-plot"]
    assert target and target[0]["src"].startswith("data:image/png;base64,")
    for number in (summary["found"], summary["items"], summary["rejected"], summary["leaks"]):
        assert f">{number:,}<" in html.replace("<b>", ">").replace("</b>", "<")
    assert summary["primary_metric"] in text
    # and as a person reads it (co2: "MASE")
    choice = json.loads((intake / "metric.json").read_text())
    assert f"{metric_label(summary['primary_metric'], choice)} primary metric" in text
    duplicates = summary["duplicate_items"]
    assert (f"{counted(duplicates, 'item')} share their exact content" if duplicates
            else "No two items have the same content") in text
    for label, count in summary.get("class_counts", {}).items():  # under each class's samples
        assert f"{label} {counted(count, 'item')}" in text
    # self-contained: every image and sound is inline, nothing is fetched
    sources = [a.get("src", "") for t, a in page.tags if t in ("img", "audio", "script")]
    assert sources and all(s.startswith("data:") for s in sources)
    assert not any(t == "link" for t, _ in page.tags)
    if name == "fsdd":
        audio = [a for t, a in page.tags if t == "audio"]
        assert len(audio) >= 10 and audio[0]["src"].startswith("data:audio/wav;base64,")
        assert summary["class_counts"] == {str(d): PER_CLASS for d in range(10)}
    if name == "sms_spam":
        # capped at 10 per class the subset is balanced; the full set is checked in unit tests
        assert summary["primary_metric"] == "accuracy" and summary["rare_classes"] == []
        assert summary["class_counts"] == {"ham": PER_CLASS, "spam": PER_CLASS}
    if name == "co2":
        assert "seasonality at lag 52" in text


def test_metric_json_has_a_rationale_for_every_dataset(demo_project):
    expected = {"digits": "accuracy", "fsdd": "accuracy", "sms_spam": "accuracy",
                "co2": "mase"}  # capped at 10 per class, SMS is balanced in this subset
    for name, primary in expected.items():
        metric = json.loads((demo_project / "results" / name / "intake" / "metric.json")
                            .read_text())
        assert metric["primary"]["name"] == primary
        assert len(metric["rationale"]) > 40


def test_splits_partition_every_item_and_fsdd_uses_the_conventional_test_takes(demo_project):
    for name in ("digits", "fsdd", "sms_spam"):
        inventory = pd.read_parquet(demo_project / "results" / name / "intake"
                                    / "inventory.parquet")
        splits = pd.read_parquet(demo_project / "results" / name / "split" / "splits.parquet")
        assert sorted(splits["id"]) == sorted(inventory["id"])
        assert splits.loc[splits["role"] == "test", "fold"].isna().all()
    fsdd = pd.read_parquet(demo_project / "results" / "fsdd" / "split" / "splits.parquet")
    takes = fsdd["id"].str.extract(r"_(\d+)\.wav$")[0].astype(int)
    assert ((takes <= 4) == (fsdd["role"] == "test")).all()
    trainval = fsdd[fsdd["role"] == "trainval"]
    # shipped: folds mirror the test (its speakers also speak in training), so a speaker
    # spans folds
    assert (trainval.groupby("group")["fold"].nunique() > 1).any()
    co2 = pd.read_parquet(demo_project / "results" / "co2" / "split" / "splits.parquet")
    assert (co2["role"] == "test").sum() == 52
    leakage = json.loads((demo_project / "results" / "co2" / "split" / "leakage.json").read_text())
    assert all(w["ordered"] for w in leakage["windows"]) and leakage["leaks"] == 0


def test_splits_are_byte_identical_when_rerun(demo_project, tmp_path):
    target = demo_project / "results" / "sms_spam" / "split" / "splits.parquet"
    before = target.read_bytes()
    done = run(["snakemake", "--cores", "2", "--forcerun", "split", "--", str(target.relative_to(
        demo_project))], demo_project)
    assert done.returncode == 0, done.stderr[-2000:]
    assert target.read_bytes() == before


def test_planted_duplicate_across_train_and_test_is_reported_and_fail_stops(project):
    assert run(["snakemake", "--cores", "2", "--", "data/raw/fsdd"], project).returncode == 0
    recordings = project / "data" / "raw" / "fsdd" / "recordings"
    test_item = sorted(recordings.glob("*_*_[0-4].wav"))[0]
    digit, speaker, _ = test_item.stem.split("_")
    planted = recordings / f"{digit}_{speaker}_50.wav"
    shutil.copyfile(test_item, planted)
    report = ["results/fsdd/intake/eda.html"]  # steps 1 and 4 only; no training here
    done = run(["snakemake", "--cores", "2", *report], project)
    assert done.returncode == 0, done.stderr[-2000:]
    leakage = json.loads((project / "results" / "fsdd" / "split" / "leakage.json").read_text())
    findings = leakage["duplicates_across_test"]
    assert findings == [{"sha256": findings[0]["sha256"],
                         "test": [f"recordings/{test_item.name}"],
                         "trainval": [f"recordings/{planted.name}"]}]
    eda = (project / "results" / "fsdd" / "intake" / "eda.html").read_text()
    assert "duplicates across test" in eda and planted.name in eda
    assert "1 leakage finding (split.on_leakage" in eda  # the count in words, in its number
    assert "2 items share their exact content with another (1 group)" in eda

    params = shipped_params()
    params["split"]["on_leakage"] = "fail"
    write_params(project, params)
    failed = run(["snakemake", "--cores", "2", *report], project)
    assert failed.returncode != 0
    assert planted.name in failed.stdout + failed.stderr


def test_sample_is_used_and_the_report_says_so(project):
    params = shipped_params()
    params["intake"]["sample"] = 40
    params["datasets"] = {"digits": params["datasets"]["digits"]}
    write_params(project, params)
    done = run(["snakemake", "--cores", "2", "results/digits/intake/eda.html"], project)
    assert done.returncode == 0, done.stderr[-2000:]
    splits = pd.read_parquet(project / "results" / "digits" / "split" / "splits.parquet")
    assert splits["in_sample"].sum() == 40
    assert (splits.loc[splits["in_sample"], "label"].value_counts() == 4).all()
    html = (project / "results" / "digits" / "intake" / "eda.html").read_text()
    assert 'id="sample-note"' in html and "intake.sample subset" in html


def test_leakage_findings_read_as_sentences(demo_project):
    # FSDD's conventional test takes share speakers with trainval: reported, in words
    leakage = json.loads((demo_project / "results" / "fsdd" / "split" / "leakage.json")
                         .read_text())
    html = (demo_project / "results" / "fsdd" / "intake" / "eda.html").read_text()
    assert leakage["groups_across_test"], "the demo split no longer shares speakers"
    first = leakage["groups_across_test"][0]
    assert "{&#39;" not in html and "{'" not in html  # no Python dicts on the page
    ids = first["test"]
    assert f"group {first['group']} in " in html and f"test: {len(ids)} item" in html
    assert ids[0] in html
    # the demo asks for it (split.groups: false): said what the scores then mean, not a leak
    assert leakage["leaks"] == 0 and leakage["groups_counted"] is False
    shared = f"{len(leakage['groups_across_test'])} have items in both test and trainval"
    assert 'id="shared-groups"' in html and shared in html
    report = (demo_project / "results" / "fsdd" / "final" / "report.html").read_text()
    assert "leakage finding" not in report and shared in report
    assert "voices it has heard" in report and "between the test set and the folds" in report
