"""Step 4, the validation/testing scheme: test set, CV folds, sampling, and leakage checks.

Items are split in clusters: a declared group (a speaker) when grouping is on, otherwise the
content hash, so exact duplicates always land on the same side and in the same fold.
Forecasting splits time instead: the last `horizon` steps are test and the folds are
rolling-origin validation windows before it, each `gap` steps after its training end.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from dlworkflow.errors import ConfigError, LeakageFound


def split_settings(params: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The dataset's split settings: the top-level section updated by its own `split:`."""
    return {**params["split"], **(params["datasets"][name].get("split") or {})}


def clusters(inventory: pd.DataFrame, use_groups: bool) -> pd.Series:
    """The unit that must not be divided: the group when grouping is on, else the content."""
    by_content = "sha:" + inventory["sha256"].astype(str)
    if not use_groups or "group" not in inventory or inventory["group"].isna().all():
        return by_content
    return ("group:" + inventory["group"].astype(str)).where(inventory["group"].notna(), by_content)


def strata(inventory: pd.DataFrame, task: str, stratify: bool) -> np.ndarray:
    """Labels to stratify on: classes, quantile bins of a regression target, or nothing."""
    if not stratify or task not in ("classification", "regression"):
        return np.zeros(len(inventory), dtype=int)
    if task == "regression":
        values = inventory["label"].astype(float)
        bins = min(5, max(1, values.nunique()))
        return pd.qcut(values.rank(method="first"), bins, labels=False).to_numpy()
    return inventory["label"].astype(str).to_numpy()


def _group_kfold(y: np.ndarray, groups: pd.Series, n_splits: int, seed: int, key: str) -> np.ndarray:
    """Fold index per row from StratifiedGroupKFold; clear error when there are too few units."""
    n_units = groups.nunique()
    if n_units < n_splits:
        raise ConfigError(f"{key}: splitting into {n_splits} parts needs at least {n_splits} "
                          f"independent units (groups or distinct items); this data has {n_units}")
    _, per_stratum = np.unique(y, return_counts=True)
    if per_stratum.max() < n_splits:
        raise ConfigError(f"{key}: splitting into {n_splits} parts needs at least {n_splits} "
                          f"items in some class; the largest class has {per_stratum.max()}. Use "
                          "fewer folds, a larger test_size, or more data.")
    folds = np.full(len(y), -1, dtype=int)
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    for fold, (_, held) in enumerate(splitter.split(np.zeros(len(y)), y, groups.to_numpy())):
        folds[held] = fold
    return folds


def predefined_test(inventory: pd.DataFrame, rule: Mapping[str, Any], key: str) -> np.ndarray:
    """Boolean mask of the items a `split.test` rule puts in the test set."""
    column = rule["column"]
    if column not in inventory.columns:
        raise ConfigError(f"{key}.test.column: {column!r} is not an inventory column "
                          f"(columns: {', '.join(inventory.columns)})")
    values = inventory[column]
    mask = np.zeros(len(inventory), dtype=bool)
    if "values" in rule:
        mask |= values.astype(str).isin([str(v) for v in rule["values"]]).to_numpy()
    if "regex" in rule:
        pattern = re.compile(rule["regex"])
        mask |= values.astype(str).map(lambda v: bool(pattern.fullmatch(v))).to_numpy()
    if "min" in rule or "max" in rule:
        numbers = pd.to_numeric(values, errors="coerce")
        mask |= (numbers >= rule.get("min", -np.inf)) & (numbers <= rule.get("max", np.inf))
    return mask


def sample_mask(inventory: pd.DataFrame, trainval: np.ndarray, sample: int | None,
                task: str, seed: int) -> np.ndarray:
    """Which trainval items the sampled steps use: all, or `sample` stratified by label."""
    keep = trainval.copy()
    if not sample or trainval.sum() <= sample:
        return keep
    index = np.flatnonzero(trainval)
    y = strata(inventory.iloc[index], task, True)
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    labels, counts = np.unique(y, return_counts=True)
    quota = np.floor(counts / counts.sum() * sample).astype(int)
    quota = np.maximum(quota, np.minimum(counts, 1))  # every class keeps at least one item
    for label, take in zip(labels, quota, strict=True):
        members = index[y == label]
        chosen.extend(rng.choice(members, size=min(take, len(members)), replace=False).tolist())
    keep[:] = False
    keep[np.array(chosen, dtype=int)] = True
    return keep


