"""Snakemake end to end on small real subsets of the four demo datasets."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from tests.conftest import PER_CLASS
from tests.workflow.conftest import run, shipped_params, write_params

pytestmark = pytest.mark.workflow


def test_snakemake_runs_demo_data_and_intake_for_all_four_modalities(demo_project):
    project = demo_project
    expected_rows = {"digits": 10 * PER_CLASS, "fsdd": 10 * PER_CLASS, "sms_spam": 2 * PER_CLASS,
                     "co2": 1}
    modalities = {"digits": "image", "fsdd": "audio", "sms_spam": "text", "co2": "timeseries"}
    for name, rows in expected_rows.items():
        intake = project / "results" / name / "intake"
        inventory = pd.read_parquet(intake / "inventory.parquet")
        counts = json.loads((intake / "counts.json").read_text())
        assert len(inventory) == rows == counts["accepted"], name
        assert counts["found"] == counts["accepted"] + counts["rejected"]
        assert counts["modality"] == modalities[name]
        assert inventory["sha256"].str.len().eq(64).all()
        assert (project / "logs" / name / "intake.log").read_text().count("found") >= 1
        assert (project / "benchmarks" / name / "intake.tsv").exists()
    fsdd = pd.read_parquet(project / "results" / "fsdd" / "intake" / "inventory.parquet")
    assert {"side_take", "side_gender", "side_accent"} <= set(fsdd.columns)
    assert fsdd["side_gender"].notna().all()
    co2 = pd.read_parquet(project / "results" / "co2" / "intake" / "inventory.parquet")
    assert (co2.loc[0, "length"], co2.loc[0, "missing"]) == (2284, 59)

    again = run(["snakemake", "--cores", "2"], project)
    assert again.returncode == 0
    assert "Nothing to be done" in again.stdout + again.stderr


def _bad_text_dataset(project, sms_lines):
    root = project / "data" / "raw" / "texts"
    root.mkdir(parents=True)
    lines = [*sms_lines[:6], b"ham\t\xff\xfe broken", b"spam\t ", b"no tab here"]
    (root / "lines.tsv").write_bytes(b"\n".join(lines) + b"\n")
    params = shipped_params()
    params["datasets"] = {"texts": {"modality": "text", "task": "classification",
                                    "root": "data/raw/texts",
                                    "layout": {"kind": "delimited", "file": "lines.tsv"}}}
    return params


INTAKE_TEXTS = ["--", "results/texts/intake/counts.json"]


def test_quarantine_finishes_and_fail_stops_naming_every_bad_item(project, sms_lines):
    params = _bad_text_dataset(project, sms_lines)
    write_params(project, params)
    done = run(["snakemake", "--cores", "2", *INTAKE_TEXTS], project)
    assert done.returncode == 0, done.stderr[-3000:]
    rejected = pd.read_csv(project / "results" / "texts" / "intake" / "rejected.csv")
    assert sorted(rejected["path"]) == [f"data/raw/texts/lines.tsv:{n}" for n in (7, 8, 9)]
    counts = json.loads((project / "results" / "texts" / "intake" / "counts.json").read_text())
    assert (counts["found"], counts["accepted"], counts["rejected"]) == (9, 6, 3)

    shutil.rmtree(project / "results")
    params["intake"]["on_bad_input"] = "fail"
    write_params(project, params)
    failed = run(["snakemake", "--cores", "2", *INTAKE_TEXTS], project)
    output = failed.stdout + failed.stderr
    assert failed.returncode != 0
    for line in (7, 8, 9):
        assert f"data/raw/texts/lines.tsv:{line}" in output
    assert "intake.on_bad_input is 'fail'" in output
    assert not (project / "results" / "texts" / "intake" / "inventory.parquet").exists()


def test_bad_config_stops_before_any_job_with_the_key_named(project):
    params = shipped_params()
    params["datasets"]["digits"]["modality"] = "picture"
    params["intake"]["on_bad_input"] = "skip"
    write_params(project, params)
    failed = run(["snakemake", "--cores", "2"], project)
    output = failed.stdout + failed.stderr
    assert failed.returncode != 0
    assert "datasets.digits.modality: 'picture' is not allowed; choose one of" in output
    assert "intake.on_bad_input: 'skip' is not allowed" in output
    assert not (project / "data" / "raw").exists()


def test_intake_reruns_when_user_data_changes(project, sms_lines):
    write_params(project, _bad_text_dataset(project, sms_lines))
    assert run(["snakemake", "--cores", "2", *INTAKE_TEXTS], project).returncode == 0
    lines = project / "data" / "raw" / "texts" / "lines.tsv"
    lines.write_bytes(lines.read_bytes() + sms_lines[10] + b"\n")
    assert run(["snakemake", "--cores", "2", *INTAKE_TEXTS], project).returncode == 0
    counts = json.loads((project / "results" / "texts" / "intake" / "counts.json").read_text())
    assert counts["found"] == 10


def test_too_little_data_for_the_folds_fails_with_a_clear_message_in_the_log(project, sms_lines):
    write_params(project, _bad_text_dataset(project, sms_lines))
    failed = run(["snakemake", "--cores", "2"], project)
    assert failed.returncode != 0
    log = (project / "logs" / "texts" / "split.log").read_text()
    assert "datasets.texts.split" in log and "Use fewer folds" in log
