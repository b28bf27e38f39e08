"""Step 7 in the workflow: the final model on all trainval rows, the test scored once with
intervals, latency, the exported model on raw files, and the self-contained report."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dlworkflow.provenance import cpu_kind
from tests.workflow.conftest import run

pytestmark = pytest.mark.workflow
DATASETS = ("digits", "fsdd", "sms_spam", "co2")
#: forecasting baselines fitted to each window as they forecast: they store no values
NAIVE_FORECASTS = {"naive", "naive2", "seasonal_naive", "drift", "theta", "ets"}


@pytest.mark.parametrize("name", DATASETS)
def test_final_scores_every_test_row_once_with_intervals(demo_project, name):
    results = demo_project / "results" / name
    plan = pd.read_parquet(results / "tensors" / "plan.parquet")
    index = pd.read_parquet(results / "tensors" / "index.parquet")
    card = json.loads((results / "final" / "model.json").read_text())
    assert card["training"]["train_rows"] == len(index)  # every trainval row, no validation
    best = json.loads((results / "nn" / "summary.json").read_text())["best_epochs"]
    assert card["training"]["epochs"]["fold_best_epochs"] == [e for e in best if e > 0]
    result = json.loads((results / "final" / "test_metrics.json").read_text())
    test = plan[plan["role"] == "test"]
    if "target_start" in test:  # forecasting: the windows wholly inside the test period
        test = test[test["target_start"] >= test["target_end"].min()]
    predictions = pd.read_parquet(results / "final" / "predictions.parquet")
    assert set(predictions["model"]) == {result["network"]["model"], result["baseline"]["model"]}
    for kind in ("network", "baseline"):
        assert result[kind]["rows"] == len(test)
        rows = predictions[predictions["model"] == result[kind]["model"]]
        assert sorted(rows["id"].unique()) == sorted(test["id"])
        for metric in result[kind]["metrics"].values():
            assert metric["low"] <= metric["value"] + 1e-12 <= metric["high"] + 2e-12
    # the CV winner ships (a tie goes to the baseline); the headline and latency are its own
    shipped = json.loads((results / "final" / "shipped.json").read_text())
    network = json.loads((results / "nn" / "summary.json").read_text())
    baseline = json.loads((results / "baseline" / "summary.json").read_text())
    primary = network["primary"]
    net, base = (s["models"][s["best"]][primary]["mean"] for s in (network, baseline))
    wins = net > base if network["greater_is_better"] else net < base
    assert shipped["shipped"] == ("network" if wins else "baseline")
    assert result["headline"]["model"] == result[shipped["shipped"]]["model"] == shipped["model"]
    # the shipped model against the other on the test, paired over the same resamples
    comparison, other = result["comparison"], {"network": "baseline", "baseline": "network"}
    assert comparison["shipped"] == shipped["shipped"]
    assert comparison["other_model"] == result[other[shipped["shipped"]]]["model"]
    assert comparison["shipped_minus_other"] == pytest.approx(
        result[shipped["shipped"]]["metrics"][primary]["value"]
        - result[other[shipped["shipped"]]]["metrics"][primary]["value"])
    latency = json.loads((results / "final" / "latency.json").read_text())
    assert 0 < latency["single_item_ms"]["p50"] <= latency["single_item_ms"]["p95"]
    # the DVC metrics: each step's headline, nothing per fold
    headline = json.loads((results / "final" / "headline.json").read_text())
    head = result["headline"]
    assert headline == {"shipped": f"{head['kind']} {head['model']}", primary: head[primary],
                        f"{primary}_interval": f"[{head[f'{primary}_low']:.4f}, "
                                               f"{head[f'{primary}_high']:.4f}] (95%)"}
    assert json.loads((results / "nn" / "headline.json").read_text()) == {
        key: network["headline"][key] for key in (f"{primary}_mean", f"{primary}_std")}
    assert network["headline"]["beats_baseline"] == network["beats_baseline"]
    assert latency["kind"] == shipped["shipped"] and latency["model"] == shipped["model"]
    html = (results / "final" / "report.html").read_text()
    if shipped["shipped"] == "network":
        assert latency["parameters"] == card["training"]["parameters"]
        assert f"{latency['parameters']:,}</b>parameters, shipped network" in html
    else:  # what the exported baseline stores (coefficients, kept rows...), never 0 here
        assert latency["parameters"] > 0 or shipped["model"] in NAIVE_FORECASTS
        assert f"{latency['parameters']:,}</b>stored values, shipped baseline" in html


def test_binary_threshold_is_tuned_out_of_fold_and_applied_to_the_test(demo_project):
    results = demo_project / "results" / "sms_spam"
    card = json.loads((results / "final" / "model.json").read_text())
    threshold = card["threshold"]
    assert threshold["positive"] in card["classes"] and 0.05 <= threshold["threshold"] <= 0.95
    predictions = pd.read_parquet(results / "final" / "predictions.parquet")
    mine = predictions[predictions["model"] == card["architecture"]]
    positive = threshold["positive"]
    expected = mine[f"p_{positive}"] >= threshold["threshold"]
    assert ((mine["y_pred"] == positive) == expected).all()


def test_report_is_self_contained_and_shows_every_part(demo_project):
    for name in DATASETS:
        html = (demo_project / "results" / name / "final" / "report.html").read_text()
        for section in ("summary", "cv", "test", "fit", "errors", "explanations", "latency"):
            assert f'id="{section}"' in html, (name, section)
        assert not re.search(r'(src|href)="(?!data:)[^"#]', html), name  # nothing external
        assert "scored once" in html and "± " in html
        assert 'id="quick-look"' in html, name  # the tests' networks train a few steps
        assert 'id="comparison"' in html and "paired 95 % interval" in html, name
    digits = (demo_project / "results" / "digits" / "final" / "report.html").read_text()
    assert "confusion matrix" in digits and "calibration" in digits
    # how long the final model trained, in the card's epochs and steps
    plan = json.loads((demo_project / "results" / "digits" / "final" / "model.json").read_text()
                      )["training"]["epochs"]
    assert (f"The final model trained {plan['epochs']} epochs of {plan['steps_per_epoch']:,} "
            f"optimizer steps") in digits
    # what the models were made with: this venv's versions, in both cards and the report
    final = demo_project / "results" / "digits" / "final"
    for card in ("model.json", "baseline.json"):
        made = json.loads((final / card).read_text())["environment"]
        assert made["python"] == platform.python_version(), card
        assert made["keras"] == metadata.version("keras") and made["scikit-learn"] == \
            metadata.version("scikit-learn"), card
        assert made["cpu"] == cpu_kind(), card  # the kernels' instruction set
    # the network's card says whether TensorFlow ran oneDNN's kernels; the baseline's has no
    # TensorFlow to ask
    assert json.loads((final / "model.json").read_text())["environment"]["onednn"] in (
        "on", "off")
    assert f"Made with Python {platform.python_version()} on " in digits and "(CPU " in digits
    assert f"keras {metadata.version('keras')}, numpy {metadata.version('numpy')}" in digits
    sms = (demo_project / "results" / "sms_spam" / "final" / "report.html").read_text()
    assert 'title="ROC"' in sms and 'title="PR"' in sms and "Decision threshold" in sms
    co2 = (demo_project / "results" / "co2" / "final" / "report.html").read_text()
    assert "held-out horizon" in co2
    assert "1 test window, scored once" in co2  # one series, one window (it read "windows")
    assert "training only on steps before its window" in co2  # split.gap 0, said in words


def test_exported_final_model_predicts_raw_files(demo_project):
    raw = sorted((demo_project / "data" / "raw" / "digits").glob("*/*.png"))[:4]
    done = run(["dlworkflow", "predict", str(demo_project / "results" / "digits" / "final"),
                *map(str, raw)], demo_project)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("input,prediction,p_0") and len(lines) == 5
    assert "was saved with" not in done.stderr  # the versions it was made with


@pytest.mark.parametrize("name", ("digits", "fsdd", "sms_spam"))
def test_both_exported_models_predict_the_test_items_as_the_final_step_did(demo_project, name):
    """`dlworkflow predict`'s way from raw files (or texts) to outputs gives the final step's
    test probabilities, for the shipped model and the other one alike: the same decoding,
    and the values kept as the shards keep them (float16 spectrograms: at full precision the
    final step's k-NN and predict's could find other neighbours)."""
    import yaml

    from dlworkflow.config import validate_params
    from dlworkflow.modalities import create_modality
    from dlworkflow.predict import raw_arrays
    from dlworkflow.shipping import load_shipped
    from dlworkflow.tasks import get_task

    final = demo_project / "results" / name / "final"
    params = validate_params(yaml.safe_load((demo_project / "params.yaml").read_text()),
                             base_dir=demo_project)
    dataset = params["datasets"][name]
    inventory = pd.read_parquet(demo_project / "results" / name / "intake" / "inventory.parquet")
    predictions = pd.read_parquet(final / "predictions.parquet")
    modality = create_modality(dataset["modality"], {}, dataset["layout"])
    splits = pd.read_parquet(demo_project / "results" / name / "split" / "splits.parquet")
    test_ids = set(splits.loc[splits["role"] == "test", "id"])
    for kind in ("network", "baseline"):
        shipped = load_shipped(final, kind)
        rows = predictions[predictions["model"] == shipped.card["architecture"]]
        assert test_ids and set(rows["id"]) == test_ids, kind  # every test item, once
        assert len(rows) == len(test_ids), kind
        items = modality.records(inventory.set_index("id", drop=False).loc[rows["id"]],
                                 dataset["root"], get_task(dataset["task"]), demo_project)
        arrays = raw_arrays(shipped.card, [item.file or item.read_bytes().decode("utf-8")
                                           for item in items])
        arrays.pop("names")
        assert arrays.pop("errors") == [None] * len(items)
        columns = [f"p_{label}" for label in shipped.card["classes"]]
        np.testing.assert_allclose(np.asarray(shipped.outputs(arrays), dtype=float),
                                   rows[columns].to_numpy(float), rtol=0, atol=1e-6,
                                   err_msg=f"{name}: {kind} {shipped.card['architecture']}")


def test_snakemake_report_collects_the_annotated_outputs(demo_project, tmp_path):
    target = tmp_path / "workflow-report.html"
    done = run(["snakemake", "--cores", "1", "--report", str(target)], demo_project)
    assert done.returncode == 0, done.stderr[-2000:]
    html = target.read_text(errors="replace")
    for category in ("1 data and metric", "5 network", "7 final"):
        assert category in html, category
    assert "test_metrics.json" in html and "report.html" in html


def test_predict_applies_the_final_models_threshold(demo_project):
    from dlworkflow.predict import predict
    from dlworkflow.shipping import load_shipped

    model_dir = demo_project / "results" / "sms_spam" / "final"
    card = load_shipped(model_dir).card  # the shipped model's card: network or baseline
    frame = predict(model_dir, ["WINNER! Claim your free prize now, call 09061701461",
                                "Are we still meeting for lunch tomorrow?"])
    positive, threshold = card["threshold"]["positive"], card["threshold"]["threshold"]
    assert ((frame["prediction"] == positive) == (frame[f"p_{positive}"] >= threshold)).all()


def test_the_closing_summary_gives_each_datasets_scores_and_reports(demo_project):
    import yaml

    from dlworkflow.runner import closing_summary

    params = yaml.safe_load((demo_project / "params.yaml").read_text())
    text = closing_summary(params, root=demo_project)
    for name in DATASETS:
        result = json.loads((demo_project / "results" / name / "final" / "test_metrics.json")
                            .read_text())
        head, primary = result["headline"], result["primary"]
        line = next(line for line in text.splitlines() if line.startswith(f"  {name}:"))
        assert f"ships the {head['kind']} {head['model']}" in line
        assert f"test {head[primary]:.4f} [{head[primary + '_low']:.4f}," in line
        comparison = result["comparison"]  # the other model's test score, the paired difference
        other = next(line for line in text.splitlines() if line.startswith(
            f"    test of the {comparison['other']} {comparison['other_model']}: ")
            and f"{comparison['shipped_minus_other']:+.4f}" in line)
        assert comparison["verdict"] in other
        for page in ("intake/eda.html", "final/report.html"):
            path = demo_project / "results" / name / page
            assert path.is_file() and str(path) in text


def test_the_reports_say_how_to_predict_in_each_modalitys_terms(demo_project):
    sms = (demo_project / "results" / "sms_spam" / "final" / "report.html").read_text()
    assert "[] network inputs" not in sms and "one raw string per input" in sms
    co2 = (demo_project / "results" / "co2" / "final" / "report.html").read_text()
    assert "forecasts the next horizon of each series" in co2
    assert "<th>sMAPE (%)</th>" in co2  # its values are percent, and the header says so
    digits = (demo_project / "results" / "digits" / "final" / "report.html").read_text()
    assert "network inputs of shape [16, 16, 1]" in digits


def test_forecast_mase_is_the_m4_one_scaled_by_the_whole_history(demo_project):
    """The co2 test score, recomputed by hand from the raw series: the shipped model's
    held-out forecast, its mean absolute error over the seasonal-naive MAE (season 52) of
    every observed week before the test window (the M4's scale, not the lookback's)."""
    from dlworkflow.metrics import naive_scale

    results = demo_project / "results" / "co2"
    test = json.loads((results / "final" / "test_metrics.json").read_text())
    shipped = test["shipped"]["shipped"]
    frame = pd.read_parquet(results / "final" / "predictions.parquet")
    frame = frame[frame["model"] == test[shipped]["model"]]
    series = pd.read_csv(demo_project / "data" / "raw" / "co2" / "co2.csv")["co2"].to_numpy()
    horizon = len(frame)
    history = series[: len(series) - horizon]
    by_hand = np.mean(np.abs(frame["y_true"] - frame["y_pred"])) / naive_scale(history, 52)
    assert test[shipped]["metrics"]["mase"]["value"] == pytest.approx(by_hand, rel=1e-6)
    lookback_only = np.mean(np.abs(frame["y_true"] - frame["y_pred"])) / naive_scale(
        history[-104:], 52)
    assert abs(by_hand - lookback_only) > 1e-3  # the two scales differ on this series


def _blocking(folder: Path, *packages: str) -> dict[str, str]:
    """An environment in whose Python processes importing any of `packages` fails."""
    for name in packages:
        (folder / name).mkdir(parents=True)
        (folder / name / "__init__.py").write_text(
            f"raise ImportError('{name} is blocked here: this job must not need it')\n")
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")]))}


def test_the_report_and_a_shipped_baselines_latency_run_without_tensorflow(demo_project,
                                                                          tmp_path):
    """The report draws what final_test wrote (its SHAP explanations too), and timing an
    exported baseline needs no network: neither job pays TensorFlow's import (5-6 s of CPU).
    Both rules' jobs rerun, as Snakemake runs them, where TensorFlow and Keras cannot load."""
    final = {name: demo_project / "results" / name / "final" for name in DATASETS}
    shipping = {name: json.loads((final[name] / "shipped.json").read_text())["shipped"]
                for name in DATASETS}
    baselines = [name for name, kind in shipping.items() if kind == "baseline"]
    assert baselines, shipping  # the quick look's two-epoch networks lose to every baseline
    project = tmp_path / "project"
    shutil.copytree(demo_project, project, symlinks=True)
    forced = [f"results/{name}/final/report.html" for name in DATASETS] + [
        f"results/{name}/final/latency.json" for name in baselines]
    done = run(["snakemake", "--cores", "2", "--allowed-rules", "final_report", "final_latency",
                "--forcerun", *forced, "--", *forced], project,
               env=_blocking(tmp_path / "blocked", "tensorflow", "keras"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.count("Finished jobid") == len(forced), done.stderr[-3000:]
    for name in DATASETS:
        again = project / "results" / name / "final"
        html = (again / "report.html").read_text()
        assert 'id="explanations"' in html and "SHAP" in html, name
        explained = json.loads((final[name] / "explanations.json").read_text())
        assert re.search(rf"\b{len(explained)} test rows?[:,]", html), name  # how many, and
        assert "final.explained_rows" in html, name                       # under which limits
        assert (again / "headline.json").read_bytes() == (final[name] / "headline.json").read_bytes()
    for name in baselines:
        timed = json.loads((project / "results" / name / "final" / "latency.json").read_text())
        shipped = json.loads((final[name] / "latency.json").read_text())
        assert timed["kind"] == "baseline" and timed["model"] == shipped["model"]
        assert timed["items_timed"] == shipped["items_timed"] and timed["device"].startswith("CPU")
