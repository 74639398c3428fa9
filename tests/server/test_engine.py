"""The generation engine without HTTP: paths, oracle equality, batching equality, restore."""

from __future__ import annotations

from pathlib import Path

import pytest

from prefvec.errors import NotFoundError, ValidationError
from tests.server.conftest import make_store, offline_merged_text

PROMPT = "Tell me a story"
N = 12


@pytest.fixture(scope="module")
def engine(
    srv_base_dir: Path, vector_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
):  # type: ignore[no-untyped-def]
    from prefvec.server.backends import get_backend
    from prefvec.server.engine import Engine
    from prefvec.server.settings import ServerSettings

    tmp = tmp_path_factory.mktemp("engine")
    store = make_store(tmp / "store", srv_base_dir, vector_files)
    settings = ServerSettings(
        base=str(srv_base_dir), home=tmp, device="cpu", max_vectors_per_request=3
    )
    backend = get_backend(settings)
    backend.load()
    return Engine(settings, store, backend)


def _gen(engine, prefs, method="linear"):  # type: ignore[no-untyped-def]
    from prefvec.protocol import MergeOptions

    r = engine.resolve(preferences=prefs, merge=MergeOptions(method=method))
    ids = engine.encode_chat([{"role": "user", "content": PROMPT}])
    out = engine.generate(ids, engine.sampling_params(max_tokens=N, temperature=0), r)
    assert out.error is None
    return r, out.text


@pytest.mark.parametrize(
    ("prefs", "path"),
    [
        ({"concise": 0.8, "warm": -0.6}, "lowrank"),
        ({"helpful": 0.7}, "dense"),
        ({"helpful": 0.5, "concise": -0.9}, "dense"),  # low-rank densified beside a dense one
    ],
)
def test_paths_match_offline_merge(engine, srv_base_dir, vector_files, prefs, path):  # type: ignore[no-untyped-def]
    resolved, text = _gen(engine, prefs)
    assert resolved.path == path
    assert text == offline_merged_text(srv_base_dir, vector_files, prefs, PROMPT, N)
    _, base = _gen(engine, None)
    assert text != base  # the weights did something


def test_base_is_restored_after_dense(engine):  # type: ignore[no-untyped-def]
    _, before = _gen(engine, None)
    _gen(engine, {"helpful": 1.0})
    _, after = _gen(engine, {})
    assert before == after
    assert engine.backend.merges_built >= 1


def test_mixed_batch_rows_equal_solo(engine):  # type: ignore[no-untyped-def]
    from prefvec.server.engine import CollectingSink, Job

    ids = engine.encode_chat([{"role": "user", "content": PROMPT}])
    short = engine.encode_chat([{"role": "user", "content": "Hi"}])  # different length: padding
    params = engine.sampling_params(max_tokens=N, temperature=0)
    cases = [(ids, {"concise": 1.0}), (short, {"warm": -1.0}), (ids, None)]
    solo = []
    for prompt, prefs in cases:
        solo.append(engine.generate(prompt, params, engine.resolve(preferences=prefs)).text)
    sinks = [CollectingSink() for _ in cases]
    jobs = [
        Job(p, params, engine.resolve(preferences=prefs), s)
        for (p, prefs), s in zip(cases, sinks, strict=True)
    ]
    engine.run_batch(jobs)
    assert [s.text for s in sinks] == solo
    assert len(set(solo)) == 3


def test_sampling_is_seeded(engine):  # type: ignore[no-untyped-def]
    ids = engine.encode_chat([{"role": "user", "content": PROMPT}])
    r = engine.resolve(preferences=None)
    a = engine.generate(ids, engine.sampling_params(max_tokens=N, temperature=1.0, seed=5), r).text
    b = engine.generate(ids, engine.sampling_params(max_tokens=N, temperature=1.0, seed=5), r).text
    c = engine.generate(ids, engine.sampling_params(max_tokens=N, temperature=1.0, seed=6), r).text
    assert a == b != c


def test_resolve_errors_name_field_and_value(engine):  # type: ignore[no-untyped-def]
    with pytest.raises(ValidationError, match=r"`preferences.helpful` must be finite, got nan"):
        engine.resolve(preferences={"helpful": float("nan")})
    with pytest.raises(ValidationError, match=r"must be in \[-5, 5\], got 9"):
        engine.resolve(preferences={"helpful": 9})
    with pytest.raises(NotFoundError, match="nope"):
        engine.resolve(preferences={"nope": 1.0})
    with pytest.raises(ValidationError, match="max_tokens"):
        engine.sampling_params(max_tokens=10_000)


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
