"""Step 1b, choose the metric: the task proposes its metrics from the target's distribution
and says why; `intake.metric` may override the primary one. Writes `intake/metric.json`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from dlworkflow.errors import IntakeFailed
from dlworkflow.metrics import METRICS
from dlworkflow.tasks import get_task
from dlworkflow.tasks.base import metric_entry


def choose_metric(task: str, labels: pd.Series | None, settings: Mapping[str, Any],
                  frequency: str | None = None) -> dict[str, Any]:
    """Pick the primary and secondary metrics from the task and the target's distribution.

    Returns what `intake/metric.json` holds, with a rationale sentence.
    """
    facts, primary, secondary, why = get_task(task).metric_choice(labels, settings, frequency)
    out: dict[str, Any] = {"task": task, **facts}
    override = settings.get("metric")
    if override:
        if override not in METRICS:
            raise ValueError(f"intake.metric: {override!r} is not one of {', '.join(METRICS)}")
        beta = float(settings.get("beta", 1.0))
        chosen = primary
        primary = metric_entry(override, **({"beta": beta, "positive_label": out.get("positive_label")}
                                            if override == "f_beta" else {}))
        secondary = [m for m in (chosen, *secondary) if m["name"] != override]
        why = (f"intake.metric sets {override} as the primary metric (overriding the automatic "
               f"choice, {chosen['name']}). The automatic reasoning was: {why}")
    out.update(primary=primary, secondary=secondary, rationale=why)
    return out


def write_metric_choice(task: str, inventory_path: str, settings: Mapping[str, Any],
                        output: str, dataset: str = "", rejected_path: str | None = None
                        ) -> dict[str, Any]:
    """Choose the metric from the inventory's target and write `intake/metric.json`; an
    empty inventory stops here, naming `rejected.csv` (later steps could only fail)."""
    inventory = pd.read_parquet(inventory_path)
    if inventory.empty:
        reasons = ""
        if rejected_path and Path(rejected_path).is_file():
            rejected = pd.read_csv(rejected_path)
            codes = rejected["code"].value_counts()
            reasons = f" ({len(rejected)} rejected: " + ", ".join(
                f"{count} {code}" for code, count in codes.items()) + ")"
        raise IntakeFailed(f"no items accepted for {dataset or inventory_path}: see "
                           f"{rejected_path or 'rejected.csv'}{reasons}")
    labels, frequency = get_task(task).metric_inputs(inventory)
    choice = choose_metric(task, labels, settings, frequency)
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    Path(output).write_text(json.dumps(choice, indent=2) + "\n", encoding="utf-8")
    return choice
