"""Command line: `dlworkflow run [DATASET ...] [-- SNAKEMAKE ARGS] | check | record |
step <name> | dvc-yaml [--check] | params-doc [--check] | predict <model> <inputs>`."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from dlworkflow.config import load_params, read_written
from dlworkflow.errors import CannotPredict, ConfigError
from dlworkflow.runner import lock_held, record_in_dvc, run_workflow
from dlworkflow.workflow import STEPS, get_step, step_outputs


def snakemake_step_command(name: str, params: dict | None = None,
                           extra: list[str] | None = None) -> list[str]:
    """The snakemake call that runs exactly one step's rules on that step's targets
    (`params`: resolved, else read from params.yaml)."""
    step = get_step(name)
    params = params if params is not None else load_params("params.yaml")
    targets = step_outputs(step, params)
    allowed = list(step.rules)
    extra = list(extra or [])
    if "--resources" not in extra:  # network jobs take the one GPU slot in turn
        extra = ["--resources", "gpu=1", *extra]
    return [sys.executable, "-m", "snakemake", "--cores", "all", "--rerun-incomplete", *extra,
            "--allowed-rules", *allowed, "--", *targets]


def run_step(name: str, params_path: str = "params.yaml", extra: list[str] | None = None) -> int:
    """Run one step with Snakemake, then write its manifest (what each dvc.yaml stage
    calls); `code` writes the steps' code digests (dlworkflow.dvcstate)."""
    from dlworkflow import dvcstate

    params = load_params(params_path)
    if name == "code":
        for path in dvcstate.write_code_digests(params):
            print(f"wrote {path}", file=sys.stderr)
        return 0
    if lock_held():
        return 1
    command = snakemake_step_command(name, params, extra)
    print("+ " + " ".join(command[1:]), file=sys.stderr)
    status = subprocess.call(command)
    if status == 0:
        dvcstate.write_manifest(get_step(name), params)
    return status


def _write_generated(path: Path, text: str, check: bool, command: str) -> int:
    """Write a generated file, or with `check` say whether it is up to date (exit 1 if not)."""
    if check:
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            print(f"{path} is out of date: run `{command}`", file=sys.stderr)
            return 1
        print(f"{path} is up to date")
        return 0
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `dlworkflow` command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    passed: list[str] = []
    if "run" in argv and "--" in argv[argv.index("run"):]:  # what follows `--` is Snakemake's
        cut = argv.index("--", argv.index("run"))
        argv, passed = argv[:cut], argv[cut + 1:]
    parser = argparse.ArgumentParser(prog="dlworkflow", description=__doc__)
    parser.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    sub = parser.add_subparsers(dest="command", required=True)
    workflow = sub.add_parser(
        "run", help="run the workflow (all datasets, or those named) and summarise the results; "
        "arguments after `--` go to snakemake")
    workflow.add_argument("datasets", nargs="*", help="dataset names from params.yaml")
    workflow.add_argument("--quick", action="store_true",
                          help="the quick look: first write demo.max_per_class 20, train.epochs "
                          "3 and train.min_steps 0 into params.yaml (a smoke test, minutes)")
    sub.add_parser("check", help="validate params.yaml and report every problem")
    sub.add_parser("record", help="after a complete `snakemake` run: write the step digests "
                   "and `dvc commit` (what `dlworkflow run` does at its end)")
    step = sub.add_parser("step", help="run one step's Snakemake rules (used by dvc.yaml)")
    step.add_argument("name", choices=["code", *(s.name for s in STEPS)])
    step.add_argument("snakemake_args", nargs=argparse.REMAINDER,
                      help="extra arguments passed to snakemake")
    dvc = sub.add_parser("dvc-yaml", help="write dvc.yaml generated from the step table")
    dvc.add_argument("--check", action="store_true", help="exit 1 if dvc.yaml is out of date")
    doc = sub.add_parser("params-doc", help="write docs/PARAMS.md generated from the schema")
    doc.add_argument("--check", action="store_true", help="exit 1 if it is out of date")
    predict = sub.add_parser("predict", help="predict raw files (or texts) with a saved model; "
                             "prints CSV")
    predict.add_argument("model_dir", help="a folder with model.keras and model.json")
    predict.add_argument("inputs", nargs="+", help="raw files; for text models also plain strings")
    args = parser.parse_args(argv)
    try:
        if args.command == "predict":
            from dlworkflow.predict import predict as run_predict

            frame = run_predict(args.model_dir, args.inputs)
            print(frame.to_csv(index=False), end="")
            if "error" in frame:  # every input has its row; the unusable ones say why
                bad = frame[frame["error"] != ""]
                print(f"{len(bad)} of {len(frame)} inputs could not be predicted (the `error` "
                      "column says why):", file=sys.stderr)
                for name, error in zip(bad["input"], bad["error"], strict=True):
                    print(f"  {name}: {error}", file=sys.stderr)
                return 1
            return 0
        if args.command == "run":
            return run_workflow(args.params, args.datasets, passed, quick=args.quick)
        if args.command == "check":
            params = load_params(args.params)
            print(f"{args.params}: valid ({len(params['datasets'])} datasets)")
            return 0
        if args.command == "step":
            return run_step(args.name, args.params, args.snakemake_args)
        if args.command == "record":
            return record_in_dvc(load_params(args.params))
        if args.command == "params-doc":
            from dlworkflow.paramsdoc import render_params_doc

            return _write_generated(Path("docs/PARAMS.md"), render_params_doc(), args.check,
                                    "dlworkflow params-doc")
        from dlworkflow.dvcgen import render_dvc_yaml

        return _write_generated(Path("dvc.yaml"), render_dvc_yaml(
            load_params(args.params), read_written(args.params)), args.check,
            "dlworkflow dvc-yaml")
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    except (FileNotFoundError, CannotPredict) as exc:
        print(exc, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
