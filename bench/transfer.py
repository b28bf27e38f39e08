"""Transfer learning on a photo set, measured without ImageNet weights (none can be downloaded
here): backbone weights made two ways stand in for the ones a user's machine downloads.

    python bench/transfer.py run [--out bench-runs/transfer] [--folds 0 1] [--src DIR]
                                 [--backbones random pretrained none]
    python bench/transfer.py table bench-runs/transfer

- `random`: an untrained MobileNetV3Small, the worst a backbone can be (features that say
  nothing about the images);
- `pretrained`: MobileNetV3Small trained for a few epochs on 9,000 images of Fashion-MNIST's
  *test* file (its BatchNormalization statistics then set from them), none of which is in
  the set it is measured on (the first 206 images a
  class of the training file, `bench/quality.py`'s `fashion`): features learned on images
  like the target's, the best case, as ImageNet's are for everyday photos;
- `none` (`--backbones none`): no weights, so `auto` trains `image_wide_cnn` from scratch.

Each backbone goes into the shipped params as `train.transfer.weights`, so `auto` takes
`image_transfer` as it does with downloaded ImageNet weights, and the real workflow trains
the network and the baselines on the same folds (`--folds`, fold jobs only: the comparison
is fold by fold). `--src` runs another checkout's `src/` (an older network, say) on the
same folds; a later run with other `--folds` adds them to the same projects. `table`
prints, per run and fold, the network's and the best baseline's validation score, and the
mean and standard deviation over the folds run.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality  # bench/quality.py: the fashion set and the project folder

SIDE = 64  # the shipped image size


def fashion_test_images() -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST's test file as 64x64 RGB uint8 (what the workflow tensorises to)."""
    import tensorflow as tf

    with gzip.open(quality.FASHION / "t10k-images-idx3-ubyte.gz") as handle:
        images = np.frombuffer(handle.read(), np.uint8, offset=16).reshape(-1, 28, 28, 1)
    with gzip.open(quality.FASHION / "t10k-labels-idx1-ubyte.gz") as handle:
        labels = np.frombuffer(handle.read(), np.uint8, offset=8)
    resized = tf.image.resize(images, (SIDE, SIDE)).numpy()
    return np.repeat(np.clip(resized, 0, 255).astype(np.uint8), 3, axis=-1), labels


def make_backbones(out: Path, names: list[str], epochs: int = 3) -> dict[str, str]:
    """`train.transfer.weights` for each backbone named: a weight file (made once, kept in
    `out`), or none."""
    import keras

    from dlworkflow.models.extractors import build_extractor

    files = {"random": out / "random.weights.h5", "pretrained": out / "pretrained.weights.h5"}
    keras.utils.set_random_seed(0)
    if "random" in names and not files["random"].exists():
        build_extractor("mobilenet_v3_small", (SIDE, SIDE, 3), "none").save_weights(files["random"])
    if "pretrained" in names and not files["pretrained"].exists():
        backbone = build_extractor("mobilenet_v3_small", (SIDE, SIDE, 3), "none")
        backbone.trainable = True
        model = keras.Sequential([keras.Input((SIDE, SIDE, 3)), backbone,
                                  keras.layers.Dense(10, activation="softmax")])
        model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        x, y = fashion_test_images()
        started = time.time()
        model.fit(x[:9000], y[:9000], batch_size=64, epochs=epochs, verbose=2)
        # MobileNetV3's BatchNormalization (momentum 0.999) has not settled in 420 steps: its
        # statistics set from the training images, as the workflow does for its own networks
        import tensorflow as tf

        from dlworkflow.train import recalibrate_batch_norm

        recalibrate_batch_norm(backbone, tf.data.Dataset.from_tensor_slices(x[:9000]).batch(256),
                               rows=2048)
        print("held-out accuracy of the pretrained backbone:",
              model.evaluate(x[9000:], y[9000:], verbose=0)[1], file=sys.stderr)
        print(f"pretrained backbone: {epochs} epochs on {len(x)} images, "
              f"{time.time() - started:.0f} s", file=sys.stderr)
        backbone.save_weights(files["pretrained"])
    return {name: "none" if name == "none" else str(files[name].resolve()) for name in names}


