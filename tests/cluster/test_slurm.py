"""The workflow on a real SLURM cluster (tests/cluster/start-slurm.sh starts one on localhost).

Every job goes through sbatch with the shipped profile (profiles/slurm); the results must
equal a local run's, and a failing job must be reported and mended by a rerun.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.workflow.conftest import make_project, run, shipped_params, tools_env, write_params

pytestmark = [pytest.mark.workflow, pytest.mark.cluster]


def _cluster_up() -> str | None:
    """None when a SLURM controller answers here, else why not."""
    if not shutil.which("sbatch"):
        return "sbatch not found: no SLURM here (tests/cluster/start-slurm.sh --install starts one)"
    done = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, check=False)
    if done.returncode != 0 or not {"idle", "mix", "alloc"} & set(done.stdout.split()):
        return f"SLURM is installed but no idle node answers: {done.stderr.strip() or done.stdout}"
    return None


@pytest.fixture(scope="module")
def cluster() -> None:
    reason = _cluster_up()
    if reason and os.environ.get("DLWORKFLOW_REQUIRE_SLURM"):
        pytest.fail(f"CI needs SLURM: {reason}")
    if reason:
        pytest.skip(reason)


#: what the test cluster needs beyond the profile: no accounting database (squeue for the
#: job states), no account, two CPUs (intake asks for four threads), quick status checks
SLURM_ARGS = ["--profile", "profiles/slurm", "--slurm-status-command", "squeue",
              "--slurm-no-account", "--slurm-init-seconds-before-status-checks", "2",
              "--max-threads", "2", "--latency-wait", "5"]

#: outputs that must be identical whether jobs ran locally or on SLURM (timings, model
#: archives and HTML pages carry clocks and are left out)
SAME = ["intake/inventory.parquet", "intake/metric.json", "split/splits.parquet",
        "tensors/index.parquet", "baseline/summary.json", "baseline/oof.parquet",
        "nn/summary.json", "nn/oof.parquet", "final/model.json", "final/test_metrics.json",
        "final/predictions.parquet"]


def _slurm(project: Path, *extra: str, timeout: int = 900) -> subprocess.CompletedProcess:
    # `timeout` kills a hung status loop, so CI fails instead of stalling
    return run(["timeout", str(timeout), "snakemake", *SLURM_ARGS, *extra], project,
               timeout=timeout + 60)


def _same(left: Path, right: Path) -> None:
    if left.suffix == ".parquet":
        pd.testing.assert_frame_equal(pd.read_parquet(left), pd.read_parquet(right))
    elif left.suffix == ".json":
        assert json.loads(left.read_text()) == json.loads(right.read_text()), left
    else:
        with np.load(left) as a, np.load(right) as b:
            # a series' stored history keeps its gaps as NaN, equal where both have one
            assert a.files == b.files and all(
                np.array_equal(a[k], b[k], equal_nan=a[k].dtype.kind == "f") for k in a.files
            ), left


@pytest.fixture(scope="module")
def slurm_project(tmp_path_factory, cluster, request) -> Path:
    """co2 (quick params, as demo_project has them) through every step, each job submitted
    to SLURM. The run mostly waits on the plugin's status checks (it polls less often the
    longer nothing finishes), so the local reference run, demo_project, goes meanwhile."""
    project = make_project(tmp_path_factory.mktemp("slurm"))
    params = shipped_params()
    params["datasets"] = {"co2": params["datasets"]["co2"]}
    write_params(project, params)
    timeout = 1200  # `timeout` kills a hung status loop, so CI fails instead of stalling
    with (project / "slurm-run.log").open("w") as log:
        submitted = subprocess.Popen(["timeout", str(timeout), "snakemake", *SLURM_ARGS],
                                     cwd=project, env=tools_env(), stdout=log,
                                     stderr=subprocess.STDOUT)
        try:
            request.getfixturevalue("demo_project")
        finally:
            returncode = submitted.wait(timeout + 60)
    output = (project / "slurm-run.log").read_text()
    assert returncode == 0, output[-5000:]
    assert "submitted with SLURM jobid" in output
    return project


def test_slurm_run_gives_the_local_results(slurm_project, request):
    # demo_project ran the same params (all four datasets) locally with `--cores 2`; asked for
    # here, not as an argument: pytest would set up the session fixture before slurm_project
    demo_project = request.getfixturevalue("demo_project")
    assert yaml.safe_load((demo_project / "params.yaml").read_text())["datasets"]["co2"] == \
        yaml.safe_load((slurm_project / "params.yaml").read_text())["datasets"]["co2"]
    results, local = slurm_project / "results" / "co2", demo_project / "results" / "co2"
    for name in SAME:
        _same(results / name, local / name)
    shards = sorted((results / "tensors").glob("*.npz")) + sorted(
        (results / "final" / "tensors").glob("*.npz"))
    assert shards
    for shard in shards:
        _same(shard, local / shard.relative_to(results))
    # the GPU rules asked SLURM for a GPU; SLURM ran every job, the headline is a real score
    assert json.loads((results / "final" / "test_metrics.json").read_text())["network"]


def test_a_failing_slurm_job_is_reported_and_a_rerun_completes(slurm_project):
    splits = slurm_project / "results" / "co2" / "split" / "splits.parquet"
    good = splits.read_bytes()
    splits.write_bytes(b"not a parquet file")  # the next job that reads it fails
    plan = slurm_project / "results" / "co2" / "tensors" / "plan.parquet"
    target = str(plan.relative_to(slurm_project))
    failed = _slurm(slurm_project, "--forcerun", "tensor_plan", target, timeout=600)
    log = failed.stdout + failed.stderr
    assert failed.returncode != 0
    assert "Error in rule tensor_plan" in log and "SLURM" in log, log[-3000:]
    assert not plan.exists()  # the failed job's output is not left behind
    splits.write_bytes(good)
    again = _slurm(slurm_project, target, timeout=600)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-3000:]
    planned = pd.read_parquet(plan)
    assert len(planned) and set(planned["role"]) == {"trainval", "test"}
