"""The FastAPI application: routers, error handlers, middleware, start-up."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from prefvec import __version__
from prefvec.server.auth import access_summary
from prefvec.server.errors import declare_route_errors, install_error_handlers
from prefvec.server.metrics import Metrics
from prefvec.server.middleware import BodyLimitMiddleware, MetricsMiddleware
from prefvec.server.settings import ServerSettings
from prefvec.server.state import ServerState, start_services

logger = logging.getLogger(__name__)


def _warn_security(settings: ServerSettings) -> None:
    """Say at start what is open to whom (a warning when operator routes go by address)."""
    lines = access_summary(
        settings.operator_keys,
        settings.user_keys,
        settings.trust_loopback_operator,
        settings.trusted_proxies,
    )
    for line in lines:
        logger.info("access: %s", line)
    if not settings.operator_keys and settings.trust_loopback_operator:
        logger.warning(
            "operator routes trust loopback clients without a key: behind a reverse proxy on "
            "this host every client is loopback; set PREFVEC_OPERATOR_KEYS there"
        )


def create_app(
    settings: ServerSettings | None = None, *, backend: Any = None, store: Any = None
) -> FastAPI:
    """Build the app; the model loads in a background thread at start (``/ready`` says when).

    Args:
        settings: server settings (default: from env / settings file).
        backend: an already built (optionally loaded) backend, e.g. for tests.
        store: an already opened :class:`prefvec.vector_store.LocalStore`.
    """
    from prefvec.server.routes import ROUTERS

    settings = settings or ServerSettings()
    state = ServerState(settings=settings, backend=backend, store=store)
    state.metrics = Metrics(state.live_values)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        _warn_security(settings)
        loader = asyncio.get_running_loop().run_in_executor(None, start_services, state)
        try:
            yield
        finally:
            await asyncio.wait([loader], timeout=30)
            if state.backend is not None and state.ready.is_set():
                state.backend.close()

    app = FastAPI(
        title="prefvec",
        version=__version__,
        description="Per-request preference-vector merging over one base model "
        "(OpenAI-compatible generation).",
        lifespan=lifespan,
    )
    app.state.prefvec = state
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    declare_route_errors(app, ROUTERS)
    app.add_middleware(MetricsMiddleware, state=state)
    app.add_middleware(
        BodyLimitMiddleware,
        max_body_bytes=settings.max_body_bytes,
        max_upload_bytes=settings.max_upload_bytes,
        body_read_timeout_s=settings.body_read_timeout_s,
    )
    return app
