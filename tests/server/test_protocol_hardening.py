"""Protocol and trust hardening (issue 15): 405 with Allow, error codes and name patterns declared
in OpenAPI, a body read timeout, a dropped upload as a client event, operator routes closed
without keys unless loopback trust is opted in, X-Forwarded-For only from trusted proxies."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.server.conftest import OPERATOR_KEY, LiveServer, make_store, server_settings

OP = {"Authorization": f"Bearer {OPERATOR_KEY}"}


def wait_ready(client: TestClient) -> None:
    deadline = time.monotonic() + 60
    while client.get("/ready").status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)


@pytest.fixture(scope="module")
def client(
    srv_base_dir: Path, vector_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    from prefvec.server.app import create_app

    tmp = tmp_path_factory.mktemp("protocol")
    make_store(tmp / "store", srv_base_dir, vector_files)
    with TestClient(
        create_app(server_settings(tmp, srv_base_dir)), raise_server_exceptions=False
    ) as c:
        wait_ready(c)
        yield c


# ------------------------------------------------------------------------------ 405


def test_405_keeps_allow_and_says_method_not_allowed(client: TestClient) -> None:
    """Was: the Allow header dropped and the code `bad_request`."""
    resp = client.put("/v1/chat/completions", json={})
    assert resp.status_code == 405
    assert resp.headers["allow"] == "POST"
    assert resp.json()["error"]["code"] == "method_not_allowed"
    resp = client.patch("/v1/recipes/r1")
    assert resp.status_code == 405 and "GET" in resp.headers["allow"]  # (Starlette: first match)


# -------------------------------------------------------------------------- OpenAPI


@pytest.fixture(scope="module")
def spec(client: TestClient) -> dict[str, Any]:
    return dict(client.get("/openapi.json").json())


def _error_ref(spec: dict[str, Any], path: str, method: str, code: int) -> str:
    resp = spec["paths"][path][method]["responses"][str(code)]
    return str(resp["content"]["application/json"]["schema"]["$ref"])


@pytest.mark.parametrize(
    ("path", "method", "codes"),
    [
        ("/v1/chat/completions", "post", (400, 401, 404, 409, 413, 422, 429, 500, 503, 504)),
        ("/v1/completions", "post", (400, 404, 413, 422, 429, 503)),
        ("/v1/compare", "post", (400, 404, 413, 422, 429, 503)),
        ("/v1/vectors", "post", (401, 403, 413, 422, 503)),
        ("/v1/vectors/{ref}", "delete", (401, 403, 404, 409, 422, 503)),
        ("/v1/recipes/{ref}", "delete", (401, 403, 404, 409, 422, 503)),
        ("/v1/recipes", "post", (401, 403, 404, 413, 422, 503)),
        ("/v1/experiments", "post", (401, 403, 404, 409, 422, 503)),
        ("/v1/experiments/{name}/end", "post", (401, 403, 404, 409, 503)),
        ("/v1/feedback", "post", (404, 409, 422, 503)),
        ("/v1/models", "get", (401, 500, 503)),
    ],
)
def test_error_codes_declared_with_the_error_schema(
    spec: dict[str, Any], path: str, method: str, codes: tuple[int, ...]
) -> None:
    """Was: none of 400/404/409/413/429/503 declared."""
    for code in codes:
        assert _error_ref(spec, path, method, code).endswith("/ErrorResponse"), (path, code)


def test_name_patterns_in_the_schema(spec: dict[str, Any]) -> None:
    from prefvec.protocol import NAME_PATTERN, REF_PATTERN

    schemas = spec["components"]["schemas"]
    assert schemas["RecipeCreate"]["properties"]["name"]["pattern"] == NAME_PATTERN
    assert schemas["ExperimentCreate"]["properties"]["name"]["pattern"] == NAME_PATTERN
    assert schemas["ExperimentArm"]["properties"]["name"]["pattern"] == NAME_PATTERN
    params = {p["name"]: p for p in spec["paths"]["/v1/recipes/{ref}"]["delete"]["parameters"]}
    assert params["ref"]["schema"]["pattern"] == REF_PATTERN
    params = {
        p["name"]: p for p in spec["paths"]["/v1/vectors/{name}/versions"]["get"]["parameters"]
    }
    assert params["name"]["schema"]["pattern"] == NAME_PATTERN


def test_a_name_off_the_pattern_is_422_naming_it(client: TestClient) -> None:
    resp = client.post("/v1/recipes", json={"name": "../etc", "weights": {}}, headers=OP)
    assert resp.status_code == 422 and resp.json()["error"]["param"] == "name"
    resp = client.get("/v1/recipes/a b")
    assert resp.status_code == 422 and resp.json()["error"]["param"] == "ref"


# --------------------------------------------------------------- body timeout, drops


@pytest.fixture(scope="module")
def live(
    srv_base_dir: Path, vector_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("protocol-live")
    make_store(tmp / "store", srv_base_dir, vector_files)
    server = LiveServer(server_settings(tmp, srv_base_dir, body_read_timeout_s=0.5)).start()
    yield server
    server.stop()


def _raw(port: int, head: str, body: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(head.encode() + b"\r\n" + body)
    return sock


def _read_all(sock: socket.socket) -> bytes:
    out = b""
    while chunk := sock.recv(65536):
        out += chunk
    return out


def test_lying_content_length_gets_408_and_the_connection_closes(live: LiveServer) -> None:
    """Was: the connection held open for ever waiting for the declared bytes."""
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Content-Length: 1000\r\n"
    )
    start = time.monotonic()
    sock = _raw(live.port, head, b'{"messages": [')
    try:
        reply = _read_all(sock)  # returns once the server closes the connection
    finally:
        sock.close()
    assert time.monotonic() - start < 8
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    assert b"body_read_timeout_s" in reply
    assert httpx.get(live.url + "/health").status_code == 200


def _requests_by_status(url: str, route: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith("prefvec_requests_total{") and f'route="{route}"' in line:
            status = line.split('status="')[1].split('"')[0]
            out[status] = out.get(status, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def test_client_dropping_mid_upload_is_a_client_event(
    live: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Was: logged as an internal error and counted as a 500."""
    boundary = "XyZ"
    part = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="v.safetensors"'
        "\r\nContent-Type: application/octet-stream\r\n\r\n"
    ).encode() + b"\0" * 5000
    head = (
        f"POST /v1/vectors HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {OPERATOR_KEY}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: 10000000\r\n"
    )
    before = _requests_by_status(live.url, "/v1/vectors")
    with caplog.at_level(logging.INFO):
        for _ in range(3):
            sock = _raw(live.port, head, part)
            time.sleep(0.2)
            sock.close()
        deadline = time.monotonic() + 10
        while True:
            after = _requests_by_status(live.url, "/v1/vectors")
            if after.get("499", 0) - before.get("499", 0) >= 3 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    assert after.get("499", 0) - before.get("499", 0) == 3, after
    assert after.get("500", 0) == before.get("500", 0)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert httpx.get(live.url + "/v1/vectors").status_code == 200


