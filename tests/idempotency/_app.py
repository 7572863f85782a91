"""A small ASGI app for the idempotency tests: POST /orders has a side effect to count."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

Message = MutableMapping[str, Any]


class OrdersApp:
    """Creates an order per POST /orders (counted in memory, and in ``ledger`` if given).

    ``hold`` (an Event), when set up, parks each order until it is set;
    ``started`` is set when an order begins.
    """

    def __init__(self, ledger: Path | None = None) -> None:
        self.orders = 0
        self.ledger = ledger
        self.hold: asyncio.Event | None = None
        self.started = asyncio.Event()

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        path = scope["path"]
        if path == "/boom":
            await _send(send, 503, b'{"error": "overloaded"}')
            return
        if path == "/big":
            self.orders += 1
            await _send(send, 200, b"x" * 4096)
            return
        self.started.set()
        if self.hold is not None:
            await self.hold.wait()
        self.orders += 1
        if self.ledger is not None:
            with self.ledger.open("a") as f:
                f.write(body.decode() + "\n")
        await _send(send, 201, json.dumps({"order": self.orders, "echo": body.decode()}).encode())


async def _send(send: Callable[[Message], Awaitable[None]], status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"x-order", b"yes")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})
    await send({"type": "http.response.body", "body": body[len(body) // 2 :]})
