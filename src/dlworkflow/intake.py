"""Step 1a, intake: find every raw item, probe it, write the inventory and quarantine the rest.

found = accepted + rejected always holds: an item is either a row of the inventory or a
row of rejected.csv with the reason, never silently dropped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from dlworkflow.errors import BadInput, ConfigError, IntakeFailed
from dlworkflow.items import Item, Rejection
from dlworkflow.modalities import Modality, create_modality
from dlworkflow.tasks import Task, get_task

log = logging.getLogger(__name__)

BASE_COLUMNS = ("id", "path", "label", "group", "bytes", "sha256")


@dataclass
class IntakeResult:
    """Inventory (accepted items), rejections and the reconciled counts of one dataset."""

    inventory: pd.DataFrame
    rejected: pd.DataFrame
    counts: dict[str, Any]


def probe_item(modality: Modality, item: Item) -> tuple[dict[str, Any] | None, Rejection | None]:
    """Read and probe one item: (row, None) when accepted, (None, rejection) otherwise."""
    try:
        data = item.read_bytes()
    except OSError as exc:
        return None, Rejection(item.path, f"cannot read file: {exc.strerror or exc}", "unreadable",
                               "probe", item.id)
    try:
        stats = modality.probe(data, item)
    except BadInput as exc:
        return None, Rejection(item.path, exc.reason, exc.code, "probe", item.id)
    except Exception as exc:  # a probe bug or an exotic decoder error must not kill the run
        return None, Rejection(item.path, f"unexpected error while probing: "
                               f"{type(exc).__name__}: {exc}", "probe_error", "probe", item.id)
    notes = stats.pop("notes", [])
    row = {"id": item.id, "path": item.path, "label": item.label, "group": item.group,
           "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    row.update({f"side_{k}": v for k, v in item.side.items()})
    row.update(stats)
    row["notes"] = "; ".join(notes)
    return row, None


def probe_batch(modality: Modality, items: Sequence[Item]):
    """Probe a batch of items (the unit of work sent to a worker process)."""
    return [probe_item(modality, item) for item in items]


def _batches(items: Sequence[Item], size: int) -> list[Sequence[Item]]:
    return [items[i: i + size] for i in range(0, len(items), size)]


def probe_all(modality: Modality, items: Sequence[Item], workers: int = 1, batch_size: int = 256,
              progress: bool = True):
    """Probe every item in batches, in `workers` processes; results keep the input order."""
    batches = _batches(items, batch_size)
    bar = tqdm(total=len(items), desc="probe", unit="item", file=sys.stderr, disable=not progress,
               mininterval=2.0)
    results = []
    if workers <= 1 or len(batches) <= 1:
        for batch in batches:
            results.extend(probe_batch(modality, batch))
            bar.update(len(batch))
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(probe_batch, modality, batch) for batch in batches]
            for future, batch in zip(futures, batches, strict=True):
                results.extend(future.result())
                bar.update(len(batch))
    bar.close()
    return results


def reject_duplicate_ids(items: Iterable[Item]) -> tuple[list[Item], list[Rejection]]:
    """Keep the first item of each id; later ones are rejected naming the first."""
    first: dict[str, str] = {}
    kept, rejected = [], []
    for item in items:
        if item.id in first:
            rejected.append(Rejection(item.path, f"duplicate id {item.id!r} (first seen at "
                                      f"{first[item.id]})", "duplicate_id", "discover", item.id))
        else:
            first[item.id] = item.path
            kept.append(item)
    return kept, rejected


def join_side_table(inventory: pd.DataFrame, root: Path, side: Mapping[str, Any],
                    key: str) -> pd.DataFrame:
    """Left-join a side table's columns (prefixed `side_`) onto the inventory."""
    table = pd.read_csv(root / side["file"])
    if side["key"] not in table.columns:
        raise ConfigError(f"{key}.side_table.key: column {side['key']!r} not in {side['file']} "
                          f"(columns: {', '.join(table.columns)})")
    on = side.get("join_on", "id")
    if on not in inventory.columns:
        raise ConfigError(f"{key}.side_table.join_on: {on!r} is not an inventory column "
                          f"(columns: {', '.join(inventory.columns)})")
    if table[side["key"]].duplicated().any():
        dup = table.loc[table[side["key"]].duplicated(), side["key"]].iloc[0]
        raise ConfigError(f"{key}.side_table: key {dup!r} appears twice in {side['file']}")
    table = table.set_index(table[side["key"]].astype(str)).drop(columns=[side["key"]])
    table = table.add_prefix("side_")
    clash = sorted(set(table.columns) & set(inventory.columns))
    if clash:
        raise ConfigError(f"{key}.side_table: columns {clash} already exist in the inventory")
    keys = inventory[on].astype(str).rename("_side_key")
    joined = inventory.join(keys).merge(table, how="left", left_on="_side_key", right_index=True)
    return joined.drop(columns="_side_key").reset_index(drop=True)


