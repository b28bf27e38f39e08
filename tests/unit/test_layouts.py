"""Source layouts on real data: folders, file-name regex, manifests, delimited, long/wide CSV."""

from __future__ import annotations

import io
import json
import os
import shutil

import pandas as pd
import pytest

from dlworkflow.config import validate_params
from dlworkflow.errors import ConfigError
from dlworkflow.intake import run_intake
from dlworkflow.layouts import glob_to_regex, walk_files
from tests.conftest import PER_CLASS


def _intake(base, name, dataset, intake=None):
    params = validate_params({"seed": 0, "datasets": {name: dataset}, "intake": intake or {}},
                             base_dir=base)
    return run_intake(name, params["datasets"][name], params["intake"], base_dir=base,
                      progress=False)


def test_glob_semantics():
    assert glob_to_regex("recordings/*.wav").match("recordings/1_a_2.wav")
    assert not glob_to_regex("recordings/*.wav").match("recordings/sub/1_a_2.wav")
    assert glob_to_regex("**/*.wav").match("a/b/c.wav")
    assert glob_to_regex("**/*.wav").match("c.wav")
    assert not glob_to_regex("*.wav").match("c.wavx")


def test_folders_layout_on_real_digits(copy_demo, tmp_path):
    copy_demo("digits")
    result = _intake(tmp_path, "digits", {"modality": "image", "task": "classification",
                                          "root": "data/raw/digits", "layout": {"kind": "folders"}})
    inventory = result.inventory
    assert len(inventory) == 10 * PER_CLASS and result.counts["rejected"] == 0
    assert sorted(inventory["label"].unique()) == [str(d) for d in range(10)]
    assert (inventory["width"] == 8).all() and (inventory["mode"] == "L").all()
    assert inventory["path"].str.startswith("data/raw/digits/").all()
    assert inventory["id"].is_monotonic_increasing


