"""``GET/POST/DELETE /v1/recipes``: named, versioned merge recipes."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from starlette.concurrency import run_in_threadpool

from prefvec.errors import ValidationError
from prefvec.protocol import REF_PATTERN, DeleteResponse, RecipeCreate, RecipeInfo, RecipeList
from prefvec.server.deps import Operator, Ready, User
from prefvec.server.errors import error_responses

router = APIRouter(prefix="/v1/recipes", tags=["recipes"])
RecipeRef = Annotated[
    str, Path(pattern=REF_PATTERN, description="Recipe `name`, `name@latest` or `name@<version>`.")
]


def recipe_info(r: Any) -> RecipeInfo:
    return RecipeInfo(
        name=r.name, version=r.version, method=r.method, weights=dict(r.weights),
        density=r.density, seed=r.seed, description=r.description, key=r.to_spec().key,
        created_at=r.created_at,
    )  # fmt: skip


@router.get("", response_model=RecipeList, dependencies=[User])
async def list_recipes(state: Ready) -> RecipeList:
    recipes = await run_in_threadpool(state.store.list_recipes)
    return RecipeList(data=[recipe_info(r) for r in recipes])


@router.get(
    "/{ref}", response_model=RecipeInfo, dependencies=[User], responses=error_responses(404)
)
async def get_recipe(ref: RecipeRef, state: Ready) -> RecipeInfo:
    return recipe_info(await run_in_threadpool(state.store.get_recipe, ref))


@router.post(
    "", response_model=RecipeInfo, status_code=201, dependencies=[Operator],
    responses=error_responses(404),
)  # fmt: skip
async def create_recipe(req: RecipeCreate, state: Ready) -> RecipeInfo:
    """Save a recipe (weights checked against the server's bounds; refs pinned)."""
    problems = state.resolver.check_weights(req.weights, "weights")
    if problems:
        raise ValidationError("; ".join(problems), problems=problems, field="weights")
    saved = await run_in_threadpool(state.store.put_recipe, req.model_dump())
    return recipe_info(saved)


@router.delete(
    "/{ref}", response_model=DeleteResponse, dependencies=[Operator],
    responses=error_responses(404, 409),
)  # fmt: skip
async def delete_recipe(ref: RecipeRef, state: Ready) -> DeleteResponse:
    """Delete a version (``name@N``) or every version (``name``); 409 while a live experiment
    pins it."""
    from prefvec.vector_store import parse_ref

    name, version = parse_ref(ref, "ref")
    await run_in_threadpool(state.store.delete_recipe, name, version)
    return DeleteResponse(object="recipe", name=name, version=version)
