"""Scoring predictions with the chosen metrics, and cross-validation summaries (mean ± std).

Baselines, networks and the final test all score through `score`, so a number means the same
thing wherever it appears. Metric names and directions come from `intake/metric.json`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dlworkflow.metrics import METRICS, compute


def metric_names(choice: Mapping[str, Any]) -> list[str]:
    """The primary metric first, then the secondary ones."""
    return [choice["primary"]["name"], *(m["name"] for m in choice.get("secondary", []))]


def score(choice: Mapping[str, Any], y_true: Sequence[Any], y_pred: Sequence[Any],
          proba: np.ndarray | None = None, classes: Sequence[str] = (),
          history: np.ndarray | None = None) -> dict[str, float]:
    """Every chosen metric for one set of predictions.

    Classification: labels as strings, `proba` (n, classes) for score-based metrics.
    Forecasting: `y_true`/`y_pred` are (windows, horizon) and `history` (windows, lookback)
    gives each window's own MASE scale; the windows' MASE values are averaged.
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
        if name == "mase" and history is not None:
            values = [compute("mase", t, p, history=h, season=season)
                      for t, p, h in zip(np.asarray(y_true), np.asarray(y_pred), history, strict=True)]
            out[name] = float(np.mean(values))
        elif choice["task"] == "forecasting":
            out[name] = compute(name, np.ravel(y_true), np.ravel(y_pred), season=season)
        else:
            out[name] = compute(name, np.asarray(y_true), np.asarray(y_pred), scores=scores,
                                positive_label=positive, beta=beta)
    return out


def summarize_folds(per_fold: Mapping[int, Mapping[str, float]]) -> dict[str, dict[str, Any]]:
    """{metric: {mean, std, folds}} over folds (std with ddof=1, as scikit-learn reports CV)."""
    metrics = sorted({m for scores in per_fold.values() for m in scores})
    out = {}
    for name in metrics:
        values = [float(per_fold[k][name]) for k in sorted(per_fold) if name in per_fold[k]]
        out[name] = {"mean": float(np.mean(values)),
                     "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                     "folds": values}
    return out


def best_model(summary: Mapping[str, Mapping[str, Any]], primary: str) -> str:
    """The model with the best mean primary metric."""
    better = max if METRICS[primary].greater_is_better else min
    return better(summary, key=lambda name: summary[name][primary]["mean"])


def fold_outputs_to_summary(kind: str, choice_path: str, fold_metrics: Sequence[str],
                            fold_predictions: Sequence[str], oof_output: str, summary_output: str,
                            extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Gather per-fold metrics and predictions into `oof.parquet` and `summary.json`."""
    choice = json.loads(Path(choice_path).read_text())
    primary = choice["primary"]["name"]
    per_model: dict[str, dict[int, dict[str, float]]] = {}
    details: dict[str, dict[int, dict[str, Any]]] = {}
    for path in fold_metrics:
        payload = json.loads(Path(path).read_text())
        fold = int(payload["fold"])
        for model, entry in payload["models"].items():
            per_model.setdefault(model, {})[fold] = entry["metrics"]
            details.setdefault(model, {})[fold] = {k: v for k, v in entry.items() if k != "metrics"}
    oof = pd.concat([pd.read_parquet(p) for p in fold_predictions], ignore_index=True)
    Path(oof_output).parent.mkdir(parents=True, exist_ok=True)
    oof.to_parquet(oof_output, index=False)
    models = {name: summarize_folds(folds) for name, folds in per_model.items()}
    summary: dict[str, Any] = {
        "kind": kind, "primary": primary,
        "greater_is_better": METRICS[primary].greater_is_better,
        "folds": len(fold_metrics), "oof_rows": len(oof), "models": models,
        "best": best_model(models, primary),
        "fold_details": {m: {str(k): v for k, v in d.items() if v} for m, d in details.items()},
    }
    summary["headline"] = {
        "model": summary["best"],
        f"{primary}_mean": models[summary["best"]][primary]["mean"],
        f"{primary}_std": models[summary["best"]][primary]["std"],
    }
    summary.update(extra or {})
    Path(summary_output).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def write_fold_metrics(path: str, fold: int, models: Mapping[str, Mapping[str, Any]]) -> None:
    """`<kind>/fold-<k>/metrics.json`: {fold, models: {name: {metrics, ...details}}}."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps({"fold": fold, "models": models}, indent=2) + "\n")


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


def network_summary(choice_path: str, fold_metrics: Sequence[str], fold_predictions: Sequence[str],
                    baseline_summary: str, oof_output: str, summary_output: str) -> dict[str, Any]:
    """The network's CV summary, its best epoch per fold, and the comparison with the baseline."""
    baseline = json.loads(Path(baseline_summary).read_text())
    primary = baseline["primary"]
    best_name = baseline["best"]
    reference = baseline["models"][best_name][primary]
    summary = fold_outputs_to_summary("nn", choice_path, fold_metrics, fold_predictions,
                                      oof_output, summary_output)
    network = summary["models"][summary["best"]][primary]
    sign = 1 if summary["greater_is_better"] else -1
    difference = network["mean"] - reference["mean"]
    beats = sign * difference > 0
    epochs = [d.get("best_epoch") for d in summary["fold_details"][summary["best"]].values()]
    verdict = (f"The network ({summary['best']}) {'beats' if beats else 'does not beat'} the best "
               f"traditional baseline ({best_name}) on {primary}: {network['mean']:.4f} ± "
               f"{network['std']:.4f} against {reference['mean']:.4f} ± {reference['std']:.4f} "
               f"(difference {difference:+.4f}).")
    summary.update(best_epochs=epochs, baseline={"model": best_name, primary: reference},
                   beats_baseline=bool(beats), verdict=verdict)
    summary["headline"]["baseline_" + primary + "_mean"] = reference["mean"]
    Path(summary_output).write_text(json.dumps(summary, indent=2) + "\n")
    return summary
