"""The OpenAI-compatible surface: /v1/chat/completions, /v1/models and /v1/usage."""

from __future__ import annotations

import time
from typing import Any

from litestar import Request, Response, get, post
from litestar.response import Stream

from gateway.accounting import open_meter, worst_cost
from gateway.chat import parse_chat
from gateway.errors import GatewayError, InvalidRequest
from gateway.governance import Principal
from gateway.models import model_list
from gateway.routes.context import gateway_state, request_id
from gateway.state import GatewayState
from gateway.store import RequestRecord
from gateway.usage_report import key_usage
from gateway.wire.openai import encoder

JSON = "application/json"
PROJECT_HEADER = "x-gateway-project-id"


@post("/v1/chat/completions", status_code=200)
async def chat_completions(request: Request[Any, Any, Any]) -> Response[bytes] | Stream:
    state = gateway_state(request)
    principal = state.keys.authenticate(request.headers.get("authorization"))
    rid = request_id(request)
    runtime = state.runtime  # read once: a reload mid-request does not change this request's config
    try:
        call = parse_chat(await request.body())
        project = state.governor.project_for(principal, call.request.project_id or request.headers.get(PROJECT_HEADER))
        if runtime.config.routing.require_project and not project:
            raise InvalidRequest(f"This gateway requires a project: send 'project_id' in the body or the "
                                 f"'{PROJECT_HEADER}' header.", param="project_id", code="missing_required_parameter")
        plan = state.pipeline.plan(call, runtime.table, principal.allows)
        needs = plan.needs
        meter = open_meter(
            state.governor, state.usage, principal, project=project, tokens=needs.tokens,
            worst_cost_usd=worst_cost(plan.deployments, needs.prompt_tokens, needs.max_tokens), request_id=rid,
            mode="unified", stream=call.stream, requested_model=call.request.model,
            catalog_version=state.catalog.version)
    except GatewayError as exc:
        _record_refusal(state, principal, rid, exc, request.headers.get(PROJECT_HEADER))
        raise
    result = await state.pipeline.run(call, plan, runtime.table, request_id=rid, meter=meter)
    if result.chunks is not None:
        headers = {**result.headers, "cache-control": "no-cache", "x-accel-buffering": "no"}
        return Stream(result.chunks, media_type="text/event-stream", headers=headers)
    assert result.body is not None
    return Response(result.body, media_type=JSON, headers=result.headers)


def _record_refusal(state: GatewayState, principal: Principal, rid: str, exc: GatewayError,
                    project: str | None) -> None:
    """A request refused before it went anywhere still leaves a record (the admin counts its errors)."""
    exc.headers.update(state.governor.headers(principal, time.time()))
    state.usage.record(RequestRecord(
        ts=time.time(), request_id=rid, key_id=principal.key_id, key_name=principal.name,
        project=principal.project or project, mode="unified", stream=False, requested_model=None, provider=None,
        model=None, attempts=0, status=exc.status_code, error_type=exc.error_type))


@get("/v1/models")
async def list_models(request: Request[Any, Any, Any]) -> Response[bytes]:
    state = gateway_state(request)
    state.keys.authenticate(request.headers.get("authorization"))
    return Response(encoder.encode(model_list(state.runtime.table)), media_type=JSON)


@get("/v1/usage")
async def usage(request: Request[Any, Any, Any]) -> Response[bytes]:
    """The calling key's own spend, remaining budget and limits."""
    state = gateway_state(request)
    principal = state.keys.authenticate(request.headers.get("authorization"))
    assert state.store is not None
    report = await key_usage(state.store, state.governor, principal)
    return Response(encoder.encode(report), media_type=JSON,
                    headers=state.governor.headers(principal, time.time()))
