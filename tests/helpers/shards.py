"""Shard folders built from real data the way the workflow lays them out (for unit tests of
the steps that read shards: baselines, training, prediction)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from dlworkflow.choice import choose_metric
from dlworkflow.items import Item
from dlworkflow.modalities import create_modality
from dlworkflow.shardfile import save_shard
from tests.conftest import SHARED_DATA

INTAKE = {"imbalance_share": 0.2, "beta": 1.0}


def write_shards(folder: Path, x, labels, folds, shard_size: int = 64, extra=None) -> Path:
    """trainval shards + index.parquet (+ stats.json for text) + metric.json in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    count = len(x)
    ids = np.array([f"item-{i:05d}" for i in range(count)])
    rows = []
    for number, first in enumerate(range(0, count, shard_size)):
        part = slice(first, min(first + shard_size, count))
        name = f"trainval-{number:05d}"
        payload = {"ids": ids[part], "x": np.asarray(x[part]) if not isinstance(x, list)
                   else np.asarray(x[part], dtype=str)}
        for key, value in (extra or {}).items():
            payload[key] = value[part]
        save_shard(str(folder / f"{name}.npz"), payload)
        for i in range(part.start, part.stop):
            rows.append({"id": ids[i], "label": None if labels is None else labels[i],
                         "role": "trainval", "fold": int(folds[i]), "in_sample": True,
                         "shard": name})
    index = pd.DataFrame(rows)
    index["fold"] = index["fold"].astype("Int64")
    index.to_parquet(folder / "index.parquet", index=False)
    if isinstance(x, list):
        words = [len(t.split()) for t in x]
        (folder / "stats.json").write_text(json.dumps(
            {"suggested_sequence_length": int(np.percentile(words, 95))}))
    return folder


def write_metric(folder: Path, task: str, labels=None, frequency: str | None = None) -> str:
    """metric.json chosen exactly as intake chooses it."""
    choice = choose_metric(task, None if labels is None else pd.Series(labels), INTAKE, frequency)
    path = folder / "metric.json"
    path.write_text(json.dumps(choice))
    return str(path)


