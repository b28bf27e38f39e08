"""dvc.yaml is generated from the step table and must not drift from the rules."""

from __future__ import annotations

import re
import subprocess
import sys

import yaml

from dlworkflow.config import load_params
from dlworkflow.dvcgen import render_dvc_yaml
from dlworkflow.workflow import STEPS, all_targets, step_datasets, step_outputs
from tests.conftest import REPO


def test_committed_dvc_yaml_is_the_generated_one():
    expected = render_dvc_yaml(load_params(REPO / "params.yaml"))
    assert (REPO / "dvc.yaml").read_text() == expected, "run `dlworkflow dvc-yaml`"


def test_every_rule_belongs_to_exactly_one_step():
    listed = subprocess.run([sys.executable, "-m", "snakemake", "--list-rules"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout
    rules = {line.strip() for line in listed.splitlines()
             if re.fullmatch(r"\s*[a-z_]+\s*", line)} - {"all"}
    owned = [rule for step in STEPS for rule in step.rules]
    assert sorted(owned) == sorted(set(owned)), "a rule is listed in two steps"
    assert rules == set(owned)


def test_each_stage_reads_only_its_params_and_lists_its_code():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    params = load_params(REPO / "params.yaml")
    active = [step for step in STEPS if step_datasets(step, params)]
    assert list(stages) == [step.name for step in active]
    assert "features" not in stages  # no extractor in the shipped params
    assert "intake" in stages["intake"]["params"] and "demo" not in stages["intake"]["params"]
    assert "intake" not in stages["demo_data"]["params"]
    for step in active:
        stage = stages[step.name]
        assert stage["cmd"] == f"dlworkflow step {step.name}"
        for code in step.code:
            assert code in stage["deps"] and (REPO / code).exists()


def test_rule_all_asks_for_every_stage_output():
    params = load_params(REPO / "params.yaml")
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    declared = {out for stage in stages.values() for out in stage["outs"]}
    declared |= {next(iter(m)) for stage in stages.values() for m in stage.get("metrics", [])}
    top_level = set(yaml.safe_load((REPO / "dvc.yaml").read_text()).get("metrics", []))
    assert all(any(m.startswith(out + "/") for out in declared) for m in top_level)
    declared |= top_level
    assert declared == {o for step in STEPS for o in step_outputs(step, params, for_dvc=True)}
    # every Snakemake target lies inside what DVC tracks
    for target in all_targets(params):
        assert any(target == out or target.startswith(out + "/") for out in declared), target


def test_dvc_plots_pages_carry_their_charting_libraries():
    import configparser

    config = configparser.ConfigParser()
    config.read(REPO / ".dvc" / "config")
    template = REPO / ".dvc" / config["plots"]["html_template"]
    html = template.read_text(encoding="utf-8")
    assert html.count("{plot_divs}") == 1  # where DVC puts the charts
    assert "{scripts}" not in html  # so DVC adds no CDN script tags
    assert not re.search(r'<script[^>]+src=', html)
    for library in ("vega", "vegaLite", "vegaEmbed"):  # what the inline code defines
        assert f".{library}=" in html or f"{library}=" in html, library
