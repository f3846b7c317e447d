"""The Anthropic Messages surface: ``POST /v1/messages`` (and ``/count_tokens``) for any model.

The same lifecycle as /v1/chat/completions (``routes/lifecycle.py``: admission, pipeline, disconnect
detection, one usage record, mode "messages") with Anthropic's shape on both ends: ``gateway/dialects/messages.py``
translates. Errors are rendered here, in Anthropic's error shape, so the app-wide OpenAI-envelope handler
never sees them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from litestar import Request, Response, post

from gateway.accounting import Mode
from gateway.dialects.messages import (
    MessagesStream,
    message_from_completion,
    message_id,
    parse_request,
    to_chat_call,
)
from gateway.errors import AuthenticationFailed, GatewayError
from gateway.governance import Principal
from gateway.pipeline import ChatResult
from gateway.providers.anthropic import error_body
from gateway.router import Plan, estimate_prompt_tokens
from gateway.routes.asgi import Receive, Scope, Send, header
from gateway.routes.context import gateway_state, request_body, request_id
from gateway.routes.lifecycle import Parsed, serve
from gateway.state import GatewayState
from gateway.wire.openai import encoder

JSON = "application/json"
PROJECT_HEADER = "x-gateway-project-id"


class MessagesDialect:
    """Anthropic Messages in and out; ``gateway/dialects/messages.py`` translates both ways."""

    mode: Mode = "messages"
    missing_project = f"send the '{PROJECT_HEADER}' header"

    def principal(self, state: GatewayState, scope: Scope) -> Principal:
        return _principal(state, {name: value for name in ("x-api-key", "authorization")
                                  if (value := header(scope, name.encode())) is not None})

    async def parse(self, body: bytes, scope: Scope, principal: Principal) -> Parsed:
        incoming = parse_request(body)
        call = to_chat_call(incoming)
        betas = header(scope, b"anthropic-beta") or ""
        call.betas = frozenset(beta.strip() for beta in betas.split(",") if beta.strip())
        return Parsed(call=call, requested_model=incoming.model, body=body,
                      project=header(scope, PROJECT_HEADER.encode()), detail=incoming)

    def error(self, exc: GatewayError, rid: str) -> tuple[bytes, dict[str, str]]:
        return error_body(exc), {**exc.headers, "request-id": rid}

    def answer(self, parsed: Parsed, plan: Plan, result: ChatResult, rid: str) -> tuple[bytes, dict[str, str]]:
        assert result.body is not None
        return (message_from_completion(result.body, msg_id=message_id(rid), model=parsed.detail.model,
                                        prompt_estimate=plan.needs.prompt_tokens),
                {**result.headers, "request-id": rid})

    def stream(self, parsed: Parsed, plan: Plan, result: ChatResult,
               rid: str) -> tuple[AsyncIterator[bytes], dict[str, str]]:
        assert result.chunks is not None
        stream = MessagesStream(msg_id=message_id(rid), model=parsed.detail.model,
                                prompt_estimate=plan.needs.prompt_tokens)
        return _events(result.chunks, stream), {**result.headers, "request-id": rid}


MESSAGES = MessagesDialect()


async def create_message(state: GatewayState, scope: Scope, receive: Receive, send: Send, rid: str) -> None:
    """POST /v1/messages, as plain ASGI like /v1/chat/completions (see routes/asgi.py for why): routed
    through Litestar, it cost about 60 µs a request more than chat (issue 18's profile)."""
    await serve(MESSAGES, state, scope, receive, send, rid)


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
    """OpenAI chunks in, Messages events out; closing ``chunks`` (and settling) is the lifecycle's job."""
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


