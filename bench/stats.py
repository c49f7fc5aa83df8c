"""Small helpers for the figures: percentiles and rounding."""

from __future__ import annotations

import math


def percentile(values: list[float], p: float) -> float | None:
    """The nearest-rank percentile (p in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def ms(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def summary(latencies_ms: list[float]) -> dict[str, float | None]:
    return {
        "p50_ms": ms(percentile(latencies_ms, 50)),
        "p99_ms": ms(percentile(latencies_ms, 99)),
        "max_ms": ms(max(latencies_ms) if latencies_ms else None),
    }
