"""OpenTelemetry traces, optional: one span per generation request and a child per upstream attempt.

Off by default, and then free: nothing of OpenTelemetry is imported and every hook is one test of
``tracer is None``. On with ``[tracing] enabled = true`` (the ``gateway[otel]`` extra installs the SDK and
the OTLP/HTTP exporter); spans go to ``[tracing] endpoint`` or, when it is empty, where the standard
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_ENDPOINT`` say (else localhost:4318); the
SDK reads the other ``OTEL_*`` variables itself (sampler, batch sizes, headers), and ``OTEL_SERVICE_NAME``
names the service (``gateway`` otherwise).

Attributes follow the OpenTelemetry GenAI semantic conventions (``gen_ai.*``), plus the gateway's own
(``gateway.*``: cost, key, project, attempts, route). No prompt or completion text is put in a span unless
``[tracing] capture_content = true``: then the request span of /v1/chat/completions and /v1/messages carries
``gen_ai.input.messages``, ``gen_ai.system_instructions`` and ``gen_ai.output.messages`` as JSON strings in
the conventions' message schema (role, parts, finish_reason), redacted (gateway/redaction.py) and cut at
``CONTENT_LIMIT`` characters of text each (``gateway.content.truncated`` says so). Off, the hooks are one test
of ``capture_content`` and nothing of a body is read for tracing.

An incoming W3C ``traceparent`` makes the request span its child; the upstream requests carry the request
span's ``traceparent``, so a provider (or the next proxy) that traces joins the same trace. Attempt spans
are written when the attempt has ended, with its measured start and end: the pipeline keeps one code path
whether tracing is on or not.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

import msgspec

from gateway.redaction import redact
from gateway.sse import SSEParser
from gateway.wire.openai import ChatCompletion, ChunkChoice

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

    from gateway.config import Provider, TracingConfig
    from gateway.dialects.chat import ChatCall
    from gateway.routes.asgi import Scope
    from gateway.store import RequestRecord
    from gateway.wire.openai import Message

tracer: Tracer | None = None
_provider: Any = None  # the SDK's TracerProvider, kept to flush it at a stop
capture_content = False  # [tracing] capture_content, with tracing on: prompts and completions go on spans

# Text kept per content attribute: enough to read a conversation, far below what would weigh on an exporter.
CONTENT_LIMIT = 65_536
# OpenAI's finish reasons, in the conventions' words where they differ.
FINISH_REASONS = {"tool_calls": "tool_call", "function_call": "tool_call"}

# Paths whose requests go upstream and get a span (the admin, health and metrics endpoints do not).
EXACT_PATHS = frozenset({"/v1/chat/completions", "/v1/messages"})
PREFIXES = ("/openai/", "/anthropic/", "/gemini/", "/native/")
# The GenAI conventions' names for the providers' systems (gen_ai.provider.name).
PROVIDER_NAMES = {"openai": "openai", "anthropic": "anthropic", "gemini": "gcp.gemini"}


def configure(cfg: TracingConfig) -> None:
    """Start the exporter once per worker when tracing is on (a reload does not turn it on or off)."""
    global tracer, _provider, capture_content
    if not cfg.enabled or tracer is not None:
        return
    capture_content = cfg.capture_content
    # Present: the config's validation refused tracing without them.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    _provider = TracerProvider(resource=Resource.create(
        {"service.name": os.environ.get("OTEL_SERVICE_NAME") or "gateway"}))
    _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=cfg.endpoint or None)))
    tracer = _provider.get_tracer("gateway")


def shutdown() -> None:
    """Send the spans still buffered (a clean stop)."""
    if _provider is not None:
        _provider.force_flush()


def _operation(path: str) -> str:
    if path.endswith(("/embeddings", ":embedContent", ":batchEmbedContents")):
        return "embeddings"
    if path.startswith("/gemini/"):
        return "generate_content"
    return "chat"


def start_request(scope: Scope, request_id: str) -> tuple[Span, object] | None:
    """The request's span, made current, for a generation path; None for the others."""
    assert tracer is not None
    path: str = scope["path"]
    if path not in EXACT_PATHS and not path.startswith(PREFIXES):
        return None
    from opentelemetry import context, trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]
               if name in (b"traceparent", b"tracestate")}
    parent = TraceContextTextMapPropagator().extract(carrier)
    operation = _operation(path)
    span = tracer.start_span(operation, context=parent, kind=trace.SpanKind.SERVER, attributes={
        "gen_ai.operation.name": operation, "gateway.request_id": request_id, "url.path": path,
        "http.request.method": scope["method"]})
    return span, context.attach(trace.set_span_in_context(span, parent))


def end_request(started: tuple[Span, object], status: int) -> None:
    from opentelemetry import context, trace

    span, token = started
    context.detach(token)  # type: ignore[arg-type]
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.set_status(trace.StatusCode.ERROR)
    span.end()


