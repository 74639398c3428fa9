"""Builders and multiprocessing workers shared by the vector-store tests.

Workers live here (not in a test module) so spawned children import only what they need.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from prefvec.vector_store import BaseSpec, LocalStore, PreferenceVector, VectorMetadata

LOWRANK_MODULES = (
    "model.layers.0.self_attn.q_proj",
    "model.layers.0.self_attn.k_proj",
    "model.layers.1.mlp.gate_proj",
    "model.layers.1.mlp.down_proj",
)


def model_file(model_dir: Path) -> Path:
    return next(Path(model_dir).glob("*.safetensors"))


def dense_vector(
    base: BaseSpec, pos_dir: Path, neg_dir: Path, name: str = "helpful"
) -> PreferenceVector:
    """φ = θ+ − θ− over every base tensor (the paper's contrast vector)."""
    from safetensors.torch import load_file

    pos, neg = load_file(str(model_file(pos_dir))), load_file(str(model_file(neg_dir)))
    meta = VectorMetadata(name=name, kind="dense", base_fingerprint=base.fingerprint)
    return PreferenceVector(meta, {k: pos[k] - neg[k] for k in pos})


def lowrank_vector(
    base: BaseSpec, name: str = "concise", seed: int = 0, rank: int = 2
) -> PreferenceVector:
    """Random factors A (r, in), B (out, r) on a few linear modules of the base."""
    gen = torch.Generator().manual_seed(seed)
    dims = base.linear_modules()
    factors = {
        m: (
            torch.randn(rank, dims[m][1], generator=gen),
            torch.randn(dims[m][0], rank, generator=gen),
        )
        for m in LOWRANK_MODULES
    }
    meta = VectorMetadata(name=name, kind="lowrank", base_fingerprint=base.fingerprint)
    return PreferenceVector.from_factors(meta, factors)


def snapshot(store: LocalStore) -> dict[str, Any]:
    """Everything a failed put must leave unchanged."""
    return {
        "list": [(r.ref, r.sha256) for r in store.list()],
        "rows": sorted((r.ref, r.sha256) for rec in store.list() for r in store.versions(rec.name)),
        "blobs": sorted(p.name for p in store.blobs_dir.iterdir()),
        "recipes": [r.ref for r in store.list_recipes()],
    }


def assert_consistent(store: LocalStore) -> None:
    """Every row has its blob, every blob has a row, no upload is in flight."""
    shas = {r.sha256 for rec in store.list() for r in store.versions(rec.name)}
    blobs = {p.name.removesuffix(".safetensors") for p in store.blobs_dir.iterdir()}
    assert shas == blobs
    assert list(store.tmp_dir.iterdir()) == []


# ----------------------------------------------------------------------------- workers


def crash_worker(root: str, base: BaseSpec, path: str, stage: str) -> None:
    """Put ``path`` and die with ``os._exit`` at ``stage`` of the put (a killed writer)."""
    from prefvec.vector_store import store as store_mod

    def die(at: str) -> None:
        if at == stage:
            os._exit(17)

    store_mod._fault_point = die  # type: ignore[assignment]
    LocalStore(root, base).put(path)
    os._exit(0)  # not reached when the stage exists


def put_worker(root: str, base: BaseSpec, paths: list[str], ready: Any, go: Any, out: Any) -> None:
    """Wait for the start signal, then put every path; report the versions assigned."""
    store = LocalStore(root, base)
    ready.set()
    go.wait(60)
    out.put([store.put(p).version for p in paths])