def split_items(inventory: pd.DataFrame, task: str, settings: Mapping[str, Any], seed: int,
                sample: int | None = None, key: str = "split") -> pd.DataFrame:
    """Role (trainval | test), fold and in_sample for every accepted item."""
    inventory = inventory.sort_values("id", kind="stable").reset_index(drop=True)
    units = clusters(inventory, settings.get("groups", True))
    y = strata(inventory, task, settings.get("stratify", True))
    if settings.get("test"):
        test = predefined_test(inventory, settings["test"], key)
    else:
        n_test_splits = max(2, round(1 / settings["test_size"]))
        test = _group_kfold(y, units, n_test_splits, seed, f"{key}.test_size") == 0
    trainval = ~test
    folds = np.full(len(inventory), -1, dtype=int)
    folds[trainval] = _group_kfold(y[trainval], units[trainval].reset_index(drop=True),
                                   settings["folds"], seed, f"{key}.folds")
    return pd.DataFrame({
        "id": inventory["id"].astype("string"),
        "label": inventory["label"],
        "group": inventory["group"].astype("string"),
        "sha256": inventory["sha256"].astype("string"),
        "role": pd.Series(np.where(test, "test", "trainval"), dtype="string"),
        "fold": pd.Series(folds, dtype="Int64").where(trainval),
        "in_sample": sample_mask(inventory, trainval, sample, task, seed),
    })


def split_time(series: Mapping[str, pd.DataFrame], settings: Mapping[str, Any],
               key: str = "split") -> pd.DataFrame:
    """Rolling-origin split of each series: one row per time step with role and fold.

    `series` maps a series id to a frame with a `timestamp` column (sorted). The test set is
    the last `horizon` steps (or every step from `test_start`); fold k validates on the k-th
    of `folds` consecutive windows of `horizon` steps before the test set and trains on the
    steps that end `gap` steps before its window. `fold` is the window a step validates in.
    """
    horizon, n_folds, gap = settings["horizon"], settings["folds"], settings.get("gap", 0)
    frames = []
    for series_id, frame in sorted(series.items()):
        n = len(frame)
        stamps = frame["timestamp"].reset_index(drop=True)
        if settings.get("test_start"):
            test_from = int(np.searchsorted(pd.to_datetime(stamps).to_numpy(),
                                            np.datetime64(pd.Timestamp(settings["test_start"]))))
        else:
            test_from = n - horizon
        first_window = test_from - n_folds * horizon
        if first_window - gap < horizon:
            raise ConfigError(
                f"{key}: series {series_id!r} has {test_from} steps before its test window; "
                f"{n_folds} folds x horizon {horizon} + gap {gap} leave fewer than {horizon} "
                "steps to train the first fold. Lower split.folds or split.horizon.")
        role = np.where(np.arange(n) >= test_from, "test", "trainval")
        fold = pd.array([pd.NA] * n, dtype="Int64")
        for k in range(n_folds):
            start = first_window + k * horizon
            fold[start: start + horizon] = k
        frames.append(pd.DataFrame({
            "id": pd.Series([series_id] * n, dtype="string"), "step": np.arange(n),
            "timestamp": stamps.astype("string"), "role": pd.Series(role, dtype="string"),
            "fold": fold, "in_sample": role == "trainval"}))
    return pd.concat(frames, ignore_index=True)


def training_steps(splits: pd.DataFrame, series_id: str, fold: int, gap: int) -> np.ndarray:
    """The steps fold `fold` of a series trains on: trainval steps ending `gap` before its window.

    This is the one definition later steps use to build a forecasting fold's training data.
    """
    rows = splits[(splits["id"] == series_id) & (splits["role"] == "trainval")]
    val_start = int(rows.loc[rows["fold"] == fold, "step"].min())
    return rows.loc[rows["step"] < val_start - gap, "step"].to_numpy()


def time_windows(splits: pd.DataFrame, gap: int) -> list[dict[str, Any]]:
    """Per series and fold: training end, validation window, and the proof that they are ordered.

    `ordered` holds when the last training step (from `training_steps`) is more than `gap`
    steps before the first validation step and no validation or test step is trained on.
    """
    windows = []
    for (series_id, fold), rows in splits.dropna(subset=["fold"]).groupby(["id", "fold"]):
        series = splits[splits["id"] == series_id]
        train = training_steps(splits, str(series_id), int(fold), gap)
        val_start, val_end = int(rows["step"].min()), int(rows["step"].max())
        train_end = int(train.max()) if len(train) else -1
        held_out = set(rows["step"]) | set(series.loc[series["role"] == "test", "step"])
        stamp = series.set_index("step")["timestamp"]
        windows.append({
            "series": str(series_id), "fold": int(fold), "train_steps": len(train),
            "train_end_step": train_end, "val_start_step": val_start, "val_end_step": val_end,
            "train_end": str(stamp.get(train_end, "")), "val_start": str(stamp[val_start]),
            "val_end": str(stamp[val_end]),
            "ordered": bool(len(train) and train_end + gap < val_start
                            and not held_out.intersection(train.tolist())),
        })
    return windows


def _shared(splits: pd.DataFrame, column: str, by: str) -> list[dict[str, Any]]:
    """Values of `column` seen under more than one value of `by` (e.g. a hash in two folds)."""
    rows = splits.dropna(subset=[column, by])
    spread = rows.groupby(column)[by].nunique()
    out = []
    for value in spread[spread > 1].index:
        members = rows[rows[column] == value]
        out.append({column: str(value),
                    **{str(k): sorted(map(str, g["id"])) for k, g in members.groupby(by)}})
    return out


