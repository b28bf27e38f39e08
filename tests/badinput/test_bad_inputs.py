"""The bad-input suite: malformed inputs across the four modalities, each rejected with its
reason or handled, while the run finishes and the counts reconcile."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from dlworkflow.config import validate_params
from dlworkflow.errors import IntakeFailed
from dlworkflow.intake import enforce_policy, run_intake
from tests.helpers.files import (
    bomb_png,
    decode_wav,
    digit_image,
    exif_rotated_jpeg,
    jpeg_bytes,
    png_bytes,
    wav_bytes,
)

REJECTED, ACCEPTED = "rejected", "accepted"


def _params(base_dir, datasets: dict) -> dict:
    return validate_params({"seed": 1, "datasets": datasets}, base_dir=base_dir)


def _run(tmp_path, name: str, params: dict):
    return run_intake(name, params["datasets"][name], params["intake"], base_dir=tmp_path,
                      workers=2, progress=False)


def _check(result, expected: dict[str, tuple[str, str]]):
    """Every expected path is accepted, or rejected with the expected code; counts reconcile."""
    counts = result.counts
    assert counts["found"] == counts["accepted"] + counts["rejected"]
    rejected = {row.path.rsplit("/", 1)[-1] if "/" in row.path else row.path: row
                for row in result.rejected.itertuples()}
    accepted = {p.rsplit("/", 1)[-1] for p in result.inventory["path"]}
    for name, (outcome, code) in expected.items():
        if outcome == REJECTED:
            assert name in rejected, f"{name} should be rejected ({code}); rejected: {rejected}"
            assert rejected[name].code == code, (name, rejected[name].reason)
            assert rejected[name].reason.strip()
        else:
            assert name in accepted, f"{name} should be accepted; rejected: {rejected.get(name)}"
    return rejected, accepted


@pytest.fixture
def image_dataset(tmp_path, digit_png):
    """Folder-per-class images: good ones plus every kind of broken or odd image."""
    root = tmp_path / "data" / "raw" / "imgs"
    (root / "3").mkdir(parents=True)
    (root / "7").mkdir()
    good = digit_image(digit_png)
    jpeg = jpeg_bytes(good)
    files = {
        "3/good.png": (digit_png, ACCEPTED, ""),
        "7/good.jpg": (jpeg, ACCEPTED, ""),
        "3/truncated.png": (png_bytes(good)[: len(png_bytes(good)) // 2], REJECTED, "unreadable"),
        "3/truncated.jpg": (jpeg[: len(jpeg) // 2], REJECTED, "unreadable"),
        "3/zero-bytes.png": (b"", REJECTED, "empty"),
        "3/not-an-image.png": (b"this is a text file pretending to be a PNG\n", REJECTED,
                               "unreadable"),
        "3/one-pixel.png": (png_bytes(Image.new("L", (1, 1))), REJECTED, "too_small"),
        "3/bomb.png": (bomb_png(), REJECTED, "too_large"),
        "7/sixteen-bit.png": (png_bytes(Image.fromarray(
            np.asarray(good, dtype=np.uint16) * 257)), ACCEPTED, ""),
        "7/cmyk.jpg": (jpeg_bytes(good.convert("CMYK")), ACCEPTED, ""),
        "7/palette.png": (png_bytes(good.convert("P")), ACCEPTED, ""),
        "7/rgba.png": (png_bytes(good.convert("RGBA")), ACCEPTED, ""),
        "7/rotated.jpg": (exif_rotated_jpeg(digit_png), ACCEPTED, ""),
        "7/chiffre-sept-é-数字.png": (digit_png, ACCEPTED, ""),
        "stray.png": (digit_png, REJECTED, "no_class_folder"),
        "7/notes.txt": (b"annotator notes", REJECTED, "bad_extension"),
    }
    for relative, (data, _, _) in files.items():
        (root / relative).write_bytes(data)
    os.symlink("/etc/hostname", root / "3" / "outside-link.png")
    expected = {r.rsplit("/", 1)[-1]: (o, c) for r, (_, o, c) in files.items()}
    expected["outside-link.png"] = (REJECTED, "unsafe_path")
    params = _params(tmp_path, {"imgs": {"modality": "image", "task": "classification",
                               "root": "data/raw/imgs", "layout": {"kind": "folders"}}})
    return params, expected


def test_bad_images_are_rejected_with_reasons_and_odd_ones_handled(tmp_path, image_dataset):
    params, expected = image_dataset
    result = _run(tmp_path, "imgs", params)
    rejected, _ = _check(result, expected)
    assert "decompression-bomb guard" in rejected["bomb.png"].reason
    assert "outside the dataset folder" in rejected["outside-link.png"].reason
    inventory = result.inventory.set_index(result.inventory["path"].str.rsplit("/", n=1).str[-1])
    assert inventory.loc["sixteen-bit.png", "bit_depth"] == 16
    assert inventory.loc["cmyk.jpg", "mode"] == "CMYK"
    assert inventory.loc["palette.png", "mode"] == "P"
    assert inventory.loc["rgba.png", "channels"] == 4
    # EXIF orientation 6: stored 32x16, seen as 16x32 once rotated
    assert (inventory.loc["rotated.jpg", "width"], inventory.loc["rotated.jpg", "height"]) == (16, 32)
    assert "EXIF orientation 6" in inventory.loc["rotated.jpg", "notes"]


def test_predict_keeps_a_row_with_the_reason_for_each_image_it_cannot_decode(tmp_path,
                                                                            image_dataset):
    """`dlworkflow predict` given the broken images intake rejects: each keeps its row with
    why it cannot be decoded (in words that do not change from run to run: no memory
    address), and the good ones are decoded around them."""
    from dlworkflow.predict import raw_arrays

    root = tmp_path / "data" / "raw" / "imgs"
    names = ["3/good.png", "3/truncated.png", "3/zero-bytes.png", "3/not-an-image.png",
             "7/good.jpg"]
    card = {"modality": "image", "layout": {"kind": "folders"},
            "tensors": {"size": [16, 16], "color": "grayscale", "resize": "pad"}}
    read = raw_arrays(card, [root / name for name in names])
    assert read["names"] == [str(root / name) for name in names]
    assert [error is None for error in read["errors"]] == [True, False, False, False, True]
    assert read["x"].shape == (2, 16, 16, 1)
    assert all(error.startswith("cannot decode it: ") for error in read["errors"][1:4])
    assert " at 0x" not in "".join(read["errors"][1:4])
    assert raw_arrays(card, [root / name for name in names])["errors"] == read["errors"]


@pytest.fixture
def audio_dataset(tmp_path, fsdd_wav):
    """FSDD-style file names: real recordings plus broken ones."""
    root = tmp_path / "data" / "raw" / "speech" / "recordings"
    root.mkdir(parents=True)
    samples, rate = decode_wav(fsdd_wav)
    nan_samples = samples.copy()
    nan_samples[10] = np.nan
    stereo = np.stack([samples, samples * 0.5], axis=1)
    files = {
        "3_george_0.wav": (fsdd_wav, ACCEPTED, ""),
        "3_george_1.wav": (b"", REJECTED, "empty"),
        "3_george_2.wav": (b"RIFF....WAVEfmt definitely not audio" * 3, REJECTED, "unreadable"),
        "3_george_3.wav": (fsdd_wav[:44], REJECTED, "empty"),
        "3_george_4.wav": (wav_bytes(nan_samples, rate, "FLOAT"), REJECTED, "non_finite"),
        "3_george_5.wav": (wav_bytes(stereo, 44100), ACCEPTED, ""),
        "3_george_6.wav": (wav_bytes(np.zeros(800, dtype=np.float32), rate), ACCEPTED, ""),
        "three-george.wav": (fsdd_wav, REJECTED, "name_mismatch"),
    }
    for name, (data, _, _) in files.items():
        (root / name).write_bytes(data)
    params = _params(tmp_path, {"speech": {
        "modality": "audio", "task": "classification", "root": "data/raw/speech",
        "layout": {"kind": "filename_regex", "glob": "recordings/*.wav",
                   "regex": r"(?P<label>\d)_(?P<group>[a-z]+)_(?P<take>\d+)\.wav"}}})
    return params, {n: (o, c) for n, (_, o, c) in files.items()}


def test_bad_audio_is_rejected_with_reasons(tmp_path, audio_dataset):
    params, expected = audio_dataset
    result = _run(tmp_path, "speech", params)
    rejected, _ = _check(result, expected)
    # no memory address in a reason (soundfile prints the BytesIO it could not open)
    reason = rejected["3_george_2.wav"].reason
    assert "not a readable audio file" in reason and " at 0x" not in reason, reason
    assert result.rejected.equals(_run(tmp_path, "speech", params).rejected)  # run to run
    inventory = result.inventory.set_index("id")
    stereo = inventory.loc["recordings/3_george_5.wav"]
    assert (stereo["channels"], stereo["sample_rate"]) == (2, 44100)
    silent = inventory.loc["recordings/3_george_6.wav"]
    assert silent["silence_ratio"] == 1.0 and "digital silence" in silent["notes"]


@pytest.fixture
def text_dataset(tmp_path, sms_lines):
    """SMS-style label<TAB>text lines: real messages plus broken lines."""
    root = tmp_path / "data" / "raw" / "sms"
    root.mkdir(parents=True)
    lines = [
        sms_lines[0],                               # 1 ok
        b"ham\tcaf\xe9 at 8? (latin-1, not UTF-8)",  # 2 non-UTF-8
        b"spam\t   ",                               # 3 empty text
        b"ham but no tab at all",                   # 4 no delimiter
        b"",                                        # 5 blank line
        b"ham\tnul\x00byte",                        # 6 NUL byte
        sms_lines[1],                               # 7 ok
        "ham\tcafé ☕ ünïcödé".encode(),            # 8 ok, non-ASCII
    ]
    (root / "messages.tsv").write_bytes(b"\n".join(lines) + b"\n")
    params = _params(tmp_path, {"sms": {"modality": "text", "task": "classification",
                              "root": "data/raw/sms",
                              "layout": {"kind": "delimited", "file": "messages.tsv"}}})
    expected = {"messages.tsv:2": (REJECTED, "not_utf8"), "messages.tsv:3": (REJECTED, "empty"),
                "messages.tsv:4": (REJECTED, "bad_row"), "messages.tsv:5": (REJECTED, "empty_line"),
                "messages.tsv:6": (REJECTED, "binary"), "messages.tsv:1": (ACCEPTED, ""),
                "messages.tsv:7": (ACCEPTED, ""), "messages.tsv:8": (ACCEPTED, "")}
    return params, expected


def test_a_text_longer_than_the_networks_read_is_kept_with_a_note(tmp_path, text_dataset):
    params, _ = text_dataset
    path = tmp_path / "data" / "raw" / "sms" / "messages.tsv"
    long_text = ("spam\t" + "win a prize now " * 131_072).encode()  # a 2-MB line
    path.write_bytes(path.read_bytes() + long_text + b"\n")
    intake = {**params["intake"], "text": {**params["intake"]["text"],
                                           "max_characters": 10_000}}  # as the rule passes it
    result = run_intake("sms", params["datasets"]["sms"], intake, base_dir=tmp_path, workers=2,
                        progress=False)
    row = result.inventory.set_index("path").loc["data/raw/sms/messages.tsv:9"]
    assert int(row["characters"]) == 2_097_152
    assert ("2097152 characters: longer than tensors.text.max_characters (10000); the "
            "networks read the first 10000") in row["notes"]
    assert not any("max_characters" in n for n in result.inventory["notes"].drop(
        result.inventory.index[result.inventory["path"].str.endswith(":9")]))


def test_bad_text_lines_are_rejected_with_line_and_offset(tmp_path, text_dataset):
    params, expected = text_dataset
    result = _run(tmp_path, "sms", params)
    rejected, _ = _check(result, expected)
    assert "byte 0xe9 at offset 3" in rejected["messages.tsv:2"].reason
    assert rejected["messages.tsv:4"].reason.startswith("line 4:")
    accepted = result.inventory.set_index("id")
    assert accepted.loc["line-000008", "non_ascii_ratio"] > 0


def test_latin1_text_files_name_the_remedy_and_read_with_the_layouts_encoding(tmp_path):
    """Text files in class folders that are Latin-1 (as SUBJ's and TREC's are): with the
    default UTF-8 each is quarantined with the byte, its offset and the key that fixes it;
    with `encoding: latin-1` in the layout every file is accepted and the networks read the
    same characters."""
    from dlworkflow.items import Item
    from dlworkflow.modalities import create_modality

    root = tmp_path / "data" / "raw" / "reviews"
    files = {"pos/a.txt": "na\u00efve and charming", "pos/b.txt": "a good film",
             "neg/c.txt": "the caf\u00e9 scene drags", "neg/d.txt": "a dull film"}
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(text.encode("latin-1"))
    layouts = {"default": {"kind": "folders"}, "latin": {"kind": "folders", "encoding": "latin-1"}}
    results = {}
    for key, layout in layouts.items():
        params = _params(tmp_path, {"reviews": {"modality": "text", "task": "classification",
                                                "root": "data/raw/reviews", "layout": layout}})
        results[key] = _run(tmp_path, "reviews", params)
    rejected, _ = _check(results["default"], {"a.txt": (REJECTED, "not_utf8"),
                                              "c.txt": (REJECTED, "not_utf8"),
                                              "b.txt": (ACCEPTED, ""), "d.txt": (ACCEPTED, "")})
    assert "byte 0xef at offset 2" in rejected["a.txt"].reason
    assert "set `encoding` in the dataset's layout, e.g. latin-1" in rejected["a.txt"].reason
    _check(results["latin"], {name.rsplit("/", 1)[-1]: (ACCEPTED, "") for name in files})
    modality = create_modality("text", {}, layouts["latin"])
    read = {name: modality.tensorize((root / name).read_bytes(), Item(name, name), {})
            for name in files}
    assert read == files
    # `dlworkflow predict` reads the files as the shards did, and a typed string as typed
    from dlworkflow.predict import raw_arrays

    card = {"modality": "text", "layout": layouts["latin"], "tensors": {}}
    arrays = raw_arrays(card, [root / "pos" / "a.txt", "un caf\u00e9 na\u00eff"])
    assert list(arrays["x"]) == [files["pos/a.txt"], "un caf\u00e9 na\u00eff"]
    # a typed text too long to be a file name (a 300-character message; a path-like one of
    # 5,000) is text, where asking the file system whether it is a file raises
    long_texts = [("un caf\u00e9 na\u00eff " * 20).strip(), ("and/or " * 700).strip()]
    assert raw_arrays(card, long_texts)["x"].tolist() == long_texts


@pytest.fixture
def manifest_dataset(tmp_path, sms_lines):
    """A CSV manifest of text files: missing label, ../ path, missing file, bad bytes."""
    root = tmp_path / "data" / "raw" / "docs"
    (root / "files").mkdir(parents=True)
    (root / "files" / "a.txt").write_bytes(sms_lines[0].split(b"\t", 1)[1])
    (root / "files" / "b.txt").write_bytes(sms_lines[2].split(b"\t", 1)[1])
    (root / "files" / "latin1.txt").write_bytes(b"na\xefve")
    (tmp_path / "data" / "raw" / "secret.txt").write_text("outside the dataset")
    (root / "manifest.csv").write_text(
        "path,label,author\n"
        "files/a.txt,ham,x\n"
        "files/b.txt,,y\n"
        "../secret.txt,ham,z\n"
        "files/missing.txt,spam,w\n"
        "files/latin1.txt,ham,v\n", encoding="utf-8")
    params = _params(tmp_path, {"docs": {"modality": "text", "task": "classification",
                               "root": "data/raw/docs",
                               "layout": {"kind": "manifest", "file": "manifest.csv",
                                          "path_column": "path", "side_columns": ["author"]}}})
    expected = {"a.txt": (ACCEPTED, ""), "manifest.csv:3": (REJECTED, "missing_label"),
                "secret.txt": (REJECTED, "outside_root"),
                "missing.txt": (REJECTED, "missing_file"),
                "latin1.txt": (REJECTED, "not_utf8")}
    return params, expected


def test_bad_manifest_rows_are_rejected(tmp_path, manifest_dataset):
    params, expected = manifest_dataset
    result = _run(tmp_path, "docs", params)
    rejected, _ = _check(result, expected)
    assert "row 3" in rejected["manifest.csv:3"].reason
    assert "escapes the dataset folder" in rejected["secret.txt"].reason
    assert result.inventory.loc[0, "side_author"] == "x"


@pytest.fixture
def series_dataset(tmp_path, co2_csv):
    """A long CSV of several series keyed by id: the real CO2 plus broken copies."""
    import io

    import pandas as pd

    co2 = pd.read_csv(io.BytesIO(co2_csv)).head(60)
    frames = {"co2": co2}
    frames["with_inf"] = co2.assign(co2=co2["co2"].astype(str).where(co2.index != 5, "inf"))
    frames["all_missing"] = co2.assign(co2="")
    frames["constant"] = co2.assign(co2=400.0)
    frames["bad_date"] = co2.assign(date=co2["date"].where(co2.index != 3, "not-a-date"))
    frames["duplicate_date"] = co2.assign(date=co2["date"].where(co2.index != 4, co2["date"][3]))
    frames["text_value"] = co2.assign(co2=co2["co2"].astype(str).where(co2.index != 7, "n.a.x"))
    # three problems at once: all reported in one run, the duplicate makes it unusable
    frames["three_problems"] = frames["duplicate_date"].assign(
        co2=co2["co2"].astype(str).where(~co2.index.isin([8, 9]), "oops").where(
            co2.index != 10, "-inf"))
    frames["all_text"] = co2.assign(co2="n/a?")
    table = pd.concat([f.assign(series=k) for k, f in frames.items()])
    root = tmp_path / "data" / "raw" / "series"
    root.mkdir(parents=True)
    table.to_csv(root / "long.csv", index=False)
    params = _params(tmp_path, {"series": {
        "modality": "timeseries", "task": "forecasting", "root": "data/raw/series",
        "layout": {"kind": "long_csv", "file": "long.csv", "timestamp": "date",
                   "target": "co2", "series_id": "series"}}})
    expected = {"long.csv#co2": (ACCEPTED, ""), "long.csv#constant": (ACCEPTED, ""),
                # one bad value or date: the series stays, the value counts as missing
                "long.csv#with_inf": (ACCEPTED, ""), "long.csv#bad_date": (ACCEPTED, ""),
                "long.csv#text_value": (ACCEPTED, ""),
                "long.csv#all_missing": (REJECTED, "too_short"),
                "long.csv#all_text": (REJECTED, "too_short"),
                "long.csv#duplicate_date": (REJECTED, "duplicate_timestamp"),
                "long.csv#three_problems": (REJECTED, "duplicate_timestamp")}
    return params, expected


def test_bad_series_are_rejected_and_constant_is_flagged(tmp_path, series_dataset):
    params, expected = series_dataset
    result = _run(tmp_path, "series", params)
    rejected, _ = _check(result, expected)
    inventory = result.inventory.set_index("id")
    assert bool(inventory.loc["constant", "constant"]) is True
    assert "constant series" in inventory.loc["constant", "notes"]
    assert inventory.loc["co2", "frequency"] == "W-SAT"
    # a single bad value or timestamp follows the missing-value policy, with a note
    assert "1 infinite value(s) in column 'co2' (row 7)" in inventory.loc["with_inf", "notes"]
    assert int(inventory.loc["with_inf", "missing"]) == int(inventory.loc["co2", "missing"]) + 1
    assert "'n.a.x'): treated as missing" in inventory.loc["text_value", "notes"]
    assert "(row 5: 'not-a-date'): left out" in inventory.loc["bad_date", "notes"]
    assert int(inventory.loc["bad_date", "length"]) == 59
    # every problem of a series in one rejection reason
    reason = rejected["long.csv#three_problems"].reason
    for problem in ("duplicate timestamp", "2 value(s) in column 'co2' not a number (row 10, 11",
                    "1 infinite value(s) in column 'co2' (row 12)"):
        assert problem in reason, reason
    assert "60 value(s) in column 'co2' not a number" in rejected["long.csv#all_text"].reason


def test_no_accepted_item_stops_at_the_metric_choice_naming_rejected_csv(tmp_path):
    from dlworkflow.choice import write_metric_choice

    inventory, rejected = tmp_path / "inventory.parquet", tmp_path / "rejected.csv"
    import pandas as pd

    pd.DataFrame({"id": pd.Series([], dtype=str)}).to_parquet(inventory)
    pd.DataFrame({"path": ["a.csv", "b.csv"], "reason": ["x", "y"],
                  "code": ["too_short", "too_short"]}).to_csv(rejected, index=False)
    with pytest.raises(IntakeFailed, match=r"no items accepted for series: see .*rejected\.csv "
                                           r"\(2 rejected: 2 too_short\)"):
        write_metric_choice("forecasting", str(inventory), {}, str(tmp_path / "metric.json"),
                            "series", str(rejected))
    assert not (tmp_path / "metric.json").exists()


def test_fail_policy_names_every_bad_item(tmp_path, text_dataset):
    params, _ = text_dataset
    result = _run(tmp_path, "sms", params)
    with pytest.raises(IntakeFailed) as caught:
        enforce_policy(result, "fail")
    message = str(caught.value)
    for path in result.rejected["path"]:
        assert path in message
    assert f"{len(result.rejected)} of {result.counts['found']} items rejected" in message
    enforce_policy(result, "quarantine")  # quarantine never raises


def test_suite_covers_at_least_twenty_malformed_inputs(image_dataset, audio_dataset,
                                                       text_dataset, manifest_dataset,
                                                       series_dataset):
    suites = (image_dataset, audio_dataset, text_dataset, manifest_dataset, series_dataset)
    malformed = sum(1 for _, expected in suites for outcome, _ in expected.values()
                    if outcome == REJECTED)
    assert malformed >= 20
