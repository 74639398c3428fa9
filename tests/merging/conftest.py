"""Fixtures of the merging tests: the tiny base, θ+ and θ− loaded in fp32, and their deltas."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


def load_fp32(path: Path) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.fixture(scope="session")
def base_params(tiny_base_dir: Path) -> dict[str, torch.Tensor]:
    return params(load_fp32(tiny_base_dir))


@pytest.fixture(scope="session")
def pos_params(tiny_pos_dir: Path) -> dict[str, torch.Tensor]:
    return params(load_fp32(tiny_pos_dir))


@pytest.fixture(scope="session")
def neg_params(tiny_neg_dir: Path) -> dict[str, torch.Tensor]:
    return params(load_fp32(tiny_neg_dir))


@pytest.fixture(scope="session")
def delta_pos(
    base_params: dict[str, torch.Tensor], pos_params: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """δ+ = θ+ − θ_base (positive-only vector)."""
    return {n: pos_params[n] - base_params[n] for n in base_params}


@pytest.fixture(scope="session")
def delta_neg(
    base_params: dict[str, torch.Tensor], neg_params: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """δ− = θ− − θ_base."""
    return {n: neg_params[n] - base_params[n] for n in base_params}


@pytest.fixture()
def base_model(tiny_base_dir: Path) -> torch.nn.Module:
    """A fresh fp32 base model per test (tests modify it in place)."""
    return load_fp32(tiny_base_dir)
