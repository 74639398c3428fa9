"""``/v1/experiments`` (create, list, report, leaderboard, end, archive, delete) and
``POST /v1/feedback``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from starlette.concurrency import run_in_threadpool

from prefvec.protocol import (
    NAME_PATTERN,
    DeleteResponse,
    ExperimentCreate,
    ExperimentInfo,
    ExperimentList,
    ExperimentReport,
    FeedbackRequest,
    FeedbackResponse,
    Leaderboard,
)
from prefvec.server.deps import Operator, Ready, User
from prefvec.server.errors import error_responses

router = APIRouter(prefix="/v1", tags=["experiments"])
ExperimentName = Annotated[str, Path(pattern=NAME_PATTERN, description="Experiment name.")]


@router.post(
    "/experiments", response_model=ExperimentInfo, status_code=201, dependencies=[Operator],
    responses=error_responses(404, 409),
)  # fmt: skip
async def create_experiment(req: ExperimentCreate, state: Ready) -> ExperimentInfo:
    """Start an experiment; its arms' recipes are pinned (and protected) while it is live."""
    return await run_in_threadpool(state.experiments.create, req)


@router.get("/experiments", response_model=ExperimentList, dependencies=[User])
async def list_experiments(
    state: Ready,
    include_archived: Annotated[bool, Query(description="Also list archived experiments.")] = False,
) -> ExperimentList:
    return ExperimentList(data=await run_in_threadpool(state.experiments.list, include_archived))


@router.get(
    "/experiments/{name}", response_model=ExperimentReport, dependencies=[User],
    responses=error_responses(404),
)  # fmt: skip
async def experiment_report(name: ExperimentName, state: Ready) -> ExperimentReport:
    return await run_in_threadpool(state.experiments.report, name)


@router.get(
    "/experiments/{name}/leaderboard", response_model=Leaderboard, dependencies=[User],
    responses=error_responses(404),
)  # fmt: skip
async def experiment_leaderboard(name: ExperimentName, state: Ready) -> Leaderboard:
    """Arms ranked by Bradley–Terry score over the pairwise votes, with win rates and intervals."""
    return await run_in_threadpool(state.experiments.leaderboard, name)


@router.post(
    "/experiments/{name}/end", response_model=ExperimentInfo, dependencies=[Operator],
    responses=error_responses(404, 409),
)  # fmt: skip
async def end_experiment(name: ExperimentName, state: Ready) -> ExperimentInfo:
    """Stop routing traffic and taking feedback (409 once ended); the report stays."""
    return await run_in_threadpool(state.experiments.end, name)


@router.post(
    "/experiments/{name}/archive", response_model=ExperimentInfo, dependencies=[Operator],
    responses=error_responses(404, 409),
)  # fmt: skip
async def archive_experiment(name: ExperimentName, state: Ready) -> ExperimentInfo:
    """End (if live) and leave out of the default list."""
    return await run_in_threadpool(state.experiments.archive, name)


@router.delete(
    "/experiments/{name}", response_model=DeleteResponse, dependencies=[Operator],
    responses=error_responses(404),
)  # fmt: skip
async def delete_experiment(name: ExperimentName, state: Ready) -> DeleteResponse:
    """Delete an experiment with its assignments and feedback."""
    await run_in_threadpool(state.experiments.delete, name)
    return DeleteResponse(object="experiment", name=name)


@router.post(
    "/feedback", response_model=FeedbackResponse, status_code=201, dependencies=[User],
    responses=error_responses(404, 409),
)  # fmt: skip
async def feedback(req: FeedbackRequest, state: Ready) -> FeedbackResponse:
    """A rating of one arm, or a pairwise vote (`preferred`, `rejected`, `outcome`)."""
    fid, arm = await run_in_threadpool(state.experiments.feedback, req)
    outcome = (req.outcome or "win") if req.preferred is not None else None
    return FeedbackResponse(id=fid, experiment=req.experiment, arm=arm, outcome=outcome)
