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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dlworkflow.archives import save_keras
from dlworkflow.baselines import baseline_source, fit_baseline, flat_settings, training_part, with_embeddings
from dlworkflow.context import RunContext
from dlworkflow.data import Part, RowSource, load_test_arrays
from dlworkflow.errors import ConfigError
from dlworkflow.evaluate import best_fold_files
from dlworkflow.metrics import metric_label
from dlworkflow.provenance import environment
from dlworkflow.shipping import SHIPPED_FILE, choose_shipped, load_shipped, save_baseline
from dlworkflow.tasks.base import DRAWS, percentile_interval
from dlworkflow.train import card_inputs, model_card, train_network, write_history

log = logging.getLogger(__name__)

EPOCH_RULE = ("median of the folds' best epochs (validation loss), with the learning rate of "
              "the fold closest to that median replayed epoch by epoch; each final epoch is "
              "as much of a pass over all trainval rows as that fold's was of its own (the "
              "whole pass, or the share the step budget cut the fold's pass into)")

#: folds trained on fewer rows than this share of the largest fold's do not set the final
#: model's epochs (`final_epochs`)
LARGEST_FOLDS = 0.9


def final_epochs(best_epochs: Sequence[int], histories: Sequence[str],
                 setting: Any = "auto", train_rows: Sequence[int] | None = None,
                 spans: Sequence[tuple[int, int | None]] | None = None) -> dict[str, Any]:
    """How long the final model trains, and its learning rate per epoch.

    `setting` is `final.epochs`: `auto` (the median of the folds' best epochs, at least 1) or
    a number. The schedule replays the learning rates (`learning_rate` column of history.csv)
    of the fold whose best epoch is closest to the median, so reductions the folds' plateaus
    triggered happen at the same epochs; beyond that fold's history the last rate holds.
    With `train_rows` (each fold's), only the folds that trained on nearly as many rows as
    the largest count: rolling-origin folds grow, and a small early fold needs more passes
    than the final model over all trainval rows does (short yearly series: best epochs 20
    on 772 windows and 6 on 1,612; 13 passes over 2,771 windows scored test MASE 5.33, the
    6-epoch fold's network 4.49).
    With `spans` (each fold's history rows of one training phase, `final_phases`), the
    best epochs count within that phase and its rates are replayed.
    """
    folds = [(k, int(e)) for k, e in enumerate(best_epochs) if int(e) > 0]
    if not folds:
        raise ValueError("no fold reported a best epoch; run the train step first")
    rule = EPOCH_RULE
    if train_rows is not None and len(train_rows) == len(best_epochs):
        largest = max(int(train_rows[k]) for k, _ in folds)
        kept = [(k, e) for k, e in folds if int(train_rows[k]) >= LARGEST_FOLDS * largest]
        if len(kept) < len(folds):
            rule = EPOCH_RULE + (f"; of the folds that trained on at least "
                                 f"{LARGEST_FOLDS:.0%} of the largest fold's rows "
                                 f"(fold{'s' if len(kept) > 1 else ''} {', '.join(str(k) for k, _ in kept)})")
        folds = kept
    best = [e for _, e in folds]
    median = float(np.median(best))
    if setting in (None, "auto"):
        epochs = max(1, round(median))
    else:
        epochs, rule = int(setting), "final.epochs in params.yaml"
        if epochs < 1:
            raise ConfigError(f"final.epochs: {setting!r} must be auto or a positive integer")
    closest = folds[int(np.argmin([abs(e - median) for e in best]))][0]
    history = pd.read_csv(histories[closest]) if closest < len(histories) else pd.DataFrame()
    rates = history["learning_rate"].tolist() if "learning_rate" in history else []
    if spans is not None:
        rates = rates[slice(*spans[closest])]
    if not rates:
        rates = [None]
    schedule = [rates[min(e, len(rates) - 1)] for e in range(epochs)]
    return {"epochs": epochs, "rule": rule, "fold_best_epochs": [int(e) for e in best_epochs],
            "schedule_from_fold": closest, "schedule": schedule}


