"""The `dlworkflow` command: check, dvc-yaml --check, and the step command it builds."""

from __future__ import annotations

import shutil

import yaml

from dlworkflow.cli import main, snakemake_step_command
from tests.conftest import REPO


def test_check_reports_valid_and_invalid_params(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "raw" / "x").mkdir(parents=True)
    good = {"seed": 1, "datasets": {"x": {"modality": "image", "task": "classification",
                                          "root": "data/raw/x", "layout": {"kind": "folders"}}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(good))
    assert main(["check"]) == 0
    assert "valid (1 datasets)" in capsys.readouterr().out
    good["datasets"]["x"]["layout"]["kind"] = "piles"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(good))
    assert main(["check"]) == 2
    assert "datasets.x.layout.kind: 'piles' is not allowed" in capsys.readouterr().err


def test_dvc_yaml_check_detects_drift(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    assert main(["dvc-yaml", "--check"]) == 1  # no dvc.yaml yet
    assert main(["dvc-yaml"]) == 0
    assert main(["dvc-yaml", "--check"]) == 0
    assert (tmp_path / "dvc.yaml").read_text() == (REPO / "dvc.yaml").read_text()
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["datasets"].pop("co2")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert main(["dvc-yaml", "--check"]) == 1


def test_step_command_runs_only_that_steps_rules_on_its_targets(monkeypatch):
    monkeypatch.chdir(REPO)
    command = snakemake_step_command("intake")
    allowed = command[command.index("--allowed-rules") + 1: command.index("--")]
    assert allowed == ["intake", "choose_metric"]
    targets = command[command.index("--") + 1:]
    assert "results/fsdd/intake/inventory.parquet" in targets
    assert not any(t.startswith("data/raw") for t in targets)
    assert "--rerun-incomplete" in command


def test_run_command_puts_the_targets_after_the_snakemake_arguments():
    from dlworkflow.config import load_params
    from dlworkflow.runner import snakemake_command

    params = load_params(REPO / "params.yaml")
    command = snakemake_command(params, ["digits"], ["--dry-run", "--resources", "gpu=2"])
    cut = command.index("--")
    flags, targets = command[:cut], command[cut + 1:]
    # `--resources` takes several values: targets before `--` would be read as resources
    assert flags[flags.index("--resources") + 1] == "gpu=2" and flags.count("--resources") == 1
    assert {"--dry-run", "--rerun-incomplete", "--keep-going", "--cores"} <= set(flags)
    assert targets and all(t.startswith("results/digits/") for t in targets)
    assert "results/digits/final/report.html" in targets
    everything = snakemake_command(params)  # no names: rule all
    assert "--" not in everything and everything[-1] == "--keep-going"


def test_run_names_an_unknown_dataset(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    assert main(["run", "digitz", "--", "--dry-run"]) == 2
    error = capsys.readouterr().err
    assert "no dataset named 'digitz'" in error and "digits, fsdd, sms_spam, co2" in error
