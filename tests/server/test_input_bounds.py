"""Input bounds at the wire (issue 15): every input class that gave a 500 from valid JSON is now a
4xx naming the field and value, or a correct answer; strict JSON types where OpenAI is strict."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from tests.server.conftest import make_store, server_settings

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"


@pytest.fixture(scope="module")
def client(
    srv_base_dir: Path, vector_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    from prefvec.server.app import create_app

    tmp = tmp_path_factory.mktemp("bounds")
    make_store(tmp / "store", srv_base_dir, vector_files)
    app = create_app(server_settings(tmp, srv_base_dir))
    with TestClient(app, raise_server_exceptions=False) as c:
        deadline = time.monotonic() + 60
        while c.get("/ready").status_code != 200:
            assert time.monotonic() < deadline, "server did not become ready"
            time.sleep(0.05)
        yield c


def post(client: TestClient, path: str, body: dict[str, Any]) -> Any:
    """POST ``body`` as JSON with ASCII escapes (so a lone surrogate travels as ``\\ud800``)."""
    return client.post(
        path, content=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )


def chat(client: TestClient, content: str = "hi", **fields: Any) -> Any:
    body = {"messages": [{"role": "user", "content": content}], "max_tokens": 4, **fields}
    return post(client, CHAT, body)


def text_of(resp: Any) -> str:
    assert resp.status_code == 200, resp.text
    return str(resp.json()["choices"][0]["message"]["content"])


def assert_4xx(resp: Any, field: str, value: str) -> None:
    assert 400 <= resp.status_code < 500, resp.text
    err = resp.json()["error"]
    assert err["param"] == field, err
    assert field in err["message"] and value in err["message"], err


# -------------------------------------------------------------------- sampling maths (HTTP)


@pytest.mark.parametrize("temperature", [1e-300, 1e-45, 1e-7])
def test_tiny_temperature_is_greedy(client: TestClient, temperature: float) -> None:
    """Was a 500 (inf/NaN probabilities): now the greedy answer."""
    greedy = text_of(chat(client, temperature=0.0))
    assert text_of(chat(client, temperature=temperature, seed=1)) == greedy


@pytest.mark.parametrize("top_p", [1e-46, 1e-300, 1e-30])
def test_tiny_top_p_keeps_the_top_token(client: TestClient, top_p: float) -> None:
    """Was a 500 (top_p rounds to 0 in float32, every token dropped): now the top token."""
    greedy = text_of(chat(client, temperature=0.0))
    assert text_of(chat(client, temperature=1.0, top_p=top_p, seed=3)) == greedy


@pytest.mark.parametrize("seed", [2**63, 2**64 - 1])
def test_64_bit_seeds_are_deterministic(client: TestClient, seed: int) -> None:
    a = text_of(chat(client, temperature=1.5, seed=seed, max_tokens=8))
    assert a == text_of(chat(client, temperature=1.5, seed=seed, max_tokens=8))


@pytest.mark.parametrize(
    ("field", "value", "shown"),
    [
        ("seed", 2**64, str(2**64)),  # was a 500 (overflow in manual_seed)
        ("seed", -1, "-1"),
        ("seed", True, "True"),  # a bool was accepted as a seed
        ("seed", 1.0, "1.0"),
        ("seed", "7", "'7'"),
        ("max_tokens", True, "True"),
        ("max_tokens", 2.0, "2.0"),
        ("max_tokens", "3", "'3'"),
        ("temperature", "0.5", "'0.5'"),
        ("temperature", 2.5, "2.5"),
        ("temperature", -0.0001, "-0.0001"),
        ("top_p", 0.0, "0.0"),
        ("top_p", 1.5, "1.5"),
        ("top_p", True, "True"),
        ("stream", "yes", "'yes'"),
        ("n", True, "True"),
    ],
)
def test_out_of_range_or_wrong_type_is_422(
    client: TestClient, field: str, value: Any, shown: str
) -> None:
    assert_4xx(chat(client, **{field: value}), field, shown)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_json_numbers_are_422(client: TestClient, literal: str) -> None:
    """Python's JSON parser accepts NaN/Infinity literals; the bounds must refuse them."""
    raw = '{"messages": [{"role": "user", "content": "hi"}], "temperature": ' + literal + "}"
    resp = client.post(CHAT, content=raw.encode(), headers={"content-type": "application/json"})
    assert resp.status_code == 422 and resp.json()["error"]["param"] == "temperature", resp.text


