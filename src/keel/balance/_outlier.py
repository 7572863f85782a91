"""Outlier ejection: stop sending calls to instances that keep failing (Envoy's model).

Two detectors, as Envoy's outlier detection:

- **consecutive failures** (Envoy's ``consecutive_5xx``, default 5): that many
  failures in a row eject the instance;
- **failure rate** (Envoy's ``failure_percentage``): once an instance has served
  ``minimum_requests`` calls over the last ``window_s``, a failure share at or
  above ``failure_rate`` ejects it. The window is a sliding-window counter (the
  previous bucket weighted by how much of it still overlaps the window), so it
  needs two buckets per instance and no timer.

An ejected instance sits out ``base_ejection_s x n`` (``n``: how many times it
was ejected, capped by ``max_ejection_s``), then returns on its own. ``n``
decreases by one for every ``window_s`` the instance stays healthy after
returning, as Envoy decrements its multiplier each interval. Never more than
``max_ejection_percent`` of the instances are out at once (at least one may
always be ejected, as in Envoy); if every candidate of a pick is ejected
anyway (the list shrank), the pick uses them all rather than fail.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from keel.balance._base import Balancer, E, Endpoint, FeedbackBase, StateTable, Ticket, require
from keel.balance._simple import RoundRobin
from keel.clock import Clock
from keel.errors import ValidationError
from keel.observe._component_metrics import component_metrics

__all__ = ["OutlierEjection", "OutlierSettings", "OutlierStatistics"]


@dataclass(frozen=True, slots=True, kw_only=True)
class OutlierSettings:
    """When to eject an instance and for how long.

    Attributes:
        consecutive_failures: failures in a row that eject (0 turns the detector off).
        failure_rate: failure share over the window that ejects, in (0, 1]
            (0 turns the detector off).
        window_s: length of the failure-rate window, and of the healthy interval
            that lowers the back-off multiplier, seconds.
        minimum_requests: calls within the window before the failure rate counts.
        base_ejection_s: the first ejection's length; the n-th lasts n times as long.
        max_ejection_s: no ejection lasts longer than this, seconds.
        max_ejection_percent: at most this share of the instances is ejected at
            once, in percent (at least one instance can always be ejected).
    """

    consecutive_failures: int = 5
    failure_rate: float = 0.0
    window_s: float = 10.0
    minimum_requests: int = 20
    base_ejection_s: float = 30.0
    max_ejection_s: float = 300.0
    max_ejection_percent: float = 10.0

    def __post_init__(self) -> None:
        if self.consecutive_failures < 0:
            raise ValidationError(
                f"consecutive_failures must be >= 0 (0 turns it off), "
                f"got {self.consecutive_failures!r}"
            )
        if not 0.0 <= self.failure_rate <= 1.0:
            raise ValidationError(
                f"failure_rate must be in [0, 1] (0 turns it off; try 0.5), "
                f"got {self.failure_rate!r}"
            )
        if self.consecutive_failures == 0 and self.failure_rate == 0.0:
            raise ValidationError(
                "consecutive_failures and failure_rate are both 0: set one of them "
                "(e.g. consecutive_failures=5) or do not use outlier ejection"
            )
        if self.minimum_requests < 1:
            raise ValidationError(f"minimum_requests must be >= 1, got {self.minimum_requests!r}")
        for name in ("window_s", "base_ejection_s", "max_ejection_s"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValidationError(
                    f"{name} must be a finite number of seconds > 0, got {value!r}"
                )
        if self.max_ejection_s < self.base_ejection_s:
            raise ValidationError(
                f"max_ejection_s ({self.max_ejection_s}) must be >= base_ejection_s "
                f"({self.base_ejection_s}): raise it or lower base_ejection_s"
            )
        if not 0.0 < self.max_ejection_percent <= 100.0:
            raise ValidationError(
                f"max_ejection_percent must be in (0, 100] (Envoy uses 10), "
                f"got {self.max_ejection_percent!r}"
            )


@dataclass(frozen=True, slots=True)
class OutlierStatistics:
    """A snapshot of an :class:`OutlierEjection` wrapper.

    Attributes:
        picks: calls to ``pick`` so far.
        tracked: instances with state (failure counts, back-off).
        ejected: ids of the instances ejected now, sorted.
        ejections: ejections so far.
        refused: ejections skipped because ``max_ejection_percent`` was reached.
        successes: outcomes reported as ok.
        failures: outcomes reported as failed.
    """

    picks: int
    tracked: int
    ejected: tuple[str, ...]
    ejections: int
    refused: int
    successes: int
    failures: int


class _Host:
    __slots__ = (
        "cur_failures",
        "cur_requests",
        "cur_start",
        "ejections",
        "prev_failures",
        "prev_requests",
        "returned_at",
        "run",
        "until",
    )

    def __init__(self) -> None:
        self.run = 0  # consecutive failures
        self.ejections = 0  # the back-off multiplier
        self.until = 0.0  # ejected while now < until
        self.returned_at: float | None = None
        self.cur_start: float | None = None
        self.cur_requests = self.cur_failures = 0
        self.prev_requests = self.prev_failures = 0

    def reset_window(self) -> None:
        self.run = 0
        self.cur_start = None
        self.cur_requests = self.cur_failures = self.prev_requests = self.prev_failures = 0

    def count(self, ok: bool, now: float, window_s: float) -> tuple[float, float]:
        """Add one outcome; return the (requests, failures) estimate over the window."""
        if self.cur_start is None:
            self.cur_start = now
        elapsed = now - self.cur_start
        if elapsed >= window_s:
            buckets = int(elapsed // window_s)
            if buckets == 1:
                self.prev_requests, self.prev_failures = self.cur_requests, self.cur_failures
            else:
                self.prev_requests = self.prev_failures = 0
            self.cur_requests = self.cur_failures = 0
            self.cur_start += buckets * window_s
            elapsed = now - self.cur_start
        self.cur_requests += 1
        self.cur_failures += not ok
        overlap = 1.0 - elapsed / window_s
        return (
            self.prev_requests * overlap + self.cur_requests,
            self.prev_failures * overlap + self.cur_failures,
        )


class OutlierEjection(FeedbackBase):
    """Hide failing instances from an inner balancer for a back-off period.

    Feed it outcomes (``observe`` or ``track``); they are passed on to the inner
    balancer too. :meth:`filter` gives the instances not ejected, for callers
    that pick by themselves.

    Args:
        inner: the balancer that picks among the instances not ejected
            (default: :class:`~keel.balance.RoundRobin`).
        settings: detectors and back-off (defaults: :class:`OutlierSettings`).
        clock: time source for windows, ejections and tickets.
    """

    __slots__ = (
        "_avail",
        "_ejected",
        "_ejections",
        "_gen",
        "_hosts",
        "_refused",
        "inner",
        "settings",
    )

    def __init__(
        self,
        inner: Balancer | None = None,
        settings: OutlierSettings | None = None,
        *,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(clock)
        self.inner: Balancer = inner if inner is not None else RoundRobin(clock=clock)
        self.settings = settings if settings is not None else OutlierSettings()
        self._hosts: StateTable[_Host] = StateTable(_Host)
        self._ejected: dict[str, _Host] = {}
        self._gen = 0  # bumped whenever the ejected set changes
        self._avail: tuple[object, int, Sequence[Endpoint]] = (None, -1, ())
        self._ejections = 0
        self._refused = 0

    def pick(self, instances: Sequence[E], key: str | bytes | None = None) -> E:
        """Pick with the inner balancer among the instances not ejected.

        Args:
            instances: every candidate.
            key: passed to the inner balancer.

        Returns:
            One of ``instances``.

        Raises:
            NoInstanceError: when ``instances`` is empty.
        """
        require(instances)
        self._picks += 1
        if self._hosts.prune(instances):
            live = self._hosts.map
            self._ejected = {k: h for k, h in self._ejected.items() if k in live}
            self._gen += 1
        return self.inner.pick(self.filter(instances), key)

    def filter(self, instances: Sequence[E]) -> Sequence[E]:
        """The instances not ejected now (all of them if every one is ejected).

        Args:
            instances: every candidate.

        Returns:
            ``instances`` itself when none is ejected, else a tuple of the others.
        """
        if not self._ejected:
            return instances
        self._release(self._clock.monotonic())
        if not self._ejected:
            return instances
        cached_for, gen, avail = self._avail
        if cached_for is instances and gen == self._gen and type(instances) is tuple:
            return cast(Sequence[E], avail)
        ejected = self._ejected
        kept = tuple(inst for inst in instances if inst.id not in ejected)
        result = kept if kept else instances
        self._avail = (instances, self._gen, result)
        return result

    def is_ejected(self, instance: Endpoint) -> bool:
        """Whether ``instance`` is ejected now."""
        if instance.id not in self._ejected:
            return False
        self._release(self._clock.monotonic())
        return instance.id in self._ejected

    def _release(self, now: float) -> None:
        """Let instances whose ejection has ended come back."""
        back = [k for k, h in self._ejected.items() if h.until <= now]
        for k in back:
            host = self._ejected.pop(k)
            host.returned_at = host.until
            host.until = 0.0
        if back:
            self._gen += 1

    def observe(self, instance: Endpoint, latency_s: float, ok: bool) -> None:
        """Record an outcome here and pass it to the inner balancer.

        Args:
            instance: the instance that served the call.
            latency_s: how long the call took, in seconds.
            ok: whether it succeeded.
        """
        super().observe(instance, latency_s, ok)
        self.inner.observe(instance, latency_s, ok)

    def track(self, instance: Endpoint) -> Ticket:
        """Track a call here and with the inner balancer.

        Args:
            instance: the instance just picked.

        Returns:
            A :class:`Ticket` that reports to both when finished.
        """
        return Ticket(instance, self._clock, self._end, self.inner.track(instance))

    def _record(self, instance: Endpoint, latency_s: float, ok: bool, tracked: bool) -> None:
        s = self.settings
        now = self._clock.monotonic()
        host = self._hosts.get(instance.id)
        if host.until > now:
            return  # calls still in flight when it was ejected say nothing new
        requests, failures = host.count(ok, now, s.window_s)
        if ok:
            host.run = 0
            return
        host.run += 1
        if (s.consecutive_failures and host.run >= s.consecutive_failures) or (
            s.failure_rate
            and requests >= s.minimum_requests
            and failures >= s.failure_rate * requests
        ):
            self._eject(instance.id, host, now)

    def _eject(self, instance_id: str, host: _Host, now: float) -> None:
        s = self.settings
        self._release(now)
        size = max(self._hosts.live_n, len(self._hosts))
        allowed = max(1, math.floor(size * s.max_ejection_percent / 100.0))
        if len(self._ejected) >= allowed:
            self._refused += 1
            host.reset_window()
            return
        if host.returned_at is not None:  # healthy intervals since it came back
            healthy = int((now - host.returned_at) // s.window_s)
            host.ejections = max(0, host.ejections - healthy)
        host.ejections += 1
        host.until = now + min(s.base_ejection_s * host.ejections, s.max_ejection_s)
        host.reset_window()
        self._ejected[instance_id] = host
        self._ejections += 1
        component_metrics().ejected("OutlierEjection")
        self._gen += 1

    def ejected_until(self, instance: Endpoint) -> float | None:
        """The clock reading at which ``instance`` returns, or None if it is not ejected."""
        return self._ejected[instance.id].until if self.is_ejected(instance) else None

    def statistics(self) -> OutlierStatistics:
        """Ejected instances now and counters."""
        self._release(self._clock.monotonic())
        return OutlierStatistics(
            picks=self._picks,
            tracked=len(self._hosts),
            ejected=tuple(sorted(self._ejected)),
            ejections=self._ejections,
            refused=self._refused,
            successes=self._successes,
            failures=self._failures,
        )

    def __repr__(self) -> str:
        return (
            f"OutlierEjection(ejected={len(self._ejected)}, ejections={self._ejections}, "
            f"refused={self._refused}, inner={self.inner!r})"
        )
