"""Extract preference vectors from trained checkpoints, and compress dense vectors to low rank.

Preference Vector (Liang et al., EACL 2026): φ_p = θ_p+ − θ_p− (``contrast``), or the ablation
φ_p = θ_p+ − θ_Base (``positive_only``). From LoRA adapters the contrast is exact and low rank:
with ΔW± = s± B± A± (PEFT scaling s = α/r, or α/√r for rsLoRA),

    ΔW+ − ΔW− = [s+ B+, −s− B−] @ [A+; A−]          (rank r+ + r−)

so no SVD (and no error) is needed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from prefvec.errors import ValidationError
from prefvec.vector_store.fingerprint import fingerprint_model_dir, safetensors_files
from prefvec.vector_store.format import (
    LORA_PREFIX,
    PreferenceVector,
    VectorMetadata,
    lora_keys,
    module_of_key,
)

StateLike = str | Path | Mapping[str, torch.Tensor]
Factors = dict[str, tuple[torch.Tensor, torch.Tensor]]


def load_state(src: StateLike) -> dict[str, torch.Tensor]:
    """A checkpoint as ``{name: tensor}``: a model folder (safetensors) or a mapping."""
    if isinstance(src, Mapping):
        return dict(src)
    from safetensors.torch import load_file

    files = safetensors_files(src)
    if not files:
        raise ValidationError(f"no *.safetensors weights in {src}", field="checkpoint")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(str(f)))
    return state


def _fingerprint_of(base: StateLike | None, given: str | None) -> str:
    if given:
        return given
    if isinstance(base, (str, Path)):
        return fingerprint_model_dir(base)
    raise ValidationError("`base_fingerprint` is required when the base is not a folder")


def _difference(
    a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], drop_zero: bool
) -> dict[str, torch.Tensor]:
    problems = [f"tensor {k!r} missing from the second checkpoint" for k in a if k not in b]
    problems += [
        f"tensor {k!r}: shape {tuple(a[k].shape)} vs {tuple(b[k].shape)}"
        for k in a
        if k in b and a[k].shape != b[k].shape
    ]
    if problems:
        raise ValidationError("checkpoints do not match: " + "; ".join(problems), problems=problems)
    out = {}
    for k, ta in a.items():
        if not ta.is_floating_point():
            continue
        d = ta.to(torch.float32) - b[k].to(torch.float32)
        if drop_zero and not torch.any(d):
            continue
        out[k] = d
    return out


def _meta(name: str, fingerprint: str, method: Any, **kw: Any) -> VectorMetadata:
    return VectorMetadata(
        name=name, kind="dense", base_fingerprint=fingerprint, method=method, **kw
    )  # type: ignore[arg-type]


def contrast(
    pos: StateLike,
    neg: StateLike,
    *,
    name: str,
    base: StateLike | None = None,
    base_fingerprint: str | None = None,
    drop_zero: bool = True,
    **metadata: Any,
) -> PreferenceVector:
    """Dense φ = θ+ − θ− (fp32) from two full checkpoints trained from the same base.

    Args:
        pos, neg: folders or state dicts of θ+ and θ− (the label-swapped run).
        name: vector name.
        base: the base folder, used for the fingerprint when ``base_fingerprint`` is not given.
        drop_zero: leave out tensors whose delta is exactly zero (frozen parameters).
        **metadata: further :class:`VectorMetadata` fields (data_hash, config, ...).
    """
    delta = _difference(load_state(pos), load_state(neg), drop_zero)
    meta = _meta(name, _fingerprint_of(base, base_fingerprint), "contrast", **metadata)
    return PreferenceVector(meta, delta)


def positive_only(
    pos: StateLike,
    base: StateLike,
    *,
    name: str,
    base_fingerprint: str | None = None,
    drop_zero: bool = True,
    **metadata: Any,
) -> PreferenceVector:
    """Dense φ = θ+ − θ_base (the paper's positive-only ablation)."""
    delta = _difference(load_state(pos), load_state(base), drop_zero)
    meta = _meta(name, _fingerprint_of(base, base_fingerprint), "positive_only", **metadata)
    return PreferenceVector(meta, delta)


# ---------------------------------------------------------------- LoRA adapters -> exact low rank


def _module_scale(config: Mapping[str, Any], module: str) -> float:
    """PEFT's scaling α/r (α/√r with rsLoRA), honouring rank_pattern / alpha_pattern."""
    import re

    def pick(pattern: Mapping[str, Any], default: Any) -> Any:
        for key, val in pattern.items():
            if re.search(key, module) or module.endswith(key):
                return val
        return default

    r = pick(config.get("rank_pattern") or {}, config["r"])
    alpha = pick(config.get("alpha_pattern") or {}, config.get("lora_alpha", r))
    return float(alpha) / (math.sqrt(r) if config.get("use_rslora") else float(r))


def load_lora_factors(adapter_dir: str | Path) -> Factors:
    """``{module: (A, s·B)}`` of a PEFT LoRA adapter folder, PEFT scaling folded into B."""
    from safetensors.torch import load_file

    folder = Path(adapter_dir)
    config = json.loads((folder / "adapter_config.json").read_text())
    raw = load_file(str(folder / "adapter_model.safetensors"))
    factors: Factors = {}
    for key in raw:
        parsed = module_of_key(key)
        if parsed is None or parsed[1] != "A":
            continue
        module = parsed[0]
        ka, kb = lora_keys(module)
        if kb not in raw:
            raise ValidationError(f"adapter {folder}: {ka!r} has no matching {kb!r}")
        a, b = raw[ka].to(torch.float32), raw[kb].to(torch.float32)
        factors[module] = (a, b * _module_scale(config, module))
    if not factors:
        raise ValidationError(f"adapter {folder}: no LoRA factors under {LORA_PREFIX!r}")
    return factors


def contrast_factors(pos: Factors, neg: Factors) -> Factors:
    """Exact low-rank ΔW+ − ΔW−: A = [A+; A−] (r+ + r−, in), B = [B+, −B−] (out, r+ + r−)."""
    out: Factors = {}
    for module in sorted(set(pos) | set(neg)):
        parts = []
        if module in pos:
            parts.append(pos[module])
        if module in neg:
            a, b = neg[module]
            parts.append((a, -b))
        out[module] = (
            torch.cat([a for a, _ in parts], dim=0),
            torch.cat([b for _, b in parts], dim=1),
        )
    return out


def contrast_lora(
    pos_adapter: str | Path,
    neg_adapter: str | Path,
    *,
    name: str,
    base_fingerprint: str,
    **metadata: Any,
) -> PreferenceVector:
    """Low-rank φ = ΔW+ − ΔW− from two LoRA adapters, exactly (rank r+ + r−)."""
    facs = contrast_factors(load_lora_factors(pos_adapter), load_lora_factors(neg_adapter))
    meta = VectorMetadata(
        name=name, kind="lowrank", base_fingerprint=base_fingerprint, method="contrast", **metadata
    )
    return PreferenceVector.from_factors(meta, facs)


def positive_only_lora(
    adapter: str | Path, *, name: str, base_fingerprint: str, **metadata: Any
) -> PreferenceVector:
    """Low-rank φ = ΔW+ from one LoRA adapter trained from the base (positive-only)."""
    meta = VectorMetadata(
        name=name,
        kind="lowrank",
        base_fingerprint=base_fingerprint,
        method="positive_only",
        **metadata,
    )
    return PreferenceVector.from_factors(meta, load_lora_factors(adapter))


# ---------------------------------------------------------------- dense -> low rank (truncated SVD)


@dataclass
class CompressionReport:
    """What a truncated-SVD compression kept and the error it introduced.

    ``relative_error`` is ‖Δ − Δ̂‖_F / ‖Δ‖_F over the whole vector (all tensors together, dropped
    non-matrix tensors included); ``per_tensor`` holds each matrix's rank and relative error.
    """

    relative_error: float
    kept_energy: float
    per_tensor: dict[str, dict[str, float]] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)


