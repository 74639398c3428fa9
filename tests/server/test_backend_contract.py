"""The server's HTTP contract, run against each backend on the same tiny Llama (fp32, CPU).

Every test takes the module-scoped ``server`` fixture, parametrised over ``transformers`` and
``vllm``; the vLLM runs are marked ``vllm`` (``make test`` leaves them out; ``.ci/run`` runs them in
``.venv-vllm``) and skipped where vLLM is not importable. The base has head size 32 (vLLM's CPU
attention needs >= 32) and a vocabulary of exactly the byte tokenizer's 259 ids, so every token
decodes to text and equal texts mean equal tokens.

Oracle: a model merged offline (θ_base + Σ w·B A, fp32) decoding greedily with transformers'
own ``generate`` (:func:`tests.server.conftest.offline_merged_text`).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from tests.server.conftest import (
    OPERATOR_KEY,
    LiveServer,
    make_store,
    offline_merged_text,
    server_settings,
)

OP = {"Authorization": f"Bearer {OPERATOR_KEY}"}
PROMPT = "Tell me a story"
MAX_LORA_RANK = 16
MAX_LORAS = 8
MAX_CPU_LORAS = 12


def _vllm_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


BACKENDS = [
    "transformers",
    pytest.param(
        "vllm",
        marks=[
            pytest.mark.vllm,
            pytest.mark.skipif(not _vllm_available(), reason="vLLM is not installed"),
        ],
    ),
]


# ------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def ct_base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny Llama with head size 32 and the tokenizer's 259 ids."""
    from prefvec.testing import make_tiny_model

    return make_tiny_model(
        tmp_path_factory.mktemp("ct-base"), seed=0, vocab_size=259, hidden_size=64,
        intermediate_size=128, num_attention_heads=2, num_key_value_heads=1,
    )  # fmt: skip


def _lowrank(fp: str, name: str, modules: dict[str, tuple[int, int]], rank: int, seed: int):  # type: ignore[no-untyped-def]
    from prefvec.vector_store import PreferenceVector, VectorMetadata

    g = torch.Generator().manual_seed(seed)
    factors = {
        f"model.layers.{layer}.{m}": (
            torch.randn(rank, i, generator=g) * 0.3,  # A (r, in)
            torch.randn(o, rank, generator=g) * 0.3,  # B (out, r)
        )
        for layer in range(2)
        for m, (i, o) in modules.items()
    }
    meta = VectorMetadata(name=name, kind="lowrank", base_fingerprint=fp)
    return PreferenceVector.from_factors(meta, factors)


