"""A client that disconnects mid-stream frees its slot: its job is cancelled and the next request
is served at once, not after the abandoned generation would have finished."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.server.conftest import LiveServer, make_store, server_settings

STEP_DELAY_S = 0.02  # per generated token, so an abandoned 400-token request would take ~8 s


@pytest.fixture()
def slow_live(srv_base_dir: Path, vector_files: dict[str, Path], tmp_path: Path):  # type: ignore[no-untyped-def]
    make_store(tmp_path / "store", srv_base_dir, vector_files)
    settings = server_settings(tmp_path, srv_base_dir, max_batch_size=1, max_tokens_limit=400)
    server = LiveServer(settings).start()
    backend = server.state.backend
    original = backend._sample_and_emit

    def slow_step(row, logits):  # type: ignore[no-untyped-def]
        time.sleep(STEP_DELAY_S)
        return original(row, logits)

    backend._sample_and_emit = slow_step
    yield server
    server.stop()


def test_disconnect_mid_stream_frees_the_slot(slow_live: LiveServer) -> None:
    body = {"prompt": "hello", "max_tokens": 400, "temperature": 0, "stream": True,
            "stop": None}  # fmt: skip
    backend = slow_live.state.backend
    with httpx.Client(base_url=slow_live.url, timeout=30) as client:
        with client.stream("POST", "/v1/completions", json=body) as resp:
            assert resp.status_code == 200
            lines = resp.iter_lines()
            got = [next(lines) for _ in range(6)]  # a few events, then hang up
            assert any(line.startswith("data: ") for line in got)
        # the abandoned job leaves the batch within a few decode steps
        deadline = time.monotonic() + 5
        while backend.stats()["running"] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert backend.stats()["running"] == 0
        start = time.monotonic()
        r = client.post("/v1/completions", json={"prompt": "hi", "max_tokens": 3, "temperature": 0})
        waited = time.monotonic() - start
    assert r.status_code == 200
    # With max_batch_size=1, a slot still held would make this wait ~8 s for 400 slow tokens.
    assert waited < 3.0, waited


def test_disconnect_before_a_non_streaming_reply_cancels_it(slow_live: LiveServer) -> None:
    """A plain (non-streaming) request whose client gives up stops generating at once."""
    body = {"prompt": "hello", "max_tokens": 400, "temperature": 0, "stop": None}
    backend = slow_live.state.backend
    with (
        httpx.Client(base_url=slow_live.url, timeout=0.5) as client,
        pytest.raises(httpx.ReadTimeout),
    ):
        client.post("/v1/completions", json=body)  # the client hangs up after 0.5 s
    deadline = time.monotonic() + 5
    while backend.stats()["running"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert backend.stats()["running"] == 0, "the abandoned request is still generating"
    start = time.monotonic()
    short = {"prompt": "hi", "max_tokens": 3, "temperature": 0}
    r = httpx.post(slow_live.url + "/v1/completions", json=short, timeout=30)
    assert r.status_code == 200
    assert time.monotonic() - start < 3.0


def test_stream_abandoned_while_queued_leaves_the_queue(slow_live: LiveServer) -> None:
    """A streaming request whose client leaves before its first token (it waits behind a
    running one) is withdrawn from the queue, not run later for nobody."""
    import threading

    backend = slow_live.state.backend
    long_body = {"prompt": "hello", "max_tokens": 400, "temperature": 0, "stop": None}
    t = threading.Thread(
        target=lambda: httpx.post(slow_live.url + "/v1/completions", json=long_body, timeout=60)
    )
    t.start()
    deadline = time.monotonic() + 10
    while backend.stats()["running"] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    body = {"prompt": "hi", "max_tokens": 3, "temperature": 0, "stream": True}
    with (
        httpx.Client(base_url=slow_live.url, timeout=0.5) as client,
        pytest.raises(httpx.ReadTimeout),
    ):
        client.post("/v1/completions", json=body)  # queued behind the long one, then hangs up
    deadline = time.monotonic() + 5
    while backend.stats()["queue_depth"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert backend.stats()["queue_depth"] == 0, "the abandoned stream is still queued"
    t.join(60)