def build_inventory(rows: list[dict[str, Any]], modality: Modality, task: Task) -> pd.DataFrame:
    """Assemble accepted rows into a typed, id-sorted inventory table."""
    frame = pd.DataFrame(rows)
    stat_columns = list(modality.stats)
    if frame.empty:
        frame = pd.DataFrame(columns=[*BASE_COLUMNS, *stat_columns, "notes"])
    side_columns = sorted(c for c in frame.columns if c.startswith("side_"))
    frame = frame[[*BASE_COLUMNS, *side_columns, *stat_columns, "notes"]]
    dtypes = {"id": "string", "path": "string", "group": "string", "bytes": "Int64",
              "sha256": "string", "notes": "string",
              "label": task.label_dtype, **modality.stats}
    frame = frame.astype(dtypes)
    return frame.sort_values("id", kind="stable").reset_index(drop=True)


def run_intake(name: str, dataset: Mapping[str, Any], intake: Mapping[str, Any],
               base_dir: str | Path = ".", workers: int = 1, progress: bool = True) -> IntakeResult:
    """Discover, probe and reconcile one dataset; nothing is written here."""
    key = f"datasets.{name}"
    root_display = Path(dataset["root"])
    root = Path(base_dir) / root_display
    modality = create_modality(dataset["modality"], intake, dataset["layout"])
    own_files = tuple(f for f in (dataset["layout"].get("file"),
                                  (dataset.get("side_table") or {}).get("file")) if f)
    log.info("%s: discovering %s items under %s (layout %s)", name, modality.name, root_display,
             dataset["layout"]["kind"])
    task = get_task(dataset["task"])
    found = modality.discover(root, root_display, task, exclude=own_files)
    items, duplicates = reject_duplicate_ids(found.items)
    log.info("%s: %d candidate items, %d rejected while discovering", name,
             len(found.items), len(found.rejected))
    results = probe_all(modality, items, workers=workers,
                        batch_size=int(intake.get("batch_size", 256)), progress=progress)
    rows = [row for row, _ in results if row is not None]
    rejections = [*found.rejected, *duplicates, *(bad for _, bad in results if bad is not None)]
    inventory = build_inventory(rows, modality, task)
    inventory, unusable = task.set_aside(inventory, intake.get("task"))
    rejections.extend(unusable)
    if dataset.get("side_table"):
        inventory = join_side_table(inventory, root, dataset["side_table"], key)
    rejected = pd.DataFrame([r.as_row() for r in rejections],
                            columns=["path", "id", "step", "code", "reason"])
    rejected = rejected.sort_values(["path", "reason"], kind="stable").reset_index(drop=True)
    counts = {
        "dataset": name,
        "modality": modality.name,
        "found": len(found.items) + len(found.rejected),
        "accepted": len(inventory),
        "rejected": len(rejected),
        "rejected_by_code": dict(sorted(Counter(rejected["code"]).items())),
    }
    if counts["found"] != counts["accepted"] + counts["rejected"]:  # a bug, not bad input
        raise AssertionError(f"{name}: counts do not reconcile: {counts}")
    log.info("%s: found %d = accepted %d + rejected %d", name, counts["found"],
             counts["accepted"], counts["rejected"])
    return IntakeResult(inventory, rejected, counts)


def enforce_policy(result: IntakeResult, policy: str) -> None:
    """With `fail`, raise IntakeFailed naming every rejected item and its reason."""
    if policy != "fail" or result.rejected.empty:
        return
    lines = "\n".join(f"  - {row.path}: {row.reason}" for row in result.rejected.itertuples())
    raise IntakeFailed(
        f"{result.counts['dataset']}: {len(result.rejected)} of {result.counts['found']} items "
        f"rejected and intake.on_bad_input is 'fail':\n{lines}\n"
        "Fix or remove these items, or set intake.on_bad_input: quarantine.")


def write_intake(result: IntakeResult, inventory_path: str | Path, rejected_path: str | Path,
                 counts_path: str | Path) -> None:
    """Write inventory.parquet, rejected.csv and counts.json."""
    for path in (inventory_path, rejected_path, counts_path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    result.inventory.to_parquet(inventory_path, index=False)
    result.rejected.to_csv(rejected_path, index=False)
    Path(counts_path).write_text(json.dumps(result.counts, indent=2) + "\n", encoding="utf-8")


def intake_dataset(name: str, dataset: Mapping[str, Any], intake: Mapping[str, Any],
                   outputs: Mapping[str, str | Path], base_dir: str | Path = ".",
                   workers: int = 1) -> IntakeResult:
    """Run intake for one dataset, apply `intake.on_bad_input`, and write the outputs."""
    result = run_intake(name, dataset, intake, base_dir=base_dir, workers=workers)
    print(f"{name}: found {result.counts['found']} = accepted {result.counts['accepted']} + "
          f"rejected {result.counts['rejected']}", file=sys.stderr)
    enforce_policy(result, intake.get("on_bad_input", "quarantine"))
    write_intake(result, outputs["inventory"], outputs["rejected"], outputs["counts"])
    return result
