"""Scorers used by MORA, compare and the evaluation suites, behind one registry.

Built in (``available_scorers()``):

* ``refusal``: string-match refusal judge (AdvBench / XSTest family), 1 = refusal, range [0, 1].
* ``embedding_similarity``: cosine similarity to a reference answer (all-MiniLM-L6-v2, offline;
  needs the ``eval`` extra), range [-1, 1].
* ``reward_model``: logit of a Hugging Face sequence-classification reward model (``model=``).
* ``llm_judge`` / ``llm_judge_helpful`` / ``llm_judge_harmless``: 1-10 rating by any
  OpenAI-compatible endpoint, with the prompts written in :mod:`prefvec.scoring.llm_judge`.
* ``length``: characters of the output.

Each scorer carries a :class:`ScorerInfo` (dimension, range, orientation).
"""

from prefvec.scoring.refusal import (
    REFUSAL_PHRASES,
    REFUSAL_PREFIXES,
    Agreement,
    RefusalJudge,
    is_refusal,
    xstest_agreement,
)
from prefvec.scoring.registry import (
    Scorer,
    ScorerInfo,
    available_scorers,
    get_scorer,
    register_scorer,
)

__all__ = [
    "REFUSAL_PHRASES",
    "REFUSAL_PREFIXES",
    "Agreement",
    "RefusalJudge",
    "Scorer",
    "ScorerInfo",
    "available_scorers",
    "get_scorer",
    "is_refusal",
    "register_scorer",
    "xstest_agreement",
]
