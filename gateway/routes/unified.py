"""The OpenAI-compatible surface: /v1/chat/completions (plain ASGI), /v1/models and /v1/usage."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from litestar import Request, Response, get
from litestar.params import FromPath

from gateway.accounting import Mode
from gateway.dialects.chat import parse_chat
from gateway.door import header_value
from gateway.errors import GatewayError, ModelNotFound
from gateway.governance import Principal
from gateway.models import model_entry, model_list
from gateway.pipeline import ChatResult
from gateway.router import Plan
from gateway.routes.asgi import Receive, Scope, Send, header
from gateway.routes.context import gateway_state
from gateway.routes.lifecycle import PROJECT_HEADER, Parsed, serve
from gateway.state import GatewayState
from gateway.usage_report import key_usage
from gateway.wire.openai import encoder

JSON = "application/json"


class ChatDialect:
    """OpenAI chat completions: the gateway's common format, so answers and streams go out as they are."""

    mode: Mode = "unified"
    missing_project = f"send 'project_id' in the body or the '{PROJECT_HEADER.decode()}' header"

    def principal(self, state: GatewayState, scope: Scope) -> Principal:
        return state.keys.authenticate(header(scope, b"authorization"))

    async def parse(self, body: bytes, scope: Scope, principal: Principal) -> Parsed:
        call = parse_chat(body)
        return Parsed(call=call, requested_model=call.request.model, body=body,
                      project=call.request.project_id or header(scope, PROJECT_HEADER))

    def error(self, exc: GatewayError, rid: str) -> tuple[bytes, dict[str, str]]:
        return exc.body(), exc.headers

    def answer(self, parsed: Parsed, plan: Plan, result: ChatResult, rid: str) -> tuple[bytes, dict[str, str]]:
        assert result.body is not None
        return result.body, result.headers

    def stream(self, parsed: Parsed, plan: Plan, result: ChatResult,
               rid: str) -> tuple[AsyncIterator[bytes], dict[str, str]]:
        assert result.chunks is not None
        return result.chunks, result.headers


CHAT = ChatDialect()


async def chat_completions(state: GatewayState, scope: Scope, receive: Receive, send: Send, rid: str) -> None:
    """POST /v1/chat/completions, as plain ASGI (see routes/asgi.py for why)."""
    await serve(CHAT, state, scope, receive, send, rid)


@get("/v1/models")
async def list_models(request: Request[Any, Any, Any]) -> Response[bytes]:
    state = gateway_state(request)
    state.keys.authenticate(request.headers.get("authorization"))
    return Response(encoder.encode(model_list(state.runtime.table)), media_type=JSON)


@get("/v1/models/{model_id:path}")
async def retrieve_model(request: Request[Any, Any, Any], model_id: FromPath[str]) -> Response[bytes]:
    """One entry of the listing: a plain name, a group, or ``provider/model`` (its slash may come
    URL-encoded as ``%2F``: the ASGI path arrives decoded, so both spellings reach here alike)."""
    state = gateway_state(request)
    state.keys.authenticate(request.headers.get("authorization"))
    name = model_id.removeprefix("/")
    found = model_entry(state.runtime.table, name)
    if found is None:
        raise ModelNotFound(f"The model '{header_value(name, 256)}' does not exist on this gateway: "
                            "GET /v1/models lists every model and group it serves.", param="model")
    return Response(encoder.encode(found), media_type=JSON)


@get("/v1/usage")
async def usage(request: Request[Any, Any, Any]) -> Response[bytes]:
    """The calling key's own spend, remaining budget and limits."""
    state = gateway_state(request)
    principal = state.keys.authenticate(request.headers.get("authorization"))
    assert state.store is not None
    report = await key_usage(state.store, state.governor, principal)
    return Response(encoder.encode(report), media_type=JSON,
                    headers=state.governor.headers(principal, time.time()))
