"""Optimizer steps one call into TensorFlow: one step a call (Keras' default, what training
does) against an epoch's steps in few calls (`steps_per_execution`), on the networks and the
data of a finished project. Tried in training and dropped (docs/PERFORMANCE.md): here it
saved 14-28 % of a step, but in the demo the multi-step loop's longer tracing (about 3 s a
job) outweighed it and the paired runs were slower.

    python bench/steps.py [--project .] [--datasets digits fsdd sms_spam co2] [--rounds 6]
                          [--epochs 2]

For each dataset it loads fold 0's trained `model.keras` (the real architecture, its
preprocessing and augmentation layers, its loss), and fits fresh copies of it on the first
trainval shard's rows with the job's batch size (32) and one numeric thread, as a fold job
on a CPU: 80 % of the rows train, the rest validate after each epoch. Classification targets
are drawn at random (the time of a step does not depend on them); forecasting targets are
the shard's. The two ways take turns within each round, the order alternating, so the
machine's drift falls on both alike; each fit starts from the same weights and seed, and the
table says whether the two ways ended with the same weights to the bit. Nothing is asserted;
run it after `make demo` (or any `dlworkflow run`).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def steps_per_call(steps_per_epoch: int, most: int = 256) -> int:
    """The largest divisor of the epoch's steps up to `most`: Keras runs whole calls, so an
    epoch of 36 steps in calls of 32 would train 64."""
    return max(d for d in range(1, min(most, steps_per_epoch) + 1) if steps_per_epoch % d == 0)


@contextmanager
def stepping(model, steps: int):
    """`fit` runs `steps` optimizer steps a call; afterwards one again, the traced functions
    dropped (same steps, same order, same weights to the bit)."""
    model.steps_per_execution = steps
    try:
        yield model
    finally:
        model.steps_per_execution = 1
        model.train_function = model.test_function = model.predict_function = None


def fitted(path: Path, stream, valid, steps: int, epochs: int, per_call: int):
    """Seconds a fit of `epochs` epochs took, and the weights it ended with (the model read
    afresh, so its weights and its layers' random states start where the other way's did)."""
    import keras

    from dlworkflow.train import build_training_state

    keras.utils.set_random_seed(7)
    model = keras.saving.load_model(path)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=model.loss,
                  metrics=model.get_compile_config().get("metrics"))
    build_training_state(model, stream.element_spec)
    with stepping(model, per_call):
        # the first fit traces and warms up
        model.fit(stream, steps_per_epoch=steps, validation_data=valid, epochs=1, verbose=0)
        start = time.perf_counter()
        model.fit(stream, steps_per_epoch=steps, validation_data=valid, epochs=epochs,
                  verbose=0)
        seconds = time.perf_counter() - start
    return seconds, model.get_weights()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=Path("."))
    parser.add_argument("--datasets", nargs="+", default=["digits", "fsdd", "sms_spam", "co2"])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()

    import keras
    import numpy as np
    import tensorflow as tf

    import dlworkflow.layers  # the networks' own layers, for loading
    import dlworkflow.models  # noqa: F401

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    print("| dataset | steps an epoch | steps a call | ms a step, 1 a call | ms a step, "
          "few calls | ratio | per round | same weights |")
    print("|---|---:|---:|---:|---:|---:|---|---|")
    for name in args.datasets:
        results = args.project / "results" / name
        path = results / "nn" / "fold-0" / "model.keras"
        model = keras.saving.load_model(path)
        shard = np.load(sorted((results / "tensors").glob("trainval-*.npz"))[0])
        x = shard["x"]
        outputs = model.outputs[0].shape[-1]
        y = shard["y"] if "y" in shard.files else np.random.default_rng(0).integers(
            0, outputs, len(x))
        steps = int(0.8 * len(x)) // 32  # 80 % trains, the rest validates each epoch
        cut = steps * 32
        stream = tf.data.Dataset.from_tensor_slices((x[:cut], y[:cut])).batch(32).repeat()
        valid = tf.data.Dataset.from_tensor_slices((x[cut:], y[cut:])).batch(32)
        per_call = steps_per_call(steps)
        times: dict[int, list[float]] = {1: [], per_call: []}
        ends = {}
        for turn in range(args.rounds):
            for way in ((1, per_call) if turn % 2 == 0 else (per_call, 1)):
                seconds, ends[way] = fitted(path, stream, valid, steps, args.epochs, way)
                times[way].append(1000 * seconds / (steps * args.epochs))
        one, few = np.median(times[1]), np.median(times[per_call])
        same = all(np.array_equal(a, b) for a, b in zip(ends[1], ends[per_call], strict=True))
        rounds = ", ".join(f"{a / b:.2f}" for a, b in zip(times[per_call], times[1], strict=True))
        print(f"| {name} | {steps} | {per_call} | {one:.1f} | {few:.1f} | {few / one:.2f} | "
              f"{rounds} | {'yes' if same else 'NO'} |")


if __name__ == "__main__":
    main()
