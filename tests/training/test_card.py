"""The vector card is written from the vector's own metadata (and the data file it names)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from prefvec.errors import NotFoundError, ValidationError
from prefvec.training.card import machine_info, render_card


def _vector(tmp_path: Path, meta: dict | None) -> Path:
    path = tmp_path / "v.safetensors"
    md = {"prefvec": json.dumps(meta)} if meta is not None else None
    save_file({"x": torch.zeros(1)}, str(path), metadata=md)
    return path


def test_card_states_the_vectors_provenance(tmp_path: Path) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n')
    meta = {
        "name": "harmless", "kind": "lowrank", "rank": 8, "method": "positive_only",
        "base_model": "bundled:x", "base_fingerprint": "pvfp1:ab", "data_hash": "f00d",
        "config": {"preference": "harmless", "steps": 10, "seed": 3, "val_fraction": 0.2,
                   "lora_layers": []},
        "extra": {"reports": [{"source": "d.jsonl", "rows": 1, "pairs": 1, "bad": []}],
                  "n_train": 80, "n_val": 100, "versions": {"torch": "2.13.0"},
                  "eval": {"pos": {"reward_accuracy": 0.8, "reward_margin": 1.5, "loss": 0.4}},
                  "wall_s": {"pos": 120.0}, "machine": {"cpu": "TestCPU", "cores": 2},
                  "curves": {"pos": [{"step": 5, "loss": 0.6, "reward_accuracy": 0.7,
                                      "reward_margin": 0.2}]}},
    }  # fmt: skip
    card = render_card(_vector(tmp_path, meta), config_path="c.yaml", notes="## Behaviour\nok",
                       root=tmp_path)  # fmt: skip
    assert "prefvec train dpo --config c.yaml" in card
    assert hashlib.sha256(data.read_bytes()).hexdigest() in card and "f00d" in card
    assert "**0.800** [0.711, 0.867]" in card  # 80/100 with its Wilson interval
    assert "12.0 s/step" in card and "TestCPU" in card and "torch 2.13.0" in card
    assert "| seed | 3 |" in card and "| lora_layers | [] (all) |" in card
    assert card.rstrip().endswith("## Behaviour\nok")
    assert machine_info()["cores"] >= 1


def test_card_refuses_a_file_that_is_not_a_vector(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="no prefvec metadata"):
        render_card(_vector(tmp_path, None))
    with pytest.raises(NotFoundError, match="nope"):
        render_card(tmp_path / "nope.safetensors")


def test_card_of_a_scaled_vector_gives_the_scale_step_and_both_hashes(tmp_path: Path) -> None:
    meta = {
        "name": "harmless", "kind": "lowrank", "method": "positive_only", "config": {},
        "extra": {"scaled": {"factor": 1.5, "total_factor": 1.5, "note": "unit",
                             "source": "trained/harmless.safetensors", "source_sha256": "beef"}},
    }  # fmt: skip
    vec = _vector(tmp_path, meta)
    card = render_card(vec, config_path="c.yaml", root=tmp_path)
    assert (
        "prefvec train dpo --config c.yaml\nprefvec vectors scale trained/harmless.safetensors"
        in card
    )
    assert f'--factor 1.5 --out {vec} --note "unit"' in card
    assert "1.5 × the trained vector" in card and "`beef`" in card
    meta["extra"] = {}
    assert "vectors scale" not in render_card(_vector(tmp_path, meta), root=tmp_path)
