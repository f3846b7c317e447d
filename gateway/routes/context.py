"""Accessors for what the app and the request-id middleware attach to a request."""

from __future__ import annotations

from typing import Any

from litestar import Request

from gateway.state import GatewayState


def gateway_state(request: Request[Any, Any, Any]) -> GatewayState:
    state: GatewayState = request.app.state.gateway
    return state


def request_id(request: Request[Any, Any, Any]) -> str:
    rid: str = request.scope["state"]["request_id"]
    return rid
