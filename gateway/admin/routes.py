"""The admin page: server-rendered HTML under /admin, behind a login with the admin token.

Every page needs a live session (else: a redirect to the login form); every form that changes something
carries the session's CSRF token (else: 403). Keys are created, edited and revoked through
``gateway.keys``, the same operations as the CLI. Pages work without JavaScript; the one script adds a
copy button and a confirmation before revoking.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from typing import Any
from urllib.parse import urlencode

import msgspec
from litestar import Request, Response, Router, get, post
from litestar.datastructures import FormMultiDict
from litestar.params import FromPath
from litestar.response import Redirect

from gateway import keys
from gateway.admin import views as admin_views
from gateway.admin.auth import LOGIN_COOKIE, LOGIN_FORM_SECONDS, SESSION_COOKIE, SESSION_SECONDS, AdminAuth, Session
from gateway.admin.web import render, static_files
from gateway.config import parse_expiry
from gateway.errors import RouteNotFound
from gateway.routes.context import gateway_state
from gateway.state import GatewayState
from gateway.store import KeyLimits, Store
from gateway.usage_report import as_csv

log = logging.getLogger("gateway.admin")

HTML = "text/html; charset=utf-8"
# Everything the page loads comes from the gateway itself; no inline script, no framing.
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}
_NONCE = re.compile(r"[A-Za-z0-9_-]{16,64}")
KEY_FIELDS = ("name", "budget_usd", "budget_period", "rpm", "tpm", "models", "expires", "project")


class LoginRequired(Exception):
    """No live session: the handler sends the browser to the login form."""


class CsrfRejected(Exception):
    """A state-changing form without its session's CSRF token."""


def _store(state: GatewayState) -> Store:
    assert state.store is not None
    return state.store


async def _session(request: Request[Any, Any, Any]) -> Session:
    state = gateway_state(request)
    session = await state.admin.session(_store(state), state.config, request.cookies.get(SESSION_COOKIE))
    if session is None:
        raise LoginRequired
    return session


async def _checked_form(request: Request[Any, Any, Any], session: Session) -> dict[str, str]:
    form: FormMultiDict = await request.form()
    fields = {name: value.strip() for name, value in form.items() if isinstance(value, str)}
    if not AdminAuth.csrf_ok(session.csrf, fields.get("csrf")):
        raise CsrfRejected
    return fields


def _page(template: str, *, session: Session | None, status: int = 200, headers: dict[str, str] | None = None,
          **context: Any) -> Response[str]:
    html = render(template, session=session, now=time.time(), **{"active": "", **context})
    return Response(html, media_type=HTML, status_code=status, headers=headers)


def _address(request: Request[Any, Any, Any]) -> str:
    return request.client.host if request.client else "unknown"


def _safe_next(target: str | None) -> str:
    """Only a path of the admin page itself: never another site (an open redirect)."""
    if target and target.startswith("/admin") and "//" not in target and "\\" not in target:
        return target
    return "/admin"


def _secure(request: Request[Any, Any, Any]) -> bool:
    return request.url.scheme == "https"


# ------------------------------------------------------------------------------------- hooks, handlers


async def _security_headers(response: Response[Any]) -> Response[Any]:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    response.headers.setdefault("cache-control", "no-store")
    return response


def _to_login(request: Request[Any, Any, Any], _: LoginRequired) -> Response[Any]:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return Redirect("/admin/login", query_params={"next": target} if request.method == "GET" else None,
                    status_code=303)


def _csrf_rejected(request: Request[Any, Any, Any], _: CsrfRejected) -> Response[Any]:
    log.warning("admin: %s %s from %s refused: missing or wrong CSRF token", request.method, request.url.path,
                _address(request))
    return _page("error.html", session=None, status=403, title="Forbidden",
                 message="This form's security token is missing or wrong (the page may be stale, or the form was "
                         "sent from another site). Reload the page and try again.")


# --------------------------------------------------------------------------------------------- login


@get("/login")
async def login_form(request: Request[Any, Any, Any]) -> Response[Any]:
    state = gateway_state(request)
    if await state.admin.session(_store(state), state.config, request.cookies.get(SESSION_COOKIE)):
        return Redirect(_safe_next(request.query_params.get("next")), status_code=303)
    return _login_page(request, state, error=None, status=200, target=request.query_params.get("next"))


