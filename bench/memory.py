"""Peak memory of every forecasting step as the number of series grows, as a table.

    python bench/memory.py run [--series 100 200 414 828 1656] [--out bench-runs/memory]
    python bench/memory.py table bench-runs/memory

`run` makes one project per count with the M4 Hourly set of `bench/quality.py` (the shipped
params), cut to the first N series, or, past its 414, with each series repeated under a new
name and a new level (copy c is the series times 1 + c / 2), and runs the real workflow. Only
what does not change memory is shortened, so that five runs take minutes: two folds and
`train.max_steps: 100` (memory follows the rows a step holds, not how many steps it takes).
`table` prints each rule's peak resident memory (Snakemake's benchmark files; the largest of
a rule's jobs) per count, with the number of windows and the growth from the smallest count
to the largest per 1,000 windows.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import REPO, SHARED, make_project, run_workflow

SET = "m4_hourly"


def series_table(part: str, count: int) -> pd.DataFrame:
    """The first `count` rows of the M4 Hourly `part` file, repeated under new names and
    levels past its 414 series."""
    table = pd.read_csv(SHARED / "m4" / f"Hourly-{part}.csv")
    copies = []
    for copy in range(-(-count // len(table))):
        scaled = table.copy()
        scaled.iloc[:, 1:] = scaled.iloc[:, 1:] * (1 + copy / 2)
        if copy:
            scaled["V1"] = scaled["V1"] + f"c{copy}"
        copies.append(scaled)
    return pd.concat(copies, ignore_index=True).iloc[:count]


def make(count: int, out: Path) -> Path:
    project = make_project(SET, out / f"series-{count}")
    root = project / "data" / "raw" / SET
    for part in ("train", "test"):
        series_table(part, count).to_csv(root / f"Hourly-{part}.csv", index=False)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["datasets"][SET]["split"]["folds"] = 2
    params["train"]["max_steps"] = 100
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return project


def run(counts: list[int], out: Path, cores: int) -> None:
    for count in counts:
        if not run_workflow(make(count, out), cores, f"{count} series"):
            sys.exit(1)
    table(out)


def peaks(project: Path) -> tuple[int, dict[str, float]]:
    """(windows in the plan, {rule: peak RSS in MB over its jobs})."""
    windows = len(pd.read_parquet(project / "results" / SET / "tensors" / "plan.parquet",
                                  columns=["id"]))
    rules: dict[str, float] = {}
    for path in (project / "benchmarks" / SET).glob("*.tsv"):
        rule = path.stem.split("-")[0].rstrip("_0123456789") if "-" in path.stem else path.stem
        rule = rule.replace("tensorize_trainval", "tensorize").replace("tensorize_test",
                                                                         "tensorize")
        rules[rule] = max(rules.get(rule, 0.0), float(pd.read_csv(path, sep="\t")["max_rss"]
                                                     .iloc[0]))
    return windows, rules


def table(out: Path) -> None:
    projects = sorted((p for p in out.glob("series-*") if (p / SET / "benchmarks").is_dir()),
                      key=lambda p: int(p.name.split("-")[1]))
    if not projects:
        sys.exit(f"no finished run under {out}")
    found = {int(p.name.split("-")[1]): peaks(p / SET) for p in projects}
    counts = sorted(found)
    rules = sorted(set().union(*(r for _, r in found.values())))
    print("| rule | " + " | ".join(f"{c} series ({found[c][0]:,} windows)" for c in counts)
          + " | MB per 1,000 windows more |")
    print("|---|" + "---:|" * (len(counts) + 1))
    first, last = counts[0], counts[-1]
    for rule in rules:
        values = [found[c][1].get(rule) for c in counts]
        low, high = found[first][1].get(rule), found[last][1].get(rule)
        slope = ((high - low) / ((found[last][0] - found[first][0]) / 1000)
                 if low is not None and high is not None and last != first else float("nan"))
        print(f"| {rule} | " + " | ".join("-" if v is None else f"{v:,.0f}" for v in values)
              + f" | {slope:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run", help="run the workflow at growing numbers of series")
    run_parser.add_argument("--series", type=int, nargs="+", default=[100, 200, 414, 828, 1656])
    run_parser.add_argument("--out", type=Path, default=REPO / "bench-runs" / "memory")
    run_parser.add_argument("--cores", type=int, default=2)
    table_parser = sub.add_parser("table", help="print the table of finished runs")
    table_parser.add_argument("out", type=Path)
    args = parser.parse_args()
    if args.command == "run":
        run(args.series, args.out, args.cores)
    else:
        table(args.out)


if __name__ == "__main__":
    main()
