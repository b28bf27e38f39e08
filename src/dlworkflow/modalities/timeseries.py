"""Time series: one series per CSV file, per series_id of a long table, or per row of a wide one."""

from __future__ import annotations

import io
import re
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from dlworkflow.errors import BadInput
from dlworkflow.figures import figure_uri, new_figure
from dlworkflow.items import Item
from dlworkflow.modalities.base import FILE_LAYOUTS, Modality

MISSING_TOKENS = frozenset({"", "na", "nan", "null", "none", "n/a", "#n/a", "-"})


def _rows(positions: np.ndarray) -> str:
    """File rows (header = row 1) of some positions, the first five and how many more."""
    rows = [str(int(p) + 2) for p in positions[:5]]
    more = f" and {len(positions) - 5} more" if len(positions) > 5 else ""
    return ", ".join(rows) + more


def parse_numeric(values: pd.Series, column: str) -> tuple[np.ndarray, list[str]]:
    """Parse strings to floats: missing tokens become NaN; unparseable and infinite values
    become NaN too (then `tensors.timeseries.missing` handles them), each kind reported in
    one note naming its rows."""
    text = values.astype(str).str.strip()
    missing = text.str.lower().isin(MISSING_TOKENS)
    numbers = pd.to_numeric(text.where(~missing), errors="coerce").to_numpy(dtype=float,
                                                                           copy=True)
    notes = []
    bad = np.flatnonzero(np.isnan(numbers) & ~missing.to_numpy())
    if bad.size:
        notes.append(f"{bad.size} value(s) in column {column!r} not a number (row {_rows(bad)}: "
                     f"{text.iloc[int(bad[0])]!r}): treated as missing")
    infinite = np.flatnonzero(np.isinf(numbers))
    if infinite.size:
        notes.append(f"{infinite.size} infinite value(s) in column {column!r} (row "
                     f"{_rows(infinite)}): treated as missing")
        numbers[infinite] = np.nan
    return numbers, notes


def parse_timestamps(values: pd.Series, column: str) -> tuple[pd.DatetimeIndex, np.ndarray,
                                                               list[str]]:
    """Parse a timestamp column: (timestamps of the usable rows, their positions, notes). A
    row whose timestamp is missing or not a date cannot be placed in time: it is left out
    and the note names it."""
    text = values.astype(str).str.strip()
    parsed = pd.to_datetime(text.where(~text.str.lower().isin(MISSING_TOKENS)),
                            errors="coerce", format="mixed")
    bad = np.flatnonzero(parsed.isna().to_numpy())
    notes = []
    if bad.size:
        notes.append(f"{bad.size} row(s) without a readable timestamp in column {column!r} "
                     f"(row {_rows(bad)}: {text.iloc[int(bad[0])]!r}): left out")
    keep = np.flatnonzero(parsed.notna().to_numpy())
    return pd.DatetimeIndex(parsed.iloc[keep]), keep, notes


def _infer_freq(stamps: pd.DatetimeIndex) -> str | None:
    """pandas' inferred frequency as a string, whichever type this pandas version returns."""
    try:
        with pd.option_context("future.infer_freq_returns_offset", True):
            freq = pd.infer_freq(stamps)
    except (KeyError, pd.errors.OptionError):  # older pandas without the option
        freq = pd.infer_freq(stamps)
    return getattr(freq, "freqstr", freq)


def infer_frequency(stamps: pd.DatetimeIndex) -> tuple[str | None, int]:
    """Return (frequency string, number of missing time slots) of sorted timestamps."""
    if len(stamps) < 3:
        return None, 0
    freq = _infer_freq(stamps)
    if freq is None:
        deltas = np.diff(stamps.asi8)
        modal = pd.Series(deltas).mode().iloc[0]
        regular = np.flatnonzero(deltas == modal)
        # the first stretch of three equally spaced stamps names the frequency (keeps anchors
        # like W-SAT that a bare "7D" would lose)
        for start in regular:
            if start + 1 < len(deltas) and deltas[start + 1] == modal:
                freq = _infer_freq(stamps[start: start + 3])
                break
        if freq is None:
            freq = pd.tseries.frequencies.to_offset(pd.Timedelta(int(modal), "ns")).freqstr
    try:
        expected = len(pd.date_range(stamps[0], stamps[-1], freq=freq))
    except ValueError:
        return freq, 0
    return freq, max(0, expected - len(stamps))


