"""Run the shop in one event loop (``python -m examples.shop``): a gateway before five services.

The gateway (``keel.gateway``) listens on the base port and routes by
service name with the routes of the ``gateway.yaml`` config, published here
once if missing (``keel config publish gateway.yaml FILE`` changes them
live): ``POST /orders`` to orders, with a rate limit per client address, and
``GET /stock/{sku}`` to inventory. orders, inventory (two), payment and the
gRPC users service take the next five ports.

Each confirmed order is published as an ``orders.created`` event on the
store's event bus (``keel.events``); the ``analytics`` group counts them
into ``shop/analytics`` (each saga once).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

import keel
from examples.shop._apps import (
    InventorySettings,
    OrdersSettings,
    PaymentSettings,
    inventory_app,
    orders_app,
    payment_app,
)
from examples.shop._participants import INVENTORY_SCHEMA, PAYMENT_SCHEMA, Ledger
from examples.shop._saga import ORDERS_CREATED, order_saga
from examples.shop._users import UserService, users_channel_settings
from examples.shop.protos.users_pb2_grpc import (
    UserServiceStub,
    add_UserServiceServicer_to_server,
)
from keel.config import ConfigCenter
from keel.errors import ConflictError
from keel.events import Bus, Event
from keel.gateway import Gateway
from keel.grpc import Channel, Server
from keel.http import Client
from keel.saga import Coordinator
from keel.service import Service, ServiceSettings
from keel.store import Compare, Put, Store, parse_url

__all__ = ["ANALYTICS_KEY", "GATEWAY_CONFIG", "GATEWAY_ROUTES", "Shop", "main", "run_shop"]

GATEWAY_CONFIG = "gateway.yaml"
GATEWAY_ROUTES = """\
# The shop's front door: keel.gateway routes requests to services by name.
# Change them live: keel config publish gateway.yaml FILE
routes:
  - id: orders
    match: {path: /orders, methods: [POST]}
    forward: {service: orders, timeout_s: 10}
    limits:
      rate: {requests: 20, per_s: 1, burst: 40, by: client}
  - id: stock
    match: {path: "/stock/{sku}", methods: [GET]}
    forward: {service: inventory, timeout_s: 2}
  - id: elsewhere
    priority: -1
    match: {path: /}
    respond:
      status: 404
      body: "not here: the shop answers POST /orders and GET /stock/{sku}\\n"
      headers: {content-type: text/plain}
"""


class Shop:
    """The running shop: its services by name (``services["inventory"]`` has two).

    ``gateway`` is a :class:`keel.gateway.Gateway` (the front door), ``users``
    a :class:`keel.grpc.Server`, the others :class:`keel.service.Service` s;
    ``data_dir`` holds the participants' databases (``inventory.db``, ``payment.db``).
    """

    def __init__(self, data_dir: Path | None = None) -> None:
        self.services: dict[str, list[Service | Server | Gateway]] = {}
        self.data_dir = data_dir

    def add(self, service: Service | Server | Gateway) -> None:
        """Remember a started service."""
        self.services.setdefault(service.name, []).append(service)

    def urls(self) -> dict[str, list[str]]:
        """Each service's instance URLs (``grpc://`` for users)."""
        return {name: [_url(s) for s in group] for name, group in self.services.items()}

    def __repr__(self) -> str:
        return f"<Shop {self.urls()}>"


def _url(service: Service | Server | Gateway) -> str:
    if isinstance(service, Server):
        return f"grpc://{service.address}"
    return service.url


def _value(holder: list[Service], default: Any) -> Callable[[], Any]:
    """A getter for the live config of the service stored in ``holder`` (default until bound)."""

    def get() -> Any:
        live = holder[0].config if holder else None
        return live.value if live is not None else default

    return get


def _instance_id(holder: list[Service]) -> Callable[[], str]:
    return lambda: holder[0].instance_id


