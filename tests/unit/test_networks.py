"""Step 5 networks: every architecture trains on a tiny real subset through `train_fold`,
saves, reloads in a fresh process and predicts from raw files; transfer with self-made
weights; same seed, same metrics."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dlworkflow.errors import ConfigError
from dlworkflow.items import Item
from dlworkflow.models.networks import frozen_linear_view
from dlworkflow.train import backup_dir, train_fold
from tests.conftest import REPO, SHARED_DATA
from tests.helpers.shards import (
    digits_images,
    fold_context,
    fsdd_spectrograms,
    sms_texts,
    trec_texts,
    write_metric,
    write_shards,
    write_windows,
)

QUICK = {"min_steps": 0, "patience_steps": 0,
         "epochs": 2, "patience": 2, "batch_size": 16, "learning_rate": 0.003, "dropout": 0.1,
         "l2": 0.0, "units": 16, "filters": 4, "layers": 2, "class_weight": "none",
         "fine_tune_layers": 0, "text": {"sequence_length": "auto", "max_tokens": 500,
                                         "embedding_dim": 8, "pretrained_vectors": None},
         "transfer": {"backbone": "mobilenet_v3_small", "weights": "none"}}
AUGMENT = {"image": {"rotation": 0.05}, "audio": {"time_mask": 0.1, "freq_mask": 0.1},
           "timeseries": {"jitter": 0.01, "scaling": 0.05}}


def dataset(modality: str, task: str = "classification", layout: str = "folders") -> dict:
    return {"modality": modality, "task": task, "layout": {"kind": layout}}


def _train(folder, ds, tmp_path, architecture, fold=0, name="out", **changes):
    settings = {**QUICK, "architecture": architecture, **changes}
    out = tmp_path / name / f"fold-{fold}"
    details = train_fold(fold_context(ds, folder, {"train": settings, "augment": AUGMENT}, out),
                         fold)
    return details, out


@pytest.fixture(scope="session")  # read only, cheap: made once per worker, tests spread out
def image_shards(tmp_path_factory):
    x, labels, folds = digits_images(200)
    folder = write_shards(tmp_path_factory.mktemp("img"), x, labels, folds)
    write_metric(folder, "classification", labels)
    return folder


def _check_outputs(out, architecture):
    metrics = json.loads((out / "metrics.json").read_text())
    entry = metrics["models"][architecture]
    assert 1 <= entry["best_epoch"] <= entry["epochs_run"] <= 2
    assert (out / "model.keras").is_file() and (out / "history.csv").is_file()
    history = pd.read_csv(out / "history.csv")  # every epoch, for dvc plots
    assert history["epoch"].tolist() == list(range(1, entry["epochs_run"] + 1))
    assert not backup_dir(out).exists()  # finished: no backup left
    return entry


def test_image_cnn_trains_saves_and_predicts_from_raw_files_in_a_fresh_process(
        image_shards, tmp_path):
    from PIL import Image

    entry, out = _train(image_shards, dataset("image"), tmp_path, "image_cnn")
    _check_outputs(out, "image_cnn")
    assert 0.0 <= entry["metrics"]["accuracy"] <= 1.0
    # raw PNG files of the same digits; the card says how to decode them
    card = json.loads((out / "model.json").read_text())
    card["tensors"] = {"size": [32, 32], "color": "grayscale", "resize": "pad"}
    (out / "model.json").write_text(json.dumps(card))
    x, _, _ = digits_images(6)
    files = []
    for number, image in enumerate(x):
        path = tmp_path / f"digit-{number}.png"
        Image.fromarray(image[..., 0]).save(path)
        files.append(str(path))
    code = ("import json, sys; from dlworkflow.predict import predict; "
            "print(predict(sys.argv[1], sys.argv[2:]).to_json(orient='records'))")
    done = subprocess.run([sys.executable, "-c", code, str(out), *files], capture_output=True,
                          text=True, cwd=REPO, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = pd.DataFrame(json.loads(done.stdout.strip().splitlines()[-1]))
    import keras

    direct = keras.saving.load_model(out / "model.keras").predict(x, verbose=0)
    assert np.allclose(rows[[f"p_{c}" for c in card["classes"]]].to_numpy(), direct, atol=1e-5)
    assert list(rows["prediction"]) == [card["classes"][i] for i in direct.argmax(axis=1)]


@pytest.mark.seconds(25)
def test_auto_takes_transfer_learning_when_pretrained_weights_are_at_hand(image_shards, tmp_path):
    """`train.architecture: auto` on images: the pretrained backbone when the images are large
    enough and its weights are a file, in Keras' cache or downloadable; from scratch
    otherwise; the model card says why."""
    from dlworkflow.models.extractors import build_extractor

    x, labels, folds = digits_images(120, size=64)
    large = write_shards(tmp_path / "large", x, labels, folds)
    write_metric(large, "classification", labels)
    backbone = build_extractor("mobilenet_v3_small", (64, 64, 3), "none")
    weights = tmp_path / "backbone.weights.h5"
    backbone.save_weights(weights)
    runs = {}
    for name, shards, chosen in (("file", large, str(weights)), ("none", large, "none"),
                                 ("small", image_shards, str(weights))):
        _, out = _train(shards, dataset("image"), tmp_path, "auto", name=name, epochs=1,
                        transfer={"backbone": "mobilenet_v3_small", "weights": chosen})
        runs[name] = json.loads((out / "model.json").read_text())
    assert runs["file"]["architecture"] == "image_transfer"
    assert str(weights) in runs["file"]["architecture_reason"]
    assert runs["none"]["architecture"] == "image_wide_cnn"
    assert "from scratch" in runs["none"]["architecture_reason"]
    assert runs["small"]["architecture"] == "image_wide_cnn"  # 32-px images: 1x1 feature maps
    assert "32-pixel" in runs["small"]["architecture_reason"]


def test_imagenet_weights_count_when_cached_or_downloadable(tmp_path, monkeypatch):
    from dlworkflow.models.extractors import get_extractor, pretrained_weights

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    found, why = pretrained_weights("mobilenet_v3_small", "imagenet",
                                    download=lambda name: False)
    assert not found and "neither in Keras' cache" in why
    found, why = pretrained_weights("mobilenet_v3_small", "imagenet", download=lambda name: True)
    assert found and "downloaded" in why
    cached = tmp_path / "models" / get_extractor("efficientnet_b0").imagenet_file
    cached.parent.mkdir()
    cached.write_bytes(b"weights")
    found, why = pretrained_weights("efficientnet_b0", "imagenet", download=lambda name: False)
    assert found and str(cached) in why
    assert pretrained_weights("efficientnet_b0", "none") == (False,
                                                             "train.transfer.weights is none")


def test_auto_chooses_the_image_network_once_and_downloads_there(tmp_path, monkeypatch):
    """Rule choose_network tries ImageNet's download once, for images of 64 px or more, and
    records the choice; the folds and the final model, given it, do not try again, and
    weights that turn up meanwhile do not change their network. Smaller images never try."""
    from dlworkflow.modalities.image import ImageModality
    from dlworkflow.models.extractors import get_extractor
    from dlworkflow.train import architecture_for, choose_network, decided_network

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    tried = []
    monkeypatch.setattr("dlworkflow.models.extractors.can_download",
                        lambda *args, **kwargs: tried.append(args) or False)
    settings = {"architecture": "auto", "transfer": {"backbone": "mobilenet_v3_small",
                                                     "weights": "imagenet"}}
    choices = {}
    for side in (64, 32):
        folder = tmp_path / f"side{side}"
        folder.mkdir()
        (folder / "stats.json").write_text(json.dumps({"shapes": [f"[{side}, {side}, 3]"]}))
        ctx = fold_context(dataset("image"), folder, {"train": settings})
        choices[side] = choose_network(ctx, folder / "network.json")
        beside = {"fitted": "image_wide_cnn+fitted"} if side == 64 else {}
        assert json.loads((folder / "network.json").read_text()) == {
            **dict(zip(("architecture", "reason"), choices[side], strict=True)),
            "beside": beside}
    assert len(tried) == 1  # the 32-px images did not try
    assert choices[64][0] == "image_wide_cnn" and "neither in Keras' cache" in choices[64][1]
    assert choices[32][0] == "image_wide_cnn" and "32-pixel images" in choices[32][1]
    # weights none: nothing tried, the network from scratch and its fitted variant beside it
    none = {**settings, "transfer": {**settings["transfer"], "weights": "none"}}
    ctx = fold_context(dataset("image"), tmp_path / "side64", {"train": none})
    assert choose_network(ctx, tmp_path / "none.json") == (
        "image_wide_cnn", "auto: trained from scratch, train.transfer.weights is none")
    assert json.loads((tmp_path / "none.json").read_text())["beside"] == {
        "fitted": "image_wide_cnn+fitted"}
    cached = tmp_path / "keras" / "models" / get_extractor("mobilenet_v3_small").imagenet_file
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"weights")  # the weights turn up: a fold deciding now would transfer
    modality = ImageModality({"kind": "folders"})
    assert architecture_for(modality, "classification", settings, (64, 64, 3))[0] == \
        "image_transfer"
    fold = fold_context(dataset("image"), tmp_path / "side64", {"train": settings})
    fold = fold.with_values(inputs={**fold.inputs,
                                    "network": str(tmp_path / "side64" / "network.json")})
    assert architecture_for(modality, "classification", settings, (64, 64, 3),
                            decided_network(fold)) == (
        "image_wide_cnn", f"{choices[64][1]} (decided once for every fold and the final model)")
    assert decided_network(fold_context(dataset("image"), tmp_path, {})) is None
    assert len(tried) == 1


def test_the_folds_weigh_networks_beside_autos_transfer_network(tmp_path):
    """Where `auto` took image_transfer, rule train_scratch_fold trains the task's network
    from scratch beside it, and for classes under `train.image.wide_fit: auto` rule
    train_fitted_fold trains it with its linear part fitted (`image_transfer+fitted`);
    nn_summary keeps the CV-best (auto's own choice on a tie) and says why, and the final
    model trains it, replaying its folds, under the variant's settings. Other choices, other
    modalities and a wide_fit set by hand train fewer networks."""
    from dlworkflow.evaluate import best_fold_files, network_summary
    from dlworkflow.modalities.base import split_network_name
    from dlworkflow.modalities.image import ImageModality
    from dlworkflow.modalities.text import TextModality
    from dlworkflow.train import architecture_for, decided_network, variant_context
    from dlworkflow.workflow import networks_beside

    both = {"scratch": "image_wide_cnn", "fitted": "image_transfer+fitted"}
    photo = (64, 80, 3)
    assert ImageModality.networks_beside("classification", "image_transfer", {}, photo) == both
    assert ImageModality.networks_beside("regression", "image_transfer", {}, photo) == {
        "scratch": "image_cnn"}
    for fit in ("joint", "fitted"):  # set by hand: the folds train that one alone
        assert ImageModality.networks_beside("classification", "image_transfer",
                                             {"image": {"wide_fit": fit}}, photo) == {
            "scratch": "image_wide_cnn"}
        assert ImageModality.networks_beside("classification", "image_wide_cnn",
                                             {"image": {"wide_fit": fit}}, photo) == {}
    # from scratch for want of weights: its fitted variant beside it, on photos only
    assert ImageModality.networks_beside("classification", "image_wide_cnn", {}, photo) == {
        "fitted": "image_wide_cnn+fitted"}
    for shape in ((63, 80, 3), (16, 16, 1), ()):
        assert ImageModality.networks_beside("classification", "image_wide_cnn", {},
                                             shape) == {}
    assert ImageModality.networks_beside("regression", "image_cnn", {}, photo) == {}
    assert TextModality.networks_beside("classification", "text_transfer", {}, (300,)) == {}
    assert split_network_name("image_transfer+fitted") == ("image_transfer", "fitted")
    assert split_network_name("image_transfer") == ("image_transfer", None)
    network = tmp_path / "network.json"
    network.write_text(json.dumps({"architecture": "image_transfer",
                                   "reason": "auto: transfer learning, weights found",
                                   "beside": both}))
    params = {"datasets": {"photos": dataset("image"), "texts": dataset("text")}}
    assert networks_beside("photos", params, network) == both
    alone = tmp_path / "alone.json"
    alone.write_text(json.dumps({"architecture": "text_transfer", "reason": "found",
                                 "beside": {}}))
    assert networks_beside("texts", params, alone) == {}
    # a decision written before it listed them: the networks its choice alone gave then
    older = tmp_path / "older.json"
    for decided, expected in (("image_transfer", both), ("image_wide_cnn", {})):
        older.write_text(json.dumps({"architecture": decided, "reason": "found"}))
        assert networks_beside("photos", params, older) == expected

    fold = fold_context(dataset("image"), tmp_path, {"train": {"architecture": "auto"}})
    fold = fold.with_values(inputs={**fold.inputs, "network": str(network)})
    assert decided_network(fold) == ("image_transfer", "auto: transfer learning, weights found")
    for folder, expected in both.items():
        name, why = decided_network(fold.with_values(values={"beside": folder}))
        assert name == expected and "beside image_transfer" in why and "weights found" in why
        assert "one of the 3 networks" in why
    with pytest.raises(ConfigError, match=r"train_nothing_fold.*no network 'nothing'"):
        decided_network(fold.with_values(values={"beside": "nothing"}))
    image = variant_context(fold, "image_transfer+fitted").section("train")["image"]
    assert image["wide_fit"] == "fitted"
    assert variant_context(fold, "image_transfer") is fold
    with pytest.raises(ConfigError, match="no variant 'other'"):
        variant_context(fold, "image_transfer+other")

    (tmp_path / "metric.json").write_text(json.dumps({"primary": {"name": "accuracy"}}))
    (tmp_path / "baseline.json").write_text(json.dumps({
        "primary": "accuracy", "best": "logreg",
        "models": {"logreg": {"accuracy": {"mean": 0.8, "std": 0.01, "folds": [0.8, 0.8]}}}}))
    folders = {"image_transfer": "nn", "image_wide_cnn": "nn/scratch",
               "image_transfer+fitted": "nn/fitted"}

    def summary(scores):
        metrics, predictions = [], []
        for name in scores:
            for k, score in enumerate(scores[name]):
                out = tmp_path / "results" / folders[name] / f"fold-{k}"
                out.mkdir(parents=True, exist_ok=True)
                (out / "metrics.json").write_text(json.dumps({"fold": k, "models": {name: {
                    "metrics": {"accuracy": score}, "best_epoch": 3 + k}}}))
                pd.DataFrame({"id": [f"{k}a", f"{k}b"], "model": name, "fold": k}).to_parquet(
                    out / "predictions.parquet")
                metrics.append(str(out / "metrics.json"))
                predictions.append(str(out / "predictions.parquet"))
        return network_summary(str(tmp_path / "metric.json"), metrics, predictions,
                               str(tmp_path / "baseline.json"), str(tmp_path / "oof.parquet"),
                               str(tmp_path / "summary.json"), str(network))

    histories = [str(tmp_path / "results" / f / f"fold-{k}" / "history.csv")
                 for f in ("nn", "nn/scratch", "nn/fitted") for k in (0, 1)]
    final = fold.with_values(inputs={**fold.inputs, "summary": str(tmp_path / "summary.json")})
    result = summary({"image_transfer": [0.85, 0.87], "image_wide_cnn": [0.95, 0.93]})
    assert result["best"] == "image_wide_cnn" and result["folds"] == 2
    assert result["network_choice"].startswith("image_wide_cnn, the network from scratch "
                                               "trained beside auto's transfer network")
    assert "has the better CV" in result["network_choice"]
    assert "image_transfer 0.8600" in result["network_choice"]
    assert result["verdict"].startswith("The folds trained 2 networks: image_wide_cnn")
    assert len(pd.read_parquet(tmp_path / "oof.parquet")) == 8
    assert best_fold_files(histories, result) == histories[2:4]
    name, why = decided_network(final)
    assert name == "image_wide_cnn" and why.startswith("auto: trained from scratch: ")
    assert architecture_for(ImageModality({"kind": "folders"}), "classification",
                            {"architecture": "auto"}, (64, 64, 3), (name, why))[0] == name

    result = summary({"image_transfer": [0.9, 0.9], "image_wide_cnn": [0.9, 0.9],
                      "image_transfer+fitted": [0.9, 0.9]})  # a tie
    assert result["best"] == "image_transfer"
    assert "auto's own choice" in result["network_choice"]
    assert "has the best CV" in result["network_choice"]
    assert best_fold_files(histories, result) == histories[:2]
    name, why = decided_network(final)
    assert name == "image_transfer" and why.startswith("auto: transfer learning, weights found; ")

    result = summary({"image_transfer": [0.9, 0.9], "image_wide_cnn": [0.89, 0.9],
                      "image_transfer+fitted": [0.93, 0.92]})
    assert result["best"] == "image_transfer+fitted"
    assert result["network_choice"].startswith(
        "image_transfer+fitted, auto's choice image_transfer as its variant fitted, has the "
        "best CV")
    assert result["verdict"].startswith("The folds trained 3 networks: image_transfer+fitted")
    assert best_fold_files(histories, result) == histories[4:]
    assert len(pd.read_parquet(tmp_path / "oof.parquet")) == 12
    name, why = decided_network(final)  # the final model: the variant, auto's own reason
    assert name == "image_transfer+fitted"
    assert why.startswith("auto: transfer learning, weights found; image_transfer+fitted")

    # from scratch for want of weights, on photos: the network and its fitted variant
    network.write_text(json.dumps({"architecture": "image_wide_cnn",
                                   "reason": "auto: trained from scratch, no weights",
                                   "beside": {"fitted": "image_wide_cnn+fitted"}}))
    folders = {"image_wide_cnn": "nn", "image_wide_cnn+fitted": "nn/fitted"}
    name, why = decided_network(fold.with_values(values={"beside": "fitted"}))
    assert name == "image_wide_cnn+fitted" and "one of the 2 networks" in why
    with pytest.raises(ConfigError, match="no network 'scratch'"):
        decided_network(fold.with_values(values={"beside": "scratch"}))
    result = summary({"image_wide_cnn": [0.9, 0.9], "image_wide_cnn+fitted": [0.93, 0.92]})
    assert result["network_choice"].startswith(
        "image_wide_cnn+fitted, auto's choice image_wide_cnn as its variant fitted, has the "
        "better CV")
    assert len(pd.read_parquet(tmp_path / "oof.parquet")) == 8
    name, why = decided_network(final)
    assert name == "image_wide_cnn+fitted"
    assert why.startswith("auto: trained from scratch, no weights; image_wide_cnn+fitted")
    assert variant_context(final, name).section("train")["image"]["wide_fit"] == "fitted"


def test_same_seed_gives_the_same_network_metrics(image_shards, tmp_path):
    first, _ = _train(image_shards, dataset("image"), tmp_path, "image_cnn", fold=1, name="a")
    second, _ = _train(image_shards, dataset("image"), tmp_path, "image_cnn", fold=1, name="b")
    # stated tolerance: op determinism on one CPU build gives identical numbers; allow 1e-6
    for name, value in first["metrics"].items():
        assert second["metrics"][name] == pytest.approx(value, abs=1e-6)


@pytest.mark.seconds(25)
def test_transfer_learning_with_self_made_backbone_weights(image_shards, tmp_path):
    from dlworkflow.models.extractors import build_extractor

    backbone = build_extractor("mobilenet_v3_small", (32, 32, 3), "none")
    weights = tmp_path / "backbone.weights.h5"
    backbone.save_weights(weights)
    transfer = {"backbone": "mobilenet_v3_small", "weights": str(weights)}
    entry, out = _train(image_shards, dataset("image"), tmp_path, "image_transfer",
                        transfer=transfer, epochs=1, fine_tune_layers=3, fine_tune_epochs=1)
    assert entry["epochs_run"] == 2  # one head epoch, one fine-tuning epoch
    # the final step plans each phase apart; the fold's network holds the fine-tuning weights
    assert entry["fine_tune_from"] == 1 and entry["best_epoch"] == 2
    import keras

    from dlworkflow.models.networks import find_backbone

    loaded = find_backbone(keras.saving.load_model(out / "model.keras"))
    # the frozen part of the backbone still holds the self-made weights
    assert np.allclose(loaded.weights[0].numpy(), backbone.weights[0].numpy())


def test_image_transfer_enlarges_small_images_to_the_side_asked_for(tmp_path):
    """With train.transfer.side 224, 64-px photos reach the backbone at 224 px, after the
    augmentation and inside the network, with the pixels the features step gives the same
    backbone at features.side 224; unset, only images below the backbone's 32 px are
    enlarged, and larger images are never shrunk."""
    import keras

    from dlworkflow.models.extractors import as_rgb_batch, build_extractor
    from dlworkflow.models.networks import NetworkSpec, build_network, find_backbone
    from dlworkflow.tasks import get_task

    backbone = build_extractor("mobilenet_v3_small", (32, 32, 3), "none")
    weights = tmp_path / "backbone.weights.h5"
    backbone.save_weights(weights)

    def built(shape, **side):
        transfer = {"backbone": "mobilenet_v3_small", "weights": str(weights), **side}
        spec = NetworkSpec(task=get_task("classification"), input_shape=shape,
                           input_dtype="uint8", outputs=10, settings={"transfer": transfer},
                           seed=1)
        return build_network("image_transfer", spec)

    model = built((64, 64, 3), side=224)
    inner = find_backbone(model)
    assert inner.input_shape == (None, 224, 224, 3)
    assert find_backbone(built((64, 64, 3))).input_shape == (None, 64, 64, 3)
    assert find_backbone(built((16, 24, 1))).input_shape == (None, 32, 48, 3)
    assert find_backbone(built((48, 96, 1), side=96)).input_shape == (None, 96, 192, 3)
    assert find_backbone(built((256, 300, 3), side=224)).input_shape == (None, 256, 300, 3)
    x, _, _ = digits_images(6, size=64)  # real digits as 64-px RGB
    x = np.repeat(x, 3, axis=-1)
    resize = next(layer for layer in model.layers
                  if isinstance(layer, keras.layers.Resizing))
    seen = keras.Model(model.inputs, resize.output).predict(x, verbose=0)
    step = as_rgb_batch(x, "mobilenet_v3_small", 224)  # what the features step gives it
    assert seen.shape == step.shape == (6, 224, 224, 3)
    np.testing.assert_allclose(seen, step, atol=1e-3)


def test_audio_networks_read_waveforms_through_a_log_mel_front_end(tmp_path):
    """`tensors.audio.representation: waveform`: the shards hold real FSDD recordings' samples,
    and the default audio network reads them through a log-mel front end inside it (before,
    it failed on them: it unpacks bands, frames and channels). The front end floors each
    clip at its own loudest cell, so a clip's bands do not depend on the clips batched with
    it, and the saved network takes the samples."""
    import keras

    from dlworkflow.layers import WaveformLogMel
    from dlworkflow.modalities import create_modality

    files = sorted((SHARED_DATA / "fsdd" / "recordings").glob("*.wav"))[::50][:60]
    modality = create_modality("audio", {}, {"kind": "folders"})
    settings = {"sample_rate": 8000, "duration": 0.5, "n_mels": 32, "n_fft": 256,
                "hop_length": 80, "representation": "waveform"}
    x = np.stack([modality.tensorize(f.read_bytes(), Item(f.name, f.name), settings)
                  for f in files]).astype(np.float16)
    labels = np.array([f.name.split("_")[0] for f in files])
    folder = write_shards(tmp_path / "audio", x, labels, np.arange(len(files)) % 5)
    write_metric(folder, "classification", labels)
    out = tmp_path / "fold-0"
    train_fold(fold_context(dataset("audio"), folder, {
        "train": {**QUICK, "architecture": "auto"}, "augment": AUGMENT,
        "tensors": {"audio": settings}}, out), 0)
    _check_outputs(out, "audio_tcresnet")
    model = keras.saving.load_model(out / "model.keras")
    assert model.input_shape == (None, 4000, 1)
    front = next(layer for layer in model.layers if isinstance(layer, WaveformLogMel))
    clip = x[:1].astype(np.float32)
    alone = np.asarray(front(clip))
    beside_a_loud_one = np.asarray(front(np.concatenate([clip, 40 * x[1:2].astype(np.float32)])))
    assert alone.shape[:2] == (1, 32) and alone.shape[-1] == 1 and np.isfinite(alone).all()
    np.testing.assert_allclose(beside_a_loud_one[:1], alone, atol=1e-3)
    assert alone.max() - alone.min() <= 80.0 + 1e-3  # top_db below the clip's loudest cell
    assert np.isfinite(model.predict(clip, verbose=0)).all()


@pytest.mark.parametrize("architecture", ["audio_dscnn", "audio_cnn"])
def test_audio_networks_on_fsdd_spectrograms(tmp_path, architecture):
    x, labels, folds, _, _ = fsdd_spectrograms(60)
    folder = write_shards(tmp_path / "audio", x, labels, folds)
    write_metric(folder, "classification", labels)
    _, out = _train(folder, dataset("audio"), tmp_path, architecture)
    _check_outputs(out, architecture)
    import keras

    from dlworkflow.data import Part, load_arrays
    from dlworkflow.tasks import get_task

    model = keras.saving.load_model(out / "model.keras")
    normaliser = next(layer for layer in model.layers
                      if isinstance(layer, keras.layers.Normalization))
    train = load_arrays(Part(get_task("classification"), folder, 0, "train"))["x"]
    train = train.astype(np.float32)
    everything = x.astype(np.float32)
    adapted = np.ravel(normaliser.mean)
    # adapted on fold-train rows only: per-band means of those rows, not of all rows
    assert np.allclose(adapted, train.mean(axis=(0, 2, 3)), atol=1e-2)
    assert not np.allclose(adapted, everything.mean(axis=(0, 2, 3)), atol=1e-2)


@pytest.mark.parametrize("architecture", ["text_wide_cnn", "text_cnn", "text_bigru",
                                          "text_transformer"])
def test_text_networks_take_raw_strings(tmp_path, architecture):
    texts, labels, folds = sms_texts(150)
    folder = write_shards(tmp_path / "text", texts, labels, folds)
    write_metric(folder, "classification", labels)
    entry, out = _train(folder, dataset("text", layout="delimited"), tmp_path, architecture)
    _check_outputs(out, architecture)
    assert "f_beta" in entry["metrics"]
    import warnings

    import keras

    with warnings.catch_warnings(record=True) as caught:  # every layer builds its weights
        warnings.simplefilter("always")
        model = keras.saving.load_model(out / "model.keras")
    assert not [str(w.message) for w in caught if "unbuilt state" in str(w.message)]
    import tensorflow as tf

    scores = model.predict(tf.constant(["Free entry! call now to win a prize", "see you at 6"]),
                           verbose=0)
    assert scores.shape == (2, 2) and np.allclose(scores.sum(axis=1), 1, atol=1e-5)
    assert (frozen_linear_view(model) is None) == (architecture != "text_wide_cnn")


@pytest.mark.parametrize(("source", "weights"), [("sms", "auto"), ("trec", True)])
def test_wide_cnn_starts_at_the_folds_nb_lr(tmp_path, source, weights):
    """The linear part of text_wide_cnn is the step-2 baseline's regression of the fold's
    training rows on the network's own TF-IDF features: NB-LR for SMS's two classes, and
    with `wide_nb_weights: true` one NB-LR a class for TREC's six (logits through a
    log-sigmoid); the CNN's logits start at zero, so an untrained network (learning rate
    ~0) predicts the probabilities that regression predicts, saved and reloaded."""
    import keras
    import tensorflow as tf

    from dlworkflow.estimators import NBLogisticRegression

    if source == "sms":
        texts, labels, folds = sms_texts(300)
    else:
        texts, labels = trec_texts(400)
        folds = np.arange(len(texts)) % 5
    folder = write_shards(tmp_path / "text", texts, labels, folds)
    write_metric(folder, "classification", labels)
    _, out = _train(folder, dataset("text", layout="delimited"), tmp_path, "text_wide_cnn",
                    epochs=1, learning_rate=1e-12,
                    text={**QUICK["text"], "wide_nb_weights": weights})
    model = keras.saving.load_model(out / "model.keras")
    assert not model.get_layer("linear_logits").trainable
    features = keras.Model(model.inputs, model.get_layer("tfidf").output)
    train = [t for t, f in zip(texts, folds, strict=True) if f != 0]
    held_out = [t for t, f in zip(texts, folds, strict=True) if f == 0]
    regression = NBLogisticRegression(C=10.0, nb_weights=weights).fit(
        features.predict(tf.constant(train), verbose=0), labels[folds != 0])
    assert regression.one_vs_rest_ == (source == "trec")
    expected = regression.predict_proba(features.predict(tf.constant(held_out), verbose=0))
    order = [json.loads((out / "model.json").read_text())["classes"].index(str(label))
             for label in regression.classes_]
    scores = model.predict(tf.constant(held_out), verbose=0)[:, order]
    assert np.abs(scores - expected).max() < 1e-3
    assert len(set(expected.argmax(axis=1))) > 1  # a real model: not one class for all
    # column 0 of TextVectorization's TF-IDF (the unseen terms' count) neither reaches the
    # features nor shrinks them
    from dlworkflow.layers import KnownTermsUnitNorm

    scaled = np.asarray(KnownTermsUnitNorm()(np.array([[50.0, 3.0, 4.0], [0.0, 0.0, 0.0]])))
    assert np.allclose(scaled, [[0.6, 0.8], [0.0, 0.0]])


def test_the_frozen_linear_part_is_computed_once_and_trains_the_same_network(sms_shards,
                                                                             tmp_path,
                                                                             monkeypatch):
    """text_wide_cnn trains on its frozen linear part's logits computed once per row, not
    in every step, and ends with the network that computing them in every step trains:
    the same frozen part, the same learning curve and the same predictions from raw strings
    (up to float rounding: a matrix product's last bits depend on how many rows it takes at
    once). Networks without a frozen part train as before."""
    import keras
    import tensorflow as tf

    import dlworkflow.models.networks as networks

    texts, _, folds = sms_texts(300)  # sms_shards' rows
    folder = sms_shards
    ds = dataset("text", layout="delimited")
    computed = []
    real = networks.frozen_linear_view

    def counting(model, vectors=None):
        view = real(model, vectors)
        computed.append(view is not None)
        return view

    in_sample = {**QUICK["text"], "wide_crossfit": 0}  # both train on the same logits
    monkeypatch.setattr(networks, "frozen_linear_view", counting)
    once, out = _train(folder, ds, tmp_path, "text_wide_cnn", name="once", epochs=3, patience=3,
                       text=in_sample)
    monkeypatch.setattr(networks, "frozen_linear_view", lambda model, vectors=None: None)
    every, every_out = _train(folder, ds, tmp_path, "text_wide_cnn", name="every", epochs=3,
                              patience=3, text=in_sample)
    assert computed == [True]
    assert once["best_epoch"] == every["best_epoch"] and once["epochs_run"] == every["epochs_run"] == 3
    curves = [pd.read_csv(o / "history.csv") for o in (out, every_out)]
    assert np.allclose(curves[0]["val_loss"], curves[1]["val_loss"], rtol=1e-4)
    assert curves[0]["val_loss"].iloc[-1] < curves[0]["val_loss"].iloc[0]  # it learned
    models = [keras.saving.load_model(o / "model.keras") for o in (out, every_out)]
    assert [type(layer) for layer in models[0].layers] == [type(layer) for layer in models[1].layers]
    frozen = [m.get_layer("linear_logits").get_weights() for m in models]
    assert all(np.array_equal(a, b) for a, b in zip(*frozen, strict=True))
    held_out = tf.constant([t for t, f in zip(texts, folds, strict=True) if f == 0])
    scores = [m.predict(held_out, verbose=0) for m in models]
    assert np.abs(scores[0] - scores[1]).max() < 1e-4
    rows = [pd.read_parquet(o / "predictions.parquet") for o in (out, every_out)]
    assert rows[0]["id"].tolist() == rows[1]["id"].tolist()
    # the view computes what the exported network computes, from the same layers
    view, compute = real(models[0])
    both = view.predict([held_out, compute(held_out.numpy())], verbose=0)
    assert np.abs(both - scores[0]).max() < 1e-5
    assert {id(w) for w in view.trainable_weights} == {id(w) for w in models[0].trainable_weights}


@pytest.mark.parametrize("source", ["sms", "trec"])
def test_crossfit_logits_score_each_row_with_a_regression_that_did_not_fit_it(source):
    """Each row's cross-fitted logits are those of the step-2 regression fitted on the other
    parts (stratified): for two classes softmax(-z/2, z/2) is NB-LR's probability, for TREC's
    six one regression against the rest through a log-sigmoid. Out of fold they separate the
    rows far less well than the regression of all rows, which fits them almost perfectly."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.model_selection import StratifiedKFold

    from dlworkflow.estimators import NBLogisticRegression
    from dlworkflow.models.networks import _linear_weights, crossfit_logits

    texts, labels = sms_texts(300)[:2] if source == "sms" else trec_texts(400)
    labels = np.unique(labels, return_inverse=True)[1]
    weights = "auto" if source == "sms" else True
    classes = int(labels.max()) + 1
    matrix = TfidfVectorizer(ngram_range=(1, 2)).fit_transform(texts).tocsr()
    logits = crossfit_logits(matrix, labels, classes, 10.0, weights, 3, seed=7)
    assert logits.shape == (len(labels), classes) and logits.dtype == np.float32
    parts = StratifiedKFold(3, shuffle=True, random_state=7).split(np.zeros(len(labels)), labels)
    for fit, held in parts:
        regression = NBLogisticRegression(C=10.0, nb_weights=weights).fit(matrix[fit],
                                                                          labels[fit])
        scores = np.exp(logits[held])
        if source == "trec":  # the sigmoids normalised to sum 1, as predict_proba gives
            assert regression.one_vs_rest_
        assert np.abs(scores / scores.sum(axis=1, keepdims=True)
                      - regression.predict_proba(matrix[held])).max() < 1e-4
    kernel, bias, activation = _linear_weights(matrix, labels, classes, 10.0, weights)
    fitted = np.asarray(matrix @ kernel) + bias
    assert (activation == "log_sigmoid") == (source == "trec")
    in_sample = (fitted.argmax(axis=1) == labels).mean()
    out_of_fold = (logits.argmax(axis=1) == labels).mean()
    assert in_sample > 0.99 and out_of_fold < in_sample - 0.05, (in_sample, out_of_fold)


