"""Per-target health: a circuit breaker and a latency EWMA. Pure: every call takes the time.

A circuit opens after ``circuit_failures`` consecutive failures, or when the error rate over the last
``circuit_window_s`` seconds exceeds ``circuit_error_rate`` (once ``circuit_min_requests`` outcomes
are in the window). After ``circuit_cooldown_s`` it lets one probe through (half-open): success closes
it, failure opens it again.

A provider whose own key is rejected is marked down as a whole until the cooldown passes or the config is
reloaded; since that turns fallback off for every client, one request never does it. Only an answer that
rejects the key itself (``key_rejected``) to a target the route table names counts, and the provider goes
down once ``PROVIDER_KEY_STRIKES`` different requests saw that within ``circuit_window_s``: a client
cannot craft a model name that answers 401 and take the provider away from everyone.

State per name is bounded: circuits of the route table's targets are kept; any other name a client sends
(``provider/anything`` passes through) gets a circuit in an LRU of ``UNROUTED_CIRCUITS``.
"""

from __future__ import annotations

import re
from collections import OrderedDict, deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Literal

import msgspec

from gateway.config import RoutingConfig

if TYPE_CHECKING:
    from gateway.router import RouteTable

CircuitState = Literal["closed", "open", "half_open"]
EWMA_ALPHA = 0.3
PROVIDER_KEY_STRIKES = 3  # distinct requests whose key was refused before the provider is skipped
UNROUTED_CIRCUITS = 1000  # circuits kept for names outside the route table, least recently used evicted
# Error codes that say the credential itself is bad (OpenAI and compatibles, Anthropic, Gemini).
_KEY_CODES = frozenset({"invalid_api_key", "authentication_error", "invalid_authentication", "api_key_invalid",
                        "unauthenticated", "incorrect_api_key", "invalid_x-api-key", "permission_error",
                        "permission_denied", "account_deactivated", "unauthorized"})


class Circuit:
    __slots__ = ("_cfg", "_outcomes", "consecutive_failures", "last_error", "latency_ewma_ms", "opened_at",
                 "probe_in_flight", "state")

    def __init__(self, cfg: RoutingConfig) -> None:
        self._cfg = cfg
        self.state: CircuitState = "closed"
        self.consecutive_failures = 0
        self.opened_at = 0.0
        self.probe_in_flight = False
        self.latency_ewma_ms: float | None = None
        self.last_error: str | None = None
        self._outcomes: deque[tuple[float, bool]] = deque()

    def available(self, now: float) -> bool:
        """May a request be sent now? (Does not claim the half-open probe: see ``acquire``.)"""
        if self.state == "closed":
            return True
        if self.state == "open":
            return now - self.opened_at >= self._cfg.circuit_cooldown_s
        return not self.probe_in_flight

    def acquire(self, now: float) -> None:
        """A request is being sent: past the cooldown, it becomes the one half-open probe."""
        if self.state == "open" and now - self.opened_at >= self._cfg.circuit_cooldown_s:
            self.state = "half_open"
        if self.state == "half_open":
            self.probe_in_flight = True

    def record(self, now: float, ok: bool, latency_ms: float | None = None, error: str | None = None) -> None:
        if latency_ms is not None and ok:
            prev = self.latency_ewma_ms
            self.latency_ewma_ms = latency_ms if prev is None else prev + EWMA_ALPHA * (latency_ms - prev)
        self._outcomes.append((now, ok))
        self._trim(now)
        if ok:
            self.consecutive_failures = 0
            if self.state == "half_open":
                self._close()
            return
        self.last_error = error
        self.consecutive_failures += 1
        if self.state == "half_open" or self._should_open():
            self.open(now)

    def open(self, now: float) -> None:
        self.state = "open"
        self.opened_at = now
        self.probe_in_flight = False

    def _close(self) -> None:
        self.state = "closed"
        self.probe_in_flight = False
        self._outcomes.clear()

    def _trim(self, now: float) -> None:
        horizon = now - self._cfg.circuit_window_s
        while self._outcomes and self._outcomes[0][0] < horizon:
            self._outcomes.popleft()

    def _should_open(self) -> bool:
        cfg = self._cfg
        if cfg.circuit_failures and self.consecutive_failures >= cfg.circuit_failures:
            return True
        if cfg.circuit_min_requests and len(self._outcomes) >= cfg.circuit_min_requests:
            failures = sum(1 for _, ok in self._outcomes if not ok)
            return failures / len(self._outcomes) > cfg.circuit_error_rate
        return False

    def error_rate(self, now: float) -> float:
        self._trim(now)
        if not self._outcomes:
            return 0.0
        return sum(1 for _, ok in self._outcomes if not ok) / len(self._outcomes)


