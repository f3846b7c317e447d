"""Liveness and readiness probes (no key needed)."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get

from gateway.routes.context import gateway_state


@get("/healthz")
async def healthz() -> Response[bytes]:
    return Response(b'{"status":"ok"}', media_type="application/json")


@get("/readyz")
async def readyz(request: Request[Any, Any, Any]) -> Response[bytes]:
    state = gateway_state(request)
    if not state.ready:
        return Response(b'{"status":"starting"}', media_type="application/json", status_code=503)
    return Response(b'{"status":"ready"}', media_type="application/json")