def test_the_deep_part_trains_on_cross_fitted_linear_logits(sms_shards, tmp_path, monkeypatch):
    """text_wide_cnn's deep part trains on the training rows' cross-fitted linear logits
    (`train.text.wide_crossfit`), so at the first epoch the network is as accurate on its
    training rows as the regression is out of fold, not the ~100 % of a regression scoring
    the rows it fitted (0 or 1 parts: that old way). The exported linear part is the
    regression of all training rows either way."""
    import keras

    import dlworkflow.models.networks as networks

    folds, folder = sms_texts(300)[2], sms_shards
    ds = dataset("text", layout="delimited")
    calls = []
    real = networks.crossfit_logits

    def recording(matrix, labels, *args):
        calls.append((matrix.shape[0], *args))
        return real(matrix, labels, *args)

    monkeypatch.setattr(networks, "crossfit_logits", recording)
    accuracy, frozen = {}, {}
    for parts in (5, 0):
        _, out = _train(folder, ds, tmp_path, "text_wide_cnn", name=f"parts{parts}", epochs=1,
                        learning_rate=1e-12, text={**QUICK["text"], "wide_crossfit": parts})
        accuracy[parts] = pd.read_csv(out / "history.csv")["accuracy"].iloc[0]
        model = keras.saving.load_model(out / "model.keras")
        frozen[parts] = model.get_layer("linear_logits").get_weights()
    assert calls == [(int((folds != 0).sum()), 2, 10.0, "auto", 5, 5)]  # the fold's seed
    assert accuracy[0] > 0.99 and accuracy[5] < accuracy[0] - 0.02, accuracy
    assert all(np.array_equal(a, b) for a, b in zip(frozen[5], frozen[0], strict=True))


