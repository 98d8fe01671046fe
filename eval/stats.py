"""The statistics behind `eval compare` and the gates' baseline check.

Two runs on the same examples differ by much less than the spread between examples, so the
comparison is *paired*: per example, B minus A, and a bootstrap over examples says whether the
mean difference is distinguishable from zero. A plain difference of means would call noise a win.
"""

from __future__ import annotations

from typing import Final, Literal

import numpy as np
import numpy.typing as npt

from .metrics.registry import Direction

CONFIDENCE: Final = 0.95
"""The confidence level of every interval the comparison reports (its table says "95% CI")."""

Verdict = Literal["better", "worse", "no change", "changed"]

_BOOTSTRAP_CELLS: Final = 1 << 21
"""Resampled cells drawn per block, so a large run does not need iterations × n memory at once."""


def paired_bootstrap(
    a: npt.ArrayLike,
    b: npt.ArrayLike,
    *,
    iterations: int = 2000,
    seed: int = 0,
    confidence: float = CONFIDENCE,
) -> tuple[float, float, float]:
    """Mean of `b - a` and its percentile bootstrap interval, resampling examples (pairs).

    Resampling pairs rather than each side separately keeps the per-example correlation, which
    is what makes small differences between two systems on the same examples detectable.
    Pairs with NaN on either side are dropped first. Deterministic for a given `seed`.

    Raises ValueError for arrays of different shapes, no complete pair, or bad parameters.
    """
    left = np.asarray(a, dtype=np.float64).ravel()
    right = np.asarray(b, dtype=np.float64).ravel()
    if left.shape != right.shape:
        raise ValueError(f"paired arrays differ in length: {left.size} and {right.size}")
    if iterations < 1:
        raise ValueError(f"iterations must be at least 1, got {iterations}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    keep = ~(np.isnan(left) | np.isnan(right))
    diffs = right[keep] - left[keep]
    n = diffs.size
    if n == 0:
        raise ValueError("no complete pairs to compare (all NaN or empty)")
    rng = np.random.default_rng(seed)
    means = np.empty(iterations, dtype=np.float64)
    block = max(1, _BOOTSTRAP_CELLS // n)
    for start in range(0, iterations, block):
        stop = min(iterations, start + block)
        indices = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = diffs[indices].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(diffs.mean()), float(low), float(high)


def verdict(direction: Direction, ci_low: float, ci_high: float) -> Verdict:
    """An interval that excludes 0 is a change; the metric's direction says which kind."""
    if ci_low <= 0.0 <= ci_high:
        return "no change"
    if direction == 0:
        return "changed"
    went_up = ci_low > 0.0
    return "better" if went_up == (direction > 0) else "worse"


__all__ = ["CONFIDENCE", "Verdict", "paired_bootstrap", "verdict"]
