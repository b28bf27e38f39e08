"""Explanations of the final model's test predictions with SHAP.

SHAP's model-agnostic Partition explainer runs on the exported model itself, so it explains
what users deploy: images as uint8 pixels, texts as raw strings, spectrograms and series
windows as arrays. Each modality names its masker (`Modality.shap_masker`: regions of an
array hidden by the training mean, or words of a text) and draws the attributions
(`Modality.attribution_html`). For a classifier the explained output is the predicted
class's probability, for a forecaster the mean of the forecast horizon, for a regressor the
prediction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd


def pick_examples(frame: pd.DataFrame, task: str, classes: Sequence[str],
                  per_class: int) -> list[int]:
    """Row positions to explain: for each predicted class its `per_class` most confident test
    rows (classification), otherwise the first rows."""
    if task != "classification":
        return list(range(min(per_class, len(frame))))
    columns = [f"p_{c}" for c in classes]
    confidence = frame[columns].max(axis=1).to_numpy()
    picked = []
    for label in classes:
        rows = np.flatnonzero(frame["y_pred"].astype(str).to_numpy() == label)
        picked.extend(rows[np.argsort(-confidence[rows], kind="stable")][:per_class].tolist())
    return picked


def model_function(model, task: str, dtype: Any, output: int | None, future: Any = None,
                   squeeze: bool = False):
    """A numpy-in, numpy-out function of a batch for SHAP: one output per row. `squeeze`
    drops the trailing axis SHAP's array masker needed for 2-D items (series windows)."""
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
        if task == "forecasting":
            return values.mean(axis=1)
        return values[:, output if output is not None else 0]

    return call


def explain(model, modality, task: str, x: Any, frame: pd.DataFrame, classes: Sequence[str],
            background: Any, per_class: int = 1, max_evals: int = 300,
            x_future: Any = None) -> list[dict[str, Any]]:
    """SHAP attributions for a few test rows, each as {id, true, predicted, what, html}."""
    import shap

    x = np.asarray(x)
    strings = x.dtype.kind == "U"
    expand = not strings and x.ndim == 3  # (time, channels) items: SHAP's masker wants 3-D
    masker = modality.shap_masker(np.asarray(background)[..., None] if expand else background)
    cells = []
    for row in pick_examples(frame, task, classes, per_class):
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
        what = (f"p({frame['y_pred'].iloc[row]})" if classes else
                "mean forecast" if task == "forecasting" else "prediction")
        cells.append({
            "id": str(frame["id"].iloc[row]), "true": str(frame["y_true"].iloc[row]),
            "predicted": str(frame["y_pred"].iloc[row]), "what": what,
            "total": float(attributions.sum()),
            "html": modality.attribution_html(data, attributions, what)})
    return cells


def explain_final(model, card: Mapping[str, Any], modality, test: Mapping[str, Any],
                  frame: pd.DataFrame, background: Any, per_class: int,
                  max_evals: int = 300) -> list[dict[str, Any]]:
    """Explanations of the network's test predictions (rows of `frame` in `test` order)."""
    by_id = frame.drop_duplicates("id").set_index("id").loc[list(test["ids"])].reset_index()
    return explain(model, modality, card["task"], test["x"], by_id, card["classes"],
                   background, per_class, max_evals, test.get("x_future"))
