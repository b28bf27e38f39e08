"""Exceptions shared by the library: bad input items and bad configuration."""

from __future__ import annotations


class BadInput(Exception):
    """One raw item cannot be used; `reason` says why in plain words, `code` is a short slug."""

    def __init__(self, reason: str, code: str = "invalid") -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class ConfigError(ValueError):
    """params.yaml is invalid; the message names the offending key and what is allowed."""


class IntakeFailed(RuntimeError):
    """Raised when `intake.on_bad_input: fail` and some items were rejected."""
