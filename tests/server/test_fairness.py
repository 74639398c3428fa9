"""Fair queueing: one compare holds at most its share of the queue, so other callers are still
served; a compare that cannot be admitted is refused before any of its generations is queued."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx

from tests.server.conftest import LiveServer, make_store, server_settings


def _compare_rows(backend: Any) -> int:
    with backend._cv:
        return sum(1 for row in backend._rows.values() if row.req.kind == "compare")


def test_compare_share_leaves_room_for_others(
    srv_base_dir: Path, vector_files, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    make_store(tmp_path / "store", srv_base_dir, vector_files)
    settings = server_settings(tmp_path, srv_base_dir, max_queue=4, max_queue_share_compare=0.5,
                               max_batch_size=1)  # fmt: skip
    server = LiveServer(settings).start()
    try:
        backend = server.state.backend
        body = {"prompts": ["a", "b"], "candidates": [{"preferences": {"concise": 1}},
                {"preferences": {"warm": -1}}], "max_tokens": 12}  # fmt: skip
        out: dict[str, httpx.Response] = {}
        peak = [0]
        t = threading.Thread(target=lambda: out.__setitem__(
            "cmp", httpx.post(server.url + "/v1/compare", json=body, timeout=60)))  # fmt: skip
        t.start()
        deadline = time.monotonic() + 30
        chat = None
        while t.is_alive() and time.monotonic() < deadline:
            peak[0] = max(peak[0], _compare_rows(backend))
            if chat is None and peak[0] > 0:
                chat = httpx.post(server.url + "/v1/completions",
                                  json={"prompt": "hi", "max_tokens": 2}, timeout=30)  # fmt: skip
            time.sleep(0.002)
        t.join(30)
        assert out["cmp"].status_code == 200, out["cmp"].text
        assert chat is not None and chat.status_code == 200, chat.text if chat else None
        assert 1 <= peak[0] <= 2  # at most max_queue × share = 2 compare generations at once
    finally:
        server.stop()


def test_refused_compare_queues_nothing(srv_base_dir: Path, vector_files, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    make_store(tmp_path / "store", srv_base_dir, vector_files)
    server = LiveServer(server_settings(tmp_path, srv_base_dir)).start()
    try:
        backend = server.state.backend
        submitted = backend.counters.prefill_chunks
        body = {"prompts": ["a", "b", "c"], "candidates": [{"preferences": {"concise": 1}},
                {"preferences": {"nope": 1}}], "max_tokens": 4}  # fmt: skip
        r = httpx.post(server.url + "/v1/compare", json=body, timeout=30)
        assert r.status_code == 404 and "nope" in r.text
        assert "candidates[1]" in r.json()["error"]["message"]
        assert backend.counters.prefill_chunks == submitted  # nothing ran
        assert backend.stats()["queue_depth"] == 0
    finally:
        server.stop()


def _compare_with_scorer(base_dir: Path, files: Any, tmp: Path, scorer: str) -> httpx.Response:
    """A compare naming ``scorer``; asserts that nothing was generated for it."""
    make_store(tmp / "store", base_dir, files)
    server = LiveServer(server_settings(tmp, base_dir)).start()
    try:
        before = server.state.backend.counters.prefill_chunks
        body = {"prompts": ["a"], "candidates": [{"preferences": {"concise": 1}}, {}],
                "max_tokens": 4, "scorers": [scorer]}  # fmt: skip
        r = httpx.post(server.url + "/v1/compare", json=body, timeout=30)
        assert server.state.backend.counters.prefill_chunks == before
        return r
    finally:
        server.stop()


def test_unusable_scorer_fails_before_any_generation(
    srv_base_dir: Path, vector_files, tmp_path: Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """A scorer that cannot be built (503) fails the compare before anything is generated."""
    from prefvec.errors import ServiceUnavailableError
    from prefvec.scoring import registry

    def broken(**_: Any) -> Any:
        raise ServiceUnavailableError("the judge is down")

    monkeypatch.setitem(registry._REGISTRY, "_down", broken)
    r = _compare_with_scorer(srv_base_dir, vector_files, tmp_path, "_down")
    assert r.status_code == 503 and "judge is down" in r.text


def test_unreachable_judge_fails_before_any_generation(
    srv_base_dir: Path, vector_files, tmp_path: Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """The LLM judge is listed as usable; with its API down the compare is a 503 at once."""
    monkeypatch.setenv("PREFVEC_JUDGE_URL", "http://127.0.0.1:9/v1")  # nothing listens there
    r = _compare_with_scorer(srv_base_dir, vector_files, tmp_path, "llm_judge_helpful")
    assert r.status_code == 503 and "judge unreachable" in r.text
