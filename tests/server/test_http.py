"""End to end through uvicorn on loopback: generation, batching, streaming, store routes,
experiments, compare, errors, backpressure, metrics."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.server.conftest import OPERATOR_KEY, LiveServer, offline_merged_text, server_settings

OP = {"Authorization": f"Bearer {OPERATOR_KEY}"}
PROMPT = "Tell me a story"


def chat(url: str, prefs=None, n: int = 10, **kw):  # type: ignore[no-untyped-def]
    body = {"model": "base", "messages": [{"role": "user", "content": kw.pop("prompt", PROMPT)}],
            "temperature": 0, "max_tokens": n, **kw}  # fmt: skip
    if prefs is not None:
        body["preferences"] = prefs
    return httpx.post(url + "/v1/chat/completions", json=body, timeout=30)


def text_of(resp: httpx.Response) -> str:
    assert resp.status_code == 200, resp.text
    return str(resp.json()["choices"][0]["message"]["content"])


def assert_healthy(url: str) -> None:
    assert chat(url, {"concise": 0.5}, n=3).status_code == 200


def test_weights_change_output_deterministically(
    live: LiveServer, srv_base_dir, vector_files
) -> None:  # type: ignore[no-untyped-def]
    base = text_of(chat(live.url))
    for prefs in ({"concise": 0.8, "warm": -0.6}, {"helpful": 0.7}):
        r1, r2 = chat(live.url, prefs), chat(live.url, prefs)
        assert text_of(r1) == text_of(r2) != base
        # both serving paths equal a model merged offline with the same weights (fp32, greedy)
        assert text_of(r1) == offline_merged_text(srv_base_dir, vector_files, prefs, PROMPT, 10)
        info = r1.json()["prefvec"]
        assert info["vectors"] == {k: 1 for k in prefs}
        assert info["path"] == ("dense" if "helpful" in prefs else "lowrank")
    assert text_of(chat(live.url, {"concise": 0.8})) != text_of(chat(live.url, {"concise": -0.8}))


def test_concurrent_requests_share_a_batch(live: LiveServer) -> None:
    a_prefs, b_prefs = {"concise": 1.0}, {"warm": -1.0, "concise": 0.3}
    alone = [text_of(chat(live.url, a_prefs)), text_of(chat(live.url, b_prefs, prompt="Hi"))]
    backend = live.state.backend
    results: dict[int, httpx.Response] = {}
    backend.pause()
    try:
        threads = [
            threading.Thread(target=lambda: results.__setitem__(0, chat(live.url, a_prefs))),
            threading.Thread(
                target=lambda: results.__setitem__(1, chat(live.url, b_prefs, prompt="Hi"))
            ),
        ]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while backend.stats()["queue_depth"] < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        backend.resume()
    for t in threads:
        t.join(30)
    ids = {results[i].json()["id"].removeprefix("chatcmpl-") for i in (0, 1)}
    assert any(set(step) == ids for step in backend.counters.step_log)
    assert [text_of(results[0]), text_of(results[1])] == alone


def test_openai_client_streaming(live: LiveServer) -> None:
    import openai

    client = openai.OpenAI(base_url=live.url + "/v1", api_key="unused")
    extra = {"preferences": {"concise": 0.7}}
    full = client.chat.completions.create(
        model="base", messages=[{"role": "user", "content": PROMPT}], max_tokens=10,
        temperature=0, extra_body=extra,
    )  # fmt: skip
    stream = client.chat.completions.create(
        model="base", messages=[{"role": "user", "content": PROMPT}], max_tokens=10,
        temperature=0, extra_body=extra, stream=True,
    )  # fmt: skip
    chunks = list(stream)
    assert (
        "".join(c.choices[0].delta.content or "" for c in chunks) == full.choices[0].message.content
    )
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    comp = client.completions.create(model="base", prompt="Once", max_tokens=8, temperature=0)
    streamed = client.completions.create(
        model="base", prompt="Once", max_tokens=8, temperature=0, stream=True
    )
    assert "".join(c.choices[0].text for c in streamed) == comp.choices[0].text
    assert len(client.models.list().data) >= 1


def test_upload_use_delete(live: LiveServer, vector_files: dict[str, Path]) -> None:
    url = live.url
    data = vector_files["warm"].read_bytes()
    files = {"file": ("x.safetensors", data, "application/octet-stream")}
    meta = {"metadata": json.dumps({"name": "kind", "description": "uploaded"})}
    assert httpx.post(url + "/v1/vectors", files=files, data=meta).status_code == 401
    r = httpx.post(url + "/v1/vectors", files=files, data=meta, headers=OP)
    assert r.status_code == 201, r.text
    assert (r.json()["name"], r.json()["version"], r.json()["kind"]) == ("kind", 1, "lowrank")
    assert "kind" in [v["name"] for v in httpx.get(url + "/v1/vectors").json()["data"]]
    assert httpx.get(url + "/v1/vectors/kind@1/file").content == data
    used = chat(url, {"kind": 1.0})
    assert used.json()["prefvec"]["vectors"] == {"kind": 1}
    assert text_of(used) == text_of(chat(url, {"warm": 1.0}))  # same tensors, same text
    assert httpx.delete(url + "/v1/vectors/kind", headers=OP).status_code == 200
    gone = chat(url, {"kind": 1.0})
    assert gone.status_code == 404 and "kind" in gone.json()["error"]["message"]


def test_recipes_crud_and_conflict(live: LiveServer) -> None:
    url = live.url
    body = {"name": "friendly", "weights": {"helpful": 0.5, "concise": 0.4}}
    r = httpx.post(url + "/v1/recipes", json=body, headers=OP)
    assert r.status_code == 201, r.text
    assert r.json()["weights"] == {"helpful@1": 0.5, "concise@1": 0.4}
    assert httpx.get(url + "/v1/recipes/friendly").json()["version"] == 1
    ids = [m["id"] for m in httpx.get(url + "/v1/models").json()["data"]]
    assert "recipe:friendly" in ids
    by_model = chat(url, model="recipe:friendly")
    by_prefs = chat(url, {"helpful": 0.5, "concise": 0.4})
    assert text_of(by_model) == text_of(by_prefs)
    assert by_model.json()["prefvec"]["recipe"] == "friendly@1"
    conflict = httpx.delete(url + "/v1/vectors/helpful", headers=OP)
    assert conflict.status_code == 409 and "friendly" in conflict.json()["error"]["message"]
    assert httpx.delete(url + "/v1/recipes/friendly", headers=OP).status_code == 200
    assert httpx.get(url + "/v1/recipes/friendly").status_code == 404
    assert httpx.get(url + "/v1/vectors/helpful").status_code == 200  # untouched


def test_experiment_assigns_records_reports(live: LiveServer) -> None:
    url = live.url
    for name, w in (("arm-a", 0.5), ("arm-b", -0.5)):
        assert httpx.post(url + "/v1/recipes", json={"name": name, "weights": {"concise": w}},
                          headers=OP).status_code == 201  # fmt: skip
    exp = {
        "name": "exp1",
        "arms": [{"name": "a", "recipe": "arm-a"}, {"name": "b", "recipe": "arm-b"}],
    }
    assert httpx.post(url + "/v1/experiments", json=exp).status_code == 401
    assert httpx.post(url + "/v1/experiments", json=exp, headers=OP).status_code == 201
    arms = {}
    for user in [f"u{i}" for i in range(12)]:
        first = chat(url, experiment="exp1", user=user, n=3).json()["prefvec"]
        again = chat(url, experiment="exp1", user=user, n=3).json()["prefvec"]
        assert first["arm"] == again["arm"]  # sticky
        assert first["recipe"] == f"arm-{first['arm']}@1"
        arms[user] = first["arm"]
        fb = {"experiment": "exp1", "user": user, "rating": 1.0 if first["arm"] == "a" else 0.0}
        assert httpx.post(url + "/v1/feedback", json=fb).status_code == 201
    assert set(arms.values()) == {"a", "b"}
    pair = {"experiment": "exp1", "preferred": "a", "rejected": "b"}
    assert httpx.post(url + "/v1/feedback", json=pair).status_code == 201
    report = httpx.get(url + "/v1/experiments/exp1").json()
    by_arm = {a["name"]: a for a in report["arms"]}
    n_a = sum(1 for v in arms.values() if v == "a")
    assert by_arm["a"]["assignments"] == n_a and by_arm["a"]["requests"] == 2 * n_a
    assert by_arm["a"]["mean_rating"] == 1.0 and by_arm["b"]["mean_rating"] == 0.0
    assert by_arm["a"]["pairwise_wins"] == 1 and by_arm["b"]["pairwise_losses"] == 1
    assert by_arm["a"]["ratings"] == n_a
    bad = httpx.post(url + "/v1/feedback", json={"experiment": "exp1", "arm": "zz", "rating": 1})
    assert bad.status_code == 422 and "'zz'" in bad.json()["error"]["message"]


def test_compare_side_by_side(live: LiveServer) -> None:
    body = {
        "prompts": ["Hi", "Tell me"],
        "candidates": [{"preferences": {"concise": 0.8}}, {"preferences": {"warm": 0.8}}, {}],
        "max_tokens": 6,
        "scorers": ["length", "refusal"],
    }
    r = httpx.post(live.url + "/v1/compare", json=body, timeout=30)
    assert r.status_code == 200, r.text
    out = r.json()
    assert len(out["rows"]) == 2 and len(out["rows"][0]["outputs"]) == 3
    assert out["rows"][0]["outputs"][0]["text"] == text_of(
        chat(live.url, {"concise": 0.8}, n=6, prompt="Hi")
    )
    rates = out["summary"]["win_rates"]
    assert len(rates) == 2 * 3 and all(
        0 <= w["ci_low"] <= w["rate"] <= w["ci_high"] <= 1 for w in rates
    )


BAD_INPUTS = [
    ({"preferences": {"nope": 1.0}}, 404, "'nope'"),
    ({"preferences": {"concise": 7.0}}, 422, "`preferences.concise` must be in [-5, 5], got 7.0"),
    ({"preferences": {"a": 1, "b": 1, "c": 1, "d": 1}}, 422, "`max_vectors_per_request` = 3"),
    ({"max_tokens": 1000}, 422, "`max_tokens` must be <= 64, got 1000"),
    ({"prompt": "x" * 400}, 422, "`max_prompt_tokens` = 256"),
    ({"preferences": {"../etc": 1.0}}, 422, "'../etc'"),
    ({"merge": {"method": "bogus"}, "preferences": {"concise": 1}}, 422, "'bogus'"),
    ({"temperature": -1}, 422, "`temperature`"),
    ({"messages": []}, 422, "`messages`"),
    ({"recipe": "nosuch"}, 404, "nosuch"),
]


@pytest.mark.parametrize(("extra", "status", "needle"), BAD_INPUTS)
def test_bad_inputs_get_4xx_and_server_survives(live: LiveServer, extra, status, needle) -> None:  # type: ignore[no-untyped-def]
    prefs = extra.pop("preferences", None)
    r = chat(live.url, prefs, **extra)
    assert r.status_code == status, r.text
    assert needle in r.json()["error"]["message"]
    assert_healthy(live.url)


def test_raw_bad_bodies(live: LiveServer, vector_files: dict[str, Path]) -> None:
    url = live.url
    nan = b'{"messages": [{"role": "user", "content": "hi"}], "preferences": {"concise": NaN}}'
    r = httpx.post(
        url + "/v1/chat/completions", content=nan, headers={"content-type": "application/json"}
    )
    assert r.status_code == 422 and "`preferences.concise` must be finite, got nan" in r.text
    big = json.dumps({"messages": [{"role": "user", "content": "x" * 20000}]})
    r = httpx.post(
        url + "/v1/chat/completions", content=big, headers={"content-type": "application/json"}
    )
    assert r.status_code == 413 and "max_body_bytes" in r.text
    r = httpx.post(
        url + "/v1/chat/completions",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 422 and "JSON" in r.text
    junk = {"file": ("v.safetensors", b"\x00" * 100, "application/octet-stream")}
    r = httpx.post(
        url + "/v1/vectors", files=junk, data={"metadata": '{"name": "junk"}'}, headers=OP
    )
    assert r.status_code == 422, r.text
    data = vector_files["warm"].read_bytes()
    ok = {"file": ("v.safetensors", data, "application/octet-stream")}
    r = httpx.post(url + "/v1/vectors", files=ok, data={"metadata": '{"name": "../x"}'}, headers=OP)
    assert r.status_code == 422 and "../x" in r.text
    r = httpx.post(url + "/v1/vectors", files=ok, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401
    assert httpx.delete(url + "/v1/vectors/concise").status_code == 401
    assert httpx.get(url + "/v1/vectors/junk").status_code == 404  # nothing half-stored
    assert [v["name"] for v in httpx.get(url + "/v1/vectors").json()["data"]].count("concise") == 1
    assert_healthy(url)


def test_metrics_exposed(live: LiveServer) -> None:
    assert_healthy(live.url)
    text = httpx.get(live.url + "/metrics").text
    names = (
        "prefvec_requests_total", "prefvec_request_latency_seconds",
        "prefvec_completion_tokens_total", "prefvec_queue_depth", "prefvec_merge_cache_hits_total",
        "prefvec_merge_cache_misses_total", "prefvec_merges_built_total",
        "prefvec_decode_steps_total", "prefvec_decode_rows_total",
    )  # fmt: skip
    for name in names:
        assert name in text
    assert 'route="/v1/chat/completions"' in text
    assert httpx.get(live.url + "/health").json() == {"status": "ok"}


def test_queue_full_and_timeout(srv_base_dir, vector_files, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from tests.server.conftest import make_store

    make_store(tmp_path / "store", srv_base_dir, vector_files)
    server = LiveServer(
        server_settings(tmp_path, srv_base_dir, max_queue=1, request_timeout_s=1.0)
    ).start()
    try:
        backend = server.state.backend
        backend.pause()
        first: dict[str, httpx.Response] = {}
        t = threading.Thread(target=lambda: first.__setitem__("r", chat(server.url)))
        t.start()
        while backend.stats()["queue_depth"] < 1:
            time.sleep(0.01)
        full = chat(server.url)
        assert full.status_code == 429 and full.headers["Retry-After"] == "1"
        assert "`max_queue` = 1" in full.json()["error"]["message"]
        t.join(10)
        assert first["r"].status_code == 504 and "request_timeout_s" in first["r"].text
        assert backend.stats()["queue_depth"] == 0  # the timed-out request left the queue
        backend.resume()
        assert_healthy(server.url)
    finally:
        server.stop()


def test_auth_rules() -> None:
    from prefvec.errors import AuthenticationError, PermissionDeniedError
    from prefvec.server.auth import check_operator, check_user

    # no key configured: closed, unless loopback trust is opted in (then loopback only)
    check_operator(None, "127.0.0.1", [], trust_loopback=True)
    with pytest.raises(PermissionDeniedError):
        check_operator(None, "127.0.0.1", [])
    with pytest.raises(PermissionDeniedError):
        check_operator(None, "10.0.0.5", [], trust_loopback=True)
    with pytest.raises(AuthenticationError):
        check_operator(None, "127.0.0.1", ["k"])
    with pytest.raises(PermissionDeniedError):
        check_operator("u", "127.0.0.1", ["k"], ["u"])
    check_operator("k", "10.0.0.5", ["k"])
    check_user(None, [], ["k"])
    with pytest.raises(AuthenticationError):
        check_user("bad", ["u"], ["k"])
    check_user("k", ["u"], ["k"])
