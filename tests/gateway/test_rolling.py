"""Rolling restart of the gateway's upstreams under a request loop: 0 failed requests.

Two upstream instances run as child processes; each in turn gets SIGTERM (the
service runtime marks it DRAINING, deregisters it, drains in-flight requests)
and a replacement starts, while a steady loop of GETs goes through the gateway.
The gateway drops draining instances from discovery and retries an idempotent
request whose kept-alive connection the old instance closed.
"""

from __future__ import annotations

import asyncio
import signal

import httpx
import pytest

from keel.store import Store
from tests._procs import Children
from tests._util import eventually
from tests.gateway._gw import gateway, publish
from tests.gateway._upstream_app import start_child

DOC = {
    "routes": [{"id": "all", "match": {"path": "/"}, "forward": {"service": "users", "retries": 2}}]
}


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "etcd"])
async def test_rolling_restart_loses_nothing(
    store: Store, store_url: str, children: Children
) -> None:
    """SIGTERM each of 2 instances in turn, replacing it, under load: every request succeeds."""
    await publish(store, DOC)
    first = await asyncio.gather(
        *(start_child(children, "users", store_url, tag=f"old{i}") for i in range(2))
    )
    ports: set[int] = set()
    failed: list[str] = []
    ok = [0]
    stop = asyncio.Event()
    limits = httpx.Limits(max_connections=4, max_keepalive_connections=4)
    async with (
        gateway(store) as gw,
        httpx.AsyncClient(base_url=gw.url, limits=limits, timeout=10) as http,
    ):

        async def worker() -> None:
            while not stop.is_set() and ok[0] + len(failed) < 50_000:
                try:
                    answer = await http.get("/work")
                    if answer.status_code == 200:
                        ok[0] += 1
                        ports.add(answer.json()["port"])
                    else:
                        failed.append(f"{answer.status_code} {answer.text[:120]}")
                except httpx.HTTPError as exc:
                    failed.append(repr(exc))

        async with asyncio.timeout(90), asyncio.TaskGroup() as tasks:
            for _ in range(4):
                tasks.create_task(worker())
            await eventually(lambda: {p for _, p, _ in first} <= ports, 20)
            for index, (child, _port, _id) in enumerate(first):
                # the replacement starts while the old instance drains (the other one serves)
                child.signal(signal.SIGTERM)
                _, _, (_, new_port, _) = await asyncio.gather(
                    child.expect("STOPPED", 30),
                    child.wait(30),
                    start_child(children, "users", store_url, tag=f"new{index}"),
                )
                assert child.proc.returncode == 0
                await eventually(lambda port=new_port: port in ports, 20)  # type: ignore[misc]
            served = ok[0]
            await eventually(lambda: ok[0] > served + 20, 20)
            stop.set()
    assert failed == [], failed[:5]
    assert ok[0] > 100
