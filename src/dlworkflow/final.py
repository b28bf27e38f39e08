"""Step 7: the final model, retrained on every trainval row, and the one look at the test rows.

`train_final` never sees a test row: it derives the number of epochs and the learning-rate
schedule from the folds (see `final_epochs`), tunes a binary decision threshold on the
network's out-of-fold predictions (see `tune_threshold`), trains on all trainval rows and
exports `final/model.keras` with its card. `score_test` is the only code that loads test
shards: it scores the final network (and the best baseline refitted on trainval, for
reference) once, with bootstrap confidence intervals.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dlworkflow.data import load_arrays, load_test_arrays
from dlworkflow.errors import ConfigError
from dlworkflow.evaluate import metric_names, prediction_frame, score
from dlworkflow.metrics import METRICS, compute, naive_scale
from dlworkflow.modalities import create_modality

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


def _binary_positive(choice: Mapping[str, Any], classes: Sequence[str]) -> str | None:
    if len(classes) != 2:
        return None
    positive = choice.get("positive_label")
    return str(positive) if positive is not None and str(positive) in classes else classes[1]


def tune_threshold(oof: pd.DataFrame, choice: Mapping[str, Any], classes: Sequence[str],
                   setting: Any = "tune") -> dict[str, Any] | None:
    """The decision threshold on the positive class's probability for a binary task.

    `setting` is `final.threshold`: `tune` picks, on the network's out-of-fold predictions,
    the threshold in 0.05-0.95 (steps of 0.01) that maximises the primary metric (ties go to
    the one nearest 0.5); a number fixes it; `none` keeps argmax (0.5). Metrics computed from
    scores (ROC AUC, PR AUC) do not depend on it. Returns None for other tasks.
    """
    positive = _binary_positive(choice, classes)
    if positive is None or setting in (None, "none"):
        return None
    negative = next(c for c in classes if c != positive)
    column = f"p_{positive}"
    primary = choice["primary"]["name"]
    y_true = oof["y_true"].astype(str).to_numpy()
    scores = oof[column].to_numpy(dtype=float)

    def value(threshold: float) -> float:
        y_pred = np.where(scores >= threshold, positive, negative)
        return score(choice, y_true, y_pred)[primary]

    if isinstance(setting, int | float) and not isinstance(setting, bool):
        if not 0 < float(setting) < 1:
            raise ConfigError(f"final.threshold: {setting} must lie between 0 and 1")
        chosen, how = float(setting), "final.threshold in params.yaml"
    elif setting == "tune":
        if METRICS[primary].needs == "scores":
            chosen, how = 0.5, f"not tuned: {primary} is computed from scores"
        else:
            grid = np.round(np.arange(0.05, 0.951, 0.01), 2)
            values = np.array([value(t) for t in grid])
            best = values.max() if METRICS[primary].greater_is_better else values.min()
            ties = grid[np.isclose(values, best)]
            chosen = float(ties[np.argmin(np.abs(ties - 0.5))])
            how = f"maximises out-of-fold {primary} over 0.05-0.95"
    else:
        raise ConfigError(f"final.threshold: {setting!r}; use tune, none or a number in (0, 1)")
    return {"positive": positive, "threshold": chosen, "how": how,
            f"oof_{primary}_at_0.5": value(0.5), f"oof_{primary}_at_threshold": value(chosen)}


def train_final(dataset: Mapping[str, Any], settings: Mapping[str, Any],
                augment: Mapping[str, Any], final_settings: Mapping[str, Any],
                choice_path: str, tensors_dir: str, nn_summary: str, nn_oof: str,
                histories: Sequence[str], seed: int, gap: int, threads: int, out_dir: str,
                stats_path: str | None = None, tensor_settings: Mapping[str, Any] | None = None,
                features_dir: str | None = None,
                features: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Retrain the network on every trainval row; write model.keras, model.json (card with
    classes, threshold and the epoch rule), history.csv and dvclive/ into `out_dir`."""
    from dlworkflow.train import _train, model_card, write_history

    started = time.time()
    out = Path(out_dir)
    choice = json.loads(Path(choice_path).read_text())
    summary = json.loads(Path(nn_summary).read_text())
    plan = final_epochs(summary["best_epochs"], histories, final_settings.get("epochs", "auto"))
    default_rate = float(settings.get("learning_rate", 1e-3))
    schedule = [default_rate if r is None else float(r) for r in plan["schedule"]]
    log.info("final model: %d epochs (%s)", plan["epochs"], plan["rule"])
    trained = _train(dataset, settings, augment, tensors_dir, None, seed, gap, threads, out,
                     stats_path, features_dir, features, plan["epochs"], schedule)
    threshold = None
    if dataset["task"] == "classification":
        oof = pd.read_parquet(nn_oof)
        threshold = tune_threshold(oof, choice, trained.data.classes,
                                   final_settings.get("threshold", "tune"))
    write_history(trained.history, out / "history.csv")
    training = {"epochs": plan, "train_rows": len(trained.data.train_rows),
                "cv": summary.get("headline"), "seconds": round(time.time() - started, 1),
                "device": "GPU" if trained.devices else "CPU", "replicas": trained.replicas,
                "parameters": int(trained.model.count_params())}
    card = model_card(dataset, trained, tensor_settings, fold=None, threshold=threshold,
                      training=training, primary=choice["primary"]["name"])
    (out / "model.json").write_text(json.dumps(card, indent=2) + "\n")
    return card


