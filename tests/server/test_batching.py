"""Iteration-level batching through the real HTTP stack: a short request that arrives while a long
one decodes starts at the next step and finishes long before it (the static batcher this
replaced held it until the long request ended)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server.conftest import LiveServer, make_store, server_settings

STEP_DELAY_S = 0.01  # per model forward: a 400-token request takes >= 4 s


@pytest.fixture()
def slow_server(srv_base_dir: Path, vector_files: dict[str, Path], tmp_path: Path):  # type: ignore[no-untyped-def]
    make_store(tmp_path / "store", srv_base_dir, vector_files)
    server = LiveServer(server_settings(tmp_path, srv_base_dir, max_tokens_limit=400)).start()
    model = server.state.backend.model
    forward = model.forward

    def slow_forward(*args: Any, **kwargs: Any) -> Any:
        time.sleep(STEP_DELAY_S)
        return forward(*args, **kwargs)

    model.forward = slow_forward
    yield server
    server.stop()


def _post(url: str, body: dict[str, Any], out: dict[str, Any], key: str) -> None:
    r = httpx.post(url + "/v1/completions", json=body, timeout=120)
    out[key] = (r, time.monotonic())


def test_short_request_finishes_long_before_a_long_one(slow_server: LiveServer) -> None:
    long_body = {"prompt": "Once upon a time", "max_tokens": 400, "temperature": 0,
                 "preferences": {"concise": 0.5}}  # fmt: skip
    short_body = {"prompt": "Hi", "max_tokens": 4, "temperature": 0}
    out: dict[str, Any] = {}
    t_long = threading.Thread(target=_post, args=(slow_server.url, long_body, out, "long"))
    t_long.start()
    backend = slow_server.state.backend
    deadline = time.monotonic() + 10
    while backend.counters.decode_steps < 20 and time.monotonic() < deadline:
        time.sleep(0.005)  # the long request is decoding
    sent = time.monotonic()
    _post(slow_server.url, short_body, out, "short")
    t_long.join(120)
    (long_r, long_end), (short_r, short_end) = out["long"], out["short"]
    assert long_r.status_code == short_r.status_code == 200
    long_tokens = long_r.json()["usage"]["completion_tokens"]
    assert long_tokens >= 200, "the long request ended early; the test needs a long decode"
    assert short_r.json()["usage"]["completion_tokens"] == 4
    short_latency = short_end - sent
    assert short_end < long_end - 1.0, (short_latency, long_end - sent)
    assert short_latency < 0.5 * (long_end - sent)
    # it shared decode steps with the long row (it joined; it did not wait for a new batch)
    ids = {r.json()["id"].removeprefix("cmpl-") for r in (long_r, short_r)}
    assert any(set(step) == ids for step in backend.counters.step_log)


def test_static_batching_setting_holds_newcomers(srv_base_dir, vector_files, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The comparison setting keeps the old behaviour: nothing joins a running batch."""
    make_store(tmp_path / "store", srv_base_dir, vector_files)
    settings = server_settings(tmp_path, srv_base_dir, max_tokens_limit=400, batching="static")
    server = LiveServer(settings).start()
    try:
        backend = server.state.backend
        out: dict[str, Any] = {}
        body = {"prompt": "Once upon a time", "max_tokens": 60, "temperature": 0}
        t = threading.Thread(target=_post, args=(server.url, body, out, "long"))
        t.start()
        while backend.counters.decode_steps < 5:
            time.sleep(0.002)
        _post(server.url, {"prompt": "Hi", "max_tokens": 4, "temperature": 0}, out, "short")
        t.join(60)
        ids = {out[k][0].json()["id"].removeprefix("cmpl-") for k in ("long", "short")}
        assert not any(set(step) == ids for step in backend.counters.step_log)
    finally:
        server.stop()
