"""GET /metrics against a real `gateway serve`: exact counts after a mixed workload, read with
prometheus_client's own parser; two workers counted once; the endpoint's protection."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import UPSTREAM_KEY, gateway_env, wait_ready
from tests.fakes import FakeUpstream, fixture_bytes, free_port, json_reply, sse_reply

MAIN_KEY = "sk-proxy-metrics-main-0123456789abcdef"
LIMITED_KEY = "sk-proxy-metrics-limited-0123456789abcdef"
METRICS_TOKEN = "metrics-token-0123456789abcdef"


def config_text(fake: FakeUpstream, data_dir: Path, *, workers: int = 1, extra: str = "") -> str:
    limited = "" if workers > 1 else f"""
[[keys]]
name = "limited"
key = "{LIMITED_KEY}"
rpm = 1
"""
    return f"""
[server]
data_dir = "{data_dir}"
workers = {workers}

[routing]
retries = 0
reload_interval_s = 0.2

[providers.listed]
type = "openai"
base_url = "{fake.base}/v1"
api_key = "{UPSTREAM_KEY}"
models = ["gpt-4o-mini"]

[providers.backup]
type = "openai"
base_url = "{fake.base}/v1"
api_key = "{UPSTREAM_KEY}"
models = ["gpt-4o-mini"]

[providers.open]  # no model list: any name passes through
type = "openai"
base_url = "{fake.base}/v1"
api_key = "{UPSTREAM_KEY}"

[routes.pair]
targets = ["listed/gpt-4o-mini", "backup/gpt-4o-mini"]
strategy = "fallback"

