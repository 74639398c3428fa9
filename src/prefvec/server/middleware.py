"""Pure-ASGI middleware: request body size bound (413) and request metrics.

Pure ASGI (not ``BaseHTTPMiddleware``) so streaming responses and client disconnects pass
through untouched.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from prefvec.errors import PayloadTooLargeError
from prefvec.server.errors import error_response

UPLOAD_PATH = "/v1/vectors"


class BodyLimitMiddleware:
    """Refuse bodies over the bound: by ``Content-Length`` up front, or while streaming.

    Args:
        app: the wrapped app.
        max_body_bytes: bound of ordinary (JSON) bodies.
        max_upload_bytes: bound of ``POST /v1/vectors`` (multipart uploads).
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int, max_upload_bytes: int) -> None:
        self.app = app
        self.max_body = max_body_bytes
        self.max_upload = max_upload_bytes

    def _limit(self, scope: Scope) -> tuple[int, str]:
        if scope["method"] == "POST" and scope["path"].rstrip("/") == UPLOAD_PATH:
            return self.max_upload + 64 * 1024, "max_upload_bytes"  # multipart framing slack
        return self.max_body, "max_body_bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, setting = self._limit(scope)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            exc = PayloadTooLargeError(
                f"request body is {int(declared)} bytes, the limit is `{setting}` = {limit}",
                field="body",
            )
            await error_response(exc)(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise PayloadTooLargeError(
                        f"request body exceeds `{setting}` = {limit} bytes", field="body"
                    )
            return message

        await self.app(scope, limited, send)


class MetricsMiddleware:
    """Counts requests by route template, method and status, and observes latency."""

    def __init__(self, app: ASGIApp, state: Any) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        metrics = self.state.metrics
        if scope["type"] != "http" or metrics is None:
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            label = getattr(route, "path", None) or "unmatched"
            metrics.requests.labels(label, scope["method"], str(status)).inc()
            metrics.latency.labels(label).observe(time.perf_counter() - start)
