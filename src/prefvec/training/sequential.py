"""Sequential alignment (the MORA paper's baseline): DPO on one preference after another.

Stage s trains DPO from the result of stage s − 1, which is also its reference. With LoRA each
stage's adapter is merged into the weights before the next stage, so the total change is exactly
ΔW = Σ_s B_s A_s: the stored vector θ_final − θ_base is low-rank, with the stages' factors
concatenated along the rank (rank Σ r_s), and no SVD. Full fine-tuning stores the dense
difference.

    prefvec train sequential --preferences helpful harmless truthful --steps 100
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from prefvec.errors import ValidationError
from prefvec.training.config import SequentialJobConfig, data_for

logger = logging.getLogger(__name__)


def merge_adapter(model_dir: Path, adapter_dir: Path, out_dir: Path) -> Path:
    """Save ``model_dir`` with the LoRA adapter merged in (plus its tokenizer) to ``out_dir``."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if (out_dir / "config.json").is_file():
        return out_dir
    base = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(str(out_dir))
    AutoTokenizer.from_pretrained(str(model_dir)).save_pretrained(str(out_dir))
    return out_dir


def concat_factors(
    stages: list[dict[str, tuple[torch.Tensor, torch.Tensor]]],
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Σ_s B_s A_s as one factor pair per module: A = [A_1; A_2; ...], B = [B_1, B_2, ...]."""
    out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for module in sorted({m for st in stages for m in st}):
        parts = [st[module] for st in stages if module in st]
        out[module] = (torch.cat([a for a, _ in parts], 0), torch.cat([b for _, b in parts], 1))
    return out


def check_start_vector(
    path_text: str, field: str, use_lora: bool, base_dir: Path
) -> tuple[Any, dict[str, Any]]:
    """A stored low-rank vector of this base that training starts from (``field`` names the
    config field in errors), and its record: name, file, sha256, data hash, eval scores."""
    from prefvec.vector_store import PreferenceVector
    from prefvec.vector_store.fingerprint import fingerprint_model_dir
    from prefvec.vector_store.store import sha256_file

    path = Path(path_text)
    if not path.is_file():
        raise ValidationError(f"`{field}` {str(path)!r} is not a file", field=field)
    try:
        vec = PreferenceVector.load(path)
    except Exception as exc:  # not a safetensors file, or no prefvec metadata: say which file
        raise ValidationError(
            f"`{field}` {str(path)!r} is not a readable vector file: {exc}", field=field
        ) from exc
    if vec.kind != "lowrank" or not use_lora:
        raise ValidationError(
            f"`{field}` {str(path)!r} is {vec.kind}; training from a stored vector needs a "
            "low-rank vector and LoRA training (use_lora: true)",
            field=field,
        )
    fingerprint = fingerprint_model_dir(base_dir)
    if vec.metadata.base_fingerprint != fingerprint:
        raise ValidationError(
            f"`{field}` {str(path)!r} was made on base {vec.metadata.base_fingerprint}, "
            f"not on the base {str(base_dir)!r} ({fingerprint})",
            field=field,
        )
    info = {
        "preference": vec.name, field: str(path), "sha256": sha256_file(path),
        "data_hash": vec.metadata.data_hash or "", "eval_scores": vec.metadata.eval_scores,
    }  # fmt: skip
    return vec, info


def merge_start_vector(vec: Any, sha256: str, base_dir: Path, out: Path) -> Path:
    """base + ``vec`` saved under ``out`` (a folder named by the vector and its file's hash,
    so another file never reuses the merge); returns the merged model folder."""
    stage_dir = out / f"stage0-{vec.name}-{sha256[:10]}"
    adapter = vec.export_peft(stage_dir / "adapter", base_model=str(base_dir))
    return merge_adapter(base_dir, adapter, stage_dir / "merged")


def run_sequential_job(cfg: SequentialJobConfig) -> dict[str, Any]:
    """Train the preferences in order, each stage from the last; store θ_final − θ_base."""
    from prefvec.models import resolve_model_dir
    from prefvec.training.card import machine_info
    from prefvec.training.dpo import library_versions, prepare_pairs, train_dpo_run
    from prefvec.training.extract import dense_difference, lowrank_from_factors, store_vector
    from prefvec.vector_store.extract import load_lora_factors

    base_dir = resolve_model_dir(cfg.base)
    out = Path(cfg.output_dir)
    current = base_dir
    stages: list[dict[str, Any]] = []
    factors, hashes = [], []
    if cfg.start_vector:
        start, info = check_start_vector(
            str(cfg.start_vector), "start_vector", cfg.use_lora, base_dir
        )
        current = merge_start_vector(start, info["sha256"], base_dir, out)
        factors.append(start.factors())
        hashes.append(info["data_hash"][:16])
        stages.append(info)
    for pref in cfg.preferences:
        stage_dir = out / f"stage{len(stages)}-{pref}"
        train, val, info = prepare_pairs(cfg, pref, data_for(cfg, pref))
        run = train_dpo_run(current, train, val, cfg, stage_dir)
        stages.append({"preference": pref, **info, **run.to_dict()})
        hashes.append(info["data_hash"][:16])
        if cfg.use_lora:
            factors.append(load_lora_factors(run.weights_dir))
            current = merge_adapter(current, run.weights_dir, stage_dir / "merged")
        else:
            current = run.weights_dir
    report: dict[str, Any] = {
        "data_hash": ":".join(hashes),
        "config": cfg.to_dict(),
        "versions": library_versions(),
        "machine": machine_info(),
        "stages": stages,
        "eval": {"pos": stages[-1]["eval"]},  # the last stage is trained (config)
    }
    name = cfg.name or "seq-" + "-".join(cfg.preferences)
    if cfg.use_lora:
        vector = lowrank_from_factors(
            concat_factors(factors), name=name, base_spec=cfg.base, base_dir=base_dir,
            method="other", report=report,
        )  # fmt: skip
    else:
        from prefvec.vector_store.extract import load_state

        vector = dense_difference(
            load_state(current), base_dir, name=name, base_spec=cfg.base, method="other",
            report=report,
        )  # fmt: skip
    record, path = store_vector(vector, cfg, base_dir)
    report["stored"] = record.ref if record else None
    report["vector_path"] = str(path) if path else None
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    return report
