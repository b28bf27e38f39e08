"""The final report: one self-contained HTML page per dataset (inline PNGs, no external files).

It reads what the earlier steps left (metric choice, split, CV summaries, fold histories) and
what the final step wrote (test metrics with intervals, test predictions, model card,
latency), and shows them in the order a reviewer asks: how good, compared with what, how
sure, where it fails, how fast.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dlworkflow.data import load_arrays, load_test_arrays
from dlworkflow.figures import figure_uri, new_figure
from dlworkflow.intake import item_records
from dlworkflow.modalities import create_modality

#: generalisation gap (validation loss / training loss at the best epoch) read as overfitting
OVERFIT_RATIO = 1.5


def _plus_minus(entry: Mapping[str, Any]) -> str:
    return f"{entry['mean']:.4f} ± {entry['std']:.4f}"


def cv_table(baseline: Mapping[str, Any], network: Mapping[str, Any],
             names: Sequence[str]) -> list[dict[str, Any]]:
    """One row per model (baselines, then the network): CV mean ± std of every metric."""
    rows = []
    for kind, summary in (("baseline", baseline), ("network", network)):
        for model, metrics in summary["models"].items():
            rows.append({"kind": kind, "model": model, "best": model == summary["best"],
                         "values": {n: _plus_minus(metrics[n]) if n in metrics else "—"
                                    for n in names}})
    return rows


def test_table(result: Mapping[str, Any], names: Sequence[str]) -> list[dict[str, Any]]:
    """One row per scored model: the test value of every metric with its interval."""
    rows = []
    for kind in ("network", "baseline"):
        if kind not in result:
            continue
        metrics = result[kind]["metrics"]
        values = {}
        for name in names:
            entry = metrics.get(name)
            if entry is None:
                values[name] = "—"
            elif entry["low"] is None:
                values[name] = f"{entry['value']:.4f}"
            else:
                values[name] = f"{entry['value']:.4f} [{entry['low']:.4f}, {entry['high']:.4f}]"
        rows.append({"kind": kind, "model": result[kind]["model"], "values": values})
    return rows


def fit_diagnosis(network: Mapping[str, Any]) -> dict[str, Any]:
    """Generalisation gap per fold at the best epoch, and a plain-words hint."""
    details = next(iter(network.get("fold_details", {}).values()), {})
    gaps, stopped_late = [], 0
    for fold in details.values():
        train, valid = fold.get("train_loss_at_best"), fold.get("val_loss_at_best")
        if train and valid:
            gaps.append(valid / train)
        if fold.get("best_epoch") and fold.get("best_epoch") == fold.get("epochs_run"):
            stopped_late += 1
    ratio = float(np.median(gaps)) if gaps else None
    if ratio is None:
        hint = "No per-fold losses were recorded."
    elif ratio > OVERFIT_RATIO:
        hint = (f"Overfitting: the validation loss is {ratio:.1f}x the training loss at the best "
                "epoch. Try more regularisation (train.dropout, train.l2, stronger augment.*), "
                "a smaller network (train.units, train.filters, train.layers), or more data.")
    elif stopped_late >= max(1, len(details) // 2):
        hint = (f"Underfitting or still learning: in {stopped_late} of {len(details)} folds the "
                "best epoch was the last one. Try more epochs (train.epochs), a higher "
                "learning rate, more capacity, or lighter augmentation.")
    else:
        hint = (f"Balanced: validation loss {ratio:.2f}x the training loss at the best epoch "
                "and early stopping found a minimum. Gains now come from data or architecture.")
    return {"gap_ratio": ratio, "folds_best_at_last_epoch": stopped_late, "hint": hint}


def learning_curves(histories: Sequence[str], final_history: str | None) -> str:
    """Training (solid) and validation (dashed) loss per fold, and the final model's loss."""
    figure, axes = new_figure(6.0, 3.0)
    colours = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#ff9da6"]
    losses = []
    for number, path in enumerate(histories):
        history = pd.read_csv(path)
        colour = colours[number % len(colours)]
        axes.plot(history["epoch"], history["loss"], color=colour, lw=1.2, label=f"fold {number}")
        losses.extend(history["loss"])
        if "val_loss" in history:
            axes.plot(history["epoch"], history["val_loss"], color=colour, lw=1.2, ls="--")
            losses.extend(history["val_loss"])
    if final_history and Path(final_history).is_file():
        final = pd.read_csv(final_history)
        axes.plot(final["epoch"], final["loss"], color="black", lw=2, marker="o", markersize=3,
                  label="final (train)")
        losses.extend(final["loss"])
    axes.set_xlabel("epoch", fontsize=8)
    axes.set_ylabel("loss (solid train, dashed validation)", fontsize=8)
    positive = [v for v in losses if v > 0]
    if positive and max(positive) / min(positive) > 20:  # wide range: log scale reads better
        axes.set_yscale("log")
    axes.tick_params(labelsize=7)
    axes.legend(fontsize=7, ncol=2, frameon=False)
    return figure_uri(figure)


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


