"""Exact algebra of low-rank preference vectors, and per-request low-rank mixing.

A low-rank vector holds, per linear module m, factors ``A (r, in)`` and ``B (out, r)`` with
``ΔW_m = B @ A``. A weighted sum of such deltas is again low rank, exactly:

    Σ_k w_k B_k A_k = [w_1 B_1 | ... | w_K B_K] @ [A_1; ...; A_K]          (rank Σ_k r_k)

so :func:`merge_lowrank` concatenates along the rank and never merges A and B separately
(averaging A's and B's, as PEFT's ``linear``/``ties`` on factors and LoRAX do, creates cross
terms ``B_i A_j`` and is not the weighted sum).

:class:`LowRankMixer` applies the same identity per batch row without any merge: each patched
``nn.Linear`` computes ``W x_r + Σ_i w_{r,i} B_i (A_i x_r)`` for row r, so one batch can serve
requests with different weights.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import nn

from prefvec.errors import ConflictError, NotFoundError, ValidationError
from prefvec.merging.methods import is_finite_number

logger = logging.getLogger(__name__)

Factors = Mapping[str, tuple[torch.Tensor, torch.Tensor]]
"""``{module: (A (r, in), B (out, r))}``; ``ΔW[module + ".weight"] = B @ A``."""


def _check_weights(weights: Sequence[float], expected: int, field_name: str) -> list[str]:
    problems: list[str] = []
    if len(weights) != expected:
        problems.append(f"`{field_name}` must have {expected} entries, got {len(weights)}")
    for i, w in enumerate(weights):
        if not is_finite_number(w):
            problems.append(f"`{field_name}[{i}]` must be a finite number, got {w!r}")
    return problems


def _check_factor_pair(
    a: torch.Tensor, b: torch.Tensor, where: str, in_out: tuple[int, int] | None
) -> list[str]:
    """Problems of one (A, B) pair; ``in_out`` is the expected (in, out) if known."""
    if a.dim() != 2 or b.dim() != 2:
        return [f"{where}: A and B must be 2-D, got {tuple(a.shape)} and {tuple(b.shape)}"]
    problems = []
    if a.shape[0] != b.shape[1]:
        problems.append(f"{where}: rank of A {tuple(a.shape)} != rank of B {tuple(b.shape)}")
    if in_out is not None and (a.shape[1], b.shape[0]) != in_out:
        problems.append(f"{where}: (in, out) = ({a.shape[1]}, {b.shape[0]}), expected {in_out}")
    return problems


def merge_lowrank(
    factors_list: Sequence[Factors], weights: Sequence[float]
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Exact weighted merge of low-rank vectors by concatenation along the rank.

    Per module: ``A_cat = cat_k A_k`` (rows) and ``B_cat = cat_k w_k·B_k`` (columns), so
    ``B_cat @ A_cat = Σ_k w_k B_k A_k``. Modules present in only some vectors are fine; vectors
    with weight 0 are left out, and a module left with no vector is omitted (zero delta).

    Args:
        factors_list: K mappings ``{module: (A (r_k, in), B (out, r_k))}``.
        weights: K finite weights (any sign).

    Returns:
        ``{module: (A_cat (Σr, in), B_cat (out, Σr))}`` in the promoted dtype of the inputs.

    Raises:
        ValidationError: weights non-finite or of the wrong length, or inconsistent shapes.
    """
    problems = _check_weights(weights, len(factors_list), "weights")
    in_out: dict[str, tuple[int, int]] = {}
    for k, factors in enumerate(factors_list):
        for module, (a, b) in factors.items():
            problems += _check_factor_pair(
                a, b, f"`factors_list[{k}][{module!r}]`", in_out.get(module)
            )
            if a.dim() == 2 and b.dim() == 2:
                in_out.setdefault(module, (a.shape[1], b.shape[0]))
    if problems:
        raise ValidationError("; ".join(problems), problems=problems)
    out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for module in dict.fromkeys(m for f in factors_list for m in f):
        pairs = [
            (f[module], float(w))
            for f, w in zip(factors_list, weights, strict=True)
            if module in f and w
        ]
        if not pairs:
            continue
        dtype = pairs[0][0][0].dtype
        for (a, b), _ in pairs:
            dtype = torch.promote_types(dtype, torch.promote_types(a.dtype, b.dtype))
        device = pairs[0][0][0].device
        a_cat = torch.cat([a.to(device, dtype) for (a, _), _ in pairs], dim=0)  # (Σr, in)
        b_cat = torch.cat([b.to(device, dtype) * w for (_, b), w in pairs], dim=1)  # (out, Σr)
        out[module] = (a_cat, b_cat)
    return out


def lowrank_to_dense(factors: Factors) -> dict[str, torch.Tensor]:
    """Dense deltas ``{module + ".weight": B @ A}`` of low-rank factors."""
    return {module + ".weight": b @ a for module, (a, b) in factors.items()}


