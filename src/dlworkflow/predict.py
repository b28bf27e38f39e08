"""Predict with a shipped model from raw inputs: files (any modality) or strings (text).

`model_dir` is a final/ folder (it ships the network or the baseline, `shipped.json` says
which) or a fold's folder (a network). The model's card says which modality and which
stateless tensor settings turn a raw file into the stored array, so the same decoding as
the shards is applied; everything learned is inside the model (or the exported pipeline).
An input that cannot be read or decoded keeps its row, with the reason in an `error`
column, and the others are predicted.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dlworkflow.errors import BadInput, CannotPredict
from dlworkflow.items import Item
from dlworkflow.layouts import TS_TABLES
from dlworkflow.modalities import create_modality
from dlworkflow.shipping import load_network as load_model
from dlworkflow.shipping import load_shipped
from dlworkflow.tasks import get_task

__all__ = ["load_model", "predict", "raw_arrays"]

#: series classification layouts whose one table holds many series (a `ts` dataset's
#: UCR files are told by their suffix)
SERIES_TABLES = ("long_csv", "wide_csv")
#: forecasting layouts whose one file holds many series
TABLE_LAYOUTS = (*SERIES_TABLES, "tsf")


def _is_file(path: Path) -> bool:
    """Whether `path` names an existing file. A text typed on the command line can be too
    long for a file name (over 255 bytes between slashes, or 4096 in all), where `is_file`
    raises instead of answering no."""
    try:
        return path.is_file()
    except OSError:
        return False


def raw_arrays(card: dict[str, Any], inputs: Sequence[str | Path]) -> dict[str, Any]:
    """Decode raw files (or, for a modality that takes inline text, strings that are not
    existing files) as the shards do: {"x": stored arrays, "names": what each row is (the
    file, the text, or the series id in a .ts file or a wide or long table), "errors": why
    a row could not be read or decoded, or None}. `x` holds the rows without an error, in
    order (None when there are none)."""
    layout = card.get("layout") or {}
    modality = create_modality(card["modality"], {}, layout)
    # a string typed on the command line is text already: it goes in as UTF-8 bytes and is
    # read as such, whatever encoding the dataset's files have (`layout.encoding`)
    inline = create_modality(card["modality"], {}, {**layout, "encoding": "utf-8"})
    arrays, names, errors = [], [], []
    for number, value in enumerate(inputs):
        path = Path(value)
        if isinstance(value, Path) or _is_file(path):
            # a UCR file (.ts, .tsv, .txt), or a table of the dataset's wide or long layout,
            # holds many series, each an item (as training read them); any other file (a
            # one-series CSV of a `ts` dataset too) is one item
            ucr = path.suffix.lower() in (".ts", *TS_TABLES)
            kinds = (*SERIES_TABLES, "ts") if ucr else SERIES_TABLES
            try:
                found = file_series(layout, path, kinds)
            except (OSError, BadInput) as exc:  # the file as a whole: one row says why
                names.append(str(value))
                errors.append(exc.reason if isinstance(exc, BadInput)
                              else f"cannot read file: {exc.strerror or exc}")
                continue
            read = [(name, name, data, modality) for name, data in found]
        elif modality.inline_text:  # the table shows the text itself
            read = [(str(value), f"text-{number}", str(value).encode("utf-8"), inline)]
        else:
            raise FileNotFoundError(f"{value}: no such file")
        for shown, name, data, reader in read:
            names.append(shown)
            try:
                arrays.append(reader.tensorize(data, Item(name, name), card.get("tensors") or {}))
                errors.append(None)
            except BadInput as exc:
                errors.append(exc.reason)
            except Exception as exc:  # a decoder's error: not what the model reads
                errors.append(BadInput(f"cannot decode it: {type(exc).__name__}: {exc}").reason)
    if not arrays:
        batch = None
    elif isinstance(arrays[0], str):
        batch = np.asarray(arrays, dtype=str)
    else:
        # kept as the shards keep them (float16 spectrograms): the models were fitted and
        # scored on those values, and a k-NN's neighbours can change at the last digit;
        # uint8 codes depend on a shard's range, so those stay at full precision
        batch = np.stack(arrays)
        stored = modality.stored(batch, card.get("tensors") or {})
        if "x_scale" not in stored:
            batch = stored["x"]
    return {"x": batch, "names": names, "errors": errors}


def file_series(layout: dict[str, Any], path: Path, kinds: Sequence[str]
                ) -> list[tuple[str, bytes]]:
    """(name, raw bytes) of each item in one input file: every series in it, read as the
    dataset's layout reads them, when the layout is one of `kinds` (a file of many series),
    else the file itself. Labels, groups and the held-out continuation (`test_file`) are not
    read: a file to predict need not have them."""
    from dlworkflow.layouts import LayoutContext, discover

    if layout.get("kind") not in kinds:
        return [(str(path), path.read_bytes())]
    # predicting: no labels or groups are read, whatever the task
    context = LayoutContext(path.parent, get_task("forecasting"), (path.suffix,), predicting=True)
    file_layout = {k: v for k, v in layout.items() if k != "test_file"}
    found = discover(path.parent, {**file_layout, "file": path.name, "files": [path.name]},
                     context)
    if found.rejected:
        raise BadInput("; ".join(f"{r.path}: {r.reason}" for r in found.rejected))
    if not found.items:
        raise BadInput(f"{path}: no series in it to predict")
    return [(item.id, item.read_bytes()) for item in found.items]


def series_windows(card: dict[str, Any], inputs: Sequence[str | Path]
                   ) -> tuple[list[str], dict[str, Any]]:
    """Forecasting: the last `tensors.lookback` steps of every series in the files (a file
    of the dataset's layout: one series per file, a long CSV of one or many series, a wide
    CSV or .tsf file of many), with missing values filled and a short past padded as the
    shards do it. Returns (series names, {"x", "x_future"}). A model that reads
    known-future covariates (`tensors.timeseries.known_future`) takes them from the
    `horizon` rows after each series' last target value, the target left empty there."""
    from dlworkflow.tensors import padded_past

    layout = dict(card.get("layout") or {})
    settings = card.get("tensors") or {}
    lookback, known = int(settings["lookback"]), list(settings.get("known_future") or [])
    horizon = int(card.get("horizon") or 0)
    modality = create_modality("timeseries", {}, layout)
    names, items, observed, histories, futures = [], [], [], {}, []
    for value in inputs:
        path = Path(value)
        if not _is_file(path):
            raise FileNotFoundError(f"{value}: no such file")
        try:
            found = file_series(layout, path, TABLE_LAYOUTS)
        except BadInput as exc:
            raise CannotPredict(f"{value}: {exc.reason}") from None
        for name, data in found:
            frame = modality.channels(data)
            if known:
                frame, ahead = known_ahead(frame, known, horizon, name)
                futures.append(ahead)
            channels = frame.to_numpy(dtype=np.float64)
            if not len(channels):
                raise CannotPredict(f"{name}: no values to forecast from")
            # the last `lookback` steps; a shorter series padded as the training windows were
            past, _, length = padded_past(channels, len(channels), lookback,
                                          settings.get("missing", "interpolate"))
            names.append(name)
            items.append(past)
            observed.append(length)
            # the whole history, as the baselines fit on it (keyed by position: two files may
            # name a series alike)
            histories[str(len(names) - 1)] = channels[:, 0]
    return names, {"x": np.asarray(items, dtype=np.float32),
                   "x_future": np.asarray(futures, dtype=np.float32).reshape(
                       len(items), horizon, len(known)),
                   "x_length": np.asarray(observed, dtype=np.int32),
                   "ids": np.asarray([f"{k}@{len(v)}" for k, v in histories.items()], dtype=str),
                   "series": histories}


