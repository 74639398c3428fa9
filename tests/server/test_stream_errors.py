"""A failure after a stream's first byte ends it with an OpenAI-style error event and ``[DONE]``
(never a cut body), and is counted in ``/metrics``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from tests.server.conftest import LiveServer, make_store, server_settings


def test_failure_mid_stream_is_an_error_event_then_done(
    srv_base_dir: Path, vector_files: dict[str, Path], tmp_path: Path
) -> None:
    make_store(tmp_path / "store", srv_base_dir, vector_files)
    server = LiveServer(server_settings(tmp_path, srv_base_dir)).start()
    try:
        backend = server.state.backend
        original = backend._sample_and_emit
        calls = {"n": 0}

        def flaky(row: Any, logits: Any) -> bool:
            calls["n"] += 1
            if calls["n"] == 4:
                raise ZeroDivisionError("injected fault")
            return bool(original(row, logits))

        backend._sample_and_emit = flaky
        body = {"prompt": "hello", "max_tokens": 12, "temperature": 0, "stream": True}
        with httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=30) as r:
            assert r.status_code == 200
            lines = [x for x in r.iter_lines() if x.startswith("data: ")]
        assert lines[-1] == "data: [DONE]"
        error = json.loads(lines[-2][6:])["error"]
        assert error["code"] == "internal_error" and "injected" not in error["message"]
        assert len(lines) >= 4  # role chunk and text before the failure
        metrics = httpx.get(server.url + "/metrics").text
        assert 'prefvec_stream_errors_total{code="internal_error"} 1.0' in metrics
        backend._sample_and_emit = original
        ok = httpx.post(server.url + "/v1/completions", json={"prompt": "hi", "max_tokens": 3})
        assert ok.status_code == 200  # the server goes on
    finally:
        server.stop()
