"""Native pass-through: /openai/*, /anthropic/*, /gemini/* and /native/{provider}/* relay a provider's own
API, so code written against the Anthropic or Google GenAI SDK (and tools like Claude Code) only changes
its base URL and key.

One provider, no routing or fallback: the request goes upstream with its method, path, query and body
unchanged, minus the client's key (the provider's is added by ``upstream``), and the answer comes back
byte for byte as it arrives. Governance is the unified endpoint's: the same key check, allow-list,
RPM/TPM and budget admission (``open_meter``) and settlement (``Meter.finish``), with the usage read on
the side from a copy of the response. The gateway's own errors are rendered in the provider's shape.

The provider's key rides on every request, so before anything is read the path must stay under the
provider's base URL (``native.upstream_url``) and name an endpoint the key may reach (the defaults plus
``native_paths``, ``native.native_access``); a provider's error body is relayed with credentials cut out.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

from litestar import Request, Response, route
from litestar.response import Stream

from gateway import metrics
from gateway.accounting import Meter, estimate_usage, open_meter, record_refusal, worst_cost
from gateway.catalog import Pricing
from gateway.config import Provider
from gateway.errors import (
    AuthenticationFailed,
    GatewayError,
    InvalidRequest,
    PermissionDenied,
    RouteNotFound,
)
from gateway.governance import Principal
from gateway.native import (
    Kind,
    UsageWatch,
    Wanted,
    api_path,
    client_secret,
    error_body,
    native_access,
    request_headers,
    response_headers,
    split_query,
    stream_error,
    upstream_url,
    wanted,
)
from gateway.providers import adapter_for
from gateway.redaction import redact_bytes
from gateway.routes.context import gateway_state, request_body, request_id
from gateway.state import GatewayState
from gateway.upstream import UpstreamRequest, UpstreamResponse
from gateway.wire.openai import Usage

log = logging.getLogger("gateway.native")

METHODS: list[Any] = ["GET", "POST", "PUT", "PATCH", "DELETE"]
PROJECT_HEADER = "x-gateway-project-id"
EVENT_STREAM = "text/event-stream"


@route("/openai/{path:path}", http_method=METHODS)
async def openai_native(request: Request[Any, Any, Any]) -> Response[bytes] | Stream:
    return await _native(request, "openai", "openai", depth=1)


@route("/anthropic/{path:path}", http_method=METHODS)
async def anthropic_native(request: Request[Any, Any, Any]) -> Response[bytes] | Stream:
    return await _native(request, "anthropic", "anthropic", depth=1)


@route("/gemini/{path:path}", http_method=METHODS)
async def gemini_native(request: Request[Any, Any, Any]) -> Response[bytes] | Stream:
    return await _native(request, "google", "gemini", depth=1)


@route("/native/{provider:str}/{path:path}", http_method=METHODS)
async def any_native(request: Request[Any, Any, Any]) -> Response[bytes] | Stream:
    return await _native(request, request.path_params["provider"], "openai", depth=2)


async def _native(request: Request[Any, Any, Any], name: str, default_kind: Kind,
                  depth: int) -> Response[bytes] | Stream:
    """``depth``: how many path segments name the route (/openai: 1, /native/NAME: 2).

    Errors take the provider's shape (its kind), or the route's when no such provider is configured.
    """
    provider = gateway_state(request).runtime.config.providers.get(name)
    kind: Kind = provider.kind if provider is not None else default_kind
    try:
        return await _proxy(request, name, provider, kind, depth)
    except GatewayError as exc:
        return Response(error_body(kind, exc), status_code=exc.status_code, media_type="application/json",
                        headers=exc.headers)


def _client_path(request: Request[Any, Any, Any], depth: int) -> str:
    """The path after the route's own segments, as the client encoded it (``raw_path`` when the server
    gives it; httpx's ASGI transport puts the query in it too)."""
    raw: bytes | None = request.scope.get("raw_path")
    path = raw.split(b"?", 1)[0].decode("latin-1") if raw else quote(request.scope["path"], safe="/:@!$&'()*+,;=~")
    parts = path.split("/", depth + 1)
    return parts[depth + 1] if len(parts) > depth + 1 else ""


