"""Validation of uploaded preference-vector files, and of ``name@version`` references.

:func:`validate_vector_file` reads the safetensors header itself (so a garbage or truncated file
gets a precise message, not a parser's), checks it against the base, then scans the values for
NaN/Inf one tensor at a time. Every problem of one file is gathered and raised once, as one
:class:`~prefvec.errors.ValidationError` whose ``problems`` lists them all.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydantic
import torch

from prefvec.errors import (
    FingerprintMismatchError,
    PayloadTooLargeError,
    ValidationError,
)
from prefvec.vector_store.base_spec import BaseSpec, TensorSpec
from prefvec.vector_store.format import (
    METADATA_KEY,
    PreferenceVector,
    VectorKind,
    VectorMetadata,
    check_name,
    module_of_key,
)

ALLOWED_DTYPES = ("F32", "F16", "BF16")
MAX_HEADER_BYTES = 100 * 1024 * 1024  # the safetensors format's own bound
MAX_PROBLEMS = 50  # problems listed in one message; the rest are counted
DTYPE_BYTES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1,
    "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1,
}  # fmt: skip
_VERSION_RE = re.compile(r"^[1-9][0-9]{0,17}$")


# ----------------------------------------------------------------------------- references


def parse_ref(ref: str, field_name: str = "ref") -> tuple[str, int | None]:
    """Split ``"name"``, ``"name@latest"`` or ``"name@3"`` into ``(name, version or None)``.

    Raises:
        ValidationError: for a malformed reference (``"a@x"``, ``"a@0"``, ``"../b"``, ...).
    """
    if not isinstance(ref, str) or ref.count("@") > 1:
        raise ValidationError(
            f"`{field_name}` must be 'name', 'name@latest' or 'name@<version>', got {ref!r}",
            field=field_name,
        )
    name, _, ver = ref.partition("@")
    check_name(name, field_name)
    if not _ or ver == "latest":
        return name, None
    if not _VERSION_RE.match(ver):
        raise ValidationError(
            f"`{field_name}` version must be a positive integer or 'latest', got {ref!r}",
            field=field_name,
        )
    return name, int(ver)


def format_ref(name: str, version: int | None) -> str:
    """``name@version`` (or ``name`` for the latest)."""
    return f"{name}@{version}" if version else name


# ----------------------------------------------------------------------------- header


@dataclass
class _Header:
    """What the safetensors header of a file says."""

    metadata: dict[str, str] = field(default_factory=dict)
    tensors: dict[str, TensorSpec] = field(default_factory=dict)
    readable: bool = True  # False when the tensor data cannot be read (truncated, bad layout)


def _read_header(path: Path, size: int, problems: list[str]) -> _Header | None:
    """Parse the header of ``path``; None when the file is not safetensors at all."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            problems.append(f"not a safetensors file: only {size} bytes (the format needs >= 8)")
            return None
        n = int.from_bytes(head, "little")
        if n > MAX_HEADER_BYTES:
            problems.append(f"not a safetensors file: header length {n} is implausible")
            return None
        raw = f.read(n)
    if n > size - 8:
        if raw[:1] == b"{":
            problems.append(
                f"truncated file: the header declares {n} header bytes but only {size - 8} follow"
            )
        else:
            problems.append(f"not a safetensors file: header length {n} exceeds file size {size}")
        return None
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        problems.append(f"not a safetensors file: the header is not valid JSON ({e})")
        return None
    if not isinstance(obj, dict):
        problems.append("not a safetensors file: the header is not a JSON object")
        return None
    return _parse_entries(obj, size - 8 - n, problems)


def _parse_entries(obj: dict[str, Any], available: int, problems: list[str]) -> _Header:
    header = _Header()
    meta = obj.pop("__metadata__", None) or {}
    if isinstance(meta, dict):
        header.metadata = {str(k): str(v) for k, v in meta.items()}
    else:
        problems.append("`__metadata__` of the header must be a JSON object of strings")
    data_end = 0
    for name, entry in obj.items():
        spec = _parse_entry(name, entry, problems)
        if spec is None:
            header.readable = False
            continue
        shape, dtype, end = spec
        header.tensors[name] = (shape, dtype)
        data_end = max(data_end, end)
    if available < data_end:
        problems.append(
            f"truncated file: the tensors need {data_end} data bytes but only {available} "
            "are present"
        )
        header.readable = False
    elif available > data_end:
        problems.append(f"malformed safetensors file: {available - data_end} trailing bytes")
        header.readable = False
    return header


