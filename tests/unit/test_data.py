"""The shard loader: streaming and in-RAM give the same items; streaming reshuffles per epoch."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_digits

from dlworkflow.data import Part, make_dataset
from dlworkflow.shardfile import save_shard
from dlworkflow.tasks import get_task

CLASS, FORECASTING = get_task("classification"), get_task("forecasting")


@pytest.fixture(scope="module")
def digit_shards(tmp_path_factory):
    """scikit-learn's 1,797 digits as uint8 images in shards of 100, one trainval fold 0."""
    folder = tmp_path_factory.mktemp("shards")
    digits = load_digits()
    images = np.rint(digits.images * (255 / 16)).astype(np.uint8)[..., None]
    ids = np.array([f"d{i:05d}" for i in range(len(images))])
    rows = []
    for number, first in enumerate(range(0, len(images), 100)):
        name = f"trainval-{number:05d}"
        save_shard(str(folder / f"{name}.npz"), {"ids": ids[first: first + 100],
                                            "x": images[first: first + 100]})
        rows += [{"id": ids[i], "label": str(digits.target[i]), "role": "trainval",
                  "fold": i % 5, "in_sample": True, "shard": name}
                 for i in range(first, min(first + 100, len(images)))]
    index = pd.DataFrame(rows)
    index["fold"] = index["fold"].astype("Int64")
    index.to_parquet(folder / "index.parquet", index=False)
    return folder, images, digits.target


def _epoch(dataset):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in dataset], strict=True)
    return np.concatenate(xs), np.concatenate(ys)


def _rows(xs, ys) -> list[tuple[bytes, bytes]]:
    """The (x, y) pairs of an epoch as bytes, in a fixed order."""
    return sorted(zip(map(bytes, xs), map(bytes, ys), strict=True))


def test_streamed_epochs_hold_every_training_item_once_in_a_new_order(digit_shards):
    folder, images, target = digit_shards
    dataset = make_dataset(Part(CLASS, folder, 0, "train"), batch_size=64, shuffle=True, seed=3,
                           in_memory=False, pool=3)
    first, labels = _epoch(dataset)
    second, _ = _epoch(dataset)
    train = np.arange(len(images)) % 5 != 0
    assert len(first) == len(second) == train.sum()
    key = lambda x: sorted(x.reshape(len(x), -1).sum(axis=1).tolist())  # noqa: E731
    assert key(first) == key(second) == key(images[train])
    assert not np.array_equal(first, second)  # reshuffled between epochs
    assert sorted(labels.tolist()) == sorted(target[train].tolist())
    # pairs stay aligned: each image keeps its own label
    lookup = {images[i].tobytes(): target[i] for i in np.flatnonzero(train)}
    assert all(lookup[x.tobytes()] == y for x, y in zip(first, labels, strict=True))
    again = make_dataset(Part(CLASS, folder, 0, "train"), batch_size=64, shuffle=True, seed=3,
                         in_memory=False, pool=3)
    assert np.array_equal(_epoch(again)[0], first)  # the same seed gives the same order
    # whole batches across shard boundaries (shards of 100 rows): only the last one is short
    sizes = [len(x) for x, _ in dataset]
    assert set(sizes[:-1]) == {64} and sizes[-1] == train.sum() % 64
    # a cached stream still holds every item once, in a new order each epoch
    cached = make_dataset(Part(CLASS, folder, 0, "train"), batch_size=64, shuffle=True, seed=3,
                          in_memory=False, pool=3, cache=True)
    one, two = _epoch(cached)[0], _epoch(cached)[0]
    assert key(one) == key(two) == key(images[train]) and not np.array_equal(one, two)


def test_streamed_without_shuffle_matches_in_ram(digit_shards):
    folder, _, _ = digit_shards
    valid = Part(CLASS, folder, 2, "valid")
    streamed = make_dataset(valid, batch_size=50, shuffle=False, in_memory=False)
    in_ram = make_dataset(valid, batch_size=50, shuffle=False, in_memory=True)
    (xs, ys), (xr, yr) = _epoch(streamed), _epoch(in_ram)
    assert xs.shape == xr.shape and xs.dtype == np.uint8
    assert np.array_equal(np.sort(xs.reshape(len(xs), -1).sum(1)), np.sort(xr.reshape(len(xr), -1).sum(1)))
    assert sorted(ys.tolist()) == sorted(yr.tolist())


