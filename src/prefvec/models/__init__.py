"""Base models: the bundled default, local folders, hub ids from the local cache."""

from prefvec.defaults import DEFAULT_BASE
from prefvec.models.bundled import convert_bundled, find_gguf, prefvec_home
from prefvec.models.loading import (
    LoadedBase,
    load_base,
    load_tokenizer,
    parse_dtype,
    resolve_device,
    resolve_model_dir,
)

__all__ = [
    "DEFAULT_BASE",
    "LoadedBase",
    "convert_bundled",
    "find_gguf",
    "load_base",
    "load_tokenizer",
    "parse_dtype",
    "prefvec_home",
    "resolve_device",
    "resolve_model_dir",
]
