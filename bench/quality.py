"""Model quality of a finished run: CV scores and the one test score per dataset, as tables.

    python bench/quality.py [results]

Reads results/<dataset>/{baseline,nn}/summary.json and final/test_metrics.json (run the
workflow with the shipped defaults first: `make demo`) and prints the Markdown tables kept in
docs/BENCHMARKS.md, with the training time per fold from the rules' benchmark files.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd


def fmt(entry: dict) -> str:
    return f"{entry['mean']:.4f} ± {entry['std']:.4f}"


def main() -> None:
    results = Path(sys.argv[1] if len(sys.argv) > 1 else "results")
    benchmarks = results.parent / "benchmarks"
    print("| dataset | metric | best baseline (CV) | network (CV) | best epochs | s per fold | verdict |")
    print("|---|---|---|---|---|---:|---|")
    for folder in sorted(p for p in results.iterdir() if (p / "nn" / "summary.json").exists()):
        base = json.loads((folder / "baseline" / "summary.json").read_text())
        network = json.loads((folder / "nn" / "summary.json").read_text())
        primary = network["primary"]
        best = network["best"]
        times = [pd.read_csv(f, sep="\t")["s"].iloc[0]
                 for f in sorted((benchmarks / folder.name).glob("train_fold-*.tsv"))]
        seconds = f"{sum(times) / len(times):.0f}" if times else "-"
        print(f"| {folder.name} | {primary} | {base['best']}: "
              f"{fmt(base['models'][base['best']][primary])} | {best}: "
              f"{fmt(network['models'][best][primary])} | {network['best_epochs']} | {seconds} | "
              f"{'beats' if network['beats_baseline'] else 'does not beat'} the baseline |")
        others = {m: fmt(v) for name, s in base["models"].items() for m, v in s.items()
                  if name == base["best"] and m != primary}
        net_others = {m: fmt(v) for m, v in network["models"][best].items() if m != primary}
        print(f"|  | other metrics | {others} | {net_others} | | | |")
    final_table(results)


def interval(entry: dict) -> str:
    return f"{entry['value']:.4f} [{entry['low']:.4f}, {entry['high']:.4f}]"


def final_table(results: Path) -> None:
    """The test score (95 % bootstrap interval) of the shipped model, and of both candidates."""
    print()
    print("| dataset | metric | test rows | shipped (why) | network (final) | best baseline "
          "(refitted) | final epochs | threshold | p50 ms / item |")
    print("|---|---|---:|---|---|---|---:|---|---:|")
    for folder in sorted(p for p in results.iterdir()
                         if (p / "final" / "test_metrics.json").exists()):
        test = json.loads((folder / "final" / "test_metrics.json").read_text())
        card = json.loads((folder / "final" / "model.json").read_text())
        latency = json.loads((folder / "final" / "latency.json").read_text())
        primary = test["primary"]
        base = test.get("baseline")
        threshold = card.get("threshold") or {}
        shipped = test.get("shipped", {"shipped": "network", "model": test["network"]["model"]})
        print(f"| {folder.name} | {primary} | {test['network']['rows']} | "
              f"{shipped['shipped']} {shipped['model']} | "
              f"{test['network']['model']}: {interval(test['network']['metrics'][primary])} | "
              + (f"{base['model']}: {interval(base['metrics'][primary])}" if base else "-")
              + f" | {card['training']['epochs']['epochs']} | "
              f"{threshold.get('threshold', '-')} | {latency['single_item_ms']['p50']:.1f} |")


if __name__ == "__main__":
    main()
