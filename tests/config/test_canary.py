"""The canary controller on every backend, with a fake clock: steps, rollback, manual wins,
deadline, failover resume, missing metrics. Clients are real bindings reporting health."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import httpx

from keel.config import (
    Analysis,
    CanaryController,
    ClientReport,
    ConfigCenter,
    GrayRule,
    PromQuery,
    Step,
)
from keel.coord import Election, Leadership, Session
from keel.observe import ConfigMetrics
from keel.store import Store
from keel.testing import FakeClock, free_port

NAME = "orders.yaml"
PLAN = Analysis(
    steps=(Step(percent=10, duration_s=60), Step(percent=50, duration_s=60), Step(percent=100)),
    interval_s=10,
)


async def reports(store: Store) -> dict[str, ClientReport]:
    """Client id → report."""
    kvs, _ = await store.range(f"config-clients/{NAME}/")
    return {kv.key.rsplit("/", 1)[1]: ClientReport.decode(kv.value) for kv in kvs}


async def settle(store: Store, ok: Callable[[dict[str, ClientReport]], bool]) -> None:
    """Wait (bounded) until the clients' reports satisfy ``ok``."""
    async with asyncio.timeout(15):
        while True:
            if ok(await reports(store)):
                return
            await asyncio.sleep(0.02)


@asynccontextmanager
async def fleet(
    store: Store, count: int, healthy: dict[str, bool]
) -> AsyncIterator[tuple[ConfigCenter, Session]]:
    """``count`` bindings c0..cN reporting the verdict in ``healthy`` (default True)."""
    center = ConfigCenter(store)
    async with AsyncExitStack() as stack:
        session = await stack.enter_async_context(Session(store, ttl_s=5))
        for i in range(count):
            cid = f"c{i}"
            await stack.enter_async_context(
                center.bind(
                    NAME,
                    client_id=cid,
                    session=session,
                    health=lambda cid=cid: healthy.get(cid, True),  # type: ignore[misc]
                    health_interval_s=0.05,
                    metrics=ConfigMetrics(),
                )
            )
        yield center, session


@asynccontextmanager
async def leading(
    store: Store, clock: FakeClock, node: str
) -> AsyncIterator[tuple[CanaryController, Leadership]]:
    """A controller and its leadership, driven tick by tick by the test."""
    async with Session(store, ttl_s=5) as session:
        controller = CanaryController(session, node=node, clock=clock)
        async with Election(session, "config/canary-controller").campaign(node) as leadership:
            yield controller, leadership


async def tick(controller: CanaryController, leadership: Leadership) -> None:
    """One controller pass."""
    async with httpx.AsyncClient() as http:
        await controller.tick(leadership, http)


def on_gray(rs: dict[str, ClientReport], md5: str) -> set[str]:
    """Clients reporting the gray content."""
    return {c for c, r in rs.items() if r.gray and r.md5 == md5}


async def test_healthy_canary_is_promoted_through_the_steps(store: Store) -> None:
    """Healthy gray clients: 10% → 50% → promoted; every decision logged with evidence."""
    clock = FakeClock(wall_start=time.time())
    async with fleet(store, 12, {}) as (center, _), leading(store, clock, "ctl-a") as (ctl, lead):
        center.clock = clock
        await center.publish(NAME, "timeout_s: 1\n")
        await settle(store, lambda rs: len(rs) == 12 and all(r.version == 1 for r in rs.values()))
        gray = await center.publish_gray(
            NAME, "timeout_s: 2\n", GrayRule(ids=("c0",)), analysis=PLAN
        )
        assert gray.rule.percent == 10
        await settle(store, lambda rs: "c0" in on_gray(rs, gray.md5))
        await tick(ctl, lead)
        canary = await center.canary(NAME)
        assert canary is not None and canary.evaluations[-1].kind == "pass" and canary.step == 0
        clock.advance(60)
        await tick(ctl, lead)
        canary = await center.canary(NAME)
        assert canary is not None and canary.step == 1 and canary.percent == 50
        assert (await center.gray(NAME)).rule.percent == 50  # type: ignore[union-attr]
        clock.advance(60)
        await tick(ctl, lead)
        doc = await center.get(NAME)
        assert doc is not None and doc.version == 2 and "canary promoted" in doc.comment
        await settle(store, lambda rs: all(r.version == 2 and not r.gray for r in rs.values()))
        kinds = [e.kind for e in await center.canary_log(NAME)]
        assert kinds == ["start", "advance", "promote"]
        assert (await center.canary(NAME)).status == "promoted"  # type: ignore[union-attr]
        last = (await center.canary_log(NAME))[-1]
        assert last.evidence["gray"]["clients"] >= 1 and last.by == "ctl-a"


