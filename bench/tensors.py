"""Benchmark step 3: tensorisation speed, epoch input speed, and memory growth.

    python bench/tensors.py [--items 2000]

P1  tensorisation items/s per core against a bare loop that only decodes and resizes
    (PIL for images; soundfile + resampling + log-mel for audio, so both compute the same
    array) and writes nothing, in one process taking turns shard by shard (the ratio and
    its range over the passes); 2 shard jobs vs 1 (items/s while the jobs work: they
    import first and start together), and the same for the bare loop: what this machine
    gives work that shares nothing; medians of rounds that rotate the four runs' order.
P2  one epoch from shards (streamed and in RAM) against
    keras.utils.image_dataset_from_directory, which decodes the files every epoch: input
    only, and training a small CNN (where prefetching overlaps loading with compute); the
    three take turns epoch by epoch in one process (medians of epochs 2 on).
P3  peak RSS of tensorising, and of one streamed epoch, at 1x and 8x the data.
Images are scikit-learn's digits written as 64x64 PNGs, and photo-like 640x480 JPEGs (the
digits enlarged over a gradient with sensor-like noise); audio is FSDD from ../shared/data.
Every row runs in its own process. Prints tables; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

IMAGE = {"size": [64, 64], "color": "rgb", "resize": "pad"}
AUDIO = {"sample_rate": 16000, "duration": 1.0, "fit": "center", "representation": "logmel",
         "n_mels": 64, "n_fft": 512, "hop_length": 160, "storage": "float16"}


def make_images(root: Path, count: int) -> list[str]:
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.rint(digits.images * (255 / 16)).astype(np.uint8)
    paths = []
    for index in range(count):
        source = index % len(pixels)
        folder = root / str(digits.target[source])
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"img-{index:06d}.png"
        Image.fromarray(pixels[source]).resize((64, 64)).save(path)
        paths.append(str(path))
    return paths


def make_photos(root: Path, count: int) -> list[str]:
    """640x480 JPEGs (quality 90) that cost what a camera picture costs to decode."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 120, 640)[None, :, None] + np.linspace(0, 60, 480)[:, None, None]
    paths = []
    for index in range(count):
        source = index % len(digits.images)
        glyph = np.asarray(Image.fromarray(np.uint8(digits.images[source] * 15)).resize((480, 480)))
        canvas = ramp + rng.normal(0, 12, (480, 640, 3))
        canvas[:, 80:560] += glyph[..., None] * np.array([0.5, 0.8, 0.3])
        folder = root / str(digits.target[source])
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"photo-{index:06d}.jpg"
        Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(str(path))
    return paths


def audio_files(count: int) -> list[str]:
    recordings = sorted((REPO.parent / "shared" / "data" / "fsdd" / "recordings").glob("*.wav"))
    return [str(recordings[i % len(recordings)]) for i in range(count)] if recordings else []


def peak_rss_mb() -> float:
    return max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
               resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024


def tensorise(kind: str, paths: list[str], out: str, shard_size: int = 512,
              start_at: float = 0.0) -> dict:
    """What shard jobs do: decode, transform, stack, write one .npz per `shard_size` items.
    `start_at` (epoch seconds): wait until then after the imports, so side-by-side jobs start
    together and their start-up does not blur the measured span."""
    import numpy as np

    from dlworkflow.items import Item
    from dlworkflow.modalities import create_modality
    from dlworkflow.shardfile import save_shard
    from dlworkflow.tensors import tensorise_items

    modality = create_modality("audio" if kind == "audio" else "image", {}, {"kind": "folders"})
    settings = AUDIO if kind == "audio" else IMAGE
    if kind == "audio":  # librosa's import and the filter bank, outside the timing as in `bare`
        from dlworkflow.modalities.audio import _mel_filters

        _mel_filters(16000, 512, 64)
    ready, began = _start(start_at)
    start = time.perf_counter()
    for number, first in enumerate(range(0, len(paths), shard_size)):
        part = paths[first: first + shard_size]
        batch = tensorise_items(modality, [Item(p, p, file=Path(p)) for p in part], settings)
        save_shard(f"{out}.{number:05d}" if len(paths) > shard_size else out,
              {"ids": np.array(part), "x": batch if batch.dtype == np.uint8
               else batch.astype(np.float16)})
    return {"seconds": time.perf_counter() - start, "items": len(paths), "rss": peak_rss_mb(),
            "ready": ready, "began": began, "ended": time.time()}


