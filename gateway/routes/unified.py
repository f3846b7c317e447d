"""The OpenAI-compatible surface: /v1/chat/completions (plain ASGI), /v1/models and /v1/usage."""

from __future__ import annotations

import time
from typing import Any

from litestar import Request, Response, get

from gateway.accounting import open_meter, record_refusal, worst_cost
from gateway.chat import parse_chat
from gateway.errors import GatewayError, InvalidRequest
from gateway.models import model_list
from gateway.routes.asgi import ClientGone, Receive, Scope, Send, header, read_body, relay, respond, respond_error
from gateway.routes.context import gateway_state
from gateway.state import GatewayState
from gateway.usage_report import key_usage
from gateway.wire.openai import encoder

JSON = "application/json"
PROJECT_HEADER = b"x-gateway-project-id"


async def chat_completions(state: GatewayState, scope: Scope, receive: Receive, send: Send, rid: str) -> None:
    """POST /v1/chat/completions, as plain ASGI (see routes/asgi.py for why)."""
    try:
        principal = state.keys.authenticate(header(scope, b"authorization"))
    except GatewayError as exc:
        await respond_error(send, exc)
        return
    runtime = state.runtime  # read once: a reload mid-request does not change this request's config
    project_header = header(scope, PROJECT_HEADER)
    try:
        call = parse_chat(await read_body(receive, int(runtime.config.server.max_body_mb * 1024 * 1024)))
        project = state.governor.project_for(principal, call.request.project_id or project_header)
        if runtime.config.routing.require_project and not project:
            raise InvalidRequest(f"This gateway requires a project: send 'project_id' in the body or the "
                                 f"'{PROJECT_HEADER.decode()}' header.", param="project_id",
                                 code="missing_required_parameter")
        plan = state.pipeline.plan(call, runtime.table, principal.allows)
        needs = plan.needs
        meter = open_meter(
            state.governor, state.usage, principal, project=project, tokens=needs.tokens,
            worst_cost_usd=worst_cost(plan.deployments, needs.prompt_tokens, needs.max_tokens), request_id=rid,
            mode="unified", stream=call.stream, requested_model=call.request.model,
            catalog_version=state.catalog.version,
            request_body=call.body if runtime.config.logging.store_bodies and not call.stream else None)
    except ClientGone:
        return
    except GatewayError as exc:
        record_refusal(state.governor, state.usage, principal, exc, request_id=rid, mode="unified",
                       project=project_header)
        await respond_error(send, exc)
        return
    try:
        result = await state.pipeline.run(call, plan, runtime.table, request_id=rid, meter=meter)
    except GatewayError as exc:
        await respond_error(send, exc)
        return
    if result.chunks is not None:
        await relay(send, result.chunks, result.headers)
        return
    assert result.body is not None
    await respond(send, 200, result.body, result.headers)


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
