"""The README's recipes, run as written: each block marked `<!-- recipe: NAME -->` is read
from README.md and its commands run in order in a fresh project, each must succeed."""

from __future__ import annotations

import csv
import io
import json
import re
import shlex
import shutil

import pytest
import yaml

from dlworkflow.runner import QUICK_LOOK
from tests.conftest import PER_CLASS, REPO, SHARED_DATA, quick_look_start
from tests.workflow.conftest import (
    README,
    make_project,
    recipe,
    run,
    run_recipe,
    shipped_params,
    write_params,
)

pytestmark = pytest.mark.workflow

def readme_dataset(name: str) -> dict:
    """The dataset entry `name` from the README's example `datasets:` block."""
    block = re.search(r"```yaml\n(datasets:\n.*?)```", README, re.S)
    assert block, "README has no example datasets block"
    return yaml.safe_load(block.group(1))["datasets"][name]


@pytest.mark.seconds(50)
def test_own_dataset_recipe_runs_as_written(tmp_path):
    project = make_project(tmp_path)
    shutil.copy(REPO / ".gitignore", project / ".gitignore")
    for command in (["git", "init", "-q"], ["dvc", "init", "-q"],
                    ["dvc", "config", "core.analytics", "false"]):
        assert run(command, project).returncode == 0
    # the README's `reviews` entry, with real texts: SMS lines as reviews, spam as 1 star
    entry = readme_dataset("reviews")
    root = project / entry["root"]
    root.mkdir(parents=True)
    lines = (SHARED_DATA / "sms_spam" / "SMSSpamCollection").read_text(
        encoding="utf-8").splitlines()[:160]
    layout = entry["layout"]
    with (root / layout["file"]).open("w", encoding="utf-8") as out:
        for number, line in enumerate(lines):
            label, text = line.split("\t", 1)
            out.write(json.dumps({layout["id_column"]: f"r{number:04d}", layout["text_column"]: text,
                                  layout["label_column"]: 1.0 if label == "spam" else 4.0 + number % 2,
                                  layout["group_column"]: f"product-{number % 20}",
                                  "language": "en"}) + "\n")
    params = shipped_params()
    params["datasets"] = {"reviews": entry}  # the demo sets are covered elsewhere
    write_params(project, params)
    for command in recipe("own-dataset"):
        done = run(shlex.split(command), project, timeout=900)
        assert done.returncode == 0, (command, done.stdout[-3000:], done.stderr[-3000:])
        if command.startswith("dlworkflow predict"):
            prediction = done.stdout
    assert (project / "data" / "raw" / "reviews.dvc").is_file()  # to commit with git
    counts = json.loads((project / "results" / "reviews" / "intake" / "counts.json").read_text())
    assert counts["found"] == counts["accepted"] == len(lines)  # inline texts: none dropped
    assert (project / "results" / "reviews" / "final" / "report.html").is_file()
    rows = [row for row in prediction.splitlines() if row.strip()]
    assert len(rows) == 2, prediction  # a header and the one review


def test_predict_recipe_runs_on_the_demo_for_every_modality(demo_project):
    import io

    import pandas as pd

    commands = recipe("predict")
    modalities = set()
    for command in commands:
        done = run(["bash", "-c", command], demo_project)  # the shell expands the globs
        assert done.returncode == 0, (command, done.stderr[-3000:])
        table = pd.read_csv(io.StringIO(done.stdout))
        model_dir = demo_project / command.split()[2]
        card = json.loads((model_dir / "model.json").read_text())
        modalities.add(card["modality"])
        assert len(table) >= 1 and table.notna().all().all(), command
        if card["task"] == "forecasting":  # the next horizon of the series
            assert [c for c in table.columns if c.startswith("step_")][-1] == \
                f"step_{table.shape[1] - 1}"
        else:
            assert set(table["prediction"].astype(str)) <= set(card["classes"]), command
    assert modalities == {"image", "audio", "text", "timeseries"}