@dataclass
class _ModuleState:
    """Concatenated factors of every registered vector that targets one linear module."""

    a_cat: torch.Tensor  # (R, in)
    b_cat: torch.Tensor  # (out, R)
    spans: list[tuple[str, int, int]]  # (ref, start, stop) columns of each vector in the rank


@dataclass
class _Active:
    """Per-module mixing state for one batch: row scales and the rows that mix at all."""

    scale: torch.Tensor  # (n_rows, R): w_{r,i} over vector i's rank columns
    rows: torch.Tensor | None  # (n_rows,) row indices, None when every row mixes
    batch: int


class LowRankMixer:
    """Per-request mixing of low-rank vectors through forward hooks, with no merge.

    For every ``nn.Linear`` that a registered vector targets, a forward hook adds, per batch row
    r, ``Σ_i w_{r,i} B_i (A_i x_r)`` to the module's output, computed as
    ``((x @ A_cat.T) * S[:, None, :]) @ B_cat.T`` with ``S`` (batch, R) holding ``w_{r,i}``
    over vector i's rank columns. Rows whose weights are all zero for a module are not touched,
    so they are bit-identical to the model without the mixer. Outside :meth:`mixing` the hooks
    do nothing.

    Not thread-safe: one ``mixing`` context at a time per model (the model itself is shared).

    Args:
        model: a torch module (e.g. a transformers causal LM) whose linear layers are targeted
            by the module names of the vectors (``model.layers.0.self_attn.q_proj``).

    Example:
        ```python
        mixer = LowRankMixer(model)
        mixer.add_vector("helpful@1", factors)
        with mixer.mixing([{"helpful@1": 1.0}, {}, {"helpful@1": -0.5}]):
            out = model.generate(input_ids, max_new_tokens=20)
        ```
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._modules: dict[str, nn.Module] = dict(model.named_modules())
        self._vectors: dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]] = {}
        self._state: dict[str, _ModuleState] = {}
        self._hooks: dict[str, Any] = {}
        self._active: dict[str, _Active] | None = None

    # -- registry of vectors -----------------------------------------------------------------

    @property
    def refs(self) -> list[str]:
        """Registered vector refs, in registration order."""
        return list(self._vectors)

    def has(self, ref: str) -> bool:
        """Whether ``ref`` is registered."""
        return ref in self._vectors

    def add_vector(self, ref: str, factors: Factors) -> None:
        """Register (or replace) a low-rank vector; factors are cast once to each layer's dtype.

        Raises:
            ValidationError: a module is unknown or not ``nn.Linear``, or a factor shape does not
                match the layer (every problem listed); nothing is registered then.
            ConflictError: called inside :meth:`mixing`.
        """
        self._not_mixing("add_vector")
        problems: list[str] = []
        cast: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for module, (a, b) in factors.items():
            layer = self._modules.get(module)
            where = f"vector {ref!r} module {module!r}"
            if not isinstance(layer, nn.Linear):
                kind = "unknown" if layer is None else f"a {type(layer).__name__}, not nn.Linear"
                problems.append(f"{where} is {kind}")
                continue
            found = _check_factor_pair(a, b, where, (layer.in_features, layer.out_features))
            problems += found
            if not found:
                w = layer.weight
                cast[module] = (a.detach().to(w.device, w.dtype), b.detach().to(w.device, w.dtype))
        if problems:
            raise ValidationError("; ".join(problems), problems=problems, field="factors")
        previous = self._targets_of(ref)
        self._vectors[ref] = cast
        self._rebuild(set(cast) | previous)
        logger.debug("mixer: added %s (%d modules)", ref, len(cast))

    def remove_vector(self, ref: str) -> None:
        """Unregister ``ref``.

        Raises:
            NotFoundError: ``ref`` is not registered.
            ConflictError: called inside :meth:`mixing`.
        """
        self._not_mixing("remove_vector")
        if ref not in self._vectors:
            raise NotFoundError(f"low-rank vector {ref!r} is not loaded", field="ref")
        modules = set(self._vectors.pop(ref))
        self._rebuild(modules)

    def close(self) -> None:
        """Remove every hook and forget all vectors."""
        for handle in self._hooks.values():
            handle.remove()
        self._hooks.clear()
        self._state.clear()
        self._vectors.clear()
        self._active = None

    def _targets_of(self, ref: str) -> set[str]:
        return {m for m, st in self._state.items() if any(r == ref for r, _, _ in st.spans)}

    def _rebuild(self, modules: set[str]) -> None:
        """Recompute A_cat / B_cat of ``modules`` and (un)register their hooks."""
        for module in modules:
            parts = [(ref, fac[module]) for ref, fac in self._vectors.items() if module in fac]
            if not parts:
                self._state.pop(module, None)
                handle = self._hooks.pop(module, None)
                if handle is not None:
                    handle.remove()
                continue
            spans, start = [], 0
            for ref, (a, _) in parts:
                spans.append((ref, start, start + a.shape[0]))
                start += a.shape[0]
            a_cat = torch.cat([a for _, (a, _) in parts], dim=0)  # (R, in)
            b_cat = torch.cat([b for _, (_, b) in parts], dim=1)  # (out, R)
            self._state[module] = _ModuleState(a_cat, b_cat, spans)
            if module not in self._hooks:
                hook = partial(self._hook, module)
                self._hooks[module] = self._modules[module].register_forward_hook(hook)

    # -- mixing ------------------------------------------------------------------------------

    def _not_mixing(self, what: str) -> None:
        if self._active is not None:
            raise ConflictError(f"cannot {what} while a mixing context is active")

    def _check_batch(self, batch_weights: Sequence[Mapping[str, float]]) -> None:
        unknown = sorted({ref for row in batch_weights for ref in row if ref not in self._vectors})
        if unknown:
            raise NotFoundError(
                f"low-rank vectors not loaded: {', '.join(map(repr, unknown))}",
                problems=[f"low-rank vector {r!r} is not loaded" for r in unknown],
                field="weights",
            )
        problems = [
            f"`weights[{i}][{ref!r}]` must be a finite number, got {w!r}"
            for i, row in enumerate(batch_weights)
            for ref, w in row.items()
            if not is_finite_number(w)
        ]
        if problems:
            raise ValidationError("; ".join(problems), problems=problems, field="weights")

    def _plan(self, batch_weights: Sequence[Mapping[str, float]]) -> dict[str, _Active]:
        """Per module: the row scale matrix S (rows that mix, R) and the rows that mix.

        Modules targeted by the same vectors with the same ranks (most of them) share one plan.
        """
        plan: dict[str, _Active] = {}
        memo: dict[tuple[Any, ...], _Active | None] = {}
        for module, st in self._state.items():
            sig = (tuple(st.spans), st.a_cat.device, st.a_cat.dtype)
            if sig not in memo:
                memo[sig] = self._plan_spans(batch_weights, st)
            active = memo[sig]
            if active is not None:
                plan[module] = active
        return plan

    @staticmethod
    def _plan_spans(
        batch_weights: Sequence[Mapping[str, float]], st: _ModuleState
    ) -> _Active | None:
        n = len(batch_weights)
        ref_w = torch.tensor(  # (batch, n_vectors)
            [[float(row.get(ref, 0.0)) for ref, _, _ in st.spans] for row in batch_weights],
            dtype=torch.float64,
        ).view(n, len(st.spans))
        mixing_rows = (ref_w != 0).any(dim=1)  # (batch,)
        if not bool(mixing_rows.any()):
            return None
        reps = torch.tensor([stop - start for _, start, stop in st.spans])
        scale = ref_w.repeat_interleave(reps, dim=1)  # (batch, R)
        rows: torch.Tensor | None = None
        if not bool(mixing_rows.all()):
            rows = mixing_rows.nonzero().squeeze(1)
            scale = scale[rows]
        dev, dt = st.a_cat.device, st.a_cat.dtype
        return _Active(scale.to(dev, dt), None if rows is None else rows.to(dev), batch=n)

    @contextmanager
    def mixing(self, batch_weights: Sequence[Mapping[str, float]]) -> Iterator[LowRankMixer]:
        """Mix vectors per batch row while the context is open.

        Args:
            batch_weights: one ``{ref: weight}`` per batch row (refs as registered); an empty
                mapping (or all-zero weights) leaves that row on the base model.

        Raises:
            NotFoundError: a ref is not registered (all unknown refs listed).
            ValidationError: a weight is not finite; or, during a forward pass, the batch size
                differs from ``len(batch_weights)``.
            ConflictError: a mixing context is already open.
        """
        self._not_mixing("open a second mixing context")
        self._check_batch(batch_weights)
        self._active = self._plan(batch_weights)
        try:
            yield self
        finally:
            self._active = None

    def _hook(
        self, module: str, layer: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor
    ) -> torch.Tensor | None:
        active = self._active.get(module) if self._active is not None else None
        if active is None:
            return None
        x = inputs[0]  # (batch, ..., in)
        if x.shape[0] != active.batch:
            raise ValidationError(
                f"mixing was opened for {active.batch} rows but layer {module!r} got a batch of "
                f"{x.shape[0]}",
                field="batch_weights",
            )
        st = self._state[module]
        if active.rows is not None:
            x = x.index_select(0, active.rows)  # (n_mix, ..., in)
        s = active.scale.view(x.shape[0], *([1] * (x.dim() - 2)), -1)  # (n_mix, 1.., R)
        delta = ((x @ st.a_cat.T) * s) @ st.b_cat.T  # (n_mix, ..., out)
        if active.rows is None:
            return output + delta
        return output.index_add(0, active.rows, delta)
