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
    history = pd.read_csv(model_dir / "history.csv")  # what dvc plots draws
    assert {"epoch", "loss", "val_loss"} <= set(history.columns)


def _training_jobs(dry: str) -> list[str]:
    """The dry-run blocks of the train_fold jobs."""
    return [block for block in dry.split("\n\n") if "rule train_fold:" in block]


def test_training_jobs_take_a_gpu_slot_only_with_a_gpu_and_read_no_test_shard(demo_project):
    command = ["snakemake", "--cores", "2", "--forcerun", "train_fold", "-n", "-p",
               "results/digits/nn/summary.json"]
    with_gpu = run(command, demo_project, env={"DLWORKFLOW_GPUS": "1"})
    assert with_gpu.returncode == 0, with_gpu.stderr[-2000:]
    jobs = _training_jobs(with_gpu.stdout)
    folds = len(jobs)  # one per fold of the project's params
    assert folds >= 2 and all("gpu=1" in job and "threads: 2" in job for job in jobs)
    assert "/test-" not in with_gpu.stdout
    # no GPU: one thread (a dry run shows threads above 1 only) and no slot, so
    # `--resources gpu=1` does not queue the folds
    on_cpu = run(command, demo_project, env={"DLWORKFLOW_GPUS": "0"})
    jobs = _training_jobs(on_cpu.stdout)
    assert len(jobs) == folds and all("gpu=0" in job and "threads:" not in job
                                      for job in jobs), jobs[0]


def test_predict_cli_reads_raw_files_with_a_fold_model(demo_project):
    raw = sorted((demo_project / "data" / "raw" / "fsdd" / "recordings").glob("*.wav"))[:3]
    model_dir = demo_project / "results" / "fsdd" / "nn" / "fold-0"
    done = run(["dlworkflow", "predict", str(model_dir), *map(str, raw)], demo_project)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("input,prediction,p_0") and len(lines) == 4
