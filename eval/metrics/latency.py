"""Latency percentiles, computed one way everywhere (nearest rank on the sorted values)."""

from __future__ import annotations

import math
from collections.abc import Sequence

PERCENTILES = (50, 90, 95, 99)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile: the smallest value with at least q% of values at or below it."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return float(ordered[rank - 1])


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    """`{"p50": ..., "p90": ..., "p95": ..., "p99": ...}`, all None when there are no values."""
    return {f"p{q}": (percentile(values, q) if values else None) for q in PERCENTILES}
