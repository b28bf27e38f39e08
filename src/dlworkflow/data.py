"""Loading shards for training: one function returns a `tf.data.Dataset` for (dataset, fold, part).

Small data is loaded into RAM once (`in_memory="auto"` picks it below a byte budget); larger
data streams shard by shard through a shuffle buffer of a few shards' rows, then is batched
and prefetched, so memory stays flat as the data grows. Test shards are never read here:
they belong to the final step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dlworkflow.shardfile import dequantise, load_shard, map_npz
from dlworkflow.tasks import Task

IN_MEMORY_BYTES = 512 * 1024**2

#: rows gathered at a time from memory-mapped shards (`RowSource`): a round of the training
#: stream of forecasting windows, a chunk of a forecasting baseline's fit
ROUND_ROWS = 32_768


@dataclass(frozen=True)
class Part:
    """Which indexed rows to load: part `name` ("train", "valid" or "trainval") of `fold`
    from the shards in `folder`, chosen by the dataset's task (its one training rule).
    `fold=None` with "trainval" is every trainval row; test rows are never chosen."""

    task: Task
    folder: str | Path
    fold: int | None
    name: str
    gap: int = 0
    use_sample: bool = True

    def rows(self, index: pd.DataFrame) -> pd.DataFrame:
        """The part's rows of an index."""
        return self.task.select(index, self.fold, self.name, self.gap, self.use_sample)

    def index(self) -> pd.DataFrame:
        """The index of the part's folder."""
        return pd.read_parquet(Path(self.folder) / "index.parquet")


