"""What the coordination page shows: locks, semaphores, rwlocks and elections, with holders.

Built on :func:`keel.coord.read_lines` (the view ``keel locks`` prints): each
line is every contender's key, oldest first. Who *holds* follows each recipe:
the first key of a lock or an election; the leading readers (or the one
writer) of an rwlock; at least the first key of a semaphore (its limit is
the holders' setting and is not stored, so the rest are shown in order).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from keel.coord import LineState, read_lines
from keel.store import KeyValue, Store

__all__ = ["Contender", "LineView", "coord_overview", "holders_of", "line_view"]

MAX_TTL_LOOKUPS = 200
"""Leases whose remaining TTL is looked up per page (each is one store call)."""
_VALUE_MAX = 120


@dataclass(frozen=True, slots=True)
class Contender:
    """One key in a line.

    Attributes:
        key: the contender's key.
        lease: its session lease, in hex.
        token: its create_revision (the fencing token when it holds).
        value: what it stored (an election's proclaimed value, an rwlock's mode).
        holds: whether it holds (owner, leader, reader or writer in).
        ttl: seconds left on its lease ('' when unknown).
    """

    key: str
    lease: str
    token: int
    value: str
    holds: bool
    ttl: str


@dataclass(frozen=True, slots=True)
class LineView:
    """One lock, semaphore, rwlock or election: its holders and its waiters."""

    kind: str
    name: str
    holders: tuple[Contender, ...]
    waiters: tuple[Contender, ...]
    token: int


def holders_of(line: LineState) -> int:
    """How many of the line's first keys hold it (pure; see the module docstring)."""
    if not line.line:
        return 0
    if line.kind == "rwlock":
        if line.line[0].value == b"write":
            return 1
        count = 0
        for kv in line.line:
            if kv.value == b"write":
                break
            count += 1
        return count
    return 1


def _text(value: bytes) -> str:
    text = value.decode("utf-8", "backslashreplace")
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= _VALUE_MAX else text[: _VALUE_MAX - 1] + "…"


def line_view(line: LineState, ttls: dict[int, int]) -> LineView:
    """A line as the page shows it, with lease TTLs from ``ttls`` (pure)."""
    n = holders_of(line)

    def contender(kv: KeyValue, holds: bool) -> Contender:
        ttl = ttls.get(kv.lease)
        return Contender(
            key=kv.key,
            lease=f"{kv.lease:x}",
            token=kv.create_revision,
            value=_text(kv.value),
            holds=holds,
            ttl="" if ttl is None else f"{ttl}s",
        )

    holders = tuple(contender(kv, True) for kv in line.line[:n])
    waiters = tuple(contender(kv, False) for kv in line.line[n:])
    return LineView(line.kind, line.name, holders, waiters, line.fencing_token)


async def _ttls(store: Store, lines: list[LineState]) -> dict[int, int]:
    leases = sorted({kv.lease for line in lines for kv in line.line if kv.lease})
    out: dict[int, int] = {}
    for lease in leases[:MAX_TTL_LOOKUPS]:
        info = await store.time_to_live(lease)
        if info is not None:
            out[lease] = info.ttl
    return out


async def coord_overview(store: Store) -> dict[str, Any]:
    """Context of the coordination page: lines grouped by kind, with counts."""
    lines = await read_lines(store)
    ttls = await _ttls(store, lines)
    views = [line_view(line, ttls) for line in lines]
    groups = {
        kind: [v for v in views if v.kind == kind]
        for kind in ("lock", "semaphore", "rwlock", "election")
    }
    return {
        "groups": groups,
        "held": sum(1 for v in views if v.holders),
        "waiting": sum(len(v.waiters) for v in views if v.kind != "election"),
    }