@pytest.mark.parametrize("kind", ["text", "audio", "forecasting"])
def test_streamed_shards_of_each_modality_give_what_ram_gives(tmp_path, kind):
    """Real SMS texts (non-ASCII among them), real FSDD log-mels stored as uint8 codes with
    their scale, and co2 forecasting windows (targets stored in the shard): streamed, in
    shard order or shuffled, every row arrives once, with the type and shape RAM gives."""
    from dlworkflow.shardfile import quantise, read_npz
    from tests.helpers.shards import fsdd_spectrograms, sms_texts, write_shards, write_windows

    task = FORECASTING if kind == "forecasting" else CLASS
    if kind == "forecasting":
        folder, fold, part = write_windows(tmp_path / kind), None, "trainval"
    else:
        x, labels, folds = sms_texts(300) if kind == "text" else fsdd_spectrograms(60)[:3]
        folder, fold, part = write_shards(tmp_path / kind, x, labels, folds, 64), 1, "train"
    if kind == "audio":
        for path in folder.glob("*.npz"):
            arrays = read_npz(path)
            save_shard(str(path), {"ids": arrays["ids"], **quantise(arrays["x"])})
    in_ram = make_dataset(Part(task, folder, fold, part), batch_size=32, shuffle=False,
                          in_memory=True)
    xr, yr = _epoch(in_ram)
    for shuffle in (False, True):
        streamed = make_dataset(Part(task, folder, fold, part), batch_size=32, shuffle=shuffle,
                                in_memory=False, pool=2)
        assert streamed.element_spec[0].dtype == in_ram.element_spec[0].dtype
        assert streamed.element_spec[1].dtype == in_ram.element_spec[1].dtype
        xs, ys = _epoch(streamed)
        assert xs.shape == xr.shape and ys.shape == yr.shape and len(xs) > 0
        assert _rows(xs, ys) == _rows(xr, yr)  # every row once, each with its own target
    if kind == "text":
        assert any(not text.decode().isascii() for text in xs)  # UTF-8 round trip
        assert set(t.decode() for t in xs) <= set(x)
    if kind == "audio":
        assert xs.dtype == np.float32  # the codes come back as values


@pytest.mark.parametrize("mode", ["oversample", "undersample"])
def test_resampling_balances_training_epochs_only(tmp_path, mode):
    """Real digits made imbalanced (class 0 ten times as frequent as the rest): every epoch
    of the training stream is balanced; validation keeps its real counts."""
    from dlworkflow.train import FoldData
    from tests.helpers.shards import digits_images, fold_context, write_shards

    x, labels, _ = digits_images(1000)
    seen = {}
    keep = [i for i, label in enumerate(labels)
            if label == "0" or seen.setdefault(label, []).append(i) or len(seen[label]) <= 10]
    x, labels = x[keep], labels[keep]
    folds = np.arange(len(labels)) % 3
    folder = write_shards(tmp_path / "imbalanced", x, labels, folds)
    ctx = fold_context({"modality": "image", "task": "classification",
                        "layout": {"kind": "folders"}}, folder, {"train": {"resample": mode}})
    data = FoldData.load(ctx, str(folder), 0, 16, 5)
    train_counts = np.bincount(data.train_rows["label"].astype(int), minlength=10)
    assert train_counts[0] > 5 * train_counts[1:].max()
    epochs = []
    for _ in range(2):  # two epochs, each drawn afresh
        drawn = np.concatenate([y.numpy() for _, y in data.train])
        epochs.append(drawn)
        counts = np.bincount(drawn, minlength=10)
        expected = train_counts.max() if mode == "oversample" else train_counts.min()
        assert len(drawn) == 10 * expected
        assert (counts == expected).all()
    assert not np.array_equal(epochs[0], epochs[1])
    valid = np.bincount(data.valid["y"], minlength=10)
    assert valid[0] > 5 * valid[1:].max()  # the real distribution