async def _proxy(request: Request[Any, Any, Any], name: str, provider: Provider | None, kind: Kind,
                 depth: int) -> Response[bytes] | Stream:
    state = gateway_state(request)
    query, query_key = split_query(request.scope["query_string"])
    secret = client_secret(request.headers, query_key)
    if secret is None:
        raise AuthenticationFailed("Missing API key: send your gateway key as 'x-api-key', 'Authorization: Bearer', "
                                   "'x-goog-api-key' or '?key='.")
    principal = state.keys.check_secret(secret)
    rid = request_id(request)
    path = _client_path(request, depth)
    asked: Wanted | None = None
    try:
        if provider is None:
            raise RouteNotFound(f"No provider named '{name}' is configured on this gateway.")
        # Where the request would go, and whether this key may go there, before anything is read or sent.
        url = upstream_url(provider, path, query)
        generation = _check_access(state, principal, provider, request.method, api_path(provider.kind, path))
        body = await request_body(request)
        asked = wanted(provider.kind, path, body, generation=generation)
        meter, pricing = await _admit(state, request, principal, provider, asked, rid)
    except GatewayError as exc:
        record_refusal(state.governor, state.usage, principal, exc, request_id=rid, mode="native",
                       project=request.headers.get(PROJECT_HEADER), provider=provider.name if provider else None,
                       model=asked.model if asked else None)
        raise
    outgoing = UpstreamRequest(provider=provider, method=request.method, url=url,
                               body=body or None, headers=request_headers(request.scope["headers"]))
    started = time.perf_counter()
    status: int | None = None
    try:
        response = await state.upstream.send(outgoing)
        status = response.status
        metrics.attempt(provider, asked.model, status, None, status < 400, (time.perf_counter() - started) * 1000)
        if response.status >= 400:
            return await _error_answer(response, provider, asked.model, meter,
                                       int(state.runtime.config.server.max_upstream_body_mb * 1024 * 1024))
    except GatewayError as exc:
        if status is None:  # no answer at all (connect error, timeout): a failed attempt
            metrics.attempt(provider, asked.model, None, exc.error_type, False, (time.perf_counter() - started) * 1000)
        meter.finish(status=exc.status_code, provider=provider.name, model=asked.model, pricing=None, usage=None,
                     attempts=1, error_type=exc.error_type)
        raise
    event_stream = response.headers.get("content-type", "").lower().startswith(EVENT_STREAM)
    meter.stream = event_stream
    # Only a model's answer carries usage: token counting and model-less answers (listings, files) cost nothing.
    watch = UsageWatch(provider.kind, event_stream=event_stream) if asked.model and not asked.free else None
    return Stream(_relay(response, watch, meter, provider, asked, pricing, event_stream=event_stream),
                  status_code=response.status, headers=response_headers(response.headers, meter.headers))


def _check_access(state: GatewayState, principal: Principal, provider: Provider, method: str, where: str) -> bool:
    """Refuse an endpoint outside the defaults and the provider's and key's ``native_paths`` (403); True for a
    default generation endpoint, whose body must then be a JSON object."""
    extra = provider.native_paths
    if principal.source == "config":
        extra += next((tuple(k.native_paths) for k in state.runtime.config.keys if k.name == principal.name), ())
    access = native_access(provider.kind, extra)
    if not access.allows(method, where):
        raise PermissionDenied(
            f"This key may not call '{method} {where}' on provider '{provider.name}': native routes open only "
            "generation endpoints and model listings by default, since the rest (files, batches, stored "
            "responses, organization data…) is shared by everyone behind the gateway's provider key. To allow "
            f'it, add "{method} {where}" (globs allowed) to native_paths under [providers.{provider.name}] '
            "or in the key's [[keys]] entry of config.toml.", code="path_not_allowed")
    return access.generation(method, where)


