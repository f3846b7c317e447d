"""The admin page, server side: login, sessions, CSRF, throttling, every page and form, escaping, secrets."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import openai
import pytest

from gateway.admin.auth import SESSION_COOKIE
from gateway.app import create_app
from gateway.config import load_config_file
from gateway.store import RequestRecord, SqliteStore
from tests.fakes import FakeUpstream, fixture_bytes, json_reply, sse_reply
from tests.inprocess import OK, Harness, by_provider, err, gateway_for

ADMIN_TOKEN = "admin-token-for-tests-0123456789"
ADMIN = f'\n[admin]\ntoken = "{ADMIN_TOKEN}"\n'
USER = [{"role": "user", "content": "Hello"}]
PAGES = ("/admin", "/admin/keys", "/admin/usage", "/admin/providers", "/admin/requests", "/admin/config")
HOSTILE = '<script>alert("x")</script>'
PRICED = '\n[[models]]\nname = "m"\nprovider = "a"\npricing = { input = 1.0, output = 2.0 }\n'


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF field on the page"
    return found.group(1)


async def login(http: httpx.AsyncClient, token: str = ADMIN_TOKEN) -> str:
    """Log in through the form; returns the session's CSRF token."""
    form = await http.get("/admin/login")
    answer = await http.post("/admin/login", data={"token": token, "csrf": csrf_of(form.text), "next": "/admin"})
    assert answer.status_code == 303, answer.text
    return csrf_of((await http.get("/admin")).text)


@asynccontextmanager
async def admin_for(fake: FakeUpstream, tmp_path: Path, extra: str = "",
                    routing: str = "") -> AsyncIterator[tuple[Harness, str]]:
    async with gateway_for(fake, tmp_path, extra=extra + ADMIN, routing=routing) as gw:
        yield gw, await login(gw.http)


async def written(gw: Harness, count: int) -> None:
    for _ in range(100):
        if gw.state.usage.written >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"only {gw.state.usage.written} usage records written")


def record(**fields: object) -> RequestRecord:
    base: dict[str, object] = dict(ts=time.time(), request_id="req_1", key_id="k1", key_name="k1", project=None,
                                   mode="unified", stream=False, requested_model="a/m", provider="a", model="m",
                                   attempts=1, status=200, error_type=None, prompt_tokens=10, completion_tokens=5,
                                   cost_total=0.25, latency_ms=12.0)
    return RequestRecord(**{**base, **fields})  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------- access


async def test_pages_need_a_login_and_the_login_makes_a_strict_session(fake: FakeUpstream, tmp_path: Path) -> None:
    async with gateway_for(fake, tmp_path, extra=ADMIN) as gw:
        for path in PAGES:
            answer = await gw.http.get(path)
            assert answer.status_code == 303 and answer.headers["location"].startswith("/admin/login?next=")
        form = await gw.http.get("/admin/login")
        assert form.status_code == 200 and 'type="password"' in form.text
        wrong = await gw.http.post("/admin/login", data={"token": "nope", "csrf": csrf_of(form.text)})
        assert wrong.status_code == 401 and "not the admin token" in wrong.text
        # A proxy key is not the admin token.
        proxy = await gw.http.post("/admin/login", data={"token": gw.key, "csrf": csrf_of(form.text)})
        assert proxy.status_code == 401
        ok = await gw.http.post("/admin/login", data={"token": ADMIN_TOKEN, "csrf": csrf_of(form.text),
                                                      "next": "/admin/usage?by=model"})
        assert ok.status_code == 303 and ok.headers["location"] == "/admin/usage?by=model"
        cookie = next(c for c in ok.headers.get_list("set-cookie") if c.startswith(SESSION_COOKIE + "="))
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/admin" in cookie
        assert "Max-Age=43200" in cookie
        for path in PAGES:
            page = await gw.http.get(path)
            assert page.status_code == 200, path
            assert page.headers["content-type"].startswith("text/html")
            assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
            assert page.headers["cache-control"] == "no-store"
        # Logged in, the login form sends the browser on.
        assert (await gw.http.get("/admin/login")).status_code == 303


