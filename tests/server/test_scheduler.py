"""Batch formation: the wait window, and arrival-aware gathering of a burst."""

from __future__ import annotations

import threading
import time
from typing import Any

from prefvec.server.scheduler import Scheduler


class _Job:
    def __init__(self, i: int) -> None:
        self.id, self.group_key, self.finished = str(i), "g", False

    def fail(self, exc: BaseException) -> None:
        self.finished = True

    def cancel(self) -> None:
        pass


class _Engine:
    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.done = threading.Event()

    def run_batch(self, batch: list[Any]) -> None:
        self.sizes.append(len(batch))
        for job in batch:
            job.finished = True
        time.sleep(0.05)
        self.done.set()


def _burst(sched: Scheduler, n: int, delay: float, announce: bool) -> None:
    """Submit job 0 now and jobs 1..n-1 after ``delay`` (announced from the start or not)."""
    holds = [sched.arriving() for _ in range(n - 1)] if announce else []
    for h in holds:
        h.__enter__()
    sched.submit(_Job(0))  # type: ignore[arg-type]
    time.sleep(delay)
    for i in range(1, n):
        sched.submit(_Job(i))  # type: ignore[arg-type]
        if holds:
            holds.pop().__exit__(None, None, None)


def _run(announce: bool) -> list[int]:
    engine = _Engine()
    sched = Scheduler(engine, max_batch_size=8, max_wait_ms=5, max_gather_ms=500)  # type: ignore[arg-type]
    sched.start()
    try:
        _burst(sched, 6, delay=0.1, announce=announce)
        deadline = time.monotonic() + 5
        while sum(engine.sizes) < 6 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        sched.stop()
    return engine.sizes


def test_announced_burst_lands_in_one_batch() -> None:
    assert _run(announce=True) == [6]


def test_unannounced_late_jobs_miss_the_first_batch() -> None:
    # Without announcements the 5 ms window closes long before the other five arrive.
    assert _run(announce=False) == [1, 5]


def test_lone_request_waits_only_max_wait() -> None:
    engine = _Engine()
    sched = Scheduler(engine, max_batch_size=8, max_wait_ms=5, max_gather_ms=2000)  # type: ignore[arg-type]
    sched.start()
    try:
        t0 = time.monotonic()
        sched.submit(_Job(0))  # type: ignore[arg-type]
        assert engine.done.wait(5)
        assert time.monotonic() - t0 < 1.0  # nothing announced: the gather window is not used
    finally:
        sched.stop()
