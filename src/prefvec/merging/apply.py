"""Apply merged deltas to a live model in place, and restore its base weights bit-exactly.

:class:`ModelMerger` keeps one preallocated copy of every base parameter it has ever touched
(allocated on first touch, reused afterwards). Switching recipes is then

    restore:  param.copy_(backup)                        (bit-exact, no allocation)
    apply:    torch.add(backup, δ_1, alpha=w_1, out=param)  (restore fused with the first add)
              param.add_(δ_k, alpha=w_k), k ≥ 2          (batched with ``_foreach_add_``)

Parameters modified by the previous merge but not by ``δ_1`` are restored with ``copy_``.

Both are memory-bound: ``copy_`` into a preallocated buffer is ~5x faster than ``clone()``, and
adding a delta already in the parameter dtype is ~17x faster than adding fp32 to bf16, so deltas
are cast once (see :meth:`ModelMerger.cast`) and the cast copies are reused while the source
tensor lives.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from prefvec.errors import ValidationError
from prefvec.merging.methods import is_finite_number

logger = logging.getLogger(__name__)

Delta = Mapping[str, torch.Tensor]


class ModelMerger:
    """In-place merge / restore of a model's parameters by ``named_parameters()`` names.

    Tied parameters appear once, under the name ``named_parameters()`` gives them (for a tied
    causal LM, ``model.embed_tokens.weight``); a delta keyed by the other name
    (``lm_head.weight``) is mapped to it.

    Args:
        model: the model whose parameters are merged in place.

    Attributes:
        current_key: free for the caller: the key of the merge now in the weights (set by the
            ``key=`` argument of :meth:`apply` / :meth:`load_weights`, cleared by :meth:`restore`).

    Example:
        ```python
        merger = ModelMerger(model)
        merger.apply([(phi_helpful, 1.0), (phi_harmless, -0.5)], key=spec.key)
        cache.put(spec.key, merger.snapshot())
        merger.restore()  # bit-exact base
        ```
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._params: dict[str, nn.Parameter] = dict(model.named_parameters())
        by_id = {id(p): name for name, p in self._params.items()}
        self._aliases: dict[str, str] = {
            name: by_id[id(p)]
            for name, p in model.named_parameters(remove_duplicate=False)
            if by_id[id(p)] != name
        }
        self._backup: dict[str, torch.Tensor] = {}
        self._dirty: set[str] = set()
        self._casts: dict[int, tuple[weakref.ref[torch.Tensor], torch.Tensor]] = {}
        self._lock = threading.RLock()
        self.current_key: str | None = None

    # -- introspection -----------------------------------------------------------------------

    @property
    def param_names(self) -> list[str]:
        """Parameter names this merger accepts (aliases of tied parameters excluded)."""
        return list(self._params)

    @property
    def dirty(self) -> frozenset[str]:
        """Parameters currently differing from the base (modified since the last restore)."""
        return frozenset(self._dirty)

    @property
    def backup_nbytes(self) -> int:
        """Bytes held by the preallocated base copies."""
        return sum(t.numel() * t.element_size() for t in self._backup.values())

    # -- validation and casting --------------------------------------------------------------

    def _canonical(self, name: str) -> str:
        return self._aliases.get(name, name)

    def check(self, delta: Delta, field: str = "delta") -> list[str]:
        """Every problem of ``delta`` against the model (unknown names, shapes, dtypes)."""
        problems: list[str] = []
        seen: dict[str, str] = {}
        for name, t in delta.items():
            canon = self._canonical(name)
            param = self._params.get(canon)
            if param is None:
                problems.append(f"`{field}` names unknown parameter {name!r}")
            elif not isinstance(t, torch.Tensor) or not t.is_floating_point():
                problems.append(f"`{field}[{name!r}]` must be a floating-point tensor")
            elif t.shape != param.shape:
                problems.append(
                    f"`{field}[{name!r}]` has shape {tuple(t.shape)}, parameter has "
                    f"{tuple(param.shape)}"
                )
            if canon in seen:
                problems.append(f"`{field}` gives tied parameter {canon!r} twice ({seen[canon]!r})")
            seen[canon] = name
        return problems

    def _raise(self, problems: list[str]) -> None:
        if problems:
            raise ValidationError("; ".join(problems), problems=problems)

    def _cast_one(self, name: str, t: torch.Tensor) -> torch.Tensor:
        """``t`` in the dtype/device of parameter ``name``, cast at most once per source tensor."""
        param = self._params[name]
        if t.dtype == param.dtype and t.device == param.device:
            return t
        key = id(t)
        hit = self._casts.get(key)
        if hit is not None and hit[0]() is t and hit[1].dtype == param.dtype:
            return hit[1]
        cast = t.detach().to(device=param.device, dtype=param.dtype)
        casts = self._casts
        self._casts[key] = (weakref.ref(t, lambda _r: casts.pop(key, None)), cast)
        return cast

    def cast(self, delta: Delta) -> dict[str, torch.Tensor]:
        """Validate ``delta`` and return it keyed by canonical names, in the parameter dtypes.

        Pass the result to :meth:`apply` to skip per-call casting; cast copies of a source tensor
        are also cached here while that tensor lives.

        Raises:
            ValidationError: unknown names or shape mismatches (all listed).
        """
        self._raise(self.check(delta))
        return {self._canonical(n): self._cast_one(self._canonical(n), t) for n, t in delta.items()}

    def clear_cast_cache(self) -> None:
        """Drop every cached cast copy."""
        self._casts.clear()

    # -- in-place operations -----------------------------------------------------------------

    def _touch(self, name: str) -> nn.Parameter:
        """The parameter ``name``, backed up on first touch, and marked dirty."""
        param = self._params[name]
        if name not in self._backup:
            self._backup[name] = torch.empty_like(param, memory_format=torch.preserve_format)
            self._backup[name].copy_(param.detach())
        self._dirty.add(name)
        return param

    @torch.no_grad()
    def restore(self) -> None:
        """Copy the base into every modified parameter (bit-exact); clear ``current_key``."""
        with self._lock:
            for name in self._dirty:
                self._params[name].copy_(self._backup[name])
            self._dirty.clear()
            self.current_key = None

    @torch.no_grad()
    def apply(
        self, deltas_and_weights: Sequence[tuple[Delta, float]], *, key: str | None = None
    ) -> None:
        """Restore the base, then add ``w·δ`` in place for every (δ, w).

        Args:
            deltas_and_weights: ``(delta, weight)`` pairs; deltas map parameter names to tensors
                of the parameter's shape (any float dtype; cast once, see :meth:`cast`).
            key: stored in :attr:`current_key` once applied.

        Raises:
            ValidationError: non-finite weight, unknown name or shape mismatch (every problem
                listed); the model is left untouched.
        """
        problems: list[str] = []
        for i, (delta, w) in enumerate(deltas_and_weights):
            if not is_finite_number(w):
                problems.append(f"`weights[{i}]` must be a finite number, got {w!r}")
            problems += self.check(delta, field=f"deltas[{i}]")
        self._raise(problems)
        with self._lock:
            casts = [(self.cast(delta), float(w)) for delta, w in deltas_and_weights]
            casts = [(delta, w) for delta, w in casts if w != 0.0 and delta]
            if not casts:
                self.restore()
            else:
                self._restore_and_add_first(*casts[0])
                for delta, w in casts[1:]:
                    self._add(delta, w)
            self.current_key = key

    def _restore_except(self, keep: Mapping[str, torch.Tensor]) -> None:
        """Restore every dirty parameter not named in ``keep`` (those are overwritten next)."""
        for name in self._dirty - keep.keys():
            self._params[name].copy_(self._backup[name])
        self._dirty.intersection_update(keep.keys())

    def _restore_and_add_first(self, delta: dict[str, torch.Tensor], w: float) -> None:
        """``param = base + w·δ`` for the params of ``δ`` in one pass (restore fused with the
        first add); every other dirty parameter is restored to the base."""
        self._restore_except(delta)
        for name, t in delta.items():
            param = self._touch(name)  # backed up on first touch (then param is the base)
            torch.add(self._backup[name], t, alpha=w, out=param)

    def _add(self, delta: dict[str, torch.Tensor], w: float) -> None:
        """``param += w·δ`` in place, batched over tensors (``torch._foreach_add_``)."""
        names = list(delta)
        params: list[torch.Tensor] = [self._touch(n) for n in names]
        torch._foreach_add_(params, [delta[n] for n in names], alpha=w)

    def apply_merged(self, delta: Delta, *, key: str | None = None) -> None:
        """Restore the base, then add one already merged ``delta`` (weight 1)."""
        self.apply([(delta, 1.0)], key=key)

    @torch.no_grad()
    def load_weights(self, weights: Mapping[str, torch.Tensor], *, key: str | None = None) -> None:
        """Set the model to full merged tensors (e.g. a :class:`MergedCache` hit).

        Parameters in ``weights`` are copied over directly (one pass); every other modified
        parameter is restored to the base, so parameters not in ``weights`` end at the base.

        Raises:
            ValidationError: unknown name or shape mismatch (all listed); model untouched.
        """
        self._raise(self.check(weights, field="weights"))
        canon = {self._canonical(n): t for n, t in weights.items()}
        with self._lock:
            self._restore_except(canon)  # params in `weights` are overwritten: no restore pass
            for name, t in canon.items():
                self._touch(name).copy_(t)
            self.current_key = key

    @property
    def dirty_nbytes(self) -> int:
        """Bytes a :meth:`snapshot` of the current merge holds."""
        return sum(self._params[n].numel() * self._params[n].element_size() for n in self._dirty)

    @torch.no_grad()
    def snapshot(self, out: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Copies of the current weights of every modified parameter (what :meth:`load_weights`
        needs to reproduce the current merge).

        Args:
            out: optional preallocated buffers by parameter name (e.g. the tensors of an evicted
                cache entry, see :meth:`MergedCache.make_room`). A buffer of the parameter's
                shape, dtype and device is filled with ``copy_`` (no allocation) and returned in
                place of a fresh clone; other parameters are cloned. The caller must own the
                buffers (nothing else may still read them).

        Returns:
            ``{name: tensor}`` sorted by name.
        """
        with self._lock:
            snap: dict[str, torch.Tensor] = {}
            for name in sorted(self._dirty):
                param = self._params[name].detach()
                buf = None if out is None else out.get(name)
                if (
                    buf is not None
                    and buf.shape == param.shape
                    and buf.dtype == param.dtype
                    and buf.device == param.device
                    and buf.data_ptr() != param.data_ptr()
                ):
                    snap[name] = buf.copy_(param)
                else:
                    snap[name] = param.clone()
            return snap