def final_phases(best_epochs: Sequence[int], histories: Sequence[str], setting: Any,
                 train_rows: Sequence[int] | None,
                 tune_from: Sequence[int | None]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The final model's plan (`final_epochs`) and, when the folds fine-tuned a transfer
    backbone (`tune_from`: each fold's epochs before its second phase), the second phase's.
    Each phase restored its own best epoch in the folds, so each is planned apart: the
    median of the folds' best epochs within it, its rates replayed from the fold closest to
    that median (`final.epochs` sets the first). Planned as one, the best epoch over both
    phases had set the first phase's length (Fashion-MNIST: 26 frozen epochs where the folds
    had 19, then 8 fine-tuning epochs at a rate held, not decayed as in the folds)."""
    if not tune_from or any(start is None for start in tune_from):
        return final_epochs(best_epochs, histories, setting, train_rows), None
    losses = [pd.read_csv(path)["val_loss"].to_numpy() for path in histories]
    starts = [int(start) for start in tune_from]
    first = [int(np.argmin(loss[:start])) + 1 if start else 0
             for loss, start in zip(losses, starts, strict=True)]
    second = [int(np.argmin(loss[start:])) + 1 if len(loss) > start else 0
              for loss, start in zip(losses, starts, strict=True)]
    return (final_epochs(first, histories, setting, train_rows, [(0, s) for s in starts]),
            final_epochs(second, histories, "auto", train_rows, [(s, None) for s in starts]))


#: tasks whose final network averages the fold networks under `final.average_folds: auto`
AVERAGED_TASKS = ("forecasting",)


def averages_folds(setting: Any, task: str) -> bool:
    """`final.average_folds`: true, false, or auto (the tasks where it was measured); the
    schema has already refused any other value."""
    return task in AVERAGED_TASKS if setting in (None, "auto") else bool(setting)


def averaged_network(final: Any, members: Sequence[str]) -> Any:
    """One Keras model whose output is the mean of the final network's and each fold
    network's (bagging, as AutoGluon ships its fold models): the fold networks never saw a
    test row, so the test is still scored once, on one exported model."""
    import keras

    import dlworkflow.layers  # noqa: F401  (the custom layers the fold models use)

    inputs = final.inputs if len(final.inputs) > 1 else final.inputs[0]
    final.name = "final"
    outputs = [final(inputs)]
    for number, path in enumerate(members):
        fold = keras.saving.load_model(path, compile=False)
        fold.name = f"fold_{number}"
        outputs.append(fold(inputs))
    return keras.Model(inputs, keras.layers.Average(name="averaged", dtype="float32")(outputs),
                       name="averaged_networks")


def model_oof(ctx: RunContext, name: str) -> Callable[[], pd.DataFrame]:
    """The out-of-fold predictions of model `name` alone (input `oof` holds every model the
    folds trained), read when the task asks for them (a binary threshold)."""
    def read() -> pd.DataFrame:
        frame = pd.read_parquet(ctx.input("oof"))
        return frame[frame["model"] == name]

    return read


def train_final(ctx: RunContext) -> dict[str, Any]:
    """Retrain the network on every trainval row; write model.keras, model.json (card with
    classes, threshold and the epoch rule), and history.csv into the output folder."""
    out = Path(ctx.folder("model", output=True))
    final_settings = ctx.section("final")
    choice = json.loads(Path(ctx.input("metric")).read_text())
    summary = json.loads(Path(ctx.input("summary")).read_text())
    details = (summary.get("fold_details") or {}).get(summary.get("best"), {})
    folds = range(len(summary["best_epochs"]))
    rows = [details.get(str(k), {}).get("train_rows") for k in folds]
    histories = best_fold_files([*ctx.paths("histories"), *ctx.paths("beside_histories")],
                                summary)
    plan, tune_plan = final_phases(summary["best_epochs"], histories,
                                   final_settings.get("epochs", "auto"),
                                   rows if all(r is not None for r in rows) else None,
                                   [details.get(str(k), {}).get("fine_tune_from") for k in folds])
    settings = ctx.section("train")
    default_rate = float(settings.get("learning_rate", 1e-3))
    schedule = [default_rate if r is None else float(r) for r in plan["schedule"]]
    log.info("final model: %d epoch%s (%s)", plan["epochs"], "" if plan["epochs"] == 1 else "s",
             plan["rule"])
    tune = None
    if tune_plan is not None:
        tune_rate = float(settings.get("fine_tune_learning_rate", 1e-5))
        tune = [tune_rate if r is None else float(r) for r in tune_plan["schedule"]]
        log.info("then %d epoch%s fine-tuning the backbone (the same rule within the folds' "
                 "fine-tuning phase)", tune_plan["epochs"], "" if tune_plan["epochs"] == 1 else "s")
        plan = {**plan, "fine_tune": tune_plan}
    # an epoch is the share of a pass the replayed fold's was (`epoch_steps` cuts a long pass
    # into up to ten): the final's own pass, k/(k-1) a fold's, may be cut into more epochs
    # than the folds' were, and each replayed epoch then trained on fewer rows (a tenth)
    slices = details.get(str(plan["schedule_from_fold"]), {}).get("pass_slices")
    trained = train_network(ctx, None, out, plan["epochs"], schedule, tune, slices)
    plan = {**plan, "pass_slices": trained.data.pass_slices,
            "steps_per_epoch": trained.data.steps_per_epoch}
    model, averaged = trained.model, None
    if averages_folds(final_settings.get("average_folds", "auto"), ctx.dataset["task"]):
        members = best_fold_files([*ctx.paths("fold_models"), *ctx.paths("beside_models")],
                                  summary)
        model = averaged_network(trained.model, members)
        save_keras(model, out / "model.keras")  # replaces the final network alone
        averaged = {"members": ["final"] + [f"fold {k}" for k in range(len(members))],
                    "rule": "final.average_folds: the mean of the final network's output and "
                            "each fold network's"}
        log.info("the exported network averages the final network and %d fold networks",
                 len(members))
    threshold = ctx.task.threshold(model_oof(ctx, summary["best"]), choice,
                                   trained.data.classes, final_settings.get("threshold", "tune"))
    write_history(trained.history, out / "history.csv")
    training = {"epochs": plan, "train_rows": len(trained.data.train_rows),
                "cv": summary.get("headline"),
                "device": "GPU" if trained.devices else "CPU", "replicas": trained.replicas,
                "parameters": int(model.count_params()), "averaged": averaged}
    card = model_card(ctx, trained, fold=None, threshold=threshold, training=training,
                      primary=choice["primary"]["name"])
    (out / "model.json").write_text(json.dumps(card, indent=2) + "\n")
    decision = choose_shipped(str(final_settings.get("model", "auto")), summary,
                              json.loads(Path(ctx.input("baseline")).read_text()),
                              bool(ctx.values.get("with_baseline", True)),
                              metric_label(choice["primary"]["name"], choice),
                              str(final_settings.get("lead", "auto")))
    (out / SHIPPED_FILE).write_text(json.dumps(decision, indent=2) + "\n")
    log.info("ships the %s (%s): %s", decision["shipped"], decision["model"], decision["why"])
    return card


def export_baseline(ctx: RunContext) -> dict[str, Any]:
    """Refit the CV-best baseline on every trainval row and export it (baseline.skops and its
    card baseline.json), with a binary threshold tuned on its own out-of-fold predictions.
    A baseline with cached embeddings beside the tensors' rows (`features.extractor`;
    `WITH_EMBEDDINGS` ends its name) is refitted on both, and the frozen backbone that made
    them is exported beside it (`export_extractor`): served, it embeds raw inputs first, as
    the features step did, and puts the embeddings beside the inputs' flat rows."""
    from sklearn.base import clone

    task = ctx.task
    summary = json.loads(Path(ctx.input("summary")).read_text())
    choice = json.loads(Path(ctx.input("metric")).read_text())
    name = summary["best"]
    registered, embedded = baseline_source(ctx, name)
    estimator = clone(task.baselines(ctx.modality, ctx.section("baseline"),
                                     ctx.seed)[registered])
    tensors = Part(task, ctx.folder("index"), None, "trainval")
    train, train_rows = training_part(ctx, tensors)
    shape = train.take([0]) if isinstance(train, RowSource) else train
    item_shape = np.shape(shape["x"])[1:]  # the stored items', before any flat rows
    extractor = None
    if embedded:
        from dlworkflow.models.extractors import export_extractor, extractor_choice

        train = shape = with_embeddings(ctx, tensors, train)
        extractor = {**export_extractor(extractor_choice(ctx.folder("features")), item_shape,
                                        ctx.folder("model", output=True)), "beside_flat": True}
    else:  # a backbone exported by an earlier run with an extractor would be served with it
        from dlworkflow.models.extractors import EXTRACTOR_FILE

        (Path(ctx.folder("model", output=True)) / EXTRACTOR_FILE).unlink(missing_ok=True)
    estimator = task.prepare_baseline(estimator, choice, shape)
    settings = flat_settings(ctx)
    fit_baseline(ctx, {name: estimator}, train)
    classes = tuple(shape["classes"])

    threshold = task.threshold(model_oof(ctx, name), choice, classes,
                               ctx.section("final").get("threshold", "tune"))
    card = {"kind": "baseline", "model": name, "dataset": ctx.dataset.get("description", ""),
            "modality": ctx.dataset["modality"], "task": ctx.dataset["task"],
            "architecture": name, "classes": list(classes), "threshold": threshold,
            "train_rows": train_rows, "cv": summary.get("headline"),
            "layout": dict(ctx.dataset["layout"]),
            **card_inputs(ctx, item_shape), "flat": settings,
            **({"extractor": extractor} if extractor else {}), "environment": environment()}
    save_baseline(estimator, ctx.folder("model", output=True), card)
    log.info("baseline %s refitted on %d trainval rows and exported%s", name, train_rows,
             f", behind the frozen {extractor['name']} that embeds its inputs" if extractor else "")
    return card