def test_streamed_rows_train_on_the_full_regressions_logits_and_say_so(sms_shards, tmp_path,
                                                                       monkeypatch, caplog):
    """Cross-fitted logits need the training rows in RAM (they are fed beside each row);
    streamed rows train the whole network as it is, and the log says the setting went
    unused. Streamed texts reach the linear part's regression as texts, not as the UTF-8
    bytes TensorFlow gives back (SMS's "£" made that fail before)."""
    import dlworkflow.train as train

    monkeypatch.setattr(train, "IN_MEMORY_BYTES", 0)  # every shard streams
    folds, folder = sms_texts(300)[2], sms_shards
    with caplog.at_level("INFO", logger="dlworkflow.train"):
        details, out = _train(folder, dataset("text", layout="delimited"), tmp_path,
                              "text_wide_cnn", epochs=1,
                              text={**QUICK["text"], "wide_crossfit": 5})
    assert "streamed" in caplog.text and "wide_crossfit" in caplog.text
    assert "computed once per row" not in caplog.text
    assert details["train_rows"] == int((folds != 0).sum()) and (out / "model.keras").is_file()


@pytest.mark.parametrize("architecture", ["image_wide_cnn", "image_transfer"])
@pytest.mark.parametrize("fit", ["fitted", "joint"])
def test_image_classifiers_have_a_linear_part_on_the_baselines_standardised_pixels(
        image_shards, tmp_path, architecture, fit):
    """image_wide_cnn's and image_transfer's linear part sees what the step-2 logistic
    regression sees (pixels averaged down to 16 a side, standardised with the fold's training
    rows). `fitted`: it is that regression, fitted on the fold's training rows
    (C 1.0, as baseline.C) and frozen, so the untrained network predicts what logistic
    regression predicts; the deep part trains on the training rows' cross-fitted logits, so
    at the first epoch it is as accurate on its training rows as the regression out of fold,
    not as the regression on the rows it fitted. `joint` (the default): trained with the convolutions or
    the backbone's head, both parts' logits starting at zero (untrained: every class even)."""
    import keras
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from dlworkflow.modalities import create_modality
    from dlworkflow.models.networks import find_backbone

    _, out = _train(image_shards, dataset("image"), tmp_path, architecture, epochs=1,
                    learning_rate=1e-12, image={"wide_fit": fit})
    model = keras.saving.load_model(out / "model.keras")
    assert model.get_layer("linear_logits").trainable == (fit == "joint")
    assert model.get_layer("cnn_logits")
    # a trained linear part is not computed once; a frozen one is (image_transfer's is too,
    # in a model with the backbone inside it)
    assert (frozen_linear_view(model) is None) == (fit == "joint")
    if architecture == "image_transfer":  # beside the frozen backbone's head
        assert not find_backbone(model).trainable
    x, labels, folds = digits_images(200)  # the shards' images
    flat = create_modality("image", {}, {"kind": "folders"}).flat(x, {})
    assert flat.shape[1] == 16 * 16  # 32-px grayscale digits averaged in 2x2 blocks
    scaler = StandardScaler().fit(flat[folds != 0])
    standard = keras.Model(model.inputs, model.get_layer("standardise").output)
    assert np.abs(standard.predict(x[folds == 0], verbose=0)
                  - scaler.transform(flat[folds == 0])).max() < 1e-3
    predicted = model.predict(x[folds == 0], verbose=0)
    if fit == "joint":
        assert np.allclose(predicted, 0.1, atol=1e-4)
        return
    regression = LogisticRegression(C=1.0, max_iter=2000).fit(
        scaler.transform(flat[folds != 0]), labels[folds != 0])
    expected = regression.predict_proba(scaler.transform(flat[folds == 0]))
    assert np.abs(predicted - expected).max() < 0.02
    in_sample = regression.score(scaler.transform(flat[folds != 0]), labels[folds != 0])
    _, whole = _train(image_shards, dataset("image"), tmp_path, architecture, name="whole",
                      epochs=1, learning_rate=1e-12, image={"wide_fit": "fitted", "wide_crossfit": 0})
    first_epoch = {name: pd.read_csv(folder / "history.csv")["accuracy"].iloc[0]
                   for name, folder in (("crossfit", out), ("whole", whole))}
    assert in_sample == first_epoch["whole"] == 1.0, (in_sample, first_epoch)
    assert first_epoch["crossfit"] < 0.99, first_epoch