def digits_images(count: int = 300, size: int = 32):
    """scikit-learn's digits as uint8 (size, size, 1) images, labels and 5 folds."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.rint(digits.images[:count] * (255 / 16)).astype(np.uint8)
    images = np.stack([np.asarray(Image.fromarray(p).resize((size, size), Image.BILINEAR))
                       for p in pixels])[..., None]
    labels = digits.target[:count].astype(str)
    return images, labels, np.arange(count) % 5


def fsdd_spectrograms(count: int = 100):
    """FSDD recordings as the audio modality's default log-mel tensors, labels and folds."""
    files = sorted((SHARED_DATA / "fsdd" / "recordings").glob("*.wav"))[:: 3000 // count][:count]
    modality = create_modality("audio", {}, {"kind": "folders"})
    settings = {"sample_rate": 8000, "duration": 0.5, "n_mels": 32, "n_fft": 256,
                "hop_length": 80}
    x = np.stack([modality.tensorize(f.read_bytes(), Item(f.name, f.name), settings)
                  for f in files]).astype(np.float16)
    labels = np.array([f.name.split("_")[0] for f in files])
    return x, labels, np.arange(len(files)) % 5, files, settings


def _normalised(pairs: list[list[str]]) -> tuple[list[str], np.ndarray]:
    """The texts of (label, text) pairs normalised as the text modality does, and the labels."""
    modality = create_modality("text", {}, {"kind": "delimited"})
    texts = [modality.tensorize(t.encode(), Item("x", "x"), {}) for _, t in pairs]
    return texts, np.array([label for label, _ in pairs])


def sms_texts(count: int = 200):
    """SMS Spam Collection lines (normalised as the text modality does), labels and folds."""
    lines = (SHARED_DATA / "sms_spam" / "SMSSpamCollection").read_text(encoding="utf-8")
    texts, labels = _normalised([line.split("\t", 1) for line in lines.splitlines()[:count]])
    return texts, labels, np.arange(len(texts)) % 5


def _sentence_pairs(name: str) -> list[list[str]]:
    """(label, sentence) of each line of a `label sentence` file in shared/data/sentences,
    Latin-1, split at line feeds only: `str.splitlines` also splits at byte 0x85 (NEL in
    Latin-1), which occurs inside SUBJ's sentences."""
    text = (SHARED_DATA / "sentences" / name).read_bytes().decode("latin-1")
    return [line.rstrip("\r").split(" ", 1) for line in text.split("\n") if line.strip()]


def trec_texts(count: int | None = None, part: str = "train"):
    """TREC questions (Li and Roth 2002; six classes, 0-5, class 2 rare), normalised as the
    text modality does, and their labels: the first `count` of the official `part`."""
    return _normalised(_sentence_pairs(f"TREC.{part}.all")[:count])


def subj_texts():
    """SUBJ's 10,000 sentences (Pang and Lee 2004; objective 0, subjective 1), normalised as
    the text modality does, and their labels, in the file's order."""
    texts, labels = _normalised(_sentence_pairs("subj.all"))
    return np.array(texts, dtype=object), labels


def co2_windows(lookback: int = 104, horizon: int = 13, folds: int = 3):
    """Weekly Mauna Loa CO2 (statsmodels) as forecasting windows with rolling-origin folds:
    fold k validates on the windows whose targets fall in the k-th of the last `folds`
    horizons; earlier windows train it."""
    from statsmodels.datasets import co2

    series = co2.load_pandas().data["co2"].interpolate().to_numpy(dtype=np.float32)
    starts = np.arange(lookback, len(series) - horizon + 1)
    x = np.stack([series[s - lookback: s] for s in starts])[..., None]
    y = np.stack([series[s: s + horizon] for s in starts])
    end = len(series)
    fold = np.full(len(starts), -1)
    for k in range(folds):
        low, high = end - (folds - k) * horizon, end - (folds - k - 1) * horizon
        fold[(starts >= low) & (starts < high)] = k  # targets start inside the block
    return x, y, starts, fold


def write_windows(folder: Path, lookback: int = 104, horizon: int = 13) -> Path:
    """co2 windows as forecasting shards with target_start/target_end in the index."""
    x, y, starts, fold = co2_windows(lookback, horizon)
    folder.mkdir(parents=True, exist_ok=True)
    ids = np.array([f"co2@{s:06d}" for s in starts])
    save_shard(str(folder / "trainval-00000.npz"), {"ids": ids, "x": x, "y": y,
                                               "x_future": np.zeros((len(x), horizon, 0),
                                                                    np.float32)})
    index = pd.DataFrame({"id": ids, "series": "co2", "target_start": starts,
                          "target_end": starts + horizon - 1, "role": "trainval",
                          "fold": pd.array(np.where(fold >= 0, fold, None), dtype="Int64"),
                          "in_sample": True, "shard": "trainval-00000"})
    index.to_parquet(folder / "index.parquet", index=False)
    choice = choose_metric("forecasting", None, INTAKE, "W-SAT")
    (folder / "metric.json").write_text(json.dumps(choice))
    return folder



def fold_context(dataset: dict, folder: Path, sections: dict, out: Path | None = None,
                 seed: int = 5, threads: int = 2):
    """The run context rules train_fold and baseline_fold hand their step (shards, index,
    metric and stats in `folder`; the fold's outputs in `out`)."""
    from dlworkflow.context import RunContext

    stats = folder / "stats.json"
    inputs = {"index": str(folder / "index.parquet"), "metric": str(folder / "metric.json"),
              **({"stats": str(stats)} if stats.exists() else {})}
    outputs = {"metrics": str(out / "metrics.json"),
               "predictions": str(out / "predictions.parquet")} if out else {}
    return RunContext.for_dataset("toy", dataset, seed=seed, sections=sections, inputs=inputs,
                                  outputs=outputs, threads=threads,
                                  values={"out_dir": str(out)} if out else {})
