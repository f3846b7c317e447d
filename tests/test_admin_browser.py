"""The admin page in a real browser: Debian's chromium driven by Playwright, against a gateway served by
granian in its own process. Log in, create a key, use it, watch usage and the chart change, revoke it;
a screenshot of every page lands in the test's tmp_path (``screenshots/``)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import gateway_env, wait_ready
from tests.fakes import FakeUpstream, free_port

pytestmark = pytest.mark.slow

ADMIN_TOKEN = "browser-admin-token-0123456789"
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


# Text cells, links and buttons whose box reaches past the right edge of the window, or that sit in a
# box that scrolls sideways (so part of them is out of sight until the user happens to scroll).
OUT_OF_SIGHT = """() => {
  const hidden = [];
  for (const el of document.querySelectorAll("nav a, td, th, button, main a")) {
    const box = el.getBoundingClientRect();
    if (box.width === 0 && box.height === 0) continue;
    if (box.right > window.innerWidth + 1) hidden.push(el.tagName + ": " + el.innerText.slice(0, 40));
  }
  for (const el of document.querySelectorAll("nav, .table-wrap")) {
    if (el.scrollWidth > el.clientWidth + 1) hidden.push("scrolls sideways: " + el.className + el.tagName);
  }
  return hidden;
}"""
# Config option names drawn on more than one line (broken mid-word).
WRAPPED_OPTION_NAMES = """() => [...document.querySelectorAll("table.config th")].filter((th) => {
  const range = document.createRange();
  range.selectNodeContents(th);
  return range.getClientRects().length > 1;
}).map((th) => th.innerText)"""


def chromium_or_skip() -> tuple[Any, str]:
    """Playwright's sync API and a browser to drive, or a skip that says what is missing."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("Playwright is not installed: python3 -m pip install -e '.[test]'")
    for candidate in (shutil.which("chromium"), "/usr/bin/chromium", shutil.which("chromium-browser")):
        if candidate and Path(candidate).is_file():
            return sync_playwright, candidate
    pytest.skip("No chromium to drive: .ci/run installs Debian's (apt-get install chromium), and it could not "
                "be installed on this machine")


@pytest.fixture
def served(fake: FakeUpstream, tmp_path: Path) -> Iterator[str]:
    config = tmp_path / "config.toml"
    config.write_text(f"""
[server]
data_dir = "{tmp_path / 'data'}"

[providers.fake]
type = "openai"
base_url = "{fake.base}/v1"
api_key = "sk-upstream-browser-secret-0123456789"

[[models]]
name = "gpt-4o-mini"
provider = "fake"
pricing = {{ input = 150.0, output = 600.0 }}

[admin]
token = "{ADMIN_TOKEN}"
""")
    port = free_port()
    with (tmp_path / "gateway.log").open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--config", str(config), "--port",
                                 str(port)], stdout=log, stderr=subprocess.STDOUT, env=gateway_env())
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc)
        yield base
    finally:
        proc.terminate()
        proc.wait(10)