def test_quick_look_then_an_experiment_as_the_readme_says(demo_project):
    """The README's first block after `make demo`: the quick look, a commit, one experiment,
    the comparison. `make quick` is the shared demo run (demo_project, a fresh clone); the
    block goes on, as written, on a copy of what it left. A train.* experiment reruns the
    train and final stages only, `dvc exp show` stays under 60 columns with all four
    datasets, `dvc metrics diff` loads both. (The README's experiment loop, Running with
    DVC, runs in test_dvc_pipeline.py, after `dlworkflow run` as the README has it.)"""
    project, made = quick_look_start(demo_project)
    assert "Quick look, a smoke test" in made and "Recorded in dvc.lock" in made
    for name in ("digits", "fsdd", "sms_spam", "co2"):
        assert f"  {name}: ships the" in made, name
    written = yaml.safe_load((project / "params.yaml").read_text())
    # the quick look keeps what is already quicker (the tests' 10 items a class, 2 epochs)
    assert written["demo"]["max_per_class"] == PER_CLASS and written["train"]["epochs"] == 2
    done = run_recipe("quick-look", project, skip=1)  # after `make quick`
    assert done.returncode == 0, (done.stdout[-4000:], done.stderr[-4000:])
    out = done.stdout
    for stage in ("code", "demo_data", "intake", "split", "eda", "tensors", "baseline"):
        assert f"Stage '{stage}' didn't change, skipping" in out, stage
    for stage in ("train", "final"):
        assert f"Running stage '{stage}'" in out, stage
    assert "failed to load" not in out + done.stderr
    # `dvc metrics diff HEAD drop45`: both sides load; the CV headlines the dropout moved
    diff = out[out.rindex("Path"):]  # the diff table, the block's last output
    assert "HEAD" in diff and "drop45" in diff and "/nn/headline.json" in diff, diff
    shown = run(["dvc", "exp", "show", "--csv"], project)
    header = next(csv.reader(io.StringIO(shown.stdout)))
    # the table merges rev, typ and parent into Experiment; the params this test wrote to
    # keep itself fast (tiny networks, few folds) are not the README's, so not counted
    readme_params = set(_leaf_keys(yaml.safe_load((REPO / "params.yaml").read_text())))
    readme_params |= set(QUICK_LOOK)
    test_only = [name for name in header if name in _leaf_keys(written)
                 and name not in readme_params]
    columns = [name for name in header
               if name not in ("rev", "typ", "parent") and name not in test_only]
    assert len(columns) <= 60, (len(columns), columns)
    assert sum(name.endswith("/nn/headline.json:accuracy_mean") for name in columns) == 3
    assert "mase_mean" in columns and "train.dropout" in columns


def _leaf_keys(value, prefix=""):
    """Dotted keys of a params mapping's leaves, as `dvc exp show` names its columns."""
    if isinstance(value, dict) and value:
        return [key for name, child in value.items()
                for key in _leaf_keys(child, f"{prefix}{name}.")]
    return [prefix[:-1]] if prefix and not isinstance(value, dict) else []


def test_a_key_params_yaml_lacks_is_written_by_the_readmes_exp_run(tmp_path):
    """The README's params reference says how to set a key that params.yaml does not write:
    that `dvc exp run -S ...` (read from the README) adds the key to the shipped params.yaml
    and reruns the stage that reads its section, where the plain `-S key=value` form is
    refused by DVC for a key params.yaml lacks."""
    found = re.search(r"\(`(dvc exp run -S \S+)`\s+writes it for you", README)
    assert found, "README: the params reference's exp run command is gone"
    command = shlex.split(found.group(1))
    key, value = command[-1].lstrip("+").split("=")
    section, *path = key.split(".")
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    shipped = yaml.safe_load((tmp_path / "params.yaml").read_text())
    assert path[-1] not in shipped[section]  # a key the shipped params.yaml lacks
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"echo": {
        "cmd": "python -c \"import shutil; shutil.copy('params.yaml', 'seen.yaml')\"",
        "params": [section], "outs": ["seen.yaml"]}}}))
    for step in (["git", "init", "-q"], ["dvc", "init", "-q"], ["git", "add", "-A"],
                 ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "p"]):
        assert run(step, tmp_path).returncode == 0, step
    plain = run(["dvc", "exp", "run", "-S", f"{key}={value}"], tmp_path, timeout=300)
    assert plain.returncode != 0 and "not in struct" in plain.stderr + plain.stdout
    done = run(command, tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    seen = yaml.safe_load((tmp_path / "seen.yaml").read_text())
    assert seen[section][path[-1]] == int(value)
    assert {k: v for k, v in seen[section].items() if k != path[-1]} == shipped[section]
