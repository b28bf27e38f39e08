"""DVC drives the same rules: one stage per step, narrow params, up to date when unchanged."""

from __future__ import annotations

import json
import re
import shutil
import time

import pytest

from tests.conftest import REPO
from tests.workflow.conftest import add_venv, git_commit, run, run_recipe, shipped_params, write_params

pytestmark = pytest.mark.workflow


def _experiments(project) -> dict[str, dict]:
    """{experiment name: {"params": flat params, "metrics": {file: data}}} from dvc exp show."""
    shown = run(["dvc", "exp", "show", "--json"], project)
    assert shown.returncode == 0, shown.stderr
    found = {}
    for commit in json.loads(shown.stdout):
        for exp in commit.get("experiments") or []:
            for revision in exp.get("revs", []):
                data = revision.get("data") or {}
                if revision.get("name") and data:
                    params = data.get("params", {}).get("params.yaml", {}).get("data", {})
                    metrics = {path: entry.get("data", {})
                               for path, entry in (data.get("metrics") or {}).items()}
                    found[revision["name"]] = {"params": params, "metrics": metrics}
    return found


@pytest.mark.seconds(200)
def test_dvc_stages_rerun_only_what_a_param_touches_and_experiments_compare(project):
    """One small forecasting dataset through every DVC behaviour a user counts on."""
    params = shipped_params()
    params["datasets"] = {"co2": params["datasets"]["co2"]}
    # four pipeline runs below: keep each small (SHAP explanations are tested elsewhere)
    params["final"]["explanations"] = 0
    write_params(project, params)
    for command in (["git", "init", "-q"], ["dvc", "init", "-q"],
                    ["dvc", "config", "core.analytics", "false"],
                    ["dvc", "config", "plots.html_template", "plots.html"],  # as the repo's
                    ["dlworkflow", "dvc-yaml"]):
        done = run(command, project)
        assert done.returncode == 0, done.stderr
    shutil.copy(REPO / ".dvc" / "plots.html", project / ".dvc" / "plots.html")
    # Snakemake first (as `make demo` does); `dlworkflow run` records its outputs in dvc.lock
    first = run(["dlworkflow", "run"], project)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "co2: ships the" in first.stdout and "results/co2/final/report.html" in first.stdout
    assert "Recorded in dvc.lock" in first.stdout, first.stderr[-2000:]
    # one line per finished job, counted up, naming dataset and rule; the rest in a log
    done = [line for line in first.stdout.splitlines() if line.startswith("[")]
    counts = [int(line[1:line.index(" done]")]) for line in done]
    assert counts == list(range(1, len(counts) + 1)) and len(counts) > 15
    assert all(" co2 " in line for line in done), done
    assert any("train_fold (fold 1)" in line for line in done), done
    assert "Shell command" not in first.stdout and len(first.stdout.splitlines()) < 60
    assert any(project.glob("logs/run-*.log"))
    shown = run(["dvc", "metrics", "show", "--json"], project)
    assert shown.returncode == 0, shown.stderr
    files = {path for entry in json.loads(shown.stdout).values()
             for path in entry.get("data", {})}
    assert files == {"results/co2/nn/headline.json", "results/co2/final/headline.json"}
    plots = run(["dvc", "plots", "show", "--json"], project)
    assert plots.returncode == 0 and "Forecast vs actual" in plots.stdout, plots.stderr[-2000:]
    page = run(["dvc", "plots", "show", "-o", "plots-page"], project)
    assert page.returncode == 0, page.stderr[-2000:]
    html = (project / "plots-page" / "index.html").read_text()
    assert "vegaEmbed(" in html and "Loss per epoch" in html  # the charts, drawn by...
    assert not re.search(r'<script[^>]+src="https?:', html)  # ...libraries in the page

    first_headline = json.loads((project / "results" / "co2" / "nn" / "summary.json")
                                .read_text())["headline"]
    second = run(["dvc", "repro"], project)  # one state: DVC knows what Snakemake built
    assert second.returncode == 0
    assert "Data and pipelines are up to date" in second.stdout, second.stdout[-3000:]

    # a shared remote: a fresh clone pulls every output and metric, and recomputes nothing
    remote = project.parent / "dvc-remote"
    add_venv(project)  # `make install`'s, ignored by git, for the README's `source` below
    done = run(["dvc", "remote", "add", "-d", "shared", str(remote)], project)
    assert done.returncode == 0, done.stderr
    git_commit(project, "first run")
    pushed = run(["dvc", "push"], project)
    assert pushed.returncode == 0, pushed.stderr[-2000:]
    clone = project.parent / "clone"
    done = run(["git", "clone", "-q", str(project), str(clone)], project.parent)
    assert done.returncode == 0, done.stderr
    pulled = run(["dvc", "pull"], clone)
    assert pulled.returncode == 0, pulled.stderr[-2000:]
    ours = {f.relative_to(project): f.read_bytes() for f in (project / "results").rglob("*")
            if f.is_file()}
    theirs = {f.relative_to(clone): f.read_bytes() for f in (clone / "results").rglob("*")
              if f.is_file()}
    assert ours.keys() == theirs.keys() and len(ours) > 20
    assert all(ours[name] == theirs[name] for name in ours)
    assert run(["dvc", "metrics", "show", "--json"], clone).stdout == shown.stdout.replace(
        str(project), str(clone))
    status = run(["dvc", "repro"], clone)
    assert status.returncode == 0 and "Data and pipelines are up to date" in status.stdout

    # the README's experiment loop (Running with DVC) as written: `dvc repro` finds
    # everything up to date, a training param reruns training and the final step only
    done = run_recipe("experiments", project, timeout=900)
    assert done.returncode == 0, (done.stdout[-4000:], done.stderr[-4000:])
    out = done.stdout
    assert "Data and pipelines are up to date" in out
    for stage in ("demo_data", "intake", "split", "eda", "tensors", "baseline"):
        assert f"Stage '{stage}' didn't change, skipping" in out, stage
    for stage in ("train", "final"):
        assert f"Running stage '{stage}'" in out, stage
    assert "mase_mean" in out  # `dvc exp show`'s columns
    # `dvc metrics diff HEAD drop4`, the block's fourth output: only what changed is listed
    # (the CV headline; the test's only if the shipped model moved), a few lines, both load
    diff = out[out.rindex("Path"):]
    assert "HEAD" in diff and "drop4" in diff and "nn/headline.json" in diff, diff
    assert len(diff.splitlines()) < 20, diff
    assert "failed to load" not in out + done.stderr
    page = (project / "plots-diff" / "index.html").read_text()
    assert "vegaEmbed(" in page and "Loss per epoch" in page
    assert not re.search(r'<script[^>]+src="https?:', page)  # renders offline
    experiments = _experiments(project)
    drop4 = experiments["drop4"]
    assert drop4["params"]["train"]["dropout"] == 0.4
    test = drop4["metrics"]["results/co2/final/headline.json"]
    low, high = (float(v) for v in test["mase_interval"].split("]")[0][1:].split(", "))
    assert low <= test["mase"] <= high and test["shipped"].split()[0] in ("network", "baseline")
    assert "mase_mean" in drop4["metrics"]["results/co2/nn/headline.json"]

    # queued experiments run in temporary copies, two workers at once: each result belongs
    # to its params (two queued plus drop4 give three different networks)
    for dropout in ("0.1", "0.5"):
        queued = run(["dvc", "exp", "run", "--queue", "-n", f"q{dropout[-1]}", "-S",
                      f"train.dropout={dropout}"], project)
        assert queued.returncode == 0, queued.stderr
    started = run(["dvc", "queue", "start", "--jobs", "2"], project)  # side by side
    assert started.returncode == 0, started.stderr
    for _ in range(180):
        status = run(["dvc", "queue", "status"], project).stdout
        if "Running" not in status and "Queued" not in status:
            break
        time.sleep(5)
    assert "Failed" not in status, run(["dvc", "queue", "logs", "q1"], project).stdout[-3000:]
    experiments = _experiments(project)
    results = {}
    for name, dropout in (("q1", 0.1), ("q5", 0.5), ("drop4", 0.4)):
        assert experiments[name]["params"]["train"]["dropout"] == dropout
        results[name] = experiments[name]["metrics"]["results/co2/nn/headline.json"]
    assert len({json.dumps(r, sort_keys=True) for r in results.values()}) == 3  # none stale

    # back to the committed params: DVC restores train and final from its run cache
    back = run(["dvc", "exp", "run", "-n", "back", "-S", "train.dropout=0.3"], project)
    assert back.returncode == 0, back.stdout[-2000:]
    assert "Running stage 'train'" not in back.stdout
    for stage in ("train", "final"):
        assert f"Stage '{stage}' is cached - skipping run, checking out outputs" in back.stdout
    restored = json.loads((project / "results" / "co2" / "nn" / "summary.json").read_text())
    assert restored["headline"] == first_headline  # the first run's network, not retrained


def test_step_command_refuses_to_run_under_a_stale_lock(project):
    locks = project / ".snakemake" / "locks"
    locks.mkdir(parents=True)
    (locks / "0.input.lock").write_text("x")
    done = run(["dlworkflow", "step", "intake"], project)
    assert done.returncode == 1
    assert "snakemake --unlock" in done.stderr
