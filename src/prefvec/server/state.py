"""What the app holds while it runs, and its start-up (model load in a background thread)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefvec.errors import PrefvecError, ServiceUnavailableError
from prefvec.server.metrics import Metrics
from prefvec.server.settings import ServerSettings

logger = logging.getLogger(__name__)


@dataclass
class ServerState:
    """Services of one running server; ``ready`` is set once the model is loaded."""

    settings: ServerSettings
    backend: Any = None
    store: Any = None
    engine: Any = None
    scheduler: Any = None
    experiments: Any = None
    metrics: Metrics | None = None
    ready: threading.Event = field(default_factory=threading.Event)
    load_error: BaseException | None = None

    def live_values(self) -> dict[str, Any]:
        sched, backend = self.scheduler, self.backend
        return {
            "queue_depth": sched.queue_depth if sched else 0,
            "running": sched.running if sched else 0,
            "ready": 1 if self.ready.is_set() else 0,
            "cache": backend.cache_stats() if backend is not None and self.ready.is_set() else {},
        }

    def require_ready(self) -> None:
        if self.ready.is_set():
            return
        if self.load_error is not None:
            raise ServiceUnavailableError(f"the model failed to load: {self.load_error}")
        raise ServiceUnavailableError("the model is still loading; retry shortly")


def preload_vectors(store: Any, folder: Path) -> int:
    """Put every ``*.safetensors`` of ``folder`` into the store unless its sha256 is there."""
    from prefvec.vector_store import sha256_file

    known = {rec.sha256 for rec in store.list()}
    for rec in list(store.list()):
        known.update(v.sha256 for v in store.versions(rec.name))
    added = 0
    for path in sorted(folder.glob("*.safetensors")):
        if sha256_file(path) in known:
            continue
        try:
            store.put(path)
            added += 1
        except PrefvecError as exc:
            logger.warning("preload: skipped %s: %s", path.name, exc.message)
    return added


def start_services(state: ServerState) -> None:
    """Load backend, store, engine, experiments and the scheduler (background thread)."""
    from prefvec.server.backends import get_backend
    from prefvec.server.engine import Engine
    from prefvec.server.experiments import ExperimentService
    from prefvec.server.scheduler import Scheduler
    from prefvec.vector_store import BaseSpec, LocalStore

    s = state.settings
    try:
        backend = state.backend or get_backend(s)
        if not backend.ready:
            backend.load()
        state.backend = backend
        if state.store is None:
            assert backend.model_dir is not None
            base = BaseSpec.from_model_dir(backend.model_dir)
            state.store = LocalStore(s.store_root, base=base, max_vector_bytes=s.max_upload_bytes)
        if s.preload_vectors_dir is not None and s.preload_vectors_dir.is_dir():
            n = preload_vectors(state.store, s.preload_vectors_dir)
            logger.info("preloaded %d vectors from %s", n, s.preload_vectors_dir)
        state.engine = Engine(s, state.store, backend)
        state.experiments = ExperimentService(state.store)
        state.scheduler = Scheduler(
            state.engine,
            max_batch_size=s.max_batch_size,
            max_wait_ms=s.max_wait_ms,
            max_gather_ms=s.max_gather_ms,
            max_queue=s.max_queue,
            retry_after_s=s.retry_after_s,
            on_batch=lambda rec, jobs: _count_batch(state, rec, jobs),
        )
        state.scheduler.start()
        state.ready.set()
        logger.info("prefvec server ready: base %s, store %s", s.base, s.store_root)
    except BaseException as exc:
        state.load_error = exc
        logger.exception("start-up failed")


def _count_batch(state: ServerState, record: Any, jobs: list[Any]) -> None:
    if state.metrics is None:
        return
    path = "dense" if jobs and jobs[0].resolved.path == "dense" else "mix"
    state.metrics.batches.labels(path).inc()
    state.metrics.batch_size.observe(len(jobs))
