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
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dlworkflow.context import RunContext
from dlworkflow.data import Part, load_arrays


def _percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1000
    return {"p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95)),
            "mean": float(ms.mean())}


def raw_samples(ctx: RunContext, count: int) -> list[Any]:
    """Up to `count` raw inputs: items (file or inline text) from the inventory, or, where
    the modality's raw input is the stored array (series windows), trainval rows."""
    if ctx.modality.timed_from_shards:
        arrays = load_arrays(Part(ctx.task, ctx.folder("index"), None, "trainval"))
        rng = np.random.default_rng(ctx.seed)
        picked = rng.choice(len(arrays["ids"]), size=min(count, len(arrays["ids"])), replace=False)
        return [arrays["x"][i] for i in picked]
    inventory = pd.read_parquet(ctx.input("inventory"))
    rows = inventory.sample(n=min(count, len(inventory)), random_state=ctx.seed)
    return ctx.records(rows)


def measure_latency(ctx: RunContext, batch_size: int = 64) -> dict[str, Any]:
    """Write `latency.json`: p50/p95 single-item latency from raw input (decode + forward),
    decode and forward separately, batch throughput, model size and parameter count.

    The forward pass is Keras' compiled predict step (`predict_on_batch`), as a server would
    run it, on the rule's CPU threads or the GPU when one is visible; `final.latency_items`
    items are timed."""
    import tensorflow as tf

    from dlworkflow.predict import load_model
    from dlworkflow.train import configure_tensorflow

    configure_tensorflow(ctx.threads, ctx.seed, deterministic=False)

    model_dir = ctx.folder("model")
    model, card = load_model(model_dir)
    settings = card.get("tensors") or {}
    modality = ctx.modality
    raw = raw_samples(ctx, int(ctx.section("final").get("latency_items", 50)))
    if not raw:
        raise ValueError(f"{ctx.input('inventory')}: no items to time the model on")

    def decode(item: Any) -> Any:
        if modality.timed_from_shards:
            return item
        return modality.tensorize(item.read_bytes(), item, settings)

    def forward(batch: np.ndarray) -> Any:
        inputs = modality.model_inputs({"x": batch})
        if batch.dtype.kind == "U":  # Keras takes strings as a tf string tensor
            inputs = tf.constant(inputs)
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
        "threads": ctx.threads, "input": modality.raw_input,
    }
    Path(ctx.output("latency")).write_text(json.dumps(result, indent=2) + "\n")
    return result
