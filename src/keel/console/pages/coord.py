"""The coordination page: locks, semaphores, rwlocks and elections with holders and waiters.

Read-only: a lock is released by its holder (or by its session's lease
running out), never by an operator's click, since the fencing token is what
protects the resource and a forced release would hand out a second owner
while the first one still runs.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keel.console._pages import Nav, console, render
from keel.console.pages._coord_data import coord_overview

__all__ = ["NAV", "ROUTES"]

NAV = Nav("Coordination", "/coord")


async def coord_page(request: Request) -> Response:
    """GET /coord: every lock, semaphore, rwlock and election: holders, tokens, waiters."""
    return render(request, "coord.html", **await coord_overview(console(request).store))


ROUTES = [Route("/coord", coord_page)]
