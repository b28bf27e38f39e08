"""Exceptions shared by the library: bad input items, bad configuration, failed steps.

They live here, apart from the modules that raise them, so that every rule script can
recognise them (`logs.rule_logging`) without importing those modules' dependencies.
"""

from __future__ import annotations

import re

#: how Python prints an object without a readable form: `<_io.BytesIO object at 0x7f...>`
_OBJECT_AT_ADDRESS = re.compile(r"<([\w.]+) object at 0x[0-9a-fA-F]+>")


class BadInput(Exception):
    """One raw item cannot be used; `reason` says why in plain words, `code` is a short slug.

    A library's message may print an object with its memory address (soundfile: "Error
    opening <_io.BytesIO object at 0x7f...>"); the address is dropped, so the same bad file
    gets the same reason in every run (rejected.csv is byte-identical between runs)."""

    def __init__(self, reason: str, code: str = "invalid") -> None:
        reason = _OBJECT_AT_ADDRESS.sub(r"<\1 object>", reason)
        super().__init__(reason)
        self.reason = reason
        self.code = code


class ConfigError(ValueError):
    """params.yaml is invalid; the message names the offending key and what is allowed."""


class CannotPredict(ValueError):
    """`dlworkflow predict` was given nothing it can predict from (no input, a table with no
    series, a series without the known-future values its forecaster reads); the message
    names the input and what it lacks."""


class IntakeFailed(RuntimeError):
    """Raised when `intake.on_bad_input: fail` and some items were rejected."""


class RawDataChanged(RuntimeError):
    """A raw item a later step reads is no longer what intake recorded (content, place)."""


class LeakageFound(RuntimeError):
    """Raised when `split.on_leakage: fail` and the split leaks."""


class DemoSourceUnavailable(RuntimeError):
    """A demo source has no verified local copy and could not be downloaded."""
