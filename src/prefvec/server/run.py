"""``serve(settings)``: run the server with uvicorn (used by ``prefvec serve``)."""

from __future__ import annotations

import logging

from prefvec.server.settings import ServerSettings


def serve(settings: ServerSettings | None = None, **overrides: object) -> None:
    """Start the inference server and block until it stops.

    Args:
        settings: server settings (default: environment / settings file).
        **overrides: setting values that win over ``settings`` (e.g. ``host``, ``port``).
    """
    import uvicorn

    from prefvec.server.app import create_app

    settings = settings or ServerSettings()
    if overrides:
        settings = settings.model_copy(update=overrides)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    app = create_app(settings)
    # proxy_headers=False: uvicorn would take X-Forwarded-For from any loopback peer; prefvec
    # reads it itself, from `trusted_proxies` only (prefvec.server.auth.client_address)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        proxy_headers=False,
    )
