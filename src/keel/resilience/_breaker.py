"""Circuit breaker on failure and slow-call rates (the Resilience4j model).

States: CLOSED lets calls through and records each outcome in a sliding window
(by count or by time, see :mod:`._windows`). Once the window holds at least
``minimum_calls`` and the failure rate or the slow-call rate reaches its
threshold, the breaker OPENs and rejects calls with
:class:`~keel.errors.CircuitOpenError` for ``open_duration_s``. Then it is
HALF_OPEN: exactly ``half_open_max_calls`` probes are admitted; when all of
them have finished, their rates decide CLOSED again or OPEN again.

Admission is split from outcome (go-zero's ``allow()`` -> ``accept()/reject()``):
``ticket = breaker.allow()`` then ``ticket.succeeded()`` or ``ticket.failed()``.
Outcomes are tagged with the state generation they were admitted in, so a slow
call admitted before the breaker opened cannot close it afterwards.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, ParamSpec, TypeVar

from keel.clock import SYSTEM_CLOCK, Clock, SystemClock
from keel.errors import BulkheadFullError, CircuitOpenError, RateLimitedError, ValidationError
from keel.observe.metrics import ResilienceListener, policy_listener
from keel.resilience._windows import CountWindow, TimeWindow

__all__ = [
    "BreakerSettings",
    "BreakerState",
    "BreakerStateChanged",
    "BreakerStatistics",
    "BreakerTicket",
    "CircuitBreaker",
]

P = ParamSpec("P")
T = TypeVar("T")
# Refusals by other policies (a limiter, a bulkhead, another breaker): neither
# a success nor a failure of the backend, so they are not recorded.
_IGNORED = (RateLimitedError, BulkheadFullError, CircuitOpenError)


class BreakerState(enum.Enum):
    """The three states of a circuit breaker."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


_CLOSED = BreakerState.CLOSED


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerSettings:
    """When to open and when to try again.

    Attributes:
        window: ``count`` (the last ``window_size`` calls) or ``time`` (the calls
            of the last ``window_size`` seconds).
        window_size: calls or seconds, by ``window``.
        minimum_calls: no decision before the window holds this many calls.
        failure_rate_threshold: open at this failure rate (0 < r <= 1).
        slow_call_rate_threshold: open at this slow-call rate (0 < r <= 1).
        slow_call_duration_s: a call at least this long is slow.
        open_duration_s: how long to reject before probing.
        half_open_max_calls: probes admitted in HALF_OPEN.
    """

    window: Literal["count", "time"] = "count"
    window_size: int = 100
    minimum_calls: int = 10
    failure_rate_threshold: float = 0.5
    slow_call_rate_threshold: float = 1.0
    slow_call_duration_s: float = 60.0
    open_duration_s: float = 30.0
    half_open_max_calls: int = 5

    def __post_init__(self) -> None:
        if self.window not in ("count", "time"):
            raise ValidationError(f"window must be 'count' or 'time', got {self.window!r}")
        for field in ("window_size", "minimum_calls", "half_open_max_calls"):
            if getattr(self, field) < 1:
                raise ValidationError(f"{field} must be >= 1, got {getattr(self, field)!r}")
        for field in ("failure_rate_threshold", "slow_call_rate_threshold"):
            if not 0 < getattr(self, field) <= 1:
                raise ValidationError(f"{field} must be in (0, 1], got {getattr(self, field)!r}")
        for field in ("slow_call_duration_s", "open_duration_s"):
            if not getattr(self, field) > 0:
                raise ValidationError(f"{field} must be > 0, got {getattr(self, field)!r}")


@dataclass(frozen=True, slots=True)
class BreakerStateChanged:
    """Event: the breaker ``name`` moved from ``old`` to ``new`` at monotonic ``at``."""

    name: str
    old: BreakerState
    new: BreakerState
    at: float


@dataclass(frozen=True, slots=True)
class BreakerStatistics:
    """A snapshot of a :class:`CircuitBreaker`."""

    state: BreakerState
    calls: int
    failures: int
    slow_calls: int
    failure_rate: float
    slow_call_rate: float
    rejected: int
    transitions: int


