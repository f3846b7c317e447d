"""What every provider adapter offers, and the small types they share.

An adapter is a module (``providers/openai.py``, ``anthropic.py``, ``gemini.py``) with pure functions:
``build_request`` turns the client's OpenAI-format call into an ``UpstreamRequest``; ``parse_response``
and a stream translator turn the provider's answer back into OpenAI format; ``parse_error`` turns the
provider's error body into a ``GatewayError``. Only ``upstream`` does I/O.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Protocol

import msgspec

from gateway.catalog import Pricing, ReasoningLevel
from gateway.config import Provider
from gateway.dialects.chat import ChatCall
from gateway.dialects.embeddings import EmbeddingsCall
from gateway.errors import GatewayError
from gateway.notes import Notes
from gateway.sse import SSEEvent
from gateway.upstream import UpstreamRequest
from gateway.wire.openai import Usage


class Target(msgspec.Struct, frozen=True, kw_only=True):
    provider: Provider
    model: str  # the name sent upstream
    public_model: str  # the name the client sees in responses: provider/model
    max_output_tokens: int | None = None  # from the catalog, when known
    reasoning: ReasoningLevel | None = None  # the catalog's highest reasoning effort; None: unknown


def lowered_max_tokens(call: ChatCall, target: Target, notes: Notes) -> int | None:
    """The client's output limit lowered to the catalog's maximum for this model, noted as adjusted; None
    when it fits or was not sent. The catalog's figure is the model's hard limit: a larger value is a 400
    upstream, and a smaller answer than asked for is what every client already handles at max_tokens."""
    req = call.request
    for name in ("max_completion_tokens", "max_tokens"):
        value = getattr(req, name)
        if isinstance(value, int) and target.max_output_tokens is not None and value > target.max_output_tokens:
            notes.adjust(call.client_path(name), target.max_output_tokens)
            return target.max_output_tokens
    return None


def reasoning_unsupported(call: ChatCall, target: Target, notes: Notes) -> bool:
    """Reasoning asked of a model the catalog says has none: not sent, noted as ignored (a model without
    reasoning answers the same question, only without thinking first)."""
    effort = call.request.reasoning_effort
    if isinstance(effort, str) and effort != "none" and target.reasoning == "none":
        for path in call.client_path("reasoning_effort").split(", "):  # a dialect may name two members
            notes.ignore(path)
        return True
    return False


class ResponseContext(msgspec.Struct, kw_only=True):
    request_id: str
    provider: str  # the configured provider's name, for error messages
    public_model: str
    include_usage: bool = False
    # The client set parallel_tool_calls false: an adapter whose provider has no such switch keeps one call.
    one_tool_call: bool = False
    created: int = msgspec.field(default_factory=lambda: int(time.time()))
    metadata: dict[str, Any] | None = None  # routing metadata, set by the pipeline once the target answered
    # Set by the pipeline: add the cost_usd_* fields to every usage object (null when pricing is None).
    report_cost: bool = False
    pricing: Pricing | None = None

    def priced(self, usage: Usage) -> Usage:
        """The usage object the client sees."""
        if not self.report_cost:
            return usage
        from gateway.usage import with_cost  # usage imports store; keep adapters' imports light

        return with_cost(usage, self.pricing)

    @property
    def completion_id(self) -> str:
        return "chatcmpl-" + self.request_id.removeprefix("req_")


class StreamTranslator(Protocol):
    usage: Usage | None

    def feed(self, event: SSEEvent) -> list[bytes]:
        """One parsed upstream event in, zero or more OpenAI SSE frames out."""

    def close(self) -> list[bytes]:
        """The upstream body ended cleanly: the frames that finish the client's stream."""


class Adapter(Protocol):
    def build_request(self, call: ChatCall, target: Target) -> UpstreamRequest: ...

    def parse_response(self, body: bytes, ctx: ResponseContext) -> tuple[bytes, Usage | None]: ...

    def stream_translator(self, ctx: ResponseContext) -> StreamTranslator: ...

    def parse_error(
        self, status: int, body: bytes, headers: Mapping[str, str], provider: str
    ) -> GatewayError: ...


class Embedder(Protocol):
    """The embeddings side of a provider kind that has them (``providers/*_embeddings.py``); its errors are
    read by the kind's ``Adapter.parse_error``."""

    def build_request(self, call: EmbeddingsCall, target: Target) -> UpstreamRequest: ...

    def parse_response(self, call: EmbeddingsCall, body: bytes, ctx: ResponseContext) -> tuple[bytes, Usage | None]:
        """The OpenAI embeddings answer, and the provider's token count (None: it sent none)."""
