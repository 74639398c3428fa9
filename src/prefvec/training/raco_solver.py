"""The clipped-CAGrad direction of RACO (arXiv 2602.02495), exactly, for small K.

Per step, with per-objective gradients g_i (rows of G, shape (K, D)) and user weights w on the
simplex Δ_K:

    g0  = Σ_i w_i g_i                                          (weighted-sum DPO direction)
    p   = argmin_{p ∈ Δ_K}  G_pᵀ g0 + c ‖g0‖ ‖G_p‖,   G_p = Σ_i p_i g_i          (CAGrad dual)
    p̃   = min(p, w)  elementwise, no renormalisation                               (RACO clip)
    d   = g0 + c ‖g0‖ G_p̃ / ‖G_p̃‖                                                  (update)

Everything depends on G only through the Gram matrix M = G Gᵀ (K × K): with b = M w and
k = c √(wᵀ M w) the objective is F(p) = bᵀp + k √(pᵀ M p), convex on the simplex. The exact
solver enumerates the faces of the simplex (supports S ⊆ {1..K}); on the relative interior of a
face the stationarity condition b_S + k M_S p / √(pᵀM_S p) = λ 1 gives, with M_S invertible,

    p ∝ M_S⁻¹ (λ 1 − b_S),   λ the larger root of  a λ² − 2 β λ + (b_Sᵀ M_S⁻¹ b_S − k²) = 0,
    a = 1ᵀ M_S⁻¹ 1,  β = 1ᵀ M_S⁻¹ b_S,

so every face costs one K × K solve and a quadratic; the best feasible candidate (vertices
included) is the global minimiser. 2^K − 1 faces: fine for the K ≤ 8 objectives RACO uses.
A ridge of 1e-12·tr(M)/K keeps singular faces (parallel gradients) solvable.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch

from prefvec.errors import ValidationError

RIDGE = 1e-12
MAX_EXACT_K = 12


def cagrad_objective(p: torch.Tensor, gram: torch.Tensor, w: torch.Tensor, c: float) -> float:
    """F(p) = pᵀ M w + c √(wᵀMw) √(pᵀMp) (= G_pᵀ g0 + c ‖g0‖ ‖G_p‖), in float64."""
    p, m, w = p.double(), gram.double(), w.double()
    quad = max(float(p @ m @ p), 0.0)
    g0_sq = max(float(w @ m @ w), 0.0)
    return float(p @ m @ w) + c * math.sqrt(g0_sq) * math.sqrt(quad)


def _check(gram: torch.Tensor, w: torch.Tensor, c: float) -> None:
    k = w.numel()
    problems = []
    if gram.shape != (k, k):
        problems.append(f"`gram` must be ({k}, {k}), got {tuple(gram.shape)}")
    if not torch.isfinite(gram).all():
        problems.append("`gram` must be finite")
    if (w < 0).any() or not math.isclose(float(w.sum()), 1.0, abs_tol=1e-6):
        problems.append(f"`weights` must lie on the simplex, got {w.tolist()}")
    if not (math.isfinite(c) and c >= 0):
        problems.append(f"`c` must be a finite number >= 0, got {c}")
    if problems:
        raise ValidationError("; ".join(problems), problems=problems, field="weights")


def _face_candidate(m: torch.Tensor, b: torch.Tensor, k: float) -> torch.Tensor | None:
    """Stationary point of bᵀp + k√(pᵀMp) on {1ᵀp = 1} (None if none lies inside the face)."""
    ones = torch.ones_like(b)
    try:
        minv_1 = torch.linalg.solve(m, ones)
        minv_b = torch.linalg.solve(m, b)
    except RuntimeError:  # singular even with the ridge
        return None
    a, beta, gamma = float(ones @ minv_1), float(ones @ minv_b), float(b @ minv_b)
    disc = beta * beta - a * (gamma - k * k)
    if a <= 0 or disc < 0:
        return None
    lam = (beta + math.sqrt(disc)) / a  # the root with 1ᵀp > 0 (λa − β = +√disc)
    p = lam * minv_1 - minv_b
    total = float(p.sum())
    if total <= 0:
        return None
    p = p / total
    return p if bool((p > -1e-12).all()) else None


def solve_cagrad_k2(gram: torch.Tensor, w: torch.Tensor, c: float) -> torch.Tensor:
    """Closed form for K = 2: minimise F(t) on p = (t, 1 − t), t ∈ [0, 1].

    With p = e2 + t u, u = e1 − e2: F(t) = b2 + t(b1 − b2) + k √(q0 + 2 q1 t + q2 t²), where
    q2 = uᵀMu, q1 = uᵀM e2, q0 = M22. Setting F'(t) = 0:
    (b1 − b2) √Q = −k (q1 + q2 t)  ⇒  t = (−q1 ± s √(q0 q2 − q1²) / √(k² q2 − (b1−b2)²)) / q2,
    the sign chosen so that q1 + q2 t has the sign opposite to (b1 − b2); then clipped to [0, 1]
    (F is convex, so the clipped stationary point or an end point is the minimiser).
    """
    m, w = gram.double(), w.double()
    _check(m, w, c)
    b = m @ w
    k = c * math.sqrt(max(float(w @ m @ w), 0.0))
    db = float(b[0] - b[1])
    q2 = float(m[0, 0] - 2 * m[0, 1] + m[1, 1])
    q1 = float(m[0, 1] - m[1, 1])
    q0 = float(m[1, 1])
    cands = [0.0, 1.0]
    denom = k * k * q2 - db * db
    if q2 > 0 and denom > 0:
        root = math.sqrt(max(q0 * q2 - q1 * q1, 0.0) / denom)
        # q1 + q2 t = −db · root  (sign opposite to db, magnitude from the squared condition)
        cands.append(min(1.0, max(0.0, (-q1 - db * root) / q2)))
    best = min(cands, key=lambda t: cagrad_objective(torch.tensor([t, 1 - t]), m, w, c))
    return torch.tensor([best, 1.0 - best], dtype=torch.float64)


def solve_cagrad(gram: torch.Tensor, w: torch.Tensor, c: float) -> torch.Tensor:
    """Exact argmin over the simplex of F(p) = pᵀMw + c‖g0‖√(pᵀMp) by face enumeration.

    Args:
        gram: M = G Gᵀ, shape (K, K).
        w: user weights on the simplex, shape (K,).
        c: CAGrad radius (RACO default 0.4).

    Returns:
        p, shape (K,), float64, on the simplex.
    """
    m, w = gram.double(), w.double()
    _check(m, w, c)
    kk = w.numel()
    if kk > MAX_EXACT_K:
        raise ValidationError(
            f"exact solver supports K <= {MAX_EXACT_K}, got {kk}", field="weights"
        )
    if kk == 2:
        return solve_cagrad_k2(m, w, c)
    b = m @ w
    k = c * math.sqrt(max(float(w @ m @ w), 0.0))
    m_reg = m + RIDGE * max(float(torch.trace(m)) / kk, 1e-300) * torch.eye(kk, dtype=m.dtype)
    best_p, best_f = w.clone(), cagrad_objective(w, m, w, c)
    for size in range(1, kk + 1):
        for face in itertools.combinations(range(kk), size):
            idx = torch.tensor(face)
            if size == 1:
                sub = torch.ones(1, dtype=torch.float64)
            else:
                cand = _face_candidate(m_reg[idx][:, idx], b[idx], k)
                if cand is None:
                    continue
                sub = cand.clamp_min(0.0) / cand.clamp_min(0.0).sum()
            p = torch.zeros(kk, dtype=torch.float64)
            p[idx] = sub
            f = cagrad_objective(p, m, w, c)
            if f < best_f:
                best_p, best_f = p, f
    return best_p


def combine_gradients(
    grads: torch.Tensor,
    weights: Sequence[float] | torch.Tensor,
    c: float = 0.4,
    mode: str = "raco",
    rescale: bool = False,
) -> tuple[torch.Tensor, dict[str, list[float]]]:
    """The update direction of RACO, unclipped CAGrad or the weighted sum.

    Args:
        grads: per-objective gradients, shape (K, D).
        weights: user weights w on the simplex, K values.
        c: CAGrad radius.
        mode: ``raco`` (p̃ = min(p, w)), ``cagrad`` (p̃ = p) or ``weighted_sum`` (d = g0).
        rescale: divide d by (1 + c), so that agreeing gradients give exactly g0.

    Returns:
        ``(d, info)``: the direction (D,) in the dtype of ``grads`` and ``{"p", "p_clipped"}``.
    """
    w = torch.as_tensor(weights, dtype=torch.float64)
    g = grads.double()  # (K, D)
    g0 = w @ g  # (D,)
    if mode == "weighted_sum":
        return g0.to(grads.dtype), {"p": w.tolist(), "p_clipped": w.tolist()}
    if mode not in ("raco", "cagrad"):
        raise ValidationError(
            f"`mode` must be raco, cagrad or weighted_sum, got {mode!r}", field="mode"
        )
    gram = g @ g.T  # (K, K)
    p = solve_cagrad(gram, w, c)
    p_t = torch.minimum(p, w) if mode == "raco" else p
    gp = p_t @ g  # (D,)
    gp_norm, g0_norm = float(gp.norm()), float(g0.norm())
    d = g0 + (c * g0_norm / gp_norm) * gp if gp_norm > 0 else g0
    if rescale:
        d = d / (1.0 + c)
    return d.to(grads.dtype), {"p": p.tolist(), "p_clipped": p_t.tolist()}
