"""The door: every check on what a client sends, before any of it is trusted.

Every route that takes a body calls this module first, so one set of rules decides what reaches the
router, the budget and the upstream: the body is UTF-8 JSON no deeper than ``MAX_DEPTH``, numbers are
integers or finite floats inside the range the parameter means, and model names are printable ASCII
that can go into a header, a log line or a URL. Anything else is an ``InvalidRequest`` (400) naming the
parameter; the route renders it in its own error shape.
"""

from __future__ import annotations

import re
from itertools import accumulate
from typing import NamedTuple, TypeVar
from urllib.parse import quote

import msgspec
from msgspec import UNSET, UnsetType

from gateway.errors import InvalidRequest
from gateway.wire.openai import ChatRequest, RawObject, raw_object_decoder

# Deeper than any real request (a tool's JSON schema is a few levels), and shallow enough that nothing
# downstream (msgspec, the adapters, the encoders) runs near Python's recursion limit of 1,000.
MAX_DEPTH = 128

# The largest token count any parameter may name: above every model's context window, and small enough
# that a price times it stays a finite, ordinary float.
MAX_TOKENS = 100_000_000

# A model name is printable ASCII without spaces: every provider's ids are, and the name goes into
# response headers, log lines, CSV exports and upstream URLs.
MAX_MODEL_NAME = 256
_MODEL_NAME = re.compile(r"[\x21-\x7e]+")

# A header value must never raise: anything outside printable ASCII is percent-encoded, and the value is
# capped (names are checked at the door; this also covers names an upstream answers with).
MAX_HEADER_VALUE = 1024
_HEADER_SAFE = re.compile(r"[\x20-\x7e]*")
_QUOTE_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) != "%")

# What is left of a body once escapes are gone: brackets and quotes. Strings are then dropped with two C
# passes (empty ones by ``replace``, the rest by a pattern that cannot retry), so the scan stays linear
# whatever the body holds.
_STRUCTURE = bytes(b for b in range(256) if b not in b'[]{}"')
_STRING = re.compile(rb'"[^"]*"')
# Each bracket as a signed byte: +1 opens a level, -1 closes one.
_DEPTH_STEP = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")

_T = TypeVar("_T")


# ------------------------------------------------------------------------------------------ the body


def check_body(body: bytes, *, hint: str = "a JSON object") -> None:
    """Refuse a body that is empty, not UTF-8, or nested deeper than ``MAX_DEPTH`` (before decoding it,
    so a hostile body never recurses through a decoder)."""
    if not body.strip():
        raise InvalidRequest(f"The request body is empty: send {hint}.")
    if not body.isascii():
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidRequest(f"The request body is not valid UTF-8 (byte {exc.start}): JSON must be "
                                 f"encoded as UTF-8.", code="invalid_encoding") from None
    # Nearly every body has fewer brackets than the limit, and then two counts answer without a scan.
    if body.count(b"[") + body.count(b"{") > MAX_DEPTH and (depth := json_depth(body)) > MAX_DEPTH:
        raise InvalidRequest(f"The request body is nested {depth} levels deep; the gateway accepts at most "
                             f"{MAX_DEPTH}.", code="too_deeply_nested")


def json_depth(body: bytes) -> int:
    """How deeply arrays and objects nest in ``body``, counting only brackets outside strings.

    Linear: a few C passes over the body and one running sum over its brackets. Only bodies with more
    brackets than ``MAX_DEPTH`` get here; 32 MiB crafted of nothing but brackets and bracket-holding
    strings (the worst case under the default ``server.max_body_mb``) takes 1-4 s on one core."""
    # Escaped backslashes, then escaped quotes: pairs taken left to right, as a JSON decoder reads them.
    skeleton = body.replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, _STRUCTURE)
    # Two adjacent quotes close one string and open the next, or enclose nothing: dropping them never
    # moves a bracket into or out of a string. What remains are strings that hold brackets.
    skeleton = skeleton.replace(b'""', b"")
    if b'"' in skeleton:
        skeleton = _STRING.sub(b"", skeleton)
    return max(accumulate(memoryview(skeleton.translate(_DEPTH_STEP)).cast("b")), default=0)


def decode_raw_object(body: bytes, *, hint: str = "a JSON object") -> RawObject:
    """The body's top-level members, each kept as its own bytes; every way it can be wrong is a 400."""
    return _decode(raw_object_decoder, body, hint)


def _decode(decoder: msgspec.json.Decoder[_T], body: bytes, hint: str) -> _T:
    check_body(body, hint=hint)
    try:
        return decoder.decode(body)
    except msgspec.ValidationError:
        raise InvalidRequest("The request body must be a JSON object.") from None
    except (msgspec.DecodeError, RecursionError) as exc:
        raise InvalidRequest(f"We could not parse the JSON body of your request: {exc}") from None


# --------------------------------------------------------------------------------------- the numbers


