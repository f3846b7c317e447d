"""GET /openapi.json: the gateway's own API description (built in ``gateway/openapi.py``), public like
/healthz: it holds no configuration, only the shape of the routes."""

from __future__ import annotations

from litestar import Response, get

from gateway.openapi import document_bytes


@get("/openapi.json")
async def openapi_json() -> Response[bytes]:
    return Response(document_bytes(), media_type="application/json")
