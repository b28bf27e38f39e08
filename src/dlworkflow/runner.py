"""`dlworkflow run [DATASET ...] [-- SNAKEMAKE ARGS]`: the workflow with the right flags, a
closing summary, and one state for Snakemake and DVC.

It runs `snakemake --cores all --resources gpu=1 --rerun-incomplete --keep-going` (extra
arguments after `--` go to Snakemake; the targets come last, after Snakemake's own `--`, so
`--resources` cannot swallow them), on every dataset or on the ones named. Then it prints,
per dataset, the shipped model, its CV and test scores and where its two reports are.

After a complete run inside a DVC project (a `.dvc/` folder and `dvc.yaml`), it records what
Snakemake built in `dvc.lock` (`dvc commit --force`, which hashes each stage's deps, params
and outputs as `dvc repro` would have): so `dvc repro` right after says "up to date", and
`dvc exp run -S train.dropout=0.4` reruns only the stages a changed param or file touches.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dlworkflow.config import load_params
from dlworkflow.errors import ConfigError
from dlworkflow.workflow import all_targets

#: set to show Snakemake's whole output instead of one line per finished job
FULL_OUTPUT_ENV = "DLWORKFLOW_FULL_OUTPUT"

#: what `dlworkflow run --quick` writes into params.yaml: a smoke test of the whole path in
#: minutes (20 items a class, networks of a few dozen optimizer steps), not a result. Each is
#: a most: a value already written lower stays (a quick look never makes a run slower).
QUICK_LOOK = {"demo.max_per_class": 20, "train.epochs": 3, "train.min_steps": 0}


def set_params(path: str | Path, values: Mapping[str, Any], at_most: bool = False) -> list[str]:
    """Write dotted `values` into a params file, keeping its comments and order (a key that
    is not written yet is added to its section); with `at_most`, a number already written
    lower is kept. Returns what changed, as `key: value`."""
    from ruamel.yaml import YAML

    yaml = YAML()  # round trip: comments stay
    yaml.preserve_quotes = True
    yaml.width = 100
    yaml.representer.add_representer(  # null stays written as null, not as nothing
        type(None), lambda representer, _: representer.represent_scalar(
            "tag:yaml.org,2002:null", "null"))
    path = Path(path)
    document = yaml.load(path.read_text(encoding="utf-8"))
    changed = []
    for key, value in values.items():
        node = document
        *parents, last = key.split(".")
        for part in parents:
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
        current = node.get(last)
        if at_most and isinstance(current, (int, float)) and current <= value:
            continue
        if current != value or last not in node:
            node[last] = value
            changed.append(f"{key}: {value}")
    if changed:
        with path.open("w", encoding="utf-8") as out:
            yaml.dump(document, out)
    return changed

LOCK_HELP = (
    "Snakemake's lock in .snakemake/locks is held: another snakemake is running in this folder, "
    "or one was killed. If none is running, run `snakemake --unlock` and try again."
)


def lock_held(root: str | Path = ".") -> bool:
    """Whether Snakemake's lock is held here (a running or a killed snakemake); says so."""
    if any((Path(root) / ".snakemake" / "locks").glob("*")):
        print(LOCK_HELP, file=sys.stderr)
        return True
    return False


def snakemake_command(params: Mapping[str, Any], datasets: Sequence[str] = (),
                      extra: Sequence[str] = ()) -> list[str]:
    """The Snakemake call for `datasets` (all when empty), `extra` arguments included."""
    unknown = [name for name in datasets if name not in params["datasets"]]
    if unknown:
        raise ConfigError(f"no dataset named {', '.join(map(repr, unknown))} in params.yaml; "
                          f"the datasets are: {', '.join(params['datasets'])}")
    extra = list(extra)
    flags = ["--cores", "all"] if not {"--cores", "-c"} & set(extra) else []
    if "--resources" not in extra:  # network jobs take the one GPU slot in turn
        flags += ["--resources", "gpu=1"]
    flags += [flag for flag in ("--rerun-incomplete", "--keep-going") if flag not in extra]
    targets = [target for target in all_targets(params)
               if any(target.startswith(f"results/{name}/") for name in datasets)]
    return [sys.executable, "-m", "snakemake", *flags, *extra,
            *(["--", *targets] if targets else [])]


