"""The OpenAI-compatible surface: /v1/chat/completions and /v1/models."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get, post
from litestar.response import Stream

from gateway.chat import parse_chat
from gateway.errors import InvalidRequest
from gateway.models import model_list
from gateway.routes.context import gateway_state, request_id
from gateway.wire.openai import encoder

JSON = "application/json"
PROJECT_HEADER = "x-gateway-project-id"


@post("/v1/chat/completions", status_code=200)
async def chat_completions(request: Request[Any, Any, Any]) -> Response[bytes] | Stream:
    state = gateway_state(request)
    state.keys.authenticate(request.headers.get("authorization"))
    call = parse_chat(await request.body())
    runtime = state.runtime  # read once: a reload mid-request does not change this request's config
    project = call.request.project_id or request.headers.get(PROJECT_HEADER)
    if runtime.config.routing.require_project and not project:
        raise InvalidRequest(f"This gateway requires a project: send 'project_id' in the body or the "
                             f"'{PROJECT_HEADER}' header.", param="project_id", code="missing_required_parameter")
    result = await state.pipeline.run(call, runtime.table, request_id=request_id(request))
    if result.chunks is not None:
        headers = {**result.headers, "cache-control": "no-cache", "x-accel-buffering": "no"}
        return Stream(result.chunks, media_type="text/event-stream", headers=headers)
    assert result.body is not None
    return Response(result.body, media_type=JSON, headers=result.headers)


@get("/v1/models")
async def list_models(request: Request[Any, Any, Any]) -> Response[bytes]:
    state = gateway_state(request)
    state.keys.authenticate(request.headers.get("authorization"))
    return Response(encoder.encode(model_list(state.runtime.table)), media_type=JSON)
