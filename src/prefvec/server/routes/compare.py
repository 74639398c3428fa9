"""``POST /v1/compare``: prompts × candidates, side by side, scored and summarised."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from prefvec.errors import ValidationError
from prefvec.protocol import (
    ChatCompletionRequest,
    CompareCandidate,
    CompareRequest,
    CompareResponse,
    CompletionRequest,
    PrefvecInfo,
)
from prefvec.server.compare import run_compare
from prefvec.server.deps import Ready, User
from prefvec.server.routes.generation import _collect, _submit

router = APIRouter(prefix="/v1", tags=["compare"], dependencies=[User])
MAX_COMPARE_JOBS = 256


@router.post("/compare", response_model=CompareResponse)
async def compare(req: CompareRequest, state: Ready) -> CompareResponse:
    n = len(req.prompts) * len(req.candidates)
    limit = min(MAX_COMPARE_JOBS, state.settings.max_queue)
    if n > limit:
        raise ValidationError(
            f"`prompts` × `candidates` = {n} generations, the limit is {limit}", field="prompts"
        )

    async def generate(prompt: str, c: CompareCandidate) -> tuple[str, PrefvecInfo]:
        common: dict[str, Any] = dict(
            preferences=c.preferences, recipe=c.recipe, merge=c.merge,
            max_tokens=req.max_tokens, temperature=req.temperature, top_p=req.top_p,
            seed=req.seed,
        )  # fmt: skip
        msgs = [{"role": "user", "content": prompt}]
        if req.chat:
            creq = ChatCompletionRequest.model_validate({"messages": msgs, **common})
            job, sink = await _submit(state, creq, lambda: state.engine.encode_chat(msgs))
        else:
            preq = CompletionRequest.model_validate({"prompt": prompt, **common})
            job, sink = await _submit(state, preq, lambda: state.engine.encode_text(prompt))
        text, _, _ = await _collect(state, job, sink)
        return text, job.resolved.info()

    return await run_compare(req, generate, state.settings.scorers)