def per_class_table(y_true: np.ndarray, y_pred: np.ndarray,
                    classes: Sequence[str]) -> list[dict[str, Any]]:
    """Precision, recall, F1 and support per class on the test rows."""
    from sklearn.metrics import precision_recall_fscore_support

    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=list(classes), zero_division=0)
    return [{"class": c, "precision": p, "recall": r, "f1": f, "support": int(s)}
            for c, p, r, f, s in zip(classes, precision, recall, f1, support, strict=True)]


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


def forecast_figure(history: np.ndarray, frame: pd.DataFrame) -> str:
    """The held-out horizon: the lookback, the actual values and each model's forecast."""
    figure, axes = new_figure(6.5, 3.0)
    past = np.asarray(history, dtype=float)
    axes.plot(np.arange(-len(past) + 1, 1), past, color="#555", lw=1, label="lookback")
    first = frame["id"].iloc[0]
    for number, (model, rows) in enumerate(frame[frame["id"] == first].groupby("model",
                                                                              sort=False)):
        if number == 0:
            axes.plot(rows["step"], rows["y_true"], color="black", lw=1.6, label="actual")
        axes.plot(rows["step"], rows["y_pred"], lw=1.4, ls="--" if number else "-",
                  label=model)
    axes.axvline(0.5, color="#bbb", ls=":")
    axes.set_xlabel("steps from the forecast origin", fontsize=8)
    axes.tick_params(labelsize=7)
    axes.legend(fontsize=7, frameon=False)
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


def worst_errors(frame: pd.DataFrame, task: str, classes: Sequence[str],
                 per_class: int) -> pd.DataFrame:
    """The most confident mistakes (`per_class` per true class), or the largest residuals."""
    if task == "classification":
        wrong = frame[frame["y_true"] != frame["y_pred"]].copy()
        if wrong.empty:
            return wrong
        columns = [f"p_{c}" for c in classes]
        wrong["confidence"] = wrong[columns].max(axis=1)
        wrong = wrong.sort_values(["confidence", "id"], ascending=[False, True])
        return wrong.groupby("y_true", sort=True).head(per_class).head(4 * max(per_class, 1))
    residual = (frame["y_true"] - frame["y_pred"]).abs()
    return frame.assign(error=residual).sort_values("error", ascending=False).head(
        4 * max(per_class, 1))


def error_cells(worst: pd.DataFrame, inventory: pd.DataFrame, dataset: Mapping[str, Any],
                base: Path) -> list[dict[str, Any]]:
    """Previews (thumbnail, spectrogram + audio, text) of the worst errors."""
    if worst.empty:
        return []
    modality = create_modality(dataset["modality"], {}, dataset["layout"])
    rows = inventory[inventory["id"].astype(str).isin(worst["id"].astype(str))]
    items = {item.id: item for item in item_records(rows, modality, dataset, base)}
    cells = []
    for _, row in worst.iterrows():
        item = items.get(str(row["id"]))
        html = modality.preview(item.read_bytes(), item) if item else "(raw item not found)"
        note = (f"true {row['y_true']}, predicted {row['y_pred']} ({row['confidence']:.2f})"
                if "confidence" in row else
                f"true {row['y_true']:.4g}, predicted {row['y_pred']:.4g}")
        cells.append({"id": str(row["id"]), "html": html, "note": note})
    return cells


