"""Step 5: train a network on one fold's training rows, validate on the fold's validation rows.

One Snakemake job per fold (`gpu=1`, TF threads from the rule). Preprocessing layers are
adapted on the fold's training rows and saved inside the model, so `nn/fold-<k>/model.keras`
takes what the shards hold and `dlworkflow.predict` takes raw files. A killed job resumes
from its last finished epoch (`BackupAndRestore`); DVCLive logs every epoch for `dvc plots`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dlworkflow.data import IN_MEMORY_BYTES, encode_targets, load_arrays, make_dataset, resampled, select
from dlworkflow.errors import ConfigError
from dlworkflow.evaluate import prediction_frame, score, write_fold_metrics
from dlworkflow.modalities import create_modality

log = logging.getLogger(__name__)


#: split the CPU into this many logical devices (a stand-in for several GPUs: it lets the
#: multi-device path run and be tested on a machine without GPUs)
CPU_DEVICES_ENV = "DLWORKFLOW_CPU_DEVICES"


def configure_tensorflow(threads: int, seed: int, deterministic: bool = True) -> list:
    """Threads from the rule, seeded weights and shuffles, op determinism, and mixed precision
    when a GPU is visible. Returns the visible GPUs."""
    import keras
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(max(1, threads))
        tf.config.threading.set_inter_op_parallelism_threads(max(1, min(2, threads)))
        split = int(os.environ.get(CPU_DEVICES_ENV, "0") or 0)
        if split > 1:
            cpu = tf.config.list_physical_devices("CPU")[0]
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(split)])
    except RuntimeError:  # already initialised in this process (tests): keep its threads
        pass
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    gpus = tf.config.list_physical_devices("GPU")
    keras.mixed_precision.set_global_policy("mixed_float16" if gpus else "float32")
    return gpus


def distribution(settings: Mapping[str, Any]) -> tuple[Any, int]:
    """(strategy, replicas): `tf.distribute.MirroredStrategy` over every visible GPU when there
    are several (or over the CPU's logical devices when DLWORKFLOW_CPU_DEVICES splits it),
    else the default strategy and 1. `train.distribute: none` keeps one device.

    Each replica gets `train.batch_size` rows per step, so the global batch is batch_size x
    replicas; the learning rate is left as set (scale it yourself if you want to)."""
    import tensorflow as tf

    if settings.get("distribute", "auto") == "none":
        return tf.distribute.get_strategy(), 1
    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    if len(devices) < 2:
        return tf.distribute.get_strategy(), 1
    strategy = tf.distribute.MirroredStrategy([d.name for d in devices])
    return strategy, int(strategy.num_replicas_in_sync)


def architecture_for(modality: Any, task: str, settings: Mapping[str, Any]) -> str:
    """`train.architecture`, or the modality's first network for the task when `auto`."""
    available = modality.networks.get(task, ())
    name = settings.get("architecture", "auto")
    if name == "auto":
        if not available:
            raise ConfigError(f"no network is registered for {modality.name} {task}")
        return available[0]
    if name not in available:
        raise ConfigError(f"train.architecture: {name!r} does not fit {modality.name} {task}; "
                          f"choose one of: auto, {', '.join(available)}")
    return name


def class_weights(settings: Mapping[str, Any], labels: pd.Series,
                  classes: tuple[str, ...]) -> dict[int, float] | None:
    """Keras class_weight from `train.class_weight`: none, balanced, or {class: weight}."""
    choice = settings.get("class_weight", "none")
    if not classes or choice in (None, "none"):
        return None
    if choice == "balanced":
        counts = labels.astype(str).value_counts()
        return {i: float(len(labels) / (len(classes) * counts.get(c, 1))) for i, c in enumerate(classes)}
    unknown = sorted(set(map(str, choice)) - set(classes))
    if unknown:
        raise ConfigError(f"train.class_weight: {', '.join(unknown)} not among the classes "
                          f"({', '.join(classes)})")
    return {i: float(choice.get(c, 1.0)) for i, c in enumerate(classes)}


def sequence_length(settings: Mapping[str, Any], stats_path: str | None) -> int:
    """`train.text.sequence_length`, or the 95th percentile of words from tensors/stats.json."""
    value = (settings.get("text") or {}).get("sequence_length", "auto")
    if value != "auto":
        return int(value)
    stats = json.loads(Path(stats_path).read_text()) if stats_path else {}
    return int(np.clip(stats.get("suggested_sequence_length", 64), 8, 512))


def _live(directory: str, resume: bool):
    """A DVCLive logger that only writes files (experiments are DVC's job, not training's).

    DVCLive 3.49 fails in a git repository without commits (`git init` then `dvc repro`);
    there it logs without looking at the repository.
    """
    import dvclive.live
    from dvclive import Live
    from scmrepo.exceptions import SCMError

    try:
        return Live(directory, resume=resume, save_dvc_exp=False, dvcyaml=False)
    except SCMError:
        lookup = dvclive.live.get_dvc_repo
        dvclive.live.get_dvc_repo = lambda: None
        try:
            return Live(directory, resume=resume, save_dvc_exp=False, dvcyaml=False)
        finally:
            dvclive.live.get_dvc_repo = lookup


def _callbacks(settings: Mapping[str, Any], out_dir: Path, backup: Path, phase: str,
               schedule: list[float] | None = None) -> list:
    """Early stopping and learning-rate reduction on the validation loss, or, without a
    validation part (the final model), a replayed learning-rate `schedule`."""
    import keras
    from dvclive.keras import DVCLiveCallback

    patience = int(settings.get("patience", 6))
    live = _live(str(out_dir / "dvclive"), resume=(backup / phase).exists())
    if schedule is None:
        steering = [
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience,
                                          restore_best_weights=True),
            keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5,
                                              patience=max(1, patience // 3), min_lr=1e-6)]
    else:
        rates = [float(rate) for rate in schedule]
        steering = [keras.callbacks.LearningRateScheduler(
            lambda epoch, rate: rates[min(epoch, len(rates) - 1)])]
    return [
        keras.callbacks.BackupAndRestore(str(backup / phase)),
        *steering,
        keras.callbacks.CSVLogger(str(out_dir / f"history-{phase}.csv"), append=True),
        DVCLiveCallback(live=live),
    ]


def _loss(task: str):
    import keras

    if task == "classification":
        return keras.losses.SparseCategoricalCrossentropy(), ["accuracy"]
    return keras.losses.MeanSquaredError(), ["mae"]


class FoldData:
    """The fold's training stream, validation arrays, and what the builders need to know.

    `fold=None` is the final model's data: every trainval row trains (the sample of
    `intake.sample` does not apply), and there is no validation part (`valid_set` is None).
    """

    def __init__(self, task: str, tensors_dir: str, fold: int | None, gap: int,
                 batch_size: int, seed: int, resample: str = "none") -> None:
        import tensorflow as tf

        self.task = task
        self.batch_size = batch_size
        self.resample = resample if task == "classification" else "none"
        part = "train" if fold is not None else "trainval"
        index = pd.read_parquet(Path(tensors_dir) / "index.parquet")
        self.train_rows = select(index, fold, part, gap)
        shards = sorted(self.train_rows["shard"].unique())
        size = sum((Path(tensors_dir) / f"{s}.npz").stat().st_size for s in shards)
        self.in_memory = task == "forecasting" or size <= IN_MEMORY_BYTES
        self.train_arrays = load_arrays(tensors_dir, fold, part, gap) if self.in_memory else None
        if fold is not None:
            self.valid = load_arrays(tensors_dir, fold, "valid", gap)
        else:  # no validation part: keep the first training shard's rows as a shape example
            self.valid = self.train_arrays or load_arrays(tensors_dir, None, "trainval", gap,
                                                          shards=shards[:1])
        self.classes = self.valid["classes"]
        if self.train_arrays is not None:
            self.train = self._from_arrays(self.train_arrays, batch_size, seed)
        else:
            self.train = make_dataset(tensors_dir, fold, part, batch_size, shuffle=True,
                                      seed=seed, gap=gap, in_memory=False)
            self.train = self.train.map(lambda x, y: (_as_float(x), y))
            if self.resample != "none":
                labels = encode_targets(self.train_rows, self.classes)
                self.train = resampled(self.train.unbatch(), labels, len(self.classes),
                                       self.resample, seed).batch(batch_size)
        self.valid_inputs = self.inputs(self.valid)
        self.valid_set = None if fold is None else tf.data.Dataset.from_tensor_slices(
            (self.valid_inputs, self.valid["y"])).batch(batch_size)

    @staticmethod
    def inputs(arrays: Mapping[str, Any]) -> Any:
        x = arrays["x"]
        x = x if x.dtype.kind in "U" or x.dtype == np.uint8 else x.astype(np.float32)
        if arrays.get("x_future") is not None and arrays["x_future"].shape[-1]:
            return {"past": x, "future": arrays["x_future"].astype(np.float32)}
        return x

    def _from_arrays(self, arrays: Mapping[str, Any], batch_size: int, seed: int):
        import tensorflow as tf

        dataset = tf.data.Dataset.from_tensor_slices((self.inputs(arrays), arrays["y"]))
        if self.resample != "none":  # class-balanced epochs, fold-train rows only
            dataset = resampled(dataset, arrays["y"], len(self.classes), self.resample, seed)
        else:
            dataset = dataset.shuffle(len(arrays["ids"]), seed=seed,
                                      reshuffle_each_iteration=True)
        return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)

    def adapt_x(self) -> Any:
        """Training inputs to adapt preprocessing layers on (arrays, or the x of the stream)."""
        if self.train_arrays is not None:
            inputs = self.inputs(self.train_arrays)
            return inputs["past"] if isinstance(inputs, dict) else inputs
        return self.train.map(lambda x, y: x)

    def target_stats(self, task: str) -> tuple[float, float]:
        """(offset, scale) that map a unit-variance output to the fold's targets (train rows)."""
        if task == "classification":
            return 0.0, 1.0
        if task == "forecasting":
            arrays = self.train_arrays
            change = arrays["y"] - arrays["x"][:, -1:, 0]
            return 0.0, float(np.std(change) or 1.0)
        values = self.train_rows["label"].astype(float)
        return float(values.mean()), float(values.std(ddof=0) or 1.0)


def _as_float(x):
    import tensorflow as tf

    return tf.cast(x, tf.float32) if x.dtype == tf.float16 else x


def _spec(dataset: Mapping[str, Any], modality: Any, settings: Mapping[str, Any],
          augment: Mapping[str, Any], data: FoldData, seed: int, stats_path: str | None):
    from dlworkflow.models.networks import NetworkSpec

    task = dataset["task"]
    x = data.valid["x"]
    layer_settings = dict(settings.get("text") or {})
    if dataset["modality"] == "text":
        layer_settings["sequence_length"] = sequence_length(settings, stats_path)
    preprocessing = modality.preprocessing(data.adapt_x(), layer_settings)
    offset, scale = data.target_stats(task)
    outputs = (len(data.classes) if task == "classification"
               else data.valid["y"].shape[1] if task == "forecasting" else 1)
    future = data.valid.get("x_future")
    return NetworkSpec(
        task=task, input_shape=tuple(x.shape[1:]),
        input_dtype="uint8" if x.dtype == np.uint8 else "float32", outputs=outputs,
        settings=settings, preprocessing=preprocessing,
        augmentation=modality.augmentation(augment.get(dataset["modality"]) or {}, seed),
        target_offset=offset, target_scale=scale,
        future_shape=tuple(future.shape[1:]) if future is not None else None, seed=seed)


def _fit(model, data: FoldData, settings: Mapping[str, Any], out_dir: Path, backup: Path,
         phase: str, learning_rate: float, epochs: int, weights: dict | None,
         schedule: list[float] | None = None):
    import keras

    loss, metrics = _loss(data.task)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss, metrics=metrics)
    history = model.fit(data.train, validation_data=data.valid_set, epochs=epochs,
                        class_weight=weights, verbose=2, shuffle=False,
                        callbacks=_callbacks(settings, out_dir, backup, phase, schedule))
    return history.history


