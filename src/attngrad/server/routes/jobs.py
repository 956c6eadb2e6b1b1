"""Long experiments as jobs: class rewriting and attention transfer; poll, stream or cancel them."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from fastapi import APIRouter, Form
from fastapi.responses import JSONResponse, StreamingResponse

from .. import work
from ..jobs import Job
from ..problems import http_error
from ..schemas import ERRORS, JobSnapshot, JobStarted, binary
from ..service import Explorer, ExplorerDep
from .images import ImageFile, ImageId, SampleId

router = APIRouter(prefix="/api/jobs", tags=["jobs"])

_OPTIMIZERS = ("adam", "sgd")


def _started(job: Job) -> JSONResponse:
    body = JobStarted(job_id=job.id, status_url=f"/api/jobs/{job.id}", events_url=f"/api/jobs/{job.id}/events")
    return JSONResponse(body.model_dump(), status_code=202)


def _job(ex: Explorer, job_id: str) -> Job:
    job = ex.jobs.get(job_id)
    if job is None:
        raise http_error(404, f"unknown job {job_id!r} (finished jobs are forgotten after a while)")
    return job


@router.post("/rewrite", status_code=202, response_model=JobStarted, responses=ERRORS)
async def start_rewrite(
    ex: ExplorerDep,
    file: ImageFile = None,
    sample: SampleId = None,
    image_id: ImageId = None,
    to: str = Form(..., description="the class to reach (name, index or topK)"),
    from_: str | None = Form(None, alias="from", description="the class to leave (default: the prediction)"),
    eps: float = Form(2 / 255, gt=0, le=1, description="L-inf budget in [0, 1] units (whole 8-bit levels)"),
    steps: int = Form(50, ge=1, le=500),
    probability: float = Form(0.9, gt=0, lt=1, description="stop once 'to' is top-1 with this probability"),
) -> JSONResponse:
    """Class rewriting (paper, experiment 5) as a job: poll ``status_url`` or stream ``events_url``."""
    goal = ex.check_class(to, "to")
    if goal is None:
        raise http_error(422, "give the class to reach in 'to'", field="to", valid=ex.explainer.labels)
    leave = ex.check_class(from_, "from")
    _, image = await ex.image(file, sample, image_id)
    fn = work.rewrite_job(ex.explainer, image, goal, leave, eps=eps, steps=steps, probability=probability)
    return _started(ex.jobs.start("rewrite", fn))


@router.post("/transfer", status_code=202, response_model=JobStarted, responses=ERRORS)
async def start_transfer(
    ex: ExplorerDep,
    file: ImageFile = None,
    sample: SampleId = None,
    image_id: ImageId = None,
    target: str | None = Form(None, description="the class whose logit is descended (default: top1)"),
    opposing: str | None = Form(None, description="the other class (default: the strongest other class)"),
    steps: int = Form(12, ge=0, le=200),
    lr: float = Form(4e-4, gt=0, le=10, description="learning rate (the paper: 0.0004)"),
    optimizer: str = Form("adam", description="adam or sgd"),
) -> JSONResponse:
    """Attention transfer (paper, experiment 2) as a job: one animation frame per step."""
    if optimizer not in _OPTIMIZERS:
        raise http_error(
            422, f"unknown optimizer {optimizer!r}; choose adam or sgd", field="optimizer", valid=list(_OPTIMIZERS)
        )
    target = ex.check_class(target, "target")
    opposing = ex.check_class(opposing, "opposing")
    _, image = await ex.image(file, sample, image_id)
    fn = work.transfer_job(ex.explainer, image, target, opposing, steps=steps, lr=lr, optimizer=optimizer)
    return _started(ex.jobs.start("transfer", fn))


@router.get("/{job_id}", response_model=JobSnapshot, responses={404: ERRORS[404]})
async def job_status(ex: ExplorerDep, job_id: str, since: int = 0) -> dict:
    """A job's status, progress, events from index ``since``, and result or error."""
    return _job(ex, job_id).snapshot(since=max(0, since))


@router.get(
    "/{job_id}/events",
    response_class=StreamingResponse,
    responses={**binary("text/event-stream", "server-sent events: `progress` per step, then `end`"), 404: ERRORS[404]},
)
async def job_events(ex: ExplorerDep, job_id: str) -> StreamingResponse:
    """Server-sent events: one ``progress`` event per step, then an ``end`` event (the final snapshot)."""
    job = _job(ex, job_id)

    async def lines() -> AsyncIterator[str]:
        async for event in ex.jobs.stream(job):
            yield f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"

    return StreamingResponse(lines(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


@router.delete("/{job_id}", response_model=JobSnapshot, responses={404: ERRORS[404]})
async def job_cancel(ex: ExplorerDep, job_id: str) -> dict:
    """Cancel a job; it stops after its current step."""
    job = _job(ex, job_id)
    job.cancel()
    return job.snapshot()