async def test_unhealthy_gray_rolls_back_at_the_next_evaluation(store: Store) -> None:
    """One unhealthy gray client: the next evaluation aborts; every client is back on v1."""
    clock = FakeClock(wall_start=time.time())
    async with (
        fleet(store, 8, {"c0": False}) as (center, _),
        leading(store, clock, "ctl-a") as (ctl, lead),
    ):
        center.clock = clock
        await center.publish(NAME, "timeout_s: 1\n")
        gray = await center.publish_gray(
            NAME, "timeout_s: 2\n", GrayRule(ids=("c0",)), analysis=PLAN
        )
        await settle(store, lambda rs: "c0" in on_gray(rs, gray.md5) and rs["c0"].healthy is False)
        await tick(ctl, lead)
        assert await center.gray(NAME) is None
        canary = await center.canary(NAME)
        assert canary is not None and canary.status == "aborted"
        assert "c0" in canary.decisions[-1].reasons[0]
        await settle(
            store,
            lambda rs: len(rs) == 8 and all(not r.gray and r.version == 1 for r in rs.values()),
        )
        assert ctl.statistics().decisions == 1


async def test_manual_abort_wins_over_a_stale_controller_write(store: Store) -> None:
    """A manual abort between the controller's read and write makes the write fail."""
    clock = FakeClock(wall_start=time.time())
    async with fleet(store, 4, {}) as (center, _), leading(store, clock, "ctl-a") as (ctl, lead):
        center.clock = clock
        await center.publish(NAME, "timeout_s: 1\n")
        gray = await center.publish_gray(
            NAME, "timeout_s: 2\n", GrayRule(ids=("c0",)), analysis=PLAN
        )
        await settle(store, lambda rs: "c0" in on_gray(rs, gray.md5))
        kv = await store.get(f"config-canary/{NAME}")
        assert kv is not None
        stale = await center.canary(NAME)
        assert await center.abort_gray(NAME)
        clock.advance(60)
        async with httpx.AsyncClient() as http:
            await ctl._drive(kv, stale, lead, http)  # type: ignore[arg-type]
        assert ctl.statistics().lost_races == 1 and await center.gray(NAME) is None
        canary = await center.canary(NAME)
        assert canary is not None and canary.status == "aborted"
        assert canary.decisions[-1].by == "manual"
        await tick(ctl, lead)  # nothing left to drive
        assert ctl.statistics().decisions == 0


async def test_deadline_forces_a_rollback_without_data(store: Store) -> None:
    """Clients without a health check give no data: the canary waits, then the deadline aborts."""
    clock = FakeClock(wall_start=time.time())
    center = ConfigCenter(store, clock=clock)
    plan = Analysis(steps=(Step(percent=50, duration_s=10),), interval_s=5, deadline_s=30)
    async with leading(store, clock, "ctl-a") as (ctl, lead):
        await center.publish(NAME, "timeout_s: 1\n")
        await center.publish_gray(NAME, "timeout_s: 2\n", GrayRule(percent=50), analysis=plan)
        for _ in range(5):
            await tick(ctl, lead)
            assert await center.gray(NAME) is not None
            clock.advance(5)
        clock.advance(5)
        await tick(ctl, lead)
        canary = await center.canary(NAME)
        assert canary is not None and canary.status == "aborted"
        assert "deadline" in canary.decisions[-1].reasons[0]
        assert await center.gray(NAME) is None


