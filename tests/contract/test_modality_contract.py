"""One contract, every registered modality: the same checks for text, image, audio, series."""

from __future__ import annotations

import pandas as pd
import pytest

from dlworkflow.errors import BadInput, ConfigError
from dlworkflow.intake import run_intake
from dlworkflow.items import Item
from dlworkflow.layouts import LAYOUTS
from dlworkflow.modalities import MODALITIES, create_modality, get_modality_class

TASKS = {"classification", "regression", "forecasting"}


@pytest.fixture(scope="session")
def valid_examples(digit_png, fsdd_wav, sms_lines, co2_csv):
    """A real, valid item per modality: (file extension, bytes)."""
    return {
        "image": (".png", digit_png),
        "audio": (".wav", fsdd_wav),
        "text": (".txt", sms_lines[0].split(b"\t", 1)[1]),
        "timeseries": (".csv", co2_csv),
    }


def _layout_for(name: str) -> dict:
    if name == "timeseries":
        return {"kind": "folders", "series": {"timestamp": "date", "target": "co2"}}
    return {"kind": "folders"}


def test_every_registered_modality_has_an_example(valid_examples):
    assert set(valid_examples) == set(MODALITIES)


@pytest.mark.parametrize("name", sorted(MODALITIES))
def test_declares_its_capabilities(name):
    cls = get_modality_class(name)
    assert cls.name == name
    assert cls.extensions and all(e.startswith(".") and e == e.lower() for e in cls.extensions)
    assert set(cls.layouts) <= set(LAYOUTS)
    assert set(cls.tasks) <= TASKS
    for column, dtype in cls.stats.items():
        pd.Series([], dtype=dtype)  # every declared dtype is a real pandas dtype
        assert column not in {"id", "path", "label", "group", "bytes", "sha256", "notes"}


@pytest.mark.parametrize("name", sorted(MODALITIES))
def test_probe_returns_exactly_the_declared_stats(name, valid_examples):
    modality = create_modality(name, {}, _layout_for(name))
    _, data = valid_examples[name]
    stats = modality.probe(data, Item(id="x", path="x"))
    notes = stats.pop("notes")
    assert isinstance(notes, list) and all(isinstance(n, str) for n in notes)
    assert set(stats) == set(modality.stats)
    assert modality.probe(data, Item(id="x", path="x")) == {**stats, "notes": notes}


@pytest.mark.parametrize("name", sorted(MODALITIES))
@pytest.mark.parametrize("garbage", [b"", bytes(range(256)) * 8, b"\x00" * 64],
                         ids=["empty", "all-bytes", "zeros"])
def test_garbage_raises_bad_input_with_a_reason(name, garbage):
    modality = create_modality(name, {}, _layout_for(name))
    with pytest.raises(BadInput) as caught:
        modality.probe(garbage, Item(id="x", path="x"))
    assert caught.value.reason.strip() and caught.value.code


@pytest.mark.parametrize("name", sorted(MODALITIES))
def test_intake_types_the_inventory_with_the_declared_dtypes(name, valid_examples, tmp_path):
    extension, data = valid_examples[name]
    root = tmp_path / "data" / "raw" / name
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        (root / label / f"item{extension}").write_bytes(data)
    (root / "b" / f"broken{extension}").write_bytes(b"")
    dataset = {"modality": name, "task": "classification", "root": f"data/raw/{name}",
               "layout": _layout_for(name)}
    result = run_intake(name, dataset, {}, base_dir=tmp_path, progress=False)
    assert result.counts == {"dataset": name, "modality": name, "found": 3, "accepted": 2,
                             "rejected": 1, "rejected_by_code": {"empty": 1}}
    inventory = result.inventory
    assert list(inventory["label"]) == ["a", "b"]
    assert inventory["sha256"].nunique() == 1  # same bytes, same hash
    for column, dtype in MODALITIES[name].stats.items():
        assert str(inventory[column].dtype) == str(pd.Series([], dtype=dtype).dtype), column


def test_unknown_modality_lists_the_registered_ones():
    with pytest.raises(ConfigError) as caught:
        get_modality_class("video")
    for name in MODALITIES:
        assert name in str(caught.value)
