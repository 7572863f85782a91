"""One-shot messages shown on the next page a session renders (in memory, bounded)."""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["Flashes"]


class Flashes:
    """Pending ``(level, text)`` messages per session key, at most ``max_sessions`` kept."""

    def __init__(self, *, max_sessions: int = 1000, per_session: int = 5) -> None:
        self._pending: OrderedDict[str, list[tuple[str, str]]] = OrderedDict()
        self._max_sessions = max_sessions
        self._per_session = per_session

    def add(self, session: str, level: str, text: str) -> None:
        """Queue ``text`` for ``session``."""
        pending = self._pending.setdefault(session, [])
        self._pending.move_to_end(session)
        pending.append((level, text[:500]))
        del pending[: -self._per_session]
        while len(self._pending) > self._max_sessions:
            self._pending.popitem(last=False)

    def pop(self, session: str) -> list[tuple[str, str]]:
        """Take the messages queued for ``session``."""
        return self._pending.pop(session, [])

    def __repr__(self) -> str:
        return f"Flashes(sessions={len(self._pending)})"
