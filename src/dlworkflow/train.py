"""Step 5: train a network on one fold's training rows, validate on the fold's validation rows.

One Snakemake job per fold (`gpu=1`, TF threads from the rule). Preprocessing layers are
adapted on the fold's training rows and saved inside the model, so `nn/fold-<k>/model.keras`
takes what the shards hold and `dlworkflow.predict` takes raw files. A killed job resumes
from its last backup (`train.checkpoint_seconds`) and trains on as if it had never stopped:
the same weights, history and predictions, bit for bit, as an uninterrupted run (one device).
`history.csv` holds every epoch, for `dvc plots`.
The task gives the output layer, the loss, the target scale and the scoring; the modality
gives the preprocessing, the augmentation and the conversion of stored arrays to inputs.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dlworkflow.archives import save_keras
from dlworkflow.context import RunContext
from dlworkflow.data import (
    IN_MEMORY_BYTES,
    ROUND_ROWS,
    Part,
    RowSource,
    load_arrays,
    make_dataset,
    resampled,
    shard_bytes,
)
from dlworkflow.errors import ConfigError
from dlworkflow.evaluate import write_fold_metrics
from dlworkflow.heap import keep_freed_heap
from dlworkflow.modalities.base import network_name, split_network_name
from dlworkflow.models.extractors import embeddings_folder
from dlworkflow.provenance import environment
from dlworkflow.tfdata import untuned, untuned_batches

log = logging.getLogger(__name__)


#: split the CPU into this many logical devices (a stand-in for several GPUs: it lets the
#: multi-device path run and be tested on a machine without GPUs)
CPU_DEVICES_ENV = "DLWORKFLOW_CPU_DEVICES"


#: TensorFlow takes its global seed modulo this; the remainder 0 cannot train
#: (`configure_tensorflow`), and this minus one stands for it
TF_SEED_MODULUS = 2**31 - 1


def configure_tensorflow(threads: int, seed: int, deterministic: bool = True) -> list:
    """Threads from the rule, seeded weights and shuffles, op determinism, mixed precision
    when a GPU is visible, and freed heap kept for the next step (`heap`). Returns the
    visible GPUs."""
    import keras
    import tensorflow as tf

    keep_freed_heap()

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
    if seed % TF_SEED_MODULUS == 0:  # TensorFlow checks for a (0, 0) seed pair as Python
        # bools, and each epoch's shuffle seed is a tensor: `seed: 0` failed fold 0 and the final
        tf.random.set_seed(TF_SEED_MODULUS - 1)
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



def architecture_for(modality: Any, task: str, settings: Mapping[str, Any],
                     input_shape: tuple[int, ...] = (),
                     decided: tuple[str, str] | None = None) -> tuple[str, str]:
    """`train.architecture` and why: a named one as configured, or with `auto` the
    modality's choice (its first network for the task, or a pretrained one when the
    modality prefers transfer and the weights are at hand), or the choice made once for
    every fold and the final model (`decided`: a network and why, rule choose_network's)."""
    available = modality.networks.get(task, ())
    name = settings.get("architecture", "auto")
    if name == "auto":
        if not available:
            raise ConfigError(f"no network is registered for {modality.name} {task}")
        if decided is not None and decided[0] in available:
            return decided[0], f"{decided[1]} (decided once for every fold and the final model)"
        return modality.auto_network(task, settings, input_shape)
    if name not in available:
        raise ConfigError(f"train.architecture: {name!r} does not fit {modality.name} {task}; "
                          f"choose one of: auto, {', '.join(available)}")
    return name, "train.architecture names it"


def choose_network(ctx: RunContext, out: str | Path) -> tuple[str, str]:
    """Rule choose_network: the network `train.architecture: auto` takes for the dataset,
    and why, decided once for every fold and the final model where the choice depends on
    what this machine has (pretrained weights at hand, in Keras' cache or downloadable): a
    first use downloads them here, once, not in folds side by side, and a download that
    fails or weights that turn up halfway through a run cannot give the folds different
    networks. Where the features step decided under `features.extractor: auto` (its input
    `extractor`), its decision stands: the two cannot disagree. Writes {"architecture",
    "reason", "beside"} as JSON, `beside` being the networks the folds train beside it for
    cross-validation to choose among (`Modality.networks_beside`, {folder: name})."""
    from dlworkflow.models.extractors import extractor_choice

    shape = stored_shape(ctx)
    if ctx.paths("extractor"):
        choice = extractor_choice(Path(ctx.input("extractor")).parent)
        architecture, reason = choice["architecture"], choice["reason"]
        if choice["extractor"]:
            reason += (f"; its head trains on the embeddings the features step made once "
                       f"with the frozen backbone at {choice['side'] or 'its own'} px "
                       "(features.extractor: auto)")
    else:
        architecture, reason = architecture_for(ctx.modality, ctx.task.name,
                                                ctx.section("train"), shape)
    beside = ctx.modality.networks_beside(ctx.task.name, architecture, ctx.section("train"),
                                          shape)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps({"architecture": architecture, "reason": reason,
                                     "beside": beside}, indent=2) + "\n")
    log.info("the network is %s (%s)%s", architecture, reason,
             f"; the folds also train {', '.join(beside.values())}" if beside else "")
    return architecture, reason


def stored_shape(ctx: RunContext) -> tuple[int, ...]:
    """The stored items' one shape from the job's `stats` input, or () where they differ."""
    shapes = json.loads(Path(ctx.input("stats")).read_text()).get("shapes") or []
    return tuple(json.loads(shapes[0])) if len(shapes) == 1 else ()


def choose_extractor(ctx: RunContext, out: str | Path) -> dict[str, Any]:
    """Rule choose_extractor: the frozen base the features step embeds the dataset with,
    decided once for all its shards, written as JSON (`extractor_choice` reads it). A named
    `features.extractor` embeds with `features.weights`. `auto` embeds with
    image_transfer's own backbone and weights (`train.transfer`) where `train.architecture`
    trains image_transfer, deciding `auto`'s network here (rule choose_network then takes
    this decision), and with none where it trains from scratch (no weights at hand, images
    too small), saying why: the step then holds no embeddings and nothing reads them."""
    from dlworkflow.models.extractors import BACKBONE_SIDE, DEFAULT_BACKBONE

    features = ctx.section("features")
    name = features.get("extractor")
    choice: dict[str, Any] = {"side": int(features.get("side", BACKBONE_SIDE)),
                              "batch_size": int(features.get("batch_size", 64))}
    if name == "auto":
        train = ctx.section("train")
        transfer = train.get("transfer") or {}
        architecture, reason = architecture_for(ctx.modality, ctx.task.name, train,
                                                stored_shape(ctx))
        embeds = architecture == "image_transfer"
        choice.update(extractor=transfer.get("backbone", DEFAULT_BACKBONE) if embeds else None,
                      weights=str(transfer.get("weights", "imagenet")),
                      weights_key="train.transfer.weights", architecture=architecture,
                      reason=reason)
    else:
        choice.update(extractor=name, weights=str(features.get("weights", "imagenet")),
                      weights_key="features.weights", reason="features.extractor names it")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(choice, indent=2) + "\n")
    log.info("the features step embeds with %s (%s)", choice["extractor"] or "nothing",
             choice["reason"])
    return choice


