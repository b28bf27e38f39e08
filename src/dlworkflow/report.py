"""The final report: one self-contained HTML page per dataset (inline PNGs, no external files).

It reads what the earlier steps left (metric choice, split, CV summaries, fold histories) and
what the final step wrote (test metrics with intervals, test predictions, SHAP explanations,
model card, latency), and shows them in the order a reviewer asks: how good, compared with
what, how sure, where it fails, how fast.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dlworkflow.context import RunContext
from dlworkflow.data import load_test_arrays
from dlworkflow.evaluate import best_fold_files
from dlworkflow.figures import figure_uri, new_figure
from dlworkflow.provenance import describe
from dlworkflow.splits import shared_groups_words


def _plus_minus(entry: Mapping[str, Any]) -> str:
    return f"{entry['mean']:.4f} ± {entry['std']:.4f}"


def cv_table(baseline: Mapping[str, Any], network: Mapping[str, Any],
             names: Sequence[str]) -> list[dict[str, Any]]:
    """One row per model (baselines, then the network): CV mean ± std of every metric."""
    rows = []
    for kind, summary in (("baseline", baseline), ("network", network)):
        for model, metrics in summary["models"].items():
            rows.append({"kind": kind, "model": model, "best": model == summary["best"],
                         "values": {n: _plus_minus(metrics[n]) if n in metrics else "—"
                                    for n in names}})
    return rows


def test_table(result: Mapping[str, Any], names: Sequence[str]) -> list[dict[str, Any]]:
    """One row per scored model: the test value of every metric with its interval."""
    rows = []
    for kind in ("network", "baseline"):
        if kind not in result:
            continue
        metrics = result[kind]["metrics"]
        values = {}
        for name in names:
            entry = metrics.get(name)
            if entry is None:
                values[name] = "—"
            elif entry["low"] is None:
                values[name] = f"{entry['value']:.4f}"
            else:
                values[name] = f"{entry['value']:.4f} [{entry['low']:.4f}, {entry['high']:.4f}]"
        rows.append({"kind": kind, "model": result[kind]["model"], "values": values,
                     "input": result[kind].get("input")})
    return rows


def fold_fit(history: pd.DataFrame) -> str:
    """How one fold's curves read: "overfitting" (the validation loss rose well above its
    minimum while the training loss kept falling), "underfitting" (the best epoch was among
    the last fifth and the training loss was still falling clearly: more steps would help),
    or "balanced"."""
    train, valid = history["loss"].to_numpy(float), history["val_loss"].to_numpy(float)
    epochs = len(valid)
    if epochs < 3:
        return "underfitting"
    best = int(np.argmin(valid))
    tail = max(2, epochs // 5)  # the last fifth of the epochs

    def still_falling(values: np.ndarray) -> bool:
        start, end = values[-tail - 1], values[-1]
        return end < start - 0.05 * abs(start)

    rising = valid[-1] > valid[best] + 0.1 * abs(valid[best]) and best < epochs - tail
    if rising and train[-1] < train[best]:
        return "overfitting"
    if best >= epochs - tail and still_falling(train):
        return "underfitting"
    return "balanced"


def fit_diagnosis(histories: Sequence[str]) -> dict[str, Any]:
    """The folds' fit read from their learning curves (training and validation loss, level
    and trend), the majority reading, and a plain-words hint."""
    readings = [fold_fit(pd.read_csv(path)) for path in histories]
    readings = [r for r in readings if r]
    if not readings:
        return {"readings": [], "fit": None, "hint": "No per-fold losses were recorded."}
    counts = {r: readings.count(r) for r in ("overfitting", "underfitting", "balanced")}
    fit = max(counts, key=lambda r: (counts[r], r == "balanced"))
    folds = f"{counts[fit]} of {len(readings)} folds"
    hints = {
        "overfitting": (f"Overfitting ({folds}): the validation loss rose well above its "
                        "minimum while the training loss kept falling. Try more regularisation "
                        "(train.dropout, train.l2, stronger augment.*), a smaller network "
                        "(train.units, train.filters, train.layers), or more data."),
        "underfitting": (f"Underfitting, still learning ({folds}): the best epoch was among "
                         "the last and the training loss was still falling. Try more steps "
                         "(train.min_steps, train.epochs), a higher learning rate, more "
                         "capacity, or lighter augmentation."),
        "balanced": (f"Balanced ({folds}): the validation loss reached its minimum and "
                     "flattened; gains now come from data or architecture."),
    }
    return {"readings": readings, "fit": fit, "hint": hints[fit]}


#: fewer optimizer steps than this per fold and the network has barely trained: the report
#: calls the run a quick look. The shipped recipe plans 600 to 800 (`train.min_steps`,
#: `train.max_steps`) and its early stopping waits 300 steps (`train.patience_steps`), so no
#: fold of the recipe stops before this; a run with `train.min_steps: 0` and a few epochs does
QUICK_LOOK_STEPS = 300


def quick_look(network: Mapping[str, Any]) -> str | None:
    """A warning when the folds' networks trained too few optimizer steps for their scores
    to mean anything (a quick look: `train.min_steps: 0` with a few epochs), else None."""
    details = [fold for folds in network.get("fold_details", {}).values()
               for fold in folds.values()]
    steps = [int(fold["epochs_run"])  # an epoch is a pass, or a slice of a long one
             * -(-int(fold["train_rows"]) // (max(1, int(fold.get("global_batch_size") or 32))
                                              * int(fold.get("pass_slices") or 1)))
             for fold in details if fold.get("epochs_run")]
    if not steps or float(np.median(steps)) >= QUICK_LOOK_STEPS:
        return None
    return (f"Quick look: each fold's network trained about {int(np.median(steps))} optimizer "
            f"steps (the shipped recipe plans 600 to 800). Its scores test the path, not the "
            f"model: the shipped model is the CV winner, and a network this short is rarely it. "
            f"For real results, remove `train.min_steps: 0` and `train.epochs` from params.yaml.")


def learning_curves(histories: Sequence[str], final_history: str | None) -> str:
    """Training (solid) and validation (dashed) loss per fold, and the final model's loss."""
    figure, axes = new_figure(6.0, 3.0)
    colours = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#ff9da6"]
    losses = []
    for number, path in enumerate(histories):
        history = pd.read_csv(path)
        colour = colours[number % len(colours)]
        axes.plot(history["epoch"], history["loss"], color=colour, lw=1.2, label=f"fold {number}")
        losses.extend(history["loss"])
        if "val_loss" in history:
            axes.plot(history["epoch"], history["val_loss"], color=colour, lw=1.2, ls="--")
            losses.extend(history["val_loss"])
    if final_history and Path(final_history).is_file():
        final = pd.read_csv(final_history)
        axes.plot(final["epoch"], final["loss"], color="black", lw=2, marker="o", markersize=3,
                  label="final (train)")
        losses.extend(final["loss"])
    axes.set_xlabel("epoch", fontsize=8)
    axes.set_ylabel("loss (solid train, dashed validation)", fontsize=8)
    positive = [v for v in losses if v > 0]
    if positive and max(positive) / min(positive) > 20:  # wide range: log scale reads better
        axes.set_yscale("log")
    axes.tick_params(labelsize=7)
    axes.legend(fontsize=7, ncol=2, frameon=False)
    return figure_uri(figure)