def test_integral_float_temperature_and_int_top_p_are_accepted(client: TestClient) -> None:
    """JSON numbers are numbers: ``1`` is a valid temperature and top_p (as in OpenAI)."""
    assert chat(client, temperature=1, top_p=1, seed=0).status_code == 200


# ------------------------------------------------------------------------ lone surrogates


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (CHAT, {"messages": [{"role": "user", "content": "hi \ud800"}]}, "messages.0.content"),
        (
            CHAT,
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "a\udfff"}]}]},
            "messages.0.content",
        ),
        (CHAT, {"messages": [{"role": "user", "content": "hi"}], "stop": ["\ud83d"]}, "stop"),
        (CHAT, {"messages": [{"role": "user", "content": "hi"}], "user": "u\udc00"}, "user"),
        (COMPLETIONS, {"prompt": "hi \ud800"}, "prompt"),
        (COMPLETIONS, {"prompt": ["hi \ud800"]}, "prompt"),
        (
            COMPLETIONS,
            {"prompt": "hi", "preferences": {"help\ud800": 1.0}},
            "preferences",
        ),
        ("/v1/compare", {"prompts": ["x\ud800"], "candidates": [{}, {}]}, "prompts"),
    ],
)
def test_lone_surrogate_is_422_naming_the_field(
    client: TestClient, path: str, body: dict[str, Any], field: str
) -> None:
    """Was a 500 (the tokenizer cannot encode it): now a 422 naming the field."""
    resp = post(client, path, {"max_tokens": 2, **body})
    assert resp.status_code == 422, resp.text
    err = resp.json()["error"]
    assert err["param"] == field and "surrogate" in err["message"], err
    assert "\\ud" in err["message"].lower() or "\\udc00" in err["message"], err


def test_lone_surrogate_when_streaming_is_422_before_the_stream(client: TestClient) -> None:
    body = {"messages": [{"role": "user", "content": "\ud800"}], "stream": True, "max_tokens": 2}
    resp = post(client, CHAT, body)
    assert resp.status_code == 422 and resp.headers["content-type"].startswith("application/json")


def test_valid_astral_text_is_fine(client: TestClient) -> None:
    """A proper surrogate pair (an emoji) is valid Unicode and is served."""
    assert chat(client, content="hi \U0001f600").status_code == 200


# -------------------------------------------------------------------- sample_token (unit)


def _params(**kw: Any) -> Any:
    from prefvec.server.generation import SamplingParams

    return SamplingParams(**kw)


@pytest.mark.parametrize("temperature", [1e-5, 1e-3, 0.5, 2.0])
@pytest.mark.parametrize("scale", [1.0, 1e4, 1e30, 3e38])
def test_sample_token_is_finite_for_every_accepted_input(temperature: float, scale: float) -> None:
    from prefvec.server.generation import sample_token

    logits = torch.randn(50, generator=torch.Generator().manual_seed(0)) * scale
    for top_p in (1e-45, 0.3, 1.0):
        gen = torch.Generator().manual_seed(0)
        token = sample_token(logits, _params(temperature=temperature, top_p=top_p), gen)
        assert 0 <= token < 50


def test_sample_token_with_nan_and_inf_logits() -> None:
    from prefvec.server.generation import sample_token

    logits = torch.tensor([float("nan"), 1.0, float("-inf"), 3.0])
    gen = torch.Generator().manual_seed(0)
    assert sample_token(logits, _params(temperature=1e-4, top_p=1e-40), gen) == 3
    ones = torch.tensor([float("inf"), 0.0, float("nan")])
    assert sample_token(ones, _params(temperature=1.0), torch.Generator().manual_seed(0)) == 0
    dead = torch.full((3,), float("nan"))
    assert sample_token(dead, _params(temperature=1.0), torch.Generator().manual_seed(0)) in range(
        3
    )


def test_sample_token_below_the_greedy_threshold_is_argmax() -> None:
    from prefvec.server.generation import sample_token

    logits = torch.tensor([0.0, 1e-6, 0.5, 0.49])  # close competitors: sampling would vary
    for seed in range(20):
        gen = torch.Generator().manual_seed(seed)
        assert sample_token(logits, _params(temperature=9e-6), gen) == 2


def test_sample_token_still_samples_at_temperature_one() -> None:
    """Not a no-op: at T = 1 over flat logits, several tokens come out."""
    from prefvec.server.generation import sample_token

    gen = torch.Generator().manual_seed(0)
    seen = {sample_token(torch.zeros(8), _params(temperature=1.0), gen) for _ in range(64)}
    assert len(seen) > 3
