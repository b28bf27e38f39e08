"""Model quality of a finished run: baseline and network CV scores per dataset, as a table.

    python bench/quality.py [results]

Reads results/<dataset>/{baseline,nn}/summary.json (run the workflow with the shipped
defaults first: `make demo`) and prints the Markdown table kept in docs/BENCHMARKS.md, with
the training time per fold from the rules' benchmark files.
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


if __name__ == "__main__":
    main()
