"""Saga transitions as events: each one written to the events outbox in its own transaction.

With ``Coordinator(..., events=bus)``, every transition the coordinator
commits (the saga created, a step started, done, failed, compensating,
compensated, the saga ended) also writes one ``sagas`` event (the topic is
configurable) to the bus's outbox, in the same store transaction as the
record, so the event exists exactly when the transition does; the
coordinator runs the outbox relay that moves them to the bus. Events are
keyed by the saga id, so a consumer group sees one saga's transitions in
order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from keel.saga._model import SagaRecord
from keel.store import Put

if TYPE_CHECKING:
    from keel.events import Bus

__all__ = ["DEFAULT_TOPIC", "Announce", "announcer", "transition"]

DEFAULT_TOPIC = "sagas"

Announce = Callable[[str, SagaRecord], Put]
"""Makes the outbox ``Put`` of one transition: ``(saga_id, record) -> Put``."""


def transition(saga_id: str, rec: SagaRecord) -> dict[str, Any]:
    """The event payload of a transition: the saga's status and each step's state."""
    return {
        "saga": saga_id,
        "status": rec.status.value,
        "steps": {name: step.state.value for name, step in rec.steps.items()},
        "error": rec.error,
        "at": rec.updated_at,
    }


def announcer(bus: Bus, topic: str = DEFAULT_TOPIC) -> Announce:
    """The :data:`Announce` writing transitions to ``bus``'s outbox under ``topic``."""

    def announce(saga_id: str, rec: SagaRecord) -> Put:
        return bus.outbox_put(topic, transition(saga_id, rec), key=saga_id)

    return announce
