"""Health state a hostile key holder must not control: one request never takes a provider away from
everyone, and names a client makes up never grow the health book without bound."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest

import gateway.health
from gateway.config import RoutingConfig
from gateway.health import PROVIDER_KEY_STRIKES, UNROUTED_CIRCUITS, HealthBook, key_rejected
from tests.fakes import FakeUpstream, Received, Reply, json_reply
from tests.inprocess import OK, gateway_for, paths

USER = [{"role": "user", "content": "Hello"}]
BAD_KEY = json_reply({"error": {"message": "Incorrect API key provided: sk-abc****. You can find your API key at "
                                "https://platform.openai.com/account/api-keys.", "type": "invalid_request_error",
                                "code": "invalid_api_key"}}, status=401)


def _body(error: object) -> bytes:
    return json.dumps({"error": error}).encode()


@pytest.mark.parametrize(("status", "body", "counts"), [
    (401, _body({"message": "Incorrect API key provided", "code": "invalid_api_key"}), True),
    (401, _body({"type": "authentication_error", "message": "invalid x-api-key"}), True),  # Anthropic
    (400, _body({"code": 400, "status": "INVALID_ARGUMENT", "message": "API key not valid.",
                 "details": [{"reason": "API_KEY_INVALID"}]}), False),  # Gemini's 400 is not a 401/403
    (403, _body({"code": 403, "status": "PERMISSION_DENIED", "message": "Permission denied on the key"}), True),
    (401, b'{"detail": "Unauthorized"}', True),  # no code, nothing about a model: the usual bad-key answer
    (401, b"", True),
    (401, b"<html>401 Authorization Required</html>", True),
    (401, _body({"message": "boom", "type": "server_error"}), True),  # a 401 is about authentication anyway
    (404, _body({"message": "The model `x` does not exist", "code": "model_not_found"}), False),
    (401, _body({"message": "You do not have access to the model gpt-x", "code": "invalid_api_key"}), False),
    (401, _body({"message": "no access", "code": "model_access_denied"}), False),
    (403, _body({"message": "gpt-x is not allowed for this project", "type": "permission_error"}), False),
    (403, _body({"message": "region not supported"}), False),  # a bare 403 may be about anything
])
def test_what_counts_as_the_provider_refusing_its_key(status: int, body: bytes, counts: bool) -> None:
    assert key_rejected(status, body, "gpt-x") is counts


def test_one_request_never_marks_a_provider_down() -> None:
    book = HealthBook(RoutingConfig(circuit_window_s=60, circuit_cooldown_s=30))
    book.set_routed(["a/m", "a/n"])
    # Unrouted names (made up by a client) never count, however many requests.
    for i in range(50):
        assert not book.key_refused("a", f"a/made-up-{i}", f"req_x{i}", 1.0, "401")
    assert book.available("a/m", "a", 1.0)
    # One request failing on every target of the provider is one strike, not several.
    for target in ("a/m", "a/n", "a/m"):
        assert not book.key_refused("a", target, "req_1", 2.0, "401")
    assert book.available("a/m", "a", 2.0)
    # Strikes older than the window age out.
    assert not book.key_refused("a", "a/m", "req_2", 3.0, "401")
    assert not book.key_refused("a", "a/m", "req_3", 100.0, "401")
    assert book.available("a/m", "a", 100.0)
    marks = [book.key_refused("a", "a/n", f"req_{i}", 101.0, "401") for i in range(4, 4 + PROVIDER_KEY_STRIKES - 1)]
    assert marks[-1] and not book.available("a/m", "a", 101.0)
    assert book.available("a/m", "a", 132.0)  # the cooldown passes


def test_circuits_of_made_up_names_are_bounded_and_routed_ones_kept() -> None:
    book = HealthBook(RoutingConfig(circuit_failures=1))
    book.set_routed(["a/m"])
    book.circuit("a/m").record(0.0, False, error="boom")
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(30_000):
        book.circuit(f"a/unique-{i}").record(1.0, False, error="HTTP 404 " + "x" * 100)
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert len(book.circuits) == UNROUTED_CIRCUITS + 1
    assert book.circuits["a/m"].state == "open"  # a flood of names does not evict a routed target's state
    assert "a/unique-29999" in book.circuits and "a/unique-0" not in book.circuits
    assert grown < 8 * 1024 * 1024, f"{grown / 2**20:.1f} MiB for 30,000 names"
    # A reload that drops a name drops its state too.
    book.set_routed(["a/n"])
    assert book.circuits == {}


def _by_model(**replies: Reply) -> object:
    def choose(received: Received) -> Reply:
        return replies.get(received.json().get("model", ""), OK)
    return choose


async def test_a_crafted_model_name_answering_401_leaves_the_provider_up(fake: FakeUpstream, tmp_path: Path) -> None:
    fake.default = _by_model(evil=BAD_KEY)  # type: ignore[assignment]
    async with gateway_for(fake, tmp_path, routing="retries = 0") as gw:
        for _ in range(PROVIDER_KEY_STRIKES + 2):
            answer = await gw.http.post("/v1/chat/completions", json={"model": "a/evil", "messages": USER},
                                        headers={"authorization": f"Bearer {gw.key}"})
            assert answer.status_code == 502
        fake.received.clear()
        await gw.client.chat.completions.create(model="pair", messages=USER)
    assert paths(fake) == ["a"]  # still first choice: a made-up name never counts against the provider


async def test_a_401_about_the_model_does_not_count(fake: FakeUpstream, tmp_path: Path) -> None:
    about_model = json_reply({"error": {"message": "You are not allowed to sample from model m",
                                        "type": "invalid_request_error", "code": "invalid_api_key"}}, status=401)
    fake.default = lambda received: about_model if received.path.startswith("/a/") else OK
    async with gateway_for(fake, tmp_path, routing="retries = 0") as gw:
        for _ in range(PROVIDER_KEY_STRIKES + 1):
            await gw.client.chat.completions.create(model="pair", messages=USER)
    assert paths(fake) == ["a", "b"] * (PROVIDER_KEY_STRIKES + 1)


async def test_the_provider_goes_down_after_several_requests_see_its_key_refused(fake: FakeUpstream,
                                                                                tmp_path: Path) -> None:
    fake.default = lambda received: BAD_KEY if received.path.startswith("/a/") else OK
    async with gateway_for(fake, tmp_path, routing="retries = 0") as gw:
        for _ in range(PROVIDER_KEY_STRIKES + 2):
            await gw.client.chat.completions.create(model="pair", messages=USER)
        assert "a" in gw.state.health.provider_down
    assert paths(fake) == ["a", "b"] * PROVIDER_KEY_STRIKES + ["b", "b"]


async def test_many_made_up_names_through_the_gateway_stay_bounded(fake: FakeUpstream, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gateway.health, "UNROUTED_CIRCUITS", 20)
    async with gateway_for(fake, tmp_path) as gw:
        for i in range(60):
            await gw.client.chat.completions.create(model=f"a/made-up-{i}", messages=USER)
        await gw.client.chat.completions.create(model="pair", messages=USER)
        circuits = gw.state.health.circuits
        assert len(circuits) <= 20 + 1 and "a/m" in circuits and "a/made-up-59" in circuits