[[keys]]
name = "main"
key = "{MAIN_KEY}"
{limited}
{extra}
"""


@contextmanager
def serve(config: Path, *extra_args: str) -> Iterator[tuple[str, Path]]:
    port = free_port()
    log = config.parent / f"gateway-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--config", str(config), "--port",
                                 str(port), *extra_args], stdout=out, stderr=subprocess.STDOUT, env=gateway_env())
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc)
        yield base, log
    finally:
        proc.terminate()
        proc.wait(10)


def scrape(base: str, **headers: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    response = httpx.get(f"{base}/metrics", headers=headers, timeout=5)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def value(metrics: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(v for have, v in metrics.get(name, []) if all(have.get(k) == w for k, w in labels.items()))


def client(base: str, key: str = MAIN_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)


HELLO = [{"role": "user", "content": "hi"}]


def test_mixed_workload_is_counted_exactly(fake: FakeUpstream, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(config_text(fake, tmp_path / "data"))
    with serve(config) as (base, _):
        main = client(base)
        main.chat.completions.create(model="listed/gpt-4o-mini", messages=HELLO)  # success
        fake.reply(json_reply({"error": {"message": "down", "type": "server_error"}}, status=500))
        assert main.chat.completions.create(model="pair", messages=HELLO).model  # fallback listed -> backup
        fake.reply(json_reply({"error": {"message": "slow down", "type": "rate_limit_error"}}, status=429))
        with pytest.raises(openai.RateLimitError):  # the provider's 429
            main.chat.completions.create(model="listed/gpt-4o-mini", messages=HELLO)
        limited = client(base, LIMITED_KEY)
        limited.chat.completions.create(model="listed/gpt-4o-mini", messages=HELLO)
        with pytest.raises(openai.RateLimitError):  # the gateway's own limit: never sent upstream
            limited.chat.completions.create(model="listed/gpt-4o-mini", messages=HELLO)
        chunks = list(main.chat.completions.create(model="listed/gpt-4o-mini", messages=HELLO, stream=True))
        assert chunks
        # A client that leaves after the first chunk of a slow stream.
        fake.reply(sse_reply(fixture_bytes("openai/openai-python-stream-text.sse"), chunk_delay=0.3))
        with httpx.stream("POST", f"{base}/v1/chat/completions", timeout=5,
                          headers={"authorization": f"Bearer {MAIN_KEY}"},
                          json={"model": "listed/gpt-4o-mini", "messages": HELLO, "stream": True}) as response:
            next(response.iter_raw())
        # A model name the route table does not know: counted, under "other".
        main.chat.completions.create(model="open/made-up-model-name-1234", messages=HELLO)
        native = httpx.post(f"{base}/native/listed/v1/chat/completions", timeout=5,
                            headers={"authorization": f"Bearer {MAIN_KEY}"},
                            json={"model": "gpt-4o-mini", "messages": HELLO})
        assert native.status_code == 200, native.text

        # The disconnected stream settles when the gateway notices, and the writer commits its batch after
        # usage.flush_interval_ms: wait for both rather than race them.
        deadline = time.monotonic() + 10
        m = scrape(base)
        while (value(m, "gateway_requests_total") < 9 or value(m, "gateway_usage_write_batch_seconds_count") < 1) \
                and time.monotonic() < deadline:
            time.sleep(0.05)
            m = scrape(base)

    assert value(m, "gateway_requests_total") == 9
    assert value(m, "gateway_requests_total", route="native", provider="listed", model="gpt-4o-mini") == 1
    assert value(m, "gateway_requests_total", route="unified", provider="listed", model="gpt-4o-mini",
                 key="main", status_class="2xx") == 3  # success, stream, disconnect (its answer was a 200)
    assert value(m, "gateway_requests_total", provider="backup", model="gpt-4o-mini", status_class="2xx") == 1
    assert value(m, "gateway_requests_total", key="main", status_class="4xx", error_type="rate_limit_error") == 1
    assert value(m, "gateway_requests_total", key="limited", status_class="2xx") == 1
    assert value(m, "gateway_requests_total", key="limited", status_class="4xx", provider="") == 1
    assert value(m, "gateway_requests_total", model="other") == 1
    assert not [labels for labels, _ in m["gateway_requests_total"] if "made-up" in labels["model"]]
    assert value(m, "gateway_rate_limit_refusals_total", key="limited", reason="rate_limit") == 1
    assert value(m, "gateway_rate_limit_refusals_total") == 1
    # Attempts: 8 requests went upstream, the fallback twice.
    assert value(m, "gateway_upstream_attempts_total") == 9
    assert value(m, "gateway_upstream_attempts_total", provider="listed", status_class="5xx", outcome="failure") == 1
    assert value(m, "gateway_upstream_attempts_total", provider="listed", status_class="4xx", outcome="failure") == 1
    assert value(m, "gateway_upstream_attempts_total", outcome="success") == 7
    assert value(m, "gateway_fallbacks_total", provider="backup", model="gpt-4o-mini") == 1
    assert value(m, "gateway_retries_total") == 0
    assert value(m, "gateway_upstream_duration_seconds_count") == 9
    assert value(m, "gateway_request_duration_seconds_count") == 9
    assert value(m, "gateway_time_to_first_token_seconds_count") == 7  # every answer that sent a byte
    # The fake's non-streamed answer counts 9 prompt and 6 completion tokens.
    assert value(m, "gateway_tokens_total", provider="backup", type="prompt") == 9
    assert value(m, "gateway_tokens_total", provider="backup", type="completion") == 6
    assert value(m, "gateway_usage_records_dropped_total") == 0
    assert value(m, "gateway_usage_queue_depth") >= 0
    assert value(m, "gateway_circuit_state", target="listed/gpt-4o-mini") == 0  # one failure: still closed
    assert value(m, "gateway_usage_write_batch_seconds_count") >= 1


def test_config_reloads_are_counted(fake: FakeUpstream, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    good = config_text(fake, tmp_path / "data")
    config.write_text(good)
    with serve(config) as (base, _):
        config.write_text(good + "\n[server.nonsense]\n")
        deadline = time.monotonic() + 10
        while value(scrape(base), "gateway_config_reloads_total", result="failure") < 1:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        config.write_text(good + "\n# edited\n")
        while value(scrape(base), "gateway_config_reloads_total", result="success") < 1:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        m = scrape(base)
    assert value(m, "gateway_config_reloads_total", result="failure") == 1
    assert value(m, "gateway_config_reloads_total", result="success") == 1


def test_two_workers_count_every_request_once(fake: FakeUpstream, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(config_text(fake, tmp_path / "data", workers=2))
    with serve(config) as (base, _):
        # A new connection each time, so that both workers take some; a request id starts with its
        # worker's own prefix, which tells them apart.
        workers = set()
        for _ in range(30):
            response = httpx.post(f"{base}/v1/chat/completions", headers={"authorization": f"Bearer {MAIN_KEY}"},
                                  json={"model": "listed/gpt-4o-mini", "messages": HELLO}, timeout=5)
            response.raise_for_status()
            workers.add(response.headers["x-gateway-request-id"][:16])
        scrapes = [scrape(base) for _ in range(6)]  # each answered by either worker
    assert len(workers) == 2
    for m in scrapes:
        assert value(m, "gateway_requests_total") == 30
        assert value(m, "gateway_upstream_attempts_total") == 30
        assert value(m, "gateway_tokens_total", type="prompt") == 30 * 9


def test_metrics_token_and_loopback_protection(fake: FakeUpstream, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(config_text(fake, tmp_path / "data", extra=f'[metrics]\ntoken = "{METRICS_TOKEN}"\n'))
    with serve(config) as (base, _):
        refused = httpx.get(f"{base}/metrics")
        assert refused.status_code == 401
        assert httpx.get(f"{base}/metrics", headers={"authorization": "Bearer wrong-token"}).status_code == 401
        assert "gateway_requests" in httpx.get(f"{base}/metrics",
                                               headers={"authorization": f"Bearer {METRICS_TOKEN}"}).text

    # Listening on every interface without a token: refused, saying how to open it.
    config.write_text(config_text(fake, tmp_path / "data"))
    with serve(config, "--host", "0.0.0.0") as (base, _):
        refused = httpx.get(f"{base}/metrics")
        assert refused.status_code == 403
        assert "[metrics] token" in refused.json()["error"]["message"]

    config.write_text(config_text(fake, tmp_path / "data", extra="[metrics]\nenabled = false\n"))
    with serve(config) as (base, _):
        assert httpx.get(f"{base}/metrics").status_code == 404


def test_every_metric_is_documented_with_its_labels_and_the_dashboard_uses_real_ones() -> None:
    import json
    import re

    from prometheus_client.metrics import MetricWrapperBase

    from gateway import metrics

    root = Path(__file__).resolve().parent.parent
    doc = (root / "docs" / "observability.md").read_text()
    rows = {m.group(1): m.group(3) for m in re.finditer(r"^\| `(gateway_\w+)` \| (\w+) \|([^|]*)\|", doc, re.M)}
    ours = [m for m in vars(metrics).values() if isinstance(m, MetricWrapperBase)]
    names = set()
    for metric in ours:
        name = metric._name + ("_total" if metric._type == "counter" else "")
        names.add(metric._name)
        assert name in rows, f"{name} is not in docs/observability.md"
        assert [label.strip() for label in rows[name].split(",") if label.strip()] == list(metric._labelnames)
    assert len(rows) == len(ours)
    dashboard = json.loads((root / "packaging" / "grafana-dashboard.json").read_text())
    used = {name for panel in dashboard["panels"] for target in panel["targets"]
            for name in re.findall(r"gateway_\w+", target["expr"])}
    stripped = {re.sub(r"_(total|bucket|count|sum)$", "", name) for name in used}
    assert stripped <= names, stripped - names
    assert "prometheus.yml" in doc and "grafana-dashboard.json" in doc
