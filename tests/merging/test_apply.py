"""ModelMerger on the tiny Llama: merges reproduce fine-tunes, restores are bit-exact."""

from __future__ import annotations

import pytest
import torch

from prefvec.errors import ValidationError
from prefvec.merging import ModelMerger, merge_dense

EMBED = "model.embed_tokens.weight"


def _assert_params_equal(model: torch.nn.Module, expected: dict[str, torch.Tensor]) -> None:
    for name, p in model.named_parameters():
        assert torch.equal(p, expected[name]), name


def _assert_params_close(
    model: torch.nn.Module, expected: dict[str, torch.Tensor], atol: float = 1e-6
) -> None:
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), expected[name], rtol=0, atol=atol, msg=name)


def test_weight_one_reproduces_finetune(base_model, delta_pos, pos_params, base_params) -> None:
    merger = ModelMerger(base_model)
    merger.apply([(delta_pos, 1.0)], key="pos")
    assert merger.current_key == "pos"
    _assert_params_close(base_model, pos_params)
    assert not torch.equal(base_model.get_parameter(EMBED), base_params[EMBED])
    merger.restore()
    assert merger.current_key is None
    _assert_params_equal(base_model, base_params)


def test_tied_embedding_listed_once(base_model) -> None:
    merger = ModelMerger(base_model)
    assert EMBED in merger.param_names and "lm_head.weight" not in merger.param_names
    assert base_model.lm_head.weight is base_model.get_parameter(EMBED)


def test_opposite_weights_cancel(base_model, delta_pos, base_params) -> None:
    merger = ModelMerger(base_model)
    merger.apply([(delta_pos, 1.0), (delta_pos, -1.0)])
    _assert_params_close(base_model, base_params)
    # merged first, the cancellation is exact
    merger.apply_merged(merge_dense([delta_pos, delta_pos], [1.0, -1.0]))
    _assert_params_equal(base_model, base_params)


@pytest.mark.parametrize("method", ["linear", "ties", "dare_linear", "dare_ties", "magnitude"])
def test_merged_delta_applied_then_restored_exactly(
    method, base_model, delta_pos, delta_neg, base_params
) -> None:
    merged = merge_dense([delta_pos, delta_neg], [0.8, -0.6], method=method, density=0.5, seed=1)
    merger = ModelMerger(base_model)
    merger.apply_merged(merged)
    _assert_params_close(base_model, {n: base_params[n] + merged[n] for n in base_params})
    merger.restore()
    _assert_params_equal(base_model, base_params)


def test_cycles_never_drift(base_model, delta_pos, delta_neg, base_params) -> None:
    merger = ModelMerger(base_model)
    merger.apply([(delta_pos, 0.7), (delta_neg, -1.3)])
    first = {n: p.detach().clone() for n, p in base_model.named_parameters()}
    ptrs = {n: t.data_ptr() for n, t in merger._backup.items()}
    mixes = [[(delta_pos, 2.0)], [(delta_neg, -0.4)], [(delta_pos, 0.3), (delta_neg, 0.3)]]
    for i in range(12):
        merger.apply(mixes[i % 3])
        if i % 4 == 0:
            merger.restore()
    merger.apply([(delta_pos, 0.7), (delta_neg, -1.3)])
    _assert_params_equal(base_model, first)  # same merge, same bits, however we got here
    merger.restore()
    _assert_params_equal(base_model, base_params)
    assert {n: t.data_ptr() for n, t in merger._backup.items()} == ptrs  # backups reused


def test_bad_delta_lists_all_problems_and_leaves_model(base_model, delta_pos) -> None:
    merger = ModelMerger(base_model)
    merger.apply([(delta_pos, 0.5)])
    before = {n: p.detach().clone() for n, p in base_model.named_parameters()}
    bad = dict(delta_pos)
    bad["model.layers.9.mlp.up_proj.weight"] = torch.zeros(2, 2)
    bad["model.norm.weight"] = torch.zeros(7)
    with pytest.raises(ValidationError) as err:
        merger.apply([(bad, 1.0), (delta_pos, float("nan"))])
    msg = err.value.message
    assert "model.layers.9.mlp.up_proj.weight" in msg
    assert "(7,)" in msg and "(32,)" in msg
    assert "nan" in msg
    assert len(err.value.problems) == 3
    _assert_params_equal(base_model, before)


def test_tied_alias_maps_to_embedding(base_model, delta_pos, pos_params, base_params) -> None:
    merger = ModelMerger(base_model)
    aliased = {("lm_head.weight" if n == EMBED else n): t for n, t in delta_pos.items()}
    merger.apply([(aliased, 1.0)])
    _assert_params_close(base_model, pos_params)
    with pytest.raises(ValidationError, match="twice"):
        merger.apply([({**delta_pos, "lm_head.weight": delta_pos[EMBED]}, 1.0)])
    merger.restore()
    _assert_params_equal(base_model, base_params)


