"""The interface every generation backend implements (see :mod:`prefvec.server.backends`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from prefvec.server.engine import Job
    from prefvec.server.settings import ServerSettings

Delta = Mapping[str, "torch.Tensor"]
DeltaBuilder = Callable[[], Sequence[tuple[Delta, float]]]
FactorsLoader = Callable[[], Mapping[str, tuple["torch.Tensor", "torch.Tensor"]]]


class Backend(ABC):
    """A live model that the engine switches between recipes and decodes batches with.

    Methods are called from the scheduler's single worker thread (never concurrently), except
    :meth:`load`, called once at start-up.
    """

    name: str = "abstract"

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.ready = False
        self.tokenizer: Any = None
        self.model_dir: Path | None = None
        self.fingerprint: str | None = None
        self.device: str = "cpu"
        self.max_positions: int | None = None
        self.merges_built = 0

    @abstractmethod
    def load(self) -> None:
        """Load the base model and tokenizer; set :attr:`ready`."""

    @abstractmethod
    def activate_base(self) -> None:
        """Put the model back on the base weights (bit-exact)."""

    @abstractmethod
    def activate_dense(self, key: str, build: DeltaBuilder) -> None:
        """Serve the dense merge ``key``: from the merged-weight cache, or built by ``build()``."""

    @abstractmethod
    def ensure_lowrank(self, ref: str, load: FactorsLoader) -> None:
        """Make the low-rank vector ``ref`` available to per-request mixing."""

    @abstractmethod
    def drop_lowrank(self, ref: str) -> None:
        """Forget a low-rank vector registered with :meth:`ensure_lowrank`."""

    @abstractmethod
    def decode(self, jobs: Sequence[Job], weights: Sequence[Mapping[str, float]] | None) -> None:
        """Generate for ``jobs`` as one batch, streaming through each job's sink.

        Args:
            jobs: the batch rows.
            weights: per row ``{lowrank ref: weight}`` for per-request mixing, or None.
        """

    def cache_stats(self) -> dict[str, int]:
        """Merged-weight cache counters (hits, misses, evictions, nbytes, merges_built)."""
        return {"merges_built": self.merges_built}

    def close(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Release the model."""