def _login_page(request: Request[Any, Any, Any], state: GatewayState, *, error: str | None, status: int,
                target: str | None) -> Response[str]:
    # Only a nonce of the shape this form makes is kept: any other cookie value is replaced, not echoed back.
    given = request.cookies.get(LOGIN_COOKIE) or ""
    nonce = given if _NONCE.fullmatch(given) else secrets.token_urlsafe(16)
    response = _page("login.html", session=None, status=status, error=error,
                     enabled=state.admin.enabled(state.config), csrf=state.admin.login_csrf(state.config, nonce),
                     next=_safe_next(target))
    response.set_cookie(LOGIN_COOKIE, nonce, max_age=LOGIN_FORM_SECONDS, path="/admin", httponly=True,
                        samesite="strict", secure=_secure(request))
    return response


@post("/login", status_code=303)
async def login(request: Request[Any, Any, Any]) -> Response[Any]:
    state = gateway_state(request)
    address = _address(request)
    wait = state.admin.blocked_for(address)
    if wait:
        log.warning("admin login from %s refused: too many failed attempts", address)
        return _page("error.html", session=None, status=429, headers={"retry-after": str(int(wait) + 1)},
                     title="Too many attempts",
                     message=f"Too many failed logins from this address: try again in {int(wait) + 1} seconds.")
    form: FormMultiDict = await request.form()
    given = {name: value for name, value in form.items() if isinstance(value, str)}
    nonce = request.cookies.get(LOGIN_COOKIE)
    if not nonce or not AdminAuth.csrf_ok(state.admin.login_csrf(state.config, nonce), given.get("csrf")):
        raise CsrfRejected
    if not state.admin.check_token(state.config, given.get("token", "").strip()):
        state.admin.login_failed(address)
        return _login_page(request, state, error="That is not the admin token.", status=401,
                           target=given.get("next"))
    state.admin.login_succeeded(address)
    _, cookie = await state.admin.open_session(_store(state), state.config)
    response = Redirect(_safe_next(given.get("next")), status_code=303)
    response.set_cookie(SESSION_COOKIE, cookie, max_age=SESSION_SECONDS, path="/admin", httponly=True,
                        samesite="strict", secure=_secure(request))
    response.delete_cookie(LOGIN_COOKIE, path="/admin")
    return response


@post("/logout", status_code=303)
async def logout(request: Request[Any, Any, Any]) -> Response[Any]:
    session = await _session(request)
    await _checked_form(request, session)
    state = gateway_state(request)
    await state.admin.close_session(_store(state), session)
    response = Redirect("/admin/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/admin")
    return response


# ------------------------------------------------------------------------------------------- overview


@get("/")
async def overview(request: Request[Any, Any, Any]) -> Response[str]:
    session = await _session(request)
    data = await admin_views.overview(gateway_state(request), time.time())
    return _page("overview.html", session=session, active="overview", data=data)


# ----------------------------------------------------------------------------------------------- keys


# The key form's number fields, named as the form labels them.
NUMBER_FIELDS = {"budget_usd": ("Budget (USD)", "a number of dollars, like 12.50"),
                 "rpm": ("Requests / min", "a whole number, like 60"),
                 "tpm": ("Tokens / min", "a whole number, like 100000")}


def _limits(fields: dict[str, str]) -> dict[str, object]:
    """KeyLimits fields from the key form; an empty field means no limit."""

    def number(name: str, kind: type[int] | type[float]) -> int | float | None:
        text = fields.get(name, "")
        if not text:
            return None
        try:
            return kind(text)
        except ValueError:
            label, wanted = NUMBER_FIELDS[name]
            raise keys.KeyOperationError(f"{label} must be {wanted} (or empty for no limit).") from None

    expires = fields.get("expires", "")
    try:
        expires_at = parse_expiry(expires) if expires else None
    except ValueError:
        raise keys.KeyOperationError("expires must be a date as YYYY-MM-DD") from None
    models = [m.strip() for m in fields.get("models", "").split(",") if m.strip()]
    return {"budget_usd": number("budget_usd", float), "budget_period": fields.get("budget_period") or "month",
            "rpm": number("rpm", int), "tpm": number("tpm", int), "models": models or None,
            "expires_at": expires_at, "project": fields.get("project") or None}


