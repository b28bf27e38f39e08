"""The series baseline's MiniRocket against aeon's, the maintained library's, on the same series.

    python bench/minirocket_reference.py [--sets acsf1 pickup] [--seeds 5] [--venv DIR]

The issue asked for a ROCKET-family baseline from a maintained library; aeon and sktime pin
pandas below 3.1, so `dlworkflow.estimators.MiniRocket` is written from the paper. This
checks it against aeon's `MiniRocketClassifier` (MiniRocket, scaling, ridge with
cross-validated alpha), installed into a virtual environment of its own (`--venv`, made
with `pip install aeon==AEON` where it is missing: aeon's pandas cannot sit beside ours).

Per UCR set (../shared/data/ucr, the official TRAIN/TEST split) the series are read and
resampled to the longest one's length as the workflow does (`ts` layout, the series
modality's tensors), then each classifier is fitted on TRAIN and scored on TEST for
`--seeds` seeds (the kernels' biases and dilation plan depend on the seed): ours as the
workflow's `minirocket_ridge` baseline builds it (each series z-normalised inside), aeon's
on the same arrays as they are and on the same arrays z-normalised per series (the UCR
archive's convention, which separates the implementations from the normalisation). It
prints the mean and spread of the test accuracy and the seconds per fit and predict.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from dlworkflow.estimators import CLASSIFIER, series_baselines
from dlworkflow.items import Item
from dlworkflow.layouts import LayoutContext, discover
from dlworkflow.modalities import create_modality
from dlworkflow.tasks import get_task

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
SETS = {"acsf1": "ACSF1", "pickup": "PickupGestureWiimoteZ"}
AEON = "1.6.0"

#: run in aeon's environment: {"seed": [accuracy, seconds]} for aeon's classifier, the
#: arrays as given and z-normalised per series
AEON_SCRIPT = """
import json, sys, time
import numpy as np
from aeon.classification.convolution_based import MiniRocketClassifier

data = np.load(sys.argv[1])
seeds = [int(s) for s in sys.argv[2].split(",")]

def znorm(x):
    spread = x.std(axis=2, keepdims=True)
    return (x - x.mean(axis=2, keepdims=True)) / np.where(spread > 0, spread, 1.0)

out = {}
for name, prepare in (("raw", lambda x: x), ("znorm", znorm)):
    train, test = prepare(data["x_train"]), prepare(data["x_test"])
    for seed in seeds:
        start = time.perf_counter()
        model = MiniRocketClassifier(random_state=seed, n_jobs=1).fit(train, data["y_train"])
        accuracy = float((model.predict(test) == data["y_test"]).mean())
        out.setdefault(name, []).append([accuracy, time.perf_counter() - start])
print(json.dumps(out))
"""


def read_set(stem: str) -> dict[str, np.ndarray]:
    """x (series, time) and y per part, read and resampled as the workflow reads them."""
    root = SHARED / "ucr"
    layout = {"kind": "ts", "files": [f"{stem}_TRAIN.ts", f"{stem}_TEST.ts"]}
    found = discover(root, layout, LayoutContext(root, get_task("classification"), (".ts",)))
    if found.rejected:
        raise SystemExit(f"{stem}: {found.rejected[0].path}: {found.rejected[0].reason}")
    modality = create_modality("timeseries", {}, layout)
    length = max(len(modality.channels(item.payload)) for item in found.items)
    arrays: dict[str, list] = {}
    for item in found.items:
        part = item.side["part"]
        x = modality.tensorize(item.payload, Item(item.id, item.path), {"length": length})
        arrays.setdefault(f"x_{part}", []).append(x[:, 0])
        arrays.setdefault(f"y_{part}", []).append(str(item.label))
    return {key: np.asarray(values) for key, values in arrays.items()}


def aeon_python(venv: Path) -> Path:
    """aeon's interpreter, the environment made first where it is missing."""
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"making {venv} with aeon=={AEON} (once)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", f"aeon=={AEON}"], check=True)
    return python


def ours(data: dict[str, np.ndarray], seeds: list[int]) -> list[list[float]]:
    """[accuracy, seconds] per seed for the workflow's minirocket_ridge baseline."""
    rows = []
    for seed in seeds:
        start = time.perf_counter()
        model = series_baselines(CLASSIFIER, {}, seed)["minirocket_ridge"]
        model.fit(data["x_train"], data["y_train"])
        accuracy = float((model.predict(data["x_test"]) == data["y_test"]).mean())
        rows.append([accuracy, time.perf_counter() - start])
    return rows


def summary(rows: list[list[float]]) -> str:
    scores, seconds = np.asarray(rows).T
    return (f"{scores.mean():.4f} ± {scores.std(ddof=1) if len(scores) > 1 else 0.0:.4f} "
            f"(min {scores.min():.4f}, max {scores.max():.4f}) | {seconds.mean():.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", nargs="+", choices=sorted(SETS), default=sorted(SETS))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--venv", type=Path, default=REPO / ".bench-aeon")
    args = parser.parse_args()
    python = aeon_python(args.venv)
    seeds = list(range(args.seeds))
    print("| set | train / test / length | classifier | test accuracy over seeds: mean ± std "
          "(min, max) | seconds a fit and predict |")
    print("|---|---|---|---|---|")
    for name in args.sets:
        data = read_set(SETS[name])
        shape = (f"{len(data['y_train'])} / {len(data['y_test'])} / "
                 f"{data['x_train'].shape[1]}")
        print(f"| {name} | {shape} | ours (`minirocket_ridge`, series as read) | "
              f"{summary(ours(data, seeds))} |", flush=True)
        with tempfile.TemporaryDirectory() as folder:
            arrays = Path(folder) / "arrays.npz"
            np.savez(arrays, **{k: v[:, None, :] if k.startswith("x_") else v
                                for k, v in data.items()})
            done = subprocess.run([str(python), "-c", AEON_SCRIPT, str(arrays),
                                   ",".join(map(str, seeds))],
                                  check=True, capture_output=True, text=True)
        results = json.loads(done.stdout.strip().splitlines()[-1])
        for variant, words in (("raw", "as read"), ("znorm", "z-normalised per series")):
            print(f"| {name} | {shape} | aeon {AEON} `MiniRocketClassifier`, series {words} | "
                  f"{summary(results[variant])} |", flush=True)


if __name__ == "__main__":
    main()
