"""``POST /v1/chat/completions`` and ``POST /v1/completions`` (OpenAI-compatible, SSE streaming).

Routes only parse and shape responses; :class:`~prefvec.server.service.GenerationService` does the
work. A streaming response is opened only once the first event is there, so an error before it
(queue full, a vector that fails to load) keeps its HTTP status; an error after it ends the
stream with an OpenAI-style ``{"error": ...}`` event and ``[DONE]``.

Nothing is silently ignored: every OpenAI field is honoured or refused with a 400 naming it
(:meth:`~prefvec.protocol.ChatCompletionRequest.unsupported`). ``n`` choices and a list of prompts
run through :meth:`~prefvec.server.service.GenerationService.complete_many` (admitted and
withdrawn together); choice ``i * n + j`` is sample ``j`` of prompt ``i``, seeded ``seed + j``.
Log-probabilities are the model's own (raw log-softmax, before penalties and ``logit_bias``).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from prefvec.errors import BadRequestError, PrefvecError
from prefvec.protocol import (
    SEED_MAX,
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatDelta,
    ChatLogprobs,
    ChatTokenLogprob,
    CompletionChoice,
    CompletionChunk,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
    TopLogprob,
    Unsupported,
    Usage,
)
from prefvec.server.backends.base import FinishEvent, GenerationRequest, TextEvent, TokenLogprob
from prefvec.server.deps import Ready, User
from prefvec.server.service import Completion, GenerationService, Stream, until_disconnected
from prefvec.server.state import ServerState

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["generation"], dependencies=[User])

# -------------------------------------------------------------------------- request checks


def check_request(req: Any, settings: Any, extra: Sequence[tuple[str, str]] = ()) -> None:
    """Refuse, all at once, every field this request sets that the server cannot honour.

    Raises:
        BadRequestError: naming each such field (``field`` is the first).
    """
    problems = list(req.unsupported()) + list(extra)
    if req.n > settings.max_n:
        problems.append(("n", f"`n` must be <= {settings.max_n} (`max_n`), got {req.n}"))
    if req.stream and req.n > 1:
        problems.append(("n", f"`n` = {req.n} is not supported with `stream: true`"))
    if problems:
        raise BadRequestError(
            "; ".join(why for _, why in problems),
            problems=[why for _, why in problems],
            field=problems[0][0],
        )


def sampling_of(req: Any) -> dict[str, Any]:
    """The sampling keyword arguments of a chat or completion request."""
    max_tokens = getattr(req, "max_completion_tokens", None)
    return dict(
        max_tokens=req.max_tokens if max_tokens is None else max_tokens,
        temperature=req.temperature, top_p=req.top_p, stop=req.stop,
        frequency_penalty=req.frequency_penalty, presence_penalty=req.presence_penalty,
        logit_bias=req.logit_bias,
    )  # fmt: skip


def seed_of(seed: int | None, i: int) -> int | None:
    """Seed of choice ``i``: ``seed + i`` (wrapping within 64 bits); None stays random."""
    return None if seed is None else (seed + i) % (SEED_MAX + 1)


def prepare_all(
    service: GenerationService,
    req: Any,
    kind: str,
    prompts: Sequence[dict[str, Any]],
    **logprobs: Any,
) -> list[GenerationRequest]:
    """Resolve once, then prepare ``n`` generations per prompt (blocking: a worker thread)."""
    if req.experiment is not None and service.resolver.check_model(req.model) is not None:
        raise BadRequestError(
            f"`experiment` ({req.experiment!r}) picks the recipe; `model` {req.model!r} names "
            "one too",
            field="model",
        )
    resolved = service.resolve(
        preferences=req.preferences, recipe=req.recipe, merge=req.merge, model=req.model,
        experiment=req.experiment, user=req.user,
    )  # fmt: skip
    sampling = sampling_of(req)
    return [
        service.prepare(
            resolved,
            kind=kind,
            user=req.user,
            seed=seed_of(req.seed, j),
            **prompt,
            **sampling,
            **logprobs,
        )
        for prompt in prompts
        for j in range(req.n)
    ]


async def run_all(
    service: GenerationService, request: Request, greqs: list[GenerationRequest]
) -> list[Completion]:
    """Run to the end (several together, all or none); cancelled if the client leaves."""
    work = (
        service.complete_many(greqs, user=greqs[0].user)
        if len(greqs) > 1
        else _one(service, greqs[0])
    )
    return await until_disconnected(request.receive, work)


async def _one(service: GenerationService, greq: GenerationRequest) -> list[Completion]:
    return [await service.complete(greq)]


def total_usage(done: Sequence[Completion], n: int) -> Usage:
    """Usage of a request: each prompt counted once, every choice's completion tokens."""
    prompt = sum(c.usage.prompt_tokens for c in done[::n])
    completion = sum(c.usage.completion_tokens for c in done)
    return Usage(
        prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
    )