def test_networks_from_scratch_average_large_images_down_before_their_convolutions(tmp_path):
    """64-px digits (RGB): image_wide_cnn's convolutions see them averaged in 2x2 blocks
    (`train.image.conv_pixels`: 32), after which the augmentation runs; the saved model still
    takes 64-px images, its linear part still sees the baseline's 16-px features, and the card
    says so. `conv_pixels: 0` keeps every pixel; the factor is the smallest whole one that
    leaves at most `conv_pixels` on the longer side."""
    import keras

    from dlworkflow.models.networks import image_pixels_factor

    x, labels, folds = digits_images(120, size=64)
    x = np.repeat(x, 3, axis=-1)
    folder = write_shards(tmp_path / "big", x, labels, folds)
    write_metric(folder, "classification", labels)
    _, out = _train(folder, dataset("image"), tmp_path, "image_wide_cnn")
    _check_outputs(out, "image_wide_cnn")
    card = json.loads((out / "model.json").read_text())
    assert ("64x64 images averaged down by 2 to 32x32 inside the network"
            in card["architecture_reason"])
    model = keras.saving.load_model(out / "model.keras")
    assert tuple(model.inputs[0].shape[1:]) == (64, 64, 3)
    pooled = keras.Model(model.inputs, model.get_layer("average_down").output)
    sample = x[folds == 0][:5]
    expected = sample.astype(np.float32).reshape(5, 32, 2, 32, 2, 3).mean(axis=(2, 4))
    assert np.allclose(pooled.predict(sample, verbose=0), expected, atol=1e-3)
    assert model.get_layer("standardise").output.shape[-1] == 16 * 16 * 3
    _, whole = _train(folder, dataset("image"), tmp_path, "image_wide_cnn", name="whole",
                      image={"conv_pixels": 0})
    model = keras.saving.load_model(whole / "model.keras")
    assert "average_down" not in [layer.name for layer in model.layers]
    assert "averaged down" not in json.loads((whole / "model.json").read_text())[
        "architecture_reason"]
    for shape, settings, factor in (((32, 32, 1), {}, 1), ((33, 20, 1), {}, 2),
                                    ((100, 100, 3), {}, 4), ((28, 224, 3), {}, 7),
                                    ((64, 64, 1), {"conv_pixels": None}, 1),
                                    ((64, 64, 1), {"conv_pixels": 64}, 1)):
        assert image_pixels_factor(shape, {"image": settings}) == factor