def compare_on_test(primary: str, greater_is_better: bool, shipped: str,
                    scored: dict[str, dict[str, Any]], confidence: float) -> dict[str, Any] | None:
    """The shipped model's primary test score minus the other model's, with a paired
    bootstrap interval (the difference on each resample both were scored on), and whether
    the test tells them apart: when the interval holds 0 the gap is within what that many
    test units can show, and the cross-validated choice stands on firmer ground than the
    one test. None when only one model was scored."""
    other = next((kind for kind in scored if kind != shipped), None)
    if other is None or not all(primary in scored[kind][DRAWS] for kind in (shipped, other)):
        return None
    mine, theirs = scored[shipped], scored[other]
    difference = mine["metrics"][primary]["value"] - theirs["metrics"][primary]["value"]
    interval = percentile_interval(mine[DRAWS][primary] - theirs[DRAWS][primary], confidence)
    if interval is None or interval[0] <= 0 <= interval[1]:
        verdict = (f"the test does not tell them apart: the {100 * confidence:.0f} % interval of "
                   "the difference holds 0")
    elif (interval[0] > 0) == greater_is_better:
        verdict = "the shipped model is better on the test beyond the resampling noise"
    else:
        verdict = "the other model is better on the test beyond the resampling noise"
    return {"metric": primary, "shipped": shipped, "other": other,
            "other_model": theirs["model"], "shipped_minus_other": float(difference),
            "low": None if interval is None else interval[0],
            "high": None if interval is None else interval[1], "verdict": verdict}


