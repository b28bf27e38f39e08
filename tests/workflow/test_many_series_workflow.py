"""A user's first set of many short series, in the Monash archive's .tsf format, run with
the shipped defaults (quick networks): nothing but the dataset written in params.yaml."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest

from tests.helpers.series import write_yearly_tsf, yearly_series
from tests.workflow.conftest import run, shipped_params, write_params

pytestmark = pytest.mark.workflow


@pytest.mark.seconds(45)
def test_a_tsf_file_of_short_yearly_series_runs_with_defaults_and_predicts(project):
    """Eighty M4 Weekly series summed to years (1-49 of them): the horizon (6) and frequency
    come from the file, the lookback from them (12); series too short for a test and a
    validation window are set aside with their reason and the rest run, shorter pasts
    padded; every accepted series is scored once on its held-out six years; the shipped
    model is the cross-validated winner; `dlworkflow predict` forecasts every series of the
    file six years ahead."""
    series = yearly_series(80)
    write_yearly_tsf(project / "data" / "raw" / "yearly" / "yearly.tsf", series)
    params = shipped_params()
    params["datasets"] = {"yearly": {"modality": "timeseries", "task": "forecasting",
                                     "layout": {"kind": "tsf"}}}
    write_params(project, params)
    done = run(["snakemake", "--cores", "2"], project, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]

    results = project / "results" / "yearly"
    counts = json.loads((results / "intake" / "counts.json").read_text())
    assert counts["found"] == 80 == counts["accepted"] + counts["rejected"]
    rejected = pd.read_csv(results / "intake" / "rejected.csv")
    assert set(rejected["code"]) <= {"too_short", "series_too_short"}
    assert set(rejected["id"]) == {name for name, v in series.items() if len(v) < 14}
    choice = json.loads((results / "intake" / "metric.json").read_text())
    assert (choice["horizon"], choice["season"], choice["lookback"]) == (6, 1, 12)

    test = json.loads((results / "final" / "test_metrics.json").read_text())
    assert test["baseline"]["rows"] == counts["accepted"] == test["network"]["rows"]
    cv = {"baseline": json.loads((results / "baseline" / "headline.json").read_text()),
          "network": json.loads((results / "nn" / "headline.json").read_text())}
    winner = min(cv, key=lambda kind: cv[kind]["mase_mean"])
    assert test["shipped"]["shipped"] == winner

    # the statistical baselines fit on each series' whole history before a window: the
    # shards store it once a series, and a validation forecast is the method on the raw
    # values before the window
    from dlworkflow.data import shard_series
    from dlworkflow.estimators import Theta

    stored = {}
    for shard in sorted((results / "tensors").glob("trainval-*.npz")):
        stored.update(shard_series(shard))
    assert set(stored) == set(series) - set(rejected["id"])
    for name, values in stored.items():
        assert np.allclose(values, series[name][: len(values)], atol=0.06)  # 1 decimal
    fold = pd.read_parquet(results / "baseline" / "fold-0" / "predictions.parquet")
    theta = fold[fold["model"] == "theta"].sort_values(["id", "step"])
    window = theta["id"].iloc[0]
    name, start = window.rsplit("@", 1)
    expected = Theta(season=1, horizon=6)._one(np.round(series[name][: int(start)], 1))
    assert np.allclose(theta.loc[theta["id"] == window, "y_pred"], expected, rtol=1e-6)

    # the report: the shipped model's MASE per series, whose mean is its test MASE
    from dlworkflow.data import load_test_arrays
    from dlworkflow.tasks import get_task
    from dlworkflow.tasks.forecasting import series_mase

    html = (results / "final" / "report.html").read_text()
    assert 'title="test MASE per series"' in html
    assert 'title="held-out horizon of the best, median and worst series"' in html
    task = get_task("forecasting")
    arrays = load_test_arrays(task, results / "tensors" / "plan.parquet",
                              sorted(map(str, (results / "final" / "tensors").glob("*.npz"))), ())
    predictions = pd.read_parquet(results / "final" / "predictions.parquet")
    shipped = test[test["shipped"]["shipped"]]
    per_series = series_mase(predictions[predictions["model"] == shipped["model"]], arrays,
                             choice)
    assert len(per_series) == counts["accepted"]
    assert per_series.mean() == pytest.approx(shipped["metrics"]["mase"]["value"], rel=1e-6)

    # the exported network averages the final network and the fold networks (auto, for
    # forecasting): its output is their mean, the fold members are the fold models as trained
    import keras

    import dlworkflow.layers  # noqa: F401  (registers the layers the models use)

    card = json.loads((results / "final" / "model.json").read_text())
    assert card["training"]["averaged"]["members"] == ["final", "fold 0", "fold 1"]
    exported = keras.saving.load_model(results / "final" / "model.keras")
    x = arrays["x"][:50].astype("float32")
    members = [exported.get_layer(name) for name in ("final", "fold_0", "fold_1")]
    outputs = [member.predict(x, verbose=0) for member in members]
    np.testing.assert_allclose(exported.predict(x, verbose=0), np.mean(outputs, axis=0),
                               rtol=1e-5, atol=1e-3)
    for number, member in enumerate(members[1:]):
        fold = keras.saving.load_model(results / "nn" / f"fold-{number}" / "model.keras")
        assert all(np.array_equal(a, b) for a, b in zip(member.get_weights(), fold.get_weights(),
                                                       strict=True))

    # the M4's OWA against Naive2 (naive, for yearly data) on the same test windows
    from dlworkflow.metrics import naive_scale

    mases, smapes = [], []
    for name in stored:
        values = np.round(series[name], 1)
        history, actual = values[:-6], values[-6:]
        forecast = np.repeat(history[-1], 6)
        mases.append(np.mean(np.abs(actual - forecast)) / naive_scale(history, 1))
        smapes.append(np.mean(200 * np.abs(actual - forecast) / (np.abs(actual) + np.abs(forecast))))
    assert test["naive2"]["mase"] == pytest.approx(np.mean(mases), rel=1e-4)
    assert test["naive2"]["smape"] == pytest.approx(np.mean(smapes), rel=1e-4)
    for kind in ("network", "baseline"):
        metrics = test[kind]["metrics"]
        assert test["owa"][kind] == pytest.approx(
            0.5 * (metrics["smape"]["value"] / np.mean(smapes)
                   + metrics["mase"]["value"] / np.mean(mases)), rel=1e-4)
    assert '<p id="owa">' in html

    done = run(["dlworkflow", "predict", str(results / "final"),
                str(project / "data" / "raw" / "yearly" / "yearly.tsf")], project)
    assert done.returncode == 0, done.stderr[-2000:]
    frame = pd.read_csv(io.StringIO(done.stdout))
    assert sorted(frame["input"]) == sorted(series)
    steps = frame[[f"step_{k}" for k in range(1, 7)]].to_numpy()
    assert np.isfinite(steps).all()
