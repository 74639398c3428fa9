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
