"""Saga transitions published through the events outbox, on every backend."""

from __future__ import annotations

import asyncio
from typing import Any

from keel.events import Bus
from keel.saga import Coordinator, Outcome, Saga, Step
from keel.store import Store
from tests.saga._helpers import Log


async def _transitions(bus: Bus, saga_ids: set[str], ended: int) -> dict[str, list[Any]]:
    """Every transition of ``saga_ids`` from the start of ``sagas``, until ``ended`` have ended."""
    seen: dict[str, list[Any]] = {}
    async with bus.subscribe("sagas", group="audit", start="earliest") as sub:
        async for event in sub:
            await event.ack()
            if event.key in saga_ids:
                seen.setdefault(event.key, []).append(event.payload)
            done = sum(
                1
                for t in seen.values()
                if t[-1]["status"] != "running" and t[-1]["status"] != "compensating"
            )
            if done >= ended:
                return seen
    return seen


async def test_every_transition_is_an_event_in_order(store: Store) -> None:
    """A committed and a compensated saga: each transition one event, keyed by saga, in order."""
    log = Log()
    good = Saga("good", [Step("a", action=log.ok()), Step("b", action=log.ok())])
    bad = Saga(
        "bad",
        [
            Step("a", action=log.ok(), compensate=log.ok()),
            Step("b", action=log.fail(abort=True), compensate=log.ok()),
        ],
    )
    async with (
        asyncio.timeout(30),
        Bus(store) as bus,
        Coordinator(store, [good, bad], ttl_s=5, events=bus) as coord,
    ):
        ok, undone = await coord.start("good", {}), await coord.start("bad", {})
        assert await coord.wait(ok) is Outcome.COMMITTED
        assert await coord.wait(undone) is Outcome.COMPENSATED
        seen = await _transitions(bus, {ok, undone}, ended=2)
    committed = seen[ok]
    assert committed[0]["status"] == "running" and committed[0]["steps"]["a"] == "started"
    assert committed[-1]["status"] == "committed"
    assert all(s == "done" for s in committed[-1]["steps"].values())
    assert [t["at"] for t in committed] == sorted(t["at"] for t in committed)
    compensated = [t["status"] for t in seen[undone]]
    assert compensated == sorted(compensated, key=["running", "compensating", "compensated"].index)
    assert compensated[0] == "running" and compensated[-1] == "compensated"
    assert "compensating" in compensated
    assert "card declined" in seen[undone][-1]["error"]
    assert not (await store.range("events-outbox/"))[0]  # the relay moved every record


async def test_no_events_without_a_bus(store: Store) -> None:
    """Without ``events=``, nothing is written to the outbox."""
    saga = Saga("plain", [Step("a", action=Log().ok())])
    async with asyncio.timeout(20), Coordinator(store, [saga], ttl_s=5) as coord:
        assert await coord.wait(await coord.start("plain", {})) is Outcome.COMMITTED
    assert not (await store.range("events-outbox/"))[0]
