"""What the EDA and the final report are rendered with: one Jinja environment over the
package's templates (HTML escaped) with the filters both pages write numbers and metric
names with, and `counted`, a count in words."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def counted(number: int, noun: str) -> str:
    """A count and its noun, in words: "1 item", "3,000 items", "0 leakage findings"."""
    number = int(number)
    return f"{number:,} {noun}{'' if number == 1 else 's'}"


def environment(choice: Mapping[str, Any] | None):
    """The templates' Jinja environment: `thousands` ("3,000"), `counted` and
    `metric_label` (the metric as `choice`, the dataset's metric.json, names it)."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    from dlworkflow.metrics import metric_label

    env = Environment(loader=PackageLoader("dlworkflow", "templates"),
                      autoescape=select_autoescape(["html", "j2"]))
    env.filters["thousands"] = "{:,}".format
    env.filters["counted"] = counted
    env.filters["metric_label"] = lambda name: metric_label(name, choice)
    return env
