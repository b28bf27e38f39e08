"""dvc.yaml is generated from the step table and must not drift from the rules."""

from __future__ import annotations

import re
import subprocess
import sys

import yaml

from dlworkflow.config import load_params, read_written
from dlworkflow.dvcgen import render_dvc_yaml
from dlworkflow.workflow import STEPS, all_targets, step_code, step_datasets, step_outputs
from tests.conftest import REPO


def test_committed_dvc_yaml_is_the_generated_one():
    expected = render_dvc_yaml(load_params(REPO / "params.yaml"), read_written(REPO / "params.yaml"))
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
    assert list(stages) == ["code", *(step.name for step in active)]
    assert "features" not in stages  # no extractor in the shipped params
    assert "intake" in stages["intake"]["params"] and "demo" not in stages["intake"]["params"]
    assert "intake" not in stages["demo_data"]["params"]
    for step in active:
        stage = stages[step.name]
        assert stage["cmd"] == f"dlworkflow step {step.name}"
        # its code through its digest, which names every file (rules, scripts, modules)
        assert stage["deps"][0] == f"results/.steps/code-{step.name}.json"
        assert stage["deps"][0] in stages["code"]["outs"]
        named = set(step_code(step))
        assert all(code in named and (REPO / code).exists() for code in step.code)


def test_rule_all_asks_for_every_stage_output():
    params = load_params(REPO / "params.yaml")
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    declared = {out for stage in stages.values() for out in stage["outs"]
                if not out.startswith("results/.steps/")}
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


def test_params_reference_is_generated_from_the_schema():
    from dlworkflow.config import load_schema
    from dlworkflow.paramsdoc import render_params_doc

    text = render_params_doc()
    assert (REPO / "docs" / "PARAMS.md").read_text() == text, "run `dlworkflow params-doc`"
    # every leaf key of every section has a row with its default
    resolved = load_params(REPO / "params.yaml")
    schema = load_schema()
    for section in schema["properties"]:
        if section == "datasets":
            continue
        for key in _leaves(resolved[section], section):
            assert f"| `{key}` |" in text or any(
                f"| `{parent}` |" in text for parent in _parents(key)), key
    assert "| `train.dropout` | `0.3` |" in text
    assert "| `tensors.audio.n_mels` | `64` | integer (≥ 8) | Mel bands" in text


def _leaves(value, prefix):
    if isinstance(value, dict) and value:
        for name, child in value.items():
            yield from _leaves(child, f"{prefix}.{name}")
    else:
        yield prefix


def _parents(key):
    parts = key.split(".")
    return [".".join(parts[:n]) for n in range(1, len(parts))]


def test_dvc_tracks_written_keys_and_falls_back_to_the_nearest_written_parent():
    from dlworkflow.dvcgen import tracked_key
    from dlworkflow.errors import ConfigError

    written = {"tensors": {}, "intake": {"sample": None}, "train": {"dropout": 0.3}}
    assert tracked_key("intake.sample", written) == "intake.sample"
    assert tracked_key("tensors.text.max_characters", written) == "tensors"
    assert tracked_key("train", written) == "train"
    try:
        tracked_key("final.model", written)
    except ConfigError as exc:
        assert "final:" in str(exc)
    else:
        raise AssertionError("a missing section must be an error")


def test_files_the_params_name_for_the_networks_are_deps_of_the_steps_that_read_them(tmp_path,
                                                                                     monkeypatch):
    """Word vectors and a sentence encoder's folder named in a text dataset's train settings
    are deps of the train and final stages (the folder as one, for DVC's hash; its files for
    Snakemake, which sees a folder change only when an entry comes or goes); an image
    dataset does not read them; a keyword (download, imagenet) and a missing path are none."""
    from dlworkflow.workflow import named_files

    monkeypatch.chdir(tmp_path)
    (tmp_path / "vectors.txt").write_text("spam " + " ".join(["0.1"] * 64) + "\n")
    (tmp_path / "encoder").mkdir()
    for name in ("config.json", "vocab.txt"):
        (tmp_path / "encoder" / name).write_text("{}")
    written = yaml.safe_load((REPO / "params.yaml").read_text())
    written["datasets"]["sms_spam"]["train"] = {
        "text": {"pretrained_vectors": "vectors.txt"}, "transfer": {"text_weights": "encoder"}}
    written["train"]["transfer"] = {"weights": "missing.weights.h5"}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(written))
    params = load_params(tmp_path / "params.yaml")
    stages = yaml.safe_load(render_dvc_yaml(params, written))["stages"]
    for name, stage in stages.items():
        reads = name in ("train", "final")
        assert ("vectors.txt" in stage["deps"]) == reads and ("encoder" in stage["deps"]) == reads
        assert "missing.weights.h5" not in stage["deps"]
    assert named_files(params, "sms_spam", ("train",), folders=False) == [
        "encoder/config.json", "encoder/vocab.txt", "vectors.txt"]
    assert named_files(params, "digits", ("train", "features")) == []
    params["datasets"]["sms_spam"]["train"]["transfer"]["text_weights"] = "download"
    assert named_files(params, "sms_spam", ("train",)) == ["vectors.txt"]