# ---------------------------------------------------------------------------- trust


def _app(tmp: Path, base: Path, **kw: Any) -> Any:
    from prefvec.server.app import create_app

    return create_app(server_settings(tmp, base, **kw))


@pytest.fixture(scope="module")
def trust_tmp(
    srv_base_dir: Path, vector_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    tmp = tmp_path_factory.mktemp("trust")
    make_store(tmp / "store", srv_base_dir, vector_files)
    return tmp


RECIPE = {"name": "t1", "weights": {}}


def _operator_status(app: Any, peer: str, headers: dict[str, str] | None = None) -> int:
    """Status of an operator call (a recipe upload) from the TCP peer ``peer``."""
    with TestClient(app, client=(peer, 40000), raise_server_exceptions=False) as c:
        wait_ready(c)
        return int(c.post("/v1/recipes", json=RECIPE, headers=headers or {}).status_code)


def test_no_keys_closes_operator_routes_even_to_loopback(
    trust_tmp: Path, srv_base_dir: Path
) -> None:
    """Was: with no operator key every loopback client was an operator (behind a reverse proxy
    on the same host: every client)."""
    app = _app(trust_tmp, srv_base_dir, operator_keys=[])
    with TestClient(app, client=("127.0.0.1", 40000), raise_server_exceptions=False) as c:
        wait_ready(c)
        resp = c.post("/v1/recipes", json=RECIPE)
        assert resp.status_code == 403
        assert "PREFVEC_TRUST_LOOPBACK_OPERATOR" in resp.json()["error"]["message"]
        assert c.get("/v1/recipes").status_code == 200  # read routes stay open


def test_loopback_trust_is_an_explicit_opt_in(trust_tmp: Path, srv_base_dir: Path) -> None:
    app = _app(trust_tmp, srv_base_dir, operator_keys=[], trust_loopback_operator=True)
    assert _operator_status(app, "127.0.0.1") == 201
    assert _operator_status(app, "192.0.2.10") == 403


def test_forwarded_for_ignored_without_trusted_proxies(trust_tmp: Path, srv_base_dir: Path) -> None:
    """A remote peer cannot pose as loopback with X-Forwarded-For."""
    app = _app(trust_tmp, srv_base_dir, operator_keys=[], trust_loopback_operator=True)
    assert _operator_status(app, "192.0.2.10", {"X-Forwarded-For": "127.0.0.1"}) == 403


def test_forwarded_for_from_a_trusted_proxy_names_the_client(
    trust_tmp: Path, srv_base_dir: Path
) -> None:
    """Behind a same-host proxy named in `trusted_proxies`, the client is the forwarded address,
    so remote clients are not loopback; a forged left-most hop does not help."""
    app = _app(
        trust_tmp, srv_base_dir, operator_keys=[], trust_loopback_operator=True,
        trusted_proxies=["127.0.0.1"],
    )  # fmt: skip
    assert _operator_status(app, "127.0.0.1", {"X-Forwarded-For": "203.0.113.7"}) == 403
    forged = {"X-Forwarded-For": "127.0.0.1, 203.0.113.7"}
    assert _operator_status(app, "127.0.0.1", forged) == 403
    assert _operator_status(app, "127.0.0.1") == 201  # a local call that did not pass the proxy


def test_client_address_rules() -> None:
    from prefvec.server.auth import client_address, is_loopback

    assert is_loopback("::1") and is_loopback("127.0.0.5") and not is_loopback("192.0.2.1")
    assert client_address("10.0.0.1", "1.2.3.4", []) == "10.0.0.1"
    assert client_address("10.0.0.1", "1.2.3.4", ["10.0.0.0/8"]) == "1.2.3.4"
    assert client_address("10.0.0.1", "1.2.3.4, 10.0.0.7", ["10.0.0.0/8"]) == "1.2.3.4"
    assert client_address("192.0.2.1", "1.2.3.4", ["10.0.0.0/8"]) == "192.0.2.1"


def test_trusted_proxies_setting_is_checked() -> None:
    from prefvec.server.settings import ServerSettings

    with pytest.raises(ValueError, match="trusted_proxies"):
        ServerSettings(trusted_proxies=["not-an-ip"])


def test_uvicorn_does_not_read_forwarded_headers(monkeypatch: pytest.MonkeyPatch) -> None:
    """uvicorn's own proxy_headers would take X-Forwarded-For from any loopback peer."""
    import uvicorn

    from prefvec.server import run

    seen: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(kw))
    monkeypatch.setattr("prefvec.server.app.create_app", lambda settings: object())
    run.serve(base="x")
    assert seen["proxy_headers"] is False


def test_startup_log_says_what_is_open_to_whom(
    trust_tmp: Path, srv_base_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="prefvec.server.app"):
        app = _app(trust_tmp, srv_base_dir, operator_keys=[], user_keys=["u"])
        with TestClient(app, raise_server_exceptions=False) as c:
            wait_ready(c)
    text = caplog.text
    assert "operator routes: closed" in text
    assert "generation and read routes: callers with one of 1 user keys" in text
    assert "X-Forwarded-For: ignored" in text
