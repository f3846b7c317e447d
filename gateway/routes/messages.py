"""The Anthropic Messages surface: ``POST /v1/messages`` (and ``/count_tokens``) for any model.

The same flow as /v1/chat/completions (plan, admission, pipeline, one usage record, mode "messages")
with Anthropic's shape on both ends: ``gateway/messages.py`` translates. Errors are rendered here, in
Anthropic's error shape, so the app-wide OpenAI-envelope handler never sees them.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any

from litestar import Request, Response, post
from litestar.response import Stream

from gateway.accounting import open_meter, record_refusal, worst_cost
from gateway.errors import AuthenticationFailed, GatewayError, InvalidRequest
from gateway.governance import Principal
from gateway.messages import (
    MessagesStream,
    message_from_completion,
    message_id,
    parse_request,
    to_chat_call,
)
from gateway.providers.anthropic import error_body
from gateway.router import estimate_prompt_tokens
from gateway.routes.context import gateway_state, request_body, request_id
from gateway.state import GatewayState
from gateway.wire.openai import encoder

JSON = "application/json"
PROJECT_HEADER = "x-gateway-project-id"


@post("/v1/messages", status_code=200)
async def create_message(request: Request[Any, Any, Any]) -> Response[bytes] | Stream:
    state = gateway_state(request)
    rid = request_id(request)
    runtime = state.runtime  # read once: a reload mid-request does not change this request's config
    try:
        principal = _principal(state, request.headers)
    except GatewayError as exc:
        return _error(exc, rid)
    try:
        body = await request_body(request)
        incoming = parse_request(body)
        call = to_chat_call(incoming)
        project = state.governor.project_for(principal, request.headers.get(PROJECT_HEADER))
        if runtime.config.routing.require_project and not project:
            raise InvalidRequest(f"This gateway requires a project: send the '{PROJECT_HEADER}' header.",
                                 param="project_id", code="missing_required_parameter")
        plan = state.pipeline.plan(call, runtime.table, principal.allows)
        needs = plan.needs
        meter = open_meter(
            state.governor, state.usage, principal, project=project, tokens=needs.tokens,
            worst_cost_usd=worst_cost(plan.deployments, needs.prompt_tokens, needs.max_tokens), request_id=rid,
            mode="messages", stream=call.stream, requested_model=incoming.model,
            catalog_version=state.catalog.version,
            request_body=body if runtime.config.logging.store_bodies and not call.stream else None)
    except GatewayError as exc:
        record_refusal(state.governor, state.usage, principal, exc, request_id=rid, mode="messages",
                       project=request.headers.get(PROJECT_HEADER))
        return _error(exc, rid)
    msg_id = message_id(rid)
    try:
        result = await state.pipeline.run(call, plan, runtime.table, request_id=rid, meter=meter)
        headers = {**result.headers, "request-id": rid}
        if result.chunks is None:
            assert result.body is not None
            answer = message_from_completion(result.body, msg_id=msg_id, model=incoming.model,
                                             prompt_estimate=needs.prompt_tokens)
            return Response(answer, media_type=JSON, headers=headers)
    except GatewayError as exc:
        return _error(exc, rid)
    stream = MessagesStream(msg_id=msg_id, model=incoming.model, prompt_estimate=needs.prompt_tokens)
    return Stream(_events(result.chunks, stream), media_type="text/event-stream",
                  headers={**headers, "cache-control": "no-cache", "x-accel-buffering": "no"})


@post("/v1/messages/count_tokens", status_code=200)
async def count_tokens(request: Request[Any, Any, Any]) -> Response[bytes]:
    """The gateway's own estimate (the one its reservations use); no provider is asked, nothing is charged."""
    state = gateway_state(request)
    rid = request_id(request)
    try:
        _principal(state, request.headers)
        call = to_chat_call(parse_request(await request_body(request), count_only=True))
    except GatewayError as exc:
        return _error(exc, rid)
    return Response(encoder.encode({"input_tokens": estimate_prompt_tokens(call)}), media_type=JSON,
                    headers={"request-id": rid})


async def _events(chunks: AsyncIterator[bytes], stream: MessagesStream) -> AsyncIterator[bytes]:
    try:
        yield stream.start()
        async for data in chunks:
            frames = stream.feed(data)
            if frames:
                yield b"".join(frames)
        frames = stream.close()
        if frames:
            yield b"".join(frames)
    except GatewayError as exc:  # the model's stream could not be translated: the client hears why
        yield stream.fail(exc)
    finally:
        if isinstance(chunks, AsyncGenerator):
            await chunks.aclose()  # the pipeline settles the request's usage as it closes


def _principal(state: GatewayState, headers: Mapping[str, str]) -> Principal:
    """Anthropic clients send the key as ``x-api-key`` (or ``Authorization: Bearer``, as SDK 2.x does)."""
    key = headers.get("x-api-key")
    if key:
        return state.keys.check_secret(key.strip())
    if not headers.get("authorization"):
        raise AuthenticationFailed("Missing API key: send your gateway key as 'x-api-key: sk-proxy-...' or "
                                   "'Authorization: Bearer sk-proxy-...'.")
    return state.keys.authenticate(headers.get("authorization"))


def _error(exc: GatewayError, rid: str) -> Response[bytes]:
    return Response(error_body(exc), status_code=exc.status_code, media_type=JSON,
                    headers={**exc.headers, "request-id": rid})


