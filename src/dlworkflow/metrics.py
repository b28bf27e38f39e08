"""Every metric the project reports, computed one way for baselines, networks and the test:
`score` applies the choice in `intake/metric.json` to one set of predictions, and
`prediction_frame` lays predictions out as every step stores them.

The choice of the primary metric before modelling lives in `dlworkflow.choice` (each task
proposes its candidates).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Metric:
    """A metric: how to compute it, which direction is better, and what it needs."""

    name: str
    greater_is_better: bool
    needs: str  # "labels" (hard predictions), "scores" (positive-class scores), "values"
    description: str


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("accuracy", True, "labels", "share of items predicted correctly"),
    Metric("macro_f1", True, "labels", "F1 averaged over classes, each class counting equally"),
    Metric("balanced_accuracy", True, "labels", "recall averaged over classes"),
    Metric("f_beta", True, "labels", "F-beta of the positive class"),
    Metric("pr_auc", True, "scores", "area under the precision-recall curve (average precision)"),
    Metric("roc_auc", True, "scores", "area under the ROC curve"),
    Metric("rmse", False, "values", "root mean squared error"),
    Metric("mae", False, "values", "mean absolute error"),
    Metric("mase", False, "values", "MAE relative to the in-sample seasonal-naive forecast"),
    Metric("smape", False, "values", "symmetric mean absolute percentage error (0-200)"),
)}

#: how a person reads a metric's name (reports, the closing summary); files keep the names
LABELS = {"accuracy": "accuracy", "macro_f1": "macro-F1", "balanced_accuracy": "balanced accuracy",
          "pr_auc": "PR AUC", "roc_auc": "ROC AUC", "rmse": "RMSE", "mae": "MAE", "mase": "MASE",
          "smape": "sMAPE (%)", "r2": "R²"}


def metric_label(name: str, choice: Mapping[str, Any] | None = None) -> str:
    """A metric for a page: `f_beta` reads "F1 of spam" given the dataset's `metric.json`
    (its beta and positive class), `smape` "sMAPE (%)" (its values are percent, 0-200)."""
    if name == "f_beta" and choice:
        params = (choice.get("primary") or {}).get("params") or {}
        positive = params.get("positive_label") or choice.get("positive_label")
        if positive is not None:
            return f"F{float(params.get('beta', 1.0)):g} of {positive}"
    return LABELS.get(name, name)


#: seasonal period of a pandas frequency string's base unit (for MASE and the naive forecast)
SEASON_BY_FREQUENCY = {"W": 52, "D": 7, "B": 5, "H": 24, "h": 24, "M": 12, "MS": 12, "ME": 12,
                       "Q": 4, "QS": 4, "QE": 4, "T": 60, "min": 60, "A": 1, "Y": 1, "YS": 1}


def season_length(frequency: str | None) -> int:
    """Seasonal period for a frequency such as 'W-SAT' (52), 'D' (7), 'MS' (12); 1 if unknown."""
    if not frequency:
        return 1
    alias = frequency.split("-")[0]
    base = alias.lstrip("0123456789")
    multiple = int(alias[:len(alias) - len(base)] or 1)
    if multiple > 1 and base in ("T", "min"):
        return max(1440 // multiple, 1)  # k-minute data: the daily cycle (48 half-hours)
    return SEASON_BY_FREQUENCY.get(base, 1)


def naive_scale(history: Sequence[float], season: int = 1) -> float:
    """MASE's denominator: mean absolute change of the seasonal-naive forecast on `history`
    (gaps dropped; lag 1 when the history is not longer than a season)."""
    history = np.asarray(history, dtype=float)
    history = history[~np.isnan(history)]
    if len(history) <= season:
        season = 1
    return float(np.mean(np.abs(history[season:] - history[:-season])))


def mase(y_true: Sequence[float], y_pred: Sequence[float], history: Sequence[float],
         season: int = 1) -> float:
    """Mean absolute scaled error against the seasonal-naive forecast on `history`."""
    scale = naive_scale(history, season)
    error = np.mean(np.abs(np.asarray(y_true, float) - np.asarray(y_pred, float)))
    return float(error / scale) if scale > 0 else float("inf")


def smape(y_true: Sequence[float], y_pred: Sequence[float]) -> float:
    """Symmetric MAPE in percent (0-200); pairs where both are zero count as 0."""
    y_true, y_pred = np.asarray(y_true, float), np.asarray(y_pred, float)
    denominator = np.abs(y_true) + np.abs(y_pred)
    ratio = np.divide(2 * np.abs(y_pred - y_true), denominator,
                      out=np.zeros_like(denominator), where=denominator > 0)
    return float(100 * np.mean(ratio))


def label_counts(y_true: Sequence[Any], y_pred: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """(labels, confusion matrix) over the labels present in either sequence, sorted."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    labels, codes = np.unique(np.concatenate([y_true, y_pred]), return_inverse=True)
    k = len(labels)
    pairs = codes[: len(y_true)] * k + codes[len(y_true):]
    return labels, np.bincount(pairs, minlength=k * k).reshape(k, k)


