"""Admin JSON endpoints, for scripts: the admin token as a bearer (never a proxy key)."""

from __future__ import annotations

import datetime
from typing import Any

from litestar import Request, Response, get

from gateway.errors import AuthenticationFailed, InvalidRequest, PermissionDenied, RateLimited
from gateway.routes.context import gateway_state
from gateway.state import GatewayState
from gateway.usage_report import BY_CHOICES, AggregateReport, as_csv
from gateway.wire.openai import encoder


def require_admin(state: GatewayState, request: Request[Any, Any, Any]) -> None:
    """The configured admin token, or the one generated at first start (a proxy key never passes).

    Wrong tokens are throttled per address as the login form's are: while an address is blocked even the
    right token is refused, so the answer never tells a guesser which guess was right.
    """
    config = state.config
    if not state.admin.enabled(config):
        # Only when [admin] token was removed from a running gateway that never generated one.
        raise PermissionDenied("The admin API is off: set [admin] token in config.toml, or restart the gateway "
                               "to have one generated.", code="admin_disabled")
    address = request.client.host if request.client else "unknown"
    wait = state.admin.blocked_for(address)
    if wait:
        seconds = int(wait) + 1
        raise RateLimited(f"Too many wrong admin tokens from this address: try again in {seconds} seconds.",
                          code="admin_token_throttled", headers={"retry-after": str(seconds)})
    scheme, _, given = (request.headers.get("authorization") or "").partition(" ")
    if scheme.lower() != "bearer" or not state.admin.check_token(config, given.strip()):
        state.admin.login_failed(address, "API token")
        raise AuthenticationFailed("The admin API needs 'Authorization: Bearer <admin token>'.",
                                   code="invalid_admin_token")
    state.admin.token_accepted(address)


def _day(value: str | None, param: str) -> str | None:
    if value is None:
        return None
    try:
        return datetime.date.fromisoformat(value).isoformat()
    except ValueError:
        raise InvalidRequest(f"'{param}' must be a date as YYYY-MM-DD.", param=param) from None


@get("/admin/api/usage")
async def usage_aggregates(request: Request[Any, Any, Any]) -> Response[bytes | str]:
    """Totals by key, model, project or day; ?since=&until= (YYYY-MM-DD, UTC), ?key=&project=&model=,
    ?format=csv."""
    state = gateway_state(request)
    require_admin(state, request)
    params = request.query_params
    by = params.get("by", "key")
    if by not in BY_CHOICES:
        raise InvalidRequest(f"'by' must be one of {', '.join(BY_CHOICES)}.", param="by")
    since, until = _day(params.get("since"), "since"), _day(params.get("until"), "until")
    assert state.store is not None
    key_id = None
    if params.get("key"):
        row = await state.store.find_key(params["key"])
        key_id = row.id if row else f"cfg_{params['key']}"
    rows = await state.store.aggregate(by, since=since, until=until, key_id=key_id,
                                       project=params.get("project"), model=params.get("model"))
    if params.get("format") == "csv":
        return Response(as_csv(by, rows), media_type="text/csv",
                        headers={"content-disposition": f'attachment; filename="usage-by-{by}.csv"'})
    return Response(encoder.encode(AggregateReport(by=by, since=since, until=until, data=rows)),
                    media_type="application/json")