def test_the_head_on_cached_embeddings_has_the_linear_part_on_pixels_for_classes_only():
    """Given the fold's images, the head on cached embeddings (`features.extractor`) takes
    them beside the embeddings, and its linear part on their standardised, averaged pixels
    and its own logits both start at zero, as image_transfer's do; a regression's head, or
    one given no images, takes the embeddings alone."""
    from dataclasses import replace

    import keras
    from sklearn.preprocessing import StandardScaler

    from dlworkflow.modalities import create_modality
    from dlworkflow.models.networks import NetworkSpec, embedding_head
    from dlworkflow.tasks import get_task

    x, _, folds = digits_images(100)
    train = x[folds != 0]
    embeddings = np.random.default_rng(0).normal(size=(len(x), 24)).astype("float32")
    for task, outputs in (("classification", 10), ("regression", 1)):
        pixels = NetworkSpec(task=get_task(task), input_shape=x.shape[1:], input_dtype="uint8",
                             outputs=outputs, settings={}, seed=1, fit_rows=lambda: (train, None))
        spec = replace(pixels, input_shape=(24,), input_dtype="float32", fit_rows=None)
        assert len(embedding_head(spec).inputs) == 1
        head = embedding_head(spec, pixels)
        if task == "regression":
            assert len(head.inputs) == 1
            continue
        assert [tuple(i.shape[1:]) for i in head.inputs] == [(24,), x.shape[1:]]
        flat = create_modality("image", {}, {"kind": "folders"}).flat(x, {})
        expected = StandardScaler().fit(flat[folds != 0]).transform(flat[folds == 0])
        standard = keras.Model(head.inputs, head.get_layer("standardise").output)
        rows = [embeddings[folds == 0], x[folds == 0]]
        assert np.abs(standard.predict(rows, verbose=0) - expected).max() < 1e-3
        assert np.allclose(head.predict(rows, verbose=0), 0.1, atol=1e-6)  # every class even


def test_the_head_on_cached_embeddings_trains_beside_a_fitted_regression_on_pixels():
    """`train.image.wide_fit: fitted` on the head on cached embeddings: its linear part is
    the fold's logistic regression on the standardised pixels, frozen (the untrained head
    predicts its probabilities), and the head trains on the embeddings beside the
    regression's logits (`frozen_linear_view`: the training rows' own cross-fitted, five
    parts), which it computes once from the images."""
    from dataclasses import replace

    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from dlworkflow.modalities import create_modality
    from dlworkflow.models.networks import NetworkSpec, embedding_head
    from dlworkflow.tasks import get_task

    x, labels, folds = digits_images(100)
    train = folds != 0
    embeddings = np.random.default_rng(0).normal(size=(len(x), 24)).astype("float32")
    pixels = NetworkSpec(task=get_task("classification"), input_shape=x.shape[1:],
                         input_dtype="uint8", outputs=10,
                         settings={"image": {"wide_fit": "fitted"}}, seed=1,
                         fit_rows=lambda: (x[train], labels[train]))
    spec = replace(pixels, input_shape=(24,), input_dtype="float32", fit_rows=None)
    head = embedding_head(spec, pixels)
    assert not head.get_layer("linear_logits").trainable
    assert pixels.extra["training_logits"].shape == (int(train.sum()), 10)
    flat = create_modality("image", {}, {"kind": "folders"}).flat(x, {})
    scaler = StandardScaler().fit(flat[train])
    regression = LogisticRegression(C=1.0, max_iter=2000).fit(scaler.transform(flat[train]),
                                                              labels[train])
    rows = [embeddings[~train], x[~train]]
    expected = regression.predict_proba(scaler.transform(flat[~train]))
    assert np.abs(head.predict(rows, verbose=0) - expected).max() < 0.02
    fit_model, compute = frozen_linear_view(head)
    assert [tuple(i.shape[1:]) for i in fit_model.inputs] == [(24,), (10,)]
    logits = compute(x[~train])
    assert np.abs(logits - regression.decision_function(scaler.transform(flat[~train]))
                  ).max() < 0.05
    # the training model on the embeddings and those logits predicts what the head does
    assert np.allclose(fit_model.predict([embeddings[~train], logits], verbose=0),
                       head.predict(rows, verbose=0), atol=1e-5)


def test_glove_vectors_initialise_the_embedding(tmp_path, caplog):
    texts, labels, folds = sms_texts(100)
    folder = write_shards(tmp_path / "text", texts, labels, folds)
    write_metric(folder, "classification", labels)
    vectors = tmp_path / "glove.txt"
    vectors.write_text("call " + " ".join(["0.5"] * 8) + "\nfree " + " ".join(["-0.5"] * 8) + "\n")
    text = {**QUICK["text"], "pretrained_vectors": str(vectors)}
    with caplog.at_level("INFO", logger="dlworkflow.models.networks"):
        _, out = _train(folder, dataset("text", layout="delimited"), tmp_path, "text_cnn",
                        text=text, epochs=1, learning_rate=1e-9)
    import keras

    model = keras.saving.load_model(out / "model.keras")
    vocabulary = model.layers[1].get_vocabulary()
    table = model.get_layer("embedding").embeddings.numpy()
    assert np.allclose(table[vocabulary.index("call")], 0.5, atol=1e-3)
    # the log says how much of the vocabulary the file covered
    words = len(vocabulary) - 2  # padding and [UNK] aside
    assert f"2 of the {words} words of the fold's vocabulary found" in caplog.text


def test_series_fcn_classifies_digit_rows_as_series(tmp_path):
    x, labels, folds = digits_images(150, size=8)
    series = x.reshape(len(x), 64, 1).astype(np.float32)  # each 8x8 scan as a 64-step series
    folder = write_shards(tmp_path / "series", series, labels, folds)
    write_metric(folder, "classification", labels)
    _, out = _train(folder, dataset("timeseries", layout="wide_csv"), tmp_path, "series_fcn")
    _check_outputs(out, "series_fcn")
    import keras

    model = keras.saving.load_model(out / "model.keras")  # 64 steps: every one convolved
    assert "average_down" not in [layer.name for layer in model.layers]
    assert "averaged down" not in json.loads((out / "model.json").read_text())[
        "architecture_reason"]


def test_series_fcn_averages_a_long_series_down_before_its_convolutions(tmp_path):
    """The same 64-step series with `train.series.network_steps: 20`: averaged down by 4 (the
    smallest whole factor leaving at most 20) to 16 steps inside the saved model, whose
    card says so; the first convolution sees the block means of the standardised series."""
    import keras

    x, labels, folds = digits_images(150, size=8)
    series = x.reshape(len(x), 64, 1).astype(np.float32)
    folder = write_shards(tmp_path / "series", series, labels, folds)
    write_metric(folder, "classification", labels)
    _, out = _train(folder, dataset("timeseries", layout="wide_csv"), tmp_path, "series_fcn",
                    series={"network_steps": 20})
    _check_outputs(out, "series_fcn")
    card = json.loads((out / "model.json").read_text())
    assert "series of 64 steps averaged down by 4 to 16" in card["architecture_reason"]
    model = keras.saving.load_model(out / "model.keras")
    pooled = keras.Model(model.inputs, model.get_layer("average_down").output)
    before = keras.Model(model.inputs, model.get_layer("average_down").input)
    sample = series[folds == 0][:5]
    down, full = pooled.predict(sample, verbose=0), before.predict(sample, verbose=0)
    assert down.shape == (5, 16, 2) and full.shape == (5, 64, 2)
    assert np.allclose(down, full.reshape(5, 16, 4, 2).mean(axis=2), atol=1e-5)


@pytest.mark.parametrize("architecture", ["forecast_cnn", "forecast_lstm"])
def test_forecasters_predict_the_whole_horizon_on_co2(tmp_path, architecture):
    folder = write_windows(tmp_path / "co2")
    entry, out = _train(folder, dataset("timeseries", "forecasting", "long_csv"), tmp_path,
                        architecture, fold=2)
    _check_outputs(out, architecture)
    frame = pd.read_parquet(out / "predictions.parquet")
    assert frame["step"].max() == 13 and np.isfinite(frame["y_pred"]).all()
    # predictions are anchored on the last observed value, so even two epochs are in range
    assert entry["metrics"]["mase"] < 10


@pytest.mark.parametrize("season", [52, 1])
def test_an_untrained_forecaster_is_the_seasonal_naive_forecast(co2_csv, tmp_path, season):
    """Real co2 windows (104 weeks in, 13 out): before any training the global forecaster's
    output is the seasonal-naive forecast (the value a year before each target), or the
    naive one (the last value) with season 1, and a saved model keeps it."""
    import io

    import keras

    from dlworkflow.models.networks import NetworkSpec, build_network
    from dlworkflow.tasks import get_task

    values = pd.read_csv(io.BytesIO(co2_csv))["co2"].interpolate().to_numpy()
    x = np.stack([values[start: start + 104] for start in (0, 500, 1500)])[..., None]
    spec = NetworkSpec(task=get_task("forecasting"), input_shape=(104, 1),
                       input_dtype="float32", outputs=13, settings={}, seed=1,
                       extra={"season": season})
    model = build_network("forecast_cnn", spec)
    want = x[:, 104 - 52: 104 - 52 + 13, 0] if season == 52 else np.repeat(x[:, -1], 13, 1)
    np.testing.assert_allclose(model.predict(x, verbose=0), want, rtol=1e-5)
    model.save(tmp_path / "model.keras")
    again = keras.saving.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(again.predict(x, verbose=0), want, rtol=1e-5)


