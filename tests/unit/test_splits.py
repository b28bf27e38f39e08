"""Split properties: folds partition trainval, groups and duplicates never straddle, strata
hold, time folds are ordered with their gap, test is never in a fold, and it is deterministic."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dlworkflow.errors import ConfigError
from dlworkflow.splits import LeakageFound, enforce_leakage_policy, shared_groups_words
from dlworkflow.tasks import get_task
from dlworkflow.tasks.forecasting import MIN_HISTORY, split_time

CLASSIFICATION, FORECASTING = get_task("classification"), get_task("forecasting")

SETTINGS = {"folds": 5, "test_size": 0.2, "stratify": True, "groups": True, "test": None,
            "horizon": 10, "gap": 0, "on_leakage": "warn"}


@st.composite
def inventories(draw, with_groups: bool | None = None):
    n = draw(st.integers(40, 160))
    classes = draw(st.integers(2, 4))
    labels = draw(st.lists(st.integers(0, classes - 1), min_size=n, max_size=n))
    copies = draw(st.lists(st.integers(0, n - 1), max_size=n // 5))  # planted duplicates
    content = list(range(n))
    for position, source in enumerate(copies):
        content[(source + position + 1) % n] = content[source]
    grouped = draw(st.booleans()) if with_groups is None else with_groups
    groups = ([f"g{draw(st.integers(0, 11))}" for _ in range(n)] if grouped else [None] * n)
    if grouped and len(set(groups)) < 10:
        groups = [f"g{i % 12}" for i in range(n)]
    return pd.DataFrame({"id": [f"item{i:04d}" for i in range(n)],
                         "label": pd.Series([f"c{x}" for x in labels], dtype="string"),
                         "group": pd.Series(groups, dtype="string"),
                         "sha256": [f"{c:064x}" for c in content]})


def _check_partition(splits: pd.DataFrame, folds: int):
    trainval = splits[splits["role"] == "trainval"]
    test = splits[splits["role"] == "test"]
    assert len(trainval) + len(test) == len(splits)
    assert test["fold"].isna().all(), "a test item is in a fold"
    assert trainval["fold"].notna().all()
    assert set(trainval["fold"].astype(int)) == set(range(folds))


HYPOTHESIS = settings(max_examples=25, deadline=None,
                      suppress_health_check=[HealthCheck.too_slow])


@HYPOTHESIS
@given(inventories())
def test_folds_partition_trainval_and_units_never_straddle(inventory):
    splits = CLASSIFICATION.split_items(inventory, SETTINGS, seed=3)
    _check_partition(splits, SETTINGS["folds"])
    grouped = inventory["group"].notna().any()
    unit = splits["group"] if grouped else splits["sha256"]
    assert (splits.groupby(unit)["role"].nunique() == 1).all(), "a unit is in test and trainval"
    trainval = splits[splits["role"] == "trainval"]
    unit = trainval["group"] if grouped else trainval["sha256"]
    assert (trainval.groupby(unit)["fold"].nunique() == 1).all(), "a unit is in two folds"
    report = CLASSIFICATION.leakage_report(splits, SETTINGS)
    if not grouped:
        assert report["leaks"] == 0


@HYPOTHESIS
@given(inventories(with_groups=False))
def test_split_is_deterministic_to_the_byte(inventory):
    first = CLASSIFICATION.split_items(inventory, SETTINGS, seed=11, sample=30)
    second = CLASSIFICATION.split_items(inventory.sample(frac=1, random_state=1), SETTINGS,
                                        seed=11, sample=30)
    pd.testing.assert_frame_equal(first, second)
    buffers = [io.BytesIO(), io.BytesIO()]
    first.to_parquet(buffers[0], index=False)
    second.to_parquet(buffers[1], index=False)
    assert buffers[0].getvalue() == buffers[1].getvalue()


def test_stratification_holds_in_test_and_every_fold():
    rng = np.random.default_rng(0)
    labels = rng.choice(["ham", "spam", "other"], size=2000, p=[0.7, 0.2, 0.1])
    inventory = pd.DataFrame({"id": [f"i{i:05d}" for i in range(2000)],
                              "label": pd.Series(labels, dtype="string"),
                              "group": pd.Series([None] * 2000, dtype="string"),
                              "sha256": [f"{i:064x}" for i in range(2000)]})
    splits = CLASSIFICATION.split_items(inventory, SETTINGS, seed=5)
    overall = splits["label"].value_counts(normalize=True)
    for _, part in splits.groupby(splits["fold"].astype("string").fillna("test")):
        shares = part["label"].value_counts(normalize=True)
        assert (shares - overall).abs().max() < 0.02
    assert abs((splits["role"] == "test").mean() - 0.2) < 0.01


def test_predefined_test_rule_and_sample():
    inventory = pd.DataFrame({
        "id": [f"{d}_{s}_{t}" for d in range(3) for s in "abcdef" for t in range(10)],
        "label": pd.Series([str(d) for d in range(3) for _ in "abcdef" for _ in range(10)],
                           dtype="string"),
        "group": pd.Series([s for _ in range(3) for s in "abcdef" for _ in range(10)],
                           dtype="string"),
        "side_take": [str(t) for _ in range(3) for _ in "abcdef" for t in range(10)]})
    inventory["sha256"] = [f"{i:064x}" for i in range(len(inventory))]
    rule = {**SETTINGS, "test": {"column": "side_take", "values": [0, 1]}}
    splits = CLASSIFICATION.split_items(inventory, rule, seed=1, sample=60)
    test = splits[splits["role"] == "test"]
    assert sorted(test["id"].str.rsplit("_", n=1).str[-1].unique()) == ["0", "1"]
    _check_partition(splits, 5)
    sampled = splits[splits["in_sample"]]
    assert len(sampled) == 60 and (sampled["role"] == "trainval").all()
    assert sampled["label"].value_counts().to_dict() == {"0": 20, "1": 20, "2": 20}
    report = CLASSIFICATION.leakage_report(splits, rule)
    assert len(report["groups_across_test"]) == 6  # the rule splits takes, not speakers
    with pytest.raises(LeakageFound, match="groups_across_test"):
        enforce_leakage_policy(report, "fail", "toy")
    assert shared_groups_words(report) is None  # grouping asked for: those are leaks

    # split.groups: false asks for exactly that (FSDD's conventional test): listed, in words,
    # not counted; a duplicate across the split still is, and `fail` names it alone
    ungrouped = {**rule, "groups": False}
    splits = CLASSIFICATION.split_items(inventory, ungrouped, seed=1, sample=None)
    report = CLASSIFICATION.leakage_report(splits, ungrouped)
    assert len(report["groups_across_test"]) == 6 and len(report["groups_across_folds"]) == 6
    assert report["leaks"] == 0 and report["groups_counted"] is False
    enforce_leakage_policy(report, "fail", "toy")
    assert "6 have items in both test and trainval and 6 in more than one fold" in \
        shared_groups_words(report)
    test_id = splits.loc[splits["role"] == "test", "id"].iloc[0]
    inventory.loc[inventory["id"] == "0_a_9", "sha256"] = \
        inventory.loc[inventory["id"] == test_id, "sha256"].iloc[0]
    splits = CLASSIFICATION.split_items(inventory, ungrouped, seed=1, sample=None)
    report = CLASSIFICATION.leakage_report(splits, ungrouped)
    assert report["leaks"] == 1
    with pytest.raises(LeakageFound, match="duplicates_across_test") as failed:
        enforce_leakage_policy(report, "fail", "toy")
    assert "groups_across" not in str(failed.value)


def test_too_few_groups_for_the_folds_is_a_clear_error():
    inventory = pd.DataFrame({"id": [f"i{i}" for i in range(30)],
                              "label": pd.Series(["a", "b"] * 15, dtype="string"),
                              "group": pd.Series([f"g{i % 3}" for i in range(30)], dtype="string"),
                              "sha256": [f"{i:064x}" for i in range(30)]})
    expected = r"split\.test_size: splitting into 5 parts needs at least 5 independent units"
    with pytest.raises(ConfigError, match=expected):
        CLASSIFICATION.split_items(inventory, SETTINGS, seed=0)


def test_planted_duplicate_across_train_and_test_is_reported():
    inventory = pd.DataFrame({"id": [f"i{i:03d}" for i in range(100)],
                              "label": pd.Series(["a", "b"] * 50, dtype="string"),
                              "group": pd.Series([None] * 100, dtype="string"),
                              "sha256": [f"{i:064x}" for i in range(100)],
                              "side_part": ["test" if i < 20 else "train" for i in range(100)]})
    inventory.loc[50, "sha256"] = inventory.loc[3, "sha256"]  # i050 copies test item i003
    rule = {**SETTINGS, "test": {"column": "side_part", "values": ["test"]}}
    report = CLASSIFICATION.leakage_report(CLASSIFICATION.split_items(inventory, rule, seed=0),
                                           rule)
    assert report["leaks"] == 1
    finding = report["duplicates_across_test"][0]
    assert finding["test"] == ["i003"] and finding["trainval"] == ["i050"]
    with pytest.raises(LeakageFound, match="i050"):
        enforce_leakage_policy(report, "fail", "toy")


@HYPOTHESIS
@given(st.integers(3, 6), st.integers(2, 12), st.integers(0, 5), st.integers(0, 40))
def test_time_folds_are_ordered_with_the_gap_and_test_comes_last(folds, horizon, gap, extra):
    n = (folds + 1) * horizon + gap + horizon + extra + MIN_HISTORY
    stamps = pd.date_range("2000-01-01", periods=n, freq="W-SAT")
    frame = pd.DataFrame({"timestamp": stamps, "value": np.arange(n, dtype=float)})
    settings_ = {**SETTINGS, "folds": folds, "horizon": horizon, "gap": gap}
    splits = split_time({"s": frame}, settings_)
    assert (splits.loc[splits["role"] == "test", "step"] >= n - horizon).all()
    assert splits.loc[splits["role"] == "test", "fold"].isna().all()
    report = FORECASTING.leakage_report(splits, settings_)
    assert report["leaks"] == 0 and report["test_after_trainval"]
    windows = report["windows"]
    assert [w["fold"] for w in windows] == list(range(folds))
    for window in windows:
        assert window["val_start_step"] - window["train_end_step"] == gap + 1
        assert window["val_end_step"] - window["val_start_step"] + 1 == horizon
    ends = [w["val_end_step"] for w in windows]
    assert ends == sorted(ends) and ends[-1] == n - horizon - 1
    # the report's words give the same gap ("0 step(s)" read oddly)
    words = FORECASTING.describe_scheme(settings_, False)
    assert (f"a gap of {gap} step{'s' if gap > 1 else ''} before its window" in words if gap
            else "training only on steps before its window" in words)


def test_too_short_series_for_one_fold_is_a_clear_error():
    frame = pd.DataFrame({"timestamp": pd.date_range("2000", periods=21, freq="D"),
                          "value": np.ones(21)})
    with pytest.raises(ConfigError, match=r"'s' has 11 steps before its test window.*"
                                          r"2 steps before it.*rerun intake"):
        split_time({"s": frame}, {**SETTINGS, "horizon": 10})


def test_each_series_gets_the_folds_it_allows_the_last_one_just_before_its_test():
    """Series of 200, 200, 44 and 25 days, horizon 10, 5 folds: 5, 5, 3 and 1 rolling origins
    (each needs two observed steps before it); every series' last fold ends where its test starts,
    and the leakage proof holds in each, also where a fold has none of its series' steps to
    train on (the short series' first fold: the network learns from the others)."""
    series = {name: pd.DataFrame({"timestamp": pd.date_range("2000", periods=n, freq="D"),
                                  "value": np.arange(float(n))})
              for name, n in (("long", 200), ("long2", 200), ("mid", 44), ("short", 25))}
    settings_ = {**SETTINGS, "folds": 5, "horizon": 10, "gap": 2}
    splits = split_time(series, settings_)
    folds = splits.dropna(subset=["fold"]).groupby("id")["fold"].unique()
    assert sorted(folds["long"]) == [0, 1, 2, 3, 4]
    assert sorted(folds["mid"]) == [2, 3, 4]  # (34 - 2) // 10 = 3
    assert sorted(folds["short"]) == [4]  # (15 - 2) // 10 = 1
    for name, rows in splits.groupby("id"):
        last = rows[rows["fold"] == 4]["step"]
        assert last.max() + 1 == rows.loc[rows["role"] == "test", "step"].min(), name
    report = FORECASTING.leakage_report(splits, settings_)
    assert report["leaks"] == 0 and len(report["windows"]) == 5 + 5 + 3 + 1
    assert report["folds"] == 5
    short = [w for w in report["windows"] if w["series"] == "short"]
    assert short[0]["train_steps"] == 3 and short[0]["ordered"]  # steps 0-2, gap 2


def test_test_start_date_sets_the_test_window():
    frame = pd.DataFrame({"timestamp": pd.date_range("2000-01-01", periods=200, freq="D"),
                          "value": np.ones(200)})
    splits = split_time({"s": frame}, {**SETTINGS, "test_start": "2000-06-01"})
    first_test = splits.loc[splits["role"] == "test", "timestamp"].iloc[0]
    assert first_test.startswith("2000-06-01")


def test_a_predefined_test_rule_reads_as_words():
    from dlworkflow.tasks.items import test_rule_words

    assert test_rule_words({"column": "side_take", "values": [0, 1, 2]}) == \
        "side_take is one of 0, 1, 2"
    assert test_rule_words({"column": "id", "regex": "test-.*"}) == \
        "id matches the pattern test-.*"
    assert test_rule_words({"column": "year", "min": 2019, "max": 2020}) == \
        "year lies between 2019 and 2020"
    assert test_rule_words({"column": "year", "min": 2019}) == "year is at least 2019"


def test_a_windows_loss_weight_makes_its_error_count_on_its_own_scale(co2_csv):
    """Two real co2 windows, one in ppm and one a thousand times larger: the same relative
    forecast error weighs the same in the training loss."""
    import io

    values = pd.read_csv(io.BytesIO(co2_csv))["co2"].interpolate().to_numpy()[:120]
    window, future = values[:104], values[104:116]
    x = np.stack([window, 1000 * window])[..., None]
    weights = FORECASTING.sample_weights({"x": x})
    errors = np.stack([future * 0.01, 1000 * future * 0.01])  # 1 % off, both
    losses = weights * np.mean(np.abs(errors), axis=1)  # the task's loss: absolute error
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    assert weights[0] == pytest.approx(1 / np.mean(np.abs(np.diff(window))), rel=1e-5)
    assert FORECASTING.loss()[0].name == "mean_absolute_error"


def test_short_series_make_fewer_folds_so_the_first_one_can_train():
    """When the median series is too short for `folds` windows and a horizon of training
    before them, the dataset gets fewer folds (two at least), numbered from 0, the last still
    ending where each series' test starts: 5 asked, the median series of 30 steps with
    horizon 6 leaves 24 - 2 - 6 = 16 steps, room for 2."""
    from dlworkflow.tasks.forecasting import folds_for

    series = {f"s{n}": pd.DataFrame({"timestamp": np.arange(n), "value": np.arange(float(n))})
              for n in (14, 20, 30, 30, 49)}
    settings_ = {**SETTINGS, "folds": 5, "horizon": 6, "gap": 0}
    splits = split_time(series, settings_)
    assert sorted(splits["fold"].dropna().unique()) == [0, 1]
    assert sorted(splits.loc[splits["id"] == "s14", "fold"].dropna().unique()) == [1]
    assert folds_for([100, 100], settings_) == 5  # long series keep every fold
    assert folds_for([8, 8], settings_) == 1  # nobody has room for two