def test_fold_datasets_run_without_autotuning(tmp_path):
    """Every dataset a fold hands to Keras (the endless training stream, the validation
    batches, one training pass for the BatchNormalization statistics, the validation batches
    as the exported model takes them) has tf.data's autotuning off: deleting an autotuned
    iterator waits for its tuning thread, which sleeps ever longer between plans (`fit`
    returned up to 43 s after its last epoch on the demo's FSDD folds). The stream still
    draws each pass in the order its seed and number give, and `untuned` keeps every row."""
    tf = pytest.importorskip("tensorflow")
    from dlworkflow.tfdata import untuned
    from dlworkflow.train import FoldData
    from tests.helpers.shards import digits_images, fold_context, write_shards

    x, labels, _ = digits_images(200)
    folder = write_shards(tmp_path / "digits", x, labels, np.arange(len(labels)) % 4)
    ctx = fold_context({"modality": "image", "task": "classification",
                        "layout": {"kind": "folders"}}, folder, {"train": {}})
    data = FoldData.load(ctx, str(folder), 0, 16, 5)
    handed = {"stream": data.stream(), "validation": data.valid_set, "one pass": data.train,
              "exported inputs": data.model_batches(data.valid_set)}
    for name, dataset in handed.items():
        assert dataset.options().autotune.enabled is False, name
    assert tf.data.Dataset.range(3).options().autotune.enabled is not False  # the default

    stream = iter(data.stream())
    drawn = np.concatenate([next(stream)[1].numpy() for _ in range(data.steps_per_epoch)])
    first_pass = np.concatenate([y.numpy() for _, y in data._epoch(5 * 1_000_003)])
    assert np.array_equal(drawn, first_pass) and len(drawn) == len(data.train_rows)
    kept = [int(n) for n in untuned(tf.data.Dataset.range(50).batch(7), prefetch=2).unbatch()]
    assert kept == list(range(50))


def test_read_npz_gives_what_np_load_gives(digit_shards, tmp_path):
    """The one-buffer shard reader against NumPy's own, on every kind of array a shard holds."""
    from dlworkflow.shardfile import read_npz

    folder, images, _ = digit_shards
    payload = {"ids": np.array(["a", "bé", "c"]), "x": images[:3], "y": np.float32([1, 2, 3]),
               "x_future": np.asfortranarray(np.arange(12.0).reshape(3, 4)),
               "x_mask": np.ones((3, 2), bool), "dropped": np.int64(2), "empty": np.zeros((0, 5))}
    save_shard(str(tmp_path / "s.npz"), payload)
    for path in [tmp_path / "s.npz", *sorted(folder.glob("*.npz"))[:2]]:
        ours = read_npz(path)
        with np.load(path) as theirs:
            assert sorted(ours) == sorted(theirs.files)
            for key in theirs.files:
                assert ours[key].dtype == theirs[key].dtype and ours[key].shape == theirs[key].shape
                assert np.array_equal(ours[key], theirs[key]), key
    with np.load(tmp_path / "s.npz") as written:  # what `save_shard` wrote is what it was given
        for key, value in payload.items():
            assert written[key].dtype == np.asarray(value).dtype
            assert np.array_equal(written[key], value), key
    assert read_npz(tmp_path / "s.npz")["x"].flags.writeable
    np.savez_compressed(tmp_path / "c.npz", x=images[:3])  # compressed: NumPy reads it
    assert np.array_equal(read_npz(tmp_path / "c.npz")["x"], images[:3])


@pytest.mark.parametrize("version", [(1, 0), (2, 0)])
def test_npy_headers_are_read_as_numpy_reads_them(version):
    """The shard reader's header pattern (NumPy's own parser uses `ast`, which Python 3.11
    cannot run on two threads at once) against NumPy, on every kind of array a shard holds;
    a header it does not know (a structured dtype) goes to NumPy."""
    import io

    from dlworkflow.shardfile import npy_header

    arrays = [np.float32(1.5), np.arange(5, dtype=np.uint8), np.zeros((3, 4), np.float16),
              np.zeros((0, 5)), np.ones((2, 3, 4, 5), bool), np.array(["ab", "cé"]),
              np.asfortranarray(np.zeros((3, 4))), np.zeros(7, ">i4"),
              np.zeros(3, dtype=[("a", "<i4"), ("b", "<f8")])]
    read = {(1, 0): np.lib.format.read_array_header_1_0,
            (2, 0): np.lib.format.read_array_header_2_0}[version]
    for array in arrays:
        written = io.BytesIO()
        np.lib.format.write_array(written, np.asanyarray(array), version=version)
        ours, theirs = io.BytesIO(written.getvalue()), io.BytesIO(written.getvalue())
        np.lib.format.read_magic(theirs)
        assert npy_header(ours) == read(theirs), array.dtype
        assert ours.tell() == theirs.tell()  # left where the data starts
    with pytest.raises(ValueError, match="magic string"):
        npy_header(io.BytesIO(b"PK\x03\x04 not an .npy at all"))
    newer = io.BytesIO()
    np.lib.format.write_array(newer, np.arange(3), version=(3, 0))
    assert npy_header(io.BytesIO(newer.getvalue())) is None  # read_npz hands it to NumPy


