"""OpenAI and every OpenAI-compatible server (Groq, Mistral, DeepSeek, OpenRouter, Together, Ollama, vLLM…).

Same dialect as the client, so nothing is translated: the body goes upstream with only ``model``
rewritten, and answers come back with only ``model`` rewritten to the name the client asked for.
Provider extras (``reasoning_content`` deltas, ``prompt_filter_results``, ``x_groq``…) pass untouched.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from gateway.dialects.chat import ChatCall
from gateway.errors import GatewayError, UpstreamError, upstream_error
from gateway.notes import Notes
from gateway.providers.base import ResponseContext, Target, lowered_max_tokens, reasoning_unsupported
from gateway.sse import SSEEvent, encode_data
from gateway.upstream import UpstreamRequest
from gateway.wire.openai import RawObject, Usage, encoder, raw_object_decoder

_usage_decoder: msgspec.json.Decoder[Usage | None] = msgspec.json.Decoder(Usage | None)
_EMPTY_LIST = msgspec.Raw(b"[]")
_NULL = msgspec.Raw(b"null")
COST_FIELDS = ("cost_usd_total", "cost_usd_input", "cost_usd_cached_input", "cost_usd_output")
_JSON = {"content-type": "application/json"}


def build_request(call: ChatCall, target: Target) -> UpstreamRequest:
    notes = Notes()
    for path in call.hints:  # a dialect's hints are another API's (Anthropic's); OpenAI's own go as sent
        notes.ignore(path)
    replace: dict[str, object] = {}
    omit: list[str] = []
    if call.stream and target.provider.stream_usage and not call.include_usage:
        # Ask for the usage chunk even when the client did not, so spend is settled from the provider's
        # own count; the translator keeps that chunk from a client that did not ask for it.
        options = msgspec.to_builtins(call.request.stream_options) if call.request.stream_options else {}
        replace["stream_options"] = {**options, "include_usage": True}
    lowered = lowered_max_tokens(call, target, notes)
    if lowered is not None:
        # OpenAI answers 400 above the model's output limit (gpt-4o: 16,384) rather than stopping there.
        replace.update({name: lowered for name in ("max_completion_tokens", "max_tokens") if name in call.raw})
    if reasoning_unsupported(call, target, notes):
        omit.append("reasoning_effort")  # gpt-4o and its kind answer 400 to reasoning_effort
    return UpstreamRequest(provider=target.provider, url=f"{target.provider.base_url}/chat/completions",
                           body=call.body_with_model(target.model, omit, **replace), headers=_JSON,
                           notes=notes or None)


class _FinishOnly(msgspec.Struct):
    finish_reason: str | None = None


_choices_decoder = msgspec.json.Decoder(list[_FinishOnly])


def _rewrite(raw: RawObject, ctx: ResponseContext) -> Usage | None:
    """Set ``model`` to the client's name in place; return the usage it carries, if any."""
    if "model" in raw:
        raw["model"] = msgspec.Raw(encoder.encode(ctx.public_model))
    usage_raw = raw.get("usage")
    if usage_raw is None:
        return None
    try:
        usage = _usage_decoder.decode(usage_raw)
    except msgspec.ValidationError:
        return None  # a compatible server with an odd usage shape: forwarded as-is, just not counted
    if usage is not None and ctx.report_cost:
        # Only the usage member is re-encoded, with the cost fields added; the rest stays as sent.
        members = raw_object_decoder.decode(usage_raw)
        priced = ctx.priced(usage)
        for name in COST_FIELDS:
            members[name] = msgspec.Raw(encoder.encode(getattr(priced, name)))
        raw["usage"] = msgspec.Raw(encoder.encode(members))
    return usage


def _attach_metadata(raw: RawObject, ctx: ResponseContext) -> None:
    if ctx.metadata is not None:
        raw["metadata"] = msgspec.Raw(encoder.encode(ctx.metadata))


def _invalid(ctx: ResponseContext, what: str) -> UpstreamError:
    return UpstreamError(f"[{ctx.provider}] {what}", status=502, error_type="upstream_error",
                         code="invalid_upstream_response", provider=ctx.provider)