def integer_steps(stamps: np.ndarray) -> tuple[str | None, int]:
    """Frequency ("every N steps") and missing slots of sorted integer time steps."""
    if len(stamps) < 2:
        return None, 0
    step = int(pd.Series(np.diff(stamps)).mode().iloc[0])
    expected = (int(stamps[-1]) - int(stamps[0])) // step + 1
    return f"every {step} step(s)", max(0, expected - len(stamps))


class TimeSeriesModality(Modality):
    """Univariate or multivariate series with an optional timestamp column."""

    name = "timeseries"
    extensions: ClassVar[tuple[str, ...]] = (".csv",)
    layouts: ClassVar[tuple[str, ...]] = (*FILE_LAYOUTS, "long_csv", "wide_csv", "ts", "tsf")
    tasks: ClassVar[tuple[str, ...]] = ("classification", "regression", "forecasting")
    raw_input = "series windows"
    timed_from_shards = True
    stats: ClassVar[dict[str, str]] = {
        "length": "Int64", "missing": "Int64", "gaps": "Int64", "frequency": "string",
        "start": "string", "end": "string", "min": "Float64", "max": "Float64",
        "mean": "Float64", "std": "Float64", "exogenous": "Int64", "constant": "boolean",
    }

    def columns(self) -> tuple[str | None, str | None, list[str]]:
        """(timestamp, target, exogenous) column names for this dataset's layout."""
        kind = self.layout.get("kind")
        if kind == "long_csv":
            return self.layout["timestamp"], self.layout["target"], list(
                self.layout.get("exogenous", []))
        if kind in ("wide_csv", "ts", "tsf"):
            return None, "value", []
        spec = self.layout.get("series", {})
        return spec.get("timestamp"), spec.get("target"), list(spec.get("exogenous", []))

    def parse(self, data: bytes) -> tuple[pd.Index | None, np.ndarray, list[str]]:
        """Parse a series: (sorted time index or None, target values, notes), or BadInput."""
        stamps, frame, notes = self._parse(data)
        return stamps, frame["target"].to_numpy(), notes

    def _parse(self, data: bytes) -> tuple[pd.Index | None, pd.DataFrame, list[str]]:
        """(sorted time index or None, target and exogenous columns in time order, notes).

        Every problem of the series is found in one pass: bad values and unreadable
        timestamps become notes (the values count as missing, the rows are left out); what
        makes the series unusable (a missing column, duplicate timestamps) is raised once,
        with the notes beside it, so one run reports all of it."""
        if not data.strip():
            raise BadInput("empty file (no rows)", "empty")
        try:
            table = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise BadInput(f"not a readable CSV table: {exc}", "unreadable") from None
        timestamp, target, exogenous = self.columns()
        if self.layout.get("kind") == "ts":  # a multivariate .ts series: its other dimensions
            exogenous = [c for c in table.columns if re.fullmatch(r"dim_\d+", c)]
        if target is None:
            candidates = [c for c in table.columns if c != timestamp]
            if len(candidates) != 1:
                raise BadInput(f"cannot tell the value column among {list(table.columns)}; "
                               "set layout.series.target", "bad_columns")
            target = candidates[0]
        absent = [c for c in (timestamp, target, *exogenous) if c and c not in table.columns]
        if absent:
            raise BadInput(f"column(s) {', '.join(map(repr, absent))} not found (columns: "
                           f"{', '.join(table.columns)})", "bad_columns")
        notes: list[str] = []
        frame = pd.DataFrame(index=table.index)
        for name, column in (("target", target), *((c, c) for c in exogenous)):
            frame[name], found = parse_numeric(table[column], column)
            notes.extend(found)
        stamps = None
        if timestamp:
            column = table[timestamp].astype(str).str.strip()
            if column.str.fullmatch(r"-?\d+").all():  # integer time steps, not dates
                stamps = pd.Index(column.astype(np.int64))
            else:
                stamps, keep, found = parse_timestamps(table[timestamp], timestamp)
                notes.extend(found)
                frame = frame.iloc[keep].reset_index(drop=True)
            duplicated = stamps.duplicated()
            if duplicated.any():
                first = stamps[np.flatnonzero(duplicated)[0]]
                raise BadInput("; ".join([f"duplicate timestamp {first} "
                                          f"({int(duplicated.sum())} duplicate(s))", *notes]),
                               "duplicate_timestamp")
            if not stamps.is_monotonic_increasing:
                notes.append("rows not in time order: sorted by timestamp")
                order = np.argsort(np.asarray(stamps), kind="stable")
                stamps, frame = stamps[order], frame.iloc[order].reset_index(drop=True)
        return stamps, frame.reset_index(drop=True), notes

    def frame(self, data: bytes) -> pd.DataFrame:
        """The series as a table sorted by time: `timestamp` (or the row number) and `value`."""
        stamps, values, _ = self.parse(data)
        index = stamps if stamps is not None else pd.RangeIndex(len(values))
        return pd.DataFrame({"timestamp": np.asarray(index), "value": values})

    def probe(self, data: bytes, item: Item) -> dict[str, Any]:
        """Parse the series; report length, missing values, gaps, frequency and range."""
        stamps, table, notes = self._parse(data)
        values, exogenous = table["target"].to_numpy(), list(table.columns[1:])
        frequency, gaps, start, end = None, 0, None, None
        if isinstance(stamps, pd.DatetimeIndex):
            frequency, gaps = infer_frequency(stamps)
            start, end = stamps[0].isoformat(), stamps[-1].isoformat()
        elif stamps is not None:
            frequency, gaps = integer_steps(np.asarray(stamps))
            start, end = str(stamps[0]), str(stamps[-1])
        else:  # a row of a wide or .tsf file: its header or the layout says how often
            frequency = (item.side or {}).get("frequency") or self.layout.get("frequency")
        observed = values[~np.isnan(values)]
        min_length = int(self.options.get("min_length", 3))
        if observed.size < min_length:
            raise BadInput("; ".join([f"only {observed.size} observed target value(s); fewer "
                                      f"than intake.timeseries.min_length ({min_length})",
                                      *notes]), "too_short")
        constant = bool(np.ptp(observed) == 0)
        missing = int(np.isnan(values).sum())
        if constant:
            notes.append("constant series: every observed value is the same")
        if missing:
            notes.append(f"{missing} missing value(s)")
        if gaps:
            notes.append(f"{gaps} missing time step(s) at frequency {frequency}")
        return {
            "length": int(values.size), "missing": missing, "gaps": int(gaps),
            "frequency": frequency, "start": start, "end": end,
            "min": float(observed.min()), "max": float(observed.max()),
            "mean": float(observed.mean()), "std": float(observed.std()),
            "exogenous": len(exogenous), "constant": constant, "notes": notes,
        }

    def preview(self, data: bytes, item: Item) -> str:
        """A line plot of the series with missing values marked."""
        frame = self.frame(data)
        figure, axes = new_figure(3.2, 1.5)
        axes.plot(frame["timestamp"], frame["value"], linewidth=0.8, color="#1f5f8b")
        missing = frame.loc[frame["value"].isna(), "timestamp"]
        for stamp in missing:
            axes.axvline(stamp, color="#d62728", alpha=0.35, linewidth=0.8)
        gaps = 0
        if len(frame) > 2:  # absent time steps: spacing well above the typical one
            steps = np.diff(np.asarray(frame["timestamp"]))
            typical = np.median(steps)
            for position in np.flatnonzero(steps > typical * 1.5):
                axes.axvspan(frame["timestamp"].iloc[position], frame["timestamp"].iloc[position + 1],
                             color="#d62728", alpha=0.2)
                gaps += 1
        axes.tick_params(labelsize=6)
        label = (f"{len(missing)} missing value(s), {gaps} gap(s)" if len(missing) or gaps
                 else "no missing values")
        return (f'<img class="series" alt="series {escape(item.id)}" src="{figure_uri(figure)}">'
                f'<span class="meta">{len(frame)} steps, {label} (red)</span>')

    def attribution_html(self, x: Any, values: Any, what: str,
                         settings: Mapping[str, Any] | None = None) -> str:
        """The window (first channel) over bars of its per-step SHAP values, all channels
        summed (red raises `what`)."""
        series = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        steps = np.asarray(values, dtype=np.float64).reshape(len(x), -1).sum(axis=1)
        figure, axes = new_figure(3.4, 1.6)
        position = np.arange(len(series))
        bars = axes.twinx()
        bars.bar(position, steps, color=np.where(steps > 0, "#d62728", "#1f77b4"), alpha=0.5,
                 width=1.0)
        bars.set_yticks([])
        axes.plot(position, series[:, 0], color="#333", linewidth=0.9)
        axes.set_zorder(bars.get_zorder() + 1)
        axes.patch.set_visible(False)
        axes.tick_params(labelsize=6)
        axes.set_title(f"SHAP per step for {what}", fontsize=7)
        return f'<img alt="SHAP attributions" src="{figure_uri(figure)}">'

    def tensorize(self, data: bytes, item: Item, settings: Mapping[str, Any]) -> np.ndarray:
        """float32 (length, channels) for series classification/regression: the target and
        exogenous channels over the target's observed span (missing values before its first
        or after its last observation are padding of unequal lengths), gaps inside it
        interpolated, resampled to `length` steps (linear)."""
        table = self.channels(data)
        observed = table.iloc[:, 0].notna().to_numpy()
        if observed.any():  # a series that starts late or ends early (padding) is cut to its
            first, last = np.flatnonzero(observed)[[0, -1]]  # observed span, then resampled
            table = table.iloc[first: last + 1]
        filled = table.interpolate(limit_direction="both").fillna(0.0).to_numpy(dtype=np.float64)
        length = int(settings.get("length") or len(filled))
        if len(filled) != length:
            old = np.linspace(0.0, 1.0, len(filled))
            new = np.linspace(0.0, 1.0, length)
            filled = np.stack([np.interp(new, old, filled[:, c]) for c in range(filled.shape[1])],
                              axis=1)
        return filled.astype(np.float32)

    def flat(self, x: Any, settings: Mapping[str, Any]) -> Any:
        """Each series as one row, channel after channel (the target's steps first): an
        estimator that convolves series (MiniRocket) is told the channels
        (`Task.prepare_baseline`) and splits the row into them again."""
        x = np.asarray(x, dtype=np.float32)
        return x.transpose(0, 2, 1).reshape(len(x), -1) if x.ndim == 3 else x.reshape(len(x), -1)

    def tensor_settings(self, tensors: Mapping[str, Any], inventory: Any) -> dict[str, Any]:
        """`tensors.timeseries`, with `length: null` resolved to the longest accepted series."""
        settings = dict(tensors.get(self.name, {}))
        if not settings.get("length") and "length" in inventory:
            settings["length"] = int(inventory["length"].max())
        return settings

    def card_settings(self, settings: dict[str, Any], item_shape: Sequence[int]) -> dict[str, Any]:
        """`length: null` as the steps the series were resampled to (the longest accepted
        series'), so that a new series is resampled to them too."""
        if not settings.get("length") and len(item_shape) == 2:
            return {**settings, "length": int(item_shape[0])}
        return settings

    def channels(self, data: bytes) -> pd.DataFrame:
        """Target and exogenous values in time order (NaN where missing)."""
        stamps, frame, _ = self._parse(data)
        frame.index = stamps if stamps is not None else pd.RangeIndex(len(frame))
        return frame

    networks: ClassVar[dict[str, tuple[str, ...]]] = {
        "classification": ("series_fcn",), "regression": ("series_fcn",),
        "forecasting": ("forecast_cnn", "forecast_lstm")}

    def baselines(self, kind: str, settings: Mapping[str, Any], seed: int) -> dict[str, Any]:
        """Series classification: MiniRocket features into a ridge classifier, 1-NN Euclidean
        and a ridge classifier on the fixed-length series; regression: the standard ones
        (`estimators.series_baselines`; forecasters on windows belong to the forecasting
        task)."""
        from dlworkflow.estimators import series_baselines

        return series_baselines(kind, settings, seed)

    def augmentation(self, settings: Mapping[str, Any], seed: int) -> list:
        """Training-only augmentation layers from `augment.timeseries`: jitter (Gaussian
        noise) and random scaling."""
        import keras

        from dlworkflow.layers import RandomScaling

        layers: list = []
        if settings.get("jitter"):
            layers.append(keras.layers.GaussianNoise(settings["jitter"], seed=seed))
        if settings.get("scaling"):
            layers.append(RandomScaling(settings["scaling"], seed=seed))
        return layers

    def preprocessing(self, train_x: Any, settings: Mapping[str, Any]) -> list:
        """Per-fold preprocessing layers (fitted on the fold's training rows)."""
        from dlworkflow.layers import adapted_normalizer

        return [adapted_normalizer(train_x, axis=-1)]  # one mean/variance per channel
