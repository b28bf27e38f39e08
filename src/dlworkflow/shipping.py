"""What the final step ships: the cross-validated winner, network or traditional baseline.

`final.model: auto` ships the model with the better CV mean of the primary metric; a tie
goes to the baseline, the simpler model. The decision also says how close the call was: the
two models' fold scores are paired (the same folds), and the network's mean lead is within
or beyond the folds' noise by Nadeau and Bengio's (2003) corrected resampled t test, which
widens the paired t test's variance for the training rows the folds share. A close call is
not overruled (a margin measured on the visible suite gained nothing, docs/BENCHMARKS.md),
only reported: on another CPU's rounding one such call went the other way. `network` or
`baseline` force one. The baseline is the CV-best traditional model refitted on every
trainval row and exported with skops, never pickle: loading refuses any type outside
scikit-learn's own and `dlworkflow.estimators`; one fitted with cached embeddings beside
its flat rows (`features.extractor`) is exported with the frozen backbone that embeds its
inputs, in Keras' format beside it. `load_shipped` gives the test, latency and
`dlworkflow predict` one interface to both kinds: stored arrays in, outputs (class
probabilities or values) out.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dlworkflow.archives import normalise_skops
from dlworkflow.errors import ConfigError
from dlworkflow.evaluate import FIELD_STRONG_BASELINES, paired_folds
from dlworkflow.heap import keep_freed_heap
from dlworkflow.provenance import LOADING, differences

log = logging.getLogger(__name__)

SHIPPED_FILE = "shipped.json"
BASELINE_FILE = "baseline.skops"
BASELINE_CARD = "baseline.json"
#: modules whose classes an exported baseline may hold (skops refuses everything else)
TRUSTED_MODULES = ("sklearn.", "numpy", "scipy.", "dlworkflow.estimators.", "builtins.")
LEADS = ("auto", "mean", "beyond_noise")


def _closeness(paired: Mapping[str, Any], precision: int = 4) -> str:
    """The reason's second sentence: the mean lead and whether it is beyond the noise."""
    mean, corrected = round(paired["mean"], precision), paired["t_corrected"]
    side = "ahead" if mean > 0 else "behind" if mean < 0 else "level"  # as it is printed
    amount = "" if side == "level" else f" by {abs(mean):.{precision}f} on average"
    statistic = (f"corrected paired t {corrected:.2f} against {paired['critical']:.2f} for "
                 f"{paired['folds']} folds" if np.isfinite(corrected) else
                 f"the same lead in each of the {paired['folds']} folds")
    if paired["beyond_noise"]:
        return f"Fold by fold the network is {side}{amount}, beyond the folds' noise ({statistic})."
    return (f"Fold by fold the network is {side}{amount}, within the folds' noise ({statistic}): "
            "the folds cannot tell the two apart, and another seed or CPU may choose the other.")


def required_lead(lead: str, baseline_model: str) -> str:
    """What `final.lead` asks of the network's CV lead over `baseline_model`: `mean` (a
    better mean) or `beyond_noise` (a lead beyond the folds' noise); `auto` asks the latter
    of a baseline in FIELD_STRONG_BASELINES and the former of any other."""
    if lead not in LEADS:
        raise ConfigError(f"final.lead: {lead!r}; use {', '.join(LEADS)}")
    if lead != "auto":
        return lead
    return "beyond_noise" if baseline_model in FIELD_STRONG_BASELINES else "mean"


