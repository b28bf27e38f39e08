"""Loading shards for training: one function returns a `tf.data.Dataset` for (dataset, fold, part).

Small data is loaded into RAM once (`in_memory="auto"` picks it below a byte budget); larger
data streams shard by shard through a shuffle buffer of a few shards' rows, then is batched
and prefetched, so memory stays flat as the data grows. Test shards are never read here:
they belong to the final step.
"""

from __future__ import annotations

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


def encode_targets(rows: pd.DataFrame, classes: tuple[str, ...]) -> np.ndarray | None:
    """Targets of index rows: class numbers (-1 for a class not in `classes`) or values."""
    if "label" not in rows or rows["label"].isna().all():
        return None
    if classes:
        lookup = {c: i for i, c in enumerate(classes)}
        return rows["label"].astype(str).map(lambda c: lookup.get(c, -1)).to_numpy(dtype=np.int64)
    return rows["label"].astype(float).to_numpy(dtype=np.float32)


def _shard_rows(path: Path, wanted: np.ndarray | None) -> dict[str, np.ndarray]:
    """The shard's per-row arrays (ids, x, and y / x_future / x_mask when stored) for the
    `wanted` ids, or all of them (None: no id is looked up, nothing is copied)."""
    arrays = load_shard(path)
    count = len(arrays["ids"])
    per_row = {k: v for k, v in arrays.items() if np.ndim(v) and len(v) == count}
    if wanted is None:
        return per_row
    keep = np.isin(arrays["ids"], wanted)
    return {k: v[keep] for k, v in per_row.items()}


def _wanted_by_shard(table: pd.DataFrame, rows: pd.DataFrame) -> dict[str, np.ndarray | None]:
    """Per shard, the ids of `rows` it must give, or None where `rows` hold all of the shard's
    rows in `table` (the index or plan, which list every row a shard can hold)."""
    total = table["shard"].value_counts()
    wanted: dict[str, np.ndarray | None] = {}
    for shard, part in rows.groupby("shard", sort=True):
        wanted[str(shard)] = None if len(part) == total[shard] else part["id"].to_numpy(dtype=str)
    return wanted


