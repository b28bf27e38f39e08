"""The task interface: what classification, regression and forecasting each decide.

A task owns everything that depends on what is predicted, never on what the data is: target
encoding and decoding, the output head and the loss, decisions from outputs, scoring and the
bootstrap unit, the metric choice, the split scheme with its leakage proof and its one
training rule, the shard plan, the prediction frame, and the plots. Step modules ask the task
(and the modality) and never compare task names. A registry (`dlworkflow.tasks`) maps the
name in params.yaml to the class.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from dlworkflow.errors import BadInput
from dlworkflow.layouts import is_missing


def metric_entry(name: str, **params: Any) -> dict[str, Any]:
    """One metric as `metric.json` lists it: name, direction, what it needs, description."""
    from dlworkflow.metrics import METRICS

    metric = METRICS[name]
    return {"name": name, "greater_is_better": metric.greater_is_better, "needs": metric.needs,
            "description": metric.description, **({"params": params} if params else {})}


def counts_as_leak(report: Mapping[str, Any], kind: str) -> bool:
    """Whether a leakage report's `kind` of finding is a leak: all are, except groups on both
    sides under `split.groups: false` (`groups_counted`), the scheme asked for there (FSDD's
    conventional test: every speaker's takes 0-4), which are listed only."""
    return report.get("groups_counted", True) or not kind.startswith("groups_")


@dataclass(frozen=True)
class Blocks:
    """Test rows that the bootstrap resamples together: each resample draws `count` of the
    `rows` arrays (with replacement) and scores the rows they hold; `unit` says what the
    blocks are, in the report's words (plural)."""

    rows: list[np.ndarray]
    count: int
    unit: str


def bootstrap_draws(metric_fn: Callable[[np.ndarray], Mapping[str, float]], units: int,
                    resamples: int, seed: int, blocks: Blocks | None = None
                    ) -> dict[str, np.ndarray]:
    """Every metric on each of `resamples` resamples (with replacement) of the `units` test
    units (or of `blocks` of rows), NaN where a metric is undefined on a resample (e.g. ROC
    AUC with one class). The resamples depend only on `units` (the blocks) and `seed`: two
    models scored on the same test units are resampled alike, so their draws pair up."""
    rng = np.random.default_rng(seed)
    draws: dict[str, np.ndarray] = {}
    for number in range(resamples):
        if blocks is None:
            picked = rng.integers(0, units, units)
        else:
            picked = np.concatenate([blocks.rows[j] for j in
                                     rng.integers(0, len(blocks.rows), blocks.count)])
        try:
            values = metric_fn(picked)
        except ValueError:  # e.g. ROC AUC on a resample with one class
            continue
        for name, value in values.items():
            column = draws.setdefault(name, np.full(resamples, np.nan))
            column[number] = value if np.isfinite(value) else np.nan
    return draws


def percentile_interval(values: np.ndarray, confidence: float) -> list[float] | None:
    """The central `confidence` percentile interval of the finite values (None: none)."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if not len(values):
        return None
    tail = (1 - confidence) / 2 * 100
    return [float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))]


def bootstrap_intervals(metric_fn: Callable[[np.ndarray], Mapping[str, float]], units: int,
                        resamples: int, seed: int, confidence: float) -> dict[str, list[float]]:
    """Percentile intervals of every metric over `resamples` resamples (with replacement) of
    the `units` test units; a resample where a metric is undefined is skipped for it."""
    return intervals_of(bootstrap_draws(metric_fn, units, resamples, seed), confidence)


def intervals_of(draws: Mapping[str, np.ndarray], confidence: float) -> dict[str, list[float]]:
    """{metric: percentile interval} of bootstrap draws (metrics with no finite draw left
    out)."""
    intervals = {name: percentile_interval(values, confidence) for name, values in draws.items()}
    return {name: interval for name, interval in intervals.items() if interval is not None}


#: the key of a scored model's bootstrap draws: used to compare two models on the same
#: resamples (dlworkflow.final.compare_on_test), never written to a file
DRAWS = "_draws"


def scored(model: str, rows: int, units: int, point: Mapping[str, float],
           metric_fn: Callable[[np.ndarray], Mapping[str, float]],
           bootstrap: Mapping[str, Any], blocks: Blocks | None = None) -> dict[str, Any]:
    """One model's test result: point metrics with bootstrap intervals over `units`, or over
    `blocks` of them (then `units` is the number of blocks, and `bootstrap_unit` says what
    one is), and, under DRAWS, the draws they came from."""
    draws = bootstrap_draws(metric_fn, units, int(bootstrap["resamples"]), int(bootstrap["seed"]),
                            blocks)
    intervals = intervals_of(draws, float(bootstrap["confidence"]))
    found = {"model": model, "rows": rows,
             "units": int(units) if blocks is None else len(blocks.rows)}
    if blocks is not None:
        found["bootstrap_unit"] = blocks.unit
    return {**found, "metrics": with_intervals(point, intervals), DRAWS: draws}


def save_csv(folder: Path, name: str, table: pd.DataFrame) -> None:
    """A plot's data as CSV (six significant digits)."""
    table.to_csv(folder / name, index=False, float_format="%.6g")


def with_intervals(point: Mapping[str, float], intervals: Mapping[str, list[float]]) -> dict:
    """{metric: {value, low, high}} from point values and their intervals."""
    return {name: {"value": value, "low": intervals.get(name, [None, None])[0],
                   "high": intervals.get(name, [None, None])[1]}
            for name, value in point.items()}


class Task(ABC):
    """Base class of every task; subclasses register themselves by `name`."""

    name: ClassVar[str]
    #: items carry a target label (layouts must find one)
    labelled: ClassVar[bool] = True
    #: pandas dtype of the inventory's label column
    label_dtype: ClassVar[str] = "string"
    #: what step 2's flat-row estimators predict (dlworkflow.estimators)
    estimator_kind: ClassVar[str] = "classifier"
    #: how the index's rows are written to shards: "items" (one raw item each) or "windows"
    shard_unit: ClassVar[str] = "items"
    #: what a row of the split is, in the EDA's words
    split_rows: ClassVar[str] = "items"
    #: what a test row is, in the report's words
    test_rows: ClassVar[str] = "rows"
    #: what the bootstrap resamples
    bootstrap_unit: ClassVar[str] = "test rows"
    #: the intake.sample subset applies (forecasting keeps whole series)
    samples_items: ClassVar[bool] = True
    #: training rows are read on demand from memory-mapped shards (`data.RowSource`), never
    #: all at once: networks and baselines hold the same memory for any number of rows
    #: (forecasting: one window a step of every series; its baselines fit chunk by chunk)
    reads_rows_on_demand: ClassVar[bool] = False
    #: layout kinds the task can read (None: whatever the modality reads)
    layout_kinds: ClassVar[tuple[str, ...] | None] = None
    #: DVC plots of the final step as {title: definition}, {dataset} filled in later
    dvc_plots: ClassVar[dict[str, dict[str, Any]]] = {}

    # --- targets -------------------------------------------------------------------------
    def parse_label(self, value: Any) -> Any:
        """A raw label as the inventory stores it, or BadInput (missing, or unreadable)."""
        if is_missing(value):
            raise BadInput("missing label", "missing_label")
        return self.label_value(value)

    def label_value(self, value: Any) -> Any:
        """A present label as the inventory stores it: a stripped string by default."""
        return str(value).strip()

    def classes(self, index: pd.DataFrame) -> tuple[str, ...]:
        """Class names in a fixed order (all trainval labels), or () when values are predicted."""
        return ()

    def encode_targets(self, rows: pd.DataFrame, classes: tuple[str, ...]) -> np.ndarray | None:
        """Targets of index rows: class numbers (-1 for a class not in `classes`) or values."""
        if "label" not in rows or rows["label"].isna().all():
            return None
        if classes:
            lookup = {c: i for i, c in enumerate(classes)}
            return rows["label"].astype(str).map(lambda c: lookup.get(c, -1)).to_numpy(
                dtype=np.int64)
        return rows["label"].astype(float).to_numpy(dtype=np.float32)

    # --- step 1: the metric --------------------------------------------------------------
    def set_aside(self, inventory: pd.DataFrame,
                  settings: Mapping[str, Any] | None) -> tuple[pd.DataFrame, list[Any]]:
        """Items that probed well but that this task cannot use, taken out at intake with a
        reason (each a `Rejection` of step "task"): (the inventory kept, the rejections).
        `settings`: what the task needs to decide (forecasting: the split and lookback)."""
        return inventory, []

    def metric_inputs(self, inventory: pd.DataFrame) -> tuple[pd.Series | None, str | None]:
        """(labels, frequency) the metric choice looks at."""
        return None, None

    @abstractmethod
    def metric_choice(self, labels: pd.Series | None, settings: Mapping[str, Any],
                      frequency: str | None) -> tuple[dict[str, Any], dict, list[dict], str]:
        """(facts for metric.json, primary, secondary metrics, rationale)."""

    # --- step 4: the split ---------------------------------------------------------------
    @abstractmethod
    def split(self, inventory: pd.DataFrame, series: Callable[[], Mapping[str, pd.DataFrame]],
              settings: Mapping[str, Any], seed: int, sample: int | None,
              key: str) -> pd.DataFrame:
        """Role, fold and in_sample of every unit (`series` re-reads the raw series)."""

    @abstractmethod
    def leakage_report(self, splits: pd.DataFrame, settings: Mapping[str, Any]) -> dict[str, Any]:
        """What could leak between trainval and test or between folds, with its proof."""

    @abstractmethod
    def describe_scheme(self, settings: Mapping[str, Any], has_groups: bool) -> str:
        """One sentence saying how test and folds were made."""

    # --- step 3: the shard plan and the rows of a fold -----------------------------------
    @abstractmethod
    def plan(self, splits: pd.DataFrame, tensors: Mapping[str, Any], split: Mapping[str, Any],
             seed: int, choice: Mapping[str, Any] | None = None) -> pd.DataFrame:
        """Which shard every unit goes to (`choice`: the metric choice, which records what the
        data decided, such as a forecasting lookback)."""

    @abstractmethod
    def training_rows(self, trainval: pd.DataFrame, fold: int, gap: int) -> pd.DataFrame:
        """The trainval rows fold `fold` trains on (the task's one training rule)."""

    def select(self, index: pd.DataFrame, fold: int | None, part: str, gap: int = 0,
               use_sample: bool = True) -> pd.DataFrame:
        """Rows of `part` ("train", "valid" or "trainval") for `fold`; never test rows."""
        rows = index[index["role"] == "trainval"]
        if use_sample and part != "trainval" and "in_sample" in rows:
            rows = rows[rows["in_sample"]]
        if part == "trainval":
            return rows
        if fold is None:
            raise ValueError("a fold is needed for part 'train' or 'valid'")
        if part == "valid":
            return rows[rows["fold"] == fold]
        if part != "train":
            raise ValueError(f"part must be train, valid or trainval, not {part!r}")
        return self.training_rows(rows, fold, gap)

    def held_out(self, test: pd.DataFrame) -> pd.DataFrame:
        """The test rows of a plan that are scored (all of them, unless the task says not)."""
        return test

    # --- steps 2 and 5: models -----------------------------------------------------------
    def baselines(self, modality: Any, settings: Mapping[str, Any], seed: int) -> dict[str, Any]:
        """Unfitted step-2 estimators by name."""
        return modality.baselines(self.estimator_kind, settings, seed)

    def baseline_inputs(self, modality: Any, arrays: Mapping[str, Any],
                        flat_settings: Mapping[str, Any]) -> Any:
        """What the step-2 estimators take: the modality's flat rows."""
        return modality.flat(arrays["x"], flat_settings)

    def prepare_baseline(self, estimator: Any, choice: Mapping[str, Any],
                         rows: Mapping[str, Any]) -> Any:
        """Set what an estimator learns from the metric choice or the data's shape (of
        `rows`, arrays of the fold's rows): a step with a `channels` parameter (MiniRocket)
        gets the channels of (rows, time, channels) series, which flat rows lay end to end."""
        x = rows.get("x")
        if getattr(x, "ndim", 0) == 3 and hasattr(estimator, "get_params"):
            names = [name for name in estimator.get_params()
                     if name == "channels" or name.endswith("__channels")]
            estimator.set_params(**dict.fromkeys(names, int(x.shape[2])))
        return estimator

    def network_outputs(self, classes: Sequence[str], y: np.ndarray) -> int:
        """Units of the output layer."""
        return 1

    @abstractmethod
    def output_layer(self, x: Any, spec: Any) -> Any:
        """The network's last layer on `x` (softmax classes or values in target units)."""

    @abstractmethod
    def loss(self) -> tuple[Any, list[str]]:
        """(Keras loss, Keras metrics) to train with."""

    def target_stats(self, train: Mapping[str, Any] | None,
                     rows: pd.DataFrame) -> tuple[float, float]:
        """(offset, scale) that map a unit-variance output to the fold's targets."""
        return 0.0, 1.0

    def sample_weights(self, arrays: Mapping[str, Any]) -> np.ndarray | None:
        """Per-row weights of the training loss (None: every row counts the same)."""
        return None

    def class_weights(self, setting: Any, rows: pd.DataFrame,
                      classes: tuple[str, ...]) -> dict[int, float] | None:
        """Keras class_weight for the training `rows` (classification only)."""
        return None

    def resampling(self, setting: str) -> str:
        """`train.resample` as it applies to this task (classification only)."""
        return "none"

    def decide(self, output: np.ndarray, classes: Sequence[str],
               threshold: Mapping[str, Any] | None = None) -> np.ndarray:
        """Predictions from network outputs (one value per row, or a row per horizon)."""
        output = np.asarray(output)
        return output[:, 0] if output.ndim == 2 and output.shape[1] == 1 else output

    def from_estimator(self, prediction: np.ndarray, classes: Sequence[str]) -> np.ndarray:
        """Predictions from a step-2 estimator's `predict` (class numbers become names)."""
        return prediction

    def probabilities(self, output: np.ndarray, classes: Sequence[str]) -> np.ndarray | None:
        """Class probabilities in a network's output, if it has them."""
        return None

    def fold_truth(self, arrays: Mapping[str, Any], classes: Sequence[str]) -> np.ndarray:
        """The targets of a fold's validation rows as predictions are compared with them."""
        return arrays["y"]

    def fold_scores(self, choice: Mapping[str, Any], valid: Mapping[str, Any], output: Any,
                    proba: np.ndarray | None, classes: Sequence[str], fold: int,
                    model: str) -> tuple[dict[str, float], pd.DataFrame]:
        """Scores and the prediction frame of one model on a fold's validation rows; `output`
        is the decided prediction (labels or values)."""
        from dlworkflow.metrics import prediction_frame, score

        y_true = self.fold_truth(valid, classes)
        metrics = score(choice, y_true, output, proba, classes)
        return metrics, prediction_frame(valid["ids"], fold, model, y_true, output, proba,
                                         classes)

    # --- step 7: the final model and the one test score ----------------------------------
    def threshold(self, oof: Callable[[], pd.DataFrame], choice: Mapping[str, Any],
                  classes: Sequence[str], setting: Any) -> dict[str, Any] | None:
        """The decision threshold the final model ships with (binary classification)."""
        return None

    def positive(self, choice: Mapping[str, Any], classes: Sequence[str]) -> str | None:
        """The positive class of a binary task, else None."""
        return None

    def test_notes(self) -> dict[str, Any]:
        """What test_metrics.json says about which test units were scored."""
        return {}

    def test_references(self, choice: Mapping[str, Any], test: Mapping[str, Any],
                        scored: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """Scores of a field's reference method on the same test rows, and each scored
        model's standing against it, for test_metrics.json (none by default)."""
        return {}

    @abstractmethod
    def evaluate(self, choice: Mapping[str, Any], test: Mapping[str, Any], output: np.ndarray,
                 classes: Sequence[str], threshold: Mapping[str, Any] | None, model: str,
                 bootstrap: Mapping[str, Any]) -> tuple[dict[str, Any], pd.DataFrame]:
        """Point metrics with bootstrap intervals (`bootstrap`: resamples, seed, confidence),
        and the prediction frame, for one model's test output."""

    @abstractmethod
    def write_plots(self, folder: Any, frame: pd.DataFrame, classes: Sequence[str],
                    positive: str | None) -> list[str]:
        """CSV files behind the DVC plots of one model's test predictions."""

    def prediction_columns(self, output: np.ndarray, card: Mapping[str, Any]) -> dict[str, Any]:
        """`dlworkflow predict`'s columns for raw inputs: the prediction (and probabilities)."""
        output = np.asarray(output)
        return {"prediction": output[:, 0] if output.ndim == 2 else output}

    # --- reports ------------------------------------------------------------------------
    def eda_target(self, inventory: pd.DataFrame, series: Callable[[], Mapping[str, Any]],
                   season: int) -> dict[str, Any]:
        """The EDA's target section."""
        return {"task": self.name, "warnings": []}

    def eda_summary(self, target: Mapping[str, Any]) -> dict[str, Any]:
        """What the EDA summary adds about the target."""
        return {}

    def label_conflicts(self, duplicates: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Groups of identical items with different labels (a problem for classes only)."""
        return []

    def report_figures(self, mine: pd.DataFrame, predictions: pd.DataFrame,
                       test: Mapping[str, Any], card: Mapping[str, Any],
                       choice: Mapping[str, Any]) -> dict[str, Any]:
        """{figures, per_class, ece?} the final report shows for the test predictions."""
        return {"figures": [], "per_class": []}

    def worst_errors(self, frame: pd.DataFrame, classes: Sequence[str],
                     per_class: int) -> pd.DataFrame | None:
        """The test rows the report previews as the worst errors (None: no previews)."""
        residual = (frame["y_true"] - frame["y_pred"]).abs()
        return frame.assign(error=residual).sort_values("error", ascending=False).head(
            4 * max(per_class, 1))

    def explained_rows(self, frame: pd.DataFrame, classes: Sequence[str], per_class: int,
                       limit: int | None = None) -> list[int]:
        """Row positions of test predictions to explain: `per_class` (the task's own
        grouping; for a task without classes, rows), at most `limit` in all."""
        count = min(per_class, len(frame))
        return list(range(count if limit is None else min(count, limit)))

    def explained_value(self, values: np.ndarray, output: int | None) -> np.ndarray:
        """The one number per row that explanations attribute."""
        return values[:, output if output is not None else 0]

    def explained_what(self, predicted: Any, classes: Sequence[str]) -> str:
        """What an explanation explains, in words."""
        return "prediction"


def finite_number(value: Any) -> float:
    """A label as a finite float, or BadInput."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise BadInput(f"label {value!r} is not a number", "bad_label") from None
    if not math.isfinite(number):
        raise BadInput(f"label {value!r} is not a finite number", "bad_label")
    return number
