"""Who may do what, how often and for how much: model allow-lists, rate limits and budgets per key.

Everything here is checked against memory. ``Governor.admit`` runs before a request goes upstream:
it takes from the RPM/TPM buckets (the key's, the global ones) and reserves the request's worst-case
cost against the key's and the project's budget. The ``Admission`` it returns is settled exactly once
when the request ends (success, error, or a client that went away mid-stream) with the real tokens and
cost. Native pass-through routes use the same two calls.
"""

from __future__ import annotations

import fnmatch
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import msgspec

from gateway.catalog import format_usd
from gateway.config import Config, parse_expiry
from gateway.errors import BudgetExceeded, KeyExpired, PermissionDenied, RateLimited, StateUnavailable
from gateway.limits import Budget, TokenBucket, format_reset, period_end, period_start_day

if TYPE_CHECKING:  # the Redis client is imported only when [state] backend = "redis" is configured
    from gateway.shared_state import Bucket, BudgetRef, RedisState

log = logging.getLogger("gateway")
# With on_unavailable = "allow", the outage is logged at most this often, not once per request.
UNLIMITED_WARNING_S = 10.0


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """A proxy key and everything the request path needs to know about it."""

    key_id: str
    name: str
    source: str = "cli"  # "cli" (the database) or "config" ([[keys]] in config.toml)
    project: str | None = None
    budget_usd: float | None = None
    budget_period: str = "month"
    rpm: int | None = None
    tpm: int | None = None
    models: tuple[str, ...] | None = None
    expires_at: float | None = None

    def check_expiry(self, now: float) -> None:
        if self.expires_at is not None and now >= self.expires_at:
            day = time.strftime("%Y-%m-%d", time.gmtime(self.expires_at))
            raise KeyExpired(f"This API key expired on {day} (UTC); ask for a new key.")

    def allows(self, name: str) -> bool:
        """Model allow-list: glob patterns over provider/model and group names."""
        return self.models is None or any(fnmatch.fnmatchcase(name, p) for p in self.models)


def config_principals(config: Config) -> list[tuple[str, Principal]]:
    """(secret, principal) for each [[keys]] entry of the config file."""
    out = []
    for key in config.keys:
        out.append((key.key, Principal(
            key_id=f"cfg_{key.name}", name=key.name, source="config", project=key.project,
            budget_usd=key.budget_usd, budget_period=key.budget_period, rpm=key.rpm, tpm=key.tpm,
            models=tuple(key.models) if key.models is not None else None,
            expires_at=parse_expiry(key.expires) if key.expires else None)))
    return out


class Hold(Protocol):
    """What a request holds from admission to its end, in memory or on Redis."""

    project: str | None
    headers: dict[str, str]
    settled: bool

    def settle(self, tokens: int | None, cost_usd: float | None) -> None: ...


@dataclass
class Admission:
    """One request's hold on the buckets and budgets, released exactly once by ``settle``."""

    governor: Governor
    principal: Principal
    project: str | None
    tokens: int
    reserved_usd: float
    budgets: list[Budget]
    buckets: list[TokenBucket]  # TPM buckets that took ``tokens``
    headers: dict[str, str] = field(default_factory=dict)
    settled: bool = False

    def settle(self, tokens: int | None, cost_usd: float | None) -> None:
        """``tokens``: real prompt + completion tokens (None: keep the estimate); ``cost_usd``: real cost."""
        if self.settled:
            return
        self.settled = True
        now = self.governor.clock()
        if tokens is not None:
            # A negative report (a hostile upstream) counts as none used: at most what was taken comes back.
            used = max(tokens, 0)
            for bucket in self.buckets:
                bucket.adjust(self.tokens - used, now)
        for budget in self.budgets:
            budget.settle(self.reserved_usd, cost_usd or 0.0, now)


@dataclass
class SharedAdmission:
    """A hold on Redis (``Governor.reserve`` with [state] backend = "redis"), settled exactly once."""

    shared: RedisState
    hold: str
    project: str | None
    tokens: int
    reserved_usd: float
    tpm: list[Bucket]
    budgets: list[BudgetRef]
    headers: dict[str, str] = field(default_factory=dict)
    settled: bool = False

    def settle(self, tokens: int | None, cost_usd: float | None) -> None:
        """As ``Admission.settle``: a negative report counts as none used; a cost that is not finite counts
        as what was reserved; nothing is refunded."""
        if self.settled:
            return
        self.settled = True
        give_back = self.tokens - max(tokens, 0) if tokens is not None else 0
        cost = cost_usd or 0.0
        spent = (cost if cost > 0 else 0.0) if math.isfinite(cost) else self.reserved_usd
        if self.tpm or self.budgets:
            self.shared.settle(self.hold, self.tpm, give_back, self.budgets, spent)


