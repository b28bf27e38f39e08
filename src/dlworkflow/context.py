"""The run context: what one rule job works with, built once per adapter.

A rule script turns the `snakemake` object into a `RunContext` (`from_snakemake`) and hands
it to one library function; tests and notebooks build one with `for_dataset`. The context
carries the dataset's params entry, its modality and task objects, the seed, the params
sections the rule reads (dataset overrides merged), the rule's threads, and its named input
and output paths, so step functions take a context and a few values of their own instead of
long argument lists, and no step derives a folder from a file in its own way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlworkflow.modalities import Modality, create_modality
from dlworkflow.tasks import Task, get_task

#: params.yaml sections a rule may pass as params of the same name
SECTIONS = ("intake", "split", "tensors", "features", "baseline", "train", "augment", "final",
            "demo")


@dataclass(frozen=True)
class RunContext:
    """One dataset as a rule job sees it."""

    name: str
    dataset: Mapping[str, Any]
    modality: Modality
    task: Task
    seed: int = 0
    sections: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    inputs: Mapping[str, Any] = field(default_factory=dict)
    outputs: Mapping[str, Any] = field(default_factory=dict)
    #: the rule's other params (e.g. `sample`, `with_baseline`)
    values: Mapping[str, Any] = field(default_factory=dict)
    threads: int = 1
    base: Path = Path(".")

    @classmethod
    def for_dataset(cls, name: str, dataset: Mapping[str, Any], **values: Any) -> RunContext:
        """A context for the params entry `dataset` (modality and task from its names)."""
        intake = (values.get("sections") or {}).get("intake") or {}
        return cls(name, dataset, create_modality(dataset["modality"], intake, dataset["layout"]),
                   get_task(dataset["task"]), **values)

    @classmethod
    def from_snakemake(cls, smk: Any) -> RunContext:
        """The context of a running rule job (the `snakemake` object of a script)."""
        params = dict(smk.params.items())
        wildcards = dict(smk.wildcards.items())
        return cls.for_dataset(
            wildcards.get("dataset", ""), params["dataset"], seed=int(params.get("seed", 0)),
            sections={k: v for k, v in params.items() if k in SECTIONS},
            values={k: v for k, v in params.items()
                    if k not in SECTIONS and k not in ("dataset", "seed")},
            inputs=dict(smk.input.items()), outputs=dict(smk.output.items()),
            threads=int(smk.threads))

    def section(self, name: str) -> Mapping[str, Any]:
        """A params section as the rule passed it (empty when it passed none)."""
        return self.sections.get(name) or {}

    @property
    def gap(self) -> int:
        """`split.gap`: steps between a forecasting fold's training end and its window."""
        return int(self.section("split").get("gap", 0))

    def input(self, key: str) -> Any:
        """A named input (a path, or a list of paths); KeyError names the missing key."""
        return self._named(self.inputs, key, "input")

    def output(self, key: str) -> Any:
        """A named output path."""
        return self._named(self.outputs, key, "output")

    def _named(self, files: Mapping[str, Any], key: str, what: str) -> Any:
        if key not in files:
            raise KeyError(f"{self.name}: this rule has no {what} {key!r} "
                           f"({what}s: {', '.join(files)})")
        return files[key]

    def paths(self, key: str, output: bool = False) -> list[str]:
        """The paths of a named input (or output): one, several, or none when it is absent or
        empty (an optional input such as cached features)."""
        value = (self.outputs if output else self.inputs).get(key)
        if value is None:
            return []
        return [str(value)] if isinstance(value, str | Path) else [str(v) for v in value]

    def folder(self, key: str, output: bool = False) -> str | None:
        """The folder holding a named input (or output); None when the input is absent or
        empty (an optional input such as cached features)."""
        paths = self.paths(key, output)
        return str(Path(paths[0]).parent) if paths else None

    def records(self, rows: Any) -> list:
        """Items of inventory (or plan) rows, rebuilt by the modality from the raw data."""
        return self.modality.records(rows, self.dataset["root"], self.task, self.base)

    def with_values(self, **changes: Any) -> RunContext:
        """A copy with some fields replaced."""
        from dataclasses import replace

        return replace(self, **changes)
