"""Benchmark intake: items/s and peak RSS against a bare loop that only reads each file.

    python bench/intake.py [--items 5000] [--modality image|audio|text]

Files are generated from real data (scikit-learn digits as 32x32 PNGs; FSDD recordings when
../shared/data is present) into a temporary folder. Each measurement runs in its own
process started from a small parent, so its peak RSS is its own (Linux keeps a
process's high-water mark across exec). Prints a table; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def make_images(root: Path, count: int) -> dict:
    """`count` PNGs from scikit-learn's digits, scaled to 32x32, one folder per class."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.rint(digits.images * (255 / 16)).astype(np.uint8)
    for index in range(count):
        source = index % len(pixels)
        folder = root / str(digits.target[source])
        folder.mkdir(parents=True, exist_ok=True)
        image = Image.fromarray(pixels[source]).resize((32, 32), Image.Resampling.BILINEAR)
        image.save(folder / f"img-{index:06d}.png")
    return {"modality": "image", "task": "classification", "root": str(root),
            "layout": {"kind": "folders"}}


def make_audio(root: Path, count: int) -> dict:
    """`count` WAVs copied (round robin) from the FSDD recordings in ../shared/data."""
    recordings = sorted((REPO.parent / "shared" / "data" / "fsdd" / "recordings").glob("*.wav"))
    if not recordings:
        raise SystemExit("audio benchmark needs ../shared/data/fsdd")
    for index in range(count):
        source = recordings[index % len(recordings)]
        digit = source.name.split("_")[0]
        folder = root / digit
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, folder / f"{index:06d}.wav")
    return {"modality": "audio", "task": "classification", "root": str(root),
            "layout": {"kind": "folders"}}


def measure(mode: str, dataset: dict, workers: int) -> dict:
    """Run one measurement in this process (called in a child) and return its figures."""
    from dlworkflow.config import validate_params  # imports are not part of the timing
    from dlworkflow.intake import run_intake

    start = time.perf_counter()
    if mode == "bare":
        count = 0
        for path in sorted(Path(dataset["root"]).rglob("*")):
            if path.is_file():
                with path.open("rb") as handle:
                    handle.read()
                count += 1
    else:
        params = validate_params({"seed": 0, "datasets": {"bench": dataset}}, base_dir="/")
        result = run_intake("bench", params["datasets"]["bench"], params["intake"], base_dir="/",
                            workers=workers, progress=False)
        count = result.counts["accepted"]
    seconds = time.perf_counter() - start
    rss_kb = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                 resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return {"items": count, "seconds": seconds, "peak_rss_mb": rss_kb / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--modality", choices=["image", "audio"], default="image")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--make", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.make:  # generating imports numpy & co; a child keeps the parent's peak RSS low
        maker = make_images if args.modality == "image" else make_audio
        print(json.dumps(maker(Path(args.make), args.items)))
        return
    if args.child:
        mode, workers, dataset = json.loads(args.child)
        print(json.dumps(measure(mode, dataset, workers)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        made = time.perf_counter()
        dataset = json.loads(subprocess.run(
            [sys.executable, __file__, "--make", str(root), "--items", str(args.items),
             "--modality", args.modality], check=True, capture_output=True, text=True).stdout)
        print(f"generated {args.items} {args.modality} files in {time.perf_counter() - made:.1f} s")
        rows = []
        for mode, workers in (("bare", 1), ("intake", 1), ("intake", 2)):
            child = json.dumps([mode, workers, dataset])
            out = subprocess.run([sys.executable, __file__, "--child", child], check=True,
                                 capture_output=True, text=True).stdout
            rows.append((f"{mode} ({workers} worker{'s' if workers > 1 else ''})",
                         json.loads(out.strip().splitlines()[-1])))
    bare = rows[0][1]["seconds"]
    print(f"{'method':<22}{'items':>8}{'seconds':>10}{'items/s':>10}{'x bare':>9}{'peak RSS MB':>13}")
    for name, row in rows:
        rate = row["items"] / row["seconds"]
        print(f"{name:<22}{row['items']:>8}{row['seconds']:>10.2f}{rate:>10.0f}"
              f"{row['seconds'] / bare:>9.1f}{row['peak_rss_mb']:>13.0f}")


if __name__ == "__main__":
    main()