_RULE = re.compile(r"^(?:local)?(?:rule|checkpoint) (\w+):$")
_FIELD = re.compile(r"^\s+(jobid|wildcards): (.*)$")
_FINISHED = re.compile(r"^Finished jobid: (\d+) \(Rule: (\w+)\)")
#: Snakemake lines a person needs to see as they come (errors and the run's end)
_SHOWN = re.compile(r"Error|error:|Exception|Traceback|Exiting because|MissingInput|"
                    r"Nothing to be done|steps \(100%\) done|LockException|Complete log")


class Progress:
    """Snakemake's output, read line by line, as one line per finished job: how many jobs
    are done (a count that only grows), the dataset, the rule and its other wildcards.
    Errors and the run's last lines pass through; the full output goes to `full`."""

    def __init__(self, out: Any, full: Any) -> None:
        self.out, self.full = out, full
        self.jobs: dict[str, tuple[str, str]] = {}
        self.rule, self.wildcards, self.job, self.done = "", "", "", 0
        self.in_error = False

    def feed(self, line: str) -> None:
        self.full.write(line)
        text = line.rstrip("\n")
        if match := _RULE.match(text):
            self.rule, self.wildcards, self.job = match.group(1), "", ""
            self.in_error = False
        elif match := _FIELD.match(text):  # a job's fields, jobid before or after wildcards
            if match.group(1) == "wildcards":
                self.wildcards = match.group(2)
            else:
                self.job = match.group(2)
            if self.job:
                self.jobs[self.job] = (self.rule, self.wildcards)
        elif match := _FINISHED.match(text):
            rule = match.group(2)  # job ids are reused after a checkpoint: trust the rule
            known, wildcards = self.jobs.get(match.group(1), (rule, ""))
            wildcards = wildcards if known == rule else ""
            if rule == "all":
                return
            self.done += 1
            fields = dict(part.split("=", 1) for part in wildcards.split(", ") if "=" in part)
            dataset = fields.pop("dataset", fields.pop("demo_dataset", ""))
            detail = " ".join(f"{k} {v}" for k, v in fields.items())
            self.out.write(f"[{self.done:>4} done] {dataset:<12} {rule}"
                           f"{' (' + detail + ')' if detail else ''}\n")
        elif text.startswith("Error in rule") or self.in_error:
            self.in_error = bool(text.strip())  # an error block ends at a blank line
            self.out.write(line)
        elif _SHOWN.search(text):
            self.out.write(line)
        self.out.flush()


def _score(entry: Mapping[str, Any], name: str) -> str:
    return f"{entry.get(f'{name}_mean', float('nan')):.4f} ± {entry.get(f'{name}_std', 0):.4f}"


def closing_summary(params: Mapping[str, Any], datasets: Sequence[str] = (),
                    root: str | Path = ".") -> str:
    """Per dataset: the shipped model with its CV and test scores, and the report paths."""
    from dlworkflow.metrics import metric_label

    root = Path(root)
    lines = ["", "Results"]
    for name in datasets or list(params["datasets"]):
        results = root / "results" / name
        eda, report = results / "intake" / "eda.html", results / "final" / "report.html"
        test_file = results / "final" / "test_metrics.json"
        if not test_file.is_file():
            lines.append(f"  {name}: not finished (see logs/{name}/ and the errors above)")
            continue
        test = json.loads(test_file.read_text())
        headline, primary = test["headline"], test["primary"]
        network = json.loads((results / "nn" / "summary.json").read_text())["headline"]
        baseline = json.loads((results / "baseline" / "summary.json").read_text())["headline"]
        cv = network if headline["kind"] == "network" else baseline
        choice_file = results / "intake" / "metric.json"
        label = metric_label(primary, json.loads(choice_file.read_text())
                             if choice_file.is_file() else None)
        lines += [
            f"  {name}: ships the {headline['kind']} {headline['model']}; {label}: "
            f"CV {_score(cv, primary)}, test {headline[primary]:.4f} "
            f"[{headline[f'{primary}_low']:.4f}, {headline[f'{primary}_high']:.4f}]",
            f"    {test['shipped']['why']}",
            *_comparison_line(test),
            f"    EDA: {eda}" if eda.is_file() else f"    EDA: (none: {eda} missing)",
            f"    report: {report}",
        ]
    return "\n".join(lines)


