"""Step 5: the first network architectures per modality, registered by name.

Every builder takes a `NetworkSpec` (input, output, adapted preprocessing layers, training-only
augmentation, and the `train:` knobs) and returns an uncompiled `keras.Model` whose input is
the stored tensor (uint8 image, spectrogram, raw string, series window): everything learned
from data lives inside the model, so a saved model takes what the shards hold.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dlworkflow.errors import ConfigError


@dataclass
class NetworkSpec:
    """What a builder needs to know about the data and the settings."""

    task: Any  # the dataset's Task (dlworkflow.tasks): it makes the output layer
    input_shape: tuple[int, ...]
    input_dtype: str
    outputs: int  # classes, 1 for regression, the horizon for forecasting
    settings: Mapping[str, Any]  # the train: section (dataset overrides merged)
    preprocessing: Sequence[Any] = ()  # layers adapted on fold-train rows
    augmentation: Sequence[Any] = ()  # random layers, active only when training
    target_offset: float = 0.0  # regression/forecasting: outputs are scaled back to units
    target_scale: float = 1.0
    future_shape: tuple[int, ...] | None = None  # forecasting: known-future covariates
    seed: int = 0
    #: () -> (x, y) of the fold's training rows, for builders that fit part of the network
    #: on them before training (text_wide_cnn's linear part); None where nothing may be fitted
    fit_rows: Callable[[], tuple[Any, Any]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


BUILDERS: dict[str, Callable[[NetworkSpec], Any]] = {}

#: Keras' default 0.99 needs ~500 steps before the moving variance (initialised at 1) reaches
#: the real, often tiny, variance; folds of a few thousand items train for fewer steps than
#: that per epoch, and early stopping then keeps weights whose inference statistics are wrong.
BN_MOMENTUM = 0.9


def register(name: str) -> Callable:
    """Decorator: add a builder to the registry under `name`."""
    def add(builder: Callable[[NetworkSpec], Any]) -> Callable[[NetworkSpec], Any]:
        BUILDERS[name] = builder
        return builder
    return add


def build_network(name: str, spec: NetworkSpec):
    """Build the named architecture, or a ConfigError listing the valid names."""
    if name not in BUILDERS:
        raise ConfigError(f"train.architecture: {name!r} is not one of {', '.join(sorted(BUILDERS))}")
    return BUILDERS[name](spec)


def _regularizer(spec: NetworkSpec):
    import keras

    l2 = float(spec.settings.get("l2", 0.0))
    return keras.regularizers.L2(l2) if l2 > 0 else None


def depth(spec: NetworkSpec, default: int) -> int:
    """`train.layers`, or the architecture's own default when it is `auto`."""
    value = spec.settings.get("layers", "auto")
    return default if value in (None, "auto") else int(value)


def _apply(x, layers: Sequence[Any]):
    for layer in layers:
        x = layer(x)
    return x


def _hidden(x, spec: NetworkSpec):
    """Dropout, a dense layer, dropout: what every head puts before its outputs."""
    import keras

    dropout = float(spec.settings.get("dropout", 0.3))
    units = int(spec.settings.get("units", 64))
    x = keras.layers.Dropout(dropout, seed=spec.seed)(x)
    x = keras.layers.Dense(units, activation="relu", kernel_regularizer=_regularizer(spec))(x)
    return keras.layers.Dropout(dropout, seed=spec.seed + 1)(x)


def _head(x, spec: NetworkSpec):
    """The hidden layer and the task's output layer (softmax classes, or values scaled to the
    target's units)."""
    return spec.task.output_layer(_hidden(x, spec), spec)


def _conv_blocks(x, spec: NetworkSpec, dims: int, blocks: int, pool_time_only: bool = False):
    """`layers` blocks of conv-BN-ReLU-max-pool, doubling the filters, then global pooling
    (for spectrograms only over time: where a pattern sits in frequency matters)."""
    import keras

    conv = keras.layers.Conv2D if dims == 2 else keras.layers.Conv1D
    pool = keras.layers.MaxPooling2D if dims == 2 else keras.layers.MaxPooling1D
    filters = int(spec.settings.get("filters", 32))
    for block in range(blocks):
        x = conv(filters * 2 ** block, 3, padding="same", use_bias=False,
                 kernel_regularizer=_regularizer(spec))(x)
        x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM)(x)
        x = keras.layers.Activation("relu")(x)
        if min(x.shape[1:-1]) >= 2:
            x = pool(2)(x)
    if pool_time_only:  # (batch, freq, time, channels) -> mean over time -> freq x channels
        bands, frames, channels = x.shape[1:]
        x = keras.layers.Permute((2, 1, 3))(x)
        x = keras.layers.Reshape((frames, bands * channels))(x)
        return keras.layers.GlobalAveragePooling1D()(x)
    return (keras.layers.GlobalAveragePooling2D() if dims == 2
            else keras.layers.GlobalAveragePooling1D())(x)


@register("image_cnn")
def image_cnn(spec: NetworkSpec):
    """A small CNN from scratch: the image averaged down to `train.image.conv_pixels`
    (`image_pixels_factor`), augmentation, pixels to [0, 1], conv blocks, dense head."""
    import keras

    inputs = keras.Input(spec.input_shape, dtype=spec.input_dtype, name="image")
    x = _augmented_pixels(inputs, spec)
    return keras.Model(inputs, _head(_conv_blocks(x, spec, 2, depth(spec, 3)), spec),
                       name="image_cnn")


def _augmented_pixels(inputs, spec: NetworkSpec):
    """uint8 images -> averaged down in blocks of `image_pixels_factor` pixels a side (the
    remainder rows and columns dropped), augmented (training only) and scaled to [0, 1],
    then preprocessed."""
    import keras

    x = keras.layers.Rescaling(1.0)(inputs)  # to float, still 0-255 for the augmentation
    factor = image_pixels_factor(spec.input_shape, spec.settings)
    if factor > 1:  # before the augmentation, which then runs on a quarter of the pixels
        x = keras.layers.AveragePooling2D(factor, name="average_down")(x)
    x = _apply(x, spec.augmentation)
    return _apply(keras.layers.Rescaling(1.0 / 255)(x), spec.preprocessing)