def parse_response(body: bytes, ctx: ResponseContext) -> tuple[bytes, Usage | None]:
    try:
        raw = raw_object_decoder.decode(body)
    except msgspec.DecodeError:
        # Relayed as it came, a 200 the client cannot parse would look like the gateway's answer.
        raise _invalid(ctx, "answered with a body that is not a JSON object.") from None
    usage = _rewrite(raw, ctx)
    _attach_metadata(raw, ctx)
    return encoder.encode(raw), usage


def _is_final(raw: RawObject, usage: Usage | None) -> bool:
    """The finish chunk, or the usage chunk: where the routing metadata goes."""
    if usage is not None:
        return True
    choices = raw.get("choices")
    if choices is None:
        return False
    try:
        return any(c.finish_reason for c in _choices_decoder.decode(choices))
    except msgspec.ValidationError:
        return False


class _PassThrough:
    """Forwards each event, with ``model`` rewritten; remembers the usage chunk, and whether the stream
    reached its end (a finish chunk or ``[DONE]``): one that stops before either was cut short."""

    __slots__ = ("ctx", "ended", "usage")

    def __init__(self, ctx: ResponseContext) -> None:
        self.ctx = ctx
        self.usage: Usage | None = None
        self.ended = False

    def feed(self, event: SSEEvent) -> list[bytes]:
        data = event.data
        if data == b"[DONE]":
            self.ended = True
            return [encode_data(data)]
        try:
            raw = raw_object_decoder.decode(data)
        except msgspec.DecodeError:
            raise _invalid(self.ctx, "sent a stream event that is not a JSON object.") from None
        if "error" in raw:
            # A mid-stream error event (OpenAI and vLLM send them): the stream ends here, as an error.
            raise parse_error(502, data, {}, self.ctx.provider)
        usage = _rewrite(raw, self.ctx)
        if usage is not None:
            self.usage = usage
            if not self.ctx.include_usage and raw.get("choices") == _EMPTY_LIST:
                return []  # the usage chunk the gateway asked for on its own behalf
        if not self.ctx.include_usage and raw.get("usage") == _NULL:
            # With include_usage set (on the client's behalf, by the gateway), OpenAI puts "usage": null on
            # every chunk; a client that did not ask sees chunks as OpenAI sends them then: without it.
            del raw["usage"]
        if _is_final(raw, usage):
            self.ended = True
            _attach_metadata(raw, self.ctx)
        return [encode_data(encoder.encode(raw))]

    def close(self) -> list[bytes]:
        if not self.ended:
            raise UpstreamError(f"[{self.ctx.provider}] the stream ended before a finish_reason or [DONE].",
                                status=502, error_type="upstream_error", code="upstream_stream_truncated",
                                provider=self.ctx.provider)
        return []


def stream_translator(ctx: ResponseContext) -> _PassThrough:
    return _PassThrough(ctx)


class _ErrorBody(msgspec.Struct):
    message: str | None = None
    type: str | None = None
    param: str | None = None
    code: str | int | None = None


class _ErrorEnvelope(msgspec.Struct):
    error: _ErrorBody | str | None = None
    message: str | None = None  # vLLM and some others: {"object": "error", "message": ...}
    detail: str | None = None  # FastAPI-based servers


_error_decoder = msgspec.json.Decoder(_ErrorEnvelope)


def parse_error(status: int, body: bytes, headers: Mapping[str, str], provider: str) -> GatewayError:
    retry_after = headers.get("retry-after")
    try:
        envelope = _error_decoder.decode(body)
    except msgspec.DecodeError:
        text = body.decode("utf-8", "replace").strip()[:500] or f"HTTP {status} with an empty body"
        return upstream_error(provider, status, text, retry_after=retry_after)
    err = envelope.error
    if isinstance(err, _ErrorBody):
        code = None if err.code is None else str(err.code)
        return upstream_error(provider, status, err.message or f"HTTP {status}", error_type=err.type,
                              param=err.param, code=code, retry_after=retry_after)
    message = err or envelope.message or envelope.detail or f"HTTP {status}"
    return upstream_error(provider, status, message, retry_after=retry_after)