# ------------------------------------------------------------------------ log-probabilities


class TokenTexts:
    """Each token id's own bytes and text (special tokens kept), memoised per request.

    A token's bytes are exact for byte-level BPE (GPT-2 style), SentencePiece byte fallback
    (``<0xE2>``) and Metaspace (``▁``) vocabularies; otherwise they are its decoded text. A token
    that is not valid UTF-8 on its own (part of a character) is shown as OpenAI does:
    ``bytes:\\xe2\\x80``.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        decoder = repr(getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None))
        self._byte_level = "ByteLevel" in decoder
        self._metaspace = "Metaspace" in decoder
        self._special = set(getattr(tokenizer, "all_special_ids", ()) or ())
        self._memo: dict[int, bytes] = {}

    def raw(self, token_id: int) -> bytes:
        if token_id not in self._memo:
            self._memo[token_id] = self._bytes(token_id)
        return self._memo[token_id]

    def _bytes(self, token_id: int) -> bytes:
        piece = str(self.tokenizer.convert_ids_to_tokens(token_id))
        if token_id in self._special:
            return piece.encode()
        fallback = re.fullmatch(r"<0x([0-9A-Fa-f]{2})>", piece)
        if fallback:
            return bytes([int(fallback.group(1), 16)])
        if self._byte_level and all(ch in _BYTE_OF for ch in piece):
            return bytes(_BYTE_OF[ch] for ch in piece)
        if self._metaspace:
            return piece.replace("\u2581", " ").encode()
        return str(self.tokenizer.decode([token_id])).encode()

    def __call__(self, token_id: int) -> str:
        raw = self.raw(token_id)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return "bytes:" + "".join(f"\\x{b:02x}" for b in raw)

    def top(self, lp: TokenLogprob) -> list[TopLogprob]:
        return [TopLogprob(token=self(i), logprob=v, bytes=list(self.raw(i))) for i, v in lp.top]

    def offsets(self, ids: Sequence[int], before: Sequence[int] = ()) -> list[int]:
        """Character offset of each token of ``ids`` in the text of ``before + ids`` (the
        complete characters ahead of it)."""
        out, seen = [], b"".join(self.raw(i) for i in before)
        for token_id in ids:
            out.append(len(seen.decode("utf-8", errors="ignore")))
            seen += self.raw(token_id)
        return out


def _gpt2_byte_alphabet() -> dict[str, int]:
    """The printable stand-in character of each byte in byte-level BPE vocabularies, inverted:
    printable Latin-1 bytes stand for themselves, the other 68 are shifted past 255 in order."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    chars, shifted = dict.fromkeys(printable, 0), 0
    for b in range(256):
        if b in chars:
            chars[b] = b
        else:
            chars[b] = 256 + shifted
            shifted += 1
    return {chr(c): b for b, c in chars.items()}


_BYTE_OF = _gpt2_byte_alphabet()


def chat_logprobs(texts: TokenTexts, lps: Sequence[TokenLogprob] | None) -> ChatLogprobs | None:
    """OpenAI's chat ``logprobs.content``: token, logprob, bytes, top_logprobs."""
    if lps is None:
        return None
    content = [
        ChatTokenLogprob(
            token=texts(lp.token_id),
            logprob=lp.logprob,
            bytes=list(texts.raw(lp.token_id)),
            top_logprobs=texts.top(lp),
        )
        for lp in lps
    ]
    return ChatLogprobs(content=content)