def choose_shipped(setting: str, network: Mapping[str, Any], baseline: Mapping[str, Any],
                   exported: bool, label: str | None = None, lead: str = "auto"
                   ) -> dict[str, Any]:
    """Which model the final step ships, and why, from the two CV summaries alone (the test
    rows play no part). `exported` is False when no baseline is exported (`final.baseline:
    false`): then the network ships. `label`: the primary metric as
    the reports name it ("F1 of spam" for `f_beta`), in the reason's words. `lead`
    (`final.lead`, see `required_lead`): how clearly the network must lead to ship under
    `auto`; a tie, or a lead short of it, ships the baseline, the simpler model."""
    primary = network["primary"]
    greater = bool(network["greater_is_better"])
    net_name, base_name = network["best"], baseline["best"]
    net = network["models"][net_name][primary]
    base = baseline["models"][base_name][primary]
    cv = {"network": {"model": net_name, "mean": net["mean"], "std": net["std"]},
          "baseline": {"model": base_name, "mean": base["mean"], "std": base["std"]}}
    scores = (f"CV {label or primary}: network {net_name} {net['mean']:.4f} ± {net['std']:.4f}, "
              f"baseline {base_name} {base['mean']:.4f} ± {base['std']:.4f}")
    if setting not in ("auto", "network", "baseline"):
        raise ConfigError(f"final.model: {setting!r}; use auto, network or baseline")
    required = required_lead(lead, base_name)
    paired = paired_folds(net.get("folds") or [], base.get("folds") or [], greater)
    if not exported:
        if setting == "baseline":
            raise ConfigError("final.model: baseline, but final.baseline is false: no baseline "
                              "is refitted and exported to ship")
        shipped, why = "network", ("final.baseline is false: no baseline is exported, so the "
                                   "network ships")
    elif setting != "auto":
        shipped, why = setting, f"final.model in params.yaml asks for the {setting}"
    else:
        network_wins = net["mean"] > base["mean"] if greater else net["mean"] < base["mean"]
        clear = bool(paired and paired["beyond_noise"])
        shipped = "network" if network_wins and (clear or required == "mean") else "baseline"
        if shipped == "network":
            why = "the network has the better cross-validated score" + (
                f", a lead beyond the folds' noise, as replacing {base_name} asks "
                f"(final.lead: {lead})" if required != "mean" else "")
        elif network_wins:
            why = (f"the network's cross-validated lead is not beyond the folds' noise, and "
                   f"{base_name} is a baseline the field ranks level with or above the "
                   "network, which must then lead beyond the noise to replace it "
                   f"(final.lead: {lead}), so the simpler model ships" if lead == "auto" else
                   "the network's cross-validated lead is not beyond the folds' noise "
                   "(final.lead: beyond_noise), so the baseline, the simpler model, ships")
        else:
            why = ("the baseline scores at least as well in cross-validation and is the "
                   "simpler model")
    closeness = f" {_closeness(paired)}" if paired else ""
    if paired and not np.isfinite(paired["t"]):  # JSON has no infinity: the sentence says it
        paired = {**paired, "t": None, "t_corrected": None}
    return {"shipped": shipped, "model": cv[shipped]["model"], "setting": setting,
            "why": f"{why} ({scores}).{closeness}", "primary": primary, "cv": cv,
            "paired": paired, "baseline_exported": exported}


def trusted_types(path: str | Path, found: list[str] | None = None) -> list[str]:
    """The types in a skops file (`found`: as its card lists them, else read from the file),
    all of them from trusted modules, or a clear error."""
    import skops.io as sio

    if found is None:
        found = sio.get_untrusted_types(file=str(path))
    refused = [t for t in found if not str(t).startswith(TRUSTED_MODULES)]
    if refused:
        raise ValueError(f"{path}: refusing to load types outside scikit-learn and "
                         f"dlworkflow.estimators: {', '.join(refused)}")
    return found


def save_baseline(estimator: Any, folder: str | Path, card: Mapping[str, Any]) -> None:
    """`baseline.skops` (the fitted estimator) and `baseline.json` (what decodes its input)."""
    import skops.io as sio

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for part in [estimator, *estimator.get_params(deep=True).values()]:
        # scikit-learn's vectorisers keep id(stop_words), a memory address, to skip a check;
        # without it they make the check again (the same bytes for the same estimator)
        if "_stop_words_id" in getattr(part, "__dict__", {}):
            del part._stop_words_id
    sio.dump(estimator, folder / BASELINE_FILE)
    normalise_skops(folder / BASELINE_FILE)  # the same bytes for the same estimator
    types = trusted_types(folder / BASELINE_FILE)  # what we write must load again
    (folder / BASELINE_CARD).write_text(json.dumps({**card, "skops_types": types}, indent=2)
                                        + "\n")


