"""The step table: which rules, targets, params and code make up each step.

`rules/common.smk` builds `rule all` from it and `dlworkflow dvc-yaml` generates dvc.yaml
from it, so the Snakemake targets and the DVC stages cannot drift apart (a test checks the
committed dvc.yaml and that each stage's outs are produced by that step's rules).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlworkflow.tasks import TASKS


@dataclass(frozen=True)
class Step:
    """One of the workflow's steps as both Snakemake and DVC see it."""

    name: str
    rules: tuple[str, ...]
    #: per-dataset output templates ({dataset} and {root} are filled in)
    outputs: tuple[str, ...]
    #: outputs that are also DVC metrics (kept in git, cache false, unless inside a dvc_outs
    #: folder: then dvc.yaml lists them in its top-level metrics)
    metrics: tuple[str, ...] = ()
    #: params.yaml keys the step reads ({dataset} is filled in)
    params: tuple[str, ...] = ()
    #: the step's rules and scripts (and data files its code reads, such as templates); the
    #: library modules they import are derived from the source (`step_code`)
    code: tuple[str, ...] = ()
    #: which datasets the step applies to: "all", "demo" (demo sources) or "features"
    #: (the configured extractor embeds the dataset: `extracts_features`)
    datasets: str = "all"
    #: earlier steps whose outputs are this step's deps
    after: tuple[str, ...] = ()
    #: what DVC tracks, when it differs from the Snakemake targets (a folder of shards)
    dvc_outs: tuple[str, ...] = ()
    #: params sections whose keys may name a local file the step reads (`named_files`):
    #: such a file is a dep of the step, in Snakemake and in DVC
    files: tuple[str, ...] = ()


CORE_CODE = ("schemas/params.schema.yaml", "rules/common.smk", "schemas/demo_datasets.yaml")

STEPS: tuple[Step, ...] = (
    Step(
        name="demo_data",
        rules=("demo_data",),
        outputs=("{root}",),
        params=("seed", "demo", "datasets.{dataset}.demo", "datasets.{dataset}.root"),
        code=("rules/demo.smk", "scripts/demo_data.py"),
        datasets="demo",
    ),
    Step(
        name="intake",
        rules=("intake", "choose_metric"),
        outputs=(
            "results/{dataset}/intake/inventory.parquet",
            "results/{dataset}/intake/rejected.csv",
            "results/{dataset}/intake/metric.json",
            "results/{dataset}/intake/counts.json",
        ),
        # text: the longest text the networks read; forecasting: the split that decides
        # whether a series is long enough and the lookback the metric choice resolves
        params=("intake", "tensors.text.max_characters", "tensors.timeseries.lookback", "split",
                "datasets.{dataset}"),
        code=("rules/intake.smk", "scripts/intake.py", "scripts/choose_metric.py"),
        after=("demo_data",),
    ),
    Step(
        name="split",
        rules=("split",),
        outputs=("results/{dataset}/split/splits.parquet", "results/{dataset}/split/leakage.json"),
        params=("seed", "split", "intake.sample", "datasets.{dataset}"),
        code=("rules/split.smk", "scripts/split.py"),
        after=("intake",),
    ),
    Step(
        name="eda",
        rules=("eda",),
        outputs=("results/{dataset}/intake/eda.html", "results/{dataset}/intake/summary.json"),
        params=("seed", "intake", "datasets.{dataset}"),
        code=("rules/eda.smk", "scripts/eda.py", "src/dlworkflow/templates"),
        after=("intake", "split"),
    ),
    Step(
        name="tensors",
        rules=("tensor_plan", "tensorize_shard", "tensors_index"),
        outputs=("results/{dataset}/tensors/index.parquet", "results/{dataset}/tensors/stats.json"),
        dvc_outs=("results/{dataset}/tensors",),
        params=("seed", "tensors", "split", "datasets.{dataset}"),
        code=("rules/tensors.smk", "scripts/tensor_plan.py", "scripts/tensorize_shard.py",
              "scripts/tensors_index.py"),
        after=("intake", "split"),
    ),
    Step(
        name="features",
        rules=("choose_extractor", "extract_features", "features_index"),
        outputs=("results/{dataset}/features/index.parquet",),
        dvc_outs=("results/{dataset}/features",),
        # under `auto` it embeds with image_transfer's backbone where auto's network is it
        params=("features", "train.architecture", "train.transfer", "datasets.{dataset}"),
        code=("rules/features.smk", "scripts/choose_extractor.py", "scripts/extract_features.py",
              "scripts/features_index.py"),
        datasets="features",
        after=("tensors",),
        files=("features", "train"),
    ),
    Step(
        name="baseline",
        rules=("baseline_fold", "baseline_summary"),
        outputs=("results/{dataset}/baseline/oof.parquet", "results/{dataset}/baseline/headline.json"),
        params=("seed", "baseline", "split", "tensors", "features", "datasets.{dataset}"),
        code=("rules/baseline.smk", "scripts/baseline_fold.py", "scripts/baseline_summary.py"),
        after=("intake", "tensors", "features"),
        # one folder per dataset: the number of folds is a param (dvc exp run -S split.folds=3)
        dvc_outs=("results/{dataset}/baseline",),
    ),
    Step(
        name="train",
        rules=("choose_network", "encode_texts", "train_fold", "train_scratch_fold",
               "train_fitted_fold", "nn_summary"),
        outputs=("results/{dataset}/nn/oof.parquet",),
        metrics=("results/{dataset}/nn/headline.json",),
        params=("seed", "train", "augment", "split", "tensors", "features", "datasets.{dataset}"),
        code=("rules/train.smk", "scripts/choose_network.py", "scripts/encode_texts.py",
              "scripts/train_fold.py", "scripts/nn_summary.py"),
        after=("intake", "tensors", "features", "baseline"),
        dvc_outs=("results/{dataset}/nn",),
        files=("train", "features"),
    ),
    Step(
        name="final",
        rules=("tensorize_test_shard", "final_train", "final_baseline", "final_test",
               "final_latency", "final_report"),
        outputs=("results/{dataset}/final/report.html",),
        metrics=("results/{dataset}/final/headline.json",),
        params=("seed", "train", "augment", "split", "tensors", "features", "baseline", "final",
                "datasets.{dataset}"),
        code=("rules/final.smk", "scripts/final_train.py", "scripts/final_test.py",
              "scripts/final_latency.py", "scripts/final_report.py", "scripts/tensorize_shard.py",
              "scripts/final_baseline.py",
              "src/dlworkflow/templates"),
        after=("intake", "split", "tensors", "features", "baseline", "train"),
        # the test shards and the final model live here; only this stage reads test rows
        dvc_outs=("results/{dataset}/final",),
        files=("train", "features"),
    ),
)


