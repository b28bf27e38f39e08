"""Would a margin in `final.model: auto` have shipped better models? Read from finished runs'
own files; nothing is trained and nothing is asserted.

`auto` ships the network when its CV mean of the primary metric beats the best baseline's
(a tie goes to the baseline). The network's fold scores are read at the epoch early stopping
restored, chosen on the same validation rows, so a small CV lead may be optimism. The rule
measured here ships the network only when the paired fold differences (network minus the
best baseline, signed so that positive is better) give a t statistic above a margin, and the
baseline otherwise. For each margin it prints which runs' choices change and the sum over
runs of the shipped model's test score minus the baseline's, both test scores taken from
`final/test_metrics.json` (the final step scores the model it does not ship too). A margin
of 0 is today's rule. A dataset without both test scores, or with folds that do not pair,
is named as skipped; a result met twice (the same figures in another folder) counts once.

    python bench/ship_margin.py --projects RUN [RUN ...] [--margins 0 0.5 1 1.5 2] [--json]

docs/BENCHMARKS.md ("Two leads for small two-class text") has the figures on the visible
suite.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dlworkflow.shipping import paired_folds


def paired(root: Path) -> dict:
    """{dataset, primary, cv_diff, t, test_diff, shipped} of one dataset's results folder
    (differences positive where the network is better), or {dataset, skipped: why}."""
    summary = json.loads((root / "nn" / "summary.json").read_text())
    test = json.loads((root / "final" / "test_metrics.json").read_text())
    primary, sign = summary["primary"], 1.0 if summary["greater_is_better"] else -1.0
    entry = {"dataset": root.name, "primary": primary}
    if not {"network", "baseline"} <= set(test):
        return {**entry, "skipped": "the final step scored one model only"}
    network = summary["models"][summary["best"]][primary]["folds"]
    baseline = summary["baseline"][primary]["folds"]
    lead = paired_folds(network, baseline, summary["greater_is_better"])
    if lead is None:
        return {**entry, "skipped": f"{len(network)} network and {len(baseline)} baseline "
                                    "fold scores do not pair"}
    scores = {kind: test[kind]["metrics"][primary]["value"] for kind in ("network", "baseline")}
    return {**entry, "cv_diff": lead["mean"], "t": lead["t"],
            "test_diff": sign * (scores["network"] - scores["baseline"]),
            "shipped": test["shipped"]["shipped"]}


def margins(entries: list[dict], levels: list[float]) -> list[dict]:
    """For each margin: the runs whose choice differs from the one the final step made (the
    better CV mean) and the sum over runs of shipped minus baseline on the test."""
    rows = []
    for level in levels:
        changed, total = [], 0.0
        for entry in entries:
            today, rule = entry["shipped"] == "network", entry["t"] > level
            total += entry["test_diff"] if rule else 0.0
            if rule != today:  # what the change gains on the test (+ is better)
                changed.append({"run": entry["run"], "dataset": entry["dataset"],
                                "gain": entry["test_diff"] if rule else -entry["test_diff"]})
        rows.append({"margin": level, "changed": changed, "shipped_minus_baseline": total})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--projects", nargs="+", type=Path, required=True,
                        help="finished runs (each with results/<dataset>/final/)")
    parser.add_argument("--margins", nargs="+", type=float, action="extend",
                        help="t margins (default 0 0.5 1 1.5 2); a negative one as --margins=-1")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = parser.parse_args(argv)
    entries, skipped, seen = [], [], set()
    for project in args.projects:
        for metrics in sorted((project / "results").glob("*/final/test_metrics.json")):
            entry = {"run": str(project), **paired(metrics.parent.parent)}
            if "skipped" in entry:
                skipped.append(entry)
                continue
            # a run copied to several folders (or rerun to the same figures) counts once
            key = (entry["dataset"], entry["primary"],
                   *(round(entry[k], 9) for k in ("cv_diff", "test_diff")))
            if key not in seen:
                seen.add(key)
                entries.append(entry)
    table = margins(entries, args.margins or [0, 0.5, 1, 1.5, 2])
    if args.json:
        print(json.dumps({"runs": entries, "skipped": skipped, "margins": table}, indent=1))
        return 0
    print("| run | dataset | metric | CV difference | t | test difference | shipped |")
    print("|---|---|---|---:|---:|---:|---|")
    for e in entries:
        print(f"| {e['run']} | {e['dataset']} | {e['primary']} | {e['cv_diff']:+.4f} | "
              f"{e['t']:.2f} | {e['test_diff']:+.4f} | {e['shipped']} |")
    for e in skipped:
        print(f"skipped: {e['run']} {e['dataset']}: {e['skipped']}", file=sys.stderr)
    print("\n| ship the network when t > | runs whose choice changes | their gains on the test "
          "| sum of (shipped - baseline) on the test |")
    print("|---:|---:|---|---:|")
    for row in table:
        gains = ", ".join(f"{c['dataset']} {c['gain']:+.4f}" for c in row["changed"]) or "-"
        print(f"| {row['margin']:g} | {len(row['changed'])} | {gains} | "
              f"{row['shipped_minus_baseline']:+.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
