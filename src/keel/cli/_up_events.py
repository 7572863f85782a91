"""The events ``keel up`` shows: each topic's consumer groups and how far behind they are.

The figures come from ``keel.events`` itself (:meth:`keel.events.Bus.lag`
over the store engine), read with the rest of the view's refresh; the
``shop/analytics`` record (the shop's count of ``orders.created``) is decoded
here, strictly, and shown in the panel's title when it is there.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from rich.text import Text

from keel.cli._common import cell
from keel.events import Bus, GroupStats
from keel.store import Store

__all__ = ["COLUMNS", "MAX_TOPICS", "WIDTHS", "counted_orders", "event_rows", "read_lag"]

COLUMNS = ("topic", "group", "pending", "behind")
WIDTHS: tuple[int | None, ...] = (None, None, 8, 8)
MAX_TOPICS = 8
_ANALYTICS = "shop/analytics"


async def read_lag(store: Store, bus: Bus) -> list[GroupStats]:
    """Every group of the first :data:`MAX_TOPICS` topics (dead-letter topics included)."""
    stats: list[GroupStats] = []
    for topic in (await bus.topics())[:MAX_TOPICS]:
        stats.extend(await bus.lag(topic))
    return stats


async def counted_orders(store: Store) -> int | None:
    """The shop's count of ``orders.created`` (None when absent or not a count)."""
    kv = await store.get(_ANALYTICS)
    if kv is None:
        return None
    try:
        orders = json.loads(kv.value).get("orders")
    except (ValueError, AttributeError, RecursionError):
        return None
    return orders if isinstance(orders, int) and not isinstance(orders, bool) else None


def event_rows(stats: Sequence[GroupStats]) -> list[list[Text | str]]:
    """One row per (topic, group): pending = delivered not acked, behind = not delivered yet."""
    rows: list[list[Text | str]] = []
    for s in stats:
        behind = Text(str(s.undelivered), style="yellow" if s.undelivered else "")
        rows.append([cell(s.topic), cell(s.group), str(s.pending), behind])
    return rows
