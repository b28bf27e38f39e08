"""One contract, every task x modality pair the schema allows: real items are tensorised and
stored, flattened for the baselines, the baselines are fitted and scored on a fold, a
network (adapted preprocessing inside) trains and predicts the fold's validation rows, and
the task scores every prediction."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from dlworkflow.baselines import flat_settings, run_baseline_fold
from dlworkflow.data import Part, load_arrays
from dlworkflow.items import Item
from dlworkflow.modalities import MODALITIES, create_modality
from dlworkflow.tasks import TASKS, get_task
from dlworkflow.tensors import tensorise_items
from dlworkflow.train import train_fold
from tests.conftest import REPO, SHARED_DATA
from tests.helpers.files import png_bytes
from tests.helpers.shards import (
    digits_images,
    fold_context,
    sms_texts,
    write_metric,
    write_shards,
    write_windows,
)

PAIRS = [(m, t) for m in sorted(MODALITIES) for t in MODALITIES[m].tasks]
LAYOUTS = {"image": {"kind": "folders"}, "audio": {"kind": "folders"},
           "text": {"kind": "delimited"}, "timeseries": {"kind": "wide_csv"}}
TENSORS = {"image": {"size": [16, 16], "color": "grayscale", "resize": "stretch"},
           "audio": {"sample_rate": 8000, "duration": 0.5, "n_mels": 32, "n_fft": 256,
                     "hop_length": 80, "top_db": 80, "representation": "logmel"},
           "text": {"max_characters": 500}, "timeseries": {"length": 64, "lookback": 104}}
QUICK = {"min_steps": 0, "patience_steps": 0,
         "epochs": 1, "patience": 1, "batch_size": 16, "learning_rate": 0.003, "dropout": 0.1,
         "l2": 0.0, "units": 8, "filters": 4, "layers": 2, "architecture": "auto",
         "text": {"sequence_length": "auto", "max_tokens": 300, "embedding_dim": 8}}


def test_the_pairs_are_the_ones_the_schema_allows():
    """The schema's task names are the registry's, and each modality's tasks are among them."""
    schema = yaml.safe_load((REPO / "schemas" / "params.schema.yaml").read_text())
    assert set(schema["$defs"]["dataset"]["properties"]["task"]["enum"]) == set(TASKS)
    assert {t for _, t in PAIRS} == set(TASKS)  # every task runs with some modality
    assert all(set(cls.tasks) <= set(TASKS) for cls in MODALITIES.values())


def _gesture_items(count: int) -> tuple[list[Item], np.ndarray]:
    """PickupGestureWiimoteZ (UCR) training series of unequal length, as one-column CSVs."""
    lines = (SHARED_DATA / "ucr" / "PickupGestureWiimoteZ_TRAIN.ts").read_text().splitlines()
    data = [line for line in lines[lines.index("@data") + 1:] if line.strip()][:count]
    items, labels = [], []
    for number, line in enumerate(data):
        values, label = line.rsplit(":", 1)
        series = [v for v in values.split(",") if v not in ("NaN", "?")]
        payload = ("value\n" + "\n".join(series) + "\n").encode()
        items.append(Item(f"g{number:03d}", f"g{number:03d}", payload=payload))
        labels.append(label)
    return items, np.asarray(labels)


def _real_items(modality: str) -> tuple[list[Item], np.ndarray]:
    """About sixty real items of the modality and their class labels."""
    if modality == "image":
        from PIL import Image

        x, labels, _ = digits_images(60, size=8)
        return [Item(f"d{i:03d}", f"d{i:03d}", payload=png_bytes(Image.fromarray(x[i, :, :, 0])))
                for i in range(len(x))], labels
    if modality == "audio":
        files = sorted((SHARED_DATA / "fsdd" / "recordings").glob("*.wav"))[::50][:60]
        return ([Item(f.stem, f.name, file=f) for f in files],
                np.array([f.name.split("_")[0] for f in files]))
    if modality == "text":
        texts, labels, _ = sms_texts(80)
        return [Item(f"m{i:03d}", f"m{i:03d}", payload=t.encode()) for i, t in enumerate(texts)], \
            labels
    return _gesture_items(60)


