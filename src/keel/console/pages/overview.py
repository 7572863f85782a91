"""Overview: the store (backend, revision, size, leases), each area's health, recent changes."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keel.console._pages import Nav, console, render
from keel.console.pages._overview_data import load_overview

__all__ = ["NAV", "ROUTES"]

NAV = Nav("Overview", "/")


async def overview(request: Request) -> Response:
    """GET /: the overview, live."""
    app = console(request)
    data = await load_overview(app.store, app.audit)
    return render(request, "overview.html", data=data, status=data.status)


ROUTES = [Route("/", overview)]
