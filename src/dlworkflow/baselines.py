"""Step 2: traditional baselines on a flat representation, cross-validated on the split's folds.

Each modality turns its tensors into flat rows (`Modality.flat`) and names its estimators
(`Modality.baselines`); the task picks them (forecasters take windows) and scores them.
Everything learned (scalers, TF-IDF vocabularies, models) is inside a scikit-learn Pipeline
fitted on the fold's training rows only. Test rows are never loaded.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone

from dlworkflow.context import RunContext
from dlworkflow.data import Part, RowSource, load_arrays
from dlworkflow.estimators import class_probabilities
from dlworkflow.evaluate import write_fold_metrics
from dlworkflow.models.extractors import embeddings_folder

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


#: the name of a baseline fitted on the tensors' flat rows with a frozen backbone's cached
#: embeddings beside them (`features.extractor`) ends so (`logreg`, `logreg_with_embeddings`)
WITH_EMBEDDINGS = "_with_embeddings"


def baseline_source(ctx: RunContext, name: str) -> tuple[str, bool]:
    """The estimator's registered name for the baseline `name` (as step 2 named it), and
    whether it fits on the embeddings beside the tensors' rows."""
    if name.endswith(WITH_EMBEDDINGS) and embeddings_folder(ctx):
        return name[: -len(WITH_EMBEDDINGS)], True
    return name, False


def beside_flat(modality: Any, x: Any, embeddings: Any, settings: dict[str, Any]) -> np.ndarray:
    """The flat rows of stored items `x` (`Modality.flat`) with their embeddings beside
    them: what a baseline `WITH_EMBEDDINGS` takes, in step 2, the final step and serving."""
    return np.hstack([modality.flat(x, settings), np.asarray(embeddings, dtype=np.float32)])


def with_embeddings(ctx: RunContext, part: Part, arrays: dict[str, Any]) -> dict[str, Any]:
    """`arrays`, a part's rows as loaded from the tensors, with the cached embeddings of the
    same rows beside their flat rows. Offered beside the tensors' rows, not instead: on FSDD
    at 30 a class (two folds) logistic regression scored 0.46 on EfficientNet-Lite0's
    ImageNet embeddings of the spectrograms alone against 0.79 on their MFCC summary; on the
    suite's `fashion` photos (five folds) 0.776 on pixels, 0.808 on the embeddings alone and
    0.847 on both side by side."""
    folder = embeddings_folder(ctx)
    embeddings = load_arrays(replace(part, folder=folder))
    if not np.array_equal(np.asarray(arrays["ids"]), np.asarray(embeddings["ids"])):
        raise ValueError(f"{folder}: the cached embeddings' rows of the "
                         f"{part.name} part are not the tensors' ({len(embeddings['ids'])} "
                         f"against {len(arrays['ids'])}); rerun the features step")
    return {**arrays, "x": beside_flat(ctx.modality, arrays["x"], embeddings["x"],
                                       flat_settings(ctx))}


def run_baseline_fold(ctx: RunContext, fold: int) -> dict:
    """Fit every baseline on fold-train rows, score it on the fold's validation rows (on the
    tensors, and where an extractor cached embeddings also on the same rows with them beside:
    `with_embeddings`; cross-validation chooses); write the fold's metrics.json and
    predictions.parquet."""
    choice = json.loads(Path(ctx.input("metric")).read_text())
    task = ctx.task
    train_part = Part(task, ctx.folder("index"), fold, "train", ctx.gap)
    valid_part = replace(train_part, name="valid")
    train, train_rows = training_part(ctx, train_part)
    valid = load_arrays(valid_part)
    if not train_rows or not len(valid["ids"]):
        raise ValueError(f"fold {fold}: {train_rows} training and {len(valid['ids'])} "
                         "validation rows; every fold needs both")
    sources = [("", "tensors", train, valid)]
    if embeddings_folder(ctx):  # the tensors' rows read once, for both sources
        sources.append((WITH_EMBEDDINGS, "tensors and cached embeddings",
                        with_embeddings(ctx, train_part, train),
                        with_embeddings(ctx, valid_part, valid)))
    models, frames = {}, []
    for suffix, words, train, valid in sources:
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