def _unfreeze_last(model, count: int) -> int:
    """Make the last `count` non-BatchNormalization layers of the backbone trainable."""
    import keras

    from dlworkflow.models.networks import find_backbone

    backbone = find_backbone(model)
    backbone.trainable = True
    layers = [layer for layer in backbone.layers
              if not isinstance(layer, keras.layers.BatchNormalization)]
    for layer in backbone.layers:
        layer.trainable = False
    for layer in layers[-count:]:
        layer.trainable = True
    return len(layers[-count:])


def _head_on_embeddings(spec, features: Mapping[str, Any] | None, features_dir: str,
                        fold: int | None, gap: int, batch_size: int, seed: int, out: Path,
                        backup: Path, task: str, settings: Mapping[str, Any], epochs: int,
                        schedule: list[float] | None):
    """Fit the transfer head on the fold's cached embeddings (fast: the backbone ran once in
    the features step), then build the full model: the same frozen backbone with that head,
    so the saved model still takes images."""
    from dataclasses import replace

    from dlworkflow.models.networks import build_network, embedding_head

    embedded = FoldData(task, features_dir, fold, gap, batch_size, seed + (fold or 0),
                        str(settings.get("resample", "none")))
    head_spec = replace(spec, input_shape=tuple(embedded.valid["x"].shape[1:]),
                        input_dtype="float32", preprocessing=(), augmentation=())
    head = embedding_head(head_spec)
    weights = (class_weights(settings, embedded.train_rows["label"], embedded.classes)
               if task == "classification" else None)
    history = _fit(head, embedded, settings, out, backup, "train",
                   float(settings.get("learning_rate", 1e-3)), epochs, weights, schedule)
    transfer = {"backbone": (features or {}).get("extractor") or "mobilenet_v3_small",
                "weights": (features or {}).get("weights", "imagenet")}
    full = build_network("image_transfer", replace(spec, settings={**spec.settings,
                                                                   "transfer": transfer},
                                                   extra={**spec.extra, "head": head}))
    return full, history