def test_predict_reads_known_future_covariates_after_each_series_last_value(co2_csv, tmp_path):
    """A forecaster with known-future covariates (`tensors.timeseries.known_future`): the
    real co2 series with two calendar columns known in advance and a past-only one, as a
    `long_csv` file whose last 13 rows leave the target empty and give the calendar. Predict
    feeds the model the last 104 observed steps of the target and the past-only column and
    the 13 calendar rows after them, exactly as a hand-made batch does; a file without those
    rows, or with a gap in them, or without a known column, gets a message naming the
    series and what it lacks. Before, predict refused every such model."""
    import keras

    from dlworkflow.errors import CannotPredict
    from dlworkflow.models.networks import NetworkSpec, build_network
    from dlworkflow.predict import predict
    from dlworkflow.tasks import get_task

    frame = pd.read_csv(io.BytesIO(co2_csv)).iloc[:600]
    day = pd.to_datetime(frame["date"]).dt.day_of_year.to_numpy()
    frame["season_sin"], frame["season_cos"] = np.sin(day / 58.1), np.cos(day / 58.1)
    frame["smooth"] = frame["co2"].interpolate().rolling(8, min_periods=1).mean()
    frame.loc[len(frame) - 13:, ["co2", "smooth"]] = np.nan  # the horizon: targets unknown
    known = ["season_sin", "season_cos"]
    spec = NetworkSpec(task=get_task("forecasting"), input_shape=(104, 2), input_dtype="float32",
                       outputs=13, settings={"units": 8}, seed=1, extra={"season": 52},
                       future_shape=(13, 2))
    model = build_network("forecast_cnn", spec)
    # the deep part's last Dense starts at zero: give it weights, so the future counts
    deep = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)][-1]
    deep.set_weights([np.random.default_rng(0).normal(0, 0.1, w.shape) for w in deep.get_weights()])
    out = tmp_path / "model"
    out.mkdir()
    model.save(out / "model.keras")
    layout = {"kind": "long_csv", "file": "co2.csv", "timestamp": "date", "target": "co2",
              "exogenous": [*known, "smooth"]}
    (out / "model.json").write_text(json.dumps({
        "modality": "timeseries", "task": "forecasting", "classes": [], "layout": layout,
        "horizon": 13, "tensors": {"lookback": 104, "known_future": known,
                                   "missing": "interpolate"}}))
    path = tmp_path / "co2.csv"
    frame.to_csv(path, index=False)
    table = predict(out, [path])
    past = frame[["co2", "smooth"]].iloc[len(frame) - 13 - 104: len(frame) - 13]
    want = model.predict({"past": past.interpolate().to_numpy(np.float32)[None],
                          "future": frame[known].tail(13).to_numpy(np.float32)[None]}, verbose=0)
    assert table.columns.tolist() == ["input", *(f"step_{k}" for k in range(1, 14))]
    np.testing.assert_allclose(table.iloc[0, 1:].to_numpy(float), want[0], rtol=1e-5)
    calendar_only = frame.copy()
    calendar_only[known] = 0.0
    calendar_only.to_csv(tmp_path / "flat.csv", index=False)
    flat = predict(out, [tmp_path / "flat.csv"]).iloc[0, 1:].to_numpy(float)
    assert np.abs(flat - want[0]).max() > 1e-3  # the calendar rows reach the model
    cases = {"short": (frame.iloc[:-5], "found 8 such rows"),
             "gap": (frame.assign(season_cos=frame["season_cos"].where(frame.index != 595)),
                     "found 13 such rows, 1 with a gap"),
             "none": (frame.iloc[:-13], "found 0 such rows")}
    for name, (data, said) in cases.items():
        data.to_csv(tmp_path / f"{name}.csv", index=False)
        with pytest.raises(CannotPredict, match=said):
            predict(out, [tmp_path / f"{name}.csv"])
    frame.drop(columns="season_cos").to_csv(tmp_path / "lacking.csv", index=False)
    with pytest.raises(Exception, match="season_cos"):
        predict(out, [tmp_path / "lacking.csv"])


RESUMABLE = """
import json, sys
import logging
from pathlib import Path
from dlworkflow.train import train_fold
from tests.helpers.shards import fold_context
logging.basicConfig(level=logging.INFO)
settings = json.loads(sys.argv[2])
train_fold(fold_context({"modality": "image", "task": "classification",
                         "layout": {"kind": "folders"}}, Path(sys.argv[1]),
                        {"train": settings}, Path(sys.argv[3]), threads=1), 0)
"""


def _kill_after_epochs(command: list[str], history: Path, epochs: int) -> int:
    """Start a training job, SIGKILL it once `history` has `epochs` rows; rows written."""
    import os
    import signal
    import time

    job = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and job.poll() is None:
        if history.exists() and len(history.read_text().splitlines()) >= epochs + 1:
            break
        time.sleep(0.05)
    assert job.poll() is None, "training finished before it could be killed; make it longer"
    os.kill(job.pid, signal.SIGKILL)  # mid-epoch, no chance to clean up
    job.wait()
    return len(history.read_text().splitlines()) - 1


def _weights(path: Path) -> list:
    import keras

    return [w for w in keras.saving.load_model(path).get_weights()]