def _shard_rows(path: Path, wanted: np.ndarray | None,
                series: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """The shard's per-row arrays (ids, x, and y / x_future / x_mask when stored) for the
    `wanted` ids, or all of them (None: no id is looked up, nothing is copied); `series`, when
    given, receives the series a window shard stores once (`shard_series`)."""
    arrays = load_shard(path)
    if series is not None:
        series.update(stored_series(arrays))
    count = len(arrays["ids"])
    per_row = {k: v for k, v in arrays.items()
               if np.ndim(v) and len(v) == count and not k.startswith("series_")}
    if wanted is None:
        return per_row
    keep = np.isin(arrays["ids"], wanted)
    return {k: v[keep] for k, v in per_row.items()}


def shard_bytes(folder: str | Path, shards: list[str]) -> int:
    """Bytes of the named shards in `folder` (what loading them into RAM costs)."""
    return sum((Path(folder) / f"{s}.npz").stat().st_size for s in shards)


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


def load_arrays(part: Part, shards: list[str] | None = None) -> dict[str, Any]:
    """The part's rows as in-memory arrays: ids, x, y (class index, value or horizon), and
    x_future (forecasting with known-future covariates), ordered by id. `shards` limits the
    rows to those shards (e.g. one shard as a shape example)."""
    index = part.index()
    rows = part.rows(index)
    if shards is not None:
        rows = rows[rows["shard"].isin(shards)]
    classes = part.task.classes(index)
    return _gather(part.task, Path(part.folder), rows, classes, _wanted_by_shard(index, rows))


def load_test_arrays(task: Task, plan_path: str | Path, shard_paths: list[str],
                     classes: tuple[str, ...]) -> dict[str, Any]:
    """The test rows (for the final step only) as arrays, like `load_arrays`.

    Labels come from the plan and are coded with the trainval `classes`; a test label the
    training never saw gets -1 (counted wrong). The task says which test rows are scored
    (forecasting: the windows whose targets all lie in the test period).
    """
    plan = pd.read_parquet(plan_path)
    rows = task.held_out(plan[plan["role"] == "test"])
    folder = Path(shard_paths[0]).parent if shard_paths else Path(".")
    wanted = {Path(p).stem for p in shard_paths}
    missing = sorted(set(rows["shard"]) - wanted)
    if missing:
        raise FileNotFoundError(f"test shards {', '.join(missing)} are not among the inputs")
    return _gather(task, folder, rows, classes, _wanted_by_shard(plan, rows))


def _gather(task: Task, tensors_dir: Path, rows: pd.DataFrame, classes: tuple[str, ...],
            wanted: dict[str, np.ndarray | None]) -> dict[str, Any]:
    # a window shard's series histories (the forecasting baselines fit on them)
    series: dict[str, np.ndarray] | None = {} if task.shard_unit == "windows" else None
    parts = [_shard_rows(tensors_dir / f"{shard}.npz", ids, series)
             for shard, ids in wanted.items()]
    if not parts:
        return {"ids": np.array([], dtype=str), "x": np.empty((0,)), "y": None, "classes": classes}
    ids = np.concatenate([p["ids"] for p in parts])
    order = np.argsort(ids, kind="stable")
    out: dict[str, Any] = {"ids": ids[order], "classes": classes}
    for key in parts[0]:
        if key != "ids":
            out[key] = np.concatenate([p[key] for p in parts])[order]
    if "y" not in out:
        out["y"] = task.encode_targets(rows.set_index("id").loc[out["ids"]].reset_index(), classes)
    if series:
        out["series"] = series
    return out


def shard_series(path: Path) -> dict[str, np.ndarray]:
    """A window shard's series as it stores them once: each series' target values up to its
    last window's first target; empty for shards written before they were stored."""
    return stored_series(load_shard(path))


def stored_series(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The series in a loaded shard's `series_names`, `series_offsets`, `series_values`."""
    if "series_names" not in arrays:
        return {}
    # a copy: a view would keep the whole shard it was read with in memory
    values, offsets = np.array(arrays["series_values"]), arrays["series_offsets"]
    return {str(name): values[offsets[i]: offsets[i + 1]]
            for i, name in enumerate(arrays["series_names"])}


class RowSource:
    """A part's rows, gathered on demand from memory maps of its shards: row i is the part's
    i-th id in sorted order (as `load_arrays` orders them). It holds two integers per row (the
    shard and the row's place in it); `take` reads the rows asked for and nothing else, and
    unmaps the shards again, so what is resident is what was taken, whatever the data's size.
    """

    def __init__(self, part: Part, rows: pd.DataFrame | None = None,
                 classes: tuple[str, ...] | None = None) -> None:
        if rows is None or classes is None:  # the part's rows and classes, when not known
            index = part.index()
            rows, classes = part.rows(index), part.task.classes(index)
        self.task, self.folder, self.classes = part.task, Path(part.folder), classes
        ids = rows["id"].to_numpy(dtype=str)
        order = np.argsort(ids, kind="stable")
        rows, ids = rows.iloc[order], ids[order]
        self.shards = sorted(rows["shard"].unique())
        self.shard = rows["shard"].map({s: i for i, s in enumerate(self.shards)}).to_numpy(np.int32)
        self.position = np.empty(len(rows), np.int64)
        stores_y = True
        for number, shard in enumerate(self.shards):
            mine = np.flatnonzero(self.shard == number)
            arrays = map_npz(self.folder / f"{shard}.npz")
            stores_y = stores_y and "y" in arrays
            stored = np.asarray(arrays["ids"])
            del arrays
            sorter = np.argsort(stored, kind="stable")
            wanted = ids[mine]
            found = sorter[np.searchsorted(stored, wanted, sorter=sorter).clip(0, len(stored) - 1)]
            if not np.array_equal(stored[found], wanted):
                raise FileNotFoundError(f"{self.folder / shard}.npz lacks rows the index lists "
                                        "for it: rerun the tensors step")
            self.position[mine] = found
        # rows for the coded targets of shards that do not store y (items; windows do)
        self._rows = None if stores_y else rows

    def __len__(self) -> int:
        return len(self.position)

    def take(self, rows: np.ndarray) -> dict[str, Any]:
        """Rows `rows` (numbers in the source's order, in the order given) as arrays: ids, x,
        y and what else the shards store per row."""
        rows = np.asarray(rows, dtype=np.int64)
        out: dict[str, Any] = {"classes": self.classes}
        for number in np.unique(self.shard[rows]):
            picked = np.flatnonzero(self.shard[rows] == number)
            local = self.position[rows[picked]]
            arrays = map_npz(self.folder / f"{self.shards[number]}.npz")
            count = len(arrays["ids"])
            for key, value in arrays.items():
                if not np.ndim(value) or len(value) != count or key.startswith("series_"):
                    continue
                if key not in out:
                    out[key] = np.empty((len(rows), *value.shape[1:]), value.dtype)
                elif out[key].dtype != value.dtype:  # wider ids in this shard, say
                    out[key] = out[key].astype(np.result_type(out[key].dtype, value.dtype))
                out[key][picked] = value[local]
            if "x_scale" in arrays:  # quantised: restored as `load_shard` does
                if out["x"].dtype == np.uint8:
                    out["x"] = out["x"].astype(np.float32)
                out["x"][picked] = dequantise(out["x"][picked], arrays["x_scale"],
                                              arrays["x_offset"])
            del arrays  # unmapped: pages read stay in the page cache, not in this process
        if "y" not in out:
            out["y"] = self.task.encode_targets(self._rows.iloc[rows].reset_index(drop=True),
                                                self.classes)
        return out

    def sample(self, count: int, seed: int) -> dict[str, Any]:
        """At most `count` rows drawn without replacement, in the source's order (all rows
        when there are no more)."""
        if len(self) <= count:
            return self.take(np.arange(len(self)))
        return self.take(np.sort(np.random.default_rng(seed).choice(len(self), count,
                                                                     replace=False)))

    def chunks(self, size: int = ROUND_ROWS):
        """The rows in order, `size` at a time."""
        for start in range(0, len(self), size):
            yield self.take(np.arange(start, min(start + size, len(self))))


def make_dataset(part: Part, batch_size: int = 32, shuffle: bool = True, seed: int = 0,
                 in_memory: bool | str = "auto", cache: bool = False, shuffle_buffer: int = 2048,
                 pool: int = 4):
    """A batched `tf.data.Dataset` of (x, y) for one fold and part, streamed or in RAM.

    Streaming reads the shards two at a time, in a new random order each epoch; tf.data's
    shuffle buffer mixes the rows of about `pool` shards (at least `shuffle_buffer` rows), so
    about `pool` + 2 shards' rows are in memory, whatever the size of the data.
    """
    import tensorflow as tf

    tensors_dir = Path(part.folder)
    index = part.index()
    rows = part.rows(index)
    shards = sorted(rows["shard"].unique())
    if in_memory == "auto":
        in_memory = shard_bytes(tensors_dir, shards) <= IN_MEMORY_BYTES
    if in_memory:
        arrays = load_arrays(part)
        dataset = tf.data.Dataset.from_tensor_slices((arrays["x"], arrays["y"]))
        if cache:
            dataset = dataset.cache()
        if shuffle:
            dataset = dataset.shuffle(min(shuffle_buffer, max(1, len(arrays["x"]))), seed=seed,
                                      reshuffle_each_iteration=True)
        return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    task = part.task
    classes = task.classes(index)
    wanted = _wanted_by_shard(index, rows)
    labels = rows.set_index("id")
    paths = [tensors_dir / f"{s}.npz" for s in shards]
    sample_x, sample_y = _first_example(task, paths[0], wanted[shards[0]], labels, classes)
    text = sample_x.dtype.kind == "U"
    x_type, y_type = (tf.string if text else tf.as_dtype(sample_x.dtype),
                      tf.as_dtype(sample_y.dtype))
    by_shard = {str(shard): (members["id"].to_numpy(dtype=str),
                             task.encode_targets(members, classes))
                for shard, members in rows.groupby("shard", sort=False)}

    def read(number: np.int64) -> tuple[np.ndarray, np.ndarray]:
        path = paths[int(number)]
        ids, x, y = _shard_arrays(path, wanted[path.stem])
        if y is None:
            expected_ids, targets = by_shard[path.stem]
            # the index lists a shard's rows in the shard's order; look up only if not
            y = targets if np.array_equal(ids, expected_ids) else task.encode_targets(
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


def _first_example(task: Task, path: Path, wanted: np.ndarray | None, labels: pd.DataFrame,
                   classes: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    ids, x, y = _shard_arrays(path, wanted)
    if y is None:
        y = task.encode_targets(labels.loc[ids[:1]].reset_index(), classes)
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