def test_snapshot_load_weights_roundtrip(base_model, delta_pos, delta_neg, base_params) -> None:
    merger = ModelMerger(base_model)
    sub = {n: t for n, t in delta_pos.items() if "layers.0" in n}
    merger.apply([(sub, 1.5), (delta_neg, 0.0)], key="a")
    merged = {n: p.detach().clone() for n, p in base_model.named_parameters()}
    snap = merger.snapshot()
    assert set(snap) == set(sub)  # only touched parameters (weight 0 touches nothing)
    merger.apply([(delta_neg, 1.0)], key="b")
    merger.load_weights(snap, key="a")
    assert merger.current_key == "a"
    _assert_params_equal(base_model, merged)
    merger.restore()
    _assert_params_equal(base_model, base_params)


def test_bf16_model_casts_once(tiny_base_dir, delta_pos) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_base_dir, dtype=torch.bfloat16)
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    merger = ModelMerger(model)
    cast = merger.cast(delta_pos)
    assert all(t.dtype == torch.bfloat16 for t in cast.values())
    assert merger.cast(delta_pos)[EMBED] is cast[EMBED]  # cached per source tensor
    merger.apply([(delta_pos, 1.0)])
    expected = base[EMBED] + cast[EMBED]
    assert torch.equal(model.get_parameter(EMBED), expected)
    merger.restore()
    _assert_params_equal(model, base)


def _oracle(base: dict[str, torch.Tensor], pairs, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Unfused reference: copy the base, then ``add_(δ, alpha=w)`` per vector, per tensor."""
    out = {n: t.to(dtype).clone() for n, t in base.items()}
    for delta, w in pairs:
        for n, t in delta.items():
            out[n].add_(t.to(dtype), alpha=w)
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_apply_bit_exact_vs_unfused_oracle(tiny_base_dir, delta_pos, delta_neg, dtype):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_base_dir, dtype=dtype)
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    merger = ModelMerger(model)
    layer0 = {n: t for n, t in delta_pos.items() if "layers.0" in n}
    layer1 = {n: t for n, t in delta_neg.items() if "layers.1" in n}
    # merge 1 touches every parameter; merge 2's first delta covers only layer 0 and its second
    # only layer 1: everything else dirty from merge 1 must be back at the base, bit-exact
    merger.apply([(delta_pos, 0.7), (delta_neg, -0.3), (delta_pos, 0.1)])
    _assert_params_equal(
        model, _oracle(base, [(delta_pos, 0.7), (delta_neg, -0.3), (delta_pos, 0.1)], dtype)
    )
    merger.apply([(layer0, 1.25), (layer1, -0.5)], key="k")
    _assert_params_equal(model, _oracle(base, [(layer0, 1.25), (layer1, -0.5)], dtype))
    assert merger.dirty == frozenset(layer0) | frozenset(layer1)
    merger.apply([(delta_neg, 0.0)])  # only weight 0: a plain restore
    assert not merger.dirty
    _assert_params_equal(model, base)


def test_load_weights_restores_params_it_does_not_cover(base_model, delta_pos, base_params):
    merger = ModelMerger(base_model)
    layer0 = {n: t for n, t in delta_pos.items() if "layers.0" in n}
    merger.apply([(layer0, 1.0)], key="a")
    snap_a = merger.snapshot()
    merged_a = {n: p.detach().clone() for n, p in base_model.named_parameters()}
    merger.apply([(delta_pos, -2.0)], key="b")  # touches every parameter
    merger.load_weights(snap_a, key="a")
    _assert_params_equal(base_model, merged_a)  # layer 0 merged, the rest at the base exactly
    assert merger.dirty == frozenset(layer0)
    for n, p in base_model.named_parameters():
        if n not in layer0:
            assert torch.equal(p, base_params[n]), n
    merger.restore()
    _assert_params_equal(base_model, base_params)


def test_snapshot_into_buffers(base_model, delta_pos) -> None:
    merger = ModelMerger(base_model)
    merger.apply([(delta_pos, 1.0)])
    first = merger.snapshot()
    merger.apply([(delta_pos, -1.0)])
    bad = torch.zeros(3)
    out = {**first, EMBED: bad}  # wrong shape: cloned instead
    snap = merger.snapshot(out=out)
    for n, t in snap.items():
        assert torch.equal(t, base_model.get_parameter(n)), n
        assert t.data_ptr() != base_model.get_parameter(n).data_ptr()
        if n != EMBED:
            assert t is first[n]  # buffer reused, no allocation
    assert snap[EMBED] is not bad and torch.equal(bad, torch.zeros(3))
    assert merger.dirty_nbytes == sum(t.numel() * t.element_size() for t in snap.values())
