"""Server settings: environment (``PREFVEC_*``), an optional settings file, then defaults.

Precedence, highest first: keyword arguments, environment variables, the settings file
(``settings_file=`` or ``PREFVEC_SETTINGS_FILE``; JSON or TOML), the defaults below. List
settings read from the environment are JSON (``PREFVEC_OPERATOR_KEYS='["k1","k2"]'``) or a
comma-separated string (``PREFVEC_OPERATOR_KEYS=k1,k2``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

import tomllib
from pydantic import Field, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from prefvec.defaults import DEFAULT_BASE
from prefvec.errors import ValidationError

_LIST_FIELDS = {"operator_keys", "user_keys", "scorers", "trusted_proxies"}


def prefvec_home_dir() -> Path:
    """``$PREFVEC_HOME`` or ``~/.cache/prefvec``."""
    return Path(os.environ.get("PREFVEC_HOME", "~/.cache/prefvec")).expanduser()


class _CommaListEnvSource(EnvSettingsSource):
    """Env source that also accepts ``a,b,c`` for list settings."""

    def prepare_field_value(
        self, field_name: str, field: FieldInfo, value: Any, value_is_complex: bool
    ) -> Any:
        if field_name in _LIST_FIELDS and isinstance(value, str):
            text = value.strip()
            if not text.startswith("["):
                return [v.strip() for v in text.split(",") if v.strip()]
            return json.loads(text)
        return super().prepare_field_value(field_name, field, value, value_is_complex)


class _FileSource(PydanticBaseSettingsSource):
    """Reads the JSON/TOML file named by ``settings_file`` or ``PREFVEC_SETTINGS_FILE``."""

    def __init__(self, settings_cls: type[BaseSettings], init: InitSettingsSource) -> None:
        super().__init__(settings_cls)
        self._path = init.init_kwargs.get("settings_file") or os.environ.get(
            "PREFVEC_SETTINGS_FILE"
        )

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        if not self._path:
            return {}
        path = Path(self._path).expanduser()
        if not path.is_file():
            raise ValidationError(
                f"`settings_file` {str(path)!r} does not exist", field="settings_file"
            )
        text = path.read_text()
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
        if not isinstance(data, dict):
            raise ValidationError(
                f"`settings_file` {str(path)!r} must hold an object", field="settings_file"
            )
        return data


class ServerSettings(BaseSettings):
    """Everything the inference server can be told (env prefix ``PREFVEC_``)."""

    model_config = SettingsConfigDict(env_prefix="PREFVEC_", extra="ignore")

    settings_file: Path | None = Field(
        default=None, description="JSON/TOML file with these settings."
    )
    home: Path = Field(default_factory=prefvec_home_dir, description="prefvec cache root.")
    base: str = Field(
        default=DEFAULT_BASE, description="bundled:<name>, a model folder, or a hub id."
    )
    served_model_name: str | None = Field(
        default=None, description="Model id reported (default: base)."
    )
    store_dir: Path | None = Field(
        default=None, description="Vector store root (default: home/store)."
    )
    preload_vectors_dir: Path | None = Field(
        default=None,
        description="Folder of *.safetensors vectors put into the store at start if absent.",
    )
    backend: str = Field(
        default="transformers", description="Generation backend: transformers | vllm."
    )
    dtype: str = Field(default="float32", description="float32 | bfloat16 | float16.")
    device: str = Field(default="auto", description="auto (cuda when available) | cpu | cuda[:n].")
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    log_level: str = "info"

    max_batch_size: int = Field(default=8, ge=1, le=256)
    batching: Literal["continuous", "static"] = Field(
        default="continuous",
        description="transformers backend: 'continuous' admits newcomers between decode steps "
        "(iteration-level batching); 'static' runs each batch to its end (for comparison).",
    )
    max_prefill_tokens: int = Field(
        default=256,
        ge=1,
        description="Prompt tokens prefilled per step at most (longer prompts are prefilled in "
        "chunks between decode steps, so running rows are not stalled for long). 256 on the "
        "bundled model on 2 CPU cores: a chunk holds running rows ~7 decode steps, and a "
        "1024-token prompt's prefill costs about what one 1024-token chunk does "
        "(bench/prefill.py, BENCHMARKS.md §4b).",
    )
    max_queue_share_compare: float = Field(
        default=0.5,
        gt=0.0,
        le=1.0,
        description="Share of `max_queue` that one /v1/compare request may take.",
    )
    max_queue_share_user: float = Field(
        default=1.0,
        gt=0.0,
        le=1.0,
        description="Share of `max_queue` that one user's requests may hold at once.",
    )
    max_queue: int = Field(default=64, ge=1, description="Pending requests before 429.")
    retry_after_s: float = Field(default=1.0, gt=0.0, description="Retry-After sent with a 429.")
    request_timeout_s: float = Field(default=120.0, gt=0.0)
    max_prompt_tokens: int = Field(default=2048, ge=1)
    max_tokens_limit: int = Field(
        default=1024, ge=1, description="Upper bound of a request's max_tokens."
    )
    default_max_tokens: int = Field(default=256, ge=1)
    max_vectors_per_request: int = Field(default=8, ge=1)
    max_n: int = Field(
        default=8, ge=1, le=128, description="Most choices (`n`) one generation request may ask."
    )
    model_aliases: dict[str, str] = Field(
        default_factory=dict,
        description="Extra `model` names accepted: {alias: 'base' or 'recipe:<name>'}, e.g. "
        '{"gpt-4o-mini": "base"} (env: JSON).',
    )
    weight_min: float = -5.0
    weight_max: float = 5.0
    max_body_bytes: int = Field(default=1 << 20, ge=1024, description="JSON request bodies.")
    max_upload_bytes: int = Field(default=1 << 31, ge=1024, description="Vector uploads.")
    merge_cache_bytes: int = Field(default=2 << 30, ge=0, description="Merged-weight LRU cache.")
    vector_cache_size: int = Field(default=32, ge=1, description="Loaded vectors kept in memory.")

    # vLLM backend (issue 13): one exact LoRA adapter per linear recipe over low-rank vectors
    max_loras: int = Field(default=8, ge=1, description="vLLM: distinct adapters in one batch.")
    max_cpu_loras: int = Field(
        default=32, ge=1, description="vLLM: adapters kept loaded (>= max_loras)."
    )
    max_lora_rank: int = Field(
        default=64,
        description="vLLM: largest total rank Σr of one recipe; one of 1, 8, 16, 32, 64, 128, "
        "256, 320, 512 (vLLM's allowed values).",
    )
    tensor_parallel_size: int = Field(default=1, ge=1, description="vLLM: GPUs per replica.")
    gpu_memory_utilization: float = Field(
        default=0.9, gt=0.0, le=1.0, description="vLLM on GPU: share of GPU memory it may use."
    )
    vllm_kv_cache_gib: int = Field(
        default=4, ge=1, description="vLLM on CPU: KV cache size in whole GiB."
    )
    adapter_cache_bytes: int = Field(
        default=1 << 30, ge=1, description="vLLM: bytes of recipe adapter files kept (LRU)."
    )

    operator_keys: list[str] = Field(default_factory=list)
    user_keys: list[str] = Field(default_factory=list)
    # trust (issue 15): nothing is trusted by where it comes from unless the operator says so
    trust_loopback_operator: bool = Field(
        default=False,
        description="With no operator key: serve operator routes to loopback clients (127.0.0.1, "
        "::1). Opt-in: behind a reverse proxy on the same host every client looks loopback.",
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Proxy addresses or networks (e.g. 127.0.0.1, 10.0.0.0/8) whose "
        "X-Forwarded-For names the client; X-Forwarded-For from anyone else is ignored.",
    )
    body_read_timeout_s: float = Field(
        default=30.0,
        gt=0.0,
        description="Seconds to wait for the next piece of a request body before a 408.",
    )
    # experiments (issue 15): every number that enters is bounded
    max_experiment_arms: int = Field(default=16, ge=2, le=1024, description="Arms per experiment.")
    max_abs_rating: float = Field(
        default=1e6, gt=0.0, le=1e12, description="Feedback ratings must lie in ±this."
    )
    max_feedback_chars: int = Field(
        default=4096, ge=0, le=1_000_000, description="Characters of a feedback comment."
    )
    scorers: list[str] = Field(default_factory=list, description="Scorers used by /v1/compare.")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        assert isinstance(init_settings, InitSettingsSource)
        return (
            init_settings,
            _CommaListEnvSource(settings_cls),
            _FileSource(settings_cls, init_settings),
        )

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, data: Any) -> Any:
        """``base_model`` (the CLI's name) is accepted for ``base``."""
        if isinstance(data, dict) and data.get("base_model") is not None:
            data = {**data, "base": data["base_model"]}
            data.pop("base_model")
        return data

    @field_validator("trusted_proxies", mode="after")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        import ipaddress

        bad = []
        for entry in v:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                bad.append(entry)
        if bad:
            raise ValueError(f"`trusted_proxies` takes IP addresses or networks, got {bad}")
        return v

    @field_validator("home", "store_dir", "preload_vectors_dir", mode="after")
    @classmethod
    def _expand(cls, v: Path | None) -> Path | None:
        return v.expanduser() if v is not None else None

    @model_validator(mode="after")
    def _check(self) -> ServerSettings:
        if self.weight_min >= self.weight_max:
            raise ValueError(f"weight_min ({self.weight_min}) must be < weight_max")
        if self.default_max_tokens > self.max_tokens_limit:
            self.default_max_tokens = self.max_tokens_limit
        from prefvec.merging.adapters import ALLOWED_MAX_LORA_RANKS

        if self.max_lora_rank not in ALLOWED_MAX_LORA_RANKS:
            raise ValueError(
                f"max_lora_rank must be one of {list(ALLOWED_MAX_LORA_RANKS)} (vLLM's values), "
                f"got {self.max_lora_rank}"
            )
        return self

    @property
    def store_root(self) -> Path:
        """Where the vector store lives."""
        return self.store_dir if self.store_dir is not None else self.home / "store"

    @property
    def model_name(self) -> str:
        """The model id reported by ``/v1/models`` and in responses."""
        return self.served_model_name or self.base

    def public_dict(self) -> dict[str, Any]:
        """Settings without secrets (for logs)."""
        data = self.model_dump(mode="json")
        for key in ("operator_keys", "user_keys"):
            data[key] = f"<{len(data[key])} keys>"
        return data


Settings = ServerSettings
"""Alias used by ``prefvec serve``."""
