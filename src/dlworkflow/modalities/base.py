"""The modality interface: what every data type (text, image, audio, time series) provides.

Shared code talks to a `Modality` and never asks which one it is. This issue's part of the
interface is discovery (which files or records are items) and probing (stats for the
inventory, or `BadInput` with a reason); decoding, previews, flat features and default
models are added to the same class by later steps.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from dlworkflow.errors import ConfigError
from dlworkflow.items import Item
from dlworkflow.layouts import Discovery, LayoutContext, discover

#: joins a network's architecture and the variant it was trained as, in the name its scores go
#: by: `image_transfer+fitted` is image_transfer under train.image.wide_fit fitted
VARIANT_MARK = "+"


def split_network_name(name: str) -> tuple[str, str | None]:
    """A network's name as its scores go by: its architecture and its variant (None for the
    architecture as configured)."""
    architecture, mark, variant = name.partition(VARIANT_MARK)
    return architecture, (variant if mark else None)


def network_name(architecture: str, variant: str | None) -> str:
    """The name a network's scores go by (`split_network_name`'s inverse)."""
    return architecture if variant is None else f"{architecture}{VARIANT_MARK}{variant}"


FILE_LAYOUTS = ("folders", "filename_regex", "manifest")


class Modality(ABC):
    """Base class of every modality; subclasses register themselves by `name`."""

    name: ClassVar[str]
    #: lower-case file extensions (with the dot) accepted in file-based layouts
    extensions: ClassVar[tuple[str, ...]]
    #: layout kinds this modality can read
    layouts: ClassVar[tuple[str, ...]] = FILE_LAYOUTS
    #: tasks this modality supports
    tasks: ClassVar[tuple[str, ...]] = ("classification", "regression")
    #: inventory columns the probe returns, with their pandas dtype
    stats: ClassVar[dict[str, str]]
    #: what a deployed model takes as one raw input, in words (latency.json)
    raw_input: ClassVar[str] = "raw files/texts"
    #: the raw input is the stored array itself (series windows): latency samples shards
    timed_from_shards: ClassVar[bool] = False
    #: items may be given inline (a manifest's text column, strings to `dlworkflow predict`)
    inline_text: ClassVar[bool] = False
    #: its files are decoded with the layout's `encoding` (text); others are read as bytes
    decodes_text: ClassVar[bool] = False
    #: params keys (section first) whose value may name a local file or folder that its
    #: networks read: pretrained weights, word vectors (`workflow.named_files`; an
    #: extractor's `features.weights` is added where it embeds the modality)
    named_files: ClassVar[tuple[tuple[str, ...], ...]] = ()

    @classmethod
    def stores_pictures(cls, settings: Mapping[str, Any]) -> bool:
        """Whether its tensors under `settings` (its `tensors.<modality>` section) are
        pictures, (height, width, channels), that a pretrained image backbone can embed
        (`features.extractor`)."""
        return False

    def __init__(self, options: Mapping[str, Any] | None = None,
                 layout: Mapping[str, Any] | None = None) -> None:
        self.options = dict(options or {})
        self.layout = dict(layout or {})

    def discover(self, root: Path, root_display: Path, task: Any,
                 exclude: tuple[str, ...] = ()) -> Discovery:
        """Find the dataset's items under root with the configured layout (`task`: the
        dataset's Task, which says whether and how items are labelled)."""
        ctx = LayoutContext(root=root_display, task=task, extensions=self.extensions,
                            exclude=tuple(self.layout.get("exclude", ())) + exclude)
        return discover(root, self.layout, ctx)

    def records(self, rows: Any, root: str, task: Any, base: Path) -> list[Item]:
        """Rebuild Item objects for inventory rows, in their order, only through what intake
        recorded: each item carries the inventory's sha256 (reading checks it), and a file
        must still be a file inside the dataset folder. Anything else raises RawDataChanged
        naming the item and saying "rerun intake" (Snakemake reruns intake by itself when
        the raw folder changes; this catches a change it cannot see, such as a file swapped
        for a link that leaves the folder).

        A file item is rebuilt from its inventory row (the file is `base / path`), so a shard
        job reads only its own files instead of walking the whole dataset; items that live
        inside a bigger file (a text line, a series of a CSV) are found again by discovery.
        """
        from dataclasses import replace

        import pandas as pd

        from dlworkflow.errors import RawDataChanged

        hashes = (rows["sha256"].astype(str).tolist() if "sha256" in rows
                  else [None] * len(rows))
        # a manifest with a text column holds its items inline: they have no file of their own
        files = self.layout.get("kind") in FILE_LAYOUTS and "text_column" not in self.layout
        if "path" in rows and files:
            inside = (base / root).resolve()
            items = []
            for row, sha256 in zip(rows.itertuples(index=False), hashes, strict=True):
                file = base / str(row.path)
                real = file.resolve()
                if not real.is_relative_to(inside):
                    raise RawDataChanged(f"{row.path}: now leads outside the dataset folder "
                                         f"(-> {real}); rerun intake")
                if not real.is_file():
                    raise RawDataChanged(f"{row.path}: gone since intake; rerun intake")
                label = getattr(row, "label", None)
                group = getattr(row, "group", None)
                items.append(Item(str(row.id), str(row.path), None if pd.isna(label) else label,
                                  None if pd.isna(group) else str(group), file=real,
                                  sha256=sha256))
            return items
        found = self.discover(base / root, Path(root), task)
        by_id = {item.id: item for item in found.items}
        items = []
        for item_id, sha256 in zip(rows["id"].astype(str), hashes, strict=True):
            if item_id not in by_id:
                raise RawDataChanged(f"{root}: item {item_id!r} gone since intake; rerun intake")
            items.append(replace(by_id[item_id], sha256=sha256))
        return items

    @abstractmethod
    def probe(self, data: bytes, item: Item) -> dict[str, Any]:
        """Return the item's stats (keys of `stats`, plus optional `notes`), or raise BadInput."""

    @abstractmethod
    def preview(self, data: bytes, item: Item) -> str:
        """A small self-contained HTML fragment showing the item (for the reports)."""

    @abstractmethod
    def tensorize(self, data: bytes, item: Item, settings: Mapping[str, Any]) -> Any:
        """Stateless decode of one item to its fixed-shape array (or normalised string)."""

    def frame(self, data: bytes) -> Any:
        """A series item as a frame with `timestamp` and `value` (modalities with a time axis)."""
        raise ConfigError(f"{self.name} items have no time axis; forecasting reads timeseries")

    def channels(self, data: bytes) -> Any:
        """A series item's target and exogenous columns in time order (time axis only)."""
        raise ConfigError(f"{self.name} items have no time axis; forecasting reads timeseries")

    def tensor_settings(self, tensors: Mapping[str, Any], inventory: Any) -> dict[str, Any]:
        """The `tensors.<modality>` settings a shard job decodes with (resolved from the
        inventory where a setting depends on the data)."""
        return dict(tensors.get(self.name, {}))

    def card_settings(self, settings: dict[str, Any], item_shape: Sequence[int]) -> dict[str, Any]:
        """The tensor settings a model's card records, so that `predict` decodes new files to
        the tensors it was trained on: `settings` with what `tensor_settings` resolved from
        the inventory read back from the stored tensors' shape per item (`item_shape`)."""
        return settings

    def stored(self, batch: Any, settings: Mapping[str, Any]) -> dict[str, Any]:
        """How a batch of tensors is kept in a shard: strings and uint8 as they are, other
        numbers as float32 (the `x` of the shard, and anything that restores it)."""
        import numpy as np

        if batch.dtype.kind == "U" or batch.dtype == np.uint8:
            return {"x": batch}
        return {"x": batch.astype(np.float32)}

    def model_inputs(self, arrays: Mapping[str, Any]) -> Any:
        """The one conversion of stored arrays (a shard's rows, or decoded raw items) into
        what a model takes: strings and uint8 as they are, other numbers as float32, and
        {"past", "future"} when known-future covariates come with the windows."""
        import numpy as np

        x = arrays["x"]
        x = x if x.dtype.kind in "U" or x.dtype == np.uint8 else x.astype(np.float32)
        future = arrays.get("x_future")
        if future is not None and future.shape[-1]:
            return {"past": x, "future": future.astype(np.float32)}
        return x

    def augmentation(self, settings: Mapping[str, Any], seed: int) -> list:
        """Keras layers that augment training batches (active only with training=True)."""
        return []

    def preprocessing(self, train_x: Any, settings: Mapping[str, Any]) -> list:
        """Keras layers adapted on a fold's training rows, saved inside that fold's model."""
        return []

    def layer_settings(self, train: Mapping[str, Any], stats_path: str | None) -> dict[str, Any]:
        """The settings `preprocessing` reads: `train.<modality>`, resolved against the
        tensor statistics where a value is `auto`."""
        return dict(train.get(self.name) or {})

    #: network architectures (names in dlworkflow.models) per task; the first is the default
    networks: ClassVar[dict[str, tuple[str, ...]]] = {}

    def auto_network(self, task: str, settings: Mapping[str, Any],
                     input_shape: tuple[int, ...] = ()) -> tuple[str, str]:
        """The network `train.architecture: auto` trains on inputs of `input_shape`, and why."""
        return self.networks[task][0], f"auto: the default {self.name} network for {task}"

    @classmethod
    def decides_once(cls, task: str, settings: Mapping[str, Any]) -> bool:
        """Whether `train.architecture: auto`'s choice for `task` depends on what the machine
        has (pretrained weights at hand or downloadable), or the networks beside it on the
        stored items (`networks_beside`), so that rule choose_network makes it once for
        every fold and the final model (asked under `auto` only: a named network is as
        configured); here it does not (the task's network)."""
        return False

    @classmethod
    def networks_beside(cls, task: str, decided: str, train: Mapping[str, Any],
                        shape: tuple[int, ...] = ()) -> dict[str, str]:
        """The networks `auto`'s folds train beside `decided`, the network it chose once
        (rule choose_network, which records them), so that cross-validation chooses among
        them: {the folder under `nn/` they are written to (rule train_<folder>_fold): the
        name their scores go by}; empty where the folds train `decided` alone (here always).
        `train` is the dataset's train section, `shape` the stored items' one shape (() where
        they differ)."""
        return {}

    @classmethod
    def recorded_beside(cls, task: str, choice: Mapping[str, Any],
                        train: Mapping[str, Any]) -> dict[str, str]:
        """The networks beside the network rule choose_network decided on, as its decision
        `choice` (nn/network.json) lists them; a decision written before it listed them
        (no key `beside`) keeps the networks the choice alone gave then."""
        if "beside" in choice:
            return dict(choice["beside"] or {})
        return cls.networks_beside(task, choice["architecture"], train)

    @classmethod
    def variant_settings(cls, variant: str, train: Mapping[str, Any]) -> dict[str, Any]:
        """The train section a network named `<architecture>+<variant>` (one of
        `networks_beside`'s) trains under: `train` with the setting the variant changes; none
        here."""
        raise ConfigError(f"{cls.name} networks have no variant {variant!r}")

    @classmethod
    def embeds_under_auto(cls, task: str, train: Mapping[str, Any],
                          tensors: Mapping[str, Any]) -> bool:
        """Whether `features.extractor: auto` runs the features step for a `task` set of
        this modality under `train` (its train section) and `tensors` (its
        `tensors.<modality>` section): where its network may be a transfer network on
        pictures the step can embed once instead; here it may not."""
        return False

    @classmethod
    def encodes_once(cls, task: str, settings: Mapping[str, Any]) -> bool:
        """Whether the network `settings` (the train section) choose for `task` may run a
        frozen pretrained encoder whose outputs are computed once for the dataset before
        its folds (rule encode_texts), instead of once in every fold."""
        return False

    def flat(self, x: Any, settings: Mapping[str, Any]) -> Any:
        """The flat representation step 2's traditional baselines use (rows of numbers)."""
        import numpy as np

        return np.asarray(x, dtype=np.float32).reshape(len(x), -1)

    def baselines(self, kind: str, settings: Mapping[str, Any], seed: int) -> dict[str, Any]:
        """Unfitted scikit-learn estimators (Pipelines) for step 2 on `flat` rows, by name;
        `kind` is the task's estimator kind (`classifier` or `regressor`)."""
        from dlworkflow.estimators import standard_baselines

        return standard_baselines(kind, settings, seed)

    #: where row 0 of a 2-D input is drawn: "upper" for pictures, "lower" for spectrograms
    origin: ClassVar[str] = "upper"

    def shap_masker(self, background: Any) -> Any:
        """SHAP masker for explanations: regions of the array (a partition tree over its
        cells) are hidden by the mean of `background` (training rows)."""
        import numpy as np
        import shap  # imported first by dlworkflow.explain, its numba functions as Python

        mean = np.asarray(background, dtype=np.float32).mean(axis=0)
        return shap.maskers.Image(mean, mean.shape)

    def attribution_axes(self, shape: tuple[int, ...],
                         settings: Mapping[str, Any]) -> dict[str, Any] | None:
        """How the axes of a 2-D input's attribution map are labelled: None (a picture: no
        axes), or {extent, xlabel, ylabel} in the input's own units (a spectrogram: seconds
        and bands). `shape` is (rows, columns)."""
        return None

    def attribution_html(self, x: Any, values: Any, what: str,
                         settings: Mapping[str, Any] | None = None) -> str:
        """The input beside its SHAP attributions (red raises `what`, blue lowers it), drawn
        as the report draws the input (rows upwards for spectrograms: `origin`), with axes
        in the input's units when it has them (`attribution_axes`; `settings`: the
        dataset's tensors settings for this modality)."""
        import numpy as np

        from dlworkflow.figures import figure_uri, new_panels

        picture = np.asarray(x, dtype=np.float32).mean(axis=-1)
        if picture.ndim == 1:  # one value per step (a waveform): drawn as a strip
            picture = picture[None, :]
        heat = np.asarray(values, dtype=np.float64).reshape(*picture.shape, -1).sum(axis=-1)
        limit = float(np.abs(heat).max()) or 1.0
        axes_info = self.attribution_axes(picture.shape, settings or {})
        extent = axes_info["extent"] if axes_info else None
        figure, (left, right) = new_panels(2, 3.4, 1.9 if axes_info else 1.7)
        left.imshow(picture, cmap="gray", origin=self.origin, aspect="auto", extent=extent)
        right.imshow(picture, cmap="gray", origin=self.origin, aspect="auto", alpha=0.35,
                     extent=extent)
        right.imshow(heat, cmap="bwr", vmin=-limit, vmax=limit, origin=self.origin,
                     aspect="auto", alpha=0.8, extent=extent)
        for axes in (left, right):
            if axes_info:
                axes.set_xlabel(axes_info["xlabel"], fontsize=6)
                axes.tick_params(labelsize=5)
            else:
                axes.set_xticks([])
                axes.set_yticks([])
        if axes_info:
            left.set_ylabel(axes_info["ylabel"], fontsize=6)
            right.set_yticks([])
        left.set_title("input", fontsize=7)
        right.set_title(f"SHAP for {what}", fontsize=7)
        return f'<img alt="SHAP attributions" src="{figure_uri(figure)}">'

    def empty_stats(self) -> dict[str, Any]:
        """Stats with every column present and no values (for typing empty inventories)."""
        return {name: None for name in self.stats}