def find_backbone(model):
    """The pretrained backbone nested in a transfer model (the one layer that is a Model)."""
    import keras

    return next(layer for layer in model.layers if isinstance(layer, keras.Model))


def image_backbone(name: str, input_shape: tuple[int, ...], weights: str):
    """A Keras applications backbone (no top, average pooled) with imagenet | file | none."""
    from dlworkflow.models.extractors import build_extractor

    return build_extractor(name, input_shape, weights)


@register("image_transfer")
def image_transfer(spec: NetworkSpec):
    """Transfer learning: a frozen pretrained backbone (0-255 RGB inside) and a new head.

    Images smaller than `train.transfer.side` (unset: the backbone's smallest, 32 px) are
    enlarged to it after the augmentation, inside the network, so that a saved model still
    takes the tensorised images.

    For classes the head's logits start at zero beside image_wide_cnn's linear part on the
    baseline's pixels (wide and deep, trained jointly): backbone features that do not fit the
    images (another domain, small images) then still leave the network at logistic
    regression's level, not below it (`train.image.wide_fit: fitted` freezes that regression
    instead). `train.fine_tune_layers` > 0 unfreezes the last N
    backbone layers for a second phase at `train.fine_tune_learning_rate` (see
    dlworkflow.train). A regression, or a build given no training rows to standardise with,
    has no linear part; a head trained on cached embeddings (the features step) has it where
    the fold's images were in RAM (`embedding_head`).
    """
    import keras

    from dlworkflow.models.extractors import BACKBONE_SIDE, DEFAULT_BACKBONE, backbone_size

    transfer = spec.settings.get("transfer") or {}
    name = transfer.get("backbone", DEFAULT_BACKBONE)
    inputs = keras.Input(spec.input_shape, dtype=spec.input_dtype, name="image")
    x = keras.layers.Rescaling(1.0)(inputs)
    x = _apply(x, spec.augmentation)
    height, width, channels = spec.input_shape
    size = backbone_size(height, width, name, transfer.get("side", BACKBONE_SIDE))
    if size != (height, width):  # after the augmentation: it runs at the images' own size
        height, width = size
        x = keras.layers.Resizing(height, width)(x)
    if channels == 1:
        x = keras.layers.Concatenate()([x, x, x])
    backbone = image_backbone(name, (height, width, 3), transfer.get("weights", "imagenet"))
    x = backbone(x, training=False)  # BatchNormalization stays in inference mode
    head = spec.extra.get("head")  # trained on cached embeddings (features step)
    if head is not None:  # wide and deep (`embedding_head`) when it takes the images too
        return keras.Model(inputs, head([x, inputs] if len(head.inputs) == 2 else x),
                           name="image_transfer")
    if not _has_wide_pixels(spec):
        return keras.Model(inputs, _head(x, spec), name="image_transfer")
    return _wide_and_deep(inputs, _wide_pixels(inputs, spec), _deep_logits(x, spec),
                          "image_transfer")


def embedding_head(spec: NetworkSpec, pixels: NetworkSpec | None = None):
    """The transfer head alone, on cached embeddings of `spec.input_shape` (features step).
    Given the images' spec (`pixels`, its fit rows the fold's training images) and classes,
    wide and deep as image_transfer is: it takes the embeddings and the images, and adds the
    linear part's logits on the pixels to the head's, both starting at zero."""
    import keras

    inputs = keras.Input(spec.input_shape, dtype="float32", name="embedding")
    if pixels is None or not _has_wide_pixels(pixels):
        return keras.Model(inputs, _head(inputs, spec), name="head")
    images = keras.Input(pixels.input_shape, dtype=pixels.input_dtype, name="image")
    return _wide_and_deep([inputs, images], _wide_pixels(images, pixels),
                          _deep_logits(inputs, spec), "head")


def _has_wide_pixels(spec: NetworkSpec) -> bool:
    """Whether image_transfer (or its head on cached embeddings) has the linear part on
    pixels: for classes, given the fold's training images to standardise them with."""
    return spec.fit_rows is not None and spec.task.name == "classification"


def _spectrogram_input(spec: NetworkSpec):
    """The spectrogram input, then the per-band normalisation and the training-only
    augmentation every audio network starts with."""
    import keras

    inputs = keras.Input(spec.input_shape, dtype="float32", name="spectrogram")
    return inputs, _apply(_apply(inputs, spec.preprocessing), spec.augmentation)


@register("audio_cnn")
def audio_cnn(spec: NetworkSpec):
    """A 2D CNN on log-mel spectrograms with per-band normalisation adapted on fold-train."""
    import keras

    inputs, x = _spectrogram_input(spec)
    # four blocks: a 64-band, 1 s log-mel needs the receptive field (~0.3 s) of a syllable;
    # with three, FSDD folds reached 0.81 validation accuracy after 12 epochs, with four 0.97
    features = _conv_blocks(x, spec, 2, depth(spec, 4), pool_time_only=True)
    return keras.Model(inputs, _head(features, spec), name="audio_cnn")