class Governor:
    def __init__(self, config: Config, *, clock: Callable[[], float] = time.time,
                 shared: RedisState | None = None) -> None:
        self.clock = clock
        self.config = config
        # With [state] backend = "redis", keys with limits are admitted there (``reserve``); the buckets and
        # budgets below then only say which limits exist.
        self.shared = shared
        self._allowed_since_warning = -math.inf
        now = clock()
        self._key_rpm: dict[str, TokenBucket] = {}
        self._key_tpm: dict[str, TokenBucket] = {}
        self._key_budgets: dict[str, Budget] = {}
        self._project_budgets: dict[str, Budget] = {}
        self._global_rpm = TokenBucket(config.limits.rpm, now) if config.limits.rpm else None
        self._global_tpm = TokenBucket(config.limits.tpm, now) if config.limits.tpm else None
        self._provider_rpm: dict[str, TokenBucket] = {}
        self._provider_tpm: dict[str, TokenBucket] = {}
        self.reconfigure(config)

    # ------------------------------------------------------------------------------- configuration

    def reconfigure(self, config: Config) -> None:
        now = self.clock()
        self.config = config
        self._global_rpm = _resize(self._global_rpm, config.limits.rpm, now)
        self._global_tpm = _resize(self._global_tpm, config.limits.tpm, now)
        for name, limit in config.limits.providers.items():
            _set(self._provider_rpm, name, limit.rpm, now)
            _set(self._provider_tpm, name, limit.tpm, now)
        for name in set(self._provider_rpm) | set(self._provider_tpm):
            if name not in config.limits.providers:
                self._provider_rpm.pop(name, None)
                self._provider_tpm.pop(name, None)
        for name, project in config.projects.items():
            _set_budget(self._project_budgets, name, project.budget_usd, project.budget_period, 0.0, now)
        for name in [n for n in self._project_budgets if n not in config.projects]:
            del self._project_budgets[name]

    def load_project_spend(self, project_spend: dict[str, float]) -> None:
        """The current period's settled spend per project, read from the store at start."""
        for project, budget in self._project_budgets.items():
            budget.spent = project_spend.get(project, 0.0)

    def configure_key(self, principal: Principal, spent: float = 0.0) -> None:
        now = self.clock()
        _set(self._key_rpm, principal.key_id, principal.rpm, now)
        _set(self._key_tpm, principal.key_id, principal.tpm, now)
        _set_budget(self._key_budgets, principal.key_id, principal.budget_usd, principal.budget_period, spent, now)

    # ------------------------------------------------------------------------------------- checking

    def key_budget_remaining(self, key_id: str, now: float) -> float | None:
        """What the key's budget has left (None: the key has no budget); for the metrics gauge."""
        budget = self._key_budgets.get(key_id)
        return budget.remaining(now) if budget is not None else None

    def project_for(self, principal: Principal, requested: str | None) -> str | None:
        if principal.project and requested and requested != principal.project:
            raise PermissionDenied(f"This key belongs to project '{principal.project}', not '{requested}'.",
                                   param="project_id", code="project_not_allowed")
        return principal.project or requested

    def admit(self, principal: Principal, project: str | None, tokens: int, worst_cost: float | None) -> Admission:
        now = self.clock()
        # Whatever the caller computed, nothing is taken or reserved below zero (the door refuses negative
        # max_tokens; this holds for every route, native ones included).
        tokens = max(tokens, 0)
        budgets = [b for b in (self._key_budgets.get(principal.key_id),
                               self._project_budgets.get(project) if project else None) if b is not None]
        cost = _reserve_cost(bool(budgets), worst_cost)
        taken = self._take_rates(principal, tokens, now)
        reserved: list[Budget] = []
        for budget in budgets:
            if not budget.try_reserve(cost, now):
                # Refused: nothing of this request stays held.
                for earlier in reserved:
                    earlier.settle(cost, 0.0, now)
                for bucket, amount, _ in taken:
                    bucket.adjust(amount, now)
                owner = f"project '{project}'" if budget is self._project_budgets.get(project or "") else "key"
                raise _over_budget(owner, budget.remaining(now), budget.limit, budget.period, cost,
                                   self.headers(principal, now))
            reserved.append(budget)
        tpm = [bucket for bucket, _, unit in taken if unit == "tokens"]
        return Admission(governor=self, principal=principal, project=project, tokens=tokens, reserved_usd=cost,
                         budgets=reserved, buckets=tpm, headers=self.headers(principal, now))

    async def reserve(self, principal: Principal, project: str | None, tokens: int,
                      worst_cost: float | None) -> Hold:
        """Admission on the configured state: in memory (``admit``, no I/O), or on Redis in one script call
        for a key with limits (a key without any never waits for Redis, nor fails when it is down)."""
        if self.shared is None:
            return self.admit(principal, project, tokens, worst_cost)
        from gateway.shared_state import Admitted, Bucket, BudgetRef, Limited  # loaded with the Redis client

        tokens = max(tokens, 0)
        limits = self.config.limits
        rates = [(scope, limit, amount, unit, whose) for scope, limit, amount, unit, whose in (
            (f"key:{principal.key_id}:rpm", principal.rpm, 1, "requests", "this key"),
            (f"key:{principal.key_id}:tpm", principal.tpm, tokens, "tokens", "this key"),
            ("global:rpm", limits.rpm, 1, "requests", "the gateway"),
            ("global:tpm", limits.tpm, tokens, "tokens", "the gateway")) if limit]
        owned: list[tuple[str, str, float, str]] = []  # (budget name, owner as said, limit, period)
        if principal.budget_usd is not None:
            owned.append((f"key:{principal.key_id}", "key", principal.budget_usd, principal.budget_period))
        if project is not None and (spec := self.config.projects.get(project)) and spec.budget_usd is not None:
            owned.append((f"project:{project}", f"project '{project}'", spec.budget_usd, spec.budget_period))
        if not rates and not owned:
            return self.admit(principal, project, tokens, worst_cost)
        cost = _reserve_cost(bool(owned), worst_cost)
        if cost != cost:  # NaN never fits a budget (as in memory)
            raise _over_budget(owned[0][1], 0.0, owned[0][2], owned[0][3], cost, {})
        now = self.clock()
        buckets = [Bucket(scope, limit, amount) for scope, limit, amount, _, _ in rates]
        refs = [BudgetRef(name, period_start_day(period, now), limit, cost, _expire_at(period, now))
                for name, _, limit, period in owned]
        try:
            hold, outcome = await self.shared.admit(buckets, refs)
        except StateUnavailable as exc:
            if self.config.state.on_unavailable != "allow":
                raise
            if now - self._allowed_since_warning >= UNLIMITED_WARNING_S:
                self._allowed_since_warning = now
                log.warning("%s; serving keys with limits unlimited ([state] on_unavailable = \"allow\")", exc)
            return Admission(governor=self, principal=principal, project=project, tokens=tokens, reserved_usd=0.0,
                             budgets=[], buckets=[])
        headers: dict[str, str] = {}
        left = outcome.left if isinstance(outcome, Admitted) else None
        for i, (_, limit, _, unit, whose) in enumerate(rates):
            if whose == "this key":
                headers[f"x-ratelimit-limit-{unit}"] = str(limit)
                if left is not None:
                    headers[f"x-ratelimit-remaining-{unit}"] = str(max(int(left[i]), 0))
                    headers[f"x-ratelimit-reset-{unit}"] = format_reset((limit - left[i]) * 60 / limit)
        if isinstance(outcome, Limited):
            _, rate, amount, unit, whose = rates[outcome.index]
            raise _rate_limited(unit, whose, amount, rate, outcome.wait, headers)
        if not isinstance(outcome, Admitted):
            _, owner, budget_usd, period = owned[outcome.index]
            raise _over_budget(owner, outcome.remaining, budget_usd, period, cost, headers)
        tpm = [bucket for bucket, (_, _, _, unit, _) in zip(buckets, rates, strict=True) if unit == "tokens"]
        return SharedAdmission(shared=self.shared, hold=hold, project=project, tokens=tokens, reserved_usd=cost,
                               tpm=tpm, budgets=refs, headers=headers)

    def _take_rates(self, principal: Principal, tokens: int, now: float) -> list[tuple[TokenBucket, int, str]]:
        """Take from every applicable bucket, or from none (giving back) and raise RateLimited."""
        checks = [
            (self._key_rpm.get(principal.key_id), 1, "requests", "this key"),
            (self._key_tpm.get(principal.key_id), tokens, "tokens", "this key"),
            (self._global_rpm, 1, "requests", "the gateway"),
            (self._global_tpm, tokens, "tokens", "the gateway"),
        ]
        taken: list[tuple[TokenBucket, int, str]] = []
        for bucket, amount, unit, whose in checks:
            if bucket is None:
                continue
            wait = bucket.try_take(amount, now)
            if wait:
                for done, took, _ in taken:
                    done.adjust(took, now)
                raise _rate_limited(unit, whose, amount, int(bucket.limit), wait, self.headers(principal, now))
            taken.append((bucket, amount, unit))
        return taken

    def provider_admit(self, provider: str, tokens: int) -> float:
        """Per-provider limits, checked for each target: 0 when it may be tried, else seconds to wait."""
        now = self.clock()
        tokens = max(tokens, 0)
        rpm, tpm = self._provider_rpm.get(provider), self._provider_tpm.get(provider)
        if rpm is not None and (wait := rpm.try_take(1, now)):
            return wait
        if tpm is not None and (wait := tpm.try_take(tokens, now)):
            if rpm is not None:
                rpm.adjust(1, now)
            return wait
        return 0.0

    def provider_bucket(self, provider: str) -> TokenBucket | None:
        return self._provider_tpm.get(provider)

    def headers(self, principal: Principal, now: float) -> dict[str, str]:
        """OpenAI's x-ratelimit-* headers for the key's own limits (none when the key has none)."""
        headers: dict[str, str] = {}
        if self.shared is not None:  # the buckets are on Redis: its admission reply carries these
            return headers
        for unit, bucket in (("requests", self._key_rpm.get(principal.key_id)),
                             ("tokens", self._key_tpm.get(principal.key_id))):
            if bucket is not None:
                headers[f"x-ratelimit-limit-{unit}"] = str(int(bucket.limit))
                headers[f"x-ratelimit-remaining-{unit}"] = str(bucket.remaining(now))
                headers[f"x-ratelimit-reset-{unit}"] = format_reset(bucket.reset_seconds(now))
        return headers

    async def key_budget(self, principal: Principal) -> tuple[float, float, float] | None:
        """(spent, remaining, reserved) of the key's budget in its current period; None without one. With
        [state] backend = "redis", as Redis counts it for every process."""
        budget = self._key_budgets.get(principal.key_id)
        if budget is None:
            return None
        now = self.clock()
        if self.shared is None:
            return budget.spent, budget.remaining(now), budget.reserved
        spent, reserved = await self.shared.budget(f"key:{principal.key_id}",
                                                   period_start_day(principal.budget_period, now))
        return spent, max(budget.limit - spent - reserved, 0.0), reserved

    def budget_of(self, key_id: str) -> Budget | None:
        return self._key_budgets.get(key_id)

    def project_budget(self, project: str) -> Budget | None:
        return self._project_budgets.get(project)


