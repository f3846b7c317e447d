"""Rate windows and budgets, in memory. Pure: every call takes the time (seconds since the epoch).

Rates are token buckets: a bucket of ``limit`` holds at most a minute's worth and refills at
``limit / 60`` a second, so a key may burst up to its per-minute limit and then goes at the steady
rate. Requests take 1 from the RPM bucket; tokens take their estimate (prompt estimate + max output)
from the TPM bucket up front, and the difference to the real usage is given back or taken after.

Budgets reserve a request's worst-case cost before it goes upstream and settle to the real cost when it
ends, so concurrent requests cannot overspend: a reservation that does not fit next to what is spent
and already reserved is refused. Periods reset on their UTC boundary (day, ISO week, month; "total"
never resets).

Every amount that arrives here is clamped first (``_amount``): a negative, NaN or infinite count from a
hostile client or upstream can neither fill a bucket past its limit, drain it beyond one minute's debt,
release more than was reserved, nor lower what was spent.
"""

from __future__ import annotations

import datetime
import math
from typing import Literal

Period = Literal["day", "week", "month", "total"]
EPOCH_DAY = "1970-01-01"


def period_start(period: Period | str, now: float) -> datetime.datetime:
    """The UTC start of the budget period holding ``now``."""
    day = datetime.datetime.fromtimestamp(now, datetime.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day
    if period == "week":
        return day - datetime.timedelta(days=day.weekday())
    if period == "month":
        return day.replace(day=1)
    return datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def period_end(period: Period | str, now: float) -> float | None:
    start = period_start(period, now)
    if period == "day":
        return (start + datetime.timedelta(days=1)).timestamp()
    if period == "week":
        return (start + datetime.timedelta(days=7)).timestamp()
    if period == "month":
        year, month = (start.year + 1, 1) if start.month == 12 else (start.year, start.month + 1)
        return start.replace(year=year, month=month).timestamp()
    return None


def period_start_day(period: Period | str, now: float) -> str:
    return period_start(period, now).strftime("%Y-%m-%d")


def _amount(value: float) -> float:
    """A quantity that can only be taken or given back: negative and NaN count as nothing."""
    return value if value > 0 else 0.0


class TokenBucket:
    __slots__ = ("limit", "rate", "tokens", "updated")

    def __init__(self, limit: int, now: float) -> None:
        self.limit = float(limit)
        self.rate = limit / 60.0
        self.tokens = float(limit)
        self.updated = now

    def _refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(self.limit, self.tokens + (now - self.updated) * self.rate)
            self.updated = now

    def try_take(self, amount: float, now: float) -> float:
        """Take ``amount`` and return 0, or take nothing and return the seconds until it would fit."""
        amount = _amount(amount)
        self._refill(now)
        if self.tokens >= amount:
            self.tokens -= amount
            return 0.0
        if amount > self.limit:
            return math.inf  # can never fit in one minute's worth
        return (amount - self.tokens) / self.rate

    def adjust(self, delta: float, now: float) -> None:
        """Give back (positive) or take more (negative, may go below zero) after the fact.

        The debt is floored at one minute's worth: however large a usage report, the bucket is full again
        within two minutes, so one request can never lock a key (or the gateway) out for longer."""
        if delta != delta:  # NaN: nothing to adjust by
            return
        self._refill(now)
        self.tokens = min(self.limit, max(-self.limit, self.tokens + delta))

    def remaining(self, now: float) -> int:
        self._refill(now)
        return max(int(self.tokens), 0)

    def reset_seconds(self, now: float) -> float:
        """Seconds until the bucket is full again (OpenAI's x-ratelimit-reset-* meaning)."""
        self._refill(now)
        return (self.limit - self.tokens) / self.rate


class Budget:
    """A USD budget over a period: settled spend plus what in-flight requests have reserved."""

    __slots__ = ("holds", "limit", "period", "period_ends", "period_started", "reserved", "spent")

    def __init__(self, limit: float, period: Period | str, spent: float, now: float) -> None:
        self.limit = limit
        self.period = period
        self._start_period(now)
        self.spent = spent
        self.reserved = 0.0
        self.holds = 0  # reservations not yet settled: none left means nothing is reserved, float dust included

    def _start_period(self, now: float) -> None:
        self.period_started = period_start(self.period, now).timestamp()
        ends = period_end(self.period, now)
        self.period_ends = math.inf if ends is None else ends

    def _roll(self, now: float) -> None:
        # Within the period (nearly always), no calendar arithmetic: working out the period's start cost
        # about 2 µs, and a request asks four times (issue 18's profile).
        if self.period_started <= now < self.period_ends:
            return
        start = period_start(self.period, now).timestamp()
        if start != self.period_started:
            self.spent = 0.0
        self._start_period(now)

    def remaining(self, now: float) -> float:
        self._roll(now)
        return max(self.limit - self.spent - self.reserved, 0.0)

    def try_reserve(self, amount: float, now: float) -> bool:
        """Hold ``amount`` (negative counts as 0; NaN never fits) if it fits beside spend and reservations."""
        if amount != amount:
            return False
        amount = _amount(amount)
        self._roll(now)
        if self.spent + self.reserved + amount > self.limit:
            return False
        self.reserved += amount
        self.holds += 1
        return True

    def settle(self, reserved: float, actual: float, now: float) -> None:
        """Release ``reserved`` (never more than is held) and count ``actual`` as spent (never a refund;
        an infinite or NaN cost counts as what was reserved)."""
        self._roll(now)
        reserved = min(_amount(reserved), self.reserved)
        self.holds = max(self.holds - 1, 0)
        self.reserved = self.reserved - reserved if self.holds else 0.0
        self.spent += _amount(actual) if math.isfinite(actual) else reserved

    def reconfigure(self, limit: float, period: Period | str, spent: float | None, now: float) -> None:
        """New limits from the CLI or a config reload; spend is kept unless the period changed."""
        if period != self.period:
            self.period = period
            self._start_period(now)
            if spent is not None:
                self.spent = spent
        self.limit = limit


def format_reset(seconds: float) -> str:
    """Durations as OpenAI writes them in x-ratelimit-reset-*: 20ms, 1.5s, 6m0s."""
    if seconds < 1:
        return f"{max(int(seconds * 1000), 0)}ms"
    if seconds < 60:
        return f"{seconds:.3g}s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m{rest}s"
