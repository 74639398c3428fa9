"""Cheap text statistics as scorers (no model)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from prefvec.scoring.registry import Scorer, ScorerInfo, register_scorer

# a reply whose distinct-trigram ratio falls below this counts as collapsed ("Hint: Hint: Hint:")
COLLAPSE_RATIO = 0.5


def distinct_trigram_ratio(text: str) -> float:
    """Distinct word trigrams over all word trigrams; 1.0 for replies under three words."""
    words = text.split()
    grams = [tuple(words[i : i + 3]) for i in range(len(words) - 2)]
    return len(set(grams)) / len(grams) if grams else 1.0


def is_collapsed(text: str) -> bool:
    """Whether a reply has collapsed into repetition (distinct-trigram ratio < COLLAPSE_RATIO)."""
    return distinct_trigram_ratio(text) < COLLAPSE_RATIO


@register_scorer("length")
class LengthScorer(Scorer):
    """Number of characters of the output (a verbosity check beside the real scorers)."""

    info = ScorerInfo(
        name="length",
        dimension="verbosity",
        range=(0.0, math.inf),
        description="characters in the output",
    )

    def score(
        self,
        prompts: Sequence[str],
        outputs: Sequence[str],
        references: Sequence[str | None] | None = None,
    ) -> list[float]:
        self.check_lengths(prompts, outputs, references)
        return [float(len(o)) for o in outputs]