def decide(proba: np.ndarray, classes: Sequence[str],
           threshold: Mapping[str, Any] | None) -> np.ndarray:
    """Predicted labels: argmax, or for a binary task the tuned threshold on the positive."""
    classes = np.asarray(classes)
    if not threshold:
        return classes[np.asarray(proba).argmax(axis=1)]
    positive = threshold["positive"]
    column = list(classes).index(positive)
    negative = next(c for c in classes if c != positive)
    return np.where(np.asarray(proba)[:, column] >= threshold["threshold"], positive, negative)


def bootstrap_intervals(metric_fn: Callable[[np.ndarray], Mapping[str, float]], units: int,
                        resamples: int, seed: int, confidence: float) -> dict[str, list[float]]:
    """Percentile intervals of every metric over `resamples` resamples (with replacement) of
    the `units` test units; a resample where a metric is undefined is skipped for it."""
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {}
    for _ in range(resamples):
        picked = rng.integers(0, units, units)
        try:
            values = metric_fn(picked)
        except ValueError:  # e.g. ROC AUC on a resample with one class
            continue
        for name, value in values.items():
            if np.isfinite(value):
                draws.setdefault(name, []).append(float(value))
    tail = (1 - confidence) / 2 * 100
    return {name: [float(np.percentile(v, tail)), float(np.percentile(v, 100 - tail))]
            for name, v in draws.items()}


def _forecast_scores(choice: Mapping[str, Any], errors: pd.DataFrame) -> dict[str, float]:
    """Forecast metrics over (window, step) pairs; MASE as the mean of |error| / the window's
    seasonal-naive scale (equal to the mean of per-window MASE when windows are whole)."""
    out = {}
    for name in metric_names(choice):
        if name == "mase":
            out[name] = float(np.mean(np.abs(errors["y_true"] - errors["y_pred"])
                                      / errors["scale"]))
        else:
            out[name] = compute(name, errors["y_true"].to_numpy(), errors["y_pred"].to_numpy(),
                                season=int(choice.get("season", 1)))
    return out


def _mase_scales(history: np.ndarray, season: int) -> np.ndarray:
    return np.asarray([naive_scale(row, season) for row in np.asarray(history, dtype=float)])


def _with_intervals(point: Mapping[str, float], intervals: Mapping[str, list[float]]) -> dict:
    return {name: {"value": value, "low": intervals.get(name, [None, None])[0],
                   "high": intervals.get(name, [None, None])[1]}
            for name, value in point.items()}