@pytest.fixture(scope="module")
def ct_vectors(ct_base_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Low-rank vectors on different modules and ranks, and one dense vector."""
    from safetensors.torch import load_file

    from prefvec.testing import perturb_model
    from prefvec.vector_store import PreferenceVector, VectorMetadata, fingerprint_model_dir

    out = tmp_path_factory.mktemp("ct-vectors")
    fp = fingerprint_model_dir(ct_base_dir)
    attn = {"self_attn.q_proj": (64, 64), "self_attn.o_proj": (64, 64), "mlp.down_proj": (128, 64)}
    other = {"self_attn.v_proj": (64, 32), "mlp.up_proj": (64, 128)}  # modules the others lack
    vectors = {
        "concise": _lowrank(fp, "concise", attn, 4, 3),
        "warm": _lowrank(fp, "warm", attn, 4, 4),
        "brief": _lowrank(fp, "brief", other, 2, 5),
        "big": _lowrank(fp, "big", attn, 12, 6),
    }
    pos = load_file(str(perturb_model(ct_base_dir, out / "pos", 1, 0.1) / "model.safetensors"))
    base = load_file(str(ct_base_dir / "model.safetensors"))
    dense = PreferenceVector(
        VectorMetadata(name="helpful", kind="dense", base_fingerprint=fp),
        {k: pos[k] - base[k] for k in pos},
    )
    files = {name: v.save(out / f"{name}.safetensors") for name, v in vectors.items()}
    files["helpful"] = dense.save(out / "helpful.safetensors")
    return files


def start_live(settings: Any, timeout_s: float = 600.0) -> LiveServer:
    """:class:`LiveServer` with a start-up budget that fits vLLM on 2 busy cores."""
    server = LiveServer(settings)
    server.thread.start()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and server.thread.is_alive():
        try:
            if httpx.get(server.url + "/ready", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"the {settings.backend} server did not become ready")


def contract_settings(tmp: Path, base_dir: Path, backend: str, **kw: Any) -> Any:
    return server_settings(
        tmp, base_dir, backend=backend, dtype="float32", max_batch_size=16,
        max_loras=MAX_LORAS, max_cpu_loras=MAX_CPU_LORAS, max_lora_rank=MAX_LORA_RANK,
        vllm_kv_cache_gib=1, **kw,
    )  # fmt: skip


@pytest.fixture(scope="module", params=BACKENDS)
def server(
    request: pytest.FixtureRequest,
    ct_base_dir: Path,
    ct_vectors: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp(f"ct-{request.param}")
    make_store(tmp / "store", ct_base_dir, ct_vectors)
    live = start_live(contract_settings(tmp, ct_base_dir, request.param))
    yield live
    live.stop()


# ------------------------------------------------------------------------------------- helpers


def chat(url: str, prefs: dict[str, float] | None = None, n: int = 12, **kw: Any) -> httpx.Response:
    body = {"model": "base", "messages": [{"role": "user", "content": kw.pop("prompt", PROMPT)}],
            "temperature": 0, "max_tokens": n, **kw}  # fmt: skip
    if prefs is not None:
        body["preferences"] = prefs
    return httpx.post(url + "/v1/chat/completions", json=body, timeout=120)


def text_of(resp: httpx.Response) -> str:
    assert resp.status_code == 200, resp.text
    return str(resp.json()["choices"][0]["message"]["content"])


def backend_of(server: LiveServer) -> Any:
    return server.state.backend


def is_vllm(server: LiveServer) -> bool:
    return str(backend_of(server).name) == "vllm"


def concurrently(calls: list[Any]) -> list[httpx.Response]:
    """Run the zero-argument ``calls`` in threads at once; their responses in order."""
    results: dict[int, httpx.Response] = {}
    barrier = threading.Barrier(len(calls))

    def run(i: int) -> None:
        barrier.wait()
        results[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    return [results[i] for i in range(len(calls))]


RECIPES = [
    {"concise": 0.8},
    {"concise": 0.8, "warm": -0.6},  # a negative weight
    {"brief": 1.2, "concise": -0.5},  # modules only one vector targets
    {"warm": -1.0, "brief": 0.7, "concise": 0.3},
]


# --------------------------------------------------------------------------------------- tests


def test_greedy_recipes_equal_the_offline_merge(
    server: LiveServer, ct_base_dir: Path, ct_vectors: dict[str, Path]
) -> None:
    base = text_of(chat(server.url))
    assert base == offline_merged_text(ct_base_dir, ct_vectors, {}, PROMPT, 12)
    for prefs in RECIPES:
        resp = chat(server.url, prefs)
        got = text_of(resp)
        assert got == offline_merged_text(ct_base_dir, ct_vectors, prefs, PROMPT, 12), prefs
        assert got != base
        assert resp.json()["prefvec"]["path"] == "lowrank"


def test_vllm_equals_the_transformers_backend(
    server: LiveServer,
    ct_base_dir: Path,
    ct_vectors: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    if not is_vllm(server):
        pytest.skip("compares the vLLM backend with the default one")
    tmp = tmp_path_factory.mktemp("ct-reference")
    make_store(tmp / "store", ct_base_dir, ct_vectors)
    reference = start_live(contract_settings(tmp, ct_base_dir, "transformers"))
    try:
        for prefs in [{}, *RECIPES]:
            for prompt in (PROMPT, "Why is the sky blue?"):
                want = chat(reference.url, prefs, n=24, prompt=prompt).json()
                got = chat(server.url, prefs, n=24, prompt=prompt).json()
                assert got["choices"][0]["message"] == want["choices"][0]["message"], prefs
                assert got["choices"][0]["finish_reason"] == want["choices"][0]["finish_reason"]
                assert got["usage"] == want["usage"]
        for prefs in (RECIPES[1], {}):  # log-probabilities: generated (top 3) and prompt (echo)
            want = chat(reference.url, prefs, n=8, logprobs=True, top_logprobs=3).json()
            got = chat(server.url, prefs, n=8, logprobs=True, top_logprobs=3).json()
            assert_close_json(got["choices"][0]["logprobs"], want["choices"][0]["logprobs"])
            body = {"model": "base", "prompt": PROMPT, "max_tokens": 0, "echo": True,
                    "logprobs": 2, "temperature": 0, "preferences": prefs}  # fmt: skip
            want = httpx.post(reference.url + "/v1/completions", json=body, timeout=120).json()
            got = httpx.post(server.url + "/v1/completions", json=body, timeout=120).json()
            assert got["choices"][0]["text"] == PROMPT
            assert_close_json(got["choices"][0]["logprobs"], want["choices"][0]["logprobs"])
    finally:
        reference.stop()


def assert_close_json(got: Any, want: Any, tol: float = 1e-4, where: str = "") -> None:
    """Equal JSON, floats within ``tol`` (fp32 kernels differ in the last bits)."""
    if isinstance(want, float) or isinstance(got, float):
        assert got is not None and abs(float(got) - float(want)) <= tol, (where, got, want)
    elif isinstance(want, dict):
        assert isinstance(got, dict) and set(got) == set(want), (where, got, want)
        for key in want:
            assert_close_json(got[key], want[key], tol, f"{where}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), (where, got, want)
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_close_json(g, w, tol, f"{where}[{i}]")
    else:
        assert got == want, (where, got, want)


def test_streaming_equals_full_and_reports_usage(server: LiveServer) -> None:
    import openai

    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused")
    kw: dict[str, Any] = dict(
        model="base", messages=[{"role": "user", "content": PROMPT}], max_tokens=10,
        temperature=0, extra_body={"preferences": {"concise": 0.7, "warm": -0.2}},
    )  # fmt: skip
    full = client.chat.completions.create(**kw)
    chunks = list(
        client.chat.completions.create(**kw, stream=True, stream_options={"include_usage": True})
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    usage = [c.usage for c in chunks if c.usage is not None]
    assert usage and usage[-1].completion_tokens == full.usage.completion_tokens
    tok = backend_of(server).tokenizer
    prompt_ids = tok.apply_chat_template(
        [{"role": "user", "content": PROMPT}], add_generation_prompt=True, tokenize=False
    )
    n_prompt = len(tok(prompt_ids, add_special_tokens=False)["input_ids"])
    assert full.usage.prompt_tokens == usage[-1].prompt_tokens == n_prompt
    if full.choices[0].finish_reason == "length":
        assert full.usage.completion_tokens == 10


def test_stop_strings_end_the_text(server: LiveServer) -> None:
    full = text_of(chat(server.url, {"concise": 0.5}, n=24))
    assert len(full) >= 10
    stop = full[6:8]
    cut = full[: full.find(stop)]
    resp = chat(server.url, {"concise": 0.5}, n=24, stop=[stop])
    assert text_of(resp) == cut
    assert resp.json()["choices"][0]["finish_reason"] == "stop"


def test_max_tokens_and_finish_reason(server: LiveServer) -> None:
    for n in (1, 5):
        body = chat(server.url, {"warm": 0.4}, n=n).json()
        if body["choices"][0]["finish_reason"] == "length":
            assert body["usage"]["completion_tokens"] == n
        assert body["usage"]["total_tokens"] == (
            body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
        )


def test_logit_bias_and_penalties_are_honoured(server: LiveServer) -> None:
    """Both backends apply OpenAI's logit_bias and penalties (never silently ignored)."""
    forced = text_of(chat(server.url, {"concise": 0.5}, n=6, logit_bias={"65": 100}))
    assert forced == "_" * 6  # id 65 is "_" in the tiny byte vocabulary
    plain = text_of(chat(server.url, {"concise": 0.5}, n=16))
    penalised = text_of(chat(server.url, {"concise": 0.5}, n=16, frequency_penalty=2.0,
                             presence_penalty=2.0))  # fmt: skip
    assert penalised != plain
    assert len(set(penalised)) >= len(set(plain))  # penalties push towards unseen tokens


def test_seeded_sampling_is_reproducible(server: LiveServer) -> None:
    prefs = {"concise": 0.6}
    a = text_of(chat(server.url, prefs, n=16, temperature=1.0, seed=7))
    b = text_of(chat(server.url, prefs, n=16, temperature=1.0, seed=7))
    others = {text_of(chat(server.url, prefs, n=16, temperature=1.0, seed=s)) for s in (8, 9, 10)}
    assert a == b
    assert others != {a}  # other seeds sample other text
    greedy = text_of(chat(server.url, prefs, n=16))
    assert text_of(chat(server.url, prefs, n=16, temperature=1.0, top_p=1e-6, seed=3)) == greedy


def test_dense_and_nonlinear_recipes(server: LiveServer) -> None:
    dense = chat(server.url, {"helpful": 0.5})
    ties = chat(server.url, {"concise": 1.0}, merge={"method": "ties", "density": 0.5})
    if not is_vllm(server):
        assert dense.status_code == ties.status_code == 200
        return
    assert dense.status_code == 400, dense.text
    assert "dense vectors" in dense.json()["error"]["message"]
    assert "helpful@1" in dense.json()["error"]["message"]
    assert ties.status_code == 400, ties.text
    assert "'ties'" in ties.json()["error"]["message"]


def test_rank_over_the_limit_names_both_numbers(server: LiveServer) -> None:
    resp = chat(server.url, {"big": 0.5, "concise": 0.5, "warm": 0.5})  # 12 + 4 + 4 = 20
    if not is_vllm(server):
        assert resp.status_code == 200
        return
    assert resp.status_code == 400, resp.text
    message = resp.json()["error"]["message"]
    assert "20" in message and str(MAX_LORA_RANK) in message
    assert text_of(chat(server.url, {"big": 0.5, "concise": 0.5})) != ""  # 16 is served


def test_uploaded_vector_serves_at_once_and_deleted_leaves(
    server: LiveServer, ct_vectors: dict[str, Path]
) -> None:
    url = server.url
    data = ct_vectors["warm"].read_bytes()
    files = {"file": ("x.safetensors", data, "application/octet-stream")}
    meta = {"metadata": json.dumps({"name": "kind2"})}
    assert httpx.post(url + "/v1/vectors", files=files, data=meta, headers=OP).status_code == 201
    assert text_of(chat(url, {"kind2": 0.9})) == text_of(chat(url, {"warm": 0.9}))
    stats = backend_of(server).stats()
    assert httpx.delete(url + "/v1/vectors/kind2", headers=OP).status_code == 200
    assert chat(url, {"kind2": 0.9}).status_code == 404
    if is_vllm(server):  # its adapter left the cache and vLLM
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            after = backend_of(server).stats()["adapters"]
            if after["removed"] > stats["adapters"]["removed"]:
                break
            time.sleep(0.05)
        assert after["removed"] == stats["adapters"]["removed"] + 1
        assert not any("kind2@" in key for key in backend_of(server).adapters)


def _eight_recipes() -> list[dict[str, float]]:
    return [{"concise": 0.2 + 0.1 * i, "warm": 0.5 - 0.15 * i} for i in range(8)]


def test_eight_distinct_recipes_batched_each_equal_solo(server: LiveServer) -> None:
    recipes = _eight_recipes()
    solo = [text_of(chat(server.url, p, n=16)) for p in recipes]
    base = text_of(chat(server.url, n=16))
    assert len(set(solo)) > 1
    if is_vllm(server):
        backend_of(server).vllm_stats.max_running_seen = 0  # this burst's batches only
    calls = [lambda p=p: chat(server.url, p, n=16) for p in recipes]
    calls += [lambda: chat(server.url, n=16)] * 2  # base rows while every slot is full
    results = concurrently(calls)
    assert [text_of(r) for r in results[:8]] == solo
    assert [text_of(r) for r in results[8:]] == [base, base]
    if is_vllm(server):
        assert backend_of(server).stats()["vllm"]["max_running_seen"] >= 4


def test_zero_adapter_guards_base_rows_from_a_vllm_cpu_bug(server: LiveServer) -> None:
    """Without the zero adapter, a base row batched beside LoRA rows with every slot full gets
    the last slot's adapter (vLLM 0.32 CPU, ``torch_ops/lora_ops.py``; upstream PRs #48421,
    #49656). If this fails because the base rows come out clean, vLLM fixed it: the workaround
    (``zero_for_base``) can go."""
    if not is_vllm(server):
        pytest.skip("a vLLM CPU bug")
    backend = backend_of(server)
    base = text_of(chat(server.url, n=16))
    recipes = _eight_recipes()
    backend.zero_for_base = False
    try:
        calls = [lambda p=p: chat(server.url, p, n=16) for p in recipes]
        calls += [lambda: chat(server.url, n=16)] * 2
        results = concurrently(calls)
    finally:
        backend.zero_for_base = True
    assert any(text_of(r) != base for r in results[8:])


def test_adapters_evicted_and_reloaded(server: LiveServer) -> None:
    if not is_vllm(server):
        pytest.skip("adapters are the vLLM backend's")
    backend = backend_of(server)
    first = {"concise": -0.9, "brief": 0.4}
    before = text_of(chat(server.url, first, n=8))
    evictions = backend.stats()["adapters"]["evictions"]
    for i in range(MAX_CPU_LORAS + 1):  # more distinct recipes than the cache holds
        assert chat(server.url, {"warm": 0.05 * (i + 1), "brief": -0.3}, n=2).status_code == 200
    stats = backend.stats()["adapters"]
    assert stats["evictions"] > evictions and stats["cached"] <= MAX_CPU_LORAS
    assert stats["loaded"] <= MAX_CPU_LORAS
    misses = stats["misses"]
    assert text_of(chat(server.url, first, n=8)) == before  # written and loaded again
    assert backend.stats()["adapters"]["misses"] == misses + 1


def test_short_request_finishes_before_a_long_one(server: LiveServer) -> None:
    done: dict[str, float] = {}
    started = threading.Event()

    def long() -> None:
        body = {"model": "base", "messages": [{"role": "user", "content": PROMPT}],
                "max_tokens": 64, "temperature": 0, "stream": True,
                "preferences": {"concise": 0.3}}  # fmt: skip
        with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=120) as r:
            for line in r.iter_lines():
                if line.startswith("data:") and '"content"' in line:
                    started.set()
        done["long"] = time.monotonic()

    t = threading.Thread(target=long)
    t.start()
    assert started.wait(60)
    assert chat(server.url, {"warm": 0.3}, n=2).status_code == 200
    done["short"] = time.monotonic()
    t.join(120)
    assert done["short"] < done["long"]


