"""A fold job with glibc's default heap against the heap `dlworkflow.heap` keeps: the real
`train_fold` job of a finished project, run by Snakemake both ways, taking turns.

    python bench/heap.py [--project .] [--datasets co2 digits] [--fold 0] [--rounds 2]

The project is linked into a temporary folder beside it (its files hard-linked; what the job
writes to copied), so the project itself is not touched. For glibc's default way the copy's
`keep_freed_heap` does nothing (setting a `MALLOC_*_` variable instead would change glibc's
default behaviour too); the other way runs the project's code as it is. Per run it reads
the job's own log (the median of Keras' ms a step over the epochs) and the job's resource
use as the kernel counts it (CPU time in user space and in the kernel, minor page faults,
peak memory), and it checks that the job wrote the same `model.keras`, to the bit, as the
project's. Nothing is asserted; run it after `make demo` (or any `dlworkflow run`).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

SKIPPED = {".git", ".dvc", ".venv"}
#: appended to the copy's heap.py for glibc's default way
UNSET = "\n\ndef keep_freed_heap(pad: int = 0) -> bool:  # bench/heap.py\n    return False\n"
STEP = re.compile(r"^\d+/\d+ - \S+ - (\d+)ms/step", re.MULTILINE)


def linked_copy(project: Path, into: Path, fold_dir: Path) -> None:
    """The project's files hard-linked into `into`; what the job writes to (its fold's
    folder, the logs, the benchmark records, Snakemake's records) copied, so the project's
    files stay as they are."""
    written = {project / name for name in ("logs", "benchmarks", ".snakemake")} | {fold_dir}

    def place(source: Path, target: Path) -> None:
        if source in written:
            shutil.copytree(source, target, symlinks=True,
                            ignore=shutil.ignore_patterns("locks", "incomplete"))
        elif source.is_dir() and not source.is_symlink():
            target.mkdir()
            for entry in source.iterdir():
                place(entry, target / entry.name)
        else:
            os.link(source, target, follow_symlinks=False)

    for entry in project.iterdir():
        if entry.name not in SKIPPED:
            place(entry, into / entry.name)


def run_job(copy: Path, dataset: str, fold: int, default_heap: bool) -> dict[str, float]:
    """Run the fold's train_fold job again; its figures."""
    target = f"results/{dataset}/nn/fold-{fold}/metrics.json"
    if default_heap:
        module = copy / "src" / "dlworkflow" / "heap.py"
        text = module.read_text()
        module.unlink()  # a hard link to the project's file
        module.write_text(text + UNSET)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    snakemake = Path(sys.executable).with_name("snakemake")
    job = subprocess.Popen([str(snakemake), target, "--cores", "1", "--force", "--quiet", "all"],
                           cwd=copy, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(job.pid, 0)
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{target}: the job failed: {job.stderr.read().decode()[-2000:]}")
    log = (copy / "logs" / dataset / f"train_fold-{fold}.log").read_text()
    steps = [int(ms) for ms in STEP.findall(log)]
    return {"ms_step": statistics.median(steps[1:] or steps), "user": usage.ru_utime,
            "system": usage.ru_stime, "faults": usage.ru_minflt, "peak": usage.ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=Path("."))
    parser.add_argument("--datasets", nargs="+", default=["co2", "digits"])
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    project = args.project.resolve()

    print("| dataset | heap | ms a step (Keras) | CPU s, user | CPU s, kernel | minor page "
          "faults | peak MB | same model.keras |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for name in args.datasets:
        model = project / "results" / name / "nn" / f"fold-{args.fold}" / "model.keras"
        runs: dict[bool, list[dict[str, float]]] = {True: [], False: []}
        same = {True: True, False: True}
        for turn in range(args.rounds):
            for default_heap in ((True, False) if turn % 2 == 0 else (False, True)):
                with tempfile.TemporaryDirectory(dir=project.parent) as folder:
                    copy = Path(folder)
                    linked_copy(project, copy, model.parent)
                    runs[default_heap].append(run_job(copy, name, args.fold, default_heap))
                    written = copy / model.relative_to(project)
                    same[default_heap] &= written.read_bytes() == model.read_bytes()
        for default_heap in (True, False):
            figures = {key: statistics.median(run[key] for run in runs[default_heap])
                       for key in runs[default_heap][0]}
            print(f"| {name} | {'glibc default' if default_heap else 'kept (shipped)'} | "
                  f"{figures['ms_step']:.0f} | {figures['user']:.1f} | {figures['system']:.1f} | "
                  f"{figures['faults']:,.0f} | {figures['peak']:.0f} | "
                  f"{'yes' if same[default_heap] else 'no'} |")


if __name__ == "__main__":
    main()
