"""Keras layers the workflow adds to models: training-only augmentation, per-fold
preprocessing, and a frozen BERT-family sentence encoder with its tokeniser (its weights
read by dlworkflow.models.text_encoder). Random layers act only when `training=True`, so
evaluation and the exported model see the input unchanged; adapted layers are fitted on a
fold's training rows only.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
from keras import ops

from dlworkflow.errors import ConfigError


@keras.saving.register_keras_serializable(package="dlworkflow")
class WaveformLogMel(keras.layers.Layer):
    """Waveforms (batch, samples, 1) to log-mel spectrograms (batch, bands, frames, 1) inside
    the network (`tensors.audio.representation: waveform`), so the audio networks read them
    as they read the shards' log-mels, and a saved model takes the samples. Each clip is
    floored `top_db` below its own loudest cell, as the shards' log-mels are: Keras'
    MelSpectrogram floors at the loudest cell of the whole batch, which would make a clip's
    features depend on the clips beside it."""

    def __init__(self, sample_rate: int = 16000, n_fft: int = 512, hop_length: int = 160,
                 n_mels: int = 64, top_db: float | None = 80.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sample_rate, self.n_fft, self.hop_length = sample_rate, n_fft, hop_length
        self.n_mels, self.top_db = n_mels, top_db
        # its own floor far below the -100 dB its power floor (1e-10) allows: never reached
        # (None is not accepted with power_to_db)
        self.mel = keras.layers.MelSpectrogram(
            fft_length=n_fft, sequence_stride=hop_length, sampling_rate=sample_rate,
            num_mel_bins=n_mels, power_to_db=True, top_db=1000.0, dtype="float32")

    def call(self, inputs):
        x = self.mel(ops.cast(inputs[..., 0], "float32"))
        if self.top_db is not None:
            x = ops.maximum(x, ops.max(x, axis=(1, 2), keepdims=True) - self.top_db)
        return ops.expand_dims(x, -1)

    def compute_output_shape(self, input_shape):
        frames = self.mel.compute_output_shape((input_shape[0], input_shape[1]))[-1]
        return (input_shape[0], self.n_mels, frames, 1)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "sample_rate": self.sample_rate, "n_fft": self.n_fft,
                "hop_length": self.hop_length, "n_mels": self.n_mels, "top_db": self.top_db}


@keras.saving.register_keras_serializable(package="dlworkflow")
class SpecAugment(keras.layers.Layer):
    """Masks one random band of frequencies and one random stretch of time (SpecAugment).

    Input (batch, freq, time, channels); `freq_mask` and `time_mask` are the largest masked
    share of each axis.
    """

    def __init__(self, freq_mask: float = 0.1, time_mask: float = 0.1, seed: int | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.freq_mask, self.time_mask, self.seed = freq_mask, time_mask, seed
        self.generator = keras.random.SeedGenerator(seed)

    def _band(self, size, share, batch):
        width = ops.cast(ops.floor(keras.random.uniform((batch, 1), 0, share * size + 1,
                                                        seed=self.generator)), "int32")
        start = ops.cast(keras.random.uniform((batch, 1), 0, 1, seed=self.generator)
                         * ops.cast(size - width + 1, "float32"), "int32")
        positions = ops.arange(size)[None, :]
        return (positions >= start) & (positions < start + width)

    def call(self, inputs, training=None):
        if not training:
            return inputs
        batch = ops.shape(inputs)[0]
        freq, time = inputs.shape[1], inputs.shape[2]
        freq_band = self._band(freq, self.freq_mask, batch)[:, :, None, None]
        time_band = self._band(time, self.time_mask, batch)[:, None, :, None]
        fill = ops.mean(inputs, axis=(1, 2, 3), keepdims=True)
        return ops.where(freq_band | time_band, fill, inputs)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "freq_mask": self.freq_mask,
                "time_mask": self.time_mask, "seed": self.seed}


@keras.saving.register_keras_serializable(package="dlworkflow")
class RandomScaling(keras.layers.Layer):
    """Multiplies each example by a random factor in [1 - factor, 1 + factor] (series scaling)."""

    def __init__(self, factor: float = 0.1, seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.factor, self.seed = factor, seed
        self.generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        if not training:
            return inputs
        shape = (ops.shape(inputs)[0],) + (1,) * (len(inputs.shape) - 1)
        scale = keras.random.uniform(shape, 1 - self.factor, 1 + self.factor, seed=self.generator)
        return inputs * ops.cast(scale, inputs.dtype)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "factor": self.factor, "seed": self.seed}


@keras.saving.register_keras_serializable(package="dlworkflow")
class LogitScale(keras.layers.Layer):
    """Multiplies its input by one trainable number, starting at 1: the weight a wide and
    deep image network learns for its frozen regression's logits (`train.image.wide_fit:
    fitted`), as a stacking model learns how far to trust a fitted model's outputs."""

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(), initializer="ones", name="scale")

    def call(self, inputs):
        return inputs * ops.cast(self.scale, inputs.dtype)


def _adaptable(data: Any, dtype: Any) -> Any:
    """Arrays are adapted on directly; a tf.data.Dataset (streamed folds) is passed through."""
    return data if hasattr(data, "element_spec") else np.asarray(data, dtype=dtype)


def adapted_text_vectorizer(train_texts: Any, max_tokens: int | None,
                            sequence_length: int) -> keras.layers.TextVectorization:
    """TextVectorization adapted on the fold's training texts only (index 1 = out of vocabulary)."""
    layer = keras.layers.TextVectorization(max_tokens=max_tokens,
                                           output_sequence_length=sequence_length)
    layer.adapt(_adaptable(train_texts, str))
    return layer


def adapted_tfidf(layer: keras.layers.TextVectorization, texts: Any) -> None:
    """Give a TF-IDF `TextVectorization` what `layer.adapt(texts)` would: its `max_tokens`
    most frequent terms (ties broken by the term, high to low), each with the idf
    log(1 + documents / (1 + documents holding it)) and the out-of-vocabulary column with
    their mean. Keras's adapt deduplicates each document's terms in a per-document map_fn;
    here the layer's own tokenizer runs once over the corpus and numpy counts: 1.8 s of CPU
    for a word and a character layer on SMS's 5,574 messages against adapt's 11.6 s
    (docs/PERFORMANCE.md). Vocabulary and weights equal adapt's (tests/unit/test_layers.py)."""
    import tensorflow as tf

    corpus = np.asarray(texts, dtype=str)
    lookup = getattr(layer, "_lookup_layer", None)
    tokens = (layer._preprocess(tf.expand_dims(tf.constant(corpus), -1))  # Keras's own
              if lookup is not None and hasattr(layer, "_preprocess") else None)  # tokenizer
    if tokens is None or not tokens.flat_values.shape[0]:  # a Keras 3 without it, or no terms
        layer.adapt(corpus)
        return
    unique, term = tf.unique(tokens.flat_values, out_idx=tf.int64)
    terms, term = unique.numpy(), term.numpy()
    counts = np.bincount(term, minlength=len(terms))
    pairs = np.sort(tokens.value_rowids().numpy().astype(np.int64) * len(terms) + term)
    pairs = pairs[np.concatenate([[True], pairs[1:] != pairs[:-1]])]  # (document, term) once
    documents = np.bincount(pairs % len(terms), minlength=len(terms))
    keep = terms != str(lookup.oov_token).encode()
    terms, counts, documents = terms[keep], counts[keep], documents[keep]
    order = np.lexsort((terms, counts))[::-1]
    if lookup.max_tokens:
        order = order[: lookup.max_tokens - 1]  # index 0 is the out-of-vocabulary column
    # the same TensorFlow ops as adapt, so the float32 weights are the same bits
    idf = tf.cast(tf.math.log(1 + tf.constant(len(corpus), tf.int64)
                              / (1 + tf.constant(documents[order], tf.int64))),
                  keras.backend.floatx())
    layer.set_vocabulary([lookup.oov_token] + [t.decode() for t in terms[order]],
                         idf_weights=tf.concat([[tf.reduce_mean(idf)], idf], 0).numpy())


def adapted_normalizer(train_x: Any, axis: int | None = -1) -> keras.layers.Normalization:
    """Normalization whose mean and variance come from the fold's training rows only."""
    layer = keras.layers.Normalization(axis=axis)
    layer.adapt(_adaptable(train_x, np.float32))
    return layer


@keras.saving.register_keras_serializable(package="dlworkflow")
class KnownTermsUnitNorm(keras.layers.Layer):
    """TF-IDF rows without column 0 (TextVectorization's out-of-vocabulary count), scaled to
    unit length. Left in, that one column carries every unseen term of a new text and
    dominates its length: on SMS it cut a logistic regression's F1 of spam from 0.95 to 0.60."""

    def call(self, inputs):
        known = inputs[:, 1:]
        return known / ops.maximum(ops.sqrt(ops.sum(known * known, axis=-1, keepdims=True)),
                                   1e-12)


@keras.saving.register_keras_serializable(package="dlworkflow")
class SeriesStandardization(keras.layers.Layer):
    """Each series scaled by its own mean and spread over time, per channel (the convention
    of series classification: the shape of a series matters, not its level or scale)."""

    def __init__(self, epsilon: float = 1e-6, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def call(self, inputs):
        mean = ops.mean(inputs, axis=1, keepdims=True)
        spread = ops.std(inputs, axis=1, keepdims=True)
        return (inputs - mean) / (spread + self.epsilon)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package="dlworkflow")
class LastValue(keras.layers.Layer):
    """The last time step of one channel of a (batch, time, channels) window: (batch, 1)."""

    def __init__(self, channel: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.channel = channel

    def call(self, inputs):
        return inputs[:, -1, self.channel: self.channel + 1]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "channel": self.channel}


@keras.saving.register_keras_serializable(package="dlworkflow")
class RelativeToLast(keras.layers.Layer):
    """A window minus its own last time step, per channel: the model sees shape, not level."""

    def call(self, inputs):
        return inputs - inputs[:, -1:, :]


def window_spread(window):
    """Per channel, the mean absolute step-to-step change of a (batch, time, channels)
    window, (batch, 1, channels); 1 where the window does not change (nothing to scale).
    The networks scale by it (`WindowScaled`) and the loss weighs by it
    (`ForecastingTask.sample_weights`)."""
    spread = ops.mean(ops.abs(window[:, 1:, :] - window[:, :-1, :]), axis=1, keepdims=True)
    return ops.where(spread > 0, spread, ops.ones_like(spread))


@keras.saving.register_keras_serializable(package="dlworkflow")
class WindowScaled(keras.layers.Layer):
    """A window on its own scale: minus its last value and divided by its mean absolute
    change, per channel, so one global network sees series whose levels and spreads differ
    by orders of magnitude alike (the network's output is scaled back by `FromWindowScale`)."""

    def call(self, inputs):
        return (inputs - inputs[:, -1:, :]) / window_spread(inputs)


@keras.saving.register_keras_serializable(package="dlworkflow")
class FromWindowScale(keras.layers.Layer):
    """Changes predicted on a window's own scale back in its units: change x the target
    channel's mean absolute change + its last value. Inputs: [changes (batch, horizon),
    the window (batch, time, channels)]."""

    def call(self, inputs):
        change, window = inputs
        target = window[:, :, :1]
        return change * window_spread(target)[:, 0, :] + target[:, -1, :]


@keras.saving.register_keras_serializable(package="dlworkflow")
class SeasonalLinear(keras.layers.Layer):
    """A linear map from a scaled window's target channel (batch, time, channels) to the
    horizon's changes (batch, horizon), initialised at the seasonal-naive forecast: step h
    repeats the value `season` steps before it (the last season, again and again), or at
    the naive forecast (no change) when the season is 1 or longer than the window. Trained,
    it becomes a learned weighting of past seasons, as in NLinear (Zeng et al. 2023)."""

    def __init__(self, horizon: int, season: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.horizon, self.season = int(horizon), int(season)

    def build(self, input_shape):
        time = int(input_shape[1])
        picks = np.zeros((time, self.horizon), dtype="float32")
        if 1 < self.season <= time:
            for step in range(self.horizon):
                picks[time - self.season + step % self.season, step] = 1.0
        self.kernel = self.add_weight(shape=(time, self.horizon), name="kernel",
                                      initializer=keras.initializers.Constant(picks))

    def call(self, inputs):
        return ops.matmul(inputs[:, :, 0], self.kernel)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.horizon)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "horizon": self.horizon, "season": self.season}


@keras.saving.register_keras_serializable(package="dlworkflow")
class PositionalEmbedding(keras.layers.Layer):
    """Token embedding plus a learned embedding of each position (for the Transformer)."""

    def __init__(self, sequence_length: int, vocabulary: int, dim: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sequence_length, self.vocabulary, self.dim = sequence_length, vocabulary, dim
        self.tokens = keras.layers.Embedding(vocabulary, dim)
        self.positions = keras.layers.Embedding(sequence_length, dim)

    def build(self, input_shape: Any) -> None:
        # the embeddings built here, so a saved model builds them before its weights load
        # (Keras warns of a layer marked built with unbuilt state otherwise)
        self.tokens.build(input_shape)
        self.positions.build((self.sequence_length,))

    def call(self, inputs):
        positions = ops.arange(ops.shape(inputs)[-1])
        return self.tokens(inputs) + self.positions(positions)[None]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "sequence_length": self.sequence_length,
                "vocabulary": self.vocabulary, "dim": self.dim}


#: tokens per text, [CLS] and [SEP] included (sentence-transformers' max_seq_length for
#: all-MiniLM-L6-v2, the default encoder of dlworkflow.models.text_encoder)
MAX_TOKENS = 256


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


@keras.saving.register_keras_serializable(package="dlworkflow")
class WordPieceTokenizer(keras.layers.Layer):
    """Raw strings to BERT token ids ([PAD] = 0), in Python beside the graph."""

    def __init__(self, vocabulary, lowercase=True, max_tokens=MAX_TOKENS, **kwargs):
        super().__init__(**{**kwargs, "trainable": False})  # frozen, also when loaded
        self.vocabulary, self.lowercase, self.max_tokens = (list(vocabulary), lowercase,
                                                            int(max_tokens))
        self.wordpiece = WordPiece(self.vocabulary, lowercase, self.max_tokens)

    def _ids(self, texts):
        return self.wordpiece.batch([t.decode("utf-8", "replace") for t in texts.numpy()])

    def call(self, texts):
        import tensorflow as tf

        ids = tf.py_function(self._ids, [tf.reshape(texts, [-1])], tf.int32)
        # an op, not set_shape: the graph optimiser's shape inference sees the rank too
        return tf.ensure_shape(ids, [None, None])

    def compute_output_spec(self, texts):
        return keras.KerasTensor((texts.shape[0], None), dtype="int32")

    def get_config(self):
        return {**super().get_config(), "vocabulary": self.vocabulary,
                "lowercase": self.lowercase, "max_tokens": self.max_tokens}

@keras.saving.register_keras_serializable(package="dlworkflow")
class SentenceEncoder(keras.layers.Layer):
    """A BERT encoder (post-norm, exact GELU), then the mean of its token vectors over
    the text's tokens, L2-normalised; frozen."""

    def __init__(self, vocabulary_size, width, depth, heads, inner, positions,
                 epsilon=1e-12, **kwargs):
        super().__init__(**{**kwargs, "trainable": False})  # frozen, also when loaded
        self.sizes = {"vocabulary_size": int(vocabulary_size), "width": int(width),
                      "depth": int(depth), "heads": int(heads), "inner": int(inner),
                      "positions": int(positions), "epsilon": float(epsilon)}

    def build(self, input_shape):
        size = self.sizes
        width, inner = size["width"], size["inner"]

        def weight(name, shape):
            return self.add_weight(shape=shape, name=name, initializer="zeros",
                                   trainable=False)

        self.words = weight("words", (size["vocabulary_size"], width))
        self.positions = weight("positions", (size["positions"], width))
        self.token_type = weight("token_type", (width,))
        self.norm = (weight("norm_scale", (width,)), weight("norm_shift", (width,)))
        self.blocks = []
        for index in range(size["depth"]):
            names = {"qkv": (width, 3 * width), "qkv_bias": (3 * width,),
                     "out": (width, width), "out_bias": (width,),
                     "norm1_scale": (width,), "norm1_shift": (width,),
                     "up": (width, inner), "up_bias": (inner,), "down": (inner, width),
                     "down_bias": (width,), "norm2_scale": (width,),
                     "norm2_shift": (width,)}
            self.blocks.append({k: weight(f"block{index}_{k}", shape)
                                for k, shape in names.items()})

    def set_from(self, tensors: dict[str, np.ndarray], folder: Any) -> None:
        """Set the weights from a Hugging Face BertModel's tensors."""
        prefix = "bert." if "bert.embeddings.word_embeddings.weight" in tensors else ""

        def get(name):
            key = prefix + name
            if key not in tensors:
                raise ConfigError(f"{folder}/model.safetensors: no tensor {key}; the text "
                                  "encoder reads BERT-family models only")
            return tensors[key]

        def dense(name):
            return get(f"{name}.weight").T, get(f"{name}.bias")

        def norm(name):
            return get(f"{name}.weight"), get(f"{name}.bias")

        self.words.assign(get("embeddings.word_embeddings.weight"))
        self.positions.assign(get("embeddings.position_embeddings.weight"))
        self.token_type.assign(get("embeddings.token_type_embeddings.weight")[0])
        for variable, value in zip(self.norm, norm("embeddings.LayerNorm"), strict=True):
            variable.assign(value)
        for index, block in enumerate(self.blocks):
            layer = f"encoder.layer.{index}."
            parts = [dense(layer + f"attention.self.{n}") for n in ("query", "key", "value")]
            values = {"qkv": np.concatenate([p[0] for p in parts], axis=1),
                      "qkv_bias": np.concatenate([p[1] for p in parts])}
            values["out"], values["out_bias"] = dense(layer + "attention.output.dense")
            values["norm1_scale"], values["norm1_shift"] = norm(
                layer + "attention.output.LayerNorm")
            values["up"], values["up_bias"] = dense(layer + "intermediate.dense")
            values["down"], values["down_bias"] = dense(layer + "output.dense")
            values["norm2_scale"], values["norm2_shift"] = norm(layer + "output.LayerNorm")
            for key, value in values.items():
                block[key].assign(value)

    def _norm(self, x, scale, shift):
        mean = ops.mean(x, axis=-1, keepdims=True)
        variance = ops.mean(ops.square(x - mean), axis=-1, keepdims=True)
        return (x - mean) / ops.sqrt(variance + self.sizes["epsilon"]) * scale + shift

    def call(self, ids):
        heads, width = self.sizes["heads"], self.sizes["width"]
        mask = ops.cast(ops.not_equal(ids, 0), "float32")  # [PAD] is token 0
        length = ops.shape(ids)[1]
        x = (ops.take(self.words, ids, axis=0) + self.positions[:length][None]
             + self.token_type)
        x = self._norm(x, *self.norm)
        blocked = (1.0 - mask)[:, None, None, :] * -1e9  # no attention to padding

        def split(y):  # (batch, length, width) -> (batch, heads, length, width / heads)
            return ops.transpose(ops.reshape(y, (-1, length, heads, width // heads)),
                                 (0, 2, 1, 3))

        for block in self.blocks:
            query, key, value = ops.split(ops.matmul(x, block["qkv"]) + block["qkv_bias"],
                                          3, axis=-1)
            scores = ops.matmul(split(query), ops.transpose(split(key), (0, 1, 3, 2)))
            attended = ops.matmul(ops.softmax(scores / (width // heads) ** 0.5 + blocked),
                                  split(value))
            attended = ops.reshape(ops.transpose(attended, (0, 2, 1, 3)),
                                   (-1, length, width))
            x = self._norm(x + ops.matmul(attended, block["out"]) + block["out_bias"],
                           block["norm1_scale"], block["norm1_shift"])
            inner = ops.gelu(ops.matmul(x, block["up"]) + block["up_bias"],
                             approximate=False)
            x = self._norm(x + ops.matmul(inner, block["down"]) + block["down_bias"],
                           block["norm2_scale"], block["norm2_shift"])
        pooled = (ops.sum(x * mask[..., None], axis=1)
                  / ops.maximum(ops.sum(mask, axis=1, keepdims=True), 1e-9))
        return pooled / ops.maximum(ops.norm(pooled, axis=-1, keepdims=True), 1e-12)

    def compute_output_spec(self, ids):
        return keras.KerasTensor((ids.shape[0], self.sizes["width"]), dtype="float32")

    def get_config(self):
        return {**super().get_config(), **self.sizes}
