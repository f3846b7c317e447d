"""Prometheus metrics: what the gateway counts, and the text ``GET /metrics`` answers with.

Every request ends in exactly one usage record (gateway/accounting.py), so the per-request counters are
taken from that record in one place (``request_done``); every upstream attempt passes through the
pipeline's ``_attempt`` or the native route (``attempt``); with tracing on, both hooks hand the same
facts to gateway/tracing.py. Gauges that describe state (circuits, queue depth, budgets) are
read from the worker's state when scraped and every ``REFRESH_SECONDS``, never on the request path.

Label values are bounded: providers and key names come from the config and the key store; a model or a
project the route table or the config does not name is counted as ``other`` (a client may send any name
through ``provider/anything``, and each distinct label set is a time series kept forever); an error type
outside the gateway's own set is ``other`` too (upstream bodies can say anything).

With ``server.workers > 1`` the serve command points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory
before the workers fork, so prometheus_client keeps each worker's values in files there and a scrape
answered by any worker sums all of them: every request is counted once, whichever worker served it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

from gateway import errors, tracing

if TYPE_CHECKING:
    from gateway.config import Provider
    from gateway.governance import Governor, Principal
    from gateway.health import HealthBook
    from gateway.router import Deployment, RouteTable
    from gateway.store import RequestRecord

MULTIPROC_ENV_VAR = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
REFRESH_SECONDS = 5.0
OTHER = "other"
# Request latency spans milliseconds (a refusal) to minutes (a long reasoning stream).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
BATCH_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
CIRCUIT_VALUES = {"closed": 0.0, "half_open": 1.0, "open": 2.0}
_MULTIPROCESS = bool(os.environ.get(MULTIPROC_ENV_VAR))


def _error_types() -> frozenset[str]:
    found = {"client_disconnected", "internal_error"}
    pending: list[type[errors.GatewayError]] = [errors.GatewayError]
    while pending:
        cls = pending.pop()
        found.add(cls.type)
        pending.extend(cls.__subclasses__())
    found.update(errors._TYPE_BY_STATUS.values())
    return frozenset(found)


ERROR_TYPES = _error_types()

REQUEST = ("route", "provider", "model", "key", "project", "status_class", "error_type")
requests = Counter("gateway_requests", "Requests answered, one per usage record.", REQUEST)
request_latency = Histogram("gateway_request_duration_seconds", "Request latency, to the last byte sent.",
                            ("route", "provider", "model", "status_class"), buckets=LATENCY_BUCKETS)
ttft = Histogram("gateway_time_to_first_token_seconds", "Time from the request to its first answer byte.",
                 ("route", "provider", "model"), buckets=LATENCY_BUCKETS)
tokens = Counter("gateway_tokens", "Tokens counted on answered requests (cached is part of prompt, reasoning "
                 "part of completion).", ("route", "provider", "model", "key", "project", "type"))
spend = Counter("gateway_spend_usd", "Cost of the requests in USD (catalog prices).",
                ("provider", "model", "key", "project"))
refusals = Counter("gateway_rate_limit_refusals", "Requests refused by the gateway's own rate limits or budgets.",
                   ("key", "reason"))
attempts = Counter("gateway_upstream_attempts", "Upstream attempts (each retry and fallback is one).",
                   ("provider", "model", "status_class", "outcome"))
upstream_latency = Histogram("gateway_upstream_duration_seconds", "Upstream attempt latency, to the answer's "
                             "headers (streams) or its whole body.", ("provider", "model"), buckets=LATENCY_BUCKETS)
retries = Counter("gateway_retries", "Attempts sent again to the same target after a failure.",
                  ("provider", "model"))
fallbacks = Counter("gateway_fallbacks", "Attempts sent to another target after a failure.", ("provider", "model"))
circuit_state = Gauge("gateway_circuit_state", "Circuit breaker per target: 0 closed, 1 half-open, 2 open "
                      "(the worst worker's).", ("target",), multiprocess_mode="livemax")
budget_remaining = Gauge("gateway_budget_remaining_usd", "What a key's budget has left in its period.", ("key",),
                         multiprocess_mode="livemin")
queue_depth = Gauge("gateway_usage_queue_depth", "Usage records waiting for the writer.",
                    multiprocess_mode="livesum")
dropped = Counter("gateway_usage_records_dropped", "Usage records lost (queue full, or a write that kept "
                  "failing): must stay 0.")
batch_latency = Histogram("gateway_usage_write_batch_seconds", "Time to commit one batch of usage records.",
                          buckets=BATCH_BUCKETS)
reloads = Counter("gateway_config_reloads", "Config reloads by result.", ("result",))
# A counter that exists with zero is a line a dashboard and an alert can rely on.
dropped.inc(0)


class _Labels:
    """What bounds the label values: the names the current config and route table know."""

    enabled = True
    targets: frozenset[str] = frozenset()
    models: frozenset[str] = frozenset()
    projects: frozenset[str] = frozenset()


labels = _Labels()


def configure(table: RouteTable) -> None:
    """At start and on every reload: the names that may appear as label values."""
    config = table.config
    labels.enabled = config.metrics.enabled
    groups = (*table.groups.values(), table.auto)
    members = [*table.deployments.values(), *(d for group in groups for d in group.members)]
    labels.targets = frozenset(d.key for d in members)
    # Both spellings: records and attempts carry the provider's name for the model, clients the public one.
    labels.models = frozenset(name for d in members for name in (d.upstream, d.name))
    labels.projects = frozenset(config.projects)
    _request_series.clear()
    _attempt_series.clear()


def _model(model: str | None) -> str:
    if model is None:
        return ""
    return model if model in labels.models else OTHER


def _status_class(status: int) -> str:
    return f"{status // 100}xx"


class _RequestSeries:
    """The children of every per-request metric for one label set, looked up once: prometheus_client's
    ``labels()`` costs microseconds a call (a lock and a tuple check), ``inc`` a fraction of that."""

    __slots__ = ("count", "latency", "spend", "tokens", "ttft")

    def __init__(self, route: str, provider: str, model: str, key: str, project: str, status: str,
                 error: str) -> None:
        self.count = requests.labels(route, provider, model, key, project, status, error)
        self.latency = request_latency.labels(route, provider, model, status)
        self.ttft = ttft.labels(route, provider, model)
        self.tokens = [tokens.labels(route, provider, model, key, project, kind)
                       for kind in ("prompt", "completion", "cached", "reasoning")]
        self.spend = spend.labels(provider, model, key, project)


# Bounded like the label sets they hold; emptied on reload, when the names that bound them change.
_request_series: dict[tuple[str, ...], _RequestSeries] = {}
_attempt_series: dict[tuple[str, ...], tuple[Counter, Histogram]] = {}


def request_done(record: RequestRecord) -> None:
    """One request ended (called with its usage record, the one place every request reaches)."""
    if tracing.tracer is not None:
        tracing.request_done(record)
    if not labels.enabled:
        return
    project = (record.project if record.project in labels.projects else OTHER) if record.project else ""
    error = (record.error_type if record.error_type in ERROR_TYPES else OTHER) if record.error_type else ""
    key = (record.mode, record.provider or "", _model(record.model), record.key_name, project,
           _status_class(record.status), error)
    series = _request_series.get(key)
    if series is None:
        series = _request_series[key] = _RequestSeries(*key)
    series.count.inc()
    series.latency.observe(record.latency_ms / 1000)
    if record.ttft_ms is not None:
        series.ttft.observe(record.ttft_ms / 1000)
    if record.status == 429 and record.attempts == 0:
        refusals.labels(record.key_name, "budget" if record.error_type == errors.BudgetExceeded.type
                        else "rate_limit").inc()
    for child, count in zip(series.tokens, (record.prompt_tokens, record.completion_tokens, record.cached_tokens,
                                            record.reasoning_tokens), strict=True):
        if count:
            child.inc(count)
    if record.cost_total:
        series.spend.inc(record.cost_total)


def attempt(provider: Provider, model: str | None, status: int | None, error_type: str | None, ok: bool,
            latency_ms: float) -> None:
    """One upstream attempt ended (no status: it never got an answer, or the target could not take it)."""
    if tracing.tracer is not None:
        tracing.attempt(provider, model, status, error_type, ok, latency_ms)
    if not labels.enabled:
        return
    key = (provider.name, _model(model), _status_class(status) if status else "none", "success" if ok else "failure")
    series = _attempt_series.get(key)
    if series is None:
        series = _attempt_series[key] = (attempts.labels(*key), upstream_latency.labels(*key[:2]))
    series[0].inc()
    series[1].observe(latency_ms / 1000)


def tried(deployment: Deployment, try_number: int, earlier_attempts: int) -> None:
    """An attempt is about to be sent: a retry (same target again) or a fallback (after another target)."""
    if not labels.enabled or not (try_number or earlier_attempts):
        return
    counter = retries if try_number else fallbacks
    counter.labels(deployment.provider.name, _model(deployment.upstream)).inc()


def records_dropped(count: int) -> None:
    dropped.inc(count)


def batch_written(seconds: float) -> None:
    batch_latency.observe(seconds)


def reloaded(ok: bool) -> None:
    reloads.labels("success" if ok else "failure").inc()


def refresh(health: HealthBook, governor: Governor, principals: Iterable[Principal], queued: int) -> None:
    """Set the gauges from this worker's state (at a scrape, and every REFRESH_SECONDS)."""
    for target, circuit in list(health.circuits.items()):
        if target in labels.targets:
            circuit_state.labels(target).set(CIRCUIT_VALUES[circuit.state])
    now = time.time()
    for principal in principals:
        remaining = governor.key_budget_remaining(principal.key_id, now)
        if remaining is not None:
            budget_remaining.labels(principal.name).set(remaining)
    queue_depth.set(queued)


def exposition() -> bytes:
    if not _MULTIPROCESS:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


def worker_stopped() -> None:
    """A worker's live gauges leave with it (its counters stay: they are history)."""
    if _MULTIPROCESS:
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