def test_filename_regex_layout_with_side_table_on_real_fsdd(copy_demo, tmp_path):
    root = copy_demo("fsdd")
    (root / "recordings" / "README.wav.txt").write_text("not a recording")
    (root / "recordings" / "bad-name.wav").write_bytes(
        next((root / "recordings").glob("*.wav")).read_bytes())
    result = _intake(tmp_path, "fsdd", {
        "modality": "audio", "task": "classification", "root": "data/raw/fsdd",
        "layout": {"kind": "filename_regex", "glob": "recordings/*.wav",
                   "regex": r"(?P<label>\d)_(?P<group>[a-z]+)_(?P<take>\d+)\.wav"},
        "side_table": {"file": "speakers.csv", "key": "speaker", "join_on": "group"}})
    inventory = result.inventory
    assert len(inventory) == 10 * PER_CLASS
    # the glob defines the candidates: README.wav.txt is not one, bad-name.wav is and fails
    assert list(result.rejected["code"]) == ["name_mismatch"]
    first = inventory.iloc[0]
    name = first["id"].split("/")[-1]
    digit, speaker, take = name[:-4].split("_")
    assert (first["label"], first["group"], first["side_take"]) == (digit, speaker, take)
    speakers = pd.read_csv(root / "speakers.csv").set_index("speaker")
    for row in inventory.itertuples():
        assert row.side_gender == speakers.loc[row.group, "gender"]
        assert row.side_accent == speakers.loc[row.group, "accent"]
    assert (inventory["sample_rate"] == 8000).all()
    assert inventory["duration"].between(0.1, 2.5).all()


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl"])
def test_manifest_with_inline_text(tmp_path, sms_lines, fmt):
    rows = [dict(zip(["label", "text"], line.decode().split("\t", 1), strict=True))
            for line in sms_lines[:12]]
    for number, row in enumerate(rows):
        row.update(msg_id=f"m{number}", sender=f"s{number % 3}")
    root = tmp_path / "data" / "raw" / "sms"
    root.mkdir(parents=True)
    frame = pd.DataFrame(rows)
    if fmt == "jsonl":
        (root / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    else:
        frame.to_csv(root / f"m.{fmt}", sep="\t" if fmt == "tsv" else ",", index=False)
    result = _intake(tmp_path, "sms", {
        "modality": "text", "task": "classification", "root": "data/raw/sms",
        "layout": {"kind": "manifest", "file": f"m.{fmt}", "text_column": "text",
                   "id_column": "msg_id", "group_column": "sender"}})
    inventory = result.inventory.set_index("id")
    assert len(inventory) == 12
    assert inventory.loc["m0", "label"] == rows[0]["label"]
    assert inventory.loc["m4", "group"] == "s1"
    assert inventory.loc["m0", "characters"] == len(rows[0]["text"])


def test_manifest_missing_column_is_a_config_error_naming_the_key(tmp_path):
    root = tmp_path / "data" / "raw" / "docs"
    root.mkdir(parents=True)
    (root / "m.csv").write_text("file,label\na.txt,x\n")
    with pytest.raises(ConfigError, match=r"layout.path_column: column 'path' not in m.csv"):
        _intake(tmp_path, "docs", {"modality": "text", "task": "classification",
                                   "root": "data/raw/docs",
                                   "layout": {"kind": "manifest", "file": "m.csv",
                                              "path_column": "path"}})


def test_delimited_with_header_and_extra_fields_keeps_delimiters_in_text(tmp_path):
    root = tmp_path / "data" / "raw" / "t"
    root.mkdir(parents=True)
    (root / "d.csv").write_bytes(b"\xef\xbb\xbfid;label;channel;text\r\n"
                                 b"a1;pos;web;great; would buy again\r\nb2;neg;app;meh\r\n")
    result = _intake(tmp_path, "t", {
        "modality": "text", "task": "classification", "root": "data/raw/t",
        "layout": {"kind": "delimited", "file": "d.csv", "delimiter": ";", "header": True,
                   "fields": ["id", "label", "channel", "text"]}})
    inventory = result.inventory.set_index("id")
    assert list(inventory.index) == ["a1", "b2"]
    assert inventory.loc["a1", "words"] == 4  # "great; would buy again"
    assert inventory.loc["b2", "side_channel"] == "app"
    assert inventory.loc["a1", "path"] == "data/raw/t/d.csv:2"


def test_regression_labels_must_be_numbers(tmp_path):
    root = tmp_path / "data" / "raw" / "r"
    root.mkdir(parents=True)
    (root / "r.tsv").write_text("3.5\tlovely\nabc\tnot a score\ninf\tinfinite\n")
    result = _intake(tmp_path, "r", {
        "modality": "text", "task": "regression", "root": "data/raw/r",
        "layout": {"kind": "delimited", "file": "r.tsv"}})
    assert list(result.inventory["label"]) == [3.5]
    assert sorted(result.rejected["code"]) == ["bad_label", "bad_label"]


def test_long_csv_single_series_is_the_real_co2(copy_demo, tmp_path, co2_csv):
    copy_demo("co2")
    result = _intake(tmp_path, "co2", {
        "modality": "timeseries", "task": "forecasting", "root": "data/raw/co2",
        "layout": {"kind": "long_csv", "file": "co2.csv", "timestamp": "date", "target": "co2"}})
    row = result.inventory.iloc[0]
    source = pd.read_csv(io.BytesIO(co2_csv))
    assert (row["length"], row["missing"]) == (len(source), int(source["co2"].isna().sum()))
    assert row["frequency"] == "W-SAT"
    assert row["start"].startswith("1958-03-29") and row["end"].startswith("2001-12-29")
    assert row["min"] == source["co2"].min() and row["max"] == source["co2"].max()


def test_long_csv_counts_missing_time_steps_and_sorts(tmp_path, co2_csv):
    source = pd.read_csv(io.BytesIO(co2_csv)).dropna().head(40)
    gappy = source.drop(index=source.index[[5, 6, 20]]).iloc[::-1]  # 3 weeks gone, reversed
    root = tmp_path / "data" / "raw" / "g"
    root.mkdir(parents=True)
    gappy.to_csv(root / "g.csv", index=False)
    result = _intake(tmp_path, "g", {
        "modality": "timeseries", "task": "forecasting", "root": "data/raw/g",
        "layout": {"kind": "long_csv", "file": "g.csv", "timestamp": "date", "target": "co2"}})
    row = result.inventory.iloc[0]
    dates = pd.to_datetime(gappy["date"])
    weeks = len(pd.date_range(dates.min(), dates.max(), freq="W-SAT"))
    assert (row["length"], row["frequency"]) == (37, "W-SAT")
    assert row["gaps"] == weeks - 37 >= 3  # the dropped weeks plus the series' own NaN weeks
    assert "sorted by timestamp" in row["notes"]


def test_long_csv_label_must_be_constant_within_a_series(tmp_path):
    root = tmp_path / "data" / "raw" / "m"
    root.mkdir(parents=True)
    pd.DataFrame({"sid": ["a"] * 4 + ["b"] * 4, "t": list(range(4)) * 2,
                  "v": [1, 2, 3, 4, 5, 6, 7, 9], "cls": ["x"] * 4 + ["y", "y", "z", "y"]}).to_csv(
        root / "m.csv", index=False)
    result = _intake(tmp_path, "m", {
        "modality": "timeseries", "task": "classification", "root": "data/raw/m",
        "layout": {"kind": "long_csv", "file": "m.csv", "timestamp": "t", "target": "v",
                   "series_id": "sid", "label_column": "cls"}})
    assert list(result.inventory["id"]) == ["a"]
    assert result.rejected.loc[0, "code"] == "inconsistent_series"


def test_wide_csv_one_series_per_row(tmp_path, co2_csv):
    values = pd.read_csv(io.BytesIO(co2_csv))["co2"].dropna().to_numpy()
    rows = [{"sid": f"w{i}", "label": "rising" if values[i * 10 + 9] > values[i * 10] else "falling",
             **{f"t{j}": values[i * 10 + j] for j in range(10)}} for i in range(6)]
    rows[2]["t4"] = ""  # a missing value inside a series is counted, not fatal
    root = tmp_path / "data" / "raw" / "w"
    root.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(root / "w.csv", index=False)
    result = _intake(tmp_path, "w", {
        "modality": "timeseries", "task": "classification", "root": "data/raw/w",
        "layout": {"kind": "wide_csv", "file": "w.csv", "id_column": "sid"}})
    inventory = result.inventory.set_index("id")
    assert len(inventory) == 6 and (inventory["length"] == 10).all()
    assert inventory.loc["w2", "missing"] == 1
    assert inventory.loc["w0", "label"] == rows[0]["label"]


def test_walk_reads_each_file_once_where_it_is_and_names_every_link(tmp_path):
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    (root / "a" / "f.txt").write_text("x")
    os.symlink(root / "a", root / "alias")         # a folder link inside: not followed
    os.symlink(root, root / "a" / "loop")          # a cycle: not followed either
    os.symlink(tmp_path, root / "escape")          # outside: refused
    os.symlink(root / "nothing", root / "broken")  # broken: refused
    os.symlink(root / "a" / "f.txt", root / "a" / "g.txt")  # a second name for an item
    os.link(root / "a" / "f.txt", root / "a" / "h.txt")     # a hard link
    rows = {rel: problem for rel, _, problem in walk_files(root)}
    assert rows["a/f.txt"] is None and list(rows) == sorted(rows)
    assert "outside the dataset folder" in rows["escape"]
    assert rows["broken"] == "broken symbolic link"
    assert rows["alias"].startswith("link to the folder 'a' inside the dataset: not followed")
    assert rows["a/loop"].startswith("link to the folder '.' inside the dataset")
    assert rows["a/g.txt"].startswith("link to 'a/f.txt', which is an item itself")
    assert rows["a/h.txt"].startswith("hard link to 'a/f.txt'")
    assert sum(1 for rel, problem in rows.items() if rel.endswith(".txt") and not problem) == 1


def test_a_folder_link_never_relabels_a_class(tmp_path):
    """cat/loop -> ../dog: the dog texts stay dog, the link is rejected with its reason, and
    the counts still reconcile."""
    root = tmp_path / "pets"
    for label in ("cat", "dog"):
        (root / label).mkdir(parents=True)
        for k in range(3):
            (root / label / f"{k}.txt").write_text(f"a {label} text number {k}")
    os.symlink("../dog", root / "cat" / "loop")
    result = _intake(tmp_path, "pets", {"modality": "text", "task": "classification",
                                        "root": "pets", "layout": {"kind": "folders"}})
    assert sorted(result.inventory["label"]) == ["cat"] * 3 + ["dog"] * 3
    rejected = result.rejected.set_index("path")
    assert list(rejected.index) == ["pets/cat/loop"]
    assert rejected.loc["pets/cat/loop", "code"] == "duplicate_link"
    assert "not followed" in rejected.loc["pets/cat/loop", "reason"]
    assert result.counts["found"] == result.counts["accepted"] + result.counts["rejected"] == 7


def test_later_steps_read_raw_files_only_as_intake_recorded_them(tmp_path):
    from dlworkflow.context import RunContext
    from dlworkflow.errors import RawDataChanged

    root = tmp_path / "pets"
    for label in ("cat", "dog"):
        (root / label).mkdir(parents=True)
        (root / label / "0.txt").write_text(f"a {label} text")
    dataset = {"modality": "text", "task": "classification", "root": "pets",
               "layout": {"kind": "folders"}}
    result = _intake(tmp_path, "pets", dataset)
    ctx = RunContext.for_dataset("pets", dataset, base=tmp_path)
    items = ctx.records(result.inventory)
    assert [item.read_bytes() for item in items] == [b"a cat text", b"a dog text"]
    # the same path, other bytes: reading says so and what to do
    (root / "dog" / "0.txt").write_text("a changed text")
    with pytest.raises(RawDataChanged, match=r"pets/dog/0.txt: changed since intake.*rerun intake"):
        ctx.records(result.inventory)[1].read_bytes()
    # a file swapped for a link that leaves the dataset folder is not read at all
    secret = tmp_path / "secret.txt"
    secret.write_text("a cat text")
    (root / "cat" / "0.txt").unlink()
    os.symlink(secret, root / "cat" / "0.txt")
    with pytest.raises(RawDataChanged, match=r"pets/cat/0.txt: now leads outside the dataset"):
        ctx.records(result.inventory)
    (root / "cat" / "0.txt").unlink()
    with pytest.raises(RawDataChanged, match=r"pets/cat/0.txt: gone since intake"):
        ctx.records(result.inventory)


def test_ts_layout_reads_the_official_ucr_files_and_their_split(tmp_path):
    import shutil

    from dlworkflow.config import split_settings
    from tests.conftest import SHARED_DATA

    root = tmp_path / "data" / "raw" / "pickup"
    root.mkdir(parents=True)
    for part in ("TRAIN", "TEST"):
        shutil.copy(SHARED_DATA / "ucr" / f"PickupGestureWiimoteZ_{part}.ts", root)
    dataset = {"modality": "timeseries", "task": "classification", "root": "data/raw/pickup",
               "layout": {"kind": "ts"}}
    result = _intake(tmp_path, "pickup", dataset)
    inventory = result.inventory.set_index("id")
    # the UCR archive's official split: 50 training and 50 test series, 10 classes
    assert result.rejected.empty and len(inventory) == 100
    assert inventory["side_part"].value_counts().to_dict() == {"train": 50, "test": 50}
    assert sorted(inventory["label"].unique(), key=int) == [str(c) for c in range(1, 11)]
    # unequal lengths kept as they are (the archive's lengths run from 29 to 361)
    assert inventory["length"].min() < 50 < 300 < inventory["length"].max()
    first = (root / "PickupGestureWiimoteZ_TRAIN.ts").read_text().split("@data")[1].split()[0]
    values, label = first.rsplit(":", 1)
    assert inventory.loc["PickupGestureWiimoteZ_TRAIN-00001", "label"] == label
    assert inventory.loc["PickupGestureWiimoteZ_TRAIN-00001", "length"] == len(values.split(","))
    params = {"split": {"folds": 5, "test": None}, "datasets": {"pickup": dataset}}
    assert split_settings(params, "pickup")["test"] == {"column": "side_part", "values": ["test"]}


def test_ts_layout_reads_the_ucr_archives_tsv_and_txt_tables_as_its_ts_files(tmp_path):
    """The UCR archive's other downloads of one problem: the 2018 archive's `.tsv` (label
    first, tab-separated, shorter series padded with NaN) and timeseriesclassification.com's
    `.txt` (space-separated, every value and class written as a float). Made from the real
    PickupGestureWiimoteZ `.ts` files (unequal lengths), each must give the `.ts` files'
    items: the same ids, parts, labels and values, the padding not counted as steps."""
    from dlworkflow.layouts import LayoutContext, discover
    from dlworkflow.tasks import get_task
    from tests.conftest import SHARED_DATA

    roots = {kind: tmp_path / "data" / "raw" / kind for kind in ("ts", "tsv", "txt")}
    for root in roots.values():
        root.mkdir(parents=True)
    for part in ("TRAIN", "TEST"):
        source = SHARED_DATA / "ucr" / f"PickupGestureWiimoteZ_{part}.ts"
        shutil.copy(source, roots["ts"])
        text = source.read_text(encoding="latin-1").split("@data")[1]
        rows = [line.rsplit(":", 1) for line in text.split("\n") if line.strip()]
        steps = max(len(values.split(",")) for values, _ in rows)
        tsv, txt = [], []
        for values, label in rows:
            cells = values.split(",")
            tsv.append("\t".join([label.strip(), *cells, *["NaN"] * (steps - len(cells))]))
            txt.append("".join(f"  {float(v):.7e}" for v in [label, *cells]))
        (roots["tsv"] / f"PickupGestureWiimoteZ_{part}.tsv").write_text("\n".join(tsv) + "\n")
        (roots["txt"] / f"PickupGestureWiimoteZ_{part}.txt").write_text("\n".join(txt) + "\n")
    # an archive's folder holds more than the tables: the .ts files are read where they are
    # (the .txt copies beside them never twice), a README.txt never
    (roots["txt"] / "README.txt").write_text("PickupGestureWiimoteZ: 10 gestures\n")
    shutil.copy(roots["txt"] / "PickupGestureWiimoteZ_TEST.txt", roots["ts"])

    inventories, series = {}, {}
    for kind, root in roots.items():
        dataset = {"modality": "timeseries", "task": "classification",
                   "root": f"data/raw/{kind}", "layout": {"kind": "ts"}}
        result = _intake(tmp_path, kind, dataset)
        assert result.rejected.empty, kind
        inventories[kind] = result.inventory.set_index("id")[
            ["label", "length", "missing", "side_part", "sha256"]].sort_index()
        found = discover(root, {"kind": "ts"}, LayoutContext(
            root, get_task("classification"), (".ts",)))
        series[kind] = {item.id: pd.read_csv(io.BytesIO(item.payload))["value"].to_numpy()
                        for item in found.items}
    assert len(inventories["ts"]) == 100 and inventories["ts"]["length"].nunique() > 10
    assert inventories["ts"]["missing"].sum() == 0  # the padding is not a missing value
    # the .tsv's series are the .ts file's to the byte (so is all that follows from them)
    pd.testing.assert_frame_equal(inventories["tsv"], inventories["ts"])
    pd.testing.assert_frame_equal(inventories["txt"].drop(columns="sha256"),
                                  inventories["ts"].drop(columns="sha256"))
    for item_id, values in series["ts"].items():
        assert (series["tsv"][item_id] == values).all()
        assert series["txt"][item_id] == pytest.approx(values, rel=1e-6)


def test_ts_layout_rejects_a_ucr_table_line_it_cannot_use(tmp_path):
    root = tmp_path / "data" / "raw" / "bad"
    root.mkdir(parents=True)
    (root / "Bad_TRAIN.tsv").write_text(
        "1\t0.5\t0.25\t0.125\t0.0625\tNaN\n"   # fine, one step of padding
        "2\t0.5\tNaN\t0.75\t0.5\t0.25\n"       # a missing value inside: kept, counted
        "\t0.5\t0.25\t0.125\t0.25\t0.5\n"      # no label
        "1\tNaN\tNaN\tNaN\tNaN\tNaN\n")       # no values
    result = _intake(tmp_path, "bad", {"modality": "timeseries", "task": "classification",
                                       "root": "data/raw/bad", "layout": {"kind": "ts"}})
    inventory = result.inventory.set_index("id")
    assert inventory["length"].to_dict() == {"Bad_TRAIN-00001": 4, "Bad_TRAIN-00002": 5}
    assert inventory["missing"].to_dict() == {"Bad_TRAIN-00001": 0, "Bad_TRAIN-00002": 1}
    rejected = result.rejected.set_index("path")["reason"]
    assert rejected.index.tolist() == ["data/raw/bad/Bad_TRAIN.tsv:3", "data/raw/bad/Bad_TRAIN.tsv:4"]
    assert rejected.iloc[0].startswith("line 3: ") and "label" in rejected.iloc[0]
    assert rejected.iloc[1] == "line 4: no values after the label (the first column)"


def test_ts_layout_rejects_what_it_cannot_read_with_the_line(tmp_path):
    root = tmp_path / "data" / "raw" / "bad"
    root.mkdir(parents=True)
    (root / "Bad_TRAIN.ts").write_text(
        "# a comment\n@problemName Bad\n@univariate false\n@classLabel true a b\n@data\n"
        "1,2,3:a\n"            # fine
        "1,2,?,4:b\n"          # a missing value: kept, counted
        "1,2:3,4:a\n"          # two dimensions in a file of one
        "5,6,7:c\n")           # a label the header does not declare
    result = _intake(tmp_path, "bad", {"modality": "timeseries", "task": "classification",
                                       "root": "data/raw/bad", "layout": {"kind": "ts"}})
    assert len(result.inventory) == 2
    assert result.inventory.set_index("id").loc["Bad_TRAIN-00002", "missing"] == 1
    rejected = result.rejected.set_index("code")
    assert "line 8: 2 dimension(s) where the file has 1" in rejected.loc["bad_columns", "reason"]
    assert "'c' is not among the @classLabel values (a, b)" in rejected.loc["bad_label", "reason"]
    assert rejected.loc["bad_label", "path"].endswith("Bad_TRAIN.ts:9")
    with pytest.raises(ConfigError, match=r"no \.ts file in data/raw/empty, nor a UCR"):
        (tmp_path / "data" / "raw" / "empty").mkdir()
        _intake(tmp_path, "empty", {"modality": "timeseries", "task": "classification",
                                    "root": "data/raw/empty", "layout": {"kind": "ts"}})


def test_multivariate_ts_series_become_channels(tmp_path):
    """A UEA-style multivariate .ts file (three dimensions a case, made from consecutive
    real PickupGestureWiimoteZ series of one class, unequal lengths): each case is one item
    whose tensor has three channels, each dimension's values in its own channel; a case
    with two dimensions is rejected naming the file's three."""
    from dlworkflow.items import Item
    from dlworkflow.modalities import create_modality
    from tests.conftest import SHARED_DATA

    lines = (SHARED_DATA / "ucr" / "PickupGestureWiimoteZ_TRAIN.ts").read_text().splitlines()
    rows = [line.rsplit(":", 1) for line in lines[lines.index("@data") + 1:] if line.strip()]
    cases = [(rows[i][0], rows[i + 1][0], rows[i + 2][0], rows[i][1]) for i in range(0, 30, 3)]
    classes = sorted({label for *_, label in cases}, key=int)
    root = tmp_path / "data" / "raw" / "multi"
    root.mkdir(parents=True)
    body = "\n".join(":".join(case) for case in cases)
    (root / "Multi_TRAIN.ts").write_text(
        f"@problemName Multi\n@univariate false\n@dimensions 3\n@equalLength false\n"
        f"@classLabel true {' '.join(classes)}\n@data\n{body}\n{rows[0][0]}:{rows[1][0]}:{cases[0][3]}\n")
    result = _intake(tmp_path, "multi", {"modality": "timeseries", "task": "classification",
                                         "root": "data/raw/multi", "layout": {"kind": "ts"}})
    assert len(result.inventory) == 10 and (result.inventory["exogenous"] == 2).all()
    (rejected,) = result.rejected.itertuples()
    assert "2 dimension(s) where the file has 3" in rejected.reason
    modality = create_modality("timeseries", {}, {"kind": "ts"})
    first = (root / "Multi_TRAIN.ts").read_text().split("@data\n")[1].splitlines()[0]
    from dlworkflow.layouts import ts_payload

    dims = [field.split(",") for field in first.split(":")[:3]]
    tensor = modality.tensorize(ts_payload(dims), Item("x", "x"), {"length": 50})
    assert tensor.shape == (50, 3)
    for channel, values in enumerate(dims):
        observed = [float(v) for v in values if v not in ("?", "NaN")]
        assert tensor[0, channel] == pytest.approx(observed[0], abs=1e-4)


def test_a_series_too_short_to_forecast_is_set_aside_with_its_lengths(tmp_path, co2_csv):
    """co2 cut into four series of 500, 300, 40 and 20 weeks (the real values): with horizon
    13 a series needs 28 steps (test, one validation window, two observed steps before
    them; a past shorter than the lookback is padded), so the 20-week one is set aside at
    intake, named with its length and what it lacks; the 40-week one runs; counts reconcile."""
    frame = pd.read_csv(io.BytesIO(co2_csv))
    root = tmp_path / "data" / "raw" / "many"
    root.mkdir(parents=True)
    parts, start = [], 0
    for name, length in (("a", 500), ("b", 300), ("c", 40), ("d", 20)):
        parts.append(frame.iloc[start:start + length].assign(sid=name))
        start += length
    pd.concat(parts).to_csv(root / "many.csv", index=False)
    params = validate_params({"seed": 0, "datasets": {"many": {
        "modality": "timeseries", "task": "forecasting", "root": "data/raw/many",
        "layout": {"kind": "long_csv", "file": "many.csv", "timestamp": "date", "target": "co2",
                   "series_id": "sid"}}}}, base_dir=tmp_path)
    intake = {**params["intake"], "task": {"horizon": 13, "gap": 0, "test_start": None,
                                           "lookback": "auto"}}
    result = run_intake("many", params["datasets"]["many"], intake, base_dir=tmp_path,
                        progress=False)
    assert sorted(result.inventory["id"]) == ["a", "b", "c"]
    assert result.counts["found"] == 4 == result.counts["accepted"] + result.counts["rejected"]
    (row,) = result.rejected.itertuples()
    assert row.id == "d" and row.code == "series_too_short" and row.step == "task"
    assert row.reason.startswith("20 steps; forecasting it needs 28")
    assert "split.horizon" in row.reason


def test_m4_wide_files_become_series_with_their_test_values_last(tmp_path):
    """The M4 Hourly files as they are: 414 rows padded with empty cells, the test file's
    48 values appended to each; the forecasting split then holds out exactly those."""
    from tests.conftest import SHARED_DATA

    root = tmp_path / "data" / "raw" / "m4h"
    root.mkdir(parents=True)
    for part in ("train", "test"):
        shutil.copy(SHARED_DATA / "m4" / f"Hourly-{part}.csv", root)  # links may not leave
    result = _intake(tmp_path, "m4h", {
        "modality": "timeseries", "task": "forecasting", "root": "data/raw/m4h",
        "layout": {"kind": "wide_csv", "file": "Hourly-train.csv",
                   "test_file": "Hourly-test.csv", "id_column": "V1", "frequency": "H"}})
    inventory = result.inventory.set_index("id")
    assert len(inventory) == 414 and result.counts["rejected"] == 0
    train = pd.read_csv(SHARED_DATA / "m4" / "Hourly-train.csv").set_index("V1")
    test = pd.read_csv(SHARED_DATA / "m4" / "Hourly-test.csv").set_index("V1")
    observed = train.notna().sum(axis=1)
    assert (inventory["length"] == observed.loc[inventory.index] + 48).all()
    assert inventory["length"].min() == 748 and (inventory["missing"] == 0).all()
    assert (inventory["frequency"] == "H").all()
    # H1's statistics are those of its training values followed by its test values
    values = pd.concat([train.loc["H1"].dropna(), test.loc["H1"].dropna()]).astype(float)
    assert inventory.loc["H1", "mean"] == pytest.approx(values.mean())
    assert inventory.loc["H1", "max"] == values.max()
    from dlworkflow.tasks.forecasting import split_time

    frame = pd.DataFrame({"timestamp": range(int(inventory.loc["H1", "length"])),
                          "value": values.to_numpy()})
    splits = split_time({"H1": frame}, {"folds": 5, "horizon": 48, "gap": 0})
    assert (splits["role"] == "test").sum() == 48 == test.loc["H1"].notna().sum()
