"""The OpenAI-compatible surface: /v1/chat/completions and /v1/models."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get, post
from litestar.response import Stream

from gateway.chat import parse_chat
from gateway.pipeline import run_chat
from gateway.routes.context import gateway_state, request_id
from gateway.wire.openai import ModelCard, ModelList, encoder

JSON = "application/json"


@post("/v1/chat/completions", status_code=200)
async def chat_completions(request: Request[Any, Any, Any]) -> Response[bytes] | Stream:
    state = gateway_state(request)
    state.keys.authenticate(request.headers.get("authorization"))
    call = parse_chat(await request.body())
    result = await run_chat(call, providers=state.config.providers, upstream=state.upstream,
                            request_id=request_id(request))
    if result.chunks is not None:
        headers = {**result.headers, "cache-control": "no-cache", "x-accel-buffering": "no"}
        return Stream(result.chunks, media_type="text/event-stream", headers=headers)
    assert result.body is not None
    return Response(result.body, media_type=JSON, headers=result.headers)


@get("/v1/models")
async def list_models(request: Request[Any, Any, Any]) -> Response[bytes]:
    state = gateway_state(request)
    state.keys.authenticate(request.headers.get("authorization"))
    cards = [
        ModelCard(id=f"{name}/{model}", owned_by=name)
        for name, provider in state.config.providers.items()
        for model in provider.models or ()
    ]
    return Response(encoder.encode(ModelList(data=cards)), media_type=JSON)