async def run_shop(
    store: Store,
    stop: asyncio.Event,
    *,
    base_port: int = 0,
    host: str = "127.0.0.1",
    on_ready: Callable[[Shop], object] | None = None,
    data_dir: Path | None = None,
) -> Shop:
    """Start users, inventory x2, payment, orders and the gateway; serve until ``stop`` is set.

    Args:
        store: the store every service registers in.
        stop: set it to drain and stop every service.
        base_port: the gateway on it, orders on +1, inventory on +2 and +3,
            payment on +4, users (gRPC) on +5 (0: free ports).
        host: the address to bind.
        on_ready: called with the shop once every instance is registered.
        data_dir: where inventory and payment keep their SQLite databases
            (``inventory.db``, ``payment.db``; default: a temporary directory
            removed on exit).

    Returns:
        the shop, after every service stopped.
    """
    shop = Shop(data_dir)
    gateway_port, *ports = [base_port + i if base_port else 0 for i in range(6)]
    settings = ServiceSettings(host=host, drain_delay_s=0.2, grace_s=5.0)
    async with contextlib.AsyncExitStack() as stack:
        if shop.data_dir is None:
            shop.data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="shop-")))
        users = Server("users", store=store, port=ports[4], settings=settings, access_log=False)
        users.add(add_UserServiceServicer_to_server, UserService())
        shop.add(await stack.enter_async_context(users))
        client = await stack.enter_async_context(Client(store))
        channel = await stack.enter_async_context(
            Channel(store, "users", settings=users_channel_settings())
        )
        bus = await stack.enter_async_context(Bus(store))
        coordinator = await stack.enter_async_context(
            Coordinator(store, sagas=[order_saga(client, bus)])
        )
        await _count_orders(bus, store, stack)
        plan: list[tuple[str, type[BaseModel], int]] = [
            ("inventory", InventorySettings, ports[1]),
            ("inventory", InventorySettings, ports[2]),
            ("payment", PaymentSettings, ports[3]),
            ("orders", OrdersSettings, ports[0]),
        ]
        for name, model, port in plan:
            holder: list[Service] = []
            live = _value(holder, model())
            if name == "orders":
                app = orders_app(coordinator, UserServiceStub(channel), live)
            elif name == "inventory":
                ledger = Ledger(shop.data_dir / "inventory.db", INVENTORY_SCHEMA)
                app = inventory_app(
                    _instance_id(holder), live, await stack.enter_async_context(ledger)
                )
            else:
                ledger = Ledger(shop.data_dir / "payment.db", PAYMENT_SCHEMA)
                app = payment_app(
                    _instance_id(holder), live, await stack.enter_async_context(ledger)
                )
            service = Service(
                name,
                app,
                store=store,
                port=port,
                settings=settings,
                config=f"{name}.json",
                config_model=model,
            )
            holder.append(service)
            await stack.enter_async_context(service)
            shop.add(service)
        shop.add(await stack.enter_async_context(await _gateway(store, host, gateway_port)))
        if on_ready is not None:
            on_ready(shop)
        await stop.wait()
    return shop


ANALYTICS_KEY = "shop/analytics"


async def _count_orders(bus: Bus, store: Store, stack: contextlib.AsyncExitStack) -> None:
    """The ``analytics`` group: count ``orders.created`` into ``shop/analytics``, each saga once.

    Delivery is at least once, so the count is a transaction on the record
    of seen sagas: a redelivered event finds its saga there and counts nothing.
    """

    @bus.handler(ORDERS_CREATED, group="analytics")
    async def count(event: Event) -> None:
        while True:
            kv = await store.get(ANALYTICS_KEY)
            seen = json.loads(kv.value) if kv is not None else {"orders": 0, "last": []}
            if event.key in seen["last"]:
                return
            seen["orders"] += 1
            seen["last"] = [*seen["last"], event.key][-_REMEMBERED:]
            compare = [Compare.version(ANALYTICS_KEY, "==", kv.version if kv else 0)]
            done = await store.txn(compare, [Put(ANALYTICS_KEY, json.dumps(seen).encode())])
            if done.succeeded:
                return

    runner = asyncio.create_task(bus.run())
    stack.push_async_callback(_cancelled, runner)


_REMEMBERED = 1000


async def _cancelled(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _gateway(store: Store, host: str, port: int) -> Gateway:
    """The shop's gateway, after publishing its routes if ``gateway.yaml`` is missing."""
    with contextlib.suppress(ConflictError):
        await ConfigCenter(store).publish(
            GATEWAY_CONFIG, GATEWAY_ROUTES, format="yaml", author="shop", expected_version=0
        )
    return Gateway(store, host=host, port=port, access_log=False)


def _announce(shop: Shop) -> None:
    for name, urls in shop.urls().items():
        print(f"{name:<10} {' '.join(urls)}", flush=True)
    front = shop.urls()["gateway"][0]
    print(
        f"try: curl -s -X POST {front}/orders -H 'content-type: application/json' "
        f'-d \'{{"sku": "apple", "qty": 2, "user": "bob"}}\'',
        flush=True,
    )


def _beside_store(url: str) -> Path | None:
    """``shop/`` next to a SQLite store's file (None for other stores: a temporary one)."""
    parsed = parse_url(url)
    if parsed.scheme != "sqlite" or not parsed.path or parsed.path == ":memory:":
        return None
    return Path(parsed.path).resolve().parent / "shop"


def main(argv: list[str] | None = None) -> None:
    """``python -m examples.shop [--store URL] [--base-port 8080]``."""
    parser = argparse.ArgumentParser(prog="python -m examples.shop", description=__doc__)
    parser.add_argument("--store", default=None, help="store URL (default: KEEL_STORE or sqlite)")
    parser.add_argument(
        "--base-port",
        type=int,
        default=8080,
        help="the gateway's port (the services take the next five); 0: free ports",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where inventory.db and payment.db go (default: shop/ beside a sqlite store, "
        "else a temporary directory)",
    )
    args = parser.parse_args(argv)

    async def go() -> None:
        stop = asyncio.Event()
        url = args.store or keel.store.default_url()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        data_dir = args.data_dir or _beside_store(url)
        async with keel.connect(url) as store:
            await run_shop(
                store, stop, base_port=args.base_port, on_ready=_announce, data_dir=data_dir
            )

    asyncio.run(go())
