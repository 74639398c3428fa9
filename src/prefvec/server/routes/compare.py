"""``POST /v1/compare``: prompts × candidates, side by side, scored and summarised."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from prefvec.errors import ValidationError
from prefvec.protocol import CompareCandidate, CompareRequest, CompareResponse, PrefvecInfo
from prefvec.server.backends.base import GenerationRequest
from prefvec.server.compare import run_compare
from prefvec.server.deps import Ready, User
from prefvec.server.service import GenerationService, until_disconnected

router = APIRouter(prefix="/v1", tags=["compare"], dependencies=[User])
MAX_COMPARE_JOBS = 256


def _prepare_all(
    service: GenerationService, req: CompareRequest, pairs: list[tuple[str, CompareCandidate]]
) -> list[GenerationRequest]:
    """Every generation of the compare, resolved and checked before any is queued."""
    out = []
    sampling: dict[str, Any] = dict(
        max_tokens=req.max_tokens, temperature=req.temperature, top_p=req.top_p, seed=req.seed
    )
    for i, (prompt, c) in enumerate(pairs):
        prefix = f"candidates[{i % len(req.candidates)}]."
        resolved = service.resolve(
            preferences=c.preferences, recipe=c.recipe, merge=c.merge, field_prefix=prefix
        )
        prompt_kw: dict[str, Any] = (
            {"messages": [{"role": "user", "content": prompt}]} if req.chat else {"prompt": prompt}
        )
        out.append(service.prepare(resolved, kind="compare", **prompt_kw, **sampling))
    return out


@router.post("/compare", response_model=CompareResponse)
async def compare(req: CompareRequest, state: Ready, request: Request) -> CompareResponse:
    n = len(req.prompts) * len(req.candidates)
    limit = min(MAX_COMPARE_JOBS, state.settings.max_queue)
    if n > limit:
        raise ValidationError(
            f"`prompts` × `candidates` = {n} generations, the limit is {limit}", field="prompts"
        )
    service = state.service

    async def generate_all(
        pairs: list[tuple[str, CompareCandidate]],
    ) -> list[tuple[str, PrefvecInfo]]:
        reqs = await run_in_threadpool(_prepare_all, service, req, pairs)
        done = await service.complete_many(reqs)
        return [(d.text, d.info) for d in done]

    work = run_compare(req, generate_all, state.settings.scorers)
    return await until_disconnected(request.receive, work)