def legacy_logprobs(
    texts: TokenTexts,
    ids: Sequence[int],
    lps: Sequence[TokenLogprob | None],
    before: Sequence[int] = (),
) -> CompletionLogprobs:
    """The legacy completions shape for tokens ``ids`` (``lps`` None where a token has none,
    e.g. the prompt's first); ``top_logprobs`` maps text to logprob for the top alternatives and
    the token itself; ``text_offset`` counts from the start of ``before`` (tokens ahead of these
    in the choice's text)."""
    out = CompletionLogprobs(top_logprobs=[], text_offset=texts.offsets(ids, before))
    for token_id, lp in zip(ids, lps, strict=True):
        text = texts(token_id)
        out.tokens.append(text)
        out.token_logprobs.append(None if lp is None else lp.logprob)
        top = None if lp is None else {texts(i): v for i, v in lp.top}
        if top is not None and lp is not None:
            top.setdefault(text, lp.logprob)
        out.top_logprobs.append(top)  # type: ignore[union-attr]
    return out


# --------------------------------------------------------------------------------- streaming


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


EventChunk = Callable[[TextEvent | FinishEvent | None], Any]
"""Shapes one chunk: None for the opening (role/info) chunk, a text event, or the finish."""


def stream_response(state: ServerState, stream: Stream, chunk: EventChunk, usage_chunk: Any) -> Any:
    """SSE of a started stream: the opening chunk, a chunk per text event (with its
    log-probabilities if asked), the finish chunk, then the usage chunk if asked for
    (``choices: []``, as OpenAI sends it), then ``[DONE]``."""

    async def body() -> AsyncIterator[str]:
        try:
            yield _sse(chunk(None))
            async for event in stream.events():
                if isinstance(event, TextEvent) and not (event.text or event.logprobs):
                    continue
                yield _sse(chunk(event))
                if isinstance(event, FinishEvent) and usage_chunk is not None:
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


# -------------------------------------------------------------------------------------- chat


def _chat_stream(
    state: ServerState, req: ChatCompletionRequest, stream: Stream, texts: TokenTexts
) -> Any:
    head = dict(id=f"chatcmpl-{stream.request.id}", created=int(time.time()),
                model=_model_name(state, req))  # fmt: skip
    info = stream.request.resolved.info()

    def chunk(event: TextEvent | FinishEvent | None) -> ChatCompletionChunk:
        if event is None:
            choice = ChatChunkChoice(delta=ChatDelta(role="assistant", content=""))
            return ChatCompletionChunk(**head, choices=[choice], prefvec=info)  # type: ignore[arg-type]
        if isinstance(event, FinishEvent):
            choice = ChatChunkChoice(delta=ChatDelta(), finish_reason=event.reason)
        else:
            lp = chat_logprobs(texts, event.logprobs) if req.logprobs else None
            choice = ChatChunkChoice(delta=ChatDelta(content=event.text), logprobs=lp)
        return ChatCompletionChunk(**head, choices=[choice])  # type: ignore[arg-type]

    def usage_chunk(usage: Usage) -> ChatCompletionChunk:
        return ChatCompletionChunk(**head, choices=[], usage=usage)  # type: ignore[arg-type]

    return stream_response(state, stream, chunk, usage_chunk if _include_usage(req) else None)


