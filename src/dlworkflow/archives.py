"""Model files with the same bytes for the same model: two runs that train the same weights
write the same `model.keras` and `baseline.skops`, so DVC sees the same hash and a killed and
resumed run can be compared with an uninterrupted one file by file.

Both formats are zip archives holding run-specific text beside the model: Keras writes the
save time (`metadata.json`), member timestamps, and memory addresses as `shared_object_id`s
in `config.json`; skops names each array file after the memory address of the object
(`140411794071216.npy`) and stamps members with the time. `rewrite` renumbers the
addresses in order of first appearance (both formats use them only to match references
within the file), drops the save time, and gives every member one fixed timestamp; the skops
schema is written compact. Loading is unchanged (a test loads both and compares predictions).
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: the earliest time a zip member can carry (what `save_shard` uses as well)
FIXED_TIME = (1980, 1, 1, 0, 0, 0)


def _renumbered_object_ids(config: Any, numbers: dict[int, int]) -> Any:
    if isinstance(config, dict):
        return {key: (numbers.setdefault(value, len(numbers) + 1)
                      if key == "shared_object_id" and isinstance(value, int)
                      else _renumbered_object_ids(value, numbers))
                for key, value in config.items()}
    if isinstance(config, list):
        return [_renumbered_object_ids(value, numbers) for value in config]
    return config


def _keras_members(members: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    out = []
    for name, data in members:
        if name == "metadata.json":
            metadata = json.loads(data)
            metadata.pop("date_saved", None)
            data = json.dumps(metadata).encode()
        elif name == "config.json":
            data = json.dumps(_renumbered_object_ids(json.loads(data), {})).encode()
        out.append((name, data))
    return out


def rewrite(path: str | Path,
            transform: Callable[[list[tuple[str, bytes]]], list[tuple[str, bytes]]]) -> None:
    """Rewrite the zip at `path` in place (through a temporary file and a rename): its
    members, (name, bytes) in order, through `transform`, each stamped `FIXED_TIME`, all
    compressed as the first one was."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp")
    with zipfile.ZipFile(path) as source:
        infos = source.infolist()
        members = transform([(info.filename, source.read(info)) for info in infos])
        compression = infos[0].compress_type if infos else zipfile.ZIP_STORED
    with zipfile.ZipFile(temporary, "w") as target:
        for name, data in members:
            fixed = zipfile.ZipInfo(name, date_time=FIXED_TIME)
            fixed.compress_type = compression
            fixed.external_attr = 0o644 << 16
            target.writestr(fixed, data)
    os.replace(temporary, path)


def save_keras(model: Any, path: str | Path) -> None:
    """`model.save(path)`, then the same bytes for the same model (module docstring)."""
    model.save(path)
    rewrite(path, _keras_members)


SKOPS_SCHEMA = "schema.json"


def _skops_members(members: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """Object ids (`__id__`, memory addresses) renumbered in the schema's order, and the
    array files named after them (`<address>.npy` -> `<number>.npy`) renamed to match."""
    numbers: dict[int, int] = {}

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            out = {}
            for key, value in node.items():
                if key == "__id__" and isinstance(value, int):
                    value = numbers.setdefault(value, len(numbers) + 1)
                elif key == "file" and isinstance(value, str) and value.endswith(".npy") \
                        and value[:-4].isdigit():
                    value = f"{numbers.setdefault(int(value[:-4]), len(numbers) + 1)}.npy"
                else:
                    value = walk(value)
                out[key] = value
            return out
        if isinstance(node, list):
            return [walk(value) for value in node]
        return node

    schema = dict(members)[SKOPS_SCHEMA]
    # compact: skops writes it indented, which Python's pure-Python encoder does (2.8 s for the
    # 63 MB schema of SMS's TF-IDF vocabularies, against 0.2 s and a third of the bytes)
    text = json.dumps(walk(json.loads(schema)), separators=(",", ":")).encode()
    out = []
    for name, data in members:
        if name == SKOPS_SCHEMA:
            data = text
        elif name.endswith(".npy") and name[:-4].isdigit():
            name = f"{numbers[int(name[:-4])]}.npy"
        out.append((name, data))
    return out


def normalise_skops(path: str | Path) -> None:
    """Rewrite a skops file written by `skops.io.dump` with the same bytes for the same
    estimator (module docstring)."""
    rewrite(path, _skops_members)