def _parse_entry(
    name: str, entry: Any, problems: list[str]
) -> tuple[tuple[int, ...], str, int] | None:
    """``(shape, dtype, data end)`` of one header entry, or None (problem recorded)."""
    try:
        dtype = str(entry["dtype"])
        shape = tuple(int(d) for d in entry["shape"])
        begin, end = (int(x) for x in entry["data_offsets"])
        if any(d < 0 for d in shape) or begin < 0 or end < begin:
            raise ValueError("negative size or offset")
    except (KeyError, TypeError, ValueError) as e:
        problems.append(f"malformed header entry for tensor {name!r}: {e}")
        return None
    if dtype in DTYPE_BYTES and math.prod(shape) * DTYPE_BYTES[dtype] != end - begin:
        problems.append(
            f"malformed header entry for tensor {name!r}: shape {list(shape)} of {dtype} needs "
            f"{math.prod(shape) * DTYPE_BYTES[dtype]} bytes, offsets give {end - begin}"
        )
        return None
    return shape, dtype, end


# ----------------------------------------------------------------------------- structure


def infer_kind(keys: list[str]) -> VectorKind:
    """``'lowrank'`` when every key is a PEFT LoRA factor key, else ``'dense'``."""
    return "lowrank" if keys and all(module_of_key(k) for k in keys) else "dense"


def _check_dtypes(tensors: Mapping[str, TensorSpec], problems: list[str]) -> None:
    for name, (_shape, dtype) in tensors.items():
        if dtype not in ALLOWED_DTYPES:
            problems.append(
                f"tensor {name!r} has dtype {dtype}; only {', '.join(ALLOWED_DTYPES)} deltas "
                "are allowed"
            )


def _check_dense(
    tensors: Mapping[str, TensorSpec], base: BaseSpec | None, problems: list[str]
) -> None:
    lora = [k for k in tensors if module_of_key(k)]
    if base is None:
        if lora:
            problems.append(f"dense vector mixes in LoRA factor keys, e.g. {lora[0]!r}")
        return
    for name, (shape, _dtype) in tensors.items():
        if name not in base.tensors:
            problems.append(f"unknown tensor name {name!r}: not a parameter of the base")
        elif tuple(shape) != tuple(base.tensors[name][0]):
            problems.append(
                f"tensor {name!r} has wrong shape {list(shape)}, expected "
                f"{list(base.tensors[name][0])}"
            )


def _check_lowrank(
    tensors: Mapping[str, TensorSpec], base: BaseSpec | None, problems: list[str]
) -> int | None:
    """Check the A/B factor pairs; returns the max rank (None if no valid pair)."""
    pairs: dict[str, dict[str, tuple[int, ...]]] = {}
    for key, (shape, _dtype) in tensors.items():
        module, which = module_of_key(key) or ("", "")
        pairs.setdefault(module, {})[which] = tuple(shape)
    linear = base.linear_modules() if base is not None else {}
    ranks = [
        _check_pair(m, ab, linear.get(m), base is not None, problems) for m, ab in pairs.items()
    ]
    valid = [r for r in ranks if r]
    return max(valid) if valid else None