def leakage_report(splits: pd.DataFrame, task: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """What could leak between trainval and test or between folds, with the items named."""
    if task == "forecasting":
        windows = time_windows(splits, settings.get("gap", 0))
        test_after = all(
            splits[(splits["id"] == s) & (splits["role"] == "test")]["step"].min()
            > splits[(splits["id"] == s) & (splits["role"] == "trainval")]["step"].max()
            for s in splits["id"].unique())
        problems = sum(not w["ordered"] for w in windows) + (not test_after)
        return {"task": task, "gap": settings.get("gap", 0), "windows": windows,
                "test_after_trainval": bool(test_after), "leaks": int(problems)}
    report = {
        "task": task,
        "duplicates_across_test": _shared(splits, "sha256", "role"),
        "duplicates_across_folds": _shared(splits[splits["role"] == "trainval"], "sha256", "fold"),
        "groups_across_test": _shared(splits, "group", "role"),
        "groups_across_folds": _shared(splits[splits["role"] == "trainval"], "group", "fold"),
    }
    report["leaks"] = sum(len(v) for v in report.values() if isinstance(v, list))
    return report


def enforce_leakage_policy(report: Mapping[str, Any], policy: str, dataset: str) -> None:
    """With `fail`, raise LeakageFound naming every leaking item, group or window."""
    if policy != "fail" or not report["leaks"]:
        return
    lines = []
    for kind, entries in report.items():
        if isinstance(entries, list):
            for entry in entries:
                if kind == "windows":
                    if not entry["ordered"]:
                        lines.append(f"  - fold {entry['fold']} of {entry['series']}: validation "
                                     "starts before its training data ends")
                else:
                    lines.append(f"  - {kind}: {entry}")
    if not report.get("test_after_trainval", True):
        lines.append("  - the test window does not come after the trainval data")
    raise LeakageFound(f"{dataset}: the split leaks ({report['leaks']} finding(s)) and "
                       "split.on_leakage is 'fail':\n" + "\n".join(lines))


def describe_scheme(task: str, settings: Mapping[str, Any], has_groups: bool) -> str:
    """One sentence saying how test and folds were made."""
    if task == "forecasting":
        test = (f"every step from {settings['test_start']}" if settings.get("test_start")
                else f"the last {settings['horizon']} steps")
        return (f"Test: {test} of each series. Validation: {settings['folds']} rolling-origin "
                f"windows of {settings['horizon']} steps before the test set, each fold training "
                f"only on steps that end {settings.get('gap', 0)} step(s) before its window.")
    grouped = settings.get("groups", True) and has_groups
    unit = "group" if grouped else "content hash (exact duplicates stay together)"
    kind = "stratified " if settings.get("stratify", True) and task == "classification" else ""
    if settings.get("test"):
        rule = {k: v for k, v in settings["test"].items() if k != "column"}
        test = f"items whose {settings['test']['column']} matches {rule}"
    else:
        test = f"a {kind}held-out {settings['test_size']:.0%} of items, split by {unit}"
    return f"Test: {test}. Validation: {settings['folds']}-fold {kind}group k-fold by {unit}."


def load_series(dataset: Mapping[str, Any], inventory: pd.DataFrame,
                base_dir: str = ".") -> dict[str, pd.DataFrame]:
    """Re-read the accepted series of a forecasting dataset (time order, timestamps)."""
    from pathlib import Path

    from dlworkflow.intake import item_records
    from dlworkflow.modalities import create_modality

    modality = create_modality(dataset["modality"], {}, dataset["layout"])
    return {item.id: modality.frame(item.read_bytes())
            for item in item_records(inventory, modality, dataset, Path(base_dir))}


def split_dataset(name: str, dataset: Mapping[str, Any], settings: Mapping[str, Any], seed: int,
                  sample: int | None, inventory_path: str, outputs: Mapping[str, str],
                  base_dir: str = ".") -> dict[str, Any]:
    """Split one dataset, check for leakage, and write splits.parquet and leakage.json."""
    import json
    from pathlib import Path

    inventory = pd.read_parquet(inventory_path)
    task = dataset["task"]
    key = f"datasets.{name}.split"
    if task == "forecasting":
        splits = split_time(load_series(dataset, inventory, base_dir), settings, key)
    else:
        splits = split_items(inventory, task, settings, seed, sample, key)
    report = leakage_report(splits, task, settings)
    report = {"dataset": name, "scheme": describe_scheme(
        task, settings, bool(inventory["group"].notna().any())), **report,
        "on_leakage": settings["on_leakage"]}
    enforce_leakage_policy(report, settings["on_leakage"], name)
    Path(outputs["splits"]).parent.mkdir(parents=True, exist_ok=True)
    splits.to_parquet(outputs["splits"], index=False)
    Path(outputs["leakage"]).write_text(json.dumps(report, indent=2, default=str) + "\n")
    return report
