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
    resolver: Any = None
    service: Any = None
    experiments: Any = None
    metrics: Metrics | None = None
    ready: threading.Event = field(default_factory=threading.Event)
    load_error: BaseException | None = None

    def live_values(self) -> dict[str, Any]:
        backend = self.backend
        ready = self.ready.is_set()
        values: dict[str, Any] = backend.stats() if backend is not None and ready else {}
        values["ready"] = 1 if ready else 0
        return values

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
    """Load backend, store, resolver, experiments and the serving service (background thread)."""
    from prefvec.server.backends import get_backend
    from prefvec.server.experiments import ExperimentLimits, ExperimentService
    from prefvec.server.resolver import Resolver
    from prefvec.server.service import GenerationService
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
        state.resolver = Resolver(s, state.store, backend)
        state.experiments = ExperimentService(state.store, ExperimentLimits.from_settings(s))
        backend.start(state.resolver.vector)
        state.service = GenerationService(
            s, state.resolver, backend, state.experiments, state.metrics
        )
        state.ready.set()
        logger.info("prefvec server ready: base %s, store %s", s.base, s.store_root)
    except BaseException as exc:
        state.load_error = exc
        logger.exception("start-up failed")


def local_state(settings: ServerSettings, *, backend: Any = None, store: Any = None) -> ServerState:
    """A started server state without HTTP (the CLI's local generation, the in-process
    evaluation target, tests): the same services the app runs, loaded in this thread.

    Raises:
        PrefvecError: start-up failed (the model or the store could not be loaded).
    """
    state = ServerState(settings=settings, backend=backend, store=store)
    start_services(state)
    if state.load_error is not None:
        if isinstance(state.load_error, PrefvecError):
            raise state.load_error
        raise PrefvecError(f"start-up failed: {state.load_error}") from state.load_error
    return state
