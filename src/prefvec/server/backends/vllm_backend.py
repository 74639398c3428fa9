"""vLLM backend (placeholder).

The real vLLM backend (per-request LoRA mixing through vLLM's multi-LoRA batching, dense recipes
as merged checkpoints) is a later issue. This module exists so ``backend = "vllm"`` resolves by
name: importing vLLM happens only here, and without it the user gets an install hint instead of
an ImportError deep in the stack.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from prefvec.errors import BackendUnavailableError
from prefvec.server.backends.base import Backend, DeltaBuilder, FactorsLoader

if TYPE_CHECKING:
    from prefvec.server.engine import Job
    from prefvec.server.settings import ServerSettings

INSTALL_HINT = "pip install 'prefvec[vllm]' (GPU only; vLLM pins its own torch)"


class VLLMBackend(Backend):
    """Placeholder for the vLLM backend; raises :class:`BackendUnavailableError` until written."""

    name = "vllm"

    def __init__(self, settings: ServerSettings) -> None:
        super().__init__(settings)
        if importlib.util.find_spec("vllm") is None:
            raise BackendUnavailableError(
                f"`backend` 'vllm' needs the vllm package: {INSTALL_HINT}", field="backend"
            )

    def _todo(self) -> BackendUnavailableError:
        return BackendUnavailableError(
            "`backend` 'vllm' is not implemented yet (a later issue); use 'transformers'",
            field="backend",
        )

    def load(self) -> None:
        raise self._todo()

    def activate_base(self) -> None:
        raise self._todo()

    def activate_dense(self, key: str, build: DeltaBuilder) -> None:
        raise self._todo()

    def ensure_lowrank(self, ref: str, load: FactorsLoader) -> None:
        raise self._todo()

    def drop_lowrank(self, ref: str) -> None:
        raise self._todo()

    def decode(self, jobs: Sequence[Job], weights: Sequence[Mapping[str, float]] | None) -> None:
        raise self._todo()
