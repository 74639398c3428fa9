"""Confidence intervals: Wilson for proportions, percentile bootstrap for means (95%)."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

Z95 = 1.959963984540054


def wilson_interval(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion (Wilson 1927, eq. 4); (0, 1) when n == 0.

    ``successes`` may be fractional (ties counted as halves).
    """
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(max(p * (1 - p) / n + z * z / (4 * n * n), 0.0)) / denom
    # the interval contains p exactly (rounding can put a bound 1e-18 on the wrong side of it)
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))


def bootstrap_mean_interval(
    values: Sequence[float], n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (Efron & Tibshirani 1993, §13.3), seeded.

    Returns ``(nan, nan)`` for no values and ``(v, v)`` for one value.
    """
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    if n == 1:
        return float(values[0]), float(values[0])
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(values, k=n)) / n for _ in range(n_boot))
    lo_i = math.floor((1 - level) / 2 * n_boot)
    hi_i = min(n_boot - 1, math.ceil((1 + level) / 2 * n_boot) - 1)
    return means[lo_i], means[hi_i]
