"""Merging preference vectors: dense methods, exact low-rank algebra, in-place apply, caching.

* :func:`merge_dense` with a registry of methods (``linear``/``task_arithmetic``, ``ties``,
  ``dare_linear``, ``dare_ties``, ``magnitude``): :func:`available_methods`, :func:`get_method`,
  :func:`register_method`.
* :func:`merge_lowrank` / :func:`lowrank_to_dense`: exact weighted sums of low-rank vectors.
* :class:`ModelMerger`: restore-then-add in place, bit-exact restore.
* :class:`MergedCache`: byte-bounded LRU of merged weights.
* :class:`LowRankMixer`: per-request low-rank mixing through forward hooks, no merge.
* :class:`MergeSpec`: the frozen, canonical description of a merge (cache key).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from prefvec.merging.spec import MergeSpec

if TYPE_CHECKING:
    from prefvec.merging.apply import ModelMerger
    from prefvec.merging.cache import MergedCache, tensors_nbytes
    from prefvec.merging.lowrank import LowRankMixer, lowrank_to_dense, merge_lowrank
    from prefvec.merging.methods import (
        MergeMethod,
        available_methods,
        get_method,
        merge_dense,
        register_method,
        tensor_seed,
    )

# Lazy re-exports: `prefvec.merging.spec` (used by torch-free clients) must not import torch.
_LAZY = {
    "ModelMerger": "apply",
    "MergedCache": "cache",
    "tensors_nbytes": "cache",
    "LowRankMixer": "lowrank",
    "lowrank_to_dense": "lowrank",
    "merge_lowrank": "lowrank",
    "MergeMethod": "methods",
    "available_methods": "methods",
    "get_method": "methods",
    "merge_dense": "methods",
    "register_method": "methods",
    "tensor_seed": "methods",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(f"prefvec.merging.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'prefvec.merging' has no attribute {name!r}")


__all__ = [
    "LowRankMixer",
    "MergeMethod",
    "MergeSpec",
    "MergedCache",
    "ModelMerger",
    "available_methods",
    "get_method",
    "lowrank_to_dense",
    "merge_dense",
    "merge_lowrank",
    "register_method",
    "tensor_seed",
    "tensors_nbytes",
]
