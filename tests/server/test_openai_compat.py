"""OpenAI compatibility that real clients rely on (issue 14), with the official ``openai`` client:
log-probabilities (chat and legacy shapes, streaming and not) equal an offline fp32 computation
on the merged model, ``echo`` + ``max_tokens: 0`` scores a prompt, ``n`` choices with seeds
``seed + i``, penalties and ``logit_bias`` equal an offline decode loop, every unsupported field
is a 4xx naming it, unknown models are a 404 listing the valid ids, and ``include_usage`` gives a
separate final chunk."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import torch

from prefvec.server.generation import SamplingParams, adjust_logits
from prefvec.server.routes.generation import TokenTexts
from tests.server.conftest import LiveServer

PROMPT = "Tell me a story"
ATOL = 2e-4  # fp32: batched KV-cache prefill/decode vs one full forward


# ------------------------------------------------------------------------------------ oracle


def offline_model(base_dir: Path, files: dict[str, Path], weights: dict[str, float]):  # type: ignore[no-untyped-def]
    """θ = θ_base + Σ w·φ merged offline in fp32 (low-rank densified as B @ A)."""
    from transformers import AutoModelForCausalLM

    from prefvec.vector_store import PreferenceVector

    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32).eval()
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, w in weights.items():
            for key, delta in PreferenceVector.load(files[name]).to_dense().items():
                target = params[key] if key in params else params["model.embed_tokens.weight"]
                target.add_(delta, alpha=w)
    return model


@torch.no_grad()
def offline_logprobs(model, ids: list[int]) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """log softmax of the logits at every position of ``ids`` (T, V): row t predicts t + 1."""
    logits = model(input_ids=torch.tensor([ids])).logits[0].float()
    return torch.log_softmax(logits, dim=-1)


@torch.no_grad()
def offline_greedy(model, prompt: list[int], n: int) -> list[int]:  # type: ignore[no-untyped-def]
    """Greedy ids by full forwards, EOS (2) included when it comes."""
    ids: list[int] = []
    while len(ids) < n and (not ids or ids[-1] != 2):
        ids.append(int(torch.argmax(model(input_ids=torch.tensor([prompt + ids])).logits[0, -1])))
    return ids


def tokenizer(base_dir: Path):  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(base_dir))


def chat_ids(tok, prompt: str) -> list[int]:  # type: ignore[no-untyped-def]
    text = tok.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
    )
    return list(tok(text, add_special_tokens=False)["input_ids"])


def client(live: LiveServer):  # type: ignore[no-untyped-def]
    import openai

    return openai.OpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0)


def post(live: LiveServer, path: str, body: dict) -> httpx.Response:  # type: ignore[type-arg]
    return httpx.post(live.url + path, json=body, timeout=60)


WEIGHTS = [{}, {"helpful": 0.7}, {"concise": 0.8, "warm": -0.6}]  # base, dense, low-rank


# ------------------------------------------------------------------------- log-probabilities


@pytest.mark.parametrize("weights", WEIGHTS, ids=["base", "dense", "lowrank"])
def test_chat_logprobs_equal_offline_merge(
    live: LiveServer, srv_base_dir: Path, vector_files: dict[str, Path], weights: dict
) -> None:  # type: ignore[type-arg]
    tok = tokenizer(srv_base_dir)
    extra = {"preferences": weights} if weights else {}
    full = client(live).chat.completions.create(
        model="base",
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=8,
        temperature=0,
        logprobs=True,
        top_logprobs=3,
        extra_body=extra,
    )
    content = full.choices[0].logprobs.content
    assert len(content) == full.usage.completion_tokens > 0
    model = offline_model(srv_base_dir, vector_files, weights)
    prompt = chat_ids(tok, PROMPT)
    ids = offline_greedy(model, prompt, len(content))  # the server decodes greedily too
    raw = b"".join(bytes(c.bytes) for c in content if c.token != "<|im_end|>")
    text = raw.decode("utf-8", errors="replace")  # random weights: not always valid UTF-8
    assert text == tok.decode(ids, skip_special_tokens=True) == full.choices[0].message.content
    logp = offline_logprobs(model, prompt + ids)
    for t, c in enumerate(content):
        row = logp[len(prompt) + t - 1]
        assert c.logprob == pytest.approx(float(row[ids[t]]), abs=ATOL)
        if bytes(c.bytes).isascii():
            assert c.token == tok.decode([ids[t]])
        top = torch.topk(row, 3)
        assert [x.logprob for x in c.top_logprobs] == pytest.approx(top.values.tolist(), abs=ATOL)
        assert c.top_logprobs[0].bytes == c.bytes  # greedy picked the top token

    stream = client(live).chat.completions.create(
        model="base",
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=8,
        temperature=0,
        logprobs=True,
        top_logprobs=3,
        extra_body=extra,
        stream=True,
    )
    streamed = [
        lp
        for ch in stream
        if ch.choices and ch.choices[0].logprobs
        for lp in ch.choices[0].logprobs.content
    ]
    assert [(s.token, s.logprob) for s in streamed] == [(c.token, c.logprob) for c in content]


def test_completion_logprobs_and_echo_scoring(
    live: LiveServer, srv_base_dir: Path, vector_files: dict[str, Path]
) -> None:
    tok = tokenizer(srv_base_dir)
    weights = {"concise": 0.8}
    model = offline_model(srv_base_dir, vector_files, weights)
    prompt_text = "Once upon a time"
    ids = list(tok(prompt_text, add_special_tokens=False)["input_ids"])
    c = client(live)
    # score only: echo + max_tokens 0, the prompt given as text and as token ids
    for prompt in (prompt_text, ids):
        r = c.completions.create(
            model="base",
            prompt=prompt,
            max_tokens=0,
            echo=True,
            logprobs=2,
            extra_body={"preferences": weights},
        )
        choice = r.choices[0]
        assert r.usage.completion_tokens == 0 and r.usage.prompt_tokens == len(ids)
        assert choice.text == prompt_text
        lp = choice.logprobs
        assert lp.tokens == [tok.decode([i]) for i in ids]
        assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
        logp = offline_logprobs(model, ids)
        want = [float(logp[t - 1, ids[t]]) for t in range(1, len(ids))]
        assert lp.token_logprobs[1:] == pytest.approx(want, abs=ATOL)
        assert all(
            len(top) in (2, 3) and lp.tokens[t + 1] in top
            for t, top in enumerate(lp.top_logprobs[1:])
        )
        assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(len(ids))]
    # generation with logprobs, streamed and not
    full = c.completions.create(
        model="base",
        prompt=ids,
        max_tokens=6,
        temperature=0,
        logprobs=1,
        extra_body={"preferences": weights},
    )
    lp = full.choices[0].logprobs
    gen = offline_greedy(model, ids, len(lp.tokens))
    assert lp.tokens == [TokenTexts(tok)(g) for g in gen]
    logp = offline_logprobs(model, ids + gen)
    want = [float(logp[len(ids) + t - 1, g]) for t, g in enumerate(gen)]
    assert lp.token_logprobs == pytest.approx(want, abs=ATOL)
    stream = c.completions.create(
        model="base",
        prompt=ids,
        max_tokens=6,
        temperature=0,
        logprobs=1,
        stream=True,
        extra_body={"preferences": weights},
    )
    got = [
        x
        for ch in stream
        if ch.choices and ch.choices[0].logprobs
        for x in ch.choices[0].logprobs.token_logprobs
    ]
    assert got == lp.token_logprobs


def test_list_of_prompts_and_n(live: LiveServer, srv_base_dir: Path) -> None:
    tok = tokenizer(srv_base_dir)
    prompts = [list(tok(p, add_special_tokens=False)["input_ids"]) for p in ("Hello", "Once")]
    c = client(live)
    r = c.completions.create(
        model="base", prompt=prompts, max_tokens=5, n=2, seed=11, temperature=1.0
    )
    assert [ch.index for ch in r.choices] == [0, 1, 2, 3]
    used = 0
    for i, ch in enumerate(r.choices):  # choice i*n+j = prompt i sampled with seed 11+j
        one = c.completions.create(
            model="base", prompt=prompts[i // 2], max_tokens=5, seed=11 + i % 2, temperature=1.0
        )
        assert ch.text == one.choices[0].text
        used += one.usage.completion_tokens
    assert r.usage.prompt_tokens == sum(len(p) for p in prompts)  # each prompt counted once
    assert r.usage.completion_tokens == used
    texts = [ch.text for ch in r.choices]
    assert texts[0] != texts[1] or texts[2] != texts[3]  # different seeds, different samples

    chat = c.chat.completions.create(
        model="base",
        messages=[{"role": "user", "content": PROMPT}],
        n=3,
        seed=5,
        temperature=1.0,
        max_tokens=6,
    )
    assert [ch.index for ch in chat.choices] == [0, 1, 2]
    singles = [
        c.chat.completions.create(
            model="base",
            messages=[{"role": "user", "content": PROMPT}],
            seed=5 + j,
            temperature=1.0,
            max_tokens=6,
        )
        .choices[0]
        .message.content
        for j in range(3)
    ]
    assert [ch.message.content for ch in chat.choices] == singles
    assert len(set(singles)) > 1


# -------------------------------------------------------------------- penalties, logit_bias


def test_adjust_logits_formula() -> None:
    logits = torch.tensor([1.0, 2.0, 3.0, 4.0])
    params = SamplingParams(frequency_penalty=0.5, presence_penalty=0.25, logit_bias=((0, 10.0),))
    out = adjust_logits(logits, params, [3, 3, 1])
    # token 3 seen twice: 4 - 2*0.5 - 0.25; token 1 once: 2 - 0.5 - 0.25; token 0 biased
    assert out.tolist() == pytest.approx([11.0, 1.25, 3.0, 2.75])
    assert logits.tolist() == [1.0, 2.0, 3.0, 4.0]  # input untouched
    assert adjust_logits(logits, SamplingParams(), [3]) is logits


@torch.no_grad()
def offline_penalised_greedy(model, prompt: list[int], n: int, fp: float, pp: float, bias):  # type: ignore[no-untyped-def]
    ids: list[int] = []
    for _ in range(n):
        logits = model(input_ids=torch.tensor([prompt + ids])).logits[0, -1].float()
        counts = torch.bincount(torch.tensor(ids, dtype=torch.long), minlength=logits.shape[0])
        logits = logits - counts * fp - (counts > 0).float() * pp
        for t, b in bias.items():
            logits[t] += b
        tok = int(torch.argmax(logits))
        if tok == 2:
            break
        ids.append(tok)
    return ids


def test_penalties_and_logit_bias_equal_offline_loop(
    live: LiveServer, srv_base_dir: Path, vector_files: dict[str, Path]
) -> None:
    tok = tokenizer(srv_base_dir)
    model = offline_model(srv_base_dir, vector_files, {})
    prompt = list(tok("Once upon", add_special_tokens=False)["input_ids"])
    plain = post(live, "/v1/completions", {"prompt": prompt, "max_tokens": 12, "temperature": 0})
    for fp, pp, bias in ((2.0, 0.0, {}), (0.0, 2.0, {}), (0.5, 0.5, {70: 3.0})):
        body = {
            "prompt": prompt,
            "max_tokens": 12,
            "temperature": 0,
            "frequency_penalty": fp,
            "presence_penalty": pp,
            "logit_bias": {str(k): v for k, v in bias.items()},
        }
        r = post(live, "/v1/completions", body)
        assert r.status_code == 200, r.text
        want = tok.decode(offline_penalised_greedy(model, prompt, 12, fp, pp, bias))
        assert r.json()["choices"][0]["text"] == want
        assert want != plain.json()["choices"][0]["text"]
    forced = post(
        live,
        "/v1/completions",
        {"prompt": prompt, "max_tokens": 5, "temperature": 0, "logit_bias": {"70": 100}},
    )
    assert forced.json()["choices"][0]["text"] == tok.decode([70]) * 5
    bad = post(live, "/v1/completions", {"prompt": prompt, "logit_bias": {"99999": 1}})
    assert bad.status_code == 422 and bad.json()["error"]["param"] == "logit_bias"


# ------------------------------------------------------------------- nothing silently ignored

CHAT = {"model": "base", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 2}
COMP = {"model": "base", "prompt": "Once", "max_tokens": 2}
UNSUPPORTED = [
    ("chat", {"response_format": {"type": "json_object"}}, "response_format"),
    ("chat", {"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
    ("chat", {"tool_choice": "auto"}, "tool_choice"),
    ("chat", {"functions": [{"name": "f"}]}, "functions"),
    ("chat", {"parallel_tool_calls": True}, "parallel_tool_calls"),
    ("chat", {"modalities": ["text", "audio"]}, "modalities"),
    ("chat", {"audio": {"voice": "x"}}, "audio"),
    ("chat", {"reasoning_effort": "high"}, "reasoning_effort"),
    ("chat", {"store": True}, "store"),
    ("chat", {"service_tier": "flex"}, "service_tier"),
    ("chat", {"top_logprobs": 2}, "top_logprobs"),
    ("chat", {"stream_options": {"include_usage": True}}, "stream_options"),
    ("chat", {"n": 2, "stream": True}, "n"),
    ("chat", {"n": 9}, "n"),  # over max_n = 8
    (
        "chat",
        {
            "messages": [
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}
            ]
        },
        "messages.0.content.0.type",
    ),
    ("chat", {"messages": [{"role": "user", "content": "x", "name": "bob"}]}, "messages.0.name"),
    ("comp", {"suffix": "end"}, "suffix"),
    ("comp", {"best_of": 3}, "best_of"),
    ("comp", {"max_tokens": 0}, "max_tokens"),
    ("comp", {"prompt": []}, "prompt"),
    ("comp", {"prompt": ["a", "b"], "stream": True}, "prompt"),
    ("comp", {"echo": True, "logprobs": 1, "stream": True}, "echo"),
]


@pytest.mark.parametrize(("route", "extra", "field"), UNSUPPORTED)
def test_unsupported_field_is_a_400_naming_it(live: LiveServer, route: str, extra, field) -> None:  # type: ignore[no-untyped-def]
    path, body = ("/v1/chat/completions", CHAT) if route == "chat" else ("/v1/completions", COMP)
    r = post(live, path, {**body, **extra})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == field and field in err["message"]


BAD_VALUES = [
    ("chat", {"top_logprobs": 21, "logprobs": True}, "top_logprobs"),
    ("chat", {"logprobs": 1}, "logprobs"),
    ("chat", {"frequency_penalty": 2.5}, "frequency_penalty"),
    ("chat", {"logit_bias": {"5": 101}}, "logit_bias.5"),
    ("chat", {"made_up_field": 1}, "made_up_field"),
    (
        "chat",
        {"stream": True, "stream_options": {"continuous_usage_stats": True}},
        "stream_options.continuous_usage_stats",
    ),
    ("comp", {"logprobs": 6}, "logprobs"),
    ("comp", {"prompt": [[1, -2]]}, "prompt"),
]


@pytest.mark.parametrize(("route", "extra", "field"), BAD_VALUES)
def test_bad_value_is_a_422_naming_it(live: LiveServer, route: str, extra, field) -> None:  # type: ignore[no-untyped-def]
    path, body = ("/v1/chat/completions", CHAT) if route == "chat" else ("/v1/completions", COMP)
    r = post(live, path, {**body, **extra})
    assert r.status_code == 422, r.text
    assert field in r.json()["error"]["message"]


def test_text_parts_are_joined(live: LiveServer) -> None:
    parts = [{"type": "text", "text": "Tell me "}, {"type": "text", "text": "a story"}]
    by_parts = post(
        live,
        "/v1/chat/completions",
        {
            **CHAT,
            "max_tokens": 6,
            "temperature": 0,
            "messages": [{"role": "user", "content": parts}],
        },
    )
    plain = post(live, "/v1/chat/completions", {**CHAT, "max_tokens": 6, "temperature": 0})
    assert by_parts.status_code == 200, by_parts.text
    assert by_parts.json()["choices"][0] == plain.json()["choices"][0]


def test_accepted_no_op_values(live: LiveServer) -> None:
    """Values that ask for nothing the server lacks are accepted (and named in the docs)."""
    extra = {
        "response_format": {"type": "text"},
        "tool_choice": "none",
        "tools": [],
        "store": False,
        "service_tier": "auto",
        "modalities": ["text"],
        "user": "u1",
        "max_completion_tokens": 3,
    }
    r = post(live, "/v1/chat/completions", {**CHAT, **extra})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] <= 3


# -------------------------------------------------------------------------------- model names


def test_unknown_model_is_a_404_listing_valid_ids(live: LiveServer) -> None:
    r = post(live, "/v1/chat/completions", {**CHAT, "model": "gpt-4"})
    assert r.status_code == 404, r.text
    err = r.json()["error"]
    assert err["param"] == "model" and "'gpt-4'" in err["message"]
    assert "'base'" in err["message"] and live.state.settings.model_name in err["message"]
    with_experiment = post(
        live, "/v1/chat/completions", {**CHAT, "model": "gpt-4", "experiment": "any", "user": "u"}
    )
    assert with_experiment.status_code == 404, with_experiment.text
    ok = post(live, "/v1/chat/completions", {**CHAT, "model": live.state.settings.model_name})
    assert ok.status_code == 200
    settings = live.state.resolver.settings
    settings.model_aliases = {"gpt-4": "base"}
    try:
        aliased = post(live, "/v1/chat/completions", {**CHAT, "model": "gpt-4", "temperature": 0})
        plain = post(live, "/v1/chat/completions", {**CHAT, "temperature": 0})
        assert aliased.status_code == 200, aliased.text
        assert aliased.json()["choices"] == plain.json()["choices"]
        assert aliased.json()["model"] == "gpt-4"
    finally:
        settings.model_aliases = {}


# ------------------------------------------------------------------------ streaming and usage


@pytest.mark.parametrize("route", ["chat", "comp"])
def test_include_usage_is_a_separate_final_chunk(live: LiveServer, route: str) -> None:
    path, body = ("/v1/chat/completions", CHAT) if route == "chat" else ("/v1/completions", COMP)
    body = {**body, "stream": True, "stream_options": {"include_usage": True}, "max_tokens": 4}
    with httpx.stream("POST", live.url + path, json=body, timeout=60) as r:
        events = [ln[6:] for ln in r.iter_lines() if ln.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    last, finish = chunks[-1], chunks[-2]
    assert last["choices"] == [] and last["usage"]["completion_tokens"] >= 1
    assert finish["choices"][0]["finish_reason"] in ("stop", "length")
    assert all("usage" not in c for c in chunks[:-1])
    plain = (
        client(live).chat.completions.create(
            model="base",
            messages=CHAT["messages"],
            max_tokens=4,
            stream=True,
            stream_options={"include_usage": True},
        )
        if route == "chat"
        else []
    )
    if route == "chat":
        got = list(plain)
        assert got[-1].usage is not None and got[-1].choices == []


# ---------------------------------------------------------------------------------- tokenize


def test_tokenize_matches_the_generation_encoding(live: LiveServer, srv_base_dir: Path) -> None:
    tok = tokenizer(srv_base_dir)
    for path in ("/tokenize", "/v1/tokenize"):
        r = post(live, path, {"messages": [{"role": "user", "content": PROMPT}]})
        assert r.status_code == 200, r.text
        assert r.json()["tokens"] == chat_ids(tok, PROMPT)
    t = post(live, "/tokenize", {"prompt": "Once upon", "add_special_tokens": False}).json()
    assert t["tokens"] == list(tok("Once upon", add_special_tokens=False)["input_ids"])
    assert t["count"] == len(t["tokens"]) and t["max_model_len"] == 512
    back = post(live, "/detokenize", {"tokens": t["tokens"]})
    assert back.json() == {"prompt": "Once upon"}
    info = httpx.get(live.url + "/tokenizer_info").json()
    assert info["eos_token"] == tok.eos_token and info["chat_template"] == tok.chat_template
    assert post(live, "/tokenize", {}).status_code == 400
    assert post(live, "/tokenize", {"prompt": "x", "model": "gpt-4"}).status_code == 404
    bad = post(live, "/detokenize", {"tokens": [99999]})
    assert bad.status_code == 422 and bad.json()["error"]["param"] == "tokens"
