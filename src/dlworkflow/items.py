"""The records that flow through intake: a discovered raw item and a rejection."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Item:
    """One raw item found by a layout.

    `file` is the absolute path to read when the item is a file; `payload` holds the raw
    bytes when the item lives inside a bigger file (a line of a delimited text file, one
    series of a long CSV). `path` is what a person sees: `<root>/<relative path>` or
    `<root>/<file>:<line>`. `sha256` is set on items rebuilt from the inventory after
    intake: reading them checks the bytes are still the ones intake accepted.
    """

    id: str
    path: str
    label: Any = None
    group: str | None = None
    side: dict[str, Any] = field(default_factory=dict)
    file: Path | None = None
    payload: bytes | None = None
    sha256: str | None = None

    def read_bytes(self) -> bytes:
        """Return the item's raw bytes (file content or inline payload); RawDataChanged when
        they are not the bytes intake recorded."""
        from dlworkflow.errors import RawDataChanged

        if self.payload is not None:
            data = self.payload
        elif self.file is None:
            raise ValueError(f"item {self.id!r} has neither a file nor a payload")
        else:
            data = read_file(self.file)
        if self.sha256 is not None:
            found = hashlib.sha256(data).hexdigest()
            if found != self.sha256:
                raise RawDataChanged(f"{self.path}: changed since intake (sha256 {found[:12]}..., "
                                     f"the inventory has {self.sha256[:12]}...): rerun intake")
        return data


def read_file(path: str | os.PathLike) -> bytes:
    """A whole file with one stat and one read (`Path.read_bytes` costs ~3x that on small files
    for its buffered reader); reads on to the end should the file be longer than stated."""
    handle = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(handle).st_size
        chunks = [os.read(handle, size)] if size else []
        while chunk := os.read(handle, 1 << 20):
            chunks.append(chunk)
    finally:
        os.close(handle)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


@dataclass(frozen=True)
class Rejection:
    """An item (or a would-be item) that was not accepted, with the reason."""

    path: str
    reason: str
    code: str
    step: str  # "discover" or "probe"
    id: str | None = None

    def as_row(self) -> dict[str, Any]:
        """Return the row written to `intake/rejected.csv`."""
        return {"path": self.path, "id": self.id, "step": self.step, "code": self.code,
                "reason": self.reason}
