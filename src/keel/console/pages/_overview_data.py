"""Overview data: the store's status, a count and a health line per area, recent changes.

Each area is read through its own package's reader (registry records through
the services page's loader, configs through :class:`keel.config.ConfigCenter`,
jobs through :func:`keel.schedule.read_jobs`, coordination through
:func:`keel.coord.read_lines`), so malformed records are skipped and counted
the same way everywhere. An area whose read fails shows the error instead of
failing the page.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass

from keel.config import ConfigCenter
from keel.console._audit import Audit, AuditEntry
from keel.console.pages._services_data import load_services
from keel.coord import read_lines
from keel.errors import KeelError
from keel.schedule import read_jobs
from keel.store import Store, StoreStatus

__all__ = ["Area", "OverviewData", "load_overview"]


@dataclass(frozen=True, slots=True)
class Area:
    """One area's line: how many, and what needs attention (empty: all well)."""

    name: str
    path: str
    count: int
    unit: str
    problems: tuple[str, ...] = ()
    error: str = ""

    @property
    def healthy(self) -> bool:
        """Nothing to look at."""
        return not self.problems and not self.error


@dataclass(frozen=True, slots=True)
class OverviewData:
    """Everything the overview shows."""

    status: StoreStatus
    areas: tuple[Area, ...]
    recent: tuple[AuditEntry, ...]


async def _services(store: Store) -> Area:
    view = await load_services(store)
    rows = [row for group in view.services for row in group.rows]
    states = [row.state for row in rows]
    problems = tuple(
        f"{states.count(state)} {state}"
        for state in ("failing", "draining", "disabled")
        if state in states
    )
    skipped = (f"{view.skipped} malformed",) if view.skipped else ()
    return Area(
        "Services",
        "/services",
        len(view.services),
        f"services, {len(rows)} instances",
        problems + skipped,
    )


async def _configs(store: Store) -> Area:
    configs = await ConfigCenter(store).list()
    gray = sum(1 for c in configs if c.gray)
    bad = sum(1 for c in configs if c.rejected)
    problems = ((f"{gray} in gray release",) if gray else ()) + (
        (f"{bad} unreadable",) if bad else ()
    )
    return Area("Configs", "/configs", len(configs), "configs", problems)


async def _jobs(store: Store) -> Area:
    views = await read_jobs(store, recent=1)
    paused = sum(1 for v in views if v.definition.paused)
    failed = sum(1 for v in views if v.recent and v.recent[0].status.value == "FAILED")
    unhandled = sum(1 for v in views if v.unhandled and not v.definition.paused)
    problems = tuple(
        text
        for n, text in (
            (failed, f"{failed} last run failed"),
            (paused, f"{paused} paused"),
            (unhandled, f"{unhandled} without a worker"),
        )
        if n
    )
    return Area("Jobs", "/jobs", len(views), "jobs", problems)


async def _coord(store: Store) -> Area:
    lines = await read_lines(store)
    held = sum(1 for line in lines if line.owner is not None)
    waiting = sum(line.waiters for line in lines)
    problems = (f"{waiting} waiting",) if waiting else ()
    return Area("Coordination", "/coord", len(lines), f"locks/elections ({held} held)", problems)


async def _guarded(name: str, path: str, read: Awaitable[Area]) -> Area:
    try:
        return await read
    except KeelError as exc:
        return Area(name, path, 0, "", error=str(exc))


async def load_overview(store: Store, audit: Audit, *, recent: int = 10) -> OverviewData:
    """Read the store status, every area and the newest audit entries."""
    status, *areas, entries = await asyncio.gather(
        store.status(),
        _guarded("Services", "/services", _services(store)),
        _guarded("Configs", "/configs", _configs(store)),
        _guarded("Jobs", "/jobs", _jobs(store)),
        _guarded("Coordination", "/coord", _coord(store)),
        audit.recent(recent),
    )
    return OverviewData(status, tuple(areas), tuple(entries))
