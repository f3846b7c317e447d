"""OpenTelemetry traces, optional: one span per generation request and a child per upstream attempt.

Off by default, and then free: nothing of OpenTelemetry is imported and every hook is one test of
``tracer is None``. On with ``[tracing] enabled = true`` (the ``gateway[otel]`` extra installs the SDK and
the OTLP/HTTP exporter); spans go to ``[tracing] endpoint`` or, when it is empty, where the standard
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_ENDPOINT`` say (else localhost:4318); the
SDK reads the other ``OTEL_*`` variables itself (sampler, batch sizes, headers), and ``OTEL_SERVICE_NAME``
names the service (``gateway`` otherwise).

Attributes follow the OpenTelemetry GenAI semantic conventions (``gen_ai.*``), plus the gateway's own
(``gateway.*``: cost, key, project, attempts, route). No prompt or completion text is ever put in a span.

An incoming W3C ``traceparent`` makes the request span its child; the upstream requests carry the request
span's ``traceparent``, so a provider (or the next proxy) that traces joins the same trace. Attempt spans
are written when the attempt has ended, with its measured start and end: the pipeline keeps one code path
whether tracing is on or not.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

    from gateway.config import Provider, TracingConfig
    from gateway.routes.asgi import Scope
    from gateway.store import RequestRecord

tracer: Tracer | None = None
_provider: Any = None  # the SDK's TracerProvider, kept to flush it at a stop

# Paths whose requests go upstream and get a span (the admin, health and metrics endpoints do not).
EXACT_PATHS = frozenset({"/v1/chat/completions", "/v1/messages"})
PREFIXES = ("/openai/", "/anthropic/", "/gemini/", "/native/")
# The GenAI conventions' names for the providers' systems (gen_ai.provider.name).
PROVIDER_NAMES = {"openai": "openai", "anthropic": "anthropic", "gemini": "gcp.gemini"}


def configure(cfg: TracingConfig) -> None:
    """Start the exporter once per worker when tracing is on (a reload does not turn it on or off)."""
    global tracer, _provider
    if not cfg.enabled or tracer is not None:
        return
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
