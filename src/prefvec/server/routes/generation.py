"""``POST /v1/chat/completions`` and ``POST /v1/completions`` (OpenAI-compatible, SSE streaming).

Routes only parse and shape responses; :class:`~prefvec.server.service.GenerationService` does the
work. A streaming response is opened only once the first event is there, so an error before it
(queue full, a vector that fails to load) keeps its HTTP status; an error after it ends the
stream with an OpenAI-style ``{"error": ...}`` event and ``[DONE]``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from prefvec.errors import PrefvecError, ValidationError
from prefvec.protocol import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatDelta,
    CompletionChoice,
    CompletionChunk,
    CompletionRequest,
    CompletionResponse,
    PrefvecInfo,
    Usage,
)
from prefvec.server.backends.base import FinishEvent, GenerationRequest, TextEvent
from prefvec.server.deps import Ready, User
from prefvec.server.service import GenerationService, Stream, until_disconnected
from prefvec.server.state import ServerState

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["generation"], dependencies=[User])

ChunkFn = Callable[[str | None, str | None, Usage | None, PrefvecInfo | None], Any]


def sampling_of(req: Any) -> dict[str, Any]:
    """The sampling keyword arguments of a chat or completion request."""
    return dict(
        max_tokens=getattr(req, "max_completion_tokens", None) or req.max_tokens,
        temperature=req.temperature, top_p=req.top_p, seed=req.seed, stop=req.stop,
    )  # fmt: skip


def prepare(service: GenerationService, req: Any, kind: str, **prompt: Any) -> GenerationRequest:
    """Resolve and prepare a chat/completion request (blocking: runs in a worker thread)."""
    resolved = service.resolve(
        preferences=req.preferences, recipe=req.recipe, merge=req.merge, model=req.model,
        experiment=req.experiment, user=req.user,
    )  # fmt: skip
    return service.prepare(resolved, kind=kind, user=req.user, **prompt, **sampling_of(req))


def _sse(obj: Any) -> str:
    data = (
        obj.model_dump_json(exclude_none=True)
        if hasattr(obj, "model_dump_json")
        else json.dumps(obj)
    )
    return f"data: {data}\n\n"


def _error_event(state: ServerState, exc: BaseException) -> str:
    if isinstance(exc, PrefvecError):
        body = exc.to_dict()
    else:
        logger.error("stream failed after its first byte", exc_info=exc)
        body = {"message": "internal error while streaming", "type": "server_error",
                "code": "internal_error"}  # fmt: skip
    if state.metrics is not None:
        state.metrics.stream_errors.labels(body.get("code", "internal_error")).inc()
    return f"data: {json.dumps({'error': body})}\n\n"


def stream_response(state: ServerState, stream: Stream, chunk: ChunkFn, usage_chunk: Any) -> Any:
    """SSE of a started stream: a role/info chunk, text chunks, the finish chunk, then the usage
    chunk if asked for (``choices: []``, as OpenAI sends it), then ``[DONE]``."""
    info = stream.request.resolved.info()

    async def body() -> AsyncIterator[str]:
        try:
            yield _sse(chunk("", None, None, info))
            async for event in stream.events():
                if isinstance(event, TextEvent):
                    if event.text:
                        yield _sse(chunk(event.text, None, None, None))
                elif isinstance(event, FinishEvent):
                    yield _sse(chunk(None, event.reason, None, None))
                    if usage_chunk is not None:
                        yield _sse(usage_chunk(event.usage))
        except Exception as exc:  # after the first byte: tell the client in-band
            yield _error_event(state, exc)
        finally:
            await stream.aclose()
        yield "data: [DONE]\n\n"

    return StreamingResponse(
        body(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _model_name(state: ServerState, req: Any) -> str:
    return str(req.model or state.settings.model_name)


def _include_usage(req: Any) -> bool:
    return bool(req.stream_options and req.stream_options.include_usage)


@router.post(
    "/chat/completions",
    response_model=ChatCompletionResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def chat_completions(req: ChatCompletionRequest, state: Ready, request: Request) -> Any:
    """OpenAI-compatible chat completion with prefvec extension fields."""
    service = state.service
    messages = [{"role": m.role, "content": m.text()} for m in req.messages]
    greq = await run_in_threadpool(prepare, service, req, "chat", messages=messages)
    cid, created, model = f"chatcmpl-{greq.id}", int(time.time()), _model_name(state, req)
    if req.stream:

        def chunk(
            delta: str | None, reason: str | None, usage: Usage | None, info: PrefvecInfo | None
        ) -> ChatCompletionChunk:
            d = (
                ChatDelta(role="assistant", content="")
                if info is not None
                else ChatDelta(content=delta)
            )
            return ChatCompletionChunk(
                id=cid, created=created, model=model,
                choices=[ChatChunkChoice(delta=d, finish_reason=reason)],  # type: ignore[arg-type]
                usage=usage, prefvec=info,
            )  # fmt: skip

        def usage_chunk(usage: Usage) -> ChatCompletionChunk:
            return ChatCompletionChunk(
                id=cid, created=created, model=model, choices=[], usage=usage
            )

        stream = await service.start(greq)
        return stream_response(state, stream, chunk, usage_chunk if _include_usage(req) else None)
    done = await until_disconnected(request.receive, service.complete(greq))
    return ChatCompletionResponse(
        id=cid, created=created, model=model,
        choices=[ChatChoice(message=AssistantMessage(content=done.text),
                            finish_reason=done.reason)],  # type: ignore[arg-type]
        usage=done.usage, prefvec=done.info,
    )  # fmt: skip


def _completion_prompt(req: CompletionRequest) -> str:
    if isinstance(req.prompt, str):
        return req.prompt
    if len(req.prompt) != 1 or not isinstance(req.prompt[0], str):
        raise ValidationError(
            f"`prompt` must be one string (or a list of exactly one), got {len(req.prompt)} items",
            field="prompt",
        )
    return req.prompt[0]


@router.post(
    "/completions",
    response_model=CompletionResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def completions(req: CompletionRequest, state: Ready, request: Request) -> Any:
    """OpenAI-compatible text completion with prefvec extension fields."""
    service = state.service
    prompt = _completion_prompt(req)
    greq = await run_in_threadpool(prepare, service, req, "completion", prompt=prompt)
    cid, created, model = f"cmpl-{greq.id}", int(time.time()), _model_name(state, req)
    if req.stream:

        def chunk(
            delta: str | None, reason: str | None, usage: Usage | None, info: PrefvecInfo | None
        ) -> CompletionChunk:
            text = (prompt if req.echo else "") if info is not None else (delta or "")
            return CompletionChunk(
                id=cid, created=created, model=model,
                choices=[CompletionChoice(text=text, finish_reason=reason)],  # type: ignore[arg-type]
                usage=usage, prefvec=info,
            )  # fmt: skip

        def usage_chunk(usage: Usage) -> CompletionChunk:
            return CompletionChunk(id=cid, created=created, model=model, choices=[], usage=usage)

        stream = await service.start(greq)
        return stream_response(state, stream, chunk, usage_chunk if _include_usage(req) else None)
    done = await until_disconnected(request.receive, service.complete(greq))
    text = prompt + done.text if req.echo else done.text
    return CompletionResponse(
        id=cid, created=created, model=model,
        choices=[CompletionChoice(text=text, finish_reason=done.reason)],  # type: ignore[arg-type]
        usage=done.usage, prefvec=done.info,
    )  # fmt: skip
