"""Generation backends, resolved by name and imported lazily.

A backend owns the live model: it loads it, switches it between the base, a dense merge and
per-request low-rank mixing, and runs batched decoding for the scheduler. ``transformers`` is the
default (CPU or CUDA); ``vllm`` is optional and imported only when chosen.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from prefvec.errors import ValidationError

if TYPE_CHECKING:
    from prefvec.server.backends.base import Backend
    from prefvec.server.settings import ServerSettings

# name -> "module:class"; modules are imported only when the backend is chosen.
BACKENDS: dict[str, str] = {
    "transformers": "prefvec.server.backends.transformers_backend:TransformersBackend",
    "vllm": "prefvec.server.backends.vllm_backend:VLLMBackend",
}


def available_backends() -> list[str]:
    """Registered backend names (whether or not their extras are installed)."""
    return sorted(BACKENDS)


def get_backend(settings: ServerSettings) -> Backend:
    """Instantiate the backend named by ``settings.backend`` (not loaded yet: call ``load()``).

    Raises:
        ValidationError: unknown backend name.
        BackendUnavailableError: the backend's optional dependencies are missing.
    """
    target = BACKENDS.get(settings.backend)
    if target is None:
        raise ValidationError(
            f"`backend` must be one of {available_backends()}, got {settings.backend!r}",
            field="backend",
        )
    module_name, _, cls_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    backend: Backend = cls(settings)
    return backend


__all__ = ["BACKENDS", "available_backends", "get_backend"]
