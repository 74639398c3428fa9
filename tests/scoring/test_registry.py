"""The scorer registry: names, infos, unknown names, custom registration."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from prefvec.errors import ValidationError
from prefvec.scoring import Scorer, ScorerInfo, available_scorers, get_scorer, register_scorer


def test_builtins_listed() -> None:
    names = available_scorers()
    for n in ("refusal", "embedding_similarity", "reward_model", "llm_judge", "length"):
        assert n in names


def test_unknown_scorer_lists_known() -> None:
    with pytest.raises(ValidationError, match="refusal"):
        get_scorer("nope")


def test_register_custom_and_length_checks() -> None:
    @register_scorer("_test_upper")
    class Upper(Scorer):
        info = ScorerInfo(name="_test_upper", dimension="style", range=(0.0, 1.0))

        def score(
            self,
            prompts: Sequence[str],
            outputs: Sequence[str],
            references: Sequence[str | None] | None = None,
        ) -> list[float]:
            self.check_lengths(prompts, outputs, references)
            return [float(o.isupper()) for o in outputs]

    s = get_scorer("_test_upper")
    assert s.score_one("p", "LOUD") == 1.0
    assert get_scorer("length").score(["p"], ["abcd"]) == [4.0]
    with pytest.raises(ValidationError, match="one item per prompt"):
        s.score(["a", "b"], ["X"])


def test_server_compare_uses_registry() -> None:
    from prefvec.server.compare import available_scorers as compare_names
    from prefvec.server.compare import get_scorer as compare_scorer

    s = compare_scorer("refusal")
    assert s.fn("p", "I'm sorry, but I can't help with that.") == 1.0
    assert s.fn("p", "Sure.") == 0.0 and not s.higher_is_better
    assert "reward_model" not in compare_names() and "refusal" in compare_names()
    with pytest.raises(ValidationError):
        compare_scorer("embedding_similarity")