def request_done(record: RequestRecord) -> None:
    """The request's usage record is written: its outcome goes on the request span."""
    from opentelemetry import trace

    span = trace.get_current_span()
    if not span.is_recording():
        return
    model = record.requested_model or record.model
    if model:  # the conventions' span name: "{operation} {model}"
        operation = (getattr(span, "attributes", None) or {}).get("gen_ai.operation.name", "chat")
        span.update_name(f"{operation} {model}")
    attributes: dict[str, Any] = {
        "gateway.route": record.mode, "gateway.key_name": record.key_name, "gateway.attempts": record.attempts,
        "gateway.stream": record.stream, "gen_ai.usage.input_tokens": record.prompt_tokens,
        "gen_ai.usage.output_tokens": record.completion_tokens,
    }
    for name, value in (("gen_ai.request.model", record.requested_model), ("gen_ai.response.model", record.model),
                        ("gateway.provider", record.provider), ("gateway.project", record.project),
                        ("gateway.cost_usd", record.cost_total), ("gateway.ttft_ms", record.ttft_ms),
                        ("error.type", record.error_type),
                        ("gen_ai.usage.cache_read.input_tokens", record.cached_tokens or None),
                        ("gen_ai.usage.cache_creation.input_tokens", record.cache_write_tokens or None),
                        ("gateway.usage.reasoning_tokens", record.reasoning_tokens or None)):
        if value is not None:
            attributes[name] = value
    span.set_attributes(attributes)


def attempt(provider: Provider, model: str | None, status: int | None, error_type: str | None, ok: bool,
            latency_ms: float) -> None:
    """One upstream attempt, as a child of the current request span, spanning the time it took."""
    assert tracer is not None
    from opentelemetry import trace

    end = time.time_ns()
    system = PROVIDER_NAMES.get(provider.kind, provider.name)
    attributes: dict[str, Any] = {"gen_ai.provider.name": system, "gateway.provider": provider.name,
                                  "gateway.attempt.succeeded": ok}
    if model is not None:
        attributes["gen_ai.request.model"] = model
    if status is not None:
        attributes["http.response.status_code"] = status
    if error_type is not None:
        attributes["error.type"] = error_type
    span = tracer.start_span(f"{provider.name} {model or ''}".rstrip(), kind=trace.SpanKind.CLIENT,
                             attributes=attributes, start_time=end - int(latency_ms * 1_000_000))
    if not ok:
        span.set_status(trace.StatusCode.ERROR)
    span.end(end_time=end)
    if ok:
        trace.get_current_span().set_attribute("gen_ai.provider.name", system)


def inject(headers: dict[str, str]) -> None:
    """Add the current span's ``traceparent`` (and ``tracestate``) to an upstream request's headers."""
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    TraceContextTextMapPropagator().inject(headers)


# ------------------------------------------------------------------------------- content (opt-in)


class _Budget:
    """Text for one content attribute: redacted, then cut once ``CONTENT_LIMIT`` characters are spent."""

    __slots__ = ("left", "truncated")

    def __init__(self) -> None:
        self.left = CONTENT_LIMIT
        self.truncated = False

    def take(self, text: str) -> str:
        # Cut a margin beyond what is left before redacting (cheap on a huge text), so that a secret at the
        # edge is still whole when the redactor sees it; then cut to what is left.
        kept = redact(text[:self.left + 512])
        if len(kept) > self.left or len(text) > self.left + 512:
            self.truncated = True
            kept = kept[:self.left]
        self.left -= len(kept)
        return kept


def _json(value: Any) -> str:
    return msgspec.json.encode(value).decode()


def _arguments(text: str) -> Any:
    """Tool-call arguments as the object they encode (the conventions' form), else as the text they are."""
    try:
        return msgspec.json.decode(text)
    except msgspec.DecodeError:
        return text


def _tool_call(call_id: str | None, name: str | None, arguments: str, budget: _Budget) -> dict[str, Any]:
    return {"type": "tool_call", "id": call_id, "name": name, "arguments": _arguments(budget.take(arguments))}


def _output_message(parts: list[dict[str, Any]], finish_reason: str) -> dict[str, Any]:
    return {"role": "assistant", "parts": parts, "finish_reason": FINISH_REASONS.get(finish_reason, finish_reason)}


def _parts(message: Message, budget: _Budget) -> list[dict[str, Any]]:
    content = message.content
    if message.role == "tool":
        text = content if isinstance(content, str) else "".join(
            p.text for p in content or () if isinstance(p.text, str))
        return [{"type": "tool_call_response", "id": message.tool_call_id or None, "response": budget.take(text)}]
    parts: list[dict[str, Any]] = []
    if isinstance(content, str):
        parts.append({"type": "text", "content": budget.take(content)})
    elif content:
        # Images, audio and files are named by their type only: their data stays out of the trace.
        parts += [{"type": "text", "content": budget.take(p.text)} if isinstance(p.text, str) else {"type": p.type}
                  for p in content]
    parts += [_tool_call(c.id, c.function.name, c.function.arguments, budget) for c in message.tool_calls or ()]
    return parts


