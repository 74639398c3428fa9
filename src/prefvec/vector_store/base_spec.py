"""What the store knows about a base model: its fingerprint and its tensor names, shapes, dtypes.

A :class:`BaseSpec` is read from safetensors headers only (plus the few values the fingerprint
samples), so describing the 135M bundled base never loads it. Validation checks every uploaded
vector against it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from prefvec.vector_store.fingerprint import (
    TORCH_TO_ST,
    fingerprint_model_dir,
    fingerprint_state_dict,
    tensor_specs,
)

TensorSpec = tuple[tuple[int, ...], str]  # (shape, safetensors dtype such as 'F32')


@dataclass(frozen=True)
class BaseSpec:
    """Identity and tensor layout of one base model.

    Args:
        fingerprint: the base fingerprint (see :mod:`prefvec.vector_store.fingerprint`).
        tensors: ``{parameter name: (shape, safetensors dtype)}``.
        name: a human-readable id of the base (hub id, path, ``bundled:...``); informational.
    """

    fingerprint: str
    tensors: Mapping[str, TensorSpec] = field(default_factory=dict, hash=False)
    name: str = ""

    @classmethod
    def from_model_dir(cls, model_dir: str | Path, name: str | None = None) -> BaseSpec:
        """Describe the safetensors checkpoint in ``model_dir`` (headers and a few values only).

        Args:
            model_dir: a Hugging Face model folder with ``*.safetensors`` weights.
            name: the base's display id; defaults to the folder path.
        """
        specs = tensor_specs(model_dir)
        fp = fingerprint_model_dir(model_dir)
        return cls(fingerprint=fp, tensors=dict(specs), name=name or str(model_dir))

    @classmethod
    def from_state_dict(cls, state: Mapping[str, torch.Tensor], name: str = "") -> BaseSpec:
        """Describe an in-memory state dict (same fingerprint as its safetensors save)."""
        specs = {
            k: (tuple(int(d) for d in t.shape), TORCH_TO_ST[t.dtype]) for k, t in state.items()
        }
        return cls(fingerprint=fingerprint_state_dict(state), tensors=specs, name=name)

    def linear_modules(self) -> dict[str, tuple[int, int]]:
        """``{module: (out_features, in_features)}`` for every 2-D ``*.weight`` tensor.

        These are the modules a low-rank vector may target: ``A`` is (r, in), ``B`` is (out, r).
        """
        out: dict[str, tuple[int, int]] = {}
        for name, (shape, _dtype) in self.tensors.items():
            if name.endswith(".weight") and len(shape) == 2:
                out[name[: -len(".weight")]] = (int(shape[0]), int(shape[1]))
        return out
