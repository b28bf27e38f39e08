"""Where a finished run's time went, read from its own records: Snakemake's `benchmarks/`
files, the jobs' logs and the networks' `history.csv`. Nothing runs and nothing is asserted;
run it after `make demo` (or any `dlworkflow run`) to see whether the cores were busy (and
which job ran alone while a core idled), how much of the work is training, what a training
job pays before its first step, and whether each fold spent its step budget learning or
stopped early.

    python bench/runtime.py [--project .] [--started EPOCH_SECONDS]

A job's end is its benchmark file's modification time (Snakemake writes it as the job
ends) and its start that minus the file's wall seconds. `--started` (for example `date +%s`
just before the run) adds how long Snakemake took before its first job. docs/BENCHMARKS.md
("Where the demo's time goes now") shows the output on the demo.
"""

from __future__ import annotations

import argparse
import csv
import re
from collections import defaultdict
from datetime import datetime
from pathlib import Path

STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ", re.M)
#: the line a training job logs once its data is loaded and its network is built
READY = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*\d+ training and \d+ validation "
                   r"rows", re.M)
PLANNED = re.compile(r"(\d+) epochs of (\d+) optimizer steps planned")
TRAINING_RULES = ("train_fold", "final_train")


def _seconds(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def jobs(project: Path) -> list[dict]:
    """One record per finished job: dataset, rule, name, start, end, wall seconds."""
    found = []
    for path in sorted((project / "benchmarks").glob("*/*.tsv")):
        with path.open() as handle:
            row = next(csv.DictReader(handle, delimiter="\t"))
        wall = float(row["s"])
        end = path.stat().st_mtime
        found.append({"dataset": path.parent.name, "name": path.stem,
                      "rule": path.stem.split("-")[0], "start": end - wall, "end": end,
                      "wall": wall, "log": project / "logs" / path.parent.name /
                      f"{path.stem}.log"})
    return found


def stretches(found: list[dict]) -> list[tuple[float, float, set[int]]]:
    """First start to last end cut where a job starts or ends: (start, end, the indices in
    `found` of the jobs running), in time order; one sweep over the starts and ends."""
    events = sorted([(j["start"], 1, n) for n, j in enumerate(found)] +
                    [(j["end"], -1, n) for n, j in enumerate(found)])
    cut, running, previous = [], set(), events[0][0]
    for moment, change, number in events:
        cut.append((previous, moment, set(running)))
        if change > 0:
            running.add(number)
        else:
            running.discard(number)
        previous = moment
    return cut


def busy(found: list[dict]) -> dict[int, float]:
    """Seconds during which 0, 1, 2, ... jobs ran, first start to last end (0: Snakemake
    between jobs, on a busy machine)."""
    counts: dict[int, float] = defaultdict(float)
    for start, end, running in stretches(found):
        counts[len(running)] += end - start
    return {count: seconds for count, seconds in sorted(counts.items())
            if count or seconds >= 0.5}


def alone(found: list[dict], least: float = 2.0) -> list[tuple[float, float, dict]]:
    """The stretches of at least `least` seconds in which one job ran alone (on two cores,
    one idle), as (start, end, job), in time order: where a better order could fill a core."""
    return [(start, end, found[next(iter(running))]) for start, end, running in stretches(found)
            if len(running) == 1 and end - start >= least]


def training_phases(job: dict, text: str) -> dict | None:
    """A training job's wall split, from its log `text`: start-up (imports, data, network
    built), training (first step to the last log line) and the rest (saving, exit)."""
    ready, stamps = READY.search(text), STAMP.findall(text)
    if not ready or not stamps:
        return None
    built, last = _seconds(ready.group(1)), _seconds(stamps[-1])
    return {"start-up": built - job["start"], "training": last - built,
            "after": job["end"] - last}


def fold_budget(history: Path, text: str) -> str:
    """Epochs planned (from the fold's log `text`) and run, and the best epoch (lowest
    validation loss in its `history.csv`)."""
    if not history.is_file():
        return "-"
    with history.open() as handle:
        losses = [float(row["val_loss"]) for row in csv.DictReader(handle)]
    planned = PLANNED.search(text)
    plan = f"{planned.group(1)} x {planned.group(2)} steps" if planned else "?"
    best = losses.index(min(losses)) + 1
    return f"planned {plan}, ran {len(losses)}, best {best}"


def report(project: Path, started: float | None) -> None:
    found = jobs(project)
    if not found:
        raise SystemExit(f"no benchmarks/*/*.tsv under {project}: run the workflow first")
    total = sum(j["wall"] for j in found)
    first, last = min(j["start"] for j in found), max(j["end"] for j in found)
    print(f"{len(found)} jobs, {total:.0f} job-seconds, first start to last end "
          f"{last - first:.0f} s")
    if started is not None:
        print(f"Snakemake's start before its first job: {first - started:.1f} s")
    print("jobs running at once (s): " + ", ".join(
        f"{count}: {seconds:.0f}" for count, seconds in busy(found).items()))
    lone = alone(found)
    if lone:
        print(f"one job alone, {sum(end - start for start, end, _ in lone):.0f} s in all: " +
              ", ".join(f"{start - first:.0f}-{end - first:.0f} s {job['dataset']} {job['name']}"
                        for start, end, job in lone))

    per_rule: dict[str, float] = defaultdict(float)
    for job in found:
        per_rule[job["rule"]] += job["wall"]
    training = sum(per_rule[rule] for rule in TRAINING_RULES)
    print(f"training jobs: {training:.0f} of {total:.0f} job-seconds "
          f"({100 * training / total:.0f} %)")
    print("job-seconds per rule: " + ", ".join(
        f"{rule} {seconds:.0f}" for rule, seconds in
        sorted(per_rule.items(), key=lambda item: -item[1])))

    print("\n| dataset | job | wall s | start-up s | training s | after s | epochs |")
    print("|---|---|---:|---:|---:|---:|---|")
    sums: dict[str, float] = defaultdict(float)
    for job in sorted(found, key=lambda j: (j["dataset"], j["name"])):
        if job["rule"] not in TRAINING_RULES or not job["log"].is_file():
            continue
        text = job["log"].read_text(errors="replace")
        phases = training_phases(job, text)
        if phases is None:
            continue
        for key, value in phases.items():
            sums[key] += value
        fold = project / "results" / job["dataset"] / "nn" / job["name"].replace("train_", "")
        epochs = fold_budget(fold / "history.csv", text) if job["rule"] == "train_fold" else "-"
        print(f"| {job['dataset']} | {job['name']} | {job['wall']:.1f} | "
              f"{phases['start-up']:.1f} | {phases['training']:.1f} | {phases['after']:.1f} | "
              f"{epochs} |")
    if sums:
        print("summed: " + ", ".join(f"{key} {value:.0f} s" for key, value in sums.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", type=Path, default=Path("."))
    parser.add_argument("--started", type=float, default=None,
                        help="the run's start, in seconds since the epoch (date +%%s)")
    args = parser.parse_args()
    report(args.project, args.started)


if __name__ == "__main__":
    main()
