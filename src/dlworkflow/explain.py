"""Explanations of the final model's test predictions with SHAP.

SHAP's model-agnostic Partition explainer runs on the exported model itself, so it explains
what users deploy: images as uint8 pixels, texts as raw strings, spectrograms and series
windows as arrays. Each modality names its masker (`Modality.shap_masker`: regions of an
array hidden by the training mean, or words of a text) and draws the attributions
(`Modality.attribution_html`). The task says what is explained (`Task.explained_value`):
for a classifier the predicted class's probability, for a forecaster the mean of the
forecast horizon, for a regressor the prediction.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd


@contextmanager
def numba_as_python():
    """numba's JIT off while the block runs: functions decorated then stay plain Python and
    numba's typed lists are Python lists (functions compiled before, librosa's, stay
    compiled). SHAP does not cache what numba compiles, so every report job paid about 11 s
    of compilation for explanations of a few rows that take about 2 s as plain Python
    (measured on digits, FSDD and SMS)."""
    from numba.core import config

    saved = config.DISABLE_JIT
    config.DISABLE_JIT = True
    try:
        yield
    finally:
        config.DISABLE_JIT = saved


def import_shap():
    """SHAP, its numba functions left as plain Python (use them under `numba_as_python`)."""
    import sys

    if "shap" in sys.modules:
        return sys.modules["shap"]
    with numba_as_python():
        import shap
    return shap


def model_function(model, task: Any, dtype: Any, output: int | None, future: Any = None,
                   squeeze: bool = False):
    """A numpy-in, numpy-out function of a batch for SHAP: one output per row (the task's
    explained value). `squeeze` drops the trailing axis SHAP's array masker needed for 2-D
    items (series windows)."""
    import tensorflow as tf

    def call(batch: Any) -> np.ndarray:
        if dtype.kind == "U":
            inputs: Any = tf.constant(np.asarray(batch, dtype=str))
        else:
            inputs = np.asarray(batch, dtype=np.float32)
            if squeeze:
                inputs = inputs[..., 0]
            if dtype == np.uint8:
                inputs = np.clip(np.rint(inputs), 0, 255).astype(np.uint8)
        if future is not None:
            inputs = {"past": inputs, "future": np.repeat(future[None], len(batch), axis=0)}
        values = np.asarray(model.predict_on_batch(inputs), dtype=np.float64)
        return task.explained_value(values, output)

    return call


def explain(model, modality, task: Any, test: Mapping[str, Any], frame: pd.DataFrame,
            background: Any, limits: tuple[int, int, int] = (1, 20, 300),
            settings: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """SHAP attributions for a few test rows (`test`: x and x_future in `frame`'s order,
    `frame`: their predictions), each as {id, true, predicted, what, html}; `limits`: rows
    explained per class, rows explained in all (SHAP's cost is per row: a set of a hundred
    classes would otherwise explain a hundred times as many) and SHAP's evaluations per row;
    `settings`: the dataset's tensors settings of the modality (the maps' axes are in its
    units)."""
    with numba_as_python():
        shap = import_shap()
        return _explain_rows(shap, model, (modality, task, settings or {}), test, frame,
                             background, limits)


def _explain_rows(shap, model, plugins: tuple, test: Mapping[str, Any], frame: pd.DataFrame,
                  background: Any, limits: tuple[int, int, int]) -> list[dict[str, Any]]:
    """`explain`'s work, with SHAP imported (`plugins`: the modality, the task and the
    modality's tensors settings)."""
    modality, task, settings = plugins
    per_class, in_all, max_evals = limits
    classes = [c[2:] for c in frame.columns if c.startswith("p_")]
    x = np.asarray(test["x"])
    x_future = test.get("x_future")
    strings = x.dtype.kind == "U"
    expand = not strings and x.ndim == 3  # (time, channels) items: SHAP's masker wants 3-D
    masker = modality.shap_masker(np.asarray(background)[..., None] if expand else background)
    cells = []
    for row in task.explained_rows(frame, classes, per_class, in_all):
        output = list(classes).index(str(frame["y_pred"].iloc[row])) if classes else None
        future = None if x_future is None or not x_future.shape[-1] else x_future[row]
        function = model_function(model, task, x.dtype, output, future, squeeze=expand)
        explainer = shap.Explainer(function, masker, algorithm="partition")
        sample = [str(x[row])] if strings else x[row: row + 1].astype(np.float32)
        if expand:
            sample = sample[..., None]
        values = explainer(sample, max_evals=max_evals, batch_size=64, silent=True)[0]
        data, attributions = values.data, np.asarray(values.values, dtype=np.float64)
        if expand:
            data, attributions = np.asarray(data)[..., 0], attributions[..., 0]
        what = task.explained_what(frame["y_pred"].iloc[row], classes)
        cells.append({
            "id": str(frame["id"].iloc[row]), "true": str(frame["y_true"].iloc[row]),
            "predicted": str(frame["y_pred"].iloc[row]), "what": what,
            "total": float(attributions.sum()),
            "html": modality.attribution_html(data, attributions, what, settings)})
    return cells

