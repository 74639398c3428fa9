"""Shared fixtures: tiny models built from a config in a temporary folder (never a download)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def tiny_base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama (2 layers, hidden 32, tied embeddings) + byte tokenizer, as safetensors."""
    from prefvec.testing import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny-base"), seed=0)


@pytest.fixture(scope="session")
def tiny_pos_dir(tiny_base_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stand-in for θ+: the tiny base moved by seeded noise."""
    from prefvec.testing import perturb_model

    return perturb_model(tiny_base_dir, tmp_path_factory.mktemp("tiny-pos"), seed=1)


@pytest.fixture(scope="session")
def tiny_neg_dir(tiny_base_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stand-in for θ−: the tiny base moved by other seeded noise."""
    from prefvec.testing import perturb_model

    return perturb_model(tiny_base_dir, tmp_path_factory.mktemp("tiny-neg"), seed=2)
