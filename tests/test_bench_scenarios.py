"""The bench's issue-18 pieces that need no server: the variant/governance rule, the governance configs (loaded
by the gateway's own config loader), the /v1/messages target against the mock, and the report's new tables.
`python -m bench --quick --only governance` (and --only latency / throughput) exercises the rest."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from bench import report
from bench.mock import Knobs, route
from bench.procs import Layout
from bench.scenarios import (
    GOVERNANCE_KEYS,
    VARIANTS,
    Options,
    Run,
    _check_added,
    _probe_apart,
    governance_extra,
    share_limit,
)
from bench.servers import Server, gateway_config
from gateway.config import load_config_file


def _run(litellm: bool = False) -> Run:
    cpus = frozenset({0})
    gateway = cast(Server, SimpleNamespace(port=1, auth={"authorization": "Bearer sk-b"}, key="sk-b"))
    return Run(opts=Options(quick=True, with_litellm=litellm, soak_seconds=0, gateway_src=Path(".")),
               layout=Layout(cpus, cpus, cpus), workdir=Path("."), mock=gateway, floor=gateway, gateway=gateway,
               litellm=gateway if litellm else None, use_wrk=False)


def test_share_limit_turns_a_speed_share_into_an_added_latency_bound() -> None:
    assert share_limit(0.7, 0.7) == pytest.approx(1.0)  # 0.7x as fast: 1/0.7x the added time
    assert share_limit(1.8, 0.9) == pytest.approx(2.0)


def test_check_added_judges_each_variant_against_the_base() -> None:
    run = _run()
    ms = {"gateway": {"added_p50": 0.7, "added_p99": 1.4},
          "gateway-messages": {"added_p50": 0.95, "added_p99": 2.1}}
    _check_added(run, "latency", ms, "gateway", {"gateway-messages": "/v1/messages"}, 0.7, ", one in flight")
    p50, p99 = run.checks
    assert (p50.name, p50.met, p50.guard) == ("/v1/messages: added p50, one in flight", True, False)
    assert p50.target == "≤ 1 ms (gateway ÷ 0.7)"
    assert (p99.value, p99.met) == (2.1, False)  # 2.1 > 1.4 / 0.7


def test_governance_configs_load_and_differ_only_in_governance(tmp_path: Path) -> None:
    loaded = {}
    for label in ("off", "on"):
        path = tmp_path / f"{label}.toml"
        path.write_text(gateway_config(8000, 9000, 1, governance_extra(label == "on")))
        loaded[label] = load_config_file(path)
    off, on = loaded["off"], loaded["on"]
    assert (off.usage.enabled, off.metrics.enabled, on.usage.enabled, on.metrics.enabled) == (False, False, True, True)
    assert [k.key for k in off.keys] == [GOVERNANCE_KEYS["off"]]
    assert (off.keys[0].budget_usd, off.keys[0].rpm, off.keys[0].tpm) == (None, None, None)
    key = on.keys[0]
    assert key.key == GOVERNANCE_KEYS["on"]
    # Limits set, and far above a 1,000 req/s run of short requests, so none is ever refused.
    assert key.budget_usd is not None and key.budget_usd >= 1e6
    assert key.rpm is not None and key.rpm >= 1e8 and key.tpm is not None and key.tpm >= 1e11


def test_every_variant_has_a_target_and_messages_is_the_anthropic_sdk_shape() -> None:
    run = _run()
    for name in VARIANTS:
        assert run.target(name).name == name
    target = run.target("gateway-messages")
    assert target.path == "/v1/messages"
    assert target.headers["x-api-key"] == "sk-b" and "authorization" not in target.headers
    # The mock's Anthropic route (which refuses OpenAI bodies) accepts it as the gateway forwards it.
    answer = route(b"/v1/messages", target.body, Knobs(), {})
    assert answer.status == 200 and b'"type":"message"' in answer.body


def test_report_shows_variants_and_governance() -> None:
    figures: dict[str, Any] = {
        "throughput": {"connections": 64, "seconds": 4, "driver": "python",
                       "rps": {"floor": 2000.0, "gateway": 1000.0, "gateway-messages": 900.0},
                       "errors": {"floor": 0, "gateway": 0, "gateway-messages": 0},
                       "vs_openai": {"gateway-messages": 0.9}},
        "governance": {"throughput_x": 0.93, "throughput_errors_on": 0,
                       "latency_ms": {"off": {"added_p50": 0.5, "added_p99": 1.0},
                                      "on": {"added_p50": 0.6, "added_p99": 1.2}},
                       "fixed_rate": {"rate": 1000.0, "seconds": 10, "mock_delay_ms": 20,
                                      "ms": {"off": {"added_p50": 0.8, "added_p99": 3.0, "errors": 0},
                                             "on": {"added_p50": 0.9, "added_p99": 3.5, "errors": 0}}}},
    }
    text = report.details(figures)
    assert "| gateway-messages | 900.00 | 0 | 0.90 |" in text
    assert "on does 0.93x off's closed-loop req/s" in text
    assert "| on | 0.60 | 1.20 | 0.90 | 3.50 | 0 |" in text
    quick = {"governance": {"throughput_x": 0.93, "throughput_errors_on": 0}}  # --quick: throughput only
    assert "Added over direct" not in report.details(quick)


def test_litellm_is_probed_apart_against_its_own_direct() -> None:
    calls: list[list[str]] = []

    def probe(names: list[str]) -> dict[str, str]:
        calls.append(names)
        return {name: f"{name}#{len(calls)}" for name in names}

    results, base = _probe_apart(_run(litellm=True), ["direct", "floor", "gateway"], probe)
    assert calls == [["direct", "floor", "gateway"], ["direct", "litellm"]]
    assert results == {"direct": "direct#1", "floor": "floor#1", "gateway": "gateway#1", "litellm": "litellm#2"}
    assert base == {"direct": "direct#1", "floor": "direct#1", "gateway": "direct#1", "litellm": "direct#2"}
    calls.clear()
    results, _ = _probe_apart(_run(), ["direct", "gateway"], probe)
    assert calls == [["direct", "gateway"]] and "litellm" not in results


def test_a_full_run_keeps_the_hand_written_profile_and_the_binary_section(tmp_path: Path) -> None:
    from bench import report

    docs = tmp_path / "benchmarks.md"
    report.write_docs(docs, "first results\n")
    docs.write_text(docs.read_text().replace("## Method", report.PROFILE_HEADING + "profile text\n\n## Method"))
    report.write_binary_section(docs, "binary figures\n")
    report.write_docs(docs, "second results\n")
    text = docs.read_text()
    assert "second results" in text and "first results" not in text
    assert text.count("profile text") == 1 and text.count("binary figures") == 1
    assert text.index("profile text") < text.index("binary figures") < text.index("## Method")
