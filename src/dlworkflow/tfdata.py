"""tf.data settings shared by the steps and the plugins (a leaf: it imports neither)."""

from __future__ import annotations

from typing import Any


def untuned(dataset: Any, prefetch: int = 0) -> Any:
    """`dataset` without tf.data's autotuning, and `prefetch` batches ahead when asked.

    An autotuned iterator has a thread that re-plans the pipeline at a period that doubles
    up to a minute, and deleting the iterator waits for that thread: `fit` returned up to
    43 s after its last epoch on the demo's FSDD folds, the process idle
    (docs/PERFORMANCE.md, "Training streams without autotuning"). These pipelines have
    nothing to tune: rows held in RAM, or shards read two at a time (`make_dataset`)."""
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    dataset = dataset.with_options(options)
    return dataset.prefetch(prefetch) if prefetch else dataset


def untuned_batches(inputs: Any, batch_size: int) -> Any:
    """Rows held in RAM (arrays, or a tuple or dict of them) in batches, `untuned`."""
    import tensorflow as tf

    return untuned(tf.data.Dataset.from_tensor_slices(inputs).batch(batch_size))
