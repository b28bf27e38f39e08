"""params.yaml validation: defaults filled, every problem named by key with what is allowed."""

from __future__ import annotations

import copy

import pytest
import yaml

from dlworkflow.config import load_params, validate_params
from dlworkflow.errors import ConfigError
from tests.conftest import REPO


@pytest.fixture
def good(tmp_path):
    (tmp_path / "data" / "raw" / "imgs").mkdir(parents=True)
    return {"seed": 3, "datasets": {"imgs": {"modality": "image", "task": "classification",
                                             "root": "data/raw/imgs",
                                             "layout": {"kind": "folders"}}}}


def _problems(params, base_dir) -> str:
    with pytest.raises(ConfigError) as caught:
        validate_params(params, base_dir=base_dir)
    return str(caught.value)


def test_shipped_params_are_valid_and_defaults_are_filled():
    params = load_params(REPO / "params.yaml")
    assert set(params["datasets"]) == {"digits", "fsdd", "sms_spam", "co2"}
    assert {ds["modality"] for ds in params["datasets"].values()} == {
        "image", "audio", "text", "timeseries"}
    assert params["intake"]["on_bad_input"] == "quarantine"


def test_defaults_are_filled_without_touching_the_input(good, tmp_path):
    original = copy.deepcopy(good)
    params = validate_params(good, base_dir=tmp_path)
    assert good == original
    assert params["intake"]["image"]["max_pixels"] == 89478485
    assert params["demo"]["max_per_class"] is None
    assert params["datasets"]["imgs"]["layout"]["exclude"] == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda p: p.update(sed=1), "unknown key sed; allowed keys here: augment, baseline, datasets, demo"),
        (lambda p: p["datasets"]["imgs"].update(modalty="image"),
         "unknown key datasets.imgs.modalty"),
        (lambda p: p["datasets"]["imgs"]["layout"].update(regex="x"),
         "unknown key datasets.imgs.layout.regex; allowed keys here: encoding, exclude, kind, series"),
        (lambda p: p.update(seed="forty-two"), "seed: 'forty-two' has the wrong type; expected integer"),
        (lambda p: p["datasets"]["imgs"].update(modality="video"),
         "datasets.imgs.modality: 'video' is not allowed; choose one of: text, image, audio, "
         "timeseries"),
        (lambda p: p["datasets"]["imgs"].update(root="data/raw/nowhere"),
         "datasets.imgs.root: folder data/raw/nowhere does not exist"),
        (lambda p: p["datasets"]["imgs"].pop("task"), "missing required key datasets.imgs.task"),
        (lambda p: p.update(intake={"on_bad_input": "ignore"}),
         "intake.on_bad_input: 'ignore' is not allowed; choose one of: quarantine, fail"),
        (lambda p: p["datasets"]["imgs"].update(layout={"kind": "delimited", "file": "x"}),
         "datasets.imgs.layout.kind: 'delimited' is not available for modality 'image'"),
        (lambda p: p["datasets"]["imgs"].update(
            layout={"kind": "filename_regex", "regex": r"(?P<speaker>\w+)\.png"}),
         "datasets.imgs.layout.regex: needs a named group (?P<label>...)"),
        (lambda p: p["datasets"]["imgs"].update(
            layout={"kind": "filename_regex", "regex": "(unclosed"}),
         "datasets.imgs.layout.regex: not a valid regular expression"),
        (lambda p: p["datasets"]["imgs"].update(task="forecasting"),
         "datasets.imgs.task: 'forecasting' is not available for modality 'image'"),
        (lambda p: p["datasets"]["imgs"].update(side_table={"file": "../../etc/passwd", "key": "id"}),
         "datasets.imgs.side_table.file: ../../etc/passwd points outside the dataset root"),
        (lambda p: p["datasets"]["imgs"].update(demo="fsdd", root="data/raw/speech"),
         "datasets.imgs.root: a demo dataset is written to data/raw/imgs"),
        (lambda p: p["datasets"].update({"bad name!": p["datasets"]["imgs"]}), "bad name!"),
        (lambda p: p["datasets"]["imgs"]["layout"].update(encoding="latin-9x"),
         "datasets.imgs.layout.encoding: 'latin-9x' is not an encoding Python knows"),
        (lambda p: p["datasets"]["imgs"]["layout"].update(encoding="latin-1"),
         "datasets.imgs.layout.encoding: only text files are decoded; image files are read as "
         "they are"),
        (lambda p: p["datasets"]["imgs"].update(
            modality="audio", tensors={"audio": {"representation": "waveform",
                                                 "storage": "uint8"}}),
         "datasets.imgs.tensors.audio.storage: uint8 with representation: waveform"),
        (lambda p: p.update(tensors={"audio": {"representation": "mfcc", "storage": "uint8"}}),
         "tensors.audio.storage: uint8 with representation: mfcc quantises"),
        (lambda p: p.update(final={"model": "baseline", "baseline": False}),
         "final.model: baseline ships the exported baseline, but final.baseline: false"),
        (lambda p: p.update(final={"model": "baseline"}) or p["datasets"]["imgs"].update(
            final={"baseline": False}),
         "datasets.imgs.final.model: baseline ships the exported baseline, but final.baseline"),
    ],
    ids=["unknown-top", "unknown-dataset-key", "unknown-layout-key", "wrong-type",
         "unknown-modality", "missing-root", "missing-required", "bad-enum", "layout-vs-modality",
         "regex-without-label", "bad-regex", "task-vs-modality", "side-table-escape",
         "demo-root", "bad-dataset-name", "unknown-encoding", "encoding-of-images",
         "waveform-as-uint8", "mfcc-as-uint8", "baseline-not-exported",
         "baseline-not-exported-by-a-dataset"],
)
def test_bad_config_names_the_key_and_what_is_allowed(good, tmp_path, change, expected):
    change(good)
    assert expected in _problems(good, tmp_path)


