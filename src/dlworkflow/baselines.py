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

import pandas as pd
from sklearn.base import clone

from dlworkflow.context import RunContext
from dlworkflow.data import Part, RowSource, load_arrays
from dlworkflow.estimators import class_probabilities
from dlworkflow.evaluate import write_fold_metrics

log = logging.getLogger(__name__)


def flat_settings(ctx: RunContext) -> dict[str, Any]:
    """The baseline section with the modality's tensor settings (what `flat` reads)."""
    return {**ctx.section("baseline"), **(ctx.section("tensors").get(ctx.modality.name) or {})}


def training_part(ctx: RunContext, part: Part) -> tuple[Any, int]:
    """The rows a baseline fits on: arrays in RAM, or a `RowSource` where the task reads
    rows on demand (fitted chunk by chunk, `fit_baseline`); and how many there are."""
    if ctx.task.reads_rows_on_demand:
        source = RowSource(part)
        return source, len(source)
    arrays = load_arrays(part)
    return arrays, len(arrays["ids"])


def fit_baseline(ctx: RunContext, estimators: dict[str, Any], train: Any) -> None:
    """Fit each estimator on the training rows: at once on arrays, or with `partial_fit`
    on each chunk of a `RowSource` (one read of the rows serves every estimator)."""
    settings = flat_settings(ctx)
    if not isinstance(train, RowSource):
        x_train = ctx.task.baseline_inputs(ctx.modality, train, settings)  # shared
        for estimator in estimators.values():
            estimator.fit(x_train, train["y"])
        return
    unable = sorted(name for name, e in estimators.items() if not hasattr(e, "partial_fit"))
    if unable:
        raise TypeError(f"baselines {', '.join(unable)} cannot learn chunk by chunk "
                        "(no partial_fit), which a task reading rows on demand needs")
    for chunk in train.chunks():
        x_chunk = ctx.task.baseline_inputs(ctx.modality, chunk, settings)
        for estimator in estimators.values():
            estimator.partial_fit(x_chunk, chunk["y"])


#: the name of a baseline fitted on cached embeddings (`features.extractor`) ends so,
#: beside the same estimator on the tensors' flat rows (`logreg`, `logreg_on_embeddings`)
ON_EMBEDDINGS = "_on_embeddings"


def baseline_sources(ctx: RunContext) -> list[tuple[str, str, str]]:
    """What step 2 fits its estimators on, as (folder, input in words, name suffix): the
    tensors, and also the cached embeddings where an extractor made them. Both are offered,
    and cross-validation chooses: on FSDD at 30 a class (two folds), logistic regression
    scored 0.46 on EfficientNet-Lite0's ImageNet embeddings of the spectrograms against 0.79
    on their MFCC summary."""
    sources = [(ctx.folder("index"), "tensors", "")]
    if ctx.folder("features"):
        sources.append((ctx.folder("features"), "cached embeddings", ON_EMBEDDINGS))
    return sources


def baseline_source(ctx: RunContext, name: str) -> tuple[str, str]:
    """The estimator's registered name and the folder of the rows the baseline `name` (as
    step 2 named it) fits on."""
    if name.endswith(ON_EMBEDDINGS) and ctx.folder("features"):
        return name[: -len(ON_EMBEDDINGS)], ctx.folder("features")
    return name, ctx.folder("index")


def run_baseline_fold(ctx: RunContext, fold: int) -> dict:
    """Fit every baseline on fold-train rows, score it on the fold's validation rows
    (`baseline_sources`: on the tensors, and on cached embeddings too); write the fold's
    metrics.json and predictions.parquet."""
    choice = json.loads(Path(ctx.input("metric")).read_text())
    task = ctx.task
    models, frames = {}, []
    for source, words, suffix in baseline_sources(ctx):
        train, train_rows = training_part(ctx, Part(task, source, fold, "train", ctx.gap))
        valid = load_arrays(Part(task, source, fold, "valid", ctx.gap))
        if not train_rows or not len(valid["ids"]):
            raise ValueError(f"fold {fold}: {train_rows} training and {len(valid['ids'])} "
                             "validation rows; every fold needs both")
        classes = valid["classes"]
        estimators = {name + suffix: task.prepare_baseline(clone(estimator), choice, valid)
                      for name, estimator in task.baselines(ctx.modality,
                                                            ctx.section("baseline"),
                                                            ctx.seed).items()}
        fit_baseline(ctx, estimators, train)
        x_valid = task.baseline_inputs(ctx.modality, valid, flat_settings(ctx))
        for name, estimator in estimators.items():
            prediction = estimator.predict(x_valid)
            proba = class_probabilities(estimator, x_valid, len(prediction), len(classes)) \
                if classes else None
            metrics, frame = task.fold_scores(choice, valid,
                                              task.from_estimator(prediction, classes), proba,
                                              classes, fold, name)
            frames.append(frame)
            models[name] = {"metrics": metrics, "train_rows": train_rows,
                            "valid_rows": len(valid["ids"]), "input": words}
            log.info("fold %d %s: %s", fold, name,
                     ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    write_fold_metrics(ctx.output("metrics"), fold, models)
    pd.concat(frames, ignore_index=True).to_parquet(ctx.output("predictions"), index=False)
    return models
