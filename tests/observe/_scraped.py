"""Processes a real Prometheus scrapes: ``python -m tests.observe._scraped service|worker URL``.

``service URL``: a keel Service (its ``/metrics`` is the scrape target) that
uses every component the dashboards and rules watch — a session on ``URL``
(an etcd URL whose first endpoint is dead, so the connection fails over), a
lock taken per request, a config binding that refuses a bad publish,
discovery of itself with one malformed record in the registry, a health
checker probing a registered TCP check, a ``keel.http.Client`` calling a
flaky route (retries, balancer picks, outlier ejection), a breaker that
trips, a retry, a bulkhead that queues. Prints ``READY <port>`` once all
that has happened.

``worker URL``: a scheduler (planner and worker) running a one-second job,
its series served by ``prometheus_client.start_http_server``. Prints
``READY <port>`` after the first run.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

import httpx
import pydantic
from prometheus_client import start_http_server
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import keel
from keel.config import ConfigCenter
from keel.coord import Lock, Session
from keel.http import Client
from keel.registry import Discovery, HealthCheck, HealthChecker, Instance, Registry
from keel.resilience import BreakerSettings, Bulkhead, CircuitBreaker, Retry, RetrySettings
from keel.schedule import JobContext, Scheduler
from keel.service import Service
from keel.store import Store
from keel.testing import free_port


class Settings(pydantic.BaseModel):
    """The bound config: a positive limit."""

    limit: int = pydantic.Field(gt=0)


def app(store: Store, session: Session) -> Starlette:
    """``/work`` takes a lock and writes; ``/flaky`` answers 503."""

    async def work(request: Request) -> PlainTextResponse:
        async with await Lock(session, "scraped-work").acquire():
            await store.put("scraped/work", b"done")
        return PlainTextResponse("ok")

    async def flaky(request: Request) -> PlainTextResponse:
        return PlainTextResponse("busy", status_code=503)

    return Starlette(routes=[Route("/work", work), Route("/flaky", flaky)])


async def policies() -> None:
    """A breaker trips, a retry retries, a bulkhead queues a call."""

    async def boom() -> None:
        raise ValueError("down")

    breaker = CircuitBreaker(BreakerSettings(minimum_calls=2, window_size=2), name="scraped")
    for _ in range(3):
        with contextlib.suppress(ValueError, keel.errors.CircuitOpenError):
            await breaker.call(boom)
    retry = Retry(RetrySettings(max_attempts=2, base_delay_s=0.01), retry_on=lambda e: True)
    with contextlib.suppress(ValueError):
        await retry.run(boom)
    bulkhead = Bulkhead(1, max_queue=1, name="scraped")
    await asyncio.gather(bulkhead.run(asyncio.sleep, 0.05), bulkhead.run(asyncio.sleep, 0.01))


async def service(url: str) -> None:
    """Run the service and its companions until killed."""
    async with keel.connect(url) as store:
        center = ConfigCenter(store)
        await center.publish("scraped.yaml", "limit: 5\n")
        await store.put("services/scraped/malformed", b"{not json")
        async with Session(store) as session:
            svc = Service(
                "scraped", app(store, session), store=store, port=0,
                config="scraped.yaml", config_model=Settings,
            )  # fmt: skip
            async with svc, Registry(store, session=session) as registry:
                probe_port = free_port()
                listener = await asyncio.start_server(
                    lambda r, w: w.close(), "127.0.0.1", probe_port
                )
                check = HealthCheck(type="tcp", interval_s=1, timeout_s=1)
                await registry.register(
                    Instance(service="probed", address="127.0.0.1", port=probe_port, check=check)
                )
                checker = asyncio.ensure_future(HealthChecker(session).run())
                async with Discovery(store) as discovery, Client(discovery=discovery) as client:
                    await discovery.instances("scraped")
                    async with httpx.AsyncClient(base_url=svc.url) as http:
                        await http.get("/work")
                    for _ in range(8):  # 503s, retried; the breakers and ejection end them
                        with contextlib.suppress(Exception):
                            await client.get("http://scraped/flaky")
                    with contextlib.suppress(Exception):
                        await center.publish("scraped.yaml", "limit: -1\n")
                    await policies()
                    lease = await store.grant(5)  # a call that fails: the errors series
                    await store.revoke(lease.id)
                    with contextlib.suppress(keel.errors.LeaseNotFoundError):
                        await store.keepalive(lease.id)
                    await asyncio.sleep(2.5)  # a keepalive, probes, the bad publish seen
                    print("READY", svc.port, flush=True)
                    await asyncio.sleep(3600)
                checker.cancel()
                listener.close()


async def worker(url: str) -> None:
    """Run a scheduler with a one-second job until killed."""
    port = free_port()
    start_http_server(port, addr="127.0.0.1")
    ran = asyncio.Event()
    async with keel.connect(url) as store:
        scheduler = Scheduler(store, group="scraped")

        @scheduler.job("scraped.tick", interval_s=1)
        async def tick(ctx: JobContext) -> None:
            await ctx.store.put("scraped/tick", b"x")
            ran.set()

        task = asyncio.ensure_future(scheduler.run())
        await asyncio.wait_for(ran.wait(), 30)
        await asyncio.sleep(1.5)
        print("READY", port, flush=True)
        await task


if __name__ == "__main__":
    mode, store_url = sys.argv[1], sys.argv[2]
    asyncio.run(service(store_url) if mode == "service" else worker(store_url))
