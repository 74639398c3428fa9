"""Request shapes, response types and error mapping of the sync and async clients."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from prefvec import errors, protocol
from prefvec.clients import AsyncPrefvecClient, PrefvecClient, ServerUnreachableError

from .conftest import (
    FakeServer,
    chat_response,
    compare_response,
    error,
    experiment_info,
    experiment_report,
    multipart_fields,
    recipe_info,
    vector_info,
)

URL = "http://prefvec.test"


def client(fake: FakeServer, **kwargs) -> PrefvecClient:
    return PrefvecClient(URL, transport=httpx.MockTransport(fake), **kwargs)


def aclient(fake: FakeServer, **kwargs) -> AsyncPrefvecClient:
    return AsyncPrefvecClient(URL, transport=httpx.MockTransport(fake), **kwargs)


# ------------------------------------------------------------------------------ generation


def test_chat_sends_openai_body_with_extensions_and_parses_response(fake: FakeServer) -> None:
    fake.on("POST", "/v1/chat/completions", chat_response("hi!"))
    with client(fake, api_key="sk-user") as c:
        r = c.chat(
            "Hello",
            preferences={"helpful": 0.5, "harmless@1": -1.0},
            merge={"method": "ties", "density": 0.5},
            max_tokens=8,
            temperature=0.0,
            user="u1",
            extra_body={"stop": ["\n"]},
        )
    assert isinstance(r, protocol.ChatCompletionResponse)
    assert r.choices[0].message.content == "hi!"
    assert r.prefvec.vectors == {"helpful": 2}
    assert fake.last.method == "POST"
    assert fake.last.headers["authorization"] == "Bearer sk-user"
    assert fake.last_json() == {
        "messages": [{"role": "user", "content": "Hello"}],
        "preferences": {"helpful": 0.5, "harmless@1": -1.0},
        "merge": {"method": "ties", "density": 0.5},
        "max_tokens": 8,
        "temperature": 0.0,
        "user": "u1",
        "stop": ["\n"],
    }


def test_chat_accepts_message_models_and_recipe(fake: FakeServer) -> None:
    fake.on("POST", "/v1/chat/completions", chat_response())
    msgs = [
        protocol.ChatMessage(role="system", content="Be brief"),
        {"role": "user", "content": "x"},
    ]
    with client(fake) as c:
        c.chat(msgs, recipe="r1@2", experiment="exp1", merge=protocol.MergeOptions(method="ties"))
    body = fake.last_json()
    assert body["messages"] == [
        {"role": "system", "content": "Be brief"},
        {"role": "user", "content": "x"},
    ]
    assert body["recipe"] == "r1@2" and body["experiment"] == "exp1"
    assert body["merge"] == {"method": "ties", "density": 1.0, "seed": 0}
    assert "authorization" not in fake.last.headers
    assert "stream" not in body


def test_complete(fake: FakeServer) -> None:
    body = {
        "id": "cmpl-1",
        "created": 1,
        "model": "tiny",
        "choices": [{"text": " world", "finish_reason": "length"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        "prefvec": {"recipe_key": "base", "path": "base"},
    }
    fake.on("POST", "/v1/completions", body)
    with client(fake) as c:
        r = c.complete("Hello", preferences={"helpful": 1.0}, seed=3)
    assert isinstance(r, protocol.CompletionResponse) and r.choices[0].text == " world"
    assert fake.last_json() == {"prompt": "Hello", "preferences": {"helpful": 1.0}, "seed": 3}


# ---------------------------------------------------------------------------------- vectors


def test_push_vector_streams_a_file_as_multipart(fake: FakeServer, tmp_path: Path) -> None:
    path = tmp_path / "helpful-v2.safetensors"
    path.write_bytes(b"\x00safetensors-bytes\xff" * 100)
    fake.on("POST", "/v1/vectors", vector_info())
    with client(fake, api_key="sk-op") as c:
        info = c.push_vector(path, name="helpful", metadata={"description": "d"})
    assert isinstance(info, protocol.VectorInfo) and info.version == 2
    fields = multipart_fields(fake.last)
    assert fields["file"] == ("helpful-v2.safetensors", path.read_bytes())
    assert json.loads(fields["metadata"][1]) == {"description": "d", "name": "helpful"}
    assert fake.last.headers["authorization"] == "Bearer sk-op"
    assert fake.last.headers["content-type"].startswith("multipart/form-data")


def test_push_vector_from_bytes_without_metadata(fake: FakeServer) -> None:
    fake.on("POST", "/v1/vectors", vector_info())
    with client(fake) as c:
        c.push_vector(b"raw-bytes")
    fields = multipart_fields(fake.last)
    assert fields == {"file": ("vector.safetensors", b"raw-bytes")}


def test_vector_reads_and_delete(fake: FakeServer) -> None:
    fake.on("GET", "/v1/vectors", {"data": [vector_info()]})
    fake.on("GET", "/v1/vectors/helpful@2", vector_info())
    fake.on(
        "GET", "/v1/vectors/helpful/versions", {"data": [vector_info(version=1), vector_info()]}
    )
    fake.on(
        "DELETE", "/v1/vectors/helpful@2", {"object": "vector", "name": "helpful", "version": 2}
    )
    with client(fake) as c:
        assert [v.name for v in c.list_vectors().data] == ["helpful"]
        assert c.get_vector("helpful@2").sha256 == "ab" * 32
        assert [v.version for v in c.vector_versions("helpful").data] == [1, 2]
        deleted = c.delete_vector("helpful@2")
    assert isinstance(deleted, protocol.DeleteResponse) and deleted.version == 2
    assert [(r.method, r.url.path) for r in fake.requests] == [
        ("GET", "/v1/vectors"),
        ("GET", "/v1/vectors/helpful@2"),
        ("GET", "/v1/vectors/helpful/versions"),
        ("DELETE", "/v1/vectors/helpful@2"),
    ]


def test_download_vector_writes_file(fake: FakeServer, tmp_path: Path) -> None:
    blob = bytes(range(256)) * 1000
    fake.on("GET", "/v1/vectors/helpful/file", httpx.Response(200, content=blob))
    dest = tmp_path / "out.safetensors"
    with client(fake) as c:
        assert c.download_vector("helpful", dest) == dest
    assert dest.read_bytes() == blob


def test_download_error_leaves_no_file(fake: FakeServer, tmp_path: Path) -> None:
    fake.on("GET", "/v1/vectors/nope/file", error(404, "not_found", "vector 'nope' not found"))
    dest = tmp_path / "out.safetensors"
    with client(fake) as c, pytest.raises(errors.NotFoundError):
        c.download_vector("nope", dest)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------- recipes, compare, experiments


def test_recipes(fake: FakeServer) -> None:
    fake.on("POST", "/v1/recipes", recipe_info())
    fake.on("GET", "/v1/recipes", {"data": [recipe_info()]})
    fake.on("GET", "/v1/recipes/r1", recipe_info())
    fake.on("DELETE", "/v1/recipes/r1", {"object": "recipe", "name": "r1"})
    with client(fake) as c:
        made = c.create_recipe("r1", {"helpful": 0.5}, method="ties", density=0.7)
        assert fake.last_json() == {
            "name": "r1",
            "weights": {"helpful": 0.5},
            "method": "ties",
            "density": 0.7,
            "seed": 0,
            "description": "",
        }
        assert made.key == "linear(helpful@2=0.5)"
        assert c.list_recipes().data[0].name == "r1"
        assert c.get_recipe("r1").version == 1
        assert c.delete_recipe("r1").deleted


def test_compare_body(fake: FakeServer) -> None:
    fake.on("POST", "/v1/compare", compare_response())
    cand = protocol.CompareCandidate(label="h", preferences={"helpful": 1.0})
    with client(fake) as c:
        r = c.compare(["Hi"], ["r1", cand, {"label": "base"}], max_tokens=4, scorers=["len"])
    assert isinstance(r, protocol.CompareResponse) and r.summary.win_rates[0].rate == 1.0
    assert fake.last_json() == {
        "prompts": ["Hi"],
        "candidates": [
            {"recipe": "r1"},
            {"label": "h", "preferences": {"helpful": 1.0}},
            {"label": "base"},
        ],
        "chat": True,
        "max_tokens": 4,
        "temperature": 0.0,
        "seed": 0,
        "scorers": ["len"],
    }


def test_experiments_and_feedback(fake: FakeServer) -> None:
    fake.on("POST", "/v1/experiments", experiment_info())
    fake.on("GET", "/v1/experiments", {"data": [experiment_info()]})
    fake.on("GET", "/v1/experiments/exp1", experiment_report())
    fb = {"object": "feedback", "id": 7, "experiment": "exp1", "arm": "a"}
    fake.on("POST", "/v1/feedback", fb)
    arms = [{"name": "a", "recipe": "r1"}, protocol.ExperimentArm(name="b", recipe="r2", traffic=3)]
    with client(fake) as c:
        info = c.create_experiment("exp1", arms, description="d")
        assert fake.last_json() == {
            "name": "exp1",
            "arms": [{"name": "a", "recipe": "r1"}, {"name": "b", "recipe": "r2", "traffic": 3.0}],
            "description": "d",
        }
        assert isinstance(info, protocol.ExperimentInfo)
        assert c.list_experiments().data[0].name == "exp1"
        report = c.experiment_report("exp1")
        assert isinstance(report, protocol.ExperimentReport) and report.arms[0].mean_rating == 4.5
        assert c.get_experiment("exp1") == report
        got = c.feedback("exp1", user="u1", rating=4.0)
        assert fake.last_json() == {"experiment": "exp1", "user": "u1", "rating": 4.0}
        assert got.id == 7
        c.feedback("exp1", preferred="a", rejected="b", comment="better")
        assert fake.last_json() == {
            "experiment": "exp1",
            "preferred": "a",
            "rejected": "b",
            "comment": "better",
        }


def test_health_ready_metrics_models(fake: FakeServer) -> None:
    fake.on("GET", "/health", {"status": "ok"})
    fake.on("GET", "/ready", httpx.Response(503, json={"ready": False}))
    fake.on("GET", "/metrics", "# HELP prefvec_requests_total x\nprefvec_requests_total 3\n")
    fake.on("GET", "/v1/models", {"data": [{"id": "tiny"}, {"id": "recipe:r1", "kind": "recipe"}]})
    with client(fake) as c:
        assert c.health().status == "ok"
        assert c.ready().ready is False
        assert "prefvec_requests_total 3" in c.metrics()
        assert [m.id for m in c.models().data] == ["tiny", "recipe:r1"]


def test_ready_503_with_error_body_raises(fake: FakeServer) -> None:
    fake.on("GET", "/ready", httpx.Response(503, text="upstream down"))
    with client(fake) as c, pytest.raises(errors.PrefvecError, match="upstream down"):
        c.ready()


def test_defaults_from_environment(monkeypatch: pytest.MonkeyPatch, fake: FakeServer) -> None:
    monkeypatch.setenv("PREFVEC_URL", "http://env-host:9000/")
    monkeypatch.setenv("PREFVEC_API_KEY", "sk-env")
    fake.on("GET", "/health", {"status": "ok"})
    with PrefvecClient(transport=httpx.MockTransport(fake), timeout=5) as c:
        c.health()
        assert c.timeout.read == 5 and c.timeout.connect == 5
    assert str(fake.last.url) == "http://env-host:9000/health"
    assert fake.last.headers["authorization"] == "Bearer sk-env"


# ----------------------------------------------------------------------------- error mapping

ERROR_CASES = [
    (404, "not_found", errors.NotFoundError, LookupError),
    (422, "invalid_request_error", errors.ValidationError, ValueError),
    (422, "fingerprint_mismatch", errors.FingerprintMismatchError, ValueError),
    (400, "bad_request", errors.BadRequestError, ValueError),
    (409, "conflict", errors.ConflictError, errors.PrefvecError),
    (413, "payload_too_large", errors.PayloadTooLargeError, ValueError),
    (401, "authentication_error", errors.AuthenticationError, PermissionError),
    (403, "permission_denied", errors.PermissionDeniedError, PermissionError),
    (504, "timeout", errors.RequestTimeoutError, TimeoutError),
]


@pytest.mark.parametrize(("status", "code", "cls", "builtin"), ERROR_CASES)
def test_error_bodies_map_back_to_exceptions(fake, status, code, cls, builtin) -> None:
    msg = "`preferences.helpful` must be finite, got nan"
    fake.on(
        "POST",
        "/v1/chat/completions",
        error(status, code, msg, param="preferences.helpful", problems=[msg, "second"]),
    )
    with client(fake) as c, pytest.raises(cls) as info:
        c.chat("x")
    assert type(info.value) is cls and isinstance(info.value, builtin)
    assert info.value.message == msg
    assert info.value.field == "preferences.helpful"
    assert info.value.problems == [msg, "second"]


def test_queue_full_gets_retry_after_from_header(fake: FakeServer) -> None:
    resp = error(429, "queue_full", "queue is full (64 pending)")
    resp.headers["Retry-After"] = "7"
    fake.on("POST", "/v1/chat/completions", resp)
    with client(fake) as c, pytest.raises(errors.QueueFullError) as info:
        c.chat("x")
    assert info.value.retry_after == 7.0
    assert info.value.problems == ["queue is full (64 pending)"]


@pytest.mark.parametrize(
    ("status", "cls"),
    [(404, errors.NotFoundError), (429, errors.QueueFullError), (500, errors.PrefvecError)],
)
def test_non_prefvec_error_bodies_map_by_status(fake, status, cls) -> None:
    fake.on("GET", "/health", httpx.Response(status, json={"detail": "Nope"}))
    with client(fake) as c, pytest.raises(cls, match=r"Nope \(HTTP .* GET http://prefvec.test"):
        c.health()


def test_unknown_route_is_not_found(fake: FakeServer) -> None:
    with client(fake) as c, pytest.raises(LookupError, match="/v1/recipes/zzz"):
        c.get_recipe("zzz")


def test_connection_error_names_the_url() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    c = PrefvecClient("http://10.9.9.9:1234", transport=httpx.MockTransport(refuse))
    with c, pytest.raises(ServerUnreachableError, match=r"http://10\.9\.9\.9:1234/health") as info:
        c.health()
    assert isinstance(info.value, ConnectionError) and isinstance(info.value, errors.PrefvecError)


def test_timeout_maps_to_request_timeout() -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    c = PrefvecClient(URL, transport=httpx.MockTransport(slow))
    with c, pytest.raises(errors.RequestTimeoutError, match="/v1/models"):
        c.models()


# --------------------------------------------------------------------------------------- async


async def test_async_chat_and_upload(fake: FakeServer, tmp_path: Path) -> None:
    fake.on("POST", "/v1/chat/completions", chat_response("async hi"))
    fake.on("POST", "/v1/vectors", vector_info())
    path = tmp_path / "v.safetensors"
    path.write_bytes(b"abc" * 50)
    async with aclient(fake, api_key="k") as c:
        r = await c.chat("Hello", preferences={"helpful": 1.0})
        assert isinstance(r, protocol.ChatCompletionResponse)
        assert r.choices[0].message.content == "async hi"
        assert fake.last_json()["preferences"] == {"helpful": 1.0}
        info = await c.push_vector(path, name="helpful")
    assert info.name == "helpful"
    fields = multipart_fields(fake.last)
    assert fields["file"] == ("v.safetensors", path.read_bytes())
    assert fake.last.headers["authorization"] == "Bearer k"


async def test_async_errors_and_download(fake: FakeServer, tmp_path: Path) -> None:
    resp = error(429, "queue_full", "full")
    resp.headers["Retry-After"] = "2.5"
    fake.on("GET", "/v1/recipes", resp)
    fake.on("DELETE", "/v1/vectors/helpful", error(409, "conflict", "used by recipe r1"))
    fake.on("GET", "/v1/vectors/helpful/file", httpx.Response(200, content=b"blob"))
    async with aclient(fake) as c:
        with pytest.raises(errors.QueueFullError) as info:
            await c.list_recipes()
        assert info.value.retry_after == 2.5
        with pytest.raises(errors.ConflictError, match="used by recipe r1"):
            await c.delete_vector("helpful")
        out = await c.download_vector("helpful", tmp_path / "x.safetensors")
    assert out.read_bytes() == b"blob"
