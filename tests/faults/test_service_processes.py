"""Services in real processes on SQLite and etcd: readiness, SIGTERM order, restarts, workers."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

import keel
from keel.http import Client
from keel.store import EventType, Store
from keel.testing import EtcdCluster, free_port
from tests._procs import Child, Children

pytestmark = pytest.mark.slow

ENV = {"KEEL_SERVICE_DRAIN_DELAY_S": "0.3", "KEEL_SERVICE_GRACE_S": "5"}


@pytest.fixture(params=["sqlite", "etcd"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store the children and the test share: a SQLite file or a private etcd prefix."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'keel.db'}"
    cluster: EtcdCluster = request.getfixturevalue("etcd_cluster")
    return f"{cluster.url}?root=/svc-{tmp_path.name}/"


async def start(children: Children, url: str, port: int = 0, **env: str) -> tuple[Child, int]:
    child = await children.start("tests.service._child", "echo", url, str(port), env={**ENV, **env})
    fields = await child.expect("READY", timeout_s=30)
    return child, int(fields[0])


async def test_registers_only_once_ready(children: Children, url: str, tmp_path: Path) -> None:
    """While /readyz fails the instance is not in the registry; once it passes, it is."""
    flag = tmp_path / "ready"
    port = free_port()
    child = await children.start(
        "tests.service._child", "echo", url, str(port), env={**ENV, "READY_FILE": str(flag)}
    )
    async with keel.connect(url) as store, httpx.AsyncClient() as http:
        async with asyncio.timeout(30):
            while True:
                try:
                    answer = await http.get(f"http://127.0.0.1:{port}/readyz")
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
        assert answer.status_code == 503 and "ready-file" in answer.json()["failing"]
        assert (await store.range("services/echo/"))[0] == []
        flag.touch()
        await child.expect("READY", timeout_s=10)
        assert len((await store.range("services/echo/"))[0]) == 1


async def test_sigterm_deregisters_before_the_socket_closes(children: Children, url: str) -> None:
    """SIGTERM: DRAINING, deregistered, then connections refused; the in-flight request succeeds."""
    child, port = await start(children, url)
    async with keel.connect(url) as store, httpx.AsyncClient() as http:
        deleted_at: list[float] = []

        async def follow(store: Store) -> None:
            async for event in store.watch("services/echo/", prefix=True):
                if event.type is EventType.DELETE:
                    deleted_at.append(time.monotonic())
                    return

        async def closed() -> float:
            while True:
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                    writer.close()
                    await writer.wait_closed()
                except OSError:
                    return time.monotonic()
                await asyncio.sleep(0.01)

        async with asyncio.timeout(30), asyncio.TaskGroup() as tasks:
            follower = tasks.create_task(follow(store))
            in_flight = tasks.create_task(http.get(f"http://127.0.0.1:{port}/slow?s=1"))
            await asyncio.sleep(0.2)
            child.signal(signal.SIGTERM)
            closed_at = await tasks.create_task(closed())
            await follower
            assert (await in_flight).status_code == 200
        assert deleted_at and deleted_at[0] < closed_at
        await child.expect("STOPPED")
        assert await child.proc.wait() == 0


async def test_rolling_restart_of_two_instances_loses_no_request(
    children: Children, url: str
) -> None:
    """A steady request loop through keel.http.Client sees no error while both instances restart."""
    a, _ = await start(children, url)
    b, _ = await start(children, url)
    counts = {"ok": 0, "errors": 0}
    stop = asyncio.Event()
    async with keel.connect(url) as store, Client(store) as client:

        async def loop() -> None:
            while not stop.is_set():
                try:
                    answer = await client.get("http://echo/slow?s=0.02")
                    counts["ok" if answer.status_code == 200 else "errors"] += 1
                except Exception:
                    counts["errors"] += 1

        async with asyncio.TaskGroup() as tasks:
            for _ in range(4):
                tasks.create_task(loop())
            for old in (a, b):
                await asyncio.sleep(0.3)
                old.signal(signal.SIGTERM)
                await old.expect("STOPPED", timeout_s=30)
                await start(children, url)
            await asyncio.sleep(0.3)
            stop.set()
    assert counts["errors"] == 0, counts
    assert counts["ok"] > 50


async def pids(port: int, connections: int = 24) -> set[int]:
    """Which processes answer ``connections`` fresh connections to ``port``."""
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(limits=limits) as http:
        answers = [await http.get(f"http://127.0.0.1:{port}/echo") for _ in range(connections)]
    return {answer.json()["pid"] for answer in answers}


async def test_two_workers_are_one_instance_and_drain_together(
    children: Children, url: str
) -> None:
    """workers=2: one registered instance, both processes answer; SIGTERM drains all, exit 0."""
    child, port = await start(children, url, KEEL_SERVICE_WORKERS="2")
    async with keel.connect(url) as store, httpx.AsyncClient() as http:
        assert len((await store.range("services/echo/"))[0]) == 1
        served_by = await pids(port)
        assert len(served_by) == 2 and child.proc.pid not in served_by
        async with asyncio.timeout(30):
            in_flight = asyncio.ensure_future(http.get(f"http://127.0.0.1:{port}/slow?s=1"))
            await asyncio.sleep(0.2)
            child.signal(signal.SIGTERM)
            assert (await in_flight).status_code == 200
            await child.expect("STOPPED")
            assert await child.proc.wait() == 0
        assert (await store.range("services/echo/"))[0] == []
    for pid in served_by:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


@pytest.mark.parametrize("url", ["sqlite"], indirect=True)  # supervision, not the store
async def test_every_scrape_of_a_worker_shows_the_whole_instance(
    children: Children, url: str
) -> None:
    """/metrics from either worker: requests summed over both, gauges one per process."""
    child, port = await start(children, url, KEEL_SERVICE_WORKERS="2")
    served_by = await pids(port, connections=40)  # 40 /echo requests, spread over both
    assert len(served_by) == 2
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(limits=limits) as http:
        for _ in range(6):  # fresh connections: scrapes land on both workers
            answer = await http.get(f"http://127.0.0.1:{port}/metrics")
            assert answer.status_code == 200, answer.text
            families = {f.name: f for f in text_string_to_metric_families(answer.text)}
            echo = [
                s.value
                for s in families["keel_http_server_requests"].samples
                if s.labels.get("route") == "/echo" and s.name.endswith("_total")
            ]
            assert sum(echo) == 40, echo
            memory = families["process_resident_memory_bytes"].samples
            assert {s.labels["worker"] for s in memory} == {"0", "1", "supervisor"}
            merged = families["keel_service_workers_merged"].samples
            assert [(s.labels, s.value) for s in merged] == [({"service": "echo"}, 2.0)]
    child.signal(signal.SIGTERM)
    async with asyncio.timeout(30):
        assert await child.proc.wait() == 0


@pytest.mark.parametrize("url", ["sqlite"], indirect=True)  # supervision, not the store
async def test_a_dead_worker_takes_the_instance_down(children: Children, url: str) -> None:
    """kill -9 of one worker: the instance deregisters, the other drains, the exit code is not 0."""
    child, port = await start(children, url, KEEL_SERVICE_WORKERS="2")
    victim, *_ = await pids(port)
    os.kill(victim, signal.SIGKILL)
    async with asyncio.timeout(30):
        assert await child.proc.wait() != 0
    async with keel.connect(url) as store:
        assert (await store.range("services/echo/"))[0] == []