def _start(start_at: float) -> tuple[float, float]:
    """Wait (after the imports) until `start_at`, so side-by-side jobs begin together and
    their start-up does not blur the measured span: (when ready, when begun)."""
    ready = time.time()
    time.sleep(max(0.0, start_at - ready))
    return ready, time.time()


def bare(kind: str, paths: list[str], start_at: float = 0.0) -> dict:
    """Decode and resize only (images) or decode, resample and log-mel (audio); nothing written."""
    import io

    import numpy as np
    import soundfile
    import soxr
    from PIL import Image

    from dlworkflow.modalities.audio import _mel_filters, fit_length, log_mel

    _mel_filters(16000, 512, 64)  # librosa's import and the filter bank, outside the timing
    ready, began = _start(start_at)
    start = time.perf_counter()
    for path in paths:
        if kind != "audio":
            np.asarray(Image.open(path).convert("RGB").resize((64, 64)))
        else:  # the same 1 s log-mel tensorisation makes
            samples, rate = soundfile.read(io.BytesIO(Path(path).read_bytes()), dtype="float32")
            log_mel(fit_length(soxr.resample(samples, rate, 16000, quality="HQ"), 16000, "center"),
                    16000, 64, 512, 160)
    return {"seconds": time.perf_counter() - start, "items": len(paths), "rss": peak_rss_mb(),
            "ready": ready, "began": began, "ended": time.time()}


def side_by_side(kind: str, paths: list[str], out: str, passes: int,
                 shard_size: int = 512) -> dict:
    """The bare loop and tensorisation in one process, taking turns shard by shard (which goes
    first alternates), `passes` times over the items: the VM's drift, which moves whole
    minutes by up to 30 %, falls on both alike. Seconds summed per loop, and per pass."""
    bare(kind, paths[:16])  # imports, filter banks and first calls outside the timing
    tensorise(kind, paths[:16], out)
    totals, ratios = {"bare": 0.0, "tensorise": 0.0}, []
    for _ in range(passes):
        spent = {"bare": 0.0, "tensorise": 0.0}
        for number, first in enumerate(range(0, len(paths), shard_size)):
            part = paths[first: first + shard_size]
            order = ("bare", "tensorise") if number % 2 == 0 else ("tensorise", "bare")
            for which in order:
                spent[which] += (bare(kind, part) if which == "bare"
                                 else tensorise(kind, part, out))["seconds"]
        ratios.append(spent["bare"] / spent["tensorise"])
        totals = {k: totals[k] + spent[k] for k in totals}
    return {"items": len(paths) * passes, **totals, "ratios": ratios}


def streamed_epoch(shards: str) -> dict:
    """One streamed epoch, input only (P3: its peak RSS)."""
    import numpy as np

    from dlworkflow.data import Part, make_dataset
    from dlworkflow.tasks import get_task

    everything = Part(get_task("classification"), shards, None, "trainval")
    for x, _y in make_dataset(everything, batch_size=64, in_memory=False):
        np.asarray(x)
    return {"rss": peak_rss_mb()}