def _codes(body: bytes) -> tuple[list[str], str]:
    """The error codes/types/statuses/reasons an upstream error body carries (lowercased), and its message."""
    try:
        decoded = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return [], body[:2000].decode("utf-8", "replace")
    err = decoded.get("error", decoded) if isinstance(decoded, dict) else None
    if not isinstance(err, dict):
        return [], err if isinstance(err, str) else ""
    codes = [str(err[f]).lower() for f in ("code", "type", "status") if isinstance(err.get(f), str | int)]
    details = err.get("details")
    if isinstance(details, list):
        codes += [str(d["reason"]).lower() for d in details if isinstance(d, dict) and isinstance(d.get("reason"), str)]
    message = err.get("message")
    return codes, message if isinstance(message, str) else ""


def key_rejected(status: int, body: bytes, model: str) -> bool:
    """Does this upstream answer say the gateway's own key is bad (rather than something about the request)?

    A 401, or a 403 with a code about the key, counts; one whose code or message is about the model (no
    access to it, no such model) does not, nor does any other status.
    """
    if status not in (401, 403):
        return False
    codes, message = _codes(body)
    text = message.lower()
    named = model and re.search(rf"(?<![\w.-]){re.escape(model.lower())}(?![\w.-])", text)
    if named or "model" in text or any("model" in code for code in codes):
        return False
    # 401 means "not authenticated" whatever the body's wording; a 403 may be about anything (a region,
    # a project's policy), so it counts only when its code is about the key.
    return status == 401 or any(code in _KEY_CODES for code in codes)


class HealthBook:
    """Circuits by target key (``provider/model``), kept across config reloads."""

    def __init__(self, cfg: RoutingConfig) -> None:
        self.cfg = cfg
        self.circuits: dict[str, Circuit] = {}
        self.provider_down: dict[str, tuple[float, str]] = {}  # provider -> (since, why)
        self._routed: frozenset[str] = frozenset()
        self._table: object = None
        self._unrouted: OrderedDict[str, None] = OrderedDict()  # names outside the route table, oldest first
        self._key_strikes: dict[str, dict[str, float]] = {}  # provider -> {request id: when its key was refused}

    def follow(self, table: RouteTable) -> None:
        """Keep circuits for this route table's targets; drop the rest (a reload may have removed names)."""
        if table is self._table:
            return
        self._table = table
        groups = (*table.groups.values(), table.auto)
        self.set_routed([*table.deployments, *(d.key for group in groups for d in group.members)])

    def set_routed(self, keys: Iterable[str]) -> None:
        self._routed = frozenset(keys)
        self.circuits = {k: c for k, c in self.circuits.items() if k in self._routed}
        self._unrouted.clear()

    def reconfigure(self, cfg: RoutingConfig) -> None:
        self.cfg = cfg
        for circuit in self.circuits.values():
            circuit._cfg = cfg

    def circuit(self, key: str) -> Circuit:
        circuit = self.circuits.get(key)
        if circuit is None:
            circuit = self.circuits[key] = Circuit(self.cfg)
        if key not in self._routed:
            self._unrouted[key] = None
            self._unrouted.move_to_end(key)
            if len(self._unrouted) > UNROUTED_CIRCUITS:
                oldest, _ = self._unrouted.popitem(last=False)
                del self.circuits[oldest]
        return circuit

    def available(self, key: str, provider: str, now: float) -> bool:
        down = self.provider_down.get(provider)
        if down is not None:
            if now - down[0] < self.cfg.circuit_cooldown_s:
                return False
            del self.provider_down[provider]
        circuit = self.circuits.get(key)
        return circuit is None or circuit.available(now)

    def key_refused(self, provider: str, target: str, request_id: str, now: float, error: str) -> bool:
        """The provider refused its key to one request for ``target``: True when that marks it down.

        Counted only for targets of the route table, once per request, and the provider is marked down
        (all its targets skipped until the cooldown passes) when ``PROVIDER_KEY_STRIKES`` requests within
        ``circuit_window_s`` saw it.
        """
        if target not in self._routed:
            return False
        strikes = self._key_strikes.setdefault(provider, {})
        horizon = now - self.cfg.circuit_window_s
        for rid in [rid for rid, at in strikes.items() if at < horizon]:
            del strikes[rid]
        strikes[request_id] = now
        if len(strikes) < PROVIDER_KEY_STRIKES:
            return False
        strikes.clear()
        self.provider_down[provider] = (now, error)
        return True

    def clear_provider_marks(self) -> None:
        """A reload may carry a new key: give every provider a fresh chance."""
        self.provider_down.clear()
        self._key_strikes.clear()
