"""Recipe adapters: one exact PEFT LoRA per linear recipe, and the byte-bounded adapter cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from prefvec.errors import QueueFullError, ValidationError
from prefvec.merging.adapters import (
    ALLOWED_MAX_LORA_RANKS,
    CONFIG_FILE,
    WEIGHTS_FILE,
    AdapterCache,
    LoraAdapter,
    allowed_lora_rank,
    default_adapter_root,
    recipe_adapter,
    zero_adapter,
)
from prefvec.merging.lowrank import lowrank_to_dense

from .conftest import load_fp32

LAYERS = (0, 1)


def _shapes(model: torch.nn.Module) -> dict[str, tuple[int, int]]:
    return {
        n: (m.in_features, m.out_features)
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and n.startswith("model.layers.")
    }


def _factors(
    shapes: dict[str, tuple[int, int]], suffixes: tuple[str, ...], rank: int, seed: int
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for module, (fan_in, fan_out) in sorted(shapes.items()):
        if module.endswith(suffixes):
            a = torch.randn(rank, fan_in, generator=gen) * 0.3
            b = torch.randn(fan_out, rank, generator=gen) * 0.3
            out[module] = (a, b)
    return out


@pytest.fixture(scope="module")
def shapes(tiny_base_dir: Path) -> dict[str, tuple[int, int]]:
    return _shapes(load_fp32(tiny_base_dir))


@pytest.fixture(scope="module")
def vec_qv(shapes: dict[str, tuple[int, int]]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Rank 2 on q_proj and v_proj."""
    return _factors(shapes, ("q_proj", "v_proj"), rank=2, seed=11)