def default_compressible(name: str, t: torch.Tensor) -> bool:
    """Matrices of linear layers: 2-D ``*.weight`` tensors that are not embeddings / lm_head."""
    return (
        t.ndim == 2 and name.endswith(".weight") and "embed" not in name and "lm_head" not in name
    )


def _choose_rank(s: torch.Tensor, rank: int | None, energy: float | None) -> int:
    if rank is not None:
        return max(0, min(rank, s.numel()))
    assert energy is not None
    raw = torch.cumsum(s.double() ** 2, 0)
    total = float(raw[-1]) if raw.numel() else 0.0
    if total == 0.0:
        return 0
    # in float64 throughout, with a 1e-9 tolerance: σ² of a matrix's numerical null space
    # (1e-12 of the total) must not decide whether energy = 1.0 is "reached"
    cum = raw / total
    want = torch.tensor(energy - 1e-9, dtype=torch.float64)
    return min(int(torch.searchsorted(cum, want).item()) + 1, s.numel())


def compress_svd(
    vector: PreferenceVector,
    *,
    rank: int | None = None,
    energy: float | None = None,
    compressible: Callable[[str, torch.Tensor], bool] = default_compressible,
    name: str | None = None,
) -> tuple[PreferenceVector, CompressionReport]:
    """Dense vector -> low-rank by per-matrix truncated SVD at a fixed ``rank`` or ``energy``.

    For each matrix Δ = U S Vᵀ, keeps B = U_k S_k (out, k) and A = V_kᵀ (k, in); its error is
    √(Σ_{i>k} σ_i²) exactly (Eckart–Young). Tensors that are not matrices of linear layers cannot
    be low-rank factors and are dropped; their whole norm counts as error in the report.

    Args:
        vector: a dense vector.
        rank: rank per matrix (mutually exclusive with ``energy``).
        energy: keep the smallest rank whose σ² share reaches this fraction, in (0, 1].
        compressible: which tensors to factorise.
        name: name of the result (default: the input's).
    """
    if (rank is None) == (energy is None):
        raise ValidationError("give exactly one of `rank` or `energy`", field="rank")
    if rank is not None and rank < 1:
        raise ValidationError(f"`rank` must be >= 1, got {rank}", field="rank")
    if energy is not None and not 0.0 < energy <= 1.0:
        raise ValidationError(f"`energy` must be in (0, 1], got {energy}", field="energy")
    if vector.kind != "dense":
        raise ValidationError(f"`vector` must be dense, got {vector.kind}", field="vector")
    factors: Factors = {}
    report = CompressionReport(relative_error=0.0, kept_energy=0.0)
    total_sq, err_sq = 0.0, 0.0
    for key, delta in vector.tensors.items():
        d = delta.to(torch.float32)
        sq = float((d.double() ** 2).sum())
        total_sq += sq
        if not compressible(key, d):
            report.dropped.append(key)
            err_sq += sq
            continue
        u, s, vh = torch.linalg.svd(d, full_matrices=False)  # (out, m), (m,), (m, in)
        k = _choose_rank(s, rank, energy)
        tail = float((s[k:].double() ** 2).sum())
        err_sq += tail
        report.per_tensor[key] = {"rank": k, "relative_error": math.sqrt(tail / sq) if sq else 0.0}
        if k > 0:
            factors[key[: -len(".weight")]] = (vh[:k].contiguous(), (u[:, :k] * s[:k]).contiguous())
    report.relative_error = math.sqrt(err_sq / total_sq) if total_sq else 0.0
    report.kept_energy = 1.0 - (err_sq / total_sq if total_sq else 0.0)
    meta = vector.metadata.model_copy(
        update={
            "name": name or vector.name,
            "version": None,
            "extra": {
                **vector.metadata.extra,
                "svd": {"rank": rank, "energy": energy, "relative_error": report.relative_error},
            },
        }
    )
    return PreferenceVector.from_factors(meta, factors), report
