"""The jobs page: definitions and next fires, runs with their logs, trigger, pause, resume.

The actions are :mod:`keel.schedule`'s admin calls (the ones ``keel jobs``
makes): a trigger writes one PENDING run per shard that live workers claim;
pause and resume are compare-and-swap edits of the definition.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keel.console._pages import Done, Nav, action, console, render
from keel.console._users import Role
from keel.console.pages._forms import field, not_found
from keel.console.pages._jobs_data import job_detail, job_list, run_detail
from keel.errors import NotFoundError, ValidationError
from keel.schedule import get_job, pause_job, resume_job, trigger_job

__all__ = ["NAV", "ROUTES"]

NAV = Nav("Jobs", "/jobs")


async def jobs_page(request: Request) -> Response:
    """GET /jobs: every job with trigger, state, next fire, last run and workers."""
    return render(request, "jobs.html", **await job_list(console(request).store))


async def job_page(request: Request) -> Response:
    """GET /jobs/{name}: definition, statistics, chart of durations and outcomes, runs."""
    try:
        ctx = await job_detail(console(request).store, request.path_params["name"])
    except (NotFoundError, ValidationError) as exc:
        return not_found(request, str(exc))
    return render(request, "job.html", **ctx)


async def run_page(request: Request) -> Response:
    """GET /jobs/{name}/runs/{run}: one run's record, captured log and traceback."""
    run_id = f"{request.path_params['name']}/{request.path_params['run']}"
    try:
        ctx = await run_detail(console(request).store, run_id)
    except (NotFoundError, ValidationError) as exc:
        return not_found(request, str(exc))
    return render(request, "run.html", **ctx)


def _args(form: FormData) -> Any:
    text = field(form, "args").strip()
    if not text:
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise ValidationError(
            'arguments are not JSON: give e.g. {"day": "2024-01-01"}, or leave them empty'
        ) from None


@action(Role.OPERATOR, "job.trigger")
async def trigger(request: Request, form: FormData) -> Done:
    """POST /jobs/{name}/trigger: run the job now, once per shard (``args``: JSON, optional)."""
    name = request.path_params["name"]
    args = _args(form)
    ids = await trigger_job(console(request).store, name, args=args)
    return Done(
        target=f"job/{name}",
        after=ids,
        detail={"args": args} if args is not None else None,
        message=f"triggered {name}: {', '.join(ids)}",
        redirect=f"/jobs/{name}",
        data={"runs": ids},
    )


async def _set_paused(request: Request, paused: bool) -> Done:
    name = request.path_params["name"]
    store = console(request).store
    before, _ = await get_job(store, name)
    after = await (pause_job if paused else resume_job)(store, name)
    word = "paused" if paused else "resumed"
    return Done(
        target=f"job/{name}",
        before={"paused": before.paused},
        after={"paused": after.paused},
        message=f"{word} {name}",
        redirect=f"/jobs/{name}",
    )


@action(Role.OPERATOR, "job.pause")
async def pause(request: Request, form: FormData) -> Done:
    """POST /jobs/{name}/pause: stop planning new fires (planned runs still run)."""
    return await _set_paused(request, True)


@action(Role.OPERATOR, "job.resume")
async def resume(request: Request, form: FormData) -> Done:
    """POST /jobs/{name}/resume: plan fires again from now on."""
    return await _set_paused(request, False)


ROUTES = [
    Route("/jobs", jobs_page),
    Route("/jobs/{name}", job_page),
    Route("/jobs/{name}/runs/{run}", run_page),
    Route("/jobs/{name}/trigger", trigger, methods=["POST"]),
    Route("/jobs/{name}/pause", pause, methods=["POST"]),
    Route("/jobs/{name}/resume", resume, methods=["POST"]),
]