def _reserve_cost(budgeted: bool, worst_cost: float | None) -> float:
    if budgeted and worst_cost is None:
        raise PermissionDenied(
            "This key has a budget, and the requested model has no known price, so its cost could not be "
            "counted: add its pricing under [[models]] in config.toml, or use a priced model.",
            code="price_unknown")
    cost = worst_cost or 0.0
    return 0.0 if cost < 0 else cost  # NaN is kept as it is: it never fits a budget


def _expire_at(period: str, now: float) -> int:
    """When a period's counters may go: a day after it ends (late settlements land), never for "total"."""
    end = period_end(period, now)
    return int(end) + 86400 if end is not None else 0


def _over_budget(owner: str, remaining: float, limit: float, period: str, cost: float,
                 headers: dict[str, str]) -> BudgetExceeded:
    return BudgetExceeded(
        f"Budget exceeded for this {owner}: {format_usd(remaining)} of {format_usd(limit)} remains for the "
        f"current {period}, and this request reserves {format_usd(cost)} up front: its worst case, the estimated "
        f"prompt plus max_tokens (when max_tokens is not sent, the model's longest possible answer) at the "
        f"model's prices. Send a smaller max_tokens to reserve less, or ask for a larger budget.",
        headers=headers)


def _rate_limited(unit: str, whose: str, amount: int, limit: int, wait: float,
                  headers: dict[str, str]) -> RateLimited:
    if wait == math.inf:
        return RateLimited(f"Request too large: about {amount} {unit} requested, but {whose} allows "
                           f"{limit} {unit} per minute. Lower max_tokens or shorten the prompt.",
                           headers=headers, code="request_too_large")
    headers["retry-after"] = str(max(1, round(wait + 0.5)))
    return RateLimited(f"Rate limit reached for {whose}: {limit} {unit} per minute. "
                       f"Try again in {format_reset(wait)}.", headers=headers)


def _resize(bucket: TokenBucket | None, limit: int | None, now: float) -> TokenBucket | None:
    if not limit:
        return None
    if bucket is None or bucket.limit != limit:
        return TokenBucket(limit, now)
    return bucket


def _set(buckets: dict[str, TokenBucket], name: str, limit: int | None, now: float) -> None:
    resized = _resize(buckets.get(name), limit, now)
    if resized is None:
        buckets.pop(name, None)
    else:
        buckets[name] = resized


def _set_budget(budgets: dict[str, Budget], name: str, limit: float | None, period: str, spent: float,
                now: float) -> None:
    if limit is None:
        budgets.pop(name, None)
        return
    existing = budgets.get(name)
    if existing is None:
        budgets[name] = Budget(limit, period, spent, now)
    else:
        existing.reconfigure(limit, period, spent, now)
