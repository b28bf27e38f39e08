"""Figures for the reports, as inline data URIs: helpers that turn matplotlib figures and
raw bytes into `data:` URIs, and the charts the tasks draw (confusion, ROC/PR, calibration,
forecasts, predicted against true)."""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd


def _pyplot():
    """matplotlib, imported on first use: jobs that draw nothing do not pay ~0.5 s for it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def data_uri(data: bytes, mime: str) -> str:
    """`data:<mime>;base64,...` for embedding in a self-contained HTML file."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def figure_uri(figure, dpi: int = 80) -> str:
    """Render a matplotlib figure as an inline PNG data URI and close it."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    _pyplot().close(figure)
    return data_uri(buffer.getvalue(), "image/png")


def new_figure(width: float = 4.0, height: float = 2.6):
    """A figure and axes with the report's style."""
    figure, axes = _pyplot().subplots(figsize=(width, height))
    axes.spines[["top", "right"]].set_visible(False)
    return figure, axes


def new_panels(count: int, width: float = 4.0, height: float = 2.0):
    """A figure with `count` side-by-side axes."""
    figure, axes = _pyplot().subplots(1, count, figsize=(width, height))
    return figure, list(axes) if count > 1 else [axes]


def confusion_figure(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str]) -> str:
    """Row-normalised confusion matrix with counts."""
    from sklearn.metrics import confusion_matrix

    labels = list(classes)
    matrix = confusion_matrix(y_true, y_pred, labels=labels)
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = max(3.0, 0.45 * len(labels) + 1.5)
    figure, axes = new_figure(size, size)
    axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    axes.set_xticks(range(len(labels)), labels, fontsize=7, rotation=45, ha="right")
    axes.set_yticks(range(len(labels)), labels, fontsize=7)
    axes.set_xlabel("predicted", fontsize=8)
    axes.set_ylabel("true", fontsize=8)
    if len(labels) <= 20:
        for i in range(len(labels)):
            for j in range(len(labels)):
                if matrix[i, j]:
                    axes.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=6,
                              color="white" if shares[i, j] > 0.5 else "black")
    return figure_uri(figure)


def curve_figures(y_true: np.ndarray, scores: np.ndarray, positive: str) -> list[dict[str, str]]:
    """ROC and precision-recall curves of the positive class."""
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

    truth = y_true == positive
    if truth.all() or not truth.any():
        return []
    fpr, tpr, _ = roc_curve(truth, scores)
    figure, axes = new_figure(3.2, 3.0)
    axes.plot(fpr, tpr, color="#4c78a8")
    axes.plot([0, 1], [0, 1], color="#bbb", ls=":")
    axes.set_title(f"ROC, AUC {roc_auc_score(truth, scores):.3f}", fontsize=9)
    axes.set_xlabel("false positive rate", fontsize=8)
    axes.set_ylabel("true positive rate", fontsize=8)
    roc = figure_uri(figure)
    precision, recall, _ = precision_recall_curve(truth, scores)
    figure, axes = new_figure(3.2, 3.0)
    axes.plot(recall, precision, color="#f58518")
    axes.axhline(truth.mean(), color="#bbb", ls=":")
    axes.set_title(f"precision-recall, AP {average_precision_score(truth, scores):.3f}",
                   fontsize=9)
    axes.set_xlabel(f"recall of {positive}", fontsize=8)
    axes.set_ylabel("precision", fontsize=8)
    return [{"title": "ROC", "uri": roc}, {"title": "PR", "uri": figure_uri(figure)}]


def calibration_figure(y_true: np.ndarray, proba: np.ndarray, classes: Sequence[str],
                       bins: int = 10) -> tuple[str, float]:
    """Reliability diagram of the top-class confidence, and the expected calibration error."""
    confidence = proba.max(axis=1)
    correct = np.asarray(classes)[proba.argmax(axis=1)] == y_true
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges) - 1, 0, bins - 1)
    figure, axes = new_figure(3.2, 3.0)
    axes.plot([0, 1], [0, 1], color="#bbb", ls=":")
    error = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            accuracy, mean_conf = correct[members].mean(), confidence[members].mean()
            error += members.mean() * abs(accuracy - mean_conf)
            axes.bar(edges[b], accuracy, width=1 / bins, align="edge", color="#4c78a8",
                     alpha=0.3 + 0.7 * members.mean(), edgecolor="white")
    axes.set_title(f"calibration, ECE {error:.3f}", fontsize=9)
    axes.set_xlabel("confidence of the predicted class", fontsize=8)
    axes.set_ylabel("share correct", fontsize=8)
    return figure_uri(figure), float(error)