def explain_network(ctx: RunContext, network: Any, test: dict[str, Any], frame: pd.DataFrame,
                    rows_wanted: tuple[int, int]) -> list[dict[str, Any]]:
    """SHAP explanations of the network's test predictions (`frame`: its rows of
    predictions.parquet), `rows_wanted`: rows a predicted class and rows in all
    (`final.explanations`, `final.explained_rows`), over a background of up to 100 trainval
    rows: they explain the network, the exported model itself, whichever model ships.
    Computed here, where the network is loaded and the test rows are read, so the report only
    draws them."""
    per_class, in_all = rows_wanted
    if per_class <= 0 or in_all <= 0:
        return []
    from dlworkflow.explain import explain

    rows = RowSource(Part(ctx.task, Path(ctx.input("index")).parent, None, "trainval"))
    rng = np.random.default_rng(0)
    background = rows.take(rng.choice(len(rows), min(100, len(rows)), replace=False))["x"]
    in_test_order = frame.drop_duplicates("id").set_index("id").loc[list(test["ids"])].reset_index()
    return explain(network.model, ctx.modality, ctx.task, test, in_test_order, background,
                   (per_class, in_all, 300), network.card.get("tensors"))


def score_test(ctx: RunContext) -> dict[str, Any]:
    """Score the final network and the exported baseline once on the test rows, each metric
    with a bootstrap confidence interval; the headline is the shipped model's. Write
    test_metrics.json, predictions.parquet, the plots' CSV files (of the shipped model) and
    explanations.json (`explain_network`)."""
    task = ctx.task
    final_settings = ctx.section("final")
    choice = json.loads(Path(ctx.input("metric")).read_text())
    decision = json.loads(Path(ctx.input("shipped")).read_text())
    model_dir = ctx.folder("model")
    network = load_shipped(model_dir, "network")
    classes = tuple(network.card["classes"])
    plan_path = ctx.input("plan")
    test = load_test_arrays(task, plan_path, list(ctx.input("test_shards")), classes)
    if not len(test["ids"]):
        raise ValueError(f"{plan_path}: the plan has no test rows to score")
    bootstrap = {"resamples": int(final_settings.get("bootstrap", 1000)), "seed": ctx.seed,
                 "confidence": float(final_settings.get("confidence", 0.95))}
    scored, frames = {}, {}
    candidates = [network] + ([load_shipped(model_dir, "baseline")]
                              if ctx.inputs.get("baseline_model") else [])
    for model in candidates:
        scored[model.kind], frames[model.kind] = task.evaluate(
            choice, test, model.outputs(test), classes, model.card.get("threshold"),
            model.card["architecture"], bootstrap)
        spec = model.card.get("extractor")
        if spec:  # what the report says the baseline reads
            scored[model.kind]["input"] = (
                f"on its flat rows{' with ' if spec.get('beside_flat') else ' replaced by '}"
                f"the embeddings of the frozen {spec['name']}, exported beside it")
    shipped = decision["shipped"]
    comparison = compare_on_test(choice["primary"]["name"],
                                 bool(choice["primary"]["greater_is_better"]), shipped, scored,
                                 bootstrap["confidence"])
    for entry in scored.values():
        entry.pop(DRAWS)
    metrics_output = ctx.output("metrics")
    task.write_plots(Path(metrics_output).parent / "plots", frames[shipped], classes,
                     task.positive(choice, classes))
    result: dict[str, Any] = {
        "primary": choice["primary"]["name"],
        "greater_is_better": choice["primary"]["greater_is_better"],
        "confidence": bootstrap["confidence"], "bootstrap_resamples": bootstrap["resamples"],
        "bootstrap_unit": scored[shipped].get("bootstrap_unit", task.bootstrap_unit),
        "threshold": network.card["threshold"],
        "shipped": {k: decision[k] for k in ("shipped", "model", "why")},
        **scored, **task.test_notes(), **task.test_references(choice, test, scored),
        **({"comparison": comparison} if comparison else {}),
    }
    primary = result["primary"]
    head = scored[shipped]["metrics"][primary]
    result["headline"] = {"model": scored[shipped]["model"], "kind": shipped,
                          primary: head["value"], f"{primary}_low": head["low"],
                          f"{primary}_high": head["high"]}
    Path(metrics_output).write_text(json.dumps(result, indent=2) + "\n")
    pd.concat(list(frames.values()), ignore_index=True).to_parquet(ctx.output("predictions"),
                                                                    index=False)
    explained = explain_network(ctx, network, test, frames["network"],
                                (int(final_settings.get("explanations", 2)),
                                 int(final_settings.get("explained_rows", 20))))
    Path(ctx.output("explanations")).write_text(json.dumps(explained, indent=1) + "\n")
    log.info("test %s of the shipped %s (%s): %.4f [%.4f, %.4f] (%d rows)", primary, shipped,
             scored[shipped]["model"], head["value"], head["low"], head["high"],
             scored[shipped]["rows"])
    return result
