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
of 0 is today's rule (`final.lead: auto`) over every baseline but MiniRocket, which a network
replaces only with a lead beyond the folds' noise (`evaluate.FIELD_STRONG_BASELINES`). A
dataset without both test scores, or with folds that do not pair, is named as skipped; a
result met twice (the same figures in another folder) counts once.

A binary task whose primary metric depends on the decision threshold (F1, accuracy) ships
each model at a threshold tuned on its own out-of-fold predictions, while `auto` compares
their fold scores at 0.5. Two more rules compare them as they ship: each fold scored at the
model's shipped threshold (tuned on every fold, the same optimism for both models), and
each fold scored at a threshold tuned on the other folds alone (cross-validated). Their
table follows the margins'; a run without tuned thresholds keeps today's choice in it.

    python bench/ship_margin.py --projects RUN [RUN ...] [--margins 0 0.5 1 1.5 2] [--json]

docs/BENCHMARKS.md ("Two leads for small two-class text") has the figures on the visible
suite.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from dlworkflow.evaluate import paired_folds
from dlworkflow.metrics import METRICS
from dlworkflow.tasks import get_task

#: the rules of the second table: today's, and the two that score each model at a threshold
THRESHOLD_RULES = {"at_0.5": "the better CV mean at 0.5 (today)",
                   "shipped": "at each model's shipped threshold",
                   "cross_validated": "at thresholds tuned on the other folds"}


def _at(rows: pd.DataFrame, setting, choice: dict, classes: tuple) -> dict:
    """The task's threshold record for out-of-fold `rows`: `setting` a number (scored there)
    or "tune" (chosen there, as the final step chooses)."""
    return get_task("classification").threshold(lambda: rows, choice, classes, setting)


def threshold_folds(root: Path) -> dict | None:
    """Each model's fold scores of the primary metric at tuned thresholds, read from the run's
    out-of-fold predictions: {"shipped": {kind: [...]}, "cross_validated": {kind: [...]},
    "pooled": {kind: the out-of-fold score at the shipped threshold}, "thresholds": {kind:
    the shipped one}}, or None when the final step tuned no threshold for both models."""
    cards = {"network": root / "final" / "model.json", "baseline": root / "final" / "baseline.json"}
    tuned = {kind: (json.loads(path.read_text()).get("threshold") if path.is_file() else None)
             for kind, path in cards.items()}
    choice = json.loads((root / "intake" / "metric.json").read_text())
    if not all(tuned.values()) or METRICS[choice["primary"]["name"]].needs != "labels":
        return None  # no binary task, or a primary computed from scores (ROC AUC)
    score = f"oof_{choice['primary']['name']}_at_threshold"
    found: dict = {"shipped": {}, "cross_validated": {}, "pooled": {}, "thresholds": {}}
    for kind, folder in (("network", "nn"), ("baseline", "baseline")):
        frame = pd.read_parquet(root / folder / "oof.parquet")
        classes = tuple(c[2:] for c in frame.columns if c.startswith("p_"))
        shipped = tuned[kind]["threshold"]
        parts = [(frame[frame["fold"] == k], frame[frame["fold"] != k])
                 for k in sorted(frame["fold"].unique())]
        found["thresholds"][kind] = shipped
        found["pooled"][kind] = _at(frame, shipped, choice, classes)[score]
        found["shipped"][kind] = [_at(held, shipped, choice, classes)[score] for held, _ in parts]
        found["cross_validated"][kind] = [
            _at(held, _at(rest, "tune", choice, classes)["threshold"], choice, classes)[score]
            for held, rest in parts]
    return found


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
    # a lead of a float's last bits is a tie, which the final step gives the baseline
    entry = {**entry, "cv_diff": lead["mean"], "t": lead["t"] if abs(lead["mean"]) > 1e-12 else 0.0,
             "test_diff": sign * (scores["network"] - scores["baseline"]),
             "shipped": test["shipped"]["shipped"]}
    thresholds = threshold_folds(root)
    if thresholds:  # both at their thresholds: F1 and accuracy, greater is better
        entry["thresholds"] = thresholds
        entry["network_wins"] = {
            rule: sum(thresholds[rule]["network"]) > sum(thresholds[rule]["baseline"])
            for rule in ("shipped", "cross_validated")}
    return entry


