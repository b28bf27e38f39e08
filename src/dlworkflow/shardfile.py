"""The shard file format: uncompressed .npz files of per-row arrays, written and read fast.

A shard holds `ids`, `x` and, where stored, `y`, `x_future`, `x_mask`, or `x` as uint8 codes
with the `x_offset` and `x_scale` that restore it. `save_shard` writes the same bytes for the
same arrays (a fixed member timestamp), so DVC sees the same hash; `read_npz` reads a whole
shard with one read and no second copy.
"""

from __future__ import annotations

import io
import os
import re
import struct
import threading
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


def quantise(batch: np.ndarray) -> dict[str, np.ndarray]:
    """uint8 codes with the offset and scale that restore the values (x = code * scale + min);
    `load_shard` restores them."""
    low, high = float(batch.min()), float(batch.max())
    scale = (high - low) / 255 or 1.0
    codes = np.rint((batch - low) / scale).clip(0, 255).astype(np.uint8)
    return {"x": codes, "x_offset": np.float32(low), "x_scale": np.float32(scale)}


def save_shard(output: str | Path, payload: Mapping[str, Any]) -> None:
    """An uncompressed .npz, as `np.savez` writes it, without its copy of each array, and with
    a fixed timestamp on each member: the same arrays give the same bytes (and DVC hash)."""
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    with open(output, "wb") as handle, zipfile.ZipFile(handle, "w", zipfile.ZIP_STORED) as archive:
        for name, value in payload.items():
            array = np.asanyarray(value)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with archive.open(info, "w", force_zip64=True) as member:
                if array.dtype.hasobject or not array.flags.c_contiguous:
                    np.lib.format.write_array(member, array, allow_pickle=False)
                    continue
                np.lib.format.write_array_header_1_0(
                    member, np.lib.format.header_data_from_array_1_0(array))
                member.write(array.reshape(-1).view(np.uint8).data)


# NumPy parses .npy headers with `ast`, which Python 3.11 (3.11.7 here) cannot run in two
# threads at once ("SystemError: AST constructor recursion depth mismatch"); the streaming
# loader reads shards on two threads while the main one may trace a model. Headers as NumPy
# writes them are read with a pattern instead; any other goes to NumPy, one at a time.
_PARSING = threading.Lock()
_HEADER = re.compile(r"\{'descr': '([^']+)', 'fortran_order': (True|False), "
                     r"'shape': \((\d+,|\d+(?:, \d+)+|)\), \} *\n")


def npy_header(member: io.BytesIO) -> tuple[tuple[int, ...], bool, np.dtype] | None:
    """Shape, Fortran order and dtype of the .npy at the start of `member`, which is left at
    its data; None for a format version other than 1.0 and 2.0 (ValueError if not an .npy)."""
    version = np.lib.format.read_magic(member)
    if version not in ((1, 0), (2, 0)):
        return None
    wide = version == (2, 0)  # the header's length takes 4 bytes instead of 2
    start = member.tell()
    (size,) = struct.unpack("<I" if wide else "<H", member.read(4 if wide else 2))
    found = _HEADER.fullmatch(member.read(size).decode("latin1"))
    if found:
        shape = tuple(int(n) for n in found[3].replace(",", " ").split())
        return shape, found[2] == "True", np.dtype(found[1])
    member.seek(start)
    with _PARSING:
        return (np.lib.format.read_array_header_2_0 if wide
                else np.lib.format.read_array_header_1_0)(member)


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of an uncompressed .npz (as `save_shard` writes it), read in one go.

    The file is read into one buffer and every member becomes a view of it: no per-member
    stream and no second copy, several times faster than `np.load` for shards. Compressed or
    object members fall back to `np.load`, which also checks the zip's CRCs (DVC's checksums
    cover the file in the workflow).
    """
    with open(path, "rb") as handle:
        buffer = bytearray(os.fstat(handle.fileno()).st_size)
        handle.readinto(buffer)  # one copy, into a writable buffer (arrays like np.load's)
    view = memoryview(buffer)
    arrays: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(path) as archive:  # reads the central directory only
        for info in archive.infolist():
            if info.compress_type != zipfile.ZIP_STORED or not info.filename.endswith(".npy"):
                return _np_load(path)
            start = info.header_offset
            name_length, extra_length = struct.unpack("<HH", view[start + 26: start + 30])
            start += 30 + name_length + extra_length  # the local header precedes the data
            member = io.BytesIO(view[start: start + min(info.file_size, 1 << 17)])
            header = npy_header(member)
            if header is None:
                return _np_load(path)
            shape, fortran, dtype = header
            if dtype.hasobject:
                return _np_load(path)
            count = int(np.prod(shape))
            array = np.frombuffer(buffer, dtype, count, start + member.tell())
            arrays[info.filename[:-4]] = array.reshape(shape, order="F" if fortran else "C")
    return arrays


def map_npz(path: str | Path) -> dict[str, np.ndarray]:
    """The members of an uncompressed .npz as read-only memory maps: nothing is read until a
    row is taken (`RowSource` gathers training rows from them). Compressed, object or
    Fortran-ordered members are read whole (`read_npz`)."""
    arrays: dict[str, np.ndarray] = {}
    with open(path, "rb") as handle, zipfile.ZipFile(handle) as archive:
        for info in archive.infolist():
            if info.compress_type != zipfile.ZIP_STORED or not info.filename.endswith(".npy"):
                return read_npz(path)
            handle.seek(info.header_offset + 26)
            name_length, extra_length = struct.unpack("<HH", handle.read(4))
            start = info.header_offset + 30 + name_length + extra_length
            handle.seek(start)
            member = io.BytesIO(handle.read(min(info.file_size, 1 << 17)))
            header = npy_header(member)
            if header is None or header[1] or header[2].hasobject:
                return read_npz(path)
            shape, _, dtype = header
            offset = start + member.tell()
            arrays[info.filename[:-4]] = (
                np.memmap(path, dtype, "r", offset, shape) if int(np.prod(shape))
                else np.empty(shape, dtype))
    return arrays


def _np_load(path: str | Path) -> dict[str, np.ndarray]:
    with _PARSING, np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def dequantise(codes: np.ndarray, scale: Any, offset: Any) -> np.ndarray:
    """float32 values of `quantise`'s uint8 codes."""
    return codes.astype(np.float32) * scale + offset


def load_shard(path: str | Path) -> dict[str, np.ndarray]:
    """Read a shard; quantised audio is restored to float32."""
    arrays = read_npz(path)
    if "x_scale" in arrays:
        arrays["x"] = dequantise(arrays["x"], arrays.pop("x_scale"), arrays.pop("x_offset"))
    return arrays


def shard_names(plan_path: str | Path, role: str) -> list[str]:
    """The shards of one role listed in a plan (read after the tensor_plan checkpoint ran)."""
    import pandas as pd

    plan = pd.read_parquet(plan_path, columns=["shard", "role"])
    return sorted(plan.loc[plan["role"] == role, "shard"].unique())


def plan_folds(plan_path: str | Path) -> int:
    """How many validation folds a plan's rows have (a forecasting split may make fewer
    than split.folds when its series are short)."""
    import pandas as pd

    return int(pd.read_parquet(plan_path, columns=["fold"])["fold"].dropna().nunique())
