"""Steps 2 and 5 in the workflow: per-fold jobs, CV summaries, out-of-fold predictions."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tests.workflow.conftest import QUICK_FOLDS, run

pytestmark = pytest.mark.workflow
DATASETS = ("digits", "fsdd", "sms_spam", "co2")


@pytest.mark.parametrize("name", DATASETS)
def test_baseline_and_network_summaries_cover_every_fold(demo_project, name):
    results = demo_project / "results" / name
    choice = json.loads((results / "intake" / "metric.json").read_text())
    primary = choice["primary"]["name"]
    index = pd.read_parquet(results / "tensors" / "index.parquet")
    validated = index["fold"].notna().sum()  # forecasting: windows outside folds only train
    for kind in ("baseline", "nn"):
        summary = json.loads((results / kind / "summary.json").read_text())
        assert summary["primary"] == primary and summary["folds"] == QUICK_FOLDS
        for metrics in summary["models"].values():
            assert len(metrics[primary]["folds"]) == QUICK_FOLDS
            assert metrics[primary]["std"] >= 0
        oof = pd.read_parquet(results / kind / "oof.parquet")
        for _, rows in oof.groupby("model"):
            ids = rows["id"].unique()
            assert len(ids) == validated and set(ids) <= set(index["id"])  # each row once
            assert (rows.groupby("id")["fold"].nunique() == 1).all()
    network = json.loads((results / "nn" / "summary.json").read_text())
    assert network["baseline"]["model"] in json.loads(
        (results / "baseline" / "summary.json").read_text())["models"]
    # the verdict says plainly whether the network beat the baseline (tiny data: often not)
    said = "beats" if network["beats_baseline"] else "does not beat"
    assert said in network["verdict"] and len(network["best_epochs"]) == QUICK_FOLDS
    model_dir = results / "nn" / "fold-0"
    card = json.loads((model_dir / "model.json").read_text())
    assert card["task"] == choice["task"] and card["fold"] == 0
    assert (model_dir / "dvclive" / "metrics.json").is_file()


def test_training_jobs_ask_for_a_gpu_slot_and_read_no_test_shard(demo_project):
    dry = run(["snakemake", "--cores", "2", "--forcerun", "train_fold", "-n", "-p",
               "results/digits/nn/summary.json"], demo_project)
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert "gpu=1" in dry.stdout and "/test-" not in dry.stdout


def test_predict_cli_reads_raw_files_with_a_fold_model(demo_project):
    raw = sorted((demo_project / "data" / "raw" / "fsdd" / "recordings").glob("*.wav"))[:3]
    model_dir = demo_project / "results" / "fsdd" / "nn" / "fold-0"
    done = run(["dlworkflow", "predict", str(model_dir), *map(str, raw)], demo_project)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("input,prediction,p_0") and len(lines) == 4
