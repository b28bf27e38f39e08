"""A pretrained sentence encoder for text transfer learning (`text_transfer`).

A BERT-family encoder (Devlin et al. 2019) read from the files Hugging Face publishes for it
(`config.json`, `vocab.txt`, `model.safetensors`) and run as two Keras layers, so that a saved
model takes raw strings as every text network here does, with no library beyond Keras and
TensorFlow: `WordPieceTokenizer` (BERT's uncased tokenisation) and `SentenceEncoder` (the
transformer, then the mean of its token vectors, L2-normalised, as sentence-transformers'
pooling). The default encoder is sentence-transformers' all-MiniLM-L6-v2 (Wang et al. 2020,
MiniLM; Reimers and Gurevych 2019, Sentence-BERT): six layers of 384, 22.7 M parameters,
90 MB. Its files are downloaded once into Keras' cache and checked against the published
SHA-256 of the weights; `train.transfer.text_weights` may instead name a folder that holds
them (a copy made on a machine with internet, or another BERT-family sentence encoder).
"""

from __future__ import annotations

import json
import struct
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlworkflow.errors import ConfigError

#: the default encoder, the files it needs and where they are published
ENCODER_NAME = "all-MiniLM-L6-v2"
ENCODER_HOST = "huggingface.co"
ENCODER_URL = f"https://{ENCODER_HOST}/sentence-transformers/{ENCODER_NAME}/resolve/main/"
ENCODER_FILES = ("config.json", "vocab.txt", "model.safetensors")
#: the published weights' SHA-256 (Hugging Face's LFS pointer of model.safetensors)
WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
#: tokens per text, [CLS] and [SEP] included (sentence-transformers' max_seq_length for it)
MAX_TOKENS = 256


def encoder_cache() -> Path:
    """Where the default encoder's files are kept: Keras' cache ($KERAS_HOME or ~/.keras)."""
    from dlworkflow.models.extractors import keras_cache

    return keras_cache() / "models" / ENCODER_NAME


def has_encoder_files(folder: Path) -> bool:
    return all((folder / name).is_file() for name in ENCODER_FILES)


def fetch_encoder(folder: Path) -> bool:
    """Download the default encoder's files into `folder`; False when that fails (no
    connection, or weights whose SHA-256 is not the published one)."""
    import hashlib
    import urllib.request

    from dlworkflow.models.extractors import can_download

    if not can_download(ENCODER_HOST):
        return False
    folder.mkdir(parents=True, exist_ok=True)
    try:
        for name in ENCODER_FILES:
            part = folder / f"{name}.part"
            with urllib.request.urlopen(ENCODER_URL + name, timeout=60) as response, \
                    open(part, "wb") as out:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
            if name == "model.safetensors":
                digest = hashlib.sha256(part.read_bytes()).hexdigest()
                if digest != WEIGHTS_SHA256:
                    part.unlink()
                    return False
            part.replace(folder / name)  # whole files only: a later job never reads a part
    except OSError:  # urllib's URLError and HTTPError are OSErrors
        return False
    return True


def encoder_weights(weights: str | None,
                    download: Callable[[Path], bool] = fetch_encoder) -> tuple[Path | None, str]:
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
    if download(folder):
        return folder, f"the pretrained text encoder {ENCODER_NAME} downloaded into {folder}"
    return None, (f"the pretrained text encoder {ENCODER_NAME} is neither in {folder} nor "
                  f"downloadable from {ENCODER_HOST}")


# --- BERT's uncased tokenisation (basic split, then WordPiece) ------------------------------

def _is_punctuation(char: str) -> bool:
    code = ord(char)
    if 33 <= code <= 47 or 58 <= code <= 64 or 91 <= code <= 96 or 123 <= code <= 126:
        return True
    return unicodedata.category(char).startswith("P")