def outcome(entries: list[dict], ships_network) -> dict:
    """One rule over the runs (`ships_network(entry)`: does it ship the network there?): the
    runs whose choice differs from the one the final step made, with what the change gains
    on the test (+ is better), and the sum over runs of shipped minus baseline on the test."""
    changed, total = [], 0.0
    for entry in entries:
        today, network = entry["shipped"] == "network", ships_network(entry)
        total += entry["test_diff"] if network else 0.0
        if network != today:
            changed.append({"run": entry["run"], "dataset": entry["dataset"],
                            "gain": entry["test_diff"] if network else -entry["test_diff"]})
    return {"changed": changed, "shipped_minus_baseline": total}


def threshold_rules(entries: list[dict]) -> list[dict]:
    """Each rule of THRESHOLD_RULES scored with `outcome`; a run without tuned thresholds
    keeps the final step's choice."""
    return [{"rule": rule, "words": words,
             **outcome(entries, lambda e, rule=rule: e.get("network_wins", {}).get(
                 rule, e["shipped"] == "network"))}
            for rule, words in THRESHOLD_RULES.items()]


def margins(entries: list[dict], levels: list[float]) -> list[dict]:
    """For each margin: `outcome` of shipping the network when its paired t exceeds it."""
    return [{"margin": level, **outcome(entries, lambda e, level=level: e["t"] > level)}
            for level in levels]


def print_rules(header: str, rows: list[dict], label, numeric: bool = False) -> None:
    """A table of rules: `label(row)` (right-aligned when `numeric`), the runs whose choice
    changes, their test gains, the sum of shipped minus baseline on the test."""
    print(f"\n| {header} | runs whose choice changes | their gains on the test "
          "| sum of (shipped - baseline) on the test |")
    print(f"|{'---:' if numeric else '---'}|---:|---|---:|")
    for row in rows:
        gains = ", ".join(f"{c['dataset']} {c['gain']:+.4f}" for c in row["changed"]) or "-"
        print(f"| {label(row)} | {len(row['changed'])} | {gains} | "
              f"{row['shipped_minus_baseline']:+.4f} |")


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
    rules = threshold_rules(entries)
    if args.json:
        print(json.dumps({"runs": entries, "skipped": skipped, "margins": table,
                          "threshold_rules": rules}, indent=1))
        return 0
    print("| run | dataset | metric | CV difference | t | test difference | shipped |")
    print("|---|---|---|---:|---:|---:|---|")
    for e in entries:
        print(f"| {e['run']} | {e['dataset']} | {e['primary']} | {e['cv_diff']:+.4f} | "
              f"{e['t']:.2f} | {e['test_diff']:+.4f} | {e['shipped']} |")
    for e in skipped:
        print(f"skipped: {e['run']} {e['dataset']}: {e['skipped']}", file=sys.stderr)
    print_rules("ship the network when t >", table, lambda row: f"{row['margin']:g}", True)
    tuned = [e for e in entries if "thresholds" in e]
    if tuned:
        print("\n| run | dataset | thresholds network / baseline | CV at them, network / "
              "baseline | CV at cross-validated ones |")
        print("|---|---|---|---|---|")
        for e in tuned:
            t = e["thresholds"]
            mean = {rule: {k: sum(v) / len(v) for k, v in t[rule].items()}
                    for rule in ("shipped", "cross_validated")}
            print(f"| {e['run']} | {e['dataset']} | {t['thresholds']['network']:.2f} / "
                  f"{t['thresholds']['baseline']:.2f} | {mean['shipped']['network']:.4f} / "
                  f"{mean['shipped']['baseline']:.4f} | {mean['cross_validated']['network']:.4f}"
                  f" / {mean['cross_validated']['baseline']:.4f} |")
        print_rules("ship the network when it has the better CV mean ...", rules,
                    lambda row: row["words"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
