"""Request queue and batch scheduler.

The asyncio side submits :class:`~prefvec.server.engine.Job` s; one worker thread forms batches
and runs them on the engine. Batching rule: the oldest pending job picks the group (its recipe
key for dense jobs; the shared mixing group for base and low-rank jobs), the worker waits up to
``max_wait_ms`` for the batch to fill, then takes up to ``max_batch_size`` pending jobs of that
group in arrival order. Tokens reach each request through its sink as they are generated.

Arrival-aware gathering: routes announce a request with :meth:`Scheduler.arriving` while it is
being resolved and tokenised (before it can be submitted). While such requests are on their way
and the batch is not full, the worker keeps waiting, up to ``max_gather_ms`` in all. A burst of
concurrent requests thus lands in one batch instead of a first small batch that the rest then
wait behind for a whole generation; a lone request (nothing arriving) waits only ``max_wait_ms``.

Failure containment: an exception while running a batch fails the jobs of that batch that have
not finished; the worker loop itself never dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any

from prefvec.errors import PrefvecError, QueueFullError, RequestTimeoutError
from prefvec.protocol import Usage
from prefvec.server.engine import Engine, Job
from prefvec.server.generation import FinishReason

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchRecord:
    """One executed batch (kept in :attr:`Scheduler.batch_log` for metrics and tests)."""

    index: int
    group: str
    job_ids: tuple[str, ...]
    seconds: float


class Scheduler:
    """Queue + single worker thread running batches on an :class:`Engine`.

    Args:
        engine: the generation service.
        max_batch_size: rows per batch at most.
        max_wait_ms: how long a batch waits to fill once a first job is pending.
        max_gather_ms: how long it may wait in all while announced requests are still arriving
            (see :meth:`arriving`); never less than ``max_wait_ms``.
        max_queue: pending jobs before :meth:`submit` raises :class:`QueueFullError`.
        retry_after_s: the ``Retry-After`` a 429 suggests.
        on_batch: called with each :class:`BatchRecord` (metrics).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        max_batch_size: int = 8,
        max_wait_ms: float = 10.0,
        max_gather_ms: float = 100.0,
        max_queue: int = 64,
        retry_after_s: float = 1.0,
        on_batch: Callable[[BatchRecord, list[Job]], None] | None = None,
    ) -> None:
        self.engine = engine
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.max_gather = max(max_gather_ms, max_wait_ms) / 1000.0
        self._arriving = 0
        self.max_queue = max_queue
        self.retry_after_s = retry_after_s
        self.on_batch = on_batch
        self.batch_log: deque[BatchRecord] = deque(maxlen=1000)
        self._pending: deque[Job] = deque()
        self._cv = threading.Condition()
        self._paused = False
        self._running = False
        self._busy = 0
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker thread."""
        if self._thread is not None:
            return
        self._running = True
        self._thread = threading.Thread(target=self._loop, name="prefvec-scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the worker; pending jobs fail with a 503-like error."""
        with self._cv:
            self._running = False
            pending, self._pending = list(self._pending), deque()
            self._cv.notify_all()
        for job in pending:
            job.fail(PrefvecError("server is shutting down"))
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def pause(self) -> None:
        """Stop forming new batches (queued jobs wait); for draining and maintenance."""
        with self._cv:
            self._paused = True

    def resume(self) -> None:
        with self._cv:
            self._paused = False
            self._cv.notify_all()

    @property
    def queue_depth(self) -> int:
        """Jobs waiting for a batch."""
        return len(self._pending)

    @property
    def running(self) -> int:
        """Jobs in the batch being generated."""
        return self._busy

    # -- submission ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def arriving(self) -> Any:
        """Announce a request that will be submitted soon (held while it is being prepared).

        The worker forming a batch keeps waiting (up to ``max_gather_ms``) while announced
        requests have not been submitted yet.
        """
        with self._cv:
            self._arriving += 1
        try:
            yield
        finally:
            with self._cv:
                self._arriving -= 1
                self._cv.notify_all()

    def submit(self, job: Job) -> None:
        """Queue a job.

        Raises:
            QueueFullError: ``max_queue`` jobs are already pending (HTTP 429 with Retry-After).
        """
        with self._cv:
            if len(self._pending) >= self.max_queue:
                raise QueueFullError(
                    f"the request queue is full ({len(self._pending)} pending, `max_queue` = "
                    f"{self.max_queue}); retry after {self.retry_after_s:g} s",
                    retry_after=self.retry_after_s,
                )
            self._pending.append(job)
            self._cv.notify_all()

    def cancel(self, job: Job) -> None:
        """Cancel a job: dropped from the queue, or its row leaves the running batch."""
        job.cancel()
        with self._cv, contextlib.suppress(ValueError):
            self._pending.remove(job)

    # -- worker --------------------------------------------------------------------------------

    def _take_batch(self) -> list[Job] | None:
        with self._cv:
            while self._running and (self._paused or not self._pending):
                self._cv.wait(0.5)
            if not self._running:
                return None
            start = time.monotonic()
            deadline, gather_deadline = start + self.max_wait, start + self.max_gather
            group = self._pending[0].group_key
            while True:
                same = sum(1 for j in self._pending if j.group_key == group)
                limit = gather_deadline if self._arriving > 0 else deadline
                left = limit - time.monotonic()
                if same >= self.max_batch_size or left <= 0 or self._paused:
                    break
                self._cv.wait(left)
            batch = [j for j in self._pending if j.group_key == group][: self.max_batch_size]
            for job in batch:
                self._pending.remove(job)
            self._busy = len(batch)
            return batch

    def _loop(self) -> None:
        index = 0
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            if not batch:
                continue
            started = time.monotonic()
            try:
                self.engine.run_batch(batch)
            except Exception as exc:
                logger.exception("batch of %d jobs failed", len(batch))
                for job in batch:
                    job.fail(exc)
            finally:
                self._busy = 0
            for job in batch:  # a backend that returned without finishing a row
                if not job.finished:
                    job.fail(RequestTimeoutError("request was cancelled", field="timeout"))
            index += 1
            record = BatchRecord(
                index, batch[0].group_key, tuple(j.id for j in batch), time.monotonic() - started
            )
            self.batch_log.append(record)
            if self.on_batch is not None:
                try:
                    self.on_batch(record, batch)
                except Exception:
                    logger.exception("on_batch hook failed")


