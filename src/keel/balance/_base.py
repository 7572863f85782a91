"""What every balancer shares: the Endpoint protocol, tickets, per-instance state.

A balancer never imports the registry: it works on anything with an ``id``, a
``weight`` and a ``zone`` (:class:`Endpoint`), so ``keel.registry.Instance``
fits, and so does a test's own small dataclass.

Feedback comes in two shapes, as go-zero splits admission from outcome:
``observe(instance, latency_s, ok)`` records a finished call, and
``with balancer.track(instance) as ticket:`` also counts the call as
outstanding while it runs (what least-request and peak-EWMA need).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Generic, Protocol, TypeVar

from keel.clock import SYSTEM_CLOCK, Clock
from keel.errors import NoInstanceError
from keel.observe._component_metrics import component_metrics

__all__ = [
    "Balancer",
    "BalancerStatistics",
    "E",
    "Endpoint",
    "FeedbackBase",
    "StateTable",
    "Ticket",
    "require",
]


class Endpoint(Protocol):
    """What a balancer needs to know of an instance (``keel.registry.Instance`` fits)."""

    @property
    def id(self) -> str:
        """A stable identifier: balancer state is keyed by it."""
        ...

    @property
    def weight(self) -> int:
        """Relative capacity, 1..1000 (100 is the default)."""
        ...

    @property
    def zone(self) -> str:
        """Availability zone, ``""`` when unknown."""
        ...


E = TypeVar("E", bound=Endpoint)
S = TypeVar("S")


def require(instances: Sequence[E]) -> int:
    """Return ``len(instances)``.

    Raises:
        NoInstanceError: when the list is empty.
    """
    n = len(instances)
    if n == 0:
        raise NoInstanceError(
            "no instance to pick from: the service has no registered (or no healthy) "
            "instance; register one or check discovery's filters"
        )
    return n


class Ticket:
    """One call in flight to ``instance``: report its outcome exactly once.

    Use it as a context manager (an exception is a failure, a clean exit a
    success) or call :meth:`succeeded` / :meth:`failed` yourself, for example
    for an HTTP 503 that raised nothing. Later reports are ignored.

    Attributes:
        instance: the instance the call went to.
    """

    __slots__ = ("_clock", "_done", "_end", "_inner", "_start", "instance")

    def __init__(
        self,
        instance: Endpoint,
        clock: Clock,
        end: Callable[[Endpoint, float, bool], None] | None,
        inner: Ticket | None = None,
    ) -> None:
        self.instance = instance
        self._clock = clock
        self._start = clock.monotonic()
        self._end = end
        self._inner = inner
        self._done = False

    @property
    def done(self) -> bool:
        """Whether the outcome has been reported."""
        return self._done

    def succeeded(self) -> None:
        """The call worked."""
        self._finish(True)

    def failed(self) -> None:
        """The call failed (an error, a timeout, a 5xx)."""
        self._finish(False)

    def _finish(self, ok: bool) -> None:
        if self._done:
            return
        self._done = True
        if self._end is not None:
            self._end(self.instance, self._clock.monotonic() - self._start, ok)
        if self._inner is not None:
            self._inner._finish(ok)

    def __enter__(self) -> Ticket:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._finish(exc_type is None)

    def __repr__(self) -> str:
        return f"Ticket(instance={self.instance.id!r}, done={self._done})"


class Balancer(Protocol):
    """The interface of every balancer (and of the wrappers that compose them)."""

    def pick(self, instances: Sequence[E], key: str | bytes | None = None) -> E:
        """Choose one of ``instances`` (``key`` makes the choice sticky where supported)."""
        ...

    def observe(self, instance: Endpoint, latency_s: float, ok: bool) -> None:
        """Record the outcome of a finished call to ``instance``."""
        ...

    def track(self, instance: Endpoint) -> Ticket:
        """Count a call to ``instance`` as outstanding until its ticket is finished."""
        ...


@dataclass(frozen=True, slots=True)
class BalancerStatistics:
    """A snapshot of a balancer.

    Attributes:
        picks: calls to ``pick`` so far.
        tracked: instances the balancer keeps state for.
        outstanding: calls tracked and not finished yet.
        successes: outcomes reported as ok.
        failures: outcomes reported as failed.
    """

    picks: int
    tracked: int
    outstanding: int
    successes: int
    failures: int


class StateTable(Generic[S]):
    """Per-instance state keyed by id, with bounded memory.

    Instances come and go; state of gone instances is dropped when the table
    grows past twice the size of the latest list (plus slack), so a balancer
    fed ever-new ids never grows without bound.
    """

    __slots__ = ("_factory", "live_n", "map")

    def __init__(self, factory: Callable[[], S]) -> None:
        self._factory = factory
        self.live_n = 0  # length of the latest list given to prune()
        self.map: dict[str, S] = {}

    def get(self, instance_id: str) -> S:
        """The state of ``instance_id``, created when missing."""
        state = self.map.get(instance_id)
        if state is None:
            state = self.map[instance_id] = self._factory()
            if len(self.map) > 4 * self.live_n + 1024:
                # Fed ids without picks: keep the newest half (dicts keep insertion order).
                keep = list(self.map.items())[len(self.map) // 2 :]
                self.map = dict(keep)
        return state

    def prune(self, instances: Sequence[Endpoint]) -> bool:
        """Drop state of instances not in ``instances`` once the table has grown too big.

        Returns:
            Whether anything was dropped.
        """
        n = len(instances)
        self.live_n = n
        if len(self.map) <= 2 * n + 16:
            return False
        live = {inst.id for inst in instances}
        self.map = {k: v for k, v in self.map.items() if k in live}
        return True

    def __len__(self) -> int:
        return len(self.map)


class FeedbackBase:
    """Counters and the ``observe``/``track`` plumbing shared by the balancers.

    Subclasses override :meth:`_begin` (a call starts) and :meth:`_record`
    (a call ended with ``latency_s`` and ``ok``; ``tracked`` says whether it
    was counted by :meth:`_begin`).
    """

    __slots__ = ("__weakref__", "_clock", "_failures", "_picks", "_successes")

    def __init__(self, clock: Clock | None) -> None:
        self._clock = clock if clock is not None else SYSTEM_CLOCK
        self._picks = 0
        self._successes = 0
        self._failures = 0
        component_metrics().balancer(self)  # its counts are read at scrape time

    def observe(self, instance: Endpoint, latency_s: float, ok: bool) -> None:
        """Record the outcome of a finished call to ``instance``.

        Args:
            instance: the instance that served the call.
            latency_s: how long the call took, in seconds.
            ok: whether it succeeded.
        """
        self._count(ok)
        self._record(instance, latency_s, ok, False)

    def track(self, instance: Endpoint) -> Ticket:
        """Count a call to ``instance`` as outstanding until its ticket is finished.

        Args:
            instance: the instance just picked.

        Returns:
            A :class:`Ticket`; use it as ``with`` block or report its outcome.
        """
        self._begin(instance)
        return Ticket(instance, self._clock, self._end)

    def _end(self, instance: Endpoint, latency_s: float, ok: bool) -> None:
        self._count(ok)
        self._record(instance, latency_s, ok, True)

    def _count(self, ok: bool) -> None:
        if ok:
            self._successes += 1
        else:
            self._failures += 1

    def _begin(self, instance: Endpoint) -> None:
        """A tracked call to ``instance`` starts (no state by default)."""

    def _record(self, instance: Endpoint, latency_s: float, ok: bool, tracked: bool) -> None:
        """A call to ``instance`` ended (no state by default)."""
