"""Native pass-through, the pure parts: what a client's request asks for, how it maps onto the provider,
which headers cross, the usage a response reports, and the gateway's own errors in each provider's shape.

Nothing here does I/O; ``routes/native.py`` moves the bytes. The request and response bodies are never
rewritten: the gateway only reads the few members it accounts with (``model`` and the output limit on
the way in, the usage on the way out) from a copy.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Literal
from urllib.parse import unquote, unquote_plus

import msgspec

from gateway.config import Provider
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


class _GenerationConfig(msgspec.Struct, rename="camel"):
    max_output_tokens: int | None = None


class _Asked(msgspec.Struct):
    """The members of a request body the gateway accounts with; every other member is skipped unread."""

    model: str | None = None
    max_tokens: int | None = None  # Anthropic, OpenAI chat (legacy)
    max_completion_tokens: int | None = None  # OpenAI chat
    max_output_tokens: int | None = None  # OpenAI Responses
    generation_config: _GenerationConfig | None = msgspec.field(default=None, name="generationConfig")  # Gemini


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


def wanted(kind: Kind, path: str, body: bytes) -> Wanted:
    """The model and output limit of a request: from the body (OpenAI, Anthropic) or the path (Gemini).

    A body that is not JSON (a multipart upload, nothing at all) names no model; a JSON body whose
    ``model`` or output limit has the wrong type is refused, since its cost could not be counted.
    """
    asked = _Asked()
    if body:
        try:
            asked = _asked_decoder.decode(body)
        except msgspec.ValidationError as exc:
            raise InvalidRequest(f"Invalid request body: {exc}", code="invalid_value") from None
        except msgspec.DecodeError:
            pass
    if kind == "gemini":
        match = _GEMINI_MODEL.search(path)
        model = unquote(match.group(1)) if match else None
        config = asked.generation_config
        limit = config.max_output_tokens if config else None
    else:
        model = asked.model
        limit = asked.max_completion_tokens or asked.max_tokens or asked.max_output_tokens
    return Wanted(model=model or None, max_tokens=limit, prompt_tokens=len(body) // 4,
                  free=path.endswith(_FREE_SUFFIXES))


def upstream_url(provider: Provider, path: str, query: str) -> str:
    """The client's path and query on the provider's base URL.

    OpenAI-compatible base URLs include ``/v1`` (https://api.openai.com/v1) while the OpenAI SDK, pointed
    at ``/openai/v1``, sends ``/openai/v1/chat/completions``: a leading ``v1/`` is dropped when the base
    URL already ends in ``/v1``, so the version is not doubled. Anthropic and Gemini base URLs are the host
    root, so their paths (``v1/messages``, ``v1beta/models/...``, ``v1/models/...``) are kept whole.
    """
    path = path.lstrip("/")
    if provider.base_url.endswith("/v1") and (path == "v1" or path.startswith("v1/")):
        path = path[3:]
    url = f"{provider.base_url}/{path}" if path else provider.base_url
    return f"{url}?{query}" if query else url


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
