"""Fallback: answer from somewhere else when the call (or a policy) fails.

The outermost policy of a pipeline, usually: it sees the final error after
retries, an open breaker, a full bulkhead or a passed deadline, and returns a
degraded answer (a cached value, a default) instead.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from keel.observe.metrics import ResilienceListener, policy_listener

__all__ = ["Fallback"]

P = ParamSpec("P")
T = TypeVar("T")


def _always(exc: Exception) -> bool:
    return True


class Fallback:
    """Return ``await handler(exc)`` when the call raises an exception ``on`` accepts.

    Args:
        handler: awaited with the exception; its result replaces the call's.
        on: which exceptions to handle (default: every ``Exception``;
            cancellation is never handled).
        name: label for metrics and ``repr``.
        listener: metrics hook (counts ``fallback`` outcomes).
    """

    __slots__ = ("_listener", "handler", "name", "on", "used")

    def __init__(
        self,
        handler: Callable[[Exception], Awaitable[Any]],
        *,
        on: Callable[[Exception], bool] = _always,
        name: str = "fallback",
        listener: ResilienceListener | None = None,
    ) -> None:
        self.handler = handler
        self.on = on
        self.name = name
        self._listener = policy_listener(listener)
        self.used = 0

    async def run(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)``, or the handler when it fails.

        Raises:
            Exception: what ``fn`` raised when ``on`` rejects it, or what the handler raised.
        """
        try:
            return await fn(*args, **kwargs)
        except Exception as exc:
            if not self.on(exc):
                raise
            self.used += 1
            if self._listener is not None:
                self._listener.on_call("fallback", self.name, "fallback")
            result: T = await self.handler(exc)
            return result

    def __repr__(self) -> str:
        return f"Fallback(name={self.name!r}, used={self.used})"
