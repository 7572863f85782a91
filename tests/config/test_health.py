"""Client health on every backend: verdict and per-version counters beside the version."""

from __future__ import annotations

import asyncio

import pytest

from keel.config import ClientHealth, ClientReport, ConfigCenter
from keel.coord import Session
from keel.errors import ValidationError
from keel.observe import ConfigMetrics
from keel.store import Store


async def report_of(store: Store, name: str, client: str) -> ClientReport | None:
    """The client's decoded report, or None."""
    kv = await store.get(f"config-clients/{name}/{client}")
    return ClientReport.decode(kv.value) if kv else None


async def wait_report(store: Store, name: str, client: str, ok: object) -> ClientReport:
    """Poll (bounded) until the client's report satisfies ``ok``."""
    async with asyncio.timeout(10):
        while True:
            report = await report_of(store, name, client)
            if report is not None and ok(report):  # type: ignore[operator]
                return report
            await asyncio.sleep(0.02)


async def test_health_and_counters_are_reported_per_version(store: Store) -> None:
    """The verdict and counters since the version was taken appear under config-clients/."""
    center = ConfigCenter(store)
    await center.publish("orders.yaml", "timeout_s: 1\n")
    counters = {"errors": 5, "requests": 100, "healthy": True}

    def check() -> ClientHealth:
        return ClientHealth(
            healthy=bool(counters["healthy"]),
            errors=int(counters["errors"]),
            requests=int(counters["requests"]),
            detail="" if counters["healthy"] else "db pool exhausted",
        )

    async with (
        Session(store, ttl_s=5) as session,
        center.bind(
            "orders.yaml",
            client_id="c1",
            session=session,
            health=check,
            health_interval_s=0.05,
            metrics=ConfigMetrics(),
        ),
    ):
        first = await wait_report(store, "orders.yaml", "c1", lambda r: r.healthy is True)
        assert (first.version, first.errors, first.requests) == (1, 0, 0)
        counters.update(errors=7, requests=150)
        moved = await wait_report(store, "orders.yaml", "c1", lambda r: r.requests == 50)
        assert moved.errors == 2 and moved.checked_at > 0
        await center.publish("orders.yaml", "timeout_s: 2\n")
        fresh = await wait_report(store, "orders.yaml", "c1", lambda r: r.version == 2)
        assert (fresh.errors, fresh.requests) == (0, 0)
        counters.update(healthy=False)
        sick = await wait_report(store, "orders.yaml", "c1", lambda r: r.healthy is False)
        assert sick.detail == "db pool exhausted"


async def test_failing_or_async_checks(store: Store) -> None:
    """An async check works; a check that raises is reported unhealthy with its reason."""
    center = ConfigCenter(store)
    await center.publish("orders.yaml", "timeout_s: 1\n")
    calls = 0

    async def flaky() -> bool:
        nonlocal calls
        calls += 1
        if calls > 2:
            raise RuntimeError("boom")
        return True

    async with (
        Session(store, ttl_s=5) as session,
        center.bind(
            "orders.yaml",
            client_id="c2",
            session=session,
            health=flaky,
            health_interval_s=0.05,
            metrics=ConfigMetrics(),
        ),
    ):
        sick = await wait_report(store, "orders.yaml", "c2", lambda r: r.healthy is False)
        assert "boom" in sick.detail


async def test_health_needs_a_session(store: Store) -> None:
    """health= without session= is refused with the fix."""
    center = ConfigCenter(store)
    with pytest.raises(ValidationError, match="session="):
        center.bind("orders.yaml", health=lambda: True)


def test_report_records_are_strict() -> None:
    """Reports round-trip; wrong types in health fields are refused by the decoder."""
    report = ClientReport(version=2, gray=True, md5="x", healthy=False, errors=3, requests=9)
    assert ClientReport.decode(report.encode()) == report
    assert ClientReport.decode(b'{"version": 1, "gray": false}').healthy is None
    for bad in (b'{"version": 1, "healthy": "yes"}', b'{"version": 1, "errors": -1}'):
        with pytest.raises(ValueError):
            ClientReport.decode(bad)
