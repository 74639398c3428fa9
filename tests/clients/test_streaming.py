"""SSE decoding and streamed generation (sync and async)."""

from __future__ import annotations

import httpx
import pytest

from prefvec import errors, protocol
from prefvec.clients import AsyncPrefvecClient, PrefvecClient, SSEDecoder, chunk_text

from .conftest import FakeServer, Pieces, chat_chunk, error, split_every, sse

URL = "http://prefvec.test"

RAW = (
    ": keep-alive comment\r\n"
    "event: message\r\n"
    "data: first line\r\n"
    "data: second line\r\n"
    "\r\n"
    "id: 3\n"
    "data:no-space\n"
    "\n"
    "event: error\r"
    "data: {}\r"
    "\r"
    "data: tail without blank line"
)
EXPECTED = [
    ("message", "first line\nsecond line"),
    ("message", "no-space"),
    ("error", "{}"),
    ("message", "tail without blank line"),
]


def decode(pieces: list[str]) -> list[tuple[str, str]]:
    decoder = SSEDecoder()
    events = [e for piece in pieces for e in decoder.feed(piece)] + decoder.flush()
    return [(e.event, e.data) for e in events]


def test_decoder_whole_stream() -> None:
    assert decode([RAW]) == EXPECTED


@pytest.mark.parametrize("cut", range(1, len(RAW)))
def test_decoder_split_anywhere(cut: int) -> None:
    # Every split point, including between the CR and LF of a CRLF.
    assert decode([RAW[:cut], RAW[cut:]]) == EXPECTED


def test_decoder_one_char_at_a_time() -> None:
    assert decode(list(RAW)) == EXPECTED


def stream_body(n_split: int) -> list[bytes]:
    events = [
        chat_chunk(None),
        chat_chunk("Hé"),
        chat_chunk("llo ✓"),
        chat_chunk(None, prefvec=True),
        "[DONE]",
        "this is not JSON and must never be parsed",
    ]
    return split_every(sse(events, done=False), n_split)


def streaming_fake(n_split: int) -> FakeServer:
    fake = FakeServer()
    headers = {"content-type": "text/event-stream"}
    fake.on(
        "POST",
        "/v1/chat/completions",
        lambda req: httpx.Response(200, headers=headers, stream=Pieces(stream_body(n_split))),
    )
    return fake


@pytest.mark.parametrize("n_split", [1, 7, 10_000])
def test_chat_stream_sync(n_split: int) -> None:
    fake = streaming_fake(n_split)
    with PrefvecClient(URL, transport=httpx.MockTransport(fake)) as c:
        chunks = list(c.chat_stream("Hi", preferences={"helpful": 1.0}, max_tokens=4))
    assert all(isinstance(ch, protocol.ChatCompletionChunk) for ch in chunks)
    assert len(chunks) == 4  # stopped at [DONE]: the junk event after it was never parsed
    assert "".join(chunk_text(ch) for ch in chunks) == "Héllo ✓"
    assert chunks[-1].prefvec is not None and chunks[-1].prefvec.recipe_key.startswith("linear")
    body = fake.last_json()
    assert body["stream"] is True and body["preferences"] == {"helpful": 1.0}


@pytest.mark.parametrize("n_split", [1, 13])
async def test_chat_stream_async(n_split: int) -> None:
    fake = streaming_fake(n_split)
    async with AsyncPrefvecClient(URL, transport=httpx.MockTransport(fake)) as c:
        texts = [chunk_text(ch) async for ch in c.chat_stream("Hi")]
    assert "".join(texts) == "Héllo ✓"
    assert len(texts) == 4


def completion_chunks() -> list[bytes]:
    def chunk(text: str) -> dict:
        return {"id": "c", "created": 1, "model": "m", "choices": [{"text": text}]}

    return [sse([chunk("ab"), chunk("cd")], done=False)]  # ends without [DONE]


def test_complete_stream_without_done_terminator() -> None:
    fake = FakeServer()
    fake.on(
        "POST", "/v1/completions", lambda r: httpx.Response(200, stream=Pieces(completion_chunks()))
    )
    with PrefvecClient(URL, transport=httpx.MockTransport(fake)) as c:
        chunks = list(c.complete_stream("x"))
    assert [chunk_text(ch) for ch in chunks] == ["ab", "cd"]
    assert all(isinstance(ch, protocol.CompletionChunk) for ch in chunks)
    assert fake.last_json() == {"prompt": "x", "stream": True}


def error_mid_stream(request: httpx.Request) -> httpx.Response:
    err = {
        "error": {"message": "request timed out after 5 s", "type": "timeout", "code": "timeout"}
    }
    return httpx.Response(200, stream=Pieces([sse([chat_chunk("a"), err])]))


def test_error_event_in_stream_is_raised() -> None:
    fake = FakeServer()
    fake.on("POST", "/v1/chat/completions", error_mid_stream)
    with PrefvecClient(URL, transport=httpx.MockTransport(fake)) as c:
        got = []
        with pytest.raises(errors.RequestTimeoutError, match="timed out after 5 s"):
            for ch in c.chat_stream("x"):
                got.append(chunk_text(ch))
    assert got == ["a"]


async def test_http_error_before_stream_is_raised_async() -> None:
    fake = FakeServer()
    fake.on("POST", "/v1/chat/completions", error(404, "not_found", "vector 'nope' not found"))
    async with AsyncPrefvecClient(URL, transport=httpx.MockTransport(fake)) as c:
        with pytest.raises(errors.NotFoundError, match="nope"):
            async for _ in c.chat_stream("x", preferences={"nope": 1.0}):
                pass


def test_http_error_before_stream_is_raised_sync() -> None:
    fake = FakeServer()
    resp = error(429, "queue_full", "queue full")
    resp.headers["retry-after"] = "3"
    fake.on("POST", "/v1/chat/completions", resp)
    c = PrefvecClient(URL, transport=httpx.MockTransport(fake))
    with c, pytest.raises(errors.QueueFullError) as info:
        list(c.chat_stream("x"))
    assert info.value.retry_after == 3.0
