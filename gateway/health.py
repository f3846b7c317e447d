"""Per-target health: a circuit breaker and a latency EWMA. Pure: every call takes the time.

A circuit opens after ``circuit_failures`` consecutive failures, or when the error rate over the last
``circuit_window_s`` seconds exceeds ``circuit_error_rate`` (once ``circuit_min_requests`` outcomes
are in the window). After ``circuit_cooldown_s`` it lets one probe through (half-open): success closes
it, failure opens it again. A provider whose own key is rejected is marked down as a whole until the
cooldown passes or the config is reloaded.
"""

from __future__ import annotations

from collections import deque
from typing import Literal

from gateway.config import RoutingConfig

CircuitState = Literal["closed", "open", "half_open"]
EWMA_ALPHA = 0.3


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


class HealthBook:
    """Circuits by target key (``provider/model``), kept across config reloads."""

    def __init__(self, cfg: RoutingConfig) -> None:
        self.cfg = cfg
        self.circuits: dict[str, Circuit] = {}
        self.provider_down: dict[str, tuple[float, str]] = {}  # provider -> (since, why)

    def reconfigure(self, cfg: RoutingConfig) -> None:
        self.cfg = cfg
        for circuit in self.circuits.values():
            circuit._cfg = cfg

    def circuit(self, key: str) -> Circuit:
        circuit = self.circuits.get(key)
        if circuit is None:
            circuit = self.circuits[key] = Circuit(self.cfg)
        return circuit

    def available(self, key: str, provider: str, now: float) -> bool:
        down = self.provider_down.get(provider)
        if down is not None:
            if now - down[0] < self.cfg.circuit_cooldown_s:
                return False
            del self.provider_down[provider]
        circuit = self.circuits.get(key)
        return circuit is None or circuit.available(now)

    def mark_provider_down(self, provider: str, now: float, error: str) -> None:
        """The provider refused our key: all its targets are skipped until the cooldown passes."""
        self.provider_down[provider] = (now, error)

    def clear_provider_marks(self) -> None:
        """A reload may carry a new key: give every provider a fresh chance."""
        self.provider_down.clear()