async def _admit(state: GatewayState, request: Request[Any, Any, Any], principal: Principal, provider: Provider,
           asked: Wanted, rid: str) -> tuple[Meter, Pricing | None]:
    """The unified endpoint's admission (allow-list, RPM/TPM, budget reservation), and the model's price."""
    runtime = state.runtime
    project = state.governor.project_for(principal, request.headers.get(PROJECT_HEADER))
    if runtime.config.routing.require_project and not project:
        raise InvalidRequest(f"This gateway requires a project: send the '{PROJECT_HEADER}' header.",
                             param="project_id", code="missing_required_parameter")
    if asked.model is not None:
        model = f"{provider.name}/{asked.model}"
        if not principal.allows(model):
            raise PermissionDenied(f"This key may not use the model '{model}'.", param="model")
        deployment = runtime.table.lookup(model)
        worst = 0.0 if asked.free else worst_cost([deployment], asked.prompt_tokens, asked.max_tokens)
        pricing = deployment.entry.pricing if deployment.entry and not asked.free else None
    else:
        _check_modelless(state, request, principal, project)
        model, worst, pricing = None, 0.0, None
    meter = await open_meter(state.governor, state.usage, principal, project=project, tokens=asked.tokens,
                       worst_cost_usd=worst, request_id=rid, mode="native", stream=False, requested_model=model,
                       catalog_version=state.catalog.version)
    return meter, pricing


def _check_modelless(state: GatewayState, request: Request[Any, Any, Any], principal: Principal,
                     project: str | None) -> None:
    """A request naming no model is free to read (GET /v1/models, a file's metadata), but a write without a
    model (a batch, a file upload, a fine-tune) could spend anything on any model: a key with an allow-list
    or a budget may not send one, since neither could be checked."""
    if request.method == "GET":
        return
    budgeted = principal.budget_usd is not None or (project is not None
                                                    and state.governor.project_budget(project) is not None)
    if principal.models is not None or budgeted:
        raise PermissionDenied(
            f"This key has a model allow-list or a budget, and this {request.method} request names no model, "
            "so neither can be checked: use a key without them for this endpoint.")


async def _error_answer(response: UpstreamResponse, provider: Provider, model: str | None,
                        meter: Meter, limit: int) -> Response[bytes]:
    """A provider's error goes back as it came (status, content type), its body with any credential cut out:
    providers quote the key they refused. Its type is only recorded. A body over ``limit`` is a 502."""
    body = redact_bytes(await response.read(limit))
    error = adapter_for(provider.kind).parse_error(response.status, body, response.headers, provider.name)
    if response.status in (401, 403):
        log.error("provider '%s' rejected the gateway's key on a native request (HTTP %d): check providers.%s.api_key",
                  provider.name, response.status, provider.name)
    meter.first_byte()
    meter.finish(status=response.status, provider=provider.name, model=model, pricing=None, usage=None, attempts=1,
                 error_type=error.error_type)
    return Response(body, status_code=response.status, headers=response_headers(response.headers, meter.headers))


async def _relay(response: UpstreamResponse, watch: UsageWatch | None, meter: Meter, provider: Provider,
                 asked: Wanted, pricing: Pricing | None, *, event_stream: bool) -> AsyncIterator[bytes]:
    """Each upstream chunk goes to the client as it came; the watch reads a copy of it on the side."""
    status, error_type, ended, sent = response.status, None, False, b""
    try:
        async for chunk in response.iter_chunks():
            meter.first_byte()
            if watch is not None:
                watch.feed(chunk)
            yield chunk
            sent = chunk
        ended = True
    except GatewayError as exc:
        log.warning("native stream from %s failed mid-way (request %s): %s", provider.name, meter.request_id,
                    exc.message)
        status, error_type = exc.status_code, exc.error_type
        # The status line is long gone. An event stream ends with the provider's own error event; any other
        # body is aborted (re-raised), so the client sees a cut body, never a clean end that looks complete.
        if not event_stream:
            raise
        yield stream_error(provider.kind, exc, sent)
    finally:
        response.close()
        meter.finish(status=status, provider=provider.name, model=asked.model, pricing=pricing,
                     usage=_settled_usage(watch, asked, ended), attempts=1, error_type=error_type)


def _settled_usage(watch: UsageWatch | None, asked: Wanted, ended: bool) -> Usage | None:
    """The provider's own count when it sent one; for an answer cut short (client gone, provider cut) without
    one, the prompt estimate plus a token per event seen, as the unified endpoint charges."""
    if watch is None:
        return None
    if ended:
        watch.close()
    if watch.usage is not None or ended:
        return watch.usage
    return estimate_usage(asked.prompt_tokens, watch.events)


