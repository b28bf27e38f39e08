"""Step 4, the validation/testing scheme: test set, CV folds, sampling, and leakage checks.

The dataset's task makes the split and proves it (`Task.split`, `Task.leakage_report`):
items are split in clusters (groups or content hashes) for classification and regression,
time is split with rolling origins for forecasting. This step writes what the task made and
applies `split.on_leakage`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from dlworkflow.config import split_settings
from dlworkflow.context import RunContext
from dlworkflow.errors import LeakageFound
from dlworkflow.tasks.base import counts_as_leak

__all__ = ["LeakageFound", "enforce_leakage_policy", "load_series", "shared_groups_words",
           "split_dataset", "split_settings"]


def enforce_leakage_policy(report: Mapping[str, Any], policy: str, dataset: str) -> None:
    """With `fail`, raise LeakageFound naming every leaking item, group or window."""
    if policy != "fail" or not report["leaks"]:
        return
    lines = []
    for kind, entries in report.items():
        if isinstance(entries, list) and counts_as_leak(report, kind):
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


def shared_groups_words(report: Mapping[str, Any]) -> str | None:
    """With `split.groups: false`, the groups on both sides in words, for the EDA and the
    final report: what the scores then measure and how to measure the other thing. None
    when grouping was asked for (shared groups are then leaks) or nothing is shared."""
    if report.get("groups_counted", True):
        return None
    test, folds = len(report.get("groups_across_test", [])), len(report.get("groups_across_folds", []))
    if not test and not folds:
        return None
    where = [f"{test} have items in both test and trainval"] if test else []
    if folds:
        where.append(f"{folds} {'' if test else 'have items '}in more than one fold")
    if test:
        scores = ("So the cross-validated and test scores are for groups the model trained on "
                  "(for speakers, voices it has heard); to score unseen groups, set "
                  "split.groups: true and a test rule that keeps each group on one side.")
    else:
        scores = ("So the cross-validated scores are for groups the model trained on (for "
                  "speakers, voices it has heard) while the test's groups are unseen; "
                  "split.groups: true keeps each group inside one fold.")
    return (f"split.groups is false, so groups may straddle the split (not counted as leaks): "
            f"of the dataset's groups, {' and '.join(where)}. {scores}")


def load_series(ctx: RunContext, inventory: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Re-read the accepted series of a dataset (time order, timestamps)."""
    return {item.id: ctx.modality.frame(item.read_bytes()) for item in ctx.records(inventory)}


def split_dataset(ctx: RunContext) -> dict[str, Any]:
    """Split one dataset, check for leakage, and write splits.parquet and leakage.json."""
    inventory = pd.read_parquet(ctx.input("inventory"))
    settings = ctx.section("split")
    key = f"datasets.{ctx.name}.split"
    splits = ctx.task.split(inventory, lambda: load_series(ctx, inventory), settings, ctx.seed,
                            ctx.values.get("sample"), key)
    report = ctx.task.leakage_report(splits, settings)
    report = {"dataset": ctx.name, "scheme": ctx.task.describe_scheme(
        settings, bool(inventory["group"].notna().any())), **report,
        "on_leakage": settings["on_leakage"]}
    enforce_leakage_policy(report, settings["on_leakage"], ctx.name)
    Path(ctx.output("splits")).parent.mkdir(parents=True, exist_ok=True)
    splits.to_parquet(ctx.output("splits"), index=False)
    Path(ctx.output("leakage")).write_text(json.dumps(report, indent=2, default=str) + "\n")
    return report