# ------------------------------------------------------------------------- asyncio bridge


class AsyncSink:
    """A job sink that forwards events into an asyncio queue (thread-safe).

    Events: ``("start",)``, ``("text", delta)``, ``("finish", reason, usage)``, ``("error", exc)``.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.loop = loop or asyncio.get_running_loop()
        self.queue: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()

    def _put(self, event: tuple[Any, ...]) -> None:
        with contextlib.suppress(RuntimeError):  # loop closed: the client is gone
            self.loop.call_soon_threadsafe(self.queue.put_nowait, event)

    def on_start(self) -> None:
        self._put(("start",))

    def on_text(self, delta: str) -> None:
        self._put(("text", delta))

    def on_finish(self, reason: FinishReason, usage: Usage) -> None:
        self._put(("finish", reason, usage))

    def on_error(self, exc: BaseException) -> None:
        self._put(("error", exc))


async def job_events(
    scheduler: Scheduler, job: Job, sink: AsyncSink, timeout_s: float
) -> AsyncGenerator[tuple[Any, ...], None]:
    """Events of a submitted job until it finishes; cancels the job on timeout or when the
    consumer stops early (a client disconnect).

    Raises:
        RequestTimeoutError: no finish within ``timeout_s`` of the start.
        PrefvecError: the job failed (the error it failed with).
    """
    deadline = time.monotonic() + timeout_s
    done = False
    try:
        while True:
            left = deadline - time.monotonic()
            try:
                event = await asyncio.wait_for(sink.queue.get(), timeout=max(left, 0.0))
            except (TimeoutError, asyncio.TimeoutError):
                raise RequestTimeoutError(
                    f"request exceeded `request_timeout_s` = {timeout_s:g} s", field="timeout"
                ) from None
            if event[0] == "error":
                done = True
                raise event[1]
            if event[0] == "finish":
                done = True
            yield event
            if done:
                return
    finally:
        if not done:
            scheduler.cancel(job)