def _from_counts(name: str, y_true: Sequence[Any], y_pred: Sequence[Any], positive_label: Any,
                 beta: float) -> float:
    """The label metrics from a confusion matrix, as scikit-learn defines them (its
    `zero_division=0`; the same ValueErrors for a binary F-beta it cannot compute): the test
    step's bootstrap computes them a thousand times per model, and scikit-learn's input
    checks made that 15 s of a 25-s job."""
    labels, counts = label_counts(y_true, y_pred)
    hits, actual, predicted = np.diag(counts), counts.sum(axis=1), counts.sum(axis=0)
    if name == "accuracy":
        return float(hits.sum() / max(1, counts.sum()))
    if name == "macro_f1":
        return float(np.mean(2 * hits / (actual + predicted)))
    if name == "balanced_accuracy":  # classes only predicted are left out, as in sklearn
        present = actual > 0
        return float(np.mean(hits[present] / actual[present]))
    if len(labels) > 2:
        raise ValueError(f"f_beta: {len(labels)} labels, a binary F-beta needs at most 2")
    if positive_label not in labels:
        if len(labels) > 1:
            raise ValueError(f"f_beta: positive label {positive_label!r} is not among {labels}")
        return 0.0
    at = int(np.flatnonzero(labels == positive_label)[0])
    weight = beta * beta
    denominator = weight * actual[at] + predicted[at]
    return float((1 + weight) * hits[at] / denominator) if denominator else 0.0


def _ranked(name: str, positive: np.ndarray, scores: Sequence[float]) -> float:
    """Average precision and ROC AUC from one sort of the scores (ties grouped), as
    scikit-learn computes them; the same ValueError for ROC AUC with one class present."""
    from scipy.stats import rankdata

    positive = np.asarray(positive, dtype=bool)
    scores = np.asarray(scores, dtype=float)
    found, total = int(positive.sum()), len(positive)
    if name == "roc_auc":
        if found in (0, total):
            raise ValueError("roc_auc: only one class present in y_true")
        ranks = rankdata(scores)  # ties share their mean rank
        return float((ranks[positive].sum() - found * (found + 1) / 2)
                     / (found * (total - found)))
    if not found:
        return 0.0  # recall is undefined; scikit-learn warns and reports 0 too
    order = np.argsort(-scores, kind="mergesort")
    ordered, hits = scores[order], positive[order]
    ends = np.r_[np.flatnonzero(np.diff(ordered)), total - 1]  # last row of each tie group
    true_positives = np.cumsum(hits)[ends]
    precision = true_positives / (ends + 1)
    recall = true_positives / found
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _errors(y_true: Sequence[Any], y_pred: Sequence[Any]) -> np.ndarray:
    """Prediction minus truth, as floats (every output of every row: their mean is
    scikit-learn's average over outputs of the per-output mean)."""
    true, pred = np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)
    if true.size != pred.size:
        raise ValueError(f"{true.shape} targets against {pred.shape} predictions")
    return pred.reshape(true.shape) - true


