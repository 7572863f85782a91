"""The three Starlette apps of the shop, and the settings each hot-reloads."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from keel.http import Client

__all__ = [
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


def orders_app(client: Client, settings: Settings) -> Starlette:
    """``POST /orders`` with ``{"sku", "qty"}``: checks stock, charges, answers the order."""

    async def place(request: Request) -> Response:
        body = await request.json()
        sku, qty = str(body.get("sku", "")), int(body.get("qty", 1))
        limit = settings().max_quantity
        if not sku or not 1 <= qty <= limit:
            return JSONResponse({"error": f"qty must be 1..{limit} and sku set"}, status_code=422)
        stock = (await client.get(f"http://inventory/stock/{sku}")).json()
        if stock["available"] < qty:
            return JSONResponse({"error": "out of stock", "stock": stock}, status_code=409)
        paid = await client.post("http://payment/charge", json={"amount": qty * 4.2})
        return JSONResponse({"sku": sku, "qty": qty, "stock": stock, "payment": paid.json()})

    return Starlette(routes=[Route("/orders", place, methods=["POST"])])
