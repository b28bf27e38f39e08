"""Loading shards for training: one function returns a `tf.data.Dataset` for (dataset, fold, part).

Small data is loaded into RAM once (`in_memory="auto"` picks it below a byte budget); larger
data streams shard by shard (interleave, shuffle buffer, batch, prefetch), so memory stays
flat as the data grows. Test shards are never read here: they belong to the final step.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dlworkflow.tensors import load_shard

IN_MEMORY_BYTES = 512 * 1024**2


@dataclass(frozen=True)
class Selection:
    """Which indexed rows a (fold, part) takes, and how labels become targets."""

    rows: pd.DataFrame
    classes: tuple[str, ...]
    forecasting: bool


def select(index: pd.DataFrame, fold: int | None, part: str, gap: int = 0,
           use_sample: bool = True) -> pd.DataFrame:
    """Rows of `part` ("train", "valid" or "trainval") for `fold`; never test rows."""
    rows = index[index["role"] == "trainval"]
    if use_sample and part != "trainval" and "in_sample" in rows:
        rows = rows[rows["in_sample"]]
    if part == "trainval":
        return rows
    if fold is None:
        raise ValueError("a fold is needed for part 'train' or 'valid'")
    if part == "valid":
        return rows[rows["fold"] == fold]
    if part != "train":
        raise ValueError(f"part must be train, valid or trainval, not {part!r}")
    if "target_start" in rows:  # forecasting: train only on windows that end before the gap
        val_start = int(rows.loc[rows["fold"] == fold, "target_start"].min())
        return rows[rows["target_end"] < val_start - gap]
    return rows[rows["fold"] != fold]


def _targets(rows: pd.DataFrame, classes: tuple[str, ...]) -> np.ndarray | None:
    if "label" not in rows or rows["label"].isna().all():
        return None
    if classes:
        lookup = {c: i for i, c in enumerate(classes)}
        return rows["label"].astype(str).map(lookup).to_numpy(dtype=np.int64)
    return rows["label"].astype(float).to_numpy(dtype=np.float32)


def _shard_arrays(path: Path, wanted: set[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    arrays = load_shard(path)
    keep = np.array([i in wanted for i in arrays["ids"]], dtype=bool)
    y = arrays["y"][keep] if "y" in arrays else None
    return arrays["ids"][keep], arrays["x"][keep], y


def load_arrays(tensors_dir: str | Path, fold: int | None, part: str, gap: int = 0,
                use_sample: bool = True) -> dict[str, Any]:
    """The selected rows as in-memory arrays: ids, x, y (class index, value or horizon)."""
    tensors_dir = Path(tensors_dir)
    index = pd.read_parquet(tensors_dir / "index.parquet")
    rows = select(index, fold, part, gap, use_sample)
    classes = _classes(index)
    wanted = set(rows["id"])
    ids, xs, ys = [], [], []
    for shard in sorted(rows["shard"].unique()):
        shard_ids, x, y = _shard_arrays(tensors_dir / f"{shard}.npz", wanted)
        ids.append(shard_ids)
        xs.append(x)
        ys.append(y)
    ids = np.concatenate(ids) if ids else np.array([], dtype=str)
    order = np.argsort(ids, kind="stable")
    x = np.concatenate(xs)[order] if xs else np.empty((0,))
    if ys and ys[0] is not None:
        y = np.concatenate(ys)[order]
    else:
        y = _targets(rows.set_index("id").loc[ids[order]].reset_index(), classes)
    return {"ids": ids[order], "x": x, "y": y, "classes": classes}


def _classes(index: pd.DataFrame) -> tuple[str, ...]:
    """Class names in a fixed order (all trainval labels), or () for regression/forecasting."""
    if "label" not in index or index["label"].isna().all():
        return ()
    labels = index.loc[index["role"] == "trainval", "label"]
    if pd.api.types.is_float_dtype(labels):
        return ()
    return tuple(sorted(labels.astype(str).unique()))


def make_dataset(tensors_dir: str | Path, fold: int | None, part: str, batch_size: int = 32,
                 shuffle: bool = True, seed: int = 0, in_memory: bool | str = "auto",
                 cache: bool = False, gap: int = 0, shuffle_buffer: int = 2048,
                 use_sample: bool = True):
    """A batched `tf.data.Dataset` of (x, y) for one fold and part, streamed or in RAM."""
    import tensorflow as tf

    tensors_dir = Path(tensors_dir)
    index = pd.read_parquet(tensors_dir / "index.parquet")
    rows = select(index, fold, part, gap, use_sample)
    shards = sorted(rows["shard"].unique())
    size = sum((tensors_dir / f"{s}.npz").stat().st_size for s in shards)
    if in_memory == "auto":
        in_memory = size <= IN_MEMORY_BYTES
    if in_memory:
        arrays = load_arrays(tensors_dir, fold, part, gap, use_sample)
        dataset = tf.data.Dataset.from_tensor_slices((arrays["x"], arrays["y"]))
    else:
        classes = _classes(index)
        wanted = set(rows["id"])
        labels = rows.set_index("id")
        sample_x, sample_y = _first_example(tensors_dir / f"{shards[0]}.npz", wanted, labels,
                                            classes)
        signature = (tf.TensorSpec((None, *sample_x.shape), tf.as_dtype(sample_x.dtype)),
                     tf.TensorSpec((None, *sample_y.shape), tf.as_dtype(sample_y.dtype)))

        def generate(path: bytes) -> Iterator[tuple[np.ndarray, np.ndarray]]:
            # one whole shard at a time: per-item Python yields would dominate the epoch
            ids, x, y = _shard_arrays(Path(path.decode()), wanted)
            if y is None:
                y = _targets(labels.loc[ids].reset_index(), classes)
            yield x, np.asarray(y)

        files = tf.data.Dataset.from_tensor_slices([str(tensors_dir / f"{s}.npz") for s in shards])
        if shuffle:
            files = files.shuffle(len(shards), seed=seed)
        dataset = files.interleave(
            lambda path: tf.data.Dataset.from_generator(generate, output_signature=signature,
                                                        args=(path,)).unbatch(),
            cycle_length=min(4, len(shards)), block_length=1,
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if cache:
        dataset = dataset.cache()
    if shuffle:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _first_example(path: Path, wanted: set[str], labels: pd.DataFrame,
                   classes: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    ids, x, y = _shard_arrays(path, wanted)
    if y is None:
        y = _targets(labels.loc[ids[:1]].reset_index(), classes)
    return x[0], np.asarray(y[0])
