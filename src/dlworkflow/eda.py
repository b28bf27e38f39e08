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
from jinja2 import Environment, PackageLoader, select_autoescape

from dlworkflow.figures import figure_uri, new_figure
from dlworkflow.intake import item_records
from dlworkflow.modalities import create_modality

RARE_SHARE = 0.05
RARE_COUNT = 10


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


def target_section(inventory: pd.DataFrame, task: str) -> dict[str, Any]:
    """Target distribution: class counts and warnings, a histogram, or the series and trend."""
    section: dict[str, Any] = {"task": task}
    if task == "classification":
        counts = inventory["label"].astype(str).value_counts().sort_index()
        shares = counts / counts.sum()
        figure, axes = new_figure(max(3.0, 0.35 * len(counts)), 2.4)
        axes.bar(counts.index, counts.to_numpy(), color="#f58518")
        axes.tick_params(labelsize=7)
        axes.set_ylabel("items", fontsize=8)
        rare = [c for c in counts.index if shares[c] < RARE_SHARE or counts[c] < RARE_COUNT]
        section.update(
            figure=figure_uri(figure), counts={k: int(v) for k, v in counts.items()},
            shares={k: float(v) for k, v in shares.items()},
            imbalance_ratio=float(counts.max() / counts.min()), rare=rare,
            warnings=[f"class '{c}' is rare: {counts[c]} items ({shares[c]:.1%}); metrics on it "
                      "will be noisy and stratified splits matter" for c in rare])
    elif task == "regression":
        figure, axes = new_figure()
        axes.hist(inventory["label"].astype(float), bins=40, color="#f58518")
        axes.set_xlabel("target", fontsize=8)
        values = inventory["label"].astype(float)
        section.update(figure=figure_uri(figure), warnings=[],
                       stats={"mean": float(values.mean()), "std": float(values.std()),
                              "min": float(values.min()), "max": float(values.max())})
    return section


def forecasting_target(series: Mapping[str, pd.DataFrame], season: int) -> dict[str, Any]:
    """Each series with its rolling-mean trend, and a seasonality hint from the ACF."""
    figure, axes = new_figure(7.0, 2.6)
    hints = []
    for series_id, frame in list(series.items())[:5]:
        values = frame["value"]
        axes.plot(frame["timestamp"], values, linewidth=0.7, label=f"{series_id}")
        window = max(2, season)
        trend = values.interpolate(limit_direction="both").rolling(window, center=True).mean()
        axes.plot(frame["timestamp"], trend, linewidth=1.6, label=f"{series_id} trend ({window})")
        filled = values.interpolate(limit_direction="both")
        detrended = (filled - trend).dropna()
        if season > 1 and len(detrended) > 2 * season:
            acf = float(detrended.autocorr(lag=season))
            strength = "strong" if acf > 0.5 else "weak" if acf > 0.2 else "no clear"
            hints.append(f"{series_id}: {strength} seasonality at lag {season} "
                         f"(autocorrelation of the detrended series {acf:.2f})")
    axes.legend(fontsize=6)
    axes.tick_params(labelsize=7)
    histogram, hist_axes = new_figure(3.2, 2.6)
    hist_axes.hist(pd.concat([f["value"] for f in series.values()]).dropna(), bins=40,
                   color="#f58518")
    hist_axes.set_title("target values", fontsize=9)
    hist_axes.tick_params(labelsize=7)
    return {"task": "forecasting", "figure": figure_uri(figure), "histogram": figure_uri(histogram),
            "warnings": [], "seasonality": hints}


def sample_grid(inventory: pd.DataFrame, modality, dataset: Mapping[str, Any], base: Path,
                per_class: int, seed: int, max_classes: int = 12) -> list[dict[str, Any]]:
    """Up to `per_class` random previews for each of up to `max_classes` classes."""
    rng = np.random.default_rng(seed)
    by_label = inventory.groupby(inventory["label"].astype(str), sort=True) \
        if inventory["label"].notna().any() else [("all items", inventory)]
    rows = []
    for label, members in list(by_label)[:max_classes]:
        take = members.iloc[np.sort(rng.choice(len(members), size=min(per_class, len(members)),
                                               replace=False))]
        cells = []
        for item in item_records(take, modality, dataset, base):
            cells.append({"id": item.id, "html": modality.preview(item.read_bytes(), item)})
        rows.append({"label": label, "count": len(members), "cells": cells})
    return rows


