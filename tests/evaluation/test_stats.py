"""Intervals: Wilson against published values, bootstrap determinism and coverage of the mean."""

from __future__ import annotations

import math

import pytest

from prefvec.evaluation.stats import bootstrap_mean_interval, wilson_interval


def test_wilson_known_values() -> None:
    # 8/10: (0.4902, 0.9433) (Newcombe 1998, table I method 3 gives 0.4902-0.9433)
    lo, hi = wilson_interval(8, 10)
    assert (lo, hi) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert wilson_interval(0, 5)[0] == 0.0 and wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = wilson_interval(2.5, 5)  # ties as halves: symmetric about 1/2
    assert lo == pytest.approx(1 - hi)


def test_bootstrap_deterministic_and_brackets_mean() -> None:
    vals = [0.1, 0.9, 0.4, 0.7, 0.3, 0.8, 0.2, 0.6]
    a, b = bootstrap_mean_interval(vals, seed=1), bootstrap_mean_interval(vals, seed=1)
    assert a == b
    mean = sum(vals) / len(vals)
    assert a[0] < mean < a[1] and a[0] >= 0.1 and a[1] <= 0.9
    assert all(math.isnan(x) for x in bootstrap_mean_interval([]))
