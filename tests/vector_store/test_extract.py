"""Extraction oracles: contrast, positive-only, exact LoRA contrast, SVD compression error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from prefvec.errors import ValidationError
from prefvec.vector_store.extract import (
    compress_svd,
    contrast,
    contrast_lora,
    load_lora_factors,
    positive_only,
)
from prefvec.vector_store.format import PreferenceVector, VectorMetadata, lora_keys


def _state(d: Path) -> dict[str, torch.Tensor]:
    return load_file(str(d / "model.safetensors"))


def test_contrast_at_weight_one_is_base_plus_pos_minus_neg(
    tiny_base_dir: Path, tiny_pos_dir: Path, tiny_neg_dir: Path
) -> None:
    vec = contrast(tiny_pos_dir, tiny_neg_dir, name="harmless", base=tiny_base_dir)
    base, pos, neg = _state(tiny_base_dir), _state(tiny_pos_dir), _state(tiny_neg_dir)
    assert set(vec.tensors) == set(base)
    for k, b in base.items():
        assert torch.allclose(b + vec.tensors[k], b + pos[k] - neg[k], atol=1e-6)
    assert vec.metadata.method == "contrast"
    assert vec.metadata.base_fingerprint.startswith("pvfp1:")


def test_positive_only_reproduces_finetune(tiny_base_dir: Path, tiny_pos_dir: Path) -> None:
    vec = positive_only(tiny_pos_dir, tiny_base_dir, name="helpful")
    base, pos = _state(tiny_base_dir), _state(tiny_pos_dir)
    for k in base:
        assert torch.allclose(base[k] + vec.tensors[k], pos[k], atol=1e-6)
    assert vec.metadata.method == "positive_only"


def test_contrast_of_mismatched_checkpoints_names_the_tensor() -> None:
    with pytest.raises(ValidationError, match="'w'"):
        contrast({"w": torch.zeros(2, 2)}, {"w": torch.zeros(3, 2)}, name="x", base_fingerprint="f")


def _write_adapter(folder: Path, factors: dict, r: int, alpha: float, rslora: bool = False) -> Path:
    folder.mkdir(parents=True)
    tensors = {}
    for module, (a, b) in factors.items():
        ka, kb = lora_keys(module)
        tensors[ka], tensors[kb] = a, b
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    cfg = {"r": r, "lora_alpha": alpha, "use_rslora": rslora, "peft_type": "LORA"}
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    return folder


def test_lora_contrast_is_exact_and_has_rank_sum(tmp_path: Path) -> None:
    torch.manual_seed(0)
    m = "model.layers.0.mlp.up_proj"
    ap, bp = torch.randn(4, 6), torch.randn(5, 4)
    an, bn = torch.randn(2, 6), torch.randn(5, 2)
    pos = _write_adapter(tmp_path / "pos", {m: (ap, bp)}, r=4, alpha=8)  # scale 2
    neg = _write_adapter(tmp_path / "neg", {m: (an, bn)}, r=2, alpha=2, rslora=True)  # 2/sqrt2
    vec = contrast_lora(pos, neg, name="truthful", base_fingerprint="f")
    a, b = vec.factors()[m]
    assert a.shape == (6, 6) and b.shape == (5, 6)  # rank r+ + r-
    expected = 2.0 * bp @ ap - (2.0 / 2**0.5) * bn @ an
    assert torch.allclose(b @ a, expected, atol=1e-5)
    assert vec.metadata.rank == 6


def test_lora_factors_fold_peft_scaling(tmp_path: Path) -> None:
    m = "x.q_proj"
    a, b = torch.ones(2, 3), torch.ones(4, 2)
    folder = _write_adapter(tmp_path / "ad", {m: (a, b)}, r=2, alpha=16)
    fa, fb = load_lora_factors(folder)[m]
    assert torch.equal(fb, b * 8.0) and torch.equal(fa, a)


def _dense(tensors: dict[str, torch.Tensor]) -> PreferenceVector:
    meta = VectorMetadata(name="d", kind="dense", base_fingerprint="f")
    return PreferenceVector(meta, tensors)


def test_svd_error_is_what_it_reports() -> None:
    torch.manual_seed(0)
    dense = _dense(
        {
            "l.q_proj.weight": torch.randn(16, 12),
            "l.k_proj.weight": torch.randn(8, 12) @ torch.randn(12, 12),
            "norm.weight": torch.randn(12) * 0.1,  # not a matrix: dropped, counted as error
        }
    )
    low, report = compress_svd(dense, rank=3)
    approx = low.to_dense()
    num = sum(
        float(((t - approx.get(k, torch.zeros_like(t))) ** 2).sum())
        for k, t in dense.tensors.items()
    )
    den = sum(float((t**2).sum()) for t in dense.tensors.values())
    assert report.relative_error == pytest.approx((num / den) ** 0.5, rel=1e-4)
    assert report.dropped == ["norm.weight"]
    for k, info in report.per_tensor.items():
        t = dense.tensors[k]
        err = float(torch.linalg.norm(t - approx[k]) / torch.linalg.norm(t))
        assert info["rank"] == 3 and info["relative_error"] == pytest.approx(err, rel=1e-4)


def test_svd_energy_and_full_rank_is_exact() -> None:
    torch.manual_seed(1)
    t = torch.randn(10, 4) @ torch.randn(4, 9)  # rank 4
    low, report = compress_svd(_dense({"a.weight": t}), energy=1.0)
    assert report.per_tensor["a.weight"]["rank"] <= 5
    assert torch.allclose(low.to_dense()["a.weight"], t, atol=1e-4)
    _, half = compress_svd(_dense({"a.weight": t}), energy=0.5)
    assert half.per_tensor["a.weight"]["rank"] < 4 and half.kept_energy >= 0.5


@pytest.mark.parametrize("kwargs", [{}, {"rank": 0}, {"energy": 1.5}, {"rank": 2, "energy": 0.5}])
def test_svd_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(ValidationError):
        compress_svd(_dense({"a.weight": torch.ones(2, 2)}), **kwargs)