@pytest.mark.seconds(35)
@pytest.mark.parametrize("schedule", ["cosine", "plateau"])
def test_a_killed_training_job_resumes_as_if_never_stopped(image_shards, tmp_path, schedule):
    # dropout and augmentation draw random numbers, the data are reshuffled every epoch,
    # and the plateau schedule keeps counters: all of it must come back from the backup
    settings = {**QUICK, "architecture": "image_cnn", "epochs": 25, "patience": 25,
                "checkpoint_seconds": 0, "schedule": schedule}
    out = tmp_path / "killed" / "nn" / "fold-0"
    command = [sys.executable, "-c", RESUMABLE, str(image_shards), json.dumps(settings), str(out)]
    state = backup_dir(out) / "train-state" / "history.csv"
    before = _kill_after_epochs(command, state, 3)
    assert not (out / "model.keras").exists()
    assert backup_dir(out).is_dir()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming from the state" in done.stderr and "discarded" not in done.stderr
    # the history holds every epoch once, those before the kill included, and the best epoch
    # and epochs run are read from all of them (they feed final.epochs: auto)
    history = pd.read_csv(out / "history.csv")
    assert history["epoch"].tolist() == list(range(1, 26)) and before >= 3
    card = json.loads((out / "model.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())["models"]["image_cnn"]
    assert card["best_epoch"] == int(history["val_loss"].idxmin()) + 1 == metrics["best_epoch"]
    assert metrics["epochs_run"] == 25
    assert (out / "model.keras").is_file() and not backup_dir(out).exists()
    # and everything equals an uninterrupted run, bit for bit
    clean = tmp_path / "clean" / "nn" / "fold-0"
    command[-1] = str(clean)
    subprocess.run(command, cwd=REPO, capture_output=True, check=True)
    assert (out / "history.csv").read_bytes() == (clean / "history.csv").read_bytes()
    assert (out / "predictions.parquet").read_bytes() == (clean / "predictions.parquet").read_bytes()
    for got, want in zip(_weights(out / "model.keras"), _weights(clean / "model.keras"),
                         strict=True):
        assert np.array_equal(got, want)
    assert (out / "metrics.json").read_bytes() == (clean / "metrics.json").read_bytes()
    assert (out / "model.keras").read_bytes() == (clean / "model.keras").read_bytes()


def test_a_resume_state_made_with_other_params_is_discarded(image_shards, tmp_path):
    settings = {**QUICK, "architecture": "image_cnn", "epochs": 12, "patience": 12,
                "checkpoint_seconds": 0}
    out = tmp_path / "nn" / "fold-0"
    command = [sys.executable, "-c", RESUMABLE, str(image_shards), json.dumps(settings), str(out)]
    _kill_after_epochs(command, backup_dir(out) / "train-state" / "history.csv", 2)
    changed = {**settings, "learning_rate": settings["learning_rate"] / 3}
    command[4] = json.dumps(changed)
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "discarded the resume state" in done.stderr and "resuming" not in done.stderr
    history = pd.read_csv(out / "history.csv")
    assert history["epoch"].tolist() == list(range(1, 13))
    # every epoch ran at the new rate: warm-up then cosine from the new peak
    assert history["learning_rate"].max() == pytest.approx(changed["learning_rate"], rel=1e-5)


def test_regression_outputs_are_in_the_targets_units(tmp_path):
    from dlworkflow.baselines import run_baseline_fold

    x, labels, folds = digits_images(200)
    values = labels.astype(float) * 10.0 + 100.0  # a numeric target far from 0 and 1
    folder = write_shards(tmp_path / "reg", x, values, folds)
    write_metric(folder, "regression")
    entry, out = _train(folder, dataset("image", "regression"), tmp_path, "image_cnn",
                        epochs=2)
    frame = pd.read_parquet(out / "predictions.parquet")
    # the output layer is scaled by the fold's target mean and std: predictions start in range
    assert 60 < frame["y_pred"].mean() < 150 and set(entry["metrics"]) == {"rmse", "mae"}
    baseline = {"knn_neighbors": 3, "image": {"pixels": 8}}
    models = run_baseline_fold(fold_context(dataset("image", "regression"), folder,
                                            {"baseline": baseline, "tensors": {}},
                                            tmp_path / "baseline", seed=1), 0)
    assert models["ridge"]["metrics"]["rmse"] < np.std(values)  # learns something


MIRRORED = """
import json, os, sys
os.environ["DLWORKFLOW_CPU_DEVICES"] = "2"
import logging
from pathlib import Path
from dlworkflow.train import train_fold
from tests.helpers.shards import fold_context
logging.basicConfig(level=logging.INFO)
settings = json.loads(sys.argv[2])
details = train_fold(fold_context({"modality": "image", "task": "classification",
                                   "layout": {"kind": "folders"}}, Path(sys.argv[1]),
                                  {"train": settings}, Path(sys.argv[3])), 0)
print(json.dumps(details))
"""


def test_two_devices_train_with_a_mirrored_strategy(image_shards, tmp_path):
    """The CPU split into two logical devices stands in for two GPUs: the network trains
    with MirroredStrategy, each replica gets batch_size rows (global batch 2x), and its
    training loss falls (real digits, 160 training images)."""
    settings = {**QUICK, "architecture": "image_cnn", "epochs": 8, "patience": 8, "filters": 16,
                "units": 32, "dropout": 0.0}
    out = tmp_path / "mirrored" / "fold-0"
    done = subprocess.run([sys.executable, "-c", MIRRORED, str(image_shards), json.dumps(settings),
                           str(out)], cwd=REPO, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    details = json.loads(done.stdout.strip().splitlines()[-1])
    assert details["replicas"] == 2 and details["global_batch_size"] == 2 * QUICK["batch_size"]
    history = pd.read_csv(out / "history.csv")
    assert len(history) == 8
    assert history["loss"].iloc[-1] < 0.95 * history["loss"].iloc[0], history["loss"].tolist()
    assert history["accuracy"].iloc[-1] > 0.2  # ten classes: chance is 0.1
    assert (out / "model.keras").is_file()
    # one device (the default here) trains the same network on a single replica
    single, _ = _train(image_shards, dataset("image"), tmp_path, "image_cnn", epochs=1, patience=1)
    assert single["replicas"] == 1 and single["global_batch_size"] == QUICK["batch_size"]


def test_the_step_budget_gives_small_sets_enough_steps_and_large_ones_no_more():
    from dlworkflow.train import cosine_rates, epoch_steps, plan_epochs

    settings = {"epochs": 30, "min_steps": 600, "max_steps": 1000, "patience": 2,
                "patience_steps": 300}
    assert plan_epochs(settings, rows=40, batch_size=32) == (300, 150)  # 2 steps an epoch
    # a pass of 112 steps, over a tenth of the budget: two epochs a pass, 18 in the budget
    assert epoch_steps(112, settings) == 56 and epoch_steps(100, settings) == 100
    assert plan_epochs(settings, rows=3567, batch_size=32) == (18, 6)
    assert epoch_steps(680, settings) == 98  # 7 epochs a pass
    # every row once: a pass of 3,125 steps, over the budget, in ten epochs of 313 steps
    assert epoch_steps(3125, settings) == 313 and epoch_steps(1001, settings) == 101
    assert plan_epochs(settings, rows=100_000, batch_size=32) == (10, 2)
    assert plan_epochs({**settings, "max_steps": None}, rows=100_000, batch_size=32) == (30, 2)
    rates = cosine_rates(1e-3, 100, warmup=0.05)
    assert len(rates) == 100 and rates[0] < rates[4] == pytest.approx(1e-3 * 5 / 6)
    peak = int(np.argmax(rates))
    assert peak == 5 and rates[peak] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(rates[peak:], rates[peak + 1:], strict=False))
    assert 0 < rates[-1] < 1e-5


def test_series_standardisation_keeps_shape_and_drops_level_and_scale():
    from dlworkflow.layers import SeriesStandardization

    x, _, _ = digits_images(20, size=8)
    series = x.reshape(20, 64, 1).astype(np.float32)
    layer = SeriesStandardization()
    out = np.asarray(layer(series))
    assert np.allclose(out.mean(axis=1), 0, atol=1e-5) and np.allclose(out.std(axis=1), 1,
                                                                       atol=1e-3)
    assert np.allclose(np.asarray(layer(3.0 * series + 100.0)), out, atol=1e-4)


def test_the_first_train_step_is_traced_once_and_trains_the_same_weights():
    """build_training_state creates the optimizer's and the metrics' variables before fit, so
    TensorFlow traces the train step once (Keras alone creates them inside the first trace,
    and a traced function that created variables is traced again); the weights come out the
    same to the bit."""
    import keras
    import tensorflow as tf

    from dlworkflow.train import build_training_state

    x, labels, _ = digits_images(96, size=16)
    y = labels.astype(np.int64)
    stream = tf.data.Dataset.range(1 << 20).flat_map(  # endless, as FoldData.stream
        lambda n: tf.data.Dataset.from_tensor_slices((x.astype(np.float32) / 255, y))
        .shuffle(96, seed=n, reshuffle_each_iteration=False).batch(32))

    def trained(prebuild: bool) -> tuple[int, list]:
        keras.utils.set_random_seed(3)
        inputs = keras.Input((16, 16, 1))
        hidden = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
        hidden = keras.layers.BatchNormalization()(hidden)
        outputs = keras.layers.Dense(10, activation="softmax")(
            keras.layers.GlobalAveragePooling2D()(hidden))
        model = keras.Model(inputs, outputs)
        model.compile(optimizer=keras.optimizers.Adam(0.01),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        traces = []
        step = model.train_step

        def counted(data):
            traces.append(1)  # Python runs here only while TensorFlow traces
            return step(data)

        model.train_step = counted
        if prebuild:
            build_training_state(model, stream.element_spec)
            assert model.optimizer.built
        model.fit(stream, steps_per_epoch=3, epochs=2, verbose=0)
        return len(traces), model.get_weights()

    once, weights = trained(prebuild=True)
    _, lazily = trained(prebuild=False)  # Keras' own way: two traces on Keras 3.15
    assert once == 1
    assert all(np.array_equal(a, b) for a, b in zip(weights, lazily, strict=True))


def test_tfidf_rows_come_out_sparse_and_equal_to_the_dense_ones():
    """The wide text network's logistic regression is fitted on TF-IDF rows that leave
    TensorFlow sparse: on real SMS messages (three batches, the last one short) every index
    and value equals the dense outputs' read into a CSR matrix."""
    import keras
    import scipy.sparse as sp
    import tensorflow as tf

    from dlworkflow.models.networks import _in_batches, _sparse_outputs, _tfidf_features

    texts = np.asarray(sms_texts(600)[0], dtype=str)
    inputs = keras.Input((), dtype="string")
    model = keras.Model(inputs, _tfidf_features(inputs, texts[:400], {"max_tokens": 3000}))
    sparse = _sparse_outputs(model, texts, tf.constant, size=256)
    dense = sp.vstack([sp.csr_matrix(p) for p in
                       _in_batches(model.predict_on_batch, texts, tf.constant, 256)])
    assert sparse.format == "csr" and sparse.shape == dense.shape == (600, 5998)
    assert sparse.nnz == dense.nnz > 600 and sparse.dtype == dense.dtype
    for part in ("indptr", "indices", "data"):
        assert np.array_equal(getattr(sparse, part), getattr(dense, part)), part


def test_batch_norm_statistics_are_recomputed_on_the_training_rows(image_shards, tmp_path):
    """After training, each BatchNormalization layer's moving statistics are the exact mean
    and variance of its inputs over the fold's training rows (inference mode)."""
    import keras
    import tensorflow as tf

    from dlworkflow.data import Part, load_arrays
    from dlworkflow.tasks import get_task
    from dlworkflow.train import recalibrate_batch_norm

    _, out = _train(image_shards, dataset("image"), tmp_path, "image_cnn", epochs=1)
    model = keras.saving.load_model(out / "model.keras")
    train = load_arrays(Part(get_task("classification"), image_shards, 0, "train"))["x"]
    layers = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert layers
    for layer in layers[:2]:
        inputs = np.asarray(keras.Model(model.inputs, layer.input)(train, training=False))
        values = inputs.reshape(-1, inputs.shape[-1]).astype(np.float64)
        assert np.allclose(layer.moving_mean.numpy(), values.mean(axis=0), atol=1e-3, rtol=1e-3)
        assert np.allclose(layer.moving_variance.numpy(), values.var(axis=0), atol=1e-3,
                           rtol=1e-2)
    # recalibrating again in batches changes nothing: the statistics are exact
    before = [layer.moving_variance.numpy().copy() for layer in layers]
    assert recalibrate_batch_norm(model, tf.data.Dataset.from_tensor_slices(train).batch(7)) == \
        len(layers)
    for layer, old in zip(layers, before, strict=True):
        assert np.allclose(layer.moving_variance.numpy(), old, rtol=1e-4, atol=1e-6)
    # no rows: nothing is set, and the count says so
    assert recalibrate_batch_norm(model, tf.data.Dataset.from_tensor_slices(train[:0]).batch(7)) == 0
    for layer, old in zip(layers, before, strict=True):
        assert np.allclose(layer.moving_variance.numpy(), old, rtol=1e-4, atol=1e-6)
    # a large fold: the statistics of its first `rows` rows (the seeded order) only
    recalibrate_batch_norm(model, tf.data.Dataset.from_tensor_slices(train).batch(7), rows=16)
    inputs = np.asarray(keras.Model(model.inputs, layers[0].input)(train[:16], training=False))
    values = inputs.reshape(-1, inputs.shape[-1]).astype(np.float64)
    assert np.allclose(layers[0].moving_mean.numpy(), values.mean(axis=0), atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="session")  # read only, cheap: made once per worker, tests spread out
def sms_shards(tmp_path_factory):
    texts, labels, folds = sms_texts(300)
    folder = write_shards(tmp_path_factory.mktemp("sms"), texts, labels, folds)
    write_metric(folder, "classification", labels)
    return folder


@pytest.mark.parametrize(("reading", "changes"), [
    # 240 messages, no regularisation, a constant high rate: memorised within a few epochs,
    # then the validation loss climbs back
    ("overfitting", {"epochs": 20, "patience": 20, "dropout": 0.0, "l2": 0.0, "units": 64,
                     "filters": 32, "learning_rate": 0.005, "schedule": "plateau",
                     "text": {"sequence_length": "auto", "max_tokens": 2000,
                              "embedding_dim": 64}}),
    # a low rate for five epochs: the training loss is still falling when it stops
    ("underfitting", {"epochs": 5, "patience": 5, "learning_rate": 0.0005,
                      "schedule": "plateau"}),
])
def test_the_fit_diagnosis_reads_real_learning_curves(sms_shards, tmp_path, reading, changes):
    from dlworkflow.report import fit_diagnosis, fold_fit

    _, out = _train(sms_shards, dataset("text", layout="delimited"), tmp_path, "text_cnn",
                    **changes)
    history = pd.read_csv(out / "history.csv")
    assert fold_fit(history) == reading, history[["loss", "val_loss"]].round(3).to_dict("list")
    diagnosis = fit_diagnosis([out / "history.csv"])
    assert diagnosis["fit"] == reading and reading.capitalize() in diagnosis["hint"]
    # a curve that reached its minimum and flattened reads as balanced
    flat = history.assign(loss=np.linspace(1.0, 0.4, len(history)),
                          val_loss=np.r_[np.linspace(1.0, 0.5, len(history) // 2),
                                         np.full(len(history) - len(history) // 2, 0.5)])
    assert fold_fit(flat.assign(loss=np.maximum(flat["loss"], 0.45))) == "balanced"


def test_a_pass_over_the_budget_is_sliced_and_a_resumed_slice_continues_the_pass(image_shards):
    """With `max_steps` below one pass, an epoch is a tenth of the pass: resumed at epoch k,
    the stream continues from step k x slice, inside the pass, as an uninterrupted one."""
    from dlworkflow.train import EPOCH_SLICES, FoldData

    ctx = fold_context(dataset("image"), image_shards, {"train": {"max_steps": 2}})
    data = FoldData.load(ctx, str(image_shards), 0, 4, seed=3)
    whole, piece = data.pass_steps, data.steps_per_epoch
    assert whole > 2 and piece == -(-whole // EPOCH_SLICES) < whole
    first = [y.numpy() for _, y in data.stream(0).take(whole + 2 * piece)]
    for start in (1, EPOCH_SLICES - 1, EPOCH_SLICES + 1):  # inside the first pass, across it
        again = FoldData.load(ctx, str(image_shards), 0, 4, seed=3).stream(start)
        got = [y.numpy() for _, y in again.take(piece)]
        want = first[start * piece: start * piece + piece]
        assert len(got) == len(want) == piece
        assert all(np.array_equal(a, b) for a, b in zip(got, want, strict=True))


@pytest.mark.parametrize("resample", ["none", "oversample"])
def test_seed_zero_trains(image_shards, resample):
    """`seed: 0` (fold 0 and the final model run with the seed itself): TensorFlow tested the
    global seed 0 with each epoch's shuffle seed, a tensor, as a Python bool, and fitting
    failed before its first step. Now the epochs are drawn, the same for the same seed."""
    from dlworkflow.train import FoldData, configure_tensorflow

    ctx = fold_context(dataset("image"), image_shards, {"train": {"resample": resample}})

    def first_epoch():
        configure_tensorflow(1, 0)
        data = FoldData.load(ctx, str(image_shards), 0, 16, seed=0)
        return np.concatenate([y.numpy() for _, y in data.stream(0).take(data.steps_per_epoch)])

    labels = first_epoch()
    assert len(labels) >= 16 and np.array_equal(labels, first_epoch())


@pytest.mark.parametrize("resample,in_memory", [("none", True), ("oversample", True),
                                                ("undersample", False)])
def test_each_epochs_data_order_comes_from_its_number_alone(image_shards, monkeypatch, resample,
                                                            in_memory):
    # what lets a resumed fold see the batches an uninterrupted one sees from epoch k on,
    # in RAM and streamed from shards, shuffled or class-balanced
    import dlworkflow.train as train
    from dlworkflow.train import FoldData

    if not in_memory:
        monkeypatch.setattr(train, "IN_MEMORY_BYTES", 0)
    ctx = fold_context(dataset("image"), image_shards, {"train": {"resample": resample}})
    data = FoldData.load(ctx, str(image_shards), 0, 16, seed=3)
    assert data.in_memory is in_memory
    steps = data.steps_per_epoch
    counts = np.bincount(data.task.encode_targets(data.train_rows, data.classes))
    rows = {"none": counts.sum(), "oversample": counts.max() * len(counts),
            "undersample": counts.min() * len(counts)}[resample]
    assert steps == -(-rows // 16)

    def labels(stream, epochs):
        batches = [y.numpy() for _, y in stream.take(steps * epochs)]
        return [np.concatenate(batches[e * steps:(e + 1) * steps]) for e in range(epochs)]

    uninterrupted = labels(data.stream(0), 4)
    resumed = labels(FoldData.load(ctx, str(image_shards), 0, 16, seed=3).stream(2), 2)
    assert all(len(epoch) == rows for epoch in uninterrupted)  # one epoch is `steps` batches
    assert not np.array_equal(uninterrupted[0], uninterrupted[1])  # reshuffled every epoch
    for got, want in zip(resumed, uninterrupted[2:], strict=True):
        assert np.array_equal(got, want)
    if resample != "none":  # every class equally often in each epoch
        assert len(set(np.bincount(uninterrupted[0]).tolist())) == 1


def test_predict_reads_every_series_of_a_ts_wide_or_long_file_labelled_or_not(tmp_path):
    """A series network trained on PickupGestureWiimoteZ (UCR, unequal lengths, resampled to
    64 steps, `length` unset as shipped) with the `ts` layout: its card records the 64 steps,
    and `predict` on the official test .ts file gives one row per
    series, named by its id as training names them, with the probabilities the model gives
    the same series decoded one by one; the file without its labels (`@classLabel false`)
    gives the same rows, and so do the UCR archive's `.tsv` and `.txt` tables of it (label
    first, left empty or a float), and a one-series CSV still is one item. The same series as a table
    of the `wide_csv` layout (one padded row each, the label column after the steps) or of
    the `long_csv` layout (one series_id each), with or without their label and group
    columns, give the same probabilities under their ids: those columns are never steps."""
    import keras

    from dlworkflow.modalities import create_modality
    from dlworkflow.predict import file_series, predict

    root = tmp_path / "raw"
    root.mkdir()
    for part in ("TRAIN", "TEST"):
        (root / f"Pickup_{part}.ts").write_bytes(
            (SHARED_DATA / "ucr" / f"PickupGestureWiimoteZ_{part}.ts").read_bytes())
    layout, tensors = {"kind": "ts"}, {"length": 64}
    modality = create_modality("timeseries", {}, layout)

    def decoded(path):
        names, arrays = [], []
        for name, data in file_series(layout, path, ("ts",)):
            names.append(name)
            arrays.append(modality.tensorize(data, Item(name, name), tensors))
        return names, np.stack(arrays)

    _, x = decoded(root / "Pickup_TRAIN.ts")
    text = (root / "Pickup_TRAIN.ts").read_text(encoding="latin-1")
    labels = np.asarray([line.rsplit(":", 1)[1].strip()
                         for line in text.split("@data")[1].split("\n") if line.strip()])
    folds = np.arange(len(x)) % 5
    folder = write_shards(tmp_path / "series", x, labels, folds)
    write_metric(folder, "classification", labels)
    _, out = _train(folder, dataset("timeseries", layout="ts"), tmp_path, "series_fcn")
    card = json.loads((out / "model.json").read_text())
    # `length: null` (the shipped default) is recorded as the steps the series were
    # resampled to, so that new series of other lengths are resampled to them too
    assert card["tensors"] == {"length": 64}
    card["layout"] = layout
    (out / "model.json").write_text(json.dumps(card))

    names, test = decoded(root / "Pickup_TEST.ts")
    frame = predict(out, [root / "Pickup_TEST.ts"])
    assert len(frame) == len(test) == 50
    assert frame["input"].tolist() == names and names[0] == "Pickup_TEST-00001"
    model = keras.saving.load_model(out / "model.keras")
    expected = model.predict(test, verbose=0)
    probabilities = frame[[f"p_{c}" for c in card["classes"]]].to_numpy()
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    assert frame["prediction"].astype(str).tolist() == [str(card["classes"][k])
                                                        for k in expected.argmax(axis=1)]

    lines = (root / "Pickup_TEST.ts").read_text(encoding="latin-1").split("\n")
    unlabelled = [("@classLabel false" if line.startswith("@classLabel") else
                   line.rsplit(":", 1)[0] if line and line[0] not in "#@" else line)
                  for line in lines]
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "Pickup_TEST.ts").write_text("\n".join(unlabelled))
    again = predict(out, [tmp_path / "new" / "Pickup_TEST.ts"])
    pd.testing.assert_frame_equal(again, frame)
    # the UCR archive's tables of the same series: label first (its value not read; empty
    # in a file to predict), the shorter series padded with NaN in the .tsv
    rows = [line.rsplit(":", 1) for line in lines
            if line.strip() and line[0] not in "#@"]
    steps = max(len(values.split(",")) for values, _ in rows)
    (tmp_path / "new" / "Pickup_TEST.tsv").write_text("".join(
        "\t".join(["", *values.split(","), *["NaN"] * (steps - len(values.split(",")))]) + "\n"
        for values, _ in rows))
    (tmp_path / "new" / "Pickup_TEST.txt").write_text("".join(
        "".join(f"  {float(v):.7e}" for v in [label, *values.split(",")]) + "\n"
        for values, label in rows))
    for suffix in (".tsv", ".txt"):
        table = predict(out, [tmp_path / "new" / f"Pickup_TEST{suffix}"])
        pd.testing.assert_frame_equal(table, frame, atol=1e-5)

    empty = tmp_path / "new" / "Empty_TEST.ts"
    empty.write_text("\n".join(line for line in unlabelled if line.startswith("@")) + "\n")
    # a file with no series keeps a row that says so, beside the rows of a file with some
    both = predict(out, [empty, tmp_path / "new" / "Pickup_TEST.txt"])
    assert both["input"].tolist() == [str(empty), *frame["input"]]
    assert both["error"][0].endswith("Empty_TEST.ts: no series in it to predict")
    assert both["prediction"].isna().tolist() == [True] + [False] * len(frame)
    assert (both["error"][1:] == "").all()

    single = tmp_path / "one.csv"
    single.write_bytes(file_series(layout, root / "Pickup_TEST.ts", ("ts",))[0][1])
    one = predict(out, [single])
    assert one["input"].tolist() == [str(single)]
    np.testing.assert_allclose(one[[f"p_{c}" for c in card["classes"]]].to_numpy(),
                               expected[:1], atol=1e-5)

    series = [pd.read_csv(io.BytesIO(data))["value"].to_numpy()
              for _, data in file_series(layout, root / "Pickup_TEST.ts", ("ts",))]
    steps = max(len(values) for values in series)
    assert min(len(values) for values in series) < steps  # rows of a wide file are padded
    wide = pd.DataFrame([{"id": name, **{f"t{k}": v for k, v in enumerate(values)},
                          "label": label, "site": name[-1]}
                         for name, values, label in zip(names, series, frame["prediction"],
                                                        strict=True)])
    long = pd.DataFrame([{"series": name, "day": day, "y": value, "label": label, "site": "a"}
                         for name, values, label in zip(names, series, frame["prediction"],
                                                        strict=True)
                         for day, value in zip(pd.date_range("2024-01-01", periods=len(values)),
                                               values, strict=True)])
    tables = {"wide_csv": (wide, {"id_column": "id"}),
              "long_csv": (long, {"series_id": "series", "timestamp": "day", "target": "y"})}
    for kind, (table, columns) in tables.items():
        card["layout"] = {"kind": kind, "file": "train.csv", **columns,
                          "label_column": "label", "group_column": "site"}
        (out / "model.json").write_text(json.dumps(card))
        for keep in (list(table.columns), [c for c in table.columns if c not in ("label", "site")]):
            path = tmp_path / "new" / f"{kind}-{len(keep)}.csv"
            table[keep].to_csv(path, index=False)
            got = predict(out, [path])
            assert got["input"].tolist() == names, kind
            np.testing.assert_allclose(got[[f"p_{c}" for c in card["classes"]]].to_numpy(),
                                       expected, atol=1e-5, err_msg=kind)
