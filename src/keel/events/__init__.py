"""Publish/subscribe with consumer groups, retries, dead letters, per-key order and an outbox.

::

    bus = await keel.events.connect(url)          # or keel.events.Bus(store)
    await bus.publish("orders.created", {"id": 1}, key="order-1")
    async with bus.subscribe("orders.created", group="billing") as sub:
        async for event in sub:
            ...
            await event.ack()

Delivery is at least once per group; every group gets every event; within a
group each event goes to one consumer, and events with the same key are
handled in order. Failing events are retried with backoff and, after
``max_attempts``, moved to ``<topic>.dead``. Two engines sit behind one
contract (:class:`Engine`): the keel store (memory, sqlite, etcd: the
embedded default) and Redis Streams (``keel.events.redis``). See
``docs/events.md``.
"""

from keel.events._admin import GroupStats, StoredEvent
from keel.events._bus import Bus, Handler, Message
from keel.events._connect import connect
from keel.events._engine import END, START, Engine, Entry, GroupLag
from keel.events._event import Event
from keel.events._metrics import EventsMetrics, events_metrics
from keel.events._model import DEFAULT_MAX_EVENT_BYTES, check_group, check_topic
from keel.events._outbox import OUTBOX_HEADER, Relay
from keel.events._settings import Retention, SubscribeSettings
from keel.events._store_engine import StoreEngine
from keel.events._subscribe import Subscription

__all__ = [
    "DEFAULT_MAX_EVENT_BYTES",
    "END",
    "OUTBOX_HEADER",
    "START",
    "Bus",
    "Engine",
    "Entry",
    "Event",
    "EventsMetrics",
    "GroupLag",
    "GroupStats",
    "Handler",
    "Message",
    "Relay",
    "Retention",
    "StoreEngine",
    "StoredEvent",
    "SubscribeSettings",
    "Subscription",
    "check_group",
    "check_topic",
    "connect",
    "events_metrics",
]
