"""``POST /v1/chat/completions`` and ``POST /v1/completions`` (OpenAI-compatible, SSE streaming)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from prefvec.errors import BadRequestError, PrefvecError, ValidationError
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
from prefvec.server.deps import Ready, User
from prefvec.server.engine import Job, Resolved
from prefvec.server.scheduler import AsyncSink, job_events
from prefvec.server.state import ServerState

router = APIRouter(prefix="/v1", tags=["generation"], dependencies=[User])


def resolve_request(state: ServerState, req: Any) -> Resolved:
    """The pinned merge of a request (experiment arm, recipe, model or preferences)."""
    engine = state.engine
    if req.experiment is not None:
        if req.preferences or req.recipe:
            raise BadRequestError(
                f"`experiment` ({req.experiment!r}) picks the recipe; do not also send "
                "`preferences` or `recipe`",
                field="experiment",
            )
        arm = state.experiments.route(req.experiment, req.user)
        resolved: Resolved = engine.resolve(recipe=arm.recipe)
        return resolved.with_experiment(req.experiment, arm.name)
    return engine.resolve(
        preferences=req.preferences, recipe=req.recipe, merge=req.merge, model=req.model
    )


def _prepare(state: ServerState, req: Any, encode: Callable[[], list[int]], sink: AsyncSink) -> Job:
    """Resolve, encode and bound-check a request into a job (runs in a worker thread)."""
    import time as _time

    resolved = resolve_request(state, req)
    ids = encode()
    max_tokens = getattr(req, "max_completion_tokens", None) or req.max_tokens
    params = state.engine.sampling_params(
        max_tokens=max_tokens,
        temperature=req.temperature,
        top_p=req.top_p,
        seed=req.seed,
        stop=req.stop,
        prompt_len=len(ids),
    )
    deadline = _time.monotonic() + state.settings.request_timeout_s
    return Job(ids, params, resolved, sink, deadline=deadline)


async def _submit(
    state: ServerState, req: Any, encode: Callable[[], list[int]]
) -> tuple[Job, AsyncSink]:
    sink = AsyncSink()
    try:
        with state.scheduler.arriving():  # a batch being formed waits for this request
            job = await run_in_threadpool(_prepare, state, req, encode, sink)
            state.scheduler.submit(job)
    except PrefvecError as exc:
        if state.metrics is not None:
            state.metrics.rejected.labels(exc.code).inc()
        raise
    return job, sink


def _record_usage(state: ServerState, job: Job, reason: str, usage: Usage) -> None:
    m = state.metrics
    if m is None:
        return
    path = job.resolved.path
    m.prompt_tokens.labels(path).inc(usage.prompt_tokens)
    m.completion_tokens.labels(path).inc(usage.completion_tokens)
    m.generations.labels(path, reason).inc()


async def _collect(state: ServerState, job: Job, sink: AsyncSink) -> tuple[str, str, Usage]:
    text, reason, usage = "", "length", None
    async for event in job_events(state.scheduler, job, sink, state.settings.request_timeout_s):
        if event[0] == "text":
            text += event[1]
        elif event[0] == "finish":
            reason, usage = event[1], event[2]
    assert usage is not None
    _record_usage(state, job, reason, usage)
    return text, reason, usage


def _sse(obj: Any) -> str:
    data = (
        obj.model_dump_json(exclude_none=True)
        if hasattr(obj, "model_dump_json")
        else json.dumps(obj)
    )
    return f"data: {data}\n\n"


async def _stream(
    state: ServerState,
    job: Job,
    sink: AsyncSink,
    chunk: Callable[[str | None, str | None, Usage | None, PrefvecInfo | None], Any],
    include_usage: bool,
) -> StreamingResponse:
    """Wait for the job to start (errors before that keep their HTTP status), then stream."""
    events = job_events(state.scheduler, job, sink, state.settings.request_timeout_s)
    first = await events.__anext__()  # ("start",) or an exception
    info = job.resolved.info()

    async def body() -> AsyncIterator[str]:
        try:
            yield _sse(chunk("", None, None, info))
            if first[0] == "text":
                yield _sse(chunk(first[1], None, None, None))
            async for event in events:
                if event[0] == "text":
                    yield _sse(chunk(event[1], None, None, None))
                elif event[0] == "finish":
                    _record_usage(state, job, event[1], event[2])
                    yield _sse(chunk(None, event[1], event[2] if include_usage else None, None))
        except PrefvecError as exc:
            yield f"data: {json.dumps({'error': exc.to_dict()})}\n\n"
        finally:
            await events.aclose()
        yield "data: [DONE]\n\n"

    return StreamingResponse(
        body(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _model_name(state: ServerState, req: Any, job: Job) -> str:
    return str(req.model or state.settings.model_name)


@router.post(
    "/chat/completions",
    response_model=ChatCompletionResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def chat_completions(req: ChatCompletionRequest, state: Ready) -> Any:
    """OpenAI-compatible chat completion with prefvec extension fields."""
    messages = [{"role": m.role, "content": m.text()} for m in req.messages]
    job, sink = await _submit(state, req, lambda: state.engine.encode_chat(messages))
    cid, created, model = f"chatcmpl-{job.id}", int(time.time()), _model_name(state, req, job)
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

        include = bool(req.stream_options and req.stream_options.include_usage)
        return await _stream(state, job, sink, chunk, include)
    text, reason, usage = await _collect(state, job, sink)
    return ChatCompletionResponse(
        id=cid, created=created, model=model,
        choices=[ChatChoice(message=AssistantMessage(content=text), finish_reason=reason)],  # type: ignore[arg-type]
        usage=usage, prefvec=job.resolved.info(),
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
async def completions(req: CompletionRequest, state: Ready) -> Any:
    """OpenAI-compatible text completion with prefvec extension fields."""
    prompt = _completion_prompt(req)
    job, sink = await _submit(state, req, lambda: state.engine.encode_text(prompt, "prompt"))
    cid, created, model = f"cmpl-{job.id}", int(time.time()), _model_name(state, req, job)
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

        include = bool(req.stream_options and req.stream_options.include_usage)
        return await _stream(state, job, sink, chunk, include)
    text, reason, usage = await _collect(state, job, sink)
    if req.echo:
        text = prompt + text
    return CompletionResponse(
        id=cid, created=created, model=model,
        choices=[CompletionChoice(text=text, finish_reason=reason)],  # type: ignore[arg-type]
        usage=usage, prefvec=job.resolved.info(),
    )  # fmt: skip
