"""Step 3, preprocessing: stateless transforms precomputed once into fixed-shape shards.

The plan (a checkpoint) assigns every item, or every forecasting window, to a shard; one
Snakemake job writes one shard, so `--cores 8` runs eight at a time and a finished shard is
never recomputed. Test-role items live in their own shards, which only the final step asks
for. Anything learned from data (vocabulary, normalisation) is not done here: it is fitted
per fold inside the model.
"""

from __future__ import annotations

import io
import json
import os
import re
import struct
import threading
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dlworkflow.errors import ConfigError
from dlworkflow.intake import item_records
from dlworkflow.modalities import create_modality


def plan_items(splits: pd.DataFrame, shard_size: int, seed: int) -> pd.DataFrame:
    """Assign items to shards per role, in a seeded random order so every shard mixes classes."""
    rows = []
    for role in ("trainval", "test"):
        part = splits[splits["role"] == role].sort_values("id", kind="stable")
        order = np.random.default_rng(seed).permutation(len(part))
        part = part.iloc[order].reset_index(drop=True)
        part["shard"] = [f"{role}-{i // shard_size:05d}" for i in range(len(part))]
        rows.append(part)
    plan = pd.concat(rows, ignore_index=True)
    columns = ["id", "label", "group", "role", "fold", "in_sample", "shard"]
    return plan[[c for c in columns if c in plan.columns]]


def plan_windows(splits: pd.DataFrame, lookback: int, horizon: int, shard_size: int) -> pd.DataFrame:
    """Forecasting: one row per window (lookback inputs -> horizon targets) with role and fold.

    A window whose targets touch the test period is test. A window whose targets lie inside
    fold k's validation window validates fold k; fold k trains on windows whose targets end
    before that window starts minus the gap (see `window_membership`).
    """
    rows = []
    for series_id, steps in splits.groupby("id", sort=True):
        steps = steps.sort_values("step")
        roles, folds = steps["role"].to_numpy(), steps["fold"].to_numpy()
        n = len(steps)
        for start in range(lookback, n - horizon + 1):
            target = slice(start, start + horizon)
            role = "test" if (roles[target] == "test").any() else "trainval"
            target_folds = pd.Series(folds[target])
            same_fold = target_folds.notna().all() and target_folds.nunique() == 1
            fold = int(target_folds.iloc[0]) if role == "trainval" and same_fold else pd.NA
            rows.append({"id": f"{series_id}@{start:06d}", "series": str(series_id),
                         "target_start": start, "target_end": start + horizon - 1,
                         "role": role, "fold": fold})
    plan = pd.DataFrame(rows)
    plan["fold"] = plan["fold"].astype("Int64")
    plan["in_sample"] = plan["role"] == "trainval"
    for role in ("trainval", "test"):
        members = plan.index[plan["role"] == role]
        plan.loc[members, "shard"] = [f"{role}-{i // shard_size:05d}" for i in range(len(members))]
    return plan


def make_plan(dataset: Mapping[str, Any], tensors: Mapping[str, Any], split: Mapping[str, Any],
              seed: int, splits_path: str, output: str) -> pd.DataFrame:
    """Write `tensors/plan.parquet`: which shard every item (or window) goes to."""
    splits = pd.read_parquet(splits_path)
    if dataset["task"] == "forecasting":
        plan = plan_windows(splits, int(tensors["timeseries"]["lookback"]), int(split["horizon"]),
                            int(tensors["shard_size"]))
        if plan.empty:
            raise ConfigError("tensors.timeseries.lookback: no window fits; the series are "
                              "shorter than lookback + horizon")
    else:
        plan = plan_items(splits, int(tensors["shard_size"]), seed)
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    plan.to_parquet(output, index=False)
    return plan


def shard_names(plan_path: str, role: str) -> list[str]:
    """The shards of one role listed in a plan (read after the checkpoint ran)."""
    plan = pd.read_parquet(plan_path, columns=["shard", "role"])
    return sorted(plan.loc[plan["role"] == role, "shard"].unique())


def _quantise(batch: np.ndarray) -> dict[str, np.ndarray]:
    """uint8 codes with the offset and scale that restore the values (x = code * scale + min)."""
    low, high = float(batch.min()), float(batch.max())
    scale = (high - low) / 255 or 1.0
    codes = np.rint((batch - low) / scale).clip(0, 255).astype(np.uint8)
    return {"x": codes, "x_offset": np.float32(low), "x_scale": np.float32(scale)}


