"""Rendering a run: the markdown tables (console, results folder) and docs/benchmarks.md."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from bench.scenarios import Check

METHOD = """\
## Method

`python -m bench` (from the repo root; `bench/` is not part of the installed package) starts, all on
loopback:

- **mock**: `bench/mock.py`, a raw asyncio HTTP/1.1 server speaking the OpenAI, Anthropic and Gemini
  shapes (JSON and SSE), with knobs for delay, chunk count and pacing, size and error rate. Its Anthropic
  and Gemini routes refuse OpenAI-shaped bodies, so translation cannot pass by forwarding bytes.
- **floor**: `bench/floor.py`, the thinnest pass-through (a raw ASGI app forwarding with aiohttp) served by
  granian like the gateway: the denominator of the throughput ratio.
- **direct**: the client talking to the mock itself, the baseline of every "added" figure.
- **gateway**: `python -m gateway serve --config bench.toml`, as a user starts it, with a key made by
  `python -m gateway keys create`, `[routing] retries = 0`, providers `mock` (OpenAI-compatible),
  `mockanthropic` and `mockgemini` pointed at the mock. One worker, pinned to one CPU with `taskset`;
  the mock and the load generators share the other CPU. `whole_box` runs two workers, nothing pinned.
- **gateway variants** (same gateway, judged against its OpenAI-compatible `gateway` target, ≥ 0.7x: added
  latency at most the gateway's ÷ 0.7): `gateway-anthropic` and `gateway-gemini` (chat in, translated to
  the provider's own API), `gateway-messages` (an Anthropic SDK-shaped `/v1/messages` request to the
  Anthropic provider) and `gateway-responses` (`/v1/responses` translated to the chat-only mock). All four
  run in `latency` and `throughput`, and in `fixed_rate` for 10 s each in a full run (not in `--quick`).
