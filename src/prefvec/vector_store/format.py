"""The preference-vector file format (format version 1).

A vector is one safetensors file. Its header's ``__metadata__`` holds the JSON of
:class:`VectorMetadata` under the key ``"prefvec"``; the tensors are either

* **dense**: one delta per base parameter, keyed by the base parameter name
  (``model.layers.0.self_attn.q_proj.weight``), same shape as the parameter; or
* **low-rank**: per linear module ``m`` the factors of ``ΔW = B @ A`` in the PEFT LoRA layout,
  ``base_model.model.{m}.lora_A.weight`` (r, in) and ``base_model.model.{m}.lora_B.weight``
  (out, r), with any scaling already folded into B (so PEFT scaling alpha/r must be 1;
  :meth:`PreferenceVector.export_peft` writes the matching ``adapter_config.json``).

Never pickle: loading uses ``safetensors`` only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from prefvec.protocol import NAME_PATTERN

FORMAT_VERSION = 1
METADATA_KEY = "prefvec"
LORA_PREFIX = "base_model.model."
LORA_A_SUFFIX = ".lora_A.weight"
LORA_B_SUFFIX = ".lora_B.weight"
_NAME_RE = re.compile(NAME_PATTERN)

VectorKind = Literal["dense", "lowrank"]
ExtractionMethod = Literal["contrast", "positive_only", "raco", "svd", "merge", "other"]


def check_name(name: str, field_name: str = "name") -> str:
    """Validate a vector or recipe name: 1-64 of ``[A-Za-z0-9_.-]``, no path separators."""
    from prefvec.errors import ValidationError

    if not isinstance(name, str) or not _NAME_RE.match(name) or ".." in name:
        raise ValidationError(
            f"`{field_name}` must match {NAME_PATTERN} (no '/', no '..'), got {name!r}",
            field=field_name,
        )
    return name


class VectorMetadata(BaseModel):
    """Provenance and identity of one preference vector version."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Vector name, e.g. 'helpful'.", pattern=NAME_PATTERN)
    version: int | None = Field(None, ge=1, description="Assigned by the store on put.")
    kind: VectorKind = Field(description="'dense' or 'lowrank'.")
    base_fingerprint: str = Field(description="Fingerprint of the base this delta applies to.")
    base_model: str = Field("", description="Human-readable base id (hub id, path, bundled:...).")
    method: ExtractionMethod = Field(
        "contrast", description="How φ was extracted: θ+−θ− (contrast), θ+−θ_base, ..."
    )
    data_hash: str | None = Field(None, description="sha256 of the training data.")
    config: dict[str, Any] = Field(default_factory=dict, description="Training/extraction config.")
    eval_scores: dict[str, float] = Field(default_factory=dict)
    description: str = ""
    rank: int | None = Field(None, ge=1, description="Max rank of a low-rank vector.")
    format_version: int = FORMAT_VERSION
    created_at: str | None = None
    sha256: str | None = Field(None, description="sha256 of the stored file (set by the store).")
    size_bytes: int | None = None
    extra: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _no_dotdot(cls, v: str) -> str:
        if ".." in v:
            raise ValueError("must not contain '..'")
        return v

    @property
    def ref(self) -> str:
        """``name@version`` (or just the name before the store assigned a version)."""
        return f"{self.name}@{self.version}" if self.version else self.name


def lora_keys(module: str) -> tuple[str, str]:
    """The (A, B) tensor keys of a module in the PEFT LoRA layout."""
    return LORA_PREFIX + module + LORA_A_SUFFIX, LORA_PREFIX + module + LORA_B_SUFFIX


def module_of_key(key: str) -> tuple[str, str] | None:
    """``(module, 'A'|'B')`` for a LoRA tensor key, else None."""
    for suffix, which in ((LORA_A_SUFFIX, "A"), (LORA_B_SUFFIX, "B")):
        if key.startswith(LORA_PREFIX) and key.endswith(suffix):
            return key[len(LORA_PREFIX) : -len(suffix)], which
    return None