def small_cnn():
    import keras

    keras.utils.set_random_seed(0)  # the same initial weights for every copy
    model = keras.Sequential([
        keras.Input((64, 64, 3)), keras.layers.Rescaling(1 / 255),
        keras.layers.Conv2D(16, 3, strides=2, activation="relu"),
        keras.layers.Conv2D(32, 3, strides=2, activation="relu"),
        keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def epochs_side_by_side(shards: str, image_root: str, cnn: bool, rounds: int) -> dict:
    """The three sources in one process, taking turns epoch by epoch (the order rotates), for
    `rounds` epochs each: input only, or each source training its own copy of a small CNN.
    The first epoch of each is reported apart; later epochs are what the targets compare."""
    import keras
    import numpy as np

    from dlworkflow.data import Part, make_dataset
    from dlworkflow.tasks import get_task

    everything = Part(get_task("classification"), shards, None, "trainval")
    sources = {
        "directory": keras.utils.image_dataset_from_directory(
            image_root, image_size=(64, 64), batch_size=64, verbose=False),
        "stream": make_dataset(everything, batch_size=64, shuffle=True, in_memory=False),
        "ram": make_dataset(everything, batch_size=64, shuffle=True, in_memory=True)}
    models = {name: small_cnn() for name in sources} if cnn else {}
    times: dict[str, list[float]] = {name: [] for name in sources}
    names = list(sources)
    for number in range(rounds):
        for name in names[number % 3:] + names[:number % 3]:
            start = time.perf_counter()
            if cnn:
                models[name].fit(sources[name], epochs=1, verbose=0)
            else:
                for x, _y in sources[name]:
                    np.asarray(x)
            times[name].append(time.perf_counter() - start)
    return times


def as_arg(paths: list[str]) -> str:
    """A list of paths travels to a child process in a file (argv has a size limit)."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(paths, handle)
    return "@" + handle.name


def from_arg(value: str) -> list[str]:
    return json.loads(Path(value[1:]).read_text())


def child(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps(args)], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def write_shard_set(paths: list[str], folder: Path, shard_size: int = 512) -> None:
    """Shards plus an index, as the workflow writes them (trainval role, one fold)."""
    import pandas as pd

    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for number in range(0, len(paths), shard_size):
        part = paths[number: number + shard_size]
        name = f"trainval-{number // shard_size:05d}"
        child("tensorise", "image", as_arg(part), str(folder / f"{name}.npz"))
        rows += [{"id": p, "label": Path(p).parent.name, "role": "trainval", "fold": 0,
                  "in_sample": True, "shard": name} for p in part]
    frame = pd.DataFrame(rows)
    frame["fold"] = frame["fold"].astype("Int64")
    frame.to_parquet(folder / "index.parquet", index=False)


def run_child(spec: list[str]) -> None:
    kind = spec[0]
    if kind == "tensorise":
        result = tensorise(spec[1], from_arg(spec[2]), spec[3], start_at=float(spec[4])
                           if len(spec) > 4 else 0.0)
    elif kind == "bare":
        result = bare(spec[1], from_arg(spec[2]), start_at=float(spec[3]))
    elif kind == "side-by-side":
        result = side_by_side(spec[1], from_arg(spec[2]), spec[3], int(spec[4]))
    elif kind == "epochs":
        result = epochs_side_by_side(spec[1], spec[2], spec[3] == "cnn", int(spec[4]))
    elif kind == "make":
        result = {"paths": make_images(Path(spec[1]), int(spec[2]))}
    elif kind == "photos":
        result = {"paths": make_photos(Path(spec[1]), int(spec[2]))}
    elif kind == "epoch":
        result = streamed_epoch(spec[1])
    else:
        raise SystemExit(f"unknown bench child {kind!r}")
    print(json.dumps(result))


def parallel(loop: str, kind: str, paths: list[str], workers: int, tmp: Path
             ) -> tuple[float, float]:
    """`workers` jobs of `loop` ("tensorise": shard jobs; "bare") side by side over the same
    items: (items/s while they work, the seconds from launch until the slowest had imported
    what it needs)."""
    chunks = [paths[i::workers] for i in range(workers)]
    # as Snakemake runs a threads=1 job: numeric libraries get one thread each
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1"}
    launched = time.time()
    start_at = str(launched + 4.0)  # after every job's imports: they begin together
    specs = [["tensorise", kind, as_arg(c), str(tmp / f"p{i}.npz"), start_at]
             if loop == "tensorise" else ["bare", kind, as_arg(c), start_at]
             for i, c in enumerate(chunks)]
    procs = [subprocess.Popen([sys.executable, __file__, "--child", json.dumps(spec)],
                              stdout=subprocess.PIPE, text=True, env=env) for spec in specs]
    results = [json.loads(proc.communicate()[0].strip().splitlines()[-1]) for proc in procs]
    startup = max(r["ready"] for r in results) - launched
    span = max(r["ended"] for r in results) - min(r["began"] for r in results)
    return len(paths) / span, startup


def scaling(kind: str, paths: list[str], rounds: int, tmp: Path) -> dict:
    """1 and 2 jobs, of tensorisation and of the bare loop, in `rounds` rounds (the order of
    the four rotating): the VM's minute-to-minute drift moves single runs by ±30 %, so the
    medians count. The bare loop's speed-up is what this machine gives work that shares
    nothing; tensorisation's is measured against it."""
    configs = [("tensorise", 1), ("tensorise", 2), ("bare", 1), ("bare", 2)]
    rates: dict[tuple[str, int], list[float]] = {c: [] for c in configs}
    startups: dict[int, list[float]] = {1: [], 2: []}
    for number in range(rounds):
        for loop, workers in configs[number % 4:] + configs[:number % 4]:
            rate, startup = parallel(loop, kind, paths, workers, tmp)
            rates[(loop, workers)].append(rate)
            if loop == "tensorise":
                startups[workers].append(startup)
    per_round = {loop: [two / one for one, two in zip(rates[(loop, 1)], rates[(loop, 2)],
                                                      strict=True)]
                 for loop in ("tensorise", "bare")}
    median = {c: statistics.median(v) for c, v in rates.items()}
    return {"one": median[("tensorise", 1)], "two": median[("tensorise", 2)],
            "speedup": median[("tensorise", 2)] / median[("tensorise", 1)],
            "bare_speedup": median[("bare", 2)] / median[("bare", 1)],
            "range": (min(per_round["tensorise"]), max(per_round["tensorise"])),
            "startup": (max(startups[1]), max(startups[2]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3,
                        help="P1: passes of the side-by-side loops")
    parser.add_argument("--scaling-rounds", type=int, default=7,
                        help="P1: rounds of 1- and 2-job runs (medians count)")
    parser.add_argument("--rounds", type=int, default=11, help="P2: epochs per source")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(json.loads(args.child))
        return
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        images = child("make", str(tmp / "img"), str(args.items))["paths"]
        sounds = audio_files(args.items)
        photos = child("photos", str(tmp / "photo"), str(max(200, args.items // 4)))["paths"]
        kinds = [(k, p) for k, p in (("image", images), ("photo", photos), ("audio", sounds))
                 if p]
        print(f"P1  tensorisation vs a bare decode loop ({args.items} items; photos "
              f"{len(photos)}; {args.repeat} passes, taking turns per shard in one process)")
        print(f"    {'kind':<7}{'bare items/s':>14}{'tensorise items/s':>19}{'ratio':>8}"
              f"{'passes':>12}")
        for kind, paths in kinds:
            p1 = child("side-by-side", kind, as_arg(paths), str(tmp / f"{kind}.npz"),
                       str(args.repeat))
            rate_ref, rate = p1["items"] / p1["bare"], p1["items"] / p1["tensorise"]
            spread = f"{min(p1['ratios']):.2f}-{max(p1['ratios']):.2f}"
            print(f"    {kind:<7}{rate_ref:>14.0f}{rate:>19.0f}{rate / rate_ref:>8.2f}"
                  f"{spread:>12}")
        print(f"\nP1  2 shard jobs vs 1 (own processes, one numeric thread each; medians of "
              f"{args.scaling_rounds} rounds)")
        print(f"    {'kind':<7}{'1 core /s':>11}{'2 cores /s':>12}{'speed-up':>10}{'rounds':>12}"
              f"{'bare loop':>11}{'start-up 1 / 2 s':>19}")
        for kind, paths in kinds:
            # tiny PNGs tensorise at ~5,000/s: four times the items, so each job works for
            # seconds and the start of a span does not weigh as much as its length
            s = scaling(kind, paths * (4 if kind == "image" else 1), args.scaling_rounds, tmp)
            spread = f"{s['range'][0]:.2f}-{s['range'][1]:.2f}"
            startup = f"{s['startup'][0]:.2f} / {s['startup'][1]:.2f}"
            print(f"    {kind:<7}{s['one']:>11.0f}{s['two']:>12.0f}{s['speedup']:>10.2f}"
                  f"{spread:>12}{s['bare_speedup']:>11.2f}{startup:>19}")
        if len(kinds) < 3:
            print("    audio: skipped (no ../shared/data)")

        print(f"\nP2  seconds per epoch (64x64 RGB, batch 64): input only, and training a small CNN;"
              f"\n    the sources take turns epoch by epoch in one process; 'later' is the median"
              f"\n    of epochs 2-{args.rounds}")
        names = {"directory": "image_dataset_from_directory", "stream": "shards, streamed",
                 "ram": "shards, in RAM"}
        for label, paths, root in (("64x64 PNGs", images, tmp / "img"),
                                   ("640x480 JPEGs", photos, tmp / "photo")):
            write_shard_set(paths, tmp / f"shards-{root.name}")
            rows = {what: child("epochs", str(tmp / f"shards-{root.name}"), str(root), what,
                                str(args.rounds)) for what in ("input", "cnn")}
            later = {what: {m: statistics.median(t[1:]) for m, t in rows[what].items()}
                     for what in rows}
            print(f"    {label} ({len(paths)} items)")
            print(f"    {'source':<34}{'input e1':>10}{'later':>8}{'CNN e1':>9}{'later':>8}")
            for mode, name in names.items():
                print(f"    {name:<34}{rows['input'][mode][0]:>10.2f}{later['input'][mode]:>8.2f}"
                      f"{rows['cnn'][mode][0]:>9.2f}{later['cnn'][mode]:>8.2f}")
            for what, text in (("input", "input only"), ("cnn", "with the CNN")):
                d, s_, r = (later[what][m] for m in ("directory", "stream", "ram"))
                print(f"    later epochs, {text}: directory / streamed = {d / s_:.1f}x;  "
                      f"streamed speed / in-RAM speed = {r / s_:.2f}x")

        print("\nP3  peak RSS (MB) at 1x and 8x the data")
        big = child("make", str(tmp / "img8"), str(8 * args.items))["paths"]
        small_t = child("tensorise", "image", as_arg(images[:512]), str(tmp / "s.npz"))["rss"]
        big_t = child("tensorise", "image", as_arg(big[:512]), str(tmp / "b.npz"))["rss"]
        write_shard_set(big, tmp / "shards8")
        small_e = child("epoch", str(tmp / "shards-img"))["rss"]
        big_e = child("epoch", str(tmp / "shards8"))["rss"]
        print(f"    {'':<28}{'1x':>8}{'8x':>8}{'growth':>8}")
        print(f"    {'tensorise one shard job':<28}{small_t:>8.0f}{big_t:>8.0f}{big_t / small_t:>8.2f}")
        print(f"    {'one streamed epoch':<28}{small_e:>8.0f}{big_e:>8.0f}{big_e / small_e:>8.2f}")


if __name__ == "__main__":
    main()
