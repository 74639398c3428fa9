"""Merge specs and their canonical keys.

A :class:`MergeSpec` is what a recipe or a request's ``preferences`` resolve to once every vector
is pinned to a version. It is frozen, so it can key caches; :attr:`MergeSpec.key` is its canonical
string (vectors sorted, weights rounded to :data:`WEIGHT_STEP`).
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

WEIGHT_STEP = 1e-4  # weights closer than this share a cache entry


def round_weight(w: float, step: float = WEIGHT_STEP) -> float:
    """Round a weight to the canonical grid (``-0.0`` becomes ``0.0``)."""
    return round(round(w / step) * step, 10) + 0.0


class MergeSpec(BaseModel):
    """A fully resolved merge: method, pinned vectors with weights, method parameters.

    Args:
        method: registered merge method name (``linear``, ``ties``, ``dare_linear``, ...).
        weights: ``{"name@version": weight}``; any real weight, negatives invert a preference.
        density: fraction of entries kept by TIES / DARE / magnitude pruning, in (0, 1].
        seed: seed of DARE's random drop.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: str = "linear"
    weights: tuple[tuple[str, float], ...] = Field(default_factory=tuple)
    density: float = Field(1.0, gt=0.0, le=1.0)
    seed: int = 0

    @field_validator("weights", mode="before")
    @classmethod
    def _canonical(cls, v: Any) -> tuple[tuple[str, float], ...]:
        items = v.items() if isinstance(v, dict) else v
        out: dict[str, float] = {}
        for ref, w in items:
            w = float(w)
            if not math.isfinite(w):
                raise ValueError(f"weight of {ref!r} must be finite, got {w}")
            out[str(ref)] = out.get(str(ref), 0.0) + w
        return tuple(sorted((k, round_weight(w)) for k, w in out.items()))

    @property
    def key(self) -> str:
        """Canonical, human-readable key: ``linear(a@1=0.5,b@2=-1)[d=1,s=0]``."""
        body = ",".join(f"{ref}={w:g}" for ref, w in self.weights)
        params = "" if self.method == "linear" else f"[d={self.density:g},s={self.seed}]"
        return f"{self.method}({body}){params}"

    @property
    def short_key(self) -> str:
        """A 16-hex-digit hash of :attr:`key`, for file and metric names."""
        return hashlib.sha256(self.key.encode()).hexdigest()[:16]

    @property
    def weight_map(self) -> dict[str, float]:
        return dict(self.weights)

    @property
    def is_base(self) -> bool:
        """True when the merge is a no-op (no vectors or all weights zero)."""
        return all(w == 0.0 for _, w in self.weights)
