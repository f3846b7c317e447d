"""Usage as people read it: a key's own spend and limits, and aggregates as JSON, a table or CSV.

Shared by ``GET /v1/usage``, the admin JSON endpoint and ``gateway usage`` so all three agree.
"""

from __future__ import annotations

import csv
import io
import time

import msgspec

from gateway.governance import Governor, Principal
from gateway.limits import period_end, period_start_day
from gateway.store import Aggregate, AggregateBy, Store


class KeyUsage(msgspec.Struct, kw_only=True):
    object: str = "usage"
    key: str
    key_id: str
    project: str | None
    period: str
    period_start: str
    period_end: str | None
    spent_usd: float
    budget_usd: float | None
    remaining_usd: float | None
    reserved_usd: float
    rpm: int | None
    tpm: int | None
    models: list[str] | None
    expires_at: str | None


async def key_usage(store: Store, governor: Governor, principal: Principal) -> KeyUsage:
    now = time.time()
    period = principal.budget_period
    start = period_start_day(period, now)
    budget = await governor.key_budget(principal)
    if budget is not None:
        spent, remaining, reserved = budget
    else:
        spent = (await store.spend_since(start, by="key_id")).get(principal.key_id, 0.0)
        remaining, reserved = None, 0.0
    end = period_end(period, now)
    return KeyUsage(
        key=principal.name, key_id=principal.key_id, project=principal.project, period=period, period_start=start,
        period_end=time.strftime("%Y-%m-%d", time.gmtime(end)) if end else None, spent_usd=round(spent, 10),
        budget_usd=principal.budget_usd, remaining_usd=round(remaining, 10) if remaining is not None else None,
        reserved_usd=round(reserved, 10), rpm=principal.rpm, tpm=principal.tpm,
        models=list(principal.models) if principal.models is not None else None,
        expires_at=time.strftime("%Y-%m-%d", time.gmtime(principal.expires_at)) if principal.expires_at else None,
    )


class AggregateReport(msgspec.Struct, kw_only=True):
    object: str = "usage.aggregate"
    by: str
    since: str | None
    until: str | None
    data: list[Aggregate]


BY_CHOICES: tuple[AggregateBy, ...] = ("key", "model", "project", "day")
COLUMNS = ("requests", "errors", "prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens",
           "cost_usd", "unpriced")


# A spreadsheet runs a cell that starts with one of these as a formula (=HYPERLINK(...) and worse).
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(text: str) -> str:
    """A text cell a spreadsheet shows as text: key holders choose project ids and model names."""
    return f"'{text}" if text.startswith(FORMULA_PREFIXES) else text


def as_csv(by: str, rows: list[Aggregate]) -> str:
    out = io.StringIO()
    # CRLF, as RFC 4180 has it: the writer then quotes a cell holding a lone CR too, which a spreadsheet
    # would otherwise take for the start of a new row (whose first cell could be a formula).
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([by, *COLUMNS])
    for row in rows:
        writer.writerow([csv_cell(row.group), *(getattr(row, c) for c in COLUMNS)])
    return out.getvalue()


def as_table(by: str, rows: list[Aggregate]) -> str:
    header = (by.upper(), *(c.upper() for c in COLUMNS))
    cells = [header] + [(row.group or "-", *(_cell(getattr(row, c)) for c in COLUMNS)) for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells) + "\n"


def _cell(value: int | float) -> str:
    return f"{value:.6f}" if isinstance(value, float) else str(value)
