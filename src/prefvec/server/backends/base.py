"""The request-level seam between the serving service and a generation backend.

A backend is an asynchronous per-request engine, shaped like vLLM's ``EngineClient``:

* :meth:`Backend.generate` takes one :class:`GenerationRequest` and yields its events
  (:class:`TextEvent` per decoded piece, then one :class:`FinishEvent`); an error raises from the
  iterator. Leaving the iterator early (a client that went away) aborts the request.
* :meth:`Backend.abort` withdraws a request by id, queued or running.
* :attr:`Backend.capabilities` declares what the backend can serve (per-row low-rank mixing,
  dense recipes, ranks, log-probabilities); the resolver consults it to pick the serving path or
  refuse the request with a 4xx before anything is queued.

How requests are batched is the backend's own business: the transformers backend runs its own
iteration-level batcher; vLLM batches continuously by itself.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefvec.protocol import FinishReason, Usage

if TYPE_CHECKING:
    from prefvec.server.generation import SamplingParams
    from prefvec.server.resolver import Resolved
    from prefvec.server.settings import ServerSettings

VectorSource = Callable[[str, str], Any]
"""``(ref "name@version", sha256) -> PreferenceVector``: how a backend loads a pinned vector."""


@dataclass(frozen=True)
class Capabilities:
    """What a backend can serve; the resolver refuses the rest with a 4xx.

    Args:
        lowrank_mixing: linear recipes over low-rank vectors, per request, batched together.
        dense_recipes: dense vectors and non-linear methods (TIES, DARE), served as merged
            weights (requests grouped by recipe).
        max_lowrank_rank: the largest total rank Σrᵢ of one low-rank recipe (None: unbounded).
        logprobs: per-token log-probabilities of generated tokens (and their top alternatives).
        prompt_logprobs: log-probabilities of the prompt tokens (``echo`` scoring).
        max_top_logprobs: how many alternatives per token at most.
    """

    lowrank_mixing: bool = True
    dense_recipes: bool = True
    max_lowrank_rank: int | None = None
    logprobs: bool = True
    prompt_logprobs: bool = True
    max_top_logprobs: int = 20


def eos_token_ids(*sources: Any) -> set[int]:
    """End-of-sequence ids from tokenizer / generation-config values (an int, a list, or None)."""
    ids: set[int] = set()
    for src in sources:
        if isinstance(src, int):
            ids.add(src)
        elif isinstance(src, (list, tuple)):
            ids.update(int(i) for i in src)
    return ids


@dataclass(frozen=True)
class TokenLogprob:
    """Log-probability of one token, with the top alternatives at its position."""

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True)
class TextEvent:
    """New output: the text delta (may be empty while a UTF-8 character or a possible stop
    string is held back), the token ids it came from, and their log-probabilities if asked."""

    text: str
    token_ids: tuple[int, ...] = ()
    logprobs: tuple[TokenLogprob, ...] | None = None


@dataclass(frozen=True)
class FinishEvent:
    """The end of a request: why, token counts, and the prompt's log-probabilities if asked
    (one entry per prompt token; the first is None, it has no context)."""

    reason: FinishReason
    usage: Usage
    prompt_logprobs: tuple[TokenLogprob | None, ...] | None = None


Event = TextEvent | FinishEvent


@dataclass
class GenerationRequest:
    """One prepared generation: token ids, checked sampling parameters and the pinned merge.

    Args:
        prompt_ids: the prompt's token ids.
        params: checked sampling parameters.
        resolved: the pinned merge and serving path (:class:`~prefvec.server.resolver.Resolved`).
        id: unique request id (used by :meth:`Backend.abort`).
        deadline: ``time.monotonic()`` by which it must finish, or None.
        kind: what asked for it ("chat", "completion", "compare", ...), for fair queueing.
        user: the caller's user id, for fair queueing.
    """

    prompt_ids: list[int]
    params: SamplingParams
    resolved: Resolved
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:24])
    deadline: float | None = None
    kind: str = "generate"
    user: str | None = None


class Backend(ABC):
    """A live model serving :class:`GenerationRequest` s (see the module docstring).

    Lifecycle: ``load()`` (blocking, at start-up, in a worker thread), ``start(vectors)`` once the
    store is open, then ``generate`` / ``abort`` from the event loop, ``close()`` at shutdown.
    """

    name: str = "abstract"
    capabilities: Capabilities = Capabilities()

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.ready = False
        self.tokenizer: Any = None
        self.model_dir: Path | None = None
        self.fingerprint: str | None = None
        self.device: str = "cpu"
        self.max_positions: int | None = None

    @abstractmethod
    def load(self) -> None:
        """Load the base model and tokenizer; set :attr:`ready`."""

    @abstractmethod
    def start(self, vectors: VectorSource) -> None:
        """Begin serving; ``vectors`` loads the pinned vectors that requests name."""

    @abstractmethod
    def generate(self, request: GenerationRequest) -> AsyncGenerator[Event, None]:
        """Yield the request's events; raises the error it failed with.

        Raises:
            QueueFullError: the backend's queue is full (before any event).
            PrefvecError: the request failed (vectors could not be loaded, timed out, ...).
        """

    @abstractmethod
    def abort(self, request_id: str) -> None:
        """Withdraw a request (queued or running); unknown ids are ignored."""

    def forget_vector(self, name: str) -> None:  # noqa: B027 - optional hook
        """A vector was deleted from the store: drop what the backend holds of it."""

    def stats(self) -> dict[str, Any]:
        """Live figures for ``/metrics``: ``queue_depth``, ``running`` and backend extras."""
        return {"queue_depth": 0, "running": 0}

    def close(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Stop serving and release the model."""