@router.post(
    "/chat/completions",
    response_model=ChatCompletionResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def chat_completions(req: ChatCompletionRequest, state: Ready, request: Request) -> Any:
    """OpenAI-compatible chat completion with prefvec extension fields."""
    check_request(req, state.settings)
    service = state.service
    messages = [{"role": m.role, "content": m.text()} for m in req.messages]
    k = (req.top_logprobs or 0) if req.logprobs else None
    greqs = await run_in_threadpool(
        prepare_all, service, req, "chat", [{"messages": messages}], logprobs=k
    )
    texts = TokenTexts(service.resolver.tokenizer)
    if req.stream:
        stream = await until_disconnected(request.receive, service.start(greqs[0]))
        return _chat_stream(state, req, stream, texts)
    done = await run_all(service, request, greqs)
    choices = [
        ChatChoice(
            index=i,
            message=AssistantMessage(content=c.text),
            finish_reason=c.reason,
            logprobs=chat_logprobs(texts, c.logprobs) if req.logprobs else None,
        )
        for i, c in enumerate(done)
    ]
    return ChatCompletionResponse(
        id=f"chatcmpl-{greqs[0].id}", created=int(time.time()), model=_model_name(state, req),
        choices=choices, usage=total_usage(done, req.n), prefvec=done[0].info,
    )  # fmt: skip


# -------------------------------------------------------------------------------- completions


def _prompt_kwargs(prompts: list[str] | list[list[int]]) -> list[dict[str, Any]]:
    return [{"prompt": p} if isinstance(p, str) else {"prompt_ids": p} for p in prompts]


def _completion_checks(req: CompletionRequest) -> Unsupported:
    prompts = req.prompts()
    if not prompts:
        return [("prompt", "`prompt` must not be an empty list")]
    if req.stream and len(prompts) > 1:
        return [("prompt", f"a list of {len(prompts)} prompts is not supported with `stream`")]
    return []


def _echo_text(texts: TokenTexts, prompt: str | list[int]) -> str:
    if isinstance(prompt, str):
        return prompt
    return str(texts.tokenizer.decode(prompt, skip_special_tokens=True))


def _completion_choice(
    texts: TokenTexts, req: CompletionRequest, greq: GenerationRequest, c: Completion, index: int,
    prompt: str | list[int],
) -> CompletionChoice:  # fmt: skip
    text = _echo_text(texts, prompt) + c.text if req.echo else c.text
    logprobs = None
    if req.logprobs is not None:
        ids = list(c.token_ids)
        lps: list[TokenLogprob | None] = list(c.logprobs or [])
        if req.echo:
            ids = list(greq.prompt_ids) + ids
            lps = list(c.prompt_logprobs or [None] * len(greq.prompt_ids)) + lps
        logprobs = legacy_logprobs(texts, ids, lps)
    return CompletionChoice(index=index, text=text, finish_reason=c.reason, logprobs=logprobs)


def _completion_stream(
    state: ServerState, req: CompletionRequest, stream: Stream, texts: TokenTexts, prompt: Any
) -> Any:
    head = dict(id=f"cmpl-{stream.request.id}", created=int(time.time()),
                model=_model_name(state, req))  # fmt: skip
    info = stream.request.resolved.info()
    seen: list[int] = []

    def chunk(event: TextEvent | FinishEvent | None) -> CompletionChunk:
        if event is None:
            text = _echo_text(texts, prompt) if req.echo else ""
            choice = CompletionChoice(text=text)
            return CompletionChunk(**head, choices=[choice], prefvec=info)  # type: ignore[arg-type]
        if isinstance(event, FinishEvent):
            choice = CompletionChoice(text="", finish_reason=event.reason)
        else:
            lp = None
            if req.logprobs is not None and event.logprobs is not None:
                lp = legacy_logprobs(texts, event.token_ids, event.logprobs, seen)
                seen.extend(event.token_ids)
            choice = CompletionChoice(text=event.text, logprobs=lp)
        return CompletionChunk(**head, choices=[choice])  # type: ignore[arg-type]

    def usage_chunk(usage: Usage) -> CompletionChunk:
        return CompletionChunk(**head, choices=[], usage=usage)  # type: ignore[arg-type]

    return stream_response(state, stream, chunk, usage_chunk if _include_usage(req) else None)


@router.post(
    "/completions",
    response_model=CompletionResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def completions(req: CompletionRequest, state: Ready, request: Request) -> Any:
    """OpenAI-compatible text completion with prefvec extension fields: token-id prompts, a list
    of prompts, ``logprobs`` and ``echo`` (``max_tokens: 0`` scores the prompt only)."""
    check_request(req, state.settings, _completion_checks(req))
    service = state.service
    prompts = req.prompts()
    scored = req.logprobs if req.echo else None
    greqs = await run_in_threadpool(
        prepare_all, service, req, "completion", _prompt_kwargs(prompts),
        logprobs=req.logprobs, prompt_logprobs=scored,
    )  # fmt: skip
    texts = TokenTexts(service.resolver.tokenizer)
    if req.stream:
        stream = await until_disconnected(request.receive, service.start(greqs[0]))
        return _completion_stream(state, req, stream, texts, prompts[0])
    done = await run_all(service, request, greqs)
    choices = [
        _completion_choice(texts, req, greqs[i], c, i, prompts[i // req.n])
        for i, c in enumerate(done)
    ]
    return CompletionResponse(
        id=f"cmpl-{greqs[0].id}", created=int(time.time()), model=_model_name(state, req),
        choices=choices, usage=total_usage(done, req.n), prefvec=done[0].info,
    )  # fmt: skip
