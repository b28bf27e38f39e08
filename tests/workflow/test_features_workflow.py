"""Feature pre-extraction: a frozen base with weights the test trains and saves itself."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pandas as pd
import pytest
import yaml

from dlworkflow.config import validate_params
from dlworkflow.dvcgen import render_dvc_yaml
from dlworkflow.errors import ConfigError
from dlworkflow.models import extractors
from dlworkflow.tensors import load_shard
from tests.workflow.conftest import run, shipped_params, write_params

pytestmark = pytest.mark.workflow
keras = pytest.importorskip("keras")


@pytest.fixture(scope="module")
def trained_weights(tmp_path_factory, demo_raw):
    """MobileNetV3Small trained for one epoch on real digits; only the backbone is saved.
    Eagerly: its five steps take 3 s, against 12 s of tracing the graph first (an untrained
    backbone will not do: its features are about 1e-11, as close to any other as allclose
    asks)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = np.repeat(digits.images[:300, :, :, None] * (255 / 16), 3, axis=-1).astype("float32")
    x = keras.ops.image.resize(x, (32, 32))
    backbone = extractors.build_extractor("mobilenet_v3_small", (32, 32, 3), "none")
    backbone.trainable = True
    model = keras.Sequential([keras.Input((32, 32, 3)), backbone, keras.layers.Dense(10)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  run_eagerly=True)
    model.fit(x, digits.target[:300], epochs=1, batch_size=64, verbose=0)
    path = tmp_path_factory.mktemp("weights") / "mobilenet_digits.weights.h5"
    backbone.save_weights(path)
    return path, backbone


def test_extracted_features_equal_the_trained_backbones_output(demo_project, trained_weights,
                                                               tmp_path):
    path, backbone = trained_weights
    shard = demo_project / "results" / "digits" / "tensors" / "trainval-00000.npz"
    out = tmp_path / "features.npz"
    count = extractors.extract_shard(str(shard), "mobilenet_v3_small", str(path), 32, str(out),
                                     side=48)
    features = load_shard(out)
    assert count == len(load_shard(shard)["ids"]) == len(features["x"])
    assert features["x"].shape[1] == backbone.output_shape[-1]
    images = extractors.as_rgb_batch(load_shard(shard)["x"], "mobilenet_v3_small", 48)
    assert images.shape[1:] == (48, 48, 3)  # the 16-px digits enlarged to features.side
    same = extractors.build_extractor("mobilenet_v3_small", images.shape[1:], "none")
    same.load_weights(path)  # convolution weights do not depend on the input size
    direct = same.predict(images, verbose=0)
    np.testing.assert_allclose(features["x"], direct, rtol=1e-4, atol=1e-4)
    untrained = tmp_path / "random.npz"
    extractors.extract_shard(str(shard), "mobilenet_v3_small", "none", 32, str(untrained),
                             side=48)
    assert not np.allclose(load_shard(untrained)["x"], features["x"])


def test_imagenet_without_internet_fails_with_a_clear_message(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    monkeypatch.setattr("keras.src.utils.file_utils.get_file", offline)
    with pytest.raises(ConfigError, match=r"need internet once.*weights\.h5"):
        extractors.build_extractor("mobilenet_v3_small", (32, 32, 3), "imagenet")
    with pytest.raises(ConfigError, match="does not exist"):
        extractors.build_extractor("mobilenet_v3_small", (32, 32, 3), "/nowhere.weights.h5")
    with pytest.raises(ConfigError, match="is not one of"):
        extractors.get_extractor("resnet9000")


@pytest.mark.seconds(60)
def test_the_features_rule_embeds_every_trainval_shard_once_with_a_gpu_slot(project,
                                                                            trained_weights):
    path, _ = trained_weights
    params = shipped_params(per_class=6)
    params["datasets"] = {"digits": params["datasets"]["digits"], "fsdd": params["datasets"]["fsdd"],
                          "sms_spam": params["datasets"]["sms_spam"]}
    params["features"] = {"extractor": "mobilenet_v3_small", "weights": str(path),
                          "batch_size": 32, "side": 48}  # quick: below the 224 shipped
    params["datasets"]["digits"]["train"] = {"architecture": "image_transfer"}
    # MobileNetV3 takes 32 px at least (the shipped digits are 16 px)
    # (merged key by key into the demo entry's tensors: still grayscale)
    params["datasets"]["digits"]["tensors"] = {"image": {"size": [32, 32]}}
    write_params(project, params)
    targets = [f"results/{name}/{kind}" for name in ("digits", "fsdd", "sms_spam")
               for kind in ("features/index.parquet", "baseline/summary.json")
               if not (name == "sms_spam" and kind.startswith("features"))]
    targets += ["results/digits/nn/fold-0/model.keras", "results/sms_spam/nn/fold-0/model.keras"]
    done = run(["snakemake", "--cores", "2", "--resources", "gpu=1", "--", *targets], project)
    assert done.returncode == 0, done.stderr[-3000:]
    # the image and audio baselines ran on their tensors and on the tensors' flat rows with
    # the cached embeddings beside them, each estimator on both (cross-validation chooses),
    # text on its tensors alone
    both = "tensors and cached embeddings"
    for name, sources in (("digits", {"tensors", both}), ("fsdd", {"tensors", both}),
                          ("sms_spam", {"tensors"})):
        fold = json.loads((project / "results" / name / "baseline" / "fold-0" / "metrics.json")
                          .read_text())
        assert {m["input"] for m in fold["models"].values()} == sources
        on_tensors = {m for m, v in fold["models"].items() if v["input"] == "tensors"}
        assert {m for m in fold["models"] if m not in on_tensors} == (
            {f"{m}_with_embeddings" for m in on_tensors} if len(sources) == 2 else set())
    for name in ("digits", "fsdd"):  # images and spectrograms; text has no extractor
        index = pd.read_parquet(project / "results" / name / "features" / "index.parquet")
        tensors = pd.read_parquet(project / "results" / name / "tensors" / "index.parquet")
        assert sorted(index["id"]) == sorted(tensors["id"])
    assert not (project / "results" / "sms_spam" / "features").exists()
    # the transfer head trained on the cached embeddings; the saved model takes images
    model_dir = project / "results" / "digits" / "nn" / "fold-0"
    history = pd.read_csv(model_dir / "history.csv")
    assert len(history) >= 1 and np.isfinite(history["val_loss"]).all()
    image = next((project / "data" / "raw" / "digits").rglob("*.png"))
    done = run(["dlworkflow", "predict", str(model_dir), str(image)], project)
    assert done.returncode == 0 and done.stdout.startswith("input,prediction"), done.stderr[-2000:]
    from dlworkflow.models.networks import find_backbone

    model = keras.saving.load_model(model_dir / "model.keras")
    trained = extractors.build_extractor("mobilenet_v3_small", (32, 32, 3), str(path))
    assert np.allclose(find_backbone(model).weights[0].numpy(), trained.weights[0].numpy())
    # the backbone in front of the head sees the images at the size the embeddings were made
    assert find_backbone(model).input_shape == (None, 48, 48, 3)
    # the head is wide and deep: it took the embeddings and, beside them, the images, whose
    # averaged pixels feed a linear part (trained with it, as without cached embeddings)
    head = model.get_layer("head")
    assert [tuple(i.shape[1:]) for i in head.inputs] == [
        tuple(find_backbone(model).output_shape[1:]), (32, 32, 1)]
    assert head.get_layer("linear_logits").kernel.shape[0] == 16 * 16
    assert np.abs(head.get_layer("linear_logits").kernel.numpy()).max() > 0
    _the_final_step_serves_a_baseline_with_embeddings(project)
    dry = run(["snakemake", "--cores", "2", "--forcerun", "extract_features", "-n", "--", *targets],
              project, env={"DLWORKFLOW_GPUS": "1"})
    assert "gpu=1" in dry.stdout
    # the weights file is an input of every job that reads it: replaced by a newer file (the
    # same name, so no param changes), the embeddings and the network that reads them are
    # planned again, and the text dataset's jobs are not
    os.utime(path)
    dry = run(["snakemake", "--cores", "2", "-n", "--", *targets], project)
    assert dry.returncode == 0, dry.stderr[-2000:]
    jobs = [re.findall(r"wildcards: dataset=(\w+)", block)[0]
            for block in dry.stdout.split("\n\n")
            if re.search(r"^(local)?rule (extract_features|train_fold):", block, re.M)]
    shards = {name: len(pd.read_parquet(project / "results" / name / "tensors" / "index.parquet")
                        .query("role == 'trainval'")["shard"].unique())
              for name in ("digits", "fsdd")}
    assert sorted(jobs) == sorted(["digits"] * (shards["digits"] + 1) + ["fsdd"] * shards["fsdd"])
    assert "updated input files" in dry.stdout
    # a features setting is a param of the jobs that embed or read embeddings only: the text
    # set's network fold, which the train rule passes the features section to, stays built
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["features"]["batch_size"] = 16
    write_params(project, params)
    dry = run(["snakemake", "--cores", "2", "-n", "--", *targets], project)
    assert dry.returncode == 0, dry.stderr[-2000:]
    planned = set(re.findall(r"wildcards: dataset=(\w+)", dry.stdout))
    assert planned == {"digits", "fsdd"}, planned
    # DVC: the features, train and final stages depend on it, the others do not
    params = validate_params(yaml.safe_load((project / "params.yaml").read_text()),
                             base_dir=project)
    stages = yaml.safe_load(render_dvc_yaml(params, params))["stages"]
    assert [name for name, stage in stages.items() if str(path) in stage["deps"]] == \
        ["features", "train", "final"]


def _the_final_step_serves_a_baseline_with_embeddings(project):
    """The final step of a project with an extractor: the baselines the folds fitted with
    cached embeddings beside the flat rows are refitted, exported with the frozen backbone
    that made them, scored
    on the raw test items and served by `dlworkflow predict`'s code from raw files; the report and
    latency follow. Digits, with the baseline forced to ship (final.model: baseline);
    spectrograms embed through the same code (their features above, their decoding for
    predict in test_final_workflow)."""
    from tests.workflow.test_final_workflow import (
        test_both_exported_models_predict_the_test_items_as_the_final_step_did as same_outputs,
    )

    params = yaml.safe_load((project / "params.yaml").read_text())
    params["datasets"]["digits"]["final"] = {"model": "baseline"}
    # pixels averaged to one a channel: the baselines on the tensors see nothing, so one with
    # the embeddings is the best (at 16 px a logistic regression on these pixels is)
    params["datasets"]["digits"]["baseline"] = {"image": {"pixels": 1}}
    write_params(project, params)
    done = run(["snakemake", "--cores", "2", "--resources", "gpu=1", "--",
                "results/digits/final/report.html"], project)
    assert done.returncode == 0, done.stderr[-3000:]
    final = project / "results" / "digits" / "final"
    card = json.loads((final / "baseline.json").read_text())
    assert card["extractor"]["name"] == "mobilenet_v3_small"
    assert card["extractor"]["side"] == 48 and (final / card["extractor"]["file"]).is_file()
    summary = json.loads((project / "results" / "digits" / "baseline" / "summary.json").read_text())
    assert card["model"] == summary["best"] and card["model"].endswith("_with_embeddings")
    assert card["extractor"]["beside_flat"]
    # it takes the one averaged pixel of the grayscale digits beside the embeddings
    from dlworkflow.shardfile import load_shard
    from dlworkflow.shipping import load_baseline

    width = load_shard(next((project / "results" / "digits" / "features").glob("*.npz")))["x"].shape[1]
    assert load_baseline(final)[0].n_features_in_ == 1 + width
    test = json.loads((final / "test_metrics.json").read_text())
    assert {"network", "baseline"} <= set(test)  # both scored once on the raw test items
    assert test["baseline"]["model"] == card["model"]
    decision = json.loads((final / "shipped.json").read_text())
    assert decision["shipped"] == "baseline" and decision["baseline_exported"]
    # predict's way from raw files (raw_arrays, load_shipped) gives the final step's outputs
    same_outputs(project, "digits")
    assert (f"{card['model']} (baseline, refitted on trainval, on its flat rows with the "
            "embeddings of the frozen mobilenet_v3_small, exported beside it, shipped)"
            ) in (final / "report.html").read_text()
    latency = json.loads((final / "latency.json").read_text())
    # the served baseline runs the backbone: its size and values are counted with it
    assert latency["kind"] == "baseline"
    assert latency["parameters"] > card["extractor"]["parameters"] > 0
    assert latency["model_bytes"] == sum((final / name).stat().st_size
                                         for name in ("baseline.skops", "baseline_extractor.keras"))


@pytest.mark.seconds(90)
def test_auto_embeds_with_image_transfers_backbone_and_holds_none_without_its_weights(
        project, trained_weights):
    """`features.extractor: auto` (shipped): an image set that `auto` trains with
    image_transfer is embedded once by that network's own backbone and weights
    (`train.transfer`), the decision made once by the features step and taken by
    choose_network; the baselines get the embeddings beside the flat rows and the head
    trains on them. Beside it the folds train image_wide_cnn from scratch on the tensors and
    the transfer network with its linear part fitted (`train.image.wide_fit: auto`), and the
    final model is the CV-best of the three, the summary and the card saying why.
    With the weights gone, `auto` trains from scratch: the step holds no embeddings and says
    why, the baselines and the networks read the tensors alone, and on these 64-px pictures
    the network from scratch trains beside its fitted variant, the CV-best kept."""
    path, _ = trained_weights
    params = shipped_params(per_class=6)
    params["datasets"] = {"digits": params["datasets"]["digits"]}
    params["datasets"]["digits"]["tensors"] = {"image": {"size": [64, 64]}}  # photos' size
    params["train"]["transfer"] = {"backbone": "mobilenet_v3_small", "weights": str(path)}
    params["features"] = {"side": 72}  # quick: below the 224 shipped
    write_params(project, params)
    targets = ["results/digits/baseline/summary.json", "results/digits/final/report.html"]
    done = run(["snakemake", "--cores", "2", "--", *targets], project)
    assert done.returncode == 0, done.stderr[-3000:]
    digits = project / "results" / "digits"
    choice = json.loads((digits / "features" / "extractor.json").read_text())
    assert (choice["extractor"], choice["weights"], choice["side"]) == (
        "mobilenet_v3_small", str(path), 72)
    assert choice["architecture"] == "image_transfer" and str(path) in choice["reason"]
    network = json.loads((digits / "nn" / "network.json").read_text())
    assert network["architecture"] == "image_transfer"
    assert "features.extractor: auto" in network["reason"]
    index = pd.read_parquet(digits / "features" / "index.parquet")
    tensors = pd.read_parquet(digits / "tensors" / "index.parquet")
    assert sorted(index["id"]) == sorted(tensors.query("role == 'trainval'")["id"])
    fold = json.loads((digits / "baseline" / "fold-0" / "metrics.json").read_text())
    assert {m["input"] for m in fold["models"].values()} == {
        "tensors", "tensors and cached embeddings"}
    from dlworkflow.models.networks import find_backbone

    model = keras.saving.load_model(digits / "nn" / "fold-0" / "model.keras")
    assert find_backbone(model).input_shape == (None, 72, 72, 3)  # as the embeddings saw them
    head = model.get_layer("head")
    assert tuple(head.inputs[0].shape[1:]) == tuple(find_backbone(model).output_shape[1:])
    card = json.loads((digits / "nn" / "fold-0" / "model.json").read_text())
    assert "features.extractor: auto" in json.dumps(card)
    # the network from scratch beside it, on the tensors, in every fold
    folds = params["split"]["folds"]
    for k in range(folds):
        scratch = json.loads((digits / "nn" / "scratch" / f"fold-{k}" / "model.json"
                              ).read_text())
        assert scratch["architecture"] == "image_wide_cnn"
        assert "beside image_transfer" in json.dumps(scratch)
    model = keras.saving.load_model(digits / "nn" / "scratch" / "fold-0" / "model.keras")
    assert model.input_shape[1:3] == (64, 64)  # the tensors, no backbone
    assert not any(isinstance(layer, keras.Model) for layer in model.layers)
    # and the transfer network with its linear part fitted (wide_fit auto), on the embeddings
    for k in range(folds):
        fitted = json.loads((digits / "nn" / "fitted" / f"fold-{k}" / "model.json").read_text())
        assert fitted["architecture"] == "image_transfer+fitted"
        assert "beside image_transfer" in json.dumps(fitted)
    log = (project / "logs" / "digits" / "train_fitted_fold-0.log").read_text()
    assert "beside the frozen regression's logits on the images' pixels" in log
    from dlworkflow.shipping import load_network

    model, _ = load_network(digits / "nn" / "fitted" / "fold-0")
    assert find_backbone(model) is not None
    scale = model.get_layer("head").get_layer("linear_scale")
    assert not model.get_layer("head").get_layer("linear_logits").trainable
    assert scale.trainable and float(np.asarray(scale.get_weights()[0]).ravel()[0]) != 1.0
    summary = json.loads((digits / "nn" / "summary.json").read_text())
    scores = {name: entry["accuracy"]["mean"] for name, entry in summary["models"].items()}
    assert set(scores) == {"image_transfer", "image_wide_cnn", "image_transfer+fitted"}
    assert summary["best"] == max(scores, key=scores.get) and summary["folds"] == folds
    assert summary["network_choice"].startswith(summary["best"])
    assert summary["network_choice"] in summary["verdict"]
    trainval = int((tensors["role"] == "trainval").sum())
    oof = pd.read_parquet(digits / "nn" / "oof.parquet")
    assert oof.groupby("model")["id"].nunique().to_dict() == {
        "image_transfer": trainval, "image_wide_cnn": trainval,
        "image_transfer+fitted": trainval}
    final = json.loads((digits / "final" / "model.json").read_text())
    assert final["architecture"] == summary["best"]
    assert summary["network_choice"] in json.dumps(final, ensure_ascii=False)
    html = (digits / "final" / "report.html").read_text()  # one tile: the CV-best network
    tiles = re.findall(r'class="kpi"><b>[^<]*</b>CV accuracy, network ([^<]*)</div>', html)
    assert tiles == [summary["best"]]
    folder = {"image_transfer": "", "image_wide_cnn": "scratch/",
              "image_transfer+fitted": "fitted/"}[summary["best"]]
    for k in range(folds):  # the final replays the winner's folds
        assert f"nn/{folder}fold-{k}" in summary["fold_details"][summary["best"]][str(k)][
            "folder"]

    params["train"]["transfer"]["weights"] = str(path.with_name("gone.weights.h5"))
    write_params(project, params)
    done = run(["snakemake", "--cores", "2", "--", targets[0], "results/digits/nn/summary.json"],
               project)
    assert done.returncode == 0, done.stderr[-3000:]
    choice = json.loads((digits / "features" / "extractor.json").read_text())
    assert choice["extractor"] is None and choice["architecture"] == "image_wide_cnn"
    assert "gone.weights.h5" in choice["reason"] and "does not exist" in choice["reason"]
    assert "embeds with nothing" in (project / "logs" / "digits" / "choose_extractor.log"
                                     ).read_text()
    assert pd.read_parquet(digits / "features" / "index.parquet").empty
    network = json.loads((digits / "nn" / "network.json").read_text())
    assert network == {"architecture": "image_wide_cnn", "reason": choice["reason"],
                       "beside": {"fitted": "image_wide_cnn+fitted"}}
    fold = json.loads((digits / "baseline" / "fold-0" / "metrics.json").read_text())
    assert {m["input"] for m in fold["models"].values()} == {"tensors"}
    card = json.loads((digits / "nn" / "fold-0" / "model.json").read_text())
    assert card["architecture"] == "image_wide_cnn"
    for k in range(folds):
        fitted = json.loads((digits / "nn" / "fitted" / f"fold-{k}" / "model.json").read_text())
        assert fitted["architecture"] == "image_wide_cnn+fitted"
        assert "beside image_wide_cnn" in json.dumps(fitted)
    model, _ = load_network(digits / "nn" / "fitted" / "fold-0")
    assert model.input_shape[1:3] == (64, 64)  # the tensors, no backbone
    assert not any(isinstance(layer, keras.Model) for layer in model.layers)
    assert not model.get_layer("linear_logits").trainable
    summary = json.loads((digits / "nn" / "summary.json").read_text())
    scores = {name: entry["accuracy"]["mean"] for name, entry in summary["models"].items()}
    assert set(scores) == {"image_wide_cnn", "image_wide_cnn+fitted"}
    assert summary["best"] == max(scores, key=scores.get)
    assert summary["network_choice"].startswith(summary["best"])
    oof = pd.read_parquet(digits / "nn" / "oof.parquet")
    assert oof.groupby("model")["id"].nunique().to_dict() == {
        "image_wide_cnn": trainval, "image_wide_cnn+fitted": trainval}
