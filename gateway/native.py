"""Native pass-through, the pure parts: what a client's request asks for, how it maps onto the provider,
which headers cross, the usage a response reports, and the gateway's own errors in each provider's shape.

Nothing here does I/O; ``routes/native.py`` moves the bytes. The request and response bodies are never
rewritten: the gateway only reads the few members it accounts with (``model`` and the output limit on
the way in, the usage on the way out) from a copy.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from typing import Literal
from urllib.parse import unquote, unquote_plus

import msgspec
from yarl import URL

from gateway.config import Provider
from gateway.door import MAX_TOKENS, check_body, check_model_name, check_optional_int, header_value
from gateway.errors import GatewayError, InvalidRequest
from gateway.providers import anthropic, gemini
from gateway.sse import SSEParser, encode_data, encode_event
from gateway.upstream import HOP_BY_HOP
from gateway.wire.openai import CompletionTokensDetails, PromptTokensDetails, Usage

Kind = Literal["openai", "anthropic", "gemini"]

# Where each SDK may put the gateway key. All of them are removed before the request goes upstream,
# whichever one carried the key: ``upstream.auth_headers`` adds the provider's own.
CREDENTIAL_HEADERS = ("authorization", "x-api-key", "x-goog-api-key")
# Never forwarded upstream: the client's credentials, its cookies (they belong to the gateway's origin, e.g.
# an admin session), the gateway's own x-gateway-* headers, and accept-encoding, so that aiohttp asks only
# for the encodings it can decode (it decompresses; a client's "br" or "zstd" could reach us undecodable).
_DROPPED_REQUEST = HOP_BY_HOP | set(CREDENTIAL_HEADERS) | {"cookie", "accept-encoding"}
# Never passed back: a provider's cookies are for its own domain, not the gateway's.
_DROPPED_RESPONSE = HOP_BY_HOP | {"set-cookie"}
GATEWAY_HEADER_PREFIX = "x-gateway-"
RATE_HEADER_PREFIX = "x-ratelimit-"

# Token counting is free at every provider: it reserves nothing and is not priced.
_FREE_SUFFIXES = ("/count_tokens", ":countTokens", "/input_tokens")
# Gemini names the model in the path: v1beta/models/{model}:generateContent (or tunedModels/...).
_GEMINI_MODEL = re.compile(r"(?:^|/)(?:models|tunedModels)/([^/:]+):\w+$")


# ------------------------------------------------------------------------------------------ requests


class _ThinkingConfig(msgspec.Struct, rename="camel"):
    thinking_budget: int | None = None


class _GenerationConfig(msgspec.Struct, rename="camel"):
    max_output_tokens: int | None = None
    candidate_count: int | None = None
    thinking_config: _ThinkingConfig | None = None


class _Thinking(msgspec.Struct):
    budget_tokens: int | None = None


class _Asked(msgspec.Struct):
    """The members of a request body the gateway accounts with or checks; every other member is skipped."""

    model: str | None = None
    max_tokens: int | None = None  # Anthropic, OpenAI chat (legacy)
    max_completion_tokens: int | None = None  # OpenAI chat
    max_output_tokens: int | None = None  # OpenAI Responses
    n: int | None = None  # OpenAI chat and completions
    thinking: _Thinking | None = None  # Anthropic extended thinking
    generation_config: _GenerationConfig | None = msgspec.field(default=None, name="generationConfig")  # Gemini

    def check(self) -> None:
        """Every number the gateway reserves by, or that multiplies the answer, in a sane range: a negative
        limit would drain the rate buckets and price the request at nothing."""
        for name in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
            check_optional_int(name, getattr(self, name), low=1, high=MAX_TOKENS)
        check_optional_int("n", self.n, low=1, high=128)
        if self.thinking is not None:
            check_optional_int("thinking.budget_tokens", self.thinking.budget_tokens, low=0, high=MAX_TOKENS)
        config = self.generation_config
        if config is not None:
            check_optional_int("generationConfig.maxOutputTokens", config.max_output_tokens, low=1, high=MAX_TOKENS)
            check_optional_int("generationConfig.candidateCount", config.candidate_count, low=1, high=128)
            if config.thinking_config is not None:  # -1: Gemini's "dynamic thinking"
                check_optional_int("generationConfig.thinkingConfig.thinkingBudget",
                                   config.thinking_config.thinking_budget, low=-1, high=MAX_TOKENS)


_asked_decoder = msgspec.json.Decoder(_Asked)


class Wanted(msgspec.Struct, frozen=True, kw_only=True):
    model: str | None  # as the provider names it; None: the request names none (GET /v1/models, files…)
    max_tokens: int | None
    prompt_tokens: int  # estimated: about four bytes a token
    free: bool  # token counting: reserved and priced at zero

    @property
    def tokens(self) -> int:
        """What TPM limits take up front, as for the unified endpoint: prompt estimate plus max output."""
        return 0 if self.free else self.prompt_tokens + (self.max_tokens or 0)


def wanted(kind: Kind, path: str, body: bytes, *, generation: bool = True) -> Wanted:
    """The model and output limit of a request: from the body (OpenAI, Anthropic) or the path (Gemini).

    ``generation``: the endpoint takes a JSON object naming a model (chat, messages, generateContent…), so a
    body that is not one (not UTF-8, nested too deep, an array, not JSON) is refused with a 400. Any other
    endpoint (a file upload, a batch) may send any body: one that is not a JSON object names no model. Either
    way a ``model`` or number of the wrong type or out of range is refused, since its cost could not be counted.
    """
    asked = _Asked()
    if body or generation:
        try:
            check_body(body)
            asked = _asked_decoder.decode(body)
        except InvalidRequest:
            if generation:
                raise
        except msgspec.ValidationError as exc:
            if generation or not str(exc).startswith("Expected `object`"):
                raise InvalidRequest(f"Invalid request body: {exc}", code="invalid_value") from None
        except (msgspec.DecodeError, RecursionError) as exc:
            if generation:
                raise InvalidRequest(f"We could not parse the JSON body of your request: {exc}") from None
    asked.check()
    if kind == "gemini":
        match = _GEMINI_MODEL.search(path)
        model = unquote(match.group(1)) if match else None
        config = asked.generation_config
        limit = config.max_output_tokens if config else None
    else:
        model = asked.model
        limit = asked.max_completion_tokens or asked.max_tokens or asked.max_output_tokens
    if model:  # it goes into records, headers and log lines
        check_model_name(model)
    return Wanted(model=model or None, max_tokens=limit, prompt_tokens=len(body) // 4,
                  free=path.endswith(_FREE_SUFFIXES))


# --------------------------------------------------------------------------------------------- paths

# Percent-decoding is repeated this many times looking for a hidden ".." (%252e%252e is ".." twice
# decoded); a path still changing after that is refused rather than trusted.
_MAX_DECODINGS = 4
# Characters no endpoint path needs and some servers read as separators or line ends: backslash (IIS and
# others treat it as "/"), NUL and the other controls.
_FORBIDDEN = re.compile(r"[\\\x00-\x1f\x7f]")


def _escapes(path: str) -> bool:
    """Whether ``path``, at any depth of percent-decoding, holds a dot segment ("." or "..", also with
    ";params" as Tomcat reads them), a forbidden character or bytes that are not UTF-8: what a server could
    resolve outside the base path, whichever decoding it applies."""
    text = path
    for _ in range(_MAX_DECODINGS + 1):
        if _FORBIDDEN.search(text):
            return True
        if any(segment.partition(";")[0].strip() in (".", "..") for segment in text.split("/")):
            return True
        try:
            # Strict UTF-8: overlong forms (%c0%af for "/") are how lenient decoders get tricked.
            decoded = unquote(text, errors="strict")
        except UnicodeDecodeError:
            return True
        if decoded == text:
            return False
        text = decoded
    return True


def _bad_path(path: str) -> InvalidRequest:
    shown = path if len(path) <= 80 else path[:80] + "…"
    return InvalidRequest(f"Invalid path '{_FORBIDDEN.sub('?', shown)}': a native path may not contain '.' or "
                          "'..' segments (encoded or not), backslashes or control characters, and must stay "
                          "under the provider's base URL.", code="invalid_path")


def upstream_url(provider: Provider, path: str, query: str) -> str:
    """The client's path and query on the provider's base URL; a path that could leave the base URL (dot
    segments, encoded or not, backslashes, control characters) is a 400 ``invalid_path``.

    OpenAI-compatible base URLs include ``/v1`` (https://api.openai.com/v1) while the OpenAI SDK, pointed
    at ``/openai/v1``, sends ``/openai/v1/chat/completions``: a leading ``v1/`` is dropped when the base
    URL already ends in ``/v1``, so the version is not doubled. Anthropic and Gemini base URLs are the host
    root, so their paths (``v1/messages``, ``v1beta/models/...``, ``v1/models/...``) are kept whole.

    The URL is finally parsed as the upstream client will parse it (yarl decodes ``%2e`` and resolves dot
    segments), and must still be on the base URL's origin and under its path.
    """
    if _escapes(path):
        raise _bad_path(path)
    path = path.lstrip("/")
    if provider.base_url.endswith("/v1") and (path == "v1" or path.startswith("v1/")):
        path = path[3:]
    url = f"{provider.base_url}/{path}" if path else provider.base_url
    base, sent = URL(provider.base_url), URL(url)
    prefix = base.raw_path.rstrip("/")
    inside = not prefix or sent.raw_path == prefix or sent.raw_path.startswith(prefix + "/")
    if (sent.scheme, sent.host, sent.port) != (base.scheme, base.host, base.port) or not inside:
        raise _bad_path(path)
    return f"{url}?{query}" if query else url


def api_path(kind: Kind, path: str) -> str:
    """The client's path as the provider's API reference names it, for ``native_paths`` patterns: decoded
    once, with a leading "/", and for OpenAI-type providers always under ``/v1`` (the SDK pointed at
    ``/openai/v1`` sends ``v1/files``; a client of a base URL without the version sends ``files``)."""
    path = unquote(path.lstrip("/"))
    if kind == "openai" and not (path == "v1" or path.startswith("v1/")):
        path = f"v1/{path}".rstrip("/")
    return "/" + path


# ------------------------------------------------------------------------------------------- access

# What any key may reach: the endpoints that generate (or count, or embed) with a named model, and the model
# listings. Everything else a provider serves (files, batches, stored completions and responses, fine-tuning,
# vector stores, assistants, the organization's usage and costs, audio and images) holds or makes data shared
# by everyone behind the gateway's provider key, so it needs a ``native_paths`` pattern.
_GEMINI_METHODS = ("generateContent", "streamGenerateContent", "countTokens", "embedContent", "batchEmbedContents")
_GEMINI_VERSIONS = ("v1", "v1beta", "v1alpha")
DEFAULT_PATHS: dict[Kind, tuple[str, ...]] = {
    "openai": ("POST /v1/chat/completions", "POST /v1/completions", "POST /v1/embeddings", "POST /v1/responses",
               "POST /v1/responses/input_tokens", "GET /v1/models", "GET /v1/models/*"),
    "anthropic": ("POST /v1/messages", "POST /v1/messages/count_tokens", "POST /v1/complete", "GET /v1/models",
                  "GET /v1/models/*"),
    "gemini": (*(f"POST /{version}/{collection}/*:{method}" for version in _GEMINI_VERSIONS
                 for collection in ("models", "tunedModels") for method in _GEMINI_METHODS),
               *(f"GET /{version}/models{rest}" for version in _GEMINI_VERSIONS for rest in ("", "/*"))),
}


def _glob(pattern: str) -> re.Pattern[str]:
    """A path glob: ``*`` is any run within one segment, ``**`` any run across segments, ``?`` one character."""
    parts = re.split(r"(\*\*|\*|\?)", pattern)
    return re.compile("".join({"**": ".*", "*": "[^/]*", "?": "[^/]"}.get(part, re.escape(part)) for part in parts))


@functools.lru_cache(maxsize=256)
def native_access(kind: Kind, extra: tuple[str, ...]) -> NativeAccess:
    """The access rules for a provider kind plus these patterns, compiled once per distinct set."""
    return NativeAccess(DEFAULT_PATHS[kind], extra)


class NativeAccess:
    """Which (method, API path) pairs a request may reach: a provider kind's defaults plus ``native_paths``
    patterns ("METHOD /path/glob", METHOD may be ``*``) from the provider's config and the key's."""

    def __init__(self, defaults: Iterable[str], extra: Iterable[str]) -> None:
        self._defaults = [self._compile(p) for p in defaults]
        self._rules = self._defaults + [self._compile(p) for p in extra]

    @staticmethod
    def _compile(pattern: str) -> tuple[str, re.Pattern[str]]:
        method, _, path = pattern.strip().partition(" ")
        return method.upper(), _glob(path.strip())

    def allows(self, method: str, path: str) -> bool:
        return any(m in ("*", method) and p.fullmatch(path) for m, p in self._rules)

    def generation(self, method: str, path: str) -> bool:
        """Whether this is one of the default POST endpoints, whose body must be a JSON object."""
        return any(m == method and m != "GET" and p.fullmatch(path) for m, p in self._defaults)


def split_query(raw: bytes) -> tuple[str, str | None]:
    """The query string without its ``key=`` members (the Gemini REST way to pass a key), and that key.

    The other members go upstream exactly as the client encoded them.
    """
    kept: list[str] = []
    key: str | None = None
    for member in raw.decode("latin-1").split("&"):
        name, _, value = member.partition("=")
        if unquote_plus(name) == "key":
            key = key or unquote_plus(value)
        elif member:
            kept.append(member)
    return "&".join(kept), key


def client_secret(headers: Mapping[str, str], query_key: str | None) -> str | None:
    """The gateway key, wherever the client's SDK put it: ``Authorization: Bearer`` (OpenAI, Anthropic 2.x),
    ``x-api-key`` (older Anthropic SDKs, Claude Code, curl), ``x-goog-api-key`` or ``?key=`` (Google)."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return headers.get("x-api-key") or headers.get("x-goog-api-key") or query_key or None


def request_headers(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """The client's headers that go upstream (ASGI gives names lower-cased); repeated ones are joined."""
    pairs = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in raw]
    # A header named in Connection is hop-by-hop for this one message (RFC 9110 §7.6.1).
    listed = {token.strip() for name, value in pairs if name == "connection" for token in value.lower().split(",")}
    forwarded: dict[str, str] = {}
    for name, value in pairs:
        if name in _DROPPED_REQUEST or name in listed or name.startswith(GATEWAY_HEADER_PREFIX):
            continue
        forwarded[name] = f"{forwarded[name]}, {value}" if name in forwarded else value
    return forwarded


def response_headers(upstream: Mapping[str, str], gateway: Mapping[str, str]) -> dict[str, str]:
    """The provider's headers for the client, plus the gateway's ``x-ratelimit-*`` for the key.

    When the key has limits, the provider's own ``x-ratelimit-*`` (OpenAI's, about the gateway's account)
    are left out so the set the client reads is one consistent set, the key's.
    """
    own_limits = any(name.startswith(RATE_HEADER_PREFIX) for name in gateway)
    headers: dict[str, str] = {}
    for name, value in upstream.items():
        lower = name.lower()
        if lower in _DROPPED_RESPONSE or (own_limits and lower.startswith(RATE_HEADER_PREFIX)):
            continue
        value = header_value(value, limit=None)  # an upstream's bytes must not make the answer raise
        headers[lower] = f"{headers[lower]}, {value}" if lower in headers else value
    headers.update(gateway)
    return headers


# ------------------------------------------------------------------------------------------- errors

_GOOGLE_STATUSES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                    409: "ABORTED", 413: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL",
                    502: "UNAVAILABLE", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


_encoder = msgspec.json.Encoder()


def error_body(kind: Kind, exc: GatewayError) -> bytes:
    """A gateway error in the shape the provider's own SDK parses, so it raises its usual exception
    (anthropic.RateLimitError, google.genai.errors.ClientError…); the HTTP status stays the gateway's."""
    status = exc.status_code
    if kind == "anthropic":
        return anthropic.error_body(exc)
    if kind == "gemini":
        canonical = _GOOGLE_STATUSES.get(status, "INTERNAL" if status >= 500 else "FAILED_PRECONDITION")
        error = gemini.GoogleError(code=status, message=exc.message, status=canonical)
        return _encoder.encode(gemini.ErrorEnvelope(error=error))
    return exc.body()


def stream_error(kind: Kind, exc: GatewayError, sent: bytes) -> bytes:
    """A failure after an event stream started, reported the way the provider itself does it, so the SDK raises
    rather than seeing a clean end: Anthropic's ``error`` event, a ``data: {"error": …}`` record for OpenAI and
    Gemini. ``sent``: the last chunk relayed; a blank line first closes an event the cut left unfinished."""
    boundary = not sent or sent.endswith((b"\n\n", b"\r\n\r\n", b"\r\r"))
    body = error_body(kind, exc)
    return (b"" if boundary else b"\n\n") + (encode_event("error", body) if kind == "anthropic" else encode_data(body))


# -------------------------------------------------------------------------------------------- usage


class _TokenDetails(msgspec.Struct):
    cached_tokens: int = 0
    reasoning_tokens: int = 0


class _OpenAIUsage(msgspec.Struct):
    """Chat and embeddings (prompt/completion) and the Responses API (input/output), in one lenient shape."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    prompt_tokens_details: _TokenDetails | None = None
    input_tokens_details: _TokenDetails | None = None
    completion_tokens_details: _TokenDetails | None = None
    output_tokens_details: _TokenDetails | None = None

    def as_usage(self) -> Usage:
        prompt = self.prompt_tokens if self.prompt_tokens is not None else self.input_tokens or 0
        completion = self.completion_tokens if self.completion_tokens is not None else self.output_tokens or 0
        cached = self.prompt_tokens_details or self.input_tokens_details or _TokenDetails()
        reasoning = self.completion_tokens_details or self.output_tokens_details or _TokenDetails()
        return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion,
                     prompt_tokens_details=PromptTokensDetails(cached_tokens=cached.cached_tokens),
                     completion_tokens_details=CompletionTokensDetails(reasoning_tokens=reasoning.reasoning_tokens),
                     reasoning_tokens=reasoning.reasoning_tokens)


class _OpenAIResponse(msgspec.Struct):
    usage: _OpenAIUsage | None = None


class _OpenAIPayload(msgspec.Struct):
    usage: _OpenAIUsage | None = None  # a body, or a chat stream's usage chunk
    response: _OpenAIResponse | None = None  # a Responses API stream event (response.completed…)


class _AnthropicMessage(msgspec.Struct):
    usage: anthropic.MessageUsage | None = None


class _AnthropicPayload(msgspec.Struct):
    usage: anthropic.MessageUsage | None = None  # a body, or message_delta
    message: _AnthropicMessage | None = None  # message_start


class _GeminiPayload(msgspec.Struct, rename="camel"):
    usage_metadata: gemini.UsageMetadata | None = None


_openai_decoder = msgspec.json.Decoder(_OpenAIPayload)
_anthropic_decoder = msgspec.json.Decoder(_AnthropicPayload)
# streamGenerateContent without alt=sse answers one JSON array of responses.
_gemini_decoder = msgspec.json.Decoder(_GeminiPayload | list[_GeminiPayload])


class _Reading:
    """Usage as the payloads so far report it; ``take`` gets one JSON body or one event's data."""

    def __init__(self, kind: Kind) -> None:
        self.kind = kind
        self.usage: Usage | None = None
        self._anthropic = anthropic.MessageUsage()

    def take(self, data: bytes) -> None:
        try:
            if self.kind == "openai":
                self._openai(_openai_decoder.decode(data))
            elif self.kind == "anthropic":
                self._anthropic_update(_anthropic_decoder.decode(data))
            else:
                self._gemini(_gemini_decoder.decode(data))
        except msgspec.DecodeError:
            pass  # not JSON ("[DONE]", a ping) or not a shape that carries usage: nothing to count

    def _openai(self, payload: _OpenAIPayload) -> None:
        found = payload.usage or (payload.response.usage if payload.response else None)
        if found is not None:
            self.usage = found.as_usage()

    def _anthropic_update(self, payload: _AnthropicPayload) -> None:
        # message_start carries the input counts, message_delta the (cumulative) output; a body has both.
        for update in (payload.message.usage if payload.message else None, payload.usage):
            if update is not None:
                self._anthropic = anthropic.merge_usage(self._anthropic, update)
                # thought=True: without reading the content, reasoning tokens are unknown unless reported.
                self.usage = anthropic.usage_of(self._anthropic, thought=True)

    def _gemini(self, payload: _GeminiPayload | list[_GeminiPayload]) -> None:
        # usageMetadata is cumulative: the last one wins.
        for record in payload if isinstance(payload, list) else [payload]:
            if record.usage_metadata is not None:
                self.usage = gemini.usage_of(record.usage_metadata)


class UsageWatch:
    """Reads the usage out of a copy of the response bytes as they pass; never holds them back.

    Event streams go through the incremental SSE parser; any other body is kept and read when it ends.
    """

    def __init__(self, kind: Kind, *, event_stream: bool) -> None:
        self._reading = _Reading(kind)
        self._parser = SSEParser() if event_stream else None
        self._body: list[bytes] = []
        self.events = 0

    @property
    def usage(self) -> Usage | None:
        return self._reading.usage

    def feed(self, chunk: bytes) -> None:
        if self._parser is None:
            self._body.append(chunk)
            return
        for event in self._parser.feed(chunk):
            self.events += 1
            self._reading.take(event.data)

    def close(self) -> None:
        """The body ended: read the kept body, or the last event if it had no blank line after it."""
        if self._parser is None:
            self._reading.take(b"".join(self._body))
            self._body.clear()
            return
        for event in self._parser.close():
            self.events += 1
            self._reading.take(event.data)
