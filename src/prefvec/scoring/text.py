"""Cheap text statistics as scorers (no model)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from prefvec.scoring.registry import Scorer, ScorerInfo, register_scorer


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
