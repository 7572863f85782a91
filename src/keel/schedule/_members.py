"""Worker membership: registration in the registry, and who owns a due run."""

from __future__ import annotations

import hashlib
import os
import re
import socket
from collections.abc import AsyncIterator, Iterable

from keel.clock import Clock
from keel.coord import Session
from keel.registry import Discovery, Instance, Registry

__all__ = ["handlers_of", "lease_of", "owner_of", "registered_members", "worker_service"]

_LEASE_RE = re.compile(r"[0-9]{1,19}")  # ASCII digits only (str.isdigit takes '²')


def worker_service(group: str) -> str:
    """The registry service workers of ``group`` register under."""
    return f"keel-workers.{group}"


def lease_of(worker: Instance) -> int | None:
    """The session lease a worker registered (None if its metadata has no valid one)."""
    text = worker.metadata.get("lease", "")
    if not _LEASE_RE.fullmatch(text):
        return None
    lease = int(text)
    return lease if 0 < lease < 2**63 else None


def handlers_of(worker: Instance) -> list[str]:
    """The handler names a worker registered."""
    return [name for name in worker.metadata.get("handlers", "").split(",") if name]


def _rank(key: str, worker: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{key}|{worker}".encode(), digest_size=8).digest())


def owner_of(key: str, hint: str, live: tuple[str, ...], me: str) -> str:
    """The worker that claims a due run first: the hinted one if alive, else by rendezvous hash."""
    if hint and hint in live:
        return hint
    if not live:
        return me
    return max(live, key=lambda w: _rank(key, w))


async def registered_members(
    session: Session, group: str, worker_id: str, handlers: Iterable[str], clock: Clock
) -> AsyncIterator[tuple[str, ...]]:
    """Register this worker on the session; yield the sorted ids of live workers on each change."""
    instance = Instance(
        service=worker_service(group),
        address=socket.gethostname() or "localhost",
        port=1,  # workers take no connections; the registry needs a port
        id=worker_id,
        scheme="tcp",
        metadata={
            "handlers": ",".join(sorted(handlers)),
            "pid": str(os.getpid()),
            # the planner attaches the runs it assigns this worker to this lease
            "lease": str(session.lease_id),
        },
    )
    async with (
        Registry(session.store, session=session) as registry,
        registry.register(instance),
        Discovery(session.store, clock=clock) as discovery,
    ):
        async for members in discovery.subscribe(worker_service(group)):
            yield tuple(sorted(m.id for m in members))
