"""Command line: `dlworkflow run [DATASET ...] [-- SNAKEMAKE ARGS] | check | step <name> |
dvc-yaml [--check] | predict <model> <inputs>`."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from dlworkflow.config import load_params
from dlworkflow.errors import ConfigError
from dlworkflow.runner import lock_held, run_workflow
from dlworkflow.workflow import STEPS, get_step, step_outputs


def snakemake_step_command(name: str, params_path: str = "params.yaml",
                           extra: list[str] | None = None) -> list[str]:
    """The snakemake call that runs exactly one step's rules on that step's targets."""
    step = get_step(name)
    params = load_params(params_path)
    targets = step_outputs(step, params)
    allowed = list(step.rules)
    extra = list(extra or [])
    if "--resources" not in extra:  # network jobs take the one GPU slot in turn
        extra = ["--resources", "gpu=1", *extra]
    return [sys.executable, "-m", "snakemake", "--cores", "all", "--rerun-incomplete", *extra,
            "--allowed-rules", *allowed, "--", *targets]


def run_step(name: str, params_path: str = "params.yaml", extra: list[str] | None = None) -> int:
    """Run one step with Snakemake (what each dvc.yaml stage calls)."""
    if lock_held():
        return 1
    command = snakemake_step_command(name, params_path, extra)
    print("+ " + " ".join(command[1:]), file=sys.stderr)
    return subprocess.call(command)


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
    sub.add_parser("check", help="validate params.yaml and report every problem")
    step = sub.add_parser("step", help="run one step's Snakemake rules (used by dvc.yaml)")
    step.add_argument("name", choices=[s.name for s in STEPS])
    step.add_argument("snakemake_args", nargs=argparse.REMAINDER,
                      help="extra arguments passed to snakemake")
    dvc = sub.add_parser("dvc-yaml", help="write dvc.yaml generated from the step table")
    dvc.add_argument("--check", action="store_true", help="exit 1 if dvc.yaml is out of date")
    predict = sub.add_parser("predict", help="predict raw files (or texts) with a saved model; "
                             "prints CSV")
    predict.add_argument("model_dir", help="a folder with model.keras and model.json")
    predict.add_argument("inputs", nargs="+", help="raw files; for text models also plain strings")
    args = parser.parse_args(argv)
    try:
        if args.command == "predict":
            from dlworkflow.predict import predict as run_predict

            print(run_predict(args.model_dir, args.inputs).to_csv(index=False), end="")
            return 0
        if args.command == "run":
            return run_workflow(args.params, args.datasets, passed)
        if args.command == "check":
            params = load_params(args.params)
            print(f"{args.params}: valid ({len(params['datasets'])} datasets)")
            return 0
        if args.command == "step":
            return run_step(args.name, args.params, args.snakemake_args)
        from dlworkflow.dvcgen import render_dvc_yaml

        text = render_dvc_yaml(load_params(args.params))
        path = Path("dvc.yaml")
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                print("dvc.yaml is out of date: run `dlworkflow dvc-yaml`", file=sys.stderr)
                return 1
            print("dvc.yaml is up to date")
            return 0
        path.write_text(text, encoding="utf-8")
        print("wrote dvc.yaml")
        return 0
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(exc, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