def _set(span: Span, attributes: dict[str, str], truncated: bool) -> None:
    span.set_attributes(attributes)
    if truncated:
        span.set_attribute("gateway.content.truncated", True)


def prompt(call: ChatCall, mode: str) -> None:
    """The request's prompt on the request span. In the Messages dialect the leading system messages are
    its top-level ``system``: instructions apart from the chat history (``gen_ai.system_instructions``)."""
    from opentelemetry import trace

    span = trace.get_current_span()
    if not span.is_recording():
        return
    budget = _Budget()
    messages = call.request.messages
    system: list[dict[str, Any]] = []
    if mode == "messages":
        while messages and messages[0].role == "system":
            system += _parts(messages[0], budget)
            messages = messages[1:]
    attributes = {"gen_ai.input.messages": _json([{"role": m.role, "parts": _parts(m, budget)} for m in messages])}
    if system:
        attributes["gen_ai.system_instructions"] = _json(system)
    _set(span, attributes, budget.truncated)


def completion(body: bytes) -> None:
    """A whole answer (an OpenAI chat completion, the gateway's common format) on the request span."""
    from opentelemetry import trace

    span = trace.get_current_span()
    if not span.is_recording():
        return
    try:
        answer = msgspec.json.decode(body, type=ChatCompletion)
    except msgspec.DecodeError:  # a shape of a compatible server that the gateway relays but cannot read
        return
    budget = _Budget()
    messages = []
    for choice in answer.choices:
        message = choice.message
        parts = [{"type": "text", "content": budget.take(message.content)}] if message.content else []
        parts += [_tool_call(c.id, c.function.name, c.function.arguments, budget) for c in message.tool_calls or ()]
        messages.append(_output_message(parts, choice.finish_reason or "stop"))
    _set(span, {"gen_ai.output.messages": _json(messages)}, budget.truncated)


class _Chunk(msgspec.Struct):
    """A streamed chunk, or the error event that ends a failed stream: what a transcript reads of it."""

    choices: list[ChunkChoice] = []
    error: Any = None


class _Transcript:
    """What a stream relayed, choice by choice, kept up to the budget's size plus the redaction margin (the
    whole is redacted and cut at the end, so a secret split across chunks is still cut)."""

    def __init__(self) -> None:
        self.left = CONTENT_LIMIT + 512
        self.over = False
        self.failed = False
        self.text: dict[int, list[str]] = {}
        self.calls: dict[int, dict[int, list[Any]]] = {}  # choice -> tool call index -> [id, name, pieces]
        self.finish: dict[int, str] = {}
        self.parser = SSEParser()

    def _keep(self, text: str) -> str:
        if len(text) > self.left:
            self.over = True
            text = text[:self.left]
        self.left -= len(text)
        return text

    def feed(self, frame: bytes) -> None:
        for event in self.parser.feed(frame):
            if event.data == b"[DONE]":
                continue
            try:
                chunk = msgspec.json.decode(event.data, type=_Chunk)
            except msgspec.DecodeError:
                continue
            self.failed = self.failed or chunk.error is not None
            for choice in chunk.choices:
                self._choice(choice)

    def _choice(self, choice: ChunkChoice) -> None:
        index, delta = choice.index, choice.delta
        if choice.finish_reason:
            self.finish[index] = choice.finish_reason
        if isinstance(delta.content, str) and delta.content:
            self.text.setdefault(index, []).append(self._keep(delta.content))
        for call in delta.tool_calls or ():
            entry = self.calls.setdefault(index, {}).setdefault(call.index, [None, None, []])
            entry[0] = call.id or entry[0]
            if call.function:
                entry[1] = call.function.name or entry[1]
                entry[2].append(self._keep(call.function.arguments or ""))

    def messages(self, budget: _Budget) -> list[dict[str, Any]]:
        messages = []
        for index in sorted(self.text.keys() | self.calls.keys() | self.finish.keys()):
            text = "".join(self.text.get(index, ()))
            parts = [{"type": "text", "content": budget.take(text)}] if text else []
            parts += [_tool_call(call_id, name, "".join(pieces), budget)
                      for call_id, name, pieces in self.calls.get(index, {}).values()]
            messages.append(_output_message(parts, self.finish.get(index) or ("error" if self.failed else "stop")))
        return messages


async def tap(frames: AsyncGenerator[bytes, None]) -> AsyncGenerator[bytes, None]:
    """Relays a stream's frames (OpenAI chunks) unchanged, and puts the completion they carried on the
    request span when the stream ends, however it ends (the client leaving included)."""
    from opentelemetry import trace

    span = trace.get_current_span()
    transcript = _Transcript() if span.is_recording() else None
    try:
        async for frame in frames:
            yield frame
            if transcript is not None:
                transcript.feed(frame)
    finally:
        await frames.aclose()  # the pipeline's own end of the stream (it settles the request)
        if transcript is not None:
            budget = _Budget()
            messages = transcript.messages(budget)
            _set(span, {"gen_ai.output.messages": _json(messages)}, budget.truncated or transcript.over)