def run(out: Path, folds: list[int], src: Path | None, cores: int, names: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    label = "src-" + src.resolve().parent.name if src else "this"  # <name>-<label>
    for name, weights in make_backbones(out, names).items():
        project = out / f"{name}-{label}" / "fashion"
        if not project.exists():  # else more folds of an earlier run: its tensors are reused
            quality.make_project("fashion", project.parent)
        if src:
            shutil.rmtree(project / "src")
            shutil.copytree(src, project / "src", ignore=shutil.ignore_patterns("__pycache__"))
        params = yaml.safe_load((project / "params.yaml").read_text())
        transfer = params.setdefault("train", {}).setdefault("transfer", {})
        transfer.update(backbone="mobilenet_v3_small", weights=weights)  # what they were made for
        (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        targets = [f"results/fashion/{kind}/fold-{fold}/metrics.json"
                   for fold in folds for kind in ("nn", "baseline")]
        started = time.time()  # the jobs import dlworkflow from the project's src/ (common.smk)
        done = subprocess.run(["snakemake", "--cores", str(cores), *targets], cwd=project,
                              capture_output=True, text=True, check=False)
        (project / "bench.log").write_text(done.stdout + done.stderr)
        print(f"{project.parent.name}: exit {done.returncode}, {time.time() - started:.0f} s",
              file=sys.stderr)
        table(project)


def table(project: Path) -> None:
    results = project / "results" / "fashion"
    scores: dict[str, list[float]] = {"network": [], "baseline": []}
    for fold_dir in sorted((results / "nn").glob("fold-*")):
        if not (fold_dir / "metrics.json").exists():
            continue
        network = json.loads((fold_dir / "metrics.json").read_text())
        base = json.loads((results / "baseline" / fold_dir.name / "metrics.json").read_text())
        card = json.loads((fold_dir / "model.json").read_text())
        (architecture, entry), = network["models"].items()
        best = max(base["models"], key=lambda m: base["models"][m]["metrics"]["accuracy"])
        scores["network"].append(entry["metrics"]["accuracy"])
        scores["baseline"].append(base["models"][best]["metrics"]["accuracy"])
        print(f"| {project.parent.name} | {fold_dir.name} | {architecture} | "
              f"{entry['metrics']['accuracy']:.4f} | {entry['best_epoch']} of "
              f"{entry['epochs_run']} | {best}: {base['models'][best]['metrics']['accuracy']:.4f} "
              f"| {card.get('architecture_reason', '')[:60]} |")
    if scores["network"]:
        print(f"| {project.parent.name} | {len(scores['network'])} folds | mean ± std | "
              f"{np.mean(scores['network']):.4f} ± {np.std(scores['network'], ddof=1):.4f} | | "
              f"best baseline: {np.mean(scores['baseline']):.4f} ± "
              f"{np.std(scores['baseline'], ddof=1):.4f} | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run")
    run_parser.add_argument("--out", type=Path, default=quality.REPO / "bench-runs" / "transfer")
    run_parser.add_argument("--folds", type=int, nargs="+", default=[0, 1])
    run_parser.add_argument("--src", type=Path)
    run_parser.add_argument("--cores", type=int, default=2)
    run_parser.add_argument("--backbones", nargs="+", default=["random", "pretrained"],
                            choices=["random", "pretrained", "none"])
    table_parser = sub.add_parser("table")
    table_parser.add_argument("out", type=Path)
    args = parser.parse_args()
    if args.command == "run":
        run(args.out, args.folds, args.src, args.cores, args.backbones)
    else:
        for project in sorted(args.out.glob("*/fashion")):
            table(project)


if __name__ == "__main__":
    main()