- **governance off / on** (`governance`): two fresh gateways on the server CPU. Off: `[usage]` and
  `[metrics]` disabled, a `[[keys]]` key without limits. On: both enabled and a `[[keys]]` key with
  `budget_usd`, `rpm` and `tpm` far above what the run sends (every request reserved and settled, none
  refused). Closed-loop throughput in mirrored order (off on on off), then (full run) added latency one in
  flight and at 1,000 req/s; on must reach ≥ 0.9x off (added latency at most off's ÷ 0.9).

Drivers: `wrk` (with a Lua script for the POST body) for closed-loop throughput when it is on PATH, else
processes of a minimal Python HTTP/1.1 client; an open-loop fixed-rate generator whose latency runs from
each request's *scheduled* send time (no coordinated omission); a sequential prober alternating direct /
floor / gateway requests one at a time, whose "added" figures are the median over rounds of the
per-round percentile differences (LiteLLM is probed afterwards with direct alone: it keeps the server CPU
busy after answering, which the target probed next would pay for); streams are read over
`connection: close` connections, with time to first token measured to the first `data:` byte. Memory
("RSS") is the proportional set size (PSS) summed over the gateway's process tree (granian main + workers),
in MB of 10^6 bytes: the workers are forked after the app is imported, so they share those pages with the
main process, and PSS counts each shared page once (a plain RSS sum would count it twice).

`--quick` (CI guard, Python drivers only, about 1-2 minutes) fails only on gross regressions judged
within the run: throughput < 0.3x the floor, governance on < 0.5x off, added p50 > 5 ms, idle RSS > 200 MB,
any error.
"""


def _value(check: Check) -> str:
    if check.value is None or (isinstance(check.value, float) and math.isnan(check.value)):
        return "n/a"
    value = check.value
    text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"
    return f"{text} {check.unit}".strip()


def _verdict(check: Check) -> str:
    if check.target == "informational":
        return "—"
    return {True: "met", False: "**missed**", None: "n/a"}[check.met]


def targets_table(checks: list[Check]) -> str:
    rows = ["| scenario | figure | measured | target | verdict |", "|---|---|---|---|---|"]
    rows += [f"| {c.scenario} | {c.name} | {_value(c)} | {c.target} | {_verdict(c)} |"
             for c in checks if not c.guard]
    return "\n".join(rows)


def guards_table(checks: list[Check]) -> str:
    rows = ["| guard | measured | limit | verdict |", "|---|---|---|---|"]
    rows += [f"| {c.scenario}: {c.name} | {_value(c)} | {c.target} | {'pass' if c.met else '**FAIL**'} |"
             for c in checks if c.guard]
    return "\n".join(rows)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:,.2f}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def details(figures: dict[str, Any]) -> str:
    """Per-target raw figures of the scenarios that compare targets."""
    parts = []
    if "latency" in figures:
        fig = figures["latency"]
        parts.append(f"**One request in flight** (0 ms mock; {fig['rounds']} rounds x {fig['per_round']} "
                     "requests per target), ms:\n")
        parts.append(_table(fig["ms"], ["p50", "p99", "max", "added_p50", "added_p99"]))
    if "fixed_rate" in figures:
        fig = figures["fixed_rate"]
        variants = f", {fig['variant_seconds']} s per gateway variant" if "variant_seconds" in fig else ""
        parts.append(f"**Fixed {fig['rate']:,.0f} req/s** ({fig['mock_delay_ms']} ms mock, {fig['seconds']} s "
                     f"per target{variants}, latency from the scheduled send), ms:\n")
        parts.append(_table(fig["ms"], ["p50", "p99", "max", "added_p50", "added_p99", "errors", "max_lag_ms"]))
    if "throughput" in figures:
        fig = figures["throughput"]
        parts.append(f"**Closed loop**, {fig['connections']} connections, 0 ms mock, {fig['seconds']} s per target "
                     f"({fig['driver']}):\n")
        rows = {name: {"req/s": rps, "errors": fig["errors"][name], "x gateway": fig["vs_openai"].get(name, "")}
                for name, rps in fig["rps"].items()}
        parts.append(_table(rows, ["req/s", "errors", "x gateway"]))
    if "streaming" in figures:
        fig = figures["streaming"]
        parts.append(f"**Streaming**, one at a time ({fig['count']} per target, {fig['chunks']} chunks "
                     f"{fig['chunk_ms']} ms apart), ms:\n")
        rows = {name: {"ttft_p50": e["ttft"]["p50"], "ttft_p99": e["ttft"]["p99"], "gap_p50": e["gap_p50"],
                       "added_ttft_p50": e["added_ttft_p50"], "added_ttft_p99": e["added_ttft_p99"],
                       "added_gap": e["added_gap"]} for name, e in fig["ms"].items()}
        parts.append(_table(rows, list(next(iter(rows.values())))))
    if "streams500" in figures:
        fig = figures["streams500"]
        d = fig["duration_s"]
        parts.append(f"**{fig['streams']} concurrent streams** ({fig['chunks']} chunks {fig['chunk_ms']} ms apart, "
                     f"ideal {fig['ideal_s']:g} s): {fig['completed']} completed, {fig['stalled']} stalled; "
                     f"duration p50 {_fmt(d['p50'])} s, p99 {_fmt(d['p99'])} s, max {_fmt(d['max'])} s; "
                     f"longest gap between reads {_fmt(fig['max_gap_s'])} s.\n")
    if "governance" in figures and "throughput_x" in figures["governance"]:
        parts.append(governance_details(figures["governance"]))
    if "whole_box" in figures:
        fig = figures["whole_box"]
        parts.append(f"**Whole box**: {fig['workers']} workers, unpinned: {_fmt(fig['rps'])} req/s "
                     f"({fig['errors']} errors, {fig['driver']}).\n")
    if "usage" in figures and not figures["usage"].get("available", True):
        parts.append(f"**Usage recording on vs off**: not available ({figures['usage']['note']}).\n")
    return "\n".join(parts)


def governance_details(fig: dict[str, Any]) -> str:
    """Governance off and on side by side: throughput ratio, and (full run) added latency over direct."""
    text = (f"**Governance on vs off** (fresh gateways, same CPU): on does {_fmt(fig['throughput_x'])}x off's "
            f"closed-loop req/s (mirrored A B B A, {fig['throughput_errors_on']} errors on).\n")
    if "fixed_rate" not in fig:
        return text
    fixed = fig["fixed_rate"]
    rows = {name: {"added_p50 (1 in flight)": fig["latency_ms"][name]["added_p50"],
                   "added_p99 (1 in flight)": fig["latency_ms"][name]["added_p99"],
                   f"added_p50 ({fixed['rate']:,.0f}/s)": fixed["ms"][name]["added_p50"],
                   f"added_p99 ({fixed['rate']:,.0f}/s)": fixed["ms"][name]["added_p99"],
                   "errors": fixed["ms"][name]["errors"]} for name in ("off", "on")}
    return (text + f"\nAdded over direct, ms ({fixed['mock_delay_ms']} ms mock and {fixed['seconds']} s per "
            f"gateway at the fixed rate):\n\n" + _table(rows, list(rows["off"])))


def _table(rows: dict[str, dict[str, Any]], columns: list[str]) -> str:
    lines = ["| target | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(_fmt(row.get(c, "")) for c in columns) + " |" for name, row in rows.items()]
    return "\n".join(lines) + "\n"


def machine_line(meta: dict[str, Any]) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in meta["packages"].items())
    return (f"{meta['cpu_model']}, {meta['cpus']} CPUs, Linux {meta['kernel']}; Python {meta['python']}; "
            f"{versions}; layout: {meta['layout']}")


def _busy_warning(meta: dict[str, Any]) -> str:
    """The run's own load is about 1 (load generator, mock and server); above 0.5 before it started,
    something else was using the CPUs and every figure below is pessimistic."""
    if meta["loadavg_1m"]["start"] <= 0.5:
        return "."
    return (" — **the machine was busy before the run started (other processes on the measured CPUs): "
            "treat these figures as pessimistic.**")


def markdown(meta: dict[str, Any], figures: dict[str, Any], checks: list[Check]) -> str:
    head = (f"Run finished {meta['date']} on git {meta['git_sha'][:12]}{' (modified)' if meta['git_dirty'] else ''}"
            f"{', gateway from ' + meta['gateway_src'] if meta['gateway_src'] != '.' else ''}; "
            f"{'quick' if meta['quick'] else 'full'} mode, {meta['duration_s']:.0f} s.\n\n"
            f"Machine: {machine_line(meta)}.\n\n"
            f"1-minute load average before and after the run: {meta['loadavg_1m']['start']} / "
            f"{meta['loadavg_1m']['end']}{_busy_warning(meta)}\n")
    return "\n".join([head, "### Targets (gateway on one core)\n", targets_table(checks), "",
                      "### Raw figures\n", details(figures), "### Regression guards\n", guards_table(checks), ""])


BINARY_HEADING = "## Single executable\n\n"
# Written by hand from a profile (py-spy, in-process runs): kept, like the binary's section, when a run
# rewrites the rest.
PROFILE_HEADING = "## Where the time goes\n\n"


def _kept_section(path: Path, heading: str) -> str:
    """The section under ``heading`` that a full run does not write, kept when it rewrites the rest."""
    text = path.read_text() if path.exists() else ""
    start = text.find(heading)
    if start < 0:
        return ""
    end = text.find("\n## ", start + len(heading))
    return text[start:end + 1 if end >= 0 else len(text)]


def write_docs(path: Path, body: str) -> None:
    kept = _kept_section(path, PROFILE_HEADING) + _kept_section(path, BINARY_HEADING)
    path.write_text("# Benchmarks\n\nHow much the gateway adds on top of an upstream, measured against a mock "
                    "upstream, the thinnest possible pass-through and (optionally) LiteLLM's proxy. "
                    "Regenerate with `python -m bench` (about 10 minutes).\n\n"
                    "## Latest results\n\n" + body + "\n" + kept + METHOD)


def write_binary_section(path: Path, body: str) -> None:
    """Put (or replace) the single executable's section just before the Method section."""
    text = path.read_text()
    old = _kept_section(path, BINARY_HEADING)
    if old:
        text = text.replace(old, "")
    section = BINARY_HEADING + body + "\n"
    at = text.find("## Method")
    path.write_text(text[:at] + section + text[at:] if at >= 0 else text + "\n" + section)
