"""What each admin page shows: gathered from the store's aggregate queries, the key operations of
``gateway.keys`` and the in-memory health book, shaped for the templates. No markup here.
"""

from __future__ import annotations

import datetime
import json
import math
from collections.abc import Mapping
from typing import Any

import msgspec

from gateway import keys
from gateway.admin.charts import Chart, budget_fraction, chart
from gateway.admin.redact import Redactor, masked_config, safe_url
from gateway.admin.web import num, usd
from gateway.limits import period_start_day
from gateway.state import GatewayState
from gateway.store import Aggregate, AggregateBy, Dimensions, Store
from gateway.usage_report import BY_CHOICES

TOP = 5
OVERVIEW_DAYS = 30
OVERVIEW_HOURS = 48
USAGE_DEFAULT_DAYS = 30
USAGE_MAX_DAYS = 366  # the chart has one bar a day
LATENCY_WINDOW_S = 3600.0
LATENCY_SAMPLES = 5000
REQUESTS_PAGE = 50
# Rows of one page where names come from clients (any ``provider/anything`` passes through): pages stay
# small however many names there are.
PROVIDERS_PAGE = 100  # targets of each provider
USAGE_PAGE = 100
OPEN_CIRCUITS_SHOWN = 10
DIMENSION_OPTIONS = 200  # a filter with more values than this is a text field, not a drop-down
_SUMMED = [f for f in Aggregate.__struct_fields__ if f != "group"]


def _store(state: GatewayState) -> Store:
    assert state.store is not None, "the admin page is served only after the store is open"
    return state.store


def page_number(text: str | None) -> int:
    """A page number from the query string: anything but a plain positive number is the first page."""
    return int(text) if text and text.isdigit() and len(text) < 10 and int(text) > 0 else 1


