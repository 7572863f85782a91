"""One watch of ``jobs/`` shared by a worker and a planner in the same process."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeAlias

from keel.store import Event

__all__ = ["Feed", "FeedGate"]

Feed: TypeAlias = Callable[[Callable[[Event], None]], Callable[[], None]]
"""Subscribe a callback to the changes under ``jobs/``; returns the unsubscribe function."""


class FeedGate:
    """Changes from a feed, held until the listing they follow is read.

    Listen first, then list: changes the listing already holds (revision at
    or below its own) are dropped, later ones are applied in order.
    """

    def __init__(self, apply: Callable[[Event], None]) -> None:
        self._apply = apply
        self._held: list[Event] | None = []
        self._listed = 0

    def __call__(self, event: Event) -> None:
        if self._held is not None:
            self._held.append(event)
        elif event.kv.mod_revision > self._listed:
            self._apply(event)

    def open(self, listed: int) -> None:
        """The listing is at revision ``listed``: apply what was held after it, and go on."""
        self._listed = listed
        held, self._held = self._held or [], None
        for event in held:
            self(event)
