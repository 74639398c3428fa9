"""The clipped-CAGrad solver against brute force over the simplex, and its reductions."""

from __future__ import annotations

import math

import pytest
import torch

from prefvec.errors import ValidationError
from prefvec.training.raco_solver import (
    cagrad_objective,
    combine_gradients,
    solve_cagrad,
    solve_cagrad_k2,
)


def _objective_batch(
    points: torch.Tensor, m: torch.Tensor, w: torch.Tensor, c: float
) -> torch.Tensor:
    k = c * math.sqrt(float(w @ m @ w))
    return points @ m @ w + k * ((points @ m) * points).sum(1).clamp_min(0).sqrt()


def _brute_force(m: torch.Tensor, w: torch.Tensor, c: float) -> float:
    """Min of F over the simplex lattice i/n, then zoomed grids (projected onto the simplex)."""
    kk = w.numel()
    n = 20000 if kk == 2 else 300
    if kk == 2:
        t = torch.linspace(0, 1, n + 1, dtype=torch.float64)
        pts = torch.stack([t, 1 - t], 1)
    else:
        ij = [(i, j) for i in range(n + 1) for j in range(n + 1 - i)]
        a = torch.tensor(ij, dtype=torch.float64) / n
        pts = torch.cat([a, 1 - a.sum(1, keepdim=True)], 1)
    f = _objective_batch(pts, m, w, c)
    best, center, radius = float(f.min()), pts[int(f.argmin())], 2.0 / n
    axes = torch.linspace(-1, 1, 201, dtype=torch.float64)
    for _ in range(10):
        if kk == 2:
            off = torch.stack([axes, -axes], 1)
        else:
            x, y = torch.meshgrid(axes, axes, indexing="ij")
            off = torch.stack([x.reshape(-1), y.reshape(-1), -(x + y).reshape(-1)], 1)
        pts = (center + radius * off).clamp_min(0)
        pts = pts / pts.sum(1, keepdim=True)  # projected onto the simplex: edges and vertices too
        f = _objective_batch(pts, m, w, c)
        best, center = min(best, float(f.min())), pts[int(f.argmin())]
        radius /= 10
    return best


def _problem(seed: int, kk: int, conflict: bool) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    g = torch.randn(kk, 6, generator=gen, dtype=torch.float64)
    if conflict:
        g[1] = -0.7 * g[0] + 0.2 * g[1]
    w = torch.rand(kk, generator=gen, dtype=torch.float64) + 0.05
    return g @ g.T, w / w.sum()


@pytest.mark.parametrize("kk", [2, 3])
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("c", [0.4, 1.5])
def test_exact_solver_matches_brute_force(kk: int, seed: int, c: float) -> None:
    m, w = _problem(seed, kk, conflict=seed % 2 == 0)
    p = solve_cagrad(m, w, c)
    assert p.min() >= 0 and math.isclose(float(p.sum()), 1.0, abs_tol=1e-12)
    exact, brute = cagrad_objective(p, m, w, c), _brute_force(m, w, c)
    assert exact <= brute + 1e-12  # never worse than any grid point
    assert brute - exact < 1e-6


def test_k2_closed_form_agrees_with_face_enumeration() -> None:
    from prefvec.training import raco_solver

    for seed in range(10):
        m, w = _problem(seed, 2, conflict=seed % 2 == 1)
        p = solve_cagrad_k2(m, w, 0.4)
        # the general face formula on the full simplex of K = 2 (ridge-free here: M is PD)
        cand = raco_solver._face_candidate(m, m @ w, 0.4 * math.sqrt(float(w @ m @ w)))
        ends = [torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])]
        best = min(
            [c for c in [cand, *ends] if c is not None],
            key=lambda q: cagrad_objective(q, m, w, 0.4),
        )
        assert cagrad_objective(p, m, w, 0.4) == pytest.approx(
            cagrad_objective(best, m, w, 0.4), abs=1e-12
        )


def test_reduces_to_weighted_sum_when_gradients_agree() -> None:
    g = torch.randn(1, 50, dtype=torch.float64).repeat(3, 1) * torch.tensor([[1.0], [2.0], [0.5]])
    w = [0.2, 0.3, 0.5]
    g0 = torch.tensor(w, dtype=torch.float64) @ g
    d, _ = combine_gradients(g, w, c=0.4, mode="raco")
    torch.testing.assert_close(d, 1.4 * g0, rtol=1e-9, atol=1e-12)  # parallel: (1 + c)·g0
    d_rescaled, _ = combine_gradients(g, w, c=0.4, mode="raco", rescale=True)
    torch.testing.assert_close(d_rescaled, g0, rtol=1e-9, atol=1e-12)
    d_c0, _ = combine_gradients(torch.randn(3, 20, dtype=torch.float64), w, c=0.0)
    ws, _ = combine_gradients(g, w, mode="weighted_sum")
    torch.testing.assert_close(ws, g0)
    assert d_c0.shape == (20,)


def test_clip_is_min_of_p_and_w() -> None:
    # g2 conflicts with g1: CAGrad puts p on the worse objective, beyond its user weight.
    g = torch.tensor([[1.0, 0.0], [-0.9, 0.4]], dtype=torch.float64)
    w = [0.5, 0.5]
    d, info = combine_gradients(g, w, c=0.4, mode="raco")
    p = torch.tensor(info["p"], dtype=torch.float64)
    pt = torch.tensor(info["p_clipped"], dtype=torch.float64)
    torch.testing.assert_close(pt, torch.minimum(p, torch.tensor(w, dtype=torch.float64)))
    assert float(p[1]) > w[1] and float(pt[1]) == pytest.approx(w[1])  # the clip is active
    assert float(pt.sum()) < 1.0  # no renormalisation
    g0 = torch.tensor(w, dtype=torch.float64) @ g
    gp = pt @ g
    expected = g0 + 0.4 * g0.norm() * gp / gp.norm()
    torch.testing.assert_close(d, expected)
    d_unclipped, info_u = combine_gradients(g, w, c=0.4, mode="cagrad")
    gp_u = torch.tensor(info_u["p"], dtype=torch.float64) @ g
    torch.testing.assert_close(d_unclipped, g0 + 0.4 * g0.norm() * gp_u / gp_u.norm())
    assert not torch.allclose(d, d_unclipped)


def test_invalid_inputs_are_rejected() -> None:
    m = torch.eye(2, dtype=torch.float64)
    with pytest.raises(ValidationError, match="simplex"):
        solve_cagrad(m, torch.tensor([0.7, 0.7], dtype=torch.float64), 0.4)
    with pytest.raises(ValidationError, match="`c`"):
        solve_cagrad(m, torch.tensor([0.5, 0.5], dtype=torch.float64), -1.0)
    with pytest.raises(ValidationError, match="mode"):
        combine_gradients(torch.ones(2, 3), [0.5, 0.5], mode="nope")
