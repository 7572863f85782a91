"""A service process with the idempotency middleware on a sqlite store: prints ``READY <port>``.

Arguments: store URL, ledger file, lease seconds, and ``hang`` to park every order.
With ``KEEL_TEST_REDIS`` set (a Redis URL) the records go to that Redis instead.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import keel
from keel.idempotency import IdempotencySettings, Middleware
from keel.service import Service, ServiceSettings
from tests.idempotency._app import OrdersApp


async def main(store_url: str, ledger: str, lease_s: str = "60", mode: str = "") -> None:
    async with keel.connect(store_url) as store:
        orders = OrdersApp(Path(ledger))
        if mode == "hang":
            orders.hold = asyncio.Event()  # never set: the first request never ends
        settings = IdempotencySettings(lease_s=float(lease_s))
        redis_url = os.environ.get("KEEL_TEST_REDIS")
        if redis_url:
            from redis.asyncio import Redis

            app = Middleware(orders, redis=Redis.from_url(redis_url), settings=settings)
        else:
            app = Middleware(orders, store=store, settings=settings)
        fast = ServiceSettings(drain_delay_s=0.05, grace_s=2.0)
        async with Service("orders", app, store=store, port=0, settings=fast) as svc:
            print("READY", svc.port, flush=True)
            await orders.started.wait()
            print("STARTED", flush=True)  # an order is running (parked, with "hang")
            await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
