"""Model quality of the shipped defaults on a visible benchmark suite, as tables.

    python bench/quality.py run [--sets pickup acsf1 ...] [--out bench-runs] [--cores 2]
    python bench/quality.py table bench-runs/<set>/results [...]

`run` prepares each set as a user would (raw files under data/raw/<set>/, a params.yaml
that is the shipped one with only the dataset entry added) in a project folder of its own,
runs the real workflow (`snakemake --cores N --resources gpu=1`) and prints, per set: the
best baseline's CV score, the network's CV score, the shipped model's test score with its
interval, the other model's, their paired difference on the test with its interval, the
published reference, the network's CV lead over the baseline fold by fold with the final
step's verdict on it (`dlworkflow.evaluate.paired_folds`: the corrected t, beyond or within
the folds' noise), and seconds per fold. One recipe for all: no set gets
settings of its own beyond what describes its data (layout, task, a predefined test split).
The data come from ../shared/data (see its README), and the photo set `fashion` from Debian's
dataset-fashion-mnist package; docs/BENCHMARKS.md records the tables.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from dlworkflow.evaluate import paired_folds
from dlworkflow.provenance import describe

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
WORKFLOW_FILES = ("Snakefile", "rules", "scripts", "schemas", "profiles", "src", "report")

#: published reference per set: (metric, value, source)
REFERENCES = {
    "digits": ("accuracy", 0.97, "scikit-learn example, SVC on a 50 % hold-out"),
    "fsdd": ("accuracy", 0.97, "sound-mnist CNN on MFCCs"),
    "sms_spam": ("f_beta", None, "Almeida et al. 2011: linear SVM accuracy 0.9764"),
    "co2": ("mase", 1.0, "seasonal naive (MASE 1 by construction)"),
    "subj": ("accuracy", 0.896, "Kim 2014 CNN-rand (NBSVM 0.932)"),
    "subj_3775": ("accuracy", None, "SUBJ, 3,775 sentences drawn with the seed (CR's size; "
                                    "CR: Kim 2014 CNN-rand 0.798, NBSVM 0.818)"),
    "trec": ("accuracy", 0.912, "Kim 2014 CNN-rand (SVM 0.950)"),
    "acsf1": ("accuracy", 0.64, "UCR 1-NN DTW (1-NN Euclidean 0.54)"),
    "pickup": ("accuracy", 0.66, "UCR 1-NN DTW (1-NN Euclidean 0.64)"),
    "fsdd_mfcc": ("accuracy", None, "FSDD as 13 MFCC series a recording, UEA .ts files "
                  "(JapaneseVowels' kind); fsdd_train30's recordings"),
    "digits_10": ("accuracy", None, "digits, 10 items per class, the test capped too (20)"),
    "digits_30": ("accuracy", None, "digits, 30 items per class, the test capped too (60)"),
    "fsdd_10": ("accuracy", None, "FSDD, 10 items per class, the test capped too (5)"),
    "fsdd_30": ("accuracy", None, "FSDD, 30 items per class, the test capped too (33)"),
    "digits_train10": ("accuracy", None, "digits, 10 trainval items per class, a fixed "
                                         "test set of 360 (36 a class)"),
    "digits_train30": ("accuracy", None, "digits, 30 trainval items per class, a fixed "
                                         "test set of 360 (36 a class)"),
    "fsdd_train10": ("accuracy", None, "FSDD, 10 trainval items per class, the whole "
                                       "conventional test set (300)"),
    "fsdd_train30": ("accuracy", None, "FSDD, 30 trainval items per class, the whole "
                                       "conventional test set (300)"),
    "m4_hourly": ("mase", 1.193, "M4 Hourly, seasonal naive (Naive2 2.395, ETS 1.824, "
                                 "best entry 0.893; Makridakis et al. 2020)"),
    "m4_weekly": ("mase", 2.527, "M4 Weekly, ETS (Naive2 2.777, best entry 2.356; "
                                 "Makridakis et al. 2020)"),
    "fashion": ("accuracy", None, "Fashion-MNIST (Xiao et al. 2017), 206 photos a class as "
                                  "28x28 PNG folders; full-set logistic regression 0.84"),
    "fsdd_png": ("accuracy", None, "FSDD recordings as 64x64 log-mel PNGs, 100 a digit: an "
                 "image set with real detail at 64 px that ImageNet never saw"),
    "yearly_tsf": ("mase", None, "M4 Weekly summed to years, as a Monash .tsf file (no "
                                 "published figure; M4 Yearly for scale: ETS 3.444)"),
}


def prepare_ucr(name: str, stem: str) -> Callable[[Path], dict]:
    """A UCR set as the archive ships it: its TRAIN and TEST .ts files, read by the `ts`
    layout (the TEST file is the test set)."""
    def prepare(root: Path) -> dict:
        for part in ("TRAIN", "TEST"):
            shutil.copy(SHARED / "ucr" / f"{stem}_{part}.ts", root)
        return {"modality": "timeseries", "task": "classification", "layout": {"kind": "ts"}}
    return prepare


def _utf8_lines(path: Path) -> list[str]:
    """The file's lines; Latin-1 bytes (SUBJ, TREC) read as what they are. Split at line
    feeds only: `str.splitlines` also splits at byte 0x85 (NEL in Latin-1), which occurs
    inside SUBJ sentences and made 13 bogus one-item classes of their tails."""
    return [line.rstrip("\r") for line in path.read_bytes().decode("latin-1").split("\n")]


def prepare_subj(count: int | None = None) -> Callable[[Path], dict]:
    """SUBJ: 10,000 sentences, `label sentence`; no official split (held-out test, CV). With
    `count`, that many drawn with the shipped seed, in the file's order: a two-class
    sentence set of a hidden sentiment set's size (CR, Hu and Liu 2004: 3,775 sentences)."""
    def prepare(root: Path) -> dict:
        lines = [line for line in _utf8_lines(SHARED / "sentences" / "subj.all")
                 if line.strip()]
        if count is not None:
            kept = np.random.default_rng(_shipped_seed()).choice(len(lines), count,
                                                                 replace=False)
            lines = [lines[i] for i in np.sort(kept)]
        (root / "subj.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        return {"modality": "text", "task": "classification",
                "layout": {"kind": "delimited", "file": "subj.txt", "delimiter": " ",
                           "fields": ["label", "text"]}}
    return prepare