def check_int(name: str, value: object, *, low: int, high: int) -> int:
    """``value`` as an integer in ``[low, high]``, or a 400 naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"Invalid value for '{name}': expected an integer.", param=name,
                             code="invalid_value")
    if not low <= value <= high:
        raise InvalidRequest(f"Invalid value for '{name}': {_shown(value)} is outside [{low}, {high}].",
                             param=name, code="invalid_value")
    return value


def check_float(name: str, value: object, *, low: float, high: float) -> float:
    """``value`` as a finite number in ``[low, high]``, or a 400 naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequest(f"Invalid value for '{name}': expected a number.", param=name,
                             code="invalid_value")
    # NaN fails both comparisons, so it is refused here too.
    if not low <= value <= high:
        raise InvalidRequest(f"Invalid value for '{name}': {_shown(value)} is outside [{low:g}, {high:g}].",
                             param=name, code="invalid_value")
    return float(value)


def _shown(value: int | float) -> str:
    text = str(value) if isinstance(value, float) or abs(value) < 10**30 else f"{'-' if value < 0 else ''}1e30+"
    return text[:40]


def check_optional_int(name: str, value: object, *, low: int, high: int) -> None:
    """``check_int`` for a member the client may leave out (absent, UNSET or null)."""
    if value is not None and not isinstance(value, UnsetType):
        check_int(name, value, low=low, high=high)


def check_optional_float(name: str, value: object, *, low: float, high: float) -> None:
    """``check_float`` for a member the client may leave out (absent, UNSET or null)."""
    if value is not None and not isinstance(value, UnsetType):
        check_float(name, value, low=low, high=high)


class Range(NamedTuple):
    """The values a numeric parameter may take."""

    low: float
    high: float
    integer: bool


# Each number a client may send, in the range its API documents (OpenAI's for chat, Anthropic's for
# Messages); dotted names reach into a member. /openapi.json publishes the same ranges.
CHAT_RANGES: dict[str, Range] = {
    "max_tokens": Range(1, MAX_TOKENS, integer=True),
    "max_completion_tokens": Range(1, MAX_TOKENS, integer=True),
    "n": Range(1, 128, integer=True),
    "top_logprobs": Range(0, 20, integer=True),
    "seed": Range(-(2**63), 2**63 - 1, integer=True),
    "temperature": Range(0.0, 2.0, integer=False),
    "top_p": Range(0.0, 1.0, integer=False),
    "presence_penalty": Range(-2.0, 2.0, integer=False),
    "frequency_penalty": Range(-2.0, 2.0, integer=False),
}
MESSAGES_RANGES: dict[str, Range] = {
    "max_tokens": Range(1, MAX_TOKENS, integer=True),
    "temperature": Range(0.0, 1.0, integer=False),
    "top_p": Range(0.0, 1.0, integer=False),
    "top_k": Range(0, MAX_TOKENS, integer=True),
    "thinking.budget_tokens": Range(0, MAX_TOKENS, integer=True),
}
LOGIT_BIAS = Range(-100.0, 100.0, integer=False)


def check_ranges(request: object, ranges: dict[str, Range]) -> None:
    """Every member of ``request`` named in ``ranges`` that was sent, checked against its range."""
    for name, rule in ranges.items():
        if "." in name:
            value: object = request
            for part in name.split("."):
                value = getattr(value, part, None)
        else:
            value = getattr(request, name, None)
        if value is None or value is UNSET:  # not sent: most members of most requests, so checked first
            continue
        if rule.integer:
            check_int(name, value, low=int(rule.low), high=int(rule.high))
        else:
            check_float(name, value, low=rule.low, high=rule.high)


def check_chat_request(request: ChatRequest) -> None:
    """The model name and every number of an OpenAI chat request."""
    check_model_name(request.model)
    check_ranges(request, CHAT_RANGES)
    if isinstance(request.logit_bias, dict):
        for token, bias in request.logit_bias.items():
            check_float(f"logit_bias.{token[:40]}", bias, low=LOGIT_BIAS.low, high=LOGIT_BIAS.high)


# ---------------------------------------------------------------------------------- names and headers


def check_model_name(name: str, param: str = "model") -> str:
    """``name`` if it can safely be a model name (1..256 printable ASCII characters, no spaces)."""
    if not name:
        raise InvalidRequest(f"'{param}' must be a non-empty string.", param=param, code="invalid_value")
    if len(name) > MAX_MODEL_NAME:
        raise InvalidRequest(f"Invalid value for '{param}': a model name has at most {MAX_MODEL_NAME} "
                             f"characters, not {len(name)}.", param=param, code="invalid_value")
    if not _MODEL_NAME.fullmatch(name):
        raise InvalidRequest(f"Invalid value for '{param}': a model name is printable ASCII without spaces "
                             f"or control characters ({header_value(name)!r}).", param=param,
                             code="invalid_value")
    return name


def header_value(text: str, limit: int | None = MAX_HEADER_VALUE) -> str:
    """``text`` as a value any HTTP header can carry: printable ASCII stays as it is, anything else
    (non-ASCII, CR, LF, NUL, other controls, lone surrogates) is percent-encoded from UTF-8, and the
    result is cut at ``limit`` characters (None: a header relayed from upstream keeps its length)."""
    if not _HEADER_SAFE.fullmatch(text):
        text = quote(text, safe=_QUOTE_SAFE + " ", errors="surrogatepass")
    return text if limit is None else text[:limit]
