"""What a blend of the network and the best baseline would have scored, read from a finished
run's own prediction files. Nothing is trained and nothing is asserted: for each
classification dataset the two models' out-of-fold probabilities (`nn/oof.parquet`,
`baseline/oof.parquet`) are averaged with the network weighted `w`, scored fold by fold with
the dataset's own metrics (`intake/metric.json`), and summarised as the CV summaries are
(mean ± std, ddof 1); the test predictions of both models (`final/predictions.parquet`, when
the final step scored the baseline too) are blended likewise. A dataset whose best baseline
keeps labels only out of fold (a ridge classifier's, MiniRocket's) is named as skipped.
Every decision is the most probable class, so `w = 1` and `w = 0` give the network's and the
baseline's CV scores of `nn/summary.json` and `baseline/summary.json`; a binary test score
can differ from the report's, which decides at the threshold tuned on the shipped model's
out-of-fold predictions.

    python bench/blend.py [--project .] [--weights 0 0.25 0.5 0.75 1] [--json]

docs/BENCHMARKS.md ("A blend of the two models") has the figures on the visible suite.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd


def _scored(choice: dict, classes: list[str], y_true: np.ndarray, network: np.ndarray,
            baseline: np.ndarray, weight: float) -> dict[str, float]:
    from dlworkflow.metrics import score

    proba = weight * network + (1 - weight) * baseline
    return score(choice, y_true, np.asarray(classes)[proba.argmax(axis=1)], proba, classes)


def _paired(network: pd.DataFrame, baseline: pd.DataFrame, classes: list[str]) -> dict:
    """The rows both models predicted, joined on id: true labels, folds and each model's
    class probabilities (rows x classes)."""
    both = network.merge(baseline, on="id", suffixes=("_n", "_b"), validate="1:1")
    return {"rows": len(both), "y_true": both["y_true_n"].astype(str).to_numpy(),
            "folds": both["fold_n"].to_numpy(),
            **{key: both[[f"p_{name}{suffix}" for name in classes]].to_numpy(dtype=np.float64)
               for key, suffix in (("network", "_n"), ("baseline", "_b"))}}


def blend(project: Path, dataset: str, weights: list[float]) -> dict:
    """{dataset, network, baseline, primary, rows: [{weight, cv_mean, cv_std, test}]} or
    {dataset, skipped: why}."""
    from dlworkflow.evaluate import summarize_folds

    root = project / "results" / dataset
    choice = json.loads((root / "intake" / "metric.json").read_text())
    if choice.get("task") != "classification":
        return {"dataset": dataset, "skipped": f"a {choice.get('task')} task: no class "
                                               "probabilities to average"}
    primary = choice["primary"]["name"]
    best = json.loads((root / "baseline" / "summary.json").read_text())["best"]
    network_oof = pd.read_parquet(root / "nn" / "oof.parquet")
    baseline_oof = pd.read_parquet(root / "baseline" / "oof.parquet")
    baseline_oof = baseline_oof[baseline_oof["model"] == best]
    network = str(network_oof["model"].iloc[0])
    classes = [column[2:] for column in network_oof.columns if column.startswith("p_")]
    oof = _paired(network_oof, baseline_oof, classes)
    if not oof["rows"] == len(network_oof) == len(baseline_oof):
        raise SystemExit(f"{dataset}: the two models' out-of-fold rows differ "
                         f"({len(network_oof)} and {len(baseline_oof)}, {oof['rows']} shared)")
    for model, key in ((network, "network"), (best, "baseline")):
        if np.isnan(oof[key]).any():  # a ridge classifier's folds keep labels only
            return {"dataset": dataset, "skipped": f"{model} wrote no class probabilities "
                                                   "out of fold"}
    test = None
    final = root / "final" / "predictions.parquet"
    if final.is_file():
        scored = pd.read_parquet(final)
        test = _paired(scored[scored["model"] == network], scored[scored["model"] == best],
                       classes)
    rows = []
    for weight in weights:
        per_fold = {}
        for fold in sorted(set(oof["folds"])):
            held = oof["folds"] == fold
            per_fold[int(fold)] = _scored(choice, classes, oof["y_true"][held],
                                          oof["network"][held], oof["baseline"][held], weight)
        cv = summarize_folds(per_fold)[primary]
        rows.append({"weight": weight, "cv_mean": cv["mean"], "cv_std": cv["std"],
                     "test": _scored(choice, classes, test["y_true"], test["network"],
                                     test["baseline"], weight)[primary]
                     if test and test["rows"] else None})
    return {"dataset": dataset, "network": network, "baseline": best, "primary": primary,
            "rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", type=Path, default=Path("."))
    parser.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0],
                        help="the network's weights in the blend (0 = the baseline alone)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(args.project.resolve() / "src"))  # the project's own library
    results = args.project / "results"
    datasets = sorted(path.parent.parent.name for path in results.glob("*/nn/oof.parquet"))
    if not datasets:
        raise SystemExit(f"no finished network summaries under {results}")
    found = [blend(args.project, name, args.weights) for name in datasets]
    if args.json:
        print(json.dumps(found, indent=1))
        return 0
    for entry in found:
        if "skipped" in entry:
            print(f"{entry['dataset']}: skipped, {entry['skipped']}\n")
            continue
        print(f"{entry['dataset']}: {entry['primary']}, network {entry['network']} weighted w, "
              f"best baseline {entry['baseline']} 1 - w, the most probable class decides\n")
        print("| w | CV | test |\n|---:|---|---:|")
        for row in entry["rows"]:
            test = "-" if row["test"] is None else f"{row['test']:.4f}"
            print(f"| {row['weight']:g} | {row['cv_mean']:.4f} ± {row['cv_std']:.4f} | {test} |")
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
