"""TransformersBackend.activate_dense: a cache miss that evicts reuses the evicted buffers, and
every hit / miss leaves the weights exactly as a fresh merge would."""

from __future__ import annotations

from pathlib import Path

import torch

from tests.server.conftest import server_settings


def test_miss_reuses_evicted_buffers_and_stays_exact(tmp_path: Path, srv_base_dir: Path) -> None:
    from prefvec.server.backends.transformers_backend import TransformersBackend

    probe = TransformersBackend(server_settings(tmp_path, srv_base_dir))
    probe.load()
    params = dict(probe.model.named_parameters())
    base = {n: p.detach().clone() for n, p in params.items()}
    nbytes = sum(t.numel() * t.element_size() for t in base.values())
    backend = TransformersBackend(
        server_settings(tmp_path, srv_base_dir, merge_cache_bytes=2 * nbytes)
    )
    backend.load()
    gen = torch.Generator().manual_seed(0)
    deltas = {
        k: {n: torch.randn(t.shape, generator=gen) * 1e-2 for n, t in base.items()} for k in "abc"
    }

    def expected(k: str) -> dict[str, torch.Tensor]:
        return {n: base[n] + deltas[k][n] for n in base}

    def check(k: str) -> None:
        for n, p in backend.model.named_parameters():
            assert torch.equal(p, expected(k)[n]), (k, n)

    for k in "ab":  # two misses fill the cache
        backend.activate_dense(k, lambda k=k: [(deltas[k], 1.0)])
        check(k)
    b_buffers = {id(t) for t in backend.cache.get("b").values()}
    backend.cache.get("a")  # LRU now: b, a
    backend.activate_dense("c", lambda: [(deltas["c"], 1.0)])  # miss: evicts b
    check("c")
    assert backend.cache.keys() == ["a", "c"] and backend.cache.evictions == 1
    assert {id(t) for t in backend.cache.get("c").values()} == b_buffers  # b's buffers reused
    backend.activate_dense("a", lambda: [(deltas["a"], 1.0)])  # hit
    check("a")
    backend.activate_dense("c", lambda: [(deltas["c"], 1.0)])  # hit (snapshot in reused buffers)
    check("c")
    assert backend.merges_built == 3
    backend.activate_base()
    for n, p in backend.model.named_parameters():
        assert torch.equal(p, base[n]), n
