"""Every metric the project reports, and the choice of the primary metric before modelling.

One module so that baselines, networks and the final test compute a metric the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm


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

#: seasonal period of a pandas frequency string's base unit (for MASE and the naive forecast)
SEASON_BY_FREQUENCY = {"W": 52, "D": 7, "B": 5, "H": 24, "h": 24, "M": 12, "MS": 12, "ME": 12,
                       "Q": 4, "QS": 4, "QE": 4, "T": 60, "min": 60, "A": 1, "Y": 1, "YS": 1}


def season_length(frequency: str | None) -> int:
    """Seasonal period for a frequency such as 'W-SAT' (52), 'D' (7), 'MS' (12); 1 if unknown."""
    if not frequency:
        return 1
    base = frequency.split("-")[0].lstrip("0123456789")
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


def compute(name: str, y_true: Sequence[Any], y_pred: Sequence[Any] | None = None,
            scores: Sequence[float] | None = None, positive_label: Any = None, beta: float = 1.0,
            history: Sequence[float] | None = None, season: int = 1) -> float:
    """Compute one metric by name; the arguments it does not need are ignored."""
    functions: dict[str, Callable[[], float]] = {
        "accuracy": lambda: skm.accuracy_score(y_true, y_pred),
        "macro_f1": lambda: skm.f1_score(y_true, y_pred, average="macro", zero_division=0),
        "balanced_accuracy": lambda: skm.balanced_accuracy_score(y_true, y_pred),
        "f_beta": lambda: skm.fbeta_score(y_true, y_pred, beta=beta, pos_label=positive_label,
                                          average="binary", zero_division=0),
        "pr_auc": lambda: skm.average_precision_score(
            np.asarray(y_true) == positive_label, scores),
        "roc_auc": lambda: skm.roc_auc_score(np.asarray(y_true) == positive_label, scores),
        "rmse": lambda: float(np.sqrt(skm.mean_squared_error(y_true, y_pred))),
        "mae": lambda: skm.mean_absolute_error(y_true, y_pred),
        "mase": lambda: mase(y_true, y_pred, history if history is not None else y_true, season),
        "smape": lambda: smape(y_true, y_pred),
    }
    if name not in functions:
        raise KeyError(f"unknown metric {name!r}; known: {', '.join(functions)}")
    return float(functions[name]())


def _entry(name: str, **params: Any) -> dict[str, Any]:
    metric = METRICS[name]
    return {"name": name, "greater_is_better": metric.greater_is_better, "needs": metric.needs,
            "description": metric.description, **({"params": params} if params else {})}


def choose_metric(task: str, labels: pd.Series | None, settings: Mapping[str, Any],
                  frequency: str | None = None) -> dict[str, Any]:
    """Pick the primary and secondary metrics from the task and the target's distribution.

    Returns what `intake/metric.json` holds, with a rationale sentence.
    """
    minority_share = float(settings.get("imbalance_share", 0.2))
    beta = float(settings.get("beta", 1.0))
    override = settings.get("metric")
    out: dict[str, Any] = {"task": task}
    if task == "classification":
        counts = labels.astype(str).value_counts()
        counts = counts.sort_values(ascending=False, kind="stable")
        shares = counts / counts.sum()
        out.update(classes=len(counts), class_counts={k: int(v) for k, v in counts.items()},
                   imbalance_ratio=float(counts.iloc[0] / counts.iloc[-1]))
        minority, share = str(shares.index[-1]), float(shares.iloc[-1])
        if len(counts) == 2:
            chosen_positive = settings.get("positive_label")
            if chosen_positive is not None and str(chosen_positive) not in counts.index:
                raise ValueError(f"intake.positive_label: {chosen_positive!r} is not a class "
                                 f"({', '.join(counts.index)})")
            minority = str(chosen_positive) if chosen_positive is not None else minority
            share = float(shares[minority])
            out["positive_label"] = minority
        if len(counts) == 2 and settings.get("ranking"):
            primary, secondary = _entry("roc_auc"), [_entry("pr_auc"), _entry("accuracy")]
            why = ("intake.ranking is true: the scores will be used to rank items, so ROC AUC "
                   "(threshold-free ordering quality) is primary; PR AUC follows the positive "
                   f"class '{minority}'.")
        elif len(counts) == 2 and share < minority_share:
            primary = _entry("f_beta", beta=beta, positive_label=minority)
            secondary = [_entry("pr_auc"), _entry("balanced_accuracy"), _entry("accuracy")]
            why = (f"Imbalanced binary task: '{minority}' is {share:.1%} of items (under "
                   f"intake.imbalance_share {minority_share:.0%}), so always predicting "
                   f"'{shares.index[0]}' would already score {1 - share:.1%} accuracy. "
                   f"F{beta:g} of '{minority}' measures the rare class directly and PR AUC "
                   "summarises it over all thresholds.")
        elif out["imbalance_ratio"] <= 1.5 or share >= minority_share:
            primary, secondary = _entry("accuracy"), [_entry("macro_f1")]
            if len(counts) == 2:
                secondary.append(_entry("roc_auc"))
            why = (f"{len(counts)} classes, roughly balanced (largest/smallest = "
                   f"{out['imbalance_ratio']:.2f}): accuracy is meaningful and easy to read; "
                   "macro-F1 guards against a weak class hiding in the average.")
        else:
            primary, secondary = _entry("macro_f1"), [_entry("balanced_accuracy"),
                                                      _entry("accuracy")]
            why = (f"{len(counts)} classes with imbalance ratio {out['imbalance_ratio']:.1f} "
                   f"(smallest '{minority}' at {share:.1%}): macro-F1 counts every class equally,"
                   " where accuracy would be dominated by the large classes.")
    elif task == "regression":
        primary, secondary = _entry("rmse"), [_entry("mae")]
        why = ("Regression: RMSE is primary (penalises large errors, in the target's units); "
               "MAE is reported beside it as the typical error.")
    elif task == "forecasting":
        season = season_length(frequency)
        out.update(frequency=frequency, season=season)
        primary, secondary = _entry("mase", season=season), [_entry("smape"), _entry("mae")]
        why = (f"Forecasting at frequency {frequency or 'unknown'}: MASE scales the error by "
               f"the seasonal-naive forecast (season {season}), so below 1 beats repeating last "
               "season and scores compare across series; sMAPE is reported as a percentage.")
    else:
        raise ValueError(f"unknown task {task!r}")
    if override:
        if override not in METRICS:
            raise ValueError(f"intake.metric: {override!r} is not one of {', '.join(METRICS)}")
        chosen = primary
        primary = _entry(override, **({"beta": beta, "positive_label": out.get("positive_label")}
                                      if override == "f_beta" else {}))
        secondary = [m for m in (chosen, *secondary) if m["name"] != override]
        why = (f"intake.metric sets {override} as the primary metric (overriding the automatic "
               f"choice, {chosen['name']}). The automatic reasoning was: {why}")
    out.update(primary=primary, secondary=secondary, rationale=why)
    return out


def write_metric_choice(task: str, inventory_path: str, settings: Mapping[str, Any],
                        output: str) -> dict[str, Any]:
    """Choose the metric from the inventory's target and write `intake/metric.json`."""
    import json
    from pathlib import Path

    inventory = pd.read_parquet(inventory_path)
    frequency = None
    if task == "forecasting" and "frequency" in inventory and len(inventory):
        frequency = inventory["frequency"].dropna().astype(str).mode().iloc[0]
    labels = inventory["label"] if task == "classification" else None
    choice = choose_metric(task, labels, settings, frequency)
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    Path(output).write_text(json.dumps(choice, indent=2) + "\n", encoding="utf-8")
    return choice
