"""Registry of modalities: the name used in params.yaml -> the class that implements it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dlworkflow.errors import ConfigError
from dlworkflow.modalities.audio import AudioModality
from dlworkflow.modalities.base import Modality
from dlworkflow.modalities.image import ImageModality
from dlworkflow.modalities.text import TextModality
from dlworkflow.modalities.timeseries import TimeSeriesModality

MODALITIES: dict[str, type[Modality]] = {
    cls.name: cls for cls in (TextModality, ImageModality, AudioModality, TimeSeriesModality)
}


def get_modality_class(name: str) -> type[Modality]:
    """Return the class registered under `name`, or raise ConfigError listing valid names."""
    try:
        return MODALITIES[name]
    except KeyError:
        raise ConfigError(f"unknown modality {name!r}; registered modalities: "
                          f"{', '.join(sorted(MODALITIES))}") from None


def create_modality(name: str, intake_options: Mapping[str, Any],
                    layout: Mapping[str, Any]) -> Modality:
    """Instantiate a modality with its `intake.<name>` options and the dataset's layout."""
    return get_modality_class(name)(intake_options.get(name, {}), layout)


__all__ = ["MODALITIES", "Modality", "create_modality", "get_modality_class"]
