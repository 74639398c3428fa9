"""The pairwise leaderboard (pure functions): Bradley–Terry against hand-computed fits and the
score equations, a simulation with known strengths, seeded bootstrap intervals."""

from __future__ import annotations

import math
import random

import pytest

from prefvec.server.leaderboard import (
    Vote,
    bootstrap_intervals,
    bradley_terry,
    pair_counts,
    standings,
)


def votes_of(pairs: list[tuple[str, str, int]], outcome: str = "win") -> list[Vote]:
    return [Vote(a, b, outcome) for a, b, n in pairs for _ in range(n)]


def test_two_arms_by_hand() -> None:
    """A beats B 3 times out of 4: the MLE has π_A / π_B = 3, so θ = ±ln(3) / 2."""
    w = pair_counts(["A", "B"], votes_of([("A", "B", 3), ("B", "A", 1)]))
    assert w == [[0.0, 3.0], [1.0, 0.0]]
    theta = bradley_terry(w, prior=0.0)
    assert theta == pytest.approx([math.log(3) / 2, -math.log(3) / 2], abs=1e-9)


def test_three_arms_by_hand() -> None:
    """Counts consistent with π = (4, 2, 1): the score equations hold there (worked out by hand:
    W_A = 3·4/6 + 5·4/5 = 6, W_B = 3·2/6 + 3·2/3 = 3, W_C = 3·1/3 + 5·1/5 = 2)."""
    votes = votes_of([("A", "B", 2), ("B", "A", 1), ("B", "C", 2), ("C", "B", 1)])
    votes += votes_of([("A", "C", 4), ("C", "A", 1)])
    theta = bradley_terry(pair_counts(["A", "B", "C"], votes), prior=0.0)
    ln2 = math.log(2)
    assert theta == pytest.approx([ln2, 0.0, -ln2], abs=1e-9)


def test_ties_count_half_a_win_each() -> None:
    """One win and one tie for A: w_AB = 1.5, w_BA = 0.5, so π_A / π_B = 3."""
    votes = [Vote("A", "B", "win"), Vote("B", "A", "tie")]
    assert pair_counts(["A", "B"], votes) == [[0.0, 1.5], [0.5, 0.0]]
    both_bad = [Vote("A", "B", "win"), Vote("A", "B", "both_bad")]
    assert pair_counts(["A", "B"], both_bad) == [[0.0, 1.5], [0.5, 0.0]]
    theta = bradley_terry(pair_counts(["A", "B"], votes), prior=0.0)
    assert theta[0] - theta[1] == pytest.approx(math.log(3), abs=1e-9)


def test_fit_solves_the_score_equations() -> None:
    """Oracle for any data: at the MLE each arm's wins equal its expected wins."""
    rng = random.Random(5)
    arms = list("ABCDE")
    votes = [Vote(*rng.sample(arms, 2), rng.choice(["win", "win", "tie"])) for _ in range(300)]
    w = pair_counts(arms, votes)
    theta = bradley_terry(w, prior=0.0)
    for i in range(len(arms)):
        expected = sum(
            (w[i][j] + w[j][i]) / (1 + math.exp(theta[j] - theta[i]))
            for j in range(len(arms))
            if j != i
        )
        assert sum(w[i]) == pytest.approx(expected, abs=1e-7)
    assert sum(theta) == pytest.approx(0.0, abs=1e-9)


def test_prior_keeps_an_arm_that_never_won_finite() -> None:
    votes = votes_of([("A", "B", 50), ("A", "C", 50), ("B", "C", 50)])
    theta = bradley_terry(pair_counts(["A", "B", "C"], votes))
    assert all(math.isfinite(t) for t in theta) and theta[0] > theta[1] > theta[2]


def test_simulation_recovers_known_strengths() -> None:
    """Votes drawn from a BT model with known θ: the fit is close, the bootstrap interval
    covers the truth, and the order is recovered."""
    truth = {"w": 1.0, "x": 0.4, "y": -0.3, "z": -1.1}
    arms = list(truth)
    rng = random.Random(0)
    votes = []
    for _ in range(3000):
        a, b = rng.sample(arms, 2)
        p = 1 / (1 + math.exp(truth[b] - truth[a]))
        votes.append(Vote(a, b) if rng.random() < p else Vote(b, a))
    rows = standings(arms, votes, seed=1)
    by = {r.arm: r for r in rows}
    for arm, t in truth.items():
        row = by[arm]
        assert row.bt_score == pytest.approx(t, abs=0.15)
        assert row.bt_ci_low is not None and row.bt_ci_high is not None
        assert row.bt_ci_low <= t <= row.bt_ci_high
        assert row.bt_ci_high - row.bt_ci_low < 0.6  # informative, not (-inf, inf)
    assert sorted(arms, key=lambda a: -(by[a].bt_score or 0)) == arms


def test_standings_counts_and_win_rate_interval() -> None:
    votes = [*votes_of([("A", "B", 3)]), Vote("B", "A", "tie")]
    a, b = standings(["A", "B"], votes)
    assert (a.battles, a.wins, a.losses, a.ties) == (4, 3, 0, 1)
    assert (b.battles, b.wins, b.losses, b.ties) == (4, 0, 3, 1)
    assert a.win_rate == pytest.approx(3.5 / 4) and b.win_rate == pytest.approx(0.5 / 4)
    assert a.win_rate_ci_low is not None and a.win_rate_ci_high is not None
    assert a.win_rate_ci_low < 3.5 / 4 < a.win_rate_ci_high <= 1.0
    # two arms: no bootstrap (the win-rate interval says it); scores still there
    assert a.bt_ci_low is None and a.bt_ci_high is None
    assert a.bt_score is not None and b.bt_score is not None and a.bt_score > b.bt_score


def test_wilson_interval_of_three_of_four_by_hand() -> None:
    (a, _) = standings(["A", "B"], votes_of([("A", "B", 3), ("B", "A", 1)]))
    # Wilson (z = 1.96) for 3/4: centre (0.75 + 0.4802) / 1.9604, half-width ≈ 0.3269
    assert a.win_rate_ci_low == pytest.approx(0.3006, abs=1e-4)
    assert a.win_rate_ci_high == pytest.approx(0.9544, abs=1e-4)


def test_no_votes_and_foreign_votes() -> None:
    rows = standings(["A", "B", "C"], [Vote("A", "zz"), Vote("A", "A")])
    assert all(r.battles == 0 and r.win_rate is None and r.bt_score is None for r in rows)


def test_bootstrap_is_seeded_and_bounded() -> None:
    rng = random.Random(3)
    arms = list("ABC")
    votes = [Vote(*rng.sample(arms, 2)) for _ in range(200)]
    one = bootstrap_intervals(arms, votes, seed=7)
    assert one == bootstrap_intervals(arms, votes, seed=7)
    assert one != bootstrap_intervals(arms, votes, seed=8)
    for lo, hi in one:
        assert lo <= hi


def test_extreme_data_stays_finite_and_fast() -> None:
    """A perfectly ordered 16-arm tournament (the MLE without prior diverges): finite scores,
    in order, well within a second or two."""
    import time

    arms = [f"a{i:02d}" for i in range(16)]
    rng = random.Random(0)
    votes = []
    for _ in range(2000):
        i, j = sorted(rng.sample(range(16), 2))
        votes.append(Vote(arms[i], arms[j]))
    start = time.perf_counter()
    rows = standings(arms, votes)
    assert time.perf_counter() - start < 10
    scores = [r.bt_score for r in rows]
    assert all(s is not None and math.isfinite(s) for s in scores)
    assert scores == sorted(scores, reverse=True)  # type: ignore[type-var]
