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
from dlworkflow.data import Part, RowSource


def _percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1000
    return {"p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95)),
            "mean": float(ms.mean())}


def raw_samples(ctx: RunContext, count: int) -> list[Any]:
    """Up to `count` raw inputs: items (file or inline text) from the inventory, or, where
    the modality's raw input is the stored array (series windows), trainval rows as
    {"x", "x_future"}."""
    if ctx.modality.timed_from_shards:
        source = RowSource(Part(ctx.task, ctx.folder("index"), None, "trainval"))
        rng = np.random.default_rng(ctx.seed)
        arrays = source.take(rng.choice(len(source), size=min(count, len(source)), replace=False))
        future = arrays.get("x_future")
        return [{"x": arrays["x"][i], **({"x_future": future[i]} if future is not None else {})}
                for i in range(len(arrays["ids"]))]
    inventory = pd.read_parquet(ctx.input("inventory"))
    rows = inventory.sample(n=min(count, len(inventory)), random_state=ctx.seed)
    return ctx.records(rows)


def single_forward(shipped: Any, modality: Any) -> Any:
    """One batch of stored arrays -> outputs, as a server runs the shipped model: the
    network's compiled predict step (`predict_on_batch`), or the exported pipeline."""
    if shipped.kind != "network":
        return shipped.outputs
    import tensorflow as tf

    model = shipped.model

    def forward(arrays: dict[str, Any]) -> Any:
        inputs = modality.model_inputs(arrays)
        if isinstance(inputs, np.ndarray) and inputs.dtype.kind == "U":
            inputs = tf.constant(inputs)  # Keras takes strings as a tf string tensor
        return model.predict_on_batch(inputs)

    return forward


def _gpus() -> list[Any]:
    import tensorflow as tf

    return tf.config.list_physical_devices("GPU")


def measure_latency(ctx: RunContext, batch_size: int = 64) -> dict[str, Any]:
    """Write `latency.json` for the shipped model: p50/p95 single-item latency from raw input
    (decode + forward), decode and forward separately, batch throughput, size and parameters.

    A network runs Keras' compiled predict step (`predict_on_batch`), as a server would, on
    the rule's CPU threads or the GPU when one is visible; a baseline runs its exported
    pipeline, and TensorFlow is then not even imported (its import alone costs 5-7 s of
    CPU). `final.latency_items` items are timed."""
    from dlworkflow.shipping import load_shipped

    kind = json.loads(Path(ctx.input("shipped")).read_text())["shipped"]
    if kind == "network":
        from dlworkflow.train import configure_tensorflow

        configure_tensorflow(ctx.threads, ctx.seed, deterministic=False)
    shipped = load_shipped(ctx.folder("model"), kind)
    settings = shipped.card.get("tensors") or {}
    modality = ctx.modality
    raw = raw_samples(ctx, int(ctx.section("final").get("latency_items", 50)))
    if not raw:
        raise ValueError(f"{ctx.input('inventory')}: no items to time the model on")
    forward_batch = single_forward(shipped, modality)

    def decode(item: Any) -> dict[str, Any]:
        if modality.timed_from_shards:
            return item
        return {"x": modality.tensorize(item.read_bytes(), item, settings)}

    def stack(rows: list[dict[str, Any]]) -> dict[str, Any]:
        return {key: np.stack([row[key] for row in rows]) for key in rows[0]}

    def forward(rows: list[dict[str, Any]]) -> Any:
        return forward_batch(stack(rows))

    forward([decode(raw[0])])  # warm-up: tracing is not latency
    total, decoding, passing = [], [], []
    for item in raw:
        start = time.perf_counter()
        array = decode(item)
        middle = time.perf_counter()
        forward([array])
        end = time.perf_counter()
        total.append(end - start)
        decoding.append(middle - start)
        passing.append(end - middle)
    decoded = [decode(item) for item in raw]
    batch = [decoded[i % len(decoded)] for i in range(batch_size)]
    forward(batch)
    runs, start = 0, time.perf_counter()
    while runs < 3 or time.perf_counter() - start < 1.0:
        forward(batch)
        runs += 1
    throughput = runs * batch_size / (time.perf_counter() - start)
    gpus = _gpus() if shipped.kind == "network" else []
    result = {
        "model": shipped.card["architecture"], "kind": shipped.kind,
        "single_item_ms": _percentiles(total), "decode_ms": _percentiles(decoding),
        "forward_ms": _percentiles(passing), "items_timed": len(raw),
        "batch_size": batch_size, "batch_items_per_second": float(throughput),
        "model_bytes": shipped.size(), "parameters": shipped.parameters,
        "device": f"GPU ({gpus[0].name})" if gpus
        else f"CPU ({platform.processor() or platform.machine()})",
        "threads": ctx.threads, "input": modality.raw_input,
    }
    Path(ctx.output("latency")).write_text(json.dumps(result, indent=2) + "\n")
    return result
