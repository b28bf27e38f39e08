"""Predict with a shipped model from raw inputs: files (any modality) or strings (text).

`model_dir` is a final/ folder (it ships the network or the baseline, `shipped.json` says
which) or a fold's folder (a network). The model's card says which modality and which
stateless tensor settings turn a raw file into the stored array, so the same decoding as
the shards is applied; everything learned is inside the model (or the exported pipeline).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dlworkflow.items import Item
from dlworkflow.modalities import create_modality
from dlworkflow.shipping import load_network as load_model
from dlworkflow.shipping import load_shipped
from dlworkflow.tasks import get_task

__all__ = ["load_model", "predict", "raw_arrays"]


def raw_arrays(card: dict[str, Any], inputs: Sequence[str | Path]) -> dict[str, Any]:
    """Decode raw files (or, for a modality that takes inline text, strings that are not
    existing files) as the shards do: {"x": stored arrays}."""
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
    return {"x": batch}


def predict(model_dir: str | Path, inputs: Sequence[str | Path]) -> pd.DataFrame:
    """One row per input: the shipped model's prediction, and p_<class> probabilities for
    classification."""
    if not inputs:
        raise ValueError("nothing to predict: give at least one file or text")
    shipped = load_shipped(model_dir)
    output = shipped.outputs(raw_arrays(shipped.card, inputs))
    frame = pd.DataFrame({"input": [str(i) for i in inputs]})
    task = get_task(shipped.card["task"])
    for column, values in task.prediction_columns(np.asarray(output), shipped.card).items():
        frame[column] = values
    return frame
