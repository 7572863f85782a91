"""Upstream faults through the proxy: a killed instance, a POST in flight, a breaker cycle."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

import keel
from keel.registry import Instance, Registry
from tests._procs import Child, Children
from tests.gateway import _proxy_gateway, _proxy_upstream

pytestmark = pytest.mark.slow


@contextlib.asynccontextmanager
async def two_instances(
    children: Children, tmp_path: Path
) -> AsyncIterator[tuple[str, dict[str, tuple[Child, int]]]]:
    """Instances ``a`` and ``b`` of ``flaky``, registered by this process in a sqlite store."""
    url = f"sqlite:///{tmp_path}/keel.db"
    started = await asyncio.gather(
        _proxy_upstream.start(children, "a"), _proxy_upstream.start(children, "b")
    )
    instances = dict(zip("ab", started, strict=True))
    async with keel.connect(url) as store, Registry(store) as registry:
        for tag, (_, port) in instances.items():
            await registry.register(
                Instance(service="flaky", address="127.0.0.1", port=port, id=tag)
            )
        yield url, instances


async def stats(client: httpx.AsyncClient) -> dict[str, int]:
    """The test gateway's Upstreams statistics."""
    response = await client.get("/__stats")
    return dict(response.json())


async def test_idempotent_requests_survive_a_killed_instance(
    children: Children, tmp_path: Path
) -> None:
    """GETs under load while one of two instances is kill -9'd: every one answered 200."""
    async with two_instances(children, tmp_path) as (url, instances):
        _, port = await _proxy_gateway.start(children, url, "flaky", retries=2)
        total, kill_at = 600, 150
        statuses: list[int] = []
        answered_by: list[str] = []
        count = 0

        async def worker(client: httpx.AsyncClient) -> None:
            nonlocal count
            while count < total:
                count += 1
                if count == kill_at:
                    instances["a"][0].kill9()
                response = await client.get(f"/item/{count}")
                statuses.append(response.status_code)
                answered_by.append(response.text)

        async with (
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client,
            asyncio.timeout(60),
        ):
            async with asyncio.TaskGroup() as tasks:
                for _ in range(8):
                    tasks.create_task(worker(client))
            after = await stats(client)
        assert len(statuses) >= total
        assert [s for s in statuses if s != 200] == []
        assert set(answered_by[:100]) == {"a", "b"}
        assert set(answered_by[-100:]) == {"b"}
        assert after["retries"] >= 1


async def test_a_post_sent_to_a_dying_instance_is_not_replayed(
    children: Children, tmp_path: Path
) -> None:
    """A POST in flight when its instance dies is answered 502, never sent to the other."""
    async with two_instances(children, tmp_path) as (url, instances):
        _, port = await _proxy_gateway.start(children, url, "flaky", retries=2)
        async with (
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client,
            asyncio.timeout(30),
        ):
            post = asyncio.create_task(client.post("/hang", content=b"pay once"))
            waits = {
                asyncio.create_task(child.expect("HANG")): tag
                for tag, (child, _) in instances.items()
            }
            done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            hung = waits[done.pop()]
            other = "b" if hung == "a" else "a"
            instances[hung][0].kill9()
            response = await post
            assert response.status_code == 502
            assert response.json()["error"] == "bad_gateway"
            direct = await client.get(f"http://127.0.0.1:{instances[other][1]}/__count")
            assert json.loads(direct.text).get("POST", 0) == 0


async def test_breaker_opens_on_a_failing_instance_and_closes_after_it_recovers(
    children: Children, tmp_path: Path
) -> None:
    """500s from one instance open its breaker (traffic moves away); healthy again, it closes."""
    async with two_instances(children, tmp_path) as (url, instances):
        _, port = await _proxy_gateway.start(children, url, "flaky", retries=0, open_s=0.5)
        a = f"http://127.0.0.1:{instances['a'][1]}"
        async with (
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client,
            asyncio.timeout(30),
        ):
            # Batches of concurrent calls: peak-EWMA avoids a failing instance while
            # the other is idle, so one at a time would never reach it again.
            async def batch() -> list[httpx.Response]:
                return await asyncio.gather(*(client.get("/x") for _ in range(8)))

            loop = asyncio.get_running_loop()
            await client.post(f"{a}/__fail?on=1")
            # After each failure peak-EWMA keeps away from a until its penalty decays
            # (about 0.5 s here), and the breaker needs three failed calls: bound the
            # wait by time, not by a count of batches, which a fast run gets through
            # before a has been tried three times.
            seen_500, opened = 0, False
            until = loop.time() + 12
            while not opened and loop.time() < until:
                seen_500 += sum(r.status_code == 500 for r in await batch())
                opened = (await stats(client))["breakers_open"] == 1
                await asyncio.sleep(0.02)
            assert opened, f"a's breaker never seen open ({seen_500} answers of 500)"
            assert seen_500 >= 3
            await client.post(f"{a}/__fail?on=0")
            answered: list[str] = []
            closed = False
            until = loop.time() + 12
            while not closed and loop.time() < until:
                responses = await batch()
                assert [r.status_code for r in responses] == [200] * 8
                answered += [r.text for r in responses]
                closed = (await stats(client))["breakers_open"] == 0 and "a" in answered
                await asyncio.sleep(0.02)  # paces the loop across the 0.5 s open period
            assert closed, f"breaker still open, or a not answering ({answered.count('a')} from a)"