def test_an_extractor_embeds_pictures_not_texts_series_or_waveforms():
    """`features.extractor` embeds images and spectrograms; an audio set kept as waveforms,
    (samples, 1), is not a picture, and its baselines and networks read its tensors (as a
    text set's do) instead of the features step failing on its shards."""
    from dlworkflow.workflow import extracts_features

    params = load_params(REPO / "params.yaml")
    params["features"]["extractor"] = "mobilenet_v3_small"
    embedded = lambda: {name for name in params["datasets"]  # noqa: E731
                        if extracts_features(name, params)}
    assert embedded() == {"digits", "fsdd"}
    params["datasets"]["fsdd"]["tensors"] = {"audio": {"representation": "waveform"}}
    assert embedded() == {"digits"}
    params["datasets"]["fsdd"]["tensors"] = {"audio": {"representation": "mfcc"}}
    assert embedded() == {"digits", "fsdd"}
    del params["datasets"]["fsdd"]["tensors"]
    params["tensors"]["audio"]["representation"] = "waveform"  # for every audio set
    assert embedded() == {"digits"}
    params["features"]["extractor"] = None
    assert embedded() == set()


def test_auto_embeds_the_image_sets_image_transfer_may_train(tmp_path):
    """`features.extractor: auto` (the default) runs the features step for image sets only,
    where image_transfer may train them: named, or `auto` with images of 64 px or more and
    weights not `none`. The demo's 16-px digits train from scratch: no features stage."""
    from dlworkflow.workflow import extracts_features, named_files

    params = load_params(REPO / "params.yaml")
    assert params["features"]["extractor"] == "auto"
    embedded = lambda: {name for name in params["datasets"]  # noqa: E731
                        if extracts_features(name, params)}
    assert embedded() == set()  # 16-px digits, spectrograms, texts, series
    params["datasets"]["digits"]["tensors"] = {"image": {"size": [64, 64]}}
    assert embedded() == {"digits"}  # audio is not embedded under auto
    params["datasets"]["digits"]["train"] = {"transfer": {"weights": "none"}}
    assert embedded() == set()  # auto trains from scratch without weights
    params["datasets"]["digits"]["train"] = {"architecture": "image_wide_cnn"}
    assert embedded() == set()
    params["datasets"]["digits"]["tensors"] = {"image": {"size": [32, 32]}}
    params["datasets"]["digits"]["train"] = {"architecture": "image_transfer"}
    assert embedded() == {"digits"}  # named: whatever the size
    params["datasets"]["digits"]["train"] = {}
    params["datasets"]["digits"]["task"] = "regression"  # image_transfer regresses too
    params["datasets"]["digits"]["tensors"] = {"image": {"size": [96, 64]}}
    assert embedded() == {"digits"}
    # the weights the step embeds with are train.transfer's: a file features.weights names
    # is no input of it (it is a named extractor's)
    weights, unused = tmp_path / "backbone.weights.h5", tmp_path / "unused.weights.h5"
    weights.write_bytes(b"x")
    unused.write_bytes(b"x")
    params["datasets"]["digits"]["train"] = {"transfer": {"weights": str(weights)}}
    params["features"]["weights"] = str(unused)
    assert named_files(params, "digits", ("features", "train")) == [str(weights)]
    params["datasets"]["digits"]["train"] = {}
    # DVC's features stage reruns on the keys that decide the backbone, not on every train key
    stages = yaml.safe_load(render_dvc_yaml(params, read_written(REPO / "params.yaml")))["stages"]
    assert stages["features"]["params"] == ["features", "train.architecture", "train.transfer",
                                            "datasets.digits"]
    assert "results/.steps/features.json" in stages["baseline"]["deps"]
