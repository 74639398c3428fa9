"""The tokenizer endpoints (vLLM's shapes, so clients that use them work unchanged, e.g.
lm-evaluation-harness' ``tokenizer_backend=remote``):

* ``POST /tokenize`` (also ``/v1/tokenize``): :class:`~prefvec.protocol.TokenizeRequest` ->
  :class:`~prefvec.protocol.TokenizeResponse`, the ids exactly as the generation routes encode a
  text (no special tokens unless ``add_special_tokens``) or a chat (its template with the
  generation prompt); send them back as a completions ``prompt`` to score a continuation.
* ``POST /detokenize``: :class:`~prefvec.protocol.DetokenizeRequest` -> ``{"prompt": text}``.
* ``GET /tokenizer_info``: special tokens, chat template and context length.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from prefvec.errors import BadRequestError
from prefvec.protocol import (
    DetokenizeRequest,
    DetokenizeResponse,
    TokenizeRequest,
    TokenizeResponse,
    TokenizerInfo,
)
from prefvec.server.deps import Ready, User
from prefvec.server.errors import error_responses
from prefvec.server.state import ServerState

router = APIRouter(tags=["tokenizer"], dependencies=[User])
ERRORS = error_responses(400, 404, 422)


def _refuse(problems: list[tuple[str, str]]) -> None:
    if problems:
        raise BadRequestError(
            "; ".join(w for _, w in problems), problems=[w for _, w in problems],
            field=problems[0][0],
        )  # fmt: skip


def encode(state: ServerState, req: TokenizeRequest) -> list[int]:
    """The ids of ``req`` (blocking: a worker thread)."""
    resolver = state.service.resolver
    resolver.check_model(req.model)
    if (req.prompt is None) == (req.messages is None):
        raise BadRequestError("send exactly one of `prompt` and `messages`", field="prompt")
    if req.messages is not None:
        _refuse(req.unsupported())
        return list(
            resolver.encode_chat([{"role": m.role, "content": m.text()} for m in req.messages])
        )
    if req.add_special_tokens:
        ids = list(resolver.tokenizer(str(req.prompt), add_special_tokens=True)["input_ids"])
        return list(resolver.check_ids(ids, "prompt"))
    return list(resolver.encode_text(str(req.prompt), "prompt"))


@router.post("/tokenize", response_model=TokenizeResponse, responses=ERRORS)
@router.post("/v1/tokenize", response_model=TokenizeResponse, responses=ERRORS)
async def tokenize(req: TokenizeRequest, state: Ready) -> TokenizeResponse:
    """Token ids of a text or a chat, as the generation routes encode them."""
    ids = await run_in_threadpool(encode, state, req)
    return TokenizeResponse(tokens=ids, count=len(ids), max_model_len=state.backend.max_positions)


def decode(state: ServerState, req: DetokenizeRequest) -> str:
    resolver = state.service.resolver
    resolver.check_model(req.model)
    ids = resolver.check_ids(req.tokens, "tokens") if req.tokens else []
    return str(resolver.tokenizer.decode(ids)) if ids else ""


@router.post("/detokenize", response_model=DetokenizeResponse, responses=ERRORS)
@router.post("/v1/detokenize", response_model=DetokenizeResponse, responses=ERRORS)
async def detokenize(req: DetokenizeRequest, state: Ready) -> DetokenizeResponse:
    """The text of token ids (special tokens kept)."""
    return DetokenizeResponse(prompt=await run_in_threadpool(decode, state, req))


def _token(tok: Any, name: str) -> str | None:
    value = getattr(tok, name, None)
    return None if value is None else str(value)


@router.get("/tokenizer_info", response_model=TokenizerInfo)
async def tokenizer_info(state: Ready) -> TokenizerInfo:
    """The tokenizer's special tokens, chat template and the model's context length."""
    tok = state.service.resolver.tokenizer
    template = getattr(tok, "chat_template", None)
    return TokenizerInfo(
        tokenizer_class=type(tok).__name__,
        eos_token=_token(tok, "eos_token"), bos_token=_token(tok, "bos_token"),
        pad_token=_token(tok, "pad_token"),
        chat_template=template if isinstance(template, str) else None,
        model_max_length=state.backend.max_positions,
    )  # fmt: skip
