"""Who may do what, how often and for how much: model allow-lists, rate limits and budgets per key.

Everything here is checked against memory. ``Governor.admit`` runs before a request goes upstream:
it takes from the RPM/TPM buckets (the key's, the global ones) and reserves the request's worst-case
cost against the key's and the project's budget. The ``Admission`` it returns is settled exactly once
when the request ends (success, error, or a client that went away mid-stream) with the real tokens and
cost. Native pass-through routes use the same two calls.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec

from gateway.catalog import format_usd
from gateway.config import Config, parse_expiry
from gateway.errors import BudgetExceeded, KeyExpired, PermissionDenied, RateLimited
from gateway.limits import Budget, TokenBucket, format_reset


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


class Governor:
    def __init__(self, config: Config, *, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.config = config
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
        if budgets and worst_cost is None:
            raise PermissionDenied(
                "This key has a budget, and the requested model has no known price, so its cost could not be "
                "counted: add its pricing under [[models]] in config.toml, or use a priced model.",
                code="price_unknown")
        cost = worst_cost or 0.0
        if cost < 0:  # NaN is kept as it is: it never fits a budget
            cost = 0.0
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
                raise BudgetExceeded(
                    f"Budget exceeded for this {owner}: {format_usd(budget.remaining(now))} of "
                    f"{format_usd(budget.limit)} remains for the current {budget.period}, and this request "
                    f"reserves {format_usd(cost)} up front: its worst case, the estimated prompt plus max_tokens "
                    f"(when max_tokens is not sent, the model's longest possible answer) at the model's prices. "
                    f"Send a smaller max_tokens to reserve less, or ask for a larger budget.",
                    headers=self.headers(principal, now))
            reserved.append(budget)
        tpm = [bucket for bucket, _, unit in taken if unit == "tokens"]
        return Admission(governor=self, principal=principal, project=project, tokens=tokens, reserved_usd=cost,
                         budgets=reserved, buckets=tpm, headers=self.headers(principal, now))

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
                raise self._limited(principal, unit, whose, amount, bucket, wait, now)
            taken.append((bucket, amount, unit))
        return taken

    def _limited(self, principal: Principal, unit: str, whose: str, amount: int, bucket: TokenBucket, wait: float,
                 now: float) -> RateLimited:
        headers = self.headers(principal, now)
        if wait == float("inf"):
            return RateLimited(f"Request too large: about {amount} {unit} requested, but {whose} allows "
                               f"{int(bucket.limit)} {unit} per minute. Lower max_tokens or shorten the prompt.",
                               headers=headers, code="request_too_large")
        headers["retry-after"] = str(max(1, round(wait + 0.5)))
        return RateLimited(f"Rate limit reached for {whose}: {int(bucket.limit)} {unit} per minute. "
                           f"Try again in {format_reset(wait)}.", headers=headers)

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
        for unit, bucket in (("requests", self._key_rpm.get(principal.key_id)),
                             ("tokens", self._key_tpm.get(principal.key_id))):
            if bucket is not None:
                headers[f"x-ratelimit-limit-{unit}"] = str(int(bucket.limit))
                headers[f"x-ratelimit-remaining-{unit}"] = str(bucket.remaining(now))
                headers[f"x-ratelimit-reset-{unit}"] = format_reset(bucket.reset_seconds(now))
        return headers

    def budget_of(self, key_id: str) -> Budget | None:
        return self._key_budgets.get(key_id)

    def project_budget(self, project: str) -> Budget | None:
        return self._project_budgets.get(project)


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