async def test_login_redirects_only_inside_the_admin(fake: FakeUpstream, tmp_path: Path) -> None:
    async with gateway_for(fake, tmp_path, extra=ADMIN) as gw:
        for target in ("https://evil.example/", "//evil.example/admin", "/v1/models"):
            gw.http.cookies.clear()
            form = await gw.http.get("/admin/login")
            answer = await gw.http.post("/admin/login", data={"token": ADMIN_TOKEN, "csrf": csrf_of(form.text),
                                                              "next": target})
            assert answer.headers["location"] == "/admin"


async def test_logout_ends_the_session_even_for_a_copied_cookie(fake: FakeUpstream, tmp_path: Path) -> None:
    async with admin_for(fake, tmp_path) as (gw, csrf):
        stolen = gw.http.cookies.get(SESSION_COOKIE)
        assert stolen
        refused = await gw.http.post("/admin/logout", data={"csrf": "forged"})
        assert refused.status_code == 403
        out = await gw.http.post("/admin/logout", data={"csrf": csrf})
        assert out.status_code == 303 and out.headers["location"] == "/admin/login"
        gw.http.cookies.set(SESSION_COOKIE, stolen, path="/admin")
        assert (await gw.http.get("/admin")).status_code == 303


async def test_tampered_and_expired_cookies_are_refused(fake: FakeUpstream, tmp_path: Path) -> None:
    async with admin_for(fake, tmp_path) as (gw, _):
        good = gw.http.cookies.get(SESSION_COOKIE)
        assert good
        sid, expires, signature = good.split(".")
        for forged in (f"{sid}.{int(expires) + 3600}.{signature}", f"{sid}.{expires}.{'0' * 64}", "garbage", ""):
            gw.http.cookies.set(SESSION_COOKIE, forged, path="/admin")
            assert (await gw.http.get("/admin/keys")).status_code == 303, forged
        gw.http.cookies.set(SESSION_COOKIE, good, path="/admin")
        assert (await gw.http.get("/admin/keys")).status_code == 200
        gw.state.admin.clock = lambda: time.time() + 13 * 3600  # past the 12 h expiry
        assert (await gw.http.get("/admin/keys")).status_code == 303


async def test_failed_logins_are_logged_and_rate_limited(fake: FakeUpstream, tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gateway.admin")
    async with gateway_for(fake, tmp_path, extra=ADMIN) as gw:
        csrf = csrf_of((await gw.http.get("/admin/login")).text)
        for _ in range(5):
            answer = await gw.http.post("/admin/login", data={"token": "guess-" + "x" * 20, "csrf": csrf})
            assert answer.status_code == 401
        # Now even the right token waits: the window has to pass first.
        blocked = await gw.http.post("/admin/login", data={"token": ADMIN_TOKEN, "csrf": csrf})
        assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) > 0
        assert "Too many failed logins" in blocked.text
        failures = [r for r in caplog.records if "admin login failed from" in r.getMessage()]
        assert len(failures) == 5 and "guess-" not in caplog.text  # the attempt itself is never logged
        gw.state.admin.clock = lambda: time.time() + 301
        assert (await gw.http.post("/admin/login", data={"token": ADMIN_TOKEN, "csrf": csrf})).status_code == 303


async def test_every_state_changing_form_needs_its_csrf_token(fake: FakeUpstream, tmp_path: Path) -> None:
    async with gateway_for(fake, tmp_path, extra=ADMIN) as gw:
        # The login form's token is bound to the nonce cookie it was served with.
        assert (await gw.http.post("/admin/login", data={"token": ADMIN_TOKEN, "csrf": "x"})).status_code == 403
        csrf = await login(gw.http)
        row = await gw.store.find_key("t")
        assert row is not None
        for path, data in (("/admin/keys", {"name": "sneaky"}), (f"/admin/keys/{row.id}", {"rpm": "1"}),
                           (f"/admin/keys/{row.id}/revoke", {}), ("/admin/logout", {})):
            for token in (None, "0" * 64, csrf[:-1]):
                answer = await gw.http.post(path, data={**data, **({"csrf": token} if token else {})})
                assert answer.status_code == 403, (path, token)
                assert "security token" in answer.text
        assert await gw.store.find_key("sneaky") is None
        row = await gw.store.find_key("t")
        assert row is not None and row.rpm is None and row.revoked_at is None
        assert (await gw.http.get("/admin")).status_code == 200  # still logged in