def modality_settings(dataset: Mapping[str, Any], tensors: Mapping[str, Any],
                      inventory: pd.DataFrame) -> dict[str, Any]:
    """The tensors.<modality> settings, with a series length resolved from the data."""
    settings = dict(tensors.get(dataset["modality"], {}))
    if dataset["modality"] == "timeseries" and not settings.get("length") and "length" in inventory:
        settings["length"] = int(inventory["length"].max())
    return settings


def tensorise_items(modality: Any, items: list, settings: Mapping[str, Any]) -> np.ndarray:
    """One batch of the items' tensors (text: an array of strings).

    Each item's tensor is copied into a batch allocated once, as it is made, and dropped:
    the next item reuses its memory instead of a list of per-item arrays being kept and
    stacked at the end (on small images that saves about a tenth of the time).
    """
    values = (modality.tensorize(item.read_bytes(), item, settings) for item in items)
    first = next(values, None)
    if first is None:
        raise ValueError("no items to tensorise")
    if isinstance(first, str):
        return np.array([first, *values], dtype=str)
    batch = np.empty((len(items), *np.shape(first)), np.asarray(first).dtype)
    batch[0] = first
    for number, value in enumerate(values, start=1):
        batch[number] = value
    return batch


def write_item_shard(dataset: Mapping[str, Any], tensors: Mapping[str, Any], plan: pd.DataFrame,
                     inventory: pd.DataFrame, shard: str, output: str, base_dir: str = ".") -> int:
    """Tensorise the items of one shard and write them as one .npz file."""
    rows = plan[plan["shard"] == shard].reset_index(drop=True)
    modality = create_modality(dataset["modality"], {}, dataset["layout"])
    settings = modality_settings(dataset, tensors, inventory)
    items = {item.id: item for item in item_records(rows, modality, dataset, Path(base_dir))}
    missing = [i for i in rows["id"] if i not in items]
    if missing:
        raise RuntimeError(f"{shard}: {len(missing)} planned items are gone from the raw data "
                           f"(first: {missing[0]}); rerun intake")
    batch = tensorise_items(modality, [items[i] for i in rows["id"]], settings)
    payload: dict[str, Any] = {"ids": rows["id"].to_numpy(dtype=str)}
    if batch.dtype.kind == "U":
        payload["x"] = batch
    else:
        if dataset["modality"] == "audio" and settings.get("storage", "float16") == "uint8":
            payload.update(_quantise(batch))
        elif batch.dtype == np.uint8:
            payload["x"] = batch
        else:
            payload["x"] = batch.astype(np.float16 if dataset["modality"] == "audio"
                                        else np.float32)
    _save(output, payload)
    return len(rows)


def write_window_shard(dataset: Mapping[str, Any], tensors: Mapping[str, Any], horizon: int,
                       plan: pd.DataFrame, inventory: pd.DataFrame, shard: str, output: str,
                       base_dir: str = ".") -> int:
    """Forecasting: cut the shard's windows out of their series (past inputs, known future)."""
    rows = plan[plan["shard"] == shard].reset_index(drop=True)
    settings = tensors["timeseries"]
    lookback, policy = int(settings["lookback"]), settings.get("missing", "interpolate")
    known = list(settings.get("known_future", []))
    modality = create_modality(dataset["modality"], {}, dataset["layout"])
    wanted = inventory[inventory["id"].isin(rows["series"].unique())]
    series = {item.id: modality.channels(item.read_bytes())
              for item in item_records(wanted, modality, dataset, Path(base_dir))}
    past_x, future_x, targets, masks, keep = [], [], [], [], []
    for number, row in enumerate(rows.itertuples()):
        frame = series[row.series]
        start = int(row.target_start)
        inputs = frame.iloc[start - lookback: start]
        past = inputs.drop(columns=known).to_numpy(dtype=np.float64)
        target = frame["target"].iloc[start: start + horizon].to_numpy(dtype=np.float64)
        mask = ~np.isnan(past)
        if np.isnan(target).any() or (policy == "drop_window" and not mask.all()):
            continue  # a target with a gap cannot be scored; dropped windows are counted
        if policy == "interpolate":
            past = pd.DataFrame(past).interpolate(limit_direction="both").fillna(0).to_numpy()
        else:
            past = np.nan_to_num(past)
        past_x.append(past)
        masks.append(mask)
        future_x.append(frame[known].iloc[start: start + horizon].to_numpy(dtype=np.float64))
        targets.append(target)
        keep.append(number)
    kept = rows.iloc[keep]
    payload = {"ids": kept["id"].to_numpy(dtype=str),
               "x": np.asarray(past_x, dtype=np.float32).reshape(len(keep), lookback, -1),
               "x_future": np.asarray(future_x, dtype=np.float32).reshape(len(keep), horizon, -1),
               "y": np.asarray(targets, dtype=np.float32).reshape(len(keep), horizon),
               "dropped": np.int64(len(rows) - len(keep))}
    if policy == "mask":
        payload["x_mask"] = np.asarray(masks, dtype=bool).reshape(len(keep), lookback, -1)
    _save(output, payload)
    return len(keep)