async def _keys_page(request: Request[Any, Any, Any], session: Session, *, status: int = 200,
                     error: str | None = None, form: dict[str, str] | None = None,
                     notice: str | None = None) -> Response[str]:
    state = gateway_state(request)
    lines = await admin_views.key_lines(state, time.time())
    if notice is None:
        for action in ("revoked", "updated"):
            done = request.query_params.get(action)
            name = next((line.key.name for line in lines if line.key.id == done), None)
            if name is not None:
                notice = f"Key “{name}” {action}."
    return _page("keys.html", session=session, status=status, active="keys", lines=lines, error=error,
                 notice=notice, form=form or {})


@get("/keys")
async def keys_list(request: Request[Any, Any, Any]) -> Response[str]:
    return await _keys_page(request, await _session(request))


@post("/keys", status_code=200)
async def key_create(request: Request[Any, Any, Any]) -> Response[str]:
    session = await _session(request)
    fields = await _checked_form(request, session)
    state = gateway_state(request)
    name = fields.get("name", "")
    try:
        limits = msgspec.convert(_limits(fields), KeyLimits)
        secret, row = await keys.create(_store(state), state.config, name, limits)
    except (keys.KeyOperationError, ValueError, msgspec.ValidationError) as exc:
        return await _keys_page(request, session, status=400, error=str(exc),
                                form={f: fields.get(f, "") for f in KEY_FIELDS})
    await state.reload_keys()
    log.info("admin: created key %r (%s)", row.name, row.id)
    # The secret is in this one answer only (not stored, not cached); the page says so.
    return _page("key_created.html", session=session, active="keys", row=row, secret=secret,
                 base_url=f"{str(request.base_url).rstrip('/')}/v1")


async def _editable(request: Request[Any, Any, Any], key_id: str) -> keys.KeyView | None:
    state = gateway_state(request)
    views = await keys.list_keys(_store(state), state.config, time.time())
    return next((v for v in views if v.id == key_id and v.source == "cli"), None)


def _key_form(view: keys.KeyView) -> dict[str, str]:
    def text(value: object) -> str:
        return "" if value is None else (f"{value:g}" if isinstance(value, float) else str(value))

    return {"name": view.name, "budget_usd": text(view.budget_usd), "budget_period": view.budget_period,
            "rpm": text(view.rpm), "tpm": text(view.tpm), "models": ", ".join(view.models or []),
            "expires": time.strftime("%Y-%m-%d", time.gmtime(view.expires_at)) if view.expires_at else "",
            "project": view.project or ""}


def _not_found(session: Session | None, what: str) -> Response[str]:
    return _page("error.html", session=session, status=404, title="Not found", message=f"No such {what}.")


@get("/keys/{key_id:str}")
async def key_edit_form(request: Request[Any, Any, Any], key_id: FromPath[str]) -> Response[str]:
    session = await _session(request)
    view = await _editable(request, key_id)
    if view is None:
        return _not_found(session, "key (keys declared in config.toml are edited there)")
    return _page("key_edit.html", session=session, active="keys", key=view, form=_key_form(view), error=None)


@post("/keys/{key_id:str}", status_code=303)
async def key_update(request: Request[Any, Any, Any], key_id: FromPath[str]) -> Response[Any]:
    session = await _session(request)
    fields = await _checked_form(request, session)
    state = gateway_state(request)
    view = await _editable(request, key_id)
    if view is None:
        return _not_found(session, "key (keys declared in config.toml are edited there)")
    try:
        await keys.update(_store(state), state.config, key_id, _limits(fields))
    except (keys.KeyOperationError, ValueError, msgspec.ValidationError) as exc:
        return _page("key_edit.html", session=session, status=400, active="keys", key=view,
                     form={**_key_form(view), **{f: fields.get(f, "") for f in KEY_FIELDS if f != "name"}},
                     error=str(exc))
    await state.reload_keys()
    log.info("admin: updated the limits of key %r (%s)", view.name, view.id)
    return Redirect("/admin/keys", query_params={"updated": key_id}, status_code=303)


@post("/keys/{key_id:str}/revoke", status_code=303)
async def key_revoke(request: Request[Any, Any, Any], key_id: FromPath[str]) -> Response[Any]:
    session = await _session(request)
    await _checked_form(request, session)
    state = gateway_state(request)
    if await _editable(request, key_id) is None:
        return _not_found(session, "key (keys declared in config.toml are removed there)")
    row, revoked = await keys.revoke(_store(state), state.config, key_id)
    if revoked:
        await state.reload_keys()
        log.info("admin: revoked key %r (%s)", row.name, row.id)
    return Redirect("/admin/keys", query_params={"revoked": key_id}, status_code=303)


