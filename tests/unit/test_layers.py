"""Augmentation is on only in training; stateful preprocessing is fitted on fold-train only."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

keras = pytest.importorskip("keras")

from dlworkflow.modalities import create_modality  # noqa: E402
from dlworkflow.tasks import get_task  # noqa: E402

AUGMENT = {"image": {"flip": "horizontal", "rotation": 0.1, "zoom": 0.2, "contrast": 0.2},
           "audio": {"time_mask": 0.2, "freq_mask": 0.2, "shift": 0.1, "noise": 0.1},
           "timeseries": {"jitter": 0.1, "scaling": 0.2}}
SHAPES = {"image": (4, 16, 16, 3), "audio": (4, 32, 40, 1), "timeseries": (4, 50, 2)}


@pytest.mark.parametrize("name", sorted(AUGMENT))
def test_augmentation_changes_training_batches_only(name):
    modality = create_modality(name, {}, {"kind": "folders"})
    layers = modality.augmentation(AUGMENT[name], seed=1)
    assert layers
    x = np.random.default_rng(0).uniform(0.1, 1.0, SHAPES[name]).astype("float32")
    model = keras.Sequential([keras.Input(SHAPES[name][1:]), *layers])
    np.testing.assert_array_equal(model(x, training=False), x)
    assert not np.allclose(model(x, training=True), x)


def test_no_augmentation_for_text_and_none_when_switched_off():
    assert create_modality("text", {}, {"kind": "folders"}).augmentation({}, 0) == []
    image = create_modality("image", {}, {"kind": "folders"})
    assert image.augmentation({"flip": "none", "rotation": 0, "zoom": 0, "contrast": 0}, 0) == []


def test_a_token_seen_only_in_validation_is_out_of_vocabulary(sms_lines):
    rows = [line.decode("utf-8").split("\t", 1) for line in sms_lines]
    texts = pd.Series([t for _, t in rows])
    inventory = pd.DataFrame({"id": [f"m{i:03d}" for i in range(len(rows))],
                              "label": pd.Series([label for label, _ in rows], dtype="string"),
                              "group": pd.Series([None] * len(rows), dtype="string"),
                              "sha256": [str(hash(t)) for t in texts]})
    splits = get_task("classification").split_items(
        inventory, {"folds": 2, "test_size": 0.2, "stratify": True, "groups": True,
                    "test": None}, seed=0)
    fold_train = texts[splits["fold"].eq(0).fillna(False).to_numpy(dtype=bool)]
    fold_valid = texts[splits["fold"].eq(1).fillna(False).to_numpy(dtype=bool)]
    modality = create_modality("text", {}, {"kind": "delimited"})
    (vectorizer,) = modality.preprocessing(fold_train.tolist(), {"sequence_length": 40})
    seen = {w for t in fold_train for w in t.lower().split()}
    vocabulary = set(vectorizer.get_vocabulary())
    only_valid = sorted(w for t in fold_valid for w in t.lower().split()
                        if w.isalpha() and w not in seen)
    assert only_valid, "the validation fold should contain words the training fold lacks"
    word = only_valid[0]
    assert word not in vocabulary
    assert int(vectorizer(np.array([word]))[0, 0]) == 1  # 1 is [UNK] in TextVectorization
    known = sorted(w for w in seen if w.isalpha() and w in vocabulary)[0]
    assert int(vectorizer(np.array([known]))[0, 0]) > 1


def test_normalizer_uses_fold_train_statistics_only():
    rng = np.random.default_rng(0)
    train, valid = rng.normal(5.0, 2.0, (400, 10, 3)), rng.normal(50.0, 1.0, (100, 10, 3))
    modality = create_modality("timeseries", {}, {"kind": "folders"})
    (normalizer,) = modality.preprocessing(train.astype("float32"), {})
    out = np.asarray(normalizer(train.astype("float32")))
    assert abs(out.mean()) < 0.05 and abs(out.std() - 1) < 0.05
    assert np.asarray(normalizer(valid.astype("float32"))).mean() > 10  # valid not seen


def test_a_model_with_its_vectorizer_loads_elsewhere_and_takes_raw_text(tmp_path, sms_lines):
    texts = [line.decode("utf-8").split("\t", 1)[1] for line in sms_lines]
    modality = create_modality("text", {}, {"kind": "delimited"})
    (vectorizer,) = modality.preprocessing(texts, {"sequence_length": 20, "max_tokens": 500})
    inputs = keras.Input(shape=(1,), dtype="string")
    x = vectorizer(inputs)
    x = keras.layers.Embedding(500, 4)(x)
    outputs = keras.layers.Dense(1)(keras.layers.GlobalAveragePooling1D()(x))
    model = keras.Model(inputs, outputs)
    path = tmp_path / "model.keras"
    model.save(path)
    expected = np.asarray(model(np.array([["free entry now"]]))).ravel()[0]
    script = ("import keras, numpy as np, sys; "
              f"m = keras.saving.load_model({str(path)!r}); "
              "print(float(np.asarray(m(np.array([['free entry now']]))).ravel()[0]))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True).stdout.strip().splitlines()[-1]
    assert float(out) == pytest.approx(float(expected), abs=1e-5)


TFIDF_LAYERS = {"words": {"ngrams": 2}, "characters": {"standardize": "lower", "split": "character",
                                                        "ngrams": (2, 3, 4, 5)}}


@pytest.mark.parametrize("max_tokens", [200, None])
@pytest.mark.parametrize("kind", sorted(TFIDF_LAYERS))
def test_tfidf_vocabulary_and_weights_equal_keras_adapt(sms_lines, kind, max_tokens):
    """text_wide_cnn's TF-IDF layers get adapt's vocabulary and idf weights from a count in
    numpy: the same terms in the same order (200 tokens cut through terms of equal counts),
    the same outputs to the bit, for seen and unseen texts."""
    from dlworkflow.layers import adapted_tfidf

    texts = [line.decode("utf-8").split("\t", 1)[1] for line in sms_lines]
    texts += ["", "Café crème à la carte, déjà vu", texts[0]]  # empty, accents, a duplicate
    unseen = np.array(["never seen zyzzyva qwxqwx", "", "Free entry: call now!"])
    layers = [keras.layers.TextVectorization(max_tokens=max_tokens, output_mode="tf_idf",
                                             **TFIDF_LAYERS[kind]) for _ in range(2)]
    corpus = np.asarray(texts)
    layers[0].adapt(corpus)
    adapted_tfidf(layers[1], texts)
    assert layers[1].get_vocabulary() == layers[0].get_vocabulary()
    if max_tokens:  # the cut falls in a run of equal counts, ordered only by the tie-break
        assert len(layers[0].get_vocabulary()) == max_tokens
        full = keras.layers.TextVectorization(output_mode="count", **TFIDF_LAYERS[kind])
        full.adapt(corpus)
        counts = np.asarray(full(corpus)).sum(axis=0)
        assert counts[max_tokens - 1] == counts[max_tokens]
    for rows in (corpus, unseen):
        np.testing.assert_array_equal(np.asarray(layers[1](rows)), np.asarray(layers[0](rows)))


def test_spec_augment_survives_saving(tmp_path):
    from dlworkflow.layers import RandomScaling, SpecAugment

    model = keras.Sequential([keras.Input((8, 12, 1)), SpecAugment(0.2, 0.2, seed=3),
                              keras.layers.Flatten(), keras.layers.Dense(2)])
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert isinstance(loaded.layers[0], SpecAugment)
    series = keras.Sequential([keras.Input((5, 1)), RandomScaling(0.3, seed=1)])
    series.save(tmp_path / "s.keras")
    assert isinstance(keras.saving.load_model(tmp_path / "s.keras").layers[0], RandomScaling)
