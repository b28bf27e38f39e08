"""Forecasting many short series: the lookback rule, padded windows, baselines on the observed
past only, and the Monash .tsf reader, on real series (M4 Weekly summed to years, co2)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dlworkflow.choice import choose_metric
from dlworkflow.config import split_settings, validate_params
from dlworkflow.estimators import ETS, Drift, Naive, SeasonalNaive, Theta
from dlworkflow.intake import run_intake
from dlworkflow.tasks.forecasting import plan_windows, resolved_lookback, split_time
from dlworkflow.tensors import padded_past
from tests.helpers.series import write_yearly_tsf, yearly_series


def test_lookback_auto_reads_two_horizons_and_at_least_two_seasons():
    assert resolved_lookback("auto", 6, 1)[0] == 12  # yearly, the M4's horizon
    assert resolved_lookback("auto", 48, 24)[0] == 96  # a daily season, frequency unknown
    assert resolved_lookback("auto", 48, 24, "h")[0] == 168  # hourly: a whole week
    assert resolved_lookback("auto", 48, 48, "30min")[0] == 96  # half-hours: two days
    assert resolved_lookback("auto", 13, 52)[0] == 104  # weekly with its yearly cycle
    assert resolved_lookback(30, 6, 1) == (30, "tensors.timeseries.lookback")
    choice = choose_metric("forecasting", None, {"task": {"horizon": 48, "lookback": "auto"}}, "H")
    assert (choice["season"], choice["lookback"]) == (24, 168)
    assert choice["lookback_rule"].startswith("auto: two horizons (96)")
    assert choice["lookback_rule"].endswith("a week of hourly data (168)")


def test_a_short_series_gets_every_validation_and_test_window_with_its_past_padded():
    """A 17-year series, horizon 6, lookback 12, 5 folds asked: one validation window (steps 5-10,
    5 years before it) and the test window; their inputs are the observed years with the
    first year repeated before them, marked unobserved."""
    values = yearly_series(40)
    name, series = next((k, v) for k, v in values.items() if len(v) == 17)
    frame = pd.DataFrame({"timestamp": np.arange(17), "value": series})
    splits = split_time({name: frame}, {"folds": 5, "horizon": 6, "gap": 0})
    assert sorted(splits["fold"].dropna().unique()) == [0]  # the one fold it has room for
    plan = plan_windows(splits, lookback=12, horizon=6, shard_size=10)
    assert plan.loc[plan["fold"].notna(), "target_start"].tolist() == [5]
    assert plan.loc[plan["role"] == "test", "target_start"].max() == 11  # the held-out one
    # too short for a whole window before its validation: it trains from its third year on
    assert plan["target_start"].min() == 2
    past, mask, observed = padded_past(series[:, None], 5, 12, "interpolate")
    assert observed == 5 and past.shape == (12, 1)
    assert np.allclose(past[:7, 0], series[0]) and np.allclose(past[7:, 0], series[:5])
    assert not mask[:7].any() and mask[7:].all()


@pytest.mark.parametrize("model", [Naive, SeasonalNaive, Drift, Theta, ETS])
def test_the_baselines_forecast_the_observed_past_not_its_padding(model):
    """The same 9 observed years, given alone or padded to 24 steps with `length` 9: the
    same forecast (drift's slope and Theta's and ETS's fits would bend on the padding)."""
    series = next(v for v in yearly_series(40).values() if len(v) >= 9)[:9]
    alone = series.reshape(1, 9, 1)
    padded = np.concatenate([np.repeat(series[:1], 15), series]).reshape(1, 24, 1)
    fitted = model(season=4, horizon=6).fit(alone)
    expected = fitted.predict(alone)
    assert np.allclose(fitted.predict({"past": padded, "length": np.array([9])}), expected)
    if model is Drift:
        assert not np.allclose(fitted.predict(padded), expected)


def test_tsf_files_are_read_with_their_frequency_and_horizon(tmp_path):
    """Forty M4 Weekly series summed to years, written as a Monash .tsf file with two broken
    lines: every series is an item named by its series_name with frequency Y (season 1),
    the broken lines are rejected with their line numbers, series too short for horizon 6
    are set aside with their lengths, counts reconcile, and the split takes @horizon."""
    series = yearly_series(40)
    root = tmp_path / "data" / "raw" / "yearly"
    write_yearly_tsf(root / "yearly.tsf", series,
                     extra="BROKEN:1,2,3\nW_EMPTY:1990-01-01 00-00-00:?,?\n")
    params = validate_params({"seed": 0, "datasets": {"yearly": {
        "modality": "timeseries", "task": "forecasting", "root": "data/raw/yearly",
        "layout": {"kind": "tsf"}}}}, base_dir=tmp_path)
    dataset = params["datasets"]["yearly"]
    split = split_settings({**params, "datasets": {"yearly": {**dataset,
                                                              "root": str(root)}}}, "yearly")
    assert split["horizon"] == 6  # from @horizon, not the default 52
    intake = {**params["intake"], "task": {"horizon": 6, "gap": 0, "test_start": None,
                                           "lookback": "auto"}}
    result = run_intake("yearly", dataset, intake, base_dir=tmp_path, progress=False)
    rejected = result.rejected.set_index("id")
    short = {name for name, values in series.items() if len(values) < 14}
    assert short and set(rejected.index) == short | {"row-000051", "W_EMPTY"}
    assert (rejected.loc[sorted(short), "code"] == "series_too_short").all()
    assert rejected.loc["row-000051", "reason"].startswith("line 51: 2 colon-separated fields")
    assert sorted(result.inventory["id"]) == sorted(set(series) - short)
    assert result.counts["found"] == 42 == result.counts["accepted"] + result.counts["rejected"]
    assert set(result.inventory["frequency"]) == {"Y"}
    choice = choose_metric("forecasting", None, intake, "Y")
    assert (choice["season"], choice["lookback"]) == (1, 12)


def test_a_file_that_is_not_tsf_is_named(tmp_path):
    root = tmp_path / "data" / "raw" / "bad"
    root.mkdir(parents=True)
    (root / "bad.tsf").write_text("@relation x\n1,2,3\n")
    params = validate_params({"seed": 0, "datasets": {"bad": {
        "modality": "timeseries", "task": "forecasting", "root": "data/raw/bad",
        "layout": {"kind": "tsf"}}}}, base_dir=tmp_path)
    result = run_intake("bad", params["datasets"]["bad"], params["intake"], base_dir=tmp_path,
                        progress=False)
    (row,) = result.rejected.itertuples()
    assert row.path.endswith("bad.tsf") and "not a .tsf file" in row.reason


def test_series_of_unknown_frequency_get_season_one(tmp_path):
    """A wide file with no timestamps and no stated frequency (the M4 Weekly files as
    shipped): the metric is chosen with season 1, as the M4 scores weekly data."""
    from dlworkflow.choice import write_metric_choice
    from tests.conftest import SHARED_DATA

    root = tmp_path / "data" / "raw" / "weekly"
    root.mkdir(parents=True)
    table = pd.read_csv(SHARED_DATA / "m4" / "Weekly-train.csv", nrows=12)
    table.to_csv(root / "weekly.csv", index=False)
    params = validate_params({"seed": 0, "datasets": {"weekly": {
        "modality": "timeseries", "task": "forecasting", "root": "data/raw/weekly",
        "layout": {"kind": "wide_csv", "file": "weekly.csv", "id_column": "V1"}}}},
        base_dir=tmp_path)
    intake = {**params["intake"], "task": {"horizon": 13, "gap": 0, "test_start": None,
                                           "lookback": "auto"}}
    result = run_intake("weekly", params["datasets"]["weekly"], intake, base_dir=tmp_path,
                        progress=False)
    assert len(result.inventory) == 12 and result.inventory["frequency"].isna().all()
    result.inventory.to_parquet(tmp_path / "inventory.parquet")
    choice = write_metric_choice("forecasting", str(tmp_path / "inventory.parquet"), intake,
                                 str(tmp_path / "metric.json"))
    assert (choice["frequency"], choice["season"], choice["lookback"]) == (None, 1, 26)


def test_naive2_reproduces_the_m4_tables():
    """The M4's Naive2 (seasonal adjustment after its 90 % autocorrelation test, then the
    last adjusted value), fitted on each series' whole training file and scored on the
    competition's test file: MASE and sMAPE equal the published table (Makridakis et al.
    2020) for Hourly (season 24: 2.395, 18.383) and Weekly (season 1: 2.777, 9.161), so the
    seasonal adjustment ETS and Theta share is the competition's."""
    from dlworkflow.estimators import Naive2
    from dlworkflow.metrics import naive_scale
    from tests.conftest import SHARED_DATA

    for frequency, horizon, season, published in (("Hourly", 48, 24, (2.395, 18.383)),
                                                  ("Weekly", 13, 1, (2.777, 9.161))):
        train = pd.read_csv(SHARED_DATA / "m4" / f"{frequency}-train.csv")
        test = pd.read_csv(SHARED_DATA / "m4" / f"{frequency}-test.csv").set_index("V1")
        model = Naive2(season=season, horizon=horizon)
        mase, smape = [], []
        for row in train.itertuples(index=False):
            history = np.asarray(row[1:], dtype=float)
            history = history[~np.isnan(history)]
            actual = test.loc[row[0]].to_numpy(dtype=float)[:horizon]
            forecast = model._one(history)
            mase.append(np.mean(np.abs(actual - forecast)) / naive_scale(history, season))
            smape.append(np.mean(200 * np.abs(actual - forecast)
                                 / (np.abs(actual) + np.abs(forecast))))
        assert (round(float(np.mean(mase)), 3), round(float(np.mean(smape)), 3)) == published


def test_shards_hold_whole_series_and_a_bounded_number_of_windows(monkeypatch):
    """Series in name order fill a shard up to `shard_size` series or WINDOWS_PER_SHARD
    windows; a series with more windows than that fills one alone; no series is cut."""
    from dlworkflow.tasks import forecasting

    values = yearly_series(60)
    frames = {name: pd.DataFrame({"timestamp": np.arange(len(v)), "value": v})
              for name, v in values.items() if len(v) >= 14}
    splits = split_time(frames, {"folds": 2, "horizon": 6, "gap": 0})
    monkeypatch.setattr(forecasting, "WINDOWS_PER_SHARD", 30)
    plan = plan_windows(splits, lookback=12, horizon=6, shard_size=5)
    trainval = plan[plan["role"] == "trainval"]
    per_series = trainval.groupby("series")["shard"].nunique()
    assert (per_series == 1).all()  # whole series
    windows = plan.groupby("series").size()
    for _, shard in trainval.groupby("shard"):
        members = shard["series"].unique()
        assert len(members) <= 5
        assert windows[members].sum() <= 30 or len(members) == 1
    assert windows.max() > 30 and trainval["shard"].nunique() > len(frames) / 5
    numbers = [int(s[-5:]) for s in plan.sort_values("series")["shard"]]
    assert numbers == sorted(numbers)  # name order
