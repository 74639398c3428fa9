"""Pure-ASGI middleware: request body bounds (413 by size, 408 when it stops arriving) and
request metrics.

Pure ASGI (not ``BaseHTTPMiddleware``) so streaming responses and client disconnects pass
through untouched.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from prefvec.errors import PayloadTooLargeError, RequestBodyTimeoutError
from prefvec.server.errors import error_response

UPLOAD_PATH = "/v1/vectors"


class BodyLimitMiddleware:
    """Refuse bodies over the bound (by ``Content-Length`` up front, or while streaming) and
    bodies that stop arriving.

    Args:
        app: the wrapped app.
        max_body_bytes: bound of ordinary (JSON) bodies.
        max_upload_bytes: bound of ``POST /v1/vectors`` (multipart uploads).
        body_read_timeout_s: seconds the server waits for the next piece of a request body
            (a client that declared more than it sends, or stalls, gets a 408 and the connection
            is closed instead of held open); None waits for ever.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        max_upload_bytes: int,
        body_read_timeout_s: float | None = None,
    ) -> None:
        self.app = app
        self.max_body = max_body_bytes
        self.max_upload = max_upload_bytes
        self.timeout = body_read_timeout_s

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
        received, body_done = 0, False

        async def limited() -> Message:
            nonlocal received, body_done
            if body_done or self.timeout is None:
                message = await receive()  # after the body: only a disconnect can come
            else:
                try:
                    message = await asyncio.wait_for(receive(), self.timeout)
                except TimeoutError:
                    raise RequestBodyTimeoutError(
                        f"the request body stopped arriving: nothing for `body_read_timeout_s` "
                        f"= {self.timeout:g} s after {received} bytes",
                        field="body",
                    ) from None
            if message["type"] == "http.request":
                body_done = not message.get("more_body", False)
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
