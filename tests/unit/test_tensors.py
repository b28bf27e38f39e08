"""Step 3 tensors: shapes, dtypes and ranges per modality and policy; plans; the loader."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from dlworkflow.items import Item
from dlworkflow.modalities import create_modality
from dlworkflow.shardfile import quantise
from dlworkflow.tasks import get_task
from dlworkflow.tasks.forecasting import plan_windows, split_time
from tests.helpers.files import digit_image, jpeg_bytes, png_bytes

CLASSIFICATION, FORECASTING = get_task("classification"), get_task("forecasting")


def plan_items(splits, shard_size, seed):
    return CLASSIFICATION.plan(splits, {"shard_size": shard_size}, {}, seed)


@pytest.mark.parametrize(("resize", "color", "channels"), [
    ("stretch", "rgb", 3), ("pad", "grayscale", 1), ("crop", "rgb", 3)])
def test_image_policies_give_the_configured_shape(digit_png, resize, color, channels):
    wide = png_bytes(digit_image(digit_png).resize((48, 24)))
    modality = create_modality("image", {}, {"kind": "folders"})
    array = modality.tensorize(wide, Item("x", "x"), {"size": [32, 40], "color": color,
                                                       "resize": resize})
    assert array.shape == (32, 40, channels) and array.dtype == np.uint8
    if resize == "pad":  # letterboxed: the top and bottom rows are the zero padding
        assert array[0].max() == 0 and array[-1].max() == 0 and array.max() > 0


@pytest.mark.parametrize("resize", ["stretch", "pad", "crop"])
def test_gray_images_as_rgb_are_what_pillow_makes_of_them(digit_png, resize):
    """Gray sources are resized as one channel, then made RGB: the same pixels as converting
    to RGB first, for every policy; a batch of them is one writable array."""
    from PIL import Image

    from dlworkflow.tensors import tensorise_items

    gray = digit_image(digit_png).resize((48, 24))
    settings = {"size": [32, 40], "color": "rgb", "resize": resize}
    modality = create_modality("image", {}, {"kind": "folders"})
    ours = modality.tensorize(png_bytes(gray), Item("x", "x"), settings)
    converted = modality.tensorize(png_bytes(gray.convert("RGB")), Item("x", "x"), settings)
    assert gray.mode == "L" and ours.shape == converted.shape == (32, 40, 3)
    assert np.array_equal(ours, converted) and ours.std() > 0
    palette = gray.convert("P")  # other modes still go through Pillow's conversion
    assert np.array_equal(modality.tensorize(png_bytes(palette), Item("x", "x"), settings),
                          modality.tensorize(png_bytes(palette.convert("RGB")), Item("x", "x"),
                                             settings))
    batch = tensorise_items(modality, [Item("a", "a", payload=png_bytes(gray)),
                                       Item("b", "b", payload=png_bytes(Image.new("L", (48, 24))))],
                            settings)
    assert batch.shape == (2, 32, 40, 3) and batch.flags.writeable
    assert np.array_equal(batch[0], converted) and batch[1].max() == 0
    text = create_modality("text", {}, {"kind": "folders"})
    assert list(tensorise_items(text, [Item("a", "a", payload=b"One  two"),
                                       Item("b", "b", payload=b"three")], {})) == ["One two",
                                                                                   "three"]


def test_image_exif_rotation_and_16_bit_are_applied(digit_png):
    from PIL import Image

    from tests.helpers.files import exif_rotated_jpeg

    modality = create_modality("image", {}, {"kind": "folders"})
    rotated = modality.tensorize(exif_rotated_jpeg(digit_png), Item("x", "x"),
                                 {"size": [32, 16], "color": "grayscale", "resize": "stretch"})
    assert rotated.shape == (32, 16, 1)
    sixteen = Image.fromarray(np.asarray(digit_image(digit_png), dtype=np.uint16) * 257)
    array = modality.tensorize(png_bytes(sixteen), Item("x", "x"),
                               {"size": [8, 8], "color": "grayscale", "resize": "stretch"})
    assert array.max() > 200  # scaled to 8 bits, not clipped to white or crushed to black
    assert modality.tensorize(jpeg_bytes(digit_image(digit_png).convert("CMYK")), Item("x", "x"),
                              {"size": [8, 8]}).shape == (8, 8, 3)


@pytest.mark.parametrize(("representation", "shape"), [
    ("logmel", (40, 1 + (16000 - 400) // 160, 1)), ("mfcc", (13, 98, 1)), ("waveform", (16000, 1))])
def test_audio_representations_have_fixed_shapes(fsdd_wav, representation, shape):
    modality = create_modality("audio", {}, {"kind": "folders"})
    settings = {"sample_rate": 16000, "duration": 1.0, "representation": representation,
                "n_mels": 40, "n_mfcc": 13, "n_fft": 400, "hop_length": 160, "fit": "center"}
    array = modality.tensorize(fsdd_wav, Item("x", "x"), settings)
    assert array.shape == shape and array.dtype == np.float32 and np.isfinite(array).all()
    if representation == "waveform":
        assert np.abs(array).max() <= 1.0


def test_audio_fit_pads_and_trims_where_asked():
    from dlworkflow.modalities.audio import fit_length

    signal = np.arange(1, 11, dtype=np.float32)
    assert fit_length(signal, 4, "start").tolist() == [1, 2, 3, 4]
    assert fit_length(signal, 4, "center").tolist() == [4, 5, 6, 7]
    assert fit_length(signal[:2], 6, "center").tolist() == [0, 0, 1, 2, 0, 0]
    assert fit_length(signal[:2], 4, "start").tolist() == [1, 2, 0, 0]


def test_uint8_quantisation_keeps_the_scale():
    batch = np.linspace(-80, 10, 1000, dtype=np.float32).reshape(10, 100)
    packed = quantise(batch)
    restored = packed["x"].astype(np.float32) * packed["x_scale"] + packed["x_offset"]
    assert packed["x"].dtype == np.uint8
    assert np.abs(restored - batch).max() <= float(packed["x_scale"]) / 2 + 1e-4


def test_text_is_normalised_but_not_tokenised():
    modality = create_modality("text", {}, {"kind": "delimited"})
    raw = "\ufeffCafe\u0301  au\tlait\n\nNOW ".encode()
    assert modality.tensorize(raw, Item("x", "x"), {"max_characters": 100}) == "Café au lait NOW"
    assert modality.tensorize(raw, Item("x", "x"), {"max_characters": 4}) == "Café"


def test_series_classification_is_resampled_to_a_fixed_length(co2_csv):
    modality = create_modality("timeseries", {}, {"kind": "long_csv", "timestamp": "date",
                                                  "target": "co2"})
    head = pd.read_csv(io.BytesIO(co2_csv)).head(30).to_csv(index=False).encode()
    array = modality.tensorize(head, Item("x", "x"), {"length": 64})
    assert array.shape == (64, 1) and array.dtype == np.float32 and np.isfinite(array).all()
    source = pd.read_csv(io.BytesIO(co2_csv))["co2"].head(30).interpolate(limit_direction="both")
    assert array[0, 0] == pytest.approx(source.iloc[0]) and array[-1, 0] == pytest.approx(
        source.iloc[-1])


def test_item_plan_keeps_test_items_in_their_own_shards():
    splits = pd.DataFrame({"id": [f"i{i:03d}" for i in range(25)],
                           "label": ["a", "b"] * 12 + ["a"],
                           "role": ["test"] * 5 + ["trainval"] * 20,
                           "fold": pd.array([pd.NA] * 5 + [i % 4 for i in range(20)],
                                            dtype="Int64"),
                           "in_sample": [False] * 5 + [True] * 20})
    plan = plan_items(splits, shard_size=6, seed=0)
    assert sorted(plan["shard"].unique()) == ["test-00000", "trainval-00000", "trainval-00001",
                                              "trainval-00002", "trainval-00003"]
    assert (plan.loc[plan["shard"].str.startswith("test"), "role"] == "test").all()
    assert plan_items(splits, 6, 0).equals(plan)  # deterministic
    assert not plan_items(splits, 6, 1)["id"].equals(plan["id"])  # the seed matters


def test_window_plan_never_trains_on_validation_or_test_targets():
    frame = pd.DataFrame({"timestamp": pd.date_range("2000-01-01", periods=120, freq="D"),
                          "value": np.arange(120.0)})
    settings = {"folds": 3, "horizon": 10, "gap": 2}
    splits = split_time({"s": frame}, settings)
    plan = plan_windows(splits, lookback=14, horizon=10, shard_size=50)
    test_start = int(splits.loc[splits["role"] == "test", "step"].min())
    assert (plan.loc[plan["role"] == "test", "target_end"] >= test_start).all()
    assert (plan.loc[plan["role"] == "trainval", "target_end"] < test_start).all()
    for fold in range(3):
        valid = FORECASTING.select(plan, fold, "valid")
        train = FORECASTING.select(plan, fold, "train", gap=2)
        assert len(valid) == 1  # one forecast origin per fold window
        assert train["target_end"].max() < valid["target_start"].min() - 2
        assert set(train["id"]).isdisjoint(valid["id"])


def test_item_selection_for_a_fold_is_disjoint_and_skips_test():
    index = pd.DataFrame({"id": list("abcdefgh"), "role": ["trainval"] * 6 + ["test"] * 2,
                          "fold": pd.array([0, 1, 2, 0, 1, 2, pd.NA, pd.NA], dtype="Int64"),
                          "in_sample": [True, True, True, True, False, True, False, False]})
    train, valid = CLASSIFICATION.select(index, 1, "train"), CLASSIFICATION.select(index, 1, "valid")
    assert list(train["id"]) == ["a", "c", "d", "f"] and list(valid["id"]) == ["b"]
    assert list(CLASSIFICATION.select(index, None, "trainval")["id"]) == list("abcdef")


def test_each_series_trains_a_fold_on_the_windows_its_own_split_allows():
    """Series of unequal length: step numbers restart per series, so each series has its own
    validation windows. The windows a fold trains on are exactly those whose targets are all
    training steps of that series in the split (the rule the leakage proof certifies)."""
    from dlworkflow.tasks.forecasting import training_steps

    series = {name: pd.DataFrame({"timestamp": pd.date_range("2000-01-01", periods=n, freq="D"),
                                  "value": np.arange(float(n))})
              for name, n in (("long", 160), ("short", 90))}
    gap, horizon = 2, 10
    splits = split_time(series, {"folds": 3, "horizon": horizon, "gap": gap})
    plan = plan_windows(splits, lookback=12, horizon=horizon, shard_size=50)
    for fold in range(3):
        train = FORECASTING.select(plan, fold, "train", gap=gap)
        for name in series:
            allowed = set(training_steps(splits, name, fold, gap).tolist())
            windows = plan[(plan["series"] == name) & (plan["role"] == "trainval")]
            expected = {row.id for row in windows.itertuples()
                        if set(range(row.target_start, row.target_end + 1)) <= allowed}
            chosen = set(train.loc[train["series"] == name, "id"])
            assert chosen == expected and chosen, (fold, name)


def test_unequal_series_are_cut_to_their_observed_span_before_resampling():
    """PickupGestureWiimoteZ (UCR) stores series of 29-361 steps, padded at the end: each is
    resampled from its own observed values, not from its padding."""
    from tests.conftest import SHARED_DATA

    lines = (SHARED_DATA / "ucr" / "PickupGestureWiimoteZ_TRAIN.ts").read_text().splitlines()
    values = [float(v) for v in lines[lines.index("@data") + 1].rsplit(":", 1)[0].split(",")]
    modality = create_modality("timeseries", {}, {"kind": "wide_csv"})
    padded = "value\n" + "\n".join(map(str, values)) + "\nnan" * 40 + "\n"
    array = modality.tensorize(padded.encode(), Item("x", "x"), {"length": 100})
    unpadded = modality.tensorize(("value\n" + "\n".join(map(str, values)) + "\n").encode(),
                                  Item("x", "x"), {"length": 100})
    assert array.shape == (100, 1) and np.allclose(array, unpadded)
    assert array[-1, 0] == pytest.approx(values[-1]) and array[0, 0] == pytest.approx(values[0])


@pytest.mark.parametrize("policy", ["interpolate", "mask"])
def test_a_masked_gap_is_filled_and_marked_in_a_channel_the_models_read(co2_csv, policy):
    """`tensors.timeseries.missing: mask` on the real co2 series, whose weeks have gaps: the
    gaps are interpolated as under `interpolate`, and the window gets one more channel, 1
    where the week was observed and 0 at a gap or in the padding of a short past. Before,
    the gaps were zeros (0 ppm beside 330) and the mask was stored where no model read it."""
    from dlworkflow.tensors import padded_past

    values = pd.read_csv(io.BytesIO(co2_csv))["co2"].to_numpy(dtype=np.float64)[:, None]
    gaps = np.flatnonzero(np.isnan(values[:, 0]))
    gap = int(gaps[gaps < 95].max())  # the series' first weeks: a short past, with gaps
    start = gap + 8
    assert not np.isnan(values[gap + 1: start]).any()  # observed weeks after the gap
    past, mask, observed = padded_past(values, start, 104, policy)
    plain, _, _ = padded_past(values, start, 104, "interpolate")
    assert observed == start < 104  # the series' start: a short past, padded
    np.testing.assert_allclose(past[:, 0], plain[:, 0])  # the same filled values
    assert np.isfinite(past).all() and past[:, 0].min() > 300  # no zeros among the ppm
    if policy == "interpolate":
        assert past.shape == (104, 1)
        return
    assert past.shape == (104, 2)
    marks = past[:, 1]
    assert (marks == mask.all(axis=1)).all() and set(np.unique(marks)) == {0.0, 1.0}
    assert (marks[: 104 - observed] == 0).all()  # the padding
    assert marks[104 - observed + gap] == 0  # the gap
    assert marks[-1] == 1
