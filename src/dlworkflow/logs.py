"""Logging for rule scripts: everything to the job's log file, errors as one clear message."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from dlworkflow.errors import (
    ConfigError,
    DemoSourceUnavailable,
    IntakeFailed,
    LeakageFound,
    RawDataChanged,
)

EXPECTED_ERRORS = (ConfigError, IntakeFailed, DemoSourceUnavailable, LeakageFound, RawDataChanged)


@contextmanager
def rule_logging(log_path: str) -> Iterator[None]:
    """Send stdout, stderr and logging to the rule's log (native libraries such as
    TensorFlow's C++ core included); turn expected errors into a clean exit 1."""
    with open(log_path, "w", encoding="utf-8") as log_file:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(log_file.fileno(), 1)
        os.dup2(log_file.fileno(), 2)
        sys.stdout = sys.stderr = log_file
        logging.basicConfig(stream=log_file, level=logging.INFO, force=True,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        try:
            yield
        except EXPECTED_ERRORS as exc:
            logging.getLogger("dlworkflow").error("%s", exc)
            log_file.flush()
            raise SystemExit(1) from None
        except Exception:
            # the traceback must reach the log before the file closes
            logging.getLogger("dlworkflow").exception("unexpected error")
            log_file.flush()
            raise
