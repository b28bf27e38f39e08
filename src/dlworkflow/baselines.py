"""Step 2: traditional baselines on a flat representation, cross-validated on the split's folds.

Each modality turns its tensors into flat rows (`Modality.flat`) and names its estimators
(`Modality.baselines`); everything learned (scalers, TF-IDF vocabularies, models) is inside a
scikit-learn Pipeline fitted on the fold's training rows only. Test rows are never loaded.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.linear_model import LogisticRegression, RidgeClassifierCV, RidgeCV
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.preprocessing import StandardScaler

from dlworkflow.data import load_arrays
from dlworkflow.evaluate import prediction_frame, score, write_fold_metrics
from dlworkflow.modalities import create_modality

log = logging.getLogger(__name__)


def _class_weight(settings: Mapping[str, Any]) -> str | None:
    weight = settings.get("class_weight", "none")
    return None if weight in (None, "none") else weight


def standard_baselines(task: str, settings: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """Scaled flat vectors into logistic regression and k-NN (ridge and k-NN for regression)."""
    neighbours = int(settings.get("knn_neighbors", 5))
    if task == "regression":
        return {"ridge": Pipeline([("scale", StandardScaler()),
                                   ("model", RidgeCV(alphas=np.logspace(-3, 3, 13)))]),
                "knn": Pipeline([("scale", StandardScaler()),
                                 ("model", KNeighborsRegressor(neighbours))])}
    return {"logreg": Pipeline([("scale", StandardScaler()),
                                ("model", LogisticRegression(C=float(settings.get("C", 1.0)),
                                                             max_iter=2000,
                                                             class_weight=_class_weight(settings),
                                                             random_state=seed))]),
            "knn": Pipeline([("scale", StandardScaler()),
                             ("model", KNeighborsClassifier(neighbours))])}


def tfidf_baselines(task: str, settings: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """Word (and optionally character) TF-IDF into logistic regression (ridge for regression)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    text = settings.get("text") or {}
    parts = [("words", TfidfVectorizer(ngram_range=(1, int(text.get("word_ngrams", 2))),
                                       sublinear_tf=True, min_df=1,
                                       max_features=text.get("max_features")))]
    if text.get("char_ngrams", True):
        parts.append(("chars", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5),
                                               sublinear_tf=True, min_df=2,
                                               max_features=text.get("max_features"))))
    features = FeatureUnion(parts)
    if task == "regression":
        model: Any = RidgeCV(alphas=np.logspace(-3, 3, 13))
    else:
        model = LogisticRegression(C=float(text.get("C", 10.0)), max_iter=2000,
                                   class_weight=_class_weight(settings), random_state=seed)
    return {"tfidf_logreg" if task != "regression" else "tfidf_ridge":
            Pipeline([("tfidf", features), ("model", model)])}


