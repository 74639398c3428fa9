"""LangChain's ``ChatOpenAI`` works against the server unchanged (issue 14): invoke, stream, and
preferences through ``extra_body`` (their reply equals the plain HTTP request's)."""

from __future__ import annotations

import httpx
import pytest

from tests.server.conftest import LiveServer

pytest.importorskip("langchain_openai", reason="langchain-openai is in the dev extra")

PROMPT = "Tell me a story"


def chat_model(live: LiveServer, **kw):  # type: ignore[no-untyped-def]
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        base_url=live.url + "/v1",
        api_key="unused",
        model="base",
        temperature=0,
        max_tokens=8,
        max_retries=0,
        **kw,
    )


def http_reply(live: LiveServer, prefs: dict[str, float] | None = None) -> str:
    body = {
        "model": "base",
        "messages": [{"role": "user", "content": PROMPT}],
        "temperature": 0,
        "max_tokens": 8,
        **({"preferences": prefs} if prefs else {}),
    }
    r = httpx.post(live.url + "/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 200, r.text
    return str(r.json()["choices"][0]["message"]["content"])


def test_invoke_stream_and_preferences(live: LiveServer) -> None:
    plain = chat_model(live).invoke(PROMPT)
    assert plain.content == http_reply(live)
    assert plain.response_metadata["finish_reason"] in ("stop", "length")
    streamed = "".join(str(c.content) for c in chat_model(live, stream_usage=True).stream(PROMPT))
    assert streamed == plain.content
    prefs = {"concise": 0.8, "warm": -0.6}
    steered = chat_model(live, extra_body={"preferences": prefs}).invoke(PROMPT)
    assert steered.content == http_reply(live, prefs) != plain.content
    scored = chat_model(live, logprobs=True, top_logprobs=2).invoke(PROMPT)
    content = scored.response_metadata["logprobs"]["content"]
    assert len(content) > 0 and all(len(t["top_logprobs"]) == 2 for t in content)
