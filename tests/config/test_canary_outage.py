"""A store outage pauses canary analysis: nothing is decided while etcd is frozen, and the
canary goes on once it answers (a private etcd, frozen with SIGSTOP)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

import keel
from keel.config import Analysis, CanaryController, ConfigCenter, GrayRule, Step
from keel.coord import Session
from keel.observe import ConfigMetrics
from keel.testing import EtcdCluster
from tests._util import eventually
from tests.config._canary_util import canary_until

pytestmark = [pytest.mark.slow, pytest.mark.etcd]

NAME = "orders.yaml"


@pytest.fixture
def private_etcd() -> Iterator[EtcdCluster]:
    """An etcd of this test alone (it gets frozen)."""
    with EtcdCluster(1) as cluster:
        yield cluster


async def test_outage_pauses_then_the_canary_goes_on(private_etcd: EtcdCluster) -> None:
    """While the store is frozen (longer than the step) there is no decision; afterwards the
    healthy canary is promoted by an evaluation taken after the store came back."""
    url = f"{private_etcd.url}?timeout_s=0.5"
    # The deadline leaves room for the outage and the reconnect after it (the default,
    # twice the steps plus ten intervals, is 4 s: shorter than an outage plus a recovery).
    plan = Analysis(
        steps=(Step(percent=50, duration_s=1), Step(percent=100)), interval_s=0.2, deadline_s=20
    )
    async with keel.connect(url) as store, Session(store, ttl_s=15) as session:
        center = ConfigCenter(store)
        await center.publish(NAME, "timeout_s: 1\n")
        async with center.bind(
            NAME, client_id="c0", session=session, health=lambda: True, metrics=ConfigMetrics()
        ):
            controller = CanaryController(session, node="ctl", tick_s=0.1)
            runner = asyncio.ensure_future(controller.run())
            try:
                await asyncio.wait_for(controller.leading.wait(), 10)
                await center.publish_gray(
                    NAME, "timeout_s: 2\n", GrayRule(ids=("c0",)), analysis=plan
                )
                private_etcd.pause(0)
                await asyncio.sleep(2.5)  # the outage: longer than the step's duration
                resumed = time.time()
                private_etcd.resume(0)
                canary = await canary_until(center, NAME, lambda c: c.status != "running")
            finally:
                private_etcd.resume(0)
                runner.cancel()
                await asyncio.gather(runner, return_exceptions=True)
    assert controller.statistics().paused > 0
    assert canary.status == "promoted", canary.decisions
    assert canary.decisions[-1].at >= resumed


async def test_a_report_the_store_missed_is_written_again_without_a_health_check(
    private_etcd: EtcdCluster,
) -> None:
    """A binding with no health check writes a failed report again once the store answers
    (the canary counts clients by their reports)."""
    from keel.config._model import client_key

    url = f"{private_etcd.url}?timeout_s=0.5"
    async with keel.connect(url) as store, Session(store, ttl_s=15) as session:
        center = ConfigCenter(store)
        await center.publish(NAME, "timeout_s: 1\n")
        async with center.bind(NAME, client_id="c0", session=session) as live:
            key = client_key(NAME, "c0")
            assert await store.get(key) is not None
            await store.delete(key)  # so that the next write is seen
            private_etcd.pause(0)
            try:
                await live._report()  # as after a change that came while the store was away
            finally:
                private_etcd.resume(0)
            await eventually(lambda: not live._unreported, 10)
            assert await store.get(key) is not None
