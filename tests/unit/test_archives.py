"""Model files with the same bytes for the same model (dlworkflow.archives)."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import numpy as np

from dlworkflow.archives import FIXED_TIME, normalise_skops, save_keras
from dlworkflow.shipping import load_baseline, save_baseline
from tests.conftest import REPO
from tests.helpers.shards import digits_images, sms_texts


def _image_model(seed: int):
    import keras

    keras.backend.clear_session()  # layer names as a fresh job would have them
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.RandomRotation(0.1, seed=seed)(inputs)  # shares its dtype policy
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.Dropout(0.2, seed=seed)(keras.layers.Flatten()(x))
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))


def test_the_same_keras_model_saves_to_the_same_bytes_and_loads(tmp_path):
    import keras

    first, second = _image_model(1), _image_model(1)  # two objects, two sets of addresses
    save_keras(first, tmp_path / "a.keras")
    save_keras(second, tmp_path / "b.keras")
    assert (tmp_path / "a.keras").read_bytes() == (tmp_path / "b.keras").read_bytes()
    with zipfile.ZipFile(tmp_path / "a.keras") as archive:
        assert {info.date_time for info in archive.infolist()} == {FIXED_TIME}
        assert b"date_saved" not in archive.read("metadata.json")
    x = np.random.default_rng(0).random((5, 8, 8, 1)).astype("float32")
    loaded = keras.saving.load_model(tmp_path / "a.keras")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), first.predict(x, verbose=0))
    other = _image_model(2)  # other weights: other bytes
    save_keras(other, tmp_path / "c.keras")
    assert (tmp_path / "c.keras").read_bytes() != (tmp_path / "a.keras").read_bytes()


def _fitted(texts, labels):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    return make_pipeline(TfidfVectorizer(), LogisticRegression(max_iter=200)).fit(texts, labels)


SAVE_IN_A_FRESH_PROCESS = """
import sys
from dlworkflow.shipping import save_baseline
from tests.helpers.shards import sms_texts
from tests.unit.test_archives import _fitted
texts, labels, _ = sms_texts(60)
model = _fitted(texts, labels)
model.predict(texts)
save_baseline(model, sys.argv[1], {"kind": "text"})
"""


def test_the_same_baseline_saves_to_the_same_bytes_and_loads(tmp_path):
    import skops.io as sio

    texts, labels, _ = sms_texts(60)
    sio.dump(_fitted(texts, labels), tmp_path / "raw-a.skops")
    sio.dump(_fitted(texts, labels), tmp_path / "raw-b.skops")
    # skops names array files after memory addresses: the raw files differ
    assert (tmp_path / "raw-a.skops").read_bytes() != (tmp_path / "raw-b.skops").read_bytes()
    raw_size = (tmp_path / "raw-a.skops").stat().st_size
    for name in ("raw-a.skops", "raw-b.skops"):
        normalise_skops(tmp_path / name)
    assert (tmp_path / "raw-a.skops").read_bytes() == (tmp_path / "raw-b.skops").read_bytes()
    # the schema skops indents (the TF-IDF vocabulary is most of it) is written compact
    with zipfile.ZipFile(tmp_path / "raw-a.skops") as archive:
        assert b"\n" not in archive.read("schema.json")
    assert (tmp_path / "raw-a.skops").stat().st_size < raw_size / 2
    # a vectoriser that has transformed keeps id(stop_words), an address that differs from
    # one process to the next: two jobs must still write the same file
    for name in ("shipped", "again"):
        subprocess.run([sys.executable, "-c", SAVE_IN_A_FRESH_PROCESS, str(tmp_path / name)],
                       cwd=REPO, check=True)
    assert (tmp_path / "shipped" / "baseline.skops").read_bytes() == (
        tmp_path / "again" / "baseline.skops").read_bytes()
    estimator, _ = load_baseline(tmp_path / "shipped")
    np.testing.assert_array_equal(estimator.predict_proba(texts),
                                  _fitted(texts, labels).predict_proba(texts))


def test_a_baseline_with_shared_arrays_loads_after_renumbering(tmp_path):
    from sklearn.neighbors import KNeighborsClassifier

    x, labels, _ = digits_images(80, size=8)
    model = KNeighborsClassifier(3).fit(x.reshape(len(x), -1), labels)
    save_baseline(model, tmp_path, {"kind": "image"})
    estimator, _ = load_baseline(tmp_path)
    np.testing.assert_array_equal(estimator.predict(x.reshape(len(x), -1)),
                                  model.predict(x.reshape(len(x), -1)))