def evaluate_predictions(choice: Mapping[str, Any], task: str, test: Mapping[str, Any],
                         output: np.ndarray, classes: Sequence[str],
                         threshold: Mapping[str, Any] | None, model: str,
                         resamples: int, seed: int, confidence: float
                         ) -> tuple[dict[str, Any], pd.DataFrame]:
    """Point metrics with bootstrap intervals, and the prediction frame, for one model."""
    ids = test["ids"]
    if task == "classification":
        names = np.asarray([*classes, "(unseen label)"])
        y_true = names[test["y"]]  # -1 (a label training never saw) -> "(unseen label)"
        proba = np.asarray(output, dtype=float)
        y_pred = decide(proba, classes, threshold)

        def metric_fn(picked: np.ndarray) -> Mapping[str, float]:
            return score(choice, y_true[picked], y_pred[picked], proba[picked], classes)

        point = score(choice, y_true, y_pred, proba, classes)
        frame = prediction_frame(ids, -1, model, y_true, y_pred, proba, classes)
        units = len(ids)
    elif task == "forecasting":
        y_true, y_pred = np.asarray(test["y"], float), np.asarray(output, float)
        point = score(choice, y_true, y_pred, history=test["x"][:, :, 0])
        frame = prediction_frame(ids, -1, model, y_true, y_pred)
        scales = _mase_scales(test["x"][:, :, 0], int(choice.get("season", 1)))
        errors = frame.assign(scale=np.repeat(scales, y_true.shape[1]))

        def metric_fn(picked: np.ndarray) -> Mapping[str, float]:
            return _forecast_scores(choice, errors.iloc[picked])

        units = len(errors)
    else:
        y_true, y_pred = np.asarray(test["y"], float), np.ravel(np.asarray(output, float))
        point = score(choice, y_true, y_pred)
        frame = prediction_frame(ids, -1, model, y_true, y_pred)

        def metric_fn(picked: np.ndarray) -> Mapping[str, float]:
            return score(choice, y_true[picked], y_pred[picked])

        units = len(ids)
    intervals = bootstrap_intervals(metric_fn, units, resamples, seed, confidence)
    return {"model": model, "rows": len(ids), "units": int(units),
            "metrics": _with_intervals(point, intervals)}, frame


