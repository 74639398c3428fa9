"""An eval run through the HTTP server equals the in-process run (generation suites); the
log-likelihood suites run through the server too (their equality: test_server_logprobs.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from prefvec.evaluation.runner import RunContext, run_eval
from prefvec.evaluation.targets import ServerTarget

SUITES = ["advbench", "xstest_safe", "jbb_benign", "hhh_helpful"]


@pytest.fixture(scope="module")
def live(srv_base_dir: Path, vector_files: dict[str, Path], tmp_path_factory):  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("eval-live")
    make_store(tmp / "store", srv_base_dir, vector_files)
    server = LiveServer(server_settings(tmp, srv_base_dir, max_prompt_tokens=2048)).start()
    yield server
    server.stop()


@pytest.mark.parametrize("weights", [{}, {"helpful": 1.0, "concise": -0.5}])
def test_server_equals_in_process(live, handle, weights) -> None:  # type: ignore[no-untyped-def]
    from prefvec.clients import PrefvecClient

    ctx = RunContext(limit=3, seed=1, max_new_tokens=8, progress=False)
    local = run_eval(handle.target(weights), SUITES, ctx)
    with PrefvecClient(live.url) as client:
        remote = run_eval(ServerTarget(client, preferences=weights, concurrency=3), SUITES, ctx)
    assert remote.skipped == {}
    assert "hhh_helpful" in remote.items
    assert "hhh_helpful" in local.items
    for suite in SUITES[:3]:
        got = [r["output"] for r in remote.items[suite]]
        want = [r["output"] for r in local.items[suite]]
        assert got == want, suite
        assert any(o for o in got)
        assert remote.metric(suite) == local.metric(suite)


from tests.evaluation.conftest import LiveServer, make_store, server_settings  # noqa: E402
