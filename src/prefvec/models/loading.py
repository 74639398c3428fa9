"""Resolve and load base models: ``bundled:<name>``, a local folder, or a hub id (cache only)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from prefvec.defaults import DEFAULT_BASE
from prefvec.errors import NotFoundError, ValidationError
from prefvec.models.bundled import BUNDLED_PREFIX, convert_bundled

logger = logging.getLogger(__name__)

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``"bf16"`` / ``"bfloat16"`` / ``torch.bfloat16`` -> ``torch.bfloat16``."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValidationError(
            f"`dtype` must be one of {sorted(DTYPES)}, got {dtype!r}", field="dtype"
        )
    return DTYPES[dtype]


def resolve_device(device: str | None = None) -> str:
    """``"auto"``/None -> ``"cuda"`` when available, else ``"cpu"``."""
    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_model_dir(spec: str = DEFAULT_BASE, home: str | Path | None = None) -> Path:
    """Folder holding a base's config, safetensors weights and tokenizer.

    Args:
        spec: ``bundled:<name>``, a local folder, or a hub id already in the local HF cache
            (nothing is downloaded: ``local_files_only``).
        home: prefvec cache root (default ``$PREFVEC_HOME`` or ``~/.cache/prefvec``).
    """
    if spec.startswith(BUNDLED_PREFIX):
        return convert_bundled(spec[len(BUNDLED_PREFIX) :], home)
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ValidationError(f"`base_model` folder {spec!r} has no config.json", field="base")
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(spec, local_files_only=True))
    except Exception as exc:  # the hub client raises several unrelated types here
        raise NotFoundError(
            f"`base_model` {spec!r} is neither bundled:<name>, a folder, nor a hub id in the "
            f"local cache ({type(exc).__name__}); no downloads happen at run time",
            field="base",
        ) from exc


@dataclass
class LoadedBase:
    """A loaded base model with what the rest of prefvec needs to know about it."""

    spec: str
    model_dir: Path
    model: Any
    tokenizer: Any
    fingerprint: str
    dtype: torch.dtype
    device: str


def load_tokenizer(model_dir: str | Path) -> Any:
    """The tokenizer of a model folder, with a pad token (left padding for batched decoding)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def load_base(
    spec: str = DEFAULT_BASE,
    *,
    dtype: str | torch.dtype = torch.float32,
    device: str | None = "cpu",
    home: str | Path | None = None,
) -> LoadedBase:
    """Load a base model for inference (eval mode, no grad) with its tokenizer and fingerprint."""
    from transformers import AutoModelForCausalLM

    from prefvec.vector_store.fingerprint import fingerprint_model_dir

    model_dir = resolve_model_dir(spec, home)
    torch_dtype, dev = parse_dtype(dtype), resolve_device(device)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch_dtype)
    model = model.to(dev)  # type: ignore[arg-type]
    model.eval()
    model.requires_grad_(False)
    return LoadedBase(
        spec=spec,
        model_dir=model_dir,
        model=model,
        tokenizer=load_tokenizer(model_dir),
        fingerprint=fingerprint_model_dir(model_dir),
        dtype=torch_dtype,
        device=dev,
    )