@pytest.fixture(scope="module")
def vec_vd(shapes: dict[str, tuple[int, int]]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Rank 3 on v_proj and down_proj (q_proj only in the other vector, down_proj only here)."""
    return _factors(shapes, ("v_proj", "down_proj"), rank=3, seed=12)


def _dense_logits(base_dir: Path, deltas: dict[str, torch.Tensor], ids: torch.Tensor):  # type: ignore[no-untyped-def]
    model = load_fp32(base_dir)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, delta in deltas.items():
            params[name].add_(delta)
        return model(ids).logits


def _peft_logits(base_dir: Path, adapter_dir: Path, ids: torch.Tensor):  # type: ignore[no-untyped-def]
    from peft import PeftModel

    model = PeftModel.from_pretrained(load_fp32(base_dir), str(adapter_dir)).eval()
    with torch.no_grad():
        return model(ids).logits


IDS = torch.tensor([[5, 17, 42, 99, 3, 250, 7, 61]])


@pytest.mark.parametrize("rank", [None, 8])
def test_peft_loads_recipe_adapter_equal_to_dense_merge(
    tiny_base_dir: Path, vec_qv, vec_vd, rank, tmp_path: Path
) -> None:
    weights = [0.7, -1.3]  # a negative weight inverts a preference
    adapter = recipe_adapter([vec_qv, vec_vd], weights, rank=rank)
    folder = adapter.save(tmp_path / "adapter")
    dense: dict[str, torch.Tensor] = {}
    for factors, w in zip([vec_qv, vec_vd], weights, strict=True):
        for name, delta in lowrank_to_dense(factors).items():
            dense[name] = dense.get(name, 0) + w * delta
    expected = _dense_logits(tiny_base_dir, dense, IDS)
    got = _peft_logits(tiny_base_dir, folder, IDS)
    base = _dense_logits(tiny_base_dir, {}, IDS)
    assert (expected - base).abs().max() > 1e-2  # the recipe changes the output visibly
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_adapter_files_are_peft_format_with_scaling_one(vec_qv, tmp_path: Path) -> None:
    folder = recipe_adapter([vec_qv], [1.0]).save(tmp_path / "a")
    config = json.loads((folder / CONFIG_FILE).read_text())
    assert config["peft_type"] == "LORA"
    assert config["r"] == config["lora_alpha"] == 2
    assert config["target_modules"] == sorted(vec_qv)
    from safetensors.torch import load_file

    keys = set(load_file(str(folder / WEIGHTS_FILE)))
    assert "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" in keys
    assert len(keys) == 2 * len(vec_qv)


def test_modules_of_some_vectors_are_zero_padded(vec_qv, vec_vd) -> None:
    adapter = recipe_adapter([vec_qv, vec_vd], [2.0, 0.5])
    assert adapter.rank == 5
    q = "model.layers.0.self_attn.q_proj"  # only in vec_qv (rank 2)
    down = "model.layers.1.mlp.down_proj"  # only in vec_vd (rank 3)
    v = "model.layers.1.self_attn.v_proj"  # in both
    assert set(adapter.factors) == set(vec_qv) | set(vec_vd)
    for module in (q, down, v):
        a, b = adapter.factors[module]
        assert a.shape[0] == b.shape[1] == 5
    a, b = adapter.factors[q]
    assert torch.count_nonzero(a[2:]) == 0 and torch.count_nonzero(b[:, 2:]) == 0
    torch.testing.assert_close(b @ a, 2.0 * vec_qv[q][1] @ vec_qv[q][0])
    a, b = adapter.factors[down]
    torch.testing.assert_close(b @ a, 0.5 * vec_vd[down][1] @ vec_vd[down][0])
    a, b = adapter.factors[v]
    dense = 2.0 * vec_qv[v][1] @ vec_qv[v][0] + 0.5 * vec_vd[v][1] @ vec_vd[v][0]
    torch.testing.assert_close(b @ a, dense)


def test_rank_padding_adds_zero_rows_and_columns(vec_qv, vec_vd) -> None:
    plain = recipe_adapter([vec_qv, vec_vd], [1.0, -1.0])
    padded = recipe_adapter([vec_qv, vec_vd], [1.0, -1.0], rank=allowed_lora_rank(5))
    assert padded.rank == 8
    for module, (a, b) in padded.factors.items():
        assert a.shape[0] == 8 and b.shape[1] == 8
        assert torch.count_nonzero(a[5:]) == 0 and torch.count_nonzero(b[:, 5:]) == 0
        torch.testing.assert_close(b @ a, plain.to_dense()[module + ".weight"])
    with pytest.raises(ValidationError, match="below the recipe's concatenated rank 5"):
        recipe_adapter([vec_qv, vec_vd], [1.0, -1.0], rank=4)


def test_opposite_weights_of_one_vector_cancel(vec_qv) -> None:
    adapter = recipe_adapter([vec_qv, vec_qv], [1.5, -1.5])
    for delta in adapter.to_dense().values():
        assert delta.abs().max() < 1e-6


def test_all_zero_weights_are_refused(vec_qv) -> None:
    with pytest.raises(ValidationError, match="zero adapter"):
        recipe_adapter([vec_qv], [0.0])


def test_dtype_is_applied(vec_qv) -> None:
    adapter = recipe_adapter([vec_qv], [1.0], dtype=torch.bfloat16)
    assert {a.dtype for a, _ in adapter.factors.values()} == {torch.bfloat16}


def test_zero_adapter_serves_the_base_exactly(tiny_base_dir: Path, shapes, tmp_path: Path) -> None:
    folder = zero_adapter(shapes, rank=8).save(tmp_path / "zero")
    base = _dense_logits(tiny_base_dir, {}, IDS)
    assert torch.equal(_peft_logits(tiny_base_dir, folder, IDS), base)
    with pytest.raises(ValidationError, match="modules"):
        zero_adapter({})


def test_allowed_lora_rank() -> None:
    assert ALLOWED_MAX_LORA_RANKS == (1, 8, 16, 32, 64, 128, 256, 320, 512)
    assert [allowed_lora_rank(r) for r in (1, 2, 8, 9, 257, 320, 321, 512)] == [
        1,
        8,
        8,
        16,
        320,
        320,
        512,
        512,
    ]
    for bad in (0, 513):
        with pytest.raises(ValidationError, match=f"got {bad}"):
            allowed_lora_rank(bad)


# ------------------------------------------------------------------------------- the cache


def _adapter(seed: int, rank: int = 4) -> LoraAdapter:
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(rank, 16, generator=gen)
    b = torch.randn(16, rank, generator=gen)
    return LoraAdapter({"model.layers.0.mlp.up_proj": (a, b)}, rank)


def _size(adapter: LoraAdapter) -> int:
    return sum(map(len, adapter.files().values()))


def test_cache_writes_once_per_key_with_absolute_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    builds: list[str] = []

    def build(key: str):  # type: ignore[no-untyped-def]
        def _b() -> LoraAdapter:
            builds.append(key)
            return _adapter(len(builds))

        return _b

    cache = AdapterCache(Path("relative-root-is-resolved"), max_bytes=1 << 20)
    try:
        first = cache.get("linear(a@1=1)", build("linear(a@1=1)"))
        again = cache.get("linear(a@1=1)", build("linear(a@1=1)"))
        assert first is again and builds == ["linear(a@1=1)"]
        assert (cache.hits, cache.misses) == (1, 1)
        assert first.path.is_absolute() and (first.path / WEIGHTS_FILE).is_file()
        assert first.nbytes == sum(f.stat().st_size for f in first.path.iterdir())
        assert first.name == f"prefvec-{first.lora_int_id}" and first.lora_int_id >= 1
    finally:
        cache.clear(remove_root=True)


def test_cache_evicts_lru_before_writing_and_keeps_ids_stable(tmp_path: Path) -> None:
    size = _size(_adapter(0))
    events: list[tuple[str, int, int, int]] = []
    cache: AdapterCache

    def on_evict(key: str, lora_id: int) -> None:
        # called before the new adapter is written: the bound holds at every moment
        events.append((key, lora_id, cache.nbytes, len(list(cache.root.iterdir()))))

    cache = AdapterCache(tmp_path / "cache", max_bytes=2 * size + size // 2, on_evict=on_evict)
    ids = {k: cache.get(k, lambda: _adapter(1)).lora_int_id for k in ("a", "b")}
    cache.get("a", lambda: _adapter(1))  # a is now the most recently used
    c = cache.get("c", lambda: _adapter(2))  # evicts b, the least recently used
    assert [e[:2] for e in events] == [("b", ids["b"])]
    assert events[0][2:] == (size, 1)  # only a on disk: b gone, c not written yet
    assert cache.keys() == ["a", "c"] and cache.nbytes <= cache.max_bytes
    assert not any(p.name.startswith(f"{ids['b']:06d}-") for p in cache.root.iterdir())
    again = cache.get("b", lambda: _adapter(1))  # re-written, evicting a; same id as before
    assert again.lora_int_id == ids["b"] and c.lora_int_id not in ids.values()
    assert [e[0] for e in events] == ["b", "a"] and cache.evictions == 2
    assert cache.keys() == ["c", "b"]


def test_cache_never_evicts_an_adapter_in_use(tmp_path: Path) -> None:
    size = _size(_adapter(0))
    evicted: list[str] = []
    cache = AdapterCache(tmp_path, max_bytes=2 * size, on_evict=lambda k, i: evicted.append(k))
    with cache.lease("a", lambda: _adapter(1)), cache.lease("b", lambda: _adapter(2)):
        with pytest.raises(QueueFullError, match="full of adapters in use"):
            cache.get("c", lambda: _adapter(3))
        assert not cache.evict("a") and evicted == []
    entry = cache.acquire("c", lambda: _adapter(3))  # a is free again: it goes
    assert evicted == ["a"] and "c" in cache
    cache.release(entry)
    assert cache.evict_matching(lambda k: k in {"b", "c"}) == ["b", "c"]
    assert len(cache) == 0 and cache.nbytes == 0


def test_cache_bounds_the_number_of_adapters(tmp_path: Path) -> None:
    evicted: list[str] = []
    cache = AdapterCache(
        tmp_path, max_bytes=1 << 20, max_entries=2, on_evict=lambda k, i: evicted.append(k)
    )
    for key in ("a", "b", "c"):
        cache.get(key, lambda: _adapter(1))
    assert evicted == ["a"] and cache.keys() == ["b", "c"]
    with pytest.raises(ValidationError, match="max_entries"):
        AdapterCache(tmp_path, max_bytes=1, max_entries=0)


def test_cache_refuses_an_adapter_larger_than_the_bound(tmp_path: Path) -> None:
    cache = AdapterCache(tmp_path, max_bytes=100)
    with pytest.raises(ValidationError, match="more than the adapter cache's bound of 100 bytes"):
        cache.get("big", lambda: _adapter(1, rank=8))
    with pytest.raises(ValidationError, match="max_bytes"):
        AdapterCache(tmp_path, max_bytes=0)


def test_default_adapter_root_is_absolute_and_private(tmp_path: Path) -> None:
    root = default_adapter_root(tmp_path)
    try:
        assert root.is_absolute() and root.is_dir() and root.name.startswith("prefvec-adapters-")
        if Path("/dev/shm").is_dir():
            assert root.parent == Path("/dev/shm")
        other = default_adapter_root(tmp_path)
        assert other != root
        other.rmdir()
    finally:
        root.rmdir()
