"""Intake internals: duplicates, side tables, probe failures, workers, written outputs."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from dlworkflow.config import validate_params
from dlworkflow.errors import ConfigError
from dlworkflow.intake import intake_dataset, probe_item, reject_duplicate_ids, run_intake
from dlworkflow.items import Item
from dlworkflow.modalities import create_modality


def _speech(tmp_path, copy_demo, side_table=None):
    copy_demo("fsdd")
    dataset = {"modality": "audio", "task": "classification", "root": "data/raw/fsdd",
               "layout": {"kind": "filename_regex", "glob": "recordings/*.wav",
                          "regex": r"(?P<label>\d)_(?P<group>[a-z]+)_(?P<take>\d+)\.wav"}}
    if side_table:
        dataset["side_table"] = side_table
    params = validate_params({"seed": 0, "datasets": {"fsdd": dataset}}, base_dir=tmp_path)
    return params["datasets"]["fsdd"], params["intake"]


def test_duplicate_ids_keep_the_first_and_name_it():
    items = [Item(id="a", path="p1"), Item(id="b", path="p2"), Item(id="a", path="p3")]
    kept, rejected = reject_duplicate_ids(items)
    assert [i.path for i in kept] == ["p1", "p2"]
    assert rejected[0].path == "p3" and "first seen at p1" in rejected[0].reason


def test_a_crashing_probe_is_a_rejection_not_a_crash(monkeypatch):
    modality = create_modality("text", {}, {"kind": "delimited"})

    def broken(data, item):
        raise ZeroDivisionError("bug")

    monkeypatch.setattr(modality, "probe", broken)
    row, rejection = probe_item(modality, Item(id="x", path="x", payload=b"hello"))
    assert row is None and rejection.code == "probe_error" and "ZeroDivisionError" in rejection.reason


def test_unreadable_file_is_rejected(tmp_path):
    modality = create_modality("text", {}, {"kind": "folders"})
    row, rejection = probe_item(modality, Item(id="x", path="x", file=tmp_path / "gone.txt"))
    assert row is None and rejection.code == "unreadable"


def test_two_workers_give_the_same_inventory_as_one(tmp_path, copy_demo):
    dataset, intake = _speech(tmp_path, copy_demo)
    intake = {**intake, "batch_size": 7}
    one = run_intake("fsdd", dataset, intake, base_dir=tmp_path, workers=1, progress=False)
    two = run_intake("fsdd", dataset, intake, base_dir=tmp_path, workers=2, progress=False)
    pd.testing.assert_frame_equal(one.inventory, two.inventory)
    assert one.counts == two.counts


@pytest.mark.parametrize(
    ("side_table", "message"),
    [({"file": "speakers.csv", "key": "name", "join_on": "group"}, "side_table.key: column 'name'"),
     ({"file": "speakers.csv", "key": "speaker", "join_on": "voice"}, "side_table.join_on: 'voice' is not"),
     ],
)
def test_side_table_mistakes_are_config_errors(tmp_path, copy_demo, side_table, message):
    dataset, intake = _speech(tmp_path, copy_demo, side_table)
    with pytest.raises(ConfigError, match=message):
        run_intake("fsdd", dataset, intake, base_dir=tmp_path, progress=False)


def test_side_table_with_duplicate_keys_is_refused(tmp_path, copy_demo):
    dataset, intake = _speech(tmp_path, copy_demo,
                              {"file": "speakers.csv", "key": "speaker", "join_on": "group"})
    speakers = tmp_path / "data" / "raw" / "fsdd" / "speakers.csv"
    speakers.write_text(speakers.read_text() + "george,male,GRC/Greek,english\n")
    with pytest.raises(ConfigError, match="key 'george' appears twice"):
        run_intake("fsdd", dataset, intake, base_dir=tmp_path, progress=False)


def test_outputs_are_written_and_deterministic(tmp_path, copy_demo):
    dataset, intake = _speech(tmp_path, copy_demo)
    outputs = {k: tmp_path / "out" / f for k, f in
               (("inventory", "inventory.parquet"), ("rejected", "rejected.csv"),
                ("counts", "counts.json"))}
    intake_dataset("fsdd", dataset, intake, outputs, base_dir=tmp_path)
    first = {k: p.read_bytes() for k, p in outputs.items()}
    intake_dataset("fsdd", dataset, intake, outputs, base_dir=tmp_path, workers=2)
    assert first == {k: p.read_bytes() for k, p in outputs.items()}
    counts = json.loads(first["counts"])
    assert counts["found"] == counts["accepted"] == len(pd.read_parquet(outputs["inventory"]))
    assert pd.read_csv(outputs["rejected"]).empty


def test_a_leakage_finding_in_words():
    from dlworkflow.eda import leakage_finding

    entry = {"group": "theo", "test": ["a.wav", "b.wav"], "trainval": [f"{i}.wav" for i in range(5)]}
    assert leakage_finding(entry) == ("group theo in test: 2 items (a.wav, b.wav); trainval: 5 "
                                      "items (0.wav, 1.wav, 2.wav, … 2 more)")
    twins = {"sha256": "0123456789abcdef", "0": ["x"], "3": ["y"]}
    assert leakage_finding(twins) == ("identical content 0123456789ab in fold 0: 1 item (x); "
                                      "fold 3: 1 item (y)")
