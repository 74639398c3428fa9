"""Pairwise-vote leaderboard of an experiment's arms (HTTP-free, pure functions).

Each vote names two arms and an outcome: ``win`` (the first beat the second), ``tie`` or
``both_bad``; both of the latter count as a tie, i.e. half a win to each side (as Chatbot Arena
does). Per arm: battles, wins, losses, ties and the win rate ``(wins + ties / 2) / battles`` with a
Wilson interval; and a Bradley–Terry score.

Bradley–Terry (Bradley & Terry, 1952): ``P(i beats j) = σ(θ_i − θ_j)`` with log-strengths θ,
fitted by maximum likelihood with damped Newton steps on ``Σ_ij w_ij log σ(θ_i − θ_j)``
(``w_ij``: wins of i over j, ties counted half) and normalised so that Σ θ_i = 0. At the optimum
every arm's wins equal its expected wins, ``W_i = Σ_j n_ij σ(θ_i − θ_j)`` (the score equations;
Hunter's 2004 MM iteration solves the same ones, far more slowly when one arm dominates).

``prior`` adds that many virtual ties to every pair, so an arm that never won keeps a finite score
and a disconnected vote graph still has a unique fit; with real votes it shrinks scores towards 0
negligibly. Intervals of the scores come from a seeded percentile bootstrap over votes (a bounded
number of resamples), computed only when there are more than two arms (with two, the win-rate
interval says the same thing).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from prefvec.server.experiments import wilson_interval

OUTCOMES = ("win", "tie", "both_bad")
DEFAULT_PRIOR = 0.01
MAX_RESAMPLES = 200
MAX_BOOTSTRAP_DRAWS = 2_000_000
"""Bound of resamples × votes: big experiments get fewer (never below MIN_RESAMPLES) resamples."""
MIN_RESAMPLES = 20


@dataclass(frozen=True)
class Vote:
    """One pairwise vote: ``first`` beat ``second`` (outcome ``win``) or they tied."""

    first: str
    second: str
    outcome: str = "win"


@dataclass
class ArmStanding:
    """One row of the leaderboard (the wire's ``LeaderboardArm`` without the recipe)."""

    arm: str
    battles: int = 0
    wins: int = 0
    losses: int = 0
    ties: int = 0
    win_rate: float | None = None
    win_rate_ci_low: float | None = None
    win_rate_ci_high: float | None = None
    bt_score: float | None = None
    bt_ci_low: float | None = None
    bt_ci_high: float | None = None


def pair_counts(arms: Sequence[str], votes: Sequence[Vote]) -> list[list[float]]:
    """``w[i][j]``: wins of arm i over arm j, a tie counted half to each (votes on unknown arms
    or of an arm against itself are skipped)."""
    index = {a: i for i, a in enumerate(arms)}
    w = [[0.0] * len(arms) for _ in arms]
    for v in votes:
        i, j = index.get(v.first), index.get(v.second)
        if i is None or j is None or i == j:
            continue
        if v.outcome == "win":
            w[i][j] += 1.0
        else:
            w[i][j] += 0.5
            w[j][i] += 0.5
    return w


def bradley_terry(
    w: Sequence[Sequence[float]],
    prior: float = DEFAULT_PRIOR,
    tol: float = 1e-10,
    max_iter: int = 100,
) -> list[float]:
    """Maximum-likelihood Bradley–Terry log-strengths (mean 0) from a win matrix.

    Args:
        w: ``w[i][j]`` wins of i over j (ties as halves).
        prior: virtual ties added to every pair (> 0 keeps every score finite and the fit unique).
        tol: stop when the largest Newton step is below this.
        max_iter: Newton iterations at most (a few suffice: the log-likelihood is concave).

    Returns:
        θ with Σ θ_i = 0 over the arms that played (0 for an arm with no comparison).
    """
    wm = np.asarray(w, dtype=np.float64).reshape(len(w), len(w))  # (K, K)
    k = wm.shape[0]
    n = wm + wm.T + 2 * prior * (1 - np.eye(k))  # (K, K) games per pair
    played = n.sum(axis=1) > 0
    theta = np.zeros(k)
    if played.sum() < 2:
        return theta.tolist()
    idx = np.flatnonzero(played)
    theta[idx] = _newton(wm[np.ix_(idx, idx)], n[np.ix_(idx, idx)], tol, max_iter)
    return theta.tolist()


def _log_likelihood(theta: np.ndarray, w: np.ndarray) -> float:
    # Σ_ij w_ij log σ(θ_i − θ_j), with log σ(x) = −log(1 + e^{−x}) computed stably
    diff = theta[:, None] - theta[None, :]
    return float(-(w * np.logaddexp(0.0, -diff)).sum())


def _newton(w: np.ndarray, n: np.ndarray, tol: float, max_iter: int) -> np.ndarray:
    """Damped Newton ascent on the BT log-likelihood, θ kept at mean 0 (H·1 = 0, so the step
    solves (−H + 11ᵀ/K) δ = g, which is positive definite on a connected comparison graph)."""
    k = w.shape[0]
    wins = w.sum(axis=1) + (n - w - w.T).sum(axis=1) / 2  # real wins + half of the virtual ties
    w_eff = w + (n - w - w.T) / 2  # (K, K) the prior's virtual ties as half wins each way
    theta = np.zeros(k)
    ones = np.full((k, k), 1.0 / k)
    for _ in range(max_iter):
        p = 0.5 * (1 + np.tanh((theta[:, None] - theta[None, :]) / 2))  # σ(θ_i − θ_j), stable
        grad = wins - (n * p).sum(axis=1)
        c = n * p * (1 - p)
        neg_h = np.diag(c.sum(axis=1)) - c
        step = np.linalg.lstsq(neg_h + ones, grad, rcond=None)[0]
        step -= step.mean()
        t, base = 1.0, _log_likelihood(theta, w_eff)
        while t > 1e-6 and _log_likelihood(theta + t * step, w_eff) < base - 1e-12:
            t /= 2  # backtracking keeps every step an ascent
        theta = theta + t * step
        if float(np.abs(t * step).max()) < tol:
            break
    return theta - theta.mean()


def bootstrap_intervals(
    arms: Sequence[str],
    votes: Sequence[Vote],
    *,
    seed: int = 0,
    resamples: int = MAX_RESAMPLES,
    confidence: float = 0.95,
    prior: float = DEFAULT_PRIOR,
) -> list[tuple[float, float]]:
    """Percentile bootstrap interval of each arm's Bradley–Terry score: votes resampled with
    replacement by ``numpy.random.default_rng(seed)`` (the same votes give the same intervals);
    at most ``resamples`` resamples and about :data:`MAX_BOOTSTRAP_DRAWS` votes drawn in all."""
    index = {a: i for i, a in enumerate(arms)}
    kept = [v for v in votes if v.first in index and v.second in index and v.first != v.second]
    if not kept:
        return [(0.0, 0.0) for _ in arms]
    k = len(arms)
    # each vote as two cells of the win matrix: (first, second) += a, (second, first) += b
    fi = np.array([index[v.first] for v in kept])
    se = np.array([index[v.second] for v in kept])
    a = np.array([1.0 if v.outcome == "win" else 0.5 for v in kept])
    b = 1.0 - a
    rng = np.random.default_rng(seed)
    count = max(MIN_RESAMPLES, min(resamples, MAX_BOOTSTRAP_DRAWS // len(kept)))
    samples = np.empty((count, k))
    for r in range(count):
        pick = rng.integers(0, len(kept), size=len(kept))
        w = np.zeros((k, k))
        np.add.at(w, (fi[pick], se[pick]), a[pick])
        np.add.at(w, (se[pick], fi[pick]), b[pick])
        samples[r] = bradley_terry(w.tolist(), prior, tol=1e-8)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(samples, [alpha, 1 - alpha], axis=0)
    return [(float(x), float(y)) for x, y in zip(lo, hi, strict=True)]


def standings(
    arms: Sequence[str],
    votes: Sequence[Vote],
    *,
    seed: int = 0,
    resamples: int = MAX_RESAMPLES,
    prior: float = DEFAULT_PRIOR,
) -> list[ArmStanding]:
    """The leaderboard rows of ``arms`` (in the order given) from pairwise ``votes``."""
    rows = {a: ArmStanding(arm=a) for a in arms}
    for v in votes:
        first, second = rows.get(v.first), rows.get(v.second)
        if first is None or second is None or first is second:
            continue
        first.battles += 1
        second.battles += 1
        if v.outcome == "win":
            first.wins += 1
            second.losses += 1
        else:
            first.ties += 1
            second.ties += 1
    for row in rows.values():
        if row.battles:
            score = row.wins + row.ties / 2
            row.win_rate = score / row.battles
            row.win_rate_ci_low, row.win_rate_ci_high = wilson_interval(score, row.battles)
    _add_scores(list(rows.values()), arms, votes, seed, resamples, prior)
    return list(rows.values())


def _add_scores(
    rows: list[ArmStanding],
    arms: Sequence[str],
    votes: Sequence[Vote],
    seed: int,
    resamples: int,
    prior: float,
) -> None:
    valid = [v for v in votes if v.first in arms and v.second in arms and v.first != v.second]
    if not valid:
        return
    for row, score in zip(rows, bradley_terry(pair_counts(arms, valid), prior), strict=True):
        row.bt_score = score
    if len(arms) > 2:
        cis = bootstrap_intervals(arms, valid, seed=seed, resamples=resamples, prior=prior)
        for row, (lo, hi) in zip(rows, cis, strict=True):
            point = row.bt_score if row.bt_score is not None else 0.0
            row.bt_ci_low, row.bt_ci_high = min(lo, point), max(hi, point)
