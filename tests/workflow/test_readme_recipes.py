"""The README's recipes, run as written: each block marked `<!-- recipe: NAME -->` is read
from README.md and its commands run in order in a fresh project, each must succeed."""

from __future__ import annotations

import json
import re
import shlex
import shutil

import pytest
import yaml

from tests.conftest import REPO, SHARED_DATA
from tests.workflow.conftest import make_project, run, shipped_params, write_params

pytestmark = pytest.mark.workflow

README = (REPO / "README.md").read_text(encoding="utf-8")


def recipe(name: str) -> list[str]:
    """The commands of the README block marked `<!-- recipe: name ... -->`: the indented
    lines that follow it, up to the first line that is not indented."""
    marker = re.search(rf"<!-- recipe: {re.escape(name)}\b.*?-->\n", README)
    assert marker, f"README has no recipe {name!r}"
    commands = []
    for line in README[marker.end():].splitlines():
        if not line.strip():
            if commands:
                break
            continue
        if not line.startswith("    "):
            break
        commands.append(line.strip())
    assert commands, f"recipe {name!r} is empty"
    return commands


def readme_dataset(name: str) -> dict:
    """The dataset entry `name` from the README's example `datasets:` block."""
    block = re.search(r"```yaml\n(datasets:\n.*?)```", README, re.S)
    assert block, "README has no example datasets block"
    return yaml.safe_load(block.group(1))["datasets"][name]


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