def _forecast_axes(axes: Any, past: np.ndarray, rows: pd.DataFrame) -> None:
    """One window on `axes`: its observed past, the actual values and each model's forecast."""
    past = np.asarray(past, dtype=float)
    axes.plot(np.arange(-len(past) + 1, 1), past, color="#555", lw=1, label="past")
    for number, (model, part) in enumerate(rows.groupby("model", sort=False)):
        if number == 0:
            axes.plot(part["step"], part["y_true"], color="black", lw=1.6, label="actual")
        axes.plot(part["step"], part["y_pred"], lw=1.4, ls="--" if number else "-", label=model)
    axes.axvline(0.5, color="#bbb", ls=":")
    axes.set_xlabel("steps from the forecast origin", fontsize=8)
    axes.tick_params(labelsize=7)
    axes.spines[["top", "right"]].set_visible(False)


def forecast_figure(history: np.ndarray, frame: pd.DataFrame) -> str:
    """The held-out horizon: the lookback, the actual values and each model's forecast."""
    figure, axes = new_figure(6.5, 3.0)
    _forecast_axes(axes, history, frame[frame["id"] == frame["id"].iloc[0]])
    axes.legend(fontsize=7, frameon=False)
    return figure_uri(figure)


def forecast_panels(panels: Sequence[tuple[str, np.ndarray, pd.DataFrame]]) -> str:
    """Several held-out windows side by side, each (title, observed past, its rows of every
    model's forecast): the best, median and worst series of a many-series set."""
    figure, axes = new_panels(len(panels), width=3.3 * len(panels), height=2.8)
    for number, (title, past, rows) in enumerate(panels):
        _forecast_axes(axes[number], past, rows)
        axes[number].set_title(title, fontsize=8)
    axes[0].legend(fontsize=7, frameon=False)
    figure.tight_layout()
    return figure_uri(figure)


def mase_distribution(values: Sequence[float], model: str) -> str:
    """Each series' test MASE for the shipped model: a histogram on a log scale (the
    spread across series is multiplicative), with the median and 1 (seasonal naive's level)
    marked."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values) & (values > 0)]
    figure, axes = new_figure(5.0, 2.6)
    if len(values):
        bins = np.logspace(np.log10(values.min()), np.log10(values.max()) + 1e-9,
                           max(5, min(30, len(values) // 4)))
        axes.hist(values, bins=bins, color="#4c78a8", alpha=0.8)
        axes.set_xscale("log")
        median = float(np.median(values))
        axes.axvline(median, color="black", lw=1.2, label=f"median {median:.3g}")
        axes.axvline(1.0, color="#e45756", ls=":", label="seasonal naive (1)")
        axes.legend(fontsize=7, frameon=False)
    axes.set_title(f"test MASE per series, {model} ({len(values)} series)", fontsize=9)
    axes.set_xlabel("MASE (log scale)", fontsize=8)
    axes.set_ylabel("series", fontsize=8)
    axes.tick_params(labelsize=7)
    return figure_uri(figure)


def regression_figure(frame: pd.DataFrame) -> str:
    """Predicted against true values on the test rows."""
    figure, axes = new_figure(3.4, 3.2)
    axes.scatter(frame["y_true"], frame["y_pred"], s=6, alpha=0.6, color="#4c78a8")
    low = float(min(frame["y_true"].min(), frame["y_pred"].min()))
    high = float(max(frame["y_true"].max(), frame["y_pred"].max()))
    axes.plot([low, high], [low, high], color="#bbb", ls=":")
    axes.set_xlabel("true", fontsize=8)
    axes.set_ylabel("predicted", fontsize=8)
    return figure_uri(figure)


def forecasting_target(series: Mapping[str, pd.DataFrame], season: int) -> dict[str, Any]:
    """Each series with its rolling-mean trend, and a seasonality hint from the ACF."""
    figure, axes = new_figure(7.0, 2.6)
    hints = []
    for series_id, frame in list(series.items())[:5]:
        values = frame["value"]
        axes.plot(frame["timestamp"], values, linewidth=0.7, label=f"{series_id}")
        window = max(2, season)
        trend = values.interpolate(limit_direction="both").rolling(window, center=True).mean()
        axes.plot(frame["timestamp"], trend, linewidth=1.6, label=f"{series_id} trend ({window})")
        filled = values.interpolate(limit_direction="both")
        detrended = (filled - trend).dropna()
        if season > 1 and len(detrended) > 2 * season:
            acf = float(detrended.autocorr(lag=season))
            strength = "strong" if acf > 0.5 else "weak" if acf > 0.2 else "no clear"
            hints.append(f"{series_id}: {strength} seasonality at lag {season} "
                         f"(autocorrelation of the detrended series {acf:.2f})")
    axes.legend(fontsize=6)
    axes.tick_params(labelsize=7)
    histogram, hist_axes = new_figure(3.2, 2.6)
    hist_axes.hist(pd.concat([f["value"] for f in series.values()]).dropna(), bins=40,
                   color="#f58518")
    hist_axes.set_title("target values", fontsize=9)
    hist_axes.tick_params(labelsize=7)
    return {"task": "forecasting", "figure": figure_uri(figure), "histogram": figure_uri(histogram),
            "warnings": [], "seasonality": hints}
