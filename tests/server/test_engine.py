"""The serving service without HTTP: paths, oracle equality, batching equality, restore."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from prefvec.errors import NotFoundError, ValidationError
from tests.server.conftest import make_store, offline_merged_text

PROMPT = "Tell me a story"
N = 12


@pytest.fixture(scope="module")
def svc(
    srv_base_dir: Path, vector_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
):  # type: ignore[no-untyped-def]
    from prefvec.server.settings import ServerSettings
    from prefvec.server.state import local_state

    tmp = tmp_path_factory.mktemp("engine")
    store = make_store(tmp / "store", srv_base_dir, vector_files)
    settings = ServerSettings(
        base=str(srv_base_dir), home=tmp, device="cpu", max_vectors_per_request=3
    )
    state = local_state(settings, store=store)
    yield state.service
    state.backend.close()


def _request(svc, prefs, prompt=PROMPT, method="linear", **sampling):  # type: ignore[no-untyped-def]
    from prefvec.protocol import MergeOptions

    r = svc.resolve(preferences=prefs, merge=MergeOptions(method=method))
    sampling = {"max_tokens": N, "temperature": 0, **sampling}
    return svc.prepare(r, messages=[{"role": "user", "content": prompt}], **sampling)


def _gen(svc, prefs, method="linear", **sampling):  # type: ignore[no-untyped-def]
    req = _request(svc, prefs, method=method, **sampling)
    return req.resolved, asyncio.run(svc.complete(req)).text


@pytest.mark.parametrize(
    ("prefs", "path"),
    [
        ({"concise": 0.8, "warm": -0.6}, "lowrank"),
        ({"helpful": 0.7}, "dense"),
        ({"helpful": 0.5, "concise": -0.9}, "dense"),  # low-rank densified beside a dense one
    ],
)
def test_paths_match_offline_merge(svc, srv_base_dir, vector_files, prefs, path):  # type: ignore[no-untyped-def]
    resolved, text = _gen(svc, prefs)
    assert resolved.path == path
    assert text == offline_merged_text(srv_base_dir, vector_files, prefs, PROMPT, N)
    _, base = _gen(svc, None)
    assert text != base  # the weights did something


def test_base_is_restored_after_dense(svc):  # type: ignore[no-untyped-def]
    _, before = _gen(svc, None)
    _gen(svc, {"helpful": 1.0})
    _, after = _gen(svc, {})
    assert before == after
    assert svc.backend.merges_built >= 1


async def _together(svc, reqs: list[Any]) -> list[str]:  # type: ignore[no-untyped-def]
    """Queue every request while admission is paused, so they start in one batch."""
    svc.backend.pause()
    tasks = [asyncio.ensure_future(svc.complete(r)) for r in reqs]
    while svc.backend.stats()["queue_depth"] < len(reqs):
        await asyncio.sleep(0.005)
    svc.backend.resume()
    return [c.text for c in await asyncio.gather(*tasks)]


def test_mixed_batch_rows_equal_solo(svc):  # type: ignore[no-untyped-def]
    cases = [(PROMPT, {"concise": 1.0}), ("Hi", {"warm": -1.0}), (PROMPT, None)]
    solo = [_gen_prompt(svc, p, prefs) for p, prefs in cases]
    together = asyncio.run(_together(svc, [_request(svc, prefs, p) for p, prefs in cases]))
    assert together == solo
    assert len(set(solo)) == 3


def _gen_prompt(svc, prompt, prefs, **kw):  # type: ignore[no-untyped-def]
    return asyncio.run(svc.complete(_request(svc, prefs, prompt, **kw))).text


def test_rows_that_join_a_running_batch_equal_solo(svc):  # type: ignore[no-untyped-def]
    """Newcomers prefilled while a long row decodes, then merged into its KV cache (different
    lengths, different weights), give exactly their solo greedy output; so does the long row."""
    long_req = (PROMPT, {"concise": 0.5}, 40)
    joiners = [("Hi", {"warm": -1.0}, 8), ("A much longer prompt than the first", None, 8),
               ("Hey", {"concise": -0.7, "warm": 0.4}, 6)]  # fmt: skip
    solo = [_gen_prompt(svc, p, w, max_tokens=n) for p, w, n in [long_req, *joiners]]

    async def run() -> list[str]:
        first = asyncio.ensure_future(svc.complete(_request(svc, long_req[1], long_req[0],
                                                            max_tokens=long_req[2])))  # fmt: skip
        while svc.backend.counters.decode_steps == steps0:
            await asyncio.sleep(0.001)
        rest = [svc.complete(_request(svc, w, p, max_tokens=n)) for p, w, n in joiners]
        done = await asyncio.gather(first, *rest)
        return [c.text for c in done]

    steps0 = svc.backend.counters.decode_steps
    joins0 = svc.backend.counters.joins
    assert asyncio.run(run()) == solo
    assert svc.backend.counters.joins - joins0 >= 2  # the long row's batch, then the newcomers


def test_chunked_prefill_equals_whole(svc, monkeypatch):  # type: ignore[no-untyped-def]
    whole = _gen_prompt(svc, PROMPT * 3, {"concise": 0.6})
    chunks0 = svc.backend.counters.prefill_chunks
    monkeypatch.setattr(svc.backend.settings, "max_prefill_tokens", 7)
    assert _gen_prompt(svc, PROMPT * 3, {"concise": 0.6}) == whole
    assert svc.backend.counters.prefill_chunks - chunks0 > 3


def test_sampling_is_seeded_on_the_model_device(svc):  # type: ignore[no-untyped-def]
    a = _gen(svc, None, temperature=1.0, seed=5)[1]
    b = _gen(svc, None, temperature=1.0, seed=5)[1]
    c = _gen(svc, None, temperature=1.0, seed=6)[1]
    assert a == b != c
    params = _request(svc, None, temperature=1.0, seed=5).params
    gen = params.generator(svc.backend.device)
    assert (
        gen is not None
        and gen.device.type == "cpu" == next(svc.backend.model.parameters()).device.type
    )


def test_resolve_errors_name_field_and_value(svc):  # type: ignore[no-untyped-def]
    with pytest.raises(ValidationError, match=r"`preferences.helpful` must be finite, got nan"):
        svc.resolve(preferences={"helpful": float("nan")})
    with pytest.raises(ValidationError, match=r"must be in \[-5, 5\], got 9"):
        svc.resolve(preferences={"helpful": 9})
    with pytest.raises(NotFoundError, match="nope"):
        svc.resolve(preferences={"nope": 1.0})
    with pytest.raises(ValidationError, match="max_tokens"):
        svc.resolver.sampling_params(max_tokens=10_000)


def test_incremental_detokenisation_equals_full_decode() -> None:
    """Deltas of the windowed decoder concatenate to the full decode, UTF-8 split or not."""
    import random

    from prefvec.server.generation import TextStream
    from prefvec.testing import make_tiny_tokenizer

    tok = make_tiny_tokenizer()
    rng = random.Random(0)
    texts = ["héllo wörld ✓ 日本語", "plain ascii text", "a\nb\tc ünïcödé"]
    for text in texts:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        for _ in range(3):
            cut = rng.randint(1, len(ids))
            stream = TextStream(tok)
            out = "".join(stream.push(i) for i in ids[:cut]) + stream.flush()
            assert out == tok.decode(ids[:cut], skip_special_tokens=True)


def test_stop_strings_and_utf8_holdback() -> None:
    from prefvec.server.generation import TextStream
    from prefvec.testing import make_tiny_tokenizer

    tok = make_tiny_tokenizer()
    ids = tok("héllo END x", add_special_tokens=False)["input_ids"]
    stream = TextStream(tok, ("END",))
    deltas = [stream.push(i) for i in ids]
    assert "\ufffd" not in "".join(deltas)  # é is two byte tokens: never half emitted
    assert stream.finish_reason == "stop"
    assert "".join(deltas) + stream.flush() == "héllo "


def test_resolver_consults_backend_capabilities(svc):  # type: ignore[no-untyped-def]
    """A path the backend does not declare is a 4xx naming why, before anything is queued."""
    from types import SimpleNamespace

    from prefvec.errors import BadRequestError
    from prefvec.server.backends.base import Capabilities
    from prefvec.server.resolver import Resolver

    caps = Capabilities(dense_recipes=False, max_lowrank_rank=4, logprobs=False)
    stub = SimpleNamespace(name="stub", capabilities=caps, tokenizer=None, max_positions=None)
    res = Resolver(svc.settings, svc.resolver.store, stub)  # type: ignore[arg-type]
    assert res.resolve(preferences={"concise": 1.0}).path == "lowrank"  # rank 4: fits
    with pytest.raises(BadRequestError, match=r"dense vectors \['helpful@1'\]"):
        res.resolve(preferences={"helpful": 1.0})
    with pytest.raises(BadRequestError, match="method 'ties'"):
        res.resolve(preferences={"concise": 1.0}, merge=_merge("ties"))
    with pytest.raises(BadRequestError, match=r"total rank 8.*at most rank 4"):
        res.resolve(preferences={"concise": 1.0, "warm": 0.5})
    with pytest.raises(ValidationError, match="`logprobs` is not supported"):
        res.sampling_params(max_tokens=4, logprobs=2)


def _merge(method: str):  # type: ignore[no-untyped-def]
    from prefvec.protocol import MergeOptions

    return MergeOptions(method=method, density=0.5)
