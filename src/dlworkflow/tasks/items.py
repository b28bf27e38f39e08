"""What classification and regression share: one row per raw item, split in clusters.

Items are split in clusters: a declared group (a speaker) when grouping is on, otherwise the
content hash, so exact duplicates always land on the same side and in the same fold. A fold
trains on every other fold's items.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from dlworkflow.errors import ConfigError
from dlworkflow.tasks.base import Task, counts_as_leak


def clusters(inventory: pd.DataFrame, use_groups: bool) -> pd.Series:
    """The unit that must not be divided: the group when grouping is on, else the content."""
    by_content = "sha:" + inventory["sha256"].astype(str)
    if not use_groups or "group" not in inventory or inventory["group"].isna().all():
        return by_content
    return ("group:" + inventory["group"].astype(str)).where(inventory["group"].notna(), by_content)


def group_kfold(y: np.ndarray, groups: pd.Series, n_splits: int, seed: int, key: str) -> np.ndarray:
    """Fold index per row from StratifiedGroupKFold; clear error when there are too few units."""
    from sklearn.model_selection import StratifiedGroupKFold

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


def test_rule_words(rule: Mapping[str, Any]) -> str:
    """A predefined test rule (`split.test`) in words: "side_take is one of 0, 1, 2"."""
    column, parts = rule["column"], []
    if rule.get("values") is not None:
        parts.append(f"is one of {', '.join(map(str, rule['values']))}")
    if rule.get("regex"):
        parts.append(f"matches the pattern {rule['regex']}")
    if rule.get("min") is not None and rule.get("max") is not None:
        parts.append(f"lies between {rule['min']} and {rule['max']}")
    elif rule.get("min") is not None:
        parts.append(f"is at least {rule['min']}")
    elif rule.get("max") is not None:
        parts.append(f"is at most {rule['max']}")
    return f"{column} {' or '.join(parts) or 'is set'}"


def shared_values(splits: pd.DataFrame, column: str, by: str) -> list[dict[str, Any]]:
    """Values of `column` seen under more than one value of `by` (e.g. a hash in two folds)."""
    rows = splits.dropna(subset=[column, by])
    spread = rows.groupby(column)[by].nunique()
    out = []
    for value in spread[spread > 1].index:
        members = rows[rows[column] == value]
        out.append({column: str(value),
                    **{str(k): sorted(map(str, g["id"])) for k, g in members.groupby(by)}})
    return out


class ItemTask(Task):
    """A task whose units are raw items (classification, regression)."""

    def strata(self, inventory: pd.DataFrame, stratify: bool) -> np.ndarray:
        """Labels to stratify on (none by default)."""
        return np.zeros(len(inventory), dtype=int)

    def sample_mask(self, inventory: pd.DataFrame, trainval: np.ndarray, sample: int | None,
                    seed: int) -> np.ndarray:
        """Which trainval items the sampled steps use: all, or `sample` stratified by label."""
        keep = trainval.copy()
        if not sample or trainval.sum() <= sample:
            return keep
        index = np.flatnonzero(trainval)
        y = self.strata(inventory.iloc[index], True)
        rng = np.random.default_rng(seed)
        chosen: list[int] = []
        labels, counts = np.unique(y, return_counts=True)
        quota = np.floor(counts / counts.sum() * sample).astype(int)
        quota = np.maximum(quota, np.minimum(counts, 1))  # every class keeps at least one item
        for label, take in zip(labels, quota, strict=True):
            members = index[y == label]
            chosen.extend(rng.choice(members, size=min(take, len(members)),
                                     replace=False).tolist())
        keep[:] = False
        keep[np.array(chosen, dtype=int)] = True
        return keep

    def split_items(self, inventory: pd.DataFrame, settings: Mapping[str, Any], seed: int,
                    sample: int | None = None, key: str = "split") -> pd.DataFrame:
        """Role (trainval | test), fold and in_sample for every accepted item."""
        inventory = inventory.sort_values("id", kind="stable").reset_index(drop=True)
        units = clusters(inventory, settings.get("groups", True))
        y = self.strata(inventory, settings.get("stratify", True))
        if settings.get("test"):
            test = predefined_test(inventory, settings["test"], key)
        else:
            n_test_splits = max(2, round(1 / settings["test_size"]))
            test = group_kfold(y, units, n_test_splits, seed, f"{key}.test_size") == 0
        trainval = ~test
        folds = np.full(len(inventory), -1, dtype=int)
        folds[trainval] = group_kfold(y[trainval], units[trainval].reset_index(drop=True),
                                      settings["folds"], seed, f"{key}.folds")
        return pd.DataFrame({
            "id": inventory["id"].astype("string"),
            "label": inventory["label"],
            "group": inventory["group"].astype("string"),
            "sha256": inventory["sha256"].astype("string"),
            "role": pd.Series(np.where(test, "test", "trainval"), dtype="string"),
            "fold": pd.Series(folds, dtype="Int64").where(trainval),
            "in_sample": self.sample_mask(inventory, trainval, sample, seed),
        })

    def split(self, inventory: pd.DataFrame, series: Callable[[], Mapping[str, pd.DataFrame]],
              settings: Mapping[str, Any], seed: int, sample: int | None,
              key: str) -> pd.DataFrame:
        return self.split_items(inventory, settings, seed, sample, key)

    def leakage_report(self, splits: pd.DataFrame, settings: Mapping[str, Any]) -> dict[str, Any]:
        trainval = splits[splits["role"] == "trainval"]
        report: dict[str, Any] = {
            "task": self.name,
            "duplicates_across_test": shared_values(splits, "sha256", "role"),
            "duplicates_across_folds": shared_values(trainval, "sha256", "fold"),
            "groups_across_test": shared_values(splits, "group", "role"),
            "groups_across_folds": shared_values(trainval, "group", "fold"),
        }
        report["groups_counted"] = bool(settings.get("groups", True))
        report["leaks"] = sum(len(v) for k, v in report.items()
                              if isinstance(v, list) and counts_as_leak(report, k))
        return report

    #: word for a stratified split in the scheme's sentence ("" when not stratified by class)
    stratified: str = ""

    def describe_scheme(self, settings: Mapping[str, Any], has_groups: bool) -> str:
        grouped = settings.get("groups", True) and has_groups
        unit = "group" if grouped else "content hash (exact duplicates stay together)"
        kind = self.stratified if settings.get("stratify", True) else ""
        if settings.get("test"):
            test = f"items whose {test_rule_words(settings['test'])}"
        else:
            test = f"a {kind}held-out {settings['test_size']:.0%} of items, split by {unit}"
        return f"Test: {test}. Validation: {settings['folds']}-fold {kind}group k-fold by {unit}."

    def plan(self, splits: pd.DataFrame, tensors: Mapping[str, Any], split: Mapping[str, Any],
             seed: int, choice: Mapping[str, Any] | None = None) -> pd.DataFrame:
        """Items to shards per role, in a seeded random order so every shard mixes classes."""
        shard_size = int(tensors["shard_size"])
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

    def training_rows(self, trainval: pd.DataFrame, fold: int, gap: int) -> pd.DataFrame:
        """Every other fold's items."""
        return trainval[trainval["fold"] != fold]


__all__ = ["ItemTask", "clusters", "group_kfold", "predefined_test", "shared_values"]