def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_admin_in_a_real_browser(served: str, tmp_path: Path) -> None:
    sync_playwright, chromium = chromium_or_skip()
    shots = tmp_path / "screenshots"
    shots.mkdir()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 860})
        page = context.new_page()
        errors: list[str] = []
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)

        def shot(name: str) -> None:
            page.screenshot(path=str(shots / f"{name}.png"), full_page=True)

        def usage_of(name: str) -> str:
            page.goto(f"{served}/admin/usage")
            row = page.locator("table tbody tr", has_text=name)
            return row.locator("td").nth(1).inner_text() if row.count() else "0"

        # Log in: the admin sends a stranger to the login form, and back after it.
        page.goto(f"{served}/admin/usage")
        assert page.url.startswith(f"{served}/admin/login")
        shot("01-login")
        page.fill("input[name=token]", "not-the-token-at-all")
        page.click("button[type=submit]")
        assert page.locator(".alert.bad").inner_text() == "That is not the admin token."
        page.fill("input[name=token]", ADMIN_TOKEN)
        page.click("button[type=submit]")
        page.wait_for_url(f"{served}/admin/usage")
        assert page.locator("figure.chart svg .empty").count() == 1  # nothing spent yet
        page.goto(f"{served}/admin")
        shot("02-overview-empty")

        # Create a key: its secret is shown once, with a copy button (the page's one script).
        page.goto(f"{served}/admin/keys")
        page.fill("input[name=name]", "browser-key")
        page.fill("input[name=budget_usd]", "5")
        page.fill("input[name=rpm]", "60")
        page.click("form.grid-form button[type=submit]")
        secret = page.input_value("#secret")
        assert secret.startswith("sk-proxy-")
        assert page.locator("button[data-copy=secret]").is_visible()
        assert page.input_value("#base-url") == f"{served}/v1"  # the full URL, not a bare /v1
        shot("03-key-created")
        page.goto(f"{served}/admin/keys")
        row = page.locator("table.keys tbody tr", has_text="browser-key")
        assert "active" in row.inner_text() and "60 req/min" in row.inner_text()
        assert secret not in page.content()

        # Use it: the usage table and the chart show the requests.
        client = openai.OpenAI(base_url=f"{served}/v1", api_key=secret, max_retries=0)
        for _ in range(3):
            client.chat.completions.create(model="fake/gpt-4o-mini", max_tokens=50,
                                           messages=[{"role": "user", "content": "Hi"}])
        eventually(lambda: usage_of("browser-key") == "3")
        assert page.locator("figure.chart svg .empty").count() == 0
        tallest = max(float(bar.get_attribute("height") or 0) for bar in page.locator("svg rect.bar").all())
        assert tallest > 0
        shot("04-usage")
        page.goto(f"{served}/admin/keys")
        assert "$0.0" in page.locator("table.keys tbody tr", has_text="browser-key").inner_text()
        shot("05-keys")
        page.goto(f"{served}/admin")
        assert page.locator(".cards .card").first.locator("dd").first.inner_text() == "3"
        shot("06-overview")
        page.goto(f"{served}/admin/providers")
        assert "fake/gpt-4o-mini" in page.content()
        shot("07-providers")
        page.goto(f"{served}/admin/requests")
        shot("08-requests")
        page.locator("table.requests tbody tr a").first.click()
        assert "Routing trail" in page.content()
        shot("09-request")
        page.goto(f"{served}/admin/config")
        assert "sk-upstream-browser-secret" not in page.content() and ADMIN_TOKEN not in page.content()
        shot("10-config")

        # The edit form: a wrong number is named as the form names it, and its buttons stand apart.
        page.goto(f"{served}/admin/keys")
        edit_path = page.locator("table.keys tbody tr", has_text="browser-key").locator(
            "a", has_text="edit").get_attribute("href")
        assert edit_path
        phone = browser.new_context(viewport={"width": 390, "height": 844}, storage_state=context.storage_state())
        mobile = phone.new_page()
        for view, name in ((page, "19-key-edit-error"), (mobile, "20-phone-key-edit-error")):
            view.goto(f"{served}{edit_path}")
            view.fill("input[name=rpm]", "ten")
            view.click("form.grid-form button[type=submit]")
            assert "Requests / min must be a whole number" in view.locator(".alert.bad").inner_text()
            view.screenshot(path=str(shots / f"{name}.png"), full_page=True)
            save, cancel = (view.locator(".form-actions > *").nth(i).bounding_box() for i in (0, 1))
            assert save and cancel
            apart = cancel["x"] - (save["x"] + save["width"]) if cancel["y"] == save["y"] else cancel["y"] - (
                save["y"] + save["height"])
            assert apart >= 8, f"the form's buttons touch ({apart} px apart)"

        # Revoke it (after the confirmation the script asks for): the key stops working at once.
        page.goto(f"{served}/admin/keys")
        page.once("dialog", lambda dialog: dialog.accept())
        page.locator("table.keys tbody tr", has_text="browser-key").locator("button", has_text="Revoke").click()
        page.wait_for_url(f"{served}/admin/keys?revoked=*")
        assert "Key “browser-key” revoked." in page.locator(".alert.ok").inner_text()
        shot("11-keys-revoked")
        with pytest.raises(openai.AuthenticationError):
            client.chat.completions.create(model="fake/gpt-4o-mini", max_tokens=50,
                                           messages=[{"role": "user", "content": "Hi"}])

        # A phone's viewport: the same pages, one column, nothing out of sight.
        for name, path in (("12-phone-overview", "/admin"), ("13-phone-keys", "/admin/keys"),
                           ("14-phone-usage", "/admin/usage"), ("15-phone-providers", "/admin/providers"),
                           ("16-phone-requests", "/admin/requests"), ("17-phone-config", "/admin/config"),
                           ("18-phone-key-edit", edit_path)):
            mobile.goto(f"{served}{path}")
            mobile.screenshot(path=str(shots / f"{name}.png"), full_page=True)
            width = mobile.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, f"{path} scrolls sideways on a phone ({width} px)"
            assert mobile.evaluate(OUT_OF_SIGHT) == [], f"{path}: cut off on a phone"
        mobile.goto(f"{served}/admin/config")
        assert mobile.evaluate(WRAPPED_OPTION_NAMES) == []

        # Log out: the session cookie no longer opens anything.
        page.click("form.logout button")
        page.wait_for_url(f"{served}/admin/login")
        browser.close()
    # The only failed loads: the wrong token's 401 and the wrong number's 400.
    assert [e for e in errors if "401" not in e and "400" not in e] == []
    assert httpx.get(f"{served}/admin", follow_redirects=False).status_code == 303
    print(f"screenshots: {shots}")
