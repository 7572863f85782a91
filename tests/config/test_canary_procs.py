"""Canaries with 20 bound clients in 4 processes, on sqlite and etcd: promoted through the
steps across a kill -9 of the controller, rolled back on unhealthy reports, aborted by hand."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

import keel
from keel.config import Analysis, ClientReport, ConfigCenter, GrayRule, Step
from keel.store import Store
from tests._procs import Child, Children
from tests.config._canary_util import canary_until

pytestmark = pytest.mark.slow

CHILD = "tests.config._canary_child"
NAME = "orders.yaml"
FLEETS, PER_FLEET = 4, 5


@pytest.fixture(params=["sqlite", "etcd"])
def backend(request: pytest.FixtureRequest) -> str:
    """Shared stores only: these tests span processes."""
    name: str = request.param
    return name


@pytest.fixture
async def fleet_store(store_url: str, children: Children) -> AsyncIterator[tuple[Store, str]]:
    """The store with version 1 published and 20 clients bound in 4 processes."""
    async with keel.connect(store_url) as store:
        await ConfigCenter(store).publish(NAME, "timeout_s: 1\n")
        fleets = [
            await children.start(CHILD, "fleet", store_url, NAME, f"p{i}", PER_FLEET)
            for i in range(FLEETS)
        ]
        await asyncio.gather(*(f.expect("READY", 60) for f in fleets))
        await settle(store, lambda rs: len(rs) == FLEETS * PER_FLEET)
        yield store, store_url


async def reports(store: Store) -> dict[str, ClientReport]:
    """Client id → report."""
    kvs, _ = await store.range(f"config-clients/{NAME}/")
    return {kv.key.rsplit("/", 1)[1]: ClientReport.decode(kv.value) for kv in kvs}


async def settle(
    store: Store, ok: Callable[[dict[str, ClientReport]], bool], timeout_s: float = 30
) -> dict[str, ClientReport]:
    """Wait (bounded) until the reports satisfy ``ok``."""
    async with asyncio.timeout(timeout_s):
        while True:
            found = await reports(store)
            if ok(found):
                return found
            await asyncio.sleep(0.05)


async def controllers(children: Children, url: str, *nodes: str) -> list[Child]:
    """Start controller processes; the first one leads."""
    first = await children.start(CHILD, "controller", url, nodes[0])
    await first.expect("LEADING", 60)
    rest = [await children.start(CHILD, "controller", url, node) for node in nodes[1:]]
    return [first, *rest]


async def test_promoted_through_the_steps_across_a_controller_kill(
    fleet_store: tuple[Store, str], children: Children
) -> None:
    """Healthy gray clients: 25% → 50% → promoted; the leading controller is kill -9'd
    after the first advance and the standby resumes at the recorded step."""
    store, url = fleet_store
    center = ConfigCenter(store)
    a, _ = await controllers(children, url, "ctl-a", "ctl-b")
    plan = Analysis(
        steps=(Step(percent=25, duration_s=0.5), Step(percent=50, duration_s=4), Step(percent=100)),
        interval_s=0.2,
        deadline_s=60,
    )
    gray = await center.publish_gray(
        NAME, "timeout_s: 2\n", GrayRule(ids=("p0-c0",)), analysis=plan
    )
    await canary_until(center, NAME, lambda c: c.step == 1)
    a.kill9()
    done = await canary_until(center, NAME, lambda c: c.status != "running", timeout_s=45)
    assert done.status == "promoted", done.decisions
    assert [(d.kind, d.step) for d in done.decisions] == [
        ("start", 0),
        ("advance", 0),
        ("promote", 1),
    ]
    assert done.decisions[1].by == "ctl-a" and done.decisions[2].by == "ctl-b"
    assert all(e.step == 1 for e in done.evaluations if e.by == "ctl-b")
    doc = await center.get(NAME)
    assert doc is not None and doc.version == 2 and doc.md5 == gray.md5
    await settle(store, lambda rs: all(r.version == 2 and not r.gray for r in rs.values()))


async def test_unhealthy_gray_clients_roll_back(
    fleet_store: tuple[Store, str], children: Children
) -> None:
    """Gray clients hurt by the gray document report unhealthy: the first evaluation that
    sees it rolls back, and every client returns to version 1."""
    store, url = fleet_store
    center = ConfigCenter(store)
    await controllers(children, url, "ctl-a")
    plan = Analysis(steps=(Step(percent=25, duration_s=30), Step(percent=100)), interval_s=0.3)
    gray = await center.publish_gray(
        NAME, "broken: true\n", GrayRule(ids=("p1-c1",)), analysis=plan
    )
    done = await canary_until(center, NAME, lambda c: c.status != "running")
    assert done.status == "aborted" and "unhealthy" in done.decisions[-1].reasons[0]
    sick = [e for e in done.evaluations if e.evidence.get("gray", {}).get("unhealthy")]
    assert sick and all(e.kind == "fail" for e in sick)  # no evaluation let a sick client pass
    assert await center.gray(NAME) is None
    back = await settle(store, lambda rs: all(not r.gray and r.version == 1 for r in rs.values()))
    assert len(back) == FLEETS * PER_FLEET and all(r.md5 != gray.md5 for r in back.values())


async def test_manual_abort_during_analysis(
    fleet_store: tuple[Store, str], children: Children
) -> None:
    """An abort by hand while the controller evaluates ends the canary; nothing more is decided."""
    store, url = fleet_store
    center = ConfigCenter(store)
    await controllers(children, url, "ctl-a")
    plan = Analysis(steps=(Step(percent=25, duration_s=60), Step(percent=100)), interval_s=0.2)
    await center.publish_gray(NAME, "timeout_s: 3\n", GrayRule(ids=("p2-c2",)), analysis=plan)
    await canary_until(center, NAME, lambda c: len(c.evaluations) >= 2)
    assert await center.abort_gray(NAME)
    await settle(store, lambda rs: all(not r.gray and r.version == 1 for r in rs.values()))
    await asyncio.sleep(0.6)  # three evaluation intervals: the controller must not act again
    canary = await center.canary(NAME)
    assert canary is not None and canary.status == "aborted"
    assert [d.kind for d in canary.decisions] == ["start", "abort"]
    assert canary.decisions[-1].by == "manual"
    assert (await center.get(NAME)).version == 1  # type: ignore[union-attr]