async def test_another_controller_resumes_at_the_recorded_step(store: Store) -> None:
    """Controller A advances to step 2 and resigns; controller B goes on from step 2."""
    clock = FakeClock(wall_start=time.time())
    async with fleet(store, 6, {}) as (center, _):
        center.clock = clock
        await center.publish(NAME, "timeout_s: 1\n")
        gray = await center.publish_gray(
            NAME, "timeout_s: 2\n", GrayRule(ids=("c0",)), analysis=PLAN
        )
        await settle(store, lambda rs: "c0" in on_gray(rs, gray.md5))
        async with leading(store, clock, "ctl-a") as (a, lead_a):
            clock.advance(60)
            await tick(a, lead_a)
        assert (await center.canary(NAME)).step == 1  # type: ignore[union-attr]
        async with leading(store, clock, "ctl-b") as (b, lead_b):
            await tick(b, lead_b)
            assert (await center.canary(NAME)).step == 1  # type: ignore[union-attr]
            clock.advance(60)
            await tick(b, lead_b)
        doc = await center.get(NAME)
        assert doc is not None and doc.version == 2
        decisions = (await center.canary(NAME)).decisions  # type: ignore[union-attr]
        assert [(d.kind, d.by) for d in decisions] == [
            ("start", "manual"),
            ("advance", "ctl-a"),
            ("promote", "ctl-b"),
        ]


async def test_unreachable_prometheus_means_no_decision(store: Store) -> None:
    """A PromQL check with no answer is inconclusive: the steps do not advance."""
    clock = FakeClock(wall_start=time.time())
    query = PromQuery(url=f"http://127.0.0.1:{free_port()}", query="up", max_value=1, timeout_s=1)
    plan = Analysis(steps=(Step(percent=10, duration_s=10), Step(percent=100)), prometheus=query)
    async with fleet(store, 3, {}) as (center, _), leading(store, clock, "ctl-a") as (ctl, lead):
        center.clock = clock
        await center.publish(NAME, "timeout_s: 1\n")
        gray = await center.publish_gray(
            NAME, "timeout_s: 2\n", GrayRule(ids=("c0",)), analysis=plan
        )
        await settle(store, lambda rs: "c0" in on_gray(rs, gray.md5))
        clock.advance(20)
        await tick(ctl, lead)
        canary = await center.canary(NAME)
        assert canary is not None and canary.step == 0 and canary.status == "running"
        assert canary.evaluations[-1].kind == "inconclusive"
        assert "Prometheus" in canary.evaluations[-1].reasons[0]


async def test_malformed_records_are_skipped_and_counted(store: Store) -> None:
    """A malformed client report or canary record is skipped; the rest goes on."""
    clock = FakeClock(wall_start=time.time())
    center = ConfigCenter(store, clock=clock)
    async with leading(store, clock, "ctl-a") as (ctl, lead):
        await center.publish(NAME, "timeout_s: 1\n")
        await center.publish_gray(NAME, "timeout_s: 2\n", GrayRule(percent=10), analysis=PLAN)
        await store.put(f"config-clients/{NAME}/evil", b'{"version": "one"}')
        await store.put("config-canary/other.yaml", b"[1, 2")
        await tick(ctl, lead)
        assert ctl.statistics().rejected == 2 and ctl.statistics().evaluations == 1


async def test_a_malformed_gray_ends_the_canary_and_is_removed(store: Store) -> None:
    """A gray record made unreadable mid-canary: the canary ends and the record is deleted,
    so clients cannot stay on a gray nobody can read."""
    clock = FakeClock(wall_start=time.time())
    center = ConfigCenter(store, clock=clock)
    async with leading(store, clock, "ctl-a") as (ctl, lead):
        await center.publish(NAME, "timeout_s: 1\n")
        await center.publish_gray(NAME, "timeout_s: 2\n", GrayRule(percent=10), analysis=PLAN)
        await store.put(f"config-gray/{NAME}", b'{"rule": 5}')
        await tick(ctl, lead)
        assert await store.get(f"config-gray/{NAME}") is None
        canary = await center.canary(NAME)
        assert canary is not None and canary.status == "aborted"
        assert "malformed" in canary.decisions[-1].reasons[0]