# ---------------------------------------------------------------------------------------------- usage


@get("/usage")
async def usage(request: Request[Any, Any, Any]) -> Response[str]:
    session = await _session(request)
    state = gateway_state(request)
    filters, error = admin_views.usage_filters(request.query_params, time.time())
    if request.query_params.get("format") == "csv":
        rows = await admin_views.usage_rows(state, filters)
        name = f"usage-by-{filters.by}-{filters.since}-{filters.until}.csv"
        return Response(as_csv(filters.by, rows), media_type="text/csv; charset=utf-8",
                        headers={"content-disposition": f'attachment; filename="{name}"'})
    data = await admin_views.usage(state, filters, admin_views.page_number(request.query_params.get("page")))
    return _page("usage.html", session=session, active="usage", filters=filters, data=data, error=error,
                 csv_query=urlencode(filters.query(format="csv")),
                 prev_query=urlencode(filters.query(page=str(data.page - 1))) if data.page > 1 else None,
                 next_query=urlencode(filters.query(page=str(data.page + 1))) if data.page < data.pages else None,
                 options=admin_views.DIMENSION_OPTIONS)


# ------------------------------------------------------------------------------------------ providers


@get("/providers")
async def providers(request: Request[Any, Any, Any]) -> Response[str]:
    session = await _session(request)
    state = gateway_state(request)
    data = await admin_views.providers(state, time.time(), admin_views.page_number(request.query_params.get("page")))
    return _page("providers.html", session=session, active="providers", data=data,
                 window_min=int(admin_views.LATENCY_WINDOW_S // 60),
                 circuit_window_s=state.config.routing.circuit_window_s)


# ------------------------------------------------------------------------------------------- requests


@get("/requests")
async def requests_list(request: Request[Any, Any, Any]) -> Response[str]:
    session = await _session(request)
    params = request.query_params
    before_text = params.get("before", "")
    before = int(before_text) if before_text.isdigit() else None
    key_id = params.get("key") or None
    rows = await admin_views.requests_page(gateway_state(request), before, key_id)
    older = (urlencode({k: v for k, v in (("before", str(rows[-1]["id"])), ("key", key_id or "")) if v})
             if len(rows) == admin_views.REQUESTS_PAGE else None)
    return _page("requests.html", session=session, active="requests", rows=rows, key_id=key_id,
                 paged=before is not None, older=older)


@get("/requests/{row_id:int}")
async def request_detail(request: Request[Any, Any, Any], row_id: FromPath[int]) -> Response[str]:
    session = await _session(request)
    state = gateway_state(request)
    detail = await admin_views.request_detail(state, row_id)
    if detail is None:
        return _not_found(session, "request record (it may have been pruned)")
    return _page("request.html", session=session, active="requests", detail=detail,
                 store_bodies=state.config.logging.store_bodies)


# --------------------------------------------------------------------------------------------- config


@get("/config")
async def config(request: Request[Any, Any, Any]) -> Response[str]:
    session = await _session(request)
    view = admin_views.config_view(gateway_state(request))
    return _page("config.html", session=session, active="config", view=view)


# --------------------------------------------------------------------------------------------- static


@get("/static/{name:str}")
async def static(request: Request[Any, Any, Any], name: FromPath[str]) -> Response[bytes]:
    found = static_files().get(name)
    if found is None:
        return Response(b"not found", status_code=404, media_type="text/plain")
    headers = {"etag": found.etag, "cache-control": "public, max-age=300"}
    if request.headers.get("if-none-match") == found.etag:
        return Response(b"", status_code=304, headers=headers)
    return Response(found.body, media_type=found.media_type, headers=headers)


@get("/", include_in_schema=False)
async def front_door(request: Request[Any, Any, Any]) -> Response[Any]:
    """The gateway's root: a browser is sent to the admin page; an API client keeps the JSON 404."""
    if "text/html" in request.headers.get("accept", ""):
        return Redirect("/admin", status_code=303)
    raise RouteNotFound("Unknown path: see the README for the gateway's endpoints.")


router = Router(
    path="/admin",
    route_handlers=[login_form, login, logout, overview, keys_list, key_create, key_edit_form, key_update, key_revoke,
                    usage, providers, requests_list, request_detail, config, static],
    after_request=_security_headers,
    exception_handlers={LoginRequired: _to_login, CsrfRejected: _csrf_rejected},
)
