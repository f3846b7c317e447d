"""``GET /metrics``: the Prometheus text exposition, guarded.

Open on a loopback listener (only the machine itself can reach it); elsewhere it needs ``[metrics] token``
as a bearer token, and without one configured it refuses, saying how to set one: label values name keys,
projects and providers, which are not for anyone on the network. ``[metrics] enabled = false`` turns it
into a 404 like any unknown path.
"""

from __future__ import annotations

import hmac
import ipaddress

from gateway import metrics
from gateway.errors import AuthenticationFailed, PermissionDenied, RouteNotFound
from gateway.routes.asgi import Receive, Scope, Send, header, respond_error
from gateway.state import GatewayState


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def scrape(state: GatewayState, scope: Scope, receive: Receive, send: Send, rid: str) -> None:
    config = state.config.metrics
    if not config.enabled:
        await respond_error(send, RouteNotFound("Unknown path: see the README for the gateway's endpoints."))
        return
    if config.token is not None:
        sent = (header(scope, b"authorization") or "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(sent.encode(), config.token.encode()):
            await respond_error(send, AuthenticationFailed(
                "GET /metrics needs the [metrics] token: send 'Authorization: Bearer <token>'."))
            return
    elif not _loopback(state.config.server.host):
        await respond_error(send, PermissionDenied(
            "GET /metrics is open only on a loopback listener: set [metrics] token in config.toml to scrape it "
            "over the network."))
        return
    state.refresh_gauges()
    body = metrics.exposition()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", metrics.CONTENT_TYPE.encode()),
                            (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": body})