def error_cells(ctx: RunContext, worst: pd.DataFrame | None,
                inventory: pd.DataFrame) -> list[dict[str, Any]]:
    """Previews (thumbnail, spectrogram + audio, text) of the worst errors."""
    if worst is None or worst.empty:
        return []
    rows = inventory[inventory["id"].astype(str).isin(worst["id"].astype(str))]
    items = {item.id: item for item in ctx.records(rows)}
    cells = []
    for _, row in worst.iterrows():
        item = items.get(str(row["id"]))
        html = ctx.modality.preview(item.read_bytes(), item) if item else "(raw item not found)"
        note = (f"true {row['y_true']}, predicted {row['y_pred']} ({row['confidence']:.2f})"
                if "confidence" in row else
                f"true {row['y_true']:.4g}, predicted {row['y_pred']:.4g}")
        cells.append({"id": str(row["id"]), "html": html, "note": note})
    return cells


def build_report(ctx: RunContext) -> tuple[str, dict]:
    """The report's HTML and a small JSON summary of what it shows."""
    from dlworkflow.metrics import metric_names
    from dlworkflow.pages import environment

    inputs, settings, task = ctx.inputs, ctx.section("final"), ctx.task
    read = lambda key: json.loads(Path(inputs[key]).read_text())  # noqa: E731
    choice, counts, leakage = read("metric"), read("counts"), read("leakage")
    baseline, network, result, card = read("baseline"), read("network"), read("test"), read("card")
    latency = read("latency")
    names = metric_names(choice)
    primary = names[0]
    predictions = pd.read_parquet(inputs["predictions"])
    # the folds of the network the final step trained (the CV-best where they trained several)
    histories = best_fold_files([*inputs["histories"], *(inputs.get("beside_histories") or [])],
                                network)
    shipped = result["shipped"]["shipped"]
    mine = predictions[predictions["model"] == result[shipped]["model"]]
    classes = card["classes"]
    test = load_test_arrays(task, inputs["plan"], list(inputs["test_shards"]), tuple(classes))
    context: dict[str, Any] = {
        "name": ctx.name, "dataset": ctx.dataset, "task": task, "modality": ctx.modality,
        "metric": choice, "counts": counts, "leakage": leakage,
        "shared_groups": shared_groups_words(leakage), "names": names, "primary": primary,
        "result": result, "card": card,
        "latency": latency, "cv": cv_table(baseline, network, names),
        "environment": describe(card["environment"]) if card.get("environment") else "",
        "test": test_table(result, names), "verdict": network.get("verdict", ""),
        "diagnosis": fit_diagnosis(histories), "quick_look": quick_look(network),
        "curves": learning_curves(histories, inputs.get("final_history")),
        "cells": [], **task.report_figures(mine, predictions, test, card, choice),
    }
    worst = task.worst_errors(mine, classes, int(settings.get("report_examples", 3)))
    context["cells"] = error_cells(ctx, worst, pd.read_parquet(inputs["inventory"]))
    context["no_errors"] = worst is not None and worst.empty
    context["explanations"] = json.loads(Path(inputs["explanations"]).read_text())
    context["explained_limits"] = (int(settings.get("explanations", 2)),
                                   int(settings.get("explained_rows", 20)))
    env = environment(choice)
    env.filters["milliseconds"] = milliseconds
    context["size_unit"] = ("parameters" if (latency.get("kind") or shipped) == "network"
                            else "stored values")
    html = env.get_template("report.html.j2").render(**context)
    summary = {"dataset": ctx.name, "primary": primary, "test": result["headline"],
               "cv_network": network["headline"], "cv_baseline": baseline["headline"],
               "figures": [f["title"] for f in context["figures"]],
               "worst_errors_shown": len(context["cells"]),
               "explained": len(context.get("explanations", [])),
               "diagnosis": context["diagnosis"]["hint"], "quick_look": context["quick_look"]}
    return html, summary


