"""Step 2: traditional baselines on a flat representation, cross-validated on the split's folds.

Each modality turns its tensors into flat rows (`Modality.flat`) and names its estimators
(`Modality.baselines`); the task picks them (forecasters take windows) and scores them.
Everything learned (scalers, TF-IDF vocabularies, models) is inside a scikit-learn Pipeline
fitted on the fold's training rows only. Test rows are never loaded.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone

from dlworkflow.context import RunContext
from dlworkflow.data import Part, load_arrays
from dlworkflow.estimators import class_probabilities
from dlworkflow.evaluate import write_fold_metrics

log = logging.getLogger(__name__)


def fit_predict(estimator: Any, x_train: Any, y_train: np.ndarray, x_valid: Any,
                 classes: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray | None]:
    """Fit on the training rows; predictions and (classifiers) probabilities for x_valid."""
    estimator.fit(x_train, y_train)
    prediction = estimator.predict(x_valid)
    proba = class_probabilities(estimator, x_valid, len(prediction), len(classes)) if classes \
        else None
    return prediction, proba


def flat_settings(ctx: RunContext) -> dict[str, Any]:
    """The baseline section with the modality's tensor settings (what `flat` reads)."""
    return {**ctx.section("baseline"), **(ctx.section("tensors").get(ctx.modality.name) or {})}


def run_baseline_fold(ctx: RunContext, fold: int) -> dict:
    """Fit every baseline on fold-train rows, score it on the fold's validation rows; write
    the fold's metrics.json and predictions.parquet."""
    choice = json.loads(Path(ctx.input("metric")).read_text())
    task = ctx.task
    features_dir = ctx.folder("features")
    source = features_dir or ctx.folder("index")
    train = load_arrays(Part(task, source, fold, "train", ctx.gap))
    valid = load_arrays(Part(task, source, fold, "valid", ctx.gap))
    if not len(train["ids"]) or not len(valid["ids"]):
        raise ValueError(f"fold {fold}: {len(train['ids'])} training and {len(valid['ids'])} "
                         "validation rows; every fold needs both")
    classes = train["classes"]
    settings = flat_settings(ctx)
    estimators = task.baselines(ctx.modality, ctx.section("baseline"), ctx.seed)
    x_train = task.baseline_inputs(ctx.modality, train, settings)  # shared by every estimator
    x_valid = task.baseline_inputs(ctx.modality, valid, settings)
    models, frames = {}, []
    for name, estimator in estimators.items():
        estimator = task.prepare_baseline(clone(estimator), choice, train)
        prediction, proba = fit_predict(estimator, x_train, train["y"], x_valid, classes)
        metrics, frame = task.fold_scores(choice, valid, task.from_estimator(prediction, classes),
                                          proba, classes, fold, name)
        frames.append(frame)
        models[name] = {"metrics": metrics, "train_rows": len(train["ids"]),
                        "valid_rows": len(valid["ids"]),
                        "input": "cached embeddings" if features_dir else "tensors"}
        log.info("fold %d %s: %s", fold, name,
                 ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    write_fold_metrics(ctx.output("metrics"), fold, models)
    pd.concat(frames, ignore_index=True).to_parquet(ctx.output("predictions"), index=False)
    return models