def write_plots(folder: str | Path, task: str, frame: pd.DataFrame, classes: Sequence[str],
                positive: str | None) -> list[str]:
    """CSV files behind the DVC plots of the test predictions (one model's frame): confusion
    pairs, ROC and PR points (the positive class, or micro-averaged one-vs-rest for several
    classes), the forecast of the held-out horizon, or predicted against actual values."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []

    def save(name: str, table: pd.DataFrame) -> None:
        table.to_csv(folder / name, index=False, float_format="%.6g")
        written.append(name)

    if task == "classification":
        save("confusion.csv", pd.DataFrame({"actual": frame["y_true"].astype(str),
                                            "predicted": frame["y_pred"].astype(str)}))
        if positive is not None:
            truth = (frame["y_true"].astype(str) == positive).to_numpy()
            scores = frame[f"p_{positive}"].to_numpy()
        else:  # micro-average: every (row, class) pair is one binary decision
            truth = np.concatenate([(frame["y_true"].astype(str) == c).to_numpy()
                                    for c in classes])
            scores = np.concatenate([frame[f"p_{c}"].to_numpy() for c in classes])
        if truth.any() and not truth.all():
            fpr, tpr, _ = roc_curve(truth, scores)
            precision, recall, _ = precision_recall_curve(truth, scores)
        else:  # one class only among the test rows: no curve to draw
            fpr = tpr = precision = recall = np.array([], dtype=float)
        save("roc.csv", pd.DataFrame({"fpr": fpr, "tpr": tpr}))
        save("pr.csv", pd.DataFrame({"recall": recall, "precision": precision}))
    elif task == "forecasting":
        first = frame[frame["id"] == frame["id"].min()]
        save("forecast.csv", pd.DataFrame({"step": first["step"], "actual": first["y_true"],
                                           "forecast": first["y_pred"]}))
    else:
        save("scatter.csv", pd.DataFrame({"actual": frame["y_true"],
                                          "predicted": frame["y_pred"]}))
    return written


def _baseline_on_test(dataset: Mapping[str, Any], baseline: Mapping[str, Any],
                      settings: Mapping[str, Any], tensor_settings: Mapping[str, Any],
                      choice: Mapping[str, Any], tensors_dir: str, test: Mapping[str, Any],
                      seed: int) -> tuple[str, np.ndarray]:
    """The CV-best baseline refitted on every trainval row; its test output (probabilities
    for classification)."""
    from sklearn.base import clone

    from dlworkflow.baselines import SeasonalNaive, fit_predict

    task = dataset["task"]
    modality = create_modality(dataset["modality"], {}, dataset["layout"])
    name = baseline["best"]
    estimator = clone(modality.baselines(task, settings, seed)[name])
    train = load_arrays(tensors_dir, None, "trainval")
    if task == "forecasting":
        if isinstance(estimator, SeasonalNaive):
            estimator.set_params(season=int(choice.get("season", 1)), horizon=train["y"].shape[1])
        x_train = {"past": train["x"], "future": train.get("x_future")}
        x_test = {"past": test["x"], "future": test.get("x_future")}
        prediction, _ = fit_predict(estimator, x_train, train["y"], x_test, ())
        return name, np.asarray(prediction)
    flat_settings = {**settings, **(tensor_settings.get(dataset["modality"]) or {})}
    x_train = modality.flat(train["x"], flat_settings)
    x_test = modality.flat(test["x"], flat_settings)
    prediction, proba = fit_predict(estimator, x_train, train["y"], x_test, train["classes"])
    if train["classes"]:
        if proba is None:  # an estimator without probabilities: one-hot of its labels
            proba = np.eye(len(train["classes"]))[np.asarray(prediction, dtype=int)]
        return name, np.asarray(proba)
    return name, np.asarray(prediction)


def score_test(dataset: Mapping[str, Any], final_settings: Mapping[str, Any], choice_path: str,
               model_dir: str, plan_path: str, test_shards: Sequence[str], tensors_dir: str,
               baseline_summary: str, baseline_settings: Mapping[str, Any],
               tensor_settings: Mapping[str, Any], seed: int, metrics_output: str,
               predictions_output: str, with_baseline: bool = True) -> dict[str, Any]:
    """Score the final network once on the test rows (and the refitted best baseline for
    reference), each metric with a bootstrap confidence interval."""
    from dlworkflow.predict import load_model

    choice = json.loads(Path(choice_path).read_text())
    model, card = load_model(model_dir)
    task = card["task"]
    classes = tuple(card["classes"])
    test = load_test_arrays(plan_path, list(test_shards), classes)
    if not len(test["ids"]):
        raise ValueError(f"{plan_path}: the plan has no test rows to score")
    resamples = int(final_settings.get("bootstrap", 1000))
    confidence = float(final_settings.get("confidence", 0.95))
    x = test["x"]
    inputs: Any = x if x.dtype.kind == "U" or x.dtype == np.uint8 else x.astype(np.float32)
    if test.get("x_future") is not None and test["x_future"].shape[-1]:
        inputs = {"past": inputs, "future": test["x_future"].astype(np.float32)}
    import tensorflow as tf

    batches = tf.data.Dataset.from_tensor_slices(inputs).batch(64)  # strings need tf.data
    output = np.asarray(model.predict(batches, verbose=0))
    network, frame = evaluate_predictions(choice, task, test, output, classes, card["threshold"],
                                          card["architecture"], resamples, seed, confidence)
    frames = [frame]
    positive = _binary_positive(choice, classes) if task == "classification" else None
    write_plots(Path(metrics_output).parent / "plots", task, frame, classes, positive)
    result: dict[str, Any] = {
        "primary": choice["primary"]["name"],
        "greater_is_better": choice["primary"]["greater_is_better"],
        "confidence": confidence, "bootstrap_resamples": resamples,
        "bootstrap_unit": "(window, step) pair" if task == "forecasting" else "test row",
        "threshold": card["threshold"], "network": network,
    }
    if task == "forecasting":
        result["held_out"] = "windows whose targets all lie in the test period"
    if with_baseline:
        baseline = json.loads(Path(baseline_summary).read_text())
        name, base_output = _baseline_on_test(dataset, baseline, baseline_settings,
                                              tensor_settings, choice, tensors_dir, test, seed)
        reference, base_frame = evaluate_predictions(
            choice, task, test, base_output, classes, None, name, resamples, seed, confidence)
        result["baseline"] = reference
        frames.append(base_frame)
    primary = result["primary"]
    result["headline"] = {"model": network["model"], primary: network["metrics"][primary]["value"],
                          f"{primary}_low": network["metrics"][primary]["low"],
                          f"{primary}_high": network["metrics"][primary]["high"]}
    Path(metrics_output).write_text(json.dumps(result, indent=2) + "\n")
    pd.concat(frames, ignore_index=True).to_parquet(predictions_output, index=False)
    value = result["headline"]
    log.info("test %s: %.4f [%.4f, %.4f] (%d rows)", primary, value[primary],
             value[f"{primary}_low"], value[f"{primary}_high"], network["rows"])
    return result
