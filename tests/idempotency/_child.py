"""A service process with the idempotency middleware on a sqlite store: prints ``READY <port>``."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import keel
from keel.idempotency import Middleware
from keel.service import Service, ServiceSettings
from tests.idempotency._app import OrdersApp


async def main(store_url: str, ledger: str) -> None:
    async with keel.connect(store_url) as store:
        app = Middleware(OrdersApp(Path(ledger)), store=store)
        settings = ServiceSettings(drain_delay_s=0.05, grace_s=2.0)
        async with Service("orders", app, store=store, port=0, settings=settings) as svc:
            print("READY", svc.port, flush=True)
            await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