def _check_pair(
    module: str,
    ab: dict[str, tuple[int, ...]],
    dims: tuple[int, int] | None,
    has_base: bool,
    problems: list[str],
) -> int | None:
    """Check one module's ``A (r, in)`` and ``B (out, r)``; returns r when they are consistent."""
    if has_base and dims is None:
        problems.append(f"unknown module {module!r}: not a 2-D weight of the base")
        return None
    for which, other in (("A", "B"), ("B", "A")):
        if which in ab and other not in ab:
            problems.append(f"module {module!r} has lora_{which} but no lora_{other}")
            return None
    a, b = ab["A"], ab["B"]
    if len(a) != 2 or len(b) != 2:
        problems.append(
            f"module {module!r}: lora_A and lora_B must be 2-D, got {list(a)} and {list(b)}"
        )
        return None
    ok = a[0] == b[1] and a[0] > 0
    if not ok:
        problems.append(
            f"module {module!r}: rank mismatch, lora_A {list(a)} is (r={a[0]}, in) but "
            f"lora_B {list(b)} is (out, r={b[1]})"
        )
    if dims is not None:
        out_f, in_f = dims
        if a[1] != in_f:
            problems.append(
                f"module {module!r}: lora_A has wrong shape {list(a)}, expected [r, {in_f}]"
            )
            ok = False
        if b[0] != out_f:
            problems.append(
                f"module {module!r}: lora_B has wrong shape {list(b)}, expected [{out_f}, r]"
            )
            ok = False
    return a[0] if ok else None


# ----------------------------------------------------------------------------- metadata


def _resolve_metadata(
    header: _Header,
    base: BaseSpec | None,
    override: Mapping[str, Any] | None,
    rank: int | None,
    problems: list[str],
) -> tuple[VectorMetadata | None, bool]:
    """Merge header metadata and ``override``; returns (metadata or None, fingerprint wrong)."""
    data: dict[str, Any] = {}
    raw = header.metadata.get(METADATA_KEY)
    if raw is not None:
        try:
            loaded = json.loads(raw)
            data = loaded if isinstance(loaded, dict) else {}
        except json.JSONDecodeError as e:
            problems.append(f"`__metadata__.{METADATA_KEY}` is not valid JSON ({e})")
    data.update(override or {})
    _check_meta_name(data, problems)
    _check_meta_kind(data, list(header.tensors), problems)
    fp_bad = _check_meta_fingerprint(data, base, problems)
    if data.get("kind") == "lowrank" and rank is not None:
        data["rank"] = rank
    try:
        return VectorMetadata.model_validate(data), fp_bad
    except pydantic.ValidationError as e:
        for err in e.errors():
            loc = ".".join(str(p) for p in err["loc"])
            problems.append(f"`metadata.{loc}` {err['msg']}, got {err.get('input')!r}")
        return None, fp_bad


def _check_meta_name(data: dict[str, Any], problems: list[str]) -> None:
    name = data.get("name")
    if not name:
        problems.append(
            "no vector name: the file has no 'prefvec' header metadata with a name and no "
            "`metadata.name` was given"
        )
    else:
        try:
            check_name(name, "metadata.name")
            return
        except ValidationError as e:
            problems.append(e.message)
    data["name"] = "invalid"  # reported once above; keep the model check from repeating it


def _check_meta_kind(data: dict[str, Any], keys: list[str], problems: list[str]) -> None:
    inferred = infer_kind(keys)
    declared = data.get("kind")
    if declared is None:
        data["kind"] = inferred
    elif keys and declared != inferred:
        problems.append(
            f"`metadata.kind` is {declared!r} but the tensor names make it {inferred!r} "
            f"(e.g. {keys[0]!r})"
        )


def _check_meta_fingerprint(
    data: dict[str, Any], base: BaseSpec | None, problems: list[str]
) -> bool:
    fp = data.get("base_fingerprint")
    if not fp:
        if base is None:
            problems.append("`metadata.base_fingerprint` is missing and no base is configured")
        else:
            data["base_fingerprint"] = base.fingerprint
        return False
    if base is not None and fp != base.fingerprint:
        problems.append(f"wrong base fingerprint: expected {base.fingerprint}, got {fp}")
        return True
    return False


# ----------------------------------------------------------------------------- values


