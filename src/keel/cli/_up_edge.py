"""The edges ``keel up`` shows in its header: the gateway's routes and the web console.

The gateway's routes are read from the ``gateway.yaml`` config record the
view already follows (decoded by the config module, then validated by the
gateway's own document model: a document that does not validate is shown as
such, never drawn raw). The console runs in ``keel up``'s own loop
(:func:`run_console`); a port already in use or a failure becomes a line in
the view, not a crash of everything else.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass

from keel.config import ConfigDocument
from keel.errors import KeelError
from keel.store import Store

__all__ = ["GATEWAY_CONFIG", "ConsoleWatch", "route_summary", "run_console"]

GATEWAY_CONFIG = "gateway.yaml"
_MAX_ROUTES = 6


@functools.lru_cache(maxsize=8)
def _summary(content: str, fmt: str) -> str:
    from keel.gateway import parse_document

    try:
        doc = parse_document(content, name=GATEWAY_CONFIG, fmt=fmt)  # type: ignore[arg-type]
    except KeelError:
        return "the published routes do not validate: keel gateway check FILE says why"
    parts = []
    for route in doc.routes[:_MAX_ROUTES]:
        methods = ",".join(route.match.methods or ()) or "*"
        if route.forward is not None:
            target = route.forward.service or route.forward.url or "?"
        elif route.redirect is not None:
            target = f"redirect {route.redirect.status}"
        else:
            target = str(route.respond.status) if route.respond is not None else "?"
        parts.append(f"{methods} {route.match.path} → {target}")
    more = len(doc.routes) - _MAX_ROUTES
    return " · ".join(parts) + (f" · {more} more" if more > 0 else "") or "no routes"


def route_summary(doc: ConfigDocument | None) -> str | None:
    """``POST /orders → orders · GET /stock/{sku} → inventory``; None without a document."""
    if doc is None:
        return None
    return _summary(doc.content, doc.format)


@dataclass
class ConsoleWatch:
    """Where the console is, and what the operator should know about it."""

    port: int
    url: str | None = None
    hint: str | None = None
    problem: str | None = None


async def run_console(store: Store, watch: ConsoleWatch, stop: asyncio.Event) -> None:
    """Serve the web console until ``stop``; record its address, first-user hint or failure."""
    try:
        from keel.console import ConsoleSettings, first_user_hint, serve

        def ready(url: str) -> None:
            watch.url = url

        watch.hint = await first_user_hint(store)
        await serve(store, ConsoleSettings(port=watch.port), stop=stop, on_ready=ready)
    except (KeelError, OSError) as exc:
        watch.problem = f"console not started: {exc}"
