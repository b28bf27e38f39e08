"""Predict with a saved model from raw inputs: files (any modality) or strings (text).

`model_dir` holds `model.keras` and `model.json` (written by training): the JSON says which
modality and which stateless tensor settings turn a raw file into the model's input, so the
same decoding as the shards is applied; everything learned is inside the model.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dlworkflow.items import Item
from dlworkflow.modalities import create_modality
from dlworkflow.tasks import get_task


def load_model(model_dir: str | Path) -> tuple[Any, dict[str, Any]]:
    """The Keras model and its card."""
    import keras

    import dlworkflow.layers  # noqa: F401  (registers the custom layers before loading)

    model_dir = Path(model_dir)
    card = json.loads((model_dir / "model.json").read_text())
    return keras.saving.load_model(model_dir / "model.keras"), card


def raw_inputs(card: dict[str, Any], inputs: Sequence[str | Path]) -> Any:
    """Decode raw files (or, for a modality that takes inline text, strings that are not
    existing files) as the shards do, into what the model takes."""
    modality = create_modality(card["modality"], {}, card.get("layout") or {})
    arrays = []
    for number, value in enumerate(inputs):
        path = Path(value)
        if isinstance(value, Path) or (len(str(value)) < 4096 and path.is_file()):
            data, name = path.read_bytes(), str(path)
        elif modality.inline_text:
            data, name = str(value).encode("utf-8"), f"text-{number}"
        else:
            raise FileNotFoundError(f"{value}: no such file")
        arrays.append(modality.tensorize(data, Item(name, name), card.get("tensors") or {}))
    batch = np.asarray(arrays, dtype=str) if isinstance(arrays[0], str) else np.stack(arrays)
    return modality.model_inputs({"x": batch})


def predict(model_dir: str | Path, inputs: Sequence[str | Path],
            batch_size: int = 64) -> pd.DataFrame:
    """One row per input: the prediction, and p_<class> probabilities for classification."""
    if not inputs:
        raise ValueError("nothing to predict: give at least one file or text")
    model, card = load_model(model_dir)
    import tensorflow as tf

    batches = tf.data.Dataset.from_tensor_slices(raw_inputs(card, inputs)).batch(batch_size)
    output = np.asarray(model.predict(batches, verbose=0))
    frame = pd.DataFrame({"input": [str(i) for i in inputs]})
    for column, values in get_task(card["task"]).prediction_columns(output, card).items():
        frame[column] = values
    return frame