def _comparison_line(test: Mapping[str, Any]) -> list[str]:
    """The other model's test score and the paired difference, when both were scored."""
    comparison = test.get("comparison")
    if not comparison or comparison.get("low") is None:
        return []
    other = test[comparison["other"]]["metrics"][comparison["metric"]]["value"]
    return [f"    test of the {comparison['other']} {comparison['other_model']}: {other:.4f}; "
            f"shipped minus it {comparison['shipped_minus_other']:+.4f} "
            f"[{comparison['low']:+.4f}, {comparison['high']:+.4f}]: {comparison['verdict']}"]


def in_dvc_project(root: str | Path = ".") -> bool:
    root = Path(root)
    return (root / ".dvc").is_dir() and (root / "dvc.yaml").is_file() and bool(
        shutil.which("dvc"))


def record_in_dvc(params: Mapping[str, Any], root: str | Path = ".") -> int:
    """Write the step digests DVC's stages depend on (dlworkflow.dvcstate), then `dvc commit
    --force` every stage: dvc.lock then describes what Snakemake built."""
    from dlworkflow.dvcstate import write_all

    if not in_dvc_project(root):
        print("not a DVC project here (no .dvc/, dvc.yaml or dvc command): nothing to record",
              file=sys.stderr)
        return 1
    try:
        write_all(params, root)
    except FileNotFoundError as exc:
        print(f"not recorded: {exc}", file=sys.stderr)
        return 1
    done = subprocess.run(["dvc", "commit", "--force", "--quiet"], cwd=root, check=False,
                          capture_output=True, text=True)
    if done.returncode:
        print(f"dvc commit failed; `dvc repro` would recompute:\n{done.stderr.strip()}",
              file=sys.stderr)
    else:
        print("Recorded in dvc.lock (dvc commit): `dvc repro` is up to date, and "
              "`dvc exp run -S <param>=<value>` reruns only what the change touches "
              "(`-S ++<param>=<value>` for a param params.yaml does not write yet).")
    return done.returncode


def run_workflow(params_path: str, datasets: Sequence[str] = (),
                 extra: Sequence[str] = (), quick: bool = False) -> int:
    """What `dlworkflow run` does (module docstring); `quick` first writes the quick-look
    keys into the params file. Returns Snakemake's exit status."""
    if lock_held():
        return 1
    if quick:
        changed = set_params(params_path, QUICK_LOOK, at_most=True)
        print(f"Quick look, a smoke test of the whole path (not a result): {params_path} "
              f"sets at most {', '.join(f'{k}: {v}' for k, v in QUICK_LOOK.items())}"
              + (" (changed: git diff shows it; `git checkout params.yaml` goes back to "
                 "the full demo)." if changed else " (already)."), flush=True)
    params = load_params(params_path)
    command = snakemake_command(params, datasets, extra)
    from dlworkflow.demo import demo_plan

    plan = demo_plan({**params, "datasets": {name: entry for name, entry in
                                             params["datasets"].items()
                                             if not datasets or name in datasets}})
    if plan:
        print("Demo data:", *plan, sep="\n", flush=True)
    print("+ snakemake " + " ".join(command[3:]), file=sys.stderr, flush=True)
    if {"-n", "--dry-run", "--verbose"} & set(extra) or FULL_OUTPUT_ENV in os.environ:
        status = subprocess.call(command)  # Snakemake's own output, as it is
    else:
        Path("logs").mkdir(exist_ok=True)
        full_log = Path("logs") / f"run-{time.strftime('%Y%m%dT%H%M%S')}.log"
        print(f"One line per finished job; Snakemake's full output: {full_log} "
              f"({FULL_OUTPUT_ENV}=1 shows it here)", flush=True)
        with full_log.open("w", encoding="utf-8") as full, subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                bufsize=1) as job:
            progress = Progress(sys.stdout, full)
            for line in job.stdout:
                progress.feed(line)
        status = job.returncode
    print(closing_summary(params, datasets), flush=True)
    if status == 0 and not datasets and params_path == "params.yaml" and in_dvc_project():
        record_in_dvc(params)
    return status
