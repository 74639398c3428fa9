"""Reward profiles: every rollout scored on every dimension, each score in [0, 1].

Built-in dimensions:

* ``harmless``: for a prompt with a ``harmful`` intent, 1 when the reply refuses (the registry's
  ``refusal`` string-match judge), else 0; for a prompt without one, 1 (nothing to refuse).
* ``helpful``: for a prompt with a ``benign`` intent and a reference reply, the embedding
  similarity of the reply to the reference (registry ``embedding_similarity``, all-MiniLM-L6-v2),
  clipped to [0, 1]. Refusal is *not* multiplied in: in a fused prompt refusing the harmful part
  is right, and a reply that refuses everything scores low similarity anyway. A benign prompt
  without a reference scores ``1 - refusal`` (serving at all is all we can measure); a prompt
  without a benign intent scores 0 (no legitimate need to serve).
* ``name=<scorer>``: any registry scorer (``helpful=llm_judge_helpful``), normalised to [0, 1]
  with its ``ScorerInfo.range`` and flipped when ``higher_is_better`` is false.

Per prompt, the profile keeps the (samples × dimensions) score matrix and a summary: the best
reachable value per dimension, the best joint value (max over samples of the mean, and of the
min, of the dimensions), the spread (population std per dimension) and the number of
Pareto-optimal samples (no other sample at least as good on every dimension and better on one).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from prefvec.errors import ValidationError
from prefvec.training.mora.prompts import BENIGN, HARMFUL, PromptRecord

ScorerGetter = Callable[[str], Any]
"""``name -> Scorer`` (default :func:`prefvec.scoring.get_scorer`; tests inject scripted ones)."""


class Dimension(Protocol):
    """A reward dimension: ``score`` returns one value in [0, 1] per (prompt, reply)."""

    name: str

    def score(self, prompts: Sequence[PromptRecord], outputs: Sequence[str]) -> list[float]: ...


def _clip(x: float) -> float:
    return 0.0 if math.isnan(x) else min(1.0, max(0.0, x))


class _Lazy:
    """Builds a registry scorer on first use (the embedding model loads only when needed)."""

    def __init__(self, get: ScorerGetter, name: str) -> None:
        self.get, self.name, self._scorer = get, name, None

    def __call__(self) -> Any:
        if self._scorer is None:
            self._scorer = self.get(self.name)
        return self._scorer


class HarmlessDimension:
    """1 for a refusal of a harmful prompt, 0 for compliance; 1 for prompts with nothing harmful."""

    name = "harmless"

    def __init__(self, get: ScorerGetter) -> None:
        self.refusal = _Lazy(get, "refusal")

    def score(self, prompts: Sequence[PromptRecord], outputs: Sequence[str]) -> list[float]:
        idx = [i for i, p in enumerate(prompts) if HARMFUL in p.intents]
        out = [1.0] * len(prompts)
        if idx:
            judged = self.refusal().score([prompts[i].text for i in idx], [outputs[i] for i in idx])
            for i, r in zip(idx, judged, strict=True):
                out[i] = _clip(float(r))
        return out


class HelpfulDimension:
    """Similarity to the reference for benign prompts (see the module docstring)."""

    name = "helpful"

    def __init__(self, get: ScorerGetter) -> None:
        self.similarity = _Lazy(get, "embedding_similarity")
        self.refusal = _Lazy(get, "refusal")

    def score(self, prompts: Sequence[PromptRecord], outputs: Sequence[str]) -> list[float]:
        out = [0.0] * len(prompts)
        ref = [i for i, p in enumerate(prompts) if BENIGN in p.intents and p.reference]
        noref = [i for i, p in enumerate(prompts) if BENIGN in p.intents and not p.reference]
        if ref:
            sims = self.similarity().score(
                [prompts[i].text for i in ref],
                [outputs[i] for i in ref],
                [prompts[i].reference for i in ref],
            )
            for i, s in zip(ref, sims, strict=True):
                out[i] = _clip(float(s))
        if noref:
            refused = self.refusal().score(
                [prompts[i].text for i in noref], [outputs[i] for i in noref]
            )
            for i, r in zip(noref, refused, strict=True):
                out[i] = _clip(1.0 - float(r))
        return out


class ScorerDimension:
    """Any registry scorer, normalised to [0, 1] by its range and orientation."""

    def __init__(self, name: str, scorer: Any) -> None:
        self.name, self.scorer = name, scorer
        info = scorer.info
        lo, hi = (float(v) for v in info.range)
        if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
            raise ValidationError(
                f"`dimensions` {name}={info.name}: the scorer's range {info.range} must be "
                "finite to normalise it to [0, 1]",
                field="dimensions",
            )
        self.lo, self.hi, self.flip = lo, hi, not info.higher_is_better
        self.needs_reference = bool(info.needs_reference)

    def score(self, prompts: Sequence[PromptRecord], outputs: Sequence[str]) -> list[float]:
        refs = [p.reference for p in prompts] if self.needs_reference else None
        raw = self.scorer.score([p.text for p in prompts], list(outputs), refs)
        out = []
        for r in raw:
            x = _clip((float(r) - self.lo) / (self.hi - self.lo))
            out.append(1.0 - x if self.flip else x)
        return out


BUILTIN_DIMENSIONS: dict[str, Callable[[ScorerGetter], Dimension]] = {
    "harmless": HarmlessDimension,
    "helpful": HelpfulDimension,
}


def build_dimensions(specs: Sequence[str], get: ScorerGetter | None = None) -> list[Dimension]:
    """Dimensions from ``["harmless", "helpful=llm_judge_helpful", ...]``."""
    if get is None:
        from prefvec.scoring import get_scorer

        get = get_scorer
    dims: list[Dimension] = []
    unknown = []
    for spec in specs:
        name, sep, scorer = spec.partition("=")
        if sep:
            dims.append(ScorerDimension(name, get(scorer)))
        elif name in BUILTIN_DIMENSIONS:
            builtin: Dimension = BUILTIN_DIMENSIONS[name](get)
            dims.append(builtin)
        else:
            unknown.append(spec)
    if unknown:
        raise ValidationError(
            f"`dimensions` {unknown}: not built in ({sorted(BUILTIN_DIMENSIONS)}); "
            "use name=<registry scorer>",
            field="dimensions",
        )
    return dims


# ----------------------------------------------------------------------------- summaries


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """``a`` is at least as good as ``b`` everywhere and better somewhere."""
    return all(x >= y for x, y in zip(a, b, strict=True)) and any(
        x > y for x, y in zip(a, b, strict=True)
    )


def pareto_indices(points: Sequence[Sequence[float]]) -> list[int]:
    """Indices of the non-dominated points (equal points are all kept)."""
    return [i for i, p in enumerate(points) if not any(dominates(q, p) for q in points)]


def _std(xs: Sequence[float]) -> float:
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / len(xs))


def summarise(scores: Sequence[Sequence[float]], names: Sequence[str]) -> dict[str, Any]:
    """Best per dimension, best joint (mean and min), spread, Pareto count of one prompt.

    Args:
        scores: (samples, dimensions) matrix.
        names: the dimension names.
    """
    cols = list(zip(*scores, strict=True))  # (D, N)
    return {
        "best": {d: max(c) for d, c in zip(names, cols, strict=True)},
        "joint_mean": max(sum(row) / len(row) for row in scores),
        "joint_min": max(min(row) for row in scores),
        "spread": {d: _std(c) for d, c in zip(names, cols, strict=True)},
        "n_pareto": len(pareto_indices(scores)),
    }


def profile_rows(
    dims: Sequence[Dimension], prompts: Sequence[PromptRecord], rollouts: Sequence[dict[str, Any]]
) -> list[list[dict[str, Any]]]:
    """One ``profiles.jsonl`` line per prompt: the score matrix and its summary (one scorer
    call per dimension for the whole batch)."""
    flat_p = [p for p, r in zip(prompts, rollouts, strict=True) for _ in r["texts"]]
    flat_o = [t for r in rollouts for t in r["texts"]]
    per_dim = [d.score(flat_p, flat_o) for d in dims]  # (D, sum N)
    names = [d.name for d in dims]
    rows, k = [], 0
    for p, r in zip(prompts, rollouts, strict=True):
        n = len(r["texts"])
        matrix = [[per_dim[j][k + i] for j in range(len(dims))] for i in range(n)]  # (N, D)
        k += n
        rows.append(
            [{"id": p.id, "dimensions": names, "scores": matrix, **summarise(matrix, names)}]
        )
    return rows
