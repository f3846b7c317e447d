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

from gateway.catalog import Pricing
from gateway.config import Provider
from gateway.dialects.chat import ChatCall
from gateway.dialects.embeddings import EmbeddingsCall
from gateway.errors import GatewayError
from gateway.sse import SSEEvent
from gateway.upstream import UpstreamRequest
from gateway.wire.openai import Usage


class Target(msgspec.Struct, frozen=True, kw_only=True):
    provider: Provider
    model: str  # the name sent upstream
    public_model: str  # the name the client sees in responses: provider/model
    max_output_tokens: int | None = None  # from the catalog, when known


class ResponseContext(msgspec.Struct, kw_only=True):
    request_id: str
    provider: str  # the configured provider's name, for error messages
    public_model: str
    include_usage: bool = False
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
