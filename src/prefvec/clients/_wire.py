"""Wire helpers of the clients: HTTP errors mapped back to :mod:`prefvec.errors`, transport
failures named by URL, and an incremental server-sent-events decoder. No I/O happens here."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import httpx
from pydantic import BaseModel

from prefvec import protocol
from prefvec.errors import (
    PrefvecError,
    QueueFullError,
    RequestTimeoutError,
    ServerUnreachableError,
    error_from_code,
)

URL_ENV = "PREFVEC_URL"
M = TypeVar("M", bound=BaseModel)


# ------------------------------------------------------------------------------ error mapping

# Used when an error body carries no prefvec code (e.g. a proxy's or the framework's own 404).
_STATUS_CODES = {
    400: "bad_request",
    401: "authentication_error",
    403: "permission_denied",
    404: "not_found",
    409: "conflict",
    413: "payload_too_large",
    422: "invalid_request_error",
    429: "queue_full",
    501: "backend_unavailable",
    503: "server_unreachable",
    504: "timeout",
}


def _known_codes() -> set[str]:
    codes, todo = set(), [PrefvecError]
    while todo:
        cls = todo.pop()
        codes.add(cls.code)
        todo.extend(cls.__subclasses__())
    return codes


def _error_detail(response: httpx.Response) -> dict[str, Any]:
    """The inner ``error`` object of a response, or a stand-in built from a non-prefvec body."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return dict(body["error"])
    if isinstance(body, dict) and "detail" in body:  # the framework's own errors
        return {"message": str(body["detail"])}
    return {"message": response.text.strip()[:500]}


def _retry_after(response: httpx.Response, detail: Mapping[str, Any]) -> float:
    for raw in (response.headers.get("retry-after"), detail.get("retry_after")):
        try:
            if raw is not None:
                return float(raw)
        except (TypeError, ValueError):
            continue
    return 1.0


def error_from_response(response: httpx.Response) -> PrefvecError:
    """Map an HTTP error response back to the :mod:`prefvec.errors` class it was raised as.

    Args:
        response: a response with status >= 400 whose body has been read.

    Returns:
        The exception (not raised): the class named by ``error.code``, else the class of the
        HTTP status; ``message``, ``problems`` and ``field`` come from the body, and a
        :class:`~prefvec.errors.QueueFullError` gets ``retry_after`` from the Retry-After header.
    """
    detail = _error_detail(response)
    code = detail.get("code")
    if code not in _known_codes():
        code = _STATUS_CODES.get(response.status_code, "internal_error")
    request = response.request
    message = detail.get("message") or f"HTTP {response.status_code}"
    if "code" not in detail:  # not a prefvec body: say where it came from
        message = f"{message} (HTTP {response.status_code} from {request.method} {request.url})"
    problems = detail.get("problems") or None
    err = error_from_code(code, message, problems=problems, field=detail.get("param"))
    if isinstance(err, QueueFullError):
        err.retry_after = _retry_after(response, detail)
    return err


@contextlib.contextmanager
def transport_errors(request: httpx.Request) -> Iterator[None]:
    """Turn httpx transport failures into prefvec errors naming the URL."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise RequestTimeoutError(
            f"{request.method} {request.url} timed out ({type(exc).__name__}); "
            "raise the client `timeout` for long generations",
            field="timeout",
        ) from exc
    except httpx.TransportError as exc:
        raise ServerUnreachableError(
            f"cannot reach the prefvec server at {request.url}: {exc or type(exc).__name__} "
            f"(is `prefvec serve` running? set --url or ${URL_ENV})",
            field="url",
        ) from exc


# -------------------------------------------------------------------------------------- SSE


@dataclass
class ServerSentEvent:
    """One dispatched server-sent event."""

    data: str
    event: str = "message"


class SSEDecoder:
    """Incremental ``text/event-stream`` decoder: feed text pieces split anywhere, get events.

    Follows the WHATWG rules that matter here: lines end in LF, CRLF or CR; ``data:`` lines of one
    event are joined with LF; a blank line dispatches; ``:`` lines are comments.
    """

    def __init__(self) -> None:
        self._buffer = ""
        self._data: list[str] = []
        self._event = "message"

    def feed(self, text: str) -> list[ServerSentEvent]:
        """Add a piece of the stream; return the events it completed."""
        self._buffer += text
        # A trailing CR may be the first half of a CRLF split across pieces: keep it for later.
        cut = len(self._buffer) - 1 if self._buffer.endswith("\r") else len(self._buffer)
        complete, self._buffer = self._buffer[:cut], self._buffer[cut:]
        lines = complete.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        self._buffer = lines.pop() + self._buffer  # the unfinished last line
        events = []
        for line in lines:
            event = self._line(line)
            if event is not None:
                events.append(event)
        return events

    def flush(self) -> list[ServerSentEvent]:
        """End of stream: dispatch what is pending (a last event without its blank line)."""
        events = self.feed("\n") if self._buffer else []
        event = self._line("")
        return [*events, event] if event is not None else events

    def _line(self, line: str) -> ServerSentEvent | None:
        if not line:
            if not self._data:
                return None
            event = ServerSentEvent(data="\n".join(self._data), event=self._event)
            self._data, self._event = [], "message"
            return event
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        return None  # comments (empty name), id, retry: ignored


class ChunkReader(Generic[M]):
    """SSE text pieces -> chunk models; stops at ``data: [DONE]``; in-stream errors are raised."""

    def __init__(self, model: type[M], url: str) -> None:
        self._model, self._url = model, url
        self._decoder = SSEDecoder()
        self.done = False

    def feed(self, piece: str) -> Iterator[M]:
        """Chunks completed by one piece of the stream, parsed lazily (none after ``[DONE]``)."""
        return self._parse(self._decoder.feed(piece))

    def flush(self) -> Iterator[M]:
        """Chunks of an event left without its blank line at the end of the stream."""
        return self._parse(self._decoder.flush())

    def _parse(self, events: list[ServerSentEvent]) -> Iterator[M]:
        for event in events:
            if self.done or event.data.strip() == "[DONE]":
                self.done = True
                return
            yield self._chunk(event.data)

    def _chunk(self, data: str) -> M:
        try:
            payload = json.loads(data)
        except ValueError as exc:
            raise PrefvecError(f"malformed stream event from {self._url}: {data[:200]!r}") from exc
        if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
            detail = payload["error"]
            raise error_from_code(
                detail.get("code"),
                detail.get("message") or f"error in the stream from {self._url}",
                problems=detail.get("problems") or None,
                field=detail.get("param"),
            )
        return self._model.model_validate(payload)


def chunk_text(chunk: protocol.ChatCompletionChunk | protocol.CompletionChunk) -> str:
    """The text delta a streamed chunk carries (empty for role-only or final chunks)."""
    if isinstance(chunk, protocol.ChatCompletionChunk):
        return "".join(c.delta.content or "" for c in chunk.choices)
    return "".join(c.text for c in chunk.choices)