@dataclass
class Trained:
    """A trained network and how it came about."""

    model: Any
    history: dict[str, list]
    spec: Any
    architecture: str
    data: FoldData
    devices: list
    replicas: int = 1


def _train(dataset: Mapping[str, Any], settings: Mapping[str, Any], augment: Mapping[str, Any],
           tensors_dir: str, fold: int | None, seed: int, gap: int, threads: int, out: Path,
           stats_path: str | None, features_dir: str | None,
           features: Mapping[str, Any] | None, epochs: int,
           schedule: list[float] | None = None) -> Trained:
    """Build the configured network, fit it (and fine-tune a transfer backbone), save
    `model.keras` into `out`. `fold=None` trains on every trainval row without validation,
    following `schedule` (one learning rate per epoch) instead of early stopping."""
    from dlworkflow.models.networks import build_network

    out.mkdir(parents=True, exist_ok=True)
    # outside nn/ and final/: neither Snakemake (failed job) nor DVC (stage rerun) deletes it
    backup = backup_dir(out)
    gpus = configure_tensorflow(threads, seed + (fold or 0),
                                bool(settings.get("deterministic", True)))
    task = dataset["task"]
    modality = create_modality(dataset["modality"], {}, dataset["layout"])
    architecture = architecture_for(modality, task, settings)
    strategy, replicas = distribution(settings)
    batch_size = int(settings.get("batch_size", 32)) * replicas  # per replica x replicas
    data = FoldData(task, tensors_dir, fold, gap, batch_size, seed + (fold or 0),
                    str(settings.get("resample", "none")))
    if not len(data.train_rows) or not len(data.valid["ids"]):
        raise ValueError(f"fold {fold}: {len(data.train_rows)} training and "
                         f"{len(data.valid['ids'])} validation rows; every fold needs both")
    with strategy.scope():  # variables made here are mirrored on every replica
        spec = _spec(dataset, modality, settings, augment, data, seed + (fold or 0), stats_path)
        cached = bool(features_dir) and architecture == "image_transfer"
        if cached:  # train the head on the cached embeddings, then put the backbone in front
            model, history = _head_on_embeddings(spec, features, features_dir, fold, gap,
                                                 batch_size, seed, out, backup, task, settings,
                                                 epochs, schedule)
        else:
            model = build_network(architecture, spec)
        weights = (class_weights(settings, data.train_rows["label"], data.classes)
                   if task == "classification" else None)
        log.info("%s: %s, %d training and %d validation rows, %s, %s, %d parameters",
                 "final" if fold is None else f"fold {fold}", architecture, len(data.train_rows),
                 0 if fold is None else len(data.valid["ids"]),
                 "in RAM" if data.in_memory else "streamed", f"GPU x{len(gpus)}" if gpus else "CPU",
                 model.count_params())
        if replicas > 1:
            log.info("MirroredStrategy over %d devices: global batch %d", replicas, batch_size)
        if not cached:
            history = _fit(model, data, settings, out, backup, "train",
                           float(settings.get("learning_rate", 1e-3)), epochs, weights, schedule)
        if architecture == "image_transfer" and int(settings.get("fine_tune_layers", 0)) > 0:
            opened = _unfreeze_last(model, int(settings["fine_tune_layers"]))
            log.info("fine-tuning the last %d backbone layers", opened)
            tune_epochs = int(settings.get("fine_tune_epochs", 5))
            tune_rate = float(settings.get("fine_tune_learning_rate", 1e-5))
            tuned = _fit(model, data, settings, out, backup, "fine_tune", tune_rate, tune_epochs,
                         weights, None if schedule is None else [tune_rate] * tune_epochs)
            history = {k: history.get(k, []) + tuned.get(k, []) for k in set(history) | set(tuned)}
        model.save(out / "model.keras")
        shutil.rmtree(backup, ignore_errors=True)  # finished: a rerun starts from scratch
        if backup.parent.exists() and not any(backup.parent.iterdir()):
            backup.parent.rmdir()
        return Trained(model, history, spec, architecture, data, gpus, replicas)


