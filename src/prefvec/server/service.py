"""The serving service, free of HTTP: resolve -> prepare -> submit -> collect or stream.

Every way of generating goes through :class:`GenerationService`: the OpenAI routes, ``/v1/compare``,
experiments, the CLI's ``prefvec generate`` and the evaluation's in-process target. Equal inputs
therefore give equal outputs by construction, not only by test.

The service also owns what is per request but not per backend: fair admission (one user, or one
compare, may hold only a share of the queue; a compare's generations are admitted all at once or
not at all), time-outs, usage metrics, and withdrawal -- a request whose consumer stops (a client
that went away, a refused compare, a time-out) is aborted on the backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from typing import Any, TypeVar

from prefvec.errors import BadRequestError, QueueFullError, RequestTimeoutError
from prefvec.protocol import FinishReason, MergeOptions, PrefvecInfo, Usage
from prefvec.server.backends.base import (
    Backend,
    Event,
    FinishEvent,
    GenerationRequest,
    TextEvent,
    TokenLogprob,
)
from prefvec.server.resolver import Resolved, Resolver

logger = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class Completion:
    """A finished generation, collected."""

    text: str
    reason: FinishReason
    usage: Usage
    info: PrefvecInfo
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] | None = None
    prompt_logprobs: list[TokenLogprob | None] | None = None


@dataclass
class Stream:
    """A started generation: its first event is known (so errors before it keep their HTTP
    status); iterate :meth:`events` for the first and the rest."""

    request: GenerationRequest
    first: Event
    _rest: AsyncGenerator[Event, None]

    async def events(self) -> AsyncIterator[Event]:
        yield self.first
        async for event in self._rest:
            yield event

    async def aclose(self) -> None:
        await self._rest.aclose()


class Admission:
    """Fair shares of the queue: per user, and per compare request (all-or-nothing)."""

    def __init__(self, max_queue: int, user_share: float, compare_share: float) -> None:
        self.user_cap = max(1, math.floor(max_queue * user_share))
        self.compare_cap = max(1, math.floor(max_queue * compare_share))
        self.max_queue = max_queue
        self._by_user: Counter[str] = Counter()
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def hold(self, user: str | None, n: int = 1) -> Iterator[None]:
        """Hold ``n`` slots for ``user`` while the body runs.

        Raises:
            QueueFullError: the user already holds its share.
        """
        key = user or ""
        with self._lock:
            if user is not None and self._by_user[key] + n > self.user_cap:
                raise QueueFullError(
                    f"user {user!r} already has {self._by_user[key]} requests in flight, the "
                    f"limit is {self.user_cap} (`max_queue_share_user`)",
                    retry_after=1.0,
                )
            self._by_user[key] += n
        try:
            yield
        finally:
            with self._lock:
                self._by_user[key] -= n
                if self._by_user[key] <= 0:
                    del self._by_user[key]


class GenerationService:
    """Resolve, prepare and run generations on a backend (see the module docstring).

    Args:
        settings: server settings.
        resolver: the :class:`~prefvec.server.resolver.Resolver` over the store.
        backend: a started :class:`~prefvec.server.backends.base.Backend`.
        experiments: the experiment service (for ``experiment`` requests), optional.
        metrics: the server's :class:`~prefvec.server.metrics.Metrics`, optional.
    """

    def __init__(
        self,
        settings: Any,
        resolver: Resolver,
        backend: Backend,
        experiments: Any = None,
        metrics: Any = None,
    ) -> None:
        self.settings = settings
        self.resolver = resolver
        self.backend = backend
        self.experiments = experiments
        self.metrics = metrics
        self.admission = Admission(
            settings.max_queue, settings.max_queue_share_user, settings.max_queue_share_compare
        )

    # -- resolve and prepare (blocking: call from a worker thread in async code) --------------

    def resolve(
        self,
        *,
        preferences: Mapping[str, float] | None = None,
        recipe: str | None = None,
        merge: MergeOptions | None = None,
        model: str | None = None,
        experiment: str | None = None,
        user: str | None = None,
        field_prefix: str = "",
    ) -> Resolved:
        """The pinned merge of a request: an experiment's arm, a recipe, or weights."""
        if experiment is not None:
            if preferences or recipe:
                raise BadRequestError(
                    f"`{field_prefix}experiment` ({experiment!r}) picks the recipe; do not also "
                    "send `preferences` or `recipe`",
                    field=f"{field_prefix}experiment",
                )
            if self.experiments is None:
                raise BadRequestError("experiments are not available here", field="experiment")
            arm = self.experiments.route(experiment, user)
            return self.resolver.resolve(recipe=arm.recipe).with_experiment(experiment, arm.name)
        return self.resolver.resolve(
            preferences=preferences, recipe=recipe, merge=merge, model=model,
            field_prefix=field_prefix,
        )  # fmt: skip

    def prepare(
        self,
        resolved: Resolved,
        *,
        messages: Sequence[Mapping[str, str]] | None = None,
        prompt: str | None = None,
        prompt_ids: list[int] | None = None,
        kind: str = "generate",
        user: str | None = None,
        **sampling: Any,
    ) -> GenerationRequest:
        """A checked :class:`GenerationRequest` for a chat, a text prompt or token ids.

        Args:
            resolved: from :meth:`resolve`.
            messages / prompt / prompt_ids: exactly one.
            sampling: keyword arguments of :meth:`Resolver.sampling_params` (``max_tokens``,
                ``temperature``, ``top_p``, ``seed``, ``stop``, ``logprobs``,
                ``prompt_logprobs``).
        """
        if messages is not None:
            ids = self.resolver.encode_chat(messages)
        elif prompt is not None:
            ids = self.resolver.encode_text(prompt, "prompt")
        elif prompt_ids is not None:
            ids = self.resolver.check_ids(prompt_ids, "prompt")
        else:
            raise BadRequestError("a prompt is required", field="prompt")
        params = self.resolver.sampling_params(prompt_len=len(ids), **sampling)
        deadline = time.monotonic() + self.settings.request_timeout_s
        return GenerationRequest(ids, params, resolved, deadline=deadline, kind=kind, user=user)

    # -- run -----------------------------------------------------------------------------------

    async def events(self, request: GenerationRequest) -> AsyncGenerator[Event, None]:
        """The request's events, within its time-out; withdrawn from the backend if the consumer
        stops early. Usage is recorded at the finish."""
        with self.admission.hold(request.user):
            events = self.backend.generate(request)
            finished = False
            try:
                while True:
                    event = await self._next(events, request)
                    if event is None:
                        return
                    if isinstance(event, FinishEvent):
                        finished = True
                        self._record(request, event)
                    yield event
            except BaseException as exc:
                self._reject(exc)
                raise
            finally:
                if not finished:  # withdrawn whatever state the backend's iterator is in
                    self.backend.abort(request.id)
                # an iterator still unwinding a cancellation cannot be closed twice
                with contextlib.suppress(RuntimeError):
                    await events.aclose()

    async def _next(self, events: AsyncIterator[Event], request: GenerationRequest) -> Any:
        left = (request.deadline or math.inf) - time.monotonic()
        try:
            return await asyncio.wait_for(events.__anext__(), timeout=max(left, 0.0))
        except StopAsyncIteration:
            return None
        except (TimeoutError, asyncio.TimeoutError):
            raise RequestTimeoutError(
                f"request exceeded `request_timeout_s` = {self.settings.request_timeout_s:g} s",
                field="timeout",
            ) from None

    async def start(self, request: GenerationRequest) -> Stream:
        """Submit and wait for the first event (an error before it raises here)."""
        events = self.events(request)
        try:
            first = await events.__anext__()
        except BaseException:
            await events.aclose()
            raise
        return Stream(request, first, events)

    async def complete(self, request: GenerationRequest) -> Completion:
        """Run to the end and collect text, token ids and log-probabilities."""
        text: list[str] = []
        ids: list[int] = []
        logprobs: list[TokenLogprob] | None = [] if request.params.logprobs is not None else None
        finish: FinishEvent | None = None
        async for event in self.events(request):
            if isinstance(event, TextEvent):
                text.append(event.text)
                ids.extend(event.token_ids)
                if logprobs is not None and event.logprobs:
                    logprobs.extend(event.logprobs)
            else:
                finish = event
        if finish is None:
            raise RequestTimeoutError("the request ended without finishing", field="timeout")
        prompt_lp = list(finish.prompt_logprobs) if finish.prompt_logprobs is not None else None
        return Completion(
            "".join(text), finish.reason, finish.usage, request.resolved.info(), ids, logprobs,
            prompt_lp,
        )  # fmt: skip

    async def complete_many(
        self, requests: Sequence[GenerationRequest], user: str | None = None
    ) -> list[Completion]:
        """Run several generations of one request (compare, ``n``) fairly: they are admitted
        together or not at all, at most the compare share of the queue runs at once, and if
        one fails the others are withdrawn."""
        limit = self.admission.compare_cap
        queued = int(self.backend.stats().get("queue_depth", 0))
        want = min(len(requests), limit)
        if queued + want > self.settings.max_queue:
            raise QueueFullError(
                f"the request queue cannot take {want} more generations ({queued} pending, "
                f"`max_queue` = {self.settings.max_queue}); retry after "
                f"{self.settings.retry_after_s:g} s",
                retry_after=self.settings.retry_after_s,
            )
        gate = asyncio.Semaphore(limit)

        async def one(req: GenerationRequest) -> Completion:
            async with gate:
                return await self.complete(req)

        return await gather_or_cancel([one(r) for r in requests])

    # -- metrics -------------------------------------------------------------------------------

    def _record(self, request: GenerationRequest, finish: FinishEvent) -> None:
        m = self.metrics
        if m is None:
            return
        path = request.resolved.path
        m.prompt_tokens.labels(path).inc(finish.usage.prompt_tokens)
        m.completion_tokens.labels(path).inc(finish.usage.completion_tokens)
        m.generations.labels(path, finish.reason).inc()

    def _reject(self, exc: BaseException) -> None:
        code = getattr(exc, "code", None)
        if self.metrics is not None and code is not None:
            self.metrics.rejected.labels(code).inc()


async def gather_or_cancel(aws: Sequence[Awaitable[T]]) -> list[T]:
    """``asyncio.gather`` that cancels (and so withdraws) the rest when one fails."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def until_disconnected(
    receive: Callable[[], Awaitable[Mapping[str, Any]]], work: Awaitable[T]
) -> T:
    """Run ``work`` but cancel it when the client disconnects (ASGI ``http.disconnect``), so a
    non-streaming request whose client left stops generating (its backend request is aborted).

    Raises:
        ClientDisconnectedError: the client went away first.
    """
    from prefvec.errors import ClientDisconnectedError

    task = asyncio.ensure_future(work)

    async def watch() -> None:
        while True:
            message = await receive()
            if message.get("type") == "http.disconnect":
                return

    watcher = asyncio.ensure_future(watch())
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        raise ClientDisconnectedError("the client disconnected before the response was ready")
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