def _pages(count: int, size: int) -> int:
    return max(1, -(-count // size))


def _days(first: datetime.date, last: datetime.date) -> list[str]:
    return [(first + datetime.timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def _utc_date(ts: float) -> datetime.date:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).date()


def spend_chart(title: str, per_day: list[Aggregate], first: datetime.date, last: datetime.date) -> Chart:
    spent = {row.group: row.cost_usd for row in per_day}
    points = [(d[5:], spent.get(d, 0.0), f"{d}: {usd(spent.get(d, 0.0))}") for d in _days(first, last)]
    return chart(title, points, "usd", total=usd(sum(spent.values())))


# -------------------------------------------------------------------------------------------- overview


class PeriodTotals(msgspec.Struct, kw_only=True):
    requests: int = 0
    errors: int = 0
    tokens: int = 0
    cost_usd: float = 0.0


class Overview(msgspec.Struct, kw_only=True):
    periods: list[tuple[str, PeriodTotals]]
    spend: Chart
    hourly: Chart
    top_keys: list[Aggregate]
    top_models: list[Aggregate]
    open_circuits: list[str]  # the first OPEN_CIRCUITS_SHOWN
    more_open_circuits: int


def _ranked(pairs: list[tuple[str, str, Aggregate]], by_model: bool) -> list[Aggregate]:
    totals: dict[str, Aggregate] = {}
    for key, model, row in pairs:
        name = model if by_model else key
        found = totals.get(name)
        totals[name] = msgspec.structs.replace(row, group=name) if found is None else Aggregate(
            group=name, **{f: getattr(found, f) + getattr(row, f) for f in _SUMMED})
    return sorted(totals.values(), key=lambda a: (-a.cost_usd, -a.requests, a.group))[:TOP]


async def overview(state: GatewayState, now: float) -> Overview:
    store = _store(state)
    starts = {"Today": period_start_day("day", now), "This week": period_start_day("week", now),
              "This month": period_start_day("month", now)}
    today = _utc_date(now)
    first = today - datetime.timedelta(days=OVERVIEW_DAYS - 1)
    # One pass over the days feeds both the chart and the three periods (a month starts at most 30 days ago).
    per_day = await store.aggregate("day", since=min(first.isoformat(), *starts.values()))
    periods = []
    for label, start in starts.items():
        days = [row for row in per_day if row.group >= start]
        periods.append((label, PeriodTotals(
            requests=sum(r.requests for r in days), errors=sum(r.errors for r in days),
            tokens=sum(r.prompt_tokens + r.completion_tokens for r in days), cost_usd=sum(r.cost_usd for r in days))))
    hour_now = int(now // 3600)
    counts = {h.hour: h.requests for h in await store.hourly(hour_now - OVERVIEW_HOURS + 1)}
    hours = []
    for hour in range(hour_now - OVERVIEW_HOURS + 1, hour_now + 1):
        begins = datetime.datetime.fromtimestamp(hour * 3600, datetime.UTC)
        count = counts.get(hour, 0)
        hours.append((begins.strftime("%H:00"), float(count), f"{begins:%Y-%m-%d %H:00}: {num(count)} requests"))
    pairs = await store.key_model_totals(starts["This month"])
    opened = sorted(k for k, c in state.health.circuits.items() if c.state != "closed")
    return Overview(
        periods=periods,
        spend=spend_chart(f"Spend per day, last {OVERVIEW_DAYS} days (USD)",
                          [r for r in per_day if r.group >= first.isoformat()], first, today),
        hourly=chart(f"Requests per hour, last {OVERVIEW_HOURS} hours", hours, "count", kind="line",
                     total=num(sum(counts.values()))),
        top_keys=_ranked(pairs, by_model=False),
        top_models=_ranked(pairs, by_model=True),
        open_circuits=opened[:OPEN_CIRCUITS_SHOWN], more_open_circuits=max(len(opened) - OPEN_CIRCUITS_SHOWN, 0),
    )


# ------------------------------------------------------------------------------------------------ keys


class KeyLine(msgspec.Struct, kw_only=True):
    key: keys.KeyView
    status: str  # active, revoked or expired
    last_used_at: float | None
    budget_fraction: float | None


async def key_lines(state: GatewayState, now: float) -> list[KeyLine]:
    views = await keys.list_keys(_store(state), state.config, now)
    lines = []
    for view in views:
        # Last-used times reach the database every few seconds; the key ring has the fresher one.
        seen = state.keys.last_used.get(view.id)
        last_used = max(t for t in (view.last_used_at, seen) if t is not None) if (view.last_used_at or seen) else None
        status = ("revoked" if view.revoked_at is not None
                  else "expired" if view.expires_at is not None and view.expires_at <= now else "active")
        lines.append(KeyLine(key=view, status=status, last_used_at=last_used,
                             budget_fraction=budget_fraction(view.spent_usd, view.budget_usd)))
    # Live keys first, then revoked ones; each group in creation order (config keys last).
    return sorted(lines, key=lambda line: line.status == "revoked")


# ----------------------------------------------------------------------------------------------- usage


class UsageFilters(msgspec.Struct, kw_only=True):
    by: AggregateBy = "key"
    key: str = ""
    model: str = ""
    project: str = ""
    since: str = ""
    until: str = ""

    def query(self, **changes: str) -> dict[str, str]:
        """These filters as query parameters (empty ones left out), with ``changes`` applied."""
        values = {**msgspec.structs.asdict(self), **changes}
        return {name: value for name, value in values.items() if value}


def usage_filters(params: Mapping[str, str], now: float) -> tuple[UsageFilters, str | None]:
    """Filters from the query string; a bad one is reset to its default, with a message saying so."""
    today = _utc_date(now)
    error = None
    by = params.get("by", "key")
    if by not in BY_CHOICES:
        by, error = "key", f"'group by' must be one of {', '.join(BY_CHOICES)}."
    dates = {}
    for name, default in (("since", today - datetime.timedelta(days=USAGE_DEFAULT_DAYS - 1)), ("until", today)):
        try:
            dates[name] = datetime.date.fromisoformat(params.get(name) or default.isoformat())
        except ValueError:
            dates[name], error = default, f"'{name}' must be a date (YYYY-MM-DD): showing the default range."
    if dates["since"] > dates["until"]:
        dates["since"], dates["until"] = dates["until"], dates["since"]
    if (dates["until"] - dates["since"]).days >= USAGE_MAX_DAYS:
        dates["since"] = dates["until"] - datetime.timedelta(days=USAGE_MAX_DAYS - 1)
        error = f"The range is at most {USAGE_MAX_DAYS} days: it starts on {dates['since']} instead."
    filters = UsageFilters(by=by, key=params.get("key", ""), model=params.get("model", ""),  # type: ignore[arg-type]
                           project=params.get("project", ""), since=dates["since"].isoformat(),
                           until=dates["until"].isoformat())
    return filters, error


class Usage(msgspec.Struct, kw_only=True):
    rows: list[Aggregate]  # this page's
    total: Aggregate
    chart: Chart
    dimensions: Dimensions
    page: int
    pages: int
    row_count: int


async def usage_rows(state: GatewayState, filters: UsageFilters) -> list[Aggregate]:
    """What the CSV export holds: the same rows as the JSON API."""
    return await _store(state).aggregate(filters.by, since=filters.since, until=filters.until,
                                         key_id=filters.key or None, project=filters.project or None,
                                         model=filters.model or None)


def _summed(rows: list[Aggregate], group: str) -> Aggregate:
    return Aggregate(group=group, **{f: sum(getattr(r, f) for r in rows) for f in _SUMMED})


async def usage(state: GatewayState, filters: UsageFilters, page: int = 1) -> Usage:
    store = _store(state)
    cells = await store.aggregate_by_day(filters.by, since=filters.since, until=filters.until,
                                         key_id=filters.key or None, project=filters.project or None,
                                         model=filters.model or None)
    by_group: dict[str, list[Aggregate]] = {}
    by_day: dict[str, list[Aggregate]] = {}
    for day, cell in cells:
        by_group.setdefault(cell.group, []).append(cell)
        by_day.setdefault(day, []).append(cell)
    rows = [_summed(group_rows, group) for group, group_rows in by_group.items()]
    # As the JSON API orders them: days in order, anything else by spend.
    if filters.by == "day":
        rows.sort(key=lambda r: r.group)
    else:
        rows.sort(key=lambda r: (-r.cost_usd, r.group))
    per_day = [_summed(day_rows, day) for day, day_rows in by_day.items()]
    first, last = datetime.date.fromisoformat(filters.since), datetime.date.fromisoformat(filters.until)
    pages = _pages(len(rows), USAGE_PAGE)
    page = min(page, pages)
    return Usage(rows=rows[(page - 1) * USAGE_PAGE:page * USAGE_PAGE], total=_summed(rows, "Total"),
                 chart=spend_chart("Spend per day (USD)", per_day, first, last),
                 dimensions=await store.usage_dimensions(filters.since, filters.until), page=page, pages=pages,
                 row_count=len(rows))


# ------------------------------------------------------------------------------------------- providers


class TargetHealth(msgspec.Struct, kw_only=True):
    key: str
    state: str  # closed, open, half_open, or "—" when no request has gone there yet
    error_rate: float | None
    latency_ewma_ms: float | None
    samples: int
    p50: float | None
    p95: float | None
    p99: float | None
    last_error: str


class ProviderHealth(msgspec.Struct, kw_only=True):
    name: str
    kind: str
    base_url: str
    down: str  # why the provider is skipped as a whole (its key was refused), or ""
    targets: list[TargetHealth]  # this page's
    first: int  # the position of the page's first target among all of this provider's
    total: int


class ProvidersPage(msgspec.Struct, kw_only=True):
    providers: list[ProviderHealth]
    page: int
    pages: int


def percentile(sorted_values: list[float], p: float) -> float | None:
    """Nearest rank: the smallest value with at least ``p`` of the values at or below it."""
    if not sorted_values:
        return None
    return sorted_values[max(math.ceil(p * len(sorted_values)) - 1, 0)]


async def providers(state: GatewayState, now: float, page: int = 1) -> ProvidersPage:
    """Each provider's targets, PROVIDERS_PAGE of them on a page (page N shows each provider's Nth slice)."""
    runtime = state.runtime
    redact = Redactor(runtime.config)
    # Records name the upstream model; circuits and the page use the name clients use.
    public = {(d.provider.name, d.upstream): d.key for d in runtime.table.deployments.values()}
    latencies: dict[str, list[float]] = {}
    for provider_name, model, latency in await _store(state).recent_latencies(now - LATENCY_WINDOW_S,
                                                                               LATENCY_SAMPLES):
        latencies.setdefault(public.get((provider_name, model), f"{provider_name}/{model}"), []).append(latency)
    declared = {d.key for d in runtime.table.deployments.values()
                if d.provider.models is not None or any(m.provider == d.provider.name and m.name == d.name
                                                       for m in runtime.config.models)}
    declared |= {t for route in runtime.config.routes.values() for t in route.targets if "*" not in t}
    health = state.health
    clock = state.pipeline.clock()  # circuits keep the pipeline's monotonic time
    names = set(health.circuits) | set(latencies) | declared
    by_provider = {name: sorted(k for k in names if k.partition("/")[0] == name) for name in runtime.config.providers}
    pages = _pages(max((len(keys) for keys in by_provider.values()), default=0), PROVIDERS_PAGE)
    page = min(page, pages)
    first = (page - 1) * PROVIDERS_PAGE
    out = []
    for name, provider in runtime.config.providers.items():
        keys_here = by_provider[name]
        targets = []
        for key in keys_here[first:first + PROVIDERS_PAGE]:
            circuit = health.circuits.get(key)
            values = sorted(latencies.get(key, []))
            targets.append(TargetHealth(
                key=key, state=circuit.state if circuit else "—",
                error_rate=circuit.error_rate(clock) if circuit else None,
                latency_ewma_ms=circuit.latency_ewma_ms if circuit else None, samples=len(values),
                p50=percentile(values, 0.5), p95=percentile(values, 0.95), p99=percentile(values, 0.99),
                last_error=redact(circuit.last_error) if circuit else ""))
        down = health.provider_down.get(name)
        out.append(ProviderHealth(name=name, kind=provider.kind, base_url=safe_url(provider.base_url),
                                  down=redact(down[1]) if down else "", targets=targets, first=first,
                                  total=len(keys_here)))
    return ProvidersPage(providers=out, page=page, pages=pages)


# ------------------------------------------------------------------------------------------- requests


async def requests_page(state: GatewayState, before_id: int | None, key_id: str | None) -> list[dict[str, Any]]:
    return await _store(state).list_requests(before_id=before_id, key_id=key_id, limit=REQUESTS_PAGE)


class Attempt(msgspec.Struct, kw_only=True):
    provider: str | None = None
    model: str | None = None
    status_code: int | None = None
    error_type: str | None = None
    succeeded: bool = False
    latency_ms: float | None = None


class RequestDetail(msgspec.Struct, kw_only=True):
    row: dict[str, Any]
    routing: list[Attempt]
    request_body: str | None
    response_body: str | None


def _pretty(body: str | None) -> str | None:
    if body is None:
        return None
    try:
        return json.dumps(json.loads(body), indent=2, ensure_ascii=False)
    except ValueError:
        return body


async def request_detail(state: GatewayState, row_id: int) -> RequestDetail | None:
    row = await _store(state).get_request(row_id)
    if row is None:
        return None
    try:
        routing = msgspec.json.decode(row["routing"] or "[]", type=list[Attempt])
    except msgspec.DecodeError:
        routing = []
    return RequestDetail(row=row, routing=routing, request_body=_pretty(row["request_body"]),
                         response_body=_pretty(row["response_body"]))


# --------------------------------------------------------------------------------------------- config


class ConfigView(msgspec.Struct, kw_only=True):
    path: str
    sources: dict[str, str]
    reload_at: float
    reload_ok: bool
    reload_message: str
    sections: list[tuple[str, list[tuple[str, str]]]]


def config_view(state: GatewayState) -> ConfigView:
    config = state.config
    last = state.last_reload
    return ConfigView(path=str(config.path) if config.path else "(none: embedded defaults and environment)",
                      sources=dict(config.sources), reload_at=last.at, reload_ok=last.ok,
                      reload_message=Redactor(config)(last.message), sections=masked_config(config))
