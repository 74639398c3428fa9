"""Exact low-rank merging, and per-row LowRankMixer against the offline dense merge."""

from __future__ import annotations

import pytest
import torch

from prefvec.errors import NotFoundError, ValidationError
from prefvec.merging import (
    LowRankMixer,
    ModelMerger,
    lowrank_to_dense,
    merge_dense,
    merge_lowrank,
)

Factors = dict[str, tuple[torch.Tensor, torch.Tensor]]


def _truncate(delta: dict[str, torch.Tensor], rank: int, keep: str) -> Factors:
    """Rank-``rank`` SVD factors of the linear-layer deltas whose names contain ``keep``."""
    out: Factors = {}
    for name, d in delta.items():
        if d.dim() != 2 or "layers" not in name or keep not in name:
            continue
        u, s, vh = torch.linalg.svd(d, full_matrices=False)
        out[name.removesuffix(".weight")] = (vh[:rank].contiguous(), (u[:, :rank] * s[:rank]))
    return out


@pytest.fixture(scope="module")
def fac_a(delta_pos) -> Factors:
    return _truncate(delta_pos, 4, "")  # every linear layer


@pytest.fixture(scope="module")
def fac_b(delta_neg) -> Factors:
    return _truncate(delta_neg, 2, "proj")  # attention and MLP projections only (all here)


@pytest.fixture(scope="module")
def fac_c(delta_neg) -> Factors:
    return _truncate(delta_neg, 3, "self_attn")  # a vector targeting attention only


def test_merge_lowrank_equals_dense_merge(fac_a, fac_c) -> None:
    merged = merge_lowrank([fac_a, fac_c], [0.7, -1.3])
    dense = merge_dense([lowrank_to_dense(fac_a), lowrank_to_dense(fac_c)], [0.7, -1.3])
    got = lowrank_to_dense(merged)
    assert set(got) == set(dense)
    for name, t in dense.items():
        torch.testing.assert_close(got[name], t, rtol=0, atol=1e-6)
    attn = next(m for m in merged if "self_attn.q_proj" in m)
    mlp = next(m for m in merged if "mlp.up_proj" in m)
    assert merged[attn][0].shape[0] == 4 + 3 and merged[mlp][0].shape[0] == 4  # ranks add up
    # A is concatenated untouched, the weight lands on B only
    assert torch.equal(merged[attn][0][:4], fac_a[attn][0])
    torch.testing.assert_close(merged[attn][1][:, 4:], -1.3 * fac_c[attn][1], rtol=0, atol=0)


def test_merge_lowrank_zero_weight_and_errors(fac_a, fac_c) -> None:
    merged = merge_lowrank([fac_a, fac_c], [1.0, 0.0])
    assert all(a.shape[0] == 4 for a, _ in merged.values())
    with pytest.raises(ValidationError, match="inf"):
        merge_lowrank([fac_a, fac_c], [1.0, float("inf")])
    module = next(iter(fac_a))
    a, b = fac_a[module]
    with pytest.raises(ValidationError, match=r"rank of A \(4, "):
        merge_lowrank([{module: (a, b[:, :3])}], [1.0])


