"""Unfitted traditional estimators for step 2, by name: what the modalities and tasks offer.

`kind` is what a task predicts from a flat row: a class (`classifier`) or a number
(`regressor`); forecasters take windows. Nothing here reads files or knows a step.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.linear_model import LogisticRegression, RidgeClassifierCV, RidgeCV
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.preprocessing import StandardScaler

CLASSIFIER = "classifier"
REGRESSOR = "regressor"


def _class_weight(settings: Mapping[str, Any]) -> str | None:
    weight = settings.get("class_weight", "none")
    return None if weight in (None, "none") else weight


def standard_baselines(kind: str, settings: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """Scaled flat vectors into logistic regression and k-NN (ridge and k-NN for a
    `regressor`)."""
    neighbours = int(settings.get("knn_neighbors", 5))
    if kind == REGRESSOR:
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


def tfidf_baselines(kind: str, settings: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """Word (and optionally character) TF-IDF into logistic regression (ridge for a
    `regressor`)."""
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
    if kind == REGRESSOR:
        model: Any = RidgeCV(alphas=np.logspace(-3, 3, 13))
    else:
        model = LogisticRegression(C=float(text.get("C", 10.0)), max_iter=2000,
                                   class_weight=_class_weight(settings), random_state=seed)
    return {"tfidf_logreg" if kind != REGRESSOR else "tfidf_ridge":
            Pipeline([("tfidf", features), ("model", model)])}


def series_baselines(kind: str, settings: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """Series classification: 1-NN with Euclidean distance and a ridge classifier."""
    if kind == REGRESSOR:
        return standard_baselines(kind, settings, seed)
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