def _save(output: str, payload: Mapping[str, Any]) -> None:
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


def write_shard(dataset: Mapping[str, Any], tensors: Mapping[str, Any], split: Mapping[str, Any],
                plan_path: str, inventory_path: str, shard: str, output: str) -> int:
    """Write one shard (rule tensorize_shard)."""
    plan = pd.read_parquet(plan_path)
    inventory = pd.read_parquet(inventory_path)
    if dataset["task"] == "forecasting":
        return write_window_shard(dataset, tensors, int(split["horizon"]), plan, inventory, shard,
                                  output)
    return write_item_shard(dataset, tensors, plan, inventory, shard, output)


# NumPy parses .npy headers with `ast`, which Python 3.11 (3.11.7 here) cannot run in two
# threads at once ("SystemError: AST constructor recursion depth mismatch"); the streaming
# loader reads shards on two threads while the main one may trace a model. Headers as NumPy
# writes them are read with a pattern instead; any other goes to NumPy, one at a time.
_PARSING = threading.Lock()
_HEADER = re.compile(r"\{'descr': '([^']+)', 'fortran_order': (True|False), "
                     r"'shape': \((\d+,|\d+(?:, \d+)+|)\), \} *\n")


def _npy_header(member: io.BytesIO) -> tuple[tuple[int, ...], bool, np.dtype] | None:
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
    """The arrays of an uncompressed .npz (as `_save` writes it), read in one go.

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
            header = _npy_header(member)
            if header is None:
                return _np_load(path)
            shape, fortran, dtype = header
            if dtype.hasobject:
                return _np_load(path)
            count = int(np.prod(shape))
            array = np.frombuffer(buffer, dtype, count, start + member.tell())
            arrays[info.filename[:-4]] = array.reshape(shape, order="F" if fortran else "C")
    return arrays


def _np_load(path: str | Path) -> dict[str, np.ndarray]:
    with _PARSING, np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def load_shard(path: str | Path) -> dict[str, np.ndarray]:
    """Read a shard; quantised audio is restored to float32."""
    arrays = read_npz(path)
    if "x_scale" in arrays:
        arrays["x"] = arrays["x"].astype(np.float32) * arrays.pop("x_scale") + arrays.pop("x_offset")
    return arrays


def write_index(plan_path: str, shards: list[str], output: str, stats_output: str) -> dict:
    """Index of the trainval shards (id, role, fold, label, shard) and tensor statistics.

    For text it suggests `sequence_length` (95th percentile of words) and a vocabulary size.
    """
    plan = pd.read_parquet(plan_path)
    present: list[str] = []
    shapes, dtypes, dropped, words, vocabulary = set(), set(), 0, [], set()
    for path in shards:
        arrays = load_shard(path)
        present.extend(arrays["ids"].tolist())
        shapes.add(str(list(arrays["x"].shape[1:])))
        with np.load(path) as raw:
            dtypes.add(str(raw["x"].dtype))
        dropped += int(arrays.get("dropped", 0))
        if arrays["x"].dtype.kind == "U":
            for text in arrays["x"]:
                tokens = text.lower().split()
                words.append(len(tokens))
                vocabulary.update(tokens)
    index = plan[plan["id"].isin(present)].reset_index(drop=True)
    index.to_parquet(output, index=False)
    stats: dict[str, Any] = {"shards": len(shards), "items": len(index),
                             "dropped_windows": dropped, "shapes": sorted(shapes),
                             "dtypes": sorted(dtypes)}
    if words:
        stats.update(suggested_sequence_length=int(np.percentile(words, 95)),
                     vocabulary_size=len(vocabulary))
    Path(stats_output).write_text(json.dumps(stats, indent=2) + "\n")
    return stats
