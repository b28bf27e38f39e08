"""DVC drives the same rules: one stage per step, narrow params, up to date when unchanged."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tests.workflow.conftest import run, shipped_params, write_params

pytestmark = pytest.mark.workflow


def test_dvc_repro_runs_each_step_once_and_reruns_only_what_a_param_touches(project):
    params = shipped_params()
    params["datasets"] = {k: params["datasets"][k] for k in ("fsdd", "co2")}
    write_params(project, params)
    for command in (["git", "init", "-q"], ["dvc", "init", "-q"],
                    ["dvc", "config", "core.analytics", "false"],
                    ["dlworkflow", "dvc-yaml"]):
        done = run(command, project)
        assert done.returncode == 0, done.stderr
    first = run(["dvc", "repro"], project)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    for name in ("fsdd", "co2"):
        assert (project / "results" / name / "intake" / "inventory.parquet").exists()
        assert (project / "results" / name / "tensors" / "index.parquet").exists()
    shown = run(["dvc", "metrics", "show", "--json"], project)
    assert shown.returncode == 0, shown.stderr
    metrics = json.loads(shown.stdout)
    assert any("counts.json" in path for entry in metrics.values()
               for path in entry.get("data", {}))

    second = run(["dvc", "repro"], project)
    assert second.returncode == 0
    assert "Data and pipelines are up to date" in second.stdout
    status = run(["dvc", "status"], project)
    assert "up to date" in status.stdout

    # an experiment on a split param reruns split and eda only (the README's example)
    for command in (["git", "add", "-A"], ["git", "-c", "user.name=t", "-c", "user.email=t@t",
                                           "commit", "-qm", "baseline"]):
        assert run(command, project).returncode == 0
    experiment = run(["dvc", "exp", "run", "-S", "split.folds=3"], project)
    assert experiment.returncode == 0, experiment.stdout[-2000:] + experiment.stderr[-2000:]
    assert "Stage 'demo_data' didn't change, skipping" in experiment.stdout
    assert "Stage 'intake' didn't change, skipping" in experiment.stdout
    assert "Running stage 'split'" in experiment.stdout
    assert "Running stage 'eda'" in experiment.stdout
    splits = pd.read_parquet(project / "results" / "fsdd" / "split" / "splits.parquet")
    assert sorted(splits["fold"].dropna().unique()) == [0, 1, 2]


def test_step_command_refuses_to_run_under_a_stale_lock(project):
    locks = project / ".snakemake" / "locks"
    locks.mkdir(parents=True)
    (locks / "0.input.lock").write_text("x")
    done = run(["dlworkflow", "step", "intake"], project)
    assert done.returncode == 1
    assert "snakemake --unlock" in done.stderr
