"""How long `fit` waits after its last epoch, with tf.data's autotuning and without it.

    python bench/teardown.py [--seconds 20] [--rounds 3]

Each fit trains a small dense network on an endless in-RAM stream built as
`FoldData.stream` builds it (a seeded shuffle of the rows each pass, batched), with a
validation set, for about `--seconds`. The two ways take turns in one process, from the
same initial weights: the stream prefetched with `tf.data.AUTOTUNE` and autotuning on
(tf.data's default, what the workflow did before), and `dlworkflow.data.untuned` (what it
does now). Per fit it prints the ms a step, the seconds from the end of the last epoch to
`fit` returning (deleting the training iterator), the seconds summed over the epochs from
the end of validation to the end of the epoch (deleting each validation iterator), and
whether the trained weights are the same as the other way's. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np

CLASSES, BATCH = 10, 32


def stream(x, y, autotuned: bool):
    import tensorflow as tf

    from dlworkflow.tfdata import untuned

    rows = tf.data.Dataset.from_tensor_slices((x, y))

    def one_pass(number):
        return rows.shuffle(len(y), seed=1_000_003 + number,  # as FoldData.stream seeds
                            reshuffle_each_iteration=False).batch(BATCH)

    endless = tf.data.Dataset.range(1 << 40).flat_map(one_pass)
    return endless.prefetch(tf.data.AUTOTUNE) if autotuned else untuned(endless, prefetch=2)


def valid_batches(x, y, autotuned: bool):
    import tensorflow as tf

    from dlworkflow.tfdata import untuned

    batches = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH)
    return batches if autotuned else untuned(batches)


def one_fit(model, initial, data, autotuned: bool, epochs: int, steps: int) -> dict:
    import keras

    marks: dict[str, list[float]] = {"test_end": [], "epoch_end": [], "train_end": []}

    class Clock(keras.callbacks.Callback):
        def on_test_end(self, logs=None):
            marks["test_end"].append(time.perf_counter())

        def on_epoch_end(self, epoch, logs=None):
            marks["epoch_end"].append(time.perf_counter())

        def on_train_end(self, logs=None):
            marks["train_end"].append(time.perf_counter())

    model.set_weights(initial)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss="sparse_categorical_crossentropy")
    x, y, vx, vy = data
    started = time.perf_counter()
    model.fit(stream(x, y, autotuned), steps_per_epoch=steps, epochs=epochs,
              validation_data=valid_batches(vx, vy, autotuned), verbose=0,
              callbacks=[Clock()])
    returned = time.perf_counter()
    after_validation = sum(end - test for test, end in zip(marks["test_end"],
                                                           marks["epoch_end"], strict=True))
    ends = marks["epoch_end"]
    return {"ms_step": 1000 * ((ends[-1] - ends[0]) / ((epochs - 1) * steps) if epochs > 1
                               else (ends[-1] - started) / steps),  # after the tracing epoch
            "return_s": returned - marks["train_end"][0],
            "after_validation_s": after_validation,
            "weights": [w.copy() for w in model.get_weights()]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=40.0, help="about this long a fit")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="TensorFlow's op threads")
    parser.add_argument("--beside", action="store_true",
                        help="train a second network in another process meanwhile, as the "
                        "demo runs two fold jobs on 2 cores")
    parser.add_argument("--rows", type=int, default=2160, help="training rows (FSDD's folds)")
    parser.add_argument("--features", type=int, default=4040,
                        help="floats a row (FSDD's log-mel: 101 frames x 40 bands)")
    args = parser.parse_args()
    if args.beside:  # the neighbour: this bench without a neighbour, for longer
        import subprocess
        neighbour = subprocess.Popen(
            [sys.executable, __file__, "--seconds", str(args.seconds * 3),
             "--rounds", str(args.rounds * 2 + 2), "--threads", str(args.threads)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        measure(args)
    finally:
        if args.beside:
            neighbour.kill()


def measure(args: argparse.Namespace) -> None:
    import keras
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    keras.utils.set_random_seed(1)  # (a global seed of 0 cannot take a tensor op seed)
    tf.config.experimental.enable_op_determinism()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.rows, args.features)).astype(np.float32)
    y = rng.integers(0, CLASSES, args.rows)
    vx = rng.normal(size=(args.rows // 4, args.features)).astype(np.float32)
    vy = rng.integers(0, CLASSES, args.rows // 4)
    model = keras.Sequential([keras.Input((args.features,)), keras.layers.Dense(256, "relu"),
                              keras.layers.Dense(256, "relu"),
                              keras.layers.Dense(CLASSES, "softmax")])
    initial = model.get_weights()
    steps = -(-args.rows // BATCH)
    probe = one_fit(model, initial, (x, y, vx, vy), False, 3, steps)  # traces, times a step
    epochs = max(2, round(args.seconds / (probe["ms_step"] * steps / 1000)))
    print(f"{epochs} epochs of {steps} steps a fit, {args.rounds} rounds, the ways taking "
          "turns\n")
    print("| round | way | ms a step | last epoch to fit's return s | "
          "validation to epoch end s (summed) | same weights as the other way |")
    print("|---:|---|---:|---:|---:|---|")
    found: dict[str, list[dict]] = {"autotuned": [], "untuned": []}
    for number in range(args.rounds):
        ways = ("autotuned", "untuned") if number % 2 == 0 else ("untuned", "autotuned")
        results = {way: one_fit(model, initial, (x, y, vx, vy), way == "autotuned", epochs,
                                steps) for way in ways}
        same = all(np.array_equal(a, b) for a, b in zip(results["autotuned"]["weights"],
                                                        results["untuned"]["weights"],
                                                        strict=True))
        for way in ways:
            result = results[way]
            found[way].append(result)
            print(f"| {number + 1} | {way} | {result['ms_step']:.1f} | "
                  f"{result['return_s']:.2f} | {result['after_validation_s']:.2f} | "
                  f"{'yes' if same else 'no'} |")
    print()
    for way, results in found.items():
        print(f"{way}: median ms a step {statistics.median(r['ms_step'] for r in results):.1f}, "
              f"fit's return {statistics.median(r['return_s'] for r in results):.2f} s "
              f"(at most {max(r['return_s'] for r in results):.2f}), validation teardown "
              f"{statistics.median(r['after_validation_s'] for r in results):.2f} s a fit")


if __name__ == "__main__":
    main()
