"""Overview: the store (backend, revision, size, leases), counts per area, recent changes."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keel.console._pages import Nav, console, render

__all__ = ["NAV", "ROUTES"]

NAV = Nav("Overview", "/")


async def overview(request: Request) -> Response:
    """The overview page."""
    app = console(request)
    status = await app.store.status()
    return render(request, "overview.html", status=status)


ROUTES = [Route("/", overview)]