def quality_section(inventory: pd.DataFrame, rejected: pd.DataFrame, task: str) -> dict[str, Any]:
    """Rejections by reason, exact duplicates, and label conflicts among duplicates."""
    dup = inventory[inventory["sha256"].duplicated(keep=False)]
    groups = dup.groupby("sha256")
    duplicates = [{"sha256": sha[:12], "ids": sorted(map(str, g["id"]))[:6], "n": len(g),
                   "labels": sorted(map(str, g["label"].dropna().unique()))}
                  for sha, g in groups]
    duplicates.sort(key=lambda d: (-d["n"], d["sha256"]))
    conflicts = [d for d in duplicates if len(d["labels"]) > 1] if task == "classification" else []
    by_code = rejected["code"].value_counts().to_dict() if len(rejected) else {}
    return {
        "rejected": rejected.head(50).to_dict("records"), "rejected_total": len(rejected),
        "rejected_by_code": {str(k): int(v) for k, v in by_code.items()},
        "duplicate_groups": len(duplicates),
        "duplicate_items": int(sum(d["n"] for d in duplicates)),
        "duplicates": duplicates[:10], "label_conflicts": conflicts[:10],
        "label_conflict_groups": len(conflicts),
    }


def build_eda(name: str, dataset: Mapping[str, Any], intake: Mapping[str, Any],
              inventory: pd.DataFrame, rejected: pd.DataFrame, counts: Mapping[str, Any],
              metric: Mapping[str, Any], splits: pd.DataFrame, leakage: Mapping[str, Any],
              seed: int, base_dir: str | Path = ".", per_class: int = 5) -> tuple[str, dict]:
    """Render the EDA report and the numbers it shows."""
    base = Path(base_dir)
    modality = create_modality(dataset["modality"], intake, dataset["layout"])
    task = dataset["task"]
    sampled = inventory
    sample_note = None
    trainval = splits[splits["role"] == "trainval"]
    if task != "forecasting" and not trainval["in_sample"].all():
        keep = set(splits.loc[splits["in_sample"] | (splits["role"] == "test"), "id"])
        sampled = inventory[inventory["id"].isin(keep)]
        sample_note = (f"Distributions and previews show the intake.sample subset: "
                       f"{len(sampled)} of {len(inventory)} items.")
    stats = [c for c in modality.stats if c in inventory]
    side = [c for c in inventory.columns if c.startswith("side_")]
    if task == "forecasting":
        from dlworkflow.splits import load_series

        target = forecasting_target(load_series(dataset, inventory, str(base)),
                                    int(metric.get("season", 1)))
    else:
        target = target_section(sampled, task)
    context = {
        "name": name, "dataset": dataset, "counts": counts, "metric": metric,
        "sample_note": sample_note,
        "grid": sample_grid(sampled, modality, dataset, base, per_class, seed),
        "figures": stat_figures(sampled, stats),
        "stat_table": stat_table(sampled, stats), "side_table": stat_table(sampled, side),
        "target": target, "quality": quality_section(inventory, rejected, task),
        "leakage": leakage,
        "splits": splits.groupby(["role", splits["fold"].astype("string").fillna("—")],
                                 dropna=False).size().reset_index(name="items")
        .to_dict("records"),
    }
    env = Environment(loader=PackageLoader("dlworkflow", "templates"),
                      autoescape=select_autoescape(["html", "j2"]))
    html = env.get_template("eda.html.j2").render(**context)
    summary = {
        "dataset": name, "modality": dataset["modality"], "task": task,
        "items": int(counts["accepted"]), "found": int(counts["found"]),
        "rejected": int(counts["rejected"]), "shown_items": len(sampled),
        "primary_metric": metric["primary"]["name"],
        "duplicate_groups": context["quality"]["duplicate_groups"],
        "duplicate_items": context["quality"]["duplicate_items"],
        "label_conflict_groups": context["quality"]["label_conflict_groups"],
        "leaks": int(leakage.get("leaks", 0)),
        "stats": {row["column"]: row["summary"] for row in context["stat_table"]},
    }
    if task == "classification":
        summary.update(classes=len(target["counts"]), class_counts=target["counts"],
                       imbalance_ratio=round(target["imbalance_ratio"], 4), rare_classes=target["rare"])
    return html, summary


def write_eda(name: str, dataset: Mapping[str, Any], intake: Mapping[str, Any], seed: int,
              inputs: Mapping[str, str], outputs: Mapping[str, str]) -> dict[str, Any]:
    """Read the intake and split outputs, write eda.html and summary.json."""
    inventory = pd.read_parquet(inputs["inventory"])
    rejected = pd.read_csv(inputs["rejected"], dtype=str, keep_default_na=False)
    html, summary = build_eda(
        name, dataset, intake, inventory, rejected, json.loads(Path(inputs["counts"]).read_text()),
        json.loads(Path(inputs["metric"]).read_text()), pd.read_parquet(inputs["splits"]),
        json.loads(Path(inputs["leakage"]).read_text()), seed)
    Path(outputs["html"]).write_text(html, encoding="utf-8")
    Path(outputs["summary"]).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary

