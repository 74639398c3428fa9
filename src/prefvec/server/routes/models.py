"""``GET /v1/models``: the base, then every recipe as ``recipe:<name>``."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from prefvec.protocol import ModelCard, ModelList
from prefvec.server.deps import Ready, User

router = APIRouter(prefix="/v1", tags=["models"], dependencies=[User])


@router.get("/models", response_model=ModelList)
async def list_models(state: Ready) -> ModelList:
    recipes = await run_in_threadpool(state.store.list_recipes)
    cards = [ModelCard(id=state.settings.model_name, kind="base")]
    cards += [
        ModelCard(id=f"recipe:{r.name}", kind="recipe", recipe_key=r.to_spec().key) for r in recipes
    ]
    return ModelList(data=cards)