def milliseconds(value: float) -> str:
    """A latency for the page: one decimal from 1 ms up, two significant digits below (a
    ridge forecast's 0.022 ms read as "0.0 ms")."""
    return f"{value:.1f}" if value >= 1 else f"{value:.2g}"


def final_headline(result: Mapping[str, Any]) -> dict[str, Any]:
    """`final/headline.json`, the final step's DVC metrics: which model ships, its test
    score, and the score's interval in words, three columns a dataset in `dvc exp show`
    (every metric of both models stays in test_metrics.json, the latency in latency.json:
    a DVC metric that records time would differ between two runs of the same inputs)."""
    head, primary = result["headline"], result["primary"]
    return {"shipped": f"{head['kind']} {head['model']}", primary: head[primary],
            f"{primary}_interval": f"[{head[f'{primary}_low']:.4f}, "
                                   f"{head[f'{primary}_high']:.4f}] "
                                   f"({result['confidence']:.0%})"}


def write_report(ctx: RunContext) -> dict[str, Any]:
    """Write `final/report.html` and `final/headline.json`; return the report's summary."""
    html, summary = build_report(ctx)
    Path(ctx.output("report")).write_text(html, encoding="utf-8")
    headline = final_headline(json.loads(Path(ctx.input("test")).read_text()))
    Path(ctx.output("headline")).write_text(json.dumps(headline, indent=2) + "\n")
    return summary
