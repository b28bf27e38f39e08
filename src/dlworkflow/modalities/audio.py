"""Audio: WAV, FLAC, OGG, MP3 and other formats libsndfile reads, probed with soundfile."""

from __future__ import annotations

import functools
import io
from collections.abc import Mapping
from html import escape
from typing import Any, ClassVar

import numpy as np
import soundfile

from dlworkflow.errors import BadInput
from dlworkflow.figures import data_uri, figure_uri, new_figure
from dlworkflow.items import Item
from dlworkflow.modalities.base import Modality

_FRAME_SECONDS = 0.010


def silence_ratio(samples: np.ndarray, sample_rate: int, threshold_db: float) -> float:
    """Share of 10 ms frames whose RMS (dBFS, mono mix) is below `threshold_db`."""
    mono = samples.mean(axis=1) if samples.ndim == 2 else samples
    frame = max(1, round(sample_rate * _FRAME_SECONDS))
    count = max(1, len(mono) // frame)
    frames = np.resize(mono[: count * frame], (count, frame)) if len(mono) >= frame \
        else mono[None, :]
    rms = np.sqrt(np.mean(np.square(frames, dtype=np.float64), axis=1))
    with np.errstate(divide="ignore"):
        level = 20 * np.log10(rms)
    return float(np.mean(level < threshold_db))


@functools.cache
def _mel_filters(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    import librosa

    return librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels).astype(np.float32)


def log_mel(samples: np.ndarray, sample_rate: int, n_mels: int = 40, n_fft: int = 512,
            hop: int | None = None, top_db: float | None = 80.0) -> np.ndarray:
    """Log-mel spectrogram (dB, n_mels x frames) of a mono signal, with numpy FFTs.

    `top_db` floors the result that many dB below the clip's loudest cell (as librosa's
    power_to_db does): digital silence and zero padding otherwise sit at -100 dB, far below
    any recorded room noise, and dominate the value range a network has to learn from.
    """
    hop = hop or n_fft // 4
    if len(samples) < n_fft:
        samples = np.pad(samples, (0, n_fft - len(samples)))
    frames = np.lib.stride_tricks.sliding_window_view(samples, n_fft)[::hop]
    power = np.abs(np.fft.rfft(frames * np.hanning(n_fft), axis=1)) ** 2
    mel = _mel_filters(sample_rate, n_fft, n_mels) @ power.T.astype(np.float32)
    decibels = 10 * np.log10(np.maximum(mel, 1e-10))
    if top_db is not None:
        decibels = np.maximum(decibels, decibels.max() - float(top_db))
    return decibels


def fit_length(samples: np.ndarray, length: int, where: str) -> np.ndarray:
    """Pad with zeros or trim to `length` samples, keeping the start or the centre."""
    if len(samples) >= length:
        start = 0 if where == "start" else (len(samples) - length) // 2
        return samples[start: start + length]
    before = 0 if where == "start" else (length - len(samples)) // 2
    return np.pad(samples, (before, length - len(samples) - before))


class AudioModality(Modality):
    """Sound clips; one file per item."""

    name = "audio"
    extensions: ClassVar[tuple[str, ...]] = (
        ".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif", ".au", ".opus",
    )
    stats: ClassVar[dict[str, str]] = {
        "sample_rate": "Int64", "channels": "Int64", "frames": "Int64", "duration": "Float64",
        "peak": "Float64", "silence_ratio": "Float64", "format": "string", "subtype": "string",
    }

    def probe(self, data: bytes, item: Item) -> dict[str, Any]:
        """Decode every sample; report rate, channels, duration, peak and silence."""
        if not data:
            raise BadInput("empty file (0 bytes)", "empty")
        try:
            with soundfile.SoundFile(io.BytesIO(data)) as sound:
                sample_rate, channels = sound.samplerate, sound.channels
                fmt, subtype = sound.format, sound.subtype
                samples = sound.read(dtype="float32", always_2d=True)
        except (soundfile.LibsndfileError, RuntimeError, TypeError) as exc:
            raise BadInput(f"not a readable audio file: {exc}", "unreadable") from None
        frames = samples.shape[0]
        if frames == 0:
            raise BadInput("audio has no samples (0 frames)", "empty")
        if not np.isfinite(samples).all():
            raise BadInput("audio contains NaN or infinite samples", "non_finite")
        duration = frames / sample_rate
        min_duration = float(self.options.get("min_duration", 0.01))
        if duration < min_duration:
            raise BadInput(f"clip lasts {duration:.4f} s; shorter than intake.audio.min_duration "
                           f"({min_duration} s)", "too_short")
        peak = float(np.max(np.abs(samples)))
        notes = []
        if peak == 0.0:
            notes.append("digital silence: every sample is zero")
        elif peak >= 0.999:
            notes.append("clipped: peak at full scale")
        if channels > 1:
            notes.append(f"{channels} channels: mixed to mono when decoded")
        return {
            "sample_rate": sample_rate, "channels": channels, "frames": frames,
            "duration": duration, "peak": peak,
            "silence_ratio": silence_ratio(samples, sample_rate,
                                           float(self.options.get("silence_db", -40))),
            "format": fmt, "subtype": subtype, "notes": notes,
        }

    def preview(self, data: bytes, item: Item) -> str:
        """A log-mel spectrogram picture and a playable <audio> element."""
        samples, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
        spectrogram = log_mel(samples.mean(axis=1), rate)
        figure, axes = new_figure(2.2, 1.3)
        axes.imshow(spectrogram, origin="lower", aspect="auto", cmap="magma",
                    extent=(0, len(samples) / rate, 0, spectrogram.shape[0]))
        axes.set_yticks([])
        axes.tick_params(labelsize=6)
        axes.set_xlabel("s", fontsize=6, labelpad=0)
        return (f'<img class="spec" alt="log-mel spectrogram of {escape(item.id)}" '
                f'src="{figure_uri(figure)}"><audio controls preload="none" '
                f'src="{data_uri(data, "audio/wav" if data[:4] == b"RIFF" else "audio/mpeg")}">'
                "</audio>")

    def tensorize(self, data: bytes, item: Item, settings: Mapping[str, Any]) -> np.ndarray:
        """float32 log-mel (n_mels, frames, 1), MFCC (n_mfcc, frames, 1) or waveform (samples, 1)."""
        import soxr

        samples, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
        mono = samples.mean(axis=1)
        target_rate = int(settings.get("sample_rate", 16000))
        if rate != target_rate:
            mono = soxr.resample(mono, rate, target_rate, quality="HQ").astype(np.float32)
        mono = fit_length(mono, round(float(settings.get("duration", 1.0)) * target_rate),
                          settings.get("fit", "center"))
        representation = settings.get("representation", "logmel")
        if representation == "waveform":
            return mono[:, None]
        spectrogram = log_mel(mono, target_rate, int(settings.get("n_mels", 64)),
                              int(settings.get("n_fft", 512)), int(settings.get("hop_length", 160)),
                              settings.get("top_db", 80.0))
        if representation == "mfcc":
            from scipy.fft import dct

            spectrogram = dct(spectrogram, type=2, norm="ortho", axis=0)[
                : int(settings.get("n_mfcc", 20))]
        return spectrogram.astype(np.float32)[..., None]

    networks: ClassVar[dict[str, tuple[str, ...]]] = {
        "classification": ("audio_tcresnet", "audio_cnn", "audio_dscnn"),
        "regression": ("audio_tcresnet", "audio_cnn", "audio_dscnn")}
    origin: ClassVar[str] = "lower"  # spectrograms: low frequencies at the bottom

    @classmethod
    def stores_pictures(cls, settings: Mapping[str, Any]) -> bool:
        """Spectrograms (log-mel or MFCC) are; waveforms, (samples, 1), are not."""
        return settings.get("representation", "logmel") != "waveform"

    def attribution_axes(self, shape: tuple[int, ...],
                         settings: Mapping[str, Any]) -> dict[str, Any] | None:
        """Spectrograms (bands, frames): time in seconds across, bands upwards (mel bands, or
        MFCC coefficients), as the EDA draws them."""
        if settings.get("representation", "logmel") == "waveform":
            return None  # samples: no axes of seconds and bands (drawn as a strip)
        bands, frames = shape[0], shape[1]
        seconds = frames * int(settings.get("hop_length", 160)) / int(
            settings.get("sample_rate", 16000))
        kind = "MFCC" if settings.get("representation") == "mfcc" else "mel band"
        return {"extent": (0.0, seconds, 0.0, float(bands)), "xlabel": "time (s)",
                "ylabel": kind}

    def stored(self, batch: Any, settings: Mapping[str, Any]) -> dict[str, Any]:
        """Spectrograms as float16 (half the bytes, ample for log-mels), or with
        `tensors.audio.storage: uint8` as codes with their offset and scale (a quarter)."""
        from dlworkflow.shardfile import quantise

        if settings.get("storage", "float16") == "uint8":
            return quantise(batch)
        return {"x": batch.astype(np.float16)}

    def flat(self, x: Any, settings: Mapping[str, Any]) -> np.ndarray:
        """MFCC summary: mean and std over time of the MFCCs and of their deltas.

        `settings` holds the shard's tensors.audio keys (representation, sample_rate, n_mfcc).
        """
        from scipy.fft import dct

        x = np.asarray(x, dtype=np.float32)
        if x.ndim == 2:  # cached embeddings
            return x
        representation = settings.get("representation", "logmel")
        if representation == "waveform":  # (samples, 1): log-mel at the shard's sample rate
            rate = int(settings.get("sample_rate", 16000))
            x = np.stack([log_mel(wave[:, 0], rate) for wave in x])[..., None]
        x = x[..., 0]
        if representation != "mfcc":  # log-mel bands -> MFCCs
            x = dct(x, type=2, norm="ortho", axis=1)[:, : int(settings.get("n_mfcc", 20))]
        delta = np.diff(x, axis=2)
        return np.concatenate([x.mean(axis=2), x.std(axis=2), delta.mean(axis=2),
                               delta.std(axis=2)], axis=1)

    def augmentation(self, settings: Mapping[str, Any], seed: int) -> list:
        """Training-only augmentation layers from `augment.audio`: time and frequency masks
        (SpecAugment), a time shift and noise on the spectrogram."""
        import keras

        from dlworkflow.layers import SpecAugment

        layers: list = []
        if settings.get("time_mask") or settings.get("freq_mask"):
            layers.append(SpecAugment(settings.get("freq_mask", 0.0), settings.get("time_mask", 0.0),
                                      seed=seed))
        if settings.get("shift"):
            layers.append(keras.layers.RandomTranslation(0.0, settings["shift"],
                                                         fill_mode="constant", seed=seed))
        if settings.get("noise"):
            layers.append(keras.layers.GaussianNoise(settings["noise"], seed=seed))
        return layers

    def preprocessing(self, train_x: Any, settings: Mapping[str, Any]) -> list:
        """Per-fold preprocessing layers (fitted on the fold's training rows): one mean and
        variance per band; for waveforms a log-mel front end first (`WaveformLogMel`, with
        the `tensors.audio` settings in `settings["tensors"]`), the bands' statistics
        taken on its output."""
        from dlworkflow.layers import WaveformLogMel, adapted_normalizer

        tensors = settings.get("tensors") or {}
        if tensors.get("representation", "logmel") != "waveform":
            return [adapted_normalizer(train_x, axis=1)]
        front = WaveformLogMel(int(tensors.get("sample_rate", 16000)),
                               int(tensors.get("n_fft", 512)), int(tensors.get("hop_length", 160)),
                               int(tensors.get("n_mels", 64)), tensors.get("top_db", 80.0))
        if hasattr(train_x, "element_spec"):  # a streamed fold
            mels = train_x.map(front)
        else:
            x = np.asarray(train_x, dtype=np.float32)
            mels = np.concatenate([np.asarray(front(x[start: start + 256]))
                                   for start in range(0, len(x), 256)])
        return [front, adapted_normalizer(mels, axis=1)]