@register("audio_tcresnet")
def audio_tcresnet(spec: NetworkSpec):
    """Temporal convolutions for keyword spotting (TC-ResNet8, Choi et al. 2019): the mel
    bands are the channels of a 1D signal over time, so every convolution sees the whole
    spectrum; a 3-wide convolution, then residual blocks of two 9-wide convolutions (the
    first strided by 2, a strided 1x1 shortcut), widths 1.5, 2 and 3 times `filters`, global
    average pooling. A few million multiply-adds for a 64-band, 1 s log-mel: a fraction of a
    2D CNN's, and 1D convolutions run well on a CPU."""
    import keras

    inputs, x = _spectrogram_input(spec)
    bands, frames, channels = x.shape[1:]
    x = keras.layers.Permute((2, 1, 3))(x)  # (frames, bands, channels): time first
    x = keras.layers.Reshape((frames, bands * channels))(x)
    base = int(spec.settings.get("filters", 32))

    def conv(y, width, size, strides=1):
        y = keras.layers.Conv1D(width, size, strides=strides, padding="same", use_bias=False,
                                kernel_regularizer=_regularizer(spec))(y)
        return keras.layers.BatchNormalization(momentum=BN_MOMENTUM)(y)

    x = keras.layers.Activation("relu")(conv(x, base, 3))
    for block in range(depth(spec, 3)):
        width = int(base * (1.5, 2, 3, 4)[min(block, 3)])
        shortcut = keras.layers.Activation("relu")(conv(x, width, 1, strides=2))
        y = keras.layers.Activation("relu")(conv(x, width, 9, strides=2))
        x = keras.layers.Activation("relu")(keras.layers.Add()([conv(y, width, 9), shortcut]))
    features = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(inputs, _head(features, spec), name="audio_tcresnet")


@register("audio_dscnn")
def audio_dscnn(spec: NetworkSpec):
    """Depthwise-separable CNN for keyword spotting (Zhang et al. 2017, "Hello Edge"): a
    strided 2D convolution, then blocks of depthwise 3x3 + pointwise 1x1 convolutions, the
    first three strided and their pointwise widths 1, 2 and 4 times the first's (as
    MobileNet widens where it downsamples), global average pooling. One stride and one
    width, as before, left a 64-band log-mel 29 bands and frames of receptive field and
    27k parameters: FSDD at 30 a class trained to CV accuracy 0.49 in the step budget; now
    0.87 with 139k parameters, in 44 s of CPU a fold against 100 (`audio_tcresnet` 0.96 in
    13 s). An option, not the default."""
    import keras

    inputs, x = _spectrogram_input(spec)
    width = int(spec.settings.get("filters", 32)) * 2

    def norm_relu(y):
        return keras.layers.Activation("relu")(
            keras.layers.BatchNormalization(momentum=BN_MOMENTUM)(y))

    x = norm_relu(keras.layers.Conv2D(width, (5, 5), strides=2, padding="same", use_bias=False,
                                      kernel_regularizer=_regularizer(spec))(x))
    for block in range(depth(spec, 4)):
        x = norm_relu(keras.layers.DepthwiseConv2D(3, strides=2 if block < 3 else 1,
                                                   padding="same", use_bias=False)(x))
        x = norm_relu(keras.layers.Conv2D(width * (1, 2, 4)[min(block, 2)], 1, use_bias=False,
                                          kernel_regularizer=_regularizer(spec))(x))
    features = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, _head(features, spec), name="audio_dscnn")


def _text_embedding(x, spec: NetworkSpec, mask_zero: bool):
    import keras

    vectorizer = spec.preprocessing[0]
    vocabulary = vectorizer.get_vocabulary()
    text = spec.settings.get("text") or {}
    dim = int(text.get("embedding_dim", 64))
    initializer: Any = "uniform"
    vectors = text.get("pretrained_vectors")
    if vectors:
        matrix = glove_matrix(vectors, vocabulary, dim, spec.seed)
        initializer = keras.initializers.Constant(matrix)
    return keras.layers.Embedding(len(vocabulary), dim, embeddings_initializer=initializer,
                                  mask_zero=mask_zero, name="embedding")(x)


def glove_matrix(path: str, vocabulary: Sequence[str], dim: int, seed: int) -> np.ndarray:
    """Rows of a GloVe-format text file (word v1 v2 ...) for the fold's vocabulary; words it
    lacks keep small random vectors; row 0 (padding) is zero."""
    if not Path(path).is_file():
        raise ConfigError(f"train.text.pretrained_vectors: file {path} does not exist")
    rng = np.random.default_rng(seed)
    matrix = rng.normal(0, 0.05, (len(vocabulary), dim)).astype(np.float32)
    matrix[0] = 0
    wanted = {word: row for row, word in enumerate(vocabulary)}
    found = 0
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            word, _, rest = line.rstrip().partition(" ")
            if word in wanted:
                values = np.asarray(rest.split(), dtype=np.float32)
                if len(values) != dim:
                    raise ConfigError(f"train.text.pretrained_vectors: {path} has {len(values)}-"
                                      f"dimensional vectors; set train.text.embedding_dim: "
                                      f"{len(values)}")
                matrix[wanted[word]] = values
                found += 1
    logging.getLogger(__name__).info(
        "train.text.pretrained_vectors: %d of the %d words of the fold's vocabulary found in "
        "%s; the others start at small random vectors", found,
        sum(1 for word in vocabulary if word and word != "[UNK]"), path)
    return matrix


def _text_input(spec: NetworkSpec):
    import keras

    inputs = keras.Input((), dtype="string", name="text")
    return inputs, spec.preprocessing[0](inputs)


@register("text_cnn")
def text_cnn(spec: NetworkSpec):
    """Adapted TextVectorization, a trainable embedding, a 1D convolution and max pooling."""
    import keras

    inputs, tokens = _text_input(spec)
    x = _text_embedding(tokens, spec, mask_zero=False)
    x = keras.layers.Dropout(float(spec.settings.get("dropout", 0.3)) / 2, seed=spec.seed)(x)
    filters = int(spec.settings.get("filters", 32)) * 4
    pooled = []
    for width in (3, 5):
        branch = keras.layers.Conv1D(filters, width, padding="same", activation="relu",
                                     kernel_regularizer=_regularizer(spec))(x)
        pooled.append(keras.layers.GlobalMaxPooling1D()(branch))
    return keras.Model(inputs, _head(keras.layers.Concatenate()(pooled), spec), name="text_cnn")


