"""The shard loader: streaming and in-RAM give the same items; streaming reshuffles per epoch."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_digits

from dlworkflow.data import make_dataset
from dlworkflow.tensors import _save


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
        _save(str(folder / f"{name}.npz"), {"ids": ids[first: first + 100],
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


def test_streamed_epochs_hold_every_training_item_once_in_a_new_order(digit_shards):
    folder, images, target = digit_shards
    dataset = make_dataset(folder, 0, "train", batch_size=64, shuffle=True, seed=3,
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
    again = make_dataset(folder, 0, "train", batch_size=64, shuffle=True, seed=3,
                         in_memory=False, pool=3)
    assert np.array_equal(_epoch(again)[0], first)  # the same seed gives the same order
    # whole batches across shard boundaries (shards of 100 rows): only the last one is short
    sizes = [len(x) for x, _ in dataset]
    assert set(sizes[:-1]) == {64} and sizes[-1] == train.sum() % 64
    # a cached stream still holds every item once, in a new order each epoch
    cached = make_dataset(folder, 0, "train", batch_size=64, shuffle=True, seed=3,
                          in_memory=False, pool=3, cache=True)
    one, two = _epoch(cached)[0], _epoch(cached)[0]
    assert key(one) == key(two) == key(images[train]) and not np.array_equal(one, two)


def test_streamed_without_shuffle_matches_in_ram(digit_shards):
    folder, _, _ = digit_shards
    streamed = make_dataset(folder, 2, "valid", batch_size=50, shuffle=False, in_memory=False)
    in_ram = make_dataset(folder, 2, "valid", batch_size=50, shuffle=False, in_memory=True)
    (xs, ys), (xr, yr) = _epoch(streamed), _epoch(in_ram)
    assert xs.shape == xr.shape and xs.dtype == np.uint8
    assert np.array_equal(np.sort(xs.reshape(len(xs), -1).sum(1)), np.sort(xr.reshape(len(xr), -1).sum(1)))
    assert sorted(ys.tolist()) == sorted(yr.tolist())


@pytest.mark.parametrize("mode", ["oversample", "undersample"])
def test_resampling_balances_training_epochs_only(tmp_path, mode):
    """Real digits made imbalanced (class 0 ten times as frequent as the rest): every epoch
    of the training stream is balanced; validation keeps its real counts."""
    from dlworkflow.train import FoldData
    from tests.helpers.shards import digits_images, write_shards

    x, labels, _ = digits_images(1000)
    seen = {}
    keep = [i for i, label in enumerate(labels)
            if label == "0" or seen.setdefault(label, []).append(i) or len(seen[label]) <= 10]
    x, labels = x[keep], labels[keep]
    folds = np.arange(len(labels)) % 3
    folder = write_shards(tmp_path / "imbalanced", x, labels, folds)
    data = FoldData("classification", str(folder), 0, 0, 16, 5, mode)
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


def test_read_npz_gives_what_np_load_gives(digit_shards, tmp_path):
    """The one-buffer shard reader against NumPy's own, on every kind of array a shard holds."""
    from dlworkflow.tensors import read_npz

    folder, images, _ = digit_shards
    payload = {"ids": np.array(["a", "bé", "c"]), "x": images[:3], "y": np.float32([1, 2, 3]),
               "x_future": np.asfortranarray(np.arange(12.0).reshape(3, 4)),
               "x_mask": np.ones((3, 2), bool), "dropped": np.int64(2), "empty": np.zeros((0, 5))}
    _save(str(tmp_path / "s.npz"), payload)
    for path in [tmp_path / "s.npz", *sorted(folder.glob("*.npz"))[:2]]:
        ours = read_npz(path)
        with np.load(path) as theirs:
            assert sorted(ours) == sorted(theirs.files)
            for key in theirs.files:
                assert ours[key].dtype == theirs[key].dtype and ours[key].shape == theirs[key].shape
                assert np.array_equal(ours[key], theirs[key]), key
    with np.load(tmp_path / "s.npz") as written:  # what `_save` wrote is what it was given
        for key, value in payload.items():
            assert written[key].dtype == np.asarray(value).dtype
            assert np.array_equal(written[key], value), key
    assert read_npz(tmp_path / "s.npz")["x"].flags.writeable
    np.savez_compressed(tmp_path / "c.npz", x=images[:3])  # compressed: NumPy reads it
    assert np.array_equal(read_npz(tmp_path / "c.npz")["x"], images[:3])
