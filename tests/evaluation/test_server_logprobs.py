"""The log-likelihood suites through the server (issue 14): ``ServerTarget.logprobs`` scores with
the completions route (token-id prompts, ``echo``, ``logprobs: 0``, ``max_tokens: 0``) and gives
the in-process numbers -- the same accuracies on the same items, each log-likelihood within float
tolerance (the server's batched, chunked KV-cache prefill against one right-padded forward)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from prefvec.evaluation.runner import RunContext, run_eval
from prefvec.evaluation.targets import ServerTarget
from tests.server.conftest import OPERATOR_KEY, LiveServer, make_store, server_settings

SUITES = ["hhh_helpful", "hhh_harmless", "truthfulqa_mc1", "truthfulqa_mc2", "hh_rlhf_pairs"]
MAX_LEN = 300  # scored tokens at most (the tiny model's context is 512)
TOL = 1e-3  # nats, per scored reply (sums of up to a few hundred fp32 token log-probs)


@pytest.fixture(scope="module")
def live(srv_base_dir: Path, vector_files: dict[str, Path], tmp_path_factory):  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("eval-lp")
    make_store(tmp / "store", srv_base_dir, vector_files)
    # prefill in small chunks so the KV-cache path (not one forward) is what is compared
    settings = server_settings(tmp, srv_base_dir, max_prompt_tokens=2048, max_prefill_tokens=96)
    server = LiveServer(settings).start()
    recipe = {"name": "mixed", "weights": {"helpful": 1.0, "concise": -0.5}}
    headers = {"Authorization": f"Bearer {OPERATOR_KEY}"}
    assert httpx.post(server.url + "/v1/recipes", json=recipe, headers=headers).status_code == 201
    yield server
    server.stop()


def in_process(handle, weights):  # type: ignore[no-untyped-def]
    target = handle.target(weights)
    target.max_length = MAX_LEN
    return target


def _logprobs(report, suite: str) -> list[float]:  # type: ignore[no-untyped-def]
    rows = report.items[suite]
    if "logprobs" in rows[0]:
        return [v for r in rows for v in r["logprobs"]]
    return [v for r in rows for v in r["policy"] + r["reference"]]


@pytest.mark.parametrize(
    ("weights", "how"),
    [({}, "preferences"), ({"helpful": 1.0, "concise": -0.5}, "preferences"),
     ({"helpful": 1.0, "concise": -0.5}, "recipe")],
    ids=["base", "dense+lowrank", "recipe-model"],
)  # fmt: skip
def test_server_logprob_suites_equal_in_process(live, handle, weights, how) -> None:  # type: ignore[no-untyped-def]
    from prefvec.clients import PrefvecClient

    ctx = RunContext(limit=4, seed=1, progress=False)
    local = run_eval(in_process(handle, weights), SUITES, ctx)
    with PrefvecClient(live.url) as client:
        if how == "recipe":
            target = ServerTarget(client, model="recipe:mixed", batch_size=3, max_length=MAX_LEN)
        else:
            target = ServerTarget(client, preferences=weights, batch_size=3, max_length=MAX_LEN)
        remote = run_eval(target, SUITES, RunContext(limit=4, seed=1, progress=False))
    assert remote.skipped == {}
    for suite in SUITES:
        got, want = _logprobs(remote, suite), _logprobs(local, suite)
        assert len(got) == len(want) > 0
        assert got == pytest.approx(want, abs=TOL), suite
        if suite == "truthfulqa_mc2":  # a mean of normalised probabilities
            assert remote.metric(suite).value == pytest.approx(local.metric(suite).value, abs=TOL)
        else:  # accuracies: equal
            assert remote.metric(suite).value == local.metric(suite).value, suite
    # not a no-op: the merge changes the scores
    if weights:
        base = run_eval(in_process(handle, {}), SUITES[:1], RunContext(limit=4, progress=False))
        assert _logprobs(base, SUITES[0]) != pytest.approx(_logprobs(local, SUITES[0]), abs=TOL)