def series_baselines(task: str, settings: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """Series classification: 1-NN with Euclidean distance and a ridge classifier."""
    if task == "regression":
        return standard_baselines(task, settings, seed)
    return {"nn1_euclidean": Pipeline([("model", KNeighborsClassifier(1))]),
            "ridge": Pipeline([("scale", StandardScaler()),
                               ("model", RidgeClassifierCV(alphas=np.logspace(-3, 3, 13)))])}


def _past(x: Any) -> np.ndarray:
    """Forecasting inputs are {"past", "future"} or just the past windows."""
    return x["past"] if isinstance(x, dict) else x


class SeasonalNaive(BaseEstimator, RegressorMixin):
    """Repeat the last `season` observed target values over the horizon (nothing to fit)."""

    def __init__(self, season: int = 1, horizon: int = 1) -> None:
        self.season = season
        self.horizon = horizon

    def fit(self, x: np.ndarray, y: np.ndarray | None = None) -> SeasonalNaive:
        self.fitted_ = True
        return self

    def predict(self, x: Any) -> np.ndarray:
        target = np.asarray(_past(x))[:, :, 0]
        season = min(self.season, target.shape[1])
        last = target[:, -season:]
        steps = np.arange(self.horizon) % season
        return last[:, steps]


class LagRidge(BaseEstimator, RegressorMixin):
    """Ridge on lag features relative to the last observed value, predicting the whole horizon.

    Inputs are the window's past channels (target first) and any known-future covariates;
    working relative to the last value lets one linear model follow a trend or level shift.
    """

    def __init__(self, lags: int | None = None) -> None:
        self.lags = lags

    def _features(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        past = np.asarray(_past(x), dtype=np.float64)
        lags = past.shape[1] if not self.lags else min(self.lags, past.shape[1])
        last = past[:, -1:, 0]
        columns = [past[:, -lags:, 0] - last, past[:, -lags:, 1:].reshape(len(past), -1)]
        if isinstance(x, dict) and x.get("future") is not None:
            columns.append(np.asarray(x["future"], dtype=np.float64).reshape(len(past), -1))
        return np.concatenate(columns, axis=1), last

    def fit(self, x: Any, y: np.ndarray) -> LagRidge:
        features, last = self._features(x)
        self.scaler_ = StandardScaler().fit(features)
        self.model_ = RidgeCV(alphas=np.logspace(-3, 3, 13)).fit(
            self.scaler_.transform(features), np.asarray(y) - last)
        return self

    def predict(self, x: Any) -> np.ndarray:
        features, last = self._features(x)
        return self.model_.predict(self.scaler_.transform(features)) + last


def forecasting_baselines(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Seasonal naive and ridge on lags (season and horizon are set when fitted)."""
    return {"seasonal_naive": SeasonalNaive(), "ridge_lags": LagRidge(settings.get("lags"))}


def fit_predict(estimator: Any, x_train: Any, y_train: np.ndarray, x_valid: Any,
                 classes: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray | None]:
    """Fit on the training rows; predictions and (classifiers) probabilities for x_valid."""
    estimator.fit(x_train, y_train)
    prediction = estimator.predict(x_valid)
    proba = None
    if classes and hasattr(estimator, "predict_proba"):
        # columns in the order of all classes, even when a fold's training part lacks one
        proba = np.zeros((len(prediction), len(classes)))
        proba[:, estimator.classes_] = estimator.predict_proba(x_valid)
    return prediction, proba


def run_baseline_fold(dataset: Mapping[str, Any], settings: Mapping[str, Any],
                      tensor_settings: Mapping[str, Any], choice_path: str, tensors_dir: str,
                      fold: int, seed: int, gap: int, metrics_output: str,
                      predictions_output: str, features_dir: str | None = None) -> dict:
    """Fit every baseline on fold-train rows, score it on the fold's validation rows."""
    choice = json.loads(Path(choice_path).read_text())
    task = dataset["task"]
    modality = create_modality(dataset["modality"], {}, dataset["layout"])
    source = features_dir or tensors_dir
    train = load_arrays(source, fold, "train", gap)
    valid = load_arrays(source, fold, "valid", gap)
    if not len(train["ids"]) or not len(valid["ids"]):
        raise ValueError(f"fold {fold}: {len(train['ids'])} training and {len(valid['ids'])} "
                         "validation rows; every fold needs both")
    classes = train["classes"]
    flat_settings = {**settings, **(tensor_settings.get(dataset["modality"]) or {})}
    estimators = modality.baselines(task, settings, seed)
    if task == "forecasting":  # every forecaster sees the windows and the known future
        x_train = {"past": train["x"], "future": train.get("x_future")}
        x_valid = {"past": valid["x"], "future": valid.get("x_future")}
    else:  # flattened once, shared by every estimator
        x_train = modality.flat(train["x"], flat_settings)
        x_valid = modality.flat(valid["x"], flat_settings)
    models, frames = {}, []
    for name, estimator in estimators.items():
        estimator = clone(estimator)
        if task == "forecasting":
            if isinstance(estimator, SeasonalNaive):
                estimator.set_params(season=int(choice.get("season", 1)),
                                     horizon=train["y"].shape[1])
            prediction, proba = fit_predict(estimator, x_train, train["y"], x_valid, ())
            metrics = score(choice, valid["y"], prediction, history=valid["x"][:, :, 0])
            frames.append(prediction_frame(valid["ids"], fold, name, valid["y"], prediction))
        else:
            prediction, proba = fit_predict(estimator, x_train, train["y"], x_valid, classes)
            if classes:
                y_true = np.asarray(classes)[valid["y"]]
                y_pred = np.asarray(classes)[np.asarray(prediction, dtype=int)]
            else:
                y_true, y_pred = valid["y"], prediction
            metrics = score(choice, y_true, y_pred, proba, classes)
            frames.append(prediction_frame(valid["ids"], fold, name, y_true, y_pred, proba, classes))
        models[name] = {"metrics": metrics, "train_rows": len(train["ids"]),
                        "valid_rows": len(valid["ids"]),
                        "input": "cached embeddings" if features_dir else "tensors"}
        log.info("fold %d %s: %s", fold, name,
                 ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    write_fold_metrics(metrics_output, fold, models)
    pd.concat(frames, ignore_index=True).to_parquet(predictions_output, index=False)
    return models
