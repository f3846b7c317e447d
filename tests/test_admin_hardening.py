"""The admin side attacked: token guessing on the API, hostile cookies, spreadsheet formulas in exports,
pages swollen by made-up names, and the small-screen details of the page."""

from __future__ import annotations

import csv
import io
import re
import time
from pathlib import Path

import pytest

import gateway.health
from gateway.admin.auth import LOGIN_COOKIE, SESSION_COOKIE
from tests.fakes import FakeUpstream
from tests.inprocess import gateway_for
from tests.test_admin import ADMIN, ADMIN_TOKEN, admin_for, csrf_of, record

FORMULAS = ["=HYPERLINK(\"http://evil\",\"x\")", "+1+1", "-2+3", "@SUM(A1)", "\tcmd", "\rcmd"]


# --------------------------------------------------------------------------------------- API token


async def test_admin_api_token_guessing_is_throttled_like_the_login(fake: FakeUpstream, tmp_path: Path) -> None:
    async with gateway_for(fake, tmp_path, extra=ADMIN) as gw:
        answers = [(await gw.http.get("/admin/api/usage", headers={"authorization": f"Bearer guess-{i}"})).status_code
                   for i in range(20)]
        assert answers == [401] * 5 + [429] * 15
        blocked = await gw.http.get("/admin/api/usage", headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
        assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) > 0
        assert blocked.json()["error"]["code"] == "admin_token_throttled"
        # The login form shares the book: the guesser cannot switch doors.
        form = await gw.http.get("/admin/login")
        login = await gw.http.post("/admin/login", data={"token": ADMIN_TOKEN, "csrf": csrf_of(form.text)})
        assert login.status_code == 429
        gw.state.admin.clock = lambda: time.time() + 301
        ok = await gw.http.get("/admin/api/usage", headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
        assert ok.status_code == 200


async def test_right_tokens_are_never_throttled(fake: FakeUpstream, tmp_path: Path) -> None:
    async with gateway_for(fake, tmp_path, extra=ADMIN) as gw:
        for _ in range(3):
            for i in range(4):  # a few mistakes, then the right one: forgiven each time
                await gw.http.get("/admin/api/usage", headers={"authorization": f"Bearer typo-{i}"})
            ok = await gw.http.get("/admin/api/usage", headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
            assert ok.status_code == 200


# ----------------------------------------------------------------------------------------- cookies


@pytest.mark.parametrize("cookie", ["é", "abc.123.é", "a.9999999999.ü" + "0" * 63, "☃.☃.☃", "\x7f.1.x"])
async def test_a_non_ascii_session_cookie_is_a_login_redirect_not_a_500(fake: FakeUpstream, tmp_path: Path,
                                                                        cookie: str) -> None:
    async with gateway_for(fake, tmp_path, extra=ADMIN) as gw:
        raw = f"{SESSION_COOKIE}={cookie}".encode()
        for path in ("/admin", "/admin/keys", "/admin/login"):
            answer = await gw.http.get(path, headers={b"cookie": raw})
            assert answer.status_code in (200, 303), (path, answer.status_code)
        form = await gw.http.post("/admin/logout", headers={b"cookie": raw}, data={"csrf": "é"})
        assert form.status_code == 303


@pytest.mark.parametrize("nonce", ["é", "a;b", '"x y"', "<script>", "x" * 500])
async def test_a_hostile_login_nonce_is_replaced_not_echoed(fake: FakeUpstream, tmp_path: Path, nonce: str) -> None:
    async with gateway_for(fake, tmp_path, extra=ADMIN) as gw:
        form = await gw.http.get("/admin/login", headers={b"cookie": f"{LOGIN_COOKIE}={nonce}".encode()})
        assert form.status_code == 200
        fresh = form.cookies.get(LOGIN_COOKIE, path="/admin")
        assert fresh and fresh != nonce and re.fullmatch(r"[A-Za-z0-9_-]{16,64}", fresh)


# --------------------------------------------------------------------------------------------- CSV


def _cells(text: str) -> list[str]:
    return [row[0] for row in csv.reader(io.StringIO(text, newline=""))][1:]


async def test_csv_exports_neutralise_spreadsheet_formulas(fake: FakeUpstream, tmp_path: Path) -> None:
    async with admin_for(fake, tmp_path) as (gw, _):
        await gw.store.write_requests([record(request_id=f"r{i}", project=text, model=text)
                                       for i, text in enumerate(FORMULAS)])
        await gw.store.write_requests([record(request_id=f"f{i}", requested_model=text, provider=None, model=None,
                                              status=400, error_type="invalid_request_error")
                                       for i, text in enumerate(FORMULAS)])
        bearer = {"authorization": f"Bearer {ADMIN_TOKEN}"}
        by_project = [(await gw.http.get("/admin/usage?by=project&format=csv")).text,
                      (await gw.http.get("/admin/api/usage?by=project&format=csv", headers=bearer)).text]
        by_model = [(await gw.http.get("/admin/usage?by=model&format=csv")).text,
                    (await gw.http.get("/admin/api/usage?by=model&format=csv", headers=bearer)).text]
    for text in by_project:
        assert sorted(c for c in _cells(text) if c) == sorted("'" + f for f in FORMULAS), text
    for text in by_project + by_model:
        cells = _cells(text)
        assert len(cells) >= len(FORMULAS) and not [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")]


# ---------------------------------------------------------------------------------- per-name pages


async def test_providers_page_is_paginated_whatever_the_number_of_names(fake: FakeUpstream, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gateway.health, "UNROUTED_CIRCUITS", 5000)
    async with admin_for(fake, tmp_path) as (gw, _):
        for i in range(3000):
            gw.state.health.circuit(f"a/made-up-{i:05d}").record(time.monotonic(), False, error="HTTP 404 " + "x" * 80)
        page = await gw.http.get("/admin/providers")
        assert page.status_code == 200 and len(page.content) < 150_000, len(page.content)
        assert "a/made-up-00000" in page.text and "a/made-up-02999" not in page.text
        nxt = re.search(r'href="(/admin/providers\?page=\d+)"[^>]*>Next', page.text)
        assert nxt, "no link to the next page"
        second = await gw.http.get(nxt.group(1).replace("&amp;", "&"))
        assert "a/made-up-00100" in second.text and "a/made-up-00000" not in second.text
        last = await gw.http.get("/admin/providers?page=999")  # past the end: the last page
        assert "a/made-up-02999" in last.text
        for bad in ("0", "-1", "x", "99999999999999999999"):
            assert (await gw.http.get(f"/admin/providers?page={bad}")).status_code == 200
        overview = await gw.http.get("/admin")
        assert len(overview.content) < 100_000, len(overview.content)


async def test_usage_page_is_paginated_whatever_the_number_of_names(fake: FakeUpstream, tmp_path: Path) -> None:
    async with admin_for(fake, tmp_path) as (gw, _):
        await gw.store.write_requests([record(request_id=f"r{i}", model=f"made-up-{i:05d}", cost_total=1.0 + i)
                                       for i in range(3000)])
        page = await gw.http.get("/admin/usage?by=model")
        assert page.status_code == 200 and len(page.content) < 150_000, len(page.content)
        nxt = re.search(r'href="(/admin/usage\?[^"]*page=2[^"]*)"', page.text)
        assert nxt, "no link to the next page"
        second = await gw.http.get(nxt.group(1).replace("&amp;", "&"))
        assert second.status_code == 200 and "made-up-02899" in second.text and "made-up-02999" not in second.text
        # The CSV still has every row.
        assert len(_cells((await gw.http.get("/admin/usage?by=model&format=csv")).text)) == 3000


# ------------------------------------------------------------------------------------ page details


async def test_the_key_form_names_the_field_and_what_it_wants(fake: FakeUpstream, tmp_path: Path) -> None:
    async with admin_for(fake, tmp_path) as (gw, csrf):
        for field, value, said in (("rpm", "ten", "Requests / min must be a whole number"),
                                   ("tpm", "1.5", "Tokens / min must be a whole number"),
                                   ("budget_usd", "lots", "Budget (USD) must be a number of dollars")):
            answer = await gw.http.post("/admin/keys", data={"csrf": csrf, "name": f"k-{field}", field: value})
            assert answer.status_code == 400 and said in answer.text, answer.text
            assert "int number" not in answer.text and "float number" not in answer.text


async def test_the_key_created_page_gives_the_full_base_url(fake: FakeUpstream, tmp_path: Path) -> None:
    async with admin_for(fake, tmp_path) as (gw, csrf):
        answer = await gw.http.post("/admin/keys", data={"csrf": csrf, "name": "laptop"})
        assert answer.status_code == 200
        assert 'value="http://gateway/v1"' in answer.text


async def test_config_page_shows_whole_numbers_as_written(fake: FakeUpstream, tmp_path: Path) -> None:
    async with admin_for(fake, tmp_path, routing="circuit_window_s = 90") as (gw, _):
        page = (await gw.http.get("/admin/config")).text
    row = re.search(r"<th>routing\.circuit_window_s</th><td><code>([^<]*)</code>", page)
    assert row and row.group(1) == "90", row
    assert "<code>0.5</code>" in page  # a real fraction keeps its point (circuit_error_rate)


async def test_no_error_is_not_drawn_as_an_error(fake: FakeUpstream, tmp_path: Path) -> None:
    async with admin_for(fake, tmp_path) as (gw, _):
        await gw.client.chat.completions.create(model="a/m", messages=[{"role": "user", "content": "hi"}])
        page = (await gw.http.get("/admin/providers")).text
    assert re.search(r'<td class="muted no-error"[^>]*>—</td>', page)
    assert not re.search(r'class="[^"]*error-text[^"]*"[^>]*>—<', page)


async def test_browsers_opening_the_root_go_to_the_admin(fake: FakeUpstream, tmp_path: Path) -> None:
    async with gateway_for(fake, tmp_path, extra=ADMIN) as gw:
        browser = await gw.http.get("/", headers={"accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
        assert browser.status_code in (302, 303) and browser.headers["location"] == "/admin"
        for accept in (None, "application/json", "*/*"):
            api = await gw.http.get("/", headers={"accept": accept} if accept else {})
            assert api.status_code == 404 and api.json()["error"]["code"] == "not_found"
