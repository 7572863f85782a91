"""The three Starlette apps of the shop, and the settings each hot-reloads.

``orders`` calls ``inventory`` and ``payment`` over HTTP and ``users`` over gRPC.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import grpc
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from examples.shop.protos.users_pb2 import GetUserRequest
from keel.http import Client

__all__ = [
    "PRICE_CENTS",
    "InventorySettings",
    "OrdersSettings",
    "PaymentSettings",
    "inventory_app",
    "orders_app",
    "payment_app",
]

Settings = Callable[[], Any]


class OrdersSettings(BaseModel):
    """``orders.json``: the largest quantity one order may ask for."""

    max_quantity: int = 10


class InventorySettings(BaseModel):
    """``inventory.json``: units in stock per SKU."""

    stock: int = 100


class PaymentSettings(BaseModel):
    """``payment.json``: fee added to every charge, in percent."""

    fee_percent: float = 2.5


def inventory_app(instance: Callable[[], str], settings: Settings) -> Starlette:
    """``GET /stock/{sku}``: what is in stock, and which instance answered."""

    async def stock(request: Request) -> Response:
        sku = request.path_params["sku"]
        return JSONResponse({"sku": sku, "available": settings().stock, "instance": instance()})

    return Starlette(routes=[Route("/stock/{sku}", stock)])


def payment_app(instance: Callable[[], str], settings: Settings) -> Starlette:
    """``POST /charge`` with ``{"amount": ...}``: a charge id and the fee."""
    ids = itertools.count(1)

    async def charge(request: Request) -> Response:
        body = await request.json()
        amount = float(body["amount"])
        fee = round(amount * settings().fee_percent / 100, 2)
        return JSONResponse(
            {"charge": f"ch_{next(ids)}", "amount": amount, "fee": fee, "instance": instance()}
        )

    return Starlette(routes=[Route("/charge", charge, methods=["POST"])])


PRICE_CENTS = 420
"""What one unit of any SKU costs, in cents."""


def orders_app(client: Client, users: Any, settings: Settings) -> Starlette:
    """``POST /orders`` with ``{"sku", "qty", "user"}``: checks credit, stock, charges.

    ``users`` is a ``UserServiceStub`` on a ``keel.grpc.Channel`` to the users
    service: the user (default ``alice``) is fetched over gRPC, and an order
    above the user's credit limit is refused with 402 before anything is charged.
    """

    async def place(request: Request) -> Response:
        body = await request.json()
        sku, qty = str(body.get("sku", "")), int(body.get("qty", 1))
        user_id = body.get("user", "alice")
        limit = settings().max_quantity
        if not sku or not 1 <= qty <= limit:
            return JSONResponse({"error": f"qty must be 1..{limit} and sku set"}, status_code=422)
        if not isinstance(user_id, str) or not user_id:
            return JSONResponse({"error": "user must be a user id, e.g. alice"}, status_code=422)
        user = await _get_user(users, user_id)
        if isinstance(user, Response):
            return user
        cents = qty * PRICE_CENTS
        if cents > user.credit_limit_cents:
            return JSONResponse(
                {
                    "error": f"order of {cents / 100:.2f} exceeds {user.name}'s credit limit "
                    f"of {user.credit_limit_cents / 100:.2f}: order fewer units",
                    "user": {"id": user.id, "name": user.name},
                },
                status_code=402,
            )
        stock = (await client.get(f"http://inventory/stock/{sku}")).json()
        if stock["available"] < qty:
            return JSONResponse({"error": "out of stock", "stock": stock}, status_code=409)
        paid = await client.post("http://payment/charge", json={"amount": cents / 100})
        return JSONResponse(
            {
                "sku": sku,
                "qty": qty,
                "user": {"id": user.id, "name": user.name},
                "stock": stock,
                "payment": paid.json(),
            }
        )

    return Starlette(routes=[Route("/orders", place, methods=["POST"])])


async def _get_user(users: Any, user_id: str) -> Any:
    """The user from the users service over gRPC, or the error response to send instead."""
    try:
        return await users.GetUser(GetUserRequest(id=user_id))
    except grpc.aio.AioRpcError as exc:
        if exc.code() is grpc.StatusCode.NOT_FOUND:
            return JSONResponse({"error": exc.details()}, status_code=404)
        return JSONResponse(
            {"error": f"users service: {exc.code().name}: {exc.details()}"}, status_code=503
        )