def _tfidf_features(inputs, texts: Any, settings: Mapping[str, Any]):
    """Word 1-2-gram and character 2-5-gram TF-IDF of the raw strings (vocabularies and
    document frequencies adapted on `texts`, the fold's training rows), each row scaled to
    unit length per kind, as the step-2 baseline's vectorizers do."""
    import keras

    from dlworkflow.layers import KnownTermsUnitNorm, adapted_tfidf

    size = int(settings.get("max_tokens", 20000))
    words = keras.layers.TextVectorization(max_tokens=size, ngrams=2, output_mode="tf_idf",
                                           name="word_tfidf")
    chars = keras.layers.TextVectorization(max_tokens=size, standardize="lower",
                                           split="character", ngrams=(2, 3, 4, 5),
                                           output_mode="tf_idf", name="char_tfidf")
    adapted_tfidf(words, texts)
    adapted_tfidf(chars, texts)
    return keras.layers.Concatenate(name="tfidf")(
        [KnownTermsUnitNorm()(words(inputs)), KnownTermsUnitNorm()(chars(inputs))])


def _in_batches(function: Callable[[Any], Any], rows: Any, convert: Callable[[Any], Any],
                size: int = 512) -> list:
    """`function`'s outputs for `rows`, `size` rows a call (each batch through `convert`)."""
    return [function(convert(rows[i: i + size])) for i in range(0, len(rows), size)]


def _sparse_outputs(model, rows: Any, convert: Callable[[Any], Any], size: int = 64):
    """`model`'s outputs for `rows` as one CSR matrix, `size` rows a call, with only the
    non-zero entries leaving TensorFlow: a batch of 512 SMS messages' TF-IDF is 80 MB dense
    and a few hundred kB sparse. The same values as the dense `predict_on_batch` outputs, to
    the bit: the same layers run on every row whatever the batch. 64 rows a call keep the
    dense block (10 MB for SMS) in the CPU's caches: SMS's 5,574 messages take 1.6 s of CPU
    against 4.5 s in calls of 512 (docs/PERFORMANCE.md)."""
    import scipy.sparse as sp
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def nonzero(batch):
        dense = model(batch, training=False)
        where = tf.where(tf.not_equal(dense, 0))
        return where, tf.gather_nd(dense, where), tf.shape(dense)

    def csr(where, values, shape):
        where = where.numpy()
        return sp.csr_matrix((values.numpy(), (where[:, 0], where[:, 1])),
                             shape=tuple(shape.numpy()))

    return sp.vstack([csr(*part) for part in _in_batches(nonzero, rows, convert, size)],
                     format="csr")


def _linear_weights(matrix, labels: np.ndarray, classes: int, c_value: float,
                    nb_weights: bool | str) -> tuple[np.ndarray, np.ndarray, str | None]:
    """(kernel, bias, activation) of dense logits equal to the step-2 baseline's regression
    (`NBLogisticRegression`: L2, C, naive Bayes weights as `nb_weights` says) fitted on
    `matrix`'s rows. One regression against the rest for each class becomes logits through a
    log-sigmoid, so the softmax gives its probabilities."""
    from dlworkflow.estimators import NBLogisticRegression

    present = np.unique(labels)
    kernel = np.zeros((matrix.shape[1], classes), np.float32)
    bias = np.full(classes, -30.0, np.float32)  # a class absent from the training rows
    activation = None
    if len(present) < 2:
        bias[present] = 0.0
    else:
        fitted = NBLogisticRegression(C=c_value, nb_weights=nb_weights).fit(matrix, labels)
        if len(present) == 2:  # one coefficient row: softmax over (-z/2, z/2) = sigmoid(z)
            kernel[:, present] = np.stack([-fitted.coef_[0], fitted.coef_[0]], axis=1) / 2
            bias[present] = np.array([-fitted.intercept_[0], fitted.intercept_[0]]) / 2
        else:
            kernel[:, present] = fitted.coef_.T
            bias[present] = fitted.intercept_
            activation = "log_sigmoid" if fitted.one_vs_rest_ else None
    return kernel, bias, activation


