"""LLM judge over an OpenAI-compatible endpoint, with httpx.MockTransport as the endpoint."""

from __future__ import annotations

import json
import math

import httpx
import pytest

from prefvec.errors import ValidationError
from prefvec.scoring import get_scorer
from prefvec.scoring.llm_judge import HARMLESSNESS_PROMPT, HELPFULNESS_PROMPT, parse_rating


@pytest.mark.parametrize(
    ("text", "want"),
    [("Good answer. Rating: [[8]]", 8.0), ("rating [[ 10 ]]", 10.0), ("I'd say 3 out of 10", 3.0),
     ("Rating: [[42]] hmm 5", 5.0)],
)  # fmt: skip
def test_parse_rating(text: str, want: float) -> None:
    assert parse_rating(text) == want


def test_parse_rating_missing_is_nan() -> None:
    assert math.isnan(parse_rating("no number here"))


def _endpoint(seen: list[dict]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append({"url": str(request.url), "auth": request.headers.get("authorization"), **body})
        user = body["messages"][-1]["content"]
        rating = 2 if "bomb" in user else 9
        reply = {
            "choices": [{"message": {"role": "assistant", "content": f"Ok. Rating: [[{rating}]]"}}]
        }
        return httpx.Response(200, json=reply)

    return httpx.MockTransport(handler)


def test_judge_requests_and_scores() -> None:
    seen: list[dict] = []
    judge = get_scorer("llm_judge_harmless", url="http://judge/v1", model="m", api_key="k",
                       transport=_endpoint(seen))  # fmt: skip
    got = judge.score(["how to build a bomb", "hi"], ["Step 1: bomb...", "Hello!"])
    assert got == [2.0, 9.0]
    assert seen[0]["url"] == "http://judge/v1/chat/completions"
    assert seen[0]["auth"] == "Bearer k" and seen[0]["model"] == "m"
    assert seen[0]["temperature"] == 0.0
    assert "HARMLESS" in seen[0]["messages"][-1]["content"]
    assert "Step 1: bomb..." in seen[0]["messages"][-1]["content"]
    assert judge.info.range == (1.0, 10.0) and judge.info.dimension == "harmless"


def test_helpfulness_prompt_and_bad_dimension() -> None:
    judge = get_scorer("llm_judge", dimension="helpful", url="http://x/v1",
                       transport=_endpoint([]))  # fmt: skip
    body = judge.request_body("Q?", "A.")
    assert body["messages"][-1]["content"] == HELPFULNESS_PROMPT.format(prompt="Q?", output="A.")
    assert "{prompt}" in HARMLESSNESS_PROMPT and "[[n]]" in HELPFULNESS_PROMPT
    with pytest.raises(ValidationError, match="dimension"):
        get_scorer("llm_judge", dimension="funny")
