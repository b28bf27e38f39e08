"""Step 7: the final model, retrained on every trainval row, and the one look at the test rows.

`train_final` never sees a test row: it derives the number of epochs and the learning-rate
schedule from the folds (see `final_epochs`), asks the task for the decision threshold it
ships with (a binary classifier's is tuned on the network's out-of-fold predictions), trains
on all trainval rows and exports `final/model.keras` with its card. `score_test` is the only
code that loads test shards: it scores the final network (and the best baseline refitted on
trainval, for reference) once, with bootstrap confidence intervals.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dlworkflow.baselines import fit_predict, flat_settings
from dlworkflow.context import RunContext
from dlworkflow.data import Part, load_arrays, load_test_arrays
from dlworkflow.errors import ConfigError
from dlworkflow.predict import load_model
from dlworkflow.train import model_card, train_network, write_history

log = logging.getLogger(__name__)

EPOCH_RULE = ("median of the folds' best epochs (validation loss), with the learning rate of "
              "the fold closest to that median replayed epoch by epoch; each final epoch sees "
              "all trainval rows, about k/(k-1) times a fold's")


def final_epochs(best_epochs: Sequence[int], histories: Sequence[str],
                 setting: Any = "auto") -> dict[str, Any]:
    """How long the final model trains, and its learning rate per epoch.

    `setting` is `final.epochs`: `auto` (the median of the folds' best epochs, at least 1) or
    a number. The schedule replays the learning rates (`learning_rate` column of history.csv)
    of the fold whose best epoch is closest to the median, so reductions the folds' plateaus
    triggered happen at the same epochs; beyond that fold's history the last rate holds.
    """
    best = [int(e) for e in best_epochs if int(e) > 0]
    if not best:
        raise ValueError("no fold reported a best epoch; run the train step first")
    median = float(np.median(best))
    if setting in (None, "auto"):
        epochs, rule = max(1, round(median)), EPOCH_RULE
    else:
        epochs, rule = int(setting), "final.epochs in params.yaml"
        if epochs < 1:
            raise ConfigError(f"final.epochs: {setting!r} must be auto or a positive integer")
    closest = int(np.argmin([abs(e - median) for e in best]))
    history = pd.read_csv(histories[closest]) if closest < len(histories) else pd.DataFrame()
    rates = history["learning_rate"].tolist() if "learning_rate" in history else []
    if not rates:
        rates = [None]
    schedule = [rates[min(e, len(rates) - 1)] for e in range(epochs)]
    return {"epochs": epochs, "rule": rule, "fold_best_epochs": best,
            "schedule_from_fold": closest, "schedule": schedule}


def train_final(ctx: RunContext) -> dict[str, Any]:
    """Retrain the network on every trainval row; write model.keras, model.json (card with
    classes, threshold and the epoch rule), history.csv and dvclive/ into the output folder."""
    started = time.time()
    out = Path(ctx.folder("model", output=True))
    final_settings = ctx.section("final")
    choice = json.loads(Path(ctx.input("metric")).read_text())
    summary = json.loads(Path(ctx.input("summary")).read_text())
    plan = final_epochs(summary["best_epochs"], list(ctx.input("histories")),
                        final_settings.get("epochs", "auto"))
    default_rate = float(ctx.section("train").get("learning_rate", 1e-3))
    schedule = [default_rate if r is None else float(r) for r in plan["schedule"]]
    log.info("final model: %d epochs (%s)", plan["epochs"], plan["rule"])
    trained = train_network(ctx, None, out, plan["epochs"], schedule)
    threshold = ctx.task.threshold(lambda: pd.read_parquet(ctx.input("oof")), choice,
                                   trained.data.classes, final_settings.get("threshold", "tune"))
    write_history(trained.history, out / "history.csv")
    training = {"epochs": plan, "train_rows": len(trained.data.train_rows),
                "cv": summary.get("headline"), "seconds": round(time.time() - started, 1),
                "device": "GPU" if trained.devices else "CPU", "replicas": trained.replicas,
                "parameters": int(trained.model.count_params())}
    card = model_card(ctx, trained, fold=None, threshold=threshold, training=training,
                      primary=choice["primary"]["name"])
    (out / "model.json").write_text(json.dumps(card, indent=2) + "\n")
    return card


def _baseline_on_test(ctx: RunContext, baseline: dict[str, Any], choice: dict[str, Any],
                      test: dict[str, Any]) -> tuple[str, np.ndarray]:
    """The CV-best baseline refitted on every trainval row; its test output (probabilities
    for classification)."""
    from sklearn.base import clone

    task = ctx.task
    name = baseline["best"]
    estimator = clone(task.baselines(ctx.modality, ctx.section("baseline"), ctx.seed)[name])
    train = load_arrays(Part(task, ctx.folder("index"), None, "trainval"))
    estimator = task.prepare_baseline(estimator, choice, train)
    settings = flat_settings(ctx)
    x_train = task.baseline_inputs(ctx.modality, train, settings)
    x_test = task.baseline_inputs(ctx.modality, test, settings)
    prediction, proba = fit_predict(estimator, x_train, train["y"], x_test, train["classes"])
    if train["classes"]:
        if proba is None:  # an estimator without probabilities: one-hot of its labels
            proba = np.eye(len(train["classes"]))[np.asarray(prediction, dtype=int)]
        return name, np.asarray(proba)
    return name, np.asarray(prediction)


def score_test(ctx: RunContext) -> dict[str, Any]:
    """Score the final network once on the test rows (and the refitted best baseline for
    reference, unless the rule says not to), each metric with a bootstrap confidence
    interval; write test_metrics.json, predictions.parquet and the plots' CSV files."""
    task = ctx.task
    final_settings = ctx.section("final")
    choice = json.loads(Path(ctx.input("metric")).read_text())
    model, card = load_model(ctx.folder("model"))
    classes = tuple(card["classes"])
    plan_path = ctx.input("plan")
    test = load_test_arrays(task, plan_path, list(ctx.input("test_shards")), classes)
    if not len(test["ids"]):
        raise ValueError(f"{plan_path}: the plan has no test rows to score")
    bootstrap = {"resamples": int(final_settings.get("bootstrap", 1000)), "seed": ctx.seed,
                 "confidence": float(final_settings.get("confidence", 0.95))}
    import tensorflow as tf

    inputs = ctx.modality.model_inputs(test)
    batches = tf.data.Dataset.from_tensor_slices(inputs).batch(64)  # strings need tf.data
    output = np.asarray(model.predict(batches, verbose=0))
    network, frame = task.evaluate(choice, test, output, classes, card["threshold"],
                                   card["architecture"], bootstrap)
    frames = [frame]
    metrics_output = ctx.output("metrics")
    task.write_plots(Path(metrics_output).parent / "plots", frame, classes,
                     task.positive(choice, classes))
    result: dict[str, Any] = {
        "primary": choice["primary"]["name"],
        "greater_is_better": choice["primary"]["greater_is_better"],
        "confidence": bootstrap["confidence"], "bootstrap_resamples": bootstrap["resamples"],
        "bootstrap_unit": task.bootstrap_unit, "threshold": card["threshold"],
        "network": network, **task.test_notes(),
    }
    if ctx.values.get("with_baseline", True):
        baseline = json.loads(Path(ctx.input("baseline")).read_text())
        name, base_output = _baseline_on_test(ctx, baseline, choice, test)
        reference, base_frame = task.evaluate(choice, test, base_output, classes, None, name,
                                              bootstrap)
        result["baseline"] = reference
        frames.append(base_frame)
    primary = result["primary"]
    result["headline"] = {"model": network["model"], primary: network["metrics"][primary]["value"],
                          f"{primary}_low": network["metrics"][primary]["low"],
                          f"{primary}_high": network["metrics"][primary]["high"]}
    Path(metrics_output).write_text(json.dumps(result, indent=2) + "\n")
    pd.concat(frames, ignore_index=True).to_parquet(ctx.output("predictions"), index=False)
    value = result["headline"]
    log.info("test %s: %.4f [%.4f, %.4f] (%d rows)", primary, value[primary],
             value[f"{primary}_low"], value[f"{primary}_high"], network["rows"])
    return result