def load_baseline(folder: str | Path) -> tuple[Any, dict[str, Any]]:
    """The exported baseline and its card."""
    import skops.io as sio

    folder = Path(folder)
    path = folder / BASELINE_FILE
    card = json.loads((folder / BASELINE_CARD).read_text())
    # the card's list of types saves reading a large file twice (a TF-IDF vocabulary: 3 s);
    # skops refuses any type in the file that the list lacks, so a wrong card cannot widen it
    estimator = sio.load(path, trusted=trusted_types(path, card.get("skops_types")))
    return estimator, card


@dataclass
class Shipped:
    """A loaded model, network or baseline, behind one call: `outputs(arrays)` takes stored
    arrays ({"x", "x_future"?}) and gives class probabilities (classification) or values."""

    kind: str
    card: dict[str, Any]
    model: Any  # the Keras model, or the fitted scikit-learn pipeline
    outputs: Callable[[Mapping[str, Any]], np.ndarray]
    parameters: int  # a network's weights, a baseline's learned values (`learned_values`)
    path: Path
    #: other files it runs (the backbone of a baseline on embeddings)
    companions: tuple[Path, ...] = ()

    def size(self) -> int:
        """Bytes of every file the served model loads."""
        return sum(path.stat().st_size for path in (self.path, *self.companions))


def learned_values(estimator: Any) -> int:
    """The numbers a fitted baseline stores, its counterpart of a network's parameters: every
    numeric array in its object graph, non-zeros of a sparse one (coefficients, intercepts,
    idf weights, MiniRocket's biases, the training rows a k-NN keeps, the sums a streaming
    ridge keeps to refit). Vocabularies (strings to indices, like a network's lookup tables)
    and settings are not counted; a seasonal naive or ETS, fitted to each window as it
    forecasts, stores none."""
    import scipy.sparse

    seen: set[int] = set()

    def count(value: Any) -> int:
        if id(value) in seen or value is None or isinstance(value, str | bytes | int | float):
            return 0
        seen.add(id(value))
        if isinstance(value, np.ndarray):
            if value.dtype.kind in "biufc":
                return int(value.size)
            return sum(count(item) for item in value.ravel()) if value.dtype == object else 0
        if scipy.sparse.issparse(value):
            return int(value.nnz)
        if isinstance(value, Mapping):
            return sum(count(item) for item in value.values())
        if isinstance(value, list | tuple | set):
            return sum(count(item) for item in value)
        if type(value).__module__.split(".")[0] in ("numpy", "builtins", "scipy"):
            return 0  # a dtype, a random generator, a distribution: no learned values
        attributes = getattr(value, "__dict__", None)
        return sum(count(item) for item in attributes.values()) if attributes else 0

    return count(estimator)


def load_extractor(folder: str | Path, card: Mapping[str, Any]) -> Any:
    """The frozen backbone exported beside a baseline fitted on its embeddings (the card's
    `extractor`), or None for a baseline on the stored tensors."""
    spec = card.get("extractor")
    if not spec:
        return None
    import keras

    import dlworkflow.layers  # noqa: F401  (registers the custom layers before loading)

    keep_freed_heap()
    return keras.saving.load_model(Path(folder) / spec["file"])


