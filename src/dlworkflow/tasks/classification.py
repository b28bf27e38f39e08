"""Classification: class labels in, class probabilities out, decided by argmax or a tuned
threshold; stratified group folds; confusion, ROC and PR plots."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from dlworkflow.errors import ConfigError
from dlworkflow.tasks.base import metric_entry, save_csv, scored
from dlworkflow.tasks.items import ItemTask

#: under this share or count a class is called rare in the EDA
RARE_SHARE, RARE_COUNT = 0.05, 10

UNSEEN_LABEL = "(unseen label)"


class ClassificationTask(ItemTask):
    """Predict one class per item."""

    name = "classification"
    estimator_kind = "classifier"
    stratified = "stratified "
    dvc_plots: ClassVar[dict[str, dict[str, Any]]] = {
        "Confusion matrix, test ({dataset})": {
            "template": "confusion", "x": "predicted",
            "y": {"results/{dataset}/final/plots/confusion.csv": "actual"}},
        "ROC, test ({dataset})": {
            "template": "simple", "x": "fpr",
            "y": {"results/{dataset}/final/plots/roc.csv": "tpr"}},
        "Precision-recall, test ({dataset})": {
            "template": "simple", "x": "recall",
            "y": {"results/{dataset}/final/plots/pr.csv": "precision"}},
    }

    # --- targets ---------------------------------------------------------------------
    def label_value(self, value: Any) -> Any:
        """A stripped string (a float that is a whole number loses its '.0')."""
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        return str(value).strip()

    def classes(self, index: pd.DataFrame) -> tuple[str, ...]:
        if "label" not in index or index["label"].isna().all():
            return ()
        labels = index.loc[index["role"] == "trainval", "label"]
        return tuple(sorted(labels.astype(str).unique()))

    # --- the metric ------------------------------------------------------------------
    def metric_inputs(self, inventory: pd.DataFrame) -> tuple[pd.Series | None, str | None]:
        return inventory["label"], None

    def metric_choice(self, labels: pd.Series | None, settings: Mapping[str, Any],
                      frequency: str | None) -> tuple[dict[str, Any], dict, list[dict], str]:
        minority_share = float(settings.get("imbalance_share", 0.2))
        beta = float(settings.get("beta", 1.0))
        counts = labels.astype(str).value_counts()
        counts = counts.sort_values(ascending=False, kind="stable")
        shares = counts / counts.sum()
        facts: dict[str, Any] = {
            "classes": len(counts), "class_counts": {k: int(v) for k, v in counts.items()},
            "imbalance_ratio": float(counts.iloc[0] / counts.iloc[-1])}
        minority, share = str(shares.index[-1]), float(shares.iloc[-1])
        if len(counts) == 2:
            chosen_positive = settings.get("positive_label")
            if chosen_positive is not None and str(chosen_positive) not in counts.index:
                raise ValueError(f"intake.positive_label: {chosen_positive!r} is not a class "
                                 f"({', '.join(counts.index)})")
            minority = str(chosen_positive) if chosen_positive is not None else minority
            share = float(shares[minority])
            facts["positive_label"] = minority
        if len(counts) == 2 and settings.get("ranking"):
            primary, secondary = metric_entry("roc_auc"), [metric_entry("pr_auc"),
                                                           metric_entry("accuracy")]
            why = ("intake.ranking is true: the scores will be used to rank items, so ROC AUC "
                   "(threshold-free ordering quality) is primary; PR AUC follows the positive "
                   f"class '{minority}'.")
        elif len(counts) == 2 and share < minority_share:
            primary = metric_entry("f_beta", beta=beta, positive_label=minority)
            secondary = [metric_entry("pr_auc"), metric_entry("balanced_accuracy"),
                         metric_entry("accuracy")]
            why = (f"Imbalanced binary task: '{minority}' is {share:.1%} of items (under "
                   f"intake.imbalance_share {minority_share:.0%}), so always predicting "
                   f"'{shares.index[0]}' would already score {1 - share:.1%} accuracy. "
                   f"F{beta:g} of '{minority}' measures the rare class directly and PR AUC "
                   "summarises it over all thresholds.")
        elif facts["imbalance_ratio"] <= 1.5 or share >= minority_share:
            primary, secondary = metric_entry("accuracy"), [metric_entry("macro_f1")]
            if len(counts) == 2:
                secondary.append(metric_entry("roc_auc"))
            why = (f"{len(counts)} classes, roughly balanced (largest/smallest = "
                   f"{facts['imbalance_ratio']:.2f}): accuracy is meaningful and easy to read; "
                   "macro-F1 guards against a weak class hiding in the average.")
        else:
            primary, secondary = metric_entry("macro_f1"), [metric_entry("balanced_accuracy"),
                                                            metric_entry("accuracy")]
            why = (f"{len(counts)} classes with imbalance ratio {facts['imbalance_ratio']:.1f} "
                   f"(smallest '{minority}' at {share:.1%}): macro-F1 counts every class equally,"
                   " where accuracy would be dominated by the large classes.")
        return facts, primary, secondary, why

    # --- the split -------------------------------------------------------------------
    def strata(self, inventory: pd.DataFrame, stratify: bool) -> np.ndarray:
        """The class of every item."""
        if not stratify:
            return np.zeros(len(inventory), dtype=int)
        return inventory["label"].astype(str).to_numpy()

    # --- models ----------------------------------------------------------------------
    def network_outputs(self, classes: Sequence[str], y: np.ndarray) -> int:
        return len(classes)

    def output_layer(self, x: Any, spec: Any) -> Any:
        import keras

        return keras.layers.Dense(spec.outputs, activation="softmax", dtype="float32",
                                  name="classes")(x)

    def loss(self) -> tuple[Any, list[str]]:
        import keras

        return keras.losses.SparseCategoricalCrossentropy(), ["accuracy"]

    def class_weights(self, setting: Any, rows: pd.DataFrame,
                      classes: tuple[str, ...]) -> dict[int, float] | None:
        """Keras class_weight from `train.class_weight`: none, balanced, or {class: weight}."""
        if not classes or setting in (None, "none"):
            return None
        labels = rows["label"]
        if setting == "balanced":
            counts = labels.astype(str).value_counts()
            return {i: float(len(labels) / (len(classes) * counts.get(c, 1)))
                    for i, c in enumerate(classes)}
        unknown = sorted(set(map(str, setting)) - set(classes))
        if unknown:
            raise ConfigError(f"train.class_weight: {', '.join(unknown)} not among the classes "
                              f"({', '.join(classes)})")
        return {i: float(setting.get(c, 1.0)) for i, c in enumerate(classes)}

    def resampling(self, setting: str) -> str:
        return setting

    def decide(self, output: np.ndarray, classes: Sequence[str],
               threshold: Mapping[str, Any] | None = None) -> np.ndarray:
        """Predicted labels: argmax, or for a binary task the tuned threshold on the positive."""
        classes = np.asarray(classes)
        if not threshold:
            return classes[np.asarray(output).argmax(axis=1)]
        positive = threshold["positive"]
        column = list(classes).index(positive)
        negative = next(c for c in classes if c != positive)
        return np.where(np.asarray(output)[:, column] >= threshold["threshold"], positive,
                        negative)

    def from_estimator(self, prediction: np.ndarray, classes: Sequence[str]) -> np.ndarray:
        return np.asarray(classes)[np.asarray(prediction, dtype=int)]

    def probabilities(self, output: np.ndarray, classes: Sequence[str]) -> np.ndarray | None:
        return output

    def fold_truth(self, arrays: Mapping[str, Any], classes: Sequence[str]) -> np.ndarray:
        return np.asarray(classes)[arrays["y"]]

    # --- the final model and the test ------------------------------------------------
    def positive(self, choice: Mapping[str, Any], classes: Sequence[str]) -> str | None:
        if len(classes) != 2:
            return None
        positive = choice.get("positive_label")
        return str(positive) if positive is not None and str(positive) in classes else classes[1]

    def threshold(self, oof: Callable[[], pd.DataFrame], choice: Mapping[str, Any],
                  classes: Sequence[str], setting: Any) -> dict[str, Any] | None:
        """The decision threshold on the positive class's probability for a binary task.

        `setting` is `final.threshold`: `tune` picks, on the network's out-of-fold
        predictions, the threshold in 0.05-0.95 (steps of 0.01) that maximises the primary
        metric (ties go to the one nearest 0.5); a number fixes it; `none` keeps argmax
        (0.5). Metrics computed from scores (ROC AUC, PR AUC) do not depend on it: with such
        a primary, `tune` keeps 0.5, and the record gives the out-of-fold scores of the first
        chosen metric computed from labels (accuracy after intake.ranking), if any.
        """
        from dlworkflow.metrics import METRICS, metric_names, score

        positive = self.positive(choice, classes)
        if positive is None or setting in (None, "none"):
            return None
        frame = oof()
        negative = next(c for c in classes if c != positive)
        primary = choice["primary"]["name"]
        # what a threshold changes: the primary, or with one from scores the first from labels
        judged = next((name for name in metric_names(choice) if METRICS[name].needs == "labels"),
                      None)
        y_true = frame["y_true"].astype(str).to_numpy()
        scores = frame[f"p_{positive}"].to_numpy(dtype=float)

        def value(threshold: float) -> float:
            y_pred = np.where(scores >= threshold, positive, negative)
            return score(choice, y_true, y_pred)[judged]

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
        record = {"positive": positive, "threshold": chosen, "how": how}
        if judged is not None:
            record.update({f"oof_{judged}_at_0.5": value(0.5),
                           f"oof_{judged}_at_threshold": value(chosen)})
        return record

    def evaluate(self, choice: Mapping[str, Any], test: Mapping[str, Any], output: np.ndarray,
                 classes: Sequence[str], threshold: Mapping[str, Any] | None, model: str,
                 bootstrap: Mapping[str, Any]) -> tuple[dict[str, Any], pd.DataFrame]:
        from dlworkflow.metrics import prediction_frame, score

        names = np.asarray([*classes, UNSEEN_LABEL])
        y_true = names[test["y"]]  # -1 (a label training never saw) -> "(unseen label)"
        proba = np.asarray(output, dtype=float)
        y_pred = self.decide(proba, classes, threshold)

        def metric_fn(picked: np.ndarray) -> Mapping[str, float]:
            return score(choice, y_true[picked], y_pred[picked], proba[picked], classes)

        point = score(choice, y_true, y_pred, proba, classes)
        frame = prediction_frame(test["ids"], -1, model, y_true, y_pred, proba, classes)
        return scored(model, len(test["ids"]), len(test["ids"]), point, metric_fn,
                      bootstrap), frame

    def write_plots(self, folder: Any, frame: pd.DataFrame, classes: Sequence[str],
                    positive: str | None) -> list[str]:
        """Confusion pairs, and ROC and PR points (the positive class, or micro-averaged
        one-vs-rest for several classes)."""
        from sklearn.metrics import precision_recall_curve, roc_curve

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_csv(folder, "confusion.csv", pd.DataFrame({
            "actual": frame["y_true"].astype(str), "predicted": frame["y_pred"].astype(str)}))
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
        save_csv(folder, "roc.csv", pd.DataFrame({"fpr": fpr, "tpr": tpr}))
        save_csv(folder, "pr.csv", pd.DataFrame({"recall": recall, "precision": precision}))
        return ["confusion.csv", "roc.csv", "pr.csv"]

    def prediction_columns(self, output: np.ndarray, card: Mapping[str, Any]) -> dict[str, Any]:
        classes = np.asarray(card["classes"])
        # the final model's card carries the tuned decision threshold of a binary task
        columns = {"prediction": self.decide(output, classes, card.get("threshold"))}
        for number, name in enumerate(classes):
            columns[f"p_{name}"] = output[:, number]
        return columns

    # --- reports ---------------------------------------------------------------------
    def eda_target(self, inventory: pd.DataFrame, series: Callable[[], Mapping[str, Any]],
                   season: int) -> dict[str, Any]:
        """Class counts with a bar chart, and warnings about rare classes."""
        from dlworkflow.figures import figure_uri, new_figure

        counts = inventory["label"].astype(str).value_counts().sort_index()
        shares = counts / counts.sum()
        figure, axes = new_figure(max(3.0, 0.35 * len(counts)), 2.4)
        axes.bar(counts.index, counts.to_numpy(), color="#f58518")
        axes.tick_params(labelsize=7)
        axes.set_ylabel("items", fontsize=8)
        rare = [c for c in counts.index if shares[c] < RARE_SHARE or counts[c] < RARE_COUNT]
        return {"task": self.name, "figure": figure_uri(figure),
                "counts": {k: int(v) for k, v in counts.items()},
                "shares": {k: float(v) for k, v in shares.items()},
                "imbalance_ratio": float(counts.max() / counts.min()), "rare": rare,
                "warnings": [f"class '{c}' is rare: {counts[c]} items ({shares[c]:.1%}); "
                             "metrics on it will be noisy and stratified splits matter"
                             for c in rare]}

    def eda_summary(self, target: Mapping[str, Any]) -> dict[str, Any]:
        return {"classes": len(target["counts"]), "class_counts": target["counts"],
                "imbalance_ratio": round(target["imbalance_ratio"], 4),
                "rare_classes": target["rare"]}

    def label_conflicts(self, duplicates: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [d for d in duplicates if len(d["labels"]) > 1]

    def report_figures(self, mine: pd.DataFrame, predictions: pd.DataFrame,
                       test: Mapping[str, Any], card: Mapping[str, Any],
                       choice: Mapping[str, Any]) -> dict[str, Any]:
        """Confusion matrix, ROC and PR curves (binary), calibration, per-class table."""
        from dlworkflow.figures import calibration_figure, confusion_figure, curve_figures

        classes = card["classes"]
        y_true, y_pred = mine["y_true"].to_numpy(), mine["y_pred"].to_numpy()
        proba = mine[[f"p_{c}" for c in classes]].to_numpy(dtype=float)
        shown = [{"title": "confusion matrix (test)",
                  "uri": confusion_figure(y_true, y_pred, classes)}]
        if len(classes) == 2:
            positive = (card.get("threshold") or {}).get("positive") or \
                choice.get("positive_label") or classes[1]
            shown.extend(curve_figures(y_true, mine[f"p_{positive}"].to_numpy(),
                                               str(positive)))
        uri, ece = calibration_figure(y_true, proba, classes)
        shown.append({"title": "calibration", "uri": uri})
        return {"figures": shown, "ece": ece,
                "per_class": per_class_table(y_true, y_pred, classes)}

    def worst_errors(self, frame: pd.DataFrame, classes: Sequence[str],
                     per_class: int) -> pd.DataFrame | None:
        """The most confident mistakes, `per_class` per true class."""
        wrong = frame[frame["y_true"] != frame["y_pred"]].copy()
        if wrong.empty:
            return wrong
        columns = [f"p_{c}" for c in classes]
        wrong["confidence"] = wrong[columns].max(axis=1)
        wrong = wrong.sort_values(["confidence", "id"], ascending=[False, True])
        return wrong.groupby("y_true", sort=True).head(per_class).head(4 * max(per_class, 1))

    def explained_rows(self, frame: pd.DataFrame, classes: Sequence[str], per_class: int,
                       limit: int | None = None) -> list[int]:
        """For each predicted class its `per_class` most confident test rows, class by class;
        at most `limit` in all, where every class's most confident row comes before any
        class's second (so a set of many classes shows one row each of its first `limit`
        classes rather than all rows of a few)."""
        columns = [f"p_{c}" for c in classes]
        confidence = frame[columns].max(axis=1).to_numpy()
        predicted = frame["y_pred"].astype(str).to_numpy()
        ranked = []  # (rank within its class, class, row)
        for position, label in enumerate(classes):
            rows = np.flatnonzero(predicted == label)
            best = rows[np.argsort(-confidence[rows], kind="stable")][:per_class]
            ranked.extend((rank, position, int(row)) for rank, row in enumerate(best))
        kept = sorted(ranked)[:limit] if limit is not None else ranked
        return [row for _, _, row in sorted(kept, key=lambda entry: (entry[1], entry[0]))]

    def explained_what(self, predicted: Any, classes: Sequence[str]) -> str:
        return f"p({predicted})"



def per_class_table(y_true: np.ndarray, y_pred: np.ndarray,
                    classes: Sequence[str]) -> list[dict[str, Any]]:
    """Precision, recall, F1 and support per class on the test rows; NaN where a ratio has
    nothing to count (recall of a class with no test rows, precision of one never
    predicted): the report shows a dash there, not a 0 that reads as a failure."""
    from sklearn.metrics import precision_recall_fscore_support

    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=list(classes), zero_division=np.nan)
    return [{"class": c, "precision": p, "recall": r, "f1": f, "support": int(s)}
            for c, p, r, f, s in zip(classes, precision, recall, f1, support, strict=True)]