def test_all_problems_are_reported_in_one_message(good, tmp_path):
    good["datasets"]["imgs"]["modality"] = "video"
    good["intake"] = {"on_bad_input": "ignore", "colour": "blue"}
    message = _problems(good, tmp_path)
    assert message.startswith("params.yaml is invalid (3 problem(s))")
    assert "datasets.imgs.modality" in message and "intake.on_bad_input" in message
    assert "intake.colour" in message


def test_manifest_needs_exactly_one_of_path_or_text_column(good, tmp_path):
    (tmp_path / "data" / "raw" / "imgs" / "m.csv").write_text("path,label\n")
    good["datasets"]["imgs"]["layout"] = {"kind": "manifest", "file": "m.csv"}
    assert "give exactly one of path_column or text_column" in _problems(good, tmp_path)
    good["datasets"]["imgs"]["layout"]["text_column"] = "text"
    assert "text_column: only for modality text" in _problems(good, tmp_path)


def test_layout_file_must_exist(good, tmp_path):
    good["datasets"]["imgs"]["layout"] = {"kind": "manifest", "file": "m.csv", "path_column": "p"}
    assert "datasets.imgs.layout.file: file data/raw/imgs/m.csv does not exist" in _problems(
        good, tmp_path)


def test_load_params_reports_yaml_errors(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("seed: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(path)
    with pytest.raises(ConfigError, match="file not found"):
        load_params(tmp_path / "absent.yaml")
    path.write_text(yaml.safe_dump({"seed": 1}))
    with pytest.raises(ConfigError, match="missing required key datasets"):
        load_params(path)


def test_no_key_is_a_yaml_boolean_word():
    """DVC rewrites params.yaml on `-S` and drops quotes: a key like `on` would become True."""
    from dlworkflow.config import load_schema

    booleans = {"y", "n", "yes", "no", "on", "off", "true", "false"}

    def keys(node):
        if isinstance(node, dict):
            for name, child in node.get("properties", {}).items():
                yield name
                yield from keys(child)
            for child in node.values():
                if isinstance(child, dict | list):
                    yield from keys(child)
        elif isinstance(node, list):
            for child in node:
                yield from keys(child)

    assert not booleans & {k.lower() for k in keys(load_schema())}


def test_a_dataset_overrides_section_keys_and_is_checked_like_the_section(good, tmp_path):
    from dlworkflow.config import dataset_section

    good["tensors"] = {"image": {"size": [48, 48]}}
    good["datasets"]["imgs"]["tensors"] = {"image": {"color": "grayscale"}, "shard_size": 64}
    params = validate_params(good, base_dir=tmp_path)
    merged = dataset_section(params, "imgs", "tensors")
    assert merged["image"] == {"size": [48, 48], "color": "grayscale", "resize": "pad"}
    assert merged["shard_size"] == 64 and params["tensors"]["shard_size"] == 512
    good["datasets"]["imgs"]["tensors"] = {"image": {"resize": "squash"}, "colour": 1}
    message = _problems(good, tmp_path)
    assert "datasets.imgs.tensors.image.resize: 'squash' is not allowed" in message
    assert "datasets.imgs.tensors.colour" in message


def test_a_demo_dataset_is_one_line_and_its_written_keys_win():
    from dlworkflow.config import expand_datasets

    written = {"seed": 1, "datasets": {
        "digits": {"demo": "sklearn_digits"},
        "big": {"demo": "sklearn_digits", "tensors": {"image": {"size": [32, 32]}}},
        "mine": {"demo": "fsdd", "layout": {"kind": "folders"}},
        "own": {"modality": "image", "task": "classification", "layout": {"kind": "folders"}}}}
    datasets = expand_datasets(written)["datasets"]
    assert datasets["digits"]["modality"] == "image" and datasets["digits"]["root"] == \
        "data/raw/digits"
    assert datasets["digits"]["tensors"]["image"] == {"size": [16, 16], "color": "grayscale"}
    # merged key by key: the size is written, the colour still comes from the demo entry
    assert datasets["big"]["tensors"]["image"] == {"size": [32, 32], "color": "grayscale"}
    # a written layout replaces the demo's (no regex left over from filename_regex)
    assert datasets["mine"]["layout"] == {"kind": "folders"}
    assert datasets["own"]["root"] == "data/raw/own" and "demo" not in datasets["own"]
    assert written["datasets"]["digits"] == {"demo": "sklearn_digits"}  # input untouched


def test_every_example_dataset_in_the_readme_passes_the_schema():
    import re

    from dlworkflow.config import expand_datasets, validate_schema

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```yaml\n(datasets:\n.*?)```", readme, re.S)
    datasets = yaml.safe_load(block.group(1))["datasets"]
    assert {"pets", "load", "hourly", "pickup"} <= set(datasets)
    _, problems = validate_schema(expand_datasets({"seed": 0, "datasets": datasets}))
    assert problems == []


def test_every_documented_exp_run_sets_a_key_dvc_accepts():
    """DVC's `dvc exp run -S key=value` refuses a key the shipped params.yaml lacks ("Key is
    not in struct"); `-S ++key=value` adds it. Every such command the project prints or
    documents (README, params.yaml's header, docs, the runner's messages) either changes a
    key params.yaml writes or uses `++`, and names a key the schema knows."""
    import re

    shipped = yaml.safe_load((REPO / "params.yaml").read_text())
    defaults = load_params(REPO / "params.yaml")  # every key, schema defaults filled in

    def has(tree, key: str) -> bool:
        for part in key.split("."):
            if not isinstance(tree, dict) or part not in tree:
                return False
            tree = tree[part]
        return True

    sources = [REPO / "README.md", REPO / "params.yaml", *sorted((REPO / "docs").glob("*.md")),
               *sorted((REPO / "src" / "dlworkflow").glob("*.py"))]
    found, refused = 0, []
    for path in sources:
        text = path.read_text(encoding="utf-8")
        for match in re.finditer(r"dvc exp run\b[^`\n]*(?:\n[^`\n]*)?", text):
            for plus, key in re.findall(r"-S\s+(\+\+)?([A-Za-z_][\w.]*)=", match.group(0)):
                if key in ("key", "param"):  # the docs' placeholder: -S ++key=value
                    continue
                found += 1
                if not has(defaults, key):
                    refused.append(f"{path.name}: {key} is not a params key")
                elif not plus and not has(shipped, key):
                    refused.append(f"{path.name}: -S {key}=... (params.yaml lacks it: ++)")
    assert found >= 8, found  # the README's experiments, params.yaml's header, ...
    assert refused == []
