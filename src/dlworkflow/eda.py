"""Step 1, look at the data: the EDA report (micro and macro) and summary.json.

The report is one self-contained HTML file: sample previews per class, distributions of the
modality's stats, the target, data quality (rejections, duplicates, label conflicts), the
chosen metric with its rationale, and the split scheme with its leakage check.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dlworkflow.context import RunContext
from dlworkflow.figures import figure_uri, new_figure
from dlworkflow.pages import counted, environment
from dlworkflow.splits import load_series, shared_groups_words
from dlworkflow.tasks import Task


def _numeric(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


def stat_figures(inventory: pd.DataFrame, columns: list[str]) -> list[dict[str, str]]:
    """A histogram per numeric stat and a bar chart per categorical stat with >1 value."""
    figures = []
    for column in columns:
        values = inventory[column].dropna()
        if values.empty or values.nunique() < 2:
            continue
        figure, axes = new_figure(3.2, 2.0)
        if _numeric(values):
            axes.hist(values.astype(float), bins=min(40, max(5, values.nunique())), color="#4c78a8")
        else:
            counts = values.astype(str).value_counts().head(15)
            axes.barh(counts.index[::-1], counts.to_numpy()[::-1], color="#4c78a8")
        axes.set_title(column, fontsize=9)
        axes.tick_params(labelsize=7)
        figures.append({"title": column, "uri": figure_uri(figure)})
    return figures


def stat_table(inventory: pd.DataFrame, columns: list[str]) -> list[dict[str, Any]]:
    """dtype, missing, and mean/std/min/max or the top values of each column."""
    rows = []
    for column in columns:
        values = inventory[column]
        row: dict[str, Any] = {"column": column, "dtype": str(values.dtype),
                               "missing": int(values.isna().sum())}
        present = values.dropna()
        if _numeric(values) and len(present):
            numbers = present.astype(float)
            spread = f" ± {numbers.std():.3g}" if len(numbers) > 1 else ""
            row["summary"] = (f"mean {numbers.mean():.4g}{spread}, "
                              f"min {numbers.min():.4g}, max {numbers.max():.4g}")
        else:
            top = present.astype(str).value_counts().head(4)
            row["summary"] = ", ".join(f"{k} ({v})" for k, v in top.items()) or "—"
        rows.append(row)
    return rows


def sample_grid(ctx: RunContext, inventory: pd.DataFrame, per_class: int,
                max_classes: int = 12) -> list[dict[str, Any]]:
    """Up to `per_class` random previews for each of up to `max_classes` classes."""
    rng = np.random.default_rng(ctx.seed)
    by_label = inventory.groupby(inventory["label"].astype(str), sort=True) \
        if inventory["label"].notna().any() else [("all items", inventory)]
    rows = []
    for label, members in list(by_label)[:max_classes]:
        take = members.iloc[np.sort(rng.choice(len(members), size=min(per_class, len(members)),
                                               replace=False))]
        cells = []
        for item in ctx.records(take):
            cells.append({"id": item.id, "html": ctx.modality.preview(item.read_bytes(), item)})
        rows.append({"label": label, "count": len(members), "cells": cells})
    return rows


def quality_section(inventory: pd.DataFrame, rejected: pd.DataFrame, task: Task) -> dict[str, Any]:
    """Rejections by reason, exact duplicates, and label conflicts among duplicates."""
    dup = inventory[inventory["sha256"].duplicated(keep=False)]
    groups = dup.groupby("sha256")
    duplicates = [{"sha256": sha[:12], "ids": sorted(map(str, g["id"]))[:6], "n": len(g),
                   "labels": sorted(map(str, g["label"].dropna().unique()))}
                  for sha, g in groups]
    duplicates.sort(key=lambda d: (-d["n"], d["sha256"]))
    conflicts = task.label_conflicts(duplicates)
    by_code = rejected["code"].value_counts().to_dict() if len(rejected) else {}
    return {
        "rejected": rejected.head(50).to_dict("records"), "rejected_total": len(rejected),
        "rejected_by_code": {str(k): int(v) for k, v in by_code.items()},
        "duplicate_groups": len(duplicates),
        "duplicate_items": int(sum(d["n"] for d in duplicates)),
        "duplicates": duplicates[:10], "label_conflicts": conflicts[:10],
        "label_conflict_groups": len(conflicts),
    }



def leakage_finding(entry: dict, shown: int = 3) -> str:
    """One leakage finding in words: the shared value (a group, or a content hash), then per
    part (test / trainval, or a fold) how many items and the first few ids."""
    key = "group" if "group" in entry else "sha256"
    what = f"group {entry[key]}" if key == "group" else f"identical content {entry[key][:12]}"
    parts = []
    for part, ids in entry.items():
        if part == key:
            continue
        name = part if not str(part).isdigit() else f"fold {part}"
        more = f", … {len(ids) - shown} more" if len(ids) > shown else ""
        parts.append(f"{name}: {counted(len(ids), 'item')} ({', '.join(ids[:shown])}{more})")
    return f"{what} in " + "; ".join(parts)

def build_eda(ctx: RunContext, inventory: pd.DataFrame, rejected: pd.DataFrame,
              reads: Mapping[str, Any], splits: pd.DataFrame,
              per_class: int = 5) -> tuple[str, dict]:
    """Render the EDA report and the numbers it shows (`reads`: counts, metric, leakage)."""
    counts, metric, leakage = reads["counts"], reads["metric"], reads["leakage"]
    task = ctx.task
    sampled = inventory
    sample_note = None
    trainval = splits[splits["role"] == "trainval"]
    if task.samples_items and not trainval["in_sample"].all():
        keep = set(splits.loc[splits["in_sample"] | (splits["role"] == "test"), "id"])
        sampled = inventory[inventory["id"].isin(keep)]
        sample_note = (f"Distributions and previews show the intake.sample subset: "
                       f"{len(sampled)} of {len(inventory)} items.")
    stats = [c for c in ctx.modality.stats if c in inventory]
    side = [c for c in inventory.columns if c.startswith("side_")]
    target = task.eda_target(sampled, lambda: load_series(ctx, inventory),
                             int(metric.get("season", 1)))
    context = {
        "name": ctx.name, "dataset": ctx.dataset, "task": task, "counts": counts,
        "metric": metric, "sample_note": sample_note,
        "grid": sample_grid(ctx, sampled, per_class),
        "figures": stat_figures(sampled, stats),
        "stat_table": stat_table(sampled, stats), "side_table": stat_table(sampled, side),
        "target": target, "quality": quality_section(inventory, rejected, task),
        "leakage": leakage, "shared_groups": shared_groups_words(leakage),
        "splits": splits.groupby(["role", splits["fold"].astype("string").fillna("—")],
                                 dropna=False).size().reset_index(name="items")
        .to_dict("records"),
    }
    env = environment(metric)
    env.filters["finding"] = leakage_finding
    html = env.get_template("eda.html.j2").render(**context)
    summary = {
        "dataset": ctx.name, "modality": ctx.dataset["modality"], "task": task.name,
        "items": int(counts["accepted"]), "found": int(counts["found"]),
        "rejected": int(counts["rejected"]), "shown_items": len(sampled),
        "primary_metric": metric["primary"]["name"],
        "duplicate_groups": context["quality"]["duplicate_groups"],
        "duplicate_items": context["quality"]["duplicate_items"],
        "label_conflict_groups": context["quality"]["label_conflict_groups"],
        "leaks": int(leakage.get("leaks", 0)),
        "stats": {row["column"]: row["summary"] for row in context["stat_table"]},
        **task.eda_summary(target),
    }
    return html, summary


def write_eda(ctx: RunContext) -> dict[str, Any]:
    """Read the intake and split outputs, write eda.html and summary.json."""
    inventory = pd.read_parquet(ctx.input("inventory"))
    rejected = pd.read_csv(ctx.input("rejected"), dtype=str, keep_default_na=False)
    reads = {key: json.loads(Path(ctx.input(key)).read_text())
             for key in ("counts", "metric", "leakage")}
    html, summary = build_eda(ctx, inventory, rejected, reads,
                              pd.read_parquet(ctx.input("splits")))
    Path(ctx.output("html")).write_text(html, encoding="utf-8")
    Path(ctx.output("summary")).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary
