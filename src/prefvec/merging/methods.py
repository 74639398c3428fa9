"""Dense merge methods behind one registry, and :func:`merge_dense`.

Every method works on one parameter at a time: it receives the K deltas of that parameter stacked
as ``(K, *shape)`` and their weights ``(K,)``, and returns the merged delta ``(*shape)``. The
registry maps names (and aliases) to methods, so recipes and requests name a method by string.

Methods (δ_k: the delta of vector k, w_k: its weight, d: ``density``):

* ``linear`` (alias ``task_arithmetic``; Ilharco et al. 2023, Liang et al. 2026 Eq. 3):
  ``Σ_k w_k·δ_k`` for any real weights. ``density`` is ignored.
* ``ties`` (Yadav et al. 2023, §3): trim each δ_k to its top-d fraction by magnitude, elect a
  sign per entry as ``sign(Σ_k w_k·trim(δ_k))``, keep the contributions ``w_k·trim(δ_k)`` whose
  sign agrees with the elected one, and add them up (see :func:`ties_combine`).
* ``dare_linear`` (Yu et al. 2024, Eq. 2): drop each entry with probability 1−d, rescale the
  survivors by 1/d, then ``linear``.
* ``dare_ties``: DARE drop/rescale, then TIES sign election and disjoint merge (no magnitude trim).
* ``magnitude``: magnitude-prune each δ_k to density d (no rescale), then ``linear``.

Choices made here (document them wherever a result is compared with another tool):

* Magnitude trim keeps ``k = clamp(floor(d·n + 0.5), 1, n)`` entries of each δ_k (n = numel):
  every entry whose ``|δ|`` is at least the k-th largest, so ties at the threshold are all kept.
* TIES combines agreeing contributions as a weighted *disjoint sum* ``Σ_k a_k·w_k·δ_k`` with
  ``a_k`` the agreement mask (mergekit's ``normalize=False``), not a mean: in prefvec the weights
  are the caller's per-request strengths, so they must keep their meaning in every method —
  ``ties`` at weight 2 is twice ``ties`` at weight 1, and one vector at density 1 equals
  ``linear``. Entries with no agreeing contributor (elected sign 0) are 0.
* DARE draws its keep mask ``torch.rand((K, *shape), generator=g) < d`` with ``g`` seeded by
  :func:`tensor_seed` (the merge seed mixed with the parameter name), so the same seed always
  gives bit-identical merges and different parameters get independent masks.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from prefvec.errors import ValidationError

MethodFn = Callable[..., torch.Tensor]
"""``fn(stacked (K, *shape), weights (K,), *, density: float, generator: Generator | None)``."""


@dataclass(frozen=True)
class MergeMethod:
    """A registered dense merge method.

    Args:
        name: canonical name (``ties``).
        fn: the per-tensor function, see :data:`MethodFn`.
        uses_density: whether ``density`` changes the result.
        stochastic: whether the method draws random numbers (needs a seeded generator).
        description: one line for listings.
    """

    name: str
    fn: MethodFn
    uses_density: bool = False
    stochastic: bool = False
    description: str = ""

    def __call__(
        self,
        stacked: torch.Tensor,
        weights: torch.Tensor,
        *,
        density: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        return self.fn(stacked, weights, density=density, generator=generator)


_REGISTRY: dict[str, MergeMethod] = {}


def register_method(
    name: str,
    *,
    aliases: Sequence[str] = (),
    uses_density: bool = False,
    stochastic: bool = False,
    description: str = "",
) -> Callable[[MethodFn], MethodFn]:
    """Decorator registering a per-tensor merge function under ``name`` (and ``aliases``)."""

    def deco(fn: MethodFn) -> MethodFn:
        method = MergeMethod(name, fn, uses_density, stochastic, description or (fn.__doc__ or ""))
        for key in (name, *aliases):
            if key in _REGISTRY:
                raise ValueError(f"merge method {key!r} is already registered")
            _REGISTRY[key] = method
        return fn

    return deco


def available_methods() -> list[str]:
    """All registered method names and aliases, sorted."""
    return sorted(_REGISTRY)


def get_method(name: str) -> MergeMethod:
    """The method registered as ``name``.

    Raises:
        ValidationError: ``name`` is not registered (the message lists the known names).
    """
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        known = ", ".join(available_methods())
        raise ValidationError(
            f"`method` must be one of: {known}; got {name!r}", field="method"
        ) from None


# ---------------------------------------------------------------------------------------------
# Building blocks (pure functions on stacked tensors)
# ---------------------------------------------------------------------------------------------


def _bcast(weights: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Weights (K,) viewed as (K, 1, ..., 1) to broadcast against ``like`` (K, *shape)."""
    return weights.view(-1, *([1] * (like.dim() - 1)))


def keep_count(density: float, numel: int) -> int:
    """Entries kept by a magnitude trim at ``density``: ``clamp(floor(d·n + 0.5), 1, n)``."""
    return min(numel, max(1, math.floor(density * numel + 0.5)))


def magnitude_trim(stacked: torch.Tensor, density: float) -> torch.Tensor:
    """Zero all but the top-``density`` fraction (by magnitude) of each δ_k (TIES step 1).

    Args:
        stacked: (K, *shape) deltas.
        density: kept fraction in (0, 1]; ties at the threshold are all kept.
    """
    if density >= 1.0 or stacked.numel() == 0:
        return stacked
    flat = stacked.reshape(stacked.shape[0], -1)  # (K, n)
    n = flat.shape[1]
    k = keep_count(density, n)
    mags = flat.abs()
    thresh = mags.kthvalue(n - k + 1, dim=1, keepdim=True).values  # (K, 1): k-th largest
    return (flat * (mags >= thresh)).view_as(stacked)


def dare_drop(
    stacked: torch.Tensor, density: float, generator: torch.Generator | None
) -> torch.Tensor:
    """DARE (Yu et al. 2024, Eq. 2): keep each entry with probability d, rescale survivors by 1/d.

    Args:
        stacked: (K, *shape) deltas.
        density: keep probability d in (0, 1].
        generator: seeded generator on ``stacked.device`` (required for reproducibility).
    """
    if density >= 1.0:
        return stacked
    draw = torch.rand(
        stacked.shape, generator=generator, device=stacked.device, dtype=torch.float32
    )
    keep = draw < density  # (K, *shape)
    return stacked * keep / density


