"""The ``order`` saga: reserve stock (inventory), charge (payment), confirm.

Confirming publishes ``orders.created`` on the shop's event bus (when it has
one), keyed by the saga id: at least once, like every saga step, so a
consumer that must count each order once keeps the ids it has seen.

Each step calls its participant by name through :class:`keel.http.Client`
with ``headers=ctx.headers()``, so the participant's barrier applies the call
once. A participant's final refusal (409 out of stock or hanging, 402
declined) is an :class:`~keel.saga.Abort`: the saga compensates at once;
anything else (a 5xx, no instance) is retried by the step's policy, then
compensates.
"""

from __future__ import annotations

from typing import Any

import httpx

from keel.events import Bus
from keel.http import Client
from keel.resilience import RetrySettings
from keel.saga import Abort, Saga, SagaContext, Step

__all__ = ["ORDERS_CREATED", "ORDER_SAGA", "order_saga"]

ORDER_SAGA = "order"
ORDERS_CREATED = "orders.created"
_RETRY = RetrySettings(max_attempts=3, base_delay_s=0.05, max_delay_s=0.5)
_FINAL = (402, 409, 422)


def _result(reply: httpx.Response) -> Any:
    """The participant's JSON reply; Abort on a final refusal, raise to retry otherwise."""
    if reply.status_code in _FINAL:
        try:
            error = reply.json().get("error", reply.text)
        except ValueError:
            error = reply.text
        raise Abort(f"{error} ({reply.status_code})")
    reply.raise_for_status()
    return reply.json()


def order_saga(client: Client, bus: Bus | None = None) -> Saga:
    """The saga ``order`` whose steps call inventory and payment through ``client``.

    Its input is ``{"sku", "qty", "user", "amount"}``; with a ``bus`` its last
    step publishes ``orders.created``.
    """

    async def reserve(ctx: SagaContext) -> Any:
        body = {"sku": ctx.input["sku"], "qty": ctx.input["qty"]}
        reply = await client.post("http://inventory/reserve", json=body, headers=ctx.headers())
        return _result(reply)

    async def release(ctx: SagaContext) -> None:
        reply = await client.post("http://inventory/release", json={}, headers=ctx.headers())
        reply.raise_for_status()

    async def charge(ctx: SagaContext) -> Any:
        body = {"amount": ctx.input["amount"], "user": ctx.input["user"]}
        reply = await client.post("http://payment/charge", json=body, headers=ctx.headers())
        return _result(reply)

    async def refund(ctx: SagaContext) -> None:
        reply = await client.post("http://payment/refund", json={}, headers=ctx.headers())
        reply.raise_for_status()

    async def confirm(ctx: SagaContext) -> Any:
        charge = ctx.results["charge"]["charge"]
        if bus is not None:
            order = {"saga": ctx.saga_id, **ctx.input, "charge": charge}
            await bus.publish(ORDERS_CREATED, order, key=ctx.saga_id)
        return {"confirmed": True, "charge": charge}

    return Saga(
        ORDER_SAGA,
        [
            Step("reserve", action=reserve, compensate=release, timeout_s=5, retry=_RETRY),
            Step("charge", action=charge, compensate=refund, timeout_s=5, retry=_RETRY),
            Step("confirm", action=confirm),
        ],
    )
