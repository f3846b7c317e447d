"""Pure number crunching for the harness: percentiles, medians of per-round figures, growth rates."""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import median


def percentile(values: Sequence[float], pct: float) -> float:
    """The ``pct``-th percentile (0-100) with linear interpolation between closest ranks (numpy's default).

    NaN for no values, so an empty sample shows up as "n/a" in the report instead of a fake zero.
    """
    if not 0 <= pct <= 100:
        raise ValueError(f"percentile must be within 0-100, got {pct}")
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(values: Sequence[float]) -> dict[str, float]:
    """The figures reported for one latency sample, in the sample's unit."""
    return {"n": len(values), "p50": percentile(values, 50), "p90": percentile(values, 90),
            "p99": percentile(values, 99), "max": max(values) if values else math.nan}


def added(rounds_target: Sequence[Sequence[float]], rounds_base: Sequence[Sequence[float]],
          pct: float) -> float:
    """Median over rounds of (target's pct-th percentile minus the baseline's) in the same round.

    Rounds are interleaved in time, so a noisy moment on the machine hits both sides of one difference;
    the median over rounds then drops the rounds where it did not hit both evenly.
    """
    diffs = [percentile(t, pct) - percentile(b, pct)
             for t, b in zip(rounds_target, rounds_base, strict=True) if t and b]
    return median(diffs) if diffs else math.nan


def slope_per_minute(samples: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) samples, in value units per minute."""
    if len(samples) < 2:
        return math.nan
    n = len(samples)
    mean_t = sum(t for t, _ in samples) / n
    mean_v = sum(v for _, v in samples) / n
    var = sum((t - mean_t) ** 2 for t, _ in samples)
    if var == 0:
        return math.nan
    cov = sum((t - mean_t) * (v - mean_v) for t, v in samples)
    return cov / var * 60
