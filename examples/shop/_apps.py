"""The shop's settings and its ``orders`` app; the participants are in ``_participants``.

``orders`` calls ``users`` over gRPC, then runs the saga ``order`` (reserve
stock on ``inventory``, charge on ``payment``, confirm) on a
:class:`keel.saga.Coordinator` and answers with its outcome.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from examples.shop._participants import inventory_app, payment_app
from examples.shop._saga import ORDER_SAGA
from examples.shop.protos.users_pb2 import GetUserRequest
from keel.errors import ValidationError
from keel.saga import Coordinator, Outcome, SagaRecord, get_saga

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
    """``orders.json``: the largest quantity one order may ask for; how long to wait for a saga."""

    max_quantity: int = 10
    wait_s: float = 5.0


class InventorySettings(BaseModel):
    """``inventory.json``: units in stock per SKU."""

    stock: int = 100


class PaymentSettings(BaseModel):
    """``payment.json``: the fee in percent; charges above ``max_charge`` (or all, with
    ``decline``, a test switch) are declined."""

    fee_percent: float = 2.5
    max_charge: float = 25.0
    decline: bool = False


PRICE_CENTS = 420
"""What one unit of any SKU costs, in cents."""


def orders_app(coordinator: Coordinator, users: Any, settings: Settings) -> Starlette:
    """``POST /orders`` with ``{"sku", "qty", "user"}``: checks credit, then runs the saga.

    ``users`` is a ``UserServiceStub`` on a ``keel.grpc.Channel`` to the users
    service: the user (default ``alice``) is fetched over gRPC, and an order
    above the user's credit limit is refused with 402 before the saga starts.
    Then one saga ``order`` starts (its key is the request's
    ``Idempotency-Key``, so a retried request joins the same saga) and the
    reply waits for it, up to ``wait_s``: 201 committed, 409 (out of stock)
    or 402 (payment declined) compensated, 202 still running.
    """

    async def place(request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return JSONResponse({"error": "the body must be a JSON object"}, status_code=422)
        sku, qty, user_id = body.get("sku", ""), body.get("qty", 1), body.get("user", "alice")
        live = settings()
        limit = live.max_quantity
        if not isinstance(sku, str) or not sku or not _quantity(qty, limit):
            return JSONResponse({"error": f"qty must be 1..{limit} and sku set"}, status_code=422)
        if not isinstance(user_id, str) or not user_id:
            return JSONResponse({"error": "user must be a user id, e.g. alice"}, status_code=422)
        user = await _get_user(users, user_id)
        if isinstance(user, Response):
            return user
        cents = qty * PRICE_CENTS
        who = {"id": user.id, "name": user.name}
        if cents > user.credit_limit_cents:
            return JSONResponse(
                {
                    "error": f"order of {cents / 100:.2f} exceeds {user.name}'s credit limit "
                    f"of {user.credit_limit_cents / 100:.2f}: order fewer units",
                    "user": who,
                },
                status_code=402,
            )
        order = {"sku": sku, "qty": qty, "user": user.id, "amount": cents / 100}
        try:
            key = request.headers.get("idempotency-key")
            saga_id = await coordinator.start(ORDER_SAGA, order, key=key)
        except ValidationError as exc:
            return JSONResponse({"error": f"Idempotency-Key: {exc}"}, status_code=422)
        try:
            await coordinator.wait(saga_id, timeout=live.wait_s)
        except TimeoutError:
            reply = {"saga": saga_id, "outcome": "running", "sku": sku, "qty": qty, "user": who}
            return JSONResponse(reply, status_code=202)
        return _answer(await get_saga(coordinator.store, saga_id), saga_id, who)

    return Starlette(routes=[Route("/orders", place, methods=["POST"])])


def _quantity(qty: object, limit: int) -> bool:
    return isinstance(qty, int) and not isinstance(qty, bool) and 1 <= qty <= limit


def _answer(rec: SagaRecord, saga_id: str, who: dict[str, str]) -> Response:
    """The reply for an ended saga: what it did, or why it was compensated."""
    outcome = Outcome(rec.status.value)
    reply: dict[str, Any] = {"saga": saga_id, "outcome": outcome.value}
    reply.update(sku=rec.input["sku"], qty=rec.input["qty"], user=who)
    if outcome is Outcome.COMMITTED:
        reply["stock"] = rec.steps["reserve"].result
        reply["payment"] = rec.steps["charge"].result
        return JSONResponse(reply, status_code=201)
    reply["error"] = rec.error
    if outcome is Outcome.FAILED:
        reply["error"] += f"; a compensation failed: keel sagas retry {saga_id}"
        return JSONResponse(reply, status_code=500)
    # the participant's final status ends the error: (402) declined, (409) out of stock
    return JSONResponse(reply, status_code=402 if rec.error.endswith("(402)") else 409)


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
