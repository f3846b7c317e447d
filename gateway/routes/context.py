"""Accessors for what the app and the request-id middleware attach to a request."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.exceptions import HTTPException

from gateway.errors import InvalidRequest, PayloadTooLarge
from gateway.state import GatewayState


def gateway_state(request: Request[Any, Any, Any]) -> GatewayState:
    state: GatewayState = request.app.state.gateway
    return state


def request_id(request: Request[Any, Any, Any]) -> str:
    rid: str = request.scope["state"]["request_id"]
    return rid


async def request_body(request: Request[Any, Any, Any]) -> bytes:
    """The body, with Litestar's own size refusal turned into the gateway's (rendered in the route's shape)."""
    try:
        return await request.body()
    except HTTPException as exc:
        if exc.status_code == 413:
            raise PayloadTooLarge("The request body is larger than server.max_body_mb allows.") from None
        raise InvalidRequest(str(exc.detail)) from None
