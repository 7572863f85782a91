"""A child process for canary tests: ``fleet`` bindings, or a canary ``controller``.

``python -m tests.config._canary_child fleet URL NAME PREFIX COUNT`` binds COUNT
clients (``PREFIX-c0``...) on one session; each reports healthy unless the
document it runs says ``broken: true`` (an application hurt by a bad config).
Prints ``READY`` once all are bound.

``python -m tests.config._canary_child controller URL NODE`` runs a
:class:`~keel.config.CanaryController` on a short session (TTL 2 s) and
prints ``LEADING NODE`` when it leads.
"""

from __future__ import annotations

import asyncio
import sys
from contextlib import AsyncExitStack
from typing import Any

import keel
from keel.config import CanaryController, ConfigCenter, LiveConfig
from keel.coord import Session
from keel.observe import ConfigMetrics


def healthy_on(live: list[LiveConfig[dict[str, Any]]]) -> bool:
    """The application's check: unhealthy when its config says ``broken: true``."""
    return not (live and live[0].value.get("broken") is True)


async def fleet(url: str, name: str, prefix: str, count: int) -> None:
    """Bind ``count`` clients and keep them until killed."""
    async with (
        keel.connect(url) as store,
        Session(store, ttl_s=5) as session,
        AsyncExitStack() as stack,
    ):
        center = ConfigCenter(store)
        for i in range(count):
            holder: list[LiveConfig[dict[str, Any]]] = []
            live = await stack.enter_async_context(
                center.bind(
                    name,
                    dict[str, Any],
                    client_id=f"{prefix}-c{i}",
                    session=session,
                    health=lambda holder=holder: healthy_on(holder),  # type: ignore[misc]
                    health_interval_s=0.1,
                    metrics=ConfigMetrics(),
                )
            )
            holder.append(live)
        print("READY", flush=True)
        await asyncio.Event().wait()


async def controller(url: str, node: str) -> None:
    """Run a controller until killed; say when it leads."""
    async with keel.connect(url) as store, Session(store, ttl_s=2) as session:
        ctl = CanaryController(session, node=node, tick_s=0.1)
        runner = asyncio.ensure_future(ctl.run())
        await ctl.leading.wait()
        print("LEADING", node, flush=True)
        await runner


def main() -> None:
    """Dispatch on the first argument."""
    kind, url, *rest = sys.argv[1:]
    if kind == "fleet":
        asyncio.run(fleet(url, rest[0], rest[1], int(rest[2])))
    else:
        asyncio.run(controller(url, rest[0]))


if __name__ == "__main__":
    main()