def _check_values(
    path: Path, header: _Header, problems: list[str], keep: bool
) -> dict[str, torch.Tensor]:
    """Scan float tensors for NaN/Inf one at a time; returns them when ``keep``."""
    from safetensors import safe_open

    kept: dict[str, torch.Tensor] = {}
    try:
        with safe_open(str(path), framework="pt") as f:
            for name, (_shape, dtype) in header.tensors.items():
                if dtype not in ALLOWED_DTYPES:
                    continue
                t = f.get_tensor(name)
                n_nan, n_inf = int(torch.isnan(t).sum()), int(torch.isinf(t).sum())
                if n_nan or n_inf:
                    problems.append(
                        f"tensor {name!r} has {n_nan + n_inf} non-finite values "
                        f"({n_nan} NaN, {n_inf} Inf)"
                    )
                if keep:
                    kept[name] = t
    except Exception as e:
        problems.append(f"malformed safetensors file: {e}")
    return kept


# ----------------------------------------------------------------------------- entry points


def _raise(label: str, problems: list[str], fp_bad: bool) -> None:
    shown = problems[:MAX_PROBLEMS]
    more = f"; ... and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
    noun = "problem" if len(problems) == 1 else "problems"
    message = f"invalid vector file {label}: {len(problems)} {noun}: " + "; ".join(shown) + more
    cls = FingerprintMismatchError if fp_bad else ValidationError
    raise cls(message, problems=problems)


def check_size(size: int, max_bytes: int | None, label: str) -> None:
    """Raise :class:`PayloadTooLargeError` when ``size`` exceeds ``max_bytes``."""
    if max_bytes is not None and size > max_bytes:
        msg = f"vector file {label} is too large: {size} bytes exceeds the bound of {max_bytes}"
        raise PayloadTooLargeError(msg, field="file")


def _validate(
    path: Path,
    base: BaseSpec | None,
    max_bytes: int | None,
    override: Mapping[str, Any] | None,
    keep: bool,
    label: str | None,
) -> PreferenceVector:
    label = repr(label or path.name)
    size = os.path.getsize(path)
    check_size(size, max_bytes, label)  # before parsing anything
    problems: list[str] = []
    header = _read_header(path, size, problems)
    if header is None:
        _raise(label, problems, False)
    assert header is not None
    if not header.tensors and header.readable:
        problems.append("the file holds no tensors (a vector needs at least one)")
    _check_dtypes(header.tensors, problems)
    kind = infer_kind(list(header.tensors))
    rank = None
    if kind == "lowrank":
        rank = _check_lowrank(header.tensors, base, problems)
    else:
        _check_dense(header.tensors, base, problems)
    meta, fp_bad = _resolve_metadata(header, base, override, rank, problems)
    tensors = _check_values(path, header, problems, keep) if header.readable else {}
    if problems or meta is None:
        _raise(label, problems, fp_bad)
    assert meta is not None
    return PreferenceVector(meta, tensors)


def validate_vector_file(
    path: str | Path,
    base: BaseSpec | None = None,
    max_bytes: int | None = None,
    metadata_override: Mapping[str, Any] | None = None,
    *,
    load: bool = True,
    label: str | None = None,
) -> PreferenceVector:
    """Validate one vector file against a base and return it.

    Checks, in order: size (before parsing), safetensors structure (garbage, truncation),
    at least one tensor, dtypes (F32/F16/BF16 only), names and shapes against the base (dense:
    base parameter names; low-rank: ``A (r, in)`` and ``B (out, r)`` of a 2-D base weight, both
    present, same r), metadata (name rules, kind, base fingerprint) and finite values.

    Args:
        path: the file to check.
        base: the base to check against; None skips the name, shape and fingerprint checks.
        max_bytes: size bound in bytes (None: unbounded).
        metadata_override: metadata fields that override or fill the header's ``prefvec``
            metadata; a file without one is accepted when this gives at least ``name``. A missing
            ``kind`` is inferred from the tensor names, a missing ``base_fingerprint`` is the
            base's.
        load: also return the tensors (else ``tensors`` of the result is empty: metadata only).
        label: how messages name the file (default: its file name).

    Returns:
        The :class:`PreferenceVector` (metadata resolved; ``rank`` set for low-rank vectors).

    Raises:
        PayloadTooLargeError: the file exceeds ``max_bytes`` (nothing else is read).
        FingerprintMismatchError: the base fingerprint is wrong (message lists every problem).
        ValidationError: every other problem, all of them in ``problems`` and in the message.
    """
    return _validate(Path(path), base, max_bytes, metadata_override, load, label)
