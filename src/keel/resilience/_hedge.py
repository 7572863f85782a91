"""Hedged requests: a second attempt after a delay, first success wins.

From Dean and Barroso, "The Tail at Scale" (CACM 2013): send the request, and
if it has not answered within (about) the 95th-percentile latency, send it
again - normally to another instance, which ``fn`` picks (through a balancer);
take whichever answers first and cancel the other. Hedges are extra load, so
each one spends a token of the shared :class:`~keel.resilience.RetryBudget`.
With ``delay_s=None`` the delay is the p95 of recent successful latencies.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from keel.clock import SYSTEM_CLOCK, Clock
from keel.errors import ValidationError
from keel.observe.metrics import ResilienceListener, policy_listener
from keel.resilience._budget import NoRetryBudget, RetryBudget

__all__ = ["Hedge", "HedgeSettings", "HedgeStatistics"]

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class HedgeSettings:
    """When and how often to hedge.

    Attributes:
        delay_s: fixed hedge delay; ``None`` uses the observed ``percentile``.
        percentile: latency percentile for the adaptive delay (0-100).
        min_delay_s: floor of the adaptive delay (and the delay before samples exist).
        max_hedges: extra attempts at most.
        samples: how many recent latencies the percentile is taken over.
    """

    delay_s: float | None = None
    percentile: float = 95.0
    min_delay_s: float = 0.01
    max_hedges: int = 1
    samples: int = 1000

    def __post_init__(self) -> None:
        if self.delay_s is not None and not self.delay_s >= 0:
            raise ValidationError(f"delay_s must be >= 0, got {self.delay_s!r}")
        if not 0 < self.percentile <= 100:
            raise ValidationError(f"percentile must be in (0, 100], got {self.percentile!r}")
        if not self.min_delay_s >= 0:
            raise ValidationError(f"min_delay_s must be >= 0, got {self.min_delay_s!r}")
        if self.max_hedges < 0 or self.samples < 1:
            raise ValidationError("need max_hedges >= 0 and samples >= 1")


@dataclass(frozen=True, slots=True)
class HedgeStatistics:
    """Counters of a :class:`Hedge`."""

    calls: int
    hedges: int
    hedge_wins: int
    budget_rejections: int
    delay_s: float


class Hedge:
    """The hedging policy.

    Args:
        settings: delay and number of hedges.
        budget: the shared retry budget hedges spend (default: unlimited).
        clock: time and sleep.
        name: label for metrics and ``repr``.
        listener: metrics hook.
    """

    def __init__(
        self,
        settings: HedgeSettings | None = None,
        *,
        budget: RetryBudget | NoRetryBudget | None = None,
        clock: Clock = SYSTEM_CLOCK,
        name: str = "hedge",
        listener: ResilienceListener | None = None,
    ) -> None:
        self.settings = settings or HedgeSettings()
        self._budget = budget if budget is not None else NoRetryBudget()
        self._clock = clock
        self.name = name
        self._listener = policy_listener(listener)
        self._latencies: deque[float] = deque(maxlen=self.settings.samples)
        self._calls = self._hedges = self._wins = self._budget_rejections = 0

    def delay(self) -> float:
        """The current hedge delay: fixed, or the percentile of recent latencies."""
        s = self.settings
        if s.delay_s is not None:
            return s.delay_s
        if not self._latencies:
            return s.min_delay_s
        ordered = sorted(self._latencies)
        index = min(len(ordered) - 1, int(len(ordered) * s.percentile / 100.0))
        return max(s.min_delay_s, ordered[index])

    async def run(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)``, hedging slow attempts; the first success wins.

        Raises:
            Exception: the last failure when every attempt failed.
        """
        self._calls += 1
        self._budget.deposit()
        start = self._clock.monotonic()
        pending: set[asyncio.Task[T]] = set()
        order: dict[asyncio.Task[T], int] = {}

        def launch() -> None:
            task: asyncio.Task[T] = asyncio.ensure_future(fn(*args, **kwargs))
            order[task] = len(order)
            pending.add(task)

        launch()
        hedges_left = self.settings.max_hedges
        error: BaseException | None = None
        try:
            while pending:
                done = await self._wait_first(pending, self.delay() if hedges_left else None)
                for task in done:
                    pending.discard(task)
                    if task.exception() is None:
                        self._won(order[task], self._clock.monotonic() - start)
                        return task.result()
                    error = task.exception()
                if hedges_left and (not done or not pending):
                    hedges_left = hedges_left - 1 if self._hedge(launch) else 0
            assert error is not None
            raise error
        finally:
            await self._cancel(pending)

    async def _wait_first(
        self, pending: set[asyncio.Task[T]], delay: float | None
    ) -> set[asyncio.Task[T]]:
        if delay is None:
            done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            return done
        sleeper = asyncio.ensure_future(self._clock.sleep(delay))
        waiting: set[asyncio.Future[Any]] = {*pending, sleeper}
        try:
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
        return {task for task in pending if task.done()}

    def _hedge(self, launch: Callable[[], None]) -> bool:
        if not self._budget.try_withdraw():
            self._budget_rejections += 1
            if self._listener is not None:
                self._listener.on_rejected("hedge", self.name, "budget")
            return False
        self._hedges += 1
        if self._listener is not None:
            self._listener.on_call("hedge", self.name, "hedged")
        launch()
        return True

    def _won(self, index: int, latency: float) -> None:
        self._latencies.append(latency)
        if index > 0:
            self._wins += 1

    @staticmethod
    async def _cancel(pending: set[asyncio.Task[T]]) -> None:
        if not pending:
            return
        for task in pending:
            task.cancel()
        # asyncio.wait neither raises the losers' errors nor hides our own cancellation.
        await asyncio.wait(pending)

    def statistics(self) -> HedgeStatistics:
        """Calls, hedges sent, hedges that won, budget refusals, current delay."""
        return HedgeStatistics(
            self._calls, self._hedges, self._wins, self._budget_rejections, self.delay()
        )

    def __repr__(self) -> str:
        return (
            f"Hedge(name={self.name!r}, delay={self.delay():.4f}s, calls={self._calls}, "
            f"hedges={self._hedges}, wins={self._wins})"
        )