# ----------------------------------------------------------------------------- the admin token itself


async def test_generated_token_is_printed_once_stored_hashed_and_opens_both_doors(
        fake: FakeUpstream, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    async with gateway_for(fake, tmp_path) as gw:
        printed = capfd.readouterr().err
        token = re.search(r"^\s{4}(\S{40,})$", printed, re.M)
        assert token, printed
        secret = token.group(1)
        stored = await gw.store.admin_setting("token_hash")
        assert stored and secret not in stored
        api = await gw.http.get("/admin/api/usage", headers={"authorization": f"Bearer {secret}"})
        assert api.status_code == 200
        assert (await gw.http.get("/admin/api/usage", headers={"authorization": f"Bearer {gw.key}"})).status_code == 401
        await login(gw.http, secret)
        # A second start on the same database keeps the token and prints nothing.
        again = create_app(load_config_file(tmp_path / "config.toml"), store=gw.store)
        await again.state.start()
        await again.state.stop()
        assert "generated the admin token" not in capfd.readouterr().err


async def test_a_configured_token_replaces_the_generated_one(fake: FakeUpstream, tmp_path: Path,
                                                             capfd: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "first").mkdir()
    async with gateway_for(fake, tmp_path / "first"):
        generated = re.search(r"^\s{4}(\S{40,})$", capfd.readouterr().err, re.M)
    assert generated
    store = await SqliteStore.open(tmp_path / "first" / "data")
    config = tmp_path / "first" / "config.toml"
    config.write_text(config.read_text() + ADMIN)
    app = create_app(load_config_file(config), store=store)
    await app.state.start()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as http:
            bearer = {"authorization": f"Bearer {generated.group(1)}"}
            assert (await http.get("/admin/api/usage", headers=bearer)).status_code == 401
            await login(http)
    finally:
        await app.state.stop()
        await store.close()


# --------------------------------------------------------------------------------------------- keys


async def test_create_edit_and_revoke_a_key_like_the_cli(fake: FakeUpstream, tmp_path: Path) -> None:
    fake.default = by_provider(a=OK)
    async with admin_for(fake, tmp_path, PRICED) as (gw, csrf):
        created = await gw.http.post("/admin/keys", data={
            "csrf": csrf, "name": "web", "budget_usd": "2.5", "budget_period": "week", "rpm": "30", "tpm": "",
            "models": "a/*, pair", "expires": "2099-01-31", "project": "site"})
        assert created.status_code == 200
        secret = re.search(r'id="secret" readonly value="(sk-proxy-[^"]+)"', created.text)
        assert secret, created.text
        row = await gw.store.find_key("web")
        assert row is not None
        assert (row.budget_usd, row.budget_period, row.rpm, row.tpm, row.models, row.project) == (
            2.5, "week", 30, None, ["a/*", "pair"], "site")
        # The key works at once (no waiting for the key watcher), and the list never shows its secret.
        client = openai.AsyncOpenAI(base_url="http://gateway/v1", api_key=secret.group(1), http_client=gw.http,
                                    max_retries=0)
        await client.chat.completions.create(model="a/m", messages=USER)
        listed = await gw.http.get("/admin/keys")
        assert "web" in listed.text and secret.group(1) not in listed.text and row.prefix in listed.text
        assert "30 req/min" in listed.text and "a/*, pair" in listed.text and "2099-01-31" in listed.text

        form = await gw.http.get(f"/admin/keys/{row.id}")
        assert 'value="30"' in form.text and 'value="2099-01-31"' in form.text
        bad = await gw.http.post(f"/admin/keys/{row.id}", data={"csrf": csrf, "rpm": "lots", "budget_period": "week"})
        assert bad.status_code == 400 and "Requests / min must be a whole number" in bad.text
        negative = await gw.http.post(f"/admin/keys/{row.id}", data={"csrf": csrf, "rpm": "-1"})
        assert negative.status_code == 400 and "must be a positive number" in negative.text
        saved = await gw.http.post(f"/admin/keys/{row.id}", data={
            "csrf": csrf, "budget_usd": "", "budget_period": "month", "rpm": "5", "models": "", "expires": "",
            "project": "site"})
        assert saved.status_code == 303 and saved.headers["location"] == f"/admin/keys?updated={row.id}"
        edited = await gw.store.find_key(row.id)
        assert edited is not None and (edited.budget_usd, edited.rpm, edited.models, edited.expires_at) == (
            None, 5, None, None)
        assert "Key “web” updated." in (await gw.http.get(saved.headers["location"])).text
        assert gw.state.governor.headers(next(p for p in gw.state.keys.principals if p.key_id == row.id),
                                         time.time())["x-ratelimit-limit-requests"] == "5"

        dupe = await gw.http.post("/admin/keys", data={"csrf": csrf, "name": "web"})
        assert dupe.status_code == 400 and "already exists" in dupe.text
        blank = await gw.http.post("/admin/keys", data={"csrf": csrf, "name": "  "})
        assert blank.status_code == 400 and "non-empty name" in blank.text

        revoked = await gw.http.post(f"/admin/keys/{row.id}/revoke", data={"csrf": csrf})
        assert revoked.status_code == 303
        assert "Key “web” revoked." in (await gw.http.get(revoked.headers["location"])).text
        with pytest.raises(openai.AuthenticationError):
            await client.chat.completions.create(model="a/m", messages=USER)


async def test_config_keys_are_read_only(fake: FakeUpstream, tmp_path: Path) -> None:
    extra = '\n[[keys]]\nname = "ci"\nkey = "sk-proxy-config-declared-0123456789"\nrpm = 7\n'
    async with admin_for(fake, tmp_path, extra) as (gw, csrf):
        listed = (await gw.http.get("/admin/keys")).text
        assert "ci" in listed and "config.toml" in listed and "read-only" in listed
        assert "/admin/keys/cfg_ci" not in listed and "sk-proxy-config-declared" not in listed
        assert (await gw.http.get("/admin/keys/cfg_ci")).status_code == 404
        assert (await gw.http.post("/admin/keys/cfg_ci", data={"csrf": csrf, "rpm": "1"})).status_code == 404
        assert (await gw.http.post("/admin/keys/cfg_ci/revoke", data={"csrf": csrf})).status_code == 404
        clash = await gw.http.post("/admin/keys", data={"csrf": csrf, "name": "ci"})
        assert clash.status_code == 400 and "declared in the config file" in clash.text


# -------------------------------------------------------------------------------------------- pages


async def test_overview_and_usage_show_the_numbers(fake: FakeUpstream, tmp_path: Path) -> None:
    async with admin_for(fake, tmp_path) as (gw, _):
        now = time.time()
        await gw.store.write_requests([
            record(ts=now, key_id="k1", key_name="alpha", requested_model="a/m", project="p1"),
            record(ts=now, key_id="k1", key_name="alpha", provider="b", model="n", cost_total=1.0),
            record(ts=now, key_id="k2", key_name="beta", status=502, provider=None, model=None, cost_total=None,
                   prompt_tokens=0, completion_tokens=0),
            record(ts=now - 40 * 86400, key_id="k2", key_name="beta", cost_total=9.0),  # outside the default range
        ])
        overview = (await gw.http.get("/admin")).text
        assert "$1.25" in overview and "33%" in overview  # today: 3 requests, 1 error
        assert overview.index("alpha") < overview.index("beta")  # top keys by spend
        assert 'data-points="30"' in overview  # 30 days of bars, empty ones included

        usage = (await gw.http.get("/admin/usage")).text
        assert "alpha" in usage and "$1.25" in usage and "$9.00" not in usage
        by_model = (await gw.http.get("/admin/usage?by=model&key=k1")).text
        assert "a/m" in by_model and "b/n" in by_model and "beta" not in by_model.split("<tbody>")[1]
        by_project = (await gw.http.get("/admin/usage?by=project&project=p1")).text
        assert "p1" in by_project and "$0.25" in by_project
        old = (await gw.http.get("/admin/usage?since=2000-01-01&until=2000-01-31")).text
        assert "No usage matches these filters" in old and "No data in this range yet" in old
        wrong = await gw.http.get("/admin/usage?since=yesterday&by=colour")
        assert wrong.status_code == 200 and "showing the default range" in wrong.text

        csv = await gw.http.get("/admin/usage?by=model&format=csv")
        assert csv.headers["content-type"].startswith("text/csv")
        assert "attachment" in csv.headers["content-disposition"]
        lines = csv.text.splitlines()
        assert lines[0].startswith("model,requests,errors") and len(lines) == 3


async def test_requests_are_paged_and_show_their_routing_trail(fake: FakeUpstream, tmp_path: Path) -> None:
    fake.default = by_provider(a=err(503), b=OK)
    async with admin_for(fake, tmp_path, routing="retries = 0") as (gw, _):
        await gw.client.chat.completions.create(model="pair", messages=USER)
        await written(gw, 1)
        first = (await gw.http.get("/admin/requests")).text
        link = re.search(r'href="/admin/requests/(\d+)"', first)
        assert link
        detail = (await gw.http.get(f"/admin/requests/{link.group(1)}")).text
        trail = detail.split("Routing trail")[1]
        assert trail.index("503") < trail.index("200") and "used" in trail and "server_error" in trail
        assert "store_bodies = true" in detail  # bodies are off by default
        assert (await gw.http.get("/admin/requests/999999")).status_code == 404

        await gw.store.write_requests([record(request_id=f"req_bulk_{i}") for i in range(120)])
        page = (await gw.http.get("/admin/requests")).text
        assert page.count('href="/admin/requests/') == 50
        older = re.search(r'href="/admin/requests\?(before=\d+)"', page)
        assert older
        second = (await gw.http.get(f"/admin/requests?{older.group(1)}")).text
        assert second.count('href="/admin/requests/') == 50 and "Newest" in second
        only = (await gw.http.get("/admin/requests?key=k1")).text
        assert only.count('href="/admin/requests/') == 50 and "k1" in only


async def test_bodies_are_stored_only_when_asked_and_only_unstreamed(fake: FakeUpstream, tmp_path: Path) -> None:
    # b streams (a JSON body where a stream belongs is an invalid upstream answer, no longer an empty stream).
    fake.default = by_provider(a=OK, b=sse_reply(fixture_bytes("openai/openai-python-stream-text.sse")))
    async with admin_for(fake, tmp_path, "\n[logging]\nstore_bodies = true\n") as (gw, _):
        await gw.client.chat.completions.create(model="a/m", messages=[{"role": "user", "content": HOSTILE}])
        async for _ in await gw.client.chat.completions.create(model="b/m", messages=USER, stream=True):
            pass
        await written(gw, 2)
        async with gw.store._conn.execute("SELECT id, stream, request_body, response_body FROM requests "
                                          "ORDER BY id") as cur:
            rows = await cur.fetchall()
        (plain_id, _, request_body, response_body), (stream_id, streamed, no_body, no_answer) = rows
        assert HOSTILE.replace('"', '\\"') in request_body and '"content":"ok"' in response_body.replace(" ", "")
        assert streamed == 1 and no_body is None and no_answer is None
        detail = (await gw.http.get(f"/admin/requests/{plain_id}")).text
        assert "&lt;script&gt;alert(" in detail and HOSTILE not in detail
        assert "not stored" in (await gw.http.get(f"/admin/requests/{stream_id}")).text.lower()


async def test_providers_show_circuits_latency_and_errors_without_secrets(fake: FakeUpstream,
                                                                          tmp_path: Path) -> None:
    secret = "sk-upstream-admin-page-never-shows-0123456789"
    leak = json_reply({"error": {"message": f"Incorrect API key provided: {secret}", "type": "server_error"}},
                      status=500)
    fake.default = by_provider(a=OK, s=leak)
    extra = f'\n[providers.s]\ntype = "openai"\nbase_url = "{fake.base}/s/v1"\napi_key = "{secret}"\n'
    async with admin_for(fake, tmp_path, extra, ) as (gw, _):
        await gw.client.chat.completions.create(model="a/m", messages=USER)
        with pytest.raises(openai.APIError):
            await gw.client.chat.completions.create(model="s/m", messages=USER)
        with pytest.raises(openai.APIError):
            await gw.client.chat.completions.create(model="dead/m", messages=USER)
        await written(gw, 3)
        page = (await gw.http.get("/admin/providers")).text
        assert secret not in page and "Incorrect API key provided: ••••••••" in page
        section = page.split("<h2>a ")[1].split("</section>")[0]
        assert "a/m" in section and "closed" in section and " ms" in section
        dead = page.split("<h2>dead ")[1].split("</section>")[0]
        assert "dead/m" in dead and "100%" in dead


async def test_config_page_masks_every_secret(fake: FakeUpstream, tmp_path: Path) -> None:
    secrets = ["sk-provider-key-0123456789abcdef", "sk-proxy-declared-in-config-0123456789",
               "Bearer hdr-token-0123456789abcdefghij", "a1b2c3d4e5f6a1b2c3d4e5f6a1b2c3d4", ADMIN_TOKEN]
    extra = f"""
[providers.keyed]
type = "openai"
base_url = "https://user:pw-in-url@example.test/v1?key=also-secret"
api_key = "{secrets[0]}"
headers = {{ "Authorization" = "{secrets[2]}", "X-Opaque" = "{secrets[3]}", "HTTP-Referer" = "https://site.example" }}

[[keys]]
name = "ci"
key = "{secrets[1]}"
"""
    async with admin_for(fake, tmp_path, extra) as (gw, _):
        page = (await gw.http.get("/admin/config")).text
        for secret in [*secrets, "pw-in-url", "also-secret"]:
            assert secret not in page, secret
        assert "https://site.example" in page and "••••••••" in page and str(tmp_path / "config.toml") in page
        assert "loaded at start" in page
        # A rejected reload is shown with its message (and the old config keeps serving).
        path = tmp_path / "config.toml"
        path.write_text(path.read_text() + '\n[routing]\nretries = -1\n')
        gw.state.reload()
        page = (await gw.http.get("/admin/config")).text
        assert "rejected" in page and "routing" in page


async def test_hostile_names_are_escaped_everywhere(fake: FakeUpstream, tmp_path: Path) -> None:
    model = '<img src=x onerror=alert(1)>'
    async with admin_for(fake, tmp_path) as (gw, csrf):
        created = await gw.http.post("/admin/keys", data={"csrf": csrf, "name": HOSTILE, "project": HOSTILE,
                                                          "models": model})
        assert created.status_code == 200
        row = await gw.store.find_key(HOSTILE)
        assert row is not None
        await gw.store.write_requests([record(key_id=row.id, key_name=HOSTILE, requested_model=model, provider="a",
                                              model=model, project=HOSTILE, error_type=HOSTILE, status=400)])
        pages = [*PAGES, f"/admin/keys/{row.id}", "/admin/requests/1", f"/admin/usage?by=model&key={row.id}",
                 "/admin/usage?by=project"]
        seen = ""
        for path in pages:
            text = (await gw.http.get(path)).text
            assert HOSTILE not in text and model not in text, path
            seen += text
        assert created.text.count("&lt;script&gt;") >= 1
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in seen
        assert "&lt;img src=x onerror=alert(1)&gt;" in seen


async def test_static_files_are_served_with_an_etag(fake: FakeUpstream, tmp_path: Path) -> None:
    async with gateway_for(fake, tmp_path, extra=ADMIN) as gw:
        css = await gw.http.get("/admin/static/admin.css")
        assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
        again = await gw.http.get("/admin/static/admin.css", headers={"if-none-match": css.headers["etag"]})
        assert again.status_code == 304
        assert (await gw.http.get("/admin/static/admin.js")).headers["content-type"].startswith("text/javascript")
        assert (await gw.http.get("/admin/static/nope.css")).status_code == 404
        assert (await gw.http.get("/admin/static/..%2Fapp.py")).status_code == 404
