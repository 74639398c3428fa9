"""``POST/GET /v1/experiments`` and ``POST /v1/feedback``."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from prefvec.protocol import (
    ExperimentCreate,
    ExperimentInfo,
    ExperimentList,
    ExperimentReport,
    FeedbackRequest,
    FeedbackResponse,
)
from prefvec.server.deps import Operator, Ready, User

router = APIRouter(prefix="/v1", tags=["experiments"])


@router.post(
    "/experiments", response_model=ExperimentInfo, status_code=201, dependencies=[Operator]
)
async def create_experiment(req: ExperimentCreate, state: Ready) -> ExperimentInfo:
    return await run_in_threadpool(state.experiments.create, req)


@router.get("/experiments", response_model=ExperimentList, dependencies=[User])
async def list_experiments(state: Ready) -> ExperimentList:
    return ExperimentList(data=await run_in_threadpool(state.experiments.list))


@router.get("/experiments/{name}", response_model=ExperimentReport, dependencies=[User])
async def experiment_report(name: str, state: Ready) -> ExperimentReport:
    return await run_in_threadpool(state.experiments.report, name)


@router.post("/feedback", response_model=FeedbackResponse, status_code=201, dependencies=[User])
async def feedback(req: FeedbackRequest, state: Ready) -> FeedbackResponse:
    fid, arm = await run_in_threadpool(state.experiments.feedback, req)
    return FeedbackResponse(id=fid, experiment=req.experiment, arm=arm)