def _window_shards(folder, shard_rows=(700, 500, 968)):
    """co2 windows in three shards whose ids differ in width (as series names do), with the
    index the workflow writes."""
    from tests.helpers.shards import co2_windows

    x, y, starts, fold = co2_windows()
    names = ["co2", "mauna-loa-co2", "m"]
    ids, rows, first = [], [], 0
    for number, count in enumerate(shard_rows):
        part = slice(first, first + count)
        shard_ids = np.array([f"{names[number]}@{s:06d}" for s in starts[part]])
        save_shard(str(folder / f"trainval-{number:05d}.npz"),
                   {"ids": shard_ids[::-1], "x": x[part][::-1], "y": y[part][::-1]})
        rows.append(pd.DataFrame({"id": shard_ids, "series": names[number],
                                  "target_start": starts[part],
                                  "target_end": starts[part] + y.shape[1] - 1, "role": "trainval",
                                  "fold": pd.array(np.where(fold[part] >= 0, fold[part], None),
                                                   dtype="Int64"),
                                  "in_sample": True, "shard": f"trainval-{number:05d}"}))
        ids.append(shard_ids)
        first += count
    pd.concat(rows).to_parquet(folder / "index.parquet", index=False)
    return folder


def test_a_row_source_gathers_what_load_arrays_loads(tmp_path):
    """Rows taken from the memory maps, in any order and in chunks, equal the rows loaded
    whole, ids of every width kept; a shard missing a row the index lists is named."""
    from dlworkflow.data import RowSource, load_arrays

    folder = _window_shards(tmp_path)
    part = Part(FORECASTING, folder, None, "trainval")
    whole, source = load_arrays(part), RowSource(part)
    assert len(source) == len(whole["ids"]) == 2168
    picked = np.random.default_rng(0).permutation(len(source))[:900]
    taken = source.take(picked)
    for key in ("ids", "x", "y"):
        assert np.array_equal(taken[key], whole[key][picked])
    chunks = list(source.chunks(512))
    assert [len(c["ids"]) for c in chunks] == [512] * 4 + [120]
    assert np.array_equal(np.concatenate([c["x"] for c in chunks]), whole["x"])
    sample = source.sample(100, seed=1)
    assert len(set(sample["ids"])) == 100 and list(sample["ids"]) == sorted(sample["ids"])
    index = pd.read_parquet(folder / "index.parquet")
    index.loc[0, "id"] = "co2@999999"
    index.to_parquet(folder / "index.parquet", index=False)
    with pytest.raises(FileNotFoundError, match=r"trainval-00000\.npz lacks rows.*rerun"):
        RowSource(part)


def test_forecasting_windows_stream_every_training_window_once_a_pass(tmp_path):
    """Windows are read on demand, never loaded whole: a pass holds each training window of
    the fold once, a new order each pass, the same order for the same seed; the statistics
    sample is every row when they are few."""
    from tests.helpers.shards import fold_context

    folder = _window_shards(tmp_path)
    FoldData = pytest.importorskip("dlworkflow.train").FoldData
    ctx = fold_context({"modality": "timeseries", "task": "forecasting",
                        "layout": {"kind": "long_csv"}}, folder, {"train": {}})
    data = FoldData.load(ctx, str(folder), None, batch_size=64, seed=3)  # the final model's
    assert not data.in_memory and len(data.train_arrays["ids"]) == len(data.train_rows) == 2168

    def rows(x, y):  # a window's last input and targets, in a fixed order when sorted
        return np.concatenate([x[:, -1, :1], y], axis=1)

    def epoch(seed):
        return np.concatenate([rows(x.numpy(), y.numpy()) for x, y, _ in data._epoch(seed)])

    def ordered(table):
        return table[np.lexsort(table.T[::-1])]

    first, second = epoch(7), epoch(8)
    expected = rows(data.train_arrays["x"], data.train_arrays["y"])
    assert np.array_equal(ordered(first), ordered(expected))
    assert not np.array_equal(first, second) and np.array_equal(first, epoch(7))