class BreakerTicket:
    """One admitted call: report its outcome exactly once."""

    __slots__ = ("_breaker", "_done", "_generation", "_start")

    def __init__(self, breaker: CircuitBreaker, generation: int, start: float) -> None:
        self._breaker = breaker
        self._generation = generation
        self._start = start
        self._done = False

    def succeeded(self) -> None:
        """The call worked (it may still count as slow)."""
        if not self._done:
            self._done = True
            self._breaker._succeeded(self._generation, self._start)

    def failed(self) -> None:
        """The call failed."""
        self._finish(True)

    def cancelled(self) -> None:
        """The call was abandoned: free its probe slot without recording an outcome."""
        if not self._done:
            self._done = True
            self._breaker._release(self._generation)

    def _finish(self, failed: bool) -> None:
        if self._done:
            return
        self._done = True
        b = self._breaker
        b._record(self._generation, failed, b._now() - self._start)

    def __repr__(self) -> str:
        return f"BreakerTicket(generation={self._generation}, done={self._done})"


class CircuitBreaker:
    """A count- or time-window circuit breaker.

    Args:
        settings: thresholds and durations (defaults: :class:`BreakerSettings`).
        name: label for events, metrics and ``repr``.
        clock: time source.
        on_state_change: called with each :class:`BreakerStateChanged`.
        listener: metrics hook.
    """

    def __init__(
        self,
        settings: BreakerSettings | None = None,
        *,
        name: str = "breaker",
        clock: Clock = SYSTEM_CLOCK,
        on_state_change: Callable[[BreakerStateChanged], None] | None = None,
        listener: ResilienceListener | None = None,
    ) -> None:
        self.settings = s = settings or BreakerSettings()
        self.name = name
        self._clock = clock
        # time.monotonic itself when the clock is the system one: saves a frame per call.
        self._now = time.monotonic if isinstance(clock, SystemClock) else clock.monotonic
        self._slow_s = s.slow_call_duration_s
        self._on_state_change = on_state_change
        self._listener = policy_listener(listener)
        self._window = (
            CountWindow(s.window_size) if s.window == "count" else TimeWindow(s.window_size)
        )
        self._probes = CountWindow(s.half_open_max_calls)
        self._state = BreakerState.CLOSED
        self._generation = 0
        # The generation in which the hot path may record a good call (-1: never).
        self._fast_ok = isinstance(self._window, CountWindow) and listener is None
        self._fast_window = (
            self._window if isinstance(self._window, CountWindow) else CountWindow(1)
        )
        self._fast_generation = 0 if self._fast_ok else -1
        self._opened_at = -math.inf
        self._permits = 0
        self._rejected = 0
        self._transitions = 0

    @property
    def state(self) -> BreakerState:
        """The current state (OPEN turns HALF_OPEN lazily, on the next admission)."""
        return self._state

    def allow(self) -> BreakerTicket:
        """Admit one call.

        Returns:
            a ticket to report the outcome on.

        Raises:
            CircuitOpenError: the breaker is open, or half-open with every probe taken.
        """
        if self._state is _CLOSED:
            return BreakerTicket(self, self._generation, self._now())
        return BreakerTicket(self, self._admit(), self._now())

    def _admit(self) -> int:
        if self._state is BreakerState.CLOSED:
            return self._generation
        now = self._now()
        if self._state is BreakerState.OPEN:
            left = self._opened_at + self.settings.open_duration_s - now
            if left > 0:
                self._reject("open", f"circuit {self.name!r} is open for another {left:.3f} s")
            self._transition(BreakerState.HALF_OPEN, now)
        if self._permits >= self.settings.half_open_max_calls:
            self._reject("half_open_full", f"circuit {self.name!r} is half-open, probes taken")
        self._permits += 1
        return self._generation

    def _reject(self, reason: str, message: str) -> None:
        self._rejected += 1
        if self._listener is not None:
            self._listener.on_rejected("breaker", self.name, reason)
        raise CircuitOpenError(message)

    def _record(self, generation: int, failed: bool, duration: float) -> None:
        if generation != self._generation:
            return  # admitted under an earlier state: stale
        slow = duration >= self.settings.slow_call_duration_s
        if self._listener is not None:
            self._listener.on_call("breaker", self.name, "failure" if failed else "success")
        if self._state is BreakerState.CLOSED:
            w = self._window
            w.record(failed, slow, self._now())
            if (w.failures or w.slow) and self._tripped(w.calls, w.failures, w.slow):
                self._transition(BreakerState.OPEN, self._now())
        elif self._state is BreakerState.HALF_OPEN:
            p = self._probes
            p.record(failed, slow, 0.0)
            if p.calls >= self.settings.half_open_max_calls:
                tripped = self._tripped(p.calls, p.failures, p.slow, minimum=1)
                new = BreakerState.OPEN if tripped else BreakerState.CLOSED
                self._transition(new, self._now())

    def _after_good_call(self, now: float) -> None:
        w = self._fast_window
        w.prune()
        if w.bad and self._tripped(w.calls, w.failures, w.slow):
            self._transition(BreakerState.OPEN, now)

    def _release(self, generation: int) -> None:
        if generation == self._generation and self._state is BreakerState.HALF_OPEN:
            self._permits -= 1

    def _tripped(self, calls: int, failures: int, slow: int, minimum: int | None = None) -> bool:
        s = self.settings
        if calls < (s.minimum_calls if minimum is None else minimum):
            return False
        return (
            failures >= s.failure_rate_threshold * calls
            or slow >= s.slow_call_rate_threshold * calls
        )

    def _transition(self, new: BreakerState, now: float) -> None:
        old = self._state
        self._state = new
        self._generation += 1
        self._transitions += 1
        self._permits = 0
        self._probes.reset()
        if new is BreakerState.OPEN:
            self._opened_at = now
        if new is BreakerState.CLOSED:
            self._window.reset()
        fast = new is _CLOSED and self._fast_ok
        self._fast_generation = self._generation if fast else -1
        if self._listener is not None:
            self._listener.on_state_change("breaker", self.name, new.value)
        if self._on_state_change is not None:
            self._on_state_change(BreakerStateChanged(self.name, old, new, now))

    async def call(
        self,
        fn: Callable[..., Awaitable[T]],
        /,
        *args: Any,
        fallback: Callable[[Exception], Awaitable[T]] | None = None,
        is_failure: Callable[[Exception], bool] | None = None,
        **kwargs: Any,
    ) -> T:
        """Await ``fn(*args, **kwargs)`` through the breaker.

        By default every exception counts as a failure except the refusals of
        other policies (``RateLimitedError``, ``BulkheadFullError``,
        ``CircuitOpenError``); those and cancellations record nothing.

        Args:
            fn: the async callable.
            args: its positional arguments.
            fallback: awaited with the exception when the breaker rejects the
                call or the call fails; its result is returned instead.
            is_failure: which exceptions count as failures (others count as
                successes: the remote side answered).
            kwargs: its keyword arguments.

        Returns:
            what ``fn`` (or ``fallback``) returned.

        Raises:
            CircuitOpenError: rejected and no fallback given.
        """
        if fallback is not None or is_failure is not None:
            return await self._guarded(fn, args, kwargs, fallback, is_failure)
        generation = self._generation if self._state is _CLOSED else self._admit()
        now = self._now
        start = now()
        try:
            result = await fn(*args, **kwargs)
        except _IGNORED:
            self._release(generation)  # admission refusals say nothing of the backend
            raise
        except Exception:
            self._record(generation, True, now() - start)
            raise
        except BaseException:
            self._release(generation)
            raise
        self._succeeded(generation, start)
        return result

    def _succeeded(self, generation: int, start: float) -> None:
        end = self._now()
        if generation == self._fast_generation and end - start < self._slow_s:
            # The hot path: a good call, closed, count window, no listener.
            w = self._fast_window
            w.seq += 1
            if w.bad:
                self._after_good_call(end)
        else:
            self._record(generation, False, end - start)

    # The pipeline step (``fallback``/``is_failure`` are keywords of the breaker here too).
    run = call

    async def _guarded(
        self,
        fn: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        fallback: Callable[[Exception], Awaitable[T]] | None,
        is_failure: Callable[[Exception], bool] | None,
    ) -> T:
        try:
            ticket = self.allow()
        except CircuitOpenError as exc:
            if fallback is None:
                raise
            return await fallback(exc)
        try:
            result = await fn(*args, **kwargs)
        except _IGNORED:
            ticket.cancelled()
            raise
        except Exception as exc:
            failed = True if is_failure is None else is_failure(exc)
            if failed:
                ticket.failed()
            else:
                ticket.succeeded()
            if fallback is None or not failed:
                raise
            return await fallback(exc)
        except BaseException:
            ticket.cancelled()
            raise
        ticket.succeeded()
        return result

    def statistics(self) -> BreakerStatistics:
        """State, window totals and rates, rejections and transitions."""
        w = self._window
        w.roll(self._now())
        calls = w.calls
        return BreakerStatistics(
            self._state,
            calls,
            w.failures,
            w.slow,
            w.failures / calls if calls else 0.0,
            w.slow / calls if calls else 0.0,
            self._rejected,
            self._transitions,
        )

    def __repr__(self) -> str:
        w = self._window
        return (
            f"CircuitBreaker(name={self.name!r}, state={self._state.value}, "
            f"window={self.settings.window}:{self.settings.window_size}, calls={w.calls}, "
            f"failures={w.failures}, slow={w.slow}, rejected={self._rejected})"
        )