def compute(name: str, y_true: Sequence[Any], y_pred: Sequence[Any] | None = None,
            scores: Sequence[float] | None = None, positive_label: Any = None, beta: float = 1.0,
            history: Sequence[float] | None = None, season: int = 1) -> float:
    """Compute one metric by name; the arguments it does not need are ignored."""
    if name in ("accuracy", "macro_f1", "balanced_accuracy", "f_beta"):
        return _from_counts(name, y_true, y_pred, positive_label, beta)
    if name in ("pr_auc", "roc_auc"):
        return _ranked(name, np.asarray(y_true) == positive_label, scores)
    functions: dict[str, Callable[[], float]] = {
        "rmse": lambda: float(np.sqrt(np.mean(_errors(y_true, y_pred) ** 2))),
        "mae": lambda: float(np.mean(np.abs(_errors(y_true, y_pred)))),
        "mase": lambda: mase(y_true, y_pred, history if history is not None else y_true, season),
        "smape": lambda: smape(y_true, y_pred),
    }
    if name not in functions:
        raise KeyError(f"unknown metric {name!r}; known: {', '.join(functions)}")
    return float(functions[name]())


def metric_names(choice: Mapping[str, Any]) -> list[str]:
    """The primary metric first, then the secondary ones."""
    return [choice["primary"]["name"], *(m["name"] for m in choice.get("secondary", []))]


def score(choice: Mapping[str, Any], y_true: Sequence[Any], y_pred: Sequence[Any],
          proba: np.ndarray | None = None, classes: Sequence[str] = (),
          history: np.ndarray | None = None,
          scales: np.ndarray | None = None) -> dict[str, float]:
    """Every chosen metric for one set of predictions.

    Classification: labels as strings, `proba` (n, classes) for score-based metrics.
    Forecasting: `y_true`/`y_pred` are (windows, horizon); each window's MASE is its MAE over
    `scales` (the M4's: the seasonal-naive MAE of the series' history before the window, as
    the shards store it) or, without them, over the seasonal-naive MAE of `history` (windows,
    lookback); the windows' MASE values are averaged (one window a series: over series).
    """
    positive = choice.get("positive_label")
    beta = float((choice["primary"].get("params") or {}).get("beta", 1.0))
    season = int(choice.get("season", 1))
    scores = None
    if proba is not None and positive is not None and positive in list(classes):
        scores = np.asarray(proba)[:, list(classes).index(positive)]
    out: dict[str, float] = {}
    for name in metric_names(choice):
        if METRICS[name].needs == "scores" and scores is None:
            continue
        if name == "mase" and scales is not None:
            errors = np.abs(np.asarray(y_true, float) - np.asarray(y_pred, float)).mean(axis=1)
            scale = np.asarray(scales, float)
            out[name] = float(np.mean(np.where(scale > 0, errors / np.where(scale > 0, scale, 1),
                                               np.inf)))
        elif name == "mase" and history is not None:
            values = [compute("mase", t, p, history=h, season=season)
                      for t, p, h in zip(np.asarray(y_true), np.asarray(y_pred), history, strict=True)]
            out[name] = float(np.mean(values))
        else:  # a forecast's (window, step) pairs count one each
            out[name] = compute(name, np.ravel(y_true), np.ravel(y_pred), scores=scores,
                                positive_label=positive, beta=beta, season=season)
    return out


def prediction_frame(ids: Sequence[str], fold: int, model: str, y_true: Any, y_pred: Any,
                     proba: np.ndarray | None = None, classes: Sequence[str] = ()) -> pd.DataFrame:
    """Out-of-fold predictions: one row per item (classification, regression) or per
    (window, horizon step) for forecasting, with class probabilities as p_<class> columns."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.ndim == 2:  # forecasting: long format
        steps = y_true.shape[1]
        return pd.DataFrame({"id": np.repeat(np.asarray(ids), steps), "fold": fold, "model": model,
                             "step": np.tile(np.arange(1, steps + 1), len(ids)),
                             "y_true": y_true.ravel(), "y_pred": y_pred.ravel()})
    frame = pd.DataFrame({"id": np.asarray(ids), "fold": fold, "model": model,
                          "y_true": y_true, "y_pred": y_pred})
    if proba is not None:
        for number, name in enumerate(classes):
            frame[f"p_{name}"] = np.asarray(proba)[:, number]
    return frame
