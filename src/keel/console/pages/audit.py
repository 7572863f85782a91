"""Audit log: every change made through the console, newest first, live."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keel.console._pages import Nav, console, render
from keel.errors import ValidationError

__all__ = ["NAV", "ROUTES"]

NAV = Nav("Audit", "/audit")
PAGE = 50


async def audit_page(request: Request) -> Response:
    """GET /audit[?before=ID]: a page of entries, newest first."""
    before = request.query_params.get("before") or None
    try:
        entries = await console(request).audit.recent(PAGE + 1, before_id=before)
    except ValidationError as exc:
        return render(request, "error.html", status_code=400, title="Bad page", message=str(exc))
    older = entries[PAGE - 1].id if len(entries) > PAGE else None
    return render(
        request, "audit.html", entries=entries[:PAGE], older=older, paged=before is not None
    )


ROUTES = [Route("/audit", audit_page)]
