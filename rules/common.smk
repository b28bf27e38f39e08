# Validation of params.yaml and every input function; no rules here.
import os
import re
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

# The library lives in src/; scripts run in child processes, so they get it via PYTHONPATH.
_SRC = str(Path(workflow.basedir) / "src")
if _SRC not in sys.path:
    sys.path.insert(0, _SRC)
os.environ.setdefault(
    "TF_CPP_MIN_LOG_LEVEL", "1"
)  # TensorFlow's C++ INFO lines are noise
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (_SRC, os.environ.get("PYTHONPATH")) if p
)

from dlworkflow.config import (
    dataset_section,
    split_settings,
    validate_params,
)  # noqa: E402
from dlworkflow.errors import ConfigError  # noqa: E402
from dlworkflow.layouts import walk_files  # noqa: E402
from dlworkflow.shardfile import plan_folds, shard_names  # noqa: E402
from dlworkflow.workflow import (
    all_targets,
    decides_network,
    encodes_texts,
    extracts_features,
    named_files,
    networks_beside,
    visible_gpus,
)  # noqa: E402

try:
    PARAMS = validate_params(config, base_dir=".")
except ConfigError as error:
    raise WorkflowError(str(error)) from None

DATASETS = PARAMS["datasets"]
# Network rules (train_fold, final_train, extract_features) ask for a gpu slot and two
# threads when this machine shows a GPU; on a CPU they take one thread and no slot, so
# folds train side by side (dlworkflow.workflow.visible_gpus says why).
GPU_SLOT = 1 if visible_gpus() else 0
NETWORK_THREADS = 2 if GPU_SLOT else 1
# The order jobs start in. Snakemake starts the ready jobs with the largest summed priority
# that fit the free cores: without priorities the folds of the datasets first ready went
# before the other datasets' intake, whose data steps then ran one after another on a
# half-idle machine. Data steps go first, so every dataset's folds are ready early; a
# dataset's summaries and final steps go before further folds, so its final chain runs
# beside other datasets' folds instead of after all of them. Folds (get_fold_priority) come
# next, the datasets listed first first: datasets then finish one after another, and the
# last one's final steps are the only ones left running at the end; exploring the data
# (eda, which nothing waits for) fills whatever core is idle.
PREPARE_PRIORITY = 20
FINAL_PRIORITY = 10
# Intake probes items in up to four processes, but takes at most half the cores: a job that
# needs every core starts only once the machine drains, and priorities cannot help it (on 2
# cores two one-core jobs outweigh it; a dataset's intake waited for every fold of the
# datasets started before it). With no --cores (a cluster run), each job has its own node.
INTAKE_THREADS = max(1, min(4, (workflow.resource_settings.cores or 8) // 2))
DEMO_DATASETS = sorted(name for name, ds in DATASETS.items() if ds.get("demo"))


def _alternatives(names):
    """A wildcard regex matching exactly these names (or nothing when empty)."""
    return "|".join(re.escape(n) for n in names) or "(?!)"


wildcard_constraints:
    dataset=_alternatives(DATASETS),
    demo_dataset=_alternatives(DEMO_DATASETS),


def get_final_output():
    """Every step's outputs for every dataset (the step table in dlworkflow.workflow)."""
    return all_targets(PARAMS)


def get_dataset(wildcards):
    """The resolved params.yaml entry of the dataset (defaults filled)."""
    return DATASETS[wildcards.dataset]


def get_demo_source(wildcards):
    """The public source a demo dataset is prepared from."""
    return DATASETS[wildcards.demo_dataset]["demo"]


def get_fold_priority(wildcards):
    """Between 0 and 1, highest for the dataset listed first in params.yaml (see
    PREPARE_PRIORITY)."""
    return 1 - list(DATASETS).index(wildcards.dataset) / len(DATASETS)


def get_raw_root(wildcards):
    """The dataset's raw folder (made by demo_data for demo datasets)."""
    return DATASETS[wildcards.dataset]["root"]


def get_raw_fingerprint(wildcards):
    """Count, size and newest mtime of the raw files, so intake reruns when data changes.

    Demo folders are tracked through the demo_data rule's output instead.
    """
    dataset = DATASETS[wildcards.dataset]
    if dataset.get("demo"):
        return "demo"
    count = size = newest = 0
    for _, real, _ in walk_files(Path(dataset["root"])):
        if real is not None:
            stat = real.stat()
            count, size, newest = (
                count + 1,
                size + stat.st_size,
                max(newest, stat.st_mtime_ns),
            )
    return f"{count} files, {size} bytes, newest {newest}"


def get_task(wildcards):
    """The dataset's task (classification, regression, forecasting)."""
    return DATASETS[wildcards.dataset]["task"]


def get_split_settings(wildcards):
    """The top-level split section updated by the dataset's own split: keys."""
    return split_settings(PARAMS, wildcards.dataset)


def get_intake_settings(wildcards):
    """The intake section; a text dataset's intake also learns tensors.text.max_characters
    (the inventory notes a text longer than the networks read)."""
    settings = dict(PARAMS["intake"])
    if DATASETS[wildcards.dataset]["modality"] == "text":
        tensors = dataset_section(PARAMS, wildcards.dataset, "tensors")
        settings["text"] = {
            **settings.get("text", {}),
            "max_characters": tensors["text"]["max_characters"],
        }
    if DATASETS[wildcards.dataset]["task"] == "forecasting":
        # a series too short for a test window, one validation window and training is set
        # aside at intake with its reason (ForecastingTask.set_aside)
        split = split_settings(PARAMS, wildcards.dataset)
        tensors = dataset_section(PARAMS, wildcards.dataset, "tensors")
        settings["task"] = {
            **{k: split.get(k) for k in ("horizon", "gap", "test_start")},
            "lookback": tensors["timeseries"]["lookback"],
        }
    return settings


def get_tensor_settings(wildcards):
    """The tensors section with the dataset's own tensors: keys merged in."""
    return dataset_section(PARAMS, wildcards.dataset, "tensors")


def get_trainval_shards(wildcards):
    """The trainval shard files of the dataset's plan (known once the checkpoint ran)."""
    plan = checkpoints.tensor_plan.get(dataset=wildcards.dataset).output.plan
    return [
        f"results/{wildcards.dataset}/tensors/{shard}.npz"
        for shard in shard_names(plan, "trainval")
    ]


def get_trainval_features(wildcards):
    """The embedding file of every trainval shard of the dataset."""
    return [
        path.replace("/tensors/", "/features/")
        for path in get_trainval_shards(wildcards)
    ]


def get_baseline_settings(wildcards):
    """The baseline section with the dataset's own baseline: keys merged in."""
    return dataset_section(PARAMS, wildcards.dataset, "baseline")


def get_train_settings(wildcards):
    """The train section with the dataset's own train: keys merged in."""
    return dataset_section(PARAMS, wildcards.dataset, "train")


def get_transfer_settings(wildcards):
    """The train keys that decide whether and with what image_transfer's backbone embeds
    (rule choose_extractor): a change to another train key does not embed again."""
    train = get_train_settings(wildcards)
    return {key: train[key] for key in ("architecture", "transfer") if key in train}


def get_augment_settings(wildcards):
    """The augment section with the dataset's own augment: keys merged in."""
    return dataset_section(PARAMS, wildcards.dataset, "augment")


def get_features_index_if_extracted(wildcards):
    """The features index when an extractor embeds this dataset, else nothing."""
    if extracts_features(wildcards.dataset, PARAMS):
        return f"results/{wildcards.dataset}/features/index.parquet"
    return []


def get_extractor_choice_if_auto(wildcards):
    """The features step's decision where `features.extractor: auto` embeds this dataset:
    it decided auto's network too (rule choose_extractor), else nothing."""
    if (
        extracts_features(wildcards.dataset, PARAMS)
        and PARAMS["features"]["extractor"] == "auto"
    ):
        return f"results/{wildcards.dataset}/features/extractor.json"
    return []


def get_features_settings(wildcards):
    """The features section for a dataset the extractor embeds, else nothing: a change to it
    reruns the jobs that read embeddings, not a text or series set's."""
    if extracts_features(wildcards.dataset, PARAMS):
        return PARAMS["features"]
    return {}


def get_named_train_files(wildcards):
    """Files the dataset's train (and features) settings name for its networks
    (pretrained weights, word vectors): inputs, so that a new one reruns their jobs."""
    return named_files(PARAMS, wildcards.dataset, ("train", "features"), folders=False)


def get_named_features_files(wildcards):
    """The weights file the features step embeds with, when it is one (`features.weights`,
    or under `auto` `train.transfer.weights`), as get_named_train_files."""
    return named_files(PARAMS, wildcards.dataset, ("features", "train"), folders=False)


def get_network_if_decided(wildcards):
    """The network `auto` chose once for the dataset (rule choose_network) where that choice
    depends on the weights this machine has, else nothing (the folds decide)."""
    if decides_network(wildcards.dataset, PARAMS):
        return f"results/{wildcards.dataset}/nn/network.json"
    return []


def get_text_vectors_if_encoded(wildcards):
    """The trainval texts' sentence vectors when the dataset's network may read them (rule
    encode_texts), else nothing."""
    if encodes_texts(wildcards.dataset, PARAMS):
        return f"results/{wildcards.dataset}/nn/vectors.npz"
    return []


def _fold_files(wildcards, kind, name):
    folds = split_settings(PARAMS, wildcards.dataset)["folds"]
    if DATASETS[wildcards.dataset]["task"] == "forecasting":
        # short series make fewer folds (ForecastingTask's split): the plan knows how many
        plan = checkpoints.tensor_plan.get(dataset=wildcards.dataset).output.plan
        folds = plan_folds(plan)
    return [f"results/{wildcards.dataset}/{kind}/fold-{k}/{name}" for k in range(folds)]


def get_baseline_fold_metrics(wildcards):
    """metrics.json of every baseline fold."""
    return _fold_files(wildcards, "baseline", "metrics.json")


def get_baseline_fold_predictions(wildcards):
    """predictions.parquet of every baseline fold."""
    return _fold_files(wildcards, "baseline", "predictions.parquet")


def get_nn_fold_metrics(wildcards):
    """metrics.json of every network fold."""
    return _fold_files(wildcards, "nn", "metrics.json")


def get_nn_fold_predictions(wildcards):
    """predictions.parquet of every network fold."""
    return _fold_files(wildcards, "nn", "predictions.parquet")


def get_fold_dir(wildcards):
    """The folder a fold's network and its logs are written to."""
    return f"results/{wildcards.dataset}/nn/fold-{wildcards.fold}"


def beside_fold_dir(folder):
    """The params function of the folder of a fold's network trained beside auto's choice,
    `nn/<folder>/fold-<k>` (`scratch`: from scratch beside a transfer network; `fitted`: auto's
    choice with its linear part fitted, wide_fit fitted)."""
    return (
        lambda wildcards: f"results/{wildcards.dataset}/nn/{folder}/fold-{wildcards.fold}"
    )


def _beside_fold_files(wildcards, name):
    """`name` of every fold of every network the folds train beside auto's choice (rules
    train_scratch_fold and train_fitted_fold), as rule choose_network's decision lists them;
    nothing where it lists none or the folds decide themselves."""
    if not decides_network(wildcards.dataset, PARAMS):
        return []
    network = checkpoints.choose_network.get(dataset=wildcards.dataset).output.network
    return [
        path
        for folder in networks_beside(wildcards.dataset, PARAMS, network)
        for path in _fold_files(wildcards, f"nn/{folder}", name)
    ]


def get_beside_fold_metrics(wildcards):
    """metrics.json of every fold of the networks beside (see _beside_fold_files)."""
    return _beside_fold_files(wildcards, "metrics.json")


def get_beside_fold_predictions(wildcards):
    """predictions.parquet of every fold of the networks beside."""
    return _beside_fold_files(wildcards, "predictions.parquet")


def get_beside_fold_histories(wildcards):
    """history.csv of every fold of the networks beside."""
    return _beside_fold_files(wildcards, "history.csv")


def get_beside_fold_models(wildcards):
    """model.keras of every fold of the networks beside."""
    return _beside_fold_files(wildcards, "model.keras")


def get_test_shards(wildcards):
    """The test shard files of the dataset's plan, written under final/ (only final rules
    read them)."""
    plan = checkpoints.tensor_plan.get(dataset=wildcards.dataset).output.plan
    return [
        f"results/{wildcards.dataset}/final/tensors/{shard}.npz"
        for shard in shard_names(plan, "test")
    ]


def get_final_settings(wildcards):
    """The final section with the dataset's own final: keys merged in."""
    return dataset_section(PARAMS, wildcards.dataset, "final")


def get_nn_fold_histories(wildcards):
    """history.csv of every network fold (best epochs and learning-rate schedules)."""
    return _fold_files(wildcards, "nn", "history.csv")


def get_nn_fold_models(wildcards):
    """model.keras of every network fold (the final network may average them)."""
    return _fold_files(wildcards, "nn", "model.keras")


def get_final_baseline_export(wildcards):
    """The exported baseline (final_baseline) when it can take raw inputs, else nothing."""
    if get_final_scores_baseline(wildcards):
        return f"results/{wildcards.dataset}/final/baseline.skops"
    return []


def get_final_scores_baseline(wildcards):
    """Whether the best baseline is refitted, exported and scored by final_test too (one
    on cached embeddings with the backbone that embeds its inputs)."""
    return bool(dataset_section(PARAMS, wildcards.dataset, "final")["baseline"])