def test_client_disconnect_aborts_the_request(server: LiveServer) -> None:
    backend = backend_of(server)
    body = {"model": "base", "messages": [{"role": "user", "content": PROMPT}],
            "max_tokens": 64, "temperature": 0, "stream": True}  # fmt: skip
    aborted = backend.stats().get("aborted", 0)
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=60) as r:
        for line in r.iter_lines():
            if line.startswith("data:"):
                break  # the client goes away after the first chunk
    deadline = time.monotonic() + 20
    while backend.stats()["running"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert backend.stats()["running"] == 0
    if is_vllm(server):
        while backend.stats()["aborted"] == aborted and time.monotonic() < deadline:
            time.sleep(0.05)
        assert backend.stats()["aborted"] == aborted + 1
        assert backend.stats()["in_flight"] == 0


def test_queue_full_is_429_and_a_stuck_request_times_out(
    server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = backend_of(server)
    settings = server.state.settings
    assert backend.settings is settings
    # room for one waiting request (vLLM counts in-flight requests over its running capacity)
    monkeypatch.setattr(settings, "max_queue", 1)
    if is_vllm(server):
        monkeypatch.setattr(settings, "max_batch_size", 0)
    monkeypatch.setattr(settings, "request_timeout_s", 1.0)
    first: dict[str, httpx.Response] = {}
    backend.pause()
    try:
        t = threading.Thread(target=lambda: first.setdefault("r", chat(server.url, n=4)))
        t.start()
        deadline = time.monotonic() + 10
        while backend.stats()["queue_depth"] < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        full = chat(server.url, {"concise": 0.5}, n=4)
        assert full.status_code == 429, full.text
        assert full.headers["Retry-After"] == "1"
        t.join(30)
        assert first["r"].status_code == 504 and "request_timeout_s" in first["r"].text
    finally:
        backend.resume()
    deadline = time.monotonic() + 10
    while backend.stats()["queue_depth"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert backend.stats()["queue_depth"] == 0  # the timed-out request left the queue
    monkeypatch.undo()
    assert text_of(chat(server.url, {"concise": 0.5}, n=3))


def test_metrics_show_backend_figures(server: LiveServer) -> None:
    assert chat(server.url, {"concise": 0.5}, n=3).status_code == 200
    text = httpx.get(server.url + "/metrics").text
    assert "prefvec_requests_total" in text
    if is_vllm(server):
        for name in ("prefvec_vllm_running", "prefvec_vllm_kv_cache_usage", "prefvec_lora"):
            assert name in text, name
