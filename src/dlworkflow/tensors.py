"""Step 3, preprocessing: stateless transforms precomputed once into fixed-shape shards.

The plan (a checkpoint) assigns every item, or every forecasting window, to a shard (the
task's `plan`); one Snakemake job writes one shard, so `--cores 8` runs eight at a time and a
finished shard is never recomputed. Test-role items live in their own shards, which only the
final step asks for. Anything learned from data (vocabulary, normalisation) is not done here:
it is fitted per fold inside the model. The file format is `dlworkflow.shardfile`'s.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dlworkflow.context import RunContext
from dlworkflow.shardfile import load_shard, save_shard, shard_names

__all__ = ["make_plan", "shard_names", "tensorise_items", "write_index", "write_shard"]


def make_plan(ctx: RunContext) -> pd.DataFrame:
    """Write `tensors/plan.parquet`: which shard every item (or window) goes to."""
    splits = pd.read_parquet(ctx.input("splits"))
    choice = json.loads(Path(ctx.input("metric")).read_text())
    plan = ctx.task.plan(splits, ctx.section("tensors"), ctx.section("split"), ctx.seed, choice)
    output = ctx.output("plan")
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    plan.to_parquet(output, index=False)
    return plan


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


def write_item_shard(ctx: RunContext, rows: pd.DataFrame, inventory: pd.DataFrame, shard: str,
                     output: str) -> int:
    """Tensorise the items of one shard and write them as one .npz file."""
    settings = ctx.modality.tensor_settings(ctx.section("tensors"), inventory)
    # through intake's record: the file's path and sha256 (checked when read)
    recorded = rows[["id"]].merge(inventory[["id", "path", "sha256"]].astype({"id": str}),
                                  on="id", how="left", validate="one_to_one")
    items = ctx.records(recorded)
    batch = tensorise_items(ctx.modality, items, settings)
    save_shard(output, {"ids": rows["id"].to_numpy(dtype=str),
                        **ctx.modality.stored(batch, settings)})
    return len(rows)


def fill_past(past: np.ndarray, policy: str) -> np.ndarray:
    """A window's past values with the gaps filled as `tensors.timeseries.missing` says:
    interpolated (`interpolate`; `mask` too, which also marks them in a channel of its own,
    `padded_past`), else zeros (`drop_window` keeps no window with a gap)."""
    if policy in ("interpolate", "mask"):
        return pd.DataFrame(past).interpolate(limit_direction="both").fillna(0).to_numpy()
    return np.nan_to_num(past)


def padded_past(channels: np.ndarray, start: int, lookback: int, policy: str
                ) -> tuple[np.ndarray, np.ndarray, int]:
    """A window's `lookback` inputs before step `start`: the observed ones with their gaps
    filled (`tensors.timeseries.missing`), and when the series has fewer, the first value
    repeated before them (the padding of a short series; its mask is False). Returns (past,
    mask of observed values, observed steps). Under `mask` the past gets one more channel,
    last: 1 where every input was observed, 0 at a gap or in the padding, so the model
    knows which values were filled in (before, the mask was stored beside the windows and
    no model read it)."""
    past = channels[max(0, start - lookback): start]
    mask = ~np.isnan(past)
    if not mask.all():
        past = fill_past(past, policy)
    observed = len(past)
    if observed < lookback:
        past = np.concatenate([np.repeat(past[:1], lookback - observed, axis=0), past])
        mask = np.concatenate([np.zeros((lookback - observed, mask.shape[1]), bool), mask])
    if policy == "mask":
        past = np.concatenate([past, mask.all(axis=1, keepdims=True).astype(past.dtype)], axis=1)
    return past, mask, observed


def write_window_shard(ctx: RunContext, rows: pd.DataFrame, inventory: pd.DataFrame, shard: str,
                       output: str) -> int:
    """Forecasting: cut the shard's windows out of their series (past inputs, known future),
    each with its MASE scale as the M4 defines it: the in-sample seasonal-naive MAE over the
    series' whole history before the window's first target (not over its lookback alone),
    and how many of its inputs were observed (`x_length`; the rest pads a short series)."""
    from dlworkflow.metrics import naive_scale
    from dlworkflow.tasks.forecasting import window_lookback

    settings = ctx.section("tensors")["timeseries"]
    choice = json.loads(Path(ctx.input("metric")).read_text())
    season = int(choice.get("season") or 1)
    horizon = int(ctx.section("split")["horizon"])
    lookback, policy = window_lookback(choice, settings), settings.get("missing", "interpolate")
    known = list(settings.get("known_future", []))
    wanted = inventory[inventory["id"].isin(rows["series"].unique())]
    series = {item.id: ctx.modality.channels(item.read_bytes()) for item in ctx.records(wanted)}
    # each series as arrays once (a window is then a slice, not a pandas lookup)
    arrays = {name: (frame.drop(columns=known).to_numpy(dtype=np.float64),
                     frame["target"].to_numpy(dtype=np.float64),
                     frame[known].to_numpy(dtype=np.float64))
              for name, frame in series.items()}
    past_x, future_x, targets, masks, scales, lengths, keep = [], [], [], [], [], [], []
    for number, (name, start) in enumerate(zip(rows["series"], rows["target_start"],
                                               strict=True)):
        channels, values, covariates = arrays[name]
        start = int(start)
        past, mask, observed = padded_past(channels, start, lookback, policy)
        target = values[start: start + horizon]
        if np.isnan(target).any() or (policy == "drop_window" and not mask[-observed:].all()):
            continue  # a target with a gap cannot be scored; dropped windows are counted
        past_x.append(past)
        masks.append(mask)
        future_x.append(covariates[start: start + horizon])
        targets.append(target)
        scales.append(naive_scale(values[:start], season))
        lengths.append(observed)
        keep.append(number)
    kept = rows.iloc[keep]
    # each series' target values up to its last window's first target, once: what the
    # statistical baselines fit on (a window's history is the part before its targets)
    ends = kept.groupby("series")["target_start"].max() if len(kept) else pd.Series(dtype=int)
    histories = [arrays[name][1][: int(end)] for name, end in ends.items()]
    payload = {"ids": kept["id"].to_numpy(dtype=str),
               "series_names": np.asarray(list(ends.index), dtype=str),
               "series_offsets": np.concatenate([[0], np.cumsum([len(h) for h in histories])]
                                                ).astype(np.int64),
               "series_values": (np.concatenate(histories) if histories
                                 else np.empty(0)).astype(np.float64),
               "x": np.asarray(past_x, dtype=np.float32).reshape(len(keep), lookback, -1),
               "x_future": np.asarray(future_x, dtype=np.float32).reshape(len(keep), horizon, -1),
               "y": np.asarray(targets, dtype=np.float32).reshape(len(keep), horizon),
               "scale": np.asarray(scales, dtype=np.float64),
               "x_length": np.asarray(lengths, dtype=np.int32),
               "dropped": np.int64(len(rows) - len(keep))}
    if policy == "mask":
        payload["x_mask"] = np.asarray(masks, dtype=bool).reshape(len(keep), lookback, -1)
    save_shard(output, payload)
    return len(keep)


#: how a task's units become a shard (`Task.shard_unit`)
SHARD_WRITERS = {"items": write_item_shard, "windows": write_window_shard}


def write_shard(ctx: RunContext, shard: str) -> int:
    """Write one shard of the plan (rules tensorize_shard and tensorize_test_shard)."""
    plan = pd.read_parquet(ctx.input("plan"))
    inventory = pd.read_parquet(ctx.input("inventory"))
    rows = plan[plan["shard"] == shard].reset_index(drop=True)
    return SHARD_WRITERS[ctx.task.shard_unit](ctx, rows, inventory, shard, ctx.output("shard"))


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