def linear_combine(stacked: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``Σ_k w_k·δ_k``: (K, *shape), (K,) -> (*shape)."""
    return (stacked * _bcast(weights, stacked)).sum(dim=0)


def ties_combine(stacked: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """TIES sign election and disjoint merge (Yadav et al. 2023, §3 steps 2-3).

    With ``c_k = w_k·δ_k``: the elected sign is ``γ = sign(Σ_k c_k)``; contributor k agrees at an
    entry when ``sign(c_k) = γ ≠ 0``; the result is the disjoint sum ``Σ_k a_k c_k`` (0 where no
    contributor agrees).

    Args:
        stacked: (K, *shape) deltas, already trimmed or DARE-dropped.
        weights: (K,) weights, any sign.
    """
    contrib = stacked * _bcast(weights, stacked)  # (K, *shape)
    elected = torch.sign(contrib.sum(dim=0))  # (*shape)
    agree = (torch.sign(contrib) == elected) & (elected != 0)  # (K, *shape)
    return (contrib * agree).sum(dim=0)


# ---------------------------------------------------------------------------------------------
# Registered methods
# ---------------------------------------------------------------------------------------------


@register_method("linear", aliases=("task_arithmetic",), description="Σ_k w_k·δ_k")
def _linear(stacked: torch.Tensor, weights: torch.Tensor, **_: object) -> torch.Tensor:
    return linear_combine(stacked, weights)


@register_method("ties", uses_density=True, description="trim, elect sign, disjoint sum")
def _ties(
    stacked: torch.Tensor, weights: torch.Tensor, *, density: float, **_: object
) -> torch.Tensor:
    return ties_combine(magnitude_trim(stacked, density), weights)


@register_method(
    "dare_linear", uses_density=True, stochastic=True, description="random drop + rescale, linear"
)
def _dare_linear(
    stacked: torch.Tensor,
    weights: torch.Tensor,
    *,
    density: float,
    generator: torch.Generator | None = None,
    **_: object,
) -> torch.Tensor:
    return linear_combine(dare_drop(stacked, density, generator), weights)


@register_method(
    "dare_ties", uses_density=True, stochastic=True, description="random drop + rescale, TIES"
)
def _dare_ties(
    stacked: torch.Tensor,
    weights: torch.Tensor,
    *,
    density: float,
    generator: torch.Generator | None = None,
    **_: object,
) -> torch.Tensor:
    return ties_combine(dare_drop(stacked, density, generator), weights)


@register_method("magnitude", uses_density=True, description="magnitude prune, linear")
def _magnitude(
    stacked: torch.Tensor, weights: torch.Tensor, *, density: float, **_: object
) -> torch.Tensor:
    return linear_combine(magnitude_trim(stacked, density), weights)


# ---------------------------------------------------------------------------------------------
# merge_dense
# ---------------------------------------------------------------------------------------------


def is_finite_number(value: object) -> bool:
    """Whether ``value`` converts to a finite float (ints, floats, numpy and 0-d torch scalars)."""
    if isinstance(value, (str, bytes)):
        return False
    try:
        return math.isfinite(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def tensor_seed(seed: int, name: str) -> int:
    """A 63-bit seed mixing the merge ``seed`` with a parameter ``name`` (stable across runs)."""
    digest = hashlib.sha256(f"{int(seed)}\x00{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _check_inputs(
    deltas: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float], density: float
) -> list[str]:
    problems: list[str] = []
    if len(deltas) != len(weights):
        problems.append(
            f"`weights` must have one weight per delta ({len(deltas)}), got {len(weights)}"
        )
    for i, w in enumerate(weights):
        if not is_finite_number(w):
            problems.append(f"`weights[{i}]` must be a finite number, got {w!r}")
    if not isinstance(density, (int, float)) or not 0.0 < float(density) <= 1.0:
        problems.append(f"`density` must be in (0, 1], got {density!r}")
    return problems


def _check_shapes(deltas: Sequence[Mapping[str, torch.Tensor]]) -> list[str]:
    shapes: dict[str, tuple[int, torch.Size]] = {}
    problems: list[str] = []
    for i, delta in enumerate(deltas):
        for name, t in delta.items():
            if not isinstance(t, torch.Tensor) or not t.is_floating_point():
                problems.append(f"`deltas[{i}][{name!r}]` must be a floating-point tensor")
                continue
            first = shapes.setdefault(name, (i, t.shape))
            if first[1] != t.shape:
                problems.append(
                    f"`deltas[{i}][{name!r}]` has shape {tuple(t.shape)}, but deltas[{first[0]}] "
                    f"has {tuple(first[1])}"
                )
    return problems


def _stack(
    deltas: Sequence[Mapping[str, torch.Tensor]], name: str
) -> tuple[torch.Tensor, torch.dtype]:
    """(K, *shape) stack of one parameter's deltas in compute dtype (≥ fp32); zeros where absent."""
    present = [d[name] for d in deltas if name in d]
    out_dtype = present[0].dtype
    for t in present[1:]:
        out_dtype = torch.promote_types(out_dtype, t.dtype)
    work = torch.promote_types(out_dtype, torch.float32)
    ref = present[0]
    rows = [
        d[name].to(device=ref.device, dtype=work)
        if name in d
        else torch.zeros(ref.shape, dtype=work, device=ref.device)
        for d in deltas
    ]
    return torch.stack(rows), out_dtype


def merge_dense(
    deltas: Sequence[Mapping[str, torch.Tensor]],
    weights: Sequence[float],
    method: str = "linear",
    density: float = 1.0,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Merge dense deltas per parameter with a registered method.

    Args:
        deltas: K mappings ``{param name: δ}``; a name missing from a mapping counts as zero.
        weights: K finite weights (any sign).
        method: a name from :func:`available_methods`.
        density: kept fraction for TIES / DARE / magnitude, in (0, 1].
        seed: DARE seed; mixed with each parameter name (:func:`tensor_seed`).

    Returns:
        ``{param name: merged δ}`` over the union of names, in the promoted input dtype.
        Computation runs in at least float32.

    Raises:
        ValidationError: unknown method, non-finite weight, length mismatch, density out of
            range, or mismatching shapes; every problem is listed.
    """
    problems = _check_inputs(deltas, weights, density)
    problems += _check_shapes(deltas)
    try:
        fn = get_method(method)
    except ValidationError as err:
        problems.insert(0, err.message)
    if problems:
        raise ValidationError("; ".join(problems), problems=problems)
    names = list(dict.fromkeys(name for d in deltas for name in d))
    out: dict[str, torch.Tensor] = {}
    for name in names:
        stacked, out_dtype = _stack(deltas, name)  # (K, *shape)
        w = torch.tensor([float(x) for x in weights], dtype=stacked.dtype, device=stacked.device)
        gen = None
        if fn.stochastic:
            gen = torch.Generator(device=stacked.device).manual_seed(tensor_seed(seed, name))
        out[name] = fn(stacked, w, density=float(density), generator=gen).to(out_dtype)
    return out