def prepare_trec(root: Path) -> dict:
    """TREC: question types; the official 500-question test set as the test rows."""
    lines = []
    for part, name in (("train", "TREC.train.all"), ("test", "TREC.test.all")):
        lines += [f"{part} {line}" for line in _utf8_lines(SHARED / "sentences" / name)
                  if line.strip()]
    (root / "trec.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"modality": "text", "task": "classification",
            "layout": {"kind": "delimited", "file": "trec.txt", "delimiter": " ",
                       "fields": ["part", "label", "text"]},
            "split": {"test": {"column": "side_part", "values": ["test"]}}}


#: Fashion-MNIST as Debian's dataset-fashion-mnist package installs it (MIT licence)
FASHION = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ("t_shirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                   "sneaker", "bag", "ankle_boot")


def fashion_arrays(per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """The first `per_class` images (28x28 uint8) of each class of Fashion-MNIST's training
    file and their labels (0-9), class after class."""
    import gzip

    with gzip.open(FASHION / "train-images-idx3-ubyte.gz") as handle:
        images = np.frombuffer(handle.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(FASHION / "train-labels-idx1-ubyte.gz") as handle:
        labels = np.frombuffer(handle.read(), np.uint8, offset=8)
    keep = np.concatenate([np.flatnonzero(labels == label)[:per_class]
                           for label in range(len(FASHION_CLASSES))])
    return images[keep], labels[keep]


def prepare_fashion(root: Path) -> dict:
    """A photo set nobody tuned for, the size of a user's first one: the first 206 images of
    each class of Fashion-MNIST's training file (2,060, like a hand-sign set of 10 classes) as
    grayscale PNGs, one folder per class, with the shipped image settings (64x64 RGB) and
    the workflow's own test split. Needs `apt-get install dataset-fashion-mnist`."""
    from PIL import Image

    images, labels = fashion_arrays(206)
    for name in FASHION_CLASSES:
        (root / name).mkdir()
    for rank, (image, label) in enumerate(zip(images, labels, strict=True)):
        Image.fromarray(image).save(root / FASHION_CLASSES[label] / f"{rank % 206:03d}.png")
    return {"modality": "image", "task": "classification", "layout": {"kind": "folders"}}


def prepare_fsdd_png(root: Path) -> dict:
    """An image set unlike the other two: its 64 px carry real detail (Fashion-MNIST is 28 px
    and the digit scans 8, both enlarged), and its pictures are not photos of objects. 100
    FSDD recordings a digit (1,000, drawn with the shipped seed), each the first second's
    log-mel spectrogram (64 mel bands, 64 frames of 125 samples, 80 dB range) scaled to
    0-255 as a 64x64 grayscale PNG, low frequencies at the bottom, one folder per digit, with
    the shipped image settings and the workflow's own test split, as a user with spectrogram
    pictures would bring them."""
    import soundfile
    from PIL import Image

    from dlworkflow.demo import cap_per_class
    from dlworkflow.modalities.audio import log_mel

    wavs = sorted((SHARED / "fsdd" / "recordings").glob("*.wav"))
    digits = [p.name.split("_", 1)[0] for p in wavs]
    for digit in sorted(set(digits)):
        (root / digit).mkdir()
    for index in cap_per_class(digits, 100, _shipped_seed()):
        sound, rate = soundfile.read(wavs[index], dtype="float32")
        second = np.zeros(rate + 256, np.float32)  # 64 whole frames of the first second
        second[: min(rate, len(sound))] = sound[:rate]
        cells = log_mel(second, rate, n_mels=64, n_fft=256, hop=rate // 64)[:, :64]
        span = max(float(cells.max() - cells.min()), 1e-6)
        pixels = np.rint((cells - cells.min()) * (255.0 / span)).astype(np.uint8)
        Image.fromarray(pixels[::-1], mode="L").save(root / digits[index] /
                                                     f"{wavs[index].stem}.png")
    return {"modality": "image", "task": "classification", "layout": {"kind": "folders"}}


def _shipped_seed() -> int:
    return int(yaml.safe_load((REPO / "params.yaml").read_text())["seed"])


def _demo_entry(source: str) -> dict:
    """A demo source's dataset entry (schemas/demo_datasets.yaml), less its description."""
    entry = yaml.safe_load((REPO / "schemas" / "demo_datasets.yaml").read_text())[source]
    return {key: value for key, value in entry.items() if key != "description"}


def fsdd_learning_curve(per_class: int) -> tuple[list[Path], list[Path]]:
    """(test, training) FSDD recordings as a learning curve is measured: the 300 of takes
    0-4 (the conventional test set) all kept, and `per_class` recordings of each digit drawn
    with the shipped seed from the 2,700 others."""
    from dlworkflow.demo import cap_per_class

    wavs = sorted((SHARED / "fsdd" / "recordings").glob("*.wav"))
    takes = [int(p.stem.rsplit("_", 1)[1]) for p in wavs]
    pool = [p for p, take in zip(wavs, takes, strict=True) if take >= 5]
    test = [p for p, take in zip(wavs, takes, strict=True) if take < 5]
    return test, [pool[i] for i in cap_per_class([p.name.split("_", 1)[0] for p in pool],
                                                 per_class, _shipped_seed())]


def prepare_fsdd_training(per_class: int) -> Callable[[Path], dict]:
    """FSDD with a small training set and the whole conventional test set
    (`fsdd_learning_curve`). The demo's own cap (`fsdd_10`, `fsdd_30`) caps the test set
    too: 5 and 33 recordings, too few for the test to tell two models apart. The dataset
    entry is the demo's."""
    def prepare(root: Path) -> dict:
        test, train = fsdd_learning_curve(per_class)
        (root / "recordings").mkdir()
        for path in test + train:
            shutil.copyfile(path, root / "recordings" / path.name)
        shutil.copyfile(SHARED / "fsdd" / "speakers.csv", root / "speakers.csv")
        return _demo_entry("fsdd")
    return prepare


def prepare_fsdd_mfcc(root: Path) -> dict:
    """A multivariate series set of JapaneseVowels' kind (UEA archive: 12 cepstral
    coefficients of spoken vowels a frame, 7-29 frames, 270 training and 370 test cases):
    `fsdd_train30`'s recordings (30 a digit to train on, the 300 of takes 0-4 to test) as 13
    MFCCs a 10 ms frame (25 ms windows, the speech standard), 15-115 frames, written as the
    UEA archive writes a multivariate set (FSDDMFCC_TRAIN.ts, FSDDMFCC_TEST.ts: one
    dimension per coefficient, unequal lengths) and read by the `ts` layout as it is."""
    import librosa
    import soundfile

    header = ("@problemName FSDDMFCC\n@timeStamps false\n@missing false\n@univariate false\n"
              "@dimensions 13\n@equalLength false\n@classLabel true 0 1 2 3 4 5 6 7 8 9\n"
              "@data\n")
    for part, paths in zip(("TEST", "TRAIN"), fsdd_learning_curve(30), strict=True):
        cases = []
        for path in paths:
            sound, rate = soundfile.read(path, dtype="float32")
            mfcc = librosa.feature.mfcc(y=sound, sr=rate, n_mfcc=13, n_fft=256,
                                        win_length=rate // 40, hop_length=rate // 100)
            cases.append(":".join(",".join(f"{v:.5g}" for v in row) for row in mfcc)
                         + ":" + path.name.split("_", 1)[0])
        (root / f"FSDDMFCC_{part}.ts").write_text(header + "\n".join(cases) + "\n")
    return {"modality": "timeseries", "task": "classification", "layout": {"kind": "ts"}}


def prepare_digits_training(per_class: int) -> Callable[[Path], dict]:
    """scikit-learn's digits with a small training set and a fixed test set, as FSDD's
    learning-curve sets (`prepare_fsdd_training`): 36 images a class (360, a fifth) drawn
    with the shipped seed as the test set, `per_class` a class drawn from the rest to train
    and validate on. Files `<label>_<part>_<index>.png`; the part is the test rule. The
    demo's image settings (16x16 grayscale)."""
    def prepare(root: Path) -> dict:
        from PIL import Image
        from sklearn.datasets import load_digits

        from dlworkflow.demo import cap_per_class

        seed = _shipped_seed()
        digits = load_digits()
        pixels = np.rint(digits.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
        test = cap_per_class(digits.target, 36, seed)
        rest = np.setdiff1d(np.arange(len(digits.target)), test)
        train = rest[cap_per_class(digits.target[rest], per_class, seed)]
        for part, indices in (("test", test), ("train", train)):
            for index in indices:
                Image.fromarray(pixels[index], mode="L").save(
                    root / f"{digits.target[index]}_{part}_{index:04d}.png")
        return {"modality": "image", "task": "classification",
                "layout": {"kind": "filename_regex", "glob": "*.png",
                           "regex": r"(?P<label>\d)_(?P<part>test|train)_\d+\.png"},
                "tensors": _demo_entry("sklearn_digits")["tensors"],
                "split": {"test": {"column": "side_part", "values": ["test"]}}}
    return prepare


def prepare_m4(frequency: str, horizon: int, alias: str | None) -> Callable[[Path], dict]:
    """An M4 frequency as the competition ships it: the wide train file and the test file
    with each series' next `horizon` values (the test window), read by the `wide_csv`
    layout; `alias` sets the MASE season as the M4 does (hourly 24; weekly none: 1)."""
    def prepare(root: Path) -> dict:
        for part in ("train", "test"):
            shutil.copy(SHARED / "m4" / f"{frequency}-{part}.csv", root)
        return {"modality": "timeseries", "task": "forecasting",
                "layout": {"kind": "wide_csv", "file": f"{frequency}-train.csv",
                           "test_file": f"{frequency}-test.csv", "id_column": "V1",
                           "frequency": alias},
                "split": {"horizon": horizon}}
    return prepare


def prepare_yearly_tsf(root: Path) -> dict:
    """Many short yearly series in the Monash archive's format, as a user's first set of
    them would come: the 359 M4 Weekly series summed over their complete years (1-49 years,
    half under 17), horizon 6 from the file's header, nothing else written."""
    sys.path.insert(0, str(REPO))
    from tests.helpers.series import write_yearly_tsf, yearly_series

    write_yearly_tsf(root / "yearly.tsf", yearly_series(359))
    return {"modality": "timeseries", "task": "forecasting", "layout": {"kind": "tsf"}}


#: set -> how its data is prepared (None: a demo set, prepared by the workflow itself)
PREPARE: dict[str, Callable[[Path], dict] | None] = {
    "digits": None, "fsdd": None, "sms_spam": None, "co2": None,
    "subj": prepare_subj(), "subj_3775": prepare_subj(3775), "trec": prepare_trec,
    "acsf1": prepare_ucr("acsf1", "ACSF1"), "pickup": prepare_ucr("pickup",
                                                                 "PickupGestureWiimoteZ"),
    "digits_10": None, "digits_30": None, "fsdd_10": None, "fsdd_30": None,
    "digits_train10": prepare_digits_training(10),
    "digits_train30": prepare_digits_training(30),
    "fsdd_train10": prepare_fsdd_training(10), "fsdd_train30": prepare_fsdd_training(30),
    "fsdd_mfcc": prepare_fsdd_mfcc,
    "m4_hourly": prepare_m4("Hourly", 48, "H"),
    "m4_weekly": prepare_m4("Weekly", 13, None),
    "yearly_tsf": prepare_yearly_tsf,
    "fashion": prepare_fashion,
    "fsdd_png": prepare_fsdd_png,
}

#: the files a set is prepared from, where they are not the demo's own downloads, and how to
#: get them: checked for every set before the first one starts
NEEDS: dict[str, tuple[Path, str]] = {
    **{name: (SHARED / folder, "../shared/data/README.md")
       for folder, names in {"sentences": ("subj", "subj_3775", "trec"),
                             "ucr": ("acsf1", "pickup"),
                             "fsdd": ("fsdd_train10", "fsdd_train30", "fsdd_mfcc",
                                      "fsdd_png"),
                             "m4": ("m4_hourly", "m4_weekly", "yearly_tsf")}.items()
       for name in names},
    "fashion": (FASHION, "apt-get install dataset-fashion-mnist"),
}


def missing_data(names: list[str]) -> list[str]:
    """What each of `names` lacks to be prepared, in words (nothing when all is there)."""
    return [f"{name}: {NEEDS[name][0]} is missing ({NEEDS[name][1]})" for name in names
            if name in NEEDS and not NEEDS[name][0].is_dir()]


def make_project(name: str, out: Path) -> Path:
    """A project folder with the workflow, the shipped params and only this set."""
    project = out / name
    if project.exists():
        shutil.rmtree(project)
    project.mkdir(parents=True)
    for item in WORKFLOW_FILES:
        source = REPO / item
        if source.is_dir():
            shutil.copytree(source, project / item, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, project / item)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["demo"]["shared_data"] = str(SHARED)
    capped = re.fullmatch(r"(.+)_(\d+)", name)  # digits_10; not co2
    base, per_class = capped.groups() if capped else (name, "")
    if PREPARE[name] is None:  # a demo set, whole or capped per class
        params["datasets"] = {base: params["datasets"][base]}
        if per_class:
            params["demo"]["max_per_class"] = int(per_class)
    else:
        root = project / "data" / "raw" / name
        root.mkdir(parents=True)
        params["datasets"] = {name: {"description": REFERENCES[name][2],
                                     "root": f"data/raw/{name}", **PREPARE[name](root)}}
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return project


def run_workflow(project: Path, cores: int, name: str) -> bool:
    """Run the workflow in `project` (its output in bench.log); say how long it took."""
    started = time.time()
    done = subprocess.run(["snakemake", "--cores", str(cores), "--resources", "gpu=1"],
                          cwd=project, capture_output=True, text=True, check=False)
    (project / "bench.log").write_text(done.stdout + done.stderr)
    if done.returncode:
        print(f"{name}: the workflow failed, see {project / 'bench.log'}", file=sys.stderr)
        return False
    print(f"{name}: {time.time() - started:.0f} s", file=sys.stderr)
    return True


def run(names: list[str], out: Path, cores: int) -> None:
    """Run the workflow on each set; print its row as soon as it is done. Nothing starts
    while a set's data are missing; a set whose workflow fails does not stop the others, and
    the exit status says that one did."""
    lacking = missing_data(names)
    if lacking:
        raise SystemExit("nothing run, data missing:\n  " + "\n  ".join(lacking))
    failed = []
    for name in names:
        project = make_project(name, out)
        if run_workflow(project, cores, name):
            table([project / "results"])
        else:
            failed.append(name)
    if failed:
        raise SystemExit(f"the workflow failed on {', '.join(failed)} (bench.log in each)")


def fmt(entry: dict) -> str:
    return f"{entry['mean']:.4f} ± {entry['std']:.4f}"


def interval(entry: dict) -> str:
    return f"{entry['value']:.4f} [{entry['low']:.4f}, {entry['high']:.4f}]"


def others(network: dict) -> str:
    """The CV means of the networks the folds trained beside the best (auto's transfer
    network and the one from scratch), in brackets; nothing for one network."""
    rest = [f"{name} {entry[network['primary']]['mean']:.4f}"
            for name, entry in network["models"].items() if name != network["best"]]
    return f" ({', '.join(rest)})" if rest else ""


def table(result_folders: list[Path]) -> None:
    """One row per dataset of each results folder."""
    print("| set | metric | best baseline (CV) | network (CV) | shipped: test [95 % CI] | "
          "other model (test) | shipped − other (test) [95 %] | reference | "
          "network's CV lead (corrected t) | s per network fold |")
    print("|---|---|---|---|---|---|---|---|---|---:|")
    made_with: dict[str, list[str]] = {}  # the versions that decide the numbers, and where
    for results in result_folders:
        for folder in sorted(p for p in results.iterdir() if (p / "final" / "test_metrics.json")
                             .exists()):
            base = json.loads((folder / "baseline" / "summary.json").read_text())
            network = json.loads((folder / "nn" / "summary.json").read_text())
            test = json.loads((folder / "final" / "test_metrics.json").read_text())
            primary = network["primary"]
            shipped = test["shipped"]["shipped"]
            other = "baseline" if shipped == "network" else "network"
            name = results.parent.name if results.parent.name in REFERENCES else folder.name
            card = json.loads((folder / "final" / "model.json").read_text())
            made_with.setdefault(describe(card["environment"]) if "environment" in card
                                 else "versions not recorded", []).append(name)
            reference = REFERENCES.get(name, (None, None, ""))
            # a fold's network time: both networks' where auto trained one from scratch beside
            benchmarks = results.parent / "benchmarks" / folder.name
            times = [pd.read_csv(f, sep="\t")["s"].iloc[0]
                     for f in sorted(benchmarks.glob("train_fold-*.tsv"))]
            times = [t + sum(pd.read_csv(f, sep="\t")["s"].iloc[0] for f in
                             benchmarks.glob(f"train_scratch_fold-{k}.tsv"))
                     for k, t in enumerate(times)]
            seconds = f"{sum(times) / len(times):.0f}" if times else "-"
            value = f"{reference[1]}" if reference[1] is not None else "-"
            paired = test.get("comparison")  # the paired bootstrap of the final step
            difference = (f"{paired['shipped_minus_other']:+.4f} [{paired['low']:+.4f}, "
                          f"{paired['high']:+.4f}]" if paired else "-")
            lead = paired_folds(network["models"][network["best"]][primary].get("folds", []),
                                base["models"][base["best"]][primary].get("folds", []),
                                network["greater_is_better"])  # as the final step weighs it
            verdict = (f"{lead['mean']:+.4f} ({lead['t_corrected']:.2f}, "
                       f"{'beyond' if lead['beyond_noise'] else 'within'} the noise)"
                       if lead else "-")
            print(f"| {name} | {primary} | {base['best']}: "
                  f"{fmt(base['models'][base['best']][primary])} | {network['best']}: "
                  f"{fmt(network['models'][network['best']][primary])}{others(network)} | {shipped} "
                  f"{test[shipped]['model']}: {interval(test[shipped]['metrics'][primary])} | "
                  f"{test[other]['model']}: {test[other]['metrics'][primary]['value']:.4f} | "
                  f"{difference} | {value} ({reference[2]}) | {verdict} | {seconds} |"
                  if other in test else
                  f"| {name} | {primary} | - | - | {shipped} | - | - | {value} | - | {seconds} |")
    for versions, names in made_with.items():
        print(f"\nMade with {versions}" + (f" ({', '.join(names)})" if len(made_with) > 1 else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run", help="run the workflow on benchmark sets")
    run_parser.add_argument("--sets", nargs="+", default=list(PREPARE), choices=list(PREPARE))
    run_parser.add_argument("--out", type=Path, default=REPO / "bench-runs")
    run_parser.add_argument("--cores", type=int, default=2)
    table_parser = sub.add_parser("table", help="print the table of finished results folders")
    table_parser.add_argument("results", type=Path, nargs="+")
    args = parser.parse_args()
    if args.command == "run":
        run(args.sets, args.out, args.cores)
    else:
        table(args.results)


if __name__ == "__main__":
    main()
