"""Regression: one number per item; folds stratified on quantile bins of the target;
outputs scaled to the target's units; predicted-against-true plots."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from dlworkflow.tasks.base import finite_number, metric_entry, save_csv, scored
from dlworkflow.tasks.items import ItemTask


class PredictsValues:
    """Networks of tasks that predict numbers: linear outputs in the target's units, trained
    on the squared error (the mean absolute error reported per epoch)."""

    def output_layer(self, x: Any, spec: Any) -> Any:
        return values_layer(x, spec)

    def loss(self) -> tuple[Any, list[str]]:
        import keras

        return keras.losses.MeanSquaredError(), ["mae"]


class RegressionTask(PredictsValues, ItemTask):
    """Predict one number per item."""

    name = "regression"
    label_dtype = "Float64"
    estimator_kind = "regressor"
    dvc_plots: ClassVar[dict[str, dict[str, Any]]] = {
        "Predicted vs actual, test ({dataset})": {
            "template": "scatter", "x": "actual",
            "y": {"results/{dataset}/final/plots/scatter.csv": "predicted"}},
    }

    def label_value(self, value: Any) -> Any:
        """A finite float."""
        return finite_number(value)

    def metric_choice(self, labels: pd.Series | None, settings: Mapping[str, Any],
                      frequency: str | None) -> tuple[dict[str, Any], dict, list[dict], str]:
        return {}, metric_entry("rmse"), [metric_entry("mae")], (
            "Regression: RMSE is primary (penalises large errors, in the target's units); "
            "MAE is reported beside it as the typical error.")

    def strata(self, inventory: pd.DataFrame, stratify: bool) -> np.ndarray:
        """Quantile bins (at most 5) of the target, so every fold sees its whole range."""
        if not stratify:
            return np.zeros(len(inventory), dtype=int)
        values = inventory["label"].astype(float)
        bins = min(5, max(1, values.nunique()))
        return pd.qcut(values.rank(method="first"), bins, labels=False).to_numpy()

    def target_stats(self, train: Mapping[str, Any] | None,
                     rows: pd.DataFrame) -> tuple[float, float]:
        """The training rows' mean and spread: the network predicts standardised values."""
        values = rows["label"].astype(float)
        return float(values.mean()), float(values.std(ddof=0) or 1.0)

    def evaluate(self, choice: Mapping[str, Any], test: Mapping[str, Any], output: np.ndarray,
                 classes: Sequence[str], threshold: Mapping[str, Any] | None, model: str,
                 bootstrap: Mapping[str, Any]) -> tuple[dict[str, Any], pd.DataFrame]:
        from dlworkflow.metrics import prediction_frame, score

        y_true, y_pred = np.asarray(test["y"], float), np.ravel(np.asarray(output, float))

        def metric_fn(picked: np.ndarray) -> Mapping[str, float]:
            return score(choice, y_true[picked], y_pred[picked])

        point = score(choice, y_true, y_pred)
        frame = prediction_frame(test["ids"], -1, model, y_true, y_pred)
        return scored(model, len(test["ids"]), len(test["ids"]), point, metric_fn,
                      bootstrap), frame

    def write_plots(self, folder: Any, frame: pd.DataFrame, classes: Sequence[str],
                    positive: str | None) -> list[str]:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_csv(folder, "scatter.csv", pd.DataFrame({"actual": frame["y_true"],
                                                      "predicted": frame["y_pred"]}))
        return ["scatter.csv"]

    def eda_target(self, inventory: pd.DataFrame, series: Callable[[], Mapping[str, Any]],
                   season: int) -> dict[str, Any]:
        """A histogram of the target and its summary numbers."""
        from dlworkflow.figures import figure_uri, new_figure

        figure, axes = new_figure()
        axes.hist(inventory["label"].astype(float), bins=40, color="#f58518")
        axes.set_xlabel("target", fontsize=8)
        values = inventory["label"].astype(float)
        return {"task": self.name, "figure": figure_uri(figure), "warnings": [],
                "stats": {"mean": float(values.mean()), "std": float(values.std()),
                          "min": float(values.min()), "max": float(values.max())}}

    def report_figures(self, mine: pd.DataFrame, predictions: pd.DataFrame,
                       test: Mapping[str, Any], card: Mapping[str, Any],
                       choice: Mapping[str, Any]) -> dict[str, Any]:
        from dlworkflow.figures import regression_figure

        return {"figures": [{"title": "predicted vs true", "uri": regression_figure(mine)}],
                "per_class": []}


def values_layer(x: Any, spec: Any) -> Any:
    """`spec.outputs` linear units scaled back to the target's units."""
    import keras

    x = keras.layers.Dense(spec.outputs, dtype="float32")(x)
    return keras.layers.Rescaling(spec.target_scale, offset=spec.target_offset, dtype="float32",
                                  name="values")(x)