def _shard_arrays(path: Path, wanted: np.ndarray | None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    rows = _shard_rows(path, wanted)
    return rows["ids"], rows["x"], rows.get("y")


def load_arrays(tensors_dir: str | Path, fold: int | None, part: str, gap: int = 0,
                use_sample: bool = True, shards: list[str] | None = None) -> dict[str, Any]:
    """The selected rows as in-memory arrays: ids, x, y (class index, value or horizon), and
    x_future (forecasting with known-future covariates), ordered by id. `shards` limits the
    rows to those shards (e.g. one shard as a shape example)."""
    tensors_dir = Path(tensors_dir)
    index = pd.read_parquet(tensors_dir / "index.parquet")
    rows = select(index, fold, part, gap, use_sample)
    if shards is not None:
        rows = rows[rows["shard"].isin(shards)]
    classes = _classes(index)
    return _gather(tensors_dir, rows, classes, _wanted_by_shard(index, rows))


def load_test_arrays(plan_path: str | Path, shard_paths: list[str], classes: tuple[str, ...],
                     held_out_only: bool = True) -> dict[str, Any]:
    """The test rows (for the final step only) as arrays, like `load_arrays`.

    Labels come from the plan and are coded with the trainval `classes`; a test label the
    training never saw gets -1 (counted wrong). For forecasting, `held_out_only` keeps the
    windows whose targets all lie in the test period (the held-out horizon).
    """
    plan = pd.read_parquet(plan_path)
    rows = plan[plan["role"] == "test"]
    if held_out_only and "target_start" in rows:
        first_test = rows.groupby("series")["target_end"].transform("min")
        rows = rows[rows["target_start"] >= first_test]
    folder = Path(shard_paths[0]).parent if shard_paths else Path(".")
    wanted = {Path(p).stem for p in shard_paths}
    missing = sorted(set(rows["shard"]) - wanted)
    if missing:
        raise FileNotFoundError(f"test shards {', '.join(missing)} are not among the inputs")
    return _gather(folder, rows, classes, _wanted_by_shard(plan, rows))


def _gather(tensors_dir: Path, rows: pd.DataFrame, classes: tuple[str, ...],
            wanted: dict[str, np.ndarray | None]) -> dict[str, Any]:
    parts = [_shard_rows(tensors_dir / f"{shard}.npz", ids) for shard, ids in wanted.items()]
    if not parts:
        return {"ids": np.array([], dtype=str), "x": np.empty((0,)), "y": None, "classes": classes}
    ids = np.concatenate([p["ids"] for p in parts])
    order = np.argsort(ids, kind="stable")
    out: dict[str, Any] = {"ids": ids[order], "classes": classes}
    for key in parts[0]:
        if key != "ids":
            out[key] = np.concatenate([p[key] for p in parts])[order]
    if "y" not in out:
        out["y"] = encode_targets(rows.set_index("id").loc[out["ids"]].reset_index(), classes)
    return out


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
                 use_sample: bool = True, pool: int = 4):
    """A batched `tf.data.Dataset` of (x, y) for one fold and part, streamed or in RAM.

    Streaming reads the shards two at a time, in a new random order each epoch; tf.data's
    shuffle buffer mixes the rows of about `pool` shards (at least `shuffle_buffer` rows), so
    about `pool` + 2 shards' rows are in memory, whatever the size of the data.
    """
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
        if cache:
            dataset = dataset.cache()
        if shuffle:
            dataset = dataset.shuffle(min(shuffle_buffer, max(1, len(arrays["x"]))), seed=seed,
                                      reshuffle_each_iteration=True)
        return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    classes = _classes(index)
    wanted = _wanted_by_shard(index, rows)
    labels = rows.set_index("id")
    paths = [tensors_dir / f"{s}.npz" for s in shards]
    sample_x, sample_y = _first_example(paths[0], wanted[shards[0]], labels, classes)
    text = sample_x.dtype.kind == "U"
    x_type, y_type = (tf.string if text else tf.as_dtype(sample_x.dtype),
                      tf.as_dtype(sample_y.dtype))
    by_shard = {str(shard): (part["id"].to_numpy(dtype=str), encode_targets(part, classes))
                for shard, part in rows.groupby("shard", sort=False)}

    def read(number: np.int64) -> tuple[np.ndarray, np.ndarray]:
        path = paths[int(number)]
        ids, x, y = _shard_arrays(path, wanted[path.stem])
        if y is None:
            expected_ids, targets = by_shard[path.stem]
            # the index lists a shard's rows in the shard's order; look up only if not
            y = targets if np.array_equal(ids, expected_ids) else encode_targets(
                labels.loc[ids].reset_index(), classes)
        return (np.char.encode(x, "utf-8") if text else x), np.asarray(y, dtype=sample_y.dtype)

    def shard(number):
        # stateful: tf.data reads no more shards at once than it is told (below)
        x, y = tf.numpy_function(read, [number], (x_type, y_type), stateful=True)
        return (tf.ensure_shape(x, (None, *sample_x.shape)),
                tf.ensure_shape(y, (None, *sample_y.shape)))

    # Python only reads shards (one visit per shard, in a new order each epoch: the shuffle
    # of shard numbers is seeded), two at a time, kept in order; tf.data slices them, mixes
    # the rows of about `pool` shards in its shuffle buffer and batches. This hands shards
    # to tf.data faster than `from_generator` (docs/PERFORMANCE.md).
    numbers = tf.data.Dataset.range(len(paths))
    if shuffle:
        numbers = numbers.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    dataset = numbers.map(shard, num_parallel_calls=2, deterministic=True).unbatch()
    if cache:
        dataset = dataset.cache()
    if shuffle:
        rows_per_shard = int(np.ceil(len(rows) / len(paths)))
        dataset = dataset.shuffle(max(shuffle_buffer, pool * rows_per_shard), seed=seed,
                                  reshuffle_each_iteration=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _first_example(path: Path, wanted: np.ndarray | None, labels: pd.DataFrame,
                   classes: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    ids, x, y = _shard_arrays(path, wanted)
    if y is None:
        y = encode_targets(labels.loc[ids[:1]].reset_index(), classes)
    return x[0], np.asarray(y[0])


def resampled(dataset, labels: np.ndarray, classes: int, mode: str, seed: int,
              buffer: int = 10000):
    """One epoch of an unbatched (x, y) training stream with its classes balanced.

    `oversample` draws every class as often as the largest one has rows (rows of small
    classes repeat), `undersample` as often as the smallest (rows of large classes are left
    out, a different subset each epoch), in a new random order each epoch. Only the training
    part is ever resampled, so validation and test keep their real distribution.
    """
    import tensorflow as tf

    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=classes)
    present = [c for c in range(classes) if counts[c]]
    per_class = int(counts[present].max() if mode == "oversample" else counts[present].min())
    parts = []
    for number in present:
        only = dataset.filter(lambda x, y, c=number: tf.equal(tf.cast(y, tf.int64), c))
        parts.append(only.shuffle(int(min(counts[number], buffer)), seed=seed + number,
                                  reshuffle_each_iteration=True).repeat())
    # each class exactly per_class times per epoch, in a new random order every epoch
    order = tf.data.Dataset.from_tensor_slices(
        np.repeat(np.arange(len(present), dtype=np.int64), per_class)).shuffle(
        per_class * len(present), seed=seed, reshuffle_each_iteration=True)
    return tf.data.Dataset.choose_from_datasets(parts, order)
