"""Base-model resolution: local folders, errors, and the bundled GGUF (slow)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from prefvec.errors import NotFoundError, ValidationError
from prefvec.models import load_base, parse_dtype, resolve_model_dir
from prefvec.vector_store.fingerprint import fingerprint_model_dir


def test_local_folder_loads_with_fingerprint(tiny_base_dir: Path) -> None:
    base = load_base(str(tiny_base_dir), dtype="bf16")
    assert base.model.dtype == torch.bfloat16
    assert base.fingerprint == fingerprint_model_dir(tiny_base_dir)
    assert base.tokenizer.padding_side == "left" and base.tokenizer.pad_token is not None
    assert not any(p.requires_grad for p in base.model.parameters())


def test_unknown_specs_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match=r"no-such/model"):
        resolve_model_dir("no-such/model")
    with pytest.raises(NotFoundError, match="bundled"):
        resolve_model_dir("bundled:nope", home=tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValidationError, match=r"config\.json"):
        resolve_model_dir(str(tmp_path / "empty"))
    with pytest.raises(ValidationError, match="int4"):
        parse_dtype("int4")


@pytest.mark.slow
def test_bundled_model_converts_once_and_answers(tmp_path: Path) -> None:
    base = load_base(home=tmp_path)
    assert (tmp_path / "models" / "smollm2-135m-instruct" / "model.safetensors").exists()
    assert sum(p.numel() for p in base.model.parameters()) == 134_515_008
    tok = base.tokenizer
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    ids = tok.apply_chat_template(
        msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    out = base.model.generate(**ids, max_new_tokens=10, do_sample=False)
    assert "Paris" in tok.decode(out[0][ids["input_ids"].shape[1] :])
