"""Logging set-up shared by the CLI and the server workers: one line per record, to stderr."""

from __future__ import annotations

import logging
import os
import sys

LEVEL_ENV_VAR = "GATEWAY_LOG_LEVEL"


def setup_logging() -> None:
    level = os.environ.get(LEVEL_ENV_VAR, "INFO").upper()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("gateway")
    root.handlers[:] = [handler]
    root.setLevel(level if level in logging.getLevelNamesMapping() else "INFO")
    root.propagate = False
