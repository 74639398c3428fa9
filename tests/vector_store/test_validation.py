"""Validation of uploaded vector files: every bad-file kind refused with a message naming it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from prefvec.errors import FingerprintMismatchError, PayloadTooLargeError, ValidationError
from prefvec.vector_store import (
    BaseSpec,
    LocalStore,
    PreferenceVector,
    validate_vector_file,
)

from ._helpers import assert_consistent, dense_vector, lowrank_vector, snapshot

Q = "model.layers.0.self_attn.q_proj"
QW = Q + ".weight"
QA, QB = f"base_model.model.{Q}.lora_A.weight", f"base_model.model.{Q}.lora_B.weight"
OTHER_FP = "pvfp1:" + "0" * 40


@pytest.fixture(scope="module")
def base(tiny_base_dir: Path) -> BaseSpec:
    return BaseSpec.from_model_dir(tiny_base_dir)


@pytest.fixture(scope="module")
def dense(base: BaseSpec, tiny_pos_dir: Path, tiny_neg_dir: Path) -> PreferenceVector:
    return dense_vector(base, tiny_pos_dir, tiny_neg_dir)


@pytest.fixture(scope="module")
def low(base: BaseSpec) -> PreferenceVector:
    return lowrank_vector(base)


def write(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any] | None) -> Path:
    """A safetensors file with arbitrary tensors and (possibly invalid) prefvec metadata."""
    header = {"prefvec": json.dumps(meta)} if meta is not None else None
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=header)
    return path


def meta_of(vec: PreferenceVector, **changes: Any) -> dict[str, Any]:
    return {**json.loads(vec.metadata.model_dump_json()), **changes}


# ----------------------------------------------------------------------------- BaseSpec


def test_base_spec(base: BaseSpec, tiny_base_dir: Path) -> None:
    from safetensors.torch import load_file

    sd = load_file(str(next(tiny_base_dir.glob("*.safetensors"))))
    assert BaseSpec.from_state_dict(sd).fingerprint == base.fingerprint
    assert base.tensors[QW] == ((32, 32), "F32")
    lin = base.linear_modules()
    assert lin[Q] == (32, 32) and lin["model.layers.1.mlp.down_proj"] == (32, 64)
    assert lin["model.layers.0.self_attn.k_proj"] == (16, 32)
    assert not any("norm" in m for m in lin)  # 1-D weights are not linear modules


# ----------------------------------------------------------------------------- bad files

Builder = Callable[[Path, PreferenceVector, PreferenceVector, BaseSpec], Path]


def _garbage(p: Path, d: PreferenceVector, lo: PreferenceVector, b: BaseSpec) -> Path:
    p.write_bytes(b"this is not a safetensors file, just text. " * 50)
    return p


def _garbage_binary(p: Path, d: PreferenceVector, lo: PreferenceVector, b: BaseSpec) -> Path:
    p.write_bytes(bytes(range(256)) * 16)
    return p


def _truncated(p: Path, d: PreferenceVector, lo: PreferenceVector, b: BaseSpec) -> Path:
    data = lo.save(p).read_bytes()
    p.write_bytes(data[:-100])
    return p


def _truncated_header(p: Path, d: PreferenceVector, lo: PreferenceVector, b: BaseSpec) -> Path:
    data = lo.save(p).read_bytes()
    p.write_bytes(data[:60])
    return p


def _wrong_fp(p: Path, d: PreferenceVector, lo: PreferenceVector, b: BaseSpec) -> Path:
    return write(p, lo.tensors, meta_of(lo, base_fingerprint=OTHER_FP))


def _unknown_name(p: Path, d: PreferenceVector, lo: PreferenceVector, b: BaseSpec) -> Path:
    return write(
        p, {**d.tensors, "model.layers.9.mlp.up_proj.weight": torch.zeros(64, 32)}, meta_of(d)
    )


def _wrong_shape(p: Path, d: PreferenceVector, lo: PreferenceVector, b: BaseSpec) -> Path:
    return write(p, {**d.tensors, QW: torch.zeros(32, 31)}, meta_of(d))


def _int_dtype(p: Path, d: PreferenceVector, lo: PreferenceVector, b: BaseSpec) -> Path:
    return write(p, {**d.tensors, QW: torch.zeros(32, 32, dtype=torch.int64)}, meta_of(d))


def _bool_dtype(p: Path, d: PreferenceVector, lo: PreferenceVector, b: BaseSpec) -> Path:
    return write(p, {**d.tensors, QW: torch.zeros(32, 32, dtype=torch.bool)}, meta_of(d))


def _nonfinite(p: Path, d: PreferenceVector, lo: PreferenceVector, b: BaseSpec) -> Path:
    t = d.tensors[QW].clone()
    t[0, 0], t[1, 1], t[2, 2] = float("nan"), float("nan"), float("-inf")
    return write(p, {**d.tensors, QW: t}, meta_of(d))


def _name(bad: str) -> Builder:
    def build(p: Path, d: PreferenceVector, lo: PreferenceVector, b: BaseSpec) -> Path:
        return write(p, lo.tensors, meta_of(lo, name=bad))

    return build


def _lora_wrong_in(p: Path, d: PreferenceVector, lo: PreferenceVector, b: BaseSpec) -> Path:
    return write(p, {**lo.tensors, QA: torch.zeros(2, 31)}, meta_of(lo))


def _lora_wrong_out(p: Path, d: PreferenceVector, lo: PreferenceVector, b: BaseSpec) -> Path:
    return write(p, {**lo.tensors, QB: torch.zeros(30, 2)}, meta_of(lo))


def _lora_missing_b(p: Path, d: PreferenceVector, lo: PreferenceVector, b: BaseSpec) -> Path:
    return write(p, {k: v for k, v in lo.tensors.items() if k != QB}, meta_of(lo))


def _lora_rank_mismatch(p: Path, d: PreferenceVector, lo: PreferenceVector, b: BaseSpec) -> Path:
    return write(p, {**lo.tensors, QB: torch.zeros(32, 3)}, meta_of(lo))


def _lora_unknown_module(p: Path, d: PreferenceVector, lo: PreferenceVector, b: BaseSpec) -> Path:
    m = "base_model.model.model.layers.0.mlp.nope"
    extra = {m + ".lora_A.weight": torch.zeros(2, 32), m + ".lora_B.weight": torch.zeros(32, 2)}
    return write(p, {**lo.tensors, **extra}, meta_of(lo))


def _no_tensors(p: Path, d: PreferenceVector, lo: PreferenceVector, b: BaseSpec) -> Path:
    return write(p, {}, meta_of(lo))


def _no_metadata(p: Path, d: PreferenceVector, lo: PreferenceVector, b: BaseSpec) -> Path:
    return write(p, lo.tensors, None)


def _kind_mismatch(p: Path, d: PreferenceVector, lo: PreferenceVector, b: BaseSpec) -> Path:
    return write(p, lo.tensors, meta_of(lo, kind="dense"))


BAD_FILES: list[tuple[str, Builder, type[Exception], list[str]]] = [
    ("garbage", _garbage, ValidationError, ["not a safetensors file"]),
    ("garbage-binary", _garbage_binary, ValidationError, ["not a safetensors file", "implausible"]),
    ("truncated", _truncated, ValidationError, ["truncated file", "only"]),
    ("truncated-header", _truncated_header, ValidationError, ["truncated file"]),
    (
        "fingerprint",
        _wrong_fp,
        FingerprintMismatchError,
        ["wrong base fingerprint", "expected pvfp1:", f"got {OTHER_FP}"],
    ),
    (
        "unknown-name",
        _unknown_name,
        ValidationError,
        ["unknown tensor name 'model.layers.9.mlp.up_proj.weight'"],
    ),
    (
        "shape",
        _wrong_shape,
        ValidationError,
        [f"tensor '{QW}' has wrong shape [32, 31], expected [32, 32]"],
    ),
    ("int64", _int_dtype, ValidationError, [f"tensor '{QW}' has dtype I64", "F32, F16, BF16"]),
    ("bool", _bool_dtype, ValidationError, [f"tensor '{QW}' has dtype BOOL"]),
    (
        "nan-inf",
        _nonfinite,
        ValidationError,
        [f"tensor '{QW}' has 3 non-finite values (2 NaN, 1 Inf)"],
    ),
    ("name-dotdot", _name("../x"), ValidationError, ["`metadata.name`", "'../x'"]),
    ("name-slash", _name("a/b"), ValidationError, ["`metadata.name`", "'a/b'"]),
    ("name-abs", _name("/etc/passwd"), ValidationError, ["`metadata.name`", "'/etc/passwd'"]),
    (
        "lora-in",
        _lora_wrong_in,
        ValidationError,
        [f"'{Q}': lora_A has wrong shape [2, 31], expected [r, 32]"],
    ),
    (
        "lora-out",
        _lora_wrong_out,
        ValidationError,
        [f"'{Q}': lora_B has wrong shape [30, 2], expected [32, r]"],
    ),
    (
        "lora-missing-b",
        _lora_missing_b,
        ValidationError,
        [f"module '{Q}' has lora_A but no lora_B"],
    ),
    ("lora-rank", _lora_rank_mismatch, ValidationError, [f"'{Q}': rank mismatch", "r=2", "r=3"]),
    (
        "lora-module",
        _lora_unknown_module,
        ValidationError,
        ["unknown module 'model.layers.0.mlp.nope'"],
    ),
    ("no-tensors", _no_tensors, ValidationError, ["no tensors"]),
    ("no-metadata", _no_metadata, ValidationError, ["no vector name"]),
    ("kind-mismatch", _kind_mismatch, ValidationError, ["`metadata.kind` is 'dense'", "'lowrank'"]),
]


@pytest.mark.parametrize(
    ("case", "build", "cls", "needles"), BAD_FILES, ids=[c[0] for c in BAD_FILES]
)
def test_bad_file_refused_with_message(
    case: str,
    build: Builder,
    cls: type[Exception],
    needles: list[str],
    tmp_path: Path,
    base: BaseSpec,
    dense: PreferenceVector,
    low: PreferenceVector,
) -> None:
    store = LocalStore(tmp_path / "store", base)
    store.put(low)
    before = snapshot(store)
    path = build(tmp_path / "bad.safetensors", dense, low, base)
    with pytest.raises(cls) as info:
        store.put(path)
    err = info.value
    assert type(err) is cls
    for needle in needles:
        assert needle in err.message, (needle, err.message)
    assert "'bad.safetensors'" in err.message
    assert all(p in err.message for p in err.problems)
    assert snapshot(store) == before
    assert_consistent(store)


def test_oversize_refused_before_parsing(
    tmp_path: Path, base: BaseSpec, low: PreferenceVector
) -> None:
    path = low.save(tmp_path / "v.safetensors")
    size = path.stat().st_size
    path.write_bytes(b"\xff" * size)  # garbage: a parser would complain about it, not the size
    with pytest.raises(
        PayloadTooLargeError, match=rf"{size} bytes exceeds the bound of {size - 1}"
    ) as info:
        validate_vector_file(path, base, max_bytes=size - 1)
    assert info.value.problems == [info.value.message]
    store = LocalStore(tmp_path / "s", base, max_vector_bytes=size - 1)
    with pytest.raises(PayloadTooLargeError, match="exceeds the bound"):
        store.put(path)
    assert_consistent(store)
    assert store.list() == []


def test_several_problems_reported_at_once(
    tmp_path: Path, base: BaseSpec, dense: PreferenceVector
) -> None:
    t = dict(dense.tensors)
    t[QW] = torch.full((32, 32), float("nan"))
    t["model.norm.weight"] = torch.zeros(31)
    t["model.layers.0.mlp.up_proj.weight"] = torch.zeros(64, 32, dtype=torch.int64)
    t["lm_head.extra"] = torch.zeros(2)
    path = write(tmp_path / "multi.safetensors", t, meta_of(dense, base_fingerprint=OTHER_FP))
    with pytest.raises(FingerprintMismatchError) as info:
        validate_vector_file(path, base)
    msg, problems = info.value.message, info.value.problems
    assert "5 problems" in msg and len(problems) == 5
    for needle in ("1024 non-finite", "'model.norm.weight' has wrong shape [31]", "dtype I64",
                   "unknown tensor name 'lm_head.extra'", "wrong base fingerprint"):  # fmt: skip
        assert sum(needle in p for p in problems) == 1, needle
        assert needle in msg


# ----------------------------------------------------------------------------- accepted files


def test_headerless_peft_file_accepted_with_name(
    tmp_path: Path, base: BaseSpec, low: PreferenceVector
) -> None:
    path = write(tmp_path / "adapter_model.safetensors", low.tensors, None)
    store = LocalStore(tmp_path / "s", base)
    rec = store.put(path, metadata={"name": "peft-import", "method": "other"})
    assert (rec.kind, rec.metadata.rank, rec.metadata.method) == ("lowrank", 2, "other")
    assert rec.metadata.base_fingerprint == base.fingerprint  # filled from the base
    got = store.get("peft-import")
    assert all(torch.equal(got.tensors[k], low.tensors[k]) for k in low.tensors)


def test_headerless_dense_and_override(
    tmp_path: Path, base: BaseSpec, dense: PreferenceVector
) -> None:
    path = write(tmp_path / "d.safetensors", dense.tensors, None)
    vec = validate_vector_file(path, base, metadata_override={"name": "renamed"})
    assert (vec.name, vec.kind, vec.metadata.base_fingerprint) == (
        "renamed",
        "dense",
        base.fingerprint,
    )
    assert all(torch.equal(vec.tensors[k], dense.tensors[k]) for k in dense.tensors)
    assert (
        validate_vector_file(path, base, metadata_override={"name": "x"}, load=False).tensors == {}
    )
    with pytest.raises(ValidationError, match=r"`metadata\.name`.*'\.\./up'"):
        validate_vector_file(path, base, metadata_override={"name": "../up"})


def test_half_precision_deltas_accepted(
    tmp_path: Path, base: BaseSpec, dense: PreferenceVector
) -> None:
    t = {
        k: v.to(torch.float16 if i % 2 else torch.bfloat16)
        for i, (k, v) in enumerate(dense.tensors.items())
    }
    path = write(tmp_path / "h.safetensors", t, meta_of(dense))
    vec = validate_vector_file(path, base)
    assert {v.dtype for v in vec.tensors.values()} == {torch.float16, torch.bfloat16}


def test_without_base(tmp_path: Path, low: PreferenceVector) -> None:
    path = write(
        tmp_path / "v.safetensors",
        {**low.tensors, QA: torch.zeros(2, 99), QB: torch.zeros(99, 2)},
        None,
    )
    with pytest.raises(ValidationError, match="base_fingerprint` is missing"):
        validate_vector_file(path, None, metadata_override={"name": "x"})
    vec = validate_vector_file(
        path, None, metadata_override={"name": "x", "base_fingerprint": OTHER_FP}
    )
    assert vec.kind == "lowrank"  # no base: names and shapes are not checked, only structure
