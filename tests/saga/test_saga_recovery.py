"""Takeover of a saga whose owner's session is lost, fencing of the old owner, counted rejects."""

from __future__ import annotations

import asyncio

from prometheus_client import REGISTRY

from keel.saga import Coordinator, Outcome, Saga, SagaContext, Step, get_saga
from keel.store import Store
from tests._util import eventually
from tests.saga._helpers import Log


def rejected(area: str = "saga") -> float:
    """The process-wide count of rejected records of ``area``."""
    return REGISTRY.get_sample_value("keel_records_rejected_total", {"area": area}) or 0.0


def outcomes(saga: str, outcome: str) -> float:
    """The process-wide count of sagas ended as ``outcome``."""
    labels = {"saga": saga, "outcome": outcome}
    return REGISTRY.get_sample_value("keel_saga_outcomes_total", labels) or 0.0


async def test_a_lost_owner_is_taken_over_and_fenced(store: Store) -> None:
    """Revoking the owner's lease hands the saga to the other coordinator; the old one stops."""
    first_try = asyncio.Event()
    release_first = asyncio.Event()
    calls: list[int] = []
    log = Log()

    async def two(ctx: SagaContext) -> int:
        calls.append(ctx.token)
        if len(calls) == 1:
            first_try.set()
            await release_first.wait()
        return ctx.token

    saga = Saga(
        "t", [Step("one", action=log.ok()), Step("two", action=two), Step("three", action=log.ok())]
    )
    before = outcomes("t", "committed")
    async with asyncio.timeout(30):
        a = Coordinator(store, [saga], ttl_s=5, coordinator_id="a")
        b = Coordinator(store, [saga], ttl_s=5, coordinator_id="b")
        async with a, b:
            saga_id = await a.start("t")
            await first_try.wait()
            assert a._session is not None
            await store.revoke(a._session.lease_id)  # as if a's process had died
            assert await b.wait(saga_id) is Outcome.COMMITTED
            release_first.set()
            # counted once b's task returns, which is after the record shows it
            await eventually(lambda: outcomes("t", "committed") > before, 10, 0.01)
        rec = await get_saga(store, saga_id)
    assert len(calls) == 2 and calls[1] > calls[0]  # run again, under a newer token
    assert rec.steps["two"].result == calls[1]
    assert log.calls == [("one", "action"), ("three", "action")]
    assert outcomes("t", "committed") == before + 1


async def test_malformed_records_are_skipped_and_counted(store: Store) -> None:
    """A malformed active record is skipped and counted; the coordinator keeps running sagas."""
    log = Log()
    saga = Saga("m", [Step("s", action=log.ok())])
    before = rejected()
    bad = {
        "m/types": b'{"v": 1, "saga": "m", "id": "types", "status": "running", "steps": [],'
        b' "created_at": 1, "updated_at": 1}',
        "m/nan": b'{"v": 1, "saga": "m", "id": "nan", "status": "running", "steps": {},'
        b' "created_at": NaN, "updated_at": 1}',
        "m/deep": b'{"v": 1, "input": ' + b"[" * 40 + b"]" * 40 + b"}",
        "m/bool": b'{"v": true}',
    }
    for saga_id, value in bad.items():
        await store.put(f"sagas/{saga_id}", value)
        await store.put(f"saga-run/active/{saga_id}", b"")
    async with asyncio.timeout(20), Coordinator(store, [saga], ttl_s=5) as coord:
        good = await coord.start("m")
        assert await coord.wait(good) is Outcome.COMMITTED
        late = "m/late"
        await store.put(f"sagas/{late}", b"not json")
        await store.put(f"saga-run/active/{late}", b"")
        # started without a runner: claimed through the watch, after the late record
        again = await Coordinator(store, [saga]).start("m")
        assert await coord.wait(again) is Outcome.COMMITTED
    assert rejected() == before + len(bad) + 1
    assert log.calls == [("s", "action")] * 2
