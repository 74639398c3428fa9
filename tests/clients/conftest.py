"""A fake prefvec server for client tests: an ``httpx.MockTransport`` handler that records every
request and answers canned protocol responses (or errors) by method and path."""

from __future__ import annotations

import email.parser
import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest

from prefvec import protocol

INFO = {"recipe_key": "linear(helpful@2=0.5)", "vectors": {"helpful": 2}, "path": "lowrank"}


def chat_response(text: str = "hello there") -> dict[str, Any]:
    return protocol.ChatCompletionResponse(
        id="chatcmpl-1",
        created=1,
        model="tiny",
        choices=[{"message": {"content": text}, "finish_reason": "stop"}],  # type: ignore[list-item]
        usage={"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},  # type: ignore[arg-type]
        prefvec=INFO,  # type: ignore[arg-type]
    ).model_dump(mode="json")


def chat_chunk(content: str | None, prefvec: bool = False) -> dict[str, Any]:
    chunk = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "tiny",
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}],
    }
    if prefvec:
        chunk["prefvec"] = INFO
    return chunk


def vector_info(name: str = "helpful", version: int = 2) -> dict[str, Any]:
    return {
        "object": "vector",
        "name": name,
        "version": version,
        "kind": "lowrank",
        "sha256": "ab" * 32,
        "size_bytes": 10,
        "metadata": {"name": name},
    }


def recipe_info(name: str = "r1") -> dict[str, Any]:
    return {
        "object": "recipe",
        "name": name,
        "version": 1,
        "method": "linear",
        "weights": {"helpful@2": 0.5},
        "key": "linear(helpful@2=0.5)",
    }


def experiment_info() -> dict[str, Any]:
    arms = [{"name": "a", "recipe": "r1@1", "traffic": 1.0}, {"name": "b", "recipe": "r2@1"}]
    return {"object": "experiment", "name": "exp1", "arms": arms, "description": "d"}


def experiment_report() -> dict[str, Any]:
    arm = {"recipe": "r1@1", "assignments": 3, "requests": 5, "ratings": 2}
    return {
        "object": "experiment.report",
        "name": "exp1",
        "arms": [
            {**arm, "name": "a", "mean_rating": 4.5, "ci_low": 4.0, "ci_high": 5.0},
            {**arm, "name": "b", "recipe": "r2@1", "pairwise_win_rate": 0.25},
        ],
    }


def compare_response() -> dict[str, Any]:
    win = {"scorer": "len", "a": "r1", "b": "r2", "wins": 1, "losses": 0, "ties": 0}
    return {
        "object": "comparison",
        "labels": ["r1", "r2"],
        "rows": [
            {
                "prompt": "Hi",
                "outputs": [
                    {"label": "r1", "text": "out-one", "scores": {"len": 7.0}},
                    {"label": "r2", "text": "out-two", "scores": {"len": 3.0}},
                ],
            }
        ],
        "summary": {
            "scorers": ["len"],
            "mean_scores": {"r1": {"len": 7.0}, "r2": {"len": 3.0}},
            "win_rates": [{**win, "rate": 1.0, "ci_low": 0.2, "ci_high": 1.0}],
        },
    }


def error(status: int, code: str, message: str, **extra: Any) -> httpx.Response:
    body = {"error": {"message": message, "type": code, "code": code, **extra}}
    return httpx.Response(status, json=body)


class Pieces(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A response body delivered in the given pieces (to test reassembly across splits)."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces

    def __iter__(self) -> Iterator[bytes]:
        yield from self.pieces

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self.pieces:
            yield piece


def sse(events: list[Any], done: bool = True) -> bytes:
    """An SSE body: one ``data:`` event per item (dicts as JSON), then ``[DONE]``."""
    lines = [f"data: {json.dumps(e) if isinstance(e, dict) else e}\n\n" for e in events]
    return ("".join(lines) + ("data: [DONE]\n\n" if done else "")).encode()


def split_every(body: bytes, n: int) -> list[bytes]:
    return [body[i : i + n] for i in range(0, len(body), n)]


def multipart_fields(request: httpx.Request) -> dict[str, tuple[str | None, bytes]]:
    """{field: (filename, bytes)} of a multipart/form-data request."""
    head = f"Content-Type: {request.headers['content-type']}\r\n\r\n".encode()
    message = email.parser.BytesParser().parsebytes(head + request.read())
    out = {}
    for part in message.get_payload():  # type: ignore[union-attr]
        name = part.get_param("name", header="content-disposition")
        out[name] = (part.get_filename(), part.get_payload(decode=True))
    return out


Route = Callable[[httpx.Request], httpx.Response] | httpx.Response | dict[str, Any] | str


class FakeServer:
    """Routes ``(METHOD, path)`` -> a response; records requests; unknown routes answer 404."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Route] = {}
        self.requests: list[httpx.Request] = []

    def on(self, method: str, path: str, answer: Route) -> None:
        self.routes[(method, path)] = answer

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        answer = self.routes.get((request.method, request.url.path))
        if answer is None:
            return httpx.Response(404, json={"detail": "Not Found"})
        if callable(answer):
            return answer(request)
        if isinstance(answer, httpx.Response):
            return answer
        if isinstance(answer, str):
            return httpx.Response(200, text=answer)
        return httpx.Response(201 if request.method == "POST" else 200, json=answer)

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]

    def last_json(self) -> Any:
        return json.loads(self.last.content)


@pytest.fixture
def fake() -> FakeServer:
    return FakeServer()
