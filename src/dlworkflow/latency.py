"""Latency of the final model: single items from raw input, batch throughput, size.

A single-item call is what a service does per request: decode the raw file (or take the
string, or the series window) exactly as the shards were made, then one forward pass. The
model is warmed up first (graph tracing is not latency). Throughput is the forward pass on
batches of already decoded items.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dlworkflow.data import load_arrays
from dlworkflow.intake import item_records
from dlworkflow.modalities import create_modality


def _percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1000
    return {"p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95)),
            "mean": float(ms.mean())}


def _as_input(batch: np.ndarray) -> Any:
    import tensorflow as tf

    if batch.dtype.kind == "U":  # Keras takes strings as a tf string tensor
        return tf.constant(batch)
    return batch if batch.dtype == np.uint8 else batch.astype(np.float32)


def raw_samples(dataset: Mapping[str, Any], inventory_path: str, tensors_dir: str,
                count: int, seed: int, base: Path = Path(".")) -> list[Any]:
    """Up to `count` raw inputs: items (file or inline text) from the inventory, or for series
    the trainval windows (a window is the raw input of a forecaster)."""
    if dataset["modality"] == "timeseries":
        arrays = load_arrays(tensors_dir, None, "trainval")
        rng = np.random.default_rng(seed)
        picked = rng.choice(len(arrays["ids"]), size=min(count, len(arrays["ids"])), replace=False)
        return [arrays["x"][i] for i in picked]
    inventory = pd.read_parquet(inventory_path)
    rows = inventory.sample(n=min(count, len(inventory)), random_state=seed)
    modality = create_modality(dataset["modality"], {}, dataset["layout"])
    return item_records(rows, modality, dataset, base)


def measure_latency(dataset: Mapping[str, Any], model_dir: str, inventory_path: str,
                    tensors_dir: str, output: str, seed: int = 0, samples: int = 50,
                    batch_size: int = 64, threads: int = 1,
                    base: Path = Path(".")) -> dict[str, Any]:
    """Write `latency.json`: p50/p95 single-item latency from raw input (decode + forward),
    decode and forward separately, batch throughput, model size and parameter count.

    The forward pass is Keras' compiled predict step (`predict_on_batch`), as a server would
    run it, on `threads` CPU threads (the rule's) or the GPU when one is visible."""
    import tensorflow as tf

    from dlworkflow.predict import load_model
    from dlworkflow.train import configure_tensorflow

    configure_tensorflow(threads, seed, deterministic=False)

    model, card = load_model(model_dir)
    settings = card.get("tensors") or {}
    modality = create_modality(dataset["modality"], {}, dataset["layout"])
    raw = raw_samples(dataset, inventory_path, tensors_dir, samples, seed, base)
    if not raw:
        raise ValueError(f"{inventory_path}: no items to time the model on")

    def decode(item: Any) -> Any:
        if dataset["modality"] == "timeseries":
            return item
        return modality.tensorize(item.read_bytes(), item, settings)

    def forward(batch: np.ndarray) -> Any:
        inputs = _as_input(batch)
        if len(model.inputs) > 1:  # forecaster with known-future covariates: zeros stand in
            future = model.inputs[1].shape[1:]
            inputs = {"past": inputs, "future": np.zeros((len(batch), *future), np.float32)}
        return model.predict_on_batch(inputs)

    forward(np.stack([decode(raw[0])]))  # warm-up: tracing is not latency
    total, decoding, passing = [], [], []
    for item in raw:
        start = time.perf_counter()
        array = decode(item)
        middle = time.perf_counter()
        forward(np.stack([array]))
        end = time.perf_counter()
        total.append(end - start)
        decoding.append(middle - start)
        passing.append(end - middle)
    decoded = np.stack([decode(item) for item in raw])
    batch = decoded[np.arange(batch_size) % len(decoded)]
    forward(batch)
    runs, start = 0, time.perf_counter()
    while runs < 3 or time.perf_counter() - start < 1.0:
        forward(batch)
        runs += 1
    throughput = runs * batch_size / (time.perf_counter() - start)
    gpus = tf.config.list_physical_devices("GPU")
    result = {
        "single_item_ms": _percentiles(total), "decode_ms": _percentiles(decoding),
        "forward_ms": _percentiles(passing), "items_timed": len(raw),
        "batch_size": batch_size, "batch_items_per_second": float(throughput),
        "model_bytes": int((Path(model_dir) / "model.keras").stat().st_size),
        "parameters": int(model.count_params()),
        "device": f"GPU ({gpus[0].name})" if gpus else f"CPU ({platform.processor() or platform.machine()})",
        "threads": threads,
        "input": "series windows" if dataset["modality"] == "timeseries" else "raw files/texts",
    }
    Path(output).write_text(json.dumps(result, indent=2) + "\n")
    return result
