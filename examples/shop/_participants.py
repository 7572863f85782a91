"""The saga's participants: ``inventory`` and ``payment``, each with its own SQLite database.

Every saga call (``POST /reserve``, ``/release``, ``/charge``, ``/refund``)
carries the ``keel-saga`` headers and runs inside
:func:`keel.saga.barrier.guard`, in the participant's own transaction: a
retried call does nothing, a compensation that arrives before its action does
nothing (and the action, arriving later, is refused with 409), and the
barrier row commits with the business write.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiosqlite
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from keel.errors import ValidationError
from keel.saga import barrier

__all__ = ["INVENTORY_SCHEMA", "PAYMENT_SCHEMA", "Ledger", "inventory_app", "payment_app"]

Settings = Callable[[], Any]
Handler = Callable[[Request, barrier.SagaHeaders, dict[str, Any]], Awaitable[Response]]

INVENTORY_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS reservations "
    "(saga_id TEXT PRIMARY KEY, sku TEXT NOT NULL, qty INTEGER NOT NULL)"
)
PAYMENT_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS charges (saga_id TEXT PRIMARY KEY, charge TEXT NOT NULL, "
    "amount REAL NOT NULL, fee REAL NOT NULL, refunded INTEGER NOT NULL DEFAULT 0)"
)


class Ledger:
    """A participant's SQLite database: one connection, used by one request at a time.

    Several instances of a service open their own ``Ledger`` on the same file;
    the barrier's ``BEGIN IMMEDIATE`` queues their writers (busy timeout 10 s).
    """

    def __init__(self, path: Path, schema: str) -> None:
        self.path = path
        self.schema = schema
        self.lock = asyncio.Lock()
        self._conn: aiosqlite.Connection | None = None

    @property
    def conn(self) -> aiosqlite.Connection:
        """The open connection."""
        if self._conn is None:
            raise RuntimeError("the ledger is not open: use async with Ledger(...)")
        return self._conn

    async def __aenter__(self) -> Self:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = await aiosqlite.connect(self.path, timeout=10)
        await self._conn.execute("PRAGMA journal_mode=WAL")
        await self._conn.execute(self.schema)
        await self._conn.commit()
        await barrier.create_table(self._conn)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None


class _Refused(Exception):
    """The business check failed: roll the barrier row back and answer ``response``."""

    def __init__(self, response: Response) -> None:
        self.response = response


def _error(text: str, status: int) -> JSONResponse:
    return JSONResponse({"error": text}, status_code=status)


def _guarded(ledger: Ledger, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """An endpoint that reads the saga headers and a JSON body, and runs ``handler`` once."""

    async def endpoint(request: Request) -> Response:
        try:
            call = barrier.saga_headers(request.headers)
        except ValidationError as exc:
            return _error(str(exc), 400)
        if call is None:
            return _error("a saga call: send the keel-saga headers (ctx.headers())", 400)
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return _error("the body must be a JSON object", 422)
        async with ledger.lock:
            try:
                return await handler(request, call, body)
            except barrier.BarrierRefusedError as exc:
                return _error(str(exc), 409)
            except _Refused as refused:
                return refused.response

    return endpoint


async def _reserved(conn: aiosqlite.Connection, sku: str) -> int:
    query = "SELECT COALESCE(SUM(qty), 0) FROM reservations WHERE sku = ?"
    async with conn.execute(query, (sku,)) as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


def inventory_app(instance: Callable[[], str], settings: Settings, ledger: Ledger) -> Starlette:
    """``GET /stock/{sku}``; ``POST /reserve`` and ``POST /release`` (its compensation).

    What is available is the configured ``stock`` less what open reservations hold.
    """

    async def stock(request: Request) -> Response:
        sku = request.path_params["sku"]
        async with ledger.lock:  # not inside another request's open transaction
            available = settings().stock - await _reserved(ledger.conn, sku)
        return JSONResponse({"sku": sku, "available": available, "instance": instance()})

    async def reserve(
        request: Request, call: barrier.SagaHeaders, body: dict[str, Any]
    ) -> Response:
        sku, qty = body.get("sku"), body.get("qty")
        if not isinstance(sku, str) or not isinstance(qty, int) or isinstance(qty, bool) or qty < 1:
            return _error('the body must be {"sku": str, "qty": int >= 1}', 422)
        conn = ledger.conn
        async with barrier.guard(conn, call.saga_id, call.step, call.op) as should_run:
            available = settings().stock - await _reserved(conn, sku)
            if should_run:
                if available < qty:
                    raise _Refused(_error(f"out of stock: {available} {sku} left", 409))
                await conn.execute(
                    "INSERT INTO reservations VALUES (?, ?, ?)", (call.saga_id, sku, qty)
                )
                available -= qty
        reply = {"sku": sku, "reserved": qty, "available": available, "instance": instance()}
        return JSONResponse(reply)

    async def release(
        request: Request, call: barrier.SagaHeaders, body: dict[str, Any]
    ) -> Response:
        conn = ledger.conn
        async with barrier.guard(conn, call.saga_id, call.step, call.op) as should_run:
            if should_run:
                await conn.execute("DELETE FROM reservations WHERE saga_id = ?", (call.saga_id,))
        return JSONResponse({"released": call.saga_id, "instance": instance()})

    return Starlette(
        routes=[
            Route("/stock/{sku}", stock),
            Route("/reserve", _guarded(ledger, reserve), methods=["POST"]),
            Route("/release", _guarded(ledger, release), methods=["POST"]),
        ]
    )


def payment_app(instance: Callable[[], str], settings: Settings, ledger: Ledger) -> Starlette:
    """``POST /charge`` with ``{"amount": ...}`` (402 when declined); ``POST /refund``."""

    async def charge(request: Request, call: barrier.SagaHeaders, body: dict[str, Any]) -> Response:
        amount = body.get("amount")
        if not isinstance(amount, int | float) or isinstance(amount, bool) or not amount > 0:
            return _error('the body must be {"amount": number > 0}', 422)
        live = settings()
        if live.decline or amount > live.max_charge:
            # declined before the barrier: nothing recorded, the saga compensates
            why = "declined (test switch)" if live.decline else f"above {live.max_charge:.2f}"
            return _error(f"payment of {amount:.2f} {why}", 402)
        conn = ledger.conn
        async with barrier.guard(conn, call.saga_id, call.step, call.op) as should_run:
            if should_run:
                fee = round(amount * live.fee_percent / 100, 2)
                charge_id = "ch_" + hashlib.sha256(call.saga_id.encode()).hexdigest()[:12]
                row = (call.saga_id, charge_id, amount, fee)
                await conn.execute("INSERT INTO charges VALUES (?, ?, ?, ?, 0)", row)
        async with conn.execute(
            "SELECT charge, amount, fee FROM charges WHERE saga_id = ?", (call.saga_id,)
        ) as cursor:
            found = await cursor.fetchone()
        if found is None:  # unreachable: the action's row and the charge commit together
            return _error("no charge recorded for this saga", 409)
        reply = {"charge": found[0], "amount": found[1], "fee": found[2], "instance": instance()}
        return JSONResponse(reply)

    async def refund(request: Request, call: barrier.SagaHeaders, body: dict[str, Any]) -> Response:
        conn = ledger.conn
        async with barrier.guard(conn, call.saga_id, call.step, call.op) as should_run:
            if should_run:
                await conn.execute(
                    "UPDATE charges SET refunded = 1 WHERE saga_id = ?", (call.saga_id,)
                )
        return JSONResponse({"refunded": call.saga_id, "instance": instance()})

    return Starlette(
        routes=[
            Route("/charge", _guarded(ledger, charge), methods=["POST"]),
            Route("/refund", _guarded(ledger, refund), methods=["POST"]),
        ]
    )
