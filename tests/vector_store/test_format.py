"""Format round trips, fingerprints and PEFT export."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from prefvec.errors import ValidationError
from prefvec.vector_store.fingerprint import (
    fingerprint_model_dir,
    fingerprint_state_dict,
    tensor_specs,
)
from prefvec.vector_store.format import (
    PreferenceVector,
    VectorMetadata,
    check_name,
    lora_keys,
    read_metadata,
)


def _meta(kind: str = "dense") -> VectorMetadata:
    return VectorMetadata(name="helpful", kind=kind, base_fingerprint="pvfp1:abc")  # type: ignore[arg-type]


def test_dense_round_trip_keeps_tensors_and_metadata(tmp_path: Path) -> None:
    vec = PreferenceVector(_meta(), {"w": torch.randn(3, 4), "b": torch.randn(4)})
    path = vec.save(tmp_path / "v.safetensors")
    back = PreferenceVector.load(path)
    assert back.metadata == vec.metadata
    assert read_metadata(path).name == "helpful"
    for k in vec.tensors:
        assert torch.equal(back.tensors[k], vec.tensors[k])


def test_save_is_atomic_and_readable_by_others(tmp_path: Path) -> None:
    import os
    import stat

    path = tmp_path / "v.safetensors"
    path.write_bytes(b"old file")
    old_umask = os.umask(0o022)
    try:
        PreferenceVector(_meta(), {"w": torch.ones(2, 2)}).save(path)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # umask honoured (not a 0600 temp file)
    assert [p.name for p in tmp_path.iterdir()] == ["v.safetensors"]  # no temporary left
    assert torch.equal(PreferenceVector.load(path).tensors["w"], torch.ones(2, 2))


def test_lowrank_factors_and_dense_view() -> None:
    a, b = torch.randn(2, 5), torch.randn(3, 2)
    vec = PreferenceVector.from_factors(_meta(), {"layer.q_proj": (a, b)})
    assert vec.kind == "lowrank" and vec.metadata.rank == 2
    assert set(vec.tensors) == set(lora_keys("layer.q_proj"))
    assert torch.allclose(vec.to_dense()["layer.q_proj.weight"], b @ a)


def test_fingerprint_from_headers_equals_state_dict(
    tiny_base_dir: Path, tiny_pos_dir: Path
) -> None:
    from safetensors.torch import load_file

    sd = load_file(str(tiny_base_dir / "model.safetensors"))
    assert fingerprint_model_dir(tiny_base_dir) == fingerprint_state_dict(sd)
    assert fingerprint_model_dir(tiny_base_dir) != fingerprint_model_dir(tiny_pos_dir)
    sd["model.norm.weight"] = sd["model.norm.weight"].to(torch.bfloat16)
    assert fingerprint_state_dict(sd) != fingerprint_model_dir(tiny_base_dir)  # dtype counts
    specs = tensor_specs(tiny_base_dir)
    assert specs["model.embed_tokens.weight"] == ((320, 32), "F32")


@pytest.mark.parametrize("bad", ["../x", "a/b", "/etc", "", ".hidden", "a" * 65, "a..b"])
def test_path_like_names_refused(bad: str) -> None:
    with pytest.raises(ValidationError, match="name"):
        check_name(bad)


def test_peft_export_loads_in_peft_and_equals_dense_delta(
    tiny_base_dir: Path, tmp_path: Path
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    module = "model.layers.0.self_attn.q_proj"
    a, b = torch.randn(3, 32) * 0.1, torch.randn(32, 3) * 0.1
    a2, b2 = torch.randn(5, 64) * 0.1, torch.randn(32, 5) * 0.1  # other rank -> rank_pattern
    vec = PreferenceVector.from_factors(
        _meta(), {module: (a, b), "model.layers.1.mlp.down_proj": (a2, b2)}
    )
    vec.export_peft(tmp_path / "adapter")
    base = AutoModelForCausalLM.from_pretrained(tiny_base_dir)
    w0 = base.get_parameter(module + ".weight").detach().clone()
    w1 = base.get_parameter("model.layers.1.mlp.down_proj.weight").detach().clone()
    merged = PeftModel.from_pretrained(base, tmp_path / "adapter").merge_and_unload()
    assert torch.allclose(merged.get_parameter(module + ".weight"), w0 + b @ a, atol=1e-6)
    got = merged.get_parameter("model.layers.1.mlp.down_proj.weight")
    assert torch.allclose(got, w1 + b2 @ a2, atol=1e-6)


@pytest.mark.parametrize("kind", ["dense", "lowrank"])
def test_scaled_vector_is_factor_times_the_delta(kind: str) -> None:
    a, b = torch.randn(2, 5), torch.randn(3, 2)
    if kind == "lowrank":
        vec = PreferenceVector.from_factors(_meta(), {"layer.q_proj": (a, b)})
    else:
        vec = PreferenceVector(_meta(), {"layer.q_proj.weight": b @ a})
    out = vec.scaled(1.5, note="unit")
    assert torch.allclose(out.to_dense()["layer.q_proj.weight"], 1.5 * (b @ a))
    assert out.metadata.extra["scaled"] == {"factor": 1.5, "total_factor": 1.5, "note": "unit"}
    assert torch.equal(vec.to_dense()["layer.q_proj.weight"], b @ a)  # the input is untouched
    twice = out.scaled(2.0)
    assert twice.metadata.extra["scaled"]["total_factor"] == 3.0
    assert torch.allclose(twice.to_dense()["layer.q_proj.weight"], 3.0 * (b @ a))


@pytest.mark.parametrize("bad", [0, float("nan"), float("inf")])
def test_scaled_refuses_a_factor_that_is_not_finite_and_non_zero(bad: float) -> None:
    vec = PreferenceVector(_meta(), {"w": torch.ones(2, 2)})
    with pytest.raises(ValidationError, match="factor"):
        vec.scaled(bad)
