"""Base-model fingerprints: which base a preference vector belongs to.

A fingerprint hashes, for every tensor of the base checkpoint in name order, its name, shape, dtype
and its first :data:`SAMPLE_VALUES` values (as float32). It is read from safetensors headers plus a
few bytes per tensor, so fingerprinting the 135M bundled model never loads it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch

SAMPLE_VALUES = 16
FINGERPRINT_PREFIX = "pvfp1:"

# safetensors dtype names <-> torch dtypes (the subset a model checkpoint uses).
ST_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
TORCH_TO_ST: dict[torch.dtype, str] = {v: k for k, v in ST_DTYPES.items()}


def safetensors_files(model_dir: str | Path) -> list[Path]:
    """The safetensors weight files of a model folder (sharded or not), sorted."""
    files = sorted(Path(model_dir).glob("*.safetensors"))
    return [f for f in files if not f.name.startswith("adapter_")]


def _sample(t: torch.Tensor) -> bytes:
    flat = t.reshape(-1)[:SAMPLE_VALUES]
    return flat.to(torch.float32).contiguous().numpy().tobytes()


def _digest(entries: Iterable[tuple[str, tuple[int, ...], str, bytes]]) -> str:
    h = hashlib.sha256()
    for name, shape, dtype, sample in sorted(entries, key=lambda e: e[0]):
        h.update(json.dumps([name, list(shape), dtype]).encode())
        h.update(sample)
    return FINGERPRINT_PREFIX + h.hexdigest()[:40]


def _head_slice(handle, name: str, shape: list[int]) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """Read only the first values of a tensor (first rows of a matrix)."""
    sl = handle.get_slice(name)
    if not shape:
        return handle.get_tensor(name)
    row = 1
    for d in shape[1:]:
        row *= d
    rows = max(1, -(-SAMPLE_VALUES // max(row, 1)))
    return sl[:rows]


def fingerprint_files(paths: Iterable[str | Path]) -> str:
    """Fingerprint of a checkpoint given as safetensors files, reading headers and a few values."""
    from safetensors import safe_open

    entries = []
    for path in paths:
        with safe_open(str(path), framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 (safe_open is not iterable)
                sl = f.get_slice(name)
                shape = list(sl.get_shape())
                dtype = sl.get_dtype()
                entries.append((name, tuple(shape), dtype, _sample(_head_slice(f, name, shape))))
    return _digest(entries)


def fingerprint_model_dir(model_dir: str | Path) -> str:
    """Fingerprint of a model folder's safetensors checkpoint."""
    files = safetensors_files(model_dir)
    if not files:
        raise FileNotFoundError(f"no *.safetensors weights in {model_dir}")
    return fingerprint_files(files)


def fingerprint_state_dict(state: Mapping[str, torch.Tensor]) -> str:
    """Fingerprint of an in-memory state dict; equals :func:`fingerprint_files` of its save."""
    entries = [
        (name, tuple(t.shape), TORCH_TO_ST[t.dtype], _sample(t.detach().cpu()))
        for name, t in state.items()
    ]
    return _digest(entries)


def tensor_specs(model_dir: str | Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """``{name: (shape, safetensors dtype)}`` of a model folder, from headers only."""
    from safetensors import safe_open

    specs: dict[str, tuple[tuple[int, ...], str]] = {}
    for path in safetensors_files(model_dir):
        with safe_open(str(path), framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 (safe_open is not iterable)
                sl = f.get_slice(name)
                specs[name] = (tuple(sl.get_shape()), sl.get_dtype())
    return specs
