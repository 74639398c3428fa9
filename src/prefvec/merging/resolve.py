"""From ``{vector ref: weight}`` to a pinned :class:`MergeSpec` and a model merged in place.

Used by the CLI (``prefvec merge`` / ``generate``); the server's engine resolves the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from prefvec.merging.spec import MergeSpec
from prefvec.vector_store.format import PreferenceVector


@dataclass
class ResolvedMerge:
    """A merge with every vector pinned to a version and loaded."""

    spec: MergeSpec
    vectors: dict[str, PreferenceVector] = field(default_factory=dict)  # "name@ver" -> vector

    @property
    def versions(self) -> dict[str, int]:
        return {v.metadata.name: int(v.metadata.version or 0) for v in self.vectors.values()}

    def describe(self) -> dict[str, Any]:
        """What the response / merged-model card says about the merge."""
        return {"recipe_key": self.spec.key, "vectors": self.versions, "method": self.spec.method}


def resolve_merge(
    store: Any,
    weights: Mapping[str, float],
    *,
    method: str = "linear",
    density: float = 1.0,
    seed: int = 0,
) -> ResolvedMerge:
    """Pin each ref (``name``, ``name@latest``, ``name@3``) to a stored version and load it.

    Raises:
        NotFoundError: an unknown vector or version (named).
        ValidationError: a malformed ref, a non-finite weight or an unknown method.
    """
    from prefvec.merging.methods import get_method

    get_method(method)
    pinned: dict[str, float] = {}
    vectors: dict[str, PreferenceVector] = {}
    for ref, w in weights.items():
        record = store.record(ref)
        key = f"{record.name}@{record.version}"
        pinned[key] = pinned.get(key, 0.0) + float(w)
        if key not in vectors:
            vectors[key] = store.get(key)
    spec = MergeSpec(method=method, weights=tuple(pinned.items()), density=density, seed=seed)
    return ResolvedMerge(spec=spec, vectors=vectors)


def spec_deltas(
    spec: MergeSpec, vectors: Mapping[str, PreferenceVector]
) -> list[tuple[dict[str, torch.Tensor], float]]:
    """What :meth:`ModelMerger.apply` needs for ``spec``: ``(δ, w)`` pairs.

    ``linear`` keeps one pair per vector (the merger adds them in place, no merged copy); other
    methods merge first and return ``[(merged δ, 1.0)]``. Low-rank vectors are densified
    (``B @ A``); zero weights are skipped.

    Args:
        spec: the pinned merge.
        vectors: ``{"name@version": vector}`` for every ref of ``spec``.
    """
    from prefvec.merging.methods import merge_dense

    pairs = [(vectors[ref].to_dense(), w) for ref, w in spec.weights if w != 0.0]
    if spec.method == "linear" or not pairs:
        return pairs
    deltas, weights = [d for d, _ in pairs], [w for _, w in pairs]
    merged = merge_dense(deltas, weights, spec.method, spec.density, spec.seed)
    return [(merged, 1.0)]


def merged_delta(resolved: ResolvedMerge) -> dict[str, torch.Tensor]:
    """The single dense merged delta of a resolved merge (for callers that keep it)."""
    from prefvec.merging.methods import merge_dense

    pairs = spec_deltas(resolved.spec, resolved.vectors)
    if not pairs:
        return {}
    if resolved.spec.method != "linear":
        return pairs[0][0]  # already merged by spec_deltas
    return merge_dense([d for d, _ in pairs], [w for _, w in pairs], "linear")


def apply_resolved(model: torch.nn.Module, resolved: ResolvedMerge) -> Any:
    """Merge in place into ``model`` (a new :class:`ModelMerger`); returns the merger."""
    from prefvec.merging.apply import ModelMerger

    merger = ModelMerger(model)
    merger.apply(spec_deltas(resolved.spec, resolved.vectors), key=resolved.spec.key)
    return merger
