"""What averaging a long series down costs series_fcn: seconds per optimizer step of the
network built for every step (`train.series.network_steps: 0`) against the shipped default
(512: ACSF1's 1,460 steps averaged down by 3 to 487), on the real ACSF1 training series
from ../shared/data/ucr (labels as given), a fold job's batch of 32 and thread count.

    python bench/series_steps.py [--threads 1] [--steps 40] [--rounds 3]

The two builds take turns within each round, the order alternating, so the machine's drift
falls on both alike; the first epoch of each fit (tracing) is not timed. Nothing is
asserted; docs/BENCHMARKS.md records the output.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

UCR = Path(__file__).resolve().parents[2] / "shared" / "data" / "ucr"


def acsf1() -> tuple:
    """ACSF1's training series (100 of 1,460 steps) and their labels from the .ts file."""
    import numpy as np

    rows, labels = [], []
    text = (UCR / "ACSF1_TRAIN.ts").read_text(encoding="latin-1")
    body = text[text.lower().index("@data") + len("@data"):]
    for line in body.split("\n"):
        if line.strip():
            values, label = line.strip().rsplit(":", 1)
            rows.append([float(v) for v in values.split(",")])
            labels.append(label)
    classes = sorted(set(labels))
    return (np.asarray(rows, dtype="float32")[..., None],
            np.asarray([classes.index(label) for label in labels]), len(classes))


def build(x, classes: int, network_steps: int, seed: int):
    import keras

    from dlworkflow.models.networks import NetworkSpec, build_network
    from dlworkflow.tasks import get_task

    keras.utils.set_random_seed(seed)
    norm = keras.layers.Normalization(axis=None)
    norm.adapt(x)
    task = get_task("classification")
    spec = NetworkSpec(task=task, input_shape=x.shape[1:], input_dtype="float32",
                       outputs=classes, preprocessing=[norm], seed=seed,
                       settings={"l2": 1e-4, "dropout": 0.3,
                                 "series": {"network_steps": network_steps}})
    model = build_network("series_fcn", spec)
    loss, metrics = task.loss()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss, metrics=metrics)
    return model


def seconds_per_step(x, y, classes: int, network_steps: int, steps: int) -> float:
    import tensorflow as tf

    model = build(x, classes, network_steps, seed=1)
    batches = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=1).repeat()
    batches = batches.batch(32, drop_remainder=True)
    model.fit(batches, epochs=1, steps_per_epoch=3, verbose=0)  # tracing
    start = time.perf_counter()
    model.fit(batches, epochs=1, steps_per_epoch=steps, verbose=0)
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import numpy as np
    import tensorflow as tf

    from dlworkflow.models.networks import series_steps_factor

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    x, y, classes = acsf1()
    times: dict[int, list[float]] = {0: [], 512: []}
    for round_ in range(args.rounds):
        order = (0, 512) if round_ % 2 == 0 else (512, 0)
        for network_steps in order:
            times[network_steps].append(seconds_per_step(x, y, classes, network_steps,
                                                         args.steps))
    full, down = np.median(times[0]), np.median(times[512])
    print(f"ACSF1 train ({len(x)} series of {x.shape[1]} steps), series_fcn, batch 32, "
          f"{args.threads} thread(s), {args.rounds} rounds of {args.steps} timed steps each")
    print("| network_steps | steps convolved | s per step (median) | rounds |")
    print("|---|---:|---:|---|")
    print(f"| 0 (every step) | {x.shape[1]} | {full:.3f} | "
          f"{', '.join(f'{t:.3f}' for t in times[0])} |")
    factor = series_steps_factor(x.shape[1], {"series": {"network_steps": 512}})
    print(f"| 512 (default) | {-(-x.shape[1] // factor)} | {down:.3f} | "
          f"{', '.join(f'{t:.3f}' for t in times[512])} |")
    print(f"ratio every step / default: {full / down:.2f}")


if __name__ == "__main__":
    main()
