"""Images: PNG, JPEG, GIF, BMP, TIFF, WebP files, probed with Pillow under a bomb guard."""

from __future__ import annotations

import io
import warnings
from collections.abc import Mapping
from html import escape
from typing import Any, ClassVar

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from dlworkflow.errors import BadInput
from dlworkflow.figures import data_uri
from dlworkflow.items import Item
from dlworkflow.modalities.base import Modality, network_name

_EXIF_ORIENTATION = 0x0112
_ROTATED_ORIENTATIONS = {5, 6, 7, 8}  # width and height swap once the EXIF rotation is applied
_BIT_DEPTH = {"1": 1, "I;16": 16, "I;16B": 16, "I;16L": 16, "I": 32, "F": 32}


def wide_fit(train: Mapping[str, Any]) -> str:
    """`train.image.wide_fit` of a train section: auto, joint or fitted."""
    return str((train.get("image") or {}).get("wide_fit", "auto"))


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation (1 = upright); skips parsing EXIF (~35 us) when there is none."""
    if image.format in ("JPEG", "MPO", "PNG", "WEBP") and "exif" not in image.info:
        return 1
    return int(image.getexif().get(_EXIF_ORIENTATION, 1) or 1)


class ImageModality(Modality):
    """Still images; one file per item."""

    name = "image"
    extensions: ClassVar[tuple[str, ...]] = (
        ".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp",
    )
    stats: ClassVar[dict[str, str]] = {
        "width": "Int64", "height": "Int64", "aspect_ratio": "Float64", "mode": "string", "channels": "Int64",
        "bit_depth": "Int64", "format": "string", "frames": "Int64", "exif_orientation": "Int64",
    }

    def probe(self, data: bytes, item: Item) -> dict[str, Any]:
        """Open and fully decode the image; report its size after EXIF rotation."""
        if not data:
            raise BadInput("empty file (0 bytes)", "empty")
        max_pixels = int(self.options.get("max_pixels", 89_478_485))
        min_side = int(self.options.get("min_side", 4))
        pil_limit = Image.MAX_IMAGE_PIXELS
        try:
            # Pillow's own guard would fire on open with its fixed limit; ours names the key.
            Image.MAX_IMAGE_PIXELS = None
            image = Image.open(io.BytesIO(data))
            if image.width * image.height > max_pixels:
                raise BadInput(
                    f"decompression-bomb guard: {image.width}x{image.height} = "
                    f"{image.width * image.height:,} pixels exceeds intake.image.max_pixels "
                    f"({max_pixels:,})", "too_large")
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image.load()  # decodes every byte: truncated files fail here
        except BadInput:
            raise
        except UnidentifiedImageError:
            raise BadInput("not a recognised image file", "unreadable") from None
        except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombWarning,
                Image.DecompressionBombError) as exc:
            raise BadInput(f"cannot decode image: {exc}", "unreadable") from None
        finally:
            Image.MAX_IMAGE_PIXELS = pil_limit
        orientation = int(image.getexif().get(_EXIF_ORIENTATION, 1) or 1)
        width, height = image.size
        if orientation in _ROTATED_ORIENTATIONS:
            width, height = height, width
        if min(width, height) < min_side:
            raise BadInput(f"image is {width}x{height}; smaller than intake.image.min_side "
                           f"({min_side} px)", "too_small")
        notes = []
        mode = image.mode
        if orientation != 1:
            notes.append(f"EXIF orientation {orientation}: rotated when decoded")
        if mode in ("P", "PA"):
            notes.append("palette image: converted when decoded")
        if mode == "CMYK":
            notes.append("CMYK image: converted to RGB when decoded")
        if "A" in image.getbands():
            notes.append("has an alpha channel")
        if _BIT_DEPTH.get(mode, 8) > 8:
            notes.append(f"{_BIT_DEPTH[mode]}-bit image")
        frames = int(getattr(image, "n_frames", 1))
        if frames > 1:
            notes.append(f"{frames} frames: the first is used")
        return {
            "width": width, "height": height, "aspect_ratio": width / height, "mode": mode,
            "channels": len(image.getbands()),
            "bit_depth": _BIT_DEPTH.get(mode, 8), "format": image.format or "",
            "frames": frames, "exif_orientation": orientation, "notes": notes,
        }

    def preview(self, data: bytes, item: Item) -> str:
        """A thumbnail (EXIF-rotated, RGB, at most 96 px; tiny images scaled up sharply)."""
        image = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
        scale = 96 / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        resample = Image.Resampling.NEAREST if scale > 1 else Image.Resampling.LANCZOS
        buffer = io.BytesIO()
        image.resize(size, resample).save(buffer, "PNG")
        return (f'<img class="thumb" alt="{escape(item.id)}" '
                f'src="{data_uri(buffer.getvalue(), "image/png")}">')

    def tensorize(self, data: bytes, item: Item, settings: Mapping[str, Any]) -> np.ndarray:
        """uint8 (height, width, channels): EXIF-rotated, colour policy, resize policy."""
        height, width = settings.get("size", (64, 64))
        image = Image.open(io.BytesIO(data))
        if image.format == "JPEG":  # decode at the smallest DCT scale still >= the target size
            rotated = _orientation(image) in _ROTATED_ORIENTATIONS
            image.draft(image.mode, (height, width) if rotated else (width, height))
        image.load()  # a PNG's trailing eXIf chunk is known only once it is read
        orientation = _orientation(image)
        if orientation != 1:  # exif_transpose copies even when there is nothing to do
            image = ImageOps.exif_transpose(image)
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16/32-bit: scale to 8 bits first
            array = np.asarray(image, dtype=np.float64)
            peak = array.max() or 1.0
            image = Image.fromarray(np.rint(array / peak * 255).astype(np.uint8))
        target = "L" if settings.get("color", "rgb") == "grayscale" else "RGB"
        gray_to_rgb = image.mode == "L" and target == "RGB"  # resize one channel, not three
        if image.mode != target and not gray_to_rgb:
            image = image.convert(target)
        policy = settings.get("resize", "pad")
        if image.width * height == image.height * width:  # same aspect: every policy is a resize
            policy = "stretch"
        if image.size == (width, height):
            pass
        elif policy == "stretch":
            image = image.resize((width, height), Image.Resampling.BILINEAR)
        elif policy == "crop":
            image = ImageOps.fit(image, (width, height), Image.Resampling.BILINEAR)
        else:
            image = ImageOps.pad(image, (width, height), Image.Resampling.BILINEAR, color=0)
        if gray_to_rgb:  # after the resize: the same pixels as converting first
            image = image.convert("RGB")
        array = np.asarray(image, dtype=np.uint8)
        return array[..., None] if array.ndim == 2 else array

    named_files: ClassVar[tuple[tuple[str, ...], ...]] = (("train", "transfer", "weights"),)

    @classmethod
    def stores_pictures(cls, settings: Mapping[str, Any]) -> bool:
        return True
    networks: ClassVar[dict[str, tuple[str, ...]]] = {
        "classification": ("image_wide_cnn", "image_cnn", "image_transfer"),
        "regression": ("image_cnn", "image_transfer")}

    #: smallest image side (pixels, as tensorised) for transfer learning under `auto`: an
    #: ImageNet backbone downsamples by 32, so a 32-px image leaves it a 1x1 feature map
    TRANSFER_MIN_SIDE: ClassVar[int] = 64

    def auto_network(self, task: str, settings: Mapping[str, Any],
                     input_shape: tuple[int, ...] = ()) -> tuple[str, str]:
        """Transfer learning when the images are large enough for a pretrained backbone and
        its weights are at hand (a file, Keras' cache, or downloaded now), else the task's
        network from scratch (for classes the wide and deep CNN, whose linear part sees the
        baseline's features)."""
        from dlworkflow.models.extractors import DEFAULT_BACKBONE, pretrained_weights

        scratch = self.networks[task][0]
        side = min(input_shape[:2]) if len(input_shape) >= 2 else self.TRANSFER_MIN_SIDE
        if side < self.TRANSFER_MIN_SIDE:
            return scratch, (f"auto: trained from scratch, {side}-pixel images are below "
                             f"the {self.TRANSFER_MIN_SIDE} pixels a pretrained backbone "
                             "needs (it downsamples by 32)")
        found, why = pretrained_weights(
            (settings.get("transfer") or {}).get("backbone", DEFAULT_BACKBONE),
            backbone_weights(settings))
        if found:
            return "image_transfer", f"auto: transfer learning, {why}"
        return scratch, f"auto: trained from scratch, {why}"

    @classmethod
    def may_transfer(cls, task: str, settings: Mapping[str, Any]) -> bool:
        """Whether `auto` may take image_transfer for `task` under the train section
        `settings`: the backbone's weights not `none` (whether they are at hand, ImageNet's
        downloaded on first use, and the images large enough is for rule choose_network)."""
        return ("image_transfer" in cls.networks.get(task, ())
                and backbone_weights(settings) not in (None, "none"))

    @classmethod
    def weighs_fitted(cls, task: str, settings: Mapping[str, Any]) -> bool:
        """Whether `auto`'s folds may train its choice `fitted` beside it: classes under
        `train.image.wide_fit: auto`."""
        from dlworkflow.tasks import get_task

        return ("image_transfer" in cls.networks.get(task, ())
                and get_task(task).estimator_kind == "classifier"
                and wide_fit(settings) == "auto")

    @classmethod
    def decides_once(cls, task: str, settings: Mapping[str, Any]) -> bool:
        """Where `auto` may take image_transfer (`may_transfer`), or may train its choice
        fitted beside it (`weighs_fitted`), which depends on the pictures' size
        (`networks_beside`): both read by rule choose_network."""
        return cls.may_transfer(task, settings) or cls.weighs_fitted(task, settings)

    @classmethod
    def networks_beside(cls, task: str, decided: str, train: Mapping[str, Any],
                        shape: tuple[int, ...] = ()) -> dict[str, str]:
        """Where `auto` took image_transfer: the task's network from scratch (folder
        `scratch`), since how far ImageNet's features carry depends on the photos (a CNN from
        scratch is the literature's answer for hand signs) and only the folds can tell for a
        user's set. For classes under `train.image.wide_fit: auto`, the network `auto` took
        with its linear part on pixels the step-2 regression, frozen (`fitted`, named
        `<decided>+fitted`): a picture whose pixels' place carries the class, as a
        spectrogram's frequency does, wants it, a photo does not (docs/BENCHMARKS.md). The
        network from scratch gets it too where `auto` took it only for want of weights
        (pictures of `TRANSFER_MIN_SIDE` or more), not on small scans such as the digits,
        where joint won by 1.6 points. On the benchmark's sets: Fashion-MNIST kept the joint
        transfer network (0.875 in CV against `image_wide_cnn`'s 0.831 and fitted's 0.851),
        FSDD's spectrograms as 64-px PNGs took fitted (0.933 against 0.904 joint; without
        weights 0.929 against the network from scratch's 0.901)."""
        scratch = cls.networks.get(task, ("",))[0]
        photos = len(shape) >= 2 and min(shape[:2]) >= cls.TRANSFER_MIN_SIDE
        if decided == "image_transfer":
            beside = {"scratch": scratch}
        elif decided == scratch and photos:
            beside = {}
        else:
            return {}
        if cls.weighs_fitted(task, train):
            beside["fitted"] = network_name(decided, "fitted")
        return beside

    @classmethod
    def variant_settings(cls, variant: str, train: Mapping[str, Any]) -> dict[str, Any]:
        """`fitted`: train.image.wide_fit fitted."""
        if variant != "fitted":
            return super().variant_settings(variant, train)
        return {**train, "image": {**(train.get("image") or {}), "wide_fit": "fitted"}}

    @classmethod
    def embeds_under_auto(cls, task: str, train: Mapping[str, Any],
                          tensors: Mapping[str, Any]) -> bool:
        """Where image_transfer may train: named, or `auto` with images of at least
        `TRANSFER_MIN_SIDE` and the backbone's weights not `none` (whether they are at hand
        is decided once, when the features step runs: rule choose_extractor)."""
        name = train.get("architecture", "auto")
        if name == "image_transfer":
            return True
        size = tensors.get("size", (64, 64))
        return (name == "auto" and cls.may_transfer(task, train)
                and min(size) >= cls.TRANSFER_MIN_SIDE)

    def flat(self, x: Any, settings: Mapping[str, Any]) -> np.ndarray:
        """Pixels averaged down to `baseline.image.pixels` on the longer side, scaled to [0, 1]."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim == 2:  # cached embeddings are already flat
            return x
        side = int((settings.get("image") or {}).get("pixels", 16))
        factor = max(1, max(x.shape[1:3]) // side)
        height, width = (x.shape[1] // factor) * factor, (x.shape[2] // factor) * factor
        blocks = x[:, :height, :width].reshape(len(x), height // factor, factor, width // factor,
                                                factor, x.shape[3])
        return blocks.mean(axis=(2, 4)).reshape(len(x), -1) / 255.0

    def augmentation(self, settings: Mapping[str, Any], seed: int) -> list:
        """Training-only augmentation layers from `augment.image`: flip, rotation, zoom and
        contrast, each only when its setting is on."""
        import keras

        layers: list = []
        if settings.get("flip", "none") != "none":
            layers.append(keras.layers.RandomFlip(settings["flip"], seed=seed))
        if settings.get("rotation"):
            layers.append(keras.layers.RandomRotation(settings["rotation"], seed=seed))
        if settings.get("zoom"):
            layers.append(keras.layers.RandomZoom(settings["zoom"], seed=seed))
        if settings.get("contrast"):
            layers.append(keras.layers.RandomContrast(settings["contrast"], seed=seed))
        return layers

    # no per-fold preprocessing: the networks scale pixels to [0, 1] themselves (after the
    # augmentation, which works on 0-255), and a pretrained backbone takes 0-255


def backbone_weights(settings: Mapping[str, Any]) -> str | None:
    """`train.transfer.weights` of a train section (`imagenet` when unset)."""
    return (settings.get("transfer") or {}).get("weights", "imagenet")