def decided_network(ctx: RunContext) -> tuple[str, str] | None:
    """The network rule choose_network decided on for the dataset and why (its input
    `network`), or None where the folds decide themselves (no input: a named architecture,
    or a modality whose `auto` does not depend on the machine). Rules train_scratch_fold and
    train_fitted_fold (param `beside`: the folder) train a network the decision lists beside
    it (`Modality.networks_beside`); the final model (input `summary`) the folds' CV-best of
    them. The name may carry a variant (`image_transfer+fitted`, `split_network_name`)."""
    paths = ctx.paths("network")
    if not paths:
        return None
    choice = json.loads(Path(paths[0]).read_text())
    decided, reason = choice["architecture"], choice["reason"]
    folder = ctx.values.get("beside")
    if folder:
        beside = ctx.modality.recorded_beside(ctx.task.name, choice, ctx.section("train"))
        if folder not in beside:
            raise ConfigError(f"rule train_{folder}_fold: {ctx.modality.name} {ctx.task.name} "
                              f"under these train settings has no network {folder!r} to train "
                              f"beside {decided}")
        return beside[folder], (f"auto: trained beside {decided} (auto's choice, {reason}) "
                                f"as one of the {len(beside) + 1} networks cross-validation "
                                "chooses among")
    summaries = ctx.paths("summary")
    if summaries:
        summary = json.loads(Path(summaries[0]).read_text())
        chosen, best = summary.get("network_choice"), summary.get("best")
        if chosen:
            return best, (f"{reason}; {chosen}" if split_network_name(best)[0] == decided
                          else f"auto: trained from scratch: {chosen}")
    return decided, reason


def variant_context(ctx: RunContext, name: str) -> RunContext:
    """`ctx` with the train section the network `name` trains under: as configured, or with
    the setting its variant (`image_transfer+fitted`) changes."""
    variant = split_network_name(name)[1]
    if variant is None:
        return ctx
    train = ctx.modality.variant_settings(variant, ctx.section("train"))
    return ctx.with_values(sections={**ctx.sections, "train": train})


@dataclass(frozen=True)
class Schedule:
    """How one network trains: where it writes, for how long, and at what rates.

    `schedule` (one learning rate per epoch) replaces early stopping and the planned rates
    when there is no validation part (the final model replays a fold's)."""

    out: Path
    backup: Path
    epochs: int
    schedule: list[float] | None = None
    patience: int = 2

    def phase(self, epochs: int, rate: float, rates: Sequence[float] | None = None) -> Schedule:
        """The same run for a second phase (fine-tuning): a fold's stops early on its own
        planned rates from `rate`; a scheduled run (the final model) replays `rates` (the
        folds' second phase, `dlworkflow.final.final_phases`), else holds `rate`."""
        if self.schedule is None:
            return replace(self, epochs=epochs)
        planned = [float(r) for r in rates] if rates else [rate] * epochs
        return replace(self, epochs=len(planned), schedule=planned)


#: most epochs a pass over the training rows is cut into (`epoch_steps`), so the rates
#: warm up and decay, validation runs and early stopping acts within the step budget
EPOCH_SLICES = 10


