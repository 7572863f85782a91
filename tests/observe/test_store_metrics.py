"""Store, watch, session and lock series appear after use, on every backend, with bounded labels."""

from __future__ import annotations

import asyncio
import contextlib

from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import REGISTRY

from keel.coord import Lock, Session
from keel.errors import LeaseNotFoundError
from keel.observe import store_metrics, use_tracer_provider
from keel.observe.spans import GATE
from keel.store import Compare, Put, Store


def value(name: str, **labels: str) -> float:
    """The current value of a sample (0 when absent)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def series_count(prefix: str) -> int:
    """How many samples of families starting with ``prefix`` the registry exposes."""
    return sum(
        len(family.samples) for family in REGISTRY.collect() if family.name.startswith(prefix)
    )


async def test_store_calls_are_counted_timed_and_errors_kept_by_kind(store: Store) -> None:
    """Every operation is counted; latency is observed; a failing call counts its error kind."""
    b = store.backend
    before = {
        op: value("keel_store_operations_total", store=b, operation=op)
        for op in ("put", "get", "range", "txn", "keepalive")
    }
    timed = value("keel_store_operation_duration_seconds_count", store=b, operation="get")
    errors = value(
        "keel_store_errors_total", store=b, operation="keepalive", kind="LeaseNotFoundError"
    )
    for i in range(20):
        await store.put(f"m/{i}", b"v")
        await store.get(f"m/{i}")
    for i in range(64):  # the memory backend times one call in 64
        await store.get(f"m/{i % 20}")
    await store.range("m/")
    await store.txn([Compare.version("m/1", ">", 0)], [Put("m/1", b"w")])
    lease = await store.grant(5)
    await store.revoke(lease.id)
    with contextlib.suppress(LeaseNotFoundError):
        await store.keepalive(lease.id)
    after = {op: value("keel_store_operations_total", store=b, operation=op) for op in before}
    assert after["put"] - before["put"] == 20
    assert after["get"] - before["get"] == 20 + 64
    assert after["range"] - before["range"] == 1
    assert after["txn"] - before["txn"] == 1
    assert after["keepalive"] - before["keepalive"] == 1
    assert value("keel_store_operation_duration_seconds_count", store=b, operation="get") > timed
    assert (
        value("keel_store_errors_total", store=b, operation="keepalive", kind="LeaseNotFoundError")
        == errors + 1
    )


async def test_watch_series_follow_open_events_and_close(store: Store) -> None:
    """Open watches, events taken and the backlog of events not yet taken."""
    b = store.backend
    open_before = value("keel_store_watches", store=b)
    events_before = value("keel_store_watch_events_total", store=b)
    async with store.watch("w/", prefix=True) as events:
        assert value("keel_store_watches", store=b) == open_before + 1
        for i in range(3):
            await store.put(f"w/{i}", b"v")
        async with asyncio.timeout(10):
            for _ in range(3):
                await anext(events)
        assert value("keel_store_watch_events_total", store=b) == events_before + 3
        assert value("keel_store_watch_delay_seconds_count", store=b) >= 3
        assert value("keel_store_watch_backlog", store=b) >= 0
    assert value("keel_store_watches", store=b) == open_before


async def test_watch_lag_counts_revisions_committed_after_a_batch(store: Store) -> None:
    """A watch replaying history is behind the newest revision; one keeping up is not."""
    b = store.backend
    batches = value("keel_store_watch_lag_revisions_count", store=b)
    behind = value("keel_store_watch_lag_revisions_sum", store=b)
    first = await store.put("lag/a", b"1")
    await store.put("lag/b", b"2")
    await store.put("elsewhere", b"3")  # newer than anything under lag/
    async with store.watch("lag/", prefix=True, start_revision=first) as events:
        async with asyncio.timeout(10):
            assert (await anext(events)).kv.key == "lag/a"
            assert (await anext(events)).kv.key == "lag/b"
        assert value("keel_store_watch_lag_revisions_count", store=b) > batches
        assert value("keel_store_watch_lag_revisions_sum", store=b) >= behind + 1
        await store.put("lag/c", b"4")
        async with asyncio.timeout(10):
            assert (await anext(events)).kv.key == "lag/c"
        assert value("keel_store_watch_lag_revisions_bucket", store=b, le="0.0") >= 1


async def test_session_and_lock_series(store: Store) -> None:
    """A session counts as open, renews (keepalive latency), and a lock hold shows its age."""
    b = store.backend
    renewals = value("keel_session_keepalive_seconds_count", store=b)
    opened = value("keel_sessions", store=b)
    async with Session(store, ttl_s=1) as session:
        assert value("keel_sessions", store=b) == opened + 1
        held = await Lock(session, "metrics-lock").acquire()
        await asyncio.sleep(0.5)  # a keepalive every ttl/3
        assert value("keel_coord_longest_hold_seconds", kind="lock") > 0
        await held.release()
        assert value("keel_session_keepalive_seconds_count", store=b) > renewals
    assert value("keel_sessions", store=b) == opened


async def test_ten_thousand_keys_and_many_locks_stay_a_few_series(store: Store) -> None:
    """Distinct keys and lock names never become labels: the series count does not grow."""
    for i in range(50):  # every operation and series used below exists once
        await store.put(f"card/{i}", b"v")
        await store.get(f"card/{i}")
    async with Session(store) as session:
        held = await Lock(session, "card-0").acquire()
        await held.release()
        await store.keepalive(session.lease_id)  # the session renews during the loop
        before_store = series_count("keel_store_")
        before_coord = series_count("keel_coord_")
        keys = 10_000 if store.backend == "memory" else 1_000
        for start in range(0, keys, 500):
            await asyncio.gather(*(store.put(f"card/{i}", b"v") for i in range(start, start + 500)))
            await asyncio.gather(*(store.get(f"card/{i}") for i in range(start, start + 500)))
        for i in range(1, 10_000 if store.backend == "memory" else 200):
            held = await Lock(session, f"card-{i}").acquire()
            await held.release()
        assert series_count("keel_store_") == before_store
        assert series_count("keel_coord_") == before_coord


async def test_every_call_is_timed_while_tracing_is_on(store: Store) -> None:
    """A provider turns sampling off (each call may need its span); removing it turns it back."""
    b = store.backend
    series = store_metrics().series(b)
    assert series is not None
    timed = value("keel_store_operation_duration_seconds_count", store=b, operation="get")
    use_tracer_provider(TracerProvider())
    try:
        assert series.ops["get"].mask == 0
        for _ in range(3):
            await store.get("nothing")
        after = value("keel_store_operation_duration_seconds_count", store=b, operation="get")
        assert after == timed + 3
    finally:
        use_tracer_provider(None)
    get = series.ops["get"]
    assert get.mask == (0 if GATE.on else get.sample)
