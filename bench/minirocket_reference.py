"""The series baseline's MiniRocket against aeon's, the maintained library's, on the same series.

    python bench/minirocket_reference.py [--sets acsf1 pickup fsdd_mfcc] [--seeds 5] [--venv DIR]

The issue asked for a ROCKET-family baseline from a maintained library; aeon and sktime pin
pandas below 3.1, so `dlworkflow.estimators.MiniRocket` is written from the paper. This
checks it against aeon's `MiniRocketClassifier` (MiniRocket, MiniRocketMultivariate for
several channels, scaling, ridge with cross-validated alpha), installed into a virtual
environment of its own (`--venv`, made with `pip install aeon==AEON` where it is missing:
aeon's pandas cannot sit beside ours).

Per set (the UCR sets of ../shared/data/ucr with their official TRAIN/TEST split, and
`fsdd_mfcc`, the multivariate set bench/quality.py writes in the UEA archive's format) the
series are read and resampled to the longest one's length as the workflow does (`ts`
layout, the series modality's tensors). Each classifier is then fitted on TRAIN and scored
on TEST for `--seeds` seeds (the kernels' biases and dilation plan depend on the seed):
ours as the workflow's `minirocket_ridge` baseline builds it, on the series as they are
(for several channels also as it was built before it took them in the paper's multivariate
form: the channels end to end); aeon's on the same arrays as they are and on the same
arrays z-normalised per series (the UCR archive's convention). It prints the mean and
spread of the test accuracy and the seconds per fit and predict.
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
SETS = {"acsf1": "ACSF1", "pickup": "PickupGestureWiimoteZ", "fsdd_mfcc": "FSDDMFCC"}
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


def read_set(name: str) -> dict[str, np.ndarray]:
    """x (series, time, channels) and y per part, read and resampled as the workflow reads
    them."""
    stem = SETS[name]
    with tempfile.TemporaryDirectory() as folder:
        root = SHARED / "ucr"
        if name == "fsdd_mfcc":
            sys.path.insert(0, str(Path(__file__).resolve().parent))
            from quality import prepare_fsdd_mfcc

            root = Path(folder)
            prepare_fsdd_mfcc(root)
        layout = {"kind": "ts", "files": [f"{stem}_TRAIN.ts", f"{stem}_TEST.ts"]}
        found = discover(root, layout, LayoutContext(root, get_task("classification"),
                                                     (".ts",)))
    if found.rejected:
        raise SystemExit(f"{stem}: {found.rejected[0].path}: {found.rejected[0].reason}")
    modality = create_modality("timeseries", {}, layout)
    length = max(len(modality.channels(item.payload)) for item in found.items)
    arrays: dict[str, list] = {}
    for item in found.items:
        part = item.side["part"]
        x = modality.tensorize(item.payload, Item(item.id, item.path), {"length": length})
        arrays.setdefault(f"x_{part}", []).append(x)
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


def ours(data: dict[str, np.ndarray], seeds: list[int], end_to_end: bool = False
         ) -> list[list[float]]:
    """[accuracy, seconds] per seed for the workflow's minirocket_ridge baseline on the
    modality's flat rows, told the channels as the task tells it (`end_to_end`: not told,
    the channels one long series, as before the multivariate form)."""
    flat = create_modality("timeseries", {}, {"kind": "ts"}).flat
    rows = []
    for seed in seeds:
        start = time.perf_counter()
        model = series_baselines(CLASSIFIER, {}, seed)["minirocket_ridge"]
        if not end_to_end:
            model = get_task("classification").prepare_baseline(model, {},
                                                                {"x": data["x_train"]})
        model.fit(flat(data["x_train"], {}), data["y_train"])
        accuracy = float((model.predict(flat(data["x_test"], {})) == data["y_test"]).mean())
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
        data = read_set(name)
        channels = data["x_train"].shape[2]
        shape = (f"{len(data['y_train'])} / {len(data['y_test'])} / "
                 f"{data['x_train'].shape[1]}" + (f" x {channels} channels" if channels > 1
                                                  else ""))
        print(f"| {name} | {shape} | ours (`minirocket_ridge`, series as read) | "
              f"{summary(ours(data, seeds))} |", flush=True)
        if channels > 1:
            print(f"| {name} | {shape} | ours, the channels end to end (before) | "
                  f"{summary(ours(data, seeds, end_to_end=True))} |", flush=True)
        with tempfile.TemporaryDirectory() as folder:
            arrays = Path(folder) / "arrays.npz"
            np.savez(arrays, **{k: v.transpose(0, 2, 1) if k.startswith("x_") else v
                                for k, v in data.items()})  # aeon's (series, channels, time)
            done = subprocess.run([str(python), "-c", AEON_SCRIPT, str(arrays),
                                   ",".join(map(str, seeds))],
                                  check=True, capture_output=True, text=True)
        results = json.loads(done.stdout.strip().splitlines()[-1])
        for variant, words in (("raw", "as read"), ("znorm", "z-normalised per series")):
            print(f"| {name} | {shape} | aeon {AEON} `MiniRocketClassifier`, series {words} | "
                  f"{summary(results[variant])} |", flush=True)


if __name__ == "__main__":
    main()