#: DVC plots of every dataset, as {title: definition} with {dataset} filled in (dvc plots
#: show / diff): learning curves from the training histories, then the task's own
#: (`Task.dvc_plots`, CSVs the final step writes under final/plots/).
CURVES = {
    "Loss per epoch, fold 0 ({dataset})": {
        "x": "epoch", "y": {"results/{dataset}/nn/fold-0/history.csv": ["loss", "val_loss"]}},
    "Loss per epoch, final model ({dataset})": {
        "x": "epoch", "y": {"results/{dataset}/final/history.csv": "loss"}},
}


def _fill_plot(value: Any, name: str) -> Any:
    if isinstance(value, str):
        return value.format(dataset=name)
    if isinstance(value, dict):
        return {_fill_plot(k, name): _fill_plot(v, name) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill_plot(v, name) for v in value]
    return value


def dataset_plots(params: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Top-level dvc.yaml plot definitions for every dataset the final step runs on."""
    final = get_step("final")
    return [{title.format(dataset=name): _fill_plot(definition, name)}
            for name in step_datasets(final, params)
            for title, definition in {**CURVES,
                                      **TASKS[params["datasets"][name]["task"]].dvc_plots}.items()]


#: the project folder this package was loaded from (its src/ holds the package)
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def step_code(step: Step, root: str | Path = PROJECT_ROOT) -> list[str]:
    """Every file whose change can change the step's outputs: the core (schema, common
    rules), the step's own rules, scripts and data files, every library module those import,
    transitively (read from the source by `dlworkflow.imports`), and the helpers
    rules/common.smk imports itself (they make the targets and the params scripts get; what
    they import for validation only accepts or refuses params, so it is not a dep: editing a
    modality must not prepare the demo data again)."""
    from dlworkflow.imports import files_needed

    root = Path(root)
    modules = files_needed(step.code, root, root / "src", shallow=CORE_CODE[1:2])
    return list(dict.fromkeys([*CORE_CODE, *step.code, *modules]))


def get_step(name: str) -> Step:
    """Return the step called `name`."""
    for step in STEPS:
        if step.name == name:
            return step
    raise KeyError(f"unknown step {name!r}; steps: {', '.join(s.name for s in STEPS)}")


def extracts_features(name: str, params: Mapping[str, Any]) -> bool:
    """Whether the features step runs for dataset `name`. A named `features.extractor`
    embeds every set whose modality it takes and whose tensors are pictures (not an audio
    set kept as waveforms, whose baselines and networks then read the tensors, as a text
    set's do); `auto` the sets whose modality may train its transfer network on them
    (`Modality.embeds_under_auto`: images large enough for image_transfer, under
    `train.architecture` auto or image_transfer; whether auto's weights are at hand is
    decided when it runs, rule choose_extractor)."""
    from dlworkflow.config import dataset_section
    from dlworkflow.modalities import get_modality_class
    from dlworkflow.models.extractors import get_extractor

    extractor = (params.get("features") or {}).get("extractor")
    dataset = params["datasets"][name]
    modality = get_modality_class(dataset["modality"])
    tensors = dataset_section(params, name, "tensors").get(dataset["modality"]) or {}
    if extractor == "auto":
        return modality.embeds_under_auto(dataset["task"], dataset_section(params, name, "train"),
                                          tensors)
    if not extractor or dataset["modality"] not in get_extractor(extractor).modalities:
        return False
    return modality.stores_pictures(tensors)


DATASET_FILTERS = {
    "all": lambda name, params: True,
    "demo": lambda name, params: bool(params["datasets"][name].get("demo")),
    "features": extracts_features,
}


def step_datasets(step: Step, params: Mapping[str, Any]) -> list[str]:
    """Names of the datasets the step runs on."""
    keep = DATASET_FILTERS[step.datasets]
    return [n for n in params["datasets"] if keep(n, params)]


def _fill(template: str, name: str, dataset: Mapping[str, Any]) -> str:
    return template.format(dataset=name, root=dataset["root"].rstrip("/"))


def _expand(templates: tuple[str, ...], step: Step, params: Mapping[str, Any]) -> list[str]:
    return [_fill(t, name, params["datasets"][name])
            for name in step_datasets(step, params) for t in templates]


def step_outputs(step: Step, params: Mapping[str, Any], metrics: bool = True,
                 for_dvc: bool = False) -> list[str]:
    """Every file (Snakemake targets) or folder (DVC outs) the step produces, over its datasets."""
    outputs = step.dvc_outs if for_dvc and step.dvc_outs else step.outputs
    return _expand(outputs + (step.metrics if metrics else ()), step, params)


def step_metrics(step: Step, params: Mapping[str, Any]) -> list[str]:
    """The step's metrics files, over its datasets."""
    return _expand(step.metrics, step, params)


def step_params(step: Step, params: Mapping[str, Any]) -> list[str]:
    """The params.yaml keys the step reads, expanded over its datasets."""
    keys: list[str] = []
    for template in step.params:
        names = step_datasets(step, params) if "{dataset}" in template else [None]
        for name in names:
            key = template.format(dataset=name) if name else template
            if key not in keys:
                keys.append(key)
    return keys


#: what a key of `Modality.named_files` holds when it names no file
NOT_FILES = frozenset({"imagenet", "download", "none"})


def named_files(params: Mapping[str, Any], name: str, sections: tuple[str, ...],
                folders: bool = True) -> list[str]:
    """The local files and folders that dataset `name`'s settings in `sections` name for its
    modality's networks (pretrained weights, word vectors), those that exist, as written
    (relative to the project). A step that reads one depends on it: replacing it reruns the
    step, where a param that names it is unchanged. `folders=False` lists a folder's files
    instead (Snakemake sees a folder change only when an entry comes or goes). A name that
    does not exist is the job's to report (or `auto`'s to pass over), naming its key."""
    from dlworkflow.config import dataset_section
    from dlworkflow.modalities import get_modality_class

    dataset = params["datasets"][name]
    named = list(get_modality_class(dataset["modality"]).named_files)
    extractor = (params.get("features") or {}).get("extractor")
    if extractor != "auto" and extracts_features(name, params):  # auto: train.transfer's
        named.append(("features", "weights"))
    found: list[str] = []
    for section, *keys in named:
        if section not in sections:
            continue
        value: Any = dataset_section(params, name, section)
        for key in keys:
            value = value.get(key) if isinstance(value, Mapping) else None
        if not isinstance(value, str) or value.lower() in NOT_FILES:
            continue
        path = Path(value)
        if path.is_file() or (folders and path.is_dir()):
            found.append(value)
        elif path.is_dir():
            found.extend(str(f) for f in sorted(path.rglob("*")) if f.is_file())
    return list(dict.fromkeys(found))


def step_files(step: Step, params: Mapping[str, Any]) -> list[str]:
    """The named files (`named_files`) of the step over its datasets: deps of its DVC stage."""
    return list(dict.fromkeys(f for name in step_datasets(step, params)
                              for f in named_files(params, name, step.files)))


def all_targets(params: Mapping[str, Any]) -> list[str]:
    """What `rule all` asks for: every step's outputs for every dataset."""
    return [target for step in STEPS for target in step_outputs(step, params)]


#: how many GPUs the network rules may count on, when set; otherwise `visible_gpus` looks
GPUS_ENV = "DLWORKFLOW_GPUS"


def encodes_texts(name: str, params: Mapping[str, Any]) -> bool:
    """Whether the dataset's sentence vectors are encoded once before its folds (rule
    encode_texts): its modality says so for its task and train section."""
    return _modality_says("encodes_once", name, params)


def decides_network(name: str, params: Mapping[str, Any]) -> bool:
    """Whether `auto`'s network for the dataset is chosen once before its folds (rule
    choose_network), because the choice depends on the weights this machine has: under
    `train.architecture: auto`, where its modality says so for its task and train section."""
    from dlworkflow.config import dataset_section

    return (dataset_section(params, name, "train").get("architecture", "auto") == "auto"
            and _modality_says("decides_once", name, params))


def networks_beside(name: str, params: Mapping[str, Any], network: str | Path) -> dict[str, str]:
    """The networks dataset `name`'s folds train beside `auto`'s choice (rules
    train_scratch_fold and train_fitted_fold), so that cross-validation chooses among them,
    as rule choose_network's decision file `network` lists them (`Modality.recorded_beside`):
    {folder under nn/: name}; empty where they train that one alone."""
    import json

    from dlworkflow.config import dataset_section
    from dlworkflow.modalities import get_modality_class

    dataset = params["datasets"][name]
    return get_modality_class(dataset["modality"]).recorded_beside(
        dataset["task"], json.loads(Path(network).read_text()),
        dataset_section(params, name, "train"))


def _modality_says(hook: str, name: str, params: Mapping[str, Any]) -> bool:
    from dlworkflow.config import dataset_section
    from dlworkflow.modalities import get_modality_class

    dataset = params["datasets"][name]
    return getattr(get_modality_class(dataset["modality"]), hook)(
        dataset["task"], dataset_section(params, name, "train"))


def visible_gpus(environ: Mapping[str, str] | None = None, dev: str | Path = "/dev") -> int:
    """The GPUs this machine shows, without importing TensorFlow (Snakemake asks when it
    parses the workflow): `DLWORKFLOW_GPUS` when set, else the NVIDIA device files `/dev/nvidia<N>`
    (the driver makes one per GPU), as many as `CUDA_VISIBLE_DEVICES` lists when it is set.

    The network rules ask for a `gpu` slot, and two threads, only when there is a GPU: on a
    CPU machine a slot would make `--resources gpu=1` train one fold at a time, and one
    thread per fold with folds side by side uses the cores better than two threads per fold
    (measured in docs/BENCHMARKS.md). A cluster whose submit host has no GPU sets the slot
    in its profile (`set-resources`, as profiles/slurm does).
    """
    environ = os.environ if environ is None else environ
    if environ.get(GPUS_ENV, "").strip():
        return max(0, int(environ[GPUS_ENV]))
    devices = sum(1 for path in Path(dev).glob("nvidia*") if path.name[6:].isdigit())
    chosen = environ.get("CUDA_VISIBLE_DEVICES")
    if chosen is None:
        return devices
    listed = [part for part in chosen.split(",") if part.strip() and part.strip() != "-1"]
    return min(devices, len(listed))
