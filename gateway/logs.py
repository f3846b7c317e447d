"""Logging set-up shared by the CLI and the server workers: one line per record, to stderr.

The access log (one line per request) does not go through ``logging``: formatting and writing a
record there cost about 7% of a core per request under load. The request path only puts a tuple on
a queue; a thread formats and writes the lines in batches, in the same format as the other records.

Every line is made safe as it is formatted, whatever a caller put in it: credentials are cut out
(``gateway.redaction``: an upstream error or a config error can quote a key), and control characters
are escaped, so that a client's ``%0A`` in a path or a model name cannot forge a line of its own.
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import time

from gateway.redaction import redact

LEVEL_ENV_VAR = "GATEWAY_LOG_LEVEL"
BATCH_SECONDS = 0.05
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


# C0 and C1 controls, DEL, and the Unicode line and paragraph separators some viewers break lines on.
_CONTROLS = {c: f"\\x{c:02x}" for c in [*range(0x20), *range(0x7F, 0xA0)]}
_CONTROLS.update({0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t", 0x2028: "\\u2028", 0x2029: "\\u2029"})


def escape_controls(text: str) -> str:
    """``text`` on one line: every control character written as its escape (``\\n``, ``\\x1b``…)."""
    return text.translate(_CONTROLS)


def safe(text: str) -> str:
    """A field as it may go into a log line: credentials cut, control characters escaped."""
    return escape_controls(redact(text))


class SafeFormatter(logging.Formatter):
    """The usual format, with the message made ``safe``; a traceback keeps its own line breaks (they are
    the gateway's, not a client's) but is redacted too."""

    def format(self, record: logging.LogRecord) -> str:
        record.message = safe(record.getMessage())
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        line = self.formatMessage(record)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line += "\n" + redact(record.exc_text)
        if record.stack_info:
            line += "\n" + redact(self.formatStack(record.stack_info))
        return line


def setup_logging() -> None:
    level = os.environ.get(LEVEL_ENV_VAR, "INFO").upper()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(SafeFormatter(FORMAT))
    root = logging.getLogger("gateway")
    root.handlers[:] = [handler]
    root.setLevel(level if level in logging.getLevelNamesMapping() else "INFO")
    root.propagate = False
    access.enabled = root.isEnabledFor(logging.INFO)


Entry = tuple[float, str, str, int, float, str]


class AccessLog:
    def __init__(self) -> None:
        self.enabled = True
        self._queue: queue.SimpleQueue[Entry] = queue.SimpleQueue()
        self._writer_pid = 0

    def log(self, method: str, path: str, status: int, duration_ms: float, request_id: str) -> None:
        if not self.enabled:
            return
        if self._writer_pid != os.getpid():  # first line in this process (workers are forked)
            self._writer_pid = os.getpid()
            threading.Thread(target=self._write, name="gateway-access-log", daemon=True).start()
        self._queue.put((time.time(), method, path, status, duration_ms, request_id))

    def flush(self, timeout: float = 1.0) -> None:
        """Wait until the lines queued so far are written (for a clean stop)."""
        deadline = time.monotonic() + timeout
        while not self._queue.empty() and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(BATCH_SECONDS)  # the last batch taken may still be being written

    def _write(self) -> None:
        while True:
            entries = [self._queue.get()]
            # Under load, waking for every line costs more than the lines: let a batch gather first.
            time.sleep(BATCH_SECONDS)
            while not self._queue.empty() and len(entries) < 5000:
                entries.append(self._queue.get_nowait())
            sys.stderr.write("".join(_line(e) for e in entries))
            sys.stderr.flush()


def _line(entry: Entry) -> str:
    at, method, path, status, duration_ms, request_id = entry
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))
    return (f"{stamp},{int(at * 1000) % 1000:03d} INFO gateway.access: {safe(method)} {safe(path)} {status} "
            f"{duration_ms:.1f}ms {safe(request_id)}\n")


access = AccessLog()
