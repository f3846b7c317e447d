"""Chart geometry for the admin page's inline SVG: plain numbers, laid out here; the template draws them.

Nothing here writes markup, so every label reaches the page through jinja2's autoescaping. The SVG is
drawn in a fixed viewBox and scales to its container's width.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import msgspec

WIDTH = 600.0
HEIGHT = 240.0
# Plot area inside the viewBox: room on the left for the value labels, below for the x labels.
LEFT, RIGHT, TOP, BOTTOM = 84.0, 10.0, 12.0, 30.0
X_LABELS = 6
TICKS = 4
Unit = Literal["usd", "count"]


class Bar(msgspec.Struct, frozen=True, kw_only=True):
    x: float
    y: float
    w: float
    h: float
    title: str  # the tooltip: label and value


class Tick(msgspec.Struct, frozen=True, kw_only=True):
    at: float  # y for the value axis, x for the category axis
    label: str


class Chart(msgspec.Struct, frozen=True, kw_only=True):
    title: str
    kind: str  # "bars" or "line"
    width: float
    height: float
    left: float
    right: float  # x of the plot's right edge
    top: float
    bottom: float  # y of the baseline
    bars: list[Bar]
    points: str  # the line's polyline points, "x,y x,y ..."
    area: str  # the same line closed down to the baseline
    y_ticks: list[Tick]
    x_ticks: list[Tick]
    total: str
    empty: bool


def nice_step(value: float, *, whole: bool) -> float:
    """The smallest 1, 2, 2.5 or 5 times a power of ten at or above ``value`` (one tick's span); at least 1
    for whole numbers, so count axes never show fractions."""
    if value <= 0:
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    step = next(float(m * power) for m in (1, 2, 2.5, 5, 10) if value <= m * power * (1 + 1e-9))
    return max(step, 1.0) if whole else step


def _decimals(values: Sequence[float], step: float) -> int:
    """Just enough decimals to tell the ticks apart (0.005 steps need three)."""
    decimals = 0
    while decimals < 8 and any(abs(round(v, decimals) - v) > step * 1e-6 for v in values):
        decimals += 1
    return decimals


def _label(value: float, unit: Unit, decimals: int) -> str:
    if unit == "usd":
        return f"${value:,.{max(decimals, 2)}f}"
    return f"{value:,.{decimals}f}"


def chart(title: str, points: Sequence[tuple[str, float, str]], unit: Unit, *, kind: str = "bars",
          total: str = "") -> Chart:
    """A bar or line chart of (x label, value, tooltip) points, in order, with value ticks and a few x labels."""
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM
    baseline = TOP + plot_h
    step = nice_step(max((v for _, v, _ in points), default=0.0) / TICKS, whole=unit == "count")
    top_value = step * TICKS
    n = max(len(points), 1)
    slot = plot_w / n

    def y_of(value: float) -> float:
        return round(baseline - plot_h * value / top_value, 2)

    bars: list[Bar] = []
    coords: list[tuple[float, float]] = []
    for i, (_, value, tooltip) in enumerate(points):
        x = LEFT + i * slot
        if kind == "bars":
            gap = min(slot * 0.25, 6.0)
            y = y_of(value)
            bars.append(Bar(x=round(x + gap / 2, 2), y=y, w=round(max(slot - gap, 1.0), 2), h=round(baseline - y, 2),
                            title=tooltip))
        else:
            coords.append((round(x + slot / 2, 2), y_of(value)))
            # An invisible full-height strip per point carries the point's tooltip.
            bars.append(Bar(x=round(x, 2), y=TOP, w=round(slot, 2), h=round(plot_h, 2), title=tooltip))
    tick_values = [step * i for i in range(TICKS + 1)]
    decimals = _decimals(tick_values, step)
    y_ticks = [Tick(at=y_of(v), label=_label(v, unit, decimals)) for v in tick_values]
    every = max(1, math.ceil(len(points) / X_LABELS))
    x_ticks = [Tick(at=round(LEFT + (i + 0.5) * slot, 2), label=label)
               for i, (label, _, _) in enumerate(points) if i % every == 0]
    line = " ".join(f"{x},{y}" for x, y in coords)
    area = f"{coords[0][0]},{baseline} {line} {coords[-1][0]},{baseline}" if coords else ""
    return Chart(title=title, kind=kind, width=WIDTH, height=HEIGHT, left=LEFT, right=WIDTH - RIGHT, top=TOP,
                 bottom=baseline, bars=bars, points=line, area=area, y_ticks=y_ticks, x_ticks=x_ticks, total=total,
                 empty=not any(v for _, v, _ in points))


def budget_fraction(spent: float, budget: float | None) -> float | None:
    """How full a budget bar is, 0 to 1 (None: the key has no budget)."""
    if budget is None:
        return None
    if budget <= 0:
        return 1.0
    return min(max(spent / budget, 0.0), 1.0)
