"""Sampled generation on CUDA (runs where a GPU is present): the per-request generator lives on
the model's device, so ``torch.multinomial`` samples from CUDA probabilities with it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch

from tests.server.conftest import make_store

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_sampled_generation_on_cuda(srv_base_dir: Path, vector_files, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from prefvec.server.settings import ServerSettings
    from prefvec.server.state import local_state

    store = make_store(tmp_path / "store", srv_base_dir, vector_files)
    settings = ServerSettings(base=str(srv_base_dir), home=tmp_path, device="cuda")
    state = local_state(settings, store=store)
    try:
        svc = state.service
        assert state.backend.device.startswith("cuda")

        def run(seed: int, prefs: dict[str, float] | None) -> str:
            r = svc.resolve(preferences=prefs)
            req = svc.prepare(r, prompt="Tell me", max_tokens=12, temperature=1.0, seed=seed)
            assert req.params.generator(state.backend.device).device.type == "cuda"
            return asyncio.run(svc.complete(req)).text

        assert run(5, None) == run(5, None) != run(6, None)
        assert run(5, {"concise": 1.0}) == run(5, {"concise": 1.0})
    finally:
        state.backend.close()