def crossfit_logits(matrix, labels: np.ndarray, classes: int, c_value: float,
                    nb_weights: bool | str, folds: int, seed: int) -> np.ndarray:
    """Each row's logits from `_linear_weights` fitted on the other rows, `folds` parts
    (stratified where every class has that many rows; the parts drawn with `seed`). Stacked
    generalisation (Wolpert 1992): a part learned on top of a fitted model's outputs must
    see that model's errors on rows it did not fit, as it will on new rows."""
    import warnings

    from sklearn.model_selection import KFold, StratifiedKFold

    counts = np.bincount(labels, minlength=classes)
    stratified = counts[counts > 0].min() >= folds
    splitter = (StratifiedKFold if stratified else KFold)(folds, shuffle=True, random_state=seed)
    out = np.zeros((len(labels), classes), np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a class with fewer rows than parts
        for fit, held in splitter.split(np.zeros(len(labels)), labels):
            kernel, bias, activation = _linear_weights(matrix[fit], labels[fit], classes,
                                                       c_value, nb_weights)
            scores = np.asarray(matrix[held] @ kernel, np.float32) + bias
            out[held] = -np.logaddexp(0.0, -scores) if activation else scores
    return out


def _fitted_linear(features, inputs, rows: tuple[Any, Any], spec: NetworkSpec,
                   crossfit_default: int = 0):
    """Dense logits initialised with the step-2 baseline's regression fitted on the features
    of the training rows (`_linear_weights`, `train.text.wide_C` and `wide_nb_weights`);
    frozen. With `train.text.wide_crossfit` parts (> 1; `auto`: `crossfit_default`) the
    training rows' own
    logits come from regressions that did not fit them (`crossfit_logits`), kept as
    `spec.extra["training_logits"]` for `frozen_linear_view`: logits fitted on the very rows
    they score separate those rows almost perfectly (SUBJ: 99.96 % training accuracy at the
    first epoch, against 92.3 % on the validation rows). Measured over four seeds on the
    suite's text sets, that gave the same test scores on average (docs/BENCHMARKS.md), so
    text_wide_cnn does not by default; text_transfer does (its deep part is a regression on
    sentence vectors, which learns nothing beside logits that already fit every row)."""
    import keras
    import tensorflow as tf

    text = spec.settings.get("text") or {}
    c_value = float(text.get("wide_C", 10.0))
    nb_weights = text.get("wide_nb_weights", "auto")
    matrix = _sparse_outputs(keras.Model(inputs, features), np.asarray(rows[0], dtype=str),
                             tf.constant)
    parts = text.get("wide_crossfit", "auto")
    parts = crossfit_default if parts == "auto" else int(parts)
    return _frozen_regression(features, matrix, rows[1], spec, c_value, nb_weights, parts)


def _frozen_regression(features, matrix, labels, spec: NetworkSpec, c_value: float,
                       nb_weights: bool | str, parts: int):
    """Frozen dense logits on `features` equal to the step-2 baseline's regression fitted on
    `matrix`, the same features of the training rows (`_linear_weights`); with `parts` > 1
    the training rows' own logits from `crossfit_logits`, kept as
    `spec.extra["training_logits"]` for the training to feed instead (`frozen_linear_view`)."""
    import keras

    labels = np.asarray(labels).astype(int)
    kernel, bias, activation = _linear_weights(matrix, labels, spec.outputs, c_value,
                                               nb_weights)
    if parts > 1 and len(labels) >= parts and len(np.unique(labels)) > 1:
        spec.extra["training_logits"] = crossfit_logits(matrix, labels, spec.outputs, c_value,
                                                        nb_weights, parts, spec.seed)
    layer = keras.layers.Dense(spec.outputs, activation=activation, trainable=False,
                               name="linear_logits")
    logits = layer(features)
    layer.set_weights([kernel, bias])
    return logits


def _deep_logits(x, spec: NetworkSpec):
    """`_head`'s hidden layer ending in logits that start at zero (the wide and deep
    networks: the deep part learns what the linear part misses)."""
    import keras

    return keras.layers.Dense(spec.outputs, kernel_initializer="zeros",
                              name="cnn_logits")(_hidden(x, spec))


def _wide_and_deep(inputs, linear, deep, name: str):
    """Softmax of the linear part's logits plus the deep part's."""
    import keras

    logits = keras.layers.Add()([linear, deep])
    return keras.Model(inputs, keras.layers.Activation("softmax", dtype="float32",
                                                       name="classes")(logits), name=name)


@register("image_wide_cnn")
def image_wide_cnn(spec: NetworkSpec):
    """Wide and deep (Cheng et al. 2016), trained jointly: a linear part on the step-2
    baseline's features (pixels averaged down to `train.image.wide_pixels` on the longer
    side, standardised with the fold's training rows' mean and variance) plus image_cnn's
    convolutions on the augmented image; both parts' logits start at zero. The linear part
    learns in a few hundred steps what logistic regression finds, so the network is not
    left below the baseline while the convolutions are still learning: on a small photo set
    image_cnn alone lost to logistic regression by 3.6 points (docs/BENCHMARKS.md). A linear
    part fitted first and frozen (as text_wide_cnn's) fits its training rows exactly and left
    the convolutions almost no gradient: measured, it cost digits 2.6 points. Frozen with the
    training rows' cross-fitted logits (`train.image.wide_fit: fitted`) it cost digits 1.6
    points and Fashion-MNIST 3.4, and gained 2.8 on spectrograms as pictures, where logistic
    regression on the pixels beats the joint network: not the default."""
    import keras

    if spec.fit_rows is None:
        raise ConfigError("train.architecture: image_wide_cnn standardises its linear part "
                          "with the fold's training rows, and none were given")
    inputs = keras.Input(spec.input_shape, dtype=spec.input_dtype, name="image")
    linear = _wide_pixels(inputs, spec)  # made first: layer names and seeds as before
    x = _augmented_pixels(inputs, spec)
    deep = _deep_logits(_conv_blocks(x, spec, 2, depth(spec, 3)), spec)
    return _wide_and_deep(inputs, linear, deep, "image_wide_cnn")


def _wide_pixels(inputs, spec: NetworkSpec):
    """The wide part of the image networks: logits, starting at zero, of a dense layer on the
    step-2 baseline's features (pixels averaged down to `train.image.wide_pixels` on the
    longer side, standardised with the fold's training rows' mean and variance)."""
    import keras

    pixels = keras.layers.Rescaling(1.0 / 255)(inputs)
    side = int((spec.settings.get("image") or {}).get("wide_pixels", 16))
    factor = max(1, max(spec.input_shape[:2]) // side)
    if factor > 1:  # block means, the remainder rows and columns dropped (the baseline's)
        pixels = keras.layers.AveragePooling2D(factor)(pixels)
    flat = keras.layers.Flatten(name="flat_pixels")(pixels)
    rows, labels = spec.fit_rows()  # a streamed fold is read through once
    matrix = np.concatenate(_in_batches(keras.Model(inputs, flat).predict_on_batch, rows,
                                         np.asarray))
    mean, variance = matrix.mean(axis=0), matrix.var(axis=0)
    variance = np.where(variance > 0, variance, 1.0)  # a constant pixel: as StandardScaler
    standard = keras.layers.Normalization(mean=mean, variance=variance,
                                          name="standardise")(flat)
    image = spec.settings.get("image") or {}
    if image.get("wide_fit", "joint") == "fitted":
        from dlworkflow.layers import LogitScale

        scaled = ((matrix - mean) / np.sqrt(variance)).astype(np.float32)
        return LogitScale(name="linear_scale")(_frozen_regression(
            standard, scaled, labels, spec, float(image.get("wide_C", 1.0)), False,
            int(image.get("wide_crossfit", 5))))
    return keras.layers.Dense(spec.outputs, kernel_initializer="zeros",
                              kernel_regularizer=_regularizer(spec),
                              name="linear_logits")(standard)


@register("text_wide_cnn")
def text_wide_cnn(spec: NetworkSpec):
    """Wide and deep (Cheng et al. 2016) for short texts: a linear part on word and character
    n-gram TF-IDF, initialised with the step-2 baseline's regression of the fold's training
    rows (NB-LR for two classes, `train.text.wide_nb_weights`) and frozen, plus a Kim (2014)
    CNN over a trainable embedding (widths 3, 4, 5, max-pooled) whose logits start at zero
    and learn what the linear part misses. Training starts at the baseline's solution, so
    early stopping on validation loss cannot end far below it."""
    import keras

    if spec.fit_rows is None:
        raise ConfigError("train.architecture: text_wide_cnn fits its linear part on the "
                          "fold's training rows, and none were given")
    text = spec.settings.get("text") or {}
    inputs, tokens = _text_input(spec)
    rows = spec.fit_rows()
    linear = _fitted_linear(_tfidf_features(inputs, rows[0], text), inputs, rows, spec)
    dropout = float(spec.settings.get("dropout", 0.3))
    x = _text_embedding(tokens, spec, mask_zero=False)
    x = keras.layers.SpatialDropout1D(dropout / 2, seed=spec.seed)(x)
    filters = int(spec.settings.get("filters", 32)) * 3
    pooled = [keras.layers.GlobalMaxPooling1D()(
        keras.layers.Conv1D(filters, width, padding="same", activation="relu",
                            kernel_regularizer=_regularizer(spec))(x)) for width in (3, 4, 5)]
    x = keras.layers.Dropout(dropout, seed=spec.seed + 1)(keras.layers.Concatenate()(pooled))
    deep = keras.layers.Dense(spec.outputs, kernel_initializer="zeros", name="cnn_logits")(x)
    return _wide_and_deep(inputs, linear, deep, "text_wide_cnn")


@register("text_transfer")
def text_transfer(spec: NetworkSpec):
    """Transfer learning for texts, wide and deep: text_wide_cnn's frozen linear part (the
    step-2 regression on word and character n-gram TF-IDF, fitted on the fold's training
    rows) plus a head on the vectors of a frozen pretrained sentence encoder
    (`dlworkflow.models.text_encoder`, all-MiniLM-L6-v2 by default), standardised with the
    training rows' mean and variance, whose logits start at zero. The head trains on the
    training rows' logits from regressions that did not fit them (`train.text.wide_crossfit`,
    5 parts under `auto`), so it learns what the n-grams miss instead of nothing. Training
    starts at the baseline's solution, as text_wide_cnn's."""
    import keras

    from dlworkflow.models.text_encoder import (
        encode_texts,
        encoder_layers,
        load_vectors,
        required_encoder,
    )

    if spec.fit_rows is None:
        raise ConfigError("train.architecture: text_transfer fits its linear part on the "
                          "fold's training rows, and none were given")
    folder, _ = required_encoder(spec.settings)
    text = spec.settings.get("text") or {}
    inputs = keras.Input((), dtype="string", name="text")
    rows = spec.fit_rows()
    linear = _fitted_linear(_tfidf_features(inputs, rows[0], text), inputs, rows, spec,
                            crossfit_default=5)
    tokenizer, encoder = encoder_layers(folder)
    vectors = encoder(tokenizer(inputs))
    # the dataset's vectors encoded once (rule encode_texts) save encoding them in every fold
    known, spec.extra["text_vectors_found"] = load_vectors(spec.extra.get("text_vectors"),
                                                           folder)
    vector_model = keras.Model(inputs, vectors)
    spec.extra["sentence_vectors"] = lambda texts: encode_texts(vector_model, texts, known=known)
    train_vectors = spec.extra["sentence_vectors"](np.asarray(rows[0], dtype=str))
    variance = train_vectors.var(axis=0)
    standardise = keras.layers.Normalization(
        mean=train_vectors.mean(axis=0), variance=np.where(variance > 0, variance, 1.0),
        name="frozen_vectors")
    standard = standardise(vectors)
    if "training_logits" in spec.extra:  # the training rows' frozen inputs, computed now
        spec.extra["training_logits"] = np.concatenate(
            [spec.extra["training_logits"], np.asarray(standardise(train_vectors))],
            axis=1).astype(np.float32)
    return _wide_and_deep(inputs, linear, _deep_logits(standard, spec), "text_transfer")


def encodes_text(model) -> bool:
    """Whether the network runs a pretrained sentence encoder (text_transfer)."""
    return any(layer.name == "frozen_vectors" for layer in model.layers)


def frozen_linear_view(model, vectors: Callable[[Any], np.ndarray] | None = None
                       ) -> tuple[Any, Callable[[Any], np.ndarray]] | None:
    """For a wide and deep network whose linear part is frozen (text_wide_cnn,
    text_transfer): a model for training that takes the frozen part's outputs as a second
    input beside the raw inputs, and the function that computes them for a batch of inputs.
    The frozen part gives every row the same values in every step, so they are computed once
    per row instead of once per step (the TF-IDF of word and character n-grams: a third of
    an SMS training step; the sentence encoder: nearly all of a text_transfer step). Those
    values are the linear logits, and for text_transfer the standardised sentence vectors
    after them (`frozen_vectors`), on which its head then trains alone. The training model
    shares every trainable layer with `model` and computes the same loss from the same
    values, so `model` ends with the weights it would have trained itself. `vectors`, when
    given, gives the texts' sentence vectors instead of the encoder (text_transfer's
    `spec.extra["sentence_vectors"]`: those encoded once for the dataset). The image
    networks' linear part on pixels (`train.image.wide_fit: fitted`) is frozen too; for the
    transfer head on cached embeddings (`embedding_head`, which takes the embeddings and the
    images) the training model takes the embeddings and the logits, and the function
    computes the logits of images. None for any other network (nothing frozen to compute
    once)."""
    import keras
    import tensorflow as tf

    names = {layer.name for layer in model.layers}
    if not {"linear_logits", "cnn_logits"} <= names or model.get_layer("linear_logits").trainable:
        return None
    source = model.inputs[0]  # what the deep part reads: the inputs, or the embeddings
    inputs = model.inputs[-1]  # what the frozen part reads: the inputs, or the images
    frozen = [model.get_layer("linear_logits").output]
    if encodes_text(model):  # the head sees only the frozen vectors
        frozen.append(model.get_layer("frozen_vectors").output)
        deep = keras.Model(frozen[1], model.get_layer("cnn_logits").output, name="deep")
    else:
        deep = keras.Model(source, model.get_layer("cnn_logits").output, name="deep")
    outputs = frozen[0] if len(frozen) == 1 else keras.layers.Concatenate()(frozen)
    linear = keras.Model(inputs, outputs, name="frozen_linear")
    raw = keras.Input(source.shape[1:], dtype=source.dtype, name=source.name)
    computed = keras.Input(linear.output.shape[1:], name="linear_logits_in")
    classes = frozen[0].shape[-1]
    logits = computed if len(frozen) == 1 else computed[:, :classes]
    if "linear_scale" in names:  # the weight the network learns for the frozen logits
        logits = model.get_layer("linear_scale")(logits)
    summed = keras.layers.Add()([logits, deep(raw if len(frozen) == 1 else
                                              computed[:, classes:])])
    classes = keras.layers.Activation("softmax", dtype="float32", name="classes")(summed)
    fit_model = keras.Model([raw, computed], classes, name=f"{model.name}_training")

    logits_only = keras.Model(inputs, frozen[0]) if vectors is not None else None

    def compute(batch: Any) -> np.ndarray:
        if len(frozen) > 1 and logits_only is not None:  # the logits, then the vectors given
            return np.concatenate([
                np.concatenate(_in_batches(logits_only.predict_on_batch, batch, tf.constant,
                                           64)),
                np.asarray(model.get_layer("frozen_vectors")(vectors(batch)))], axis=1)
        if len(frozen) > 1:  # texts of similar length together: less padding to encode
            from dlworkflow.models.text_encoder import encode_texts

            return encode_texts(linear, batch)
        return np.concatenate(_in_batches(linear.predict_on_batch, batch, tf.constant, 64))

    return fit_model, compute


@register("text_bigru")
def text_bigru(spec: NetworkSpec):
    """Adapted TextVectorization, a masked embedding and a bidirectional GRU."""
    import keras

    inputs, tokens = _text_input(spec)
    x = _text_embedding(tokens, spec, mask_zero=True)
    x = keras.layers.Bidirectional(keras.layers.GRU(int(spec.settings.get("units", 64))))(x)
    return keras.Model(inputs, _head(x, spec), name="text_bigru")


@register("text_transformer")
def text_transformer(spec: NetworkSpec):
    """A small Transformer encoder: token + position embeddings, self-attention, feed-forward."""
    import keras

    from dlworkflow.layers import PositionalEmbedding

    inputs, tokens = _text_input(spec)
    vectorizer = spec.preprocessing[0]
    dim = int((spec.settings.get("text") or {}).get("embedding_dim", 64))
    length = int(vectorizer.get_config()["output_sequence_length"])
    x = PositionalEmbedding(length, vectorizer.vocabulary_size(), dim)(tokens)
    for _ in range(depth(spec, 2) // 2 or 1):
        attention = keras.layers.MultiHeadAttention(num_heads=4, key_dim=dim // 4)(x, x)
        x = keras.layers.LayerNormalization()(x + attention)
        forward = keras.layers.Dense(dim * 2, activation="relu")(x)
        x = keras.layers.LayerNormalization()(x + keras.layers.Dense(dim)(forward))
    x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(inputs, _head(x, spec), name="text_transformer")


def series_steps_factor(steps: int | None, settings: Mapping[str, Any]) -> int:
    """By how much series_fcn averages a series of `steps` steps down: the smallest whole
    factor that leaves at most `train.series.network_steps` (1 = every step; 0 or null
    there = never). The convolutions' cost grows with the steps and their reach (14 steps)
    does not, so on a long series a coarser grid costs less and lets them span more of it;
    the baselines and the tensors keep every step."""
    return _whole_factor(steps, (settings.get("series") or {}).get("network_steps", 512))


def _whole_factor(size: int | None, limit: int | None) -> int:
    """The smallest whole factor that brings `size` to at most `limit` (1 where it is
    already, or where `limit` is 0 or None: never)."""
    limit = int(limit or 0)
    if not size or not limit or size <= limit:
        return 1
    return -(-int(size) // limit)


def image_pixels_factor(input_shape: tuple[int, ...], settings: Mapping[str, Any]) -> int:
    """By how much image_cnn and image_wide_cnn average an image down before their
    convolutions: the smallest whole factor that leaves at most `train.image.conv_pixels` on
    the longer side (1 = every pixel; 0 or null there = never). Their cost grows with the
    pixels and their reach does not (three conv-pool blocks: 22 px, two thirds of a 32-px
    image, a third of a 64-px one): on Fashion-MNIST tensorised at 64 px (from 28),
    image_wide_cnn scored 0.828 in CV at about 125 s a fold, averaged down to 32 px 0.831 at
    40-43 s (docs/BENCHMARKS.md); the tensors, the baselines and the wide part's pixels keep
    every pixel."""
    side = max(input_shape[:2]) if len(input_shape) >= 2 else 0
    return _whole_factor(side, (settings.get("image") or {}).get("conv_pixels", 32))


def average_down_note(architecture: str, input_shape: tuple[int, ...],
                      settings: Mapping[str, Any]) -> str:
    """For the card's reason: what a network from scratch does to a series' steps or an
    image's pixels before its convolutions ("" when it keeps every one)."""
    if architecture == "series_fcn" and len(input_shape) == 2:
        steps = int(input_shape[0])
        factor = series_steps_factor(steps, settings)
        if factor == 1:
            return ""
        return (f"; its series of {steps} steps averaged down by {factor} to "
                f"{-(-steps // factor)} inside the network (train.series.network_steps)")
    if architecture in ("image_cnn", "image_wide_cnn") and len(input_shape) == 3:
        factor = image_pixels_factor(input_shape, settings)
        if factor == 1:
            return ""
        height, width = (int(side) // factor for side in input_shape[:2])
        return (f"; its {input_shape[0]}x{input_shape[1]} images averaged down by {factor} to "
                f"{height}x{width} inside the network before the convolutions "
                "(train.image.conv_pixels)")
    return ""


@register("series_fcn")
def series_fcn(spec: NetworkSpec):
    """Fully convolutional network for series classification (Wang et al. 2017): each series
    standardised on its own, three conv-BN-ReLU blocks (128, 256, 128 filters; widths 8, 5,
    3) and global average pooling. A series longer than `train.series.network_steps` is
    averaged down by the smallest whole factor that brings it to at most that many steps
    before the first convolution (`series_steps_factor`)."""
    import keras

    from dlworkflow.layers import SeriesStandardization

    inputs = keras.Input(spec.input_shape, dtype="float32", name="series")
    x = _apply(_apply(inputs, spec.preprocessing), spec.augmentation)
    # each series standardised on its own (shape: the field's convention), beside the
    # fold-standardised values (level and scale, which a regression target may depend on)
    x = keras.layers.Concatenate()([SeriesStandardization()(x), x])
    factor = series_steps_factor(spec.input_shape[0], spec.settings)
    if factor > 1:  # a low-pass filter and decimation: a third of the cost for ACSF1's 1,460
        x = keras.layers.AveragePooling1D(factor, padding="same", name="average_down")(x)
    for filters, width in ((128, 8), (256, 5), (128, 3)):
        scale = int(spec.settings.get("filters", 32)) / 32
        x = keras.layers.Conv1D(max(8, int(filters * scale)), width, padding="same",
                                kernel_regularizer=_regularizer(spec))(x)
        x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM)(x)
        x = keras.layers.Activation("relu")(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(inputs, _head(x, spec), name="series_fcn")


def _forecaster(spec: NetworkSpec, body: Callable[[Any], Any], name: str):
    """Shared forecasting frame, one global model for every series: each window on its own
    scale (minus its last value, over its mean absolute change); a wide part, a linear map
    from the window to the horizon that starts as the seasonal-naive forecast
    (`SeasonalLinear`), plus the deep part, the body and its head (known-future covariates
    joined before it), whose output starts at zero. The network starts at the baseline the
    M4 measures against and learns what it misses; the sum, a change per horizon step on
    the window's scale, is scaled back and added to the last observed value."""
    import keras

    from dlworkflow.layers import FromWindowScale, SeasonalLinear, WindowScaled

    past = keras.Input(spec.input_shape, dtype="float32", name="past")
    inputs = [past]
    # no augmentation: noise or scaling of a window without its targets is noise in the
    # targets (a window scaled by 1.1 asks the seasonal part for a 10 % larger change)
    x = WindowScaled()(past)
    wide = SeasonalLinear(spec.outputs, int(spec.extra.get("season", 1)), name="seasonal")(x)
    x = body(x)
    if spec.future_shape and spec.future_shape[-1]:
        future = keras.Input(spec.future_shape, dtype="float32", name="future")
        inputs.append(future)
        x = keras.layers.Concatenate()([x, keras.layers.Flatten()(future)])
    dropout = float(spec.settings.get("dropout", 0.3))
    x = keras.layers.Dense(int(spec.settings.get("units", 64)), activation="relu",
                           kernel_regularizer=_regularizer(spec))(x)
    x = keras.layers.Dropout(dropout, seed=spec.seed)(x)
    deep = keras.layers.Dense(spec.outputs, kernel_initializer="zeros", dtype="float32")(x)
    change = keras.layers.Add(dtype="float32")([wide, deep])
    outputs = FromWindowScale(name="values", dtype="float32")([change, past])
    return keras.Model(inputs if len(inputs) > 1 else past, outputs, name=name)


@register("forecast_cnn")
def forecast_cnn(spec: NetworkSpec):
    """A 1D CNN over the lookback window predicting the whole horizon at once, beside the
    linear seasonal part (`_forecaster`)."""
    import keras

    def body(x):
        filters = int(spec.settings.get("filters", 32))
        for block in range(depth(spec, 3)):
            x = keras.layers.Conv1D(filters * 2 ** min(block, 2), 5, padding="same", activation="relu",
                                    kernel_regularizer=_regularizer(spec))(x)
            if x.shape[1] >= 4:
                x = keras.layers.MaxPooling1D(2)(x)
        return keras.layers.Flatten()(x)

    return _forecaster(spec, body, "forecast_cnn")


@register("forecast_lstm")
def forecast_lstm(spec: NetworkSpec):
    """An LSTM over the lookback window predicting the whole horizon at once, beside the
    linear seasonal part (`_forecaster`)."""
    import keras

    return _forecaster(spec, lambda x: keras.layers.LSTM(int(spec.settings.get("units", 64)))(x),
                       "forecast_lstm")
