"""Exceptions shared by the library: bad input items, bad configuration, failed steps.

They live here, apart from the modules that raise them, so that every rule script can
recognise them (`logs.rule_logging`) without importing those modules' dependencies.
"""

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


class LeakageFound(RuntimeError):
    """Raised when `split.on_leakage: fail` and the split leaks."""


class DemoSourceUnavailable(RuntimeError):
    """A demo source has no verified local copy and could not be downloaded."""