def model_card(dataset: Mapping[str, Any], trained: Trained,
               tensor_settings: Mapping[str, Any] | None, **extra: Any) -> dict[str, Any]:
    """What `model.json` says: enough to decode raw inputs and read the outputs."""
    import keras

    return {"dataset": dataset.get("description", ""), "modality": dataset["modality"],
            "task": dataset["task"], "architecture": trained.architecture,
            "classes": list(trained.data.classes), "input_shape": list(trained.spec.input_shape),
            **extra, "layout": dict(dataset["layout"]),
            "tensors": dict((tensor_settings or {}).get(dataset["modality"]) or {}),
            "keras": keras.__version__}


def write_history(history: Mapping[str, list], path: Path) -> None:
    """Per-epoch losses, metrics and learning rate as CSV."""
    pd.DataFrame(history).assign(epoch=lambda f: np.arange(1, len(f) + 1)).to_csv(path,
                                                                                  index=False)


def backup_dir(out_dir: str | Path) -> Path:
    """Where a fold's BackupAndRestore state lives: results/<ds>/.backup/<kind>-<fold>."""
    out = Path(out_dir)
    return out.parent.parent / ".backup" / f"{out.parent.name}-{out.name}"


def train_fold(dataset: Mapping[str, Any], settings: Mapping[str, Any],
               augment: Mapping[str, Any], choice_path: str, tensors_dir: str, fold: int,
               seed: int, gap: int, threads: int, out_dir: str,
               stats_path: str | None = None,
               tensor_settings: Mapping[str, Any] | None = None,
               features_dir: str | None = None,
               features: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Train one fold; write model.keras, model.json, metrics.json, predictions.parquet and
    history.csv (plus dvclive/) into out_dir."""
    started = time.time()
    out = Path(out_dir)
    trained = _train(dataset, settings, augment, tensors_dir, fold, seed, gap, threads, out,
                     stats_path, features_dir, features, int(settings.get("epochs", 30)))
    model, history, data, architecture = (trained.model, trained.history, trained.data,
                                          trained.architecture)
    task = dataset["task"]
    choice = json.loads(Path(choice_path).read_text())
    prediction = np.asarray(model.predict(data.valid_set, verbose=0))
    valid = data.valid
    if task == "classification":
        classes = np.asarray(data.classes)
        y_true, y_pred, proba = classes[valid["y"]], classes[prediction.argmax(axis=1)], prediction
        metrics = score(choice, y_true, y_pred, proba, data.classes)
        frame = prediction_frame(valid["ids"], fold, architecture, y_true, y_pred, proba,
                                 data.classes)
    elif task == "forecasting":
        metrics = score(choice, valid["y"], prediction, history=valid["x"][:, :, 0])
        frame = prediction_frame(valid["ids"], fold, architecture, valid["y"], prediction)
    else:
        metrics = score(choice, valid["y"], prediction[:, 0])
        frame = prediction_frame(valid["ids"], fold, architecture, valid["y"], prediction[:, 0])
    losses = history.get("val_loss", [])
    best = int(np.argmin(losses)) + 1 if losses else 0
    details = {
        "metrics": metrics, "best_epoch": best, "epochs_run": len(losses),
        "train_loss_at_best": float(history["loss"][best - 1]) if best else None,
        "val_loss_at_best": float(losses[best - 1]) if best else None,
        "train_rows": len(data.train_rows), "valid_rows": len(valid["ids"]),
        "parameters": int(model.count_params()), "seconds": round(time.time() - started, 1),
        "device": "GPU" if trained.devices else "CPU", "replicas": trained.replicas,
        "global_batch_size": int(trained.data.batch_size),
    }
    write_fold_metrics(str(out / "metrics.json"), fold, {architecture: details})
    frame.to_parquet(out / "predictions.parquet", index=False)
    write_history(history, out / "history.csv")
    card = model_card(dataset, trained, tensor_settings, fold=fold, best_epoch=best)
    (out / "model.json").write_text(json.dumps(card, indent=2) + "\n")
    log.info("fold %d: %s", fold, ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    return details