def _regression_target(modality: str, items: list[Item], labels: np.ndarray) -> np.ndarray:
    """A real number to predict: the digit spoken or drawn, a message's length in words,
    the gesture's number."""
    if modality == "text":
        return np.array([float(len(item.read_bytes().split())) for item in items])
    return labels.astype(float)


@pytest.mark.parametrize(("modality_name", "task_name"), PAIRS)
def test_every_allowed_pair_runs_from_items_to_scores(modality_name, task_name, tmp_path):
    task = get_task(task_name)
    dataset = {"modality": modality_name, "task": task_name,
               "layout": LAYOUTS[modality_name] if task.layout_kinds is None
               else {"kind": task.layout_kinds[0]}}
    modality = create_modality(modality_name, {}, dataset["layout"])
    settings = TENSORS[modality_name]
    folder = tmp_path / "tensors"
    if task.shard_unit == "windows":
        write_windows(folder)  # co2 windows cut by the forecasting plan's rule
    else:
        items, labels = _real_items(modality_name)
        batch = tensorise_items(modality, items, settings)
        stored = modality.stored(batch, settings)["x"]
        assert len(stored) == len(items) and stored.dtype.kind in "Uuf"
        target = labels if task_name == "classification" else _regression_target(
            modality_name, items, labels)
        x = list(stored) if stored.dtype.kind == "U" else stored
        write_shards(folder, x, target, np.arange(len(items)) % 3)
        write_metric(folder, task_name, target)
    choice = json.loads((folder / "metric.json").read_text())
    sections = {"baseline": {"knn_neighbors": 3, "image": {"pixels": 8}, "C": 1.0,
                             "text": {"word_ngrams": 1, "char_ngrams": False, "C": 1.0}},
                "tensors": {modality_name: settings}, "train": QUICK, "augment": {}}
    ctx = fold_context(dataset, folder, sections, tmp_path / "baseline")
    valid = load_arrays(Part(task, folder, 0, "valid"))
    train = load_arrays(Part(task, folder, 0, "train"))
    assert len(valid["ids"]) and len(train["ids"]) and set(valid["ids"]).isdisjoint(train["ids"])
    # flat rows for the baselines (the task says what its estimators take)
    flat = task.baseline_inputs(modality, train, flat_settings(ctx))
    assert len(flat["past"] if isinstance(flat, dict) else flat) == len(train["ids"])
    models = run_baseline_fold(ctx, 0)
    assert models and all(np.isfinite(list(m["metrics"].values())).all() for m in models.values())
    assert choice["primary"]["name"] in next(iter(models.values()))["metrics"]
    baseline_rows = pd.read_parquet(tmp_path / "baseline" / "predictions.parquet")
    assert set(baseline_rows["id"]) == set(valid["ids"])
    # a network: preprocessing adapted on the fold inside, one epoch, validation predictions
    out = tmp_path / "nn" / "fold-0"
    details = train_fold(fold_context(dataset, folder, sections, out), 0)
    assert details["epochs_run"] == 1 and np.isfinite(list(details["metrics"].values())).all()
    assert choice["primary"]["name"] in details["metrics"]
    predictions = pd.read_parquet(out / "predictions.parquet")
    assert set(predictions["id"]) == set(valid["ids"])
    if task_name == "classification":
        assert set(predictions["y_pred"]) <= set(valid["classes"])
        assert np.allclose(predictions[[f"p_{c}" for c in valid["classes"]]].sum(axis=1), 1,
                           atol=1e-3)
    else:
        assert np.isfinite(predictions["y_pred"]).all()
    card = json.loads((out / "model.json").read_text())
    assert card["task"] == task_name and card["modality"] == modality_name
