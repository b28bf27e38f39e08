"""Metric choice on hand-made target distributions, and the metric functions themselves."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import fbeta_score

from dlworkflow.choice import choose_metric
from dlworkflow.metrics import compute, mase, metric_label, season_length, smape


def labels(**counts: int) -> pd.Series:
    return pd.Series([k for k, n in counts.items() for _ in range(n)])


def test_balanced_multiclass_gets_accuracy_and_macro_f1():
    choice = choose_metric("classification", labels(a=50, b=48, c=52), {})
    assert choice["primary"]["name"] == "accuracy"
    assert [m["name"] for m in choice["secondary"]] == ["macro_f1"]
    assert "roughly balanced" in choice["rationale"]


def test_five_percent_positive_gets_f_beta_of_the_rare_class_and_pr_auc():
    choice = choose_metric("classification", labels(ok=950, fraud=50), {"beta": 2})
    assert choice["primary"]["name"] == "f_beta"
    assert choice["primary"]["params"] == {"beta": 2.0, "positive_label": "fraud"}
    assert choice["positive_label"] == "fraud"
    assert "pr_auc" in [m["name"] for m in choice["secondary"]]
    assert "5.0%" in choice["rationale"] and "95.0% accuracy" in choice["rationale"]
    # pages name it as the rationale does; the files keep `f_beta`
    assert metric_label("f_beta", choice) == "F2 of fraud" and metric_label("f_beta") == "f_beta"
    assert metric_label("balanced_accuracy", choice) == "balanced accuracy"


def test_threshold_for_imbalance_is_configurable():
    balanced_enough = choose_metric("classification", labels(a=700, b=300),
                                    {"imbalance_share": 0.2})
    assert balanced_enough["primary"]["name"] == "accuracy"
    imbalanced = choose_metric("classification", labels(a=700, b=300), {"imbalance_share": 0.35})
    assert imbalanced["primary"]["name"] == "f_beta"


def test_imbalanced_multiclass_gets_macro_f1():
    choice = choose_metric("classification", labels(a=500, b=100, c=20), {})
    assert choice["primary"]["name"] == "macro_f1"


def test_ranking_gets_roc_auc():
    choice = choose_metric("classification", labels(a=90, b=10), {"ranking": True})
    assert choice["primary"]["name"] == "roc_auc"


def test_regression_and_forecasting():
    assert choose_metric("regression", None, {})["primary"]["name"] == "rmse"
    weekly = choose_metric("forecasting", None, {}, frequency="W-SAT")
    assert weekly["primary"] == {**weekly["primary"], "name": "mase", "params": {"season": 52}}
    assert [m["name"] for m in weekly["secondary"]][:1] == ["smape"]
    assert choose_metric("forecasting", None, {}, frequency="MS")["season"] == 12
    assert choose_metric("forecasting", None, {}, frequency=None)["season"] == 1


def test_override_says_so_and_keeps_the_automatic_choice_as_secondary():
    choice = choose_metric("classification", labels(ok=950, fraud=50), {"metric": "accuracy"})
    assert choice["primary"]["name"] == "accuracy"
    assert choice["rationale"].startswith("intake.metric sets accuracy")
    names = [m["name"] for m in choice["secondary"]]
    assert names[0] == "f_beta" and "accuracy" not in names


def test_positive_label_must_be_a_class():
    with pytest.raises(ValueError, match=r"intake\.positive_label"):
        choose_metric("classification", labels(a=9, b=1), {"positive_label": "c"})
    chosen = choose_metric("classification", labels(a=95, b=5), {"positive_label": "a"})
    assert chosen["positive_label"] == "a"


def test_metric_functions_match_their_definitions():
    history = np.array([1.0, 3, 2, 4, 3, 5, 4, 6])
    truth, forecast = np.array([5.0, 7]), np.array([6.0, 6])
    naive_error = np.mean(np.abs(history[2:] - history[:-2]))
    assert mase(truth, forecast, history, season=2) == pytest.approx(1.0 / naive_error)
    assert smape([100, 0], [110, 0]) == pytest.approx(100 * (2 * 10 / 210) / 2)
    assert season_length("W-SAT") == 52 and season_length("2h") == 24
    y = ["a", "b", "b", "a", "b"]
    p = ["a", "b", "a", "a", "b"]
    assert compute("f_beta", y, p, positive_label="b", beta=2) == pytest.approx(
        fbeta_score(y, p, beta=2, pos_label="b"))
    assert compute("accuracy", y, p) == pytest.approx(0.8)
    assert compute("pr_auc", y, scores=[0.1, 0.9, 0.8, 0.2, 0.7], positive_label="b") == 1.0
    with pytest.raises(KeyError, match="unknown metric"):
        compute("auc", y, p)


def test_real_sms_spam_collection_gets_f1_of_spam(demo_raw):
    from tests.conftest import SHARED_DATA

    source = SHARED_DATA / "sms_spam" / "SMSSpamCollection"
    if not source.is_file():
        pytest.skip("../shared/data is not present on this machine")
    labels_ = pd.Series([line.split("\t", 1)[0] for line in source.read_text().splitlines()])
    choice = choose_metric("classification", labels_, {})
    assert choice["primary"]["name"] == "f_beta"
    assert choice["positive_label"] == "spam"
    assert "13.4%" in choice["rationale"]
    assert metric_label(choice["primary"]["name"], choice) == "F1 of spam"


def test_label_and_ranking_metrics_equal_scikit_learns_on_random_resamples():
    """The fast paths the test step's bootstrap runs a thousand times per model agree with
    scikit-learn, including labels only predicted, one-class resamples and tied scores."""
    import warnings

    from sklearn import metrics as skm

    rng = np.random.default_rng(0)
    for trial in range(300):
        n, k = int(rng.integers(1, 40)), int(rng.integers(1, 5))
        names = np.array(["ham", "spam", "x", "y", "z"])[:k]
        y_true, y_pred = rng.choice(names, n), rng.choice(names, n)
        scores = np.round(rng.random(n), 1)  # ties on purpose
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert compute("accuracy", y_true, y_pred) == pytest.approx(
                skm.accuracy_score(y_true, y_pred))
            assert compute("macro_f1", y_true, y_pred) == pytest.approx(
                skm.f1_score(y_true, y_pred, average="macro", zero_division=0))
            assert compute("balanced_accuracy", y_true, y_pred) == pytest.approx(
                skm.balanced_accuracy_score(y_true, y_pred))
            if len(set(y_true) | set(y_pred)) <= 2 and (trial % 2 or "spam" in y_true):
                try:
                    expected = skm.fbeta_score(y_true, y_pred, beta=2, pos_label="spam",
                                               average="binary", zero_division=0)
                except ValueError:
                    with pytest.raises(ValueError):
                        compute("f_beta", y_true, y_pred, positive_label="spam", beta=2)
                else:
                    assert compute("f_beta", y_true, y_pred, positive_label="spam",
                                   beta=2) == pytest.approx(expected)
            positive = y_true == "spam"
            if 0 < positive.sum() < n:
                assert compute("roc_auc", y_true, scores=scores, positive_label="spam") == \
                    pytest.approx(skm.roc_auc_score(positive, scores))
                assert compute("pr_auc", y_true, scores=scores, positive_label="spam") == \
                    pytest.approx(skm.average_precision_score(positive, scores))
            else:
                with pytest.raises(ValueError):
                    compute("roc_auc", y_true, scores=scores, positive_label="spam")
    with pytest.raises(ValueError, match="binary F-beta"):
        compute("f_beta", ["a", "b", "c"], ["a", "b", "b"], positive_label="a")


def test_error_metrics_equal_scikit_learns_for_one_and_many_outputs(co2_csv):
    """rmse and mae without scikit-learn (the summary jobs that score them need not import
    it): a naive forecast of the real CO2 series, one step and a 52-step horizon a row."""
    import io

    from sklearn import metrics as skm

    values = pd.read_csv(io.BytesIO(co2_csv)).iloc[:, 1].interpolate().to_numpy()
    truth, naive = values[52:], values[:-52]
    horizons = np.lib.stride_tricks.sliding_window_view(values, 52)
    many_true, many_pred = horizons[52:], horizons[:-52]
    for y_true, y_pred in ((truth, naive), (many_true, many_pred), (truth, naive[:, None])):
        assert compute("rmse", y_true, y_pred) == pytest.approx(
            np.sqrt(skm.mean_squared_error(y_true, y_pred.reshape(np.shape(y_true)))), rel=1e-12)
        assert compute("mae", y_true, y_pred) == pytest.approx(
            skm.mean_absolute_error(y_true, y_pred.reshape(np.shape(y_true))), rel=1e-12)
    assert compute("rmse", truth, naive) > compute("mae", truth, naive) > 0
    with pytest.raises(ValueError, match="targets against"):
        compute("mae", truth, naive[1:])
