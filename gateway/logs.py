"""Logging set-up shared by the CLI and the server workers: one line per record, to stderr.

The access log (one line per request) does not go through ``logging``: formatting and writing a
record there cost about 7% of a core per request under load. The request path only puts a tuple on
a queue; a thread formats and writes the lines in batches, in the same format as the other records.

Every line is made safe as it is formatted, whatever a caller put in it: credentials are cut out
(``gateway.redaction``: an upstream error or a config error can quote a key), and control characters
are escaped, so that a client's ``%0A`` in a path or a model name cannot forge a line of its own.

With ``[logging] format = "json"`` every line is one JSON object (the encoder escapes control characters),
and the access line of a request that left a usage record carries that record's fields: key, project,
route, models, provider, attempts, tokens, cost, latency, time to first token. Never a prompt: records
hold none on the way to the log.
"""

from __future__ import annotations

import contextvars
import logging
import os
import queue
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

import msgspec

from gateway.redaction import active, redact

if TYPE_CHECKING:
    from gateway.store import RequestRecord

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


_json = msgspec.json.Encoder()


def _json_line(entry: dict[str, Any]) -> str:
    # JSON may hold U+2028/U+2029 raw, but some log viewers break lines on them.
    return _json.encode(entry).decode().replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def _iso(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at * 1000) % 1000:03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message (credentials cut), and a traceback if any."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {"ts": _iso(record.created), "level": record.levelname, "logger": record.name,
                                 "message": redact(record.getMessage())}
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        if record.stack_info:
            entry["stack"] = redact(self.formatStack(record.stack_info))
        return _json_line(entry)


def setup_logging(fmt: str = "text") -> None:
    level = os.environ.get(LEVEL_ENV_VAR, "INFO").upper()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else SafeFormatter(FORMAT))
    access.json = fmt == "json"
    root = logging.getLogger("gateway")
    root.handlers[:] = [handler]
    root.setLevel(level if level in logging.getLevelNamesMapping() else "INFO")
    root.propagate = False
    access.enabled = root.isEnabledFor(logging.INFO)


Entry = tuple[float, str, str, int, float, str, "RequestRecord | None"]
# The usage record of the request being served, for its JSON access line (JSON mode only). A one-item list
# set when the request starts: a stream may settle in a task of its own, which sees a copy of the context
# but the same list.
_record: contextvars.ContextVar[list[RequestRecord | None] | None] = contextvars.ContextVar("gateway_record",
                                                                                          default=None)


class AccessLog:
    def __init__(self) -> None:
        self.enabled = True
        self.json = False
        self._queue: queue.SimpleQueue[Entry] = queue.SimpleQueue()
        self._writer_pid = 0

    def begin(self) -> None:
        """A request starts (JSON mode): a place for its usage record."""
        _record.set([None])

    def note(self, record: RequestRecord) -> None:
        """The request's usage record, for its access line."""
        slot = _record.get()
        if slot is not None:
            slot[0] = record

    def log(self, method: str, path: str, status: int, duration_ms: float, request_id: str) -> None:
        if not self.enabled:
            return
        if self._writer_pid != os.getpid():  # first line in this process (workers are forked)
            self._writer_pid = os.getpid()
            threading.Thread(target=self._write, name="gateway-access-log", daemon=True).start()
        slot = _record.get()
        record = slot[0] if slot is not None else None
        self._queue.put((time.time(), method, path, status, duration_ms, request_id, record))

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
            sys.stderr.write("".join((_json_access if self.json else _line)(e) for e in entries))
            sys.stderr.flush()


class _Repeated:
    """``safe`` of the strings every access line repeats (methods, routes) and of the second its time stamp
    names, each worked out once: redacting and escaping cost about 5 µs a string, three strings a line,
    and the writer thread spends that on the server's own core (issue 18's profile). Forgotten when full,
    and whenever a reload installs other secrets."""

    LIMIT = 4096

    def __init__(self) -> None:
        self._safe: dict[str, str] = {}
        self._redactor = active()
        self._second = -1
        self._stamp = ""

    def safe(self, text: str) -> str:
        if self._redactor is not active() or len(self._safe) >= self.LIMIT:
            self._safe.clear()
            self._redactor = active()
        done = self._safe.get(text)
        if done is None:
            done = self._safe[text] = safe(text)
        return done

    def stamp(self, at: float) -> str:
        second = int(at)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        return self._stamp


_repeated = _Repeated()  # used by the writer thread only


def _line(entry: Entry) -> str:
    # The request id needs no ``safe``: it is the gateway's own, or a client's that the door checked for
    # both (see ``app.RequestContext``).
    at, method, path, status, duration_ms, request_id, _ = entry
    return (f"{_repeated.stamp(at)},{int(at * 1000) % 1000:03d} INFO gateway.access: {_repeated.safe(method)} "
            f"{_repeated.safe(path)} {status} {duration_ms:.1f}ms {request_id}\n")


def _json_access(entry: Entry) -> str:
    at, method, path, status, duration_ms, request_id, record = entry
    line: dict[str, Any] = {"ts": _iso(at), "level": "INFO", "logger": "gateway.access", "method": redact(method),
                            "path": redact(path), "status": status, "duration_ms": round(duration_ms, 3),
                            "request_id": request_id}
    if record is not None:
        line.update({
            "key_name": redact(record.key_name), "project": redact(record.project) if record.project else None,
            "route": record.mode, "stream": record.stream,
            "model_requested": redact(record.requested_model) if record.requested_model else None,
            "model": redact(record.model) if record.model else None, "provider": record.provider,
            "attempts": record.attempts, "outcome_status": record.status, "error_type": record.error_type,
            "prompt_tokens": record.prompt_tokens, "completion_tokens": record.completion_tokens,
            "cached_tokens": record.cached_tokens, "reasoning_tokens": record.reasoning_tokens,
            "cost_usd": record.cost_total, "latency_ms": record.latency_ms, "ttft_ms": record.ttft_ms,
        })
    return _json_line(line) + "\n"


access = AccessLog()
