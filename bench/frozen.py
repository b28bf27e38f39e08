"""Training steps of a wide and deep text network with its frozen linear part computed in
every step (the exported network fitted as it is) against computed once per row
(`frozen_linear_view`, what training does), on the network and the data of a finished
project.

    python bench/frozen.py [--project .] [--datasets sms_spam] [--rounds 4] [--epochs 2]

For each dataset it loads fold 0's trained `model.keras` and fits fresh copies of it on the
trainval rows (80 % train, the rest validate after each epoch) with the job's
batch size (32) and one numeric thread, as a fold job on a CPU. The two ways take turns
within each round, the order alternating, so the machine's drift falls on both alike; the
first epoch of each fit traces and warms up and is not timed. It prints the seconds the
logits take to compute once for every row (a fold pays them once), the milliseconds a step
(the whole timed fit, validation included, over its steps), their ratio, and how far the two
ways' last validation losses lie apart. Nothing is asserted; run it after `make demo` (or
any `dlworkflow run` with a text dataset).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def fitted(path: Path, x, y, steps: int, epochs: int, once: bool) -> tuple[float, float, float]:
    """Seconds the logits took to compute once per row (0 when `once` is false: computed in
    every step), seconds a fit of `epochs` epochs took after a first one that traces and warms
    up, and the last validation loss; `steps` batches of 32 an epoch train, the rows after
    them validate."""
    import keras
    import numpy as np
    import tensorflow as tf

    from dlworkflow.models.networks import frozen_linear_view
    from dlworkflow.train import build_training_state

    keras.utils.set_random_seed(7)
    model = keras.saving.load_model(path)
    start = time.perf_counter()
    if once:
        model, compute = frozen_linear_view(model)
        inputs = (x, np.asarray(compute(x)))
    else:
        inputs = x
    computing = time.perf_counter() - start if once else 0.0
    rows = tf.data.Dataset.from_tensor_slices((inputs, y))
    stream, valid = rows.take(steps * 32).batch(32).repeat(), rows.skip(steps * 32).batch(32)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    build_training_state(model, stream.element_spec)
    model.fit(stream, steps_per_epoch=steps, validation_data=valid, epochs=1, verbose=0)
    start = time.perf_counter()
    history = model.fit(stream, steps_per_epoch=steps, validation_data=valid, epochs=epochs,
                        verbose=0)
    return computing, time.perf_counter() - start, float(history.history["val_loss"][-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=Path("."))
    parser.add_argument("--datasets", nargs="+", default=["sms_spam"])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()

    import numpy as np
    import pandas as pd
    import tensorflow as tf

    import dlworkflow.layers  # noqa: F401  (the networks' own layers, for loading)

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    print("| dataset | rows | steps an epoch | s to compute the logits once | ms a step, every "
          "step | ms a step, once per row | ratio | per round | last validation losses apart |")
    print("|---|---:|---:|---:|---:|---:|---:|---|---:|")
    for name in args.datasets:
        results = args.project / "results" / name
        path = results / "nn" / "fold-0" / "model.keras"
        shards = [np.load(p) for p in sorted((results / "tensors").glob("trainval-*.npz"))]
        x = np.concatenate([shard["x"] for shard in shards]).astype(str)
        ids = np.concatenate([shard["ids"] for shard in shards])
        classes = json.loads((path.parent / "model.json").read_text())["classes"]
        labels = pd.read_parquet(results / "tensors" / "index.parquet").set_index("id")["label"]
        y = np.array([classes.index(str(label)) for label in labels.loc[ids]], np.int64)
        steps = int(0.8 * len(x)) // 32  # an epoch's; 80 % of the rows train
        times: dict[bool, list[float]] = {False: [], True: []}
        losses: dict[bool, float] = {}
        computing = []
        for turn in range(args.rounds):
            for once in ((False, True) if turn % 2 == 0 else (True, False)):
                first, seconds, losses[once] = fitted(path, x, y, steps, args.epochs, once)
                times[once].append(1000 * seconds / (steps * args.epochs))
                computing += [first] if once else []
        every, once = np.median(times[False]), np.median(times[True])
        rounds = ", ".join(f"{a / b:.2f}" for a, b in zip(times[True], times[False], strict=True))
        print(f"| {name} | {len(x)} | {steps} | {np.median(computing):.1f} | "
              f"{every:.1f} | {once:.1f} | {once / every:.2f} | {rounds} | "
              f"{abs(losses[True] - losses[False]):.1e} |")


if __name__ == "__main__":
    main()