def baseline_outputs(estimator: Any, card: Mapping[str, Any], backbone: Any = None) -> Callable:
    """Stored arrays -> the baseline's outputs (probabilities in the card's class order).
    `backbone` (`load_extractor`) embeds the arrays first, as the features step did."""
    from dlworkflow.baselines import beside_flat
    from dlworkflow.estimators import class_probabilities
    from dlworkflow.modalities import create_modality
    from dlworkflow.tasks import get_task

    modality = create_modality(card["modality"], {}, card.get("layout") or {})
    task = get_task(card["task"])
    classes = tuple(card.get("classes") or ())
    spec = card.get("extractor") or {}
    if spec and backbone is None:
        raise ValueError(f"baseline {card.get('model')} takes the embeddings of "
                         f"{spec.get('name')}: its backbone ({spec.get('file')}) is needed")

    def outputs(arrays: Mapping[str, Any]) -> np.ndarray:
        if backbone is not None:
            from dlworkflow.models.extractors import embed

            embeddings = embed(backbone, arrays["x"], spec["name"], spec["side"],
                               int(spec["batch_size"]))
            arrays = {**arrays, "x": (beside_flat(modality, arrays["x"], embeddings,
                                                  card.get("flat") or {})
                                      if spec.get("beside_flat") else embeddings)}
        x = task.baseline_inputs(modality, arrays, card.get("flat") or {})
        prediction = estimator.predict(x)
        if not classes:
            return np.asarray(prediction, dtype=np.float64)
        proba = class_probabilities(estimator, x, len(prediction), len(classes))
        if proba is None:  # a classifier without probabilities: one-hot of its labels
            return np.eye(len(classes))[np.asarray(prediction, dtype=int)]
        return proba

    return outputs


def network_outputs(model: Any, card: Mapping[str, Any]) -> Callable:
    """Stored arrays -> the network's outputs (through the modality's one conversion)."""
    from dlworkflow.modalities import create_modality
    from dlworkflow.tfdata import untuned_batches

    modality = create_modality(card["modality"], {}, card.get("layout") or {})

    def outputs(arrays: Mapping[str, Any]) -> np.ndarray:
        inputs = modality.model_inputs(arrays)
        order = by_length(inputs)
        if order is None:
            return np.asarray(model.predict(untuned_batches(inputs, 64), verbose=0))
        # texts in batches of similar length: a batch is tokenised and run as long as its
        # longest text, so an SMS beside a 900-character one cost as much as that one
        values = np.asarray(model.predict(untuned_batches(inputs[order], 64), verbose=0))
        restored = np.empty_like(values)
        restored[order] = values
        return restored

    return outputs


def by_length(inputs: Any) -> np.ndarray | None:
    """The order that sorts one column of texts by length (stable), or None for other
    inputs (arrays of numbers, a forecaster's dict)."""
    if not isinstance(inputs, np.ndarray) or inputs.ndim != 1 or inputs.dtype.kind not in "UO":
        return None
    return np.argsort(np.char.str_len(inputs.astype(str)), kind="stable")


def load_network(model_dir: str | Path) -> tuple[Any, dict[str, Any]]:
    """The Keras model and its card (freed heap kept for the next batch, `heap`)."""
    import keras

    import dlworkflow.layers  # noqa: F401  (registers the custom layers before loading)

    keep_freed_heap()
    model_dir = Path(model_dir)
    card = json.loads((model_dir / "model.json").read_text())
    return keras.saving.load_model(model_dir / "model.keras"), card


def load_shipped(model_dir: str | Path, kind: str | None = None) -> Shipped:
    """The model `model_dir` ships (shipped.json; the network when there is none, as in a
    fold's folder), or the one named by `kind` ("network" or "baseline")."""
    model_dir = Path(model_dir)
    if kind is None:
        decision = model_dir / SHIPPED_FILE
        kind = json.loads(decision.read_text())["shipped"] if decision.is_file() else "network"
    if kind == "baseline":
        estimator, card = load_baseline(model_dir)
        backbone = load_extractor(model_dir, card)
        # a frozen backbone's weights are values the served baseline stores and runs
        parameters = learned_values(estimator) + (0 if backbone is None
                                                  else int(backbone.count_params()))
        shipped = Shipped("baseline", card, estimator,
                          baseline_outputs(estimator, card, backbone), parameters,
                          model_dir / BASELINE_FILE,
                          () if backbone is None else (model_dir / card["extractor"]["file"],))
    else:
        model, card = load_network(model_dir)
        shipped = Shipped("network", card, model, network_outputs(model, card),
                          int(model.count_params()), model_dir / "model.keras")
    changed = differences(card.get("environment") or {}, LOADING[shipped.kind])
    if changed:  # it may load and still compute otherwise: say so, once, where it is read
        log.warning("%s was saved with %s: its outputs here may differ from the ones its "
                    "reports show", shipped.path, ", ".join(changed))
    return shipped