@dataclass
class PreferenceVector:
    """A preference vector in memory: metadata plus its tensors (see the module docstring)."""

    metadata: VectorMetadata
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def kind(self) -> VectorKind:
        return self.metadata.kind

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())

    @classmethod
    def from_factors(
        cls, metadata: VectorMetadata, factors: Mapping[str, tuple[torch.Tensor, torch.Tensor]]
    ) -> PreferenceVector:
        """Build a low-rank vector from ``{module: (A (r, in), B (out, r))}``."""
        tensors: dict[str, torch.Tensor] = {}
        for module, (a, b) in factors.items():
            ka, kb = lora_keys(module)
            tensors[ka], tensors[kb] = a.contiguous(), b.contiguous()
        rank = max((a.shape[0] for a, _ in factors.values()), default=None)
        meta = metadata.model_copy(update={"kind": "lowrank", "rank": rank})
        return cls(meta, tensors)

    def factors(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """``{module: (A, B)}`` of a low-rank vector; ``ΔW[module.weight] = B @ A``."""
        if self.kind != "lowrank":
            raise TypeError(f"vector {self.name!r} is {self.kind}, not lowrank")
        out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for key in self.tensors:
            parsed = module_of_key(key)
            if parsed and parsed[1] == "A":
                ka, kb = lora_keys(parsed[0])
                out[parsed[0]] = (self.tensors[ka], self.tensors[kb])
        return out

    def to_dense(self, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        """Dense deltas ``{param name: ΔW}`` (low-rank: ``B @ A`` per module)."""
        if self.kind == "dense":
            src = self.tensors
        else:
            src = {m + ".weight": b @ a for m, (a, b) in self.factors().items()}
        return {k: (v if dtype is None else v.to(dtype)) for k, v in src.items()}

    def scaled(self, factor: float, note: str = "") -> PreferenceVector:
        """This vector times ``factor``: φ' = s·φ, so weight η on φ' is weight s·η on φ.

        A low-rank vector scales its B factors only (``ΔW = (sB) A``); arithmetic runs in float32
        and the result is stored in the vector's own dtype. Provenance goes to
        ``extra["scaled"]``: the factor, the note, and (for a chain) the factor of the vector
        before it, so that the total factor relative to the trained vector stays readable.
        """
        import math

        if not isinstance(factor, (int, float)) or not math.isfinite(factor) or factor == 0:
            from prefvec.errors import ValidationError

            raise ValidationError(
                f"`factor` must be a finite, non-zero number, got {factor!r}", field="factor"
            )
        tensors: dict[str, torch.Tensor] = {}
        for key, t in self.tensors.items():
            parsed = module_of_key(key)
            if self.kind == "lowrank" and parsed and parsed[1] == "A":
                tensors[key] = t.clone()
            else:
                tensors[key] = (t.float() * float(factor)).to(t.dtype)
        prior = float(self.metadata.extra.get("scaled", {}).get("total_factor", 1.0))
        extra = dict(self.metadata.extra)
        extra["scaled"] = {
            "factor": float(factor),
            "total_factor": prior * float(factor),
            "note": note,
        }
        meta = self.metadata.model_copy(
            update={"extra": extra, "version": None, "sha256": None, "size_bytes": None}
        )
        return PreferenceVector(meta, tensors)

    def header_metadata(self) -> dict[str, str]:
        return {METADATA_KEY: self.metadata.model_dump_json(), "format": "pt"}

    def save(self, path: str | Path) -> Path:
        """Write the vector as one safetensors file (metadata in the header).

        Atomic: the bytes go to a hidden temporary file beside ``path`` (created with the usual
        umask permissions), are fsynced, then renamed over ``path``; a crash leaves either the
        old file or the new one, never half a vector.
        """
        from safetensors.torch import save as save_bytes

        from prefvec.fileio import atomic_write_bytes

        tensors = {k: v.detach().contiguous().cpu() for k, v in self.tensors.items()}
        return atomic_write_bytes(path, save_bytes(tensors, metadata=self.header_metadata()))

    @classmethod
    def load(cls, path: str | Path) -> PreferenceVector:
        """Read a vector file written by :meth:`save` (no validation against a base)."""
        from safetensors.torch import load_file

        meta = read_metadata(path)
        return cls(meta, load_file(str(path)))

    def export_peft(self, out_dir: str | Path, base_model: str | None = None) -> Path:
        """Write a PEFT LoRA adapter folder (``adapter_model.safetensors`` + config).

        Scaling is folded into B, so ``lora_alpha == r`` per module (via ``rank_pattern`` and
        ``alpha_pattern`` where ranks differ).
        """
        from safetensors.torch import save_file

        facs = self.factors()
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        ranks = {m: int(a.shape[0]) for m, (a, _) in facs.items()}
        r = max(ranks.values())
        targets = sorted(facs)  # full module names: PEFT wraps exactly these
        pattern = {m: rk for m, rk in ranks.items() if rk != r}
        config = {
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": base_model or self.metadata.base_model,
            "r": r,
            "lora_alpha": r,
            "lora_dropout": 0.0,
            "bias": "none",
            "target_modules": targets,
            "rank_pattern": {f"^{re.escape(m)}$": rk for m, rk in pattern.items()},
            "alpha_pattern": {f"^{re.escape(m)}$": rk for m, rk in pattern.items()},
            "fan_in_fan_out": False,
            "inference_mode": True,
        }
        tensors = {k: v.contiguous() for k, v in self.tensors.items()}
        save_file(tensors, str(out / "adapter_model.safetensors"))
        (out / "adapter_config.json").write_text(json.dumps(config, indent=2))
        return out


def read_metadata(path: str | Path) -> VectorMetadata:
    """Read only the metadata of a vector file (header, no tensor data)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        header = f.metadata() or {}
    if METADATA_KEY not in header:
        raise ValueError(f"{path}: no '{METADATA_KEY}' metadata in the safetensors header")
    return VectorMetadata.model_validate_json(header[METADATA_KEY])