def _tokens(seed: int, rows: int, length: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(3, 259, (rows, length), generator=gen)


BATCH = [{"a": 1.0, "c": -0.5}, {}, {"a": -0.7, "b": 1.2, "c": 0.0}]


def _dense_for(row: dict[str, float], dense: dict[str, dict[str, torch.Tensor]]):
    return [(dense[ref], w) for ref, w in row.items()]


def test_mixer_rows_match_dense_merges(base_model, fac_a, fac_b, fac_c) -> None:
    ids = _tokens(0, 3, 12)
    with torch.no_grad():
        base_logits = base_model(ids).logits
    mixer = LowRankMixer(base_model)
    for ref, fac in (("a", fac_a), ("b", fac_b), ("c", fac_c)):
        mixer.add_vector(ref, fac)
    with torch.no_grad(), mixer.mixing(BATCH):
        mixed = base_model(ids).logits  # (3, 12, vocab)
    assert torch.equal(mixed[1], base_logits[1])  # all-zero row: bit-identical to the base
    dense = {
        "a": lowrank_to_dense(fac_a),
        "b": lowrank_to_dense(fac_b),
        "c": lowrank_to_dense(fac_c),
    }
    merger = ModelMerger(base_model)
    for r, row in enumerate(BATCH):
        merger.apply(_dense_for(row, dense))
        with torch.no_grad():
            ref_logits = base_model(ids[r : r + 1]).logits[0]
        torch.testing.assert_close(mixed[r], ref_logits, rtol=0, atol=1e-5)
        if row:
            assert not torch.allclose(mixed[r], base_logits[r], atol=1e-3)  # mixing did act
    merger.restore()
    with torch.no_grad():  # outside the context the hooks do nothing
        assert torch.equal(base_model(ids).logits, base_logits)


def test_mixer_generate_matches_offline_merge(base_model, fac_a, fac_c) -> None:
    ids = _tokens(1, 3, 6)
    rows = [{"a": 4.0}, {"a": -3.0, "c": 4.0}, {}]
    mixer = LowRankMixer(base_model)
    mixer.add_vector("a", fac_a)
    mixer.add_vector("c", fac_c)
    kw = dict(max_new_tokens=10, do_sample=False, attention_mask=torch.ones_like(ids))
    with torch.no_grad(), mixer.mixing(rows):
        mixed = base_model.generate(ids, **kw)
    mixer.close()
    with torch.no_grad():
        plain = base_model.generate(ids, **kw)
    assert torch.equal(mixed[2], plain[2])  # the base row
    assert not torch.equal(mixed[0], plain[0]) and not torch.equal(mixed[1], plain[1])
    merger = ModelMerger(base_model)
    dense = {"a": lowrank_to_dense(fac_a), "c": lowrank_to_dense(fac_c)}
    for r, row in enumerate(rows):
        merger.apply(_dense_for(row, dense))
        one = ids[r : r + 1]
        with torch.no_grad():
            offline = base_model.generate(one, **{**kw, "attention_mask": torch.ones_like(one)})
        assert torch.equal(mixed[r], offline[0]), r
    merger.restore()


def test_mixer_registry_and_errors(base_model, fac_a, fac_c) -> None:
    ids = _tokens(2, 2, 5)
    mixer = LowRankMixer(base_model)
    mixer.add_vector("a@1", fac_a)
    assert mixer.has("a@1") and not mixer.has("c@1")
    with pytest.raises(NotFoundError, match="'nope@2'"), mixer.mixing([{"nope@2": 1.0}]):
        pass
    with pytest.raises(ValidationError, match="nan"), mixer.mixing([{"a@1": float("nan")}]):
        pass
    with pytest.raises(ValidationError, match="batch of 2"), mixer.mixing([{"a@1": 1.0}]):
        base_model(ids)
    module = next(iter(fac_a))
    a, b = fac_a[module]
    with pytest.raises(ValidationError) as err:
        mixer.add_vector("bad", {"model.nothing": (a, b), module: (a[:, :5], b)})
    assert "'model.nothing'" in err.value.message and "(5, " in err.value.message
    assert not mixer.has("bad")
    with torch.no_grad():
        base = base_model(ids).logits
    mixer.add_vector("c@1", fac_c)
    mixer.remove_vector("a@1")
    with pytest.raises(NotFoundError):
        mixer.remove_vector("a@1")
    with torch.no_grad(), mixer.mixing([{"c@1": 1.0}, {"c@1": 0.0}]):
        out = base_model(ids).logits
    assert not torch.allclose(out[0], base[0], atol=1e-3) and torch.equal(out[1], base[1])
    mixer.close()
    assert not any(m._forward_hooks for m in base_model.modules())