def build_report(name: str, dataset: Mapping[str, Any], inputs: Mapping[str, Any],
                 settings: Mapping[str, Any], base: Path = Path(".")) -> tuple[str, dict]:
    """The report's HTML and a small JSON summary of what it shows."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    from dlworkflow.evaluate import metric_names

    read = lambda key: json.loads(Path(inputs[key]).read_text())  # noqa: E731
    choice, counts, leakage = read("metric"), read("counts"), read("leakage")
    baseline, network, result, card = read("baseline"), read("network"), read("test"), read("card")
    latency = read("latency")
    names = metric_names(choice)
    primary = names[0]
    predictions = pd.read_parquet(inputs["predictions"])
    model = result["network"]["model"]
    mine = predictions[predictions["model"] == model]
    task = card["task"]
    classes = card["classes"]
    test = load_test_arrays(inputs["plan"], list(inputs["test_shards"]), tuple(classes))
    context: dict[str, Any] = {
        "name": name, "dataset": dataset, "metric": choice, "counts": counts, "leakage": leakage,
        "names": names, "primary": primary, "result": result, "card": card,
        "latency": latency, "cv": cv_table(baseline, network, names),
        "test": test_table(result, names), "verdict": network.get("verdict", ""),
        "diagnosis": fit_diagnosis(network),
        "curves": learning_curves(inputs["histories"], inputs.get("final_history")),
        "figures": [], "per_class": [], "cells": [],
    }
    if task == "classification":
        y_true, y_pred = mine["y_true"].to_numpy(), mine["y_pred"].to_numpy()
        proba = mine[[f"p_{c}" for c in classes]].to_numpy(dtype=float)
        context["figures"].append({"title": "confusion matrix (test)",
                                   "uri": confusion_figure(y_true, y_pred, classes)})
        if len(classes) == 2:
            positive = (card.get("threshold") or {}).get("positive") or \
                choice.get("positive_label") or classes[1]
            context["figures"].extend(curve_figures(y_true, mine[f"p_{positive}"].to_numpy(),
                                                    str(positive)))
        uri, ece = calibration_figure(y_true, proba, classes)
        context["figures"].append({"title": "calibration", "uri": uri})
        context["ece"] = ece
        context["per_class"] = per_class_table(y_true, y_pred, classes)
    elif task == "forecasting":
        first = sorted(predictions["id"].unique())[0]
        row = list(test["ids"]).index(first)
        context["figures"].append({"title": "held-out horizon",
                                   "uri": forecast_figure(test["x"][row, :, 0], predictions)})
    else:
        context["figures"].append({"title": "predicted vs true", "uri": regression_figure(mine)})
    if task != "forecasting":
        worst = worst_errors(mine, task, classes, int(settings.get("report_examples", 3)))
        context["cells"] = error_cells(worst, pd.read_parquet(inputs["inventory"]), dataset, base)
    per_class = int(settings.get("explanations", 2))
    if per_class:
        from dlworkflow.explain import explain_final
        from dlworkflow.predict import load_model

        model, _ = load_model(Path(inputs["card"]).parent)
        background = load_arrays(Path(inputs["index"]).parent, None, "trainval")["x"]
        rng = np.random.default_rng(0)
        background = background[rng.choice(len(background), min(100, len(background)),
                                           replace=False)]
        modality = create_modality(dataset["modality"], {}, dataset["layout"])
        context["explanations"] = explain_final(model, card, modality, test, mine, background,
                                                per_class)
    env = Environment(loader=PackageLoader("dlworkflow", "templates"),
                      autoescape=select_autoescape(["html", "j2"]))
    html = env.get_template("report.html.j2").render(**context)
    summary = {"dataset": name, "primary": primary, "test": result["headline"],
               "cv_network": network["headline"], "cv_baseline": baseline["headline"],
               "figures": [f["title"] for f in context["figures"]],
               "worst_errors_shown": len(context["cells"]),
               "explained": len(context.get("explanations", [])),
               "diagnosis": context["diagnosis"]["hint"]}
    return html, summary


def write_report(name: str, dataset: Mapping[str, Any], inputs: Mapping[str, Any],
                 settings: Mapping[str, Any], output: str) -> dict[str, Any]:
    """Write `final/report.html`; return its summary."""
    html, summary = build_report(name, dataset, inputs, settings)
    Path(output).write_text(html, encoding="utf-8")
    return summary
