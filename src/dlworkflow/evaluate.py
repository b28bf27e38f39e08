"""Cross-validation summaries (mean ± std) of the folds' scores, for baselines and networks.

Every score is computed by `dlworkflow.metrics.score`, so a number means the same thing
wherever it appears.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dlworkflow.metrics import METRICS, metric_label

#: the DVC metric file of a step: its headline numbers only
HEADLINE_FILE = "headline.json"


def summarize_folds(per_fold: Mapping[int, Mapping[str, float]]) -> dict[str, dict[str, Any]]:
    """{metric: {mean, std, folds}} over folds (std with ddof=1, as scikit-learn reports CV)."""
    metrics = sorted({m for scores in per_fold.values() for m in scores})
    out = {}
    for name in metrics:
        values = [float(per_fold[k][name]) for k in sorted(per_fold) if name in per_fold[k]]
        out[name] = {"mean": float(np.mean(values)),
                     "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                     "folds": values}
    return out


#: baselines the field ranks level with or above the networks offered beside them: under
#: `final.lead: auto` a network replaces one only with a CV lead beyond the folds' noise, and
#: another baseline too (`best_baseline`). MiniRocket is more accurate than FCN on most sets
#: of the UCR archive (Dempster et al. 2021; Middlehurst, Schäfer and Bagnall's 2024
#: bake-off), and on small sets a mean lead of a fold or two is noise (ACSF1 and Pickup,
#: docs/BENCHMARKS.md)
FIELD_STRONG_BASELINES = frozenset({"minirocket_ridge"})


def best_model(summary: Mapping[str, Mapping[str, Any]], primary: str) -> str:
    """The model with the best mean primary metric."""
    better = max if METRICS[primary].greater_is_better else min
    return better(summary, key=lambda name: summary[name][primary]["mean"])


def paired_folds(network: Sequence[float], baseline: Sequence[float],
                 greater_is_better: bool) -> dict[str, Any] | None:
    """The network's lead over the baseline on the same folds (positive: the network is
    better, also for an error where lower is better): {"folds", "mean", "std", "t" (the
    paired t statistic, std² / k the mean's variance), "t_corrected" (Nadeau and Bengio's:
    std² (1/k + 1/(k - 1)), 1/(k - 1) being k-fold CV's validation-to-training size ratio),
    "critical" (Student's t at 97.5 % with k - 1 degrees of freedom), "beyond_noise"
    (|t_corrected| > critical)}.
    Every fold the same nonzero lead gives infinite t's. None when the folds do not pair."""
    if len(network) != len(baseline) or len(network) < 2:
        return None
    from scipy.stats import t as student

    sign = 1.0 if greater_is_better else -1.0
    lead = sign * (np.asarray(network, float) - np.asarray(baseline, float))
    k, mean, std = len(lead), float(lead.mean()), float(lead.std(ddof=1))
    if std > 1e-9 * max(1.0, abs(mean)):  # leads equal but for the float subtraction are equal
        t = mean / (std / np.sqrt(k))
        corrected = mean / np.sqrt((1 / k + 1 / (k - 1)) * std ** 2)
    else:  # every fold the same lead: a sure sign, or none at all
        t = corrected = float(np.copysign(np.inf, mean)) if abs(mean) > 1e-12 else 0.0
    critical = float(student.ppf(0.975, k - 1))
    return {"folds": k, "mean": mean, "std": std, "t": float(t),
            "t_corrected": float(corrected), "critical": critical,
            "beyond_noise": bool(abs(corrected) > critical)}


def best_baseline(models: Mapping[str, Mapping[str, Any]], primary: str) -> tuple[str, str | None]:
    """The baseline the later steps compare with and may ship: the best mean primary metric,
    except that a baseline the field ranks first (`FIELD_STRONG_BASELINES`: MiniRocket for
    series classification) is kept unless another leads it beyond the folds' noise (the
    corrected paired t, as `final.lead` reads it). On a few dozen series a fold is a handful
    of them, and a mean lead of 1-NN or a ridge on the values over MiniRocket is more often
    the folds' noise than the data: MiniRocket is the more accurate on most sets of the UCR
    archive (Dempster et al. 2021). Returns the name and, where the rule kept the strong
    baseline over the best mean, why (else None)."""
    best = best_model(models, primary)
    strong = {name: entry for name, entry in models.items() if name in FIELD_STRONG_BASELINES}
    if not strong or best in strong:
        return best, None
    kept = best_model(strong, primary)
    greater = METRICS[primary].greater_is_better
    paired = paired_folds(models[best][primary].get("folds") or [],
                          models[kept][primary].get("folds") or [], greater)
    if paired is None or paired["beyond_noise"]:
        return best, None
    return kept, (f"{kept} is kept as the baseline, the one the field ranks first here: "
                  f"{best}'s CV mean ({models[best][primary]['mean']:.4f} against "
                  f"{models[kept][primary]['mean']:.4f}) leads it by {paired['mean']:+.4f} a "
                  f"fold, within the folds' noise (corrected paired t "
                  f"{paired['t_corrected']:.2f} against {paired['critical']:.2f})")


def fold_outputs_to_summary(kind: str, choice_path: str, fold_metrics: Sequence[str],
                            fold_predictions: Sequence[str], oof_output: str, summary_output: str,
                            extra: Mapping[str, Any] | None = None,
                            folders: bool = False) -> dict[str, Any]:
    """Gather per-fold metrics and predictions into `oof.parquet` and `summary.json`; with
    `folders`, each fold's details name the folder it was written to (`best_fold_files`)."""
    choice = json.loads(Path(choice_path).read_text())
    primary = choice["primary"]["name"]
    per_model: dict[str, dict[int, dict[str, float]]] = {}
    details: dict[str, dict[int, dict[str, Any]]] = {}
    for path in fold_metrics:
        payload = json.loads(Path(path).read_text())
        fold = int(payload["fold"])
        for model, entry in payload["models"].items():
            per_model.setdefault(model, {})[fold] = entry["metrics"]
            details.setdefault(model, {})[fold] = {
                **{k: v for k, v in entry.items() if k != "metrics"},
                **({"folder": Path(path).parent.as_posix()} if folders else {})}
    oof = pd.concat([pd.read_parquet(p) for p in fold_predictions], ignore_index=True)
    Path(oof_output).parent.mkdir(parents=True, exist_ok=True)
    oof.to_parquet(oof_output, index=False)
    models = {name: summarize_folds(folds) for name, folds in per_model.items()}
    best, choice = (best_baseline(models, primary) if kind == "baseline"
                    else (best_model(models, primary), None))
    summary: dict[str, Any] = {
        "kind": kind, "primary": primary,
        "greater_is_better": METRICS[primary].greater_is_better,
        "folds": len({k for folds in per_model.values() for k in folds}),
        "oof_rows": len(oof), "models": models, "best": best,
        **({"baseline_choice": choice} if choice else {}),
        "fold_details": {m: {str(k): v for k, v in d.items() if v} for m, d in details.items()},
    }
    summary["headline"] = {
        "model": summary["best"],
        f"{primary}_mean": models[summary["best"]][primary]["mean"],
        f"{primary}_std": models[summary["best"]][primary]["std"],
    }
    summary.update(extra or {})
    Path(summary_output).write_text(json.dumps(summary, indent=2) + "\n")
    write_headline(summary_output, summary["headline"])
    return summary


def write_headline(summary_output: str | Path, headline: Mapping[str, Any]) -> None:
    """`headline.json` beside a summary: the few numbers `dvc exp show` and `dvc metrics
    diff` compare (the DVC metric files); per-fold lists and details stay in summary.json."""
    Path(summary_output).with_name(HEADLINE_FILE).write_text(
        json.dumps(dict(headline), indent=2) + "\n")


def write_fold_metrics(path: str, fold: int, models: Mapping[str, Mapping[str, Any]]) -> None:
    """`<kind>/fold-<k>/metrics.json`: {fold, models: {name: {metrics, ...details}}}."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps({"fold": fold, "models": models}, indent=2) + "\n")


def best_fold_files(paths: Sequence[str], summary: Mapping[str, Any]) -> list[str]:
    """Of the fold files `paths` (histories, models) of every network the folds trained, the
    CV-best network's (`summary["best"]`), in fold order: those in the folders its folds
    were written to; all of them where the summary names no folders (one network)."""
    details = (summary.get("fold_details") or {}).get(summary.get("best"), {})
    folders = {entry.get("folder") for entry in details.values()}
    if not folders or None in folders:
        return list(paths)
    return [path for path in paths if Path(path).parent.as_posix() in folders]


def network_choice(summary: Mapping[str, Any], decided: str, label: str) -> str:
    """Why the network is the one it is where the folds trained several (auto's choice
    `decided` and the networks beside it: the modality's network from scratch beside a
    transfer network, the variant `<decided>+fitted`): the best CV mean (the first listed,
    auto's own choice, on a tie)."""
    from dlworkflow.modalities.base import split_network_name

    models, primary, best = summary["models"], summary["primary"], summary["best"]
    scores = ", ".join(f"{name} {models[name][primary]['mean']:.4f} ± "
                       f"{models[name][primary]['std']:.4f}" for name in models)
    architecture, variant = split_network_name(best)
    how = ("auto's own choice" if best == decided else
           f"auto's choice {decided} as its variant {variant}" if architecture == decided else
           f"the network from scratch trained beside auto's transfer network {decided}")
    return (f"{best}, {how}, has the {'better' if len(models) == 2 else 'best'} CV {label} "
            f"({scores})")


def network_summary(choice_path: str, fold_metrics: Sequence[str], fold_predictions: Sequence[str],
                    baseline_summary: str, oof_output: str, summary_output: str,
                    decided: str | None = None) -> dict[str, Any]:
    """The network's CV summary, its best epoch per fold, and the comparison with the baseline.
    Where the folds trained several networks (auto's choice, `decided` being rule
    choose_network's file, and the networks beside it), the CV-best is the network, and the
    summary says why (`network_choice`)."""
    baseline = json.loads(Path(baseline_summary).read_text())
    primary = baseline["primary"]
    best_name = baseline["best"]
    reference = baseline["models"][best_name][primary]
    summary = fold_outputs_to_summary("nn", choice_path, fold_metrics, fold_predictions,
                                      oof_output, summary_output, folders=True)
    network = summary["models"][summary["best"]][primary]
    sign = 1 if summary["greater_is_better"] else -1
    difference = network["mean"] - reference["mean"]
    beats = sign * difference > 0
    label = metric_label(primary, json.loads(Path(choice_path).read_text()))
    epochs = [d.get("best_epoch") for d in summary["fold_details"][summary["best"]].values()]
    chosen = (network_choice(summary, json.loads(Path(decided).read_text())["architecture"],
                             label) if decided and len(summary["models"]) > 1 else None)
    verdict = (f"The network ({summary['best']}) {'beats' if beats else 'does not beat'} the best "
               f"traditional baseline ({best_name}) on {label}: {network['mean']:.4f} ± "
               f"{network['std']:.4f} against {reference['mean']:.4f} ± {reference['std']:.4f} "
               f"(difference {difference:+.4f}).")
    if chosen:
        verdict = f"The folds trained {len(summary['models'])} networks: {chosen}. " + verdict
    if baseline.get("baseline_choice"):
        verdict += f" Among the baselines, {baseline['baseline_choice']}."
    summary.update(best_epochs=epochs, baseline={"model": best_name, primary: reference},
                   beats_baseline=bool(beats), verdict=verdict,
                   **({"network_choice": chosen} if chosen else {}))
    summary["headline"]["baseline_" + primary + "_mean"] = reference["mean"]
    summary["headline"]["beats_baseline"] = bool(beats)
    Path(summary_output).write_text(json.dumps(summary, indent=2) + "\n")
    # the DVC metric: the network's CV mean ± std, two columns a dataset in `dvc exp show`
    write_headline(summary_output, {key: summary["headline"][key]
                                    for key in (f"{primary}_mean", f"{primary}_std")})
    return summary