def _is_cjk(code: int) -> bool:
    return any(low <= code <= high for low, high in (
        (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
        (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F)))


def basic_words(text: str, lowercase: bool = True) -> list[str]:
    """BERT's basic tokenisation: control characters dropped, whitespace split, CJK characters
    and punctuation as words of their own, lower case without accents when `lowercase`."""
    chars = []
    for char in text:
        code = ord(char)
        if code in (0, 0xFFFD) or (char not in "\t\n\r"
                                   and unicodedata.category(char) in ("Cc", "Cf")):
            continue
        if char in " \t\n\r" or unicodedata.category(char) == "Zs":
            chars.append(" ")
        elif _is_cjk(code):
            chars.append(f" {char} ")
        else:
            chars.append(char)
    words = []
    for word in "".join(chars).split():
        if lowercase:
            word = "".join(c for c in unicodedata.normalize("NFD", word.lower())
                           if unicodedata.category(c) != "Mn")
        start = 0
        for index, char in enumerate(word):
            if _is_punctuation(char):
                if index > start:
                    words.append(word[start:index])
                words.append(char)
                start = index + 1
        if start < len(word):
            words.append(word[start:])
    return words


@dataclass
class WordPiece:
    """Greedy longest-match-first WordPiece over a BERT vocabulary."""

    vocabulary: Sequence[str]
    lowercase: bool = True
    max_tokens: int = MAX_TOKENS

    def __post_init__(self):
        self.ids = {token: index for index, token in enumerate(self.vocabulary)}
        self.unknown, self.first, self.last = (self.ids[t] for t in ("[UNK]", "[CLS]", "[SEP]"))

    def pieces(self, word: str) -> list[int]:
        if len(word) > 100:  # BERT's max_input_chars_per_word
            return [self.unknown]
        found, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.ids:
                    found.append(self.ids[piece])
                    break
                end -= 1
            if end == start:  # no piece of the vocabulary starts here: the word is unknown
                return [self.unknown]
            start = end
        return found

    def encode(self, text: str) -> list[int]:
        """[CLS], the text's pieces (cut to fit `max_tokens`), [SEP]."""
        ids: list[int] = []
        for word in basic_words(text, self.lowercase):
            ids.extend(self.pieces(word))
            if len(ids) >= self.max_tokens - 2:
                break
        return [self.first, *ids[:self.max_tokens - 2], self.last]

    def batch(self, texts: Sequence[str]) -> np.ndarray:
        """Token ids of `texts`, padded with 0 ([PAD]) to the longest."""
        encoded = [self.encode(text) for text in texts]
        out = np.zeros((len(encoded), max((len(e) for e in encoded), default=2)), np.int32)
        for row, ids in enumerate(encoded):
            out[row, :len(ids)] = ids
        return out


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


def encoder_layers(folder: Path, max_tokens: int = MAX_TOKENS):
    """The tokenizer and the encoder of the files in `folder`, the encoder's weights set."""
    config = json.loads((folder / "config.json").read_text())
    if config.get("model_type", "bert") != "bert":
        raise ConfigError(f"{folder}/config.json: model_type {config.get('model_type')!r}; "
                          "the text encoder reads BERT-family models only")
    vocabulary = (folder / "vocab.txt").read_text(encoding="utf-8").split("\n")
    vocabulary = vocabulary[:-1] if vocabulary and vocabulary[-1] == "" else vocabulary
    from dlworkflow.layers import SentenceEncoder, WordPieceTokenizer

    tokenizer = WordPieceTokenizer(vocabulary, lowercase=True,
                                   max_tokens=min(max_tokens,
                                                  config["max_position_embeddings"]))
    encoder = SentenceEncoder(
        vocabulary_size=config["vocab_size"], width=config["hidden_size"],
        depth=config["num_hidden_layers"], heads=config["num_attention_heads"],
        inner=config["intermediate_size"], positions=config["max_position_embeddings"],
        epsilon=float(config.get("layer_norm_eps", 1e-12)), name="sentence_encoder")
    encoder.build((None, None))
    encoder.set_from(read_safetensors(folder / "model.safetensors"), folder)
    return tokenizer, encoder


def encode_texts(model, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """`model` (strings to vectors) over `texts`, in batches of similar length (little
    padding), returned in the texts' order."""
    import tensorflow as tf

    texts = np.asarray(texts, dtype=object)
    order = np.argsort([len(t) for t in texts], kind="stable")
    out = None
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        values = np.asarray(model.predict_on_batch(tf.constant(texts[rows].tolist())))
        if out is None:
            out = np.zeros((len(texts), *values.shape[1:]), values.dtype)
        out[rows] = values
    return out if out is not None else np.zeros((0, 0), np.float32)
