"""The Responses API forwarded to a server that speaks it (OpenAI; a compatible server with ``responses = true``).

Same dialect on both ends, so nothing is translated: the client's body goes upstream with only ``model``
rewritten (and, when it names a ``previous_response_id``, that id replaced by the earlier turns the gateway
kept: the id is the gateway's, and the target may not be the one that answered it). Each stream event
reaches the client as the upstream sent it, as it arrives; only the final response (the answer, or the
terminal event's ``response``) is decoded: for the usage record and the stored copy, and to add what
translated answers carry too, the ``cost_usd_*`` fields in ``usage`` and the routing report as ``gateway``.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from gateway.dialects.chat import ChatCall
from gateway.errors import GatewayError, UpstreamError
from gateway.providers import openai
from gateway.providers.base import ResponseContext, Target
from gateway.sse import SSEEvent, encode_data, encode_event
from gateway.upstream import UpstreamRequest
from gateway.wire.openai import (
    CompletionTokensDetails,
    PromptTokensDetails,
    RawObject,
    Usage,
    encoder,
    raw_object_decoder,
)

_JSON = {"content-type": "application/json"}
# The events that end a Responses stream, each carrying the whole response (with its usage).
TERMINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})


class _InputDetails(msgspec.Struct):
    cached_tokens: int = 0


class _OutputDetails(msgspec.Struct):
    reasoning_tokens: int = 0


class ResponsesUsage(msgspec.Struct):
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int | None = None
    input_tokens_details: _InputDetails | None = None
    output_tokens_details: _OutputDetails | None = None


_usage_decoder: msgspec.json.Decoder[ResponsesUsage | None] = msgspec.json.Decoder(ResponsesUsage | None)


class _Head(msgspec.Struct):
    """What a stream event says about itself: enough to frame a failure like the events before it."""

    type: str = ""
    sequence_number: int | None = None


_head_decoder = msgspec.json.Decoder(_Head)


def chat_usage(usage: ResponsesUsage) -> Usage:
    """The Responses usage object in the gateway's common (chat) terms: cached inside input, reasoning inside
    output, as both APIs count them."""
    return Usage(prompt_tokens=usage.input_tokens, completion_tokens=usage.output_tokens,
                 total_tokens=usage.total_tokens or usage.input_tokens + usage.output_tokens,
                 prompt_tokens_details=PromptTokensDetails(
                     cached_tokens=usage.input_tokens_details.cached_tokens if usage.input_tokens_details else 0),
                 completion_tokens_details=CompletionTokensDetails(
                     reasoning_tokens=usage.output_tokens_details.reasoning_tokens
                     if usage.output_tokens_details else 0))


class ResponsesRelay:
    """The adapter for one request whose target serves the Responses API. ``body`` is the client's body,
    already stripped of what only the gateway understands; ``final`` is the whole response once known
    (the answer, or a stream's terminal event), for the gateway's store."""

    def __init__(self, raw: RawObject) -> None:
        self.raw = raw
        self.final: bytes | None = None

    def build_request(self, call: ChatCall, target: Target) -> UpstreamRequest:
        raw = dict(self.raw)
        raw["model"] = msgspec.Raw(encoder.encode(target.model))
        return UpstreamRequest(provider=target.provider, url=f"{target.provider.base_url}/responses",
                               body=encoder.encode(raw), headers=_JSON)

    def parse_response(self, body: bytes, ctx: ResponseContext) -> tuple[bytes, Usage | None]:
        try:
            response = raw_object_decoder.decode(body)
        except msgspec.DecodeError:
            raise _invalid(ctx, "answered with a body that is not a JSON object.") from None
        usage = _finish(response, ctx)
        self.final = encoder.encode(response)
        return self.final, usage

    def stream_translator(self, ctx: ResponseContext) -> RelayStream:
        return RelayStream(self, ctx)

    def parse_error(self, status: int, body: bytes, headers: Mapping[str, str], provider: str) -> GatewayError:
        return openai.parse_error(status, body, headers, provider)


class RelayStream:
    """Forwards each event as it came; decodes only the terminal one (usage, the stored copy, the cost
    fields). A stream that stops before a terminal event was cut short."""

    __slots__ = ("ctx", "ended", "relay", "sequence", "usage")

    def __init__(self, relay: ResponsesRelay, ctx: ResponseContext) -> None:
        self.relay = relay
        self.ctx = ctx
        self.usage: Usage | None = None
        self.sequence = -1
        self.ended = False

    def feed(self, event: SSEEvent) -> list[bytes]:
        if event.data == b"[DONE]":  # not part of the Responses API; some compatible servers add it
            return []
        name = event.event
        if name is None or name in TERMINAL_EVENTS or name == "error":
            try:
                head = _head_decoder.decode(event.data)
            except (msgspec.DecodeError, msgspec.ValidationError):
                raise _invalid(self.ctx, "sent a stream event that is not a Responses event.") from None
            name = head.type
            if head.sequence_number is not None:
                self.sequence = head.sequence_number
            if name == "error":
                raise openai.parse_error(502, event.data, {}, self.ctx.provider)
            if name in TERMINAL_EVENTS:
                return [encode_event(name, self._terminal(event.data))]
        else:
            self.sequence += 1
        return [encode_event(name, event.data) if name else encode_data(event.data)]

    def _terminal(self, data: bytes) -> bytes:
        self.ended = True
        try:
            frame = raw_object_decoder.decode(data)
            response = raw_object_decoder.decode(frame["response"])
        except (msgspec.DecodeError, KeyError):
            raise _invalid(self.ctx, "ended its stream with an event that carries no response.") from None
        self.usage = _finish(response, self.ctx)
        self.relay.final = encoder.encode(response)
        frame["response"] = msgspec.Raw(self.relay.final)
        return encoder.encode(frame)

    def close(self) -> list[bytes]:
        if not self.ended:
            raise UpstreamError(f"[{self.ctx.provider}] the stream ended before response.completed.",
                                status=502, error_type="upstream_error", code="upstream_stream_truncated",
                                provider=self.ctx.provider)
        return []

    def fail(self, exc: GatewayError) -> bytes:
        """A failure after the stream started: the Responses way to end it, numbered after the last event."""
        self.sequence += 1
        return failed_event(exc, self.sequence, self.ctx)


def failed_event(exc: GatewayError, sequence: int, ctx: ResponseContext) -> bytes:
    return encode_event("response.failed", encoder.encode({
        "type": "response.failed", "sequence_number": sequence,
        "response": {"id": "resp_" + ctx.request_id.removeprefix("req_"), "object": "response",
                     "created_at": ctx.created, "model": ctx.public_model, "status": "failed", "output": [],
                     "error": {"code": exc.code or exc.error_type, "message": exc.message}},
    }))


def _finish(response: RawObject, ctx: ResponseContext) -> Usage | None:
    """The response's usage in common terms; the cost fields and the routing report added in place."""
    if ctx.metadata is not None:
        response["gateway"] = msgspec.Raw(encoder.encode(ctx.metadata))
    usage_raw = response.get("usage")
    if usage_raw is None:
        return None
    try:
        found = _usage_decoder.decode(usage_raw)
    except msgspec.ValidationError:
        return None  # an odd usage shape: forwarded as-is, just not counted (the gateway estimates)
    if found is None:
        return None
    usage = chat_usage(found)
    if ctx.report_cost:
        members = raw_object_decoder.decode(usage_raw)
        priced = ctx.priced(usage)
        for name in openai.COST_FIELDS:
            members[name] = msgspec.Raw(encoder.encode(getattr(priced, name)))
        response["usage"] = msgspec.Raw(encoder.encode(members))
    return usage


def _invalid(ctx: ResponseContext, what: str) -> UpstreamError:
    return UpstreamError(f"[{ctx.provider}] {what}", status=502, error_type="upstream_error",
                         code="invalid_upstream_response", provider=ctx.provider)