def pass_slices(pass_steps: int, settings: Mapping[str, Any]) -> int:
    """Epochs a pass over the training rows is cut into: as few as keep each within a tenth
    of `train.max_steps`, at most `EPOCH_SLICES` (and at most the pass's steps). The
    learning rate is set per epoch, so one long epoch trains at one rate: an M4 Hourly fold
    (5,161 steps a pass) as one epoch trained at the peak rate throughout, validated once,
    MASE 1.09, where ten epochs of 517 with the rate decaying gave 0.87; a Fashion-MNIST
    fold of 680 steps a pass, one epoch at the peak, CV accuracy 0.8643, and in 9 epochs of
    76 steps 0.8810."""
    most = int(settings.get("max_steps") or 0)
    if most <= 0:
        return 1
    return min(EPOCH_SLICES, pass_steps, max(1, -(-EPOCH_SLICES * pass_steps // most)))


def epoch_steps(pass_steps: int, settings: Mapping[str, Any], slices: int | None = None) -> int:
    """Optimizer steps of one epoch: a pass cut into `slices` epochs, by default as
    `pass_slices` cuts it."""
    return -(-pass_steps // (slices or pass_slices(pass_steps, settings)))


def plan_epochs(settings: Mapping[str, Any], rows: int, batch_size: int) -> tuple[int, int]:
    """(epochs, patience) of a fold, from a budget in optimizer steps: `train.epochs`,
    capped at `train.max_steps` steps' worth and raised to `train.min_steps` steps' worth
    (the floor wins); the patience is `train.patience_steps` steps' worth of epochs, at
    least `train.patience` epochs. A budget in epochs alone gives a 50-item set a few dozen
    steps and a large one thousands; steps make the two comparable: a 50-item set trains
    long enough, a large one no longer than it needs, but every row once: a pass longer
    than the budget is trained whole, in `EPOCH_SLICES` epochs (`epoch_steps`)."""
    pass_steps = max(1, -(-rows // max(1, batch_size)))
    steps_per_epoch = epoch_steps(pass_steps, settings)
    epochs = int(settings.get("epochs", 30))
    most = int(settings.get("max_steps") or 0)
    if most > 0:
        epochs = min(epochs, max(-(-pass_steps // steps_per_epoch),
                                 round(most / steps_per_epoch)))
    epochs = max(epochs, -(-int(settings.get("min_steps", 600)) // steps_per_epoch))
    patience = max(int(settings.get("patience", 2)),
                   -(-int(settings.get("patience_steps", 300)) // steps_per_epoch))
    return epochs, min(patience, epochs)


def cosine_rates(peak: float, epochs: int, warmup: float) -> list[float]:
    """Per-epoch learning rates: a linear warm-up over the first `warmup` share of the
    epochs, then a cosine decay towards zero at the last planned epoch."""
    warm = round(warmup * epochs)
    rates = []
    for epoch in range(epochs):
        if epoch < warm:
            rates.append(peak * (epoch + 1) / (warm + 1))
        else:
            progress = (epoch - warm) / max(1, epochs - warm)
            rates.append(peak * 0.5 * (1 + np.cos(np.pi * progress)))
    return rates


def _resumable_stopping(patience: int):
    """Keras' EarlyStopping (validation loss, best weights restored) whose state (best loss,
    wait, best epoch, best weights) goes into each backup (`state`) and comes back from it
    (`restored`, set by the backup before training begins), so a killed and resumed job
    stops, and restores, as if it had never stopped."""
    import keras

    class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
        restored: dict | None = None

        def on_train_begin(self, logs=None):
            super().on_train_begin(logs)
            if self.restored:
                self.wait, self.best_epoch = self.restored["wait"], self.restored["best_epoch"]
                self.best, self.best_weights = self.restored["best"], self.restored["weights"]

        def state(self) -> dict | None:
            if self.best_weights is None:
                return None
            return {"wait": self.wait, "best_epoch": self.best_epoch,
                    "best": float(self.best) if self.best is not None else float("inf"),
                    "weights": self.best_weights}

    return ResumableEarlyStopping(monitor="val_loss", patience=patience,
                                  restore_best_weights=True)


def _resumable_plateau(patience: int):
    """Keras' ReduceLROnPlateau whose counters (wait, best, cooldown) go into each backup
    and come back from it (the rate itself is an optimizer variable, saved with it)."""
    import keras

    class ResumablePlateau(keras.callbacks.ReduceLROnPlateau):
        restored: dict | None = None

        def on_train_begin(self, logs=None):
            super().on_train_begin(logs)
            if self.restored:
                self.wait, self.best = self.restored["wait"], self.restored["best"]
                self.cooldown_counter = self.restored["cooldown"]

        def state(self) -> dict:
            return {"wait": self.wait, "best": float(self.best),
                    "cooldown": self.cooldown_counter}

    return ResumablePlateau(monitor="val_loss", factor=0.5, patience=max(1, patience // 3),
                            min_lr=1e-6)


def _atomic(path: Path, write) -> None:
    """Write a file through a temporary name and a rename (a kill leaves old or new)."""
    temporary = path.with_name(f".{path.stem}.tmp{path.suffix}")
    write(temporary)
    os.replace(temporary, path)


def _seed_states(model) -> list:
    """The states of the model's random layers (dropout, noise, augmentation): Keras saves
    none of them with the weights, and a resumed run must draw what the killed one would."""
    return [v for v in model.variables if v.path.endswith("seed_generator_state")]


def backed_up_epoch(backup: Path) -> int:
    """The epoch a job resumes at: epochs trained when its last backup was committed."""
    commit = backup / "backup.json"
    return int(json.loads(commit.read_text())["epoch"]) if commit.is_file() else 0


def _checkpoints(backup: Path, history: Path, stopping, plateau, seconds: float) -> tuple:
    """(restore, save): a killed job's backup, in two callbacks. `restore` (first) loads
    the weights, optimizer, random-layer states and early-stopping / plateau state of the
    last backup (fit starts at its epoch, `backed_up_epoch`, and the data stream draws each
    epoch's order from its number: `FoldData.stream`) and cuts the history back to that
    epoch; `save` (last, after early stopping and the history row)
    backs up at the end of an epoch once `seconds` have passed since the last backup.

    A backup is one generation of files (`weights-<epoch>.weights.h5`, `state-<epoch>.npz`)
    committed by rewriting `backup.json` atomically, so a kill at any moment leaves the last
    complete backup. Keras' BackupAndRestore wrote the whole model every epoch (0.4 s an epoch
    on FSDD), a kill inside that write left a file it could not read, and it kept neither the
    random layers' states nor the data order: a resumed run diverged from an uninterrupted
    one."""
    import keras

    class Restore(keras.callbacks.Callback):
        last = 0.0

        def on_train_begin(self, logs=None):
            self.last = time.monotonic()
            start = 0
            commit = backup / "backup.json"
            if commit.is_file():
                saved = json.loads(commit.read_text())
                if not self.model.optimizer.built:
                    self.model.optimizer.build(self.model.trainable_variables)
                self.model.load_weights(backup / saved["weights"])
                start = int(saved["epoch"])
                with np.load(backup / saved["state"]) as state:
                    for variable, value in zip(_seed_states(self.model),
                                               state["seed_states"], strict=True):
                        variable.assign(value)
                    if stopping is not None and int(state["stopping"]):
                        stopping.restored = {
                            "wait": int(state["wait"]), "best_epoch": int(state["best_epoch"]),
                            "best": float(state["best"]),
                            "weights": [state[f"w{i}"] for i in range(int(state["count"]))]}
                    if plateau is not None:
                        plateau.restored = {"wait": int(state["plateau_wait"]),
                                            "best": float(state["plateau_best"]),
                                            "cooldown": int(state["plateau_cooldown"])}
            if history.is_file() and history.stat().st_size:  # epochs after the backup
                table = pd.read_csv(history)                     # are trained again
                _atomic(history, lambda path: table[table["epoch"] < start].to_csv(
                    path, index=False))
            elif history.is_file():
                history.unlink()

        def backup(self, epoch: int) -> None:
            last_epoch = epoch + 1 >= int(self.params.get("epochs") or 0)
            if (time.monotonic() - self.last < seconds or self.model.stop_training
                    or last_epoch):  # a finished job needs no backup
                return
            backup.mkdir(parents=True, exist_ok=True)
            done = epoch + 1
            saved = {"epoch": done, "weights": f"weights-{done}.weights.h5",
                     "state": f"state-{done}.npz"}
            self.model.save_weights(backup / saved["weights"], overwrite=True)
            seeds = [np.asarray(v.numpy()) for v in _seed_states(self.model)]
            arrays: dict[str, Any] = {"seed_states": np.stack(seeds).reshape(-1, 2) if seeds
                                      else np.zeros((0, 2), dtype=np.int64)}
            state = stopping.state() if stopping is not None else None
            arrays["stopping"] = state is not None
            if state is not None:
                weights = state.pop("weights")
                arrays.update(count=len(weights), **state,
                              **{f"w{i}": w for i, w in enumerate(weights)})
            if plateau is not None:
                arrays.update({f"plateau_{k}": v for k, v in plateau.state().items()})
            np.savez(backup / saved["state"], **arrays)
            _atomic(backup / "backup.json", lambda path: path.write_text(json.dumps(saved)))
            for old in backup.iterdir():  # earlier generations
                if old.name not in (saved["weights"], saved["state"], "backup.json"):
                    old.unlink()
            self.last = time.monotonic()

    restore = Restore()

    class Save(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            restore.backup(epoch)

    return restore, Save()


def resume_key(ctx: RunContext, fold: int | None, epochs: int,
               schedule: list[float] | None, fine_tune: list[float] | None = None,
               slices: int | None = None) -> str:
    """What a job's resume state must match: every params section the rule passed, the
    seed, the fold, the plan (both phases and the final model's epoch length), and the
    bytes of the tensor index (the data the fold reads)."""
    import hashlib

    index = ctx.inputs.get("index")
    index_hash = (hashlib.sha256(Path(index).read_bytes()).hexdigest()
                  if index and Path(index).is_file() else None)
    what = {"format": 2, "sections": ctx.sections, "seed": ctx.seed, "fold": fold,
            "epochs": epochs,
            "schedule": schedule, "index": index_hash, "dataset": dict(ctx.dataset)}
    if fine_tune is not None:  # the final model's second phase (unset: the same key as before)
        what["fine_tune"] = fine_tune
    if slices is not None:  # the final model's epochs as a share of a pass (unset: as before)
        what["slices"] = slices
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()


def claim_backup(backup: Path, key: str, what: str) -> bool:
    """Keep `backup` (a killed job's resume state) only when it was made for `key`; else
    discard it and say so. Returns whether a run resumes. Writes the key for this run."""
    _sweep_released(backup)
    marker = backup / "key.txt"
    resumes = backup.exists() and marker.is_file() and marker.read_text().strip() == key
    if backup.exists() and not resumes:
        log.warning("%s: discarded the resume state in %s: it was made with other params or "
                    "inputs (a killed run before a change); training starts from scratch",
                    what, backup)
        _remove_whole(backup)
    elif resumes:
        log.info("%s: resuming from the state in %s (same params and inputs)", what, backup)
    for _ in range(4):  # another job may remove the shared parent between pathlib's steps
        try:
            backup.mkdir(parents=True, exist_ok=True)
            break
        except (FileNotFoundError, FileExistsError):  # the parent gone mid-way: try again
            continue
    else:
        backup.mkdir(parents=True, exist_ok=True)  # a fifth race in a row raises
    marker.write_text(key + "\n")
    return resumes


def _released_prefix(backup: Path) -> str:
    return f".released-{backup.name}."


def _remove_whole(backup: Path) -> None:
    """Remove a resume state whole or not at all: the folder is first renamed out of the way
    (one atomic step), then deleted. `shutil.rmtree` removes one file after another, and a
    job killed inside it left part of a state that the rerun resumed from: in the kill trial
    of 50b235d's CI-like run, a final model's weights backup outlived its history, and the
    resumed job's history.csv held its last epoch alone. What a killed removal leaves under
    the new name is swept by the job's next claim or release (`_sweep_released`)."""
    trash = backup.with_name(f"{_released_prefix(backup)}{os.getpid()}-{time.time_ns()}")
    try:
        os.rename(backup, trash)
    except FileNotFoundError:  # nothing to remove
        return
    shutil.rmtree(trash, ignore_errors=True)


def _sweep_released(backup: Path) -> None:
    """Delete what a killed `_remove_whole` of this job's state left (no other job's: the
    name's prefix ends with a dot, which job names do not hold)."""
    try:
        leftovers = [entry for entry in os.scandir(backup.parent)
                     if entry.name.startswith(_released_prefix(backup))]
    except FileNotFoundError:  # no .backup folder: nothing left over
        return
    for entry in leftovers:
        shutil.rmtree(entry.path, ignore_errors=True)


def release_backup(backup: Path) -> None:
    """Remove a finished job's resume state (whole or not at all: `_remove_whole`), and the
    dataset's `.backup` folder with it when no other job keeps state there. Jobs of one
    dataset finish side by side: the folder may be gone already (the other job removed it)
    or hold another job's state by now; both are fine, and neither may fail a job that
    trained to the end."""
    _remove_whole(backup)
    _sweep_released(backup)
    try:
        backup.parent.rmdir()
    except OSError as error:  # gone already, or another job's state in it
        if error.errno not in (errno.ENOENT, errno.ENOTEMPTY, errno.EEXIST):
            raise


def resumed_history(path: Path) -> dict[str, list]:
    """The per-epoch history a CSVLogger wrote across a killed run and its resumption: one
    row per epoch (a repeated epoch keeps its last row), in epoch order."""
    table = pd.read_csv(path)
    table = table.drop_duplicates("epoch", keep="last").sort_values("epoch")
    # Keras' CSVLogger adds val_ columns (empty) when there is no validation part
    return {column: table[column].tolist() for column in table.columns
            if column != "epoch" and table[column].notna().any()}


def _callbacks(settings: Mapping[str, Any], run: Schedule, phase: str,
               learning_rate: float) -> list:
    """Early stopping on the validation loss with the planned rates (warm-up and cosine
    decay, or halving on plateaus), or, without a validation part (the final model), a
    replayed learning-rate schedule. The history and the early-stopping state are kept
    beside the resume state, so a resumed job reports every epoch it trained."""
    import keras

    state = run.backup / f"{phase}-state"
    state.mkdir(parents=True, exist_ok=True)
    stopping = _resumable_stopping(run.patience) if run.schedule is None else None
    plateau = None
    if run.schedule is not None:
        rates = [float(rate) for rate in run.schedule]
        steering = [keras.callbacks.LearningRateScheduler(
            lambda epoch, rate: rates[min(epoch, len(rates) - 1)])]
    elif settings.get("schedule", "cosine") == "cosine":
        rates = cosine_rates(learning_rate, run.epochs, float(settings.get("warmup", 0.05)))
        steering = [stopping, keras.callbacks.LearningRateScheduler(
            lambda epoch, rate: rates[min(epoch, len(rates) - 1)])]
    else:
        plateau = _resumable_plateau(run.patience)
        steering = [stopping, plateau]
    restore, save = _checkpoints(run.backup / phase, state / "history.csv", stopping, plateau,
                                 float(settings.get("checkpoint_seconds", 30)))
    # restore first (before the history file is opened), back up last (after the epoch's
    # history row and early-stopping update); a job killed after a row but before its
    # backup trains that epoch again, and the history keeps the row of the run that counts
    return [
        restore,
        *steering,
        keras.callbacks.CSVLogger(str(state / "history.csv"), append=True),
        save,
    ]


@dataclass
class FoldData:
    """The fold's training stream, validation arrays, and what the builders need to know.

    Made by `FoldData.load`; `fold=None` is the final model's data: every trainval row
    trains (the sample of `intake.sample` does not apply), and there is no validation part
    (`valid_set` is None).
    """

    task: Any
    modality: Any
    batch_size: int
    resample: str
    train_rows: pd.DataFrame
    in_memory: bool
    train_arrays: dict[str, Any] | None  # in RAM, or a sample where rows are read on demand
    valid: dict[str, Any]
    train: Any = None  # one pass of training batches (adapting, BatchNorm statistics)
    valid_set: Any = None
    seed: int = 0
    max_steps: int = 0  # `train.max_steps`: a long pass is trained in slices (`epoch_steps`)
    slices: int | None = None  # the final model: epochs of 1/slices pass, as its folds' were
    computed_input: bool = False  # inputs come with a second, computed once (`add_computed_input`)
    _epoch: Any = None  # seed -> one epoch of training batches in the order it draws

    @property
    def classes(self) -> tuple[str, ...]:
        return self.valid["classes"]

    @classmethod
    def load(cls, ctx: RunContext, folder: str, fold: int | None, batch_size: int,
             seed: int, slices: int | None = None) -> FoldData:
        """Read the fold's rows from the shards (or cached embeddings) in `folder`; `slices`
        (the final model's) cuts each pass into that many epochs, whatever `max_steps` says."""

        task = ctx.task
        part = Part(task, folder, fold, "train" if fold is not None else "trainval", ctx.gap)
        index = part.index()
        train_rows = part.rows(index)
        shards = sorted(train_rows["shard"].unique())
        source = (RowSource(part, train_rows, task.classes(index))
                  if task.reads_rows_on_demand else None)
        del index
        in_memory = source is None and shard_bytes(folder, shards) <= IN_MEMORY_BYTES
        # rows read on demand keep a sample in RAM for the statistics a builder adapts
        train_arrays = (load_arrays(part) if in_memory else
                        source.sample(ROUND_ROWS, seed) if source is not None else None)
        if fold is not None:
            valid = load_arrays(replace(part, name="valid"))
        else:  # no validation part: keep the first training shard's rows as a shape example
            valid = train_arrays or load_arrays(part, shards=shards[:1])
        data = cls(task, ctx.modality, batch_size,
                   task.resampling(str(ctx.section("train").get("resample", "none"))),
                   train_rows, in_memory, train_arrays, valid, seed=seed,
                   max_steps=int(ctx.section("train").get("max_steps") or 0), slices=slices)
        if source is not None:
            data._epoch = data._rounds(source)
        elif in_memory:
            data._epoch = data._held_epochs(data.examples)
        else:
            labels = (task.encode_targets(train_rows, data.classes)
                      if data.resample != "none" else None)

            def streamed(epoch_seed):
                shards = make_dataset(part, batch_size, shuffle=True, seed=epoch_seed,
                                      in_memory=False).map(lambda x, y: (_as_float(x), y))
                if data.resample == "none":
                    return shards
                return data._order(shards.unbatch(), labels, epoch_seed)

            data._epoch = streamed
        data.train = untuned(data._epoch(seed))
        if fold is not None:
            data.valid_set = data._valid_batches(data.examples)
        return data

    def _held_epochs(self, examples: Callable[[Mapping[str, Any]], tuple]):
        """seed -> one epoch of the training rows held in RAM, as `examples` makes them."""
        import tensorflow as tf

        rows = tf.data.Dataset.from_tensor_slices(examples(self.train_arrays))
        labels = self.train_arrays["y"]
        return lambda epoch_seed: self._order(rows, labels, epoch_seed)

    def _valid_batches(self, examples: Callable[[Mapping[str, Any]], tuple]):
        """The validation rows in batches, as `examples` makes them."""
        return untuned_batches(examples(self.valid), self.batch_size)

    def add_computed_input(self, compute: Callable[[Any], Any] | None,
                           training: np.ndarray | None = None,
                           validation: np.ndarray | None = None) -> bool:
        """Feed each row's inputs together with `compute` of them, computed once here for
        every training and validation row (`frozen_linear_view`); the rows' order, batches
        and targets stay as they were. `training` and `validation`, when given, hold those
        rows' own values instead, in their stored order (the frozen part's cross-fitted
        logits; the images beside their cached embeddings). Only for rows held in RAM (False
        otherwise, nothing changed): a stream would compute them again in every pass."""
        if not self.in_memory or self.train_arrays is None:
            return False

        def with_computed(arrays: Mapping[str, Any], given: Any = None) -> tuple:
            pair = self.examples(arrays)
            return ((pair[0], compute(pair[0]) if given is None else given), *pair[1:])

        self._epoch = self._held_epochs(lambda arrays: with_computed(arrays, training))
        self.train = untuned(self._epoch(self.seed))
        if self.valid_set is not None:
            self.valid_set = self._valid_batches(lambda arrays: with_computed(arrays, validation))
        self.computed_input = True
        return True

    def model_batches(self, batches: Any) -> Any:
        """`batches` of (inputs, ...) as the exported model takes them: without the input
        `add_computed_input` added."""
        return batches.map(lambda x, *_: x[0] if self.computed_input else x)

    def examples(self, arrays: Mapping[str, Any]) -> tuple:
        """(inputs, targets) of stored arrays, and the rows' loss weights when the task
        weighs them (forecasting: each window's error on its own scale)."""
        weights = self.task.sample_weights(arrays)
        pair = (self.inputs(arrays), arrays["y"])
        return pair if weights is None else (*pair, weights)

    def _rounds(self, source: RowSource):
        """seed -> one epoch of the source's rows in the order the seed draws (a permutation
        of every row, as a shuffle of all rows in RAM would draw), read ROUND_ROWS at a time:
        the windows of the round being batched are all that is in memory."""
        import tensorflow as tf

        size = self.batch_size
        per_round = max(size, ROUND_ROWS // size * size)

        def batches(seed):
            order = np.random.default_rng(int(seed)).permutation(len(source))
            for start in range(0, len(order), per_round):
                pair = self.examples(source.take(order[start: start + per_round]))
                for first in range(0, len(pair[1]), size):
                    yield tf.nest.map_structure(lambda a, f=first: a[f: f + size], pair)

        example = self.examples(source.take(np.arange(min(1, len(source)))))
        signature = tf.nest.map_structure(
            lambda a: tf.TensorSpec((None, *a.shape[1:]), tf.as_dtype(a.dtype)), example)
        return lambda seed: tf.data.Dataset.from_generator(
            batches, args=(tf.cast(seed, tf.int64),), output_signature=signature)

    def _order(self, rows, labels, seed):
        """One epoch of `rows` (unbatched) in the order `seed` draws, batched: shuffled, or
        class-balanced (`train.resample`, fold-train rows only)."""
        if self.resample != "none":
            rows = resampled(rows, labels, len(self.classes), self.resample, seed)
        else:
            rows = rows.shuffle(len(labels), seed=seed, reshuffle_each_iteration=False)
        return rows.batch(self.batch_size)

    @property
    def steps_per_epoch(self) -> int:
        """Batches in one epoch: one pass over the training rows, or a slice of it
        (`pass_slices`)."""
        return epoch_steps(self.pass_steps, {}, self.pass_slices)

    @property
    def pass_slices(self) -> int:
        """Epochs a pass over the training rows is cut into: as `train.max_steps` cuts it
        (`pass_slices`), or, for the final model, as its replayed fold's was (`slices`)."""
        return self.slices or pass_slices(self.pass_steps, {"max_steps": self.max_steps})

    @property
    def pass_steps(self) -> int:
        """Batches in one pass over the training rows (as resampled)."""
        if self.resample == "none":
            rows = len(self.train_rows)
        else:
            labels = np.asarray(self.task.encode_targets(self.train_rows, self.classes))
            counts = np.bincount(labels.astype(np.int64), minlength=len(self.classes))
            counts = counts[counts > 0]
            rows = int((counts.max() if self.resample == "oversample" else counts.min())
                       * len(counts))
        return max(1, -(-rows // self.batch_size))

    def stream(self, start: int = 0):
        """The training batches of epoch `start` onwards, endless (fit counts the steps):
        each pass's order is drawn from the seed and the pass's number alone, so a run
        resumed at epoch k sees what an uninterrupted one sees from epoch k on (an epoch
        that is a slice of a pass resumes inside that pass)."""
        import tensorflow as tf

        seed = self.seed
        step = start * self.steps_per_epoch
        first, skipped = divmod(step, self.pass_steps)
        return untuned(tf.data.Dataset.range(first, 1 << 40).flat_map(
            lambda number: self._epoch(seed * 1_000_003 + number)).skip(skipped), prefetch=2)

    def inputs(self, arrays: Mapping[str, Any]) -> Any:
        """Model inputs of stored arrays (the modality's one conversion)."""
        return self.modality.model_inputs(arrays)

    def adapt_x(self) -> Any:
        """Training inputs to adapt preprocessing layers on (arrays, or the x of the stream)."""
        if self.train_arrays is not None:
            inputs = self.inputs(self.train_arrays)
            return inputs["past"] if isinstance(inputs, dict) else inputs
        return self.train.map(lambda x, *_: x)

    def fit_rows(self) -> tuple[Any, Any]:
        """(x, y) of the training rows as arrays (a stream is read through once)."""
        if self.train_arrays is not None:
            return self.adapt_x(), self.train_arrays["y"]
        batches = [(x.numpy(), y.numpy()) for x, y, *_ in self.train]
        x = np.concatenate([x for x, _ in batches])
        if x.dtype == object:  # strings leave TensorFlow as UTF-8 bytes: texts again
            x = np.array([v.decode("utf-8") if isinstance(v, bytes) else v for v in x],
                         dtype=object)
        return x, np.concatenate([y for _, y in batches])

    def target_stats(self) -> tuple[float, float]:
        """(offset, scale) that map a unit-variance output to the fold's targets (train rows)."""
        return self.task.target_stats(self.train_arrays, self.train_rows)


def _as_float(x):
    import tensorflow as tf

    return tf.cast(x, tf.float32) if x.dtype == tf.float16 else x


def _spec(ctx: RunContext, data: FoldData, seed: int):
    from dlworkflow.models.networks import NetworkSpec

    settings = ctx.section("train")
    x = data.valid["x"]
    layer_settings = {**ctx.modality.layer_settings(settings, ctx.inputs.get("stats")),
                      "tensors": dict(ctx.section("tensors").get(ctx.modality.name) or {})}
    preprocessing = ctx.modality.preprocessing(data.adapt_x(), layer_settings)
    offset, scale = data.target_stats()
    future = data.valid.get("x_future")
    augment = ctx.section("augment").get(ctx.modality.name) or {}
    extra = {}
    vectors = ctx.paths("vectors")  # the texts' sentence vectors (rule encode_texts)
    if vectors:
        extra["text_vectors"] = vectors[0]
    if ctx.dataset["task"] == "forecasting":  # the season the wide part starts from
        extra["season"] = int(json.loads(Path(ctx.input("metric")).read_text()).get("season", 1))
    return NetworkSpec(
        task=ctx.task, input_shape=tuple(x.shape[1:]),
        input_dtype="uint8" if x.dtype == np.uint8 else "float32",
        outputs=ctx.task.network_outputs(data.classes, data.valid["y"]),
        settings=settings, preprocessing=preprocessing,
        augmentation=ctx.modality.augmentation(augment, seed),
        target_offset=offset, target_scale=scale,
        future_shape=tuple(future.shape[1:]) if future is not None else None, seed=seed,
        fit_rows=data.fit_rows, extra=extra)


def build_training_state(model, batch_spec: Any) -> None:
    """Create the optimizer's and the compiled metrics' variables before `fit`, from the
    spec of one batch (no data is read). Without a distribution strategy Keras creates them
    inside the first traced train step, and TensorFlow traces a function that created
    variables a second time: measured, the first epoch took 4 s instead of 2 s on digits and
    8 s instead of 6 s on FSDD, for the same weights to the bit. `_symbolic_build` is the
    step Keras' own `fit` runs first under a distribution strategy; a Keras without it
    builds as before."""
    build = getattr(model, "_symbolic_build", None)
    if build is not None:
        build(data_batch=batch_spec)


def _fit(model, data: FoldData, settings: Mapping[str, Any], run: Schedule, phase: str,
         learning_rate: float, weights: dict | None):
    import keras

    loss, metrics = data.task.loss()
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss, metrics=metrics)
    start = backed_up_epoch(run.backup / phase)
    stream = data.stream(start)
    build_training_state(model, stream.element_spec)
    model.fit(stream, steps_per_epoch=data.steps_per_epoch,
              validation_data=data.valid_set, epochs=run.epochs, initial_epoch=start,
              class_weight=weights, verbose=2, shuffle=False,  # `stream` is shuffled, seeded
              callbacks=_callbacks(settings, run, phase, learning_rate))
    return resumed_history(run.backup / f"{phase}-state" / "history.csv")


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


def _head_on_embeddings(ctx: RunContext, spec, fold: int | None, batch_size: int,
                        run: Schedule, data: FoldData, slices: int | None = None):
    """Fit the transfer head on the fold's cached embeddings (fast: the backbone ran once in
    the features step), then build the full model: the same frozen backbone with that head,
    so the saved model still takes images. For classes, with the fold's images in RAM
    (`data`), the head is wide and deep as `image_transfer` is without cached embeddings:
    the linear part on the images' pixels beside it, so that it starts at logistic
    regression's level (on the suite's `fashion` photos logistic regression scored 0.85 in
    CV on pixels and embeddings side by side, the head on the embeddings alone 0.81)."""
    from dlworkflow.models.extractors import extractor_choice
    from dlworkflow.models.networks import build_network, embedding_head, frozen_linear_view

    settings = ctx.section("train")
    folder = embeddings_folder(ctx)
    embedded = FoldData.load(ctx, folder, fold, batch_size, ctx.seed + (fold or 0), slices)
    head_spec = replace(spec, input_shape=tuple(embedded.valid["x"].shape[1:]),
                        input_dtype="float32", preprocessing=(), augmentation=())
    pixels = _pixels_beside(data, embedded)
    head = embedding_head(head_spec, spec if pixels is not None else None)
    wide = len(head.inputs) == 2  # for classes: the linear part on pixels beside it
    view = frozen_linear_view(head) if wide else None
    fit_head, beside = head, ""
    if view is not None:  # the frozen regression's logits, computed once per row
        fit_head, logits_of = view
        crossfit = spec.extra.get("training_logits")
        embedded.add_computed_input(None, logits_of(data.train_arrays["x"]) if crossfit is None
                                    else crossfit, logits_of(pixels))
        beside = (" beside the frozen regression's logits on the images' pixels" +
                  ("" if crossfit is None else " (the training rows' own cross-fitted)"))
    elif wide:
        embedded.add_computed_input(None, data.train_arrays["x"], pixels)
        beside = " and the linear part on the images' pixels beside them"
    log.info("the head trains on the cached embeddings%s", beside)
    weights = ctx.task.class_weights(settings.get("class_weight", "none"),
                                     embedded.train_rows, embedded.classes)
    history = _fit(fit_head, embedded, settings, run, "train",
                   float(settings.get("learning_rate", 1e-3)), weights)
    choice = extractor_choice(folder)
    transfer = {"backbone": choice["extractor"], "weights": choice["weights"],
                "side": choice["side"]}  # the size the embeddings saw
    full = build_network("image_transfer", replace(spec, settings={**spec.settings,
                                                                   "transfer": transfer},
                                                   extra={**spec.extra, "head": head}))
    return full, history


def _pixels_beside(data: FoldData, embedded: FoldData) -> np.ndarray | None:
    """The validation images for a wide and deep head beside the cached embeddings (the
    training images are `data.train_arrays`), or None where the images or the embeddings
    are not held in RAM in the same rows' order."""
    if (not data.in_memory or not embedded.in_memory or data.train_arrays is None
            or embedded.train_arrays is None):
        return None
    same = (np.array_equal(data.train_arrays["ids"], embedded.train_arrays["ids"])
            and np.array_equal(data.valid["ids"], embedded.valid["ids"]))
    if not same:
        log.warning("the cached embeddings' rows are not the tensors' in the same order: the "
                    "head trains without the linear part on pixels")
        return None
    return data.valid["x"]


#: training rows the BatchNormalization statistics are recomputed on (all in smaller folds)
BATCH_NORM_ROWS = 1024


def recalibrate_batch_norm(model, inputs: Any, rows: int = BATCH_NORM_ROWS) -> int:
    """Set every trainable BatchNormalization layer's moving mean and variance to the exact
    statistics of its inputs over the fold's training rows (the first `rows` of them in the
    order `inputs` gives, a seeded shuffle), in inference mode, layer after layer (each sees
    the ones before it already recalibrated). Moving averages of a few hundred noisy steps
    can be far from them on small folds; `inputs` is a dataset of input batches, read again
    as one batch of up to `rows`. On FSDD (2,160 rows, ten layers) all rows in batches of 256
    took 4 s alone and up to 20 s beside another training job; the statistics of 1,024 rows
    differ from all rows' by a fraction of a percent where moving averages differed by tens.
    Every layer is set in one traced function (its assignments run in program order, so a
    layer's probe reads the statistics just set before it): a function a layer traced ten
    times on FSDD, 2.6 s of CPU against 2.0 s for the same values to the bit, and
    TensorFlow warned of the retracing in every log. Returns the number of layers set."""
    import keras
    import tensorflow as tf

    layers = [layer for layer in model.layers
              if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable]
    batch = next(iter(inputs.unbatch().take(rows).batch(rows)), None)
    if not layers or batch is None:  # no rows to compute them on: nothing is set
        return 0
    probes = [keras.Model(model.inputs, layer.input) for layer in layers]

    @tf.function
    def recalibrate(batch):
        for layer, probe in zip(layers, probes, strict=True):
            values = tf.cast(probe(batch, training=False), tf.float64)
            axes = list(range(len(values.shape) - 1))
            count = tf.cast(tf.reduce_prod(tf.shape(values)[:-1]), tf.float64)
            mean = tf.reduce_sum(values, axes) / count
            variance = tf.maximum(tf.reduce_sum(tf.square(values), axes) / count
                                  - tf.square(mean), 0.0)
            layer.moving_mean.assign(tf.cast(mean, layer.moving_mean.dtype))
            layer.moving_variance.assign(tf.cast(variance, layer.moving_variance.dtype))

    recalibrate(batch)
    return len(layers)


@dataclass
class Trained:
    """A trained network and how it came about."""

    model: Any
    history: dict[str, list]
    spec: Any
    #: the name its scores go by: the architecture, and its variant where it has one
    #: (`image_transfer+fitted`)
    architecture: str
    data: FoldData
    devices: list
    replicas: int = 1
    reason: str = ""  # why this architecture (train.architecture, or auto's choice)
    #: the training model on the rows' computed frozen inputs, when those hold a sentence
    #: encoder's vectors (text_transfer): it predicts the validation rows without encoding
    #: them a second time
    predictor: Any = None
    #: epochs of the first phase when a second (fine-tuning) phase followed: the history's
    #: rows from here on are the second phase's
    fine_tune_from: int | None = None


def train_network(ctx: RunContext, fold: int | None, out: Path, epochs: int,
                  schedule: list[float] | None = None,
                  fine_tune: list[float] | None = None, slices: int | None = None) -> Trained:
    """Build the configured network, fit it (and fine-tune a transfer backbone), save
    `model.keras` into `out`. `fold=None` trains on every trainval row without validation,
    following `schedule` (one learning rate per epoch) instead of early stopping, and
    `fine_tune` (the rates of the second phase, one per epoch) when the backbone is
    fine-tuned; its epochs are 1/`slices` of a pass, as the fold's it replays were."""
    from dlworkflow.models.networks import (
        average_down_note,
        build_network,
        encodes_text,
        frozen_linear_view,
    )

    decided = decided_network(ctx)
    variant = None
    if decided is not None:  # a variant (image_transfer+fitted) trains under its settings
        ctx = variant_context(ctx, decided[0])
        base, variant = split_network_name(decided[0])
        decided = (base, decided[1])
    settings = ctx.section("train")
    out.mkdir(parents=True, exist_ok=True)
    # outside nn/ and final/: neither Snakemake (failed job) nor DVC (stage rerun) deletes it
    run = Schedule(out, backup_dir(out), epochs, schedule)
    claim_backup(run.backup, resume_key(ctx, fold, epochs, schedule, fine_tune, slices),
                 "final model" if fold is None else f"fold {fold}")
    seed = ctx.seed + (fold or 0)
    gpus = configure_tensorflow(ctx.threads, seed, bool(settings.get("deterministic", True)))
    strategy, replicas = distribution(settings)
    batch_size = int(settings.get("batch_size", 32)) * replicas  # per replica x replicas
    data = FoldData.load(ctx, ctx.folder("index"), fold, batch_size, seed, slices)
    architecture, reason = architecture_for(ctx.modality, ctx.task.name, settings,
                                            tuple(data.valid["x"].shape[1:]), decided)
    reason += average_down_note(architecture, tuple(data.valid["x"].shape[1:]), settings)
    name = network_name(architecture, variant)
    log.info("network %s: %s", name, reason)
    if not len(data.train_rows) or not len(data.valid["ids"]):
        raise ValueError(f"fold {fold}: {len(data.train_rows)} training and "
                         f"{len(data.valid['ids'])} validation rows; every fold needs both")
    if schedule is None:  # a fold: the step budget sets the epochs and the patience
        planned, patience = plan_epochs({**settings, "epochs": epochs},
                                        data.pass_steps * batch_size, batch_size)
        run = replace(run, epochs=planned, patience=patience)
        log.info("%d epochs of %d optimizer steps planned (a budget of %s to %s steps, "
                 "every row once: a pass of %d steps), patience %d epochs, %s rates", planned,
                 data.steps_per_epoch, settings.get("min_steps", 600),
                 settings.get("max_steps") or "any", data.pass_steps, patience,
                 settings.get("schedule", "cosine"))
    else:
        log.info("%d epochs of %d optimizer steps (%s over %d rows, as the replayed fold's "
                 "epochs were of its own)", run.epochs, data.steps_per_epoch,
                 "a pass" if data.pass_slices == 1 else f"1/{data.pass_slices} of a pass",
                 len(data.train_rows))
    with strategy.scope():  # variables made here are mirrored on every replica
        spec = _spec(ctx, data, seed)
        cached = bool(embeddings_folder(ctx)) and architecture == "image_transfer"
        if cached:  # train the head on the cached embeddings, then put the backbone in front
            model, history = _head_on_embeddings(ctx, spec, fold, batch_size, run, data, slices)
        else:
            model = build_network(architecture, spec)
        fit_model = model  # or below, frozen_linear_view: a frozen part computed once a row
        weights = ctx.task.class_weights(settings.get("class_weight", "none"),
                                         data.train_rows, data.classes)
        log.info("%s: %s, %d training and %d validation rows, %s, %s, %d parameters",
                 "final" if fold is None else f"fold {fold}", name, len(data.train_rows),
                 0 if fold is None else len(data.valid["ids"]),
                 "in RAM" if data.in_memory else "streamed", f"GPU x{len(gpus)}" if gpus else "CPU",
                 model.count_params())
        if replicas > 1:
            log.info("MirroredStrategy over %d devices: global batch %d", replicas, batch_size)
        if "text_vectors_found" in spec.extra:
            log.info("sentence vectors: %s", spec.extra["text_vectors_found"])
        if not cached:
            view = frozen_linear_view(model, spec.extra.get("sentence_vectors"))
            crossfit = spec.extra.get("training_logits")
            if view is not None and data.add_computed_input(view[1], crossfit):
                fit_model = view[0]
                log.info("the frozen linear part's logits%s computed once per row: the "
                         "network trains on them and the raw inputs%s",
                         " and the sentence vectors" if encodes_text(model) else "",
                         "" if crossfit is None
                         else " (the training rows' own from regressions that did not fit "
                         f"them, train.{ctx.dataset['modality']}.wide_crossfit)")
            elif crossfit is not None:
                log.warning("train.%s.wide_crossfit: the training rows are streamed (over "
                            "%d MB of tensors), not held in RAM, so the network trains on the "
                            "logits of the regression of all training rows instead",
                            ctx.dataset["modality"], IN_MEMORY_BYTES // 1024**2)
            history = _fit(fit_model, data, settings, run, "train",
                           float(settings.get("learning_rate", 1e-3)), weights)
        tune_from = None
        if architecture == "image_transfer" and int(settings.get("fine_tune_layers", 0)) > 0:
            opened = _unfreeze_last(model, int(settings["fine_tune_layers"]))
            tune_rate = float(settings.get("fine_tune_learning_rate", 1e-5))
            tuning = run.phase(int(settings.get("fine_tune_epochs", 5)), tune_rate, fine_tune)
            log.info("fine-tuning the last %d backbone layers: %s", opened,
                     f"{tuning.epochs} epochs" if tuning.schedule is not None else
                     f"up to {tuning.epochs} epochs, stopped early")
            tuned = _fit(fit_model, data, settings, tuning, "fine_tune", tune_rate, weights)
            tune_from = len(history.get("loss", []))
            history = {k: history.get(k, []) + tuned.get(k, []) for k in set(history) | set(tuned)}
        recalibrated = recalibrate_batch_norm(model, data.model_batches(data.train))
        if recalibrated:
            log.info("BatchNormalization statistics of %d layers recomputed on %d of the %d "
                     "training rows", recalibrated, min(len(data.train_rows), BATCH_NORM_ROWS),
                     len(data.train_rows))
        save_keras(model, out / "model.keras")  # the same bytes for the same weights
        release_backup(run.backup)  # finished: a rerun starts from scratch
        predictor = None if cached or fit_model is model or not encodes_text(model) else fit_model
        return Trained(model, history, spec, name, data, gpus, replicas, reason,
                       predictor, tune_from)


def model_card(ctx: RunContext, trained: Trained, **extra: Any) -> dict[str, Any]:
    """What `model.json` says: enough to decode raw inputs and read the outputs, and the
    library versions it was made with (Keras's among them)."""
    dataset = ctx.dataset
    return {"dataset": dataset.get("description", ""), "modality": dataset["modality"],
            "task": dataset["task"], "architecture": trained.architecture,
            "architecture_reason": trained.reason,
            "classes": list(trained.data.classes), "input_shape": list(trained.spec.input_shape),
            **extra, "layout": dict(dataset["layout"]),
            **card_inputs(ctx, trained.spec.input_shape), "environment": environment()}


def card_inputs(ctx: RunContext, item_shape: Sequence[int]) -> dict[str, Any]:
    """What a card needs to turn raw files into the model's inputs: `tensors`, the
    modality's tensor settings as the model was trained with them (a forecasting `lookback:
    auto` as the number of steps the windows had, from the metric choice; a setting resolved
    from the inventory as the stored tensors of `item_shape` show it, such as a series
    classifier's `length: null`: `Modality.card_settings`), and a forecaster's `horizon`
    (the steps it predicts, and the rows of known-future covariates `dlworkflow predict`
    reads after a series)."""
    settings = dict(ctx.section("tensors").get(ctx.dataset["modality"]) or {})
    if ctx.dataset["task"] != "forecasting":
        return {"tensors": ctx.modality.card_settings(settings, item_shape)}
    from dlworkflow.tasks.forecasting import window_lookback

    choice = json.loads(Path(ctx.input("metric")).read_text())
    settings["lookback"] = window_lookback(choice, settings)
    return {"tensors": settings,
            **({"horizon": int(choice["horizon"])} if choice.get("horizon") else {})}


def write_history(history: Mapping[str, list], path: Path) -> None:
    """Per-epoch losses, metrics and learning rate as CSV."""
    pd.DataFrame(history).assign(epoch=lambda f: np.arange(1, len(f) + 1)).to_csv(path,
                                                                                  index=False)


def backup_dir(out_dir: str | Path) -> Path:
    """Where a fold's BackupAndRestore state lives: results/<ds>/.backup/<kind>-<fold>."""
    out = Path(out_dir)
    return out.parent.parent / ".backup" / f"{out.parent.name}-{out.name}"


def encode_trainval(ctx: RunContext, out: str | Path) -> int:
    """Rule encode_texts: the sentence vectors of every trainval text, each encoded once,
    for the folds and the final model of a network on a pretrained sentence encoder
    (text_transfer), which would otherwise encode the same texts in each of them; or, when
    the network is another one (`auto` without an encoder at hand), no vectors and the
    reason. With `auto` it follows rule choose_network's decision (which downloads the
    encoder on first use); a named text_transfer loads the encoder here. Returns the texts
    encoded."""
    from dlworkflow.models.text_encoder import encoder_identity, required_encoder, save_vectors
    from dlworkflow.shardfile import load_shard

    settings = ctx.section("train")
    architecture, reason = architecture_for(ctx.modality, ctx.task.name, settings, (),
                                            decided_network(ctx))
    if architecture != "text_transfer":
        save_vectors(out, [], np.zeros((0, 0)), "", f"the network is {architecture} ({reason})")
        log.info("no sentence vectors: the network is %s (%s)", architecture, reason)
        return 0
    log.info("the network is %s (%s)", architecture, reason)  # a first download says from where
    folder, why = required_encoder(settings)
    configure_tensorflow(ctx.threads, ctx.seed)
    import keras

    from dlworkflow.models.text_encoder import encode_texts, encoder_layers

    texts = [ctx.modality.model_inputs(load_shard(path)) for path in ctx.paths("shards")]
    unique = list(dict.fromkeys(str(t) for part in texts for t in part))
    started = time.perf_counter()
    tokenizer, encoder = encoder_layers(folder)
    inputs = keras.Input((), dtype="string", name="text")
    vectors = encode_texts(keras.Model(inputs, encoder(tokenizer(inputs))), unique)
    seconds = time.perf_counter() - started
    note = (f"{len(unique)} texts of {sum(map(len, texts))} trainval rows encoded by {why} "
            f"in {seconds:.0f} s")
    save_vectors(out, unique, vectors, encoder_identity(folder), note)
    log.info("%s", note)
    return len(unique)


def train_fold(ctx: RunContext, fold: int) -> dict[str, Any]:
    """Train one fold; write model.keras, model.json, metrics.json, predictions.parquet and
    history.csv into the fold's folder (the rule's `out_dir`)."""
    out = Path(ctx.values.get("out_dir") or ctx.folder("model", output=True))
    trained = train_network(ctx, fold, out, int(ctx.section("train").get("epochs", 30)))
    model, history, data, architecture = (trained.model, trained.history, trained.data,
                                          trained.architecture)
    task = ctx.task
    choice = json.loads(Path(ctx.input("metric")).read_text())
    if trained.predictor is not None:  # the validation rows' vectors are computed already
        prediction = np.asarray(trained.predictor.predict(data.valid_set, verbose=0))
    else:
        prediction = np.asarray(model.predict(data.model_batches(data.valid_set), verbose=0))
    valid = data.valid
    metrics, frame = task.fold_scores(choice, valid, task.decide(prediction, data.classes),
                                      task.probabilities(prediction, data.classes),
                                      data.classes, fold, architecture)
    losses = history.get("val_loss", [])
    # the epoch whose weights the fold's network holds: each phase restores its best epoch
    start = trained.fine_tune_from or 0
    best = start + int(np.argmin(losses[start:])) + 1 if len(losses) > start else 0
    details = {
        "metrics": metrics, "best_epoch": best, "epochs_run": len(losses),
        **({} if trained.fine_tune_from is None else {"fine_tune_from": trained.fine_tune_from}),
        "train_loss_at_best": float(history["loss"][best - 1]) if best else None,
        "val_loss_at_best": float(losses[best - 1]) if best else None,
        "train_rows": len(data.train_rows), "valid_rows": len(valid["ids"]),
        "parameters": int(model.count_params()),
        "device": "GPU" if trained.devices else "CPU", "replicas": trained.replicas,
        "global_batch_size": int(trained.data.batch_size),
        "pass_slices": trained.data.pass_slices,
    }
    write_fold_metrics(str(out / "metrics.json"), fold, {architecture: details})
    frame.to_parquet(out / "predictions.parquet", index=False)
    write_history(history, out / "history.csv")
    card = model_card(ctx, trained, fold=fold, best_epoch=best)
    (out / "model.json").write_text(json.dumps(card, indent=2) + "\n")
    log.info("fold %d: %s", fold, ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    return details
