"""The sagas page: sagas in progress, outcomes, one saga's steps; retry a failed one, abort.

The actions are :mod:`keel.saga`'s admin calls (the ones ``keel sagas``
makes): both are compare-and-swap edits of the saga record that a running
coordinator then acts on.
"""

from __future__ import annotations

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keel.console._pages import Done, Nav, action, console, render
from keel.console._users import Role
from keel.console.pages._forms import not_found
from keel.console.pages._sagas_data import saga_detail, saga_list
from keel.errors import ConflictError, NotFoundError, ValidationError
from keel.saga import abort_saga, get_saga, retry_saga

__all__ = ["NAV", "ROUTES"]

NAV = Nav("Sagas", "/sagas")


def _saga_id(request: Request) -> str:
    return f"{request.path_params['saga']}/{request.path_params['id']}"


async def sagas_page(request: Request) -> Response:
    """GET /sagas[?status=S]: sagas in progress, ended ones newest first, counts by status."""
    ctx = await saga_list(console(request).store, status=request.query_params.get("status"))
    return render(request, "sagas.html", **ctx)


async def saga_page(request: Request) -> Response:
    """GET /sagas/{saga}/{id}: the saga's status, input and each step."""
    try:
        ctx = await saga_detail(console(request).store, _saga_id(request))
    except (NotFoundError, ValidationError, ConflictError) as exc:
        return not_found(request, str(exc))
    return render(request, "saga.html", **ctx)


@action(Role.OPERATOR, "saga.retry")
async def retry(request: Request, form: FormData) -> Done:
    """POST /sagas/{saga}/{id}/retry: send a FAILED saga back to compensating."""
    saga_id = _saga_id(request)
    rec = await retry_saga(console(request).store, saga_id)
    return Done(
        target=f"saga/{saga_id}",
        before="failed",
        after=rec.status.value,
        message=f"{saga_id}: compensating again",
        redirect=f"/sagas/{saga_id}",
    )


@action(Role.OPERATOR, "saga.abort")
async def abort(request: Request, form: FormData) -> Done:
    """POST /sagas/{saga}/{id}/abort: ask a running saga to compensate."""
    saga_id = _saga_id(request)
    store = console(request).store
    before = await get_saga(store, saga_id)
    rec = await abort_saga(store, saga_id)
    return Done(
        target=f"saga/{saga_id}",
        before=before.status.value,
        after=f"{rec.status.value} (abort asked)",
        message=f"{saga_id}: abort asked",
        redirect=f"/sagas/{saga_id}",
    )


ROUTES = [
    Route("/sagas", sagas_page),
    Route("/sagas/{saga}/{id}", saga_page),
    Route("/sagas/{saga}/{id}/retry", retry, methods=["POST"]),
    Route("/sagas/{saga}/{id}/abort", abort, methods=["POST"]),
]
