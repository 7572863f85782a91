"""Registry, coordination and scheduler series in the process-wide Prometheus registry."""

from __future__ import annotations

import asyncio

from prometheus_client import REGISTRY

from keel.backends.memory import MemoryStore
from keel.coord import Election, Lock, Session
from keel.registry import Discovery, Instance, Registry
from keel.schedule import JobContext, Scheduler
from tests._util import eventually


def value(name: str, **labels: str) -> float:
    """The current value of a sample (0 when absent)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_lock_and_leadership_series() -> None:
    """Held gauges follow acquire and release; a lost ownership is counted as lost."""
    store = await MemoryStore().start()
    async with Session(store) as session:
        before = value("keel_coord_held", kind="lock")
        acquired = value("keel_coord_acquire_seconds_count", kind="lock")
        held = await Lock(session, "m").acquire()
        assert value("keel_coord_held", kind="lock") == before + 1
        assert value("keel_coord_acquire_seconds_count", kind="lock") == acquired + 1
        await held.release()
        assert value("keel_coord_held", kind="lock") == before
        lost = value("keel_coord_lost_total", kind="leadership")
        other = await Session(store).__aenter__()
        lead = await Election(other, "m").campaign(b"x")
        await store.revoke(other.lease_id)
        async with asyncio.timeout(5):
            await lead.lost
        await lead.resign()
        assert value("keel_coord_lost_total", kind="leadership") == lost + 1
        await other.__aexit__(None, None, None)
    await store.close()


async def test_registry_and_discovery_series() -> None:
    """Registration events are counted; the discovery gauge follows the cache."""
    store = await MemoryStore().start()
    async with Registry(store) as registry, Discovery(store) as discovery:
        before = value("keel_registry_events_total", service="metrics-svc", event="registered")
        await registry.register(Instance(service="metrics-svc", address="10.0.0.1", port=80))
        assert value("keel_registry_events_total", service="metrics-svc", event="registered") == (
            before + 1
        )
        async with asyncio.timeout(5):
            async for snapshot in discovery.subscribe("metrics-svc"):
                if snapshot:
                    break
        assert value("keel_discovery_instances", service="metrics-svc") == 1
    await store.close()


async def test_schedule_run_series() -> None:
    """A finished run is counted by outcome with its lateness and duration observed."""
    store = await MemoryStore().start()
    scheduler = Scheduler(store, ttl_s=5)
    done = asyncio.Event()

    @scheduler.job("metrics.job", interval_s=0.2)
    async def job(ctx: JobContext) -> None:
        done.set()

    before = value("keel_schedule_runs_total", job="metrics.job", outcome="succeeded")
    task = asyncio.ensure_future(scheduler.run(handle_sigterm=False))
    try:
        async with asyncio.timeout(10):
            await done.wait()
        await eventually(
            lambda: (
                value("keel_schedule_runs_total", job="metrics.job", outcome="succeeded") > before
            ),
            10,
        )
        assert value("keel_schedule_duration_seconds_count", group="default") >= 1
        assert value("keel_schedule_lateness_seconds_count", group="default") >= 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await store.close()
