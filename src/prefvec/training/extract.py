"""Glue from trained weights to a stored preference vector (extraction, provenance, store).

LoRA runs give exact low-rank vectors (:func:`prefvec.vector_store.extract.contrast_lora`,
rank r+ + r−); full runs give dense ones (:func:`~prefvec.vector_store.extract.contrast`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from prefvec.training.config import CommonTrainConfig
from prefvec.vector_store import extract as ex
from prefvec.vector_store.fingerprint import fingerprint_model_dir
from prefvec.vector_store.format import PreferenceVector, VectorMetadata

logger = logging.getLogger(__name__)


def provenance(report: dict[str, Any]) -> dict[str, Any]:
    """Split a training report into :class:`VectorMetadata` fields (data_hash, config, eval...)."""
    evals = report.get("eval", {})
    scores = {f"val_{k}": float(v) for k, v in evals.get("pos", {}).items()}
    for objective, metrics in evals.get("per_objective", {}).items():
        scores.update(
            {f"val_{k}.{objective}": float(v) for k, v in metrics.items() if v is not None}
        )
    extra = {k: v for k, v in report.items() if k not in ("data_hash", "config")}
    return {
        "data_hash": report.get("data_hash"),
        "config": report.get("config", {}),
        "eval_scores": scores,
        "extra": extra,
    }


def build_vector(
    *,
    name: str,
    base_spec: str,
    base_dir: Path,
    pos: Path,
    neg: Path | None,
    lora: bool,
    report: dict[str, Any],
) -> PreferenceVector:
    """φ = θ+ − θ− (``neg`` given) or θ+ − θ_base, from LoRA adapters or full model folders."""
    fp = fingerprint_model_dir(base_dir)
    meta: dict[str, Any] = {"base_model": base_spec, **provenance(report)}
    if lora and neg is not None:
        return ex.contrast_lora(pos, neg, name=name, base_fingerprint=fp, **meta)
    if lora:
        return ex.positive_only_lora(pos, name=name, base_fingerprint=fp, **meta)
    if neg is not None:
        return ex.contrast(pos, neg, name=name, base_fingerprint=fp, **meta)
    return ex.positive_only(pos, base_dir, name=name, base_fingerprint=fp, **meta)


def lowrank_from_factors(
    factors: dict[str, tuple[torch.Tensor, torch.Tensor]],
    *,
    name: str,
    base_spec: str,
    base_dir: Path,
    method: str,
    report: dict[str, Any],
) -> PreferenceVector:
    """A low-rank vector from ``{module: (A, B)}`` factors with provenance."""
    meta = VectorMetadata(
        name=name,
        kind="lowrank",
        base_fingerprint=fingerprint_model_dir(base_dir),
        base_model=base_spec,
        method=method,  # type: ignore[arg-type]
        **provenance(report),
    )
    return PreferenceVector.from_factors(meta, factors)


def dense_difference(
    model_state: dict[str, torch.Tensor],
    base_dir: Path,
    *,
    name: str,
    base_spec: str,
    method: str,
    report: dict[str, Any],
) -> PreferenceVector:
    """A dense vector θ − θ_base (unchanged tensors left out) with provenance."""
    vec = ex.positive_only(
        model_state,
        base_dir,
        name=name,
        base_fingerprint=fingerprint_model_dir(base_dir),
        base_model=base_spec,
        **provenance(report),
    )
    vec.metadata = vec.metadata.model_copy(update={"method": method})
    return vec


def cast_vector(vector: PreferenceVector, dtype: torch.dtype) -> PreferenceVector:
    """The same vector with every tensor cast (e.g. fp16 factors for small committed files)."""
    tensors = {k: t.to(dtype).contiguous() for k, t in vector.tensors.items()}
    return PreferenceVector(vector.metadata, tensors)


def store_vector(
    vector: PreferenceVector, cfg: CommonTrainConfig, base_dir: Path
) -> tuple[Any, Path | None]:
    """Write ``cfg.save_vector`` (if set) and put the vector into the store (unless ``no_store``).

    The store validates it against the base (fingerprint, names, shapes, finite values).
    """
    from prefvec.models import prefvec_home
    from prefvec.vector_store import BaseSpec, LocalStore

    if cfg.vector_dtype != "float32":
        vector = cast_vector(vector, getattr(torch, cfg.vector_dtype))
    path = None
    if cfg.save_vector:
        path = Path(cfg.save_vector)
        path.parent.mkdir(parents=True, exist_ok=True)
        vector.save(path)
        logger.info("wrote %s", path)
    record = None
    if not cfg.no_store:
        root = Path(cfg.store_dir) if cfg.store_dir else prefvec_home() / "store"
        store = LocalStore(root, base=BaseSpec.from_model_dir(base_dir))
        record = store.put(vector)
        logger.info("stored %s in %s", record.ref, root)
    return record, path
