"""Text: one document per file, per manifest row, or per line of a delimited file."""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from html import escape
from typing import Any, ClassVar

from dlworkflow.errors import BadInput
from dlworkflow.items import Item
from dlworkflow.layouts import ENCODING_HINT
from dlworkflow.modalities.base import FILE_LAYOUTS, Modality


class TextModality(Modality):
    """Documents of any length; decoded strictly so bad bytes are reported, not replaced."""

    name = "text"
    extensions: ClassVar[tuple[str, ...]] = (".txt", ".text", ".md", ".html", ".htm", ".json")
    layouts: ClassVar[tuple[str, ...]] = (*FILE_LAYOUTS, "delimited")
    inline_text = True
    decodes_text = True
    stats: ClassVar[dict[str, str]] = {
        "characters": "Int64", "words": "Int64", "lines": "Int64", "empty": "boolean",
        "non_ascii_ratio": "Float64",
    }

    def probe(self, data: bytes, item: Item) -> dict[str, Any]:
        """Decode with the layout's encoding and count characters, words and lines."""
        encoding = self.layout.get("encoding", "utf-8")
        if data.startswith(b"\xef\xbb\xbf"):
            data = data[3:]
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError as exc:
            bad = data[exc.start: exc.start + 1].hex()
            raise BadInput(f"not valid {encoding}: byte 0x{bad} at offset {exc.start}"
                           f"{ENCODING_HINT}", "not_utf8") from None
        except LookupError:
            raise BadInput(f"unknown encoding {encoding!r}", "bad_encoding") from None
        if "\x00" in text:
            raise BadInput(f"contains a NUL character at offset {text.index(chr(0))} "
                           "(binary data, not text)", "binary")
        empty = not text.strip()
        if empty and not self.options.get("allow_empty", False):
            raise BadInput("empty text (nothing but whitespace)", "empty")
        characters = len(text)
        non_ascii = sum(1 for ch in text if ord(ch) > 127)
        notes = ["empty text kept (intake.text.allow_empty)"] if empty else []
        most = self.options.get("max_characters")
        if most and characters > int(most):
            notes.append(f"{characters} characters: longer than tensors.text.max_characters "
                         f"({int(most)}); the networks read the first {int(most)}")
        return {
            "characters": characters, "words": len(text.split()),
            "lines": text.count("\n") + (1 if text and not text.endswith("\n") else 0),
            "empty": empty, "non_ascii_ratio": non_ascii / characters if characters else 0.0,
            "notes": notes,
        }

    def preview(self, data: bytes, item: Item) -> str:
        """The first 280 characters, escaped, with the length in words."""
        text = data.decode(self.layout.get("encoding", "utf-8"), errors="replace")
        snippet = text[:280] + ("…" if len(text) > 280 else "")
        return (f'<blockquote class="snippet">{escape(snippet)}</blockquote>'
                f'<span class="meta">{len(text.split())} words</span>')

    def tensorize(self, data: bytes, item: Item, settings: Mapping[str, Any]) -> str:
        """The normalised raw string (NFC, whitespace collapsed); tokenising is per fold."""
        text = data.decode(self.layout.get("encoding", "utf-8")).lstrip("\ufeff")
        text = " ".join(unicodedata.normalize("NFC", text).split())
        return text[: int(settings.get("max_characters", 10000))]

    named_files: ClassVar[tuple[tuple[str, ...], ...]] = (
        ("train", "transfer", "text_weights"), ("train", "text", "pretrained_vectors"))
    networks: ClassVar[dict[str, tuple[str, ...]]] = {
        "classification": ("text_wide_cnn", "text_cnn", "text_bigru", "text_transformer",
                           "text_transfer"),
        "regression": ("text_cnn", "text_bigru", "text_transformer")}

    def auto_network(self, task: str, settings: Mapping[str, Any],
                     input_shape: tuple[int, ...] = ()) -> tuple[str, str]:
        """For classes, transfer learning when a pretrained sentence encoder is at hand (a
        folder, Keras' cache, or downloaded now), else text_wide_cnn from scratch; for
        values, the task's network."""
        from dlworkflow.models.text_encoder import encoder_weights, weights_setting

        scratch = self.networks[task][0]
        if "text_transfer" not in self.networks[task]:
            return scratch, f"auto: the default {self.name} network for {task}"
        folder, why = encoder_weights(weights_setting(settings))
        if folder is not None:
            return "text_transfer", f"auto: transfer learning, {why}"
        return scratch, f"auto: trained from scratch, {why}"

    @classmethod
    def decides_once(cls, task: str, settings: Mapping[str, Any]) -> bool:
        """Where `auto` may take text_transfer: whether the encoder is at hand."""
        return cls.encodes_once(task, settings)

    @classmethod
    def encodes_once(cls, task: str, settings: Mapping[str, Any]) -> bool:
        """text_transfer's sentence vectors, when `auto` may choose it or it is named and a
        pretrained encoder is not refused (`train.transfer.text_weights: none`)."""
        from dlworkflow.models.text_encoder import weights_setting

        return ("text_transfer" in cls.networks.get(task, ())
                and weights_setting(settings) not in (None, "none")
                and settings.get("architecture", "auto") in ("auto", "text_transfer"))

    def shap_masker(self, background: Any) -> Any:
        """SHAP hides words (split at non-word characters)."""
        import shap

        return shap.maskers.Text(r"\W+")

    def attribution_html(self, x: Any, values: Any, what: str,
                         settings: Mapping[str, Any] | None = None) -> str:
        """The text with each word shaded by its SHAP value (red raises `what`)."""
        import numpy as np

        values = np.asarray(values, dtype=np.float64).reshape(len(x), -1).sum(axis=1)
        limit = float(np.abs(values).max()) or 1.0
        spans = []
        for token, value in zip(x, values, strict=True):
            share = min(1.0, abs(value) / limit)
            colour = f"rgba(214,39,40,{share:.2f})" if value > 0 else f"rgba(31,119,180,{share:.2f})"
            spans.append(f'<span style="background:{colour}" title="{value:+.3f}">'
                         f"{escape(str(token))}</span>")
        return (f'<blockquote class="snippet">{"".join(spans)}</blockquote>'
                f'<span class="meta">SHAP for {escape(what)}; red raises it</span>')

    def flat(self, x: Any, settings: Mapping[str, Any]) -> list[str]:
        """The normalised texts themselves: TF-IDF is fitted per fold inside the pipeline."""
        return [str(t) for t in x]

    def baselines(self, kind: str, settings: Mapping[str, Any], seed: int) -> dict[str, Any]:
        """TF-IDF (word n-grams, optionally char n-grams) into a linear model."""
        from dlworkflow.estimators import tfidf_baselines

        return tfidf_baselines(kind, settings, seed)

    def layer_settings(self, train: Mapping[str, Any], stats_path: str | None) -> dict[str, Any]:
        """`train.text`, with `sequence_length: auto` resolved to the 95th percentile of words
        in tensors/stats.json (between 8 and 512)."""
        import json
        from pathlib import Path

        import numpy as np

        settings = dict(train.get("text") or {})
        value = settings.get("sequence_length", "auto")
        if value == "auto":
            stats = json.loads(Path(stats_path).read_text()) if stats_path else {}
            value = np.clip(stats.get("suggested_sequence_length", 64), 8, 512)
        settings["sequence_length"] = int(value)
        return settings

    def preprocessing(self, train_x: Any, settings: Mapping[str, Any]) -> list:
        """TextVectorization adapted on the fold's training texts: the model takes raw strings."""
        from dlworkflow.layers import adapted_text_vectorizer

        return [adapted_text_vectorizer(train_x, settings.get("max_tokens", 20000),
                                        int(settings.get("sequence_length", 64)))]