def known_ahead(frame: pd.DataFrame, known: Sequence[str], horizon: int, name: str
                ) -> tuple[pd.DataFrame, np.ndarray]:
    """A series to forecast with known-future covariates: (its past up to its last target
    value, without the known columns, as the training windows' past channels; the known
    columns over the `horizon` rows after it, as their future)."""
    lacking = [column for column in known if column not in frame.columns]
    if lacking:
        raise CannotPredict(f"{name}: no column {', '.join(lacking)}; the model reads it over "
                            "the steps it forecasts (tensors.timeseries.known_future)")
    seen = np.flatnonzero(frame["target"].notna().to_numpy())
    if not len(seen):
        raise CannotPredict(f"{name}: no values to forecast from")
    end = int(seen[-1]) + 1
    ahead = frame[list(known)].iloc[end:end + horizon].to_numpy(dtype=np.float64)
    if len(ahead) < horizon or np.isnan(ahead).any():
        gaps = int(np.isnan(ahead).any(axis=1).sum())
        raise CannotPredict(
            f"{name}: the model reads {', '.join(known)} over the {horizon} steps it forecasts "
            f"(tensors.timeseries.known_future): give them in the {horizon} rows after the "
            f"series' last value, with the target left empty; found {len(ahead)} such "
            f"row{'' if len(ahead) == 1 else 's'}" + (f", {gaps} with a gap" if gaps else ""))
    return frame.drop(columns=list(known)).iloc[:end], ahead


def predict(model_dir: str | Path, inputs: Sequence[str | Path]) -> pd.DataFrame:
    """One row per input (per series for a forecaster): the shipped model's prediction, with
    p_<class> probabilities for classification and one column per step ahead (`step_1`, ...)
    for forecasting."""
    if not inputs:
        raise CannotPredict("nothing to predict: give at least one file or text")
    shipped = load_shipped(model_dir)
    task = get_task(shipped.card["task"])
    if task.name == "forecasting":
        names, arrays = series_windows(shipped.card, inputs)
        output = np.asarray(shipped.outputs(arrays)).reshape(len(names), -1)
        frame = pd.DataFrame({"input": names})
        for step in range(output.shape[1]):
            frame[f"step_{step + 1}"] = output[:, step]
        return frame
    arrays = raw_arrays(shipped.card, inputs)
    names, errors = arrays.pop("names"), arrays.pop("errors")
    frame = pd.DataFrame({"input": names})
    kept = [row for row, error in enumerate(errors) if error is None]
    if kept:
        output = np.asarray(shipped.outputs(arrays))
        for column, values in task.prediction_columns(output, shipped.card).items():
            frame[column] = (values if len(kept) == len(names)
                             else pd.Series(np.asarray(values), index=kept).reindex(frame.index))
    if len(kept) < len(names):  # nothing dropped: the row stays and says why
        frame["error"] = [error or "" for error in errors]
    return frame
